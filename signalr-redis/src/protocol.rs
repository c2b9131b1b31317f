//! The reference backplane's wire format, sans-IO.
//!
//! Every payload is one raw MessagePack array (no length prefix), published on a channel
//! whose name says what it is:
//!
//! | channel | payload |
//! |---|---|
//! | `{prefix}:all`, `:group:{name}`, `:user:{id}`, `:connection:{id}` | [`RedisInvocation`]: `[excluded ids, {protocol: framed record}]`, plus `invocationId, returnChannel` for client results |
//! | `{prefix}:internal:groups` | [`GroupCommand`]: `[id, server, action, group, connection id]` |
//! | `{prefix}:internal:ack:{server}` | an ack: `[id]` |
//! | `{prefix}:internal:return:{server}` | [`RedisCompletion`]: `[protocol, framed Completion record]` |
//!
//! Integers are written in their smallest MessagePack form and read in any; arrays may carry
//! extra trailing items, which are ignored (older and newer servers interoperate).

use bytes::Bytes;
use signalr_core::protocol::{Headers, Invocation, Message, NoValue, Protocol, ProtocolError};
use signalr_core::IntoArguments;

/// The channel names of one hub. The prefix is the hub's name; to share a Redis with .NET
/// servers, make it the .NET hub's full type name (for example `MyApp.Hubs.ChatHub`).
#[derive(Debug, Clone)]
pub struct RedisChannels {
    prefix: String,
}

impl RedisChannels {
    /// Channels under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        RedisChannels {
            prefix: prefix.into(),
        }
    }

    /// Sends to every connection.
    pub fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }

    /// Sends to a group.
    pub fn group(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }

    /// Sends to every connection of a user.
    pub fn user(&self, user_id: &str) -> String {
        format!("{}:user:{user_id}", self.prefix)
    }

    /// Sends to one connection (and carries client-result invocations).
    pub fn connection(&self, connection_id: &str) -> String {
        format!("{}:connection:{connection_id}", self.prefix)
    }

    /// Group add/remove commands for connections on other servers.
    pub fn group_management(&self) -> String {
        format!("{}:internal:groups", self.prefix)
    }

    /// Acknowledgements of group commands, to the server that issued them.
    pub fn ack(&self, server_name: &str) -> String {
        format!("{}:internal:ack:{server_name}", self.prefix)
    }

    /// Client results, back to the server that asked.
    pub fn return_results(&self, server_name: &str) -> String {
        format!("{}:internal:return:{server_name}", self.prefix)
    }
}

/// A payload that is not a valid backplane message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

fn wire(message: impl Into<String>) -> WireError {
    WireError(message.into())
}

/// Where the answer to a client-result invocation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRoute {
    /// The invocation id the client answers.
    pub invocation_id: String,
    /// The channel of the server waiting for the answer.
    pub return_channel: String,
}

/// An invocation for clients on any server: the record already serialized in every protocol,
/// so that each receiver writes the one its client speaks verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisInvocation {
    /// Connection ids not to deliver to (All/Others/GroupExcept).
    pub excluded: Vec<String>,
    /// Framed records by protocol name (`json`, `messagepack`).
    pub serialized: Vec<(String, Bytes)>,
    /// Set for client results.
    pub result: Option<ResultRoute>,
}

impl RedisInvocation {
    /// Serializes `target(args)` in every protocol, as publishers must: a .NET receiver fails a
    /// connection whose protocol is missing from the payload.
    pub fn new<A: IntoArguments>(
        target: &str,
        args: A,
        excluded: Vec<String>,
        result: Option<ResultRoute>,
    ) -> Result<Self, ProtocolError> {
        // Arguments are always an array on the wire (`()` is `[]`, not `null`).
        let args = args.into_arguments();
        let message: Message<&A::Arguments, NoValue> = Message::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: result.as_ref().map(|r| r.invocation_id.as_str().into()),
            target: target.into(),
            arguments: &args,
            stream_ids: Vec::new(),
        });
        let serialized = Protocol::ALL
            .iter()
            .map(|p| Ok((p.name().to_owned(), p.encode_to_bytes(&message)?)))
            .collect::<Result<_, ProtocolError>>()?;
        Ok(RedisInvocation {
            excluded,
            serialized,
            result,
        })
    }

    /// The record for a protocol, if the publisher included it.
    pub fn record(&self, protocol: Protocol) -> Option<&Bytes> {
        self.serialized
            .iter()
            .find(|(name, _)| name == protocol.name())
            .map(|(_, record)| record)
    }

    /// The payload to publish.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        array(&mut out, if self.result.is_some() { 4 } else { 2 });
        array(&mut out, self.excluded.len());
        for id in &self.excluded {
            string(&mut out, id);
        }
        map(&mut out, self.serialized.len());
        for (protocol, record) in &self.serialized {
            string(&mut out, protocol);
            binary(&mut out, record);
        }
        if let Some(route) = &self.result {
            string(&mut out, &route.invocation_id);
            string(&mut out, &route.return_channel);
        }
        out
    }

    /// Reads a published payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut rd = Reader::new(payload);
        let items = rd.array_at_least(2, "Invocation")?;
        let excluded = (0..rd.array()?)
            .map(|_| rd.string())
            .collect::<Result<_, _>>()?;
        let serialized = (0..rd.map()?)
            .map(|_| Ok((rd.string()?, Bytes::copy_from_slice(rd.binary()?))))
            .collect::<Result<_, WireError>>()?;
        let result = if items > 3 {
            Some(ResultRoute {
                invocation_id: rd.string()?,
                return_channel: rd.string()?,
            })
        } else {
            None
        };
        Ok(RedisInvocation {
            excluded,
            serialized,
            result,
        })
    }
}

/// What a group command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// Add the connection to the group.
    Add = 1,
    /// Remove it.
    Remove = 2,
}

/// Adds or removes a connection that lives on another server; its owner applies it and acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommand {
    /// Per-issuer counter, echoed in the ack.
    pub id: i32,
    /// The issuing server (where the ack goes).
    pub server_name: String,
    /// Add or remove.
    pub action: GroupAction,
    /// The group.
    pub group: String,
    /// The connection.
    pub connection_id: String,
}

impl GroupCommand {
    /// The payload to publish.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        array(&mut out, 5);
        integer(&mut out, i64::from(self.id));
        string(&mut out, &self.server_name);
        integer(&mut out, self.action as i64);
        string(&mut out, &self.group);
        string(&mut out, &self.connection_id);
        out
    }

    /// Reads a published payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut rd = Reader::new(payload);
        rd.array_at_least(5, "GroupCommand")?;
        let id =
            i32::try_from(rd.integer()?).map_err(|_| wire("Group command id out of range."))?;
        let server_name = rd.string()?;
        let action = match rd.integer()? {
            1 => GroupAction::Add,
            2 => GroupAction::Remove,
            other => return Err(wire(format!("Unknown group action {other}."))),
        };
        Ok(GroupCommand {
            id,
            server_name,
            action,
            group: rd.string()?,
            connection_id: rd.string()?,
        })
    }
}

/// The payload acknowledging group command `id`.
pub fn encode_ack(id: i32) -> Vec<u8> {
    let mut out = Vec::new();
    array(&mut out, 1);
    integer(&mut out, i64::from(id));
    out
}

/// Reads an ack payload.
pub fn decode_ack(payload: &[u8]) -> Result<i32, WireError> {
    let mut rd = Reader::new(payload);
    rd.array_at_least(1, "Ack")?;
    i32::try_from(rd.integer()?).map_err(|_| wire("Ack id out of range."))
}

/// A client's answer to a client result, sent back to the asking server serialized in the
/// client's own protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCompletion {
    /// The protocol that framed `completion`.
    pub protocol: String,
    /// The framed Completion record.
    pub completion: Bytes,
}

impl RedisCompletion {
    /// The payload to publish.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        array(&mut out, 2);
        string(&mut out, &self.protocol);
        binary(&mut out, &self.completion);
        out
    }

    /// Reads a published payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut rd = Reader::new(payload);
        rd.array_at_least(2, "CompletionMessage")?;
        Ok(RedisCompletion {
            protocol: rd.string()?,
            completion: Bytes::copy_from_slice(rd.binary()?),
        })
    }
}

// Writing: the smallest MessagePack form of each value, as MessagePack-CSharp writes them.

fn array(out: &mut Vec<u8>, len: usize) {
    // Writing into a Vec cannot fail; lengths here are far below u32::MAX.
    let _ = rmp::encode::write_array_len(out, len as u32);
}

fn map(out: &mut Vec<u8>, len: usize) {
    let _ = rmp::encode::write_map_len(out, len as u32);
}

fn string(out: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(out, s);
}

fn binary(out: &mut Vec<u8>, b: &[u8]) {
    let _ = rmp::encode::write_bin(out, b);
}

fn integer(out: &mut Vec<u8>, value: i64) {
    let _ = rmp::encode::write_sint(out, value);
}

/// A bounds-checked reader for the few MessagePack types the backplane uses.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(wire("Unexpected end of data."));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, WireError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn array(&mut self) -> Result<usize, WireError> {
        let len = match self.byte()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => self.be(2)? as usize,
            0xdd => self.be(4)? as usize,
            m => return Err(wire(format!("Expected an array, found marker 0x{m:02x}."))),
        };
        if len > self.buf.len() {
            return Err(wire("Unexpected end of data."));
        }
        Ok(len)
    }

    fn array_at_least(&mut self, min: usize, what: &str) -> Result<usize, WireError> {
        let len = self.array()?;
        if len < min {
            return Err(wire(format!("Insufficient items in {what} array.")));
        }
        Ok(len)
    }

    fn map(&mut self) -> Result<usize, WireError> {
        let len = match self.byte()? {
            m @ 0x80..=0x8f => usize::from(m & 0x0f),
            0xde => self.be(2)? as usize,
            0xdf => self.be(4)? as usize,
            m => return Err(wire(format!("Expected a map, found marker 0x{m:02x}."))),
        };
        if len > self.buf.len() / 2 {
            return Err(wire("Unexpected end of data."));
        }
        Ok(len)
    }

    fn string(&mut self) -> Result<String, WireError> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            m => return Err(wire(format!("Expected a string, found marker 0x{m:02x}."))),
        };
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| wire("Invalid UTF-8."))
    }

    fn binary(&mut self) -> Result<&'a [u8], WireError> {
        let len = match self.byte()? {
            0xc4 => self.be(1)? as usize,
            0xc5 => self.be(2)? as usize,
            0xc6 => self.be(4)? as usize,
            m => return Err(wire(format!("Expected binary, found marker 0x{m:02x}."))),
        };
        self.take(len)
    }

    fn integer(&mut self) -> Result<i64, WireError> {
        Ok(match self.byte()? {
            m @ 0x00..=0x7f => i64::from(m),
            m @ 0xe0..=0xff => i64::from(m as i8),
            0xcc => self.be(1)? as i64,
            0xcd => self.be(2)? as i64,
            0xce => self.be(4)? as i64,
            0xcf => i64::try_from(self.be(8)?).map_err(|_| wire("Integer out of range."))?,
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            0xd3 => self.be(8)? as i64,
            m => {
                return Err(wire(format!(
                    "Expected an integer, found marker 0x{m:02x}."
                )))
            }
        })
    }
}
