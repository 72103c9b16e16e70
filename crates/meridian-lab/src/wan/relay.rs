//! The I/O of one relay: accept, connect upstream, and carry each direction through its pair's
//! schedule. Every decision (departure, arrival) comes from [`super::shape`].

use std::net::SocketAddr;
use std::sync::Arc;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::capture::{Direction, Stream};
use super::shape::{DelaySchedule, jitter_offset};
use super::{CHUNK_BYTES, Pair, Wan};
use crate::error::LabError;

/// Tokio's timer wakes on whole milliseconds and rounds deadlines up (in effect 1–2 ms late):
/// asking to wake this much before a chunk's arrival time brings the measured error from about
/// +1.4 ms to about +0.5 ms (including loopback), never earlier than the rounding allows.
const TIMER_ROUNDING: std::time::Duration = std::time::Duration::from_micros(1000);
/// Most connections one relay carries at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// Most chunks in flight in one direction of one connection; the reader waits beyond that.
const CHUNKS_IN_FLIGHT: usize = 512;

/// A running relay for one directed pair. Dropping it closes its listener and every
/// connection it carries.
pub struct Relay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    /// The loopback address the `from` region connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn start(
    wan: Wan,
    from: &str,
    to: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<Relay, LabError> {
    let forward = wan.pair(from, to)?;
    let backward = wan.pair(to, from)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| LabError::Io {
            what: format!("binding the {from} → {to} relay on {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LabError::Io {
        what: format!("reading the address of the {from} → {to} relay"),
        source,
    })?;
    let (from, to) = (from.to_string(), to.to_string());
    let task = tokio::spawn(async move {
        // Dropped, aborting every connection, when this task is aborted.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((down, _)) = accepted else { continue };
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%from, %to, "relay at {MAX_CONNECTIONS} connections; refusing one");
                        continue;
                    }
                    let (connection, seed) = wan.next_connection();
                    let capture = wan.capture_log().map(|log| {
                        (
                            log.stream(&from, &to, Direction::Request, connection),
                            log.stream(&from, &to, Direction::Response, connection),
                        )
                    });
                    connections.spawn(carry(down, upstream, forward.clone(), backward.clone(), seed, capture));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(Relay { addr, task })
}

/// Carries one connection once both directions are up; an unreachable upstream closes the
/// downstream at once, as a refused connection would.
async fn carry(
    down: TcpStream,
    upstream: SocketAddr,
    forward: Arc<Pair>,
    backward: Arc<Pair>,
    seed: u64,
    capture: Option<(Arc<Stream>, Arc<Stream>)>,
) {
    for pair in [&forward, &backward] {
        if pair.subscribe().wait_for(|up| *up).await.is_err() {
            return;
        }
    }
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (down_read, down_write) = down.into_split();
    let (up_read, up_write) = up.into_split();
    let (request, response) = capture.unzip();
    tokio::join!(
        direction(down_read, up_write, forward, seed.wrapping_mul(2), request),
        direction(
            up_read,
            down_write,
            backward,
            seed.wrapping_mul(2).wrapping_add(1),
            response,
        ),
    );
}

/// Copies `from` to `to` through `pair`: the reader stamps each chunk with its arrival time,
/// the writer holds it while the pair is cut and writes it when due, then hands it to the
/// capture, if any. Passes the end on.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pair: Arc<Pair>,
    seed: u64,
    capture: Option<Arc<Stream>>,
) {
    let (tx, mut rx) = mpsc::channel::<(std::time::Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader_pair = pair.clone();
    let read = async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut schedule = DelaySchedule::default();
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let now = Instant::now().into_std();
                    let shape = reader_pair.shape();
                    let depart = reader_pair.depart(now, n);
                    let due = schedule.arrival(
                        depart,
                        shape.delay,
                        jitter_offset(&mut rng, shape.jitter),
                    );
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        let mut up = pair.subscribe();
        let mut order = DelaySchedule::default();
        while let Some((due, chunk)) = rx.recv().await {
            let mut due = due;
            loop {
                if !*up.borrow_and_update() {
                    if up.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    let healed = Instant::now().into_std();
                    due = due.max(healed + pair.shape().delay);
                }
                due = order.not_before(due);
                let wake = due.checked_sub(TIMER_ROUNDING).unwrap_or(due);
                tokio::time::sleep_until(Instant::from_std(wake)).await;
                // A cut that began while the chunk was in flight holds it too.
                if *up.borrow_and_update() {
                    break;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            pair.count(chunk.len());
            if let Some(capture) = &capture {
                capture.record(&chunk);
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
