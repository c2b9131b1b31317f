//! Direct conversations, edits and deletes, and read markers (migration `0004_messaging`).

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::{message, now_ms, ChatMessage, Result, Store};

/// A direct conversation as one of its two members sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectConversation {
    pub room_id: i64,
    /// The other member.
    pub user_id: i64,
    pub user_name: String,
    /// Messages from the other member this one has not read.
    pub unread: i64,
    /// The newest message's id, for ordering (`null` before the first one).
    pub last_message_id: Option<i64>,
}

/// A room member.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: i64,
    pub user_name: String,
}

/// Where a user's read marker stands in a room.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadState {
    pub room_id: i64,
    pub last_read_message_id: i64,
    pub unread: i64,
}

/// A message with what only the server needs to know (whether it is deleted).
pub struct StoredMessage {
    pub message: ChatMessage,
    pub deleted: bool,
}

/// Counts a member's unread messages: after their marker, since they joined, from others,
/// not deleted. `$1` is the user; the caller adds the room filter.
const UNREAD: &str = "SELECT rm.room_id, COUNT(m.id) AS unread FROM room_members rm \
     LEFT JOIN read_markers r ON r.room_id = rm.room_id AND r.user_id = rm.user_id \
     LEFT JOIN messages m ON m.room_id = rm.room_id \
       AND m.id > COALESCE(r.last_read_message_id, 0) AND m.created_at >= rm.joined_at \
       AND m.user_id <> rm.user_id AND m.deleted_at IS NULL \
     WHERE rm.user_id = $1";

impl Store {
    /// The room of the direct conversation between `from` and `to`, created on first use with
    /// both as its members. `true` when the room or a membership is new: a member who left
    /// comes back with the next message, and a conversation both left (closed, as every
    /// private room its last member leaves) opens again, history and all. Both are plain
    /// members: a direct conversation has no owner.
    pub async fn direct_room(&self, from: (i64, &str), to: (i64, &str)) -> Result<(i64, bool)> {
        let (low, high) = if from.0 < to.0 {
            (from, to)
        } else {
            (to, from)
        };
        loop {
            let existing = sqlx::query(
                "SELECT room_id FROM direct_conversations WHERE user_low = $1 AND user_high = $2",
            )
            .bind(low.0)
            .bind(high.0)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = existing {
                let room_id: i64 = row.try_get("room_id")?;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE rooms SET closed_at = NULL WHERE id = $1 AND closed_at IS NOT NULL",
                )
                .bind(room_id)
                .execute(&mut *tx)
                .await?;
                let mut rejoined = false;
                for user_id in [low.0, high.0] {
                    let added = sqlx::query(
                        "INSERT INTO room_members (room_id, user_id, joined_at, role) \
                         VALUES ($1, $2, $3, 'member') ON CONFLICT (room_id, user_id) DO NOTHING",
                    )
                    .bind(room_id)
                    .bind(user_id)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                    rejoined |= added.rows_affected() > 0;
                }
                tx.commit().await?;
                return Ok((room_id, rejoined));
            }
            let mut tx = self.pool.begin().await?;
            let now = now_ms();
            let room = sqlx::query(
                "INSERT INTO rooms (name, is_private, created_by, created_at) \
                 VALUES ($1, 1, $2, $3) RETURNING id",
            )
            .bind(format!("{} & {}", low.1, high.1))
            .bind(from.0)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let room_id: i64 = room.try_get("id")?;
            // Two first messages at once: one conversation wins, the other sender uses it.
            let claimed = sqlx::query(
                "INSERT INTO direct_conversations (room_id, user_low, user_high) \
                 VALUES ($1, $2, $3) ON CONFLICT (user_low, user_high) DO NOTHING \
                 RETURNING room_id",
            )
            .bind(room_id)
            .bind(low.0)
            .bind(high.0)
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                tx.rollback().await?;
                continue;
            }
            for user_id in [low.0, high.0] {
                sqlx::query(
                    "INSERT INTO room_members (room_id, user_id, joined_at, role) \
                     VALUES ($1, $2, $3, 'member')",
                )
                .bind(room_id)
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok((room_id, true));
        }
    }

    /// Whether the room is a direct conversation.
    pub async fn is_direct(&self, room_id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT room_id FROM direct_conversations WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The direct conversations a user is in, most recently active first.
    pub async fn direct_conversations(&self, user_id: i64) -> Result<Vec<DirectConversation>> {
        let rows = sqlx::query(
            "SELECT d.room_id, u.id AS other_id, u.user_name AS other_name, \
               (SELECT MAX(m.id) FROM messages m WHERE m.room_id = d.room_id) AS last_message_id \
             FROM direct_conversations d \
             JOIN room_members me ON me.room_id = d.room_id AND me.user_id = $1 \
             JOIN users u ON u.id = CASE WHEN d.user_low = $1 THEN d.user_high ELSE d.user_low END \
             ORDER BY last_message_id DESC, d.room_id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let unread = self.unread_counts(user_id).await?;
        rows.iter()
            .map(|row| {
                let room_id: i64 = row.try_get("room_id")?;
                Ok(DirectConversation {
                    room_id,
                    user_id: row.try_get("other_id")?,
                    user_name: row.try_get("other_name")?,
                    unread: unread.get(&room_id).copied().unwrap_or(0),
                    last_message_id: row.try_get("last_message_id")?,
                })
            })
            .collect()
    }

    /// The ids of the direct conversations a user is in.
    pub async fn direct_room_ids(&self, user_id: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT d.room_id FROM direct_conversations d \
             JOIN room_members me ON me.room_id = d.room_id AND me.user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("room_id")).collect()
    }

    /// A message by id, deleted or not.
    pub async fn message_by_id(&self, message_id: i64) -> Result<Option<StoredMessage>> {
        let row = sqlx::query(
            "SELECT m.id, m.room_id, m.user_id, u.user_name, m.content, m.created_at, \
               m.edited_at, m.deleted_at \
             FROM messages m JOIN users u ON u.id = m.user_id WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(StoredMessage {
                message: message(&row)?,
                deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
            })
        })
        .transpose()
    }

    /// Replaces the text of `author`'s message; `None` when it is gone (deleted meanwhile).
    pub async fn edit_message(
        &self,
        message_id: i64,
        author: i64,
        content: &str,
    ) -> Result<Option<ChatMessage>> {
        let edited = sqlx::query(
            "UPDATE messages SET content = $1, edited_at = $2 \
             WHERE id = $3 AND user_id = $4 AND deleted_at IS NULL",
        )
        .bind(content)
        .bind(now_ms())
        .bind(message_id)
        .bind(author)
        .execute(&self.pool)
        .await?;
        if edited.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(self.message_by_id(message_id).await?.map(|m| m.message))
    }

    /// Deletes `author`'s message: its text is erased and it leaves the history. `false` when
    /// it was already deleted.
    pub async fn delete_message(&self, message_id: i64, author: i64) -> Result<bool> {
        let deleted = sqlx::query(
            "UPDATE messages SET content = '', deleted_at = $1 \
             WHERE id = $2 AND user_id = $3 AND deleted_at IS NULL",
        )
        .bind(now_ms())
        .bind(message_id)
        .bind(author)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Whether the message exists (deleted or not) in the room.
    pub async fn message_in_room(&self, room_id: i64, message_id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM messages WHERE id = $1 AND room_id = $2")
            .bind(message_id)
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Moves the user's marker in the room up to `message_id` (never back) and returns where
    /// it stands.
    pub async fn mark_read(
        &self,
        room_id: i64,
        user_id: i64,
        message_id: i64,
    ) -> Result<ReadState> {
        sqlx::query(
            "INSERT INTO read_markers (room_id, user_id, last_read_message_id) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET last_read_message_id = \
               CASE WHEN excluded.last_read_message_id > read_markers.last_read_message_id \
               THEN excluded.last_read_message_id ELSE read_markers.last_read_message_id END",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        let marker = sqlx::query(
            "SELECT last_read_message_id FROM read_markers WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        let unread = sqlx::query(&format!("{UNREAD} AND rm.room_id = $2 GROUP BY rm.room_id"))
            .bind(user_id)
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(ReadState {
            room_id,
            last_read_message_id: marker.try_get("last_read_message_id")?,
            unread: unread
                .map(|r| r.try_get("unread"))
                .transpose()?
                .unwrap_or(0),
        })
    }

    /// Unread counts of every room the user belongs to (the keys are exactly those rooms).
    pub async fn unread_counts(&self, user_id: i64) -> Result<HashMap<i64, i64>> {
        let rows = sqlx::query(&format!("{UNREAD} GROUP BY rm.room_id"))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("room_id")?, r.try_get("unread")?)))
            .collect()
    }
}
