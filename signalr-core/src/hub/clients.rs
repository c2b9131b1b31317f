//! Sending to clients: `Clients.All`, `Caller`, `Others`, `Client(id)`, `Clients(ids)`, from a
//! hub method or from anywhere through a [`HubContext`].

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::Ordering;

use super::dispatch::with_slot_released;
use super::HubShared;
use crate::connection::ConnectionShared;
use crate::error::{Error, Kind};
use crate::lifetime::backplane::{Audience, Backplane, PresenceQuery, SerializedMessage};
use crate::lifetime::record::LazyRecord;
use crate::protocol::{Headers, Invocation, Message, NoValue, Payload, SmallString};

/// A cloneable handle to a running hub, usable from any task (a timer, an HTTP handler): the
/// counterpart of `IHubContext`.
#[derive(Clone)]
pub struct HubContext {
    hub: Arc<HubShared>,
}

impl HubContext {
    pub(crate) fn new(hub: Arc<HubShared>) -> Self {
        HubContext { hub }
    }

    /// The same handle with typed client methods (`IHubContext<THub, T>`); see
    /// [`client_methods!`](crate::client_methods).
    pub fn typed<C: super::typed::ClientMessage>(&self) -> super::typed::TypedHubContext<C> {
        super::typed::TypedHubContext::new(self.clone())
    }

    /// The hub's application state of type `S` (see [`HubBuilder::with_state`](crate::HubBuilder::with_state)).
    pub fn state<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.hub.state.get::<S>().cloned()
    }

    /// Proxies to reach clients.
    pub fn clients(&self) -> HubClients {
        HubClients {
            hub: self.hub.clone(),
        }
    }

    /// How many connections are open right now.
    pub fn connection_count(&self) -> usize {
        self.hub.registry.len()
    }

    /// Adds and removes connections to and from groups.
    pub fn groups(&self) -> Groups {
        Groups {
            hub: self.hub.clone(),
        }
    }

    /// Whether the backplane reaches the other processes right now; `None` without one (a
    /// readiness probe's answer).
    pub fn backplane_healthy(&self) -> Option<bool> {
        self.hub.backplane.as_ref().map(|b| b.is_healthy())
    }

    /// Who is connected: users, their connections, group members.
    pub fn presence(&self) -> Presence {
        Presence {
            hub: self.hub.clone(),
        }
    }
}

/// Group membership, from a hub method or a [`HubContext`]. Groups are named by any string
/// (case-sensitive), exist while they have members, and a connection leaves all of its groups
/// when it disconnects.
#[derive(Clone)]
pub struct Groups {
    pub(crate) hub: Arc<HubShared>,
}

impl Groups {
    /// Adds a connection to a group. Adding an unknown connection is a no-op, as in the
    /// reference. A send to the group issued after this returns reaches the connection.
    ///
    /// With a backplane, a connection on another process is added by its owner, and this
    /// waits for the owner's acknowledgement (an unknown connection then fails with a timeout,
    /// as in the reference).
    pub async fn add(&self, connection_id: &str, group: &str) -> Result<(), Error> {
        if self.hub.add_local_to_group(connection_id, group).await {
            return Ok(());
        }
        match &self.hub.backplane {
            Some(backplane) => backplane.add_to_group(connection_id, group).await,
            None => Ok(()),
        }
    }

    /// Removes a connection from a group (on whichever process it lives, with a backplane).
    pub async fn remove(&self, connection_id: &str, group: &str) -> Result<(), Error> {
        if self.hub.remove_local_from_group(connection_id, group) {
            return Ok(());
        }
        match &self.hub.backplane {
            Some(backplane) => backplane.remove_from_group(connection_id, group).await,
            None => Ok(()),
        }
    }
}

/// Presence, which the reference lacks: who is online and where. With a backplane the answers
/// cover every process; this process's own part is always current, other processes' parts
/// are as current as the backplane (typically milliseconds behind). While the backplane is
/// unreachable the answers fail with [`Error::is_backplane`]; the `local_*` variants answer
/// for this process alone, without waiting.
#[derive(Clone)]
pub struct Presence {
    hub: Arc<HubShared>,
}

impl Presence {
    async fn ask(
        &self,
        query: PresenceQuery<'_>,
        local: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        let Some(backplane) = &self.hub.backplane else {
            return Ok(local);
        };
        let mut all = backplane.presence(query).await?;
        all.extend(local);
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// User ids with at least one open connection.
    pub async fn online_users(&self) -> Result<Vec<String>, Error> {
        self.ask(PresenceQuery::OnlineUsers, self.local_online_users())
            .await
    }

    /// Whether the user has at least one open connection.
    pub async fn is_online(&self, user_id: &str) -> Result<bool, Error> {
        if !self.local_user_connections(user_id).is_empty() {
            return Ok(true);
        }
        Ok(!self.user_connections(user_id).await?.is_empty())
    }

    /// The connection ids of a user (several tabs and devices).
    pub async fn user_connections(&self, user_id: &str) -> Result<Vec<String>, Error> {
        self.ask(
            PresenceQuery::UserConnections(user_id),
            self.local_user_connections(user_id),
        )
        .await
    }

    /// The connection ids in a group.
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>, Error> {
        self.ask(
            PresenceQuery::GroupMembers(group),
            self.local_group_members(group),
        )
        .await
    }

    /// How many connections a group has.
    pub async fn group_size(&self, group: &str) -> Result<usize, Error> {
        if self.hub.backplane.is_none() {
            return Ok(self.hub.registry.group_size(group));
        }
        Ok(self.group_members(group).await?.len())
    }

    /// The user a connection belongs to, if it is connected and has a user id.
    pub async fn connection_user(&self, connection_id: &str) -> Result<Option<String>, Error> {
        if let Some(user) = self.local_connection_user(connection_id) {
            return Ok(Some(user));
        }
        if self.hub.registry.get(connection_id).is_some() {
            return Ok(None);
        }
        let users = self
            .ask(PresenceQuery::ConnectionUser(connection_id), Vec::new())
            .await?;
        Ok(users.into_iter().next())
    }

    /// The groups a connection is in.
    pub async fn connection_groups(&self, connection_id: &str) -> Result<Vec<String>, Error> {
        if self.hub.registry.get(connection_id).is_some() {
            return Ok(self.local_connection_groups(connection_id));
        }
        self.ask(PresenceQuery::ConnectionGroups(connection_id), Vec::new())
            .await
    }

    /// User ids with a connection on this process.
    pub fn local_online_users(&self) -> Vec<String> {
        self.hub.registry.online_users()
    }

    /// A user's connections on this process.
    pub fn local_user_connections(&self, user_id: &str) -> Vec<String> {
        self.hub
            .registry
            .user_connections(&[user_id.to_owned()])
            .iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// A group's members on this process.
    pub fn local_group_members(&self, group: &str) -> Vec<String> {
        self.hub
            .registry
            .group_members(&[group.to_owned()], &[])
            .iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// The user of a connection on this process.
    pub fn local_connection_user(&self, connection_id: &str) -> Option<String> {
        self.hub
            .registry
            .get(connection_id)
            .and_then(|conn| conn.user_id.as_ref().map(|id| id.to_string()))
    }

    /// The groups of a connection on this process.
    pub fn local_connection_groups(&self, connection_id: &str) -> Vec<String> {
        self.hub
            .registry
            .get(connection_id)
            .map(|conn| conn.groups())
            .unwrap_or_default()
    }
}

/// Client proxies available everywhere.
#[derive(Clone)]
pub struct HubClients {
    hub: Arc<HubShared>,
}

impl HubClients {
    fn proxy(&self, target: Target) -> ClientProxy {
        ClientProxy {
            hub: self.hub.clone(),
            target,
        }
    }

    /// Every connection.
    pub fn all(&self) -> ClientProxy {
        self.proxy(Target::All(Vec::new()))
    }

    /// Every connection but the given ids.
    pub fn all_except<I, S>(&self, excluded: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxy(Target::All(excluded.into_iter().map(Into::into).collect()))
    }

    /// One connection by id (a no-op if it is not connected).
    pub fn client(&self, connection_id: impl Into<String>) -> ClientProxy {
        self.proxy(Target::Connection(connection_id.into()))
    }

    /// Several connections by id.
    pub fn clients<I, S>(&self, connection_ids: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxy(Target::Connections(
            connection_ids.into_iter().map(Into::into).collect(),
        ))
    }

    /// Every connection in a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        self.group_except(group, Vec::<String>::new())
    }

    /// Every connection in any of the groups (each reached once).
    pub fn groups<I, S>(&self, groups: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxy(Target::Groups {
            groups: groups.into_iter().map(Into::into).collect(),
            excluded: Vec::new(),
        })
    }

    /// Every connection in a group except the given ids.
    pub fn group_except<I, S>(&self, group: impl Into<String>, excluded: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxy(Target::Groups {
            groups: vec![group.into()],
            excluded: excluded.into_iter().map(Into::into).collect(),
        })
    }

    /// Every connection of a user (all their tabs and devices).
    pub fn user(&self, user_id: impl Into<String>) -> ClientProxy {
        self.proxy(Target::Users(vec![user_id.into()]))
    }

    /// Every connection of any of the users.
    pub fn users<I, S>(&self, user_ids: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxy(Target::Users(
            user_ids.into_iter().map(Into::into).collect(),
        ))
    }
}

/// Client proxies relative to the calling connection, for use inside hub methods.
#[derive(Clone)]
pub struct Clients {
    hub: HubClients,
    caller: Arc<ConnectionShared>,
}

impl Clients {
    pub(crate) fn new(hub: Arc<HubShared>, caller: Arc<ConnectionShared>) -> Self {
        Clients {
            hub: HubClients { hub },
            caller,
        }
    }

    /// The connection that made the call.
    pub fn caller(&self) -> ClientProxy {
        self.hub.proxy(Target::Caller(self.caller.clone()))
    }

    /// Every connection except the caller.
    pub fn others(&self) -> ClientProxy {
        self.hub
            .proxy(Target::All(vec![self.caller.id.as_ref().to_owned()]))
    }

    /// Every connection.
    pub fn all(&self) -> ClientProxy {
        self.hub.all()
    }

    /// Every connection but the given ids.
    pub fn all_except<I, S>(&self, excluded: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hub.all_except(excluded)
    }

    /// One connection by id.
    pub fn client(&self, connection_id: impl Into<String>) -> ClientProxy {
        self.hub.client(connection_id)
    }

    /// Several connections by id.
    pub fn clients<I, S>(&self, connection_ids: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hub.clients(connection_ids)
    }

    /// Every connection in a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        self.hub.group(group)
    }

    /// Every connection in any of the groups (each reached once).
    pub fn groups<I, S>(&self, groups: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hub.groups(groups)
    }

    /// Every connection in a group except the given ids.
    pub fn group_except<I, S>(&self, group: impl Into<String>, excluded: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hub.group_except(group, excluded)
    }

    /// Every connection in a group except the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> ClientProxy {
        self.hub.group_except(group, [self.caller.id.as_ref()])
    }

    /// Every connection of a user.
    pub fn user(&self, user_id: impl Into<String>) -> ClientProxy {
        self.hub.user(user_id)
    }

    /// Every connection of any of the users.
    pub fn users<I, S>(&self, user_ids: I) -> ClientProxy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hub.users(user_ids)
    }
}

pub(crate) enum Target {
    All(Vec<String>),
    Connection(String),
    Connections(Vec<String>),
    Caller(Arc<ConnectionShared>),
    Groups {
        groups: Vec<String>,
        excluded: Vec<String>,
    },
    Users(Vec<String>),
}

/// A set of clients to invoke a method on.
pub struct ClientProxy {
    hub: Arc<HubShared>,
    target: Target,
}

impl ClientProxy {
    /// Invokes `method` on the targeted clients with `args` (a tuple such as `("alice", 42)`,
    /// `()` for none, or a `Vec`). Fire-and-forget, as in the reference: unknown connections
    /// are skipped silently.
    ///
    /// The invocation is encoded once per protocol in use, and the bytes are shared by every
    /// recipient. A multi-client send never waits: a client whose outbound queue is full is
    /// closed as too slow. A single-client send waits up to the hub's send timeout for space.
    pub async fn send<A: IntoArguments>(&self, method: &str, args: A) -> Result<(), Error> {
        self.broadcast_invocation(method, args).await
    }

    /// Invokes `method` on one client and waits for the value it returns (a client result, the
    /// counterpart of `InvokeAsync<T>` on a single client). Only for `caller()` and
    /// `client(id)`.
    ///
    /// Fails when the client throws (see [`Error::is_client`]), when it disconnects first
    /// (at once, [`Error::is_closed`]), when no answer comes within the hub's client-result
    /// timeout ([`Error::is_timeout`]), when the value does not deserialize into `T`, and when
    /// called from `on_connected` (as in the reference: the connection is not read yet, so the
    /// answer could never arrive). While it waits, the calling method gives back its
    /// parallel-invocation slot, as the reference does, so the client's answer and its other
    /// calls keep being read even with the default limit of one invocation at a time.
    pub async fn invoke<T, A>(&self, method: &str, args: A) -> Result<T, Error>
    where
        T: DeserializeOwned,
        A: IntoArguments,
    {
        let conn = match &self.target {
            Target::Caller(conn) => conn.clone(),
            Target::Connection(id) => match (self.hub.registry.get(id), &self.hub.backplane) {
                (Some(conn), _) => conn,
                (None, Some(backplane)) => {
                    let answer = self
                        .invoke_remote(backplane.as_ref(), id, method, args)
                        .await?;
                    return client_answer(answer);
                }
                (None, None) => {
                    return Err(Error::with(
                        Kind::Closed,
                        format!("Connection '{id}' does not exist."),
                    ))
                }
            },
            _ => {
                return Err(Error::with(
                    Kind::Protocol,
                    "client results need a single client: caller() or client(id)",
                ))
            }
        };
        if super::IN_ON_CONNECTED.try_with(|_| ()).is_ok() {
            return Err(Error::with(
                Kind::Protocol,
                "Client results inside OnConnectedAsync Hub methods are not allowed.",
            ));
        }
        let id = SmallString::from(format!(
            "s{}",
            self.hub.next_result_id.fetch_add(1, Ordering::Relaxed)
        ));
        let answer = conn.expect_result(id.clone());
        let sent = self
            .send_invocation_to(&conn, method, args, Some(id.clone()))
            .await;
        if let Err(e) = sent {
            conn.take_pending_result(&id);
            return Err(e);
        }
        let timeout = self.hub.options.client_result_timeout;
        let answer = with_slot_released(tokio::time::timeout(timeout, answer)).await;
        let payload = match answer {
            Err(_elapsed) => {
                conn.take_pending_result(&id);
                return Err(Error::with(
                    Kind::Timeout,
                    "the client did not answer in time",
                ));
            }
            Ok(Err(_dropped)) => {
                return Err(Error::with(
                    Kind::Closed,
                    format!("Connection '{}' disconnected.", conn.id),
                ))
            }
            Ok(Ok(answer)) => answer,
        };
        client_answer(payload)
    }

    async fn send_invocation_to<A: IntoArguments>(
        &self,
        conn: &ConnectionShared,
        method: &str,
        args: A,
        invocation_id: Option<SmallString>,
    ) -> Result<(), Error> {
        let args = args.into_arguments();
        let message: Message<&A::Arguments, NoValue> = Message::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id,
            target: method.into(),
            arguments: &args,
            stream_ids: Vec::new(),
        });
        let record = conn.protocol.encode_to_bytes(&message)?;
        conn.send(record, self.hub.options.send_timeout).await
    }

    async fn broadcast_invocation<A: IntoArguments>(
        &self,
        method: &str,
        args: A,
    ) -> Result<(), Error> {
        let args = args.into_arguments();
        let message: Message<&A::Arguments, NoValue> = Message::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: method.into(),
            arguments: &args,
            stream_ids: Vec::new(),
        });
        let record = LazyRecord::new(&message);
        let send_timeout = self.hub.options.send_timeout;
        let registry = &self.hub.registry;
        // Local recipients first, straight from this process; then the other processes.
        let local = match &self.target {
            Target::Caller(conn) => deliver_one(conn, &record, send_timeout).await,
            Target::Connection(id) => match registry.get(id) {
                Some(conn) => deliver_one(&conn, &record, send_timeout).await,
                None => Ok(()),
            },
            Target::Connections(ids) => registry.send_to(ids.iter().map(String::as_str), &record),
            Target::Groups { groups, excluded } => {
                let members = registry.group_members(groups, excluded);
                registry.send_to(members.iter().map(|id| id.as_ref()), &record)
            }
            Target::Users(users) => {
                let connections = registry.user_connections(users);
                registry.send_to(connections.iter().map(|id| id.as_ref()), &record)
            }
            Target::All(excluded) => {
                registry.broadcast(&record, |id| excluded.iter().any(|e| e == id))
            }
        };
        let published = match &self.hub.backplane {
            Some(backplane) => self.publish(backplane.as_ref(), &record).await,
            None => Ok(()),
        };
        local.and(published)
    }

    /// Who the target covers on other processes (connections not found here).
    fn remote_audiences(&self) -> Vec<Audience<'_>> {
        let registry = &self.hub.registry;
        match &self.target {
            Target::Caller(_) => Vec::new(),
            Target::Connection(id) if registry.get(id).is_some() => Vec::new(),
            Target::Connection(id) => vec![Audience::Connection(id)],
            Target::Connections(ids) => {
                let mut remote: Vec<&str> = ids
                    .iter()
                    .map(String::as_str)
                    .filter(|id| registry.get(id).is_none())
                    .collect();
                remote.sort_unstable();
                remote.dedup();
                remote.into_iter().map(Audience::Connection).collect()
            }
            Target::Groups { groups, excluded } => groups
                .iter()
                .map(|group| Audience::Group { group, excluded })
                .collect(),
            Target::Users(users) => users.iter().map(|u| Audience::User(u)).collect(),
            Target::All(excluded) => vec![Audience::All { excluded }],
        }
    }

    /// Hands a message to the backplane for each audience on other processes.
    async fn publish(
        &self,
        backplane: &dyn Backplane,
        record: &LazyRecord<'_>,
    ) -> Result<(), Error> {
        let audiences = self.remote_audiences();
        if audiences.is_empty() {
            return Ok(());
        }
        let message = record.serialized()?;
        let mut failure = Ok(());
        for audience in audiences {
            if let Err(e) = backplane.publish(audience, &message).await {
                failure = Err(e);
            }
        }
        failure
    }

    /// A client result from a connection on another process, through the backplane.
    async fn invoke_remote<A: IntoArguments>(
        &self,
        backplane: &dyn Backplane,
        connection_id: &str,
        method: &str,
        args: A,
    ) -> Result<Result<Payload, String>, Error> {
        // Unique across processes: the owner keys the pending answer by it.
        let invocation_id = crate::id::new_id();
        let args = args.into_arguments();
        let message: Message<&A::Arguments, NoValue> = Message::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: Some(invocation_id.as_str().into()),
            target: method.into(),
            arguments: &args,
            stream_ids: Vec::new(),
        });
        let message = SerializedMessage::encode(&message)?;
        let timeout = self.hub.options.client_result_timeout;
        let asked = backplane.invoke(connection_id, &invocation_id, &message);
        match with_slot_released(tokio::time::timeout(timeout, asked)).await {
            Err(_elapsed) => Err(Error::with(
                Kind::Timeout,
                "the client did not answer in time",
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Err(Error::with(
                Kind::Closed,
                format!("Connection '{connection_id}' does not exist."),
            )),
            Ok(Ok(Some(completion))) => match completion.decode()? {
                Err(e) if e == REMOTE_DISCONNECTED => Err(Error::with(
                    Kind::Closed,
                    format!("Connection '{connection_id}' disconnected."),
                )),
                answer => Ok(answer),
            },
        }
    }
}

/// The error a connection's owner answers with when the client disconnects before answering.
pub(crate) const REMOTE_DISCONNECTED: &str = "Connection disconnected.";

/// A client's answer as the caller of `invoke` sees it.
fn client_answer<T: DeserializeOwned>(answer: Result<Payload, String>) -> Result<T, Error> {
    let payload = answer.map_err(|client_error| Error::with(Kind::Client, client_error))?;
    payload.deserialize().map_err(|e| {
        Error::with(
            Kind::Protocol,
            format!(
                "Error trying to deserialize result to {}. {e}",
                std::any::type_name::<T>()
            ),
        )
    })
}

async fn deliver_one(
    conn: &ConnectionShared,
    record: &LazyRecord<'_>,
    timeout: std::time::Duration,
) -> Result<(), Error> {
    let bytes = record.get(conn.protocol)?;
    match conn.send(bytes, timeout).await {
        // Sending to a connection that just went away is not the sender's problem.
        Err(e) if e.is_closed() => Ok(()),
        other => other,
    }
}

/// Argument lists for [`ClientProxy::send`]: tuples (up to eight values), `()`, vectors and
/// slices, and a received invocation's [`Arguments`](crate::protocol::Arguments).
pub trait IntoArguments {
    /// The list as it is serialized (an array on the wire).
    type Arguments: Serialize + Sync;
    /// Converts into the serializable list.
    fn into_arguments(self) -> Self::Arguments;
}

impl IntoArguments for () {
    type Arguments = [(); 0];
    fn into_arguments(self) -> [(); 0] {
        []
    }
}

impl<T: Serialize + Sync> IntoArguments for Vec<T> {
    type Arguments = Vec<T>;
    fn into_arguments(self) -> Vec<T> {
        self
    }
}

/// A received invocation's arguments, sent on as they came (each converted if the recipient
/// speaks the other protocol).
impl IntoArguments for crate::protocol::Arguments {
    type Arguments = Self;
    fn into_arguments(self) -> Self {
        self
    }
}

impl<T: Serialize + Sync> IntoArguments for &[T] {
    type Arguments = Self;
    fn into_arguments(self) -> Self {
        self
    }
}

macro_rules! impl_into_arguments {
    ($($ty:ident),+) => {
        impl<$($ty: Serialize + Sync),+> IntoArguments for ($($ty,)+) {
            type Arguments = Self;
            fn into_arguments(self) -> Self {
                self
            }
        }
    };
}

impl_into_arguments!(A);
impl_into_arguments!(A, B);
impl_into_arguments!(A, B, C);
impl_into_arguments!(A, B, C, D);
impl_into_arguments!(A, B, C, D, E);
impl_into_arguments!(A, B, C, D, E, F);
impl_into_arguments!(A, B, C, D, E, F, G);
impl_into_arguments!(A, B, C, D, E, F, G, H);
