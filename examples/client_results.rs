//! Client results: the server asks one client for a value and waits for the answer.
//! - `DeleteFile(name)`, a hub method, asks its caller to confirm (`clients.caller().invoke`)
//!   before acting.
//! - `GET /ask/{connectionId}?question=...`, an HTTP endpoint outside any hub method, asks one
//!   client through the `HubContext`; a client silent for 10 s (the hub's
//!   `client_result_timeout`) gets the endpoint a 504.
//!
//! ```text
//! cargo run --example client_results   # http://127.0.0.1:5000, hub at /hubs/ask (PORT to change)
//! ```
//! From Node with `@microsoft/signalr` (a handler's return value is the client's result):
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/hubs/ask").build();
//! c.on("Confirm", (question) => { console.log(question); return true; });
//! c.on("Ask", async (question) => `you asked: ${question}`);
//! await c.start();
//! console.log(await c.invoke("DeleteFile", "notes.txt"));   // "deleted notes.txt"
//! console.log(c.connectionId);
//! ```
//! then `curl 'http://127.0.0.1:5000/ask/CONNECTION_ID?question=ready'` prints
//! `you asked: ready`.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use signalr_core::{Clients, Hub, HubContext, HubError};

const HUB_PATH: &str = "/hubs/ask";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaiting the caller here cannot deadlock: while it waits, the method lends its invocation
/// slot back, so the connection keeps reading the client's answer.
async fn delete_file(clients: Clients, name: String) -> Result<String, HubError> {
    let question = format!("Delete {name}?");
    let confirmed: bool = clients.caller().invoke("Confirm", (question,)).await?;
    Ok(match confirmed {
        true => format!("deleted {name}"),
        false => format!("kept {name}"),
    })
}

#[derive(Deserialize)]
struct AskQuery {
    question: String,
}

type Refusal = (StatusCode, Json<serde_json::Value>);

fn refusal(status: StatusCode, error: &str) -> Refusal {
    (status, Json(serde_json::json!({ "error": error })))
}

/// Asks one client from outside the hub and returns its answer as the HTTP response.
async fn ask(
    State(hub): State<HubContext>,
    Path(connection_id): Path<String>,
    Query(AskQuery { question }): Query<AskQuery>,
) -> Result<String, Refusal> {
    let client = hub.clients().client(connection_id);
    client
        .invoke("Ask", (question,))
        .await
        .map_err(|e| match e {
            e if e.is_timeout() => {
                refusal(StatusCode::GATEWAY_TIMEOUT, "the client did not answer")
            }
            e if e.is_closed() => refusal(StatusCode::NOT_FOUND, "no such connection"),
            // The client's own error text is the client's business: not echoed to this caller.
            _ => refusal(StatusCode::BAD_GATEWAY, "the client failed to answer"),
        })
}

fn hub() -> Hub {
    Hub::builder()
        .client_result_timeout(ANSWER_TIMEOUT)
        .method("DeleteFile", delete_file)
        .build()
}

fn app(hub: &Hub) -> Router {
    Router::new()
        .route("/ask/{connection_id}", get(ask))
        .nest_service(HUB_PATH, hub.service())
        .with_state(hub.context())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::init_logging();
    let hub = hub();
    let addr = signalr_examples::listen_addr(5000);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("client results example: hub at http://{addr}{HUB_PATH}, questions at http://{addr}/ask/ID?question=... (Ctrl-C to stop)");
    axum::serve(listener, app(&hub))
        .with_graceful_shutdown(async move {
            signalr_core::shutdown_signal().await;
            hub.shutdown().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::protocol::{Completion, CompletionResult, Invocation, Message};
    use signalr_core::test_util::TestClient;
    use tokio::time::Instant;

    /// Answers the server's next question with `answer`; returns the question's target.
    async fn answer_next(client: &mut TestClient, answer: impl serde::Serialize) -> String {
        loop {
            match client.recv().await.expect("the connection is open") {
                Message::Invocation(question) => {
                    let reply = Completion {
                        headers: Default::default(),
                        invocation_id: question.invocation_id.expect("a question wants an answer"),
                        result: CompletionResult::Value(answer),
                    };
                    client
                        .send_message(&Message::<(), _>::Completion(reply))
                        .await;
                    return question.target.to_string();
                }
                Message::Ping => continue,
                other => panic!("expected the server's question, got {other:?}"),
            }
        }
    }

    /// Calls `DeleteFile` (without waiting, as the kit's `invoke` would), confirms or not, and
    /// returns the method's result.
    async fn delete_file_answering(client: &mut TestClient, confirm: bool) -> String {
        let call = Invocation {
            headers: Default::default(),
            invocation_id: Some("1".into()),
            target: "DeleteFile".into(),
            arguments: ("notes.txt",),
            stream_ids: Vec::new(),
        };
        client
            .send_message(&Message::<_, ()>::Invocation(call))
            .await;
        assert_eq!(answer_next(client, confirm).await, "Confirm");
        match client.recv().await {
            Some(Message::Completion(Completion {
                result: CompletionResult::Value(value),
                ..
            })) => value.deserialize().unwrap(),
            other => panic!("expected the result, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delete_file_does_what_the_caller_confirms() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        assert_eq!(
            delete_file_answering(&mut client, true).await,
            "deleted notes.txt"
        );
        assert_eq!(
            delete_file_answering(&mut client, false).await,
            "kept notes.txt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_endpoint_relays_a_question_to_one_client_and_its_answer_back() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        let asked = tokio::spawn(ask(
            State(hub.context()),
            Path(client.connection_id().to_owned()),
            Query(AskQuery {
                question: "ready?".into(),
            }),
        ));
        assert_eq!(answer_next(&mut client, "yes").await, "Ask");
        assert_eq!(asked.await.unwrap().unwrap(), "yes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_gets_the_endpoint_a_504_after_exactly_the_timeout() {
        let hub = hub();
        let client = TestClient::connect(&hub).await.unwrap();
        let start = Instant::now();
        let asked = ask(
            State(hub.context()),
            Path(client.connection_id().to_owned()),
            Query(AskQuery {
                question: "anyone?".into(),
            }),
        );
        let (status, _) = asked.await.unwrap_err();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(start.elapsed(), ANSWER_TIMEOUT);
        // An unknown connection is refused at once.
        let unknown = ask(
            State(hub.context()),
            Path("nobody".into()),
            Query(AskQuery {
                question: "?".into(),
            }),
        );
        assert_eq!(unknown.await.unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(start.elapsed(), ANSWER_TIMEOUT);
    }

    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_app_on_free_port(app(&hub())).await;
        signalr_examples::assert_negotiates(addr, HUB_PATH).await;
        let (status, body) = signalr_examples::request(addr, "GET", "/ask/nobody?question=x", &[])
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"error":"no such connection"}"#)
        );
    }
}
