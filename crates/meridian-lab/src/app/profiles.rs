//! Profiles: one key of the `profiles` keyspace per user, pinned to the zone of its home region
//! (`residency = "home-zone"`), so a profile is written and read only there.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::error::REPLAY_HEADER;
use super::{App, AppError, PROFILES, answer, id_path, is_region_name, read_json, stored_json};

/// The request's `Meridian-Home`, if any: 400 `bad_home` unless it is a region name.
fn home_header(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get("meridian-home") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(h) if is_region_name(h) => Ok(Some(h.to_string())),
        _ => Err(AppError::bad_request(
            "bad_home",
            "the Meridian-Home header is not a region name",
            "send the name of a region of the topology, e.g. `Meridian-Home: eu-west-1`",
        )),
    }
}

/// `PUT /profiles/{user}`: stores the JSON object with `Meridian-Home` (default: this region).
/// A home in another zone makes the node answer 421, which becomes `Meridian-Replay`.
pub(super) async fn put(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let user = id_path("user", path)?;
    let home = home_header(&headers)?.unwrap_or_else(|| app.region().to_string());
    let profile: serde_json::Map<String, serde_json::Value> =
        read_json(body, r#"{"name": "Ada", "locale": "en-GB"}"#).await?;
    let req = app
        .node()
        .kv(Method::PUT, PROFILES, &user)
        .header("meridian-home", &home)
        .json(&profile);
    let reply = app.node().send(req).await?;
    let body = json!({"profile": user, "home": home, "region": app.region()});
    Ok(answer(reply.status, body, reply.replayed))
}

/// `GET /profiles/{user}`: the stored object. A profile absent here whose `Meridian-Home` (sent
/// by the client) is another region answers 421 with `Meridian-Replay` naming that region.
pub(super) async fn get(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let user = id_path("user", path)?;
    let home = home_header(&headers)?;
    let reply = match app
        .node()
        .send(app.node().kv(Method::GET, PROFILES, &user))
        .await
    {
        Ok(r) => r,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return Err(match home.filter(|h| h != app.region()) {
                Some(h) => AppError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "wrong_region",
                    format!(
                        "profile `{user}` is not held in region `{}`; its home is `{h}`",
                        app.region()
                    ),
                    format!("read it in region `{h}`"),
                )
                .with_header(
                    HeaderName::from_static(REPLAY_HEADER),
                    &format!("region={h}"),
                ),
                None => e,
            });
        }
        Err(e) => return Err(e),
    };
    Ok(answer(
        StatusCode::OK,
        stored_json(PROFILES, &user, &reply)?,
        false,
    ))
}
