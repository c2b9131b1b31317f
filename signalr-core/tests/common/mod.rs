// Shared by test files (`mod common;`): protocol helpers and log capture.
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

/// Log lines written while a capture is held, for tests that check what an operator would see.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Captures this thread's logs at `level` and above until the guard drops (the tests run
    /// on a current-thread runtime, so every task of the hub logs here).
    pub fn capture(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The captured lines that contain `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// How many captured lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines(needle).len()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
