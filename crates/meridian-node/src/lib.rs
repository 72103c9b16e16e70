//! The region node: Meridian's durable, typed key-value store behind the HTTP data API of
//! DESIGN §2. It composes the storage engine (`meridian-store`) with the merge rules of
//! `meridian-core`; every acknowledged write is on disk before the answer leaves.

pub mod api;
pub mod clock;
pub mod error;
pub mod expiry;
mod feed;
pub mod forward;
pub mod input;
pub mod keys;
pub mod metrics;
pub mod read;
pub mod render;
pub mod repl;
pub mod state;
pub mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;
pub use state::{Node, NodeConfig};

/// How often replicated garbage (applied op-log entries, settled tombstones) is collected.
pub const GC_INTERVAL: Duration = Duration::from_secs(2);
/// How often the TTL sweeper reclaims expired records.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--region` names a region that the topology does not have.
    #[error("region `{region}` is not in the topology; its regions are: {}", known.join(", "))]
    UnknownRegion {
        /// The region asked for.
        region: String,
        /// The regions the topology has.
        known: Vec<String>,
    },
    /// The store failed to open or read.
    #[error(transparent)]
    Store(#[from] meridian_store::Error),
    /// The listener could not be bound or failed.
    #[error("HTTP listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Serves the data API of `node` on `listener` until `shutdown` completes, then finishes
/// in-flight requests. The TTL sweeper and the replication links to every peer run alongside.
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    metrics::install();
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut tasks = repl::start(&node);
    tasks.push(tokio::spawn(expiry::run(node.clone(), SWEEP_INTERVAL)));
    tasks.push(tokio::spawn(repl::gc::run(node.clone(), GC_INTERVAL)));
    let app = api::router(node.clone());
    let closing = node.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    for t in tasks {
        t.abort();
    }
    served.map_err(|source| Error::Listen { addr, source })
}

/// Opens the store at `data_dir` and builds the node for `region`.
pub fn open(
    topology: Arc<meridian_core::config::Topology>,
    region: &str,
    data_dir: &std::path::Path,
    config: NodeConfig,
) -> Result<Node, Error> {
    let store = meridian_store::Store::open(data_dir, meridian_store::StoreOptions::default())?;
    Node::new(
        topology,
        region,
        store,
        Arc::new(clock::SystemClock),
        config,
    )
}
