//! Proves that a quiet poll costs exactly one `git` process (one `ls-remote`), that a sync to a
//! commit already recorded costs none, and that a mirror adopted from an old checkout is on the
//! quiet path at once. A test binary of its own, with a single test, because the spawn counter is
//! process-wide and tests in one binary run in parallel.
#![allow(clippy::unwrap_used)]

use doco_git::{GitClient, GitOptions};
use doco_testkit::git::{BareRepo, WorkTree, git};
use doco_testkit::http::StaticHttpServer;

fn git_spawns() -> u64 {
    doco_process::spawn_counts()
        .get("git")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn quiet_syncs_spawn_one_git_process_or_none() {
    let bare = BareRepo::new();
    let work = WorkTree::clone_from(&bare);
    work.write("compose.yaml", "services: {}\n");
    let sha = work.commit_and_push("first");
    let server = StaticHttpServer::start(bare.path());
    let tmp = tempfile::tempdir().unwrap();
    let c = GitClient::new(GitOptions::default());

    for (url, dir) in [
        (bare.file_url(), tmp.path().join("file")),
        (format!("{}/", server.url()), tmp.path().join("http")),
    ] {
        let before = git_spawns();
        let cloned = c.sync(&url, "main", &dir).await.unwrap();
        assert!(cloned.cloned);
        let clone_cost = git_spawns() - before;
        assert!(clone_cost <= 5, "a clone took {clone_cost} git processes");

        let before = git_spawns();
        let quiet = c.sync(&url, "main", &dir).await.unwrap();
        assert!(!quiet.fetched);
        assert_eq!(
            git_spawns() - before,
            1,
            "a quiet poll is one ls-remote ({url})"
        );

        // A commit present but not yet recorded for itself: one check, one record.
        let before = git_spawns();
        let pinned = c.sync(&url, &sha, &dir).await.unwrap();
        assert!(!pinned.fetched);
        assert_eq!(git_spawns() - before, 2, "cat-file and update-ref ({url})");
        let before = git_spawns();
        let pinned = c.sync(&url, &sha, &dir).await.unwrap();
        assert!(!pinned.fetched);
        assert_eq!(
            git_spawns() - before,
            0,
            "the commit is recorded in the mirror ({url})"
        );

        let before = git_spawns();
        assert_eq!(c.ls_remote(&url, &sha).await.unwrap(), sha);
        assert_eq!(git_spawns() - before, 0, "a commit needs no ls-remote");
    }

    // A mirror adopted from an old checkout: the next poll of the same commit is quiet.
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    git(
        &checkout,
        &["clone", "-q", "--", bare.path().to_str().unwrap(), "."],
    );
    let mirror = tmp.path().join("adopted");
    c.adopt_checkout(&bare.file_url(), "main", &checkout, &mirror)
        .await
        .unwrap();
    let before = git_spawns();
    let quiet = c.sync(&bare.file_url(), "main", &mirror).await.unwrap();
    assert_eq!(
        (quiet.commit.as_str(), quiet.fetched),
        (sha.as_str(), false)
    );
    assert_eq!(git_spawns() - before, 1, "one ls-remote after adoption");
}
