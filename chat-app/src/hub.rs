//! The chat hub at `/hubs/chat`: rooms are groups (`room:{id}`), membership is persisted, and a
//! user's connections join all of their rooms when they connect (a second device or a
//! reconnecting client needs no rejoin).
//!
//! Methods are plain async functions: the app state arrives as `State<AppState>` (set once
//! with `with_state`), the caller as a [`CurrentUser`], and what clients are sent is
//! [`ChatClient`], sent through `TypedClients<ChatClient>` or a [`ChatHub`].

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use signalr_core::{Context, FromContext, Hub, HubError, Policy, State, TypedClients};

use crate::assistant::{measured, mentions_assistant, Kind, Turn};
use crate::auth::CurrentUser;
use crate::clients::{
    AssistantNotice, ChatClient, ChatHub, NewOwner, ReplyChunk, RoomMember, RoomRef,
};
use crate::limits::Rate;
use crate::store::{ChatMessage, Departure, Room, Store};
use crate::{room_group, AppState, ASSISTANT_NAME};

/// Counts one call of `scope` by the user; past `rate`, an error saying when to retry.
async fn rate_limit(
    state: &AppState,
    scope: &str,
    user_id: i64,
    rate: Rate,
    what: &str,
) -> Result<(), HubError> {
    state
        .limiter
        .hit(scope, &user_id.to_string(), rate)
        .await
        .map_err(|limited| {
            HubError::new(format!(
                "Too many {what}; try again in {} s.",
                limited.retry_after_secs()
            ))
        })
}

/// Someone became a member: their connections join the room's group, the room hears
/// `UserJoined`, and (added by someone else) they hear `RoomAdded`. Sends that fail (the
/// backplane is down) are logged: the membership is stored, and connections on other
/// processes join their rooms when they reconnect.
pub(crate) async fn member_joined(
    hub: &ChatHub,
    room: &Room,
    user_id: i64,
    user_name: &str,
    added_by_other: bool,
) {
    let group = room_group(room.id);
    let connections = user_connections(hub, user_id).await;
    for connection in &connections {
        if let Err(e) = hub.groups().add(connection, &group).await {
            tracing::warn!(error = %e, "could not add a connection to its new room");
        }
    }
    let member = RoomMember::new(room.id, user_id, user_name);
    if let Err(e) = hub
        .group_except(group, connections)
        .send(ChatClient::UserJoined { member })
        .await
    {
        tracing::warn!(error = %e, "UserJoined not delivered everywhere");
    }
    if added_by_other {
        let room = room.clone();
        if let Err(e) = hub
            .user(user_id.to_string())
            .send(ChatClient::RoomAdded { room })
            .await
        {
            tracing::warn!(error = %e, "RoomAdded not delivered everywhere");
        }
    }
}

/// Someone stopped being a member: the room hears `UserLeft` (and `RoomOwnerChanged` when
/// ownership passed on), their connections leave the group, and (removed by the owner) they
/// hear `RoomRemoved`.
pub(crate) async fn member_left(
    hub: &ChatHub,
    room_id: i64,
    user_id: i64,
    user_name: &str,
    departure: Departure,
    removed_by_other: bool,
) {
    let group = room_group(room_id);
    for connection in user_connections(hub, user_id).await {
        if let Err(e) = hub.groups().remove(&connection, &group).await {
            tracing::warn!(error = %e, "could not remove a connection from its room");
        }
    }
    let member = RoomMember::new(room_id, user_id, user_name);
    let mut sends = vec![
        hub.group(group.clone())
            .send(ChatClient::UserLeft { member })
            .await,
    ];
    if let Some(owner) = departure.new_owner {
        let owner = NewOwner {
            room_id,
            user_id: owner,
        };
        sends.push(
            hub.group(group)
                .send(ChatClient::RoomOwnerChanged { owner })
                .await,
        );
    }
    if removed_by_other {
        let room = RoomRef { room_id };
        sends.push(
            hub.user(user_id.to_string())
                .send(ChatClient::RoomRemoved { room })
                .await,
        );
    }
    for result in sends {
        if let Err(e) = result {
            tracing::warn!(error = %e, "a membership event was not delivered everywhere");
        }
    }
}

fn storage(error: sqlx::Error) -> HubError {
    crate::store::log_error(&error);
    HubError::new("The message store is unavailable; nothing was saved.")
}

async fn require_member(store: &Store, room_id: i64, user_id: i64) -> Result<(), HubError> {
    if store.is_member(room_id, user_id).await.map_err(storage)? {
        Ok(())
    } else {
        Err(HubError::new("Join the room first."))
    }
}

/// Joins a public room (again, after leaving). Private rooms take their owner's invitation;
/// to anyone else they do not exist. Only a real change is announced.
async fn join_room(
    State(state): State<AppState>,
    user: CurrentUser,
    ctx: Context,
    hub: ChatHub,
    room_id: i64,
) -> Result<(), HubError> {
    let joins = state.rates.join;
    rate_limit(&state, "join", user.id, joins, "joins and leaves").await?;
    let room = state.store.room(room_id).await.map_err(storage)?;
    let member = match &room {
        Some(_) => state
            .store
            .is_member(room_id, user.id)
            .await
            .map_err(storage)?,
        None => false,
    };
    let room = match room {
        Some(room) if member || !room.is_private => room,
        _ => return Err(HubError::new("No such room.")),
    };
    if member {
        // Already in: make sure this connection follows, and tell nobody.
        ctx.groups()
            .add(ctx.connection_id(), &room_group(room_id))
            .await?;
        return Ok(());
    }
    if state
        .store
        .add_member(room_id, user.id)
        .await
        .map_err(storage)?
    {
        member_joined(&hub, &room, user.id, &user.name, false).await;
    }
    Ok(())
}

/// Leaves a room; leaving a room one is not in changes nothing and tells nobody.
async fn leave_room(
    State(state): State<AppState>,
    user: CurrentUser,
    hub: ChatHub,
    room_id: i64,
) -> Result<(), HubError> {
    let joins = state.rates.join;
    rate_limit(&state, "join", user.id, joins, "joins and leaves").await?;
    if let Some(departure) = state
        .store
        .remove_member(room_id, user.id)
        .await
        .map_err(storage)?
    {
        member_left(&hub, room_id, user.id, &user.name, departure, false).await;
    }
    Ok(())
}

async fn send_message(
    State(state): State<AppState>,
    user: CurrentUser,
    hub: ChatHub,
    room_id: i64,
    content: String,
) -> Result<ChatMessage, HubError> {
    let content = crate::messaging::checked_content(&state, &content)?;
    require_member(&state.store, room_id, user.id).await?;
    let sends = state.rates.send_message;
    rate_limit(&state, "send", user.id, sends, "messages").await?;
    // Stored first: a message is acknowledged (returned) only once it is saved.
    let message = state
        .store
        .add_message(room_id, user.id, &user.name, &content)
        .await
        .map_err(storage)?;
    // Stored is sent: a delivery that fails (the backplane is down) is not the sender's
    // failure. This process's members got it; the others catch up with GetMessagesAfter.
    let received = ChatClient::ReceiveMessage {
        message: message.clone(),
    };
    if let Err(e) = hub.group(room_group(room_id)).send(received).await {
        tracing::warn!(error = %e, message = message.id, "a stored message was not delivered to every process; clients catch up on reconnect");
    }
    if mentions_assistant(&content) {
        tokio::spawn(reply_in_room(state, hub, room_id, user.id));
    }
    Ok(message)
}

/// Tells the requester (all of their connections) that the assistant will not answer or
/// that its reply failed; nothing is stored. A reply that failed after its first chunks
/// reached the room also ends for the room, which saw it start.
async fn assistant_error(
    hub: &ChatHub,
    room_id: i64,
    requester: i64,
    message_id: Option<&str>,
    error: &str,
    streamed_to_room: bool,
) {
    let notice = ChatClient::AssistantError {
        notice: AssistantNotice {
            room_id,
            message_id: message_id.map(str::to_owned),
            error: error.to_owned(),
        },
    };
    let recipients = if streamed_to_room {
        hub.group(room_group(room_id))
    } else {
        hub.user(requester.to_string())
    };
    let _ = recipients.send(notice).await;
}

/// Stores a message from the assistant and sends it to the room.
async fn post_as_assistant(state: &AppState, hub: &ChatHub, room_id: i64, content: &str) {
    // Providers may send anything: what is stored follows the same rules on every database.
    let content: String = crate::normalize_newlines(content)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    match state
        .store
        .add_message(room_id, state.assistant_user, ASSISTANT_NAME, &content)
        .await
    {
        Ok(message) => {
            let _ = hub
                .group(room_group(room_id))
                .send(ChatClient::ReceiveMessage { message })
                .await;
        }
        Err(error) => tracing::error!(%error, "could not store the assistant's reply"),
    }
}

static NEXT_REPLY: AtomicU64 = AtomicU64::new(1);

/// Answers an `@gpt` mention in the room: chunks as they come, then the stored message.
pub(crate) async fn reply_in_room(state: AppState, hub: ChatHub, room_id: i64, user_id: i64) {
    let Some(provider) = state.assistant.provider().cloned() else {
        let off =
            "The assistant is not available on this server (no OPENAI_API_KEY is configured).";
        return assistant_error(&hub, room_id, user_id, None, off, false).await;
    };
    if let Err(error) = assistant_allowed(&state, user_id).await {
        return assistant_error(&hub, room_id, user_id, None, error.message(), false).await;
    }
    let Some(_slot) = state.assistant.slot().await else {
        return;
    };
    let history = match state
        .store
        .messages(room_id, None, state.assistant.limits.history_messages)
        .await
    {
        Ok(history) => history,
        Err(error) => {
            let error = storage(error).to_string();
            return assistant_error(&hub, room_id, user_id, None, &error, false).await;
        }
    };
    let conversation = state.assistant.conversation(&history, state.assistant_user);
    let message_id = format!("reply-{}", NEXT_REPLY.fetch_add(1, Ordering::Relaxed));
    let mut deltas = measured(provider.reply(conversation), Kind::Room);
    let mut content = String::new();
    while let Some(delta) = deltas.next().await {
        match delta {
            Ok(delta) => {
                content.push_str(&delta);
                let chunk = ReplyChunk {
                    message_id: message_id.clone(),
                    room_id,
                    delta,
                };
                let _ = hub
                    .group(room_group(room_id))
                    .send(ChatClient::ReceiveMessageChunk { chunk })
                    .await;
            }
            Err(failure) => {
                let streamed = !content.is_empty();
                return assistant_error(
                    &hub,
                    room_id,
                    user_id,
                    Some(&message_id),
                    &failure.message,
                    streamed,
                )
                .await;
            }
        }
    }
    if content.trim().is_empty() {
        let error = "The assistant sent an empty reply.";
        return assistant_error(&hub, room_id, user_id, Some(&message_id), error, false).await;
    }
    post_as_assistant(&state, &hub, room_id, &content).await;
}

/// Streams the assistant's answer to the caller alone; cancelling the stream on the client
/// drops the upstream request.
async fn ask_assistant(
    State(state): State<AppState>,
    user: CurrentUser,
    room_id: i64,
    prompt: String,
) -> Result<impl futures_util::Stream<Item = Result<String, HubError>>, HubError> {
    require_member(&state.store, room_id, user.id).await?;
    let provider = state
        .assistant
        .provider()
        .cloned()
        .ok_or_else(|| HubError::new("The assistant is not available on this server."))?;
    assistant_allowed(&state, user.id).await?;
    let history = state
        .store
        .messages(room_id, None, state.assistant.limits.history_messages)
        .await
        .map_err(storage)?;
    let mut conversation = state.assistant.conversation(&history, state.assistant_user);
    conversation.push(Turn {
        role: "user",
        content: format!("{}: {prompt}", user.name),
    });
    let assistant = state.assistant;
    Ok(
        futures_util::stream::once(async move { assistant.slot().await }).flat_map(move |slot| {
            // The concurrency slot is held for as long as the reply streams.
            measured(provider.reply(conversation.clone()), Kind::Stream).map(move |delta| {
                let _held = &slot;
                delta.map_err(|failure| HubError::new(failure.message))
            })
        }),
    )
}

/// The per-user `@gpt` allowance (shared by every process with a backplane).
async fn assistant_allowed(state: &AppState, user_id: i64) -> Result<(), HubError> {
    let rate = Rate {
        limit: u32::try_from(state.assistant.limits.per_user_per_minute).unwrap_or(u32::MAX),
        window: std::time::Duration::from_secs(60),
    };
    if rate.limit == 0 {
        return Err(HubError::new("The assistant is turned off for users."));
    }
    rate_limit(state, "assistant", user_id, rate, "@gpt requests").await
}

async fn typing(
    State(state): State<AppState>,
    user: CurrentUser,
    clients: TypedClients<ChatClient>,
    room_id: i64,
) -> Result<(), HubError> {
    require_member(&state.store, room_id, user.id).await?;
    let notices = state.rates.typing;
    rate_limit(&state, "typing", user.id, notices, "typing notices").await?;
    let member = RoomMember::new(room_id, user.id, &user.name);
    clients
        .others_in_group(room_group(room_id))
        .send(ChatClient::UserTyping { member })
        .await?;
    Ok(())
}

/// Messages of a room after `after_id`, oldest first, at most 200: a client that reconnected
/// (or whose process lost the backplane for a while) asks for what it missed.
async fn messages_after(
    State(state): State<AppState>,
    user: CurrentUser,
    room_id: i64,
    after_id: i64,
) -> Result<Vec<ChatMessage>, HubError> {
    require_member(&state.store, room_id, user.id).await?;
    state
        .store
        .messages_after(room_id, after_id, 200)
        .await
        .map_err(storage)
}

/// Who of a room's members is online now.
async fn online_members(
    State(state): State<AppState>,
    user: CurrentUser,
    hub: ChatHub,
    room_id: i64,
) -> Result<Vec<String>, HubError> {
    require_member(&state.store, room_id, user.id).await?;
    online_user_ids(&hub, room_id).await
}

/// The ids of the users with a connection in the room now.
pub(crate) async fn online_user_ids(hub: &ChatHub, room_id: i64) -> Result<Vec<String>, HubError> {
    let presence = hub.presence();
    let members = presence.group_members(&room_group(room_id)).await?;
    let mut online = Vec::new();
    for connection in &members {
        if let Some(user) = presence.connection_user(connection).await? {
            online.push(user);
        }
    }
    online.sort();
    online.dedup();
    Ok(online)
}

/// Every open connection of a user, on any server process. While the backplane is down,
/// the ones on this process (the others catch up when their user reconnects).
pub(crate) async fn user_connections(hub: &ChatHub, user_id: i64) -> Vec<String> {
    let presence = hub.presence();
    let user = user_id.to_string();
    match presence.user_connections(&user).await {
        Ok(connections) => connections,
        Err(e) => {
            tracing::warn!(error = %e, "presence unavailable; using this process's connections");
            presence.local_user_connections(&user)
        }
    }
}

/// Puts a new connection in the groups of every room its user belongs to. Hooks take the
/// context alone; the extractors that methods use read it here too.
async fn on_connected(ctx: Context) -> Result<(), HubError> {
    let State(state) = State::<AppState>::from_context(&ctx)?;
    let user = CurrentUser::from_context(&ctx)?;
    for room_id in state.store.rooms_of(user.id).await.map_err(storage)? {
        ctx.groups()
            .add(ctx.connection_id(), &room_group(room_id))
            .await?;
    }
    Ok(())
}

/// The hub, with `state` as every method's `State<AppState>`. With a backplane, it spans
/// every process sharing the Redis.
pub fn build(state: AppState, backplane: Option<signalr_redis::RedisBackplane>) -> Hub {
    let mut builder = Hub::builder();
    if let Some(backplane) = backplane {
        // Processes share the token secret, so a client may negotiate with one and connect to
        // another: no session affinity needed for WebSockets.
        builder = builder
            .backplane(backplane)
            .portable_connection_tokens(state.tokens.connection_token_key());
    }
    builder = builder
        .authenticator(crate::auth::HubAuthenticator {
            tokens: state.tokens.clone(),
            store: state.store.clone(),
            assistant_user: state.assistant_user,
        })
        .allow_stateful_reconnect(state.stateful_reconnect)
        .disconnect_timeout(state.disconnect_timeout)
        .require(Policy::authenticated())
        .on_connected(on_connected)
        .method("JoinRoom", join_room)
        .method("LeaveRoom", leave_room)
        .method("SendMessage", send_message)
        .method("Typing", typing)
        .method("OnlineMembers", online_members)
        .method("AskAssistant", ask_assistant)
        .method("GetMessagesAfter", messages_after);
    crate::messaging::hub_methods(builder)
        .with_state(state)
        .build()
}

#[cfg(test)]
mod tests {
    use signalr_core::test_util::TestClient;
    use signalr_core::Identity;

    use super::*;

    async fn who(user: CurrentUser) -> (i64, String) {
        (user.id, user.name)
    }

    /// Every method takes its caller from the connection's identity; a call without a usable
    /// one is answered with an error Completion and the method does not run.
    #[tokio::test]
    async fn the_caller_comes_from_the_identity_or_the_call_is_refused() {
        let hub = Hub::builder().method("Who", who).build();
        let signed_in = Identity::new("7").with_name("ada");
        let mut client = TestClient::builder()
            .identity(signed_in)
            .connect(&hub)
            .await
            .unwrap();
        assert_eq!(
            client.invoke::<(i64, String)>("Who", ()).await,
            Ok((7, "ada".to_owned()))
        );

        for identity in [None, Some(Identity::new("not-a-number"))] {
            let mut builder = TestClient::builder();
            if let Some(identity) = identity {
                builder = builder.identity(identity);
            }
            let mut client = builder.connect(&hub).await.unwrap();
            let refused = client.invoke::<(i64, String)>("Who", ()).await.unwrap_err();
            assert!(refused.ends_with("Sign in first."), "{refused}");
        }
    }
}
