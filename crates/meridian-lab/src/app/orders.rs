//! Orders: `POST /checkout` writes one key `o-<Idempotency-Key>` of the `orders` keyspace, whose
//! sync replication acknowledges it only once a quorum of regions holds it.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{
    App, AppError, ORDERS, answer, check_id, check_text, id_path, idempotency_key, read_json,
    stored_json,
};

/// Most items one order may have.
const MAX_ITEMS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkout {
    user: String,
    items: Vec<String>,
    total_cents: u64,
}

/// `POST /checkout`: stores the order under `o-<Idempotency-Key>`, forwarding the key so a
/// retry gets the first outcome (with `Idempotent-Replayed: true`) instead of a second order.
pub(super) async fn checkout(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let Some(key) = idempotency_key(&headers)? else {
        return Err(AppError::bad_request(
            "idempotency_key_required",
            "a checkout needs an Idempotency-Key header",
            "send `Idempotency-Key: <unique id of this checkout>` and reuse it when retrying, so a retry never places a second order",
        ));
    };
    let order: Checkout = read_json(
        body,
        r#"{"user": "ada", "items": ["book"], "total_cents": 1299}"#,
    )
    .await?;
    check_id("user", &order.user)?;
    if !(1..=MAX_ITEMS).contains(&order.items.len()) {
        return Err(AppError::bad_request(
            "bad_body",
            format!(
                "an order has 1 to {MAX_ITEMS} items, not {}",
                order.items.len()
            ),
            "send at least one item",
        ));
    }
    for item in &order.items {
        check_text("items[]", item, super::MAX_ID_CHARS)?;
    }
    let id = format!("o-{key}");
    // The value depends on the request alone, so a retry is the same request to the node.
    let value = json!({
        "order": id,
        "user": order.user,
        "items": order.items,
        "total_cents": order.total_cents,
    });
    let req = app
        .node()
        .kv(Method::PUT, ORDERS, &id)
        .header("idempotency-key", &key)
        .json(&value);
    let reply = app.node().send(req).await?;
    let body = json!({"order": id, "region": app.region()});
    Ok(answer(StatusCode::CREATED, body, reply.replayed))
}

/// `GET /orders/{id}`: the order as stored.
pub(super) async fn get(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let id = id_path("order", path)?;
    let reply = app
        .node()
        .send(app.node().kv(Method::GET, ORDERS, &id))
        .await?;
    Ok(answer(
        StatusCode::OK,
        stored_json(ORDERS, &id, &reply)?,
        false,
    ))
}
