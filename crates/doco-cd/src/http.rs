//! The HTTP surface, on upstream's ports and routes: `/v1/health` on `HTTP_PORT` (200 when the Docker
//! engine answers, 503 with the reason otherwise, JSON shaped as upstream's), the webhook
//! `/v1/webhook[/{customTarget}]` when `WEBHOOK_SECRET` is set (see [`crate::webhook`]), the REST
//! API `/v1/api/*` when `API_SECRET` is set (see [`crate::api`]), and `/metrics` on `METRICS_PORT`. Also the client side of `doco-cd healthcheck`.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use doco_config::AppConfig;
use doco_engine::{Metrics, Reconciler, Scheduler};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Clone)]
struct AppState {
    docker: doco_docker::Engine,
    reconciler: Arc<Reconciler>,
}

/// What the routes act on: the daemon's engine clients, metrics, reconciler, scheduler, run tracker
/// and job scheduler, built once at start-up.
pub struct Backend {
    /// The Engine API client.
    pub docker: doco_docker::Engine,
    /// The compose driver.
    pub compose: doco_docker::Compose,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The reconciler (its state, for the API's views).
    pub reconciler: Arc<Reconciler>,
    /// The queue every trigger takes.
    pub scheduler: Scheduler,
    /// The runs of `GET /v1/api/runs`.
    pub tracker: Arc<crate::api::RunTracker>,
    /// The scheduled jobs.
    pub jobs: doco_engine::jobs::Jobs,
}

/// Binds both servers and serves them until `shutdown`; the returned future ends when both stopped.
pub async fn serve(
    config: &AppConfig,
    backend: Backend,
    shutdown: CancellationToken,
) -> anyhow::Result<impl Future<Output = ()>> {
    let Backend {
        docker,
        compose,
        metrics,
        reconciler,
        scheduler,
        tracker,
        jobs,
    } = backend;
    let webhook = crate::webhook::Webhook::new(
        Arc::new(config.clone()),
        metrics.clone(),
        crate::webhook::scheduler_deploy(scheduler.clone()),
    )
    .map(|hook| hook.with_tracker(tracker.clone()));
    if webhook.is_none() {
        info!("webhook endpoints disabled, no webhook secret configured");
    }
    let rest = crate::api::Api::new(
        config,
        docker.clone(),
        compose,
        reconciler.clone(),
        scheduler,
        tracker,
        jobs,
    );
    if rest.is_none() {
        info!("api endpoints disabled, no api secret configured");
    }
    let api = api_router(docker, reconciler, webhook, rest);
    let metrics_app = Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics);
    let tls = match (&config.http_tls_cert_file, &config.http_tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let api = bind(
        config.http_port,
        "HTTP_PORT",
        api,
        tls.clone(),
        shutdown.clone(),
    )
    .await?;
    let metrics = bind(
        config.metrics_port,
        "METRICS_PORT",
        metrics_app,
        tls,
        shutdown,
    )
    .await?;
    Ok(async move {
        let _ = tokio::join!(api, metrics);
    })
}

/// The routes on `HTTP_PORT`. Without a webhook secret the webhook routes do not exist (404), nor
/// the API routes without an API secret, as upstream registers them only with a secret.
pub(crate) fn api_router(
    docker: doco_docker::Engine,
    reconciler: Arc<Reconciler>,
    webhook: Option<crate::webhook::Webhook>,
    rest: Option<crate::api::Api>,
) -> Router {
    let mut router = Router::new()
        .route("/v1/health", any(health))
        .with_state(AppState { docker, reconciler });
    if let Some(webhook) = webhook {
        router = router.merge(webhook.router());
    }
    if let Some(rest) = rest {
        router = router.merge(rest.router());
    }
    router
}

async fn bind(
    port: u16,
    variable: &str,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({variable})"))?;
    info!(%addr, tls = tls.is_some(), "listening");
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.cancelled_owned();
    Ok(tokio::spawn(async move {
        let served = match tls {
            Some(config) => {
                // `tap_io` keeps `ConnectInfo<SocketAddr>` (the peer address) for TLS connections.
                let listener = crate::tls::TlsListener::new(listener, config).tap_io(|_| {});
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(e) = served {
            error!(%addr, error = %e, "HTTP server failed");
        }
    }))
}

async fn health(State(state): State<AppState>) -> Response {
    let offline: Vec<String> = state
        .reconciler
        .offline_repositories()
        .into_iter()
        .collect();
    match state.docker.ping().await {
        Ok(()) => json_response(
            StatusCode::OK,
            json!({"content": "healthy", "offline_repositories": offline}),
        ),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "docker engine unreachable", "content": e.to_string()}),
        ),
    }
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// A JSON answer as upstream writes them: `application/json; charset=utf-8`, `nosniff`, and the
/// body ended by a newline (its encoder's). Every route of `HTTP_PORT` answers through this.
pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

/// `doco-cd healthcheck`: GET /v1/health on the local HTTP_PORT (https when HTTP_TLS_CERT_FILE is
/// set, as upstream); success when it answers 200.
pub async fn healthcheck() -> anyhow::Result<ExitCode> {
    let port: u16 = match std::env::var("HTTP_PORT") {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("HTTP_PORT: invalid value {value:?}"))?,
        Err(_) => 80,
    };
    let tls = std::env::var("HTTP_TLS_CERT_FILE").is_ok_and(|v| !v.trim().is_empty());
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}/v1/health");
    // The certificate names the public host, not 127.0.0.1: this local check does not verify it.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .context("cannot create the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status == StatusCode::OK {
        println!("healthy");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("unhealthy: {status} {body}");
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn health_is_503_with_the_reason_when_docker_does_not_answer() {
        let data = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([(
            "DATA_MOUNT_PATH".to_string(),
            data.path().display().to_string(),
        )]);
        let config = Arc::new(AppConfig::from_env(&env).unwrap());
        // A socket file nobody listens on any more: the engine "went away".
        let socket = data.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let host = format!("unix://{}", socket.display());
        let docker = doco_docker::Engine::connect_with_host(&host).unwrap();
        let reconciler = Arc::new(Reconciler::new(
            config,
            docker.clone(),
            doco_docker::Compose::new(BTreeMap::new(), true),
            Arc::new(Metrics::new()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, api_router(docker, reconciler, None, None)).await
        });

        let (status, body) = get(addr, "/v1/health").await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "docker engine unreachable");
        let reason = body["content"].as_str().unwrap();
        assert!(reason.contains("dead.sock"), "{reason}");
    }

    #[tokio::test]
    async fn webhook_routes_exist_only_with_a_secret() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let data = tempfile::tempdir().unwrap();
        let socket = data.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let host = format!("unix://{}", socket.display());
        let router = |secret: Option<&str>| {
            let mut env = BTreeMap::from([(
                "DATA_MOUNT_PATH".to_string(),
                data.path().display().to_string(),
            )]);
            if let Some(secret) = secret {
                env.insert("WEBHOOK_SECRET".to_string(), secret.to_string());
            }
            let config = Arc::new(AppConfig::from_env(&env).unwrap());
            let docker = doco_docker::Engine::connect_with_host(&host).unwrap();
            let metrics = Arc::new(Metrics::new());
            let reconciler = Arc::new(Reconciler::new(
                config.clone(),
                docker.clone(),
                doco_docker::Compose::new(BTreeMap::new(), true),
                metrics.clone(),
            ));
            let webhook = crate::webhook::Webhook::new(
                config,
                metrics,
                crate::webhook::scheduler_deploy(Scheduler::new().0),
            );
            api_router(docker, reconciler, webhook, None)
        };
        for path in ["/v1/webhook", "/v1/webhook/target"] {
            let request = || Request::post(path).body(Body::from("{}")).unwrap();
            let disabled = router(None).oneshot(request()).await.unwrap();
            assert_eq!(disabled.status(), StatusCode::NOT_FOUND, "{path}");
            // Enabled: the route answers (no signature header: 400).
            let enabled = router(Some("s")).oneshot(request()).await.unwrap();
            assert_eq!(enabled.status(), StatusCode::BAD_REQUEST, "{path}");
        }
    }
}
