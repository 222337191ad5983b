//! Event-driven reconciliation between polls, as upstream's `reconciliation` deploy setting describes
//! it (default: `enabled: true, events: [unhealthy]`).
//!
//! One task follows the engine's events for containers doco-cd deployed. For an event the
//! deployment subscribed to:
//! - `unhealthy`, `stop`, `kill`, `oom`: the container is restarted in place (same container), with
//!   `restart_timeout` and `restart_signal`; unhealthy restarts are limited to `restart_limit` per
//!   `restart_window` per container;
//! - `die`, `destroy`, `update`: a reconcile of the owning repository is enqueued with the event as
//!   its reason, so the one path every trigger takes brings the service back from its last known
//!   good state (never a parallel copy of it).
//!
//! Events doco-cd's own actions cause are recognised by identity, through [`Registry::is_own`]
//! (which container or project, and when that action finished), never by a time window: a real
//! `stop` a second after doco-cd restarted the container is acted on.
//!
//! The engine's event stream breaks whenever the connection to the engine does. On a cut the loop
//! re-subscribes (a short first retry, then a capped backoff) from the time of the last event it saw,
//! and remembers the events it already handled by (container, action, time) so that the engine's
//! replay of them is not acted on twice (a second restart of a healthy container is downtime). The
//! engine replays at most 256 events, so once the stream is back every known repository is also
//! re-checked against its last known good state ([`Reason::Reconnect`]): what happened during the
//! gap is healed even when its events are lost. A re-check only heals; it restarts nothing healthy.
//!
//! Polls also report the unhealthy containers they see (already unhealthy when doco-cd started, or
//! whose event was missed); they are handled as `unhealthy` events, under the same restart budget.
//!
//! The engine sits behind [`EventSource`], so the loop is tested on a paused clock with a fake.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use doco_docker::{ContainerEvent, DockerError, Engine};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::registry::{EventTarget, Registry, unix_nanos};
use crate::scheduler::{EventReason, Reason, Scheduler};

/// The first wait before re-subscribing after the stream broke: most cuts are a blip.
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two attempts while the engine stays away.
const RETRY_MAX: Duration = Duration::from_secs(3);
/// How long a ping of the engine may take before the attempt counts as failed.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new subscription must stay up (or deliver an event) before the stream counts as back.
/// The engine sends nothing when nothing happens, so a quiet stream that has not failed is up.
const CONFIRM_AFTER: Duration = Duration::from_millis(500);
/// How many handled events are remembered to recognise replays: well above the 256 the engine
/// replays, so every replayed event is still known.
const REMEMBERED_EVENTS: usize = 4096;

/// What the event loop needs of the engine. [`Engine`] is the real one; tests use a fake.
pub trait EventSource: Send + Sync {
    /// Checks that the engine answers, before re-subscribing after a cut.
    fn ping(&self) -> BoxFuture<'_, Result<(), DockerError>>;
    /// The events of doco-cd's containers from `since_nanos` (Unix nanoseconds) on, replayed ones
    /// first; the stream fails or ends when the connection breaks.
    fn subscribe(
        &self,
        since_nanos: i64,
    ) -> BoxStream<'static, Result<ContainerEvent, DockerError>>;
    /// Restarts container `id` in place: stop with `timeout_secs` grace (and `signal`), then start.
    fn restart<'a>(
        &'a self,
        id: &'a str,
        timeout_secs: i32,
        signal: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), DockerError>>;
}

impl EventSource for Engine {
    fn ping(&self) -> BoxFuture<'_, Result<(), DockerError>> {
        Box::pin(Engine::ping(self))
    }

    fn subscribe(
        &self,
        since_nanos: i64,
    ) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        self.container_events(Some(since_nanos)).boxed()
    }

    fn restart<'a>(
        &'a self,
        id: &'a str,
        timeout_secs: i32,
        signal: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(self.restart_container(id, timeout_secs, signal))
    }
}

/// upstream's reconciliation event name for an engine action; `None` for actions it does not know.
/// (A deploy config's `remove` and `delete` are already `destroy`, the engine's name, once parsed.)
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

/// Actions handled by restarting the container rather than by a reconcile.
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

/// What identifies an engine event: the container, the action and the engine's time in nanoseconds.
type EventId = (String, String, i64);

/// The last [`REMEMBERED_EVENTS`] events of the stream, by identity, oldest forgotten first.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<EventId>,
    ids: HashSet<EventId>,
}

impl Seen {
    /// Whether `event` is new (and remembers it); false for a replay. An event without a time
    /// cannot be recognised and counts as new.
    fn first_time(&mut self, event: &ContainerEvent) -> bool {
        if event.time_nano == 0 {
            return true;
        }
        let id = (event.id.clone(), event.action.clone(), event.time_nano);
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED_EVENTS
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

/// A broken event stream: since when (logged once when it starts, once when it ends), and the
/// wait before the next attempt to re-subscribe.
struct Outage {
    started: tokio::time::Instant,
    delay: Duration,
}

impl Outage {
    fn begin() -> Outage {
        Outage {
            started: tokio::time::Instant::now(),
            delay: RETRY_FIRST,
        }
    }

    /// The wait before the next attempt: short at first, then doubling up to [`RETRY_MAX`].
    fn next_delay(&mut self) -> Duration {
        let delay = self.delay;
        self.delay = (delay * 2).min(RETRY_MAX);
        delay
    }
}

/// The event follower: the engine, the registry that knows which deployment owns a project and what
/// doco-cd itself is doing, and the scheduler that reconciles.
pub struct EventLoop<S = Engine> {
    source: S,
    registry: Registry,
    scheduler: Scheduler,
    unhealthy: Option<UnboundedReceiver<ContainerEvent>>,
    budget: RestartBudget,
    seen: Seen,
}

impl<S: EventSource> EventLoop<S> {
    /// `unhealthy` carries the unhealthy containers reconciles find.
    pub fn new(
        source: S,
        registry: Registry,
        scheduler: Scheduler,
        unhealthy: Option<UnboundedReceiver<ContainerEvent>>,
    ) -> Self {
        EventLoop {
            source,
            registry,
            scheduler,
            unhealthy,
            budget: RestartBudget::default(),
            seen: Seen::default(),
        }
    }

    /// Follows events until `cancel` fires, re-subscribing from the last event seen whenever the
    /// engine's stream breaks.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut reports = self.unhealthy.take();
        let mut since = unix_nanos();
        let mut outage: Option<Outage> = None;
        loop {
            if let Some(cut) = &mut outage
                && !self.wait_for_engine(cut, &cancel).await
            {
                return;
            }
            let events = self.source.subscribe(since);
            let followed = self.follow(events, &mut since, &mut outage, &mut reports, &cancel);
            let Some(failure) = followed.await else {
                return;
            };
            if outage.is_none() {
                warn!(error = %failure, "lost the engine's event stream; reconnecting (events of the gap are replayed or the deployments re-checked)");
                outage = Some(Outage::begin());
            } else {
                debug!(error = %failure, "the engine's event stream failed again right after reconnecting");
            }
        }
    }

    /// Handles `events` (and the polls' reports) until the stream breaks, returning why, or `None`
    /// when cancelled. After an outage, the stream counts as back once it delivered an event or
    /// stayed up for [`CONFIRM_AFTER`]; then every deployment is re-checked.
    async fn follow(
        &mut self,
        mut events: BoxStream<'static, Result<ContainerEvent, DockerError>>,
        since: &mut i64,
        outage: &mut Option<Outage>,
        reports: &mut Option<UnboundedReceiver<ContainerEvent>>,
        cancel: &CancellationToken,
    ) -> Option<String> {
        let confirm = outage
            .is_some()
            .then(|| tokio::time::Instant::now() + CONFIRM_AFTER);
        let confirmed = sleep_until(confirm);
        tokio::pin!(confirmed);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return None,
                next = events.next() => match next {
                    Some(Ok(event)) => {
                        self.stream_is_back(outage);
                        *since = (*since).max(event_nanos(&event));
                        if self.seen.first_time(&event) {
                            self.handle(event).await;
                        } else {
                            debug!(container = %short_id(&event.id), action = %event.action, "event replayed after a reconnect; already handled");
                        }
                    }
                    Some(Err(e)) => return Some(e.to_string()),
                    None => return Some("the engine closed it".to_string()),
                },
                _ = &mut confirmed, if outage.is_some() => self.stream_is_back(outage),
                Some(report) = next_report(reports) => self.handle(report).await,
            }
        }
    }

    /// Ends `outage`, if any: re-checks every deployment, since the engine may not have replayed
    /// every event of the gap.
    fn stream_is_back(&self, outage: &mut Option<Outage>) {
        if let Some(cut) = outage.take() {
            self.recheck_everything(&cut);
        }
    }

    /// Waits until the engine answers, the delay between attempts growing over the whole `outage`
    /// up to [`RETRY_MAX`]; false when cancelled first.
    async fn wait_for_engine(&self, outage: &mut Outage, cancel: &CancellationToken) -> bool {
        loop {
            let delay = outage.next_delay();
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            let ping = tokio::time::timeout(PING_TIMEOUT, self.source.ping());
            let answer = tokio::select! {
                _ = cancel.cancelled() => return false,
                answer = ping => answer,
            };
            match answer {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => debug!(error = %e, "the engine does not answer yet"),
                Err(_) => debug!("the engine does not answer yet (ping timed out)"),
            }
        }
    }

    /// The stream is back after `cut`: re-check every known repository against its last known good
    /// state, since the engine may not have replayed every event of the gap.
    fn recheck_everything(&self, cut: &Outage) {
        let polls = self.registry.polls();
        info!(
            outage_secs = cut.started.elapsed().as_secs_f64(),
            repositories = polls.len(),
            "the engine's event stream is back; re-checking every deployment against its last known good state"
        );
        for poll in polls {
            self.scheduler.enqueue(poll, Reason::Reconnect);
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
            debug!(%project, container = %short_id(&event.id), action, "event caused by doco-cd's own action; ignored");
            return;
        }
        if let Some(service) = &event.service
            && self.registry.is_left_alone(project, service)
        {
            debug!(%project, %service, container = %short_id(&event.id), action,
                "event of a scheduled job, or of a service a job run holds stopped; ignored");
            return;
        }
        if is_restart_action(action) {
            self.restart(&event, action, &target).await;
        } else {
            info!(%project, service = event.service.as_deref().unwrap_or_default(), container = %short_id(&event.id), action,
                "event: bringing the deployment back to its last known good state");
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
        let settings = &target.reconciliation;
        let project = event.project.as_deref().unwrap_or_default();
        if action == "unhealthy"
            && !self.budget.allow(
                &event.id,
                // tokio's clock, so that a paused clock moves the window in tests.
                tokio::time::Instant::now().into_std(),
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
        if let Err(e) = self.source.restart(&event.id, timeout, signal).await {
            warn!(%project, container = %short_id(&event.id), error = %e, "restart after an event failed");
        }
    }
}

/// The engine's time of `event` in nanoseconds (from its seconds when the engine sent no nanos).
fn event_nanos(event: &ContainerEvent) -> i64 {
    if event.time_nano != 0 {
        event.time_nano
    } else {
        event.time.saturating_mul(1_000_000_000)
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next unhealthy container a poll reported; pending forever without a report channel.
async fn next_report(
    reports: &mut Option<UnboundedReceiver<ContainerEvent>>,
) -> Option<ContainerEvent> {
    match reports {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use doco_config::{PollConfig, ReconciliationConfig};
    use tokio::sync::mpsc;

    use super::*;
    use crate::scheduler::Request;

    /// How many events the fake engine replays, like the real one.
    const REPLAY_BUFFER: usize = 256;

    type Item = Result<ContainerEvent, DockerError>;

    /// An in-memory engine: a history of events it replays from `since` (its last 256 only), live
    /// subscribers, a switch that cuts every connection, and a record of restarts.
    #[derive(Clone, Default)]
    struct FakeEngine {
        state: Arc<Mutex<FakeState>>,
    }

    #[derive(Default)]
    struct FakeState {
        history: Vec<ContainerEvent>,
        live: Vec<mpsc::UnboundedSender<Item>>,
        down: bool,
        restarts: Vec<String>,
        subscriptions: Vec<i64>,
        pings: usize,
    }

    fn unreachable() -> DockerError {
        DockerError::Unreachable {
            host: "unix:///fake.sock".into(),
            context: "follow container events".into(),
            source: bollard::errors::Error::RequestTimeoutError,
        }
    }

    impl FakeEngine {
        /// The engine records `action` of container `id` of `project`/`web` now, and sends it.
        fn emit(&self, id: &str, project: &str, action: &str) -> ContainerEvent {
            let mut state = self.state.lock().unwrap();
            let last = state.history.last().map_or(0, |e| e.time_nano);
            let time_nano = unix_nanos().max(last + 1);
            let event = ContainerEvent {
                action: action.into(),
                id: id.into(),
                project: Some(project.into()),
                service: Some("web".into()),
                time: time_nano / 1_000_000_000,
                time_nano,
            };
            state.history.push(event.clone());
            state.live.retain(|tx| tx.send(Ok(event.clone())).is_ok());
            event
        }

        fn cut(&self) {
            let mut state = self.state.lock().unwrap();
            state.down = true;
            for tx in state.live.drain(..) {
                let _ = tx.send(Err(unreachable()));
            }
        }

        fn restore(&self) {
            self.state.lock().unwrap().down = false;
        }

        fn restarts(&self) -> Vec<String> {
            self.state.lock().unwrap().restarts.clone()
        }

        fn pings(&self) -> usize {
            self.state.lock().unwrap().pings
        }

        fn subscriptions(&self) -> Vec<i64> {
            self.state.lock().unwrap().subscriptions.clone()
        }
    }

    impl EventSource for FakeEngine {
        fn ping(&self) -> BoxFuture<'_, Result<(), DockerError>> {
            let mut state = self.state.lock().unwrap();
            state.pings += 1;
            let down = state.down;
            Box::pin(async move { if down { Err(unreachable()) } else { Ok(()) } })
        }

        fn subscribe(&self, since_nanos: i64) -> BoxStream<'static, Item> {
            let mut state = self.state.lock().unwrap();
            state.subscriptions.push(since_nanos);
            if state.down {
                return futures_util::stream::once(async { Err(unreachable()) }).boxed();
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let buffered = state.history.len().saturating_sub(REPLAY_BUFFER);
            for event in &state.history[buffered..] {
                if event.time_nano >= since_nanos {
                    let _ = tx.send(Ok(event.clone()));
                }
            }
            state.live.push(tx);
            futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
            .boxed()
        }

        /// Restarts like the engine: the stop it causes is an event, sent while doco-cd's guard is
        /// held.
        fn restart<'a>(
            &'a self,
            id: &'a str,
            _timeout_secs: i32,
            _signal: Option<&'a str>,
        ) -> BoxFuture<'a, Result<(), DockerError>> {
            let project = {
                let mut state = self.state.lock().unwrap();
                state.restarts.push(id.to_string());
                state
                    .history
                    .iter()
                    .rev()
                    .find(|e| e.id == id)
                    .and_then(|e| e.project.clone())
            };
            self.emit(id, project.as_deref().unwrap_or_default(), "stop");
            Box::pin(async { Ok(()) })
        }
    }

    fn poll(url: &str) -> PollConfig {
        PollConfig {
            url: url.into(),
            reference: "main".into(),
            ..PollConfig::default()
        }
    }

    fn target(poll: &PollConfig, events: &[&str]) -> EventTarget {
        EventTarget {
            poll: poll.clone(),
            reconciliation: ReconciliationConfig {
                events: events.iter().map(|e| e.to_string()).collect(),
                restart_limit: 2,
                restart_window: 300,
                ..ReconciliationConfig::default()
            },
        }
    }

    /// The event loop on a fake engine, with the scheduler's queue to read what it asked for.
    struct Harness {
        engine: FakeEngine,
        registry: Registry,
        requests: mpsc::UnboundedReceiver<Request>,
        cancel: CancellationToken,
    }

    impl Harness {
        fn start(targets: &[(&str, EventTarget)]) -> Self {
            let registry = Registry::default();
            for (project, target) in targets {
                registry.set_target(project, target.clone());
            }
            let engine = FakeEngine::default();
            let (scheduler, requests) = Scheduler::new();
            let cancel = CancellationToken::new();
            let events = EventLoop::new(engine.clone(), registry.clone(), scheduler, None);
            tokio::spawn(events.run(cancel.clone()));
            Harness {
                engine,
                registry,
                requests,
                cancel,
            }
        }

        /// Lets the loop handle everything pending (the paused clock runs ahead while all wait).
        async fn settle(&self) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }

        /// The requests enqueued so far.
        fn enqueued(&mut self) -> Vec<(PollConfig, Reason)> {
            let mut out = Vec::new();
            while let Ok(request) = self.requests.try_recv() {
                out.push((request.poll, request.reason));
            }
            out
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    #[test]
    fn engine_actions_map_to_upstreams_event_names() {
        assert_eq!(
            normalize_action("health_status: unhealthy"),
            Some("unhealthy")
        );
        assert_eq!(normalize_action("health_status: healthy"), None);
        assert_eq!(normalize_action("die"), Some("die"));
        assert_eq!(normalize_action("destroy"), Some("destroy"));
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

    #[test]
    fn replays_are_recognised_by_container_action_and_time_and_memory_is_bounded() {
        let mut seen = Seen::default();
        let event = |id: &str, action: &str, time_nano: i64| ContainerEvent {
            action: action.into(),
            id: id.into(),
            project: None,
            service: None,
            time: time_nano / 1_000_000_000,
            time_nano,
        };
        assert!(seen.first_time(&event("c1", "stop", 5)));
        assert!(!seen.first_time(&event("c1", "stop", 5)));
        assert!(seen.first_time(&event("c1", "die", 5)));
        assert!(seen.first_time(&event("c2", "stop", 5)));
        assert!(seen.first_time(&event("c1", "stop", 6)));
        assert!(
            seen.first_time(&event("c1", "stop", 0)),
            "no time, no identity"
        );
        assert!(seen.first_time(&event("c1", "stop", 0)));
        for n in 0..REMEMBERED_EVENTS as i64 {
            seen.first_time(&event("other", "die", 100 + n));
        }
        assert_eq!(seen.ids.len(), REMEMBERED_EVENTS);
        assert!(
            seen.first_time(&event("c1", "stop", 5)),
            "forgotten at last"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_replayed_after_a_reconnect_is_not_acted_on_twice() {
        let p = poll("http://git/a.git");
        let mut h = Harness::start(&[("stack", target(&p, &["stop", "die"]))]);
        h.settle().await;
        h.engine.emit("c1", "stack", "stop");
        h.settle().await;
        let die = h.engine.emit("c2", "stack", "die");
        h.settle().await;
        assert_eq!(h.engine.restarts(), vec!["c1"]);
        assert_eq!(h.enqueued().len(), 1);

        h.engine.cut();
        h.settle().await;
        h.engine.restore();
        h.settle().await;
        let subscriptions = h.engine.subscriptions();
        assert_eq!(subscriptions.len(), 2);
        assert_eq!(
            subscriptions[1], die.time_nano,
            "resumes from the last event seen, which the engine replays"
        );
        assert_eq!(h.enqueued(), vec![(p, Reason::Reconnect)], "the die again");
        assert_eq!(h.engine.restarts(), vec!["c1"], "the stop again");

        // The stream works again: a new stop is handled.
        h.engine.emit("c1", "stack", "stop");
        h.settle().await;
        assert_eq!(h.engine.restarts(), vec!["c1", "c1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_rechecks_every_known_repository_once_and_restarts_nothing() {
        let a = poll("http://git/a.git");
        let b = poll("http://git/b.git");
        let mut h = Harness::start(&[
            ("a1", target(&a, &["stop"])),
            ("a2", target(&a, &["stop"])),
            ("b1", target(&b, &["unhealthy"])),
        ]);
        h.settle().await;
        h.engine.emit("c1", "a1", "stop");
        h.settle().await;
        assert_eq!(h.engine.restarts(), vec!["c1"]);

        // A long cut: the loop keeps retrying, and re-checks nothing while the engine is away.
        h.engine.cut();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            h.engine.subscriptions().len(),
            1,
            "it subscribes again only once the engine answers"
        );
        assert!(h.enqueued().is_empty());
        // Meanwhile a container of `a2` is stopped and the engine overflows its replay buffer.
        h.engine.emit("c2", "a2", "stop");
        for n in 0..300 {
            h.engine.emit(&format!("noise{n}"), "someone-else", "start");
        }
        h.engine.restore();
        h.settle().await;

        let mut enqueued = h.enqueued();
        enqueued.sort_by(|x, y| x.0.url.cmp(&y.0.url));
        assert_eq!(
            enqueued,
            vec![
                (a.clone(), Reason::Reconnect),
                (b.clone(), Reason::Reconnect)
            ]
        );
        assert_eq!(
            h.engine.restarts(),
            vec!["c1"],
            "c2's stop was lost with the buffer (the re-check heals it) and c1 is not restarted again"
        );
        h.settle().await;
        assert!(h.enqueued().is_empty(), "one re-check per reconnection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_blip_is_bridged_at_once_and_a_long_outage_is_retried_every_few_seconds() {
        let p = poll("http://git/a.git");
        let mut h = Harness::start(&[("stack", target(&p, &["stop"]))]);
        h.settle().await;
        h.engine.cut();
        h.engine.restore();
        tokio::time::sleep(RETRY_FIRST + CONFIRM_AFTER + Duration::from_millis(10)).await;
        assert_eq!(h.enqueued(), vec![(p.clone(), Reason::Reconnect)]);

        h.engine.cut();
        let pings = h.engine.pings();
        tokio::time::sleep(Duration::from_secs(59)).await;
        // After 0.2, 0.6, 1.4 and 3 s, then every 3 s: at 6, 9, ... 57 s.
        assert_eq!(h.engine.pings() - pings, 4 + 18);
        h.engine.restore();
        tokio::time::sleep(RETRY_MAX + CONFIRM_AFTER).await;
        assert_eq!(h.enqueued(), vec![(p, Reason::Reconnect)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_own_event_is_ignored_and_a_real_stop_right_after_is_restarted() {
        let p = poll("http://git/a.git");
        let mut h = Harness::start(&[("stack", target(&p, &["stop", "die"]))]);
        h.settle().await;
        {
            let _starting = h.registry.begin_container("c1");
            h.engine.emit("c1", "stack", "stop");
            h.engine.emit("c1", "stack", "die");
            h.settle().await;
        }
        assert!(h.engine.restarts().is_empty());
        assert!(h.enqueued().is_empty());

        // A real stop after doco-cd's action ended; then another one right after the restart.
        h.engine.emit("c1", "stack", "stop");
        h.settle().await;
        assert_eq!(h.engine.restarts(), vec!["c1"]);
        h.engine.emit("c1", "stack", "stop");
        h.settle().await;
        assert_eq!(h.engine.restarts(), vec!["c1", "c1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscribed_die_or_destroy_asks_for_a_reconcile_naming_the_service() {
        let p = poll("http://git/a.git");
        let mut h = Harness::start(&[("stack", target(&p, &["die", "destroy"]))]);
        h.settle().await;
        h.engine.emit("c1", "stack", "die");
        h.engine.emit("c1", "stack", "destroy");
        h.engine.emit("c1", "stack", "kill");
        h.engine.emit("c9", "not-ours", "die");
        h.settle().await;
        let event = |action: &str| {
            Reason::Event(EventReason {
                project: "stack".into(),
                service: "web".into(),
                container: "c1".into(),
                action: action.into(),
            })
        };
        assert_eq!(
            h.enqueued(),
            vec![(p.clone(), event("die")), (p, event("destroy"))]
        );
        assert!(h.engine.restarts().is_empty(), "kill is not subscribed");
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_restarts_stop_at_the_limit_until_the_window_slides() {
        let p = poll("http://git/a.git");
        let h = Harness::start(&[("stack", target(&p, &["unhealthy"]))]);
        h.settle().await;
        for _ in 0..3 {
            h.engine.emit("c1", "stack", "health_status: unhealthy");
            h.settle().await;
        }
        assert_eq!(h.engine.restarts().len(), 2, "restart_limit is 2");
        tokio::time::sleep(Duration::from_secs(300)).await;
        h.engine.emit("c1", "stack", "health_status: unhealthy");
        h.settle().await;
        assert_eq!(h.engine.restarts().len(), 3, "the window slid");
    }
}
