//! The authority over a backend: state-aware TTL through real health changes, zone rebuilds on
//! a new topology, explain; and the UDP/TCP server on loopback sockets.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use meridian_core::config::{Topology, parse};
use meridian_core::geodns::DnsClient;
use meridian_core::routing::{HealthView, RegionView};
use meridian_dns::{Authority, Backend, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOPO: &str = r#"
[cluster]
name = "t"
[[region]]
name = "us-east-1"
node = "http://127.0.0.1:7601"
app = ["http://127.0.0.1:8601"]
addresses = ["192.0.2.10"]
[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:7602"
app = ["http://127.0.0.1:8602"]
addresses = ["192.0.2.20"]
[routing]
policy = "failover"
order = ["us-east-1", "eu-west-1"]
[dns]
listen = "127.0.0.1:5353"
zone = "example.test."
ttl = "60s"
nameservers = ["ns1.example.test."]
[[dns.record]]
name = "app"
type = "A"
policy = "failover"
[[dns.record]]
name = "www"
type = "A"
values = ["192.0.2.1"]
"#;

struct Fake {
    topology: Mutex<Arc<Topology>>,
    us_down: AtomicBool,
    now_s: AtomicU64,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            topology: Mutex::new(Arc::new(parse("t.toml", TOPO).unwrap())),
            us_down: AtomicBool::new(false),
            now_s: AtomicU64::new(0),
        })
    }
}

impl Backend for Fake {
    fn topology(&self) -> Arc<Topology> {
        self.topology.lock().unwrap().clone()
    }

    fn health_view(&self) -> HealthView {
        let mut h = HealthView::new();
        let up = !self.us_down.load(Ordering::SeqCst);
        h.insert(
            "us-east-1".into(),
            RegionView {
                up,
                ..RegionView::default()
            },
        );
        h.insert("eu-west-1".into(), RegionView::default());
        h
    }

    fn locate(&self, _: IpAddr) -> DnsClient {
        DnsClient::default()
    }

    fn now(&self) -> Duration {
        Duration::from_secs(self.now_s.load(Ordering::SeqCst))
    }

    fn random(&self) -> u64 {
        0
    }
}

/// `meridian_dns::serve` over `b` on loopback sockets of its own.
struct Server {
    udp: std::net::SocketAddr,
    tcp: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(b: &Arc<Fake>) -> Server {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ua, ta) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(meridian_dns::serve(
            Arc::new(Authority::new()),
            b.clone(),
            udp,
            tcp,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            udp: ua,
            tcp: ta,
            stop,
            task,
        }
    }

    /// Stops the server and waits (at most 5 s) until it has.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn ask(auth: &Authority, b: &Fake, name: &str) -> (Vec<String>, u32) {
    let out = auth
        .handle(
            b,
            &query(name, RecordType::A),
            "127.0.0.1".parse().unwrap(),
            Transport::Udp,
        )
        .unwrap();
    let m = Message::from_vec(&out).unwrap();
    let data = m.answers.iter().map(|r| r.data.to_string()).collect();
    (data, m.answers.first().map_or(0, |r| r.ttl))
}

#[test]
fn ttl_shrinks_near_transitions_and_recovers() {
    let b = Fake::new();
    let auth = Authority::new();
    assert_eq!(
        ask(&auth, &b, "app.example.test."),
        (vec!["192.0.2.10".into()], 5),
        "start"
    );
    assert_eq!(
        ask(&auth, &b, "www.example.test.").1,
        60,
        "static: always configured"
    );
    b.now_s.store(31, Ordering::SeqCst);
    assert_eq!(ask(&auth, &b, "app.example.test.").1, 60, "stable for 30 s");
    b.us_down.store(true, Ordering::SeqCst);
    b.now_s.store(40, Ordering::SeqCst);
    assert_eq!(
        ask(&auth, &b, "app.example.test."),
        (vec!["192.0.2.20".into()], 5),
        "down: gone from the answer, short TTL"
    );
    b.now_s.store(69, Ordering::SeqCst);
    assert_eq!(ask(&auth, &b, "app.example.test.").1, 5);
    b.now_s.store(70, Ordering::SeqCst);
    assert_eq!(ask(&auth, &b, "app.example.test.").1, 60);
    b.us_down.store(false, Ordering::SeqCst);
    b.now_s.store(80, Ordering::SeqCst);
    assert_eq!(
        ask(&auth, &b, "app.example.test."),
        (vec!["192.0.2.10".into()], 5),
        "back"
    );
}

#[test]
fn a_new_topology_rebuilds_the_zone() {
    let b = Fake::new();
    let auth = Authority::new();
    assert_eq!(ask(&auth, &b, "www.example.test.").0, ["192.0.2.1"]);
    let text = TOPO.replace("values = [\"192.0.2.1\"]", "values = [\"192.0.2.9\"]");
    *b.topology.lock().unwrap() = Arc::new(parse("t.toml", &text).unwrap());
    assert_eq!(ask(&auth, &b, "www.example.test.").0, ["192.0.2.9"]);
}

#[test]
fn explain_says_why() {
    let b = Fake::new();
    b.us_down.store(true, Ordering::SeqCst);
    let auth = Authority::new();
    let e = auth
        .explain(
            &*b,
            "app",
            Some("a"),
            "203.0.113.5".parse().unwrap(),
            Some("198.51.100.0/24"),
        )
        .unwrap();
    assert_eq!(e.name, "app.example.test.");
    assert_eq!((e.rcode, e.scope), ("NOERROR", Some(0)));
    assert_eq!(e.answers.len(), 1);
    assert!(e.answers[0].contains("192.0.2.20"), "{:?}", e.answers);
    let p = &e.policy[0];
    assert_eq!(
        (p.regions.as_slice(), p.outcome),
        (&["eu-west-1".to_string()][..], "routed")
    );
    assert!(
        p.explanation
            .iter()
            .any(|l| l.contains("down, skipped: us-east-1")),
        "{:?}",
        p.explanation
    );
    assert_eq!(e.located, Some("198.51.100.0".parse().unwrap()));
    let e = auth
        .explain(
            &*b,
            "nope.example.test.",
            None,
            "203.0.113.5".parse().unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(e.rcode, "NXDOMAIN");
    assert!(
        auth.explain(
            &*b,
            "app",
            Some("BOGUS"),
            "203.0.113.5".parse().unwrap(),
            None
        )
        .is_err()
    );
    assert!(
        auth.explain(
            &*b,
            "app",
            None,
            "203.0.113.5".parse().unwrap(),
            Some("1.2.3.4/40")
        )
        .is_err()
    );
}

#[tokio::test]
async fn serves_udp_and_tcp_and_a_stalled_client_blocks_no_one() {
    let b = Fake::new();
    let server = Server::start(&b).await;
    let (ua, ta) = (server.udp, server.tcp);

    // A TCP client that sends half a length prefix and stalls.
    let mut stalled = tokio::net::TcpStream::connect(ta).await.unwrap();
    stalled.write_all(&[0]).await.unwrap();

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&[0xde, 0xad], ua).await.unwrap();
    client
        .send_to(&query("www.example.test.", RecordType::A), ua)
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("udp answer")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");

    // Two pipelined queries on one TCP connection.
    let mut s = tokio::net::TcpStream::connect(ta).await.unwrap();
    let mut out = Vec::new();
    for name in ["www.example.test.", "nope.example.test."] {
        let q = query(name, RecordType::A);
        out.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&q);
    }
    s.write_all(&out).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..2 {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
            .await
            .expect("tcp answer")
            .unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).await.unwrap();
        codes.push(Message::from_vec(&body).unwrap().response_code);
    }
    assert_eq!(codes, [ResponseCode::NoError, ResponseCode::NXDomain]);

    server.stop().await;
    drop(stalled);
}

/// A burst from two clients, with packets that get no answer in between (a response, a
/// 2-byte runt): the UDP threads take it in batches, and each client gets exactly the answers
/// to its own queries, byte for byte what the reference builder answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_burst_is_answered_like_the_reference_builder() {
    let b = Fake::new();
    let server = Server::start(&b).await;
    let ua = server.udp;
    let reference = Authority::new();
    let clients = [
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    let names = [
        "www.example.test.",
        "app.example.test.",
        "nope.example.test.",
        "example.test.",
        "example.org.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SOA,
        RecordType::NS,
    ];
    // Per client: the answers it must get, by ID.
    let mut want: [std::collections::BTreeMap<u16, Vec<u8>>; 2] = Default::default();
    for id in 0..64u16 {
        let c = usize::from(id % 2);
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        let name = Name::from_ascii(names[usize::from(id) % names.len()]).unwrap();
        m.add_query(Query::query(name, types[usize::from(id / 3) % types.len()]));
        let packet = match id % 9 {
            4 => {
                m.metadata.message_type = MessageType::Response;
                m.to_vec().unwrap()
            }
            7 => vec![0xde, 0xad],
            _ => m.to_vec().unwrap(),
        };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        if let Some(answer) = reference.handle(&*b, &packet, peer, Transport::Udp) {
            want[c].insert(id, answer);
        }
        clients[c].send_to(&packet, ua).unwrap();
    }
    assert!(
        want.iter().all(|w| w.len() > 20),
        "most queries are answered"
    );
    for (c, client) in clients.iter().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = std::collections::BTreeMap::new();
        let mut buf = [0u8; 1500];
        while got.len() < want[c].len() {
            let (n, _) = client.recv_from(&mut buf).expect("an answer within 5 s");
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(
                got.insert(id, buf[..n].to_vec()).is_none(),
                "one answer per query"
            );
        }
        assert_eq!(got, want[c], "client {c}");
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            client.recv_from(&mut buf).is_err(),
            "nothing more for client {c}"
        );
    }
    server.stop().await;
}

/// Two servers never share a UDP port: binding where another socket is bound fails, even when
/// that socket allows reuse (SO_REUSEPORT would otherwise split the queries between them).
#[test]
fn udp_port_is_never_shared_with_another_socket() {
    let ours = meridian_dns::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ours.local_addr().unwrap();
    let again = meridian_dns::bind_udp(addr).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
    drop(ours);
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = meridian_dns::bind_udp(plain.local_addr().unwrap()).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
}
