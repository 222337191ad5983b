//! `POST /v1/api/poll/run?wait=true`: a JSON array of poll configurations, each run once through the
//! same path a scheduled poll takes (the scheduler, with upstream's trigger `poll`), so offline semantics, per-checkout serialization, metrics and notifications
//! are the poll's. As upstream: `run_once` is forced and `interval` set to 0; the whole request is one
//! run of trigger `poll` in the run tracker; with `wait` (default) the answer is 200 `poll jobs
//! complete` once every poll ended (failed polls are reported in the run, not in the status code);
//! with `wait=false` 202 `poll jobs started`. A body that is not a JSON array of poll configurations,
//! an invalid entry or an empty array is 400.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use doco_config::PollConfig;
use doco_engine::Reason;
use serde_json::{Value, json};
use tracing::{Instrument, error, info, info_span};

use super::{Api, Params, RunStatus, RunTrigger, error, job_id, ok};

/// The handler.
pub async fn run(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let job_id = job_id();
    if let Some(refused) = api.admit(&method, &Method::POST, &headers, &job_id) {
        return refused;
    }
    let wait = match Params(query).bool("wait", true, &job_id) {
        Ok(wait) => wait,
        Err(response) => return *response,
    };
    let tracker = api.tracker.clone();
    tracker.accept(&job_id, RunTrigger::Poll);
    let refuse = |message: &str, detail: String| {
        error!(job_id, error = %detail, "{message}");
        tracker.finish(&job_id, RunStatus::Failed, &format!("{message}: {detail}"));
        error(StatusCode::BAD_REQUEST, message, json!(detail), &job_id)
    };
    let mut polls: Vec<PollConfig> = match serde_json::from_slice(&body) {
        Ok(polls) => polls,
        Err(e) => return refuse("failed to decode json in body", e.to_string()),
    };
    for (i, poll) in polls.iter_mut().enumerate() {
        poll.run_once = true;
        poll.interval = Duration::ZERO;
        if let Err(e) = poll.validate(api.min_interval) {
            return refuse(
                &format!("invalid poll configuration at index {i}"),
                format!("{}: {}", e.field, e.message),
            );
        }
    }
    if polls.is_empty() {
        let message = "no poll configuration provided in request body";
        error!(job_id, "{message}");
        tracker.finish(&job_id, RunStatus::Failed, message);
        return error(StatusCode::BAD_REQUEST, message, Value::Null, &job_id);
    }
    let repository = match polls.as_slice() {
        [only] => doco_git::repo_name(&only.url),
        _ => "multiple".to_string(),
    };
    tracker.set_metadata(&job_id, &repository, "", "");
    info!(job_id, polls = polls.len(), "poll triggered via API");

    tracker.running(&job_id);
    let span = info_span!("api_poll", job_id = %job_id);
    let total = polls.len();
    let mut tasks = tokio::task::JoinSet::new();
    for poll in polls {
        let scheduler = api.scheduler.clone();
        tasks.spawn(
            async move { scheduler.run(poll, Reason::Api).await.is_ok() }.instrument(span.clone()),
        );
    }
    let complete = {
        let job_id = job_id.clone();
        async move {
            let mut failed = 0;
            while let Some(joined) = tasks.join_next().await {
                // A panicked poll counts as failed.
                if !joined.unwrap_or(false) {
                    failed += 1;
                }
            }
            if failed > 0 {
                tracker.finish(
                    &job_id,
                    RunStatus::Failed,
                    &format!("{failed}/{total} poll jobs failed"),
                );
            } else {
                tracker.finish(&job_id, RunStatus::Succeeded, "poll jobs complete");
            }
        }
    };
    // Spawned either way: a client that hangs up does not abort a deploy half-way.
    let completion = tokio::spawn(complete.instrument(span));
    if wait {
        let _ = completion.await;
        return ok(StatusCode::OK, json!("poll jobs complete"), &job_id);
    }
    ok(StatusCode::ACCEPTED, json!("poll jobs started"), &job_id)
}
