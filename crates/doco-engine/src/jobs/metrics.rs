//! upstream's scheduled-run metrics: `doco_cd_scheduled_runs_total`, `_run_errors_total`,
//! `_run_skipped_total` (with `reason`), `_runs_active` and `_run_duration_seconds`, labelled
//! `{stack, job, mode, execution_mode}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `{stack, job, mode, execution_mode}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// The compose project.
    pub stack: String,
    /// The job (its container name).
    pub job: String,
    /// `container` (upstream's `swarm` is not built).
    pub mode: String,
    /// `restart` or `one_off`.
    pub execution_mode: String,
}

/// [`RunLabels`] plus `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// The compose project.
    pub stack: String,
    /// The job.
    pub job: String,
    /// `container`.
    pub mode: String,
    /// `restart` or `one_off`.
    pub execution_mode: String,
    /// Why the run was skipped (`still_running`).
    pub reason: String,
}

/// The scheduler's metrics.
#[derive(Clone)]
pub struct ScheduledMetrics {
    /// `doco_cd_scheduled_runs_total`.
    pub runs: Family<RunLabels, Counter>,
    /// `doco_cd_scheduled_run_errors_total`.
    pub errors: Family<RunLabels, Counter>,
    /// `doco_cd_scheduled_run_skipped_total`.
    pub skipped: Family<SkipLabels, Counter>,
    /// `doco_cd_scheduled_runs_active`.
    pub active: Family<RunLabels, Gauge>,
    /// `doco_cd_scheduled_run_duration_seconds`.
    pub duration: Family<RunLabels, Histogram>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 12))
}

impl ScheduledMetrics {
    /// Registers the families in `registry` (prefix `doco_cd`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ScheduledMetrics {
            runs: Family::default(),
            errors: Family::default(),
            skipped: Family::default(),
            active: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> _),
        };
        registry.register(
            "scheduled_runs",
            "Number of scheduled job runs",
            metrics.runs.clone(),
        );
        registry.register(
            "scheduled_run_errors",
            "Number of failed scheduled job runs",
            metrics.errors.clone(),
        );
        registry.register(
            "scheduled_run_skipped",
            "Number of skipped scheduled job runs",
            metrics.skipped.clone(),
        );
        registry.register(
            "scheduled_runs_active",
            "Number of scheduled job runs in progress",
            metrics.active.clone(),
        );
        registry.register_with_unit(
            "scheduled_run_duration",
            "Duration of scheduled job runs in seconds",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        metrics
    }
}
