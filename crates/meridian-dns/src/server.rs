//! The UDP and TCP loops: datagrams answered by a few workers sharing one socket, TCP
//! connections (RFC 7766: length-prefixed messages, several per connection) each on a task,
//! with idle and read timeouts and a connection limit so no client can hang the server.

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::{Authority, Backend, Transport};

/// How long a TCP connection may stay idle between messages (RFC 7766 suggests seconds).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading one TCP message may take once its length arrived.
pub const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most TCP connections served at once; more wait in the accept queue.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// Largest UDP datagram read; longer ones are cut by the OS and answered FORMERR.
const UDP_BUFFER: usize = 4096;

/// Serves `authority` on `udp` and `tcp` until `shutdown` resolves. Each UDP worker and TCP
/// connection answers through [`Authority::handle`]; a panic while answering one packet (a
/// bug) is logged and that packet dropped, the server goes on.
pub async fn serve(
    authority: Arc<Authority>,
    backend: Arc<dyn Backend>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    let udp = Arc::new(udp);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(udp_worker(udp.clone(), authority.clone(), backend.clone()));
    }
    tasks.spawn(tcp_loop(tcp, authority, backend));
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        Some(done) = tasks.join_next() => {
            tracing::error!(?done, "a dns listener task ended; stopping dns");
        }
    }
    tasks.abort_all();
}

fn answer(
    authority: &Authority,
    backend: &dyn Backend,
    packet: &[u8],
    peer: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        authority.handle(backend, packet, peer, transport)
    }))
    .unwrap_or_else(|_| {
        tracing::error!(%peer, len = packet.len(), "answering a DNS packet panicked; dropped");
        None
    })
}

async fn udp_worker(socket: Arc<UdpSocket>, authority: Arc<Authority>, backend: Arc<dyn Backend>) {
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let Some(reply) = answer(&authority, &*backend, &buf[..n], peer.ip(), Transport::Udp)
        else {
            continue;
        };
        if let Err(e) = socket.send_to(&reply, peer).await {
            tracing::debug!(%peer, error = %e, "udp send failed");
        }
    }
}

async fn tcp_loop(listener: TcpListener, authority: Arc<Authority>, backend: Arc<dyn Backend>) {
    let limit = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (authority, backend) = (authority.clone(), backend.clone());
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(stream, peer.ip(), &authority, &*backend).await {
                tracing::debug!(%peer, error = %e, "dns tcp connection ended");
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: IpAddr,
    authority: &Authority,
    backend: &dyn Backend,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let len = usize::from(u16::from_be_bytes(len));
        let mut packet = vec![0u8; len];
        match tokio::time::timeout(TCP_READ_TIMEOUT, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let Some(reply) = answer(authority, backend, &packet, peer, Transport::Tcp) else {
            continue;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        tokio::time::timeout(TCP_READ_TIMEOUT, stream.write_all(&out))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))??;
    }
}
