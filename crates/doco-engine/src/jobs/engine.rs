//! The scheduler's seam to the container engine, so its timing rules are tested on a paused clock
//! with an in-memory engine, and the real one ([`doco_docker::Engine`]) in the end-to-end tier.

use doco_docker::DockerError;

use crate::adapters::{BoxFuture, Containers};

/// What the scheduler asks of the engine.
pub trait JobEngine: Send + Sync {
    /// Every compose-labelled container, by project.
    fn containers(&self) -> BoxFuture<'_, Result<Containers, DockerError>>;
    /// Starts a stopped container (a running one is left alone).
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>>;
    /// Restarts a container: stops it when it runs (killing it after a grace period), then starts
    /// it; a stopped or created one is just started.
    fn restart<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>>;
    /// Stops a container.
    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>>;
    /// Waits until a container is not running; its exit code.
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i64, DockerError>>;
    /// Creates and starts an ephemeral copy of container `id` named `name`; the copy's id.
    fn start_copy<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<String, DockerError>>;
    /// Removes a container.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>>;
}

/// Seconds a service named in `stop_services`, or a running job restarted by a new run, gets to
/// stop before it is killed.
const STOP_TIMEOUT_SECS: i32 = 10;

impl JobEngine for doco_docker::Engine {
    fn containers(&self) -> BoxFuture<'_, Result<Containers, DockerError>> {
        Box::pin(self.compose_containers())
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.start_container(id))
    }

    fn restart<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.restart_container(id, STOP_TIMEOUT_SECS, None))
    }

    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.stop_container(id, STOP_TIMEOUT_SECS))
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i64, DockerError>> {
        Box::pin(self.wait_container(id))
    }

    fn start_copy<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<String, DockerError>> {
        Box::pin(doco_docker::Engine::start_copy(self, id, name))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.remove_container(id))
    }
}
