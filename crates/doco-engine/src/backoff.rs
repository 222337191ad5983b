//! The error policy: a deployment whose change keeps failing is retried with exponential backoff
//! instead of running `docker compose` at full cost on every tick.
//!
//! Backoff is per deployment and per desired state (commit and deploy configuration): a new commit
//! or a changed deploy configuration is a new attempt at once. It only ever delays the change step;
//! healing the last known good state never waits for it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The first retry waits this long; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(15 * 60);

/// Which deployment: the state key (repository and reference) and its name.
pub type DeploymentId = (String, String);

/// What a deployment tried to reach: its commit and deploy-configuration hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The commit.
    pub commit: String,
    /// The deploy configuration's hash.
    pub config_hash: String,
}

/// A deployment whose change failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failing {
    /// What it tried to reach.
    pub desired: Desired,
    /// Failed attempts in a row at this desired state.
    pub attempts: u32,
    /// No new attempt before this.
    pub retry_at: Instant,
    /// The last failure's reason.
    pub error: String,
}

/// The failing deployments.
#[derive(Debug, Default)]
pub struct Backoffs {
    failing: BTreeMap<DeploymentId, Failing>,
}

impl Backoffs {
    /// How long `id` must still wait before trying `desired` again; `None` when it may try now
    /// (it never failed, or failed at another desired state, or its wait is over).
    pub fn wait(&self, id: &DeploymentId, desired: &Desired, now: Instant) -> Option<Duration> {
        let failing = self.failing.get(id)?;
        (failing.desired == *desired && failing.retry_at > now)
            .then(|| failing.retry_at.duration_since(now))
    }

    /// Records a failed attempt at `desired`; returns how long until the next one.
    pub fn failed(
        &mut self,
        id: DeploymentId,
        desired: Desired,
        error: String,
        now: Instant,
    ) -> Duration {
        let attempts = match self.failing.get(&id) {
            Some(previous) if previous.desired == desired => previous.attempts + 1,
            _ => 1,
        };
        let delay = delay_after(attempts);
        let failing = Failing {
            desired,
            attempts,
            retry_at: now + delay,
            error,
        };
        self.failing.insert(id, failing);
        delay
    }

    /// Forgets `id`'s failures (it deployed, or it is gone).
    pub fn succeeded(&mut self, id: &DeploymentId) {
        self.failing.remove(id);
    }

    /// Every failing deployment.
    pub fn failing(&self) -> &BTreeMap<DeploymentId, Failing> {
        &self.failing
    }

    /// When the earliest wait of the deployments `which` selects ends, counted from `now`.
    pub fn next_retry(
        &self,
        now: Instant,
        which: impl Fn(&DeploymentId) -> bool,
    ) -> Option<Duration> {
        self.failing
            .iter()
            .filter(|(id, _)| which(id))
            .map(|(_, f)| f.retry_at.saturating_duration_since(now))
            .min()
    }
}

/// The wait after `attempts` failures in a row: 10 s, 20 s, 40 s, ... up to 15 minutes.
pub fn delay_after(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(commit: &str) -> Desired {
        Desired {
            commit: commit.into(),
            config_hash: "cfg".into(),
        }
    }

    fn id() -> DeploymentId {
        ("repo#main".into(), "web".into())
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let delays: Vec<u64> = (1..=9).map(|n| delay_after(n).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 320, 640, 900, 900]);
        assert_eq!(delay_after(1000), MAX_RETRY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_commit_waits_and_a_new_commit_or_config_tries_at_once() {
        let mut backoffs = Backoffs::default();
        let now = Instant::now();
        assert_eq!(backoffs.wait(&id(), &desired("c1"), now), None);
        assert_eq!(
            backoffs.failed(id(), desired("c1"), "pull failed".into(), now),
            FIRST_RETRY
        );
        assert_eq!(
            backoffs.wait(&id(), &desired("c1"), now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            backoffs.wait(&id(), &desired("c2"), now),
            None,
            "a new commit"
        );
        let other_config = Desired {
            config_hash: "changed".into(),
            ..desired("c1")
        };
        assert_eq!(
            backoffs.wait(&id(), &other_config, now),
            None,
            "a new deploy config"
        );
        let later = now + Duration::from_secs(10);
        assert_eq!(
            backoffs.wait(&id(), &desired("c1"), later),
            None,
            "the wait is over"
        );
        assert_eq!(
            backoffs.failed(id(), desired("c1"), "pull failed".into(), later),
            Duration::from_secs(20)
        );
        assert_eq!(
            backoffs.next_retry(later, |_| true),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            backoffs.next_retry(later, |(key, _)| key != "repo#main"),
            None
        );
        assert_eq!(
            backoffs.failed(id(), desired("c2"), "pull failed".into(), later),
            FIRST_RETRY,
            "a new commit starts over"
        );
        backoffs.succeeded(&id());
        assert!(backoffs.failing().is_empty());
    }
}
