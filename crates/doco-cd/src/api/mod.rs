//! The REST API under `/v1/api` on `HTTP_PORT`, as upstream's: enabled only when `API_SECRET` (or
//! `API_SECRET_FILE`) is set, every request authenticated by the `x-api-key` header (compared in
//! constant time), bodies `{"content":…, "job_id":…}` or `{"error":…, "content":…, "job_id":…}`.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/api/runs` (`limit`, `status`, `trigger`), `GET /v1/api/run/{jobID}` | the run tracker ([`runs`]) |
//! | `GET /v1/api/projects` (`all`), `GET`/`DELETE /v1/api/project/{name}`, `POST /v1/api/project/{name}/{start\|stop\|restart}` | Compose projects ([`projects`]) |
//! | `POST /v1/api/poll/run` (`wait`) | one-off polls through the poll path ([`poll`]) |
//! | `GET /v1/api/repositories` | **this implementation's addition**: last good commit, last fetch, offline flag and deployments per repository |
//! | `GET /v1/api/jobs` (`stack`), `POST /v1/api/job/{jobName}/run` (`stack`, `wait`) | scheduled jobs ([`jobs`]) |
//! | `/v1/api/stacks`, `/v1/api/stack/…` | 501: Swarm is not built |
//!
//! Methods, the order of checks (method or key first) and messages follow upstream's handlers.

pub mod jobs;
pub mod poll;
pub mod projects;
pub mod runs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use doco_engine::{Reconciler, Scheduler};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use runs::{RunStatus, RunTracker, RunTrigger};

/// The header carrying the key.
pub const KEY_HEADER: &str = "x-api-key";

/// What the API routes need.
#[derive(Clone)]
pub struct Api {
    /// SHA-256 of `API_SECRET`: comparing digests keeps the comparison constant-time whatever the
    /// length of the presented key.
    secret: [u8; 32],
    docker: doco_docker::Engine,
    compose: doco_docker::Compose,
    reconciler: Arc<Reconciler>,
    scheduler: Scheduler,
    tracker: Arc<RunTracker>,
    jobs: doco_engine::jobs::Jobs,
    min_interval: Duration,
}

impl Api {
    /// The API, when `API_SECRET` is set and not empty.
    pub fn new(
        config: &doco_config::AppConfig,
        docker: doco_docker::Engine,
        compose: doco_docker::Compose,
        reconciler: Arc<Reconciler>,
        scheduler: Scheduler,
        tracker: Arc<RunTracker>,
        jobs: doco_engine::jobs::Jobs,
    ) -> Option<Self> {
        let secret = config.api_secret.as_ref()?.expose();
        if secret.is_empty() {
            return None;
        }
        Some(Api {
            secret: Sha256::digest(secret.as_bytes()).into(),
            docker,
            compose,
            reconciler,
            scheduler,
            tracker,
            jobs,
            min_interval: config.min_poll_interval,
        })
    }

    /// Every `/v1/api` route.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/api/runs", any(runs_handler))
            .route("/v1/api/run/{jobID}", any(run_handler))
            .route("/v1/api/jobs", any(jobs::list))
            .route("/v1/api/job/{jobName}/run", any(jobs::run))
            .route("/v1/api/projects", any(projects::list))
            .route("/v1/api/project/{projectName}", any(projects::one))
            .route(
                "/v1/api/project/{projectName}/{action}",
                any(projects::action),
            )
            .route("/v1/api/stacks", any(unavailable_get))
            .route("/v1/api/stack/{stackName}", any(unavailable_key_first))
            .route(
                "/v1/api/stack/{stackName}/{action}",
                any(unavailable_key_first),
            )
            .route("/v1/api/poll/run", any(poll::run))
            .route("/v1/api/repositories", any(repositories))
            .with_state(self)
    }

    /// Whether `headers` carry the right key.
    /// upstream's checks before every route: the method (405), then the key (401); `None` when the
    /// request may go on.
    fn admit(
        &self,
        method: &Method,
        required: &Method,
        headers: &HeaderMap,
        job_id: &str,
    ) -> Option<Response> {
        if method != required {
            return Some(wrong_method(required));
        }
        (!self.authorized(headers)).then(|| unauthorized(job_id))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = headers.get(KEY_HEADER) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        digest.ct_eq(&self.secret).into()
    }
}

/// A fresh job id (UUIDv7), as the webhook's.
fn job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// upstream's 401.
fn unauthorized(job_id: &str) -> Response {
    tracing::error!(job_id, "invalid api key");
    error(
        StatusCode::UNAUTHORIZED,
        "invalid api key",
        Value::Null,
        job_id,
    )
}

/// upstream's 405 of `requireMethod` (no job id).
fn wrong_method(required: &Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid http method",
        json!(format!("requires method: {required}")),
        "",
    )
}

/// upstream's `{"content":…, "job_id":…}` (empty fields left out).
fn ok(status: StatusCode, content: Value, job_id: &str) -> Response {
    let mut body = Map::new();
    if !is_empty(&content) {
        body.insert("content".into(), content);
    }
    if !job_id.is_empty() {
        body.insert("job_id".into(), json!(job_id));
    }
    crate::http::json_response(status, Value::Object(body))
}

/// upstream's `{"error":…, "content":…, "job_id":…}` (empty content and job id left out).
fn error(status: StatusCode, message: &str, content: Value, job_id: &str) -> Response {
    let mut body = Map::new();
    body.insert("error".into(), json!(message));
    if !is_empty(&content) {
        body.insert("content".into(), content);
    }
    if !job_id.is_empty() {
        body.insert("job_id".into(), json!(job_id));
    }
    crate::http::json_response(status, Value::Object(body))
}

/// Go's `omitempty` on an `any`: only nil and (here) the empty string are left out.
fn is_empty(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some("")
}

/// Query parameters, as upstream's `getQueryParam`: absent or empty → the default; a value that
/// does not parse → 400 (boxed: a `Response` is large).
struct Params(HashMap<String, String>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn bool(&self, key: &str, default: bool, job_id: &str) -> Result<bool, Box<Response>> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        // Go's strconv.ParseBool.
        match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("invalid parameter: {key}"),
                json!(format!("'{key}' parameter must be true or false")),
                job_id,
            ))),
        }
    }

    fn int(&self, key: &str, default: i64, job_id: &str) -> Result<i64, Box<Response>> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        value.parse().map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("invalid parameter: {key}"),
                json!(format!("'{key}' parameter must be a integer")),
                job_id,
            ))
        })
    }
}

/// `GET /v1/api/runs?limit=&status=&trigger=`: recent runs, newest first.
async fn runs_handler(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let job_id = job_id();
    if let Some(refused) = api.admit(&method, &Method::GET, &headers, &job_id) {
        return refused;
    }
    let mut limit = 50;
    if let Some(raw) = query
        .get("limit")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        match raw.parse::<i64>() {
            Ok(n) if n >= 1 => limit = n.min(200) as usize,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid parameter: limit",
                    json!("'limit' parameter must be a positive integer"),
                    &job_id,
                );
            }
        }
    }
    let param = |key: &str| query.get(key).map(String::as_str).unwrap_or_default();
    let status = match RunStatus::parse_filter(param("status")) {
        Ok(status) => status,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                message,
                json!("valid status values: accepted, running, succeeded, failed, skipped"),
                &job_id,
            );
        }
    };
    let trigger = match RunTrigger::parse_filter(param("trigger")) {
        Ok(trigger) => trigger,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                message,
                json!("valid trigger values: webhook, poll, scheduled_job"),
                &job_id,
            );
        }
    };
    let runs = api.tracker.list(limit, trigger, status);
    // An empty list is `[]`: Go's omitempty does not drop an empty, non-nil slice inside `any`.
    ok(StatusCode::OK, json!(runs), &job_id)
}

/// `GET /v1/api/run/{jobID}`: one run, or 404.
async fn run_handler(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Path(requested): Path<String>,
) -> Response {
    let job_id = job_id();
    if let Some(refused) = api.admit(&method, &Method::GET, &headers, &job_id) {
        return refused;
    }
    let requested = requested.trim();
    if requested.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "missing job id",
            Value::Null,
            &job_id,
        );
    }
    match api.tracker.get(requested) {
        Some(run) => ok(StatusCode::OK, json!(run), &job_id),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("run not found: {requested}"),
            Value::Null,
            &job_id,
        ),
    }
}

/// What this build answers for upstream routes whose feature it does not have.
fn not_implemented(job_id: &str) -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "swarm stacks are not supported by this build",
        json!(
            "doco-cd (Rust) deploys with docker compose only; Docker Swarm stacks are not managed"
        ),
        job_id,
    )
}

/// `/v1/api/stacks`: GET, method checked first (as upstream), then the key.
async fn unavailable_get(State(api): State<Api>, request: Request) -> Response {
    unavailable(api, request, Some(Method::GET))
}

/// `/v1/api/stack/…`: the key first; upstream checks the method after looking the stack up.
async fn unavailable_key_first(State(api): State<Api>, request: Request) -> Response {
    unavailable(api, request, None)
}

fn unavailable(api: Api, request: Request, method: Option<Method>) -> Response {
    let job_id = job_id();
    if let Some(method) = method
        && request.method() != method
    {
        return wrong_method(&method);
    }
    if !api.authorized(request.headers()) {
        return unauthorized(&job_id);
    }
    not_implemented(&job_id)
}

/// `GET /v1/api/repositories` (this implementation's addition): per repository and reference, the
/// last good commit, when it was last fetched, whether it is offline (enforced from its last known
/// state), what was deployed from it (each deployment's last known good state, from the state file)
/// and which deployments' changes are failing and wait for their backoff (`failing`).
async fn repositories(State(api): State<Api>, method: Method, headers: HeaderMap) -> Response {
    let job_id = job_id();
    if let Some(refused) = api.admit(&method, &Method::GET, &headers, &job_id) {
        return refused;
    }
    let state = api.reconciler.state_snapshot().await;
    let offline = api.reconciler.offline_repositories();
    let failing = api.reconciler.failing_deployments();
    let now = tokio::time::Instant::now();
    let repositories: Vec<Value> = state
        .repositories
        .iter()
        .map(|(key, repo)| {
            let name = key.split('#').next().unwrap_or(key);
            let deployments: Vec<Value> = repo
                .deployments
                .iter()
                .map(|(deployment, record)| {
                    json!({
                        "name": deployment,
                        "project": record.project,
                        "commit": record.commit,
                        "deployed_at": rfc3339(record.deployed_unix),
                        "services": record.services.keys().collect::<Vec<_>>(),
                    })
                })
                .collect();
            let failing: Vec<Value> = failing
                .iter()
                .filter(|((k, _), _)| k == key)
                .map(|((_, deployment), f)| {
                    json!({
                        "name": deployment,
                        "commit": f.desired.commit,
                        "attempts": f.attempts,
                        "retry_in_seconds": f.retry_at.saturating_duration_since(now).as_secs(),
                        "error": f.error,
                    })
                })
                .collect();
            json!({
                "repository": name,
                "reference": repo.reference,
                "url": repo.url,
                "commit": repo.commit,
                "last_success_at": rfc3339(repo.last_success_unix),
                "last_success_unix": repo.last_success_unix,
                "offline": offline.contains(name),
                "deployments": deployments,
                "failing": failing,
            })
        })
        .collect();
    ok(StatusCode::OK, json!(repositories), &job_id)
}

fn rfc3339(unix: u64) -> Value {
    if unix == 0 {
        return Value::Null;
    }
    json!(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string())
}

#[cfg(test)]
mod tests;
