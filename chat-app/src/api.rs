//! The REST API (`/api/v1`) and health endpoints. Errors are `{"error": "..."}` with the
//! status code that fits.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{hash_password, verify_password, CurrentUser};
use crate::{room_group, AppState};

/// An API error: a status and a message.
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
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
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(%error, "database error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable.",
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    user_name: String,
    password: String,
}

fn check_credentials(credentials: &Credentials) -> ApiResult<()> {
    let name = &credentials.user_name;
    let valid_name = (3..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !valid_name {
        return Err(ApiError::bad_request(
            "userName must be 3 to 32 letters, digits, '_', '.' or '-'.",
        ));
    }
    if credentials.password.chars().count() < 8 {
        return Err(ApiError::bad_request(
            "password must be at least 8 characters.",
        ));
    }
    Ok(())
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
    body: Result<Json<Credentials>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(credentials) = body?;
    check_credentials(&credentials)?;
    let hash = hash_password(&credentials.password)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let Some(id) = state
        .store
        .create_user(&credentials.user_name, &hash)
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "That userName is taken.",
        ));
    };
    Ok((
        StatusCode::CREATED,
        Json(session(&state, id, &credentials.user_name)?),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(credentials) = body?;
    let user = state.store.user_by_name(&credentials.user_name).await?;
    match user {
        Some(user) if verify_password(&credentials.password, &user.password_hash) => {
            Ok(Json(session(&state, user.id, &user.user_name)?))
        }
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
    user: CurrentUser,
    body: Result<Json<NewRoom>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(room) = body?;
    let name = room.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1 to 100 characters."));
    }
    let created = state
        .store
        .create_room(name, room.is_private, user.id)
        .await?;
    // The creator's open connections are in the room at once.
    for connection in crate::hub::user_connections(&state.hub, user.id).await {
        let _ = state
            .hub
            .groups()
            .add(&connection, &room_group(created.id))
            .await;
    }
    crate::messaging::announce_room(&state, &created).await;
    Ok((StatusCode::CREATED, Json(json!(created))))
}

/// Loads a room the caller may read: 404 when unknown, 403 when private and not a member.
async fn readable_room(state: &AppState, room_id: i64, user: &CurrentUser) -> ApiResult<()> {
    let room = state
        .store
        .room(room_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Room"))?;
    if room.is_private && !state.store.is_member(room_id, user.id).await? {
        return Err(ApiError::forbidden("This room is private."));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    before: Option<i64>,
    limit: Option<i64>,
}

pub async fn messages(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(room_id): Path<i64>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200."));
    }
    readable_room(&state, room_id, &user).await?;
    Ok(Json(json!(
        state.store.messages(room_id, page.before, limit).await?
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewParticipant {
    user_id: i64,
}

pub async fn add_participant(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(room_id): Path<i64>,
    body: Result<Json<NewParticipant>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(participant) = body?;
    state
        .store
        .room(room_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Room"))?;
    if !state.store.is_member(room_id, user.id).await? {
        return Err(ApiError::forbidden("Only members can add participants."));
    }
    crate::messaging::refuse_if_direct(&state, room_id).await?;
    if !state.store.user_exists(participant.user_id).await? {
        return Err(ApiError::not_found("User"));
    }
    state.store.add_member(room_id, participant.user_id).await?;
    // Their open connections join the room's group at once.
    for connection in crate::hub::user_connections(&state.hub, participant.user_id).await {
        let _ = state
            .hub
            .groups()
            .add(&connection, &room_group(room_id))
            .await;
    }
    Ok(StatusCode::CREATED)
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match state.store.ping().await {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "error", "error": e.to_string()}),
    };
    let backplane = match state.hub.backplane_healthy() {
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
            "connections": state.hub.connection_count(),
        })),
    )
}

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and, when scaled out, the Redis backplane is connected
/// (without it, messages would not reach users on the other processes).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.store.ping().await.is_ok();
    let backplane = state.hub.backplane_healthy().unwrap_or(true);
    if database && backplane {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "database": database, "backplane": backplane})),
        )
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Endpoint")
}
