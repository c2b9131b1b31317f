//! Hub behaviour that needs no socket, through the in-process test kit: argument errors,
//! protocol errors, hooks, streaming mode mismatches, cancellation, client-result rules.
//! Each test runs on both protocols where the protocol could matter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use signalr_core::protocol::{CancelInvocation, CompletionResult, Message, Protocol};
use signalr_core::test_util::TestClient;
use signalr_core::{Context, Hub, HubBuilder, HubError};

async fn echo(value: String) -> String {
    value
}

async fn numbers(count: u32) -> impl futures_util::Stream<Item = u32> {
    futures_util::stream::iter(0..count)
}

async fn endless() -> impl futures_util::Stream<Item = u32> {
    futures_util::stream::unfold(0u32, |n| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((n, n + 1))
    })
}

fn echo_hub() -> HubBuilder {
    Hub::builder()
        .method("Echo", echo)
        .method("Numbers", numbers)
        .method("Endless", endless)
}

async fn connect(hub: &Hub, protocol: Protocol) -> TestClient {
    TestClient::builder()
        .protocol(protocol)
        .connect(hub)
        .await
        .unwrap()
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

/// A blocking call of `target` with no arguments, under `id`.
fn call_without_arguments(id: &str, target: &str) -> signalr_core::protocol::Invocation<[(); 0]> {
    signalr_core::protocol::Invocation {
        headers: Default::default(),
        invocation_id: Some(id.into()),
        target: target.into(),
        arguments: [(); 0],
        stream_ids: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn bad_arguments_and_unknown_methods_leave_the_connection_usable() {
    for protocol in PROTOCOLS {
        let hub = echo_hub().build();
        let mut client = connect(&hub, protocol).await;
        // Wrong argument type: an error Completion.
        assert_eq!(
            client.invoke::<String>("Echo", (5,)).await,
            Err("Failed to invoke 'Echo' due to an error on the server.".to_owned())
        );
        // A streaming call to a non-streaming method, and the reverse.
        assert_eq!(
            client.stream::<String>("Echo", ("x",)).await,
            Err("The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.".to_owned())
        );
        assert_eq!(
            client.invoke::<u32>("Numbers", (3,)).await,
            Err("The client attempted to invoke the streaming 'Numbers' method with a non-streaming invocation.".to_owned())
        );
        // A non-blocking call to an unknown method: nothing comes back, not even an error.
        client.send("Nope", ()).await;
        assert_eq!(
            client.invoke::<String>("Echo", ("ok",)).await.as_deref(),
            Ok("ok")
        );
        assert_eq!(
            client.stream::<u32>("Numbers", (3,)).await,
            Ok(vec![0, 1, 2])
        );
        assert_eq!(
            client.invoke::<String>("Missing", ()).await,
            Err("Failed to invoke 'Missing' due to an error on the server. HubException: Method does not exist.".to_owned())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_malformed_record_closes_with_the_generic_error() {
    let hub = echo_hub().build();
    let mut client = connect(&hub, Protocol::Json).await;
    client.send_bytes(&b"{\"type\":1,\x1e"[..]).await;
    let close = client.closed().await.expect("a Close message");
    assert_eq!(
        close.error.as_deref(),
        Some("Connection closed with an error.")
    );
    assert!(close.allow_reconnect);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn hooks_run_once_and_see_the_connection() {
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let connected = events.clone();
    let disconnected = events.clone();
    let hub = echo_hub()
        .on_connected(move |ctx: Context| {
            let events = connected.clone();
            async move {
                events
                    .lock()
                    .unwrap()
                    .push(format!("connected {}", ctx.connection_id()));
                ctx.clients()
                    .caller()
                    .send("Welcome", (ctx.connection_id().to_owned(),))
                    .await
            }
        })
        .on_disconnected(move |ctx: Context, error: Option<String>| {
            let events = disconnected.clone();
            async move {
                events
                    .lock()
                    .unwrap()
                    .push(format!("disconnected {} {error:?}", ctx.connection_id()));
            }
        })
        .build();
    let mut client = connect(&hub, Protocol::Json).await;
    let id = client.connection_id().to_owned();
    let (target, arguments) = client.recv_invocation().await.unwrap();
    assert_eq!(target, "Welcome");
    assert_eq!(arguments[0].deserialize::<String>().unwrap(), id);
    // A graceful client Close ends the connection without an error.
    client.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        *events.lock().unwrap(),
        [format!("connected {id}"), format!("disconnected {id} None")]
    );
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failing_connect_hook_closes_without_reconnect() {
    let hub = echo_hub()
        .on_connected(|_ctx: Context| async { Err::<(), _>(HubError::new("not today")) })
        .build();
    let mut client = connect(&hub, Protocol::MessagePack).await;
    let close = client.closed().await.expect("a Close message");
    assert_eq!(
        close.error.as_deref(),
        Some("Connection closed with an error. HubException: not today")
    );
    assert!(!close.allow_reconnect);
}

#[tokio::test(start_paused = true)]
async fn uploads_the_method_does_not_take_get_the_reference_count_error() {
    let hub = echo_hub().build();
    let mut client = connect(&hub, Protocol::Json).await;
    client
        .send_bytes(&b"{\"type\":1,\"invocationId\":\"3\",\"target\":\"Echo\",\"arguments\":[\"x\"],\"streamIds\":[\"9\"]}\x1e"[..])
        .await;
    match client.recv().await {
        Some(Message::Completion(completion)) => assert_eq!(
            completion.result,
            CompletionResult::Error("An unexpected error occurred invoking 'Echo' on the server. HubException: Client sent 1 stream(s), Hub method expects 0.".to_owned())
        ),
        other => panic!("expected a Completion, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_live_invocation_id_cannot_be_reused_and_cancel_ends_the_stream() {
    for protocol in PROTOCOLS {
        let hub = echo_hub().build();
        let mut client = connect(&hub, protocol).await;
        let invocation = call_without_arguments("7", "Endless");
        let stream_invocation = Message::<_, ()>::StreamInvocation(invocation);
        client.send_message(&stream_invocation).await;
        assert!(matches!(client.recv().await, Some(Message::StreamItem(_))));
        client.send_message(&stream_invocation).await;
        let reused = loop {
            match client.recv().await.unwrap() {
                Message::Completion(completion) => break completion,
                Message::StreamItem(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(
            reused.result,
            CompletionResult::Error("Invocation ID '7' is already in use.".to_owned())
        );
        client
            .send_message(&Message::<(), ()>::CancelInvocation(CancelInvocation {
                headers: Default::default(),
                invocation_id: "7".into(),
            }))
            .await;
        let ended = loop {
            match client.recv().await.unwrap() {
                Message::Completion(completion) => break completion,
                Message::StreamItem(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(ended.invocation_id, "7");
        assert_eq!(
            ended.result,
            CompletionResult::Void,
            "ends without an error"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn client_results_are_refused_in_on_connected() {
    let refused = Arc::new(Mutex::new(None));
    let seen = refused.clone();
    let hub = echo_hub()
        .on_connected(move |ctx: Context| {
            let seen = seen.clone();
            async move {
                let answer = ctx
                    .clients()
                    .caller()
                    .invoke::<String, _>("Anything", ())
                    .await;
                *seen.lock().unwrap() = Some(answer.unwrap_err().to_string());
            }
        })
        .build();
    let _client = connect(&hub, Protocol::Json).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let message = refused.lock().unwrap().clone().unwrap();
    assert!(
        message.contains("Client results inside OnConnectedAsync Hub methods are not allowed."),
        "{message}"
    );
}

/// As in the reference, only the hub's own on_connected may not ask for client results. Code
/// elsewhere (an HTTP endpoint, a background task) may ask a connection that is still in its
/// on_connected: the question waits for the connection to start reading, and is answered.
#[tokio::test(start_paused = true)]
async fn a_client_result_asked_from_outside_during_on_connected_is_answered() {
    let hub = echo_hub()
        .on_connected(|_ctx: Context| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .build();
    let mut client = connect(&hub, Protocol::Json).await;
    let context = hub.context();
    let id = client.connection_id().to_owned();
    let asked = tokio::spawn(async move {
        context
            .clients()
            .client(id)
            .invoke::<String, _>("Name", ())
            .await
    });
    let question = loop {
        match client.recv().await.expect("the question") {
            Message::Invocation(question) => break question,
            Message::Ping => continue,
            other => panic!("expected the server's invocation, got {other:?}"),
        }
    };
    assert_eq!(question.target, "Name");
    let answer = Message::<(), _>::Completion(signalr_core::protocol::Completion {
        headers: Default::default(),
        invocation_id: question.invocation_id.expect("an invocation id"),
        result: CompletionResult::Value("kit"),
    });
    client.send_message(&answer).await;
    assert_eq!(asked.await.unwrap().unwrap(), "kit");
}

#[tokio::test(start_paused = true)]
async fn client_results_round_trip_through_the_kit() {
    async fn ask(ctx: Context) -> Result<String, signalr_core::Error> {
        ctx.clients().caller().invoke::<String, _>("Name", ()).await
    }
    let hub = echo_hub().method("Ask", ask).build();
    let mut client = connect(&hub, Protocol::MessagePack).await;
    let pending = {
        let invocation = call_without_arguments("1", "Ask");
        client
            .send_message(&Message::<_, ()>::Invocation(invocation))
            .await;
        client.recv().await.unwrap()
    };
    let Message::Invocation(question) = pending else {
        panic!("expected the server's invocation, got {pending:?}");
    };
    assert_eq!(question.target, "Name");
    let answer = Message::<(), _>::Completion(signalr_core::protocol::Completion {
        headers: Default::default(),
        invocation_id: question.invocation_id.unwrap(),
        result: CompletionResult::Value("kit"),
    });
    client.send_message(&answer).await;
    let completion = client.recv().await.unwrap();
    let Message::Completion(completion) = completion else {
        panic!("expected a Completion, got {completion:?}");
    };
    let CompletionResult::Value(value) = completion.result else {
        panic!("expected a value");
    };
    assert_eq!(value.deserialize::<String>().unwrap(), "kit");
}

/// A plain method's `Cancellation` is the connection's closing: it fires when the client
/// goes, not before, and a method that never asks for it is unaffected. A streaming method's
/// is its own, fired by the client's CancelInvocation (the test above) and by the close.
#[tokio::test(start_paused = true)]
async fn a_plain_method_sees_the_connection_close_through_its_cancellation() {
    for protocol in PROTOCOLS {
        let (seen, mut cancelled) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let waits = {
            let seen = seen.clone();
            move |cancel: signalr_core::Cancellation| {
                let seen = seen.clone();
                async move {
                    assert!(!cancel.is_cancelled(), "not cancelled while connected");
                    cancel.cancelled().await;
                    let _ = seen.send("plain");
                }
            }
        };
        let streams = move |cancel: signalr_core::Cancellation| {
            let seen = seen.clone();
            async move {
                tokio::spawn(async move {
                    cancel.cancelled().await;
                    let _ = seen.send("stream");
                });
                futures_util::stream::pending::<u32>()
            }
        };
        let hub = echo_hub()
            .method("Waits", waits)
            .method("Streams", streams)
            // "Waits" keeps its slot until the end; Echo needs another.
            .max_parallel_invocations(2)
            .build();
        let mut client = connect(&hub, protocol).await;
        client.send("Waits", ()).await;
        let invocation = call_without_arguments("s", "Streams");
        client
            .send_message(&Message::<_, ()>::StreamInvocation(invocation))
            .await;
        // The read loop carries on while both wait: the connection is not wedged.
        let echoed = client.invoke::<String>("Echo", ("still here",)).await;
        assert_eq!(echoed.as_deref(), Ok("still here"));
        // Within the client timeout (the kit's client sends no pings of its own).
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            cancelled.try_recv().is_err(),
            "nothing cancelled while connected"
        );
        client.close().await;
        let mut seen = Vec::new();
        for _ in 0..2 {
            let which = tokio::time::timeout(Duration::from_secs(60), cancelled.recv())
                .await
                .expect("cancelled once the connection closed")
                .unwrap();
            seen.push(which);
        }
        seen.sort_unstable();
        assert_eq!(seen, ["plain", "stream"], "{protocol:?}");
    }
}
