//! The REST API (`/api/v1`) and health endpoints. Errors are `{"error": "..."}` with the
//! status code that fits.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::{check_password, check_user_name, name_key, HashError, MAX_PASSWORD_BYTES};
use crate::auth::CurrentUser;
use crate::clients::ChatHub;
use crate::limits::Rate;
use crate::store::{Room, OWNER};
use crate::{room_group, AppState};

/// An API error: a status, a message, and for throttled requests when to retry.
pub struct ApiError(StatusCode, String, Option<u64>);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into(), None)
    }
    /// 429 with `Retry-After`.
    fn throttled(limited: crate::limits::Limited) -> Self {
        let secs = limited.retry_after_secs();
        ApiError::too_many(format!("Too many attempts; try again in {secs} s."), secs)
    }
    /// 429 with `Retry-After: secs`.
    pub fn too_many(message: impl Into<String>, secs: u64) -> Self {
        ApiError(StatusCode::TOO_MANY_REQUESTS, message.into(), Some(secs))
    }
    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found."))
    }
    fn forbidden(message: &str) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if let Some(secs) = self.2 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        crate::store::log_error(&error);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable.",
        )
    }
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy; try again in a moment.".into(),
                Some(1),
            ),
            HashError::Failed => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The password could not be processed.",
            ),
        }
    }
}

/// Our own words: the extractor's text would show library internals.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "Send a JSON body with Content-Type: application/json."
            }
            JsonRejection::JsonSyntaxError(_) => "The request body is not valid JSON.",
            JsonRejection::JsonDataError(_) => {
                "The request body does not have the fields this endpoint expects."
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "The request body is too large."
            }
            _ => "The request body could not be read.",
        };
        ApiError::new(rejection.status(), message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(_: QueryRejection) -> Self {
        ApiError::bad_request("The query string has unknown or invalid parameters.")
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::bad_request("Ids in the path are whole numbers.")
    }
}

/// The client's address (the TCP peer), for throttling.
pub struct ClientAddress(String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // `signalr_core::serve_service` (the binary) gives every request its peer; an
        // application that serves the router with axum's `ConnectInfo` works too.
        let peer = match parts.extensions.get::<signalr_core::RemoteAddr>() {
            Some(remote) => Some(remote.0),
            None => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0),
        };
        let address = peer.map_or_else(|| "unknown".to_owned(), |peer| peer.ip().to_string());
        Ok(ClientAddress(address))
    }
}

/// Counts one attempt against `rate`; 429 with `Retry-After` past it.
async fn throttle(state: &AppState, scope: &str, key: &str, rate: Rate) -> ApiResult<()> {
    state
        .limiter
        .hit(scope, key, rate)
        .await
        .map_err(ApiError::throttled)
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    user_name: String,
    password: String,
}

fn session(state: &AppState, user_id: i64, user_name: &str) -> ApiResult<Value> {
    let issued = state
        .tokens
        .issue(user_id, user_name)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(json!({
        "accessToken": issued.token,
        "userId": user_id,
        "userName": user_name,
        "expiresAt": issued.expires_at,
    }))
}

pub async fn register(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    body: Result<Json<Credentials>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(credentials) = body?;
    throttle(
        &state,
        "register-address",
        &address,
        state.rates.register_per_address,
    )
    .await?;
    let name = check_user_name(&credentials.user_name).map_err(ApiError::bad_request)?;
    check_password(&credentials.password).map_err(ApiError::bad_request)?;
    let hash = state.hasher.hash(credentials.password).await?;
    let Some(id) = state
        .store
        .create_user(&name.display, &name.key, &hash)
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "That userName is taken.",
        ));
    };
    Ok((
        StatusCode::CREATED,
        Json(session(&state, id, &name.display)?),
    ))
}

/// Throttled per address and per name (so a guesser can neither hammer one account nor many);
/// an unknown name costs the same hash check as a wrong password, so timing tells nothing.
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    body: Result<Json<Credentials>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(credentials) = body?;
    if credentials.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    let key = name_key(&credentials.user_name);
    throttle(
        &state,
        "login-address",
        &address,
        state.rates.login_per_address,
    )
    .await?;
    throttle(&state, "login-name", &key, state.rates.login_per_name).await?;
    let user = state
        .store
        .user_for_login(&key, &credentials.user_name)
        .await?;
    let (hash, user) = match user {
        Some(user) => (Some(user.password_hash.clone()), Some(user)),
        None => (None, None),
    };
    let matches = state.hasher.verify(credentials.password, hash).await?;
    match user {
        Some(user) if matches => Ok(Json(session(&state, user.id, &user.user_name)?)),
        _ => Err(ApiError::unauthorized("Wrong userName or password.")),
    }
}

pub async fn rooms(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Value>> {
    let rooms = state.store.visible_rooms(user.id).await?;
    Ok(Json(json!(
        crate::messaging::listed_rooms(&state, user.id, rooms).await?
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRoom {
    name: String,
    #[serde(default)]
    is_private: bool,
}

pub async fn create_room(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    body: Result<Json<NewRoom>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(room) = body?;
    let name = room.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1 to 100 characters."));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name cannot contain control characters.",
        ));
    }
    let created = state
        .store
        .create_room(name, room.is_private, user.id)
        .await?;
    // The creator's open connections are in the room at once.
    for connection in crate::hub::user_connections(&hub, user.id).await {
        let _ = hub.groups().add(&connection, &room_group(created.id)).await;
    }
    crate::messaging::announce_room(&hub, &created).await;
    Ok((StatusCode::CREATED, Json(json!(created))))
}

/// A room the caller may see, and their role in it. Unknown rooms and private rooms the
/// caller is not in answer the same 404: which ids exist is nobody else's business.
async fn visible_room(
    state: &AppState,
    room_id: i64,
    user: &CurrentUser,
) -> ApiResult<(Room, Option<String>)> {
    let room = state.store.room(room_id).await?;
    let role = match &room {
        Some(_) => state.store.role(room_id, user.id).await?,
        None => None,
    };
    match room {
        Some(room) if !room.is_private || role.is_some() => Ok((room, role)),
        _ => Err(ApiError::not_found("Room")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// Newest first (`before` pages back); with `after`, oldest first from just after that id: what
/// a reconnecting client missed.
pub async fn messages(
    State(state): State<AppState>,
    user: CurrentUser,
    room_id: Result<Path<i64>, PathRejection>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(room_id) = room_id?;
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200."));
    }
    visible_room(&state, room_id, &user).await?;
    let messages = match (page.before, page.after) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("Give before or after, not both.")),
        (None, Some(after)) => state.store.messages_after(room_id, after, limit).await?,
        (before, None) => state.store.messages(room_id, before, limit).await?,
    };
    Ok(Json(json!(messages)))
}

pub async fn participants(
    State(state): State<AppState>,
    user: CurrentUser,
    room_id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(room_id) = room_id?;
    visible_room(&state, room_id, &user).await?;
    Ok(Json(json!(state.store.participants(room_id).await?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewParticipant {
    user_id: i64,
}

/// The owner adds someone: they get `RoomAdded`, the room `UserJoined`, and their open
/// connections join at once.
pub async fn add_participant(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    room_id: Result<Path<i64>, PathRejection>,
    body: Result<Json<NewParticipant>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Path(room_id) = room_id?;
    let Json(participant) = body?;
    let (room, role) = visible_room(&state, room_id, &user).await?;
    // A direct conversation has no owner: it stays its two people, whoever asks.
    crate::messaging::refuse_if_direct(&state, room_id).await?;
    if role.as_deref() != Some(OWNER) {
        return Err(ApiError::forbidden(
            "Only the room's owner can add participants.",
        ));
    }
    let name = match state.store.user_name(participant.user_id).await? {
        Some(name) if participant.user_id != state.assistant_user => name,
        _ => return Err(ApiError::not_found("User")),
    };
    let added = state.store.add_member(room_id, participant.user_id).await?;
    if added {
        crate::hub::member_joined(&hub, &room, participant.user_id, &name, true).await;
    }
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"roomId": room_id, "userId": participant.user_id, "added": added})),
    ))
}

/// The owner removes a member, or a member removes themselves (leaves).
pub async fn remove_participant(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
    user: CurrentUser,
    ids: Result<Path<(i64, i64)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((room_id, member)) = ids?;
    let (_, role) = visible_room(&state, room_id, &user).await?;
    if member != user.id && state.store.is_direct(room_id).await? {
        return Err(ApiError::forbidden(
            "Nobody is removed from a direct conversation; each person may leave it.",
        ));
    }
    if member != user.id && role.as_deref() != Some(OWNER) {
        return Err(ApiError::forbidden(
            "Only the room's owner can remove participants.",
        ));
    }
    let name = state.store.user_name(member).await?.unwrap_or_default();
    match state.store.remove_member(room_id, member).await? {
        Some(departure) => {
            crate::hub::member_left(&hub, room_id, member, &name, departure, member != user.id)
                .await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "That user is not a member of this room.",
        )),
    }
}

/// How long a health check waits for the database: answers come within 2 s even when the
/// database hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);

/// The database's state for health checks: `Err` with a short reason.
async fn database_health(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(crate::store::describe(&error)),
        Err(_) => Err(format!(
            "no answer within {} ms",
            HEALTH_TIMEOUT.as_millis()
        )),
    }
}

pub async fn health(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
) -> (StatusCode, Json<Value>) {
    let database = match database_health(&state).await {
        Ok(()) => json!({"status": "ok"}),
        Err(reason) => json!({"status": "error", "error": reason}),
    };
    let backplane = match hub.backplane_healthy() {
        None => json!({"status": "off"}),
        Some(true) => json!({"status": "ok"}),
        Some(false) => json!({"status": "error", "error": "Redis is unreachable"}),
    };
    let healthy = database["status"] == "ok" && backplane["status"] != "error";
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if healthy { "ok" } else { "degraded" },
            "database": database,
            "backplane": backplane,
            "connections": hub.connection_count(),
        })),
    )
}

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and, when scaled out, the Redis backplane is connected
/// (without it, messages would not reach users on the other processes).
pub async fn ready(
    State(state): State<AppState>,
    State(hub): State<ChatHub>,
) -> (StatusCode, Json<Value>) {
    let database = database_health(&state).await;
    let backplane = hub.backplane_healthy().unwrap_or(true);
    if database.is_ok() && backplane {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        let mut reasons = Vec::new();
        if let Err(reason) = &database {
            reasons.push(format!("database: {reason}"));
        }
        if !backplane {
            reasons.push("backplane: Redis is unreachable".to_owned());
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not ready",
                "database": database.is_ok(),
                "backplane": backplane,
                "reason": reasons.join("; "),
            })),
        )
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "That method is not allowed on this endpoint.",
    )
}
