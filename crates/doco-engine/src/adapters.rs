//! The two seams of the reconciler: the Git [`Source`] and the container [`Runtime`]. The real
//! implementations are `doco_git::GitClient` and [`Docker`] (the Engine API plus the `docker compose`
//! CLI); tests put in-memory fakes behind the same traits, so the reconciler's rules are tested on a
//! paused clock without Git or Docker (the real adapters have their own Git and Docker tiers).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use doco_docker::{
    BuildOptions, ComposeError, ComposeProject, ContainerInfo, DockerError, LocalImage,
    RegistryError, RenderedProject, UpOptions,
};
use doco_git::{GitClient, GitError, SyncOptions, SyncOutcome};

/// A boxed future, so the traits can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens the engine of a named Docker context (a deploy config's `context`), as the docker CLI's
/// context store describes it.
pub type ContextOpener =
    std::sync::Arc<dyn Fn(&str) -> Result<std::sync::Arc<dyn Runtime>, String> + Send + Sync>;

/// The containers of every compose project, by project name.
pub type Containers = BTreeMap<String, Vec<ContainerInfo>>;

/// What the reconciler asks of a Git repository: a bare mirror it fetches, and exports of commits.
pub trait Source: Send + Sync {
    /// Fetches `url` into the bare `mirror` and resolves `reference` (one `git ls-remote` when
    /// nothing changed).
    fn sync<'a>(
        &'a self,
        url: &'a str,
        reference: &'a str,
        mirror: &'a Path,
        options: &'a SyncOptions,
    ) -> BoxFuture<'a, Result<SyncOutcome, GitError>>;

    /// The commit `reference` resolved to at `mirror`'s last successful sync; no network.
    fn resolved(&self, mirror: &Path, reference: &str) -> Result<Option<String>, GitError>;

    /// Writes the files of `commit` (present in `mirror`) to `dest`, which must not exist, whole or
    /// not at all.
    fn export<'a>(
        &'a self,
        url: &'a str,
        mirror: &'a Path,
        commit: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>>;

    /// Makes `mirror` from the working-tree checkout `checkout` of the layout before the store,
    /// without touching its files (migration).
    fn adopt<'a>(
        &'a self,
        url: &'a str,
        reference: &'a str,
        checkout: &'a Path,
        mirror: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>>;
}

/// What the reconciler asks of the container engine.
pub trait Runtime: Send + Sync {
    /// Every compose-labelled container, by project, as the engine holds them now.
    fn containers(&self) -> BoxFuture<'_, Result<Containers, DockerError>>;

    /// The same, where a view kept current by the engine's events may answer without asking the
    /// engine: for the first look of a run, not for reads after doco-cd's own changes.
    fn observe(&self) -> BoxFuture<'_, Result<Containers, DockerError>> {
        self.containers()
    }

    /// Starts a stopped container (the same container).
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>>;

    /// Renders a project as `docker compose config` does.
    fn render<'a>(
        &'a self,
        project: &'a ComposeProject,
    ) -> BoxFuture<'a, Result<RenderedProject, ComposeError>>;

    /// `docker compose up` with the label override file `labels`.
    fn up<'a>(
        &'a self,
        project: &'a ComposeProject,
        labels: &'a Path,
        options: &'a UpOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>>;

    /// `docker compose up --no-start`: creates the containers without starting them (job services).
    fn create<'a>(
        &'a self,
        project: &'a ComposeProject,
        labels: &'a Path,
        options: &'a UpOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>>;

    /// `docker compose build` of `project`.
    fn build<'a>(
        &'a self,
        project: &'a ComposeProject,
        options: &'a BuildOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>>;

    /// `docker compose down` of `project`.
    fn down<'a>(
        &'a self,
        project: &'a str,
        remove_volumes: bool,
        remove_images: bool,
    ) -> BoxFuture<'a, Result<(), ComposeError>>;

    /// The output of container `id`'s last health check, if it has one.
    fn last_health_output<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DockerError>>;

    /// Removes image `id` unless a container uses it; whether it was removed.
    fn remove_unused_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, DockerError>>;

    /// Sends `signal` to container `id`.
    fn signal<'a>(&'a self, id: &'a str, signal: &'a str)
    -> BoxFuture<'a, Result<(), DockerError>>;

    /// The image container `id` was created from and the repository digests of the image it runs.
    fn local_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<LocalImage, DockerError>>;

    /// The digest the registry holds now for image `reference`'s tag (one manifest HEAD request).
    fn remote_digest<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<String, RegistryError>>;
}

impl Source for GitClient {
    fn sync<'a>(
        &'a self,
        url: &'a str,
        reference: &'a str,
        mirror: &'a Path,
        options: &'a SyncOptions,
    ) -> BoxFuture<'a, Result<SyncOutcome, GitError>> {
        Box::pin(self.sync_with(url, reference, mirror, options))
    }

    fn resolved(&self, mirror: &Path, reference: &str) -> Result<Option<String>, GitError> {
        doco_git::resolved_commit(mirror, reference)
    }

    fn export<'a>(
        &'a self,
        url: &'a str,
        mirror: &'a Path,
        commit: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(GitClient::export(self, url, mirror, commit, dest))
    }

    fn adopt<'a>(
        &'a self,
        url: &'a str,
        reference: &'a str,
        checkout: &'a Path,
        mirror: &'a Path,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(self.adopt_checkout(url, reference, checkout, mirror))
    }
}

/// The real engine: its API for reads and starts, the `docker compose` CLI for the rest.
#[derive(Debug, Clone)]
pub struct Docker {
    /// The Engine API client.
    pub engine: doco_docker::Engine,
    /// The compose CLI driver.
    pub compose: doco_docker::Compose,
    /// Manifest lookups, with the registry credentials compose pulls with.
    pub registry: doco_docker::Registry,
    /// The containers as the engine's events keep them (current once its task runs).
    pub view: doco_docker::ContainerView,
}

impl Runtime for Docker {
    fn containers(&self) -> BoxFuture<'_, Result<Containers, DockerError>> {
        Box::pin(self.engine.compose_containers())
    }

    fn observe(&self) -> BoxFuture<'_, Result<Containers, DockerError>> {
        Box::pin(self.view.containers())
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.engine.start_container(id))
    }

    fn render<'a>(
        &'a self,
        project: &'a ComposeProject,
    ) -> BoxFuture<'a, Result<RenderedProject, ComposeError>> {
        Box::pin(self.compose.render(project))
    }

    fn up<'a>(
        &'a self,
        project: &'a ComposeProject,
        labels: &'a Path,
        options: &'a UpOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        Box::pin(self.compose.up(project, labels, options))
    }

    fn create<'a>(
        &'a self,
        project: &'a ComposeProject,
        labels: &'a Path,
        options: &'a UpOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        Box::pin(self.compose.create(project, labels, options))
    }

    fn build<'a>(
        &'a self,
        project: &'a ComposeProject,
        options: &'a BuildOptions,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        Box::pin(self.compose.build(project, options))
    }

    fn down<'a>(
        &'a self,
        project: &'a str,
        remove_volumes: bool,
        remove_images: bool,
    ) -> BoxFuture<'a, Result<(), ComposeError>> {
        Box::pin(self.compose.down(project, remove_volumes, remove_images))
    }

    fn last_health_output<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DockerError>> {
        Box::pin(self.engine.last_health_output(id))
    }

    fn remove_unused_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, DockerError>> {
        Box::pin(self.engine.remove_unused_image(id))
    }

    fn signal<'a>(
        &'a self,
        id: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.engine.signal_container(id, signal))
    }

    fn local_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<LocalImage, DockerError>> {
        Box::pin(self.engine.local_image(id))
    }

    fn remote_digest<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<String, RegistryError>> {
        Box::pin(self.registry.digest(reference))
    }
}
