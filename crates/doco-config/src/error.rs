//! Error types of the configuration layer.
//!
//! Every error names what the user has to fix: the environment variable, or the deploy-config
//! file, document, deployment and field, with the line and column when the YAML parser knows them.
//! Secret values are never part of a message.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error in the application configuration (environment variables, `POLL_CONFIG`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value that cannot be used.
    #[error("{var}: invalid value {value:?}: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
    /// A secret variable holds a value that cannot be used (the value is not shown).
    #[error("{var}: invalid value: {reason}")]
    InvalidSecret { var: String, reason: String },
    /// Both a variable and its `_FILE` variant are set.
    #[error("both {var} and {file_var} are set: set only one of them")]
    BothSet { var: String, file_var: String },
    /// A file named by a variable could not be read.
    #[error("{var}: cannot read file {path:?}: {source}")]
    ReadFile {
        var: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Two variables contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// The poll configuration is wrong.
    #[error("{origin}{}{}: {message}", entry_text(*.index), field_text(.field.as_deref()))]
    Poll {
        /// `POLL_CONFIG` or `POLL_CONFIG_FILE (<path>)`.
        origin: String,
        /// Zero-based index of the poll entry, when known.
        index: Option<usize>,
        /// The field, e.g. `interval` or `deployments[1].name`.
        field: Option<String>,
        message: String,
    },
}

fn entry_text(index: Option<usize>) -> String {
    index.map(|i| format!(": entry {i}")).unwrap_or_default()
}

fn field_text(field: Option<&str>) -> String {
    field.map(|f| format!(": field `{f}`")).unwrap_or_default()
}

/// Where a deploy-config problem is: file, document, deployment name, line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The `.doco-cd.yml` file; `None` for a deployment defined inline in `POLL_CONFIG`.
    pub file: Option<PathBuf>,
    /// One-based document number in the file (or one-based index of the inline deployment).
    pub document: Option<usize>,
    /// The deployment name, when known.
    pub name: Option<String>,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => f.write_str("inline deployment")?,
        }
        if let Some(document) = self.document {
            if self.file.is_some() {
                write!(f, " document {document}")?;
            } else {
                write!(f, " #{document}")?;
            }
        }
        if let Some(name) = &self.name {
            write!(f, " (deployment {name:?})")?;
        }
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
            if let Some(column) = self.column {
                write!(f, " column {column}")?;
            }
        }
        Ok(())
    }
}

/// An error in a deploy configuration (`.doco-cd.yml` or inline deployment).
#[derive(Debug, thiserror::Error)]
pub enum DeployConfigError {
    /// The file is not valid YAML.
    #[error("{}: line {line} column {column}: invalid YAML: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    /// The file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The target has no deploy-config file (upstream fails the job the same way).
    #[error("{}", no_config_file_text(dir, target))]
    NoConfigFile {
        /// The directory searched: the checkout joined with `DEPLOY_CONFIG_BASE_DIR`.
        dir: PathBuf,
        /// The target (`""` for the default `.doco-cd.y(a)ml`).
        target: String,
    },
    /// A document is valid YAML but not a valid deployment.
    #[error("{location}: {}{message}", field_prefix(field.as_deref()))]
    Invalid {
        location: Box<Location>,
        /// The offending field, e.g. `compose_files` or `reconciliation.events`.
        field: Option<String>,
        message: String,
    },
}

fn no_config_file_text(dir: &Path, target: &str) -> String {
    let [yaml, yml] = crate::resolve::config_file_names(target);
    let which = if target.is_empty() {
        String::new()
    } else {
        format!(" for target `{target}`")
    };
    format!(
        "no deploy configuration{which}: neither {yaml} nor {yml} exists in {}",
        dir.display()
    )
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!("field `{f}`: ")).unwrap_or_default()
}

impl DeployConfigError {
    /// The location of an [`DeployConfigError::Invalid`] error.
    pub fn location(&self) -> Option<&Location> {
        match self {
            DeployConfigError::Invalid { location, .. } => Some(location.as_ref()),
            _ => None,
        }
    }

    /// Whether the deploy configuration asked for does not exist at all (no file for the target),
    /// as opposed to one that exists and is wrong: a webhook naming such a target is answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DeployConfigError::NoConfigFile { .. })
    }

    pub(crate) fn invalid(
        location: &Location,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        DeployConfigError::Invalid {
            location: Box::new(location.clone()),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}
