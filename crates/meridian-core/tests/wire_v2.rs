//! Version 2 of the replication wire format: any stream of messages decodes to the messages
//! that were encoded (the same ones version 1 delivers), every decode path refuses bad bytes
//! without panicking, and the metadata of a register write stays within its byte budget.

use bytes::Bytes;
use meridian_core::crdt::LwwRegister;
use meridian_core::hlc::Timestamp;
use meridian_core::record::{Record, Value};
use meridian_core::version::{Version, VersionVector};
use meridian_core::wire::{
    Entry, Frame, FrameDecoder, FrameEncoder, FrameV1, LogBody, OpPayload, encode_frame,
};
use proptest::prelude::*;

fn register(ts: u64, origin: &str, value: Option<&[u8]>, ct: &str) -> Record {
    let version = Version {
        ts: Timestamp(ts),
        origin: origin.into(),
    };
    Record {
        value: Value::Register(LwwRegister {
            value: value.map(Bytes::copy_from_slice),
            content_type: ct.into(),
            version: version.clone(),
        }),
        version,
        expires: None,
        home: None,
    }
}

fn op(origin: &str, seq: u64, key: &str, delta: Vec<u8>) -> Entry {
    Entry {
        origin: origin.into(),
        seq,
        body: LogBody::Op(OpPayload {
            keyspace: "notes".into(),
            key: key.into(),
            delta,
            prev: None,
            idempotency: None,
        }),
    }
}

/// Decodes a whole stream; panics on an error (the tests' valid streams).
fn decode_all(stream: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::default();
    d.push(stream);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().expect("a valid stream") {
        out.push(f);
    }
    assert!(d.pending().is_empty(), "the whole stream is frames");
    out
}

/// Decodes until the first error or the end; never panics, whatever the bytes.
fn decode_some(stream: &[u8]) -> usize {
    let mut d = FrameDecoder::default();
    d.push(stream);
    let mut n = 0;
    while let Ok(Some(_)) = d.next_frame() {
        n += 1;
    }
    n
}

/// A version 2 frame with the given payload after the version byte, as the first of a stream.
fn raw_v2(payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(0);
    out.push(1);
    out.extend_from_slice(payload);
    out
}

fn origin() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("us-east-1".to_string()),
        Just("eu-west-1".to_string()),
        Just("ap-southeast-1".to_string()),
        "[a-zé-]{0,6}",
    ]
}

fn version() -> impl Strategy<Value = Version> {
    (
        prop_oneof![any::<u64>(), 0u64..5, (1u64 << 56)..(1u64 << 56) + 100_000],
        origin(),
    )
        .prop_map(|(ts, origin)| Version {
            ts: Timestamp(ts),
            origin,
        })
}

fn delta(entry_origin: String) -> impl Strategy<Value = Vec<u8>> {
    let reg = (
        version(),
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        prop_oneof![
            Just("application/octet-stream".to_string()),
            Just(String::new()),
            ".{0,4}"
        ],
        proptest::option::of(any::<u64>()),
        proptest::option::of(origin()),
    )
        .prop_map(move |(mut v, own, value, ct, expires, home)| {
            if own {
                v.origin.clone_from(&entry_origin);
            }
            let mut r = register(v.ts.0, &v.origin, value.as_deref(), &ct);
            r.expires = expires.map(Timestamp);
            r.home = home;
            r.encode()
        });
    prop_oneof![
        3 => reg,
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        // A register whose own version differs from the record's: sent as raw bytes.
        1 => (version(), version()).prop_map(|(a, b)| {
            let mut r = register(a.ts.0, &a.origin, Some(b"x"), "t");
            r.version = b;
            r.encode()
        }),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (origin(), prop_oneof![1u64..20, any::<u64>()]).prop_flat_map(|(o, seq)| {
        let skip = proptest::collection::vec(origin(), 0..3)
            .prop_map(|allowed| LogBody::Skip { allowed })
            .boxed();
        let op = (
            prop_oneof![Just("notes".to_string()), ".{0,5}"],
            prop_oneof!["us-east-1\\.a\\.[0-9]{1,3}", ".{0,8}"],
            delta(o.clone()),
            proptest::option::of(version()),
            proptest::option::of((".{0,6}", proptest::collection::vec(any::<u8>(), 0..8))),
        )
            .prop_map(|(keyspace, key, delta, prev, idempotency)| {
                LogBody::Op(OpPayload {
                    keyspace,
                    key,
                    delta,
                    prev,
                    idempotency,
                })
            })
            .boxed();
        prop_oneof![1 => skip, 4 => op].prop_map(move |body| Entry {
            origin: o.clone(),
            seq,
            body,
        })
    })
}

/// Batches mostly contiguous per origin, as a source sends them, sometimes not at all.
fn batch() -> impl Strategy<Value = Vec<Entry>> {
    (proptest::collection::vec(entry(), 0..12), any::<bool>()).prop_map(|(mut es, contiguous)| {
        if contiguous {
            for i in 1..es.len() {
                if es[i].origin == es[i - 1].origin {
                    es[i].seq = es[i - 1].seq.wrapping_add(1);
                }
            }
        }
        es
    })
}

fn message() -> impl Strategy<Value = FrameV1> {
    prop_oneof![
        3 => batch().prop_map(FrameV1::Batch),
        1 => proptest::collection::btree_map(origin(), prop_oneof![0u64..1000, any::<u64>()], 0..4)
            .prop_map(|m| FrameV1::Heads(VersionVector::from(m))),
    ]
}

/// The messages of a version 3 stream: those of version 2 and watermarks.
fn message_v3() -> impl Strategy<Value = FrameV1> {
    prop_oneof![
        4 => message(),
        1 => (any::<u64>(), any::<u64>())
            .prop_map(|(at, seq)| FrameV1::Watermark { at: Timestamp(at), seq }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A stream of version 3 frames decodes to the messages encoded, watermarks among them.
    #[test]
    fn v3_streams_round_trip(messages in proptest::collection::vec(message_v3(), 1..8)) {
        let mut enc = FrameEncoder::default();
        let mut v3 = Vec::new();
        for m in &messages {
            v3.extend(enc.encode(&Frame::V3(m.clone())));
        }
        let got = decode_all(&v3);
        prop_assert!(got.iter().all(|f| f.version() == 3));
        let got: Vec<FrameV1> = got.into_iter().map(Frame::into_message).collect();
        prop_assert_eq!(&got, &messages);
    }

    /// A stream of version 2 frames decodes to the messages encoded, which are also what the
    /// same messages as version 1 frames decode to.
    #[test]
    fn v2_streams_round_trip_like_v1(messages in proptest::collection::vec(message(), 1..8)) {
        let mut enc = FrameEncoder::default();
        let (mut v1, mut v2) = (Vec::new(), Vec::new());
        for m in &messages {
            v1.extend(encode_frame(&Frame::V1(m.clone())));
            v2.extend(enc.encode(&Frame::V2(m.clone())));
        }
        let got1: Vec<FrameV1> = decode_all(&v1).into_iter().map(Frame::into_message).collect();
        let got2 = decode_all(&v2);
        prop_assert!(got2.iter().all(|f| f.version() == 2));
        let got2: Vec<FrameV1> = got2.into_iter().map(Frame::into_message).collect();
        prop_assert_eq!(&got2, &messages);
        prop_assert_eq!(&got1, &messages);
    }

    /// Arbitrary bytes after a version 2 header, and valid streams truncated or with one byte
    /// changed, are refused or decoded — never a panic.
    #[test]
    fn v2_decoding_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        messages in proptest::collection::vec(message(), 1..4),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        decode_some(&raw_v2(&junk));
        decode_some(&junk);
        let mut enc = FrameEncoder::default();
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend(enc.encode(&Frame::V2(m.clone())));
        }
        decode_some(&stream[..cut.index(stream.len())]);
        let mut mutated = stream.clone();
        let i = flip.index(mutated.len());
        mutated[i] ^= xor;
        decode_some(&mutated);
    }
}

#[test]
fn bad_v2_frames_are_refused_with_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (&[7], "unknown message kind"),
        (&[1, 1, 5, 3], "refers to string 5"),
        (&[1, 1, 0, 100], "more than"),
        (
            &[
                1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            "overflows",
        ),
        (&[0, 2], "unknown batch flags"),
        (&[0, 0, 1, 0, 2, b'e', b'u', 0, 0], "empty run"),
        (
            &[0, 0, 1, 0, 2, b'e', b'u', 0, 1, 0x44, 0],
            "skip entry with flags",
        ),
        (
            &[0, 0, 1, 0, 2, b'e', b'u', 0, 1, 0x41, 0, 0, 0],
            "raw entry with register flags",
        ),
        // One raw entry of 3 bytes whose values section holds 2.
        (
            &[0, 0, 1, 0, 2, b'e', b'u', 0, 1, 1, 0, 1, b'k', 3, 9, 9],
            "need 3",
        ),
        // A key whose suffix is not UTF-8.
        (
            &[0, 0, 1, 0, 2, b'e', b'u', 0, 1, 1, 0, 1, 0xff, 0],
            "not UTF-8",
        ),
        // A key reusing more of the previous key than there is.
        (
            &[0, 0, 1, 0, 2, b'e', b'u', 0, 1, 1, 4, 0, 0],
            "key prefix of 4, more than the limit 0",
        ),
        // Sequence numbers past u64::MAX.
        (
            &[
                0, 0, 1, 0, 2, b'e', b'u', 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
                2, 0, 0,
            ],
            "overflow",
        ),
        (&[0, 0, 1, 0], "ends in the middle"),
    ];
    for (payload, want) in cases {
        let mut d = FrameDecoder::default();
        d.push(&raw_v2(payload));
        let err = d.next_frame().expect_err("refused").to_string();
        assert!(err.contains(want), "{payload:?}: {err} (wanted {want})");
    }
    let mut d = FrameDecoder::default();
    d.push(&[0, 0, 0, 1, 0, 3]);
    let err = d.next_frame().expect_err("version 4").to_string();
    assert!(err.contains("protocol version 4"), "{err}");
}

/// A batch as the replication benchmark produces it: one origin's register writes of 256
/// random bytes, keys `us-east-1.a.N`, about two per HLC millisecond.
fn bench_like(first: u64, n: u64) -> Vec<Entry> {
    let base = Timestamp::from_parts(1_795_000_000_000, 0).0;
    (first..first + n)
        .map(|i| {
            let ts = base + (i / 2) * (1 << 16) + i % 2;
            let value: Vec<u8> = (0..256u64)
                .map(|j| (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8)
                .collect();
            let delta = register(ts, "us-east-1", Some(&value), "application/octet-stream");
            op("us-east-1", i, &format!("us-east-1.a.{i}"), delta.encode())
        })
        .collect()
}

/// The per-op byte budget of version 2 in the steady state of a stream: after the first batch
/// (which defines the strings), a batch of register writes costs per entry 1 flag byte, about
/// 3 of key (shared-prefix length, suffix length, 1–2 suffix bytes), 1 of timestamp and 2 of
/// value length; per batch 5 of frame header, 1 version, 1 kind, 1 flags, 1 run count and 3 of
/// run (origin, sequence delta, count); per heads frame with one changed origin 10 (5 header, 1 version, 1 kind, 1 count, 1
/// origin, 1 counter delta).
#[test]
fn register_writes_cost_a_few_bytes_beyond_key_and_value() {
    let mut enc = FrameEncoder::default();
    let mut dec = FrameDecoder::default();
    let first = enc.encode(&Frame::V2(FrameV1::Batch(bench_like(1, 8))));
    dec.push(&first);
    dec.next_frame().expect("valid").expect("complete");
    let mut per_batch = Vec::new();
    for b in 0..100u64 {
        let entries = bench_like(9 + b * 8, 8);
        let bytes = enc.encode(&Frame::V2(FrameV1::Batch(entries.clone())));
        dec.push(&bytes);
        let got = dec.next_frame().expect("valid").expect("complete");
        assert_eq!(got, Frame::V2(FrameV1::Batch(entries)));
        per_batch.push(bytes.len() - 8 * 256);
    }
    // 12 bytes per batch plus, per entry, 1 flag + 1 prefix + 1 suffix length + 1–3 suffix
    // bytes (a carry changes more digits) + 1 timestamp + 2 value length.
    let total: usize = per_batch.iter().sum();
    let per_op = total as f64 / 800.0;
    assert!(
        per_op <= 9.0,
        "metadata per op {per_op:.2} B: {per_batch:?}"
    );
    let mut vv = VersionVector::default();
    vv.add(&meridian_core::version::Dot {
        origin: "us-east-1".into(),
        counter: 808,
    });
    let heads = enc.encode(&Frame::V2(FrameV1::Heads(vv.clone())));
    vv.add(&meridian_core::version::Dot {
        origin: "us-east-1".into(),
        counter: 816,
    });
    let next = enc.encode(&Frame::V2(FrameV1::Heads(vv)));
    assert_eq!(
        heads.len(),
        11,
        "the first heads, with a counter of 2 bytes"
    );
    assert_eq!(next.len(), 10, "a heads frame with one origin moved by 8");
}

#[test]
fn compressible_values_are_compressed_and_random_ones_are_not() {
    let text: Vec<Entry> = (1..20)
        .map(|i| {
            let delta = register(i << 16, "eu", Some(&[b'a'; 300]), "text/plain");
            op("eu", i, &format!("k{i}"), delta.encode())
        })
        .collect();
    let mut enc = FrameEncoder::default();
    let bytes = enc.encode(&Frame::V2(FrameV1::Batch(text.clone())));
    assert!(bytes.len() < 19 * 300 / 4, "{} B", bytes.len());
    let random = bench_like(1, 20);
    let plain = enc.encode(&Frame::V2(FrameV1::Batch(random.clone())));
    assert!(plain.len() < 20 * 256 + 20 * 12, "{} B", plain.len());
    let mut stream = bytes;
    stream.extend(plain);
    let got: Vec<FrameV1> = decode_all(&stream)
        .into_iter()
        .map(Frame::into_message)
        .collect();
    assert_eq!(got, vec![FrameV1::Batch(text), FrameV1::Batch(random)]);
}

#[test]
fn a_stream_naming_too_many_origins_is_refused() {
    let mut enc = FrameEncoder::default();
    let mut stream = Vec::new();
    for chunk in 0..5u64 {
        let vv: std::collections::BTreeMap<String, u64> =
            (0..1000).map(|i| (format!("o{chunk}-{i}"), 1)).collect();
        stream.extend(enc.encode(&Frame::V2(FrameV1::Heads(VersionVector::from(vv)))));
    }
    let mut d = FrameDecoder::default();
    d.push(&stream);
    for _ in 0..4 {
        d.next_frame().expect("within the limit").expect("complete");
    }
    let err = d
        .next_frame()
        .expect_err("4,096 origins at most")
        .to_string();
    assert!(err.contains("more than 4096 origins"), "{err}");
}
