//! Git tier: `GitClient` against real `git` and real repositories on 127.0.0.1 (file:// and dumb
//! HTTP through the testkit's static server), including unreachable, failing and hanging remotes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use doco_git::{GitClient, GitError, GitOptions, HttpToken, SyncOutcome, head_commit};
use doco_testkit::files_under;
use doco_testkit::git::{BareRepo, WorkTree, git};
use doco_testkit::http::StaticHttpServer;

fn client() -> GitClient {
    GitClient::new(GitOptions::default())
}

/// A bare repository with one pushed commit (`app/compose.yaml`) and its work tree.
fn repo_with_commit() -> (BareRepo, WorkTree, String) {
    let bare = BareRepo::new();
    let work = WorkTree::clone_from(&bare);
    work.write("app/compose.yaml", "services: {}\n");
    let sha = work.commit_and_push("first");
    (bare, work, sha)
}

/// A checkout directory that does not exist yet, under a temp dir (parents are created by sync).
fn checkout_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/repos/checkout");
    (tmp, dir)
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap()
}

fn http_url(server: &StaticHttpServer) -> String {
    format!("{}/", server.url())
}

#[tokio::test]
async fn clone_over_file_url_then_sync_without_changes() {
    let (bare, _work, sha) = repo_with_commit();
    let (_tmp, dir) = checkout_dir();
    let c = client();

    let first = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    assert_eq!(
        first,
        SyncOutcome {
            commit: sha.clone(),
            fetched: true,
            cloned: true
        }
    );
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");
    assert_eq!(head_commit(&dir).unwrap(), Some(sha.clone()));
    assert_eq!(
        git(&dir, &["config", "remote.origin.url"]),
        bare.file_url(),
        "origin points at the URL"
    );
    // Detached HEAD.
    let head = std::fs::read_to_string(dir.join(".git/HEAD")).unwrap();
    assert_eq!(head.trim(), sha);

    let second = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    assert_eq!(
        second,
        SyncOutcome {
            commit: sha,
            fetched: false,
            cloned: false
        }
    );
}

#[tokio::test]
async fn clone_over_dumb_http_then_fetch_a_pushed_commit() {
    let (bare, work, sha) = repo_with_commit();
    let server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = checkout_dir();
    let c = client();

    let first = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!((first.commit.as_str(), first.cloned), (sha.as_str(), true));
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");

    let again = c.sync(&url, "main", &dir).await.unwrap();
    assert!(!again.fetched && !again.cloned);

    work.write("app/compose.yaml", "services: {web: {}}\n");
    work.write("other.txt", "x");
    let second_sha = work.commit_and_push("second");
    assert_eq!(c.ls_remote(&url, "main").await.unwrap(), second_sha);

    let second = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(
        second,
        SyncOutcome {
            commit: second_sha.clone(),
            fetched: true,
            cloned: false
        }
    );
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {web: {}}\n");
    assert_eq!(read(&dir, "other.txt"), "x");
    assert_eq!(head_commit(&dir).unwrap(), Some(second_sha));

    // A removed file disappears from the checkout.
    work.remove("other.txt");
    let third_sha = work.commit_and_push("third");
    let third = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(third.commit, third_sha);
    assert!(!dir.join("other.txt").exists());
}

#[tokio::test]
async fn tags_branches_refs_and_commits_resolve() {
    let (bare, work, first) = repo_with_commit();
    let tag_object = work.create_tag("v1.0");
    work.write("app/compose.yaml", "services: {feature: {}}\n");
    let feature = work.commit("feature work");
    work.push_branch("feature/x");
    work.write("app/compose.yaml", "services: {main2: {}}\n");
    let main2 = work.commit_and_push("main 2");
    let url = bare.file_url();
    let c = client();

    // ls-remote: annotated tags are peeled; a bare name finds branches and tags.
    assert_eq!(c.ls_remote(&url, "v1.0").await.unwrap(), first);
    assert_eq!(c.ls_remote(&url, "refs/tags/v1.0").await.unwrap(), first);
    assert_ne!(tag_object, first);
    assert_eq!(c.ls_remote(&url, "feature/x").await.unwrap(), feature);
    assert_eq!(
        c.ls_remote(&url, "refs/heads/feature/x").await.unwrap(),
        feature
    );
    assert_eq!(c.ls_remote(&url, "main").await.unwrap(), main2);
    assert_eq!(c.ls_remote(&url, &first).await.unwrap(), first);
    assert_eq!(c.ls_remote(&url, "HEAD").await.unwrap(), main2);

    let (_tmp, dir) = checkout_dir();
    let tagged = c.sync(&url, "v1.0", &dir).await.unwrap();
    assert_eq!(
        (tagged.commit.as_str(), tagged.cloned),
        (first.as_str(), true)
    );
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");

    let branch = c.sync(&url, "feature/x", &dir).await.unwrap();
    assert_eq!(branch.commit, feature);
    assert!(branch.fetched);
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {feature: {}}\n");

    let full = c.sync(&url, "refs/heads/main", &dir).await.unwrap();
    assert_eq!(full.commit, main2);

    // A commit already present: checked out without a fetch.
    let by_sha = c.sync(&url, &first, &dir).await.unwrap();
    assert_eq!(
        by_sha,
        SyncOutcome {
            commit: first.clone(),
            fetched: false,
            cloned: false
        }
    );
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");
    // The same commit again: nothing to do.
    let same = c.sync(&url, &first.to_uppercase(), &dir).await.unwrap();
    assert!(!same.fetched);

    // A commit pushed after the last fetch: fetched, then checked out.
    work.write("late.txt", "late");
    let late = work.commit_and_push("late");
    let fetched = c.sync(&url, &late, &dir).await.unwrap();
    assert_eq!(
        (fetched.commit.as_str(), fetched.fetched),
        (late.as_str(), true)
    );
    assert_eq!(read(&dir, "late.txt"), "late");

    // A fresh clone at a commit.
    let (_tmp2, dir2) = checkout_dir();
    let cloned = c.sync(&url, &feature, &dir2).await.unwrap();
    assert_eq!(
        (cloned.commit.as_str(), cloned.cloned),
        (feature.as_str(), true)
    );
}

#[tokio::test]
async fn unknown_references_are_reference_not_found() {
    let (bare, _work, sha) = repo_with_commit();
    let url = bare.file_url();
    let c = client();
    let (_tmp, dir) = checkout_dir();

    let err = c.sync(&url, "no-such-branch", &dir).await.unwrap_err();
    assert!(
        matches!(&err, GitError::ReferenceNotFound { reference, .. } if reference == "no-such-branch"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-branch"), "{err}");
    assert!(!dir.exists(), "nothing is created for an unknown reference");

    c.sync(&url, "main", &dir).await.unwrap();
    let err = c.sync(&url, "refs/tags/nope", &dir).await.unwrap_err();
    assert!(matches!(err, GitError::ReferenceNotFound { .. }), "{err:?}");
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = c.sync(&url, missing, &dir).await.unwrap_err();
    assert!(matches!(err, GitError::ReferenceNotFound { .. }), "{err:?}");
    assert_eq!(head_commit(&dir).unwrap(), Some(sha), "HEAD untouched");
    let err = c.ls_remote(&url, "nope").await.unwrap_err();
    assert!(matches!(err, GitError::ReferenceNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn stopped_server_is_transport_and_the_checkout_survives() {
    let (bare, work, sha) = repo_with_commit();
    let mut server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = checkout_dir();
    let c = client();
    c.sync(&url, "main", &dir).await.unwrap();

    let newer = work.commit_and_push("while offline");
    server.stop();
    let started = Instant::now();
    let err = c.sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(!err.is_auth());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains(&url), "{err}");
    assert!(err.to_string().contains("main"), "{err}");
    // The checkout and its HEAD are intact.
    assert_eq!(head_commit(&dir).unwrap(), Some(sha.clone()));
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");
    let err = c.ls_remote(&url, "main").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    // A fresh clone against a stopped server creates nothing.
    let (_tmp2, dir2) = checkout_dir();
    let err = c.sync(&url, "main", &dir2).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(!dir2.exists());

    server.restart();
    let back = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!((back.commit.as_str(), back.fetched), (newer.as_str(), true));
}

#[tokio::test]
async fn failed_fetch_after_a_successful_ls_remote_leaves_head_intact() {
    let (bare, work, sha) = repo_with_commit();
    let (_tmp, dir) = checkout_dir();
    let c = client();
    c.sync(&bare.file_url(), "main", &dir).await.unwrap();

    // ls-remote succeeds but the fetch cannot get the objects: remove them from the remote.
    work.write("big.txt", "payload");
    let newer = work.commit_and_push("newer");
    let objects = bare.path().join("objects");
    let hidden = bare.path().join("objects-hidden");
    let prefix = &newer[..2];
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::rename(objects.join(prefix), hidden.join(prefix)).unwrap();

    let err = c.sync(&bare.file_url(), "main", &dir).await.unwrap_err();
    assert!(!matches!(err, GitError::BrokenCheckout { .. }), "{err:?}");
    assert_eq!(head_commit(&dir).unwrap(), Some(sha));
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");
    assert!(!dir.join("big.txt").exists());

    std::fs::rename(hidden.join(prefix), objects.join(prefix)).unwrap();
    let ok = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    assert_eq!(ok.commit, newer);
}

#[tokio::test]
async fn server_error_503_is_transport() {
    let (bare, _work, sha) = repo_with_commit();
    let server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = checkout_dir();
    let c = client();
    c.sync(&url, "main", &dir).await.unwrap();

    server.set_status_override(Some(503));
    let err = c.sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(head_commit(&dir).unwrap(), Some(sha));

    server.set_status_override(Some(401));
    let err = c.ls_remote(&url, "main").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    server.set_status_override(Some(403));
    let err = c.ls_remote(&url, "main").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
}

#[tokio::test]
async fn hanging_server_times_out_as_transport() {
    let server = StaticHttpServer::start_hanging();
    let c = GitClient::new(GitOptions {
        http_token: None,
        timeout: Duration::from_secs(2),
        ..GitOptions::default()
    });
    let (_tmp, dir) = checkout_dir();
    let started = Instant::now();
    let err = c.sync(&http_url(&server), "main", &dir).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_transport(), "{err:?}");
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert!(err.to_string().contains("did not finish"), "{err}");
    assert!(!dir.exists());
}

#[tokio::test]
async fn missing_repositories_are_repository_not_found() {
    let (bare, _work, _sha) = repo_with_commit();
    let server = StaticHttpServer::start(bare.path());
    let c = client();
    let (_tmp, dir) = checkout_dir();

    let err = c
        .sync(&format!("{}/nope.git/", server.url()), "main", &dir)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GitError::RepositoryNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.git"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.git");
    let missing = missing.to_str().unwrap();
    for url in [missing.to_string(), format!("file://{missing}")] {
        let err = c.sync(&url, "main", &dir).await.unwrap_err();
        assert!(
            matches!(err, GitError::RepositoryNotFound { .. }),
            "{url}: {err:?}"
        );
    }
    assert!(!dir.exists());
}

fn assert_absent(dir: &Path, needles: &[&str]) {
    let files = files_under(dir);
    assert!(files.len() > 5, "scanned {} files", files.len());
    for (path, bytes) in files {
        let text = String::from_utf8_lossy(&bytes);
        for needle in needles {
            assert!(
                !text.contains(needle),
                "{needle} found in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn tokens_never_reach_disk_or_errors() {
    let (bare, work, _sha) = repo_with_commit();
    let mut server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let token = "tok-5ecret-value-123";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("deploy:{token}"));
    let c = GitClient::new(GitOptions {
        http_token: Some(HttpToken {
            user: "deploy".into(),
            token: token.into(),
        }),
        timeout: Duration::from_secs(60),
        ..GitOptions::default()
    });
    let (_tmp, dir) = checkout_dir();
    c.sync(&url, "main", &dir).await.unwrap();
    work.commit_and_push("more");
    c.sync(&url, "main", &dir).await.unwrap();

    // The header was sent...
    assert!(
        server.authorizations().contains(&format!("Basic {basic}")),
        "{:?}",
        server.authorizations()
    );
    // ...and left no trace on disk.
    assert_absent(&dir.join(".git"), &[token, &basic]);
    assert!(!format!("{c:?}").contains(token));

    // Errors do not carry it either.
    server.set_status_override(Some(401));
    let err = c.sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(token) && !text.contains(&basic), "{text}");
    }
    server.stop();
    let err = c.sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(!err.to_string().contains(token) && !err.to_string().contains(&basic));
    server.restart();
    server.set_status_override(None);

    // Credentials written into the URL are used like a token and stripped from the stored URL.
    let password = "pw-in-url-42";
    let with_creds = format!("http://bob:{password}@127.0.0.1:{}/", server.port());
    let url_basic = base64::engine::general_purpose::STANDARD.encode(format!("bob:{password}"));
    let (_tmp2, dir2) = checkout_dir();
    client().sync(&with_creds, "main", &dir2).await.unwrap();
    assert!(
        server
            .authorizations()
            .contains(&format!("Basic {url_basic}"))
    );
    assert_eq!(git(&dir2, &["config", "remote.origin.url"]), url);
    assert_absent(&dir2.join(".git"), &[password, &url_basic, "bob:"]);

    // Switching an existing checkout to a URL with credentials stores the clean URL too.
    c.sync(&with_creds, "main", &dir).await.unwrap();
    assert_eq!(git(&dir, &["config", "remote.origin.url"]), url);
    server.stop();
    let err = client().sync(&with_creds, "main", &dir2).await.unwrap_err();
    assert!(err.is_transport());
    assert!(!err.to_string().contains(password), "{err}");
}

#[tokio::test]
async fn origin_follows_the_url() {
    let (bare, _work, _sha) = repo_with_commit();
    let (_tmp, dir) = checkout_dir();
    let c = client();
    c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    let path = bare.path().to_str().unwrap().to_string();
    let again = c.sync(&path, "main", &dir).await.unwrap();
    assert!(!again.fetched);
    assert_eq!(git(&dir, &["config", "remote.origin.url"]), path);
}

#[tokio::test]
async fn refuses_bad_input_and_foreign_directories() {
    let (bare, _work, _sha) = repo_with_commit();
    let c = client();
    let (_tmp, dir) = checkout_dir();
    for (url, reference) in [
        (bare.file_url(), "-bad".to_string()),
        (bare.file_url(), "main..x".to_string()),
        (bare.file_url(), String::new()),
        (
            "ext::sh -c touch% /tmp/pwned".to_string(),
            "main".to_string(),
        ),
        (
            "--upload-pack=touch /tmp/pwned".to_string(),
            "main".to_string(),
        ),
        ("relative/path".to_string(), "main".to_string()),
    ] {
        let err = c.sync(&url, &reference, &dir).await.unwrap_err();
        assert!(
            matches!(err, GitError::InvalidInput { .. }),
            "{url} {reference}: {err:?}"
        );
    }
    assert!(!dir.exists());

    // A non-empty directory without .git is left alone.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("precious.txt"), "keep me").unwrap();
    let err = c.sync(&bare.file_url(), "main", &dir).await.unwrap_err();
    assert!(matches!(err, GitError::BrokenCheckout { .. }), "{err:?}");
    assert_eq!(read(&dir, "precious.txt"), "keep me");
    assert!(!dir.join(".git").exists());

    // An existing empty directory is fine.
    let (_tmp2, empty) = checkout_dir();
    std::fs::create_dir_all(&empty).unwrap();
    assert!(
        c.sync(&bare.file_url(), "main", &empty)
            .await
            .unwrap()
            .cloned
    );
}

#[tokio::test]
async fn an_interrupted_clone_is_finished_by_the_next_sync() {
    let (bare, _work, sha) = repo_with_commit();
    let mut server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = checkout_dir();
    // What a clone interrupted after `init` leaves: a repository with an unborn HEAD.
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    assert_eq!(head_commit(&dir).unwrap(), None);
    server.stop();
    let err = client().sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport());
    assert!(dir.join(".git").exists(), "never deleted");
    server.restart();
    let done = client().sync(&url, "main", &dir).await.unwrap();
    assert_eq!((done.commit.as_str(), done.fetched), (sha.as_str(), true));
    assert_eq!(read(&dir, "app/compose.yaml"), "services: {}\n");
}
