//! End-to-end scenarios of the deploy engine's settings (issue 10): the built binary against a local
//! Git server and the real engine. Each setting a user writes must have its effect: `prune_images`
//! removes what no container uses any more and keeps what another stack uses; `timeout` waits for
//! health checks and fails naming the service and its last health output; `build` options reach
//! the build.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::time::Duration;

use doco_testkit::docker::{ProjectGuard, docker, require_docker, test_image};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container};

fn poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1s\n")
}

/// A local image of its own (a distinct id) built from the offline test image, removed on drop.
struct LocalImage(String);

impl LocalImage {
    fn build(name: &str) -> LocalImage {
        let tag = format!("doco-test/{}:1", unique_name(name));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {}\nLABEL doco.test.image={tag}\n", test_image()),
        )
        .unwrap();
        docker(&["build", "-q", "-t", &tag, &dir.path().display().to_string()]);
        LocalImage(tag)
    }

    fn exists(&self) -> bool {
        std::process::Command::new("docker")
            .args(["image", "inspect", &self.0])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .output();
    }
}

fn service(name: &str, image: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n"
    )
}

#[test]
fn prune_images_removes_what_no_container_uses_and_keeps_a_shared_image() {
    if !require_docker() {
        return;
    }
    let (old, shared, new) = (
        LocalImage::build("prune-old"),
        LocalImage::build("prune-shared"),
        LocalImage::build("prune-new"),
    );
    let project = unique_name("e2e-prune");
    let other = unique_name("e2e-prune-other");
    let _guards = (ProjectGuard::new(&project), ProjectGuard::new(&other));
    // Another stack, not doco-cd's, uses the shared image.
    docker(&[
        "run",
        "-d",
        "--label",
        &format!("com.docker.compose.project={other}"),
        "--network",
        "none",
        &shared.0,
        "sleep",
        "3600",
    ]);
    let compose = format!(
        "services:\n{}{}",
        service("web", &old.0),
        service("job", &shared.0)
    );
    let (repo, _) = HttpRepo::with_stack(&project, &compose);
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    running_container(&daemon, &project, "web");

    let moved = format!(
        "services:\n{}{}",
        service("web", &new.0),
        service("job", &new.0)
    );
    repo.work.write("compose.yml", &moved);
    repo.push("both services move to a new image");
    daemon.wait_for("the old image pruned", Duration::from_secs(60), || {
        !old.exists()
    });
    assert!(shared.exists(), "an image another stack uses is kept");
    assert!(new.exists());
}

#[test]
fn a_health_check_that_never_passes_fails_the_deploy_naming_the_service_and_its_output() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-health");
    let _guard = ProjectGuard::new(&project);
    let compose = format!(
        "services:\n  db:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"echo db is not ready yet; exit 1\"]\n      interval: 1s\n      retries: 1\n"
    );
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\ntimeout: 4\n"));
    repo.work.write("compose.yml", &compose);
    repo.push("a service that never turns healthy");
    let data = tempfile::tempdir().unwrap();
    let key = "e2e-api-key";
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config(&repo.url())),
            ("API_SECRET", key.to_string()),
        ],
    );
    let mut error = String::new();
    daemon.wait_for(
        "the deploy reported as failing",
        Duration::from_secs(60),
        || {
            let (_, body) = support::http_request(
                daemon.http_port,
                "GET",
                "/v1/api/repositories",
                &[("x-api-key", key)],
                "",
            );
            error = body["content"][0]["failing"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            !error.is_empty()
        },
    );
    assert!(
        error.contains("service db is not healthy 4s after the deploy"),
        "{error}"
    );
    assert!(error.contains("db is not ready yet"), "{error}");
    assert!(daemon.metric("doco_cd_deployment_errors_total", &[]) >= 1.0);
}

#[test]
fn build_args_reach_the_image_a_changed_context_rebuilds_only_its_service_and_a_failed_build_changes_nothing()
 {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-build");
    let _guard = ProjectGuard::new(&project);
    let built = format!("{project}-web");
    let _built_image = BuiltImage(built.clone());
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!(
            "name: {project}\nbuild:\n  args:\n    GREETING: hello-from-build\n  no_cache: true\n"
        ),
    );
    repo.work.write(
        "app/Dockerfile",
        &format!("FROM {image}\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n"),
    );
    repo.work.write(
        "compose.yml",
        &format!(
            "services:\n  web:\n    build: ./app\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n{}",
            service("sidecar", &image)
        ),
    );
    repo.push("a service built from the repository");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    let web = running_container(&daemon, &project, "web");
    let sidecar = running_container(&daemon, &project, "sidecar");
    assert_eq!(
        docker(&["exec", &web, "cat", "/greeting"]).trim(),
        "hello-from-build"
    );

    // A changed Dockerfile rebuilds and recreates web only.
    repo.work.write(
        "app/Dockerfile",
        &format!("FROM {image}\nARG GREETING\nRUN echo \"$GREETING, again\" > /greeting\n"),
    );
    repo.push("the Dockerfile changes");
    let mut rebuilt = String::new();
    daemon.wait_for("web rebuilt and recreated", Duration::from_secs(90), || {
        rebuilt = doco_testkit::docker::container_ids(&project, "web")
            .pop()
            .unwrap_or_default();
        !rebuilt.is_empty()
            && rebuilt != web
            && doco_testkit::docker::container_state(&rebuilt) == "running"
    });
    assert_eq!(
        docker(&["exec", &rebuilt, "cat", "/greeting"]).trim(),
        "hello-from-build, again"
    );
    assert_eq!(
        doco_testkit::docker::container_ids(&project, "sidecar"),
        vec![sidecar.clone()]
    );

    // A build that fails leaves the running containers as they are.
    repo.work.write(
        "app/Dockerfile",
        &format!("FROM {image}\nRUN echo {project} && exit 3\n"),
    );
    repo.push("a Dockerfile that cannot build");
    let errors = daemon.metric("doco_cd_deployment_errors_total", &[]);
    daemon.wait_for("the failed build reported", Duration::from_secs(90), || {
        daemon.metric("doco_cd_deployment_errors_total", &[]) > errors
    });
    assert_eq!(
        doco_testkit::docker::container_ids(&project, "web"),
        vec![rebuilt.clone()]
    );
    assert_eq!(doco_testkit::docker::container_state(&rebuilt), "running");
    assert_eq!(
        doco_testkit::docker::container_ids(&project, "sidecar"),
        vec![sidecar]
    );
}

/// An image compose built for a test, removed on drop, with the containers a failed build of it
/// left behind (the classic builder keeps the container of a failed `RUN`; its command names the
/// image).
struct BuiltImage(String);

impl Drop for BuiltImage {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).to_string())
                .unwrap_or_default()
        };
        let project = self.0.trim_end_matches("-web");
        let all = docker(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"]);
        for line in all.lines().filter(|line| line.contains(project)) {
            if let Some(id) = line.split_whitespace().next() {
                docker(&["rm", "-f", id]);
            }
        }
        docker(&["image", "rm", "-f", &self.0]);
    }
}

#[test]
fn files_excluded_from_recreation_are_updated_in_place_and_the_service_is_signalled() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-live");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    // On SIGHUP the service records the content of its ignored files as it sees them.
    repo.work.write(
        "compose.yml",
        &format!(
            r#"services:
  proxy:
    image: {image}
    command: ["sh", "-c", "trap 'cat /conf/app.conf /single.conf /app-config > /tmp/reloaded' HUP; while true; do sleep 0.2 & wait $$!; done"]
    restart: unless-stopped
    network_mode: none
    stop_signal: SIGKILL
    labels:
      cd.doco.deployment.recreate.ignore: "{{bindMounts: [/conf, /single.conf], configs: [app]}}"
      cd.doco.deployment.recreate.ignore.signal: SIGHUP
    volumes:
      - ./conf:/conf:ro
      - ./single.conf:/single.conf:ro
    configs:
      - source: app
        target: /app-config
configs:
  app:
    file: ./app.conf
"#
        ),
    );
    repo.work.write("conf/app.conf", "dir-v1\n");
    repo.work.write("single.conf", "single-v1\n");
    repo.work.write("app.conf", "config-v1\n");
    repo.push("a proxy that reloads its configuration on SIGHUP");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    let proxy = running_container(&daemon, &project, "proxy");
    assert_eq!(
        docker(&["exec", &proxy, "cat", "/single.conf"]).trim(),
        "single-v1"
    );
    // upstream's label and place: the stack's live copies in its repository's source directory.
    assert_eq!(
        support::label(&proxy, "cd.doco.deployment.live_resources"),
        "app.conf,conf,single.conf"
    );
    let format =
        "{{range .Mounts}}{{if eq .Destination \"/single.conf\"}}{{.Source}}{{end}}{{end}}";
    let source = docker(&["inspect", "--format", format, &proxy]);
    let live = data.path().join(format!(
        "127.0.0.1_{}/repo/live/default/{project}/root/single.conf",
        repo.server.port()
    ));
    assert_eq!(source.trim(), live.display().to_string());

    repo.work.write("conf/app.conf", "dir-v2\n");
    repo.work.write("single.conf", "single-v2\n");
    repo.work.write("app.conf", "config-v2\n");
    repo.push("change every ignored file");
    daemon.wait_for(
        "the proxy signalled with the new files",
        Duration::from_secs(60),
        || {
            std::process::Command::new("docker")
                .args(["exec", &proxy, "cat", "/tmp/reloaded"])
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout) == "dir-v2\nsingle-v2\nconfig-v2\n"
                })
        },
    );
    assert_eq!(
        doco_testkit::docker::container_ids(&project, "proxy"),
        vec![proxy],
        "not recreated"
    );
}

#[test]
fn a_deployment_with_a_docker_context_is_deployed_and_healed_on_that_contexts_engine() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-context");
    let _guard = ProjectGuard::new(&project);
    // The context's engine: the local one, reached only through a proxy socket of its own.
    let proxy = doco_testkit::docker_proxy::DockerProxy::start();
    let docker_config = tempfile::tempdir().unwrap();
    let created = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", docker_config.path())
        .args(["context", "create", "elsewhere", "--docker"])
        .arg(format!("host={}", proxy.docker_host()))
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\ncontext: elsewhere\n"),
    );
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service("web", &image)),
    );
    repo.push("a stack for another Docker context");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config(&repo.url())),
            ("DOCKER_CONFIG", docker_config.path().display().to_string()),
        ],
    );
    let web = running_container(&daemon, &project, "web");
    // doco-cd follows that engine's events through the context's socket.
    daemon.wait_for(
        "an event stream through the context",
        Duration::from_secs(30),
        || proxy.open_connections() > 0,
    );
    docker(&["stop", "-t", "1", &web]);
    daemon.wait_for(
        "web started again on its context",
        Duration::from_secs(30),
        || doco_testkit::docker::container_state(&web) == "running",
    );
    assert!(daemon.log().contains("deploying to another Docker context"));
}

/// Every variable of a feature this build does not have stops start-up with exit code 2 and an error
/// naming it, before anything is deployed (as does `MAX_DEPLOYMENT_LOOP_COUNT` set to anything but 0).
#[test]
fn unsupported_variables_stop_start_up_naming_them_and_deploy_nothing() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-refused-var");
    let _guard = ProjectGuard::new(&project);
    let (repo, _) =
        HttpRepo::with_stack(&project, &format!("services:\n{}", service("web", &image)));
    let data = tempfile::tempdir().unwrap();
    let mut refused: Vec<(String, &str)> = doco_config::env::UNSUPPORTED_VARIABLES
        .iter()
        .map(|name| (name.to_string(), "1"))
        .collect();
    refused.push(("SECRET_PROVIDER_SITE_URL".to_string(), "https://bao"));
    refused.push(("MAX_DEPLOYMENT_LOOP_COUNT".to_string(), "2"));
    assert!(
        !refused.iter().any(|(name, _)| name == "SCHEDULER_ENABLED"),
        "scheduled jobs are built"
    );
    for (name, value) in &refused {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_doco-cd"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("HTTP_PORT", support::free_port().to_string())
            .env("METRICS_PORT", support::free_port().to_string())
            .env("DATA_MOUNT_PATH", data.path())
            .env("DOCO_CD_MIN_POLL_INTERVAL", "1s")
            .env("POLL_CONFIG", poll_config(&repo.url()))
            .env(name, value)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(name.as_str()) && stderr.contains("not supported"),
            "{name}: {stderr}"
        );
    }
    assert!(
        doco_testkit::docker::container_ids(&project, "web").is_empty(),
        "nothing deployed"
    );
    // 0 is what doco-cd does (never force a redeploy): accepted.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doco-cd"))
        .args(["config", "env"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MAX_DEPLOYMENT_LOOP_COUNT", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Deploy keys this build cannot honour fail their own deployment naming the key, deploy nothing of
/// it, and leave the other deployments of the file alone.
#[test]
fn unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let good = unique_name("e2e-key-ok");
    let refused: Vec<(String, &str, String)> = [
        (
            "secrets",
            "external_secrets",
            "external_secrets: {TOKEN: op://vault/item/field}",
        ),
        (
            "swarm-c",
            "swarm.config_retention",
            "swarm: {config_retention: 3}",
        ),
        (
            "swarm-s",
            "swarm.secret_retention",
            "swarm: {secret_retention: -1}",
        ),
        ("version", "version", "version: doco.v2"),
        ("src", "source", "source: oci"),
        ("trust", "oci", "oci: {verify: true}"),
    ]
    .into_iter()
    .map(|(short, key, line)| {
        (
            unique_name(&format!("e2e-key-{short}")),
            key,
            line.to_string(),
        )
    })
    .collect();
    let _guards: Vec<ProjectGuard> = std::iter::once(&good)
        .chain(refused.iter().map(|(p, _, _)| p))
        .map(ProjectGuard::new)
        .collect();
    let mut config = format!("name: {good}\n");
    for (project, _, line) in &refused {
        config.push_str(&format!("---\nname: {project}\n{line}\n"));
    }
    let repo = HttpRepo::new();
    repo.work.write(".doco-cd.yml", &config);
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service("web", &image)),
    );
    repo.push("one deployment that can deploy, and one per unsupported key");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    running_container(&daemon, &good, "web");
    daemon.wait_for(
        "every refused deployment reported",
        Duration::from_secs(60),
        || {
            let log = daemon.log();
            refused
                .iter()
                .all(|(project, _, _)| log.contains(project.as_str()))
                && daemon.metric("doco_cd_deployment_errors_total", &[]) >= 5.0
        },
    );
    let log = daemon.log();
    for (project, key, _) in &refused {
        assert!(
            log.lines()
                .any(|line| line.contains(project.as_str()) && line.contains(key)),
            "{project} refused naming {key}:\n{log}"
        );
        assert!(
            doco_testkit::docker::container_ids(project, "web").is_empty(),
            "{project}: nothing deployed"
        );
    }
}

/// The keys that shape what compose deploys, in one deployment at its own `reference`: `git_depth`
/// makes that reference's checkout shallow, `working_dir` and `env_files` are where the files are
/// read, `environment` overrides the env file, `profiles` starts a profiled service (and only it),
/// and `remove_orphans` removes a service dropped from the compose file.
#[test]
fn a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-keys");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!(
            "name: {project}\nreference: dev\ngit_depth: 1\nworking_dir: app\nenv_files: [vars.env]\nenvironment: {{OVERRIDDEN: from-environment}}\nprofiles: [extra]\nremove_orphans: true\n"
        ),
    );
    repo.push("main names the deployment");
    let labelled = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    network_mode: none\n    stop_signal: SIGKILL\n    labels:\n      test.from_file: \"${{FROM_FILE}}\"\n      test.overridden: \"${{OVERRIDDEN}}\"\n{extra}"
        )
    };
    let compose = |with_old: bool| {
        let mut out = String::from("services:\n");
        out.push_str(&labelled("web", ""));
        out.push_str(&labelled("extra", "    profiles: [extra]\n"));
        out.push_str(&labelled("hidden", "    profiles: [other]\n"));
        if with_old {
            out.push_str(&labelled("old", ""));
        }
        out
    };
    repo.work.write(
        "app/vars.env",
        "FROM_FILE=from-env-file\nOVERRIDDEN=from-env-file\n",
    );
    repo.work.write("app/compose.yml", &compose(true));
    repo.work.commit("the stack, on dev");
    repo.work.push_branch("dev");
    repo.bare.update_server_info();

    let data = tempfile::tempdir().unwrap();
    // Over file:// (dumb HTTP cannot fetch shallow).
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", poll_config(&repo.bare.file_url()))],
    );
    let web = running_container(&daemon, &project, "web");
    running_container(&daemon, &project, "extra");
    let old = running_container(&daemon, &project, "old");
    assert_eq!(support::label(&web, "test.from_file"), "from-env-file");
    assert_eq!(support::label(&web, "test.overridden"), "from-environment");
    assert!(
        doco_testkit::docker::container_ids(&project, "hidden").is_empty(),
        "a service of a profile not listed is not deployed"
    );
    // git_depth: the repository's one mirror is shallow, `dev` holds one commit there.
    let shallow: Vec<_> = walk(data.path())
        .into_iter()
        .filter(|p| p.ends_with("mirror/shallow"))
        .collect();
    assert_eq!(shallow.len(), 1, "one shallow mirror: {shallow:?}");
    let mirror = shallow[0].parent().unwrap();
    assert_eq!(
        doco_testkit::git::git(mirror, &["rev-list", "--count", "refs/heads/dev"]).trim(),
        "1"
    );

    repo.work.write("app/compose.yml", &compose(false));
    repo.work.commit("old is dropped");
    repo.work.push_branch("dev");
    repo.bare.update_server_info();
    daemon.wait_for("the orphan removed", Duration::from_secs(60), || {
        doco_testkit::docker::container_ids(&project, "old").is_empty()
    });
    assert!(!old.is_empty());
}

/// Every path under `dir`, recursively (symlinks not followed).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// `DOCO_CD_LOG_FORMAT=json` writes one JSON object per log line; the client IP of a refused webhook
/// is read from `TRUSTED_PROXY_HEADER` only when the peer is in `TRUSTED_PROXY_NETWORKS`.
#[test]
fn json_logs_name_the_webhook_client_from_the_trusted_proxy_header_only() {
    if !require_docker() {
        return;
    }
    let refused_client = |networks: &str| {
        let data = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(
            data.path(),
            &[
                ("DOCO_CD_LOG_FORMAT", "json".to_string()),
                ("WEBHOOK_SECRET", "e2e-secret".to_string()),
                ("TRUSTED_PROXY_HEADER", "X-Real-IP".to_string()),
                ("TRUSTED_PROXY_NETWORKS", networks.to_string()),
            ],
        );
        let (status, _) = support::http_request(
            daemon.http_port,
            "PUT",
            "/v1/webhook",
            &[("X-Real-IP", "203.0.113.7")],
            "{}",
        );
        assert_eq!(status, 405);
        let mut line = serde_json::Value::Null;
        daemon.wait_for("the refusal logged", Duration::from_secs(10), || {
            let log = daemon.log();
            for text in log.lines().filter(|l| !l.trim().is_empty()) {
                let parsed: serde_json::Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {text}"));
                if text.contains("invalid http method") {
                    line = parsed;
                }
            }
            !line.is_null()
        });
        let text = line.to_string();
        assert!(text.contains("\"ip\""), "{text}");
        text
    };
    assert!(refused_client("127.0.0.0/8").contains("203.0.113.7"));
    let untrusted = refused_client("10.0.0.0/8");
    assert!(
        untrusted.contains("127.0.0.1") && !untrusted.contains("203.0.113.7"),
        "{untrusted}"
    );
}

/// `MAX_CONCURRENT_DEPLOYMENTS=1`: three deployments that each take a few seconds (a health check
/// `timeout` waits for) are applied one at a time; the others wait in the queue.
#[test]
fn max_concurrent_deployments_bounds_the_active_deployments() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let projects: Vec<String> = (0..3)
        .map(|i| unique_name(&format!("e2e-bound-{i}")))
        .collect();
    let _guards: Vec<ProjectGuard> = projects.iter().map(ProjectGuard::new).collect();
    let config: Vec<String> = projects
        .iter()
        .map(|p| format!("name: {p}\ntimeout: 30\n"))
        .collect();
    let repo = HttpRepo::new();
    repo.work.write(".doco-cd.yml", &config.join("---\n"));
    repo.work.write(
        "compose.yml",
        &format!(
            "services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"sleep 2; touch /tmp/ready; sleep 3600\"]\n    network_mode: none\n    stop_signal: SIGKILL\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]\n      interval: 1s\n      start_period: 10s\n"
        ),
    );
    repo.push("three slow deployments");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config(&repo.url())),
            ("MAX_CONCURRENT_DEPLOYMENTS", "1".to_string()),
        ],
    );
    let (mut most_active, mut most_queued) = (0.0f64, 0.0f64);
    daemon.wait_for("all three deployed", Duration::from_secs(120), || {
        let scrape = daemon.scrape();
        most_active = most_active.max(scrape.get("doco_cd_deployments_active", &[]));
        most_queued = most_queued.max(scrape.get("doco_cd_deployments_queued", &[]));
        projects.iter().all(|p| {
            doco_testkit::docker::container_ids(p, "web")
                .first()
                .is_some_and(|id| {
                    docker(&["inspect", "--format", "{{.State.Health.Status}}", id]).trim()
                        == "healthy"
                })
        }) && scrape.get("doco_cd_deployments_active", &[]) == 0.0
    });
    assert_eq!(most_active, 1.0, "never more than one deployment at once");
    assert!(most_queued >= 1.0, "the others waited: {most_queued}");
}

/// `DATA_HOST_PATH` is where compose (and so the engine) reads the files: a relative bind mount's
/// source is under it, not under `DATA_MOUNT_PATH`. `DOCKER_QUIET_DEPLOY=false` logs compose's own
/// output, which the default (`true`) discards.
#[test]
fn data_host_path_is_the_bind_source_and_a_loud_deploy_logs_compose_output() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let deploy = |quiet: &str| {
        let project = unique_name("e2e-hostpath");
        let guard = ProjectGuard::new(&project);
        let repo = HttpRepo::new();
        repo.work
            .write(".doco-cd.yml", &format!("name: {project}\n"));
        repo.work.write(
            "compose.yml",
            &format!(
                "services:\n  web:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    network_mode: none\n    stop_signal: SIGKILL\n    volumes:\n      - ./site:/site:ro\n"
            ),
        );
        repo.work.write("site/index.html", "hello\n");
        repo.push("a relative bind mount");
        let data = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        // Another name of the same directory, as the engine would see a volume from outside.
        let host_path = host.path().join("volume");
        let daemon = Daemon::start(
            data.path(),
            &[
                ("POLL_CONFIG", poll_config(&repo.url())),
                ("DATA_HOST_PATH", host_path.display().to_string()),
                ("DOCKER_QUIET_DEPLOY", quiet.to_string()),
            ],
        );
        let web = running_container(&daemon, &project, "web");
        let source = docker(&[
            "inspect",
            "--format",
            "{{range .Mounts}}{{.Source}}{{end}}",
            &web,
        ]);
        assert!(
            source.trim().starts_with(&host_path.display().to_string()),
            "{source} is under DATA_HOST_PATH {}",
            host_path.display()
        );
        assert_eq!(
            docker(&["exec", &web, "cat", "/site/index.html"]).trim(),
            "hello"
        );
        let log = daemon.log();
        drop(daemon);
        drop(guard);
        log
    };
    // A line of compose's output is logged as `compose: <line>` by the compose driver.
    let output = "doco_docker::compose: compose: ";
    let loud = deploy("false");
    assert!(loud.contains(output), "compose output logged:\n{loud}");
    let quiet = deploy("true");
    assert!(
        !quiet.contains(output),
        "compose output discarded:\n{quiet}"
    );
}

/// `git_depth` of a deployment at its poll's own reference shapes the poll's checkout from the next
/// fetch on (the checkout must be read before its deploy configuration can ask for a depth).
#[test]
fn git_depth_at_the_polls_own_reference_makes_its_mirror_shallow() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-depth");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service("web", &image)),
    );
    repo.push("first");
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\ngit_depth: 1\n"));
    repo.push("second: a shallow mirror is enough");
    let data = tempfile::tempdir().unwrap();
    // Over file:// (dumb HTTP cannot fetch shallow).
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", poll_config(&repo.bare.file_url()))],
    );
    running_container(&daemon, &project, "web");
    // The count of commits of `main` in the shallow mirror; a mirror being swapped is "not yet".
    let commits = || {
        walk(data.path())
            .into_iter()
            .filter(|p| p.ends_with("mirror/shallow"))
            .find_map(|shallow| {
                let mirror = shallow.parent()?.to_path_buf();
                let out = std::process::Command::new("git")
                    .args(["rev-list", "--count", "refs/heads/main"])
                    .current_dir(mirror)
                    .output()
                    .ok()?;
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            })
            .unwrap_or_default()
    };
    daemon.wait_for(
        "the poll's mirror made shallow",
        Duration::from_secs(60),
        || commits() == "1",
    );
}
