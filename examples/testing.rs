//! Testing a hub with the in-process test kit (`signalr_core::test_util`, feature
//! `test-util`): a `TestClient` speaks the hub protocol over an in-memory transport through
//! the same connection core sockets get, and under tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`) timers fire as soon as nothing else can run, so
//! "remind me in an hour" and "idle for 30 s" are tested in milliseconds, exactly.
//!
//! The hub: `Remind(text, seconds)` answers at once, then pushes `Reminder(text)` to the
//! caller when the time comes. The tests below are the point of this example:
//! ```text
//! cargo test -p signalr-examples --example testing   # the tests
//! cargo run --example testing                        # the hub, http://127.0.0.1:5000/hubs/reminders
//! ```
//! To enable the kit in your crate: `signalr-core = { ..., features = ["test-util"] }` under
//! `[dev-dependencies]`. A client for the served hub, with `@microsoft/signalr`:
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/hubs/reminders").build();
//! c.on("Reminder", (text) => console.log("reminder:", text));
//! await c.start();
//! console.log(await c.invoke("Remind", "stretch", 5));   // "in 5 s", then 5 s later: reminder: stretch
//! ```

use std::time::Duration;

use signalr_core::{Context, Hub, HubError};

const HUB_PATH: &str = "/hubs/reminders";
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const LONGEST_REMINDER_SECS: u64 = 24 * 3600;

/// Schedules a push to the caller. The timer runs on after the method returns, with a
/// `HubContext`; a send to a connection that has left is skipped.
async fn remind(ctx: Context, text: String, seconds: u64) -> Result<String, HubError> {
    if seconds > LONGEST_REMINDER_SECS {
        return Err(HubError::new("Reminders are at most a day away."));
    }
    let (hub, caller) = (ctx.hub(), ctx.connection_id().to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let _ = hub.clients().client(caller).send("Reminder", (text,)).await;
    });
    Ok(format!("in {seconds} s"))
}

fn hub() -> Hub {
    Hub::builder()
        .keep_alive_interval(KEEP_ALIVE)
        .client_timeout(CLIENT_TIMEOUT)
        .method("Remind", remind)
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::serve_example("testing", HUB_PATH, hub()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::protocol::{Message, NoValue};
    use signalr_core::test_util::TestClient;
    use tokio::time::Instant;

    /// An invocation: its result and its error, as the client sees them.
    #[tokio::test(start_paused = true)]
    async fn remind_answers_at_once_and_refuses_far_futures() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        let start = Instant::now();
        let answer: String = client.invoke("Remind", ("stretch", 3600)).await.unwrap();
        assert_eq!(answer, "in 3600 s");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(
            client.invoke::<String>("Remind", ("later", 90_000)).await,
            Err("An unexpected error occurred invoking 'Remind' on the server. HubException: Reminders are at most a day away.".to_owned())
        );
    }

    /// A client-method call from the hub, at the exact virtual instant it is due.
    #[tokio::test(start_paused = true)]
    async fn the_reminder_arrives_when_it_is_due() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        let start = Instant::now();
        let _: String = client.invoke("Remind", ("stretch", 25)).await.unwrap();
        // `recv_invocation` skips the Pings sent meanwhile; the client pings too, as real
        // clients do, so the server's 30 s client timeout does not close it first.
        client
            .send_message(&Message::<NoValue, NoValue>::Ping)
            .await;
        let (target, arguments) = client.recv_invocation().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        assert_eq!(target, "Reminder");
        assert_eq!(arguments[0].deserialize::<String>().unwrap(), "stretch");
    }

    /// Keep-alive: an idle connection hears a Ping every interval, and nothing else.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_pinged_every_keep_alive_interval() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        let start = Instant::now();
        for n in 1..=2 {
            assert!(matches!(client.recv().await, Some(Message::Ping)));
            assert_eq!(start.elapsed(), KEEP_ALIVE * n);
        }
    }

    /// Timeout: a client that sends nothing is closed after the client timeout, and told it
    /// may reconnect; one that pings stays for an hour.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_and_a_pinging_one_stays() {
        let hub = hub();
        let mut silent = TestClient::connect(&hub).await.unwrap();
        let mut pinging = TestClient::connect(&hub).await.unwrap();
        let start = Instant::now();
        let pings = tokio::spawn(async move {
            for _ in 0..240 {
                pinging
                    .send_message(&Message::<NoValue, NoValue>::Ping)
                    .await;
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
            pinging
        });
        let close = silent.closed().await.expect("a Close message");
        assert_eq!(start.elapsed(), CLIENT_TIMEOUT);
        assert!(close.allow_reconnect);
        let mut pinging = pings.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3600));
        assert_eq!(hub.connection_count(), 1);
        let answer: String = pinging.invoke("Remind", ("still here", 1)).await.unwrap();
        assert_eq!(answer, "in 1 s");
    }

    /// Over a real socket: the served example answers negotiate.
    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_on_free_port(HUB_PATH, hub()).await;
        signalr_examples::assert_negotiates(addr, HUB_PATH).await;
    }
}
