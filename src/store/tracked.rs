//! Remembers that the store refused a write (disk full, read-only, gone), so
//! `/health` reports it until a probe write succeeds again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    Answering, Changed, DailyUsage, DynStore, ForkPoint, LeaseOutcome, Limits, NewMessage,
    NewSession, PersonRequest, QueuedMessage, Renewal, RequestKind, Session, SessionChange,
    SessionEvent, SessionKey, SessionStore, StoreError, StoredKey, StoredMessage, Todo, TurnEnded,
    TurnRecord, UsageTotals,
};
use crate::config::{EventRetention, StorageKind};
use crate::domain::{SessionId, UserId};

/// A store whose failed writes are remembered. Reads answering is not
/// enough for `/health`: a full disk keeps serving them while every new
/// message fails.
pub struct WriteTracked {
    inner: DynStore,
    failing: AtomicBool,
}

impl WriteTracked {
    pub fn wrap(inner: DynStore) -> DynStore {
        Arc::new(Self {
            inner,
            failing: AtomicBool::new(false),
        })
    }

    /// Passes a write's result through, remembering an outage. Only a probe
    /// clears it: a write that changed nothing proves nothing.
    fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Unavailable(why)) = &result
            && !self.failing.swap(true, Ordering::SeqCst)
        {
            tracing::error!(error = %why, "session store refused a write; /health reports unhealthy until writes succeed");
        }
        result
    }
}

#[async_trait]
impl SessionStore for WriteTracked {
    fn kind(&self) -> StorageKind {
        self.inner.kind()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        crate::metrics::store_query("ping", self.inner.ping()).await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let result = crate::metrics::store_query("probe_write", self.inner.probe_write()).await;
        if result.is_ok() && self.failing.swap(false, Ordering::SeqCst) {
            tracing::info!("session store accepts writes again");
        }
        result
    }

    fn writes_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    async fn create(&self, new: NewSession, limits: Limits) -> Result<Session, StoreError> {
        self.observe(crate::metrics::store_query("create", self.inner.create(new, limits)).await)
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        crate::metrics::store_query("get", self.inner.get(id)).await
    }

    async fn list_page(
        &self,
        user: Option<&UserId>,
        after: Option<SessionKey>,
        limit: Option<u64>,
    ) -> Result<Vec<SessionKey>, StoreError> {
        crate::metrics::store_query("list_page", self.inner.list_page(user, after, limit)).await
    }

    async fn count_live(&self) -> Result<u64, StoreError> {
        crate::metrics::store_query("count_live", self.inner.count_live()).await
    }

    async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        self.observe(crate::metrics::store_query("delete", self.inner.delete(id)).await)
    }

    async fn touch(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.observe(crate::metrics::store_query("touch", self.inner.touch(id)).await)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.observe(crate::metrics::store_query("purge_expired", self.inner.purge_expired()).await)
    }

    async fn append_messages(
        &self,
        id: SessionId,
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query(
                "append_messages",
                self.inner.append_messages(id, messages),
            )
            .await,
        )
    }

    async fn save_message_at(
        &self,
        id: SessionId,
        seq: Option<i64>,
        message: &NewMessage,
    ) -> Result<i64, StoreError> {
        self.observe(
            crate::metrics::store_query(
                "save_message_at",
                self.inner.save_message_at(id, seq, message),
            )
            .await,
        )
    }

    async fn messages_after(
        &self,
        id: SessionId,
        after_seq: i64,
        limit: Option<u64>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        crate::metrics::store_query(
            "messages_after",
            self.inner.messages_after(id, after_seq, limit),
        )
        .await
    }

    async fn change(&self, id: SessionId, change: SessionChange) -> Result<Changed, StoreError> {
        self.observe(crate::metrics::store_query("change", self.inner.change(id, change)).await)
    }

    async fn fork(
        &self,
        from: ForkPoint,
        new: NewSession,
        todos: &[Todo],
        limits: Limits,
    ) -> Result<Session, StoreError> {
        self.observe(
            crate::metrics::store_query("fork", self.inner.fork(from, new, todos, limits)).await,
        )
    }

    async fn record_usage(
        &self,
        id: SessionId,
        usage: UsageTotals,
        user_messages: u64,
    ) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query(
                "record_usage",
                self.inner.record_usage(id, usage, user_messages),
            )
            .await,
        )
    }

    async fn acquire_turn(
        &self,
        id: SessionId,
        holder: Uuid,
        lease: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.observe(
            crate::metrics::store_query("acquire_turn", self.inner.acquire_turn(id, holder, lease))
                .await,
        )
    }

    async fn renew_turn(
        &self,
        id: SessionId,
        holder: Uuid,
        lease: Duration,
    ) -> Result<Renewal, StoreError> {
        self.observe(
            crate::metrics::store_query("renew_turn", self.inner.renew_turn(id, holder, lease))
                .await,
        )
    }

    async fn request_interrupt(&self, id: SessionId) -> Result<bool, StoreError> {
        self.observe(
            crate::metrics::store_query("request_interrupt", self.inner.request_interrupt(id))
                .await,
        )
    }

    async fn release_turn(&self, id: SessionId, holder: Uuid) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query("release_turn", self.inner.release_turn(id, holder)).await,
        )
    }

    async fn set_todos(&self, id: SessionId, todos: &[Todo]) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query("set_todos", self.inner.set_todos(id, todos)).await,
        )
    }

    async fn add_request(&self, id: SessionId, request: &PersonRequest) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query("add_request", self.inner.add_request(id, request)).await,
        )
    }

    async fn request(
        &self,
        id: SessionId,
        request_id: Uuid,
    ) -> Result<Option<PersonRequest>, StoreError> {
        crate::metrics::store_query("request", self.inner.request(id, request_id)).await
    }

    async fn pending_requests(
        &self,
        id: SessionId,
        kind: RequestKind,
    ) -> Result<Vec<PersonRequest>, StoreError> {
        crate::metrics::store_query("pending_requests", self.inner.pending_requests(id, kind)).await
    }

    async fn answer_request(
        &self,
        id: SessionId,
        request_id: Uuid,
        answer: &serde_json::Value,
    ) -> Result<Answering, StoreError> {
        self.observe(
            crate::metrics::store_query(
                "answer_request",
                self.inner.answer_request(id, request_id, answer),
            )
            .await,
        )
    }

    async fn allow_rules(&self, id: SessionId) -> Result<Vec<String>, StoreError> {
        crate::metrics::store_query("allow_rules", self.inner.allow_rules(id)).await
    }

    async fn add_allow_rule(&self, id: SessionId, rule: &str) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query("add_allow_rule", self.inner.add_allow_rule(id, rule))
                .await,
        )
    }

    async fn enqueue_message(
        &self,
        id: SessionId,
        message: &QueuedMessage,
    ) -> Result<Option<u64>, StoreError> {
        self.observe(
            crate::metrics::store_query("enqueue_message", self.inner.enqueue_message(id, message))
                .await,
        )
    }

    async fn next_queued_or_release(
        &self,
        id: SessionId,
        holder: Uuid,
    ) -> Result<Option<QueuedMessage>, StoreError> {
        self.observe(
            crate::metrics::store_query(
                "next_queued_or_release",
                self.inner.next_queued_or_release(id, holder),
            )
            .await,
        )
    }

    async fn begin_turn(&self, id: SessionId, turn: Uuid) -> Result<u64, StoreError> {
        self.observe(
            crate::metrics::store_query("begin_turn", self.inner.begin_turn(id, turn)).await,
        )
    }

    async fn append_events(
        &self,
        id: SessionId,
        turn: Uuid,
        events: &[SessionEvent],
    ) -> Result<(), StoreError> {
        self.observe(
            crate::metrics::store_query(
                "append_events",
                self.inner.append_events(id, turn, events),
            )
            .await,
        )
    }

    async fn finish_turn(
        &self,
        id: SessionId,
        turn: Uuid,
        events: &[SessionEvent],
        ended: &TurnEnded,
        retention: &EventRetention,
    ) -> Result<(), StoreError> {
        self.observe(
            self.inner
                .finish_turn(id, turn, events, ended, retention)
                .await,
        )
    }

    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, StoreError> {
        crate::metrics::store_query("events_after", self.inner.events_after(id, after, limit)).await
    }

    async fn turn(&self, id: SessionId, turn: Uuid) -> Result<Option<TurnRecord>, StoreError> {
        crate::metrics::store_query("turn", self.inner.turn(id, turn)).await
    }

    fn event_notices(&self) -> broadcast::Receiver<SessionId> {
        self.inner.event_notices()
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.observe(crate::metrics::store_query("insert_key", self.inner.insert_key(key)).await)
    }

    async fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        crate::metrics::store_query("key", self.inner.key(id)).await
    }

    async fn list_keys(&self, user: Option<&UserId>) -> Result<Vec<StoredKey>, StoreError> {
        crate::metrics::store_query("list_keys", self.inner.list_keys(user)).await
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.observe(crate::metrics::store_query("revoke_key", self.inner.revoke_key(id, at)).await)
    }

    async fn has_keys(&self) -> Result<bool, StoreError> {
        crate::metrics::store_query("has_keys", self.inner.has_keys()).await
    }

    async fn usage_by_day(
        &self,
        user: Option<&UserId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        crate::metrics::store_query("usage_by_day", self.inner.usage_by_day(user, from, to)).await
    }

    async fn count_turn(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.observe(
            crate::metrics::store_query("count_turn", self.inner.count_turn(bucket, window_start))
                .await,
        )
    }
}
