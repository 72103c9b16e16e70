//! The hot read path against the router: every request the hot path answers gets exactly the
//! router's answer (status, headers, body), it answers every live local read, and it leaves
//! every other request — refusals, absent, deleted and expired keys, other queries — to the
//! router.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use common::{TOPOLOGY, TestNode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::service::Service;
use meridian_node::hot::HotRead;
use meridian_node::{Node, NodeConfig, api, clock::SystemClock, keys};
use meridian_store::{Store, StoreOptions, Table};

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("a valid request")
}

/// Status, headers and body of `resp` as they go on the wire: hyper writes `content-length`
/// from the body's exact size when the response does not carry one.
async fn parts(resp: Response<Body>) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
    let status = resp.status();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    if !resp.headers().contains_key("content-length")
        && let Some(n) = resp.body().size_hint().exact()
    {
        headers.push(("content-length".into(), n.to_string()));
    }
    headers.sort();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body.to_vec())
}

/// The router's answer to `uri` on `node`.
async fn routed(node: &Node, uri: &str) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
    let router = hyper_util::service::TowerToHyperService::new(api::router(node.clone()));
    let resp = router
        .call(get(uri))
        .await
        .expect("the router is infallible");
    parts(resp).await
}

async fn send(t: &TestNode, method: &str, path: &str, body: &str) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = t
        .client
        .request(method, t.url(path))
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// A record of keyspace `eu_only` held in `t`'s store although this region (`us-east-1`) may
/// not hold it, as after `residency = "eu"` was added to a keyspace with data: written through
/// a node whose topology has no such pin and copied over byte for byte.
async fn plant_pinned_record(t: &TestNode, key: &str) {
    let unpinned = TOPOLOGY.replace("residency = \"eu\"\n", "");
    let topology = meridian_core::config::parse("unpinned.toml", &unpinned).expect("topology");
    let store = Store::in_memory(StoreOptions::default());
    let other = Node::new(
        Arc::new(topology),
        "us-east-1",
        store,
        Arc::new(SystemClock),
        NodeConfig::default(),
    )
    .expect("node");
    let put = Request::put(format!("/v1/kv/eu_only/{key}"))
        .body(Body::from("pinned"))
        .expect("request");
    let router = hyper_util::service::TowerToHyperService::new(api::router(other.clone()));
    let resp = router.call(put).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let data_key = keys::data_key("eu_only", key);
    let bytes = other
        .store()
        .get(Table::Data, &data_key)
        .expect("read")
        .expect("the record was written");
    t.node
        .store()
        .transact(move |txn| txn.put(Table::Data, &data_key, &bytes))
        .await
        .expect("planted");
}

#[tokio::test]
async fn the_hot_path_answers_live_local_reads_exactly_as_the_router() {
    let t = TestNode::start().await;
    send(&t, "PUT", "/v1/kv/reg/plain", "hello").await;
    send(&t, "PUT", "/v1/kv/reg/a%2Fb%20c", "slashed").await;
    send(&t, "PUT", "/v1/kv/reg/%C3%A9t%C3%A9", "summer").await;
    send(&t, "PUT", "/v1/kv/reg/gone", "soon deleted").await;
    send(&t, "DELETE", "/v1/kv/reg/gone", "").await;
    let homed = format!("/v1/kv/homed/{}", t.key_homed_at("homed", "us-east-1", "h"));
    send(&t, "PUT", &homed, "homed").await;
    send(&t, "PUT", "/v1/kv/mv/one", "single").await;
    send(&t, "PUT", "/v1/kv/mv/two", "left").await;
    send(&t, "PUT", "/v1/kv/mv/two", "right").await;
    send(&t, "POST", "/v1/kv/cnt/likes/incr", r#"{"by":7}"#).await;
    send(
        &t,
        "POST",
        "/v1/kv/tags/post/add",
        r#"{"members":["b","a"]}"#,
    )
    .await;
    send(&t, "PATCH", "/v1/kv/docs/d", r#"{"f":{"x":1},"g":"y"}"#).await;
    send(&t, "PUT", "/v1/kv/profiles/p", "home here").await;
    send(&t, "PUT", "/v1/kv/short/brief", "expires").await;
    plant_pinned_record(&t, "held").await;

    let hot_reads = [
        "/v1/kv/reg/plain",
        "/v1/kv/reg/plain?consistency=local",
        "/v1/kv/reg/a%2Fb%20c",
        "/v1/kv/reg/%C3%A9t%C3%A9",
        "/v1/kv/r%65g/plain",
        homed.as_str(),
        "/v1/kv/mv/one",
        "/v1/kv/mv/two",
        "/v1/kv/cnt/likes",
        "/v1/kv/tags/post",
        "/v1/kv/docs/d",
        "/v1/kv/profiles/p",
        "/v1/kv/short/brief",
    ];
    let long_key = format!("/v1/kv/reg/{}", "k".repeat(65));
    let routed_only = [
        "/v1/kv/reg/absent",
        "/v1/kv/reg/gone",
        "/v1/kv/nope/plain",
        "/v1/kv/eu_only/held",
        "/v1/kv/reg/%FF",
        long_key.as_str(),
        "/v1/kv/reg/plain?consistency=strong",
        "/v1/kv/reg/plain?consistency=session",
        "/v1/kv/reg/plain?consistency=bogus",
        "/v1/kv/reg/plain?x=1",
        "/v1/kv/reg",
        "/v1/kv/reg/plain/incr",
    ];

    let hot = HotRead::new(t.node.clone());
    for uri in hot_reads {
        let answer = hot
            .answer(&get(uri))
            .unwrap_or_else(|| panic!("the hot path left the live read {uri} to the router"));
        let expected = routed(&t.node, uri).await;
        assert!(expected.0.is_success() || expected.0 == StatusCode::MULTIPLE_CHOICES);
        assert_eq!(parts(answer).await, expected, "{uri}");
    }
    for uri in routed_only {
        assert!(
            hot.answer(&get(uri)).is_none(),
            "{uri} must go to the router"
        );
    }
    // The pinned record is refused, not served, by both: the router says where to go.
    assert_eq!(
        routed(&t.node, "/v1/kv/eu_only/held").await.0,
        StatusCode::MISDIRECTED_REQUEST
    );
    // Only a `GET` is hot.
    let head = Request::head("/v1/kv/reg/plain")
        .body(Body::empty())
        .expect("request");
    assert!(hot.answer(&head).is_none());

    // Once the record's TTL has passed, the hot path no longer serves it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(hot.answer(&get("/v1/kv/short/brief")).is_none());
    assert_eq!(
        routed(&t.node, "/v1/kv/short/brief").await.0,
        StatusCode::NOT_FOUND
    );

    // Through the served socket, the hot path answers with the region stamped.
    let r = t
        .client
        .get(t.url("/v1/kv/reg/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["meridian-region"], "us-east-1");
    assert_eq!(r.text().await.unwrap(), "hello");
}
