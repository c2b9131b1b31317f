//! The JSON hub protocol: each record is one UTF-8 JSON object followed by 0x1E.
//!
//! 0x1E can never appear inside valid JSON text (control characters must be escaped), so
//! records are found by scanning for it; several records may share one frame and one record may
//! span several frames.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::Headers;
use super::{
    CancelInvocation, Close, Completion, CompletionResult, HubProtocol, InboundMessage,
    InputBuffer, Invocation, Message, Payload, ProtocolError, SmallString, StreamItem,
    TransferFormat,
};

/// The record separator that ends every JSON record (and the handshake).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The JSON hub protocol (`"json"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonProtocol;

impl HubProtocol for JsonProtocol {
    const NAME: &'static str = "json";
    const VERSION: u32 = 2;
    const TRANSFER_FORMAT: TransferFormat = TransferFormat::Text;

    fn decode(
        input: &mut InputBuffer,
        max_message_size: usize,
    ) -> Result<Option<InboundMessage>, ProtocolError> {
        loop {
            let Some(end) = input.find(RECORD_SEPARATOR) else {
                if input.len() > max_message_size {
                    return Err(ProtocolError::MessageTooLarge {
                        limit: max_message_size,
                    });
                }
                return Ok(None);
            };
            if end > max_message_size {
                return Err(ProtocolError::MessageTooLarge {
                    limit: max_message_size,
                });
            }
            // Read from the buffer in place, then dropped from it.
            let message = parse_record(&input[..end]);
            input.advance(end + 1);
            if let Some(message) = message? {
                return Ok(Some(message));
            }
            // Unknown message type: skipped, like the reference does.
        }
    }

    fn encode<A: Serialize, V: Serialize>(
        message: &Message<A, V>,
        out: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        let mut writer = out.writer();
        let result = match message {
            Message::Invocation(inv) => write(&mut writer, &InvocationOut::new(1, inv)),
            Message::StreamInvocation(inv) => write(&mut writer, &InvocationOut::new(4, inv)),
            Message::StreamItem(item) => write(
                &mut writer,
                &StreamItemOut {
                    kind: 2,
                    headers: &item.headers,
                    invocation_id: &item.invocation_id,
                    item: &item.item,
                },
            ),
            // The record an invocation answers with, written with its property names as
            // literals: serde would escape each name again for every record.
            Message::Completion(c) if c.headers.is_empty() => {
                write_completion(&mut writer, &c.invocation_id, &c.result)
            }
            Message::Completion(c) => {
                let (result, error) = match &c.result {
                    CompletionResult::Void => (None, None),
                    CompletionResult::Value(v) => (Some(v), None),
                    CompletionResult::Error(e) => (None, Some(e.as_str())),
                };
                write(
                    &mut writer,
                    &CompletionOut {
                        kind: 3,
                        headers: &c.headers,
                        invocation_id: &c.invocation_id,
                        error,
                        result,
                    },
                )
            }
            Message::CancelInvocation(c) => write(
                &mut writer,
                &CancelOut {
                    kind: 5,
                    headers: &c.headers,
                    invocation_id: &c.invocation_id,
                },
            ),
            Message::Ping => write(&mut writer, &TypeOnly { kind: 6 }),
            Message::Close(close) => write(
                &mut writer,
                &CloseOut {
                    kind: 7,
                    error: close.error.as_deref(),
                    allow_reconnect: close.allow_reconnect.then_some(true),
                },
            ),
            Message::Ack(id) => write(
                &mut writer,
                &SequenceOut {
                    kind: 8,
                    sequence_id: *id,
                },
            ),
            Message::Sequence(id) => write(
                &mut writer,
                &SequenceOut {
                    kind: 9,
                    sequence_id: *id,
                },
            ),
        };
        result.map_err(|e| ProtocolError::Serialize(e.to_string()))?;
        writer.into_inner().put_u8(RECORD_SEPARATOR);
        Ok(())
    }
}

/// A Completion without headers, byte for byte what [`CompletionOut`] writes.
fn write_completion<V: Serialize>(
    writer: &mut impl std::io::Write,
    invocation_id: &str,
    result: &CompletionResult<V>,
) -> serde_json::Result<()> {
    writer
        .write_all(br#"{"type":3,"invocationId":"#)
        .map_err(serde_json::Error::io)?;
    serde_json::to_writer(&mut *writer, invocation_id)?;
    match result {
        CompletionResult::Void => {}
        CompletionResult::Value(value) => {
            writer
                .write_all(br#","result":"#)
                .map_err(serde_json::Error::io)?;
            write(&mut *writer, value)?;
        }
        CompletionResult::Error(error) => {
            writer
                .write_all(br#","error":"#)
                .map_err(serde_json::Error::io)?;
            serde_json::to_writer(&mut *writer, error)?;
        }
    }
    writer.write_all(b"}").map_err(serde_json::Error::io)
}

fn write<T: Serialize>(writer: impl std::io::Write, value: &T) -> serde_json::Result<()> {
    let _verbatim = super::payload::JsonOutput::begin();
    serde_json::to_writer(writer, value)
}

/// Every field any message type may carry; unknown properties are ignored.
#[derive(Deserialize)]
struct WireMessage {
    #[serde(rename = "type")]
    kind: Option<i64>,
    #[serde(rename = "invocationId")]
    invocation_id: Option<String>,
    target: Option<String>,
    arguments: Option<Vec<Box<RawValue>>>,
    #[serde(rename = "streamIds")]
    stream_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    item: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    error: Option<String>,
    headers: Option<Headers>,
    #[serde(rename = "allowReconnect")]
    allow_reconnect: Option<bool>,
    #[serde(rename = "sequenceId")]
    sequence_id: Option<u64>,
}

/// Distinguishes a property that is present with `null` from one that is missing.
fn present<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(de).map(Some)
}

fn missing(property: &str) -> ProtocolError {
    ProtocolError::invalid(format!("Missing required property '{property}'."))
}

/// Parses one record (without its separator). `Ok(None)` for an unknown message type.
///
/// The two records a client sends most, an invocation with plain strings for its id and target
/// and a ping, are read by [`common::parse`] without serde; everything else, and every record
/// that is not valid, goes through serde, which then decides the outcome and its error text.
pub(crate) fn parse_record(record: &[u8]) -> Result<Option<InboundMessage>, ProtocolError> {
    if let Some(message) = common::parse(record) {
        return Ok(Some(message));
    }
    parse_record_with_serde(record)
}

/// The fast path alone: `None` where serde would have to decide.
#[cfg(feature = "fuzzing")]
pub(crate) fn parse_common(record: &[u8]) -> Option<InboundMessage> {
    common::parse(record)
}

/// [`parse_record`] through serde alone (what the fast path must agree with).
pub(crate) fn parse_record_with_serde(
    record: &[u8],
) -> Result<Option<InboundMessage>, ProtocolError> {
    let wire: WireMessage = serde_json::from_slice(record)
        .map_err(|e| ProtocolError::invalid(format!("Error reading JSON. {e}")))?;
    let kind = wire.kind.ok_or_else(|| missing("type"))?;
    let headers = wire.headers.unwrap_or_default();
    let required_id = |id: Option<String>| {
        id.map(SmallString::from)
            .ok_or_else(|| missing("invocationId"))
    };
    let message = match kind {
        1 | 4 => {
            let invocation_id = match (kind, wire.invocation_id) {
                (4, id) => Some(required_id(id)?),
                (_, id) => id.filter(|id| !id.is_empty()).map(SmallString::from),
            };
            let invocation = Invocation {
                headers,
                invocation_id,
                target: wire.target.ok_or_else(|| missing("target"))?.into(),
                arguments: wire
                    .arguments
                    .ok_or_else(|| missing("arguments"))?
                    .into_iter()
                    .map(Payload::json)
                    .collect(),
                stream_ids: wire
                    .stream_ids
                    .unwrap_or_default()
                    .into_iter()
                    .map(SmallString::from)
                    .collect(),
            };
            if kind == 1 {
                Message::Invocation(invocation)
            } else {
                Message::StreamInvocation(invocation)
            }
        }
        2 => Message::StreamItem(StreamItem {
            headers,
            invocation_id: required_id(wire.invocation_id)?,
            item: Payload::json(wire.item.ok_or_else(|| missing("item"))?),
        }),
        3 => {
            let result = match (wire.error, wire.result) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::invalid(
                        "The 'error' and 'result' properties are mutually exclusive.",
                    ))
                }
                (Some(error), None) => CompletionResult::Error(error),
                (None, Some(value)) => CompletionResult::Value(Payload::json(value)),
                (None, None) => CompletionResult::Void,
            };
            Message::Completion(Completion {
                headers,
                invocation_id: required_id(wire.invocation_id)?,
                result,
            })
        }
        5 => Message::CancelInvocation(CancelInvocation {
            headers,
            invocation_id: required_id(wire.invocation_id)?,
        }),
        6 => Message::Ping,
        7 => Message::Close(Close {
            error: wire.error,
            allow_reconnect: wire.allow_reconnect.unwrap_or(false),
        }),
        8 => Message::Ack(wire.sequence_id.ok_or_else(|| missing("sequenceId"))?),
        9 => Message::Sequence(wire.sequence_id.ok_or_else(|| missing("sequenceId"))?),
        _ => return Ok(None),
    };
    Ok(Some(message))
}

// Output shapes. Property order follows the reference server: type, headers, invocationId,
// then the rest; empty headers, absent ids and empty stream id lists are omitted.

#[derive(Serialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: u8,
}

#[derive(Serialize)]
struct InvocationOut<'a, A> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    headers: &'a Headers,
    #[serde(rename = "invocationId", skip_serializing_if = "Option::is_none")]
    invocation_id: Option<&'a str>,
    target: &'a str,
    arguments: &'a A,
    #[serde(
        rename = "streamIds",
        skip_serializing_if = "<[SmallString]>::is_empty"
    )]
    stream_ids: &'a [SmallString],
}

impl<'a, A> InvocationOut<'a, A> {
    fn new(kind: u8, inv: &'a Invocation<A>) -> Self {
        InvocationOut {
            kind,
            headers: &inv.headers,
            invocation_id: inv.invocation_id.as_deref(),
            target: &inv.target,
            arguments: &inv.arguments,
            stream_ids: &inv.stream_ids,
        }
    }
}

#[derive(Serialize)]
struct StreamItemOut<'a, V> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    headers: &'a Headers,
    #[serde(rename = "invocationId")]
    invocation_id: &'a str,
    item: &'a V,
}

#[derive(Serialize)]
struct CompletionOut<'a, V> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    headers: &'a Headers,
    #[serde(rename = "invocationId")]
    invocation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a V>,
}

#[derive(Serialize)]
struct CancelOut<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    headers: &'a Headers,
    #[serde(rename = "invocationId")]
    invocation_id: &'a str,
}

#[derive(Serialize)]
struct CloseOut<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(rename = "allowReconnect", skip_serializing_if = "Option::is_none")]
    allow_reconnect: Option<bool>,
}

#[derive(Serialize)]
struct SequenceOut {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(rename = "sequenceId")]
    sequence_id: u64,
}

/// The common records without serde: `{"type":1,"invocationId":"…","target":"…","arguments":[…]}`
/// (properties in any order, the id optional, any JSON whitespace) and `{"type":6}`.
///
/// This is a recognizer, not a second JSON parser with its own opinions: it answers only when
/// the record is certainly valid JSON of that shape, and returns `None` for anything else: a
/// backslash in a key, the target or the id, another property, a duplicate, a `type` written
/// other than as `1` or `6`, bytes after the object. serde then reads the record as before, so
/// errors and rarer shapes are exactly what they were. Each argument is read by serde itself (as a `RawValue`), which finds
/// its end and checks it in one pass. serde does not limit how deep a `RawValue` nests (it
/// steps over one without recursing), on either path; the depth limit that matters is applied
/// when a method binds the argument to a type.
mod common {
    use serde_json::value::RawValue;

    use super::super::{
        Arguments, Headers, InboundMessage, Invocation, Message, Payload, SmallString,
    };

    pub(super) fn parse(record: &[u8]) -> Option<InboundMessage> {
        // One UTF-8 check for the whole record; every slice taken below starts and ends at an
        // ASCII delimiter, so it is a `&str` too.
        let text = std::str::from_utf8(record).ok()?;
        let mut scan = Scan {
            text,
            bytes: record,
            at: 0,
        };
        let mut kind = None;
        let mut invocation_id = None;
        let mut target = None;
        let mut arguments: Option<Arguments> = None;
        scan.skip_whitespace();
        scan.expect(b'{')?;
        scan.skip_whitespace();
        if scan.peek() == Some(b'}') {
            return None;
        }
        loop {
            scan.skip_whitespace();
            let key = scan.key()?;
            scan.skip_whitespace();
            scan.expect(b':')?;
            scan.skip_whitespace();
            match key {
                Key::Type if kind.is_none() => kind = Some(scan.small_integer()?),
                Key::InvocationId if invocation_id.is_none() => {
                    invocation_id = Some(scan.string()?)
                }
                Key::Target if target.is_none() => target = Some(scan.string()?),
                Key::Arguments if arguments.is_none() => arguments = Some(scan.arguments()?),
                _ => return None,
            }
            scan.skip_whitespace();
            match scan.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        scan.skip_whitespace();
        if scan.at != record.len() {
            return None;
        }
        match kind? {
            1 => Some(Message::Invocation(Invocation {
                headers: Headers::new(),
                invocation_id: invocation_id
                    .filter(|id| !id.is_empty())
                    .map(SmallString::from),
                target: target?.into(),
                arguments: arguments?,
                stream_ids: Vec::new(),
            })),
            6 => Some(Message::Ping),
            _ => None,
        }
    }

    /// The first quote, backslash or control character in `bytes`: what ends a plain string
    /// or disqualifies it. Eight bytes at a time with word arithmetic (no `unsafe`, any
    /// target), then byte by byte for the tail.
    fn string_end(bytes: &[u8]) -> Option<usize> {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
        const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
        const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
        const CONTROLS: u64 = u64::from_ne_bytes([0x20; 8]);
        /// The high bit of each byte below `n` (n ≤ 128) is set in the result. Borrows may
        /// flag bytes after the first true one, never before it, so the lowest flag is exact.
        fn below(word: u64, n: u64) -> u64 {
            word.wrapping_sub(n) & !word & HIGHS
        }
        let mut chunks = bytes.chunks_exact(8);
        let mut offset = 0;
        for chunk in &mut chunks {
            // Little-endian order puts the first byte lowest, whatever the target's own order.
            let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
            let found = below(word ^ QUOTES, ONES)
                | below(word ^ BACKSLASHES, ONES)
                | below(word, CONTROLS);
            if found != 0 {
                return Some(offset + (found.trailing_zeros() / 8) as usize);
            }
            offset += 8;
        }
        chunks
            .remainder()
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .map(|at| offset + at)
    }

    /// The properties of the records recognized here.
    #[derive(Clone, Copy)]
    enum Key {
        Type,
        InvocationId,
        Target,
        Arguments,
    }

    struct Scan<'a> {
        text: &'a str,
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Scan<'a> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.at).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let byte = self.peek()?;
            self.at += 1;
            Some(byte)
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            (self.next()? == byte).then_some(())
        }

        fn skip_whitespace(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.at += 1;
            }
        }

        /// A string without escapes or control characters: its contents. One tight search
        /// for whatever ends or disqualifies it, since the strings of a hub message are short.
        fn string(&mut self) -> Option<&'a str> {
            self.expect(b'"')?;
            let start = self.at;
            let rest = self.bytes.get(start..)?;
            let len = string_end(rest)?;
            if rest[len] != b'"' {
                return None;
            }
            self.at = start + len + 1;
            self.text.get(start..start + len)
        }

        /// One of the four property names, compared in place with its closing quote; any
        /// other name (an escape in one of these included) is not recognized.
        fn key(&mut self) -> Option<Key> {
            self.expect(b'"')?;
            let rest = self.bytes.get(self.at..)?;
            let (key, len) = match rest.first()? {
                b't' if rest.starts_with(b"type\"") => (Key::Type, 5),
                b't' if rest.starts_with(b"target\"") => (Key::Target, 7),
                b'i' if rest.starts_with(b"invocationId\"") => (Key::InvocationId, 13),
                b'a' if rest.starts_with(b"arguments\"") => (Key::Arguments, 10),
                _ => return None,
            };
            self.at += len;
            Some(key)
        }

        /// `1` or `6`: the message types recognized here, written the plain way.
        fn small_integer(&mut self) -> Option<u8> {
            let digit = self.next()?;
            let value = matches!(digit, b'1' | b'6').then(|| digit - b'0')?;
            // `16`, `1.0`, `1e0` and the like are left to serde.
            match self.peek() {
                Some(b) if b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E') => None,
                _ => Some(value),
            }
        }

        /// `[value, ...]`, each value as the payload of its raw text. serde reads each value
        /// (as a borrowed `RawValue`): it finds where the value ends and checks it in the same
        /// pass, so an argument is judged by serde alone, as on the slow path.
        fn arguments(&mut self) -> Option<Arguments> {
            let mut values = Arguments::new();
            self.sequence(b'[', b']', |scan| {
                let rest = scan.text.get(scan.at..)?;
                let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
                let value = stream.next()?.ok()?;
                scan.at += stream.byte_offset();
                values.push(Payload::json(value.to_owned()));
                Some(())
            })?;
            Some(values)
        }

        /// `open item, item, ... close`, possibly empty, with whitespace anywhere between.
        fn sequence(
            &mut self,
            open: u8,
            close: u8,
            mut item: impl FnMut(&mut Self) -> Option<()>,
        ) -> Option<()> {
            self.expect(open)?;
            self.skip_whitespace();
            if self.peek() == Some(close) {
                self.at += 1;
                return Some(());
            }
            loop {
                self.skip_whitespace();
                item(self)?;
                self.skip_whitespace();
                match self.next()? {
                    b',' => continue,
                    byte if byte == close => return Some(()),
                    _ => return None,
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::parse_record_with_serde;
        use super::*;

        /// The word-at-a-time search finds what a byte-by-byte one finds: every byte value as
        /// the only stop at every offset (so each lane of a word and the tail are covered),
        /// and two stops where the later one must not win.
        #[test]
        fn string_end_agrees_with_a_byte_by_byte_search() {
            fn by_byte(bytes: &[u8]) -> Option<usize> {
                bytes
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            }
            for len in 0..40 {
                for at in 0..len {
                    for byte in 0..=255u8 {
                        // 'a' (0x61) and 0xE9 around it: plain bytes on both sides of 0x80.
                        let mut bytes: Vec<u8> = (0..len)
                            .map(|i| if i % 2 == 0 { b'a' } else { 0xE9 })
                            .collect();
                        bytes[at] = byte;
                        assert_eq!(string_end(&bytes), by_byte(&bytes), "{bytes:?}");
                        if at + 1 < len {
                            bytes[at + 1] = b'"';
                            assert_eq!(string_end(&bytes), by_byte(&bytes), "{bytes:?}");
                        }
                    }
                }
            }
        }

        /// The fast path answers for these, and its answer is serde's.
        const RECOGNIZED: &[&str] = &[
            r#"{"type":1,"invocationId":"1","target":"Echo","arguments":["hello"]}"#,
            r#"{"type":1,"target":"Send","arguments":[]}"#,
            r#"{"arguments":[1,-2.5e3,true,false,null,{"a":[{}]},[[]]],"target":"T","type":1}"#,
            r#" { "type" : 1 , "invocationId" : "" , "target" : "x" , "arguments" : [ 0 , "é✓" ] } "#,
            "{\"type\":1,\"target\":\"x\",\"arguments\":[{\"k\":\n\"v\"}]}",
            r#"{"type":6}"#,
            r#"{"type":6,"target":"ignored"}"#,
            r#"{"type":1,"target":"","arguments":[-0,0.5,1E+2,3e-1]}"#,
            r#"{"type":1,"target":"Echo","arguments":["a\nb\u00e9\"",{"k\\":"\/"}]}"#,
        ];

        /// Left to serde: each is either an error there or a shape not recognized here.
        const DEFERRED: &[&str] = &[
            r#"{"type":1,"target":"E\"cho","arguments":[]}"#,
            r#"{"type":1,"target":"Echo","arguments":[],"headers":{"a":"b"}}"#,
            r#"{"type":1,"target":"Echo","arguments":[],"streamIds":["1"]}"#,
            r#"{"type":1,"target":"A","target":"B","arguments":[]}"#,
            r#"{"type":1.0,"target":"A","arguments":[]}"#,
            r#"{"type":16,"target":"A","arguments":[]}"#,
            r#"{"type":"1","target":"A","arguments":[]}"#,
            r#"{"type":1,"target":"A","arguments":[01]}"#,
            r#"{"type":1,"target":"A","arguments":[1.]}"#,
            r#"{"type":1,"target":"A","arguments":[.5]}"#,
            r#"{"type":1,"target":"A","arguments":[1e]}"#,
            r#"{"type":1,"target":"A","arguments":[tru]}"#,
            r#"{"type":1,"target":"A","arguments":[1,]}"#,
            r#"{"type":1,"target":"A","arguments":[{"a":1,}]}"#,
            r#"{"type":1,"target":"A","arguments":[{1:2}]}"#,
            r#"{"type":1,"target":"A","arguments":[]}x"#,
            r#"{"type":1,"target":"A","arguments":[]"#,
            r#"{"type":1,"target":"A"}"#,
            r#"{"type":1,"arguments":[]}"#,
            r#"{"target":"A","arguments":[]}"#,
            r#"{"type":1,"target":"A","arguments":"x"}"#,
            "{\"type\":1,\"target\":\"\t\",\"arguments\":[]}",
            r#"{"type":3,"invocationId":"1","result":1}"#,
            r#"{}"#,
            r#"[]"#,
            "",
        ];

        #[test]
        fn the_common_shapes_are_read_as_serde_reads_them() {
            for record in RECOGNIZED {
                let fast =
                    parse(record.as_bytes()).unwrap_or_else(|| panic!("not recognized: {record}"));
                let slow = parse_record_with_serde(record.as_bytes());
                assert_eq!(Ok(Some(fast)), slow, "{record}");
            }
        }

        #[test]
        fn anything_else_is_left_to_serde() {
            for record in DEFERRED {
                assert_eq!(parse(record.as_bytes()), None, "{record}");
            }
        }

        #[test]
        fn invalid_utf8_is_left_to_serde() {
            let mut bad = br#"{"type":1,"target":"A","arguments":[""#.to_vec();
            bad.extend_from_slice(&[0xff, 0xfe]);
            bad.extend_from_slice(br#""]}"#);
            assert_eq!(parse(&bad), None);
        }

        /// serde steps over a `RawValue` without recursing, on both paths, so a deeply nested
        /// argument is read alike; unbalanced nesting is an error there and not read here.
        #[test]
        fn deep_arguments_are_read_as_serde_reads_them() {
            let deep = format!(
                r#"{{"type":1,"target":"A","arguments":[{}0{}]}}"#,
                "[{\"k\":".repeat(1_000),
                "}]".repeat(1_000)
            );
            let fast = parse(deep.as_bytes()).expect("recognized");
            assert_eq!(Ok(Some(fast)), parse_record_with_serde(deep.as_bytes()));
            let unbalanced = format!(
                r#"{{"type":1,"target":"A","arguments":[{}]}}"#,
                "[".repeat(1_000)
            );
            assert_eq!(parse(unbalanced.as_bytes()), None);
            assert!(parse_record_with_serde(unbalanced.as_bytes()).is_err());
        }

        /// Every record the fast path reads, mutated byte by byte: where it still answers, it
        /// answers what serde does.
        #[test]
        fn mutations_of_the_common_shapes_agree_with_serde() {
            let alphabet = b" \t\n\"\\{}[],:01-.eE+truefalsn\x1f\xc3\xa9x";
            let mut recognized = 0;
            for record in RECOGNIZED {
                let bytes = record.as_bytes();
                for at in 0..bytes.len() {
                    for &replacement in alphabet {
                        for mutated in [
                            [&bytes[..at], &[replacement], &bytes[at + 1..]].concat(),
                            [&bytes[..at], &[replacement], &bytes[at..]].concat(),
                            [&bytes[..at], &bytes[at + 1..]].concat(),
                        ] {
                            if let Some(fast) = parse(&mutated) {
                                recognized += 1;
                                assert_eq!(
                                    Ok(Some(fast)),
                                    parse_record_with_serde(&mutated),
                                    "{}",
                                    String::from_utf8_lossy(&mutated)
                                );
                            }
                        }
                    }
                }
            }
            // The check would prove nothing if no mutation were still recognized.
            assert!(recognized > 1_000, "{recognized}");
        }
    }
}

#[cfg(test)]
mod completion_tests {
    use super::*;

    /// The literal-named Completion is what serde writes for the same message: void, a value,
    /// a payload copied verbatim, an error, and ids and texts that need escaping.
    #[test]
    fn a_completion_is_written_as_serde_writes_it() {
        let payload =
            super::parse_record(br#"{"type":1,"target":"T","arguments":[{"a": [1, "\u00e9"]}]}"#)
                .unwrap()
                .and_then(|message| match message {
                    Message::Invocation(invocation) => invocation.arguments.into_iter().next(),
                    _ => None,
                })
                .unwrap();
        let results = [
            CompletionResult::Void,
            CompletionResult::Value(serde_json::json!("a \"quoted\"\n\u{1} text ✓")),
            CompletionResult::Value(serde_json::json!({"k": [1, null, true]})),
            CompletionResult::Error("Failed: \"x\"\\ \u{7f}".to_owned()),
        ];
        for id in ["1", "", "id \"with\" \\ escapes \u{0}"] {
            for result in &results {
                let mut fast = Vec::new();
                write_completion(&mut fast, id, result).unwrap();
                let (value, error) = match result {
                    CompletionResult::Void => (None, None),
                    CompletionResult::Value(v) => (Some(v), None),
                    CompletionResult::Error(e) => (None, Some(e.as_str())),
                };
                let slow = serde_json::to_vec(&CompletionOut {
                    kind: 3,
                    headers: &Headers::new(),
                    invocation_id: id,
                    error,
                    result: value,
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(slow).unwrap()
                );
            }
            let mut fast = Vec::new();
            write_completion(&mut fast, id, &CompletionResult::Value(&payload)).unwrap();
            let expected = format!(
                r#"{{"type":3,"invocationId":{},"result":{{"a": [1, "\u00e9"]}}}}"#,
                serde_json::to_string(id).unwrap()
            );
            assert_eq!(String::from_utf8(fast).unwrap(), expected);
        }
    }
}
