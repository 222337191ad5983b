//! Every deploy decision, as pure functions of data: what Git wants, what the engine shows, what was
//! deployed last. Nothing here touches Docker, Git or the disk, so the rules are tested as tables.
//!
//! A decision is made in up to two steps:
//! 1. [`quick_plan`] needs only the state record and one Engine API listing. When the commit and the
//!    deploy configuration are those of the last successful deploy, it answers without running
//!    compose: up to date, start these stopped containers, or "render and look closer".
//! 2. [`full_plan`] runs on compose's rendering of the project. It picks each service's labels: a
//!    service whose fingerprint did not change keeps the labels it was deployed with, byte for byte, so
//!    compose's config hash does not move and the container is left alone (or merely started).
//!
//! Offline (Git unreachable) is never a change: it forbids orphan removal, forced recreation and
//! image pulls; see [`Mode`].

use std::collections::{BTreeMap, BTreeSet};

use doco_config::DeployConfig;
use doco_docker::{ContainerInfo, ContainerState, PullPolicy};

use crate::reconciler::Trigger;

use crate::state::{DeploymentRecord, ServiceRecord};

/// Whether the desired state came from a fresh fetch or from the last known state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Git answered; normal GitOps.
    Online,
    /// Git could not be read; enforce the last known state without changing anything else.
    Offline,
}

/// Whether a reconcile in `mode` applies new commits after healing. Offline is never a change: only
/// the last known good state is enforced, never a fetched commit that did not deploy.
pub fn applies_changes(mode: Mode) -> bool {
    mode == Mode::Online
}

/// What the deployment should be, as far as the quick check needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired<'a> {
    /// The commit of the checkout.
    pub commit: &'a str,
    /// The hash of the resolved deploy configuration.
    pub config_hash: &'a str,
    /// The deploy config's `force_recreate`.
    pub force_recreate: bool,
}

/// Outcome of the quick check.
#[derive(Debug, Clone, PartialEq)]
pub enum QuickPlan {
    /// Everything runs as deployed: nothing to do.
    UpToDate,
    /// Only stopped containers of unchanged services: start them (same container ids).
    Start(Vec<String>),
    /// compose must render the project to decide; the reason is logged.
    Render(String),
}

/// The quick check: only the record and the engine's view.
pub fn quick_plan(
    desired: &Desired<'_>,
    record: Option<&DeploymentRecord>,
    observed: &[ContainerInfo],
    mode: Mode,
) -> QuickPlan {
    let Some(record) = record else {
        return QuickPlan::Render("first deploy".into());
    };
    if mode == Mode::Online && desired.force_recreate {
        return QuickPlan::Render("force_recreate is set".into());
    }
    if record.commit != desired.commit {
        return QuickPlan::Render(format!(
            "commit changed from {} to {}",
            short(&record.commit),
            short(desired.commit)
        ));
    }
    if record.config_hash != desired.config_hash {
        return QuickPlan::Render("deploy configuration changed".into());
    }
    match runtime_check(&record.services, observed, mode) {
        Runtime::Healthy => QuickPlan::UpToDate,
        Runtime::Stopped(ids) => QuickPlan::Start(ids),
        Runtime::Diverged(reason) => QuickPlan::Render(reason),
    }
}

/// What compose rendered for one service, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedService {
    /// Hash of its configuration and local inputs.
    pub fingerprint: String,
    /// Whether it must keep running.
    pub must_run: bool,
    /// How many containers it should have.
    pub replicas: u32,
    /// Whether it has a health check (a deploy then waits for it to pass).
    pub healthcheck: bool,
    /// Whether it has a `build` section (a deploy that changes it builds it first).
    pub build: bool,
    /// The content hash of its inputs excluded from recreation (`recreate.ignore`), if any.
    pub live_hash: Option<String>,
}

/// Why a deploy is still waiting for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// No container of it runs.
    NotRunning(String),
    /// Its container runs, but its health check has not passed (the container's id).
    NotHealthy(String, String),
}

/// upstream's `timeout` rule: a deploy is done when every service that must run has a running
/// container and, where it has a health check, a healthy one. The first service still waited for.
pub fn not_ready(
    services: &BTreeMap<String, RenderedService>,
    containers: &[ContainerInfo],
) -> Option<NotReady> {
    services
        .iter()
        .filter(|(_, service)| service.must_run && service.replicas > 0)
        .find_map(|(name, service)| {
            let running: Vec<&ContainerInfo> = containers
                .iter()
                .filter(|c| &c.service == name && !c.oneoff && c.state == ContainerState::Running)
                .collect();
            let Some(first) = running.first() else {
                return Some(NotReady::NotRunning(name.clone()));
            };
            let unhealthy = running
                .iter()
                .find(|c| c.health != doco_docker::Health::Healthy)
                .unwrap_or(first);
            (service.healthcheck && unhealthy.health != doco_docker::Health::Healthy)
                .then(|| NotReady::NotHealthy(name.clone(), unhealthy.id.clone()))
        })
}

/// The decision after rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum FullPlan {
    /// Nothing changed for this stack (another part of the repository did): record the new commit.
    UpToDate,
    /// Nothing changed, but stopped containers must be started.
    Start(Vec<String>),
    /// Run compose.
    Deploy(DeployPlan),
}

/// A deploy: services in `changed` get fresh labels; the others keep their recorded labels.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployPlan {
    /// Why, for the log.
    pub reason: String,
    /// Services that get fresh labels (and so are recreated by compose).
    pub changed: BTreeSet<String>,
    /// Recorded labels to reuse, for the services not in `changed`.
    pub kept_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Remove containers of services that are no longer described.
    pub remove_orphans: bool,
    /// Ask compose to recreate everything.
    pub force_recreate: bool,
    /// When compose pulls images.
    pub pull: PullPolicy,
    /// The images the stack's containers ran before this deploy: after it, those no container uses
    /// any more are pruned (`prune_images`).
    pub images_before: BTreeSet<String>,
}

/// Deploy-config switches the full plan honours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Switches {
    /// `remove_orphans` of the deploy config.
    pub remove_orphans: bool,
    /// `force_recreate` of the deploy config.
    pub force_recreate: bool,
    /// `force_image_pull` of the deploy config.
    pub force_image_pull: bool,
}

/// The full decision, once compose has rendered the project. `adoptable` holds, per service, labels
/// of running containers deployed from this commit: without a record they are reused, so a lost state
/// file does not recreate anything.
pub fn full_plan(
    rendered: &BTreeMap<String, RenderedService>,
    record: Option<&DeploymentRecord>,
    adoptable: &BTreeMap<String, BTreeMap<String, String>>,
    observed: &[ContainerInfo],
    switches: Switches,
    mode: Mode,
) -> FullPlan {
    let online = mode == Mode::Online;
    let force_recreate = online && switches.force_recreate;
    let remove_orphans = online && switches.remove_orphans;
    let empty = BTreeMap::new();
    let recorded = record.map(|r| &r.services).unwrap_or(&empty);

    let mut changed = BTreeSet::new();
    let mut kept_labels = BTreeMap::new();
    for (name, service) in rendered {
        match (record, recorded.get(name), adoptable.get(name)) {
            (_, Some(previous), _)
                if !force_recreate && previous.fingerprint == service.fingerprint =>
            {
                kept_labels.insert(name.clone(), previous.labels.clone());
            }
            (None, _, Some(labels)) if !force_recreate => {
                kept_labels.insert(name.clone(), labels.clone());
            }
            _ => {
                changed.insert(name.clone());
            }
        }
    }
    let deploy = |reason: String| {
        FullPlan::Deploy(DeployPlan {
            reason,
            changed: changed.clone(),
            kept_labels: kept_labels.clone(),
            remove_orphans,
            force_recreate,
            pull: pull_policy(mode, switches.force_image_pull),
            images_before: observed.iter().map(|c| c.image_id.clone()).collect(),
        })
    };
    if record.is_none() {
        return deploy(if kept_labels.is_empty() {
            "first deploy".into()
        } else {
            "no record in the state file; adopting the running deployment".into()
        });
    }
    if force_recreate {
        return deploy("force_recreate is set".into());
    }
    if !changed.is_empty() {
        let names: Vec<_> = changed.iter().map(String::as_str).collect();
        return deploy(format!("changed services: {}", names.join(", ")));
    }
    if remove_orphans && recorded.keys().any(|name| !rendered.contains_key(name)) {
        return deploy("services were removed from the compose files".into());
    }
    let expected: BTreeMap<String, ServiceRecord> = rendered
        .iter()
        .filter_map(|(name, service)| {
            recorded.get(name).map(|previous| {
                let mut expected = previous.clone();
                expected.must_run = service.must_run;
                expected.replicas = service.replicas;
                (name.clone(), expected)
            })
        })
        .collect();
    match runtime_check(&expected, observed, mode) {
        Runtime::Healthy => FullPlan::UpToDate,
        Runtime::Stopped(ids) => FullPlan::Start(ids),
        Runtime::Diverged(reason) => deploy(reason),
    }
}

/// When compose pulls images: always with `force_image_pull`, online only; otherwise only images
/// that are not present. Offline never pulls an image that is present.
pub fn pull_policy(mode: Mode, force_image_pull: bool) -> PullPolicy {
    if mode == Mode::Online && force_image_pull {
        PullPolicy::Always
    } else {
        PullPolicy::Missing
    }
}

/// The services whose inputs excluded from recreation changed since `record` and that this deploy
/// does not recreate: they get their `recreate.ignore.signal` instead.
pub fn live_reloads(
    rendered: &BTreeMap<String, RenderedService>,
    record: Option<&DeploymentRecord>,
    recreated: &BTreeSet<String>,
) -> BTreeSet<String> {
    let Some(record) = record else {
        return BTreeSet::new();
    };
    rendered
        .iter()
        .filter(|(name, service)| {
            service.live_hash.is_some()
                && !recreated.contains(*name)
                && record
                    .services
                    .get(*name)
                    .is_some_and(|recorded| recorded.live_hash != service.live_hash)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The services a deploy builds before `up`: the changed ones that have a `build` section.
pub fn services_to_build(
    rendered: &BTreeMap<String, RenderedService>,
    changed: &BTreeSet<String>,
) -> Vec<String> {
    changed
        .iter()
        .filter(|name| rendered.get(*name).is_some_and(|s| s.build))
        .cloned()
        .collect()
}

/// Whether a deploy whose single `up` failed is retried service by service: when it changes more
/// than one service (one broken service must not hold the others back).
pub fn deploys_service_by_service(changed: &BTreeSet<String>) -> bool {
    changed.len() > 1
}

/// Whether a deploy config's `context` is the daemon's own engine (empty or `default`).
pub fn is_default_context(context: &str) -> bool {
    let context = context.trim();
    context.is_empty() || context == doco_docker::DEFAULT_CONTEXT
}

/// `prune_images`: after a successful deploy, online only (offline is never a change).
pub fn prunes_images(mode: Mode, prune_images: bool) -> bool {
    mode == Mode::Online && prune_images
}

/// Why a deployment is not applied by this run at all, if it is not: a webhook for a reference its
/// `webhook_filter` does not accept.
pub fn skip(trigger: Trigger, config: &DeployConfig, reference: &str) -> Option<String> {
    (trigger == Trigger::Webhook && !config.accepts_webhook_ref(reference)).then(|| {
        format!(
            "the webhook's reference {reference} does not match webhook_filter {}",
            config.webhook_filter
        )
    })
}

/// Whether a destroy removes the repository's checkout afterwards (`destroy.remove_dir`, upstream's
/// default): only when it is enabled; the caller makes sure no other deployment uses the checkout.
pub fn destroy_removes_dir(destroy: &doco_config::DestroyConfig) -> bool {
    destroy.enabled && destroy.remove_dir
}

/// What `destroy` does with a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyPlan {
    /// Nothing while the repository cannot be read: an outage is not a reason to remove anything.
    NotOffline,
    /// The stack is already gone: only its record is dropped.
    NothingLeft,
    /// Its containers were deployed from another repository (named here): refused.
    NotOurs(String),
    /// Remove it.
    Remove,
}

/// upstream's `destroy` ownership rule: a stack is removed only when every container carries this
/// repository's `cd.doco.source.name` (`ours`), and never offline.
pub fn destroy_plan(mode: Mode, containers: &[ContainerInfo], ours: &str) -> DestroyPlan {
    if mode == Mode::Offline {
        return DestroyPlan::NotOffline;
    }
    if containers.is_empty() {
        return DestroyPlan::NothingLeft;
    }
    let foreign = containers.iter().find_map(|c| {
        let owner = c.labels.get(doco_docker::labels::SOURCE_NAME);
        (owner.map(String::as_str) != Some(ours)).then(|| {
            owner
                .cloned()
                .unwrap_or_else(|| "nobody (no doco-cd label)".into())
        })
    });
    match foreign {
        Some(owner) => DestroyPlan::NotOurs(owner),
        None => DestroyPlan::Remove,
    }
}

/// What enforcing a deployment's last known good state takes: the first step of every reconcile,
/// online or offline, whatever the newest commit says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealPlan {
    /// Stopped containers of recorded services, as deployed: start them (same container ids).
    pub start: Vec<String>,
    /// Services with no container left as deployed (removed, dead, or replaced by a container that
    /// does not run): recreate them exactly as last deployed.
    pub recreate: BTreeSet<String>,
}

impl HealPlan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.recreate.is_empty()
    }
}

/// The heal step: what brings `record` (the last successful deploy) back, given what the engine
/// shows. A service must run when its restart policy keeps it running, or when a subscribed `die` or
/// `destroy` event named it (`forced`), whatever its policy. A container counts as the deployed one
/// when compose's config hash is the recorded one; a running container with another hash is left to
/// the change step (a deploy in progress, or a change behind doco-cd's back), never stopped here.
/// Services in `leave` are neither started nor recreated, whatever their policy or an event says:
/// those a scheduled job holds stopped for its run (`stop_services`) and the scheduled jobs
/// themselves, which run only when their schedule fires.
pub fn heal_plan(
    record: &DeploymentRecord,
    observed: &[ContainerInfo],
    forced: &BTreeSet<String>,
    leave: &BTreeSet<String>,
) -> HealPlan {
    let mut plan = HealPlan::default();
    for (name, service) in &record.services {
        if leave.contains(name) {
            continue;
        }
        let wanted = (service.must_run && service.replicas > 0) || forced.contains(name);
        if !wanted {
            continue;
        }
        let containers: Vec<&ContainerInfo> = observed
            .iter()
            .filter(|c| !c.oneoff && &c.service == name)
            .collect();
        if containers.iter().any(|c| is_up(c.state)) {
            continue;
        }
        let deployed: Vec<String> = containers
            .iter()
            .filter(|c| c.state != ContainerState::Dead)
            .filter(|c| match &service.compose_hash {
                Some(expected) => c.config_hash.as_deref() == Some(expected.as_str()),
                None => true,
            })
            .map(|c| c.id.clone())
            .collect();
        if deployed.len() >= service.replicas.max(1) as usize {
            plan.start.extend(deployed);
        } else {
            plan.recreate.insert(name.clone());
        }
    }
    plan
}

/// A stack to remove because its auto-discovered directory is gone (`auto_discovery.delete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obsolete {
    /// The compose project.
    pub project: String,
    /// `auto_discovery.remove_volumes` of its deploy.
    pub remove_volumes: bool,
    /// `auto_discovery.remove_images` of its deploy.
    pub remove_images: bool,
}

/// upstream's clean-up of auto-discovered stacks: running stacks that this repository (by repository
/// name, target and reference) deployed through auto-discovery with `delete: true`, and that are no
/// longer among `present` (the deployments the repository describes now). Nothing offline; and the
/// caller asks only when every deployment of the repository could be named: an unreadable
/// repository never removes anything.
pub fn obsolete_auto_discovered(
    mode: Mode,
    observed: &BTreeMap<String, Vec<ContainerInfo>>,
    present: &BTreeSet<String>,
    repo_name: &str,
    target: &str,
    reference: &str,
) -> Vec<Obsolete> {
    use doco_docker::labels as key;
    if mode != Mode::Online {
        return Vec::new();
    }
    observed
        .iter()
        .filter(|(project, _)| !present.contains(*project))
        .filter_map(|(project, containers)| {
            let labels = &containers.iter().find(|c| !c.oneoff)?.labels;
            let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
            let ours = get(key::MANAGER) == key::MANAGER_VALUE
                && get(key::DEPLOYMENT_AUTO_DISCOVERY) == "true"
                && doco_git::repo_name(get(key::SOURCE_URL)) == repo_name
                && get(key::DEPLOYMENT_CONFIG_TARGET) == target
                && doco_config::same_reference(get(key::DEPLOYMENT_TARGET_REF), reference);
            let settings = doco_config::AutoDiscoveryConfig::from_label(get(
                key::DEPLOYMENT_AUTO_DISCOVERY_CONFIG,
            ));
            (ours && settings.delete).then(|| Obsolete {
                project: project.clone(),
                remove_volumes: settings.remove_volumes,
                remove_images: settings.remove_images,
            })
        })
        .collect()
}

enum Runtime {
    Healthy,
    Stopped(Vec<String>),
    Diverged(String),
}

/// upstream's mismatch rules: services with restart `always`/`unless-stopped` must have their
/// replicas running; others (jobs) may be stopped. A container whose compose config hash differs from
/// the recorded one was changed behind doco-cd's back. Online, containers of services no longer
/// described are a divergence too.
fn runtime_check(
    services: &BTreeMap<String, ServiceRecord>,
    observed: &[ContainerInfo],
    mode: Mode,
) -> Runtime {
    let mut stopped = Vec::new();
    for (name, service) in services {
        let containers: Vec<&ContainerInfo> = observed
            .iter()
            .filter(|c| !c.oneoff && &c.service == name)
            .collect();
        if let Some(expected) = &service.compose_hash
            && let Some(c) = containers
                .iter()
                .find(|c| c.config_hash.as_deref().is_some_and(|h| h != expected))
        {
            return Runtime::Diverged(format!(
                "container {} of service {name} no longer matches the deployed configuration",
                c.name
            ));
        }
        if !service.must_run || service.replicas == 0 {
            continue;
        }
        if containers.is_empty() {
            return Runtime::Diverged(format!("service {name} is not deployed"));
        }
        if containers.iter().any(|c| c.state == ContainerState::Dead) {
            return Runtime::Diverged(format!("a container of service {name} is dead"));
        }
        let running = containers.iter().filter(|c| is_up(c.state)).count();
        let startable: Vec<String> = containers
            .iter()
            .filter(|c| !is_up(c.state))
            .map(|c| c.id.clone())
            .collect();
        if (running + startable.len()) < service.replicas as usize {
            return Runtime::Diverged(format!(
                "service {name} has {} of {} replicas",
                running + startable.len(),
                service.replicas
            ));
        }
        stopped.extend(startable);
    }
    if mode == Mode::Online
        && let Some(extra) = observed
            .iter()
            .find(|c| !c.oneoff && !services.contains_key(&c.service))
    {
        return Runtime::Diverged(format!(
            "container {} belongs to service {}, which is not described",
            extra.name, extra.service
        ));
    }
    if stopped.is_empty() {
        Runtime::Healthy
    } else {
        Runtime::Stopped(stopped)
    }
}

fn is_up(state: ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    )
}

/// The first seven characters of a commit, for messages.
pub(crate) fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

// ---- force_image_pull: moved tags at an unchanged commit ----------------------------------------

/// At most this many distinct images of one deployment are looked up in their registries per poll
/// (one manifest HEAD request each). A deployment with more images is checked through a window
/// that moves on by this many at each check ([`digest_lookups`]), so every image is looked at
/// within a few polls.
pub const MAX_DIGEST_LOOKUPS: usize = 16;

/// Whether a deployment at an unchanged commit asks the registries whether its tags moved:
/// `force_image_pull`, online only (offline never pulls an image that is present).
pub fn checks_moved_tags(mode: Mode, force_image_pull: bool) -> bool {
    mode == Mode::Online && force_image_pull
}

/// The image one container of a service runs, as the engine shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedImage {
    /// The container's service.
    pub service: String,
    /// The reference the container was created from (`registry/app:latest`).
    pub reference: String,
    /// `RepoDigests` of the image it runs (`registry/app@sha256:…`).
    pub repo_digests: Vec<String>,
}

impl DeployedImage {
    /// The digests the local image has in the reference's own repository; empty when the
    /// reference is pinned by digest, is not a registry reference, or the image never came from
    /// (or went to) that repository, as with a locally built image: such an image cannot move.
    fn local_digests(&self) -> Vec<&str> {
        let Some(wanted) = doco_docker::ImageRef::parse(&self.reference) else {
            return Vec::new();
        };
        if wanted.digest.is_some() {
            return Vec::new();
        }
        self.repo_digests
            .iter()
            .filter_map(|entry| entry.split_once('@'))
            .filter(|(name, _)| {
                doco_docker::ImageRef::parse(name)
                    .is_some_and(|n| n.repository() == wanted.repository())
            })
            .map(|(_, digest)| digest)
            .collect()
    }
}

/// The references to look up at check number `round`: of the distinct references of `images`
/// that can move, in order, the window of at most `cap` starting at `round * cap` (wrapping
/// around); and how many were left for a later check.
pub fn digest_lookups(images: &[DeployedImage], cap: usize, round: usize) -> (Vec<String>, usize) {
    let mut references: Vec<String> = Vec::new();
    for image in images {
        if !image.local_digests().is_empty() && !references.contains(&image.reference) {
            references.push(image.reference.clone());
        }
    }
    if references.len() <= cap {
        return (references, 0);
    }
    let start = round.wrapping_mul(cap) % references.len();
    let left = references.len() - cap;
    let window = references
        .iter()
        .cycle()
        .skip(start)
        .take(cap)
        .cloned()
        .collect();
    (window, left)
}

/// upstream's `DeployedServicesWithChangedImageDigests`: the services with a container whose image
/// is not what the registry's tag names now. `remote` holds the registry's digest per reference;
/// a reference missing there (not looked up, registry unreachable) is not a change.
pub fn moved_services(
    images: &[DeployedImage],
    remote: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    images
        .iter()
        .filter(|image| {
            let local = image.local_digests();
            remote
                .get(&image.reference)
                .is_some_and(|digest| !local.is_empty() && !local.contains(&digest.as_str()))
        })
        .map(|image| image.service.clone())
        .collect()
}

#[cfg(test)]
mod moved_tag_tests {
    use super::*;

    fn image(service: &str, reference: &str, digests: &[&str]) -> DeployedImage {
        DeployedImage {
            service: service.into(),
            reference: reference.into(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
        }
    }

    const REG: &str = "127.0.0.1:5000/app:latest";

    #[test]
    fn moved_services_table() {
        let remote = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(r, d)| (r.to_string(), d.to_string()))
                .collect()
        };
        type Case<'a> = (
            &'a str,
            Vec<DeployedImage>,
            BTreeMap<String, String>,
            &'a [&'a str],
        );
        let cases: Vec<Case> = vec![
            (
                "same digest",
                vec![image("app", REG, &["127.0.0.1:5000/app@sha256:a"])],
                remote(&[(REG, "sha256:a")]),
                &[],
            ),
            (
                "moved tag",
                vec![image("app", REG, &["127.0.0.1:5000/app@sha256:a"])],
                remote(&[(REG, "sha256:b")]),
                &["app"],
            ),
            (
                "only the service on the moved tag",
                vec![
                    image("app", REG, &["127.0.0.1:5000/app@sha256:a"]),
                    image("db", "127.0.0.1:5000/db:1", &["127.0.0.1:5000/db@sha256:d"]),
                ],
                remote(&[(REG, "sha256:b"), ("127.0.0.1:5000/db:1", "sha256:d")]),
                &["app"],
            ),
            (
                "two services on one tag",
                vec![
                    image("a", REG, &["127.0.0.1:5000/app@sha256:a"]),
                    image("b", REG, &["127.0.0.1:5000/app@sha256:a"]),
                ],
                remote(&[(REG, "sha256:b")]),
                &["a", "b"],
            ),
            (
                "one stale replica",
                vec![
                    image("app", REG, &["127.0.0.1:5000/app@sha256:b"]),
                    image("app", REG, &["127.0.0.1:5000/app@sha256:a"]),
                ],
                remote(&[(REG, "sha256:b")]),
                &["app"],
            ),
            (
                "registry unknown or unreachable",
                vec![image("app", REG, &["127.0.0.1:5000/app@sha256:a"])],
                remote(&[]),
                &[],
            ),
            (
                "built locally: no digest",
                vec![image("app", REG, &[])],
                remote(&[(REG, "sha256:b")]),
                &[],
            ),
            (
                "digest of another repository only",
                vec![image("app", REG, &["other.io/app@sha256:a"])],
                remote(&[(REG, "sha256:b")]),
                &[],
            ),
            (
                "one of several repositories matches",
                vec![image(
                    "app",
                    REG,
                    &["other.io/app@sha256:x", "127.0.0.1:5000/app@sha256:b"],
                )],
                remote(&[(REG, "sha256:b")]),
                &[],
            ),
            (
                "Docker Hub's familiar names",
                vec![image("web", "nginx", &["nginx@sha256:a"])],
                remote(&[("nginx", "sha256:b")]),
                &["web"],
            ),
            (
                "pinned by digest never moves",
                vec![image(
                    "app",
                    "127.0.0.1:5000/app@sha256:a",
                    &["127.0.0.1:5000/app@sha256:a"],
                )],
                remote(&[("127.0.0.1:5000/app@sha256:a", "sha256:b")]),
                &[],
            ),
        ];
        for (what, images, remote, expected) in cases {
            let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(moved_services(&images, &remote), expected, "{what}");
        }
    }

    #[test]
    fn lookups_are_distinct_movable_and_capped() {
        let images = vec![
            image("a", REG, &["127.0.0.1:5000/app@sha256:a"]),
            image("b", REG, &["127.0.0.1:5000/app@sha256:a"]),
            image("c", "127.0.0.1:5000/c:1", &["127.0.0.1:5000/c@sha256:c"]),
            image("built", "local/built:1", &[]),
            image("pinned", "x.io/p@sha256:p", &["x.io/p@sha256:p"]),
            image("d", "127.0.0.1:5000/d:1", &["127.0.0.1:5000/d@sha256:d"]),
        ];
        let (c, d) = (
            "127.0.0.1:5000/c:1".to_string(),
            "127.0.0.1:5000/d:1".to_string(),
        );
        let all = vec![REG.to_string(), c.clone(), d.clone()];
        assert_eq!(digest_lookups(&images, 16, 7), (all, 0));
        assert_eq!(
            digest_lookups(&images, 2, 0),
            (vec![REG.to_string(), c.clone()], 1)
        );
        assert_eq!(
            digest_lookups(&images, 2, 1),
            (vec![d.clone(), REG.to_string()], 1),
            "the window moves on and wraps around"
        );
        assert_eq!(digest_lookups(&images, 2, 2), (vec![c, d], 1));
    }

    #[test]
    fn only_online_deployments_with_force_image_pull_look() {
        assert!(checks_moved_tags(Mode::Online, true));
        assert!(!checks_moved_tags(Mode::Online, false));
        assert!(
            !checks_moved_tags(Mode::Offline, true),
            "offline never pulls a present image"
        );
        assert_eq!(pull_policy(Mode::Offline, true), PullPolicy::Missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    fn container(id: &str, service: &str, state: ContainerState, hash: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("proj-{service}-{id}"),
            project: "proj".into(),
            service: service.into(),
            state,
            labels: BTreeMap::new(),
            config_hash: Some(hash.into()),
            oneoff: false,
            health: doco_docker::Health::None,
            image_id: String::new(),
        }
    }

    fn service(fingerprint: &str, must_run: bool, hash: &str) -> ServiceRecord {
        ServiceRecord {
            fingerprint: fingerprint.into(),
            labels: BTreeMap::from([("cd.doco.deployment.target.sha".into(), C1.into())]),
            must_run,
            replicas: 1,
            compose_hash: Some(hash.into()),
            live_hash: None,
        }
    }

    fn record() -> DeploymentRecord {
        DeploymentRecord {
            project: "proj".into(),
            commit: C1.into(),
            config_hash: "cfg".into(),
            deployed_unix: 1,
            reconciliation: None,
            context: String::new(),
            origin: None,
            services: BTreeMap::from([
                ("web".into(), service("fw", true, "hw")),
                ("job".into(), service("fj", false, "hj")),
            ]),
        }
    }

    fn desired(commit: &str) -> Desired<'_> {
        Desired {
            commit,
            config_hash: "cfg",
            force_recreate: false,
        }
    }

    fn running_web() -> ContainerInfo {
        container("w1", "web", ContainerState::Running, "hw")
    }

    fn discovered(project: &str, url: &str, settings: &str) -> (String, Vec<ContainerInfo>) {
        use doco_docker::labels as key;
        let labels = [
            (key::MANAGER, "doco-cd"),
            (key::DEPLOYMENT_AUTO_DISCOVERY, "true"),
            (key::SOURCE_URL, url),
            (key::DEPLOYMENT_CONFIG_TARGET, ""),
            (key::DEPLOYMENT_TARGET_REF, "refs/heads/main"),
            (key::DEPLOYMENT_AUTO_DISCOVERY_CONFIG, settings),
        ];
        let mut c = container("x", "web", ContainerState::Running, "h");
        c.project = project.into();
        c.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (project.to_string(), vec![c])
    }

    #[test]
    fn only_our_vanished_auto_discovered_stacks_with_delete_are_obsolete() {
        let url = "https://git.example.com/ops/stacks.git";
        let delete = r#"{"enabled":true,"depth":0,"delete":true,"remove_volumes":true,"remove_images":false}"#;
        let keep = r#"{"enabled":true,"depth":0,"delete":false,"remove_volumes":false,"remove_images":true}"#;
        let upstream_style =
            "{enabled: true, depth: 0, delete: true, remove_volumes: false, remove_images: true}";
        let observed = BTreeMap::from([
            discovered("gone", url, delete),
            discovered("gone-upstream", url, upstream_style),
            discovered("still-here", url, delete),
            discovered("gone-but-kept", url, keep),
            discovered(
                "other-repo",
                "https://git.example.com/ops/other.git",
                delete,
            ),
        ]);
        let present = BTreeSet::from(["still-here".to_string()]);
        let obsolete = obsolete_auto_discovered(
            Mode::Online,
            &observed,
            &present,
            "git.example.com/ops/stacks",
            "",
            "main",
        );
        assert_eq!(
            obsolete,
            vec![
                Obsolete {
                    project: "gone".into(),
                    remove_volumes: true,
                    remove_images: false
                },
                // Stacks deployed by upstream doco-cd label the settings in YAML flow style.
                Obsolete {
                    project: "gone-upstream".into(),
                    remove_volumes: false,
                    remove_images: true
                },
            ]
        );
        assert!(
            obsolete_auto_discovered(
                Mode::Online,
                &observed,
                &present,
                "git.example.com/ops/stacks",
                "",
                "dev"
            )
            .is_empty(),
            "another reference"
        );
        assert!(
            obsolete_auto_discovered(
                Mode::Online,
                &observed,
                &present,
                "git.example.com/ops/stacks",
                "nas",
                "main"
            )
            .is_empty(),
            "another target"
        );
    }

    #[test]
    fn offline_removes_nothing_and_pulls_nothing_present() {
        let observed = BTreeMap::from([discovered(
            "gone",
            "https://git.example.com/ops/stacks.git",
            r#"{"enabled":true,"depth":0,"delete":true,"remove_volumes":true,"remove_images":false}"#,
        )]);
        let none = BTreeSet::new();
        let name = "git.example.com/ops/stacks";
        assert_eq!(
            obsolete_auto_discovered(Mode::Online, &observed, &none, name, "", "main").len(),
            1
        );
        assert!(
            obsolete_auto_discovered(Mode::Offline, &observed, &none, name, "", "main").is_empty()
        );
        assert_eq!(pull_policy(Mode::Online, true), PullPolicy::Always);
        assert_eq!(pull_policy(Mode::Offline, true), PullPolicy::Missing);
        assert_eq!(pull_policy(Mode::Online, false), PullPolicy::Missing);
        assert!(prunes_images(Mode::Online, true));
        assert!(!prunes_images(Mode::Offline, true));
        assert!(!prunes_images(Mode::Online, false));
        assert!(applies_changes(Mode::Online));
        assert!(!applies_changes(Mode::Offline), "offline only heals");
    }

    #[test]
    fn destroy_plan_table() {
        use doco_docker::labels::SOURCE_NAME;
        let owned = |owner: Option<&str>| {
            let mut c = running_web();
            if let Some(owner) = owner {
                c.labels.insert(SOURCE_NAME.into(), owner.into());
            }
            c
        };
        let ours = "git.example.com/ops/stack";
        let cases: Vec<(&str, Mode, Vec<ContainerInfo>, DestroyPlan)> = vec![
            (
                "ours",
                Mode::Online,
                vec![owned(Some(ours))],
                DestroyPlan::Remove,
            ),
            (
                "never offline",
                Mode::Offline,
                vec![owned(Some(ours))],
                DestroyPlan::NotOffline,
            ),
            (
                "already gone",
                Mode::Online,
                vec![],
                DestroyPlan::NothingLeft,
            ),
            (
                "another repository's",
                Mode::Online,
                vec![owned(Some(ours)), owned(Some("other/repo"))],
                DestroyPlan::NotOurs("other/repo".into()),
            ),
            (
                "unlabelled",
                Mode::Online,
                vec![owned(None)],
                DestroyPlan::NotOurs("nobody (no doco-cd label)".into()),
            ),
        ];
        for (what, mode, containers, expected) in cases {
            assert_eq!(destroy_plan(mode, &containers, ours), expected, "{what}");
        }
    }

    #[test]
    fn a_webhook_is_skipped_only_when_its_reference_does_not_match_the_filter() {
        let config = DeployConfig {
            webhook_filter: "^refs/tags/v".into(),
            ..DeployConfig::default()
        };
        assert!(skip(Trigger::Webhook, &config, "refs/heads/main").is_some());
        assert!(skip(Trigger::Webhook, &config, "refs/tags/v1.2").is_none());
        assert!(
            skip(Trigger::Poll, &config, "refs/heads/main").is_none(),
            "polls are not filtered"
        );
    }

    #[test]
    fn only_services_whose_live_inputs_changed_and_that_are_not_recreated_are_reloaded() {
        let mut r = record();
        r.services.get_mut("web").unwrap().live_hash = Some("l1".into());
        let mut now = rendered("fw");
        now.get_mut("web").unwrap().live_hash = Some("l2".into());
        let none = BTreeSet::new();
        assert_eq!(
            live_reloads(&now, Some(&r), &none),
            BTreeSet::from(["web".to_string()])
        );
        let recreated = BTreeSet::from(["web".to_string()]);
        assert!(
            live_reloads(&now, Some(&r), &recreated).is_empty(),
            "recreated anyway"
        );
        now.get_mut("web").unwrap().live_hash = Some("l1".into());
        assert!(live_reloads(&now, Some(&r), &none).is_empty(), "unchanged");
        assert!(live_reloads(&now, None, &none).is_empty(), "first deploy");
    }

    #[test]
    fn a_deploy_waits_for_running_and_where_checked_healthy_services() {
        use doco_docker::Health;
        let mut services = rendered("fw");
        services.get_mut("web").unwrap().healthcheck = true;
        let with_health = |health| ContainerInfo {
            health,
            ..running_web()
        };
        assert_eq!(
            not_ready(&services, &[]),
            Some(NotReady::NotRunning("web".into()))
        );
        assert_eq!(
            not_ready(&services, &[with_health(Health::Starting)]),
            Some(NotReady::NotHealthy("web".into(), "w1".into()))
        );
        assert_eq!(
            not_ready(&services, &[with_health(Health::Unhealthy)]),
            Some(NotReady::NotHealthy("web".into(), "w1".into()))
        );
        assert_eq!(not_ready(&services, &[with_health(Health::Healthy)]), None);
        services.get_mut("web").unwrap().healthcheck = false;
        assert_eq!(
            not_ready(&services, &[with_health(Health::Starting)]),
            None,
            "no health check: running is enough"
        );
        let stopped_job = container("j1", "job", ContainerState::Exited, "hj");
        assert_eq!(
            not_ready(&services, &[running_web(), stopped_job]),
            None,
            "jobs are not waited for"
        );
    }

    #[test]
    fn heal_plan_table() {
        use ContainerState::*;
        let r = record();
        let none = BTreeSet::new();
        let forced_job = BTreeSet::from(["job".to_string()]);
        let web = BTreeSet::from(["web".to_string()]);
        let job = BTreeSet::from(["job".to_string()]);
        type Case<'a> = (
            &'a str,
            Vec<ContainerInfo>,
            &'a BTreeSet<String>,
            &'a BTreeSet<String>,
            HealPlan,
        );
        let plan = |start: &[&str], recreate: &[&str]| HealPlan {
            start: start.iter().map(|s| s.to_string()).collect(),
            recreate: recreate.iter().map(|s| s.to_string()).collect(),
        };
        let cases: Vec<Case> = vec![
            (
                "all running",
                vec![running_web()],
                &none,
                &none,
                plan(&[], &[]),
            ),
            (
                "web stopped: started",
                vec![container("w1", "web", Exited, "hw")],
                &none,
                &none,
                plan(&["w1"], &[]),
            ),
            (
                "web created only: started",
                vec![container("w1", "web", Created, "hw")],
                &none,
                &none,
                plan(&["w1"], &[]),
            ),
            (
                "web removed: recreated",
                vec![],
                &none,
                &none,
                plan(&[], &["web"]),
            ),
            (
                "web dead: recreated",
                vec![container("w1", "web", Dead, "hw")],
                &none,
                &none,
                plan(&[], &["web"]),
            ),
            (
                "a stopped container of a newer deploy is not the deployed one",
                vec![container("w2", "web", Exited, "new")],
                &none,
                &none,
                plan(&[], &["web"]),
            ),
            (
                "a running container of a newer deploy is left to the change step",
                vec![container("w2", "web", Running, "new")],
                &none,
                &none,
                plan(&[], &[]),
            ),
            (
                "a job may stay stopped",
                vec![running_web(), container("j1", "job", Exited, "hj")],
                &none,
                &none,
                plan(&[], &[]),
            ),
            (
                "a job named by a die event is started",
                vec![running_web(), container("j1", "job", Exited, "hj")],
                &forced_job,
                &none,
                plan(&["j1"], &[]),
            ),
            (
                "a job named by a destroy event is recreated",
                vec![running_web()],
                &forced_job,
                &none,
                plan(&[], &["job"]),
            ),
            (
                "web held stopped by a job run: left stopped",
                vec![container("w1", "web", Exited, "hw")],
                &none,
                &web,
                plan(&[], &[]),
            ),
            (
                "web held stopped and removed: not recreated during the run",
                vec![],
                &none,
                &web,
                plan(&[], &[]),
            ),
            (
                "a scheduled job named by a die event is not run by heal",
                vec![running_web(), container("j1", "job", Exited, "hj")],
                &forced_job,
                &job,
                plan(&[], &[]),
            ),
        ];
        for (what, observed, forced, leave, expected) in cases {
            assert_eq!(heal_plan(&r, &observed, forced, leave), expected, "{what}");
        }
    }

    #[test]
    fn heal_plan_counts_replicas() {
        let mut r = record();
        r.services.get_mut("web").unwrap().replicas = 2;
        let one_stopped = [container("w1", "web", ContainerState::Exited, "hw")];
        assert_eq!(
            heal_plan(&r, &one_stopped, &BTreeSet::new(), &BTreeSet::new()).recreate,
            BTreeSet::from(["web".to_string()])
        );
    }

    #[test]
    fn quick_plan_table() {
        use ContainerState::*;
        let r = record();
        let exited_job = container("j1", "job", Exited, "hj");
        type Case<'a> = (
            &'a str,
            Desired<'a>,
            Option<&'a DeploymentRecord>,
            Vec<ContainerInfo>,
            Mode,
            QuickPlan,
        );
        let cases: Vec<Case> = vec![
            ("no record", desired(C1), None, vec![], Mode::Online, QuickPlan::Render("first deploy".into())),
            ("all running, job exited", desired(C1), Some(&r), vec![running_web(), exited_job.clone()], Mode::Online, QuickPlan::UpToDate),
            ("web stopped", desired(C1), Some(&r), vec![container("w1", "web", Exited, "hw")], Mode::Online, QuickPlan::Start(vec!["w1".into()])),
            ("web stopped, offline", desired(C1), Some(&r), vec![container("w1", "web", Exited, "hw")], Mode::Offline, QuickPlan::Start(vec!["w1".into()])),
            ("web created only", desired(C1), Some(&r), vec![container("w1", "web", Created, "hw")], Mode::Online, QuickPlan::Start(vec!["w1".into()])),
            ("web removed", desired(C1), Some(&r), vec![], Mode::Online, QuickPlan::Render("service web is not deployed".into())),
            ("web dead", desired(C1), Some(&r), vec![container("w1", "web", Dead, "hw")], Mode::Online, QuickPlan::Render("a container of service web is dead".into())),
            ("web changed behind our back", desired(C1), Some(&r), vec![container("w1", "web", Running, "other")], Mode::Online,
                QuickPlan::Render("container proj-web-w1 of service web no longer matches the deployed configuration".into())),
            ("new commit", desired(C2), Some(&r), vec![running_web()], Mode::Online, QuickPlan::Render("commit changed from 1111111 to 2222222".into())),
            ("unknown container online", desired(C1), Some(&r), vec![running_web(), container("x", "extra", Running, "hx")], Mode::Online,
                QuickPlan::Render("container proj-extra-x belongs to service extra, which is not described".into())),
            ("unknown container offline is left alone", desired(C1), Some(&r), vec![running_web(), container("x", "extra", Running, "hx")], Mode::Offline, QuickPlan::UpToDate),
            ("oneoff containers are ignored", desired(C1), Some(&r), vec![running_web(), ContainerInfo { oneoff: true, ..container("o", "extra", Running, "ho") }], Mode::Online, QuickPlan::UpToDate),
            ("force_recreate online", Desired { force_recreate: true, ..desired(C1) }, Some(&r), vec![running_web()], Mode::Online, QuickPlan::Render("force_recreate is set".into())),
            ("force_recreate offline is not a change", Desired { force_recreate: true, ..desired(C1) }, Some(&r), vec![running_web()], Mode::Offline, QuickPlan::UpToDate),
        ];
        for (what, desired, record, observed, mode, expected) in cases {
            assert_eq!(
                quick_plan(&desired, record, &observed, mode),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_service_scaled_to_zero_needs_no_container() {
        let mut r = record();
        r.services.get_mut("web").unwrap().replicas = 0;
        assert_eq!(
            quick_plan(&desired(C1), Some(&r), &[], Mode::Online),
            QuickPlan::UpToDate
        );
    }

    #[test]
    fn quick_plan_counts_replicas() {
        let mut r = record();
        r.services.get_mut("web").unwrap().replicas = 2;
        assert_eq!(
            quick_plan(&desired(C1), Some(&r), &[running_web()], Mode::Online),
            QuickPlan::Render("service web has 1 of 2 replicas".into())
        );
    }

    fn rendered(web_fp: &str) -> BTreeMap<String, RenderedService> {
        BTreeMap::from([
            (
                "web".into(),
                RenderedService {
                    fingerprint: web_fp.into(),
                    must_run: true,
                    replicas: 1,
                    healthcheck: false,
                    build: false,
                    live_hash: None,
                },
            ),
            (
                "job".into(),
                RenderedService {
                    fingerprint: "fj".into(),
                    must_run: false,
                    replicas: 1,
                    healthcheck: false,
                    build: false,
                    live_hash: None,
                },
            ),
        ])
    }

    const NONE: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();

    #[test]
    fn without_a_record_running_services_at_the_commit_are_adopted_not_recreated() {
        let adoptable = BTreeMap::from([(
            "web".to_string(),
            BTreeMap::from([("k".to_string(), "v".to_string())]),
        )]);
        let plan = full_plan(
            &rendered("fw"),
            None,
            &adoptable,
            &[running_web()],
            SWITCHES,
            Mode::Online,
        );
        let FullPlan::Deploy(DeployPlan {
            changed,
            kept_labels,
            reason,
            ..
        }) = plan
        else {
            panic!("expected a deploy, got {plan:?}");
        };
        assert_eq!(changed, BTreeSet::from(["job".to_string()]));
        assert_eq!(kept_labels["web"], adoptable["web"]);
        assert!(reason.contains("adopting"), "{reason}");
    }

    const SWITCHES: Switches = Switches {
        remove_orphans: true,
        force_recreate: false,
        force_image_pull: false,
    };

    #[test]
    fn unchanged_services_keep_their_labels_and_nothing_happens() {
        let r = record();
        let plan = full_plan(
            &rendered("fw"),
            Some(&r),
            &NONE,
            &[running_web()],
            SWITCHES,
            Mode::Online,
        );
        assert_eq!(plan, FullPlan::UpToDate);
    }

    #[test]
    fn a_changed_service_gets_fresh_labels_and_the_others_keep_theirs() {
        let r = record();
        let plan = full_plan(
            &rendered("fw2"),
            Some(&r),
            &NONE,
            &[running_web()],
            SWITCHES,
            Mode::Online,
        );
        let FullPlan::Deploy(DeployPlan {
            changed,
            kept_labels,
            remove_orphans,
            force_recreate,
            ..
        }) = plan
        else {
            panic!("expected a deploy, got {plan:?}");
        };
        assert_eq!(changed, BTreeSet::from(["web".to_string()]));
        assert_eq!(kept_labels.keys().collect::<Vec<_>>(), vec!["job"]);
        assert_eq!(kept_labels["job"], r.services["job"].labels);
        assert!(remove_orphans);
        assert!(!force_recreate);
    }

    #[test]
    fn unchanged_but_stopped_is_a_start() {
        let r = record();
        let observed = [container("w1", "web", ContainerState::Exited, "hw")];
        assert_eq!(
            full_plan(
                &rendered("fw"),
                Some(&r),
                &NONE,
                &observed,
                SWITCHES,
                Mode::Online
            ),
            FullPlan::Start(vec!["w1".into()])
        );
    }

    #[test]
    fn unchanged_but_removed_is_a_deploy_that_keeps_all_labels() {
        let r = record();
        let plan = full_plan(
            &rendered("fw"),
            Some(&r),
            &NONE,
            &[],
            SWITCHES,
            Mode::Offline,
        );
        let FullPlan::Deploy(DeployPlan {
            changed,
            kept_labels,
            remove_orphans,
            ..
        }) = plan
        else {
            panic!("expected a deploy, got {plan:?}");
        };
        assert!(changed.is_empty());
        assert_eq!(kept_labels.len(), 2);
        assert!(!remove_orphans, "offline never removes orphans");
    }

    #[test]
    fn first_deploy_changes_every_service() {
        let plan = full_plan(&rendered("fw"), None, &NONE, &[], SWITCHES, Mode::Offline);
        let FullPlan::Deploy(DeployPlan {
            changed,
            kept_labels,
            ..
        }) = plan
        else {
            panic!("expected a deploy, got {plan:?}");
        };
        assert_eq!(changed.len(), 2);
        assert!(kept_labels.is_empty());
    }

    #[test]
    fn a_service_removed_from_the_files_is_an_orphan_removal_online_only() {
        let r = record();
        let mut only_web = rendered("fw");
        only_web.remove("job");
        assert!(matches!(
            full_plan(&only_web, Some(&r), &NONE, &[running_web()], SWITCHES, Mode::Online),
            FullPlan::Deploy(DeployPlan { ref reason, .. }) if reason.contains("removed")
        ));
        assert_eq!(
            full_plan(
                &only_web,
                Some(&r),
                &NONE,
                &[running_web()],
                SWITCHES,
                Mode::Offline
            ),
            FullPlan::UpToDate
        );
    }

    #[test]
    fn force_recreate_is_honoured_online_and_ignored_offline() {
        let r = record();
        let switches = Switches {
            remove_orphans: true,
            force_recreate: true,
            force_image_pull: false,
        };
        assert!(matches!(
            full_plan(
                &rendered("fw"),
                Some(&r),
                &NONE,
                &[running_web()],
                switches,
                Mode::Online
            ),
            FullPlan::Deploy(DeployPlan {
                force_recreate: true,
                ..
            })
        ));
        assert_eq!(
            full_plan(
                &rendered("fw"),
                Some(&r),
                &NONE,
                &[running_web()],
                switches,
                Mode::Offline
            ),
            FullPlan::UpToDate
        );
    }
}
