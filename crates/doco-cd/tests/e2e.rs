//! End-to-end scenarios: the built `doco-cd` binary, driven by environment variables as a user would
//! drive it, against Git servers on 127.0.0.1 and the real Docker engine. One scenario per user story
//! of the spine (issue 3).

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

#[allow(dead_code)] // Each test binary uses part of the shared harness.
mod support;

use std::time::Duration;

use doco_testkit::docker::{
    ProjectGuard, container_ids, container_state, docker, require_docker, test_image,
};
use doco_testkit::git::{BareRepo, WorkTree};
use doco_testkit::http::RecordingServer;
use doco_testkit::unique_name;
use support::{
    Daemon, HttpRepo, apprise_titles, free_port, http_get, http_request, label, running_container,
    sleep_services,
};

const SHA_LABEL: &str = "cd.doco.deployment.target.sha";

fn poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1s\n")
}

#[test]
fn deploys_then_leaves_quiet_polls_alone_redeploys_only_what_changed_heals_and_rolls_back() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-spine");
    let _guard = ProjectGuard::new(&project);
    let (repo, first) = HttpRepo::with_stack(
        &project,
        &sleep_services(&image, &[("web", "1001"), ("worker", "2001")]),
    );

    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);

    // First deploy: both services run and carry the deployed commit and upstream's labels.
    let web = running_container(&daemon, &project, "web");
    let worker = running_container(&daemon, &project, "worker");
    assert_eq!(label(&web, SHA_LABEL), first);
    assert_eq!(label(&web, "cd.doco.metadata.manager"), "doco-cd");
    assert_eq!(label(&web, "cd.doco.deployment.name"), project);
    assert_eq!(http_get(daemon.http_port, "/v1/health").unwrap().0, 200);
    // The error counters exist at 0 from the start, so the first error is a visible change.
    daemon.wait_polls(1.0);
    let metrics = http_get(daemon.metrics_port, "/metrics").unwrap().1;
    for family in [
        "doco_cd_poll_errors_total{",
        "doco_cd_deployment_errors_total{",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(family) && l.ends_with(" 0")),
            "{family}: {metrics}"
        );
    }

    // Quiet polls: no compose process, at most one git process per poll, no container touched,
    // nothing written to the data volume (the state, the mirror, the exports).
    daemon.wait_polls(1.0);
    let before = daemon.scrape();
    let volume = support::volume_snapshot(data.path());
    daemon.wait_polls(3.0);
    let after = daemon.scrape();
    assert_eq!(
        support::volume_snapshot(data.path()),
        volume,
        "a quiet poll wrote to the data volume"
    );
    let polls = after.get("doco_cd_polls_total", &[]) - before.get("doco_cd_polls_total", &[]);
    let docker_spawned = after.get("doco_cd_child_processes_total", &[("program", "docker")])
        - before.get("doco_cd_child_processes_total", &[("program", "docker")]);
    let git_spawned = after.get("doco_cd_child_processes_total", &[("program", "git")])
        - before.get("doco_cd_child_processes_total", &[("program", "git")]);
    assert!(polls >= 3.0, "{polls} polls");
    assert_eq!(docker_spawned, 0.0, "a quiet poll spawned docker");
    assert!(
        git_spawned <= polls + 1.0,
        "{git_spawned} git processes for {polls} polls"
    );
    assert_eq!(container_ids(&project, "web"), vec![web.clone()]);
    assert_eq!(container_ids(&project, "worker"), vec![worker.clone()]);

    // A pushed change to one service recreates that service only.
    repo.work.write(
        "compose.yml",
        &sleep_services(&image, &[("web", "1001"), ("worker", "2002")]),
    );
    let second = repo.push("change the worker");
    daemon.wait_for("the worker redeployed at the new commit", Duration::from_secs(60), || {
        matches!(container_ids(&project, "worker").as_slice(), [id] if label(id, SHA_LABEL) == second)
    });
    assert_ne!(container_ids(&project, "worker"), vec![worker]);
    assert_eq!(
        container_ids(&project, "web"),
        vec![web.clone()],
        "web was recreated"
    );
    assert_eq!(label(&web, SHA_LABEL), first);

    // A stopped service is started again: same container.
    docker(&["stop", "-t", "1", &web]);
    daemon.wait_for("web running again", Duration::from_secs(60), || {
        container_state(&web) == "running"
    });
    assert_eq!(container_ids(&project, "web"), vec![web.clone()]);

    // Rollback by `git revert`: the worker goes back to its first command, at the revert commit.
    doco_testkit::git::git(repo.work.path(), &["revert", "--no-edit", "HEAD"]);
    repo.work.push();
    let reverted = repo.work.head();
    daemon.wait_for("the revert deployed", Duration::from_secs(60), || {
        matches!(container_ids(&project, "worker").as_slice(), [id] if label(id, SHA_LABEL) == reverted)
    });
    let worker = container_ids(&project, "worker").remove(0);
    let command = docker(&["inspect", "--format", "{{json .Config.Cmd}}", &worker]);
    assert_eq!(command.trim(), r#"["sleep","2001"]"#);
    assert_eq!(
        container_ids(&project, "web"),
        vec![web],
        "web was recreated by the revert"
    );
}

/// The proposal's set-up: the Git server is a container of a stack deployed by doco-cd from the very
/// repository it serves.
struct SelfHostedGit {
    bare: BareRepo,
    work: WorkTree,
    port: u16,
    proxy: String,
    app: String,
    image: String,
    _guards: (ProjectGuard, ProjectGuard),
}

impl SelfHostedGit {
    fn new() -> Self {
        let image = test_image();
        let bare = BareRepo::new();
        let work = WorkTree::clone_from(&bare);
        let port = free_port();
        let proxy = unique_name("e2e-proxy");
        let app = unique_name("e2e-app");
        let guards = (ProjectGuard::new(&proxy), ProjectGuard::new(&app));
        work.write(
            ".doco-cd.yml",
            &format!("name: {proxy}\nworking_dir: proxy\n---\nname: {app}\nworking_dir: app\n"),
        );
        work.write(
            "proxy/compose.yml",
            &format!(
                "services:\n  git:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/srv\"]\n    network_mode: host\n    restart: unless-stopped\n    stop_grace_period: 1s\n    volumes:\n      - {}:/srv/repo.git:ro\n",
                bare.path().display()
            ),
        );
        work.write(
            "app/compose.yml",
            &sleep_services(&image, &[("main", "3001")]),
        );
        work.commit_and_push("first");
        bare.update_server_info();
        // The operator started the proxy once by hand, before doco-cd managed it.
        let compose_file = work.path().join("proxy/compose.yml");
        docker(&[
            "compose",
            "-p",
            &proxy,
            "-f",
            &compose_file.to_string_lossy(),
            "up",
            "-d",
        ]);
        let scenario = SelfHostedGit {
            bare,
            work,
            port,
            proxy,
            app,
            image,
            _guards: guards,
        };
        doco_testkit::docker::wait_until("the Git server answers", Duration::from_secs(30), || {
            http_get(scenario.port, "/repo.git/info/refs").is_some_and(|(status, _)| status == 200)
        });
        scenario
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
    }

    fn start(
        &self,
        data: &std::path::Path,
        offline_state: bool,
        apprise: &RecordingServer,
    ) -> Daemon {
        Daemon::start(
            data,
            &[
                ("POLL_CONFIG", poll_config(&self.url())),
                ("DOCO_CD_MAINTAIN_OFFLINE_STATE", offline_state.to_string()),
                ("APPRISE_API_URL", format!("{}/notify", apprise.url())),
                (
                    "APPRISE_NOTIFY_URLS",
                    "json://127.0.0.1/ignored".to_string(),
                ),
                ("APPRISE_NOTIFY_LEVEL", "info".to_string()),
            ],
        )
    }

    /// Waits until doco-cd has adopted the proxy (it carries doco-cd's labels); returns its id.
    fn adopted_proxy(&self, daemon: &Daemon) -> String {
        let mut id = String::new();
        daemon.wait_for(
            "the proxy adopted by doco-cd",
            Duration::from_secs(90),
            || match container_ids(&self.proxy, "git").as_slice() {
                [only]
                    if container_state(only) == "running" && !label(only, SHA_LABEL).is_empty() =>
                {
                    id = only.clone();
                    true
                }
                _ => false,
            },
        );
        id
    }
}

#[test]
fn offline_state_brings_back_the_proxy_that_serves_git_and_then_deploys_what_was_pushed() {
    if !require_docker() {
        return;
    }
    let scenario = SelfHostedGit::new();
    let data = tempfile::tempdir().unwrap();
    let apprise = RecordingServer::start();
    let daemon = scenario.start(data.path(), true, &apprise);
    let proxy = scenario.adopted_proxy(&daemon);
    let first = label(&proxy, SHA_LABEL);
    running_container(&daemon, &scenario.app, "main");
    daemon.wait_polls(2.0);
    assert_eq!(
        container_ids(&scenario.proxy, "git"),
        vec![proxy.clone()],
        "quiet polls recreated the proxy"
    );

    // The proxy dies; meanwhile a change to the app is pushed (straight to the bare repository).
    docker(&["stop", "-t", "1", &proxy]);
    scenario.work.write(
        "app/compose.yml",
        &sleep_services(&scenario.image, &[("main", "3002")]),
    );
    let second = scenario
        .work
        .commit_and_push("change the app while Git is down");
    scenario.bare.update_server_info();

    daemon.wait_for("the app deployed at the commit pushed during the outage", Duration::from_secs(90), || {
        matches!(container_ids(&scenario.app, "main").as_slice(), [id] if label(id, SHA_LABEL) == second)
    });
    // The proxy was healed by a start (same container), and not redeployed when Git came back.
    assert_eq!(container_ids(&scenario.proxy, "git"), vec![proxy.clone()]);
    assert_eq!(container_state(&proxy), "running");
    assert_eq!(label(&proxy, SHA_LABEL), first);
    let repository = format!("127.0.0.1:{}/repo", scenario.port);
    assert!(
        daemon.metric(
            "doco_cd_offline_enforcements_total",
            &[("repository", &repository)]
        ) >= 1.0
    );
    // The run that deployed it records the return to normal once it ends.
    daemon.wait_for(
        "the repository reported reachable",
        Duration::from_secs(30),
        || daemon.metric("doco_cd_repository_offline", &[("repository", &repository)]) == 0.0,
    );
    assert!(
        daemon.metric(
            "doco_cd_source_last_success_timestamp_seconds",
            &[("repository", &repository)]
        ) > 0.0
    );
    // One notification when the outage began and one when it ended, however many polls it lasted.
    let titles = apprise_titles(&apprise);
    let count = |title: &str| titles.iter().filter(|t| t.ends_with(title)).count();
    assert_eq!(
        count("Repository unreachable: enforcing the last known state"),
        1,
        "{titles:?}"
    );
    assert_eq!(count("Repository reachable again"), 1, "{titles:?}");
}

#[test]
fn without_offline_state_the_proxy_stays_down_as_upstream() {
    if !require_docker() {
        return;
    }
    let scenario = SelfHostedGit::new();
    let data = tempfile::tempdir().unwrap();
    let apprise = RecordingServer::start();
    let daemon = scenario.start(data.path(), false, &apprise);
    let proxy = scenario.adopted_proxy(&daemon);
    docker(&["stop", "-t", "1", &proxy]);
    let errors = daemon.metric("doco_cd_poll_errors_total", &[]);
    daemon.wait_for("three failed polls", Duration::from_secs(60), || {
        daemon.metric("doco_cd_poll_errors_total", &[]) >= errors + 3.0
    });
    assert_eq!(container_state(&proxy), "exited");
    assert_eq!(
        daemon.metric("doco_cd_offline_enforcements_total", &[]),
        0.0
    );
    // A failing poll is notified once per repeat interval (1 h by default), not once per poll.
    let titles = apprise_titles(&apprise);
    let failed = titles
        .iter()
        .filter(|t| t.ends_with("Poll Job failed"))
        .count();
    assert_eq!(failed, 1, "{titles:?}");
}

#[test]
fn a_restart_while_git_is_unreachable_enforces_from_the_state_file() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-restart");
    let _guard = ProjectGuard::new(&project);
    let (mut repo, _) = HttpRepo::with_stack(
        &project,
        &sleep_services(&image, &[("web", "4001"), ("db", "4002")]),
    );
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("DOCO_CD_MAINTAIN_OFFLINE_STATE", "true".to_string()),
    ];
    let mut daemon = Daemon::start(data.path(), &vars);
    let web = running_container(&daemon, &project, "web");
    let db = running_container(&daemon, &project, "db");
    let labels_of = |id: &str| docker(&["inspect", "--format", "{{json .Config.Labels}}", id]);
    let db_labels = labels_of(&db);
    daemon.stop();

    // While doco-cd is down, Git becomes unreachable, one service is stopped and one removed.
    repo.server.stop();
    docker(&["stop", "-t", "1", &web]);
    docker(&["rm", "-f", &db]);
    let daemon = Daemon::start(data.path(), &vars);
    daemon.wait_for(
        "web started from the last known state",
        Duration::from_secs(60),
        || container_state(&web) == "running",
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
    // The removed service is recreated exactly as last deployed: the same labels, byte for byte.
    let db_again = running_container(&daemon, &project, "db");
    assert_ne!(db_again, db);
    assert_eq!(labels_of(&db_again), db_labels);
    // The run that healed them records the outcome once it ends.
    let repository = format!("127.0.0.1:{}/repo", repo.server.port());
    daemon.wait_for(
        "the repository reported offline",
        Duration::from_secs(30),
        || daemon.metric("doco_cd_repository_offline", &[("repository", &repository)]) == 1.0,
    );
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_rebuilt_without_recreating_anything() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-corrupt");
    let _guard = ProjectGuard::new(&project);
    let (repo, _) = HttpRepo::with_stack(&project, &sleep_services(&image, &[("web", "5001")]));
    let data = tempfile::tempdir().unwrap();
    let vars = [("POLL_CONFIG", poll_config(&repo.url()))];
    let mut daemon = Daemon::start(data.path(), &vars);
    let web = running_container(&daemon, &project, "web");
    daemon.wait_for("the deploy recorded", Duration::from_secs(30), || {
        !support::state_files(data.path()).is_empty()
    });
    daemon.stop();

    let files = support::state_files(data.path());
    assert_eq!(files.len(), 1, "one repository, one state file: {files:?}");
    let state = &files[0];
    std::fs::write(state, b"{\"version\": 1, \"repositories\": {").unwrap();
    let daemon = Daemon::start(data.path(), &vars);
    daemon.wait_polls(2.0);
    let mut aside = state.clone().into_os_string();
    aside.push(".corrupt");
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        b"{\"version\": 1, \"repositories\": {"
    );
    let rebuilt = serde_json::Value::Object(support::state_repositories(data.path()));
    let repos = rebuilt.as_object().unwrap();
    assert_eq!(repos.len(), 1, "{rebuilt}");
    assert!(
        repos.values().next().unwrap()["deployments"]
            .get(&project)
            .is_some(),
        "{rebuilt}"
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
}

#[test]
fn bad_input_fails_only_what_it_touches() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let good = unique_name("e2e-good");
    let missing = unique_name("e2e-missing");
    let _guards = (ProjectGuard::new(&good), ProjectGuard::new(&missing));

    let mixed = HttpRepo::new();
    mixed.work.write(
        ".doco-cd.yml",
        &format!(
            "name: {missing}\nworking_dir: good\ncompose_files: [nope.yml]\n---\nname: {good}\nworking_dir: good\n"
        ),
    );
    mixed.work.write(
        "good/compose.yml",
        &sleep_services(&image, &[("web", "6001")]),
    );
    mixed.push("one good, one broken deployment");

    let malformed = HttpRepo::new();
    malformed
        .work
        .write(".doco-cd.yml", "name: broken\ncompose_files: [a.yml\n");
    malformed.push("malformed");

    let unknown_ref = HttpRepo::new();
    unknown_ref.work.write("README", "nothing\n");
    unknown_ref.push("first");

    let poll_config = format!(
        "{}{}- url: {}\n  reference: does-not-exist\n  interval: 1s\n",
        poll_config(&mixed.url()),
        poll_config(&malformed.url()),
        unknown_ref.url()
    );
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config)]);
    running_container(&daemon, &good, "web");
    let repo = |r: &HttpRepo| format!("127.0.0.1:{}/repo", r.server.port());
    daemon.wait_for(
        "each broken input reported",
        Duration::from_secs(60),
        || {
            let scrape = daemon.scrape();
            scrape.get(
                "doco_cd_deployment_errors_total",
                &[("deployment", &missing)],
            ) >= 1.0
                && scrape.get(
                    "doco_cd_poll_errors_total",
                    &[("repository", &repo(&malformed))],
                ) >= 1.0
                && scrape.get(
                    "doco_cd_poll_errors_total",
                    &[("repository", &repo(&unknown_ref))],
                ) >= 1.0
        },
    );
    assert!(container_ids(&missing, "web").is_empty());
    let log = daemon.log();
    assert!(
        log.contains("nope.yml"),
        "the missing compose file is named:\n{log}"
    );
    assert!(
        log.contains(".doco-cd.yml") && log.contains("line 2"),
        "the malformed file and line are named:\n{log}"
    );
    assert!(
        log.contains("does-not-exist"),
        "the unknown reference is named:\n{log}"
    );
}

#[test]
fn a_deployment_with_its_own_reference_deploys_that_branch() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-ref");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\nreference: dev\nworking_dir: svc\n"),
    );
    let on_main = repo.push("main knows the deployment but not its files");
    repo.work.write(
        "svc/compose.yml",
        &sleep_services(&image, &[("web", "7001")]),
    );
    let dev_commit = repo.work.commit("the files, on dev only");
    repo.work.push_branch("dev");

    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    let web = running_container(&daemon, &project, "web");
    assert_eq!(label(&web, SHA_LABEL), dev_commit);
    assert_ne!(dev_commit, on_main);
    assert_eq!(label(&web, "cd.doco.deployment.target.ref"), "dev");

    repo.work.write(
        "svc/compose.yml",
        &sleep_services(&image, &[("web", "7002")]),
    );
    let next = repo.work.commit("change on dev");
    repo.work.push_branch("dev");
    daemon.wait_for("the dev change deployed", Duration::from_secs(60), || {
        matches!(container_ids(&project, "web").as_slice(), [id] if label(id, SHA_LABEL) == next)
    });
}

#[test]
fn a_local_repository_with_interval_zero_deploys_each_push_through_its_refs_watcher() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-watch");
    let _guard = ProjectGuard::new(&project);
    let bare = BareRepo::new();
    let work = WorkTree::clone_from(&bare);
    work.write(".doco-cd.yml", &format!("name: {project}\n"));
    work.write("compose.yml", &sleep_services(&image, &[("web", "8001")]));
    work.commit_and_push("first");

    let data = tempfile::tempdir().unwrap();
    let poll_config = format!(
        "- url: {}\n  reference: main\n  interval: 0\n",
        bare.path().display()
    );
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config)]);
    running_container(&daemon, &project, "web");

    work.write("compose.yml", &sleep_services(&image, &[("web", "8002")]));
    let second = work.commit_and_push("second");
    daemon.wait_for("the push deployed without any interval", Duration::from_secs(60), || {
        matches!(container_ids(&project, "web").as_slice(), [id] if label(id, SHA_LABEL) == second)
    });
}

#[test]
fn the_git_token_stays_out_of_argv_files_labels_and_logs() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-token");
    let _guard = ProjectGuard::new(&project);
    let root = tempfile::tempdir().unwrap();
    let bare = BareRepo::new_in(root.path());
    let token = format!("tok-{}-9f3ac2", std::process::id());
    let server =
        doco_testkit::smart_http::SmartHttpServer::start(root.path(), Some(("oauth2", &token)));
    // Slow answers keep each git process alive long enough to be seen in /proc.
    server.set_delay(Duration::from_millis(200));
    let work = WorkTree::clone_from(&bare);
    work.write(".doco-cd.yml", &format!("name: {project}\n"));
    work.write("compose.yml", &sleep_services(&image, &[("web", "9001")]));
    work.commit_and_push("first");
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();

    let data = tempfile::tempdir().unwrap();
    let url = server.repo_url(bare.path());
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config(&url)),
            ("GIT_ACCESS_TOKEN_FILE", token_file.display().to_string()),
        ],
    );
    let header = doco_testkit::smart_http::basic("oauth2", &token);
    let encoded = header.trim_start_matches("Basic ").to_string();
    let mut seen_git = false;
    daemon.wait_for("the deploy through the authenticated server", Duration::from_secs(90), || {
        for cmdline in doco_testkit::process_cmdlines() {
            assert!(!cmdline.contains(&token) && !cmdline.contains(&encoded), "secret in argv: {cmdline}");
            seen_git |= cmdline.starts_with("git");
        }
        matches!(container_ids(&project, "web").as_slice(), [id] if container_state(id) == "running")
    });
    daemon.wait_polls(2.0);
    assert!(
        seen_git,
        "the scan never saw a git process, so it proved nothing"
    );
    assert!(
        server.authorizations().contains(&header),
        "the token was not used"
    );

    let web = &container_ids(&project, "web")[0];
    let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", web]);
    assert!(
        labels.contains(&url) && !labels.contains(&token),
        "{labels}"
    );
    for (path, content) in doco_testkit::files_under(data.path()) {
        let text = String::from_utf8_lossy(&content);
        assert!(
            !text.contains(&token) && !text.contains(&encoded),
            "secret in {}",
            path.display()
        );
    }
    let log = daemon.log();
    assert!(
        !log.contains(&token) && !log.contains(&encoded),
        "secret in the log:\n{log}"
    );
}

fn slow_poll_config(url: &str) -> String {
    format!("- url: {url}\n  reference: main\n  interval: 1h\n")
}

#[test]
fn an_unhealthy_container_is_restarted_at_once_by_default() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-unhealthy");
    let _guard = ProjectGuard::new(&project);
    let (repo, _) = HttpRepo::with_stack(
        &project,
        &format!(
            "services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"touch /tmp/ok; exec sleep 3600\"]\n    restart: unless-stopped\n    network_mode: none\n    stop_grace_period: 1s\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ok\"]\n      interval: 1s\n      timeout: 1s\n      retries: 1\n"
        ),
    );
    let data = tempfile::tempdir().unwrap();
    // Polls are an hour apart: only the event can bring the container back in time.
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", slow_poll_config(&repo.url()))],
    );
    let web = running_container(&daemon, &project, "web");
    let health = |id: &str| {
        docker(&["inspect", "--format", "{{.State.Health.Status}}", id])
            .trim()
            .to_string()
    };
    let started_at = |id: &str| docker(&["inspect", "--format", "{{.State.StartedAt}}", id]);
    daemon.wait_for("web healthy", Duration::from_secs(30), || {
        health(&web) == "healthy"
    });
    let first_start = started_at(&web);

    docker(&["exec", &web, "rm", "/tmp/ok"]);
    daemon.wait_for(
        "web restarted after turning unhealthy",
        Duration::from_secs(60),
        || started_at(&web) != first_start && health(&web) == "healthy",
    );
    assert_eq!(container_ids(&project, "web"), vec![web.clone()]);

    // A container that turned unhealthy while doco-cd was down sends no new event: the first poll
    // after the restart finds it and restarts it.
    let mut daemon = daemon;
    daemon.stop();
    docker(&["exec", &web, "rm", "/tmp/ok"]);
    doco_testkit::docker::wait_until("web unhealthy", Duration::from_secs(30), || {
        health(&web) == "unhealthy"
    });
    let unhealthy_start = started_at(&web);
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", slow_poll_config(&repo.url()))],
    );
    daemon.wait_for(
        "web restarted by the start-up poll",
        Duration::from_secs(60),
        || started_at(&web) != unhealthy_start && health(&web) == "healthy",
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
}

#[test]
fn a_subscribed_die_event_starts_the_container_without_a_poll() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-die");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\nreconciliation:\n  events: [die]\n"),
    );
    repo.work
        .write("compose.yml", &sleep_services(&image, &[("web", "9101")]));
    repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        data.path(),
        &[("POLL_CONFIG", slow_poll_config(&repo.url()))],
    );
    let web = running_container(&daemon, &project, "web");
    daemon.wait_for("the first poll recorded", Duration::from_secs(30), || {
        daemon.metric("doco_cd_polls_total", &[]) >= 1.0
    });
    let polls = daemon.metric("doco_cd_polls_total", &[]);

    // `docker kill` marks the container as stopped on purpose: its restart policy will not help.
    docker(&["kill", &web]);
    daemon.wait_for(
        "web started again by the die event",
        Duration::from_secs(60),
        || container_state(&web) == "running",
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
    // An event enforces the last known good state without asking Git: no poll ran.
    assert_eq!(daemon.metric("doco_cd_polls_total", &[]), polls);
}

/// A GitHub-style push as upstream's webhook reads it.
fn github_push(reference: &str, commit: &str, clone_url: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": reference,
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "repository": {
            "name": "repo",
            "full_name": "e2e/repo",
            "clone_url": clone_url,
            "ssh_url": "",
            "html_url": clone_url,
            "private": false
        }
    })
    .to_string()
    .into_bytes()
}

/// `X-Hub-Signature-256` for `body` under `secret`.
fn hub_signature(body: &[u8], secret: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a GitHub push event to the daemon's HTTP_PORT; the status and the JSON body.
fn post_webhook(port: u16, path: &str, body: &[u8], signature: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(json).unwrap())
}

#[test]
fn a_signed_webhook_deploys_the_pushed_commit_and_a_bad_signature_deploys_nothing() {
    if !require_docker() {
        return;
    }
    const SECRET: &str = "e2e-webhook-secret";
    let image = test_image();
    let project = unique_name("e2e-webhook");
    let filtered = unique_name("e2e-webhook-filtered");
    let _guards = (ProjectGuard::new(&project), ProjectGuard::new(&filtered));
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\n---\nname: {filtered}\nwebhook_filter: ^refs/heads/release$\n"),
    );
    repo.work
        .write("compose.yml", &sleep_services(&image, &[("web", "7101")]));
    let first = repo.push("first");

    let data = tempfile::tempdir().unwrap();
    // No POLL_CONFIG: only webhooks deploy.
    let daemon = Daemon::start(data.path(), &[("WEBHOOK_SECRET", SECRET.to_string())]);

    // A bad signature is refused and deploys nothing.
    let body = github_push("refs/heads/main", &first, &repo.url());
    let (status, json) = post_webhook(
        daemon.http_port,
        "/v1/webhook?wait=true",
        &body,
        &hub_signature(&body, "not-the-secret"),
    );
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "incorrect secret key");
    std::thread::sleep(Duration::from_secs(1));
    assert!(container_ids(&project, "web").is_empty());

    // Signed, waiting: 201 once the stack runs at the pushed commit.
    let (status, json) = post_webhook(
        daemon.http_port,
        "/v1/webhook?wait=true",
        &body,
        &hub_signature(&body, SECRET),
    );
    assert_eq!(status, 201, "{json}\n{}", daemon.log());
    assert_eq!(json["content"], "job completed successfully");
    let ids = container_ids(&project, "web");
    assert_eq!(ids.len(), 1, "not deployed when the 201 came");
    let web = running_container(&daemon, &project, "web");
    assert_eq!(label(&web, SHA_LABEL), first);
    // upstream's trigger label of a webhook deploy is the pushed commit.
    assert_eq!(label(&web, "cd.doco.deployment.trigger"), first);
    // The deployment whose webhook_filter does not match the pushed ref was skipped (the 201 came
    // after every deployment of the repository was handled).
    assert!(container_ids(&filtered, "web").is_empty());
    assert_eq!(
        label(&web, "cd.doco.deployment.target.ref"),
        "refs/heads/main"
    );

    // A second push, announced asynchronously: 202 with a job id, then the new commit runs.
    repo.work
        .write("compose.yml", &sleep_services(&image, &[("web", "7102")]));
    let second = repo.push("second");
    let body = github_push("refs/heads/main", &second, &repo.url());
    let (status, json) = post_webhook(
        daemon.http_port,
        "/v1/webhook",
        &body,
        &hub_signature(&body, SECRET),
    );
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["content"], "job accepted");
    assert!(!json["job_id"].as_str().unwrap().is_empty());
    daemon.wait_for(
        "the second commit deployed by the async webhook",
        Duration::from_secs(90),
        || matches!(container_ids(&project, "web").as_slice(), [id] if label(id, SHA_LABEL) == second),
    );
    daemon.wait_for(
        "two successful webhook jobs counted",
        Duration::from_secs(10),
        || {
            daemon.metric(
                "doco_cd_webhook_requests_total",
                &[("repository", "e2e/repo")],
            ) == 2.0
        },
    );

    // A third push with a bad signature changes nothing.
    repo.work
        .write("compose.yml", &sleep_services(&image, &[("web", "7103")]));
    let third = repo.push("third");
    let body = github_push("refs/heads/main", &third, &repo.url());
    let (status, _) = post_webhook(
        daemon.http_port,
        "/v1/webhook",
        &body,
        &hub_signature(&body, "wrong"),
    );
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_secs(2));
    let ids = container_ids(&project, "web");
    assert_eq!(ids.len(), 1);
    assert_eq!(label(&ids[0], SHA_LABEL), second);
    assert_eq!(
        daemon.metric("doco_cd_webhook_errors_total", &[("repository", "unknown")]),
        2.0
    );
    // Webhook jobs are not polls.
    assert_eq!(daemon.metric("doco_cd_polls_total", &[]), 0.0);
}

/// A repository deployed only through webhooks gets the same event handling as a polled one, also
/// after doco-cd restarts (its last known good state comes from the state file).
#[test]
fn a_webhook_only_repository_is_healed_on_events_also_after_a_restart() {
    if !require_docker() {
        return;
    }
    const SECRET: &str = "e2e-webhook-secret";
    let image = test_image();
    let project = unique_name("e2e-webhook-events");
    let _guard = ProjectGuard::new(&project);
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\nreconciliation:\n  events: [die]\n"),
    );
    repo.work
        .write("compose.yml", &sleep_services(&image, &[("web", "7201")]));
    let first = repo.push("first");
    let data = tempfile::tempdir().unwrap();
    let vars = [("WEBHOOK_SECRET", SECRET.to_string())];
    let mut daemon = Daemon::start(data.path(), &vars);
    let body = github_push("refs/heads/main", &first, &repo.url());
    let (status, json) = post_webhook(
        daemon.http_port,
        "/v1/webhook?wait=true",
        &body,
        &hub_signature(&body, SECRET),
    );
    assert_eq!(status, 201, "{json}");
    let web = running_container(&daemon, &project, "web");

    docker(&["kill", &web]);
    daemon.wait_for(
        "web started again by its die event",
        Duration::from_secs(30),
        || container_state(&web) == "running",
    );

    daemon.stop();
    let daemon = Daemon::start(data.path(), &vars);
    // Once doco-cd runs again (and has enforced the state file), a die is handled as before.
    daemon.wait_for(
        "web running after the restart",
        Duration::from_secs(30),
        || container_state(&web) == "running",
    );
    daemon.wait_for(
        "the state file's last known good state enforced",
        Duration::from_secs(30),
        || daemon.log().contains("last known good state enforced"),
    );
    docker(&["kill", &web]);
    daemon.wait_for(
        "web started again by its die event after a restart",
        Duration::from_secs(30),
        || container_state(&web) == "running",
    );
    assert_eq!(container_ids(&project, "web"), vec![web]);
}

#[test]
fn destroy_removes_the_stack_it_deployed() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-destroy");
    let _guard = ProjectGuard::new(&project);
    let (repo, _) = HttpRepo::with_stack(&project, &sleep_services(&image, &[("web", "9201")]));
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    running_container(&daemon, &project, "web");
    // A file no fetch or export touches marks this mirror of the repository.
    let git_dir = data
        .path()
        .join(format!("127.0.0.1_{}/repo/mirror", repo.server.port()));
    std::fs::write(git_dir.join("e2e-marker"), "first clone").unwrap();

    // The shared test image must survive: keep images, remove the rest.
    repo.work.write(
        ".doco-cd.yml",
        &format!("name: {project}\ndestroy:\n  enabled: true\n  remove_images: false\n"),
    );
    repo.push("destroy the stack");
    daemon.wait_for("the stack removed", Duration::from_secs(60), || {
        container_ids(&project, "web").is_empty()
    });
    // `remove_dir` (upstream's default): the mirror was removed, and the next poll cloned it anew.
    daemon.wait_for(
        "the mirror removed and cloned again",
        Duration::from_secs(30),
        || git_dir.join("HEAD").exists() && !git_dir.join("e2e-marker").exists(),
    );
    daemon.wait_polls(2.0);
    assert!(
        container_ids(&project, "web").is_empty(),
        "a later poll brought it back"
    );
    assert!(
        daemon.metric(
            "doco_cd_deployment_errors_total",
            &[("deployment", &project)]
        ) == 0.0,
        "{}",
        daemon.log()
    );
    let state = serde_json::Value::Object(support::state_repositories(data.path()));
    let repos = state.as_object().unwrap();
    assert!(
        repos
            .values()
            .all(|r| r["deployments"].get(&project).is_none()),
        "{state}"
    );
}

#[test]
fn auto_discovery_deploys_each_directory_and_delete_removes_a_vanished_one() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    // Auto-discovered stacks are named after their directories: unique names keep tests apart.
    let kept = unique_name("e2e-ad-kept");
    let gone = unique_name("e2e-ad-gone");
    let _guards = (ProjectGuard::new(&kept), ProjectGuard::new(&gone));
    let repo = HttpRepo::new();
    repo.work.write(
        ".doco-cd.yml",
        "auto_discovery:\n  enabled: true\n  delete: true\n  remove_images: false\n",
    );
    repo.work.write(
        &format!("{kept}/compose.yml"),
        &sleep_services(&image, &[("web", "9301")]),
    );
    repo.work.write(
        &format!("{gone}/compose.yml"),
        &sleep_services(&image, &[("web", "9302")]),
    );
    repo.push("two discovered stacks");
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &[("POLL_CONFIG", poll_config(&repo.url()))]);
    let kept_web = running_container(&daemon, &kept, "web");
    running_container(&daemon, &gone, "web");
    assert_eq!(
        label(&kept_web, "cd.doco.deployment.auto_discovery"),
        "true"
    );

    repo.work.remove(&format!("{gone}/compose.yml"));
    repo.push("remove one directory");
    daemon.wait_for(
        "the vanished directory's stack removed",
        Duration::from_secs(60),
        || container_ids(&gone, "web").is_empty(),
    );
    assert_eq!(container_ids(&kept, "web"), vec![kept_web]);
}

/// A throw-away age key: (directory holding `key.txt`, its public recipient).
fn age_key() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen must be installed: run scripts/install-deps.sh");
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    (
        dir,
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

/// Writes `plain` as a SOPS-encrypted dotenv file at `rel_path` of the repository's work tree.
fn write_sops_dotenv(repo: &HttpRepo, rel_path: &str, plain: &str, recipient: &str) {
    let staging = tempfile::tempdir().unwrap();
    let plain_path = staging.path().join("plain.env");
    std::fs::write(&plain_path, plain).unwrap();
    let out = std::process::Command::new("sops")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .args(["encrypt", "--age", recipient, "--input-type", "dotenv"])
        .args(["--output-type", "dotenv"])
        .arg(&plain_path)
        .output()
        .expect("sops must be installed: run scripts/install-deps.sh");
    assert!(out.status.success(), "{out:?}");
    let encrypted = String::from_utf8(out.stdout).unwrap();
    assert!(encrypted.contains("ENC[") && !encrypted.contains(plain.trim()));
    repo.work.write(rel_path, &encrypted);
}

fn inspect(id: &str, template: &str) -> String {
    docker(&["inspect", "--format", template, id])
        .trim()
        .to_string()
}

#[test]
fn sops_encrypted_env_files_are_decrypted_before_deploying_and_a_changed_secret_recreates() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-sops");
    let keyless = unique_name("e2e-sops-nokey");
    let _guards = (ProjectGuard::new(&project), ProjectGuard::new(&keyless));
    let (key_dir, recipient) = age_key();
    let compose = format!(
        "services:\n  web:\n    image: {image}\n    command: [\"sleep\", \"${{SLEEP_SECONDS}}\"]\n    env_file: [app.env]\n    restart: unless-stopped\n    network_mode: none\n    stop_grace_period: 1s\n"
    );
    let stack = |name: &str, sleep: &str, token: &str| {
        let repo = HttpRepo::new();
        repo.work.write(".doco-cd.yml", &format!("name: {name}\n"));
        repo.work.write("compose.yml", &compose);
        write_sops_dotenv(
            &repo,
            ".env",
            &format!("SLEEP_SECONDS={sleep}\n"),
            &recipient,
        );
        write_sops_dotenv(
            &repo,
            "app.env",
            &format!("APP_TOKEN={token}\n"),
            &recipient,
        );
        repo.push("encrypted stack");
        repo
    };
    let repo = stack(&project, "94017531", "tok-one");
    let data = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("key.txt").display().to_string();
    let daemon = Daemon::start(
        data.path(),
        &[
            ("POLL_CONFIG", poll_config(&repo.url())),
            ("SOPS_AGE_KEY_FILE", key_file),
        ],
    );
    let first = running_container(&daemon, &project, "web");
    assert_eq!(
        inspect(&first, "{{json .Config.Cmd}}"),
        r#"["sleep","94017531"]"#
    );
    assert!(
        inspect(&first, "{{json .Config.Env}}").contains("APP_TOKEN=tok-one"),
        "the encrypted env_file (a service input) is decrypted too"
    );

    // Quiet polls at the same commit neither decrypt nor render again.
    daemon.wait_polls(1.0);
    let before = daemon.scrape();
    daemon.wait_polls(2.0);
    let after = daemon.scrape();
    for program in ["sops", "docker"] {
        let spawned = after.get("doco_cd_child_processes_total", &[("program", program)])
            - before.get("doco_cd_child_processes_total", &[("program", program)]);
        assert_eq!(spawned, 0.0, "{program} ran during quiet polls");
    }

    // A commit that changes only the encrypted value: the (decrypted) checkout is updated by the
    // next sync and the service is recreated with the new value.
    write_sops_dotenv(&repo, ".env", "SLEEP_SECONDS=9402\n", &recipient);
    let second_commit = repo.push("change the encrypted value");
    let mut second = String::new();
    daemon.wait_for("the service recreated", Duration::from_secs(90), || {
        let ids = container_ids(&project, "web");
        match ids.as_slice() {
            [id] if *id != first && label(id, SHA_LABEL) == second_commit => {
                second = id.clone();
                true
            }
            _ => false,
        }
    });
    assert_eq!(
        inspect(&second, "{{json .Config.Cmd}}"),
        r#"["sleep","9402"]"#
    );

    // A change to the encrypted env_file alone recreates too: the fingerprint is of the decrypted
    // content.
    write_sops_dotenv(&repo, "app.env", "APP_TOKEN=tok-two\n", &recipient);
    repo.push("change the encrypted env_file");
    daemon.wait_for(
        "the env_file change applied",
        Duration::from_secs(90),
        || {
            let ids = container_ids(&project, "web");
            matches!(ids.as_slice(), [id] if *id != second
            && state_is_running(id)
            && inspect(id, "{{json .Config.Env}}").contains("APP_TOKEN=tok-two"))
        },
    );
    assert_eq!(
        daemon.metric(
            "doco_cd_deployment_errors_total",
            &[("deployment", &project)]
        ),
        0.0,
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    for secret in ["94017531", "tok-one", "tok-two", "AGE-SECRET-KEY"] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }

    // Without a key: a deployment error that names the file and says how to configure a key;
    // nothing deployed, and the file is left encrypted.
    let locked = stack(&keyless, "9403", "tok-three");
    let data2 = tempfile::tempdir().unwrap();
    let without = Daemon::start(data2.path(), &[("POLL_CONFIG", poll_config(&locked.url()))]);
    without.wait_for("the deployment error", Duration::from_secs(60), || {
        without.metric(
            "doco_cd_deployment_errors_total",
            &[("deployment", &keyless)],
        ) >= 1.0
    });
    assert!(container_ids(&keyless, "web").is_empty());
    let log = without.log();
    assert!(
        log.contains(".env") && log.contains("SOPS-encrypted") && log.contains("SOPS_AGE_KEY_FILE"),
        "{log}"
    );
    assert!(!log.contains("9403"), "{log}");
}

fn state_is_running(id: &str) -> bool {
    container_state(id) == "running"
}

#[test]
fn a_sops_encrypted_file_variable_is_decrypted_at_start_up() {
    let (key_dir, recipient) = age_key();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "ghp_e2e_sops_token\n").unwrap();
    let token = dir.path().join("token");
    let out = std::process::Command::new("sops")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .args(["encrypt", "--age", &recipient, "--input-type", "binary"])
        .args(["--output-type", "binary"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&token, out.stdout).unwrap();
    let config_env = |key: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_doco-cd"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("GIT_ACCESS_TOKEN_FILE", &token)
            .args(["config", "env"]);
        if let Some(key) = key {
            command.env("SOPS_AGE_KEY_FILE", key);
        }
        command.output().unwrap()
    };
    let out = config_env(Some(&key_dir.path().join("key.txt")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l == "GIT_ACCESS_TOKEN=***"),
        "{stdout}"
    );
    assert!(!stderr.contains("SOPS"), "nothing reported: {stderr}");
    assert!(!stdout.contains("ghp_e2e") && !stderr.contains("ghp_e2e"));

    let out = config_env(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&token.display().to_string()) && stderr.contains("SOPS_AGE_KEY"),
        "{stderr}"
    );
}

#[test]
fn the_rest_api_deploys_lists_stops_starts_reports_and_removes_a_stack() {
    if !require_docker() {
        return;
    }
    const KEY: &str = "e2e-api-key";
    let image = test_image();
    let project = unique_name("e2e-api");
    let _guard = ProjectGuard::new(&project);
    let (repo, first) = HttpRepo::with_stack(&project, &sleep_services(&image, &[("web", "7301")]));
    let data = tempfile::tempdir().unwrap();
    // No POLL_CONFIG: only the API deploys.
    let daemon = Daemon::start(data.path(), &[("API_SECRET", KEY.to_string())]);
    let port = daemon.http_port;
    let auth = [("x-api-key", KEY), ("Content-Type", "application/json")];
    let api = |method: &str, path: &str, body: &str| http_request(port, method, path, &auth, body);

    // A wrong key is refused, and the refused poll deploys nothing.
    let poll = serde_json::json!([{"url": repo.url(), "reference": "main"}]).to_string();
    let (status, json) = http_request(
        port,
        "POST",
        "/v1/api/poll/run",
        &[("x-api-key", "wrong")],
        &poll,
    );
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "invalid api key");
    assert!(container_ids(&project, "web").is_empty());

    // A poll through the API deploys the stack before answering.
    let (status, json) = api("POST", "/v1/api/poll/run", &poll);
    assert_eq!(status, 200, "{json}\n{}", daemon.log());
    assert_eq!(json["content"], "poll jobs complete");
    let poll_job = json["job_id"].as_str().unwrap().to_string();
    let web = running_container(&daemon, &project, "web");
    assert_eq!(label(&web, SHA_LABEL), first);

    // The run is recorded as a succeeded poll.
    let (status, json) = api("GET", &format!("/v1/api/run/{poll_job}"), "");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["content"]["status"], "succeeded", "{json}");
    assert_eq!(json["content"]["trigger"], "poll");
    let (status, json) = api("GET", "/v1/api/runs?trigger=poll&status=succeeded", "");
    assert_eq!(status, 200, "{json}");
    assert!(
        json["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["job_id"] == poll_job.as_str()),
        "{json}"
    );

    // The project is listed, with its running container.
    let (status, json) = api("GET", "/v1/api/projects", "");
    assert_eq!(status, 200, "{json}");
    let listed = json["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Name"] == project.as_str())
        .unwrap_or_else(|| panic!("{project} not listed: {json}"))
        .clone();
    assert_eq!(listed["Status"], "running(1)");
    let (status, json) = api("GET", &format!("/v1/api/project/{project}"), "");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["content"][0]["ID"], web.as_str());
    assert_eq!(json["content"][0]["Service"], "web");

    // Stop, then start: the same container, stopped then running again.
    let (status, json) = api(
        "POST",
        &format!("/v1/api/project/{project}/stop?timeout=1"),
        "",
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["content"], format!("project stopped: {project}"));
    assert_eq!(container_state(&web), "exited");
    // A stopped project is listed only with all=true.
    let (_, json) = api("GET", "/v1/api/projects", "");
    assert!(
        json["content"]
            .as_array()
            .is_none_or(|ps| ps.iter().all(|p| p["Name"] != project.as_str())),
        "{json}"
    );
    let (status, json) = api("GET", "/v1/api/projects?all=true", "");
    assert_eq!(status, 200, "{json}");
    assert!(
        json["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Name"] == project.as_str() && p["Status"] == "exited(1)"),
        "{json}"
    );
    let (status, json) = api("POST", &format!("/v1/api/project/{project}/start"), "");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["content"], format!("project started: {project}"));
    assert_eq!(container_state(&web), "running");
    assert_eq!(running_container(&daemon, &project, "web"), web);

    // The repositories view shows the commit deployed and its deployment.
    let (status, json) = api("GET", "/v1/api/repositories", "");
    assert_eq!(status, 200, "{json}");
    let repos = json["content"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{json}");
    assert_eq!(repos[0]["commit"], first.as_str());
    assert_eq!(repos[0]["offline"], false);
    assert_eq!(repos[0]["deployments"][0]["project"], project.as_str());

    // DELETE removes it (keeping the shared test image).
    let (status, json) = api(
        "DELETE",
        &format!("/v1/api/project/{project}?images=false"),
        "",
    );
    assert_eq!(status, 200, "{json}\n{}", daemon.log());
    assert_eq!(json["content"], format!("project removed: {project}"));
    assert!(container_ids(&project, "web").is_empty());
    let (status, _) = api("GET", &format!("/v1/api/project/{project}"), "");
    assert_eq!(status, 404);
}

#[test]
fn tls_on_the_http_ports_and_the_healthcheck_command_speaks_it() {
    if !require_docker() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let generated = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=doco-cd.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let data = tempfile::tempdir().unwrap();
    let tls_vars = [
        ("HTTP_TLS_CERT_FILE", cert.display().to_string()),
        ("HTTP_TLS_KEY_FILE", key.display().to_string()),
    ];
    let daemon = Daemon::spawn(data.path(), &tls_vars);
    let healthcheck = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_doco-cd"))
            .arg("healthcheck")
            .env_clear()
            .env("HTTP_PORT", daemon.http_port.to_string())
            .envs(tls_vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    daemon.wait_for(
        "`doco-cd healthcheck` over https",
        Duration::from_secs(30),
        || healthcheck().status.success(),
    );
    assert_eq!(
        String::from_utf8_lossy(&healthcheck().stdout).trim(),
        "healthy"
    );
    // Plain HTTP gets no answer from a TLS port, on either port.
    assert!(http_get(daemon.http_port, "/v1/health").is_none_or(|(status, _)| status != 200));
    assert!(http_get(daemon.metrics_port, "/metrics").is_none_or(|(status, _)| status != 200));
}

/// Issue 8: a commit that cannot deploy never keeps an unchanged service down. `web` moves to an
/// image that does not exist; `proxy` is stopped, then removed: both times it comes back as last
/// deployed (a start keeps its container), online and with the Git server stopped; the broken change
/// is retried with backoff, not at every poll.
#[test]
fn a_broken_commit_never_keeps_an_unchanged_service_down_online_or_offline() {
    if !require_docker() {
        return;
    }
    let image = test_image();
    let project = unique_name("e2e-broken");
    let _guard = ProjectGuard::new(&project);
    let (mut repo, first) = HttpRepo::with_stack(
        &project,
        &sleep_services(&image, &[("proxy", "4101"), ("web", "4102")]),
    );
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("POLL_CONFIG", poll_config(&repo.url())),
        ("DOCO_CD_MAINTAIN_OFFLINE_STATE", "true".to_string()),
    ];
    let daemon = Daemon::start(data.path(), &vars);
    let proxy = running_container(&daemon, &project, "proxy");
    let web = running_container(&daemon, &project, "web");
    let doco_labels = |id: &str| {
        let all: std::collections::BTreeMap<String, String> = serde_json::from_str(&docker(&[
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            id,
        ]))
        .unwrap();
        all.into_iter()
            .filter(|(key, _)| key.starts_with("cd.doco."))
            .collect::<Vec<_>>()
    };
    let proxy_labels = doco_labels(&proxy);

    let good = sleep_services(&image, &[("proxy", "4101"), ("web", "4102")]);
    let broken = good.replacen(
        &format!("image: {image}\n    command: [\"sleep\", \"4102\"]"),
        "image: doco-test/does-not-exist:1\n    command: [\"sleep\", \"4102\"]",
        1,
    );
    assert_ne!(broken, good);
    repo.work.write("compose.yml", &broken);
    let bad = repo.push("web: an image that does not exist");
    let errors = daemon.metric("doco_cd_deployment_errors_total", &[]);
    daemon.wait_for("the broken commit fails", Duration::from_secs(60), || {
        daemon.metric("doco_cd_deployment_errors_total", &[]) > errors
    });
    let repository = format!("127.0.0.1:{}/repo", repo.server.port());
    let backoff = [
        ("repository", repository.as_str()),
        ("deployment", project.as_str()),
    ];
    assert!(daemon.metric("doco_cd_deployment_backoff_seconds", &backoff) >= 10.0);

    // Online: the stopped proxy is started (same container), the removed one recreated as deployed.
    docker(&["stop", "-t", "1", &proxy]);
    daemon.wait_for(
        "proxy started again, online",
        Duration::from_secs(30),
        || container_state(&proxy) == "running",
    );
    docker(&["rm", "-f", &proxy]);
    let recreated = running_container(&daemon, &project, "proxy");
    assert_ne!(recreated, proxy);
    assert_eq!(label(&recreated, SHA_LABEL), first);
    // Exactly as last deployed: every cd.doco.* label byte for byte (compose's own labels name the
    // exported files of the last good commit).
    assert_eq!(
        doco_labels(&recreated),
        proxy_labels,
        "recreated exactly as last deployed"
    );
    assert_eq!(
        container_ids(&project, "web"),
        vec![web.clone()],
        "web keeps its last good container"
    );
    assert_eq!(label(&web, SHA_LABEL), first);

    // Offline: the checkout is at the broken commit, but the last good state is what is enforced.
    repo.server.stop();
    daemon.wait_for("the repository is offline", Duration::from_secs(30), || {
        daemon.metric("doco_cd_repository_offline", &[("repository", &repository)]) == 1.0
    });
    docker(&["stop", "-t", "1", &recreated]);
    daemon.wait_for(
        "proxy started again, offline",
        Duration::from_secs(30),
        || container_state(&recreated) == "running",
    );
    docker(&["rm", "-f", &recreated]);
    let offline = running_container(&daemon, &project, "proxy");
    assert_eq!(label(&offline, SHA_LABEL), first);
    assert_eq!(container_state(&web), "running");

    // The broken change was retried with backoff, not at every 1 s poll.
    let failed = daemon.metric("doco_cd_deployment_errors_total", &[]) - errors;
    let polls = daemon.metric("doco_cd_polls_total", &[]);
    assert!(failed <= 4.0, "{failed} failed attempts in {polls} polls");
    assert_ne!(bad, first);
}
