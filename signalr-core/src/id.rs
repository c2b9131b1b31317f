//! Ids the server makes up: connection ids, connection tokens, invocation ids.

use base64::Engine;

/// 16 random bytes, base64url without padding: 22 URL-safe characters, like the reference.
/// URL-safe matters: clients append the token to URLs without encoding it.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
