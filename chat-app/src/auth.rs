//! Sessions: the service's own HS256 access tokens, and who a request comes from. A token
//! says which account (`sub`); the account's name always comes from the database, never from a
//! claim, so a token cannot make its bearer look like someone else.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{Duration, Utc};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use signalr_core::auth::{AuthFuture, JwtAuthenticator};
use signalr_core::{
    AuthError, AuthRequest, Authenticator, Context, FromContext, HubError, Identity,
};

use crate::api::ApiError;
use crate::store::Store;
use crate::Service;

/// Issues and checks the service's access tokens.
#[derive(Clone)]
pub struct Tokens {
    key: EncodingKey,
    /// Signs SignalR connection tokens when several processes serve the hub.
    connection_token_key: Vec<u8>,
    verifier: JwtAuthenticator,
    lifetime: Duration,
}

/// A token handed to a client after login.
pub struct Issued {
    pub token: String,
    pub expires_at: String,
}

impl Tokens {
    /// The key every process of the service shares for SignalR connection tokens.
    pub fn connection_token_key(&self) -> &[u8] {
        &self.connection_token_key
    }

    pub fn new(secret: &str, lifetime_minutes: i64) -> Tokens {
        Tokens {
            key: EncodingKey::from_secret(secret.as_bytes()),
            // Derived, not the JWT secret itself: each key signs one kind of token.
            connection_token_key: format!("signalr-connection-tokens:{secret}").into_bytes(),
            verifier: JwtAuthenticator::hs256(secret.as_bytes()),
            lifetime: Duration::minutes(lifetime_minutes.max(1)),
        }
    }

    pub fn verifier(&self) -> JwtAuthenticator {
        self.verifier.clone()
    }

    pub fn issue(&self, user_id: i64, user_name: &str) -> Result<Issued, String> {
        let expires = Utc::now() + self.lifetime;
        let claims =
            json!({"sub": user_id.to_string(), "name": user_name, "exp": expires.timestamp()});
        let token = encode(&Header::default(), &claims, &self.key).map_err(|e| e.to_string())?;
        Ok(Issued {
            token,
            expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

/// Who a token belongs to: its account id (`sub`) and the account's name from the database.
/// `Ok(None)` when the token is invalid, expired, or names no account a person may use.
pub async fn resolve_token(
    tokens: &Tokens,
    store: &Store,
    assistant_user: i64,
    token: &str,
) -> Result<Option<(Identity, i64, String)>, sqlx::Error> {
    let Ok(verified) = tokens.verifier.verify(token.trim()) else {
        return Ok(None);
    };
    let Some(id) = verified
        .claim("sub")
        .and_then(|sub| sub.parse::<i64>().ok())
    else {
        return Ok(None);
    };
    if id == assistant_user {
        return Ok(None);
    }
    let Some(name) = store.user_name(id).await? else {
        return Ok(None);
    };
    let mut identity = Identity::new(id.to_string()).with_name(name.clone());
    if let Some(expires) = verified.expires_at() {
        identity = identity.with_expiry(expires);
    }
    Ok(Some((identity, id, name)))
}

/// Authenticates hub requests: a valid token of an existing account, named from the database.
/// Refusals say no more than that (no library error text).
pub struct HubAuthenticator {
    pub tokens: Tokens,
    pub store: Store,
    pub assistant_user: i64,
}

impl Authenticator for HubAuthenticator {
    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some(token) = request.bearer_token() else {
                return Ok(None);
            };
            match resolve_token(&self.tokens, &self.store, self.assistant_user, token).await {
                Ok(Some((identity, _, _))) => Ok(Some(identity)),
                Ok(None) => Err(AuthError::new("Invalid or expired token.")),
                Err(error) => {
                    tracing::warn!(%error, "database unavailable while checking a token");
                    Err(AuthError::new(
                        "The service is unavailable; try again shortly.",
                    ))
                }
            }
        })
    }
}

/// Who is calling: a REST request's bearer token, or a hub connection's identity (both the
/// account id and its name from the database).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: i64,
    pub name: String,
}

impl FromRequestParts<Service> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let state = &service.state;
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Missing bearer token."))?;
        match resolve_token(&state.tokens, &state.store, state.assistant_user, token).await? {
            Some((_, id, name)) => Ok(CurrentUser { id, name }),
            None => Err(ApiError::unauthorized("Invalid or expired token.")),
        }
    }
}

/// The caller of a hub method, from the identity [`HubAuthenticator`] gave the connection. The
/// hub requires authentication, so a connection without one is a bug: the call is refused
/// with an error Completion instead of running.
impl FromContext for CurrentUser {
    type Rejection = HubError;

    fn from_context(context: &Context) -> Result<Self, HubError> {
        let user = context
            .user()
            .ok_or_else(|| HubError::new("Sign in first."))?;
        let id = user
            .user_id()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| HubError::new("Sign in first."))?;
        Ok(CurrentUser {
            id,
            name: user.name().unwrap_or_default().to_owned(),
        })
    }
}
