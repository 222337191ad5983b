//! A local stand-in for the two GitHub API routes a GitHub App client uses:
//! `GET /repos/{owner}/{repo}/installation` (`{"id": N}`) and
//! `POST /app/installations/{id}/access_tokens` (`{"token": ..., "expires_at": ...}`).
//!
//! Each minted token is `<prefix>-<n>` (n counts from 1), valid for a configurable time. The server
//! records every request with its `Authorization` header, so tests can check the JWT and count how
//! often a token was minted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Debug)]
struct Shared {
    installation_id: u64,
    token_prefix: String,
    valid_for_secs: AtomicU64,
    minted: AtomicU64,
    requests: Mutex<Vec<ApiRequest>>,
}

/// The mock API on `127.0.0.1:PORT`, stopped when dropped.
#[derive(Debug)]
pub struct MockGitHubApi {
    shared: Arc<Shared>,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockGitHubApi {
    /// Every repository belongs to `installation_id`; tokens are `<token_prefix>-<n>`, valid 1 h.
    pub fn start(installation_id: u64, token_prefix: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("MockGitHubApi: cannot bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("MockGitHubApi: local_addr: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("MockGitHubApi: set_nonblocking: {e}"));
        let shared = Arc::new(Shared {
            installation_id,
            token_prefix: token_prefix.to_string(),
            valid_for_secs: AtomicU64::new(3600),
            minted: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = handle(stream, &shared);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        MockGitHubApi {
            shared,
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The API base, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for MockGitHubApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

fn handle(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_string()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ApiRequest {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
        });
    let bearer = authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer ") && a.matches('.').count() == 2);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, json) = if !bearer {
        (
            "401 Unauthorized",
            r#"{"message":"A JSON web token could not be decoded"}"#.to_string(),
        )
    } else {
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["repos", _, _, "installation"]) => {
                ("200 OK", format!(r#"{{"id":{}}}"#, shared.installation_id))
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
                    "201 Created",
                    format!(
                        r#"{{"token":"{}-{n}","expires_at":"{expires}"}}"#,
                        shared.token_prefix
                    ),
                )
            }
            _ => ("404 Not Found", r#"{"message":"Not Found"}"#.to_string()),
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    stream.flush()
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
