//! Conversations: one key of the `conversations` map keyspace per conversation, one field per
//! message, so messages appended concurrently in different regions all survive the merge.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    App, AppError, CONVERSATIONS, answer, check_text, id_path, idempotency_key, read_json,
    stored_json,
};

/// Longest author name, in characters.
const MAX_AUTHOR_CHARS: usize = 128;
/// Longest message text, in characters.
const MAX_TEXT_CHARS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    author: String,
    text: String,
}

/// A message as stored in its map field.
#[derive(Serialize, Deserialize)]
struct Stored {
    author: String,
    text: String,
    at_ms: u64,
}

/// `POST /conversations/{id}/messages`: appends a message as map field `<message id>`.
pub(super) async fn post_message(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let id = id_path("conversation", path)?;
    let key = idempotency_key(&headers)?;
    let msg: NewMessage = read_json(body, r#"{"author": "ada", "text": "hello"}"#).await?;
    check_text("author", &msg.author, MAX_AUTHOR_CHARS)?;
    check_text("text", &msg.text, MAX_TEXT_CHARS)?;
    let msg_id = key.clone().unwrap_or_else(|| app.random_hex(8));
    let stored = Stored {
        author: msg.author,
        text: msg.text,
        at_ms: app.now_ms(),
    };
    let mut req = app
        .node()
        .kv(Method::PATCH, CONVERSATIONS, &id)
        .json(&json!({ msg_id.clone(): stored }));
    if let Some(k) = &key {
        req = req.header("idempotency-key", k);
    }
    let replayed = match app.node().send(req).await {
        Ok(reply) => reply.replayed,
        // A retry carries a new `at_ms`, so the node sees another request under the same key:
        // it is a replay if the first attempt's message is there with the same author and text.
        Err(e) if e.code == "idempotency_key_reused" => {
            if !already_posted(&app, &id, &msg_id, &stored).await? {
                return Err(e);
            }
            true
        }
        Err(e) => return Err(e),
    };
    let body = json!({"conversation": id, "message": msg_id, "region": app.region()});
    Ok(answer(StatusCode::CREATED, body, replayed))
}

/// Whether conversation `id` has message `msg_id` by the same author with the same text.
async fn already_posted(app: &App, id: &str, msg_id: &str, msg: &Stored) -> Result<bool, AppError> {
    let messages = match read(app, id).await {
        Ok(m) => m,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(messages
        .iter()
        .any(|(mid, m)| mid == msg_id && m.author == msg.author && m.text == msg.text))
}

/// The messages of conversation `id` with their ids, by `at_ms`, then id. Fields that are not
/// messages (written by something other than this app) are left out.
async fn read(app: &App, id: &str) -> Result<Vec<(String, Stored)>, AppError> {
    let reply = app
        .node()
        .send(app.node().kv(Method::GET, CONVERSATIONS, id))
        .await?;
    let serde_json::Value::Object(fields) = stored_json(CONVERSATIONS, id, &reply)? else {
        return Ok(Vec::new());
    };
    let mut messages: Vec<(String, Stored)> = fields
        .into_iter()
        .filter_map(|(mid, v)| Some((mid, serde_json::from_value(v).ok()?)))
        .collect();
    messages.sort_by(|(a_id, a), (b_id, b)| a.at_ms.cmp(&b.at_ms).then_with(|| a_id.cmp(b_id)));
    Ok(messages)
}

/// `GET /conversations/{id}`: `{"conversation", "messages": [{"id","author","text","at_ms"}]}`.
pub(super) async fn get(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let id = id_path("conversation", path)?;
    let messages: Vec<serde_json::Value> = read(&app, &id)
        .await?
        .into_iter()
        .map(|(mid, m)| json!({"id": mid, "author": m.author, "text": m.text, "at_ms": m.at_ms}))
        .collect();
    let body = json!({"conversation": id, "messages": messages});
    Ok(answer(StatusCode::OK, body, false))
}
