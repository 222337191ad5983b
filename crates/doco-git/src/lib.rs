//! doco-git: the `git` CLI driver that keeps a checkout of a remote at a reference.
//!
//! doco-cd polls many repositories often, and most polls find nothing new, so [`GitClient::sync`]
//! spends as little as possible: one `git ls-remote` when nothing changed, and a fetch plus a
//! checkout only when the remote moved. Its errors separate "the remote is unreachable" (the daemon
//! keeps enforcing the last known good commit) from "the credentials were rejected" and from "no
//! such repository or reference", because the daemon reacts to each differently.
//!
//! Every call goes through the process runner (`doco-process`) with a hardened environment, and a
//! token never reaches argv, a URL or `.git/config` (see `command.rs`). A checkout is never deleted
//! or re-cloned because something failed.
//!
//! Calls on one `dir` must not run concurrently; the caller serializes them per repository.

mod auth;
mod command;
mod error;
mod github_app;
mod head;
mod reference;
mod ssh;
mod url;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;

pub use auth::{DomainAuth, GitHubApp, SshKey};
pub use error::GitError;
pub use github_app::RENEW_BEFORE_EXPIRY;
pub use head::head_commit;
pub use url::{full_name, redact_url, repo_name};

use auth::{AuthConfig, HttpAuth};
use command::{Context, GitCall, NetEnv};
use head::{OriginUrl, git_dir, origin_url};
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
    /// `GIT_CLONE_DEPTH`: 0 = full history; a change re-clones (beside the old checkout, swapped).
    pub depth: u32,
    /// `GIT_CLONE_SUBMODULES` (default true): init and update submodules after each checkout.
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
    /// The commit now checked out (detached), 40 lower-case hex digits.
    pub commit: String,
    /// True when objects were fetched from the remote (a clone counts).
    pub fetched: bool,
    /// True when `dir` was not a checkout before this call.
    pub cloned: bool,
}

/// Drives the `git` CLI for one set of options. Cheap to clone: clones share the GitHub App token
/// cache, the SSH files and the per-checkout locks.
#[derive(Clone)]
pub struct GitClient {
    options: Arc<GitOptions>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    tokens: github_app::TokenSource,
    ssh: tokio::sync::OnceCell<ssh::SshFiles>,
    /// One lock per checkout directory: calls on one checkout run one at a time, different
    /// checkouts in parallel.
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

/// The refspecs of every fetch: all branches and tags (pruned and forced by the flags).
const FETCH_REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

/// The file in the git directory that records the depth a checkout was cloned with.
const DEPTH_FILE: &str = "doco-cd-depth";

/// Marks the temporary siblings of a checkout (`.<name>.doco-cd-tmp-...`).
const TEMP_MARK: &str = ".doco-cd-tmp-";

impl GitClient {
    pub fn new(options: GitOptions) -> Self {
        GitClient {
            options: Arc::new(options),
            shared: Arc::new(Shared::default()),
        }
    }

    /// Makes `dir` a checkout of `url` at `reference` with the client's depth; see
    /// [`GitClient::sync_with`].
    pub async fn sync(
        &self,
        url: &str,
        reference: &str,
        dir: &Path,
    ) -> Result<SyncOutcome, GitError> {
        self.sync_with(url, reference, dir, &SyncOptions::default())
            .await
    }

    /// Makes `dir` (an absolute path) a checkout of `url` at `reference`, spending as little as
    /// possible:
    /// - `dir` has no `.git`: clone into a temporary sibling, check out the resolved commit
    ///   (detached), update submodules, then rename it to `dir`, so `dir` is never half-written.
    ///   `dir` may exist only if it is empty.
    /// - `dir` is a checkout: one `git ls-remote` resolves the reference; if it equals the
    ///   checkout's HEAD, return with `fetched: false` and no other git process. Otherwise `git
    ///   fetch` (all branches and tags, `--prune`, `--force`, `--depth` when shallow), `git
    ///   checkout --force --detach`, and the submodules.
    /// - a 40-hex reference is a commit: if HEAD already equals it, zero processes; else fetch if
    ///   the object is missing (deepening a shallow checkout ×2, ×4, then fully), then check out.
    /// - the depth changed, or the checkout is broken (unreadable HEAD, corrupt index or config):
    ///   clone beside it and swap the two atomically; the old one is removed only after the new one
    ///   is complete. A failed fetch never touches the checkout.
    ///
    /// Calls on one `dir` are serialized; different directories proceed in parallel.
    pub async fn sync_with(
        &self,
        url: &str,
        reference: &str,
        dir: &Path,
        options: &SyncOptions,
    ) -> Result<SyncOutcome, GitError> {
        let remote = Remote::parse(url)?;
        let parsed = Reference::parse(reference)?;
        check_dir(dir)?;
        let depth = options
            .depth
            .filter(|d| *d > 0)
            .unwrap_or(self.options.depth);
        let lock = self.lock_for(dir);
        let _guard = lock.lock().await;
        let ctx = Context {
            remote: &remote,
            reference,
            checkout: Some(dir),
        };
        match checkout_state(dir)? {
            Checkout::Absent => self.clone_beside(&ctx, &parsed, dir, depth, false).await,
            Checkout::Broken(detail) => {
                tracing::warn!(dir = %dir.display(), %detail, "the checkout is broken; re-cloning beside it");
                self.clone_beside(&ctx, &parsed, dir, depth, true).await
            }
            Checkout::Present { head } => {
                if needs_reclone(dir, depth) {
                    tracing::info!(dir = %dir.display(), depth, "the clone depth changed; re-cloning beside the checkout");
                    return self.clone_beside(&ctx, &parsed, dir, depth, true).await;
                }
                match self.update(&ctx, &parsed, dir, head, depth).await {
                    Err(GitError::BrokenCheckout { detail, .. }) => {
                        tracing::warn!(dir = %dir.display(), %detail, "the checkout is broken; re-cloning beside it");
                        self.clone_beside(&ctx, &parsed, dir, depth, true).await
                    }
                    other => other,
                }
            }
        }
    }

    /// Resolves `reference` against the remote without touching any checkout (one `git
    /// ls-remote`). A 40-hex commit is returned as is, without a process: a remote cannot be asked
    /// whether it has a commit without fetching.
    pub async fn ls_remote(&self, url: &str, reference: &str) -> Result<String, GitError> {
        let remote = Remote::parse(url)?;
        let parsed = Reference::parse(reference)?;
        let ctx = Context {
            remote: &remote,
            reference,
            checkout: None,
        };
        Ok(self.resolve(&ctx, &parsed).await?.1)
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
        let no_checkout = Context {
            checkout: None,
            ..*ctx
        };
        let mut args = vec![
            "ls-remote".to_string(),
            "--".to_string(),
            ctx.remote.clean.clone(),
        ];
        args.extend(reference.patterns());
        let output = self
            .net_call(GitCall::new("ls-remote", args), &no_checkout, &[])
            .await?;
        reference
            .pick(&output.stdout)
            .ok_or_else(|| GitError::ReferenceNotFound {
                url: ctx.remote.display.clone(),
                reference: ctx.reference.to_string(),
            })
    }

    /// Clones into a temporary sibling of `dir`, then renames it to `dir` (`swap`: exchanges the
    /// two atomically and removes the old checkout). On failure the sibling is removed and `dir`
    /// is left as it was.
    async fn clone_beside(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        dir: &Path,
        depth: u32,
        swap: bool,
    ) -> Result<SyncOutcome, GitError> {
        // Ask the remote first, so an unreachable remote or a wrong reference leaves no trace.
        let (resolved_ref, sha) = self.resolve(ctx, reference).await?;
        let fs_err = |what: &str, path: &Path, e: std::io::Error| GitError::Failed {
            command: format!("{what} {}", path.display()),
            detail: e.to_string(),
        };
        let (parent, name) = match (dir.parent(), dir.file_name()) {
            (Some(p), Some(n)) => (p, n.to_string_lossy().into_owned()),
            _ => {
                return Err(GitError::InvalidInput {
                    what: format!("checkout directory {}", dir.display()),
                    reason: "it has no parent directory or no name".to_string(),
                });
            }
        };
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| fs_err("create directory", parent, e))?;
        remove_stale_siblings(parent, &name);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = parent.join(format!(
            ".{name}{TEMP_MARK}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::create_dir(&tmp)
            .await
            .map_err(|e| fs_err("create directory", &tmp, e))?;
        let tmp_ctx = Context {
            checkout: Some(&tmp),
            ..*ctx
        };
        let populated = self
            .populate(&tmp_ctx, reference, &tmp, &resolved_ref, &sha, depth)
            .await;
        let placed = match populated {
            Ok(()) if swap => exchange(&tmp, dir).map_err(|e| fs_err("swap into", dir, e)),
            Ok(()) => std::fs::rename(&tmp, dir).map_err(|e| fs_err("rename into", dir, e)),
            Err(e) => Err(e),
        };
        // After a swap `tmp` holds the old checkout; after a failure the partial clone.
        if tmp.exists()
            && let Err(e) = std::fs::remove_dir_all(&tmp)
        {
            tracing::warn!(dir = %tmp.display(), error = %e, "cannot remove a temporary checkout");
        }
        placed?;
        tracing::info!(url = %ctx.remote.display, reference = ctx.reference, commit = %sha, dir = %dir.display(), depth, "cloned");
        Ok(SyncOutcome {
            commit: sha,
            fetched: true,
            cloned: true,
        })
    }

    /// `init`, origin, fetch, the commit (deepening if needed), checkout, submodules, depth record.
    async fn populate(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        dir: &Path,
        resolved_ref: &str,
        sha: &str,
        depth: u32,
    ) -> Result<(), GitError> {
        GitCall::new("init", ["init", "--quiet"])
            .run_checked(ctx, None, self.options.timeout)
            .await?;
        self.set_origin(ctx, dir).await?;
        self.fetch(ctx, resolved_ref, depth).await?;
        if matches!(reference, Reference::Commit(_)) || depth > 0 {
            self.ensure_commit(ctx, sha, depth).await?;
        }
        self.checkout(ctx, sha).await?;
        self.update_submodules(ctx, dir).await?;
        write_depth(dir, depth);
        Ok(())
    }

    async fn update(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        dir: &Path,
        head: Option<String>,
        depth: u32,
    ) -> Result<SyncOutcome, GitError> {
        let unchanged = |commit: String| SyncOutcome {
            commit,
            fetched: false,
            cloned: false,
        };
        if let Reference::Commit(sha) = reference {
            self.set_origin(ctx, dir).await?;
            if head.as_deref() == Some(sha.as_str()) {
                return Ok(unchanged(sha.clone()));
            }
            let mut fetched = false;
            if !self.has_commit(ctx, sha).await? {
                self.fetch(ctx, sha, depth).await?;
                fetched = true;
                self.ensure_commit(ctx, sha, depth).await?;
            }
            self.checkout(ctx, sha).await?;
            self.update_submodules(ctx, dir).await?;
            write_depth(dir, depth);
            return Ok(SyncOutcome {
                commit: sha.clone(),
                fetched,
                cloned: false,
            });
        }
        let (resolved_ref, sha) = self.resolve(ctx, reference).await?;
        self.set_origin(ctx, dir).await?;
        if head.as_deref() == Some(sha.as_str()) {
            return Ok(unchanged(sha));
        }
        self.fetch(ctx, &resolved_ref, depth).await?;
        if depth > 0 {
            self.ensure_commit(ctx, &sha, depth).await?;
        }
        self.checkout(ctx, &sha).await?;
        self.update_submodules(ctx, dir).await?;
        write_depth(dir, depth);
        tracing::info!(url = %ctx.remote.display, reference = ctx.reference, from = ?head, to = %sha, dir = %dir.display(), "updated checkout");
        Ok(SyncOutcome {
            commit: sha,
            fetched: true,
            cloned: false,
        })
    }

    /// Points `origin` at the credential-free URL; no process when `.git/config` already says so.
    async fn set_origin(&self, ctx: &Context<'_>, dir: &Path) -> Result<(), GitError> {
        let current = match git_dir(dir)? {
            Some(git_dir) => origin_url(&git_dir),
            None => OriginUrl::Unknown,
        };
        let url = ctx.remote.clean.as_str();
        let args = match current {
            OriginUrl::Is(existing) if existing == url => return Ok(()),
            OriginUrl::NoRemote => ["remote", "add", "--", "origin", url],
            OriginUrl::Is(_) | OriginUrl::Unknown => ["remote", "set-url", "--", "origin", url],
        };
        tracing::debug!(url = %ctx.remote.display, dir = %dir.display(), "setting origin");
        GitCall::new("remote", args)
            .run_checked(ctx, None, self.options.timeout)
            .await
            .map(drop)
    }

    /// Fetches all branches and tags from `origin` (pruned, forced, `--depth` when shallow), plus
    /// `extra_ref` when it lies outside them (`refs/pull/1/head`).
    async fn fetch(&self, ctx: &Context<'_>, extra_ref: &str, depth: u32) -> Result<(), GitError> {
        self.fetch_with(ctx, extra_ref, depth.then_some_depth())
            .await
    }

    async fn fetch_with(
        &self,
        ctx: &Context<'_>,
        extra_ref: &str,
        depth_arg: Option<String>,
    ) -> Result<(), GitError> {
        let mut args: Vec<String> = ["fetch", "--quiet", "--prune", "--force", "--no-tags"]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(depth_arg);
        args.extend(["--".to_string(), "origin".to_string()]);
        args.extend(FETCH_REFSPECS.into_iter().map(String::from));
        if extra_ref.starts_with("refs/")
            && !extra_ref.starts_with("refs/heads/")
            && !extra_ref.starts_with("refs/tags/")
        {
            args.push(extra_ref.to_string());
        }
        self.net_call(GitCall::new("fetch", args), ctx, &[])
            .await
            .map(drop)
    }

    /// Makes sure `sha` is present; in a shallow checkout deepens ×2, ×4, then fetches the full
    /// history before giving up with [`GitError::ReferenceNotFound`].
    async fn ensure_commit(
        &self,
        ctx: &Context<'_>,
        sha: &str,
        depth: u32,
    ) -> Result<(), GitError> {
        if self.has_commit(ctx, sha).await? {
            return Ok(());
        }
        if depth > 0 {
            for factor in [2u32, 4] {
                let deeper = depth.saturating_mul(factor);
                tracing::info!(url = %ctx.remote.display, reference = ctx.reference, depth = deeper, "the commit is not within the shallow history; deepening");
                self.fetch_with(ctx, sha, Some(format!("--depth={deeper}")))
                    .await?;
                if self.has_commit(ctx, sha).await? {
                    return Ok(());
                }
            }
            let shallow = ctx
                .checkout
                .and_then(|d| git_dir(d).ok().flatten())
                .is_some_and(|g| g.join("shallow").exists());
            if shallow {
                tracing::info!(url = %ctx.remote.display, reference = ctx.reference, "fetching the full history");
                self.fetch_with(ctx, sha, Some("--unshallow".to_string()))
                    .await?;
                if self.has_commit(ctx, sha).await? {
                    return Ok(());
                }
            }
        }
        Err(GitError::ReferenceNotFound {
            url: ctx.remote.display.clone(),
            reference: ctx.reference.to_string(),
        })
    }

    /// Writes the files of `commit` (40 hex digits, present in `checkout`) to `dest`, which must not
    /// exist: the tree of a commit that is no longer checked out, such as the last one that deployed
    /// successfully. The checkout's work tree and index are left alone (a separate index file is
    /// used), and `dest` appears whole or not at all. Submodules are not exported.
    pub async fn export_commit(
        &self,
        url: &str,
        checkout: &Path,
        commit: &str,
        dest: &Path,
    ) -> Result<(), GitError> {
        let remote = Remote::parse(url)?;
        let ctx = Context {
            remote: &remote,
            reference: commit,
            checkout: Some(checkout),
        };
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GitError::Failed {
                command: "export".into(),
                detail: format!("'{commit}' is not a full commit id"),
            });
        }
        let io = |detail: std::io::Error| GitError::Failed {
            command: format!("export {commit} to {}", dest.display()),
            detail: detail.to_string(),
        };
        let staging = dest.with_extension("partial");
        let index = dest.with_extension("index");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io)?;
        let net = NetEnv {
            vars: vec![("GIT_INDEX_FILE".into(), index.display().to_string())],
            ..NetEnv::default()
        };
        let prefix = format!("--prefix={}/", staging.display());
        let exported = async {
            GitCall::new("read-tree", ["read-tree", commit])
                .run_checked(&ctx, Some(&net), self.options.timeout)
                .await?;
            GitCall::new(
                "checkout-index",
                ["checkout-index", "--all", "--force", &prefix],
            )
            .run_checked(&ctx, Some(&net), self.options.timeout)
            .await
        }
        .await;
        let _ = std::fs::remove_file(&index);
        exported?;
        std::fs::rename(&staging, dest).map_err(io)
    }

    /// Whether the checkout's object store holds `sha` as a commit.
    async fn has_commit(&self, ctx: &Context<'_>, sha: &str) -> Result<bool, GitError> {
        let output = GitCall::new("cat-file", ["cat-file", "-e", &format!("{sha}^{{commit}}")])
            .run(ctx, None, self.options.timeout)
            .await?;
        if output.success() {
            return Ok(true);
        }
        match command::error_from("cat-file", ctx, &output) {
            err @ GitError::BrokenCheckout { .. } => Err(err),
            _ => Ok(false),
        }
    }

    /// `git checkout --force --detach <sha>`.
    async fn checkout(&self, ctx: &Context<'_>, sha: &str) -> Result<(), GitError> {
        GitCall::new(
            "checkout",
            ["checkout", "--quiet", "--force", "--detach", sha, "--"],
        )
        .run_checked(ctx, None, self.options.timeout)
        .await
        .map(drop)
    }

    /// `git submodule sync` + `update --init --recursive --force` when the checkout has a
    /// `.gitmodules` (no process otherwise). Relative URLs resolve against `origin`; each
    /// submodule server gets its own domain's credentials.
    async fn update_submodules(&self, ctx: &Context<'_>, dir: &Path) -> Result<(), GitError> {
        let gitmodules = dir.join(".gitmodules");
        if !self.options.submodules || !gitmodules.is_file() {
            return Ok(());
        }
        let extra: Vec<Remote> = std::fs::read_to_string(&gitmodules)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == "url").then(|| value.trim().to_string())
            })
            .filter(|u| !u.starts_with("./") && !u.starts_with("../"))
            .filter_map(|u| Remote::parse(&u).ok())
            .collect();
        GitCall::new("submodule", ["submodule", "--quiet", "sync", "--recursive"])
            .run_checked(ctx, None, self.options.timeout)
            .await?;
        self.net_call(
            GitCall::new(
                "submodule",
                [
                    "submodule",
                    "--quiet",
                    "update",
                    "--init",
                    "--recursive",
                    "--force",
                ],
            ),
            ctx,
            &extra,
        )
        .await
        .map(drop)
    }

    /// Runs a call that talks to remotes, with their credentials; handles a changed SSH host key.
    async fn net_call(
        &self,
        call: GitCall,
        ctx: &Context<'_>,
        extra: &[Remote],
    ) -> Result<doco_process::Output, GitError> {
        let net = self.net_env(ctx.remote, extra).await?;
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

trait DepthArg {
    fn then_some_depth(self) -> Option<String>;
}

impl DepthArg for u32 {
    fn then_some_depth(self) -> Option<String> {
        (self > 0).then(|| format!("--depth={self}"))
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
        what: format!("checkout directory {}", dir.display()),
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

/// Whether the checkout was cloned with another depth than `depth`. Without a record (an older
/// checkout), a shallow checkout counts as "some depth" and a full one as depth 0.
fn needs_reclone(dir: &Path, depth: u32) -> bool {
    let Ok(Some(git_dir)) = git_dir(dir) else {
        return false;
    };
    match std::fs::read_to_string(git_dir.join(DEPTH_FILE)) {
        Ok(text) => text.trim().parse::<u32>().ok() != Some(depth),
        Err(_) if git_dir.join("shallow").exists() => depth == 0,
        Err(_) => {
            // An interrupted clone (unborn HEAD) is finished in place whatever the depth.
            head_commit(dir).ok().flatten().is_some() && depth > 0
        }
    }
}

fn write_depth(dir: &Path, depth: u32) {
    if let Ok(Some(git_dir)) = git_dir(dir) {
        let path = git_dir.join(DEPTH_FILE);
        if std::fs::read_to_string(&path)
            .ok()
            .as_deref()
            .map(str::trim)
            != Some(&depth.to_string())
            && let Err(e) = std::fs::write(&path, format!("{depth}\n"))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the clone depth");
        }
    }
}

/// Removes temporary siblings of `<parent>/<name>` left by an interrupted clone (ours only).
fn remove_stale_siblings(parent: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARK}");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            tracing::info!(dir = %path.display(), "removing a temporary checkout left by an interrupted clone");
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Exchanges two directories atomically (`renameat2(RENAME_EXCHANGE)`); where the filesystem
/// cannot, moves `b` aside, `a` into place and the old `b` to `a`.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        if renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).is_ok() {
            return Ok(());
        }
    }
    let aside = a.with_file_name(format!(
        "{}-old",
        a.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::rename(b, &aside)?;
    if let Err(e) = std::fs::rename(a, b) {
        let _ = std::fs::rename(&aside, b);
        return Err(e);
    }
    std::fs::rename(&aside, a)
}

enum Checkout {
    /// No `.git` (and `dir` is missing or empty): clone.
    Absent,
    /// A `.git` whose HEAD cannot be read: repaired by cloning beside it.
    Broken(String),
    /// A checkout; `head` is `None` while HEAD is unborn (an interrupted clone).
    Present { head: Option<String> },
}

fn checkout_state(dir: &Path) -> Result<Checkout, GitError> {
    match git_dir(dir) {
        Ok(Some(_)) => {
            return Ok(match head_commit(dir) {
                Ok(head) => Checkout::Present { head },
                Err(e) => Checkout::Broken(e.to_string()),
            });
        }
        Ok(None) => {}
        // A `.git` file that is not a gitdir link: broken, ours to repair.
        Err(GitError::BrokenCheckout { detail, .. }) if dir.join(".git").exists() => {
            return Ok(Checkout::Broken(detail));
        }
        Err(e) => return Err(e),
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_none() {
                Ok(Checkout::Absent)
            } else {
                Err(GitError::BrokenCheckout {
                    dir: dir.to_path_buf(),
                    detail: "the directory is not empty and has no .git; refusing to clone into it"
                        .to_string(),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkout::Absent),
        Err(e) => Err(GitError::BrokenCheckout {
            dir: dir.to_path_buf(),
            detail: format!("cannot read the directory: {e}"),
        }),
    }
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

    #[test]
    fn exchange_swaps_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("new"), "").unwrap();
        std::fs::write(b.join("old"), "").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("new").exists() && a.join("old").exists());
    }
}
