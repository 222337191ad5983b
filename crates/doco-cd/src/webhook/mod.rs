//! `POST /v1/webhook[/{customTarget}]`: a push from GitHub, Gitea, Gogs, Forgejo or GitLab deploys
//! the pushed reference of the repository it names, through the same path a poll takes
//! ([`Scheduler::run`]), so offline semantics, per-checkout serialization, metrics and notifications
//! are the poll's. Enabled only when `WEBHOOK_SECRET` is set (otherwise the route does not exist and
//! answers 404, as upstream's unregistered route does).
//!
//! Status codes, bodies and metrics follow upstream's handler:
//!
//! | case | code |
//! |---|---|
//! | accepted, runs in the background (default) | 202 `job accepted` |
//! | `?wait=true` or `?wait=1`, deployed | 201 `job completed successfully` |
//! | signature or GitLab token wrong | 401 |
//! | no signature header | 400 |
//! | not POST | 405 |
//! | no `ref` in the payload (`?wait=true`; in the background the 202 was already sent) | 400 |
//! | branch or tag deleted | 202, skipped |
//! | `file://` clone URL not produced by `SOURCE_URL_REWRITES` | 403 |
//! | body over `MAX_PAYLOAD_SIZE` | 413 (upstream: 500) |
//! | empty body, or not the provider's JSON | 400 (upstream: 500) |
//! | unreadable body, failed deploy | 500 |
//! | no `.doco-cd[.<target>].y(a)ml` for the target (`?wait=true`) | 404 (upstream: 500) |
//!
//! The 413 and the 400 are deliberate differences: upstream answers 500 "failed to parse payload"
//! to both, which tells a sender (and its retry logic, and an alert on 5xx) that the daemon failed,
//! when it is the request that cannot be accepted; the error field is upstream's, so only the code
//! differs. The 404 is a deliberate difference too: upstream answers 500 "failed to get deploy configuration"
//! when the target's file is missing, but the request named something that does not exist (most
//! often a typo in the `{customTarget}` of the URL), which is the client's to fix, not a fault of
//! the daemon. The body names the files looked for and the directory.

pub mod client_ip;
pub mod payload;
pub mod verify;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use doco_config::{AppConfig, PollConfig};
use doco_engine::{Metrics, PollError, Reason, Scheduler};
use serde_json::{Map, Value, json};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::api::{RunStatus, RunTracker, RunTrigger};
use payload::Payload;
use verify::{Provider, VerifyError};

/// Runs one deployment for a webhook.
pub type Deploy = Arc<
    dyn Fn(PollConfig) -> Pin<Box<dyn Future<Output = Result<(), DeployFailure>> + Send>>
        + Send
        + Sync,
>;

/// Why a webhook's deployment failed: what the client and the log are told, and whether the
/// request named something that does not exist (a target without its file), answered 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    pub message: String,
    pub not_found: bool,
}

impl From<&PollError> for DeployFailure {
    fn from(error: &PollError) -> Self {
        DeployFailure {
            not_found: error.is_not_found(),
            message: error.to_string(),
        }
    }
}

/// The scheduler as a [`Deploy`]: the webhook's request joins the one queue every trigger takes.
pub fn scheduler_deploy(scheduler: Scheduler) -> Deploy {
    Arc::new(move |poll| {
        let scheduler = scheduler.clone();
        Box::pin(async move {
            scheduler
                .run(poll, Reason::Webhook)
                .await
                .map_err(|e| DeployFailure::from(&*e))
        })
    })
}

/// What the webhook routes need.
#[derive(Clone)]
pub struct Webhook {
    secret: Arc<str>,
    config: Arc<AppConfig>,
    metrics: Arc<Metrics>,
    deploy: Deploy,
    /// Where each webhook job is recorded for `GET /v1/api/runs`.
    tracker: Option<Arc<RunTracker>>,
}

impl Webhook {
    /// The webhook, when `WEBHOOK_SECRET` is set.
    pub fn new(config: Arc<AppConfig>, metrics: Arc<Metrics>, deploy: Deploy) -> Option<Self> {
        let secret: Arc<str> = Arc::from(config.webhook_secret.as_ref()?.expose());
        if secret.is_empty() {
            return None;
        }
        Some(Webhook {
            secret,
            config,
            metrics,
            deploy,
            tracker: None,
        })
    }

    /// Records every webhook job in `tracker`.
    pub fn with_tracker(mut self, tracker: Arc<RunTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    fn track(&self, record: impl FnOnce(&RunTracker)) {
        if let Some(tracker) = &self.tracker {
            record(tracker);
        }
    }

    /// `/v1/webhook` and `/v1/webhook/{customTarget}`.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/v1/webhook",
                any(|State(hook): State<Webhook>, request: Request| async move {
                    hook.handle(String::new(), request).await
                }),
            )
            .route(
                "/v1/webhook/{customTarget}",
                any(
                    |State(hook): State<Webhook>, Path(target): Path<String>, request: Request| async move {
                        hook.handle(target, request).await
                    },
                ),
            )
            .with_state(self)
    }

    async fn handle(self, target: String, request: Request) -> Response {
        let job_id = uuid::Uuid::now_v7().to_string();
        let span = info_span!("webhook", job_id = %job_id);
        self.handle_in_span(target, request, job_id)
            .instrument(span)
            .await
    }

    async fn handle_in_span(self, target: String, request: Request, job_id: String) -> Response {
        debug!("received webhook event");
        let wait = request
            .uri()
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| *k == "wait")
                    .map(|(_, v)| v.eq_ignore_ascii_case("true") || v == "1")
                    .unwrap_or(false)
            })
            .unwrap_or(false);
        self.track(|t| {
            t.accept(&job_id, RunTrigger::Webhook);
            t.set_metadata(&job_id, "unknown", &target, "");
            if wait {
                t.running(&job_id);
            }
        });
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let ip = client_ip::resolve(
            peer,
            &self.config.trusted_proxy_header,
            request.headers(),
            &self.config.trusted_proxy_networks,
        );
        let refuse = |message: &str, detail: String, status: StatusCode| {
            self.count_error("unknown");
            self.track(|t| t.finish(&job_id, RunStatus::Failed, &format!("{message}: {detail}")));
            error!(%ip, error = %detail, "{message}");
            error_response(status, message, &detail, &job_id)
        };
        if request.method() != Method::POST {
            return refuse(
                "invalid http method",
                "invalid http method".into(),
                StatusCode::METHOD_NOT_ALLOWED,
            );
        }
        let (parts, body) = request.into_parts();
        let limit = usize::try_from(self.config.max_payload_size).unwrap_or(usize::MAX);
        let body = match axum::body::to_bytes(body, limit).await {
            Ok(body) if body.is_empty() => {
                return refuse(
                    "failed to parse payload",
                    "failed to parse payload: request body is empty".into(),
                    StatusCode::BAD_REQUEST,
                );
            }
            Ok(body) => body,
            Err(e) => {
                let (reason, status) = if is_length_limit(&e) {
                    (
                        "http: request body too large".to_string(),
                        StatusCode::PAYLOAD_TOO_LARGE,
                    )
                } else {
                    (e.to_string(), StatusCode::INTERNAL_SERVER_ERROR)
                };
                return refuse(
                    "failed to parse payload",
                    format!("failed to parse payload: {reason}"),
                    status,
                );
            }
        };
        let provider = match verify::verify(&parts.headers, &body, &self.secret) {
            Ok(provider) => provider,
            Err(e) => {
                let (message, status) = match e {
                    VerifyError::MissingHeader => {
                        ("missing signature or token header", StatusCode::BAD_REQUEST)
                    }
                    VerifyError::Hmac(_) => ("incorrect secret key", StatusCode::UNAUTHORIZED),
                    VerifyError::GitlabToken => {
                        ("gitlab token verification failed", StatusCode::UNAUTHORIZED)
                    }
                };
                return refuse(message, e.to_string(), status);
            }
        };
        let payload = match payload::parse(&body, provider) {
            Ok(payload) => payload,
            Err(_) if provider == Provider::Oci => {
                return refuse(
                    "failed to parse payload",
                    "OCI artifact webhooks are not supported by this build".into(),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
            Err(e) => {
                return refuse(
                    "failed to parse payload",
                    e.to_string(),
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        let event = parts
            .headers
            .get(provider.event_header())
            .and_then(|v| v.to_str().ok());
        match payload::is_deletion(provider, event, &payload) {
            Ok(true) => {
                let message = "branch or tag deletion event received, skipping webhook event";
                info!(reference = %payload.reference, "{message}");
                self.track(|t| {
                    t.set_metadata(
                        &job_id,
                        &repository_name(&payload),
                        &target,
                        &revision(&payload),
                    );
                    t.finish(&job_id, RunStatus::Skipped, message);
                });
                return json_response(StatusCode::ACCEPTED, message, &job_id);
            }
            Ok(false) => {}
            Err(e) => {
                let message = "failed to check if event is branch or tag deletion";
                error!(error = %e, "{message}");
                self.track(|t| t.finish(&job_id, RunStatus::Failed, &format!("{message}: {e}")));
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    &e.to_string(),
                    &job_id,
                );
            }
        }
        self.track(|t| {
            t.set_metadata(
                &job_id,
                &repository_name(&payload),
                &target,
                &revision(&payload),
            )
        });
        let job = Job {
            hook: self.clone(),
            job_id: job_id.clone(),
            repository: repository_name(&payload),
            payload,
            target,
        };
        if wait {
            job.run().await
        } else {
            let span = tracing::Span::current();
            tokio::spawn(
                async move {
                    let _ = job.run().await;
                }
                .instrument(span),
            );
            json_response(StatusCode::ACCEPTED, "job accepted", &job_id)
        }
    }

    fn count_error(&self, repository: &str) {
        self.metrics
            .webhook_errors
            .get_or_create(&doco_engine::metrics::repo(repository))
            .inc();
    }
}

/// One accepted webhook: checked and deployed, inline or in the background.
struct Job {
    hook: Webhook,
    job_id: String,
    repository: String,
    payload: Payload,
    target: String,
}

impl Job {
    async fn run(self) -> Response {
        let started = Instant::now();
        self.hook.track(|t| t.running(&self.job_id));
        let payload = &self.payload;
        if payload.reference.is_empty() {
            let message = "no reference provided in webhook payload, skipping event";
            warn!("{message}");
            self.hook
                .track(|t| t.finish(&self.job_id, RunStatus::Failed, message));
            return error_response(StatusCode::BAD_REQUEST, message, message, &self.job_id);
        }
        let config = &self.hook.config;
        let clone_url = normalize_git_url(&payload.clone_url);
        let rewritten = doco_config::rewrite_source_url(&config.source_url_rewrites, &clone_url);
        let rewrite_applied = rewritten.is_some();
        let effective = rewritten.unwrap_or_else(|| clone_url.clone());
        if !rewrite_applied && is_local(&effective) {
            let detail = "local filesystem Git URLs in webhook payloads require a configured source URL rewrite";
            return self.fail(
                StatusCode::FORBIDDEN,
                "webhook clone URL is not allowed",
                detail,
            );
        }
        // The reconciler applies SOURCE_URL_REWRITES itself: hand it the payload's URL.
        let url = if !rewrite_applied && ssh_key_for(config, &payload.ssh_url) {
            payload.ssh_url.trim().to_string()
        } else {
            clone_url
        };
        info!(
            repository = %self.repository,
            reference = %payload.reference,
            commit = %payload.commit,
            target = %self.target,
            url = %doco_git::redact_url(&url),
            "received new repository job"
        );
        let poll = PollConfig {
            url,
            reference: payload.reference.clone(),
            target: self.target.clone(),
            interval: Duration::ZERO,
            run_once: true,
            watch: false,
            deployments: Vec::new(),
            ..PollConfig::default()
        };
        if let Err(e) = (self.hook.deploy)(poll).await {
            let (status, message) = if e.not_found {
                (StatusCode::NOT_FOUND, "failed to get deploy configuration")
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "deployment failed")
            };
            return self.fail(status, message, &e.message);
        }
        let elapsed = started.elapsed();
        let message = "job completed successfully";
        info!(elapsed_ms = elapsed.as_millis() as u64, "{message}");
        let labels = doco_engine::metrics::repo(&self.repository);
        self.hook
            .metrics
            .webhook_requests
            .get_or_create(&labels)
            .inc();
        self.hook
            .metrics
            .webhook_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.hook
            .track(|t| t.finish(&self.job_id, RunStatus::Succeeded, message));
        json_response(StatusCode::CREATED, message, &self.job_id)
    }

    fn fail(&self, status: StatusCode, message: &str, detail: &str) -> Response {
        self.hook.count_error(&self.repository);
        self.hook.track(|t| {
            t.finish(
                &self.job_id,
                RunStatus::Failed,
                &format!("{message}: {detail}"),
            )
        });
        error!(error = %detail, "{message}");
        error_response(status, message, detail, &self.job_id)
    }
}

/// upstream's repository name for a payload: the full name, else the name in the clone URL.
fn repository_name(payload: &Payload) -> String {
    if !payload.full_name.is_empty() {
        payload.full_name.clone()
    } else if !payload.clone_url.is_empty() {
        doco_git::repo_name(&payload.clone_url)
    } else {
        "unknown".to_string()
    }
}

/// The revision a run records: the pushed commit, else the reference.
fn revision(payload: &Payload) -> String {
    if payload.commit.is_empty() {
        payload.reference.clone()
    } else {
        payload.commit.clone()
    }
}

/// An absolute path becomes a `file://` URL, as for `POLL_CONFIG`.
fn normalize_git_url(raw: &str) -> String {
    let url = raw.trim();
    if url.starts_with('/') && !url.contains("://") {
        format!("file://{url}")
    } else {
        url.to_string()
    }
}

fn is_local(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("file://"))
}

/// Whether an SSH key is configured for the host of `ssh_url` (a `GIT_AUTH_DOMAINS` entry for the
/// host, else `SSH_PRIVATE_KEY`), so that upstream would clone over SSH.
fn ssh_key_for(config: &AppConfig, ssh_url: &str) -> bool {
    let Some(host) = ssh_host(ssh_url) else {
        return false;
    };
    let norm = |h: &str| h.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = norm(&host);
    let domains = &config.git_auth_domains;
    let exact = domains
        .iter()
        .find(|d| d.domains.iter().any(|name| norm(name) == host));
    let entry = exact.or_else(|| {
        domains
            .iter()
            .filter_map(|d| {
                d.domains
                    .iter()
                    .filter_map(|name| {
                        let name = norm(name);
                        let suffix = name.strip_prefix("*.")?.to_string();
                        (!suffix.is_empty() && host.ends_with(&format!(".{suffix}")))
                            .then_some(suffix.len())
                    })
                    .max()
                    .map(|len| (d, len))
            })
            .max_by_key(|(_, len)| *len)
            .map(|(d, _)| d)
    });
    entry.and_then(|e| e.ssh_private_key.as_ref()).is_some() || config.ssh_private_key.is_some()
}

/// The host of `ssh://[user@]host[:port]/path` or `user@host:path`.
fn ssh_host(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() {
        return None;
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next()?;
        let host_port = authority.rsplit('@').next()?;
        let host = if let Some(v6) = host_port.strip_prefix('[') {
            v6.split(']').next()?
        } else {
            host_port.split(':').next()?
        };
        return (!host.is_empty()).then(|| host.to_string());
    }
    if url.contains("://") {
        return None;
    }
    let (user_host, _) = url.split_once(':')?;
    let host = user_host.rsplit('@').next()?;
    (!host.is_empty() && !host.contains('/')).then(|| host.to_string())
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("length limit exceeded") {
            return true;
        }
        source = err.source();
    }
    false
}

/// upstream's `{"content":…, "job_id":…}`.
fn json_response(status: StatusCode, content: &str, job_id: &str) -> Response {
    let mut body = Map::new();
    if !content.is_empty() {
        body.insert("content".into(), json!(content));
    }
    if !job_id.is_empty() {
        body.insert("job_id".into(), json!(job_id));
    }
    crate::http::json_response(status, Value::Object(body))
}

/// upstream's `{"error":…, "content":…, "job_id":…}`.
fn error_response(status: StatusCode, error: &str, content: &str, job_id: &str) -> Response {
    let mut body = BTreeMap::new();
    body.insert("error", json!(error));
    if !content.is_empty() {
        body.insert("content", json!(content));
    }
    if !job_id.is_empty() {
        body.insert("job_id", json!(job_id));
    }
    crate::http::json_response(status, json!(body))
}

#[cfg(test)]
mod tests;
