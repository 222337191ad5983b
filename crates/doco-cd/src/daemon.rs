//! The daemon: reads the configuration, connects to Docker, loads the last known state, starts one
//! poll loop per `POLL_CONFIG` entry and the HTTP servers, and runs until SIGINT/SIGTERM.
//!
//! A poll loop that ends other than by shutdown (a panic) is fatal: the daemon logs it and exits
//! non-zero, so a supervisor restarts it instead of it silently no longer polling.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use doco_config::AppConfig;
use doco_engine::events::EventLoop;
use doco_engine::scheduler::{forward_refs, run_timer};
use doco_engine::watch::{RefWatcher, local_git_dir, watch_refs};
use doco_engine::{Metrics, Reason, Reconciler, Scheduler, run_scheduler};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Makes compose CLI drivers for an engine endpoint, with the registry configuration checked once
/// and, for `DOCKER_AUTH_CONFIG`, written under doco-cd's state directory
/// ([`doco_docker::registry_auth`]).
#[derive(Clone)]
struct ComposeFactory {
    registry_config: Option<std::path::PathBuf>,
    quiet: bool,
    passed_env: Option<BTreeMap<String, String>>,
}

impl ComposeFactory {
    fn new(
        env: &BTreeMap<String, String>,
        config: &AppConfig,
    ) -> Result<ComposeFactory, doco_docker::registry_auth::RegistryConfigError> {
        let state_dir = config.data_mount_path.join(".doco-cd");
        let registry = doco_docker::registry_auth::prepare(env, &state_dir)?;
        for warning in &registry.warnings {
            warn!(%warning, "registry credentials");
        }
        Ok(ComposeFactory {
            registry_config: registry.docker_config,
            quiet: config.docker_quiet_deploy,
            passed_env: config.pass_env.then(|| passed_env(env)),
        })
    }

    /// The compose driver pointed at `endpoint` (the engine the API client of that endpoint reads).
    fn at(&self, endpoint: &doco_docker::Endpoint) -> doco_docker::Compose {
        let docker_env =
            doco_docker::Compose::docker_env(endpoint, self.registry_config.as_deref());
        let compose = doco_docker::Compose::new(docker_env, self.quiet);
        match &self.passed_env {
            Some(passed) => compose.with_passed_env(passed.clone()),
            None => compose,
        }
    }
}

/// Opens the engine of a deploy config's `context` from the docker CLI's context store (under
/// `config_dir`), and hands each engine it opens to `opened`, which follows its events.
fn context_opener(
    config_dir: std::path::PathBuf,
    composes: ComposeFactory,
    opened: tokio::sync::mpsc::UnboundedSender<doco_docker::Engine>,
) -> doco_engine::adapters::ContextOpener {
    Arc::new(move |name: &str| {
        let failed = |e: &dyn std::fmt::Display| format!("Docker context `{name}`: {e}");
        let endpoint =
            doco_docker::Endpoint::from_context(name, &config_dir).map_err(|e| failed(&e))?;
        let engine = doco_docker::Engine::connect_endpoint(&endpoint).map_err(|e| failed(&e))?;
        let compose = composes.at(&endpoint);
        let registry = doco_docker::Registry::new(&compose.docker_config_dir());
        info!(
            context = name,
            host = endpoint.host(),
            "deploying to another Docker context"
        );
        // The receiver lives as long as the daemon.
        let _ = opened.send(engine.clone());
        let runtime = doco_engine::adapters::Docker {
            view: doco_docker::ContainerView::new(engine.clone()),
            engine,
            compose,
            registry,
        };
        Ok(Arc::new(runtime) as Arc<dyn doco_engine::adapters::Runtime>)
    })
}

/// Runs the daemon until a signal arrives. Configuration errors exit with code 2.
pub async fn run() -> anyhow::Result<ExitCode> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut config = match doco_engine::sops::app_config_from_env(&env).await {
        Ok(config) => config,
        Err(e) => {
            eprintln!("doco-cd: configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if !config.unsupported.is_empty() {
        eprintln!(
            "doco-cd: configuration error: {}",
            refusal(&config.unsupported)
        );
        return Ok(ExitCode::from(2));
    }
    crate::logging::init(&config);
    for warning in &config.warnings {
        warn!(%warning, "configuration");
    }

    let endpoint = match doco_docker::Endpoint::from_env(&env) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            error!("configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    info!(
        host = endpoint.host(),
        origin = endpoint.origin(),
        "Docker engine"
    );
    let docker = doco_docker::Engine::connect_endpoint(&endpoint)
        .context("cannot create the Docker client")?;
    docker
        .ping()
        .await
        .context("the Docker engine does not answer; doco-cd needs it to deploy")?;
    let metrics = Arc::new(Metrics::new());
    metrics
        .info
        .get_or_create(&doco_engine::metrics::InfoLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            log_level: format!("{:?}", config.log_level).to_lowercase(),
            start_time: humantime_now(),
        })
        .set(1);

    std::fs::create_dir_all(&config.data_mount_path).with_context(|| {
        format!(
            "cannot create DATA_MOUNT_PATH {}",
            config.data_mount_path.display()
        )
    })?;
    let composes = match ComposeFactory::new(&env, &config) {
        Ok(composes) => composes,
        Err(e) => {
            error!("configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let compose = composes.at(&endpoint);
    if config.docker_swarm_features && docker.is_swarm_manager().await.unwrap_or(false) {
        error!(
            "configuration error: this Docker engine is a Swarm manager and DOCKER_SWARM_FEATURES is true, but this doco-cd cannot deploy Swarm stacks yet; set DOCKER_SWARM_FEATURES=false to deploy with docker compose on this manager"
        );
        return Ok(ExitCode::from(2));
    }
    config.data_host_path = data_host_path(&config, &docker).await?;
    let config = Arc::new(config);
    let (context_engines, mut opened_engines) = tokio::sync::mpsc::unbounded_channel();
    let opener = context_opener(
        doco_docker::docker_config_dir(&env),
        composes,
        context_engines,
    );
    let reconciler = Arc::new(
        Reconciler::new(
            config.clone(),
            docker.clone(),
            compose.clone(),
            metrics.clone(),
        )
        .with_contexts(opener),
    );
    if let Some(note) = reconciler
        .paths()
        .link_host_path()
        .context("cannot make DATA_HOST_PATH readable inside doco-cd (as a non-root user, mount the data directory at the same path inside and outside the container: docs/container.md)")?
    {
        info!("{note}");
    }

    let shutdown = CancellationToken::new();
    let (scheduler, requests) = Scheduler::new();
    // Every poll, webhook and API poll is recorded here, for GET /v1/api/runs.
    let tracker = Arc::new(crate::api::RunTracker::default());
    let jobs = doco_engine::jobs::Jobs::new(doco_engine::jobs::JobsParts {
        engine: Arc::new(docker.clone()),
        clock: doco_engine::jobs::Clock::System,
        tz: doco_engine::jobs::daemon_zone(),
        locks: reconciler.stack_locks(),
        registry: reconciler.registry(),
        metrics: metrics.scheduled.clone(),
        notifier: doco_engine::notify::Notifier::from_config(&config),
        observer: Some(Arc::new(crate::api::jobs::TrackerObserver(tracker.clone()))),
    });
    let backend = crate::http::Backend {
        docker: docker.clone(),
        compose,
        metrics,
        reconciler: reconciler.clone(),
        scheduler: scheduler.clone(),
        tracker: tracker.clone(),
        jobs: jobs.clone(),
    };
    let servers = crate::http::serve(&config, backend, shutdown.clone())
        .await
        .context("cannot start the HTTP servers")?;

    let mut tasks: JoinSet<String> = JoinSet::new();
    if config.scheduler_enabled {
        let cancel = shutdown.clone();
        tasks.spawn(async move {
            jobs.run(cancel).await;
            "the job scheduler".to_string()
        });
    } else {
        info!("job scheduler disabled (SCHEDULER_ENABLED=false)");
    }
    let runner = reconciler.clone();
    let runs = tracker.clone();
    let concurrency = config.max_concurrent_deployments.max(1);
    let cancel = shutdown.clone();
    tasks.spawn(async move {
        run_scheduler(requests, concurrency, cancel, move |run| {
            let reconciler = runner.clone();
            let tracker = runs.clone();
            async move { track_run(&reconciler, &tracker, run).await }
        })
        .await;
        "the scheduler".to_string()
    });
    let mut watchers = Vec::new();
    for poll in config.poll_configs.iter().cloned() {
        match plan_poll_loop(&poll) {
            None => {
                info!(url = %doco_git::redact_url(&poll.url), "interval is 0 and run_once is false: this poll is disabled");
            }
            Some((interval, watch)) => {
                scheduler.enqueue(poll.clone(), Reason::Startup);
                if let Some(git_dir) = watch {
                    watchers.extend(spawn_watcher(
                        &mut tasks, &scheduler, &poll, &git_dir, &shutdown,
                    ));
                }
                if let Some(interval) = interval {
                    let timer =
                        run_timer(scheduler.clone(), poll.clone(), interval, shutdown.clone());
                    let name = doco_git::repo_name(&poll.url);
                    tasks.spawn(async move {
                        timer.await;
                        format!("the poll timer of {name}")
                    });
                }
            }
        }
    }
    for poll in unpolled_repositories(&reconciler, &config).await {
        scheduler.enqueue(poll, Reason::Recover);
    }
    let events = EventLoop::new(
        docker.clone(),
        reconciler.registry(),
        scheduler.clone(),
        reconciler.take_unhealthy_reports(),
    );
    tasks.spawn({
        let cancel = shutdown.clone();
        async move {
            events.run(cancel).await;
            "the engine event loop".to_string()
        }
    });
    // Each other context's engine gets an event loop of its own once a deployment opens it.
    tasks.spawn({
        let (registry, scheduler, cancel) =
            (reconciler.registry(), scheduler.clone(), shutdown.clone());
        async move {
            let mut loops = JoinSet::new();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    Some(engine) = opened_engines.recv() => {
                        let events = EventLoop::new(engine, registry.clone(), scheduler.clone(), None);
                        loops.spawn(events.run(cancel.clone()));
                    }
                }
            }
            while loops.join_next().await.is_some() {}
            "the event loops of other Docker contexts".to_string()
        }
    });
    if let Some(view) = reconciler.container_view() {
        let cancel = shutdown.clone();
        tasks.spawn(async move {
            view.run(cancel).await;
            "the container view".to_string()
        });
    }
    if config.artifact_gc_enabled {
        let (reconciler, cancel) = (reconciler.clone(), shutdown.clone());
        let interval = config.artifact_gc_interval.max(Duration::from_secs(1));
        let settings = doco_engine::store::GcSettings {
            retention_records: config.artifact_gc_retention_records,
            retention_ttl: config.artifact_gc_retention_ttl,
        };
        tasks.spawn(async move {
            loop {
                if let Err(e) = reconciler.collect_garbage(settings).await {
                    warn!(error = %e, "artifact GC skipped this pass: the engine could not say which exports its containers use");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            "the artifact garbage collector".to_string()
        });
    } else {
        info!(
            "artifact GC disabled (ARTIFACT_GC_ENABLED=false): exports stay until removed by hand"
        );
    }
    info!(
        polls = config.poll_configs.len(),
        offline_state = config.maintain_offline_state,
        data = %config.data_mount_path.display(),
        "doco-cd started"
    );

    let code = wait(&mut tasks, &shutdown).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    drop(watchers);
    servers.await;
    info!("doco-cd stopped");
    Ok(code)
}

/// The repositories of the state file that no `POLL_CONFIG` entry follows (deployed by webhooks or
/// the API), as poll configurations that enforce their last known good state.
async fn unpolled_repositories(
    reconciler: &Reconciler,
    config: &AppConfig,
) -> Vec<doco_config::PollConfig> {
    let polled: Vec<String> = config
        .poll_configs
        .iter()
        .map(|p| doco_engine::state::repository_key(&doco_git::repo_name(&p.url), &p.reference))
        .collect();
    reconciler
        .state_snapshot()
        .await
        .repositories
        .into_iter()
        .filter(|(key, repo)| !polled.contains(key) && !repo.deployments.is_empty())
        .map(|(_, repo)| doco_config::PollConfig {
            url: repo.url,
            reference: repo.reference,
            target: repo.target,
            run_once: true,
            ..doco_config::PollConfig::default()
        })
        .collect()
}

/// Runs one reconcile for the scheduler and records it for `GET /v1/api/runs` (webhooks and API
/// polls record their own jobs).
async fn track_run(
    reconciler: &Reconciler,
    tracker: &crate::api::RunTracker,
    run: doco_engine::scheduler::Run,
) -> (
    doco_engine::scheduler::RunResult,
    doco_engine::scheduler::Action,
) {
    let tracked = run
        .reasons
        .iter()
        .any(|r| matches!(r, Reason::Startup | Reason::Timer | Reason::Refs));
    if !tracked {
        return reconciler.reconcile(run).await;
    }
    let name = doco_git::repo_name(&run.poll.url);
    let reference = run.poll.reference.clone();
    let mut action = doco_engine::scheduler::Action::default();
    let result = tracker
        .track(crate::api::RunTrigger::Poll, &name, &reference, async {
            let (result, next) = reconciler.reconcile(run).await;
            action = next;
            result
        })
        .await;
    (result, action)
}

/// Starts the refs watcher of a local repository and forwards its changes to the scheduler.
fn spawn_watcher(
    tasks: &mut JoinSet<String>,
    scheduler: &Scheduler,
    poll: &doco_config::PollConfig,
    git_dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> Option<RefWatcher> {
    let (changes, changed) = tokio::sync::mpsc::unbounded_channel();
    let watcher = watch_refs(git_dir, changes).ok()?;
    info!(dir = %git_dir.display(), "watching the local repository's refs");
    let forward = forward_refs(scheduler.clone(), poll.clone(), changed, shutdown.clone());
    tasks.spawn(async move {
        forward.await;
        "a refs watcher".to_string()
    });
    Some(watcher)
}
/// Where the Docker daemon finds the data volume: `DATA_HOST_PATH` when set; otherwise, when doco-cd
/// runs in a container, the source of its mount at `DATA_MOUNT_PATH` (upstream detects it the same
/// way); otherwise the mount path itself.
async fn data_host_path(
    config: &AppConfig,
    docker: &doco_docker::Engine,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if config.data_host_path.is_some() {
        return Ok(config.data_host_path.clone());
    }
    let Some(id) = doco_docker::own_container_id() else {
        return Ok(None);
    };
    let mount = &config.data_mount_path;
    let source = docker
        .mount_source(&id, mount)
        .await
        .context("cannot inspect doco-cd's own container to find its data volume")?;
    match source {
        Some(source) => {
            info!(data_host_path = %source.display(), "detected where the data volume lives on the host");
            Ok(Some(source))
        }
        None => anyhow::bail!(
            "doco-cd runs in container {} but nothing is mounted at DATA_MOUNT_PATH {}: mount the data volume there, or set DATA_HOST_PATH",
            id.get(..12).unwrap_or(&id),
            mount.display()
        ),
    }
}

/// `PASS_ENV=true`: doco-cd's environment for compose's interpolation, as upstream passes it, except
/// doco-cd's own secrets (`GIT_ACCESS_TOKEN`, `WEBHOOK_SECRET`, ... and their `_FILE` variants, and
/// `SOPS_*` keys), which no compose file needs and no compose process should hold.
fn passed_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let secret = |key: &str| {
        let base = key.strip_suffix("_FILE").unwrap_or(key);
        doco_config::VALUE_FILE_VARIABLES.contains(&base) || key.starts_with("SOPS_")
    };
    env.iter()
        .filter(|(key, _)| !secret(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// How upstream schedules a poll: every interval; a local repository also on each change of its refs
/// (`watch`, default true), and with `interval: 0` on those changes only, falling back to once a day
/// when its refs cannot be watched. Returns the timer's interval (none for `run_once` or a watched
/// `interval: 0`) and the Git directory to watch; `None` when the poll is disabled (`interval: 0`
/// for a remote).
fn plan_poll_loop(
    poll: &doco_config::PollConfig,
) -> Option<(Option<std::time::Duration>, Option<std::path::PathBuf>)> {
    if poll.run_once {
        return Some((None, None));
    }
    let local = local_git_dir(&poll.url);
    let watchable = local
        .as_ref()
        .filter(|dir| poll.watch && dir.join("refs").is_dir())
        .cloned();
    let interval = match (poll.interval.is_zero(), &local, &watchable) {
        (false, _, _) => Some(poll.interval),
        (true, None, _) => return None,
        (true, Some(_), None) => Some(WATCHERLESS_FALLBACK),
        (true, Some(_), Some(_)) => None,
    };
    Some((interval, watchable))
}

/// upstream's interval for a local repository with `interval: 0` whose refs cannot be watched.
const WATCHERLESS_FALLBACK: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Waits for a signal, or for a task that must run until shutdown (the scheduler, a timer, a
/// watcher's forwarder, the event loop) to end: that is fatal, never a silent stop.
async fn wait(tasks: &mut JoinSet<String>, shutdown: &CancellationToken) -> ExitCode {
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("SIGINT received, shutting down"); return ExitCode::SUCCESS; }
            _ = sigterm.recv() => { info!("SIGTERM received, shutting down"); return ExitCode::SUCCESS; }
            joined = tasks.join_next(), if !tasks.is_empty() => match joined {
                Some(Ok(name)) if !shutdown.is_cancelled() => {
                    error!(task = %name, "a task that must run until shutdown ended; exiting so that a supervisor restarts doco-cd");
                    return ExitCode::FAILURE;
                }
                Some(Err(e)) => {
                    error!(error = %e, "a task died; exiting so that a supervisor restarts doco-cd");
                    return ExitCode::FAILURE;
                }
                _ => {}
            },
        }
    }
}

/// The start-up error for set variables of features this build does not have: refused, never
/// accepted and ignored.
pub(crate) fn refusal(unsupported: &[String]) -> String {
    format!(
        "{} set, but not supported by this implementation (refused rather than ignored): unset {}",
        unsupported.join(", "),
        if unsupported.len() == 1 { "it" } else { "them" }
    )
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_is_fatal_not_silent() {
        let mut tasks = JoinSet::new();
        tasks.spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            panic!("the scheduler died");
        });
        let code = wait(&mut tasks, &CancellationToken::new()).await;
        assert_eq!(format!("{code:?}"), format!("{:?}", ExitCode::FAILURE));
    }

    #[test]
    fn pass_env_keeps_doco_cds_own_secrets_out() {
        let env = BTreeMap::from([
            ("DOMAIN".to_string(), "example.com".to_string()),
            ("GIT_ACCESS_TOKEN".to_string(), "t".to_string()),
            ("WEBHOOK_SECRET_FILE".to_string(), "/run/s".to_string()),
            ("SOPS_AGE_KEY".to_string(), "k".to_string()),
        ]);
        assert_eq!(
            passed_env(&env).into_keys().collect::<Vec<_>>(),
            vec!["DOMAIN".to_string()]
        );
    }
}
