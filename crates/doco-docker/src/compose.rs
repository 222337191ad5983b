//! Deploys through the real `docker compose` CLI.
//!
//! Every call runs `docker compose` through [`doco_process::Cmd`] (own process group, deadline, null
//! stdin) with a cleared environment: only `PATH`, `HOME`, the daemon's Docker connection variables
//! and the project's interpolation variables reach compose, so doco-cd's own secrets (Git tokens,
//! webhook secrets) never do. Environment values are never logged.
//!
//! Labels reach the containers through an override file written by [`write_label_override`] and
//! passed as the last `-f`. Compose hashes labels into `com.docker.compose.config-hash`: giving a
//! service the same labels again leaves its container alone (a stopped one is merely started), while
//! any changed value recreates it. Callers must therefore keep the labels of an unchanged service
//! exactly as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doco_process::{Cmd, ProcessError};

use crate::endpoint::Endpoint;
use crate::render::RenderedProject;

/// Deadline for `config` and `down`, which do not pull or build.
const SHORT_TIMEOUT: Duration = Duration::from_secs(120);
/// How many trailing lines of compose's stderr an error carries.
const STDERR_TAIL_LINES: usize = 12;

/// How to invoke compose for one project. Paths are the ones compose must use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeProject {
    /// The project name (`-p`).
    pub name: String,
    /// The project directory (`--project-directory`); relative paths resolve against it, and compose
    /// runs in it.
    pub project_dir: PathBuf,
    /// Compose files (`-f`), in order; empty means compose's defaults in `project_dir`.
    pub files: Vec<PathBuf>,
    /// Interpolation env files (`--env-file`); empty means compose's default `.env`.
    pub env_files: Vec<PathBuf>,
    /// Profiles to enable (`--profile`).
    pub profiles: Vec<String>,
    /// Interpolation variables. They take precedence over env files, as upstream documents; `PATH`
    /// and the Docker connection variables cannot be overridden by them.
    pub environment: BTreeMap<String, String>,
}

/// Options of [`Compose::up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOptions {
    /// `--remove-orphans`: remove containers of services no longer in the project.
    pub remove_orphans: bool,
    /// `--force-recreate`: recreate every container even if unchanged.
    pub force_recreate: bool,
    /// `--pull`.
    pub pull: PullPolicy,
    /// Deadline for the whole `up`; the compose process group is killed when it passes.
    pub timeout: Duration,
    /// Only these services, without their dependencies (`--no-deps`); empty means the whole project.
    pub services: Vec<String>,
}

/// Options of [`Compose::build`] (the deploy config's `build:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildOptions {
    /// The services to build (`--` then their names); empty means every service with a `build`.
    pub services: Vec<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`: always pull the base images.
    pub pull: bool,
    /// `--quiet`.
    pub quiet: bool,
    /// Build arguments. Their values travel in the compose process's environment (`--build-arg KEY`),
    /// never on its command line.
    pub args: BTreeMap<String, String>,
    /// Deadline for the build.
    pub timeout: Duration,
}

/// Compose's `--pull` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every image.
    Always,
    /// Pull only images not present locally.
    Missing,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The value compose expects.
    pub fn as_arg(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::Missing => "missing",
            PullPolicy::Never => "never",
        }
    }
}

/// Why a compose call failed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// `docker` or its compose plugin is missing.
    #[error(
        "docker compose is not installed or cannot be run: {detail} (install the docker CLI and the Compose v2 plugin)"
    )]
    NotInstalled {
        /// What went wrong.
        detail: String,
    },
    /// A compose or env file given for the project does not exist.
    #[error("project `{project}`: compose file {} does not exist", path.display())]
    MissingFile {
        /// The project.
        project: String,
        /// The missing file.
        path: PathBuf,
    },
    /// The project directory does not exist.
    #[error("project `{project}`: project directory {} does not exist", path.display())]
    MissingProjectDir {
        /// The project.
        project: String,
        /// The missing directory.
        path: PathBuf,
    },
    /// Compose ran and failed.
    #[error(
        "docker compose {subcommand} failed for project `{project}`{} (exit code {}): {stderr}",
        files_note(files),
        code.map_or_else(|| "none, killed by a signal".to_string(), |c| c.to_string())
    )]
    Failed {
        /// The project.
        project: String,
        /// The subcommand (`config`, `up`, `down`).
        subcommand: String,
        /// The compose files involved.
        files: Vec<PathBuf>,
        /// The exit code, `None` if killed by a signal.
        code: Option<i32>,
        /// The useful tail of compose's stderr.
        stderr: String,
    },
    /// Compose did not finish in time; its process group was killed.
    #[error(
        "docker compose {subcommand} for project `{project}` did not finish within {}s and was stopped",
        timeout.as_secs()
    )]
    TimedOut {
        /// The project.
        project: String,
        /// The subcommand.
        subcommand: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// Compose's output could not be understood.
    #[error(
        "docker compose {subcommand} for project `{project}` printed unexpected output: {detail}"
    )]
    Output {
        /// The project.
        project: String,
        /// The subcommand.
        subcommand: String,
        /// What was wrong with it.
        detail: String,
    },
    /// Reading compose's output failed.
    #[error("docker compose {subcommand} for project `{project}`: {source}")]
    Io {
        /// The project.
        project: String,
        /// The subcommand.
        subcommand: String,
        /// The reason.
        source: std::io::Error,
    },
}

fn files_note(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    format!(" (files: {})", list.join(", "))
}

/// Runs `docker compose` for projects.
#[derive(Debug, Clone)]
pub struct Compose {
    program: String,
    docker_env: BTreeMap<String, String>,
    passed_env: BTreeMap<String, String>,
    quiet: bool,
}

impl Compose {
    /// `docker_env`: the engine and the CLI configuration compose uses ([`Compose::docker_env`]).
    /// `quiet = false` logs compose's output at info.
    pub fn new(docker_env: BTreeMap<String, String>, quiet: bool) -> Compose {
        Compose {
            program: "docker".to_string(),
            docker_env,
            passed_env: BTreeMap::new(),
            quiet,
        }
    }

    /// upstream's `PASS_ENV`: these variables (doco-cd's own environment) are available to compose's
    /// interpolation, below a deployment's `environment` (which overrides them) and above its env
    /// files (which, as in compose, do not override the process environment).
    pub fn with_passed_env(mut self, env: BTreeMap<String, String>) -> Compose {
        self.passed_env = env;
        self
    }

    /// Uses `program` instead of `docker` from `PATH` (an absolute path, or a stand-in in tests).
    pub fn with_program(mut self, program: impl Into<String>) -> Compose {
        self.program = program.into();
        self
    }

    /// The variables that point every compose process at `endpoint` ([`Endpoint::compose_env`]:
    /// the engine the API client reads) and, when given, at the docker CLI configuration
    /// directory `docker_config` (`DOCKER_CONFIG`: registry credentials).
    pub fn docker_env(
        endpoint: &Endpoint,
        docker_config: Option<&Path>,
    ) -> BTreeMap<String, String> {
        let mut env = endpoint.compose_env();
        if let Some(dir) = docker_config {
            env.insert("DOCKER_CONFIG".into(), dir.display().to_string());
        }
        env
    }

    /// The docker CLI configuration directory compose reads registry credentials from: its
    /// `DOCKER_CONFIG`, else `$HOME/.docker` of this process (compose inherits `HOME`).
    pub fn docker_config_dir(&self) -> std::path::PathBuf {
        let mut env: BTreeMap<String, String> = std::env::var("HOME")
            .map(|home| BTreeMap::from([("HOME".to_string(), home)]))
            .unwrap_or_default();
        env.extend(self.docker_env.clone());
        crate::endpoint::docker_config_dir(&env)
    }

    /// `docker compose -p NAME --project-directory DIR -f ... [--env-file ...] [--profile ...] config
    /// --format json --no-env-resolution`, parsed.
    pub async fn render(&self, project: &ComposeProject) -> Result<RenderedProject, ComposeError> {
        check_files(project, &project.files)?;
        let mut args = project_args(project, &[]);
        args.extend(
            ["config", "--format", "json", "--no-env-resolution"]
                .iter()
                .map(|s| s.to_string()),
        );
        let started = std::time::Instant::now();
        let out = self
            .run(project, "config", args, SHORT_TIMEOUT, &project.files, true)
            .await?;
        let rendered =
            RenderedProject::from_json(&out.stdout).map_err(|e| ComposeError::Output {
                project: project.name.clone(),
                subcommand: "config".into(),
                detail: e.to_string(),
            })?;
        tracing::debug!(
            project = %project.name,
            services = rendered.services.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rendered compose project"
        );
        Ok(rendered)
    }

    /// `docker compose ... -f <label_override> up -d --quiet-pull --pull <policy> [--remove-orphans]
    /// [--force-recreate] [--no-deps -- <services>]`, bounded by `options.timeout`.
    pub async fn up(
        &self,
        project: &ComposeProject,
        label_override: &Path,
        options: &UpOptions,
    ) -> Result<(), ComposeError> {
        self.up_or_create(project, label_override, options, "--detach")
            .await
    }

    /// As [`Compose::up`] with `--no-start`: the containers are created (or recreated) but not
    /// started. Scheduled jobs are deployed this way: they run when their schedule fires, never
    /// because of a deploy.
    pub async fn create(
        &self,
        project: &ComposeProject,
        label_override: &Path,
        options: &UpOptions,
    ) -> Result<(), ComposeError> {
        self.up_or_create(project, label_override, options, "--no-start")
            .await
    }

    async fn up_or_create(
        &self,
        project: &ComposeProject,
        label_override: &Path,
        options: &UpOptions,
        mode: &str,
    ) -> Result<(), ComposeError> {
        let mut files = project.files.clone();
        files.push(label_override.to_path_buf());
        check_files(project, &files)?;
        let mut args = project_args(project, &[label_override.to_path_buf()]);
        args.extend(
            ["up", mode, "--quiet-pull", "--pull", options.pull.as_arg()]
                .iter()
                .map(|s| s.to_string()),
        );
        if options.remove_orphans {
            args.push("--remove-orphans".into());
        }
        if options.force_recreate {
            args.push("--force-recreate".into());
        }
        if !options.services.is_empty() {
            args.push("--no-deps".into());
            args.push("--".into());
            args.extend(options.services.iter().cloned());
        }
        let started = std::time::Instant::now();
        self.run(project, "up", args, options.timeout, &files, false)
            .await?;
        tracing::info!(
            project = %project.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "docker compose up finished"
        );
        Ok(())
    }

    /// `docker compose ... build [--no-cache] [--pull] [--quiet] [--build-arg KEY ...] [-- <services>]`,
    /// bounded by `options.timeout`.
    pub async fn build(
        &self,
        project: &ComposeProject,
        options: &BuildOptions,
    ) -> Result<(), ComposeError> {
        check_files(project, &project.files)?;
        let args = build_args(project, options);
        let mut with_args = project.clone();
        with_args
            .environment
            .extend(options.args.iter().map(|(k, v)| (k.clone(), v.clone())));
        let started = std::time::Instant::now();
        self.run(
            &with_args,
            "build",
            args,
            options.timeout,
            &project.files,
            false,
        )
        .await?;
        tracing::info!(
            project = %project.name,
            services = ?options.services,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "docker compose build finished"
        );
        Ok(())
    }

    /// `docker compose -p NAME down --remove-orphans [--volumes] [--rmi all]`, from the containers'
    /// labels (no compose file is read).
    pub async fn down(
        &self,
        project_name: &str,
        remove_volumes: bool,
        remove_images: bool,
    ) -> Result<(), ComposeError> {
        let project = ComposeProject {
            name: project_name.to_string(),
            // Run outside any directory holding a compose file, so compose reads none.
            project_dir: PathBuf::from("/"),
            ..ComposeProject::default()
        };
        let mut args: Vec<String> = [
            "compose",
            "--ansi",
            "never",
            "-p",
            project_name,
            "down",
            "--remove-orphans",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if remove_volumes {
            args.push("--volumes".into());
        }
        if remove_images {
            args.extend(["--rmi".into(), "all".into()]);
        }
        self.run(&project, "down", args, SHORT_TIMEOUT, &[], false)
            .await?;
        tracing::info!(project = project_name, "docker compose down finished");
        Ok(())
    }

    async fn run(
        &self,
        project: &ComposeProject,
        subcommand: &str,
        args: Vec<String>,
        timeout: Duration,
        files: &[PathBuf],
        stdout_is_data: bool,
    ) -> Result<doco_process::Output, ComposeError> {
        // Checked here so that a missing directory is not mistaken for a missing `docker` (both make
        // the spawn fail with "not found").
        if !project.project_dir.is_dir() {
            return Err(ComposeError::MissingProjectDir {
                project: project.name.clone(),
                path: project.project_dir.clone(),
            });
        }
        let mut cmd = Cmd::new(self.program.clone())
            .args(&args)
            .env_clear()
            .current_dir(&project.project_dir)
            .timeout(timeout);
        // Interpolation variables first (the passed environment, then the deployment's own); the
        // variables below win over them.
        for (key, value) in self.passed_env.iter().chain(&project.environment) {
            cmd = cmd.env(key, value);
        }
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                cmd = cmd.env(key, value);
            }
        }
        for (key, value) in &self.docker_env {
            cmd = cmd.env(key, value);
        }
        tracing::debug!(project = %project.name, args = %cmd.display_args(), "running docker compose");

        let out = cmd.run().await.map_err(|e| match e {
            ProcessError::Spawn { program, source } => ComposeError::NotInstalled {
                detail: format!("cannot start `{program}`: {source}"),
            },
            ProcessError::TimedOut { timeout, .. } => ComposeError::TimedOut {
                project: project.name.clone(),
                subcommand: subcommand.to_string(),
                timeout,
            },
            ProcessError::Io { source, .. } => ComposeError::Io {
                project: project.name.clone(),
                subcommand: subcommand.to_string(),
                source,
            },
        })?;

        if !self.quiet {
            if !stdout_is_data {
                log_lines(&project.name, subcommand, &out.stdout);
            }
            log_lines(&project.name, subcommand, &out.stderr);
        }
        if out.success() {
            return Ok(out);
        }
        if is_plugin_missing(&out.stderr) {
            return Err(ComposeError::NotInstalled {
                detail: tail(&out.stderr),
            });
        }
        let err = ComposeError::Failed {
            project: project.name.clone(),
            subcommand: subcommand.to_string(),
            files: files.to_vec(),
            code: out.code,
            stderr: tail(&out.stderr),
        };
        tracing::warn!(project = %project.name, error = %err, "docker compose failed");
        Err(err)
    }
}

/// The arguments shared by `config` and `up`: `compose --ansi never -p .. --project-directory .. -f
/// ..` (the project's files, then `extra_files`), `--env-file ..`, `--profile ..`.
fn project_args(project: &ComposeProject, extra_files: &[PathBuf]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "compose".into(),
        "--ansi".into(),
        "never".into(),
        "-p".into(),
        project.name.clone(),
        "--project-directory".into(),
        project.project_dir.display().to_string(),
    ];
    // Any `-f` turns off compose's discovery of its default files, so when the project names no
    // files but an override is added, name the files compose would have found.
    if project.files.is_empty() && !extra_files.is_empty() {
        for file in default_compose_files(&project.project_dir) {
            args.extend(["-f".into(), file.display().to_string()]);
        }
    }
    for file in project.files.iter().chain(extra_files) {
        args.extend(["-f".into(), file.display().to_string()]);
    }
    for env_file in &project.env_files {
        args.extend(["--env-file".into(), env_file.display().to_string()]);
    }
    for profile in &project.profiles {
        args.extend(["--profile".into(), profile.clone()]);
    }
    args
}

/// The command line of [`Compose::build`]: build arguments by name only (their values are in the
/// environment).
fn build_args(project: &ComposeProject, options: &BuildOptions) -> Vec<String> {
    let mut args = project_args(project, &[]);
    args.push("build".into());
    let flags = [
        (options.no_cache, "--no-cache"),
        (options.pull, "--pull"),
        (options.quiet, "--quiet"),
    ];
    args.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, flag)| flag.to_string()),
    );
    for key in options.args.keys() {
        args.extend(["--build-arg".to_string(), key.clone()]);
    }
    if !options.services.is_empty() {
        args.push("--".into());
        args.extend(options.services.iter().cloned());
    }
    args
}

/// Compose's default file names, in its order of preference.
const DEFAULT_COMPOSE_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
/// Compose's default override file names, in its order of preference.
const DEFAULT_OVERRIDE_FILES: &[&str] = &[
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// The files compose picks in `dir` when given no `-f`: the first default file, then the first
/// default override file.
fn default_compose_files(dir: &Path) -> Vec<PathBuf> {
    let first = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
    match first(DEFAULT_COMPOSE_FILES) {
        Some(main) => std::iter::once(main)
            .chain(first(DEFAULT_OVERRIDE_FILES))
            .collect(),
        None => Vec::new(),
    }
}

/// Fails early, naming the project and the file, when a given compose file does not exist.
fn check_files(project: &ComposeProject, files: &[PathBuf]) -> Result<(), ComposeError> {
    for file in files {
        let path = if file.is_absolute() {
            file.clone()
        } else {
            project.project_dir.join(file)
        };
        if !path.is_file() {
            return Err(ComposeError::MissingFile {
                project: project.name.clone(),
                path,
            });
        }
    }
    Ok(())
}

fn is_plugin_missing(stderr: &str) -> bool {
    stderr.contains("'compose' is not a docker command")
        || stderr.contains("unknown command: docker compose")
        || stderr.contains("unknown shorthand flag: 'p' in -p")
}

/// The last lines of compose's stderr that say something (progress chatter dropped when there is an
/// error line).
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let text = lines[start..].join("\n");
    if text.is_empty() {
        "(no error output)".to_string()
    } else {
        text
    }
}

fn log_lines(project: &str, subcommand: &str, text: &str) {
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        tracing::info!(project, subcommand, "compose: {line}");
    }
}

/// Mounts an override takes from elsewhere than the compose files say: bind-mount entries (merged
/// by compose with the service's own by target path) and top-level config and secret files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountOverride {
    /// Per service, bind-mount entries in compose's long syntax.
    pub volumes: BTreeMap<String, Vec<serde_json::Value>>,
    /// Top-level configs by name: the file to read.
    pub configs: BTreeMap<String, PathBuf>,
    /// Top-level secrets by name: the file to read.
    pub secrets: BTreeMap<String, PathBuf>,
}

/// Writes a compose override file giving each service exactly these labels (JSON is valid YAML;
/// compose accepts it). `$` is escaped as `$$` because compose interpolates every file. Name only
/// services that exist in the project: a service present only in the override has no image.
pub fn write_label_override(
    path: &Path,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> std::io::Result<()> {
    write_override(path, labels, &MountOverride::default())
}

/// [`write_label_override`] plus the mounts of `mounts`.
pub fn write_override(
    path: &Path,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    mounts: &MountOverride,
) -> std::io::Result<()> {
    use serde_json::{Map, Value, json};
    let escape = |text: &str| Value::String(text.replace('$', "$$"));
    let mut services: Map<String, Value> = labels
        .iter()
        .map(|(service, labels)| {
            let escaped: Map<String, Value> =
                labels.iter().map(|(k, v)| (k.clone(), escape(v))).collect();
            (service.clone(), json!({ "labels": Value::Object(escaped) }))
        })
        .collect();
    for (service, volumes) in &mounts.volumes {
        let entry = services.entry(service.clone()).or_insert_with(|| json!({}));
        entry["volumes"] = Value::Array(volumes.clone());
    }
    let mut doc = json!({ "services": Value::Object(services) });
    for (kind, files) in [("configs", &mounts.configs), ("secrets", &mounts.secrets)] {
        if !files.is_empty() {
            let items: Map<String, Value> = files
                .iter()
                .map(|(name, file)| {
                    (
                        name.clone(),
                        json!({ "file": escape(&file.display().to_string()) }),
                    )
                })
                .collect();
            doc[kind] = Value::Object(items);
        }
    }
    let mut text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    text.push('\n');
    // Write beside the target and rename, so compose never reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let text = (1..=30).map(|i| format!("line {i}\n")).collect::<String>();
        let t = tail(&text);
        assert!(t.starts_with("line 19"), "{t}");
        assert!(t.ends_with("line 30"));
        assert_eq!(tail("\n\n"), "(no error output)");
    }

    #[test]
    fn build_options_become_flags_and_build_arg_values_stay_off_the_command_line() {
        let p = ComposeProject {
            name: "p".into(),
            project_dir: "/srv/p".into(),
            ..ComposeProject::default()
        };
        let options = BuildOptions {
            services: vec!["web".into()],
            no_cache: true,
            pull: true,
            quiet: true,
            args: BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]),
            timeout: Duration::from_secs(1),
        };
        let args = build_args(&p, &options);
        let tail: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .skip_while(|a| *a != "build")
            .collect();
        assert_eq!(
            tail,
            [
                "build",
                "--no-cache",
                "--pull",
                "--quiet",
                "--build-arg",
                "TOKEN",
                "--",
                "web"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("s3cret")));
        let plain = build_args(&p, &BuildOptions::default());
        assert_eq!(plain.last().map(String::as_str), Some("build"));
    }

    #[test]
    fn project_args_order() {
        let p = ComposeProject {
            name: "p".into(),
            project_dir: "/srv/p".into(),
            files: vec!["a.yml".into(), "b.yml".into()],
            env_files: vec![".env".into()],
            profiles: vec!["x".into()],
            environment: BTreeMap::new(),
        };
        let args = project_args(&p, &[PathBuf::from("/tmp/o.json")]);
        assert_eq!(
            args.join(" "),
            "compose --ansi never -p p --project-directory /srv/p -f a.yml -f b.yml -f /tmp/o.json \
             --env-file .env --profile x"
        );
    }

    #[test]
    fn label_override_escapes_dollars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.json");
        let labels = BTreeMap::from([(
            "web".to_string(),
            BTreeMap::from([("k".to_string(), "a$b".to_string())]),
        )]);
        write_label_override(&path, &labels).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["services"]["web"]["labels"]["k"], "a$$b");
    }

    #[test]
    fn failed_error_names_project_files_and_code() {
        let e = ComposeError::Failed {
            project: "p".into(),
            subcommand: "up".into(),
            files: vec!["/x/compose.yaml".into()],
            code: Some(1),
            stderr: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "docker compose up failed for project `p` (files: /x/compose.yaml) (exit code 1): boom"
        );
    }
}
