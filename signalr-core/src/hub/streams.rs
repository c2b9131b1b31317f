//! Streams from the client (upload streams) and cancellation of an invocation.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::HubError;
use super::handler::{CallError, FromInvocation, InvocationParts, ViaContext, ViaUpload};

/// One item of an upload stream as the read loop hands it over: a value, or the client's
/// error ending the stream.
pub(crate) use crate::connection::UploadItem;

/// A stream the client uploads as an argument (a `Subject` in the JS client, a
/// `ChannelReader`/`IAsyncEnumerable` argument in .NET). Take it as a hub method parameter; each
/// one binds the next of the invocation's stream ids.
///
/// Items are buffered up to the hub's stream buffer capacity (default 10); past it the server
/// stops reading from that client until the method consumes, as the reference does. The stream
/// ends when the client completes it; a client error or an item of the wrong type arrives as an
/// `Err`. When the method returns, streams it did not finish are closed.
pub struct UploadStream<T> {
    items: mpsc::Receiver<UploadItem>,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Stream for UploadStream<T> {
    type Item = Result<T, HubError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_recv(cx).map(|item| {
            item.map(|item| match item {
                Ok(payload) => payload
                    .deserialize()
                    .map_err(|e| HubError::new(format!("Stream item has the wrong type: {e}"))),
                Err(client_error) => Err(HubError::new(client_error)),
            })
        })
    }
}

impl<T: DeserializeOwned + Send + 'static> FromInvocation<ViaUpload> for UploadStream<T> {
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError> {
        let (_id, items) = parts
            .uploads
            .next()
            .expect("upload streams are counted before binding");
        Ok(UploadStream {
            items,
            _item: PhantomData,
        })
    }
}

/// Fires when the invocation is cancelled: the client cancelled its stream
/// (`subscription.dispose()`, a CancelInvocation message) or the connection closed. A streaming
/// method's stream is also dropped at that moment; take this parameter to stop other work too.
/// Non-streaming invocations are cancelled only by the connection closing (clients cancel
/// streams only, and the reference wires cancellation to streaming invocations).
#[derive(Clone, Debug)]
pub struct Cancellation(pub(crate) CancellationToken);

impl Cancellation {
    /// Whether the invocation has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once the invocation is cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }
}

impl FromInvocation<ViaContext> for Cancellation {
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError> {
        let token = match &parts.cancellation {
            Some(token) => token.clone(),
            None => parts.context.conn.closing_token(),
        };
        Ok(Cancellation(token))
    }
}
