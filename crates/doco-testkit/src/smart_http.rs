//! A smart-HTTP Git server on 127.0.0.1: `git http-backend` as CGI behind the test kit's
//! [`HttpServer`], which can require `Authorization: Basic`, slow every answer down and record what
//! it received.
//!
//! Git-tier tests need a remote that behaves like a real forge (the smart protocol, so shallow
//! fetches work; 401 with `WWW-Authenticate` for a missing or wrong token) and that a test can
//! steer. Every repository under `root` is served (`GIT_HTTP_EXPORT_ALL`) at
//! `http://127.0.0.1:PORT/<path relative to root>`. Request bodies may come chunked (git streams
//! large pushes and fetch negotiations); [`HttpServer`] de-chunks them for the CGI.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use crate::http::{HttpServer, Request, Response};

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    /// The accepted `Authorization` value (`Basic ...`); `None` serves everyone.
    required: Mutex<Option<String>>,
    /// Delay before each answer, in milliseconds.
    delay_ms: AtomicU64,
}

/// A smart-HTTP Git server that stops when dropped.
#[derive(Debug)]
pub struct SmartHttpServer {
    shared: Arc<Shared>,
    server: HttpServer,
}

/// `Basic base64(user:token)`.
pub fn basic(user: &str, token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
    )
}

impl SmartHttpServer {
    /// Serves every repository under `root`; with `credentials`, only requests carrying them.
    pub fn start(root: &Path, credentials: Option<(&str, &str)>) -> Self {
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            required: Mutex::new(credentials.map(|(u, t)| basic(u, t))),
            delay_ms: AtomicU64::new(0),
        });
        let server = {
            let shared = Arc::clone(&shared);
            HttpServer::start(move |request| handle(request, &shared))
        };
        SmartHttpServer { shared, server }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The URL of the repository at `path` (which must lie under the root).
    pub fn repo_url(&self, path: &Path) -> String {
        let rel = path
            .strip_prefix(&self.shared.root)
            .unwrap_or_else(|_| panic!("{} is not under the server root", path.display()));
        format!("{}/{}", self.url(), rel.display())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Changes the accepted credentials (`None`: no authentication).
    pub fn set_credentials(&self, credentials: Option<(&str, &str)>) {
        *self
            .shared
            .required
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = credentials.map(|(u, t)| basic(u, t));
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The `Authorization` values received so far.
    pub fn authorizations(&self) -> Vec<String> {
        crate::http::authorizations(&self.server)
    }

    /// The request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        crate::http::request_lines(&self.server)
    }
}

fn handle(request: &Request, shared: &Shared) -> Response {
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let required = shared
        .required
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(required) = required
        && request.header("authorization") != Some(required.as_str())
    {
        return Response::new(401, "authentication required\n")
            .with_header("WWW-Authenticate", "Basic realm=\"doco-test\"");
    }
    match http_backend(request, &shared.root) {
        Ok(response) => response,
        Err(e) => Response::new(500, format!("git http-backend: {e}\n")),
    }
}

/// Runs `git http-backend` for `request` and turns its CGI output into a response.
fn http_backend(request: &Request, root: &Path) -> std::io::Result<Response> {
    let (path, query) = request.path_and_query();
    let header = |name: &str| request.header(name).unwrap_or_default();
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &request.method)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&request.body)?;
    }
    let out = child.wait_with_output()?.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let (cgi_headers, cgi_body) = match split {
        Some((p, n)) => (
            String::from_utf8_lossy(&out[..p]).into_owned(),
            &out[p + n..],
        ),
        None => (String::new(), &out[..]),
    };
    let mut response = Response::new(200, cgi_body);
    for line in cgi_headers.lines() {
        if let Some(status) = line.strip_prefix("Status:") {
            let code = status.split_whitespace().next().unwrap_or("");
            response.status = code.parse().unwrap_or(500);
        } else if let Some((name, value)) = line.split_once(':') {
            response = response.with_header(name.trim(), value.trim());
        }
    }
    Ok(response)
}
