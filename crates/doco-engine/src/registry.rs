//! What the event loop needs to know about doco-cd's deployments, shared without a cycle: the
//! reconciler writes it, the event loop reads it (kube-runtime's reflector store split into a writer
//! and readers).
//!
//! Three facts live here:
//! - **Targets**: per compose project, the poll configuration that deploys it and its
//!   `reconciliation` settings, so an engine event can be turned into a reconcile of the right
//!   repository (polled or webhook-only alike).
//! - **Own actions**: what doco-cd itself is doing or did to a project (a compose run) or to one
//!   container (a start or restart), and when it finished. An engine event is doco-cd's own doing
//!   when it belongs to an action in progress, or happened before that action finished; a real
//!   `stop` one second after doco-cd restarted the container is not, and is acted on.
//! - **Services to leave alone**: per compose project, the services the job scheduler holds stopped
//!   on purpose for a run (`cd.doco.job.stop_services`, until the run ends) and the scheduled job
//!   services themselves (they run when their schedule fires, never because something healed
//!   them). The heal step neither starts nor recreates them and the event loop does not restart
//!   them.

use std::collections::{BTreeSet, HashMap};
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
    /// `(project, service)` held stopped by job runs.
    held: HashMap<(String, String), Hold>,
    /// `(project, service)` of the scheduled jobs on the engine.
    jobs: BTreeSet<(String, String)>,
}

/// How many job runs hold a service stopped, and the containers the first of them stopped.
#[derive(Debug, Default)]
struct Hold {
    runs: u32,
    stopped: Vec<String>,
}

/// A service held stopped by a job run. [`HeldStopped::release`] (or dropping it) ends this run's
/// hold; the service is left alone until every run holding it has released it.
#[derive(Debug)]
#[must_use = "the service is released when this guard is dropped"]
pub struct HeldStopped {
    registry: Registry,
    key: (String, String),
    released: bool,
}

impl HeldStopped {
    /// Records that the run stopped container `id` of the service (to be started again by the last
    /// run to release it).
    pub fn stopped(&self, id: &str) {
        if let Some(hold) = self.registry.lock().held.get_mut(&self.key) {
            hold.stopped.push(id.to_string());
        }
    }

    /// Ends this run's hold. When it was the last one, the containers stopped for the holds, which
    /// the caller starts again; `None` while another run still needs the service stopped.
    pub fn release(mut self) -> Option<Vec<String>> {
        self.released = true;
        self.registry.release_held(&self.key)
    }
}

impl Drop for HeldStopped {
    fn drop(&mut self) {
        if !self.released {
            self.registry.release_held(&self.key);
        }
    }
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

    /// Holds `service` of `project` stopped for a job run: heal and the event loop leave it alone
    /// until the guard (and every other run's guard on it) is dropped. Whether this is the first
    /// hold, the one that must stop the service (a later run finds it stopped already).
    pub fn hold_stopped(&self, project: &str, service: &str) -> (HeldStopped, bool) {
        let key = (project.to_string(), service.to_string());
        let count = {
            let mut inner = self.lock();
            let hold = inner.held.entry(key.clone()).or_default();
            hold.runs += 1;
            hold.runs
        };
        (
            HeldStopped {
                registry: self.clone(),
                key,
                released: false,
            },
            count == 1,
        )
    }

    fn release_held(&self, key: &(String, String)) -> Option<Vec<String>> {
        let mut inner = self.lock();
        let hold = inner.held.get_mut(key)?;
        hold.runs = hold.runs.saturating_sub(1);
        if hold.runs > 0 {
            return None;
        }
        inner.held.remove(key).map(|hold| hold.stopped)
    }

    /// Records the scheduled job services on the engine, `(project, service)` (replacing the last
    /// list).
    pub fn set_jobs(&self, jobs: BTreeSet<(String, String)>) {
        self.lock().jobs = jobs;
    }

    /// The services of `project` that heal and the event loop must leave alone: those held stopped
    /// by a job run and the scheduled jobs.
    pub fn left_alone(&self, project: &str) -> BTreeSet<String> {
        let inner = self.lock();
        inner
            .held
            .keys()
            .chain(inner.jobs.iter())
            .filter(|(p, _)| p == project)
            .map(|(_, service)| service.clone())
            .collect()
    }

    /// Whether `service` of `project` is left alone (see [`Registry::left_alone`]).
    pub fn is_left_alone(&self, project: &str, service: &str) -> bool {
        let key = (project.to_string(), service.to_string());
        let inner = self.lock();
        inner.held.contains_key(&key) || inner.jobs.contains(&key)
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
    fn a_service_held_stopped_by_two_runs_is_left_alone_until_both_release_it() {
        let registry = Registry::default();
        let (first, must_stop) = registry.hold_stopped("p", "web");
        assert!(must_stop);
        first.stopped("c1");
        let (second, must_stop) = registry.hold_stopped("p", "web");
        assert!(!must_stop, "already held stopped by another run");
        assert!(registry.is_left_alone("p", "web"));
        assert!(!registry.is_left_alone("q", "web"));
        assert_eq!(
            first.release(),
            None,
            "the other run still needs it stopped"
        );
        assert_eq!(
            registry.left_alone("p"),
            BTreeSet::from(["web".to_string()])
        );
        assert_eq!(
            second.release(),
            Some(vec!["c1".to_string()]),
            "the last run starts what the first stopped"
        );
        assert!(registry.left_alone("p").is_empty());
        registry.set_jobs(BTreeSet::from([("p".to_string(), "backup".to_string())]));
        assert!(registry.is_left_alone("p", "backup"));
        assert_eq!(
            registry.left_alone("p"),
            BTreeSet::from(["backup".to_string()])
        );
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
