//! CORS for browser clients on other origins, on tower-http's `CorsLayer`: an application can
//! hand the hub the same policy its REST API uses ([`HubBuilder::cors`](crate::HubBuilder::cors)).

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The request headers SignalR clients send across origins (the JS client's `X-Requested-With`
/// and `X-SignalR-User-Agent`, a bearer token, and the body's type).
const CLIENT_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-requested-with"),
    HeaderName::from_static("x-signalr-user-agent"),
];

/// The policy [`HubBuilder::cors_allowed_origins`](crate::HubBuilder::cors_allowed_origins)
/// describes: the listed origins (`*`: any, echoed), with credentials (the JS client sends
/// cookies by default, so `*` is never answered), the methods the transports use (`DELETE`:
/// without it a long-polling client's stop fails silently), and the clients' headers.
pub(crate) fn layer_for(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(CLIENT_HEADERS)
            .max_age(Duration::from_secs(600)),
    )
}
