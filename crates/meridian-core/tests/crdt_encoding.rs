//! The stored record format: golden bytes of format 1, round trips, and decoding that never
//! panics on arbitrary or corrupted input.

use bytes::Bytes;
use meridian_core::hlc::Timestamp;
use meridian_core::op::{Op, WriteMeta, apply};
use meridian_core::record::Record;
use meridian_core::version::{Version, VersionVector};
use meridian_core::{Error, KeyspaceType};
use proptest::prelude::*;

fn meta(ts: u64, origin: &str) -> WriteMeta {
    WriteMeta {
        version: Version {
            ts: Timestamp(ts),
            origin: origin.into(),
        },
        expires: Some(Timestamp(ts + 1000)),
        home: Some(origin.into()),
        floor: Default::default(),
    }
}

fn put(body: &str) -> Op {
    Op::Put {
        value: Bytes::from(body.to_owned()),
        content_type: "text/plain".into(),
        context: None,
    }
}

/// One record of each type, each built from a few writes in two regions.
fn samples() -> Vec<Record> {
    let plans: [(KeyspaceType, Vec<Op>); 5] = [
        (
            KeyspaceType::Register,
            vec![put("hello"), Op::Delete { context: None }],
        ),
        (KeyspaceType::MvRegister, vec![put("a"), put("b"), put("c")]),
        (
            KeyspaceType::Counter,
            vec![
                Op::Incr { by: 5 },
                Op::Delete { context: None },
                Op::Incr { by: -7 },
            ],
        ),
        (
            KeyspaceType::Set,
            vec![
                Op::Add {
                    members: vec!["x".into(), "y".into()],
                },
                Op::Remove {
                    members: vec!["x".into()],
                },
                put(r#"["z","y"]"#),
            ],
        ),
        (
            KeyspaceType::Map,
            vec![
                put(r#"{"a":{"deep":[1,2.5,"s",null]},"b":true}"#),
                Op::Patch {
                    fields: serde_json::json!({"a": null, "c": 3})
                        .as_object()
                        .cloned()
                        .expect("object"),
                },
            ],
        ),
    ];
    plans
        .into_iter()
        .map(|(kind, ops)| {
            let mut state: Option<Record> = None;
            for (i, op) in ops.iter().enumerate() {
                let origin = if i % 2 == 0 { "eu-west-1" } else { "us-east-1" };
                let delta = apply(kind, state.as_ref(), op, &meta(10 + i as u64, origin))
                    .expect("valid op");
                match &mut state {
                    Some(s) => s.merge(&delta).expect("same kind"),
                    None => state = Some(delta),
                }
            }
            state.expect("at least one op")
        })
        .collect()
}

#[test]
fn every_type_round_trips() {
    for r in samples() {
        let bytes = r.encode();
        assert_eq!(bytes[0], 1, "format byte");
        assert_eq!(Record::decode(&bytes).expect("round trip"), r);
    }
}

/// Format 1 is a contract with every disk and peer: these bytes must keep decoding.
#[test]
fn golden_bytes_of_format_1() {
    let origin = b"us-east-1";
    let mut golden = vec![1u8, 0, 0, 0]; // format 1, Value::Register, value None, content type ""
    golden.extend([11, 9]); // register version: ts 11 (varint), origin length 9
    golden.extend(origin);
    golden.extend([11, 9]); // record version
    golden.extend(origin);
    golden.extend([1, 0xF3, 0x07]); // expires: Some(1011) as a varint
    golden.extend([1, 9]); // home: Some, length 9
    golden.extend(origin);
    let r = &samples()[0];
    assert_eq!(r.encode(), golden);
    assert_eq!(Record::decode(&golden).expect("decodes"), *r);
}

#[test]
fn context_tokens_from_records_parse_back() {
    for r in samples() {
        if let meridian_core::record::Value::MvRegister(m) = &r.value {
            let token = m.context().to_token();
            assert_eq!(
                &VersionVector::parse_token(&token).expect("own token"),
                m.context()
            );
        }
    }
}

proptest! {
    #[test]
    fn decode_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Record::decode(&bytes);
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&bytes);
        if let Ok(r) = Record::decode(&v1) {
            prop_assert_eq!(Record::decode(&r.encode()).expect("re-encodes"), r);
        }
    }

    #[test]
    fn corrupted_records_never_panic(which in 0usize..5, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut bytes = samples()[which].encode();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let end = cut.index(bytes.len() + 1);
        for input in [&bytes[..], &bytes[..end]] {
            match Record::decode(input) {
                Ok(r) => {
                    // Whatever decodes is a well-formed record: it re-encodes and merges.
                    prop_assert_eq!(Record::decode(&r.encode()).expect("re-encodes"), r.clone());
                    let mut m = r.clone();
                    m.merge(&r).expect("same kind");
                    let _ = r.is_live(Timestamp(12));
                    if let meridian_core::record::Value::Map(map) = &r.value {
                        let _ = map.to_json();
                    }
                }
                Err(Error::Decode { message }) => prop_assert!(!message.is_empty()),
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
