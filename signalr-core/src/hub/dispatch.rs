//! Per-connection dispatch of received messages: hub invocations (plain and streaming), upload
//! stream items, client results, cancellation.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::Context;
use super::filter::{invoke_chain, HubInvocation, InvocationOutcome, InvokeNext};
use super::handler::{BoxFuture, CallError, CallOutput, CallResult, InvocationParts, ItemStream};
use super::{HubShared, Method};
use crate::connection::{ConnectionShared, Dispatch};
use crate::log_limit::{LogLimiter, REPEAT_INTERVAL};
use crate::observe::{self, Outcome};
use crate::protocol::{
    Arguments, Completion, CompletionResult, Headers, InboundMessage, Invocation, Message, NoValue,
    Payload, SmallString, StreamItem,
};

tokio::task_local! {
    /// The parallel-invocation slot of the method running on this task, so that a method
    /// awaiting a client result can lend it back (the read loop must read the answer).
    static INVOCATION_SLOT: Slot;
}

/// A method's hold on one of its connection's parallel-invocation slots. It lives in the
/// method's task-local (no allocation of its own): the invocation's task and the method reach
/// it there, and only from that task.
struct Slot {
    slots: Arc<Semaphore>,
    permit: std::cell::RefCell<Option<OwnedSemaphorePermit>>,
    /// The invocation id, lent to the method when it encodes its Completion (see
    /// [`lend_invocation_id`]): kept here rather than copied into the method's parts.
    invocation_id: std::cell::RefCell<Option<SmallString>>,
}

impl Slot {
    fn new(
        slots: Arc<Semaphore>,
        permit: Option<OwnedSemaphorePermit>,
        invocation_id: Option<SmallString>,
    ) -> Self {
        Slot {
            slots,
            permit: std::cell::RefCell::new(permit),
            invocation_id: std::cell::RefCell::new(invocation_id),
        }
    }

    /// Gives the slot back; returns whether one was held.
    fn release(&self) -> bool {
        self.permit.borrow_mut().take().is_some()
    }
}

/// Gives the running invocation's slot back (a no-op outside one, or when already given).
fn release_slot() {
    let _ = INVOCATION_SLOT.try_with(Slot::release);
}

/// Takes the running invocation's id out of its slot, if it is kept there.
fn take_invocation_id() -> Option<SmallString> {
    INVOCATION_SLOT
        .try_with(|slot| slot.invocation_id.borrow_mut().take())
        .ok()
        .flatten()
}

/// Lends the running invocation's id to `use_id`, which gives it back with its output: a
/// method encodes its Completion with the id without a copy of it. `None` when the
/// invocation has no id kept here (a non-blocking invocation, or no invocation running).
pub(crate) fn lend_invocation_id<R>(
    use_id: impl FnOnce(SmallString) -> (SmallString, R),
) -> Option<R> {
    let id = take_invocation_id()?;
    let (id, output) = use_id(id);
    let _ = INVOCATION_SLOT.try_with(|slot| *slot.invocation_id.borrow_mut() = Some(id));
    Some(output)
}

/// Runs `wait` with the current method's slot lent back to its connection, as the reference
/// does while a hub method awaits a client result: with the default limit of one, keeping the
/// slot would leave the client's next invocation, and so its answer, unread.
pub(crate) async fn with_slot_released<F: std::future::Future>(wait: F) -> F::Output {
    let released = INVOCATION_SLOT
        .try_with(|slot| slot.release().then(|| slot.slots.clone()))
        .ok()
        .flatten();
    let output = wait.await;
    if let Some(slots) = released {
        if let Ok(permit) = slots.acquire_owned().await {
            let _ = INVOCATION_SLOT.try_with(|slot| *slot.permit.borrow_mut() = Some(permit));
        }
    }
    output
}

/// Awaits `wait`; if it takes longer than `after`, calls `warn` once and keeps waiting.
async fn warn_if_slow<F: Future>(
    wait: F,
    after: std::time::Duration,
    warn: impl FnOnce(),
) -> F::Output {
    tokio::pin!(wait);
    tokio::select! {
        output = &mut wait => return output,
        _ = tokio::time::sleep(after) => warn(),
    }
    wait.await
}

/// An invocation ready to start: what [`Dispatcher::start`] takes.
struct Prepared {
    invocation_id: Option<SmallString>,
    target: SmallString,
    arguments: Arguments,
    method: Option<Method>,
    streaming: bool,
    /// A streaming invocation's own token; `None` for the connection's closing.
    cancellation: Option<CancellationToken>,
    uploads: Vec<(SmallString, mpsc::Receiver<super::streams::UploadItem>)>,
    upload_ids: Vec<SmallString>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Dispatch for Dispatcher {
    fn dispatch(&mut self, message: InboundMessage) -> impl Future<Output = ()> + Send {
        self.dispatch_message(message)
    }

    fn dispatch_at_once(
        &mut self,
        message: &mut InboundMessage,
        cx: &mut std::task::Context<'_>,
    ) -> bool {
        match message {
            Message::Invocation(invocation) => self.invoke_at_once(invocation, cx),
            Message::CancelInvocation(cancel) => {
                self.conn.cancel_invocation(&cancel.invocation_id);
                true
            }
            _ => false,
        }
    }
}

pub(crate) struct Dispatcher {
    hub: Arc<HubShared>,
    conn: Arc<ConnectionShared>,
    /// Slots for non-streaming invocations (`MaximumParallelInvocationsPerClient`).
    slots: Arc<Semaphore>,
}

impl Dispatcher {
    pub(crate) fn new(hub: Arc<HubShared>, conn: Arc<ConnectionShared>) -> Self {
        let slots = Arc::new(Semaphore::new(hub.options.max_parallel_invocations.max(1)));
        Dispatcher { hub, conn, slots }
    }

    async fn dispatch_message(&mut self, message: InboundMessage) {
        match message {
            Message::Invocation(invocation) => self.invoke(invocation, false).await,
            Message::StreamInvocation(invocation) => self.invoke(invocation, true).await,
            Message::StreamItem(item) => self.upload_item(item).await,
            Message::Completion(completion) => self.completion(completion).await,
            // Unknown ids are ignored, as in the reference.
            Message::CancelInvocation(cancel) => self.conn.cancel_invocation(&cancel.invocation_id),
            // The connection's state machine keeps these to itself.
            Message::Close(_) | Message::Ping | Message::Ack(_) | Message::Sequence(_) => {}
        }
    }

    /// An item of an upload stream. The read loop waits while the method's buffer is full
    /// (backpressure, as in the reference); a wait that outlasts the client timeout is logged,
    /// so a method that never reads its stream does not stall the connection silently.
    async fn upload_item(&self, item: StreamItem<Payload>) {
        let Some(items) = self.conn.upload(&item.invocation_id) else {
            return;
        };
        let permit = match items.try_reserve() {
            Ok(permit) => Ok(permit),
            Err(mpsc::error::TrySendError::Full(())) => {
                let stalled = || {
                    tracing::warn!(
                        connection = %self.conn.id,
                        stream = %item.invocation_id,
                        capacity = self.hub.options.stream_buffer_capacity,
                        "upload stream buffer full: the hub method is not reading its stream, so \
                         nothing more is read from this client until it does"
                    );
                };
                warn_if_slow(items.reserve(), self.hub.options.client_timeout, stalled)
                    .await
                    .map_err(|_| ())
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(()),
        };
        match permit {
            Ok(permit) => permit.send(Ok(item.item)),
            // The method stopped listening: later items are dropped.
            Err(()) => {
                self.conn.remove_upload(&item.invocation_id);
            }
        }
    }

    /// A Completion from the client ends an upload stream or answers a client result (upload
    /// stream ids and result ids share one id space; streams are looked up first).
    async fn completion(&self, completion: Completion<Payload>) {
        if let Some(items) = self.conn.remove_upload(&completion.invocation_id) {
            if let CompletionResult::Error(error) = completion.result {
                let _ = items.send(Err(error)).await;
            }
            return;
        }
        if let Some(waiter) = self.conn.take_pending_result(&completion.invocation_id) {
            let _ = waiter.send(match completion.result {
                CompletionResult::Value(value) => Ok(value),
                CompletionResult::Void => Ok(Payload::null(self.conn.protocol)),
                CompletionResult::Error(error) => Err(error),
            });
        }
    }

    async fn invoke(&mut self, invocation: Invocation<Arguments>, streaming: bool) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            ..
        } = invocation;
        let method = self.hub.methods.get(&target).cloned();
        if method.is_none() && self.hub.filters.is_empty() {
            static UNKNOWN: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
            if let Some(suppressed) = UNKNOWN.allow() {
                tracing::info!(connection = %self.conn.id, %target, suppressed, "unknown hub method");
            }
            observe::invocation(observe::UNKNOWN_METHOD, Outcome::UnknownMethod, None);
            return self
                .complete_with_error(invocation_id, method_missing(&target))
                .await;
        }
        if let Some(method) = &method {
            // Authorization comes before the filters, as in the reference.
            if let Some(policy) = &method.policy {
                if !policy.allows(self.conn.identity.as_deref()) {
                    tracing::info!(connection = %self.conn.id, method = %method.name, "invocation refused: the caller is not authorized");
                    observe::invocation(&method.name, Outcome::Unauthorized, None);
                    let text = format!("Failed to invoke '{target}' because user is unauthorized");
                    return self.complete_with_error(invocation_id, text).await;
                }
            }
            let mismatch = match (streaming, method.handler.is_streaming()) {
                (true, false) => Some("The client attempted to invoke the non-streaming"),
                (false, true) => Some("The client attempted to invoke the streaming"),
                _ => None,
            };
            if let Some(prefix) = mismatch {
                let kind = if streaming {
                    "a streaming"
                } else {
                    "a non-streaming"
                };
                let text = format!("{prefix} '{target}' method with {kind} invocation.");
                return self.complete_with_error(invocation_id, text).await;
            }
        }

        // Clients cancel streams only (as the reference wires it): a streaming invocation gets
        // its own token, registered under its id; any other sees the connection's closing.
        let cancellation = match (&invocation_id, streaming) {
            (Some(id), true) => {
                let token = CancellationToken::new();
                if !self.conn.register_invocation(id, token.clone()) {
                    let text = format!("Invocation ID '{id}' is already in use.");
                    return self.complete_with_error(invocation_id, text).await;
                }
                Some(token)
            }
            // Taken from the connection only if the method asks for it.
            _ => None,
        };
        // Upload channels exist from now on, so items that follow the invocation are kept
        // even while filters run before the method binds them.
        let capacity = self.hub.options.stream_buffer_capacity.max(1);
        let uploads: Vec<_> = stream_ids
            .into_iter()
            .map(|stream_id| {
                let (items, receiver) = mpsc::channel(capacity);
                self.conn.register_upload(stream_id.clone(), items);
                (stream_id, receiver)
            })
            .collect();
        let upload_ids: Vec<SmallString> = uploads.iter().map(|(id, _)| id.clone()).collect();

        // Invocations take a slot; the read loop waits here while all are busy. As in the
        // reference, streaming invocations and methods that take upload streams do not: they
        // run in the background, and an upload's items must still be read while it runs (with
        // the default of one slot, a method reading its upload while holding the only slot
        // would otherwise leave every later message unread for as long as the upload lasts).
        let takes_uploads = method.as_ref().is_some_and(|m| m.handler.streams() > 0);
        let permit = if streaming || takes_uploads {
            None
        } else {
            let slots = self.slots.clone();
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => Ok(permit),
                Err(_) => {
                    let stalled = || {
                        tracing::warn!(
                            connection = %self.conn.id,
                            %target,
                            limit = self.hub.options.max_parallel_invocations,
                            "every invocation slot is busy: nothing more is read from this \
                             client until an invocation finishes (max_parallel_invocations)"
                        );
                    };
                    warn_if_slow(
                        slots.acquire_owned(),
                        self.hub.options.client_timeout,
                        stalled,
                    )
                    .await
                }
            };
            match permit {
                Ok(permit) => Some(permit),
                Err(_) => return,
            }
        };
        let mut prepared = Some(Prepared {
            invocation_id,
            target,
            arguments,
            method,
            streaming,
            cancellation,
            uploads,
            upload_ids,
            permit,
        });
        std::future::poll_fn(|cx| {
            self.start(cx, prepared.take().expect("polled once"));
            Poll::Ready(())
        })
        .await;
    }

    /// A plain invocation started without an `async` dispatch when nothing about it needs a
    /// wait or a reply of its own: its method exists and the caller may call it, there are no
    /// filters and no upload streams, and a slot is free. Most invocations are like this (an
    /// echo, a send), and for them the read loop neither boxes nor runs a dispatch future.
    /// Anything else is left as it was (false), for [`Dispatcher::invoke`], which checks it
    /// all again. A started invocation's id, target and arguments are taken out of it.
    fn invoke_at_once(
        &mut self,
        invocation: &mut Invocation<Arguments>,
        cx: &mut std::task::Context<'_>,
    ) -> bool {
        if !self.hub.filters.is_empty() || !invocation.stream_ids.is_empty() {
            return false;
        }
        let Some(method) = self.hub.methods.get(invocation.target.as_str()) else {
            return false;
        };
        let refused = method
            .policy
            .as_ref()
            .is_some_and(|policy| !policy.allows(self.conn.identity.as_deref()));
        if refused || method.handler.is_streaming() || method.handler.streams() > 0 {
            return false;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return false;
        };
        let method = method.clone();
        let prepared = Prepared {
            invocation_id: invocation.invocation_id.take(),
            target: std::mem::take(&mut invocation.target),
            arguments: std::mem::take(&mut invocation.arguments),
            method: Some(method),
            streaming: false,
            cancellation: None,
            uploads: Vec::new(),
            upload_ids: Vec::new(),
            permit: Some(permit),
        };
        self.start(cx, prepared);
        true
    }

    /// Calls the method of an invocation that has everything it waits for (its slot, its
    /// upload channels) and polls it once, here; what does not finish at once goes on in a task.
    fn start(&mut self, cx: &mut std::task::Context<'_>, prepared: Prepared) {
        let invocation_id = prepared.invocation_id;
        let (target, arguments) = (prepared.target, prepared.arguments);
        let (method, streaming) = (prepared.method, prepared.streaming);
        let (cancellation, permit) = (prepared.cancellation, prepared.permit);
        let (uploads, upload_ids) = (prepared.uploads, prepared.upload_ids);
        let context = Context {
            conn: self.conn.clone(),
            hub: self.hub.clone(),
        };
        // A stream's own token, for the task that sends its items; only streams have one.
        let stream_cancellation = cancellation.clone();
        // A plain invocation keeps its id in its slot, where the method borrows it to encode
        // its Completion; a stream's items and a filter (which may run the method elsewhere)
        // get a copy.
        let lend_id = !streaming && self.hub.filters.is_empty();
        let blocking_id = if lend_id { None } else { invocation_id.clone() };
        let method_name = method.as_ref().map(|m| m.name.clone());
        let bind = move |method: Option<Method>,
                         context: Context,
                         arguments: Arguments|
              -> BoxFuture<CallResult> {
            let parts = InvocationParts {
                context,
                provided: arguments.len(),
                arguments: arguments.into_iter(),
                streams_provided: uploads.len(),
                uploads: uploads.into_iter(),
                invocation_id: blocking_id,
                cancellation,
            };
            match method {
                Some(method) => method.handler.call(parts),
                None => Box::pin(std::future::ready(Err(CallError::Missing))),
            }
        };
        // Without filters the method is called directly: no chain, no boxed continuation.
        let mut call = if self.hub.filters.is_empty() {
            Either::Left(bind(method, context, arguments))
        } else {
            let invocation = HubInvocation {
                context,
                method: target.clone(),
                arguments: arguments.into_vec(),
                exists: method.is_some(),
            };
            let terminal = InvokeNext::new(move |invocation: HubInvocation| {
                let call = bind(method, invocation.context, invocation.arguments.into());
                Box::pin(async move { InvocationOutcome(call.await) })
            });
            Either::Right(
                invoke_chain(&self.hub.filters, terminal)
                    .run(invocation)
                    .map(|outcome| outcome.0),
            )
        };
        // A span per invocation, inside the connection's: the method's own events carry both.
        let span = tracing::info_span!(
            "invocation",
            method = %target,
            id = invocation_id.as_deref().unwrap_or(""),
        );
        let mut invocation_id = invocation_id;
        let lent_id = if lend_id { invocation_id.take() } else { None };
        let slot = Slot::new(self.slots.clone(), permit, lent_id);
        let started = observe::Stopwatch::start();
        // Most plain methods finish without waiting (an echo; a send that finds room in a
        // queue), so the first poll happens here, on the read loop, inside the invocation's span
        // and slot; a method that succeeded, and whose Completion fits in the queue, is done
        // without a task or any allocation of its own. Everything else (a method that has to
        // wait, an error, a panic, a full queue) goes on in the task below, from where it
        // stopped, while the read loop keeps reading (its client result, a cancellation, the
        // next invocation). Streams always get a task: they may produce for a long time.
        let (outcome, slot) = if streaming {
            (None, slot)
        } else {
            let mut slot = Some(slot);
            let (first, permit, lent_id) = {
                let _entered = span.enter();
                let slot = slot.take().expect("taken once");
                INVOCATION_SLOT.sync_scope(slot, || {
                    let first = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        std::pin::Pin::new(&mut call).poll(cx)
                    }));
                    // The method may have lent its slot back (a client result it awaits).
                    let permit = INVOCATION_SLOT.with(|slot| slot.permit.borrow_mut().take());
                    (first, permit, take_invocation_id())
                })
            };
            let outcome = match first {
                Ok(Poll::Pending) => None,
                Ok(Poll::Ready(Ok(CallOutput::Done(record)))) => {
                    let queued = match record {
                        None => Ok(()),
                        Some(record) => self.conn.queue_now(record),
                    };
                    match queued {
                        Ok(()) => {
                            drop(permit);
                            invocation_ended(
                                &self.conn,
                                &upload_ids,
                                method_name.as_deref(),
                                Outcome::Ok,
                                started,
                            );
                            return;
                        }
                        // The queue is full: the task waits for room, holding the slot.
                        Err(record) => Some(Ok(Ok(CallOutput::Done(Some(record))))),
                    }
                }
                Ok(Poll::Ready(result)) => Some(Ok(result)),
                Err(panic) => Some(Err(panic)),
            };
            (outcome, Slot::new(self.slots.clone(), permit, lent_id))
        };
        let hub = self.hub.clone();
        let conn = self.conn.clone();
        let finished = outcome.is_some();
        let outcome = match outcome {
            Some(outcome) => Either::Left(std::future::ready(outcome)),
            None => Either::Right(AssertUnwindSafe(call).catch_unwind()),
        };
        let task = INVOCATION_SLOT.scope(slot, async move {
            let outcome = outcome.await;
            let mut result = Outcome::Ok;
            let detailed = hub.options.enable_detailed_errors;
            let method_failed = |e: &super::HubError| {
                e.describe(
                    &format!("An unexpected error occurred invoking '{target}' on the server."),
                    detailed,
                )
            };
            let error_text = match outcome {
                Ok(Ok(CallOutput::Done(record))) => {
                    // The slot is held until the Completion is queued, as in the reference:
                    // completions leave in the order the invocations finished, and a client
                    // that does not read cannot have more invocations pending than slots.
                    if let Some(record) = record {
                        let _ = conn.send(record, hub.options.send_timeout).await;
                    }
                    release_slot();
                    None
                }
                Ok(Ok(CallOutput::Stream(items))) => {
                    let id = invocation_id.clone().unwrap_or_default();
                    let cancellation = stream_cancellation.unwrap_or_else(|| conn.closing_token());
                    let failed = stream_out(&hub, &conn, id, items, &cancellation).await;
                    if failed.is_some() {
                        result = Outcome::Error;
                    }
                    failed
                }
                Ok(Err(CallError::Bind(e))) => {
                    result = Outcome::BindError;
                    static BIND: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
                    if let Some(suppressed) = BIND.allow() {
                        tracing::info!(error = %e, suppressed, "invocation refused: its arguments do not bind to the method's parameters");
                    }
                    let prefix =
                        format!("Failed to invoke '{target}' due to an error on the server.");
                    Some(if detailed {
                        format!("{prefix} {}", e.detail())
                    } else {
                        prefix
                    })
                }
                Ok(Err(CallError::Missing)) => {
                    result = Outcome::UnknownMethod;
                    Some(method_missing(&target))
                }
                Ok(Err(CallError::Method(e))) => {
                    result = Outcome::Error;
                    // An error meant for the caller is the method's answer; anything else is a
                    // failure inside the server, logged as the reference logs a failed method.
                    if e.is_public() {
                        tracing::info!(error = %e, "hub method returned an error");
                    } else {
                        tracing::error!(error = %e, "hub method failed");
                    }
                    Some(method_failed(&e))
                }
                Err(_panic) => {
                    result = Outcome::Panic;
                    tracing::error!("hub method panicked");
                    let prefix =
                        format!("An unexpected error occurred invoking '{target}' on the server.");
                    Some(if detailed {
                        format!("{prefix} Panic: the hub method panicked.")
                    } else {
                        prefix
                    })
                }
            };
            release_slot();
            if let (Some(id), true) = (&invocation_id, streaming) {
                conn.finish_invocation(id);
            }
            invocation_ended(&conn, &upload_ids, method_name.as_deref(), result, started);
            match (error_text, invocation_id.or_else(take_invocation_id)) {
                (Some(text), Some(id)) => send_error(&hub, &conn, id, text).await,
                (Some(text), None) => {
                    tracing::debug!(connection = %conn.id, %target, error = %text, "non-blocking invocation failed")
                }
                (None, _) => {}
            }
        }.instrument(span));
        // A method that already finished (an error, a panic, a full queue) is answered here
        // too when that needs no wait, so its Completion keeps its place among the others.
        if finished {
            let mut task = Box::pin(task);
            if task.as_mut().poll(cx).is_pending() {
                tokio::spawn(task);
            }
            return;
        }
        tokio::spawn(task);
    }

    async fn complete_with_error(&self, invocation_id: Option<SmallString>, text: String) {
        match invocation_id {
            Some(id) => send_error(&self.hub, &self.conn, id, text).await,
            // Non-blocking invocations never get a reply, not even an error.
            None => {
                tracing::debug!(connection = %self.conn.id, error = %text, "non-blocking invocation failed")
            }
        }
    }
}

/// What every finished invocation does last, wherever it finished: the upload streams the
/// method did not finish are closed with it, and the invocation is counted.
fn invocation_ended(
    conn: &ConnectionShared,
    upload_ids: &[SmallString],
    method_name: Option<&str>,
    outcome: Outcome,
    started: observe::Stopwatch,
) {
    for stream_id in upload_ids {
        conn.remove_upload(stream_id);
    }
    let name = method_name.unwrap_or(observe::UNKNOWN_METHOD);
    observe::invocation(name, outcome, Some(started.elapsed()));
}

/// Sends a streaming method's items as the client can take them (each send waits for room in
/// the connection's queue, so a slow client slows the producer), then the final Completion.
/// Cancellation drops the stream at once. Returns the error text when the stream failed.
async fn stream_out(
    hub: &HubShared,
    conn: &ConnectionShared,
    invocation_id: SmallString,
    mut items: ItemStream,
    cancellation: &CancellationToken,
) -> Option<String> {
    loop {
        let item = tokio::select! {
            biased;
            _ = cancellation.cancelled() => None,
            item = items.next() => item,
        };
        match item {
            Some(Ok(record)) => {
                if conn.send(record, hub.options.send_timeout).await.is_err() {
                    return None;
                }
            }
            Some(Err(e)) => {
                drop(items);
                return Some(e.describe(
                    "An error occurred on the server while streaming results.",
                    hub.options.enable_detailed_errors,
                ));
            }
            None => break,
        }
    }
    // Dropping the stream stops the producer promptly, even if it was mid-item.
    drop(items);
    let end: Message<NoValue, NoValue> = Message::Completion(Completion {
        headers: Headers::new(),
        invocation_id,
        result: CompletionResult::Void,
    });
    if let Ok(record) = conn.protocol.encode_to_bytes(&end) {
        let _ = conn.send(record, hub.options.send_timeout).await;
    }
    None
}

fn method_missing(target: &str) -> String {
    format!("Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist.")
}

async fn send_error(
    hub: &HubShared,
    conn: &ConnectionShared,
    invocation_id: SmallString,
    text: String,
) {
    let message: Message<NoValue, NoValue> = Message::Completion(Completion {
        headers: Headers::new(),
        invocation_id,
        result: CompletionResult::Error(text),
    });
    match conn.protocol.encode_to_bytes(&message) {
        Ok(record) => {
            let _ = conn.send(record, hub.options.send_timeout).await;
        }
        Err(e) => tracing::error!(error = %e, "failed to encode an error completion"),
    }
}
