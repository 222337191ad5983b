//! End-to-end scenarios of scheduled jobs (issue 15): the built binary against a local Git server and
//! the real engine. A job labelled `@every 10s` runs on its schedule and never because of a deploy,
//! keeps running with the Git server down, is listed and run through the API and counted in the
//! metrics; `skip_running` skips an overlapping slot and a deploy waits for the running job;
//! `stop_services` holds the named services stopped for the whole run (no poll or engine event
//! brings them back early) and starts the same containers again afterwards.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::time::{Duration, Instant};

use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, docker, require_docker, test_image,
};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, http_request, running_container};

const KEY: &str = "e2e-jobs-key";

/// Every scheduler runs every job on the engine (as upstream), so two of these tests' daemons would
/// run each other's jobs: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1s\n")
}

/// A long-running service (restart unless-stopped) running `sleep ARG`.
fn web(image: &str, arg: &str) -> String {
    format!(
        "  web:\n    image: {image}\n    command: [\"sleep\", \"{arg}\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n"
    )
}

/// A job service `name` printing `run` then running `script`, with extra `labels` (indented lines).
fn job(name: &str, image: &str, script: &str, labels: &[(&str, &str)]) -> String {
    let mut out = format!(
        "  {name}:\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo run; {script}\"]\n    network_mode: none\n    stop_signal: SIGKILL\n    labels:\n      cd.doco.job.enabled: \"true\"\n"
    );
    for (key, value) in labels {
        out.push_str(&format!("      cd.doco.job.{key}: \"{value}\"\n"));
    }
    out
}

/// The single container of `service` in `project`, waiting until it exists.
fn created(daemon: &Daemon, project: &str, service: &str) -> String {
    let mut id = String::new();
    daemon.wait_for(
        &format!("{project}/{service} created"),
        Duration::from_secs(90),
        || match container_ids(project, service).as_slice() {
            [only] => {
                id = only.clone();
                true
            }
            _ => false,
        },
    );
    id
}

/// How many runs container `id` (a restart-mode job) made: its `run` log lines.
fn runs(id: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args(["logs", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim() == "run")
        .count()
}

fn daemon(data: &std::path::Path, repo: &HttpRepo) -> Daemon {
    Daemon::start(
        data,
        &[
            ("POLL_CONFIG", poll_config(&repo.url())),
            ("API_SECRET", KEY.to_string()),
            ("SCHEDULER_ENABLED", "true".to_string()),
        ],
    )
}

#[test]
fn an_every_10s_job_runs_on_schedule_never_at_deploy_is_listed_run_and_counted_and_keeps_its_schedule_offline()
 {
    if !require_docker() {
        return;
    }
    let _serial = serial();
    let image = test_image();
    let project = unique_name("e2e-jobs-every");
    let _guard = ProjectGuard::new(&project);
    let compose = format!(
        "services:\n{}{}{}",
        web(&image, "3600"),
        job("tick", &image, "sleep 1", &[("schedule", "@every 10s")]),
        job(
            "broken",
            &image,
            "exit 3",
            &[("schedule", "@every 10s"), ("notify_on", "none")]
        ),
    );
    let (mut repo, _) = HttpRepo::with_stack(&project, &compose);
    let data = tempfile::tempdir().unwrap();
    let daemon = daemon(data.path(), &repo);
    running_container(&daemon, &project, "web");
    let tick = created(&daemon, &project, "tick");
    let deployed = Instant::now();
    assert_eq!(runs(&tick), 0, "a deploy never runs a job");
    assert_eq!(
        container_state(&tick),
        "created",
        "the job is created, not started"
    );

    daemon.wait_for("two scheduled runs", Duration::from_secs(25), || {
        runs(&tick) >= 2
    });
    assert!(deployed.elapsed() <= Duration::from_secs(25));
    let name = format!("{project}-tick-1");
    daemon.wait_for("the runs counted", Duration::from_secs(10), || {
        daemon.metric("doco_cd_scheduled_runs_total", &[("job", &name)]) >= 2.0
    });
    let broken = format!("{project}-broken-1");
    daemon.wait_for(
        "the failing job counted as errors",
        Duration::from_secs(15),
        || daemon.metric("doco_cd_scheduled_run_errors_total", &[("job", &broken)]) >= 1.0,
    );
    assert_eq!(
        daemon.metric("doco_cd_scheduled_run_errors_total", &[("job", &name)]),
        0.0
    );
    let labels = [
        ("stack", project.as_str()),
        ("job", name.as_str()),
        ("mode", "container"),
        ("execution_mode", "restart"),
    ];
    assert!(daemon.metric("doco_cd_scheduled_run_duration_seconds_count", &labels) >= 2.0);

    // The API lists the jobs and runs one now.
    let (status, _) = http_request(daemon.http_port, "GET", "/v1/api/jobs", &[], "");
    assert_eq!(status, 401, "the API needs the key");
    let (status, body) = http_request(
        daemon.http_port,
        "GET",
        &format!("/v1/api/jobs?stack={project}"),
        &[("x-api-key", KEY)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let jobs = body["content"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{body}");
    let listed = jobs.iter().find(|j| j["name"] == name.as_str()).unwrap();
    assert_eq!(listed["schedule"], "@every 10s", "{listed}");
    assert_eq!(listed["stack"], project.as_str(), "{listed}");
    assert_eq!(listed["enabled"], true, "{listed}");
    assert!(listed["next_run_at"].is_string(), "{listed}");
    let before = runs(&tick);
    let (status, body) = http_request(
        daemon.http_port,
        "POST",
        "/v1/api/job/tick/run?wait=true",
        &[("x-api-key", KEY)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(runs(&tick) > before, "the API run ran the job");
    let (status, body) = http_request(
        daemon.http_port,
        "POST",
        "/v1/api/job/no-such-job/run",
        &[("x-api-key", KEY)],
        "",
    );
    assert_eq!(status, 404, "{body}");

    // With the Git server down the job keeps its schedule.
    repo.server.stop();
    daemon.wait_polls(2.0);
    let offline = runs(&tick);
    daemon.wait_for("two runs with Git down", Duration::from_secs(30), || {
        runs(&tick) >= offline + 2
    });
}

#[test]
fn skip_running_skips_an_overlapping_slot_and_a_deploy_waits_for_the_running_job() {
    if !require_docker() {
        return;
    }
    let _serial = serial();
    let image = test_image();
    let project = unique_name("e2e-jobs-skip");
    let _guard = ProjectGuard::new(&project);
    let job_labels = [("schedule", "@every 10s"), ("skip_running", "true")];
    let compose = |arg: &str| {
        format!(
            "services:\n{}{}",
            web(&image, arg),
            job("slow", &image, "sleep 14", &job_labels)
        )
    };
    let (repo, _) = HttpRepo::with_stack(&project, &compose("3600"));
    let data = tempfile::tempdir().unwrap();
    let daemon = daemon(data.path(), &repo);
    let old_web = running_container(&daemon, &project, "web");
    let slow = created(&daemon, &project, "slow");
    daemon.wait_for("the job running", Duration::from_secs(20), || {
        container_state(&slow) == "running"
    });

    // A change of the stack while its job runs waits for the job.
    repo.work.write("compose.yml", &compose("3601"));
    repo.push("web changes while the job runs");
    let name = format!("{project}-slow-1");
    daemon.wait_for(
        "an overlapping slot skipped",
        Duration::from_secs(20),
        || {
            daemon.metric(
                "doco_cd_scheduled_run_skipped_total",
                &[("job", &name), ("reason", "still_running")],
            ) >= 1.0
        },
    );
    assert_eq!(
        daemon.metric("doco_cd_scheduled_runs_active", &[("job", &name)]),
        1.0,
        "the skipped slot started no second run"
    );
    let mut new_web = String::new();
    daemon.wait_for(
        "web recreated",
        Duration::from_secs(60),
        || match container_ids(&project, "web").as_slice() {
            [only] if *only != old_web => {
                new_web = only.clone();
                true
            }
            _ => false,
        },
    );
    let finished = docker(&["inspect", "--format", "{{.State.FinishedAt}}", &slow]);
    let recreated = docker(&["inspect", "--format", "{{.Created}}", &new_web]);
    assert!(
        recreated.trim() >= finished.trim(),
        "the deploy waited for the job: web created at {recreated}, the job finished at {finished}"
    );
    assert!(
        daemon.log().contains("waiting for running scheduled jobs"),
        "{}",
        daemon.log()
    );
}

#[test]
fn stop_services_holds_the_named_services_stopped_for_the_run_and_starts_the_same_containers_after()
{
    if !require_docker() {
        return;
    }
    let _serial = serial();
    let image = test_image();
    let project = unique_name("e2e-jobs-stop");
    let other = unique_name("e2e-jobs-stop-other");
    let _guards = (ProjectGuard::new(&project), ProjectGuard::new(&other));
    // Engine events for a stop or an exit are acted on too: none of them may undo the job's stops
    // or run the job outside its schedule.
    let deploy_config = |name: &str| {
        format!("name: {name}\nreconciliation:\n  events: [die, stop, kill, unhealthy]\n")
    };
    // Another stack, polled from its own repository: its polls heal it while the job runs.
    let other_repo = HttpRepo::new();
    other_repo
        .work
        .write(".doco-cd.yml", &deploy_config(&other));
    other_repo.work.write(
        "compose.yml",
        &format!("services:\n{}", web(&image, "3600")),
    );
    other_repo.push("a service another stack's job stops");
    let stop = format!("web,{other}/web");
    let compose = format!(
        "services:\n{}{}",
        web(&image, "3600"),
        job(
            "backup",
            &image,
            "sleep 6",
            &[
                ("schedule", "@every 10s"),
                ("execution_mode", "one_off"),
                ("stop_services", &stop),
                ("skip_running", "true"),
            ],
        ),
    );
    let repo = HttpRepo::new();
    repo.work.write(".doco-cd.yml", &deploy_config(&project));
    repo.work.write("compose.yml", &compose);
    repo.push("a job that stops two services while it runs");
    let data = tempfile::tempdir().unwrap();
    let polls = format!(
        "{}{}",
        poll_config(&repo.url()),
        poll_config(&other_repo.url())
    );
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", polls),
            ("SCHEDULER_ENABLED", "true".to_string()),
        ],
    );
    let web_id = running_container(&daemon, &project, "web");
    let other_web = running_container(&daemon, &other, "web");
    let backup = created(&daemon, &project, "backup");

    daemon.wait_for(
        "both services stopped for the run",
        Duration::from_secs(25),
        || container_state(&web_id) != "running" && container_state(&other_web) != "running",
    );
    // The one-off copy runs for 6 s; polls every second and engine events must leave both down,
    // and the polls of the job's own repository go on (they do not wait for the run).
    let repo_label = repo
        .url()
        .trim_start_matches("http://")
        .trim_end_matches(".git")
        .to_string();
    let polls = || daemon.metric("doco_cd_polls_total", &[("repository", &repo_label)]);
    let polls_before = polls();
    let stopped_at = Instant::now();
    let mut copy_seen = false;
    while stopped_at.elapsed() < Duration::from_secs(4) {
        for (what, id) in [("web", &web_id), ("the other stack's web", &other_web)] {
            assert_ne!(
                container_state(id),
                "running",
                "{what} was started again during the run\n{}",
                daemon.log()
            );
        }
        copy_seen |= !docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("name={project}-backup-1-run-"),
        ])
        .trim()
        .is_empty();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(copy_seen, "a one-off copy ran the job");
    assert!(
        polls() >= polls_before + 2.0,
        "the job's repository was polled during the run ({polls_before} before, {} after)\n{}",
        polls(),
        daemon.log()
    );
    daemon.wait_for(
        "both services running again",
        Duration::from_secs(20),
        || container_state(&web_id) == "running" && container_state(&other_web) == "running",
    );
    assert_eq!(
        container_ids(&project, "web"),
        vec![web_id.clone()],
        "the same container is started again"
    );
    assert_eq!(container_ids(&other, "web"), vec![other_web.clone()]);
    let name = format!("{project}-backup-1");
    daemon.wait_for("the run counted", Duration::from_secs(10), || {
        daemon.metric(
            "doco_cd_scheduled_runs_total",
            &[("job", &name), ("execution_mode", "one_off")],
        ) >= 1.0
    });
    assert_eq!(
        daemon.metric("doco_cd_scheduled_run_errors_total", &[("job", &name)]),
        0.0
    );
    // The copy's exit (a `die` event of service backup) does not start the job's own container.
    daemon.wait_polls(2.0);
    assert_eq!(
        container_state(&backup),
        "created",
        "one_off leaves the job's own container alone\n{}",
        daemon.log()
    );
}
