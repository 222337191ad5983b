//! Applying one deployment: the quick check, rendering with compose, choosing each service's labels,
//! `docker compose up`, waiting for the services, and recording what was deployed. The decisions
//! themselves are in `plan`; this module carries them out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use doco_config::ResolvedDeployment;
use doco_docker::labels as key;
use doco_docker::{
    BuildOptions, ComposeProject, ContainerEvent, ContainerInfo, LiveInput, MountOverride,
    PullPolicy, UpOptions,
};
use tracing::{Instrument, info, info_span, warn};

use super::pins::{Files, with_pins};
use super::report::{Entry, RecordChange, Step};
use super::{DeployError, DeploymentOutcome, PollContext, Reconciler, Trigger, lock, unix_now};
use crate::adapters::Runtime;
use crate::backoff;
use crate::fingerprint::{Tree, project_hash, service_fingerprint};
use crate::labels::{LabelContext, adoptable_labels, fresh_labels};
use crate::live::LiveStack;
use crate::metrics;
use crate::plan::{self, Desired, DestroyPlan, FullPlan, NotReady, QuickPlan, Switches};
use crate::registry::EventTarget;
use crate::state::{DeploymentRecord, ServiceRecord};

/// What applying a deployment did: its outcome, how its record changes, and the unhealthy containers
/// it saw (for the event loop's restart budget).
pub(super) struct Applied {
    pub outcome: DeploymentOutcome,
    pub record: RecordChange,
    pub unhealthy: Vec<ContainerEvent>,
}

impl Applied {
    fn new(outcome: DeploymentOutcome, record: RecordChange) -> Applied {
        Applied {
            outcome,
            record,
            unhealthy: Vec::new(),
        }
    }
}

/// How [`Reconciler::up_as_recorded`] treats images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordedImages {
    /// Use the images present; pull only missing ones (a heal: no change).
    Present,
    /// Pull anew and recreate (a tag moved in the registry).
    PullAndRecreate,
}

/// When [`Reconciler::live_mounts`] updates the live copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LiveSync {
    /// Every deploy: the copies follow the commit being deployed.
    Always,
    /// A heal: only make them when they are missing.
    IfMissing,
}

/// A `docker compose up` as a deploy made it: the labels, their override file, the options.
#[derive(Clone, Copy)]
struct UpCall<'a> {
    labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    labels_file: &'a Path,
    options: &'a UpOptions,
}

/// What a deploy applies: the compose invocation, the planned services, the deploy config's hash,
/// the mounts its override takes from the live copies, and the job services.
#[derive(Clone, Copy)]
struct DeployTarget<'a> {
    project: &'a ComposeProject,
    planned: &'a BTreeMap<String, plan::RenderedService>,
    config_hash: &'a str,
    mounts: &'a MountOverride,
    /// Each service's inputs excluded from recreation (`recreate.ignore`), as doco-cd's paths.
    live_inputs: &'a BTreeMap<String, Vec<LiveInput>>,
    /// The job services (`cd.doco.job.enabled`): created, never started, by a deploy.
    jobs: &'a BTreeSet<String>,
    /// The engine of the deployment's `context`.
    rt: &'a dyn Runtime,
}

impl Reconciler {
    /// Applies one deployment of the poll: its change, or its removal with `destroy`.
    pub(super) async fn deploy_one(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
    ) -> Entry {
        let name = &deployment.config.name;
        let span = info_span!("deployment", deployment = %name);
        async {
            let mut entry = Entry::new(&ctx.key, name, plan::short(ctx.commit), Step::Change);
            entry.target = Some(EventTarget {
                poll: ctx.poll.clone(),
                reconciliation: deployment.config.reconciliation.clone(),
            });
            if let Err(e) = check_supported(deployment) {
                entry.outcome = Err(e);
                return entry;
            }
            if let Some(reason) = plan::skip(ctx.kind, &deployment.config, &ctx.poll.reference) {
                info!(%reason, "skipped");
                return entry;
            }
            let labels = metrics::repo(ctx.repo_name);
            self.metrics.deployments_queued.get_or_create(&labels).inc();
            let slot = self.deploy_slots.acquire().await;
            self.metrics.deployments_queued.get_or_create(&labels).dec();
            self.metrics.deployments_active.get_or_create(&labels).inc();
            let entry = self.deploy_in_slot(ctx, deployment, observed, entry).await;
            self.metrics.deployments_active.get_or_create(&labels).dec();
            drop(slot);
            entry
        }
        .instrument(span)
        .await
    }

    /// The rest of [`Reconciler::deploy_one`], once a deployment slot is held.
    async fn deploy_in_slot(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        observed: &BTreeMap<String, Vec<ContainerInfo>>,
        mut entry: Entry,
    ) -> Entry {
        let name = &deployment.config.name;
        let started = Instant::now();
        let record = self
            .state
            .lock()
            .await
            .repositories
            .get(&ctx.key)
            .and_then(|r| r.deployments.get(name))
            .cloned();
        let rt = match self.runtime_for(&deployment.config.context) {
            Ok(rt) => rt,
            Err(e) => {
                entry.outcome = Err(e);
                return entry;
            }
        };
        let on_its_engine;
        let observed = if plan::is_default_context(&deployment.config.context) {
            observed
        } else {
            on_its_engine = match rt.containers().await {
                Ok(containers) => containers,
                Err(e) => {
                    entry.outcome = Err(e.into());
                    return entry;
                }
            };
            &on_its_engine
        };
        let empty = Vec::new();
        let containers = observed.get(name).unwrap_or(&empty);
        let rt = rt.as_ref();
        // Shared with the job scheduler: a deploy and a job run of one stack never overlap. A stack
        // with nothing to do (and no moved tag to look up) does not wait for a job run (one holding
        // services stopped may take hours), so the poll, and the healing of the repository's other
        // stacks, goes on.
        let idle = !deployment.config.destroy.enabled
            && !plan::checks_moved_tags(ctx.mode, deployment.config.force_image_pull)
            && {
                let config_hash = deployment.config.hash();
                let desired = Desired {
                    commit: ctx.commit,
                    config_hash: &config_hash,
                    force_recreate: deployment.config.force_recreate,
                };
                self.quick_plan(name, &desired, record.as_ref(), containers, ctx.mode)
                    == QuickPlan::UpToDate
            };
        let _stack = if idle {
            None
        } else {
            Some(self.stack_locks.lock(name).await)
        };
        let applied = if deployment.config.destroy.enabled {
            entry.step = Step::Remove;
            self.destroy(ctx, deployment, containers, rt).await
        } else {
            let config_hash = deployment.config.hash();
            let attempt = backoff::Desired {
                commit: ctx.commit.to_string(),
                config_hash: config_hash.clone(),
            };
            let id = (ctx.key.clone(), name.clone());
            if let Some(wait) = lock(&self.backoffs).wait(&id, &attempt, Instant::now()) {
                entry.outcome = Ok(DeploymentOutcome::Waiting(wait));
                return entry;
            }
            entry.attempt = Some(attempt);
            let desired = Desired {
                commit: ctx.commit,
                config_hash: &config_hash,
                force_recreate: deployment.config.force_recreate,
            };
            self.change(ctx, deployment, &desired, record.as_ref(), containers, rt)
                .await
        };
        match applied {
            Ok(applied) => {
                entry.outcome = Ok(applied.outcome);
                entry.record = applied.record;
                entry.unhealthy = applied.unhealthy;
            }
            Err(e) => entry.outcome = Err(e),
        }
        entry.elapsed = started.elapsed();
        entry
    }

    /// The change step: the quick check, then rendering and deploying when something changed.
    async fn change(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        desired: &Desired<'_>,
        record: Option<&DeploymentRecord>,
        containers: &[ContainerInfo],
        rt: &dyn Runtime,
    ) -> Result<Applied, DeployError> {
        let config_hash = desired.config_hash;
        match self.quick_plan(
            &deployment.config.name,
            desired,
            record,
            containers,
            ctx.mode,
        ) {
            // Unhealthy containers are reported only when nothing else is deployed now, so a
            // restart never races a compose run of the same stack.
            QuickPlan::UpToDate => {
                if let Some(record) = record
                    && let Some(applied) = self
                        .follow_moved_tags(ctx, deployment, record, containers, rt)
                        .await?
                {
                    return Ok(applied);
                }
                tracing::debug!("up to date");
                Ok(Applied {
                    unhealthy: unhealthy(deployment, containers),
                    ..Applied::new(DeploymentOutcome::UpToDate, RecordChange::Keep)
                })
            }
            QuickPlan::Start(ids) => {
                info!(
                    containers = ids.len(),
                    "starting stopped containers of unchanged services"
                );
                let outcome = self.start(&ids, rt).await?;
                Ok(Applied {
                    unhealthy: unhealthy(deployment, containers),
                    ..Applied::new(outcome, RecordChange::Keep)
                })
            }
            QuickPlan::Render(reason) => {
                info!(%reason, "rendering the project to decide");
                for warning in &deployment.config.warnings {
                    warn!(%warning, "deploy configuration");
                }
                self.render_and_apply(ctx, deployment, record, containers, config_hash, rt)
                    .await
            }
        }
    }

    /// [`plan::quick_plan`], less the starts of services a job run holds stopped (and of jobs):
    /// those are the job scheduler's until the run ends.
    fn quick_plan(
        &self,
        project: &str,
        desired: &Desired<'_>,
        record: Option<&DeploymentRecord>,
        containers: &[ContainerInfo],
        mode: plan::Mode,
    ) -> QuickPlan {
        match plan::quick_plan(desired, record, containers, mode) {
            QuickPlan::Start(ids) => {
                let leave = self.registry.left_alone(project);
                let ids: Vec<String> = ids
                    .into_iter()
                    .filter(|id| {
                        !containers
                            .iter()
                            .any(|c| &c.id == id && leave.contains(&c.service))
                    })
                    .collect();
                if ids.is_empty() {
                    QuickPlan::UpToDate
                } else {
                    QuickPlan::Start(ids)
                }
            }
            other => other,
        }
    }

    /// upstream's `destroy`: removes the stack (and, as configured, its volumes and images) when its
    /// containers carry this repository's `cd.doco.source.name`; see [`plan::destroy_plan`].
    async fn destroy(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        containers: &[ContainerInfo],
        rt: &dyn Runtime,
    ) -> Result<Applied, DeployError> {
        let name = &deployment.config.name;
        let ours = doco_git::full_name(&ctx.poll.url);
        match plan::destroy_plan(ctx.mode, containers, &ours) {
            DestroyPlan::NotOffline => {
                info!("destroy is set, but nothing is removed while the repository is unreachable");
                Ok(Applied::new(
                    DeploymentOutcome::UpToDate,
                    RecordChange::Keep,
                ))
            }
            DestroyPlan::NothingLeft => Ok(Applied::new(
                DeploymentOutcome::UpToDate,
                RecordChange::Forget,
            )),
            DestroyPlan::NotOurs(owner) => Err(DeployError::NotOurs {
                project: name.clone(),
                owner,
                ours,
            }),
            DestroyPlan::Remove => {
                let options = &deployment.config.destroy;
                let outcome = self
                    .remove_stack(name, options.remove_volumes, options.remove_images, rt)
                    .await?;
                LiveStack::locate(&self.paths, ctx.store, &deployment.config.context, name)
                    .remove();
                Ok(Applied::new(outcome, RecordChange::Forget))
            }
        }
    }

    /// `docker compose down` of `project`, its engine events taken as doco-cd's own.
    pub(super) async fn remove_stack(
        &self,
        project: &str,
        remove_volumes: bool,
        remove_images: bool,
        rt: &dyn Runtime,
    ) -> Result<DeploymentOutcome, DeployError> {
        let own = self.registry.begin_project(project);
        let down = rt.down(project, remove_volumes, remove_images).await;
        drop(own);
        down?;
        info!(%project, remove_volumes, remove_images, "stack removed");
        Ok(DeploymentOutcome::Destroyed)
    }

    async fn start(
        &self,
        ids: &[String],
        rt: &dyn Runtime,
    ) -> Result<DeploymentOutcome, DeployError> {
        for id in ids {
            let _own = self.registry.begin_container(id);
            rt.start(id).await?;
        }
        Ok(DeploymentOutcome::Started(ids.len()))
    }

    /// Renders the project (decrypting SOPS files first), decides with [`plan::full_plan`] and
    /// carries the decision out.
    async fn render_and_apply(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        record: Option<&DeploymentRecord>,
        containers: &[ContainerInfo],
        config_hash: &str,
        rt: &dyn Runtime,
    ) -> Result<Applied, DeployError> {
        let project = self.compose_project(deployment);
        let rendered =
            crate::sops::render_decrypted(rt, &project, deployment, ctx.tree, &self.paths).await?;
        // Job labels are checked, and running jobs of the stack waited for, before anything changes.
        let jobs = crate::jobs::deploy::before_deploy(rt, &rendered, deployment).await?;
        let (live_inputs, live) =
            self.live_mounts(deployment, ctx.store, &rendered, ctx.tree, LiveSync::Always)?;
        let planned = self.plan_services(ctx, &rendered, &live_inputs);
        let switches = Switches {
            remove_orphans: deployment.config.remove_orphans,
            force_recreate: deployment.config.force_recreate,
            force_image_pull: deployment.config.force_image_pull,
        };
        let adoptable = adoptable_labels(containers, ctx.commit);
        let unchanged =
            |labels, hashes| new_record(ctx, deployment, config_hash, &planned, labels, hashes);
        let (recorded_labels, recorded_hashes) = record
            .map(|r| (r.labels(), r.compose_hashes()))
            .unwrap_or_default();
        let outcome =
            match plan::full_plan(&planned, record, &adoptable, containers, switches, ctx.mode) {
                FullPlan::UpToDate => {
                    info!("stack unchanged by the new commit; nothing to do");
                    DeploymentOutcome::UpToDate
                }
                FullPlan::Start(ids) => {
                    info!(
                        containers = ids.len(),
                        "stack unchanged; starting stopped containers"
                    );
                    self.start(&ids, rt).await?
                }
                FullPlan::Deploy(deploy) => {
                    let changed = deploy.changed.clone();
                    let files = Files {
                        store: ctx.store,
                        tree: ctx.tree,
                        working_dir: &deployment.working_dir,
                    };
                    let pins = self.pinned_mounts(files, &rendered, &deploy.kept_labels);
                    let mounts = with_pins(&live, pins);
                    let target = DeployTarget {
                        project: &project,
                        planned: &planned,
                        config_hash,
                        mounts: &mounts,
                        live_inputs: &live_inputs,
                        jobs: &jobs,
                        rt,
                    };
                    let applied = self.deploy(ctx, deployment, target, deploy).await?;
                    self.reload(
                        &deployment.config.name,
                        &planned,
                        record,
                        &rendered,
                        &changed,
                        rt,
                    )
                    .await?;
                    return Ok(applied);
                }
            };
        self.reload(
            &deployment.config.name,
            &planned,
            record,
            &rendered,
            &BTreeSet::new(),
            rt,
        )
        .await?;
        let record = unchanged(&recorded_labels, &recorded_hashes);
        Ok(Applied::new(outcome, RecordChange::Store(Box::new(record))))
    }

    /// `docker compose up --no-deps` of `services` of `deployment` (read from the export of the
    /// recorded commit in `store`, each service's bind mounts from the export it is pinned to) with
    /// the labels `record` gave them and the live copies' mounts (made only if missing), its events
    /// taken as doco-cd's own: a service brought back as it was deployed (a heal, a moved tag).
    pub(super) async fn up_as_recorded(
        &self,
        deployment: &ResolvedDeployment,
        store: &crate::paths::SourceDir,
        record: &DeploymentRecord,
        services: &BTreeSet<String>,
        images: RecordedImages,
        rt: &dyn Runtime,
    ) -> Result<(), DeployError> {
        let name = &deployment.config.name;
        let tree = &store.artifact(&record.commit);
        let project = self.compose_project(deployment);
        let rendered =
            crate::sops::render_decrypted(rt, &project, deployment, tree, &self.paths).await?;
        let (_, live) =
            self.live_mounts(deployment, store, &rendered, tree, LiveSync::IfMissing)?;
        let files = Files {
            store,
            tree,
            working_dir: &deployment.working_dir,
        };
        let mounts = with_pins(
            &live,
            self.pinned_mounts(files, &rendered, &record.labels()),
        );
        let override_path = self.override_path(name);
        write_override(&override_path, &record.labels(), &mounts)?;
        let options = UpOptions {
            remove_orphans: false,
            force_recreate: images == RecordedImages::PullAndRecreate,
            pull: match images {
                RecordedImages::Present => PullPolicy::Missing,
                RecordedImages::PullAndRecreate => PullPolicy::Always,
            },
            timeout: Duration::from_secs(deployment.config.timeout.max(1) + 120),
            services: services.iter().cloned().collect(),
        };
        let own = self.registry.begin_project(name);
        let up = rt
            .up(&project, &self.paths.to_host(&override_path), &options)
            .await;
        drop(own);
        Ok(up?)
    }

    /// The live copies of `rendered`'s inputs excluded from recreation (sources under `tree`), made
    /// or updated as `sync` says, and the override that mounts them; also each service's live
    /// inputs.
    pub(super) fn live_mounts(
        &self,
        deployment: &ResolvedDeployment,
        store: &crate::paths::SourceDir,
        rendered: &doco_docker::RenderedProject,
        tree: &Path,
        sync: LiveSync,
    ) -> Result<(BTreeMap<String, Vec<LiveInput>>, MountOverride), DeployError> {
        let live_inputs = self.live_inputs(rendered);
        let config = &deployment.config;
        let live = LiveStack::locate(&self.paths, store, &config.context, &config.name);
        if sync == LiveSync::Always || !live.exists() {
            let sources: Vec<PathBuf> = live_inputs
                .values()
                .flatten()
                .map(|i| i.source.clone())
                .collect();
            live.sync(tree, &sources)?;
        }
        let mounts = live.override_for(
            live_inputs
                .iter()
                .map(|(name, inputs)| (name, inputs.as_slice())),
            tree,
            |p| self.paths.to_host(p),
        );
        Ok((live_inputs, mounts))
    }

    /// Each service's inputs excluded from recreation (`recreate.ignore`), as doco-cd's paths.
    fn live_inputs(
        &self,
        rendered: &doco_docker::RenderedProject,
    ) -> BTreeMap<String, Vec<LiveInput>> {
        rendered
            .services
            .iter()
            .filter(|(_, service)| !service.live_inputs.is_empty())
            .map(|(name, service)| {
                let inputs = service
                    .live_inputs
                    .iter()
                    .map(|input| LiveInput {
                        source: self.paths.to_mount(&input.source),
                        kind: input.kind.clone(),
                    })
                    .collect();
                (name.clone(), inputs)
            })
            .collect()
    }

    /// Sends each service whose live inputs changed (and that was not recreated) its
    /// `recreate.ignore.signal`; the files were updated in place already.
    async fn reload(
        &self,
        project: &str,
        planned: &BTreeMap<String, plan::RenderedService>,
        record: Option<&DeploymentRecord>,
        rendered: &doco_docker::RenderedProject,
        recreated: &BTreeSet<String>,
        rt: &dyn Runtime,
    ) -> Result<(), DeployError> {
        let reloads = plan::live_reloads(planned, record, recreated);
        if reloads.is_empty() {
            return Ok(());
        }
        let all = rt.containers().await?;
        let containers = all.get(project).map(Vec::as_slice).unwrap_or(&[]);
        for service in reloads {
            let Some(signal) = rendered
                .services
                .get(&service)
                .and_then(|s| s.reload_signal.as_deref())
            else {
                info!(%service, "files excluded from recreation changed; updated in place");
                continue;
            };
            for container in containers
                .iter()
                .filter(|c| c.service == service && c.state == doco_docker::ContainerState::Running)
            {
                info!(%service, signal, "files excluded from recreation changed; signalling");
                rt.signal(&container.id, signal).await?;
            }
        }
        Ok(())
    }

    /// Each rendered service as the plan sees it: its fingerprint (configuration plus the content of
    /// the repository files it uses), whether it must run, its replicas.
    fn plan_services(
        &self,
        ctx: &PollContext<'_>,
        rendered: &doco_docker::RenderedProject,
        live_inputs: &BTreeMap<String, Vec<LiveInput>>,
    ) -> BTreeMap<String, plan::RenderedService> {
        let (host_dir, host_name) = (
            self.paths.to_host(ctx.tree),
            self.paths.to_host(ctx.store.root()),
        );
        let tree = Tree {
            dir: ctx.tree,
            name: ctx.store.root(),
            host_dir: &host_dir,
            host_name: &host_name,
        };
        rendered
            .services
            .iter()
            .map(|(name, service)| {
                let live: Vec<PathBuf> = live_inputs
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|i| i.source.clone())
                    .collect();
                // Live inputs change in place: their content is not part of the fingerprint.
                let inputs: Vec<PathBuf> = service
                    .local_inputs
                    .iter()
                    .map(|p| self.paths.to_mount(p))
                    .filter(|p| !live.contains(p))
                    .collect();
                let planned = plan::RenderedService {
                    live_hash: (!live.is_empty()).then(|| crate::live::content_hash(&live, tree)),
                    fingerprint: service_fingerprint(&service.spec, &inputs, tree),
                    must_run: service.must_run(),
                    replicas: service.replicas,
                    healthcheck: service.has_healthcheck,
                    build: service.has_build,
                };
                (name.clone(), planned)
            })
            .collect()
    }

    /// `docker compose up` with the labels the plan chose: fresh ones for changed services, the
    /// recorded ones for the others. Records the deploy once the services run.
    async fn deploy(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        target: DeployTarget<'_>,
        plan: plan::DeployPlan,
    ) -> Result<Applied, DeployError> {
        let DeployTarget {
            project,
            planned,
            config_hash,
            mounts,
            live_inputs,
            jobs,
            rt,
        } = target;
        info!(reason = %plan.reason, mode = ?ctx.mode, "deploying");
        let name = &deployment.config.name;
        let fresh = self.fresh_labels(ctx, deployment, planned, config_hash);
        let mut labels = plan.kept_labels;
        for service in &plan.changed {
            let mut own = fresh.clone();
            if let Some(resources) = live_resources(live_inputs.get(service), ctx.tree) {
                own.insert(key::DEPLOYMENT_LIVE_RESOURCES.to_string(), resources);
            }
            labels.insert(service.clone(), own);
        }
        let to_build = plan::services_to_build(planned, &plan.changed);
        if !to_build.is_empty() {
            let build = &deployment.config.build;
            let options = BuildOptions {
                services: to_build,
                no_cache: build.no_cache,
                pull: plan::pull_policy(ctx.mode, build.force_image_pull) == PullPolicy::Always,
                quiet: build.quiet,
                args: build.args.clone(),
                timeout: Duration::from_secs(deployment.config.timeout.max(1) + 600),
            };
            info!(services = ?options.services, "building the changed services");
            rt.build(project, &options).await?;
        }
        let override_path = self.override_path(name);
        write_override(&override_path, &labels, mounts)?;
        let options = UpOptions {
            remove_orphans: plan.remove_orphans,
            force_recreate: plan.force_recreate,
            pull: plan.pull,
            timeout: Duration::from_secs(deployment.config.timeout.max(1) + 120),
            services: Vec::new(),
        };
        let own = self.registry.begin_project(name);
        let all: Vec<String> = planned.keys().cloned().collect();
        let labels_file = self.paths.to_host(&override_path);
        let up = crate::jobs::deploy::up(rt, project, &labels_file, &options, &all, jobs).await;
        drop(own);
        if let Err(e) = up {
            if !plan::deploys_service_by_service(&plan.changed) {
                return Err(e.into());
            }
            warn!(error = %e, "the deploy failed as a whole; deploying the changed services one by one");
            let up = UpCall {
                labels: &labels,
                labels_file: &labels_file,
                options: &options,
            };
            return self
                .deploy_one_by_one(ctx, deployment, target, &plan.changed, up)
                .await;
        }
        let hashes = self
            .wait_ready(name, planned, deployment.config.timeout, rt)
            .await?;
        if plan::prunes_images(ctx.mode, deployment.config.prune_images) {
            self.prune_images(name, &plan.images_before, rt).await?;
        }
        info!(changed = ?plan.changed, "deployed");
        let record = new_record(ctx, deployment, config_hash, planned, &labels, &hashes);
        Ok(Applied::new(
            DeploymentOutcome::Deployed(plan.changed),
            RecordChange::Store(Box::new(record)),
        ))
    }

    /// When one `up` of every changed service fails (one broken service fails it before anything
    /// starts), each changed service is brought up alone: those that come up are recorded at the new
    /// commit, the others keep their last good record, and the deployment fails naming them, so its
    /// change is retried with backoff.
    async fn deploy_one_by_one(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        target: DeployTarget<'_>,
        changed: &BTreeSet<String>,
        up: UpCall<'_>,
    ) -> Result<Applied, DeployError> {
        let name = &deployment.config.name;
        let mut deployed = BTreeSet::new();
        let mut failed = BTreeMap::new();
        for service in changed {
            let only = UpOptions {
                services: vec![service.clone()],
                remove_orphans: false,
                ..up.options.clone()
            };
            let own = self.registry.begin_project(name);
            let all = vec![service.clone()];
            let result = crate::jobs::deploy::up(
                target.rt,
                target.project,
                up.labels_file,
                &only,
                &all,
                target.jobs,
            )
            .await;
            drop(own);
            match result {
                Ok(()) => {
                    deployed.insert(service.clone());
                }
                Err(e) => {
                    failed.insert(service.clone(), e.to_string());
                }
            }
        }
        let ready: BTreeMap<String, plan::RenderedService> = target
            .planned
            .iter()
            .filter(|(service, _)| !failed.contains_key(*service))
            .map(|(service, planned)| (service.clone(), planned.clone()))
            .collect();
        let hashes = self
            .wait_ready(name, &ready, deployment.config.timeout, target.rt)
            .await?;
        let previous = self.recorded(&ctx.key, name).await;
        let record = partial_record(
            new_record(
                ctx,
                deployment,
                target.config_hash,
                target.planned,
                up.labels,
                &hashes,
            ),
            previous.as_ref(),
            &failed,
        );
        warn!(
            ?deployed,
            ?failed,
            "deployed the changed services that could be"
        );
        Ok(Applied::new(
            DeploymentOutcome::PartlyDeployed { deployed, failed },
            RecordChange::Store(Box::new(record)),
        ))
    }

    async fn recorded(&self, key: &str, name: &str) -> Option<DeploymentRecord> {
        self.state
            .lock()
            .await
            .repositories
            .get(key)
            .and_then(|r| r.deployments.get(name))
            .cloned()
    }

    /// upstream's labels for a service deployed now, from this commit and configuration.
    fn fresh_labels(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        planned: &BTreeMap<String, plan::RenderedService>,
        config_hash: &str,
    ) -> BTreeMap<String, String> {
        let fingerprints = planned
            .iter()
            .map(|(name, service)| (name.clone(), service.fingerprint.clone()))
            .collect();
        let working_dir = self.paths.to_host(&deployment.working_dir);
        let auto_discovery =
            serde_json::to_string(&deployment.config.auto_discovery).unwrap_or_default();
        fresh_labels(&LabelContext {
            deployment: &deployment.config.name,
            commit: ctx.commit,
            reference: deployment
                .config
                .reference
                .as_deref()
                .unwrap_or(&ctx.poll.reference),
            working_dir: &working_dir.to_string_lossy(),
            target: &ctx.poll.target,
            config_hash,
            compose_hash: &project_hash(&fingerprints),
            source_name: &doco_git::full_name(&ctx.poll.url),
            source_url: ctx.url,
            auto_discovery_config: &auto_discovery,
            auto_discovered: deployment.auto_discovered,
            timestamp: &humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            trigger: match ctx.kind {
                Trigger::Poll => "poll",
                Trigger::Webhook => ctx.commit,
            },
        })
    }

    /// Waits until every service that must run has a running container and, where it has a health
    /// check, a healthy one ([`plan::not_ready`]); returns compose's config hash per service.
    async fn wait_ready(
        &self,
        project: &str,
        services: &BTreeMap<String, plan::RenderedService>,
        timeout_secs: u64,
        rt: &dyn Runtime,
    ) -> Result<BTreeMap<String, String>, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(timeout_secs);
        loop {
            let all = rt.containers().await?;
            let containers = all.get(project).map(Vec::as_slice).unwrap_or(&[]);
            let waiting = plan::not_ready(services, containers);
            match waiting {
                None => {
                    return Ok(containers
                        .iter()
                        .filter(|c| !c.oneoff)
                        .filter_map(|c| c.config_hash.clone().map(|h| (c.service.clone(), h)))
                        .collect());
                }
                Some(NotReady::NotRunning(service)) if Instant::now() >= deadline => {
                    return Err(DeployError::NotRunning {
                        service,
                        seconds: timeout_secs,
                    });
                }
                Some(NotReady::NotHealthy(service, id)) if Instant::now() >= deadline => {
                    let output = rt.last_health_output(&id).await?;
                    return Err(DeployError::NotHealthy {
                        service,
                        seconds: timeout_secs,
                        output: output.unwrap_or_else(|| "(no health check output yet)".into()),
                    });
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `prune_images`: removes the images the deployment's containers used before this deploy that
    /// no container (of any stack) uses now.
    async fn prune_images(
        &self,
        project: &str,
        before: &BTreeSet<String>,
        rt: &dyn Runtime,
    ) -> Result<(), DeployError> {
        let all = rt.containers().await?;
        let now: BTreeSet<&String> = all
            .get(project)
            .into_iter()
            .flatten()
            .map(|c| &c.image_id)
            .collect();
        for image in before
            .iter()
            .filter(|image| !image.is_empty() && !now.contains(image))
        {
            rt.remove_unused_image(image).await?;
        }
        Ok(())
    }

    /// The label override file of compose project `name`.
    pub(super) fn override_path(&self, name: &str) -> PathBuf {
        self.paths
            .internal_dir()
            .join("overrides")
            .join(format!("{name}.labels.yml"))
    }

    pub(super) fn compose_project(&self, deployment: &ResolvedDeployment) -> ComposeProject {
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
}

/// upstream's `cd.doco.deployment.live_resources`: the repository paths a service mounts from its
/// live copies, slash-separated, sorted, joined with `,`; `None` without any.
fn live_resources(inputs: Option<&Vec<LiveInput>>, tree: &Path) -> Option<String> {
    let paths: BTreeSet<String> = inputs?
        .iter()
        .filter_map(|input| input.source.strip_prefix(tree).ok())
        .map(|rel| rel.to_string_lossy().into_owned())
        .collect();
    (!paths.is_empty()).then(|| paths.into_iter().collect::<Vec<_>>().join(","))
}

/// What the state file records for a deployment of `planned` with these labels and compose hashes.
fn new_record(
    ctx: &PollContext<'_>,
    deployment: &ResolvedDeployment,
    config_hash: &str,
    planned: &BTreeMap<String, plan::RenderedService>,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    hashes: &BTreeMap<String, String>,
) -> DeploymentRecord {
    let services = planned
        .iter()
        .map(|(name, service)| {
            let record = ServiceRecord {
                live_hash: service.live_hash.clone(),
                fingerprint: service.fingerprint.clone(),
                labels: labels.get(name).cloned().unwrap_or_default(),
                must_run: service.must_run,
                replicas: service.replicas,
                compose_hash: hashes.get(name).cloned(),
            };
            (name.clone(), record)
        })
        .collect();
    DeploymentRecord {
        project: deployment.config.name.clone(),
        commit: ctx.commit.to_string(),
        config_hash: config_hash.to_string(),
        deployed_unix: unix_now(),
        reconciliation: Some(deployment.config.reconciliation.clone()),
        context: deployment.config.context.clone(),
        origin: ctx.origin.cloned(),
        services,
    }
}

/// The deployment's unhealthy containers, when it subscribed to `unhealthy` (the default), as if
/// their health event had just arrived.
fn unhealthy(deployment: &ResolvedDeployment, containers: &[ContainerInfo]) -> Vec<ContainerEvent> {
    let settings = &deployment.config.reconciliation;
    if !settings.enabled || !settings.events.iter().any(|e| e == "unhealthy") {
        return Vec::new();
    }
    containers
        .iter()
        .filter(|c| c.health == doco_docker::Health::Unhealthy && !c.oneoff)
        .map(|container| ContainerEvent {
            action: "health_status: unhealthy".to_string(),
            id: container.id.clone(),
            project: Some(container.project.clone()),
            service: Some(container.service.clone()),
            time: unix_now() as i64,
            time_nano: crate::registry::unix_nanos(),
        })
        .collect()
}

/// The record after a service-by-service deploy: the services that came up at the new commit, the
/// ones that failed as they were last deployed (or absent). The commit stays the last good one, so
/// the next look still sees a change to retry.
fn partial_record(
    mut record: DeploymentRecord,
    previous: Option<&DeploymentRecord>,
    failed: &BTreeMap<String, String>,
) -> DeploymentRecord {
    for service in failed.keys() {
        match previous.and_then(|p| p.services.get(service)) {
            Some(old) => {
                record.services.insert(service.clone(), old.clone());
            }
            None => {
                record.services.remove(service);
            }
        }
    }
    record.commit = previous.map(|p| p.commit.clone()).unwrap_or_default();
    record
}

/// Refuses deploy-config features that this build cannot honour, rather than ignoring them: the
/// deployment fails naming the key, and nothing of it is deployed.
pub(super) fn check_supported(deployment: &ResolvedDeployment) -> Result<(), DeployError> {
    let config = &deployment.config;
    let refuse = |key: &str, why: &str| {
        Err(DeployError::Unsupported(format!(
            "deployment {} sets {key}, which is not supported by this implementation ({why}); nothing was deployed",
            config.name
        )))
    };
    if config.version != "doco.v1" {
        return refuse(
            "version",
            "it is the layout version of `oci` sources, which are not supported",
        );
    }
    if !config.oci.is_null() {
        return refuse(
            "oci",
            "it is the trust policy of `oci` sources, which are not supported",
        );
    }
    if !config.external_secrets.is_empty() {
        return refuse(
            "external_secrets",
            "no secret provider is built; use SOPS-encrypted env files",
        );
    }
    if config.swarm.config_retention.is_some() {
        return refuse(
            "swarm.config_retention",
            "Swarm stack deploys are not built",
        );
    }
    if config.swarm.secret_retention.is_some() {
        return refuse(
            "swarm.secret_retention",
            "Swarm stack deploys are not built",
        );
    }
    Ok(())
}

pub(super) fn write_override(
    path: &Path,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    mounts: &MountOverride,
) -> Result<(), DeployError> {
    let wrap = |source| DeployError::Override {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(wrap)?;
    }
    doco_docker::write_override(path, labels, mounts).map_err(wrap)
}
