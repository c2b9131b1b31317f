//! The `@gpt` assistant: a message mentioning `@gpt` gets a reply from a language model,
//! streamed into the room as it is generated, then stored like any message.
//!
//! The provider sits behind [`Provider`]; [`OpenAiProvider`] speaks the OpenAI-compatible chat
//! completions API with streaming (server-sent events `data: {...}` ending with
//! `data: [DONE]`), so local servers that speak it work too. Every fault (an HTTP error, a
//! timeout, a malformed chunk, a connection cut midway) ends the reply with an
//! `AssistantError` notice in the room and leaves the service healthy.
//!
//! Every reply is measured ([`measured`]): `chat.assistant.requests` and
//! `chat.assistant.duration` by kind and outcome, `chat.assistant.failures` by reason,
//! `chat.assistant.in_flight`, and `chat.assistant.tokens` from the provider's usage report.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

/// One turn of the conversation sent to the model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Turn {
    pub role: &'static str,
    pub content: String,
}

/// Text deltas of a reply, or the error that ended it.
pub type Deltas = Pin<Box<dyn Stream<Item = Result<String, Failure>> + Send>>;

/// Why a reply failed: a fixed set, so that it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No answer, or no next chunk, within the timeout.
    Timeout,
    /// The request could not be sent (refused, DNS, TLS).
    Unreachable,
    /// The provider answered with an HTTP error status.
    HttpStatus,
    /// A chunk was not the JSON the wire format promises.
    Malformed,
    /// The connection failed midway, or ended without `data: [DONE]`.
    CutOff,
    /// The reply held no text.
    Empty,
}

impl Reason {
    /// The `reason` label of `chat.assistant.failures`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Unreachable => "unreachable",
            Reason::HttpStatus => "http_status",
            Reason::Malformed => "malformed",
            Reason::CutOff => "cut_off",
            Reason::Empty => "empty",
        }
    }
}

/// A failed reply: the reason, and the message the room's users are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A language model that streams its reply.
pub trait Provider: Send + Sync + 'static {
    /// Starts a reply to `conversation` (system prompt first).
    fn reply(&self, conversation: Vec<Turn>) -> Deltas;
}

/// The OpenAI-compatible chat completions API, streaming.
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    api_key: String,
    model: String,
    /// No chunk for this long ends the reply with a timeout.
    idle_timeout: Duration,
    /// Ask for the usage chunk (token counts) at the end of the stream.
    stream_usage: bool,
}

impl OpenAiProvider {
    /// `stream_usage` adds `stream_options.include_usage` to each request, which OpenAI and
    /// most compatible servers answer with token counts; a few strict ones refuse the field.
    pub fn new(
        base_url: &str,
        api_key: &str,
        model: &str,
        timeout: Duration,
        stream_usage: bool,
    ) -> Self {
        OpenAiProvider {
            client: reqwest::Client::builder()
                .connect_timeout(timeout)
                .build()
                .unwrap_or_default(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key: api_key.to_owned(),
            model: model.to_owned(),
            idle_timeout: timeout,
            stream_usage,
        }
    }
}

impl Provider for OpenAiProvider {
    fn reply(&self, conversation: Vec<Turn>) -> Deltas {
        let mut body =
            serde_json::json!({"model": self.model, "stream": true, "messages": conversation});
        if self.stream_usage {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let request = self
            .client
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&body);
        let idle = self.idle_timeout;
        Box::pin(
            futures_util::stream::once(async move {
                let response = tokio::time::timeout(idle, request.send())
                    .await
                    .map_err(|_| {
                        Failure::new(Reason::Timeout, "the assistant did not answer in time")
                    })?
                    .map_err(|e| {
                        Failure::new(
                            Reason::Unreachable,
                            format!("the assistant is unreachable: {e}"),
                        )
                    })?;
                if !response.status().is_success() {
                    return Err(Failure::new(
                        Reason::HttpStatus,
                        format!("the assistant answered HTTP {}", response.status().as_u16()),
                    ));
                }
                Ok(sse_deltas(response.bytes_stream(), idle))
            })
            .flat_map(|started| match started {
                Ok(deltas) => deltas,
                Err(error) => Box::pin(futures_util::stream::iter([Err(error)])) as Deltas,
            }),
        )
    }
}

/// Parses `data:` lines of a chat-completions event stream into text deltas. The stream must
/// end with `data: [DONE]`; ending without it is a cut connection. A chunk's `usage` (token
/// counts, sent by the provider at the end) goes to `chat.assistant.tokens`.
pub(crate) fn sse_deltas<S, B, E>(body: S, idle: Duration) -> Deltas
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    struct State<S> {
        body: Pin<Box<S>>,
        buffer: Vec<u8>,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        buffer: Vec::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut state| async move {
            if state.done {
                return None;
            }
            loop {
                // A whole line buffered: handle it.
                if let Some(end) = state.buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = state.buffer.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line).trim().to_owned();
                    let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                        continue; // comments, blank lines, other fields
                    };
                    if data == "[DONE]" {
                        return None;
                    }
                    let chunk: Value = match serde_json::from_str(data) {
                        Ok(chunk) => chunk,
                        Err(_) => {
                            state.done = true;
                            let failure = Failure::new(
                                Reason::Malformed,
                                "the assistant sent a malformed chunk",
                            );
                            return Some((Err(failure), state));
                        }
                    };
                    record_usage(&chunk["usage"]);
                    let delta = chunk["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap_or_default();
                    if delta.is_empty() {
                        continue;
                    }
                    return Some((Ok(delta.to_owned()), state));
                }
                match tokio::time::timeout(idle, state.body.next()).await {
                    Err(_) => {
                        state.done = true;
                        let failure = Failure::new(
                            Reason::Timeout,
                            "the assistant stopped answering (timeout)",
                        );
                        return Some((Err(failure), state));
                    }
                    Ok(Some(Ok(bytes))) => state.buffer.extend_from_slice(bytes.as_ref()),
                    Ok(Some(Err(e))) => {
                        state.done = true;
                        let failure = Failure::new(
                            Reason::CutOff,
                            format!("the assistant's connection failed: {e}"),
                        );
                        return Some((Err(failure), state));
                    }
                    Ok(None) => {
                        state.done = true;
                        let failure =
                            Failure::new(Reason::CutOff, "the assistant's reply was cut off");
                        return Some((Err(failure), state));
                    }
                }
            }
        },
    ))
}

/// Counts the tokens of an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`);
/// anything else (absent, `null`, not numbers) counts nothing.
fn record_usage(usage: &Value) {
    for (field, kind) in [("prompt_tokens", "input"), ("completion_tokens", "output")] {
        if let Some(tokens) = usage[field].as_u64() {
            metrics::counter!("chat.assistant.tokens", "type" => kind).increment(tokens);
        }
    }
}

/// What a reply was asked for: the `kind` label of the assistant's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An `@gpt` mention, answered into the room.
    Room,
    /// `AskAssistant`, streamed to the caller alone.
    Stream,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Room => "room",
            Kind::Stream => "stream",
        }
    }
}

/// A reply measured from its start to its end: when it ends, `chat.assistant.requests` and
/// `chat.assistant.duration` count it with its outcome (`ok`, `error`, or `cancelled` when it
/// was dropped unfinished, such as a client cancelling its stream), and a failure counts in
/// `chat.assistant.failures` by reason. A reply that ends with no text is the failure
/// [`Reason::Empty`]. `chat.assistant.in_flight` counts replies not yet ended.
pub fn measured(deltas: Deltas, kind: Kind) -> Deltas {
    metrics::gauge!("chat.assistant.in_flight").increment(1.0);
    Box::pin(Measured {
        deltas,
        kind,
        started: Instant::now(),
        has_text: false,
        ended: false,
    })
}

struct Measured {
    deltas: Deltas,
    kind: Kind,
    started: Instant,
    has_text: bool,
    ended: bool,
}

impl Measured {
    fn end(&mut self, outcome: &'static str, failure: Option<Reason>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let kind = self.kind.as_str();
        metrics::gauge!("chat.assistant.in_flight").decrement(1.0);
        metrics::counter!("chat.assistant.requests", "kind" => kind, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("chat.assistant.duration", "kind" => kind, "outcome" => outcome)
            .record(self.started.elapsed().as_secs_f64());
        if let Some(reason) = failure {
            metrics::counter!("chat.assistant.failures", "kind" => kind, "reason" => reason.as_str())
                .increment(1);
        }
    }
}

impl Stream for Measured {
    type Item = Result<String, Failure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.deltas.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(delta))) => {
                self.has_text |= !delta.trim().is_empty();
            }
            Poll::Ready(Some(Err(failure))) => {
                let reason = failure.reason;
                self.end("error", Some(reason));
            }
            Poll::Ready(None) if self.has_text => self.end("ok", None),
            Poll::Ready(None) => self.end("error", Some(Reason::Empty)),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.end("cancelled", None);
    }
}

/// Limits for the assistant, from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Replies generated at once across all rooms.
    pub concurrency: usize,
    /// Requests one user may make per minute.
    pub per_user_per_minute: usize,
    /// How many recent messages of the room go to the model.
    pub history_messages: i64,
    /// And at most this many characters of them.
    pub history_chars: usize,
    /// The system prompt.
    pub system_prompt: String,
}

/// The assistant as the hub uses it: provider (if configured), limits, concurrency slots. The
/// per-user rate goes through the service's shared limiter (see `hub`).
#[derive(Clone)]
pub struct Assistant {
    provider: Option<Arc<dyn Provider>>,
    pub limits: Limits,
    slots: Arc<Semaphore>,
}

impl Assistant {
    pub fn new(provider: Option<Arc<dyn Provider>>, limits: Limits) -> Self {
        Assistant {
            provider,
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            limits,
        }
    }

    pub fn provider(&self) -> Option<&Arc<dyn Provider>> {
        self.provider.as_ref()
    }

    /// Waits for one of the concurrent reply slots.
    pub async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// The conversation for the model: the system prompt, then recent room messages (oldest
    /// first) within the count and size budget, the assistant's own as `assistant` turns.
    pub fn conversation(
        &self,
        history: &[crate::store::ChatMessage],
        assistant_user: i64,
    ) -> Vec<Turn> {
        let mut turns = Vec::new();
        let mut budget = self.limits.history_chars;
        for message in history {
            let (role, content) = if message.user_id == assistant_user {
                ("assistant", message.content.clone())
            } else {
                (
                    "user",
                    format!("{}: {}", message.user_name, message.content),
                )
            };
            if content.len() > budget {
                break;
            }
            budget -= content.len();
            turns.push(Turn { role, content });
        }
        turns.reverse();
        turns.insert(
            0,
            Turn {
                role: "system",
                content: self.limits.system_prompt.clone(),
            },
        );
        turns
    }
}

/// Whether a message asks for the assistant: `@gpt` as a word of its own, not inside an address
/// (`bob@gpt.example.com`), a domain (`@gpt.example.com`) or a longer name (`@gpt4`).
pub fn mentions_assistant(content: &str) -> bool {
    let lower = content.to_lowercase();
    let token = format!("@{}", crate::ASSISTANT_NAME);
    let part_of_word = |c: char| c.is_alphanumeric() || c == '_';
    lower.match_indices(&token).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let mut after = lower[at + token.len()..].chars();
        let starts_word = !before.is_some_and(|c| part_of_word(c) || ".-@".contains(c));
        let ends_word = match after.next() {
            None => true,
            Some(c) if part_of_word(c) => false,
            // `@gpt.example` or `@gpt-bot` go on; `@gpt.` or `@gpt-` end a sentence.
            Some('.' | '-') => !after.next().is_some_and(part_of_word),
            Some(_) => true,
        };
        starts_word && ends_word
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deltas(chunks: &[&str]) -> Vec<Result<String, Failure>> {
        let body = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::io::Error>(c.as_bytes().to_vec()))
                .collect::<Vec<_>>(),
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(sse_deltas(body, Duration::from_secs(1)).collect())
    }

    #[test]
    fn parses_deltas_split_anywhere_and_stops_at_done() {
        let got = deltas(&[
            ": keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\nda",
            "ta: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n",
            "\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ignored\"}}]}\n\n",
        ]);
        assert_eq!(got, [Ok("Hel".to_owned()), Ok("lo".to_owned())]);
    }

    #[test]
    fn malformed_chunks_and_cut_streams_are_errors() {
        let got =
            deltas(&["data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {oops\n\n"]);
        assert_eq!(got[0], Ok("a".to_owned()));
        let failure = got[1].as_ref().unwrap_err();
        assert_eq!(failure.reason, Reason::Malformed);
        assert!(failure.message.contains("malformed"));
        let got = deltas(&["data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"]);
        let failure = got[1].as_ref().unwrap_err();
        assert_eq!(failure.reason, Reason::CutOff);
        assert!(failure.message.contains("cut off"));
    }

    #[test]
    fn history_budget() {
        let assistant = Assistant::new(
            None,
            Limits {
                concurrency: 1,
                per_user_per_minute: 2,
                history_messages: 10,
                history_chars: 12,
                system_prompt: "be brief".into(),
            },
        );
        let message = |id, user_id, user_name: &str, content: &str| crate::store::ChatMessage {
            id,
            room_id: 1,
            user_id,
            user_name: user_name.into(),
            content: content.into(),
            created_at: String::new(),
            edited_at: None,
        };
        // Newest first, as the store returns them; the budget keeps the newest that fit.
        let history = [
            message(3, 9, "gpt", "hi!"),
            message(2, 1, "al", "hey"),
            message(1, 1, "al", "too old"),
        ];
        let turns = assistant.conversation(&history, 9);
        assert_eq!(
            turns,
            [
                Turn {
                    role: "system",
                    content: "be brief".into()
                },
                Turn {
                    role: "user",
                    content: "al: hey".into()
                },
                Turn {
                    role: "assistant",
                    content: "hi!".into()
                },
            ]
        );
    }

    #[test]
    fn only_a_mention_token_calls_the_assistant() {
        for yes in [
            "hey @GPT what's up",
            "@gpt",
            "@gpt, help",
            "ask @gpt.",
            "(@gpt)",
            "@gpt: hi",
            "line one\n@gpt line two",
        ] {
            assert!(mentions_assistant(yes), "{yes}");
        }
        for no in [
            "gpt without the at",
            "mail bob@gpt.example.com",
            "see @gpt.example.com",
            "@gpt4 is another bot",
            "@gpt_fan",
            "@gpt-bot",
            "x@gpt",
            "@@gpt",
        ] {
            assert!(!mentions_assistant(no), "{no}");
        }
    }
}
