//! The artifact store's life cycle beside the reconciler: exports made on demand, leases that keep
//! an export in use by a running deploy from being collected, the garbage collector
//! (`ARTIFACT_GC_*`), and the migration of a source directory that is still a working-tree checkout
//! of the layout before the store.
//!
//! An export is kept while anything may still need its files: a container (running or stopped) or a
//! record of the state file that names it (its `cd.doco.deployment.target.sha`, `pinned_revisions`
//! or working directory), a deploy in progress, or the retention rules (the newest few, and those
//! younger than the TTL). The last good state therefore survives every GC pass, offline included.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use doco_docker::labels as key;
use tracing::{info, warn};

use crate::adapters::{Containers, Source};
use crate::paths::{self, DataPaths, SourceDir};
use crate::state::State;

/// compose's label with the project directory a container was created from.
const COMPOSE_WORKING_DIR: &str = "com.docker.compose.project.working_dir";

/// The file of a migrated source directory listing the entries of the old checkout that stay until
/// no container uses them.
const LEGACY_LIST: &str = ".doco-cd-legacy.json";

/// Why the store could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The old checkout has a top-level entry with a name the store needs.
    #[error(
        "cannot migrate {dir} to the artifact store: the repository has a top-level `{entry}`, a name the store uses; move that entry in the repository, or remove {dir} to let doco-cd clone it anew"
    )]
    NameTaken {
        /// The source directory.
        dir: PathBuf,
        /// The entry.
        entry: String,
    },
    /// git failed.
    #[error("{0}")]
    Git(#[from] doco_git::GitError),
}

/// The exports deploys are using right now, which the collector leaves alone.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// A revision in use until dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Leases,
    revision: String,
}

impl Leases {
    /// Marks `revision` in use until the lease is dropped.
    pub fn take(&self, revision: &str) -> Lease {
        *lock(&self.held).entry(revision.to_string()).or_default() += 1;
        Lease {
            leases: self.clone(),
            revision: revision.to_string(),
        }
    }

    /// The revisions in use now.
    pub fn revisions(&self) -> BTreeSet<String> {
        lock(&self.held).keys().cloned().collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = lock(&self.leases.held);
        if let Some(count) = held.get_mut(&self.revision) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.revision);
            }
        }
    }
}

/// The export of `commit` in `store`, made from the mirror when it is missing. The caller holds the
/// source's lock, so two exports of one commit never race.
pub async fn artifact(
    source: &dyn Source,
    url: &str,
    store: &SourceDir,
    commit: &str,
) -> Result<PathBuf, doco_git::GitError> {
    let dir = store.artifact(commit);
    if dir.is_dir() {
        return Ok(dir);
    }
    if let Err(e) = std::fs::create_dir_all(store.artifacts()) {
        return Err(doco_git::GitError::Failed {
            command: "export".into(),
            detail: format!("cannot create {}: {e}", store.artifacts().display()),
        });
    }
    info!(commit = %crate::plan::short(commit), dir = %dir.display(), "exporting the commit's files");
    source.export(url, &store.mirror(), commit, &dir).await?;
    Ok(dir)
}

/// Migrates `store` when it is still a working-tree checkout of the layout before the store: its
/// objects become the bare mirror (no network), its `.git` goes, and its files stay where running
/// containers mount them until [`sweep`] finds none does. Nothing is recreated.
pub async fn migrate(
    source: &dyn Source,
    url: &str,
    reference: &str,
    store: &SourceDir,
) -> Result<(), StoreError> {
    if !store.is_legacy_checkout() {
        return Ok(());
    }
    let root = store.root();
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io("cannot read", root))? {
        let name = entry
            .map_err(io("cannot read", root))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if [
            paths::MIRROR,
            paths::ARTIFACTS,
            paths::SUBMODULES,
            paths::LIVE,
        ]
        .contains(&name.as_str())
        {
            return Err(StoreError::NameTaken {
                dir: root.to_path_buf(),
                entry: name,
            });
        }
        if name != ".git" {
            entries.push(name);
        }
    }
    entries.sort();
    source.adopt(url, reference, root, &store.mirror()).await?;
    let list = root.join(LEGACY_LIST);
    let text = serde_json::to_string_pretty(&entries).unwrap_or_default();
    std::fs::write(&list, text).map_err(io("cannot write", &list))?;
    let git = root.join(".git");
    remove_tree(&git).map_err(io("cannot remove", &git))?;
    info!(dir = %root.display(), files = entries.len(),
        "migrated the checkout to the artifact store; its files stay while containers use them");
    Ok(())
}

/// The garbage collector's settings (`ARTIFACT_GC_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    /// How many unreferenced exports per repository are kept, newest first.
    pub retention_records: usize,
    /// Unreferenced exports younger than this are kept.
    pub retention_ttl: Duration,
}

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// The exports removed.
    pub artifacts: Vec<PathBuf>,
    /// The old checkouts' files removed once no container used them.
    pub legacy: Vec<PathBuf>,
}

/// Which of `exports` (revision, creation time) go: those not in `in_use`, beyond the
/// `retention_records` newest and older than `retention_ttl`.
pub fn removable(
    mut exports: Vec<(String, SystemTime)>,
    in_use: &BTreeSet<String>,
    settings: GcSettings,
    now: SystemTime,
) -> Vec<String> {
    exports.retain(|(revision, _)| !in_use.contains(revision));
    exports.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    exports
        .into_iter()
        .skip(settings.retention_records)
        .filter(|(_, created)| {
            now.duration_since(*created)
                .is_ok_and(|age| age >= settings.retention_ttl)
        })
        .map(|(revision, _)| revision)
        .collect()
}

/// What the engine's containers and the state file use: the revisions their labels name, and the
/// directories they were created from (for the old checkouts' files).
#[derive(Debug, Default)]
pub struct InUse {
    /// Revisions named by a label or a record.
    pub revisions: BTreeSet<String>,
    /// Working directories of containers and records, as doco-cd's paths.
    pub dirs: Vec<PathBuf>,
}

impl InUse {
    /// Collects what `containers` (of every engine doco-cd deploys to), `state` and `leases` use.
    pub fn collect(
        containers: &[&Containers],
        state: &State,
        leases: &Leases,
        paths: &DataPaths,
    ) -> InUse {
        let mut in_use = InUse {
            revisions: leases.revisions(),
            dirs: Vec::new(),
        };
        for by_project in containers {
            for container in by_project.values().flatten() {
                in_use.add_labels(&container.labels, paths);
            }
        }
        for repository in state.repositories.values() {
            for record in repository.deployments.values() {
                in_use.revisions.insert(record.commit.clone());
                // A `repository_url` deployment is described by the polled repository's commit.
                if let Some(origin) = &record.origin {
                    in_use.revisions.insert(origin.config_commit.clone());
                }
                for service in record.services.values() {
                    in_use.add_labels(&service.labels, paths);
                }
            }
        }
        in_use
    }

    fn add_labels(&mut self, labels: &BTreeMap<String, String>, paths: &DataPaths) {
        if let Some(sha) = labels.get(key::DEPLOYMENT_TARGET_SHA) {
            self.revisions.insert(sha.clone());
        }
        if let Some(pinned) = labels.get(key::DEPLOYMENT_PINNED_REVISIONS) {
            self.revisions
                .extend(pinned.split(',').map(str::trim).map(str::to_string));
        }
        for label in [key::DEPLOYMENT_WORKING_DIR, COMPOSE_WORKING_DIR] {
            if let Some(dir) = labels.get(label) {
                let dir = paths.to_mount(Path::new(dir));
                self.revisions.extend(revision_in(&dir));
                self.dirs.push(dir);
            }
        }
    }
}

/// The revision of the export a path lies in (`…/artifacts/<commit>/…`), wherever its store is.
pub fn revision_in(path: &Path) -> Option<String> {
    let parts: Vec<&str> = path.iter().filter_map(|c| c.to_str()).collect();
    parts
        .windows(2)
        .find(|w| w[0] == paths::ARTIFACTS && paths::is_commit(w[1]))
        .map(|w| w[1].to_string())
}

/// One pass of the collector over one source directory: its unused exports, and the files an old
/// checkout left once nothing uses them.
pub fn sweep_source(
    store: &SourceDir,
    in_use: &InUse,
    settings: GcSettings,
    now: SystemTime,
    report: &mut SweepReport,
) {
    sweep_artifacts(store, in_use, settings, now, report);
    sweep_legacy(store, in_use, report);
}

fn sweep_artifacts(
    store: &SourceDir,
    in_use: &InUse,
    settings: GcSettings,
    now: SystemTime,
    report: &mut SweepReport,
) {
    let Ok(entries) = std::fs::read_dir(store.artifacts()) else {
        return;
    };
    let exports: Vec<(String, SystemTime)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let meta = entry.metadata().ok()?;
            (meta.is_dir() && paths::is_commit(&name))
                .then(|| (name, meta.modified().unwrap_or(now)))
        })
        .collect();
    for revision in removable(exports, &in_use.revisions, settings, now) {
        let dir = store.artifact(&revision);
        match remove_tree(&dir) {
            Ok(()) => {
                let _ = std::fs::remove_file(
                    store.artifacts().join(format!("{revision}.decrypted.json")),
                );
                info!(dir = %dir.display(), "artifact GC: removed an export nothing uses");
                report.artifacts.push(dir);
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "artifact GC: could not remove an export")
            }
        }
    }
}

/// Removes the files an old checkout left in a migrated source directory once no container or
/// record was created from them.
fn sweep_legacy(store: &SourceDir, in_use: &InUse, report: &mut SweepReport) {
    let list = store.root().join(LEGACY_LIST);
    let Ok(text) = std::fs::read_to_string(&list) else {
        return;
    };
    let entries: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    let store_dirs = [
        store.artifacts(),
        store.mirror(),
        store.root().join(paths::LIVE),
    ];
    let used = in_use
        .dirs
        .iter()
        .any(|dir| dir.starts_with(store.root()) && !store_dirs.iter().any(|s| dir.starts_with(s)));
    if used {
        info!(dir = %store.root().display(),
            "keeping the old checkout's files while containers use them; they go once those services are redeployed");
        return;
    }
    for name in entries.iter().filter(|n| !n.contains('/') && *n != "..") {
        let path = store.root().join(name);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => remove_tree(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        match removed {
            Ok(()) => report.legacy.push(path),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "could not remove a file of the old checkout")
            }
        }
    }
    let _ = std::fs::remove_file(&list);
    info!(dir = %store.root().display(), "removed the old checkout's files: no container uses them any more");
}

/// Removes what the layout before the store kept in doco-cd's own directory once nothing uses it:
/// the checkouts of other references (`.doco-cd/refs/`) and the exports of last good commits
/// (`.doco-cd/good/`), each top-level entry when no container or record was created from a
/// directory under it.
pub fn sweep_internal_leftovers(paths: &DataPaths, in_use: &InUse, report: &mut SweepReport) {
    for kind in ["refs", "good"] {
        let dir = paths.internal_dir().join(kind);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if in_use.dirs.iter().any(|d| d.starts_with(&path)) {
                continue;
            }
            match remove_tree(&path) {
                Ok(()) => {
                    info!(path = %path.display(), "removed files of the layout before the store: nothing uses them");
                    report.legacy.push(path);
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "could not remove files of the layout before the store")
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// The source directories under the data volume: those holding a `mirror` or `artifacts` directory
/// (doco-cd's own `.doco-cd` directory is not searched).
pub fn source_dirs(mount: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if dir.join(paths::ARTIFACTS).is_dir() || dir.join(paths::MIRROR).is_dir() {
            out.push(dir.to_path_buf());
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !entry.file_name().to_string_lossy().starts_with('.') {
                walk(&entry.path(), depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(mount, 8, &mut out);
    out.sort();
    out
}

/// Removes `path` and everything below it, making read-only directories writable first.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn writable(path: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            let mode = meta.permissions().mode();
            if mode & 0o700 != 0o700 {
                let _ =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700));
            }
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    writable(&entry.path());
                }
            }
        }
    }
    writable(path);
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const D: &str = "dddddddddddddddddddddddddddddddddddddddd";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn keeps_what_is_used_the_newest_and_the_young() {
        let exports = vec![
            (A.to_string(), at(100)),
            (B.to_string(), at(200)),
            (C.to_string(), at(300)),
            (D.to_string(), at(400)),
        ];
        let settings = GcSettings {
            retention_records: 2,
            retention_ttl: Duration::ZERO,
        };
        let none = BTreeSet::new();
        assert_eq!(
            removable(exports.clone(), &none, settings, at(1000)),
            vec![B, A]
        );
        let used = BTreeSet::from([A.to_string()]);
        assert_eq!(
            removable(exports.clone(), &used, settings, at(1000)),
            vec![B]
        );
        let ttl = GcSettings {
            retention_ttl: Duration::from_secs(850),
            ..settings
        };
        assert_eq!(removable(exports.clone(), &none, ttl, at(1000)), vec![A]);
        let everything = GcSettings {
            retention_records: 10,
            ..settings
        };
        assert!(removable(exports, &none, everything, at(1000)).is_empty());
    }

    #[test]
    fn finds_revisions_in_labels_and_paths() {
        let paths = DataPaths::new("/data".into(), Some("/srv/doco".into()));
        let mut in_use = InUse::default();
        let labels = BTreeMap::from([
            (key::DEPLOYMENT_TARGET_SHA.to_string(), A.to_string()),
            (
                key::DEPLOYMENT_PINNED_REVISIONS.to_string(),
                format!("{B},{C}"),
            ),
            (
                COMPOSE_WORKING_DIR.to_string(),
                format!("/srv/doco/h/o/r/artifacts/{D}/sub"),
            ),
        ]);
        in_use.add_labels(&labels, &paths);
        assert_eq!(
            in_use.revisions,
            BTreeSet::from([A, B, C, D].map(str::to_string))
        );
        assert_eq!(
            in_use.dirs,
            vec![PathBuf::from(format!("/data/h/o/r/artifacts/{D}/sub"))]
        );
        assert_eq!(revision_in(Path::new("/data/h/o/r/conf")), None);
    }

    #[test]
    fn sweeps_exports_and_the_old_checkout_once_unused() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(data.path().to_path_buf(), None);
        let store = paths.source_dir("h/o/r");
        for revision in [A, B, C] {
            let dir = store.artifact(revision);
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            std::fs::write(dir.join("sub/f"), revision).unwrap();
            std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o555))
                .unwrap();
        }
        std::fs::create_dir_all(store.mirror()).unwrap();
        std::fs::write(store.root().join("compose.yml"), "x").unwrap();
        std::fs::write(store.root().join(LEGACY_LIST), r#"["compose.yml"]"#).unwrap();
        let settings = GcSettings {
            retention_records: 0,
            retention_ttl: Duration::ZERO,
        };
        let later = SystemTime::now() + Duration::from_secs(60);
        let mut in_use = InUse {
            revisions: BTreeSet::from([B.to_string()]),
            dirs: vec![store.root().to_path_buf()],
        };
        let sweep = |in_use: &InUse| {
            let mut report = SweepReport::default();
            for root in source_dirs(paths.mount()) {
                sweep_source(&SourceDir::at(root), in_use, settings, later, &mut report);
            }
            report
        };
        let report = sweep(&in_use);
        let mut removed = report.artifacts.clone();
        removed.sort();
        assert_eq!(removed, vec![store.artifact(A), store.artifact(C)]);
        assert!(store.artifact(B).join("sub/f").is_file());
        assert!(
            report.legacy.is_empty(),
            "a container still uses the old checkout"
        );
        assert!(store.root().join("compose.yml").exists());
        in_use.dirs = vec![store.artifact(B)];
        let report = sweep(&in_use);
        assert_eq!(report.legacy, vec![store.root().join("compose.yml")]);
        assert!(!store.root().join("compose.yml").exists());
        assert!(store.mirror().is_dir());
        assert_eq!(source_dirs(data.path()), vec![store.root().to_path_buf()]);

        // The old layout's checkouts of other references and exports of last good commits.
        let refs = paths.internal_dir().join("refs/h");
        let used = paths.internal_dir().join("good/h_o_r_main");
        let unused = paths.internal_dir().join("good/h_o_r_dev");
        for dir in [&refs, &used, &unused] {
            std::fs::create_dir_all(dir.join("x")).unwrap();
        }
        in_use.dirs = vec![used.join("x")];
        let mut report = SweepReport::default();
        sweep_internal_leftovers(&paths, &in_use, &mut report);
        report.legacy.sort();
        assert_eq!(report.legacy, vec![unused, refs]);
        assert!(used.join("x").is_dir());
    }
}
