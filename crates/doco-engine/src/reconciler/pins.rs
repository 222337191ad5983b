//! Unchanged services stay on the export their containers were created from.
//!
//! Every commit is deployed from its own export, so the absolute source of a relative bind mount
//! changes with every commit, and compose would recreate every service that has one. A service the
//! plan keeps (same configuration, same file content) therefore mounts its files from the export its
//! labels name: upstream's `cd.doco.deployment.pinned_revisions`, else the export (or, before the
//! store, the checkout) its `cd.doco.deployment.working_dir` lies in. Its compose hash stays the
//! same, and a commit touching another service recreates nothing else. A heal brings a service back
//! from the same files, so "recreated as last deployed" is exact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use doco_docker::{MountOverride, RenderedProject, labels as key};
use serde_json::Value;

use super::Reconciler;
use crate::paths::{DataPaths, SourceDir};

/// Where one deploy's files come from: the repository's store, the export being deployed, and the
/// deployment's working directory in it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Files<'a> {
    pub store: &'a SourceDir,
    pub tree: &'a Path,
    pub working_dir: &'a Path,
}

impl Reconciler {
    /// The bind mounts that keep each service of `labels` on the files its labels name, where those
    /// differ from `files.tree` and still exist.
    pub(super) fn pinned_mounts(
        &self,
        files: Files<'_>,
        rendered: &RenderedProject,
        labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> MountOverride {
        let mut out = MountOverride::default();
        for (service, labels) in labels {
            let Some(spec) = rendered.services.get(service).map(|s| &s.spec) else {
                continue;
            };
            let Some(root) = pinned_root(&self.paths, files, labels) else {
                continue;
            };
            let volumes = rebased_binds(&self.paths, spec, files.tree, &root);
            if !volumes.is_empty() {
                out.volumes.insert(service.clone(), volumes);
            }
        }
        out
    }
}

/// The tree a service's labels say its files come from, when it is another existing one.
fn pinned_root(
    paths: &DataPaths,
    files: Files<'_>,
    labels: &BTreeMap<String, String>,
) -> Option<PathBuf> {
    let from_revision = labels
        .get(key::DEPLOYMENT_PINNED_REVISIONS)
        .filter(|r| crate::paths::is_commit(r))
        .map(|r| files.store.artifact(r));
    let root = match from_revision {
        Some(root) => root,
        None => {
            let labelled = paths.to_mount(Path::new(labels.get(key::DEPLOYMENT_WORKING_DIR)?));
            let relative = files.working_dir.strip_prefix(files.tree).ok()?;
            strip_suffix(&labelled, relative)?
        }
    };
    (root != files.tree && root.is_dir()).then_some(root)
}

/// `path` without its trailing `suffix` components.
fn strip_suffix(path: &Path, suffix: &Path) -> Option<PathBuf> {
    let mut root = path.to_path_buf();
    for _ in suffix.components() {
        root = root.parent()?.to_path_buf();
    }
    (root.join(suffix) == path).then_some(root)
}

/// The service's bind mounts whose source lies under `tree`, with the source moved to `root`
/// (compose's long syntax, every other field as rendered, so the merged service is exactly what a
/// render from `root` gives). Sources missing under `root` keep the new one.
fn rebased_binds(paths: &DataPaths, spec: &Value, tree: &Path, root: &Path) -> Vec<Value> {
    let host_tree = paths.to_host(tree);
    let host_root = paths.to_host(root);
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("bind"))
        .filter_map(|volume| {
            let source = Path::new(volume.get("source")?.as_str()?);
            let relative = source.strip_prefix(&host_tree).ok()?;
            std::fs::symlink_metadata(root.join(relative)).ok()?;
            let mut moved = volume.clone();
            moved["source"] = Value::String(host_root.join(relative).display().to_string());
            Some(moved)
        })
        .collect()
}

/// `live` (the live copies' mounts) with the pins of `pins` for every other mount target.
pub(super) fn with_pins(live: &MountOverride, pins: MountOverride) -> MountOverride {
    let mut out = live.clone();
    for (service, volumes) in pins.volumes {
        let entry = out.volumes.entry(service).or_default();
        let taken: Vec<Value> = entry
            .iter()
            .filter_map(|v| v.get("target").cloned())
            .collect();
        entry.extend(
            volumes
                .into_iter()
                .filter(|v| v.get("target").is_none_or(|t| !taken.contains(t))),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const OLD: &str = "1111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn finds_the_export_a_service_was_created_from() {
        let data = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(data.path().to_path_buf(), Some("/host/data".into()));
        let store = paths.source_dir("h/o/r");
        std::fs::create_dir_all(store.artifact(OLD).join("app")).unwrap();
        std::fs::create_dir_all(store.artifact(NEW).join("app")).unwrap();
        let tree = store.artifact(NEW);
        let working_dir = tree.join("app");
        let files = Files {
            store: &store,
            tree: &tree,
            working_dir: &working_dir,
        };
        let by_dir = BTreeMap::from([(
            key::DEPLOYMENT_WORKING_DIR.to_string(),
            paths
                .to_host(&store.artifact(OLD).join("app"))
                .display()
                .to_string(),
        )]);
        assert_eq!(
            pinned_root(&paths, files, &by_dir),
            Some(store.artifact(OLD))
        );
        let by_revision = BTreeMap::from([(
            key::DEPLOYMENT_PINNED_REVISIONS.to_string(),
            OLD.to_string(),
        )]);
        assert_eq!(
            pinned_root(&paths, files, &by_revision),
            Some(store.artifact(OLD))
        );
        let current = BTreeMap::from([(
            key::DEPLOYMENT_WORKING_DIR.to_string(),
            paths.to_host(&working_dir).display().to_string(),
        )]);
        assert_eq!(pinned_root(&paths, files, &current), None);
        // The layout before the store: the checkout was the source directory itself.
        let legacy = BTreeMap::from([(
            key::DEPLOYMENT_WORKING_DIR.to_string(),
            paths
                .to_host(&store.root().join("app"))
                .display()
                .to_string(),
        )]);
        std::fs::create_dir_all(store.root().join("app")).unwrap();
        assert_eq!(
            pinned_root(&paths, files, &legacy),
            Some(store.root().to_path_buf())
        );
        let gone = BTreeMap::from([(
            key::DEPLOYMENT_PINNED_REVISIONS.to_string(),
            "3333333333333333333333333333333333333333".to_string(),
        )]);
        assert_eq!(pinned_root(&paths, files, &gone), None);
    }

    #[test]
    fn moves_only_binds_from_the_tree_that_exist_in_the_pinned_one() {
        let data = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(data.path().to_path_buf(), None);
        let store = paths.source_dir("h/o/r");
        let (old, new) = (store.artifact(OLD), store.artifact(NEW));
        std::fs::create_dir_all(old.join("conf")).unwrap();
        let spec = json!({"volumes": [
            {"type": "bind", "source": new.join("conf"), "target": "/conf", "read_only": true, "bind": {}},
            {"type": "bind", "source": new.join("only-new"), "target": "/n"},
            {"type": "bind", "source": "/etc/hosts", "target": "/h"},
            {"type": "volume", "source": "data", "target": "/data"},
        ]});
        let moved = rebased_binds(&paths, &spec, &new, &old);
        assert_eq!(
            moved,
            vec![
                json!({"type": "bind", "source": old.join("conf"), "target": "/conf", "read_only": true, "bind": {}})
            ]
        );
    }

    #[test]
    fn live_copies_win_over_pins_for_their_target() {
        let live = MountOverride {
            volumes: BTreeMap::from([(
                "web".to_string(),
                vec![json!({"type": "bind", "source": "/live/conf", "target": "/conf"})],
            )]),
            ..MountOverride::default()
        };
        let pins = MountOverride {
            volumes: BTreeMap::from([(
                "web".to_string(),
                vec![
                    json!({"type": "bind", "source": "/old/conf", "target": "/conf"}),
                    json!({"type": "bind", "source": "/old/www", "target": "/www"}),
                ],
            )]),
            ..MountOverride::default()
        };
        let merged = with_pins(&live, pins);
        let targets: Vec<&str> = merged.volumes["web"]
            .iter()
            .map(|v| v["source"].as_str().unwrap())
            .collect();
        assert_eq!(targets, vec!["/live/conf", "/old/www"]);
    }
}
