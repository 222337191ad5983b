//! Real git repositories in temp dirs for the git tier: a bare "remote" and a work tree that pushes to it.
//!
//! Tests need a remote whose history they control (commit, push, tag) and that can be served over
//! `file://` or, through [`crate::http::StaticHttpServer`], over dumb HTTP. Every helper runs the `git`
//! binary synchronously with a clean environment (no global or system config, a fixed author), so the
//! results do not depend on the machine, and panics with the command and its stderr on failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Runs `git` with a machine-independent environment in `dir`, returning trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "doco test")
        .env("GIT_AUTHOR_EMAIL", "test@doco.invalid")
        .env("GIT_COMMITTER_NAME", "doco test")
        .env("GIT_COMMITTER_EMAIL", "test@doco.invalid")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?} in {}: {e}", dir.display()));
    if !output.status.success() {
        panic!(
            "git {args:?} in {} failed ({}):\n{}{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A bare repository (`git init --bare -b main`) in a temp dir, removed on drop. Its `post-update`
/// hook runs `git update-server-info`, so pushes keep it servable over dumb HTTP.
#[derive(Debug)]
pub struct BareRepo {
    dir: TempDir,
}

impl BareRepo {
    /// Creates an empty bare repository whose HEAD is `main`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("doco-bare-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "."]);
        let hook = dir.path().join("hooks/post-update");
        std::fs::write(&hook, "#!/bin/sh\nexec git update-server-info\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", hook.display()));
        set_executable(&hook);
        let repo = BareRepo { dir };
        repo.update_server_info();
        repo
    }

    /// An empty bare repository (HEAD `main`) in a new directory `<parent>/doco-bare-XXXX`,
    /// removed on drop; for servers that serve a whole tree of repositories (sibling repositories
    /// for relative submodule URLs, `owner/repo` paths).
    pub fn new_in(parent: &Path) -> Self {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        let dir = tempfile::Builder::new()
            .prefix("doco-bare-")
            .tempdir_in(parent)
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "."]);
        let repo = BareRepo { dir };
        repo.update_server_info();
        repo
    }

    /// The repository's directory (an absolute path).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file:///abs/path`.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Refreshes `info/refs` and `objects/info/packs` for dumb HTTP clients.
    pub fn update_server_info(&self) {
        git(self.path(), &["update-server-info"]);
    }
}

impl Default for BareRepo {
    fn default() -> Self {
        Self::new()
    }
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// A non-bare clone of a [`BareRepo`], on branch `main`, pushing back to it. Removed on drop.
#[derive(Debug)]
pub struct WorkTree {
    dir: TempDir,
    bare: PathBuf,
}

impl WorkTree {
    /// Clones `bare` (which may be empty) and puts the work tree on `main`.
    pub fn clone_from(bare: &BareRepo) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("doco-worktree-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let bare_path = bare.path().to_string_lossy().into_owned();
        git(dir.path(), &["clone", "-q", "--", &bare_path, "."]);
        // An empty clone may start on another unborn branch name; make it `main` either way.
        git(dir.path(), &["symbolic-ref", "HEAD", "refs/heads/main"]);
        WorkTree {
            dir,
            bare: bare.path().to_path_buf(),
        }
    }

    /// The work tree's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel_path`, creating parent directories.
    pub fn write(&self, rel_path: &str, contents: &str) {
        crate::write_file(self.path(), rel_path, contents);
    }

    /// Removes the file `rel_path`.
    pub fn remove(&self, rel_path: &str) {
        let path = self.path().join(rel_path);
        std::fs::remove_file(&path)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }

    /// Stages everything and commits (empty commits allowed); returns the new commit's SHA.
    pub fn commit(&self, msg: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    /// Pushes `HEAD` to `main` on the bare repository, then refreshes its dumb-HTTP info.
    pub fn push(&self) {
        self.push_branch("main");
    }

    /// Pushes `HEAD` to the branch `name` on the bare repository (force), then refreshes its dumb-HTTP info.
    pub fn push_branch(&self, name: &str) {
        let refspec = format!("+HEAD:refs/heads/{name}");
        git(self.path(), &["push", "-q", "origin", &refspec]);
        self.update_server_info();
    }

    /// [`WorkTree::commit`] then [`WorkTree::push`]; returns the commit's SHA.
    pub fn commit_and_push(&self, msg: &str) -> String {
        let sha = self.commit(msg);
        self.push();
        sha
    }

    /// Creates an annotated tag `name` at HEAD and pushes it; returns the tag object's SHA (the
    /// commit is [`WorkTree::head`]).
    pub fn create_tag(&self, name: &str) -> String {
        git(self.path(), &["tag", "-a", "-m", name, "--", name]);
        let refspec = format!("refs/tags/{name}:refs/tags/{name}");
        git(self.path(), &["push", "-q", "origin", &refspec]);
        self.update_server_info();
        git(self.path(), &["rev-parse", &format!("refs/tags/{name}")])
    }

    /// The SHA of HEAD.
    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }

    fn update_server_info(&self) {
        git(&self.bare, &["update-server-info"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_push_and_tag_reach_the_bare_repository() {
        let bare = BareRepo::new();
        let work = WorkTree::clone_from(&bare);
        work.write("dir/a.txt", "a");
        let first = work.commit_and_push("first");
        assert_eq!(first.len(), 40);
        assert_eq!(git(bare.path(), &["rev-parse", "refs/heads/main"]), first);
        let tag = work.create_tag("v1");
        assert_ne!(tag, first);
        assert_eq!(git(bare.path(), &["rev-parse", "v1^{commit}"]), first);
        let refs = std::fs::read_to_string(bare.path().join("info/refs")).unwrap_or_default();
        assert!(refs.contains("refs/tags/v1^{}"), "{refs}");
        work.remove("dir/a.txt");
        let second = work.commit_and_push("second");
        assert_ne!(first, second);
        let refs = std::fs::read_to_string(bare.path().join("info/refs")).unwrap_or_default();
        assert!(refs.contains(&second), "{refs}");
        assert!(bare.file_url().starts_with("file:///"));
    }
}
