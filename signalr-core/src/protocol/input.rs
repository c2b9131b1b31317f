//! The receive buffer decoders read from.

use std::ops::Deref;

use bytes::{Bytes, BytesMut};

/// Bytes received but not yet decoded, in whatever chunks the transport delivered them.
///
/// It remembers how far a search for the end of a record has already looked. Without that, a
/// JSON record that arrives one byte at a time would be scanned from its start after every
/// byte: a 32 KB record sent as 32,000 one-byte WebSocket messages cost half a billion byte
/// comparisons. With it, every byte is looked at once, whatever the chunking.
#[derive(Debug, Default, Clone)]
pub struct InputBuffer {
    bytes: BytesMut,
    /// Bytes at the front already known to hold no record separator.
    scanned: usize,
}

impl InputBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        InputBuffer::default()
    }

    /// Appends a chunk the transport delivered; when the buffer is empty and the chunk is
    /// uniquely owned, it is taken without a copy.
    pub fn push(&mut self, chunk: Bytes) {
        if self.bytes.is_empty() {
            self.scanned = 0;
            self.bytes = chunk
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        } else {
            self.bytes.extend_from_slice(&chunk);
        }
    }

    /// Appends bytes (copied).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.scanned = 0;
    }

    /// The position of the first `byte`, looking only at bytes not searched before. When
    /// there is none, the whole buffer counts as searched, so the next call starts at the
    /// bytes appended since.
    pub(crate) fn find(&mut self, byte: u8) -> Option<usize> {
        match memchr::memchr(byte, &self.bytes[self.scanned..]) {
            Some(offset) => Some(self.scanned + offset),
            None => {
                self.scanned = self.bytes.len();
                None
            }
        }
    }

    /// Takes the first `len` bytes off the front.
    pub(crate) fn split_to(&mut self, len: usize) -> BytesMut {
        self.scanned = self.scanned.saturating_sub(len);
        self.bytes.split_to(len)
    }
}

impl Deref for InputBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<BytesMut> for InputBuffer {
    fn from(bytes: BytesMut) -> Self {
        InputBuffer { bytes, scanned: 0 }
    }
}

impl From<&[u8]> for InputBuffer {
    fn from(bytes: &[u8]) -> Self {
        InputBuffer::from(BytesMut::from(bytes))
    }
}

impl From<Bytes> for InputBuffer {
    fn from(bytes: Bytes) -> Self {
        let mut input = InputBuffer::new();
        input.push(bytes);
        input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_byte_is_searched_once() {
        let mut input = InputBuffer::new();
        for _ in 0..1000 {
            input.extend_from_slice(b"x");
            assert_eq!(input.find(0x1e), None);
            assert_eq!(input.scanned, input.len());
        }
        input.extend_from_slice(b"\x1eyy");
        assert_eq!(input.find(0x1e), Some(1000));
        let record = input.split_to(1001);
        assert_eq!(record.len(), 1001);
        assert_eq!(input.scanned, 0);
        assert_eq!(input.find(0x1e), None);
        assert_eq!(input.scanned, 2);
    }

    #[test]
    fn taking_fewer_bytes_than_were_searched_keeps_the_rest_searched() {
        let mut input = InputBuffer::from(&b"abcdef"[..]);
        assert_eq!(input.find(0x1e), None);
        let _ = input.split_to(2);
        assert_eq!(input.scanned, 4);
        input.extend_from_slice(b"\x1e");
        assert_eq!(input.find(0x1e), Some(4));
    }
}
