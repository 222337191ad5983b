//! The daemon: reads the configuration, connects to Docker, loads the last known state, starts one
//! poll loop per `POLL_CONFIG` entry and the HTTP servers, and runs until SIGINT/SIGTERM.
//!
//! A poll loop that ends other than by shutdown (a panic) is fatal: the daemon logs it and exits
//! non-zero, so a supervisor restarts it instead of it silently no longer polling.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use doco_config::{AppConfig, LogFormat};
use doco_engine::events::EventLoop;
use doco_engine::watch::{RefWatcher, local_git_dir, watch_refs};
use doco_engine::{Metrics, Reconciler, Schedule, run_poll_loop};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

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
    init_logging(&config);
    for warning in &config.warnings {
        warn!(%warning, "configuration");
    }
    for name in &config.unsupported {
        warn!(variable = %name, "this setting is not supported yet and has no effect");
    }

    let docker = doco_docker::Engine::connect().context("cannot create the Docker client")?;
    docker
        .ping()
        .await
        .context("the Docker engine does not answer; doco-cd needs it to deploy")?;
    let mut compose = doco_docker::Compose::new(
        doco_docker::Compose::docker_env_from_process(),
        config.docker_quiet_deploy,
    );
    if config.pass_env {
        compose = compose.with_passed_env(passed_env(&env));
    }
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
    if config.docker_swarm_features && docker.is_swarm_manager().await.unwrap_or(false) {
        warn!(
            "this Docker engine is a Swarm manager: upstream would deploy with `docker stack`; this build deploys with `docker compose` (stack deploys are not supported yet)"
        );
    }
    config.data_host_path = data_host_path(&config, &docker).await?;
    let config = Arc::new(config);
    let reconciler = Arc::new(Reconciler::new(
        config.clone(),
        docker.clone(),
        compose,
        metrics.clone(),
    ));
    if let Some(note) = reconciler
        .paths()
        .link_host_path()
        .context("cannot make DATA_HOST_PATH readable inside doco-cd (as a non-root user, mount the data directory at the same path inside and outside the container: docs/container.md)")?
    {
        info!("{note}");
    }

    let shutdown = CancellationToken::new();
    // Every poll, webhook and API poll is recorded here, for GET /v1/api/runs.
    let tracker = Arc::new(crate::api::RunTracker::default());
    let servers = crate::http::serve(
        &config,
        docker.clone(),
        metrics,
        reconciler.clone(),
        tracker.clone(),
        shutdown.clone(),
    )
    .await
    .context("cannot start the HTTP servers")?;

    let mut loops = JoinSet::new();
    let mut triggers = HashMap::new();
    for poll in config.poll_configs.iter().cloned() {
        let (trigger, trigger_rx) = tokio::sync::mpsc::unbounded_channel();
        let Some((schedule, watcher)) = plan_poll_loop(&poll, &trigger) else {
            info!(url = %doco_git::redact_url(&poll.url), "interval is 0 and run_once is false: this poll is disabled");
            continue;
        };
        let trigger_rx = (!schedule.run_once).then_some(trigger_rx);
        triggers.insert(reconciler.loop_key(&poll), trigger);
        let reconciler = reconciler.clone();
        let tracker = tracker.clone();
        let cancel = shutdown.clone();
        loops.spawn(async move {
            // The watcher lives as long as the loop it triggers.
            let _watcher = watcher;
            let name = doco_git::repo_name(&poll.url);
            run_poll_loop(schedule, cancel, trigger_rx, || async {
                // The error was logged and counted by the reconciler; the loop goes on.
                let run = reconciler.poll(&poll);
                let _ = tracker
                    .track(crate::api::RunTrigger::Poll, &name, &poll.reference, run)
                    .await;
            })
            .await;
            name
        });
    }
    let events = EventLoop::new(docker.clone(), reconciler.clone(), triggers);
    let event_task = tokio::spawn(events.run(shutdown.clone()));
    info!(
        polls = config.poll_configs.len(),
        offline_state = config.maintain_offline_state,
        data = %config.data_mount_path.display(),
        "doco-cd started"
    );

    let code = wait(&mut loops, &shutdown).await;
    shutdown.cancel();
    while loops.join_next().await.is_some() {}
    let _ = event_task.await;
    servers.await;
    info!("doco-cd stopped");
    Ok(code)
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
/// when its refs cannot be watched. `None` when the poll is disabled (`interval: 0` for a remote).
fn plan_poll_loop(
    poll: &doco_config::PollConfig,
    trigger: &UnboundedSender<()>,
) -> Option<(Schedule, Option<RefWatcher>)> {
    let local = local_git_dir(&poll.url);
    let mut schedule = Schedule {
        interval: poll.interval,
        run_once: poll.run_once,
    };
    if poll.run_once {
        return Some((schedule, None));
    }
    let watcher = match (&local, poll.watch) {
        (Some(dir), true) => match watch_refs(dir, trigger.clone()) {
            Ok(watcher) => {
                info!(dir = %dir.display(), "watching the local repository's refs");
                Some(watcher)
            }
            Err(e) => {
                warn!(error = %e, "cannot watch the local repository; polling on the interval only");
                None
            }
        },
        _ => None,
    };
    if schedule.interval.is_zero() {
        match (&local, &watcher) {
            (None, _) => return None,
            (Some(_), None) => schedule.interval = WATCHERLESS_FALLBACK,
            (Some(_), Some(_)) => {}
        }
    }
    Some((schedule, watcher))
}

/// upstream's interval for a local repository with `interval: 0` whose refs cannot be watched.
const WATCHERLESS_FALLBACK: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Waits for a signal or for a poll loop to die.
async fn wait(loops: &mut JoinSet<String>, shutdown: &CancellationToken) -> ExitCode {
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
            joined = loops.join_next(), if !loops.is_empty() => match joined {
                Some(Ok(name)) if !shutdown.is_cancelled() => info!(repository = %name, "run_once poll finished"),
                Some(Err(e)) => {
                    error!(error = %e, "a poll loop died; exiting so that a supervisor restarts doco-cd");
                    return ExitCode::FAILURE;
                }
                _ => {}
            },
        }
    }
}

fn init_logging(config: &AppConfig) {
    let level = format!("{:?}", config.log_level).to_lowercase();
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,doco_cd={level},doco_engine={level},doco_git={level},doco_docker={level},doco_config={level},doco_process={level}"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poll_loop_that_dies_is_fatal_not_silent() {
        let mut loops = JoinSet::new();
        loops.spawn(async { "finished-run-once".to_string() });
        loops.spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            panic!("a poll loop died");
        });
        let code = wait(&mut loops, &CancellationToken::new()).await;
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
