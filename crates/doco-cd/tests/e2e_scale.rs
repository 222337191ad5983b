//! The reduced scale benchmark of issue 12 (`scripts/scale-bench.sh` measures 50 × 4): the built binary
//! deploys 5 repositories × 4 stacks, then polls every repository each second; over three quiet poll
//! rounds it must spawn no `docker` process, at most one `git` process per poll, and write nothing to
//! the data volume. Counts only, no times (those are in BENCHMARKS.md).

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::time::Duration;

use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, require_docker, test_image,
};
use doco_testkit::git::{BareRepo, WorkTree};
use doco_testkit::unique_name;
use support::{Daemon, http_get, sleep_services};

const REPOS: usize = 5;
const STACKS: usize = 4;
const QUIET_ROUNDS: usize = 3;

/// The number of repositories whose `doco_cd_polls_total` is at least `polls`.
fn repositories_polled(daemon: &Daemon, polls: f64) -> usize {
    let text = http_get(daemon.metrics_port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with("doco_cd_polls_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .filter(|value| *value >= polls)
        .count()
}

#[test]
fn five_repositories_of_four_stacks_poll_quietly_without_docker_or_writes() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let prefix = unique_name("e2e-scale");
    let mut guards = Vec::new();
    let mut repos = Vec::new();
    let mut poll_config = String::new();
    for r in 0..REPOS {
        let bare = BareRepo::new();
        let work = WorkTree::clone_from(&bare);
        let mut docs = Vec::new();
        for s in 0..STACKS {
            let project = format!("{prefix}-r{r}-s{s}");
            docs.push(format!("name: {project}\nworking_dir: s{s}\n"));
            work.write(
                &format!("s{s}/compose.yml"),
                &sleep_services(&image, &[("app", "86400")]),
            );
            guards.push(ProjectGuard::new(project));
        }
        work.write(".doco-cd.yml", &docs.join("---\n"));
        work.commit_and_push("stacks");
        poll_config.push_str(&format!(
            "- url: {}\n  reference: main\n  interval: 1s\n",
            bare.file_url()
        ));
        repos.push((bare, work));
    }

    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config)]);

    // The first deploy: every stack's one container runs.
    daemon.wait_for(
        &format!("all {} stacks running", REPOS * STACKS),
        Duration::from_secs(300),
        || {
            guards.iter().all(|guard| {
                matches!(container_ids(guard.name(), "app").as_slice(),
                    [id] if container_state(id) == "running")
            })
        },
    );
    let containers: Vec<Vec<String>> = guards
        .iter()
        .map(|guard| container_ids(guard.name(), "app"))
        .collect();
    // Every repository finished the poll that deployed it, and one more.
    daemon.wait_for(
        "every repository polled twice",
        Duration::from_secs(60),
        || repositories_polled(&daemon, 2.0) == REPOS,
    );

    // Quiet poll rounds: nothing changed, so no compose, no Engine listing through the CLI, one
    // `git ls-remote` per poll, and not a byte on the data volume (state, mirrors, exports).
    let before = daemon.scrape();
    let volume = support::volume_snapshot(data.path());
    daemon.wait_polls((QUIET_ROUNDS * REPOS) as f64);
    let after = daemon.scrape();
    assert_eq!(
        support::volume_snapshot(data.path()),
        volume,
        "a quiet poll wrote to the data volume"
    );
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let polls = delta("doco_cd_polls_total", &[]);
    let docker = delta("doco_cd_child_processes_total", &[("program", "docker")]);
    let git = delta("doco_cd_child_processes_total", &[("program", "git")]);
    let errors = delta("doco_cd_poll_errors_total", &[]);
    assert!(polls >= (QUIET_ROUNDS * REPOS) as f64, "{polls} polls");
    assert_eq!(errors, 0.0, "quiet polls failed");
    assert_eq!(docker, 0.0, "quiet polls spawned docker");
    assert!(git >= 1.0, "no git process counted in {polls} polls");
    // A poll counts when it ends and its `git` when it starts: each repository may have one poll
    // under way at either scrape.
    assert!(
        git <= polls + REPOS as f64,
        "{git} git processes for {polls} polls of {REPOS} repositories"
    );
    // And no container was touched.
    let now: Vec<Vec<String>> = guards
        .iter()
        .map(|guard| container_ids(guard.name(), "app"))
        .collect();
    assert_eq!(now, containers, "a quiet poll recreated a container");
    drop(daemon);
    drop(repos);
}
