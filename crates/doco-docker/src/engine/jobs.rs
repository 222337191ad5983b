//! What the job scheduler asks of the engine beyond starts and stops: waiting for a container to
//! exit (its exit code decides success or failure) and, for `one_off` runs, an ephemeral copy of a
//! job container that is removed once it exited. A child module of `engine` so it uses the same
//! client and error mapping; kept apart so the scheduler's needs read in one place.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, EndpointSettings, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{DockerError, Engine};

/// Label marking a one-off run's container (upstream's `cd.doco.job.ephemeral`): drift checks and
/// the scheduler leave it alone.
pub const JOB_EPHEMERAL: &str = "cd.doco.job.ephemeral";

impl Engine {
    /// Waits until container `id` is not running and returns its exit code (at once for a container
    /// that already exited).
    pub async fn wait_container(&self, id: &str) -> Result<i64, DockerError> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut stream = self.docker.wait_container(id, Some(options));
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as this error; it is an answer, not a failure.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.error(&format!("wait for container {id}"), e)),
            None => Ok(0),
        }
    }

    /// Creates and starts an ephemeral copy of container `id` named `name` (same image, command,
    /// environment, mounts and first network; labels plus [`JOB_EPHEMERAL`]); returns the copy's id.
    pub async fn start_copy(&self, id: &str, name: &str) -> Result<String, DockerError> {
        let context = format!("copy container {id} for a one-off run");
        let inspect = self.inspect(id).await?;
        let mut body: ContainerCreateBody = inspect
            .config
            .and_then(|c| serde_json::to_value(c).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let labels = body.labels.get_or_insert_with(HashMap::new);
        labels.insert(JOB_EPHEMERAL.into(), "true".into());
        labels.insert(crate::labels::COMPOSE_ONEOFF.into(), "True".into());
        body.hostname = None;
        body.host_config = inspect.host_config;
        let networks = inspect
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        body.networking_config = Some(NetworkingConfig {
            endpoints_config: Some(
                // Engines before API 1.44 accept one network at creation.
                networks
                    .into_keys()
                    .take(1)
                    .map(|n| (n, EndpointSettings::default()))
                    .collect(),
            ),
        });
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.error(&context, e))?;
        self.start_container(&created.id).await?;
        Ok(created.id)
    }

    /// Removes container `id` (forcefully, with its anonymous volumes).
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(|e| self.error(&format!("remove container {id}"), e))
    }
}
