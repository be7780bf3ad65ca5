//! The PostgreSQL store, for several instances sharing one database: creates
//! the database when missing and waits for the server at start-up.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Row};
use uuid::Uuid;

use super::{
    DailyUsage, LeaseOutcome, Limits, NewMessage, NewSession, Renewal, Session, SessionStore,
    StoreError, StoredKey, StoredMessage, Todo, UsageTotals, describe_limit, expiry_cutoff,
    lease_until, todos_from_json, write_probe_row,
};
use crate::config::{SessionSettings, StorageKind};
use crate::domain::{SessionId, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Serialises session creation across instances so limits hold exactly.
const CREATE_LOCK_KEY: i64 = 0x636c_6175_6465; // "claude"

pub struct PostgresStore {
    pool: PgPool,
    ttl: Option<Duration>,
}

const SESSION_COLUMNS: &str = "id, user_id, subdir, cwd, metadata, metadata_escaped, \
     created_at, last_active_at, message_count, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, \
     cost_usd, turn_holder, turn_expires_at, todos, todos_escaped";

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
        Ok(Self { pool, ttl })
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
        if limits.max_sessions > 0 || limits.max_sessions_per_user > 0 {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CREATE_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let (metadata, metadata_escaped) = nul::encode(&new.metadata);
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, subdir, cwd, metadata, metadata_escaped,
                                   created_at, last_active_at)
             SELECT $1, $2, $3, $4, $5, $10, $6, $6
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
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if inserted == 0 {
            return Err(describe_limit(self, &new.user_id, limits).await);
        }
        Ok(Session::created(id, new, now))
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.fetch(id).await
    }

    async fn list(&self, user: Option<&UserId>) -> Result<Vec<SessionId>, StoreError> {
        let cutoff = self.cutoff(Utc::now());
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sessions
             WHERE last_active_at >= $1 AND ($2::text IS NULL OR user_id = $2)
             ORDER BY created_at, id",
        )
        .bind(cutoff)
        .bind(user.map(UserId::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(SessionId).collect())
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

    async fn messages(&self, id: SessionId) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, role, content, content_escaped, created_at FROM messages
             WHERE session_id = $1 ORDER BY seq",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredMessage {
                    seq: row.try_get("seq")?,
                    role: row.try_get("role")?,
                    content: nul::decode(row.try_get("content")?, row.try_get("content_escaped")?)?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
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
