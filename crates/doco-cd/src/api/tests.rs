//! Router tests of `/v1/api`: authentication, status codes and bodies. The Docker engine here is a
//! socket nobody listens on (routes that need it answer 500); the end-to-end test drives the
//! project routes against the real engine.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use doco_config::AppConfig;
use doco_engine::{Metrics, Reconciler};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Api, RunStatus, RunTracker, RunTrigger};

const KEY: &str = "the-api-key";

struct Fixture {
    router: axum::Router,
    tracker: Arc<RunTracker>,
    _data: tempfile::TempDir,
}

fn fixture_with(secret: Option<&str>, prepare: impl FnOnce(&Path)) -> Fixture {
    let data = tempfile::tempdir().unwrap();
    prepare(data.path());
    let mut env = BTreeMap::from([(
        "DATA_MOUNT_PATH".to_string(),
        data.path().display().to_string(),
    )]);
    if let Some(secret) = secret {
        env.insert("API_SECRET".to_string(), secret.to_string());
    }
    let config = Arc::new(AppConfig::from_env(&env).unwrap());
    let socket = data.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let docker =
        doco_docker::Engine::connect_with_host(&format!("unix://{}", socket.display())).unwrap();
    let compose = doco_docker::Compose::new(BTreeMap::new(), true);
    let reconciler = Arc::new(Reconciler::new(
        config.clone(),
        docker.clone(),
        compose.clone(),
        Arc::new(Metrics::new()),
    ));
    let tracker = Arc::new(RunTracker::default());
    let api = Api::new(
        &config,
        docker.clone(),
        compose,
        reconciler.clone(),
        doco_engine::Scheduler::new().0,
        tracker.clone(),
        jobs(&docker, &reconciler),
    );
    Fixture {
        router: crate::http::api_router(docker, reconciler, None, api),
        tracker,
        _data: data,
    }
}

fn fixture() -> Fixture {
    fixture_with(Some(KEY), |_| {})
}

impl Fixture {
    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, Some(KEY), "").await
    }
}

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/api/runs"),
    ("GET", "/v1/api/run/x"),
    ("GET", "/v1/api/jobs"),
    ("POST", "/v1/api/job/backup/run"),
    ("GET", "/v1/api/projects"),
    ("GET", "/v1/api/project/p"),
    ("DELETE", "/v1/api/project/p"),
    ("POST", "/v1/api/project/p/stop"),
    ("GET", "/v1/api/stacks"),
    ("GET", "/v1/api/stack/s"),
    ("POST", "/v1/api/stack/s/scale"),
    ("POST", "/v1/api/poll/run"),
    ("GET", "/v1/api/repositories"),
];

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_key_with_401() {
    let f = fixture();
    for (method, path) in ROUTES {
        for key in [
            None,
            Some("wrong"),
            Some("the-api-ke"),
            Some("the-api-key "),
        ] {
            let (status, body) = f.send(method, path, key, "[]").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {key:?}");
            assert_eq!(body["error"], "invalid api key", "{method} {path}");
            assert!(!body["job_id"].as_str().unwrap().is_empty());
        }
    }
    // Nothing was run or recorded for refused requests.
    assert!(f.tracker.list(200, None, None).is_empty());
}

#[tokio::test]
async fn the_api_exists_only_with_a_secret() {
    for secret in [None, Some("")] {
        let f = fixture_with(secret, |_| {});
        for (method, path) in ROUTES {
            let (status, _) = f.send(method, path, Some(""), "[]").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} {secret:?}");
        }
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_as_upstream() {
    let f = fixture();
    for (method, path) in [
        ("POST", "/v1/api/runs"),
        ("DELETE", "/v1/api/run/x"),
        ("GET", "/v1/api/poll/run"),
        ("POST", "/v1/api/projects"),
        ("POST", "/v1/api/repositories"),
        ("GET", "/v1/api/job/backup/run"),
    ] {
        // Method before key, as upstream's requireMethod.
        let (status, body) = f.send(method, path, None, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(body["error"], "invalid http method", "{method} {path}");
    }
    // /project/{name} checks the key first, then the method.
    let (status, _) = f.send("PUT", "/v1/api/project/p", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = f.send("PUT", "/v1/api/project/p", Some(KEY), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "invalid http method");
}

#[tokio::test]
async fn runs_lists_filters_and_validates_its_parameters() {
    let f = fixture();
    let (status, body) = f.get("/v1/api/runs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["content"], json!([]));
    assert!(!body["job_id"].as_str().unwrap().is_empty());

    for i in 0..3 {
        f.tracker.accept(&format!("poll-{i}"), RunTrigger::Poll);
    }
    f.tracker.accept("hook", RunTrigger::Webhook);
    f.tracker
        .finish("hook", RunStatus::Succeeded, "job completed successfully");
    let ids = |body: &Value| -> Vec<String> {
        body["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = f.get("/v1/api/runs").await;
    assert_eq!(ids(&body), ["hook", "poll-2", "poll-1", "poll-0"]);
    let (_, body) = f.get("/v1/api/runs?limit=2").await;
    assert_eq!(ids(&body), ["hook", "poll-2"]);
    let (_, body) = f.get("/v1/api/runs?trigger=poll&limit=500").await;
    assert_eq!(ids(&body), ["poll-2", "poll-1", "poll-0"]);
    let (_, body) = f.get("/v1/api/runs?status=SUCCEEDED").await;
    assert_eq!(ids(&body), ["hook"]);
    assert_eq!(body["content"][0]["trigger"], "webhook");
    assert_eq!(body["content"][0]["message"], "job completed successfully");

    for (query, error) in [
        ("limit=0", "invalid parameter: limit"),
        ("limit=x", "invalid parameter: limit"),
        ("status=done", "invalid deployment run status"),
        ("trigger=api", "invalid deployment run trigger"),
    ] {
        let (status, body) = f.get(&format!("/v1/api/runs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"], error, "{query}");
    }

    let (status, body) = f.get("/v1/api/run/hook").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["content"]["job_id"], "hook");
    assert_eq!(body["content"]["status"], "succeeded");
    let (status, body) = f.get("/v1/api/run/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "run not found: nope");
}

#[tokio::test]
async fn poll_run_refuses_bad_bodies_and_records_each_request() {
    let f = fixture();
    for (body, error) in [
        ("{", "failed to decode json in body"),
        (
            "{\"url\": \"https://x/r.git\"}",
            "failed to decode json in body",
        ),
        ("[]", "no poll configuration provided in request body"),
        ("[{\"url\": \"\"}]", "invalid poll configuration at index 0"),
        (
            "[{\"url\": \"https://x/r.git\"}, {\"url\": \"https://x/s.git\", \"source\": \"ftp\"}]",
            "invalid poll configuration at index 1",
        ),
    ] {
        let (status, json) = f.send("POST", "/v1/api/poll/run", Some(KEY), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_eq!(json["error"], error, "{body}");
        let run = f.tracker.get(json["job_id"].as_str().unwrap()).unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.trigger, RunTrigger::Poll);
    }
    let (status, json) = f
        .send("POST", "/v1/api/poll/run?wait=maybe", Some(KEY), "[]")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"], "invalid parameter: wait");
}

#[tokio::test]
async fn poll_run_runs_the_poll_path_and_reports_failures_in_the_run() {
    let f = fixture();
    let missing = tempfile::tempdir().unwrap();
    let url = format!("file://{}/none.git", missing.path().display());
    // An interval below the minimum is ignored: API polls run once with interval 0.
    let body = json!([{"url": url, "reference": "main", "interval": 1}]).to_string();
    let (status, json) = f.send("POST", "/v1/api/poll/run", Some(KEY), &body).await;
    // upstream answers 200 once the polls ended, even when one failed; the run says so.
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["content"], "poll jobs complete");
    let run = f.tracker.get(json["job_id"].as_str().unwrap()).unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.message, "1/1 poll jobs failed");
    assert_eq!(run.repository, doco_git::repo_name(&url));
    assert!(run.finished_at.is_some());

    // Without waiting: 202 at once, the run ends in the background.
    let (status, json) = f
        .send("POST", "/v1/api/poll/run?wait=false", Some(KEY), &body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["content"], "poll jobs started");
    let job = json["job_id"].as_str().unwrap().to_string();
    let mut status = f.tracker.get(&job).unwrap().status;
    for _ in 0..200 {
        if status == RunStatus::Failed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        status = f.tracker.get(&job).unwrap().status;
    }
    assert_eq!(status, RunStatus::Failed);
}

#[tokio::test]
async fn unbuilt_features_answer_501_with_the_reason() {
    let f = fixture();
    for (method, path, what) in [
        ("GET", "/v1/api/stacks", "swarm stacks"),
        ("GET", "/v1/api/stack/s", "swarm stacks"),
        ("DELETE", "/v1/api/stack/s", "swarm stacks"),
        ("POST", "/v1/api/stack/s/restart", "swarm stacks"),
    ] {
        let (status, body) = f.send(method, path, Some(KEY), "").await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{method} {path}");
        assert!(
            body["error"].as_str().unwrap().starts_with(what),
            "{method} {path}: {body}"
        );
    }
}

fn jobs(docker: &doco_docker::Engine, reconciler: &Reconciler) -> doco_engine::jobs::Jobs {
    doco_engine::jobs::Jobs::new(doco_engine::jobs::JobsParts {
        engine: Arc::new(docker.clone()),
        clock: doco_engine::jobs::Clock::System,
        tz: jiff_utc(),
        locks: reconciler.stack_locks(),
        registry: reconciler.registry(),
        metrics: doco_engine::Metrics::new().scheduled.clone(),
        notifier: doco_engine::notify::Notifier::disabled(),
        observer: None,
    })
}

fn jiff_utc() -> doco_engine::jobs::runner::Zone {
    doco_engine::jobs::runner::Zone::UTC
}

#[tokio::test]
async fn job_routes_report_an_unreachable_engine_as_500() {
    let f = fixture();
    let (status, body) = f.get("/v1/api/jobs").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "failed to list scheduled jobs");
    let (status, body) = f
        .send("POST", "/v1/api/job/backup/run", Some(KEY), "")
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "failed to trigger scheduled job run");
}

#[tokio::test]
async fn project_routes_report_an_unreachable_engine_as_500() {
    let f = fixture();
    let (status, body) = f.get("/v1/api/projects").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["content"], "failed to get projects");
    let (status, body) = f.get("/v1/api/project/p").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "failed to get project: p");
    let (status, body) = f
        .send("POST", "/v1/api/project/p/start", Some(KEY), "")
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "failed to get project: p");
    let (status, body) = f.get("/v1/api/projects?all=sometimes").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid parameter: all");
}

#[tokio::test]
async fn repositories_shows_the_last_known_state() {
    let (status, body) = fixture().get("/v1/api/repositories").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["content"], json!([]));

    let f = fixture_with(Some(KEY), |data| {
        let state = json!({
            "version": 1,
            "repositories": {
                "owner/repo#main": {
                    "url": "https://git.example/owner/repo.git",
                    "reference": "main",
                    "checkout": "/data/owner/repo",
                    "commit": "0123456789abcdef0123456789abcdef01234567",
                    "last_success_unix": 1_700_000_000u64,
                    "deployments": {
                        "web": {
                            "project": "web",
                            "commit": "0123456789abcdef0123456789abcdef01234567",
                            "config_hash": "h",
                            "deployed_unix": 1_700_000_000u64,
                            "services": {"app": {"fingerprint": "f", "labels": {}, "must_run": true, "replicas": 1, "compose_hash": null}}
                        }
                    }
                }
            }
        });
        std::fs::create_dir_all(data.join(".doco-cd")).unwrap();
        std::fs::write(data.join(".doco-cd/state.json"), state.to_string()).unwrap();
    });
    let (status, body) = f.get("/v1/api/repositories").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let repo = &body["content"][0];
    assert_eq!(repo["repository"], "owner/repo");
    assert_eq!(repo["reference"], "main");
    assert_eq!(repo["url"], "https://git.example/owner/repo.git");
    assert_eq!(repo["commit"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(repo["last_success_at"], "2023-11-14T22:13:20Z");
    assert_eq!(repo["offline"], false);
    assert_eq!(
        repo["deployments"],
        json!([{"name": "web", "project": "web", "commit": "0123456789abcdef0123456789abcdef01234567", "deployed_at": "2023-11-14T22:13:20Z", "services": ["app"]}])
    );
}

#[tokio::test]
async fn webhook_jobs_are_recorded_in_the_tracker() {
    use hmac::Mac;
    let data = tempfile::tempdir().unwrap();
    let env = BTreeMap::from([
        (
            "DATA_MOUNT_PATH".to_string(),
            data.path().display().to_string(),
        ),
        ("WEBHOOK_SECRET".to_string(), "s".to_string()),
    ]);
    let config = Arc::new(AppConfig::from_env(&env).unwrap());
    let tracker = Arc::new(RunTracker::default());
    let deploy: crate::webhook::Deploy = Arc::new(|_| Box::pin(async { Ok(()) }));
    let hook = crate::webhook::Webhook::new(config, Arc::new(Metrics::new()), deploy)
        .unwrap()
        .with_tracker(tracker.clone());
    let body = json!({
        "ref": "refs/heads/main",
        "after": "0123456789abcdef0123456789abcdef01234567",
        "repository": {"full_name": "owner/repo", "clone_url": "https://git.example/owner/repo.git"}
    })
    .to_string();
    let send = |signature: String| {
        let router = hook.clone().router();
        let request = Request::post("/v1/webhook/prod?wait=true")
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", signature)
            .body(Body::from(body.clone()))
            .unwrap();
        async move { router.oneshot(request).await.unwrap().status() }
    };
    assert_eq!(send("sha256=00".into()).await, StatusCode::UNAUTHORIZED);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s").unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(send(signature).await, StatusCode::CREATED);

    let runs = tracker.list(50, Some(RunTrigger::Webhook), None);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].repository, "owner/repo");
    assert_eq!(runs[0].target, "prod");
    assert_eq!(runs[0].revision, "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(runs[1].status, RunStatus::Failed);
    assert!(
        runs[1].message.starts_with("incorrect secret key"),
        "{}",
        runs[1].message
    );
}
