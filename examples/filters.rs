//! Hub filters: middleware around every invocation and around connect and disconnect.
//! - `Timing` logs each call with its duration and keeps per-method totals (`Stats()` returns
//!   them), and logs each connection's arrival and departure with how long it stayed.
//! - `RateLimit` short-circuits: past 5 calls in a second from one connection, the method does
//!   not run and the caller gets an error. It forgets a connection when it disconnects.
//!
//! ```text
//! cargo run --example filters     # http://127.0.0.1:5000/hubs/filtered (PORT to change)
//! ```
//! From Node with `@microsoft/signalr`:
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/hubs/filtered").build();
//! await c.start();
//! for (let i = 0; i < 6; i++) await c.invoke("Echo", "x").catch((e) => console.log(e.message));
//! // the 6th: "An unexpected error occurred invoking 'Echo' on the server. HubException: Too many calls; wait a second."
//! await new Promise((r) => setTimeout(r, 1000));   // a fresh window
//! await c.invoke("Work", 250);     // the server logs: invocation method=Work elapsed=250ms
//! console.log(await c.invoke("Stats"));  // { Echo: { calls: 6, errors: 1, ... }, Work: { ... } }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signalr_core::{
    BoxFuture, ConnectNext, Context, DisconnectNext, Hub, HubError, HubFilter, HubInvocation,
    InvocationOutcome, InvokeNext,
};
use tokio::time::Instant;

const HUB_PATH: &str = "/hubs/filtered";
const CALLS_PER_SECOND: u32 = 5;

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct MethodStats {
    calls: u64,
    errors: u64,
    total_ms: u64,
}

/// Outermost filter: sees every call, refused ones included.
#[derive(Default, Clone)]
struct Timing {
    per_method: Arc<Mutex<BTreeMap<String, MethodStats>>>,
    connected_at: Arc<Mutex<HashMap<String, Instant>>>,
}

impl HubFilter for Timing {
    fn invoke<'a>(
        &'a self,
        invocation: HubInvocation,
        next: InvokeNext,
    ) -> BoxFuture<'a, InvocationOutcome> {
        Box::pin(async move {
            let method = invocation.method().to_owned();
            let connection = invocation.context().connection_id().to_owned();
            let started = Instant::now();
            let outcome = next.run(invocation).await;
            let elapsed = started.elapsed();
            tracing::info!(%method, %connection, ?elapsed, ok = outcome.is_ok(), "invocation");
            let mut stats = self.per_method.lock().unwrap();
            let entry = stats.entry(method).or_default();
            entry.calls += 1;
            entry.errors += u64::from(!outcome.is_ok());
            entry.total_ms += elapsed.as_millis() as u64;
            outcome
        })
    }

    fn on_connected<'a>(
        &'a self,
        context: Context,
        next: ConnectNext,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        let id = context.connection_id().to_owned();
        tracing::info!(connection = %id, transport = ?context.transport(), "connected");
        self.connected_at.lock().unwrap().insert(id, Instant::now());
        next.run(context)
    }

    fn on_disconnected<'a>(
        &'a self,
        context: Context,
        error: Option<String>,
        next: DisconnectNext,
    ) -> BoxFuture<'a, ()> {
        let since = self
            .connected_at
            .lock()
            .unwrap()
            .remove(context.connection_id());
        let stayed = since.map(|since| since.elapsed());
        tracing::info!(
            connection = context.connection_id(),
            ?stayed,
            ?error,
            "disconnected"
        );
        next.run((context, error))
    }
}

/// A fixed one-second window of calls per connection.
#[derive(Default, Clone)]
struct RateLimit {
    windows: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
}

impl HubFilter for RateLimit {
    fn invoke<'a>(
        &'a self,
        invocation: HubInvocation,
        next: InvokeNext,
    ) -> BoxFuture<'a, InvocationOutcome> {
        let allowed = {
            let mut windows = self.windows.lock().unwrap();
            let now = Instant::now();
            let connection = invocation.context().connection_id().to_owned();
            let (start, calls) = windows.entry(connection).or_insert((now, 0));
            if now.duration_since(*start) >= Duration::from_secs(1) {
                (*start, *calls) = (now, 0);
            }
            *calls += 1;
            *calls <= CALLS_PER_SECOND
        };
        match allowed {
            // Not calling `next` is the short-circuit: the method never runs.
            false => Box::pin(async {
                InvocationOutcome::error(HubError::new("Too many calls; wait a second."))
            }),
            true => next.run(invocation),
        }
    }

    fn on_disconnected<'a>(
        &'a self,
        context: Context,
        error: Option<String>,
        next: DisconnectNext,
    ) -> BoxFuture<'a, ()> {
        // Without this, every connection ever seen would stay in memory.
        self.windows.lock().unwrap().remove(context.connection_id());
        next.run((context, error))
    }
}

async fn echo(text: String) -> String {
    text
}

/// Simulated work, so the timing filter has something to measure.
async fn work(milliseconds: u64) -> Result<(), HubError> {
    if milliseconds > 10_000 {
        return Err(HubError::new("At most 10,000 ms of work."));
    }
    tokio::time::sleep(Duration::from_millis(milliseconds)).await;
    Ok(())
}

fn hub(timing: Timing, rate_limit: RateLimit) -> Hub {
    let stats = timing.per_method.clone();
    Hub::builder()
        // The first filter added is the outermost.
        .filter(timing)
        .filter(rate_limit)
        .method("Echo", echo)
        .method("Work", work)
        .method("Stats", move || {
            let stats = stats.lock().unwrap().clone();
            async move { stats }
        })
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = hub(Timing::default(), RateLimit::default());
    signalr_examples::serve_example("filters", HUB_PATH, hub).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::test_util::TestClient;

    const REFUSED: &str =
        "An unexpected error occurred invoking 'Echo' on the server. HubException: Too many calls; wait a second.";

    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_on_free_port(
            HUB_PATH,
            hub(Timing::default(), RateLimit::default()),
        )
        .await;
        signalr_examples::assert_negotiates(addr, HUB_PATH).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_sixth_call_in_a_second_is_refused_and_the_next_second_is_fresh() {
        let hub = hub(Timing::default(), RateLimit::default());
        let mut client = TestClient::connect(&hub).await.unwrap();
        let mut other = TestClient::connect(&hub).await.unwrap();
        for _ in 0..CALLS_PER_SECOND {
            assert_eq!(client.invoke::<String>("Echo", ("x",)).await.unwrap(), "x");
        }
        assert_eq!(
            client.invoke::<String>("Echo", ("x",)).await,
            Err(REFUSED.into())
        );
        // The limit is per connection.
        assert_eq!(other.invoke::<String>("Echo", ("y",)).await.unwrap(), "y");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(client.invoke::<String>("Echo", ("x",)).await.unwrap(), "x");
    }

    #[tokio::test(start_paused = true)]
    async fn timing_counts_calls_errors_and_time_including_refusals() {
        let hub = hub(Timing::default(), RateLimit::default());
        let mut client = TestClient::connect(&hub).await.unwrap();
        client.invoke::<()>("Work", (250,)).await.unwrap();
        client.invoke::<()>("Work", (100,)).await.unwrap();
        assert!(client.invoke::<()>("Work", (20_000,)).await.is_err());
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..=CALLS_PER_SECOND {
            let _ = client.invoke::<String>("Echo", ("x",)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats: BTreeMap<String, MethodStats> = client.invoke("Stats", ()).await.unwrap();
        let (work, echo) = (&stats["Work"], &stats["Echo"]);
        // Virtual time: the sleeps take exactly what they ask.
        assert_eq!((work.calls, work.errors, work.total_ms), (3, 1, 350));
        // The 6th call of the second was refused before reaching `Echo`, and still counted.
        assert_eq!((echo.calls, echo.errors), (6, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn disconnect_filters_forget_the_connection() {
        let (timing, rate_limit) = (Timing::default(), RateLimit::default());
        let hub = hub(timing.clone(), rate_limit.clone());
        let mut client = TestClient::connect(&hub).await.unwrap();
        client.invoke::<String>("Echo", ("x",)).await.unwrap();
        assert_eq!(timing.connected_at.lock().unwrap().len(), 1);
        assert_eq!(rate_limit.windows.lock().unwrap().len(), 1);
        client.close().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(timing.connected_at.lock().unwrap().is_empty());
        assert!(rate_limit.windows.lock().unwrap().is_empty());
    }
}
