//! The receive buffer decoders read from.

use std::ops::Deref;

use bytes::{Bytes, BytesMut};

/// Bytes received but not yet decoded, in whatever chunks the transport delivered them.
///
/// It remembers how far a search for the end of a record has already looked. Without that, a
/// JSON record that arrives one byte at a time would be scanned from its start after every
/// byte: a 32 KB record sent as 32,000 one-byte WebSocket messages cost half a billion byte
/// comparisons. With it, every byte is looked at once, whatever the chunking.
///
/// A chunk that arrives while nothing else is buffered is kept as it came (usually a slice of
/// the WebSocket's own read buffer), so whole records in one frame, the common case, are
/// decoded without a copy; bytes are copied only when a record spans chunks.
#[derive(Debug, Default, Clone)]
pub struct InputBuffer {
    /// The received chunk, not copied; used while `joined` is empty.
    chunk: Bytes,
    /// Chunks joined because a record spans them; used while `chunk` is empty.
    joined: BytesMut,
    /// Bytes at the front already known to hold no record separator.
    scanned: usize,
    /// Records taken from `chunk` may share it (see [`InputBuffer::keeping_chunks`]). Read
    /// only where records are taken whole, which only MessagePack does.
    #[cfg_attr(not(any(test, feature = "msgpack")), allow(dead_code))]
    keep_chunks: bool,
}

impl InputBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        InputBuffer::default()
    }

    /// An empty buffer for a transport whose chunks are each an allocation of their own, no
    /// more than twice their length or 4 KiB (the WebSocket reader's messages): a record taken
    /// from one shares it, where otherwise it is copied so as not to pin a larger read buffer.
    /// A MessagePack argument kept by a method then keeps at most that allocation alive.
    pub(crate) fn keeping_chunks() -> Self {
        InputBuffer {
            keep_chunks: true,
            ..InputBuffer::default()
        }
    }

    /// Appends a chunk the transport delivered; when the buffer is empty it is kept without a
    /// copy.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.is_empty() {
            self.scanned = 0;
            // What joined an earlier record is let go: an idle connection holds no buffer.
            self.joined = BytesMut::new();
            self.chunk = chunk;
        } else {
            self.extend_from_slice(&chunk);
        }
    }

    /// Appends bytes (copied).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if !self.chunk.is_empty() {
            // From now on the bytes live in `joined`.
            let chunk = std::mem::take(&mut self.chunk);
            self.joined.reserve(chunk.len() + bytes.len());
            self.joined.extend_from_slice(&chunk);
        }
        self.joined.extend_from_slice(bytes);
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.chunk = Bytes::new();
        self.joined.clear();
        self.scanned = 0;
    }

    /// The position of the first `byte`, looking only at bytes not searched before. When
    /// there is none, the whole buffer counts as searched, so the next call starts at the
    /// bytes appended since.
    pub(crate) fn find(&mut self, byte: u8) -> Option<usize> {
        match memchr::memchr(byte, &self[self.scanned..]) {
            Some(offset) => Some(self.scanned + offset),
            None => {
                self.scanned = self.len();
                None
            }
        }
    }

    /// Takes the first `len` bytes off the front, in a buffer of their own: values decoded
    /// from them may outlive the read, and must not keep the transport's read buffer alive.
    #[cfg(any(test, feature = "msgpack"))]
    pub(crate) fn split_to(&mut self, len: usize) -> Bytes {
        if self.chunk.is_empty() {
            self.scanned = self.scanned.saturating_sub(len);
            self.joined.split_to(len).freeze()
        } else if self.keep_chunks {
            self.scanned = self.scanned.saturating_sub(len);
            if len == self.chunk.len() {
                std::mem::take(&mut self.chunk)
            } else {
                self.chunk.split_to(len)
            }
        } else {
            let taken = Bytes::copy_from_slice(&self.chunk[..len]);
            self.advance(len);
            taken
        }
    }

    /// Drops the first `len` bytes (a record already read from the slice).
    pub(crate) fn advance(&mut self, len: usize) {
        self.scanned = self.scanned.saturating_sub(len);
        if self.chunk.is_empty() {
            bytes::Buf::advance(&mut self.joined, len);
        } else {
            bytes::Buf::advance(&mut self.chunk, len);
            if self.chunk.is_empty() {
                // An empty slice would still hold the transport's buffer.
                self.chunk = Bytes::new();
            }
        }
    }
}

impl Deref for InputBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.chunk.is_empty() {
            &self.joined
        } else {
            &self.chunk
        }
    }
}

impl From<BytesMut> for InputBuffer {
    fn from(joined: BytesMut) -> Self {
        InputBuffer {
            chunk: Bytes::new(),
            joined,
            scanned: 0,
            keep_chunks: false,
        }
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

    #[test]
    fn a_chunk_is_kept_until_a_record_spans_chunks() {
        let first = Bytes::from_static(b"{}\x1e{\"a\"");
        let mut input = InputBuffer::new();
        input.push(first.clone());
        // Not copied: the buffer is the chunk itself.
        assert_eq!(input.as_ptr(), first.as_ptr());
        assert_eq!(input.find(0x1e), Some(2));
        input.advance(3);
        assert_eq!(&input[..], b"{\"a\"");
        assert_eq!(input.find(0x1e), None);
        input.push(Bytes::from_static(b":1}\x1e"));
        assert_eq!(&input[..], b"{\"a\":1}\x1e");
        assert_eq!(input.find(0x1e), Some(7));
        assert_eq!(&input.split_to(8)[..], b"{\"a\":1}\x1e");
        assert!(input.is_empty());
        // Empty again: the next chunk is kept as it came.
        let next = Bytes::from_static(b"x");
        input.push(next.clone());
        assert_eq!(input.as_ptr(), next.as_ptr());
        input.push(Bytes::new());
        assert_eq!(&input[..], b"x");
        input.clear();
        assert!(input.is_empty());
    }

    #[test]
    fn records_share_a_kept_chunk_and_copy_any_other() {
        let message = Bytes::from_static(b"\x02ab\x01c");
        let mut kept = InputBuffer::keeping_chunks();
        kept.push(message.clone());
        let first = kept.split_to(3);
        assert_eq!(&first[..], b"\x02ab");
        assert_eq!(
            first.as_ptr(),
            message.as_ptr(),
            "a slice of the chunk, not a copy"
        );
        let rest = kept.split_to(2);
        assert_eq!(rest.as_ptr(), message[3..].as_ptr());
        assert!(kept.is_empty());

        let mut copied = InputBuffer::new();
        copied.push(message.clone());
        let first = copied.split_to(3);
        assert_eq!(&first[..], b"\x02ab");
        assert_ne!(
            first.as_ptr(),
            message.as_ptr(),
            "copied: it must not pin the chunk"
        );
        assert_eq!(&copied[..], b"\x01c");
    }
}
