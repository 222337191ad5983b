//! A unix-socket proxy in front of the Docker engine's socket, so a test can cut doco-cd's
//! connection to the engine while the engine itself keeps running (its event stream breaks, events
//! happen meanwhile), then restore it. doco-cd is pointed at the proxy with
//! `DOCKER_HOST=unix://<socket>`; the test itself keeps talking to the real engine.
//!
//! It also records the path of every request it passes on, so a test can tell which Engine API calls
//! doco-cd made.
//!
//! Std threads only, like the rest of the Docker fixtures: dropping it must work while a test panics.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The proxy; stops and closes every connection when dropped.
#[derive(Debug)]
pub struct DockerProxy {
    socket: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Shared {
    upstream: PathBuf,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Whether connections are refused, and the open ones (both ends), under one lock so that a
    /// connection accepted while cutting is either closed by the cut or refused.
    state: Mutex<State>,
    /// The method and path of every request passed on (`GET /v1.47/containers/json?…`).
    requests: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct State {
    cut: bool,
    open: HashMap<u64, [UnixStream; 2]>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is one statement: it stays consistent after a panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DockerProxy {
    /// A proxy in front of the engine this process uses: `DOCKER_HOST` when it is a `unix://`
    /// socket, else `/var/run/docker.sock`.
    pub fn start() -> DockerProxy {
        let upstream = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        DockerProxy::in_front_of(&upstream)
    }

    /// A proxy in front of the unix socket `upstream`, listening on a socket in a temp dir.
    pub fn in_front_of(upstream: &Path) -> DockerProxy {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket)
            .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", socket.display()));
        let shared = Arc::new(Shared {
            upstream: upstream.to_path_buf(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            requests: Mutex::new(Vec::new()),
        });
        let accept = std::thread::spawn({
            let shared = shared.clone();
            move || accept_loop(&listener, &shared)
        });
        DockerProxy {
            socket,
            shared,
            accept: Some(accept),
            _dir: dir,
        }
    }

    /// The proxy's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The value of `DOCKER_HOST` that points a client at the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Closes every open connection and closes new ones at once, until [`DockerProxy::restore`].
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        for (_, ends) in state.open.drain() {
            close(&ends);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.lock().cut = false;
    }

    /// The method and path of every request passed on so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// How many connections are open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().open.len()
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop, which then sees `stopping`.
        let _ = UnixStream::connect(&self.socket);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.lock().cut {
            close(&[client]);
            continue;
        }
        let upstream = match UnixStream::connect(&shared.upstream) {
            Ok(upstream) => upstream,
            Err(e) => {
                eprintln!(
                    "DockerProxy: cannot reach {}: {e}",
                    shared.upstream.display()
                );
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let mut state = shared.lock();
            if state.cut {
                close(&[client, upstream]);
                continue;
            }
            match (client.try_clone(), upstream.try_clone()) {
                (Ok(c), Ok(u)) => state.open.insert(id, [c, u]),
                _ => continue,
            };
        }
        spawn_pump(shared, id, &client, &upstream, true);
        spawn_pump(shared, id, &upstream, &client, false);
    }
}

/// Copies `from` into `to` until either side ends, then closes the whole connection; the requests
/// in what it copies are recorded when `requests` is set (the client's side).
fn spawn_pump(shared: &Arc<Shared>, id: u64, from: &UnixStream, to: &UnixStream, requests: bool) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let shared = shared.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if requests {
                        record_requests(&shared, &buffer[..n]);
                    }
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(ends) = shared.lock().open.remove(&id) {
            close(&ends);
        }
        close(&[from, to]);
    });
}

/// Records the request lines (`METHOD /path HTTP/1.1`) in a chunk of what a client sent.
fn record_requests(shared: &Shared, chunk: &[u8]) {
    let text = String::from_utf8_lossy(chunk);
    let found: Vec<String> = text
        .split("\r\n")
        .filter_map(|line| {
            let (method, rest) = line.split_once(' ')?;
            let (path, version) = rest.rsplit_once(' ')?;
            let method_ok = ["GET", "POST", "PUT", "DELETE", "HEAD"].contains(&method);
            (method_ok && path.starts_with('/') && version.starts_with("HTTP/"))
                .then(|| format!("{method} {path}"))
        })
        .collect();
    if !found.is_empty() {
        shared
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(found);
    }
}

fn close(ends: &[UnixStream]) {
    for end in ends {
        let _ = end.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every line with the same line.
    fn echo_server(dir: &Path) -> PathBuf {
        let path = dir.join("echo.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        path
    }

    fn echo(stream: &mut UnixStream, text: &str) -> std::io::Result<String> {
        stream.write_all(text.as_bytes())?;
        let mut buffer = vec![0u8; text.len()];
        stream.read_exact(&mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    #[test]
    fn forwards_then_cuts_open_and_new_connections_then_restores() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = DockerProxy::in_front_of(&echo_server(dir.path()));
        let mut open = UnixStream::connect(proxy.socket()).unwrap();
        assert_eq!(echo(&mut open, "ping").unwrap(), "ping");
        assert_eq!(proxy.open_connections(), 1);

        proxy.cut();
        assert!(
            echo(&mut open, "lost").is_err(),
            "the open connection is closed"
        );
        let mut refused = UnixStream::connect(proxy.socket()).unwrap();
        assert!(
            echo(&mut refused, "refused").is_err(),
            "new ones are closed"
        );

        proxy.restore();
        let mut again = UnixStream::connect(proxy.socket()).unwrap();
        assert_eq!(echo(&mut again, "back").unwrap(), "back");
        assert!(proxy.docker_host().starts_with("unix:///"));
    }
}
