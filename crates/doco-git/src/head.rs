//! Reading a checkout's state from its files, without spawning `git`.
//!
//! A quiet poll must cost one `git ls-remote` and nothing else, so the checkout's HEAD commit and its
//! `origin` URL are read straight from `.git/HEAD`, the ref files, `packed-refs` and `.git/config`.
//! Only the plain files format is understood; anything unexpected is reported as a broken checkout
//! (or, for the config, as "unknown", which makes the caller set the URL with git).

use std::path::{Path, PathBuf};

use crate::GitError;

/// The commit checked out in `dir`, read from `.git/HEAD` (and the ref file or `packed-refs` when
/// HEAD is symbolic) without spawning a process. `Ok(None)` when `dir` is not a checkout, or when
/// HEAD points at a branch with no commit yet.
pub fn head_commit(dir: &Path) -> Result<Option<String>, GitError> {
    let Some(git_dir) = git_dir(dir)? else {
        return Ok(None);
    };
    let broken = |detail: String| GitError::BrokenCheckout {
        dir: dir.to_path_buf(),
        detail,
    };
    let head_path = git_dir.join("HEAD");
    let head = std::fs::read_to_string(&head_path)
        .map_err(|e| broken(format!("cannot read {}: {e}", head_path.display())))?;
    let common = common_dir(&git_dir);
    let mut value = head.trim().to_string();
    // Follow symbolic refs (HEAD -> refs/heads/main -> ...), a few levels at most.
    for _ in 0..5 {
        if is_sha(&value) {
            return Ok(Some(value.to_ascii_lowercase()));
        }
        let Some(target) = value.strip_prefix("ref:").map(str::trim) else {
            return Err(broken(format!(
                "{} holds neither a commit nor a ref",
                head_path.display()
            )));
        };
        if !target.starts_with("refs/") || target.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(broken(format!("HEAD points at an invalid ref '{target}'")));
        }
        match read_ref(&git_dir, &common, target)? {
            Some(next) => value = next,
            None => return Ok(None),
        }
    }
    Err(broken(
        "HEAD is a chain of symbolic refs that is too long".to_string(),
    ))
}

/// The repository directory of the checkout in `dir`: `dir/.git`, or where a `.git` file's
/// `gitdir:` line points. `Ok(None)` when there is no `.git`.
pub(crate) fn git_dir(dir: &Path) -> Result<Option<PathBuf>, GitError> {
    let dot_git = dir.join(".git");
    let meta = match std::fs::metadata(&dot_git) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(GitError::BrokenCheckout {
                dir: dir.to_path_buf(),
                detail: format!("cannot read {}: {e}", dot_git.display()),
            });
        }
    };
    if meta.is_dir() {
        return Ok(Some(dot_git));
    }
    let text = std::fs::read_to_string(&dot_git).map_err(|e| GitError::BrokenCheckout {
        dir: dir.to_path_buf(),
        detail: format!("cannot read {}: {e}", dot_git.display()),
    })?;
    match text.trim().strip_prefix("gitdir:").map(str::trim) {
        Some(target) if !target.is_empty() => Ok(Some(dir.join(target))),
        _ => Err(GitError::BrokenCheckout {
            dir: dir.to_path_buf(),
            detail: format!("{} is a file without a 'gitdir:' line", dot_git.display()),
        }),
    }
}

/// Where shared refs live: `commondir` for a linked worktree, else the git dir itself.
fn common_dir(git_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(text) if !text.trim().is_empty() => git_dir.join(text.trim()),
        _ => git_dir.to_path_buf(),
    }
}

/// The content of a ref: a loose file first, then `packed-refs`. `Ok(None)` when it does not exist.
fn read_ref(git_dir: &Path, common: &Path, name: &str) -> Result<Option<String>, GitError> {
    for base in [git_dir, common] {
        match std::fs::read_to_string(base.join(name)) {
            Ok(text) => return Ok(Some(text.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A directory where a ref file should be, for instance: treat like "not loose".
            Err(_) => {}
        }
    }
    match std::fs::read_to_string(common.join("packed-refs")) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
            .filter_map(|l| l.split_once(' '))
            .find(|(_, r)| r.trim() == name)
            .map(|(sha, _)| sha.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GitError::BrokenCheckout {
            dir: git_dir.to_path_buf(),
            detail: format!("cannot read packed-refs: {e}"),
        }),
    }
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// What `.git/config` says about `remote.origin.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginUrl {
    /// Exactly one plain `url = ...` under `[remote "origin"]`.
    Is(String),
    /// No `[remote "origin"]` section at all.
    NoRemote,
    /// Something this reader does not handle (quotes, escapes, several values, includes): ask git.
    Unknown,
}

/// Reads `remote.origin.url` from the checkout's config file without spawning git.
pub(crate) fn origin_url(git_dir: &Path) -> OriginUrl {
    let Ok(text) = std::fs::read_to_string(common_dir(git_dir).join("config")) else {
        return OriginUrl::Unknown;
    };
    let mut in_origin = false;
    let mut seen_origin = false;
    let mut urls = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let header: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if header.to_ascii_lowercase().starts_with("[include") {
                return OriginUrl::Unknown;
            }
            in_origin = header == "[remote \"origin\"]";
            seen_origin |= in_origin;
            continue;
        }
        if !in_origin {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("url") {
            let value = value.trim();
            if value.contains(['"', '\\', '#', ';']) {
                return OriginUrl::Unknown;
            }
            urls.push(value.to_string());
        }
    }
    match (seen_origin, urls.len()) {
        (false, _) => OriginUrl::NoRemote,
        (true, 1) => urls.pop().map_or(OriginUrl::Unknown, OriginUrl::Is),
        _ => OriginUrl::Unknown,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git/refs/heads")).unwrap();
        dir
    }

    #[test]
    fn detached_head() {
        let dir = repo();
        std::fs::write(dir.path().join(".git/HEAD"), format!("{A}\n")).unwrap();
        assert_eq!(head_commit(dir.path()).unwrap().as_deref(), Some(A));
    }

    #[test]
    fn symbolic_head_loose_then_packed_then_unborn() {
        let dir = repo();
        std::fs::write(dir.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head_commit(dir.path()).unwrap(), None, "unborn branch");
        std::fs::write(
            dir.path().join(".git/packed-refs"),
            format!("# pack-refs with: peeled fully-peeled sorted\n{B} refs/heads/main\n^{A}\n"),
        )
        .unwrap();
        assert_eq!(head_commit(dir.path()).unwrap().as_deref(), Some(B));
        std::fs::write(dir.path().join(".git/refs/heads/main"), format!("{A}\n")).unwrap();
        assert_eq!(head_commit(dir.path()).unwrap().as_deref(), Some(A));
    }

    #[test]
    fn gitdir_file_is_followed() {
        let dir = repo();
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("HEAD"), format!("{B}\n")).unwrap();
        let wt = dir.path().join("wt");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join(".git"), "gitdir: ../real\n").unwrap();
        assert_eq!(head_commit(&wt).unwrap().as_deref(), Some(B));
    }

    #[test]
    fn not_a_checkout_and_broken_checkouts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(head_commit(dir.path()).unwrap(), None);
        assert_eq!(head_commit(&dir.path().join("missing")).unwrap(), None);

        let dir = repo();
        let err = head_commit(dir.path()).unwrap_err();
        assert!(matches!(err, GitError::BrokenCheckout { .. }), "{err}");
        std::fs::write(dir.path().join(".git/HEAD"), "garbage\n").unwrap();
        let err = head_commit(dir.path()).unwrap_err();
        assert!(matches!(err, GitError::BrokenCheckout { .. }), "{err}");
        std::fs::write(dir.path().join(".git/HEAD"), "ref: refs/../../etc\n").unwrap();
        assert!(head_commit(dir.path()).is_err());
    }

    #[test]
    fn reads_origin_url() {
        let dir = repo();
        let git = dir.path().join(".git");
        let write = |s: &str| std::fs::write(git.join("config"), s).unwrap();
        write("[core]\n\tbare = false\n");
        assert_eq!(origin_url(&git), OriginUrl::NoRemote);
        write(
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://h/o/r.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[remote \"other\"]\n\turl = x\n",
        );
        assert_eq!(origin_url(&git), OriginUrl::Is("https://h/o/r.git".into()));
        write("[remote \"origin\"]\n\turl = \"quoted\"\n");
        assert_eq!(origin_url(&git), OriginUrl::Unknown);
        write("[remote \"origin\"]\n\turl = a\n\turl = b\n");
        assert_eq!(origin_url(&git), OriginUrl::Unknown);
    }
}
