//! WebSocket framing for the server side of RFC 6455, without I/O: reading a client's frame
//! header, unmasking, and writing the header of an unmasked server frame.
//!
//! Every rule a client can break is a [`Violation`] with the close code that names it, so the
//! transport can answer with the right Close frame. Nothing here allocates.

/// What a frame carries (RFC 6455 §5.2). Reserved opcodes are a [`Violation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong: at most 125 bytes, never fragmented.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Close codes this server sends (RFC 6455 §7.4.1).
pub(crate) mod close_code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL: u16 = 1002;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;

    /// Whether a peer may send `code` in a Close frame: the defined codes, and the ranges
    /// for libraries (3000–3999) and applications (4000–4999).
    pub(crate) fn is_allowed(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A client broke the WebSocket protocol; the connection ends with `close_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) close_code: u16,
    pub(crate) what: &'static str,
}

impl Violation {
    pub(crate) const fn protocol(what: &'static str) -> Self {
        Violation {
            close_code: close_code::PROTOCOL,
            what,
        }
    }

    pub(crate) const fn too_big(what: &'static str) -> Self {
        Violation {
            close_code: close_code::TOO_BIG,
            what,
        }
    }

    pub(crate) const fn invalid_data(what: &'static str) -> Self {
        Violation {
            close_code: close_code::INVALID_DATA,
            what,
        }
    }
}

impl Violation {
    /// The reason our Close frame gives: short, and the same for every violation of a kind.
    pub(crate) fn reason(&self) -> &'static str {
        match self.close_code {
            close_code::INVALID_DATA => "Invalid UTF-8 in a text frame.",
            close_code::TOO_BIG => "Message too big.",
            _ => "WebSocket protocol error.",
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for Violation {}

/// A client frame's header, read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: OpCode,
    pub(crate) mask: [u8; 4],
    /// Bytes of header, up to the payload.
    pub(crate) header_len: usize,
    pub(crate) payload_len: usize,
}

impl Header {
    /// Header and payload together.
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// The longest header: 2 bytes, a 64-bit length and the mask.
pub(crate) const MAX_HEADER: usize = 14;

/// Reads the header at the start of `buf`: `Ok(None)` until all of it is there. A payload
/// longer than `max_payload` is refused from the header alone, before any of it is buffered.
pub(crate) fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, Violation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(Violation::protocol(
            "reserved bits set without an extension",
        ));
    }
    let fin = first & 0x80 != 0;
    let opcode = OpCode::from_bits(first & 0x0F).ok_or(Violation::protocol("reserved opcode"))?;
    if second & 0x80 == 0 {
        return Err(Violation::protocol("unmasked frame from a client"));
    }
    let (length_len, short) = match second & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(n as u64)),
    };
    let header_len = 2 + length_len + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let length = match short {
        Some(n) => n,
        None if length_len == 2 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
        None => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(bytes);
            if n >> 63 != 0 {
                return Err(Violation::protocol("frame length with its top bit set"));
            }
            n
        }
    };
    if opcode.is_control() {
        if length > 125 {
            return Err(Violation::protocol("control frame over 125 bytes"));
        }
        if !fin {
            return Err(Violation::protocol("fragmented control frame"));
        }
    }
    if length > max_payload as u64 {
        return Err(Violation::too_big("frame over the size limit"));
    }
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[header_len - 4..header_len]);
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len: length as usize,
    }))
}

/// Removes a client's mask from `payload` (its bytes from the start of the payload).
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Appends the header of a final, unmasked server frame carrying `payload_len` bytes.
pub(crate) fn put_header(out: &mut bytes::BytesMut, opcode: OpCode, payload_len: usize) {
    let first = 0x80 | opcode.bits();
    if payload_len < 126 {
        out.extend_from_slice(&[first, payload_len as u8]);
    } else if let Ok(short) = u16::try_from(payload_len) {
        let [hi, lo] = short.to_be_bytes();
        out.extend_from_slice(&[first, 126, hi, lo]);
    } else {
        out.extend_from_slice(&[first, 127]);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

/// What a Close frame's payload says: its code (none when empty), or a violation.
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code::is_allowed(code) {
                return Err(Violation::protocol("close code that may not be sent"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation::invalid_data("close reason that is not UTF-8"));
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client frame as a browser would send it.
    pub(crate) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// The word-at-a-time unmask is the byte-by-byte one, at every length around the word
    /// size (each tail length).
    #[test]
    fn unmasking_agrees_with_a_byte_by_byte_xor() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let payload: Vec<u8> = (0..len).map(|i| (i * 29 + 7) as u8).collect();
            let mut unmasked = payload.clone();
            unmask(&mut unmasked, mask);
            let expected: Vec<u8> = payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, expected, "length {len}");
        }
    }

    #[test]
    fn reads_every_length_encoding_and_unmasks() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in [0, 1, 5, 125, 126, 127, 65_535, 65_536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(0x82, &payload, mask);
            let header = parse_header(&frame, 1 << 20).unwrap().unwrap();
            assert_eq!(header.opcode, OpCode::Binary);
            assert!(header.fin);
            assert_eq!(header.payload_len, len);
            assert_eq!(header.frame_len(), frame.len());
            let mut body = frame[header.header_len..].to_vec();
            unmask(&mut body, header.mask);
            assert_eq!(body, payload, "length {len}");
            // Every shorter prefix of the header is "not yet", never an error.
            for cut in 0..header.header_len {
                assert_eq!(parse_header(&frame[..cut], 1 << 20), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn refuses_what_a_client_may_not_send() {
        let mask = [1, 2, 3, 4];
        let cases: [(Vec<u8>, u16); 7] = [
            (client_frame(0xC1, b"x", mask), close_code::PROTOCOL), // RSV1
            (client_frame(0x83, b"x", mask), close_code::PROTOCOL), // reserved opcode
            (vec![0x81, 0x01, b'x'], close_code::PROTOCOL),         // unmasked
            (client_frame(0x09, b"", mask), close_code::PROTOCOL),  // fragmented ping
            (client_frame(0x89, &[0; 126], mask), close_code::PROTOCOL), // long ping
            (client_frame(0x82, &[0; 2_000], mask), close_code::TOO_BIG),
            (
                [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4].to_vec(),
                close_code::PROTOCOL,
            ),
        ];
        for (frame, code) in cases {
            let error = parse_header(&frame, 1_000).unwrap_err();
            assert_eq!(error.close_code, code, "{frame:02x?}: {error}");
        }
    }

    #[test]
    fn writes_the_shortest_length_encoding() {
        for (len, header) in [
            (0, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xFF, 0xFF]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = bytes::BytesMut::new();
            put_header(&mut out, OpCode::Text, len);
            assert_eq!(&out[..], &header[..], "length {len}");
        }
    }

    #[test]
    fn reads_close_payloads() {
        assert_eq!(parse_close(b""), Ok(None));
        assert_eq!(parse_close(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(parse_close(&[0x0F, 0xA0, b'o', b'k']), Ok(Some(4000)));
        assert!(parse_close(&[0x03]).is_err());
        for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
            let error = parse_close(&code.to_be_bytes()).unwrap_err();
            assert_eq!(error.close_code, close_code::PROTOCOL, "code {code}");
        }
        let error = parse_close(&[0x03, 0xE8, 0xFF]).unwrap_err();
        assert_eq!(error.close_code, close_code::INVALID_DATA);
    }
}
