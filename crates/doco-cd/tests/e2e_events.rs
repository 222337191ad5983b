//! End-to-end scenarios of the engine-event path (issue 8, "events by identity, not by time"): the
//! built `doco-cd` binary against the real engine, with polls an hour apart so that only events, or
//! the re-check after a cut event stream, can bring a container back in time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

// Shared with e2e.rs; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, docker, require_docker, test_image,
};
use doco_testkit::docker_proxy::DockerProxy;
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container};

/// Polls an hour apart: nothing but the event path acts during a test.
fn slow_poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1h\n")
}

/// A compose file with long-running busybox services, each with `restart` as its restart policy.
fn services(image: &str, names: &[&str], restart: &str) -> String {
    let mut out = String::from("services:\n");
    for name in names {
        out.push_str(&format!(
            "  {name}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: \"{restart}\"\n    network_mode: none\n    stop_grace_period: 1s\n"
        ));
    }
    out
}

/// A repository whose one stack, `project`, has `compose` and the deploy-config `extra` lines.
fn repo_with(project: &str, compose: &str, extra: &str) -> HttpRepo {
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n{extra}"));
    repo.work.write("compose.yml", compose);
    repo.push("first");
    repo
}

fn started_at(id: &str) -> String {
    docker(&["inspect", "--format", "{{.State.StartedAt}}", id])
        .trim()
        .to_string()
}

/// Makes the engine log more events than it replays to a re-subscribing client (256), all
/// labelled like doco-cd's containers so that they pass its event filter, in compose project
/// `project`, which doco-cd does not deploy (the caller guards it).
fn flood_events(image: &str, project: &str) {
    let project_label = format!("com.docker.compose.project={project}");
    let ids: Vec<String> = (0..10)
        .map(|_| {
            docker(&[
                "run",
                "-d",
                "--network",
                "none",
                "--label",
                "cd.doco.metadata.manager=doco-cd",
                "--label",
                &project_label,
                image,
                "sleep",
                "3600",
            ])
            .trim()
            .to_string()
        })
        .collect();
    // 10 containers × 2 events × 15 rounds = 300 events, on top of the 10 creates and starts.
    for _ in 0..15 {
        for action in ["pause", "unpause"] {
            let mut args = vec![action];
            args.extend(ids.iter().map(String::as_str));
            docker(&args);
        }
    }
}

#[test]
fn a_killed_restart_no_container_subscribed_to_die_comes_back_without_a_poll() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-ev-die");
    let _guard = ProjectGuard::new(&project);
    let repo = repo_with(
        &project,
        &services(&image, &["web"], "no"),
        "reconciliation:\n  events: [die]\n",
    );
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", slow_poll_config(&repo.url()))],
    );
    let web = running_container(&daemon, &project, "web");

    // `docker kill` marks the container as stopped on purpose; with `restart: "no"` a plain
    // comparison with the desired state would leave it down.
    docker(&["kill", &web]);
    daemon.wait_for(
        "web running again after its die event",
        Duration::from_secs(20),
        || container_state(&web) == "running",
    );
    assert_eq!(
        container_ids(&project, "web"),
        vec![web],
        "brought back by a start, not a recreate"
    );
}

#[test]
fn after_a_cut_event_stream_a_container_stopped_meanwhile_is_healed_and_no_healthy_one_restarted() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-ev-cut");
    let noise = unique_name("e2e-ev-noise");
    let _guard = ProjectGuard::new(&project);
    let _noise_guard = ProjectGuard::new(&noise);
    // The default `reconciliation` (events: [unhealthy]): a stop is healed by the re-check alone.
    let repo = repo_with(
        &project,
        &services(&image, &["web", "sibling"], "unless-stopped"),
        "",
    );
    let proxy = DockerProxy::start();
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", slow_poll_config(&repo.url())),
            ("DOCKER_HOST", proxy.docker_host()),
        ],
    );
    let web = running_container(&daemon, &project, "web");
    let sibling = running_container(&daemon, &project, "sibling");
    let sibling_started = started_at(&sibling);
    daemon.wait_for(
        "doco-cd following the engine's events through the proxy",
        Duration::from_secs(20),
        || daemon.log().contains("doco-cd started") && proxy.open_connections() > 0,
    );

    proxy.cut();
    // On the real socket: doco-cd sees none of this while the proxy is cut.
    docker(&["stop", &web]);
    flood_events(&image, &noise);
    assert_eq!(container_state(&web), "exited");
    proxy.restore();

    daemon.wait_for(
        "web running again after the event stream came back",
        Duration::from_secs(30),
        || container_state(&web) == "running",
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
    assert_eq!(
        started_at(&sibling),
        sibling_started,
        "the healthy sibling was restarted because of the reconnect"
    );
    assert_eq!(container_state(&sibling), "running");
}

#[test]
fn a_stop_right_after_doco_cd_restarted_the_container_is_healed_too() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-ev-restop");
    let _guard = ProjectGuard::new(&project);
    let repo = repo_with(
        &project,
        &services(&image, &["web"], "unless-stopped"),
        "reconciliation:\n  events: [stop]\n",
    );
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", slow_poll_config(&repo.url()))],
    );
    let web = running_container(&daemon, &project, "web");

    let mut last_start = started_at(&web);
    for round in ["the first stop", "a stop right after the restart"] {
        docker(&["stop", &web]);
        daemon.wait_for(
            &format!("web restarted after {round}"),
            Duration::from_secs(20),
            || container_state(&web) == "running" && started_at(&web) != last_start,
        );
        last_start = started_at(&web);
        // Within the 5 s the old time window hid: about a second after it runs again.
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert_eq!(container_ids(&project, "web"), vec![web]);
}

/// The container listings (`GET …/containers/json`, the whole engine) among `requests`; a listing
/// filtered by one container's id (the view refreshing it after an event) is not one.
fn listings(requests: &[String]) -> usize {
    requests
        .iter()
        .filter(|r| r.contains("/containers/json") && !r.contains("%22id%22"))
        .count()
}

#[test]
fn quiet_polls_read_the_view_the_events_keep_and_list_no_container() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-ev-view");
    let _guard = ProjectGuard::new(&project);
    let repo = repo_with(
        &project,
        &services(&image, &["web"], "unless-stopped"),
        "reconciliation:\n  events: [stop]\n",
    );
    let proxy = DockerProxy::start();
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            (
                "POLL_CONFIG",
                format!("- url: {}\n  reference: main\n  interval: 1s\n", repo.url()),
            ),
            ("DOCKER_HOST", proxy.docker_host()),
        ],
    );
    let web = running_container(&daemon, &project, "web");
    daemon.wait_polls(2.0);
    let before = proxy.requests();
    daemon.wait_polls(3.0);
    let quiet = proxy.requests()[before.len()..].to_vec();
    assert_eq!(
        listings(&quiet),
        0,
        "quiet polls listed the engine's containers: {quiet:?}"
    );

    // A stop is seen through the events: healed, and the view follows (the next quiet polls list
    // nothing and leave web running).
    docker(&["stop", "-t", "1", &web]);
    daemon.wait_for("web started again", Duration::from_secs(30), || {
        container_state(&web) == "running"
    });
    daemon.wait_polls(2.0);
    let before = proxy.requests();
    daemon.wait_polls(3.0);
    let quiet = proxy.requests()[before.len()..].to_vec();
    assert_eq!(listings(&quiet), 0, "{quiet:?}");
    assert_eq!(container_state(&web), "running");
    assert_eq!(container_ids(&project, "web"), vec![web]);
}
