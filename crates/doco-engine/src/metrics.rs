//! Prometheus metrics, named and labelled as upstream doco-cd names them (`doco_cd_*`), plus the
//! offline-mode metrics this implementation adds: whether a repository is being enforced from its last
//! known state, how often that happened, and how old the last successful fetch is.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `{repository}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabels {
    /// upstream's repository name, `host/owner/repo`.
    pub repository: String,
}

/// `{repository, deployment}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    /// upstream's repository name.
    pub repository: String,
    /// The deployment (stack) name.
    pub deployment: String,
}

/// `{program}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    /// The external program (`git`, `docker`).
    pub program: String,
}

/// `{version, log_level, start_time}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    /// This build's version.
    pub version: String,
    /// The configured log level.
    pub log_level: String,
    /// When the daemon started (RFC 3339).
    pub start_time: String,
}

fn duration_histogram() -> Histogram {
    // upstream uses Prometheus' default buckets (5 ms .. 10 s); polls and deploys can take longer.
    Histogram::new(exponential_buckets(0.005, 2.5, 12))
}

/// Every metric the daemon exposes.
pub struct Metrics {
    registry: Registry,
    /// `doco_cd_info`.
    pub info: Family<InfoLabels, Gauge>,
    /// `doco_cd_polls_total` (every poll, failed ones included, as upstream).
    pub polls: Family<RepoLabels, Counter>,
    /// `doco_cd_poll_errors_total`.
    pub poll_errors: Family<RepoLabels, Counter>,
    /// `doco_cd_poll_duration_seconds`.
    pub poll_duration: Family<RepoLabels, Histogram>,
    /// `doco_cd_webhook_requests_total`: webhook jobs completed successfully (as upstream counts).
    pub webhook_requests: Family<RepoLabels, Counter>,
    /// `doco_cd_webhook_errors_total`: webhook requests that failed.
    pub webhook_errors: Family<RepoLabels, Counter>,
    /// `doco_cd_webhook_duration_seconds`: duration of successful webhook jobs.
    pub webhook_duration: Family<RepoLabels, Histogram>,
    /// `doco_cd_deployments_total`: deploys and restarts applied.
    pub deployments: Family<DeploymentLabels, Counter>,
    /// `doco_cd_deployment_errors_total`.
    pub deployment_errors: Family<DeploymentLabels, Counter>,
    /// `doco_cd_deployment_duration_seconds`.
    pub deployment_duration: Family<DeploymentLabels, Histogram>,
    /// `doco_cd_deployment_backoff_seconds`: how long a deployment whose change failed waits before
    /// its next attempt (0 once it deployed).
    pub deployment_backoff: Family<DeploymentLabels, Gauge>,
    /// `doco_cd_deployments_active`: deployments holding a `MAX_CONCURRENT_DEPLOYMENTS` slot.
    pub deployments_active: Family<RepoLabels, Gauge>,
    /// `doco_cd_deployments_queued`: deployments waiting for a slot.
    pub deployments_queued: Family<RepoLabels, Gauge>,
    /// `doco_cd_repository_offline`: 1 while the repository is enforced from its last known state.
    pub repository_offline: Family<RepoLabels, Gauge>,
    /// `doco_cd_offline_enforcements_total`: polls that enforced the last known state.
    pub offline_enforcements: Family<RepoLabels, Counter>,
    /// `doco_cd_source_last_success_timestamp_seconds`: the last successful fetch.
    pub source_last_success: Family<RepoLabels, Gauge>,
    /// `doco_cd_child_processes_total`: processes spawned, per program.
    pub child_processes: Family<ProgramLabels, Counter>,
    /// `doco_cd_scheduled_*`: the job scheduler's runs.
    pub scheduled: crate::jobs::ScheduledMetrics,
    scrape_lock: Mutex<()>,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("doco_cd");
        let info = Family::<InfoLabels, Gauge>::default();
        let polls = Family::<RepoLabels, Counter>::default();
        let poll_errors = Family::<RepoLabels, Counter>::default();
        let poll_duration =
            Family::<RepoLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        let webhook_requests = Family::<RepoLabels, Counter>::default();
        let webhook_errors = Family::<RepoLabels, Counter>::default();
        let webhook_duration =
            Family::<RepoLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        let deployments = Family::<DeploymentLabels, Counter>::default();
        let deployments_active = Family::<RepoLabels, Gauge>::default();
        let deployment_backoff = Family::<DeploymentLabels, Gauge>::default();
        let deployments_queued = Family::<RepoLabels, Gauge>::default();
        let deployment_errors = Family::<DeploymentLabels, Counter>::default();
        let deployment_duration = Family::<DeploymentLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> _,
        );
        let repository_offline = Family::<RepoLabels, Gauge>::default();
        let offline_enforcements = Family::<RepoLabels, Counter>::default();
        let source_last_success = Family::<RepoLabels, Gauge>::default();
        let child_processes = Family::<ProgramLabels, Counter>::default();

        registry.register("info", "Application information", info.clone());
        registry.register("polls", "Number of polls", polls.clone());
        registry.register(
            "poll_errors",
            "Failed polling attempts",
            poll_errors.clone(),
        );
        registry.register_with_unit(
            "poll_duration",
            "Duration of polling operations in seconds",
            Unit::Seconds,
            poll_duration.clone(),
        );
        registry.register(
            "webhook_requests",
            "Number of webhook requests",
            webhook_requests.clone(),
        );
        registry.register(
            "webhook_errors",
            "Number of webhook errors",
            webhook_errors.clone(),
        );
        registry.register_with_unit(
            "webhook_duration",
            "Duration of webhook requests in seconds",
            Unit::Seconds,
            webhook_duration.clone(),
        );
        registry.register(
            "deployments",
            "Total number of deployments processed",
            deployments.clone(),
        );
        registry.register(
            "deployments_active",
            "Number of currently active deployments",
            deployments_active.clone(),
        );
        registry.register(
            "deployment_backoff_seconds",
            "Seconds a deployment whose change failed waits before its next attempt",
            deployment_backoff.clone(),
        );
        registry.register(
            "deployments_queued",
            "Number of queued deployments waiting to start",
            deployments_queued.clone(),
        );
        registry.register(
            "deployment_errors",
            "Total number of errors during deployments",
            deployment_errors.clone(),
        );
        registry.register_with_unit(
            "deployment_duration",
            "Duration of deployment operations in seconds",
            Unit::Seconds,
            deployment_duration.clone(),
        );
        registry.register(
            "repository_offline",
            "1 while the repository cannot be fetched and its last known state is enforced",
            repository_offline.clone(),
        );
        registry.register(
            "offline_enforcements",
            "Polls that enforced the last known state because the repository was unreachable",
            offline_enforcements.clone(),
        );
        registry.register(
            "source_last_success_timestamp_seconds",
            "Unix time of the last successful fetch of the repository",
            source_last_success.clone(),
        );
        registry.register(
            "child_processes",
            "External processes spawned, per program",
            child_processes.clone(),
        );
        let scheduled = crate::jobs::ScheduledMetrics::register(&mut registry);
        Metrics {
            scheduled,
            registry,
            info,
            polls,
            poll_errors,
            poll_duration,
            webhook_requests,
            webhook_errors,
            webhook_duration,
            deployments,
            deployment_backoff,
            deployments_active,
            deployments_queued,
            deployment_errors,
            deployment_duration,
            repository_offline,
            offline_enforcements,
            source_last_success,
            child_processes,
            scrape_lock: Mutex::new(()),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let _guard = self
            .scrape_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (program, count) in doco_process::spawn_counts() {
            let counter = self
                .child_processes
                .get_or_create(&ProgramLabels { program });
            let seen = counter.get();
            if count > seen {
                counter.inc_by(count - seen);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Helpers for label sets.
pub fn repo(repository: &str) -> RepoLabels {
    RepoLabels {
        repository: repository.to_string(),
    }
}

/// `{repository, deployment}` from two names.
pub fn deployment(repository: &str, deployment: &str) -> DeploymentLabels {
    DeploymentLabels {
        repository: repository.to_string(),
        deployment: deployment.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_upstream() {
        let m = Metrics::new();
        m.polls.get_or_create(&repo("h/o/r")).inc();
        m.poll_errors.get_or_create(&repo("h/o/r")).inc();
        m.poll_duration.get_or_create(&repo("h/o/r")).observe(0.1);
        m.deployments
            .get_or_create(&deployment("h/o/r", "web"))
            .inc();
        m.deployment_errors
            .get_or_create(&deployment("h/o/r", "web"))
            .inc();
        m.deployment_duration
            .get_or_create(&deployment("h/o/r", "web"))
            .observe(1.0);
        m.repository_offline.get_or_create(&repo("h/o/r")).set(1);
        m.source_last_success
            .get_or_create(&repo("h/o/r"))
            .set(1700000000);
        m.offline_enforcements.get_or_create(&repo("h/o/r")).inc();
        m.deployments_active.get_or_create(&repo("h/o/r")).set(2);
        m.deployments_queued.get_or_create(&repo("h/o/r")).set(1);
        m.webhook_requests.get_or_create(&repo("o/r")).inc();
        m.webhook_errors.get_or_create(&repo("o/r")).inc();
        m.webhook_duration.get_or_create(&repo("o/r")).observe(0.2);
        let text = m.encode();
        for line in [
            "doco_cd_polls_total{repository=\"h/o/r\"} 1",
            "doco_cd_poll_errors_total{repository=\"h/o/r\"} 1",
            "doco_cd_poll_duration_seconds_count{repository=\"h/o/r\"} 1",
            "doco_cd_deployments_total{repository=\"h/o/r\",deployment=\"web\"} 1",
            "doco_cd_deployment_errors_total{repository=\"h/o/r\",deployment=\"web\"} 1",
            "doco_cd_deployment_duration_seconds_count{repository=\"h/o/r\",deployment=\"web\"} 1",
            "doco_cd_repository_offline{repository=\"h/o/r\"} 1",
            "doco_cd_deployments_active{repository=\"h/o/r\"} 2",
            "doco_cd_deployments_queued{repository=\"h/o/r\"} 1",
            "doco_cd_offline_enforcements_total{repository=\"h/o/r\"} 1",
            "doco_cd_source_last_success_timestamp_seconds{repository=\"h/o/r\"} 1700000000",
            "doco_cd_webhook_requests_total{repository=\"o/r\"} 1",
            "doco_cd_webhook_errors_total{repository=\"o/r\"} 1",
            "doco_cd_webhook_duration_seconds_count{repository=\"o/r\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
