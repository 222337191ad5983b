//! `force_image_pull` at an unchanged commit: a tag (`:latest`) can move in the registry while Git
//! stays put, and only the registry knows. When the quick check finds a deployment up to date, this
//! step compares the digest of each service's running image with the registry's digest of its tag
//! (one manifest HEAD request per distinct image, at most [`plan::MAX_DIGEST_LOOKUPS`] per
//! deployment and poll) and redeploys the services whose tag moved: `docker compose up --pull
//! always --force-recreate --no-deps` of those services only, with the labels they were deployed
//! with, so compose's config hash and the state record stay valid and the other services are not
//! touched. Which services moved is decided by [`plan::moved_services`]; this module only fetches
//! digests and applies.
//!
//! Offline, nothing is looked up (offline never pulls a present image). A registry that cannot be
//! asked is logged once per deployment and poll, its other images are not asked again in that
//! poll, and nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use doco_config::ResolvedDeployment;
use doco_docker::ContainerInfo;
use tracing::{debug, info, warn};

use super::deploy::{Applied, RecordedImages};
use super::report::RecordChange;
use super::{DeployError, DeploymentOutcome, PollContext, Reconciler};
use crate::adapters::Runtime;
use crate::plan::{self, DeployedImage};
use crate::state::DeploymentRecord;

impl Reconciler {
    /// After an "up to date" quick check: redeploys the services whose tag moved in the registry,
    /// when the deployment sets `force_image_pull`; `None` when nothing moved (or nothing was
    /// looked up).
    pub(super) async fn follow_moved_tags(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        record: &DeploymentRecord,
        containers: &[ContainerInfo],
        rt: &dyn Runtime,
    ) -> Result<Option<Applied>, DeployError> {
        if !plan::checks_moved_tags(ctx.mode, deployment.config.force_image_pull) {
            return Ok(None);
        }
        let images = self.deployed_images(containers, rt).await;
        let round = self.digest_rounds.fetch_add(1, Ordering::Relaxed);
        let (lookups, left) = plan::digest_lookups(&images, plan::MAX_DIGEST_LOOKUPS, round);
        if left > 0 {
            info!(
                checked = lookups.len(),
                later = left,
                "force_image_pull: more images than one poll looks up; the others are checked in the next polls"
            );
        }
        let remote = self.remote_digests(&lookups, rt).await;
        let moved = plan::moved_services(&images, &remote);
        if moved.is_empty() {
            debug!(checked = remote.len(), "force_image_pull: no tag moved");
            return Ok(None);
        }
        info!(services = ?moved, "force_image_pull: a tag moved in the registry; pulling and recreating those services");
        self.recreate_moved(ctx, deployment, record, &moved, rt)
            .await?;
        Ok(Some(Applied {
            outcome: DeploymentOutcome::Deployed(moved),
            record: RecordChange::Keep,
            unhealthy: Vec::new(),
        }))
    }

    /// The image of every service container (not one-off runs). A container that cannot be
    /// inspected (removed meanwhile) is skipped: the heal step deals with it.
    async fn deployed_images(
        &self,
        containers: &[ContainerInfo],
        rt: &dyn Runtime,
    ) -> Vec<DeployedImage> {
        let mut images = Vec::new();
        for container in containers.iter().filter(|c| !c.oneoff) {
            match rt.local_image(&container.id).await {
                Ok(local) => images.push(DeployedImage {
                    service: container.service.clone(),
                    reference: local.reference,
                    repo_digests: local.repo_digests,
                }),
                Err(e) => {
                    debug!(container = %container.name, error = %e, "force_image_pull: cannot read the container's image")
                }
            }
        }
        images
    }

    /// The registry's digest of each reference that could be looked up. The first failure of a
    /// registry is logged and its other references are skipped this time.
    async fn remote_digests(
        &self,
        references: &[String],
        rt: &dyn Runtime,
    ) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for reference in references {
            let registry = doco_docker::ImageRef::parse(reference)
                .map(|r| r.domain)
                .unwrap_or_default();
            if failed.contains(&registry) {
                continue;
            }
            match rt.remote_digest(reference).await {
                Ok(digest) => {
                    found.insert(reference.clone(), digest);
                }
                Err(e) => {
                    warn!(%registry, error = %e, "force_image_pull: cannot ask the registry whether the tag moved; nothing changes");
                    failed.insert(registry);
                }
            }
        }
        found
    }

    /// `docker compose up --pull always --force-recreate --no-deps` of `services`, with the labels
    /// (and live-copy mounts) of the last deploy: a failed pull fails before anything is recreated.
    async fn recreate_moved(
        &self,
        ctx: &PollContext<'_>,
        deployment: &ResolvedDeployment,
        record: &DeploymentRecord,
        services: &BTreeSet<String>,
        rt: &dyn Runtime,
    ) -> Result<(), DeployError> {
        let images = RecordedImages::PullAndRecreate;
        self.up_as_recorded(deployment, ctx.store, record, services, images, rt)
            .await
    }
}
