//! Fingerprints: one hash per service that changes exactly when the service must be recreated.
//!
//! A service's fingerprint covers compose's rendering of it (image, command, environment, labels the
//! user wrote, ...) and the content of the files it reads from the repository: bind-mount sources,
//! env files, configs, secrets and build contexts. That is upstream's rule "a changed file recreates
//! the services that use it", computed from content instead of from a git diff, so it needs no extra
//! process and works the same online and offline. Files outside the checkout are not hashed: they are
//! not part of the desired state in Git.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The files a fingerprint reads, and the name it gives them. Each commit is deployed from its own
/// export (`artifacts/<commit>/`), so the fingerprint names the files by the repository's source
/// directory instead: a service whose configuration and files are the same in two commits has the
/// same fingerprint, and fingerprints recorded by the layout before the store (a checkout at the
/// source directory) stay valid.
#[derive(Debug, Clone, Copy)]
pub struct Tree<'a> {
    /// Where the files are read (doco-cd's path of the export).
    pub dir: &'a Path,
    /// The name the fingerprint gives `dir` (the source directory).
    pub name: &'a Path,
    /// `dir` as the engine names it (the rendered spec holds the engine's paths).
    pub host_dir: &'a Path,
    /// `name` as the engine names it.
    pub host_name: &'a Path,
}

impl<'a> Tree<'a> {
    /// A tree named by itself (no export): paths are hashed as they are.
    pub fn itself(dir: &'a Path) -> Tree<'a> {
        Tree {
            dir,
            name: dir,
            host_dir: dir,
            host_name: dir,
        }
    }

    fn named(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(self.dir) {
            Ok(rest) if !rest.as_os_str().is_empty() => self.name.join(rest),
            Ok(_) => self.name.to_path_buf(),
            Err(_) => path.to_path_buf(),
        }
    }
}

/// The fingerprint of one service: its rendered spec plus the content of its local inputs that live
/// under `tree.dir` (both given as the paths doco-cd can read).
pub fn service_fingerprint(spec: &serde_json::Value, inputs: &[PathBuf], tree: Tree<'_>) -> String {
    let mut hasher = Sha256::new();
    // serde_json's maps are sorted, so this serialization is canonical.
    let mut text = spec.to_string();
    if tree.host_dir != tree.host_name {
        let (from, to) = (
            tree.host_dir.to_string_lossy(),
            tree.host_name.to_string_lossy(),
        );
        text = text.replace(from.as_ref(), to.as_ref());
    }
    hasher.update(text.as_bytes());
    let mut inputs: Vec<&PathBuf> = inputs.iter().filter(|p| p.starts_with(tree.dir)).collect();
    inputs.sort();
    inputs.dedup();
    for input in inputs {
        hasher.update(b"\0input\0");
        hasher.update(tree.named(input).as_os_str().as_encoded_bytes());
        hash_path(&mut hasher, input, tree);
    }
    hex::encode(hasher.finalize())
}

/// The project hash (upstream's `cd.doco.deployment.compose.sha`): all service fingerprints together.
pub fn project_hash(fingerprints: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (service, fingerprint) in fingerprints {
        hasher.update(service.as_bytes());
        hasher.update(b"\0");
        hasher.update(fingerprint.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

fn hash_path(hasher: &mut Sha256, path: &Path, tree: Tree<'_>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        hasher.update(b"\0missing");
        return;
    };
    if meta.file_type().is_symlink() {
        hasher.update(b"\0symlink\0");
        if let Ok(target) = std::fs::read_link(path) {
            hasher.update(target.as_os_str().as_encoded_bytes());
        }
    } else if meta.is_dir() {
        hasher.update(b"\0dir");
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for entry in entries {
            if entry.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            hasher.update(b"\0entry\0");
            hasher.update(tree.named(&entry).as_os_str().as_encoded_bytes());
            hash_path(hasher, &entry, tree);
        }
    } else if meta.is_file() {
        hasher.update(b"\0file\0");
        match std::fs::read(path) {
            Ok(bytes) => hasher.update(&bytes),
            Err(_) => hasher.update(b"\0unreadable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_with_the_spec_and_with_input_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("conf/sub")).unwrap();
        std::fs::write(root.join("conf/sub/a.conf"), b"one").unwrap();
        std::fs::write(root.join("unrelated.txt"), b"x").unwrap();
        let spec = json!({"image": "busybox", "command": ["sleep", "1"]});
        let inputs = vec![root.join("conf")];

        let base = service_fingerprint(&spec, &inputs, Tree::itself(root));
        assert_eq!(
            base,
            service_fingerprint(&spec, &inputs, Tree::itself(root)),
            "stable"
        );

        std::fs::write(root.join("unrelated.txt"), b"y").unwrap();
        assert_eq!(
            base,
            service_fingerprint(&spec, &inputs, Tree::itself(root)),
            "unrelated file"
        );

        std::fs::write(root.join("conf/sub/a.conf"), b"two").unwrap();
        let changed_file = service_fingerprint(&spec, &inputs, Tree::itself(root));
        assert_ne!(base, changed_file, "input content");

        let other_spec = json!({"image": "busybox", "command": ["sleep", "2"]});
        assert_ne!(
            changed_file,
            service_fingerprint(&other_spec, &inputs, Tree::itself(root)),
            "spec"
        );
    }

    #[test]
    fn ignores_inputs_outside_the_repository() {
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host.conf"), b"1").unwrap();
        let spec = json!({"image": "busybox"});
        let inputs = vec![outside.path().join("host.conf")];
        let before = service_fingerprint(&spec, &inputs, Tree::itself(repo.path()));
        std::fs::write(outside.path().join("host.conf"), b"2").unwrap();
        assert_eq!(
            before,
            service_fingerprint(&spec, &inputs, Tree::itself(repo.path()))
        );
    }

    #[test]
    fn the_same_files_in_two_exports_have_one_fingerprint() {
        let source = tempfile::tempdir().unwrap();
        let export = |commit: &str, content: &str| {
            let dir = source.path().join("artifacts").join(commit);
            std::fs::create_dir_all(dir.join("conf")).unwrap();
            std::fs::write(dir.join("conf/a.conf"), content).unwrap();
            dir
        };
        let (one, two, three) = (export("1", "x"), export("2", "x"), export("3", "y"));
        let fingerprint = |dir: &Path| {
            let spec = json!({"volumes": [{"source": dir.join("conf"), "target": "/c"}]});
            let tree = Tree {
                dir,
                name: source.path(),
                host_dir: dir,
                host_name: source.path(),
            };
            service_fingerprint(&spec, &[dir.join("conf")], tree)
        };
        assert_eq!(fingerprint(&one), fingerprint(&two));
        assert_ne!(fingerprint(&one), fingerprint(&three));
        // The layout before the store had the checkout at the source directory itself.
        std::fs::create_dir_all(source.path().join("conf")).unwrap();
        std::fs::write(source.path().join("conf/a.conf"), "x").unwrap();
        let legacy = source.path();
        let spec = json!({"volumes": [{"source": legacy.join("conf"), "target": "/c"}]});
        let before = service_fingerprint(&spec, &[legacy.join("conf")], Tree::itself(legacy));
        assert_eq!(before, fingerprint(&one));
    }

    #[test]
    fn project_hash_depends_on_every_service() {
        let a = BTreeMap::from([
            ("web".to_string(), "1".to_string()),
            ("db".to_string(), "2".to_string()),
        ]);
        let b = BTreeMap::from([
            ("web".to_string(), "1".to_string()),
            ("db".to_string(), "3".to_string()),
        ]);
        assert_ne!(project_hash(&a), project_hash(&b));
        assert_eq!(project_hash(&a), project_hash(&a.clone()));
    }
}
