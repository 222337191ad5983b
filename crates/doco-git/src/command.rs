//! Building and running one `git` process: environment, credentials, deadline, error mapping.
//!
//! All git calls go through [`GitCall`] so that every one of them gets the same hardened
//! environment (no prompts, no system or global config, no hooks, stable English messages, a bounded
//! set of protocols) and so that credentials only ever travel in the environment as an
//! `http.extraHeader`, registered as secrets with the process runner, never in argv, URLs or
//! `.git/config`.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use doco_process::{Cmd, Output, ProcessError};

use crate::GitError;
use crate::error::{ErrorKind, classify, summarize};
use crate::url::Remote;

/// Variables passed through from the daemon's environment; everything else is cleared so that an
/// inherited `GIT_DIR`, `GIT_WORK_TREE` or `GIT_SSH_COMMAND` cannot redirect a call.
const PASSTHROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
];

/// Fixed environment for every call.
const FIXED_ENV: &[(&str, &str)] = &[
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_HTTP_LOW_SPEED_LIMIT", "1000"),
    ("GIT_HTTP_LOW_SPEED_TIME", "30"),
    ("GIT_ALLOW_PROTOCOL", "file:http:https:ssh"),
    ("LC_ALL", "C"),
];

/// Where a call runs and what it talks to, for the environment and for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    pub remote: &'a Remote,
    /// The reference as the user wrote it, for messages.
    pub reference: &'a str,
    /// The repository (a bare mirror) the call works on, if any.
    pub repo: Option<&'a Path>,
    /// The work tree of an export, for the calls that write files out of `repo`.
    pub work_tree: Option<&'a Path>,
    /// For a submodule: the superproject's remote, whose credentials are offered first (what
    /// `git submodule update` in the superproject's checkout did).
    pub via: Option<&'a Remote>,
}

impl<'a> Context<'a> {
    /// A call about `remote` and `reference` that works on no repository (`ls-remote`).
    pub fn new(remote: &'a Remote, reference: &'a str) -> Self {
        Context {
            remote,
            reference,
            repo: None,
            work_tree: None,
            via: None,
        }
    }

    /// The same call, working on the repository `repo`.
    pub fn in_repo(self, repo: &'a Path) -> Self {
        Context {
            repo: Some(repo),
            ..self
        }
    }
}

/// What a call that talks to a remote needs besides the fixed environment: git settings passed as
/// `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` (URL-scoped `http.<url>.extraHeader`
/// credentials, `http.sslVerify`, `http.proxy`), other variables (`GIT_SSH_COMMAND`), and the
/// secrets to redact from what git prints.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetEnv {
    pub config: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub secrets: Vec<String>,
}

/// One `git` invocation.
#[derive(Debug, Clone)]
pub(crate) struct GitCall {
    /// A short label for logs and errors ("ls-remote", "fetch").
    op: &'static str,
    args: Vec<OsString>,
}

impl GitCall {
    pub fn new<I, S>(op: &'static str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        GitCall {
            op,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// Runs the call; a non-zero exit is returned as `Ok(output)` so callers can decide, use
    /// [`GitCall::run_checked`] to map it to a [`GitError`].
    pub async fn run(
        self,
        ctx: &Context<'_>,
        net: Option<&NetEnv>,
        timeout: Duration,
    ) -> Result<Output, GitError> {
        let mut cmd = Cmd::new("git").env_clear().timeout(timeout);
        for key in PASSTHROUGH {
            if let Some(value) = std::env::var_os(key) {
                cmd = cmd.env(key, value);
            }
        }
        for (key, value) in FIXED_ENV {
            cmd = cmd.env(key, value);
        }
        for secret in &ctx.remote.url_secrets {
            cmd = cmd.secret(secret.clone());
        }
        if let Some(net) = net {
            if !net.config.is_empty() {
                cmd = cmd.env("GIT_CONFIG_COUNT", net.config.len().to_string());
                for (i, (key, value)) in net.config.iter().enumerate() {
                    cmd = cmd
                        .env(format!("GIT_CONFIG_KEY_{i}"), key)
                        .env(format!("GIT_CONFIG_VALUE_{i}"), value);
                }
            }
            for (key, value) in &net.vars {
                cmd = cmd.env(key, value);
            }
            for secret in &net.secrets {
                cmd = cmd.secret(secret.clone());
            }
        }
        cmd = cmd.args(["-c", "core.hooksPath=/dev/null", "-c", "safe.directory=*"]);
        match ctx.repo {
            // Pin git to this repository: without it, a mirror that lost its files would make git
            // walk up and act on an enclosing repository.
            Some(dir) => cmd = cmd.current_dir(dir).arg("--git-dir=."),
            None => cmd = cmd.current_dir("/"),
        }
        if let Some(work_tree) = ctx.work_tree {
            let mut arg = OsString::from("--work-tree=");
            arg.push(work_tree);
            cmd = cmd.arg(arg);
        }
        cmd = cmd.args(&self.args);
        let command_line = format!("git {}", cmd.display_args());
        tracing::debug!(
            url = %ctx.remote.display,
            reference = ctx.reference,
            dir = ?ctx.repo,
            command = %command_line,
            "running git"
        );
        match cmd.run().await {
            Ok(output) => {
                tracing::debug!(
                    command = %command_line,
                    code = ?output.code,
                    stderr = %output.stderr.trim(),
                    "git finished"
                );
                Ok(output)
            }
            Err(ProcessError::TimedOut { timeout, .. }) => Err(GitError::Transport {
                url: ctx.remote.display.clone(),
                detail: format!(
                    "git {} for '{}' did not finish within {}s and was stopped",
                    self.op,
                    ctx.reference,
                    timeout.as_secs_f64()
                ),
            }),
            Err(e) => Err(GitError::Failed {
                command: command_line,
                detail: e.to_string(),
            }),
        }
    }

    /// Runs the call and maps a non-zero exit to a [`GitError`] from git's message.
    pub async fn run_checked(
        self,
        ctx: &Context<'_>,
        net: Option<&NetEnv>,
        timeout: Duration,
    ) -> Result<Output, GitError> {
        let op = self.op;
        let output = self.run(ctx, net, timeout).await?;
        if output.success() {
            return Ok(output);
        }
        Err(error_from(op, ctx, &output))
    }
}

/// The [`GitError`] for a failed call, from its message.
pub(crate) fn error_from(op: &str, ctx: &Context<'_>, output: &Output) -> GitError {
    let url = ctx.remote.display.clone();
    let detail = summarize(&output.stderr);
    match (classify(&output.stderr), ctx.repo) {
        (ErrorKind::Transport, _) => GitError::Transport {
            url,
            detail: format!("git {op} for '{}': {detail}", ctx.reference),
        },
        (ErrorKind::Auth, _) => GitError::Auth {
            url,
            detail: format!("git {op}: {detail}"),
        },
        (ErrorKind::RepositoryNotFound, _) => GitError::RepositoryNotFound {
            url,
            detail: format!("git {op}: {detail}"),
        },
        (ErrorKind::ReferenceNotFound, _) => GitError::ReferenceNotFound {
            url,
            reference: ctx.reference.to_string(),
        },
        (ErrorKind::BrokenCheckout, Some(dir)) => GitError::BrokenCheckout {
            dir: dir.to_path_buf(),
            detail: format!("git {op}: {detail}"),
        },
        (ErrorKind::BrokenCheckout | ErrorKind::Other, _) => GitError::Failed {
            command: format!("git {op} ({url}, '{}')", ctx.reference),
            detail: format!(
                "exit code {}: {detail}",
                output.code.map_or_else(
                    || "none (killed by a signal)".to_string(),
                    |c| c.to_string()
                )
            ),
        },
    }
}
