//! Router tests: every status code of upstream's table, through the real routes, with the deploy
//! replaced by a recorder.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;
use axum::http::header;

const SECRET: &str = "hook-secret";

struct Harness {
    router: Router,
    metrics: Arc<Metrics>,
    deployed: Arc<Mutex<Vec<PollConfig>>>,
}

fn harness_with(env: &[(&str, &str)], outcome: Result<(), DeployFailure>) -> Harness {
    let data = std::env::temp_dir();
    let mut vars = BTreeMap::from([
        ("DATA_MOUNT_PATH".to_string(), data.display().to_string()),
        ("WEBHOOK_SECRET".to_string(), SECRET.to_string()),
    ]);
    for (k, v) in env {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = Arc::new(AppConfig::from_env(&vars).unwrap());
    let metrics = Arc::new(Metrics::new());
    let deployed = Arc::new(Mutex::new(Vec::new()));
    let recorder = deployed.clone();
    let deploy: Deploy = Arc::new(move |poll| {
        recorder.lock().unwrap().push(poll);
        let outcome = outcome.clone();
        Box::pin(async move { outcome })
    });
    let hook = Webhook::new(config, metrics.clone(), deploy).unwrap();
    Harness {
        router: hook.router(),
        metrics,
        deployed,
    }
}

fn harness() -> Harness {
    harness_with(&[], Ok(()))
}

fn push_body(reference: &str, clone_url: &str, before: &str, after: &str) -> Vec<u8> {
    json!({
        "ref": reference,
        "before": before,
        "after": after,
        "repository": {
            "name": "app",
            "full_name": "owner/app",
            "clone_url": clone_url,
            "ssh_url": "git@git.example.com:owner/app.git",
            "html_url": "https://git.example.com/owner/app",
            "private": true
        }
    })
    .to_string()
    .into_bytes()
}

const BEFORE: &str = "ea83e49e436fe8712548c52046bda4a7f87e85cc";
const AFTER: &str = "ebe8be9f3dd800674d7a197a2d55b63d44d82d75";

fn github(path: &str, body: &[u8], signature: Option<String>, event: &str) -> Request<Body> {
    let mut request = Request::post(path);
    if let Some(sig) = signature {
        request = request.header("X-Hub-Signature-256", sig);
    }
    if !event.is_empty() {
        request = request.header("X-GitHub-Event", event);
    }
    request.body(Body::from(body.to_vec())).unwrap()
}

fn signed(path: &str, body: &[u8]) -> Request<Body> {
    github(
        path,
        body,
        Some(format!("sha256={}", verify::sign(body, SECRET))),
        "push",
    )
}

async fn send(router: &Router, request: Request<Body>) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/json; charset=utf-8");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn good_push() -> Vec<u8> {
    push_body(
        "refs/heads/main",
        "https://git.example.com/owner/app.git",
        BEFORE,
        AFTER,
    )
}

#[tokio::test]
async fn sync_success_is_201_and_deploys_the_pushed_reference_like_a_poll() {
    let h = harness();
    let (status, body) = send(&h.router, signed("/v1/webhook?wait=true", &good_push())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["content"], "job completed successfully");
    let job_id = body["job_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(job_id).unwrap().get_version_num(), 7);
    let deployed = h.deployed.lock().unwrap().clone();
    assert_eq!(deployed.len(), 1);
    let poll = &deployed[0];
    assert_eq!(poll.url, "https://git.example.com/owner/app.git");
    assert_eq!(poll.reference, "refs/heads/main");
    assert_eq!(poll.target, "");
    assert!(poll.run_once);
    assert!(poll.interval.is_zero());
    assert!(poll.deployments.is_empty());
    let text = h.metrics.encode();
    assert!(
        text.contains("doco_cd_webhook_requests_total{repository=\"owner/app\"} 1"),
        "{text}"
    );
    assert!(text.contains("doco_cd_webhook_duration_seconds_count{repository=\"owner/app\"} 1"));
}

#[tokio::test]
async fn custom_target_and_wait_1() {
    let h = harness();
    let (status, _) = send(
        &h.router,
        signed("/v1/webhook/staging?wait=1", &good_push()),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(h.deployed.lock().unwrap()[0].target, "staging");
}

#[tokio::test]
async fn async_is_202_with_a_job_id_and_deploys_in_the_background() {
    let h = harness();
    for path in [
        "/v1/webhook",
        "/v1/webhook?wait=false",
        "/v1/webhook?wait=yes",
    ] {
        let (status, body) = send(&h.router, signed(path, &good_push())).await;
        assert_eq!(status, 202, "{path}");
        assert_eq!(body["content"], "job accepted");
        assert!(!body["job_id"].as_str().unwrap().is_empty());
    }
    for _ in 0..100 {
        if h.deployed.lock().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.deployed.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn job_ids_are_unique() {
    let h = harness();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (_, body) = send(&h.router, signed("/v1/webhook", &good_push())).await;
        ids.insert(body["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 20);
}

#[tokio::test]
async fn bad_signature_is_401_and_nothing_deploys() {
    let h = harness();
    let body = good_push();
    let wrong = format!("sha256={}", verify::sign(&body, "other"));
    let (status, json) = send(
        &h.router,
        github("/v1/webhook?wait=true", &body, Some(wrong), "push"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "incorrect secret key");
    assert_eq!(json["content"], "HMAC verification failed");
    assert!(json["job_id"].is_string());
    let request = Request::post("/v1/webhook")
        .header("X-Gitlab-Token", "nope")
        .body(Body::from(good_push()))
        .unwrap();
    let (status, json) = send(&h.router, request).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"], "gitlab token verification failed");
    assert!(h.deployed.lock().unwrap().is_empty());
    let text = h.metrics.encode();
    assert!(
        text.contains("doco_cd_webhook_errors_total{repository=\"unknown\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn missing_signature_is_400() {
    let h = harness();
    let (status, json) = send(&h.router, github("/v1/webhook", &good_push(), None, "push")).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "missing signature or token header");
    assert!(h.deployed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn non_post_is_405() {
    let h = harness();
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/v1/webhook/target")
            .body(Body::empty())
            .unwrap();
        let (status, json) = send(&h.router, request).await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(json["error"], "invalid http method");
    }
}

#[tokio::test]
async fn body_over_max_payload_size_is_413() {
    let h = harness_with(&[("MAX_PAYLOAD_SIZE", "64")], Ok(()));
    let body = good_push();
    assert!(body.len() > 64);
    let (status, json) = send(&h.router, signed("/v1/webhook?wait=true", &body)).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"], "failed to parse payload");
    assert_eq!(
        json["content"],
        "failed to parse payload: http: request body too large"
    );
    assert!(h.deployed.lock().unwrap().is_empty());
    // Exactly at the limit is accepted.
    let h = harness_with(&[("MAX_PAYLOAD_SIZE", &body.len().to_string())], Ok(()));
    let (status, _) = send(&h.router, signed("/v1/webhook?wait=true", &body)).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn empty_body_and_bad_json_are_400() {
    let h = harness();
    let (status, json) = send(&h.router, signed("/v1/webhook", b"")).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "failed to parse payload");
    let (status, json) = send(&h.router, signed("/v1/webhook", b"[not json")).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "failed to parse payload");
    assert!(h.deployed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_push_with_only_forgejo_headers_deploys() {
    let h = harness();
    let body = good_push();
    let request = Request::post("/v1/webhook?wait=true")
        .header("X-Forgejo-Signature", verify::sign(&body, SECRET))
        .header("X-Forgejo-Event", "push")
        .body(Body::from(body))
        .unwrap();
    let (status, _) = send(&h.router, request).await;
    assert_eq!(status, 201);
    assert_eq!(h.deployed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn missing_ref_is_400_when_waiting() {
    let h = harness();
    let body = push_body("", "https://git.example.com/owner/app.git", BEFORE, AFTER);
    let (status, json) = send(&h.router, signed("/v1/webhook?wait=true", &body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        json["error"],
        "no reference provided in webhook payload, skipping event"
    );
    assert!(h.deployed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn deletions_are_202_and_skipped() {
    let h = harness();
    let zero = "0".repeat(40);
    let deleted = push_body(
        "refs/heads/feature",
        "https://git.example.com/owner/app.git",
        BEFORE,
        &zero,
    );
    let (status, json) = send(&h.router, signed("/v1/webhook?wait=true", &deleted)).await;
    assert_eq!(status, 202);
    assert_eq!(
        json["content"],
        "branch or tag deletion event received, skipping webhook event"
    );
    let delete_event =
        json!({"ref": "v1", "ref_type": "tag", "repository": {"full_name": "owner/app"}})
            .to_string()
            .into_bytes();
    let signature = format!("sha256={}", verify::sign(&delete_event, SECRET));
    let (status, _) = send(
        &h.router,
        github(
            "/v1/webhook?wait=true",
            &delete_event,
            Some(signature),
            "delete",
        ),
    )
    .await;
    assert_eq!(status, 202);
    // GitLab: a push hook with no commit after it.
    let gitlab = json!({"ref": "refs/heads/x", "before": BEFORE, "after": zero, "checkout_sha": null,
        "project": {"path_with_namespace": "owner/app", "http_url": "https://gitlab.example.com/owner/app.git"}})
        .to_string();
    let request = Request::post("/v1/webhook?wait=true")
        .header("X-Gitlab-Token", SECRET)
        .header("X-Gitlab-Event", "Push Hook")
        .body(Body::from(gitlab))
        .unwrap();
    let (status, _) = send(&h.router, request).await;
    assert_eq!(status, 202);
    assert!(h.deployed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_event_header_is_500_as_upstream() {
    let h = harness();
    let body = good_push();
    let signature = format!("sha256={}", verify::sign(&body, SECRET));
    let (status, json) = send(
        &h.router,
        github("/v1/webhook?wait=true", &body, Some(signature), ""),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        json["error"],
        "failed to check if event is branch or tag deletion"
    );
    assert_eq!(json["content"], "missing event header for GitHub");
}

#[tokio::test]
async fn local_clone_url_is_403_unless_a_rewrite_produced_it() {
    let h = harness();
    for url in ["file:///etc/repo.git", "/srv/repo.git", "FILE:///x"] {
        let body = push_body("refs/heads/main", url, BEFORE, AFTER);
        let (status, json) = send(&h.router, signed("/v1/webhook?wait=true", &body)).await;
        assert_eq!(status, 403, "{url}");
        assert_eq!(json["error"], "webhook clone URL is not allowed");
    }
    assert!(h.deployed.lock().unwrap().is_empty());
    let text = h.metrics.encode();
    assert!(
        text.contains("doco_cd_webhook_errors_total{repository=\"owner/app\"} 3"),
        "{text}"
    );

    let h = harness_with(
        &[(
            "SOURCE_URL_REWRITES",
            "https://git.example.com/: file:///srv/mirrors/",
        )],
        Ok(()),
    );
    let (status, json) = send(&h.router, signed("/v1/webhook?wait=true", &good_push())).await;
    assert_eq!(status, 201, "{json}");
    // The reconciler applies the rewrite, exactly as for a poll.
    assert_eq!(
        h.deployed.lock().unwrap()[0].url,
        "https://git.example.com/owner/app.git"
    );
}

#[tokio::test]
async fn ssh_url_is_used_when_an_ssh_key_is_configured_and_no_rewrite_applied() {
    let h = harness_with(&[("SSH_PRIVATE_KEY", "KEY")], Ok(()));
    let (status, _) = send(&h.router, signed("/v1/webhook?wait=true", &good_push())).await;
    assert_eq!(status, 201);
    assert_eq!(
        h.deployed.lock().unwrap()[0].url,
        "git@git.example.com:owner/app.git"
    );
    let h = harness_with(
        &[
            ("SSH_PRIVATE_KEY", "KEY"),
            ("SOURCE_URL_REWRITES", "git.example.com: git.internal:3000"),
        ],
        Ok(()),
    );
    let (status, _) = send(&h.router, signed("/v1/webhook?wait=true", &good_push())).await;
    assert_eq!(status, 201);
    assert_eq!(
        h.deployed.lock().unwrap()[0].url,
        "https://git.example.com/owner/app.git"
    );
}

#[tokio::test]
async fn failed_deploy_is_500_with_the_reason() {
    let failure = DeployFailure {
        message: "1 of 1 deployments failed: web".into(),
        not_found: false,
    };
    let h = harness_with(&[], Err(failure));
    let (status, json) = send(&h.router, signed("/v1/webhook?wait=true", &good_push())).await;
    assert_eq!(status, 500);
    assert_eq!(json["error"], "deployment failed");
    assert_eq!(json["content"], "1 of 1 deployments failed: web");
    let text = h.metrics.encode();
    assert!(text.contains("doco_cd_webhook_errors_total{repository=\"owner/app\"} 1"));
    assert!(!text.contains("doco_cd_webhook_requests_total{"));
}

/// A custom target without its file: 404 naming the files, through the reconciler's own mapping
/// of its error, and counted as a webhook error.
#[tokio::test]
async fn a_target_without_its_file_is_404_naming_the_file() {
    let missing = doco_config::DeployConfigError::NoConfigFile {
        dir: "/data/repo".into(),
        target: "nas".into(),
    };
    let h = harness_with(&[], Err((&PollError::from(missing)).into()));
    let (status, json) = send(&h.router, signed("/v1/webhook/nas?wait=true", &good_push())).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"], "failed to get deploy configuration");
    assert_eq!(
        json["content"],
        "no deploy configuration for target `nas`: neither .doco-cd.nas.yaml nor .doco-cd.nas.yml exists in /data/repo"
    );
    assert_eq!(h.deployed.lock().unwrap()[0].target, "nas");
    let text = h.metrics.encode();
    assert!(text.contains("doco_cd_webhook_errors_total{repository=\"owner/app\"} 1"));
}

#[test]
fn ssh_hosts() {
    for (url, host) in [
        ("git@github.com:o/r.git", Some("github.com")),
        ("ssh://git@gitea.local:2222/o/r.git", Some("gitea.local")),
        ("ssh://[::1]:22/o/r", Some("::1")),
        ("https://github.com/o/r.git", None),
        ("", None),
    ] {
        assert_eq!(ssh_host(url).as_deref(), host, "{url}");
    }
}

#[test]
fn disabled_without_a_secret() {
    let vars = BTreeMap::from([("DATA_MOUNT_PATH".to_string(), "/tmp".to_string())]);
    let config = Arc::new(AppConfig::from_env(&vars).unwrap());
    let deploy: Deploy = Arc::new(|_| Box::pin(async { Ok(()) }));
    assert!(Webhook::new(config, Arc::new(Metrics::new()), deploy).is_none());
}
