// Shared by the protocol test files (`mod common;`).
#![allow(dead_code)]

use signalr_core::protocol::{InboundMessage, InputBuffer, Message, Protocol, ProtocolError};

/// Decodes everything in `bytes`, feeding it `chunk` bytes at a time, as a transport would.
pub fn decode_in_chunks(
    protocol: Protocol,
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<InboundMessage>, ProtocolError> {
    let mut buf = InputBuffer::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(message) = protocol.decode(&mut buf, 1 << 20)? {
            out.push(message);
        }
    }
    assert!(buf.is_empty(), "bytes left over after decoding: {buf:02x?}");
    Ok(out)
}

/// Decodes `bytes` with every chunk size from 1 to its length and checks all agree.
pub fn decode_all_ways(protocol: Protocol, bytes: &[u8]) -> Vec<InboundMessage> {
    let whole = decode_in_chunks(protocol, bytes, bytes.len()).expect("decodes whole");
    for chunk in 1..bytes.len() {
        let split = decode_in_chunks(protocol, bytes, chunk).expect("decodes in chunks");
        assert_eq!(split, whole, "chunk size {chunk} changed the result");
    }
    whole
}

pub fn encode<A: serde::Serialize, V: serde::Serialize>(
    protocol: Protocol,
    message: &Message<A, V>,
) -> Vec<u8> {
    protocol.encode_to_bytes(message).expect("encodes").to_vec()
}
