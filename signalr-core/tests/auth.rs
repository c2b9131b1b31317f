//! Authentication, authorization, users and groups over real sockets, and the JWT checks.
#![cfg(feature = "jwt")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use signalr_core::auth::JwtAuthenticator;
use signalr_core::{AuthError, AuthRequest, Context, Hub, HubBuilder, Identity, Policy};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
const RS: char = '\u{1e}';
const WAIT: Duration = Duration::from_secs(5);
const SECRET: &[u8] = b"test-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn jwt_checks_signature_time_issuer_and_audience() {
    let auth = JwtAuthenticator::hs256(SECRET)
        .issuer("https://issuer")
        .audience("chat");
    let good = json!({"sub": "alice", "name": "Alice", "role": ["admin", "dev"], "iss": "https://issuer", "aud": "chat", "exp": now() + 60});
    let identity = auth.verify(&hs256(good.clone())).unwrap();
    assert_eq!(identity.user_id(), Some("alice"));
    assert_eq!(identity.name(), Some("Alice"));
    assert!(identity.has_claim("role", "admin") && identity.has_claim("role", "dev"));
    assert_eq!(
        identity
            .expires_at()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        now() + 60
    );

    let with = |patch: Value| {
        let mut claims = good.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        hs256(claims)
    };
    for (case, token) in [
        ("expired", with(json!({"exp": now() - 10}))),
        ("not yet valid", with(json!({"nbf": now() + 600}))),
        ("wrong issuer", with(json!({"iss": "https://elsewhere"}))),
        ("wrong audience", with(json!({"aud": "other"}))),
        ("no expiry", {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove("exp");
            hs256(claims)
        }),
        (
            "bad signature",
            encode(
                &Header::new(Algorithm::HS256),
                &good,
                &EncodingKey::from_secret(b"other"),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.token".to_owned()),
    ] {
        assert!(auth.verify(&token).is_err(), "{case} was accepted");
    }
}

#[test]
fn jwt_rs256_with_a_public_key() {
    let auth = JwtAuthenticator::rs256_pem(&fixture("rsa-test-public.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&fixture("rsa-test-private.pem")).unwrap();
    let token = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "bob", "exp": now() + 60}),
        &key,
    )
    .unwrap();
    assert_eq!(auth.verify(&token).unwrap().user_id(), Some("bob"));
    // An HS256 token cannot pass as RS256 (no algorithm confusion).
    assert!(auth
        .verify(&hs256(json!({"sub": "bob", "exp": now() + 60})))
        .is_err());
    assert!(JwtAuthenticator::rs256_pem(b"not a key").is_err());
}

struct Server {
    port: u16,
    hub: Hub,
}

impl Server {
    async fn start(builder: HubBuilder) -> Server {
        let hub = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = hub.clone();
        tokio::spawn(async move {
            signalr_core::serve_with_shutdown(listener, "/hub", served, std::future::pending())
                .await
        });
        Server { port, hub }
    }

    /// Skip-negotiation WebSocket with the token in the query string, JSON handshake done.
    async fn connect(&self, token: Option<&str>) -> Result<Socket, String> {
        let query = token
            .map(|t| format!("?access_token={t}"))
            .unwrap_or_default();
        let (mut socket, _) = connect_async(format!("ws://127.0.0.1:{}/hub{query}", self.port))
            .await
            .map_err(|e| e.to_string())?;
        socket
            .send(Ws::text(format!(
                "{{\"protocol\":\"json\",\"version\":1}}{RS}"
            )))
            .await
            .unwrap();
        let handshake = next(&mut socket).await;
        assert_eq!(handshake, json!({}));
        Ok(socket)
    }
}

async fn next(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Ws::Text(text))) => {
                let record = text.as_str().trim_end_matches(RS);
                let value: Value = serde_json::from_str(record).unwrap();
                if value["type"] != 6 {
                    return value;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn invoke(socket: &mut Socket, id: &str, target: &str, args: Value) -> Value {
    let message = json!({"type": 1, "invocationId": id, "target": target, "arguments": args});
    socket
        .send(Ws::text(format!("{message}{RS}")))
        .await
        .unwrap();
    next(socket).await
}

async fn whoami(ctx: Context) -> Value {
    json!({"user": ctx.user_identifier(), "name": ctx.user().and_then(|u| u.name())})
}

async fn secret() -> &'static str {
    "42"
}

#[tokio::test]
async fn hub_and_method_policies_and_the_query_token() {
    let server = Server::start(
        Hub::builder()
            .authenticator(JwtAuthenticator::hs256(SECRET))
            .require(Policy::authenticated())
            .method("WhoAmI", whoami)
            .authorized_method("Secret", Policy::claim("role", "admin"), secret),
    )
    .await;
    let err = server.connect(None).await.unwrap_err();
    assert!(err.contains("401"), "{err}");
    let expired = hs256(json!({"sub": "x", "exp": now() - 5}));
    assert!(server
        .connect(Some(&expired))
        .await
        .unwrap_err()
        .contains("401"));

    let mut alice = server
        .connect(Some(&hs256(
            json!({"sub": "alice", "name": "Alice", "exp": now() + 60}),
        )))
        .await
        .unwrap();
    assert_eq!(
        invoke(&mut alice, "1", "WhoAmI", json!([])).await["result"],
        json!({"user": "alice", "name": "Alice"})
    );
    assert_eq!(
        invoke(&mut alice, "2", "Secret", json!([])).await["error"],
        "Failed to invoke 'Secret' because user is unauthorized"
    );
    let mut admin = server
        .connect(Some(&hs256(
            json!({"sub": "root", "role": "admin", "exp": now() + 60}),
        )))
        .await
        .unwrap();
    assert_eq!(
        invoke(&mut admin, "1", "Secret", json!([])).await["result"],
        "42"
    );
}

#[tokio::test]
async fn an_authenticated_caller_failing_the_hub_policy_gets_403() {
    let server = Server::start(
        Hub::builder()
            .authenticator(JwtAuthenticator::hs256(SECRET))
            .require(Policy::claim("plan", "pro"))
            .method("WhoAmI", whoami),
    )
    .await;
    let free = hs256(json!({"sub": "a", "plan": "free", "exp": now() + 60}));
    assert!(server
        .connect(Some(&free))
        .await
        .unwrap_err()
        .contains("403"));
    let pro = hs256(json!({"sub": "a", "plan": "pro", "exp": now() + 60}));
    assert!(server.connect(Some(&pro)).await.is_ok());
}

#[tokio::test]
async fn closes_when_the_token_expires_and_maps_user_ids() {
    // A custom authenticator (a closure) and user-id provider.
    let authenticator = |request: &AuthRequest<'_>| -> Result<Option<Identity>, AuthError> {
        match request.bearer_token() {
            Some("short") => Ok(Some(
                Identity::new("u1")
                    .with_claim("email", "u1@example.com")
                    .with_expiry(SystemTime::now() + Duration::from_millis(600)),
            )),
            Some(other) => Err(AuthError::new(format!("unknown token {other}"))),
            None => Ok(None),
        }
    };
    let server = Server::start(
        Hub::builder()
            .authenticator(authenticator)
            .user_id_provider(|identity: &Identity| identity.claim("email").map(str::to_owned))
            .close_on_authentication_expiration(true)
            .method("WhoAmI", whoami),
    )
    .await;
    let mut socket = server.connect(Some("short")).await.unwrap();
    assert_eq!(
        invoke(&mut socket, "1", "WhoAmI", json!([])).await["result"]["user"],
        "u1@example.com"
    );
    assert_eq!(
        server
            .hub
            .context()
            .presence()
            .online_users()
            .await
            .unwrap(),
        ["u1@example.com"]
    );
    let close = next(&mut socket).await;
    assert_eq!(
        close,
        json!({"type": 7, "error": "Authentication expired.", "allowReconnect": true})
    );
    // Anonymous is allowed here (no hub policy): no user id.
    let mut anonymous = server.connect(None).await.unwrap();
    assert_eq!(
        invoke(&mut anonymous, "1", "WhoAmI", json!([])).await["result"],
        json!({"user": null, "name": null})
    );
    assert!(server
        .connect(Some("bogus"))
        .await
        .unwrap_err()
        .contains("401"));
}

async fn join(ctx: Context, group: String) -> Result<(), signalr_core::Error> {
    ctx.groups().add(ctx.connection_id(), &group).await
}

#[tokio::test]
async fn joins_racing_disconnects_leave_no_member_behind() {
    let server = Server::start(Hub::builder().method("Join", join)).await;
    let presence = server.hub.context().presence();
    let groups = server.hub.context().groups();
    let mut ids = Vec::new();
    for round in 0..20 {
        let mut socket = server.connect(None).await.unwrap();
        // Learn the id through presence: the only member of a fresh group.
        invoke(&mut socket, "1", "Join", json!([format!("probe{round}")])).await;
        let id = presence
            .group_members(&format!("probe{round}"))
            .await
            .unwrap()[0]
            .clone();
        ids.push(id.clone());
        // Add the connection to many groups from outside while it disconnects.
        let adder = {
            let groups = groups.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for g in 0..200 {
                    groups.add(&id, &format!("g{g}")).await.unwrap();
                }
            })
        };
        drop(socket);
        adder.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.hub.connection_count() != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for g in 0..200 {
        assert_eq!(
            presence.group_size(&format!("g{g}")).await.unwrap(),
            0,
            "g{g} kept a member"
        );
    }
    for round in 0..20 {
        assert!(presence
            .group_members(&format!("probe{round}"))
            .await
            .unwrap()
            .is_empty());
    }
    assert!(presence
        .connection_groups(&ids[0])
        .await
        .unwrap()
        .is_empty());
}

/// Records the order filters run in, and refuses connections without a user.
struct Recorder {
    name: &'static str,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl signalr_core::HubFilter for Recorder {
    fn on_connected<'a>(
        &'a self,
        context: Context,
        next: signalr_core::ConnectNext,
    ) -> signalr_core::BoxFuture<'a, Result<(), signalr_core::HubError>> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} connect in", self.name));
            if context.user_identifier().is_none() {
                return Err(signalr_core::HubError::new("Sign in first."));
            }
            let result = next.run(context).await;
            self.log
                .lock()
                .unwrap()
                .push(format!("{} connect out", self.name));
            result
        })
    }

    fn on_disconnected<'a>(
        &'a self,
        context: Context,
        error: Option<String>,
        next: signalr_core::DisconnectNext,
    ) -> signalr_core::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} disconnect", self.name));
            next.run((context, error)).await
        })
    }
}

#[tokio::test]
async fn connect_and_disconnect_filters_wrap_the_hooks_in_order() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_log = log.clone();
    let server = Server::start(
        Hub::builder()
            .authenticator(JwtAuthenticator::hs256(SECRET))
            .filter(Recorder {
                name: "outer",
                log: log.clone(),
            })
            .filter(Recorder {
                name: "inner",
                log: log.clone(),
            })
            .on_connected(move |_ctx: Context| {
                let log = hook_log.clone();
                async move { log.lock().unwrap().push("hook".to_owned()) }
            })
            .method("WhoAmI", whoami),
    )
    .await;
    // Anonymous: the outer filter refuses before the hook runs.
    let mut anonymous = server.connect(None).await.unwrap();
    assert_eq!(
        next(&mut anonymous).await,
        json!({"type": 7, "error": "Connection closed with an error. HubException: Sign in first."})
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.hub.connection_count() != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        log.lock().unwrap().drain(..).collect::<Vec<_>>(),
        ["outer connect in", "outer disconnect", "inner disconnect"]
    );

    let token = hs256(json!({"sub": "alice", "exp": now() + 60}));
    let mut socket = server.connect(Some(&token)).await.unwrap();
    assert_eq!(
        invoke(&mut socket, "1", "WhoAmI", json!([])).await["result"]["user"],
        "alice"
    );
    drop(socket);
    let deadline = tokio::time::Instant::now() + WAIT;
    while log.lock().unwrap().len() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer connect in",
            "inner connect in",
            "hook",
            "inner connect out",
            "outer connect out",
            "outer disconnect",
            "inner disconnect"
        ]
    );
}
