//! The web UI at `/`: buildless ES modules compiled into the binary, so `cargo run` serves it
//! with no build or copy step. `static/vendor/signalr.min.js` is the official client's browser
//! bundle, byte for byte from the pinned npm package (checked by the browser test suite).

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::Service;

/// Every file the UI serves: its name under `/static/`, media type and content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
    (
        "vendor/signalr.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/vendor/signalr.min.js"),
    ),
];

const INDEX: &str = include_str!("../static/index.html");

/// Scripts and styles only from this origin, no inline code, no framing: user text that
/// slipped into markup could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'; object-src 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: revalidate rather than run a stale UI.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => page(content_type, body),
        None => crate::api::not_found().await.into_response(),
    }
}

/// `GET /` and `GET /static/{file}`.
pub fn routes() -> Router<Service> {
    Router::new()
        .route("/", get(index))
        .route("/static/{*file}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        for (file, _, body) in ASSETS {
            assert!(
                INDEX.contains(&format!("/static/{file}")),
                "index.html loads {file}"
            );
            assert!(!body.is_empty());
        }
    }
}
