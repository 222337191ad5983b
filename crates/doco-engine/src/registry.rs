//! What the event loop needs to know about doco-cd's deployments, shared without a cycle: the
//! reconciler writes it, the event loop reads it (kube-runtime's reflector store split into a writer
//! and readers).
//!
//! Two facts live here:
//! - **Targets**: per compose project, the poll configuration that deploys it and its
//!   `reconciliation` settings, so an engine event can be turned into a reconcile of the right
//!   repository (polled or webhook-only alike).
//! - **Own actions**: what doco-cd itself is doing or did to a project (a compose run) or to one
//!   container (a start or restart), and when it finished. An engine event is doco-cd's own doing
//!   when it belongs to an action in progress, or happened before that action finished; a real
//!   `stop` one second after doco-cd restarted the container is not, and is acted on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doco_config::{PollConfig, ReconciliationConfig};
use doco_docker::ContainerEvent;

/// What the event loop needs to know about a deployed compose project.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTarget {
    /// The poll configuration that deploys it (for a webhook-only repository, the one the webhook
    /// built), so an event can enqueue a reconcile of it.
    pub poll: PollConfig,
    /// Its deploy config's `reconciliation`.
    pub reconciliation: ReconciliationConfig,
}

/// How long a finished own action is remembered: long enough for the engine to deliver the events
/// it caused, short enough to keep the maps small.
const REMEMBER_FINISHED: Duration = Duration::from_secs(600);

/// The shared registry. Cloning gives another handle on the same data.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    targets: HashMap<String, EventTarget>,
    projects: HashMap<String, Activity>,
    containers: HashMap<String, Activity>,
}

/// doco-cd's actions on one project or container: how many are running, and when the last one
/// finished (Unix nanoseconds, the engine's event clock).
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    running: u32,
    finished_nanos: i64,
}

/// What an own action is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Project(String),
    Container(String),
}

/// An own action in progress; dropping it records that it finished now.
#[derive(Debug)]
#[must_use = "the action counts as finished when this guard is dropped"]
pub struct OwnAction {
    registry: Registry,
    subject: Subject,
}

impl Drop for OwnAction {
    fn drop(&mut self) {
        let now = unix_nanos();
        let mut inner = self.registry.lock();
        let activity = inner.activity(&self.subject);
        activity.running = activity.running.saturating_sub(1);
        activity.finished_nanos = activity.finished_nanos.max(now);
        inner.forget_older_than(now - REMEMBER_FINISHED.as_nanos() as i64);
    }
}

impl Registry {
    /// Records that `project` is deployed by `target` (replacing what was known).
    pub fn set_target(&self, project: &str, target: EventTarget) {
        self.lock().targets.insert(project.to_string(), target);
    }

    /// Forgets `project` (it was removed).
    pub fn remove_target(&self, project: &str) {
        self.lock().targets.remove(project);
    }

    /// The deployment that owns compose project `project`.
    pub fn target(&self, project: &str) -> Option<EventTarget> {
        self.lock().targets.get(project).cloned()
    }

    /// Every known target, one per poll configuration (for a re-check of everything, such as after
    /// the event stream was cut).
    pub fn polls(&self) -> Vec<PollConfig> {
        let inner = self.lock();
        let mut polls: Vec<PollConfig> = Vec::new();
        for target in inner.targets.values() {
            if !polls.contains(&target.poll) {
                polls.push(target.poll.clone());
            }
        }
        polls
    }

    /// Marks a compose run on `project` (up, down): its containers' events are doco-cd's own until
    /// the returned guard is dropped, and those that happened before then.
    pub fn begin_project(&self, project: &str) -> OwnAction {
        self.begin(Subject::Project(project.to_string()))
    }

    /// Marks a start or restart of container `id`, like [`Registry::begin_project`].
    pub fn begin_container(&self, id: &str) -> OwnAction {
        self.begin(Subject::Container(id.to_string()))
    }

    /// Whether `event` was caused by one of doco-cd's own actions: one on its project or its
    /// container is running, or finished after the event happened.
    pub fn is_own(&self, event: &ContainerEvent) -> bool {
        let inner = self.lock();
        let mine = |activity: Option<&Activity>| {
            activity.is_some_and(|a| a.running > 0 || event.time_nano <= a.finished_nanos)
        };
        mine(inner.containers.get(&event.id))
            || event
                .project
                .as_ref()
                .is_some_and(|project| mine(inner.projects.get(project)))
    }

    fn begin(&self, subject: Subject) -> OwnAction {
        self.lock().activity(&subject).running += 1;
        OwnAction {
            registry: self.clone(),
            subject,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent whatever a panicking holder did: every update is one statement.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn activity(&mut self, subject: &Subject) -> &mut Activity {
        match subject {
            Subject::Project(name) => self.projects.entry(name.clone()).or_default(),
            Subject::Container(id) => self.containers.entry(id.clone()).or_default(),
        }
    }

    fn forget_older_than(&mut self, cutoff: i64) {
        let keep = |a: &mut Activity| a.running > 0 || a.finished_nanos >= cutoff;
        self.projects.retain(|_, a| keep(a));
        self.containers.retain(|_, a| keep(a));
    }
}

/// Now, in Unix nanoseconds (the unit of the engine's `timeNano`).
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, project: &str, time_nano: i64) -> ContainerEvent {
        ContainerEvent {
            action: "stop".into(),
            id: id.into(),
            project: Some(project.into()),
            service: Some("web".into()),
            time: time_nano / 1_000_000_000,
            time_nano,
        }
    }

    #[test]
    fn events_during_and_before_the_end_of_an_own_action_are_own_and_later_ones_are_real() {
        let registry = Registry::default();
        let before = unix_nanos();
        assert!(
            !registry.is_own(&event("c1", "p", before)),
            "nothing done yet"
        );

        let restart = registry.begin_container("c1");
        assert!(registry.is_own(&event("c1", "p", unix_nanos() + 1_000_000_000)));
        assert!(
            !registry.is_own(&event("c2", "p", unix_nanos())),
            "another container"
        );
        let during = unix_nanos();
        drop(restart);
        let finished = unix_nanos();
        assert!(
            registry.is_own(&event("c1", "p", during)),
            "caused by the restart"
        );
        assert!(
            !registry.is_own(&event("c1", "p", finished + 1_000_000)),
            "a real stop right after the restart"
        );
    }

    #[test]
    fn a_compose_run_covers_every_container_of_its_project() {
        let registry = Registry::default();
        let run = registry.begin_project("p");
        assert!(registry.is_own(&event("any", "p", unix_nanos())));
        assert!(!registry.is_own(&event("any", "q", unix_nanos())));
        let nested = registry.begin_project("p");
        drop(run);
        assert!(
            registry.is_own(&event("any", "p", unix_nanos() + 5_000_000_000)),
            "another run still going"
        );
        drop(nested);
        assert!(!registry.is_own(&event("any", "p", unix_nanos() + 5_000_000_000)));
    }

    #[test]
    fn polls_are_listed_once_each() {
        let registry = Registry::default();
        let poll = PollConfig {
            url: "http://git/repo.git".into(),
            ..PollConfig::default()
        };
        let target = EventTarget {
            poll: poll.clone(),
            reconciliation: ReconciliationConfig::default(),
        };
        registry.set_target("a", target.clone());
        registry.set_target("b", target);
        assert_eq!(registry.polls(), vec![poll]);
        registry.remove_target("a");
        assert!(registry.target("a").is_none());
        assert!(registry.target("b").is_some());
    }
}
