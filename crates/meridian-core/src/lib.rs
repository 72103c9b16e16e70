//! Pure logic of Meridian: the topology config, hybrid logical clocks, versions, the merge
//! rules of every keyspace type, and the edge's routing and health decisions. Nothing here does
//! I/O or reads a clock: time comes in as an argument, so every decision is a deterministic
//! function that tests can replay.

pub mod config;
pub mod crdt;
pub mod error;
pub mod gc;
pub mod geodns;
pub mod grpc_health;
pub mod health;
pub mod hlc;
pub mod kind;
pub mod op;
pub mod record;
pub mod routing;
pub mod scope;
pub mod version;
pub mod wire;

pub use error::Error;
pub use kind::KeyspaceType;
