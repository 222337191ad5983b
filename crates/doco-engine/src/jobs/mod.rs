//! Scheduled jobs from `cd.doco.job.*` service labels, as upstream runs them: a service labelled as
//! a job is created by the deploy but never started by it; the scheduler starts it (or an ephemeral
//! copy, `one_off`) when its schedule fires, stopping the services named in `stop_services` around
//! the run. Jobs live on the engine's containers and labels, not in Git, so they keep their
//! schedule while the repository is unreachable.
//!
//! - [`schedule`]: the schedule formats; [`config`]: the labels, checked strictly;
//! - [`runner`]: the scheduler task, the API's list and run, metrics and notifications;
//! - [`deploy`]: what a deploy does about jobs (refuse invalid labels, wait for running jobs of the
//!   stack, create job services without starting them);
//! - [`StackLocks`]: the per-stack lock that deploys and job runs share.

pub mod config;
pub mod deploy;
pub mod engine;
pub mod metrics;
pub mod runner;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use config::{ExecutionMode, JobConfig, JobLabelError, NotifyOn};
pub use engine::JobEngine;
pub use metrics::ScheduledMetrics;
pub use runner::{Clock, Jobs, JobsParts, RunOutcome, TriggerError};
pub use schedule::Schedule;

/// The zone cron patterns are read in: `TZ` (a zone name or a path), else the system's, else UTC.
pub fn daemon_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)
}

/// Where job runs are recorded (the binary's run tracker, trigger `scheduled_job`).
pub trait RunObserver: Send + Sync {
    /// Run `run_id` of job `job` in `stack` started.
    fn started(&self, run_id: &str, job: &str, stack: &str);
    /// Run `run_id` ended.
    fn finished(&self, run_id: &str, outcome: &RunOutcome);
}

/// One lock per compose project (stack), shared by deploys and job runs so that a deploy never
/// recreates a stack while a job of it starts or holds services stopped. Cloning shares the locks.
#[derive(Debug, Clone, Default)]
pub struct StackLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl StackLocks {
    /// Waits for and holds the lock of `stack`.
    pub async fn lock(&self, stack: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(stack.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}
