//! Black-box harness: runs the built `doco-cd` binary with a clean environment, exactly the variables
//! under test, free ports and a temporary data directory, and reads its metrics over HTTP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doco_testkit::git::{BareRepo, WorkTree};
use doco_testkit::http::{RecordingServer, StaticHttpServer};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A Git repository served over dumb HTTP on 127.0.0.1, with a work tree to push from.
pub struct HttpRepo {
    pub bare: BareRepo,
    pub work: WorkTree,
    pub server: StaticHttpServer,
    _root: tempfile::TempDir,
}

impl HttpRepo {
    /// An empty repository; call `work.write` and `push` to fill it.
    pub fn new() -> Self {
        let bare = BareRepo::new();
        let work = WorkTree::clone_from(&bare);
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        std::os::unix::fs::symlink(bare.path(), root.path().join("repo.git"))
            .unwrap_or_else(|e| panic!("symlink: {e}"));
        let server = StaticHttpServer::start(root.path());
        HttpRepo {
            bare,
            work,
            server,
            _root: root,
        }
    }

    /// A repository holding one stack, `project`, described by `compose` (its `compose.yml`), pushed
    /// as a first commit; returns the repository and that commit.
    pub fn with_stack(project: &str, compose: &str) -> (Self, String) {
        let repo = HttpRepo::new();
        repo.work
            .write(".doco-cd.yml", &format!("name: {project}\n"));
        repo.work.write("compose.yml", compose);
        let first = repo.push("first");
        (repo, first)
    }

    /// The clone URL.
    pub fn url(&self) -> String {
        format!("{}/repo.git", self.server.url())
    }

    /// Commits everything written so far and pushes it; returns the commit.
    pub fn push(&self, message: &str) -> String {
        let sha = self.work.commit_and_push(message);
        self.bare.update_server_info();
        sha
    }
}

/// A running `doco-cd` daemon, killed on drop; its log is printed when a test fails.
pub struct Daemon {
    child: Option<Child>,
    pub metrics_port: u16,
    pub http_port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Starts the binary with only `vars` (plus PATH, HOME, free ports, a 1 s minimum poll interval
    /// and `SCHEDULER_ENABLED=false`, which `vars` may override) in its environment.
    pub fn start(data: &Path, vars: &[(&str, String)]) -> Self {
        Daemon::start_binary(Path::new(env!("CARGO_BIN_EXE_doco-cd")), data, vars)
    }

    /// Starts the binary like [`Daemon::start`] without waiting for its plain-HTTP metrics endpoint.
    pub fn spawn(data: &Path, vars: &[(&str, String)]) -> Self {
        Daemon::spawn_binary(Path::new(env!("CARGO_BIN_EXE_doco-cd")), data, vars)
    }

    /// Starts `binary` (another build of `doco-cd`, e.g. a previous release measured beside this
    /// one) like [`Daemon::start`].
    pub fn start_binary(binary: &Path, data: &Path, vars: &[(&str, String)]) -> Self {
        let daemon = Daemon::spawn_binary(binary, data, vars);
        daemon.wait_for("the metrics endpoint", Duration::from_secs(30), || {
            daemon.try_metrics().is_some()
        });
        daemon
    }

    fn spawn_binary(binary: &Path, data: &Path, vars: &[(&str, String)]) -> Self {
        let http_port = free_port();
        let metrics_port = free_port();
        let log = data.with_extension(format!("log-{}", free_port()));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("HTTP_PORT", http_port.to_string())
            .env("METRICS_PORT", metrics_port.to_string())
            .env("DATA_MOUNT_PATH", data)
            .env("DATA_HOST_PATH", data)
            .env("DOCO_CD_MIN_POLL_INTERVAL", "1s")
            // The scheduler runs every job on the engine, other tests' too (as upstream): only the
            // tests of scheduled jobs turn it on.
            .env("SCHEDULER_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (key, value) in vars {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start doco-cd: {e}"));
        Daemon {
            child: Some(child),
            metrics_port,
            http_port,
            log,
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `deadline` for the daemon to exit on its own; its exit code (`None`: still
    /// running, or killed by a signal).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_metrics(&self) -> Option<String> {
        http_get(self.metrics_port, "/metrics").map(|(_, body)| body)
    }

    /// One scrape of the metrics endpoint.
    pub fn scrape(&self) -> Scrape {
        Scrape(self.try_metrics().unwrap_or_default())
    }

    /// The sum of every sample of `name` whose labels include all of `labels`, from a fresh scrape.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape().get(name, labels)
    }

    /// Polls `check` every 200 ms until it holds; panics with the daemon's log after `deadline`.
    pub fn wait_for(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out after {deadline:?} waiting for {what}\n--- doco-cd log ---\n{}",
            self.log()
        );
    }

    /// Waits until `polls` more polls of any repository completed.
    pub fn wait_polls(&self, polls: f64) {
        let start = self.metric("doco_cd_polls_total", &[]);
        self.wait_for(
            &format!("{polls} more polls"),
            Duration::from_secs(60),
            || self.metric("doco_cd_polls_total", &[]) >= start + polls,
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- doco-cd log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The text of one metrics scrape, so that several values can be read from the same instant.
pub struct Scrape(String);

impl Scrape {
    /// The sum of every sample of `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        parse_metric(&self.0, name, labels)
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Some((status, body))
}

/// An HTTP/1.0 request on 127.0.0.1 with `headers` and `body`; the status and the JSON body (`Null`
/// when the body is empty). Waits up to two minutes for the answer (a deploy may be in it).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap_or_else(|e| panic!("set timeout: {e}"));
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .unwrap_or_else(|e| panic!("send {method} {path}: {e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("read the answer to {method} {path}: {e}"));
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let text = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, json)
}

pub fn parse_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            if all { value.parse::<f64>().ok() } else { None }
        })
        .sum()
}

/// The value of label `key` on container `id`.
pub fn label(id: &str, key: &str) -> String {
    let value = doco_testkit::docker::docker(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{key}\"}}}}"),
        id,
    ]);
    value.trim().to_string()
}

/// The single container of `service` in `project`, waiting until it exists and runs.
pub fn running_container(daemon: &Daemon, project: &str, service: &str) -> String {
    let mut id = String::new();
    daemon.wait_for(
        &format!("{project}/{service} running"),
        Duration::from_secs(90),
        || {
            let ids = doco_testkit::docker::container_ids(project, service);
            match ids.as_slice() {
                [only] if state_if_present(only).as_deref() == Some("running") => {
                    id = only.clone();
                    true
                }
                _ => false,
            }
        },
    );
    id
}

/// A container's state, or `None` when it no longer exists (it may go between listing and asking).
fn state_if_present(id: &str) -> Option<String> {
    let output = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Status}}", id])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A compose file with long-running busybox services (restart unless-stopped), one per name, each
/// running `sleep` with the given argument so a test can change a service by changing its argument.
pub fn sleep_services(image: &str, services: &[(&str, &str)]) -> String {
    let mut out = String::from("services:\n");
    for (name, arg) in services {
        out.push_str(&format!(
            "  {name}:\n    image: {image}\n    command: [\"sleep\", \"{arg}\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_grace_period: 1s\n"
        ));
    }
    out
}

/// The titles of the Apprise notifications `apprise` received so far.
pub fn apprise_titles(apprise: &RecordingServer) -> Vec<String> {
    apprise
        .json_bodies()
        .iter()
        .map(|b| b["title"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The state files under the data volume `data` (one per repository and reference).
pub fn state_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join(".doco-cd/state"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
}

/// The state of every repository and reference, by key, as the state files hold it.
pub fn state_repositories(data: &Path) -> serde_json::Map<String, serde_json::Value> {
    state_files(data)
        .iter()
        .map(|file| {
            let text = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let value: serde_json::Value =
                serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let key = value["key"].as_str().unwrap_or_default().to_string();
            (key, value["repository"].clone())
        })
        .collect()
}

/// Every file under `dir` with its modification time and size, to tell whether anything wrote there.
pub fn volume_snapshot(
    dir: &Path,
) -> std::collections::BTreeMap<PathBuf, (std::time::SystemTime, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                out.insert(entry.path(), (modified, meta.len()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metric_samples() {
        let text = "# HELP x\ndoco_cd_polls_total{repository=\"a\"} 2\ndoco_cd_polls_total{repository=\"b\"} 3\ndoco_cd_info 1\n";
        assert_eq!(parse_metric(text, "doco_cd_polls_total", &[]), 5.0);
        assert_eq!(
            parse_metric(text, "doco_cd_polls_total", &[("repository", "b")]),
            3.0
        );
        assert_eq!(parse_metric(text, "doco_cd_info", &[]), 1.0);
        assert_eq!(parse_metric(text, "missing", &[]), 0.0);
    }
}
