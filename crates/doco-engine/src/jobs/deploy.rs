//! What a deploy does about the jobs of its stack, called from the reconciler at two small hooks:
//! [`before_deploy`] once the project is rendered (refuses invalid job labels naming the service and
//! the label, refuses a restart policy that would run the job on its own, and waits for the stack's
//! running jobs per `wait_running_jobs`), and [`up`] in place of the plain `docker compose up`
//! (job services are created, never started: a job runs when its schedule fires, never because of
//! a deploy).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use doco_config::ResolvedDeployment;
use doco_docker::{ComposeError, ComposeProject, RenderedProject, UpOptions};
use tracing::info;

use super::config::{self, JobConfig, JobLabelError};
use crate::adapters::Runtime;
use crate::reconciler::DeployError;

/// How often a deploy looks again at the stack's running jobs.
const WAIT_STEP: Duration = Duration::from_secs(1);

/// Checks the job labels of every rendered service and waits for the stack's running jobs; the job
/// services (to be created but not started).
pub async fn before_deploy(
    runtime: &dyn Runtime,
    rendered: &RenderedProject,
    deployment: &ResolvedDeployment,
) -> Result<BTreeSet<String>, DeployError> {
    let jobs = job_services(rendered).map_err(|e| DeployError::Job(e.to_string()))?;
    let waited: BTreeSet<&String> = jobs
        .iter()
        .filter(|(_, job)| {
            job.wait_running_jobs
                .unwrap_or(deployment.config.wait_running_jobs)
        })
        .map(|(name, _)| name)
        .collect();
    if !waited.is_empty() {
        let timeout = Duration::from_secs(deployment.config.timeout.max(1));
        wait_running(runtime, &rendered.name, &waited, timeout).await?;
    }
    Ok(jobs.into_keys().collect())
}

/// The enabled jobs of `rendered`, by service; an error names the service and the label.
pub fn job_services(
    rendered: &RenderedProject,
) -> Result<BTreeMap<String, JobConfig>, JobLabelError> {
    let mut jobs = BTreeMap::new();
    for (name, service) in &rendered.services {
        let Some(job) = config::parse(name, &service_labels(&service.spec))? else {
            continue;
        };
        let restart = service.restart.as_deref().unwrap_or("").trim();
        if !(restart.is_empty() || restart == "no") {
            return Err(JobLabelError {
                service: name.clone(),
                label: config::ENABLED.into(),
                reason: format!(
                    "a scheduled job's restart policy must be unset or \"no\", not {restart:?}"
                ),
            });
        }
        jobs.insert(name.clone(), job);
    }
    Ok(jobs)
}

/// A rendered service's labels (compose renders a map; a list of `key=value` is read too).
fn service_labels(spec: &serde_json::Value) -> BTreeMap<String, String> {
    match spec.get("labels") {
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Waits until no container of the `waited` job services of `project` runs, at most `timeout`.
async fn wait_running(
    runtime: &dyn Runtime,
    project: &str,
    waited: &BTreeSet<&String>,
    timeout: Duration,
) -> Result<(), DeployError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut logged = false;
    loop {
        let containers = runtime.containers().await?;
        let running: Vec<String> = containers
            .get(project)
            .into_iter()
            .flatten()
            .filter(|c| waited.contains(&c.service) && c.state.is_running())
            .map(|c| c.name.clone())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DeployError::Job(format!(
                "timed out after {}s waiting for running scheduled jobs to finish: {} (wait_running_jobs)",
                timeout.as_secs(),
                running.join(", ")
            )));
        }
        if !logged {
            info!(jobs = ?running, "waiting for running scheduled jobs to finish before deployment");
            logged = true;
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

/// `docker compose up` of the project, except that the `jobs` services are only created.
pub async fn up(
    runtime: &dyn Runtime,
    project: &ComposeProject,
    labels: &Path,
    options: &UpOptions,
    all: &[String],
    jobs: &BTreeSet<String>,
) -> Result<(), ComposeError> {
    if jobs.is_empty() {
        return runtime.up(project, labels, options).await;
    }
    let selected =
        |service: &String| options.services.is_empty() || options.services.contains(service);
    let (job_services, others): (Vec<String>, Vec<String>) = all
        .iter()
        .filter(|s| selected(s))
        .cloned()
        .partition(|s| jobs.contains(s));
    if !others.is_empty() {
        let up = UpOptions {
            services: others,
            ..options.clone()
        };
        runtime.up(project, labels, &up).await?;
    }
    if !job_services.is_empty() {
        let create = UpOptions {
            services: job_services,
            ..options.clone()
        };
        runtime.create(project, labels, &create).await?;
    }
    Ok(())
}
