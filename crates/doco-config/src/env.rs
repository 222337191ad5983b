//! The application configuration, read from environment variables.
//!
//! Names, defaults and validation rules are upstream's (`internal/config/app`), so a container's
//! environment can be moved over unchanged. The binary passes `std::env::vars()`; tests pass a
//! map. An empty variable counts as unset. Our additions are `DOCO_CD_LOG_FORMAT`,
//! `DOCO_CD_MAINTAIN_OFFLINE_STATE` and `DOCO_CD_MIN_POLL_INTERVAL`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::poll::{MIN_POLL_INTERVAL, PollConfig, parse_poll_configs};
use crate::values::{parse_bool, parse_go_duration, parse_interval_str};

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; keep it out of logs, argv and URLs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `LOG_LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err("expected one of debug, info, warn, error".to_owned()),
        }
    }
}

/// `DOCO_CD_LOG_FORMAT` (our addition): `text` (default) or `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".to_owned()),
        }
    }
}

/// A CIDR network (`TRUSTED_PROXY_NETWORKS`), stored masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` belongs to the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid trusted proxy network {s:?}: expected CIDR such as 10.0.0.0/8");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let masked = match addr {
            IpAddr::V4(v4) if prefix <= 32 => IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) if prefix <= 128 => IpAddr::V6(mask_v6(u128::from(v6), prefix).into()),
            _ => return Err(bad()),
        };
        Ok(IpNetwork {
            addr: masked,
            prefix,
        })
    }
}

fn mask_v4(ip: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(ip: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        ip & (u128::MAX << (128 - u32::from(prefix)))
    }
}

/// Upstream's default `TRUSTED_PROXY_NETWORKS`.
pub const DEFAULT_TRUSTED_PROXY_NETWORKS: &str =
    "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,::1/128";

/// Variables of upstream features this implementation does not have. When set (non-empty) they are
/// listed in [`AppConfig::unsupported`] and the daemon refuses to start naming them: a setting is
/// never accepted and ignored. `MAX_DEPLOYMENT_LOOP_COUNT` joins them when set to anything but `0`
/// (see [`AppConfig::unsupported`]).
pub const UNSUPPORTED_VARIABLES: &[&str] = &[
    "DOCKER_SWARM_CONFIG_RETENTION",
    "DOCKER_SWARM_SECRET_RETENTION",
    "APPRISE_NOTIFY_BODY_TEMPLATE",
    "APPRISE_NOTIFY_BODY_TEMPLATE_FILE",
    "GIT_COMMIT_STATUS",
    "GIT_SCM_PROVIDER",
    "GIT_SCM_API_URL",
    "OCI_INSECURE_REGISTRIES",
    "OCI_VERIFY_MAX_WORKERS",
    "OCI_TRUST_POLICY",
    "OCI_TRUST_POLICY_FILE",
    "CERT_ROTATION_ENABLED",
    "CERT_ROTATION_THRESHOLD",
    "CERT_ROTATION_CHECK_INTERVAL",
    "SECRET_PROVIDER",
];

/// Prefixes of unsupported variable families (secret providers).
pub const UNSUPPORTED_PREFIXES: &[&str] = &["SECRET_PROVIDER_"];

/// The variables whose `_FILE` variant names a file holding the value (content trimmed; decrypted
/// first when SOPS-encrypted, see [`encrypted_value_files`]).
pub const VALUE_FILE_VARIABLES: &[&str] = &[
    "API_SECRET",
    "WEBHOOK_SECRET",
    "GIT_ACCESS_TOKEN",
    "GIT_AUTH_DOMAINS",
    "GITHUB_APP_ID",
    "GITHUB_APP_PRIVATE_KEY",
    "SSH_PRIVATE_KEY",
    "SSH_PRIVATE_KEY_PASSPHRASE",
    "SSH_KNOWN_HOSTS",
    "APPRISE_NOTIFY_URLS",
    "SOURCE_URL_REWRITES",
];

/// upstream's `IsEncryptedContent`: SOPS-encrypted content mentions `sops` and holds `ENC[`.
pub fn is_sops_encrypted(content: &str) -> bool {
    content.contains("sops") && content.contains("ENC[")
}

/// The files named by the `_FILE` variants of [`VALUE_FILE_VARIABLES`] whose content is
/// SOPS-encrypted (unreadable files and variables also set directly are left to
/// [`AppConfig::from_env_decrypted`] to report). The binary decrypts them and hands the plain
/// values to [`AppConfig::from_env_decrypted`]; this crate runs no program.
pub fn encrypted_value_files(vars: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let empty = BTreeMap::new();
    let env = Env {
        vars,
        decrypted: &empty,
    };
    VALUE_FILE_VARIABLES
        .iter()
        .filter(|name| env.get(name).is_none())
        .filter_map(|name| env.get(&format!("{name}_FILE")))
        .map(|path| PathBuf::from(path.trim()))
        .filter(|path| {
            std::fs::read_to_string(path).is_ok_and(|content| is_sops_encrypted(&content))
        })
        .collect()
}

/// The application configuration.
#[derive(Debug, Clone)]
pub struct AppConfig {
    // --- general / HTTP (reference §2.1)
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub http_port: u16,
    pub metrics_port: u16,
    pub http_tls_cert_file: Option<PathBuf>,
    pub http_tls_key_file: Option<PathBuf>,
    pub http_proxy: Option<String>,
    pub trusted_proxy_networks: Vec<IpNetwork>,
    pub trusted_proxy_header: String,
    pub api_secret: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub max_payload_size: u64,
    pub max_concurrent_deployments: usize,
    /// Upstream's old "deployment loop detection" (a deploy forced after this many polls at one
    /// commit); declared but unused in current upstream. Only `0` (never force) is accepted: any
    /// other value set is listed in [`AppConfig::unsupported`].
    pub max_deployment_loop_count: u32,
    pub scheduler_enabled: bool,
    pub pass_env: bool,
    pub deploy_config_base_dir: String,
    pub data_mount_path: PathBuf,
    pub data_host_path: Option<PathBuf>,
    pub poll_configs: Vec<PollConfig>,
    /// Git URL rewrite rules (lower-cased keys).
    pub source_url_rewrites: BTreeMap<String, String>,
    // --- git (§2.2)
    pub git_access_token: Option<Secret>,
    pub git_access_token_user: String,
    pub git_clone_depth: u32,
    pub git_clone_submodules: bool,
    // --- artifact store
    /// `ARTIFACT_GC_ENABLED`: whether unused exports are removed.
    pub artifact_gc_enabled: bool,
    /// `ARTIFACT_GC_INTERVAL`: how often the collector sweeps (it also sweeps at start-up).
    pub artifact_gc_interval: Duration,
    /// `ARTIFACT_GC_RETENTION_RECORDS`: unused exports kept per repository, newest first.
    pub artifact_gc_retention_records: usize,
    /// `ARTIFACT_GC_RETENTION_TTL`: unused exports younger than this are kept.
    pub artifact_gc_retention_ttl: Duration,
    pub ssh_private_key: Option<Secret>,
    pub ssh_private_key_passphrase: Option<Secret>,
    pub skip_tls_verification: bool,
    pub git_commit_status: bool,
    /// `GIT_AUTH_DOMAINS` / `_FILE`: domain-scoped credentials.
    pub git_auth_domains: Vec<GitAuthDomain>,
    /// `GITHUB_APP_ID` / `_FILE` and `GITHUB_APP_PRIVATE_KEY` / `_FILE`: both set, or neither
    /// (an incomplete pair is ignored, as upstream does).
    pub github_app: Option<GitHubAppConfig>,
    /// `SSH_KNOWN_HOSTS` / `_FILE` (our addition): known_hosts lines trusted before any host key
    /// recorded on first use.
    pub ssh_known_hosts: Option<String>,
    /// `SSH_ACCEPT_CHANGED_HOST_KEYS` (our addition, default false): replace a recorded SSH host
    /// key that changed instead of refusing to connect.
    pub ssh_accept_changed_host_keys: bool,
    // --- docker (§2.3)
    pub docker_quiet_deploy: bool,
    pub docker_swarm_features: bool,
    pub docker_swarm_config_retention: i64,
    pub docker_swarm_secret_retention: i64,
    // --- notifications (§2.4; parsed, not built yet)
    pub apprise_api_url: Option<String>,
    pub apprise_notify_urls: Option<Secret>,
    pub apprise_notify_level: String,
    pub apprise_notify_repeat_interval: Duration,
    // --- §2.6
    /// Any `SOPS_*` variable is non-empty.
    pub sops_configured: bool,
    // --- our additions
    pub maintain_offline_state: bool,
    pub min_poll_interval: Duration,
    /// Set variables of features not built (see [`UNSUPPORTED_VARIABLES`]), and
    /// `MAX_DEPLOYMENT_LOOP_COUNT` set to anything but `0`: the daemon refuses to start with them.
    pub unsupported: Vec<String>,
    /// Non-fatal findings, e.g. unknown keys in `POLL_CONFIG`.
    pub warnings: Vec<String>,
}

/// A GitHub App (global or per domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubAppConfig {
    pub app_id: String,
    pub private_key: Secret,
    /// `GITHUB_APP_INSTALLATION_ID`; 0 looks the installation up per repository.
    pub installation_id: u64,
}

/// One `GIT_AUTH_DOMAINS` entry (upstream's keys). At most one method per entry: a token, an SSH
/// key, or a GitHub App (a token and an SSH key may be combined, as upstream allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitAuthDomain {
    /// Exact hosts or `*.example.com` wildcards.
    pub domains: Vec<String>,
    pub git_access_token: Option<Secret>,
    /// Empty: the global `GIT_ACCESS_TOKEN_USER`.
    pub git_access_token_user: Option<String>,
    pub ssh_private_key: Option<Secret>,
    pub ssh_private_key_passphrase: Option<Secret>,
    pub github_app: Option<GitHubAppConfig>,
}

#[derive(serde::Deserialize)]
struct RawAuthDomain {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    git_access_token: String,
    #[serde(default)]
    git_access_token_user: String,
    #[serde(default)]
    ssh_private_key: String,
    #[serde(default)]
    ssh_private_key_passphrase: String,
    #[serde(default)]
    github_app_id: String,
    #[serde(default)]
    github_app_private_key: String,
    #[serde(default)]
    github_app_installation_id: u64,
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn git_auth_domains(env: &Env<'_>) -> Result<Vec<GitAuthDomain>, ConfigError> {
    let Some(text) = env.with_file("GIT_AUTH_DOMAINS")? else {
        return Ok(Vec::new());
    };
    let invalid = |reason: String| ConfigError::InvalidSecret {
        var: "GIT_AUTH_DOMAINS".to_owned(),
        reason,
    };
    let raw: Vec<RawAuthDomain> = serde_saphyr::from_str(&text).map_err(|e| {
        // The message may quote the YAML, which holds secrets: keep only its first line's position.
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or_default();
        invalid(format!(
            "expected a YAML list of entries with domains and credentials ({})",
            first.split(':').next().unwrap_or_default()
        ))
    })?;
    let mut out = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let domains: Vec<String> = entry
            .domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if domains.is_empty() {
            return Err(invalid(format!("entry {i} has no domains")));
        }
        let app_id = non_empty(entry.github_app_id);
        let app_key = non_empty(entry.github_app_private_key);
        let token = non_empty(entry.git_access_token);
        let key = non_empty(entry.ssh_private_key);
        let github_app = match (app_id, app_key) {
            (Some(app_id), Some(key_text)) => Some(GitHubAppConfig {
                app_id,
                private_key: Secret(key_text),
                installation_id: entry.github_app_installation_id,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(format!(
                    "entry {i}: both github_app_id and github_app_private_key are required"
                )));
            }
        };
        if github_app.is_some() && (token.is_some() || key.is_some()) {
            return Err(invalid(format!(
                "entry {i}: github app credentials cannot be combined with git_access_token or ssh_private_key"
            )));
        }
        out.push(GitAuthDomain {
            domains,
            git_access_token: token.map(Secret),
            git_access_token_user: non_empty(entry.git_access_token_user),
            ssh_private_key: key.map(Secret),
            ssh_private_key_passphrase: non_empty(entry.ssh_private_key_passphrase).map(Secret),
            github_app,
        });
    }
    Ok(out)
}

fn github_app(env: &Env<'_>) -> Result<Option<GitHubAppConfig>, ConfigError> {
    let app_id = env.with_file("GITHUB_APP_ID")?.filter(|v| !v.is_empty());
    let key = env
        .with_file("GITHUB_APP_PRIVATE_KEY")?
        .filter(|v| !v.is_empty());
    let installation_id = env.number(
        "GITHUB_APP_INSTALLATION_ID",
        0u64,
        0,
        "a whole number >= 0 (0 = look it up per repository)",
    )?;
    Ok(match (app_id, key) {
        (Some(app_id), Some(key)) => Some(GitHubAppConfig {
            app_id,
            private_key: Secret(key),
            installation_id,
        }),
        _ => None,
    })
}

/// Read access to the variables with typed parsing and variable-naming errors.
struct Env<'a> {
    vars: &'a BTreeMap<String, String>,
    /// Decrypted contents of SOPS-encrypted `_FILE` files, by path.
    decrypted: &'a BTreeMap<PathBuf, String>,
}

impl<'a> Env<'a> {
    /// The value, `None` when unset or empty (upstream treats empty as unset).
    fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            var: name.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    fn parsed<T>(
        &self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse(raw.trim()).map_err(|reason| Self::invalid(name, raw, reason)),
        }
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.parsed(name, default, parse_bool)
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name)
            .map_or_else(|| default.to_owned(), |v| v.trim().to_owned())
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.trim().to_owned())
    }

    fn port(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.parsed(name, default, |raw| match raw.parse::<u16>() {
            Ok(port) if port >= 1 => Ok(port),
            _ => Err("expected a port number 1-65535".to_owned()),
        })
    }

    fn number<T: FromStr + PartialOrd>(
        &self,
        name: &str,
        default: T,
        min: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        self.parsed(name, default, |raw| match raw.parse::<T>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!("expected {what}")),
        })
    }

    fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parsed(name, default, |raw| {
            parse_go_duration(raw)
                .map_err(|_| "expected a duration such as 90s, 5m or 1h30m".to_owned())
        })
    }

    /// A value that may come from `NAME` or from the file named by `NAME_FILE` (trimmed).
    fn with_file(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let file_var = format!("{name}_FILE");
        match (self.get(name), self.get(&file_var)) {
            (Some(_), Some(_)) => Err(ConfigError::BothSet {
                var: name.to_owned(),
                file_var,
            }),
            (Some(value), None) => Ok(Some(value.trim().to_owned())),
            (None, Some(path)) => {
                read_value_file(&file_var, Path::new(path.trim()), self.decrypted).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    fn secret(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.with_file(name)?.filter(|v| !v.is_empty()).map(Secret))
    }

    fn absolute_path(&self, name: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let path = Path::new(value.trim());
        if path.is_absolute() {
            Ok(path.to_path_buf())
        } else {
            Err(Self::invalid(name, value, "must be an absolute path"))
        }
    }
}

/// Reads a `_FILE` variable's file: content trimmed. SOPS-encrypted content is replaced by its
/// decrypted value from `decrypted`, and refused when it is not there (never used as the literal
/// value).
fn read_value_file(
    var: &str,
    path: &Path,
    decrypted: &BTreeMap<PathBuf, String>,
) -> Result<String, ConfigError> {
    let content = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        var: var.to_owned(),
        path: path.to_path_buf(),
        source,
    })?;
    let content = content.trim().to_owned();
    if is_sops_encrypted(&content) {
        return match decrypted.get(path) {
            Some(plain) => Ok(plain.trim().to_owned()),
            None => Err(ConfigError::InvalidSecret {
                var: var.to_owned(),
                reason: format!(
                    "{} is SOPS-encrypted and was not decrypted; give doco-cd its key with SOPS_AGE_KEY_FILE or SOPS_AGE_KEY",
                    path.display()
                ),
            }),
        };
    }
    Ok(content)
}

impl AppConfig {
    /// Reads the configuration from a map of environment variables. A SOPS-encrypted `_FILE` is
    /// an error here; see [`AppConfig::from_env_decrypted`].
    pub fn from_env(vars: &BTreeMap<String, String>) -> Result<AppConfig, ConfigError> {
        AppConfig::from_env_decrypted(vars, &BTreeMap::new())
    }

    /// As [`AppConfig::from_env`], with the decrypted contents of the SOPS-encrypted `_FILE` files
    /// (by path, as [`encrypted_value_files`] names them).
    pub fn from_env_decrypted(
        vars: &BTreeMap<String, String>,
        decrypted: &BTreeMap<PathBuf, String>,
    ) -> Result<AppConfig, ConfigError> {
        let env = Env { vars, decrypted };
        let http_port = env.port("HTTP_PORT", 80)?;
        let metrics_port = env.port("METRICS_PORT", 9120)?;
        if http_port == metrics_port {
            return Err(ConfigError::Conflict(format!(
                "HTTP_PORT and METRICS_PORT cannot be the same port number: {http_port}"
            )));
        }
        let min_poll_interval = env.parsed(
            "DOCO_CD_MIN_POLL_INTERVAL",
            MIN_POLL_INTERVAL,
            parse_interval_str,
        )?;
        let (poll_configs, warnings) = read_poll_configs(&env, min_poll_interval)?;
        let (http_tls_cert_file, http_tls_key_file) = tls_files(&env)?;
        let git_access_token = env.secret("GIT_ACCESS_TOKEN")?;
        check_github_app(&env, git_access_token.is_some())?;
        Ok(AppConfig {
            log_level: env.parsed("LOG_LEVEL", LogLevel::Info, str::parse)?,
            log_format: env.parsed("DOCO_CD_LOG_FORMAT", LogFormat::Text, str::parse)?,
            http_port,
            metrics_port,
            http_tls_cert_file,
            http_tls_key_file,
            http_proxy: env.optional("HTTP_PROXY"),
            trusted_proxy_networks: trusted_networks(&env)?,
            trusted_proxy_header: env.string("TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
            api_secret: env.secret("API_SECRET")?,
            webhook_secret: env.secret("WEBHOOK_SECRET")?,
            max_payload_size: env.number(
                "MAX_PAYLOAD_SIZE",
                1_048_576,
                1,
                "a size in bytes (>= 1)",
            )?,
            max_concurrent_deployments: env.number(
                "MAX_CONCURRENT_DEPLOYMENTS",
                4,
                1,
                "a whole number >= 1",
            )?,
            // Only 0 is accepted (see [`UNSUPPORTED_VARIABLES`]), so `config env` shows what is in effect.
            max_deployment_loop_count: env.number(
                "MAX_DEPLOYMENT_LOOP_COUNT",
                0,
                0,
                "a whole number >= 0",
            )?,
            scheduler_enabled: env.bool("SCHEDULER_ENABLED", true)?,
            pass_env: env.bool("PASS_ENV", false)?,
            deploy_config_base_dir: env.string("DEPLOY_CONFIG_BASE_DIR", "/"),
            data_mount_path: env
                .absolute_path("DATA_MOUNT_PATH", &env.string("DATA_MOUNT_PATH", "/data"))?,
            data_host_path: env
                .optional("DATA_HOST_PATH")
                .map(|p| env.absolute_path("DATA_HOST_PATH", &p))
                .transpose()?,
            poll_configs,
            source_url_rewrites: source_url_rewrites(&env)?,
            git_access_token,
            git_access_token_user: env.string("GIT_ACCESS_TOKEN_USER", "oauth2"),
            git_clone_depth: env.number(
                "GIT_CLONE_DEPTH",
                0,
                0,
                "a whole number >= 0 (0 = full clone)",
            )?,
            git_clone_submodules: env.bool("GIT_CLONE_SUBMODULES", true)?,
            artifact_gc_enabled: env.bool("ARTIFACT_GC_ENABLED", true)?,
            artifact_gc_interval: env.duration("ARTIFACT_GC_INTERVAL", Duration::from_secs(600))?,
            artifact_gc_retention_records: env.number(
                "ARTIFACT_GC_RETENTION_RECORDS",
                2,
                0,
                "a whole number >= 0",
            )?,
            artifact_gc_retention_ttl: env.duration("ARTIFACT_GC_RETENTION_TTL", Duration::ZERO)?,
            ssh_private_key: env.secret("SSH_PRIVATE_KEY")?,
            ssh_private_key_passphrase: env.secret("SSH_PRIVATE_KEY_PASSPHRASE")?,
            skip_tls_verification: env.bool("SKIP_TLS_VERIFICATION", false)?,
            git_commit_status: env.bool("GIT_COMMIT_STATUS", false)?,
            git_auth_domains: git_auth_domains(&env)?,
            github_app: github_app(&env)?,
            ssh_known_hosts: env.with_file("SSH_KNOWN_HOSTS")?.filter(|v| !v.is_empty()),
            ssh_accept_changed_host_keys: env.bool("SSH_ACCEPT_CHANGED_HOST_KEYS", false)?,
            docker_quiet_deploy: env.bool("DOCKER_QUIET_DEPLOY", true)?,
            docker_swarm_features: env.bool("DOCKER_SWARM_FEATURES", true)?,
            docker_swarm_config_retention: env.number(
                "DOCKER_SWARM_CONFIG_RETENTION",
                0,
                -1,
                "a whole number >= -1",
            )?,
            docker_swarm_secret_retention: env.number(
                "DOCKER_SWARM_SECRET_RETENTION",
                0,
                -1,
                "a whole number >= -1",
            )?,
            apprise_api_url: env.optional("APPRISE_API_URL"),
            apprise_notify_urls: env.secret("APPRISE_NOTIFY_URLS")?,
            apprise_notify_level: notify_level(&env)?,
            apprise_notify_repeat_interval: env
                .duration("APPRISE_NOTIFY_REPEAT_INTERVAL", Duration::from_secs(3600))?,
            sops_configured: vars
                .iter()
                .any(|(k, v)| k.starts_with("SOPS_") && !v.trim().is_empty()),
            maintain_offline_state: env.bool("DOCO_CD_MAINTAIN_OFFLINE_STATE", false)?,
            min_poll_interval,
            unsupported: unsupported(vars),
            warnings,
        })
    }
}

fn read_poll_configs(
    env: &Env<'_>,
    min_interval: Duration,
) -> Result<(Vec<PollConfig>, Vec<String>), ConfigError> {
    let (text, origin) = match (env.get("POLL_CONFIG"), env.get("POLL_CONFIG_FILE")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::BothSet {
                var: "POLL_CONFIG".to_owned(),
                file_var: "POLL_CONFIG_FILE".to_owned(),
            });
        }
        (Some(text), None) => (text.to_owned(), "POLL_CONFIG".to_owned()),
        (None, Some(path)) => {
            let path = Path::new(path.trim());
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                var: "POLL_CONFIG_FILE".to_owned(),
                path: path.to_path_buf(),
                source,
            })?;
            (text, format!("POLL_CONFIG_FILE ({})", path.display()))
        }
        (None, None) => return Ok((Vec::new(), Vec::new())),
    };
    let parsed = parse_poll_configs(&text, &origin, min_interval)?;
    Ok((parsed.configs, parsed.warnings))
}

fn tls_files(env: &Env<'_>) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let cert = env.optional("HTTP_TLS_CERT_FILE").map(PathBuf::from);
    let key = env.optional("HTTP_TLS_KEY_FILE").map(PathBuf::from);
    if cert.is_some() != key.is_some() {
        return Err(ConfigError::Conflict(
            "HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE must be set together".to_owned(),
        ));
    }
    Ok((cert, key))
}

fn check_github_app(env: &Env<'_>, has_token: bool) -> Result<(), ConfigError> {
    let app_id = env.with_file("GITHUB_APP_ID")?.filter(|v| !v.is_empty());
    let app_key = env
        .with_file("GITHUB_APP_PRIVATE_KEY")?
        .filter(|v| !v.is_empty());
    if has_token && app_id.is_some() && app_key.is_some() {
        return Err(ConfigError::Conflict(
            "GIT_ACCESS_TOKEN cannot be combined with global GitHub App credentials (GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY)"
                .to_owned(),
        ));
    }
    Ok(())
}

fn trusted_networks(env: &Env<'_>) -> Result<Vec<IpNetwork>, ConfigError> {
    let raw = env.string("TRUSTED_PROXY_NETWORKS", DEFAULT_TRUSTED_PROXY_NETWORKS);
    let mut networks: Vec<IpNetwork> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let network: IpNetwork = entry
            .parse()
            .map_err(|reason| Env::invalid("TRUSTED_PROXY_NETWORKS", &raw, reason))?;
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    Ok(networks)
}

fn notify_level(env: &Env<'_>) -> Result<String, ConfigError> {
    env.parsed("APPRISE_NOTIFY_LEVEL", "success".to_owned(), |raw| {
        let level = raw.to_ascii_lowercase();
        if ["info", "success", "warning", "failure"].contains(&level.as_str()) {
            Ok(level)
        } else {
            Err("expected one of info, success, warning, failure".to_owned())
        }
    })
}

fn source_url_rewrites(env: &Env<'_>) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(text) = env.with_file("SOURCE_URL_REWRITES")? else {
        return Ok(BTreeMap::new());
    };
    let invalid = |reason: String| ConfigError::InvalidSecret {
        var: "SOURCE_URL_REWRITES".to_owned(),
        reason,
    };
    let raw: BTreeMap<String, String> = serde_saphyr::from_str(&text).map_err(|e| {
        invalid(format!(
            "expected a YAML map of match rule to rewrite target: {e}"
        ))
    })?;
    let mut rules = BTreeMap::new();
    for (key, target) in raw {
        let normalized_key = key.trim().to_ascii_lowercase();
        if normalized_key.is_empty() {
            return Err(invalid("a rewrite key must not be empty".to_owned()));
        }
        if target.trim().is_empty() {
            return Err(invalid(format!(
                "rewrite key {key:?} must have a non-empty target"
            )));
        }
        rules.insert(normalized_key, target.trim().to_owned());
    }
    Ok(rules)
}

fn unsupported(vars: &BTreeMap<String, String>) -> Vec<String> {
    vars.iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .filter(|(k, v)| {
            UNSUPPORTED_VARIABLES.contains(&k.as_str())
                || UNSUPPORTED_PREFIXES.iter().any(|p| k.starts_with(p))
                // Loop detection forced redeploys of an unchanged commit; doco-cd never does.
                || (k.as_str() == "MAX_DEPLOYMENT_LOOP_COUNT" && v.trim() != "0")
        })
        .map(|(k, _)| k.clone())
        .collect()
}
