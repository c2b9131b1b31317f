//! The chat hub at `/hubs/chat`: rooms are groups (`room:{id}`), membership is persisted, and a
//! user's connections join all of their rooms when they connect (a second device or a
//! reconnecting client needs no rejoin).

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde_json::json;
use signalr_core::{Context, Hub, HubContext, HubError, Policy};

use crate::assistant::{mentions_assistant, Turn};
use crate::ASSISTANT_NAME;

use crate::store::Store;
use crate::{room_group, AppState};

pub(crate) fn caller(ctx: &Context) -> Result<(i64, String), HubError> {
    let user = ctx.user().ok_or_else(|| HubError::new("Sign in first."))?;
    let id = user
        .user_id()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| HubError::new("Sign in first."))?;
    Ok((id, user.name().unwrap_or_default().to_owned()))
}

fn storage(error: sqlx::Error) -> HubError {
    tracing::error!(%error, "database error");
    HubError::new("The message store is unavailable; nothing was saved.")
}

async fn require_member(store: &Store, room_id: i64, user_id: i64) -> Result<(), HubError> {
    if store.is_member(room_id, user_id).await.map_err(storage)? {
        Ok(())
    } else {
        Err(HubError::new("Join the room first."))
    }
}

async fn join_room(state: AppState, ctx: Context, room_id: i64) -> Result<(), HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    let room = state
        .store
        .room(room_id)
        .await
        .map_err(storage)?
        .ok_or_else(|| HubError::new("No such room."))?;
    let member = state
        .store
        .is_member(room_id, user_id)
        .await
        .map_err(storage)?;
    if room.is_private && !member {
        return Err(HubError::new(
            "This room is private; ask a member to add you.",
        ));
    }
    state
        .store
        .add_member(room_id, user_id)
        .await
        .map_err(storage)?;
    let group = room_group(room_id);
    // Every connection of the user follows the membership.
    let connections = user_connections(&ctx.hub(), user_id).await;
    for connection in &connections {
        ctx.groups().add(connection, &group).await?;
    }
    let joined = json!({"roomId": room_id, "userId": user_id, "userName": user_name});
    ctx.clients()
        .group_except(group, connections)
        .send("UserJoined", (joined,))
        .await?;
    Ok(())
}

async fn leave_room(state: AppState, ctx: Context, room_id: i64) -> Result<(), HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    state
        .store
        .remove_member(room_id, user_id)
        .await
        .map_err(storage)?;
    let group = room_group(room_id);
    for connection in user_connections(&ctx.hub(), user_id).await {
        ctx.groups().remove(&connection, &group).await?;
    }
    let left = json!({"roomId": room_id, "userId": user_id, "userName": user_name});
    ctx.clients().group(group).send("UserLeft", (left,)).await?;
    Ok(())
}

async fn send_message(
    state: AppState,
    ctx: Context,
    room_id: i64,
    content: String,
) -> Result<crate::store::ChatMessage, HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    let content = content.trim();
    if content.is_empty() {
        return Err(HubError::new("Empty messages are not sent."));
    }
    if content.chars().count() > state.max_message_chars {
        return Err(HubError::new(format!(
            "Messages are limited to {} characters.",
            state.max_message_chars
        )));
    }
    require_member(&state.store, room_id, user_id).await?;
    // Stored first: a message is acknowledged (returned) only once it is saved.
    let message = state
        .store
        .add_message(room_id, user_id, &user_name, content)
        .await
        .map_err(storage)?;
    ctx.clients()
        .group(room_group(room_id))
        .send("ReceiveMessage", (&message,))
        .await?;
    if mentions_assistant(content) {
        tokio::spawn(reply_in_room(state, ctx.hub(), room_id, user_id));
    }
    Ok(message)
}

/// Tells the room the assistant's reply failed (not stored).
async fn assistant_error(hub: &HubContext, room_id: i64, message_id: Option<&str>, error: &str) {
    let notice = json!({"roomId": room_id, "messageId": message_id, "error": error});
    let _ = hub
        .clients()
        .group(room_group(room_id))
        .send("AssistantError", (notice,))
        .await;
}

/// Stores a message from the assistant and sends it to the room.
async fn post_as_assistant(state: &AppState, hub: &HubContext, room_id: i64, content: &str) {
    match state
        .store
        .add_message(room_id, state.assistant_user, ASSISTANT_NAME, content)
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
        return post_as_assistant(&state, &hub, room_id, off).await;
    };
    if !state.assistant.allow(user_id) {
        let error = "Too many @gpt requests; try again in a minute.";
        return assistant_error(&hub, room_id, None, error).await;
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
            return assistant_error(&hub, room_id, None, &storage(error).to_string()).await
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
            Err(error) => return assistant_error(&hub, room_id, Some(&message_id), &error).await,
        }
    }
    if content.trim().is_empty() {
        return assistant_error(
            &hub,
            room_id,
            Some(&message_id),
            "The assistant sent an empty reply.",
        )
        .await;
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
    if !state.assistant.allow(user_id) {
        return Err(HubError::new(
            "Too many @gpt requests; try again in a minute.",
        ));
    }
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

async fn typing(state: AppState, ctx: Context, room_id: i64) -> Result<(), HubError> {
    let (user_id, user_name) = caller(&ctx)?;
    require_member(&state.store, room_id, user_id).await?;
    let typing = json!({"roomId": room_id, "userId": user_id, "userName": user_name});
    ctx.clients()
        .others_in_group(room_group(room_id))
        .send("UserTyping", (typing,))
        .await?;
    Ok(())
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
    let (s1, s2, s3, s4, s5, s6, s7) = (
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
        .authenticator(state.tokens.verifier())
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
        );
    crate::messaging::hub_methods(builder, state).build()
}
