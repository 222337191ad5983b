//! `doco-cd`: GitOps continuous deployment for Docker Compose, configured by environment variables
//! exactly like upstream doco-cd (kimdre/doco-cd). This is an independent Rust implementation,
//! compatible with upstream and not affiliated with it.
//!
//! `main` only parses the command line and maps errors to exit codes; `daemon` wires the engine to
//! the environment and to HTTP.

mod api;
mod config_cmd;
mod daemon;
mod http;
mod logging;
mod tls;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const ENVIRONMENT_HELP: &str = "\
Configuration is read from environment variables, as upstream doco-cd reads it:
  POLL_CONFIG / POLL_CONFIG_FILE    YAML list of repositories to poll (url, reference, interval, target,
                                    run_once, deployments)
  DOCO_CD_MAINTAIN_OFFLINE_STATE    keep enforcing the last fetched commit while Git is unreachable
                                    (true/false, default false)
  DATA_MOUNT_PATH                   where mirrors, exports and the state file live (default /data)
  DATA_HOST_PATH                    the same directory as the Docker daemon sees it (default: detected from
                                    doco-cd's own container, or DATA_MOUNT_PATH outside a container)
  ARTIFACT_GC_ENABLED, _INTERVAL,   remove exports of commits nothing uses (default true, every 10m,
  _RETENTION_RECORDS, _RETENTION_TTL  keeping the 2 newest unused per repository, and those younger than 0s)
  HTTP_PORT                         /v1/health, /v1/webhook and /v1/api (default 80)
  API_SECRET(_FILE)                 enables the REST API /v1/api/* (x-api-key header): runs, projects,
                                    poll/run, repositories
  WEBHOOK_SECRET(_FILE)             enables POST /v1/webhook[/{target}] (GitHub, Gitea, Gogs, Forgejo
                                    HMAC signatures; GitLab token); MAX_PAYLOAD_SIZE (default 1048576)
  METRICS_PORT                      Prometheus /metrics (default 9120)
  HTTP_TLS_CERT_FILE, _KEY_FILE     serve both ports over HTTPS (PEM files)
  GIT_ACCESS_TOKEN(_FILE)           token for HTTP(S) Git remotes; GIT_ACCESS_TOKEN_USER (default oauth2)
  SOPS_AGE_KEY_FILE / SOPS_AGE_KEY  age key (or any SOPS_* setting) to decrypt SOPS-encrypted repository
                                    files and X_FILE values
  MAX_CONCURRENT_DEPLOYMENTS        deployments applied at once (default 4)
  DEPLOY_CONFIG_BASE_DIR            where .doco-cd.yml is looked up in a repository (default /)
  LOG_LEVEL                         debug, info, warn or error (default info)
  DOCO_CD_LOG_FORMAT                text or json (default text)
See docs/configuration.md for every variable.";

/// GitOps continuous deployment for Docker Compose.
#[derive(Debug, Parser)]
#[command(name = "doco-cd", version, about, after_help = ENVIRONMENT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default): poll the configured repositories and deploy them.
    Run,
    /// Ask a running daemon's /v1/health on HTTP_PORT; exit 0 when it answers 200.
    Healthcheck,
    /// Check a repository's deploy configuration, or show the configuration from the environment.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command.unwrap_or(Command::Run) {
        Command::Config(command) => return config_cmd::run(command),
        other => other,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("doco-cd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Run => runtime.block_on(daemon::run()),
        Command::Healthcheck => runtime.block_on(http::healthcheck()),
        Command::Config(command) => return config_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("doco-cd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
