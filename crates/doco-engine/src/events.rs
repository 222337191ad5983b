//! Event-driven reconciliation between polls, as upstream's `reconciliation` deploy setting describes
//! it (default: `enabled: true, events: [unhealthy]`).
//!
//! One task follows the engine's events for containers doco-cd deployed. For an event the
//! deployment subscribed to:
//! - `unhealthy`, `stop`, `kill`, `oom`: the container is restarted in place (same container), with
//!   `restart_timeout` and `restart_signal`; unhealthy restarts are limited to `restart_limit` per
//!   `restart_window` per container, and the events a restart itself causes are ignored;
//! - `die`, `destroy`, `update`: the owning repository's poll is triggered at once, so the same
//!   path as every poll decides what to start or recreate (never a parallel copy of it).
//!
//! Events a deploy of doco-cd causes (up to the second it ends) are ignored: they are its own doing.
//! Polls also report the unhealthy containers they see (already unhealthy when doco-cd started, or
//! whose event was missed); they are handled as `unhealthy` events, under the same restart budget.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use doco_docker::{ContainerEvent, Engine};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::registry::{EventTarget, Registry};
use crate::scheduler::{EventReason, Reason, Scheduler};

/// upstream's reconciliation event name for an engine action; `None` for actions it does not know.
pub fn normalize_action(action: &str) -> Option<&'static str> {
    match action {
        "health_status: unhealthy" => Some("unhealthy"),
        "die" => Some("die"),
        "destroy" => Some("destroy"),
        "update" => Some("update"),
        "stop" => Some("stop"),
        "kill" => Some("kill"),
        "oom" => Some("oom"),
        _ => None,
    }
}

/// Actions handled by restarting the container rather than by a poll.
pub fn is_restart_action(action: &str) -> bool {
    matches!(action, "unhealthy" | "stop" | "kill" | "oom")
}

/// How many unhealthy restarts a container had recently, to stop restart loops.
#[derive(Debug, Default)]
pub struct RestartBudget {
    history: HashMap<String, VecDeque<Instant>>,
}

impl RestartBudget {
    /// Records a restart of `container` at `now` and returns true, unless it already had `limit`
    /// restarts within `window` (then false). A limit or window of 0 never suppresses.
    pub fn allow(&mut self, container: &str, now: Instant, limit: usize, window: Duration) -> bool {
        if limit == 0 || window.is_zero() {
            return true;
        }
        let history = self.history.entry(container.to_string()).or_default();
        while history
            .front()
            .is_some_and(|at| now.duration_since(*at) >= window)
        {
            history.pop_front();
        }
        if history.len() >= limit {
            return false;
        }
        history.push_back(now);
        true
    }
}

/// The event follower: the engine, the registry that knows which deployment owns a project and what
/// doco-cd itself is doing, and the scheduler that reconciles.
pub struct EventLoop {
    docker: Engine,
    registry: Registry,
    scheduler: Scheduler,
    unhealthy: Option<UnboundedReceiver<ContainerEvent>>,
    budget: RestartBudget,
}

impl EventLoop {
    /// `unhealthy` carries the unhealthy containers reconciles find.
    pub fn new(
        docker: Engine,
        registry: Registry,
        scheduler: Scheduler,
        unhealthy: Option<UnboundedReceiver<ContainerEvent>>,
    ) -> Self {
        EventLoop {
            docker,
            registry,
            scheduler,
            unhealthy,
            budget: RestartBudget::default(),
        }
    }

    /// Follows events until `cancel` fires, re-subscribing (from a little before the last event seen)
    /// whenever the engine's stream ends.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut since = unix_now();
        let mut reports = self.unhealthy.take();
        loop {
            let docker = self.docker.clone();
            let mut events = Box::pin(docker.container_events(Some(since)));
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = events.next() => next,
                    Some(report) = next_report(&mut reports) => {
                        self.handle(report).await;
                        continue;
                    }
                };
                match next {
                    Some(Ok(event)) => {
                        since = since.max(event.time);
                        self.handle(event).await;
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "the engine's event stream failed; re-subscribing");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            since -= 3;
        }
    }

    async fn handle(&mut self, event: ContainerEvent) {
        let Some(action) = normalize_action(&event.action) else {
            return;
        };
        let Some(project) = &event.project else {
            return;
        };
        let Some(target) = self.registry.target(project) else {
            return;
        };
        let settings = &target.reconciliation;
        if !settings.enabled || !settings.events.iter().any(|e| e == action) {
            return;
        }
        if self.registry.is_own(&event) {
            debug!(%project, action, "event during doco-cd's own deploy; ignored");
            return;
        }
        if is_restart_action(action) {
            self.restart(&event, action, &target).await;
        } else {
            info!(%project, container = %short_id(&event.id), action, "event: reconciling the deployment now");
            let reason = EventReason {
                project: project.clone(),
                service: event.service.clone().unwrap_or_default(),
                container: event.id.clone(),
                action: action.to_string(),
            };
            self.scheduler.enqueue(target.poll, Reason::Event(reason));
        }
    }

    async fn restart(&mut self, event: &ContainerEvent, action: &str, target: &EventTarget) {
        let now = Instant::now();
        let settings = &target.reconciliation;
        let project = event.project.as_deref().unwrap_or_default();
        if action == "unhealthy"
            && !self.budget.allow(
                &event.id,
                now,
                usize::try_from(settings.restart_limit).unwrap_or(0),
                Duration::from_secs(u64::try_from(settings.restart_window).unwrap_or(0)),
            )
        {
            warn!(%project, container = %short_id(&event.id), limit = settings.restart_limit, window_secs = settings.restart_window,
                "unhealthy container not restarted: restart limit reached within the window");
            return;
        }
        let timeout = i32::try_from(settings.restart_timeout).unwrap_or(10);
        let signal =
            (!settings.restart_signal.is_empty()).then_some(settings.restart_signal.as_str());
        info!(%project, container = %short_id(&event.id), action, "event: restarting the container");
        // The stop, die and start events the restart causes are ours.
        let _own = self.registry.begin_container(&event.id);
        if let Err(e) = self
            .docker
            .restart_container(&event.id, timeout, signal)
            .await
        {
            warn!(%project, container = %short_id(&event.id), error = %e, "restart after an event failed");
        }
    }
}

/// The next unhealthy container a poll reported; pending forever without a report channel.
async fn next_report(
    reports: &mut Option<tokio::sync::mpsc::UnboundedReceiver<ContainerEvent>>,
) -> Option<ContainerEvent> {
    match reports {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_actions_map_to_upstreams_event_names() {
        assert_eq!(
            normalize_action("health_status: unhealthy"),
            Some("unhealthy")
        );
        assert_eq!(normalize_action("health_status: healthy"), None);
        assert_eq!(normalize_action("die"), Some("die"));
        assert_eq!(normalize_action("start"), None);
        assert!(is_restart_action("unhealthy") && is_restart_action("oom"));
        assert!(!is_restart_action("die") && !is_restart_action("destroy"));
    }

    #[test]
    fn unhealthy_restarts_are_limited_per_window_and_container() {
        let mut budget = RestartBudget::default();
        let start = Instant::now();
        let window = Duration::from_secs(300);
        assert!(budget.allow("a", start, 2, window));
        assert!(budget.allow("a", start + Duration::from_secs(10), 2, window));
        assert!(!budget.allow("a", start + Duration::from_secs(20), 2, window));
        assert!(
            budget.allow("b", start + Duration::from_secs(20), 2, window),
            "per container"
        );
        assert!(
            budget.allow("a", start + Duration::from_secs(301), 2, window),
            "the window slid"
        );
        assert!(budget.allow("a", start, 0, window), "0 never suppresses");
    }
}
