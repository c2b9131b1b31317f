//! The hub protocols, sans-IO: message types, the handshake, and the JSON and MessagePack
//! encodings (MessagePack with the `msgpack` feature, on by default).
//!
//! Nothing in this module touches a socket or a clock. Decoders take bytes the transport has
//! received (in any chunking) and yield whole messages; encoders append framed records to a
//! buffer. That keeps every wire detail unit-testable and fuzzable on its own, the way
//! `quinn-proto` separates QUIC from tokio.
//!
//! Two kinds of values travel inside messages:
//! - inbound values are [`Payload`]s: the still-encoded bytes of one argument or result, decoded
//!   lazily into whatever Rust type the hub method asks for;
//! - outbound values are anything that implements [`serde::Serialize`].
//!
//! Bytes and instants are written differently by each protocol, as .NET's serializers do:
//! [`Binary`] is MessagePack `bin` and a base64 string in JSON, [`DateTime`] the MessagePack
//! timestamp extension and an RFC 3339 string in JSON.
//!
//! [`Message`] is therefore generic over the argument list `A` and the single value `V`.

mod handshake;
mod input;
pub mod json;
#[cfg(feature = "msgpack")]
pub mod msgpack;
#[cfg(feature = "msgpack")]
mod msgpack_ser;
mod payload;
mod small_string;
mod values;

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

pub use handshake::{
    decode_handshake_request, encode_handshake_response, HandshakeError, HandshakeRequest,
};
pub use input::InputBuffer;
pub use json::JsonProtocol;
#[cfg(feature = "msgpack")]
pub use msgpack::MessagePackProtocol;
pub use payload::{Arguments, ArgumentsIntoIter, Payload, PayloadError};
pub use small_string::SmallString;
pub use values::{Binary, DateTime, DateTimeError};

/// Message headers (`headers` in JSON, a string map in MessagePack). Sorted, so output is
/// deterministic.
pub type Headers = BTreeMap<String, String>;

/// A decoded inbound message: arguments and values stay encoded until a hub method binds them.
pub type InboundMessage = Message<Arguments, Payload>;

/// One hub message. `A` is the argument list (serialized as an array), `V` a single value
/// (a stream item or a completion result).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message<A, V> {
    /// Type 1: call a method on the other side.
    Invocation(Invocation<A>),
    /// Type 2: one item of a stream.
    StreamItem(StreamItem<V>),
    /// Type 3: the end of an invocation or stream.
    Completion(Completion<V>),
    /// Type 4: call a streaming method (client to server only).
    StreamInvocation(Invocation<A>),
    /// Type 5: stop a stream (client to server only).
    CancelInvocation(CancelInvocation),
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the sender is closing the connection.
    Close(Close),
    /// Type 8: stateful reconnect acknowledgement.
    Ack(u64),
    /// Type 9: stateful reconnect sequence reset.
    Sequence(u64),
}

impl<A, V> Message<A, V> {
    /// The wire number of this message type.
    pub fn type_id(&self) -> u8 {
        match self {
            Message::Invocation(_) => 1,
            Message::StreamItem(_) => 2,
            Message::Completion(_) => 3,
            Message::StreamInvocation(_) => 4,
            Message::CancelInvocation(_) => 5,
            Message::Ping => 6,
            Message::Close(_) => 7,
            Message::Ack(_) => 8,
            Message::Sequence(_) => 9,
        }
    }
}

/// An Invocation (type 1) or StreamInvocation (type 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation<A> {
    /// Headers; empty when none.
    pub headers: Headers,
    /// `None` for a non-blocking invocation (no Completion expected).
    pub invocation_id: Option<SmallString>,
    /// The method to call.
    pub target: SmallString,
    /// The arguments, serialized as an array.
    pub arguments: A,
    /// Ids of streams the caller will upload as arguments.
    pub stream_ids: Vec<SmallString>,
}

/// A StreamItem (type 2).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem<V> {
    /// Headers; empty when none.
    pub headers: Headers,
    /// The invocation (or upload stream) the item belongs to.
    pub invocation_id: SmallString,
    /// The item; may be null.
    pub item: V,
}

/// A Completion (type 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion<V> {
    /// Headers; empty when none.
    pub headers: Headers,
    /// The invocation (or upload stream) that completed.
    pub invocation_id: SmallString,
    /// How it completed.
    pub result: CompletionResult<V>,
}

/// The three ways a Completion can end.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionResult<V> {
    /// No value: the end of a stream (MessagePack result kind 2).
    Void,
    /// A value, possibly null (MessagePack result kind 3).
    Value(V),
    /// An error message (MessagePack result kind 1).
    Error(String),
}

/// A CancelInvocation (type 5).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelInvocation {
    /// Headers; empty when none.
    pub headers: Headers,
    /// The stream invocation to cancel.
    pub invocation_id: SmallString,
}

/// A Close (type 7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Close {
    /// Why the connection closed, if it was an error.
    pub error: Option<String>,
    /// Whether a client with automatic reconnect should come back.
    pub allow_reconnect: bool,
}

/// Value type for messages that carry no arguments or values (`Ping`, `Close`, ...), usable for
/// either type parameter of [`Message`] when encoding.
pub type NoValue = ();

/// Whether a protocol's records are text or binary; decides WebSocket frame types and which
/// transports can carry the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFormat {
    /// UTF-8 text (JSON).
    Text,
    /// Arbitrary bytes (MessagePack).
    Binary,
}

impl TransferFormat {
    /// The name used in negotiate responses and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferFormat::Text => "Text",
            TransferFormat::Binary => "Binary",
        }
    }
}

/// A failure to decode or encode hub messages. Any decode error is fatal to the connection
/// (the reference closes it too); the message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A record exceeded the configured maximum size.
    #[error("The maximum message size of {limit}B was exceeded.")]
    MessageTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The bytes did not form a valid message.
    #[error("{0}")]
    Invalid(String),
    /// A value could not be serialized.
    #[error("failed to serialize a message: {0}")]
    Serialize(String),
}

impl ProtocolError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ProtocolError::Invalid(message.into())
    }
}

/// One hub protocol: how records are framed and how messages are laid out.
///
/// Implementations are stateless; a connection keeps its own [`InputBuffer`] and calls
/// [`decode`](HubProtocol::decode) until it returns `Ok(None)`.
pub trait HubProtocol {
    /// The name clients put in the handshake (`json`, `messagepack`).
    const NAME: &'static str;
    /// The highest protocol version understood (versions up to it are accepted).
    const VERSION: u32;
    /// Text or binary records.
    const TRANSFER_FORMAT: TransferFormat;

    /// Takes the next complete message off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete record yet (the caller reads more and
    /// calls again). Records of unknown message types are skipped, as the reference does.
    /// A record whose body is larger than `max_message_size` is an error as soon as its size is
    /// known, so a hostile length prefix never makes us buffer a large body. A search for the
    /// end of a record starts where the previous call's stopped, so decoding costs time linear
    /// in the bytes received, however finely they were chunked.
    fn decode(
        buf: &mut InputBuffer,
        max_message_size: usize,
    ) -> Result<Option<InboundMessage>, ProtocolError>;

    /// Appends `message` as one framed record to `out`.
    fn encode<A: Serialize, V: Serialize>(
        message: &Message<A, V>,
        out: &mut BytesMut,
    ) -> Result<(), ProtocolError>;
}

/// The protocols this crate implements, for choosing one at run time (from the handshake).
///
/// `MessagePack` exists only with the `msgpack` feature: without it a client asking for
/// `messagepack` gets the handshake error for an unknown protocol and falls back (the JS
/// client does) or fails, as with ASP.NET Core when the protocol is not registered. Match
/// with a wildcard arm: another crate in the build may turn the feature on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// The JSON hub protocol (`json`).
    Json,
    /// The MessagePack hub protocol (`messagepack`). Needs the `msgpack` feature.
    #[cfg(feature = "msgpack")]
    MessagePack,
}

/// The initial buffer for one encoded record; larger ones grow as needed.
const ENCODE_CAPACITY: usize = 128;
/// The most a thread's encoding buffer keeps between records: a larger one (a record this
/// big was encoded) is given back after use.
pub(crate) const ENCODE_SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    /// Where records are encoded before they are copied into a buffer of exactly their size:
    /// one allocation per record, and none while serializing. Encoding into a buffer of its
    /// own and freezing it cost two (the buffer, then the shared header `Bytes` needs for a
    /// buffer with spare room), and a larger record several more while the buffer grew.
    static ENCODE_SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

impl Protocol {
    /// Every protocol, in the order they are offered.
    #[cfg(feature = "msgpack")]
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// Every protocol, in the order they are offered (JSON alone: the `msgpack` feature is
    /// off).
    #[cfg(not(feature = "msgpack"))]
    pub const ALL: [Protocol; 1] = [Protocol::Json];

    /// Looks a protocol up by its handshake name.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            JsonProtocol::NAME => Some(Protocol::Json),
            #[cfg(feature = "msgpack")]
            MessagePackProtocol::NAME => Some(Protocol::MessagePack),
            _ => None,
        }
    }

    /// The handshake name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => JsonProtocol::NAME,
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => MessagePackProtocol::NAME,
        }
    }

    /// The highest version understood.
    pub fn version(self) -> u32 {
        match self {
            Protocol::Json => JsonProtocol::VERSION,
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => MessagePackProtocol::VERSION,
        }
    }

    /// Text or binary.
    pub fn transfer_format(self) -> TransferFormat {
        match self {
            Protocol::Json => JsonProtocol::TRANSFER_FORMAT,
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => MessagePackProtocol::TRANSFER_FORMAT,
        }
    }

    /// A small dense index (0, 1, ...) for per-protocol caches.
    pub(crate) fn index(self) -> usize {
        match self {
            Protocol::Json => 0,
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => 1,
        }
    }

    /// See [`HubProtocol::decode`].
    pub fn decode(
        self,
        buf: &mut InputBuffer,
        max_message_size: usize,
    ) -> Result<Option<InboundMessage>, ProtocolError> {
        match self {
            Protocol::Json => JsonProtocol::decode(buf, max_message_size),
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => MessagePackProtocol::decode(buf, max_message_size),
        }
    }

    /// See [`HubProtocol::encode`].
    pub fn encode<A: Serialize, V: Serialize>(
        self,
        message: &Message<A, V>,
        out: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        match self {
            Protocol::Json => JsonProtocol::encode(message, out),
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => MessagePackProtocol::encode(message, out),
        }
    }

    /// Encodes one message into its own buffer.
    pub fn encode_to_bytes<A: Serialize, V: Serialize>(
        self,
        message: &Message<A, V>,
    ) -> Result<Bytes, ProtocolError> {
        ENCODE_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                let encoded = self.encode(message, &mut out);
                let record = encoded.map(|()| Bytes::copy_from_slice(&out));
                if out.capacity() > ENCODE_SCRATCH_KEPT {
                    *out = BytesMut::new();
                }
                record
            }
            // Encoding from inside an encoding (a value's `Serialize` that encodes a record):
            // a buffer of its own. Room for a typical small message up front: growing from
            // empty took several reallocations per record.
            Err(_) => {
                let mut out = BytesMut::with_capacity(ENCODE_CAPACITY);
                self.encode(message, &mut out)?;
                Ok(out.freeze())
            }
        })
    }

    /// The framed Ping record, shared by every connection of this protocol.
    pub fn ping_record(self) -> Bytes {
        match self {
            Protocol::Json => Bytes::from_static(b"{\"type\":6}\x1e"),
            #[cfg(feature = "msgpack")]
            Protocol::MessagePack => Bytes::from_static(&[0x02, 0x91, 0x06]),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion<V: Serialize>(id: &str, value: V) -> Message<NoValue, V> {
        Message::Completion(Completion {
            headers: Headers::new(),
            invocation_id: id.into(),
            result: CompletionResult::Value(value),
        })
    }

    /// A value whose serialization encodes a record of its own, as a `Serialize` written
    /// against this crate could: the inner encoding cannot share the thread's buffer.
    struct EncodesWhileSerialized;

    impl Serialize for EncodesWhileSerialized {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let inner = Protocol::Json
                .encode_to_bytes(&completion("inner", 7))
                .map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(
                std::str::from_utf8(&inner)
                    .unwrap()
                    .trim_end_matches('\u{1e}'),
            )
        }
    }

    #[test]
    fn an_encoding_inside_an_encoding_gets_its_own_buffer() {
        let record = Protocol::Json
            .encode_to_bytes(&completion("outer", EncodesWhileSerialized))
            .unwrap();
        assert_eq!(
            &record[..],
            &b"{\"type\":3,\"invocationId\":\"outer\",\"result\":\"{\\\"type\\\":3,\\\"invocationId\\\":\\\"inner\\\",\\\"result\\\":7}\"}\x1e"[..]
        );
    }

    #[test]
    fn each_record_is_only_its_own_bytes_and_a_large_buffer_is_given_back() {
        for protocol in Protocol::ALL {
            let large = "x".repeat(ENCODE_SCRATCH_KEPT * 2);
            let big = protocol.encode_to_bytes(&completion("1", &large)).unwrap();
            assert!(big.len() > ENCODE_SCRATCH_KEPT * 2);
            let kept = ENCODE_SCRATCH.with(|scratch| scratch.borrow().capacity());
            assert!(kept <= ENCODE_SCRATCH_KEPT, "{protocol}: kept {kept} bytes");
            #[cfg(feature = "msgpack")]
            {
                let body = msgpack::BODY_SCRATCH.with(|scratch| scratch.borrow().capacity());
                assert!(
                    body <= ENCODE_SCRATCH_KEPT,
                    "{protocol}: kept a {body}-byte body"
                );
            }

            // A short record after a long one holds nothing of the long one.
            let small = protocol.encode_to_bytes(&completion("2", 1)).unwrap();
            let mut alone = BytesMut::new();
            protocol.encode(&completion("2", 1), &mut alone).unwrap();
            assert_eq!(small, alone.freeze(), "{protocol}");

            // A failed encoding leaves nothing behind for the next record either.
            let failed = protocol.encode_to_bytes(&completion("3", Unencodable));
            assert!(failed.is_err(), "{protocol}");
            let after = protocol.encode_to_bytes(&completion("2", 1)).unwrap();
            assert_eq!(after, small, "{protocol}");
        }
    }

    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = serializer.serialize_seq(Some(2))?;
            seq.serialize_element(&1)?;
            Err(serde::ser::Error::custom("this value cannot be encoded"))
        }
    }
}
