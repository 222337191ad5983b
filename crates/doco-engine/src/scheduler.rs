//! The one path every trigger takes: a queue keyed by repository, reference and target that
//! deduplicates requests, and a bounded runner that reconciles them (kube-runtime's `scheduler` and
//! `Runner`).
//!
//! Timers, webhooks, `POST /v1/api/poll/run`, the local refs watcher, engine events, a cut event
//! stream and start-up all [`Scheduler::enqueue`] a [`Request`]. Requests for the same [`RunKey`] merge
//! while they wait: their reasons are kept together and the earliest time wins. A key is never
//! reconciled twice at once; a request that arrives while its key runs waits for that run to end and
//! then runs once, however many arrived meanwhile. So polls never pile up, and a slow reconcile is
//! not replayed for every tick it missed.
//!
//! The reconcile returns the run's result, handed to everyone waiting on it (a webhook with
//! `?wait=true`), and an [`Action`]: when to look again (a failing deployment's backoff).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use doco_config::PollConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::reconciler::{PollError, Trigger};

/// What identifies a reconcile: the repository URL (after `SOURCE_URL_REWRITES`), the reference and
/// the deploy-config target. Built only by [`RunKey::of`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey(String);

impl RunKey {
    /// The key of `poll` (whose URL is already rewritten). `main` and `refs/heads/main` are one key.
    pub fn of(poll: &PollConfig) -> RunKey {
        let reference = doco_config::short_reference(&poll.reference);
        RunKey(format!("{}#{reference}#{}", poll.url, poll.target))
    }

    /// The key as text, for logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a reconcile was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// doco-cd started.
    Startup,
    /// The poll interval passed.
    Timer,
    /// The refs of a local repository changed.
    Refs,
    /// `POST /v1/webhook`.
    Webhook,
    /// `POST /v1/api/poll/run`.
    Api,
    /// An engine event of a container of this repository that its deployment subscribed to.
    Event(EventReason),
    /// The engine's event stream was cut and is back: re-check everything against its last known
    /// good state.
    Reconnect,
    /// A failing deployment's backoff ended.
    Retry,
    /// doco-cd started and no poll follows this repository (it was deployed by webhooks): enforce
    /// its last known good state from the state file.
    Recover,
}

/// The event behind [`Reason::Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventReason {
    /// The compose project.
    pub project: String,
    /// The compose service.
    pub service: String,
    /// The container.
    pub container: String,
    /// upstream's event name (`die`, `destroy`, ...).
    pub action: String,
}

impl Reason {
    /// Whether this reason asks for a look at the source (a fetch); events and a reconnect only ask
    /// for the last known good state to be enforced, which needs neither Git nor the network.
    pub fn reads_source(&self) -> bool {
        !matches!(self, Reason::Event(_) | Reason::Reconnect | Reason::Recover)
    }

    /// How long a request waits for the rest of its burst: the ref files one push writes, the events
    /// of one container going down. Other triggers run at once.
    fn settle(&self) -> Duration {
        match self {
            Reason::Refs => Duration::from_secs(1),
            Reason::Event(_) => Duration::from_millis(250),
            _ => Duration::ZERO,
        }
    }
}

/// What a run's waiters learn: success, or the reconcile's error.
pub type RunResult = Result<(), Arc<PollError>>;

/// What a reconcile asks of the scheduler once it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action {
    /// Reconcile this key again after this long (a backoff ending), unless something else asks first.
    pub requeue_after: Option<Duration>,
}

/// One reconcile to run: the poll configuration and every reason merged into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The repository, reference, target and deployments.
    pub poll: PollConfig,
    /// Why, in arrival order, without repeats.
    pub reasons: Vec<Reason>,
}

impl Run {
    /// Whether the run fetches: any of its reasons asks for the source.
    pub fn reads_source(&self) -> bool {
        self.reasons.iter().any(Reason::reads_source)
    }

    /// upstream's trigger of the run: a webhook when only webhooks asked for it, else a poll.
    pub fn trigger(&self) -> Trigger {
        let only_webhooks =
            !self.reasons.is_empty() && self.reasons.iter().all(|r| *r == Reason::Webhook);
        if only_webhooks {
            Trigger::Webhook
        } else {
            Trigger::Poll
        }
    }

    /// The events among the reasons.
    pub fn events(&self) -> impl Iterator<Item = &EventReason> {
        self.reasons.iter().filter_map(|r| match r {
            Reason::Event(event) => Some(event),
            _ => None,
        })
    }
}

/// A request to reconcile `poll`.
#[derive(Debug)]
pub struct Request {
    /// The poll configuration (URL already rewritten).
    pub poll: PollConfig,
    /// Why.
    pub reason: Reason,
    /// Told the result of the run that handles this request.
    pub done: Option<oneshot::Sender<RunResult>>,
}

/// The sending side of the queue; cheap to clone, one per trigger source.
#[derive(Debug, Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Request>,
}

impl Scheduler {
    /// A scheduler and the queue [`run_scheduler`] drains.
    pub fn new() -> (Scheduler, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Scheduler { tx }, rx)
    }

    /// Asks for a reconcile of `poll` and does not wait for it.
    pub fn enqueue(&self, poll: PollConfig, reason: Reason) {
        // The queue is gone only while shutting down, when nothing runs any more.
        let _ = self.tx.send(Request {
            poll,
            reason,
            done: None,
        });
    }

    /// Asks for a reconcile of `poll` and waits for the run that handles it.
    pub async fn run(&self, poll: PollConfig, reason: Reason) -> RunResult {
        let (done, result) = oneshot::channel();
        let request = Request {
            poll,
            reason,
            done: Some(done),
        };
        if self.tx.send(request).is_err() {
            return Err(Arc::new(PollError::ShuttingDown));
        }
        result
            .await
            .unwrap_or_else(|_| Err(Arc::new(PollError::ShuttingDown)))
    }
}

/// Requests for one key, waiting to run.
struct Pending {
    run: Run,
    at: Instant,
    waiters: Vec<oneshot::Sender<RunResult>>,
}

impl Pending {
    fn merge(&mut self, request: Request, at: Instant) {
        if !self.run.reasons.contains(&request.reason) {
            self.run.reasons.push(request.reason);
        }
        self.waiters.extend(request.done);
        self.at = self.at.min(at);
    }
}

/// A run that ended: its key, who waits for it, its poll configuration, result and action.
type Finished = (
    RunKey,
    Vec<oneshot::Sender<RunResult>>,
    PollConfig,
    RunResult,
    Action,
);

/// Drains `requests` until `cancel` fires, running `reconcile` for each key, at most `concurrency`
/// at once and never one key twice at once. Returns how many runs ended.
pub async fn run_scheduler<F, Fut>(
    mut requests: mpsc::UnboundedReceiver<Request>,
    concurrency: usize,
    cancel: CancellationToken,
    reconcile: F,
) -> u64
where
    F: Fn(Run) -> Fut,
    Fut: Future<Output = (RunResult, Action)> + Send + 'static,
{
    let mut pending: HashMap<RunKey, Pending> = HashMap::new();
    let mut running: HashSet<RunKey> = HashSet::new();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut ended = 0;
    loop {
        while running.len() < concurrency.max(1) {
            let Some(key) = next_ready(&pending, &running) else {
                break;
            };
            let Some(Pending { run, waiters, .. }) = pending.remove(&key) else {
                break;
            };
            running.insert(key.clone());
            let poll = run.poll.clone();
            let work = reconcile(run);
            tasks.spawn(async move {
                let (result, action) = work.await;
                (key, waiters, poll, result, action)
            });
        }
        let wake = earliest_waiting(&pending, &running);
        tokio::select! {
            _ = cancel.cancelled() => return ended,
            request = requests.recv() => match request {
                Some(request) => {
                    let at = Instant::now() + request.reason.settle();
                    add(&mut pending, request, at);
                }
                None if tasks.is_empty() && pending.is_empty() => return ended,
                None => {}
            },
            Some(joined) = tasks.join_next() => {
                ended += 1;
                match joined {
                    Ok((key, waiters, poll, result, action)) => {
                        running.remove(&key);
                        for waiter in waiters {
                            // A waiter that went away (a client hung up) needs no answer.
                            let _ = waiter.send(result.clone());
                        }
                        if let Some(after) = action.requeue_after {
                            let retry = Request { poll, reason: Reason::Retry, done: None };
                            add(&mut pending, retry, Instant::now() + after);
                        }
                    }
                    // A reconcile that panicked: the panic is the caller's fatal error to report.
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            },
            _ = sleep_until(wake) => {}
        }
    }
}

fn add(pending: &mut HashMap<RunKey, Pending>, request: Request, at: Instant) {
    let key = RunKey::of(&request.poll);
    match pending.get_mut(&key) {
        Some(waiting) => waiting.merge(request, at),
        None => {
            let run = Run {
                poll: request.poll,
                reasons: vec![request.reason],
            };
            let waiters = request.done.into_iter().collect();
            pending.insert(key, Pending { run, at, waiters });
        }
    }
}

/// The waiting key whose time has come first, if any has come and it is not running.
fn next_ready(pending: &HashMap<RunKey, Pending>, running: &HashSet<RunKey>) -> Option<RunKey> {
    let now = Instant::now();
    pending
        .iter()
        .filter(|(key, p)| p.at <= now && !running.contains(*key))
        .min_by_key(|(_, p)| p.at)
        .map(|(key, _)| key.clone())
}

/// When the next waiting key that is not running becomes due.
fn earliest_waiting(
    pending: &HashMap<RunKey, Pending>,
    running: &HashSet<RunKey>,
) -> Option<Instant> {
    pending
        .iter()
        .filter(|(key, _)| !running.contains(*key))
        .map(|(_, p)| p.at)
        .min()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Enqueues `poll` every `interval` until `cancel` fires. A tick missed while the scheduler was busy
/// is not replayed: the queue merges it into the request already waiting.
pub async fn run_timer(
    scheduler: Scheduler,
    poll: PollConfig,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => scheduler.enqueue(poll.clone(), Reason::Timer),
        }
    }
}

/// Enqueues `poll` for each signal of a refs watcher, until the watcher stops or `cancel` fires.
pub async fn forward_refs(
    scheduler: Scheduler,
    poll: PollConfig,
    mut changes: mpsc::UnboundedReceiver<()>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            change = changes.recv() => match change {
                Some(()) => scheduler.enqueue(poll.clone(), Reason::Refs),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn poll(url: &str) -> PollConfig {
        PollConfig {
            url: url.into(),
            reference: "main".into(),
            ..PollConfig::default()
        }
    }

    /// Runs the scheduler with a reconcile that takes `duration`, counts runs and the most at once,
    /// and records each run's reasons.
    struct Harness {
        scheduler: Scheduler,
        runs: Arc<Mutex<Vec<Run>>>,
        max_running: Arc<AtomicU32>,
        cancel: CancellationToken,
    }

    fn start(duration: Duration, requeue: Option<Duration>) -> Harness {
        let (scheduler, rx) = Scheduler::new();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicU32::new(0));
        let max_running = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let (r, n, m) = (runs.clone(), running.clone(), max_running.clone());
        tokio::spawn(run_scheduler(rx, 4, cancel.clone(), move |run| {
            let (r, n, m) = (r.clone(), n.clone(), m.clone());
            async move {
                let now = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                let first = r.lock().unwrap().is_empty();
                r.lock().unwrap().push(run);
                tokio::time::sleep(duration).await;
                n.fetch_sub(1, Ordering::SeqCst);
                let action = Action {
                    requeue_after: requeue.filter(|_| first),
                };
                (Ok(()), action)
            }
        }));
        Harness {
            scheduler,
            runs,
            max_running,
            cancel,
        }
    }

    impl Harness {
        fn count(&self) -> usize {
            self.runs.lock().unwrap().len()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reconcile_is_not_run_twice_at_once_nor_replayed_per_tick() {
        let h = start(Duration::from_secs(35), None);
        let p = poll("http://git/a.git");
        h.scheduler.enqueue(p.clone(), Reason::Startup);
        tokio::spawn(run_timer(
            h.scheduler.clone(),
            p,
            Duration::from_secs(10),
            h.cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(h.max_running.load(Ordering::SeqCst), 1);
        // Runs start at 0, 35 and 70, not at every missed 10 s tick.
        assert_eq!(h.count(), 3);
        h.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn every_trigger_of_one_key_merges_into_one_run_and_all_waiters_learn_its_result() {
        let h = start(Duration::from_secs(1), None);
        let p = poll("http://git/a.git");
        // The key is busy, so what follows waits, merged, for one more run.
        h.scheduler.enqueue(p.clone(), Reason::Startup);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let webhook = tokio::spawn({
            let s = h.scheduler.clone();
            let p = PollConfig {
                reference: "refs/heads/main".into(),
                ..p.clone()
            };
            async move { s.run(p, Reason::Webhook).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let api = tokio::spawn({
            let s = h.scheduler.clone();
            let p = p.clone();
            async move { s.run(p, Reason::Api).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.scheduler.enqueue(p.clone(), Reason::Timer);
        h.scheduler.enqueue(p.clone(), Reason::Timer);
        assert!(webhook.await.unwrap().is_ok());
        assert!(api.await.unwrap().is_ok());
        let runs = h.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(
            runs[1].reasons,
            vec![Reason::Webhook, Reason::Api, Reason::Timer]
        );
        assert_eq!(runs[1].trigger(), Trigger::Poll);
        h.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_run_side_by_side() {
        let h = start(Duration::from_secs(10), None);
        h.scheduler.enqueue(poll("http://git/a.git"), Reason::Timer);
        h.scheduler.enqueue(poll("http://git/b.git"), Reason::Timer);
        h.scheduler.enqueue(
            PollConfig {
                target: "nas".into(),
                ..poll("http://git/a.git")
            },
            Reason::Timer,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.max_running.load(Ordering::SeqCst), 3);
        h.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_runs_the_key_again_after_the_delay_with_the_retry_reason() {
        let h = start(Duration::from_secs(1), Some(Duration::from_secs(30)));
        h.scheduler
            .enqueue(poll("http://git/a.git"), Reason::Startup);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(h.count(), 1);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(h.count(), 2);
        assert_eq!(h.runs.lock().unwrap()[1].reasons, vec![Reason::Retry]);
        h.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn events_settle_so_a_burst_makes_one_run_that_reads_no_source() {
        let h = start(Duration::from_millis(10), None);
        let p = poll("http://git/a.git");
        for action in ["kill", "die", "stop"] {
            let event = EventReason {
                project: "p".into(),
                service: "web".into(),
                container: "c1".into(),
                action: action.into(),
            };
            h.scheduler.enqueue(p.clone(), Reason::Event(event));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let runs = h.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].events().count(), 3);
        assert!(!runs[0].reads_source());
        h.cancel.cancel();
    }

    #[test]
    fn a_run_is_a_webhook_only_when_only_webhooks_asked() {
        let run = |reasons| Run {
            poll: poll("x"),
            reasons,
        };
        assert_eq!(run(vec![Reason::Webhook]).trigger(), Trigger::Webhook);
        assert_eq!(
            run(vec![Reason::Webhook, Reason::Timer]).trigger(),
            Trigger::Poll
        );
        assert!(run(vec![Reason::Reconnect, Reason::Timer]).reads_source());
        assert!(!run(vec![Reason::Reconnect]).reads_source());
    }
}
