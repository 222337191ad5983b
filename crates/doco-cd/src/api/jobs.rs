//! `GET /v1/api/jobs` (`stack`) and `POST /v1/api/job/{jobName}/run` (`stack`, `wait`, default
//! true), as upstream's: the job name is the container name (or the compose service name, narrowed
//! by `stack`); a run answers 200 `scheduled job run completed` once it ended (`wait`), or 202
//! `scheduled job run accepted`; 404 when no job matches, 409 when the job is disabled or the name is
//! ambiguous. Every run, scheduled or requested, is in the run tracker under trigger
//! `scheduled_job`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use doco_engine::jobs::{RunObserver, RunOutcome, TriggerError};
use serde_json::{Value, json};

use super::{Api, Params, RunStatus, RunTracker, RunTrigger, error, job_id, ok};

/// Records job runs in the run tracker.
pub struct TrackerObserver(pub Arc<RunTracker>);

impl RunObserver for TrackerObserver {
    fn started(&self, run_id: &str, job: &str, stack: &str) {
        self.0.accept(run_id, RunTrigger::ScheduledJob);
        self.0
            .set_metadata(run_id, &format!("scheduled:{job}"), stack, "");
        self.0.running(run_id);
    }

    fn finished(&self, run_id: &str, outcome: &RunOutcome) {
        match outcome {
            Ok(()) => self
                .0
                .finish(run_id, RunStatus::Succeeded, "scheduled job run completed"),
            Err(e) => self.0.finish(run_id, RunStatus::Failed, e),
        }
    }
}

/// `GET /v1/api/jobs?stack=`.
pub async fn list(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let job_id = job_id();
    if let Some(refused) = api.admit(&method, &Method::GET, &headers, &job_id) {
        return refused;
    }
    let params = Params(query);
    match api.jobs.list(params.get("stack").map(str::trim)).await {
        Ok(jobs) => ok(StatusCode::OK, json!(jobs), &job_id),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to list scheduled jobs",
            json!(e.to_string()),
            &job_id,
        ),
    }
}

/// `POST /v1/api/job/{jobName}/run?stack=&wait=`.
pub async fn run(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let job_id = job_id();
    if let Some(refused) = api.admit(&method, &Method::POST, &headers, &job_id) {
        return refused;
    }
    let name = name.trim();
    if name.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "missing job name",
            Value::Null,
            &job_id,
        );
    }
    let params = Params(query);
    let wait = match params.bool("wait", true, &job_id) {
        Ok(wait) => wait,
        Err(response) => return *response,
    };
    let stack = params.get("stack").map(str::trim);
    let handle = match api.jobs.trigger(name, stack, job_id.clone()).await {
        Ok(handle) => handle,
        Err(e) => return trigger_error(&e, &job_id),
    };
    if !wait {
        return ok(
            StatusCode::ACCEPTED,
            json!("scheduled job run accepted"),
            &job_id,
        );
    }
    match handle.await {
        Ok(Ok(())) => ok(
            StatusCode::OK,
            json!("scheduled job run completed"),
            &job_id,
        ),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to trigger scheduled job run",
            json!(e),
            &job_id,
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to trigger scheduled job run",
            json!(e.to_string()),
            &job_id,
        ),
    }
}

fn trigger_error(e: &TriggerError, job_id: &str) -> Response {
    let status = match e {
        TriggerError::NotFound => StatusCode::NOT_FOUND,
        TriggerError::Disabled | TriggerError::Ambiguous => StatusCode::CONFLICT,
        TriggerError::Invalid(..) | TriggerError::Engine(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to trigger scheduled job run",
                json!(e.to_string()),
                job_id,
            );
        }
    };
    error(status, &e.to_string(), Value::Null, job_id)
}
