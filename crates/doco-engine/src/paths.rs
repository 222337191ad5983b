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

    /// The checkout of another reference of a repository, for deployments whose `reference` differs
    /// from their poll's: `<mount>/.doco-cd/refs/<host>/<owner>/<repo>/<reference, '/' as %2F>`.
    pub fn reference_checkout(&self, repo_name: &str, reference: &str) -> PathBuf {
        let encoded = reference.replace('%', "%25").replace('/', "%2F");
        self.internal_dir()
            .join("refs")
            .join(bind_safe(repo_name))
            .join(encoded)
    }

    /// Where the files of a repository's last good commit are exported when its checkout has moved
    /// on to a commit that did not deploy: `<mount>/.doco-cd/good/<key>`, with every character but
    /// letters, digits, `.`, `-` and `_` as `_` (no `:` or `,` that would break compose's bind syntax).
    pub fn good_tree_dir(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.internal_dir().join("good").join(safe)
    }

    /// The checkout directory of a repository, upstream's layout: `<mount>/<host>/<owner>/<repo>`,
    /// with a port's `:` as `_` (`127.0.0.1_8080/o/r`).
    pub fn checkout(&self, repo_name: &str) -> PathBuf {
        self.mount.join(bind_safe(repo_name))
    }
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
        assert_eq!(
            paths.checkout("github.com/o/r"),
            PathBuf::from("/data/github.com/o/r")
        );
        assert_eq!(
            paths.reference_checkout("github.com/o/r", "refs/heads/dev"),
            PathBuf::from("/data/.doco-cd/refs/github.com/o/r/refs%2Fheads%2Fdev")
        );
        assert_eq!(
            paths.checkout("/srv/git/repo"),
            PathBuf::from("/data/srv/git/repo")
        );
    }

    #[test]
    fn checkouts_have_no_character_that_breaks_a_short_bind_mount() {
        let paths = DataPaths::new("/data".into(), None);
        assert_eq!(
            paths.checkout("127.0.0.1:8080/o/r"),
            PathBuf::from("/data/127.0.0.1_8080/o/r")
        );
        assert_eq!(
            paths.reference_checkout("git.example.com:3000/o/a,b", "dev"),
            PathBuf::from("/data/.doco-cd/refs/git.example.com_3000/o/a_b/dev")
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
