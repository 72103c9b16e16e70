//! Bearer tokens carrying a user's residency: claims `zone` (and optional `home` region, `exp`
//! expiry and `nbf` start in Unix seconds), signed HS256 with the cluster secret, or by an
//! identity provider whose public keys the edge is given (EdDSA, RS256 or ES256: see
//! [`PublicKey`]) as PEM files or as a JSON Web Key Set ([`jwks`]), whose `kid` picks the key.

pub mod jwks;
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

/// An identity provider's public key and the key ID (`kid`) it publishes it under, if any: a
/// token naming a `kid` is checked only with keys of that ID or of none (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedKey {
    /// The JWK `kid`. `None` for a key read from a PEM file.
    pub kid: Option<String>,
    /// The key.
    pub key: PublicKey,
}

impl From<PublicKey> for NamedKey {
    fn from(key: PublicKey) -> Self {
        NamedKey { kid: None, key }
    }
}

/// What a token signed by an identity provider must claim besides a valid signature, as
/// Envoy's `issuer` and `audiences`: a provider signs tokens for many applications, and one
/// made for another is no residency claim here. Default: nothing more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// The `iss` claim must be exactly this. Default: `None` (any or none).
    pub issuer: Option<String>,
    /// The `aud` claim (a string or an array of them) must name one of these. Default: empty
    /// (any or none).
    pub audiences: Vec<String>,
}

/// How far in the future a token's `nbf` may be and still be taken, for clocks that differ
/// between the identity provider and the edge.
pub const NBF_LEEWAY_SECS: u64 = 60;

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

/// A compact JWS split into what its checks need.
struct Jws<'t> {
    alg: Option<String>,
    kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    signed: &'t str,
    payload: &'t str,
    signature: Vec<u8>,
}

impl<'t> Jws<'t> {
    fn split(token: &'t str) -> Result<Jws<'t>, Error> {
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
        let text = |k: &str| header.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Ok(Jws {
            alg: text("alg"),
            kid: text("kid"),
            signed: &token[..h.len() + 1 + p.len()],
            payload: p,
            signature: URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| bad("signature is not base64url"))?,
        })
    }

    /// Whether `public` (of the token's `alg`) signed it.
    fn signed_by(&self, public: &PublicKey) -> bool {
        self.alg.as_deref() == Some(public.alg())
            && public.verifies(self.signed.as_bytes(), &self.signature)
    }

    /// The claims of a token whose signature was verified: refused when `exp` is at or
    /// before `now_unix`, `nbf` more than [`NBF_LEEWAY_SECS`] after it, or `expect` is not met.
    fn claims(&self, now_unix: u64, expect: &Expect) -> Result<Claims, Error> {
        let payload: serde_json::Value = URL_SAFE_NO_PAD
            .decode(self.payload)
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
        if let Some(nbf) = payload.get("nbf") {
            match nbf.as_u64() {
                Some(nbf) if nbf <= now_unix.saturating_add(NBF_LEEWAY_SECS) => {}
                Some(_) => return Err(bad("token not valid yet (nbf)")),
                None => return Err(bad("nbf is not a number of seconds")),
            }
        }
        let text = |k: &str| payload.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(issuer) = &expect.issuer
            && text("iss").as_ref() != Some(issuer)
        {
            return Err(Error::Token {
                message: format!("iss must be `{issuer}`"),
            });
        }
        if !expect.audiences.is_empty() {
            let named = |a: &serde_json::Value| {
                a.as_str()
                    .is_some_and(|a| expect.audiences.iter().any(|e| e == a))
            };
            let ok = match payload.get("aud") {
                Some(serde_json::Value::Array(list)) => list.iter().any(named),
                Some(one) => named(one),
                None => false,
            };
            if !ok {
                return Err(Error::Token {
                    message: format!("aud must name one of {:?}", expect.audiences),
                });
            }
        }
        Ok(Claims {
            zone: text("zone"),
            home: text("home"),
        })
    }
}

/// Verifies a compact JWS (`header.payload.signature`) with `key`.
///
/// Refuses: an `alg` other than the key's (`HS256`, or the public key's), a bad signature (HMAC compared
/// in constant time), malformed parts, an `exp` at or before `now_unix`, an `nbf` more than
/// [`NBF_LEEWAY_SECS`] after it. Claims other than `zone`, `home`, `exp` and `nbf` are ignored.
pub fn verify_with(token: &str, key: Key<'_>, now_unix: u64) -> Result<Claims, Error> {
    let jws = Jws::split(token)?;
    match key {
        Key::Hs256(secret) => {
            if jws.alg.as_deref() != Some("HS256") {
                return Err(bad("alg must be HS256"));
            }
            let mut m = mac(secret);
            m.update(jws.signed.as_bytes());
            m.verify_slice(&jws.signature)
                .map_err(|_| bad("bad signature"))?;
        }
        Key::Public(public) => {
            if jws.alg.as_deref() != Some(public.alg()) {
                return Err(Error::Token {
                    message: format!("alg must be {}", public.alg()),
                });
            }
            if !jws.signed_by(public) {
                return Err(bad("bad signature"));
            }
        }
    }
    jws.claims(now_unix, &Expect::default())
}

/// Verifies a token signed by an identity provider with one of `keys`: those of the `kid` the
/// token's header names (and those without one), or every key when it names none; then its
/// claims as [`verify_with`] does, and `expect`.
///
/// # Errors
/// [`Error::TokenKeyUnknown`] when the token names a `kid` no key has (the provider may have
/// published a new key since the keys were read), [`Error::Token`] for every other refusal.
pub fn verify_public(
    token: &str,
    keys: &[NamedKey],
    expect: &Expect,
    now_unix: u64,
) -> Result<Claims, Error> {
    let jws = Jws::split(token)?;
    let fits = |k: &&NamedKey| k.kid.is_none() || jws.kid.is_none() || k.kid == jws.kid;
    if keys.iter().filter(fits).any(|k| jws.signed_by(&k.key)) {
        return jws.claims(now_unix, expect);
    }
    if let Some(kid) = &jws.kid
        && !keys.iter().any(|k| k.kid.as_ref() == Some(kid))
    {
        return Err(Error::TokenKeyUnknown { kid: kid.clone() });
    }
    Err(match &jws.alg {
        Some(alg) if !keys.iter().any(|k| k.key.alg() == alg) => Error::Token {
            message: format!("no key verifies alg {alg}"),
        },
        _ => bad("bad signature"),
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

    /// A compact JWS of `claims` with header `{"alg": "EdDSA", "kid": kid}`, signed by `pair`.
    fn eddsa(kid: Option<&str>, claims: &str, pair: &ring::signature::Ed25519KeyPair) -> String {
        let header = match kid {
            Some(kid) => format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#),
            None => r#"{"alg":"EdDSA"}"#.to_string(),
        };
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(claims);
        let sig = URL_SAFE_NO_PAD.encode(pair.sign(format!("{h}.{p}").as_bytes()));
        format!("{h}.{p}.{sig}")
    }

    fn ed25519_pair() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn named(kid: Option<&str>, pair: &ring::signature::Ed25519KeyPair) -> NamedKey {
        use ring::signature::KeyPair as _;
        NamedKey {
            kid: kid.map(str::to_string),
            key: PublicKey::Ed25519(pair.public_key().as_ref().to_vec()),
        }
    }

    #[test]
    fn a_kid_picks_its_key_and_an_unknown_one_says_so() {
        let (a, b) = (ed25519_pair(), ed25519_pair());
        let keys = [named(Some("a"), &a), named(Some("b"), &b)];
        let none = Expect::default();
        for (token, expected) in [
            (eddsa(Some("a"), CLAIMS, &a), true),
            (eddsa(Some("b"), CLAIMS, &b), true),
            (eddsa(None, CLAIMS, &b), true),
            // Signed by `b` but naming `a`: `a`'s key does not verify it.
            (eddsa(Some("a"), CLAIMS, &b), false),
        ] {
            assert_eq!(
                verify_public(&token, &keys, &none, 0).is_ok(),
                expected,
                "{token}"
            );
        }
        let e = verify_public(&eddsa(Some("c"), CLAIMS, &a), &keys, &none, 0).unwrap_err();
        assert!(
            matches!(&e, Error::TokenKeyUnknown { kid } if kid == "c"),
            "{e}"
        );
        // A key from a PEM file (no kid) verifies tokens naming any kid.
        let file = [named(None, &a)];
        assert!(verify_public(&eddsa(Some("c"), CLAIMS, &a), &file, &none, 0).is_ok());
        let e = verify_public(&eddsa(Some("c"), CLAIMS, &b), &file, &none, 0).unwrap_err();
        assert!(
            matches!(e, Error::TokenKeyUnknown { .. }),
            "no key has kid c: {e}"
        );
        let e = verify_public(&eddsa(Some("a"), CLAIMS, &b), &keys, &none, 0).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
        assert!(verify_public(&eddsa(None, CLAIMS, &a), &[], &none, 0).is_err());
    }

    #[test]
    fn issuer_audience_and_not_before_are_checked() {
        let a = ed25519_pair();
        let keys = [named(Some("a"), &a)];
        let expect = Expect {
            issuer: Some("https://idp.example".into()),
            audiences: vec!["meridian".into(), "shop".into()],
        };
        let ok = |claims: &str| verify_public(&eddsa(Some("a"), claims, &a), &keys, &expect, 1000);
        let c = ok(r#"{"zone":"eu","iss":"https://idp.example","aud":"shop"}"#).unwrap();
        assert_eq!(c.zone.as_deref(), Some("eu"));
        assert!(ok(r#"{"zone":"eu","iss":"https://idp.example","aud":["x","meridian"]}"#).is_ok());
        for (claims, says) in [
            (r#"{"zone":"eu","aud":"shop"}"#, "iss must be"),
            (
                r#"{"zone":"eu","iss":"https://evil","aud":"shop"}"#,
                "iss must be",
            ),
            (
                r#"{"zone":"eu","iss":"https://idp.example"}"#,
                "aud must name",
            ),
            (
                r#"{"zone":"eu","iss":"https://idp.example","aud":["x"]}"#,
                "aud must name",
            ),
            (
                r#"{"zone":"eu","iss":"https://idp.example","aud":7}"#,
                "aud must name",
            ),
        ] {
            let e = ok(claims).unwrap_err().to_string();
            assert!(e.contains(says), "{claims}: {e}");
        }
        // Without expectations, neither is needed.
        let none = Expect::default();
        assert!(verify_public(&eddsa(Some("a"), CLAIMS, &a), &keys, &none, 0).is_ok());
        // nbf: taken up to the leeway early, refused after it.
        let at = |nbf: u64| {
            verify_public(
                &eddsa(Some("a"), &format!(r#"{{"zone":"eu","nbf":{nbf}}}"#), &a),
                &keys,
                &none,
                1000,
            )
        };
        assert!(at(1000).is_ok());
        assert!(at(1000 + NBF_LEEWAY_SECS).is_ok());
        let e = at(1001 + NBF_LEEWAY_SECS).unwrap_err().to_string();
        assert!(e.contains("not valid yet"), "{e}");
        let late = eddsa(Some("a"), r#"{"nbf":"soon"}"#, &a);
        assert!(verify_public(&late, &keys, &none, 0).is_err());
    }

    #[test]
    fn a_jwks_rsa_key_verifies_the_pem_keys_token() {
        let text = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/idp.jwks.json"),
        )
        .unwrap();
        let set = jwks::parse(&text).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["test-rsa", "test-p256"]);
        assert_eq!(set.keys[0].key, public("rsa2048.pub"));
        assert_eq!(set.keys[1].key, public("p256.pub"));
        let token = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rs256-zone-us.jwt"),
        )
        .unwrap();
        let c = verify_public(token.trim(), &set.keys, &Expect::default(), 0).unwrap();
        assert_eq!(c.zone.as_deref(), Some("us"));
    }

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
