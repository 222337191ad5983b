//! A small HTTP/1.1 server primitive for the test servers, and the two simplest servers built on it.
//!
//! [`HttpServer`] is the one accept loop every test server runs on: a std thread polling a
//! non-blocking listener on 127.0.0.1, one thread per connection that reads a [`Request`] (head,
//! then a `Content-Length` or chunked body, answering `Expect: 100-continue`), hands it to the
//! server's handler, records it and writes the handler's [`Response`] with `Content-Length` and
//! `Connection: close`. Because the listener is polled, [`HttpServer::stop`] closes the socket at
//! once (connecting afterwards is refused) and [`HttpServer::restart`] binds the same port again.
//! A hanging server ([`HttpServer::start_hanging`]) accepts connections and never reads or answers.
//!
//! Built on it here: [`StaticHttpServer`] (files for git's dumb HTTP protocol, with a status
//! override) and [`RecordingServer`] (answers 200 to everything, for notification tests). The
//! smart-HTTP Git server and the GitHub API mock live in their own modules.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as received: the request line's parts, the headers in order and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent, query string included (`/info/refs?service=git-upload-pack`).
    pub path: String,
    /// `HTTP/1.1`.
    pub version: String,
    /// Names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it came with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target split at `?`: the path and the query string (empty without one).
    pub fn path_and_query(&self) -> (&str, &str) {
        self.path.split_once('?').unwrap_or((&self.path, ""))
    }

    /// `GET /path HTTP/1.1`.
    pub fn request_line(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.version)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }

    /// Reads one request from `stream`; `Ok(None)` when the client closed before sending one.
    fn read(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line)?;
            if n == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let mut parts = request_line.split_whitespace();
        let mut request = Request {
            method: parts.next().unwrap_or("").to_string(),
            path: parts.next().unwrap_or("/").to_string(),
            version: parts.next().unwrap_or("HTTP/1.1").to_string(),
            headers,
            body: Vec::new(),
        };
        if request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if let Some(len) = request
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            request.body.resize(len, 0);
            reader.read_exact(&mut request.body)?;
        } else if request
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line)?;
                let size =
                    usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                        .unwrap_or(0);
                // The chunk and its CRLF.
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                request.body.extend_from_slice(&chunk[..size]);
            }
        }
        Ok(Some(request))
    }
}

/// What a handler answers: a status, extra headers and a body (`Content-Length` and
/// `Connection: close` are added when written; the body is left out for `HEAD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn write(&self, stream: &mut TcpStream, head_only: bool) -> std::io::Result<()> {
        let reason = match self.status {
            200 => "OK",
            201 => "Created",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        stream.write_all(head.as_bytes())?;
        if !head_only {
            stream.write_all(&self.body)?;
        }
        stream.flush()
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Answer each request with the handler, or accept connections and never answer.
#[derive(Clone)]
enum Behaviour {
    Answer(Arc<Handler>),
    Hang,
}

/// An HTTP/1.1 server on `127.0.0.1:<port>` that answers each request with its handler and records
/// it; stopped when dropped.
pub struct HttpServer {
    port: u16,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Request>>>,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("port", &self.port)
            .field("hanging", &matches!(self.behaviour, Behaviour::Hang))
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Listens on a free port and answers every request with `handler` (each connection on its
    /// own thread, so a slow handler does not hold up others).
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        Self::start_with(Behaviour::Answer(Arc::new(handler)))
    }

    /// A server that accepts connections and never reads or answers, to test timeouts; the
    /// connections are closed when it stops.
    pub fn start_hanging() -> Self {
        Self::start_with(Behaviour::Hang)
    }

    fn start_with(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("HttpServer: cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("HttpServer: local_addr: {e}"))
            .port();
        let mut server = HttpServer {
            port,
            behaviour,
            log: Arc::new(Mutex::new(Vec::new())),
            running: None,
        };
        server.spawn(listener);
        server
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across [`HttpServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The requests answered so far, in the order they were answered (kept across restarts).
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the listening socket; connecting afterwards is refused at once.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            running
                .thread
                .join()
                .unwrap_or_else(|_| panic!("HttpServer: the server thread panicked"));
        }
    }

    /// Listens on the same port again after [`HttpServer::stop`].
    pub fn restart(&mut self) {
        self.stop();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        // The port was ours a moment ago; retry briefly in case the kernel still holds it.
        let mut last_err = None;
        for _ in 0..50 {
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    self.spawn(listener);
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "HttpServer: cannot bind {addr} again: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        );
    }

    fn spawn(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("HttpServer: set_nonblocking: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let behaviour = self.behaviour.clone();
            let log = Arc::clone(&self.log);
            std::thread::spawn(move || accept_loop(listener, behaviour, log, stop))
        };
        self.running = Some(Running { stop, thread });
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            // Never panic in drop (it may run while a test is already unwinding).
            let _ = running.thread.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
) {
    // Connections held open by a hanging server; dropped (closed) when the server stops.
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => match &behaviour {
                Behaviour::Hang => held.push(stream),
                Behaviour::Answer(handler) => {
                    let handler = Arc::clone(handler);
                    let log = Arc::clone(&log);
                    std::thread::spawn(move || {
                        // A client that goes away mid-request is not the server's problem.
                        let _ = answer(stream, &*handler, &log);
                    });
                }
            },
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn answer(
    mut stream: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some(request) = Request::read(&mut stream)? else {
        return Ok(());
    };
    let response = handler(&request);
    let head_only = request.method == "HEAD";
    // Recorded before answering: a client that has its answer finds its request recorded.
    log.lock().unwrap_or_else(|p| p.into_inner()).push(request);
    response.write(&mut stream, head_only)
}

/// A read-only file server for git's dumb HTTP protocol, stopped when dropped.
///
/// Git-tier tests need a remote that can be reachable, unreachable (connection refused), failing
/// (HTTP 5xx) or hanging (accepts and never answers), switched at will within one test. The query
/// string is ignored, so git's `info/refs?service=git-upload-pack` probe gets the plain `info/refs`
/// file and git falls back to the dumb protocol.
#[derive(Debug)]
pub struct StaticHttpServer {
    server: HttpServer,
    /// 0 means "no override".
    status_override: Arc<AtomicU16>,
}

impl StaticHttpServer {
    /// Serves the files under `root` (GET and HEAD; 200 with Content-Length, 404 when missing).
    pub fn start(root: &Path) -> Self {
        let root = root.to_path_buf();
        let status_override = Arc::new(AtomicU16::new(0));
        let status = Arc::clone(&status_override);
        let server = HttpServer::start(move |request| {
            serve_file(&root, status.load(Ordering::SeqCst), request)
        });
        StaticHttpServer {
            server,
            status_override,
        }
    }

    /// A server that accepts connections and never answers, to test timeouts.
    pub fn start_hanging() -> Self {
        StaticHttpServer {
            server: HttpServer::start_hanging(),
            status_override: Arc::new(AtomicU16::new(0)),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The port the server listens on (kept across [`StaticHttpServer::restart`]).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Closes the listening socket; connecting afterwards is refused at once.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Listens on the same port again after [`StaticHttpServer::stop`].
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// Answers every request with `status` (and a short body) while set; `None` serves files again.
    pub fn set_status_override(&self, status: Option<u16>) {
        self.status_override
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// The `Authorization` header values received so far (the server never checks them).
    pub fn authorizations(&self) -> Vec<String> {
        authorizations(&self.server)
    }

    /// The request lines (`GET /path HTTP/1.1`) received so far.
    pub fn requests(&self) -> Vec<String> {
        request_lines(&self.server)
    }
}

/// The `Authorization` values of the requests `server` answered so far.
pub(crate) fn authorizations(server: &HttpServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect()
}

/// The request lines of the requests `server` answered so far.
pub(crate) fn request_lines(server: &HttpServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(Request::request_line)
        .collect()
}

fn serve_file(root: &Path, status_override: u16, request: &Request) -> Response {
    let response = if status_override != 0 {
        Response::new(
            status_override,
            format!("status {status_override} (override)\n"),
        )
    } else if request.method != "GET" && request.method != "HEAD" {
        Response::new(405, "method not allowed\n")
    } else {
        match resolve(root, &request.path).and_then(|p| std::fs::read(p).ok()) {
            Some(body) => Response::new(200, body),
            None => Response::new(404, "not found\n"),
        }
    };
    response.with_header("Content-Type", "application/octet-stream")
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

/// A server that answers 200 (empty body) to every request and records them all: a stand-in for
/// a webhook or notification endpoint such as the Apprise API. Stopped when dropped.
#[derive(Debug)]
pub struct RecordingServer {
    server: HttpServer,
}

impl RecordingServer {
    pub fn start() -> Self {
        RecordingServer {
            server: HttpServer::start(|_| Response::new(200, "")),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash); any path is accepted.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The requests received so far, in order. A request is recorded before it is answered, so
    /// once a client has its answer, its request is here.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// The bodies received so far that parse as JSON, in order.
    pub fn json_bodies(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter_map(|r| r.json().ok())
            .collect()
    }
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

    fn exchange(port: u16, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_length_and_chunked_bodies_and_records_before_answering() {
        let server = RecordingServer::start();
        let port = server.server.port();
        let ok = exchange(
            port,
            b"POST /notify HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"title\":1}",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 0\r\n"), "{ok}");
        let chunked = exchange(
            port,
            b"POST /x?y=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n",
        );
        assert!(
            chunked.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            "{chunked}"
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        assert_eq!(server.json_bodies(), vec![serde_json::json!({"title": 1})]);
        assert_eq!(requests[1].body, b"abcde");
        assert_eq!(requests[1].path_and_query(), ("/x", "y=1"));
        assert_eq!(requests[1].request_line(), "POST /x?y=1 HTTP/1.1");
    }

    #[test]
    fn head_answers_carry_the_length_but_no_body() {
        let server = HttpServer::start(|_| Response::new(200, "four").with_header("X-A", "b"));
        let head = exchange(server.port(), b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
        );
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
