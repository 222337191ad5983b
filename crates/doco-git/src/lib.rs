//! doco-git: the `git` CLI driver that keeps a bare mirror of each remote and exports revisions.
//!
//! doco-cd polls many repositories often, and most polls find nothing new, so [`GitClient::sync`]
//! spends as little as possible: one `git ls-remote` when nothing changed, and a fetch into the
//! repository's bare mirror only when the remote moved. The files the daemon deploys come from
//! [`GitClient::export`]: one immutable directory per revision, so running containers never see a
//! tree change under them (upstream doco-cd v0.120's layout; [`GitClient::adopt_checkout`] migrates
//! the older single-checkout layout). Errors separate "the remote is unreachable" (the daemon keeps
//! enforcing the last known good commit, which [`resolved_commit`] reads without the network) from
//! "the credentials were rejected" and from "no such repository or reference", because the daemon
//! reacts to each differently.
//!
//! Every call goes through the process runner (`doco-process`) with a hardened environment, and a
//! token never reaches argv, a URL or a repository's config (see `command.rs`). A mirror is never
//! deleted or re-cloned because a fetch failed.
//!
//! Calls on one mirror are serialized (a lock per directory); different mirrors proceed in parallel.

mod adopt;
mod auth;
mod command;
mod error;
mod export;
mod github_app;
mod mirror;
mod reference;
mod refs;
mod ssh;
mod url;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

pub use auth::{DomainAuth, GitHubApp, SshKey};
pub use error::GitError;
pub use github_app::RENEW_BEFORE_EXPIRY;
pub use refs::resolved_commit;
pub use url::{full_name, redact_url, repo_name};

use auth::{AuthConfig, HttpAuth};
use command::{Context, GitCall, NetEnv};
use reference::Reference;
use url::{Remote, Scheme};

/// How [`GitClient`] talks to remotes. Build it once from the application config. `Debug` hides
/// every secret (tokens, keys, passphrases, proxy credentials).
#[derive(Clone)]
pub struct GitOptions {
    /// The global token for HTTP(S) remotes (`GIT_ACCESS_TOKEN`, user `GIT_ACCESS_TOKEN_USER`),
    /// sent as `Authorization: Basic base64(user:token)` to the remote's server only.
    pub http_token: Option<HttpToken>,
    /// The deadline for each git process (default 120 s); past it the process group is killed and
    /// the call fails with [`GitError::Transport`].
    pub timeout: Duration,
    /// The global GitHub App (`GITHUB_APP_*`), used for HTTP(S) remotes when no token applies.
    pub github_app: Option<GitHubApp>,
    /// The GitHub API base (`https://api.github.com`); `None` derives it from the host like upstream.
    pub github_api_url: Option<String>,
    /// Domain-scoped credentials (`GIT_AUTH_DOMAINS`).
    pub auth_domains: Vec<DomainAuth>,
    /// The global SSH key (`SSH_PRIVATE_KEY`, `SSH_PRIVATE_KEY_PASSPHRASE`).
    pub ssh_key: Option<SshKey>,
    /// Where SSH host keys trusted on first use are recorded (`<dir>/known_hosts`); the daemon
    /// passes a directory on the data volume. `None`: a temp file, forgotten on restart.
    pub ssh_dir: Option<PathBuf>,
    /// known_hosts lines provided by the operator (`SSH_KNOWN_HOSTS`), consulted before the
    /// recorded ones and never modified.
    pub ssh_known_hosts: Option<String>,
    /// Replace a recorded host key that changed instead of refusing the connection
    /// (`SSH_ACCEPT_CHANGED_HOST_KEYS`, default false).
    pub ssh_accept_changed_host_keys: bool,
    /// `SKIP_TLS_VERIFICATION`: `http.sslVerify=false` (and the GitHub API client).
    pub skip_tls_verification: bool,
    /// `HTTP_PROXY`: `http.proxy` for git and the proxy of the GitHub API client.
    pub http_proxy: Option<String>,
    /// `GIT_CLONE_DEPTH`: 0 = full history; a change re-clones (beside the old mirror, swapped).
    pub depth: u32,
    /// `GIT_CLONE_SUBMODULES` (default true): export submodules with their superproject.
    pub submodules: bool,
    /// SSH `ConnectTimeout` (default 15 s).
    pub connect_timeout: Duration,
    /// HTTP low-speed limit: a transfer slower than 1000 B/s for this long is aborted (default 30 s).
    pub low_speed_time: Duration,
}

impl fmt::Debug for GitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitOptions")
            .field("http_token", &self.http_token)
            .field("timeout", &self.timeout)
            .field("github_app", &self.github_app)
            .field("github_api_url", &self.github_api_url)
            .field("auth_domains", &self.auth_domains)
            .field("ssh_key", &self.ssh_key)
            .field("ssh_dir", &self.ssh_dir)
            .field(
                "ssh_known_hosts",
                &self.ssh_known_hosts.as_ref().map(|_| "(set)"),
            )
            .field(
                "ssh_accept_changed_host_keys",
                &self.ssh_accept_changed_host_keys,
            )
            .field("skip_tls_verification", &self.skip_tls_verification)
            .field("http_proxy", &self.http_proxy.as_deref().map(redact_url))
            .field("depth", &self.depth)
            .field("submodules", &self.submodules)
            .field("connect_timeout", &self.connect_timeout)
            .field("low_speed_time", &self.low_speed_time)
            .finish()
    }
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            http_token: None,
            timeout: Duration::from_secs(120),
            github_app: None,
            github_api_url: None,
            auth_domains: Vec::new(),
            ssh_key: None,
            ssh_dir: None,
            ssh_known_hosts: None,
            ssh_accept_changed_host_keys: false,
            skip_tls_verification: false,
            http_proxy: None,
            depth: 0,
            submodules: true,
            connect_timeout: Duration::from_secs(15),
            low_speed_time: Duration::from_secs(30),
        }
    }
}

/// Per-call settings of [`GitClient::sync_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// A deployment's `git_depth`; `None` or `Some(0)` use [`GitOptions::depth`].
    pub depth: Option<u32>,
}

/// HTTP credentials: a user (upstream's `GIT_ACCESS_TOKEN_USER`, default `oauth2`) and a token.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpToken {
    pub user: String,
    pub token: String,
}

impl HttpToken {
    /// A token with the default user `oauth2`.
    pub fn new(token: impl Into<String>) -> Self {
        HttpToken {
            user: "oauth2".to_string(),
            token: token.into(),
        }
    }
}

impl fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpToken")
            .field("user", &self.user)
            .field("token", &"***")
            .finish()
    }
}

/// What [`GitClient::sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The commit the reference resolved to, 40 lower-case hex digits (present in the mirror).
    pub commit: String,
    /// True when objects were fetched from the remote (a clone counts).
    pub fetched: bool,
    /// True when the mirror was cloned by this call (it was missing, broken, or of another depth).
    pub cloned: bool,
}

/// Drives the `git` CLI for one set of options. Cheap to clone: clones share the GitHub App token
/// cache, the SSH files and the per-mirror locks.
#[derive(Clone)]
pub struct GitClient {
    options: Arc<GitOptions>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    tokens: github_app::TokenSource,
    ssh: tokio::sync::OnceCell<ssh::SshFiles>,
    /// One lock per mirror directory: calls on one mirror run one at a time, different mirrors in
    /// parallel.
    locks: std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for GitClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        f.debug_struct("GitClient")
            .field("timeout", &o.timeout)
            .field("depth", &o.depth)
            .field("submodules", &o.submodules)
            .field("http_token", &o.http_token)
            .field("github_app", &o.github_app)
            .field("auth_domains", &o.auth_domains.len())
            .field("ssh_key", &o.ssh_key)
            .field("ssh_dir", &o.ssh_dir)
            .finish_non_exhaustive()
    }
}

impl GitClient {
    pub fn new(options: GitOptions) -> Self {
        GitClient {
            options: Arc::new(options),
            shared: Arc::new(Shared::default()),
        }
    }

    /// Makes `mirror` a bare mirror of `url` and resolves `reference` in it, with the client's
    /// depth; see [`GitClient::sync_with`].
    pub async fn sync(
        &self,
        url: &str,
        reference: &str,
        mirror: &Path,
    ) -> Result<SyncOutcome, GitError> {
        self.sync_with(url, reference, mirror, &SyncOptions::default())
            .await
    }

    /// Makes `mirror` (an absolute path) a bare mirror of `url` and resolves `reference` in it,
    /// spending as little as possible:
    /// - no mirror (`mirror` missing or empty): ask the remote, clone bare into a temporary
    ///   sibling, then rename it to `mirror`, so `mirror` is never half-written.
    /// - a mirror: one `git ls-remote` resolves the reference; if it equals the commit recorded for
    ///   `reference` at the last successful sync, return with `fetched: false` and no other git
    ///   process. Otherwise `git fetch` (all branches and tags, `--prune`, `--force`, `--depth`
    ///   when shallow) and record the new commit (a ref read back by [`resolved_commit`]).
    /// - a 40-hex reference is a commit: if it is recorded, zero processes; else fetch if the object
    ///   is missing (deepening a shallow mirror ×2, ×4, then fully), then record it.
    /// - the depth changed, or the mirror is broken (unreadable HEAD, config or objects): clone
    ///   beside it and swap the two atomically; the old one is removed only after the new one is
    ///   complete. A failed fetch never touches the mirror or its records.
    ///
    /// Calls on one `mirror` are serialized; different directories proceed in parallel.
    pub async fn sync_with(
        &self,
        url: &str,
        reference: &str,
        mirror: &Path,
        options: &SyncOptions,
    ) -> Result<SyncOutcome, GitError> {
        let remote = Remote::parse(url)?;
        let parsed = Reference::parse(reference)?;
        check_dir(mirror)?;
        let depth = options
            .depth
            .filter(|d| *d > 0)
            .unwrap_or(self.options.depth);
        let lock = self.lock_for(mirror);
        let _guard = lock.lock().await;
        let ctx = Context::new(&remote, reference).in_repo(mirror);
        self.sync_locked(&ctx, &parsed, mirror, depth).await
    }

    /// Resolves `reference` against the remote without touching any mirror (one `git
    /// ls-remote`). A 40-hex commit is returned as is, without a process: a remote cannot be asked
    /// whether it has a commit without fetching.
    pub async fn ls_remote(&self, url: &str, reference: &str) -> Result<String, GitError> {
        let remote = Remote::parse(url)?;
        let parsed = Reference::parse(reference)?;
        Ok(self
            .resolve(&Context::new(&remote, reference), &parsed)
            .await?
            .1)
    }

    fn lock_for(&self, dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .shared
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(dir.to_path_buf()).or_default())
    }

    /// One `git ls-remote` with the reference's patterns; returns `(full ref name, commit)`.
    async fn resolve(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
    ) -> Result<(String, String), GitError> {
        if let Reference::Commit(sha) = reference {
            return Ok((sha.clone(), sha.clone()));
        }
        let outside = Context {
            repo: None,
            work_tree: None,
            ..*ctx
        };
        let mut args = vec![
            "ls-remote".to_string(),
            "--".to_string(),
            ctx.remote.clean.clone(),
        ];
        args.extend(reference.patterns());
        let output = self
            .net_call(GitCall::new("ls-remote", args), &outside)
            .await?;
        reference
            .pick(&output.stdout)
            .ok_or_else(|| GitError::ReferenceNotFound {
                url: ctx.remote.display.clone(),
                reference: ctx.reference.to_string(),
            })
    }

    /// Runs a call that talks to remotes, with their credentials (for a submodule, the
    /// superproject's first, then its own host's); handles a changed SSH host key.
    async fn net_call(
        &self,
        call: GitCall,
        ctx: &Context<'_>,
    ) -> Result<doco_process::Output, GitError> {
        let net = match ctx.via {
            Some(parent) => {
                self.net_env(parent, std::slice::from_ref(ctx.remote))
                    .await?
            }
            None => self.net_env(ctx.remote, &[]).await?,
        };
        let timeout = self.options.timeout;
        match call.clone().run_checked(ctx, Some(&net), timeout).await {
            Err(GitError::Auth { url, detail })
                if detail
                    .to_ascii_lowercase()
                    .contains("remote host identification has changed") =>
            {
                let (host, port) = ctx.remote.host_port().unwrap_or_default();
                let ssh = self.ssh_files().await?;
                if self.options.ssh_accept_changed_host_keys {
                    tracing::warn!(url = %url, host = %host, known_hosts = %ssh.known_hosts.display(), "the SSH host key changed; replacing the recorded key because SSH_ACCEPT_CHANGED_HOST_KEYS is set");
                    ssh.forget_host(&host, port, timeout).await?;
                    call.run_checked(ctx, Some(&net), timeout).await
                } else {
                    Err(GitError::Auth {
                        url,
                        detail: format!(
                            "the SSH host key of {host} changed since it was first trusted (recorded in {}); the connection was refused. If the server's key really changed, remove its line from that file or set SSH_ACCEPT_CHANGED_HOST_KEYS=true",
                            ssh.known_hosts.display()
                        ),
                    })
                }
            }
            other => other,
        }
    }

    async fn ssh_files(&self) -> Result<&ssh::SshFiles, GitError> {
        self.shared
            .ssh
            .get_or_try_init(|| async {
                ssh::SshFiles::new(
                    self.options.ssh_dir.as_deref(),
                    self.options.ssh_known_hosts.as_deref(),
                )
            })
            .await
    }

    /// Credentials and transport settings for `remote` and the `extra` remotes (submodules).
    async fn net_env(&self, remote: &Remote, extra: &[Remote]) -> Result<NetEnv, GitError> {
        let o = &self.options;
        let mut net = NetEnv::default();
        net.vars.push((
            "GIT_HTTP_LOW_SPEED_TIME".to_string(),
            o.low_speed_time.as_secs().max(1).to_string(),
        ));
        if o.skip_tls_verification {
            net.config
                .push(("http.sslVerify".to_string(), "false".to_string()));
        }
        if let Some(proxy) = &o.http_proxy {
            net.config.push(("http.proxy".to_string(), proxy.clone()));
            if let Ok(p) = Remote::parse(proxy)
                && let Some(creds) = p.url_credentials
            {
                net.secrets.extend(p.url_secrets);
                net.secrets.push(creds.token);
            }
        }
        let auth = AuthConfig {
            token: o.http_token.as_ref(),
            github_app: o.github_app.as_ref(),
            ssh_key: o.ssh_key.as_ref(),
            domains: &o.auth_domains,
        };
        let mut ssh_keys: Vec<SshKey> = Vec::new();
        let mut uses_ssh = false;
        let mut scopes_done: Vec<String> = Vec::new();
        for (i, r) in std::iter::once(remote).chain(extra).enumerate() {
            let host = r.host_port().map(|(h, _)| h);
            match r.scheme {
                Scheme::Http => {
                    let Some(scope) = r.http_scope() else {
                        continue;
                    };
                    if scopes_done.contains(&scope) {
                        continue;
                    }
                    let creds = match (&r.url_credentials, i) {
                        (Some(c), 0) => Some(c.clone()),
                        _ => match auth.resolve(host.as_deref()).http {
                            HttpAuth::None => None,
                            HttpAuth::Token(t) => Some(t),
                            HttpAuth::App(app, user) => {
                                let api = github_app::ApiOptions {
                                    api_url: o.github_api_url.as_deref(),
                                    proxy: o.http_proxy.as_deref(),
                                    skip_tls_verification: o.skip_tls_verification,
                                    timeout: o.timeout.min(Duration::from_secs(30)),
                                };
                                let token = self
                                    .shared
                                    .tokens
                                    .token(
                                        &app,
                                        host.as_deref().unwrap_or_default(),
                                        &owner_repo(&r.clean),
                                        &r.display,
                                        &api,
                                    )
                                    .await?;
                                Some(HttpToken { user, token })
                            }
                        },
                    };
                    if let Some(t) = creds {
                        let basic = base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{}", t.user, t.token));
                        net.config.push((
                            format!("http.{scope}.extraHeader"),
                            format!("Authorization: Basic {basic}"),
                        ));
                        net.secrets.push(t.token);
                        net.secrets.push(basic);
                    }
                    scopes_done.push(scope);
                }
                Scheme::Ssh | Scheme::Scp => {
                    uses_ssh = true;
                    if let Some(key) = auth.resolve(host.as_deref()).ssh_key
                        && !ssh_keys.contains(&key)
                    {
                        ssh_keys.push(key);
                    }
                }
                Scheme::File | Scheme::LocalPath => {}
            }
        }
        if uses_ssh {
            let files = self.ssh_files().await?;
            let mut paths = Vec::new();
            for key in &ssh_keys {
                paths.push(files.key_file(key, o.timeout).await?);
            }
            net.vars.push((
                "GIT_SSH_COMMAND".to_string(),
                files.command(&paths, o.connect_timeout)?,
            ));
        }
        Ok(net)
    }
}

/// `owner/repo` of a remote (upstream's rule: the first two path segments).
fn owner_repo(url: &str) -> String {
    let name = repo_name(url);
    let parts: Vec<&str> = name.split('/').skip(1).take(2).collect();
    parts.join("/")
}

/// `dir` must be absolute and free of `..`, so a configured name cannot escape the data volume.
fn check_dir(dir: &Path) -> Result<(), GitError> {
    let invalid = |reason: &str| GitError::InvalidInput {
        what: format!("directory {}", dir.display()),
        reason: reason.to_string(),
    };
    if !dir.is_absolute() {
        return Err(invalid("it must be an absolute path"));
    }
    if dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid("it contains '..'"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn net_env_scopes_tokens_and_sets_tls_and_proxy() {
        let c = GitClient::new(GitOptions {
            http_token: Some(HttpToken::new("global")),
            skip_tls_verification: true,
            http_proxy: Some("http://u:pw@proxy:3128".into()),
            auth_domains: vec![DomainAuth {
                domains: vec!["*.example.com".into()],
                http_token: Some(HttpToken {
                    user: "svc".into(),
                    token: "scoped".into(),
                }),
                ..DomainAuth::default()
            }],
            ..GitOptions::default()
        });
        let main = Remote::parse("https://git.example.com/o/r.git").unwrap();
        let sub = Remote::parse("https://github.com:8443/o/lib.git").unwrap();
        let net = c.net_env(&main, &[sub]).await.unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            net.config,
            [
                ("http.sslVerify".to_string(), "false".to_string()),
                (
                    "http.proxy".to_string(),
                    "http://u:pw@proxy:3128".to_string()
                ),
                (
                    "http.https://git.example.com/.extraHeader".to_string(),
                    format!("Authorization: Basic {}", b64("svc:scoped"))
                ),
                (
                    "http.https://github.com:8443/.extraHeader".to_string(),
                    format!("Authorization: Basic {}", b64("oauth2:global"))
                ),
            ]
        );
        for secret in ["pw", "scoped", "global"] {
            assert!(net.secrets.iter().any(|s| s == secret), "{secret}");
        }
        assert!(!net.vars.iter().any(|(k, _)| k == "GIT_SSH_COMMAND"));
    }

    #[test]
    fn debug_hides_secrets() {
        let options = GitOptions {
            http_token: Some(HttpToken::new("TOKEN-1")),
            http_proxy: Some("http://u:PROXYPW@proxy:3128".into()),
            ssh_key: Some(SshKey {
                private_key: "PRIVATE".into(),
                passphrase: Some("PASSPHRASE".into()),
            }),
            auth_domains: vec![DomainAuth {
                domains: vec!["h".into()],
                http_token: Some(HttpToken::new("TOKEN-2")),
                ..DomainAuth::default()
            }],
            ..GitOptions::default()
        };
        let text = format!("{options:?} {:?}", GitClient::new(options.clone()));
        for secret in ["TOKEN-1", "TOKEN-2", "PROXYPW", "PRIVATE", "PASSPHRASE"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn owner_repo_and_dir_checks() {
        assert_eq!(owner_repo("https://github.com/o/r.git"), "o/r");
        assert_eq!(owner_repo("git@ghe.example:o/r/x.git"), "o/r");
        assert!(check_dir(Path::new("relative")).is_err());
        assert!(check_dir(Path::new("/data/../etc")).is_err());
        assert!(check_dir(Path::new("/data/h/o/r")).is_ok());
    }
}
