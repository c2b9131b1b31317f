//! The API an application builds on, through the test kit and over real sockets: state, the
//! HTTP request, per-connection items, failing extractors, typed clients, and the reference's
//! 401/403 refusals.

use std::sync::Arc;

use signalr_core::protocol::Protocol;
use signalr_core::test_util::TestClient;
use signalr_core::{
    client_methods, Context, FromContext, HttpRequest, Hub, HubError, Item, State, TypedClients,
};

#[derive(Clone)]
struct App {
    greeting: Arc<str>,
}

async fn greet(State(app): State<App>, name: String) -> String {
    format!("{}, {name}!", app.greeting)
}

#[tokio::test]
async fn state_reaches_methods_and_hooks_and_missing_state_fails_the_call_only() {
    async fn counter(State(count): State<u64>) -> u64 {
        count
    }
    let hub = Hub::builder()
        .with_state(App {
            greeting: "Hello".into(),
        })
        .method("Greet", greet)
        .method("Counter", counter)
        .on_connected(|ctx: Context| async move {
            let app = ctx.state::<App>().expect("state in hooks too");
            ctx.insert_item(format!("{} on connect", app.greeting));
        })
        .build();
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let mut client = TestClient::builder()
            .protocol(protocol)
            .connect(&hub)
            .await
            .unwrap();
        assert_eq!(
            client.invoke::<String>("Greet", ("Ada",)).await.as_deref(),
            Ok("Hello, Ada!")
        );
        // No u64 state was set: that call fails, generically, and the connection goes on.
        assert_eq!(
            client.invoke::<u64>("Counter", ()).await,
            Err("An unexpected error occurred invoking 'Counter' on the server.".to_owned())
        );
        assert_eq!(
            client.invoke::<String>("Greet", ("Bob",)).await.as_deref(),
            Ok("Hello, Bob!")
        );
    }
    assert_eq!(
        hub.context().state::<App>().unwrap().greeting.as_ref(),
        "Hello"
    );
}

/// An application's own extractor that refuses: the caller must be named in a header.
struct Caller(String);

impl FromContext for Caller {
    type Rejection = HubError;
    fn from_context(context: &Context) -> Result<Self, HubError> {
        context
            .http_request()
            .and_then(|request| request.headers().get("x-caller"))
            .and_then(|value| value.to_str().ok())
            .map(|name| Caller(name.to_owned()))
            .ok_or_else(|| HubError::new("Say who you are."))
    }
}

#[tokio::test]
async fn a_refusing_extractor_becomes_the_error_completion_and_the_method_does_not_run() {
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = ran.clone();
    let hub = Hub::builder()
        .method("Whoami", move |Caller(name): Caller| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                name
            }
        })
        .build();
    let mut anonymous = TestClient::connect(&hub).await.unwrap();
    assert_eq!(
        anonymous.invoke::<String>("Whoami", ()).await,
        Err("An unexpected error occurred invoking 'Whoami' on the server. HubException: Say who you are.".to_owned())
    );
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    let request = http::Request::builder()
        .uri("/hub?room=42")
        .header("x-caller", "ada")
        .body(())
        .unwrap();
    let mut named = TestClient::builder()
        .request(HttpRequest::from_request(&request))
        .connect(&hub)
        .await
        .unwrap();
    assert_eq!(
        named.invoke::<String>("Whoami", ()).await.as_deref(),
        Ok("ada")
    );
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[derive(Clone, Debug, PartialEq)]
struct Nickname(String);

#[tokio::test]
async fn items_live_as_long_as_their_connection_and_belong_to_it_alone() {
    let hub = Hub::builder()
        .method("SetNick", |ctx: Context, nick: String| async move {
            ctx.insert_item(Nickname(nick));
        })
        .method("Nick", |Item(Nickname(nick)): Item<Nickname>| async move {
            nick
        })
        .method("MaybeNick", |nick: Option<Item<Nickname>>| async move {
            nick.map(|Item(Nickname(nick))| nick)
        })
        .build();
    let mut first = TestClient::connect(&hub).await.unwrap();
    let mut second = TestClient::connect(&hub).await.unwrap();
    assert_eq!(
        first.invoke::<Option<String>>("MaybeNick", ()).await,
        Ok(None)
    );
    assert!(first.invoke::<String>("Nick", ()).await.is_err());
    first.invoke::<()>("SetNick", ("ada",)).await.unwrap();
    assert_eq!(
        first.invoke::<String>("Nick", ()).await.as_deref(),
        Ok("ada")
    );
    assert_eq!(
        first.invoke::<Option<String>>("MaybeNick", ()).await,
        Ok(Some("ada".to_owned()))
    );
    // Another connection has none.
    assert_eq!(
        second.invoke::<Option<String>>("MaybeNick", ()).await,
        Ok(None)
    );
}

client_methods! {
    /// What the test's clients receive.
    #[derive(Debug, Clone)]
    pub enum RoomClient {
        ReceiveMessage { user: String, text: String, at: u64 },
        UserLeft { user: String },
        Reset {},
    }
}

async fn say(
    clients: TypedClients<RoomClient>,
    user: String,
    text: String,
) -> Result<(), HubError> {
    clients
        .others()
        .send(RoomClient::ReceiveMessage { user, text, at: 7 })
        .await?;
    clients.caller().send(RoomClient::Reset {}).await?;
    Ok(())
}

#[tokio::test]
async fn typed_clients_send_the_declared_method_with_its_arguments_in_order() {
    let hub = Hub::builder().method("Say", say).build();
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let mut speaker = TestClient::builder()
            .protocol(protocol)
            .connect(&hub)
            .await
            .unwrap();
        let mut listener = TestClient::builder()
            .protocol(protocol)
            .connect(&hub)
            .await
            .unwrap();
        speaker.invoke::<()>("Say", ("ada", "hi")).await.unwrap();
        let (target, arguments) = listener.recv_invocation().await.unwrap();
        assert_eq!(target, "ReceiveMessage");
        assert_eq!(arguments.len(), 3);
        assert_eq!(arguments[0].deserialize::<String>().unwrap(), "ada");
        assert_eq!(arguments[1].deserialize::<String>().unwrap(), "hi");
        assert_eq!(arguments[2].deserialize::<u64>().unwrap(), 7);
        let (target, arguments) = speaker.recv_invocation().await.unwrap();
        assert_eq!((target.as_str(), arguments.len()), ("Reset", 0));

        // From outside a method, through a typed hub context.
        let context = hub.context().typed::<RoomClient>();
        context
            .client(listener.connection_id())
            .send(RoomClient::UserLeft { user: "ada".into() })
            .await
            .unwrap();
        let (target, arguments) = listener.recv_invocation().await.unwrap();
        assert_eq!(target, "UserLeft");
        assert_eq!(arguments[0].deserialize::<String>().unwrap(), "ada");
        speaker.close().await;
        listener.close().await;
    }
}

#[tokio::test]
async fn the_http_request_reaches_the_hub_over_a_real_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as Ws;

    async fn request_info(request: HttpRequest) -> serde_json::Value {
        serde_json::json!({
            "method": request.method().as_str(),
            "room": request.query("room"),
            "header": request.headers().get("x-app").and_then(|v| v.to_str().ok()),
            "cookie": request.cookie("session"),
            "loopback": request.remote_addr().map(|a| a.ip().is_loopback()),
        })
    }
    let hub = Hub::builder().method("RequestInfo", request_info).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = hub.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        signalr_core::serve_with_shutdown(listener, "/hub", served, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut ws = format!("ws://127.0.0.1:{port}/hub?room=7")
        .into_client_request()
        .unwrap();
    ws.headers_mut().insert("x-app", "yes".parse().unwrap());
    ws.headers_mut()
        .insert("cookie", "theme=dark; session=s3cr3t".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    socket
        .send(Ws::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await
        .unwrap();
    socket
        .send(Ws::text(
            "{\"type\":1,\"invocationId\":\"1\",\"target\":\"RequestInfo\",\"arguments\":[]}\u{1e}",
        ))
        .await
        .unwrap();
    let mut completion = None;
    while completion.is_none() {
        let frame = socket.next().await.unwrap().unwrap();
        for record in frame.to_text().unwrap().split('\u{1e}') {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(record) else {
                continue;
            };
            if value["type"] == 3 {
                completion = Some(value);
            }
        }
    }
    assert_eq!(
        completion.unwrap()["result"],
        serde_json::json!({"method": "GET", "room": "7", "header": "yes", "cookie": "s3cr3t", "loopback": true})
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn refusals_are_the_reference_ones_empty_with_a_bearer_challenge() {
    use signalr_core::{AuthError, AuthRequest, Identity, Policy};

    let only_known = |request: &AuthRequest<'_>| match request.bearer_token() {
        None => Ok(None),
        Some(name @ ("ada" | "bob")) => Ok(Some(Identity::new(name))),
        Some(_) => Err(AuthError::new(
            "invalid token: Base64 error: Invalid last symbol",
        )),
    };
    let hub = Hub::builder()
        .authenticator(only_known)
        .require(Policy::from_fn(|identity| {
            identity.and_then(Identity::user_id) == Some("ada")
        }))
        .build();
    let call = |token: Option<&'static str>| {
        let hub = hub.clone();
        async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let mut request = http::Request::builder()
                .method("POST")
                .uri("/negotiate?negotiateVersion=1");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let response = hub.service().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, challenge, body)
        }
    };
    let (status, challenge, body) = call(None).await;
    assert_eq!(
        (status, challenge.as_deref(), body.len()),
        (401, Some("Bearer"), 0)
    );
    // A refused credential: the reason stays in the log, the client sees only the challenge.
    let (status, challenge, body) = call(Some("forged")).await;
    assert_eq!(
        (status, challenge.as_deref(), body.len()),
        (401, Some("Bearer error=\"invalid_token\""), 0)
    );
    let (status, challenge, body) = call(Some("bob")).await;
    assert_eq!((status, challenge, body.len()), (403, None, 0));
    assert_eq!(call(Some("ada")).await.0, 200);
}

/// A value whose `Serialize` fails, or panics: the method ran, its answer cannot be encoded.
struct Unencodable {
    panics: bool,
}

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        if self.panics {
            panic!("this value panics while it is serialized");
        }
        Err(serde::ser::Error::custom("this value cannot be encoded"))
    }
}

/// Runs the rest of every invocation on a task of its own, as a filter may.
struct Elsewhere;

impl signalr_core::HubFilter for Elsewhere {
    fn invoke<'a>(
        &'a self,
        invocation: signalr_core::HubInvocation,
        next: signalr_core::InvokeNext,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = signalr_core::InvocationOutcome> + Send + 'a>,
    > {
        Box::pin(async move {
            match tokio::spawn(next.run(invocation)).await {
                Ok(outcome) => outcome,
                Err(failed) => std::panic::resume_unwind(failed.into_panic()),
            }
        })
    }
}

/// A method that panics, or whose result cannot be encoded (its `Serialize` fails or panics),
/// is answered with the reference's generic error Completion for its own invocation id, and
/// the connection goes on; with and without a filter, in both protocols.
#[tokio::test]
async fn a_method_that_panics_or_whose_result_cannot_be_encoded_gets_an_error_completion() {
    for filtered in [false, true] {
        let mut builder = Hub::builder()
            .method("Panics", || async {
                if true {
                    panic!("the method panics");
                }
                1
            })
            .method("Unencodable", || async { Unencodable { panics: false } })
            .method("PanicsWhenEncoded", || async {
                Unencodable { panics: true }
            })
            .method("Echo", |text: String| async move { text });
        if filtered {
            builder = builder.filter(Elsewhere);
        }
        let hub = builder.build();
        for protocol in Protocol::ALL {
            let mut client = TestClient::builder()
                .protocol(protocol)
                .connect(&hub)
                .await
                .unwrap();
            for method in ["Panics", "Unencodable", "PanicsWhenEncoded"] {
                let answer = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    client.invoke::<i32>(method, ()),
                )
                .await
                .unwrap_or_else(|_| {
                    panic!("{method} ({protocol}, filtered: {filtered}) got no Completion")
                });
                assert_eq!(
                    answer,
                    Err(format!(
                        "An unexpected error occurred invoking '{method}' on the server."
                    )),
                    "{method} ({protocol}, filtered: {filtered})"
                );
                assert_eq!(
                    client
                        .invoke::<String>("Echo", ("still here",))
                        .await
                        .as_deref(),
                    Ok("still here"),
                    "after {method} ({protocol}, filtered: {filtered})"
                );
            }
        }
    }
}
