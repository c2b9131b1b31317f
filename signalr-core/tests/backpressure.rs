//! What a connection does when the hub cannot keep up with a client, or a client with the
//! hub: upload streams against the parallel-invocation limit, a read loop held up by a busy
//! slot, and a client too slow to read what it is sent. In virtual time, through the test kit.

use std::time::Duration;

use futures_util::StreamExt;
use signalr_core::protocol::{
    Completion, CompletionResult, Headers, Invocation, Message, NoValue, Protocol, StreamItem,
};
use signalr_core::test_util::{ServerMessage, TestClient};
use signalr_core::{Hub, HubError, UploadStream};

mod common;
use common::Logs;

async fn echo(value: String) -> String {
    value
}

async fn sum(mut amounts: UploadStream<i64>) -> Result<i64, HubError> {
    let mut total = 0;
    while let Some(amount) = amounts.next().await {
        total += amount?;
    }
    Ok(total)
}

async fn never_reads(_amounts: UploadStream<i64>) -> i64 {
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    0
}

async fn busy_for_two_hours() {
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
}

fn upload_invocation(id: &str, target: &str, stream: &str) -> Message<Vec<NoValue>, NoValue> {
    Message::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: Some(id.into()),
        target: target.into(),
        arguments: Vec::new(),
        stream_ids: vec![stream.into()],
    })
}

fn item(stream: &str, value: i64) -> Message<Vec<NoValue>, i64> {
    Message::StreamItem(StreamItem {
        headers: Headers::new(),
        invocation_id: stream.into(),
        item: value,
    })
}

fn end_of(stream: &str) -> Message<Vec<NoValue>, NoValue> {
    Message::Completion(Completion {
        headers: Headers::new(),
        invocation_id: stream.into(),
        result: CompletionResult::Void,
    })
}

async fn completion_of(client: &mut TestClient, id: &str) -> ServerMessage {
    loop {
        match client.recv().await.expect("the connection stays open") {
            Message::Completion(c) if c.invocation_id == id => return Message::Completion(c),
            _ => continue,
        }
    }
}

/// As in the reference, a method that takes an upload stream does not hold one of the
/// connection's parallel-invocation slots: with the default limit of one, a client can still
/// call other methods while its upload runs (before, the Echo below was never answered).
#[tokio::test(start_paused = true)]
async fn an_upload_in_progress_does_not_hold_the_only_invocation_slot() {
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let hub = Hub::builder()
            .method("Sum", sum)
            .method("Echo", echo)
            .build();
        assert_eq!(hub.options().max_parallel_invocations, 1);
        let mut client = TestClient::builder()
            .protocol(protocol)
            .connect(&hub)
            .await
            .unwrap();
        client
            .send_message(&upload_invocation("sum", "Sum", "s"))
            .await;
        client.send_message(&item("s", 40)).await;
        let echoed = tokio::time::timeout(
            Duration::from_secs(60),
            client.invoke::<String>("Echo", ("hi",)),
        )
        .await
        .expect("Echo is answered while the upload is open");
        assert_eq!(echoed.as_deref(), Ok("hi"));
        client.send_message(&item("s", 2)).await;
        client.send_message(&end_of("s")).await;
        let Message::Completion(done) = completion_of(&mut client, "sum").await else {
            unreachable!()
        };
        let CompletionResult::Value(total) = done.result else {
            panic!("Sum failed: {:?}", done.result)
        };
        assert_eq!(total.deserialize::<i64>().unwrap(), 42);
    }
}

/// With every slot busy, the read loop waits (the reference does the same): the client's next
/// invocation is answered once the slot frees, two hours later. The connection is neither
/// closed for "not sending pings" it could not have been read sending, nor silent: one
/// warning names the cause.
#[tokio::test(start_paused = true)]
async fn a_read_loop_waiting_for_a_busy_slot_is_logged_once_and_not_timed_out() {
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::DEBUG);
    let hub = Hub::builder()
        .method("Busy", busy_for_two_hours)
        .method("Echo", echo)
        .build();
    let mut client = TestClient::connect(&hub).await.unwrap();
    client.send("Busy", ()).await;
    let started = tokio::time::Instant::now();
    let echoed = client.invoke::<String>("Echo", ("still here",)).await;
    assert_eq!(echoed.as_deref(), Ok("still here"));
    assert!(started.elapsed() >= Duration::from_secs(2 * 3600));
    assert_eq!(logs.count("every invocation slot is busy"), 1);
    assert_eq!(logs.count("ClientTimeoutInterval"), 0);
    // The client timeout runs again from the end of the dispatch: a client that then goes
    // quiet is let go 30 s later, as always.
    assert!(
        tokio::time::timeout(Duration::from_secs(31), client.closed())
            .await
            .is_ok(),
        "a silent client is timed out once the hub reads again"
    );
}

/// A method that never reads its upload fills the stream's buffer; the read loop then waits
/// for it (backpressure, as in the reference), and says so once.
#[tokio::test(start_paused = true)]
async fn an_upload_nobody_reads_is_backpressure_and_is_logged_once() {
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::DEBUG);
    let hub = Hub::builder()
        .method("NeverReads", never_reads)
        .method("Echo", echo)
        .stream_buffer_capacity(2)
        .build();
    let mut client = TestClient::connect(&hub).await.unwrap();
    client
        .send_message(&upload_invocation("up", "NeverReads", "s"))
        .await;
    for value in 0..5 {
        client.send_message(&item("s", value)).await;
    }
    // Read only after the method stops, two hours later: Echo waits behind the full buffer.
    let started = tokio::time::Instant::now();
    let echoed = client.invoke::<String>("Echo", ("later",)).await;
    assert_eq!(echoed.as_deref(), Ok("later"));
    assert!(started.elapsed() >= Duration::from_secs(2 * 3600));
    assert_eq!(logs.count("upload stream buffer full"), 1);
}

/// A client that stops reading is closed once its queue fills; every later send to it fails
/// quietly. One warning, one count (before: a warning per broadcast that found it full).
#[tokio::test(start_paused = true)]
async fn a_slow_client_is_closed_logged_and_counted_once() {
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::DEBUG);
    let hub = Hub::builder()
        .method("Echo", echo)
        .outbound_queue_capacity(4)
        .build();
    let client = TestClient::connect(&hub).await.unwrap();
    let context = hub.context();
    for n in 0..2_000u32 {
        // A broadcast never waits for a slow client: it finds the queue full, or closed.
        context.clients().all().send("Tick", (n,)).await.unwrap();
        // Now and then the connection's own tasks run: the close goes ahead meanwhile.
        if n % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(hub.slow_client_closes(), 1);
    assert_eq!(logs.count("reads too slowly"), 1);
    drop(client);
}

/// Invocations a client sends faster than it reads: once the connection's queue and the
/// client's buffer are full, a finished method's Completion waits for room (holding the slot,
/// so the next invocation waits too), and every one arrives, in the order they were sent.
#[tokio::test(start_paused = true)]
async fn completions_that_find_the_queue_full_wait_for_room_and_keep_their_order() {
    let hub = Hub::builder()
        .method("Echo", echo)
        .outbound_queue_capacity(2)
        .build();
    let mut client = TestClient::connect(&hub).await.unwrap();
    // More than the client's buffer (1,024 records) and the queue together.
    const CALLS: usize = 1_500;
    for n in 0..CALLS {
        let call: Message<Vec<String>, NoValue> = Message::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: Some(n.to_string().into()),
            target: "Echo".into(),
            arguments: vec![format!("value {n}")],
            stream_ids: Vec::new(),
        });
        client.send_message(&call).await;
    }
    for n in 0..CALLS {
        match client.recv().await.expect("the connection stays open") {
            Message::Completion(done) => {
                assert_eq!(done.invocation_id, n.to_string());
                let CompletionResult::Value(value) = done.result else {
                    panic!("completion {n} carries no value: {:?}", done.result);
                };
                assert_eq!(value.deserialize::<String>().unwrap(), format!("value {n}"));
            }
            other => panic!("expected completion {n}, got {other:?}"),
        }
    }
    assert_eq!(hub.slow_client_closes(), 0);
}
