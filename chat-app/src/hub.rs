//! The chat hub at `/hubs/chat`: rooms are groups (`room:{id}`), membership is persisted, and a
//! user's connections join all of their rooms when they connect (a second device or a
//! reconnecting client needs no rejoin).

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde_json::json;
use signalr_core::{Context, Hub, HubContext, HubError, Policy};

use crate::assistant::{mentions_assistant, Turn};
use crate::limits::Rate;
use crate::ASSISTANT_NAME;

use crate::store::{Departure, Room, Store};
use crate::{room_group, AppState};

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
    hub: &HubContext,
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
    let joined = json!({"roomId": room.id, "userId": user_id, "userName": user_name});
    if let Err(e) = hub
        .clients()
        .group_except(group, connections)
        .send("UserJoined", (joined,))
        .await
    {
        tracing::warn!(error = %e, "UserJoined not delivered everywhere");
    }
    if added_by_other {
        if let Err(e) = hub
            .clients()
            .user(user_id.to_string())
            .send("RoomAdded", (room,))
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
    hub: &HubContext,
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
    let left = json!({"roomId": room_id, "userId": user_id, "userName": user_name});
    let mut sends = vec![
        hub.clients()
            .group(group.clone())
            .send("UserLeft", (left,))
            .await,
    ];
    if let Some(owner) = departure.new_owner {
        let changed = json!({"roomId": room_id, "userId": owner});
        sends.push(
            hub.clients()
                .group(group)
                .send("RoomOwnerChanged", (changed,))
                .await,
        );
    }
    if removed_by_other {
        let removed = json!({"roomId": room_id});
        sends.push(
            hub.clients()
                .user(user_id.to_string())
                .send("RoomRemoved", (removed,))
                .await,
        );
    }
    for result in sends {
        if let Err(e) = result {
            tracing::warn!(error = %e, "a membership event was not delivered everywhere");
        }
    }
}

/// Who is calling: the account id and its name (from the database, by the authenticator).
pub(crate) fn caller(ctx: &Context) -> Result<(i64, String), HubError> {
    let user = ctx.user().ok_or_else(|| HubError::new("Sign in first."))?;
    let id = user
        .user_id()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| HubError::new("Sign in first."))?;
    Ok((id, user.name().unwrap_or_default().to_owned()))
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
async fn join_room(state: AppState, ctx: Context, room_id: i64) -> Result<(), HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    rate_limit(
        &state,
        "join",
        user_id,
        state.rates.join,
        "joins and leaves",
    )
    .await?;
    let room = state.store.room(room_id).await.map_err(storage)?;
    let member = match &room {
        Some(_) => state
            .store
            .is_member(room_id, user_id)
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
        .add_member(room_id, user_id)
        .await
        .map_err(storage)?
    {
        member_joined(&ctx.hub(), &room, user_id, &user_name, false).await;
    }
    Ok(())
}

/// Leaves a room; leaving a room one is not in changes nothing and tells nobody.
async fn leave_room(state: AppState, ctx: Context, room_id: i64) -> Result<(), HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    rate_limit(
        &state,
        "join",
        user_id,
        state.rates.join,
        "joins and leaves",
    )
    .await?;
    if let Some(departure) = state
        .store
        .remove_member(room_id, user_id)
        .await
        .map_err(storage)?
    {
        member_left(&ctx.hub(), room_id, user_id, &user_name, departure, false).await;
    }
    Ok(())
}

async fn send_message(
    state: AppState,
    ctx: Context,
    room_id: i64,
    content: String,
) -> Result<crate::store::ChatMessage, HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    let content = crate::messaging::checked_content(&state, &content)?;
    let content = content.as_str();
    require_member(&state.store, room_id, user_id).await?;
    rate_limit(
        &state,
        "send",
        user_id,
        state.rates.send_message,
        "messages",
    )
    .await?;
    // Stored first: a message is acknowledged (returned) only once it is saved.
    let message = state
        .store
        .add_message(room_id, user_id, &user_name, content)
        .await
        .map_err(storage)?;
    // Stored is sent: a delivery that fails (the backplane is down) is not the sender's
    // failure. This process's members got it; the others catch up with GetMessagesAfter.
    if let Err(e) = ctx
        .clients()
        .group(room_group(room_id))
        .send("ReceiveMessage", (&message,))
        .await
    {
        tracing::warn!(error = %e, message = message.id, "a stored message was not delivered to every process; clients catch up on reconnect");
    }
    if mentions_assistant(content) {
        tokio::spawn(reply_in_room(state, ctx.hub(), room_id, user_id));
    }
    Ok(message)
}

/// Tells the requester (all of their connections) that the assistant will not answer or
/// that its reply failed; nothing is stored. A reply that failed after its first chunks
/// reached the room also ends for the room, which saw it start.
async fn assistant_error(
    hub: &HubContext,
    room_id: i64,
    requester: i64,
    message_id: Option<&str>,
    error: &str,
    streamed_to_room: bool,
) {
    let notice = json!({"roomId": room_id, "messageId": message_id, "error": error});
    let _ = if streamed_to_room {
        hub.clients()
            .group(room_group(room_id))
            .send("AssistantError", (notice,))
            .await
    } else {
        hub.clients()
            .user(requester.to_string())
            .send("AssistantError", (notice,))
            .await
    };
}

/// Stores a message from the assistant and sends it to the room.
async fn post_as_assistant(state: &AppState, hub: &HubContext, room_id: i64, content: &str) {
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
                .clients()
                .group(room_group(room_id))
                .send("ReceiveMessage", (&message,))
                .await;
        }
        Err(error) => tracing::error!(%error, "could not store the assistant's reply"),
    }
}

static NEXT_REPLY: AtomicU64 = AtomicU64::new(1);

/// Answers an `@gpt` mention in the room: chunks as they come, then the stored message.
pub(crate) async fn reply_in_room(state: AppState, hub: HubContext, room_id: i64, user_id: i64) {
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
    let mut deltas = provider.reply(conversation);
    let mut content = String::new();
    while let Some(delta) = deltas.next().await {
        match delta {
            Ok(delta) => {
                content.push_str(&delta);
                let chunk = json!({"messageId": message_id, "roomId": room_id, "delta": delta});
                let _ = hub
                    .clients()
                    .group(room_group(room_id))
                    .send("ReceiveMessageChunk", (chunk,))
                    .await;
            }
            Err(error) => {
                let streamed = !content.is_empty();
                return assistant_error(
                    &hub,
                    room_id,
                    user_id,
                    Some(&message_id),
                    &error,
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
    state: AppState,
    ctx: Context,
    room_id: i64,
    prompt: String,
) -> Result<impl futures_util::Stream<Item = Result<String, HubError>>, HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    require_member(&state.store, room_id, user_id).await?;
    let provider = state
        .assistant
        .provider()
        .cloned()
        .ok_or_else(|| HubError::new("The assistant is not available on this server."))?;
    assistant_allowed(&state, user_id).await?;
    let history = state
        .store
        .messages(room_id, None, state.assistant.limits.history_messages)
        .await
        .map_err(storage)?;
    let mut conversation = state.assistant.conversation(&history, state.assistant_user);
    conversation.push(Turn {
        role: "user",
        content: format!("{user_name}: {prompt}"),
    });
    let assistant = state.assistant.clone();
    Ok(
        futures_util::stream::once(async move { assistant.slot().await }).flat_map(move |slot| {
            // The concurrency slot is held for as long as the reply streams.
            provider.reply(conversation.clone()).map(move |delta| {
                let _held = &slot;
                delta.map_err(HubError::new)
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

async fn typing(state: AppState, ctx: Context, room_id: i64) -> Result<(), HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    require_member(&state.store, room_id, user_id).await?;
    rate_limit(
        &state,
        "typing",
        user_id,
        state.rates.typing,
        "typing notices",
    )
    .await?;
    let typing = json!({"roomId": room_id, "userId": user_id, "userName": user_name});
    ctx.clients()
        .others_in_group(room_group(room_id))
        .send("UserTyping", (typing,))
        .await?;
    Ok(())
}

/// Messages of a room after `after_id`, oldest first, at most 200: a client that reconnected
/// (or whose process lost the backplane for a while) asks for what it missed.
async fn messages_after(
    state: AppState,
    ctx: Context,
    room_id: i64,
    after_id: i64,
) -> Result<Vec<crate::store::ChatMessage>, HubError> {
    let (user_id, _) = caller(&ctx)?;
    require_member(&state.store, room_id, user_id).await?;
    state
        .store
        .messages_after(room_id, after_id, 200)
        .await
        .map_err(storage)
}

/// Who of a room's members is online now.
async fn online_members(
    state: AppState,
    ctx: Context,
    room_id: i64,
) -> Result<Vec<String>, HubError> {
    let (user_id, _) = caller(&ctx)?;
    require_member(&state.store, room_id, user_id).await?;
    online_user_ids(&ctx.hub(), room_id).await
}

/// The ids of the users with a connection in the room now.
pub(crate) async fn online_user_ids(
    hub: &HubContext,
    room_id: i64,
) -> Result<Vec<String>, HubError> {
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
pub(crate) async fn user_connections(hub: &HubContext, user_id: i64) -> Vec<String> {
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

/// Puts a new connection in the groups of every room its user belongs to.
async fn on_connected(state: AppState, ctx: Context) -> Result<(), HubError> {
    let (user_id, _) = caller(&ctx)?;
    for room_id in state.store.rooms_of(user_id).await.map_err(storage)? {
        ctx.groups()
            .add(ctx.connection_id(), &room_group(room_id))
            .await?;
    }
    Ok(())
}

/// The hub; `state.hub` is filled in by the caller once built. With a backplane, it spans
/// every process sharing the Redis.
pub fn build(state: &AppState, backplane: Option<signalr_redis::RedisBackplane>) -> Hub {
    let (s1, s2, s3, s4, s5, s6, s7, s8) = (
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
    );
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
        .on_connected(move |ctx: Context| on_connected(s1.clone(), ctx))
        .method("JoinRoom", move |ctx: Context, room: i64| {
            join_room(s2.clone(), ctx, room)
        })
        .method("LeaveRoom", move |ctx: Context, room: i64| {
            leave_room(s3.clone(), ctx, room)
        })
        .method(
            "SendMessage",
            move |ctx: Context, room: i64, content: String| {
                send_message(s4.clone(), ctx, room, content)
            },
        )
        .method("Typing", move |ctx: Context, room: i64| {
            typing(s5.clone(), ctx, room)
        })
        .method("OnlineMembers", move |ctx: Context, room: i64| {
            online_members(s6.clone(), ctx, room)
        })
        .method(
            "AskAssistant",
            move |ctx: Context, room: i64, prompt: String| {
                ask_assistant(s7.clone(), ctx, room, prompt)
            },
        )
        .method(
            "GetMessagesAfter",
            move |ctx: Context, room: i64, after: i64| messages_after(s8.clone(), ctx, room, after),
        );
    crate::messaging::hub_methods(builder, state).build()
}
