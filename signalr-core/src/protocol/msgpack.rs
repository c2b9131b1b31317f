//! The MessagePack hub protocol: each record is a varint length prefix followed by one
//! MessagePack array whose layout depends on the message type.
//!
//! The reader is hand-written over byte slices (no recursion, every read bounds-checked) so that
//! hostile input can only ever produce an error; argument values are sliced out zero-copy and
//! bound later with `rmp-serde`. Values are written by our own serializer
//! (`msgpack_ser`), which copies a received MessagePack [`Payload`] verbatim.

use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use super::msgpack_ser::write_value;
use super::values::{DateTime, TIMESTAMP_EXT};
use super::InputBuffer;

use super::{
    Arguments, CancelInvocation, Close, Completion, CompletionResult, Headers, HubProtocol,
    InboundMessage, Invocation, Message, Payload, ProtocolError, SmallString, StreamItem,
    TransferFormat,
};

/// The MessagePack hub protocol (`"messagepack"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePackProtocol;

/// Largest body a 5-byte varint prefix may announce (the reference caps records at 2 GiB).
const MAX_VARINT_VALUE: u64 = i32::MAX as u64;

const RESULT_KIND_ERROR: i64 = 1;
const RESULT_KIND_VOID: i64 = 2;
const RESULT_KIND_VALUE: i64 = 3;

impl HubProtocol for MessagePackProtocol {
    const NAME: &'static str = "messagepack";
    const VERSION: u32 = 2;
    const TRANSFER_FORMAT: TransferFormat = TransferFormat::Binary;

    fn decode(
        buf: &mut InputBuffer,
        max_message_size: usize,
    ) -> Result<Option<InboundMessage>, ProtocolError> {
        loop {
            let Some((prefix_len, body_len)) = read_length_prefix(buf)? else {
                return Ok(None);
            };
            if body_len > max_message_size as u64 {
                return Err(ProtocolError::MessageTooLarge {
                    limit: max_message_size,
                });
            }
            if body_len == 0 {
                return Err(ProtocolError::invalid("Invalid payload: empty record."));
            }
            let total = prefix_len + body_len as usize;
            if buf.len() < total {
                return Ok(None);
            }
            let record = buf.split_to(total);
            if let Some(message) = parse_body(record.slice(prefix_len..))? {
                return Ok(Some(message));
            }
            // Unknown message type: skipped, like the reference does.
        }
    }

    fn encode<A: Serialize, V: Serialize>(
        message: &Message<A, V>,
        out: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        BODY_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut body) => {
                body.clear();
                let framed = write_framed(message, &mut body, out);
                if body.capacity() > super::ENCODE_SCRATCH_KEPT {
                    *body = Vec::new();
                }
                framed
            }
            // Encoding from inside an encoding (a value's `Serialize` that encodes a record).
            Err(_) => write_framed(message, &mut Vec::with_capacity(64), out),
        })
    }
}

thread_local! {
    /// Where a record's body is written before its length prefix, which depends on its
    /// size, goes in front of it: one buffer per thread, reused, instead of one per record.
    pub(crate) static BODY_SCRATCH: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `message`'s body into `body`, then the framed record (prefix and body) into `out`.
fn write_framed<A: Serialize, V: Serialize>(
    message: &Message<A, V>,
    body: &mut Vec<u8>,
    out: &mut BytesMut,
) -> Result<(), ProtocolError> {
    write_body(message, body)?;
    write_length_prefix(body.len(), out);
    out.put_slice(body);
    Ok(())
}

/// Reads the varint length prefix: `Ok(None)` while incomplete, `(prefix bytes, body length)`
/// once known.
pub fn read_length_prefix(buf: &[u8]) -> Result<Option<(usize, u64)>, ProtocolError> {
    let mut length: u64 = 0;
    for i in 0..5 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        length |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if length > MAX_VARINT_VALUE {
                break;
            }
            return Ok(Some((i + 1, length)));
        }
    }
    Err(ProtocolError::invalid(
        "Messages over 2GB in size are not supported.",
    ))
}

/// Writes `length` as a varint (little-endian base 128).
pub fn write_length_prefix(mut length: usize, out: &mut BytesMut) {
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Splits one MessagePack array value into the byte ranges of its elements.
pub(crate) fn split_array(value: &Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let mut rd = Reader::new(value);
    let len = rd.array_len()?;
    let mut elements = Vec::with_capacity(len);
    for _ in 0..len {
        let span = rd.skip_value()?;
        elements.push(value.slice(span));
    }
    Ok(elements)
}

fn serialize_err(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Serialize(e.to_string())
}

fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), ProtocolError> {
    rmp::encode::write_str(out, s).map_err(serialize_err)
}

fn write_array_len(out: &mut Vec<u8>, len: usize) -> Result<(), ProtocolError> {
    let len = u32::try_from(len).map_err(serialize_err)?;
    rmp::encode::write_array_len(out, len)
        .map(drop)
        .map_err(serialize_err)
}

fn write_headers(out: &mut Vec<u8>, headers: &Headers) -> Result<(), ProtocolError> {
    let len = u32::try_from(headers.len()).map_err(serialize_err)?;
    rmp::encode::write_map_len(out, len).map_err(serialize_err)?;
    for (key, value) in headers {
        write_str(out, key)?;
        write_str(out, value)?;
    }
    Ok(())
}

fn write_optional_str(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), ProtocolError> {
    match s {
        Some(s) => write_str(out, s),
        None => rmp::encode::write_nil(out).map_err(serialize_err),
    }
}

fn write_uint(out: &mut Vec<u8>, value: u64) -> Result<(), ProtocolError> {
    rmp::encode::write_uint(out, value)
        .map(drop)
        .map_err(serialize_err)
}

fn write_body<A: Serialize, V: Serialize>(
    message: &Message<A, V>,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    match message {
        Message::Invocation(inv) | Message::StreamInvocation(inv) => {
            // Six items like the reference server (the stream id array is always written).
            write_array_len(out, 6)?;
            write_uint(out, u64::from(message.type_id()))?;
            write_headers(out, &inv.headers)?;
            write_optional_str(out, inv.invocation_id.as_deref())?;
            write_str(out, &inv.target)?;
            write_value(out, &inv.arguments)?;
            write_array_len(out, inv.stream_ids.len())?;
            for id in &inv.stream_ids {
                write_str(out, id)?;
            }
        }
        Message::StreamItem(item) => {
            write_array_len(out, 4)?;
            write_uint(out, 2)?;
            write_headers(out, &item.headers)?;
            write_str(out, &item.invocation_id)?;
            write_value(out, &item.item)?;
        }
        Message::Completion(c) => {
            let len = if matches!(c.result, CompletionResult::Void) {
                4
            } else {
                5
            };
            write_array_len(out, len)?;
            write_uint(out, 3)?;
            write_headers(out, &c.headers)?;
            write_str(out, &c.invocation_id)?;
            match &c.result {
                CompletionResult::Error(e) => {
                    write_uint(out, RESULT_KIND_ERROR as u64)?;
                    write_str(out, e)?;
                }
                CompletionResult::Void => write_uint(out, RESULT_KIND_VOID as u64)?,
                CompletionResult::Value(v) => {
                    write_uint(out, RESULT_KIND_VALUE as u64)?;
                    write_value(out, v)?;
                }
            }
        }
        Message::CancelInvocation(c) => {
            write_array_len(out, 3)?;
            write_uint(out, 5)?;
            write_headers(out, &c.headers)?;
            write_str(out, &c.invocation_id)?;
        }
        Message::Ping => {
            write_array_len(out, 1)?;
            write_uint(out, 6)?;
        }
        Message::Close(close) => {
            write_array_len(out, 3)?;
            write_uint(out, 7)?;
            write_optional_str(out, close.error.as_deref())?;
            rmp::encode::write_bool(out, close.allow_reconnect).map_err(serialize_err)?;
        }
        Message::Ack(id) | Message::Sequence(id) => {
            write_array_len(out, 2)?;
            write_uint(out, u64::from(message.type_id()))?;
            write_uint(out, *id)?;
        }
    }
    Ok(())
}

fn too_short(name: &str) -> ProtocolError {
    ProtocolError::invalid(format!("Invalid payload for {name} message."))
}

/// Parses one record body. `Ok(None)` for an unknown message type.
fn parse_body(body: Bytes) -> Result<Option<InboundMessage>, ProtocolError> {
    let mut rd = Reader::new(&body);
    let items = rd.array_len()?;
    if items == 0 {
        return Err(ProtocolError::invalid("Invalid payload: empty array."));
    }
    let kind = rd.int()?;
    let message = match kind {
        1 | 4 => {
            let name = if kind == 1 {
                "Invocation"
            } else {
                "StreamInvocation"
            };
            if items < 5 {
                return Err(too_short(name));
            }
            let headers = rd.headers()?;
            let invocation_id = rd
                .optional_str()?
                .filter(|id| !id.is_empty())
                .map(SmallString::from);
            if kind == 4 && invocation_id.is_none() {
                return Err(ProtocolError::invalid(
                    "Missing invocation id in StreamInvocation message.",
                ));
            }
            let target = SmallString::from(rd.str()?);
            let count = rd.array_len()?;
            let mut arguments = Arguments::with_capacity(count.min(rd.remaining()));
            for _ in 0..count {
                let span = rd.skip_value()?;
                arguments.push(Payload::msgpack(body.slice(span)));
            }
            // The JS client leaves out the stream id array when it has no streams.
            let stream_ids = if items >= 6 {
                rd.str_array()?
            } else {
                Vec::new()
            };
            let invocation = Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            };
            if kind == 1 {
                Message::Invocation(invocation)
            } else {
                Message::StreamInvocation(invocation)
            }
        }
        2 => {
            if items < 4 {
                return Err(too_short("StreamItem"));
            }
            let headers = rd.headers()?;
            let invocation_id = SmallString::from(rd.str()?);
            let span = rd.skip_value()?;
            Message::StreamItem(StreamItem {
                headers,
                invocation_id,
                item: Payload::msgpack(body.slice(span)),
            })
        }
        3 => {
            if items < 4 {
                return Err(too_short("Completion"));
            }
            let headers = rd.headers()?;
            let invocation_id = SmallString::from(rd.str()?);
            let result_kind = rd.int()?;
            let needs_value = result_kind == RESULT_KIND_ERROR || result_kind == RESULT_KIND_VALUE;
            if needs_value && items < 5 {
                return Err(too_short("Completion"));
            }
            let result = match result_kind {
                RESULT_KIND_ERROR => CompletionResult::Error(rd.str()?.to_owned()),
                RESULT_KIND_VOID => CompletionResult::Void,
                RESULT_KIND_VALUE => {
                    let span = rd.skip_value()?;
                    CompletionResult::Value(Payload::msgpack(body.slice(span)))
                }
                _ => return Err(ProtocolError::invalid("Invalid invocation result kind.")),
            };
            Message::Completion(Completion {
                headers,
                invocation_id,
                result,
            })
        }
        5 => {
            if items < 3 {
                return Err(too_short("CancelInvocation"));
            }
            let headers = rd.headers()?;
            let invocation_id = SmallString::from(rd.str()?);
            Message::CancelInvocation(CancelInvocation {
                headers,
                invocation_id,
            })
        }
        6 => Message::Ping,
        7 => {
            if items < 2 {
                return Err(too_short("Close"));
            }
            let error = rd.optional_str()?.map(str::to_owned);
            let allow_reconnect = if items >= 3 { rd.bool()? } else { false };
            Message::Close(Close {
                error,
                allow_reconnect,
            })
        }
        8 | 9 => {
            if items < 2 {
                return Err(too_short(if kind == 8 { "Ack" } else { "Sequence" }));
            }
            let id = u64::try_from(rd.int()?)
                .map_err(|_| ProtocolError::invalid("Sequence ids must not be negative."))?;
            if kind == 8 {
                Message::Ack(id)
            } else {
                Message::Sequence(id)
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(message))
}

/// How deeply a MessagePack value may nest when it is converted to another format (the JSON
/// protocol reads no deeper either).
const TRANSCODE_DEPTH: usize = 128;

/// Writes one encoded MessagePack value through another serializer (a MessagePack payload
/// sent to a JSON client). Timestamps (extension type -1) become what [`DateTime`] writes
/// (an RFC 3339 string in JSON); other extension types have no meaning outside MessagePack
/// and are an error, as are values nested deeper than 128 levels.
pub(crate) fn transcode<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let position = Cell::new(0);
    Transcoded {
        buf: value,
        position: &position,
        depth: TRANSCODE_DEPTH,
    }
    .serialize(serializer)
}

/// The value starting at `position` in `buf`; serializing it moves `position` past it, so
/// the elements of an array or map are read in one pass.
struct Transcoded<'a> {
    buf: &'a [u8],
    position: &'a Cell<usize>,
    depth: usize,
}

impl Transcoded<'_> {
    fn child(&self) -> Self {
        Transcoded {
            buf: self.buf,
            position: self.position,
            depth: self.depth - 1,
        }
    }
}

impl Serialize for Transcoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut rd = Reader {
            buf: self.buf,
            pos: self.position.get(),
        };
        let err = |e: ProtocolError| S::Error::custom(e);
        let marker = rd.byte().map_err(err)?;
        enum Container {
            Array(usize),
            Map(usize),
        }
        let container = match marker {
            0x90..=0x9f => Container::Array(usize::from(marker & 0x0f)),
            0xdc => Container::Array(rd.be(2).map_err(err)? as usize),
            0xdd => Container::Array(rd.be(4).map_err(err)? as usize),
            0x80..=0x8f => Container::Map(usize::from(marker & 0x0f)),
            0xde => Container::Map(rd.be(2).map_err(err)? as usize),
            0xdf => Container::Map(rd.be(4).map_err(err)? as usize),
            _ => {
                let scalar = rd.scalar(marker).map_err(err)?;
                self.position.set(rd.pos);
                return match scalar {
                    Scalar::Nil => serializer.serialize_unit(),
                    Scalar::Bool(v) => serializer.serialize_bool(v),
                    Scalar::Uint(v) => serializer.serialize_u64(v),
                    Scalar::Int(v) => serializer.serialize_i64(v),
                    Scalar::F32(v) => serializer.serialize_f32(v),
                    Scalar::F64(v) => serializer.serialize_f64(v),
                    Scalar::Str(v) => serializer.serialize_str(v),
                    Scalar::Bin(v) => serializer.serialize_bytes(v),
                    Scalar::Ext(TIMESTAMP_EXT, data) => DateTime::from_timestamp_ext(data)
                        .map_err(S::Error::custom)?
                        .serialize(serializer),
                    Scalar::Ext(tag, _) => Err(S::Error::custom(format_args!(
                        "MessagePack extension type {tag} has no representation outside \
                         MessagePack (only timestamps, type -1, are converted)"
                    ))),
                };
            }
        };
        if self.depth == 0 {
            return Err(S::Error::custom(
                "a MessagePack value nested more than 128 levels deep",
            ));
        }
        self.position.set(rd.pos);
        match container {
            Container::Array(len) => {
                let mut seq = serializer.serialize_seq(Some(len))?;
                for _ in 0..len {
                    seq.serialize_element(&self.child())?;
                }
                seq.end()
            }
            Container::Map(len) => {
                let mut map = serializer.serialize_map(Some(len))?;
                for _ in 0..len {
                    map.serialize_entry(&self.child(), &self.child())?;
                }
                map.end()
            }
        }
    }
}

/// One MessagePack value that is not an array or a map.
enum Scalar<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
}

/// A bounds-checked MessagePack reader over one record body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn eof() -> ProtocolError {
    ProtocolError::invalid("Unexpected end of MessagePack data.")
}

fn unexpected(expected: &str, marker: u8) -> ProtocolError {
    ProtocolError::invalid(format!(
        "Unexpected MessagePack type (marker 0x{marker:02x}); expected {expected}."
    ))
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, ProtocolError> {
        let b = *self.buf.get(self.pos).ok_or_else(eof)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self.pos.checked_add(n).ok_or_else(eof)?;
        let slice = self.buf.get(self.pos..end).ok_or_else(eof)?;
        self.pos = end;
        Ok(slice)
    }

    fn be(&mut self, n: usize) -> Result<u64, ProtocolError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn peek(&self) -> Result<u8, ProtocolError> {
        self.buf.get(self.pos).copied().ok_or_else(eof)
    }

    fn int(&mut self) -> Result<i64, ProtocolError> {
        let marker = self.byte()?;
        let value = match marker {
            0x00..=0x7f => i64::from(marker),
            0xe0..=0xff => i64::from(marker as i8),
            0xcc => self.be(1)? as i64,
            0xcd => self.be(2)? as i64,
            0xce => self.be(4)? as i64,
            0xcf => i64::try_from(self.be(8)?)
                .map_err(|_| ProtocolError::invalid("Integer out of range."))?,
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            0xd3 => self.be(8)? as i64,
            _ => return Err(unexpected("an integer", marker)),
        };
        Ok(value)
    }

    fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => Err(unexpected("a boolean", m)),
        }
    }

    fn str_len(&mut self, marker: u8) -> Result<Option<usize>, ProtocolError> {
        Ok(Some(match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return Ok(None),
        }))
    }

    fn str(&mut self) -> Result<&'a str, ProtocolError> {
        let marker = self.byte()?;
        let len = self
            .str_len(marker)?
            .ok_or_else(|| unexpected("a string", marker))?;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| ProtocolError::invalid("Invalid UTF-8 in a MessagePack string."))
    }

    fn optional_str(&mut self) -> Result<Option<&'a str>, ProtocolError> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            return Ok(None);
        }
        self.str().map(Some)
    }

    fn array_len(&mut self) -> Result<usize, ProtocolError> {
        let marker = self.byte()?;
        let len = match marker {
            0x90..=0x9f => usize::from(marker & 0x0f),
            0xdc => self.be(2)? as usize,
            0xdd => self.be(4)? as usize,
            _ => return Err(unexpected("an array", marker)),
        };
        // Every element takes at least one byte: a larger count is a lie.
        if len > self.remaining() {
            return Err(eof());
        }
        Ok(len)
    }

    fn map_len(&mut self) -> Result<usize, ProtocolError> {
        let marker = self.byte()?;
        let len = match marker {
            0x80..=0x8f => usize::from(marker & 0x0f),
            0xde => self.be(2)? as usize,
            0xdf => self.be(4)? as usize,
            _ => return Err(unexpected("a map", marker)),
        };
        if len > self.remaining() / 2 {
            return Err(eof());
        }
        Ok(len)
    }

    fn headers(&mut self) -> Result<Headers, ProtocolError> {
        let len = self.map_len()?;
        let mut headers = Headers::new();
        for _ in 0..len {
            let key = self.str()?.to_owned();
            let value = self.str()?.to_owned();
            headers.insert(key, value);
        }
        Ok(headers)
    }

    fn str_array(&mut self) -> Result<Vec<SmallString>, ProtocolError> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            return Ok(Vec::new());
        }
        let len = self.array_len()?;
        (0..len)
            .map(|_| self.str().map(SmallString::from))
            .collect()
    }

    /// Reads the rest of a scalar value whose marker was just read.
    fn scalar(&mut self, marker: u8) -> Result<Scalar<'a>, ProtocolError> {
        if let Some(len) = self.str_len(marker)? {
            return std::str::from_utf8(self.take(len)?)
                .map(Scalar::Str)
                .map_err(|_| ProtocolError::invalid("Invalid UTF-8 in a MessagePack string."));
        }
        let ext = |rd: &mut Self, len: usize| -> Result<Scalar<'a>, ProtocolError> {
            let tag = rd.byte()? as i8;
            Ok(Scalar::Ext(tag, rd.take(len)?))
        };
        Ok(match marker {
            0xc0 => Scalar::Nil,
            0xc2 => Scalar::Bool(false),
            0xc3 => Scalar::Bool(true),
            0x00..=0x7f => Scalar::Uint(u64::from(marker)),
            0xcc => Scalar::Uint(self.be(1)?),
            0xcd => Scalar::Uint(self.be(2)?),
            0xce => Scalar::Uint(self.be(4)?),
            0xcf => Scalar::Uint(self.be(8)?),
            0xe0..=0xff | 0xd0..=0xd3 => {
                self.pos -= 1;
                Scalar::Int(self.int()?)
            }
            0xca => Scalar::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Scalar::F64(f64::from_bits(self.be(8)?)),
            0xc4 => {
                let len = self.be(1)? as usize;
                Scalar::Bin(self.take(len)?)
            }
            0xc5 => {
                let len = self.be(2)? as usize;
                Scalar::Bin(self.take(len)?)
            }
            0xc6 => {
                let len = self.be(4)? as usize;
                Scalar::Bin(self.take(len)?)
            }
            0xd4 => ext(self, 1)?,
            0xd5 => ext(self, 2)?,
            0xd6 => ext(self, 4)?,
            0xd7 => ext(self, 8)?,
            0xd8 => ext(self, 16)?,
            0xc7 => {
                let len = self.be(1)? as usize;
                ext(self, len)?
            }
            0xc8 => {
                let len = self.be(2)? as usize;
                ext(self, len)?
            }
            0xc9 => {
                let len = self.be(4)? as usize;
                ext(self, len)?
            }
            _ => return Err(unexpected("a value", marker)),
        })
    }

    /// Skips one complete value (iteratively, so nesting depth cannot exhaust the stack) and
    /// returns the byte range it occupied.
    fn skip_value(&mut self) -> Result<std::ops::Range<usize>, ProtocolError> {
        let start = self.pos;
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.byte()?;
            let skip = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
                0x80..=0x8f => {
                    pending += 2 * usize::from(marker & 0x0f);
                    0
                }
                0x90..=0x9f => {
                    pending += usize::from(marker & 0x0f);
                    0
                }
                0xa0..=0xbf => usize::from(marker & 0x1f),
                0xc4 | 0xd9 => self.be(1)? as usize,
                0xc5 | 0xda => self.be(2)? as usize,
                0xc6 | 0xdb => self.be(4)? as usize,
                0xc7 => self.be(1)? as usize + 1,
                0xc8 => self.be(2)? as usize + 1,
                0xc9 => self.be(4)? as usize + 1,
                0xca => 4,
                0xcb => 8,
                0xcc | 0xd0 => 1,
                0xcd | 0xd1 => 2,
                0xce | 0xd2 => 4,
                0xcf | 0xd3 => 8,
                0xd4 => 2,
                0xd5 => 3,
                0xd6 => 5,
                0xd7 => 9,
                0xd8 => 17,
                0xdc => {
                    pending += self.be(2)? as usize;
                    0
                }
                0xdd => {
                    pending += self.be(4)? as usize;
                    0
                }
                0xde => {
                    pending += 2 * self.be(2)? as usize;
                    0
                }
                0xdf => {
                    pending += 2 * (self.be(4)? as usize);
                    0
                }
                _ => return Err(unexpected("a value", marker)),
            };
            self.take(skip)?;
            if pending > self.remaining() {
                return Err(eof());
            }
        }
        Ok(start..self.pos)
    }
}
