//! Notifications through an Apprise API server, as upstream sends them (`APPRISE_API_URL`,
//! `APPRISE_NOTIFY_URLS`, `APPRISE_NOTIFY_LEVEL`, `APPRISE_NOTIFY_REPEAT_INTERVAL`): a JSON POST of
//! `{urls, title, body, type}` with the level's emoji in the title.
//!
//! Failures repeat at most once per repeat interval for the same subject (a repository, or a
//! repository's stack); a success clears the suppression. Sending never blocks a poll for long and
//! never fails it: a notification that cannot be delivered is logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

/// Notification levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Informational.
    Info,
    /// Something succeeded.
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Failure,
}

impl Level {
    /// upstream's names: info, success, warning, failure.
    pub fn parse(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "success" => Some(Level::Success),
            "warning" => Some(Level::Warning),
            "failure" => Some(Level::Failure),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Failure => "failure",
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            Level::Info => "ℹ️",
            Level::Success => "✅",
            Level::Warning => "⚠️",
            Level::Failure => "❌",
        }
    }
}

#[derive(Serialize)]
struct AppriseRequest<'a> {
    urls: &'a str,
    title: String,
    body: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

struct Target {
    api_url: String,
    urls: String,
    client: reqwest::Client,
}

/// Sends notifications, or nothing when Apprise is not configured.
pub struct Notifier {
    target: Option<Target>,
    min_level: Level,
    repeat_interval: Duration,
    last_failure: Mutex<HashMap<String, Instant>>,
}

impl Notifier {
    /// A notifier posting to `api_url` for `urls`; `None` for either disables it.
    pub fn new(
        api_url: Option<String>,
        urls: Option<String>,
        min_level: Level,
        repeat_interval: Duration,
    ) -> Self {
        let target = match (api_url, urls) {
            (Some(api_url), Some(urls)) => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| warn!(error = %e, "cannot create the HTTP client for notifications"))
                .ok()
                .map(|client| Target {
                    api_url,
                    urls,
                    client,
                }),
            _ => None,
        };
        Notifier {
            target,
            min_level,
            repeat_interval,
            last_failure: Mutex::new(HashMap::new()),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::new(None, None, Level::Info, Duration::ZERO)
    }

    /// Sends a notification about `subject` (a repository or `repository/stack`). Failures of the
    /// same subject repeat at most once per repeat interval; any other level clears that suppression.
    pub async fn send(&self, level: Level, subject: &str, title: &str, body: &str) {
        if !self.admit(level, subject) {
            return;
        }
        let Some(target) = &self.target else {
            return;
        };
        if level < self.min_level {
            return;
        }
        let request = AppriseRequest {
            urls: &target.urls,
            title: format!("{} {title}", level.emoji()),
            body,
            kind: level.name(),
        };
        let sent = target
            .client
            .post(&target.api_url)
            .json(&request)
            .send()
            .await;
        match sent.map(|r| r.error_for_status()) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) | Err(e) => {
                // reqwest's errors name the URL; Apprise URLs can carry tokens, the API URL should not.
                warn!(error = %e.without_url(), api = %target.api_url, "could not deliver a notification");
            }
        }
    }

    fn admit(&self, level: Level, subject: &str) -> bool {
        let mut last = self
            .last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if level != Level::Failure {
            last.remove(subject);
            return true;
        }
        let now = Instant::now();
        match last.get(subject) {
            Some(at) if now.duration_since(*at) < self.repeat_interval => false,
            _ => {
                last.insert(subject.to_string(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-purpose Apprise stand-in: answers 200 and hands each request body to the test.
    async fn capture_server() -> (
        String,
        tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            tx.send(serde_json::from_str(body).unwrap()).unwrap();
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn posts_upstreams_apprise_request() {
        let (url, mut rx) = capture_server().await;
        let notifier = Notifier::new(
            Some(url),
            Some("ntfy://topic".into()),
            Level::Info,
            Duration::from_secs(3600),
        );
        notifier
            .send(Level::Warning, "repo", "Repository unreachable", "details")
            .await;
        let body = rx.recv().await.unwrap();
        assert_eq!(body["urls"], "ntfy://topic");
        assert_eq!(body["title"], "⚠️ Repository unreachable");
        assert_eq!(body["body"], "details");
        assert_eq!(body["type"], "warning");
    }

    #[tokio::test]
    async fn repeated_failures_are_suppressed_until_a_success() {
        let (url, mut rx) = capture_server().await;
        let notifier = Notifier::new(
            Some(url),
            Some("x://y".into()),
            Level::Info,
            Duration::from_secs(3600),
        );
        notifier
            .send(Level::Failure, "repo/web", "Deployment failed", "1")
            .await;
        notifier
            .send(Level::Failure, "repo/web", "Deployment failed", "2")
            .await;
        notifier
            .send(Level::Failure, "repo/db", "Deployment failed", "3")
            .await;
        notifier
            .send(Level::Success, "repo/web", "Deployed", "4")
            .await;
        notifier
            .send(Level::Failure, "repo/web", "Deployment failed", "5")
            .await;
        let bodies: Vec<String> = (0..4)
            .map(|_| {
                rx.try_recv()
                    .map(|b| b["body"].as_str().unwrap().to_string())
            })
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(bodies, vec!["1", "3", "4", "5"]);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn levels_below_the_minimum_are_not_sent() {
        let (url, mut rx) = capture_server().await;
        let notifier = Notifier::new(
            Some(url),
            Some("x://y".into()),
            Level::Warning,
            Duration::ZERO,
        );
        notifier
            .send(Level::Success, "repo", "Deployed", "quiet")
            .await;
        notifier
            .send(Level::Failure, "repo", "Failed", "loud")
            .await;
        assert_eq!(rx.recv().await.unwrap()["body"], "loud");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn parses_upstreams_level_names() {
        assert_eq!(Level::parse("SUCCESS"), Some(Level::Success));
        assert_eq!(Level::parse("failure"), Some(Level::Failure));
        assert_eq!(Level::parse("loud"), None);
    }
}
