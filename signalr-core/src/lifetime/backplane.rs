//! Scaling out: the trait a backplane (Redis, or anything that can publish and subscribe)
//! implements so that several server processes act as one hub.
//!
//! The hub always serves its own connections directly; a backplane only carries what other
//! processes must see. So a broadcast reaches local clients without waiting for a round trip,
//! and an unreachable backplane never stops local delivery: the send still returns an error
//! ([`Error::is_backplane`]) so that the loss is visible.
//!
//! A backplane sees the hub through [`LocalHub`]: it tells the backplane which connections,
//! users and groups live here (so that it can subscribe to what concerns them), and it takes
//! what other processes publish and delivers it to local connections.

use std::future::Future;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::error::{Error, Kind};
use crate::hub::clients::REMOTE_DISCONNECTED;
use crate::hub::{BoxFuture, HubShared};
use crate::lifetime::record::{EncodeRecord, LazyRecord};
use crate::log_limit::{LogLimiter, REPEAT_INTERVAL};
use crate::protocol::{
    Completion, CompletionResult, Headers, InputBuffer, Message, NoValue, Payload, Protocol,
    ProtocolError,
};

/// A message already framed in each hub protocol, ready to be written to a client of any of
/// them as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SerializedMessage {
    records: Vec<(Protocol, Bytes)>,
}

impl SerializedMessage {
    /// A message from framed records, one per protocol.
    ///
    /// A JSON record that is not UTF-8 is left out (JSON clients get text frames, which must
    /// be UTF-8, and records are written as they are, unchecked): its clients miss this message,
    /// and a rate-limited warning says so.
    pub fn from_records(records: impl IntoIterator<Item = (Protocol, Bytes)>) -> Self {
        let records = records
            .into_iter()
            .filter(|(protocol, record)| {
                let text = protocol.transfer_format() != crate::protocol::TransferFormat::Text;
                if text || std::str::from_utf8(record).is_ok() {
                    return true;
                }
                static INVALID: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
                if let Some(suppressed) = INVALID.allow() {
                    tracing::warn!(
                        protocol = protocol.name(),
                        suppressed,
                        "a record from the backplane is not UTF-8; left out"
                    );
                }
                false
            })
            .collect();
        SerializedMessage { records }
    }

    /// The framed record for `protocol`, if the publisher included it.
    pub fn record(&self, protocol: Protocol) -> Option<&Bytes> {
        self.records
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, r)| r)
    }

    /// Every record with its protocol.
    pub fn records(&self) -> impl Iterator<Item = (Protocol, &Bytes)> {
        self.records.iter().map(|(p, r)| (*p, r))
    }

    pub(crate) fn encode(message: &dyn EncodeRecord) -> Result<Self, ProtocolError> {
        // Every protocol, whatever this hub offers: another process may serve the other one.
        let records = Protocol::ALL
            .iter()
            .map(|p| Ok((*p, message.encode_record(*p)?)))
            .collect::<Result<_, ProtocolError>>()?;
        Ok(SerializedMessage { records })
    }
}

/// Who a publication is for, on the other processes.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Audience<'a> {
    /// Every connection but the excluded ones.
    All {
        /// Connection ids not to deliver to.
        excluded: &'a [String],
    },
    /// The members of a group but the excluded ones.
    Group {
        /// The group.
        group: &'a str,
        /// Connection ids not to deliver to.
        excluded: &'a [String],
    },
    /// Every connection of a user.
    User(&'a str),
    /// One connection, known not to be local.
    Connection(&'a str),
}

/// A live local connection, as a backplane needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    id: Arc<str>,
    user_id: Option<Arc<str>>,
}

impl ConnectionInfo {
    pub(crate) fn new(id: Arc<str>, user_id: Option<Arc<str>>) -> Self {
        ConnectionInfo { id, user_id }
    }

    /// The connection id (the public one, as `Clients::client` takes).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user it belongs to, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// A question about who is connected, across every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceQuery<'a> {
    /// User ids with at least one connection.
    OnlineUsers,
    /// The connection ids of a user.
    UserConnections(&'a str),
    /// The connection ids in a group.
    GroupMembers(&'a str),
    /// The user of a connection (none or one id).
    ConnectionUser(&'a str),
    /// The groups a connection is in.
    ConnectionGroups(&'a str),
    /// The processes holding a connection (empty: none).
    Connection(&'a str),
}

/// A client's answer to a client-result invocation, framed in that client's protocol, as it
/// travels back to the process that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerializedCompletion {
    /// The protocol `record` is framed in.
    pub protocol: Protocol,
    /// A framed Completion record.
    pub record: Bytes,
}

impl SerializedCompletion {
    fn encode(
        protocol: Protocol,
        invocation_id: &str,
        answer: Result<Payload, String>,
    ) -> Result<Self, ProtocolError> {
        let result = match answer {
            Ok(value) => CompletionResult::Value(value),
            Err(error) => CompletionResult::Error(error),
        };
        let message: Message<NoValue, Payload> = Message::Completion(Completion {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            result,
        });
        Ok(SerializedCompletion {
            protocol,
            record: protocol.encode_to_bytes(&message)?,
        })
    }

    /// The client's value, or its error text.
    pub(crate) fn decode(&self) -> Result<Result<Payload, String>, Error> {
        let mut buf = InputBuffer::from(self.record.clone());
        let message = self
            .protocol
            .decode(&mut buf, usize::MAX)?
            .ok_or_else(|| Error::with(Kind::Protocol, "an incomplete Completion record"))?;
        match message {
            Message::Completion(completion) => Ok(match completion.result {
                CompletionResult::Value(value) => Ok(value),
                CompletionResult::Void => Ok(Payload::null(self.protocol)),
                CompletionResult::Error(error) => Err(error),
            }),
            _ => Err(Error::with(
                Kind::Protocol,
                "expected a Completion record from the backplane",
            )),
        }
    }
}

/// Connects a hub to other server processes. Implementations: `signalr-redis`.
///
/// The hub calls the notification methods (`connection_added`, `group_joined`, ...) as its
/// local state changes, and the delivery methods (`publish`, `add_to_group`, `invoke`) only
/// for recipients that are not local. Nothing here may block for long: a backplane that cannot
/// reach its peers fails fast with [`Error::backplane`].
pub trait Backplane: Send + Sync + 'static {
    /// Called once, when the hub is built, with the handle to deliver incoming messages.
    fn attach(&self, hub: LocalHub);

    /// A connection finished its handshake here. The returned future completes once messages
    /// published for it (its connection and user) will reach this process.
    fn connection_added<'a>(&'a self, connection: &'a ConnectionInfo) -> BoxFuture<'a, ()>;

    /// A local connection ended (it has already left its groups, each reported by
    /// `group_left`).
    fn connection_removed(&self, connection: &ConnectionInfo);

    /// A local connection joined a group. The future completes once publications to the group
    /// reach this process.
    fn group_joined<'a>(&'a self, connection_id: &'a str, group: &'a str) -> BoxFuture<'a, ()>;

    /// A local connection left a group.
    fn group_left(&self, connection_id: &str, group: &str);

    /// Delivers a message to the audience's connections on the other processes.
    fn publish<'a>(
        &'a self,
        audience: Audience<'a>,
        message: &'a SerializedMessage,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Adds a connection that is not local to a group, once its owner confirmed.
    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes a connection that is not local from a group, once its owner confirmed.
    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Sends a client-result invocation (`message`, carrying `invocation_id`) to a connection
    /// that is not local and waits for its answer. `Ok(None)`: no process has the connection.
    /// The hub bounds the wait with its client-result timeout.
    fn invoke<'a>(
        &'a self,
        connection_id: &'a str,
        invocation_id: &'a str,
        message: &'a SerializedMessage,
    ) -> BoxFuture<'a, Result<Option<SerializedCompletion>, Error>>;

    /// Answers a presence question for every process (this one included; the hub merges in
    /// its own up-to-date answer).
    fn presence<'a>(
        &'a self,
        query: PresenceQuery<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, Error>>;

    /// Whether the backplane is connected to its peers right now.
    fn is_healthy(&self) -> bool;
}

/// The local side of a hub, as its backplane sees it: delivery to the connections of this
/// process. Holds the hub weakly, so a backplane never keeps a dropped hub alive.
#[derive(Clone)]
pub struct LocalHub {
    hub: Weak<HubShared>,
}

impl LocalHub {
    pub(crate) fn new(hub: &Arc<HubShared>) -> Self {
        LocalHub {
            hub: Arc::downgrade(hub),
        }
    }

    fn hub(&self) -> Option<Arc<HubShared>> {
        self.hub.upgrade()
    }

    /// Delivers to every local connection not excluded.
    pub fn send_all(&self, excluded: &[String], message: &SerializedMessage) {
        if let Some(hub) = self.hub() {
            let record = LazyRecord::ready(message);
            let _ = hub
                .registry
                .broadcast(&record, |id| excluded.iter().any(|e| e == id));
        }
    }

    /// Delivers to the local members of a group not excluded.
    pub fn send_group(&self, group: &str, excluded: &[String], message: &SerializedMessage) {
        if let Some(hub) = self.hub() {
            let members = hub.registry.group_members(&[group.to_owned()], excluded);
            let record = LazyRecord::ready(message);
            let _ = hub
                .registry
                .send_to(members.iter().map(|id| id.as_ref()), &record);
        }
    }

    /// Delivers to the local connections of a user.
    pub fn send_user(&self, user_id: &str, message: &SerializedMessage) {
        if let Some(hub) = self.hub() {
            let connections = hub.registry.user_connections(&[user_id.to_owned()]);
            let record = LazyRecord::ready(message);
            let _ = hub
                .registry
                .send_to(connections.iter().map(|id| id.as_ref()), &record);
        }
    }

    /// Delivers to one local connection; false when it is not here.
    pub fn send_connection(&self, connection_id: &str, message: &SerializedMessage) -> bool {
        let Some(conn) = self.hub().and_then(|hub| hub.registry.get(connection_id)) else {
            return false;
        };
        // A closed or too-slow client, or a missing protocol, is not the publisher's problem.
        if let Some(record) = message.record(conn.protocol) {
            let _ = conn.try_send(record.clone());
        }
        true
    }

    /// Whether a connection is local.
    pub fn has_connection(&self, connection_id: &str) -> bool {
        self.hub()
            .is_some_and(|hub| hub.registry.get(connection_id).is_some())
    }

    /// Adds a local connection to a group (for a command from another process); false when
    /// the connection is not here.
    pub async fn add_to_group(&self, connection_id: &str, group: &str) -> bool {
        match self.hub() {
            Some(hub) => hub.add_local_to_group(connection_id, group).await,
            None => false,
        }
    }

    /// Removes a local connection from a group; false when the connection is not here.
    pub fn remove_from_group(&self, connection_id: &str, group: &str) -> bool {
        match self.hub() {
            Some(hub) => hub.remove_local_from_group(connection_id, group),
            None => false,
        }
    }

    /// Forwards a client-result invocation from another process to a local connection. `None`
    /// when the connection is not here; otherwise a future with the client's Completion framed
    /// in its protocol (an error Completion if it disconnects or the hub's client-result
    /// timeout passes first).
    pub fn invoke(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
    ) -> Option<impl Future<Output = SerializedCompletion> + Send + 'static> {
        let hub = self.hub()?;
        let conn = hub.registry.get(connection_id)?;
        let protocol = conn.protocol;
        let record = message.record(protocol)?.clone();
        let answer = conn.expect_result(invocation_id.into());
        let invocation_id = invocation_id.to_owned();
        let send_timeout = hub.options.send_timeout;
        let result_timeout = hub.options.client_result_timeout;
        Some(async move {
            let answer = match conn.send(record, send_timeout).await {
                Err(e) => {
                    conn.take_pending_result(&invocation_id);
                    Err(e.to_string())
                }
                Ok(()) => match tokio::time::timeout(result_timeout, answer).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(_disconnected)) => Err(REMOTE_DISCONNECTED.to_owned()),
                    Err(_elapsed) => {
                        conn.take_pending_result(&invocation_id);
                        Err("The client did not answer in time.".to_owned())
                    }
                },
            };
            SerializedCompletion::encode(protocol, &invocation_id, answer).unwrap_or_else(|e| {
                SerializedCompletion::encode(protocol, &invocation_id, Err(e.to_string()))
                    .expect("an error Completion always encodes")
            })
        })
    }

    /// Every local connection with its groups: what a backplane republishes after an outage.
    pub fn connections(&self) -> Vec<(ConnectionInfo, Vec<String>)> {
        let mut out = Vec::new();
        if let Some(hub) = self.hub() {
            hub.registry.for_each(|conn| {
                out.push((
                    ConnectionInfo::new(conn.id.clone(), conn.user_id.clone()),
                    conn.groups(),
                ));
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "msgpack")]
    fn a_json_record_that_is_not_utf8_is_left_out_and_binary_records_are_kept() {
        let bad = Bytes::from_static(b"{\"type\":1,\"target\":\"\xff\",\"arguments\":[]}\x1e");
        let good = Bytes::from_static(b"{\"type\":6}\x1e");
        let binary = Bytes::from_static(b"\x02\x91\x06\xff");
        let message = SerializedMessage::from_records([
            (Protocol::Json, bad),
            (Protocol::MessagePack, binary.clone()),
        ]);
        assert_eq!(message.record(Protocol::Json), None);
        assert_eq!(message.record(Protocol::MessagePack), Some(&binary));
        let message = SerializedMessage::from_records([(Protocol::Json, good.clone())]);
        assert_eq!(message.record(Protocol::Json), Some(&good));
    }
}
