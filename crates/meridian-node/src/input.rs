//! Validation of everything a client sends: keys, headers and JSON bodies. Each check either
//! yields a typed value or an [`ApiError`] that says what was wrong and what would be right.

use axum::http::{HeaderMap, StatusCode};
use meridian_core::config::Topology;
use meridian_core::version::{Version, VersionVector};
use std::time::Duration;

use crate::error::ApiError;

/// Header names of the public contract (DESIGN §2).
pub mod names {
    /// Idempotency key of a mutating call.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Set on a response replayed from a stored idempotent outcome.
    pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
    /// Per-write TTL, e.g. `30s`.
    pub const TTL: &str = "meridian-ttl";
    /// Home region of a key.
    pub const HOME: &str = "meridian-home";
    /// Causal context of an mvregister read, sent back on the resolving write.
    pub const CONTEXT: &str = "meridian-context";
    /// Session token: the writes a client has seen.
    pub const SESSION: &str = "meridian-session";
    /// The region that served the request.
    pub const REGION: &str = "meridian-region";
}

/// The preconditions of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `If-Match: *`: the key must exist.
    Any,
    /// `If-Match: "v1", "v2"`: the current version must be one of these.
    Versions(Vec<String>),
}

/// The validated headers of a mutating call.
#[derive(Debug, Clone, Default)]
pub struct WriteHeaders {
    /// `If-Match`.
    pub if_match: Option<IfMatch>,
    /// `If-None-Match: *` (create only).
    pub if_none_match: bool,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// `Meridian-TTL`.
    pub ttl: Option<Duration>,
    /// `Meridian-Home`, a region of the topology.
    pub home: Option<String>,
    /// `Meridian-Context` (mvregister).
    pub context: Option<VersionVector>,
    /// `Meridian-Session`.
    pub session: Option<VersionVector>,
    /// `Content-Type`, `application/octet-stream` when absent.
    pub content_type: String,
}

/// Longest TTL a client may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

fn header_text<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::bad_request(
                "bad_header",
                format!("header `{name}` is not visible ASCII"),
                "send header values as printable ASCII",
            )
        }),
    }
}

/// Parses a session or context token header.
pub fn token_header(h: &HeaderMap, name: &str) -> Result<Option<VersionVector>, ApiError> {
    let Some(text) = header_text(h, name)? else {
        return Ok(None);
    };
    VersionVector::parse_token(text).map(Some).map_err(|e| {
        ApiError::bad_request(
            "bad_header",
            format!("header `{name}`: {e}"),
            format!("send `{name}` exactly as a previous response gave it, e.g. `us-east-1:42`"),
        )
    })
}

/// Validates the headers of a mutating call against the topology.
pub fn write_headers(h: &HeaderMap, topology: &Topology) -> Result<WriteHeaders, ApiError> {
    let mut out = WriteHeaders {
        content_type: header_text(h, "content-type")?
            .filter(|s| !s.is_empty())
            .unwrap_or("application/octet-stream")
            .to_string(),
        ..WriteHeaders::default()
    };
    if let Some(v) = header_text(h, "if-match")? {
        out.if_match = Some(parse_if_match(v)?);
    }
    if let Some(v) = header_text(h, "if-none-match")? {
        if v != "*" {
            return Err(ApiError::bad_request(
                "bad_header",
                format!("If-None-Match: {v} is not supported on writes"),
                "use `If-None-Match: *` to create a key only if it does not exist",
            ));
        }
        out.if_none_match = true;
    }
    if out.if_match.is_some() && out.if_none_match {
        return Err(ApiError::bad_request(
            "bad_header",
            "If-Match and If-None-Match together can never both hold",
            "send one of them",
        ));
    }
    if let Some(v) = header_text(h, names::IDEMPOTENCY_KEY)? {
        if v.is_empty() || v.len() > MAX_IDEMPOTENCY_KEY {
            return Err(ApiError::bad_request(
                "bad_header",
                format!("Idempotency-Key is {} bytes long", v.len()),
                format!("use 1 to {MAX_IDEMPOTENCY_KEY} printable characters, e.g. a UUID"),
            ));
        }
        out.idempotency_key = Some(v.to_string());
    }
    if let Some(v) = header_text(h, names::TTL)? {
        let ttl = meridian_core::config::parse_duration(v).map_err(|e| {
            ApiError::bad_request(
                "bad_ttl",
                format!("Meridian-TTL `{v}`: {e}"),
                "send a duration like `30s`, `15m` or `24h`",
            )
        })?;
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(ApiError::bad_request(
                "bad_ttl",
                format!("Meridian-TTL `{v}` is out of range"),
                "send a TTL above zero and at most 3650d; omit the header for no expiry",
            ));
        }
        out.ttl = Some(ttl);
    }
    out.home = home_header(h, topology)?;
    out.context = token_header(h, names::CONTEXT)?;
    out.session = token_header(h, names::SESSION)?;
    Ok(out)
}

/// Parses `Meridian-Home`: a region of the topology, or a 400 `unknown_region` listing them.
pub fn home_header(h: &HeaderMap, topology: &Topology) -> Result<Option<String>, ApiError> {
    let Some(v) = header_text(h, names::HOME)? else {
        return Ok(None);
    };
    if topology.region(v).is_none() {
        let known: Vec<&str> = topology.regions.iter().map(|r| r.name.as_str()).collect();
        return Err(ApiError::bad_request(
            "unknown_region",
            format!("Meridian-Home names `{v}`, which is not a region of this topology"),
            format!("use one of: {}", known.join(", ")),
        ));
    }
    Ok(Some(v.to_string()))
}

fn parse_if_match(v: &str) -> Result<IfMatch, ApiError> {
    if v == "*" {
        return Ok(IfMatch::Any);
    }
    let mut versions = Vec::new();
    for part in v.split(',').map(str::trim) {
        let inner = part.strip_prefix("W/").unwrap_or(part);
        let tag = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
        match tag.filter(|t| Version::parse_etag(t).is_some()) {
            Some(t) => versions.push(t.to_string()),
            None => {
                return Err(ApiError::bad_request(
                    "bad_header",
                    format!("If-Match: `{part}` is not an ETag this node issued"),
                    "send the ETag of a previous response, quoted, e.g. If-Match: \"…\", or `*`",
                ));
            }
        }
    }
    Ok(IfMatch::Versions(versions))
}

/// Checks a user key: valid UTF-8 (the router already decoded it), non-empty, no control
/// characters, at most `max` bytes.
pub fn check_key(key: &str, max: usize) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "bad_key",
            "the key is empty",
            "use a non-empty key",
        ));
    }
    if key.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "key_too_large",
            format!("the key is {} bytes; the limit is {max}", key.len()),
            "use a shorter key, e.g. a hash of the long one",
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_key",
            "the key contains a control character",
            "use printable characters; percent-encode `/` as %2F",
        ));
    }
    Ok(())
}

/// Parses a JSON body into `T`, mapping every failure to a 400 that quotes serde's reason.
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the body is not valid here: {e}"),
            format!("send a JSON body like {expected}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_quoted_etags_and_star() {
        assert_eq!(parse_if_match("*").ok(), Some(IfMatch::Any));
        let etag = Version {
            ts: meridian_core::hlc::Timestamp(77),
            origin: "eu".into(),
        }
        .etag();
        let got = parse_if_match(&format!("\"{etag}\", W/\"{etag}\"")).ok();
        assert_eq!(got, Some(IfMatch::Versions(vec![etag.clone(), etag])));
        assert!(parse_if_match("abc").is_err());
        assert!(parse_if_match("\"not-an-etag\"").is_err());
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("user:1", 10).is_ok());
        assert!(check_key("", 10).is_err());
        assert_eq!(
            check_key("x".repeat(11).as_str(), 10)
                .err()
                .map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert!(check_key("a\u{0}b", 10).is_err());
    }
}
