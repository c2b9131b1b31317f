//! Hub methods as plain async functions, bound the way axum binds handlers.
//!
//! Each parameter is either *context* (types implementing [`FromContext`]: [`Context`],
//! [`Clients`](crate::Clients), [`HubContext`](crate::HubContext)) or a *positional argument*
//! (any `serde::de::DeserializeOwned` type, bound from the invocation's arguments in order).
//! A marker type parameter tells the two apart at compile time, so both can be plain
//! parameters: `async fn send(clients: Clients, room: String, text: String)`.
//!
//! Upload streams are parameters too ([`UploadStream<T>`](crate::UploadStream), fed by the
//! client's stream ids in order), as is the invocation's [`Cancellation`](crate::Cancellation).
//!
//! The return value is any `Serialize` value (`()` becomes a null result, as the reference
//! sends for void methods), a `Result<T, E>` whose error converts into [`HubError`], or a
//! `Stream` of values (or of `Result`s), which makes the method a streaming method.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::context::{Context, FromContext};
use super::error::HubError;
use crate::protocol::{
    ArgumentsIntoIter, Completion, CompletionResult, Headers, Message, NoValue, Payload,
    SmallString, StreamItem,
};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The received arguments of one invocation, consumed by the extractors in order.
pub struct InvocationParts {
    pub(crate) context: Context,
    pub(crate) arguments: ArgumentsIntoIter,
    pub(crate) provided: usize,
    pub(crate) uploads: std::vec::IntoIter<(
        SmallString,
        tokio::sync::mpsc::Receiver<super::streams::UploadItem>,
    )>,
    pub(crate) streams_provided: usize,
    pub(crate) invocation_id: Option<SmallString>,
    /// A streaming invocation's own token; `None` for the connection's closing, which is
    /// only taken (a lock in the token's tree) when a method asks for it.
    pub(crate) cancellation: Option<CancellationToken>,
}

/// Why arguments could not be bound to a method's parameters.
#[derive(Debug)]
pub struct BindError(BindErrorKind);

#[derive(Debug)]
enum BindErrorKind {
    Count { provided: usize, expected: usize },
    Types(String),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            BindErrorKind::Count { provided, expected } => {
                write!(f, "{provided} argument(s) given, {expected} expected")
            }
            BindErrorKind::Types(e) => write!(f, "argument type mismatch: {e}"),
        }
    }
}

impl BindError {
    pub(crate) fn detail(&self) -> String {
        match &self.0 {
            BindErrorKind::Count { provided, expected } => format!(
                "InvalidDataException: Invocation provides {provided} argument(s) but target expects {expected}."
            ),
            BindErrorKind::Types(_) => "InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.".to_owned(),
        }
    }
}

/// How an invocation failed, before or inside the method.
#[doc(hidden)]
pub enum CallError {
    Bind(BindError),
    Method(HubError),
    /// No method has that name.
    Missing,
}

/// What a method produced.
#[doc(hidden)]
pub enum CallOutput {
    /// The encoded success Completion (`None` for a non-blocking invocation).
    Done(Option<Bytes>),
    /// Encoded StreamItem records, for a streaming method.
    Stream(ItemStream),
}

/// The encoded StreamItem records of a streaming method, or the error that ended it.
#[doc(hidden)]
pub type ItemStream = Pin<Box<dyn Stream<Item = Result<Bytes, HubError>> + Send>>;

#[doc(hidden)]
pub type CallResult = Result<CallOutput, CallError>;

/// A value that can be taken from an invocation: context or a positional argument.
/// Implemented for you; write [`FromContext`] for your own context extractors.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a hub method parameter",
    label = "neither an argument nor context",
    note = "a parameter is either a positional argument (a `serde::Deserialize` type, `Payload`, `UploadStream<T>`, `Cancellation`) or context (a `FromContext` type: Context, Clients, State<S>, ...)"
)]
pub trait FromInvocation<M>: Sized {
    #[doc(hidden)]
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError>;
}

/// Marker: the parameter is the next positional argument.
#[doc(hidden)]
pub struct ViaArgument;
/// Marker: the parameter is the next positional argument, kept encoded ([`Payload`]).
#[doc(hidden)]
pub struct ViaPayload;
/// Marker: the parameter comes from the call context.
#[doc(hidden)]
pub struct ViaContext;
/// Marker: the parameter is the next upload stream.
#[doc(hidden)]
pub struct ViaUpload;

/// How many positional arguments and upload streams a parameter kind consumes.
#[doc(hidden)]
pub trait ParameterKind {
    const ARGUMENTS: usize;
    const STREAMS: usize = 0;
}
impl ParameterKind for ViaArgument {
    const ARGUMENTS: usize = 1;
}
impl ParameterKind for ViaPayload {
    const ARGUMENTS: usize = 1;
}
impl ParameterKind for ViaContext {
    const ARGUMENTS: usize = 0;
}
impl ParameterKind for ViaUpload {
    const ARGUMENTS: usize = 0;
    const STREAMS: usize = 1;
}

impl InvocationParts {
    fn next_argument(&mut self) -> Result<Payload, BindError> {
        self.arguments.next().ok_or(BindError(BindErrorKind::Count {
            provided: self.provided,
            expected: self.provided + 1,
        }))
    }
}

fn type_mismatch(e: impl std::fmt::Display) -> BindError {
    BindError(BindErrorKind::Types(e.to_string()))
}

impl<T: DeserializeOwned> FromInvocation<ViaArgument> for T {
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError> {
        let argument = parts.next_argument().map_err(CallError::Bind)?;
        argument
            .deserialize()
            .map_err(|e| CallError::Bind(type_mismatch(e)))
    }
}

/// An argument of any type, kept encoded (to forward or echo it unchanged).
impl FromInvocation<ViaPayload> for Payload {
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError> {
        parts.next_argument().map_err(CallError::Bind)
    }
}

/// An array argument whose elements are kept encoded.
impl FromInvocation<ViaPayload> for Vec<Payload> {
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError> {
        let argument = parts.next_argument().map_err(CallError::Bind)?;
        argument
            .elements()
            .map_err(|e| CallError::Bind(type_mismatch(e)))
    }
}

/// A context extractor; its rejection fails the call as the method's own error would.
impl<T: FromContext> FromInvocation<ViaContext> for T {
    fn from_invocation(parts: &mut InvocationParts) -> Result<Self, CallError> {
        T::from_context(&parts.context).map_err(|rejection| CallError::Method(rejection.into()))
    }
}

/// What a hub method may return: a value, a `Result`, or a stream.
#[diagnostic::on_unimplemented(
    message = "a hub method cannot return `{Self}`",
    note = "return a `serde::Serialize` value, a `Result<T, E>` with `E: Into<HubError>`, or a `Stream` of values or of `Result`s"
)]
pub trait IntoCompletion<M>: Send {
    /// Whether the method streams its results (clients call it with `stream()`).
    #[doc(hidden)]
    const STREAMING: bool = false;
    #[doc(hidden)]
    fn into_output(self, context: &Context, invocation_id: Option<SmallString>) -> CallResult;
}

/// Marker: a plain value.
#[doc(hidden)]
pub struct ViaValue;
/// Marker: a `Result`.
#[doc(hidden)]
pub struct ViaResult;
/// Marker: a stream of values.
#[doc(hidden)]
pub struct ViaStream;
/// Marker: a stream of `Result`s (an error ends the stream with an error Completion).
#[doc(hidden)]
pub struct ViaTryStream;

impl<T: Serialize + Send> IntoCompletion<ViaValue> for T {
    fn into_output(self, context: &Context, invocation_id: Option<SmallString>) -> CallResult {
        finish(context, invocation_id, Ok(self))
    }
}

impl<T: Serialize + Send, E: Into<HubError> + Send> IntoCompletion<ViaResult> for Result<T, E> {
    fn into_output(self, context: &Context, invocation_id: Option<SmallString>) -> CallResult {
        finish(context, invocation_id, self.map_err(Into::into))
    }
}

impl<S, T> IntoCompletion<ViaStream> for S
where
    S: Stream<Item = T> + Send + 'static,
    T: Serialize + Send + 'static,
{
    const STREAMING: bool = true;
    fn into_output(self, context: &Context, invocation_id: Option<SmallString>) -> CallResult {
        Ok(CallOutput::Stream(encode_items(
            self.map(Ok::<T, HubError>),
            context,
            invocation_id,
        )))
    }
}

impl<S, T, E> IntoCompletion<ViaTryStream> for S
where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Into<HubError> + Send + 'static,
{
    const STREAMING: bool = true;
    fn into_output(self, context: &Context, invocation_id: Option<SmallString>) -> CallResult {
        Ok(CallOutput::Stream(encode_items(
            self.map(|item| item.map_err(Into::into)),
            context,
            invocation_id,
        )))
    }
}

/// Marker: a `Result` whose success is a stream of `Result`s; the error fails the invocation
/// before any item is sent, as a streaming method that throws before returning does in the
/// reference.
#[doc(hidden)]
pub struct ViaTryStreamResult;

impl<S, T, E, F> IntoCompletion<ViaTryStreamResult> for Result<S, F>
where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Into<HubError> + Send + 'static,
    F: Into<HubError> + Send,
{
    const STREAMING: bool = true;
    fn into_output(self, context: &Context, invocation_id: Option<SmallString>) -> CallResult {
        match self {
            Ok(items) => items.into_output(context, invocation_id),
            Err(error) => Err(CallError::Method(error.into())),
        }
    }
}

/// Encodes each item as a StreamItem record of the caller's protocol.
fn encode_items<S, T>(items: S, context: &Context, invocation_id: Option<SmallString>) -> ItemStream
where
    S: Stream<Item = Result<T, HubError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let protocol = context.protocol();
    let invocation_id = invocation_id.unwrap_or_default();
    Box::pin(items.map(move |item| {
        let item = item?;
        let message: Message<NoValue, &T> = Message::StreamItem(StreamItem {
            headers: Headers::new(),
            invocation_id: invocation_id.clone(),
            item: &item,
        });
        protocol
            .encode_to_bytes(&message)
            .map_err(|e| HubError::internal(e.to_string()))
    }))
}

/// An async function usable as a hub method. Implemented for functions of up to eight
/// parameters; `T` is inferred and only tells the implementations apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid hub method",
    label = "not a hub method",
    note = "a hub method is an `async fn` (or a closure returning a future) of at most 8 parameters, each a positional argument (`serde::Deserialize`) or context (`FromContext`), returning a `Serialize` value, a `Result<T, E>` with `E: Into<HubError>`, or a `Stream`"
)]
pub trait Handler<T>: Clone + Send + Sync + 'static {
    #[doc(hidden)]
    fn call(self, parts: InvocationParts) -> BoxFuture<CallResult>;
    #[doc(hidden)]
    fn arity() -> usize;
    #[doc(hidden)]
    fn streams() -> usize;
    #[doc(hidden)]
    fn is_streaming() -> bool;
}

/// Encodes the success Completion for a blocking invocation.
fn finish<V: Serialize>(
    context: &Context,
    invocation_id: Option<SmallString>,
    result: Result<V, HubError>,
) -> CallResult {
    let value = result.map_err(CallError::Method)?;
    let encode = |invocation_id: SmallString| {
        let message: Message<NoValue, &V> = Message::Completion(Completion {
            headers: Headers::new(),
            invocation_id,
            result: CompletionResult::Value(&value),
        });
        // The id goes back to its owner even when the value's `Serialize` panics: the
        // invocation's error Completion needs it.
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            context.protocol().encode_to_bytes(&message)
        }));
        let Message::Completion(Completion { invocation_id, .. }) = message else {
            unreachable!("a Completion was built above")
        };
        (invocation_id, encoded)
    };
    let encoded = match invocation_id {
        Some(invocation_id) => encode(invocation_id).1,
        // The id is the running invocation's, lent (see `dispatch`); without one, the
        // invocation is non-blocking and gets no Completion.
        None => match super::dispatch::lend_invocation_id(encode) {
            Some(encoded) => encoded,
            None => return Ok(CallOutput::Done(None)),
        },
    };
    match encoded {
        Ok(Ok(record)) => Ok(CallOutput::Done(Some(record))),
        Ok(Err(e)) => Err(CallError::Method(HubError::internal(e.to_string()))),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

macro_rules! impl_handler {
    ($($ty:ident $marker:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, Fut, R, MR, $($ty, $marker,)*> Handler<(MR, $(($marker, $ty),)*)> for F
        where
            F: Fn($($ty),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoCompletion<MR>,
            $($ty: FromInvocation<$marker> + Send + 'static, $marker: ParameterKind,)*
        {
            fn call(self, mut parts: InvocationParts) -> BoxFuture<CallResult> {
                let expected = <Self as Handler<(MR, $(($marker, $ty),)*)>>::arity();
                if parts.provided != expected {
                    let error = BindError(BindErrorKind::Count { provided: parts.provided, expected });
                    return Box::pin(std::future::ready(Err(CallError::Bind(error))));
                }
                let streams = <Self as Handler<(MR, $(($marker, $ty),)*)>>::streams();
                if parts.streams_provided != streams {
                    let error = HubError::new(format!(
                        "Client sent {} stream(s), Hub method expects {streams}.",
                        parts.streams_provided
                    ));
                    return Box::pin(std::future::ready(Err(CallError::Method(error))));
                }
                $(
                    let $ty = match <$ty as FromInvocation<$marker>>::from_invocation(&mut parts) {
                        Ok(value) => value,
                        Err(error) => return Box::pin(std::future::ready(Err(error))),
                    };
                )*
                let InvocationParts { context, invocation_id, .. } = parts;
                Box::pin(async move {
                    self($($ty),*).await.into_output(&context, invocation_id)
                })
            }

            fn arity() -> usize {
                0 $(+ <$marker as ParameterKind>::ARGUMENTS)*
            }

            fn streams() -> usize {
                0 $(+ <$marker as ParameterKind>::STREAMS)*
            }

            fn is_streaming() -> bool {
                <R as IntoCompletion<MR>>::STREAMING
            }
        }
    };
}

impl_handler!();
impl_handler!(T1 M1);
impl_handler!(T1 M1, T2 M2);
impl_handler!(T1 M1, T2 M2, T3 M3);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7);
impl_handler!(T1 M1, T2 M2, T3 M3, T4 M4, T5 M5, T6 M6, T7 M7, T8 M8);

/// A handler with its types erased, stored in the method table.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(&self, parts: InvocationParts) -> BoxFuture<CallResult>;
    fn is_streaming(&self) -> bool;
    /// How many upload streams the method takes.
    fn streams(&self) -> usize;
}

pub(crate) struct HandlerFn<H, T> {
    pub(crate) handler: H,
    pub(crate) _marker: std::marker::PhantomData<fn() -> T>,
}

impl<H: Handler<T>, T: 'static> ErasedHandler for HandlerFn<H, T> {
    fn call(&self, parts: InvocationParts) -> BoxFuture<CallResult> {
        self.handler.clone().call(parts)
    }

    fn is_streaming(&self) -> bool {
        H::is_streaming()
    }

    fn streams(&self) -> usize {
        H::streams()
    }
}

/// What a connection hook may return: nothing, or a `Result` whose error fails the hook.
pub trait IntoHookResult: Send {
    #[doc(hidden)]
    fn into_hook_result(self) -> Result<(), HubError>;
}

impl IntoHookResult for () {
    fn into_hook_result(self) -> Result<(), HubError> {
        Ok(())
    }
}

impl<E: Into<HubError> + Send> IntoHookResult for Result<(), E> {
    fn into_hook_result(self) -> Result<(), HubError> {
        self.map_err(Into::into)
    }
}
