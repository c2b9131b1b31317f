//! JSON Web Tokens (HS256 or RS256), checked the way ASP.NET's JWT bearer handler checks them:
//! signature, `exp`, `nbf`, and `iss`/`aud` when configured.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, AuthFuture, AuthRequest, Authenticator, Identity};

/// Claim types that name the user, in the order they are looked for.
const USER_ID_CLAIMS: [&str; 3] = [
    "sub",
    "nameid",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
];
const NAME_CLAIMS: [&str; 3] = [
    "name",
    "unique_name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
];

/// An [`Authenticator`] for bearer JWTs. Requests without a token are anonymous; a token that
/// fails any check is refused with 401.
#[derive(Clone)]
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
}

impl JwtAuthenticator {
    /// Tokens signed with HMAC-SHA256 and this shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Tokens signed with RSA-SHA256; `public_key_pem` is the PEM public key.
    pub fn rs256_pem(public_key_pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| AuthError::new(format!("invalid RSA public key: {e}")))?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        JwtAuthenticator { key, validation }
    }

    /// Require this issuer (`iss`).
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.validation.set_required_spec_claims(&["exp", "iss"]);
        self
    }

    /// Require this audience (`aud`).
    pub fn audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`. Default none.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// Checks a token and turns its claims into an [`Identity`].
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::new(format!("invalid token: {e}")))?;
        Ok(identity_from_claims(&data.claims))
    }
}

fn identity_from_claims(claims: &Map<String, Value>) -> Identity {
    let text = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| claims.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let mut identity = Identity {
        user_id: text(&USER_ID_CLAIMS),
        name: text(&NAME_CLAIMS),
        ..Identity::default()
    };
    for (kind, value) in claims {
        match value {
            Value::String(s) => identity.claims.push((kind.clone(), s.clone())),
            Value::Number(n) => identity.claims.push((kind.clone(), n.to_string())),
            Value::Bool(b) => identity.claims.push((kind.clone(), b.to_string())),
            // Repeated claims (roles) arrive as arrays.
            Value::Array(items) => identity.claims.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| (kind.clone(), s.to_owned())),
            ),
            _ => {}
        }
    }
    identity.expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .map(|exp| SystemTime::UNIX_EPOCH + Duration::from_secs(exp));
    identity
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> AuthFuture<'a> {
        let result = match request.bearer_token() {
            None => Ok(None),
            Some(token) => self.verify(token).map(Some),
        };
        Box::pin(std::future::ready(result))
    }
}
