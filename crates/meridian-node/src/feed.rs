//! `GET /v1/watch/{keyspace}?prefix=`: server-sent events of durable changes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::state::{Change, Node};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WatchParams {
    #[serde(default)]
    prefix: String,
}

/// Streams every change of the keyspace whose key starts with `prefix`, as it becomes durable.
/// Each event is named by its operation and carries the change as JSON. A subscriber that falls
/// more than the feed's buffer behind gets one `lagged` event and the stream ends, so it knows to
/// re-read instead of silently missing changes.
pub(crate) async fn watch(
    State(node): State<Node>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WatchParams>, QueryRejection>,
) -> Response {
    let ks = match path {
        Ok(Path(ks)) => ks,
        Err(e) => {
            return ApiError::bad_request("bad_path", e.body_text(), "GET /v1/watch/{keyspace}")
                .into_response();
        }
    };
    let prefix = match q {
        Ok(Query(p)) => p.prefix,
        Err(e) => {
            return ApiError::bad_request("bad_query", e.body_text(), "use ?prefix=<text>")
                .into_response();
        }
    };
    // A keyspace pinned to regions that exclude this one never changes here: the feed is asked
    // of an allowed region (421 naming one), not held open empty.
    if let Err(e) = node
        .keyspace(&ks)
        .and_then(|k| crate::write::check_residency(&node, k, None))
    {
        return e.into_response();
    }
    let rx = node.subscribe();
    let until_closed = node.clone();
    let stream = futures_util::StreamExt::take_until(events(rx, ks, prefix), async move {
        until_closed.closed().await
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn events(
    rx: tokio::sync::broadcast::Receiver<Change>,
    keyspace: String,
    prefix: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some(rx), move |rx| {
        let keyspace = keyspace.clone();
        let prefix = prefix.clone();
        async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(c) if c.keyspace == keyspace && c.key.starts_with(&prefix) => {
                        let ev = Event::default()
                            .event(c.op)
                            .json_data(&c)
                            .unwrap_or_default();
                        return Some((Ok(ev), Some(rx)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let ev = Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{n}}}"));
                        return Some((Ok(ev), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}
