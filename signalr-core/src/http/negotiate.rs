//! `POST {hub}/negotiate`: issues connection ids and lists the transports.

use std::sync::Arc;

use base64::Engine;
use http::{Response, StatusCode};
use serde_json::json;

use super::{json, text, Query, ResponseBody};
use crate::hub::HubShared;
use crate::transport::TransportKind;

/// The highest negotiate version we speak (1: separate connection id and token).
const MAX_NEGOTIATE_VERSION: i64 = 1;

/// 16 random bytes, base64url without padding: 22 URL-safe characters, like the reference.
/// URL-safe matters: clients append the token to URLs without encoding it.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn negotiate(hub: &Arc<HubShared>, query: &Query) -> Response<ResponseBody> {
    if hub.shutting_down.is_cancelled() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    }
    let version = match query.negotiate_version.as_deref() {
        None => 0,
        Some(raw) => match raw.parse::<i64>() {
            Err(_) => {
                return json(&json!({
                    "error": "The client requested a non-integer protocol version."
                }))
            }
            Ok(v) if v < 0 => {
                return json(&json!({
                    "error": format!("The client requested version '{v}', but the server does not support this version.")
                }))
            }
            Ok(v) => v.min(MAX_NEGOTIATE_VERSION),
        },
    };

    if hub.connections.pending() >= hub.options.max_pending_negotiations {
        tracing::warn!("too many negotiated connections waiting for a transport");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many pending connections.",
        );
    }

    let connection_id: Arc<str> = new_id().into();
    // Version 0 clients present the connection id itself on transport requests.
    let token = if version >= 1 {
        new_id()
    } else {
        connection_id.to_string()
    };
    // Granted only when both sides want it; never announced otherwise (the JS client refuses a
    // server that grants what it did not ask for).
    let stateful = query.use_stateful_reconnect && hub.options.allow_stateful_reconnect;
    hub.connections
        .insert(token.clone(), connection_id.clone(), stateful);
    // A negotiation whose transport never arrives expires (clients re-negotiate before each
    // fallback, so abandoned ones are normal).
    let expiry_hub = hub.clone();
    let expiry_token = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(expiry_hub.options.disconnect_timeout).await;
        expiry_hub.connections.remove_if_pending(&expiry_token);
    });

    let transports: Vec<_> = TransportKind::ALL
        .iter()
        .filter(|t| hub.options.transports.contains(t))
        .map(|t| {
            json!({
                "transport": t.as_str(),
                "transferFormats": t.transfer_formats().iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut body = json!({
        "negotiateVersion": version,
        "connectionId": &*connection_id,
        "availableTransports": transports,
    });
    if version >= 1 {
        body["connectionToken"] = json!(token);
    }
    if stateful {
        body["useStatefulReconnect"] = json!(true);
    }
    json(&body)
}
