//! Application state, the HTTP request and per-connection items: a hub of notes whose store
//! is set once with `with_state` and taken by every method as `State<Notes>`; the author is
//! an extractor of our own that reads a header of the connection's request and refuses
//! anonymous callers; a per-connection item remembers each connection's last note.
//!
//! ```text
//! cargo run --example state           # listens on 127.0.0.1:5000 (PORT to change), hub at /notes
//! ```
//! ```js
//! const c = new signalR.HubConnectionBuilder()
//!   .withUrl("http://127.0.0.1:5000/notes", { headers: { "x-author": "ada" } }).build();
//! await c.start();
//! await c.invoke("Add", "remember the milk");
//! console.log(await c.invoke("List"), await c.invoke("Last"));
//! ```

use std::sync::{Arc, Mutex};

use signalr_core::{Context, FromContext, Hub, HubError, Item, State};

/// The application's state: cheap to clone (an `Arc`), shared by every call.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<Vec<(String, String)>>>);

/// Who is calling, from the `x-author` header of the connection's HTTP request. A method
/// taking it does not run for an anonymous caller: the refusal is the caller's error.
struct Author(String);

impl FromContext for Author {
    type Rejection = HubError;

    fn from_context(context: &Context) -> Result<Self, HubError> {
        context
            .http_request()
            .and_then(|request| request.headers().get("x-author"))
            .and_then(|value| value.to_str().ok())
            .filter(|name| !name.trim().is_empty())
            .map(|name| Author(name.to_owned()))
            .ok_or_else(|| HubError::new("Send an x-author header to write notes."))
    }
}

/// The connection's last note, kept as a per-connection item.
#[derive(Clone)]
struct LastNote(String);

async fn add(
    State(notes): State<Notes>,
    Author(author): Author,
    ctx: Context,
    text: String,
) -> usize {
    ctx.insert_item(LastNote(text.clone()));
    let mut notes = notes.0.lock().unwrap();
    notes.push((author, text));
    notes.len()
}

async fn list(State(notes): State<Notes>) -> Vec<(String, String)> {
    notes.0.lock().unwrap().clone()
}

async fn last(last: Option<Item<LastNote>>) -> Option<String> {
    last.map(|Item(LastNote(text))| text)
}

fn hub(notes: Notes) -> Hub {
    Hub::builder()
        .with_state(notes)
        .method("Add", add)
        .method("List", list)
        .method("Last", last)
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::serve_example("notes", "/notes", hub(Notes::default())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::test_util::TestClient;
    use signalr_core::HttpRequest;

    fn as_author(name: &str) -> HttpRequest {
        let request = http::Request::builder()
            .header("x-author", name)
            .body(())
            .unwrap();
        HttpRequest::from_request(&request)
    }

    #[tokio::test]
    async fn notes_are_shared_state_and_the_last_one_is_per_connection() {
        let notes = Notes::default();
        let hub = hub(notes.clone());
        let mut ada = TestClient::builder()
            .request(as_author("ada"))
            .connect(&hub)
            .await
            .unwrap();
        let mut bob = TestClient::builder()
            .request(as_author("bob"))
            .connect(&hub)
            .await
            .unwrap();
        assert_eq!(ada.invoke::<usize>("Add", ("milk",)).await, Ok(1));
        assert_eq!(bob.invoke::<usize>("Add", ("bread",)).await, Ok(2));
        let all: Vec<(String, String)> = bob.invoke("List", ()).await.unwrap();
        assert_eq!(
            all,
            [
                ("ada".into(), "milk".into()),
                ("bob".into(), "bread".into())
            ]
        );
        assert_eq!(
            ada.invoke::<Option<String>>("Last", ()).await,
            Ok(Some("milk".into()))
        );
        assert_eq!(
            bob.invoke::<Option<String>>("Last", ()).await,
            Ok(Some("bread".into()))
        );
        assert_eq!(
            notes.0.lock().unwrap().len(),
            2,
            "the application holds the same state"
        );
    }

    #[tokio::test]
    async fn an_anonymous_caller_is_refused_before_the_method_runs() {
        let notes = Notes::default();
        let hub = hub(notes.clone());
        let mut anonymous = TestClient::connect(&hub).await.unwrap();
        assert_eq!(
            anonymous.invoke::<usize>("Add", ("spam",)).await,
            Err("An unexpected error occurred invoking 'Add' on the server. HubException: Send an x-author header to write notes.".to_owned())
        );
        assert!(notes.0.lock().unwrap().is_empty());
        assert_eq!(
            anonymous.invoke::<Option<String>>("Last", ()).await,
            Ok(None)
        );
    }

    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_on_free_port("/notes", hub(Notes::default())).await;
        signalr_examples::assert_negotiates(addr, "/notes").await;
    }
}
