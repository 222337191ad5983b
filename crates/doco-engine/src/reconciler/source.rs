//! The source side of a poll: fetching the remote's commit into the repository's mirror, and, when the remote
//! cannot be read, deciding whether to enforce the last known good state (offline mode) or to fail.
//! What happened goes into the run's report as a [`Fetch`]; the offline gauge, log line and
//! notification on each transition are written when the report is recorded ([`Reconciler::set_offline`]).

use doco_config::PollConfig;
use doco_git::GitError;
use tracing::{info, warn};

use super::report::Fetch;
use super::{PollError, Reconciler, Revision};
use crate::metrics;
use crate::notify::Level;
use crate::paths::SourceDir;
use crate::plan::Mode;
use crate::state::repository_key;

impl Reconciler {
    /// Fetches the remote's commit into the mirror, or decides to enforce the last known one.
    pub(super) async fn sync(
        &self,
        poll: &PollConfig,
        repo_name: &str,
        store: &SourceDir,
        url: &str,
        depth: Option<u32>,
    ) -> Result<Revision, PollError> {
        let options = doco_git::SyncOptions { depth };
        let mirror = store.mirror();
        match self
            .source
            .sync(&poll.url, &poll.reference, &mirror, &options)
            .await
        {
            Ok(outcome) => {
                if outcome.fetched {
                    info!(commit = %outcome.commit, cloned = outcome.cloned, "fetched new commit");
                }
                let fetch = Fetch::Fetched {
                    key: repository_key(repo_name, &poll.reference),
                    url: url.to_string(),
                    reference: poll.reference.clone(),
                    target: poll.target.clone(),
                    source_dir: store.root().to_path_buf(),
                    commit: outcome.commit.clone(),
                };
                Ok(Revision {
                    commit: outcome.commit,
                    mode: Mode::Online,
                    deferred_error: None,
                    fetch: Some(fetch),
                })
            }
            Err(e) if e.is_transport() && self.config.maintain_offline_state => {
                let (commit, reason) = self.last_known_commit(&mirror, poll, url, e)?;
                let fetch = Fetch::Offline {
                    commit: commit.clone(),
                    reason,
                };
                Ok(Revision {
                    commit,
                    mode: Mode::Offline,
                    deferred_error: None,
                    fetch: Some(fetch),
                })
            }
            Err(e) if e.is_auth() && self.config.maintain_offline_state => {
                let message = e.to_string();
                let (commit, _) = self.last_known_commit(&mirror, poll, url, e)?;
                warn!(%commit, "authentication failed; enforcing the last known state meanwhile");
                Ok(Revision {
                    commit,
                    mode: Mode::Offline,
                    deferred_error: Some(PollError::Auth {
                        url: url.to_string(),
                        source: GitError::Auth {
                            url: url.to_string(),
                            detail: message,
                        },
                    }),
                    fetch: None,
                })
            }
            Err(e) if e.is_auth() => Err(PollError::Auth {
                url: url.to_string(),
                source: e,
            }),
            Err(e) => Err(PollError::Git(e)),
        }
    }

    /// The commit the reference resolved to at the mirror's last successful fetch.
    fn last_known_commit(
        &self,
        mirror: &std::path::Path,
        poll: &PollConfig,
        url: &str,
        error: GitError,
    ) -> Result<(String, String), PollError> {
        match self.source.resolved(mirror, &poll.reference) {
            Ok(Some(commit)) => Ok((commit, error.to_string())),
            _ => Err(PollError::NeverFetched {
                url: url.to_string(),
                source: error,
            }),
        }
    }

    /// Records entering or leaving offline mode: the gauge always; one log line and one notification
    /// on transitions only.
    pub(super) async fn set_offline(&self, repo_name: &str, offline: Option<(&str, &str)>) {
        self.metrics
            .repository_offline
            .get_or_create(&metrics::repo(repo_name))
            .set(i64::from(offline.is_some()));
        let changed = {
            let mut set = self
                .offline
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match offline {
                Some(_) => set.insert(repo_name.to_string()),
                None => set.remove(repo_name),
            }
        };
        if !changed {
            return;
        }
        match offline {
            Some((commit, reason)) => {
                warn!(%commit, %reason, "repository unreachable: enforcing the last known state until it can be fetched again");
                let body = format!(
                    "{repo_name} cannot be fetched ({reason}). doco-cd keeps enforcing commit {commit} until it can fetch again."
                );
                self.notifier
                    .send(
                        Level::Warning,
                        repo_name,
                        "Repository unreachable: enforcing the last known state",
                        &body,
                    )
                    .await;
            }
            None => {
                info!("repository reachable again: back to normal mode");
                let body =
                    format!("{repo_name} can be fetched again; doco-cd is back to normal mode.");
                self.notifier
                    .send(
                        Level::Success,
                        repo_name,
                        "Repository reachable again",
                        &body,
                    )
                    .await;
            }
        }
    }
}
