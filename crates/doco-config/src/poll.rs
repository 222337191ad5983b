//! Poll configuration (`POLL_CONFIG` / `POLL_CONFIG_FILE`, and the JSON body of the poll API).
//!
//! A YAML list of repositories to poll, each optionally with inline deployments. The interval
//! accepts upstream's three spellings (integer seconds, numeric string, Go duration) and must be
//! whole seconds and at least the minimum unless 0 (disabled).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::deploy::DeployConfig;
use crate::error::ConfigError;
use crate::keys::poll_warnings;
use crate::values::{interval_from_float, interval_from_seconds, parse_interval_str};
use crate::yaml;

/// The reference polled when none is given.
pub const DEFAULT_REFERENCE: &str = "refs/heads/main";
/// The interval when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(180);
/// Upstream's minimum poll interval (our default for `DOCO_CD_MIN_POLL_INTERVAL`).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// One repository to poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollConfig {
    /// `git` (default); `oci` is refused until it is built.
    pub source: String,
    pub url: String,
    pub reference: String,
    /// 0 = disabled (only the start-up run, or the watcher for local repositories).
    #[serde(
        deserialize_with = "deserialize_interval",
        serialize_with = "serialize_interval"
    )]
    pub interval: Duration,
    /// Custom deploy-config name: `.doco-cd.<target>.y(a)ml`.
    pub target: String,
    pub run_once: bool,
    /// Local repositories only: react to ref changes at once.
    pub watch: bool,
    /// Inline deployments; when non-empty the repository's deploy-config file is ignored.
    pub deployments: Vec<DeployConfig>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            source: "git".to_owned(),
            url: String::new(),
            reference: DEFAULT_REFERENCE.to_owned(),
            interval: DEFAULT_INTERVAL,
            target: String::new(),
            run_once: false,
            watch: true,
            deployments: Vec::new(),
        }
    }
}

fn serialize_interval<S: Serializer>(
    interval: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(interval.as_secs())
}

/// Accepts `180`, `"180"`, `"90s"`, `"1h30m"`; refuses fractions of a second and negatives.
pub fn deserialize_interval<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(IntervalVisitor)
}

struct IntervalVisitor;

impl Visitor<'_> for IntervalVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("seconds (e.g. 180) or a duration (e.g. \"90s\", \"5m\", \"1h30m\")")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        interval_from_seconds(v).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        interval_from_float(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_interval_str(v).map_err(E::custom)
    }

    // Upstream turns an explicit null into 0 (disabled).
    fn visit_unit<E: de::Error>(self) -> Result<Duration, E> {
        Ok(Duration::ZERO)
    }

    fn visit_none<E: de::Error>(self) -> Result<Duration, E> {
        Ok(Duration::ZERO)
    }
}

/// A validation failure of one poll entry: the field path and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollFieldError {
    pub field: String,
    pub message: String,
}

impl PollConfig {
    /// Normalizes and validates the entry, including its inline deployments (names unique).
    pub fn validate(&mut self, min_interval: Duration) -> Result<(), PollFieldError> {
        let fail = |field: &str, message: String| PollFieldError {
            field: field.to_owned(),
            message,
        };
        self.source = crate::deploy::normalize_source(&self.source, "sources")
            .map_err(|message| fail("source", message))?;
        self.url = normalize_git_url(&self.url);
        if self.url.is_empty() {
            return Err(fail(
                "url",
                "missing: the repository URL to poll is required".to_owned(),
            ));
        }
        self.reference = self.reference.trim().to_owned();
        if self.reference.is_empty() {
            self.reference = DEFAULT_REFERENCE.to_owned();
        }
        self.target = self.target.trim().to_owned();
        if !self.interval.is_zero() && self.interval < min_interval {
            return Err(fail(
                "interval",
                format!(
                    "{}s is below the minimum of {}s (use 0 to disable periodic polling)",
                    self.interval.as_secs(),
                    min_interval.as_secs()
                ),
            ));
        }
        self.validate_deployments()
    }

    fn validate_deployments(&mut self) -> Result<(), PollFieldError> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, deployment) in self.deployments.iter_mut().enumerate() {
            deployment.validate().map_err(|e| PollFieldError {
                field: format!("deployments[{i}].{}", e.field),
                message: e.message,
            })?;
            if deployment.name.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert(deployment.name.clone(), i) {
                return Err(PollFieldError {
                    field: format!("deployments[{i}].name"),
                    message: format!(
                        "duplicate deployment name {:?} (already used by deployments[{first}])",
                        deployment.name
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Absolute local paths become `file://` URLs, as upstream does.
pub fn normalize_git_url(raw: &str) -> String {
    let url = raw.trim();
    if url.starts_with('/') && !url.contains("://") {
        format!("file://{url}")
    } else {
        url.to_owned()
    }
}

/// Parsed poll entries plus non-fatal warnings (unknown keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollConfigs {
    pub configs: Vec<PollConfig>,
    pub warnings: Vec<String>,
}

/// Parses and validates a `POLL_CONFIG` YAML list. `origin` names the source in errors
/// (`POLL_CONFIG` or `POLL_CONFIG_FILE (/path)`).
pub fn parse_poll_configs(
    text: &str,
    origin: &str,
    min_interval: Duration,
) -> Result<PollConfigs, ConfigError> {
    let error = |index: Option<usize>, field: Option<String>, message: String| ConfigError::Poll {
        origin: origin.to_owned(),
        index,
        field,
        message,
    };
    if text.trim().is_empty() {
        return Ok(PollConfigs::default());
    }
    let value = yaml::parse_value(text).map_err(|e| {
        error(
            None,
            None,
            format!(
                "invalid YAML at line {} column {}: {}",
                e.line, e.column, e.message
            ),
        )
    })?;
    let entries = match &value {
        serde_json::Value::Null => return Ok(PollConfigs::default()),
        serde_json::Value::Array(entries) => entries,
        _ => {
            return Err(error(
                None,
                None,
                "expected a YAML list of poll entries (each starting with `- url: ...`)".to_owned(),
            ));
        }
    };
    let mut configs: Vec<PollConfig> = yaml::parse_typed(text).map_err(|e| {
        let (index, field) = split_index(&e.path);
        error(
            index,
            field,
            format!("{} (line {} column {})", e.message, e.line, e.column),
        )
    })?;
    let mut warnings = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        warnings.extend(
            poll_warnings(entry, "")
                .into_iter()
                .map(|w| format!("{origin}: entry {i}: {w}")),
        );
    }
    for (i, config) in configs.iter_mut().enumerate() {
        config
            .validate(min_interval)
            .map_err(|e| error(Some(i), Some(e.field), e.message))?;
    }
    Ok(PollConfigs { configs, warnings })
}

/// Splits `[2].deployments[0].timeout` into (Some(2), Some("deployments[0].timeout")).
fn split_index(path: &str) -> (Option<usize>, Option<String>) {
    let Some(rest) = path.strip_prefix('[') else {
        return (None, (!path.is_empty()).then(|| path.to_owned()));
    };
    let Some((index, field)) = rest.split_once(']') else {
        return (None, Some(path.to_owned()));
    };
    let field = field.trim_start_matches('.');
    (
        index.parse().ok(),
        (!field.is_empty()).then(|| field.to_owned()),
    )
}
