//! The bare mirror of a remote: cloned beside and renamed, fetched, never checked out.
//!
//! A mirror holds objects and refs only; the files the daemon deploys are exported from it per
//! revision (`export.rs`), so a fetch can never leave a half-updated tree under running containers.
//! What a reference resolved to at the last successful sync is recorded in the mirror as a ref
//! (`refs.rs`), which makes the quiet poll one `git ls-remote` compared with a file. A mirror is
//! created in a temporary sibling and renamed into place, a broken one or one of another depth is
//! replaced by a clone made beside it, and a failed fetch leaves it (and its records) as they were.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::command::{self, Context, GitCall};
use crate::reference::Reference;
use crate::refs::{self, OriginUrl, origin_url};
use crate::{GitClient, GitError, SyncOutcome};

/// The refspecs of every fetch: all branches and tags, as they are on the remote (pruned and
/// forced by the flags).
const FETCH_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// The file in a mirror that records the depth it was cloned with.
pub(crate) const DEPTH_FILE: &str = "doco-cd-depth";

/// Marks the temporary siblings of a mirror (`.<name>.doco-cd-tmp-...`).
const TEMP_MARK: &str = ".doco-cd-tmp-";

impl GitClient {
    /// The body of [`GitClient::sync_with`], with the mirror's lock held: also how a submodule's
    /// mirror is brought to a commit.
    pub(crate) async fn sync_locked(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        mirror: &Path,
        depth: u32,
    ) -> Result<SyncOutcome, GitError> {
        match mirror_state(mirror)? {
            Mirror::Absent => {
                self.clone_beside(ctx, reference, mirror, depth, false)
                    .await
            }
            Mirror::Broken(detail) => {
                tracing::warn!(mirror = %mirror.display(), %detail, "the mirror is broken; re-cloning beside it");
                self.clone_beside(ctx, reference, mirror, depth, true).await
            }
            Mirror::Present => {
                if needs_reclone(mirror, depth) {
                    tracing::info!(mirror = %mirror.display(), depth, "the clone depth changed; re-cloning beside the mirror");
                    return self.clone_beside(ctx, reference, mirror, depth, true).await;
                }
                match self.update(ctx, reference, mirror, depth).await {
                    Err(GitError::BrokenCheckout { detail, .. }) => {
                        tracing::warn!(mirror = %mirror.display(), %detail, "the mirror is broken; re-cloning beside it");
                        self.clone_beside(ctx, reference, mirror, depth, true).await
                    }
                    other => other,
                }
            }
        }
    }

    /// Clones into a temporary sibling of `mirror`, then renames it to `mirror` (`swap`: exchanges
    /// the two atomically and removes the old mirror). On failure the sibling is removed and
    /// `mirror` is left as it was.
    async fn clone_beside(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        mirror: &Path,
        depth: u32,
        swap: bool,
    ) -> Result<SyncOutcome, GitError> {
        // Ask the remote first, so an unreachable remote or a wrong reference leaves no trace.
        let (resolved_ref, sha) = self.resolve(ctx, reference).await?;
        let tmp = temp_sibling(mirror)?;
        let populated = self
            .populate(&ctx.in_repo(&tmp), reference, &resolved_ref, &sha, depth)
            .await;
        place(populated, &tmp, mirror, swap)?;
        tracing::info!(url = %ctx.remote.display, reference = ctx.reference, commit = %sha, mirror = %mirror.display(), depth, "cloned");
        Ok(SyncOutcome {
            commit: sha,
            fetched: true,
            cloned: true,
        })
    }

    /// `init --bare`, origin, fetch, the commit (deepening if needed), its record, the depth record.
    async fn populate(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        resolved_ref: &str,
        sha: &str,
        depth: u32,
    ) -> Result<(), GitError> {
        GitCall::new("init", ["init", "--bare", "--quiet"])
            .run_checked(ctx, None, self.options.timeout)
            .await?;
        self.set_origin(ctx).await?;
        self.fetch(ctx, resolved_ref, depth).await?;
        if matches!(reference, Reference::Commit(_)) || depth > 0 {
            self.ensure_commit(ctx, sha, depth).await?;
        }
        self.record(ctx, reference, sha).await?;
        write_depth(ctx.repo, depth);
        Ok(())
    }

    async fn update(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        mirror: &Path,
        depth: u32,
    ) -> Result<SyncOutcome, GitError> {
        let recorded = refs::recorded(mirror, reference)?;
        let unchanged = |commit: String| SyncOutcome {
            commit,
            fetched: false,
            cloned: false,
        };
        let ctx = &ctx.in_repo(mirror);
        if let Reference::Commit(sha) = reference {
            self.set_origin(ctx).await?;
            if recorded.as_deref() == Some(sha.as_str()) {
                return Ok(unchanged(sha.clone()));
            }
            let mut fetched = false;
            if !self.has_commit(ctx, sha).await? {
                self.fetch(ctx, sha, depth).await?;
                fetched = true;
                self.ensure_commit(ctx, sha, depth).await?;
            }
            self.record(ctx, reference, sha).await?;
            write_depth(ctx.repo, depth);
            return Ok(SyncOutcome {
                commit: sha.clone(),
                fetched,
                cloned: false,
            });
        }
        let (resolved_ref, sha) = self.resolve(ctx, reference).await?;
        self.set_origin(ctx).await?;
        if recorded.as_deref() == Some(sha.as_str()) {
            return Ok(unchanged(sha));
        }
        self.fetch(ctx, &resolved_ref, depth).await?;
        if depth > 0 {
            self.ensure_commit(ctx, &sha, depth).await?;
        }
        self.record(ctx, reference, &sha).await?;
        write_depth(ctx.repo, depth);
        tracing::info!(url = %ctx.remote.display, reference = ctx.reference, from = ?recorded, to = %sha, mirror = %mirror.display(), "fetched");
        Ok(SyncOutcome {
            commit: sha,
            fetched: true,
            cloned: false,
        })
    }

    /// Points `origin` at the credential-free URL; no process when the config already says so.
    pub(crate) async fn set_origin(&self, ctx: &Context<'_>) -> Result<(), GitError> {
        let current = ctx.repo.map_or(OriginUrl::Unknown, origin_url);
        let url = ctx.remote.clean.as_str();
        let args = match current {
            OriginUrl::Is(existing) if existing == url => return Ok(()),
            OriginUrl::NoRemote => ["remote", "add", "--", "origin", url],
            OriginUrl::Is(_) | OriginUrl::Unknown => ["remote", "set-url", "--", "origin", url],
        };
        tracing::debug!(url = %ctx.remote.display, mirror = ?ctx.repo, "setting origin");
        GitCall::new("remote", args)
            .run_checked(ctx, None, self.options.timeout)
            .await
            .map(drop)
    }

    /// Records that `reference` resolved to `sha` (`git update-ref`), read back by
    /// [`refs::recorded`].
    pub(crate) async fn record(
        &self,
        ctx: &Context<'_>,
        reference: &Reference,
        sha: &str,
    ) -> Result<(), GitError> {
        let name = refs::resolved_ref(reference);
        GitCall::new("update-ref", ["update-ref", "--no-deref", &name, sha])
            .run_checked(ctx, None, self.options.timeout)
            .await
            .map(drop)
    }

    /// Fetches all branches and tags from `origin` (pruned, forced, `--depth` when shallow), plus
    /// `extra_ref` when it lies outside them (`refs/pull/1/head`).
    async fn fetch(&self, ctx: &Context<'_>, extra_ref: &str, depth: u32) -> Result<(), GitError> {
        self.fetch_with(
            ctx,
            extra_ref,
            (depth > 0).then(|| format!("--depth={depth}")),
        )
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
        self.net_call(GitCall::new("fetch", args), ctx)
            .await
            .map(drop)
    }

    /// Makes sure `sha` is present; in a shallow mirror deepens ×2, ×4, then fetches the full
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
            if ctx.repo.is_some_and(|m| m.join("shallow").exists()) {
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

    /// Whether the mirror's object store holds `sha` as a commit.
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
}

/// A new empty temporary sibling of `target` (`.<name>.doco-cd-tmp-<pid>-<n>`), after removing
/// those an interrupted clone left.
pub(crate) fn temp_sibling(target: &Path) -> Result<PathBuf, GitError> {
    let (parent, name) = match (target.parent(), target.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy().into_owned()),
        _ => {
            return Err(GitError::InvalidInput {
                what: format!("mirror directory {}", target.display()),
                reason: "it has no parent directory or no name".to_string(),
            });
        }
    };
    std::fs::create_dir_all(parent).map_err(|e| fs_error("create directory", parent, &e))?;
    remove_stale_siblings(parent, &name);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = parent.join(format!(
        ".{name}{TEMP_MARK}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&tmp).map_err(|e| fs_error("create directory", &tmp, &e))?;
    Ok(tmp)
}

/// Puts the repository built in `tmp` in place at `target` when `built` succeeded (renamed, or
/// exchanged with the old one when `swap`), then removes `tmp`, which holds the old repository after
/// a swap and the partial one after a failure.
pub(crate) fn place(
    built: Result<(), GitError>,
    tmp: &Path,
    target: &Path,
    swap: bool,
) -> Result<(), GitError> {
    let placed = match built {
        Ok(()) if swap => exchange(tmp, target).map_err(|e| fs_error("swap into", target, &e)),
        Ok(()) => std::fs::rename(tmp, target).map_err(|e| fs_error("rename into", target, &e)),
        Err(e) => Err(e),
    };
    if tmp.exists()
        && let Err(e) = std::fs::remove_dir_all(tmp)
    {
        tracing::warn!(dir = %tmp.display(), error = %e, "cannot remove a temporary mirror");
    }
    placed
}

pub(crate) fn fs_error(what: &str, path: &Path, e: &std::io::Error) -> GitError {
    GitError::Failed {
        command: format!("{what} {}", path.display()),
        detail: e.to_string(),
    }
}

enum Mirror {
    /// Missing or an empty directory: clone.
    Absent,
    /// A repository that cannot be used: repaired by cloning beside it.
    Broken(String),
    Present,
}

fn mirror_state(mirror: &Path) -> Result<Mirror, GitError> {
    match std::fs::read_dir(mirror).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(Mirror::Absent),
        Ok(false) if refs::looks_like_repository(mirror) => {
            Ok(refs::broken(mirror).map_or(Mirror::Present, Mirror::Broken))
        }
        Ok(false) => Err(GitError::BrokenCheckout {
            dir: mirror.to_path_buf(),
            detail:
                "the directory is not empty and is not a git repository; refusing to clone into it"
                    .to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mirror::Absent),
        Err(e) => Err(GitError::BrokenCheckout {
            dir: mirror.to_path_buf(),
            detail: format!("cannot read the directory: {e}"),
        }),
    }
}

/// Whether the mirror was cloned with another depth than `depth`. Without a record (an adopted
/// checkout that had none), a shallow mirror counts as "some depth" and a full one as depth 0.
fn needs_reclone(mirror: &Path, depth: u32) -> bool {
    match std::fs::read_to_string(mirror.join(DEPTH_FILE)) {
        Ok(text) => text.trim().parse::<u32>().ok() != Some(depth),
        Err(_) if mirror.join("shallow").exists() => depth == 0,
        Err(_) => depth > 0,
    }
}

fn write_depth(mirror: Option<&Path>, depth: u32) {
    let Some(mirror) = mirror else {
        return;
    };
    let path = mirror.join(DEPTH_FILE);
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

/// Removes temporary siblings of `<parent>/<name>` left by an interrupted clone (ours only).
fn remove_stale_siblings(parent: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARK}");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            tracing::info!(dir = %path.display(), "removing a temporary mirror left by an interrupted clone");
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn depth_records_decide_reclones() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path();
        assert!(!needs_reclone(m, 0), "full, no record");
        assert!(needs_reclone(m, 1));
        std::fs::write(m.join("shallow"), "").unwrap();
        assert!(needs_reclone(m, 0), "shallow, no record");
        assert!(!needs_reclone(m, 3));
        write_depth(Some(m), 3);
        assert!(!needs_reclone(m, 3));
        assert!(needs_reclone(m, 2));
    }
}
