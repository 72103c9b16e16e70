//! The WAN emulator over real loopback sockets: measured delays, partitions (full, one-way,
//! heal), the bandwidth cap and the byte counters.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_lab::wan::{Profile, Shape, Wan};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

const A: &str = "us-east-1";
const B: &str = "eu-west-1";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A WAN with `a_to_b` and `b_to_a` one-way delays between A and B.
fn wan(a_to_b: Duration, b_to_a: Duration) -> Wan {
    let mut profile = Profile::default();
    profile.set(A, B, a_to_b);
    profile.set(B, A, b_to_a);
    Wan::new(profile, 42)
}

/// An upstream listener standing for region B, a relay A → B to it, and one connection through
/// it: (client side at A, server side at B, relay, listener for further connections).
async fn connected(wan: &Wan) -> (TcpStream, TcpStream, meridian_lab::wan::Relay, TcpListener) {
    let upstream = TcpListener::bind(any_port()).await.expect("bind upstream");
    let relay = wan
        .relay(A, B, any_port(), upstream.local_addr().expect("addr"))
        .await
        .expect("relay");
    let client = TcpStream::connect(relay.addr()).await.expect("connect");
    client.set_nodelay(true).expect("nodelay");
    let (server, _) = timeout(ms(2000), upstream.accept())
        .await
        .expect("relay connects upstream")
        .expect("accept");
    server.set_nodelay(true).expect("nodelay");
    (client, server, relay, upstream)
}

async fn read_exact_within(s: &mut TcpStream, n: usize, within: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match timeout(within, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_one_way_delays_match_the_configured_ones() {
    let wan = wan(ms(15), ms(25));
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    let (mut forward, mut backward) = (Vec::new(), Vec::new());
    for i in 0u64..40 {
        let sent = Instant::now();
        client.write_all(&i.to_be_bytes()).await.expect("send");
        let got = read_exact_within(&mut server, 8, ms(1000))
            .await
            .expect("arrives");
        let arrived = Instant::now();
        assert_eq!(got, i.to_be_bytes());
        forward.push(arrived - sent);
        server.write_all(&got).await.expect("echo");
        let back = read_exact_within(&mut client, 8, ms(1000))
            .await
            .expect("echo arrives");
        assert_eq!(back, i.to_be_bytes());
        backward.push(arrived.elapsed());
    }
    let (f, b) = (median(forward), median(backward));
    eprintln!("medians: A → B {f:?}, B → A {b:?}");
    assert!(
        f.abs_diff(ms(15)) <= ms(2),
        "A → B median {f:?}, configured 15 ms"
    );
    assert!(
        b.abs_diff(ms(25)) <= ms(2),
        "B → A median {b:?}, configured 25 ms"
    );
    // Round trips of a fresh connection as a client measures them: the sum.
    let mut rtts = Vec::new();
    for i in 0u64..10 {
        let sent = Instant::now();
        client.write_all(&i.to_be_bytes()).await.expect("send");
        let got = read_exact_within(&mut server, 8, ms(1000))
            .await
            .expect("arrives");
        server.write_all(&got).await.expect("echo");
        read_exact_within(&mut client, 8, ms(1000))
            .await
            .expect("echo");
        rtts.push(sent.elapsed());
    }
    let rtt = median(rtts);
    assert!(
        rtt.abs_diff(ms(40)) <= ms(3),
        "round trip {rtt:?}, configured 15 + 25 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_varies_delay_but_never_reorders_bytes() {
    let wan = wan(ms(10), ms(10));
    wan.set_shape(
        A,
        B,
        Shape {
            delay: ms(10),
            jitter: ms(6),
            bandwidth: None,
        },
    )
    .expect("shape");
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    let mut delays = Vec::new();
    // Spaced sends measure the jitter; back-to-back bursts check the order.
    for i in 0u32..30 {
        let sent = Instant::now();
        client.write_all(&i.to_be_bytes()).await.expect("send");
        let got = read_exact_within(&mut server, 4, ms(1000))
            .await
            .expect("arrives");
        assert_eq!(got, i.to_be_bytes());
        delays.push(sent.elapsed());
    }
    let (lo, hi) = (
        delays.iter().min().copied().expect("some"),
        delays.iter().max().copied().expect("some"),
    );
    assert!(
        hi - lo >= ms(4),
        "jitter of ±6 ms spread delays only {lo:?}..{hi:?}"
    );
    assert!(hi <= ms(19), "delay {hi:?} beyond 10 + 6 ms (+ slack)");
    for i in 0u32..2000 {
        client.write_all(&i.to_be_bytes()).await.expect("burst");
    }
    let all = read_exact_within(&mut server, 8000, ms(5000))
        .await
        .expect("burst arrives");
    for (i, chunk) in all.chunks(4).enumerate() {
        assert_eq!(
            chunk,
            (i as u32).to_be_bytes(),
            "byte order broken at message {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_cut_holds_one_direction_and_heal_delivers() {
    let wan = wan(ms(5), ms(5));
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    wan.cut(A, B).expect("cut");
    client.write_all(b"held").await.expect("send");
    server.write_all(b"back").await.expect("send back");
    assert_eq!(
        read_exact_within(&mut client, 4, ms(500)).await.as_deref(),
        Some(&b"back"[..]),
        "B → A still passes"
    );
    assert!(
        read_exact_within(&mut server, 4, ms(300)).await.is_none(),
        "A → B is cut, nothing may arrive"
    );
    let healed = Instant::now();
    wan.heal(A, B).expect("heal");
    assert_eq!(
        read_exact_within(&mut server, 4, ms(500)).await.as_deref(),
        Some(&b"held"[..]),
        "held bytes arrive after the heal"
    );
    // The relay wakes up to 1 ms before a chunk is due (its timer rounding allowance), and its
    // own heal instant is a little after this one: one delay, less that allowance.
    assert!(healed.elapsed() >= ms(4), "one delay after the heal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_partition_stops_both_ways_and_new_connections_until_healed() {
    let wan = wan(ms(5), ms(5));
    let (mut client, mut server, relay, upstream) = connected(&wan).await;
    wan.partition(A, B).expect("partition");
    client.write_all(b"ping").await.expect("send");
    server.write_all(b"pong").await.expect("send");
    assert!(
        read_exact_within(&mut server, 4, ms(300)).await.is_none(),
        "A → B cut"
    );
    assert!(
        read_exact_within(&mut client, 4, ms(50)).await.is_none(),
        "B → A cut"
    );
    // A new connection is not carried upstream while the pair is cut.
    let _late = TcpStream::connect(relay.addr())
        .await
        .expect("accepted locally");
    assert!(
        timeout(ms(200), upstream.accept()).await.is_err(),
        "no upstream connect while cut"
    );
    wan.isolate(B);
    wan.heal_all();
    assert_eq!(
        read_exact_within(&mut server, 4, ms(500)).await.as_deref(),
        Some(&b"ping"[..])
    );
    assert_eq!(
        read_exact_within(&mut client, 4, ms(500)).await.as_deref(),
        Some(&b"pong"[..])
    );
    assert!(
        timeout(ms(500), upstream.accept()).await.is_ok(),
        "connected after the heal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_is_honoured_and_bytes_are_counted() {
    const TOTAL: usize = 2_000_000;
    const RATE: u64 = 1_000_000;
    let wan = wan(Duration::ZERO, Duration::ZERO);
    wan.set_shape(
        A,
        B,
        Shape {
            bandwidth: Some(RATE),
            ..Shape::default()
        },
    )
    .expect("shape");
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let chunk = vec![7u8; 10_000];
        for _ in 0..TOTAL / chunk.len() {
            client.write_all(&chunk).await.expect("send");
        }
        client
    });
    let got = read_exact_within(&mut server, TOTAL, ms(6000))
        .await
        .expect("all arrive");
    let took = start.elapsed();
    assert!(got.iter().all(|b| *b == 7));
    let expected = Duration::from_secs_f64(TOTAL as f64 / RATE as f64);
    let ratio = took.as_secs_f64() / expected.as_secs_f64();
    assert!(
        (0.9..=1.1).contains(&ratio),
        "2 MB at 1 MB/s took {took:?} ({ratio:.3} of {expected:?})"
    );
    let mut client = sender.await.expect("sender");
    // The other direction is not capped, and both are counted exactly.
    server.write_all(&[1u8; 12_345]).await.expect("reply");
    read_exact_within(&mut client, 12_345, ms(1000))
        .await
        .expect("reply arrives");
    // A chunk is counted just after it is written, so the reader may see it first.
    let deadline = Instant::now() + ms(2000);
    while wan.bytes(B, A) < 12_345 && Instant::now() < deadline {
        tokio::time::sleep(ms(5)).await;
    }
    assert_eq!(wan.bytes(A, B), TOTAL as u64);
    assert_eq!(wan.bytes(B, A), 12_345);
    assert_eq!(wan.counters().len(), 2);
}

/// Polls the WAN's captures until `done` holds for them (a chunk is handed to the capture just
/// after it is written, so a reader may see it first).
async fn captures_when(
    wan: &Wan,
    done: impl Fn(&[meridian_lab::wan::Capture]) -> bool,
) -> Vec<meridian_lab::wan::Capture> {
    let deadline = Instant::now() + ms(2000);
    loop {
        let c = wan.captures();
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(ms(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_is_off_by_default_and_stores_nothing() {
    let wan = wan(ms(1), ms(1));
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    client.write_all(b"ping").await.expect("send");
    read_exact_within(&mut server, 4, ms(500))
        .await
        .expect("arrives");
    server.write_all(b"pong").await.expect("send");
    read_exact_within(&mut client, 4, ms(500))
        .await
        .expect("arrives");
    assert!(wan.captures().is_empty());
    assert_eq!(wan.capture_stats(), None);
    assert_eq!((wan.bytes(A, B), wan.bytes(B, A)), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_stores_both_directions_exactly() {
    use meridian_lab::wan::Direction;
    let wan = wan(ms(1), ms(1));
    wan.enable_capture(1 << 20);
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    let request: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&request).await.expect("send");
    read_exact_within(&mut server, request.len(), ms(2000))
        .await
        .expect("arrives");
    server.write_all(b"the answer").await.expect("send");
    client.write_all(b"more").await.expect("send");
    read_exact_within(&mut client, 10, ms(500))
        .await
        .expect("arrives");
    read_exact_within(&mut server, 4, ms(500))
        .await
        .expect("arrives");
    let total = request.len() + 4 + 10;
    let c = captures_when(&wan, |c| {
        c.iter().map(|c| c.bytes.len()).sum::<usize>() == total
    })
    .await;
    assert_eq!(c.len(), 2, "one capture per direction");
    assert_eq!(c[0].connection, c[1].connection);
    assert_eq!(
        (c[0].from.as_str(), c[0].to.as_str(), c[0].direction),
        (A, B, Direction::Request)
    );
    assert_eq!(c[1].direction, Direction::Response);
    assert_eq!(c[0].bytes, [&request[..], b"more"].concat());
    assert_eq!(c[1].bytes, b"the answer");
    let stats = wan.capture_stats().expect("on");
    assert_eq!((stats.stored, stats.dropped), (total as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_honours_its_limit() {
    let wan = wan(ms(1), ms(1));
    wan.enable_capture(10);
    let (mut client, mut server, _relay, _l) = connected(&wan).await;
    client.write_all(b"12345678").await.expect("send");
    read_exact_within(&mut server, 8, ms(500))
        .await
        .expect("arrives");
    // Let the forward chunk reach the capture before the answer competes for the budget.
    captures_when(&wan, |c| c.first().is_some_and(|c| c.bytes.len() == 8)).await;
    server.write_all(b"abcdefgh").await.expect("send");
    read_exact_within(&mut client, 8, ms(500))
        .await
        .expect("arrives");
    let c = captures_when(&wan, |c| c.get(1).is_some_and(|c| !c.bytes.is_empty())).await;
    assert_eq!(c[0].bytes, b"12345678");
    assert_eq!(c[1].bytes, b"ab", "cut where the budget ran out");
    let deadline = Instant::now() + ms(1000);
    while wan.capture_stats().expect("on").dropped < 6 && Instant::now() < deadline {
        tokio::time::sleep(ms(5)).await;
    }
    let stats = wan.capture_stats().expect("on");
    assert_eq!((stats.limit, stats.stored, stats.dropped), (10, 10, 6));
    assert_eq!(wan.bytes(B, A), 8, "relaying is not limited by the capture");
}
