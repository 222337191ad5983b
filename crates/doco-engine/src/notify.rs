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

    /// The notifier `APPRISE_*` configure.
    pub fn from_config(config: &doco_config::AppConfig) -> Self {
        Notifier::new(
            config.apprise_api_url.clone(),
            config
                .apprise_notify_urls
                .as_ref()
                .map(|u| u.expose().to_string()),
            Level::parse(&config.apprise_notify_level).unwrap_or(Level::Success),
            config.apprise_notify_repeat_interval,
        )
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
    use doco_testkit::http::RecordingServer;

    /// The Apprise API endpoint on `server`.
    fn notify_url(server: &RecordingServer) -> String {
        format!("{}/notify", server.url())
    }

    /// The `body` fields of the notifications `server` received, in order.
    fn bodies(server: &RecordingServer) -> Vec<String> {
        server
            .json_bodies()
            .iter()
            .map(|b| b["body"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn posts_upstreams_apprise_request() {
        let server = RecordingServer::start();
        let notifier = Notifier::new(
            Some(notify_url(&server)),
            Some("ntfy://topic".into()),
            Level::Info,
            Duration::from_secs(3600),
        );
        notifier
            .send(Level::Warning, "repo", "Repository unreachable", "details")
            .await;
        let received = server.json_bodies();
        assert_eq!(received.len(), 1, "{received:?}");
        let body = &received[0];
        assert_eq!(body["urls"], "ntfy://topic");
        assert_eq!(body["title"], "⚠️ Repository unreachable");
        assert_eq!(body["body"], "details");
        assert_eq!(body["type"], "warning");
    }

    #[tokio::test]
    async fn repeated_failures_are_suppressed_until_a_success() {
        let server = RecordingServer::start();
        let notifier = Notifier::new(
            Some(notify_url(&server)),
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
        // Each send awaited the server's answer, and the server records a request before answering.
        assert_eq!(bodies(&server), vec!["1", "3", "4", "5"]);
    }

    /// `APPRISE_NOTIFY_REPEAT_INTERVAL`: an unchanged failure is sent again once the interval has
    /// passed, and every time with `0`.
    #[tokio::test]
    async fn apprise_notify_repeat_interval_repeats_an_unchanged_failure_after_it() {
        let server = RecordingServer::start();
        let notifier = |interval: &str| {
            let vars = std::collections::BTreeMap::from([
                ("APPRISE_API_URL".to_string(), notify_url(&server)),
                ("APPRISE_NOTIFY_URLS".to_string(), "x://y".to_string()),
                (
                    "APPRISE_NOTIFY_REPEAT_INTERVAL".to_string(),
                    interval.to_string(),
                ),
            ]);
            Notifier::from_config(&doco_config::AppConfig::from_env(&vars).unwrap())
        };
        let every = notifier("0s");
        for body in ["1", "2"] {
            every
                .send(Level::Failure, "repo/web", "Deployment failed", body)
                .await;
        }
        let spaced = notifier("300ms");
        for body in ["3", "4"] {
            spaced
                .send(Level::Failure, "repo/web", "Deployment failed", body)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        spaced
            .send(Level::Failure, "repo/web", "Deployment failed", "5")
            .await;
        assert_eq!(bodies(&server), vec!["1", "2", "3", "5"]);
    }

    #[tokio::test]
    async fn levels_below_the_minimum_are_not_sent() {
        let server = RecordingServer::start();
        let notifier = Notifier::new(
            Some(notify_url(&server)),
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
        assert_eq!(bodies(&server), vec!["loud"]);
    }

    #[test]
    fn parses_upstreams_level_names() {
        assert_eq!(Level::parse("SUCCESS"), Some(Level::Success));
        assert_eq!(Level::parse("failure"), Some(Level::Failure));
        assert_eq!(Level::parse("loud"), None);
    }
}
