//! A loopback TCP relay standing in for a WAN link until the lab's emulator exists: every chunk
//! read on one side is written to the other a fixed one-way latency later, in order, in both
//! directions. Bounded (connections, chunks in flight) and stopped when dropped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Most connections one relay carries at once; more are refused (closed at once).
const MAX_CONNECTIONS: usize = 32;
/// Most chunks delayed in one direction of one connection; the reader waits beyond that.
const CHUNKS_IN_FLIGHT: usize = 256;
/// Largest chunk read at once.
const CHUNK_BYTES: usize = 16 * 1024;

/// A running relay; dropping it closes the listener and every connection it carries.
pub struct Relay {
    /// Where to connect to reach the upstream through the delayed link.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a relay on a free loopback port to `upstream`, delaying each direction by `one_way`.
pub async fn start(upstream: SocketAddr, one_way: Duration) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a relay");
    let addr = listener.local_addr().expect("relay address");
    let task = tokio::spawn(async move {
        // Dropped (aborting every connection) when the accept task is aborted.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((down, _)) = accepted else { continue };
                    if connections.len() < MAX_CONNECTIONS {
                        connections.spawn(carry(down, upstream, one_way));
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Relay { addr, task }
}

/// Carries one connection; an unreachable upstream closes the downstream side at once, as a
/// refused connection would.
async fn carry(down: TcpStream, upstream: SocketAddr, one_way: Duration) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (down_read, down_write) = down.into_split();
    let (up_read, up_write) = up.into_split();
    tokio::join!(
        delayed(down_read, up_write, one_way),
        delayed(up_read, down_write, one_way)
    );
}

/// Copies `from` to `to`, each chunk `delay` after it was read; passes the end of the stream on.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
