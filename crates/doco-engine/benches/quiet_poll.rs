//! The cost of a poll that finds nothing changed, for 1 and for 20 deployments: wall time, CPU time
//! (this process and its children), child processes spawned per poll, and the resident memory of
//! the process running the engine afterwards. The container view follows the engine's events, as in
//! the daemon, so a quiet poll asks the engine nothing. Needs the Docker engine.
//!
//! Run: `cargo bench -p doco-engine --bench quiet_poll` (results go in BENCHMARKS.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doco_config::{AppConfig, PollConfig};
use doco_engine::{Metrics, Reconciler};
use doco_testkit::docker::{ProjectGuard, require_docker, test_image};
use doco_testkit::git::{BareRepo, WorkTree};
use nix::sys::resource::{UsageWho, getrusage};

const POLLS: u32 = 30;

fn cpu_seconds() -> f64 {
    let seconds = |who| {
        getrusage(who)
            .map(|u| {
                let (user, system) = (u.user_time(), u.system_time());
                user.tv_sec() as f64
                    + user.tv_usec() as f64 / 1e6
                    + system.tv_sec() as f64
                    + system.tv_usec() as f64 / 1e6
            })
            .unwrap_or(0.0)
    };
    seconds(UsageWho::RUSAGE_SELF) + seconds(UsageWho::RUSAGE_CHILDREN)
}

/// This process's resident memory (VmRSS), in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn spawned() -> u64 {
    doco_process::spawn_counts().values().sum()
}

async fn measure(deployments: usize, image: &str) -> (f64, f64, f64, f64, f64) {
    let prefix = doco_testkit::unique_name("bench");
    let names: Vec<String> = (0..deployments).map(|i| format!("{prefix}-{i}")).collect();
    let _guards: Vec<ProjectGuard> = names.iter().map(ProjectGuard::new).collect();
    let bare = BareRepo::new();
    let work = WorkTree::clone_from(&bare);
    let mut docs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        docs.push(format!("name: {name}\nworking_dir: s{i}\n"));
        work.write(
            &format!("s{i}/compose.yml"),
            &format!("services:\n  app:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_grace_period: 1s\n"),
        );
    }
    work.write(".doco-cd.yml", &docs.join("---\n"));
    work.commit_and_push("bench");

    let data = tempfile::tempdir().expect("temp dir");
    let env = BTreeMap::from([(
        "DATA_MOUNT_PATH".to_string(),
        data.path().display().to_string(),
    )]);
    let config = Arc::new(AppConfig::from_env(&env).expect("config"));
    let docker = doco_docker::Engine::connect().expect("docker");
    let compose = doco_docker::Compose::new(BTreeMap::new(), true);
    let reconciler = Reconciler::new(config, docker, compose, Arc::new(Metrics::new()));
    // The daemon keeps the container view current from the engine's events; so does the bench.
    let following = tokio_util::sync::CancellationToken::new();
    let view = reconciler
        .container_view()
        .expect("a view of the real engine");
    tokio::spawn({
        let (view, following) = (view.clone(), following.clone());
        async move { view.run(following).await }
    });
    while !view.is_current() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let poll = PollConfig {
        url: bare.file_url(),
        reference: "main".into(),
        ..PollConfig::default()
    };
    reconciler.poll(&poll).await.expect("first deploy");
    reconciler.poll(&poll).await.expect("warm-up poll");

    let (cpu0, spawn0, start) = (cpu_seconds(), spawned(), Instant::now());
    let mut slowest = Duration::ZERO;
    for _ in 0..POLLS {
        let one = Instant::now();
        reconciler.poll(&poll).await.expect("quiet poll");
        slowest = slowest.max(one.elapsed());
    }
    following.cancel();
    let wall = start.elapsed().as_secs_f64() / f64::from(POLLS);
    let cpu = (cpu_seconds() - cpu0) / f64::from(POLLS);
    let spawns = (spawned() - spawn0) as f64 / f64::from(POLLS);
    (
        wall * 1e3,
        slowest.as_secs_f64() * 1e3,
        cpu * 1e3,
        spawns,
        rss_mib(),
    )
}

fn main() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "| deployments | wall per poll (ms) | slowest poll (ms) | CPU per poll (ms, self + children) | child processes per poll | resident memory after (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for deployments in [1, 20] {
        let (wall, slowest, cpu, spawns, rss) = runtime.block_on(measure(deployments, &image));
        println!(
            "| {deployments} | {wall:.1} | {slowest:.1} | {cpu:.1} | {spawns:.2} | {rss:.1} |"
        );
    }
}
