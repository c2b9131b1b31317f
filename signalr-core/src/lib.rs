#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! crate docs placeholder replaced below
pub mod protocol;

mod connection;
mod error;
mod http;
mod hub;
mod lifetime;
mod options;
mod serve;
mod transport;

pub use error::Error;
pub use http::{BoxError, HubService, ResponseBody};
pub use hub::{
    BindError, ClientProxy, Clients, Context, FromContext, FromInvocation, Handler, Hub,
    HubBuilder, HubClients, HubContext, HubError, IntoArguments, IntoCompletion, IntoHookResult,
    InvocationParts, ParameterKind, ViaArgument, ViaContext, ViaPayload, ViaResult, ViaValue,
};
pub use serve::{serve, serve_with_shutdown, shutdown_signal};
pub use transport::TransportKind;
