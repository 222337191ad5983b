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

mod command;
mod error;
mod head;
mod reference;
mod url;

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use error::GitError;
pub use head::head_commit;
pub use url::{full_name, redact_url, repo_name};

use command::{Context, GitCall};
use head::{OriginUrl, git_dir, origin_url};
use reference::Reference;
use url::Remote;

/// How [`GitClient`] talks to remotes.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// A token for HTTP(S) remotes, sent as `Authorization: Basic base64(user:token)`.
    pub http_token: Option<HttpToken>,
    /// The deadline for each git process (default 120 s); past it the process group is killed and
    /// the call fails with [`GitError::Transport`].
    pub timeout: Duration,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            http_token: None,
            timeout: Duration::from_secs(120),
        }
    }
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

/// Drives the `git` CLI for one set of options (credentials, deadline).
#[derive(Debug, Clone)]
pub struct GitClient {
    options: GitOptions,
}

/// The refspecs of every fetch: all branches and tags (pruned and forced by the flags).
const FETCH_REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

impl GitClient {
    pub fn new(options: GitOptions) -> Self {
        GitClient { options }
    }

    /// Makes `dir` a checkout of `url` at `reference`, spending as little as possible:
    /// - `dir` has no `.git`: clone (into `dir`; parent dirs created), then check out the resolved
    ///   commit (detached). `dir` may exist only if it is empty.
    /// - `dir` is a checkout: one `git ls-remote` resolves the reference; if it equals the
    ///   checkout's HEAD, return with `fetched: false` and no other git process. Otherwise `git
    ///   fetch` (all branches and tags, `--prune`, `--force`) then `git checkout --force --detach`.
    /// - a 40-hex reference is a commit: if HEAD already equals it, zero processes; else fetch if
    ///   the object is missing, then check out.
    ///
    /// Always points `origin` at `url` (without credentials), updating it only when it differs.
    pub async fn sync(
        &self,
        url: &str,
        reference: &str,
        dir: &Path,
    ) -> Result<SyncOutcome, GitError> {
        let remote = Remote::parse(url)?;
        let parsed = Reference::parse(reference)?;
        let ctx = Context {
            remote: &remote,
            reference,
            checkout: Some(dir),
        };
        match checkout_state(dir)? {
            Checkout::Absent => self.clone_into(&ctx, &parsed, dir).await,
            Checkout::Present { head } => self.update(&ctx, &parsed, dir, head).await,
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
            .call("ls-remote", args)
            .run_checked(&no_checkout, self.token(), self.options.timeout)
            .await?;
        reference
            .pick(&output.stdout)
            .ok_or_else(|| GitError::ReferenceNotFound {
                url: ctx.remote.display.clone(),
                reference: ctx.reference.to_string(),
            })
    }

    async fn clone_into(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        dir: &Path,
    ) -> Result<SyncOutcome, GitError> {
        // Ask the remote first, so an unreachable remote or a wrong reference leaves no trace.
        let (resolved_ref, sha) = self.resolve(ctx, reference).await?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| GitError::Failed {
                command: format!("create directory {}", dir.display()),
                detail: e.to_string(),
            })?;
        // `init` + `remote add` + `fetch` rather than `clone`: until the checkout succeeds, HEAD
        // stays unborn, so an interrupted clone is finished by the next sync instead of looking
        // like a checkout of the default branch.
        self.call("init", ["init", "--quiet"])
            .run_checked(ctx, None, self.options.timeout)
            .await?;
        self.set_origin(ctx, dir).await?;
        self.fetch(ctx, &resolved_ref).await?;
        if matches!(reference, Reference::Commit(_)) {
            self.require_commit(ctx, &sha).await?;
        }
        self.checkout(ctx, &sha).await?;
        tracing::info!(url = %ctx.remote.display, reference = ctx.reference, commit = %sha, dir = %dir.display(), "cloned");
        Ok(SyncOutcome {
            commit: sha,
            fetched: true,
            cloned: true,
        })
    }

    async fn update(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        dir: &Path,
        head: Option<String>,
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
                self.fetch(ctx, sha).await?;
                fetched = true;
                self.require_commit(ctx, sha).await?;
            }
            self.checkout(ctx, sha).await?;
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
        self.fetch(ctx, &resolved_ref).await?;
        self.checkout(ctx, &sha).await?;
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
        self.call("remote", args)
            .run_checked(ctx, None, self.options.timeout)
            .await
            .map(drop)
    }

    /// Fetches all branches and tags from `origin` (pruned, forced), plus `extra_ref` when it lies
    /// outside them (`refs/pull/1/head`).
    async fn fetch(&self, ctx: &Context<'_>, extra_ref: &str) -> Result<(), GitError> {
        let mut args: Vec<String> = [
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "--no-tags",
            "--",
            "origin",
        ]
        .into_iter()
        .map(String::from)
        .chain(FETCH_REFSPECS.into_iter().map(String::from))
        .collect();
        if extra_ref.starts_with("refs/")
            && !extra_ref.starts_with("refs/heads/")
            && !extra_ref.starts_with("refs/tags/")
        {
            args.push(extra_ref.to_string());
        }
        self.call("fetch", args)
            .run_checked(ctx, self.token(), self.options.timeout)
            .await
            .map(drop)
    }

    /// Whether the checkout's object store holds `sha` as a commit.
    async fn has_commit(&self, ctx: &Context<'_>, sha: &str) -> Result<bool, GitError> {
        let output = self
            .call("cat-file", ["cat-file", "-e", &format!("{sha}^{{commit}}")])
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

    /// [`GitError::ReferenceNotFound`] unless the commit is present (after a fetch).
    async fn require_commit(&self, ctx: &Context<'_>, sha: &str) -> Result<(), GitError> {
        if self.has_commit(ctx, sha).await? {
            Ok(())
        } else {
            Err(GitError::ReferenceNotFound {
                url: ctx.remote.display.clone(),
                reference: ctx.reference.to_string(),
            })
        }
    }

    /// `git checkout --force --detach <sha>`.
    async fn checkout(&self, ctx: &Context<'_>, sha: &str) -> Result<(), GitError> {
        self.call(
            "checkout",
            ["checkout", "--quiet", "--force", "--detach", sha, "--"],
        )
        .run_checked(ctx, None, self.options.timeout)
        .await
        .map(drop)
    }

    fn call<I, S>(&self, op: &'static str, args: I) -> GitCall
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        GitCall::new(op, args)
    }

    fn token(&self) -> Option<&HttpToken> {
        self.options.http_token.as_ref()
    }
}

enum Checkout {
    /// No `.git` (and `dir` is missing or empty): clone.
    Absent,
    /// A checkout; `head` is `None` while HEAD is unborn (an interrupted clone).
    Present { head: Option<String> },
}

fn checkout_state(dir: &Path) -> Result<Checkout, GitError> {
    if git_dir(dir)?.is_some() {
        let head = head_commit(dir)?;
        return Ok(Checkout::Present { head });
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
