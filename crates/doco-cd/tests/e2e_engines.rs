//! End-to-end scenarios of issue 10's engines and registries: the built `doco-cd` binary reaching
//! the local engine over TLS (a proxy that demands a client certificate) and over `ssh://` (a local
//! `sshd`, through the docker CLI's `docker system dial-stdio`), and pulling a private image from a
//! real registry (Debian's `docker-registry` with htpasswd auth) with credentials only in
//! `config.json`, or only in `DOCKER_AUTH_CONFIG`.
//!
//! Each scenario deploys a stack, then stops its container: only doco-cd, reading the engine
//! through the same endpoint compose deployed to, brings it back (same container id).

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

// Shared with e2e.rs; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::Duration;

use doco_testkit::docker::{ProjectGuard, container_state, docker, require_docker, test_image};
use doco_testkit::registry::{Registry, TagGuard, auth_config, push};
use doco_testkit::sshd::{Sshd, current_user, keygen};
use doco_testkit::tls_proxy::TlsEngineProxy;
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container, sleep_services};

/// Polls every 2 s.
fn poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 2s\n")
}

/// A one-service stack on `image` (restart policy `unless-stopped`: doco-cd brings it back).
fn stack(image: &str) -> String {
    sleep_services(image, &[("web", "3600")])
}

/// Deploys `project` with doco-cd started with `vars`, then checks that doco-cd heals a stopped
/// container through the same engine (same id). Returns the daemon, still running.
fn deploy_and_heal(project: &str, image: &str, vars: &[(&str, String)]) -> Daemon {
    let (repo, _) = HttpRepo::with_stack(project, &stack(image));
    let data = tempfile::tempdir().unwrap();
    let mut all = vec![("POLL_CONFIG", poll_config(&repo.url()))];
    all.extend(vars.iter().cloned());
    let daemon = Daemon::start(data.path(), &all);
    let web = running_container(&daemon, project, "web");
    docker(&["stop", &web]);
    daemon.wait_for("web healed", Duration::from_secs(60), || {
        container_state(&web) == "running"
    });
    // The repository and the data dir must outlive the checks above only.
    drop((repo, data));
    daemon
}

#[test]
fn deploys_and_heals_over_tls_with_a_client_certificate() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("doco-e2e-tls");
    let _guard = ProjectGuard::new(&project);
    let proxy = TlsEngineProxy::start();
    let cert_dir = proxy.client_cert_dir();
    let _daemon = deploy_and_heal(
        &project,
        &image,
        &[
            ("DOCKER_HOST", proxy.docker_host()),
            ("DOCKER_TLS_VERIFY", "1".into()),
            ("DOCKER_CERT_PATH", cert_dir.display().to_string()),
        ],
    );
    assert!(proxy.handshakes() > 0, "nothing went through the TLS proxy");
}

#[test]
fn refuses_to_start_when_a_tls_file_is_missing() {
    let data = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config("http://127.0.0.1:9/repo.git")),
            ("DOCKER_HOST", "tcp://127.0.0.1:9".into()),
            ("DOCKER_TLS_VERIFY", "1".into()),
            ("DOCKER_CERT_PATH", empty.path().display().to_string()),
        ],
    );
    daemon.wait_for("doco-cd to exit", Duration::from_secs(20), || {
        daemon.log().contains("configuration error")
    });
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains(&format!("{}/ca.pem", empty.path().display()))
            && log.contains("DOCKER_CERT_PATH"),
        "{log}"
    );
}

/// An `ssh` first on PATH that uses `config` (ssh reads `~/.ssh/config` from the password
/// database, not from `HOME`): doco-cd's bridge and compose's ssh helper both run it.
fn ssh_wrapper(dir: &Path, config: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            config.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn deploys_and_heals_over_ssh_through_the_docker_cli_stdio_bridge() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("doco-e2e-ssh");
    let _guard = ProjectGuard::new(&project);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let public = keygen(&key, "ed25519", "");
    let sshd = Sshd::start(&public);
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let config = dir.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host 127.0.0.1\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
            key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    let host = format!("ssh://{}@127.0.0.1:{}", current_user(), sshd.port());
    let daemon = deploy_and_heal(
        &project,
        &image,
        &[
            ("DOCKER_HOST", host.clone()),
            ("PATH", ssh_wrapper(dir.path(), &config)),
        ],
    );
    assert!(
        doco_testkit::process_cmdlines()
            .iter()
            .any(|c| c.contains("docker system dial-stdio")),
        "no ssh bridge is running"
    );
    assert!(daemon.log().contains(&host), "{}", daemon.log());
}

/// A private registry holding the test image as `<registry>/private/busybox:<tag>`, absent locally.
fn private_image(registry: &Registry, user: &str, password: &str, tag: &str) -> (String, TagGuard) {
    let image = format!("{}/private/busybox:{tag}", registry.host());
    let guard = TagGuard(image.clone());
    docker(&["tag", &test_image(), &image]);
    let pusher = tempfile::tempdir().unwrap();
    std::fs::write(
        pusher.path().join("config.json"),
        auth_config(&registry.host(), user, password),
    )
    .unwrap();
    push(pusher.path(), &image);
    docker(&["rmi", &image]);
    (image, guard)
}

/// Deploys `image` (absent locally, private) with `vars`, scanning every process's argv for the
/// secrets meanwhile, and checks the daemon's log for them.
fn deploy_private(project: &str, image: &str, vars: &[(&str, String)], secrets: &[&str]) {
    let (repo, _) = HttpRepo::with_stack(project, &stack(image));
    let data = tempfile::tempdir().unwrap();
    let mut all = vec![("POLL_CONFIG", poll_config(&repo.url()))];
    all.extend(vars.iter().cloned());
    let daemon = Daemon::start(data.path(), &all);
    daemon.wait_for("the private image deployed", Duration::from_secs(90), || {
        for cmdline in doco_testkit::process_cmdlines() {
            for secret in secrets {
                assert!(!cmdline.contains(secret), "secret in argv: {cmdline}");
            }
        }
        matches!(doco_testkit::docker::container_ids(project, "web").as_slice(), [id] if container_state(id) == "running")
    });
    let log = daemon.log();
    for secret in secrets {
        assert!(!log.contains(secret), "secret in the log:\n{log}");
    }
}

#[test]
fn pulls_a_private_image_with_credentials_from_config_json() {
    if !require_docker() {
        return;
    }
    let (user, password) = ("deployer", unique_name("pw-config"));
    let registry = Registry::start(user, &password);
    let (image, _tag) = private_image(&registry, user, &password, "1");
    let project = unique_name("doco-e2e-reg-file");
    let _guard = ProjectGuard::new(&project);
    let docker_config = tempfile::tempdir().unwrap();
    let config = auth_config(&registry.host(), user, &password);
    std::fs::write(docker_config.path().join("config.json"), &config).unwrap();
    let encoded = serde_json::from_str::<serde_json::Value>(&config).unwrap()["auths"]
        [registry.host()]["auth"]
        .as_str()
        .unwrap()
        .to_string();
    deploy_private(
        &project,
        &image,
        &[("DOCKER_CONFIG", docker_config.path().display().to_string())],
        &[&password, &encoded],
    );
}

#[test]
fn pulls_a_private_image_with_credentials_from_docker_auth_config() {
    if !require_docker() {
        return;
    }
    let (user, password) = ("deployer", unique_name("pw-env"));
    let registry = Registry::start(user, &password);
    let (image, _tag) = private_image(&registry, user, &password, "2");
    let project = unique_name("doco-e2e-reg-env");
    let _guard = ProjectGuard::new(&project);
    let empty = tempfile::tempdir().unwrap();
    let config = auth_config(&registry.host(), user, &password);
    let encoded = serde_json::from_str::<serde_json::Value>(&config).unwrap()["auths"]
        [registry.host()]["auth"]
        .as_str()
        .unwrap()
        .to_string();
    deploy_private(
        &project,
        &image,
        &[
            ("DOCKER_CONFIG", empty.path().display().to_string()),
            ("DOCKER_AUTH_CONFIG", config),
        ],
        &[&password, &encoded],
    );
}

#[test]
fn refuses_to_start_when_the_credential_store_helper_is_missing() {
    if !require_docker() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        r#"{"credsStore": "doco-test-missing"}"#,
    )
    .unwrap();
    let mut daemon = Daemon::spawn(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config("http://127.0.0.1:9/repo.git")),
            ("DOCKER_CONFIG", docker_config.path().display().to_string()),
        ],
    );
    daemon.wait_for("doco-cd to refuse", Duration::from_secs(20), || {
        daemon.log().contains("configuration error")
    });
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains("`docker-credential-doco-test-missing` is not on PATH")
            && log.contains(&docker_config.path().display().to_string()),
        "{log}"
    );
}
