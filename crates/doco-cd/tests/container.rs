//! The container image, black-box: the image built by `scripts/build-image.sh` (its tag in
//! `DOCO_CD_IMAGE`, which `scripts/test.sh` exports) run as users run it, with the Docker socket and a
//! named volume at `/data`, against the real engine. These prove what only the container shows: the
//! data volume's host path found by inspecting its own container, relative bind mounts resolving on
//! the host, the `HEALTHCHECK`, tini as PID 1 (orphans reaped, SIGTERM forwarded), and the refusal to
//! start without a data volume.
//!
//! doco-cd runs with `--network host`, so it reaches the Git servers on 127.0.0.1 and its ports are
//! the host's (free ones, chosen per test). Every container and volume has a unique name and is removed
//! by a guard, also when a test fails; the stacks doco-cd deployed are removed by their project label.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // The end-to-end harness; these tests use a few of its helpers.
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, docker, require_docker, test_image,
};
use doco_testkit::git::{BareRepo, WorkTree};
use doco_testkit::http::StaticHttpServer;
use doco_testkit::unique_name;
use support::{HttpRepo, free_port, http_get, label, parse_metric};

const SHA_LABEL: &str = "cd.doco.deployment.target.sha";
const SOCKET: &str = "/var/run/docker.sock";

/// The image under test, or `None` (skip) when `DOCO_CD_IMAGE` is unset and Docker is not required.
fn image() -> Option<String> {
    if !require_docker() {
        return None;
    }
    match std::env::var("DOCO_CD_IMAGE") {
        Ok(tag) if !tag.is_empty() => Some(tag),
        _ if std::env::var("DOCO_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!(
                "DOCO_REQUIRE_DOCKER=1 but DOCO_CD_IMAGE is unset: build it with scripts/build-image.sh"
            )
        }
        _ => {
            eprintln!(
                "skipping: DOCO_CD_IMAGE is unset (scripts/test.sh builds the image and sets it)"
            );
            None
        }
    }
}

/// A name no other test run on this engine uses: the process, a counter and the clock.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}-{nanos:x}", unique_name(prefix))
}

fn poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1s\n")
}

/// A named volume, removed on drop.
struct Volume(String);

impl Volume {
    fn new() -> Self {
        let name = unique("doco-ctr-data");
        docker(&["volume", "create", &name]);
        Volume(name)
    }

    /// Where the engine keeps the volume's files on the host.
    fn mountpoint(&self) -> String {
        docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &self.0])
            .trim()
            .to_string()
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

/// How a doco-cd container is run: its data volume (none to test the refusal) and its variables.
struct Run<'a> {
    volume: Option<&'a Volume>,
    vars: Vec<(&'static str, String)>,
}

/// A doco-cd container on the host's network, removed (with its anonymous volumes) on drop; its log is
/// printed when a test fails.
struct DocoContainer {
    name: String,
    metrics_port: u16,
}

impl DocoContainer {
    /// `docker run -d` of the image with the socket, `run`'s volume at /data, free ports and
    /// `run.vars`; a 2 s health interval so the image's own `HEALTHCHECK` command is seen soon.
    fn start(image: &str, run: &Run) -> Self {
        let name = unique("doco-ctr");
        let metrics_port = free_port();
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            "host".into(),
            "--health-interval".into(),
            "2s".into(),
            "-v".into(),
            format!("{SOCKET}:{SOCKET}"),
            "-e".into(),
            format!("HTTP_PORT={}", free_port()),
            "-e".into(),
            format!("METRICS_PORT={metrics_port}"),
            "-e".into(),
            "DOCO_CD_MIN_POLL_INTERVAL=1s".into(),
        ];
        if let Some(volume) = run.volume {
            args.extend(["-v".into(), format!("{}:/data", volume.0)]);
        }
        for (key, value) in &run.vars {
            args.extend(["-e".into(), format!("{key}={value}")]);
        }
        args.push(image.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args);
        DocoContainer { name, metrics_port }
    }

    fn logs(&self) -> String {
        Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr)
            })
            .unwrap_or_default()
    }

    fn inspect(&self, template: &str) -> String {
        docker(&["inspect", "--format", template, &self.name])
            .trim()
            .to_string()
    }

    /// The sum of the samples of `name` with `labels` on the metrics port (0 when it does not answer).
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = http_get(self.metrics_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        parse_metric(&text, name, labels)
    }

    /// Polls `check` every 200 ms; panics with the container's log after `deadline`.
    fn wait_for(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out after {deadline:?} waiting for {what}\n--- doco-cd container log ---\n{}",
            self.logs()
        );
    }

    fn wait_running_metrics(&self) {
        self.wait_for("the metrics endpoint", Duration::from_secs(60), || {
            http_get(self.metrics_port, "/metrics").is_some()
        });
    }

    /// Waits until doco-cd counted an offline enforcement of `repository` (the poll that healed may
    /// still be finishing when its effect is seen).
    fn wait_offline_enforcement(&self, repository: &str) {
        self.wait_for("an offline enforcement", Duration::from_secs(30), || {
            self.metric(
                "doco_cd_offline_enforcements_total",
                &[("repository", repository)],
            ) >= 1.0
        });
    }

    /// The host pid of the container's PID 1.
    fn init_pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().unwrap()
    }
}

/// One process as the host's `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone)]
struct Process {
    pid: u32,
    ppid: u32,
    state: char,
    name: String,
}

/// Every process on the host. Read from `/proc` rather than `docker top`: an exited process that
/// nobody reaped (a zombie) has left the container's cgroup, so `docker top` no longer lists it.
fn host_processes() -> Vec<Process> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // "pid (name) state ppid ...": the name may hold spaces and parentheses.
            let (pid, rest) = stat.split_once(" (")?;
            let (name, rest) = rest.rsplit_once(") ")?;
            let mut fields = rest.split_whitespace();
            Some(Process {
                pid: pid.parse().ok()?,
                state: fields.next()?.chars().next()?,
                ppid: fields.next()?.parse().ok()?,
                name: name.to_string(),
            })
        })
        .collect()
}

/// The processes under `root` (not `root` itself), zombies included.
fn descendants(root: u32) -> Vec<Process> {
    let all = host_processes();
    let mut found: Vec<Process> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for process in all.iter().filter(|p| p.ppid == parent) {
            parents.push(process.pid);
            found.push(process.clone());
        }
    }
    found
}

impl Drop for DocoContainer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- doco-cd container log ---\n{}", self.logs());
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// The single running container of `service` in `project`, waiting for it.
fn running(doco: &DocoContainer, project: &str, service: &str) -> String {
    let mut id = String::new();
    doco.wait_for(
        &format!("{project}/{service} running"),
        Duration::from_secs(120),
        || match container_ids(project, service).as_slice() {
            [only] if container_state(only) == "running" => {
                id = only.clone();
                true
            }
            _ => false,
        },
    );
    id
}

#[test]
fn the_image_deploys_a_relative_bind_mount_through_its_data_volume_and_turns_healthy() {
    let Some(image) = image() else { return };
    let busybox = test_image();
    let project = unique("ctr-bind");
    let _stack = ProjectGuard::new(&project);
    let message = format!("hello from {project}");
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("config/message.txt", &message);
    repo.work.write(
        "compose.yml",
        &format!(
            "services:\n  web:\n    image: {busybox}\n    command: [\"sleep\", \"3600\"]\n    network_mode: none\n    stop_grace_period: 1s\n    volumes:\n      - ./config/message.txt:/srv/message.txt:ro\n"
        ),
    );
    repo.push("a stack with a relative bind mount");
    let volume = Volume::new();
    let doco = DocoContainer::start(
        &image,
        &Run {
            volume: Some(&volume),
            vars: vec![("POLL_CONFIG", poll_config(&repo.url()))],
        },
    );

    let web = running(&doco, &project, "web");
    let seen = docker(&["exec", &web, "cat", "/srv/message.txt"]);
    assert_eq!(seen, message);
    // The bind source is the file in the named volume, found by doco-cd inspecting its own container.
    let source = docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Source}}{{end}}",
        &web,
    ]);
    let mountpoint = volume.mountpoint();
    assert!(
        source.trim().starts_with(&format!("{mountpoint}/")),
        "bind source {source:?} is not in the data volume {mountpoint}"
    );
    assert_eq!(
        doco.inspect("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","doco-cd","healthcheck"]"#
    );
    doco.wait_for("the container healthy", Duration::from_secs(60), || {
        doco.inspect("{{.State.Health.Status}}") == "healthy"
    });
}

/// The proposal's set-up inside the container: the Git server is a busybox httpd container of a stack
/// that the doco-cd container deploys from the very repository it serves.
struct SelfHostedGit {
    _bare: BareRepo,
    _work: WorkTree,
    port: u16,
    proxy: String,
    _guard: ProjectGuard,
}

impl SelfHostedGit {
    fn new() -> Self {
        let busybox = test_image();
        let bare = BareRepo::new();
        let work = WorkTree::clone_from(&bare);
        let port = free_port();
        let proxy = unique("ctr-proxy");
        let guard = ProjectGuard::new(&proxy);
        work.write(".doco-cd.yml", &format!("name: {proxy}\n"));
        work.write(
            "compose.yml",
            &format!(
                "services:\n  git:\n    image: {busybox}\n    command: [\"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/srv\"]\n    network_mode: host\n    restart: unless-stopped\n    stop_grace_period: 1s\n    volumes:\n      - {}:/srv/repo.git:ro\n",
                bare.path().display()
            ),
        );
        work.commit_and_push("the Git server");
        bare.update_server_info();
        // The operator starts the proxy once by hand, before doco-cd manages it.
        let compose_file = work.path().join("compose.yml");
        docker(&[
            "compose",
            "-p",
            &proxy,
            "-f",
            &compose_file.to_string_lossy(),
            "up",
            "-d",
        ]);
        let scenario = SelfHostedGit {
            _bare: bare,
            _work: work,
            port,
            proxy,
            _guard: guard,
        };
        doco_testkit::docker::wait_until("the Git server answers", Duration::from_secs(30), || {
            scenario.answers()
        });
        scenario
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
    }

    fn answers(&self) -> bool {
        http_get(self.port, "/repo.git/info/refs").is_some_and(|(status, _)| status == 200)
    }

    /// Waits until doco-cd has adopted the proxy (it carries doco-cd's labels); returns its id.
    fn adopted(&self, doco: &DocoContainer) -> String {
        let mut id = String::new();
        doco.wait_for(
            "the proxy adopted by doco-cd",
            Duration::from_secs(120),
            || match container_ids(&self.proxy, "git").as_slice() {
                [only]
                    if container_state(only) == "running" && !label(only, SHA_LABEL).is_empty() =>
                {
                    id = only.clone();
                    true
                }
                _ => false,
            },
        );
        id
    }
}

#[test]
fn in_the_container_the_offline_state_brings_back_the_proxy_that_serves_git_also_after_a_restart() {
    let Some(image) = image() else { return };
    let scenario = SelfHostedGit::new();
    let volume = Volume::new();
    let doco = DocoContainer::start(
        &image,
        &Run {
            volume: Some(&volume),
            vars: vec![
                ("POLL_CONFIG", poll_config(&scenario.url())),
                ("DOCO_CD_MAINTAIN_OFFLINE_STATE", "true".to_string()),
            ],
        },
    );
    let proxy = scenario.adopted(&doco);
    let repository = format!("127.0.0.1:{}/repo", scenario.port);

    // The proxy dies: Git is unreachable, and doco-cd starts the proxy from the last known state.
    docker(&["stop", "-t", "1", &proxy]);
    doco.wait_for("the proxy started again", Duration::from_secs(60), || {
        container_state(&proxy) == "running"
    });
    assert_eq!(container_ids(&scenario.proxy, "git"), vec![proxy.clone()]);
    doco.wait_offline_enforcement(&repository);

    // doco-cd's container is restarted while the Git server is down: the state on the volume is enough.
    docker(&["stop", "-t", "10", &doco.name]);
    docker(&["stop", "-t", "1", &proxy]);
    assert!(!scenario.answers(), "the Git server still answers");
    docker(&["start", &doco.name]);
    doco.wait_for(
        "the proxy started again after the restart",
        Duration::from_secs(60),
        || container_state(&proxy) == "running",
    );
    assert_eq!(container_ids(&scenario.proxy, "git"), vec![proxy.clone()]);
    // The counter starts again at 0 with the new process: this one enforced offline too.
    doco.wait_offline_enforcement(&repository);
    doco.wait_for("Git reachable again", Duration::from_secs(30), || {
        scenario.answers()
    });
}

#[test]
fn pid_1_reaps_orphans_and_docker_stop_ends_doco_cd_gracefully() {
    let Some(image) = image() else { return };
    let busybox = test_image();
    let project = unique("ctr-stop");
    let _stack = ProjectGuard::new(&project);
    let (repo, _) = HttpRepo::with_stack(
        &project,
        &support::sleep_services(&busybox, &[("main", "3600")]),
    );
    let volume = Volume::new();
    let doco = DocoContainer::start(
        &image,
        &Run {
            volume: Some(&volume),
            vars: vec![("POLL_CONFIG", poll_config(&repo.url()))],
        },
    );
    running(&doco, &project, "main");
    doco.wait_running_metrics();
    let init = doco.init_pid();
    let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap();
    assert_eq!(comm.trim(), "tini", "PID 1 is not tini");

    // A process whose parent exits is re-parented to PID 1, which must reap it when it ends.
    docker(&["exec", &doco.name, "sh", "-c", "sleep 1 & exit 0"]);
    doco.wait_for("the orphaned sleep reaped", Duration::from_secs(20), || {
        !descendants(init).iter().any(|p| p.name == "sleep")
    });
    // Between polls only doco-cd runs under tini: no git or compose process is left behind, and no
    // zombie.
    doco.wait_for("only doco-cd under tini", Duration::from_secs(20), || {
        let under = descendants(init);
        matches!(under.as_slice(), [only] if only.name == "doco-cd" && only.state != 'Z')
    });

    stops_gracefully(&doco);
    // The deployed stack is not doco-cd's child: it keeps running.
    assert_eq!(
        container_ids(&project, "main")
            .iter()
            .map(|id| container_state(id))
            .collect::<Vec<_>>(),
        vec!["running".to_string()]
    );
}

/// `docker stop` with a 10 s grace period: doco-cd ends well before it, with its own exit code 0 for a
/// clean shutdown on SIGTERM, which tini passes on (143 would mean killed by the signal, 137 by the
/// engine at the end of the grace period).
fn stops_gracefully(doco: &DocoContainer) {
    let grace = 10;
    let started = Instant::now();
    docker(&["stop", "-t", &grace.to_string(), &doco.name]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(grace - 2),
        "docker stop took {took:?}: doco-cd did not end on SIGTERM\n{}",
        doco.logs()
    );
    assert_eq!(doco.inspect("{{.State.ExitCode}}"), "0", "{}", doco.logs());
    assert!(doco.logs().contains("doco-cd stopped"), "{}", doco.logs());
}

#[test]
fn docker_stop_during_a_fetch_that_hangs_abandons_it_and_exits_at_once() {
    let Some(image) = image() else { return };
    let server = StaticHttpServer::start_hanging();
    let volume = Volume::new();
    let doco = DocoContainer::start(
        &image,
        &Run {
            volume: Some(&volume),
            vars: vec![(
                "POLL_CONFIG",
                poll_config(&format!("{}/repo.git", server.url())),
            )],
        },
    );
    let init = doco.init_pid();
    // git's own timeout is minutes away: the fetch is in progress when the signal arrives.
    doco.wait_for(
        "git waiting for the server",
        Duration::from_secs(60),
        || descendants(init).iter().any(|p| p.name.starts_with("git")),
    );
    stops_gracefully(&doco);
}

#[test]
fn without_a_data_volume_the_image_refuses_to_start_naming_data_mount_path() {
    let Some(image) = image() else { return };
    let doco = DocoContainer::start(
        &image,
        &Run {
            volume: None,
            vars: vec![],
        },
    );
    doco.wait_for("the container to exit", Duration::from_secs(60), || {
        doco.inspect("{{.State.Status}}") == "exited"
    });
    assert_ne!(doco.inspect("{{.State.ExitCode}}"), "0");
    let logs = doco.logs();
    assert!(
        logs.contains("nothing is mounted at DATA_MOUNT_PATH /data"),
        "{logs}"
    );
}
