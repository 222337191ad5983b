//! End-to-end tests of deploy-config keys and variables that `key_coverage.rs` listed as gaps: the
//! built binary against a local Git server and the real engine, each key shown by its effect.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::time::Duration;

use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, docker, require_docker, test_image,
};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container};

/// Polls once a second, for every URL.
fn poll_config(urls: &[String]) -> String {
    urls.iter()
        .map(|url| format!("- url: {url}\n  reference: main\n  interval: 1s\n"))
        .collect()
}

/// Polls an hour apart: nothing but the event path acts during a test.
fn slow_poll_config(urls: &[String]) -> String {
    urls.iter()
        .map(|url| format!("- url: {url}\n  reference: main\n  interval: 1h\n"))
        .collect()
}

/// A compose file with one long-running service `web` that mounts the named volume `data`.
fn stack_with_volume(image: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n    volumes: [\"data:/data\"]\nvolumes:\n  data: {{}}\n"
    )
}

fn volume_exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Removes the named volumes on drop (also when a test fails before its stack owns them).
struct VolumeGuard(Vec<String>);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", name])
                .output();
        }
    }
}

fn inspect(id: &str, template: &str) -> String {
    docker(&["inspect", "--format", template, id])
        .trim()
        .to_string()
}

#[test]
fn destroy_remove_volumes_removes_the_stacks_named_volumes_and_false_keeps_them() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let removed = unique_name("e2e-destroy-vol");
    let kept = unique_name("e2e-destroy-keep");
    let _guards = (ProjectGuard::new(&removed), ProjectGuard::new(&kept));
    let (removed_volume, kept_volume) = (format!("{removed}_data"), format!("{kept}_data"));
    let _volumes = VolumeGuard(vec![removed_volume.clone(), kept_volume.clone()]);
    let (removed_repo, _) = HttpRepo::with_stack(&removed, &stack_with_volume(&image));
    let (kept_repo, _) = HttpRepo::with_stack(&kept, &stack_with_volume(&image));
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[(
            "POLL_CONFIG",
            poll_config(&[removed_repo.url(), kept_repo.url()]),
        )],
    );
    running_container(&daemon, &removed, "web");
    running_container(&daemon, &kept, "web");
    assert!(volume_exists(&removed_volume) && volume_exists(&kept_volume));

    // The shared test image must survive: keep images.
    for (repo, project, volumes) in [(&removed_repo, &removed, true), (&kept_repo, &kept, false)] {
        repo.work.write(
            ".doco-cd.yml",
            &format!(
                "name: {project}\ndestroy:\n  enabled: true\n  remove_images: false\n  remove_volumes: {volumes}\n"
            ),
        );
        repo.push("destroy the stack");
    }
    daemon.wait_for("both stacks removed", Duration::from_secs(60), || {
        container_ids(&removed, "web").is_empty() && container_ids(&kept, "web").is_empty()
    });
    daemon.wait_for(
        "the volume of the stack destroyed with remove_volumes removed",
        Duration::from_secs(30),
        || !volume_exists(&removed_volume),
    );
    assert!(
        volume_exists(&kept_volume),
        "remove_volumes: false removed the volume"
    );
}

#[test]
fn auto_discovery_remove_volumes_removes_a_vanished_stacks_volumes() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let kept = unique_name("e2e-adv-kept");
    let gone = unique_name("e2e-adv-gone");
    let _guards = (ProjectGuard::new(&kept), ProjectGuard::new(&gone));
    let (kept_volume, gone_volume) = (format!("{kept}_data"), format!("{gone}_data"));
    let _volumes = VolumeGuard(vec![kept_volume.clone(), gone_volume.clone()]);
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        "auto_discovery:\n  enabled: true\n  delete: true\n  remove_volumes: true\n  remove_images: false\n",
    );
    repo.work
        .write(&format!("{kept}/compose.yml"), &stack_with_volume(&image));
    repo.work
        .write(&format!("{gone}/compose.yml"), &stack_with_volume(&image));
    repo.push("two discovered stacks with volumes");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&[repo.url()]))]);
    let kept_web = running_container(&daemon, &kept, "web");
    running_container(&daemon, &gone, "web");
    assert!(volume_exists(&kept_volume) && volume_exists(&gone_volume));

    repo.work.remove(&format!("{gone}/compose.yml"));
    repo.push("remove one directory");
    daemon.wait_for(
        "the vanished directory's stack and its volume removed",
        Duration::from_secs(60),
        || container_ids(&gone, "web").is_empty() && !volume_exists(&gone_volume),
    );
    assert_eq!(container_ids(&kept, "web"), vec![kept_web]);
    assert!(
        volume_exists(&kept_volume),
        "the kept stack lost its volume"
    );
}

#[test]
fn reconciliation_enabled_false_leaves_a_stopped_container_alone() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let on = unique_name("e2e-rec-on");
    let off = unique_name("e2e-rec-off");
    let _guards = (ProjectGuard::new(&on), ProjectGuard::new(&off));
    let compose = support::sleep_services(&image, &[("web", "3600")]);
    let repo_with = |project: &str, enabled: bool| {
        let repo = HttpRepo::new();
        repo.work.write(
            ".doco-cd.yml",
            &format!("name: {project}\nreconciliation:\n  enabled: {enabled}\n  events: [stop]\n"),
        );
        repo.work.write("compose.yml", &compose);
        repo.push("first");
        repo
    };
    let (on_repo, off_repo) = (repo_with(&on, true), repo_with(&off, false));
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[(
            "POLL_CONFIG",
            slow_poll_config(&[on_repo.url(), off_repo.url()]),
        )],
    );
    let on_web = running_container(&daemon, &on, "web");
    let off_web = running_container(&daemon, &off, "web");

    // Stopped one after the other, the disabled one first: once the enabled one is back, the
    // event of the disabled one has been seen (and ignored) too.
    docker(&["stop", &off_web]);
    docker(&["stop", &on_web]);
    daemon.wait_for(
        "the enabled deployment's container running again after its stop event",
        Duration::from_secs(30),
        || container_state(&on_web) == "running",
    );
    assert_eq!(
        container_state(&off_web),
        "exited",
        "reconciliation.enabled: false restarted a stopped container"
    );
    assert_eq!(container_ids(&off, "web"), vec![off_web]);
}

#[test]
fn an_unhealthy_container_is_restarted_with_the_restart_signal_and_killed_after_the_restart_timeout()
 {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-rec-sig");
    let _guard = ProjectGuard::new(&project);
    // Healthy until /tmp/sick exists. SIGUSR1 records its arrival and cures the container, but
    // does not end it: only the engine's kill after `restart_timeout` does. Every start is
    // recorded, so the gap between the signal and the next start is the timeout used.
    let script = "date +%s >> /tmp/starts; trap 'date +%s > /tmp/usr1; rm -f /tmp/sick' USR1; trap '' TERM; while true; do sleep 3600 & wait $$!; done";
    let compose = format!(
        "services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"{script}\"]\n    restart: unless-stopped\n    network_mode: none\n    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"test ! -f /tmp/sick\"]\n      interval: 1s\n      retries: 1\n"
    );
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!(
            "name: {project}\nreconciliation:\n  events: [unhealthy]\n  restart_signal: SIGUSR1\n  restart_timeout: 4\n"
        ),
    );
    repo.work.write("compose.yml", &compose);
    repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", slow_poll_config(&[repo.url()]))],
    );
    let web = running_container(&daemon, &project, "web");
    daemon.wait_for("web healthy", Duration::from_secs(30), || {
        inspect(&web, "{{.State.Health.Status}}") == "healthy"
    });
    daemon.wait_for("the deploy finished", Duration::from_secs(30), || {
        daemon.metric("doco_cd_deployments_total", &[]) >= 1.0
    });

    docker(&["exec", &web, "touch", "/tmp/sick"]);
    daemon.wait_for(
        "web restarted after its unhealthy event",
        Duration::from_secs(60),
        || {
            // The restart may be under way at any moment: a failed look is "not yet".
            let starts = std::process::Command::new("docker")
                .args(["exec", &web, "cat", "/tmp/starts"])
                .output();
            starts.is_ok_and(|out| {
                out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() >= 2
            })
        },
    );
    let signalled: i64 = docker(&["exec", &web, "cat", "/tmp/usr1"])
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("SIGUSR1 never reached the container ({e})"));
    let starts = docker(&["exec", &web, "cat", "/tmp/starts"]);
    let restarted: i64 = starts.lines().last().unwrap().trim().parse().unwrap();
    let waited = restarted - signalled;
    assert!(
        (3..=8).contains(&waited),
        "the restart waited {waited}s between the signal and the kill, not restart_timeout (4s)"
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
}

/// The job `service` of `stack` as a daemon's `GET /v1/api/jobs` lists it.
fn listed_job(daemon: &Daemon, key: &str, stack: &str) -> serde_json::Value {
    let (status, body) = support::http_request(
        daemon.http_port,
        "GET",
        &format!("/v1/api/jobs?stack={stack}"),
        &[("x-api-key", key)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let jobs = body
        .get("content")
        .cloned()
        .unwrap_or(body)
        .as_array()
        .cloned()
        .unwrap_or_default();
    jobs.into_iter()
        .find(|j| j["stack"] == stack)
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn scheduler_enabled_false_runs_no_due_job_and_true_runs_it() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-sched");
    let _guard = ProjectGuard::new(&project);
    let compose = format!(
        "services:\n  web:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n  job:\n    image: {image}\n    command: [\"true\"]\n    network_mode: none\n    labels:\n      cd.doco.job.enabled: \"true\"\n      cd.doco.job.schedule: \"@every 2s\"\n"
    );
    let (repo, _) = HttpRepo::with_stack(&project, &compose);
    let data = tempfile::tempdir().unwrap();
    let key = "e2e-api-key";
    let vars = |scheduler: Option<&str>| {
        let mut vars = vec![
            ("POLL_CONFIG", poll_config(&[repo.url()])),
            ("API_SECRET", key.to_string()),
        ];
        if let Some(value) = scheduler {
            vars.push(("SCHEDULER_ENABLED", value.to_string()));
        }
        vars
    };

    // What this daemon's scheduler did is its own record (the API), whatever else runs on the engine.
    let mut off = Daemon::start(data.path(), &vars(Some("false")));
    running_container(&off, &project, "web");
    off.wait_for("the job listed", Duration::from_secs(30), || {
        listed_job(&off, key, &project)["enabled"] == true
    });
    // Three schedule periods and more, counted by the daemon's own one-second polls.
    off.wait_polls(4.0);
    off.wait_polls(3.0);
    let job = listed_job(&off, key, &project);
    assert!(
        job.get("last_run_at").is_none(),
        "SCHEDULER_ENABLED=false ran a due job: {job}"
    );
    let log = off.log();
    assert!(log.contains("job scheduler disabled"), "{log}");
    assert!(!log.contains("scheduled run started"), "{log}");
    off.stop();

    // The positive control: the same stack under a daemon with the default runs the job.
    let on = Daemon::start(data.path(), &vars(Some("true")));
    on.wait_for(
        "the job run by the default scheduler",
        Duration::from_secs(60),
        || listed_job(&on, key, &project).get("last_run_at").is_some(),
    );
    assert!(on.log().contains("scheduled run started"), "{}", on.log());
}

#[test]
fn wait_running_jobs_holds_a_deploy_until_the_stacks_running_job_finished() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-waitjob");
    let _guard = ProjectGuard::new(&project);
    let compose = |arg: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    command: [\"sleep\", \"{arg}\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n  job:\n    image: {image}\n    command: [\"sleep\", \"8\"]\n    network_mode: none\n    labels:\n      cd.doco.job.enabled: \"true\"\n      cd.doco.job.schedule: \"@every 1h\"\n"
        )
    };
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\nwait_running_jobs: true\n"),
    );
    repo.work.write("compose.yml", &compose("9501"));
    repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config(&[repo.url()])),
            ("SCHEDULER_ENABLED", "true".to_string()),
        ],
    );
    let web = running_container(&daemon, &project, "web");
    let mut job = String::new();
    // The deploy that creates the job container has ended (its poll is recorded) before the job's
    // container is looked up, so the id is the one that stays.
    daemon.wait_polls(1.0);
    daemon.wait_for("the job container created", Duration::from_secs(30), || {
        job = container_ids(&project, "job").pop().unwrap_or_default();
        !job.is_empty()
    });

    // A run of the job (8 s) is under way when a change of web arrives. (With
    // `wait_running_jobs: false` web is recreated while the job still runs.)
    docker(&["start", &job]);
    assert_eq!(container_state(&job), "running");
    repo.work.write("compose.yml", &compose("9502"));
    repo.push("web changes while the job runs");
    let mut job_state_when_recreated = String::new();
    daemon.wait_for("web recreated", Duration::from_secs(60), || {
        let ids = container_ids(&project, "web");
        let recreated = !ids.is_empty() && ids != vec![web.clone()];
        if recreated {
            job_state_when_recreated = container_state(&job);
        }
        recreated
    });
    assert_ne!(
        job_state_when_recreated, "running",
        "the deploy did not wait for the running job"
    );
    assert!(
        daemon
            .log()
            .contains("waiting for running scheduled jobs to finish before deployment"),
        "{}",
        daemon.log()
    );
}
