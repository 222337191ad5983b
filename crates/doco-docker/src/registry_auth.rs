//! Registry credentials for compose's pulls: the docker CLI's `config.json`, and upstream's
//! `DOCKER_AUTH_CONFIG`.
//!
//! compose pulls with the docker CLI's configuration, so doco-cd's part is to hand it the right
//! `DOCKER_CONFIG` and to find at start-up what would only fail at the first pull:
//! - a `config.json` that is not a readable JSON file is a start-up error naming it (upstream's
//!   `ValidateDockerConfig`);
//! - a `credsStore` whose `docker-credential-<name>` is not on `PATH` is a start-up error naming
//!   the binary: every pull, public images included, asks the store and would fail;
//! - a `credHelpers` entry whose binary is missing is a warning naming the binary and the
//!   registries (upstream warns the same way): pulls from the other registries still work.
//!
//! `DOCKER_AUTH_CONFIG` holds the content of a `config.json` in the environment (upstream gets it
//! from the docker CLI library, whose lookups prefer its `auths` to the file's). The compose CLI
//! is not given that variable (its environment is cleared); instead doco-cd writes, at start-up,
//! `DATA_MOUNT_PATH/.doco-cd/docker-config/config.json` (0600, in a 0700 directory): the file's
//! configuration with `DOCKER_AUTH_CONFIG`'s keys on top, `auths` merged entry by entry. compose
//! gets that directory as `DOCKER_CONFIG`. The content is never logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The directory, under doco-cd's state directory, of the configuration written for
/// `DOCKER_AUTH_CONFIG`.
pub const AUTH_CONFIG_DIR: &str = "docker-config";

/// Why the registry configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    /// `config.json` exists but cannot be read.
    #[error("the docker config file {path} is not readable: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `config.json` (or `DOCKER_AUTH_CONFIG`) is not a JSON object of the docker CLI's shape.
    #[error("{origin} is not a valid docker config: {reason}")]
    Invalid {
        /// The file, or `DOCKER_AUTH_CONFIG`.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The global credential store's helper is not installed.
    #[error(
        "{origin} sets \"credsStore\": {helper:?}, but `{binary}` is not on PATH: every image pull would fail (install it, or use inline `auths` credentials)"
    )]
    MissingStore {
        /// The file, or `DOCKER_AUTH_CONFIG`.
        origin: String,
        /// The helper name.
        helper: String,
        /// The binary looked for.
        binary: String,
    },
    /// The configuration for `DOCKER_AUTH_CONFIG` cannot be written.
    #[error("cannot write the docker config for DOCKER_AUTH_CONFIG to {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The checked registry configuration: the `DOCKER_CONFIG` compose must use, and warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The directory to give compose as `DOCKER_CONFIG`; `None` keeps the docker CLI's default
    /// (`$HOME/.docker`).
    pub docker_config: Option<PathBuf>,
    /// Things that will fail later (missing per-registry credential helpers).
    pub warnings: Vec<String>,
}

/// Checks the docker CLI configuration of `env` (`DOCKER_CONFIG`, else `$HOME/.docker`) and, with
/// `DOCKER_AUTH_CONFIG`, writes the merged configuration under `state_dir`.
pub fn prepare(
    env: &BTreeMap<String, String>,
    state_dir: &Path,
) -> Result<RegistryConfig, RegistryConfigError> {
    let dir = crate::endpoint::docker_config_dir(env);
    let file = dir.join("config.json");
    let base = read_config(&file)?;
    let path = env.get("PATH").map(String::as_str).unwrap_or_default();
    let explicit = env
        .get("DOCKER_CONFIG")
        .filter(|d| !d.trim().is_empty())
        .map(|_| dir.clone());
    let Some(auth) = env
        .get("DOCKER_AUTH_CONFIG")
        .filter(|v| !v.trim().is_empty())
    else {
        let warnings = check_helpers(&base, &file.display().to_string(), path)?;
        return Ok(RegistryConfig {
            docker_config: explicit,
            warnings,
        });
    };
    let overlay = parse_config(auth, "DOCKER_AUTH_CONFIG")?;
    let merged = merge(base, overlay);
    let warnings = check_helpers(&merged, "DOCKER_AUTH_CONFIG with the docker config", path)?;
    let target = state_dir.join(AUTH_CONFIG_DIR);
    write_private(&target, &merged)?;
    Ok(RegistryConfig {
        docker_config: Some(target),
        warnings,
    })
}

/// The configuration in `file`; an absent file is an empty configuration.
fn read_config(file: &Path) -> Result<Map<String, Value>, RegistryConfigError> {
    match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Ok(meta) if !meta.is_file() => {
            return Err(RegistryConfigError::Invalid {
                origin: file.display().to_string(),
                reason: "not a regular file".into(),
            });
        }
        _ => {}
    }
    let text = std::fs::read_to_string(file).map_err(|source| RegistryConfigError::Unreadable {
        path: file.to_path_buf(),
        source,
    })?;
    parse_config(&text, &file.display().to_string())
}

/// Parses a `config.json` content: a JSON object whose `auths` and `credHelpers` are objects and
/// whose `credsStore` is a string. The error never quotes the content.
fn parse_config(text: &str, origin: &str) -> Result<Map<String, Value>, RegistryConfigError> {
    let invalid = |reason: String| RegistryConfigError::Invalid {
        origin: origin.to_string(),
        reason,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(invalid("expected a JSON object".into()));
    };
    for key in ["auths", "credHelpers"] {
        if map.get(key).is_some_and(|v| !v.is_object()) {
            return Err(invalid(format!("`{key}` must be an object")));
        }
    }
    if map.get("credsStore").is_some_and(|v| !v.is_string()) {
        return Err(invalid("`credsStore` must be a string".into()));
    }
    Ok(map)
}

/// `overlay`'s keys on top of `base`'s; `auths` and `credHelpers` merged entry by entry.
fn merge(mut base: Map<String, Value>, overlay: Map<String, Value>) -> Map<String, Value> {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(into)), Value::Object(from))
                if key == "auths" || key == "credHelpers" =>
            {
                into.extend(from);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    base
}

/// The start-up verdict on the credential helpers of `config` with `PATH` = `path`.
fn check_helpers(
    config: &Map<String, Value>,
    origin: &str,
    path: &str,
) -> Result<Vec<String>, RegistryConfigError> {
    if let Some(helper) = config
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
    {
        let binary = format!("docker-credential-{helper}");
        if !on_path(&binary, path) {
            return Err(RegistryConfigError::MissingStore {
                origin: origin.to_string(),
                helper: helper.to_string(),
                binary,
            });
        }
    }
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let helpers = config.get("credHelpers").and_then(Value::as_object);
    for (registry, helper) in helpers.into_iter().flatten() {
        let binary = format!("docker-credential-{}", helper.as_str().unwrap_or_default());
        if !on_path(&binary, path) {
            missing.entry(binary).or_default().push(registry.clone());
        }
    }
    Ok(missing
        .into_iter()
        .map(|(binary, registries)| {
            format!(
                "{origin}: `{binary}` is not on PATH; pulls from {} will fail",
                registries.join(", ")
            )
        })
        .collect())
}

/// Whether an executable file `binary` is in one of `path`'s directories.
fn on_path(binary: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(binary))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Writes `config` to `dir/config.json`, the directory 0700 and the file 0600, replacing it
/// atomically.
fn write_private(dir: &Path, config: &Map<String, Value>) -> Result<(), RegistryConfigError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RegistryConfigError::Write { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_error(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(write_error(dir))?;
    let file = dir.join("config.json");
    let temp = dir.join(".config.json.tmp");
    // Serializing a map of JSON values cannot fail.
    let bytes = serde_json::to_vec_pretty(config).unwrap_or_default();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(write_error(&temp))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(write_error(&temp))?;
    std::fs::rename(&temp, &file).map_err(write_error(&file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A directory on a PATH holding an executable `docker-credential-<name>` for each name.
    fn helpers(names: &[&str]) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            let path = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn without_a_config_nothing_changes() {
        let home = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let vars = env(&[("HOME", &home.path().display().to_string())]);
        let config = prepare(&vars, state.path()).unwrap();
        assert_eq!(config.docker_config, None);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn a_broken_config_file_is_refused_naming_it_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let vars = env(&[("DOCKER_CONFIG", &dir.path().display().to_string())]);
        std::fs::write(dir.path().join("config.json"), "{\"auths\": sekrit").unwrap();
        let err = prepare(&vars, state.path()).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("not JSON"),
            "{err}"
        );
        assert!(!err.contains("sekrit"), "{err}");
        std::fs::write(dir.path().join("config.json"), r#"{"auths": []}"#).unwrap();
        let err = prepare(&vars, state.path()).unwrap_err().to_string();
        assert!(err.contains("`auths` must be an object"), "{err}");
    }

    #[test]
    fn a_missing_store_helper_is_an_error_and_a_missing_registry_helper_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let bin = helpers(&["pass"]);
        let docker_config = dir.path().display().to_string();
        let path = bin.path().display().to_string();
        let vars = env(&[("DOCKER_CONFIG", &docker_config), ("PATH", &path)]);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credsStore": "desktop"}"#,
        )
        .unwrap();
        let err = prepare(&vars, state.path()).unwrap_err().to_string();
        assert!(
            err.contains("`docker-credential-desktop` is not on PATH"),
            "{err}"
        );

        let config = r#"{"credsStore": "pass", "credHelpers": {"gcr.io": "gcloud", "eu.gcr.io": "gcloud", "x.io": "pass"}}"#;
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let config = prepare(&vars, state.path()).unwrap();
        assert_eq!(config.docker_config, Some(dir.path().to_path_buf()));
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        let warning = &config.warnings[0];
        assert!(
            warning.contains("`docker-credential-gcloud`") && warning.contains("eu.gcr.io, gcr.io"),
            "{warning}"
        );
    }

    #[test]
    fn the_auth_config_is_merged_over_the_file_into_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"a.io": {"auth": "ZmlsZQ=="}, "b.io": {"auth": "ZmlsZQ=="}}, "psFormat": "x"}"#,
        )
        .unwrap();
        let auth = r#"{"auths": {"b.io": {"auth": "ZW52"}, "c.io": {"auth": "ZW52"}}}"#;
        let vars = env(&[
            ("DOCKER_CONFIG", &dir.path().display().to_string()),
            ("DOCKER_AUTH_CONFIG", auth),
        ]);
        let config = prepare(&vars, state.path()).unwrap();
        let written = state.path().join(AUTH_CONFIG_DIR);
        assert_eq!(config.docker_config, Some(written.clone()));
        let merged: Value =
            serde_json::from_slice(&std::fs::read(written.join("config.json")).unwrap()).unwrap();
        assert_eq!(merged["auths"]["a.io"]["auth"], "ZmlsZQ==");
        assert_eq!(merged["auths"]["b.io"]["auth"], "ZW52");
        assert_eq!(merged["auths"]["c.io"]["auth"], "ZW52");
        assert_eq!(merged["psFormat"], "x");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&written), 0o700);
        assert_eq!(mode(&written.join("config.json")), 0o600);

        let home = state.path().display().to_string();
        let vars = env(&[
            ("HOME", &home),
            ("DOCKER_AUTH_CONFIG", "{\"auths\": \"hunter2\""),
        ]);
        let err = prepare(&vars, state.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("DOCKER_AUTH_CONFIG is not a valid docker config"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}
