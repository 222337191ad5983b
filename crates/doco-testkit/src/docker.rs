//! Docker fixtures for the Docker and end-to-end test tiers.
//!
//! Synchronous and std-only on purpose: a guard's `Drop` must be able to clean up while a test panics,
//! without needing a runtime. Everything a test creates is found by the compose project label, so
//! cleanup never touches containers, networks or volumes of anyone else.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Label compose puts on every container, network and volume of a project.
const PROJECT_LABEL: &str = "com.docker.compose.project";

/// True when the Docker engine answers `docker info` (checked once per process).
pub fn docker_available() -> bool {
    engine_status().is_ok()
}

fn engine_status() -> &'static Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS.get_or_init(|| {
        match Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "`docker info` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run `docker`: {e}")),
        }
    })
}

/// Call at the start of every test that needs the engine: `if !require_docker() { return; }`.
///
/// Returns true when the engine answers. When it does not: panics if `DOCO_REQUIRE_DOCKER=1` (CI and
/// the project's machines), else prints a skip notice and returns false.
pub fn require_docker() -> bool {
    match engine_status() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("DOCO_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("DOCO_REQUIRE_DOCKER=1 but the Docker engine is not reachable: {reason}");
            }
            eprintln!("skipping: the Docker engine is not reachable: {reason}");
            false
        }
    }
}

/// The offline test image's tag, built by `scripts/test-image.sh` once per process.
pub fn test_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let script = crate::workspace_root().join("scripts/test-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!tag.is_empty(), "{} printed no tag", script.display());
        tag
    })
    .clone()
}

/// Removes every container, network and volume labelled with its compose project when dropped, also
/// when the test panics.
#[derive(Debug)]
pub struct ProjectGuard {
    name: String,
}

impl ProjectGuard {
    /// Guards the compose project `name`.
    pub fn new(name: impl Into<String>) -> ProjectGuard {
        ProjectGuard { name: name.into() }
    }

    /// The project name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ProjectGuard {
    fn drop(&mut self) {
        let filter = format!("label={PROJECT_LABEL}={}", self.name);
        let ids = |args: &[&str]| -> Vec<String> {
            match Command::new("docker").args(args).output() {
                Ok(out) => String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        let remove = |what: &str, base: &[&str], ids: Vec<String>| {
            if ids.is_empty() {
                return;
            }
            let result = Command::new("docker").args(base).args(&ids).output();
            match result {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "ProjectGuard({}): removing {what} failed: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("ProjectGuard({}): removing {what} failed: {e}", self.name),
            }
        };
        remove(
            "containers",
            &["rm", "-f", "-v"],
            ids(&["ps", "-aq", "--filter", &filter]),
        );
        remove(
            "networks",
            &["network", "rm"],
            ids(&["network", "ls", "-q", "--filter", &filter]),
        );
        remove(
            "volumes",
            &["volume", "rm", "-f"],
            ids(&["volume", "ls", "-q", "--filter", &filter]),
        );
    }
}

/// Full ids of the containers (running or not) of `service` in compose `project`, sorted.
pub fn container_ids(project: &str, service: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={PROJECT_LABEL}={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    let mut ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    ids.sort();
    ids
}

/// A container's state as the engine names it (`running`, `exited`, ...).
pub fn container_state(id: &str) -> String {
    docker(&["inspect", "--format", "{{.State.Status}}", id])
        .trim()
        .to_string()
}

/// Runs `docker ARGS`, returning stdout; panics with stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`docker {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 200 ms until it returns true; panics naming `what` when `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
