//! The SQLite store: the embedded default (WAL, busy timeout), and with an
//! in-memory database the `memory` store, so both behave identically.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    Answering, Changed, DailyUsage, ForkPoint, LeaseOutcome, Limits, NOTICE_CAPACITY, NewMessage,
    NewSession, PersonRequest, QueuedMessage, Renewal, RequestKind, Session, SessionChange,
    SessionEvent, SessionKey, SessionStore, StoreError, StoredKey, StoredMessage, Todo, TurnEnded,
    TurnRecord, TurnStatus, UsageTotals, describe_limit, event_id, events_cutoff, expiry_cutoff,
    lease_until, options_from_json, result_from_text, todos_from_json, write_probe_row,
};
use crate::config::{EventRetention, StorageKind};
use crate::domain::{SessionId, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    ttl: Option<Duration>,
    kind: StorageKind,
    /// Only this process writes the database: notices stay in process.
    notices: broadcast::Sender<SessionId>,
}

const SESSION_COLUMNS: &str = "id, user_id, subdir, cwd, metadata, created_at, last_active_at, \
     message_count, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, \
     cost_usd, turn_holder, turn_expires_at, todos, options, \
     (SELECT r.kind FROM session_requests r WHERE r.session_id = sessions.id AND r.answer IS NULL \
      ORDER BY r.created_at LIMIT 1) AS waiting_on, \
     (SELECT COUNT(*) FROM queued_messages q WHERE q.session_id = sessions.id) AS queued";

/// Connections to a database file.
const SQLITE_CONNECTIONS: u32 = 8;

impl SqliteStore {
    /// Opens (creating when missing) the database file and migrates it.
    pub async fn open(path: &Path, ttl: Option<Duration>) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        Self::open_with(Self::connect_options(path), ttl).await
    }

    /// How `open` connects to the file at `path`.
    pub fn connect_options(path: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged write survives an OS crash too, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
    }

    /// Opens a file database with these options (tests add pragmas such as
    /// `max_page_count`) and migrates it.
    pub async fn open_with(
        options: SqliteConnectOptions,
        ttl: Option<Duration>,
    ) -> Result<Self, StoreError> {
        // Every connection is opened at start-up and kept: a command running
        // as the service's user can take away its access to the database's
        // directory (Landlock does not govern chmod), which only breaks
        // opening new connections. A restart gives the access back.
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        // Open them all now, one after another: opening sets WAL mode,
        // which two new connections at once would contend for (so no
        // `min_connections`, whose background opening runs alongside).
        let mut opened = Vec::new();
        for _ in 0..SQLITE_CONNECTIONS {
            opened.push(pool.acquire().await?);
        }
        drop(opened);
        Self::migrated(pool, ttl, StorageKind::Sqlite).await
    }

    /// A private in-memory database: gone when the process ends.
    pub async fn in_memory(ttl: Option<Duration>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .foreign_keys(true);
        // One connection that never closes: each in-memory connection would
        // otherwise be a separate, empty database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool, ttl, StorageKind::Memory).await
    }

    async fn migrated(
        pool: SqlitePool,
        ttl: Option<Duration>,
        kind: StorageKind,
    ) -> Result<Self, StoreError> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        // Only this process uses the file, so any lease in it belongs to a
        // turn that died with a previous run: free those sessions now rather
        // than after the lease lapses.
        let freed = sqlx::query(
            "UPDATE sessions SET turn_holder = NULL, turn_expires_at = NULL
             WHERE turn_holder IS NOT NULL",
        )
        .execute(&pool)
        .await?
        .rows_affected();
        if freed > 0 {
            tracing::info!(
                sessions = freed,
                "released turn leases left by a previous run"
            );
        }
        let (notices, _) = broadcast::channel(NOTICE_CAPACITY);
        Ok(Self {
            pool,
            ttl,
            kind,
            notices,
        })
    }

    fn cutoff(&self, now: DateTime<Utc>) -> i64 {
        expiry_cutoff(self.ttl, now).timestamp_millis()
    }

    async fn fetch(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = Utc::now();
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ? AND last_active_at >= ?"
        ))
        .bind(id.to_string())
        .bind(self.cutoff(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| session_from_row(&r, now)).transpose()
    }

    /// Inserts `new` as session `id` unless a limit is reached (one
    /// statement, so the check and the insert cannot interleave with
    /// another writer: SQLite serialises writes). Returns whether it did.
    async fn insert_session(
        &self,
        executor: impl sqlx::SqliteExecutor<'_>,
        id: SessionId,
        new: &NewSession,
        now: DateTime<Utc>,
        limits: Limits,
    ) -> Result<bool, StoreError> {
        let metadata = serde_json::to_string(&new.metadata)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let options = new.options.to_json().to_string();
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, subdir, cwd, metadata, created_at, last_active_at,
                                   options)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?10
             WHERE (?7 = 0 OR (SELECT COUNT(*) FROM sessions WHERE last_active_at >= ?9) < ?7)
               AND (?8 = 0 OR (SELECT COUNT(*) FROM sessions
                               WHERE user_id = ?2 AND last_active_at >= ?9) < ?8)",
        )
        .bind(id.to_string())
        .bind(new.user_id.as_str())
        .bind(new.subdir.as_deref())
        .bind(&new.cwd)
        .bind(metadata)
        .bind(now.timestamp_millis())
        .bind(to_i64(limits.max_sessions))
        .bind(to_i64(limits.max_sessions_per_user))
        .bind(self.cutoff(now))
        .bind(options)
        .execute(executor)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }
}

fn message_from_row(row: &SqliteRow) -> Result<StoredMessage, StoreError> {
    let content: String = row.try_get("content")?;
    Ok(StoredMessage {
        seq: row.try_get("seq")?,
        role: row.try_get("role")?,
        content: serde_json::from_str(&content).map_err(|e| StoreError::Internal(e.to_string()))?,
        created_at: millis(row.try_get("created_at")?),
    })
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn count(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let n: i64 = row.try_get(column)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn session_from_row(row: &SqliteRow, now: DateTime<Utc>) -> Result<Session, StoreError> {
    let id: String = row.try_get("id")?;
    let user: String = row.try_get("user_id")?;
    let metadata: String = row.try_get("metadata")?;
    let holder: Option<String> = row.try_get("turn_holder")?;
    let expires: Option<i64> = row.try_get("turn_expires_at")?;
    let todos: String = row.try_get("todos")?;
    let todos: serde_json::Value =
        serde_json::from_str(&todos).map_err(|e| StoreError::Internal(e.to_string()))?;
    let options: String = row.try_get("options")?;
    let options: serde_json::Value =
        serde_json::from_str(&options).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(Session {
        id: SessionId::parse(&id).ok_or_else(|| StoreError::Internal(format!("bad id {id}")))?,
        user_id: UserId::parse(&user).map_err(|e| StoreError::Internal(e.to_string()))?,
        subdir: row.try_get("subdir")?,
        cwd: row.try_get("cwd")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Internal(e.to_string()))?,
        created_at: millis(row.try_get("created_at")?),
        last_active_at: millis(row.try_get("last_active_at")?),
        message_count: count(row, "message_count")?,
        usage: UsageTotals {
            input_tokens: count(row, "input_tokens")?,
            output_tokens: count(row, "output_tokens")?,
            cache_creation_input_tokens: count(row, "cache_creation_tokens")?,
            cache_read_input_tokens: count(row, "cache_read_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
        },
        turn_running: holder.is_some() && expires.is_some_and(|e| e > now.timestamp_millis()),
        todos: todos_from_json(todos)?,
        options: options_from_json(options)?,
        waiting_on: row
            .try_get::<Option<String>, _>("waiting_on")?
            .as_deref()
            .map(RequestKind::parse)
            .transpose()?,
        queued: count(row, "queued")?,
    })
}

/// The reason quotes the call's command; a NUL there only gets in the way.
fn nul_free(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

fn json_text(value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

fn json_of(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.to_string()))
}

const REQUEST_COLUMNS: &str =
    "id, kind, tool_use_id, tool_name, tool_input, reason, created_at, answer";

fn request_from_row(row: &SqliteRow) -> Result<PersonRequest, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let input: String = row.try_get("tool_input")?;
    let answer: Option<String> = row.try_get("answer")?;
    Ok(PersonRequest {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Internal(e.to_string()))?,
        kind: RequestKind::parse(&kind)?,
        tool_use_id: row.try_get("tool_use_id")?,
        tool_name: row.try_get("tool_name")?,
        tool_input: json_of(&input)?,
        reason: row.try_get("reason")?,
        created_at: millis(row.try_get("created_at")?),
        answer: answer.as_deref().map(json_of).transpose()?,
    })
}

/// Inserts frames of `turn` in as few statements as SQLite allows.
async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: SessionId,
    turn: Uuid,
    events: &[SessionEvent],
) -> Result<(), StoreError> {
    let now = Utc::now().timestamp_millis();
    // Each row binds 5 parameters; SQLite allows 32766 per statement.
    for chunk in events.chunks(1000) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO session_events (session_id, id, turn_id, frame, created_at) ",
        );
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(id.to_string())
                .push_bind(to_i64(event.id))
                .push_bind(turn.to_string())
                .push_bind(event.frame.to_string())
                .push_bind(now);
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn turn_from_row(row: &SqliteRow) -> Result<TurnRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let code: Option<i64> = row.try_get("status_code")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(TurnRecord {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Internal(format!("turn id: {e}")))?,
        status: TurnStatus::parse(&status)?,
        after_event_id: event_id(row.try_get::<i64, _>("first_event_id")?).saturating_sub(1),
        last_event_id: event_id(row.try_get("last_event_id")?),
        status_code: code.and_then(|c| u16::try_from(c).ok()),
        result: result_from_text(row.try_get("result")?)?,
        started_at: millis(row.try_get("started_at")?),
        finished_at: finished.map(millis),
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn kind(&self) -> StorageKind {
        self.kind
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let (id, pad) = write_probe_row();
        sqlx::query("INSERT INTO write_probe (id, pad) VALUES (?, ?)")
            .bind(&id)
            .bind(pad)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM write_probe WHERE id = ?")
            .bind(&id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create(&self, new: NewSession, limits: Limits) -> Result<Session, StoreError> {
        // Millisecond precision, so the session returned here is exactly what a
        // later read gives back.
        let now = Utc::now().trunc_subsecs(3);
        let id = SessionId::new();
        if !self
            .insert_session(&self.pool, id, &new, now, limits)
            .await?
        {
            return Err(describe_limit(self, &new.user_id, limits).await);
        }
        Ok(Session::created(id, new, now))
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.fetch(id).await
    }

    async fn list_page(
        &self,
        user: Option<&UserId>,
        after: Option<SessionKey>,
        limit: Option<u64>,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let cutoff = self.cutoff(Utc::now());
        let (after_at, after_id) = match after {
            Some(key) => (Some(key.created_at.timestamp_millis()), key.id.to_string()),
            None => (None, String::new()),
        };
        let rows = sqlx::query(
            "SELECT id, created_at FROM sessions
             WHERE last_active_at >= ?1 AND (?2 IS NULL OR user_id = ?2)
               AND (?3 IS NULL OR (created_at, id) > (?3, ?4))
             ORDER BY created_at, id
             LIMIT ?5",
        )
        .bind(cutoff)
        .bind(user.map(UserId::as_str))
        .bind(after_at)
        .bind(after_id)
        .bind(limit.map_or(-1, to_i64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                Ok(SessionKey {
                    id: SessionId::parse(&id)
                        .ok_or_else(|| StoreError::Internal(format!("bad id {id}")))?,
                    created_at: millis(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn count_live(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE last_active_at >= ?")
            .bind(self.cutoff(Utc::now()))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE id = ? AND last_active_at >= ?")
            .bind(id.to_string())
            .bind(self.cutoff(Utc::now()))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn touch(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = Utc::now();
        let updated = sqlx::query(
            "UPDATE sessions SET last_active_at = ? WHERE id = ? AND last_active_at >= ?",
        )
        .bind(now.timestamp_millis())
        .bind(id.to_string())
        .bind(self.cutoff(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        self.fetch(id).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        if self.ttl.is_none() {
            return Ok(0);
        }
        let now = Utc::now();
        // A session whose turn still holds a live lease is not idle.
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE last_active_at < ?
             AND (turn_expires_at IS NULL OR turn_expires_at < ?)",
        )
        .bind(self.cutoff(now))
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    async fn append_messages(
        &self,
        id: SessionId,
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now().timestamp_millis();
        for message in messages {
            let content = serde_json::to_string(&message.content)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            sqlx::query(
                "INSERT INTO messages (session_id, seq, role, content, created_at)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?1),
                         ?2, ?3, ?4)",
            )
            .bind(id.to_string())
            .bind(&message.role)
            .bind(content)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn save_message_at(
        &self,
        id: SessionId,
        seq: Option<i64>,
        message: &NewMessage,
    ) -> Result<i64, StoreError> {
        let content = serde_json::to_string(&message.content)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let sql = match seq {
            None => {
                "INSERT INTO messages (session_id, seq, role, content, created_at)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?1),
                         ?2, ?3, ?4)
                 RETURNING seq"
            }
            Some(_) => {
                "UPDATE messages SET role = ?2, content = ?3, created_at = ?4
                 WHERE session_id = ?1 AND seq = ?5
                 RETURNING seq"
            }
        };
        let mut query = sqlx::query(sql)
            .bind(id.to_string())
            .bind(&message.role)
            .bind(content)
            .bind(Utc::now().timestamp_millis());
        if let Some(seq) = seq {
            query = query.bind(seq);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.ok_or(StoreError::NotFound)?
            .try_get("seq")
            .map_err(Into::into)
    }

    async fn messages_after(
        &self,
        id: SessionId,
        after_seq: i64,
        limit: Option<u64>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, role, content, created_at FROM messages
             WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id.to_string())
        .bind(after_seq)
        .bind(limit.map_or(-1, to_i64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn change(&self, id: SessionId, change: SessionChange) -> Result<Changed, StoreError> {
        let now = Utc::now();
        let options = change.options.map(|o| o.to_json().to_string());
        let metadata = change
            .metadata
            .map(|m| serde_json::to_string(&m))
            .transpose()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let updated = sqlx::query(
            "UPDATE sessions SET options = COALESCE(?1, options),
                 metadata = COALESCE(?2, metadata)
             WHERE id = ?3 AND last_active_at >= ?4
               AND (turn_holder IS NULL OR turn_expires_at IS NULL OR turn_expires_at < ?5)",
        )
        .bind(options)
        .bind(metadata)
        .bind(id.to_string())
        .bind(self.cutoff(now))
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(match self.fetch(id).await? {
            None => Changed::NotFound,
            Some(_) if updated == 0 => Changed::Busy,
            Some(session) => Changed::Done(Box::new(session)),
        })
    }

    async fn fork(
        &self,
        from: ForkPoint,
        new: NewSession,
        todos: &[Todo],
        limits: Limits,
    ) -> Result<Session, StoreError> {
        let now = Utc::now().trunc_subsecs(3);
        let id = SessionId::new();
        let todos_json =
            serde_json::to_string(todos).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sessions WHERE id = ? AND last_active_at >= ?")
                .bind(from.source.to_string())
                .bind(self.cutoff(now))
                .fetch_optional(&mut *tx)
                .await?;
        if live.is_none() {
            return Err(StoreError::NotFound);
        }
        if !self.insert_session(&mut *tx, id, &new, now, limits).await? {
            drop(tx);
            return Err(describe_limit(self, &new.user_id, limits).await);
        }
        sqlx::query("UPDATE sessions SET todos = ?, message_count = ? WHERE id = ?")
            .bind(todos_json)
            .bind(to_i64(from.message_count))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // Message times are kept: the copy is the same conversation.
        sqlx::query(
            "INSERT INTO messages (session_id, seq, role, content, created_at)
             SELECT ?1, seq, role, content, created_at FROM messages
             WHERE session_id = ?2 AND (?3 IS NULL OR seq <= ?3)",
        )
        .bind(id.to_string())
        .bind(from.source.to_string())
        .bind(from.up_to_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.fetch(id).await?.ok_or(StoreError::NotFound)
    }

    async fn record_usage(
        &self,
        id: SessionId,
        usage: UsageTotals,
        user_messages: u64,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE sessions SET
                message_count = message_count + ?,
                input_tokens = input_tokens + ?,
                output_tokens = output_tokens + ?,
                cache_creation_tokens = cache_creation_tokens + ?,
                cache_read_tokens = cache_read_tokens + ?,
                cost_usd = cost_usd + ?,
                last_active_at = ?
             WHERE id = ?",
        )
        .bind(to_i64(user_messages))
        .bind(to_i64(usage.input_tokens))
        .bind(to_i64(usage.output_tokens))
        .bind(to_i64(usage.cache_creation_input_tokens))
        .bind(to_i64(usage.cache_read_input_tokens))
        .bind(usage.cost_usd)
        .bind(now.timestamp_millis())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        // The user's day, which daily quotas read: it outlives the session.
        sqlx::query(
            "INSERT INTO usage_daily (user_id, day, input_tokens, output_tokens,
                 cache_creation_tokens, cache_read_tokens, cost_usd, turns)
             SELECT user_id, ?, ?, ?, ?, ?, ?, ? FROM sessions WHERE id = ?
             ON CONFLICT (user_id, day) DO UPDATE SET
                 input_tokens = input_tokens + excluded.input_tokens,
                 output_tokens = output_tokens + excluded.output_tokens,
                 cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens,
                 cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
                 cost_usd = cost_usd + excluded.cost_usd,
                 turns = turns + excluded.turns",
        )
        .bind(now.date_naive().to_string())
        .bind(to_i64(usage.input_tokens))
        .bind(to_i64(usage.output_tokens))
        .bind(to_i64(usage.cache_creation_input_tokens))
        .bind(to_i64(usage.cache_read_input_tokens))
        .bind(usage.cost_usd)
        .bind(to_i64(user_messages))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn acquire_turn(
        &self,
        id: SessionId,
        holder: Uuid,
        lease: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let now = Utc::now();
        let taken = sqlx::query(
            "UPDATE sessions SET turn_holder = ?, turn_expires_at = ?, last_active_at = ?,
                 interrupt_requested = 0
             WHERE id = ? AND last_active_at >= ?
               AND (turn_holder IS NULL OR turn_expires_at IS NULL OR turn_expires_at < ?)",
        )
        .bind(holder.to_string())
        .bind(lease_until(now, lease).timestamp_millis())
        .bind(now.timestamp_millis())
        .bind(id.to_string())
        .bind(self.cutoff(now))
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if taken > 0 {
            return Ok(LeaseOutcome::Acquired);
        }
        Ok(match self.fetch(id).await? {
            Some(_) => LeaseOutcome::Busy,
            None => LeaseOutcome::NotFound,
        })
    }

    async fn renew_turn(
        &self,
        id: SessionId,
        holder: Uuid,
        lease: Duration,
    ) -> Result<Renewal, StoreError> {
        let now = Utc::now();
        let interrupt: Option<i64> = sqlx::query_scalar(
            "UPDATE sessions SET turn_expires_at = ?, last_active_at = ?
             WHERE id = ? AND turn_holder = ?
             RETURNING interrupt_requested",
        )
        .bind(lease_until(now, lease).timestamp_millis())
        .bind(now.timestamp_millis())
        .bind(id.to_string())
        .bind(holder.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match interrupt {
            None => Renewal::Lost,
            Some(0) => Renewal::Held,
            Some(_) => Renewal::InterruptRequested,
        })
    }

    async fn request_interrupt(&self, id: SessionId) -> Result<bool, StoreError> {
        let asked = sqlx::query(
            "UPDATE sessions SET interrupt_requested = 1
             WHERE id = ? AND turn_holder IS NOT NULL AND turn_expires_at > ?",
        )
        .bind(id.to_string())
        .bind(Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(asked > 0)
    }

    async fn release_turn(&self, id: SessionId, holder: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET turn_holder = NULL, turn_expires_at = NULL, last_active_at = ?,
                 interrupt_requested = 0
             WHERE id = ? AND turn_holder = ?",
        )
        .bind(Utc::now().timestamp_millis())
        .bind(id.to_string())
        .bind(holder.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_todos(&self, id: SessionId, todos: &[Todo]) -> Result<(), StoreError> {
        let json = serde_json::to_string(todos).map_err(|e| StoreError::Internal(e.to_string()))?;
        let updated =
            sqlx::query("UPDATE sessions SET todos = ? WHERE id = ? AND last_active_at >= ?")
                .bind(json)
                .bind(id.to_string())
                .bind(self.cutoff(Utc::now()))
                .execute(&self.pool)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_request(&self, id: SessionId, request: &PersonRequest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO session_requests
                 (id, session_id, kind, tool_use_id, tool_name, tool_input, reason, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(request.id.to_string())
        .bind(id.to_string())
        .bind(request.kind.as_str())
        .bind(&request.tool_use_id)
        .bind(&request.tool_name)
        .bind(json_text(&request.tool_input)?)
        .bind(nul_free(&request.reason))
        .bind(request.created_at.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn request(
        &self,
        id: SessionId,
        request_id: Uuid,
    ) -> Result<Option<PersonRequest>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM session_requests WHERE session_id = ? AND id = ?"
        ))
        .bind(id.to_string())
        .bind(request_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    async fn pending_requests(
        &self,
        id: SessionId,
        kind: RequestKind,
    ) -> Result<Vec<PersonRequest>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM session_requests
             WHERE session_id = ? AND kind = ? AND answer IS NULL
             ORDER BY created_at, id"
        ))
        .bind(id.to_string())
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(request_from_row).collect()
    }

    async fn answer_request(
        &self,
        id: SessionId,
        request_id: Uuid,
        answer: &serde_json::Value,
    ) -> Result<Answering, StoreError> {
        let updated = sqlx::query(
            "UPDATE session_requests SET answer = ?, answered_at = ?
             WHERE session_id = ? AND id = ? AND answer IS NULL",
        )
        .bind(json_text(answer)?)
        .bind(Utc::now().timestamp_millis())
        .bind(id.to_string())
        .bind(request_id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated > 0 {
            return Ok(Answering::Answered);
        }
        Ok(match self.request(id, request_id).await? {
            Some(PersonRequest {
                answer: Some(answer),
                ..
            }) => Answering::AlreadyAnswered(answer),
            _ => Answering::NotFound,
        })
    }

    async fn allow_rules(&self, id: SessionId) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT rule FROM session_allow_rules WHERE session_id = ? ORDER BY created_at, rule",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn add_allow_rule(&self, id: SessionId, rule: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO session_allow_rules (session_id, rule, created_at) VALUES (?, ?, ?)
             ON CONFLICT (session_id, rule) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(rule)
        .bind(Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enqueue_message(
        &self,
        id: SessionId,
        message: &QueuedMessage,
    ) -> Result<Option<u64>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let mut tx = self.pool.begin().await?;
        // One statement: the check that a turn holds the session and the
        // insert cannot interleave with the holder releasing it.
        let queued: Option<i64> = sqlx::query_scalar(
            "INSERT INTO queued_messages (session_id, message, timeout_ms, created_at)
             SELECT id, ?, ?, ? FROM sessions
             WHERE id = ? AND turn_holder IS NOT NULL AND turn_expires_at > ?
             RETURNING id",
        )
        .bind(&message.message)
        .bind(i64::try_from(message.timeout.as_millis()).unwrap_or(i64::MAX))
        .bind(now)
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(queued) = queued else {
            return Ok(None);
        };
        let position: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM queued_messages WHERE session_id = ? AND id <= ?",
        )
        .bind(id.to_string())
        .bind(queued)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(u64::try_from(position).unwrap_or(1)))
    }

    async fn next_queued_or_release(
        &self,
        id: SessionId,
        holder: Uuid,
    ) -> Result<Option<QueuedMessage>, StoreError> {
        let now = Utc::now().timestamp_millis();
        let mut tx = self.pool.begin().await?;
        // Writing first takes SQLite's write lock, so no message can be
        // queued between looking at the queue and releasing the lease.
        let released = sqlx::query(
            "UPDATE sessions SET turn_holder = NULL, turn_expires_at = NULL, last_active_at = ?,
                 interrupt_requested = 0
             WHERE id = ? AND turn_holder = ?
               AND NOT EXISTS (SELECT 1 FROM queued_messages WHERE session_id = ?)",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(holder.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released > 0 {
            tx.commit().await?;
            return Ok(None);
        }
        let next = sqlx::query(
            "DELETE FROM queued_messages
             WHERE id = (SELECT q.id FROM queued_messages q JOIN sessions s ON s.id = q.session_id
                         WHERE q.session_id = ? AND s.turn_holder = ? ORDER BY q.id LIMIT 1)
             RETURNING message, timeout_ms",
        )
        .bind(id.to_string())
        .bind(holder.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let next = match next {
            Some(row) => {
                sqlx::query(
                    "UPDATE sessions SET interrupt_requested = 0, last_active_at = ? WHERE id = ?",
                )
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                let timeout: i64 = row.try_get("timeout_ms")?;
                Some(QueuedMessage {
                    message: row.try_get("message")?,
                    timeout: Duration::from_millis(u64::try_from(timeout).unwrap_or(0)),
                })
            }
            None => None,
        };
        tx.commit().await?;
        Ok(next)
    }

    async fn begin_turn(&self, id: SessionId, turn: Uuid) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar(
            "INSERT INTO turns (session_id, id, status, first_event_id, last_event_id, started_at)
             SELECT ?1, ?2, 'running', n + 1, n, ?3
             FROM (SELECT COALESCE(MAX(last_event_id), 0) AS n FROM turns WHERE session_id = ?1)
             RETURNING last_event_id",
        )
        .bind(id.to_string())
        .bind(turn.to_string())
        .bind(Utc::now().timestamp_millis())
        .fetch_optional(&self.pool)
        .await?;
        last.map(event_id).ok_or(StoreError::NotFound)
    }

    async fn append_events(
        &self,
        id: SessionId,
        turn: Uuid,
        events: &[SessionEvent],
    ) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, id, turn, events).await?;
        sqlx::query("UPDATE turns SET last_event_id = ? WHERE session_id = ? AND id = ?")
            .bind(to_i64(last.id))
            .bind(id.to_string())
            .bind(turn.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let _ = self.notices.send(id);
        Ok(())
    }

    async fn finish_turn(
        &self,
        id: SessionId,
        turn: Uuid,
        events: &[SessionEvent],
        ended: &TurnEnded,
        retention: &EventRetention,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let result = serde_json::to_string(&ended.result)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, id, turn, events).await?;
        sqlx::query(
            "UPDATE turns SET status = ?, status_code = ?, result = ?, finished_at = ?,
                 last_event_id = MAX(last_event_id, ?)
             WHERE session_id = ? AND id = ?",
        )
        .bind(ended.status.as_str())
        .bind(i64::from(ended.status_code))
        .bind(result)
        .bind(now.timestamp_millis())
        .bind(to_i64(ended.last_event_id))
        .bind(id.to_string())
        .bind(turn.to_string())
        .execute(&mut *tx)
        .await?;
        // The newest `turns` turns stay, with their events; the newest turn
        // always stays, as it carries the session's last event id.
        let keep = i64::from(retention.turns.max(1));
        let oldest_kept: Option<i64> = sqlx::query_scalar(
            "SELECT first_event_id FROM turns WHERE session_id = ?
             ORDER BY first_event_id DESC LIMIT 1 OFFSET ?",
        )
        .bind(id.to_string())
        .bind(keep - 1)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(oldest) = oldest_kept {
            sqlx::query("DELETE FROM session_events WHERE session_id = ? AND id < ?")
                .bind(id.to_string())
                .bind(oldest)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM turns WHERE session_id = ? AND first_event_id < ?")
                .bind(id.to_string())
                .bind(oldest)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(cutoff) = events_cutoff(retention, now) {
            sqlx::query("DELETE FROM session_events WHERE created_at < ?")
                .bind(cutoff.timestamp_millis())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let _ = self.notices.send(id);
        Ok(())
    }

    async fn events_after(
        &self,
        id: SessionId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<SessionEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, frame FROM session_events WHERE session_id = ? AND id > ?
             ORDER BY id LIMIT ?",
        )
        .bind(id.to_string())
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionEvent {
                    id: event_id(row.try_get("id")?),
                    frame: Arc::from(row.try_get::<String, _>("frame")?),
                })
            })
            .collect()
    }

    async fn turn(&self, id: SessionId, turn: Uuid) -> Result<Option<TurnRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, status, first_event_id, last_event_id, status_code, result, started_at,
                    finished_at
             FROM turns WHERE session_id = ? AND id = ?",
        )
        .bind(id.to_string())
        .bind(turn.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(turn_from_row).transpose()
    }

    fn event_notices(&self) -> broadcast::Receiver<SessionId> {
        self.notices.subscribe()
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, secret_hash, created_at, expires_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(key.user_id.as_str())
        .bind(key.name.as_deref())
        .bind(&key.secret_hash)
        .bind(key.created_at.timestamp_millis())
        .bind(key.expires_at.map(|t| t.timestamp_millis()))
        .bind(key.revoked_at.map(|t| t.timestamp_millis()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    async fn list_keys(&self, user: Option<&UserId>) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR user_id = ?1)
             ORDER BY created_at, id"
        ))
        .bind(user.map(UserId::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(at.timestamp_millis())
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(updated > 0)
    }

    async fn has_keys(&self) -> Result<bool, StoreError> {
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(&self.pool)
            .await?;
        Ok(any)
    }

    async fn usage_by_day(
        &self,
        user: Option<&UserId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, day, input_tokens, output_tokens, cache_creation_tokens,
                    cache_read_tokens, cost_usd, turns
             FROM usage_daily
             WHERE (?1 IS NULL OR user_id = ?1) AND day >= ?2 AND day <= ?3
             ORDER BY day, user_id",
        )
        .bind(user.map(UserId::as_str))
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let user: String = row.try_get("user_id")?;
                let day: String = row.try_get("day")?;
                Ok(DailyUsage {
                    user_id: UserId::parse(&user)
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    day: day
                        .parse()
                        .map_err(|e| StoreError::Internal(format!("stored day {day}: {e}")))?,
                    usage: UsageTotals {
                        input_tokens: count(row, "input_tokens")?,
                        output_tokens: count(row, "output_tokens")?,
                        cache_creation_input_tokens: count(row, "cache_creation_tokens")?,
                        cache_read_input_tokens: count(row, "cache_read_tokens")?,
                        cost_usd: row.try_get("cost_usd")?,
                    },
                    turns: count(row, "turns")?,
                })
            })
            .collect()
    }

    async fn count_turn(
        &self,
        bucket: &str,
        window_start: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let start = window_start.timestamp_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM rate_windows WHERE bucket = ? AND window_start < ?")
            .bind(bucket)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO rate_windows (bucket, window_start, count) VALUES (?, ?, 1)
             ON CONFLICT (bucket, window_start) DO UPDATE SET count = count + 1
             RETURNING count",
        )
        .bind(bucket)
        .bind(start)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

const KEY_COLUMNS: &str = "id, user_id, name, secret_hash, created_at, expires_at, revoked_at";

fn key_from_row(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    let user: String = row.try_get("user_id")?;
    let expires: Option<i64> = row.try_get("expires_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(StoredKey {
        id: row.try_get("id")?,
        user_id: UserId::parse(&user).map_err(|e| StoreError::Internal(e.to_string()))?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: millis(row.try_get("created_at")?),
        expires_at: expires.map(millis),
        revoked_at: revoked.map(millis),
    })
}
