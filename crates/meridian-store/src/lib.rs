//! Meridian's storage engine: durable, atomic, group-committed transactions over four tables.
//!
//! A [`Store`] is either backed by [fjall](https://docs.rs/fjall) in a directory
//! ([`Store::open`]) or held in memory ([`Store::in_memory`]); both share the same writer and
//! therefore the same semantics. One dedicated writer thread owns every mutation: it takes up to
//! [`StoreOptions::max_batch`] queued transactions, runs them in order against an overlay, writes
//! the whole group as one atomic batch, syncs the journal once, and only then answers the callers
//! (group commit).

#![forbid(unsafe_code)]

mod cache;
mod engine;
mod error;
#[cfg(target_os = "linux")]
mod mounts;
mod overlay;
mod reclaim;
mod store;
#[cfg(unix)]
mod trash;
mod txn;
#[cfg(target_os = "linux")]
mod writeback;

pub use error::Error;
pub use store::{
    COMMIT_SECONDS, DEFAULT_READ_CACHE_BYTES, Durability, FORMAT_VERSION, FORMAT_VERSION_KEY,
    Store, StoreOptions, StoreStats,
};
pub use txn::{MAX_KEY_LEN, MAX_VALUE_LEN, Txn};

/// A key and its value, as returned by scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One of the store's tables. Each is a separate fjall keyspace (a separate in-memory map for
/// [`Store::in_memory`]); a transaction may write several tables atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Current values of user keys.
    Data,
    /// The replication op log.
    OpLog,
    /// Stored outcomes of idempotent requests.
    Idempotency,
    /// Store metadata; also holds the store's own [`FORMAT_VERSION_KEY`].
    Meta,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 4] = [Table::Data, Table::OpLog, Table::Idempotency, Table::Meta];

    /// The name of the fjall keyspace holding this table; stable across releases.
    pub fn name(self) -> &'static str {
        match self {
            Table::Data => "data",
            Table::OpLog => "oplog",
            Table::Idempotency => "idempotency",
            Table::Meta => "meta",
        }
    }

    /// Position of the table in [`Table::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Table::Data => 0,
            Table::OpLog => 1,
            Table::Idempotency => 2,
            Table::Meta => 3,
        }
    }
}

#[cfg(test)]
mod tests;
