//! Label keys, exactly as upstream doco-cd writes and reads them (`internal/docker/labels.go`), plus
//! the compose labels doco-cd reads. Keeping the same keys is what lets a user swap implementations
//! without redeploying: each adopts the stacks the other deployed.

/// The value of [`MANAGER`] on everything doco-cd deployed.
pub const MANAGER_VALUE: &str = "doco-cd";

/// Name of the deployment manager (`doco-cd`).
pub const MANAGER: &str = "cd.doco.metadata.manager";
/// doco-cd version used for the deployment.
pub const VERSION: &str = "cd.doco.metadata.version";

/// Name of the deployment (the compose project name).
pub const DEPLOYMENT_NAME: &str = "cd.doco.deployment.name";
/// Time of the deployment, RFC 3339 in UTC.
pub const DEPLOYMENT_TIMESTAMP: &str = "cd.doco.deployment.timestamp";
/// SHA-256 of the deployed compose project.
pub const DEPLOYMENT_COMPOSE_SHA: &str = "cd.doco.deployment.compose.sha";
/// Host path of the working directory the deployment ran in.
pub const DEPLOYMENT_WORKING_DIR: &str = "cd.doco.deployment.working_dir";
/// The revisions of the artifacts whose files an unchanged service still mounts (upstream ≥ v0.120):
/// one commit for a compose service, comma-separated for a Swarm service.
pub const DEPLOYMENT_PINNED_REVISIONS: &str = "cd.doco.deployment.pinned_revisions";
/// The repository paths a service mounts from the live copies of its stack (files excluded from
/// recreation), comma-separated (upstream ≥ v0.120).
pub const DEPLOYMENT_LIVE_RESOURCES: &str = "cd.doco.deployment.live_resources";
/// Deploy-config target suffix (`nas` for `.doco-cd.nas.yml`).
pub const DEPLOYMENT_CONFIG_TARGET: &str = "cd.doco.deployment.config.target";
/// Branch or tag that was deployed.
pub const DEPLOYMENT_TARGET_REF: &str = "cd.doco.deployment.target.ref";
/// Commit that is deployed.
pub const DEPLOYMENT_TARGET_SHA: &str = "cd.doco.deployment.target.sha";
/// What triggered the deployment: a commit SHA, `poll`, or an OCI digest.
pub const DEPLOYMENT_TRIGGER: &str = "cd.doco.deployment.trigger";
/// SHA-256 of the deploy config (written, never compared, as upstream).
pub const DEPLOYMENT_CONFIG_SHA: &str = "cd.doco.deployment.config.sha";
/// Whether the deployment was auto-discovered (`true`/`false`).
pub const DEPLOYMENT_AUTO_DISCOVERY: &str = "cd.doco.deployment.auto_discovery";
/// JSON of the auto-discovery settings.
pub const DEPLOYMENT_AUTO_DISCOVERY_CONFIG: &str = "cd.doco.deployment.auto_discovery.config";
/// Whether changes to the service's files should not recreate it.
pub const DEPLOYMENT_RECREATE_IGNORE: &str = "cd.doco.deployment.recreate.ignore";
/// Signal sent to the service instead of recreating it when its files change.
pub const DEPLOYMENT_RECREATE_IGNORE_SIGNAL: &str = "cd.doco.deployment.recreate.ignore.signal";
/// Earliest expiry among the deployment's certificate-bearing secrets.
pub const DEPLOYMENT_CERT_EXPIRY: &str = "cd.doco.deployment.cert.expiry";
/// Whether all certificate-bearing secrets can be rotated automatically.
pub const DEPLOYMENT_CERT_ROTATABLE: &str = "cd.doco.deployment.cert.rotatable";
/// JSON of the deployed certificate references.
pub const DEPLOYMENT_CERT_STATE: &str = "cd.doco.deployment.cert.state";

/// Source type: `git` or `oci`.
pub const SOURCE: &str = "cd.doco.source";
/// Repository or artifact name (`kimdre/doco-cd`).
pub const SOURCE_NAME: &str = "cd.doco.source.name";
/// Repository or artifact URL.
pub const SOURCE_URL: &str = "cd.doco.source.url";

/// Deprecated; still read for compatibility, never written.
pub const DEPRECATED_AUTO_DISCOVER: &str = "cd.doco.deployment.auto_discover";
/// Deprecated; still read for compatibility, never written.
pub const DEPRECATED_AUTO_DISCOVER_DELETE: &str = "cd.doco.deployment.auto_discover.delete";
/// Deprecated; still read for compatibility, never written.
pub const DEPRECATED_AUTO_DISCOVERY_DELETE: &str = "cd.doco.deployment.auto_discovery.delete";

/// Prefix of the labels configuring scheduled jobs (kept in upstream's compose hash).
pub const JOB_PREFIX: &str = "cd.doco.job.";
/// Prefix of every doco-cd label.
pub const DOCO_PREFIX: &str = "cd.doco.";

/// Compose: the project a container belongs to.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// Compose: the service a container belongs to.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Compose: hash of the service configuration the container was created from.
pub const COMPOSE_CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// Compose: `True` for `docker compose run` containers.
pub const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";
/// Compose: the replica number of the container within its service.
pub const COMPOSE_CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
/// Compose: the project's working directory.
pub const COMPOSE_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// Compose: the project's compose files, comma-separated.
pub const COMPOSE_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
/// Compose: prefix of every compose label.
pub const COMPOSE_PREFIX: &str = "com.docker.compose.";
