//! The poll loop of one `POLL_CONFIG` entry.
//!
//! It runs once at start-up, then every interval and whenever a trigger arrives (the refs watcher of a
//! local repository); a burst of triggers makes one poll. With interval 0 only triggers poll. A poll
//! still running when the next one is due is
//! not queued a second time: the loop awaits the poll, and a missed tick is skipped rather than
//! replayed. The loop only ends when cancelled or, for `run_once`, after its first poll; the caller
//! treats any other end (a panic) as fatal, so a poll loop never stops silently.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How a poll loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time between the starts of two polls.
    pub interval: Duration,
    /// Poll once and end.
    pub run_once: bool,
}

/// Runs `poll` on `schedule`, and on each message of `triggers`, until `cancel` fires. Returns how
/// many polls ran.
pub async fn run_poll_loop<F, Fut>(
    schedule: Schedule,
    cancel: CancellationToken,
    mut triggers: Option<UnboundedReceiver<()>>,
    mut poll: F,
) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut runs = 0;
    tokio::select! {
        _ = cancel.cancelled() => return runs,
        _ = poll() => runs += 1,
    }
    if schedule.run_once || (schedule.interval.is_zero() && triggers.is_none()) {
        return runs;
    }
    let mut ticker = (!schedule.interval.is_zero()).then(|| {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + schedule.interval, schedule.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return runs,
            _ = next_tick(&mut ticker) => {}
            _ = next_trigger(&mut triggers) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return runs,
            _ = poll() => runs += 1,
        }
    }
}

async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How long a trigger waits for the rest of its burst (several ref files written by one push, the
/// events of one container going down) and for the engine to settle, before the poll runs.
const TRIGGER_DEBOUNCE: Duration = Duration::from_secs(1);

/// Waits for a trigger, lets its burst settle, and swallows the triggers queued behind it, so a burst
/// makes one poll. A closed channel (the watcher stopped) never fires again.
async fn next_trigger(triggers: &mut Option<UnboundedReceiver<()>>) {
    let Some(rx) = triggers else {
        return std::future::pending().await;
    };
    if rx.recv().await.is_none() {
        *triggers = None;
        return std::future::pending().await;
    }
    tokio::time::sleep(TRIGGER_DEBOUNCE).await;
    while rx.try_recv().is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn polls_at_start_and_then_every_interval() {
        let cancel = CancellationToken::new();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let schedule = Schedule {
            interval: Duration::from_secs(60),
            run_once: false,
        };
        let task = tokio::spawn(run_poll_loop(schedule, cancel.clone(), None, move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "start-up poll");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(count.load(Ordering::SeqCst), 4);
        cancel.cancel();
        assert_eq!(task.await.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_poll_is_not_run_twice_at_once_nor_replayed() {
        let cancel = CancellationToken::new();
        let running = Arc::new(AtomicU32::new(0));
        let max_running = Arc::new(AtomicU32::new(0));
        let count = Arc::new(AtomicU32::new(0));
        let (r, m, c) = (running.clone(), max_running.clone(), count.clone());
        let schedule = Schedule {
            interval: Duration::from_secs(10),
            run_once: false,
        };
        let task = tokio::spawn(run_poll_loop(schedule, cancel.clone(), None, move || {
            let (r, m, c) = (r.clone(), m.clone(), c.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                c.fetch_add(1, Ordering::SeqCst);
                // Each poll takes 35 s: three and a half intervals.
                tokio::time::sleep(Duration::from_secs(35)).await;
                r.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_secs(100)).await;
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(max_running.load(Ordering::SeqCst), 1);
        // Polls start at 0, 35, 70 (and not at every missed 10 s tick).
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn run_once_polls_once() {
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let schedule = Schedule {
            interval: Duration::from_secs(10),
            run_once: true,
        };
        let runs = run_poll_loop(schedule, CancellationToken::new(), None, move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(runs, 1);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_poll_at_once_and_a_burst_makes_one_poll() {
        let cancel = CancellationToken::new();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Interval 0: only the start-up poll and triggers.
        let schedule = Schedule {
            interval: Duration::ZERO,
            run_once: false,
        };
        let task = tokio::spawn(run_poll_loop(
            schedule,
            cancel.clone(),
            Some(rx),
            move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "start-up poll only");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "no timer with interval 0");
        for _ in 0..5 {
            tx.send(()).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "one poll for the burst");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn interval_zero_without_triggers_polls_once() {
        let schedule = Schedule {
            interval: Duration::ZERO,
            run_once: false,
        };
        let runs = run_poll_loop(schedule, CancellationToken::new(), None, || async {}).await;
        assert_eq!(runs, 1);
    }
}
