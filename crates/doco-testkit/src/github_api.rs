//! A local stand-in for the two GitHub API routes a GitHub App client uses:
//! `GET /repos/{owner}/{repo}/installation` (`{"id": N}`) and
//! `POST /app/installations/{id}/access_tokens` (`{"token": ..., "expires_at": ...}`).
//!
//! Each minted token is `<prefix>-<n>` (n counts from 1), valid for a configurable time. The server
//! records every request with its `Authorization` header, so tests can check the JWT and count how
//! often a token was minted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::{HttpServer, Request, Response};

#[derive(Debug)]
struct Shared {
    installation_id: u64,
    token_prefix: String,
    valid_for_secs: AtomicU64,
    minted: AtomicU64,
}

/// The mock API on `127.0.0.1:PORT`, stopped when dropped.
#[derive(Debug)]
pub struct MockGitHubApi {
    shared: Arc<Shared>,
    server: HttpServer,
}

impl MockGitHubApi {
    /// Every repository belongs to `installation_id`; tokens are `<token_prefix>-<n>`, valid 1 h.
    pub fn start(installation_id: u64, token_prefix: &str) -> Self {
        let shared = Arc::new(Shared {
            installation_id,
            token_prefix: token_prefix.to_string(),
            valid_for_secs: AtomicU64::new(3600),
            minted: AtomicU64::new(0),
        });
        let server = {
            let shared = Arc::clone(&shared);
            HttpServer::start(move |request| handle(request, &shared))
        };
        MockGitHubApi { shared, server }
    }

    /// The API base, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// How long tokens minted from now on are valid.
    pub fn set_validity(&self, valid_for: Duration) {
        self.shared
            .valid_for_secs
            .store(valid_for.as_secs(), Ordering::SeqCst);
    }

    /// How many tokens were minted so far.
    pub fn minted(&self) -> u64 {
        self.shared.minted.load(Ordering::SeqCst)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn handle(request: &Request, shared: &Shared) -> Response {
    let bearer = request
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ") && a.matches('.').count() == 2);
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let (status, json) = if !bearer {
        (
            401,
            r#"{"message":"A JSON web token could not be decoded"}"#.to_string(),
        )
    } else {
        match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["repos", _, _, "installation"]) => {
                (200, format!(r#"{{"id":{}}}"#, shared.installation_id))
            }
            ("POST", ["app", "installations", id, "access_tokens"])
                if *id == shared.installation_id.to_string() =>
            {
                let n = shared.minted.fetch_add(1, Ordering::SeqCst) + 1;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let expires = rfc3339(now + shared.valid_for_secs.load(Ordering::SeqCst));
                (
                    201,
                    format!(
                        r#"{{"token":"{}-{n}","expires_at":"{expires}"}}"#,
                        shared.token_prefix
                    ),
                )
            }
            _ => (404, r#"{"message":"Not Found"}"#.to_string()),
        }
    };
    Response::new(status, json).with_header("Content-Type", "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
