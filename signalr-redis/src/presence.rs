//! Presence across processes: each process keeps its own connections and group memberships
//! in two Redis hashes that expire unless refreshed, and a sorted set lists live processes.
//! A process that dies without cleaning up drops out after the presence TTL; one that loses
//! Redis rewrites its part whole when Redis returns.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{{prefix}:presence}:servers` | sorted set | server name, scored by its last heartbeat (Unix ms) |
//! | `{{prefix}:presence}:{server}:connections` | hash | connection id → user id (empty: none) |
//! | `{{prefix}:presence}:{server}:groups` | hash | `{connection id}\0{group}` → empty |
//!
//! The braces are a Redis Cluster hash tag: every presence key lives in one slot, so each
//! pipeline (and the atomic rewrite) runs on one shard.
//!
//! Queries read every live process's hashes: O(connections) per question, meant for the
//! occasional "who is here", not for every message.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signalr_core::backplane::PresenceQuery;
use tokio::sync::{mpsc, oneshot};

use crate::backplane::{Connection, Inner};

/// A queued change, with whoever waits for it to be written.
pub(crate) type QueuedOp = (PresenceOp, Option<oneshot::Sender<()>>);

/// A change to this process's presence.
pub(crate) enum PresenceOp {
    Connected(String, String),
    Disconnected(String),
    Joined(String, String),
    Left(String, String),
}

/// The key names.
pub(crate) struct PresenceKeys {
    /// `{{prefix}:presence}`: the hash tag every key starts with.
    prefix: String,
    servers: String,
    connections: String,
    groups: String,
}

impl PresenceKeys {
    pub(crate) fn new(prefix: &str, server: &str) -> Self {
        let tag = format!("{{{prefix}:presence}}");
        PresenceKeys {
            servers: format!("{tag}:servers"),
            connections: format!("{tag}:{server}:connections"),
            groups: format!("{tag}:{server}:groups"),
            prefix: tag,
        }
    }

    fn connections_of(&self, server: &str) -> String {
        format!("{}:{server}:connections", self.prefix)
    }

    fn groups_of(&self, server: &str) -> String {
        format!("{}:{server}:groups", self.prefix)
    }
}

/// The field naming one membership; connection ids never contain NUL.
fn membership(connection_id: &str, group: &str) -> String {
    format!("{connection_id}\0{group}")
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn backplane_error(e: impl std::fmt::Display) -> signalr_core::Error {
    signalr_core::Error::backplane(format!("presence is unavailable: {e}"))
}

/// Applies presence changes in batches and refreshes this process's entries.
pub(crate) async fn writer(inner: Weak<Inner>, mut ops: mpsc::Receiver<QueuedOp>) {
    let mut last_heartbeat: Option<Instant> = None;
    loop {
        let (heartbeat, wake) = match inner.upgrade() {
            Some(inner) => (inner.presence_ttl() / 3, inner.presence_wake()),
            None => return,
        };
        let mut batch = Vec::new();
        tokio::select! {
            op = ops.recv() => match op {
                Some(op) => batch.push(op),
                None => return,
            },
            _ = tokio::time::sleep(heartbeat) => {}
            _ = wake.notified() => {}
        }
        // Whatever else is queued, up to a bound, goes in the same round.
        let room = 1024usize.saturating_sub(batch.len());
        batch.extend(std::iter::from_fn(|| ops.try_recv().ok()).take(room));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if !inner.healthy() {
            // Whatever changes meanwhile is written whole on recovery.
            if !batch.is_empty() {
                inner.presence_dirty().store(true, Ordering::Release);
            }
            continue;
        }
        let mut conn = inner.connection();
        if inner.presence_dirty().swap(false, Ordering::AcqRel) {
            // The snapshot covers every change queued so far.
            while ops.try_recv().is_ok() {}
            if let Err(e) = rewrite(&inner, &mut conn).await {
                tracing::warn!(error = %e, "presence rewrite failed");
                inner.presence_dirty().store(true, Ordering::Release);
            }
            last_heartbeat = Some(Instant::now());
            continue;
        }
        let due = last_heartbeat.is_none_or(|at| at.elapsed() >= heartbeat);
        if batch.is_empty() && !due {
            continue;
        }
        let keys = inner.presence_keys();
        let mut pipe = redis::pipe();
        for (op, _) in &batch {
            match op {
                PresenceOp::Connected(id, user) => {
                    pipe.hset(&keys.connections, id, user).ignore();
                }
                PresenceOp::Disconnected(id) => {
                    pipe.hdel(&keys.connections, id).ignore();
                }
                PresenceOp::Joined(id, group) => {
                    pipe.hset(&keys.groups, membership(id, group), "").ignore();
                }
                PresenceOp::Left(id, group) => {
                    pipe.hdel(&keys.groups, membership(id, group)).ignore();
                }
            }
        }
        heartbeat_commands(&mut pipe, &inner);
        last_heartbeat = Some(Instant::now());
        let done =
            tokio::time::timeout(inner.presence_ttl(), pipe.query_async::<()>(&mut conn)).await;
        if !matches!(done, Ok(Ok(()))) {
            inner.presence_dirty().store(true, Ordering::Release);
        }
        // Written (or, on failure, left to the rewrite): waiters go on either way.
        for (_, waiter) in batch {
            if let Some(waiter) = waiter {
                let _ = waiter.send(());
            }
        }
    }
}

fn heartbeat_commands(pipe: &mut redis::Pipeline, inner: &Inner) {
    let keys = inner.presence_keys();
    let ttl = inner.presence_ttl();
    let ttl_s = ttl.as_secs().max(1) as i64;
    let now = unix_ms();
    pipe.zadd(&keys.servers, server_of(keys), now).ignore();
    pipe.zrembyscore(&keys.servers, "-inf", now - ttl.as_millis() as i64)
        .ignore();
    pipe.expire(&keys.connections, ttl_s).ignore();
    pipe.expire(&keys.groups, ttl_s).ignore();
}

/// The server name, recovered from the key (saves carrying it twice).
fn server_of(keys: &PresenceKeys) -> &str {
    keys.connections
        .strip_prefix(&format!("{}:", keys.prefix))
        .and_then(|rest| rest.strip_suffix(":connections"))
        .unwrap_or_default()
}

/// Replaces this process's entries with its current state, atomically.
async fn rewrite(inner: &Inner, conn: &mut Connection) -> Result<(), redis::RedisError> {
    let Some(local) = inner.local() else {
        return Ok(());
    };
    let keys = inner.presence_keys();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.del(&keys.connections).ignore();
    pipe.del(&keys.groups).ignore();
    let snapshot = local.connections();
    let connections: Vec<(String, String)> = snapshot
        .iter()
        .map(|(info, _)| {
            (
                info.id().to_owned(),
                info.user_id().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let memberships: Vec<(String, &str)> = snapshot
        .iter()
        .flat_map(|(info, groups)| {
            groups
                .iter()
                .map(move |group| (membership(info.id(), group), ""))
        })
        .collect();
    for chunk in connections.chunks(1000) {
        pipe.hset_multiple(&keys.connections, chunk).ignore();
    }
    for chunk in memberships.chunks(1000) {
        pipe.hset_multiple(&keys.groups, chunk).ignore();
    }
    heartbeat_commands(&mut pipe, inner);
    pipe.query_async::<()>(conn).await
}

/// Answers a presence question from every live process's entries.
pub(crate) async fn query(
    inner: &Inner,
    query: PresenceQuery<'_>,
) -> Result<Vec<String>, signalr_core::Error> {
    if !inner.healthy() {
        return Err(backplane_error("Redis is unreachable"));
    }
    let ttl = inner.presence_ttl();
    tokio::time::timeout(ttl.min(Duration::from_secs(5)), ask(inner, query))
        .await
        .map_err(|_| backplane_error("Redis did not answer in time"))?
        .map_err(backplane_error)
}

async fn ask(inner: &Inner, query: PresenceQuery<'_>) -> Result<Vec<String>, redis::RedisError> {
    let keys = inner.presence_keys();
    let mut conn = inner.connection();
    let since = unix_ms() - inner.presence_ttl().as_millis() as i64;
    let servers: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.servers)
        .arg(since)
        .arg("+inf")
        .query_async(&mut conn)
        .await?;
    if servers.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    let mut out = Vec::new();
    match query {
        PresenceQuery::OnlineUsers => {
            for server in &servers {
                pipe.hvals(keys.connections_of(server));
            }
            let users: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
            out.extend(users.into_iter().flatten().filter(|u| !u.is_empty()));
        }
        PresenceQuery::UserConnections(user) => {
            for server in &servers {
                pipe.hgetall(keys.connections_of(server));
            }
            let all: Vec<Vec<(String, String)>> = pipe.query_async(&mut conn).await?;
            out.extend(
                all.into_iter()
                    .flatten()
                    .filter(|(_, u)| u == user)
                    .map(|(id, _)| id),
            );
        }
        PresenceQuery::ConnectionUser(id) => {
            for server in &servers {
                pipe.hget(keys.connections_of(server), id);
            }
            let users: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            out.extend(users.into_iter().flatten().filter(|u| !u.is_empty()));
        }
        PresenceQuery::Connection(id) => {
            for server in &servers {
                pipe.hexists(keys.connections_of(server), id);
            }
            let held: Vec<bool> = pipe.query_async(&mut conn).await?;
            out.extend(
                servers
                    .iter()
                    .zip(held)
                    .filter(|(_, held)| *held)
                    .map(|(server, _)| server.clone()),
            );
        }
        PresenceQuery::GroupMembers(group) => {
            for server in &servers {
                pipe.hkeys(keys.groups_of(server));
            }
            let fields: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
            out.extend(fields.into_iter().flatten().filter_map(|field| {
                let (id, g) = field.split_once('\0')?;
                (g == group).then(|| id.to_owned())
            }));
        }
        PresenceQuery::ConnectionGroups(id) => {
            for server in &servers {
                pipe.hkeys(keys.groups_of(server));
            }
            let fields: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
            out.extend(fields.into_iter().flatten().filter_map(|field| {
                let (c, g) = field.split_once('\0')?;
                (c == id).then(|| g.to_owned())
            }));
        }
        // A query a newer signalr-core added: nothing here knows it, so nothing is found.
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
