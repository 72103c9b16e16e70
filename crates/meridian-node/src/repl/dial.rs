//! How a replication link reaches its peer: the one network seam of the puller. Production
//! dials TCP ([`TcpDialer`]); a simulation passes a dialer over its simulated network, and the
//! link above it (HTTP/1.1, the stream protocol, reconnects) runs unchanged.

use std::io;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long [`TcpDialer`] waits for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A byte stream to a peer, as a [`Dialer`] opens it.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// Opens byte streams to peers.
pub trait Dialer: Send + Sync + 'static {
    /// A new connected stream to `authority` (`host:port` of a peer's base URL), or the error
    /// that prevented it. Each call opens a new stream; the caller owns and closes it.
    fn dial<'a>(&'a self, authority: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Conn>>>;
}

/// The production dialer: a TCP connection (without Nagle's delay), refused as timed out after
/// [`CONNECT_TIMEOUT`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial<'a>(&'a self, authority: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Conn>>> {
        Box::pin(async move {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no connection to {authority} within {CONNECT_TIMEOUT:?}"),
                        )
                    })??;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Conn>)
        })
    }
}
