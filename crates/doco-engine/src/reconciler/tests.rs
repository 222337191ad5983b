//! The reconciler's rules on a paused clock, with an in-memory Git source and container runtime in
//! place of `git` and Docker (the real adapters are tested in the Git and Docker tiers, and the same
//! stories end to end in `crates/doco-cd/tests`).
//!
//! The fake runtime reads a one-line-per-service stand-in for a compose file
//! (`name=image;restart`), gives each container a config hash made of its image, policy and labels
//! (so changed labels recreate, as compose does), and fails an `up` that would pull an image named
//! `missing/...` before it starts anything, as compose does for an image that cannot be pulled.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doco_config::{AppConfig, PollConfig};
use doco_docker::{
    ComposeError, ComposeProject, ContainerInfo, ContainerState, DockerError, RenderedProject,
    RenderedService, UpOptions,
};
use doco_git::{GitError, SyncOptions, SyncOutcome};
use sha2::{Digest, Sha256};

use super::*;
use crate::adapters::{BoxFuture, Containers, Runtime, Source};
use crate::scheduler::{EventReason, Reason, Run};

const URL: &str = "http://git.example.com/ops/stack.git";
const PROJECT: &str = "stack";

/// A Git remote with one branch; checkouts are directories the fake writes the commit's files to.
#[derive(Default)]
struct FakeSource {
    state: Mutex<SourceState>,
}

#[derive(Default)]
struct SourceState {
    commits: BTreeMap<String, BTreeMap<String, String>>,
    branch: String,
    unreachable: bool,
    heads: BTreeMap<PathBuf, String>,
    syncs: u32,
    exports: Vec<String>,
}

impl FakeSource {
    /// Pushes a commit holding `.doco-cd.yml` and `compose.yml` with `services`; returns its id.
    fn push(&self, services: &str) -> String {
        self.push_with(&format!("name: {PROJECT}\n"), services)
    }

    /// Pushes a commit holding `deploy_config` as `.doco-cd.yml` and `services` as `compose.yml`.
    fn push_with(&self, deploy_config: &str, services: &str) -> String {
        let mut state = self.state.lock().unwrap();
        let commit = format!("{:040x}", state.commits.len() + 1);
        let files = BTreeMap::from([
            (".doco-cd.yml".to_string(), deploy_config.to_string()),
            ("compose.yml".to_string(), services.to_string()),
        ]);
        state.commits.insert(commit.clone(), files);
        state.branch = commit.clone();
        commit
    }

    /// Points the branch at an existing commit (a force push back to it).
    fn force_push(&self, commit: &str) {
        self.state.lock().unwrap().branch = commit.to_string();
    }

    fn set_unreachable(&self, unreachable: bool) {
        self.state.lock().unwrap().unreachable = unreachable;
    }

    fn syncs(&self) -> u32 {
        self.state.lock().unwrap().syncs
    }

    fn exports(&self) -> Vec<String> {
        self.state.lock().unwrap().exports.clone()
    }
}

fn write_files(dir: &Path, files: &BTreeMap<String, String>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

impl Source for FakeSource {
    fn sync<'a>(
        &'a self,
        url: &'a str,
        _reference: &'a str,
        mirror: &'a Path,
        _options: &'a SyncOptions,
    ) -> BoxFuture<'a, Result<SyncOutcome, GitError>> {
        let mut state = self.state.lock().unwrap();
        state.syncs += 1;
        let result = if state.unreachable {
            Err(GitError::Transport {
                url: url.to_string(),
                detail: "Failed to connect to git.example.com port 443: Connection refused".into(),
            })
        } else {
            let commit = state.branch.clone();
            std::fs::create_dir_all(mirror).unwrap();
            let previous = state.heads.insert(mirror.to_path_buf(), commit.clone());
            Ok(SyncOutcome {
                fetched: previous.as_ref() != Some(&commit),
                cloned: previous.is_none(),
                commit,
            })
        };
        Box::pin(async move { result })
    }

    fn resolved(&self, mirror: &Path, _reference: &str) -> Result<Option<String>, GitError> {
        Ok(self.state.lock().unwrap().heads.get(mirror).cloned())
    }

    fn export<'a>(
        &'a self,
        _url: &'a str,
        _mirror: &'a Path,
        commit: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        let mut state = self.state.lock().unwrap();
        write_files(dest, &state.commits[commit]);
        state.exports.push(commit.to_string());
        Box::pin(async { Ok(()) })
    }

    fn adopt<'a>(
        &'a self,
        _url: &'a str,
        _reference: &'a str,
        _checkout: &'a Path,
        _mirror: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Containers in memory, and how often compose ran.
#[derive(Default)]
struct FakeRuntime {
    state: Mutex<RuntimeState>,
}

#[derive(Default)]
struct RuntimeState {
    containers: BTreeMap<String, ContainerInfo>,
    next_id: u32,
    ups: u32,
    removed_images: Vec<String>,
    signals: Vec<(String, String)>,
    /// Per image reference, the `RepoDigests` entry of the local image (`ref@digest`).
    local_digests: BTreeMap<String, String>,
    /// Per image reference, the registry's digest; a missing one is an unreachable registry.
    remote_digests: BTreeMap<String, String>,
    lookups: u32,
}

impl FakeRuntime {
    /// The ids of `service`'s containers.
    fn ids(&self, service: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .containers
            .values()
            .filter(|c| c.service == service)
            .map(|c| c.id.clone())
            .collect()
    }

    /// The only container of `service`.
    fn only(&self, service: &str) -> ContainerInfo {
        let ids = self.ids(service);
        assert_eq!(ids.len(), 1, "{service}: {ids:?}");
        self.state.lock().unwrap().containers[&ids[0]].clone()
    }

    fn set_state(&self, id: &str, to: ContainerState) {
        self.state
            .lock()
            .unwrap()
            .containers
            .get_mut(id)
            .unwrap()
            .state = to;
    }

    fn remove(&self, id: &str) {
        self.state.lock().unwrap().containers.remove(id);
    }

    fn ups(&self) -> u32 {
        self.state.lock().unwrap().ups
    }

    fn removed_images(&self) -> Vec<String> {
        self.state.lock().unwrap().removed_images.clone()
    }
}

/// Reads the stand-in compose file: one `name=image;restart` per line.
fn read_services(project: &ComposeProject) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(&project.files[0]).unwrap();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once('=')?;
            let (image, restart) = rest.split_once(';')?;
            Some((name.to_string(), (image.to_string(), restart.to_string())))
        })
        .collect()
}

fn config_hash(image: &str, restart: &str, labels: &BTreeMap<String, String>) -> String {
    let text = format!(
        "{image};{restart};{}",
        serde_json::to_string(labels).unwrap()
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl RuntimeState {
    /// compose's convergence for one service: keep a container whose hash matches (starting it),
    /// replace any other.
    fn converge(
        &mut self,
        project: &str,
        service: &str,
        image: &str,
        hash: &str,
        labels: &BTreeMap<String, String>,
    ) {
        let existing: Vec<String> = self
            .containers
            .values()
            .filter(|c| c.project == project && c.service == service)
            .map(|c| c.id.clone())
            .collect();
        let mut kept = false;
        for id in existing {
            let container = self.containers.get_mut(&id).unwrap();
            if !kept && container.config_hash.as_deref() == Some(hash) {
                container.state = ContainerState::Running;
                kept = true;
            } else {
                self.containers.remove(&id);
            }
        }
        if !kept {
            self.next_id += 1;
            let id = format!("c{}", self.next_id);
            let container = ContainerInfo {
                id: id.clone(),
                name: format!("{project}-{service}-{id}"),
                project: project.to_string(),
                service: service.to_string(),
                state: ContainerState::Running,
                labels: labels.clone(),
                config_hash: Some(hash.to_string()),
                oneoff: false,
                health: doco_docker::Health::None,
                image_id: image.to_string(),
            };
            self.containers.insert(id, container);
        }
    }
}

impl Runtime for FakeRuntime {
    fn containers(&self) -> BoxFuture<'_, Result<Containers, DockerError>> {
        let mut all = Containers::new();
        for c in self.state.lock().unwrap().containers.values() {
            all.entry(c.project.clone()).or_default().push(c.clone());
        }
        Box::pin(async move { Ok(all) })
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        self.set_state(id, ContainerState::Running);
        Box::pin(async { Ok(()) })
    }

    fn render<'a>(
        &'a self,
        project: &'a ComposeProject,
    ) -> BoxFuture<'a, Result<RenderedProject, ComposeError>> {
        let services = read_services(project)
            .into_iter()
            .map(|(name, (image, restart))| {
                let service = RenderedService {
                    spec: serde_json::json!({ "image": image, "restart": restart }),
                    image: Some(image),
                    restart: Some(restart),
                    replicas: 1,
                    has_build: false,
                    has_healthcheck: false,
                    local_inputs: Vec::new(),
                    live_inputs: Vec::new(),
                    reload_signal: None,
                };
                (name, service)
            })
            .collect();
        let rendered = RenderedProject {
            name: project.name.clone(),
            services,
        };
        Box::pin(async move { Ok(rendered) })
    }

    fn create<'a>(
        &'a self,
        project: &'a ComposeProject,
        labels: &'a Path,
        options: &'a UpOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        // Job services are not exercised by these tests; created is as good as up here.
        self.up(project, labels, options)
    }

    fn up<'a>(
        &'a self,
        project: &'a ComposeProject,
        labels: &'a Path,
        options: &'a UpOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        let override_file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(labels).unwrap()).unwrap();
        let services = read_services(project);
        let selected: Vec<&String> = services
            .keys()
            .filter(|name| options.services.is_empty() || options.services.contains(name))
            .collect();
        let mut state = self.state.lock().unwrap();
        state.ups += 1;
        if let Some(name) = selected
            .iter()
            .find(|name| services[name.as_str()].0.starts_with("missing/"))
        {
            let failed = ComposeError::Failed {
                project: project.name.clone(),
                subcommand: "up".into(),
                files: project.files.clone(),
                code: Some(1),
                stderr: format!("pull access denied for {}", services[name.as_str()].0),
            };
            return Box::pin(async move { Err(failed) });
        }
        for name in selected {
            let (image, restart) = &services[name];
            if options.force_recreate {
                state
                    .containers
                    .retain(|_, c| !(c.project == project.name && &c.service == name));
            }
            if options.pull == doco_docker::PullPolicy::Always
                && let Some(digest) = state.remote_digests.get(image).cloned()
            {
                state
                    .local_digests
                    .insert(image.clone(), format!("{image}@{digest}"));
            }
            let labels: BTreeMap<String, String> = override_file["services"][name]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let hash = config_hash(image, restart, &labels);
            state.converge(&project.name, name, image, &hash, &labels);
        }
        Box::pin(async { Ok(()) })
    }

    fn build<'a>(
        &'a self,
        _project: &'a ComposeProject,
        _options: &'a doco_docker::BuildOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        Box::pin(async { Ok(()) })
    }

    fn down<'a>(
        &'a self,
        project: &'a str,
        _remove_volumes: bool,
        _remove_images: bool,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        self.state
            .lock()
            .unwrap()
            .containers
            .retain(|_, c| c.project != project);
        Box::pin(async { Ok(()) })
    }

    fn last_health_output<'a>(
        &'a self,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DockerError>> {
        Box::pin(async { Ok(None) })
    }

    fn signal<'a>(
        &'a self,
        id: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        let mut state = self.state.lock().unwrap();
        state.signals.push((id.to_string(), signal.to_string()));
        Box::pin(async { Ok(()) })
    }

    fn remove_unused_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, DockerError>> {
        let mut state = self.state.lock().unwrap();
        let used = state.containers.values().any(|c| c.image_id == id);
        if !used {
            state.removed_images.push(id.to_string());
        }
        Box::pin(async move { Ok(!used) })
    }

    fn local_image<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<doco_docker::LocalImage, DockerError>> {
        let state = self.state.lock().unwrap();
        let reference = state.containers[id].image_id.clone();
        let repo_digests = state.local_digests.get(&reference).cloned();
        let image = doco_docker::LocalImage {
            repo_digests: repo_digests.into_iter().collect(),
            reference,
        };
        Box::pin(async move { Ok(image) })
    }

    fn remote_digest<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<String, doco_docker::RegistryError>> {
        let mut state = self.state.lock().unwrap();
        state.lookups += 1;
        let found = state.remote_digests.get(reference).cloned().ok_or_else(|| {
            doco_docker::RegistryError::Status {
                registry: "fake".into(),
                image: reference.to_string(),
                status: 503,
            }
        });
        Box::pin(async move { found })
    }
}

/// A reconciler on the fakes, with a data directory that outlives it (for restarts).
struct World {
    source: Arc<FakeSource>,
    runtime: Arc<FakeRuntime>,
    data: tempfile::TempDir,
    reconciler: Reconciler,
}

const GOOD: &str = "proxy=busybox:1;always\nweb=busybox:1;always\n";
const BROKEN: &str = "proxy=busybox:1;always\nweb=missing/web:2;always\n";

impl World {
    fn new() -> World {
        let source = Arc::new(FakeSource::default());
        let runtime = Arc::new(FakeRuntime::default());
        let data = tempfile::tempdir().unwrap();
        let reconciler = reconciler(&data, &source, &runtime);
        World {
            source,
            runtime,
            data,
            reconciler,
        }
    }

    /// doco-cd restarted: a new reconciler on the same data directory, engine and remote.
    fn restart(&mut self) {
        self.reconciler = reconciler(&self.data, &self.source, &self.runtime);
    }

    async fn run(&self, reason: Reason) -> Result<(), PollError> {
        let run = Run {
            poll: poll(),
            reasons: vec![reason],
        };
        let (result, _) = self.reconciler.reconcile(run).await;
        result.map_err(|e| Arc::try_unwrap(e).unwrap())
    }

    async fn poll(&self) -> Result<(), PollError> {
        self.run(Reason::Timer).await
    }

    fn offline_gauge(&self) -> bool {
        self.reconciler
            .offline_repositories()
            .contains("git.example.com/ops/stack")
    }
}

fn poll() -> PollConfig {
    PollConfig {
        url: URL.into(),
        reference: "main".into(),
        ..PollConfig::default()
    }
}

fn reconciler(
    data: &tempfile::TempDir,
    source: &Arc<FakeSource>,
    runtime: &Arc<FakeRuntime>,
) -> Reconciler {
    let env = BTreeMap::from([
        (
            "DATA_MOUNT_PATH".to_string(),
            data.path().display().to_string(),
        ),
        (
            "DOCO_CD_MAINTAIN_OFFLINE_STATE".to_string(),
            "true".to_string(),
        ),
    ]);
    let config = Arc::new(AppConfig::from_env(&env).unwrap());
    Reconciler::with(
        config,
        source.clone(),
        runtime.clone(),
        Arc::new(Metrics::new()),
    )
}

/// A world where the first commit (`GOOD`) is deployed.
async fn deployed() -> (World, String) {
    let world = World::new();
    let good = world.source.push(GOOD);
    world.poll().await.unwrap();
    assert_eq!(world.runtime.ids("proxy").len(), 1);
    assert_eq!(world.runtime.ids("web").len(), 1);
    (world, good)
}

#[tokio::test(start_paused = true)]
async fn a_broken_commit_does_not_keep_a_stopped_unchanged_service_down_online() {
    let (world, good) = deployed().await;
    let proxy = world.runtime.only("proxy");
    let web = world.runtime.only("web");
    let broken = world.source.push(BROKEN);
    assert!(world.poll().await.is_err(), "the broken commit fails");

    world.runtime.set_state(&proxy.id, ContainerState::Exited);
    let _ = world.poll().await;
    let healed = world.runtime.only("proxy");
    assert_eq!(healed.id, proxy.id, "started, not recreated");
    assert_eq!(healed.state, ContainerState::Running);
    assert_eq!(
        world.runtime.only("web").id,
        web.id,
        "web keeps its last good container"
    );

    // Removed: recreated from the last good commit's export, which the broken one never touched.
    world.runtime.remove(&proxy.id);
    let _ = world.poll().await;
    let recreated = world.runtime.only("proxy");
    assert_ne!(recreated.id, proxy.id);
    assert_eq!(recreated.labels, proxy.labels, "exactly as last deployed");
    assert_eq!(recreated.config_hash, proxy.config_hash);
    assert_eq!(
        world.source.exports(),
        vec![good, broken],
        "each commit exported once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broken_commit_does_not_keep_a_service_down_offline_and_offline_enforces_the_last_good_commit()
 {
    let (world, good) = deployed().await;
    let proxy = world.runtime.only("proxy");
    let broken = world.source.push(BROKEN);
    assert!(world.poll().await.is_err());
    let ups = world.runtime.ups();

    world.source.set_unreachable(true);
    world.runtime.remove(&proxy.id);
    world
        .runtime
        .set_state(&world.runtime.only("web").id, ContainerState::Exited);
    world.poll().await.unwrap();
    assert!(world.offline_gauge());
    let proxy_again = world.runtime.only("proxy");
    assert_eq!(proxy_again.labels, proxy.labels);
    assert_eq!(world.runtime.only("web").state, ContainerState::Running);
    assert_eq!(world.source.exports(), vec![good.clone(), broken]);
    assert_eq!(
        world.runtime.ups(),
        ups + 1,
        "one up, of the removed service only: the broken commit is never tried offline"
    );
    let state = world.reconciler.state_snapshot().await;
    let record = &state.repositories["git.example.com/ops/stack#main"].deployments[PROJECT];
    assert_eq!(
        record.commit, good,
        "the last good state is still the good commit"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_starts_and_ends_without_redeploying_anything() {
    let (world, _) = deployed().await;
    let before = (world.runtime.only("proxy"), world.runtime.only("web"));
    let ups = world.runtime.ups();
    world.source.set_unreachable(true);
    for _ in 0..3 {
        world.poll().await.unwrap();
        assert!(world.offline_gauge());
    }
    world.source.set_unreachable(false);
    world.poll().await.unwrap();
    assert!(!world.offline_gauge());
    assert_eq!(
        world.runtime.ups(),
        ups,
        "the end of an outage is not a change"
    );
    assert_eq!(
        (world.runtime.only("proxy"), world.runtime.only("web")),
        before
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_an_outage_enforces_from_the_state_file() {
    let (mut world, _) = deployed().await;
    let proxy = world.runtime.only("proxy");
    let web = world.runtime.only("web");
    world.source.set_unreachable(true);
    world.restart();
    world.runtime.set_state(&proxy.id, ContainerState::Exited);
    world.runtime.remove(&web.id);
    world.poll().await.unwrap();
    assert_eq!(world.runtime.only("proxy").id, proxy.id);
    assert_eq!(world.runtime.only("proxy").state, ContainerState::Running);
    assert_eq!(world.runtime.only("web").labels, web.labels);
}

#[tokio::test(start_paused = true)]
async fn a_force_push_to_an_older_commit_deploys_it() {
    let (world, first) = deployed().await;
    let first_web = world.runtime.only("web");
    world
        .source
        .push("proxy=busybox:1;always\nweb=busybox:2;always\n");
    world.poll().await.unwrap();
    assert_ne!(world.runtime.only("web").id, first_web.id);
    let proxy = world.runtime.only("proxy");

    world.source.force_push(&first);
    world.poll().await.unwrap();
    let web = world.runtime.only("web");
    assert_eq!(web.labels["cd.doco.deployment.target.sha"], first);
    assert_eq!(
        world.runtime.only("proxy").id,
        proxy.id,
        "unchanged services are left alone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_change_backs_off_healing_does_not_wait_and_a_new_commit_tries_at_once() {
    let (world, _) = deployed().await;
    world.source.push(BROKEN);
    assert!(world.poll().await.is_err());
    let ups = world.runtime.ups();

    // Within the first 10 s the change is not tried again, but healing goes on.
    tokio::time::advance(Duration::from_secs(5)).await;
    let proxy = world.runtime.only("proxy");
    world.runtime.set_state(&proxy.id, ContainerState::Exited);
    world.poll().await.unwrap();
    assert_eq!(world.runtime.only("proxy").state, ContainerState::Running);
    assert_eq!(world.runtime.ups(), ups, "no compose run while backing off");
    let failing = world.reconciler.failing_deployments();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].1.attempts, 1);

    // After the backoff: one more attempt, and the next wait is twice as long.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(world.poll().await.is_err());
    assert_eq!(world.runtime.ups(), ups + 1);
    let (result, action) = world
        .reconciler
        .reconcile(Run {
            poll: poll(),
            reasons: vec![Reason::Timer],
        })
        .await;
    assert!(result.is_ok(), "waiting is not a failure");
    assert_eq!(action.requeue_after, Some(Duration::from_secs(20)));

    // A fixed commit is tried at once and resets the backoff.
    world
        .source
        .push("proxy=busybox:1;always\nweb=busybox:3;always\n");
    world.poll().await.unwrap();
    assert_eq!(world.runtime.ups(), ups + 2);
    assert!(world.reconciler.failing_deployments().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_subscribed_die_brings_back_a_restart_no_service_without_asking_git() {
    let world = World::new();
    world
        .source
        .push("proxy=busybox:1;always\njob=busybox:1;no\n");
    world.poll().await.unwrap();
    let job = world.runtime.only("job");
    world.runtime.set_state(&job.id, ContainerState::Exited);

    // A poll leaves a stopped `restart: no` service alone...
    world.poll().await.unwrap();
    assert_eq!(world.runtime.only("job").state, ContainerState::Exited);
    // ...a subscribed die event of it brings it back, from the state alone.
    let syncs = world.source.syncs();
    world.source.set_unreachable(true);
    let die = EventReason {
        project: PROJECT.into(),
        service: "job".into(),
        container: job.id.clone(),
        action: "die".into(),
    };
    world.run(Reason::Event(die)).await.unwrap();
    assert_eq!(world.runtime.only("job").id, job.id);
    assert_eq!(world.runtime.only("job").state, ContainerState::Running);
    assert_eq!(world.source.syncs(), syncs, "no fetch for an event");
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_recheck_heals_and_restarts_nothing_healthy() {
    let (world, _) = deployed().await;
    let proxy = world.runtime.only("proxy");
    let web = world.runtime.only("web");
    world.runtime.set_state(&web.id, ContainerState::Exited);
    let ups = world.runtime.ups();
    world.run(Reason::Reconnect).await.unwrap();
    assert_eq!(world.runtime.only("web").state, ContainerState::Running);
    assert_eq!(
        world.runtime.only("proxy"),
        proxy,
        "the healthy one is untouched"
    );
    assert_eq!(world.runtime.ups(), ups);
}

#[tokio::test(start_paused = true)]
async fn images_no_container_uses_after_a_deploy_are_pruned_and_shared_ones_kept() {
    let world = World::new();
    world
        .source
        .push("proxy=busybox:1;always\nweb=busybox:1;always\n");
    world.poll().await.unwrap();
    world
        .source
        .push("proxy=busybox:1;always\nweb=busybox:2;always\n");
    world.poll().await.unwrap();
    assert!(
        world.runtime.removed_images().is_empty(),
        "busybox:1 is still used by proxy"
    );
    world
        .source
        .push("proxy=busybox:1;always\nweb=busybox:3;always\n");
    world.poll().await.unwrap();
    assert_eq!(
        world.runtime.removed_images(),
        vec!["busybox:2".to_string()]
    );

    // Offline nothing is pruned (offline is never a change), and a heal prunes nothing.
    world.source.set_unreachable(true);
    world.runtime.remove(&world.runtime.only("web").id);
    world.poll().await.unwrap();
    assert_eq!(
        world.runtime.removed_images(),
        vec!["busybox:2".to_string()]
    );
}

#[tokio::test(start_paused = true)]
async fn a_moved_tag_recreates_only_its_service_online_with_force_image_pull() {
    let world = World::new();
    let (tagged, other) = ("reg.example/app:latest", "reg.example/db:1");
    {
        let mut state = world.runtime.state.lock().unwrap();
        for image in [tagged, other] {
            state
                .local_digests
                .insert(image.into(), format!("{image}@sha256:old"));
            state
                .remote_digests
                .insert(image.into(), "sha256:old".into());
        }
    }
    let services = format!("web={tagged};always\ndb={other};always\n");
    world.source.push_with(
        &format!("name: {PROJECT}\nforce_image_pull: true\n"),
        &services,
    );
    world.poll().await.unwrap();
    let (web, db) = (world.runtime.only("web"), world.runtime.only("db"));
    world.poll().await.unwrap();
    assert_eq!(world.runtime.only("web").id, web.id, "nothing moved");

    let set_remote = |digest: Option<&str>| {
        let mut state = world.runtime.state.lock().unwrap();
        match digest {
            Some(d) => state.remote_digests.insert(tagged.into(), d.into()),
            None => state.remote_digests.remove(tagged),
        };
    };
    set_remote(None);
    let ups = world.runtime.ups();
    world.poll().await.unwrap();
    assert_eq!(
        world.runtime.ups(),
        ups,
        "an unreachable registry changes nothing"
    );

    set_remote(Some("sha256:new"));
    world.source.set_unreachable(true);
    let lookups = world.runtime.state.lock().unwrap().lookups;
    world.poll().await.unwrap();
    assert_eq!(world.runtime.only("web").id, web.id, "offline never pulls");
    assert_eq!(
        world.runtime.state.lock().unwrap().lookups,
        lookups,
        "offline looks nothing up"
    );

    world.source.set_unreachable(false);
    world.poll().await.unwrap();
    assert_ne!(
        world.runtime.only("web").id,
        web.id,
        "the moved tag's service is recreated"
    );
    assert_eq!(
        world.runtime.only("db").id,
        db.id,
        "the other service is untouched"
    );
    let recreated = world.runtime.only("web").id;
    world.poll().await.unwrap();
    assert_eq!(
        world.runtime.only("web").id,
        recreated,
        "once pulled, the tag no longer moved"
    );
}

#[tokio::test(start_paused = true)]
async fn a_commit_breaking_one_of_its_changed_services_still_deploys_the_others() {
    let (world, good) = deployed().await;
    let web = world.runtime.only("web");
    let key = "git.example.com/ops/stack#main";
    let web_record = world.reconciler.state_snapshot().await.repositories[key].deployments[PROJECT]
        .services["web"]
        .clone();
    world
        .source
        .push("proxy=busybox:2;always\nweb=missing/web:2;always\n");
    let result = world.poll().await;
    assert!(
        matches!(result, Err(PollError::Deployments { failed: 1, .. })),
        "{result:?}"
    );
    let proxy = world.runtime.only("proxy");
    assert_eq!(
        proxy.image_id, "busybox:2",
        "the service that could be deployed was"
    );
    assert_eq!(
        world.runtime.only("web").id,
        web.id,
        "the broken one keeps its container"
    );
    let state = world.reconciler.state_snapshot().await;
    let record = &state.repositories[key].deployments[PROJECT];
    assert_eq!(record.commit, good, "the change is still to be retried");
    assert_eq!(
        record.services["web"], web_record,
        "web's last good state kept"
    );
    assert_ne!(record.services["proxy"].compose_hash, None);
    let failing = world.reconciler.failing_deployments();
    assert_eq!(failing.len(), 1);
    assert!(
        failing[0].1.error.contains("service web"),
        "{}",
        failing[0].1.error
    );

    // The retry after the backoff only touches the broken service.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(world.poll().await.is_err());
    assert_eq!(world.runtime.only("proxy").id, proxy.id);
}

#[tokio::test(start_paused = true)]
async fn a_service_a_job_run_holds_stopped_is_left_stopped_until_the_run_releases_it() {
    let (world, _) = deployed().await;
    let proxy = world.runtime.only("proxy");
    let (hold, _) = world
        .reconciler
        .registry()
        .hold_stopped(&proxy.project, "proxy");
    world.runtime.set_state(&proxy.id, ContainerState::Exited);
    world.poll().await.unwrap();
    assert_eq!(
        world.runtime.only("proxy").state,
        ContainerState::Exited,
        "neither the heal nor the change step starts it during the run"
    );
    assert_eq!(world.runtime.ups(), 1, "nothing redeployed");

    hold.release();
    world.poll().await.unwrap();
    let healed = world.runtime.only("proxy");
    assert_eq!(healed.id, proxy.id);
    assert_eq!(
        healed.state,
        ContainerState::Running,
        "healed once released"
    );
}
