//! Bearer tokens carrying a user's residency: claims `zone` (and optional `home` region, `exp`
//! expiry in Unix seconds), signed HS256 with the cluster secret or EdDSA (Ed25519) with a key
//! whose public half the edge is given.

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

/// The key a token is checked with.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// HS256 with this shared secret (the cluster secret).
    Hs256(&'a [u8]),
    /// EdDSA with this raw 32-byte Ed25519 public key.
    Ed25519(&'a [u8]),
}

/// Verifies a compact JWS (`header.payload.signature`) with `key`.
///
/// Refuses: an `alg` other than the key's (`HS256` or `EdDSA`), a bad signature (HMAC compared
/// in constant time), malformed parts, an `exp` at or before `now_unix`. Claims other than
/// `zone`, `home` and `exp` are ignored.
pub fn verify_with(token: &str, key: Key<'_>, now_unix: u64) -> Result<Claims, Error> {
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
    let alg = header.get("alg").and_then(|a| a.as_str());
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("signature is not base64url"))?;
    let signed = &token[..h.len() + 1 + p.len()];
    match key {
        Key::Hs256(secret) => {
            if alg != Some("HS256") {
                return Err(bad("alg must be HS256"));
            }
            let mut m = mac(secret);
            m.update(signed.as_bytes());
            m.verify_slice(&sig).map_err(|_| bad("bad signature"))?;
        }
        Key::Ed25519(public) => {
            if alg != Some("EdDSA") {
                return Err(bad("alg must be EdDSA"));
            }
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
                .verify(signed.as_bytes(), &sig)
                .map_err(|_| bad("bad signature"))?;
        }
    }
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

/// [`verify_with`] an HS256 `secret`.
pub fn verify(token: &str, secret: &[u8], now_unix: u64) -> Result<Claims, Error> {
    verify_with(token, Key::Hs256(secret), now_unix)
}

/// The raw Ed25519 public key of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) file, as written by
/// `openssl pkey -pubout`.
pub fn ed25519_public_key_from_pem(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use rustls_pki_types::pem::PemObject as _;
    let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| {
        Error::Config {
            message: format!("{}: not a PEM public key: {e}", path.display()),
        }
    })?;
    // An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte prefix (algorithm 1.3.101.112)
    // followed by the 32-byte key.
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    match spki.as_ref().split_at_checked(PREFIX.len()) {
        Some((prefix, key)) if prefix == PREFIX && key.len() == 32 => Ok(key.to_vec()),
        _ => Err(Error::Config {
            message: format!(
                "{}: not an Ed25519 public key; make one with `openssl genpkey -algorithm \
                 ed25519 -out k.pem && openssl pkey -in k.pem -pubout -out pub.pem`",
                path.display()
            ),
        }),
    }
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

    #[test]
    fn ed25519_tokens_and_pem_keys() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"zone":"eu","home":"eu-west-1"}"#);
        let sig = URL_SAFE_NO_PAD.encode(pair.sign(format!("{h}.{p}").as_bytes()).as_ref());
        let token = format!("{h}.{p}.{sig}");

        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pub.pem");
        std::fs::write(&path, pem).unwrap();
        let public = ed25519_public_key_from_pem(&path).unwrap();

        let c = verify_with(&token, Key::Ed25519(&public), 0).unwrap();
        assert_eq!(c.zone.as_deref(), Some("eu"));
        assert!(
            verify(&token, &public, 0).is_err(),
            "an EdDSA token is no HS256 token"
        );
        let other = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let other = ring::signature::Ed25519KeyPair::from_pkcs8(other.as_ref()).unwrap();
        assert!(
            verify_with(&token, Key::Ed25519(other.public_key().as_ref()), 0).is_err(),
            "another key"
        );
        std::fs::write(
            &path,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(ed25519_public_key_from_pem(&path).is_err());
    }
}
