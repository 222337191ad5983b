//! One reconcile of one repository, end to end, for every trigger the scheduler merges into a
//! [`Run`]: sync the repository's mirror (when the run reads its source), **heal** every deployment's last known
//! good state ([`heal`]), then **change**: resolve the deployments, look at the engine once, decide
//! per deployment with `plan` and apply ([`deploy`]). Each step describes what it did in a
//! [`report::Report`], which one step records ([`report`]).
//!
//! This is where the offline semantics live. When the fetch fails with a transport error and
//! `DOCO_CD_MAINTAIN_OFFLINE_STATE` is on, the run goes on in [`Mode::Offline`]: it heals from the
//! last successful deploys and applies nothing new. A fetch that failed is never read as an empty
//! desired state, and a commit that did not deploy is never the state enforced.

mod deploy;
mod heal;
mod images;
mod pins;
mod report;
mod source;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use doco_config::{AppConfig, DeployConfigError, PollConfig, ResolvedDeployment};
use doco_docker::{ContainerEvent, ContainerInfo};
use doco_git::{GitClient, GitError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{Instrument, error, info, info_span, warn};

use crate::adapters::{ContextOpener, Runtime, Source};
use crate::backoff::Backoffs;
use crate::metrics::{self, Metrics};
use crate::notify::{Level, Notifier};
use crate::paths::{DataPaths, SourceDir};
use crate::plan::{self, Mode};
use crate::registry::Registry;
use crate::scheduler::{Action, Reason, Run, RunResult};
use crate::state::{Origin, State, StateStore, repository_key};
use crate::store::{self, Leases, StoreError};
use report::{Entry, Fetch, RecordChange, Report, Step};

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
    /// The repository's artifact store could not be prepared.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The Docker engine could not be asked what runs.
    #[error("cannot read the Docker engine's state: {0}")]
    Engine(#[from] doco_docker::DockerError),
    /// doco-cd is shutting down; the run did not happen.
    #[error("doco-cd is shutting down")]
    ShuttingDown,
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

impl PollError {
    /// Whether the trigger named something that does not exist (a target without its deploy-config
    /// file), so that a webhook answers 404 rather than 500.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PollError::DeployConfig(e) if e.is_not_found())
    }
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
    /// A service's health check did not pass within the deploy config's `timeout`.
    #[error(
        "service {service} is not healthy {seconds}s after the deploy; its last health check said: {output}"
    )]
    NotHealthy {
        /// The service.
        service: String,
        /// The deploy config's timeout.
        seconds: u64,
        /// The last health check's output.
        output: String,
    },
    /// `destroy` is set, but the stack's containers were deployed from another repository.
    #[error("not destroying {project}: its containers belong to {owner}, not to {ours}")]
    NotOurs {
        /// The compose project.
        project: String,
        /// The repository named by the containers' `cd.doco.source.name` label.
        owner: String,
        /// This repository.
        ours: String,
    },
    /// The deployment uses a feature this build does not have yet.
    #[error("{0}")]
    Unsupported(String),
    /// A scheduled job's labels are invalid, or its running jobs did not finish in time.
    #[error("{0}")]
    Job(String),
    /// A SOPS-encrypted file of the deployment could not be decrypted.
    #[error("{0}")]
    Sops(#[from] crate::sops::SopsError),
    /// The deploy configuration at the last good commit could not be read.
    #[error("{0}")]
    DeployConfig(#[from] DeployConfigError),
    /// The last good commit's files could not be exported.
    #[error("{0}")]
    Git(#[from] GitError),
    /// The repository's artifact store could not be prepared.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The engine of the deployment's `context` could not be opened.
    #[error("{0}")]
    Context(String),
    /// A live copy (`recreate.ignore`) could not be updated.
    #[error("{0}")]
    Live(#[from] crate::live::LiveError),
    /// The other repository of a `repository_url` deployment could not be fetched or read.
    #[error("repository_url {url}: {detail}")]
    Repository {
        /// The other repository (without credentials).
        url: String,
        /// Why.
        detail: String,
    },
    /// The deployment's own `reference` could not be fetched.
    #[error("reference {reference}: {detail}")]
    Reference {
        /// The deployment's reference.
        reference: String,
        /// Why.
        detail: String,
    },
}

/// What started a run (upstream's job trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trigger {
    /// The poll scheduler (or a refs watcher).
    #[default]
    Poll,
    /// `POST /v1/webhook`.
    Webhook,
}

impl Trigger {
    /// upstream's name of the trigger.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
        }
    }
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
    /// The deployment's `destroy` removed the stack.
    Destroyed,
    /// Its last known good state was enforced: stopped containers started, these services recreated.
    Healed {
        /// How many containers were started.
        started: usize,
        /// Which services were recreated as last deployed.
        recreated: BTreeSet<String>,
    },
    /// Its change failed before and waits for its backoff to end.
    Waiting(std::time::Duration),
    /// Deployed service by service: these came up at the new commit, these failed (with why). A
    /// failure of the deployment, retried with backoff.
    PartlyDeployed {
        /// The services deployed at the new commit.
        deployed: BTreeSet<String>,
        /// The services that failed, and why.
        failed: BTreeMap<String, String>,
    },
}

impl DeploymentOutcome {
    /// Whether the deployment failed (in part).
    pub fn failed(&self) -> bool {
        matches!(self, DeploymentOutcome::PartlyDeployed { .. })
    }
}

/// The daemon's shared context: configuration, clients, state and metrics.
pub struct Reconciler {
    config: Arc<AppConfig>,
    paths: DataPaths,
    source: Arc<dyn Source>,
    runtime: Arc<dyn Runtime>,
    store: StateStore,
    state: tokio::sync::Mutex<State>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    offline: Mutex<BTreeSet<String>>,
    /// One lock per source directory: a poll, a heal and a deploy of one repository's store never
    /// overlap.
    source_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// The exports deploys are using now, which the artifact GC leaves alone.
    leases: Leases,
    deploy_slots: tokio::sync::Semaphore,
    /// What the event loop reads: which poll deploys each project, and doco-cd's own actions.
    registry: Registry,
    /// Deployments whose change failed, and when they may try again.
    backoffs: Mutex<Backoffs>,
    /// Opens the engine of a deploy config's `context` (other than the default).
    contexts: Option<ContextOpener>,
    /// The engines of the contexts opened so far.
    context_runtimes: Mutex<HashMap<String, Arc<dyn Runtime>>>,
    /// Per mirror, the `git_depth` its deployments ask for.
    mirror_depths: Mutex<HashMap<PathBuf, u32>>,
    /// Moves the window of [`plan::digest_lookups`] on at each check, so a deployment with more
    /// images than the cap has all of them looked at over a few polls.
    digest_rounds: std::sync::atomic::AtomicUsize,
    /// Unhealthy containers a poll found, for the event loop (which owns the restart budget).
    unhealthy_tx: UnboundedSender<ContainerEvent>,
    unhealthy_rx: Mutex<Option<UnboundedReceiver<ContainerEvent>>>,
    /// Per-stack locks shared with the job scheduler.
    stack_locks: crate::jobs::StackLocks,
    /// The view of the daemon's engine that a first look of a run reads (real engine only).
    view: Option<doco_docker::ContainerView>,
}

/// The revision a poll works from.
struct Revision {
    commit: String,
    mode: Mode,
    /// An error to report after enforcing (authentication failures).
    deferred_error: Option<PollError>,
    /// What the fetch did, for the report.
    fetch: Option<Fetch>,
}

/// The facts of one poll that every deployment of it shares.
struct PollContext<'a> {
    poll: &'a PollConfig,
    /// What started this run.
    kind: Trigger,
    /// The state file's key for this repository and reference.
    key: String,
    repo_name: &'a str,
    url: &'a str,
    /// The repository's store.
    store: &'a SourceDir,
    /// The export of `commit` the deployments are read and deployed from.
    tree: &'a Path,
    commit: &'a str,
    mode: Mode,
    /// Set for deployments from another repository (`repository_url`).
    origin: Option<&'a Origin>,
}

impl Reconciler {
    /// Wires the real parts together (the `git` CLI, the Engine API and `docker compose`) and loads
    /// the state file.
    pub fn new(
        config: Arc<AppConfig>,
        engine: doco_docker::Engine,
        compose: doco_docker::Compose,
        metrics: Arc<Metrics>,
    ) -> Self {
        let paths = DataPaths::new(
            config.data_mount_path.clone(),
            config.data_host_path.clone(),
        );
        let git = GitClient::new(crate::git_options::git_options(&config, &paths));
        let registry = doco_docker::Registry::new(&compose.docker_config_dir());
        let view = doco_docker::ContainerView::new(engine.clone());
        let runtime = crate::adapters::Docker {
            engine,
            compose,
            registry,
            view: view.clone(),
        };
        Reconciler {
            view: Some(view),
            ..Reconciler::with(config, Arc::new(git), Arc::new(runtime), metrics)
        }
    }

    /// Wires `source` and `runtime` (real, or fakes in tests) together and loads the state file.
    pub fn with(
        config: Arc<AppConfig>,
        source: Arc<dyn Source>,
        runtime: Arc<dyn Runtime>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let paths = DataPaths::new(
            config.data_mount_path.clone(),
            config.data_host_path.clone(),
        );
        let store = StateStore::new(&paths.internal_dir());
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
        let (unhealthy_tx, unhealthy_rx) = tokio::sync::mpsc::unbounded_channel();
        Reconciler {
            config,
            paths,
            source,
            runtime,
            store,
            state: tokio::sync::Mutex::new(state),
            metrics,
            notifier,
            offline: Mutex::new(BTreeSet::new()),
            source_locks: Mutex::new(HashMap::new()),
            leases: Leases::default(),
            deploy_slots: tokio::sync::Semaphore::new(slots),
            registry: Registry::default(),
            backoffs: Mutex::new(Backoffs::default()),
            contexts: None,
            context_runtimes: Mutex::new(HashMap::new()),
            digest_rounds: std::sync::atomic::AtomicUsize::new(0),
            mirror_depths: Mutex::new(HashMap::new()),
            unhealthy_tx,
            unhealthy_rx: Mutex::new(Some(unhealthy_rx)),
            stack_locks: crate::jobs::StackLocks::default(),
            view: None,
        }
    }

    /// Lets deployments name a Docker `context`: `open` gives its engine (once per context).
    pub fn with_contexts(mut self, open: ContextOpener) -> Self {
        self.contexts = Some(open);
        self
    }

    /// The engine of `context`: the daemon's own for the default context.
    fn runtime_for(&self, context: &str) -> Result<Arc<dyn Runtime>, DeployError> {
        if plan::is_default_context(context) {
            return Ok(self.runtime.clone());
        }
        if let Some(runtime) = lock(&self.context_runtimes).get(context) {
            return Ok(runtime.clone());
        }
        let open = self.contexts.as_ref().ok_or_else(|| {
            DeployError::Unsupported(format!(
                "context `{context}`: this doco-cd cannot open other Docker contexts"
            ))
        })?;
        let runtime = open(context).map_err(DeployError::Context)?;
        lock(&self.context_runtimes).insert(context.to_string(), runtime.clone());
        Ok(runtime)
    }

    /// The view of the daemon's engine, for its task to keep current ([`doco_docker::ContainerView::run`]).
    pub fn container_view(&self) -> Option<doco_docker::ContainerView> {
        self.view.clone()
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

    /// The deployments whose change failed, with their backoff.
    pub fn failing_deployments(
        &self,
    ) -> Vec<(crate::backoff::DeploymentId, crate::backoff::Failing)> {
        lock(&self.backoffs)
            .failing()
            .iter()
            .map(|(id, f)| (id.clone(), f.clone()))
            .collect()
    }

    /// A copy of the last known state (what the state file holds), for the API's view of the
    /// repositories.
    pub async fn state_snapshot(&self) -> State {
        self.state.lock().await.clone()
    }

    /// The per-stack locks deploys hold, for the job scheduler to share.
    pub fn stack_locks(&self) -> crate::jobs::StackLocks {
        self.stack_locks.clone()
    }

    /// The unhealthy containers polls find (once: the event loop takes it). A poll reports them so
    /// that containers already unhealthy when doco-cd started, or whose event was missed, are handled
    /// like an `unhealthy` event, under the same restart budget.
    pub fn take_unhealthy_reports(&self) -> Option<UnboundedReceiver<ContainerEvent>> {
        lock(&self.unhealthy_rx).take()
    }

    /// The event loop's read handle: which poll deploys each project, and doco-cd's own actions.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Reconciles one [`Run`] of the scheduler: its result for whoever waits, and when to look
    /// again (the earliest end of a failing deployment's backoff).
    pub async fn reconcile(&self, run: Run) -> (RunResult, Action) {
        let run = Run {
            poll: self.rewritten(&run.poll),
            ..run
        };
        let result = self.run(&run).await.map_err(Arc::new);
        let prefix = format!("{}#", doco_git::repo_name(&run.poll.url));
        let requeue_after = lock(&self.backoffs)
            .next_retry(tokio::time::Instant::now(), |(key, _)| {
                key.starts_with(&prefix)
            });
        (result, Action { requeue_after })
    }

    /// `poll` with its URL rewritten by `SOURCE_URL_REWRITES`.
    fn rewritten(&self, poll: &PollConfig) -> PollConfig {
        match doco_config::rewrite_source_url(&self.config.source_url_rewrites, &poll.url) {
            Some(url) => PollConfig {
                url,
                ..poll.clone()
            },
            None => poll.clone(),
        }
    }

    /// One poll of `poll` at start-up or on its timer (for tools and benchmarks that drive the
    /// reconciler without a scheduler).
    pub async fn poll(&self, poll: &PollConfig) -> Result<(), PollError> {
        let run = Run {
            poll: self.rewritten(poll),
            reasons: vec![Reason::Timer],
        };
        self.run(&run).await
    }

    /// Runs `run` (its URL already rewritten): the same path for every trigger. It heals, then
    /// (when the run reads its source and Git answers) syncs, resolves, plans and applies; the
    /// report of all that is then recorded in one place ([`Reconciler::record`]).
    async fn run(&self, run: &Run) -> Result<(), PollError> {
        let poll = &run.poll;
        let repo_name = doco_git::repo_name(&poll.url);
        let trigger = run.trigger();
        let span = if run.reads_source() {
            info_span!("poll", repository = %repo_name, reference = %poll.reference, trigger = trigger.as_str())
        } else {
            info_span!("heal", repository = %repo_name, reference = %poll.reference)
        };
        async {
            let started = Instant::now();
            let mut report = Report {
                repository: repo_name.clone(),
                trigger,
                reads_source: run.reads_source(),
                fetches: Vec::new(),
                entries: Vec::new(),
                error: None,
                elapsed: Duration::ZERO,
            };
            let forced = forced_services(run);
            if run.reads_source() {
                info!(url = %doco_git::redact_url(&poll.url), "polling repository");
                self.poll_inner(poll, &forced, look(run), &mut report).await;
            } else {
                self.heal_only(poll, &forced, &mut report).await;
            }
            report.elapsed = started.elapsed();
            self.record(&report).await;
            report.result()
        }
        .instrument(span)
        .await
    }

    /// A run that only enforces the last known good state (engine events, a cut event stream, a
    /// repository no poll follows after a restart): no Git, no new commit.
    async fn heal_only(&self, poll: &PollConfig, forced: &heal::Forced, report: &mut Report) {
        match self
            .heal_all(poll, &report.repository, None, forced, heal::Look::Fresh)
            .await
        {
            Ok(healed) => report.entries.extend(healed.entries),
            Err(e) => report.error = Some(PollError::Engine(e)),
        }
    }

    /// A run that reads its source: sync, heal, then (online) apply what changed.
    async fn poll_inner(
        &self,
        poll: &PollConfig,
        forced: &heal::Forced,
        look: heal::Look,
        report: &mut Report,
    ) {
        let repo_name = report.repository.clone();
        let store = self.paths.source_dir(&repo_name);
        let lock = self.source_lock(&store);
        let _held = lock.lock().await;
        let url = doco_git::redact_url(&poll.url);
        if let Err(e) =
            store::migrate(self.source.as_ref(), &poll.url, &poll.reference, &store).await
        {
            report.error = Some(e.into());
            return;
        }
        // The depth its deployments asked for when the mirror was last read (`git_depth`).
        let depth = self::lock(&self.mirror_depths).get(store.root()).copied();
        let revision = match self.sync(poll, &repo_name, &store, &url, depth).await {
            Ok(revision) => revision,
            Err(e) => {
                report.error = Some(e);
                return;
            }
        };
        report.fetches.extend(revision.fetch);
        let untouched = match self
            .heal_all(poll, &repo_name, Some(store.root()), forced, look)
            .await
        {
            Ok(healed) => {
                report.entries.extend(healed.entries);
                healed.untouched
            }
            Err(e) => {
                report.error = Some(PollError::Engine(e));
                return;
            }
        };
        if plan::applies_changes(revision.mode) {
            let _lease = self.leases.take(&revision.commit);
            let tree =
                match store::artifact(self.source.as_ref(), &poll.url, &store, &revision.commit)
                    .await
                {
                    Ok(tree) => tree,
                    Err(e) => {
                        report.error = Some(PollError::Git(e));
                        return;
                    }
                };
            let ctx = PollContext {
                poll,
                kind: report.trigger,
                key: repository_key(&repo_name, &poll.reference),
                repo_name: &repo_name,
                url: &url,
                store: &store,
                tree: &tree,
                commit: &revision.commit,
                mode: revision.mode,
                origin: None,
            };
            if let Err(e) = self.deploy_all(&ctx, untouched, report).await {
                report.error = Some(e);
            }
        }
        if let Some(e) = revision.deferred_error {
            report.error.get_or_insert(e);
        }
    }

    fn source_lock(&self, store: &SourceDir) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.source_locks)
            .entry(store.root().to_path_buf())
            .or_default()
            .clone()
    }

    /// One pass of the artifact garbage collector over every source directory on the data volume.
    /// Each source is swept under its lock, with what the engines and the state file use read
    /// afresh, so an export a deploy has just made or is using is never removed.
    pub async fn collect_garbage(
        &self,
        settings: store::GcSettings,
    ) -> Result<store::SweepReport, doco_docker::DockerError> {
        let mut report = store::SweepReport::default();
        for root in store::source_dirs(self.paths.mount()) {
            let source = SourceDir::at(root);
            let lock = self.source_lock(&source);
            let _held = lock.lock().await;
            let in_use = self.in_use().await?;
            store::sweep_source(&source, &in_use, settings, SystemTime::now(), &mut report);
        }
        let in_use = self.in_use().await?;
        store::sweep_internal_leftovers(&self.paths, &in_use, &mut report);
        Ok(report)
    }

    /// What every engine doco-cd deploys to, the state file and the deploys in progress use.
    async fn in_use(&self) -> Result<store::InUse, doco_docker::DockerError> {
        let mut engines = vec![self.runtime.containers().await?];
        let others: Vec<Arc<dyn Runtime>> =
            lock(&self.context_runtimes).values().cloned().collect();
        for engine in others {
            engines.push(engine.containers().await?);
        }
        let engines: Vec<&crate::adapters::Containers> = engines.iter().collect();
        let state = self.state.lock().await;
        Ok(store::InUse::collect(
            &engines,
            &state,
            &self.leases,
            &self.paths,
        ))
    }

    /// Resolves and applies every deployment of the poll into `report`. Deployments that follow
    /// another reference (their `reference` key) are applied from that reference's commit.
    async fn deploy_all(
        &self,
        ctx: &PollContext<'_>,
        observed: Option<heal::Observed>,
        report: &mut Report,
    ) -> Result<(), PollError> {
        let resolved = doco_config::resolve_deployments(
            &ctx.poll.deployments,
            ctx.tree,
            &self.config.deploy_config_base_dir,
            &ctx.poll.target,
            &ctx.poll.reference,
        )?;
        // The heal changed something: look at the engine itself, not at the view.
        let observed = match observed {
            Some(observed) => observed,
            None => self.runtime.containers().await?,
        };
        // A deployment's `git_depth` shapes the mirror it is read from, from the next fetch on (the
        // mirror must be read before its deploy configuration can ask).
        let depth = resolved
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .filter(|d| d.external_repository.is_none())
            .map(|d| d.config.git_depth)
            .find(|depth| *depth > 0);
        let root = ctx.store.root().to_path_buf();
        match depth {
            Some(depth) => lock(&self.mirror_depths).insert(root, depth),
            None => lock(&self.mirror_depths).remove(&root),
        };
        let mut elsewhere: BTreeMap<String, Vec<ResolvedDeployment>> = BTreeMap::new();
        let mut external: BTreeMap<(String, String), Vec<ResolvedDeployment>> = BTreeMap::new();
        let mut here = Vec::new();
        for item in resolved {
            match item {
                Ok(d) if d.external_repository.is_some() => {
                    let url = d.external_repository.clone().unwrap_or_default();
                    let reference = d.config.reference.clone().unwrap_or_default();
                    external.entry((url, reference)).or_default().push(d);
                }
                Ok(d) if d.other_reference.is_some() => {
                    let reference = d.other_reference.clone().unwrap_or_default();
                    elsewhere.entry(reference).or_default().push(d);
                }
                other => here.push(other),
            }
        }
        report.entries.extend(
            self.remove_obsolete(ctx, &here, &elsewhere, &observed)
                .await,
        );
        let sole_destroy = match (here.as_slice(), elsewhere.is_empty()) {
            ([Ok(only)], true) => plan::destroy_removes_dir(&only.config.destroy),
            _ => false,
        };
        let entries = self.deploy_resolved(ctx, here, &observed).await;
        if sole_destroy
            && entries.iter().any(|e| {
                e.outcome
                    .as_ref()
                    .is_ok_and(|o| *o == DeploymentOutcome::Destroyed)
            })
        {
            self.remove_source_dir(ctx, &entries).await;
        }
        report.entries.extend(entries);
        for (reference, deployments) in elsewhere {
            let (entries, fetch) = self
                .deploy_other_reference(ctx, &reference, deployments, &observed)
                .await;
            report.fetches.extend(fetch);
            report.entries.extend(entries);
        }
        for ((url, reference), deployments) in external {
            let entries = self
                .deploy_external(ctx, &url, &reference, deployments, &observed)
                .await;
            report.entries.extend(entries);
        }
        Ok(())
    }

    /// `destroy.remove_dir`: once the only deployment of a repository destroyed its stack, the
    /// repository's source directory (mirror and exports) is removed from the data volume, unless
    /// another deployment of it is still recorded (the next poll clones it again to read the deploy
    /// configuration).
    async fn remove_source_dir(&self, ctx: &PollContext<'_>, destroyed: &[Entry]) {
        let prefix = format!("{}#", ctx.repo_name);
        let others = self
            .state
            .lock()
            .await
            .repositories
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .flat_map(|(_, repo)| repo.deployments.keys())
            .any(|name| !destroyed.iter().any(|e| &e.name == name));
        if others {
            return;
        }
        let dir = ctx.store.root();
        match store::remove_tree(dir) {
            Ok(()) => {
                info!(dir = %dir.display(), "destroy.remove_dir: removed the repository's files")
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "destroy.remove_dir: could not remove the repository's files")
            }
        }
    }

    /// `auto_discovery.delete`: removes the auto-discovered stacks of this repository whose directory
    /// is gone, when every deployment could be named (a broken file hides nothing from this check);
    /// [`plan::obsolete_auto_discovered`] decides.
    async fn remove_obsolete(
        &self,
        ctx: &PollContext<'_>,
        here: &[Result<ResolvedDeployment, DeployConfigError>],
        elsewhere: &BTreeMap<String, Vec<ResolvedDeployment>>,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
    ) -> Vec<Entry> {
        let mut present = BTreeSet::new();
        for item in here {
            match item {
                Ok(d) => present.insert(d.config.name.clone()),
                Err(e) => match e.location().and_then(|l| l.name.clone()) {
                    Some(name) => present.insert(name),
                    None => return Vec::new(),
                },
            };
        }
        present.extend(elsewhere.values().flatten().map(|d| d.config.name.clone()));
        let obsolete = plan::obsolete_auto_discovered(
            ctx.mode,
            observed,
            &present,
            ctx.repo_name,
            &ctx.poll.target,
            &ctx.poll.reference,
        );
        let mut entries = Vec::new();
        for stack in obsolete {
            info!(project = %stack.project, "its auto-discovered directory is gone and auto_discovery.delete is set: removing the stack");
            let at = plan::short(ctx.commit);
            let mut entry = Entry::new(&ctx.key, &stack.project, at, Step::Remove);
            entry.record = RecordChange::Forget;
            entry.outcome = self
                .remove_stack(
                    &stack.project,
                    stack.remove_volumes,
                    stack.remove_images,
                    self.runtime.as_ref(),
                )
                .await;
            entries.push(entry);
        }
        entries
    }

    /// Applies resolved deployments concurrently (bounded by `MAX_CONCURRENT_DEPLOYMENTS`).
    async fn deploy_resolved(
        &self,
        ctx: &PollContext<'_>,
        resolved: Vec<Result<ResolvedDeployment, DeployConfigError>>,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
    ) -> Vec<Entry> {
        let jobs = resolved
            .into_iter()
            .enumerate()
            .map(|(index, item)| async move {
                match item {
                    Ok(deployment) => self.deploy_one(ctx, &deployment, observed).await,
                    Err(e) => {
                        let name = e
                            .location()
                            .and_then(|l| l.name.clone())
                            .unwrap_or_else(|| format!("deployment #{}", index + 1));
                        Entry::failed(&ctx.key, &name, plan::short(ctx.commit), e.into())
                    }
                }
            });
        futures_util::future::join_all(jobs).await
    }

    /// Resolves `reference` in the repository's mirror (which the poll holds) and applies the
    /// deployments that follow it from that commit's export, with the same offline rules as the
    /// poll's own reference (their heal ran with the poll's).
    async fn deploy_other_reference(
        &self,
        ctx: &PollContext<'_>,
        reference: &str,
        deployments: Vec<ResolvedDeployment>,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
    ) -> (Vec<Entry>, Option<Fetch>) {
        let poll = PollConfig {
            reference: reference.to_string(),
            ..ctx.poll.clone()
        };
        let key = repository_key(ctx.repo_name, reference);
        let depth = lock(&self.mirror_depths).get(ctx.store.root()).copied();
        let failed = |deployments: Vec<ResolvedDeployment>, detail: String| {
            deployments
                .into_iter()
                .map(|d| {
                    let error = DeployError::Reference {
                        reference: reference.to_string(),
                        detail: detail.clone(),
                    };
                    Entry::failed(&key, &d.config.name, reference, error)
                })
                .collect()
        };
        let revision = match self
            .sync(&poll, ctx.repo_name, ctx.store, ctx.url, depth)
            .await
        {
            Ok(revision) => revision,
            Err(e) => return (failed(deployments, e.to_string()), None),
        };
        if let Some(e) = &revision.deferred_error {
            error!(%reference, error = %e, "enforcing the last known good state of this reference");
        }
        if !plan::applies_changes(revision.mode) {
            return (Vec::new(), revision.fetch);
        }
        let _lease = self.leases.take(&revision.commit);
        let tree = match store::artifact(
            self.source.as_ref(),
            &ctx.poll.url,
            ctx.store,
            &revision.commit,
        )
        .await
        {
            Ok(tree) => tree,
            Err(e) => return (failed(deployments, e.to_string()), revision.fetch),
        };
        let sub = PollContext {
            poll: &poll,
            kind: ctx.kind,
            key,
            repo_name: ctx.repo_name,
            url: ctx.url,
            store: ctx.store,
            tree: &tree,
            commit: &revision.commit,
            mode: revision.mode,
            origin: None,
        };
        let resolved = deployments
            .into_iter()
            .map(|d| doco_config::resolve_deployment(d.config, &tree, d.source_file))
            .collect();
        let entries = self.deploy_resolved(&sub, resolved, observed).await;
        (entries, revision.fetch)
    }

    /// Fetches the other repository of deployments with `repository_url` into its own store and
    /// applies them from the export of its `reference`, their records kept under the poll's key. That
    /// repository unreachable is that repository's outage alone: with the flag on its deployments keep
    /// their last good state (healed with the poll's), without it they fail; the poll's own stacks are
    /// never held up.
    async fn deploy_external(
        &self,
        ctx: &PollContext<'_>,
        url: &str,
        reference: &str,
        deployments: Vec<ResolvedDeployment>,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
    ) -> Vec<Entry> {
        let url = doco_config::rewrite_source_url(&self.config.source_url_rewrites, url)
            .unwrap_or_else(|| url.to_string());
        let shown = doco_git::redact_url(&url);
        let repo_name = doco_git::repo_name(&url);
        let store = self.paths.source_dir(&repo_name);
        let failed = |deployments: &[ResolvedDeployment], detail: String| -> Vec<Entry> {
            deployments
                .iter()
                .map(|d| {
                    let error = DeployError::Repository {
                        url: shown.clone(),
                        detail: detail.clone(),
                    };
                    Entry::failed(&ctx.key, &d.config.name, reference, error)
                })
                .collect()
        };
        let lock = self.source_lock(&store);
        let _held = if store.root() == ctx.store.root() {
            None
        } else {
            Some(lock.lock().await)
        };
        if let Err(e) = store::migrate(self.source.as_ref(), &url, reference, &store).await {
            return failed(&deployments, e.to_string());
        }
        let poll = PollConfig {
            url: url.clone(),
            reference: reference.to_string(),
            ..ctx.poll.clone()
        };
        let depth = deployments
            .iter()
            .map(|d| d.config.git_depth)
            .find(|depth| *depth > 0);
        let revision = match self.sync(&poll, &repo_name, &store, &shown, depth).await {
            Ok(revision) => revision,
            Err(e) => return failed(&deployments, e.to_string()),
        };
        if !plan::applies_changes(revision.mode) {
            warn!(repository = %shown, "the repository of repository_url deployments is unreachable: they keep their last known good state");
            return Vec::new();
        }
        let _lease = self.leases.take(&revision.commit);
        let tree = match store::artifact(self.source.as_ref(), &url, &store, &revision.commit).await
        {
            Ok(tree) => tree,
            Err(e) => return failed(&deployments, e.to_string()),
        };
        let origin = Origin {
            repository_url: shown.clone(),
            config_commit: ctx.commit.to_string(),
        };
        let sub = PollContext {
            poll: &poll,
            kind: ctx.kind,
            key: ctx.key.clone(),
            repo_name: ctx.repo_name,
            url: &shown,
            store: &store,
            tree: &tree,
            commit: &revision.commit,
            mode: revision.mode,
            origin: Some(&origin),
        };
        let resolved = deployments
            .into_iter()
            .flat_map(|d| doco_config::resolve_external(d.config, &tree, ctx.tree, d.source_file))
            .collect();
        self.deploy_resolved(&sub, resolved, observed).await
    }
}

/// How a run first looks at the engine: a run of the poll timer alone reads the view the engine's
/// events keep (the quiet path asks the engine nothing); any other trigger (an event the view may not
/// have seen yet, a push, a restart) asks the engine.
fn look(run: &Run) -> heal::Look {
    if run.reasons.iter().all(|r| matches!(r, Reason::Timer)) {
        heal::Look::View
    } else {
        heal::Look::Fresh
    }
}

/// Per compose project, the services that subscribed `die` or `destroy` events of this run named.
fn forced_services(run: &Run) -> heal::Forced {
    let mut forced = heal::Forced::new();
    for event in run.events() {
        if matches!(event.action.as_str(), "die" | "destroy") {
            forced
                .entry(event.project.clone())
                .or_default()
                .insert(event.service.clone());
        }
    }
    forced
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Locks a std mutex, going on with the data if a holder panicked (the maps stay consistent).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
