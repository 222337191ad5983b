//! The deploy configuration: one deployment of a `.doco-cd.yml` document or of a poll's inline
//! `deployments` list.
//!
//! The schema, keys and defaults follow upstream's `internal/config/deploy` so that existing files
//! keep working. Deserialization goes through [`RawDeployConfig`], whose `Option` fields record
//! what the user actually wrote (needed for "customized compose list" and reference defaulting);
//! [`DeployConfig::validate`] then applies upstream's rules and our stricter path rules, without
//! touching the file system (that happens in [`crate::resolve`]).

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::values::parse_bool;

/// Compose file names tried, in order, when `compose_files` is not set (compose-go's defaults).
pub const DEFAULT_COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// The only env file that may be missing without error.
pub const DEFAULT_ENV_FILE: &str = ".env";

/// Prefix of env files read from the `repository_url` repository.
pub const REMOTE_ENV_PREFIX: &str = "remote:";

/// Reconciliation events upstream understands (after alias normalization).
pub const RECONCILIATION_EVENTS: [&str; 7] = [
    "die",
    "destroy",
    "update",
    "stop",
    "kill",
    "oom",
    "unhealthy",
];

/// One deployment (a compose project or Swarm stack), with upstream defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawDeployConfig")]
pub struct DeployConfig {
    pub name: String,
    /// `git` (default) or `oci`.
    pub source: String,
    /// OCI artifact layout version, default `doco.v1`.
    pub version: String,
    /// The reference to deploy; `None` means "the poll's (or webhook's) reference".
    pub reference: Option<String>,
    /// Deploy from another repository.
    pub repository_url: Option<String>,
    /// Regular expression for webhook refs (webhook only).
    pub webhook_filter: String,
    /// Docker context name, empty for the default context.
    pub context: String,
    /// Repository-relative working directory (cleaned), default `.`.
    pub working_dir: String,
    /// Compose files relative to `working_dir` (cleaned).
    pub compose_files: Vec<String>,
    /// Whether `compose_files` was given by the user (then every file must exist).
    pub compose_files_customized: bool,
    pub environment: BTreeMap<String, String>,
    /// Dotenv files relative to `working_dir`; `remote:<path>` reads from `repository_url`.
    pub env_files: Vec<String>,
    pub profiles: Vec<String>,
    pub remove_orphans: bool,
    pub prune_images: bool,
    pub wait_running_jobs: bool,
    pub force_recreate: bool,
    pub force_image_pull: bool,
    /// Seconds to wait for started services to become running/healthy.
    pub timeout: u64,
    /// Per-deployment clone depth, 0 = use `GIT_CLONE_DEPTH`.
    pub git_depth: u32,
    pub build: BuildConfig,
    pub destroy: DestroyConfig,
    pub auto_discovery: AutoDiscoveryConfig,
    pub reconciliation: ReconciliationConfig,
    pub swarm: SwarmConfig,
    /// Env var → secret reference (a string, or an object for the webhook provider). Parsed, not resolved.
    pub external_secrets: BTreeMap<String, serde_json::Value>,
    /// Per-target OCI trust policy override (kept as given; OCI is not built yet).
    pub oci: serde_json::Value,
    /// Non-fatal findings (unknown or legacy keys). Not part of the hash.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        RawDeployConfig::default().into()
    }
}

/// Build options (`build:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildConfig {
    pub force_image_pull: bool,
    pub quiet: bool,
    pub args: BTreeMap<String, String>,
    pub no_cache: bool,
}

/// Swarm options (`swarm:`); `None` = use the global `DOCKER_SWARM_*_RETENTION`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwarmConfig {
    pub config_retention: Option<i64>,
    pub secret_retention: Option<i64>,
}

/// `destroy:` — a bool or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, remote = "Self")]
pub struct DestroyConfig {
    pub enabled: bool,
    pub remove_volumes: bool,
    pub remove_images: bool,
    pub remove_dir: bool,
}

impl Default for DestroyConfig {
    fn default() -> Self {
        DestroyConfig {
            enabled: false,
            remove_volumes: true,
            remove_images: true,
            remove_dir: true,
        }
    }
}

/// `auto_discovery:` — a bool or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, remote = "Self")]
pub struct AutoDiscoveryConfig {
    pub enabled: bool,
    /// Maximum scan depth, 0 = unlimited.
    pub depth: u32,
    pub delete: bool,
    pub remove_volumes: bool,
    pub remove_images: bool,
}

impl AutoDiscoveryConfig {
    /// Reads the `cd.doco.deployment.auto_discovery.config` label: upstream writes YAML flow style
    /// (`{enabled: true, delete: true, ...}`), this implementation JSON; both parse. An empty or
    /// unreadable label means upstream's fallback: `delete: true, remove_volumes: false,
    /// remove_images: true`.
    pub fn from_label(value: &str) -> AutoDiscoveryConfig {
        let fallback = AutoDiscoveryConfig {
            delete: true,
            remove_volumes: false,
            remove_images: true,
            ..AutoDiscoveryConfig::default()
        };
        if value.trim().is_empty() {
            return fallback;
        }
        serde_saphyr::from_str(value).unwrap_or(fallback)
    }
}

impl Default for AutoDiscoveryConfig {
    fn default() -> Self {
        AutoDiscoveryConfig {
            enabled: false,
            depth: 0,
            delete: false,
            remove_volumes: false,
            remove_images: true,
        }
    }
}

/// `reconciliation:` — a bool or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, remote = "Self")]
pub struct ReconciliationConfig {
    pub enabled: bool,
    pub events: Vec<String>,
    /// Seconds before a container is killed during a restart.
    pub restart_timeout: i64,
    /// Signal for restarts; empty = the image's stop signal.
    pub restart_signal: String,
    /// Restarts allowed within `restart_window` before suppression; 0 disables suppression.
    pub restart_limit: i64,
    /// Seconds.
    pub restart_window: i64,
}

impl Default for ReconciliationConfig {
    fn default() -> Self {
        ReconciliationConfig {
            enabled: true,
            events: vec!["unhealthy".to_owned()],
            restart_timeout: 10,
            restart_signal: String::new(),
            restart_limit: 5,
            restart_window: 300,
        }
    }
}

/// Types that accept `key: true|false` as a shorthand for `key: {enabled: ...}`.
trait Toggle: Sized + Default {
    const WHAT: &'static str;
    fn set_enabled(&mut self, enabled: bool);
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

macro_rules! toggle {
    ($ty:ty, $what:literal) => {
        impl Toggle for $ty {
            const WHAT: &'static str = $what;
            fn set_enabled(&mut self, enabled: bool) {
                self.enabled = enabled;
            }
            fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                <$ty>::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(ToggleVisitor::<$ty>(std::marker::PhantomData))
            }
        }
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    };
}

toggle!(DestroyConfig, "destroy");
toggle!(AutoDiscoveryConfig, "auto_discovery");
toggle!(ReconciliationConfig, "reconciliation");

struct ToggleVisitor<T>(std::marker::PhantomData<T>);

impl<T: Toggle> ToggleVisitor<T> {
    fn enabled(enabled: bool) -> T {
        let mut value = T::default();
        value.set_enabled(enabled);
        value
    }
}

impl<'de, T: Toggle> Visitor<'de> for ToggleVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a boolean or an object for `{}`", T::WHAT)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Ok(Self::enabled(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        parse_bool(v).map(Self::enabled).map_err(|_| {
            E::custom(format!(
                "invalid {} value {v:?}: expected a boolean or an object",
                T::WHAT
            ))
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

/// What the user wrote; `None` = absent (or null). Converted into [`DeployConfig`] with defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDeployConfig {
    pub(crate) name: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) reference: Option<String>,
    pub(crate) repository_url: Option<String>,
    pub(crate) webhook_filter: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) working_dir: Option<String>,
    pub(crate) compose_files: Option<Vec<String>>,
    /// Only present in our own serialized form (state file round trips); not a user key.
    pub(crate) compose_files_customized: Option<bool>,
    pub(crate) environment: Option<BTreeMap<String, String>>,
    pub(crate) env_files: Option<Vec<String>>,
    pub(crate) profiles: Option<Vec<String>>,
    pub(crate) remove_orphans: Option<bool>,
    pub(crate) prune_images: Option<bool>,
    pub(crate) wait_running_jobs: Option<bool>,
    pub(crate) force_recreate: Option<bool>,
    pub(crate) force_image_pull: Option<bool>,
    pub(crate) timeout: Option<u64>,
    pub(crate) git_depth: Option<u32>,
    pub(crate) build: Option<BuildConfig>,
    pub(crate) destroy: Option<DestroyConfig>,
    pub(crate) auto_discovery: Option<AutoDiscoveryConfig>,
    pub(crate) reconciliation: Option<ReconciliationConfig>,
    pub(crate) swarm: Option<SwarmConfig>,
    pub(crate) external_secrets: Option<BTreeMap<String, serde_json::Value>>,
    pub(crate) oci: Option<serde_json::Value>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl From<RawDeployConfig> for DeployConfig {
    fn from(raw: RawDeployConfig) -> Self {
        DeployConfig {
            name: raw.name.unwrap_or_default().trim().to_owned(),
            source: raw.source.unwrap_or_else(|| "git".to_owned()),
            version: raw.version.unwrap_or_else(|| "doco.v1".to_owned()),
            reference: non_empty(raw.reference),
            repository_url: non_empty(raw.repository_url),
            webhook_filter: raw.webhook_filter.unwrap_or_default(),
            context: raw.context.unwrap_or_default(),
            working_dir: raw.working_dir.unwrap_or_else(|| ".".to_owned()),
            compose_files_customized: raw
                .compose_files_customized
                .unwrap_or(raw.compose_files.is_some()),
            compose_files: raw.compose_files.unwrap_or_else(|| {
                DEFAULT_COMPOSE_FILES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
            environment: raw.environment.unwrap_or_default(),
            env_files: raw
                .env_files
                .unwrap_or_else(|| vec![DEFAULT_ENV_FILE.to_owned()]),
            profiles: raw.profiles.unwrap_or_default(),
            remove_orphans: raw.remove_orphans.unwrap_or(true),
            prune_images: raw.prune_images.unwrap_or(true),
            wait_running_jobs: raw.wait_running_jobs.unwrap_or(true),
            force_recreate: raw.force_recreate.unwrap_or(false),
            force_image_pull: raw.force_image_pull.unwrap_or(false),
            timeout: raw.timeout.unwrap_or(180),
            git_depth: raw.git_depth.unwrap_or(0),
            build: raw.build.unwrap_or_default(),
            destroy: raw.destroy.unwrap_or_default(),
            auto_discovery: raw.auto_discovery.unwrap_or_default(),
            reconciliation: raw.reconciliation.unwrap_or_default(),
            swarm: raw.swarm.unwrap_or_default(),
            external_secrets: raw.external_secrets.unwrap_or_default(),
            oci: raw.oci.unwrap_or(serde_json::Value::Null),
            warnings: Vec::new(),
        }
    }
}

/// A validation failure: the field (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

impl DeployConfig {
    /// A config with upstream defaults and the given name.
    pub fn new(name: impl Into<String>) -> Self {
        DeployConfig {
            name: name.into(),
            ..DeployConfig::default()
        }
    }

    /// sha256 hex of the canonical JSON of the config (fixed field order, sorted maps).
    pub fn hash(&self) -> String {
        // Serializing plain structs, strings, numbers and BTreeMaps to JSON cannot fail; an
        // empty digest input would still give a deterministic (if useless) hash.
        let value = serde_json::to_value(self)
            .map(canonical)
            .unwrap_or_default();
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Applies upstream's validation and normalization rules plus our path rules (lexical only).
    pub fn validate(&mut self) -> Result<(), FieldError> {
        self.validate_source()?;
        if self.name.is_empty() && !self.auto_discovery.enabled {
            return Err(field_error(
                "name",
                "missing: every deployment needs a `name` (the compose project / stack name)",
            ));
        }
        self.validate_swarm()?;
        self.validate_reconciliation()?;
        self.validate_webhook_filter()?;
        self.validate_context()?;
        self.validate_working_dir()?;
        self.validate_compose_files()?;
        self.validate_env_files()
    }

    /// A Docker context's name, as the docker CLI's context store has it (the deploy then goes to that
    /// context's engine; an unknown name fails the deploy naming it).
    fn validate_context(&mut self) -> Result<(), FieldError> {
        self.context = self.context.trim().to_owned();
        if self.context.chars().any(|c| c.is_control() || c == '/') {
            return Err(field_error(
                "context",
                format!("{:?} is not a Docker context name", self.context),
            ));
        }
        Ok(())
    }

    /// upstream forces `working_dir` into the repository: `/apps/web` is read as `apps/web`.
    /// Accepted likewise, with a warning, since it looks like a host path and is not one.
    fn validate_working_dir(&mut self) -> Result<(), FieldError> {
        let given = self.working_dir.trim();
        if !given.starts_with('/') {
            self.working_dir = clean_relative("working_dir", given)?;
            return Ok(());
        }
        let cleaned = clean_rooted(given);
        self.warnings.push(format!(
            "working_dir {given:?} is absolute: read as {cleaned:?}, relative to the repository (as upstream does)"
        ));
        self.working_dir = cleaned;
        Ok(())
    }

    fn validate_webhook_filter(&self) -> Result<(), FieldError> {
        if self.webhook_filter.is_empty() {
            return Ok(());
        }
        regex::Regex::new(&self.webhook_filter)
            .map(|_| ())
            .map_err(|e| {
                field_error(
                    "webhook_filter",
                    format!("not a valid regular expression: {e}"),
                )
            })
    }

    /// upstream's `webhook_filter`: whether a webhook for `reference` may deploy this deployment
    /// (always, when no filter is set; a filter is validated when the configuration is read).
    pub fn accepts_webhook_ref(&self, reference: &str) -> bool {
        self.webhook_filter.is_empty()
            || regex::Regex::new(&self.webhook_filter)
                .is_ok_and(|filter| filter.is_match(reference))
    }

    fn validate_source(&mut self) -> Result<(), FieldError> {
        self.source = normalize_source(&self.source, "deployments")
            .map_err(|message| field_error("source", message))?;
        self.version = self.version.trim().to_owned();
        if self.version.is_empty() {
            self.version = "doco.v1".to_owned();
        }
        Ok(())
    }

    fn validate_swarm(&self) -> Result<(), FieldError> {
        if self.swarm.config_retention.is_some_and(|r| r < -1) {
            return Err(field_error("swarm.config_retention", "must be >= -1"));
        }
        if self.swarm.secret_retention.is_some_and(|r| r < -1) {
            return Err(field_error("swarm.secret_retention", "must be >= -1"));
        }
        Ok(())
    }

    fn validate_reconciliation(&mut self) -> Result<(), FieldError> {
        let r = &mut self.reconciliation;
        if r.restart_timeout < 0 {
            return Err(field_error(
                "reconciliation.restart_timeout",
                "must be >= 0",
            ));
        }
        if r.restart_limit < 0 {
            return Err(field_error("reconciliation.restart_limit", "must be >= 0"));
        }
        if r.restart_window < 0 {
            return Err(field_error("reconciliation.restart_window", "must be >= 0"));
        }
        if r.restart_limit > 0 && r.restart_window == 0 {
            return Err(field_error(
                "reconciliation.restart_window",
                "must be > 0 when reconciliation.restart_limit is set",
            ));
        }
        r.restart_signal = r.restart_signal.trim().to_ascii_uppercase();
        r.events = normalize_events(&r.events)?;
        if r.events.is_empty() {
            r.enabled = false;
        }
        Ok(())
    }

    fn validate_compose_files(&mut self) -> Result<(), FieldError> {
        if self.compose_files.is_empty() {
            return Err(field_error(
                "compose_files",
                "must list at least one compose file",
            ));
        }
        let mut cleaned = Vec::with_capacity(self.compose_files.len());
        for file in &self.compose_files {
            cleaned.push(
                clean_relative("compose_files", file).map_err(|e| FieldError {
                    message: format!(
                        "{} (compose files are relative to working_dir and must stay inside it)",
                        e.message
                    ),
                    ..e
                })?,
            );
        }
        self.compose_files = cleaned;
        Ok(())
    }

    fn validate_env_files(&self) -> Result<(), FieldError> {
        for file in &self.env_files {
            if let Some(remote) = file.strip_prefix(REMOTE_ENV_PREFIX) {
                if self.repository_url.is_none() {
                    return Err(field_error(
                        "env_files",
                        format!("{file:?} reads from `repository_url`, which is not set"),
                    ));
                }
                clean_relative("env_files", remote)?;
                continue;
            }
            if file.trim().starts_with('/') {
                return Err(field_error(
                    "env_files",
                    format!("{file:?} is an absolute path: use a path relative to working_dir"),
                ));
            }
            // Env files are relative to working_dir but may reach up to the repository root.
            clean_relative("env_files", &format!("{}/{}", self.working_dir, file)).map_err(
                |e| FieldError {
                    message: format!("{file:?} escapes the repository with `..`"),
                    ..e
                },
            )?;
        }
        Ok(())
    }
}

fn normalize_events(events: &[String]) -> Result<Vec<String>, FieldError> {
    let mut normalized: Vec<String> = Vec::with_capacity(events.len());
    for raw in events {
        let mut event = raw.trim().to_ascii_lowercase();
        if event == "remove" || event == "delete" {
            event = "destroy".to_owned();
        }
        if event.is_empty() {
            return Err(field_error(
                "reconciliation.events",
                "contains an empty event",
            ));
        }
        if !RECONCILIATION_EVENTS.contains(&event.as_str()) {
            return Err(field_error(
                "reconciliation.events",
                format!(
                    "unsupported event {raw:?}: expected one of {} (or remove/delete)",
                    RECONCILIATION_EVENTS.join(", ")
                ),
            ));
        }
        if !normalized.contains(&event) {
            normalized.push(event);
        }
    }
    Ok(normalized)
}

/// Cleans a relative path lexically (`a/./b/../c` → `a/c`), refusing absolute paths and paths
/// whose `..` components climb above their starting directory.
pub fn clean_relative(field: &'static str, path: &str) -> Result<String, FieldError> {
    let trimmed = path.trim();
    if trimmed.starts_with('/') {
        return Err(field_error(
            field,
            format!("{path:?} is an absolute path: use a path relative to the repository"),
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in trimmed.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(field_error(
                        field,
                        format!("{path:?} escapes the repository with `..`"),
                    ));
                }
            }
            other => parts.push(other),
        }
    }
    Ok(if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    })
}

/// An absolute path made relative to the repository, lexically as Go's `filepath.Clean` does for
/// a rooted path (`..` at the root stays at the root): `/apps/../web/` is `web`, `/` is `.`.
fn clean_rooted(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// Rebuilds every JSON object with sorted keys, whatever `serde_json`'s map implementation.
fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

/// A `source` value (deploy or poll config) lower-cased, empty meaning `git`; `oci` and unknown values
/// are refused with a message for the field (`what` names the config kind in it).
pub(crate) fn normalize_source(raw: &str, what: &str) -> Result<String, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "git" => Ok("git".to_owned()),
        "oci" => Err(format!(
            "`oci` {what} are not supported by this implementation yet; use `git`"
        )),
        other => Err(format!("unknown source {other:?}: expected `git` or `oci`")),
    }
}
