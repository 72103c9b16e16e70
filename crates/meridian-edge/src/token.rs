//! Bearer tokens carrying a user's residency: claims `zone` (and optional `home` region, `exp`
//! expiry in Unix seconds), signed HS256 with the cluster secret, or by an identity provider
//! whose public key the edge is given (EdDSA, RS256 or ES256: see [`PublicKey`]).

mod public_key;

pub use public_key::PublicKey;

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
    /// The algorithm of this public key ([`PublicKey::alg`]).
    Public(&'a PublicKey),
}

/// Verifies a compact JWS (`header.payload.signature`) with `key`.
///
/// Refuses: an `alg` other than the key's (`HS256`, or the public key's), a bad signature (HMAC compared
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
        Key::Public(public) => {
            if alg != Some(public.alg()) {
                return Err(Error::Token {
                    message: format!("alg must be {}", public.alg()),
                });
            }
            if !public.verifies(signed.as_bytes(), &sig) {
                return Err(bad("bad signature"));
            }
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

    /// A compact JWS of `claims` with header `{"alg": alg}`, signed by `sign`.
    fn signed(alg: &str, claims: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
        let p = URL_SAFE_NO_PAD.encode(claims);
        let sig = URL_SAFE_NO_PAD.encode(sign(format!("{h}.{p}").as_bytes()));
        format!("{h}.{p}.{sig}")
    }

    fn pkcs8(name: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject as _;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(name);
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
            .unwrap()
            .secret_pkcs8_der()
            .to_vec()
    }

    fn public(name: &str) -> PublicKey {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(name);
        PublicKey::from_pem(&path).unwrap()
    }

    const CLAIMS: &str = r#"{"zone":"eu","home":"eu-west-1"}"#;

    #[test]
    fn ed25519_tokens_and_pem_keys() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let token = signed("EdDSA", CLAIMS, |m| pair.sign(m).as_ref().to_vec());

        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pub.pem");
        std::fs::write(&path, pem).unwrap();
        let key = PublicKey::from_pem(&path).unwrap();
        assert_eq!(key.alg(), "EdDSA");

        let c = verify_with(&token, Key::Public(&key), 0).unwrap();
        assert_eq!(c.zone.as_deref(), Some("eu"));
        let raw = pair.public_key().as_ref().to_vec();
        assert!(
            verify(&token, &raw, 0).is_err(),
            "an EdDSA token is no HS256 token"
        );
        let other = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let other = ring::signature::Ed25519KeyPair::from_pkcs8(other.as_ref()).unwrap();
        let other = PublicKey::Ed25519(other.public_key().as_ref().to_vec());
        assert!(
            verify_with(&token, Key::Public(&other), 0).is_err(),
            "another key"
        );
        std::fs::write(
            &path,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(PublicKey::from_pem(&path).is_err());
    }

    #[test]
    fn rs256_and_es256_tokens() {
        let rng = ring::rand::SystemRandom::new();
        let rsa = ring::signature::RsaKeyPair::from_pkcs8(&pkcs8("rsa2048.key")).unwrap();
        let rs256 = signed("RS256", CLAIMS, |m| {
            let mut sig = vec![0; rsa.public().modulus_len()];
            rsa.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        });
        let ec = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8("p256.key"),
            &rng,
        )
        .unwrap();
        let es256 = signed("ES256", CLAIMS, |m| {
            ec.sign(&rng, m).unwrap().as_ref().to_vec()
        });
        let (rsa_pub, ec_pub) = (public("rsa2048.pub"), public("p256.pub"));

        let c = verify_with(&rs256, Key::Public(&rsa_pub), 0).unwrap();
        assert_eq!(c.home.as_deref(), Some("eu-west-1"));
        let c = verify_with(&es256, Key::Public(&ec_pub), 0).unwrap();
        assert_eq!(c.zone.as_deref(), Some("eu"));
        // A token names the key's algorithm or is refused, whatever it is signed with.
        let e = verify_with(&rs256, Key::Public(&ec_pub), 0).unwrap_err();
        assert!(e.to_string().contains("alg must be ES256"), "{e}");
        let relabelled = signed("ES256", CLAIMS, |m| {
            let mut sig = vec![0; rsa.public().modulus_len()];
            rsa.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        });
        assert!(verify_with(&relabelled, Key::Public(&ec_pub), 0).is_err());
        // Tampered claims fail the signature.
        let mut parts: Vec<&str> = es256.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"zone":"us"}"#);
        parts[1] = &forged;
        let e = verify_with(&parts.join("."), Key::Public(&ec_pub), 0).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
    }
}
