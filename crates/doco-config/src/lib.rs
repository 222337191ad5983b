//! Configuration of doco-cd: environment variables, poll configs and deploy configs.
//!
//! This crate is pure: it reads only the files it is given (`*_FILE` variables, `.doco-cd.yml`
//! and the compose/env files it checks for existence) and never starts processes or opens
//! connections. Schemas, keys and defaults are those of upstream doco-cd, so existing
//! configurations work unchanged; problems that upstream ignores silently (unknown keys) become
//! warnings here.

pub mod deploy;
pub mod discovery;
pub mod error;
pub mod keys;
pub mod values;
mod yaml;

pub use deploy::{
    AutoDiscoveryConfig, BuildConfig, DeployConfig, DestroyConfig, ReconciliationConfig,
    SwarmConfig,
};
pub use error::{ConfigError, DeployConfigError, Location};
pub mod env;
pub mod poll;
pub mod resolve;
pub mod rewrite;

pub use discovery::discover_deployments;
pub use env::{
    AppConfig, GitAuthDomain, GitHubAppConfig, IpNetwork, LogFormat, LogLevel, Secret,
    VALUE_FILE_VARIABLES, encrypted_value_files, is_sops_encrypted,
};
pub use poll::{PollConfig, PollConfigs, parse_poll_configs};
pub use resolve::{
    ResolvedDeployment, load_deploy_configs, resolve_deployment, resolve_deployments,
    resolve_external, same_reference, short_reference,
};
pub use rewrite::rewrite_source_url;
