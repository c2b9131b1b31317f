//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with cargo-fuzz on nightly),
//! kept here so that the corpus replay test (`tests/fuzz_corpus.rs`) runs every committed
//! input through the same checks on stable, in CI.
//!
//! Each function takes arbitrary bytes and panics only when an invariant is broken: hostile
//! input must produce a protocol error, never a panic, a disagreement between chunkings, or a
//! buffer past its limit. Not an API: it exists behind the `fuzzing` feature and may change
//! with any release.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::connection::machine::{Config, ConnectionMachine, Event};
use crate::http::{negotiate, token, Query};
use crate::options::HubOptions;
#[cfg(feature = "msgpack")]
use crate::protocol::Payload;
use crate::protocol::{
    decode_handshake_request, encode_handshake_response, CancelInvocation, Close, Completion,
    CompletionResult, HandshakeError, HandshakeRequest, Headers, InboundMessage, InputBuffer,
    Invocation, Message, NoValue, Protocol, ProtocolError, StreamItem,
};
use crate::transport::TransportKind;

/// A limit small enough that ordinary records cross it, and the hub's default (32 KB).
const LIMITS: [usize; 2] = [48, 32 * 1024];

/// Two-way splits tried at every position up to this input length; past it, a sample.
const EVERY_SPLIT_UP_TO: usize = 64;
const SAMPLED_SPLITS: usize = 48;

// ---------------------------------------------------------------------------------------------
// Deterministic helpers: the same input always gets the same chunkings, so a crash replays.

/// SplitMix64 seeded from the input.
struct Rng(u64);

impl Rng {
    fn from_data(data: &[u8], salt: u64) -> Self {
        // FNV-1a of the input.
        let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng(hash ^ salt)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One way of cutting the input into chunks; `kind` names it in failure messages.
struct Chunking {
    kind: &'static str,
    lengths: Vec<usize>,
}

/// Every two-way split (a sample, plus the positions around record separators, for long
/// inputs), one byte at a time, and three pseudo-random chunkings.
fn chunkings(data: &[u8]) -> Vec<Chunking> {
    let n = data.len();
    let mut out = Vec::new();
    if n < 2 {
        return out;
    }
    let mut rng = Rng::from_data(data, 0x5eed);
    let mut splits: Vec<usize> = if n <= EVERY_SPLIT_UP_TO {
        (1..n).collect()
    } else {
        let mut points: Vec<usize> = (0..SAMPLED_SPLITS).map(|_| 1 + rng.below(n - 1)).collect();
        // Around the first record separators and the varint prefix: where framing bugs live.
        points.extend(
            data.iter()
                .enumerate()
                .filter(|(_, &b)| b == 0x1e)
                .take(16)
                .flat_map(|(i, _)| [i, i + 1]),
        );
        points.extend(1..6);
        points
    };
    splits.retain(|&k| k > 0 && k < n);
    splits.sort_unstable();
    splits.dedup();
    for k in splits {
        out.push(Chunking {
            kind: "a two-way split",
            lengths: vec![k, n - k],
        });
    }
    out.push(Chunking {
        kind: "one byte at a time",
        lengths: vec![1; n],
    });
    for round in 0..3 {
        let mut lengths = Vec::new();
        let mut left = n;
        while left > 0 {
            let cap = 1 + rng.below(if round == 0 { 4 } else { 64 });
            let len = 1 + rng.below(cap.min(left));
            lengths.push(len);
            left -= len;
        }
        out.push(Chunking {
            kind: "a pseudo-random chunking",
            lengths,
        });
    }
    out
}

/// What decoding a byte stream produced: every item, then either the bytes still buffered
/// (waiting for more) or the error that ended it.
#[derive(Debug, PartialEq)]
struct Outcome<M, E> {
    items: Vec<M>,
    end: Result<Vec<u8>, E>,
}

/// Feeds `data` in chunks of `lengths`, draining `step` after each chunk as a connection's
/// read loop does. Chunks arrive alternately as uniquely owned `Bytes` (taken without a copy),
/// shared `Bytes` (copied) and slices, so every way into the buffer is used.
fn feed<M, E>(
    data: &[u8],
    lengths: &[usize],
    mut step: impl FnMut(&mut InputBuffer) -> Result<Option<M>, E>,
) -> Outcome<M, E> {
    let mut input = InputBuffer::new();
    let mut items = Vec::new();
    let mut at = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let chunk = &data[at..at + len];
        at += len;
        match i % 3 {
            0 => input.push(Bytes::copy_from_slice(chunk)),
            1 => {
                let bytes = Bytes::copy_from_slice(chunk);
                let shared = bytes.clone();
                input.push(bytes);
                drop(shared);
            }
            _ => input.extend_from_slice(chunk),
        }
        loop {
            match step(&mut input) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        items,
                        end: Err(error),
                    }
                }
            }
        }
    }
    Outcome {
        items,
        end: Ok(input.to_vec()),
    }
}

/// Decoding the whole buffer at once and in every chunking must give the same result.
fn agree_across_chunkings<M, E, S>(what: &str, data: &[u8], make_step: impl Fn() -> S)
where
    M: PartialEq + Debug,
    E: PartialEq + Debug,
    S: FnMut(&mut InputBuffer) -> Result<Option<M>, E>,
{
    let whole = feed(data, &[data.len()], make_step());
    for chunking in chunkings(data) {
        let split = feed(data, &chunking.lengths, make_step());
        assert_eq!(
            split, whole,
            "{what}: {} (chunk lengths {:?}) disagrees with the whole buffer",
            chunking.kind, chunking.lengths
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake.

#[derive(Debug, PartialEq)]
enum Received {
    Handshake(HandshakeRequest),
    Message(InboundMessage),
}

#[derive(Debug, PartialEq)]
enum Failure {
    Handshake(HandshakeError),
    Protocol(ProtocolError),
}

/// The handshake, then (when it names a protocol we speak) the hub messages sent after it in
/// the same reads, each chunking against the whole buffer, under a small and the default
/// limit; and the response record for any error text.
pub fn handshake(data: &[u8]) {
    for max in LIMITS {
        agree_across_chunkings("handshake", data, || {
            let mut protocol: Option<Option<Protocol>> = None;
            move |input: &mut InputBuffer| match protocol {
                None => match decode_handshake_request(input, max) {
                    Ok(Some(request)) => {
                        protocol = Some(Protocol::from_name(&request.protocol));
                        Ok(Some(Received::Handshake(request)))
                    }
                    Ok(None) => {
                        assert!(
                            input.len() <= max,
                            "the handshake buffered {} bytes past its limit of {max}",
                            input.len()
                        );
                        Ok(None)
                    }
                    Err(error) => Err(Failure::Handshake(error)),
                },
                // A protocol we do not speak: the server answers with an error and reads no more.
                Some(None) => Ok(None),
                Some(Some(protocol)) => decode_step(protocol, input, max)
                    .map(|message| message.map(Received::Message))
                    .map_err(Failure::Protocol),
            }
        });
    }

    assert_eq!(&encode_handshake_response(None)[..], b"{}\x1e");
    // Any error text makes one JSON record saying exactly that: the separator never appears
    // inside it, or the client would read a broken record.
    let text = String::from_utf8_lossy(data);
    let response = encode_handshake_response(Some(&text));
    let (last, body) = response.split_last().expect("a response is never empty");
    assert_eq!(*last, 0x1e, "the response record ends with the separator");
    assert!(
        !body.contains(&0x1e),
        "a record separator inside the handshake response: {response:?}"
    );
    let parsed: serde_json::Value =
        serde_json::from_slice(body).expect("the handshake response is JSON");
    assert_eq!(parsed, serde_json::json!({ "error": text }));
}

// ---------------------------------------------------------------------------------------------
// The decoders.

/// The most a decoder may hold after it asked for more: JSON finds the end of an oversized
/// record as soon as the limit is passed; MessagePack knows the body length from its prefix
/// (up to 5 bytes) and refuses too long a body before buffering it.
fn buffer_bound(protocol: Protocol, max: usize) -> usize {
    match protocol {
        Protocol::Json => max,
        #[allow(unreachable_patterns)]
        _ => max + 4,
    }
}

/// One decoder call, with the checks that hold after every call.
fn decode_step(
    protocol: Protocol,
    input: &mut InputBuffer,
    max: usize,
) -> Result<Option<InboundMessage>, ProtocolError> {
    let result = protocol.decode(input, max);
    match &result {
        Ok(None) => assert!(
            input.len() <= buffer_bound(protocol, max),
            "{protocol} buffered {} bytes waiting for more, past its limit of {max}",
            input.len()
        ),
        Err(ProtocolError::MessageTooLarge { limit }) => assert_eq!(*limit, max),
        _ => {}
    }
    result
}

fn decoder(protocol: Protocol, data: &[u8]) {
    for max in LIMITS {
        agree_across_chunkings(protocol.name(), data, || {
            move |input: &mut InputBuffer| decode_step(protocol, input, max)
        });
    }
}

/// The JSON decoder: whole buffer against every chunking, never past the size limit.
///
/// Every record in it (the bytes between separators) also goes through the fast path for the
/// common shapes: where that answers, serde must give the same message.
pub fn json_decode(data: &[u8]) {
    decoder(Protocol::Json, data);
    for record in data.split(|&b| b == crate::protocol::json::RECORD_SEPARATOR) {
        if let Some(fast) = crate::protocol::json::parse_common(record) {
            let slow = crate::protocol::json::parse_record_with_serde(record);
            assert_eq!(
                Ok(Some(fast)),
                slow,
                "the fast path and serde read {:?} differently",
                String::from_utf8_lossy(record)
            );
        }
    }
}

/// The MessagePack decoder: whole buffer against every chunking, never past the size limit.
#[cfg(feature = "msgpack")]
pub fn msgpack_decode(data: &[u8]) {
    decoder(Protocol::MessagePack, data);
}

// ---------------------------------------------------------------------------------------------
// Round trips.

/// Decodes exactly one record.
fn decode_one(protocol: Protocol, record: &Bytes, what: &str) -> InboundMessage {
    let mut input = InputBuffer::from(record.clone());
    let message = match protocol.decode(&mut input, usize::MAX) {
        Ok(Some(message)) => message,
        other => panic!("{what}: our own {protocol} record {record:?} does not decode: {other:?}"),
    };
    assert!(
        input.is_empty(),
        "{what}: one {protocol} message was encoded as more than one record: {record:?}"
    );
    message
}

/// Every message in `data`: re-encoded in its protocol it decodes to the same message, and
/// encoding that again gives the same bytes. Each value it carries, written for a client of
/// the other protocol (a hub forwarding it), either converts or fails to encode, never
/// panics; a JSON value sent through MessagePack and back means what it meant.
fn roundtrip(protocol: Protocol, data: &[u8]) {
    let mut input = InputBuffer::from(data);
    while let Ok(Some(message)) = protocol.decode(&mut input, usize::MAX) {
        let record = protocol
            .encode_to_bytes(&message)
            .unwrap_or_else(|e| panic!("a decoded {protocol} message fails to encode: {e}"));
        let again = decode_one(protocol, &record, "round trip");
        assert_eq!(again, message, "{protocol} round trip changed the message");
        let record_again = protocol.encode_to_bytes(&again).expect("encodes");
        assert_eq!(record_again, record, "{protocol} re-encoding is not stable");
        #[cfg(feature = "msgpack")]
        for value in values(&message) {
            convert(protocol, value);
        }
    }
}

/// The values a message carries: arguments, a stream item, a completion result.
#[cfg(feature = "msgpack")]
fn values(message: &InboundMessage) -> Vec<&Payload> {
    match message {
        Message::Invocation(inv) | Message::StreamInvocation(inv) => inv.arguments.iter().collect(),
        Message::StreamItem(item) => vec![&item.item],
        Message::Completion(Completion {
            result: CompletionResult::Value(value),
            ..
        }) => vec![value],
        _ => Vec::new(),
    }
}

/// `value` as the only argument of an invocation a hub sends.
#[cfg(feature = "msgpack")]
fn carrier<V: serde::Serialize>(value: V) -> Message<[V; 1], NoValue> {
    Message::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: None,
        target: "Forwarded".into(),
        arguments: [value],
        stream_ids: Vec::new(),
    })
}

/// The single argument of a decoded carrier.
#[cfg(feature = "msgpack")]
fn carried(message: InboundMessage, what: &str) -> Payload {
    match message {
        Message::Invocation(inv) if inv.arguments.len() == 1 => {
            inv.arguments.into_iter().next().expect("one argument")
        }
        other => panic!("{what}: the carrier came back as {other:?}"),
    }
}

#[cfg(feature = "msgpack")]
fn convert(from: Protocol, value: &Payload) {
    let to = match from {
        Protocol::Json => Protocol::MessagePack,
        _ => Protocol::Json,
    };
    // MessagePack extension types other than timestamps, and map keys JSON cannot have, have
    // no JSON form: the send fails with an encoding error, which is the documented answer.
    let Ok(record) = to.encode_to_bytes(&carrier(value)) else {
        return;
    };
    let converted = carried(decode_one(to, &record, "conversion"), "conversion");
    if from != Protocol::Json {
        return;
    }
    let back = Protocol::Json
        .encode_to_bytes(&carrier(&converted))
        .expect("a MessagePack value converted from JSON converts back");
    let back = carried(
        decode_one(Protocol::Json, &back, "conversion back"),
        "conversion back",
    );
    if let Ok(original) = value.deserialize::<serde_json::Value>() {
        let after = back.deserialize::<serde_json::Value>();
        assert_eq!(
            after.as_ref().ok(),
            Some(&original),
            "a JSON value changed meaning through MessagePack: {value:?} became {back:?}"
        );
    }
}

/// JSON: decode, re-encode, decode again to the same message; values convert to MessagePack.
pub fn json_roundtrip(data: &[u8]) {
    roundtrip(Protocol::Json, data);
}

/// MessagePack: decode, re-encode, decode again to the same message; values convert to JSON.
#[cfg(feature = "msgpack")]
pub fn msgpack_roundtrip(data: &[u8]) {
    roundtrip(Protocol::MessagePack, data);
}

// ---------------------------------------------------------------------------------------------
// The MessagePack length prefix.

/// The varint length prefix: reading arbitrary bytes stays within its bounds and gives the same
/// answer however many bytes have arrived; writing any length reads back.
#[cfg(feature = "msgpack")]
pub fn length_prefix(data: &[u8]) {
    use crate::protocol::msgpack::{read_length_prefix, write_length_prefix};
    use bytes::BytesMut;

    let full = read_length_prefix(data);
    match &full {
        Ok(Some((prefix, length))) => {
            assert!((1..=5).contains(prefix), "a {prefix}-byte prefix");
            assert!(
                *length <= i32::MAX as u64,
                "a length of {length} was accepted"
            );
            assert!(data[..prefix - 1].iter().all(|b| b & 0x80 != 0));
            assert_eq!(data[prefix - 1] & 0x80, 0);
            let mut canonical = BytesMut::new();
            write_length_prefix(*length as usize, &mut canonical);
            assert!(canonical.len() <= *prefix);
            assert_eq!(
                read_length_prefix(&canonical),
                Ok(Some((canonical.len(), *length)))
            );
        }
        Ok(None) => assert!(data.len() < 5 && data.iter().all(|b| b & 0x80 != 0)),
        Err(_) => assert!(data.len() >= 5),
    }
    // Fewer bytes: still waiting, or already the same answer.
    for k in 0..data.len().min(6) {
        let partial = read_length_prefix(&data[..k]);
        if partial != Ok(None) {
            assert_eq!(partial, full, "the first {k} bytes read differently");
        }
    }
    for chunk in data.chunks(8) {
        let mut raw = [0u8; 8];
        raw[..chunk.len()].copy_from_slice(chunk);
        let raw = u64::from_le_bytes(raw);
        for shift in [0, 29, 31, 32, 36, 57] {
            let length = raw >> shift;
            let Ok(length) = usize::try_from(length) else {
                continue;
            };
            let mut out = BytesMut::new();
            write_length_prefix(length, &mut out);
            let bits = usize::BITS - length.leading_zeros();
            let expected_len = (bits as usize).div_ceil(7).max(1);
            assert_eq!(
                out.len(),
                expected_len,
                "the varint of {length} is not minimal"
            );
            let read = read_length_prefix(&out);
            if length as u64 <= i32::MAX as u64 {
                assert_eq!(read, Ok(Some((out.len(), length as u64))));
            } else {
                assert!(read.is_err(), "{length} was read back as {read:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Negotiate: the query string, the negotiate version, portable connection tokens.

/// Reads input one field at a time; exhausted input reads as zeros.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        let mut raw = [0; 8];
        for b in &mut raw {
            *b = self.byte();
        }
        u64::from_le_bytes(raw)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn query_fields(query: &Query) -> (Option<&str>, Option<&str>, Option<&str>, bool) {
    (
        query.id.as_deref(),
        query.negotiate_version.as_deref(),
        query.access_token.as_deref(),
        query.use_stateful_reconnect,
    )
}

/// The query string of negotiate and transport requests, the negotiate version, and portable
/// connection tokens (verify never panics; only tokens issued with the key verify; any change
/// to one is refused).
pub fn negotiate_query(data: &[u8]) {
    // The query: what it says survives being written out and read again.
    let text = String::from_utf8_lossy(data);
    let query = Query::parse(Some(&text));
    // Reading unescaped pairs in place changes nothing.
    assert_eq!(
        query_fields(&query),
        query_fields(&Query::parse_decoding_everything(Some(&text))),
        "the query {text:?} reads differently in place"
    );
    let mut written = form_urlencoded::Serializer::new(String::new());
    if let Some(id) = &query.id {
        written.append_pair("id", id);
    }
    if let Some(version) = &query.negotiate_version {
        written.append_pair("negotiateVersion", version);
    }
    if let Some(token) = &query.access_token {
        written.append_pair("access_token", token);
    }
    if query.use_stateful_reconnect {
        written.append_pair("useStatefulReconnect", "true");
    }
    let written = written.finish();
    let reread = Query::parse(Some(&written));
    assert_eq!(
        query_fields(&reread),
        query_fields(&query),
        "the query {text:?} reads differently once written as {written:?}"
    );
    match negotiate::requested_version(query.negotiate_version.as_deref()) {
        Ok(version) => assert!((0..=1).contains(&version), "negotiate version {version}"),
        Err(error) => assert!(error.starts_with("The client requested")),
    }

    // Tokens: a key and a token string from the input.
    let mut cursor = Cursor { data };
    let key_len = usize::from(cursor.byte() % 33);
    let key = cursor.take(key_len).to_vec();
    let claimed = String::from_utf8_lossy(cursor.data);
    if let Some(claims) = token::verify(&key, &claimed) {
        // Without the key nothing can be forged: a token that verifies is one we issued.
        let id = base64_id(&claims.connection_id);
        let (_, reissued) = token::issue(&key, id, claims.stateful, claims.issued_at);
        assert_eq!(
            reissued, claimed,
            "a token verified that we would not issue"
        );
    }
    let mut cursor = Cursor { data };
    let mut id = [0u8; 16];
    for b in &mut id {
        *b = cursor.byte();
    }
    let stateful = cursor.byte() & 1 == 1;
    let issued_at = cursor.u64();
    let (connection_id, issued) = token::issue(&key, id, stateful, issued_at);
    assert!(issued.len() <= 64, "a {}-character token", issued.len());
    assert_eq!(
        token::verify(&key, &issued),
        Some(token::TokenClaims {
            connection_id,
            stateful,
            issued_at,
        })
    );
    // Another key, or any one character changed, and it is refused. (HMAC pads short keys
    // with zeros, so a key and the same key with zero bytes appended are one key: the other
    // key differs in a bit, or is one non-zero byte where the key is empty.)
    let mut other_key = key.clone();
    let bit = cursor.byte();
    match other_key.get_mut(usize::from(bit) % key.len().max(1)) {
        Some(b) => *b ^= 1 << (bit % 8),
        None => other_key.push(bit | 1),
    }
    assert_eq!(token::verify(&other_key, &issued), None);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let position = usize::from(cursor.byte()) % issued.len();
    let mut tampered = issued.clone().into_bytes();
    let replacement = alphabet[usize::from(cursor.byte()) % alphabet.len()];
    if tampered[position] != replacement {
        tampered[position] = replacement;
        let tampered = String::from_utf8(tampered).expect("ASCII");
        assert_eq!(
            token::verify(&key, &tampered),
            None,
            "{tampered} verified (changed from {issued})"
        );
    }
}

fn base64_id(text: &str) -> [u8; 16] {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("a verified connection id is base64url");
    bytes
        .try_into()
        .expect("a verified connection id is 16 bytes")
}

// ---------------------------------------------------------------------------------------------
// The connection state machine: handshake, Ack/Sequence, the replay buffer, timers.

/// Steps per input: enough for several reconnects, short enough to run fast.
const MAX_STEPS: usize = 400;

/// What the client side of the harness has put in the machine's input, not yet decoded.
#[derive(Debug, Clone)]
enum Sent {
    Handshake,
    Ping,
    Close(Option<String>),
    Ack(u64),
    Sequence(u64),
    /// A numbered hub message, identified by its key (target or invocation id).
    Numbered {
        kind: u8,
        key: String,
    },
}

/// What the model says the machine does next with its input.
#[derive(Debug)]
enum Expect {
    Nothing,
    Handshake,
    Message {
        kind: u8,
        key: String,
    },
    ClientClosed(Option<String>),
    /// The connection ends with this disconnect error (and a Close).
    Fails(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Open,
    Detached { since: Instant },
    Ended,
}

/// Drives a `ConnectionMachine` as a connection's reader and writer do, checking it against a
/// model of the protocol.
struct Harness {
    machine: ConnectionMachine,
    options: HubOptions,
    transport: TransportKind,
    t0: Instant,
    now: Instant,
    phase: Phase,
    /// Whether an `Ending` was recorded (the first reason wins).
    ending_set: bool,
    /// The protocol the client asked for; its messages are encoded in it.
    client_protocol: Option<Protocol>,
    handshake_sent: bool,
    /// Whether accept_handshake ran (a Close is sent only then).
    accepted: bool,
    stateful: bool,
    /// While the model knows every byte the machine got: raw bytes end that.
    exact: bool,
    pending: VecDeque<Sent>,
    /// Numbered messages the client sent, for resending after a Sequence.
    client_log: Vec<Sent>,
    client_counter: u64,
    // The receive side, as the model counts it.
    processed: u64,
    next_receive: u64,
    /// Messages handed to the dispatcher on the stateful connection.
    delivered: u64,
    dispatching: bool,
    last_received: Instant,
    last_server_ack: u64,
    // The send side: every record sent while stateful, and the first not acknowledged.
    sent: Vec<Bytes>,
    first_unacked: u64,
    // The machine's transmit queue, as far as the model knows it.
    handshake_response: Option<bool>,
    expected_front: VecDeque<Bytes>,
}

impl Harness {
    fn new(cursor: &mut Cursor<'_>) -> Self {
        let mut options = HubOptions::default();
        let ms = |v: u16, min: u64| Duration::from_millis(min + u64::from(v) % 20_000);
        options.keep_alive_interval = ms(cursor.u16(), 1);
        options.client_timeout = ms(cursor.u16(), 1) * 2;
        options.handshake_timeout = ms(cursor.u16(), 1);
        options.disconnect_timeout = ms(cursor.u16(), 0);
        // Room for every structured record; raw bytes may cross it.
        options.max_receive_message_size = 256 + usize::from(cursor.u16() % 4096);
        options.enable_detailed_errors = cursor.byte() & 1 == 1;
        let transport = match cursor.byte() % 3 {
            0 => TransportKind::WebSockets,
            1 => TransportKind::ServerSentEvents,
            _ => TransportKind::LongPolling,
        };
        let config = Arc::new(Config::new(&options, transport, Arc::default()));
        let t0 = Instant::now();
        Harness {
            machine: ConnectionMachine::new(config, t0),
            options,
            transport,
            t0,
            now: t0,
            phase: Phase::Handshake,
            ending_set: false,
            client_protocol: None,
            handshake_sent: false,
            accepted: false,
            stateful: false,
            exact: true,
            pending: VecDeque::new(),
            client_log: Vec::new(),
            client_counter: 0,
            processed: 0,
            next_receive: 1,
            delivered: 0,
            dispatching: false,
            last_received: t0,
            last_server_ack: 0,
            sent: Vec::new(),
            first_unacked: 1,
            handshake_response: None,
            expected_front: VecDeque::new(),
        }
    }

    fn keep_alive(&self) -> Option<Duration> {
        (self.transport != TransportKind::LongPolling).then_some(self.options.keep_alive_interval)
    }

    fn client_timeout(&self) -> Option<Duration> {
        (self.transport != TransportKind::LongPolling).then_some(self.options.client_timeout)
    }

    fn step(&mut self, cursor: &mut Cursor<'_>) {
        match cursor.byte() % 12 {
            0 => {
                let ms = u64::from(cursor.u16()) % 30_000;
                self.now += Duration::from_millis(ms);
                self.timeout();
            }
            1 => {
                if let Some(deadline) = self.machine.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.timeout();
            }
            2 => self.client_sends(cursor),
            3 => self.client_resends(cursor),
            4 => {
                let len = usize::from(cursor.byte() % 64);
                let raw = cursor.take(len);
                self.machine.handle_bytes(Bytes::copy_from_slice(raw));
                self.exact = false;
            }
            5 => self.poll(cursor),
            6 => {
                if std::mem::take(&mut self.dispatching) && self.phase == Phase::Open {
                    self.last_received = self.now;
                }
                self.machine.dispatched(self.now);
            }
            7 => self.server_sends(cursor),
            8 => self.transport_lost(),
            9 => self.transport_replaced(),
            10 => {
                if cursor.byte() & 1 == 0 {
                    self.drain_transmits();
                } else {
                    let mut batch = Vec::new();
                    let (room, deadline) = self.machine.writer_step(self.now, &mut batch);
                    assert_eq!(room, self.machine.has_room());
                    assert_eq!(deadline, self.machine.write_deadline());
                    for record in batch {
                        self.check_transmit(record);
                    }
                }
            }
            _ => self.server_closes(cursor),
        }
    }

    /// `handle_timeout` at `now`, then the writer takes what it queued: the machine must have
    /// applied every rule that was due, so its next deadline is later (a deadline left in the
    /// past would spin the driver).
    fn timeout(&mut self) {
        let was = self.phase;
        let client_timed_out = self.exact
            && was == Phase::Open
            && !self.dispatching
            && self
                .client_timeout()
                .is_some_and(|t| self.now >= self.last_received + t);
        self.machine.handle_timeout(self.now);
        let due = match was {
            Phase::Handshake => {
                let due = self.now >= self.t0 + self.options.handshake_timeout;
                if due {
                    self.handshake_response = Some(false);
                }
                due.then_some("Handshake was canceled.")
            }
            Phase::Detached { since } => (self.now >= since + self.options.disconnect_timeout)
                .then_some("the client did not reconnect in time"),
            Phase::Open => client_timed_out.then_some("client timeout"),
            Phase::Ended => None,
        };
        if let Some(error) = due {
            assert!(self.machine.is_ended(), "{error}: due but not applied");
            self.expect_ending(error);
        }
        if self.machine.is_ended() && self.phase != Phase::Ended {
            // Only a timer can have ended it here.
            let ending = self.machine.ending().expect("a timer records why it ended");
            match was {
                Phase::Open => {
                    assert_eq!(ending.error, "client timeout");
                    assert!(self.client_timeout().is_some() && !self.dispatching);
                    assert!(!self.exact || client_timed_out, "client timeout too early");
                }
                _ => assert!(due.is_some(), "{was:?} ended early: {ending:?}"),
            }
            self.phase = Phase::Ended;
            self.ending_set = true;
        }
        self.drain_transmits();
        if !self.machine.is_ended() {
            if let Some(deadline) = self.machine.poll_timeout() {
                assert!(
                    deadline > self.now,
                    "after handle_timeout({:?}) the next deadline is {:?}",
                    self.now - self.t0,
                    deadline - self.t0
                );
            }
        }
    }

    fn expect_ending(&mut self, error: &str) {
        if !self.ending_set {
            let ending = self.machine.ending().expect("an ending was recorded");
            assert_eq!(ending.error, error);
            self.ending_set = true;
        }
        self.phase = Phase::Ended;
        self.pending.clear();
    }

    fn push(&mut self, record: Bytes, cursor: &mut Cursor<'_>) {
        // The same record in one, two or three reads.
        let pieces = 1 + usize::from(cursor.byte() % 3);
        let mut at = 0;
        for i in 1..=pieces {
            let end = if i == pieces {
                record.len()
            } else {
                (at + usize::from(cursor.byte()) % (record.len() - at + 1)).min(record.len())
            };
            self.machine.handle_bytes(record.slice(at..end));
            at = end;
        }
    }

    fn encode(&self, message: &Message<Vec<u64>, u64>) -> Bytes {
        self.client_protocol
            .unwrap_or(Protocol::Json)
            .encode_to_bytes(message)
            .expect("the client's messages encode")
    }

    fn client_sends(&mut self, cursor: &mut Cursor<'_>) {
        if !self.handshake_sent {
            let (name, protocol) = match cursor.byte() % 5 {
                0 | 1 => ("json", Some(Protocol::Json)),
                #[cfg(feature = "msgpack")]
                2 | 3 => ("messagepack", Some(Protocol::MessagePack)),
                _ => ("xml", None),
            };
            let version = cursor.byte() % 3;
            let record = format!("{{\"protocol\":\"{name}\",\"version\":{version}}}\x1e");
            self.handshake_sent = true;
            self.client_protocol = protocol;
            self.pending.push_back(Sent::Handshake);
            self.push(Bytes::from(record), cursor);
            return;
        }
        let sent = match cursor.byte() % 10 {
            kind @ 0..=4 => {
                self.client_counter += 1;
                let sent = Sent::Numbered {
                    kind: kind + 1,
                    key: format!("c{}", self.client_counter),
                };
                self.client_log.push(sent.clone());
                sent
            }
            5 => Sent::Ping,
            6 => Sent::Close((cursor.byte() & 1 == 1).then(|| "bye".to_owned())),
            7 => Sent::Ack(self.pick_id(cursor)),
            8 => Sent::Sequence(self.pick_id(cursor)),
            _ => Sent::Ping,
        };
        self.send(sent, cursor);
    }

    /// An id near the interesting edges: 0, what was sent or processed, past them, huge.
    fn pick_id(&self, cursor: &mut Cursor<'_>) -> u64 {
        let sent = self.sent.len() as u64;
        let delta = u64::from(cursor.byte() % 4);
        match cursor.byte() % 6 {
            0 => 0,
            1 => sent.saturating_sub(delta),
            2 => sent + delta,
            3 => self.processed + delta,
            4 => self.processed.saturating_sub(delta),
            _ => u64::MAX - delta * (1 << 62),
        }
    }

    fn send(&mut self, sent: Sent, cursor: &mut Cursor<'_>) {
        let message: Message<Vec<u64>, u64> = match &sent {
            Sent::Handshake => unreachable!("sent on its own"),
            Sent::Ping => Message::Ping,
            Sent::Close(error) => Message::Close(Close {
                error: error.clone(),
                allow_reconnect: false,
            }),
            Sent::Ack(id) => Message::Ack(*id),
            Sent::Sequence(id) => Message::Sequence(*id),
            Sent::Numbered { kind, key } => {
                let invocation = |id: Option<String>| Invocation {
                    headers: Headers::new(),
                    invocation_id: id.map(Into::into),
                    target: key.as_str().into(),
                    arguments: vec![self.client_counter],
                    stream_ids: Vec::new(),
                };
                match kind {
                    1 => Message::Invocation(invocation(None)),
                    2 => Message::StreamItem(StreamItem {
                        headers: Headers::new(),
                        invocation_id: key.as_str().into(),
                        item: 7,
                    }),
                    3 => Message::Completion(Completion {
                        headers: Headers::new(),
                        invocation_id: key.as_str().into(),
                        result: CompletionResult::Void,
                    }),
                    4 => Message::StreamInvocation(invocation(Some("s".to_owned()))),
                    _ => Message::CancelInvocation(CancelInvocation {
                        headers: Headers::new(),
                        invocation_id: key.as_str().into(),
                    }),
                }
            }
        };
        let record = self.encode(&message);
        self.pending.push_back(sent);
        self.push(record, cursor);
    }

    /// A reconnecting client: a Sequence, then every numbered message from it on (a few).
    fn client_resends(&mut self, cursor: &mut Cursor<'_>) {
        if !self.handshake_sent {
            return self.client_sends(cursor);
        }
        let log_len = self.client_log.len() as u64;
        let from = log_len + 1 - u64::from(cursor.byte()) % (log_len + 1);
        self.send(Sent::Sequence(from), cursor);
        let resend: Vec<Sent> = self.client_log[(from - 1) as usize..]
            .iter()
            .take(8)
            .cloned()
            .collect();
        for sent in resend {
            self.send(sent, cursor);
        }
    }

    /// The model's next outcome of decoding, consuming what it decodes silently.
    fn expect_next(&mut self) -> Expect {
        loop {
            if self.phase == Phase::Ended {
                return Expect::Nothing;
            }
            let Some(sent) = self.pending.pop_front() else {
                return Expect::Nothing;
            };
            if self.phase == Phase::Handshake {
                assert!(matches!(sent, Sent::Handshake), "the handshake comes first");
                return Expect::Handshake;
            }
            self.last_received = self.now;
            let msgpack = self.client_protocol != Some(Protocol::Json);
            match sent {
                Sent::Handshake => unreachable!("one handshake"),
                Sent::Ping => {}
                Sent::Close(error) => {
                    self.phase = Phase::Ended;
                    self.pending.clear();
                    return Expect::ClientClosed(error);
                }
                Sent::Ack(id) | Sent::Sequence(id) if msgpack && id > i64::MAX as u64 => {
                    return Expect::Fails("Integer out of range.".to_owned());
                }
                Sent::Ack(_) | Sent::Sequence(_) if !self.stateful => {}
                Sent::Ack(id) => {
                    let sent = self.sent.len() as u64;
                    if id > sent {
                        return Expect::Fails(format!(
                            "Ack ID {id} is greater than the number of messages sent ({sent})."
                        ));
                    }
                    self.first_unacked = self.first_unacked.max(id + 1);
                }
                Sent::Sequence(0) => {
                    return Expect::Fails(
                        "Sequence ID 0 is invalid: sequence ids start at 1.".to_owned(),
                    )
                }
                Sent::Sequence(id) if id > self.processed + 1 => {
                    return Expect::Fails(
                        "Sequence ID greater than amount of messages we've received.".to_owned(),
                    )
                }
                Sent::Sequence(id) => self.next_receive = id,
                Sent::Numbered { kind, key } => {
                    if self.stateful {
                        let id = self.next_receive;
                        self.next_receive += 1;
                        if id <= self.processed {
                            continue;
                        }
                        self.processed = id;
                    }
                    return Expect::Message { kind, key };
                }
            }
        }
    }

    /// The reader: every event until the machine wants more input.
    fn poll(&mut self, cursor: &mut Cursor<'_>) {
        loop {
            let event = self.machine.poll_event(self.now);
            if self.exact {
                let expected = self.expect_next();
                match (&event, expected) {
                    (None, Expect::Nothing) => {}
                    (None, Expect::Fails(error)) => {
                        assert!(self.machine.is_ended(), "expected the end: {error}");
                        let ending = self.machine.ending().expect("a failure is recorded");
                        if !self.ending_set {
                            assert_eq!(ending.error, error);
                            assert!(ending.close.is_some(), "a protocol error sends a Close");
                        }
                        self.expect_ending(&error);
                    }
                    (Some(Event::Handshake(_)), Expect::Handshake) => {}
                    (Some(Event::Message(message)), Expect::Message { kind, key }) => {
                        assert_eq!(message.type_id(), kind);
                        assert_eq!(message_key(message), key, "the wrong message was delivered");
                    }
                    (Some(Event::ClientClosed(error)), Expect::ClientClosed(expected)) => {
                        assert_eq!(error, &expected);
                    }
                    (event, expected) => {
                        panic!("the machine gave {event:?}, the model expected {expected:?}")
                    }
                }
            }
            match event {
                None => break,
                Some(Event::Handshake(request)) => {
                    assert_eq!(self.phase, Phase::Handshake, "a second handshake event");
                    self.answer_handshake(request, cursor);
                }
                Some(Event::Message(_)) => {
                    assert!(
                        matches!(self.phase, Phase::Open | Phase::Detached { .. }),
                        "a message in {:?}",
                        self.phase
                    );
                    if self.stateful {
                        self.delivered += 1;
                    }
                    self.dispatching = true;
                    if cursor.byte() & 1 == 0 {
                        self.dispatching = false;
                        if self.phase == Phase::Open {
                            self.last_received = self.now;
                        }
                        self.machine.dispatched(self.now);
                    }
                }
                Some(Event::ClientClosed(_)) => {
                    assert!(
                        self.machine.is_ended(),
                        "a client Close ends the connection"
                    );
                    self.phase = Phase::Ended;
                    self.pending.clear();
                }
            }
        }
        if self.machine.is_ended() && self.phase != Phase::Ended {
            // Raw input made it fail (the model does not know those bytes).
            assert!(
                !self.exact,
                "the machine ended and the model did not expect it"
            );
            let ending = self.machine.ending().expect("a failure is recorded");
            if !ending.error.is_empty() && self.phase == Phase::Handshake {
                self.handshake_response = Some(false);
            }
            self.phase = Phase::Ended;
            self.ending_set = true;
        }
    }

    fn answer_handshake(&mut self, request: HandshakeRequest, cursor: &mut Cursor<'_>) {
        let decision = cursor.byte();
        match Protocol::from_name(&request.protocol) {
            Some(protocol) if decision % 8 != 0 => {
                self.stateful = request.version >= 2 && decision & 1 == 1;
                let limit = usize::from(cursor.u16() % 4096);
                self.machine
                    .accept_handshake(self.now, protocol, self.stateful.then_some(limit));
                // What the client asked for, as far as the harness knows (raw bytes may
                // have written another handshake).
                if self.client_protocol != Some(protocol) {
                    self.client_protocol = Some(protocol);
                    self.exact = false;
                }
                self.accepted = true;
                self.phase = Phase::Open;
                self.last_received = self.now;
                self.handshake_response = Some(true);
                assert_eq!(self.machine.is_stateful(), self.stateful);
            }
            _ => {
                self.machine.refuse_handshake("refused");
                self.handshake_response = Some(false);
                self.expect_ending("refused");
            }
        }
    }

    /// The hub's writer: records go out while the replay buffer has room.
    fn server_sends(&mut self, cursor: &mut Cursor<'_>) {
        let count = 1 + cursor.byte() % 8;
        let len = usize::from(cursor.byte()) * 4;
        for _ in 0..count {
            let room = self.model_has_room();
            assert_eq!(self.machine.has_room(), room, "has_room");
            if !room {
                break;
            }
            let mut record = format!("server record {}|", self.sent.len() + 1).into_bytes();
            record.resize(record.len().max(len), b'x');
            let record = Bytes::from(record);
            self.machine.on_send(self.now, &record);
            if self.stateful {
                self.sent.push(record);
            }
        }
    }

    fn model_has_room(&self) -> bool {
        if !self.stateful {
            return true;
        }
        let limit = self.machine.replay_view().expect("stateful").limit;
        let unacked = self.unacked();
        unacked.is_empty() || unacked.iter().map(Bytes::len).sum::<usize>() < limit
    }

    fn unacked(&self) -> &[Bytes] {
        &self.sent[(self.first_unacked - 1) as usize..]
    }

    fn transport_lost(&mut self) {
        let detached = self.machine.transport_lost(self.now, "reset");
        match self.phase {
            Phase::Open if self.stateful => {
                assert!(detached, "a stateful connection waits for a reconnect");
                self.phase = Phase::Detached { since: self.now };
                self.handshake_response = None;
                self.expected_front.clear();
                assert!(
                    self.machine.poll_transmit(self.now).is_none(),
                    "stale records"
                );
            }
            Phase::Open => {
                assert!(!detached);
                self.expect_ending("reset");
            }
            _ => assert!(!detached, "transport_lost in {:?} detached", self.phase),
        }
    }

    fn transport_replaced(&mut self) {
        self.machine.transport_replaced(self.now);
        if !self.stateful || matches!(self.phase, Phase::Handshake | Phase::Ended) {
            return;
        }
        self.phase = Phase::Open;
        self.pending.clear();
        self.last_received = self.now;
        self.handshake_response = None;
        let protocol = self.client_protocol.expect("an accepted protocol");
        let first = self.first_unacked;
        self.expected_front.clear();
        self.expected_front.push_back(
            protocol
                .encode_to_bytes(&Message::<NoValue, NoValue>::Sequence(first))
                .expect("encodes"),
        );
        let unacked: Vec<Bytes> = self.unacked().to_vec();
        self.expected_front.extend(unacked);
    }

    fn server_closes(&mut self, cursor: &mut Cursor<'_>) {
        let error = (cursor.byte() & 1 == 1).then(|| "shutdown".to_owned());
        self.machine.close(Close::default(), error.clone());
        if !self.ending_set {
            let ending = self.machine.ending().expect("close records an ending");
            assert_eq!(ending.close.is_some(), self.accepted);
            assert_eq!(ending.error, error.unwrap_or_default());
            self.ending_set = true;
        }
        self.expect_ending("");
        // What a driver does after the end: look for the client's own Close in what is left.
        let _ = self.machine.client_close_in_input();
    }

    fn drain_transmits(&mut self) {
        while let Some(record) = self.machine.poll_transmit(self.now) {
            self.check_transmit(record);
        }
    }

    /// Every record the machine writes is one the model expects: the handshake response,
    /// the replay after a reconnect, a Ping, or an Ack for what was processed.
    fn check_transmit(&mut self, record: Bytes) {
        if let Some(accepted) = self.handshake_response.take() {
            if accepted {
                assert_eq!(&record[..], b"{}\x1e");
            } else {
                assert!(record.starts_with(b"{\"error\":"), "{record:?}");
            }
            return;
        }
        if let Some(expected) = self.expected_front.pop_front() {
            assert_eq!(record, expected, "the replay after a reconnect");
            return;
        }
        let protocol = self
            .client_protocol
            .expect("transmits follow the handshake");
        match decode_one(protocol, &record, "a transmit") {
            Message::Ping => assert!(self.keep_alive().is_some(), "a Ping on long polling"),
            Message::Ack(id) => {
                assert!(self.stateful, "an Ack on a connection that is not stateful");
                assert!(
                    id > self.last_server_ack,
                    "Ack {id} after {}",
                    self.last_server_ack
                );
                assert!(
                    id <= self.delivered,
                    "Ack {id} for {} messages",
                    self.delivered
                );
                assert!(!self.exact || id == self.processed);
                self.last_server_ack = id;
            }
            other => panic!("an unexpected record from the machine: {other:?}"),
        }
    }

    /// Invariants that hold between any two steps.
    fn check(&mut self) {
        assert_eq!(self.machine.is_ended(), self.phase == Phase::Ended);
        let Some(view) = self.machine.replay_view() else {
            assert!(!self.stateful);
            return;
        };
        assert!(self.stateful);
        let sent = self.sent.len() as u64;
        assert_eq!(view.next_send, sent + 1, "records counted as sent");
        let bytes: usize = view.unacked.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(view.unacked_bytes, bytes, "the replay buffer's byte count");
        if let Some((_, newest)) = view.unacked.back() {
            // Past the limit by one record at most: each was sent only while there was room.
            assert!(
                view.unacked.len() == 1 || bytes - newest.len() < view.limit,
                "{} bytes unacknowledged in {} records past a limit of {}",
                bytes,
                view.unacked.len(),
                view.limit
            );
        }
        let first = view.unacked.front().map_or(view.next_send, |(id, _)| *id);
        for (offset, (id, record)) in view.unacked.iter().enumerate() {
            assert_eq!(
                *id,
                first + offset as u64,
                "unacknowledged ids are contiguous"
            );
            assert!(*id <= sent, "id {id} was never sent");
            assert_eq!(record, &self.sent[(*id - 1) as usize], "record {id}");
        }
        assert_eq!(view.processed, self.delivered, "processed = delivered");
        assert!(view.acknowledged <= view.processed);
        assert!(view.acknowledged >= self.last_server_ack);
        if self.exact {
            assert_eq!(first, self.first_unacked, "acknowledged records dropped");
            assert_eq!(view.processed, self.processed);
        } else {
            self.first_unacked = first;
            self.processed = view.processed;
        }
    }
}

/// The key the harness put in a numbered message: its target or its invocation id.
fn message_key(message: &InboundMessage) -> &str {
    match message {
        Message::Invocation(inv) | Message::StreamInvocation(inv) => &inv.target,
        Message::StreamItem(item) => &item.invocation_id,
        Message::Completion(c) => &c.invocation_id,
        Message::CancelInvocation(c) => &c.invocation_id,
        _ => "",
    }
}

/// The connection state machine under arbitrary interleavings of received messages (Ack,
/// Sequence, resends, garbage), sends, transport loss and replacement, and time, against a
/// model: the replay buffer's byte count is exact and past its limit by one record at most,
/// acknowledged ids never exceed what was sent, duplicates are dropped, every timer rule
/// fires when due and leaves no deadline in the past.
pub fn stateful(data: &[u8]) {
    let mut cursor = Cursor { data };
    let mut harness = Harness::new(&mut cursor);
    for _ in 0..MAX_STEPS {
        if cursor.is_empty() {
            break;
        }
        harness.step(&mut cursor);
        harness.check();
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket framing.

/// A socket whose reads hand out the given chunks, one per read, then the end of input; what
/// is written to it is kept.
struct ChunkedSocket {
    chunks: VecDeque<Vec<u8>>,
    written: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for ChunkedSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(mut chunk) = self.chunks.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.chunks.push_front(chunk.split_off(n));
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for ChunkedSocket {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.written.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// What the read side made of a client's bytes: the messages, how it ended (the error's kind
/// and the close code of a violation), and what it wrote back (Pongs).
#[derive(Debug, PartialEq)]
struct FramesOutcome {
    messages: Vec<Vec<u8>>,
    end: Option<(std::io::ErrorKind, Option<u16>)>,
    written: Vec<u8>,
}

fn read_frames(chunks: VecDeque<Vec<u8>>, max_message: usize, read_chunk: usize) -> FramesOutcome {
    use futures_util::Stream;

    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let total: usize = chunks.iter().map(Vec::len).sum();
    let socket = ChunkedSocket {
        chunks,
        written: written.clone(),
    };
    let (_sink, mut stream) =
        crate::transport::websocket::split(socket, max_message, read_chunk, 1 << 16);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut messages = Vec::new();
    let mut end = None;
    // Every poll consumes input or ends the stream; the bound catches a loop that does not.
    for _ in 0..=total + 2 {
        match std::pin::Pin::new(&mut stream).poll_next(&mut cx) {
            std::task::Poll::Ready(Some(Ok(message))) => {
                assert!(
                    message.len() <= max_message,
                    "a {}-byte message past the {max_message}-byte cap",
                    message.len()
                );
                messages.push(message.to_vec());
            }
            std::task::Poll::Ready(Some(Err(error))) => {
                let code = error
                    .get_ref()
                    .and_then(|inner| {
                        inner.downcast_ref::<crate::transport::websocket::Violation>()
                    })
                    .map(|violation| violation.close_code);
                end = Some((error.kind(), code));
            }
            std::task::Poll::Ready(None) => {
                let written = written.lock().unwrap().clone();
                return FramesOutcome {
                    messages,
                    end,
                    written,
                };
            }
            std::task::Poll::Pending => panic!("the stream waited on a socket that never does"),
        }
        let held = stream.buffered_capacity();
        assert!(
            held <= 4 * (max_message + read_chunk + 14),
            "{held} bytes buffered under a {max_message}-byte cap"
        );
    }
    panic!("the stream neither ended nor consumed its input");
}

/// The server's WebSocket frame reader: whatever a client sends, each message stays within
/// the cap, the buffer within its bound, and every chunking of the same bytes gives the same
/// messages, the same end and the same Pongs. The first byte picks the cap and the read size.
pub fn websocket_frames(data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let max_message = [16, 125, 300, 64 * 1024][usize::from(config & 3)];
    let read_chunk = [14, 64, 1000, 4096][usize::from((config >> 2) & 3)];
    let whole = read_frames(VecDeque::from([stream.to_vec()]), max_message, read_chunk);
    for chunking in chunkings(stream) {
        let mut rest = stream;
        let chunks: VecDeque<Vec<u8>> = chunking
            .lengths
            .iter()
            .map(|&len| {
                let (chunk, tail) = rest.split_at(len);
                rest = tail;
                chunk.to_vec()
            })
            .collect();
        let outcome = read_frames(chunks, max_message, read_chunk);
        assert_eq!(outcome, whole, "{} ({:?})", chunking.kind, chunking.lengths);
    }
}
