//! Streaming in both directions.
//! - `Sum(numbers)`: the client uploads a stream (`UploadStream<f64>`); one result at its end.
//! - `Countdown(from, intervalMs)`: the server streams items back, one per interval.
//! - `Uppercase(lines)`: both in one call; each uploaded line comes back as soon as it arrives.
//!
//! ```text
//! cargo run --example upload_streams   # http://127.0.0.1:5000/hubs/streams (PORT to change)
//! ```
//! From Node with `@microsoft/signalr` (a `Subject` is an upload stream):
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/hubs/streams").build();
//! await c.start();
//! const numbers = new signalR.Subject();
//! const total = c.invoke("Sum", numbers);
//! [1, 2, 3.5].forEach((n) => numbers.next(n));
//! numbers.complete();
//! console.log(await total);                           // 6.5
//! c.stream("Countdown", 3, 500).subscribe({
//!   next: (n) => console.log(n), complete: () => console.log("liftoff"), error: console.error });
//! const lines = new signalR.Subject();
//! c.stream("Uppercase", lines).subscribe({
//!   next: (line) => console.log(line), complete() {}, error: console.error });
//! lines.next("hello"); lines.next("world"); lines.complete();
//! ```

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use signalr_core::{Hub, HubError, UploadStream};

const HUB_PATH: &str = "/hubs/streams";
const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Client to server: consumes the upload until the client completes it. A client error or an
/// item that is not a number ends the sum with that error.
async fn sum(mut numbers: UploadStream<f64>) -> Result<f64, HubError> {
    let mut total = 0.0;
    while let Some(number) = numbers.next().await {
        total += number?;
    }
    Ok(total)
}

/// Server to client: items are produced lazily, so a client that cancels
/// (`subscription.dispose()`) stops the countdown at once. The outer error refuses the call
/// before any item is sent.
type Items<T> = Result<T, HubError>;
async fn countdown(from: u32, interval_ms: u64) -> Items<impl Stream<Item = Items<u32>>> {
    let interval = Duration::from_millis(interval_ms);
    if interval > MAX_INTERVAL {
        return Err(HubError::new("The interval is at most 10,000 ms."));
    }
    Ok(futures_util::stream::unfold(
        Some(from),
        move |next| async move {
            let n = next?;
            if n < from {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(n), n.checked_sub(1)))
        },
    ))
}

/// Both directions: each item goes back as soon as it is read, and the output ends when the
/// upload does. Backpressure carries through: a slow reader slows the uploader.
async fn uppercase(lines: UploadStream<String>) -> impl Stream<Item = Items<String>> {
    lines.map(|line| line.map(|line| line.to_uppercase()))
}

fn hub() -> Hub {
    Hub::builder()
        .method("Sum", sum)
        .method("Countdown", countdown)
        .method("Uppercase", uppercase)
        // Upload items the server buffers before it stops reading from that client.
        .stream_buffer_capacity(10)
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::serve_example("upload streams", HUB_PATH, hub()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use signalr_core::protocol::{Completion, CompletionResult, Invocation, Message, StreamItem};
    use signalr_core::test_util::{ServerMessage, TestClient};
    use tokio::time::Instant;

    /// Starts `target` with one upload stream (id "u"); `streaming` for a streaming call.
    async fn start_with_upload(client: &mut TestClient, target: &str, streaming: bool) {
        let call = Invocation {
            headers: Default::default(),
            invocation_id: Some("1".into()),
            target: target.into(),
            arguments: [(); 0],
            stream_ids: vec!["u".into()],
        };
        let message = match streaming {
            true => Message::<_, ()>::StreamInvocation(call),
            false => Message::Invocation(call),
        };
        client.send_message(&message).await;
    }

    async fn upload(client: &mut TestClient, item: impl Serialize) {
        let item = StreamItem {
            headers: Default::default(),
            invocation_id: "u".into(),
            item,
        };
        client
            .send_message(&Message::<(), _>::StreamItem(item))
            .await;
    }

    /// Ends the upload, as `subject.complete()` does, or with an error as `subject.error()`.
    async fn complete_upload(client: &mut TestClient, error: Option<&str>) {
        let result = error.map_or(CompletionResult::Void, |e| {
            CompletionResult::Error(e.into())
        });
        let end = Completion {
            headers: Default::default(),
            invocation_id: "u".into(),
            result,
        };
        client
            .send_message(&Message::<(), ()>::Completion(end))
            .await;
    }

    async fn next_non_ping(client: &mut TestClient) -> ServerMessage {
        loop {
            match client.recv().await.expect("the connection is open") {
                Message::Ping => continue,
                message => return message,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sum_adds_every_uploaded_number_and_reports_a_client_error() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        start_with_upload(&mut client, "Sum", false).await;
        for number in [1.0, 2.0, 3.5] {
            upload(&mut client, number).await;
        }
        complete_upload(&mut client, None).await;
        let Message::Completion(done) = next_non_ping(&mut client).await else {
            panic!()
        };
        let CompletionResult::Value(total) = done.result else {
            panic!("{done:?}")
        };
        assert_eq!(total.deserialize::<f64>().unwrap(), 6.5);

        start_with_upload(&mut client, "Sum", false).await;
        upload(&mut client, 1.0).await;
        complete_upload(&mut client, Some("the user gave up")).await;
        let Message::Completion(done) = next_non_ping(&mut client).await else {
            panic!()
        };
        assert_eq!(done.result, CompletionResult::Error(
            "An unexpected error occurred invoking 'Sum' on the server. HubException: the user gave up".into()
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn countdown_streams_one_item_per_interval() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        let start = Instant::now();
        let items: Vec<u32> = client.stream("Countdown", (3, 500)).await.unwrap();
        assert_eq!(items, [3, 2, 1, 0]);
        // The first item at once, then one per interval: virtual time makes this exact.
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        let refused = client.stream::<u32>("Countdown", (3, 60_000)).await;
        assert!(refused
            .unwrap_err()
            .ends_with("The interval is at most 10,000 ms."));
    }

    #[tokio::test(start_paused = true)]
    async fn uppercase_answers_each_line_before_the_upload_ends() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        start_with_upload(&mut client, "Uppercase", true).await;
        for line in ["hello", "world"] {
            upload(&mut client, line).await;
            // The upload is still open: the item came back on its own.
            let Message::StreamItem(item) = next_non_ping(&mut client).await else {
                panic!()
            };
            assert_eq!(
                item.item.deserialize::<String>().unwrap(),
                line.to_uppercase()
            );
        }
        complete_upload(&mut client, None).await;
        let Message::Completion(done) = next_non_ping(&mut client).await else {
            panic!()
        };
        assert_eq!(done.result, CompletionResult::Void);
    }

    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_on_free_port(HUB_PATH, hub()).await;
        signalr_examples::assert_negotiates(addr, HUB_PATH).await;
    }
}
