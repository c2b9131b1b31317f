//! The lifetime manager: which connections this process holds, their groups and users, and
//! delivery to them.
//!
//! Everything lives in sharded concurrent maps, so registering, joining groups, looking up and
//! broadcasting never serialize all traffic behind one lock; a send read-locks one shard at a
//! time and never waits on a client.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::connection::ConnectionShared;
use crate::error::Error;
use crate::shrink::{shrink_set_if_sparse, Shrinker};
use record::LazyRecord;

pub mod backplane;
pub(crate) mod record;

type Members = HashSet<Arc<str>>;

/// Below this capacity a member set is not shrunk (16 ids: 256 bytes of buckets).
const KEEP_MEMBERS: usize = 16;

pub(crate) struct ConnectionRegistry {
    connections: DashMap<Arc<str>, Arc<ConnectionShared>>,
    groups: DashMap<Arc<str>, Members>,
    users: DashMap<Arc<str>, Members>,
    /// The number of connections, observable so that shutdown can wait for zero.
    count: watch::Sender<usize>,
    /// Give the maps' capacity back after a burst (see `crate::shrink`).
    connections_shrinker: Shrinker,
    groups_shrinker: Shrinker,
    users_shrinker: Shrinker,
}

fn join(index: &DashMap<Arc<str>, Members>, key: &Arc<str>, id: &Arc<str>) {
    index.entry(key.clone()).or_default().insert(id.clone());
}

fn leave(index: &DashMap<Arc<str>, Members>, shrinker: &Shrinker, key: &str, id: &str) {
    // Groups and users exist only while they have members.
    let emptied = index.remove_if_mut(key, |_, members| {
        members.remove(id);
        // A group that was large once would otherwise keep room for all its past members.
        // Under a quarter full, to twice its size, small sets left alone: a group that grows
        // and shrinks by a few does not reallocate each time.
        shrink_set_if_sparse(members, KEEP_MEMBERS);
        members.is_empty()
    });
    if emptied.is_some() {
        shrinker.removed(index);
    }
}

impl ConnectionRegistry {
    pub(crate) fn new() -> Self {
        ConnectionRegistry {
            connections: DashMap::new(),
            groups: DashMap::new(),
            users: DashMap::new(),
            count: watch::Sender::new(0),
            connections_shrinker: Shrinker::default(),
            groups_shrinker: Shrinker::default(),
            users_shrinker: Shrinker::default(),
        }
    }

    pub(crate) fn add(&self, conn: Arc<ConnectionShared>) {
        if let Some(user) = &conn.user_id {
            join(&self.users, user, &conn.id);
        }
        self.connections.insert(conn.id.clone(), conn);
        self.count.send_modify(|n| *n += 1);
    }

    /// Unregisters a connection and takes it out of its groups and user; returns the groups
    /// it left.
    pub(crate) fn remove(&self, id: &str) -> Vec<Arc<str>> {
        let Some((_, conn)) = self.connections.remove(id) else {
            return Vec::new();
        };
        self.connections_shrinker.removed(&self.connections);
        let groups = conn.leave_all_groups();
        for group in &groups {
            leave(&self.groups, &self.groups_shrinker, group, id);
        }
        if let Some(user) = &conn.user_id {
            leave(&self.users, &self.users_shrinker, user, id);
        }
        self.count.send_modify(|n| *n -= 1);
        groups
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<ConnectionShared>> {
        self.connections.get(id).map(|entry| entry.value().clone())
    }

    pub(crate) fn len(&self) -> usize {
        *self.count.borrow()
    }

    pub(crate) fn watch_count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Calls `f` for every connection (shard by shard).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<ConnectionShared>)) {
        for entry in self.connections.iter() {
            f(entry.value());
        }
    }

    /// Adds a local connection to a group; unknown connections are ignored, as in the
    /// reference. `None` when the connection is not here; otherwise whether it newly joined.
    pub(crate) fn add_to_group(&self, id: &str, group: &str) -> Option<bool> {
        let conn = self.get(id)?;
        let group: Arc<str> = group.into();
        let mut joined = false;
        // Under the connection's own lock, so a concurrent disconnect cannot leave it behind.
        let present = conn.join_group(group.clone(), || {
            join(&self.groups, &group, &conn.id);
            joined = true;
        });
        present.then_some(joined)
    }

    /// `None` when the connection is not here; otherwise whether it was a member.
    pub(crate) fn remove_from_group(&self, id: &str, group: &str) -> Option<bool> {
        let conn = self.get(id)?;
        let mut left = false;
        conn.leave_group(group, || {
            leave(&self.groups, &self.groups_shrinker, group, id);
            left = true;
        });
        Some(left)
    }

    /// Queues the record on every connection not `excluded`, without waiting on any of them.
    pub(crate) fn broadcast(
        &self,
        record: &LazyRecord<'_>,
        excluded: impl Fn(&str) -> bool,
    ) -> Result<(), Error> {
        let mut failure = None;
        for entry in self.connections.iter() {
            let conn = entry.value();
            if excluded(&conn.id) {
                continue;
            }
            // A closed or too-slow client, or one whose protocol could not be encoded, does not
            // stop delivery to the others.
            match record.get(conn.protocol) {
                Ok(bytes) => {
                    let _ = conn.try_send(bytes);
                }
                Err(e) => failure = Some(e),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Queues the record on each of the given connections once.
    pub(crate) fn send_to<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        record: &LazyRecord<'_>,
    ) -> Result<(), Error> {
        let mut seen = HashSet::new();
        let mut failure = None;
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            if let Some(conn) = self.connections.get(id) {
                match record.get(conn.protocol) {
                    Ok(bytes) => {
                        let _ = conn.try_send(bytes);
                    }
                    Err(e) => failure = Some(e),
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn members(
        index: &DashMap<Arc<str>, Members>,
        keys: &[String],
        excluded: &[String],
    ) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for key in keys {
            if let Some(members) = index.get(key.as_str()) {
                out.extend(
                    members
                        .iter()
                        .filter(|id| !excluded.iter().any(|e| e.as_str() == id.as_ref()))
                        .cloned(),
                );
            }
        }
        out
    }

    /// Connection ids in any of the groups, minus `excluded`.
    pub(crate) fn group_members(&self, groups: &[String], excluded: &[String]) -> Vec<Arc<str>> {
        Self::members(&self.groups, groups, excluded)
    }

    /// Connection ids of any of the users.
    pub(crate) fn user_connections(&self, users: &[String]) -> Vec<Arc<str>> {
        Self::members(&self.users, users, &[])
    }

    pub(crate) fn group_size(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |members| members.len())
    }

    pub(crate) fn online_users(&self) -> Vec<String> {
        self.users
            .iter()
            .map(|entry| entry.key().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group that had many members and now has few keeps room for few.
    #[test]
    fn a_group_that_shrinks_gives_back_its_room() {
        let groups: DashMap<Arc<str>, Members> = DashMap::new();
        let shrinker = Shrinker::default();
        let group: Arc<str> = "g".into();
        let ids: Vec<Arc<str>> = (0..1000).map(|n| Arc::from(format!("c{n}"))).collect();
        for id in &ids {
            join(&groups, &group, id);
        }
        let grown = groups.get("g").unwrap().capacity();
        assert!(grown >= 1000);
        for id in &ids[5..] {
            leave(&groups, &shrinker, "g", id);
        }
        let members = groups.get("g").unwrap();
        assert_eq!(members.len(), 5);
        assert!(
            members.capacity() <= 32,
            "capacity {} for 5 members",
            members.capacity()
        );
        drop(members);
        for id in &ids[..5] {
            leave(&groups, &shrinker, "g", id);
        }
        assert!(groups.get("g").is_none(), "an empty group is gone");
    }
}
