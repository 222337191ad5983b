//! The shape of a checkout: shallow clones and deepening, a depth change (re-clone beside and
//! swap), submodules with relative URLs and per-domain auth, force pushes, corrupt checkouts
//! repaired by re-cloning beside them, a hanging server killed at the deadline, and concurrent
//! syncs of one checkout.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use doco_git::{DomainAuth, GitClient, GitOptions, HttpToken, SyncOptions, head_commit};
use doco_testkit::git::{BareRepo, WorkTree, git};
use doco_testkit::http::StaticHttpServer;
use doco_testkit::process_cmdlines;
use doco_testkit::smart_http::SmartHttpServer;

fn client(depth: u32) -> GitClient {
    GitClient::new(GitOptions {
        depth,
        ..GitOptions::default()
    })
}

fn checkout_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/host/owner/repo");
    (tmp, dir)
}

/// A bare repository with `n` commits on main (`n.txt` holds the commit number); returns the SHAs,
/// oldest first.
fn history(n: usize) -> (BareRepo, WorkTree, Vec<String>) {
    let bare = BareRepo::new();
    let work = WorkTree::clone_from(&bare);
    let shas = (1..=n)
        .map(|i| {
            work.write("n.txt", &i.to_string());
            work.commit_and_push(&format!("commit {i}"))
        })
        .collect();
    (bare, work, shas)
}

fn commit_count(dir: &Path) -> usize {
    git(dir, &["rev-list", "--count", "HEAD"]).parse().unwrap()
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap()
}

/// Siblings of `dir` other than `dir` itself (temporary clones must not linger).
fn siblings(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Some(n.as_str()) != dir.file_name().and_then(|f| f.to_str()))
        .collect()
}

#[tokio::test]
async fn shallow_clone_then_references_deeper_than_the_depth() {
    let (bare, _work, shas) = history(12);
    let url = bare.file_url();
    let (_tmp, dir) = checkout_dir();
    let c = client(2);
    let out = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(out.commit, shas[11]);
    assert!(dir.join(".git/shallow").exists());
    assert_eq!(commit_count(&dir), 2);

    // 6 commits back: deepened (×2 = 4 is not enough, ×4 = 8 is).
    let out = c.sync(&url, &shas[5], &dir).await.unwrap();
    assert_eq!((out.commit.as_str(), out.fetched), (shas[5].as_str(), true));
    assert_eq!(read(&dir, "n.txt"), "6");
    // The very first commit: beyond ×4, so the full history is fetched.
    let out = c.sync(&url, &shas[0], &dir).await.unwrap();
    assert_eq!(out.commit, shas[0]);
    assert_eq!(read(&dir, "n.txt"), "1");
    // Back to the branch: quiet afterwards.
    c.sync(&url, "main", &dir).await.unwrap();
    assert!(!c.sync(&url, "main", &dir).await.unwrap().fetched);

    // A fresh shallow clone straight at an old commit.
    let (_tmp2, dir2) = checkout_dir();
    let out = c.sync(&url, &shas[3], &dir2).await.unwrap();
    assert_eq!(out.commit, shas[3]);
    assert_eq!(read(&dir2, "n.txt"), "4");

    // A deployment's git_depth overrides the client's depth.
    let (_tmp3, dir3) = checkout_dir();
    client(0)
        .sync_with(&url, "main", &dir3, &SyncOptions { depth: Some(3) })
        .await
        .unwrap();
    assert_eq!(commit_count(&dir3), 3);
}

#[tokio::test]
async fn depth_change_reclones_beside_and_swaps() {
    let (bare, work, shas) = history(5);
    let root = bare.path().parent().unwrap().to_path_buf();
    let server = SmartHttpServer::start(&root, None);
    let url = server.repo_url(bare.path());
    let (_tmp, dir) = checkout_dir();
    client(0).sync(&url, "main", &dir).await.unwrap();
    assert_eq!(commit_count(&dir), 5);
    std::fs::write(dir.join("untracked-marker"), "old checkout").unwrap();
    let old_inode = std::fs::metadata(&dir).unwrap().ino();

    // Unreachable remote: the re-clone fails and the healthy checkout is left exactly as it was.
    drop(server);
    let err = client(1).sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert_eq!(head_commit(&dir).unwrap(), Some(shas[4].clone()));
    assert!(dir.join("untracked-marker").exists());
    assert!(!dir.join(".git/shallow").exists());
    assert!(siblings(&dir).is_empty(), "{:?}", siblings(&dir));

    // Reachable again: re-cloned with depth 1 beside the old checkout, then swapped in.
    let server = SmartHttpServer::start(&root, None);
    let url = server.repo_url(bare.path());
    let newer = work.commit_and_push("sixth");
    let out = client(1).sync(&url, "main", &dir).await.unwrap();
    assert_eq!((out.commit.as_str(), out.cloned), (newer.as_str(), true));
    assert_eq!(commit_count(&dir), 1);
    assert!(!dir.join("untracked-marker").exists(), "a new clone");
    assert_ne!(std::fs::metadata(&dir).unwrap().ino(), old_inode);
    assert!(siblings(&dir).is_empty(), "{:?}", siblings(&dir));
    // Same depth again: no re-clone, a quiet poll.
    let again = client(1).sync(&url, "main", &dir).await.unwrap();
    assert!(!again.fetched && !again.cloned);
    // Back to a full clone.
    client(0).sync(&url, "main", &dir).await.unwrap();
    assert_eq!(commit_count(&dir), 6);
}

#[tokio::test]
async fn submodule_with_a_relative_url_and_domain_auth() {
    let root = tempfile::tempdir().unwrap();
    let group = root.path().join("acme");
    let sub = BareRepo::new_in(&group);
    let sub_work = WorkTree::clone_from(&sub);
    sub_work.write("lib.txt", "v1");
    sub_work.commit_and_push("lib v1");
    let parent = BareRepo::new_in(&group);
    let work = WorkTree::clone_from(&parent);
    let sub_name = sub
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    git(
        work.path(),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &format!("../{sub_name}"),
            "vendor/lib",
        ],
    );
    work.write("compose.yaml", "services: {}\n");
    work.commit_and_push("with a submodule");

    let token = "sub-m0dule-t0ken";
    let server = SmartHttpServer::start(root.path(), Some(("deploy", token)));
    let url = server.repo_url(parent.path());
    let c = GitClient::new(GitOptions {
        http_token: Some(HttpToken::new("wrong-global")),
        auth_domains: vec![DomainAuth {
            domains: vec!["127.0.0.1".into()],
            http_token: Some(HttpToken {
                user: "deploy".into(),
                token: token.into(),
            }),
            ..DomainAuth::default()
        }],
        ..GitOptions::default()
    });
    let (_tmp, dir) = checkout_dir();
    c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(read(&dir, "vendor/lib/lib.txt"), "v1");
    // The submodule was fetched over HTTP from the sibling repository, with the token.
    let sub_url = git(&dir, &["config", "submodule.vendor/lib.url"]);
    assert_eq!(sub_url, server.repo_url(sub.path()));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains(&format!("/acme/{sub_name}/"))),
        "{:?}",
        server.requests()
    );
    let module_config = read(&dir, ".git/modules/vendor/lib/config");
    assert!(!module_config.contains(token), "{module_config}");

    // A new submodule commit, recorded in the parent, is checked out by the next sync.
    sub_work.write("lib.txt", "v2");
    sub_work.commit_and_push("lib v2");
    git(
        &work.path().join("vendor/lib"),
        &[
            "-c",
            "protocol.file.allow=always",
            "pull",
            "-q",
            "origin",
            "main",
        ],
    );
    let bumped = work.commit_and_push("bump lib");
    let out = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(out.commit, bumped);
    assert_eq!(read(&dir, "vendor/lib/lib.txt"), "v2");

    // GIT_CLONE_SUBMODULES=false leaves them alone.
    let (_tmp2, dir2) = checkout_dir();
    GitClient::new(GitOptions {
        submodules: false,
        http_token: Some(HttpToken {
            user: "deploy".into(),
            token: token.into(),
        }),
        ..GitOptions::default()
    })
    .sync(&url, "main", &dir2)
    .await
    .unwrap();
    assert!(!dir2.join("vendor/lib/lib.txt").exists());
}

#[tokio::test]
async fn force_pushed_branch_is_followed() {
    for depth in [0, 1] {
        let (bare, work, shas) = history(2);
        work.write("doomed.txt", "soon gone");
        let doomed = work.commit_and_push("doomed");
        let (_tmp, dir) = checkout_dir();
        let c = client(depth);
        assert_eq!(
            c.sync(&bare.file_url(), "main", &dir).await.unwrap().commit,
            doomed
        );

        // Rewrite history: drop the last commit and push another in its place.
        git(work.path(), &["reset", "-q", "--hard", &shas[1]]);
        work.write("replacement.txt", "new");
        let replacement = work.commit("replacement");
        work.push();
        let out = c.sync(&bare.file_url(), "main", &dir).await.unwrap();
        assert_eq!(out.commit, replacement, "depth {depth}");
        assert!(!dir.join("doomed.txt").exists());
        assert_eq!(read(&dir, "replacement.txt"), "new");
    }
}

#[tokio::test]
async fn corrupt_checkouts_are_repaired_by_recloning_beside_them() {
    type Corrupt = fn(&Path);
    let corruptions: [(&str, Corrupt); 3] = [
        ("index", |dir| {
            std::fs::write(dir.join(".git/index"), "garbage, not an index").unwrap()
        }),
        ("HEAD", |dir| {
            std::fs::write(dir.join(".git/HEAD"), "not a ref at all\n").unwrap()
        }),
        ("config", |dir| {
            std::fs::write(dir.join(".git/config"), "[[[ this is not git config\n").unwrap()
        }),
    ];
    for (what, corrupt) in corruptions {
        let (bare, work, shas) = history(2);
        let server = StaticHttpServer::start(bare.path());
        let url = format!("{}/", server.url());
        let (_tmp, dir) = checkout_dir();
        let c = client(0);
        c.sync(&url, "main", &dir).await.unwrap();
        std::fs::write(dir.join("untracked-marker"), "x").unwrap();
        corrupt(&dir);
        let newer = work.commit_and_push("after corruption");
        let out = c
            .sync(&url, "main", &dir)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out.commit, newer, "{what}");
        assert!(out.cloned, "{what}: repaired by a new clone");
        assert_eq!(read(&dir, "n.txt"), "2", "{what}");
        assert!(!dir.join("untracked-marker").exists(), "{what}");
        assert!(siblings(&dir).is_empty(), "{what}: {:?}", siblings(&dir));
        assert_eq!(head_commit(&dir).unwrap(), Some(newer.clone()));
        assert!(c.sync(&url, "main", &dir).await.unwrap().commit == newer);
        drop(shas);
    }

    // A corrupt checkout while the remote is unreachable is left alone, never deleted.
    let (bare, _work, _shas) = history(1);
    let mut server = StaticHttpServer::start(bare.path());
    let url = format!("{}/", server.url());
    let (_tmp, dir) = checkout_dir();
    client(0).sync(&url, "main", &dir).await.unwrap();
    std::fs::write(dir.join(".git/HEAD"), "broken\n").unwrap();
    server.stop();
    let err = client(0).sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert_eq!(read(&dir, ".git/HEAD"), "broken\n");
    assert_eq!(read(&dir, "n.txt"), "1");
    assert!(siblings(&dir).is_empty());
}

/// Processes whose command line mentions `needle` (zombies have an empty one).
fn processes_mentioning(needle: &str) -> Vec<String> {
    process_cmdlines()
        .into_iter()
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test]
async fn a_server_that_never_answers_is_killed_at_the_deadline() {
    let server = StaticHttpServer::start_hanging();
    let port = server.port();
    let c = GitClient::new(GitOptions {
        timeout: Duration::from_secs(2),
        ..GitOptions::default()
    });
    for url in [
        format!("http://127.0.0.1:{port}/never.git"),
        format!("ssh://git@127.0.0.1:{port}/never.git"),
    ] {
        let (_tmp, dir) = checkout_dir();
        let started = Instant::now();
        let watcher = {
            let needle = format!("127.0.0.1:{port}/never.git");
            std::thread::spawn(move || {
                // Prove the git processes existed while the call hung.
                let deadline = Instant::now() + Duration::from_millis(1800);
                while Instant::now() < deadline {
                    if !processes_mentioning(&needle).is_empty() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                false
            })
        };
        let err = c.sync(&url, "main", &dir).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(err.is_transport(), "{url}: {err:?}");
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(
            elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(15),
            "{elapsed:?}"
        );
        assert!(
            watcher.join().unwrap(),
            "{url}: no git process was seen while hanging"
        );
        // Every process of the call (git, git-remote-http, ssh) is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_mentioning(&format!("{port}"))
                .into_iter()
                .filter(|c| c.contains("never.git") || c.contains("ssh"))
                .collect::<Vec<_>>();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{url}: still running: {left:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!dir.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_syncs_of_one_checkout_are_serialized() {
    let (bare, _work, shas) = history(3);
    let (_tmp, dir) = checkout_dir();
    let (_tmp2, other) = checkout_dir();
    let c = client(0);
    let url = bare.file_url();
    let (a, b, d) = tokio::join!(
        c.sync(&url, "main", &dir),
        c.sync(&url, "main", &dir),
        c.sync(&url, &shas[0], &other)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.commit.as_str(), b.commit.as_str()),
        (shas[2].as_str(), shas[2].as_str())
    );
    assert!(
        a.cloned != b.cloned,
        "one cloned, the other found the clone: {a:?} {b:?}"
    );
    assert_eq!(d.unwrap().commit, shas[0]);
}
