//! A filesystem watcher on a local repository's refs, as upstream has for local (`file://`) sources:
//! a commit or a branch update in the repository triggers a poll at once, and `interval: 0` polls
//! only on such changes. Watching the refs (not the work tree) means only what Git records counts.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Why a repository cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path is not a local Git repository.
    #[error("{path} is not a local Git repository (no refs directory)")]
    NotARepository {
        /// The path that was given.
        path: PathBuf,
    },
    /// The operating system refused the watch (for example, inotify limits).
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's reason.
        source: notify::Error,
    },
}

/// A running watcher; dropping it stops the watch.
pub struct RefWatcher {
    _watcher: RecommendedWatcher,
}

/// The Git directory of a local repository URL (`file:///path` or `/path`): `path/.git` for a
/// repository with a work tree, `path` itself for a bare one.
pub fn local_git_dir(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    if !path.starts_with('/') {
        return None;
    }
    let path = Path::new(path);
    let dot_git = path.join(".git");
    if dot_git.is_dir() {
        Some(dot_git)
    } else {
        Some(path.to_path_buf())
    }
}

/// Watches `git_dir`'s refs, `packed-refs` and `HEAD`; every change sends one `()` on `trigger`
/// (the poll loop coalesces bursts).
pub fn watch_refs(
    git_dir: &Path,
    trigger: mpsc::UnboundedSender<()>,
) -> Result<RefWatcher, WatchError> {
    let refs = git_dir.join("refs");
    if !refs.is_dir() {
        return Err(WatchError::NotARepository {
            path: git_dir.to_path_buf(),
        });
    }
    let root = git_dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| is_ref_path(&root, p)) {
            // The receiver is gone only when the poll loop ended; nothing to tell then.
            let _ = trigger.send(());
        }
    })
    .map_err(|source| WatchError::Watch {
        path: git_dir.to_path_buf(),
        source,
    })?;
    for (path, mode) in [
        (refs.as_path(), RecursiveMode::Recursive),
        (git_dir, RecursiveMode::NonRecursive),
    ] {
        watcher
            .watch(path, mode)
            .map_err(|source| WatchError::Watch {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(RefWatcher { _watcher: watcher })
}

fn is_ref_path(git_dir: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(git_dir) else {
        return false;
    };
    rest.starts_with("refs") || rest == Path::new("packed-refs") || rest == Path::new("HEAD")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn finds_the_git_dir_of_local_urls() {
        let bare = doco_testkit::git::BareRepo::new();
        let work = doco_testkit::git::WorkTree::clone_from(&bare);
        assert_eq!(
            local_git_dir(&bare.file_url()),
            Some(bare.path().to_path_buf())
        );
        assert_eq!(
            local_git_dir(&work.path().display().to_string()),
            Some(work.path().join(".git"))
        );
        assert_eq!(local_git_dir("https://example.com/o/r.git"), None);
    }

    #[tokio::test]
    async fn a_push_is_seen() {
        let bare = doco_testkit::git::BareRepo::new();
        let work = doco_testkit::git::WorkTree::clone_from(&bare);
        work.write("a.txt", "1");
        work.commit_and_push("first");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = watch_refs(bare.path(), tx).unwrap();

        work.write("a.txt", "2");
        work.commit_and_push("second");
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no event for a push")
            .expect("channel closed");
    }

    #[test]
    fn a_directory_without_refs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            watch_refs(dir.path(), mpsc::unbounded_channel().0),
            Err(WatchError::NotARepository { .. })
        ));
    }

    #[test]
    fn only_refs_packed_refs_and_head_count() {
        let root = Path::new("/r.git");
        assert!(is_ref_path(root, Path::new("/r.git/refs/heads/main")));
        assert!(is_ref_path(root, Path::new("/r.git/packed-refs")));
        assert!(is_ref_path(root, Path::new("/r.git/HEAD")));
        assert!(!is_ref_path(root, Path::new("/r.git/objects/ab/cdef")));
        assert!(!is_ref_path(root, Path::new("/elsewhere/refs/heads/main")));
    }
}
