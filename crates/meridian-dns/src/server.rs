//! The UDP and TCP loops: datagrams answered by one thread per core, each with its own socket
//! (`SO_REUSEPORT`, when the socket given was bound with it: see [`bind_udp`]; else clones of
//! the one socket), its own buffers and its own answer cache ([`crate::UdpCache`]); TCP
//! connections (RFC 7766: length-prefixed messages, several per connection) each on a task,
//! with idle and read timeouts and a connection limit so no client can hang the server.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::{Authority, Backend, Transport, UdpCache};

/// How long a TCP connection may stay idle between messages (RFC 7766 suggests seconds).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading one TCP message may take once its length arrived.
pub const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most TCP connections served at once; more wait in the accept queue.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// Largest UDP datagram read; longer ones are cut by the OS and answered FORMERR.
const UDP_BUFFER: usize = 4096;
/// How often a blocked UDP thread wakes to see whether the server stopped.
const UDP_POLL: Duration = Duration::from_millis(200);

/// A UDP socket bound to `addr` with `SO_REUSEPORT` (on Unix), so that [`serve`] can open one
/// more socket per core on the same address and let the kernel spread datagrams over them.
/// Nonblocking, ready for [`tokio::net::UdpSocket::from_std`]. Fails (`AddrInUse`) when another
/// socket is bound to `addr`, even one that allows reuse — which would otherwise silently take
/// a share of the queries — so two servers never share a port.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    if addr.port() != 0 {
        // A plain bind fails if anyone is bound there, with or without SO_REUSEPORT.
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let s = reuseport_socket(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// One socket per UDP thread: new `SO_REUSEPORT` sockets on the same address when `first`
/// was bound with it, else clones of `first` (threads then share its queue).
fn udp_sockets(first: std::net::UdpSocket, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    #[cfg(unix)]
    let reuse = SockRef::from(&first).reuse_port().unwrap_or(false);
    #[cfg(not(unix))]
    let reuse = false;
    let addr = first.local_addr()?;
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        let s = if reuse {
            reuseport_socket(addr)?
        } else {
            first.try_clone()?
        };
        out.push(s);
    }
    out.push(first);
    for s in &out {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(UDP_POLL))?;
    }
    Ok(out)
}

/// How many UDP threads to run: `[dns] udp_threads`, else one per core (at most 8).
fn udp_threads(topology: &meridian_core::config::Topology) -> usize {
    topology
        .dns
        .as_ref()
        .and_then(|d| d.udp_threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(8)))
        .max(1)
}

/// Sets the flag when dropped: the UDP threads stop when [`serve`] returns or is cancelled.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Serves `authority` on `udp` and `tcp` until `shutdown` resolves, UDP on `[dns]
/// udp_threads` threads (read once, now; default one per core, at most 8). Each UDP worker and TCP
/// connection answers through [`Authority::handle`]; a panic while answering one packet (a
/// bug) is logged and that packet dropped, the server goes on.
pub async fn serve(
    authority: Arc<Authority>,
    backend: Arc<dyn Backend>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let workers = udp_threads(&backend.topology());
    let sockets = match udp.into_std().and_then(|s| udp_sockets(s, workers)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "setting up the dns udp sockets failed; stopping dns");
            return;
        }
    };
    for (i, socket) in sockets.into_iter().enumerate() {
        let (authority, backend, stop) = (authority.clone(), backend.clone(), stop.0.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_thread(&socket, &authority, &*backend, &stop));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "starting a dns udp thread failed; stopping dns");
            return;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(tcp_loop(tcp, authority, backend));
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        Some(done) = tasks.join_next() => {
            tracing::error!(?done, "a dns listener task ended; stopping dns");
        }
    }
    tasks.abort_all();
    drop(stop);
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

/// Answers one datagram through the thread's cache into `reply` (see
/// [`Authority::handle_udp`]); `false`: send nothing. A panic (a bug) is logged, the datagram
/// dropped and the cache emptied.
fn answer_udp(
    authority: &Authority,
    backend: &dyn Backend,
    packet: &[u8],
    peer: IpAddr,
    cache: &mut UdpCache,
    reply: &mut Vec<u8>,
) -> bool {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        authority.handle_udp(backend, packet, peer, cache, reply)
    }))
    .unwrap_or_else(|_| {
        tracing::error!(%peer, len = packet.len(), "answering a DNS packet panicked; dropped");
        *cache = UdpCache::default();
        false
    })
}

/// Most datagrams one `recvmmsg` or `sendmmsg` call carries (gdnsd's width too): enough to
/// absorb a burst in one system call, small enough that the first answer of a batch does not
/// wait long for the last.
#[cfg(target_os = "linux")]
const UDP_BATCH: usize = 16;

/// One UDP thread, Linux: `recvmmsg` waits for the first datagram and takes whatever else is
/// queued (up to [`UDP_BATCH`]), each is answered in arrival order (cache first, see
/// [`Authority::handle_udp`]), and the answers leave in one `sendmmsg` (more when the kernel
/// takes only part of them). Buffers, headers and the cache live as long as the thread and the
/// system calls' vectors are on the stack, so a batch of cached answers costs no allocation.
#[cfg(target_os = "linux")]
fn udp_thread(
    socket: &std::net::UdpSocket,
    authority: &Authority,
    backend: &dyn Backend,
    stop: &AtomicBool,
) {
    use nix::errno::Errno;
    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; UDP_BUFFER]; UDP_BATCH];
    let mut replies: Vec<Vec<u8>> = (0..UDP_BATCH)
        .map(|_| Vec::with_capacity(usize::from(crate::UDP_PAYLOAD)))
        .collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    // Per received datagram: its length and sender.
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(UDP_BATCH);
    // Per answer to send: its reply buffer and destination.
    let mut outgoing: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(UDP_BATCH);
    // Their destinations, as `sendmmsg` takes them.
    let mut addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(UDP_BATCH);
    let mut cache = UdpCache::default();
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut free = bufs.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; UDP_BATCH] = std::array::from_fn(|_| {
                let b = free.next().expect("invariant: UDP_BATCH buffers");
                [IoSliceMut::new(&mut b[..])]
            });
            match nix::sys::socket::recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => {
                    received.extend(msgs.filter_map(|m| Some((m.bytes, m.address?))));
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            }
        }
        outgoing.clear();
        for (i, (n, addr)) in received.iter().enumerate() {
            let Some(peer) = peer_ip(addr) else {
                continue;
            };
            let packet = &bufs[i][..(*n).min(UDP_BUFFER)];
            if answer_udp(
                authority,
                backend,
                packet,
                peer,
                &mut cache,
                &mut replies[i],
            ) {
                outgoing.push((i, *addr));
            }
        }
        cache.end_batch();
        let mut done = 0;
        while done < outgoing.len() {
            let rest = &outgoing[done..];
            let slices: [[IoSlice<'_>; 1]; UDP_BATCH] = std::array::from_fn(|k| {
                [IoSlice::new(
                    rest.get(k).map_or(&[][..], |(i, _)| &replies[*i]),
                )]
            });
            addrs.clear();
            addrs.extend(rest.iter().map(|(_, a)| Some(*a)));
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            match nix::sys::socket::sendmmsg(
                fd,
                &mut send_headers,
                &slices[..rest.len()],
                &addrs,
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(sent) => done += sent.count().max(1),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // The first answer failed (later ones were not tried): skip it.
                    tracing::debug!(peer = ?peer_ip(&rest[0].1), error = %e, "udp send failed");
                    done += 1;
                }
            }
        }
    }
}

/// The sender's address of a received datagram.
#[cfg(target_os = "linux")]
fn peer_ip(addr: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(a.ip()));
    }
    addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip()))
}

/// One UDP thread, elsewhere: blocking receive, answer (cache first, see
/// [`Authority::handle_udp`]), send; the buffers and the cache live as long as the thread, so
/// a cached answer costs no allocation.
#[cfg(not(target_os = "linux"))]
fn udp_thread(
    socket: &std::net::UdpSocket,
    authority: &Authority,
    backend: &dyn Backend,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; UDP_BUFFER];
    let mut reply = Vec::with_capacity(usize::from(crate::UDP_PAYLOAD));
    let mut cache = UdpCache::default();
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let answered = answer_udp(
            authority,
            backend,
            &buf[..n],
            peer.ip(),
            &mut cache,
            &mut reply,
        );
        cache.end_batch();
        if !answered {
            continue;
        }
        if let Err(e) = socket.send_to(&reply, peer) {
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
