//! Git tier: `GitClient` against real `git` and real repositories on 127.0.0.1 (file:// and dumb
//! HTTP through the testkit's static server), including unreachable, failing and hanging remotes:
//! bare mirrors, what a sync records, immutable exports, and the adoption of an old checkout.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use doco_git::{GitClient, GitError, GitOptions, HttpToken, SyncOutcome, resolved_commit};
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

/// A mirror directory that does not exist yet, under a temp dir (parents are created by sync).
fn mirror_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/repos/mirror");
    (tmp, dir)
}

/// The export of `commit` from `mirror` (`<mirror's parent>/artifacts/<commit>`), made if missing.
async fn export(c: &GitClient, url: &str, mirror: &Path, commit: &str) -> PathBuf {
    let dest = mirror.parent().unwrap().join("artifacts").join(commit);
    if !dest.exists() {
        c.export(url, mirror, commit, &dest).await.unwrap();
    }
    dest
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap()
}

/// Relative paths of the files and symlinks under `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.symlink_metadata().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn http_url(server: &StaticHttpServer) -> String {
    format!("{}/", server.url())
}

#[tokio::test]
async fn clone_over_file_url_then_sync_without_changes() {
    let (bare, _work, sha) = repo_with_commit();
    let (_tmp, dir) = mirror_dir();
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
    // A bare mirror: no work tree, the branch as on the remote, the commit recorded.
    assert_eq!(git(&dir, &["rev-parse", "--is-bare-repository"]), "true");
    assert!(!dir.join("app").exists() && !dir.join(".git").exists());
    assert_eq!(git(&dir, &["rev-parse", "refs/heads/main"]), sha);
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(sha.clone()));
    assert_eq!(resolved_commit(&dir, "other").unwrap(), None);
    assert_eq!(
        git(&dir, &["config", "remote.origin.url"]),
        bare.file_url(),
        "origin points at the URL"
    );
    let files = export(&c, &bare.file_url(), &dir, &sha).await;
    assert_eq!(read(&files, "app/compose.yaml"), "services: {}\n");

    let second = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    assert_eq!(
        second,
        SyncOutcome {
            commit: sha.clone(),
            fetched: false,
            cloned: false
        }
    );

    // After `git gc` packed the refs, the record is still read and the poll still quiet.
    git(&dir, &["pack-refs", "--all"]);
    assert!(!dir.join("refs/doco-cd/resolved/main").exists());
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(sha));
    let third = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    assert!(!third.fetched && !third.cloned);
}

#[tokio::test]
async fn clone_over_dumb_http_then_fetch_a_pushed_commit() {
    let (bare, work, sha) = repo_with_commit();
    let server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = mirror_dir();
    let c = client();

    let first = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!((first.commit.as_str(), first.cloned), (sha.as_str(), true));
    let files = export(&c, &url, &dir, &sha).await;
    assert_eq!(read(&files, "app/compose.yaml"), "services: {}\n");

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
    let files = export(&c, &url, &dir, &second_sha).await;
    assert_eq!(read(&files, "app/compose.yaml"), "services: {web: {}}\n");
    assert_eq!(read(&files, "other.txt"), "x");
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(second_sha));

    // A removed file is not in the next revision's export.
    work.remove("other.txt");
    let third_sha = work.commit_and_push("third");
    let third = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(third.commit, third_sha);
    assert!(
        !export(&c, &url, &dir, &third_sha)
            .await
            .join("other.txt")
            .exists()
    );
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

    let (_tmp, dir) = mirror_dir();
    let tagged = c.sync(&url, "v1.0", &dir).await.unwrap();
    assert_eq!(
        (tagged.commit.as_str(), tagged.cloned),
        (first.as_str(), true)
    );
    let files = export(&c, &url, &dir, &first).await;
    assert_eq!(read(&files, "app/compose.yaml"), "services: {}\n");

    let branch = c.sync(&url, "feature/x", &dir).await.unwrap();
    assert_eq!(branch.commit, feature);
    assert!(branch.fetched);
    let files = export(&c, &url, &dir, &feature).await;
    assert_eq!(
        read(&files, "app/compose.yaml"),
        "services: {feature: {}}\n"
    );

    let full = c.sync(&url, "refs/heads/main", &dir).await.unwrap();
    assert_eq!(full.commit, main2);
    // Each reference keeps its own record.
    assert_eq!(resolved_commit(&dir, "v1.0").unwrap(), Some(first.clone()));
    assert_eq!(
        resolved_commit(&dir, "feature/x").unwrap(),
        Some(feature.clone())
    );
    assert_eq!(
        resolved_commit(&dir, "refs/heads/main").unwrap(),
        Some(main2)
    );

    // A commit already present: recorded without a fetch.
    let by_sha = c.sync(&url, &first, &dir).await.unwrap();
    assert_eq!(
        by_sha,
        SyncOutcome {
            commit: first.clone(),
            fetched: false,
            cloned: false
        }
    );
    // The same commit again: nothing to do.
    let same = c.sync(&url, &first.to_uppercase(), &dir).await.unwrap();
    assert!(!same.fetched);
    assert_eq!(resolved_commit(&dir, &first).unwrap(), Some(first.clone()));

    // A commit pushed after the last fetch: fetched.
    work.write("late.txt", "late");
    let late = work.commit_and_push("late");
    let fetched = c.sync(&url, &late, &dir).await.unwrap();
    assert_eq!(
        (fetched.commit.as_str(), fetched.fetched),
        (late.as_str(), true)
    );
    assert_eq!(
        read(&export(&c, &url, &dir, &late).await, "late.txt"),
        "late"
    );

    // A fresh clone at a commit.
    let (_tmp2, dir2) = mirror_dir();
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
    let (_tmp, dir) = mirror_dir();

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
    assert_eq!(
        resolved_commit(&dir, "main").unwrap(),
        Some(sha),
        "record untouched"
    );
    assert_eq!(resolved_commit(&dir, missing).unwrap(), None);
    let err = c.ls_remote(&url, "nope").await.unwrap_err();
    assert!(matches!(err, GitError::ReferenceNotFound { .. }), "{err:?}");
    // Exporting a commit the mirror does not have fails and leaves nothing.
    let dest = dir.parent().unwrap().join("artifacts").join(missing);
    let err = c.export(&url, &dir, missing, &dest).await.unwrap_err();
    assert!(matches!(err, GitError::ReferenceNotFound { .. }), "{err:?}");
    assert!(!dest.exists());
    assert!(!dest.with_file_name(format!("{missing}.partial")).exists());
}

#[tokio::test]
async fn stopped_server_is_transport_and_the_mirror_survives() {
    let (bare, work, sha) = repo_with_commit();
    let mut server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = mirror_dir();
    let c = client();
    c.sync(&url, "main", &dir).await.unwrap();
    let refs_before = git(&dir, &["for-each-ref"]);

    let newer = work.commit_and_push("while offline");
    server.stop();
    let started = Instant::now();
    let err = c.sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(!err.is_auth());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains(&url), "{err}");
    assert!(err.to_string().contains("main"), "{err}");
    // The mirror, its refs and its record are intact; the last good commit still exports.
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(sha.clone()));
    assert_eq!(git(&dir, &["for-each-ref"]), refs_before);
    let files = export(&c, &url, &dir, &sha).await;
    assert_eq!(read(&files, "app/compose.yaml"), "services: {}\n");
    let err = c.ls_remote(&url, "main").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");

    // A fresh clone against a stopped server creates nothing.
    let (_tmp2, dir2) = mirror_dir();
    let err = c.sync(&url, "main", &dir2).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(!dir2.exists());

    server.restart();
    let back = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!((back.commit.as_str(), back.fetched), (newer.as_str(), true));
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(newer));
}

#[tokio::test]
async fn failed_fetch_after_a_successful_ls_remote_leaves_the_record_intact() {
    let (bare, work, sha) = repo_with_commit();
    let (_tmp, dir) = mirror_dir();
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
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(sha.clone()));
    assert_eq!(git(&dir, &["rev-parse", "refs/heads/main"]), sha);

    std::fs::rename(hidden.join(prefix), objects.join(prefix)).unwrap();
    let ok = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    assert_eq!(ok.commit, newer);
    assert_eq!(
        read(&export(&c, &bare.file_url(), &dir, &newer).await, "big.txt"),
        "payload"
    );
}

#[tokio::test]
async fn server_error_503_is_transport() {
    let (bare, _work, sha) = repo_with_commit();
    let server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = mirror_dir();
    let c = client();
    c.sync(&url, "main", &dir).await.unwrap();

    server.set_status_override(Some(503));
    let err = c.sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(sha));

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
    let (_tmp, dir) = mirror_dir();
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
    let (_tmp, dir) = mirror_dir();

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
    let (tmp, dir) = mirror_dir();
    c.sync(&url, "main", &dir).await.unwrap();
    work.commit_and_push("more");
    let head = c.sync(&url, "main", &dir).await.unwrap().commit;
    export(&c, &url, &dir, &head).await;

    // The header was sent...
    assert!(
        server.authorizations().contains(&format!("Basic {basic}")),
        "{:?}",
        server.authorizations()
    );
    // ...and left no trace on disk: not in the mirror's config, not in any file of the mirror
    // or the export.
    let config = read(&dir, "config");
    assert!(config.contains(&url) && !config.contains(token), "{config}");
    assert_absent(tmp.path(), &[token, &basic]);
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
    let (tmp2, dir2) = mirror_dir();
    let head2 = client()
        .sync(&with_creds, "main", &dir2)
        .await
        .unwrap()
        .commit;
    client()
        .export(&with_creds, &dir2, &head2, &tmp2.path().join("export"))
        .await
        .unwrap();
    assert!(
        server
            .authorizations()
            .contains(&format!("Basic {url_basic}"))
    );
    assert_eq!(git(&dir2, &["config", "remote.origin.url"]), url);
    assert_absent(tmp2.path(), &[password, &url_basic, "bob:"]);

    // Switching an existing mirror to a URL with credentials stores the clean URL too.
    c.sync(&with_creds, "main", &dir).await.unwrap();
    assert_eq!(git(&dir, &["config", "remote.origin.url"]), url);
    assert_absent(tmp.path(), &[password, &url_basic, "bob:"]);
    server.stop();
    let err = client().sync(&with_creds, "main", &dir2).await.unwrap_err();
    assert!(err.is_transport());
    assert!(!err.to_string().contains(password), "{err}");
}

#[tokio::test]
async fn origin_follows_the_url() {
    let (bare, _work, _sha) = repo_with_commit();
    let (_tmp, dir) = mirror_dir();
    let c = client();
    c.sync(&bare.file_url(), "main", &dir).await.unwrap();
    let path = bare.path().to_str().unwrap().to_string();
    let again = c.sync(&path, "main", &dir).await.unwrap();
    assert!(!again.fetched);
    assert_eq!(git(&dir, &["config", "remote.origin.url"]), path);
}

#[tokio::test]
async fn refuses_bad_input_and_foreign_directories() {
    let (bare, _work, sha) = repo_with_commit();
    let c = client();
    let (_tmp, dir) = mirror_dir();
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

    // A non-empty directory that is no repository is left alone (an old checkout, for instance).
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join("precious.txt"), "keep me").unwrap();
    let err = c.sync(&bare.file_url(), "main", &dir).await.unwrap_err();
    assert!(matches!(err, GitError::BrokenCheckout { .. }), "{err:?}");
    assert_eq!(read(&dir, "precious.txt"), "keep me");
    assert!(!dir.join("HEAD").exists());

    // An existing empty directory is fine.
    let (_tmp2, empty) = mirror_dir();
    std::fs::create_dir_all(&empty).unwrap();
    assert!(
        c.sync(&bare.file_url(), "main", &empty)
            .await
            .unwrap()
            .cloned
    );

    // Exports: a commit id only, never over an existing directory.
    let dest = empty.parent().unwrap().join("artifacts/x");
    for commit in ["main", "abc", "-x"] {
        let err = c
            .export(&bare.file_url(), &empty, commit, &dest)
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::InvalidInput { .. }), "{err:?}");
    }
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("mine"), "x").unwrap();
    let err = c
        .export(&bare.file_url(), &empty, &sha, &dest)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidInput { .. }), "{err:?}");
    assert_eq!(tree(&dest), ["mine"]);
}

#[tokio::test]
async fn leftovers_of_an_interrupted_clone_are_cleaned_and_an_empty_mirror_is_filled() {
    let (bare, _work, sha) = repo_with_commit();
    let mut server = StaticHttpServer::start(bare.path());
    let url = http_url(&server);
    let (_tmp, dir) = mirror_dir();
    // What an interrupted clone leaves: a temporary sibling. And a mirror with no record yet.
    let parent = dir.parent().unwrap().to_path_buf();
    let stale = parent.join(".mirror.doco-cd-tmp-1-0");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "--bare"]);
    server.stop();
    let err = client().sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport());
    assert!(dir.join("HEAD").exists(), "never deleted");
    server.restart();
    let done = client().sync(&url, "main", &dir).await.unwrap();
    assert_eq!(
        (done.commit.as_str(), done.fetched, done.cloned),
        (sha.as_str(), true, false)
    );
    assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(sha));

    // A fresh clone beside removes the stale sibling.
    let fresh = parent.join("fresh");
    let stale = parent.join(".fresh.doco-cd-tmp-1-0");
    std::fs::create_dir_all(&stale).unwrap();
    assert!(client().sync(&url, "main", &fresh).await.unwrap().cloned);
    assert!(!stale.exists());
}

#[tokio::test]
async fn export_is_exact_read_only_and_atomic() {
    let (bare, work, _first) = repo_with_commit();
    work.write("bin/run.sh", "#!/bin/sh\necho hi\n");
    let script = work.path().join("bin/run.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("app/compose.yaml", work.path().join("link.yaml")).unwrap();
    let sha = work.commit_and_push("script and link");
    let url = bare.file_url();
    let c = client();
    let (tmp, dir) = mirror_dir();
    c.sync(&url, "main", &dir).await.unwrap();
    assert!(!dir.join("bin").exists(), "the mirror has no work tree");

    let dest = tmp.path().join("data/artifacts").join(&sha);
    let partial = tmp.path().join(format!("data/artifacts/{sha}.partial"));
    // A leftover from a crashed export is replaced.
    std::fs::create_dir_all(partial.join("junk")).unwrap();
    std::fs::write(partial.join("junk/stale.txt"), "old").unwrap();
    c.export(&url, &dir, &sha, &dest).await.unwrap();
    assert!(!partial.exists(), "no staging directory is left");

    // Exactly the commit's files: no .git, no index, nothing else.
    assert_eq!(
        tree(&dest),
        ["app/compose.yaml", "bin/run.sh", "link.yaml"],
        "{:?}",
        tree(&dest)
    );
    assert_eq!(read(&dest, "app/compose.yaml"), "services: {}\n");
    // Read-only files (checked on the mode bits: root ignores them), executables stay executable,
    // directories stay writable by the owner, symlinks stay symlinks.
    assert_eq!(mode(&dest.join("app/compose.yaml")), 0o444);
    assert_eq!(mode(&dest.join("bin/run.sh")), 0o555);
    assert_eq!(mode(&dest.join("app")) & 0o700, 0o700);
    let link = dest.join("link.yaml");
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("app/compose.yaml")
    );
    assert_eq!(read(&dest, "link.yaml"), "services: {}\n");
    // The mirror was only read: still bare, no index, nothing written into it.
    assert_eq!(git(&dir, &["rev-parse", "--is-bare-repository"]), "true");
    assert!(!dir.join("index").exists());
    // The export can be removed by its owner (the garbage collector).
    let copy = tmp.path().join("data/artifacts/copy");
    c.export(&url, &dir, &sha, &copy).await.unwrap();
    std::fs::remove_dir_all(&copy).unwrap();
}

#[tokio::test]
async fn exports_of_other_commits_leave_earlier_ones_untouched() {
    let (bare, work, first) = repo_with_commit();
    let url = bare.file_url();
    let c = client();
    let (_tmp, dir) = mirror_dir();
    c.sync(&url, "main", &dir).await.unwrap();
    let old = export(&c, &url, &dir, &first).await;
    let old_file = old.join("app/compose.yaml");
    let inode = std::fs::metadata(&old_file).unwrap().ino();
    let dir_inode = std::fs::metadata(&old).unwrap().ino();

    work.write("app/compose.yaml", "services: {changed: {}}\n");
    work.write("new.txt", "new");
    let second = work.commit_and_push("second");
    c.sync(&url, "main", &dir).await.unwrap();
    let new = export(&c, &url, &dir, &second).await;
    assert_ne!(old, new);
    assert_eq!(read(&new, "app/compose.yaml"), "services: {changed: {}}\n");

    assert_eq!(read(&old, "app/compose.yaml"), "services: {}\n");
    assert_eq!(std::fs::metadata(&old_file).unwrap().ino(), inode);
    assert_eq!(std::fs::metadata(&old).unwrap().ino(), dir_inode);
    assert_eq!(tree(&old), ["app/compose.yaml"]);
}

#[tokio::test]
async fn adopt_checkout_keeps_the_work_tree_and_needs_no_network() {
    let (bare, work, first) = repo_with_commit();
    let second = work.commit_and_push("second");
    let tmp = tempfile::tempdir().unwrap();
    // An old-layout checkout: a plain clone, detached at the first commit.
    let checkout = tmp.path().join("data/repos/checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    git(
        &checkout,
        &["clone", "-q", "--", bare.path().to_str().unwrap(), "."],
    );
    git(&checkout, &["checkout", "-q", "--detach", &first]);
    std::fs::write(checkout.join("untracked.txt"), "local").unwrap();
    let before: Vec<(String, u64)> = tree(&checkout)
        .into_iter()
        .filter(|p| !p.starts_with(".git/"))
        .map(|p| {
            let ino = std::fs::metadata(checkout.join(&p)).unwrap().ino();
            (p, ino)
        })
        .collect();

    // The remote is gone: adoption needs none of it.
    let url = "http://127.0.0.1:1/gone.git";
    let mirror = tmp.path().join("data/repos/mirror");
    let c = client();
    c.adopt_checkout(url, "main", &checkout, &mirror)
        .await
        .unwrap();
    assert_eq!(git(&mirror, &["rev-parse", "--is-bare-repository"]), "true");
    assert_eq!(git(&mirror, &["config", "remote.origin.url"]), url);
    assert_eq!(
        resolved_commit(&mirror, "main").unwrap(),
        Some(first.clone())
    );
    assert_eq!(git(&mirror, &["cat-file", "-t", &second]), "commit");
    let files = mirror.parent().unwrap().join("artifacts/adopted");
    c.export(url, &mirror, &first, &files).await.unwrap();
    assert_eq!(read(&files, "app/compose.yaml"), "services: {}\n");
    let siblings: Vec<String> = std::fs::read_dir(mirror.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        siblings.iter().all(|n| !n.contains("doco-cd-tmp")),
        "{siblings:?}"
    );

    // The work tree is exactly as it was (same files, same inodes), HEAD included.
    let after: Vec<(String, u64)> = tree(&checkout)
        .into_iter()
        .filter(|p| !p.starts_with(".git/"))
        .map(|p| {
            let ino = std::fs::metadata(checkout.join(&p)).unwrap().ino();
            (p, ino)
        })
        .collect();
    assert_eq!(before, after);
    assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), first);
    assert_eq!(
        git(&checkout, &["status", "--porcelain"]),
        "?? untracked.txt"
    );

    // The checkout's .git may go: the mirror stands alone.
    std::fs::remove_dir_all(checkout.join(".git")).unwrap();
    assert_eq!(git(&mirror, &["cat-file", "-t", &first]), "commit");

    // An existing mirror is never adopted over; a directory without .git is not adopted.
    let err = c
        .adopt_checkout(url, "main", &files, &mirror)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::BrokenCheckout { .. }), "{err:?}");
    std::fs::create_dir_all(checkout.join(".git")).unwrap();
    let err = c
        .adopt_checkout(url, "main", &checkout, &mirror)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::InvalidInput { .. }), "{err:?}");

    // Then the real remote: a sync finds the recorded commit or moves on from it.
    let (_tmp2, mirror2) = mirror_dir();
    let checkout2 = mirror2.with_file_name("checkout");
    std::fs::create_dir_all(&checkout2).unwrap();
    git(
        &checkout2,
        &["clone", "-q", "--", bare.path().to_str().unwrap(), "."],
    );
    c.adopt_checkout(&bare.file_url(), "main", &checkout2, &mirror2)
        .await
        .unwrap();
    let synced = c.sync(&bare.file_url(), "main", &mirror2).await.unwrap();
    assert_eq!(
        synced,
        SyncOutcome {
            commit: second,
            fetched: false,
            cloned: false
        }
    );
}
