//! A smart-HTTP Git server on 127.0.0.1: `git http-backend` as CGI behind a small HTTP/1.1 server
//! on std threads that can require `Authorization: Basic`, slow every answer down and record what
//! it received.
//!
//! Git-tier tests need a remote that behaves like a real forge (the smart protocol, so shallow
//! fetches work; 401 with `WWW-Authenticate` for a missing or wrong token) and that a test can
//! steer. Every repository under `root` is served (`GIT_HTTP_EXPORT_ALL`) at
//! `http://127.0.0.1:PORT/<path relative to root>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    /// The accepted `Authorization` value (`Basic ...`); `None` serves everyone.
    required: Mutex<Option<String>>,
    /// Delay before each answer, in milliseconds.
    delay_ms: AtomicU64,
    authorizations: Mutex<Vec<String>>,
    requests: Mutex<Vec<String>>,
}

/// A smart-HTTP Git server that stops when dropped.
#[derive(Debug)]
pub struct SmartHttpServer {
    shared: Arc<Shared>,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("SmartHttpServer: cannot bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("SmartHttpServer: local_addr: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("SmartHttpServer: set_nonblocking: {e}"));
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            required: Mutex::new(credentials.map(|(u, t)| basic(u, t))),
            delay_ms: AtomicU64::new(0),
            authorizations: Mutex::new(Vec::new()),
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
                            let shared = Arc::clone(&shared);
                            std::thread::spawn(move || {
                                let _ = handle(stream, &shared);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        SmartHttpServer {
            shared,
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of the repository at `path` (which must lie under the root).
    pub fn repo_url(&self, path: &Path) -> String {
        let rel = path
            .strip_prefix(&self.shared.root)
            .unwrap_or_else(|_| panic!("{} is not under the server root", path.display()));
        format!("{}/{}", self.url(), rel.display())
    }

    pub fn port(&self) -> u16 {
        self.port
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
        self.shared
            .authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for SmartHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let request_line = request_line.trim_end().to_string();
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(request_line.clone());
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut stream = stream;

    if header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }

    let authorization = header("authorization");
    if let Some(a) = &authorization {
        shared
            .authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(a.clone());
    }
    let required = shared
        .required
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(required) = required
        && authorization.as_deref() != Some(required.as_str())
    {
        let body = b"authentication required\n";
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"doco-test\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        return stream.flush();
    }

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body)?;
    }
    let output = child.wait_with_output()?;
    let out = output.stdout;
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
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in cgi_headers.lines() {
        if let Some(s) = line.strip_prefix("Status:") {
            status = s.trim().to_string();
        } else if !line.trim().is_empty() {
            response_headers.push_str(line.trim_end());
            response_headers.push_str("\r\n");
        }
    }
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    )?;
    stream.write_all(cgi_body)?;
    stream.flush()
}
