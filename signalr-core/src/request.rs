//! What a connection keeps of the HTTP request it was made with: the counterpart of
//! `Context.GetHttpContext()` in ASP.NET Core.

use std::net::SocketAddr;

use http::{Extensions, HeaderMap, HeaderValue, Method, Uri, Version};

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

    /// The same request with its URI and header values in allocations of their own.
    ///
    /// hyper parses them as slices of the buffer it read the request into (8–16 KiB), so a
    /// connection that keeps its request for its whole life (every WebSocket, event stream and
    /// long-polling connection does, for [`Context::http_request`](crate::Context::http_request))
    /// would keep that whole buffer alive for a few hundred bytes of headers.
    pub(crate) fn detached(self) -> Self {
        let uri = Uri::try_from(self.uri.to_string()).unwrap_or(self.uri);
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let mut copy =
                HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
        HttpRequest {
            method: self.method,
            uri,
            version: self.version,
            headers,
            extensions: self.extensions,
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
    fn a_detached_request_keeps_nothing_of_the_buffer_it_was_read_from() {
        // What hyper does: the URI and header values are slices of its read buffer.
        let (path, client, token) = (
            "/hub?id=abc&name=J%C3%BCrgen",
            "a-value-of-the-client",
            "sensitive-token",
        );
        let buffer = bytes::Bytes::from(format!("{path}{client}{token}").into_bytes());
        let (a, b) = (path.len(), path.len() + client.len());
        let uri = Uri::from_maybe_shared(buffer.slice(..a)).unwrap();
        let value = HeaderValue::from_maybe_shared(buffer.slice(a..b)).unwrap();
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(b..)).unwrap();
        secret.set_sensitive(true);
        let request = http::Request::builder()
            .uri(uri)
            .header("x-client", value.clone())
            .header("x-client", "second")
            .header(http::header::AUTHORIZATION, secret)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        drop(value);
        assert!(
            !buffer.is_unique(),
            "the parts share the buffer, as hyper's do"
        );

        let kept = HttpRequest::from_parts(parts).detached();
        assert!(
            buffer.is_unique(),
            "the detached request still holds the read buffer"
        );
        assert_eq!(kept.uri(), "/hub?id=abc&name=J%C3%BCrgen");
        assert_eq!(kept.query("name").as_deref(), Some("Jürgen"));
        let values: Vec<_> = kept.headers().get_all("x-client").iter().collect();
        assert_eq!(values, ["a-value-of-the-client", "second"]);
        let secret = &kept.headers()[http::header::AUTHORIZATION];
        assert_eq!(secret, "sensitive-token");
        assert!(secret.is_sensitive());
    }

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
