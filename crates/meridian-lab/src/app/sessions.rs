//! Sessions: one key of the `sessions` keyspace per session, written with a 30-minute TTL and
//! homed in the region that created it.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{App, AppError, SESSIONS, answer, check_id, id_path, read_json, stored_json};

/// Time to live of a session, as the node's `Meridian-TTL` header.
const SESSION_TTL: &str = "30m";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    user: String,
}

/// `POST /sessions`: a new session id (24 hex digits) for the user.
pub(super) async fn create(State(app): State<App>, body: Body) -> Result<Response, AppError> {
    let new: NewSession = read_json(body, r#"{"user": "ada"}"#).await?;
    check_id("user", &new.user)?;
    let id = app.random_hex(12);
    let value = json!({
        "session": id,
        "user": new.user,
        "region": app.region(),
        "created_ms": app.now_ms(),
    });
    let req = app
        .node()
        .kv(Method::PUT, SESSIONS, &id)
        .header("meridian-ttl", SESSION_TTL)
        .header("meridian-home", app.region())
        .json(&value);
    app.node().send(req).await?;
    let body = json!({"session": id, "region": app.region()});
    Ok(answer(StatusCode::CREATED, body, false))
}

/// `GET /sessions/{id}`: the session, until it expires (then 404).
pub(super) async fn get(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let id = id_path("session", path)?;
    let reply = app
        .node()
        .send(app.node().kv(Method::GET, SESSIONS, &id))
        .await?;
    Ok(answer(
        StatusCode::OK,
        stored_json(SESSIONS, &id, &reply)?,
        false,
    ))
}
