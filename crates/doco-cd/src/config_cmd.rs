//! `doco-cd config check` and `doco-cd config env`: see what the daemon would do with a
//! configuration before it does it.
//!
//! `check` runs the very resolution the daemon runs on each poll (`resolve_deployments`, with
//! auto-discovery and nested overrides) on a checked-out directory, so a repository can be
//! checked in CI before it is pushed. A deployment with its own `reference` is resolved against
//! the given directory too (the daemon would use a checkout of that reference), and the output
//! says so: check out that reference to check its files. `env` shows the effective application configuration read
//! from the environment, defaults filled in and secrets replaced by `***`.
//!
//! Exit codes: 0 when everything resolves, 1 when a deploy configuration is invalid, 2 for usage
//! errors and invalid environment variables (as the daemon itself exits 2 on those).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use doco_config::poll::DEFAULT_REFERENCE;
use doco_config::{AppConfig, ResolvedDeployment, Secret};
use serde_json::{Value, json};

/// `doco-cd config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Resolve the deployments of a checked-out repository exactly as a deploy would
    /// (auto-discovery included) and print them. Warnings go to stderr. Exit 1 when the
    /// configuration is invalid, 2 on usage errors.
    Check(CheckArgs),
    /// Print the effective application configuration read from the environment (defaults
    /// filled in, secrets shown as ***). Exit 2 when a variable is invalid.
    Env(EnvArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The checked-out repository (its root; DEPLOY_CONFIG_BASE_DIR applies, from the environment).
    dir: PathBuf,
    /// Custom deploy-config target: read .doco-cd.<NAME>.yaml / .yml instead of .doco-cd.yaml / .yml.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// The reference deployments without their own `reference` get (the poll's reference).
    #[arg(long, value_name = "REF", default_value = DEFAULT_REFERENCE)]
    reference: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check(args) => check(&args),
        ConfigCommand::Env(args) => env(&args),
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    if !args.dir.is_dir() {
        eprintln!(
            "doco-cd: {}: not a directory (give the root of a checked-out repository)",
            args.dir.display()
        );
        return ExitCode::from(2);
    }
    let base_dir = std::env::var("DEPLOY_CONFIG_BASE_DIR")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let target = args.target.as_deref().unwrap_or("").trim();
    // The same call the daemon makes on every poll.
    let resolved = match doco_config::resolve_deployments(
        &[],
        &args.dir,
        &base_dir,
        target,
        &args.reference,
    ) {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let root = args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone());
    let mut deployments = Vec::new();
    let mut errors = 0;
    let mut warnings: Vec<String> = Vec::new();
    let resolved = resolved.into_iter().flat_map(|entry| match entry {
        Ok(d) if d.other_reference.is_some() && d.external_repository.is_none() => {
            resolve_here(d, &args.dir)
        }
        entry => vec![entry],
    });
    for entry in resolved {
        match entry {
            Ok(deployment) => {
                for w in &deployment.config.warnings {
                    if !warnings.contains(w) {
                        warnings.push(w.clone());
                    }
                }
                deployments.push(deployment);
            }
            Err(e) => {
                errors += 1;
                eprintln!("error: {e}");
            }
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match args.format {
        Format::Json => {
            let list: Vec<Value> = deployments.iter().map(|d| to_json(d, &root)).collect();
            emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".to_owned())
            ));
        }
        Format::Text => {
            for d in &deployments {
                print_text(d, &root);
            }
            emit(&format!(
                "{} deployment(s) resolved, {errors} error(s), {} warning(s)\n",
                deployments.len(),
                warnings.len()
            ));
        }
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A deployment that follows its own `reference`, resolved against `dir` (as if it were a checkout
/// of that reference), auto-discovery expanded, the reference kept so the output can say so.
fn resolve_here(
    d: ResolvedDeployment,
    dir: &Path,
) -> Vec<Result<ResolvedDeployment, doco_config::DeployConfigError>> {
    let reference = d.other_reference.clone();
    let resolved = if d.config.auto_discovery.enabled {
        doco_config::discover_deployments(&d.config, dir, d.source_file.as_deref())
    } else {
        vec![doco_config::resolve_deployment(
            d.config,
            dir,
            d.source_file,
        )]
    };
    resolved
        .into_iter()
        .map(|entry| {
            entry.map(|mut d| {
                d.other_reference = reference.clone();
                d
            })
        })
        .collect()
}

/// The note on a deployment resolved against the given directory instead of its own reference.
fn own_reference_note(d: &ResolvedDeployment) -> Option<String> {
    d.other_reference.as_ref().map(|reference| {
        format!(
            "its own reference {reference}: files resolved against the given directory, as if it were a checkout of {reference}"
        )
    })
}

/// A path relative to the repository root, for output.
fn rel(root: &Path, path: &Path) -> String {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    match real.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_owned(),
        Ok(p) => p.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

fn rels(root: &Path, paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| rel(root, p)).collect()
}

/// The whole deploy config, with the resolved paths (relative to the repository root) in place
/// of the configured ones, and what resolution adds.
fn to_json(d: &ResolvedDeployment, root: &Path) -> Value {
    let mut value = serde_json::to_value(&d.config).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        let external = d.external_repository.is_some();
        if !external {
            map.insert("working_dir".into(), json!(rel(root, &d.working_dir)));
            map.insert("compose_files".into(), json!(rels(root, &d.compose_files)));
            map.insert("env_files".into(), json!(rels(root, &d.env_files)));
        }
        map.insert("remote_env_files".into(), json!(d.remote_env_files));
        map.insert("auto_discovered".into(), json!(d.auto_discovered));
        map.insert(
            "source_file".into(),
            json!(d.source_file.as_deref().map(|f| rel(root, f))),
        );
        map.insert("external_repository".into(), json!(d.external_repository));
        map.insert("note".into(), json!(own_reference_note(d)));
        map.insert("hash".into(), json!(d.config.hash()));
        map.remove("compose_files_customized");
    }
    value
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_text(d: &ResolvedDeployment, root: &Path) {
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! println {
        () => { out.push('\n') };
        ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
    }
    let c = &d.config;
    let origin = if d.auto_discovered {
        " (auto-discovered)"
    } else {
        ""
    };
    println!("deployment {:?}{origin}", c.name);
    if let Some(file) = &d.source_file {
        println!("  file:            {}", rel(root, file));
    }
    println!(
        "  reference:       {}",
        c.reference.as_deref().unwrap_or("-")
    );
    if let Some(note) = own_reference_note(d) {
        println!("  note:            {note}");
    }
    if let Some(url) = &d.external_repository {
        println!("  repository_url:  {url} (paths resolved in that repository at deploy time)");
        println!("  working_dir:     {}", c.working_dir);
        println!("  compose_files:   {}", list(&c.compose_files));
    } else {
        println!("  working_dir:     {}", rel(root, &d.working_dir));
        println!("  compose_files:   {}", list(&rels(root, &d.compose_files)));
        let mut env_files = rels(root, &d.env_files);
        env_files.extend(d.remote_env_files.iter().map(|f| format!("remote:{f}")));
        println!("  env_files:       {}", list(&env_files));
    }
    let environment: Vec<String> = c
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("  environment:     {}", list(&environment));
    println!("  profiles:        {}", list(&c.profiles));
    let destroy = &c.destroy;
    println!(
        "  destroy:         {} (remove_volumes {}, remove_images {}, remove_dir {})",
        on_off(destroy.enabled),
        on_off(destroy.remove_volumes),
        on_off(destroy.remove_images),
        on_off(destroy.remove_dir)
    );
    let r = &c.reconciliation;
    println!(
        "  reconciliation:  {} (events {}, restart_limit {} in {}s)",
        on_off(r.enabled),
        list(&r.events),
        r.restart_limit,
        r.restart_window
    );
    let a = &c.auto_discovery;
    println!(
        "  auto_discovery:  {} (depth {}, delete {})",
        on_off(a.enabled),
        a.depth,
        on_off(a.delete)
    );
    println!(
        "  options:         remove_orphans {}, prune_images {}, force_recreate {}, force_image_pull {}, timeout {}s",
        on_off(c.remove_orphans),
        on_off(c.prune_images),
        on_off(c.force_recreate),
        on_off(c.force_image_pull),
        c.timeout
    );
    println!();
    emit(&out);
}

fn env(args: &EnvArgs) -> ExitCode {
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    // SOPS-encrypted `_FILE` values are decrypted by the `sops` program, driven asynchronously.
    let loaded = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(doco_engine::sops::app_config_from_env(&vars))
                .map_err(|e| format!("configuration error: {e}"))
        });
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("doco-cd: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if !config.unsupported.is_empty() {
        eprintln!(
            "doco-cd: configuration error: {}",
            crate::daemon::refusal(&config.unsupported)
        );
        return ExitCode::from(2);
    }
    let rows = effective(&config);
    match args.format {
        Format::Text => {
            let text: String = rows
                .iter()
                .map(|(name, value)| format!("{name}={value}\n"))
                .collect();
            emit(&text);
        }
        Format::Json => {
            let map: serde_json::Map<String, Value> = rows
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect();
            emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&Value::Object(map))
                    .unwrap_or_else(|_| "{}".to_owned())
            ));
        }
    }
    ExitCode::SUCCESS
}

fn secret(value: Option<&Secret>) -> String {
    value.map(|_| "***".to_owned()).unwrap_or_default()
}

fn opt_path(value: Option<&PathBuf>) -> String {
    value.map(|p| p.display().to_string()).unwrap_or_default()
}

/// Credentials in a URL (`https://user:token@host/`) are replaced by `***`.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn seconds(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every variable with its effective value (defaults filled in), in documentation order.
fn effective(c: &AppConfig) -> Vec<(&'static str, String)> {
    let networks: Vec<String> = c
        .trusted_proxy_networks
        .iter()
        .map(|n| format!("{}/{}", n.addr, n.prefix))
        .collect();
    let polls: Vec<Value> = c
        .poll_configs
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_else(|_| json!({}));
            if let Value::Object(map) = &mut v {
                map.insert("url".into(), json!(redact_url(&p.url)));
            }
            v
        })
        .collect();
    vec![
        ("LOG_LEVEL", c.log_level.as_str().to_owned()),
        (
            "DOCO_CD_LOG_FORMAT",
            format!("{:?}", c.log_format).to_lowercase(),
        ),
        ("HTTP_PORT", c.http_port.to_string()),
        ("METRICS_PORT", c.metrics_port.to_string()),
        (
            "HTTP_TLS_CERT_FILE",
            opt_path(c.http_tls_cert_file.as_ref()),
        ),
        ("HTTP_TLS_KEY_FILE", opt_path(c.http_tls_key_file.as_ref())),
        (
            "HTTP_PROXY",
            c.http_proxy.as_deref().map(redact_url).unwrap_or_default(),
        ),
        ("TRUSTED_PROXY_NETWORKS", networks.join(",")),
        ("TRUSTED_PROXY_HEADER", c.trusted_proxy_header.clone()),
        ("API_SECRET", secret(c.api_secret.as_ref())),
        ("WEBHOOK_SECRET", secret(c.webhook_secret.as_ref())),
        ("MAX_PAYLOAD_SIZE", c.max_payload_size.to_string()),
        (
            "MAX_CONCURRENT_DEPLOYMENTS",
            c.max_concurrent_deployments.to_string(),
        ),
        (
            "MAX_DEPLOYMENT_LOOP_COUNT",
            c.max_deployment_loop_count.to_string(),
        ),
        ("SCHEDULER_ENABLED", c.scheduler_enabled.to_string()),
        ("PASS_ENV", c.pass_env.to_string()),
        ("DEPLOY_CONFIG_BASE_DIR", c.deploy_config_base_dir.clone()),
        ("DATA_MOUNT_PATH", c.data_mount_path.display().to_string()),
        ("DATA_HOST_PATH", opt_path(c.data_host_path.as_ref())),
        (
            "POLL_CONFIG",
            serde_json::to_string(&polls).unwrap_or_default(),
        ),
        (
            "SOURCE_URL_REWRITES",
            if c.source_url_rewrites.is_empty() {
                String::new()
            } else {
                format!("*** ({} rule(s))", c.source_url_rewrites.len())
            },
        ),
        ("GIT_ACCESS_TOKEN", secret(c.git_access_token.as_ref())),
        ("GIT_ACCESS_TOKEN_USER", c.git_access_token_user.clone()),
        ("GIT_CLONE_DEPTH", c.git_clone_depth.to_string()),
        ("GIT_CLONE_SUBMODULES", c.git_clone_submodules.to_string()),
        ("ARTIFACT_GC_ENABLED", c.artifact_gc_enabled.to_string()),
        ("ARTIFACT_GC_INTERVAL", seconds(c.artifact_gc_interval)),
        (
            "ARTIFACT_GC_RETENTION_RECORDS",
            c.artifact_gc_retention_records.to_string(),
        ),
        (
            "ARTIFACT_GC_RETENTION_TTL",
            seconds(c.artifact_gc_retention_ttl),
        ),
        ("SSH_PRIVATE_KEY", secret(c.ssh_private_key.as_ref())),
        (
            "SSH_PRIVATE_KEY_PASSPHRASE",
            secret(c.ssh_private_key_passphrase.as_ref()),
        ),
        ("SKIP_TLS_VERIFICATION", c.skip_tls_verification.to_string()),
        ("GIT_COMMIT_STATUS", c.git_commit_status.to_string()),
        ("DOCKER_QUIET_DEPLOY", c.docker_quiet_deploy.to_string()),
        ("DOCKER_SWARM_FEATURES", c.docker_swarm_features.to_string()),
        (
            "DOCKER_SWARM_CONFIG_RETENTION",
            c.docker_swarm_config_retention.to_string(),
        ),
        (
            "DOCKER_SWARM_SECRET_RETENTION",
            c.docker_swarm_secret_retention.to_string(),
        ),
        (
            "APPRISE_API_URL",
            c.apprise_api_url.clone().unwrap_or_default(),
        ),
        (
            "APPRISE_NOTIFY_URLS",
            secret(c.apprise_notify_urls.as_ref()),
        ),
        ("APPRISE_NOTIFY_LEVEL", c.apprise_notify_level.clone()),
        (
            "APPRISE_NOTIFY_REPEAT_INTERVAL",
            seconds(c.apprise_notify_repeat_interval),
        ),
        (
            "DOCO_CD_MAINTAIN_OFFLINE_STATE",
            c.maintain_offline_state.to_string(),
        ),
        ("DOCO_CD_MIN_POLL_INTERVAL", seconds(c.min_poll_interval)),
    ]
}
