//! A tiny read-only HTTP/1.1 file server on 127.0.0.1, enough for git's dumb HTTP protocol.
//!
//! Git-tier tests need a remote that can be reachable, unreachable (connection refused), failing
//! (HTTP 5xx) or hanging (accepts and never answers), switched at will within one test. A real server
//! (python, busybox httpd) cannot be driven that precisely, so this one runs on a std thread: the
//! listener is non-blocking and polled, so [`StaticHttpServer::stop`] closes the socket at once and
//! [`StaticHttpServer::restart`] binds the same port again.
//!
//! Every request is answered with `Connection: close`. The query string is ignored, so git's
//! `info/refs?service=git-upload-pack` probe gets the plain `info/refs` file and git falls back to the
//! dumb protocol.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server does with each accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Hang,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    mode: Mode,
    /// 0 means "no override".
    status_override: AtomicU16,
    /// Requests seen so far (request lines), for tests that want to look at them.
    requests: Mutex<Vec<String>>,
    /// Values of the `Authorization` headers received so far.
    authorizations: Mutex<Vec<String>>,
}

/// A static file server on `127.0.0.1:<port>` that stops when dropped.
#[derive(Debug)]
pub struct StaticHttpServer {
    shared: Arc<Shared>,
    port: u16,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl StaticHttpServer {
    /// Serves the files under `root` (GET and HEAD; 200 with Content-Length, 404 when missing).
    pub fn start(root: &Path) -> Self {
        Self::start_mode(root.to_path_buf(), Mode::Serve)
    }

    /// A server that accepts connections and never answers, to test timeouts.
    pub fn start_hanging() -> Self {
        Self::start_mode(PathBuf::from("/nonexistent"), Mode::Hang)
    }

    fn start_mode(root: PathBuf, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("StaticHttpServer: cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("StaticHttpServer: local_addr: {e}"))
            .port();
        let shared = Arc::new(Shared {
            root,
            mode,
            status_override: AtomicU16::new(0),
            requests: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
        });
        let running = spawn(listener, Arc::clone(&shared));
        StaticHttpServer {
            shared,
            port,
            running: Some(running),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across [`StaticHttpServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes the listening socket; connecting afterwards is refused at once.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            running
                .thread
                .join()
                .unwrap_or_else(|_| panic!("StaticHttpServer: the server thread panicked"));
        }
    }

    /// Listens on the same port again after [`StaticHttpServer::stop`].
    pub fn restart(&mut self) {
        self.stop();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        // The port was ours a moment ago; retry briefly in case the kernel still holds it.
        let mut last_err = None;
        for _ in 0..50 {
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    self.running = Some(spawn(listener, Arc::clone(&self.shared)));
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "StaticHttpServer: cannot bind {addr} again: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        );
    }

    /// Answers every request with `status` (and a short body) while set; `None` serves files again.
    pub fn set_status_override(&self, status: Option<u16>) {
        self.shared
            .status_override
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// The `Authorization` header values received so far (the server never checks them).
    pub fn authorizations(&self) -> Vec<String> {
        self.shared
            .authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The request lines (`GET /path HTTP/1.1`) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for StaticHttpServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            // Never panic in drop (it may run while a test is already unwinding).
            let _ = running.thread.join();
        }
    }
}

fn spawn(listener: TcpListener, shared: Arc<Shared>) -> Running {
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("StaticHttpServer: set_nonblocking: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::spawn(move || accept_loop(listener, shared, thread_stop));
    Running { stop, thread }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    // Connections held open by a hanging server; dropped (closed) when the server stops.
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.mode == Mode::Hang {
                    held.push(stream);
                    continue;
                }
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    // A client that goes away mid-request is not the server's problem.
                    let _ = handle(stream, &shared);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    drop(held);
    drop(listener);
}

fn handle(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers: only `Authorization` is kept (for tests of credential handling).
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("authorization")
        {
            shared
                .authorizations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(value.trim().to_string());
        }
    }
    let request_line = request_line.trim_end().to_string();
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(request_line.clone());

    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let mut stream = stream;

    let status = shared.status_override.load(Ordering::SeqCst);
    if status != 0 {
        let body = format!("status {status} (override)\n");
        return respond(&mut stream, status, body.as_bytes(), method == "HEAD");
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, b"method not allowed\n", false);
    }
    match resolve(&shared.root, target).and_then(|p| std::fs::read(p).ok()) {
        Some(body) => respond(&mut stream, 200, &body, method == "HEAD"),
        None => respond(&mut stream, 404, b"not found\n", method == "HEAD"),
    }
}

/// Maps a request target to a regular file under `root`, refusing `..` and directories.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut full = root.to_path_buf();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(part) => full.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    full.is_file().then_some(full)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(port: u16, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn serves_files_404s_overrides_stops_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("info")).unwrap();
        std::fs::write(dir.path().join("info/refs"), "abc\n").unwrap();
        let mut server = StaticHttpServer::start(dir.path());
        let port = server.port();

        let ok = get(port, "/info/refs?service=git-upload-pack").unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("Content-Length: 4") && ok.ends_with("abc\n"),
            "{ok}"
        );
        assert!(get(port, "/missing").unwrap().starts_with("HTTP/1.1 404"));
        assert!(get(port, "/info").unwrap().starts_with("HTTP/1.1 404"));
        assert!(
            get(port, "/../etc/passwd")
                .unwrap()
                .starts_with("HTTP/1.1 404")
        );

        server.set_status_override(Some(503));
        assert!(get(port, "/info/refs").unwrap().starts_with("HTTP/1.1 503"));
        server.set_status_override(None);

        server.stop();
        let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

        server.restart();
        assert_eq!(server.port(), port);
        assert!(get(port, "/info/refs").unwrap().starts_with("HTTP/1.1 200"));
        assert!(server.requests().len() >= 5);
        assert!(server.authorizations().iter().all(|a| a == "Basic eDp5"));
    }

    #[test]
    fn hanging_server_accepts_and_never_answers() {
        let server = StaticHttpServer::start_hanging();
        let mut s = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        write!(s, "GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 16];
        let err = s.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
    }
}
