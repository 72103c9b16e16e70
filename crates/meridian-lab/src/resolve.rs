//! A stub resolver for virtual users when the world serves GeoDNS: one A query over UDP to an
//! edge's DNS listener (the wire format by hickory-proto), answers cached for their TTL as a
//! user's resolver would.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

/// How long a lookup may take before the user gives up on DNS.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The A records of `name` from the DNS server at `server`, with the smallest TTL among them.
/// An answer without A records (NODATA), an error code, or no answer within
/// [`LOOKUP_TIMEOUT`] is an error saying which.
pub async fn lookup_a(
    server: SocketAddr,
    name: &str,
    id: u16,
) -> Result<(Vec<Ipv4Addr>, Duration), String> {
    let qname = Name::from_ascii(name).map_err(|e| format!("`{name}` is not a DNS name: {e}"))?;
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(qname, RecordType::A));
    let bytes = query
        .to_vec()
        .map_err(|e| format!("encoding the query: {e}"))?;
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding a UDP socket: {e}"))?;
    let exchange = async {
        socket
            .send_to(&bytes, server)
            .await
            .map_err(|e| format!("sending to {server}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = socket
                .recv_from(&mut buf)
                .await
                .map_err(|e| format!("receiving from {server}: {e}"))?;
            if from != server {
                continue;
            }
            let answer = Message::from_vec(&buf[..n])
                .map_err(|e| format!("a malformed answer from {server}: {e}"))?;
            if answer.metadata.id == id {
                return Ok::<Message, String>(answer);
            }
        }
    };
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {server} within {LOOKUP_TIMEOUT:?}"))??;
    let code = answer.metadata.response_code;
    if code != hickory_proto::op::ResponseCode::NoError {
        return Err(format!("{server} answered {code}"));
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for r in &answer.answers {
        if let RData::A(a) = &r.data {
            addrs.push(a.0);
            ttl = ttl.min(r.ttl);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{server} has no A record for {name} (NODATA)"));
    }
    Ok((addrs, Duration::from_secs(u64::from(ttl))))
}
