//! doco-cd's view of the engine's compose containers, kept current by the engine's event stream (the
//! reflector of kube-runtime). A quiet poll reads the view instead of listing every container on the
//! engine, so its cost does not grow with the containers of other repositories, or of other tools.
//!
//! The view is filled by one listing, then each event of a compose container refreshes that
//! container alone (one listing filtered by its id). The stream is followed from the instant the
//! listing started, so nothing between the two is missed. While the stream is down the view is not
//! current, and reads list the engine as before; a reconnect lists again. Reads after doco-cd's own
//! changes (a deploy waiting for its containers) do not use the view: they list, so they never act
//! on a state a few milliseconds old.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::engine::by_project;
use crate::{ContainerInfo, DockerError, Engine};

/// The wait before following the engine again after the stream broke.
const RETRY: Duration = Duration::from_secs(1);

/// The engine's compose containers, as the event stream keeps them.
#[derive(Debug, Clone)]
pub struct ContainerView {
    engine: Engine,
    state: Arc<Mutex<ViewState>>,
}

#[derive(Debug, Default)]
struct ViewState {
    containers: BTreeMap<String, ContainerInfo>,
    /// Whether the stream is followed: the view holds what the engine holds.
    current: bool,
}

impl ContainerView {
    /// A view of `engine`'s compose containers; it is current once [`ContainerView::run`] follows the
    /// engine.
    pub fn new(engine: Engine) -> ContainerView {
        ContainerView {
            engine,
            state: Arc::default(),
        }
    }

    /// The compose containers by project: from the view while it is current (no Engine API call),
    /// else listed from the engine.
    pub async fn containers(&self) -> Result<BTreeMap<String, Vec<ContainerInfo>>, DockerError> {
        {
            let state = self.lock();
            if state.current {
                return Ok(by_project(state.containers.values().cloned()));
            }
        }
        self.engine.compose_containers().await
    }

    /// Whether reads come from the view.
    pub fn is_current(&self) -> bool {
        self.lock().current
    }

    /// Keeps the view current until `cancel`: lists, follows the events, and lists again after
    /// every break of the stream.
    pub async fn run(&self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            if let Err(e) = self.follow(&cancel).await {
                tracing::debug!(error = %e, "the container view stopped following the engine; polls list containers until it is back");
            }
            self.lock().current = false;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// One listing, then the events from its start until the stream breaks or `cancel`.
    async fn follow(&self, cancel: &CancellationToken) -> Result<(), DockerError> {
        let since = unix_nanos();
        let listed = self.engine.compose_containers().await?;
        let mut events = Box::pin(self.engine.compose_events(since));
        {
            let mut state = self.lock();
            state.containers = listed
                .into_values()
                .flatten()
                .map(|c| (c.id.clone(), c))
                .collect();
            state.current = true;
        }
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                event = events.next() => event,
            };
            match event {
                Some(Ok(event)) => self.refresh(&event.id).await?,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }

    /// Reads container `id` again after one of its events.
    async fn refresh(&self, id: &str) -> Result<(), DockerError> {
        let container = self.engine.compose_container(id).await?;
        let mut state = self.lock();
        match container {
            Some(container) => state.containers.insert(id.to_string(), container),
            None => state.containers.remove(id),
        };
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ViewState> {
        // Every update is one statement on the map or the flag: it stays consistent after a panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
