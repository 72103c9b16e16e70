//! Versions of writes (the LWW order and the ETag), dots and version vectors (the causal
//! context of multi-value registers), with their header-safe text forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::hlc::Timestamp;

/// The identity of one write: its HLC timestamp and origin region. The derived order — by
/// `ts`, then by `origin` — is the last-writer-wins order of the whole system.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When the write happened at its origin.
    pub ts: Timestamp,
    /// The region that accepted the write.
    pub origin: String,
}

impl Version {
    /// An opaque token without quotes, `{ts as lowercase hex}.{origin}`, where bytes of the
    /// origin outside `[A-Za-z0-9._~-]` are percent-encoded: always safe inside an HTTP header
    /// and always accepted by [`Version::parse_etag`].
    pub fn etag(&self) -> String {
        let mut out = format!("{:x}.", self.ts.0);
        encode_origin(&self.origin, &mut out);
        out
    }

    /// The inverse of [`Version::etag`] (quotes must already be stripped). `None` on anything
    /// that `etag` would not have produced: empty or over-long hex, uppercase or leading zeros,
    /// missing `.`, bad percent-encoding.
    pub fn parse_etag(s: &str) -> Option<Version> {
        let (hex, origin) = s.split_once('.')?;
        let canonical_hex = !hex.is_empty()
            && hex.len() <= 16
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && (hex == "0" || !hex.starts_with('0'));
        if !canonical_hex {
            return None;
        }
        let ts = Timestamp(u64::from_str_radix(hex, 16).ok()?);
        Some(Version {
            ts,
            origin: decode_origin(origin)?,
        })
    }
}

/// One event of one origin: the `counter`-th write that `origin` made to a value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The region that made the write.
    pub origin: String,
    /// The per-origin sequence number, starting at 1.
    pub counter: u64,
}

/// A version vector: per origin, the highest contiguous counter seen. Origins with counter 0
/// are never stored, so equal vectors compare equal. The default is the empty vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "BTreeMap<String, u64>")]
pub struct VersionVector(BTreeMap<String, u64>);

impl From<BTreeMap<String, u64>> for VersionVector {
    fn from(mut map: BTreeMap<String, u64>) -> VersionVector {
        map.retain(|_, c| *c > 0);
        VersionVector(map)
    }
}

impl VersionVector {
    /// The counter of `origin` (0 when absent).
    pub fn get(&self, origin: &str) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Whether the vector covers `dot`: `dot.counter <= self.get(&dot.origin)`.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(&dot.origin)
    }

    /// Raises the counter of `dot.origin` to at least `dot.counter`.
    pub fn add(&mut self, dot: &Dot) {
        if dot.counter > self.get(&dot.origin) {
            self.0.insert(dot.origin.clone(), dot.counter);
        }
    }

    /// Pointwise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (origin, &counter) in &other.0 {
            self.add(&Dot {
                origin: origin.clone(),
                counter,
            });
        }
    }

    /// Whether every counter of `other` is `<=` the same counter here.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(origin, &c)| self.get(origin) >= c)
    }

    /// Whether no origin has a counter above 0.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(origin, counter)` pairs in origin order, counters all `>= 1`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(o, &c)| (o.as_str(), c))
    }

    /// Compact header-safe text: `origin:counter` pairs in origin order separated by commas,
    /// e.g. `eu-west-1:3,us-east-1:5`; `""` when empty. Origin bytes outside `[A-Za-z0-9._~-]`
    /// are percent-encoded. Always accepted by [`VersionVector::parse_token`].
    pub fn to_token(&self) -> String {
        let mut out = String::new();
        for (i, (origin, counter)) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            encode_origin(origin, &mut out);
            // Writing to a String cannot fail.
            let _ = write!(out, ":{counter}");
        }
        out
    }

    /// Parses the form of [`VersionVector::to_token`] strictly (any origin order, but no
    /// spaces, no empty entries, no duplicate origins, counters decimal `>= 1` without leading
    /// zeros). Fails with [`Error::BadToken`] saying what is wrong and the expected form.
    pub fn parse_token(s: &str) -> Result<VersionVector, Error> {
        const FORM: &str = "expected `origin:counter` pairs separated by commas, e.g. \
                            `eu-west-1:3,us-east-1:5`, or an empty token";
        let bad = |message: String| Error::BadToken {
            message: format!("{message}; {FORM}"),
        };
        let mut map = BTreeMap::new();
        if s.is_empty() {
            return Ok(VersionVector(map));
        }
        for (i, entry) in s.split(',').enumerate() {
            let n = i + 1;
            let Some((origin, counter)) = entry.split_once(':') else {
                return Err(bad(format!("entry {n} `{entry}` has no `:`")));
            };
            let origin = match decode_origin(origin) {
                Some(o) if !o.is_empty() => o,
                _ => {
                    return Err(bad(format!(
                        "entry {n} `{entry}` has an empty or badly encoded origin (allowed: \
                         letters, digits, `._~-`, and %XX for other bytes)"
                    )));
                }
            };
            let canonical = !counter.is_empty()
                && counter.bytes().all(|b| b.is_ascii_digit())
                && !counter.starts_with('0');
            let counter = match counter.parse::<u64>() {
                Ok(c) if canonical => c,
                _ => {
                    return Err(bad(format!(
                        "entry {n} `{entry}` has counter `{counter}`, not a decimal number from \
                         1 to {} without leading zeros",
                        u64::MAX
                    )));
                }
            };
            if map.insert(origin, counter).is_some() {
                return Err(bad(format!("entry {n} `{entry}` repeats an origin")));
            }
        }
        Ok(VersionVector(map))
    }
}

/// Bytes written as-is in tokens; every other byte is percent-encoded.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn encode_origin(origin: &str, out: &mut String) {
    for b in origin.bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Inverse of `encode_origin`; `None` unless `s` is exactly what it would produce.
fn decode_origin(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let digit = |h: u8| match h {
                b'0'..=b'9' => Some(h - b'0'),
                b'A'..=b'F' => Some(h - b'A' + 10),
                _ => None,
            };
            let v = digit(hex[0])? * 16 + digit(hex[1])?;
            if is_plain(v) {
                return None;
            }
            out.push(v);
            i += 3;
        } else if is_plain(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: u64, origin: &str) -> Version {
        Version {
            ts: Timestamp(ts),
            origin: origin.into(),
        }
    }

    #[test]
    fn version_orders_by_ts_then_origin() {
        assert!(v(1, "b") < v(2, "a"));
        assert!(v(2, "a") < v(2, "b"));
    }

    #[test]
    fn etag_round_trips_and_is_header_safe() {
        for ver in [v(0, ""), v(0x1f, "eu-west-1"), v(u64::MAX, "a\"b c,é:%")] {
            let tag = ver.etag();
            assert!(
                tag.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
                "{tag}"
            );
            assert_eq!(Version::parse_etag(&tag), Some(ver));
        }
        assert_eq!(v(0x1f, "eu-west-1").etag(), "1f.eu-west-1");
    }

    #[test]
    fn etag_rejects_malformed() {
        for bad in [
            "",
            "1f",
            ".x",
            "1F.x",
            "01.x",
            "g.x",
            "11111111111111111.x",
            "1.a b",
            "1.%2",
            "1.%2d",
            "1.%41",
            "1.%FF",
            "\"1.x\"",
            "+1.x",
        ] {
            assert_eq!(Version::parse_etag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn vector_operations() {
        let mut a = VersionVector::default();
        a.add(&Dot {
            origin: "x".into(),
            counter: 3,
        });
        a.add(&Dot {
            origin: "x".into(),
            counter: 2,
        });
        a.add(&Dot {
            origin: "z".into(),
            counter: 0,
        });
        assert_eq!(a.get("x"), 3);
        assert!(a.contains(&Dot {
            origin: "x".into(),
            counter: 3
        }));
        assert!(!a.contains(&Dot {
            origin: "y".into(),
            counter: 1
        }));
        let mut b = VersionVector::default();
        b.add(&Dot {
            origin: "y".into(),
            counter: 1,
        });
        assert!(!a.dominates(&b) && !b.dominates(&a));
        b.merge(&a);
        assert!(b.dominates(&a) && !a.dominates(&b));
        assert!(VersionVector::default().is_empty());
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![("x", 3), ("y", 1)]);
    }

    #[test]
    fn token_round_trips() {
        let mut vv = VersionVector::default();
        assert_eq!(vv.to_token(), "");
        vv.add(&Dot {
            origin: "us-east-1".into(),
            counter: 5,
        });
        vv.add(&Dot {
            origin: "eu-west-1".into(),
            counter: 3,
        });
        vv.add(&Dot {
            origin: "odd:,name".into(),
            counter: u64::MAX,
        });
        let token = vv.to_token();
        assert!(token.starts_with("eu-west-1:3,odd%3A%2Cname:"), "{token}");
        assert_eq!(VersionVector::parse_token(&token).expect("round trip"), vv);
        let reordered = VersionVector::parse_token("us-east-1:5,eu-west-1:3").expect("any order");
        assert_eq!(reordered.to_token(), "eu-west-1:3,us-east-1:5");
    }

    #[test]
    fn token_rejects_malformed_with_a_useful_message() {
        for (bad, says) in [
            ("a", "has no `:`"),
            ("a:1,", "has no `:`"),
            (":1", "empty or badly encoded origin"),
            ("a:0", "counter `0`"),
            ("a:01", "counter `01`"),
            ("a:+1", "counter `+1`"),
            ("a:18446744073709551616", "counter"),
            ("a:1, b:2", "badly encoded origin"),
            ("a:1,a:2", "repeats an origin"),
        ] {
            let err = VersionVector::parse_token(bad).expect_err(bad).to_string();
            assert!(
                err.contains(says) && err.contains("e.g. `eu-west-1:3"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn deserialize_drops_zero_counters() {
        let vv: VersionVector = serde_json::from_str(r#"{"a":0,"b":2}"#).expect("valid json");
        assert_eq!(vv.to_token(), "b:2");
    }
}
