//! HS256 bearer tokens carrying a user's residency: claims `zone` (and optional `home` region,
//! `exp` expiry in Unix seconds), signed with the cluster secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Error;

/// The residency claims of a verified token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// The `zone` claim: the user's jurisdiction. Default: `None`.
    pub zone: Option<String>,
    /// The `home` claim: the user's home region. Default: `None`.
    pub home: Option<String>,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("invariant: HMAC accepts keys of any length")
}

fn bad(message: &str) -> Error {
    Error::Token {
        message: message.to_string(),
    }
}

/// Verifies a compact JWS (`header.payload.signature`) with HS256 and `secret`.
///
/// Refuses: another `alg`, a bad signature (compared in constant time), malformed parts, an
/// `exp` at or before `now_unix`. Claims other than `zone`, `home` and `exp` are ignored.
pub fn verify(token: &str, secret: &[u8], now_unix: u64) -> Result<Claims, Error> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS of three parts"));
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("header is not base64url JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(bad("alg must be HS256"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&sig).map_err(|_| bad("bad signature"))?;
    let payload: serde_json::Value = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("payload is not base64url JSON"))?;
    if let Some(exp) = payload.get("exp") {
        match exp.as_u64() {
            Some(exp) if exp > now_unix => {}
            Some(_) => return Err(bad("token expired")),
            None => return Err(bad("exp is not a number of seconds")),
        }
    }
    let text = |k: &str| payload.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(Claims {
        zone: text("zone"),
        home: text("home"),
    })
}

/// Signs `claims` (a JSON object) as an HS256 compact JWS with `secret`.
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    let s = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let secret = b"0123456789abcdef";
        let t = sign(
            &serde_json::json!({"zone":"eu","home":"eu-west-1","exp":100}),
            secret,
        );
        let c = verify(&t, secret, 99).unwrap();
        assert_eq!(c.zone.as_deref(), Some("eu"));
        assert_eq!(c.home.as_deref(), Some("eu-west-1"));
        assert!(verify(&t, secret, 100).is_err(), "expired");
        assert!(verify(&t, b"another-secret-xx", 99).is_err(), "wrong key");
        let mut forged = t.clone();
        forged.insert(t.find('.').unwrap() + 2, 'x');
        assert!(verify(&forged, secret, 99).is_err(), "tampered payload");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"zone":"us"}"#)
        );
        assert!(verify(&none, secret, 0).is_err(), "alg none");
    }
}
