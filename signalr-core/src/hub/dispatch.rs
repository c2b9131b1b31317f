//! Per-connection dispatch of received messages to hub methods.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::context::Context;
use super::filter::{invoke_chain, HubInvocation, InvocationOutcome, InvokeNext};
use super::handler::{CallError, InvocationParts};
use super::HubShared;
use crate::connection::{ConnectionShared, Flow};
use crate::protocol::{
    Arguments, Completion, CompletionResult, Headers, InboundMessage, Invocation, Message, NoValue,
};

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

    pub(crate) async fn dispatch(&mut self, message: InboundMessage) -> Flow {
        match message {
            Message::Invocation(invocation) => self.invoke(invocation).await,
            Message::StreamInvocation(invocation) => {
                // No streaming methods can be registered yet: the reference's answer for a
                // streaming call to a non-streaming (or unknown) method.
                let text = if self.hub.methods.get(&invocation.target).is_some() {
                    format!(
                        "The client attempted to invoke the non-streaming '{}' method with a streaming invocation.",
                        invocation.target
                    )
                } else {
                    method_missing(&invocation.target)
                };
                self.complete_with_error(invocation.invocation_id, text)
                    .await;
            }
            Message::Close(_) => return Flow::Stop,
            // Pings only prove liveness (the read loop noted it). Upload streams, client
            // results and stateful reconnect messages are not used by this server yet; like the
            // reference, messages for unknown invocations are ignored.
            Message::Ping
            | Message::StreamItem(_)
            | Message::Completion(_)
            | Message::CancelInvocation(_)
            | Message::Ack(_)
            | Message::Sequence(_) => {}
        }
        Flow::Continue
    }

    async fn invoke(&mut self, invocation: Invocation<Arguments>) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            ..
        } = invocation;
        let method = self.hub.methods.get(&target).cloned();
        if method.is_none() && self.hub.filters.is_empty() {
            tracing::debug!(connection = %self.conn.id, %target, "unknown hub method");
            return self
                .complete_with_error(invocation_id, method_missing(&target))
                .await;
        }
        // Authorization comes before the filters, as in the reference.
        if let Some(policy) = method.as_ref().and_then(|m| m.policy.as_ref()) {
            if !policy.allows(self.conn.identity.as_deref()) {
                let text = format!("Failed to invoke '{target}' because user is unauthorized");
                return self.complete_with_error(invocation_id, text).await;
            }
        }
        if !stream_ids.is_empty() {
            let text = format!(
                "An unexpected error occurred invoking '{target}' on the server. HubException: Client sent {} stream(s), Hub method expects 0.",
                stream_ids.len()
            );
            return self.complete_with_error(invocation_id, text).await;
        }
        // Like the reference, the read loop waits here while all slots are busy.
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let context = Context {
            conn: self.conn.clone(),
            hub: self.hub.clone(),
        };
        let invocation = HubInvocation {
            context,
            method: target.clone(),
            arguments: arguments.0,
            exists: method.is_some(),
        };
        let blocking_id = invocation_id.clone();
        let terminal = InvokeNext::new(move |invocation: HubInvocation| match method {
            None => Box::pin(std::future::ready(InvocationOutcome(Err(
                CallError::Missing,
            )))),
            Some(method) => {
                let parts = InvocationParts {
                    context: invocation.context,
                    provided: invocation.arguments.len(),
                    arguments: invocation.arguments.into_iter(),
                    invocation_id: blocking_id,
                };
                let call = method.handler.call(parts);
                Box::pin(async move { InvocationOutcome(call.await) })
            }
        });
        let call = invoke_chain(&self.hub.filters, terminal).run(invocation);
        let hub = self.hub.clone();
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(call)
                .catch_unwind()
                .await
                .map(|outcome| outcome.0);
            drop(slot);
            let detailed = hub.options.enable_detailed_errors;
            let error_text = match outcome {
                Ok(Ok(Some(record))) => {
                    let _ = conn.send(record, hub.options.send_timeout).await;
                    return;
                }
                Ok(Ok(None)) => return,
                Ok(Err(CallError::Bind(e))) => {
                    tracing::debug!(connection = %conn.id, %target, error = %e, "argument binding failed");
                    let prefix =
                        format!("Failed to invoke '{target}' due to an error on the server.");
                    if detailed {
                        format!("{prefix} {}", e.detail())
                    } else {
                        prefix
                    }
                }
                Ok(Err(CallError::Missing)) => method_missing(&target),
                Ok(Err(CallError::Method(e))) => {
                    tracing::debug!(connection = %conn.id, %target, error = %e, "hub method failed");
                    e.describe(
                        &format!("An unexpected error occurred invoking '{target}' on the server."),
                        detailed,
                    )
                }
                Err(_panic) => {
                    tracing::error!(connection = %conn.id, %target, "hub method panicked");
                    let prefix =
                        format!("An unexpected error occurred invoking '{target}' on the server.");
                    if detailed {
                        format!("{prefix} Panic: the hub method panicked.")
                    } else {
                        prefix
                    }
                }
            };
            if let Some(id) = invocation_id {
                send_error(&hub, &conn, id, error_text).await;
            } else {
                tracing::debug!(connection = %conn.id, %target, error = %error_text, "non-blocking invocation failed");
            }
        });
    }

    async fn complete_with_error(&self, invocation_id: Option<String>, text: String) {
        match invocation_id {
            Some(id) => send_error(&self.hub, &self.conn, id, text).await,
            // Non-blocking invocations never get a reply, not even an error.
            None => {
                tracing::debug!(connection = %self.conn.id, error = %text, "non-blocking invocation failed")
            }
        }
    }
}

fn method_missing(target: &str) -> String {
    format!("Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist.")
}

async fn send_error(hub: &HubShared, conn: &ConnectionShared, invocation_id: String, text: String) {
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
