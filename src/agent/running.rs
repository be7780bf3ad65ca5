//! The registry of running turns: their leases in the store, the cancellers
//! interrupts, deadlines and shutdown go through, and the tasks shutdown waits for.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::domain::SessionId;
use crate::error::ApiError;
use crate::store::{DynStore, LeaseOutcome, QueuedMessage, Renewal};

/// How long a turn's lease lives without renewal: a crashed instance's
/// session becomes usable again after this.
const LEASE: Duration = Duration::from_secs(30);
/// Also how soon an interrupt sent to another instance takes effect.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long an interrupt waits for the turn to save its history.
const INTERRUPT_WAIT: Duration = Duration::from_secs(15);
/// How long cancelled turns get at shutdown to save what they did (a few
/// store writes); with the default grace of 8 s this ends within Docker's 10 s.
const SHUTDOWN_SAVE_WAIT: Duration = Duration::from_secs(2);

/// Why a turn was cancelled from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cancel {
    Interrupted,
    TimedOut,
    Shutdown,
}

/// Cancels a turn and remembers the first reason given, whoever cancels it
/// (interrupt, deadline, lease renewal, shutdown).
#[derive(Clone, Default)]
pub(super) struct Canceller {
    pub(super) token: CancellationToken,
    reason: Arc<Mutex<Option<Cancel>>>,
}

impl Canceller {
    pub(super) fn cancel(&self, why: Cancel) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
        self.token.cancel();
    }

    pub(super) fn reason(&self) -> Option<Cancel> {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running turn, as seen by whoever may cancel it.
struct Running {
    canceller: Canceller,
    finished: watch::Receiver<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InterruptOutcome {
    #[schema(value_type = String)]
    pub session_id: SessionId,
    /// Always `true`: the running turn was cancelled.
    pub interrupted: bool,
    /// Whether the turn had wound down (history saved) when this answered.
    pub finished: bool,
}

/// A turn's place in the registry, from taking its lease to releasing it.
pub(super) struct Registration {
    pub(super) holder: Uuid,
    pub(super) canceller: Canceller,
    finished: watch::Sender<bool>,
}

impl Registration {
    /// Tells interrupts waiting for the turn that it has wound down.
    pub(super) fn finished(self) {
        let _ = self.finished.send(true);
    }
}

pub(super) struct RunningTurns {
    store: DynStore,
    turns: Mutex<HashMap<SessionId, Running>>,
    tasks: TaskTracker,
}

impl RunningTurns {
    pub(super) fn new(store: DynStore) -> Self {
        Self {
            store,
            turns: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        }
    }

    /// Turns running in this process.
    pub(super) fn len(&self) -> usize {
        self.turns().len()
    }

    fn turns(&self) -> MutexGuard<'_, HashMap<SessionId, Running>> {
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the session's turn lease and registers the turn here.
    pub(super) async fn register(&self, id: SessionId) -> Result<Registration, ApiError> {
        let holder = Uuid::new_v4();
        match self.store.acquire_turn(id, holder, LEASE).await? {
            LeaseOutcome::Acquired => {}
            LeaseOutcome::Busy => return Err(ApiError::SessionBusy),
            LeaseOutcome::NotFound => return Err(ApiError::SessionNotFound),
        }
        Ok(self.adopt(id, holder))
    }

    /// Registers a turn here under a lease `holder` already has (the turn
    /// before it passed it on to a queued message).
    pub(super) fn adopt(&self, id: SessionId, holder: Uuid) -> Registration {
        let canceller = Canceller::default();
        let (finished, finished_rx) = watch::channel(false);
        self.turns().insert(
            id,
            Running {
                canceller: canceller.clone(),
                finished: finished_rx,
            },
        );
        Registration {
            holder,
            canceller,
            finished,
        }
    }

    /// Runs a registered turn's task, which shutdown waits for.
    pub(super) fn spawn(&self, turn: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(turn);
    }

    /// Renews the lease in the background until the returned task is
    /// aborted, cancelling the turn when an interrupt was asked for elsewhere.
    pub(super) fn keep_lease(&self, id: SessionId, registration: &Registration) -> JoinHandle<()> {
        let store = self.store.clone();
        let holder = registration.holder;
        let canceller = registration.canceller.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.renew_turn(id, holder, LEASE).await {
                    Ok(Renewal::Held) => {}
                    Ok(Renewal::InterruptRequested) => canceller.cancel(Cancel::Interrupted),
                    Ok(Renewal::Lost) => {
                        tracing::warn!("the turn lost its lease (session deleted or lease lapsed)");
                    }
                    Err(err) => tracing::warn!(error = %err, "could not renew the turn lease"),
                }
            }
        })
    }

    /// Releases the lease and forgets the turn.
    pub(super) async fn release(&self, id: SessionId, registration: &Registration) {
        if let Err(err) = self.store.release_turn(id, registration.holder).await {
            tracing::warn!(error = %err, "could not release the turn lease");
        }
        self.turns().remove(&id);
    }

    /// Ends a turn's hold on the session: the next queued message, for which
    /// the lease is kept, or `None` with the lease released. Forgets the
    /// turn either way. At shutdown queued messages stay for a later turn.
    pub(super) async fn release_or_next(
        &self,
        id: SessionId,
        registration: &Registration,
    ) -> Option<QueuedMessage> {
        if self.tasks.is_closed() {
            self.release(id, registration).await;
            return None;
        }
        let next = match self
            .store
            .next_queued_or_release(id, registration.holder)
            .await
        {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(error = %err, "could not take the next queued message");
                self.release(id, registration).await;
                return None;
            }
        };
        self.turns().remove(&id);
        next
    }

    /// Cancels the session's running turn and waits (briefly) for it to save
    /// its history.
    pub(super) async fn interrupt(&self, id: SessionId) -> Result<InterruptOutcome, ApiError> {
        let finished = self.turns().get(&id).map(|turn| {
            turn.canceller.cancel(Cancel::Interrupted);
            turn.finished.clone()
        });
        let Some(mut finished) = finished else {
            return self.interrupt_elsewhere(id).await;
        };
        let done = tokio::time::timeout(INTERRUPT_WAIT, finished.wait_for(|f| *f))
            .await
            .is_ok_and(|r| r.is_ok());
        Ok(InterruptOutcome {
            session_id: id,
            interrupted: true,
            finished: done,
        })
    }

    /// The turn, if any, runs on another instance sharing the database: flag
    /// it there (its holder sees the flag when it renews its lease) and wait
    /// for the lease to be released.
    async fn interrupt_elsewhere(&self, id: SessionId) -> Result<InterruptOutcome, ApiError> {
        if !self.store.request_interrupt(id).await? {
            self.store.get(id).await?.ok_or(ApiError::SessionNotFound)?;
            return Err(ApiError::NoTurnRunning);
        }
        let deadline = tokio::time::Instant::now() + INTERRUPT_WAIT;
        let mut finished = false;
        while tokio::time::Instant::now() < deadline {
            match self.store.get(id).await? {
                Some(session) if session.turn_running => {}
                _ => {
                    finished = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(InterruptOutcome {
            session_id: id,
            interrupted: true,
            finished,
        })
    }

    /// Stops the session's turn if it runs here (the session is being deleted).
    pub(super) fn cancel_local(&self, id: SessionId) {
        if let Some(turn) = self.turns().get(&id) {
            turn.canceller.cancel(Cancel::Interrupted);
        }
    }

    /// Lets running turns finish for up to `grace`, then cancels the rest and
    /// waits (briefly) for them to save their history.
    pub(super) async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(
            turns = self.len(),
            "cancelling turns still running at shutdown"
        );
        for turn in self.turns().values() {
            turn.canceller.cancel(Cancel::Shutdown);
        }
        let _ = tokio::time::timeout(SHUTDOWN_SAVE_WAIT, self.tasks.wait()).await;
    }
}
