//! The Swarm phase of the test command: run only by `scripts/test.sh` after every other test, on an
//! engine it switched to a single-node Swarm (`docker swarm init --advertise-addr 127.0.0.1`, left
//! again afterwards), because doco-cd behaves differently on a manager and no other test may run
//! meanwhile. Outside that phase (`DOCO_SWARM_PHASE` unset) these tests return at once.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::time::Duration;

use doco_testkit::docker::{ProjectGuard, test_image};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container, sleep_services};

/// Whether this run is the Swarm phase; the engine is then a Swarm manager.
fn swarm_phase() -> bool {
    if std::env::var("DOCO_SWARM_PHASE").as_deref() != Ok("1") {
        return false;
    }
    let info = doco_testkit::docker::docker(&["info", "--format", "{{.Swarm.ControlAvailable}}"]);
    assert_eq!(
        info.trim(),
        "true",
        "DOCO_SWARM_PHASE=1 but the engine is not a Swarm manager"
    );
    true
}

#[test]
fn on_a_swarm_manager_doco_cd_refuses_to_start_unless_swarm_features_are_off() {
    if !swarm_phase() {
        return;
    }
    let image = test_image();
    let project = unique_name("swarm-compose");
    let _guard = ProjectGuard::new(&project);
    let (repo, _) = HttpRepo::with_stack(&project, &sleep_services(&image, &[("web", "5101")]));
    let poll = format!("- url: {}\n  reference: main\n  interval: 1s\n", repo.url());

    // Stack deploys are not built: the default (DOCKER_SWARM_FEATURES=true) is refused, naming it.
    let data = tempfile::tempdir().unwrap();
    let mut refused = Daemon::spawn(data.path(), &[("POLL_CONFIG", poll.clone())]);
    let code = refused.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(2), "{}", refused.log());
    assert!(
        refused.log().contains("DOCKER_SWARM_FEATURES"),
        "{}",
        refused.log()
    );

    // With Swarm features off, the manager is deployed to with compose.
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll),
            ("DOCKER_SWARM_FEATURES", "false".to_string()),
        ],
    );
    running_container(&daemon, &project, "web");
}
