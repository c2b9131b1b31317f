//! Persistence: users, rooms, memberships and messages, in SQLite or PostgreSQL (chosen by the
//! URL at start-up), with migrations applied at start-up.

use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod messaging;
pub use messaging::{DirectConversation, Member, ReadState, StoredMessage};

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

/// A stored chat message, as clients receive it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: i64,
    pub room_id: i64,
    pub user_id: i64,
    pub user_name: String,
    pub content: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When the author last edited it (RFC 3339, UTC); `null` when never edited.
    pub edited_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub id: i64,
    pub name: String,
    pub is_private: bool,
    pub created_by: i64,
}

pub struct User {
    pub id: i64,
    pub user_name: String,
    pub password_hash: String,
}

/// A member of a room, as `GET /rooms/{id}/participants` lists them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub user_id: i64,
    pub user_name: String,
    /// `owner` or `member`.
    pub role: String,
    /// RFC 3339, UTC.
    pub joined_at: String,
}

/// What a member's leaving changed besides their membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Departure {
    /// The owner left: this member owns the room now.
    pub new_owner: Option<i64>,
    /// The last member left a private room: it is closed (nobody could reach it again).
    pub closed: bool,
}

/// A snapshot of the connection pool (sampled for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, in use or idle.
    pub size: u32,
    /// Open connections no request holds.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

/// The role that lets a member add and remove others.
pub const OWNER: &str = "owner";

pub type Result<T> = std::result::Result<T, sqlx::Error>;

/// A short reason for an operator (health checks, start-up): no SQL, no connection details.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::PoolTimedOut => "no connection became available in time".into(),
        sqlx::Error::Io(e) => format!("unreachable ({})", e.kind()),
        sqlx::Error::Tls(_) => "the TLS handshake failed".into(),
        sqlx::Error::Database(e) => match e.code() {
            Some(code) => format!("the database refused the request (code {code})"),
            None => "the database refused the request".into(),
        },
        sqlx::Error::Configuration(_) => "the database URL is invalid".into(),
        sqlx::Error::Migrate(e) => format!("a migration failed: {e}"),
        _ => "the database connection failed".into(),
    }
}

/// Logs a failed database call (unavailability as a warning, anything else as an error) and
/// counts it in `chat.db.errors` by a fixed `error.type`.
pub fn log_error(error: &sqlx::Error) {
    let kind = match error {
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::PoolClosed => "pool_closed",
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "io",
        sqlx::Error::Database(_) => "database",
        _ => "other",
    };
    metrics::counter!("chat.db.errors", "error.type" => kind).increment(1);
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::warn!(reason = %describe(error), "database unavailable")
        }
        _ => tracing::error!(reason = %describe(error), %error, "database error"),
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn message(row: &AnyRow) -> Result<ChatMessage> {
    Ok(ChatMessage {
        id: row.try_get("id")?,
        room_id: row.try_get("room_id")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        content: row.try_get("content")?,
        created_at: rfc3339(row.try_get("created_at")?),
        edited_at: row.try_get::<Option<i64>, _>("edited_at")?.map(rfc3339),
    })
}

fn room(row: &AnyRow) -> Result<Room> {
    Ok(Room {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_private: row.try_get::<i64, _>("is_private")? != 0,
        created_by: row.try_get("created_by")?,
    })
}

impl Store {
    /// Connects and applies the migrations for the database the URL names. A request waits at
    /// most `acquire_timeout` for a connection (then fails, and the caller answers 503).
    pub async fn connect(url: &str, acquire_timeout: Duration) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        // SQLite takes one writer at a time: one connection avoids "database is locked".
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 10 })
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await?;
        if sqlite {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        Ok(Store { pool })
    }

    /// The connection pool now: connections open, of which idle, and the most it opens.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// Creates a user; `Ok(None)` when the name (its key: case and Unicode form folded) is
    /// taken.
    pub async fn create_user(
        &self,
        user_name: &str,
        name_key: &str,
        password_hash: &str,
    ) -> Result<Option<i64>> {
        let row = sqlx::query(
            "INSERT INTO users (user_name, name_key, password_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(user_name)
        .bind(name_key)
        .bind(password_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("id")).transpose()
    }

    /// The account a login names: by its key; an account that collided with another before
    /// names were folded (`ALICE` beside `alice`) by its exact name first.
    pub async fn user_for_login(&self, name_key: &str, typed: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT 0 AS exact, id, user_name, password_hash FROM users \
             WHERE user_name = $1 AND name_key <> $2 \
             UNION ALL SELECT 1 AS exact, id, user_name, password_hash FROM users \
             WHERE name_key = $3 ORDER BY exact LIMIT 1",
        )
        .bind(typed)
        .bind(name_key)
        .bind(name_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(User {
                id: r.try_get("id")?,
                user_name: r.try_get("user_name")?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    /// The account a name typed by a person means (`Alice` finds `alice`), as at login.
    pub async fn user_by_name(&self, typed: &str) -> Result<Option<User>> {
        self.user_for_login(&crate::accounts::name_key(typed), typed)
            .await
    }

    /// The id of a built-in account that cannot log in (the assistant), creating it if needed.
    pub async fn system_user(&self, user_name: &str) -> Result<i64> {
        let key = crate::accounts::name_key(user_name);
        // "!" is no valid password hash: nobody can log in as this user.
        if let Some(id) = self.create_user(user_name, &key, "!").await? {
            return Ok(id);
        }
        let row = sqlx::query("SELECT id FROM users WHERE name_key = $1")
            .bind(&key)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("id")
    }

    /// A user's name, from the database (never from what a token claims).
    pub async fn user_name(&self, user_id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT user_name FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("user_name")).transpose()
    }

    pub async fn user_exists(&self, user_id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Creates a room; its creator is its first member.
    pub async fn create_room(&self, name: &str, is_private: bool, creator: i64) -> Result<Room> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO rooms (name, is_private, created_by, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, name, is_private, created_by",
        )
        .bind(name)
        .bind(i64::from(is_private))
        .bind(creator)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let created = room(&row)?;
        sqlx::query(
            "INSERT INTO room_members (room_id, user_id, joined_at, role) VALUES ($1, $2, $3, $4)",
        )
        .bind(created.id)
        .bind(creator)
        .bind(now_ms())
        .bind(OWNER)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn room(&self, room_id: i64) -> Result<Option<Room>> {
        let row = sqlx::query(
            "SELECT id, name, is_private, created_by FROM rooms WHERE id = $1 AND closed_at IS NULL",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(room).transpose()
    }

    /// Public rooms, and private rooms the user belongs to.
    pub async fn visible_rooms(&self, user_id: i64) -> Result<Vec<Room>> {
        let rows = sqlx::query(
            "SELECT id, name, is_private, created_by FROM rooms WHERE closed_at IS NULL AND \
             (is_private = 0 OR id IN (SELECT room_id FROM room_members WHERE user_id = $1)) \
             ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(room).collect()
    }

    pub async fn is_member(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let row =
            sqlx::query("SELECT 1 AS one FROM room_members WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// A member's role (`owner` or `member`); `None` for non-members.
    pub async fn role(&self, room_id: i64, user_id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("role")).transpose()
    }

    /// Adds a member (the owner, if the room has none: a public room everyone left); returns
    /// whether they were new.
    pub async fn add_member(&self, room_id: i64, user_id: i64) -> Result<bool> {
        let result = sqlx::query(
            "INSERT INTO room_members (room_id, user_id, joined_at, role) \
             SELECT $1, $2, $3, CASE WHEN EXISTS (SELECT 1 FROM room_members \
             WHERE room_id = $4 AND role = 'owner') THEN 'member' ELSE 'owner' END WHERE 1 = 1 \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now_ms())
        .bind(room_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Removes a member; `None` when they were not one. An owner's leaving hands the room to
    /// its longest-standing member; the last member's leaving a private room closes it.
    pub async fn remove_member(&self, room_id: i64, user_id: i64) -> Result<Option<Departure>> {
        let mut tx = self.pool.begin().await?;
        let role: Option<String> =
            sqlx::query("SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("role"))
                .transpose()?;
        let Some(role) = role else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let next: Option<i64> = sqlx::query(
            "SELECT user_id FROM room_members WHERE room_id = $1 ORDER BY joined_at, user_id LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("user_id"))
        .transpose()?;
        let mut departure = Departure {
            new_owner: None,
            closed: false,
        };
        match next {
            Some(next) if role == OWNER => {
                sqlx::query(
                    "UPDATE room_members SET role = 'owner' WHERE room_id = $1 AND user_id = $2",
                )
                .bind(room_id)
                .bind(next)
                .execute(&mut *tx)
                .await?;
                departure.new_owner = Some(next);
            }
            Some(_) => {}
            None => {
                let closed = sqlx::query(
                    "UPDATE rooms SET closed_at = $1 WHERE id = $2 AND is_private <> 0",
                )
                .bind(now_ms())
                .bind(room_id)
                .execute(&mut *tx)
                .await?;
                departure.closed = closed.rows_affected() > 0;
            }
        }
        tx.commit().await?;
        Ok(Some(departure))
    }

    /// A room's members, owner first, then by when they joined.
    pub async fn participants(&self, room_id: i64) -> Result<Vec<Participant>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.user_name, m.role, m.joined_at FROM room_members m \
             JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 \
             ORDER BY CASE WHEN m.role = 'owner' THEN 0 ELSE 1 END, m.joined_at, m.user_id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Participant {
                    user_id: r.try_get("user_id")?,
                    user_name: r.try_get("user_name")?,
                    role: r.try_get("role")?,
                    joined_at: rfc3339(r.try_get("joined_at")?),
                })
            })
            .collect()
    }

    /// Oldest first, after `after` (a message id): what a client missed.
    pub async fn messages_after(
        &self,
        room_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChatMessage>> {
        let rows = sqlx::query(
            "SELECT m.id, m.room_id, m.user_id, u.user_name, m.content, m.created_at, m.edited_at \
             FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.id > $2 AND m.deleted_at IS NULL ORDER BY m.id LIMIT $3",
        )
        .bind(room_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message).collect()
    }

    /// The rooms a user belongs to (for joining their groups on connect).
    pub async fn rooms_of(&self, user_id: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT room_id FROM room_members WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get("room_id")).collect()
    }

    /// Stores a message; only then is it acknowledged to its sender.
    pub async fn add_message(
        &self,
        room_id: i64,
        user_id: i64,
        user_name: &str,
        content: &str,
    ) -> Result<ChatMessage> {
        let created_at = now_ms();
        let row = sqlx::query(
            "INSERT INTO messages (room_id, user_id, content, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(content)
        .bind(created_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(ChatMessage {
            id: row.try_get("id")?,
            room_id,
            user_id,
            user_name: user_name.to_owned(),
            content: content.to_owned(),
            created_at: rfc3339(created_at),
            edited_at: None,
        })
    }

    /// Newest first, before `before` (a message id) when given.
    pub async fn messages(
        &self,
        room_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ChatMessage>> {
        let rows = sqlx::query(
            "SELECT m.id, m.room_id, m.user_id, u.user_name, m.content, m.created_at, m.edited_at \
             FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.id < $2 AND m.deleted_at IS NULL \
             ORDER BY m.id DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message).collect()
    }
}
