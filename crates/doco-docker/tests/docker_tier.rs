//! Docker tier: doco-docker against the real engine and the real `docker compose`.
//!
//! Every test uses its own project name and a [`ProjectGuard`], so it removes what it created even
//! when it fails, and never touches anything else on the engine. Timings are printed (run with
//! `--nocapture` to see them).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use doco_docker::{
    Compose, ComposeError, ComposeProject, ContainerState, DockerError, Engine, PullPolicy,
    UpOptions, labels, write_label_override,
};
use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, docker, require_docker, test_image, wait_until,
};
use doco_testkit::unique_name;

fn compose() -> Compose {
    Compose::new(
        Compose::docker_env(&doco_docker::Endpoint::from_process_env().unwrap(), None),
        true,
    )
}

/// `docker compose up` of `p` with the label override `ov`, its duration printed as `what`.
async fn timed_up(p: &ComposeProject, ov: &Path, what: &str) {
    let started = Instant::now();
    compose().up(p, ov, &up_options()).await.unwrap();
    eprintln!(
        "timing: {what} docker compose up took {:?}",
        started.elapsed()
    );
}

fn up_options() -> UpOptions {
    UpOptions {
        remove_orphans: true,
        force_recreate: false,
        pull: PullPolicy::Never,
        timeout: Duration::from_secs(120),
        services: Vec::new(),
    }
}

/// A project dir holding `compose.yaml` with `body`, and the project description for it.
fn project(dir: &Path, name: &str, body: &str) -> ComposeProject {
    std::fs::write(dir.join("compose.yaml"), body).unwrap();
    ComposeProject {
        name: name.to_string(),
        project_dir: dir.to_path_buf(),
        files: vec![dir.join("compose.yaml")],
        ..ComposeProject::default()
    }
}

/// One long-running service that dies at once on `docker stop` (busybox as PID 1 ignores SIGTERM).
fn long_running(image: &str, service: &str) -> String {
    format!(
        "services:\n  {service}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    \
         restart: unless-stopped\n    stop_signal: SIGKILL\n"
    )
}

fn labels_for(service: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
    BTreeMap::from([(
        service.to_string(),
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )])
}

fn override_path(dir: &Path) -> PathBuf {
    dir.join("doco-labels.json")
}

#[tokio::test]
async fn render_two_service_project() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("interp.env"), "IMG=wrong/image:0\n").unwrap();
    std::fs::write(dir.path().join("svc.env"), "FROM_ENV_FILE=secret-value\n").unwrap();
    let name = unique_name("dd-render");
    let body = "services:
  web:
    image: ${IMG}
    command: [\"sleep\", \"3600\"]
    restart: unless-stopped
    deploy:
      replicas: 2
    volumes:
      - ./data:/data
    env_file: svc.env
    labels:
      leak: \"${CARGO_PKG_NAME:-absent}\"
    healthcheck:
      test: [\"CMD\", \"true\"]
  job:
    image: ${IMG}
    command: [\"true\"]
    restart: \"no\"
  extra:
    image: ${IMG}
    profiles: [\"extra\"]
";
    let mut p = project(dir.path(), &name, body);
    p.env_files = vec![dir.path().join("interp.env")];
    p.environment = BTreeMap::from([("IMG".to_string(), image.clone())]);

    let started = Instant::now();
    let r = compose().render(&p).await.unwrap();
    eprintln!(
        "timing: docker compose config (render) took {:?}",
        started.elapsed()
    );

    assert_eq!(r.name, name);
    assert_eq!(
        r.services.keys().collect::<Vec<_>>(),
        ["job", "web"],
        "the inactive profile is not rendered"
    );
    let web = &r.services["web"];
    // The project's environment overrides the env file.
    assert_eq!(web.image.as_deref(), Some(image.as_str()));
    assert_eq!(web.restart.as_deref(), Some("unless-stopped"));
    assert_eq!(web.replicas, 2);
    assert!(web.must_run());
    assert!(web.has_healthcheck);
    assert!(!web.has_build);
    let data = dir.path().join("data");
    let svc_env = dir.path().join("svc.env");
    assert!(web.local_inputs.contains(&data), "{:?}", web.local_inputs);
    assert!(
        web.local_inputs.contains(&svc_env),
        "{:?}",
        web.local_inputs
    );
    // Values of env files stay out of the spec.
    assert!(
        !web.spec.to_string().contains("secret-value"),
        "{}",
        web.spec
    );
    // doco-cd's own environment does not reach compose.
    if std::env::var("CARGO_PKG_NAME").is_ok() {
        assert_eq!(web.spec["labels"]["leak"], "absent");
    }
    let job = &r.services["job"];
    assert_eq!(job.restart.as_deref(), Some("no"));
    assert_eq!(job.replicas, 1);
    assert!(!job.must_run());

    // Profiles enable services.
    p.profiles = vec!["extra".to_string()];
    let r = compose().render(&p).await.unwrap();
    assert!(r.services.contains_key("extra"));
}

#[tokio::test]
async fn labels_decide_between_keep_start_and_recreate() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-labels");
    let _guard = ProjectGuard::new(&name);
    let p = project(dir.path(), &name, &long_running(&image, "web"));
    let ov = override_path(dir.path());
    let v1 = labels_for(
        "web",
        &[
            (labels::MANAGER, labels::MANAGER_VALUE),
            (labels::DEPLOYMENT_TARGET_SHA, "aaaa"),
            (labels::SOURCE_URL, "https://example.com/$weird"),
        ],
    );
    write_label_override(&ov, &v1).unwrap();

    timed_up(&p, &ov, "first").await;
    let ids = container_ids(&name, "web");
    assert_eq!(ids.len(), 1);
    let first = ids[0].clone();
    let got = docker(&["inspect", "--format", "{{json .Config.Labels}}", &first]);
    let got: BTreeMap<String, String> = serde_json::from_str(&got).unwrap();
    assert_eq!(got[labels::MANAGER], "doco-cd");
    assert_eq!(got[labels::DEPLOYMENT_TARGET_SHA], "aaaa");
    assert_eq!(got[labels::SOURCE_URL], "https://example.com/$weird");

    // Same labels: untouched.
    timed_up(&p, &ov, "no-op").await;
    assert_eq!(container_ids(&name, "web"), vec![first.clone()]);
    assert_eq!(container_state(&first), "running");

    // Stopped, same labels: merely started.
    docker(&["stop", &first]);
    assert_eq!(container_state(&first), "exited");
    timed_up(&p, &ov, "healing").await;
    assert_eq!(container_ids(&name, "web"), vec![first.clone()]);
    assert_eq!(container_state(&first), "running");

    // A changed label value: recreated.
    let v2 = labels_for(
        "web",
        &[
            (labels::MANAGER, labels::MANAGER_VALUE),
            (labels::DEPLOYMENT_TARGET_SHA, "bbbb"),
            (labels::SOURCE_URL, "https://example.com/$weird"),
        ],
    );
    write_label_override(&ov, &v2).unwrap();
    timed_up(&p, &ov, "recreating").await;
    let ids = container_ids(&name, "web");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], first, "a changed label must recreate the container");
    assert_eq!(container_state(&ids[0]), "running");

    compose().down(&name, true, false).await.unwrap();
    assert!(container_ids(&name, "web").is_empty());
}

#[tokio::test]
async fn compose_containers_groups_by_project() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let engine = Engine::connect().unwrap();
    engine.ping().await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (name_a, name_b) = (unique_name("dd-group-a"), unique_name("dd-group-b"));
    let (_ga, _gb) = (ProjectGuard::new(&name_a), ProjectGuard::new(&name_b));

    let pa = project(dir_a.path(), &name_a, &long_running(&image, "web"));
    let body_b = format!(
        "{}  worker:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n",
        long_running(&image, "api")
    );
    let pb = project(dir_b.path(), &name_b, &body_b);
    let ov_a = override_path(dir_a.path());
    let ov_b = override_path(dir_b.path());
    write_label_override(&ov_a, &labels_for("web", &[(labels::DEPLOYMENT_NAME, "a")])).unwrap();
    let mut lb = labels_for("api", &[(labels::DEPLOYMENT_NAME, "b")]);
    lb.insert(
        "worker".into(),
        BTreeMap::from([(labels::DEPLOYMENT_NAME.to_string(), "b".to_string())]),
    );
    write_label_override(&ov_b, &lb).unwrap();
    compose().up(&pa, &ov_a, &up_options()).await.unwrap();
    compose().up(&pb, &ov_b, &up_options()).await.unwrap();
    let worker = container_ids(&name_b, "worker").remove(0);
    docker(&["stop", &worker]);

    let started = Instant::now();
    let all = engine.compose_containers().await.unwrap();
    eprintln!(
        "timing: compose_containers (one API call) took {:?}",
        started.elapsed()
    );

    let a = &all[&name_a];
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].project, name_a);
    assert_eq!(a[0].service, "web");
    assert_eq!(a[0].state, ContainerState::Running);
    assert_eq!(a[0].labels[labels::DEPLOYMENT_NAME], "a");
    assert!(!a[0].oneoff);
    assert!(a[0].name.starts_with(&name_a), "{}", a[0].name);
    let hash = a[0].config_hash.clone().expect("config hash label");
    assert_eq!(hash.len(), 64);

    let b = &all[&name_b];
    let services: Vec<_> = b.iter().map(|c| (c.service.as_str(), c.state)).collect();
    assert_eq!(
        services,
        [
            ("api", ContainerState::Running),
            ("worker", ContainerState::Exited)
        ]
    );
    assert_eq!(b[1].id, worker);
    assert!(b.iter().all(|c| c.labels[labels::DEPLOYMENT_NAME] == "b"));
}

#[tokio::test]
async fn start_container_keeps_the_id() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let engine = Engine::connect().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-start");
    let _guard = ProjectGuard::new(&name);
    let p = project(dir.path(), &name, &long_running(&image, "web"));
    let ov = override_path(dir.path());
    write_label_override(&ov, &labels_for("web", &[(labels::MANAGER, "doco-cd")])).unwrap();
    compose().up(&p, &ov, &up_options()).await.unwrap();
    let id = container_ids(&name, "web").remove(0);
    docker(&["stop", &id]);
    assert_eq!(container_state(&id), "exited");

    let started = Instant::now();
    engine.start_container(&id).await.unwrap();
    eprintln!("timing: start_container took {:?}", started.elapsed());
    wait_until("the container to run", Duration::from_secs(20), || {
        container_state(&id) == "running"
    });
    assert_eq!(container_ids(&name, "web"), vec![id.clone()]);
    // Starting a running container is not an error.
    engine.start_container(&id).await.unwrap();
    // A container that does not exist is.
    let err = engine
        .start_container("doco-no-such-container")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("doco-no-such-container"), "{err}");
}

#[tokio::test]
async fn image_present_tells_local_images_apart() {
    if !require_docker() {
        return;
    }
    let engine = Engine::connect().unwrap();
    assert!(engine.image_present(&test_image()).await.unwrap());
    assert!(
        !engine
            .image_present("doco-test/made-up-image:does-not-exist")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn missing_or_invalid_compose_file_names_project_and_file() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-bad");
    let _guard = ProjectGuard::new(&name);
    let ov = override_path(dir.path());
    write_label_override(&ov, &BTreeMap::new()).unwrap();

    let missing = ComposeProject {
        name: name.clone(),
        project_dir: dir.path().to_path_buf(),
        files: vec![dir.path().join("nothere.yaml")],
        ..ComposeProject::default()
    };
    for err in [
        compose().render(&missing).await.unwrap_err(),
        compose()
            .up(&missing, &ov, &up_options())
            .await
            .unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, ComposeError::MissingFile { .. }), "{msg}");
        assert!(msg.contains(&name) && msg.contains("nothere.yaml"), "{msg}");
    }

    let bad = project(dir.path(), &name, "services:\n  a:\n    image: [unclosed\n");
    for err in [
        compose().render(&bad).await.unwrap_err(),
        compose().up(&bad, &ov, &up_options()).await.unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, ComposeError::Failed { .. }), "{msg}");
        assert!(msg.contains(&name), "{msg}");
        assert!(msg.contains("compose.yaml"), "{msg}");
        // compose's own explanation comes through.
        assert!(msg.contains("did not find expected"), "{msg}");
    }

    let invalid = project(dir.path(), &name, "services:\n  a:\n    imag: x\n");
    let err = compose().render(&invalid).await.unwrap_err();
    assert!(err.to_string().contains("imag"), "{err}");
}

#[tokio::test]
async fn missing_image_fails_fast_without_a_registry() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-noimage");
    let _guard = ProjectGuard::new(&name);
    let p = project(
        dir.path(),
        &name,
        "services:\n  a:\n    image: doco-test/does-not-exist:404\n    restart: always\n",
    );
    let ov = override_path(dir.path());
    write_label_override(&ov, &labels_for("a", &[(labels::MANAGER, "doco-cd")])).unwrap();
    let options = UpOptions {
        pull: PullPolicy::Missing,
        ..up_options()
    };
    let started = Instant::now();
    let err = compose().up(&p, &ov, &options).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("timing: failed pull (no registry) took {elapsed:?}: {err}");
    assert!(matches!(err, ComposeError::Failed { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&name) && msg.contains("up"), "{msg}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert!(container_ids(&name, "a").is_empty());
}

#[tokio::test]
async fn up_of_named_services_leaves_a_broken_sibling_alone() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-named");
    let _guard = ProjectGuard::new(&name);
    let body = format!(
        "{}  web:\n    image: doco-test/does-not-exist:1\n    restart: unless-stopped\n",
        long_running(&image, "proxy")
    );
    let p = project(dir.path(), &name, &body);
    let ov = override_path(dir.path());
    write_label_override(&ov, &labels_for("proxy", &[(labels::MANAGER, "doco-cd")])).unwrap();
    // As in a deploy: compose pulls what is missing first, and fails before creating anything.
    let pulling = UpOptions {
        pull: PullPolicy::Missing,
        ..up_options()
    };
    let whole = compose().up(&p, &ov, &pulling).await;
    assert!(whole.is_err(), "the whole project cannot come up");
    assert!(container_ids(&name, "proxy").is_empty(), "nothing started");
    let only_proxy = UpOptions {
        services: vec!["proxy".into()],
        ..up_options()
    };
    compose().up(&p, &ov, &only_proxy).await.unwrap();
    assert_eq!(container_ids(&name, "proxy").len(), 1);
    assert!(container_ids(&name, "web").is_empty());
}

#[tokio::test]
async fn up_times_out_and_kills_compose() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-timeout");
    let _guard = ProjectGuard::new(&name);
    let p = project(dir.path(), &name, &long_running(&image, "web"));
    let ov = override_path(dir.path());
    write_label_override(&ov, &BTreeMap::new()).unwrap();
    let options = UpOptions {
        timeout: Duration::from_millis(1),
        ..up_options()
    };
    let err = compose().up(&p, &ov, &options).await.unwrap_err();
    assert!(matches!(err, ComposeError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
}

#[tokio::test]
async fn compose_not_installed_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = project(dir.path(), "dd-noprog", "services: {}\n");
    let err = compose()
        .with_program("/nonexistent/doco-docker-cli")
        .render(&p)
        .await
        .unwrap_err();
    assert!(matches!(err, ComposeError::NotInstalled { .. }), "{err}");
}

#[tokio::test]
async fn unreachable_engine_names_the_socket() {
    let engine = Engine::connect_with_host("unix:///nonexistent/doco-docker.sock");
    let err = match engine {
        Err(e) => e,
        Ok(engine) => engine.ping().await.unwrap_err(),
    };
    eprintln!("unreachable engine: {err}");
    assert!(
        err.to_string().contains("/nonexistent/doco-docker.sock"),
        "{err}"
    );

    // A socket file nobody listens on: the client is built, the ping fails.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let host = format!("unix://{}", path.display());
    let engine = Engine::connect_with_host(&host).unwrap();
    let err = engine.ping().await.unwrap_err();
    eprintln!("dead socket: {err}");
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("dead.sock"), "{err}");
}

#[tokio::test]
async fn missing_project_dir_is_not_mistaken_for_missing_docker() {
    let p = ComposeProject {
        name: "dd-nodir".into(),
        project_dir: PathBuf::from("/nonexistent/doco-project"),
        ..ComposeProject::default()
    };
    let err = compose().render(&p).await.unwrap_err();
    assert!(
        matches!(err, ComposeError::MissingProjectDir { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("/nonexistent/doco-project"),
        "{err}"
    );
}

#[tokio::test]
async fn default_files_are_kept_when_an_override_is_added() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-defaults");
    let _guard = ProjectGuard::new(&name);
    std::fs::write(dir.path().join("compose.yaml"), long_running(&image, "web")).unwrap();
    std::fs::write(
        dir.path().join("compose.override.yaml"),
        "services:\n  web:\n    labels:\n      from-override-file: \"yes\"\n",
    )
    .unwrap();
    let p = ComposeProject {
        name: name.clone(),
        project_dir: dir.path().to_path_buf(),
        ..ComposeProject::default()
    };
    let rendered = compose().render(&p).await.unwrap();
    assert_eq!(
        rendered.services["web"].spec["labels"]["from-override-file"],
        "yes"
    );
    let ov = override_path(dir.path());
    write_label_override(&ov, &labels_for("web", &[(labels::MANAGER, "doco-cd")])).unwrap();
    compose().up(&p, &ov, &up_options()).await.unwrap();
    let id = container_ids(&name, "web").remove(0);
    let got = docker(&["inspect", "--format", "{{json .Config.Labels}}", &id]);
    let got: BTreeMap<String, String> = serde_json::from_str(&got).unwrap();
    assert_eq!(got["from-override-file"], "yes");
    assert_eq!(got[labels::MANAGER], "doco-cd");
}

#[test]
fn project_guard_cleans_up_on_panic() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let name = unique_name("dd-guard");
    let label = format!("com.docker.compose.project={name}");
    docker(&["create", "--label", &label, &image, "sleep", "1"]);
    docker(&["network", "create", "--label", &label, &name]);
    docker(&["volume", "create", "--label", &label, &name]);
    let result = std::panic::catch_unwind(|| {
        let _guard = ProjectGuard::new(&name);
        panic!("a failing test");
    });
    assert!(result.is_err());
    let filter = format!("label={label}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]).trim(), "");
    assert_eq!(
        docker(&["network", "ls", "-q", "--filter", &filter]).trim(),
        ""
    );
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &filter]).trim(),
        ""
    );
}

#[tokio::test]
async fn a_container_learns_its_own_id_and_where_its_data_volume_lives() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let engine = Engine::connect().unwrap();
    let volume = tempfile::tempdir().unwrap();
    let name = unique_name("dd-self");
    let _guard = ProjectGuard::new(&name);
    let mount = format!("{}:/data", volume.path().display());
    let project_label = format!("com.docker.compose.project={name}");
    // What doco-cd would read inside its own container.
    let mountinfo = docker(&[
        "run",
        "--rm",
        "--label",
        &project_label,
        "-v",
        &mount,
        &image,
        "cat",
        "/proc/self/mountinfo",
    ]);
    let id_inside = doco_docker::container_id_from_mountinfo(&mountinfo);
    assert!(
        id_inside.as_deref().is_some_and(|id| id.len() == 64),
        "{mountinfo}"
    );

    let id = docker(&[
        "run",
        "-d",
        "--label",
        &project_label,
        "-v",
        &mount,
        &image,
        "sleep",
        "60",
    ]);
    let id = id.trim();
    assert_eq!(
        engine.mount_source(id, Path::new("/data")).await.unwrap(),
        Some(volume.path().to_path_buf())
    );
    assert_eq!(
        engine
            .mount_source(id, Path::new("/elsewhere"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_plain_engine_is_not_a_swarm_manager() {
    if !require_docker() {
        return;
    }
    // The Swarm phase of the test command runs alone, after this one; here the engine is plain.
    assert!(!Engine::connect().unwrap().is_swarm_manager().await.unwrap());
}

#[tokio::test]
async fn events_of_doco_cd_containers_arrive_and_restart_keeps_the_container() {
    use futures_util::StreamExt;
    if !require_docker() {
        return;
    }
    let image = test_image();
    let engine = Engine::connect().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-events");
    let _guard = ProjectGuard::new(&name);
    let p = project(dir.path(), &name, &long_running(&image, "web"));
    let ov = override_path(dir.path());
    write_label_override(&ov, &labels_for("web", &[(labels::MANAGER, "doco-cd")])).unwrap();
    compose().up(&p, &ov, &up_options()).await.unwrap();
    let id = container_ids(&name, "web").remove(0);

    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 1;
    let mut events = Box::pin(engine.container_events(Some(since * 1_000_000_000)));
    docker(&["stop", "-t", "1", &id]);
    let die = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.next().await.expect("stream ended").unwrap();
            if event.id == id && event.action == "die" {
                return event;
            }
        }
    })
    .await
    .expect("no die event");
    assert_eq!(die.project.as_deref(), Some(name.as_str()));
    assert_eq!(die.service.as_deref(), Some("web"));
    assert!(die.time >= since);

    let started_before = docker(&["inspect", "--format", "{{.State.StartedAt}}", &id]);
    engine.restart_container(&id, 1, None).await.unwrap();
    assert_eq!(container_state(&id), "running");
    assert_ne!(
        docker(&["inspect", "--format", "{{.State.StartedAt}}", &id]),
        started_before
    );
    assert_eq!(container_ids(&name, "web"), vec![id]);
}

#[tokio::test]
async fn down_can_remove_the_images_of_the_stack() {
    if !require_docker() {
        return;
    }
    let base = test_image();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-rmi");
    let _guard = ProjectGuard::new(&name);
    // A tag of our own, so removing it touches no image another test uses.
    let image = format!("doco-test/{name}:1");
    docker(&["tag", &base, &image]);
    let p = project(dir.path(), &name, &long_running(&image, "web"));
    let ov = override_path(dir.path());
    write_label_override(&ov, &labels_for("web", &[(labels::MANAGER, "doco-cd")])).unwrap();
    compose().up(&p, &ov, &up_options()).await.unwrap();

    compose().down(&name, true, true).await.unwrap();
    assert!(container_ids(&name, "web").is_empty());
    let engine = Engine::connect().unwrap();
    assert!(!engine.image_present(&image).await.unwrap());
    assert!(engine.image_present(&base).await.unwrap());
}

#[tokio::test]
async fn passed_environment_sits_between_the_deployments_environment_and_its_env_files() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("dd-passenv");
    let body = "services:\n  web:\n    image: busybox\n    labels:\n      from_os: \"${FROM_OS}\"\n      both: \"${BOTH}\"\n      from_file: \"${FROM_FILE}\"\n";
    std::fs::write(
        dir.path().join("interp.env"),
        "FROM_OS=file\nFROM_FILE=file\nBOTH=file\n",
    )
    .unwrap();
    let mut p = project(dir.path(), &name, body);
    p.env_files = vec![dir.path().join("interp.env")];
    p.environment = BTreeMap::from([("BOTH".to_string(), "deployment".to_string())]);
    let passed = BTreeMap::from([
        ("FROM_OS".to_string(), "os".to_string()),
        ("BOTH".to_string(), "os".to_string()),
    ]);
    let rendered = compose().with_passed_env(passed).render(&p).await.unwrap();
    let labels = &rendered.services["web"].spec["labels"];
    assert_eq!(
        labels["from_os"], "os",
        "the passed environment beats env files"
    );
    assert_eq!(
        labels["both"], "deployment",
        "the deployment's environment beats it"
    );
    assert_eq!(labels["from_file"], "file");
}
