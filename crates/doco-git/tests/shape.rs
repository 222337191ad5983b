//! The shape of a mirror and its exports: shallow clones and deepening, a depth change (re-clone
//! beside and swap), submodules (their own mirrors, relative URLs, per-domain auth, gitlinks that
//! move), force pushes, corrupt mirrors repaired by re-cloning beside them, a hanging server killed
//! at the deadline, and concurrent syncs of one mirror.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use doco_git::{DomainAuth, GitClient, GitOptions, HttpToken, SyncOptions, resolved_commit};
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

fn mirror_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/host/owner/repo");
    (tmp, dir)
}

/// The export of `commit` from `mirror` (`<mirror's grandparent>/artifacts/<commit>`, outside the
/// mirror's siblings), made if missing.
async fn export(c: &GitClient, url: &str, mirror: &Path, commit: &str) -> PathBuf {
    let dest = mirror
        .ancestors()
        .nth(2)
        .unwrap()
        .join("artifacts")
        .join(commit);
    if !dest.exists() {
        c.export(url, mirror, commit, &dest).await.unwrap();
    }
    dest
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

/// How many commits of `sha`'s history the mirror holds.
fn commit_count(mirror: &Path, sha: &str) -> usize {
    git(mirror, &["rev-list", "--count", sha]).parse().unwrap()
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
    let (_tmp, dir) = mirror_dir();
    let c = client(2);
    let out = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(out.commit, shas[11]);
    assert!(dir.join("shallow").exists());
    assert_eq!(commit_count(&dir, &shas[11]), 2);

    // 6 commits back: deepened (×2 = 4 is not enough, ×4 = 8 is).
    let out = c.sync(&url, &shas[5], &dir).await.unwrap();
    assert_eq!((out.commit.as_str(), out.fetched), (shas[5].as_str(), true));
    assert_eq!(read(&export(&c, &url, &dir, &shas[5]).await, "n.txt"), "6");
    // The very first commit: beyond ×4, so the full history is fetched.
    let out = c.sync(&url, &shas[0], &dir).await.unwrap();
    assert_eq!(out.commit, shas[0]);
    assert_eq!(read(&export(&c, &url, &dir, &shas[0]).await, "n.txt"), "1");
    // Back to the branch: quiet afterwards.
    c.sync(&url, "main", &dir).await.unwrap();
    assert!(!c.sync(&url, "main", &dir).await.unwrap().fetched);

    // A fresh shallow clone straight at an old commit.
    let (_tmp2, dir2) = mirror_dir();
    let out = c.sync(&url, &shas[3], &dir2).await.unwrap();
    assert_eq!(out.commit, shas[3]);
    assert_eq!(read(&export(&c, &url, &dir2, &shas[3]).await, "n.txt"), "4");

    // A deployment's git_depth overrides the client's depth.
    let (_tmp3, dir3) = mirror_dir();
    client(0)
        .sync_with(&url, "main", &dir3, &SyncOptions { depth: Some(3) })
        .await
        .unwrap();
    assert_eq!(commit_count(&dir3, &shas[11]), 3);
}

#[tokio::test]
async fn depth_change_reclones_beside_and_swaps() {
    let (bare, work, shas) = history(5);
    let root = bare.path().parent().unwrap().to_path_buf();
    let server = SmartHttpServer::start(&root, None);
    let url = server.repo_url(bare.path());
    let (_tmp, dir) = mirror_dir();
    client(0).sync(&url, "main", &dir).await.unwrap();
    assert_eq!(commit_count(&dir, &shas[4]), 5);
    std::fs::write(dir.join("untracked-marker"), "old mirror").unwrap();
    let old_inode = std::fs::metadata(&dir).unwrap().ino();

    // Unreachable remote: the re-clone fails and the healthy mirror is left exactly as it was.
    drop(server);
    let err = client(1).sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert_eq!(
        resolved_commit(&dir, "main").unwrap(),
        Some(shas[4].clone())
    );
    assert!(dir.join("untracked-marker").exists());
    assert!(!dir.join("shallow").exists());
    assert!(siblings(&dir).is_empty(), "{:?}", siblings(&dir));

    // Reachable again: re-cloned with depth 1 beside the old mirror, then swapped in.
    let server = SmartHttpServer::start(&root, None);
    let url = server.repo_url(bare.path());
    let newer = work.commit_and_push("sixth");
    let out = client(1).sync(&url, "main", &dir).await.unwrap();
    assert_eq!((out.commit.as_str(), out.cloned), (newer.as_str(), true));
    assert_eq!(commit_count(&dir, &newer), 1);
    assert!(!dir.join("untracked-marker").exists(), "a new clone");
    assert_ne!(std::fs::metadata(&dir).unwrap().ino(), old_inode);
    assert!(siblings(&dir).is_empty(), "{:?}", siblings(&dir));
    // Same depth again: no re-clone, a quiet poll.
    let again = client(1).sync(&url, "main", &dir).await.unwrap();
    assert!(!again.fetched && !again.cloned);
    // Back to a full clone.
    client(0).sync(&url, "main", &dir).await.unwrap();
    assert_eq!(commit_count(&dir, &newer), 6);
}

/// A superproject with the submodule `sub` at `vendor/lib`, added with the URL `sub_url`.
fn add_submodule(work: &WorkTree, sub_url: &str) {
    git(
        work.path(),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            sub_url,
            "vendor/lib",
        ],
    );
}

/// Moves the superproject's gitlink to the submodule's newest `main` and pushes.
fn bump_submodule(work: &WorkTree) -> String {
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
    work.commit_and_push("bump lib")
}

/// The submodule mirrors beside `mirror` (`<parent>/submodules/*`).
fn submodule_mirrors(mirror: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(mirror.with_file_name("submodules"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
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
    add_submodule(&work, &format!("../{sub_name}"));
    work.write("compose.yaml", "services: {}\n");
    let first = work.commit_and_push("with a submodule");

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
    let (tmp, dir) = mirror_dir();
    c.sync(&url, "main", &dir).await.unwrap();
    let old = export(&c, &url, &dir, &first).await;
    assert_eq!(read(&old, "vendor/lib/lib.txt"), "v1");
    assert!(!old.join("vendor/lib/.git").exists());
    // The submodule was fetched over HTTP from the sibling repository, with the token, into a
    // bare mirror of its own beside the superproject's.
    let mirrors = submodule_mirrors(&dir);
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert_eq!(
        git(&mirrors[0], &["config", "remote.origin.url"]),
        server.repo_url(sub.path())
    );
    assert_eq!(
        git(&mirrors[0], &["rev-parse", "--is-bare-repository"]),
        "true"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains(&format!("/acme/{sub_name}/"))),
        "{:?}",
        server.requests()
    );
    for (path, bytes) in doco_testkit::files_under(tmp.path()) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(token),
            "{}",
            path.display()
        );
    }

    // A new submodule commit, recorded in the parent, is in the next export; the old one stays.
    sub_work.write("lib.txt", "v2");
    sub_work.commit_and_push("lib v2");
    let bumped = bump_submodule(&work);
    let out = c.sync(&url, "main", &dir).await.unwrap();
    assert_eq!(out.commit, bumped);
    assert_eq!(
        read(&export(&c, &url, &dir, &bumped).await, "vendor/lib/lib.txt"),
        "v2"
    );
    assert_eq!(read(&old, "vendor/lib/lib.txt"), "v1");

    // GIT_CLONE_SUBMODULES=false leaves them out (an empty directory, as git does).
    let (_tmp2, dir2) = mirror_dir();
    let plain = GitClient::new(GitOptions {
        submodules: false,
        http_token: Some(HttpToken {
            user: "deploy".into(),
            token: token.into(),
        }),
        ..GitOptions::default()
    });
    plain.sync(&url, "main", &dir2).await.unwrap();
    let files = export(&plain, &url, &dir2, &bumped).await;
    assert!(files.join("vendor/lib").is_dir());
    assert!(!files.join("vendor/lib/lib.txt").exists());
    assert!(submodule_mirrors(&dir2).is_empty());
}

#[tokio::test]
async fn submodule_exports_follow_the_gitlink() {
    let sub = BareRepo::new();
    let sub_work = WorkTree::clone_from(&sub);
    sub_work.write("lib.txt", "v1");
    let lib_v1 = sub_work.commit_and_push("lib v1");
    let parent = BareRepo::new();
    let work = WorkTree::clone_from(&parent);
    add_submodule(&work, &sub.file_url());
    work.write("compose.yaml", "services: {}\n");
    let first = work.commit_and_push("with a submodule");
    let url = parent.file_url();
    let c = client(0);
    let (_tmp, dir) = mirror_dir();

    c.sync(&url, "main", &dir).await.unwrap();
    let old = export(&c, &url, &dir, &first).await;
    assert_eq!(read(&old, "vendor/lib/lib.txt"), "v1");
    assert_eq!(
        std::fs::metadata(old.join("vendor/lib/lib.txt"))
            .unwrap()
            .mode()
            & 0o777,
        0o444
    );
    let mirrors = submodule_mirrors(&dir);
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert_eq!(
        resolved_commit(&mirrors[0], &lib_v1).unwrap(),
        Some(lib_v1.clone())
    );
    let old_inode = std::fs::metadata(old.join("vendor/lib/lib.txt"))
        .unwrap()
        .ino();

    // The submodule moves on; the superproject's gitlink follows in a later commit.
    sub_work.write("lib.txt", "v2");
    sub_work.write("added.txt", "new");
    let lib_v2 = sub_work.commit_and_push("lib v2");
    let bumped = bump_submodule(&work);
    c.sync(&url, "main", &dir).await.unwrap();
    let new = export(&c, &url, &dir, &bumped).await;
    assert_eq!(read(&new, "vendor/lib/lib.txt"), "v2");
    assert_eq!(read(&new, "vendor/lib/added.txt"), "new");
    assert_eq!(resolved_commit(&mirrors[0], &lib_v2).unwrap(), Some(lib_v2));
    // The first export is unchanged: same content, same file.
    assert_eq!(read(&old, "vendor/lib/lib.txt"), "v1");
    assert!(!old.join("vendor/lib/added.txt").exists());
    assert_eq!(
        std::fs::metadata(old.join("vendor/lib/lib.txt"))
            .unwrap()
            .ino(),
        old_inode
    );
    // Exporting the old commit again needs the submodule's mirror only (the remote is gone).
    drop(sub);
    let again = dir.ancestors().nth(2).unwrap().join("artifacts/again");
    c.export(&url, &dir, &first, &again).await.unwrap();
    assert_eq!(read(&again, "vendor/lib/lib.txt"), "v1");
}

#[tokio::test]
async fn force_pushed_branch_is_followed() {
    for depth in [0, 1] {
        let (bare, work, shas) = history(2);
        work.write("doomed.txt", "soon gone");
        let doomed = work.commit_and_push("doomed");
        let (_tmp, dir) = mirror_dir();
        let c = client(depth);
        let url = bare.file_url();
        assert_eq!(c.sync(&url, "main", &dir).await.unwrap().commit, doomed);

        // Rewrite history: drop the last commit and push another in its place.
        git(work.path(), &["reset", "-q", "--hard", &shas[1]]);
        work.write("replacement.txt", "new");
        let replacement = work.commit("replacement");
        work.push();
        let out = c.sync(&url, "main", &dir).await.unwrap();
        assert_eq!(out.commit, replacement, "depth {depth}");
        let files = export(&c, &url, &dir, &replacement).await;
        assert!(!files.join("doomed.txt").exists());
        assert_eq!(read(&files, "replacement.txt"), "new");
        assert_eq!(git(&dir, &["rev-parse", "refs/heads/main"]), replacement);
    }
}

#[tokio::test]
async fn corrupt_mirrors_are_repaired_by_recloning_beside_them() {
    type Corrupt = fn(&Path);
    let corruptions: [(&str, Corrupt); 3] = [
        ("objects", |dir| {
            std::fs::remove_dir_all(dir.join("objects")).unwrap()
        }),
        ("HEAD", |dir| {
            std::fs::write(dir.join("HEAD"), "not a ref at all\n").unwrap()
        }),
        ("config", |dir| {
            std::fs::write(dir.join("config"), "[[[ this is not git config\n").unwrap()
        }),
    ];
    for (what, corrupt) in corruptions {
        let (bare, work, shas) = history(2);
        let server = StaticHttpServer::start(bare.path());
        let url = format!("{}/", server.url());
        let (_tmp, dir) = mirror_dir();
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
        assert_eq!(
            read(&export(&c, &url, &dir, &newer).await, "n.txt"),
            "2",
            "{what}"
        );
        assert!(!dir.join("untracked-marker").exists(), "{what}");
        assert!(siblings(&dir).is_empty(), "{what}: {:?}", siblings(&dir));
        assert_eq!(resolved_commit(&dir, "main").unwrap(), Some(newer.clone()));
        assert!(c.sync(&url, "main", &dir).await.unwrap().commit == newer);
        drop(shas);
    }

    // A corrupt mirror while the remote is unreachable is left alone, never deleted.
    let (bare, _work, _shas) = history(1);
    let mut server = StaticHttpServer::start(bare.path());
    let url = format!("{}/", server.url());
    let (_tmp, dir) = mirror_dir();
    client(0).sync(&url, "main", &dir).await.unwrap();
    std::fs::write(dir.join("HEAD"), "broken\n").unwrap();
    server.stop();
    let err = client(0).sync(&url, "main", &dir).await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    assert_eq!(read(&dir, "HEAD"), "broken\n");
    assert!(dir.join("objects").is_dir());
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
        let (_tmp, dir) = mirror_dir();
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
async fn concurrent_syncs_of_one_mirror_are_serialized() {
    let (bare, _work, shas) = history(3);
    let (_tmp, dir) = mirror_dir();
    let (_tmp2, other) = mirror_dir();
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
