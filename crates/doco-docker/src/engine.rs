//! Engine API reads (and the one write, `start`) through bollard.
//!
//! A poll asks "what is deployed" once for all projects: [`Engine::compose_containers`] is a single
//! `GET /containers/json?all=1&filters=label=com.docker.compose.project` call, grouped here. Healing a
//! stopped container whose configuration did not change is a plain start ([`Engine::start_container`]),
//! which keeps its id and anonymous volumes.
//!
//! bollard 0.21.1 sends unversioned request paths, so the daemon answers in its own API version; that
//! is what makes it work against Debian's 20.10 engine (API 1.41).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptionsBuilder, RestartContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;

use crate::endpoint::{Endpoint, EndpointError, Transport};
use crate::labels;
use crate::ssh_bridge::SshBridge;

/// bollard's request timeout (its default): the wait for response headers, not for a stream.
const TIMEOUT_SECS: u64 = 120;

/// Why an Engine API call failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The configured engine cannot be resolved (`DOCKER_HOST`, `DOCKER_CONTEXT`, TLS files).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// No client could be built for the configured host (bad scheme, missing socket file).
    #[error(
        "cannot connect to the Docker engine at {host}: {source} (is the daemon running, and is DOCKER_HOST right?)"
    )]
    Connect {
        /// The socket or host that was tried.
        host: String,
        /// bollard's reason.
        source: BollardError,
    },
    /// The engine did not answer (socket refused, connection reset, timeout).
    #[error(
        "the Docker engine at {host} is not reachable while trying to {context}: {source} (is the daemon running?)"
    )]
    Unreachable {
        /// The socket or host that was tried.
        host: String,
        /// What doco-cd was doing.
        context: String,
        /// bollard's reason.
        source: BollardError,
    },
    /// The engine answered with an error.
    #[error("the Docker engine at {host} refused to {context}: {source}")]
    Api {
        /// The socket or host that answered.
        host: String,
        /// What doco-cd was doing.
        context: String,
        /// The engine's answer.
        source: BollardError,
    },
}

/// A connection to the Docker engine's API.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
    /// For `ssh://` engines: the local socket the client talks through, kept open with the client.
    _bridge: Option<Arc<SshBridge>>,
}

/// A container event (`die`, `stop`, `health_status: unhealthy`, ...) of a container doco-cd deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The engine's action, as sent (`health_status: unhealthy`, `die`, ...).
    pub action: String,
    /// The container id.
    pub id: String,
    /// Its compose project, when labelled.
    pub project: Option<String>,
    /// Its compose service, when labelled.
    pub service: Option<String>,
    /// When it happened (Unix seconds; 0 when unknown).
    pub time: i64,
    /// When it happened (Unix nanoseconds; 0 when unknown): with the container and the action, what
    /// identifies an event replayed after a reconnect.
    pub time_nano: i64,
}

impl ContainerEvent {
    fn from_message(message: bollard::models::EventMessage) -> ContainerEvent {
        let actor = message.actor.unwrap_or_default();
        let attributes = actor.attributes.unwrap_or_default();
        ContainerEvent {
            action: message.action.unwrap_or_default(),
            id: actor.id.unwrap_or_default(),
            project: attributes.get(labels::COMPOSE_PROJECT).cloned(),
            service: attributes.get(labels::COMPOSE_SERVICE).cloned(),
            time: message.time.unwrap_or_default(),
            time_nano: message.time_nano.unwrap_or_default(),
        }
    }
}

/// Unix nanoseconds as the engine's `since`/`until` parameters take them (`seconds.nanoseconds`).
fn engine_timestamp(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// One container of a compose project, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Container name without the leading `/`.
    pub name: String,
    /// Value of `com.docker.compose.project`.
    pub project: String,
    /// Value of `com.docker.compose.service` (empty if missing).
    pub service: String,
    /// Run state.
    pub state: ContainerState,
    /// Every label of the container.
    pub labels: BTreeMap<String, String>,
    /// Value of `com.docker.compose.config-hash`, if present.
    pub config_hash: Option<String>,
    /// True for `docker compose run` containers (`com.docker.compose.oneoff=True`).
    pub oneoff: bool,
    /// What its health check reports.
    pub health: Health,
    /// The id of the image it runs.
    pub image_id: String,
}

impl ContainerInfo {
    /// A compose container as the engine's list describes it; `None` without a compose project.
    fn from_summary(summary: bollard::models::ContainerSummary) -> Option<ContainerInfo> {
        let labels: BTreeMap<String, String> =
            summary.labels.unwrap_or_default().into_iter().collect();
        let project = labels.get(labels::COMPOSE_PROJECT).cloned()?;
        let name = summary
            .names
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        Some(ContainerInfo {
            id: summary.id.unwrap_or_default(),
            name,
            service: labels
                .get(labels::COMPOSE_SERVICE)
                .cloned()
                .unwrap_or_default(),
            state: ContainerState::from_summary(summary.state),
            config_hash: labels.get(labels::COMPOSE_CONFIG_HASH).cloned(),
            oneoff: labels
                .get(labels::COMPOSE_ONEOFF)
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            health: Health::from_status(summary.status.as_deref().unwrap_or_default()),
            image_id: summary.image_id.unwrap_or_default(),
            project,
            labels,
        })
    }
}

/// Containers grouped by compose project; within one, ordered by service, then name.
pub fn by_project(
    containers: impl IntoIterator<Item = ContainerInfo>,
) -> BTreeMap<String, Vec<ContainerInfo>> {
    let mut projects: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
    for container in containers {
        projects
            .entry(container.project.clone())
            .or_default()
            .push(container);
    }
    for containers in projects.values_mut() {
        containers.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    }
    projects
}

/// The image a container runs, as `force_image_pull` compares it with the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalImage {
    /// The reference the container was created from (`127.0.0.1:5000/app:latest`).
    pub reference: String,
    /// `RepoDigests` of the image it runs (`127.0.0.1:5000/app@sha256:…`): one per repository the
    /// image was pulled from or pushed to.
    pub repo_digests: Vec<String>,
}

/// A container's health, as its health check reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// No health check.
    #[default]
    None,
    /// The check has not passed yet.
    Starting,
    /// The check passes.
    Healthy,
    /// The check fails.
    Unhealthy,
}

impl Health {
    /// The health in the engine's container status line (`Up 5 seconds (health: starting)`).
    pub fn from_status(status: &str) -> Health {
        if status.contains("(unhealthy)") {
            Health::Unhealthy
        } else if status.contains("(healthy)") {
            Health::Healthy
        } else if status.contains("(health: starting)") {
            Health::Starting
        } else {
            Health::None
        }
    }
}

/// A container's run state, as the engine names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Failed to stop or be removed.
    Dead,
    /// Any other state (including "stopping" on newer engines).
    Unknown,
}

impl ContainerState {
    /// True when the container is running (or is being restarted by the engine).
    pub fn is_running(self) -> bool {
        matches!(self, ContainerState::Running | ContainerState::Restarting)
    }

    fn from_summary(state: Option<ContainerSummaryStateEnum>) -> Self {
        match state {
            Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
            Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
            Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
            Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
            Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
            Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
            Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        };
        f.write_str(name)
    }
}

/// One compose container as the API shows it (upstream's `ContainerSummary` of `compose ps`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectContainer {
    /// Container id.
    pub id: String,
    /// Names, without the leading `/`.
    pub names: Vec<String>,
    /// The image as the container was created from.
    pub image: String,
    /// The command line.
    pub command: String,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// `running`, `exited`, … as the engine says.
    pub state: String,
    /// The engine's human status (`Up 2 minutes`, `Exited (0) 3 seconds ago`).
    pub status: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a health check.
    pub health: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports: (host IP, container port, host port, protocol).
    pub ports: Vec<(String, u16, Option<u16>, String)>,
    /// Networks the container is attached to.
    pub networks: Vec<String>,
    /// Mounts: the volume name, else the source path.
    pub mounts: Vec<String>,
    /// How many of the mounts are local named volumes.
    pub local_volumes: usize,
}

impl Engine {
    /// Connects to the engine of this process's environment ([`Endpoint::from_process_env`]:
    /// `DOCKER_HOST`, `DOCKER_CONTEXT`, ...). No request is made; call [`Engine::ping`] to check
    /// that the engine answers.
    pub fn connect() -> Result<Engine, DockerError> {
        Engine::connect_endpoint(&Endpoint::from_process_env()?)
    }

    /// Connects to `host` (`unix:///path`, `tcp://host:port` or `ssh://user@host`), without TLS.
    pub fn connect_with_host(host: &str) -> Result<Engine, DockerError> {
        Engine::connect_endpoint(&Endpoint::from_host(host)?)
    }

    /// Connects to `endpoint`: a unix socket, plain TCP, TLS with the endpoint's certificates, or
    /// `ssh://` through the docker CLI's stdio bridge ([`crate::ssh_bridge`]; needs a tokio
    /// runtime). No request is made.
    pub fn connect_endpoint(endpoint: &Endpoint) -> Result<Engine, DockerError> {
        let host = endpoint.host().to_string();
        let connect_error = |source| DockerError::Connect {
            host: host.clone(),
            source,
        };
        let version = bollard::API_DEFAULT_VERSION;
        let mut bridge = None;
        let docker = match endpoint.transport()? {
            Transport::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), TIMEOUT_SECS, version)
            }
            Transport::Tcp(address) => Docker::connect_with_http(&address, TIMEOUT_SECS, version),
            Transport::Tls(address, dir) => {
                // bollard reads the client key through rustls' process-wide provider; installing
                // it twice is harmless (the second call reports that one is already there).
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                Docker::connect_with_ssl(
                    &address,
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    TIMEOUT_SECS,
                    version,
                )
            }
            Transport::Ssh(target) => {
                let started = SshBridge::start(target)
                    .map_err(|e| connect_error(BollardError::IOError { err: e }))?;
                let socket = started.socket().to_string_lossy().into_owned();
                bridge = Some(Arc::new(started));
                Docker::connect_with_unix(&socket, TIMEOUT_SECS, version)
            }
        }
        .map_err(connect_error)?;
        tracing::debug!(
            host,
            origin = endpoint.origin(),
            "Docker engine client created"
        );
        Ok(Engine {
            docker,
            host,
            _bridge: bridge,
        })
    }

    /// The socket or host this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.error("ping the engine", e))
    }

    /// Every container (running or not) carrying `com.docker.compose.project`, grouped by project, in
    /// one Engine API call. Within a project, containers are ordered by service, then name.
    pub async fn compose_containers(
        &self,
    ) -> Result<BTreeMap<String, Vec<ContainerInfo>>, DockerError> {
        let containers = self.list_compose(None).await?;
        tracing::debug!(containers = containers.len(), "listed compose containers");
        Ok(by_project(containers))
    }

    /// Compose container `id` as [`Engine::compose_containers`] describes it; `None` when it is gone
    /// (or is not a compose container). One Engine API call whose cost does not depend on the other
    /// containers.
    pub async fn compose_container(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        Ok(self.list_compose(Some(id)).await?.pop())
    }

    /// The compose containers, all or the one with `id`.
    async fn list_compose(&self, id: Option<&str>) -> Result<Vec<ContainerInfo>, DockerError> {
        let mut filters: HashMap<&str, Vec<&str>> =
            HashMap::from([("label", vec![labels::COMPOSE_PROJECT])]);
        if let Some(id) = id {
            filters.insert("id", vec![id]);
        }
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error("list compose containers", e))?;
        Ok(summaries
            .into_iter()
            .filter_map(ContainerInfo::from_summary)
            .collect())
    }

    /// The events of every compose container from `since_nanos` (Unix nanoseconds) on, replayed
    /// ones first: what keeps [`crate::ContainerView`] current. The stream ends or fails when the
    /// engine goes away.
    pub fn compose_events(
        &self,
        since_nanos: i64,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, DockerError>> + Send + use<> {
        self.events_labelled(labels::COMPOSE_PROJECT.to_string(), Some(since_nanos))
    }

    /// Starts a stopped container (same id, volumes kept). Starting a running one is not an error.
    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        let started = self.docker.start_container(id, None).await;
        self.state_change(id, "start", "started", started)
    }

    /// The outcome of starting or stopping container `id`: the engine's 304 ("already in that
    /// state") is success, as is a change, which is logged.
    fn state_change(
        &self,
        id: &str,
        verb: &str,
        done: &str,
        result: Result<(), BollardError>,
    ) -> Result<(), DockerError> {
        match result {
            Ok(()) => {
                tracing::info!(container = id, "{done} container");
                Ok(())
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.error(&format!("{verb} container {id}"), e)),
        }
    }

    /// The compose containers (not one-off `run` containers) of `project`, or of every project when
    /// `None`; with `all` also those that do not run. Ordered by project, service, then name.
    pub async fn project_containers(
        &self,
        project: Option<&str>,
        all: bool,
    ) -> Result<Vec<ProjectContainer>, DockerError> {
        let label = match project {
            Some(name) => format!("{}={name}", labels::COMPOSE_PROJECT),
            None => labels::COMPOSE_PROJECT.to_string(),
        };
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("label", vec![label.as_str()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error("list compose containers", e))?;
        let mut containers: Vec<ProjectContainer> = summaries
            .into_iter()
            .map(|summary| {
                let labels: BTreeMap<String, String> =
                    summary.labels.unwrap_or_default().into_iter().collect();
                let mounts = summary.mounts.unwrap_or_default();
                ProjectContainer {
                    id: summary.id.unwrap_or_default(),
                    names: summary
                        .names
                        .unwrap_or_default()
                        .into_iter()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .collect(),
                    image: summary.image.unwrap_or_default(),
                    command: summary.command.unwrap_or_default(),
                    created: summary.created.unwrap_or_default(),
                    state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
                    status: summary.status.unwrap_or_default(),
                    health: summary
                        .health
                        .and_then(|h| h.status)
                        .map(|s| s.to_string())
                        .filter(|s| s != "none")
                        .unwrap_or_default(),
                    ports: summary
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| {
                            (
                                p.ip.unwrap_or_default(),
                                p.private_port,
                                p.public_port,
                                p.typ.map(|t| t.to_string()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    networks: summary
                        .network_settings
                        .and_then(|n| n.networks)
                        .map(|n| n.into_keys().collect())
                        .unwrap_or_default(),
                    local_volumes: mounts
                        .iter()
                        .filter(|m| {
                            m.name.is_some()
                                && m.driver
                                    .as_deref()
                                    .is_none_or(|d| d.is_empty() || d == "local")
                        })
                        .count(),
                    mounts: mounts
                        .into_iter()
                        .filter_map(|m| m.name.or(m.source))
                        .collect(),
                    labels,
                }
            })
            .filter(|c| {
                !c.labels
                    .get(labels::COMPOSE_ONEOFF)
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            })
            .collect();
        let key = |c: &ProjectContainer| {
            (
                c.labels.get(labels::COMPOSE_PROJECT).cloned(),
                c.labels.get(labels::COMPOSE_SERVICE).cloned(),
                c.names.first().cloned(),
            )
        };
        containers.sort_by_key(key);
        Ok(containers)
    }

    /// Stops a container, killing it after `timeout_secs`. Stopping a stopped one is not an error.
    pub async fn stop_container(&self, id: &str, timeout_secs: i32) -> Result<(), DockerError> {
        let options = StopContainerOptions {
            t: Some(timeout_secs),
            signal: None,
        };
        let stopped = self.docker.stop_container(id, Some(options)).await;
        self.state_change(id, "stop", "stopped", stopped)
    }

    /// Restarts a container (stop with `timeout_secs` grace, optionally with `signal`, then start).
    ///
    /// Engines before API 1.42 (Docker 20.10) ignore the restart's `signal` and send the container's
    /// own stop signal, so a `signal` is sent here with a kill, whatever the engine's version, and
    /// the container gets `timeout_secs` to exit before the restart kills it.
    pub async fn restart_container(
        &self,
        id: &str,
        timeout_secs: i32,
        signal: Option<&str>,
    ) -> Result<(), DockerError> {
        let mut timeout = timeout_secs;
        if let Some(signal) = signal
            && self.container_running(id).await?
        {
            self.signal_container(id, signal).await?;
            let grace = std::time::Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && self.container_running(id).await? {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            timeout = 0;
        }
        let options = RestartContainerOptions {
            t: Some(timeout),
            signal: signal.map(str::to_string),
        };
        self.docker
            .restart_container(id, Some(options))
            .await
            .map_err(|e| self.error(&format!("restart container {id}"), e))?;
        tracing::info!(container = id, "restarted container");
        Ok(())
    }

    /// Container events of containers doco-cd deployed (label `cd.doco.metadata.manager=doco-cd`),
    /// from `since_nanos` (Unix nanoseconds; the engine replays the events it still holds from that
    /// instant on, at most 256) on. The stream ends or fails when the engine goes away; callers
    /// re-subscribe.
    pub fn container_events(
        &self,
        since_nanos: Option<i64>,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, DockerError>> + Send + use<> {
        let label = format!("{}={}", labels::MANAGER, labels::MANAGER_VALUE);
        self.events_labelled(label, since_nanos)
    }

    /// The events of containers carrying `label` (`key` or `key=value`), from `since_nanos` on.
    fn events_labelled(
        &self,
        label: String,
        since_nanos: Option<i64>,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, DockerError>> + Send + use<> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![label.clone()]),
        ]);
        let options = EventsOptions {
            since: since_nanos.map(engine_timestamp),
            until: None,
            filters: Some(filters),
        };
        let engine = self.clone();
        self.docker.events(Some(options)).map(move |message| {
            message.map(ContainerEvent::from_message).map_err(|e| {
                engine.error(
                    &format!("follow the events of containers labelled {label}"),
                    e,
                )
            })
        })
    }

    /// Whether the image `reference` (`name:tag`, `name@digest` or an id) exists locally.
    pub async fn image_present(&self, reference: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.error(&format!("inspect image {reference}"), e)),
        }
    }

    /// The image container `id` was created from (its `Config.Image`, as written in the compose
    /// file) and the repository digests of the image it runs: what `force_image_pull` compares
    /// with the registry.
    pub async fn local_image(&self, id: &str) -> Result<LocalImage, DockerError> {
        let container = self.inspect(id).await?;
        let reference = container
            .config
            .and_then(|config| config.image)
            .unwrap_or_default();
        let image_id = container.image.unwrap_or_default();
        let image =
            self.docker.inspect_image(&image_id).await.map_err(|e| {
                self.error(&format!("inspect image {image_id} of container {id}"), e)
            })?;
        Ok(LocalImage {
            reference,
            repo_digests: image.repo_digests.unwrap_or_default(),
        })
    }

    /// Whether the engine is an active Swarm manager (where upstream deploys with `docker stack`).
    pub async fn is_swarm_manager(&self) -> Result<bool, DockerError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.error("read the engine's info", e))?;
        let swarm = info.swarm.unwrap_or_default();
        let active = swarm
            .local_node_state
            .is_some_and(|state| state == bollard::models::LocalNodeState::ACTIVE);
        Ok(active && swarm.control_available.unwrap_or(false))
    }

    /// The daemon-side source of the mount at `destination` in container `container_id` (how
    /// doco-cd, running in a container, learns where its data volume lives on the host); `None` when
    /// nothing is mounted there.
    pub async fn mount_source(
        &self,
        container_id: &str,
        destination: &Path,
    ) -> Result<Option<PathBuf>, DockerError> {
        let inspected = self.inspect(container_id).await?;
        Ok(inspected
            .mounts
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.destination.as_deref().map(Path::new) == Some(destination))
            .and_then(|m| m.source.map(PathBuf::from)))
    }

    /// The output of container `id`'s last health check, if it has one.
    pub async fn last_health_output(&self, id: &str) -> Result<Option<String>, DockerError> {
        let inspected = self.inspect(id).await?;
        Ok(inspected
            .state
            .and_then(|state| state.health)
            .and_then(|health| health.log)
            .and_then(|log| log.into_iter().last())
            .and_then(|last| last.output)
            .map(|output| output.trim().to_string()))
    }

    /// Whether container `id` is running now.
    async fn container_running(&self, id: &str) -> Result<bool, DockerError> {
        let inspected = self.inspect(id).await?;
        Ok(inspected
            .state
            .and_then(|state| state.running)
            .unwrap_or(false))
    }

    /// Sends `signal` (a name such as `SIGHUP`, or a number) to container `id`.
    pub async fn signal_container(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(id, Some(options))
            .await
            .map_err(|e| self.error(&format!("send {signal} to container {id}"), e))?;
        tracing::info!(container = id, signal, "signalled container");
        Ok(())
    }

    /// Removes image `id` unless a container (of any stack, running or not) uses it; returns
    /// whether it was removed.
    pub async fn remove_unused_image(&self, id: &str) -> Result<bool, DockerError> {
        match self
            .docker
            .remove_image(
                id,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(image = id, "removed an image no container uses any more");
                Ok(true)
            }
            // 409: a container uses it (or another tag refers to it); 404: already gone.
            Err(BollardError::DockerResponseServerError {
                status_code: 409 | 404,
                ..
            }) => Ok(false),
            Err(e) => Err(self.error(&format!("remove image {id}"), e)),
        }
    }

    /// The engine's full description of container `id`.
    pub(crate) async fn inspect(
        &self,
        id: &str,
    ) -> Result<bollard::models::ContainerInspectResponse, DockerError> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.error(&format!("inspect container {id}"), e))
    }

    fn error(&self, context: &str, source: BollardError) -> DockerError {
        let unreachable = matches!(
            source,
            BollardError::HyperLegacyError { .. }
                | BollardError::IOError { .. }
                | BollardError::RequestTimeoutError
                | BollardError::SocketNotFoundError(_)
                | BollardError::HyperResponseError { .. }
        );
        if unreachable {
            DockerError::Unreachable {
                host: self.host.clone(),
                context: context.to_string(),
                source,
            }
        } else {
            DockerError::Api {
                host: self.host.clone(),
                context: context.to_string(),
                source,
            }
        }
    }
}

mod jobs;
pub use jobs::JOB_EPHEMERAL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_cursors_keep_their_nanoseconds() {
        assert_eq!(
            engine_timestamp(1_700_000_000_000_000_001),
            "1700000000.000000001"
        );
        assert_eq!(
            engine_timestamp(1_700_000_000_120_000_000),
            "1700000000.120000000"
        );
        assert_eq!(engine_timestamp(0), "0.000000000");
    }
}
