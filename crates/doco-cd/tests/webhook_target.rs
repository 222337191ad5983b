//! Black-box: a target without its `.doco-cd.<target>.y(a)ml` is an error naming the file, for a
//! webhook (404, nothing deployed) and for a `POLL_CONFIG` entry (a failed poll); and a target full
//! of control characters reaches the log escaped, never raw.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // The harness is shared; this file uses part of it.
mod support;

use std::time::Duration;

use doco_testkit::docker::{ProjectGuard, container_ids, require_docker, test_image};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, http_request, sleep_services};

const SECRET: &str = "webhook-target-secret";

/// A signed GitHub push of `commit` to `main` of the repository at `clone_url`.
fn signed_push(commit: &str, clone_url: &str) -> (String, String) {
    use hmac::Mac;
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "repository": {
            "name": "repo",
            "full_name": "target/repo",
            "clone_url": clone_url,
            "ssh_url": "",
            "html_url": clone_url,
            "private": false
        }
    })
    .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}

fn post(daemon: &Daemon, path: &str, body: &str, signature: &str) -> (u16, serde_json::Value) {
    http_request(
        daemon.http_port,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", signature),
        ],
        body,
    )
}

#[test]
fn a_target_without_its_file_fails_naming_it_and_its_name_is_logged_escaped() {
    if !require_docker() {
        return;
    }
    let project = unique_name("webhook-target");
    let _guard = ProjectGuard::new(&project);
    let (repo, commit) =
        HttpRepo::with_stack(&project, &sleep_services(&test_image(), &[("web", "7201")]));
    let data = tempfile::tempdir().unwrap();
    let poll = format!(
        "- url: {}\n  reference: main\n  interval: 1h\n  target: pi\n",
        repo.url()
    );
    let daemon = Daemon::start(
        data.path(),
        &[
            ("WEBHOOK_SECRET", SECRET.to_string()),
            ("POLL_CONFIG", poll),
        ],
    );
    let (body, signature) = signed_push(&commit, &repo.url());

    // The webhook names a target whose file does not exist: 404 naming the files, nothing deployed.
    let (status, json) = post(&daemon, "/v1/webhook/nas?wait=true", &body, &signature);
    assert_eq!(status, 404, "{json}\n{}", daemon.log());
    assert_eq!(json["error"], "failed to get deploy configuration");
    let content = json["content"].as_str().unwrap();
    assert!(
        content.starts_with(
            "no deploy configuration for target `nas`: neither .doco-cd.nas.yaml nor .doco-cd.nas.yml exists in "
        ),
        "{content}"
    );
    assert!(container_ids(&project, "web").is_empty());

    // The poll of a target without its file fails with the same error.
    daemon.wait_for("the failed poll", Duration::from_secs(60), || {
        daemon.metric("doco_cd_poll_errors_total", &[]) >= 1.0
    });
    assert!(
        daemon
            .log()
            .contains("neither .doco-cd.pi.yaml nor .doco-cd.pi.yml exists"),
        "{}",
        daemon.log()
    );
    assert!(container_ids(&project, "web").is_empty());

    // A target of NUL, ESC and newline is refused the same way, and logged escaped.
    let (status, json) = post(
        &daemon,
        "/v1/webhook/n%00a%1b[31m%0Aforged?wait=true",
        &body,
        &signature,
    );
    assert_eq!(status, 404, "{json}");
    let log = daemon.log();
    assert!(
        log.contains(r"n\0a\u{1b}[31m\nforged"),
        "the target is not in the log, escaped:\n{log}"
    );
    let raw: Vec<char> = log
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{log}");
    assert!(
        !log.lines().any(|line| line.starts_with("forged")),
        "a forged line:\n{log}"
    );
}
