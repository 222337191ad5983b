//! The reconcile engine of doco-cd: the pure deploy decisions (`plan`), the state store that keeps the
//! last known good state across restarts, the poll loop, the reconciler that ties one poll together,
//! and the metrics. It composes `doco-config`, `doco-git` and `doco-docker`; the binary wires it to
//! the environment and to HTTP.

pub mod adapters;
pub mod backoff;
pub mod events;
pub mod fingerprint;
pub mod git_options;
pub mod jobs;
pub mod labels;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod plan;
pub mod reconciler;
pub mod registry;
pub mod scheduler;
pub mod sops;
pub mod state;
pub mod store;
pub mod watch;

pub use metrics::Metrics;
pub use reconciler::{DeployError, DeploymentOutcome, PollError, Reconciler};
pub use scheduler::{Reason, Scheduler, run_scheduler};
