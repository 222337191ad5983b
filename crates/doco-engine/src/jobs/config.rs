//! A job's `cd.doco.job.*` labels, read once and checked strictly: the same reading serves the
//! deploy (which refuses a service whose job labels are invalid, naming the service and the label)
//! and the scheduler (which reads them back from the containers, so jobs run from the engine's view
//! alone, whatever Git says).

use std::collections::BTreeMap;

use super::schedule::{Schedule, ScheduleError};

/// `cd.doco.job.enabled`.
pub const ENABLED: &str = "cd.doco.job.enabled";
/// `cd.doco.job.schedule`.
pub const SCHEDULE: &str = "cd.doco.job.schedule";
/// `cd.doco.job.execution_mode`.
pub const EXECUTION_MODE: &str = "cd.doco.job.execution_mode";
/// `cd.doco.job.skip_running`.
pub const SKIP_RUNNING: &str = "cd.doco.job.skip_running";
/// `cd.doco.job.wait_running_jobs`.
pub const WAIT_RUNNING_JOBS: &str = "cd.doco.job.wait_running_jobs";
/// `cd.doco.job.notify_on`.
pub const NOTIFY_ON: &str = "cd.doco.job.notify_on";
/// `cd.doco.job.stop_services`.
pub const STOP_SERVICES: &str = "cd.doco.job.stop_services";
/// `cd.doco.job.last_run` (written by upstream on Swarm services only; read when present).
pub const LAST_RUN: &str = "cd.doco.job.last_run";
/// `cd.doco.job.next_run` (as [`LAST_RUN`]).
pub const NEXT_RUN: &str = "cd.doco.job.next_run";
/// The Swarm-only labels: refused, since this build has no Swarm mode.
pub const SWARM_LABELS: &[&str] = &[
    "cd.doco.job.swarm.replicas",
    "cd.doco.job.swarm.restart_replicas",
];

/// How a run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// The job's own container is (re)started (the default).
    Restart,
    /// An ephemeral copy of the container runs and is removed afterwards (`one_off`; upstream's older
    /// spelling `one_shot` is accepted).
    OneOff,
}

impl ExecutionMode {
    /// The metric and API value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Restart => "restart",
            ExecutionMode::OneOff => "one_off",
        }
    }
}

/// Which outcomes notify (`cd.doco.job.notify_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// Never.
    None,
    /// Successful runs only.
    Success,
    /// Failed runs only.
    Failure,
    /// Every run (the default).
    All,
}

impl NotifyOn {
    /// Whether a run with this outcome notifies.
    pub fn admits(self, succeeded: bool) -> bool {
        match self {
            NotifyOn::None => false,
            NotifyOn::Success => succeeded,
            NotifyOn::Failure => !succeeded,
            NotifyOn::All => true,
        }
    }
}

/// A service named in `stop_services`: `service` (the job's own project) or `project/service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The compose project; `None` for the job's own.
    pub project: Option<String>,
    /// The compose service.
    pub service: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.project {
            Some(project) => write!(f, "{project}/{}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

/// An enabled job's configuration.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The schedule label as written.
    pub schedule_text: String,
    /// The parsed schedule.
    pub schedule: Schedule,
    /// `execution_mode`.
    pub execution_mode: ExecutionMode,
    /// `skip_running`.
    pub skip_running: bool,
    /// `wait_running_jobs`, when the label sets it (else the deploy config's default applies).
    pub wait_running_jobs: Option<bool>,
    /// `notify_on`.
    pub notify_on: NotifyOn,
    /// `stop_services`.
    pub stop_services: Vec<ServiceRef>,
}

/// Why a service's job labels were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}: label {label}: {reason}")]
pub struct JobLabelError {
    /// The compose service.
    pub service: String,
    /// The label at fault.
    pub label: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads the job labels of `service`: `Ok(None)` when it is not an enabled job.
pub fn parse(
    service: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Option<JobConfig>, JobLabelError> {
    let fail = |label: &str, reason: String| JobLabelError {
        service: service.to_string(),
        label: label.to_string(),
        reason,
    };
    let get = |label: &str| labels.get(label).map(|v| v.trim());
    let enabled = match get(ENABLED) {
        None => return Ok(None),
        Some(raw) => parse_bool(raw).ok_or_else(|| fail(ENABLED, not_bool(raw)))?,
    };
    if !enabled {
        return Ok(None);
    }
    if let Some(label) = SWARM_LABELS.iter().find(|l| labels.contains_key(**l)) {
        return Err(fail(
            label,
            "Swarm jobs are not supported by this build (doco-cd deploys with docker compose only)"
                .into(),
        ));
    }
    let schedule_text = get(SCHEDULE).unwrap_or_default().to_string();
    let schedule = Schedule::parse(&schedule_text).map_err(|e| {
        let reason = match e {
            ScheduleError::Empty => "an enabled job needs a schedule".to_string(),
            other => other.to_string(),
        };
        fail(SCHEDULE, reason)
    })?;
    let flag = |label: &str| -> Result<Option<bool>, JobLabelError> {
        get(label)
            .map(|raw| parse_bool(raw).ok_or_else(|| fail(label, not_bool(raw))))
            .transpose()
    };
    Ok(Some(JobConfig {
        schedule_text,
        schedule,
        execution_mode: parse_mode(get(EXECUTION_MODE)).map_err(|r| fail(EXECUTION_MODE, r))?,
        skip_running: flag(SKIP_RUNNING)?.unwrap_or(false),
        wait_running_jobs: flag(WAIT_RUNNING_JOBS)?,
        notify_on: parse_notify_on(get(NOTIFY_ON)).map_err(|r| fail(NOTIFY_ON, r))?,
        stop_services: parse_stop_services(get(STOP_SERVICES).unwrap_or_default())
            .map_err(|r| fail(STOP_SERVICES, r))?,
    }))
}

/// Go's `strconv.ParseBool`, as upstream reads its labels.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn not_bool(raw: &str) -> String {
    format!("{raw:?} is not a boolean (true or false)")
}

fn parse_mode(raw: Option<&str>) -> Result<ExecutionMode, String> {
    match raw.unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "restart" => Ok(ExecutionMode::Restart),
        "one_off" => Ok(ExecutionMode::OneOff),
        "one_shot" => {
            tracing::warn!("execution_mode one_shot is deprecated upstream; use one_off");
            Ok(ExecutionMode::OneOff)
        }
        other => Err(format!(
            "{other:?} is not an execution mode: expected restart or one_off"
        )),
    }
}

fn parse_notify_on(raw: Option<&str>) -> Result<NotifyOn, String> {
    match raw.unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "all" => Ok(NotifyOn::All),
        "none" => Ok(NotifyOn::None),
        "success" => Ok(NotifyOn::Success),
        "failure" => Ok(NotifyOn::Failure),
        other => Err(format!(
            "{other:?} is not a notify_on value: expected none, success, failure or all"
        )),
    }
}

fn parse_stop_services(raw: &str) -> Result<Vec<ServiceRef>, String> {
    let mut refs = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = match entry.split_once('/') {
            None => ServiceRef {
                project: None,
                service: entry.to_string(),
            },
            Some((project, service))
                if !project.is_empty() && !service.is_empty() && !service.contains('/') =>
            {
                ServiceRef {
                    project: Some(project.to_string()),
                    service: service.to_string(),
                }
            }
            Some(_) => {
                return Err(format!(
                    "{entry:?} is not a service: expected service or project/service"
                ));
            }
        };
        refs.push(parsed);
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn not_a_job_without_the_enabled_label_or_when_false() {
        assert!(parse("web", &labels(&[])).unwrap().is_none());
        let off = labels(&[(ENABLED, "false"), (SCHEDULE, "nonsense")]);
        assert!(parse("web", &off).unwrap().is_none());
    }

    #[test]
    fn defaults_and_every_label() {
        let job = parse(
            "backup",
            &labels(&[(ENABLED, "true"), (SCHEDULE, "@daily")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(job.execution_mode, ExecutionMode::Restart);
        assert!(!job.skip_running);
        assert_eq!(job.wait_running_jobs, None);
        assert_eq!(job.notify_on, NotifyOn::All);
        assert!(job.stop_services.is_empty());

        let job = parse(
            "backup",
            &labels(&[
                (ENABLED, "1"),
                (SCHEDULE, "@every 10s"),
                (EXECUTION_MODE, "one_shot"),
                (SKIP_RUNNING, "true"),
                (WAIT_RUNNING_JOBS, "false"),
                (NOTIFY_ON, "failure"),
                (STOP_SERVICES, "app, other/db"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(job.execution_mode, ExecutionMode::OneOff);
        assert!(job.skip_running);
        assert_eq!(job.wait_running_jobs, Some(false));
        assert_eq!(job.notify_on, NotifyOn::Failure);
        let names: Vec<String> = job.stop_services.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["app", "other/db"]);
    }

    #[test]
    fn errors_name_the_service_and_the_label() {
        let cases = [
            (vec![(ENABLED, "yes")], ENABLED),
            (vec![(ENABLED, "true")], SCHEDULE),
            (vec![(ENABLED, "true"), (SCHEDULE, "* * *")], SCHEDULE),
            (
                vec![
                    (ENABLED, "true"),
                    (SCHEDULE, "@daily"),
                    (EXECUTION_MODE, "x"),
                ],
                EXECUTION_MODE,
            ),
            (
                vec![(ENABLED, "true"), (SCHEDULE, "@daily"), (NOTIFY_ON, "some")],
                NOTIFY_ON,
            ),
            (
                vec![(ENABLED, "true"), (SCHEDULE, "@daily"), (SKIP_RUNNING, "y")],
                SKIP_RUNNING,
            ),
            (
                vec![
                    (ENABLED, "true"),
                    (SCHEDULE, "@daily"),
                    (STOP_SERVICES, "a/"),
                ],
                STOP_SERVICES,
            ),
            (
                vec![
                    (ENABLED, "true"),
                    (SCHEDULE, "@daily"),
                    ("cd.doco.job.swarm.replicas", "3"),
                ],
                "cd.doco.job.swarm.replicas",
            ),
        ];
        for (pairs, label) in cases {
            let err = parse("backup", &labels(&pairs)).unwrap_err();
            assert_eq!(err.label, label, "{pairs:?}");
            let text = err.to_string();
            assert!(text.starts_with("service backup: label "), "{text}");
            assert!(text.contains(label), "{text}");
        }
    }
}
