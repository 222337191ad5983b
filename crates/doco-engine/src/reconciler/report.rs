//! What one reconcile did, as data, and the one place that writes it down.
//!
//! The apply steps (sync, heal, change, remove) only act on the source and the engine and describe
//! what happened in a [`Report`]. [`Reconciler::record`] then updates, from the report alone, the state
//! file, the error policy's backoff, the metrics, the notifications, the event loop's registry and
//! its unhealthy-container reports. (The run tracker of `GET /v1/api/runs` is written around the
//! reconcile by its caller, because a run must be visible while it runs.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use doco_docker::ContainerEvent;
use tracing::{error, info, warn};

use super::{DeployError, DeploymentOutcome, PollError, Reconciler, Trigger, lock, unix_now};
use crate::backoff;
use crate::metrics;
use crate::notify::Level;
use crate::registry::EventTarget;
use crate::state::{DeploymentRecord, RepositoryState};

/// One reconcile, as data.
#[derive(Debug)]
pub(super) struct Report {
    /// The repository's name (`host/owner/repo`).
    pub repository: String,
    /// upstream's trigger of the run.
    pub trigger: Trigger,
    /// Whether it read its source (and so counts as a poll in the metrics).
    pub reads_source: bool,
    /// Every fetch it tried, in order.
    pub fetches: Vec<Fetch>,
    /// What happened to each deployment.
    pub entries: Vec<Entry>,
    /// Why the run as a whole failed, apart from its deployments.
    pub error: Option<PollError>,
    /// How long it took.
    pub elapsed: Duration,
}

/// A fetch and what followed from it.
#[derive(Debug)]
pub(super) enum Fetch {
    /// The remote answered: the mirror holds `commit`.
    Fetched {
        /// The state key (repository and reference).
        key: String,
        /// The repository URL without credentials.
        url: String,
        /// The reference followed.
        reference: String,
        /// The deploy-config target.
        target: String,
        /// The repository's source directory.
        source_dir: PathBuf,
        /// The commit reached.
        commit: String,
    },
    /// The remote cannot be reached and the flag is on: the last known good state is enforced.
    Offline {
        /// The last commit fetched.
        commit: String,
        /// The fetch error.
        reason: String,
    },
}

/// What the step that produced an [`Entry`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Enforcing the last known good state.
    Heal,
    /// Applying a new commit or deploy configuration (subject to the error policy).
    Change,
    /// Removing a stack (`destroy`, `auto_discovery.delete`).
    Remove,
}

/// How the state file's record of a deployment changes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RecordChange {
    /// It stays as it is.
    Keep,
    /// This is its new last known good state.
    Store(Box<DeploymentRecord>),
    /// It is gone.
    Forget,
    /// Its containers were recreated as recorded: these are their compose hashes now.
    Hashes(BTreeMap<String, String>),
}

/// What happened to one deployment.
#[derive(Debug)]
pub(super) struct Entry {
    /// The state key of its repository and reference.
    pub key: String,
    /// The deployment (its compose project).
    pub name: String,
    /// The commit it worked from, for messages.
    pub at: String,
    /// Which step.
    pub step: Step,
    /// What happened.
    pub outcome: Result<DeploymentOutcome, DeployError>,
    /// How its record changes.
    pub record: RecordChange,
    /// For a change: what it tried to reach (the error policy's key).
    pub attempt: Option<backoff::Desired>,
    /// Who deploys it, for the event loop.
    pub target: Option<EventTarget>,
    /// Unhealthy containers it found, for the event loop's restart budget.
    pub unhealthy: Vec<ContainerEvent>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Entry {
    /// An entry of `step` for `name`, with nothing else known yet.
    pub fn new(key: &str, name: &str, at: &str, step: Step) -> Entry {
        Entry {
            key: key.to_string(),
            name: name.to_string(),
            at: at.to_string(),
            step,
            outcome: Ok(DeploymentOutcome::UpToDate),
            record: RecordChange::Keep,
            attempt: None,
            target: None,
            unhealthy: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// A deployment that could not even be resolved.
    pub fn failed(key: &str, name: &str, at: &str, error: DeployError) -> Entry {
        Entry {
            outcome: Err(error),
            ..Entry::new(key, name, at, Step::Change)
        }
    }
}

impl Entry {
    /// Whether the deployment failed (in part) in this step.
    pub fn is_failure(&self) -> bool {
        self.outcome
            .as_ref()
            .map_or(true, DeploymentOutcome::failed)
    }

    /// Why it failed, when it did.
    fn failure(&self) -> Option<String> {
        match &self.outcome {
            Err(e) => Some(e.to_string()),
            Ok(DeploymentOutcome::PartlyDeployed { failed, .. }) => Some(
                failed
                    .iter()
                    .map(|(service, why)| format!("service {service}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Ok(_) => None,
        }
    }
}

impl Report {
    /// The run's result for whoever waits on it: the run's own error, else the failed deployments.
    pub fn result(self) -> Result<(), PollError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let failed: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.is_failure())
            .map(|e| e.name.clone())
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let total = self
            .entries
            .iter()
            .filter(|e| e.step != Step::Heal || e.is_failure())
            .count();
        Err(PollError::Deployments {
            failed: failed.len(),
            total,
            names: failed.join(", "),
        })
    }
}

impl Reconciler {
    /// Writes `report` down: the state file, the error policy, the metrics, the notifications and
    /// the event loop's view.
    pub(super) async fn record(&self, report: &Report) {
        for fetch in &report.fetches {
            self.record_fetch(&report.repository, fetch).await;
        }
        self.record_entries(report).await;
        self.save_state().await;
        self.record_run(report).await;
    }

    async fn record_fetch(&self, repository: &str, fetch: &Fetch) {
        let labels = metrics::repo(repository);
        match fetch {
            Fetch::Fetched {
                key,
                url,
                reference,
                target,
                source_dir,
                commit,
            } => {
                let now = unix_now();
                let mut state = self.state.lock().await;
                let entry = state
                    .repositories
                    .entry(key.clone())
                    .or_insert_with(RepositoryState::default);
                entry.url = url.clone();
                entry.reference = reference.clone();
                entry.target = target.clone();
                entry.source_dir = source_dir.clone();
                entry.commit = commit.clone();
                entry.last_success_unix = now;
                drop(state);
                self.metrics
                    .source_last_success
                    .get_or_create(&labels)
                    .set(now as i64);
                self.set_offline(repository, None).await;
            }
            Fetch::Offline { commit, reason } => {
                self.metrics
                    .offline_enforcements
                    .get_or_create(&labels)
                    .inc();
                self.set_offline(repository, Some((commit, reason))).await;
            }
        }
    }

    async fn record_entries(&self, report: &Report) {
        let now = tokio::time::Instant::now();
        for entry in &report.entries {
            self.apply_record_change(entry).await;
            if let Some(target) = &entry.target {
                self.registry.set_target(&entry.name, target.clone());
            }
            if entry.record == RecordChange::Forget {
                self.registry.remove_target(&entry.name);
            }
            for event in &entry.unhealthy {
                // Without an event loop (tests, tools) nobody listens; nothing to do then.
                let _ = self.unhealthy_tx.send(event.clone());
            }
            self.record_policy(&report.repository, entry, now);
            self.record_deployment_metrics(&report.repository, entry);
            self.report(&report.repository, &entry.name, &entry.at, &entry.outcome)
                .await;
        }
    }

    async fn apply_record_change(&self, entry: &Entry) {
        let mut state = self.state.lock().await;
        let Some(repository) = state.repositories.get_mut(&entry.key) else {
            return;
        };
        match &entry.record {
            RecordChange::Keep => {}
            RecordChange::Store(record) => {
                repository
                    .deployments
                    .insert(record.project.clone(), (**record).clone());
            }
            RecordChange::Forget => {
                repository.deployments.remove(&entry.name);
            }
            RecordChange::Hashes(hashes) => {
                if let Some(record) = repository.deployments.get_mut(&entry.name) {
                    for (service, hash) in hashes {
                        if let Some(recorded) = record.services.get_mut(service) {
                            recorded.compose_hash = Some(hash.clone());
                        }
                    }
                }
            }
        }
    }

    /// The error policy: a failed change backs off, a successful one clears it.
    fn record_policy(&self, repository: &str, entry: &Entry, now: tokio::time::Instant) {
        let Some(attempt) = &entry.attempt else {
            return;
        };
        let id = (entry.key.clone(), entry.name.clone());
        let gauge = self
            .metrics
            .deployment_backoff
            .get_or_create(&metrics::deployment(repository, &entry.name))
            .clone();
        match (&entry.outcome, entry.failure()) {
            (_, Some(why)) => {
                let delay = lock(&self.backoffs).failed(id, attempt.clone(), why, now);
                gauge.set(delay.as_secs() as i64);
                warn!(deployment = %entry.name, retry_in_secs = delay.as_secs(),
                    "the change failed; the last known good state stays enforced and the change is retried after a backoff");
            }
            (Ok(DeploymentOutcome::Waiting(_)), None) => {}
            (_, None) => {
                lock(&self.backoffs).succeeded(&id);
                gauge.set(0);
            }
        }
    }

    fn record_deployment_metrics(&self, repository: &str, entry: &Entry) {
        let labels = metrics::deployment(repository, &entry.name);
        // Both counters exist (at 0) once a deployment is known, so its first error is a change.
        let errors = self
            .metrics
            .deployment_errors
            .get_or_create(&labels)
            .clone();
        let deployments = self.metrics.deployments.get_or_create(&labels).clone();
        if entry.is_failure() {
            errors.inc();
        }
        match &entry.outcome {
            Err(_) | Ok(DeploymentOutcome::PartlyDeployed { .. }) => {}
            Ok(DeploymentOutcome::UpToDate | DeploymentOutcome::Waiting(_)) => {}
            Ok(_) => {
                deployments.inc();
                self.metrics
                    .deployment_duration
                    .get_or_create(&labels)
                    .observe(entry.elapsed.as_secs_f64());
            }
        }
    }

    /// The run as a whole: the poll metrics, its log line, and a notification for a failure that
    /// is not a deployment's own (those were notified one by one).
    async fn record_run(&self, report: &Report) {
        let labels = metrics::repo(&report.repository);
        let counted = report.trigger == Trigger::Poll && report.reads_source;
        if counted {
            // The error counter exists (at 0) from the first poll on, so its first error is a change.
            let _created = self.metrics.poll_errors.get_or_create(&labels);
            self.metrics.polls.get_or_create(&labels).inc();
            self.metrics
                .poll_duration
                .get_or_create(&labels)
                .observe(report.elapsed.as_secs_f64());
        }
        let elapsed_ms = report.elapsed.as_millis() as u64;
        let failed = report.entries.iter().filter(|e| e.is_failure()).count();
        match &report.error {
            None if failed == 0 && report.reads_source => info!(elapsed_ms, "poll completed"),
            None if failed == 0 => info!(elapsed_ms, "last known good state enforced"),
            None => {
                if counted {
                    self.metrics.poll_errors.get_or_create(&labels).inc();
                }
                error!(failed, elapsed_ms, "poll failed: deployments failed");
            }
            Some(e) => {
                if counted {
                    self.metrics.poll_errors.get_or_create(&labels).inc();
                }
                error!(error = %e, elapsed_ms, "poll failed");
                let title = match report.trigger {
                    Trigger::Poll => "Poll Job failed",
                    Trigger::Webhook => "Deployment Failed",
                };
                self.notifier
                    .send(Level::Failure, &report.repository, title, &e.to_string())
                    .await;
            }
        }
    }

    /// Logs and notifies one deployment's outcome (`at` names the commit it worked from).
    async fn report(
        &self,
        repo_name: &str,
        name: &str,
        at: &str,
        result: &Result<DeploymentOutcome, DeployError>,
    ) {
        let subject = format!("{repo_name}/{name}");
        let (level, title, body) = match result {
            Err(reason) => {
                error!(deployment = %name, error = %reason, "deployment failed");
                let body = format!("{name} from {repo_name} at {at}: {reason}");
                (Level::Failure, "Deployment failed", body)
            }
            Ok(DeploymentOutcome::UpToDate) => return,
            Ok(DeploymentOutcome::Waiting(wait)) => {
                tracing::debug!(deployment = %name, retry_in_secs = wait.as_secs(),
                    "its last change failed; waiting for the backoff before trying again");
                return;
            }
            Ok(DeploymentOutcome::Deployed(changed)) => (
                Level::Success,
                "Deployment completed",
                format!(
                    "{name} from {repo_name} at {at}; recreated: {}",
                    list(changed)
                ),
            ),
            Ok(DeploymentOutcome::Destroyed) => (
                Level::Success,
                "Stack destroyed",
                format!("{name} was removed, as its deploy configuration asks"),
            ),
            Ok(DeploymentOutcome::Started(count)) => (
                Level::Success,
                "Stopped services started",
                format!("{name} from {repo_name}: started {count} stopped container(s)"),
            ),
            Ok(DeploymentOutcome::PartlyDeployed { deployed, failed }) => {
                let why: Vec<String> = failed
                    .iter()
                    .map(|(service, why)| format!("{service}: {why}"))
                    .collect();
                error!(deployment = %name, ?deployed, failed = %why.join("; "), "deployment failed in part");
                (
                    Level::Failure,
                    "Deployment failed",
                    format!(
                        "{name} from {repo_name} at {at}: deployed {}; failed: {}",
                        list(deployed),
                        why.join("; ")
                    ),
                )
            }
            Ok(DeploymentOutcome::Healed { started, recreated }) => (
                Level::Success,
                "Last known good state enforced",
                format!(
                    "{name} from {repo_name} at {at}: started {started} stopped container(s); recreated: {}",
                    list(recreated)
                ),
            ),
        };
        self.notifier.send(level, &subject, title, &body).await;
    }

    async fn save_state(&self) {
        let state = self.state.lock().await;
        if let Err(e) = self.store.save(&state) {
            error!(error = %e, "could not save the state; the previous state file is unchanged");
        }
    }
}

fn list(names: &std::collections::BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
