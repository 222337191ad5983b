//! The in-memory run tracker behind `GET /v1/api/runs` and `GET /v1/api/run/{jobID}`, as upstream's:
//! every poll, webhook and API-triggered poll is recorded under its job id (UUIDv7) with its trigger
//! and status (`accepted` → `running` → `succeeded` / `failed` / `skipped`). Memory is bounded: at
//! most 50 runs per trigger (the oldest of that trigger goes first) and none older than 7 days.
//! Nothing is persisted: a restart starts with an empty list, as upstream's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How many runs of one trigger are kept.
pub const MAX_RUNS_PER_TRIGGER: usize = 50;
/// How long a run is kept.
pub const RUN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What started a run, with upstream's names. An API-triggered poll is a `poll`, as upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Webhook,
    Poll,
    /// Upstream's scheduler; never recorded by this build (it has no scheduler), but a valid filter.
    ScheduledJob,
}

impl RunTrigger {
    /// Parses a `trigger` filter (case-insensitive, trimmed); `Ok(None)` when empty.
    pub fn parse_filter(value: &str) -> Result<Option<RunTrigger>, &'static str> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "webhook" => Ok(Some(RunTrigger::Webhook)),
            "poll" => Ok(Some(RunTrigger::Poll)),
            "scheduled_job" => Ok(Some(RunTrigger::ScheduledJob)),
            _ => Err("invalid deployment run trigger"),
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Accepted,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl RunStatus {
    /// Parses a `status` filter (case-insensitive, trimmed); `Ok(None)` when empty.
    pub fn parse_filter(value: &str) -> Result<Option<RunStatus>, &'static str> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "accepted" => Ok(Some(RunStatus::Accepted)),
            "running" => Ok(Some(RunStatus::Running)),
            "succeeded" => Ok(Some(RunStatus::Succeeded)),
            "failed" => Ok(Some(RunStatus::Failed)),
            "skipped" => Ok(Some(RunStatus::Skipped)),
            _ => Err("invalid deployment run status"),
        }
    }
}

/// One run, shaped as upstream's JSON (`omitempty` fields left out when empty).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub job_id: String,
    pub trigger: RunTrigger,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<SystemTime>,
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: SystemTime,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*time))
}

fn rfc3339_opt<S: serde::Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, s),
        None => s.serialize_none(),
    }
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Default)]
struct Inner {
    runs: HashMap<String, Run>,
    /// Per trigger, job ids oldest first.
    order: HashMap<RunTrigger, VecDeque<String>>,
    /// Insertion counter, to order runs created within the same clock tick.
    sequence: HashMap<String, u64>,
    next: u64,
}

/// The tracker; cheap to share behind an `Arc`.
pub struct RunTracker {
    inner: Mutex<Inner>,
    clock: Clock,
}

impl Default for RunTracker {
    fn default() -> Self {
        RunTracker::with_clock(Arc::new(SystemTime::now))
    }
}

impl RunTracker {
    /// A tracker reading time from `clock` (tests move it).
    pub fn with_clock(clock: Clock) -> Self {
        RunTracker {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new run in `accepted`.
    pub fn accept(&self, job_id: &str, trigger: RunTrigger) {
        let now = (self.clock)();
        let mut inner = self.lock();
        expire(&mut inner, now);
        if let Some(run) = inner.runs.get_mut(job_id) {
            run.status = RunStatus::Accepted;
            run.updated_at = now;
            return;
        }
        inner.runs.insert(
            job_id.to_string(),
            Run {
                job_id: job_id.to_string(),
                trigger,
                status: RunStatus::Accepted,
                repository: String::new(),
                target: String::new(),
                revision: String::new(),
                message: String::new(),
                created_at: now,
                started_at: None,
                finished_at: None,
                updated_at: now,
            },
        );
        let sequence = inner.next;
        inner.next += 1;
        inner.sequence.insert(job_id.to_string(), sequence);
        let order = inner.order.entry(trigger).or_default();
        order.push_back(job_id.to_string());
        let evicted = if order.len() > MAX_RUNS_PER_TRIGGER {
            order.pop_front()
        } else {
            None
        };
        if let Some(oldest) = evicted {
            inner.runs.remove(&oldest);
            inner.sequence.remove(&oldest);
        }
    }

    /// Sets the repository, target and revision (empty values leave the field as it was).
    pub fn set_metadata(&self, job_id: &str, repository: &str, target: &str, revision: &str) {
        let now = (self.clock)();
        self.update(job_id, |run| {
            for (field, value) in [
                (&mut run.repository, repository),
                (&mut run.target, target),
                (&mut run.revision, revision),
            ] {
                if !value.trim().is_empty() {
                    *field = value.trim().to_string();
                }
            }
            run.updated_at = now;
        });
    }

    /// The run started.
    pub fn running(&self, job_id: &str) {
        let now = (self.clock)();
        self.update(job_id, |run| {
            run.status = RunStatus::Running;
            run.updated_at = now;
            run.started_at.get_or_insert(now);
        });
    }

    /// The run ended with `status` and `message`.
    pub fn finish(&self, job_id: &str, status: RunStatus, message: &str) {
        let now = (self.clock)();
        self.update(job_id, |run| {
            run.status = status;
            run.message = message.trim().to_string();
            run.updated_at = now;
            run.finished_at = Some(now);
            run.started_at.get_or_insert(now);
        });
    }

    /// Records a run of `trigger` from start to end: accepted and running now, then succeeded or
    /// failed with the error. The hook the poll loops use.
    pub async fn track<E: std::fmt::Display>(
        &self,
        trigger: RunTrigger,
        repository: &str,
        revision: &str,
        run: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        let job_id = uuid::Uuid::now_v7().to_string();
        self.accept(&job_id, trigger);
        self.set_metadata(&job_id, repository, "", revision);
        self.running(&job_id);
        let result = run.await;
        match &result {
            Ok(()) => self.finish(&job_id, RunStatus::Succeeded, "poll completed successfully"),
            Err(e) => self.finish(&job_id, RunStatus::Failed, &e.to_string()),
        }
        result
    }

    fn update(&self, job_id: &str, change: impl FnOnce(&mut Run)) {
        if let Some(run) = self.lock().runs.get_mut(job_id) {
            change(run);
        }
    }

    /// One run.
    pub fn get(&self, job_id: &str) -> Option<Run> {
        self.lock().runs.get(job_id).cloned()
    }

    /// Up to `limit` runs, newest first, optionally of one trigger and one status.
    pub fn list(
        &self,
        limit: usize,
        trigger: Option<RunTrigger>,
        status: Option<RunStatus>,
    ) -> Vec<Run> {
        let now = (self.clock)();
        let mut inner = self.lock();
        expire(&mut inner, now);
        let mut runs: Vec<(&Run, u64)> = inner
            .runs
            .values()
            .filter(|r| trigger.is_none_or(|t| r.trigger == t))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .map(|r| (r, inner.sequence.get(&r.job_id).copied().unwrap_or(0)))
            .collect();
        runs.sort_by(|(a, sa), (b, sb)| b.created_at.cmp(&a.created_at).then(sb.cmp(sa)));
        runs.into_iter()
            .take(limit.max(1))
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// Drops the runs created more than [`RUN_TTL`] before `now`.
fn expire(inner: &mut Inner, now: SystemTime) {
    let Some(cutoff) = now.checked_sub(RUN_TTL) else {
        return;
    };
    let Inner {
        runs,
        order,
        sequence,
        ..
    } = inner;
    for ids in order.values_mut() {
        ids.retain(|id| match runs.get(id) {
            Some(run) if run.created_at > cutoff => true,
            _ => {
                runs.remove(id);
                sequence.remove(id);
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A tracker and a clock the test moves (seconds after an arbitrary epoch).
    fn tracker() -> (RunTracker, Arc<AtomicU64>) {
        let seconds = Arc::new(AtomicU64::new(1_700_000_000));
        let clock = seconds.clone();
        let tracker = RunTracker::with_clock(Arc::new(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst))
        }));
        (tracker, seconds)
    }

    #[test]
    fn a_run_goes_from_accepted_to_running_to_its_end_with_timestamps() {
        let (t, clock) = tracker();
        t.accept("a", RunTrigger::Webhook);
        let run = t.get("a").unwrap();
        assert_eq!(run.status, RunStatus::Accepted);
        assert!(run.started_at.is_none() && run.finished_at.is_none());
        t.set_metadata("a", "owner/repo", "prod", "main");
        clock.fetch_add(5, Ordering::SeqCst);
        t.running("a");
        clock.fetch_add(5, Ordering::SeqCst);
        t.finish("a", RunStatus::Failed, " boom ");
        let run = t.get("a").unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.message, "boom");
        assert_eq!(
            run.started_at
                .unwrap()
                .duration_since(run.created_at)
                .unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            run.finished_at
                .unwrap()
                .duration_since(run.created_at)
                .unwrap(),
            Duration::from_secs(10)
        );
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["trigger"], "webhook");
        assert_eq!(json["status"], "failed");
        assert_eq!(json["repository"], "owner/repo");
        assert_eq!(json["target"], "prod");
        assert_eq!(json["revision"], "main");
        assert!(
            json["created_at"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
        // Empty fields are left out, as upstream's omitempty.
        t.accept("b", RunTrigger::Poll);
        let json = serde_json::to_value(t.get("b").unwrap()).unwrap();
        for absent in [
            "repository",
            "target",
            "revision",
            "message",
            "started_at",
            "finished_at",
        ] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
    }

    #[test]
    fn fifty_runs_are_kept_per_trigger_dropping_the_oldest_of_that_trigger() {
        let (t, clock) = tracker();
        t.accept("webhook-0", RunTrigger::Webhook);
        for i in 0..60 {
            clock.fetch_add(1, Ordering::SeqCst);
            t.accept(&format!("poll-{i}"), RunTrigger::Poll);
        }
        let polls = t.list(200, Some(RunTrigger::Poll), None);
        assert_eq!(polls.len(), MAX_RUNS_PER_TRIGGER);
        assert_eq!(polls[0].job_id, "poll-59", "newest first");
        assert_eq!(polls[49].job_id, "poll-10");
        assert!(t.get("poll-9").is_none());
        // Another trigger's runs are not evicted by polls.
        assert!(t.get("webhook-0").is_some());
        assert_eq!(t.list(200, None, None).len(), 51);
        assert_eq!(t.list(3, None, None).len(), 3);
    }

    #[test]
    fn filters_select_by_trigger_and_status() {
        let (t, _) = tracker();
        t.accept("p1", RunTrigger::Poll);
        t.accept("p2", RunTrigger::Poll);
        t.accept("w1", RunTrigger::Webhook);
        t.finish("p1", RunStatus::Succeeded, "");
        t.finish("w1", RunStatus::Succeeded, "");
        let ids = |runs: Vec<Run>| runs.into_iter().map(|r| r.job_id).collect::<Vec<_>>();
        assert_eq!(
            ids(t.list(50, None, Some(RunStatus::Succeeded))),
            ["w1", "p1"]
        );
        assert_eq!(
            ids(t.list(50, Some(RunTrigger::Poll), Some(RunStatus::Succeeded))),
            ["p1"]
        );
        assert_eq!(ids(t.list(50, Some(RunTrigger::Poll), None)), ["p2", "p1"]);
        assert!(t.list(50, Some(RunTrigger::ScheduledJob), None).is_empty());
        assert_eq!(
            RunStatus::parse_filter(" Failed "),
            Ok(Some(RunStatus::Failed))
        );
        assert_eq!(RunStatus::parse_filter(""), Ok(None));
        assert!(RunStatus::parse_filter("done").is_err());
        assert_eq!(
            RunTrigger::parse_filter("SCHEDULED_JOB"),
            Ok(Some(RunTrigger::ScheduledJob))
        );
        assert!(RunTrigger::parse_filter("api").is_err());
    }

    #[test]
    fn runs_older_than_seven_days_are_dropped() {
        let (t, clock) = tracker();
        t.accept("old", RunTrigger::Poll);
        clock.fetch_add(RUN_TTL.as_secs() - 1, Ordering::SeqCst);
        t.accept("new", RunTrigger::Poll);
        assert_eq!(t.list(50, None, None).len(), 2);
        clock.fetch_add(1, Ordering::SeqCst);
        let runs = t.list(50, None, None);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].job_id, "new");
        assert!(t.get("old").is_none());
    }

    #[tokio::test]
    async fn track_records_a_whole_run() {
        let (t, _) = tracker();
        t.track(RunTrigger::Poll, "r", "main", async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
        let err = t
            .track(RunTrigger::Poll, "r", "main", async {
                Err::<(), _>("no route".to_string())
            })
            .await;
        assert!(err.is_err());
        let runs = t.list(50, Some(RunTrigger::Poll), None);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].status, RunStatus::Failed);
        assert_eq!(runs[0].message, "no route");
        assert_eq!(runs[1].status, RunStatus::Succeeded);
        assert_eq!(runs[1].repository, "r");
        // Job ids are UUIDv7, as everywhere else.
        assert_eq!(
            uuid::Uuid::parse_str(&runs[0].job_id)
                .unwrap()
                .get_version_num(),
            7
        );
    }
}
