//! Proves that a quiet poll costs exactly one `git` process (one `ls-remote`) and that a sync to the
//! commit already checked out costs none. A test binary of its own, with a single test, because the
//! spawn counter is process-wide and tests in one binary run in parallel.
#![allow(clippy::unwrap_used)]

use doco_git::{GitClient, GitOptions};
use doco_testkit::git::{BareRepo, WorkTree};
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

        let before = git_spawns();
        let pinned = c.sync(&url, &sha, &dir).await.unwrap();
        assert!(!pinned.fetched);
        assert_eq!(
            git_spawns() - before,
            0,
            "HEAD already at the commit ({url})"
        );

        let before = git_spawns();
        assert_eq!(c.ls_remote(&url, &sha).await.unwrap(), sha);
        assert_eq!(git_spawns() - before, 0, "a commit needs no ls-remote");
    }
}
