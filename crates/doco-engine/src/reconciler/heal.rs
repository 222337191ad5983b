//! The first step of every reconcile: enforcing each deployment's last known good state, the last
//! deploy that succeeded, whatever the newest commit says and whether Git answers or not.
//!
//! Stopped containers of recorded services are started (same container); services with no container
//! left as deployed are recreated from the export of the recorded commit (and the exports each
//! service stayed pinned to), with the recorded labels, one service at a time with compose's
//! `--no-deps`, so a sibling whose new commit cannot be pulled or built never keeps them down. A
//! newer commit that was fetched and failed never touches those files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use doco_config::ResolvedDeployment;

use crate::paths::SourceDir;
use crate::state::Origin;
use crate::store;

use doco_config::PollConfig;
use doco_docker::ContainerInfo;
use tracing::info;

use super::deploy::RecordedImages;
use super::report::{Entry, RecordChange, Step};
use super::{DeployError, DeploymentOutcome, Reconciler};
use crate::adapters::Runtime;
use crate::plan::{self, HealPlan};
use crate::registry::EventTarget;
use crate::state::{DeploymentRecord, RepositoryState};

/// Per compose project, the services engine events asked to bring back whatever their restart
/// policy (a subscribed `die` or `destroy`).
pub(super) type Forced = BTreeMap<String, BTreeSet<String>>;

/// The engine's containers per compose project.
pub(super) type Observed = BTreeMap<String, Vec<ContainerInfo>>;

/// How the heal step looks at the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// Through the view the engine's events keep (a poll: the quiet path asks the engine nothing).
    View,
    /// Asking the engine (a run started by an event, which the view may not have seen yet).
    Fresh,
}

/// What the heal step did (an entry per recorded deployment), and the engine's view when it
/// changed nothing (the change step reuses it, so a quiet poll asks the engine once).
pub(super) struct HealReport {
    pub entries: Vec<Entry>,
    pub untouched: Option<Observed>,
}

impl Reconciler {
    /// Enforces the last known good state of every deployment recorded for `repo_name` (each of its
    /// references). `held` is the source directory whose lock the caller holds already.
    pub(super) async fn heal_all(
        &self,
        poll: &PollConfig,
        repo_name: &str,
        held: Option<&Path>,
        forced: &Forced,
        look: Look,
    ) -> Result<HealReport, doco_docker::DockerError> {
        let prefix = format!("{repo_name}#");
        let repositories: Vec<(String, RepositoryState)> = self
            .state
            .lock()
            .await
            .repositories
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, repo)| (key.clone(), repo.clone()))
            .collect();
        if repositories.iter().all(|(_, r)| r.deployments.is_empty()) {
            return Ok(HealReport {
                entries: Vec::new(),
                untouched: None,
            });
        }
        let observed = match look {
            Look::View => self.runtime.observe().await?,
            Look::Fresh => self.runtime.containers().await?,
        };
        let mut entries = Vec::new();
        let mut acted = false;
        let store = self.paths.source_dir(repo_name);
        let lock = self.source_lock(&store);
        let _held = match held {
            Some(path) if path == store.root() => None,
            _ => Some(lock.lock().await),
        };
        for (key, repository) in repositories {
            for record in repository.deployments.values() {
                let at = crate::plan::short(&record.commit);
                let mut entry = Entry::new(&key, &record.project, at, Step::Heal);
                entry.target = record
                    .reconciliation
                    .clone()
                    .map(|reconciliation| EventTarget {
                        poll: poll.clone(),
                        reconciliation,
                    });
                let (rt, on_its_engine) = match self.engine_of(record).await {
                    Ok(found) => found,
                    Err(e) => {
                        entry.outcome = Err(e);
                        entries.push(entry);
                        continue;
                    }
                };
                let empty = Vec::new();
                let containers = on_its_engine
                    .as_ref()
                    .unwrap_or(&observed)
                    .get(&record.project)
                    .unwrap_or(&empty);
                let none = BTreeSet::new();
                let wanted = forced.get(&record.project).unwrap_or(&none);
                // Services a job run holds stopped, and the jobs themselves (also with the
                // scheduler off), are the scheduler's.
                let mut leave = self.registry.left_alone(&record.project);
                leave.extend(
                    containers
                        .iter()
                        .filter(|c| {
                            matches!(
                                crate::jobs::config::parse(&c.service, &c.labels),
                                Ok(Some(_))
                            )
                        })
                        .map(|c| c.service.clone()),
                );
                let plan = plan::heal_plan(record, containers, wanted, &leave);
                if !plan.is_empty() {
                    acted = true;
                    let started = tokio::time::Instant::now();
                    let rt = rt.as_ref();
                    match self.heal_one(poll, &repository, record, plan, rt).await {
                        Ok((outcome, hashes)) => {
                            entry.outcome = Ok(outcome);
                            entry.record = hashes.map_or(RecordChange::Keep, RecordChange::Hashes);
                        }
                        Err(e) => entry.outcome = Err(e),
                    }
                    entry.elapsed = started.elapsed();
                }
                entries.push(entry);
            }
        }
        let untouched = (!acted).then_some(observed);
        Ok(HealReport { entries, untouched })
    }

    /// The engine of `record`'s context and, for a context other than the default, what runs on it.
    async fn engine_of(
        &self,
        record: &DeploymentRecord,
    ) -> Result<(std::sync::Arc<dyn Runtime>, Option<Observed>), DeployError> {
        let rt = self.runtime_for(&record.context)?;
        if plan::is_default_context(&record.context) {
            return Ok((rt, None));
        }
        let observed = rt.containers().await?;
        Ok((rt, Some(observed)))
    }

    /// Carries out one deployment's heal; returns the outcome and, when services were recreated,
    /// their new compose hashes.
    async fn heal_one(
        &self,
        poll: &PollConfig,
        repository: &RepositoryState,
        record: &DeploymentRecord,
        plan: HealPlan,
        rt: &dyn Runtime,
    ) -> Result<(DeploymentOutcome, Option<BTreeMap<String, String>>), DeployError> {
        let project = &record.project;
        if !plan.start.is_empty() {
            info!(%project, containers = plan.start.len(), "starting stopped containers of the last known good state");
            for id in &plan.start {
                let _own = self.registry.begin_container(id);
                rt.start(id).await?;
            }
        }
        let mut hashes = None;
        if !plan.recreate.is_empty() {
            info!(%project, services = ?plan.recreate, commit = %crate::plan::short(&record.commit),
                "recreating services as last deployed");
            hashes = Some(
                self.recreate(poll, repository, record, &plan.recreate, rt)
                    .await?,
            );
        }
        let outcome = DeploymentOutcome::Healed {
            started: plan.start.len(),
            recreated: plan.recreate,
        };
        Ok((outcome, hashes))
    }

    /// `docker compose up --no-deps` of `services` from the recorded commit's files with the
    /// recorded labels; returns the new containers' compose hashes.
    async fn recreate(
        &self,
        poll: &PollConfig,
        repository: &RepositoryState,
        record: &DeploymentRecord,
        services: &BTreeSet<String>,
        rt: &dyn Runtime,
    ) -> Result<BTreeMap<String, String>, DeployError> {
        let (deployment, store) = match &record.origin {
            None => self.recorded_here(poll, repository, record).await?,
            Some(origin) => {
                self.recorded_elsewhere(poll, repository, record, origin)
                    .await?
            }
        };
        // The live copies keep their current content.
        self.up_as_recorded(
            &deployment,
            &store,
            record,
            services,
            RecordedImages::Present,
            rt,
        )
        .await?;
        let observed = rt.containers().await?;
        let containers = observed.get(&record.project).cloned().unwrap_or_default();
        Ok(compose_hashes(services, &containers))
    }

    /// A deployment of the polled repository as its recorded commit describes it, and that
    /// repository's store.
    async fn recorded_here(
        &self,
        poll: &PollConfig,
        repository: &RepositoryState,
        record: &DeploymentRecord,
    ) -> Result<(ResolvedDeployment, SourceDir), DeployError> {
        let store = self.paths.source_dir(&doco_git::repo_name(&poll.url));
        let tree = self
            .good_tree(poll, &store, &repository.reference, &record.commit)
            .await?;
        let resolved = self.described_at(poll, repository, &tree)?;
        let deployment = resolved
            .into_iter()
            .find(|d| d.config.name == record.project)
            .ok_or_else(|| not_described(record))?;
        Ok((deployment, store))
    }

    /// A `repository_url` deployment as recorded: described by the polled repository at the commit
    /// that configured it, its files from the other repository's recorded commit.
    async fn recorded_elsewhere(
        &self,
        poll: &PollConfig,
        repository: &RepositoryState,
        record: &DeploymentRecord,
        origin: &Origin,
    ) -> Result<(ResolvedDeployment, SourceDir), DeployError> {
        let here = self.paths.source_dir(&doco_git::repo_name(&poll.url));
        let local = self
            .good_tree(poll, &here, &repository.reference, &origin.config_commit)
            .await?;
        let other = PollConfig {
            url: origin.repository_url.clone(),
            ..poll.clone()
        };
        let store = self.paths.source_dir(&doco_git::repo_name(&other.url));
        let lock = self.source_lock(&store);
        let _held = tokio::time::timeout(std::time::Duration::from_secs(120), lock.lock())
            .await
            .map_err(|_| DeployError::Repository {
                url: origin.repository_url.clone(),
                detail: "its store stayed busy for 2 minutes".into(),
            })?;
        let tree = self
            .good_tree(&other, &store, &repository.reference, &record.commit)
            .await?;
        let deployment = self
            .described_at(poll, repository, &local)?
            .into_iter()
            .filter(|d| d.external_repository.is_some())
            .flat_map(|d| doco_config::resolve_external(d.config, &tree, &local, d.source_file))
            .filter_map(Result::ok)
            .find(|d| d.config.name == record.project)
            .ok_or_else(|| not_described(record))?;
        Ok((deployment, store))
    }

    /// The deployments `poll` describes in `tree` (those that resolve).
    fn described_at(
        &self,
        poll: &PollConfig,
        repository: &RepositoryState,
        tree: &Path,
    ) -> Result<Vec<ResolvedDeployment>, DeployError> {
        Ok(doco_config::resolve_deployments(
            &poll.deployments,
            tree,
            &self.config.deploy_config_base_dir,
            &repository.target,
            &repository.reference,
        )?
        .into_iter()
        .filter_map(Result::ok)
        .collect())
    }

    /// The export of `commit` in `store`, made from the mirror when it is missing (a source
    /// directory of the layout before the store is migrated first).
    async fn good_tree(
        &self,
        poll: &PollConfig,
        store: &SourceDir,
        reference: &str,
        commit: &str,
    ) -> Result<PathBuf, DeployError> {
        store::migrate(self.source.as_ref(), &poll.url, reference, store).await?;
        Ok(store::artifact(self.source.as_ref(), &poll.url, store, commit).await?)
    }
}

fn not_described(record: &DeploymentRecord) -> DeployError {
    DeployError::Unsupported(format!(
        "deployment {} is not described at its last good commit {}, so it cannot be recreated",
        record.project, record.commit
    ))
}

/// The compose hashes of `services`' containers (those a heal created), so the next look finds them
/// as deployed.
fn compose_hashes(
    services: &BTreeSet<String>,
    containers: &[ContainerInfo],
) -> BTreeMap<String, String> {
    containers
        .iter()
        .filter(|c| !c.oneoff && services.contains(&c.service))
        .filter_map(|c| c.config_hash.clone().map(|h| (c.service.clone(), h)))
        .collect()
}
