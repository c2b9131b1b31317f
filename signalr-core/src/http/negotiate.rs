//! `POST {hub}/negotiate`: issues connection ids and lists the transports.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::json;

use super::{json, text, token, Query, ResponseBody};
use crate::hub::HubShared;
use crate::id::new_id;
use crate::lifetime::backplane::PresenceQuery;
use crate::log_limit::{LogLimiter, REPEAT_INTERVAL};
use crate::transport::TransportKind;

/// The highest negotiate version we speak (1: separate connection id and token).
const MAX_NEGOTIATE_VERSION: i64 = 1;

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Remembers a token until its transport request comes; one that never comes expires (clients
/// re-negotiate before each fallback, so abandoned ones are normal).
fn await_transport(hub: &Arc<HubShared>, token: String, connection_id: Arc<str>, stateful: bool) {
    hub.connections
        .insert(token.clone(), connection_id, stateful);
    let hub = hub.clone();
    tokio::spawn(async move {
        tokio::time::sleep(hub.options.disconnect_timeout).await;
        hub.connections.remove_if_pending(&token);
    });
}

/// How long after its issue another process may adopt a portable token (the gap between a
/// negotiate and its transport request is normally milliseconds).
const ADOPTION_WINDOW_SECS: u64 = 60;

/// A transport request with a portable token this process did not issue: take the connection
/// on, unless the token is invalid, stale, or its connection already runs somewhere.
pub(super) async fn adopt_portable_token(hub: &Arc<HubShared>, token: &str) {
    let Some(key) = &hub.options.portable_token_key else {
        return;
    };
    if hub.connections.get(token).is_some() {
        return;
    }
    let Some(claims) = token::verify(key, token) else {
        return;
    };
    let now = unix_secs();
    // A little tolerance for clocks that disagree between machines.
    let fresh = claims.issued_at <= now + 5 && now <= claims.issued_at + ADOPTION_WINDOW_SECS;
    if !fresh || hub.registry.get(&claims.connection_id).is_some() {
        return;
    }
    if let Some(backplane) = &hub.backplane {
        // Never run one connection twice (a stateful reconnect that landed elsewhere). While
        // the backplane cannot tell, availability wins: adopt.
        let holders = backplane
            .presence(PresenceQuery::Connection(&claims.connection_id))
            .await;
        if holders.is_ok_and(|h| !h.is_empty()) {
            tracing::debug!(connection = %claims.connection_id, "token already in use on another process");
            return;
        }
    }
    if hub.connections.pending() >= hub.options.max_pending_negotiations {
        return;
    }
    tracing::debug!(connection = %claims.connection_id, "adopted a connection negotiated elsewhere");
    await_transport(
        hub,
        token.to_owned(),
        claims.connection_id.into(),
        claims.stateful,
    );
}

/// The negotiate version to answer with, from the client's `negotiateVersion` (none is 0;
/// higher than ours is ours), or the error text the reference answers with.
pub(crate) fn requested_version(raw: Option<&str>) -> Result<i64, String> {
    match raw {
        None => Ok(0),
        Some(raw) => match raw.parse::<i64>() {
            Err(_) => Err("The client requested a non-integer protocol version.".to_owned()),
            Ok(v) if v < 0 => Err(format!(
                "The client requested version '{v}', but the server does not support this version."
            )),
            Ok(v) => Ok(v.min(MAX_NEGOTIATE_VERSION)),
        },
    }
}

pub(super) fn negotiate(
    hub: &Arc<HubShared>,
    query: &Query,
    served: &[TransportKind],
) -> Response<ResponseBody> {
    if hub.shutting_down.is_cancelled() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    }
    let version = match requested_version(query.negotiate_version.as_deref()) {
        Ok(version) => version,
        Err(error) => return json(&json!({ "error": error })),
    };

    if hub.connections.pending() >= hub.options.max_pending_negotiations {
        static FULL: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
        if let Some(suppressed) = FULL.allow() {
            tracing::warn!(
                limit = hub.options.max_pending_negotiations,
                suppressed,
                "negotiate refused (503): too many negotiated connections waiting for a transport"
            );
        }
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many pending connections.",
        );
    }

    // Granted only when both sides want it; never announced otherwise (the JS client refuses a
    // server that grants what it did not ask for).
    let stateful = query.use_stateful_reconnect && hub.options.allow_stateful_reconnect;
    let (connection_id, token) = match (&hub.options.portable_token_key, version) {
        (Some(key), 1..) => token::issue(key, rand::random(), stateful, unix_secs()),
        _ => {
            let connection_id = new_id();
            // Version 0 clients present the connection id itself on transport requests.
            let token = if version >= 1 {
                new_id()
            } else {
                connection_id.clone()
            };
            (connection_id, token)
        }
    };
    let connection_id: Arc<str> = connection_id.into();
    await_transport(hub, token.clone(), connection_id.clone(), stateful);

    let transports: Vec<_> = TransportKind::ALL
        .iter()
        .filter(|t| served.contains(t))
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
