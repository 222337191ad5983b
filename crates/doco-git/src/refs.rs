//! Reading a mirror's state from its files, without spawning `git`.
//!
//! A quiet poll must cost one `git ls-remote` and nothing else, so what a reference resolved to at
//! the last successful sync (a ref under `refs/doco-cd/resolved/`, written by `git update-ref`) and
//! the mirror's `origin` URL are read straight from the loose ref file, `packed-refs` and `config`.
//! The same reading lets the daemon know its last good commit with no process and no network.
//! Only the plain files format is understood; anything unexpected is reported as a broken mirror
//! (or, for the config, as "unknown", which makes the caller set the URL with git).

use std::path::Path;

use crate::GitError;
use crate::reference::Reference;

/// Where the resolved commits are recorded, one ref per reference.
const RESOLVED_PREFIX: &str = "refs/doco-cd/resolved/";

/// The commit `reference` resolved to at the last successful sync of `mirror`, read from the
/// mirror's files (no process, no network). `Ok(None)` when the mirror does not exist or
/// `reference` was never synced into it.
pub fn resolved_commit(mirror: &Path, reference: &str) -> Result<Option<String>, GitError> {
    recorded(mirror, &Reference::parse(reference)?)
}

/// [`resolved_commit`] for a parsed reference.
pub(crate) fn recorded(mirror: &Path, reference: &Reference) -> Result<Option<String>, GitError> {
    if !mirror.join("HEAD").exists() {
        return Ok(None);
    }
    let name = resolved_ref(reference);
    match read_ref(mirror, &name)? {
        Some(sha) if is_sha(&sha) => Ok(Some(sha.to_ascii_lowercase())),
        Some(other) => Err(GitError::BrokenCheckout {
            dir: mirror.to_path_buf(),
            detail: format!("{name} holds '{other}', not a commit"),
        }),
        None => Ok(None),
    }
}

/// The ref recording what `reference` resolved to: the reference as one path component (`%` and
/// `/` percent-encoded; [`Reference::parse`] refused everything else a ref name cannot hold).
pub(crate) fn resolved_ref(reference: &Reference) -> String {
    let text = match reference {
        Reference::Commit(sha) => sha.as_str(),
        Reference::Head => "HEAD",
        Reference::Full(name) | Reference::Short(name) => name.as_str(),
    };
    format!(
        "{RESOLVED_PREFIX}{}",
        text.replace('%', "%25").replace('/', "%2F")
    )
}

/// Whether `dir` looks like a git repository at all (a bare mirror): it has a `HEAD`, a `config`
/// or an `objects` directory.
pub(crate) fn looks_like_repository(dir: &Path) -> bool {
    ["HEAD", "config", "objects"]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// Why the bare repository in `dir` cannot be used, if it cannot: an unreadable or malformed
/// `HEAD`, an unreadable `config`, no `objects` directory.
pub(crate) fn broken(dir: &Path) -> Option<String> {
    let head_path = dir.join("HEAD");
    let head = match std::fs::read_to_string(&head_path) {
        Ok(head) => head,
        Err(e) => return Some(format!("cannot read {}: {e}", head_path.display())),
    };
    let head = head.trim();
    let valid_head = is_sha(head)
        || head
            .strip_prefix("ref:")
            .map(str::trim)
            .is_some_and(|target| {
                target.starts_with("refs/") && !target.split('/').any(|c| c == ".." || c.is_empty())
            });
    if !valid_head {
        return Some(format!(
            "{} holds neither a commit nor a ref",
            head_path.display()
        ));
    }
    let config = dir.join("config");
    if let Err(e) = std::fs::read(&config) {
        return Some(format!("cannot read {}: {e}", config.display()));
    }
    if !dir.join("objects").is_dir() {
        return Some("it has no objects directory".to_string());
    }
    None
}

/// The content of a ref: a loose file first, then `packed-refs`. `Ok(None)` when it does not exist.
fn read_ref(git_dir: &Path, name: &str) -> Result<Option<String>, GitError> {
    match std::fs::read_to_string(git_dir.join(name)) {
        Ok(text) => return Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // A directory where a ref file should be, for instance: treat like "not loose".
        Err(_) => {}
    }
    match std::fs::read_to_string(git_dir.join("packed-refs")) {
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

/// What the mirror's `config` says about `remote.origin.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginUrl {
    /// Exactly one plain `url = ...` under `[remote "origin"]`.
    Is(String),
    /// No `[remote "origin"]` section at all.
    NoRemote,
    /// Something this reader does not handle (quotes, escapes, several values, includes): ask git.
    Unknown,
}

/// Reads `remote.origin.url` from the mirror's config file without spawning git.
pub(crate) fn origin_url(git_dir: &Path) -> OriginUrl {
    let Ok(text) = std::fs::read_to_string(git_dir.join("config")) else {
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

    fn mirror() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("refs/doco-cd/resolved")).unwrap();
        std::fs::create_dir_all(dir.path().join("objects")).unwrap();
        std::fs::write(dir.path().join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(dir.path().join("config"), "[core]\n\tbare = true\n").unwrap();
        dir
    }

    #[test]
    fn resolved_commit_reads_loose_then_packed_refs() {
        let dir = mirror();
        assert_eq!(resolved_commit(dir.path(), "feature/x").unwrap(), None);
        assert_eq!(
            resolved_ref(&Reference::parse("feature/x").unwrap()),
            "refs/doco-cd/resolved/feature%2Fx"
        );
        std::fs::write(
            dir.path().join("packed-refs"),
            format!(
                "# pack-refs with: peeled fully-peeled sorted\n{B} refs/doco-cd/resolved/feature%2Fx\n"
            ),
        )
        .unwrap();
        assert_eq!(
            resolved_commit(dir.path(), "feature/x").unwrap().as_deref(),
            Some(B)
        );
        std::fs::write(
            dir.path().join("refs/doco-cd/resolved/feature%2Fx"),
            format!("{A}\n"),
        )
        .unwrap();
        assert_eq!(
            resolved_commit(dir.path(), "feature/x").unwrap().as_deref(),
            Some(A)
        );
        // A commit reference is recorded under its lower-case form.
        let upper = A.to_uppercase();
        std::fs::write(dir.path().join(format!("refs/doco-cd/resolved/{A}")), A).unwrap();
        assert_eq!(
            resolved_commit(dir.path(), &upper).unwrap().as_deref(),
            Some(A)
        );
        // Garbage in the ref is a broken mirror, an invalid reference is refused.
        std::fs::write(dir.path().join("refs/doco-cd/resolved/main"), "junk").unwrap();
        assert!(matches!(
            resolved_commit(dir.path(), "main"),
            Err(GitError::BrokenCheckout { .. })
        ));
        assert!(matches!(
            resolved_commit(dir.path(), "../x"),
            Err(GitError::InvalidInput { .. })
        ));
    }

    #[test]
    fn no_mirror_means_nothing_recorded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolved_commit(dir.path(), "main").unwrap(), None);
        assert_eq!(
            resolved_commit(&dir.path().join("missing"), "main").unwrap(),
            None
        );
    }

    #[test]
    fn broken_mirrors_are_recognised() {
        let dir = mirror();
        assert!(looks_like_repository(dir.path()));
        assert_eq!(broken(dir.path()), None);
        std::fs::write(dir.path().join("HEAD"), format!("{A}\n")).unwrap();
        assert_eq!(broken(dir.path()), None, "a detached HEAD is fine");
        for bad in ["garbage\n", "ref: refs/../../etc\n", "ref: heads/main\n"] {
            std::fs::write(dir.path().join("HEAD"), bad).unwrap();
            assert!(broken(dir.path()).is_some(), "{bad}");
        }
        std::fs::write(dir.path().join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::remove_dir_all(dir.path().join("objects")).unwrap();
        assert!(broken(dir.path()).is_some());
        let empty = tempfile::tempdir().unwrap();
        assert!(!looks_like_repository(empty.path()));
    }

    #[test]
    fn reads_origin_url() {
        let dir = mirror();
        let git = dir.path();
        let write = |s: &str| std::fs::write(git.join("config"), s).unwrap();
        write("[core]\n\tbare = true\n");
        assert_eq!(origin_url(git), OriginUrl::NoRemote);
        write(
            "[core]\n\tbare = true\n[remote \"origin\"]\n\turl = https://h/o/r.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[remote \"other\"]\n\turl = x\n",
        );
        assert_eq!(origin_url(git), OriginUrl::Is("https://h/o/r.git".into()));
        write("[remote \"origin\"]\n\turl = \"quoted\"\n");
        assert_eq!(origin_url(git), OriginUrl::Unknown);
        write("[remote \"origin\"]\n\turl = a\n\turl = b\n");
        assert_eq!(origin_url(git), OriginUrl::Unknown);
    }
}
