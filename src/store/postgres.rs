//! The PostgreSQL store, for several instances sharing one database: creates
//! the database when missing and waits for the server at start-up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::{
    Answering, Changed, DailyUsage, ForkPoint, LeaseOutcome, Limits, NOTICE_CAPACITY, NewMessage,
    NewSession, PersonRequest, QueuedMessage, Renewal, RequestKind, Session, SessionChange,
    SessionEvent, SessionKey, SessionStore, StoreError, StoredKey, StoredMessage, Todo, TurnEnded,
    TurnRecord, TurnStatus, UsageTotals, describe_limit, event_id, events_cutoff, expiry_cutoff,
    lease_until, options_from_json, result_from_text, todos_from_json, write_probe_row,
};
use crate::config::{EventRetention, SessionSettings, StorageKind};
use crate::domain::{SessionId, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Serialises session creation across instances so limits hold exactly.
const CREATE_LOCK_KEY: i64 = 0x636c_6175_6465; // "claude"

/// The channel `NOTIFY` tells every instance on, with a session id, that the
/// session has new events.
const EVENTS_CHANNEL: &str = "claude_agent_session_events";
/// How long the listener waits before listening again after an error.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

pub struct PostgresStore {
    pool: PgPool,
    ttl: Option<Duration>,
    notices: broadcast::Sender<SessionId>,
    /// Stops the `LISTEN` task with the store.
    _listening: DropGuard,
}

const SESSION_COLUMNS: &str = "id, user_id, subdir, cwd, metadata, metadata_escaped, \
     created_at, last_active_at, message_count, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, \
     cost_usd, turn_holder, turn_expires_at, todos, todos_escaped, options, options_escaped, \
     (SELECT r.kind FROM session_requests r WHERE r.session_id = sessions.id AND r.answer IS NULL \
      ORDER BY r.created_at LIMIT 1) AS waiting_on, \
     (SELECT COUNT(*) FROM queued_messages q WHERE q.session_id = sessions.id) AS queued";

impl PostgresStore {
    /// Connects with the settings' host, port, user and password, creating the
    /// database if needed. The first connection is retried with backoff for
    /// `pg_connect_retry_secs`, so start order against the server does not matter.
    pub async fn connect(
        settings: &SessionSettings,
        ttl: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::new()
            .host(&settings.pg_host)
            .port(settings.pg_port)
            .username(&settings.pg_user)
            .database(&settings.pg_database)
            .application_name("claude-agent-http");
        if let Some(password) = settings.pg_password.expose() {
            options = options.password(password);
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(settings.pg_connect_retry_secs);
        let mut delay = Duration::from_millis(250);
        loop {
            match Self::connect_once(&options, &settings.pg_database, settings.pg_max_connections)
                .await
            {
                Ok(pool) => return Self::migrated(pool, ttl).await,
                Err(err @ StoreError::Unavailable(_))
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::warn!(
                        host = %settings.pg_host,
                        port = settings.pg_port,
                        error = %err,
                        "PostgreSQL not reachable yet; retrying in {} ms",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Wraps an existing pool (tests) and migrates it.
    pub async fn from_pool(pool: PgPool, ttl: Option<Duration>) -> Result<Self, StoreError> {
        Self::migrated(pool, ttl).await
    }

    async fn connect_once(
        options: &PgConnectOptions,
        database: &str,
        max_connections: u32,
    ) -> Result<PgPool, StoreError> {
        match options.connect().await {
            Ok(conn) => {
                conn.close().await.ok();
            }
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {
                create_database(options, database).await?;
            }
            Err(err) => return Err(connect_error(err)),
        }
        PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(connect_error)
    }

    async fn migrated(pool: PgPool, ttl: Option<Duration>) -> Result<Self, StoreError> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        let (notices, _) = broadcast::channel(NOTICE_CAPACITY);
        let stop = CancellationToken::new();
        tokio::spawn(listen_for_events(
            pool.clone(),
            notices.clone(),
            stop.clone(),
        ));
        Ok(Self {
            pool,
            ttl,
            notices,
            _listening: stop.drop_guard(),
        })
    }

    fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        expiry_cutoff(self.ttl, now)
    }

    async fn fetch(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = Utc::now();
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND last_active_at >= $2"
        ))
        .bind(id.0)
        .bind(self.cutoff(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| session_from_row(&r, now)).transpose()
    }

    /// Inserts `new` as session `id` in `tx` unless a limit is reached;
    /// with limits, creations are serialised across instances by an
    /// advisory lock held until `tx` ends. Returns whether it did.
    async fn insert_session(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        id: SessionId,
        new: &NewSession,
        now: DateTime<Utc>,
        limits: Limits,
    ) -> Result<bool, StoreError> {
        if limits.max_sessions > 0 || limits.max_sessions_per_user > 0 {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CREATE_LOCK_KEY)
                .execute(&mut **tx)
                .await?;
        }
        let (metadata, metadata_escaped) = nul::encode(&new.metadata);
        let options = new.options.to_json();
        let (options, options_escaped) = nul::encode(&options);
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, subdir, cwd, metadata, metadata_escaped,
                                   created_at, last_active_at, options, options_escaped)
             SELECT $1, $2, $3, $4, $5, $10, $6, $6, $11, $12
             WHERE ($7 = 0 OR (SELECT COUNT(*) FROM sessions WHERE last_active_at >= $9) < $7)
               AND ($8 = 0 OR (SELECT COUNT(*) FROM sessions
                               WHERE user_id = $2 AND last_active_at >= $9) < $8)",
        )
        .bind(id.0)
        .bind(new.user_id.as_str())
        .bind(new.subdir.as_deref())
        .bind(&new.cwd)
        .bind(metadata.as_ref())
        .bind(now)
        .bind(to_i64(limits.max_sessions))
        .bind(to_i64(limits.max_sessions_per_user))
        .bind(self.cutoff(now))
        .bind(metadata_escaped)
        .bind(options.as_ref())
        .bind(options_escaped)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }
}

fn message_from_row(row: &PgRow) -> Result<StoredMessage, StoreError> {
    Ok(StoredMessage {
        seq: row.try_get("seq")?,
        role: row.try_get("role")?,
        content: nul::decode(row.try_get("content")?, row.try_get("content_escaped")?)?,
        created_at: row.try_get("created_at")?,
    })
}

/// Anything that prevents connecting is worth retrying, except a database
/// error that says the credentials or configuration are wrong.
fn connect_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(ref db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if code.starts_with("57") || code.starts_with("08") {
                StoreError::Unavailable(err.to_string())
            } else {
                StoreError::Internal(format!("PostgreSQL refused the connection: {err}"))
            }
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

async fn create_database(options: &PgConnectOptions, database: &str) -> Result<(), StoreError> {
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(connect_error)?;
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    match sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut admin)
        .await
    {
        Ok(_) => tracing::info!(database, "created PostgreSQL database"),
        // Another instance created it first.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
        Err(err) => return Err(connect_error(err)),
    }
    admin.close().await.ok();
    Ok(())
}

fn count(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let n: i64 = row.try_get(column)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn session_from_row(row: &PgRow, now: DateTime<Utc>) -> Result<Session, StoreError> {
    let user: String = row.try_get("user_id")?;
    let holder: Option<Uuid> = row.try_get("turn_holder")?;
    let expires: Option<DateTime<Utc>> = row.try_get("turn_expires_at")?;
    Ok(Session {
        id: SessionId(row.try_get("id")?),
        user_id: UserId::parse(&user).map_err(|e| StoreError::Internal(e.to_string()))?,
        subdir: row.try_get("subdir")?,
        cwd: row.try_get("cwd")?,
        metadata: nul::decode(row.try_get("metadata")?, row.try_get("metadata_escaped")?)?,
        created_at: row.try_get("created_at")?,
        last_active_at: row.try_get("last_active_at")?,
        message_count: count(row, "message_count")?,
        usage: UsageTotals {
            input_tokens: count(row, "input_tokens")?,
            output_tokens: count(row, "output_tokens")?,
            cache_creation_input_tokens: count(row, "cache_creation_tokens")?,
            cache_read_input_tokens: count(row, "cache_read_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
        },
        turn_running: holder.is_some() && expires.is_some_and(|e| e > now),
        todos: todos_from_json(nul::decode(
            row.try_get("todos")?,
            row.try_get("todos_escaped")?,
        )?)?,
        options: options_from_json(nul::decode(
            row.try_get("options")?,
            row.try_get("options_escaped")?,
        )?)?,
        waiting_on: row
            .try_get::<Option<String>, _>("waiting_on")?
            .as_deref()
            .map(RequestKind::parse)
            .transpose()?,
        queued: count(row, "queued")?,
    })
}

const REQUEST_COLUMNS: &str = "id, kind, tool_use_id, tool_name, tool_input, tool_input_escaped, \
     reason, created_at, answer, answer_escaped";

fn request_from_row(row: &PgRow) -> Result<PersonRequest, StoreError> {
    let kind: String = row.try_get("kind")?;
    let answer: Option<serde_json::Value> = row.try_get("answer")?;
    let answer_escaped: bool = row.try_get("answer_escaped")?;
    Ok(PersonRequest {
        id: row.try_get("id")?,
        kind: RequestKind::parse(&kind)?,
        tool_use_id: row.try_get("tool_use_id")?,
        tool_name: row.try_get("tool_name")?,
        tool_input: nul::decode(
            row.try_get("tool_input")?,
            row.try_get("tool_input_escaped")?,
        )?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        answer: answer.map(|a| nul::decode(a, answer_escaped)).transpose()?,
    })
}

/// Passes the session ids other instances (and this one) `NOTIFY` on to
/// `notices` until `stop`. A notice lost while the connection is down is
/// made up for by the viewers' own polling.
async fn listen_for_events(
    pool: PgPool,
    notices: broadcast::Sender<SessionId>,
    stop: CancellationToken,
) {
    loop {
        let err = tokio::select! {
            () = stop.cancelled() => return,
            err = relay_notices(&pool, &notices) => err,
        };
        tracing::warn!(error = %err, "listening for other instances' events failed; retrying");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

/// Listens and relays notices until the connection fails.
async fn relay_notices(pool: &PgPool, notices: &broadcast::Sender<SessionId>) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(err) => return err,
    };
    if let Err(err) = listener.listen(EVENTS_CHANNEL).await {
        return err;
    }
    loop {
        match listener.recv().await {
            Ok(notice) => {
                if let Ok(id) = Uuid::parse_str(notice.payload()) {
                    let _ = notices.send(SessionId(id));
                }
            }
            Err(err) => return err,
        }
    }
}

/// Inserts frames of `turn` in one statement.
async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: SessionId,
    turn: Uuid,
    events: &[SessionEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = events.iter().map(|e| to_i64(e.id)).collect();
    let frames: Vec<&str> = events.iter().map(|e| e.frame.as_ref()).collect();
    sqlx::query(
        "INSERT INTO session_events (session_id, id, turn_id, frame, created_at)
         SELECT $1, e.id, $2, e.frame, $3 FROM UNNEST($4::BIGINT[], $5::TEXT[]) AS e (id, frame)",
    )
    .bind(id.0)
    .bind(turn)
    .bind(Utc::now())
    .bind(&ids)
    .bind(&frames)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn turn_from_row(row: &PgRow) -> Result<TurnRecord, StoreError> {
    let status: String = row.try_get("status")?;
    let code: Option<i32> = row.try_get("status_code")?;
    Ok(TurnRecord {
        id: row.try_get("id")?,
        status: TurnStatus::parse(&status)?,
        after_event_id: event_id(row.try_get::<i64, _>("first_event_id")?).saturating_sub(1),
        last_event_id: event_id(row.try_get("last_event_id")?),
        status_code: code.and_then(|c| u16::try_from(c).ok()),
        result: result_from_text(row.try_get("result")?)?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn kind(&self) -> StorageKind {
        StorageKind::Postgresql
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let (id, pad) = write_probe_row();
        sqlx::query("INSERT INTO write_probe (id, pad) VALUES ($1, $2)")
            .bind(&id)
            .bind(pad)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM write_probe WHERE id = $1")
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
        let mut tx = self.pool.begin().await?;
        let inserted = self.insert_session(&mut tx, id, &new, now, limits).await?;
        tx.commit().await?;
        if !inserted {
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
        let rows = sqlx::query(
            "SELECT id, created_at FROM sessions
             WHERE last_active_at >= $1 AND ($2::text IS NULL OR user_id = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
             ORDER BY created_at, id
             LIMIT $5",
        )
        .bind(cutoff)
        .bind(user.map(UserId::as_str))
        .bind(after.map(|k| k.created_at))
        .bind(after.map_or(Uuid::nil(), |k| k.id.0))
        .bind(limit.map(to_i64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionKey {
                    id: SessionId(row.try_get("id")?),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn count_live(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE last_active_at >= $1")
            .bind(self.cutoff(Utc::now()))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE id = $1 AND last_active_at >= $2")
            .bind(id.0)
            .bind(self.cutoff(Utc::now()))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn touch(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = Utc::now();
        let updated = sqlx::query(
            "UPDATE sessions SET last_active_at = $1 WHERE id = $2 AND last_active_at >= $3",
        )
        .bind(now)
        .bind(id.0)
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
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE last_active_at < $1
             AND (turn_expires_at IS NULL OR turn_expires_at < $2)",
        )
        .bind(self.cutoff(now))
        .bind(now)
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
        let now = Utc::now();
        for message in messages {
            let (content, escaped) = nul::encode(&message.content);
            sqlx::query(
                "INSERT INTO messages (session_id, seq, role, content, content_escaped, created_at)
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = $1),
                         $2, $3, $4, $5)",
            )
            .bind(id.0)
            .bind(&message.role)
            .bind(content.as_ref())
            .bind(escaped)
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
        let sql = match seq {
            None => {
                "INSERT INTO messages (session_id, seq, role, content, content_escaped, created_at)
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = $1),
                         $2, $3, $4, $5)
                 RETURNING seq"
            }
            Some(_) => {
                "UPDATE messages SET role = $2, content = $3, content_escaped = $4, created_at = $5
                 WHERE session_id = $1 AND seq = $6
                 RETURNING seq"
            }
        };
        let (content, escaped) = nul::encode(&message.content);
        let mut query = sqlx::query(sql)
            .bind(id.0)
            .bind(&message.role)
            .bind(content.as_ref())
            .bind(escaped)
            .bind(Utc::now());
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
            "SELECT seq, role, content, content_escaped, created_at FROM messages
             WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.0)
        .bind(after_seq)
        .bind(limit.map(to_i64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn change(&self, id: SessionId, change: SessionChange) -> Result<Changed, StoreError> {
        let now = Utc::now();
        let options = change.options.map(|o| {
            let value = o.to_json();
            let (encoded, escaped) = nul::encode(&value);
            (encoded.into_owned(), escaped)
        });
        let metadata = change.metadata.as_ref().map(nul::encode);
        let updated = sqlx::query(
            "UPDATE sessions SET
                 options = COALESCE($1, options),
                 options_escaped = COALESCE($2, options_escaped),
                 metadata = COALESCE($3, metadata),
                 metadata_escaped = COALESCE($4, metadata_escaped)
             WHERE id = $5 AND last_active_at >= $6
               AND (turn_holder IS NULL OR turn_expires_at IS NULL OR turn_expires_at < $7)",
        )
        .bind(options.as_ref().map(|(o, _)| o))
        .bind(options.as_ref().map(|(_, escaped)| *escaped))
        .bind(metadata.as_ref().map(|(m, _)| m.as_ref()))
        .bind(metadata.as_ref().map(|(_, escaped)| *escaped))
        .bind(id.0)
        .bind(self.cutoff(now))
        .bind(now)
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
        let todos = serde_json::to_value(todos).map_err(|e| StoreError::Internal(e.to_string()))?;
        let (todos, todos_escaped) = nul::encode(&todos);
        let mut tx = self.pool.begin().await?;
        let live: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM sessions WHERE id = $1 AND last_active_at >= $2")
                .bind(from.source.0)
                .bind(self.cutoff(now))
                .fetch_optional(&mut *tx)
                .await?;
        if live.is_none() {
            return Err(StoreError::NotFound);
        }
        if !self.insert_session(&mut tx, id, &new, now, limits).await? {
            drop(tx);
            return Err(describe_limit(self, &new.user_id, limits).await);
        }
        sqlx::query(
            "UPDATE sessions SET todos = $1, todos_escaped = $2, message_count = $3 WHERE id = $4",
        )
        .bind(todos.as_ref())
        .bind(todos_escaped)
        .bind(to_i64(from.message_count))
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        // Message times are kept: the copy is the same conversation.
        sqlx::query(
            "INSERT INTO messages (session_id, seq, role, content, content_escaped, created_at)
             SELECT $1, seq, role, content, content_escaped, created_at FROM messages
             WHERE session_id = $2 AND ($3::bigint IS NULL OR seq <= $3)",
        )
        .bind(id.0)
        .bind(from.source.0)
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
                message_count = message_count + $1,
                input_tokens = input_tokens + $2,
                output_tokens = output_tokens + $3,
                cache_creation_tokens = cache_creation_tokens + $4,
                cache_read_tokens = cache_read_tokens + $5,
                cost_usd = cost_usd + $6,
                last_active_at = $7
             WHERE id = $8",
        )
        .bind(to_i64(user_messages))
        .bind(to_i64(usage.input_tokens))
        .bind(to_i64(usage.output_tokens))
        .bind(to_i64(usage.cache_creation_input_tokens))
        .bind(to_i64(usage.cache_read_input_tokens))
        .bind(usage.cost_usd)
        .bind(now)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        // The user's day, which daily quotas on every instance read: it
        // outlives the session.
        sqlx::query(
            "INSERT INTO usage_daily AS u (user_id, day, input_tokens, output_tokens,
                 cache_creation_tokens, cache_read_tokens, cost_usd, turns)
             SELECT user_id, $1, $2, $3, $4, $5, $6, $7 FROM sessions WHERE id = $8
             ON CONFLICT (user_id, day) DO UPDATE SET
                 input_tokens = u.input_tokens + excluded.input_tokens,
                 output_tokens = u.output_tokens + excluded.output_tokens,
                 cache_creation_tokens = u.cache_creation_tokens + excluded.cache_creation_tokens,
                 cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
                 cost_usd = u.cost_usd + excluded.cost_usd,
                 turns = u.turns + excluded.turns",
        )
        .bind(now.date_naive())
        .bind(to_i64(usage.input_tokens))
        .bind(to_i64(usage.output_tokens))
        .bind(to_i64(usage.cache_creation_input_tokens))
        .bind(to_i64(usage.cache_read_input_tokens))
        .bind(usage.cost_usd)
        .bind(to_i64(user_messages))
        .bind(id.0)
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
        // A single conditional UPDATE: PostgreSQL re-checks the WHERE clause
        // after waiting on a concurrent writer, so only one holder wins.
        let taken = sqlx::query(
            "UPDATE sessions SET turn_holder = $1, turn_expires_at = $2, last_active_at = $3,
                 interrupt_requested = FALSE
             WHERE id = $4 AND last_active_at >= $5
               AND (turn_holder IS NULL OR turn_expires_at IS NULL OR turn_expires_at < $3)",
        )
        .bind(holder)
        .bind(lease_until(now, lease))
        .bind(now)
        .bind(id.0)
        .bind(self.cutoff(now))
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
        let interrupt: Option<bool> = sqlx::query_scalar(
            "UPDATE sessions SET turn_expires_at = $1, last_active_at = $2
             WHERE id = $3 AND turn_holder = $4
             RETURNING interrupt_requested",
        )
        .bind(lease_until(now, lease))
        .bind(now)
        .bind(id.0)
        .bind(holder)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match interrupt {
            None => Renewal::Lost,
            Some(false) => Renewal::Held,
            Some(true) => Renewal::InterruptRequested,
        })
    }

    async fn request_interrupt(&self, id: SessionId) -> Result<bool, StoreError> {
        let asked = sqlx::query(
            "UPDATE sessions SET interrupt_requested = TRUE
             WHERE id = $1 AND turn_holder IS NOT NULL AND turn_expires_at > $2",
        )
        .bind(id.0)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(asked > 0)
    }

    async fn release_turn(&self, id: SessionId, holder: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET turn_holder = NULL, turn_expires_at = NULL, last_active_at = $1,
                 interrupt_requested = FALSE
             WHERE id = $2 AND turn_holder = $3",
        )
        .bind(Utc::now())
        .bind(id.0)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_todos(&self, id: SessionId, todos: &[Todo]) -> Result<(), StoreError> {
        let value = serde_json::to_value(todos).map_err(|e| StoreError::Internal(e.to_string()))?;
        let (value, escaped) = nul::encode(&value);
        let updated = sqlx::query(
            "UPDATE sessions SET todos = $1, todos_escaped = $2
             WHERE id = $3 AND last_active_at >= $4",
        )
        .bind(value.as_ref())
        .bind(escaped)
        .bind(id.0)
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
        let (input, escaped) = nul::encode(&request.tool_input);
        sqlx::query(
            "INSERT INTO session_requests (id, session_id, kind, tool_use_id, tool_name,
                 tool_input, tool_input_escaped, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(request.id)
        .bind(id.0)
        .bind(request.kind.as_str())
        .bind(&request.tool_use_id)
        .bind(&request.tool_name)
        .bind(input.as_ref())
        .bind(escaped)
        // PostgreSQL text cannot hold a NUL, which a quoted command may.
        .bind(request.reason.replace('\0', "\u{fffd}"))
        .bind(request.created_at)
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
            "SELECT {REQUEST_COLUMNS} FROM session_requests WHERE session_id = $1 AND id = $2"
        ))
        .bind(id.0)
        .bind(request_id)
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
             WHERE session_id = $1 AND kind = $2 AND answer IS NULL
             ORDER BY created_at, id"
        ))
        .bind(id.0)
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
        let (value, escaped) = nul::encode(answer);
        // The conditional UPDATE is re-checked after a concurrent answer
        // commits, so exactly one answer wins.
        let updated = sqlx::query(
            "UPDATE session_requests SET answer = $1, answer_escaped = $2, answered_at = $3
             WHERE session_id = $4 AND id = $5 AND answer IS NULL",
        )
        .bind(value.as_ref())
        .bind(escaped)
        .bind(Utc::now())
        .bind(id.0)
        .bind(request_id)
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
            "SELECT rule FROM session_allow_rules WHERE session_id = $1 ORDER BY created_at, rule",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn add_allow_rule(&self, id: SessionId, rule: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO session_allow_rules (session_id, rule, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (session_id, rule) DO NOTHING",
        )
        .bind(id.0)
        .bind(rule)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enqueue_message(
        &self,
        id: SessionId,
        message: &QueuedMessage,
    ) -> Result<Option<u64>, StoreError> {
        let now = Utc::now();
        let text = serde_json::Value::String(message.message.clone());
        let (text, escaped) = nul::encode(&text);
        let mut tx = self.pool.begin().await?;
        // The session row stays locked until commit: the holder's
        // `next_queued_or_release` waits for this message and then sees it.
        let held: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sessions
             WHERE id = $1 AND turn_holder IS NOT NULL AND turn_expires_at > $2
             FOR UPDATE",
        )
        .bind(id.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(None);
        }
        let queued: i64 = sqlx::query_scalar(
            "INSERT INTO queued_messages (session_id, message, message_escaped, timeout_ms, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(id.0)
        .bind(text.as_ref())
        .bind(escaped)
        .bind(i64::try_from(message.timeout.as_millis()).unwrap_or(i64::MAX))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let position: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM queued_messages WHERE session_id = $1 AND id <= $2",
        )
        .bind(id.0)
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
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        // Locks the session row first, so a message being queued is either
        // committed (and seen below) or waits and then finds no turn.
        let held: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE id = $1 AND turn_holder = $2 FOR UPDATE",
        )
        .bind(id.0)
        .bind(holder)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(None);
        }
        let next = sqlx::query(
            "DELETE FROM queued_messages
             WHERE id = (SELECT id FROM queued_messages WHERE session_id = $1 ORDER BY id LIMIT 1)
             RETURNING message, message_escaped, timeout_ms",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let next = match next {
            Some(row) => {
                sqlx::query(
                    "UPDATE sessions SET interrupt_requested = FALSE, last_active_at = $1
                     WHERE id = $2",
                )
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
                let message =
                    nul::decode(row.try_get("message")?, row.try_get("message_escaped")?)?;
                let timeout: i64 = row.try_get("timeout_ms")?;
                Some(QueuedMessage {
                    message: message.as_str().unwrap_or_default().to_owned(),
                    timeout: Duration::from_millis(u64::try_from(timeout).unwrap_or(0)),
                })
            }
            None => {
                sqlx::query(
                    "UPDATE sessions SET turn_holder = NULL, turn_expires_at = NULL,
                         last_active_at = $1, interrupt_requested = FALSE
                     WHERE id = $2 AND turn_holder = $3",
                )
                .bind(now)
                .bind(id.0)
                .bind(holder)
                .execute(&mut *tx)
                .await?;
                None
            }
        };
        tx.commit().await?;
        Ok(next)
    }

    async fn begin_turn(&self, id: SessionId, turn: Uuid) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar(
            "INSERT INTO turns (session_id, id, status, first_event_id, last_event_id, started_at)
             SELECT $1, $2, 'running', n + 1, n, $3
             FROM (SELECT COALESCE(MAX(last_event_id), 0) AS n FROM turns WHERE session_id = $1) t
             RETURNING last_event_id",
        )
        .bind(id.0)
        .bind(turn)
        .bind(Utc::now())
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
        sqlx::query("UPDATE turns SET last_event_id = $1 WHERE session_id = $2 AND id = $3")
            .bind(to_i64(last.id))
            .bind(id.0)
            .bind(turn)
            .execute(&mut *tx)
            .await?;
        // Delivered to every listening instance when the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(id.0.to_string())
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
            "UPDATE turns SET status = $1, status_code = $2, result = $3, finished_at = $4,
                 last_event_id = GREATEST(last_event_id, $5)
             WHERE session_id = $6 AND id = $7",
        )
        .bind(ended.status.as_str())
        .bind(i32::from(ended.status_code))
        .bind(result)
        .bind(now)
        .bind(to_i64(ended.last_event_id))
        .bind(id.0)
        .bind(turn)
        .execute(&mut *tx)
        .await?;
        // The newest `turns` turns stay, with their events; the newest turn
        // always stays, as it carries the session's last event id.
        let keep = i64::from(retention.turns.max(1));
        let oldest_kept: Option<i64> = sqlx::query_scalar(
            "SELECT first_event_id FROM turns WHERE session_id = $1
             ORDER BY first_event_id DESC LIMIT 1 OFFSET $2",
        )
        .bind(id.0)
        .bind(keep - 1)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(oldest) = oldest_kept {
            sqlx::query("DELETE FROM session_events WHERE session_id = $1 AND id < $2")
                .bind(id.0)
                .bind(oldest)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM turns WHERE session_id = $1 AND first_event_id < $2")
                .bind(id.0)
                .bind(oldest)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(cutoff) = events_cutoff(retention, now) {
            sqlx::query("DELETE FROM session_events WHERE created_at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(id.0.to_string())
            .execute(&mut *tx)
            .await?;
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
            "SELECT id, frame FROM session_events WHERE session_id = $1 AND id > $2
             ORDER BY id LIMIT $3",
        )
        .bind(id.0)
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
             FROM turns WHERE session_id = $1 AND id = $2",
        )
        .bind(id.0)
        .bind(turn)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(key.user_id.as_str())
        .bind(key.name.as_deref())
        .bind(&key.secret_hash)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    async fn list_keys(&self, user: Option<&UserId>) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::TEXT IS NULL OR user_id = $1)
             ORDER BY created_at, id"
        ))
        .bind(user.map(UserId::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(at)
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
             WHERE ($1::TEXT IS NULL OR user_id = $1) AND day >= $2 AND day <= $3
             ORDER BY day, user_id",
        )
        .bind(user.map(UserId::as_str))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let user: String = row.try_get("user_id")?;
                Ok(DailyUsage {
                    user_id: UserId::parse(&user)
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    day: row.try_get("day")?,
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM rate_windows WHERE bucket = $1 AND window_start < $2")
            .bind(bucket)
            .bind(window_start)
            .execute(&mut *tx)
            .await?;
        // One statement takes the row lock, so instances counting at once
        // each see their own increment.
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO rate_windows AS w (bucket, window_start, count) VALUES ($1, $2, 1)
             ON CONFLICT (bucket, window_start) DO UPDATE SET count = w.count + 1
             RETURNING count",
        )
        .bind(bucket)
        .bind(window_start)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

const KEY_COLUMNS: &str = "id, user_id, name, secret_hash, created_at, expires_at, revoked_at";

fn key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
    let user: String = row.try_get("user_id")?;
    Ok(StoredKey {
        id: row.try_get("id")?,
        user_id: UserId::parse(&user).map_err(|e| StoreError::Internal(e.to_string()))?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// PostgreSQL's jsonb (and text) cannot hold U+0000, which SQLite stores and
/// which users, models and tool output all produce. A value containing one is
/// stored with every string and key escaped (`\` as `\\`, NUL as `\0`) and its
/// row flagged, so values without NUL, all older rows among them, stay plain,
/// queryable jsonb and only flagged rows are decoded.
mod nul {
    use std::borrow::Cow;
    use std::convert::Infallible;

    use serde_json::{Map, Value};

    use super::StoreError;

    /// The value to store and whether it was escaped.
    pub(super) fn encode(value: &Value) -> (Cow<'_, Value>, bool) {
        if contains_nul(value) {
            let escaped = map_strings(value, &mut |s| Ok::<_, Infallible>(escape(s)));
            (
                Cow::Owned(escaped.unwrap_or_else(|never| match never {})),
                true,
            )
        } else {
            (Cow::Borrowed(value), false)
        }
    }

    /// The value as it was before `encode`.
    pub(super) fn decode(value: Value, escaped: bool) -> Result<Value, StoreError> {
        if escaped {
            map_strings(&value, &mut unescape)
        } else {
            Ok(value)
        }
    }

    fn contains_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(contains_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    fn map_strings<E>(
        value: &Value,
        f: &mut impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Value, E> {
        Ok(match value {
            Value::String(s) => Value::String(f(s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| map_strings(v, f))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(f(k)?, map_strings(v, f)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn escape(s: &str) -> String {
        s.replace('\\', "\\\\").replace('\0', "\\0")
    }

    fn unescape(s: &str) -> Result<String, StoreError> {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('0') => out.push('\0'),
                other => {
                    return Err(StoreError::Internal(format!(
                        "corrupt escaped value: '\\' followed by {other:?}"
                    )));
                }
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        use super::*;

        #[test]
        fn values_with_nul_round_trip_and_others_are_stored_as_they_are() {
            let plain = json!({"a": "back\\slash \\0 not a NUL", "n": [1, null, true]});
            let (stored, escaped) = encode(&plain);
            assert!(!escaped);
            assert_eq!(*stored, plain);

            let tricky = json!({"k\u{0}ey": ["x\u{0}y", "\\0", "\\", "\\\u{0}", ""], "n": 1.5});
            let (stored, escaped) = encode(&tricky);
            assert!(escaped);
            assert!(!stored.to_string().contains("\\u0000"), "{stored}");
            assert_eq!(decode(stored.into_owned(), true).unwrap(), tricky);
        }

        #[test]
        fn a_corrupt_escape_is_an_error_not_a_guess() {
            assert!(decode(json!("bad \\x escape"), true).is_err());
            assert!(decode(json!("trailing \\"), true).is_err());
        }
    }
}
