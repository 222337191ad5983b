//! End-to-end scenarios of the artifact store (issue 11): the built binary against a local Git server
//! (its URL has a port, as self-hosted Forgejo's does) and the real engine. Every commit is deployed
//! from its own read-only export; a fetched commit that fails never changes the files running
//! containers mount; a removed service comes back from the exact files it was deployed with, offline
//! and after a restart too; a commit touching one service recreates nothing else; the collector
//! removes only what nothing uses; a data volume of the layout before the store is migrated without
//! recreating anything.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use doco_testkit::docker::{ProjectGuard, container_ids, docker, require_docker, test_image};
use doco_testkit::unique_name;
use support::{Daemon, HttpRepo, running_container};

fn poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1s\n")
}

/// A long-running service mounting `./conf/<name>.conf` (short syntax, relative) at `/conf.txt`.
fn service_with_conf(name: &str, image: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n    volumes:\n      - ./conf/{name}.conf:/conf.txt:ro\n"
    )
}

/// What `/conf.txt` holds in container `id`.
fn conf_in(id: &str) -> String {
    docker(&["exec", id, "cat", "/conf.txt"]).trim().to_string()
}

/// The host path container `id` mounts at `/conf.txt`.
fn conf_source(id: &str) -> PathBuf {
    let format = "{{range .Mounts}}{{if eq .Destination \"/conf.txt\"}}{{.Source}}{{end}}{{end}}";
    PathBuf::from(docker(&["inspect", "--format", format, id]).trim())
}

/// The repository's source directory under `data` (the URL's port written with `_`).
fn source_dir(data: &Path, repo: &HttpRepo) -> PathBuf {
    data.join(format!("127.0.0.1_{}/repo", repo.server.port()))
}

/// The exports of the repository, by commit.
fn exports(data: &Path, repo: &HttpRepo) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(source_dir(data, repo).join("artifacts"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 40)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What `/conf.txt` holds in container `id`; `None` while it cannot be asked (it is being replaced).
fn conf_if_running(id: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["exec", id, "cat", "/conf.txt"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until `service` of `project` is one container that sees `content` at `/conf.txt`; its id.
fn wait_for_conf(daemon: &Daemon, project: &str, service: &str, content: &str) -> String {
    let mut found = String::new();
    daemon.wait_for(
        &format!("{project}/{service} with {content:?}"),
        Duration::from_secs(90),
        || match container_ids(project, service).as_slice() {
            [id] if conf_if_running(id).as_deref() == Some(content) => {
                found = id.clone();
                true
            }
            _ => false,
        },
    );
    found
}

/// Deploys `project` from `dir` with plain compose and the labels of `labels` (an override file), as
/// an earlier doco-cd, or upstream, left it on the engine.
fn compose_up_by_hand(project: &str, dir: &Path, labels: &str, scratch: &Path) {
    let override_file = scratch.join(format!("{project}-labels.yml"));
    std::fs::write(&override_file, labels).unwrap();
    docker(&[
        "compose",
        "--project-directory",
        &dir.display().to_string(),
        "-p",
        project,
        "-f",
        &dir.join("compose.yml").display().to_string(),
        "-f",
        &override_file.display().to_string(),
        "up",
        "-d",
    ]);
}

fn failures(daemon: &Daemon, project: &str) -> f64 {
    daemon.metric(
        "doco_cd_deployment_errors_total",
        &[("deployment", project)],
    )
}

#[test]
fn a_failed_commit_never_changes_the_files_running_containers_mount_and_a_fix_deploys_them() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-store-files");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("conf/web.conf", "one");
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service_with_conf("web", &image)),
    );
    let first = repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    let web = running_container(&daemon, &project, "web");
    assert_eq!(conf_in(&web), "one");
    let export = source_dir(data.path(), &repo)
        .join("artifacts")
        .join(&first);
    assert_eq!(conf_source(&web), export.join("conf/web.conf"));
    assert!(
        !source_dir(data.path(), &repo).join("conf").exists(),
        "nothing is checked out"
    );

    // A commit that changes the file and cannot deploy (its image does not exist).
    repo.work.write("conf/web.conf", "two");
    repo.work.write(
        "compose.yml",
        &format!(
            "services:\n{}",
            service_with_conf("web", "doco-test/absent-image:1")
        ),
    );
    let broken = repo.push("broken");
    daemon.wait_for("the broken commit failed", Duration::from_secs(90), || {
        failures(&daemon, &project) >= 1.0
    });
    assert!(
        exports(data.path(), &repo).contains(&broken),
        "the broken commit was exported"
    );
    assert_eq!(container_ids(&project, "web"), vec![web.clone()]);
    assert_eq!(
        conf_in(&web),
        "one",
        "the running container still sees the deployed file"
    );
    assert_eq!(
        std::fs::read_to_string(export.join("conf/web.conf")).unwrap(),
        "one"
    );

    // A stopped container is started again with the same files.
    docker(&["stop", "-t", "1", &web]);
    daemon.wait_for("web started again", Duration::from_secs(60), || {
        doco_testkit::docker::container_state(&web) == "running"
    });
    assert_eq!(conf_in(&web), "one");

    // The fix deploys the new file.
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service_with_conf("web", &image)),
    );
    let fixed = repo.push("fixed");
    let web = wait_for_conf(&daemon, &project, "web", "two");
    let fixed_export = source_dir(data.path(), &repo)
        .join("artifacts")
        .join(&fixed);
    assert_eq!(conf_source(&web), fixed_export.join("conf/web.conf"));
    let mode = std::fs::metadata(fixed_export.join("conf/web.conf")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.permissions().mode() & 0o222,
        0,
        "exported files are read-only"
    );
}

#[test]
fn offline_a_removed_service_comes_back_from_its_pinned_files_also_after_a_restart() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-store-offline");
    let _guard = ProjectGuard::new(&project);
    let mut repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("conf/web.conf", "good");
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service_with_conf("web", &image)),
    );
    repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("DOCO_CD_MAINTAIN_OFFLINE_STATE", "true".to_string()),
    ];
    let mut daemon = Daemon::start(data.path(), &vars);
    let web = running_container(&daemon, &project, "web");
    repo.work.write("conf/web.conf", "newer");
    repo.work.write(
        "compose.yml",
        &format!(
            "services:\n{}",
            service_with_conf("web", "doco-test/absent-image:1")
        ),
    );
    repo.push("newer commit, fetched, never deployed");
    daemon.wait_for("the newer commit failed", Duration::from_secs(90), || {
        failures(&daemon, &project) >= 1.0
    });

    // Git goes away and the service is removed: it comes back from the files it was deployed with.
    repo.server.stop();
    docker(&["rm", "-f", &web]);
    let again = running_container(&daemon, &project, "web");
    assert_ne!(again, web);
    assert_eq!(conf_in(&again), "good");

    // The same after a restart during the outage.
    daemon.stop();
    docker(&["rm", "-f", &again]);
    let daemon = Daemon::start(data.path(), &vars);
    let third = running_container(&daemon, &project, "web");
    assert_eq!(conf_in(&third), "good");
}

#[test]
fn a_commit_touching_one_service_recreates_nothing_else() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-store-pins");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("conf/a.conf", "a1");
    repo.work.write("conf/b.conf", "b1");
    repo.work.write(
        "compose.yml",
        &format!(
            "services:\n{}{}",
            service_with_conf("a", &image),
            service_with_conf("b", &image)
        ),
    );
    let first = repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    let a = running_container(&daemon, &project, "a");
    let b = running_container(&daemon, &project, "b");
    repo.work.write("conf/a.conf", "a2");
    repo.work.write("README.md", "unrelated\n");
    let second = repo.push("touch a only");
    let a2 = wait_for_conf(&daemon, &project, "a", "a2");
    assert_ne!(a2, a, "a was recreated");
    assert_eq!(
        container_ids(&project, "b"),
        vec![b.clone()],
        "b was not recreated"
    );
    let artifacts = source_dir(data.path(), &repo).join("artifacts");
    assert_eq!(
        conf_source(&a2),
        artifacts.join(&second).join("conf/a.conf")
    );
    assert_eq!(conf_source(&b), artifacts.join(&first).join("conf/b.conf"));

    // b, removed, comes back on the files of the export it is pinned to.
    docker(&["rm", "-f", &b]);
    let b2 = running_container(&daemon, &project, "b");
    assert_eq!(conf_source(&b2), artifacts.join(&first).join("conf/b.conf"));
    assert_eq!(conf_in(&b2), "b1");
    // The next commit that changes nothing of a or b recreates neither.
    repo.work.write("README.md", "still unrelated\n");
    let third = repo.push("docs only");
    daemon.wait_for("the third commit exported", Duration::from_secs(60), || {
        exports(data.path(), &repo).contains(&third)
    });
    daemon.wait_polls(2.0);
    assert_eq!(container_ids(&project, "a"), vec![a2]);
    assert_eq!(container_ids(&project, "b"), vec![b2]);
}

#[test]
fn artifact_gc_keeps_what_is_used_and_the_newest_and_removes_the_rest() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-store-gc");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("conf/web.conf", "0");
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service_with_conf("web", &image)),
    );
    let mut commits = vec![repo.push("0")];
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("ARTIFACT_GC_INTERVAL", "1s".to_string()),
        ("ARTIFACT_GC_RETENTION_RECORDS", "1".to_string()),
        ("ARTIFACT_GC_RETENTION_TTL", "0s".to_string()),
    ];
    let daemon = Daemon::start(data.path(), &vars);
    running_container(&daemon, &project, "web");
    // Each commit changes the file, so each deploy moves web to the new export while the collector
    // sweeps every second beside the deploys.
    for n in 1..4 {
        repo.work.write("conf/web.conf", &n.to_string());
        commits.push(repo.push(&n.to_string()));
        wait_for_conf(&daemon, &project, "web", &n.to_string());
    }
    // In use: the last commit; kept: the newest unused one; gone: the two oldest.
    let mut expected = vec![commits[2].clone(), commits[3].clone()];
    expected.sort();
    daemon.wait_for(
        "the collector removed the two oldest exports",
        Duration::from_secs(30),
        || exports(data.path(), &repo) == expected,
    );
    let web = running_container(&daemon, &project, "web");
    assert_eq!(conf_in(&web), "3");

    // Disabled, it removes nothing.
    drop(daemon);
    repo.work.write("conf/web.conf", "4");
    commits.push(repo.push("4"));
    let disabled = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("ARTIFACT_GC_ENABLED", "false".to_string()),
        ("ARTIFACT_GC_RETENTION_RECORDS", "0".to_string()),
    ];
    let daemon = Daemon::start(data.path(), &disabled);
    wait_for_conf(&daemon, &project, "web", "4");
    assert!(exports(data.path(), &repo).contains(&commits[4]));
    daemon.wait_polls(2.0);
    assert!(daemon.log().contains("artifact GC disabled"));
    assert_eq!(exports(data.path(), &repo).len(), 3);
}

#[test]
fn a_checkout_of_the_layout_before_the_store_is_migrated_without_recreating_anything() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-store-migrate");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("conf/web.conf", "old layout");
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service_with_conf("web", &image)),
    );
    let first = repo.push("first");
    let data = tempfile::tempdir().unwrap();
    // The old layout: a working-tree clone at the source directory, and a stack deployed from it by
    // compose with the labels the earlier doco-cd gave it (through an override file).
    let dir = source_dir(data.path(), &repo);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    doco_testkit::git::git(
        data.path(),
        &["clone", "--quiet", &repo.url(), &dir.display().to_string()],
    );
    let labels = format!(
        "services:\n  web:\n    labels:\n      cd.doco.metadata.manager: doco-cd\n      cd.doco.deployment.name: {project}\n      cd.doco.deployment.target.sha: {first}\n      cd.doco.deployment.working_dir: {dir}\n",
        dir = dir.display()
    );
    compose_up_by_hand(&project, &dir, &labels, data.path());
    let web = container_ids(&project, "web").pop().unwrap();
    assert_eq!(conf_source(&web), dir.join("conf/web.conf"));

    let vars = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("ARTIFACT_GC_INTERVAL", "1s".to_string()),
    ];
    let daemon = Daemon::start(data.path(), &vars);
    daemon.wait_for("the checkout migrated", Duration::from_secs(60), || {
        dir.join("mirror").is_dir() && !dir.join(".git").exists()
    });
    daemon.wait_polls(3.0);
    assert_eq!(
        container_ids(&project, "web"),
        vec![web.clone()],
        "nothing recreated"
    );
    assert_eq!(conf_source(&web), dir.join("conf/web.conf"));
    assert!(
        dir.join("conf/web.conf").is_file(),
        "files a container mounts stay"
    );
    docker(&["stop", "-t", "1", &web]);
    daemon.wait_for("web started again", Duration::from_secs(60), || {
        doco_testkit::docker::container_state(&web) == "running"
    });

    // A commit that changes the file moves web to its export; the old files then go.
    repo.work.write("conf/web.conf", "store");
    repo.push("second");
    wait_for_conf(&daemon, &project, "web", "store");
    daemon.wait_for(
        "the old checkout's files removed",
        Duration::from_secs(30),
        || !dir.join("conf").exists() && !dir.join("compose.yml").exists(),
    );
    assert!(dir.join("mirror").is_dir());
}

#[test]
fn repository_url_deploys_from_the_other_repository_and_its_outage_never_blocks_local_healing() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let local = unique_name("e2e-store-local");
    let discovered = unique_name("e2e-store-ext");
    let _guards = [ProjectGuard::new(&local), ProjectGuard::new(&discovered)];
    // The other repository: one stack per directory, for auto-discovery; its compose file takes one
    // value from an env file of the polled repository and one from its own (`remote:`).
    let mut other = HttpRepo::new();
    other.work.write(
        &format!("{discovered}/compose.yml"),
        &format!(
            "services:\n  app:\n    image: {image}\n    command: [\"sleep\", \"${{LOCAL_ARG}}${{REMOTE_ARG}}\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_signal: SIGKILL\n"
        ),
    );
    other
        .work
        .write(&format!("{discovered}/remote.env"), "REMOTE_ARG=2\n");
    other.push("a stack in the other repository");
    // The polled repository: a stack of its own, and the other repository's stacks.
    let mut repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!(
            "name: {local}\n---\nname: from-elsewhere\nrepository_url: {url}\nreference: main\nauto_discovery: true\nenv_files: [vars.env, \"remote:remote.env\"]\n",
            url = other.url()
        ),
    );
    repo.work.write("vars.env", "LOCAL_ARG=360\n");
    repo.work.write(
        "compose.yml",
        &support::sleep_services(&image, &[("web", "3600")]),
    );
    repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("DOCO_CD_MAINTAIN_OFFLINE_STATE", "true".to_string()),
    ];
    let daemon = Daemon::start(data.path(), &vars);
    let web = running_container(&daemon, &local, "web");
    let app = running_container(&daemon, &discovered, "app");
    let command = docker(&["inspect", "--format", "{{json .Config.Cmd}}", &app]);
    assert_eq!(
        command.trim(),
        r#"["sleep","3602"]"#,
        "both env files were read"
    );
    let other_store = data
        .path()
        .join(format!("127.0.0.1_{}/repo", other.server.port()));
    assert!(
        other_store.join("mirror").is_dir(),
        "the other repository has its own store"
    );

    // The other repository goes away: the local stack still heals, and so does the other's stack
    // from its export.
    other.server.stop();
    docker(&["stop", "-t", "1", &web]);
    daemon.wait_for("web started again", Duration::from_secs(60), || {
        doco_testkit::docker::container_state(&web) == "running"
    });
    docker(&["rm", "-f", &app]);
    let app_again = running_container(&daemon, &discovered, "app");
    let command = docker(&["inspect", "--format", "{{json .Config.Cmd}}", &app_again]);
    assert_eq!(command.trim(), r#"["sleep","3602"]"#);
    // And a new commit of the polled repository still deploys.
    repo.work.write(
        "compose.yml",
        &support::sleep_services(&image, &[("web", "3601")]),
    );
    repo.push("second");
    daemon.wait_for(
        "web redeployed",
        Duration::from_secs(90),
        || match container_ids(&local, "web").as_slice() {
            [id] => docker(&["inspect", "--format", "{{json .Config.Cmd}}", id]).contains("3601"),
            _ => false,
        },
    );
    repo.server.stop();
}

#[test]
fn a_data_volume_laid_out_by_upstream_v0_120_is_adopted_without_recreating_anything() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-store-upstream");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work
        .write(".doco-cd.yml", &format!("name: {project}\n"));
    repo.work.write("conf/web.conf", "upstream");
    repo.work.write(
        "compose.yml",
        &format!("services:\n{}", service_with_conf("web", &image)),
    );
    let first = repo.push("first");
    let url = repo.bare.file_url();
    let data = tempfile::tempdir().unwrap();
    // Upstream's layout: `<repo>/mirror` (bare) and `<repo>/artifacts/<commit>` (an export), and a
    // stack deployed from the export, labelled as upstream labels it.
    let dir = data.path().join(
        repo.bare
            .path()
            .display()
            .to_string()
            .trim_start_matches('/'),
    );
    let mirror = dir.join("mirror");
    let export = dir.join("artifacts").join(&first);
    std::fs::create_dir_all(&export).unwrap();
    doco_testkit::git::git(
        data.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            &url,
            &mirror.display().to_string(),
        ],
    );
    let archive = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git --git-dir={} archive {first} | tar -x -C {}",
            mirror.display(),
            export.display()
        ))
        .status()
        .unwrap();
    assert!(archive.success());
    let labels = format!(
        "services:\n  web:\n    labels:\n      cd.doco.metadata.manager: doco-cd\n      cd.doco.deployment.name: {project}\n      cd.doco.deployment.target.sha: {first}\n      cd.doco.deployment.pinned_revisions: {first}\n      cd.doco.deployment.working_dir: {export}\n",
        export = export.display()
    );
    compose_up_by_hand(&project, &export, &labels, data.path());
    let web = container_ids(&project, "web").pop().unwrap();
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&export).unwrap().ino();

    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&url))]);
    daemon.wait_polls(3.0);
    assert_eq!(
        container_ids(&project, "web"),
        vec![web.clone()],
        "nothing recreated"
    );
    assert_eq!(conf_source(&web), export.join("conf/web.conf"));
    assert_eq!(
        std::fs::metadata(&export).unwrap().ino(),
        inode,
        "the export is used as it is"
    );

    // The next commit is exported beside it and deployed from there.
    repo.work.write("conf/web.conf", "ours");
    let second = repo.push("second");
    let web = wait_for_conf(&daemon, &project, "web", "ours");
    assert_eq!(
        conf_source(&web),
        dir.join("artifacts").join(&second).join("conf/web.conf")
    );
}
