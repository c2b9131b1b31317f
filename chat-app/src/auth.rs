//! Accounts: argon2 password hashes, and the service's own HS256 access tokens (checked by the
//! same `JwtAuthenticator` that guards the hub).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{Duration, Utc};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use signalr_core::auth::JwtAuthenticator;

use crate::api::ApiError;
use crate::AppState;

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

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

/// The authenticated caller of a REST endpoint (`Authorization: Bearer ...`).
pub struct CurrentUser {
    pub id: i64,
    pub name: String,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Missing bearer token."))?;
        let identity = state
            .tokens
            .verifier
            .verify(token.trim())
            .map_err(|_| ApiError::unauthorized("Invalid or expired token."))?;
        let id = identity
            .user_id()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| ApiError::unauthorized("Invalid token subject."))?;
        Ok(CurrentUser {
            id,
            name: identity.name().unwrap_or_default().to_owned(),
        })
    }
}
