//! Authentication and authorization: JWT bearer tokens (HS256), a policy on the whole hub
//! (anonymous negotiate gets 401), a policy on one method (admins only), a user id provider
//! (users are reached by e-mail address), and `Context::user()` inside a method.
//!
//! ```text
//! cargo run --example auth        # http://127.0.0.1:5000 (PORT to change), hub at /hubs/secure
//! ```
//! `GET /token?user=alice` is a demo sign-in that mints a one-hour token (the user `admin` gets
//! `role: admin`); a real application checks a password or an identity provider first. The
//! signing secret is `JWT_SECRET`, or a random one made at start (never a built-in default).
//! From Node with `@microsoft/signalr`:
//! ```js
//! const token = await (await fetch("http://127.0.0.1:5000/token?user=alice")).text();
//! const c = new signalR.HubConnectionBuilder()
//!   .withUrl("http://127.0.0.1:5000/hubs/secure", { accessTokenFactory: () => token })
//!   .build();
//! c.on("Notice", (from, text) => console.log(from, text));
//! await c.start();                    // without accessTokenFactory: negotiate fails with 401
//! console.log(await c.invoke("WhoAmI"));  // { userId: "alice@example.com", name: "alice", roles: [] }
//! await c.invoke("SendToUser", "alice@example.com", "hi me"); // every tab alice has open
//! await c.invoke("Announce", "hello");    // rejected: "Failed to invoke 'Announce' because user is unauthorized"
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use signalr_core::auth::JwtAuthenticator;
use signalr_core::{Clients, Context, Hub, HubError, Policy};

const HUB_PATH: &str = "/hubs/secure";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Profile {
    user_id: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
}

/// What the token said about the caller. The hub policy guarantees an identity here.
async fn who_am_i(ctx: Context) -> Result<Profile, HubError> {
    let user = ctx.user().ok_or_else(|| HubError::new("Not signed in."))?;
    Ok(Profile {
        user_id: ctx.user_identifier().map(str::to_owned),
        name: user.name().map(str::to_owned),
        roles: (user.claims().iter())
            .filter(|(kind, _)| kind == "role")
            .map(|(_, role)| role.clone())
            .collect(),
    })
}

/// Reaches every connection of one user, by the id the provider below gives users.
async fn send_to_user(
    ctx: Context,
    clients: Clients,
    user: String,
    text: String,
) -> Result<(), HubError> {
    let from = ctx.user_identifier().unwrap_or_default().to_owned();
    clients.user(user).send("Notice", (from, text)).await?;
    Ok(())
}

/// Registered with an admin-only policy: the method body never sees other callers.
async fn announce(clients: Clients, text: String) -> Result<(), HubError> {
    clients.all().send("Notice", ("admin", text)).await?;
    Ok(())
}

fn hub(secret: &[u8]) -> Hub {
    Hub::builder()
        // Tokens come in `Authorization: Bearer` or, for WebSockets and SSE, `access_token`.
        .authenticator(JwtAuthenticator::hs256(secret))
        .require(Policy::authenticated())
        // `Clients::user` and `Context::user_identifier` use the e-mail claim, not `sub`.
        .user_id_provider(|identity| identity.claim("email").map(str::to_owned))
        .method("WhoAmI", who_am_i)
        .method("SendToUser", send_to_user)
        .authorized_method("Announce", Policy::claim("role", "admin"), announce)
        .build()
}

/// A signed token for `user`, valid for an hour.
fn mint_token(secret: &[u8], user: &str) -> String {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let mut claims = serde_json::json!({
        "sub": user,
        "name": user,
        "email": format!("{user}@example.com"),
        "exp": expires.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
    });
    if user == "admin" {
        claims["role"] = "admin".into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .expect("HS256 signing cannot fail")
}

#[derive(Deserialize)]
struct SignIn {
    user: String,
}

type Refusal = (StatusCode, Json<serde_json::Value>);

fn app(hub: &Hub, secret: Vec<u8>) -> Router {
    let token = move |Query(SignIn { user }): Query<SignIn>| async move {
        let valid = (1..=32).contains(&user.len())
            && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        match valid {
            true => Ok(mint_token(&secret, &user)),
            false => Err::<_, Refusal>((
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "user must be 1-32 letters, digits or '-'"})),
            )),
        }
    };
    Router::new()
        .route("/token", get(token))
        .nest_service(HUB_PATH, hub.service())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::init_logging();
    let secret = match std::env::var("JWT_SECRET") {
        Ok(secret) if secret.len() >= 32 => secret.into_bytes(),
        Ok(_) => panic!("JWT_SECRET must be at least 32 bytes"),
        Err(_) => rand::random::<[u8; 32]>().to_vec(),
    };
    let hub = hub(&secret);
    let addr = signalr_examples::listen_addr(5000);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("auth example: hub at http://{addr}{HUB_PATH}, tokens at http://{addr}/token?user=NAME (Ctrl-C to stop)");
    axum::serve(listener, app(&hub, secret))
        .with_graceful_shutdown(async move {
            signalr_core::shutdown_signal().await;
            hub.shutdown().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::test_util::TestClient;

    const SECRET: &[u8] = b"a test secret of thirty-two bytes";

    /// The identity a minted token yields, as the hub's authenticator reads it.
    async fn signed_in(hub: &Hub, user: &str) -> TestClient {
        let identity = JwtAuthenticator::hs256(SECRET)
            .verify(&mint_token(SECRET, user))
            .unwrap();
        TestClient::builder()
            .identity(identity)
            .connect(hub)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn negotiate_needs_a_token_signed_with_the_secret() {
        let addr =
            signalr_examples::serve_app_on_free_port(app(&hub(SECRET), SECRET.to_vec())).await;
        let negotiate = |token: Option<String>| async move {
            let bearer = token.map(|token| format!("Bearer {token}"));
            let headers: Vec<_> = bearer
                .iter()
                .map(|b| ("Authorization", b.as_str()))
                .collect();
            signalr_examples::negotiate(addr, HUB_PATH, "", &headers)
                .await
                .unwrap()
        };
        assert_eq!(negotiate(None).await.0, 401, "anonymous");
        let forged = mint_token(b"another secret, also 32 bytes long", "alice");
        assert_eq!(negotiate(Some(forged)).await.0, 401, "forged");

        // A token from the demo sign-in opens the hub.
        let get = |path: &'static str| signalr_examples::request(addr, "GET", path, &[]);
        let (status, token) = get("/token?user=alice").await.unwrap();
        assert_eq!(status, 200);
        let (status, body) = negotiate(Some(token)).await;
        assert_eq!(status, 200);
        assert!(body.contains("connectionToken"), "{body}");
        // Names it would not put in a token are refused with a JSON error.
        let (status, body) = get("/token?user=a%20b").await.unwrap();
        assert_eq!(status, 400);
        assert!(body.contains(r#""error""#), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn who_am_i_reads_the_token_and_the_user_id_is_the_email() {
        let hub = hub(SECRET);
        let mut admin = signed_in(&hub, "admin").await;
        let profile: Profile = admin.invoke("WhoAmI", ()).await.unwrap();
        assert_eq!(
            profile,
            Profile {
                user_id: Some("admin@example.com".into()),
                name: Some("admin".into()),
                roles: vec!["admin".into()],
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_is_reached_on_every_connection_by_email() {
        let hub = hub(SECRET);
        let mut alice_tab1 = signed_in(&hub, "alice").await;
        let mut alice_tab2 = signed_in(&hub, "alice").await;
        let mut bob = signed_in(&hub, "bob").await;
        let sent: Option<()> = bob
            .invoke("SendToUser", ("alice@example.com", "hi"))
            .await
            .unwrap();
        assert_eq!(sent, None);
        for tab in [&mut alice_tab1, &mut alice_tab2] {
            let (target, args) = tab.recv_invocation().await.unwrap();
            assert_eq!(target, "Notice");
            let from: String = args[0].deserialize().unwrap();
            assert_eq!(from, "bob@example.com");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_admins_may_announce() {
        let hub = hub(SECRET);
        let mut alice = signed_in(&hub, "alice").await;
        assert_eq!(
            alice.invoke::<()>("Announce", ("hello",)).await,
            Err("Failed to invoke 'Announce' because user is unauthorized".to_owned())
        );
        let mut admin = signed_in(&hub, "admin").await;
        admin.invoke::<()>("Announce", ("hello",)).await.unwrap();
        let (target, args) = alice.recv_invocation().await.unwrap();
        assert_eq!(target, "Notice");
        assert_eq!(args[1].deserialize::<String>().unwrap(), "hello");
    }
}
