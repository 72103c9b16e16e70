//! The five keyspace types, each with its own merge rule.

use serde::{Deserialize, Serialize};

/// The type of every value in a keyspace; it fixes which operations are allowed and how
/// concurrent writes merge (DESIGN §2, "Keyspace types and merge rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyspaceType {
    /// Bytes plus a content type; last writer wins by (HLC, origin region).
    Register,
    /// Bytes; concurrent writes are kept as siblings until a write with their context resolves them.
    #[serde(rename = "mvregister")]
    MvRegister,
    /// A signed 64-bit PN-counter: every increment in every region counts.
    Counter,
    /// A set of strings: observed-remove, add wins.
    Set,
    /// A JSON object merged field by field, last writer wins per field.
    Map,
}

impl KeyspaceType {
    /// Every type, in the order the docs list them.
    pub const ALL: [KeyspaceType; 5] = [
        KeyspaceType::Register,
        KeyspaceType::MvRegister,
        KeyspaceType::Counter,
        KeyspaceType::Set,
        KeyspaceType::Map,
    ];

    /// The name used in the topology file and in error messages (`register`, `mvregister`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyspaceType::Register => "register",
            KeyspaceType::MvRegister => "mvregister",
            KeyspaceType::Counter => "counter",
            KeyspaceType::Set => "set",
            KeyspaceType::Map => "map",
        }
    }
}

impl std::fmt::Display for KeyspaceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
