//! Authentication and authorization: who a connection belongs to, and what it may do.
//!
//! An [`Authenticator`] looks at each negotiate and transport request (the `Authorization:
//! Bearer` header, or for WebSockets and Server-Sent Events, which browsers cannot give headers,
//! the `access_token` query parameter) and yields an [`Identity`] or refuses with 401. A
//! [`Policy`] then decides per hub (at negotiate and transport requests) and per method (at
//! each invocation).

#[cfg(feature = "jwt")]
mod jwt;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

#[cfg(feature = "jwt")]
pub use jwt::JwtAuthenticator;

/// Who a connection belongs to: the counterpart of the reference's `ClaimsPrincipal`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    user_id: Option<String>,
    name: Option<String>,
    claims: Vec<(String, String)>,
    expires_at: Option<SystemTime>,
}

impl Identity {
    /// An identity for the user `user_id` (the counterpart of the `nameidentifier` claim; it is
    /// what `Clients::user` targets).
    pub fn new(user_id: impl Into<String>) -> Self {
        Identity {
            user_id: Some(user_id.into()),
            ..Identity::default()
        }
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a claim (a type may repeat, as roles do).
    pub fn with_claim(mut self, kind: impl Into<String>, value: impl Into<String>) -> Self {
        self.claims.push((kind.into(), value.into()));
        self
    }

    /// When the credentials stop being valid (see
    /// [`HubBuilder::close_on_authentication_expiration`](crate::HubBuilder::close_on_authentication_expiration)).
    pub fn with_expiry(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// The user identifier, if the identity has one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The display name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Every claim as (type, value).
    pub fn claims(&self) -> &[(String, String)] {
        &self.claims
    }

    /// The first value of a claim type.
    pub fn claim(&self, kind: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the identity has this claim with this value.
    pub fn has_claim(&self, kind: &str, value: &str) -> bool {
        self.claims.iter().any(|(k, v)| k == kind && v == value)
    }

    /// When the credentials expire, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

/// What an authenticator sees of a request: negotiate, and every transport request.
pub struct AuthRequest<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) uri: &'a http::Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a http::Extensions,
    pub(crate) query_token: Option<&'a str>,
}

impl<'a> AuthRequest<'a> {
    /// A request as an authenticator sees it, for testing an [`Authenticator`] on its own.
    pub fn new<B>(request: &'a http::Request<B>) -> Self {
        AuthRequest {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            query_token: None,
        }
    }

    /// The request method.
    pub fn method(&self) -> &http::Method {
        self.method
    }

    /// The request URI, with its query string.
    pub fn uri(&self) -> &http::Uri {
        self.uri
    }

    /// The request headers (cookies, custom headers).
    pub fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// What tower or axum layers in front of the hub attached to the request: an
    /// authentication layer can leave its verdict here for an authenticator to hand on.
    pub fn extensions(&self) -> &http::Extensions {
        self.extensions
    }

    /// The value of a cookie.
    pub fn cookie(&self, name: &str) -> Option<String> {
        crate::request::cookie_value(self.headers, name)
    }

    /// The peer's address, when the server recorded it (see [`RemoteAddr`](crate::RemoteAddr)).
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.extensions
            .get::<crate::RemoteAddr>()
            .map(|addr| addr.0)
    }

    /// The bearer token: from `Authorization: Bearer ...`, or else from the `access_token` query
    /// parameter on WebSocket and Server-Sent Events requests.
    pub fn bearer_token(&self) -> Option<&str> {
        self.headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .or(self.query_token)
    }
}

/// Why a request was refused (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(String);

impl AuthError {
    /// A refusal with a reason (logged, and sent as the 401 body).
    pub fn new(reason: impl Into<String>) -> Self {
        AuthError(reason.into())
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Identity>, AuthError>> + Send + 'a>>;

/// Establishes who makes a request. `Ok(None)` means anonymous (no credentials given); a
/// hub [`Policy`] decides whether that is allowed. `Err` refuses the request with 401.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one negotiate or transport request.
    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> AuthFuture<'a>;
}

impl<F> Authenticator for F
where
    F: Fn(&AuthRequest<'_>) -> Result<Option<Identity>, AuthError> + Send + Sync + 'static,
{
    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> AuthFuture<'a> {
        let result = self(request);
        Box::pin(std::future::ready(result))
    }
}

type Rule = dyn Fn(Option<&Identity>) -> bool + Send + Sync;

/// A rule over the caller's identity (`None` for anonymous callers).
#[derive(Clone)]
pub struct Policy(Arc<Rule>);

impl Policy {
    /// Any authenticated caller.
    pub fn authenticated() -> Self {
        Policy(Arc::new(|identity| identity.is_some()))
    }

    /// Callers with the claim `kind` = `value` (for example `("role", "admin")`).
    pub fn claim(kind: impl Into<String>, value: impl Into<String>) -> Self {
        let (kind, value) = (kind.into(), value.into());
        Policy(Arc::new(move |identity| {
            identity.is_some_and(|i| i.has_claim(&kind, &value))
        }))
    }

    /// Any rule of your own.
    pub fn from_fn(rule: impl Fn(Option<&Identity>) -> bool + Send + Sync + 'static) -> Self {
        Policy(Arc::new(rule))
    }

    /// Whether `identity` satisfies the policy.
    pub fn allows(&self, identity: Option<&Identity>) -> bool {
        (self.0)(identity)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Policy")
    }
}
