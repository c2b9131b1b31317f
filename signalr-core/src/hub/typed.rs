//! Typed clients (`Hub<T>` and `IHubContext<THub, T>` in ASP.NET Core): the methods clients
//! offer are declared once, with their argument types, and every send is checked by the
//! compiler instead of by a string and a tuple.
//!
//! ```
//! use signalr_core::{client_methods, Hub, HubError, TypedClients};
//!
//! client_methods! {
//!     /// What a chat client can be sent.
//!     pub enum ChatClient {
//!         ReceiveMessage { user: String, text: String },
//!         UserLeft { user: String },
//!     }
//! }
//!
//! async fn send(clients: TypedClients<ChatClient>, user: String, text: String) -> Result<(), HubError> {
//!     clients.others().send(ChatClient::ReceiveMessage { user, text }).await?;
//!     Ok(())
//! }
//!
//! let hub = Hub::builder().method("Send", send).build();
//! // From outside a method: the same declarations, through a typed hub context.
//! let context = hub.context().typed::<ChatClient>();
//! # let _ = context;
//! ```

use std::marker::PhantomData;

use serde::{Serialize, Serializer};

use super::clients::{ClientProxy, Clients, HubClients, HubContext, IntoArguments};
use super::context::{Context, FromContext};
use crate::error::Error;

/// A message a client method receives: which method, and its arguments in order. Declare
/// the set a client offers with [`client_methods!`](crate::client_methods); each variant is
/// one client method, named like the variant.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not describe client methods",
    note = "declare the client's methods with `signalr_core::client_methods!`"
)]
pub trait ClientMessage: Send + Sync + 'static {
    /// The client method's name (`connection.on(name, ...)` in the JS client).
    fn method(&self) -> &'static str;
    /// Writes the arguments as the invocation's argument array.
    fn serialize_arguments<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

/// Declares the methods a client offers as an enum, one variant per method with named,
/// typed arguments (in order). See [the module docs](crate::TypedClients) for an example.
#[macro_export]
macro_rules! client_methods {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident { $($field:ident : $ty:ty),* $(,)? }
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                #[allow(missing_docs)]
                $variant { $($field: $ty),* },
            )*
        }

        impl $crate::ClientMessage for $name {
            fn method(&self) -> &'static str {
                match self {
                    $($name::$variant { .. } => stringify!($variant),)*
                }
            }

            fn serialize_arguments<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                use $crate::__private::serde::ser::SerializeSeq as _;
                match self {
                    $(
                        $name::$variant { $($field),* } => {
                            let count = 0 $(+ { let _ = stringify!($field); 1 })*;
                            let mut arguments = serializer.serialize_seq(Some(count))?;
                            $(arguments.serialize_element($field)?;)*
                            arguments.end()
                        }
                    )*
                }
            }
        }
    };
}

/// A [`ClientMessage`]'s arguments as the argument list a proxy sends.
struct ArgumentsOf<C>(C);

impl<C: ClientMessage> Serialize for ArgumentsOf<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_arguments(serializer)
    }
}

impl<C: ClientMessage> IntoArguments for ArgumentsOf<C> {
    type Arguments = Self;
    fn into_arguments(self) -> Self {
        self
    }
}

/// Clients reached with typed messages: a [`ClientProxy`] that only sends `C`.
pub struct TypedClientProxy<C> {
    proxy: ClientProxy,
    _messages: PhantomData<fn(C)>,
}

impl<C: ClientMessage> TypedClientProxy<C> {
    fn new(proxy: ClientProxy) -> Self {
        TypedClientProxy {
            proxy,
            _messages: PhantomData,
        }
    }

    /// Sends the message to every connection this proxy targets (see [`ClientProxy::send`]).
    pub async fn send(&self, message: C) -> Result<(), Error> {
        let method = message.method();
        self.proxy.send(method, ArgumentsOf(message)).await
    }

    /// The untyped proxy, for client results ([`ClientProxy::invoke`]).
    pub fn untyped(&self) -> &ClientProxy {
        &self.proxy
    }
}

/// Every target of [`Clients`] and [`HubClients`], typed.
macro_rules! typed_targets {
    ($inner:ident) => {
        /// Every connection.
        pub fn all(&self) -> TypedClientProxy<C> {
            TypedClientProxy::new(self.$inner.all())
        }

        /// Every connection but the given ones.
        pub fn all_except<I, S>(&self, excluded: I) -> TypedClientProxy<C>
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            TypedClientProxy::new(self.$inner.all_except(excluded))
        }

        /// One connection.
        pub fn client(&self, connection_id: impl Into<String>) -> TypedClientProxy<C> {
            TypedClientProxy::new(self.$inner.client(connection_id))
        }

        /// Several connections.
        pub fn clients<I, S>(&self, connection_ids: I) -> TypedClientProxy<C>
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            TypedClientProxy::new(self.$inner.clients(connection_ids))
        }

        /// The members of a group.
        pub fn group(&self, group: impl Into<String>) -> TypedClientProxy<C> {
            TypedClientProxy::new(self.$inner.group(group))
        }

        /// The members of several groups (each connection once).
        pub fn groups<I, S>(&self, groups: I) -> TypedClientProxy<C>
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            TypedClientProxy::new(self.$inner.groups(groups))
        }

        /// The members of a group but the given connections.
        pub fn group_except<I, S>(
            &self,
            group: impl Into<String>,
            excluded: I,
        ) -> TypedClientProxy<C>
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            TypedClientProxy::new(self.$inner.group_except(group, excluded))
        }

        /// Every connection of a user.
        pub fn user(&self, user_id: impl Into<String>) -> TypedClientProxy<C> {
            TypedClientProxy::new(self.$inner.user(user_id))
        }

        /// Every connection of several users.
        pub fn users<I, S>(&self, user_ids: I) -> TypedClientProxy<C>
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            TypedClientProxy::new(self.$inner.users(user_ids))
        }
    };
}

/// The caller's view of clients, typed (`Hub<T>.Clients`): take it as a hub method
/// parameter, like [`Clients`].
pub struct TypedClients<C> {
    clients: Clients,
    _messages: PhantomData<fn(C)>,
}

impl<C: ClientMessage> TypedClients<C> {
    /// The calling connection.
    pub fn caller(&self) -> TypedClientProxy<C> {
        TypedClientProxy::new(self.clients.caller())
    }

    /// Every connection but the caller.
    pub fn others(&self) -> TypedClientProxy<C> {
        TypedClientProxy::new(self.clients.others())
    }

    /// The members of a group but the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> TypedClientProxy<C> {
        TypedClientProxy::new(self.clients.others_in_group(group))
    }

    typed_targets!(clients);
}

impl<C: ClientMessage> FromContext for TypedClients<C> {
    type Rejection = std::convert::Infallible;

    fn from_context(context: &Context) -> Result<Self, Self::Rejection> {
        Ok(TypedClients {
            clients: context.clients(),
            _messages: PhantomData,
        })
    }
}

/// A typed handle to the hub from anywhere (`IHubContext<THub, T>`): get one with
/// [`HubContext::typed`].
pub struct TypedHubContext<C> {
    context: HubContext,
    clients: HubClients,
    _messages: PhantomData<fn(C)>,
}

impl<C> Clone for TypedHubContext<C> {
    fn clone(&self) -> Self {
        TypedHubContext {
            context: self.context.clone(),
            clients: self.context.clients(),
            _messages: PhantomData,
        }
    }
}

/// A typed hub context as a method parameter, for handing on to other tasks.
impl<C: ClientMessage> FromContext for TypedHubContext<C> {
    type Rejection = std::convert::Infallible;

    fn from_context(context: &Context) -> Result<Self, Self::Rejection> {
        Ok(TypedHubContext::new(context.hub()))
    }
}

impl<C: ClientMessage> TypedHubContext<C> {
    pub(crate) fn new(context: HubContext) -> Self {
        TypedHubContext {
            clients: context.clients(),
            context,
            _messages: PhantomData,
        }
    }

    /// The untyped context (groups, presence, client results).
    pub fn untyped(&self) -> &HubContext {
        &self.context
    }

    typed_targets!(clients);
}
