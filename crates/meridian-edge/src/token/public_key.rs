//! Public keys that verify residency tokens signed elsewhere (an identity provider): Ed25519
//! (`EdDSA`), RSA (`RS256`, 2048–8192 bits) and P-256 (`ES256`), each read from a PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo) file as `openssl pkey -pubout` writes it. The key's type
//! fixes the one `alg` a token may name, so a token cannot choose how it is checked.

use std::path::Path;

use crate::Error;

/// One public key and the algorithm it verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// `EdDSA`: the raw 32-byte Ed25519 key.
    Ed25519(Vec<u8>),
    /// `RS256` (RSASSA-PKCS1-v1_5 with SHA-256): the DER `RSAPublicKey`.
    Rs256(Vec<u8>),
    /// `ES256` (ECDSA P-256 with SHA-256, fixed-size signatures): the uncompressed point.
    Es256(Vec<u8>),
}

/// `id-Ed25519` (1.3.101.112).
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `id-ecPublicKey` (1.2.840.10045.2.1).
const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (1.2.840.10045.3.1.7).
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
const INTEGER: u8 = 0x02;

/// How to make a key of each kind, for the error of a file that holds none.
const MAKE: &str = "make one with `openssl pkey -in private.pem -pubout -out public.pem` from an \
                    Ed25519, RSA (2048+ bits) or P-256 private key";

impl PublicKey {
    /// The JWS `alg` this key verifies.
    pub fn alg(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "EdDSA",
            PublicKey::Rs256(_) => "RS256",
            PublicKey::Es256(_) => "ES256",
        }
    }

    /// Reads the PEM `PUBLIC KEY` file at `path`. Fails, naming the file and saying what it
    /// holds instead, for anything but an Ed25519, RSA of 2048 to 8192 bits or P-256 key.
    pub fn from_pem(path: &Path) -> Result<PublicKey, Error> {
        use rustls_pki_types::pem::PemObject as _;
        let fail = |what: String| Error::Config {
            message: format!("{}: {what}", path.display()),
        };
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_file(path)
            .map_err(|e| fail(format!("not a PEM public key ({e}); {MAKE}")))?;
        PublicKey::from_spki(spki.as_ref()).map_err(fail)
    }

    /// The key of a DER SubjectPublicKeyInfo.
    fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
        let malformed = || format!("not a well-formed public key; {MAKE}");
        let (info, _) = expect(der, SEQUENCE).ok_or_else(malformed)?;
        let (algorithm, rest) = expect(info, SEQUENCE).ok_or_else(malformed)?;
        let (bits, _) = expect(rest, BIT_STRING).ok_or_else(malformed)?;
        let key = match bits.split_first() {
            Some((0, key)) => key,
            _ => return Err(malformed()),
        };
        let (oid, params) = expect(algorithm, OID).ok_or_else(malformed)?;
        match oid {
            ED25519 if key.len() == 32 => Ok(PublicKey::Ed25519(key.to_vec())),
            ED25519 => Err(malformed()),
            RSA => {
                let bits = rsa_modulus_bits(key).ok_or_else(malformed)?;
                if !(2048..=8192).contains(&bits) {
                    return Err(format!(
                        "an RSA key of {bits} bits; RS256 keys must have 2048 to 8192 bits"
                    ));
                }
                Ok(PublicKey::Rs256(key.to_vec()))
            }
            EC => match expect(params, OID) {
                Some((P256, _)) if key.len() == 65 && key[0] == 4 => {
                    Ok(PublicKey::Es256(key.to_vec()))
                }
                Some((P256, _)) => Err(malformed()),
                _ => Err(format!(
                    "an elliptic-curve key on a curve other than P-256; ES256 needs P-256 \
                     (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256); {MAKE}"
                )),
            },
            _ => Err(format!(
                "a public key of an algorithm that verifies no supported token; {MAKE}"
            )),
        }
    }

    /// An `RS256` key from its modulus `n` and public exponent `e` (big-endian, as a JWK
    /// gives them). Fails for a modulus outside 2048 to 8192 bits or an empty exponent.
    pub(super) fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, String> {
        let mut ints = Vec::with_capacity(n.len() + e.len() + 16);
        der_unsigned(n, &mut ints);
        der_unsigned(e, &mut ints);
        let mut der = vec![SEQUENCE];
        der_length(ints.len(), &mut der);
        der.extend_from_slice(&ints);
        if e.iter().all(|b| *b == 0) {
            return Err("an RSA key whose exponent is zero or empty".to_string());
        }
        match rsa_modulus_bits(&der) {
            Some(bits) if (2048..=8192).contains(&bits) => Ok(PublicKey::Rs256(der)),
            Some(bits) => Err(format!(
                "an RSA key of {bits} bits; RS256 keys must have 2048 to 8192 bits"
            )),
            None => Err("an RSA key that does not encode".to_string()),
        }
    }

    /// Whether `signature` is this key's over `signed`.
    pub(crate) fn verifies(&self, signed: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let (algorithm, key): (&'static dyn sig::VerificationAlgorithm, _) = match self {
            PublicKey::Ed25519(k) => (&sig::ED25519, k),
            PublicKey::Rs256(k) => (&sig::RSA_PKCS1_2048_8192_SHA256, k),
            PublicKey::Es256(k) => (&sig::ECDSA_P256_SHA256_FIXED, k),
        };
        sig::UnparsedPublicKey::new(algorithm, key)
            .verify(signed, signature)
            .is_ok()
    }
}

/// The contents of the DER element at the start of `input` when its tag is `tag`, and what
/// follows it. Definite lengths only, as DER requires.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// Appends the DER length `len` (short form below 128, else long form).
fn der_length(len: usize, out: &mut Vec<u8>) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let first = bytes
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(bytes.len() - 1);
            let count = bytes.len() - first;
            // At most size_of::<usize>() bytes: far below 0x7f.
            out.push(0x80 | u8::try_from(count).unwrap_or(0x7f));
            out.extend_from_slice(&bytes[first..]);
        }
    }
}

/// Appends the DER `INTEGER` of the unsigned big-endian `value`: leading zeros dropped, one
/// zero put back when the top bit is set (so it is not read as negative).
fn der_unsigned(value: &[u8], out: &mut Vec<u8>) {
    let first = value.iter().position(|b| *b != 0).unwrap_or(value.len());
    let digits = if first == value.len() {
        &[0u8][..]
    } else {
        &value[first..]
    };
    let pad = digits[0] & 0x80 != 0;
    out.push(INTEGER);
    der_length(digits.len() + usize::from(pad), out);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

/// The size in bits of the modulus of a DER `RSAPublicKey` (`SEQUENCE { n INTEGER, e INTEGER }`).
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (key, _) = expect(der, SEQUENCE)?;
    let (n, rest) = expect(key, INTEGER)?;
    expect(rest, INTEGER)?;
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return Some(0),
    };
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(name)
    }

    #[test]
    fn reads_rsa_p256_and_refuses_what_verifies_nothing() {
        let rsa = PublicKey::from_pem(&key("rsa2048.pub")).unwrap();
        assert_eq!(rsa.alg(), "RS256");
        let ec = PublicKey::from_pem(&key("p256.pub")).unwrap();
        assert_eq!(ec.alg(), "ES256");
        let e = PublicKey::from_pem(&key("rsa1024.pub"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("RSA key of 1024 bits"), "{e}");
        let e = PublicKey::from_pem(&key("p384.pub"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("other than P-256"), "{e}");
        let e = PublicKey::from_pem(&key("rsa2048.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PEM public key"), "{e}");
    }

    /// `n` and `e` of a DER `RSAPublicKey`, as unsigned big-endian numbers.
    fn components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (key, _) = expect(der, SEQUENCE).unwrap();
        let (n, rest) = expect(key, INTEGER).unwrap();
        let (e, _) = expect(rest, INTEGER).unwrap();
        let strip = |v: &[u8]| v[v.iter().position(|b| *b != 0).unwrap()..].to_vec();
        (strip(n), strip(e))
    }

    #[test]
    fn rsa_keys_from_components_encode_as_the_pem_ones() {
        let PublicKey::Rs256(der) = PublicKey::from_pem(&key("rsa2048.pub")).unwrap() else {
            panic!("rsa2048.pub is an RSA key");
        };
        let (n, e) = components(&der);
        assert_eq!(
            PublicKey::rsa(&n, &e).unwrap(),
            PublicKey::Rs256(der.clone())
        );
        // Leading zeros in the JWK's numbers change nothing.
        let padded = [&[0u8, 0][..], &n].concat();
        assert_eq!(PublicKey::rsa(&padded, &e).unwrap(), PublicKey::Rs256(der));
        let err = PublicKey::rsa(&[0xc5; 128], &[1, 0, 1]).unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
        assert!(PublicKey::rsa(&[0xff; 256], &[]).is_err(), "no exponent");
        assert!(PublicKey::rsa(&[], &[1, 0, 1]).is_err(), "no modulus");
        let mut long = Vec::new();
        der_length(300, &mut long);
        assert_eq!(long, [0x82, 0x01, 0x2c]);
    }

    #[test]
    fn malformed_der_is_refused_not_panicked_on() {
        let good = match PublicKey::from_pem(&key("rsa2048.pub")).unwrap() {
            PublicKey::Rs256(k) => k,
            other => panic!("{other:?}"),
        };
        assert_eq!(rsa_modulus_bits(&good), Some(2048));
        // An Ed25519 key of 31 bytes is malformed, not of another algorithm.
        let short: Vec<u8> = [
            &[
                0x30, 0x29, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x20, 0x00,
            ][..],
            &[7; 31],
        ]
        .concat();
        let e = PublicKey::from_spki(&short).unwrap_err();
        assert!(e.starts_with("not a well-formed public key"), "{e}");
        for der in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x80],
            &[0x30, 0x05, 0x30, 0x03, 0x06, 0x01],
            &[0x31, 0x00],
        ] {
            assert!(PublicKey::from_spki(der).is_err(), "{der:?}");
        }
        // Every truncation of a real key is refused.
        let spki = {
            use rustls_pki_types::pem::PemObject as _;
            rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_file(key("p256.pub")).unwrap()
        };
        for n in 0..spki.as_ref().len() {
            assert!(PublicKey::from_spki(&spki.as_ref()[..n]).is_err(), "{n}");
        }
    }
}
