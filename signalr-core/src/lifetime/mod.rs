//! The lifetime manager: which connections this process holds, and delivery to them.
//!
//! Connections live in a sharded concurrent map, so registering, looking up and broadcasting
//! never serialize all traffic behind one lock; a broadcast read-locks one shard at a time and
//! never waits on a client.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::connection::ConnectionShared;
use crate::error::Error;
use crate::hub::clients::LazyRecord;

pub(crate) struct ConnectionRegistry {
    connections: DashMap<Arc<str>, Arc<ConnectionShared>>,
    /// The number of connections, observable so that shutdown can wait for zero.
    count: watch::Sender<usize>,
}

impl ConnectionRegistry {
    pub(crate) fn new() -> Self {
        ConnectionRegistry {
            connections: DashMap::new(),
            count: watch::Sender::new(0),
        }
    }

    pub(crate) fn add(&self, conn: Arc<ConnectionShared>) {
        self.connections.insert(conn.id.clone(), conn);
        self.count.send_modify(|n| *n += 1);
    }

    pub(crate) fn remove(&self, id: &str) {
        if self.connections.remove(id).is_some() {
            self.count.send_modify(|n| *n -= 1);
        }
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

    /// Queues the record on every connection not `excluded`, without waiting on any of them.
    pub(crate) fn broadcast(
        &self,
        record: &LazyRecord<'_>,
        excluded: impl Fn(&str) -> bool,
    ) -> Result<(), Error> {
        for entry in self.connections.iter() {
            let conn = entry.value();
            if excluded(&conn.id) {
                continue;
            }
            // A closed or too-slow client does not stop delivery to the others.
            let _ = conn.try_send(record.get(conn.protocol)?);
        }
        Ok(())
    }
}
