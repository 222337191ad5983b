//! Loading `.doco-cd.yml` files and resolving deployments against a checkout.
//!
//! Each YAML document is one deployment and is parsed on its own, so one broken deployment does
//! not stop the others; a file that is not YAML at all fails as a whole. Resolution turns the
//! repository-relative paths into absolute, existing paths inside the checkout, after resolving
//! symlinks, so that nothing a repository contains can make doco-cd read outside of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::deploy::{DEFAULT_ENV_FILE, DeployConfig, REMOTE_ENV_PREFIX, clean_relative};
use crate::discovery::discover_located;
use crate::error::{DeployConfigError, Location};
use crate::keys::deploy_warnings;
use crate::poll::DEFAULT_REFERENCE;
use crate::yaml;

/// A deployment ready to deploy: its config and the absolute paths it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedDeployment {
    pub config: DeployConfig,
    /// Absolute, inside the checkout (symlinks resolved).
    pub working_dir: PathBuf,
    /// Absolute, existing, in order.
    pub compose_files: Vec<PathBuf>,
    /// Absolute, existing (a missing default `.env` is dropped).
    pub env_files: Vec<PathBuf>,
    /// `remote:` env files (paths in the `repository_url` repository, prefix removed).
    pub remote_env_files: Vec<String>,
    /// The `.doco-cd.yml` it came from, `None` for inline deployments.
    pub source_file: Option<PathBuf>,
    /// Set when the deployment's files live in another repository (`repository_url`): the paths
    /// above are then empty, and the caller resolves them with [`resolve_deployment`] against that
    /// repository's checkout.
    pub external_repository: Option<String>,
    /// Set when the deployment follows another reference than the poll (its `reference` key): the
    /// paths above are then empty, and the caller resolves them with [`resolve_deployment`] against a
    /// checkout of that reference.
    pub other_reference: Option<String>,
    /// Produced by auto-discovery (one subdirectory of an `auto_discovery` deployment).
    pub auto_discovered: bool,
}

impl ResolvedDeployment {
    /// A deployment whose files live in another repository or at another reference: no paths yet,
    /// the caller resolves them against that checkout with [`resolve_deployment`].
    fn elsewhere(
        config: DeployConfig,
        source_file: Option<&Path>,
        external_repository: Option<String>,
        other_reference: Option<String>,
    ) -> ResolvedDeployment {
        ResolvedDeployment {
            config,
            working_dir: PathBuf::new(),
            compose_files: Vec::new(),
            env_files: Vec::new(),
            remote_env_files: Vec::new(),
            source_file: source_file.map(Path::to_path_buf),
            external_repository,
            other_reference,
            auto_discovered: false,
        }
    }
}

/// The deploy-config file names tried, in order, for a target (`""` = the default file).
pub fn config_file_names(target: &str) -> [String; 2] {
    if target.is_empty() {
        [".doco-cd.yaml".to_owned(), ".doco-cd.yml".to_owned()]
    } else {
        [
            format!(".doco-cd.{target}.yaml"),
            format!(".doco-cd.{target}.yml"),
        ]
    }
}

/// Reads `.doco-cd[.<target>].yaml` (before `.yml`) from `<repo_dir>/<base_dir>`; one entry per
/// YAML document. A target without its file is [`DeployConfigError::NoConfigFile`].
pub fn load_deploy_configs(
    repo_dir: &Path,
    base_dir: &str,
    target: &str,
) -> Result<Vec<Result<DeployConfig, DeployConfigError>>, DeployConfigError> {
    Ok(load_with_file(repo_dir, base_dir, target)?.1)
}

/// Like [`load_deploy_configs`], also returning the file that was read.
#[allow(clippy::type_complexity)]
pub fn load_with_file(
    repo_dir: &Path,
    base_dir: &str,
    target: &str,
) -> Result<(PathBuf, Vec<Result<DeployConfig, DeployConfigError>>), DeployConfigError> {
    let file = find_config_file(repo_dir, base_dir, target)?;
    let text = std::fs::read_to_string(&file).map_err(|source| DeployConfigError::Read {
        path: file.clone(),
        source,
    })?;
    let entries = parse_deploy_file(&text, &file)?;
    Ok((file, entries))
}

fn find_config_file(
    repo_dir: &Path,
    base_dir: &str,
    target: &str,
) -> Result<PathBuf, DeployConfigError> {
    let settings_error = |field: &str, message: String| DeployConfigError::Invalid {
        location: Box::new(Location {
            file: Some(repo_dir.to_path_buf()),
            ..Location::default()
        }),
        field: Some(field.to_owned()),
        message,
    };
    if target.contains('/') || target.contains("..") {
        return Err(settings_error(
            "target",
            format!("{target:?} must be a plain name, not a path"),
        ));
    }
    let base = clean_relative(
        "DEPLOY_CONFIG_BASE_DIR",
        base_dir.trim().trim_start_matches('/'),
    )
    .map_err(|e| settings_error("DEPLOY_CONFIG_BASE_DIR", e.message))?;
    let dir = if base == "." {
        repo_dir.to_path_buf()
    } else {
        repo_dir.join(base)
    };
    for name in config_file_names(target) {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            let root = canonical(repo_dir)?;
            let real = canonical(&candidate)?;
            if !real.starts_with(&root) {
                return Err(settings_error(
                    "file",
                    format!(
                        "{} is a symlink pointing outside the repository",
                        candidate.display()
                    ),
                ));
            }
            return Ok(candidate);
        }
    }
    Err(DeployConfigError::NoConfigFile {
        dir,
        target: target.to_owned(),
    })
}

pub(crate) fn canonical(path: &Path) -> Result<PathBuf, DeployConfigError> {
    path.canonicalize()
        .map_err(|source| DeployConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses the text of a deploy-config file: one entry per non-empty YAML document.
pub fn parse_deploy_file(
    text: &str,
    file: &Path,
) -> Result<Vec<Result<DeployConfig, DeployConfigError>>, DeployConfigError> {
    yaml::parse_values(text).map_err(|e| DeployConfigError::Syntax {
        file: file.to_path_buf(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let mut entries = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for chunk in split_documents(text) {
        let document = entries.len() + 1;
        let location = Location {
            file: Some(file.to_path_buf()),
            document: Some(document),
            ..Location::default()
        };
        let entry = parse_document(&chunk, location)
            .and_then(|config| check_unique(config, &mut names, document, file));
        entries.push(entry);
    }
    Ok(entries)
}

fn check_unique(
    config: DeployConfig,
    names: &mut BTreeMap<String, usize>,
    document: usize,
    file: &Path,
) -> Result<DeployConfig, DeployConfigError> {
    if config.name.is_empty() {
        return Ok(config);
    }
    if let Some(first) = names.get(&config.name) {
        return Err(DeployConfigError::Invalid {
            location: Box::new(Location {
                file: Some(file.to_path_buf()),
                document: Some(document),
                name: Some(config.name.clone()),
                ..Location::default()
            }),
            field: Some("name".to_owned()),
            message: format!(
                "duplicate deployment name {:?} (already used by document {first})",
                config.name
            ),
        });
    }
    names.insert(config.name.clone(), document);
    Ok(config)
}

fn parse_document(text: &str, mut location: Location) -> Result<DeployConfig, DeployConfigError> {
    let value = yaml::parse_value(text).map_err(|e| yaml_error(&location, e))?;
    if !value.is_object() {
        return Err(DeployConfigError::invalid(
            &location,
            None,
            "expected a mapping of deployment settings (name, working_dir, compose_files, ...)",
        ));
    }
    location.name = value.get("name").and_then(scalar_text);
    let mut config: DeployConfig = yaml::parse_typed(text).map_err(|e| yaml_error(&location, e))?;
    config.warnings = deploy_warnings(&value, "")
        .into_iter()
        .map(|w| format!("{location}: {w}"))
        .collect();
    config
        .validate()
        .map_err(|e| DeployConfigError::invalid(&location, Some(e.field), e.message))?;
    Ok(config)
}

pub(crate) fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn yaml_error(location: &Location, error: yaml::YamlError) -> DeployConfigError {
    let mut location = location.clone();
    if error.line > 0 {
        location.line = Some(error.line);
        location.column = Some(error.column);
    }
    DeployConfigError::Invalid {
        location: Box::new(location),
        field: (!error.path.is_empty()).then_some(error.path),
        message: error.message,
    }
}

/// Splits a YAML stream into its documents. Every returned text has the lines of the other
/// documents blanked, so positions reported by the parser are positions in the file.
/// Documents with nothing but blanks and comments are left out.
pub(crate) fn split_documents(text: &str) -> Vec<String> {
    let mut documents: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut has_content = false;
    for (blank_lines, line) in text.split_inclusive('\n').enumerate() {
        let is_start = is_marker(line, "---");
        let is_end = is_marker(line, "...");
        if is_start || is_end {
            if has_content {
                documents.push(std::mem::take(&mut current));
            }
            current = "\n".repeat(blank_lines);
            has_content = false;
            if is_start {
                // Keep content after the marker (`--- {name: a}`) at its column.
                let rest = format!("   {}", &line[3..]);
                has_content |= is_content(&rest);
                current.push_str(&rest);
            } else {
                current.push('\n');
            }
        } else if line.starts_with('%') {
            current.push('\n');
        } else {
            has_content |= is_content(line);
            current.push_str(line);
        }
    }
    if has_content {
        documents.push(current);
    }
    documents
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The deployments a poll deploys: inline ones if non-empty, else those of the repository file
/// (which must exist, as upstream requires), with `reference` defaulted to `poll_reference` and
/// every path resolved in the checkout.
#[allow(clippy::type_complexity)]
pub fn resolve_deployments(
    inline: &[DeployConfig],
    repo_dir: &Path,
    base_dir: &str,
    target: &str,
    poll_reference: &str,
) -> Result<Vec<Result<ResolvedDeployment, DeployConfigError>>, DeployConfigError> {
    let (source_file, entries) = if inline.is_empty() {
        let (file, entries) = load_with_file(repo_dir, base_dir, target)?;
        (Some(file), entries)
    } else {
        (None, validate_inline(inline))
    };
    let reference = if poll_reference.trim().is_empty() {
        DEFAULT_REFERENCE
    } else {
        poll_reference.trim()
    };
    let mut resolved = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let location = Location {
            file: source_file.clone(),
            document: Some(i + 1),
            ..Location::default()
        };
        resolved.extend(resolve_entry(
            entry,
            repo_dir,
            reference,
            &location,
            source_file.as_deref(),
        ));
    }
    Ok(unique_names(resolved))
}

/// Names must stay unique once auto-discovery has expanded: a later deployment that reuses a
/// name becomes an error (the first one keeps deploying), as upstream refuses the whole set.
fn unique_names(
    resolved: Vec<Result<ResolvedDeployment, DeployConfigError>>,
) -> Vec<Result<ResolvedDeployment, DeployConfigError>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    resolved
        .into_iter()
        .map(|entry| {
            let deployment = entry?;
            let name = deployment.config.name.clone();
            let origin = describe_origin(&deployment);
            if let Some(first) = seen.get(&name) {
                let location = Location {
                    file: deployment.source_file.clone(),
                    name: Some(name.clone()),
                    ..Location::default()
                };
                return Err(DeployConfigError::invalid(
                    &location,
                    Some("name"),
                    format!("duplicate deployment name {name:?}: {origin} and {first} both use it"),
                ));
            }
            seen.insert(name, origin);
            Ok(deployment)
        })
        .collect()
}

fn describe_origin(deployment: &ResolvedDeployment) -> String {
    if deployment.auto_discovered {
        format!(
            "the auto-discovered directory {:?}",
            deployment.config.working_dir
        )
    } else {
        format!(
            "the deployment with working_dir {:?}",
            deployment.config.working_dir
        )
    }
}

fn resolve_entry(
    entry: Result<DeployConfig, DeployConfigError>,
    repo_dir: &Path,
    reference: &str,
    location: &Location,
    source_file: Option<&Path>,
) -> Vec<Result<ResolvedDeployment, DeployConfigError>> {
    let mut config = match entry {
        Ok(config) => config,
        Err(error) => return vec![Err(error)],
    };
    if config.reference.is_none() {
        config.reference = Some(reference.to_owned());
    }
    let location = Location {
        name: (!config.name.is_empty()).then(|| config.name.clone()),
        ..location.clone()
    };
    // `reference` then names a reference of the other repository.
    if let Some(url) = config.repository_url.clone() {
        return vec![Ok(ResolvedDeployment::elsewhere(
            config,
            source_file,
            Some(url),
            None,
        ))];
    }
    if let Some(own) = config
        .reference
        .clone()
        .filter(|own| !same_reference(own, reference))
    {
        return vec![Ok(ResolvedDeployment::elsewhere(
            config,
            source_file,
            None,
            Some(own),
        ))];
    }
    if config.auto_discovery.enabled {
        return discover_located(&config, repo_dir, source_file, &location);
    }
    vec![resolve_located(config, repo_dir, source_file, &location)]
}

/// Whether two references name the same branch or tag (`main` and `refs/heads/main` do).
pub fn same_reference(a: &str, b: &str) -> bool {
    short_reference(a) == short_reference(b)
}

/// A branch or tag by its short name (`refs/heads/main` is `main`); other references as given.
pub fn short_reference(reference: &str) -> &str {
    let reference = reference.trim();
    reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("refs/tags/"))
        .unwrap_or(reference)
}

/// Validates inline deployments (a fresh copy) and checks that names are unique.
fn validate_inline(inline: &[DeployConfig]) -> Vec<Result<DeployConfig, DeployConfigError>> {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut entries = Vec::with_capacity(inline.len());
    for (i, config) in inline.iter().enumerate() {
        let location = Location {
            document: Some(i + 1),
            name: (!config.name.is_empty()).then(|| config.name.clone()),
            ..Location::default()
        };
        let mut config = config.clone();
        let entry = match config.validate() {
            Err(e) => Err(DeployConfigError::invalid(
                &location,
                Some(e.field),
                e.message,
            )),
            Ok(()) => match names.get(&config.name) {
                Some(first) if !config.name.is_empty() => Err(DeployConfigError::invalid(
                    &location,
                    Some("name"),
                    format!(
                        "duplicate deployment name {:?} (already used by inline deployment #{first})",
                        config.name
                    ),
                )),
                _ => {
                    names.insert(config.name.clone(), i + 1);
                    Ok(config)
                }
            },
        };
        entries.push(entry);
    }
    entries
}

/// Resolves one deployment's paths inside `checkout_dir` (the repository its files live in).
///
/// An auto-discovery deployment expands into several: use
/// [`crate::discovery::discover_deployments`] for those (this function refuses them).
pub fn resolve_deployment(
    config: DeployConfig,
    checkout_dir: &Path,
    source_file: Option<PathBuf>,
) -> Result<ResolvedDeployment, DeployConfigError> {
    let location = Location {
        file: source_file.clone(),
        name: (!config.name.is_empty()).then(|| config.name.clone()),
        ..Location::default()
    };
    if config.auto_discovery.enabled {
        return Err(DeployConfigError::invalid(
            &location,
            Some("auto_discovery"),
            "an auto-discovery deployment expands into one deployment per directory: expand it with discover_deployments",
        ));
    }
    let mut resolved = resolve_located(config, checkout_dir, source_file.as_deref(), &location)?;
    resolved.external_repository = None;
    Ok(resolved)
}

/// The deployments of a deploy config with `repository_url`, resolved against the export of that
/// repository (`external_tree`), as upstream reads them: the working directory, the compose files and
/// the `remote:` env files are in that repository (auto-discovery scans it), the other env files in
/// the repository holding the deploy configuration (`local_tree`, relative to its root). Local env
/// files come first, so a `remote:` file's value wins.
pub fn resolve_external(
    config: DeployConfig,
    external_tree: &Path,
    local_tree: &Path,
    source_file: Option<PathBuf>,
) -> Vec<Result<ResolvedDeployment, DeployConfigError>> {
    let location = Location {
        file: source_file.clone(),
        name: (!config.name.is_empty()).then(|| config.name.clone()),
        ..Location::default()
    };
    let local_root = match canonical(local_tree) {
        Ok(root) => root,
        Err(e) => return vec![Err(e)],
    };
    let paths = Paths {
        root: &local_root,
        location: &location,
    };
    let (local_env, remote_env) = match paths.env_files(&config.env_files, &local_root) {
        Ok(split) => split,
        Err(e) => return vec![Err(e)],
    };
    let declared_env = config.env_files.clone();
    let in_external = DeployConfig {
        env_files: remote_env,
        ..config
    };
    let resolved = if in_external.auto_discovery.enabled {
        discover_located(
            &in_external,
            external_tree,
            source_file.as_deref(),
            &location,
        )
    } else {
        vec![resolve_located(
            in_external,
            external_tree,
            source_file.as_deref(),
            &location,
        )]
    };
    resolved
        .into_iter()
        .map(|item| {
            item.map(|mut deployment| {
                deployment.env_files.splice(0..0, local_env.iter().cloned());
                deployment.config.env_files = declared_env.clone();
                deployment.external_repository = None;
                deployment
            })
        })
        .collect()
}

pub(crate) fn resolve_located(
    config: DeployConfig,
    checkout_dir: &Path,
    source_file: Option<&Path>,
    location: &Location,
) -> Result<ResolvedDeployment, DeployConfigError> {
    let root = canonical(checkout_dir)?;
    let paths = Paths {
        root: &root,
        location,
    };
    let working_dir = paths.working_dir(&config.working_dir)?;
    let compose_files = paths.compose_files(&config, &working_dir)?;
    let (env_files, remote_env_files) = paths.env_files(&config.env_files, &working_dir)?;
    Ok(ResolvedDeployment {
        config,
        working_dir,
        compose_files,
        env_files,
        remote_env_files,
        source_file: source_file.map(Path::to_path_buf),
        external_repository: None,
        other_reference: None,
        auto_discovered: false,
    })
}

/// Path checks against the real (symlink-free) repository root.
struct Paths<'a> {
    root: &'a Path,
    location: &'a Location,
}

impl Paths<'_> {
    fn error(&self, field: &str, message: String) -> DeployConfigError {
        DeployConfigError::invalid(self.location, Some(field), message)
    }

    /// The canonical form of an existing path, which must stay inside the repository.
    /// `Ok(None)` when the path (or a symlink's target) does not exist.
    fn inside(
        &self,
        field: &str,
        given: &str,
        path: &Path,
    ) -> Result<Option<PathBuf>, DeployConfigError> {
        let real = match path.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DeployConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if !real.starts_with(self.root) {
            return Err(self.error(
                field,
                format!(
                    "{given:?} resolves to {} outside the repository (through a symlink)",
                    real.display()
                ),
            ));
        }
        Ok(Some(real))
    }

    fn working_dir(&self, working_dir: &str) -> Result<PathBuf, DeployConfigError> {
        let dir = self
            .inside("working_dir", working_dir, &self.root.join(working_dir))?
            .ok_or_else(|| {
                self.error(
                    "working_dir",
                    format!("{working_dir:?} does not exist in the repository"),
                )
            })?;
        if !dir.is_dir() {
            return Err(self.error("working_dir", format!("{working_dir:?} is not a directory")));
        }
        Ok(dir)
    }

    fn compose_files(
        &self,
        config: &DeployConfig,
        working_dir: &Path,
    ) -> Result<Vec<PathBuf>, DeployConfigError> {
        let mut found = Vec::new();
        for file in &config.compose_files {
            match self.inside("compose_files", file, &working_dir.join(file))? {
                Some(real) if real.is_file() => found.push(real),
                Some(_) => {
                    return Err(
                        self.error("compose_files", format!("{file:?} is not a regular file"))
                    );
                }
                None if config.compose_files_customized => {
                    return Err(self.error(
                        "compose_files",
                        format!(
                            "{file:?} does not exist in working_dir {:?}",
                            config.working_dir
                        ),
                    ));
                }
                None => {}
            }
        }
        if found.is_empty() {
            return Err(self.error(
                "compose_files",
                format!(
                    "no compose file found in working_dir {:?} (looked for {})",
                    config.working_dir,
                    config.compose_files.join(", ")
                ),
            ));
        }
        Ok(found)
    }

    fn env_files(
        &self,
        env_files: &[String],
        working_dir: &Path,
    ) -> Result<(Vec<PathBuf>, Vec<String>), DeployConfigError> {
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for file in env_files {
            if let Some(path) = file.strip_prefix(REMOTE_ENV_PREFIX) {
                remote.push(path.to_owned());
                continue;
            }
            match self.inside("env_files", file, &working_dir.join(file))? {
                Some(real) => local.push(real),
                None if file == DEFAULT_ENV_FILE => {}
                None => {
                    return Err(self.error(
                        "env_files",
                        format!("{file:?} does not exist (relative to working_dir)"),
                    ));
                }
            }
        }
        Ok((local, remote))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_line_numbers() {
        let docs = split_documents("# head\nname: a\n---\nname: b\n--- # c\n\n---\nname: c\n...\n");
        assert_eq!(docs.len(), 3, "{docs:?}");
        assert_eq!(docs[0].lines().position(|l| l == "name: a"), Some(1));
        assert_eq!(docs[1].lines().position(|l| l == "name: b"), Some(3));
        assert_eq!(docs[2].lines().position(|l| l == "name: c"), Some(7));
    }

    #[test]
    fn split_keeps_inline_content_after_marker() {
        let docs = split_documents("--- {name: a}\n");
        assert_eq!(docs, vec!["    {name: a}\n".to_owned()]);
    }
}
