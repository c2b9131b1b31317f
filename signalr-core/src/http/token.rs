//! Portable connection tokens: signed, so that any process holding the same key can open the
//! connection a negotiate on another process issued (no session affinity between negotiate and
//! the transport request). Sans-IO: the caller passes the time.
//!
//! Layout before base64url: `1 | connection id (16) | flags (1) | issued at, Unix s (8, BE) |
//! HMAC-SHA256 of the preceding bytes, first 16 bytes`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const BODY: usize = 1 + 16 + 1 + 8;
const MAC: usize = 16;
const STATEFUL: u8 = 1;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenClaims {
    /// The public connection id (base64url of the 16 id bytes, as negotiate reports it).
    pub(crate) connection_id: String,
    /// Negotiate granted stateful reconnect.
    pub(crate) stateful: bool,
    pub(crate) issued_at: u64,
}

fn mac(key: &[u8], body: &[u8]) -> [u8; MAC] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let full = mac.finalize().into_bytes();
    let mut out = [0; MAC];
    out.copy_from_slice(&full[..MAC]);
    out
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Issues a token for `id` (16 random bytes); returns (connection id, token).
pub(crate) fn issue(key: &[u8], id: [u8; 16], stateful: bool, now_secs: u64) -> (String, String) {
    let mut bytes = Vec::with_capacity(BODY + MAC);
    bytes.push(VERSION);
    bytes.extend_from_slice(&id);
    bytes.push(if stateful { STATEFUL } else { 0 });
    bytes.extend_from_slice(&now_secs.to_be_bytes());
    let signature = mac(key, &bytes);
    bytes.extend_from_slice(&signature);
    (b64().encode(id), b64().encode(bytes))
}

/// The claims of a token signed with `key`, or `None` for anything else (another key, a
/// tampered or truncated token, an ordinary random token).
pub(crate) fn verify(key: &[u8], token: &str) -> Option<TokenClaims> {
    if token.len() > 64 {
        return None;
    }
    let bytes = b64().decode(token).ok()?;
    if bytes.len() != BODY + MAC || bytes[0] != VERSION {
        return None;
    }
    let (body, signature) = bytes.split_at(BODY);
    let mut check = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    check.update(body);
    // Constant-time comparison of the truncated tag.
    check.verify_truncated_left(signature).ok()?;
    let mut issued = [0; 8];
    issued.copy_from_slice(&body[18..26]);
    Some(TokenClaims {
        connection_id: b64().encode(&body[1..17]),
        stateful: body[17] & STATEFUL != 0,
        issued_at: u64::from_be_bytes(issued),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_key_and_unchanged() {
        let (id, token) = issue(b"cluster key", [7; 16], true, 1_700_000_000);
        assert_eq!(id.len(), 22);
        let claims = verify(b"cluster key", &token).unwrap();
        assert_eq!(claims.connection_id, id);
        assert!(claims.stateful);
        assert_eq!(claims.issued_at, 1_700_000_000);
        assert_eq!(verify(b"another key", &token), None);
        // Any changed character (here: the stateful flag, the id, the time) breaks it.
        let mut bytes = b64().decode(&token).unwrap();
        for position in [1, 17, 20, 30] {
            bytes[position] ^= 1;
            assert_eq!(verify(b"cluster key", &b64().encode(&bytes)), None);
            bytes[position] ^= 1;
        }
        assert_eq!(verify(b"cluster key", &token[..token.len() - 2]), None);
        assert_eq!(verify(b"cluster key", "not a token"), None);
        let (_, plain) = issue(b"cluster key", [1; 16], false, 5);
        assert!(!verify(b"cluster key", &plain).unwrap().stateful);
    }
}
