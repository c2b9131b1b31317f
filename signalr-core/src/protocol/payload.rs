//! Inbound values that stay encoded until a hub method asks for a concrete type.

use std::fmt;

#[cfg(feature = "msgpack")]
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use smallvec::SmallVec;

/// One still-encoded value from a received message (an argument, a stream item, a result).
///
/// Binding is lazy so that a method that takes `(String, i64)` deserializes straight from the
/// received bytes, and so that an argument can be forwarded unchanged: returned from a hub
/// method, sent to other clients, or nested inside a value that is.
///
/// What a forwarded `Payload` becomes depends on the protocol it is written in:
/// - in the protocol it arrived in, it is copied byte for byte (so MessagePack extension
///   types, such as the timestamps the JS client writes for a `Date`, round-trip exactly);
/// - a JSON value written to a MessagePack client is converted value by value;
/// - a MessagePack value written to a JSON client is converted value by value, with `bin`
///   as an array of numbers, a timestamp (extension type -1) as an RFC 3339 string (what
///   [`DateTime`](super::DateTime) writes), and any other extension type as an encoding
///   error (the invocation fails and the error is logged), since JSON has no counterpart.
///
/// A JSON value owns its text. A MessagePack value is a slice of the bytes it arrived in, not a
/// copy, so a `Payload` kept after its invocation keeps them alive. A record that arrives whole
/// in one WebSocket message shares that message (never more than 4 KiB or twice the message,
/// whichever is larger); one that arrives whole in a long-polling or SSE body is copied out of
/// the HTTP read buffer first; one that arrives in pieces shares the buffer it was joined in
/// with the records joined after it.
#[derive(Clone, PartialEq)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    Json(Box<RawValue>),
    #[cfg(feature = "msgpack")]
    MessagePack(Bytes),
}

impl PartialEq for Repr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Repr::Json(a), Repr::Json(b)) => a.get() == b.get(),
            #[cfg(feature = "msgpack")]
            (Repr::MessagePack(a), Repr::MessagePack(b)) => a == b,
            #[cfg(feature = "msgpack")]
            _ => false,
        }
    }
}

/// A value could not be bound to the requested type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(String);

impl Payload {
    pub(crate) fn json(raw: Box<RawValue>) -> Self {
        Payload(Repr::Json(raw))
    }

    #[cfg(feature = "msgpack")]
    pub(crate) fn msgpack(bytes: Bytes) -> Self {
        Payload(Repr::MessagePack(bytes))
    }

    /// `null` in the given protocol (what a void client result stands for).
    pub(crate) fn null(protocol: super::Protocol) -> Self {
        match protocol {
            super::Protocol::Json => Payload::json(Box::<RawValue>::default()),
            #[cfg(feature = "msgpack")]
            super::Protocol::MessagePack => Payload::msgpack(Bytes::from_static(&[0xc0])),
        }
    }

    /// Deserializes the value into `T`.
    ///
    /// With MessagePack, binary values bind to `serde_bytes::ByteBuf` (or `Vec<u8>` with
    /// `#[serde(with = "serde_bytes")]`), and structs bind from maps keyed by field name, which
    /// is how the .NET and JS clients write objects.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match &self.0 {
            Repr::Json(raw) => {
                serde_json::from_str(raw.get()).map_err(|e| PayloadError(e.to_string()))
            }
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(bytes) => {
                rmp_serde::from_slice(bytes).map_err(|e| PayloadError(e.to_string()))
            }
        }
    }

    /// Splits an array value into its elements, still encoded (for forwarding a list of
    /// arguments without knowing their types).
    pub fn elements(&self) -> Result<Vec<Payload>, PayloadError> {
        match &self.0 {
            Repr::Json(raw) => serde_json::from_str::<Vec<Box<RawValue>>>(raw.get())
                .map(|items| items.into_iter().map(Payload::json).collect())
                .map_err(|e| PayloadError(e.to_string())),
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(bytes) => super::msgpack::split_array(bytes)
                .map(|items| items.into_iter().map(Payload::msgpack).collect())
                .map_err(|e| PayloadError(e.to_string())),
        }
    }

    /// The JSON text of the value, when it came from the JSON protocol.
    pub fn as_json(&self) -> Option<&str> {
        match &self.0 {
            Repr::Json(raw) => Some(raw.get()),
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(_) => None,
        }
    }

    /// The MessagePack bytes of the value, when it came from the MessagePack protocol (always
    /// `None` without the `msgpack` feature, so forwarding code need not depend on it).
    pub fn as_msgpack(&self) -> Option<&[u8]> {
        match &self.0 {
            Repr::Json(_) => None,
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(bytes) => Some(bytes),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Json(raw) => write!(f, "Payload::Json({})", raw.get()),
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(bytes) => write!(f, "Payload::MessagePack({bytes:02x?})"),
        }
    }
}

thread_local! {
    /// Set while the JSON hub protocol writes a message on this thread: the serializer is then
    /// serde_json's, and a JSON payload can be copied into it verbatim.
    static JSON_OUTPUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as writing a JSON hub message until dropped (restoring the
/// previous state, so nesting and unwinding leave it right).
pub(crate) struct JsonOutput(bool);

impl JsonOutput {
    pub(crate) fn begin() -> Self {
        JsonOutput(JSON_OUTPUT.with(|flag| flag.replace(true)))
    }
}

impl Drop for JsonOutput {
    fn drop(&mut self) {
        JSON_OUTPUT.with(|flag| flag.set(self.0));
    }
}

impl Serialize for Payload {
    /// Re-emits the value through any serializer (transcoding), so a received argument can be
    /// echoed or forwarded to clients of either protocol. A value written by the protocol it
    /// came from is copied as it is: re-encoding would cost time (the echo path's largest
    /// avoidable cost) and, for MessagePack, lose extension types.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Json(raw) if JSON_OUTPUT.with(std::cell::Cell::get) => raw.serialize(serializer),
            Repr::Json(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                serde_transcode::transcode(&mut de, serializer)
            }
            // Our MessagePack serializer splices these bytes in; see `Verbatim`.
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(bytes) if super::msgpack_ser::output_active() => {
                serializer.serialize_newtype_struct(super::msgpack_ser::VERBATIM, &Verbatim(bytes))
            }
            #[cfg(feature = "msgpack")]
            Repr::MessagePack(bytes) => super::msgpack::transcode(bytes, serializer),
        }
    }
}

#[cfg(feature = "msgpack")]
/// A MessagePack payload's bytes on their way into the MessagePack hub protocol's
/// serializer, which recognises the newtype it arrives in. Any other serializer (one a user's
/// `Serialize` impl called while a message was being written) gets the value converted.
struct Verbatim<'a>(&'a Bytes);

#[cfg(feature = "msgpack")]
impl Serialize for Verbatim<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if super::msgpack_ser::take_capture() {
            serializer.serialize_bytes(self.0)
        } else {
            super::msgpack::transcode(self.0, serializer)
        }
    }
}

/// The arguments of a received invocation, in order.
///
/// It reads as a slice of [`Payload`]s (`len`, `iter`, indexing, through `Deref`), is built from
/// a `Vec<Payload>` or an iterator of them, and gives them back with
/// [`into_vec`](Self::into_vec) or `into_iter`, and can be sent on as it is
/// ([`IntoArguments`](crate::IntoArguments)). Up to two are kept inline, so reading an
/// invocation allocates no list for them: most hub methods take one or two.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arguments(SmallVec<[Payload; Arguments::INLINE]>);

impl Arguments {
    /// How many arguments are kept without an allocation of their own.
    const INLINE: usize = 2;

    /// No arguments.
    pub fn new() -> Self {
        Arguments(SmallVec::new())
    }

    /// No arguments, with room for `capacity` (no allocation for up to two).
    pub fn with_capacity(capacity: usize) -> Self {
        Arguments(SmallVec::with_capacity(capacity))
    }

    /// Adds one at the end.
    pub fn push(&mut self, argument: Payload) {
        self.0.push(argument);
    }

    /// The arguments as a `Vec` (which allocates for arguments that were kept inline).
    pub fn into_vec(self) -> Vec<Payload> {
        self.0.into_vec()
    }
}

impl AsRef<[Payload]> for Arguments {
    fn as_ref(&self) -> &[Payload] {
        &self.0
    }
}

impl Extend<Payload> for Arguments {
    fn extend<I: IntoIterator<Item = Payload>>(&mut self, arguments: I) {
        self.0.extend(arguments);
    }
}

impl From<Arguments> for Vec<Payload> {
    fn from(arguments: Arguments) -> Self {
        arguments.into_vec()
    }
}

impl std::ops::Deref for Arguments {
    type Target = [Payload];

    fn deref(&self) -> &[Payload] {
        &self.0
    }
}

impl std::ops::DerefMut for Arguments {
    fn deref_mut(&mut self) -> &mut [Payload] {
        &mut self.0
    }
}

/// Keeps the `Vec`'s allocation when its capacity is more than fits inline.
impl From<Vec<Payload>> for Arguments {
    fn from(arguments: Vec<Payload>) -> Self {
        Arguments(SmallVec::from_vec(arguments))
    }
}

impl FromIterator<Payload> for Arguments {
    fn from_iter<I: IntoIterator<Item = Payload>>(arguments: I) -> Self {
        Arguments(arguments.into_iter().collect())
    }
}

impl IntoIterator for Arguments {
    type Item = Payload;
    type IntoIter = ArgumentsIntoIter;

    fn into_iter(self) -> ArgumentsIntoIter {
        ArgumentsIntoIter(self.0.into_iter())
    }
}

impl<'a> IntoIterator for &'a Arguments {
    type Item = &'a Payload;
    type IntoIter = std::slice::Iter<'a, Payload>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Arguments {
    type Item = &'a mut Payload;
    type IntoIter = std::slice::IterMut<'a, Payload>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

/// The arguments of an [`Arguments`], taken in order.
#[derive(Debug, Clone)]
pub struct ArgumentsIntoIter(smallvec::IntoIter<[Payload; Arguments::INLINE]>);

impl ArgumentsIntoIter {
    /// The arguments not taken yet.
    pub fn as_slice(&self) -> &[Payload] {
        self.0.as_slice()
    }
}

impl Iterator for ArgumentsIntoIter {
    type Item = Payload;

    fn next(&mut self) -> Option<Payload> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for ArgumentsIntoIter {
    fn next_back(&mut self) -> Option<Payload> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for ArgumentsIntoIter {}

impl std::iter::FusedIterator for ArgumentsIntoIter {}

impl Serialize for Arguments {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for value in self.iter() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}
