//! Where sessions and their conversations live: one `SessionStore` trait and
//! its SQLite (also used in memory) and PostgreSQL implementations.

mod postgres;
mod sqlite;
mod tracked;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use tracked::WriteTracked;

use crate::config::{EventRetention, Settings, StorageKind};
use crate::domain::{SessionId, UserId};
use crate::options::SessionOptions;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an I/O error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session limit reached: {0}")]
    LimitReached(String),
    #[error("session not found")]
    NotFound,
    /// Anything else: a bug or corrupt data, logged, never shown.
    #[error("session store error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(ref db) if is_outage(db.as_ref()) => {
                Self::Unavailable(err.to_string())
            }
            sqlx::Error::Database(ref db) if db.is_foreign_key_violation() => Self::NotFound,
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Whether a database error says the store cannot serve right now (it is
/// down, full, read-only or overloaded) rather than that the request or our
/// SQL is wrong: the former is retried by clients, the latter is a bug.
fn is_outage(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        // 08 connection, 53 insufficient resources (53100 disk full),
        // 57 operator intervention (shutdown), 58 system (I/O) errors;
        // 25006: a standby after failover refuses writes.
        return ["08", "53", "57", "58"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "25006";
    }
    // SQLite reports extended result codes; the primary code is the low byte.
    let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(0);
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    const SQLITE_READONLY: i32 = 8;
    const SQLITE_IOERR: i32 = 10;
    const SQLITE_FULL: i32 = 13;
    const SQLITE_CANTOPEN: i32 = 14;
    matches!(
        primary,
        SQLITE_BUSY
            | SQLITE_LOCKED
            | SQLITE_READONLY
            | SQLITE_IOERR
            | SQLITE_FULL
            | SQLITE_CANTOPEN
    )
}

/// Tokens and money spent, per turn or summed over a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct UsageTotals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// US dollars, rounded to micro-dollars (6 decimals) when shown; summed
    /// unrounded.
    #[serde(serialize_with = "serialize_micro_usd")]
    pub cost_usd: f64,
}

/// `usd` rounded to micro-dollars, as responses and logs show costs.
pub fn micro_usd(usd: f64) -> f64 {
    (usd * 1_000_000.0).round() / 1_000_000.0
}

pub fn serialize_micro_usd<S: serde::Serializer>(usd: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(micro_usd(*usd))
}

impl std::ops::AddAssign for UsageTotals {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens += rhs.input_tokens;
        self.output_tokens += rhs.output_tokens;
        self.cache_creation_input_tokens += rhs.cache_creation_input_tokens;
        self.cache_read_input_tokens += rhs.cache_read_input_tokens;
        self.cost_usd += rhs.cost_usd;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub subdir: Option<String>,
    pub cwd: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    /// User messages sent in this session.
    pub message_count: u64,
    pub usage: UsageTotals,
    /// Whether a turn holds the session's lease right now.
    pub turn_running: bool,
    /// The todo list TodoWrite last set, in the model's order.
    pub todos: Vec<Todo>,
    /// What the session chose in place of the service's defaults.
    pub options: SessionOptions,
    /// What the oldest unanswered request of the session asks a person for.
    pub waiting_on: Option<RequestKind>,
    /// Messages queued behind the running turn.
    pub queued: u64,
}

impl Session {
    /// A session as `create` just stored it: no messages, no usage, idle.
    fn created(id: SessionId, new: NewSession, now: DateTime<Utc>) -> Self {
        Self {
            id,
            user_id: new.user_id,
            subdir: new.subdir,
            cwd: new.cwd,
            metadata: new.metadata,
            created_at: now,
            last_active_at: now,
            message_count: 0,
            usage: UsageTotals::default(),
            turn_running: false,
            todos: Vec::new(),
            options: new.options,
            waiting_on: None,
            queued: 0,
        }
    }
}

/// One item of a session's todo list, with Claude Code's field names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Todo {
    /// What is to be done, in the imperative ("Run the tests").
    pub content: String,
    pub status: TodoStatus,
    /// The same task as it is being done ("Running the tests").
    #[serde(rename = "activeForm")]
    pub active_form: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TodoStatus {
    Pending,
    InProgress,
    Completed,
}

impl TodoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// A stored todo list back as values; anything else is corrupt data.
fn todos_from_json(value: Value) -> Result<Vec<Todo>, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Internal(format!("stored todos: {e}")))
}

/// An API key bound to one user, as stored: the secret only as its digest.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    /// The public part of the key, safe to log and show.
    pub id: String,
    pub user_id: UserId,
    pub name: Option<String>,
    /// Lower-case hex SHA-256 of the secret part.
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What one user spent on one UTC day, over all their sessions (deleted
/// ones included).
#[derive(Debug, Clone, PartialEq)]
pub struct DailyUsage {
    pub user_id: UserId,
    pub day: NaiveDate,
    pub usage: UsageTotals,
    /// User messages sent that day.
    pub turns: u64,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: UserId,
    pub subdir: Option<String>,
    pub cwd: String,
    pub metadata: Value,
    pub options: SessionOptions,
}

/// Where a session stands in the list order (oldest first, ties by id):
/// a page of the list starts after one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub created_at: DateTime<Utc>,
    pub id: SessionId,
}

/// What a change to a session between turns found.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    Done(Box<Session>),
    /// A turn holds the session's lease: nothing was changed.
    Busy,
    NotFound,
}

/// A change to a session's options or metadata; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct SessionChange {
    pub options: Option<SessionOptions>,
    pub metadata: Option<Value>,
}

/// Stored options back as values; anything else is corrupt data.
fn options_from_json(value: Value) -> Result<SessionOptions, StoreError> {
    SessionOptions::from_json(value).map_err(StoreError::Internal)
}

/// A fork's conversation: the source's messages up to this `seq` (all
/// when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkPoint {
    pub source: SessionId,
    pub up_to_seq: Option<i64>,
    /// User messages in the copied part, the fork's `message_count`.
    pub message_count: u64,
}

/// 0 means unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_sessions: u64,
    pub max_sessions_per_user: u64,
}

/// One Messages API message (`role` + `content` blocks), as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub seq: i64,
    pub role: String,
    pub content: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub role: String,
    pub content: Value,
}

/// What renewing a turn's lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Held,
    /// Someone asked (possibly on another instance) for the turn to stop.
    InterruptRequested,
    /// The lease lapsed and was taken, or the session is gone.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired,
    Busy,
    NotFound,
}

/// What a turn asks a person for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Whether a tool call may run.
    Permission,
    /// The answers to AskUserQuestion's questions.
    Question,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permission => "permission",
            Self::Question => "question",
        }
    }

    fn parse(raw: &str) -> Result<Self, StoreError> {
        match raw {
            "permission" => Ok(Self::Permission),
            "question" => Ok(Self::Question),
            other => Err(StoreError::Internal(format!(
                "unknown request kind {other}"
            ))),
        }
    }
}

/// A call or question put to a person, with the answer once there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRequest {
    pub id: Uuid,
    pub kind: RequestKind,
    pub tool_use_id: String,
    pub tool_name: String,
    pub tool_input: Value,
    /// Why a person has to decide (empty for questions).
    pub reason: String,
    pub created_at: DateTime<Utc>,
    /// `None` while nobody has answered.
    pub answer: Option<Value>,
}

/// What answering a request found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answering {
    /// This answer is the request's answer.
    Answered,
    /// Someone (or the turn, giving up) answered first; their answer.
    AlreadyAnswered(Value),
    NotFound,
}

/// A message waiting for the running turn to end.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    pub message: String,
    pub timeout: Duration,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    fn kind(&self) -> StorageKind;

    /// Answers only when the database does.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commits (and removes) a small row, to learn whether writes succeed:
    /// a full disk or a read-only database still answers reads.
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// Whether a write has failed because the store could not take it, and no
    /// `probe_write` has succeeded since (see [`WriteTracked`]).
    fn writes_failing(&self) -> bool {
        false
    }

    /// Inserts a session unless a limit is reached (checked atomically).
    async fn create(&self, new: NewSession, limits: Limits) -> Result<Session, StoreError>;

    /// A live session; expired and deleted ones are `None`.
    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// Live session ids, oldest first, all users or one.
    async fn list(&self, user: Option<&UserId>) -> Result<Vec<SessionId>, StoreError> {
        let keys = self.list_page(user, None, None).await?;
        Ok(keys.into_iter().map(|k| k.id).collect())
    }

    /// Live sessions in list order after `after` (from the start when
    /// `None`), at most `limit` of them (all when `None`).
    async fn list_page(
        &self,
        user: Option<&UserId>,
        after: Option<SessionKey>,
        limit: Option<u64>,
    ) -> Result<Vec<SessionKey>, StoreError>;

    async fn count_live(&self) -> Result<u64, StoreError>;

    /// Deletes a session and its conversation; `false` when there was none.
    async fn delete(&self, id: SessionId) -> Result<bool, StoreError>;

    /// Marks a live session active now.
    async fn touch(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// Deletes sessions idle longer than the TTL; returns how many.
    async fn purge_expired(&self) -> Result<u64, StoreError>;

    /// Appends messages at the end of the conversation, in order.
    async fn append_messages(
        &self,
        id: SessionId,
        messages: &[NewMessage],
    ) -> Result<(), StoreError>;

    /// Writes the assistant message a model call is still streaming: with
    /// `seq` `None` it is appended, otherwise it overwrites message `seq`
    /// (the same message, grown or finished). Returns the message's `seq`.
    async fn save_message_at(
        &self,
        id: SessionId,
        seq: Option<i64>,
        message: &NewMessage,
    ) -> Result<i64, StoreError>;

    /// The whole conversation, in order.
    async fn messages(&self, id: SessionId) -> Result<Vec<StoredMessage>, StoreError> {
        self.messages_after(id, 0, None).await
    }

    /// The messages whose `seq` is above `after_seq`, in order, at most
    /// `limit` of them (all when `None`).
    async fn messages_after(
        &self,
        id: SessionId,
        after_seq: i64,
        limit: Option<u64>,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Changes a live session's options or metadata unless a turn holds
    /// its lease (checked in the same statement as the write).
    async fn change(&self, id: SessionId, change: SessionChange) -> Result<Changed, StoreError>;

    /// Creates a session (limits checked as in `create`) whose
    /// conversation is a copy of `from`'s up to its fork point, with
    /// `todos` as its todo list, in one transaction. `NotFound` when the
    /// source is gone.
    async fn fork(
        &self,
        from: ForkPoint,
        new: NewSession,
        todos: &[Todo],
        limits: Limits,
    ) -> Result<Session, StoreError>;

    /// Adds a turn's usage and user-message count to the session's totals.
    async fn record_usage(
        &self,
        id: SessionId,
        usage: UsageTotals,
        user_messages: u64,
    ) -> Result<(), StoreError>;

    /// Takes the session's turn lease for `holder` unless another live
    /// holder has it. A dead holder's lease lapses after `lease`.
    async fn acquire_turn(
        &self,
        id: SessionId,
        holder: Uuid,
        lease: Duration,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Extends a held lease and reports whether an interrupt was asked for.
    async fn renew_turn(
        &self,
        id: SessionId,
        holder: Uuid,
        lease: Duration,
    ) -> Result<Renewal, StoreError>;

    /// Asks the holder of the session's live lease, on whatever instance, to
    /// stop; `false` when no turn is running.
    async fn request_interrupt(&self, id: SessionId) -> Result<bool, StoreError>;

    async fn release_turn(&self, id: SessionId, holder: Uuid) -> Result<(), StoreError>;

    /// Replaces a live session's todo list; `NotFound` when there is no
    /// such session (deleted or expired).
    async fn set_todos(&self, id: SessionId, todos: &[Todo]) -> Result<(), StoreError>;

    /// Records a request for a person; `NotFound` when the session is gone.
    async fn add_request(&self, id: SessionId, request: &PersonRequest) -> Result<(), StoreError>;

    /// One request of the session, answered or not.
    async fn request(
        &self,
        id: SessionId,
        request_id: Uuid,
    ) -> Result<Option<PersonRequest>, StoreError>;

    /// The session's unanswered requests of `kind`, oldest first.
    async fn pending_requests(
        &self,
        id: SessionId,
        kind: RequestKind,
    ) -> Result<Vec<PersonRequest>, StoreError>;

    /// Sets the answer of a pending request; the first answer wins.
    async fn answer_request(
        &self,
        id: SessionId,
        request_id: Uuid,
        answer: &Value,
    ) -> Result<Answering, StoreError>;

    /// Allow rules a person gave for the rest of the session, oldest first.
    async fn allow_rules(&self, id: SessionId) -> Result<Vec<String>, StoreError>;

    /// Adds an allow rule for the rest of the session (once).
    async fn add_allow_rule(&self, id: SessionId, rule: &str) -> Result<(), StoreError>;

    /// Queues a message behind the session's running turn, atomically with
    /// checking that one runs. Returns its place in the queue (1 = next), or
    /// `None` when no turn holds the session (start one instead).
    async fn enqueue_message(
        &self,
        id: SessionId,
        message: &QueuedMessage,
    ) -> Result<Option<u64>, StoreError>;

    /// At the end of `holder`'s turn: takes the next queued message, keeping
    /// the lease for it, or releases the lease when none waits. Atomic with
    /// [`SessionStore::enqueue_message`], so no message is left behind.
    async fn next_queued_or_release(
        &self,
        id: SessionId,
        holder: Uuid,
    ) -> Result<Option<QueuedMessage>, StoreError>;
    /// Records a turn that starts now (its lease held) and returns the id of
    /// the session's last event so far: the turn's frames follow it.
    async fn begin_turn(&self, id: SessionId, turn: Uuid) -> Result<u64, StoreError>;

    /// Stores frames of a running turn, ids ascending, and tells viewers
    /// (on every instance) that the session has new events.
    async fn append_events(
        &self,
        id: SessionId,
        turn: Uuid,
        events: &[SessionEvent],
    ) -> Result<(), StoreError>;

    /// Stores the turn's last frames and how it ended (one transaction),
    /// then prunes the session's events older than `retention` allows.
    async fn finish_turn(
        &self,
        id: SessionId,
        turn: Uuid,
        events: &[SessionEvent],
        ended: &TurnEnded,
        retention: &EventRetention,
    ) -> Result<(), StoreError>;

    /// Up to `limit` of the session's stored events with ids above `after`,
    /// in order.
    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, StoreError>;

    /// One turn of a live session.
    async fn turn(&self, id: SessionId, turn: Uuid) -> Result<Option<TurnRecord>, StoreError>;

    /// Ids of sessions with new events, as they are stored here or (with
    /// PostgreSQL) by another instance. Notices can be missed (a lagging
    /// receiver, a dropped connection): viewers also poll.
    fn event_notices(&self) -> broadcast::Receiver<SessionId>;

    /// Stores a new API key; its id must be unused.
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// A key by id, revoked and expired ones included.
    async fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Keys, oldest first, all users or one.
    async fn list_keys(&self, user: Option<&UserId>) -> Result<Vec<StoredKey>, StoreError>;

    /// Marks a key revoked (keeping the first revocation time); `false`
    /// when there is no such key.
    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Whether any API key was ever stored (revoked ones count).
    async fn has_keys(&self) -> Result<bool, StoreError>;

    /// Usage per user and day from `from` to `to` inclusive, by day then user.
    async fn usage_by_day(
        &self,
        user: Option<&UserId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StoreError>;

    /// Counts one turn in `bucket`'s window starting at `window_start` and
    /// returns the window's count so far, this turn included. Older windows
    /// of the bucket are dropped.
    async fn count_turn(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// One stored frame: its per-session id and its JSON text as streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub id: u64,
    pub frame: Arc<str>,
}

/// How a turn ended: its status, the HTTP status and body the synchronous
/// `/chat` answered, and its last event.
#[derive(Debug, Clone)]
pub struct TurnEnded {
    pub status: TurnStatus,
    pub status_code: u16,
    pub result: Value,
    pub last_event_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// Still running (its instance holds the session's lease).
    Running,
    /// The model ended its turn (`end_turn`, `max_tokens`, `max_turns`, ...).
    Completed,
    /// Interrupted; the partial answer is the result.
    Interrupted,
    /// Failed (timeout, model API error, shutdown...); the result is the error.
    Failed,
    /// Its instance stopped without finishing it (crash, kill).
    Abandoned,
}

impl TurnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    fn parse(raw: &str) -> Result<Self, StoreError> {
        Ok(match raw {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "interrupted" => Self::Interrupted,
            "failed" => Self::Failed,
            "abandoned" => Self::Abandoned,
            other => return Err(StoreError::Internal(format!("stored turn status {other}"))),
        })
    }
}

/// A stored turn. A `Running` one whose session holds no lease any more
/// was abandoned; the API reports it so.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub id: Uuid,
    pub status: TurnStatus,
    /// The event id before the turn's first frame (`/events?after=`).
    pub after_event_id: u64,
    pub last_event_id: u64,
    pub status_code: Option<u16>,
    pub result: Option<Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stored turn result back as JSON; anything else is corrupt data.
fn result_from_text(text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Internal(format!("stored result: {e}")))
    })
    .transpose()
}

/// The event id of `n` (stored as a signed integer) back.
fn event_id(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The oldest instant an event may have been stored at to be kept.
fn events_cutoff(retention: &EventRetention, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if retention.max_age_secs == 0 {
        return None;
    }
    let age = chrono::Duration::try_seconds(i64::try_from(retention.max_age_secs).ok()?)?;
    now.checked_sub_signed(age)
}

/// How many session ids a notice channel holds for a slow receiver.
const NOTICE_CAPACITY: usize = 1024;

pub type DynStore = Arc<dyn SessionStore>;

/// Opens the store the settings choose and runs its migrations.
pub async fn open(settings: &Settings) -> Result<DynStore, StoreError> {
    let ttl = settings.session_ttl();
    Ok(match settings.session.storage {
        StorageKind::Memory => Arc::new(SqliteStore::in_memory(ttl).await?),
        StorageKind::Sqlite => {
            Arc::new(SqliteStore::open(&settings.session.sqlite_path, ttl).await?)
        }
        StorageKind::Postgresql => Arc::new(PostgresStore::connect(&settings.session, ttl).await?),
    })
}

/// The instant before which a session counts as expired.
fn expiry_cutoff(ttl: Option<Duration>, now: DateTime<Utc>) -> DateTime<Utc> {
    match ttl.and_then(|t| chrono::Duration::from_std(t).ok()) {
        Some(ttl) => now - ttl,
        None => DateTime::<Utc>::UNIX_EPOCH,
    }
}

/// Bytes a write probe commits: more than a page, so a database that cannot
/// grow refuses it as it would refuse a new message.
const WRITE_PROBE_BYTES: usize = 8192;

fn write_probe_row() -> (String, Vec<u8>) {
    let mut pad = vec![0u8; WRITE_PROBE_BYTES];
    // Random, so PostgreSQL cannot compress the row away to nothing.
    rand::Rng::fill(&mut rand::rng(), pad.as_mut_slice());
    (Uuid::new_v4().to_string(), pad)
}

fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(60))
}

/// Says which limit refused a session.
async fn describe_limit(store: &dyn SessionStore, user: &UserId, limits: Limits) -> StoreError {
    if limits.max_sessions_per_user > 0
        && let Ok(ids) = store.list(Some(user)).await
        && ids.len() as u64 >= limits.max_sessions_per_user
    {
        return StoreError::LimitReached(format!(
            "user '{user}' already has {} sessions (max_sessions_per_user); delete one first",
            limits.max_sessions_per_user
        ));
    }
    StoreError::LimitReached(format!(
        "the service already holds {} sessions (max_sessions); delete one first",
        limits.max_sessions
    ))
}
