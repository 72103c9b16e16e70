//! How a record looks on the wire, per keyspace type: the body of a GET, of a mutation's answer,
//! and of a scan item.

use axum::http::header::ETAG;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use meridian_core::record::{Record, Value};
use serde_json::{Map, Value as Json, json};

use crate::input::names::CONTEXT;

/// JSON content type.
pub const JSON: &str = "application/json";

/// The body of a GET of a live record: (content type, bytes). A register answers its bytes as
/// stored; a counter a JSON number; a set a sorted JSON array; a map a JSON object; an
/// mvregister its one value, or a JSON `{"siblings":[…]}` document when writes are concurrent.
pub fn representation(record: &Record) -> (String, Vec<u8>) {
    match &record.value {
        Value::Register(r) => (
            r.content_type.clone(),
            r.value.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
        ),
        Value::MvRegister(mv) => {
            let sibs: Vec<_> = mv.siblings().collect();
            if let [only] = sibs.as_slice() {
                (only.content_type.clone(), only.value.to_vec())
            } else {
                (JSON.into(), json_bytes(&siblings_json(record)))
            }
        }
        Value::Counter(c) => (JSON.into(), json_bytes(&json!(c.value()))),
        Value::Set(s) => (
            JSON.into(),
            json_bytes(&json!(s.members().collect::<Vec<_>>())),
        ),
        Value::Map(m) => (JSON.into(), json_bytes(&Json::Object(m.to_json()))),
    }
}

/// The answer to a GET of a live record: 200 with its [`representation`], or 300 with
/// [`siblings_json`] when it [`has_siblings`]; its version as `ETag`, and an mvregister's causal
/// context as `Meridian-Context`.
pub fn get_response(record: &Record) -> Response {
    let mut resp = if has_siblings(record) {
        (
            StatusCode::MULTIPLE_CHOICES,
            axum::Json(siblings_json(record)),
        )
            .into_response()
    } else {
        let (ct, body) = representation(record);
        ([("content-type", ct)], body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", record.version.etag())) {
        h.insert(ETAG, v);
    }
    if let Value::MvRegister(mv) = &record.value
        && let Ok(v) = HeaderValue::from_str(&mv.context().to_token())
    {
        h.insert(CONTEXT, v);
    }
    resp
}

/// Whether a GET of this record is a multiple-choice (300) answer: an mvregister with siblings.
pub fn has_siblings(record: &Record) -> bool {
    matches!(&record.value, Value::MvRegister(mv) if mv.siblings().count() > 1)
}

/// `{"siblings":[{"value"|"value_base64", "content_type"}], "context": token}` of an mvregister.
pub fn siblings_json(record: &Record) -> Json {
    let Value::MvRegister(mv) = &record.value else {
        return Json::Null;
    };
    let sibs: Vec<Json> = mv
        .siblings()
        .map(|s| {
            let mut o = bytes_json(&s.value);
            o.insert("content_type".into(), json!(s.content_type));
            Json::Object(o)
        })
        .collect();
    json!({"siblings": sibs, "context": mv.context().to_token()})
}

/// A scan item's value: text or base64 for byte values, JSON for the CRDT types.
pub fn item_value(record: &Record, item: &mut Map<String, Json>) {
    match &record.value {
        Value::Register(r) => {
            item.extend(bytes_json(r.value.as_deref().unwrap_or_default()));
            item.insert("content_type".into(), json!(r.content_type));
        }
        Value::MvRegister(_) => {
            if let Json::Object(o) = siblings_json(record) {
                item.extend(o);
            }
        }
        Value::Counter(c) => {
            item.insert("value".into(), json!(c.value()));
        }
        Value::Set(s) => {
            item.insert("value".into(), json!(s.members().collect::<Vec<_>>()));
        }
        Value::Map(m) => {
            item.insert("value".into(), Json::Object(m.to_json()));
        }
    }
}

fn bytes_json(b: &[u8]) -> Map<String, Json> {
    let mut o = Map::new();
    match std::str::from_utf8(b) {
        Ok(text) => o.insert("value".into(), json!(text)),
        Err(_) => o.insert(
            "value_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    };
    o
}

fn json_bytes(v: &Json) -> Vec<u8> {
    // invariant: serializing an in-memory serde_json::Value cannot fail
    serde_json::to_vec(v).unwrap_or_default()
}
