//! What a connection keeps of the HTTP request it was made with: the counterpart of
//! `Context.GetHttpContext()` in ASP.NET Core.

use std::net::SocketAddr;

use http::{Extensions, HeaderMap, Method, Uri, Version};

/// The peer address of a request. [`serve`](crate::serve) puts it in every request's
/// extensions; an application serving the hub itself inserts it (under axum, from
/// `ConnectInfo<SocketAddr>` in a middleware) to make [`HttpRequest::remote_addr`] work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteAddr(pub SocketAddr);

/// The parts of the HTTP request a connection was made with: the WebSocket upgrade, the
/// Server-Sent Events request, or the first long poll. Headers, cookies, the query string,
/// the peer address, and the extensions that tower and axum layers (an authentication layer,
/// a request id) put on the request.
///
/// Read it from a hub method with [`Context::http_request`](crate::Context::http_request).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl HttpRequest {
    /// Takes a request's parts without copying them.
    pub(crate) fn from_parts(parts: http::request::Parts) -> Self {
        HttpRequest {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
        }
    }

    /// Keeps a copy of `request`'s parts (not its body).
    pub fn from_request<B>(request: &http::Request<B>) -> Self {
        HttpRequest {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            extensions: request.extensions().clone(),
        }
    }

    /// The request method (`GET` for every transport request).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request URI, with its query string.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// What layers in front of the hub attached to the request.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The first value of a query parameter, decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        query_value(self.uri.query(), name)
    }

    /// The value of a cookie.
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_value(&self.headers, name)
    }

    /// The peer's address, when the server recorded it (see [`RemoteAddr`]).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.extensions.get::<RemoteAddr>().map(|addr| addr.0)
    }
}

pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_cookies_and_the_remote_address_are_read_from_the_parts() {
        let mut request = http::Request::builder()
            .uri("/hub?id=abc&name=J%C3%BCrgen&name=second")
            .header("cookie", "a=1; session=\"xyz\"")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        request.extensions_mut().insert(RemoteAddr(addr));
        let parts = HttpRequest::from_request(&request);
        assert_eq!(parts.query("name").as_deref(), Some("Jürgen"));
        assert_eq!(parts.query("missing"), None);
        assert_eq!(parts.cookie("session").as_deref(), Some("xyz"));
        assert_eq!(parts.cookie("b").as_deref(), Some("2"));
        assert_eq!(parts.cookie("c"), None);
        assert_eq!(parts.remote_addr(), Some(addr));
    }
}
