//! The encoding cache for fan-out: a message is encoded once per protocol, however many
//! connections receive it.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;

use super::backplane::SerializedMessage;
use crate::error::{Error, Kind};
use crate::protocol::{Message, Protocol, ProtocolError};

/// A message encoded on first use for each protocol, then shared; or one that arrived
/// already framed in every protocol (from the backplane).
pub(crate) enum LazyRecord<'a> {
    Lazy {
        message: &'a dyn EncodeRecord,
        cache: [OnceLock<Result<Bytes, ProtocolError>>; 2],
    },
    Ready(&'a SerializedMessage),
}

impl<'a> LazyRecord<'a> {
    pub(crate) fn new(message: &'a dyn EncodeRecord) -> LazyRecord<'a> {
        LazyRecord::Lazy {
            message,
            cache: [OnceLock::new(), OnceLock::new()],
        }
    }

    pub(crate) fn ready(message: &'a SerializedMessage) -> LazyRecord<'a> {
        LazyRecord::Ready(message)
    }

    pub(crate) fn get(&self, protocol: Protocol) -> Result<Bytes, Error> {
        match self {
            LazyRecord::Lazy { message, cache } => cache[protocol.index()]
                .get_or_init(|| message.encode_record(protocol))
                .clone()
                .map_err(Error::from),
            LazyRecord::Ready(message) => message.record(protocol).cloned().ok_or_else(|| {
                Error::with(
                    Kind::Protocol,
                    format!("the publishing server did not include the '{protocol}' protocol"),
                )
            }),
        }
    }

    /// Every protocol's record, for publishing to other processes.
    pub(crate) fn serialized(&self) -> Result<SerializedMessage, Error> {
        match self {
            LazyRecord::Lazy { message, .. } => Ok(SerializedMessage::encode(*message)?),
            LazyRecord::Ready(message) => Ok((*message).clone()),
        }
    }
}

/// A message that can be encoded in any protocol, with its value types erased.
pub(crate) trait EncodeRecord: Sync {
    fn encode_record(&self, protocol: Protocol) -> Result<Bytes, ProtocolError>;
}

impl<A: Serialize + Sync, V: Serialize + Sync> EncodeRecord for Message<A, V> {
    fn encode_record(&self, protocol: Protocol) -> Result<Bytes, ProtocolError> {
        protocol.encode_to_bytes(self)
    }
}
