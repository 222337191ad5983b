//! The last known good state, persisted on the data volume.
//!
//! Every successful fetch records, per repository and reference, the commit it reached; every
//! successful deploy records what it deployed (the deploy-config hash, each service's fingerprint and
//! the exact labels it was given). That record is what lets doco-cd keep enforcing a repository while
//! Git is unreachable, also after a restart, and what lets it leave unchanged services untouched (their
//! labels are reused byte for byte, so compose's config hash does not move).
//!
//! The file is JSON with a `version` field, replaced atomically (write to a temporary file, fsync it,
//! rename, fsync the directory). A file that cannot be read as this schema is moved aside to
//! `<name>.corrupt` and the daemon starts from an empty state: it never crashes on it.

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
    /// No state file yet.
    Fresh,
    /// The state file was read.
    Loaded,
    /// The state file was unreadable and moved to the given path.
    MovedAside(PathBuf, String),
}

/// How long a newer "last successful fetch" time may stay unwritten when nothing else changed: a
/// quiet poll writes nothing to the data volume, and after a restart that time is at most this old.
pub const SUCCESS_TIME_GRANULARITY: u64 = 600;

/// The single owner of the state file.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    /// What the file holds now, to skip writes that would change nothing that matters.
    written: std::sync::Mutex<Option<State>>,
}

/// Whether [`StateStore::save`] wrote the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The file was replaced.
    Written,
    /// Nothing changed but fresher fetch times within [`SUCCESS_TIME_GRANULARITY`]: not written.
    Unchanged,
}

impl StateStore {
    /// A store for the file at `path`.
    pub fn new(path: PathBuf) -> Self {
        StateStore {
            path,
            written: std::sync::Mutex::new(None),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state. A missing file is an empty state; an unreadable one is moved aside.
    pub fn load(&self) -> (State, LoadOutcome) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (empty(), LoadOutcome::Fresh);
            }
            Err(e) => return self.move_aside(format!("unreadable: {e}")),
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) if state.version == STATE_VERSION => {
                *self.lock_written() = Some(state.clone());
                (state, LoadOutcome::Loaded)
            }
            Ok(state) => self.move_aside(format!(
                "schema version {} is not {STATE_VERSION}",
                state.version
            )),
            Err(e) => self.move_aside(format!("not valid state JSON: {e}")),
        }
    }

    fn move_aside(&self, reason: String) -> (State, LoadOutcome) {
        let mut aside = self.path.clone().into_os_string();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => (empty(), LoadOutcome::MovedAside(aside, reason)),
            Err(e) => (
                empty(),
                LoadOutcome::MovedAside(aside, format!("{reason}; moving it aside failed: {e}")),
            ),
        }
    }

    /// Replaces the state file atomically with `state`, unless it holds the same state already (fetch
    /// times may be up to [`SUCCESS_TIME_GRANULARITY`] older in the file).
    pub fn save(&self, state: &State) -> Result<Saved, StateError> {
        if self
            .lock_written()
            .as_ref()
            .is_some_and(|written| same_but_fresher(written, state))
        {
            return Ok(Saved::Unchanged);
        }
        self.write(state)?;
        *self.lock_written() = Some(state.clone());
        Ok(Saved::Written)
    }

    fn lock_written(&self) -> std::sync::MutexGuard<'_, Option<State>> {
        // The value is replaced whole; a panicking holder cannot leave it half-written.
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, state: &State) -> Result<(), StateError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let write_err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        // Serializing plain maps and strings cannot fail.
        let json = serde_json::to_vec_pretty(state).map_err(|e| write_err(e.into()))?;
        let mut file = atomic_write_file::AtomicWriteFile::options()
            .open(&self.path)
            .map_err(write_err)?;
        file.write_all(&json).map_err(write_err)?;
        file.write_all(b"\n").map_err(write_err)?;
        file.commit().map_err(write_err)
    }
}

/// Whether `state` differs from `written` only by fetch times less than
/// [`SUCCESS_TIME_GRANULARITY`] newer.
fn same_but_fresher(written: &State, state: &State) -> bool {
    if written.version != state.version || written.repositories.len() != state.repositories.len() {
        return false;
    }
    written
        .repositories
        .iter()
        .zip(&state.repositories)
        .all(|((old_key, old), (key, new))| {
            let fresher = new.last_success_unix >= old.last_success_unix
                && new.last_success_unix - old.last_success_unix < SUCCESS_TIME_GRANULARITY;
            old_key == key
                && fresher
                && RepositoryState {
                    last_success_unix: old.last_success_unix,
                    ..new.clone()
                } == *old
        })
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

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("sub/state.json"));
        assert_eq!(store.load(), (empty(), LoadOutcome::Fresh));
        store.save(&sample()).unwrap();
        assert_eq!(store.load(), (sample(), LoadOutcome::Loaded));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_the_state_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"version\": 1, \"repositories\": {tru").unwrap();
        let store = StateStore::new(path.clone());
        let (state, outcome) = store.load();
        assert_eq!(state, empty());
        let aside = dir.path().join("state.json.corrupt");
        assert!(matches!(outcome, LoadOutcome::MovedAside(p, _) if p == aside));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            b"{\"version\": 1, \"repositories\": {tru"
        );
        assert!(!path.exists());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().0, sample());
    }

    #[test]
    fn an_unknown_schema_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"version\": 99, \"repositories\": {}}").unwrap();
        let (state, outcome) = StateStore::new(path).load();
        assert_eq!(state, empty());
        assert!(matches!(outcome, LoadOutcome::MovedAside(_, reason) if reason.contains("99")));
    }

    #[test]
    fn a_state_that_only_has_a_fresher_fetch_time_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        let mut state = sample();
        assert_eq!(store.save(&state).unwrap(), Saved::Written);
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
            Saved::Written,
            "fetch time too old on disk"
        );
        state.repositories.get_mut(&key).unwrap().commit = "b".repeat(40);
        assert_eq!(store.save(&state).unwrap(), Saved::Written, "a new commit");
        assert_eq!(store.load().0, state);

        // A store that loaded the file knows what it holds.
        let reopened = StateStore::new(dir.path().join("state.json"));
        let (loaded, _) = reopened.load();
        assert_eq!(reopened.save(&loaded).unwrap(), Saved::Unchanged);
    }

    #[test]
    fn a_failed_save_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = StateStore::new(path.clone());
        store.save(&sample()).unwrap();
        // A directory where the temporary file would go makes the next write fail.
        let blocker = dir.path().join("blocked");
        std::fs::create_dir(&blocker).unwrap();
        let broken = StateStore::new(blocker.join("missing-parent-is-a-file/state.json"));
        std::fs::write(blocker.join("missing-parent-is-a-file"), b"file").unwrap();
        assert!(broken.save(&empty()).is_err());
        assert_eq!(store.load().0, sample());
    }
}
