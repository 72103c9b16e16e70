//! Last-writer-wins register: bytes plus a content type.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::version::Version;

/// A last-writer-wins register. Merge keeps the side with the greater `version` (the
/// `(ts, origin)` order); equal versions — which only a corrupted history produces — are broken
/// by value and content type, so merge stays deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister {
    /// The value; `None` is a delete (a tombstone that still wins over older writes).
    pub value: Option<Bytes>,
    /// The content type given with the value (empty for a tombstone).
    pub content_type: String,
    /// The write that produced this state.
    pub version: Version,
}

impl LwwRegister {
    /// Keeps whichever of `self` and `other` has the greater version.
    pub fn merge(&mut self, other: &LwwRegister) {
        if (&other.version, &other.value, &other.content_type)
            > (&self.version, &self.value, &self.content_type)
        {
            *self = other.clone();
        }
    }

    /// Whether the register holds no value (deleted or never written).
    pub fn is_empty(&self) -> bool {
        self.value.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;

    fn reg(ts: u64, origin: &str, value: Option<&'static str>) -> LwwRegister {
        LwwRegister {
            value: value.map(|v| Bytes::from_static(v.as_bytes())),
            content_type: "text/plain".into(),
            version: Version {
                ts: Timestamp(ts),
                origin: origin.into(),
            },
        }
    }

    #[test]
    fn highest_version_wins_either_way() {
        let (a, b) = (reg(5, "eu", Some("a")), reg(5, "us", Some("b")));
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b);
        ba.merge(&a);
        assert_eq!(ab, b);
        assert_eq!(ba, b);
        let mut t = reg(6, "eu", None);
        t.merge(&b);
        assert!(t.is_empty());
    }
}
