//! What `/metrics` costs as deployments grow: the size of the text exposition and the time to encode
//! it, for 1 and for 200 deployments (50 repositories × 4), with every family doco-cd fills per
//! repository and deployment (polls, deploys with their durations, errors at 0, backoff, offline).
//!
//! Run: `cargo bench -p doco-engine --bench metrics_size` (results go in BENCHMARKS.md).

use std::time::Instant;

use doco_engine::Metrics;
use doco_engine::metrics::{deployment, repo};

const ENCODES: u32 = 200;

fn filled(repositories: usize, per_repository: usize) -> Metrics {
    let metrics = Metrics::new();
    for r in 0..repositories {
        let name = format!("git.example.com/ops/stacks-{r}");
        let labels = repo(&name);
        metrics.polls.get_or_create(&labels).inc();
        let _created = metrics.poll_errors.get_or_create(&labels);
        metrics.poll_duration.get_or_create(&labels).observe(0.4);
        metrics.deployments_active.get_or_create(&labels).set(0);
        metrics.deployments_queued.get_or_create(&labels).set(0);
        metrics.repository_offline.get_or_create(&labels).set(0);
        let _created = metrics.offline_enforcements.get_or_create(&labels);
        metrics
            .source_last_success
            .get_or_create(&labels)
            .set(1_764_504_000);
        for d in 0..per_repository {
            let labels = deployment(&name, &format!("stack-{r}-{d}"));
            metrics.deployments.get_or_create(&labels).inc();
            let _created = metrics.deployment_errors.get_or_create(&labels);
            metrics
                .deployment_duration
                .get_or_create(&labels)
                .observe(2.5);
            metrics.deployment_backoff.get_or_create(&labels).set(0);
        }
    }
    metrics
}

fn main() {
    println!("| deployments | exposition size (bytes) | time to encode (ms, mean of {ENCODES}) |");
    println!("|---|---|---|");
    for (repositories, per_repository) in [(1, 1), (50, 4)] {
        let metrics = filled(repositories, per_repository);
        let size = metrics.encode().len();
        let started = Instant::now();
        for _ in 0..ENCODES {
            std::hint::black_box(metrics.encode());
        }
        let per_encode = started.elapsed().as_secs_f64() * 1e3 / f64::from(ENCODES);
        println!(
            "| {} | {size} | {per_encode:.3} |",
            repositories * per_repository
        );
    }
}
