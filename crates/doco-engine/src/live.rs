//! Live copies: the files a service excludes from recreation with its
//! `cd.doco.deployment.recreate.ignore` label (bind mounts, configs, secrets). A service that is not
//! recreated keeps the files it was created with, so these are mounted from a mutable copy of the
//! stack (`<source>/live/<context>/<stack>/root/`, upstream's place), which each deploy updates in place before
//! sending the optional signal. Files are overwritten, not replaced, so single-file bind mounts keep
//! seeing them (a replaced file is a new inode the container never sees). Files removed from the
//! repository are removed from the copy; files the service created there itself are kept.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use doco_docker::{LiveInput, LiveKind, MountOverride};
use serde_json::Value;

use crate::paths::{DataPaths, SourceDir};

/// Why a live copy could not be made.
#[derive(Debug, thiserror::Error)]
#[error("could not update the live copy {path}: {source}")]
pub struct LiveError {
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's reason.
    pub source: std::io::Error,
}

/// The live copies of one stack.
pub struct LiveStack {
    root: PathBuf,
    manifest: PathBuf,
}

impl LiveStack {
    /// The live copies of `stack`, deployed to `context` from the repository whose store is
    /// `store`: `<source>/live/<context>/<stack>/` (`default` for the daemon's own engine), as
    /// upstream lays them out; a stack whose copies were made before the store keeps them where they
    /// are (`.doco-cd/live/<stack>/`), since its running containers mount them from there.
    pub fn locate(paths: &DataPaths, store: &SourceDir, context: &str, stack: &str) -> LiveStack {
        let before_the_store = paths.internal_dir().join("live").join(stack);
        let dir = if before_the_store.is_dir() {
            before_the_store
        } else {
            let context = if context.is_empty() {
                "default"
            } else {
                context
            };
            store
                .root()
                .join(crate::paths::LIVE)
                .join(context)
                .join(stack)
        };
        LiveStack {
            root: dir.join("root"),
            manifest: dir.join("manifest.json"),
        }
    }

    /// Where `source` (a path under `tree`) lives in the copy; `None` outside the repository.
    pub fn path_of(&self, tree: &Path, source: &Path) -> Option<PathBuf> {
        source
            .strip_prefix(tree)
            .ok()
            .map(|rel| self.root.join(rel))
    }

    /// The override that mounts each service's live inputs (sources under `tree`) from the copy;
    /// `to_host` turns doco-cd's paths into the engine's.
    pub fn override_for<'a>(
        &self,
        services: impl Iterator<Item = (&'a String, &'a [LiveInput])>,
        tree: &Path,
        to_host: impl Fn(&Path) -> PathBuf,
    ) -> MountOverride {
        let mut out = MountOverride::default();
        for (service, inputs) in services {
            for input in inputs {
                let Some(live) = self.path_of(tree, &input.source) else {
                    continue;
                };
                let live = to_host(&live);
                match &input.kind {
                    LiveKind::Bind(volume) => {
                        let mut volume = volume.clone();
                        volume["source"] = Value::String(live.display().to_string());
                        out.volumes.entry(service.clone()).or_default().push(volume);
                    }
                    LiveKind::Config(name) => {
                        out.configs.insert(name.clone(), live);
                    }
                    LiveKind::Secret(name) => {
                        out.secrets.insert(name.clone(), live);
                    }
                }
            }
        }
        out
    }

    /// Brings the copy of every source (files or directories under `tree`) up to date in place;
    /// returns whether anything changed.
    pub fn sync(&self, tree: &Path, sources: &[PathBuf]) -> Result<bool, LiveError> {
        let previous = self.read_manifest();
        let mut copied = BTreeSet::new();
        let mut changed = false;
        for source in sources {
            let Ok(rel) = source.strip_prefix(tree) else {
                continue;
            };
            changed |= copy_in_place(source, &self.root.join(rel), rel, &mut copied)?;
        }
        for gone in previous.difference(&copied) {
            let path = self.root.join(gone);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|source| LiveError { path, source })?;
                changed = true;
            }
        }
        if copied != previous {
            self.write_manifest(&copied)?;
        }
        Ok(changed)
    }

    /// Removes the stack's live copies (its stack was destroyed).
    pub fn remove(&self) {
        if let Some(dir) = self.root.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Whether the copy exists at all (a heal makes it only when it is missing).
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    fn read_manifest(&self) -> BTreeSet<PathBuf> {
        std::fs::read(&self.manifest)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write_manifest(&self, files: &BTreeSet<PathBuf>) -> Result<(), LiveError> {
        let error = |source| LiveError {
            path: self.manifest.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(files).map_err(|e| error(e.into()))?;
        std::fs::write(&self.manifest, json).map_err(error)
    }
}

/// Copies `source` to `dest`, a file overwritten in place only when its content differs, a
/// directory entry by entry; records the copied files (relative to the copy's root) in `copied`.
fn copy_in_place(
    source: &Path,
    dest: &Path,
    rel: &Path,
    copied: &mut BTreeSet<PathBuf>,
) -> Result<bool, LiveError> {
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LiveError { path, source }
    };
    if source.is_dir() {
        std::fs::create_dir_all(dest).map_err(error(dest))?;
        let mut changed = false;
        let entries = std::fs::read_dir(source).map_err(error(source))?;
        for entry in entries {
            let entry = entry.map_err(error(source))?;
            let name = entry.file_name();
            changed |= copy_in_place(&entry.path(), &dest.join(&name), &rel.join(&name), copied)?;
        }
        return Ok(changed);
    }
    copied.insert(rel.to_path_buf());
    let content = std::fs::read(source).map_err(error(source))?;
    if std::fs::read(dest).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(error(parent))?;
    }
    // Truncate and write the same file: a container that bind-mounts it sees the new content.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dest)
        .map_err(error(dest))?;
    file.write_all(&content).map_err(error(dest))?;
    Ok(true)
}

/// A hash of the content of `sources` (what a live copy reflects), to tell when to signal.
pub fn content_hash(sources: &[PathBuf], tree: crate::fingerprint::Tree<'_>) -> String {
    crate::fingerprint::service_fingerprint(&Value::Null, sources, tree)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_updated_in_place_removed_ones_go_and_service_made_ones_stay() {
        let repo = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(data.path().to_path_buf(), None);
        let live = LiveStack::locate(&paths, &paths.source_dir("h/o/r"), "", "stack");
        std::fs::create_dir_all(repo.path().join("conf")).unwrap();
        std::fs::write(repo.path().join("conf/a.conf"), "a1").unwrap();
        std::fs::write(repo.path().join("conf/b.conf"), "b1").unwrap();
        std::fs::write(repo.path().join("single.conf"), "s1").unwrap();
        let sources = [repo.path().join("conf"), repo.path().join("single.conf")];
        assert!(live.sync(repo.path(), &sources).unwrap());
        let single = live
            .path_of(repo.path(), &repo.path().join("single.conf"))
            .unwrap();
        let inode = std::fs::metadata(&single).unwrap().ino();
        let conf = live
            .path_of(repo.path(), &repo.path().join("conf"))
            .unwrap();
        std::fs::write(conf.join("made-by-the-service"), "x").unwrap();
        assert!(
            !live.sync(repo.path(), &sources).unwrap(),
            "nothing changed"
        );

        std::fs::write(repo.path().join("single.conf"), "s2").unwrap();
        std::fs::remove_file(repo.path().join("conf/b.conf")).unwrap();
        assert!(live.sync(repo.path(), &sources).unwrap());
        assert_eq!(std::fs::read_to_string(&single).unwrap(), "s2");
        assert_eq!(
            std::fs::metadata(&single).unwrap().ino(),
            inode,
            "the same file"
        );
        assert!(!conf.join("b.conf").exists());
        assert_eq!(std::fs::read_to_string(conf.join("a.conf")).unwrap(), "a1");
        assert!(conf.join("made-by-the-service").exists());
    }

    #[test]
    fn the_override_mounts_live_inputs_from_the_copy() {
        let data = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(data.path().to_path_buf(), None);
        let live = LiveStack::locate(&paths, &paths.source_dir("h/o/r"), "", "stack");
        let tree = Path::new("/data/repo");
        let inputs = vec![
            LiveInput {
                source: tree.join("conf"),
                kind: LiveKind::Bind(serde_json::json!({
                    "type": "bind", "source": "/data/repo/conf", "target": "/conf", "read_only": true
                })),
            },
            LiveInput {
                source: tree.join("app.conf"),
                kind: LiveKind::Config("app".into()),
            },
            LiveInput {
                source: PathBuf::from("/etc/outside"),
                kind: LiveKind::Secret("outside".into()),
            },
        ];
        let name = "proxy".to_string();
        let out = live.override_for(
            std::iter::once((&name, inputs.as_slice())),
            tree,
            |p: &Path| p.to_path_buf(),
        );
        let root = data.path().join("h/o/r/live/default/stack/root");
        assert_eq!(
            out.volumes["proxy"][0]["source"],
            root.join("conf").display().to_string()
        );
        assert_eq!(out.volumes["proxy"][0]["read_only"], true);
        assert_eq!(out.configs["app"], root.join("app.conf"));
        assert!(out.secrets.is_empty(), "outside the repository: left alone");
    }

    #[test]
    fn copies_are_per_context_and_copies_made_before_the_store_stay_where_they_are() {
        let data = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(data.path().to_path_buf(), None);
        let store = paths.source_dir("h/o/r");
        let remote = LiveStack::locate(&paths, &store, "nas", "stack");
        assert_eq!(remote.root, data.path().join("h/o/r/live/nas/stack/root"));
        let old = data.path().join(".doco-cd/live/stack");
        std::fs::create_dir_all(old.join("root")).unwrap();
        let kept = LiveStack::locate(&paths, &store, "", "stack");
        assert_eq!(kept.root, old.join("root"));
        assert_eq!(kept.manifest, old.join("manifest.json"));
    }
}
