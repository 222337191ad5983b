//! SOPS-encrypted files, as upstream handles them: detected by content (`sops` and `ENC[`), typed by
//! extension, decrypted with the real `sops` binary.
//!
//! Deployments decrypt their files **in place** in the checkout before compose reads them (compose
//! files and env files first, then the repository files the services use), so compose, the
//! fingerprints and the containers all see the plain content, exactly as upstream does. The next git
//! sync overwrites the decrypted tracked files (`checkout --force`), and a poll at the same commit never
//! renders, so nothing is decrypted twice. The app's `_FILE` secrets are decrypted at start-up by
//! [`decrypt_value_files`], and handed to doco-config, which stays free of IO beyond reading files.
//!
//! The key material never appears in argv or logs: `sops` gets it from its environment, which holds
//! only doco-cd's `SOPS_*` variables (and what the other SOPS key services need). Decrypted content
//! is written straight to a file by `sops` (deployments) or returned to the caller (`_FILE`); it is
//! never logged, nor put into an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use doco_config::ResolvedDeployment;
use doco_docker::{ComposeError, ComposeProject, RenderedProject};
use doco_process::{Cmd, ProcessError};
use tracing::info;

use crate::paths::DataPaths;

/// How long one `sops decrypt` may take (key services such as KMS or Vault are remote).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Directories never searched for encrypted files (upstream's ignore list).
const IGNORED_DIRS: &[&str] = &[".git", ".github", ".vscode", ".idea", "node_modules"];

/// The variables `sops` may see besides `SOPS_*`: what its other key services (age key in the
/// default location, PGP, AWS/GCP/Azure KMS, Vault) and proxies need. Everything else of doco-cd's
/// environment (git tokens, webhook secrets) stays out of the child.
const PASSED_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "LANG",
    "XDG_CONFIG_HOME",
    "GNUPGHOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];
const PASSED_PREFIXES: &[&str] = &["SOPS_", "AWS_", "AZURE_", "GOOGLE_", "VAULT_", "GPG_"];

/// The SOPS store a file is read and written with, from its extension (upstream's
/// `GetFileFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`
    Yaml,
    /// `.json`
    Json,
    /// `.env`
    Dotenv,
    /// `.ini`
    Ini,
    /// Anything else.
    Binary,
}

impl Format {
    /// The format of `path`, by the suffix of its name (as SOPS's `formats.Is*File`: a file named
    /// `.env` is dotenv).
    pub fn of(path: &Path) -> Format {
        let name = path.to_string_lossy();
        let ends = |suffix: &str| name.ends_with(suffix);
        if ends(".yaml") || ends(".yml") {
            Format::Yaml
        } else if ends(".json") {
            Format::Json
        } else if ends(".env") {
            Format::Dotenv
        } else if ends(".ini") {
            Format::Ini
        } else {
            Format::Binary
        }
    }

    /// The name `sops --input-type` / `--output-type` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Ini => "ini",
            Format::Binary => "binary",
        }
    }
}

/// Upstream's `IsEncryptedContent`: the content mentions `sops` and holds an `ENC[` value.
pub fn is_encrypted(content: &[u8]) -> bool {
    contains(content, b"sops") && contains(content, b"ENC[")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `path` is a regular file (symlinks followed) with SOPS-encrypted content.
pub fn is_encrypted_file(path: &Path) -> Result<bool, SopsError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(read_error(path, source)),
    }
    let content = std::fs::read(path).map_err(|source| read_error(path, source))?;
    Ok(is_encrypted(&content))
}

fn read_error(path: &Path, source: std::io::Error) -> SopsError {
    SopsError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    }
}

/// Why a file could not be decrypted. Never carries decrypted content.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    /// The file is encrypted, but doco-cd has no `SOPS_*` variable.
    #[error(
        "{} is SOPS-encrypted, but no SOPS key is configured: give doco-cd SOPS_AGE_KEY_FILE (a file \
         holding the age secret key) or SOPS_AGE_KEY, or another SOPS_* setting of the key service used",
        path.display()
    )]
    NotConfigured {
        /// The encrypted file.
        path: PathBuf,
    },
    /// `sops` refused (wrong key, corrupt file, unreachable key service).
    #[error("could not decrypt the SOPS-encrypted file {}: {reason}", path.display())]
    Failed {
        /// The encrypted file.
        path: PathBuf,
        /// `sops`'s own message (its stderr), which names no secret.
        reason: String,
    },
    /// `sops` could not be run.
    #[error("could not decrypt the SOPS-encrypted file {}: {source}", path.display())]
    Process {
        /// The encrypted file.
        path: PathBuf,
        /// Why the process failed.
        source: ProcessError,
    },
    /// Reading or replacing the file failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was attempted.
        action: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// The `sops` program and the environment it runs with.
#[derive(Debug, Clone)]
pub struct Sops {
    program: String,
    env: BTreeMap<String, String>,
}

impl Sops {
    /// `sops` with the variables of `vars` it may see (see [`PASSED_VARIABLES`]).
    pub fn from_env<I, K, V>(vars: I) -> Sops
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| {
                PASSED_VARIABLES.contains(&k.as_str())
                    || PASSED_PREFIXES.iter().any(|p| k.starts_with(p))
            })
            .collect();
        Sops {
            program: "sops".to_owned(),
            env,
        }
    }

    /// `sops` with doco-cd's own environment, read once (as upstream's `SopsKeyIsSet`).
    pub fn global() -> &'static Sops {
        static GLOBAL: OnceLock<Sops> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            Sops::from_env(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            )
        })
    }

    /// Upstream's `SopsKeyIsSet`: some `SOPS_*` variable is non-empty.
    pub fn configured(&self) -> bool {
        self.env
            .iter()
            .any(|(k, v)| k.starts_with("SOPS_") && !v.trim().is_empty())
    }

    fn command(&self, path: &Path) -> Cmd {
        let format = Format::of(path).as_str();
        let mut cmd = Cmd::new(self.program.clone())
            .env_clear()
            .args(["decrypt", "--input-type", format, "--output-type", format])
            .timeout(TIMEOUT);
        for (key, value) in &self.env {
            cmd = cmd.env(key, value);
            if key.starts_with("SOPS_") && key.ends_with("_KEY") {
                cmd = cmd.secret(value.clone());
            }
        }
        cmd.env("SOPS_DISABLE_VERSION_CHECK", "1")
    }

    async fn run(&self, path: &Path, cmd: Cmd) -> Result<String, SopsError> {
        if !self.configured() {
            return Err(SopsError::NotConfigured {
                path: path.to_path_buf(),
            });
        }
        let output = cmd.run().await.map_err(|source| SopsError::Process {
            path: path.to_path_buf(),
            source,
        })?;
        if output.success() {
            return Ok(output.stdout);
        }
        let reason = output.stderr.trim();
        Err(SopsError::Failed {
            path: path.to_path_buf(),
            reason: if reason.is_empty() {
                format!("sops exited with {:?}", output.code)
            } else {
                reason.to_owned()
            },
        })
    }

    /// The decrypted content of `path` (text formats; binary content is decoded lossily).
    pub async fn decrypt(&self, path: &Path) -> Result<String, SopsError> {
        let cmd = self.command(path).arg("--").arg(path);
        self.run(path, cmd).await
    }

    /// Replaces `path` by its decrypted content when it is SOPS-encrypted; returns whether it did.
    /// `sops` writes to a private temporary sibling that is then renamed over the file (keeping its
    /// permissions), so readers see either the encrypted or the decrypted file, never half of one.
    pub async fn decrypt_in_place(&self, path: &Path) -> Result<bool, SopsError> {
        if !is_encrypted_file(path)? {
            return Ok(false);
        }
        let io = |action: &'static str| {
            move |source| SopsError::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        let mode = std::fs::metadata(path).map_err(io("read"))?.permissions();
        let tmp = temp_sibling(path);
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create a temporary file beside"))?;
        }
        let cmd = self
            .command(path)
            .arg("--output")
            .arg(&tmp)
            .arg("--")
            .arg(path);
        let result = match self.run(path, cmd).await {
            Ok(_) => std::fs::set_permissions(&tmp, mode)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(io("replace")),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }
}

fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.doco-sops.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Why a deployment's project could not be rendered with its files decrypted.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file could not be decrypted.
    #[error(transparent)]
    Sops(#[from] SopsError),
    /// compose failed.
    #[error(transparent)]
    Compose(#[from] ComposeError),
}

impl From<RenderError> for crate::DeployError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Sops(e) => crate::DeployError::Sops(e),
            RenderError::Compose(e) => crate::DeployError::Compose(e),
        }
    }
}

/// Renders `project` after decrypting, in place, the SOPS-encrypted files of `deployment`: its
/// compose and env files first, then the files and directories under `checkout` that its services
/// read (bind-mount sources, `env_file`, configs and secrets); the project is rendered again only
/// when that second step decrypted something.
pub async fn render_decrypted(
    runtime: &dyn crate::adapters::Runtime,
    project: &ComposeProject,
    deployment: &ResolvedDeployment,
    checkout: &Path,
    paths: &DataPaths,
) -> Result<RenderedProject, RenderError> {
    let sops = Sops::global();
    let mut decrypted = 0usize;
    for file in deployment.compose_files.iter().chain(&deployment.env_files) {
        decrypted += usize::from(sops.decrypt_in_place(file).await?);
    }
    let rendered = runtime.render(project).await?;
    let mut inputs: Vec<PathBuf> = rendered
        .services
        .values()
        .flat_map(|s| s.local_inputs.iter().map(|p| paths.to_mount(p)))
        .filter(|p| p.starts_with(checkout))
        .collect();
    inputs.sort();
    inputs.dedup();
    let mut files = Vec::new();
    for input in &inputs {
        collect_files(input, &mut files);
    }
    let mut again = false;
    for file in files {
        again |= sops.decrypt_in_place(&file).await?;
    }
    decrypted += usize::from(again);
    if decrypted > 0 {
        info!("decrypted the deployment's SOPS-encrypted files in the checkout");
    }
    if again {
        return Ok(runtime.render(project).await?);
    }
    Ok(rendered)
}

/// The regular files at or below `path`, skipping [`IGNORED_DIRS`] and not following symlinked
/// directories (a symlinked file is read through its link).
fn collect_files(path: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if IGNORED_DIRS.iter().any(|d| name == *d) {
                continue;
            }
            collect_files(&entry.path(), out);
        }
    } else if meta.is_file() || path.is_file() {
        out.push(path.to_path_buf());
    }
}

/// Decrypts the SOPS-encrypted files named by `_FILE` variables of `vars` (those
/// [`doco_config::encrypted_value_files`] lists); the result goes to
/// [`doco_config::AppConfig::from_env_decrypted`].
pub async fn decrypt_value_files(
    sops: &Sops,
    vars: &BTreeMap<String, String>,
) -> Result<BTreeMap<PathBuf, String>, SopsError> {
    let mut decrypted = BTreeMap::new();
    for path in doco_config::encrypted_value_files(vars) {
        let value = sops.decrypt(&path).await?;
        decrypted.insert(path, value.trim().to_owned());
    }
    Ok(decrypted)
}

/// Why the app configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AppConfigError {
    /// A SOPS-encrypted `_FILE` could not be decrypted.
    #[error(transparent)]
    Sops(#[from] SopsError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] doco_config::ConfigError),
}

/// [`doco_config::AppConfig::from_env`] with the SOPS-encrypted `_FILE` values decrypted (by
/// `sops` with the `SOPS_*` variables of `vars`), as upstream's `LoadFileBasedEnvVars` does.
pub async fn app_config_from_env(
    vars: &BTreeMap<String, String>,
) -> Result<doco_config::AppConfig, AppConfigError> {
    let sops = Sops::from_env(vars.clone());
    let decrypted = decrypt_value_files(&sops, vars).await?;
    Ok(doco_config::AppConfig::from_env_decrypted(
        vars, &decrypted,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_by_extension() {
        for (path, want) in [
            ("a/secrets.yaml", Format::Yaml),
            ("a/secrets.yml", Format::Yaml),
            ("config.json", Format::Json),
            (".env", Format::Dotenv),
            ("dir/.env", Format::Dotenv),
            ("app.env", Format::Dotenv),
            ("settings.ini", Format::Ini),
            ("key.pem", Format::Binary),
            ("token", Format::Binary),
            ("compose.yaml.bak", Format::Binary),
        ] {
            assert_eq!(Format::of(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn detection_table() {
        let cases: &[(&str, bool)] = &[
            (
                "password: ENC[AES256_GCM,data:abc=,type:str]\nsops:\n    mac: ENC[AES256_GCM,data:x]\n",
                true,
            ),
            (
                r#"{"data": "ENC[AES256_GCM,data:abc]", "sops": {"mac": "x"}}"#,
                true,
            ),
            (
                "TOKEN=ENC[AES256_GCM,data:abc]\nsops_version=3.11.0\n",
                true,
            ),
            (
                "[s]\nk = ENC[AES256_GCM,data:abc]\n[sops]\nversion = 3.11.0\n",
                true,
            ),
            // Plain files that merely mention sops, or ENC[, are not encrypted.
            ("# decrypt with sops before use\nkey: value\n", false),
            ("TOKEN=ENC[not really]\n", false),
            ("sops: is a tool\n", false),
            ("", false),
        ];
        for (content, want) in cases {
            assert_eq!(is_encrypted(content.as_bytes()), *want, "{content}");
        }
    }

    #[test]
    fn configured_needs_a_non_empty_sops_variable() {
        assert!(!Sops::from_env([("PATH", "/bin")]).configured());
        assert!(!Sops::from_env([("SOPS_AGE_KEY", " ")]).configured());
        assert!(Sops::from_env([("SOPS_AGE_KEY_FILE", "/k")]).configured());
        let sops = Sops::from_env([("GIT_ACCESS_TOKEN", "t"), ("SOPS_AGE_KEY", "k")]);
        assert!(!sops.env.contains_key("GIT_ACCESS_TOKEN"));
    }
}
