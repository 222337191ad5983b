//! Migration from the single-checkout layout: a working-tree checkout becomes a bare mirror.
//!
//! Containers deployed by an older doco-cd bind-mount files of its checkout, so the migration must
//! not touch the checkout's work tree, and it must not need the network (the remote may be
//! unreachable when the daemon starts). The repository files of the checkout's `.git` (objects,
//! refs, HEAD, config, shallow and depth records) are copied into a temporary sibling of the mirror,
//! which is made bare, pointed at the URL, told what the reference resolved to (the checkout's
//! HEAD), and renamed into place.

use std::path::Path;

use crate::command::{Context, GitCall};
use crate::mirror::{DEPTH_FILE, fs_error, place, temp_sibling};
use crate::reference::Reference;
use crate::url::Remote;
use crate::{GitClient, GitError, check_dir};

/// What is copied from the checkout's `.git` (the index, hooks, logs and submodule clones are not).
const REPOSITORY_FILES: [&str; 6] = [
    "HEAD",
    "config",
    "objects",
    "refs",
    "packed-refs",
    "shallow",
];

impl GitClient {
    /// Makes `mirror` (which must not exist) a bare mirror holding every object and ref of the
    /// working-tree checkout `checkout` (which has a `.git` directory), with `origin` set to `url`,
    /// and records the checkout's HEAD as what `reference` resolved to. No network; the checkout is
    /// only read, and its `.git` may be removed by the caller afterwards. `mirror` appears whole or
    /// not at all.
    pub async fn adopt_checkout(
        &self,
        url: &str,
        reference: &str,
        checkout: &Path,
        mirror: &Path,
    ) -> Result<(), GitError> {
        let remote = Remote::parse(url)?;
        let parsed = Reference::parse(reference)?;
        check_dir(checkout)?;
        check_dir(mirror)?;
        let git_dir = checkout.join(".git");
        if !git_dir.is_dir() {
            return Err(GitError::BrokenCheckout {
                dir: checkout.to_path_buf(),
                detail: "it has no .git directory to adopt".to_string(),
            });
        }
        let lock = self.lock_for(mirror);
        let _guard = lock.lock().await;
        if mirror.symlink_metadata().is_ok() {
            return Err(GitError::InvalidInput {
                what: format!("mirror directory {}", mirror.display()),
                reason: "it already exists; a checkout is only adopted into a new mirror"
                    .to_string(),
            });
        }
        let tmp = temp_sibling(mirror)?;
        let ctx = Context::new(&remote, reference).in_repo(&tmp);
        let built = async {
            for name in REPOSITORY_FILES.iter().chain([&DEPTH_FILE]) {
                let from = git_dir.join(name);
                copy_tree(&from, &tmp.join(name)).map_err(|e| fs_error("copy", &from, &e))?;
            }
            GitCall::new("config", ["config", "core.bare", "true"])
                .run_checked(&ctx, None, self.options.timeout)
                .await?;
            self.set_origin(&ctx).await?;
            let head = GitCall::new(
                "rev-parse",
                ["rev-parse", "--verify", "--end-of-options", "HEAD^{commit}"],
            )
            .run_checked(&ctx, None, self.options.timeout)
            .await?;
            let head = head.stdout.trim().to_ascii_lowercase();
            self.record(&ctx, &parsed, &head).await?;
            tracing::info!(url = %remote.display, reference, commit = %head, checkout = %checkout.display(), mirror = %mirror.display(), "adopted a checkout as a mirror");
            Ok(())
        }
        .await;
        place(built, &tmp, mirror, false)
    }
}

/// Copies a file or a directory tree (symlinks as symlinks); a missing `from` copies nothing.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = match from.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else {
        std::fs::copy(from, to).map(drop)
    }
}
