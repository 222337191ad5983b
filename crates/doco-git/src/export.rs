//! Immutable exports: the tree of one commit written out of a mirror, submodules included.
//!
//! Running containers bind-mount files of an export, so an export is never changed once it is in
//! place: it is staged beside its destination and renamed (it appears whole or not at all), its
//! files are read-only, and another revision gets another directory. The mirror is only read: the
//! tree goes through a temporary index outside it into `--work-tree` at the staging directory.
//!
//! A submodule's repository is a bare mirror of its own under `<mirror's parent>/submodules/`,
//! shared by every superproject that uses it and fetched only when the recorded commit is missing;
//! its commit is exported into the submodule's path, recursively.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path};
use std::pin::Pin;

use sha2::Digest as _;

use crate::command::{self, Context, GitCall, NetEnv};
use crate::mirror::fs_error;
use crate::reference::Reference;
use crate::url::Remote;
use crate::{GitClient, GitError, check_dir, repo_name};

/// Submodules nested deeper than this are refused (a submodule can, by mistake, contain itself).
const MAX_SUBMODULE_NESTING: usize = 8;

/// The mode of a tree entry that is a submodule (a gitlink).
const GITLINK_MODE: &str = "160000";

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl GitClient {
    /// Writes the tree of `commit` (40 hex digits, present in `mirror`) to `dest`, which must not
    /// exist. The tree is staged in `<dest>.partial` (one left by a crash is removed first) and
    /// renamed, so `dest` appears whole or not at all. With [`crate::GitOptions::submodules`] and a
    /// `.gitmodules` in the tree, each submodule's commit is exported into its path (relative URLs
    /// resolve against `url`; each submodule host gets its own credentials). Regular files are
    /// made read-only (0444, 0555 when executable); directories stay writable by the owner, so the
    /// daemon can decrypt files in place once and remove the tree later. Symlinks stay symlinks.
    /// The mirror is not modified.
    pub async fn export(
        &self,
        url: &str,
        mirror: &Path,
        commit: &str,
        dest: &Path,
    ) -> Result<(), GitError> {
        let remote = Remote::parse(url)?;
        check_dir(mirror)?;
        check_dir(dest)?;
        let Reference::Commit(sha) = Reference::parse(commit)? else {
            return Err(GitError::InvalidInput {
                what: format!("commit '{commit}'"),
                reason: "an export needs a full commit id (40 hex digits)".to_string(),
            });
        };
        if dest.symlink_metadata().is_ok() {
            return Err(GitError::InvalidInput {
                what: format!("export directory {}", dest.display()),
                reason: "it already exists; an export is never written over".to_string(),
            });
        }
        let modules = match mirror.parent() {
            Some(parent) => parent.join("submodules"),
            None => {
                return Err(GitError::InvalidInput {
                    what: format!("mirror directory {}", mirror.display()),
                    reason: "it has no parent directory".to_string(),
                });
            }
        };
        let lock = self.lock_for(mirror);
        let _guard = lock.lock().await;
        let staging = with_suffix(dest, ".partial");
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {
                tracing::info!(dir = %staging.display(), "removed an export left by an interrupted one")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fs_error("remove", &staging, &e)),
        }
        std::fs::create_dir_all(&staging)
            .map_err(|e| fs_error("create directory", &staging, &e))?;
        let ctx = Context::new(&remote, &sha).in_repo(mirror);
        let exported = match self.export_tree(ctx, &sha, &staging, &modules, 0).await {
            Ok(()) => seal(&staging)
                .and_then(|()| std::fs::rename(&staging, dest))
                .map_err(|e| fs_error("export into", dest, &e)),
            Err(e) => Err(e),
        };
        if exported.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        exported?;
        tracing::info!(url = %remote.display, commit = %sha, dest = %dest.display(), "exported");
        Ok(())
    }

    /// Writes the tree of `sha` from `ctx.repo` into the existing directory `target`, then its
    /// submodules (`level` is the nesting depth).
    fn export_tree<'a>(
        &'a self,
        ctx: Context<'a>,
        sha: &'a str,
        target: &'a Path,
        modules: &'a Path,
        level: usize,
    ) -> BoxFuture<'a, Result<(), GitError>> {
        Box::pin(async move {
            let index = tempfile::tempdir()
                .map_err(|e| fs_error("create", Path::new("a temporary directory"), &e))?;
            let net = NetEnv {
                vars: vec![(
                    "GIT_INDEX_FILE".into(),
                    index.path().join("index").display().to_string(),
                )],
                ..NetEnv::default()
            };
            let tree_ctx = Context {
                work_tree: Some(target),
                ..ctx
            };
            let timeout = self.options.timeout;
            GitCall::new("read-tree", ["read-tree", sha])
                .run_checked(&tree_ctx, Some(&net), timeout)
                .await?;
            GitCall::new("checkout-index", ["checkout-index", "--all", "--force"])
                .run_checked(&tree_ctx, Some(&net), timeout)
                .await?;
            let gitmodules = target.join(".gitmodules");
            if !self.options.submodules || !gitmodules.symlink_metadata().is_ok_and(|m| m.is_file())
            {
                return Ok(());
            }
            let urls = self.submodule_urls(&ctx, &gitmodules).await?;
            for (path, commit) in self.gitlinks(&ctx, sha).await? {
                let Some(url) = urls.get(&path) else {
                    tracing::warn!(url = %ctx.remote.display, commit = sha, path, "a submodule without a URL in .gitmodules is left empty");
                    continue;
                };
                let dest = safe_join(target, &path)?;
                self.export_submodule(&ctx, url, &commit, &dest, modules, level + 1)
                    .await?;
            }
            Ok(())
        })
    }

    /// Brings the submodule's own mirror to `commit` (no process when it was already there) and
    /// exports it into `dest`.
    async fn export_submodule(
        &self,
        parent: &Context<'_>,
        url: &str,
        commit: &str,
        dest: &Path,
        modules: &Path,
        level: usize,
    ) -> Result<(), GitError> {
        if level > MAX_SUBMODULE_NESTING {
            return Err(GitError::InvalidInput {
                what: format!("submodule {url} of {}", parent.remote.display),
                reason: format!(
                    "submodules are nested more than {MAX_SUBMODULE_NESTING} levels deep"
                ),
            });
        }
        let remote = Remote::parse(&submodule_url(&parent.remote.clean, url)?)?;
        let mirror = modules.join(module_dir_name(&remote.clean));
        let ctx = Context {
            via: Some(parent.remote),
            ..Context::new(&remote, commit).in_repo(&mirror)
        };
        {
            let lock = self.lock_for(&mirror);
            let _guard = lock.lock().await;
            self.sync_locked(&ctx, &Reference::Commit(commit.to_string()), &mirror, 0)
                .await?;
        }
        self.export_tree(ctx, commit, dest, modules, level).await
    }

    /// `path -> url` of the submodules declared in a `.gitmodules` file.
    async fn submodule_urls(
        &self,
        ctx: &Context<'_>,
        gitmodules: &Path,
    ) -> Result<HashMap<String, String>, GitError> {
        let file = gitmodules.display().to_string();
        let output = GitCall::new(
            "config",
            [
                "config",
                "--file",
                &file,
                "--null",
                "--get-regexp",
                r"^submodule\..*\.(path|url)$",
            ],
        )
        .run(ctx, None, self.options.timeout)
        .await?;
        // Exit code 1 means "no such keys": no submodules.
        if !output.success() && output.code != Some(1) {
            return Err(command::error_from("config", ctx, &output));
        }
        let mut by_name: HashMap<&str, (Option<&str>, Option<&str>)> = HashMap::new();
        for entry in output.stdout.split('\0') {
            let Some((key, value)) = entry.split_once('\n') else {
                continue;
            };
            let Some((name, var)) = key
                .strip_prefix("submodule.")
                .and_then(|k| k.rsplit_once('.'))
            else {
                continue;
            };
            let slot = by_name.entry(name).or_default();
            match var {
                "path" => slot.0 = Some(value),
                _ => slot.1 = Some(value),
            }
        }
        Ok(by_name
            .into_values()
            .filter_map(|(path, url)| Some((path?.to_string(), url?.to_string())))
            .collect())
    }

    /// `(path, commit)` of every gitlink in the tree of `sha`.
    async fn gitlinks(
        &self,
        ctx: &Context<'_>,
        sha: &str,
    ) -> Result<Vec<(String, String)>, GitError> {
        let output = GitCall::new("ls-tree", ["ls-tree", "-r", "-z", "--full-tree", sha])
            .run_checked(ctx, None, self.options.timeout)
            .await?;
        Ok(output
            .stdout
            .split('\0')
            .filter_map(|entry| {
                let (meta, path) = entry.split_once('\t')?;
                let mut fields = meta.split(' ');
                let (mode, _kind, commit) = (fields.next()?, fields.next()?, fields.next()?);
                (mode == GITLINK_MODE).then(|| (path.to_string(), commit.to_ascii_lowercase()))
            })
            .collect())
    }
}

/// `path` (from a tree) under `base`, refused if it could leave `base`.
fn safe_join(base: &Path, path: &str) -> Result<std::path::PathBuf, GitError> {
    let rel = Path::new(path);
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(base.join(rel))
    } else {
        Err(GitError::InvalidInput {
            what: format!("submodule path '{path}'"),
            reason: "it is not a plain relative path".to_string(),
        })
    }
}

/// A submodule URL from `.gitmodules`, with `./` and `../` resolved against the superproject's
/// URL as git does (`https://h/acme/app` + `../lib` = `https://h/acme/lib`).
fn submodule_url(base: &str, url: &str) -> Result<String, GitError> {
    if !url.starts_with("./") && !url.starts_with("../") {
        return Ok(url.to_string());
    }
    let mut base = base.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            base = parent_url(&base).ok_or_else(|| GitError::InvalidInput {
                what: format!("submodule URL '{url}'"),
                reason: format!("it goes above the superproject's URL {base}"),
            })?;
            rest = r;
        } else {
            break;
        }
    }
    Ok(if base.ends_with(':') {
        format!("{base}{rest}")
    } else {
        format!("{base}/{rest}")
    })
}

/// The URL one path segment up: `https://h/a/b` -> `https://h/a`, `git@h:a` -> `git@h:`.
fn parent_url(base: &str) -> Option<String> {
    let floor = base.find("://").map_or(0, |i| i + 3);
    let cut = floor + base[floor..].rfind(['/', ':'])?;
    Some(if base.as_bytes()[cut] == b':' {
        base[..=cut].to_string()
    } else {
        base[..cut].to_string()
    })
}

/// The directory name of a submodule's mirror: its repository name (letters, digits, `.`, `_`,
/// `-` only, so the path is safe in Compose's short bind syntax) and a hash of its URL.
fn module_dir_name(clean_url: &str) -> String {
    let name: String = repo_name(clean_url)
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let hash = hex::encode(sha2::Sha256::digest(clean_url.as_bytes()));
    format!("{}-{}", name.trim_start_matches('.'), &hash[..16])
}

/// `<path><suffix>` (unlike `with_extension`, keeps a name that contains a dot).
fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    name.into()
}

/// Makes the regular files under `dir` read-only (0444, or 0555 when executable); directories
/// and symlinks are left as they are.
fn seal(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            seal(&entry.path())?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            let sealed = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(sealed))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn relative_submodule_urls_resolve_like_git() {
        let cases = [
            ("https://h/acme/app", "../lib", "https://h/acme/lib"),
            (
                "https://h/acme/app.git/",
                "../lib.git",
                "https://h/acme/lib.git",
            ),
            ("https://h/acme/app", "./lib", "https://h/acme/app/lib"),
            ("https://h/acme/app", "../../o/lib", "https://h/o/lib"),
            ("git@h:acme/app.git", "../lib.git", "git@h:acme/lib.git"),
            ("git@h:app.git", "../lib.git", "git@h:lib.git"),
            ("file:///srv/git/app", "../lib", "file:///srv/git/lib"),
            ("/srv/git/app", "../lib", "/srv/git/lib"),
            (
                "https://h/acme/app",
                "https://other/x.git",
                "https://other/x.git",
            ),
        ];
        for (base, url, want) in cases {
            assert_eq!(submodule_url(base, url).unwrap(), want, "{base} + {url}");
        }
        assert!(submodule_url("https://h", "../../x").is_err());
    }

    #[test]
    fn module_dirs_are_bind_safe_and_distinct() {
        let a = module_dir_name("https://h:8443/acme/lib.git");
        let b = module_dir_name("https://other/acme/lib.git");
        assert!(a.starts_with("lib-") && b.starts_with("lib-"), "{a} {b}");
        assert_ne!(a, b);
        for name in [a, b, module_dir_name("git@h:o/we,ird:name.git")] {
            assert!(!name.contains([':', ',', '/']), "{name}");
        }
    }

    #[test]
    fn paths_from_trees_stay_inside() {
        let base = Path::new("/x");
        assert_eq!(
            safe_join(base, "vendor/lib").unwrap(),
            base.join("vendor/lib")
        );
        for bad in ["../up", "/abs", "a/../../b", "./a"] {
            assert!(safe_join(base, bad).is_err(), "{bad}");
        }
        assert_eq!(
            with_suffix(Path::new("/a/v1.2"), ".partial"),
            Path::new("/a/v1.2.partial")
        );
    }

    #[test]
    fn seal_makes_files_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), "").unwrap();
        std::fs::write(tmp.path().join("x"), "").unwrap();
        std::fs::set_permissions(tmp.path().join("x"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::os::unix::fs::symlink("d/f", tmp.path().join("link")).unwrap();
        seal(tmp.path()).unwrap();
        let mode = |p: &str| {
            std::fs::symlink_metadata(tmp.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("d/f"), 0o444);
        assert_eq!(mode("x"), 0o555);
        assert_eq!(mode("d") & 0o200, 0o200, "directories stay writable");
        assert!(
            std::fs::symlink_metadata(tmp.path().join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
