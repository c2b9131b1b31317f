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
    Arguments, CancelInvocation, Close, Completion, CompletionResult, HubProtocol, InboundMessage,
    InputBuffer, Invocation, Message, Payload, ProtocolError, StreamItem, TransferFormat,
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
            let record = input.split_to(end + 1);
            if let Some(message) = parse_record(&record[..end])? {
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
fn parse_record(record: &[u8]) -> Result<Option<InboundMessage>, ProtocolError> {
    let wire: WireMessage = serde_json::from_slice(record)
        .map_err(|e| ProtocolError::invalid(format!("Error reading JSON. {e}")))?;
    let kind = wire.kind.ok_or_else(|| missing("type"))?;
    let headers = wire.headers.unwrap_or_default();
    let required_id = |id: Option<String>| id.ok_or_else(|| missing("invocationId"));
    let message = match kind {
        1 | 4 => {
            let invocation_id = match (kind, wire.invocation_id) {
                (4, id) => Some(required_id(id)?),
                (_, id) => id.filter(|id| !id.is_empty()),
            };
            let invocation = Invocation {
                headers,
                invocation_id,
                target: wire.target.ok_or_else(|| missing("target"))?,
                arguments: Arguments(
                    wire.arguments
                        .ok_or_else(|| missing("arguments"))?
                        .into_iter()
                        .map(Payload::json)
                        .collect(),
                ),
                stream_ids: wire.stream_ids.unwrap_or_default(),
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
    #[serde(rename = "streamIds", skip_serializing_if = "<[String]>::is_empty")]
    stream_ids: &'a [String],
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
