//! Auto-discovery: one deployment per directory holding a compose file.
//!
//! A deployment with `auto_discovery.enabled` is a template. Every directory under its
//! `working_dir` (the directory itself included, down to `depth` levels, 0 = unlimited) that holds
//! one of its compose files becomes a deployment named after the directory, inheriting the
//! template. A `.doco-cd.yaml` / `.doco-cd.yml` next to the compose file (exactly one document) is
//! merged on top, as upstream does: maps key by key, non-empty lists replace, objects field by
//! field, scalars override. Unlike upstream, a value the user wrote is honoured even when it is
//! `false` or `0` (upstream cannot tell it from "absent" and drops it), because presence is read
//! from the YAML itself. Fields that select *what* is deployed from *where* (`reference`,
//! `repository_url`, `auto_discovery`, `git_depth`, `source`) belong to the template and are
//! reported, not merged.
//!
//! The walk never follows symlinked directories, skips the directories upstream skips (`.git`,
//! `.github`, `.vscode`, `.idea`, `node_modules`) and visits entries in name order, so the result
//! is deterministic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::deploy::{DeployConfig, RawDeployConfig};
use crate::error::{DeployConfigError, Location};
use crate::keys::deploy_warnings;
use crate::resolve::{
    ResolvedDeployment, canonical, config_file_names, resolve_located, split_documents, yaml_error,
};
use crate::yaml;

/// Directory names the walk never enters (upstream's `filesystem.IgnoreDirs`).
pub const IGNORED_DIRS: [&str; 5] = [".git", ".github", ".vscode", ".idea", "node_modules"];

/// Fields a nested deploy config cannot override; they are inherited from the template.
pub const NOT_OVERRIDABLE: [&str; 5] = [
    "reference",
    "repository_url",
    "auto_discovery",
    "git_depth",
    "source",
];

/// Expands an auto-discovery deployment against `checkout_dir` (the repository its files live
/// in: the polled checkout, or the `repository_url` checkout). `source_file` is the
/// `.doco-cd.yml` the template came from (`None` when inline). One entry per discovered
/// directory, in path order; a problem with the template itself is a single `Err` entry.
pub fn discover_deployments(
    template: &DeployConfig,
    checkout_dir: &Path,
    source_file: Option<&Path>,
) -> Vec<Result<ResolvedDeployment, DeployConfigError>> {
    let location = Location {
        file: source_file.map(Path::to_path_buf),
        name: (!template.name.is_empty()).then(|| template.name.clone()),
        ..Location::default()
    };
    discover_located(template, checkout_dir, source_file, &location)
}

pub(crate) fn discover_located(
    template: &DeployConfig,
    checkout_dir: &Path,
    source_file: Option<&Path>,
    location: &Location,
) -> Vec<Result<ResolvedDeployment, DeployConfigError>> {
    let root = match canonical(checkout_dir) {
        Ok(root) => root,
        Err(e) => return vec![Err(e)],
    };
    let directories = match scan(template, &root, location) {
        Ok(directories) => directories,
        Err(e) => return vec![Err(e)],
    };
    // The template's own file is not a nested override of itself.
    let own_file = source_file.and_then(|f| f.canonicalize().ok());
    directories
        .into_iter()
        .map(|dir| discovered(template, &root, &dir, own_file.as_deref(), source_file))
        .collect()
}

/// The directories under the template's working_dir that hold one of its compose files.
fn scan(
    template: &DeployConfig,
    root: &Path,
    location: &Location,
) -> Result<Vec<PathBuf>, DeployConfigError> {
    let error =
        |message: String| DeployConfigError::invalid(location, Some("working_dir"), message);
    let start = root.join(&template.working_dir);
    let start = match start.canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(error(format!(
                "{:?} does not exist in the repository (auto-discovery starts there)",
                template.working_dir
            )));
        }
        Err(source) => {
            return Err(DeployConfigError::Read {
                path: start,
                source,
            });
        }
    };
    if !start.starts_with(root) {
        return Err(error(format!(
            "{:?} resolves to {} outside the repository (through a symlink)",
            template.working_dir,
            start.display()
        )));
    }
    if !start.is_dir() {
        return Err(error(format!(
            "{:?} is not a directory",
            template.working_dir
        )));
    }
    let max_depth = template.auto_discovery.depth;
    let mut found = Vec::new();
    // Depth-first, pre-order, entries by name: the order of Go's filepath.WalkDir.
    let mut stack: Vec<(PathBuf, u32)> = vec![(start, 0)];
    while let Some((dir, depth)) = stack.pop() {
        let mut files = BTreeSet::new();
        let mut subdirs = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|source| DeployConfigError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| DeployConfigError::Read {
                path: dir.clone(),
                source,
            })?;
            let kind = entry
                .file_type()
                .map_err(|source| DeployConfigError::Read {
                    path: entry.path(),
                    source,
                })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `file_type` does not follow symlinks: a symlinked directory is not entered.
            if kind.is_dir() {
                subdirs.push(name);
            } else {
                files.insert(name);
            }
        }
        if template
            .compose_files
            .iter()
            .any(|f| files.contains(f.as_str()))
        {
            found.push(dir.clone());
        }
        if max_depth > 0 && depth >= max_depth {
            continue;
        }
        subdirs.retain(|name| !IGNORED_DIRS.contains(&name.as_str()));
        subdirs.sort();
        for name in subdirs.into_iter().rev() {
            stack.push((dir.join(name), depth + 1));
        }
    }
    Ok(found)
}

/// Builds and resolves the deployment of one discovered directory.
fn discovered(
    template: &DeployConfig,
    root: &Path,
    dir: &Path,
    own_file: Option<&Path>,
    source_file: Option<&Path>,
) -> Result<ResolvedDeployment, DeployConfigError> {
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let repo_name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut config = template.clone();
    // Upstream: a directory named like the repository (the root itself, typically) keeps the
    // template's name when it has one.
    config.name = if !template.name.is_empty() && dir_name == repo_name {
        template.name.clone()
    } else {
        dir_name
    };
    config.working_dir = relative(root, dir);
    let mut location = Location {
        file: source_file.map(Path::to_path_buf),
        name: Some(config.name.clone()),
        ..Location::default()
    };
    if let Some(nested) = nested_file(dir, root, own_file)? {
        location.file = Some(nested.clone());
        if let Some(overrides) = read_nested(&nested, &location)? {
            let notes = merge_nested(&mut config, overrides.raw, &overrides.value);
            config.warnings.extend(
                overrides
                    .warnings
                    .into_iter()
                    .chain(notes)
                    .map(|w| format!("{}: {w}", nested.display())),
            );
            location.name = Some(config.name.clone());
        }
    }
    config
        .validate()
        .map_err(|e| DeployConfigError::invalid(&location, Some(e.field), e.message))?;
    let mut resolved = resolve_located(config, root, source_file, &location)?;
    resolved.auto_discovered = true;
    Ok(resolved)
}

/// `a/b` for `<root>/a/b`, `.` for the root.
fn relative(root: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// The nested deploy config of a directory (`.yaml` before `.yml`), if any.
fn nested_file(
    dir: &Path,
    root: &Path,
    own_file: Option<&Path>,
) -> Result<Option<PathBuf>, DeployConfigError> {
    for name in config_file_names("") {
        let candidate = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&candidate) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let real = canonical(&candidate)?;
        if own_file == Some(real.as_path()) {
            return Ok(None);
        }
        if !real.starts_with(root) {
            return Err(DeployConfigError::invalid(
                &Location {
                    file: Some(candidate.clone()),
                    ..Location::default()
                },
                None,
                format!(
                    "nested deploy config is a symlink to {} outside the repository",
                    real.display()
                ),
            ));
        }
        return Ok(Some(candidate));
    }
    Ok(None)
}

struct Overrides {
    raw: RawDeployConfig,
    value: Map<String, Value>,
    warnings: Vec<String>,
}

/// Parses a nested deploy config: exactly one document (an empty trailing `---` is fine), a
/// mapping. `Ok(None)` for a file without any document.
fn read_nested(file: &Path, location: &Location) -> Result<Option<Overrides>, DeployConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| DeployConfigError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    yaml::parse_values(&text).map_err(|e| DeployConfigError::Syntax {
        file: file.to_path_buf(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let documents = split_documents(&text);
    if documents.len() > 1 {
        return Err(DeployConfigError::invalid(
            &Location {
                document: Some(2),
                ..location.clone()
            },
            None,
            format!(
                "a nested deploy config must hold exactly one document, this one holds {}",
                documents.len()
            ),
        ));
    }
    let Some(document) = documents.first() else {
        return Ok(None);
    };
    let value = yaml::parse_value(document).map_err(|e| yaml_error(location, e))?;
    let Value::Object(value) = value else {
        return Err(DeployConfigError::invalid(
            location,
            None,
            "expected a mapping of deployment settings to override (environment, profiles, ...)",
        ));
    };
    let raw: RawDeployConfig = yaml::parse_typed(document).map_err(|e| yaml_error(location, e))?;
    let warnings = deploy_warnings(&Value::Object(value.clone()), "");
    Ok(Some(Overrides {
        raw,
        value,
        warnings,
    }))
}

/// The keys of `value[key]` that hold a non-null value (empty when it is not a mapping).
fn subkeys(value: &Map<String, Value>, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `value[key]` is the short `key: true|false` form of a toggle object.
fn is_toggle_shorthand(value: &Map<String, Value>, key: &str) -> bool {
    matches!(value.get(key), Some(Value::Bool(_) | Value::String(_)))
}

/// A non-empty list replaces; an empty one is ignored (noted).
fn replace_list(
    target: &mut Vec<String>,
    given: Option<Vec<String>>,
    key: &str,
    notes: &mut Vec<String>,
) {
    match given {
        Some(list) if !list.is_empty() => *target = list,
        Some(_) => notes.push(format!(
            "field `{key}`: an empty list does not override the inherited value and is ignored"
        )),
        None => {}
    }
}

/// Merges what the nested file says (`raw` for typed values, `value` for what is present) into
/// `config`. Returns notes for ignored fields.
pub(crate) fn merge_nested(
    config: &mut DeployConfig,
    raw: RawDeployConfig,
    value: &Map<String, Value>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for key in NOT_OVERRIDABLE {
        if value.get(key).is_some_and(|v| !v.is_null()) {
            notes.push(format!(
                "field `{key}` cannot be overridden by a nested deploy config and is ignored (it is inherited from the auto-discovery deployment)"
            ));
        }
    }
    if let Some(name) = raw
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
    {
        config.name = name;
    }
    let strings = [
        (raw.version, &mut config.version),
        (raw.webhook_filter, &mut config.webhook_filter),
        (raw.context, &mut config.context),
        (raw.working_dir, &mut config.working_dir),
    ];
    for (given, target) in strings {
        if let Some(given) = given {
            *target = given;
        }
    }
    let bools = [
        (raw.remove_orphans, &mut config.remove_orphans),
        (raw.prune_images, &mut config.prune_images),
        (raw.wait_running_jobs, &mut config.wait_running_jobs),
        (raw.force_recreate, &mut config.force_recreate),
        (raw.force_image_pull, &mut config.force_image_pull),
    ];
    for (given, target) in bools {
        if let Some(given) = given {
            *target = given;
        }
    }
    if let Some(timeout) = raw.timeout {
        config.timeout = timeout;
    }
    let customized = matches!(&raw.compose_files, Some(list) if !list.is_empty());
    replace_list(
        &mut config.compose_files,
        raw.compose_files,
        "compose_files",
        &mut notes,
    );
    config.compose_files_customized |= customized;
    replace_list(
        &mut config.env_files,
        raw.env_files,
        "env_files",
        &mut notes,
    );
    replace_list(&mut config.profiles, raw.profiles, "profiles", &mut notes);
    config
        .environment
        .extend(raw.environment.unwrap_or_default());
    config
        .external_secrets
        .extend(raw.external_secrets.unwrap_or_default());
    if let Some(build) = raw.build {
        for key in subkeys(value, "build") {
            match key.as_str() {
                "force_image_pull" => config.build.force_image_pull = build.force_image_pull,
                "quiet" => config.build.quiet = build.quiet,
                "no_cache" => config.build.no_cache = build.no_cache,
                "args" => config.build.args.extend(build.args.clone()),
                _ => {}
            }
        }
    }
    if let Some(destroy) = raw.destroy {
        let d = &mut config.destroy;
        if is_toggle_shorthand(value, "destroy") {
            d.enabled = destroy.enabled;
        }
        for key in subkeys(value, "destroy") {
            match key.as_str() {
                "enabled" => d.enabled = destroy.enabled,
                "remove_volumes" => d.remove_volumes = destroy.remove_volumes,
                "remove_images" => d.remove_images = destroy.remove_images,
                "remove_dir" => d.remove_dir = destroy.remove_dir,
                _ => {}
            }
        }
    }
    if let Some(reconciliation) = raw.reconciliation {
        let r = &mut config.reconciliation;
        if is_toggle_shorthand(value, "reconciliation") {
            r.enabled = reconciliation.enabled;
        }
        for key in subkeys(value, "reconciliation") {
            match key.as_str() {
                "enabled" => r.enabled = reconciliation.enabled,
                "events" => replace_list(
                    &mut r.events,
                    Some(reconciliation.events.clone()),
                    "reconciliation.events",
                    &mut notes,
                ),
                "restart_timeout" => r.restart_timeout = reconciliation.restart_timeout,
                "restart_signal" => r.restart_signal = reconciliation.restart_signal.clone(),
                "restart_limit" => r.restart_limit = reconciliation.restart_limit,
                "restart_window" => r.restart_window = reconciliation.restart_window,
                _ => {}
            }
        }
    }
    if let Some(swarm) = raw.swarm {
        for key in subkeys(value, "swarm") {
            match key.as_str() {
                "config_retention" => config.swarm.config_retention = swarm.config_retention,
                "secret_retention" => config.swarm.secret_retention = swarm.secret_retention,
                _ => {}
            }
        }
    }
    match (raw.oci, &mut config.oci) {
        (Some(Value::Object(given)), Value::Object(inherited)) => inherited.extend(given),
        (Some(Value::Null) | None, _) => {}
        (Some(given), target) => *target = given,
    }
    notes
}
