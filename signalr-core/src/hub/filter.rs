//! Hub filters: middleware around every invocation and around connect and disconnect (the
//! counterpart of `IHubFilter`). Filters run in registration order, the first outermost; each
//! decides whether to call `next`, and may change the invocation or the outcome on the way.
//!
//! Unlike the reference, calls to methods that do not exist pass through the filters too
//! ([`HubInvocation::method_exists`] is `false`), so logging and rate limiting see them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::context::Context;
use super::error::HubError;
use super::handler::{CallError, CallResult};
use crate::protocol::{Payload, SmallString};

/// A boxed, sendable future, as filters return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The rest of the chain: the next filter, or finally the method (or hook) itself.
pub struct Next<I, O> {
    run: Box<dyn FnOnce(I) -> BoxFuture<'static, O> + Send>,
}

impl<I, O> Next<I, O> {
    pub(crate) fn new(run: impl FnOnce(I) -> BoxFuture<'static, O> + Send + 'static) -> Self {
        Next { run: Box::new(run) }
    }

    /// Runs the rest of the chain with `input`.
    pub fn run(self, input: I) -> BoxFuture<'static, O> {
        (self.run)(input)
    }
}

/// One invocation as filters see it. The arguments are still encoded ([`Payload`]); a filter
/// may inspect or replace them before calling `next`.
pub struct HubInvocation {
    pub(crate) context: Context,
    pub(crate) method: SmallString,
    pub(crate) arguments: Vec<Payload>,
    pub(crate) exists: bool,
}

impl HubInvocation {
    /// The calling connection.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The method name as the client sent it.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The arguments, still encoded.
    pub fn arguments(&self) -> &[Payload] {
        &self.arguments
    }

    /// The arguments, to change before the method binds them.
    pub fn arguments_mut(&mut self) -> &mut Vec<Payload> {
        &mut self.arguments
    }

    /// Whether the hub has a method of this name.
    pub fn method_exists(&self) -> bool {
        self.exists
    }
}

/// How an invocation ended, as it passes back through the filters.
pub struct InvocationOutcome(pub(crate) CallResult);

impl InvocationOutcome {
    /// Ends the invocation with an error (the client receives it like a method's error;
    /// [`HubError::new`] messages are shown to the client).
    pub fn error(error: HubError) -> Self {
        InvocationOutcome(Err(CallError::Method(error)))
    }

    /// Whether the method succeeded.
    pub fn is_ok(&self) -> bool {
        self.0.is_ok()
    }
}

/// The continuation of an invocation filter.
pub type InvokeNext = Next<HubInvocation, InvocationOutcome>;
/// The continuation of a connect filter.
pub type ConnectNext = Next<Context, Result<(), HubError>>;
/// The continuation of a disconnect filter.
pub type DisconnectNext = Next<(Context, Option<String>), ()>;

/// Middleware around hub methods and connection hooks. Every method has a pass-through
/// default; implement the ones you need.
pub trait HubFilter: Send + Sync + 'static {
    /// Around every invocation (including calls to unknown methods).
    fn invoke<'a>(
        &'a self,
        invocation: HubInvocation,
        next: InvokeNext,
    ) -> BoxFuture<'a, InvocationOutcome> {
        next.run(invocation)
    }

    /// Around `on_connected`; an error refuses the connection (it is closed with the error).
    fn on_connected<'a>(
        &'a self,
        context: Context,
        next: ConnectNext,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        next.run(context)
    }

    /// Around `on_disconnected`.
    fn on_disconnected<'a>(
        &'a self,
        context: Context,
        error: Option<String>,
        next: DisconnectNext,
    ) -> BoxFuture<'a, ()> {
        next.run((context, error))
    }
}

/// An invocation filter from an async closure: `filter_fn(|invocation, next| async move { ... })`.
pub fn filter_fn<F, Fut>(filter: F) -> impl HubFilter
where
    F: Fn(HubInvocation, InvokeNext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = InvocationOutcome> + Send + 'static,
{
    struct FilterFn<F>(F);
    impl<F, Fut> HubFilter for FilterFn<F>
    where
        F: Fn(HubInvocation, InvokeNext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = InvocationOutcome> + Send + 'static,
    {
        fn invoke<'a>(
            &'a self,
            invocation: HubInvocation,
            next: InvokeNext,
        ) -> BoxFuture<'a, InvocationOutcome> {
            Box::pin((self.0)(invocation, next))
        }
    }
    FilterFn(filter)
}

pub(crate) type Filters = Arc<[Arc<dyn HubFilter>]>;

/// Wraps `terminal` in every filter, the first registered outermost.
pub(crate) fn invoke_chain(filters: &Filters, terminal: InvokeNext) -> InvokeNext {
    filters.iter().rev().fold(terminal, |next, filter| {
        let filter = filter.clone();
        Next::new(move |invocation| Box::pin(async move { filter.invoke(invocation, next).await }))
    })
}

pub(crate) fn connect_chain(filters: &Filters, terminal: ConnectNext) -> ConnectNext {
    filters.iter().rev().fold(terminal, |next, filter| {
        let filter = filter.clone();
        Next::new(move |context| Box::pin(async move { filter.on_connected(context, next).await }))
    })
}

pub(crate) fn disconnect_chain(filters: &Filters, terminal: DisconnectNext) -> DisconnectNext {
    filters.iter().rev().fold(terminal, |next, filter| {
        let filter = filter.clone();
        Next::new(move |(context, error)| {
            Box::pin(async move { filter.on_disconnected(context, error, next).await })
        })
    })
}
