//! Two measurements of issue 8, on the built binary against the real engine (results go in
//! BENCHMARKS.md):
//!
//! 1. **The event-path heal time.** A service subscribed to `stop` events (polls an hour apart) is
//!    `docker stop`ped; the time from the engine's `stop` event to its `start` event is how long
//!    doco-cd took to bring it back. Beside it, the same container with doco-cd stopped: the bench
//!    runs `docker start` itself as soon as `docker stop` returns (same two events), and the wall
//!    time of that `docker start`.
//! 2. **`docker compose up` runs for a commit that cannot deploy**, counted by a `docker` shim on
//!    the daemon's PATH that logs every invocation. A stack of two services deploys; then a commit
//!    moves one of them to an image that does not exist, and every invocation in the next window
//!    (10 minutes by default, polls every 10 s) is counted. When `DOCO_CD_BENCH_BASELINE_BIN` names
//!    another build of `doco-cd` (the release before backoff), it runs the same scenario at the
//!    same time, with its own repository, project, data directory and ports.
//!
//! Run:
//! `DOCO_CD_BENCH_BASELINE_BIN=/path/to/old/doco-cd cargo bench -p doco-cd --bench heal_and_backoff`
//! (`DOCO_CD_BENCH_RUNS`, default 9; `DOCO_CD_BENCH_WINDOW_SECS`, default 600;
//! `DOCO_CD_BENCH_ONLY=heal|backoff` to run one part.)

#![allow(clippy::unwrap_used)] // A bench fails loudly on any unexpected error, as a test does.

// Shared with the end-to-end tests; this bench uses part of it. Clippy checks benches with
// `cfg(test)` but no test harness, so the harness's own unit-test module sees its import unused.
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use doco_testkit::docker::{ProjectGuard, docker, require_docker, test_image};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container, sleep_services};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{name}: not a number ({e}): {v}"))
        })
        .unwrap_or(default)
}

/// `docker events` for one container, as (action, engine time in ns); the process is killed on drop.
struct Events {
    child: Child,
    rx: Receiver<(String, i64)>,
}

impl Events {
    fn follow(container: &str) -> Self {
        let mut child = Command::new("docker")
            .args([
                "events",
                "--filter",
                &format!("container={container}"),
                "--format",
                "{{.Action}} {{.TimeNano}}",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Some actions carry more words (`exec_start: sh -c ...`): the action is the
                // first word and the time the last.
                let mut words = line.split_whitespace();
                let action = words.next().unwrap_or_default().to_string();
                let Some(Ok(nanos)) = words.next_back().map(str::parse::<i64>) else {
                    continue;
                };
                if tx.send((action, nanos)).is_err() {
                    return;
                }
            }
        });
        // The CLI subscribes asynchronously: give it a moment before anything happens.
        std::thread::sleep(Duration::from_millis(500));
        Events { child, rx }
    }

    /// The engine time of the next `action` event; panics after `deadline`.
    fn next(&self, action: &str, deadline: Duration) -> i64 {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((a, nanos)) if a == action => return nanos,
                Ok(_) => {}
                Err(e) => panic!("no `{action}` event within {deadline:?}: {e}"),
            }
        }
    }

    /// Drops every event received so far.
    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median, min and max in ms.
fn summary(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

fn row(what: &str, samples: &[f64]) {
    let (median, min, max) = summary(samples);
    let all: Vec<String> = samples.iter().map(|s| format!("{s:.0}")).collect();
    println!(
        "| {what} | {} | {median:.0} | {min:.0} | {max:.0} | {} |",
        samples.len(),
        all.join(", ")
    );
}

fn heal(image: &str, runs: u64) {
    let project = unique_name("bench-heal");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\nreconciliation:\n  events: [stop]\n"),
    );
    repo.work
        .write("compose.yml", &sleep_services(image, &[("web", "3600")]));
    repo.push("first");
    let data = tempfile::tempdir().unwrap();
    // Polls an hour apart: only the event path can bring the container back.
    let mut daemon = Daemon::start(
        data.path(),
        &[(
            "POLL_CONFIG",
            format!("- url: {}\n  reference: main\n  interval: 1h\n", repo.url()),
        )],
    );
    let web = running_container(&daemon, &project, "web");
    let events = Events::follow(&web);
    let ms = |from: i64, to: i64| (to - from) as f64 / 1e6;

    // One warm-up round, not counted; then `runs` rounds. Engine events carry whole seconds in
    // places, and doco-cd takes those up to the second of its own action as its own: each stop
    // comes more than a second after the last start.
    let mut healed = Vec::new();
    for round in 0..=runs {
        std::thread::sleep(Duration::from_millis(1500));
        events.drain();
        docker(&["stop", "-t", "1", &web]);
        let stopped = events.next("stop", Duration::from_secs(10));
        let started = events.next("start", Duration::from_secs(30));
        if round > 0 {
            healed.push(ms(stopped, started));
        }
    }
    assert_eq!(
        doco_testkit::docker::container_ids(&project, "web"),
        vec![web.clone()],
        "healed by a start, not a recreate"
    );

    // The engine alone: doco-cd stopped, the bench starts the same container itself as soon as
    // `docker stop` returns, with the CLI and then with one Engine API request (as doco-cd does).
    daemon.stop();
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".to_string());
    let api_start = |id: &str| {
        let out = Command::new("curl")
            .args(["-sf", "-X", "POST", "--unix-socket", &socket])
            .arg(format!("http://localhost/containers/{id}/start"))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {out:?}");
    };
    let by_cli = |id: &str| {
        docker(&["start", id]);
    };
    let mut alone = Vec::new();
    for start in [&by_cli as &dyn Fn(&str), &api_start] {
        let (mut by_hand, mut wall) = (Vec::new(), Vec::new());
        for round in 0..=runs {
            std::thread::sleep(Duration::from_millis(1500));
            events.drain();
            docker(&["stop", "-t", "1", &web]);
            let begin = Instant::now();
            start(&web);
            let took = begin.elapsed().as_secs_f64() * 1e3;
            let stopped = events.next("stop", Duration::from_secs(10));
            let started = events.next("start", Duration::from_secs(10));
            if round > 0 {
                by_hand.push(ms(stopped, started));
                wall.push(took);
            }
        }
        alone.push((by_hand, wall));
    }

    println!("| measurement | runs | median (ms) | min (ms) | max (ms) | every run (ms) |");
    println!("|---|---|---|---|---|---|");
    row("doco-cd, event path: `stop` event → `start` event", &healed);
    row(
        "engine alone: `stop` event → `start` event, `docker start` right after `docker stop`",
        &alone[0].0,
    );
    row("engine alone: wall time of `docker start`", &alone[0].1);
    row(
        "engine alone: `stop` event → `start` event, `POST /containers/{id}/start` (curl) right after `docker stop`",
        &alone[1].0,
    );
    row(
        "engine alone: wall time of `POST /containers/{id}/start` (curl)",
        &alone[1].1,
    );
}

/// A `docker` on the daemon's PATH that logs each invocation (time and arguments) to `calls.log`
/// beside it, then runs the real one.
struct Shim {
    dir: tempfile::TempDir,
}

impl Shim {
    fn new() -> Self {
        let real = which("docker");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        let script = format!(
            "#!/bin/sh\nprintf '%s %s\\n' \"$(date +%s.%N)\" \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        );
        let path = dir.path().join("docker");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Shim { dir }
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Every invocation so far: (unix time, arguments).
    fn calls(&self) -> Vec<(f64, Vec<String>)> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let time = words.next()?.parse().ok()?;
                Some((time, words.map(str::to_string).collect()))
            })
            .collect()
    }
}

fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One daemon (this build or `binary`) with a deployed two-service stack, ready for the broken commit.
struct Failing {
    label: String,
    repo: HttpRepo,
    image: String,
    shim: Shim,
    daemon: Daemon,
    _data: tempfile::TempDir,
    _guard: ProjectGuard,
}

/// What one daemon did in the window.
struct Counted {
    label: String,
    compose_up: usize,
    docker_calls: usize,
    polls: f64,
    errors: f64,
    up_at: Vec<f64>,
}

impl Failing {
    fn deploy(label: &str, binary: Option<&Path>, image: &str) -> Self {
        let project = unique_name("bench-backoff");
        let guard = ProjectGuard::new(&project);
        let (repo, _) = HttpRepo::with_stack(
            &project,
            &sleep_services(image, &[("proxy", "5101"), ("web", "5102")]),
        );
        let shim = Shim::new();
        let data = tempfile::tempdir().unwrap();
        let vars = [
            (
                "POLL_CONFIG",
                format!(
                    "- url: {}\n  reference: main\n  interval: 10s\n",
                    repo.url()
                ),
            ),
            ("PATH", shim.path_var()),
        ];
        let daemon = match binary {
            Some(binary) => Daemon::start_binary(binary, data.path(), &vars),
            None => Daemon::start(data.path(), &vars),
        };
        running_container(&daemon, &project, "proxy");
        running_container(&daemon, &project, "web");
        Failing {
            label: label.to_string(),
            repo,
            image: image.to_string(),
            shim,
            daemon,
            _data: data,
            _guard: guard,
        }
    }

    /// Pushes the commit that cannot deploy and counts for `window`.
    fn count(self, window: Duration) -> Counted {
        let good = sleep_services(&self.image, &[("proxy", "5101"), ("web", "5102")]);
        let broken = good.replacen(
            &format!("image: {}\n    command: [\"sleep\", \"5102\"]", self.image),
            "image: doco-test/does-not-exist:1\n    command: [\"sleep\", \"5102\"]",
            1,
        );
        assert_ne!(broken, good);
        self.repo.work.write("compose.yml", &broken);
        let before = self.daemon.scrape();
        let pushed = unix_now();
        self.repo.push("web: an image that does not exist");
        std::thread::sleep(window);
        let end = pushed + window.as_secs_f64();
        let after = self.daemon.scrape();
        let calls: Vec<_> = self
            .shim
            .calls()
            .into_iter()
            .filter(|(t, _)| *t >= pushed && *t < end)
            .collect();
        let up_at: Vec<f64> = calls
            .iter()
            .filter(|(_, args)| {
                args.first().is_some_and(|a| a == "compose") && args.iter().any(|a| a == "up")
            })
            .map(|(t, _)| t - pushed)
            .collect();
        let delta = |name: &str| after.get(name, &[]) - before.get(name, &[]);
        assert!(
            !up_at.is_empty(),
            "{}: no `docker compose up` in the window\n{}",
            self.label,
            self.daemon.log()
        );
        Counted {
            label: self.label,
            compose_up: up_at.len(),
            docker_calls: calls.len(),
            polls: delta("doco_cd_polls_total"),
            errors: delta("doco_cd_deployment_errors_total"),
            up_at,
        }
    }
}

fn backoff(image: &str, window: Duration) {
    let baseline = std::env::var_os("DOCO_CD_BENCH_BASELINE_BIN").map(PathBuf::from);
    let mut daemons = vec![Failing::deploy("this build", None, image)];
    match &baseline {
        Some(binary) => daemons.push(Failing::deploy(
            &format!("baseline {}", binary.display()),
            Some(binary),
            image,
        )),
        None => eprintln!("DOCO_CD_BENCH_BASELINE_BIN unset: measuring this build only"),
    }
    let counted: Vec<Counted> = std::thread::scope(|scope| {
        let handles: Vec<_> = daemons
            .into_iter()
            .map(|d| scope.spawn(move || d.count(window)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = window.as_secs_f64();
    println!("window {secs:.0} s after the push of the broken commit, POLL_CONFIG interval 10 s");
    println!(
        "| daemon | polls | failed deploys | `docker compose up` runs | per hour (x {:.1}) | `docker` processes | per hour |",
        3600.0 / secs
    );
    println!("|---|---|---|---|---|---|---|");
    for c in &counted {
        let hourly = |n: usize| n as f64 * 3600.0 / secs;
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.0} | {} | {:.0} |",
            c.label,
            c.polls,
            c.errors,
            c.compose_up,
            hourly(c.compose_up),
            c.docker_calls,
            hourly(c.docker_calls)
        );
    }
    for c in &counted {
        let at: Vec<String> = c.up_at.iter().map(|t| format!("{t:.0}")).collect();
        println!("{}: `docker compose up` at s {}", c.label, at.join(", "));
    }
}

fn main() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let runs = env_number("DOCO_CD_BENCH_RUNS", 9);
    let window = Duration::from_secs(env_number("DOCO_CD_BENCH_WINDOW_SECS", 600));
    let only = std::env::var("DOCO_CD_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "heal" {
        heal(&image, runs);
    }
    if only.is_empty() || only == "backoff" {
        backoff(&image, window);
    }
}
