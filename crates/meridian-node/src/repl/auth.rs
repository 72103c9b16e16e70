//! Peer authentication: `Authorization: Meridian-Repl v1.<region>.<unix ms>.<hex HMAC-SHA256>`,
//! the HMAC keyed by the cluster secret over `meridian-repl|v1|<region>|<unix ms>`. The secret
//! never crosses the wire, and a captured header is useless once it leaves the freshness window.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a token's time may be from the verifier's clock.
pub const FRESHNESS_MS: u64 = 5 * 60 * 1_000;
/// The authorization scheme.
pub const SCHEME: &str = "Meridian-Repl";

fn mac(secret: &str, region: &str, ms: u64) -> Hmac<Sha256> {
    // invariant: HMAC accepts keys of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("invariant: any key");
    mac.update(format!("meridian-repl|v1|{region}|{ms}").as_bytes());
    mac
}

/// The `Authorization` header value with which `region` presents itself at `now_ms`.
pub fn header(secret: &str, region: &str, now_ms: u64) -> String {
    let tag = mac(secret, region, now_ms).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SCHEME} v1.{region}.{now_ms}.{hex}")
}

/// Checks a presented header: the region it names, or why it is refused.
pub fn verify(secret: &str, header: &str, now_ms: u64) -> Result<String, String> {
    let token = header
        .strip_prefix(SCHEME)
        .map(str::trim)
        .ok_or_else(|| format!("expected `Authorization: {SCHEME} v1.<region>.<ms>.<mac>`"))?;
    let mut parts = token.split('.');
    let (Some("v1"), Some(region), Some(ms), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("malformed token: expected v1.<region>.<ms>.<mac>".into());
    };
    let ms: u64 = ms.parse().map_err(|_| "malformed token time".to_string())?;
    if ms.abs_diff(now_ms) > FRESHNESS_MS {
        return Err(format!(
            "token time is {} s away from this node's clock; clocks must agree within {} s",
            ms.abs_diff(now_ms) / 1000,
            FRESHNESS_MS / 1000
        ));
    }
    let bytes: Option<Vec<u8>> = (0..tag.len())
        .step_by(2)
        .map(|i| {
            tag.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let bytes = bytes.ok_or_else(|| "malformed token mac".to_string())?;
    mac(secret, region, ms)
        .verify_slice(&bytes)
        .map_err(|_| "the token was not made with this cluster's secret".to_string())?;
    Ok(region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_the_secret_and_when_fresh() {
        let h = header("s3cret-s3cret-s3cret", "eu-west-1", 1_000_000);
        assert_eq!(
            verify("s3cret-s3cret-s3cret", &h, 1_000_500),
            Ok("eu-west-1".to_string())
        );
        assert!(verify("other-secret-value", &h, 1_000_500).is_err());
        assert!(verify("s3cret-s3cret-s3cret", &h, 1_000_000 + FRESHNESS_MS + 1).is_err());
        let forged = h.replace("eu-west-1", "us-east-1");
        assert!(verify("s3cret-s3cret-s3cret", &forged, 1_000_500).is_err());
        assert!(verify("s3cret-s3cret-s3cret", "Bearer x", 0).is_err());
        assert!(verify("s3cret-s3cret-s3cret", "Meridian-Repl v1.a.1.zz", 1).is_err());
    }
}
