//! `GET {hub}?id=...` with a WebSocket upgrade (or without `id`: skip-negotiation clients).

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};

use super::connections::{BindRefusal, Binding};
use super::{body, text, transport_disabled, Query, ResponseBody};
use crate::auth::Identity;
use crate::connection::ConnectionParams;
use crate::hub::HubShared;
use crate::id::new_id;
use crate::request::HttpRequest;
use crate::transport::{websocket, TransportKind};

pub(super) fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

pub(super) fn upgrade<B>(
    hub: Arc<HubShared>,
    served: &[TransportKind],
    mut request: Request<B>,
    query: Query,
    identity: Option<Identity>,
) -> Response<ResponseBody> {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "Missing Sec-WebSocket-Key header.");
    };
    if request
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        let mut response = text(StatusCode::BAD_REQUEST, "Unsupported WebSocket version.");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    if hub.shutting_down.is_cancelled() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        );
    }

    if !served.contains(&TransportKind::WebSockets) {
        return transport_disabled(TransportKind::WebSockets);
    }
    let (connection_id, token, reattach) = match query.id {
        Some(token) => {
            let Some(connection) = hub.connections.get(&token) else {
                return text(StatusCode::NOT_FOUND, "No Connection with that ID");
            };
            match hub.connections.bind(&connection, Binding::WebSockets) {
                Ok(()) => {}
                Err(BindRefusal::InUse) => {
                    // Stateful reconnect: the client's socket dropped (or looks open but is
                    // dead) and it comes back with the same token.
                    return match connection.reattach_sender() {
                        Some(sender) => reattach(hub, request, key, sender),
                        None => text(StatusCode::CONFLICT, "Connection is already in use."),
                    };
                }
                Err(BindRefusal::OtherTransport) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "Cannot change transports mid-connection",
                    )
                }
                Err(BindRefusal::Gone) => {
                    return text(StatusCode::NOT_FOUND, "No Connection with that ID")
                }
            }
            // WebSockets never POST: the inbound channel is not needed.
            connection.release_inbound();
            let reattach = connection.stateful.then(|| connection.accept_reattach());
            (connection.connection_id.clone(), Some(token), reattach)
        }
        // Skip negotiation: a brand-new connection whose id is never shown to the client
        // (never stateful, as in the reference).
        None => (new_id().into(), None, None),
    };

    let on_upgrade = hyper::upgrade::on(&mut request);
    let accept = accept_key(key.as_bytes());
    let (parts, _body) = request.into_parts();
    // Kept for the connection's life: detached from hyper's read buffer.
    let request = Arc::new(HttpRequest::from_parts(parts).detached());
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (sink, stream) = websocket::accept(upgraded, &hub.options);
                let params = ConnectionParams {
                    connection_id,
                    transport: TransportKind::WebSockets,
                    identity,
                    request: Some(request),
                };
                super::run_connection(hub.clone(), params, stream, sink, reattach).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
        if let Some(token) = token {
            hub.connections.remove(&token);
        }
    });

    switching_protocols(&accept)
}

/// Upgrades a reconnecting client's request and hands the new socket to its connection.
fn reattach<B>(
    hub: Arc<HubShared>,
    mut request: Request<B>,
    key: HeaderValue,
    sender: tokio::sync::mpsc::Sender<crate::http::connections::Reattach>,
) -> Response<ResponseBody> {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (sink, stream) = websocket::accept(upgraded, &hub.options);
                if let Err(rejected) = sender.send((stream, sink)).await {
                    // The connection ended meanwhile.
                    let (_, mut sink) = rejected.0;
                    crate::transport::TransportSink::close(&mut sink).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    switching_protocols(&accept_key(key.as_bytes()))
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: the base64 of the SHA-1 of the
/// key followed by the protocol's GUID (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};

    let mut hash = Sha1::new();
    hash.update(key);
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

fn switching_protocols(accept: &str) -> Response<ResponseBody> {
    let mut response = Response::new(body(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
