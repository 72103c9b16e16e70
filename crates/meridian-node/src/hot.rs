//! The hot read path: a plain `GET /v1/kv/{keyspace}/{key}` of a live record, answered on
//! hyper's request before the router sees it. The router's matching, extractors and
//! middleware cost about as much CPU as the read itself (docs/BENCHMARKS.md, "Session 16");
//! this path does the same checks as the route and builds the same answer with
//! [`render::get_response`], and hands every other request — any query but
//! `consistency=local`, any key it cannot decode, any refusal, a key that is absent or dead —
//! to the router unchanged, so every error is still made (and worded) in one place.

use std::borrow::Cow;
use std::time::Instant;

use axum::http::{HeaderValue, Method, Request};
use axum::response::Response;

use crate::api::KEY_ROUTE;
use crate::input::{self, names};
use crate::state::Node;
use crate::{metrics, read, render, write};

/// Answers the requests the hot path takes for one node.
#[derive(Clone)]
pub struct HotRead {
    node: Node,
    /// `Meridian-Region`'s value, encoded once.
    region: Option<HeaderValue>,
}

impl HotRead {
    /// The hot path of `node`.
    pub fn new(node: Node) -> Self {
        let region = HeaderValue::from_str(node.region()).ok();
        HotRead { node, region }
    }

    /// The answer to `req` when it is a `GET` of a live record of a keyspace this region may
    /// hold, with no query but `consistency=local`: exactly what the router would answer,
    /// counted in the same metrics series. `None` for every other request.
    pub fn answer<B>(&self, req: &Request<B>) -> Option<Response> {
        if req.method() != Method::GET
            || !local_query(req.uri().query())
            || self.node.join_state() == crate::state::Join::Running
        {
            return None;
        }
        let started = Instant::now();
        let (ks, key) = key_path(req.uri().path())?;
        let node = &self.node;
        let ks = node.topology().keyspace(&ks)?;
        input::check_key(&key, node.topology().limits.max_key_bytes).ok()?;
        write::check_residency(node, ks, None).ok()?;
        let record = read::load(node, &ks.name, &key).ok()??;
        if !record.is_live(node.now()) {
            return None;
        }
        let mut resp = render::get_response(&record);
        if let Some(region) = &self.region {
            resp.headers_mut().insert(names::REGION, region.clone());
        }
        metrics::request(
            KEY_ROUTE,
            &Method::GET,
            resp.status().as_u16(),
            started.elapsed(),
        );
        Some(resp)
    }
}

/// Whether a read with query string `query` is a `local` read the hot path may answer.
fn local_query(query: Option<&str>) -> bool {
    matches!(query, None | Some("consistency=local"))
}

/// `(keyspace, key)` of a path the router matches as [`KEY_ROUTE`], each segment
/// percent-decoded as the router decodes it; `None` for any other path, and for a segment that
/// does not decode to UTF-8 (the router refuses that one).
pub fn key_path(path: &str) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    let (ks, key) = path.strip_prefix("/v1/kv/")?.split_once('/')?;
    if ks.is_empty() || key.is_empty() || key.contains('/') {
        return None;
    }
    let decode = |s| percent_encoding::percent_decode_str(s).decode_utf8().ok();
    Some((decode(ks)?, decode(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_decode_like_the_router() {
        let parts = |p| key_path(p).map(|(a, b)| (a.into_owned(), b.into_owned()));
        let owned = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(parts("/v1/kv/users/alice"), owned("users", "alice"));
        assert_eq!(parts("/v1/kv/users/a%2Fb%20c"), owned("users", "a/b c"));
        assert_eq!(parts("/v1/kv/us%65rs/k"), owned("users", "k"));
        for other in [
            "/v1/kv/users",
            "/v1/kv/users/",
            "/v1/kv//k",
            "/v1/kv/users/k/incr",
            "/v1/kv/users/k/",
            "/v1/kv/users/%FF",
            "/v1/watch/users/k",
            "/v2/kv/users/k",
        ] {
            assert_eq!(parts(other), None, "{other}");
        }
    }

    #[test]
    fn only_local_reads_are_hot() {
        assert!(local_query(None));
        assert!(local_query(Some("consistency=local")));
        for q in [
            "",
            "consistency=session",
            "consistency=strong",
            "x=1",
            "consistency=local&",
        ] {
            assert!(!local_query(Some(q)), "{q}");
        }
    }
}
