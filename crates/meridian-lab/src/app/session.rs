//! Read-your-writes for the app's users: the `Meridian-Session` token a client sends is handed
//! to every node request made for it, and the node's newest token goes back in the answer. The
//! token lives in a task-local for the duration of one request, so handlers need not thread it.
//!
//! With a token, the node's writes merge it into the one they return, and reads ask for
//! `consistency=session`: the node waits (bounded) until the client's writes are visible or
//! forwards the read to a region that has them, so a user who failed over to another region
//! never reads older data than they wrote.

use std::cell::RefCell;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header carrying a client's session token, in and out.
pub const SESSION_HEADER: &str = "meridian-session";

tokio::task_local! {
    static TOKEN: RefCell<Option<HeaderValue>>;
}

/// Middleware: makes the request's token available to [`attach`] and answers with the newest
/// token [`remember`] saw.
pub(super) async fn scope(req: Request, next: Next) -> Response {
    let incoming = req.headers().get(SESSION_HEADER).cloned();
    TOKEN
        .scope(RefCell::new(incoming), async move {
            let mut resp = next.run(req).await;
            if let Some(v) = TOKEN.with(|t| t.borrow().clone()) {
                resp.headers_mut().insert(SESSION_HEADER, v);
            }
            resp
        })
        .await
}

/// The current request's token, if it has one (outside a request scope: none).
pub(super) fn current() -> Option<HeaderValue> {
    TOKEN.try_with(|t| t.borrow().clone()).ok().flatten()
}

/// Keeps the token a node answered with, to hand back to the client.
pub(super) fn remember(v: &HeaderValue) {
    let _ = TOKEN.try_with(|t| *t.borrow_mut() = Some(v.clone()));
}
