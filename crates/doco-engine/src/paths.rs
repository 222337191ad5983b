//! Paths on the data volume as doco-cd sees them and as the Docker daemon sees them.
//!
//! Compose resolves relative bind mounts on the daemon's filesystem, so the project directory handed to
//! compose must be the daemon-side (host) path of the checkout. When doco-cd runs in a container, the
//! data volume is mounted at `DATA_MOUNT_PATH` but lives at `DATA_HOST_PATH` on the host; like upstream,
//! doco-cd then creates a symlink from the host path to the mount path inside its own filesystem so the
//! compose CLI can read the files through host paths. Outside a container both paths are the same.

use std::path::{Path, PathBuf};

/// The two names of the data volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPaths {
    mount: PathBuf,
    host: PathBuf,
}

impl DataPaths {
    /// `mount` is where doco-cd reads the volume; `host` where the daemon finds it (defaults to `mount`).
    pub fn new(mount: PathBuf, host: Option<PathBuf>) -> Self {
        let host = host.unwrap_or_else(|| mount.clone());
        DataPaths { mount, host }
    }

    /// Where doco-cd reads the volume.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The daemon-side name of a path under the mount.
    pub fn to_host(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.mount) {
            Ok(rest) => self.host.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The mount-side name of a daemon-side path under the volume.
    pub fn to_mount(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.host) {
            Ok(rest) => self.mount.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Makes host paths readable from inside doco-cd's filesystem (a symlink host → mount) when they
    /// differ and the host path does not exist here. Returns what it did, for the start-up log.
    pub fn link_host_path(&self) -> std::io::Result<Option<String>> {
        if self.host == self.mount || self.host.exists() {
            return Ok(None);
        }
        if let Some(parent) = self.host.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(&self.mount, &self.host)?;
        Ok(Some(format!(
            "linked {} to {} so compose can read files by their host paths",
            self.host.display(),
            self.mount.display()
        )))
    }

    /// The directory of doco-cd's own files on the volume (state, label overrides).
    pub fn internal_dir(&self) -> PathBuf {
        // Host names cannot start with '.', so this never collides with a checkout.
        self.mount.join(".doco-cd")
    }

    /// The source directory of a repository, upstream's layout: `<mount>/<host>/<owner>/<repo>`,
    /// with a port's `:` as `_` (`127.0.0.1_8080/o/r`). It holds the bare `mirror/`, the
    /// `artifacts/<commit>/` exports and the `submodules/` mirrors ([`SourceDir`]).
    pub fn source_dir(&self, repo_name: &str) -> SourceDir {
        SourceDir {
            root: self.mount.join(bind_safe(repo_name)),
        }
    }
}

/// One repository's store on the data volume: a bare mirror that is fetched and never checked out,
/// and one read-only export per deployed commit, so a deployment's files never change under its
/// containers and its last good files stay exactly as they were deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDir {
    root: PathBuf,
}

impl SourceDir {
    /// The store of the repository whose source directory is `root`.
    pub fn at(root: PathBuf) -> SourceDir {
        SourceDir { root }
    }

    /// The source directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bare mirror.
    pub fn mirror(&self) -> PathBuf {
        self.root.join(MIRROR)
    }

    /// The directory of the exports.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join(ARTIFACTS)
    }

    /// The export of `commit` (40 hex digits).
    pub fn artifact(&self, commit: &str) -> PathBuf {
        self.artifacts().join(commit)
    }

    /// The commit of the export `path` lies in, if it lies in one of this store's exports.
    pub fn revision_of(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(self.artifacts()).ok()?;
        let first = rest.components().next()?.as_os_str().to_str()?;
        is_commit(first).then(|| first.to_string())
    }

    /// Whether the source directory is still a working-tree checkout of the layout before the
    /// store (this project's first versions and upstream ≤ v0.119).
    pub fn is_legacy_checkout(&self) -> bool {
        self.root.join(".git").exists()
    }
}

/// The names the store uses inside a source directory.
pub const MIRROR: &str = "mirror";
/// See [`MIRROR`].
pub const ARTIFACTS: &str = "artifacts";
/// See [`MIRROR`].
pub const SUBMODULES: &str = "submodules";
/// See [`MIRROR`].
pub const LIVE: &str = "live";

/// Whether `name` is a full commit id (40 lower-case hex digits), the name of an export.
pub fn is_commit(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `repo_name` as a relative directory that Compose's short bind syntax (`SOURCE:TARGET[:MODE]`) can
/// carry: a `:` (a port in the URL) or `,` in the source of a relative bind mount would make the engine
/// refuse the stack ("invalid volume specification").
fn bind_safe(repo_name: &str) -> String {
    repo_name.trim_start_matches('/').replace([':', ','], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_between_mount_and_host() {
        let paths = DataPaths::new("/data".into(), Some("/srv/doco".into()));
        assert_eq!(
            paths.to_host(Path::new("/data/github.com/o/r/compose.yml")),
            PathBuf::from("/srv/doco/github.com/o/r/compose.yml")
        );
        assert_eq!(
            paths.to_mount(Path::new("/srv/doco/github.com/o/r")),
            PathBuf::from("/data/github.com/o/r")
        );
        assert_eq!(paths.to_host(Path::new("/etc/x")), PathBuf::from("/etc/x"));
        let source = paths.source_dir("github.com/o/r");
        assert_eq!(source.root(), Path::new("/data/github.com/o/r"));
        assert_eq!(
            source.mirror(),
            PathBuf::from("/data/github.com/o/r/mirror")
        );
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            source.artifact(commit),
            PathBuf::from(format!("/data/github.com/o/r/artifacts/{commit}"))
        );
        assert_eq!(
            source.revision_of(&source.artifact(commit).join("conf/a.conf")),
            Some(commit.to_string())
        );
        assert_eq!(source.revision_of(&source.mirror()), None);
        assert_eq!(
            paths.source_dir("/srv/git/repo").root(),
            Path::new("/data/srv/git/repo")
        );
    }

    #[test]
    fn source_dirs_have_no_character_that_breaks_a_short_bind_mount() {
        let paths = DataPaths::new("/data".into(), None);
        assert_eq!(
            paths.source_dir("127.0.0.1:8080/o/r").root(),
            Path::new("/data/127.0.0.1_8080/o/r")
        );
        assert_eq!(
            paths.source_dir("git.example.com:3000/o/a,b").root(),
            Path::new("/data/git.example.com_3000/o/a_b")
        );
    }

    #[test]
    fn links_the_host_path_to_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("data");
        std::fs::create_dir(&mount).unwrap();
        std::fs::write(mount.join("f"), b"x").unwrap();
        let host = dir.path().join("host/volume");
        let paths = DataPaths::new(mount.clone(), Some(host.clone()));
        assert!(paths.link_host_path().unwrap().is_some());
        assert_eq!(std::fs::read(host.join("f")).unwrap(), b"x");
        assert_eq!(paths.link_host_path().unwrap(), None);
        let same = DataPaths::new(mount.clone(), None);
        assert_eq!(same.link_host_path().unwrap(), None);
    }
}
