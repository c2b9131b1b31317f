//! The handshake: always JSON, terminated by the 0x1E record separator, whatever hub protocol
//! follows.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::json::RECORD_SEPARATOR;
use super::InputBuffer;

/// What the client asked for in its handshake.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HandshakeRequest {
    /// Protocol name (`json`, `messagepack`).
    pub protocol: String,
    /// Protocol version (1, or 2 with stateful reconnect).
    pub version: u32,
}

/// Why a handshake could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// More than the size limit arrived without a record separator.
    #[error("Handshake was canceled.")]
    TooLarge,
    /// The record was not a valid handshake request.
    #[error("An unexpected error occurred during connection handshake.")]
    Malformed(String),
}

/// Takes the handshake request off the front of `buf`, leaving whatever follows it (hub
/// messages sent in the same read) in `buf`.
///
/// Returns `Ok(None)` until a whole record has arrived.
pub fn decode_handshake_request(
    buf: &mut InputBuffer,
    max_size: usize,
) -> Result<Option<HandshakeRequest>, HandshakeError> {
    let Some(end) = buf.find(RECORD_SEPARATOR) else {
        if buf.len() > max_size {
            return Err(HandshakeError::TooLarge);
        }
        return Ok(None);
    };
    if end > max_size {
        return Err(HandshakeError::TooLarge);
    }
    let request = serde_json::from_slice::<HandshakeRequest>(&buf[..end])
        .map(Some)
        .map_err(|e| HandshakeError::Malformed(e.to_string()));
    buf.advance(end + 1);
    request
}

/// The handshake response record: `{}` on success, `{"error":"..."}` on failure.
pub fn encode_handshake_response(error: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Response<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    let mut out = BytesMut::with_capacity(3);
    // Serializing a struct of one optional string cannot fail.
    let json = serde_json::to_vec(&Response { error }).unwrap_or_else(|_| b"{}".to_vec());
    out.put_slice(&json);
    out.put_u8(RECORD_SEPARATOR);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_trailing_messages_keeps_the_rest() {
        let mut buf =
            InputBuffer::from(&b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":6}\x1e"[..]);
        let req = decode_handshake_request(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(req.protocol, "json");
        assert_eq!(req.version, 1);
        assert_eq!(&buf[..], b"{\"type\":6}\x1e");
    }

    #[test]
    fn partial_request_waits_then_completes() {
        let mut buf = InputBuffer::from(&b"{\"protocol\":\"messa"[..]);
        assert_eq!(decode_handshake_request(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(b"gepack\",\"version\":2,\"extra\":true}\x1e");
        let req = decode_handshake_request(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(req.protocol, "messagepack");
        assert_eq!(req.version, 2);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_request_without_separator_is_refused() {
        let mut buf = InputBuffer::from(&[b'x'; 100][..]);
        assert_eq!(
            decode_handshake_request(&mut buf, 64),
            Err(HandshakeError::TooLarge)
        );
    }

    #[test]
    fn malformed_and_missing_fields_are_errors() {
        for bad in [
            &b"{\"protocol\":\"json\"}\x1e"[..],
            b"not json\x1e",
            b"{\"protocol\":1,\"version\":1}\x1e",
        ] {
            let mut buf = InputBuffer::from(bad);
            assert!(matches!(
                decode_handshake_request(&mut buf, 1024),
                Err(HandshakeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn responses_are_byte_exact() {
        assert_eq!(&encode_handshake_response(None)[..], b"{}\x1e");
        assert_eq!(
            &encode_handshake_response(Some("The protocol 'x' is not supported."))[..],
            b"{\"error\":\"The protocol 'x' is not supported.\"}\x1e"
        );
    }
}
