//! CORS for browser clients on other origins. The JS client sends credentials by default, so
//! an allowed origin is echoed (never `*`) with `Access-Control-Allow-Credentials: true`.

use http::{header, HeaderValue, Request, Response, StatusCode};

use super::{body, ResponseBody};
use crate::options::HubOptions;

/// The request's `Origin`, when the hub allows it.
pub(super) fn allowed_origin<B>(options: &HubOptions, request: &Request<B>) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    options
        .cors_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

pub(super) fn allow(response: &mut Response<ResponseBody>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Answers a preflight. The allow-origin headers are added by the caller when the origin is
/// allowed; without them the browser refuses the real request.
pub(super) fn preflight<B>(request: &Request<B>) -> Response<ResponseBody> {
    let mut response = Response::new(body(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    // DELETE matters: without it the long-polling client's stop fails silently.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    if let Some(requested) = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}
