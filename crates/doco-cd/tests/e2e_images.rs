//! End-to-end scenario of `force_image_pull` with a moved tag (issue 10, item 4): the built
//! `doco-cd` binary, a real registry (Debian's `docker-registry` with htpasswd auth, credentials
//! only in `config.json`) and the real engine. At an unchanged commit, a tag pushed anew in the
//! registry redeploys the one service that uses it in the deployment that sets
//! `force_image_pull`; its sibling service, and the same stack deployed without
//! `force_image_pull`, keep their containers.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

// Shared with e2e.rs; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use doco_testkit::docker::{ProjectGuard, container_ids, docker, require_docker, test_image};
use doco_testkit::registry::{Registry, TagGuard, auth_config, push};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container};

/// The id of the image container `id` runs.
fn image_of(id: &str) -> String {
    docker(&["inspect", "--format", "{{.Image}}", id])
        .trim()
        .to_string()
}

/// A copy of `base` with another id (one more label), tagged `tag`.
fn variant_of(base: &str, tag: &str) -> String {
    let container = docker(&["create", base]).trim().to_string();
    docker(&[
        "commit",
        "--change",
        "LABEL doco.test.variant=b",
        &container,
        tag,
    ]);
    docker(&["rm", &container]);
    docker(&["inspect", "--format", "{{.Id}}", tag])
        .trim()
        .to_string()
}

/// Two services on registry images: `app` on the tag that moves, `other` on one that does not
/// (`force_image_pull` pulls every image of the stack, so none may be local-only).
fn stack(tagged: &str, steady: &str) -> String {
    let service = |name: &str, image: &str| {
        format!(
            "  {name}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_grace_period: 1s\n"
        )
    };
    format!(
        "services:\n{}{}",
        service("app", tagged),
        service("other", steady)
    )
}

#[test]
fn a_moved_tag_redeploys_only_its_service_with_force_image_pull() {
    if !require_docker() {
        return;
    }
    let (user, password) = ("deployer", unique_name("pw-moved"));
    let registry = Registry::start(user, &password);
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("config.json"),
        auth_config(&registry.host(), user, &password),
    )
    .unwrap();
    let tagged = format!("{}/{}:latest", registry.host(), unique_name("moved"));
    let _tagged_guard = TagGuard(tagged.clone());
    let image_a = docker(&["inspect", "--format", "{{.Id}}", &test_image()])
        .trim()
        .to_string();
    let steady = format!("{}/{}:1", registry.host(), unique_name("steady"));
    let _steady_guard = TagGuard(steady.clone());
    for image in [&tagged, &steady] {
        docker(&["tag", &test_image(), image]);
        push(credentials.path(), image);
    }

    let forced = unique_name("doco-e2e-moved-on");
    let plain = unique_name("doco-e2e-moved-off");
    let _guards = (ProjectGuard::new(&forced), ProjectGuard::new(&plain));
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!(
            "name: {forced}\nforce_image_pull: true\ncompose_files: [compose.yml]\n---\nname: {plain}\ncompose_files: [compose.yml]\n"
        ),
    );
    repo.work.write("compose.yml", &stack(&tagged, &steady));
    repo.push("two stacks on one moving tag");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            (
                "POLL_CONFIG",
                format!("- url: {}\n  reference: main\n  interval: 2s\n", repo.url()),
            ),
            ("DOCKER_CONFIG", credentials.path().display().to_string()),
        ],
    );
    let app = running_container(&daemon, &forced, "app");
    let other = running_container(&daemon, &forced, "other");
    let plain_app = running_container(&daemon, &plain, "app");
    assert_eq!(image_of(&app), image_a);
    daemon.wait_polls(2.0);
    assert_eq!(
        container_ids(&forced, "app"),
        vec![app.clone()],
        "nothing moved yet"
    );

    // Another machine pushes image B to the same tag; locally the tag still names image A.
    let variant = unique_name("doco-test/variant");
    let _variant_guard = TagGuard(variant.clone());
    let image_b = variant_of(&test_image(), &variant);
    assert_ne!(image_a, image_b);
    docker(&["tag", &variant, &tagged]);
    push(credentials.path(), &tagged);
    docker(&["tag", &test_image(), &tagged]);

    daemon.wait_for("the moved tag's service recreated on image B", Duration::from_secs(90), || {
        matches!(container_ids(&forced, "app").as_slice(), [id] if id != &app && image_of(id) == image_b)
    });
    daemon.wait_polls(2.0);
    assert_eq!(
        container_ids(&forced, "other"),
        vec![other],
        "the sibling service is untouched"
    );
    assert_eq!(
        container_ids(&plain, "app"),
        vec![plain_app.clone()],
        "without force_image_pull nothing happens"
    );
    assert_eq!(image_of(&plain_app), image_a);
    let log = daemon.log();
    assert!(
        !log.contains(&password),
        "the password reached the log:\n{log}"
    );
}
