//! Direct messages, editing and deleting one's own messages, and read markers with unread
//! counts, each offered both as hub methods and in the REST API (one implementation, two
//! front doors).
//!
//! Hub: `SendDirectMessage(userName, content)`, `EditMessage(messageId, content)`,
//! `DeleteMessage(messageId)`, `MarkRead(roomId, messageId)`; events `MessageEdited(message)`
//! and `MessageDeleted({roomId, messageId})` to the room, `DirectConversationStarted({roomId,
//! userId, userName})` and `UnreadChanged({roomId, lastReadMessageId, unread})` to a user's
//! own connections, `RoomCreated(room)` to everyone for a new public room.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use signalr_core::{HubBuilder, HubError, State as HubState};

use crate::api::ApiError;
use crate::assistant::mentions_assistant;
use crate::auth::CurrentUser;
use crate::clients::{ChatClient, ChatHub, DeletedMessage, RoomMember};
use crate::store::{ChatMessage, DirectConversation, Member, Participant, ReadState, Room};
use crate::{room_group, AppState, Service, ASSISTANT_NAME};

/// Why a request was refused; maps to an HTTP status or a hub error with the same text.
#[derive(Debug)]
pub enum Refusal {
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    /// Past the caller's rate limit: the text, and whole seconds to wait.
    Limited(String, u64),
    Unavailable,
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Self {
        crate::store::log_error(&error);
        Refusal::Unavailable
    }
}

impl From<HubError> for Refusal {
    fn from(error: HubError) -> Self {
        tracing::warn!(%error, "could not reach the hub's clients");
        Refusal::Unavailable
    }
}

impl Refusal {
    fn text(&self) -> &str {
        match self {
            Refusal::BadRequest(text)
            | Refusal::Forbidden(text)
            | Refusal::NotFound(text)
            | Refusal::Limited(text, _) => text,
            Refusal::Unavailable => "The message store is unavailable; nothing was changed.",
        }
    }
}

impl From<Refusal> for HubError {
    fn from(refusal: Refusal) -> Self {
        HubError::new(refusal.text())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = match refusal {
            Refusal::Limited(text, secs) => return ApiError::too_many(text, secs),
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, refusal.text())
    }
}

type Outcome<T> = Result<T, Refusal>;

/// What is stored stays stored: an event that could not go out (the backplane is down) is
/// logged, and the call still succeeds; clients catch up from the history.
fn delivered(sent: Result<(), signalr_core::Error>, event: &str) {
    if let Err(error) = sent {
        tracing::warn!(%error, event, "could not deliver an event");
    }
}

/// The text of a message as it is stored (trimmed, line breaks as `\n`), or why it cannot be
/// sent: the same rules for new messages, direct messages and edits, on every database.
pub fn checked_content(state: &AppState, content: &str) -> Outcome<String> {
    let content = crate::normalize_newlines(content.trim());
    if content.is_empty() {
        return Err(Refusal::BadRequest("Empty messages are not sent.".into()));
    }
    if crate::has_control_characters(&content) {
        return Err(Refusal::BadRequest(
            "Messages cannot contain control characters (other than tabs and line breaks).".into(),
        ));
    }
    if content.chars().count() > state.max_message_chars {
        return Err(Refusal::BadRequest(format!(
            "Messages are limited to {} characters.",
            state.max_message_chars
        )));
    }
    Ok(content)
}

/// Counts one write by the user in `scope` against the message rate (`SEND_MESSAGE_RATE`):
/// direct messages share `SendMessage`'s allowance (`send`); edits and deletes have their own
/// allowance at the same rate (`edit`).
async fn rate_limit(state: &AppState, scope: &str, user_id: i64, what: &str) -> Outcome<()> {
    state
        .limiter
        .hit(scope, &user_id.to_string(), state.rates.send_message)
        .await
        .map_err(|limited| {
            let secs = limited.retry_after_secs();
            Refusal::Limited(format!("Too many {what}; try again in {secs} s."), secs)
        })
}

/// Members pass; to anyone else a private room (or one that does not exist) is not found,
/// and a public one must be joined first.
async fn require_member(state: &AppState, room_id: i64, user_id: i64) -> Outcome<()> {
    if state.store.is_member(room_id, user_id).await? {
        return Ok(());
    }
    match state.store.room(room_id).await? {
        Some(room) if !room.is_private => Err(Refusal::Forbidden("Join the room first.".into())),
        _ => Err(Refusal::NotFound("Room not found.".into())),
    }
}

/// Sends a direct message to `to_name`, creating the conversation on the first one. The hub
/// method `SendDirectMessage`, also behind `POST /api/v1/direct`.
pub async fn send_direct(
    HubState(state): HubState<AppState>,
    hub: ChatHub,
    from: CurrentUser,
    to_name: String,
    content: String,
) -> Outcome<ChatMessage> {
    let content = checked_content(&state, &content)?;
    let to = state
        .store
        .user_by_name(to_name.trim())
        .await?
        .ok_or_else(|| Refusal::NotFound("No such user.".into()))?;
    if to.id == from.id {
        return Err(Refusal::BadRequest(
            "Direct messages go to someone else.".into(),
        ));
    }
    if to.id == state.assistant_user || to.user_name == ASSISTANT_NAME {
        return Err(Refusal::BadRequest(
            "The assistant takes no direct messages; mention @gpt in a conversation.".into(),
        ));
    }
    rate_limit(&state, "send", from.id, "messages").await?;
    let (room_id, new_membership) = state
        .store
        .direct_room((from.id, &from.name), (to.id, &to.user_name))
        .await?;
    if new_membership {
        // Both people's open connections follow the conversation from its first message.
        let group = room_group(room_id);
        for (user, other) in [
            (from.id, (to.id, &to.user_name)),
            (to.id, (from.id, &from.name)),
        ] {
            for connection in crate::hub::user_connections(&hub, user).await {
                let _ = hub.groups().add(&connection, &group).await;
            }
            let member = RoomMember::new(room_id, other.0, other.1);
            delivered(
                hub.user(user.to_string())
                    .send(ChatClient::DirectConversationStarted { member })
                    .await,
                "DirectConversationStarted",
            );
        }
    }
    let message = state
        .store
        .add_message(room_id, from.id, &from.name, &content)
        .await?;
    let received = ChatClient::ReceiveMessage {
        message: message.clone(),
    };
    delivered(
        hub.group(room_group(room_id)).send(received).await,
        "ReceiveMessage",
    );
    if mentions_assistant(&content) {
        tokio::spawn(crate::hub::reply_in_room(state, hub, room_id, from.id));
    }
    Ok(message)
}

/// The caller's own message, still in the history, in a room they still belong to.
async fn own_message(
    state: &AppState,
    caller: &CurrentUser,
    message_id: i64,
    verb: &str,
) -> Outcome<ChatMessage> {
    let stored = state
        .store
        .message_by_id(message_id)
        .await?
        .filter(|m| !m.deleted)
        .ok_or_else(|| Refusal::NotFound("No such message.".into()))?;
    if stored.message.user_id != caller.id {
        return Err(Refusal::Forbidden(format!(
            "Only the author can {verb} a message."
        )));
    }
    require_member(state, stored.message.room_id, caller.id).await?;
    Ok(stored.message)
}

/// Replaces the text of the caller's message; the room receives `MessageEdited`. The hub
/// method `EditMessage`, also behind `PATCH /api/v1/messages/{id}`.
pub async fn edit(
    HubState(state): HubState<AppState>,
    hub: ChatHub,
    caller: CurrentUser,
    message_id: i64,
    content: String,
) -> Outcome<ChatMessage> {
    let content = checked_content(&state, &content)?;
    own_message(&state, &caller, message_id, "edit").await?;
    rate_limit(&state, "edit", caller.id, "edits and deletes").await?;
    let edited = state
        .store
        .edit_message(message_id, caller.id, &content)
        .await?
        .ok_or_else(|| Refusal::NotFound("No such message.".into()))?;
    let message = ChatClient::MessageEdited {
        message: edited.clone(),
    };
    delivered(
        hub.group(room_group(edited.room_id)).send(message).await,
        "MessageEdited",
    );
    Ok(edited)
}

/// Deletes the caller's message; the room receives `MessageDeleted`. The hub method
/// `DeleteMessage`, also behind `DELETE /api/v1/messages/{id}`.
pub async fn delete(
    HubState(state): HubState<AppState>,
    hub: ChatHub,
    caller: CurrentUser,
    message_id: i64,
) -> Outcome<()> {
    let message = own_message(&state, &caller, message_id, "delete").await?;
    rate_limit(&state, "edit", caller.id, "edits and deletes").await?;
    if !state.store.delete_message(message_id, caller.id).await? {
        return Err(Refusal::NotFound("No such message.".into()));
    }
    let deleted = DeletedMessage {
        room_id: message.room_id,
        message_id,
    };
    delivered(
        hub.group(room_group(message.room_id))
            .send(ChatClient::MessageDeleted { deleted })
            .await,
        "MessageDeleted",
    );
    Ok(())
}

/// Marks the room read up to `message_id`; the caller's other connections (tabs, devices)
/// receive `UnreadChanged`. The hub method `MarkRead`, also behind
/// `POST /api/v1/rooms/{id}/read`.
pub async fn mark_read(
    HubState(state): HubState<AppState>,
    hub: ChatHub,
    caller: CurrentUser,
    room_id: i64,
    message_id: i64,
) -> Outcome<ReadState> {
    require_member(&state, room_id, caller.id).await?;
    if !state.store.message_in_room(room_id, message_id).await? {
        return Err(Refusal::NotFound("No such message in this room.".into()));
    }
    let read = state
        .store
        .mark_read(room_id, caller.id, message_id)
        .await?;
    let unread = ChatClient::UnreadChanged { read: read.clone() };
    delivered(
        hub.user(caller.id.to_string()).send(unread).await,
        "UnreadChanged",
    );
    Ok(read)
}

/// A room in the room list, with where the caller stands in it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedRoom {
    #[serde(flatten)]
    pub room: Room,
    pub is_member: bool,
    /// Unread messages (0 when not a member).
    pub unread: i64,
}

/// The room list: `rooms` without direct conversations (listed separately), with membership
/// and unread counts.
pub async fn listed_rooms(
    state: &AppState,
    user_id: i64,
    rooms: Vec<Room>,
) -> Result<Vec<ListedRoom>, sqlx::Error> {
    let direct = state.store.direct_room_ids(user_id).await?;
    let unread = state.store.unread_counts(user_id).await?;
    Ok(rooms
        .into_iter()
        .filter(|room| !direct.contains(&room.id))
        .map(|room| ListedRoom {
            is_member: unread.contains_key(&room.id),
            unread: unread.get(&room.id).copied().unwrap_or(0),
            room,
        })
        .collect())
}

/// Tells everyone about a new public room (private ones stay with their members).
pub async fn announce_room(hub: &ChatHub, room: &Room) {
    if room.is_private {
        return;
    }
    let created = ChatClient::RoomCreated { room: room.clone() };
    if let Err(error) = hub.all().send(created).await {
        tracing::warn!(%error, "could not announce a new room");
    }
}

/// Refuses a third member in a direct conversation.
pub async fn refuse_if_direct(state: &AppState, room_id: i64) -> Result<(), ApiError> {
    if state.store.is_direct(room_id).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "A direct conversation has exactly two members.",
        ));
    }
    Ok(())
}

/// A participant (as `GET …/participants` lists them: role and when they joined) and whether
/// they are online now.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberPresence {
    #[serde(flatten)]
    pub member: Participant,
    pub online: bool,
}

/// The hub methods of this module, added to the chat hub: the same functions the REST
/// routes call.
pub fn hub_methods(builder: HubBuilder) -> HubBuilder {
    builder
        .method("SendDirectMessage", send_direct)
        .method("EditMessage", edit)
        .method("DeleteMessage", delete)
        .method("MarkRead", mark_read)
}

/// The REST routes of this module.
pub fn routes() -> Router<Service> {
    Router::new()
        .route("/api/v1/direct", get(direct_list).post(direct_send))
        .route(
            "/api/v1/messages/{id}",
            patch(edit_route).delete(delete_route),
        )
        .route("/api/v1/rooms/{id}/read", post(read_route))
        .route("/api/v1/rooms/{id}/members", get(members_route))
        .route("/api/v1/users/{name}", get(user_route))
}

/// Finds a user by name (to add them to a private room).
async fn user_route(
    State(state): State<AppState>,
    _user: CurrentUser,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Member>, ApiError> {
    let Path(name) = name.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "The user name in the path is not valid.",
        )
    })?;
    let found = state
        .store
        .user_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "User not found."))?;
    Ok(Json(Member {
        user_id: found.id,
        user_name: found.user_name,
    }))
}

async fn direct_list(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Vec<DirectConversation>>, ApiError> {
    Ok(Json(state.store.direct_conversations(user.id).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDirectMessage {
    user_name: String,
    content: String,
}

async fn direct_send(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    body: Result<Json<NewDirectMessage>, JsonRejection>,
) -> Result<(StatusCode, Json<ChatMessage>), ApiError> {
    let Json(body) = body?;
    let message = send_direct(HubState(state), hub, user, body.user_name, body.content).await?;
    Ok((StatusCode::CREATED, Json(message)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    content: String,
}

async fn edit_route(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    message_id: Result<Path<i64>, PathRejection>,
    body: Result<Json<Edit>, JsonRejection>,
) -> Result<Json<ChatMessage>, ApiError> {
    let Path(message_id) = message_id?;
    let Json(body) = body?;
    Ok(Json(
        edit(HubState(state), hub, user, message_id, body.content).await?,
    ))
}

async fn delete_route(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    message_id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(message_id) = message_id?;
    delete(HubState(state), hub, user, message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Read {
    message_id: i64,
}

async fn read_route(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    room_id: Result<Path<i64>, PathRejection>,
    body: Result<Json<Read>, JsonRejection>,
) -> Result<Json<ReadState>, ApiError> {
    let Path(room_id) = room_id?;
    let Json(body) = body?;
    Ok(Json(
        mark_read(HubState(state), hub, user, room_id, body.message_id).await?,
    ))
}

/// `GET …/participants` by name, each with whether they are online (the member list of the
/// web UI).
async fn members_route(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    room_id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Vec<MemberPresence>>, ApiError> {
    let Path(room_id) = room_id?;
    let room = state
        .store
        .room(room_id)
        .await?
        .ok_or_else(|| Refusal::NotFound("Room not found.".into()))?;
    if room.is_private {
        require_member(&state, room_id, user.id).await?;
    }
    let online = crate::hub::online_user_ids(&hub, room_id)
        .await
        .map_err(Refusal::from)?;
    let mut members = state.store.participants(room_id).await?;
    members.sort_by(|a, b| a.user_name.cmp(&b.user_name));
    Ok(Json(
        members
            .into_iter()
            .map(|member| MemberPresence {
                online: online.contains(&member.user_id.to_string()),
                member,
            })
            .collect(),
    ))
}
