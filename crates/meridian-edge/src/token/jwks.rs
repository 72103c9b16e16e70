//! JSON Web Key Sets (RFC 7517): the document an identity provider publishes its signing keys
//! in (`/.well-known/jwks.json`, an OpenID provider's `jwks_uri`). Ed25519 keys (`kty`
//! `OKP`, RFC 8037), RSA keys (`kty` `RSA`: `n`, `e`) and P-256 keys (`kty` `EC`: `x`, `y`)
//! are read; a key meant for encryption (`use` other than `sig`), of another curve or
//! algorithm, or malformed is skipped and said why — providers publish such keys beside their
//! signing keys — and a set with no usable key is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::{NamedKey, PublicKey};

/// The largest key set read, file or fetched (providers' sets are a few KiB).
pub const MAX_BYTES: usize = 1 << 20;

/// A key set read: its usable keys, and what was skipped and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    /// Keys that verify tokens, with their `kid`s.
    pub keys: Vec<NamedKey>,
    /// One line per key left out: which (`kid`, else its place) and why.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK this module reads (others are ignored, as RFC 7517 §4 asks).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// Reads a JSON Web Key Set.
///
/// # Errors
/// What is wrong, and what would be right, when `json` is not a key set (`{"keys": [...]}`),
/// is larger than [`MAX_BYTES`], or holds no key that verifies EdDSA, RS256 or ES256 tokens
/// (each skipped key named with its reason).
pub fn parse(json: &[u8]) -> Result<KeySet, String> {
    if json.len() > MAX_BYTES {
        return Err(format!(
            "a key set of {} bytes, over the {MAX_BYTES} read",
            json.len()
        ));
    }
    let doc: Document = serde_json::from_slice(json).map_err(|e| {
        format!("not a JSON Web Key Set ({e}); expected {{\"keys\": [{{\"kty\": ...}}, ...]}}")
    })?;
    let mut set = KeySet {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for (i, value) in doc.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                set.skipped.push(format!("key #{i}: not a JWK ({e})"));
                continue;
            }
        };
        let name = jwk
            .kid
            .as_ref()
            .map_or_else(|| format!("key #{i}"), |kid| format!("key `{kid}`"));
        match key(&jwk) {
            Ok(key) => set.keys.push(NamedKey { kid: jwk.kid, key }),
            Err(why) => set.skipped.push(format!("{name}: {why}")),
        }
    }
    if set.keys.is_empty() {
        return Err(format!(
            "no key verifies EdDSA (Ed25519), RS256 (RSA of 2048 to 8192 bits) or ES256 (P-256) \
             tokens{}",
            if set.skipped.is_empty() {
                " (the set is empty)".to_string()
            } else {
                format!(": {}", set.skipped.join("; "))
            }
        ));
    }
    Ok(set)
}

/// The public key of one JWK, or why it is skipped.
fn key(jwk: &Jwk) -> Result<PublicKey, String> {
    if let Some(usage) = jwk.usage.as_deref().filter(|u| *u != "sig") {
        return Err(format!("`use` is `{usage}`, not `sig`"));
    }
    let member = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
        let text = value
            .as_deref()
            .ok_or_else(|| format!("no `{name}` member"))?;
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|e| format!("`{name}` is not base64url ({e})"))
    };
    let sized = |name: &str, value: &Option<String>, len: usize| {
        let bytes = member(name, value)?;
        if bytes.len() == len {
            Ok(bytes)
        } else {
            Err(format!("`{name}` has {} bytes, not {len}", bytes.len()))
        }
    };
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => PublicKey::Ed25519(sized("x", &jwk.x, 32)?),
        ("EC", Some("P-256")) => {
            let mut point = vec![4];
            point.extend(sized("x", &jwk.x, 32)?);
            point.extend(sized("y", &jwk.y, 32)?);
            PublicKey::Es256(point)
        }
        ("RSA", _) => PublicKey::rsa(&member("n", &jwk.n)?, &member("e", &jwk.e)?)?,
        ("OKP" | "EC", crv) => {
            return Err(format!(
                "curve `{}` (Ed25519 and P-256 are read)",
                crv.unwrap_or("none")
            ));
        }
        (kty, _) => return Err(format!("`kty` `{kty}` (OKP, EC and RSA are read)")),
    };
    match jwk.alg.as_deref() {
        Some(alg) if alg != key.alg() => Err(format!(
            "`alg` `{alg}`: tokens of it are not verified (this key's kind verifies {})",
            key.alg()
        )),
        _ => Ok(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn reads_each_kind_with_its_kid() {
        let rsa_n = [&[0xc5u8][..], &[7; 255]].concat();
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "ed", "use": "sig"},
            {"kty": "EC", "crv": "P-256", "x": b64(&[2; 32]), "y": b64(&[3; 32]), "alg": "ES256"},
            {"kty": "RSA", "n": b64(&rsa_n), "e": "AQAB", "kid": "rsa", "alg": "RS256"},
        ]});
        let set = parse(doc.to_string().as_bytes()).unwrap();
        assert!(set.skipped.is_empty(), "{:?}", set.skipped);
        let kinds: Vec<(Option<&str>, &str)> = set
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.key.alg()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Some("ed"), "EdDSA"),
                (None, "ES256"),
                (Some("rsa"), "RS256")
            ]
        );
        assert_eq!(set.keys[0].key, PublicKey::Ed25519(vec![1; 32]));
        let point = [&[4u8][..], &[2; 32], &[3; 32]].concat();
        assert_eq!(set.keys[1].key, PublicKey::Es256(point));
    }

    #[test]
    fn skips_what_verifies_nothing_and_says_why() {
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "good"},
            {"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB", "kid": "enc", "use": "enc"},
            {"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB", "kid": "rs384", "alg": "RS384"},
            {"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB", "kid": "small"},
            {"kty": "EC", "crv": "P-384", "x": b64(&[2; 48]), "y": b64(&[3; 48]), "kid": "p384"},
            {"kty": "EC", "crv": "P-256", "x": b64(&[2; 31]), "y": b64(&[3; 32]), "kid": "short"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "garbled"},
            {"crv": "Ed25519"},
        ]});
        let set = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        let said = set.skipped.join("\n");
        for expected in [
            "key `enc`: `use` is `enc`",
            "key `rs384`: `alg` `RS384`",
            "key `small`: an RSA key of 1024 bits",
            "key `p384`: curve `P-384`",
            "key `short`: `x` has 31 bytes",
            "key `hmac`: `kty` `oct`",
            "key `garbled`: `x` is not base64url",
            "key #8: not a JWK",
        ] {
            assert!(said.contains(expected), "{expected} in:\n{said}");
        }
    }

    #[test]
    fn refuses_what_is_no_key_set() {
        for (json, says) in [
            ("", "not a JSON Web Key Set"),
            ("[]", "not a JSON Web Key Set"),
            (r#"{"keys": {}}"#, "not a JSON Web Key Set"),
            (r#"{"keys": []}"#, "the set is empty"),
            (
                r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#,
                "no key verifies EdDSA",
            ),
        ] {
            let e = parse(json.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{json}: {e}");
        }
        let huge = vec![b' '; MAX_BYTES + 1];
        assert!(parse(&huge).unwrap_err().contains("over the"));
    }
}
