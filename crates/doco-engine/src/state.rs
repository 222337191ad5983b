//! The last known good state, persisted on the data volume.
//!
//! Every successful fetch records, per repository and reference, the commit it reached; every
//! successful deploy records what it deployed (the deploy-config hash, each service's fingerprint and
//! the exact labels it was given). That record is what lets doco-cd keep enforcing a repository while
//! Git is unreachable, also after a restart, and what lets it leave unchanged services untouched (their
//! labels are reused byte for byte, so compose's config hash does not move).
//!
//! The state is one JSON file per repository and reference (`.doco-cd/state/<key>.json`, each with
//! a `version` field), so that recording a change of one repository writes that repository's file
//! alone, whatever else doco-cd deploys, and a quiet poll writes nothing. Each file is replaced
//! atomically (write to a temporary file, fsync it, rename, fsync the directory). A file that cannot
//! be read as this schema is moved aside to `<name>.corrupt` and its repository starts from an empty
//! state: the daemon never crashes on it, and the other repositories keep theirs. The single
//! `state.json` of earlier versions is read once and replaced by the per-repository files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The schema version written by this build.
pub const STATE_VERSION: u32 = 1;

/// The whole persisted state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Schema version; see [`STATE_VERSION`].
    pub version: u32,
    /// Per repository and reference (see [`repository_key`]).
    pub repositories: BTreeMap<String, RepositoryState>,
}

/// What doco-cd last knew about one repository at one reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepositoryState {
    /// The repository URL without credentials.
    pub url: String,
    /// The reference the poll follows.
    pub reference: String,
    /// The deploy-config target (`.doco-cd.<target>.yml`; empty for the default file).
    #[serde(default)]
    pub target: String,
    /// The repository's source directory on the data volume (its mirror and exports). State files
    /// of the layout before the store call it `checkout`.
    #[serde(alias = "checkout")]
    pub source_dir: PathBuf,
    /// The last commit fetched successfully.
    pub commit: String,
    /// When that fetch succeeded (Unix seconds).
    pub last_success_unix: u64,
    /// What was last deployed from this repository, by deployment name.
    pub deployments: BTreeMap<String, DeploymentRecord>,
}

/// What the last successful deploy of one deployment applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The compose project name.
    pub project: String,
    /// The commit whose files this record matches.
    pub commit: String,
    /// The hash of the resolved deploy configuration.
    pub config_hash: String,
    /// When it was deployed or last confirmed unchanged (Unix seconds).
    pub deployed_unix: u64,
    /// Its deploy config's `reconciliation`, so engine events are handled after a restart before
    /// the repository is read again.
    #[serde(default)]
    pub reconciliation: Option<doco_config::ReconciliationConfig>,
    /// Its deploy config's Docker `context` (empty: the daemon's own engine).
    #[serde(default)]
    pub context: String,
    /// Set when its files come from another repository (`repository_url`): `commit` is then that
    /// repository's commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Per service.
    pub services: BTreeMap<String, ServiceRecord>,
}

impl DeploymentRecord {
    /// The labels each service was deployed with.
    pub fn labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.services
            .iter()
            .map(|(name, service)| (name.clone(), service.labels.clone()))
            .collect()
    }

    /// compose's config hash of each service's containers, where recorded.
    pub fn compose_hashes(&self) -> BTreeMap<String, String> {
        self.services
            .iter()
            .filter_map(|(name, service)| service.compose_hash.clone().map(|h| (name.clone(), h)))
            .collect()
    }
}

/// Where a deployment with `repository_url` came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The other repository's URL (without credentials).
    pub repository_url: String,
    /// The commit of the polled repository whose deploy configuration described the deployment.
    pub config_commit: String,
}

/// One service as it was deployed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Hash of the service's rendered configuration and the content of its local inputs.
    pub fingerprint: String,
    /// The exact `cd.doco.*` labels it was given.
    pub labels: BTreeMap<String, String>,
    /// Whether doco-cd keeps it running (restart policy `always` or `unless-stopped`).
    pub must_run: bool,
    /// How many containers it should have.
    pub replicas: u32,
    /// compose's `com.docker.compose.config-hash` of its containers after the deploy.
    pub compose_hash: Option<String>,
    /// The content hash of its live inputs (`recreate.ignore`), when it has any: a change signals
    /// the service instead of recreating it.
    #[serde(default)]
    pub live_hash: Option<String>,
}

/// The key of a repository and reference in [`State::repositories`]. A branch or tag is keyed by its
/// short name, so `main` (a poll) and `refs/heads/main` (a webhook) share their state.
pub fn repository_key(repo_name: &str, reference: &str) -> String {
    format!("{repo_name}#{}", doco_config::short_reference(reference))
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state could not be written; the previous file is still intact.
    #[error("could not write the state file {path}: {source}")]
    Write {
        /// The state file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The state directory could not be created.
    #[error("could not create the state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// How loading went, for the start-up log.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadOutcome {
    /// No state yet.
    Fresh,
    /// The state was read.
    Loaded,
    /// A state file was unreadable and moved to the given path (the others were read).
    MovedAside(PathBuf, String),
}

/// How long a newer "last successful fetch" time may stay unwritten when nothing else changed: a
/// quiet poll writes nothing to the data volume, and after a restart that time is at most this old.
pub const SUCCESS_TIME_GRANULARITY: u64 = 600;

/// One repository's file.
#[derive(Debug, Serialize, Deserialize)]
struct RepositoryFile {
    version: u32,
    key: String,
    repository: RepositoryState,
}

/// The single owner of the state files.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// The single file of earlier versions, read when no per-repository file exists yet.
    legacy: PathBuf,
    /// What each file holds now, to skip writes that would change nothing that matters.
    written: std::sync::Mutex<BTreeMap<String, RepositoryState>>,
}

/// Whether [`StateStore::save`] wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// These many repositories' files were replaced or removed.
    Written(usize),
    /// Nothing changed but fresher fetch times within [`SUCCESS_TIME_GRANULARITY`]: not written.
    Unchanged,
}

impl StateStore {
    /// The store under doco-cd's own directory `internal` (`<internal>/state/`).
    pub fn new(internal: &Path) -> Self {
        StateStore {
            dir: internal.join("state"),
            legacy: internal.join("state.json"),
            written: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The directory of the state files.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads the state. No file is an empty state; an unreadable one is moved aside (the first such
    /// one is reported) and its repository starts empty.
    pub fn load(&self) -> (State, LoadOutcome) {
        let mut state = empty();
        let mut outcome = LoadOutcome::Fresh;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(_) => return self.load_legacy(),
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            match read_repository(&file) {
                Ok(read) => {
                    state.repositories.insert(read.key, read.repository);
                    if outcome == LoadOutcome::Fresh {
                        outcome = LoadOutcome::Loaded;
                    }
                }
                Err(reason) => {
                    let moved = move_aside(&file, reason);
                    if !matches!(outcome, LoadOutcome::MovedAside(..)) {
                        outcome = moved;
                    }
                }
            }
        }
        *self.lock_written() = state.repositories.clone();
        (state, outcome)
    }

    /// The single file of earlier versions; it stays until the first save replaces it.
    fn load_legacy(&self) -> (State, LoadOutcome) {
        let bytes = match std::fs::read(&self.legacy) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (empty(), LoadOutcome::Fresh);
            }
            Err(e) => {
                return (
                    empty(),
                    move_aside(&self.legacy, format!("unreadable: {e}")),
                );
            }
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) if state.version == STATE_VERSION => (state, LoadOutcome::Loaded),
            Ok(state) => (
                empty(),
                move_aside(
                    &self.legacy,
                    format!("schema version {} is not {STATE_VERSION}", state.version),
                ),
            ),
            Err(e) => (
                empty(),
                move_aside(&self.legacy, format!("not valid state JSON: {e}")),
            ),
        }
    }

    /// Writes the files of the repositories whose state changed (fetch times may be up to
    /// [`SUCCESS_TIME_GRANULARITY`] older on disk) and removes those of forgotten repositories.
    pub fn save(&self, state: &State) -> Result<Saved, StateError> {
        let mut written = self.lock_written();
        let mut count = 0;
        for (key, repository) in &state.repositories {
            if written
                .get(key)
                .is_some_and(|old| same_but_fresher(old, repository))
            {
                continue;
            }
            self.write(key, repository)?;
            written.insert(key.clone(), repository.clone());
            count += 1;
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|key| !state.repositories.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            let file = self.file_of(&key);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::Write { path: file, source }),
            }
            written.remove(&key);
            count += 1;
        }
        if count > 0 && self.legacy.exists() {
            let _ = std::fs::remove_file(&self.legacy);
        }
        Ok(if count == 0 {
            Saved::Unchanged
        } else {
            Saved::Written(count)
        })
    }

    fn lock_written(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RepositoryState>> {
        // Entries are replaced whole; a panicking holder cannot leave one half-written.
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file of `key`: its characters that are not safe in a file name as `_`, and a hash of the
    /// whole key so that two keys never share a file.
    fn file_of(&self, key: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
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
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.dir.join(format!("{safe}-{}.json", &hash[..12]))
    }

    fn write(&self, key: &str, repository: &RepositoryState) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.file_of(key);
        let write_err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let file = RepositoryFile {
            version: STATE_VERSION,
            key: key.to_string(),
            repository: repository.clone(),
        };
        // Serializing plain maps and strings cannot fail.
        let json = serde_json::to_vec_pretty(&file).map_err(|e| write_err(e.into()))?;
        let mut out = atomic_write_file::AtomicWriteFile::options()
            .open(&path)
            .map_err(write_err)?;
        out.write_all(&json).map_err(write_err)?;
        out.write_all(b"\n").map_err(write_err)?;
        out.commit().map_err(write_err)
    }
}

/// One repository's file, checked against this schema.
fn read_repository(path: &Path) -> Result<RepositoryFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    let file: RepositoryFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("not valid state JSON: {e}"))?;
    if file.version != STATE_VERSION {
        return Err(format!(
            "schema version {} is not {STATE_VERSION}",
            file.version
        ));
    }
    Ok(file)
}

/// Moves an unreadable state file to `<name>.corrupt`.
fn move_aside(path: &Path, reason: String) -> LoadOutcome {
    let mut aside = path.to_path_buf().into_os_string();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => LoadOutcome::MovedAside(aside, reason),
        Err(e) => LoadOutcome::MovedAside(aside, format!("{reason}; moving it aside failed: {e}")),
    }
}

/// Whether `new` differs from `old` only by a fetch time less than [`SUCCESS_TIME_GRANULARITY`]
/// newer.
fn same_but_fresher(old: &RepositoryState, new: &RepositoryState) -> bool {
    // Field by field (a new field fails to compile here), without a copy: this runs at every record.
    let RepositoryState {
        url,
        reference,
        target,
        source_dir,
        commit,
        last_success_unix,
        deployments,
    } = new;
    last_success_unix
        .checked_sub(old.last_success_unix)
        .is_some_and(|newer_by| newer_by < SUCCESS_TIME_GRANULARITY)
        && *url == old.url
        && *reference == old.reference
        && *target == old.target
        && *source_dir == old.source_dir
        && *commit == old.commit
        && *deployments == old.deployments
}

fn empty() -> State {
    State {
        version: STATE_VERSION,
        repositories: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut state = empty();
        let mut repo = RepositoryState {
            url: "http://127.0.0.1:1/repo.git".into(),
            reference: "refs/heads/main".into(),
            source_dir: "/data/127.0.0.1_1/repo".into(),
            commit: "a".repeat(40),
            last_success_unix: 42,
            ..Default::default()
        };
        repo.deployments.insert(
            "web".into(),
            DeploymentRecord {
                project: "web".into(),
                commit: "a".repeat(40),
                config_hash: "h".into(),
                deployed_unix: 43,
                reconciliation: None,
                context: String::new(),
                origin: None,
                services: BTreeMap::from([(
                    "proxy".into(),
                    ServiceRecord {
                        fingerprint: "f".into(),
                        labels: BTreeMap::from([("cd.doco.deployment.name".into(), "web".into())]),
                        must_run: true,
                        replicas: 1,
                        compose_hash: Some("c".into()),
                        live_hash: None,
                    },
                )]),
            },
        );
        state
            .repositories
            .insert(repository_key("127.0.0.1:1/repo", "refs/heads/main"), repo);
        state
    }

    #[test]
    fn branch_and_tag_spellings_share_a_key() {
        assert_eq!(
            repository_key("h/o/r", "main"),
            repository_key("h/o/r", "refs/heads/main")
        );
        assert_eq!(
            repository_key("h/o/r", "v1"),
            repository_key("h/o/r", "refs/tags/v1")
        );
        assert_ne!(
            repository_key("h/o/r", "main"),
            repository_key("h/o/r", "dev")
        );
    }

    /// A second repository, for the tests of per-repository files.
    fn with_other(mut state: State) -> State {
        let mut other = state.repositories.values().next().unwrap().clone();
        other.url = "http://127.0.0.1:1/other.git".into();
        state
            .repositories
            .insert(repository_key("127.0.0.1:1/other", "main"), other);
        state
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("state"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn round_trips_through_one_file_per_repository() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("sub"));
        assert_eq!(store.load(), (empty(), LoadOutcome::Fresh));
        let state = with_other(sample());
        assert_eq!(store.save(&state).unwrap(), Saved::Written(2));
        assert_eq!(files(&dir.path().join("sub")).len(), 2);
        let reopened = StateStore::new(&dir.path().join("sub"));
        assert_eq!(reopened.load(), (state.clone(), LoadOutcome::Loaded));
        assert_eq!(reopened.save(&state).unwrap(), Saved::Unchanged);
    }

    #[test]
    fn a_change_writes_only_its_repositorys_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut state = with_other(sample());
        store.save(&state).unwrap();
        let key = repository_key("127.0.0.1:1/other", "main");
        let other_file = store.file_of(&key);
        let untouched = store.file_of(&repository_key("127.0.0.1:1/repo", "main"));
        let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = (modified(&untouched), modified(&other_file));
        std::thread::sleep(std::time::Duration::from_millis(20));
        state.repositories.get_mut(&key).unwrap().commit = "b".repeat(40);
        assert_eq!(store.save(&state).unwrap(), Saved::Written(1));
        assert_eq!(
            modified(&untouched),
            before.0,
            "the other repository's file"
        );
        assert_ne!(modified(&other_file), before.1);
        // A forgotten repository's file goes.
        state.repositories.remove(&key);
        assert_eq!(store.save(&state).unwrap(), Saved::Written(1));
        assert!(!other_file.exists());
        assert_eq!(StateStore::new(dir.path()).load().0, state);
    }

    #[test]
    fn the_single_file_of_earlier_versions_is_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("state.json");
        std::fs::write(&legacy, serde_json::to_vec(&sample()).unwrap()).unwrap();
        let store = StateStore::new(dir.path());
        assert_eq!(store.load(), (sample(), LoadOutcome::Loaded));
        assert_eq!(store.save(&sample()).unwrap(), Saved::Written(1));
        assert!(!legacy.exists());
        assert_eq!(StateStore::new(dir.path()).load().0, sample());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_only_its_repository_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let state = with_other(sample());
        store.save(&state).unwrap();
        let key = repository_key("127.0.0.1:1/other", "main");
        let path = store.file_of(&key);
        std::fs::write(&path, b"{\"version\": 1, \"key\": {tru").unwrap();
        let (loaded, outcome) = StateStore::new(dir.path()).load();
        let mut expected = state.clone();
        expected.repositories.remove(&key);
        assert_eq!(loaded, expected);
        let mut aside = path.clone().into_os_string();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        assert!(matches!(outcome, LoadOutcome::MovedAside(p, _) if p == aside));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            b"{\"version\": 1, \"key\": {tru"
        );
        assert!(!path.exists());

        // The same for the single file of earlier versions.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(
            old.path().join("state.json"),
            b"{\"version\": 99, \"repositories\": {}}",
        )
        .unwrap();
        let (state, outcome) = StateStore::new(old.path()).load();
        assert_eq!(state, empty());
        assert!(matches!(outcome, LoadOutcome::MovedAside(_, reason) if reason.contains("99")));
        assert!(old.path().join("state.json.corrupt").exists());
    }

    #[test]
    fn a_state_that_only_has_a_fresher_fetch_time_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut state = sample();
        assert_eq!(store.save(&state).unwrap(), Saved::Written(1));
        assert_eq!(store.save(&state).unwrap(), Saved::Unchanged);
        let key = state.repositories.keys().next().unwrap().clone();
        state.repositories.get_mut(&key).unwrap().last_success_unix += 60;
        assert_eq!(
            store.save(&state).unwrap(),
            Saved::Unchanged,
            "a quiet poll"
        );
        state.repositories.get_mut(&key).unwrap().last_success_unix += SUCCESS_TIME_GRANULARITY;
        assert_eq!(
            store.save(&state).unwrap(),
            Saved::Written(1),
            "fetch time too old on disk"
        );
        state.repositories.get_mut(&key).unwrap().commit = "b".repeat(40);
        assert_eq!(
            store.save(&state).unwrap(),
            Saved::Written(1),
            "a new commit"
        );
        assert_eq!(store.load().0, state);
    }

    #[test]
    fn a_failed_save_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        store.save(&sample()).unwrap();
        // A file where the state directory would go makes the next write fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("state"), b"file").unwrap();
        assert!(StateStore::new(&blocked).save(&sample()).is_err());
        assert_eq!(store.load().0, sample());
    }
}
