//! One poll of one repository, end to end: sync the checkout, resolve the deployments, look at the
//! engine once, decide per deployment with `plan`, apply, and record the outcome in the state file,
//! the metrics and the log.
//!
//! This is where the offline semantics live. When the fetch fails with a transport error and
//! `DOCO_CD_MAINTAIN_OFFLINE_STATE` is on, the poll goes on from the checkout on the data volume (the
//! last commit fetched) in [`Mode::Offline`]: services are started or recreated as last deployed, and
//! nothing is removed, pulled or force-recreated. A fetch that failed is never read as an empty desired
//! state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use doco_config::{AppConfig, PollConfig, ResolvedDeployment};
use doco_docker::{Compose, ComposeProject, ContainerInfo, PullPolicy, UpOptions};
use doco_git::{GitClient, GitError};
use tracing::{Instrument, error, info, info_span, warn};

use crate::fingerprint::{project_hash, service_fingerprint};
use crate::labels::{LabelContext, adoptable_labels, fresh_labels};
use crate::metrics::{self, Metrics};
use crate::notify::{Level, Notifier};
use crate::paths::DataPaths;
use crate::plan::{self, Desired, FullPlan, Mode, QuickPlan, Switches};
use crate::state::{
    DeploymentRecord, RepositoryState, ServiceRecord, State, StateStore, repository_key,
};

/// Why a poll failed. Deployment failures are reported per deployment and summarised here.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The repository could not be synced and no last known state could be used.
    #[error("{0}")]
    Git(#[from] GitError),
    /// The repository is unreachable and was never fetched, so there is nothing to enforce.
    #[error(
        "{url} is unreachable and has never been fetched, so there is no last known state to enforce: {source}"
    )]
    NeverFetched {
        /// The repository (without credentials).
        url: String,
        /// The fetch error.
        source: GitError,
    },
    /// Authentication failed; the last known state was enforced meanwhile if the flag is on.
    #[error("authentication to {url} failed (a configuration error, not an outage): {source}")]
    Auth {
        /// The repository (without credentials).
        url: String,
        /// The fetch error.
        source: GitError,
    },
    /// The deploy configuration file could not be read.
    #[error("{0}")]
    DeployConfig(#[from] doco_config::DeployConfigError),
    /// The Docker engine could not be asked what runs.
    #[error("cannot read the Docker engine's state: {0}")]
    Engine(#[from] doco_docker::DockerError),
    /// Some deployments failed (each was logged with its reason).
    #[error("{failed} of {total} deployments failed: {names}")]
    Deployments {
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
        /// Their names.
        names: String,
    },
}

/// Why one deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// compose failed.
    #[error("{0}")]
    Compose(#[from] doco_docker::ComposeError),
    /// The engine API failed.
    #[error("{0}")]
    Engine(#[from] doco_docker::DockerError),
    /// The label override file could not be written.
    #[error("could not write the label override {path}: {source}")]
    Override {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A service did not come up after the deploy.
    #[error("service {service} is not running {seconds}s after the deploy")]
    NotRunning {
        /// The service.
        service: String,
        /// The deploy config's timeout.
        seconds: u64,
    },
    /// The deployment uses a feature this build does not have yet.
    #[error("{0}")]
    Unsupported(String),
}

/// What happened to one deployment in a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentOutcome {
    /// Nothing to do.
    UpToDate,
    /// Stopped containers were started.
    Started(usize),
    /// compose ran; these services got fresh labels.
    Deployed(BTreeSet<String>),
}

/// The daemon's shared context: configuration, clients, state and metrics.
pub struct Reconciler {
    config: Arc<AppConfig>,
    paths: DataPaths,
    git: GitClient,
    docker: doco_docker::Engine,
    compose: Compose,
    store: StateStore,
    state: tokio::sync::Mutex<State>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    offline: Mutex<BTreeSet<String>>,
    checkout_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    deploy_slots: tokio::sync::Semaphore,
}

/// The revision a poll works from.
struct Revision {
    commit: String,
    mode: Mode,
    /// An error to report after enforcing (authentication failures).
    deferred_error: Option<PollError>,
}

/// The facts of one poll that every deployment of it shares.
struct PollContext<'a> {
    poll: &'a PollConfig,
    repo_name: &'a str,
    url: &'a str,
    checkout: &'a Path,
    commit: &'a str,
    mode: Mode,
}

impl Reconciler {
    /// Wires the parts together and loads the state file.
    pub fn new(
        config: Arc<AppConfig>,
        docker: doco_docker::Engine,
        compose: Compose,
        metrics: Arc<Metrics>,
    ) -> Self {
        let paths = DataPaths::new(
            config.data_mount_path.clone(),
            config.data_host_path.clone(),
        );
        let git = GitClient::new(crate::git_options::git_options(&config, &paths));
        let store = StateStore::new(paths.internal_dir().join("state.json"));
        let (state, outcome) = store.load();
        match &outcome {
            crate::state::LoadOutcome::Fresh => {
                info!(path = %store.path().display(), "no state file yet; starting with an empty state")
            }
            crate::state::LoadOutcome::Loaded => info!(
                path = %store.path().display(),
                repositories = state.repositories.len(),
                "loaded the last known state"
            ),
            crate::state::LoadOutcome::MovedAside(aside, reason) => error!(
                path = %store.path().display(),
                moved_to = %aside.display(),
                %reason,
                "the state file was unreadable; kept a copy and started with an empty state"
            ),
        }
        for (key, repo) in &state.repositories {
            let name = key.split('#').next().unwrap_or(key);
            metrics
                .source_last_success
                .get_or_create(&metrics::repo(name))
                .set(repo.last_success_unix as i64);
        }
        let notifier = Notifier::new(
            config.apprise_api_url.clone(),
            config
                .apprise_notify_urls
                .as_ref()
                .map(|u| u.expose().to_string()),
            Level::parse(&config.apprise_notify_level).unwrap_or(Level::Success),
            config.apprise_notify_repeat_interval,
        );
        let slots = config.max_concurrent_deployments.max(1);
        Reconciler {
            config,
            paths,
            git,
            docker,
            compose,
            store,
            state: tokio::sync::Mutex::new(state),
            metrics,
            notifier,
            offline: Mutex::new(BTreeSet::new()),
            checkout_locks: Mutex::new(HashMap::new()),
            deploy_slots: tokio::sync::Semaphore::new(slots),
        }
    }

    /// The data paths, for start-up set-up.
    pub fn paths(&self) -> &DataPaths {
        &self.paths
    }

    /// The repositories currently enforced from their last known state.
    pub fn offline_repositories(&self) -> BTreeSet<String> {
        self.offline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs one poll of `poll` and records it in the metrics.
    pub async fn poll(&self, poll: &PollConfig) -> Result<(), PollError> {
        let rewritten;
        let poll =
            match doco_config::rewrite_source_url(&self.config.source_url_rewrites, &poll.url) {
                Some(url) => {
                    rewritten = PollConfig {
                        url,
                        ..poll.clone()
                    };
                    &rewritten
                }
                None => poll,
            };
        let repo_name = doco_git::repo_name(&poll.url);
        let span = info_span!("poll", repository = %repo_name, reference = %poll.reference);
        async {
            let started = Instant::now();
            info!(url = %doco_git::redact_url(&poll.url), "polling repository");
            let result = self.poll_inner(poll, &repo_name).await;
            let labels = metrics::repo(&repo_name);
            self.metrics.polls.get_or_create(&labels).inc();
            self.metrics
                .poll_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            match &result {
                Ok(()) => info!(elapsed_ms = started.elapsed().as_millis() as u64, "poll completed"),
                Err(e) => {
                    self.metrics.poll_errors.get_or_create(&labels).inc();
                    error!(error = %e, elapsed_ms = started.elapsed().as_millis() as u64, "poll failed");
                    // Failed deployments were notified one by one.
                    if !matches!(e, PollError::Deployments { .. }) {
                        self.notifier
                            .send(Level::Failure, &repo_name, "Poll Job failed", &e.to_string())
                            .await;
                    }
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn poll_inner(&self, poll: &PollConfig, repo_name: &str) -> Result<(), PollError> {
        let checkout = self.paths.checkout(repo_name);
        let lock = self.checkout_lock(&checkout);
        let _held = lock.lock().await;
        let url = doco_git::redact_url(&poll.url);

        let revision = self.sync(poll, repo_name, &checkout, &url).await?;
        let ctx = PollContext {
            poll,
            repo_name,
            url: &url,
            checkout: &checkout,
            commit: &revision.commit,
            mode: revision.mode,
        };
        let result = self.deploy_all(&ctx).await;
        self.save_state().await;
        match revision.deferred_error {
            Some(e) => Err(e),
            None => result,
        }
    }

    fn checkout_lock(&self, checkout: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .checkout_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(checkout.to_path_buf()).or_default().clone()
    }

    /// Brings the checkout to the remote's commit, or decides to enforce the last known one.
    async fn sync(
        &self,
        poll: &PollConfig,
        repo_name: &str,
        checkout: &Path,
        url: &str,
    ) -> Result<Revision, PollError> {
        match self.git.sync(&poll.url, &poll.reference, checkout).await {
            Ok(outcome) => {
                self.record_fetch(poll, repo_name, checkout, url, &outcome.commit)
                    .await;
                self.set_offline(repo_name, None).await;
                if outcome.fetched {
                    info!(commit = %outcome.commit, cloned = outcome.cloned, "fetched new commit");
                }
                Ok(Revision {
                    commit: outcome.commit,
                    mode: Mode::Online,
                    deferred_error: None,
                })
            }
            Err(e) if e.is_transport() && self.config.maintain_offline_state => {
                let (commit, reason) = self.last_known_commit(checkout, url, e)?;
                self.set_offline(repo_name, Some((&commit, &reason))).await;
                self.metrics
                    .offline_enforcements
                    .get_or_create(&metrics::repo(repo_name))
                    .inc();
                Ok(Revision {
                    commit,
                    mode: Mode::Offline,
                    deferred_error: None,
                })
            }
            Err(e) if e.is_auth() && self.config.maintain_offline_state => {
                let message = e.to_string();
                let (commit, _) = self.last_known_commit(checkout, url, e)?;
                warn!(%commit, "authentication failed; enforcing the last known state meanwhile");
                Ok(Revision {
                    commit,
                    mode: Mode::Offline,
                    deferred_error: Some(PollError::Auth {
                        url: url.to_string(),
                        source: GitError::Auth {
                            url: url.to_string(),
                            detail: message,
                        },
                    }),
                })
            }
            Err(e) if e.is_auth() => Err(PollError::Auth {
                url: url.to_string(),
                source: e,
            }),
            Err(e) => Err(PollError::Git(e)),
        }
    }

    /// The commit of the checkout on the data volume: the last one fetched successfully.
    fn last_known_commit(
        &self,
        checkout: &Path,
        url: &str,
        error: GitError,
    ) -> Result<(String, String), PollError> {
        match doco_git::head_commit(checkout) {
            Ok(Some(commit)) => Ok((commit, error.to_string())),
            _ => Err(PollError::NeverFetched {
                url: url.to_string(),
                source: error,
            }),
        }
    }

    async fn record_fetch(
        &self,
        poll: &PollConfig,
        repo_name: &str,
        checkout: &Path,
        url: &str,
        commit: &str,
    ) {
        let now = unix_now();
        let mut state = self.state.lock().await;
        let entry = state
            .repositories
            .entry(repository_key(repo_name, &poll.reference))
            .or_insert_with(RepositoryState::default);
        entry.url = url.to_string();
        entry.reference = poll.reference.clone();
        entry.checkout = checkout.to_path_buf();
        entry.commit = commit.to_string();
        entry.last_success_unix = now;
        self.metrics
            .source_last_success
            .get_or_create(&metrics::repo(repo_name))
            .set(now as i64);
    }

    /// Records entering or leaving offline mode: the gauge always; one log line and one notification
    /// on transitions only.
    async fn set_offline(&self, repo_name: &str, offline: Option<(&str, &str)>) {
        self.metrics
            .repository_offline
            .get_or_create(&metrics::repo(repo_name))
            .set(i64::from(offline.is_some()));
        let changed = {
            let mut set = self
                .offline
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match offline {
                Some(_) => set.insert(repo_name.to_string()),
                None => set.remove(repo_name),
            }
        };
        if !changed {
            return;
        }
        match offline {
            Some((commit, reason)) => {
                warn!(%commit, %reason, "repository unreachable: enforcing the last known state until it can be fetched again");
                let body = format!(
                    "{repo_name} cannot be fetched ({reason}). doco-cd keeps enforcing commit {commit} until it can fetch again."
                );
                self.notifier
                    .send(
                        Level::Warning,
                        repo_name,
                        "Repository unreachable: enforcing the last known state",
                        &body,
                    )
                    .await;
            }
            None => {
                info!("repository reachable again: back to normal mode");
                let body =
                    format!("{repo_name} can be fetched again; doco-cd is back to normal mode.");
                self.notifier
                    .send(
                        Level::Success,
                        repo_name,
                        "Repository reachable again",
                        &body,
                    )
                    .await;
            }
        }
    }

    async fn deploy_all(&self, ctx: &PollContext<'_>) -> Result<(), PollError> {
        let resolved = doco_config::resolve_deployments(
            &ctx.poll.deployments,
            ctx.checkout,
            &self.config.deploy_config_base_dir,
            &ctx.poll.target,
            &ctx.poll.reference,
        )?;
        let observed = self.docker.compose_containers().await?;
        let total = resolved.len();
        let mut failed = Vec::new();
        let jobs = resolved.into_iter().enumerate().map(|(index, item)| {
            let observed = &observed;
            async move {
                match item {
                    Ok(deployment) => {
                        let name = deployment.config.name.clone();
                        let result = self.deploy_one(ctx, &deployment, observed).await;
                        (name, result.map_err(|e| e.to_string()))
                    }
                    Err(e) => {
                        let name = e
                            .location()
                            .and_then(|l| l.name.clone())
                            .unwrap_or_else(|| format!("deployment #{}", index + 1));
                        (name, Err(e.to_string()))
                    }
                }
            }
        });
        for (name, result) in futures_util::future::join_all(jobs).await {
            let subject = format!("{}/{name}", ctx.repo_name);
            let commit = plan::short(ctx.commit);
            match result {
                Err(reason) => {
                    error!(deployment = %name, error = %reason, "deployment failed");
                    self.metrics
                        .deployment_errors
                        .get_or_create(&metrics::deployment(ctx.repo_name, &name))
                        .inc();
                    let body = format!("{name} from {} at {commit}: {reason}", ctx.repo_name);
                    self.notifier
                        .send(Level::Failure, &subject, "Deployment failed", &body)
                        .await;
                    failed.push(name);
                }
                Ok(DeploymentOutcome::Deployed(changed)) => {
                    let services: Vec<&str> = changed.iter().map(String::as_str).collect();
                    let body = format!(
                        "{name} from {} at {commit}; recreated: {}",
                        ctx.repo_name,
                        if services.is_empty() {
                            "none".to_string()
                        } else {
                            services.join(", ")
                        }
                    );
                    self.notifier
                        .send(Level::Success, &subject, "Deployment completed", &body)
                        .await;
                }
                Ok(DeploymentOutcome::Started(count)) => {
                    let body = format!(
                        "{name} from {}: started {count} stopped container(s)",
                        ctx.repo_name
                    );
                    self.notifier
                        .send(Level::Success, &subject, "Stopped services started", &body)
                        .await;
                }
                Ok(DeploymentOutcome::UpToDate) => {}
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PollError::Deployments {
                failed: failed.len(),
                total,
                names: failed.join(", "),
            })
        }
    }

    async fn deploy_one(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
    ) -> Result<DeploymentOutcome, DeployError> {
        let name = &deployment.config.name;
        let span = info_span!("deployment", deployment = %name);
        async {
            check_supported(ctx.poll, deployment)?;
            let _slot = self.deploy_slots.acquire().await;
            let started = Instant::now();
            let key = repository_key(ctx.repo_name, &ctx.poll.reference);
            let record = self
                .state
                .lock()
                .await
                .repositories
                .get(&key)
                .and_then(|r| r.deployments.get(name))
                .cloned();
            let empty = Vec::new();
            let containers = observed.get(name).unwrap_or(&empty);
            let config_hash = deployment.config.hash();
            let desired = Desired {
                commit: ctx.commit,
                config_hash: &config_hash,
                force_recreate: deployment.config.force_recreate,
            };
            let outcome = match plan::quick_plan(&desired, record.as_ref(), containers, ctx.mode) {
                QuickPlan::UpToDate => {
                    tracing::debug!("up to date");
                    DeploymentOutcome::UpToDate
                }
                QuickPlan::Start(ids) => {
                    info!(
                        containers = ids.len(),
                        "starting stopped containers of unchanged services"
                    );
                    self.start(&ids).await?
                }
                QuickPlan::Render(reason) => {
                    info!(%reason, "rendering the project to decide");
                    for warning in &deployment.config.warnings {
                        warn!(%warning, "deploy configuration");
                    }
                    self.render_and_apply(
                        ctx,
                        deployment,
                        record.as_ref(),
                        containers,
                        &config_hash,
                        &key,
                    )
                    .await?
                }
            };
            if outcome != DeploymentOutcome::UpToDate {
                let labels = metrics::deployment(ctx.repo_name, name);
                self.metrics.deployments.get_or_create(&labels).inc();
                self.metrics
                    .deployment_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
            }
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    async fn start(&self, ids: &[String]) -> Result<DeploymentOutcome, DeployError> {
        for id in ids {
            self.docker.start_container(id).await?;
        }
        Ok(DeploymentOutcome::Started(ids.len()))
    }

    async fn render_and_apply(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        record: Option<&DeploymentRecord>,
        containers: &[ContainerInfo],
        config_hash: &str,
        key: &str,
    ) -> Result<DeploymentOutcome, DeployError> {
        let project = self.compose_project(deployment);
        let rendered = self.compose.render(&project).await?;
        let fingerprints: BTreeMap<String, String> = rendered
            .services
            .iter()
            .map(|(name, service)| {
                let inputs: Vec<PathBuf> = service
                    .local_inputs
                    .iter()
                    .map(|p| self.paths.to_mount(p))
                    .collect();
                (
                    name.clone(),
                    service_fingerprint(&service.spec, &inputs, ctx.checkout),
                )
            })
            .collect();
        let planned: BTreeMap<String, plan::RenderedService> = rendered
            .services
            .iter()
            .map(|(name, service)| {
                (
                    name.clone(),
                    plan::RenderedService {
                        fingerprint: fingerprints[name].clone(),
                        must_run: service.must_run(),
                        replicas: service.replicas,
                    },
                )
            })
            .collect();
        let switches = Switches {
            remove_orphans: deployment.config.remove_orphans,
            force_recreate: deployment.config.force_recreate,
        };
        let new_record =
            |labels: &BTreeMap<String, BTreeMap<String, String>>,
             hashes: &BTreeMap<String, String>| DeploymentRecord {
                project: deployment.config.name.clone(),
                commit: ctx.commit.to_string(),
                config_hash: config_hash.to_string(),
                deployed_unix: unix_now(),
                services: planned
                    .iter()
                    .map(|(name, service)| {
                        (
                            name.clone(),
                            ServiceRecord {
                                fingerprint: service.fingerprint.clone(),
                                labels: labels.get(name).cloned().unwrap_or_default(),
                                must_run: service.must_run,
                                replicas: service.replicas,
                                compose_hash: hashes.get(name).cloned(),
                            },
                        )
                    })
                    .collect(),
            };
        let recorded_labels: BTreeMap<String, BTreeMap<String, String>> = record
            .map(|r| {
                r.services
                    .iter()
                    .map(|(n, s)| (n.clone(), s.labels.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let recorded_hashes: BTreeMap<String, String> = record
            .map(|r| {
                r.services
                    .iter()
                    .filter_map(|(n, s)| s.compose_hash.clone().map(|h| (n.clone(), h)))
                    .collect()
            })
            .unwrap_or_default();

        let adoptable = adoptable_labels(containers, ctx.commit);
        match plan::full_plan(&planned, record, &adoptable, containers, switches, ctx.mode) {
            FullPlan::UpToDate => {
                info!("stack unchanged by the new commit; nothing to do");
                self.store_record(key, new_record(&recorded_labels, &recorded_hashes))
                    .await;
                Ok(DeploymentOutcome::UpToDate)
            }
            FullPlan::Start(ids) => {
                info!(
                    containers = ids.len(),
                    "stack unchanged; starting stopped containers"
                );
                let outcome = self.start(&ids).await?;
                self.store_record(key, new_record(&recorded_labels, &recorded_hashes))
                    .await;
                Ok(outcome)
            }
            FullPlan::Deploy {
                reason,
                changed,
                mut kept_labels,
                remove_orphans,
                force_recreate,
            } => {
                info!(%reason, mode = ?ctx.mode, "deploying");
                let timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                let compose_hash = project_hash(&fingerprints);
                let working_dir = self.paths.to_host(&deployment.working_dir);
                let working_dir = working_dir.to_string_lossy();
                let auto_discovery =
                    serde_json::to_string(&deployment.config.auto_discovery).unwrap_or_default();
                let source_name = doco_git::full_name(&ctx.poll.url);
                let fresh = fresh_labels(&LabelContext {
                    deployment: &deployment.config.name,
                    commit: ctx.commit,
                    reference: deployment
                        .config
                        .reference
                        .as_deref()
                        .unwrap_or(&ctx.poll.reference),
                    working_dir: &working_dir,
                    target: &ctx.poll.target,
                    config_hash,
                    compose_hash: &compose_hash,
                    source_name: &source_name,
                    source_url: ctx.url,
                    auto_discovery_config: &auto_discovery,
                    auto_discovered: deployment.auto_discovered,
                    timestamp: &timestamp,
                });
                for service in &changed {
                    kept_labels.insert(service.clone(), fresh.clone());
                }
                let labels = kept_labels;
                let override_path = self
                    .paths
                    .internal_dir()
                    .join("overrides")
                    .join(format!("{}.labels.yml", deployment.config.name));
                write_override(&override_path, &labels)?;
                let options = UpOptions {
                    remove_orphans,
                    force_recreate,
                    pull: if ctx.mode == Mode::Online && deployment.config.force_image_pull {
                        PullPolicy::Always
                    } else {
                        PullPolicy::Missing
                    },
                    timeout: Duration::from_secs(deployment.config.timeout.max(1) + 120),
                };
                self.compose
                    .up(&project, &self.paths.to_host(&override_path), &options)
                    .await?;
                let hashes = self
                    .wait_running(&deployment.config.name, &planned, deployment.config.timeout)
                    .await?;
                info!(changed = ?changed, "deployed");
                self.store_record(key, new_record(&labels, &hashes)).await;
                Ok(DeploymentOutcome::Deployed(changed))
            }
        }
    }

    /// Waits until every service that must run has a running container; returns compose's config
    /// hash per service.
    async fn wait_running(
        &self,
        project: &str,
        services: &BTreeMap<String, plan::RenderedService>,
        timeout_secs: u64,
    ) -> Result<BTreeMap<String, String>, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(timeout_secs);
        loop {
            let all = self.docker.compose_containers().await?;
            let containers = all.get(project).map(Vec::as_slice).unwrap_or(&[]);
            let not_running = services.iter().find(|(name, service)| {
                service.must_run
                    && !containers.iter().any(|c| {
                        &c.service == *name
                            && !c.oneoff
                            && c.state == doco_docker::ContainerState::Running
                    })
            });
            match not_running {
                None => {
                    return Ok(containers
                        .iter()
                        .filter(|c| !c.oneoff)
                        .filter_map(|c| c.config_hash.clone().map(|h| (c.service.clone(), h)))
                        .collect());
                }
                Some((name, _)) if Instant::now() >= deadline => {
                    return Err(DeployError::NotRunning {
                        service: name.clone(),
                        seconds: timeout_secs,
                    });
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    fn compose_project(&self, deployment: &ResolvedDeployment) -> ComposeProject {
        let host = |paths: &[PathBuf]| paths.iter().map(|p| self.paths.to_host(p)).collect();
        ComposeProject {
            name: deployment.config.name.clone(),
            project_dir: self.paths.to_host(&deployment.working_dir),
            files: host(&deployment.compose_files),
            env_files: host(&deployment.env_files),
            profiles: deployment.config.profiles.clone(),
            environment: deployment.config.environment.clone(),
        }
    }

    async fn store_record(&self, key: &str, record: DeploymentRecord) {
        let mut state = self.state.lock().await;
        if let Some(repo) = state.repositories.get_mut(key) {
            repo.deployments.insert(record.project.clone(), record);
        }
    }

    async fn save_state(&self) {
        let state = self.state.lock().await;
        if let Err(e) = self.store.save(&state) {
            error!(error = %e, "could not save the state; the previous state file is unchanged");
        }
    }
}

/// Refuses deploy-config features that this build cannot honour yet, rather than ignoring them.
fn check_supported(poll: &PollConfig, deployment: &ResolvedDeployment) -> Result<(), DeployError> {
    let config = &deployment.config;
    if let Some(reference) = &config.reference
        && short_ref(reference) != short_ref(&poll.reference)
    {
        return Err(DeployError::Unsupported(format!(
            "deployment {} sets reference {reference}, which differs from the poll's reference {}; deploying a second reference from one poll is not supported yet (add a separate POLL_CONFIG entry for it)",
            config.name, poll.reference
        )));
    }
    if config
        .repository_url
        .as_deref()
        .is_some_and(|u| !u.is_empty())
    {
        return Err(DeployError::Unsupported(format!(
            "deployment {} sets repository_url, which is not supported yet",
            config.name
        )));
    }
    if config.destroy.enabled {
        return Err(DeployError::Unsupported(format!(
            "deployment {} sets destroy, which is not supported yet; nothing was removed",
            config.name
        )));
    }
    Ok(())
}

fn short_ref(reference: &str) -> &str {
    reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("refs/tags/"))
        .unwrap_or(reference)
}

fn write_override(
    path: &Path,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), DeployError> {
    let wrap = |source| DeployError::Override {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(wrap)?;
    }
    doco_docker::write_label_override(path, labels).map_err(wrap)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_refs_compare_branches_and_tags_by_name() {
        assert_eq!(short_ref("refs/heads/main"), "main");
        assert_eq!(short_ref("main"), "main");
        assert_eq!(short_ref("refs/tags/v1"), "v1");
        assert_eq!(short_ref("refs/pull/1/head"), "refs/pull/1/head");
    }
}
