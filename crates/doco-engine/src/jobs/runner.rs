//! The scheduler task: it finds the jobs on the engine (containers labelled `cd.doco.job.enabled`),
//! keeps each one's next slot, runs what is due and records every run (metrics, notification, the
//! run observer). Nothing here reads Git: jobs keep their schedule while the repository is
//! unreachable, from the containers the last good deploy left.
//!
//! Timing rules:
//! - a job found now (at start-up, or after a deploy created it) first runs at its first slot after
//!   now: **no catch-up after a restart** (slots missed while doco-cd was down are not run), as
//!   upstream computes the next slot from its start;
//! - slots missed while the process was stalled (a sleep that overslept, a host suspend) run once,
//!   then the schedule continues from now: at most one catch-up, never a burst;
//! - with `skip_running`, a slot that fires while the job's previous run is still going is skipped
//!   (`doco_cd_scheduled_run_skipped_total{reason="still_running"}`); without it, as upstream, a
//!   `restart` job that an earlier run of this process still runs is restarted (the earlier run
//!   ends as superseded, not failed) and a `one_off` job gets another copy beside the running one.
//!   A job container running for another reason (another doco-cd instance on the same engine) is
//!   joined: the run waits for it to exit.
//!
//! Locking, as upstream: a run holds the per-stack lock of its stack while it starts the job, and
//! for the whole run (services stopped, job, services started again) when it names
//! `stop_services`, then together with the stacks of those services, taken in sorted order. The
//! services it stops are registered as held stopped ([`Registry::hold_stopped`]) until the run
//! ends, so neither the heal step nor the event loop brings them back early; a service two runs
//! hold is started again by the last of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doco_docker::{ContainerInfo, ContainerState};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{self, ExecutionMode, JobConfig, JobLabelError};
use super::engine::JobEngine;
use super::metrics::{RunLabels, ScheduledMetrics, SkipLabels};
use super::{RunObserver, StackLocks};
use crate::notify::{Level, Notifier};
use crate::registry::Registry;

/// The time zone type, so the binary needs no direct dependency on jiff.
pub type Zone = TimeZone;

/// How often the engine is asked for jobs (new deploys, removed or relabelled containers).
const REFRESH: Duration = Duration::from_secs(2);

/// Where the scheduler reads the wall clock: the system's, or (tests) one that follows tokio's
/// paused clock from a given instant.
#[derive(Debug, Clone)]
pub enum Clock {
    /// `SystemTime::now()`.
    System,
    /// `wall` at tokio instant `at`, advancing with tokio's clock.
    Paused {
        /// The wall time at `at`.
        wall: Timestamp,
        /// The tokio instant of `wall`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock reading `wall` now and following tokio's (paused) clock.
    pub fn paused_at(wall: Timestamp) -> Clock {
        Clock::Paused {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Paused { wall, at } => wall.checked_add(at.elapsed()).unwrap_or(Timestamp::MAX),
        }
    }
}

/// A job as the engine shows it.
#[derive(Debug, Clone)]
struct Target {
    container: ContainerInfo,
    parsed: Result<Option<JobConfig>, JobLabelError>,
}

impl Target {
    fn name(&self) -> &str {
        &self.container.name
    }
    fn stack(&self) -> &str {
        &self.container.project
    }
}

/// A scheduled job's timing.
#[derive(Debug, Clone)]
struct Slot {
    schedule: String,
    next: Option<Timestamp>,
    last_run: Option<Timestamp>,
}

#[derive(Default)]
struct Table {
    targets: BTreeMap<String, Target>,
    slots: BTreeMap<String, Slot>,
    running: HashMap<String, usize>,
    last_outcome: HashMap<String, bool>,
    /// Per restart-mode job, the number of its latest (re)start: a run whose job was restarted by a
    /// newer run ends as superseded.
    generation: HashMap<String, u64>,
}

/// Why a job could not be run on request.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No job container has that name (in that stack).
    #[error("scheduled job not found")]
    NotFound,
    /// The container is labelled, but `cd.doco.job.enabled` is false.
    #[error("scheduled job is disabled")]
    Disabled,
    /// Several jobs match; `stack` narrows the selection.
    #[error("multiple scheduled jobs matched, narrow your selection")]
    Ambiguous,
    /// The job's labels are invalid.
    #[error("job {0} has invalid schedule labels: {1}")]
    Invalid(String, JobLabelError),
    /// The engine could not list the jobs.
    #[error("failed to discover scheduled jobs: {0}")]
    Engine(#[from] doco_docker::DockerError),
}

/// How a run ended.
pub type RunOutcome = Result<(), String>;

struct Inner {
    engine: Arc<dyn JobEngine>,
    clock: Clock,
    tz: TimeZone,
    locks: StackLocks,
    registry: Registry,
    metrics: ScheduledMetrics,
    notifier: Notifier,
    observer: Option<Arc<dyn RunObserver>>,
    table: Mutex<Table>,
}

/// The job scheduler. Cloning gives another handle on the same scheduler.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

/// What [`Jobs::new`] needs.
pub struct JobsParts {
    /// The engine.
    pub engine: Arc<dyn JobEngine>,
    /// The wall clock.
    pub clock: Clock,
    /// The zone cron patterns are read in (`TZ`).
    pub tz: TimeZone,
    /// The per-stack locks shared with the reconciler.
    pub locks: StackLocks,
    /// The event loop's registry (a job's own starts and stops are not drift).
    pub registry: Registry,
    /// The scheduled-run metrics.
    pub metrics: ScheduledMetrics,
    /// Notifications per `notify_on`.
    pub notifier: Notifier,
    /// Where runs are recorded (the run tracker).
    pub observer: Option<Arc<dyn RunObserver>>,
}

impl Jobs {
    /// A scheduler; [`Jobs::run`] drives it.
    pub fn new(parts: JobsParts) -> Jobs {
        Jobs {
            inner: Arc::new(Inner {
                engine: parts.engine,
                clock: parts.clock,
                tz: parts.tz,
                locks: parts.locks,
                registry: parts.registry,
                metrics: parts.metrics,
                notifier: parts.notifier,
                observer: parts.observer,
                table: Mutex::new(Table::default()),
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs the schedule until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        info!("job scheduler started");
        loop {
            let now = self.inner.clock.now();
            if let Err(e) = self.refresh(now).await {
                warn!(error = %e, "cannot list scheduled jobs; keeping the last known schedule");
            }
            let now = self.inner.clock.now();
            for name in self.due(now) {
                self.fire(&name);
            }
            let wait = self.until_next(now).min(REFRESH);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        info!("job scheduler stopped");
    }

    /// Reads the jobs from the engine; new jobs get their first slot after `now`, changed schedules
    /// a fresh one, removed jobs are forgotten.
    async fn refresh(&self, now: Timestamp) -> Result<(), doco_docker::DockerError> {
        let targets = self.discover().await?;
        let mut table = self.table();
        table.slots.retain(|name, _| targets.contains_key(name));
        for (name, target) in &targets {
            let Ok(Some(job)) = &target.parsed else {
                table.slots.remove(name);
                continue;
            };
            let changed = table
                .slots
                .get(name)
                .is_none_or(|slot| slot.schedule != job.schedule_text);
            if changed {
                let last_run = table.slots.get(name).and_then(|s| s.last_run);
                let next = job.schedule.next_after(now, &self.inner.tz);
                info!(job = %name, schedule = %job.schedule_text, next_run = ?next.map(|t| t.to_string()), "scheduled job");
                table.slots.insert(
                    name.clone(),
                    Slot {
                        schedule: job.schedule_text.clone(),
                        next,
                        last_run,
                    },
                );
            }
        }
        table.targets = targets;
        Ok(())
    }

    /// The job containers of the stacks this doco-cd deploys (the registry's), by name (one-off
    /// copies left out): another doco-cd on the same engine runs its own.
    async fn discover(&self) -> Result<BTreeMap<String, Target>, doco_docker::DockerError> {
        let containers = self.inner.engine.containers().await?;
        let targets: BTreeMap<String, Target> = containers
            .into_values()
            .flatten()
            .filter(|c| c.labels.contains_key(config::ENABLED) && !is_ephemeral(c))
            .filter(|c| self.inner.registry.target(&c.project).is_some())
            .map(|c| {
                let parsed = config::parse(&c.service, &c.labels);
                (
                    c.name.clone(),
                    Target {
                        container: c,
                        parsed,
                    },
                )
            })
            .collect();
        // Heal and the event loop leave the jobs to the schedule.
        let jobs: BTreeSet<(String, String)> = targets
            .values()
            .filter(|t| matches!(t.parsed, Ok(Some(_))))
            .map(|t| (t.stack().to_string(), t.container.service.clone()))
            .collect();
        self.inner.registry.set_jobs(jobs);
        Ok(targets)
    }

    /// The jobs whose slot has come; each slot advances past `now` (missed slots coalesce).
    fn due(&self, now: Timestamp) -> Vec<String> {
        let mut table = self.table();
        let Table { targets, slots, .. } = &mut *table;
        let mut due = Vec::new();
        for (name, slot) in slots.iter_mut() {
            let Some(next) = slot.next.filter(|next| *next <= now) else {
                continue;
            };
            let Some(Ok(Some(job))) = targets.get(name).map(|t| &t.parsed) else {
                continue;
            };
            slot.last_run = Some(next);
            slot.next = job.schedule.next_after(now, &self.inner.tz);
            due.push(name.clone());
        }
        due
    }

    fn until_next(&self, now: Timestamp) -> Duration {
        self.table()
            .slots
            .values()
            .filter_map(|s| s.next)
            .min()
            .map(|next| Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO))
            .unwrap_or(REFRESH)
    }

    /// Starts a scheduled run of `name`, unless `skip_running` says no.
    fn fire(&self, name: &str) {
        let (target, job, busy) = {
            let table = self.table();
            let Some(target) = table.targets.get(name).cloned() else {
                return;
            };
            let Ok(Some(job)) = target.parsed.clone() else {
                return;
            };
            (
                target,
                job,
                table.running.get(name).copied().unwrap_or(0) > 0,
            )
        };
        if job.skip_running && busy {
            warn!(job = %name, stack = %target.stack(), "skipping scheduled run because previous run is still in progress");
            self.inner
                .metrics
                .skipped
                .get_or_create(&skip_labels(&target, &job, "still_running"))
                .inc();
            return;
        }
        let run_id = uuid_like();
        drop(self.spawn_run(target, job, run_id));
    }

    /// Runs job `name` (in `stack`, when given) now, under `run_id`; the handle resolves when the run
    /// ended.
    pub async fn trigger(
        &self,
        name: &str,
        stack: Option<&str>,
        run_id: String,
    ) -> Result<JoinHandle<RunOutcome>, TriggerError> {
        let targets = self.discover().await?;
        let matches: Vec<&Target> = targets
            .values()
            .filter(|t| t.name() == name || t.container.service == name)
            .filter(|t| stack.is_none_or(|s| t.stack() == s))
            .collect();
        let target = match matches.as_slice() {
            [] => return Err(TriggerError::NotFound),
            [one] => (*one).clone(),
            _ => return Err(TriggerError::Ambiguous),
        };
        let job = match &target.parsed {
            Ok(Some(job)) => job.clone(),
            Ok(None) => return Err(TriggerError::Disabled),
            Err(e) => return Err(TriggerError::Invalid(target.name().to_string(), e.clone())),
        };
        {
            let mut table = self.table();
            if let Some(slot) = table.slots.get_mut(target.name()) {
                slot.last_run = Some(self.inner.clock.now());
            }
        }
        Ok(self.spawn_run(target, job, run_id))
    }

    fn spawn_run(&self, target: Target, job: JobConfig, run_id: String) -> JoinHandle<RunOutcome> {
        *self
            .table()
            .running
            .entry(target.name().to_string())
            .or_default() += 1;
        let jobs = self.clone();
        tokio::spawn(async move { jobs.run_and_record(target, job, run_id).await })
    }

    /// One run, recorded: metrics, last outcome, notification, observer.
    async fn run_and_record(&self, target: Target, job: JobConfig, run_id: String) -> RunOutcome {
        let labels = run_labels(&target, &job);
        let metrics = &self.inner.metrics;
        if let Some(observer) = &self.inner.observer {
            observer.started(&run_id, target.name(), target.stack());
        }
        metrics.active.get_or_create(&labels).inc();
        let started = tokio::time::Instant::now();
        info!(job = %target.name(), stack = %target.stack(), execution_mode = job.execution_mode.as_str(), %run_id, "scheduled run started");
        let outcome = self.execute(&target, &job, &run_id).await;
        metrics.active.get_or_create(&labels).dec();
        metrics
            .duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        metrics.runs.get_or_create(&labels).inc();
        {
            let mut table = self.table();
            if let Some(count) = table.running.get_mut(target.name()) {
                *count = count.saturating_sub(1);
            }
            table
                .last_outcome
                .insert(target.name().to_string(), outcome.is_ok());
        }
        match &outcome {
            Ok(()) => info!(job = %target.name(), %run_id, "scheduled run completed"),
            Err(e) => {
                metrics.errors.get_or_create(&labels).inc();
                warn!(job = %target.name(), %run_id, error = %e, "scheduled run failed");
            }
        }
        self.notify(&target, &job, &outcome).await;
        if let Some(observer) = &self.inner.observer {
            observer.finished(&run_id, &outcome);
        }
        outcome
    }

    async fn notify(&self, target: &Target, job: &JobConfig, outcome: &RunOutcome) {
        if !job.notify_on.admits(outcome.is_ok()) {
            return;
        }
        let subject = format!("{}/{}", target.stack(), target.name());
        let (level, title, body) = match outcome {
            Ok(()) => (
                Level::Success,
                "Scheduled job completed",
                format!("scheduled job '{}' completed successfully", target.name()),
            ),
            Err(e) => (
                Level::Failure,
                "Scheduled job failed",
                format!("scheduled job '{}' failed to run: {e}", target.name()),
            ),
        };
        self.inner
            .notifier
            .send(level, &subject, title, &body)
            .await;
    }

    /// Stops `stop_services`, runs the job, starts them again (whatever the run's outcome). The
    /// stack's lock is held while the job starts, and for the whole run when it names services to
    /// stop (with their stacks' locks), so a deploy never races with either.
    async fn execute(&self, target: &Target, job: &JobConfig, run_id: &str) -> RunOutcome {
        let mut stacks = BTreeSet::from([target.stack().to_string()]);
        stacks.extend(job.stop_services.iter().map(|s| {
            s.project
                .clone()
                .unwrap_or_else(|| target.stack().to_string())
        }));
        let mut locks = Vec::with_capacity(stacks.len());
        for stack in &stacks {
            locks.push(self.inner.locks.lock(stack).await);
        }
        let held = match self.stop_services(target, job).await {
            Ok(held) => held,
            Err((held, e)) => {
                self.start_services(held).await;
                return Err(e);
            }
        };
        let _own = self.inner.registry.begin_container(&target.container.id);
        let result = match job.execution_mode {
            ExecutionMode::Restart => {
                let started = self.restart_job(target).await;
                if job.stop_services.is_empty() {
                    // A deploy waits for the running job by itself (`wait_running_jobs`).
                    locks.clear();
                }
                match started {
                    Ok(generation) => self.wait_job(target, generation).await,
                    Err(e) => Err(e),
                }
            }
            ExecutionMode::OneOff => self.run_copy(target, run_id).await,
        };
        self.start_services(held).await;
        drop(locks);
        result
    }

    /// (Re)starts a restart-mode job's container: started when this process has no other run of it
    /// in flight (a container another doco-cd instance runs is then joined, not killed), restarted
    /// when one of its own earlier runs still runs it (as upstream). Returns this start's
    /// generation.
    async fn restart_job(&self, target: &Target) -> Result<u64, String> {
        let (generation, overlapping) = {
            let mut table = self.table();
            let overlapping = table.running.get(target.name()).copied().unwrap_or(0) > 1;
            let generation = table
                .generation
                .entry(target.name().to_string())
                .or_default();
            *generation += 1;
            (*generation, overlapping)
        };
        let engine = &self.inner.engine;
        let id = &target.container.id;
        let started = if overlapping {
            info!(job = %target.name(), "the previous run still runs: restarting the job (skip_running is off)");
            engine.restart(id).await
        } else {
            engine.start(id).await
        };
        started.map_err(|e| e.to_string())?;
        Ok(generation)
    }

    /// Waits for the job's container to exit; a run whose container a newer run restarted ends as
    /// superseded (not as a failure).
    async fn wait_job(&self, target: &Target, generation: u64) -> RunOutcome {
        let waited = self.inner.engine.wait(&target.container.id).await;
        let latest = self
            .table()
            .generation
            .get(target.name())
            .copied()
            .unwrap_or(generation);
        if latest != generation {
            info!(job = %target.name(), "the job was restarted by a newer run; this run is superseded");
            return Ok(());
        }
        exit_status(waited)
    }

    async fn run_copy(&self, target: &Target, run_id: &str) -> RunOutcome {
        let engine = &self.inner.engine;
        let short: String = run_id.chars().rev().take(8).collect();
        let name = format!("{}-run-{short}", target.name());
        let copy = engine
            .start_copy(&target.container.id, &name)
            .await
            .map_err(|e| e.to_string())?;
        // The copy carries the job's compose labels: its exit is not drift to act on.
        let _own = self.inner.registry.begin_container(&copy);
        let status = exit_status(engine.wait(&copy).await);
        if let Err(e) = engine.remove(&copy).await {
            warn!(container = %name, error = %e, "cannot remove the one-off run's container");
        }
        status
    }

    /// Holds the services of `stop_services` stopped: stops their running containers unless another
    /// run holds them stopped already. The holds, each with the own-action guards of what it
    /// stopped (kept until the run ends, so the event loop does not bring them back).
    async fn stop_services(
        &self,
        target: &Target,
        job: &JobConfig,
    ) -> Result<Held, (Held, String)> {
        let mut held = Held::default();
        if job.stop_services.is_empty() {
            return Ok(held);
        }
        let containers = match self.inner.engine.containers().await {
            Ok(containers) => containers,
            Err(e) => return Err((held, e.to_string())),
        };
        let registry = &self.inner.registry;
        for service in &job.stop_services {
            let project = service.project.as_deref().unwrap_or(target.stack());
            let (hold, first) = registry.hold_stopped(project, &service.service);
            let mut own = Vec::new();
            if !first {
                info!(job = %target.name(), service = %service, "already held stopped by another job run");
                held.0.push((hold, own));
                continue;
            }
            let running = containers
                .get(project)
                .into_iter()
                .flatten()
                .filter(|c| c.service == service.service && !c.oneoff)
                .filter(|c| c.state == ContainerState::Running);
            for container in running {
                own.push(registry.begin_container(&container.id));
                if let Err(e) = self.inner.engine.stop(&container.id).await {
                    held.0.push((hold, own));
                    return Err((
                        held,
                        format!("stopping service {service} before the job: {e}"),
                    ));
                }
                hold.stopped(&container.id);
                info!(job = %target.name(), service = %service, container = %container.name, "stopped for the job run");
            }
            held.0.push((hold, own));
        }
        Ok(held)
    }

    /// Ends the run's holds; what the last holder of a service stopped is started again.
    async fn start_services(&self, held: Held) {
        for (hold, own) in held.0 {
            for id in hold.release().unwrap_or_default() {
                let _start = self.inner.registry.begin_container(&id);
                if let Err(e) = self.inner.engine.start(&id).await {
                    warn!(container = %id, error = %e, "failed to restart a service after the scheduled job");
                }
            }
            drop(own);
        }
    }

    /// The jobs for `GET /v1/api/jobs` (upstream's `JobInfo` shape), optionally of one stack.
    pub async fn list(
        &self,
        stack: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, doco_docker::DockerError> {
        let targets = self.discover().await?;
        let now = self.inner.clock.now();
        let table = self.table();
        Ok(targets
            .values()
            .filter(|t| stack.is_none_or(|s| t.stack() == s))
            .map(|t| self.info(t, &table, now))
            .collect())
    }

    fn info(&self, target: &Target, table: &Table, now: Timestamp) -> serde_json::Value {
        let name = target.name();
        let labels = &target.container.labels;
        let running = table.running.get(name).copied().unwrap_or(0) > 0;
        let status = if running {
            "running".to_string()
        } else {
            match table.last_outcome.get(name) {
                Some(true) => "succeeded".into(),
                Some(false) => "failed".into(),
                None => format!("{:?}", target.container.state).to_lowercase(),
            }
        };
        let mut info = serde_json::json!({
            "name": name,
            "context": "default",
            "stack": target.stack(),
            "mode": "container",
            "status": status,
            "enabled": false,
            "skip_running": false,
            "valid": true,
        });
        let set = |info: &mut serde_json::Value, key: &str, value: serde_json::Value| {
            if let Some(map) = info.as_object_mut() {
                map.insert(key.to_string(), value);
            }
        };
        if let Some(repo) = labels.get(doco_docker::labels::SOURCE_NAME) {
            set(&mut info, "repository", repo.clone().into());
        }
        if let Some(t) = labels.get(config::LAST_RUN) {
            set(&mut info, "last_run_at", t.clone().into());
        }
        if let Some(t) = labels.get(config::NEXT_RUN) {
            set(&mut info, "label_next_run_at", t.clone().into());
        }
        let job = match &target.parsed {
            Ok(Some(job)) => job,
            Ok(None) => return info,
            Err(e) => {
                set(&mut info, "valid", false.into());
                set(&mut info, "schedule_error", e.to_string().into());
                return info;
            }
        };
        set(&mut info, "enabled", true.into());
        set(&mut info, "schedule", job.schedule_text.clone().into());
        set(
            &mut info,
            "execution_mode",
            job.execution_mode.as_str().into(),
        );
        set(
            &mut info,
            "notify_on",
            serde_json::to_value(job.notify_on).unwrap_or_default(),
        );
        set(&mut info, "skip_running", job.skip_running.into());
        if !job.stop_services.is_empty() {
            let refs: Vec<String> = job.stop_services.iter().map(|s| s.to_string()).collect();
            set(&mut info, "stop_services", refs.into());
        }
        let slot = table.slots.get(name);
        if let Some(last) = slot.and_then(|s| s.last_run) {
            set(&mut info, "last_run_at", last.to_string().into());
        }
        let next = slot
            .and_then(|s| s.next)
            .or_else(|| job.schedule.next_after(now, &self.inner.tz));
        if let Some(next) = next {
            set(&mut info, "next_run_at", next.to_string().into());
        }
        info
    }
}

/// The services a run holds stopped, each with the guards that mark its stops as doco-cd's own.
#[derive(Default)]
struct Held(
    Vec<(
        crate::registry::HeldStopped,
        Vec<crate::registry::OwnAction>,
    )>,
);

fn exit_status(waited: Result<i64, doco_docker::DockerError>) -> RunOutcome {
    match waited {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!("the job exited with code {code}")),
        Err(e) => Err(e.to_string()),
    }
}

fn is_ephemeral(container: &ContainerInfo) -> bool {
    container
        .labels
        .get(doco_docker::JOB_EPHEMERAL)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn run_labels(target: &Target, job: &JobConfig) -> RunLabels {
    RunLabels {
        stack: target.stack().to_string(),
        job: target.name().to_string(),
        mode: "container".into(),
        execution_mode: job.execution_mode.as_str().into(),
    }
}

fn skip_labels(target: &Target, job: &JobConfig, reason: &str) -> SkipLabels {
    let run = run_labels(target, job);
    SkipLabels {
        stack: run.stack,
        job: run.job,
        mode: run.mode,
        execution_mode: run.execution_mode,
        reason: reason.into(),
    }
}

/// A run id for a scheduled run: time-ordered and unique within the process.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("sched-{nanos:x}-{n}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use doco_docker::Health;

    use super::*;
    use crate::adapters::{BoxFuture, Containers};

    /// An engine with one job container whose runs take `run_for` (paused clock).
    struct FakeEngine {
        labels: BTreeMap<String, String>,
        run_for: Duration,
        starts: AtomicUsize,
        restarts: Arc<AtomicUsize>,
    }

    impl JobEngine for FakeEngine {
        fn containers(&self) -> BoxFuture<'_, Result<Containers, doco_docker::DockerError>> {
            let container = ContainerInfo {
                id: "id1".into(),
                name: "stack-backup-1".into(),
                project: "stack".into(),
                service: "backup".into(),
                state: ContainerState::Exited,
                labels: self.labels.clone(),
                config_hash: None,
                oneoff: false,
                health: Health::None,
                image_id: String::new(),
            };
            Box::pin(async move { Ok(BTreeMap::from([("stack".to_string(), vec![container])])) })
        }
        fn start<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), doco_docker::DockerError>> {
            self.starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
        fn restart<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(), doco_docker::DockerError>> {
            self.restarts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
        fn stop<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), doco_docker::DockerError>> {
            Box::pin(async { Ok(()) })
        }
        fn wait<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<i64, doco_docker::DockerError>> {
            let run_for = self.run_for;
            let restarts = self.restarts.clone();
            let before = restarts.load(Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(run_for).await;
                // A restart during the run kills it.
                Ok(if restarts.load(Ordering::SeqCst) == before {
                    0
                } else {
                    137
                })
            })
        }
        fn start_copy<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<String, doco_docker::DockerError>> {
            Box::pin(async { Ok("copy".to_string()) })
        }
        fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), doco_docker::DockerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn start(
        labels: &[(&str, &str)],
        run_for: Duration,
        wall: &str,
    ) -> (Arc<FakeEngine>, Jobs, CancellationToken) {
        let engine = Arc::new(FakeEngine {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            run_for,
            starts: AtomicUsize::new(0),
            restarts: Arc::new(AtomicUsize::new(0)),
        });
        // The stack is one this doco-cd deploys.
        let registry = Registry::default();
        let target = crate::registry::EventTarget {
            poll: doco_config::PollConfig::default(),
            reconciliation: doco_config::ReconciliationConfig::default(),
        };
        registry.set_target("stack", target);
        let jobs = Jobs::new(JobsParts {
            engine: engine.clone(),
            clock: Clock::paused_at(wall.parse().unwrap()),
            tz: TimeZone::UTC,
            locks: StackLocks::default(),
            registry,
            metrics: crate::Metrics::new().scheduled.clone(),
            notifier: Notifier::disabled(),
            observer: None,
        });
        let cancel = CancellationToken::new();
        tokio::spawn(jobs.clone().run(cancel.clone()));
        (engine, jobs, cancel)
    }

    fn skipped(jobs: &Jobs) -> u64 {
        jobs.inner
            .metrics
            .skipped
            .get_or_create(&SkipLabels {
                stack: "stack".into(),
                job: "stack-backup-1".into(),
                mode: "container".into(),
                execution_mode: "restart".into(),
                reason: "still_running".into(),
            })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn every_runs_on_its_interval_never_at_discovery() {
        let (engine, _jobs, cancel) = start(
            &[(config::ENABLED, "true"), (config::SCHEDULE, "@every 10s")],
            Duration::from_secs(1),
            "2026-01-01T00:00:00Z",
        );
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(22)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 3);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_of_stacks_another_doco_cd_deploys_are_left_to_it() {
        let (engine, jobs, cancel) = start(
            &[(config::ENABLED, "true"), (config::SCHEDULE, "@every 10s")],
            Duration::from_secs(1),
            "2026-01-01T00:00:00Z",
        );
        jobs.inner.registry.remove_target("stack");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 0);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn skip_running_skips_overlapping_slots() {
        let (engine, jobs, cancel) = start(
            &[
                (config::ENABLED, "true"),
                (config::SCHEDULE, "@every 10s"),
                (config::SKIP_RUNNING, "true"),
            ],
            Duration::from_secs(25),
            "2026-01-01T00:00:00Z",
        );
        // Slots at 10 s (runs until 35 s), 20 s and 30 s (skipped), 40 s (runs).
        tokio::time::sleep(Duration::from_secs(41)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 2);
        assert_eq!(skipped(&jobs), 2);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn without_skip_running_an_overlapping_run_restarts_the_job_and_supersedes_the_earlier_run()
     {
        let (engine, jobs, cancel) = start(
            &[(config::ENABLED, "true"), (config::SCHEDULE, "@every 10s")],
            Duration::from_secs(15),
            "2026-01-01T00:00:00Z",
        );
        // 10 s: started (runs until 25 s); 20 s, 30 s and 40 s: restarted while the previous run
        // runs, which ends as superseded (the runs of 10 s and 20 s have ended by 41 s).
        tokio::time::sleep(Duration::from_secs(41)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 1);
        assert_eq!(engine.restarts.load(Ordering::SeqCst), 3);
        let labels = RunLabels {
            stack: "stack".into(),
            job: "stack-backup-1".into(),
            mode: "container".into(),
            execution_mode: "restart".into(),
        };
        assert_eq!(
            jobs.inner.metrics.errors.get_or_create(&labels).get(),
            0,
            "superseded, not failed"
        );
        assert_eq!(jobs.inner.metrics.runs.get_or_create(&labels).get(), 2);
        assert_eq!(skipped(&jobs), 0);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_does_not_catch_up_missed_cron_slots() {
        // doco-cd comes back at 10:30; the 10:00 slot was missed while it was down.
        let (engine, _jobs, cancel) = start(
            &[(config::ENABLED, "true"), (config::SCHEDULE, "0 * * * *")],
            Duration::from_secs(1),
            "2026-01-01T10:30:00Z",
        );
        tokio::time::sleep(Duration::from_secs(29 * 60)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(engine.starts.load(Ordering::SeqCst), 1);
        cancel.cancel();
    }
}
