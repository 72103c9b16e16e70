//! The two messages of the gRPC health-checking protocol (`grpc.health.v1.Health/Check`), which
//! an edge's probes send to backends of HTTP/2 regions when `[health] grpc_service` is set: the
//! request it sends and the serving status it reads back. Each travels as one gRPC message (a
//! 5-byte prefix: compression flag, big-endian length) holding a protobuf message of one field,
//! encoded and decoded here by hand — two fields do not justify a protobuf code generator.

use crate::Error;

/// The method a probe calls.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Largest answer read: a `HealthCheckResponse` is a few bytes.
pub const MAX_ANSWER: usize = 1024;

/// A backend's serving status (`HealthCheckResponse.ServingStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingStatus {
    /// `UNKNOWN` (0, also an empty message).
    Unknown,
    /// `SERVING` (1): the only healthy answer.
    Serving,
    /// `NOT_SERVING` (2).
    NotServing,
    /// `SERVICE_UNKNOWN` (3): the server does not know the service asked about.
    ServiceUnknown,
    /// A value this protocol version does not define.
    Other(u64),
}

/// The body of a check of `service` (`""`: the server as a whole): one uncompressed gRPC
/// message holding `HealthCheckRequest { service }`.
pub fn check_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        message.push(0x0a);
        varint(service.len() as u64, &mut message);
        message.extend_from_slice(service.as_bytes());
    }
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    // A service name longer than 4 GiB cannot be configured (the topology limits it).
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&message);
    out
}

/// The serving status in `body`, a check's answer: exactly one uncompressed gRPC message holding
/// a `HealthCheckResponse`. Unknown fields are skipped, as protobuf requires; anything else
/// (a compressed or cut-short message, trailing bytes, a malformed field) is an error.
pub fn serving_status(body: &[u8]) -> Result<ServingStatus, Error> {
    let bad = |message: &str| Error::GrpcHealth {
        message: message.to_string(),
    };
    let [flag, l0, l1, l2, l3, message @ ..] = body else {
        return Err(bad("shorter than a gRPC message prefix (5 bytes)"));
    };
    if *flag != 0 {
        return Err(bad(
            "the message is compressed; ask without grpc-accept-encoding",
        ));
    }
    let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    if message.len() != len {
        return Err(bad(&format!(
            "the prefix announces {len} bytes, the body has {}",
            message.len()
        )));
    }
    let mut status = 0u64;
    let mut rest = message;
    while !rest.is_empty() {
        let key = read_varint(&mut rest).ok_or_else(|| bad("a field key is cut short"))?;
        match (key >> 3, key & 7) {
            (1, 0) => {
                status = read_varint(&mut rest).ok_or_else(|| bad("the status is cut short"))?;
            }
            (_, 0) => {
                read_varint(&mut rest).ok_or_else(|| bad("a varint field is cut short"))?;
            }
            (_, 1) => {
                rest = rest
                    .get(8..)
                    .ok_or_else(|| bad("a 64-bit field is cut short"))?
            }
            (_, 5) => {
                rest = rest
                    .get(4..)
                    .ok_or_else(|| bad("a 32-bit field is cut short"))?
            }
            (_, 2) => {
                let n = read_varint(&mut rest)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad("a field length is cut short"))?;
                rest = rest.get(n..).ok_or_else(|| bad("a field is cut short"))?;
            }
            (_, wire) => return Err(bad(&format!("wire type {wire} is not valid here"))),
        }
    }
    Ok(match status {
        0 => ServingStatus::Unknown,
        1 => ServingStatus::Serving,
        2 => ServingStatus::NotServing,
        3 => ServingStatus::ServiceUnknown,
        n => ServingStatus::Other(n),
    })
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint off the front of `bytes`; `None` when cut short or longer than ten bytes.
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes of the messages as grpc-go and tonic send them.
    #[test]
    fn messages_match_the_wire_of_real_servers() {
        assert_eq!(check_request(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            check_request("shop.Cart"),
            [
                0, 0, 0, 0, 11, 0x0a, 9, b's', b'h', b'o', b'p', b'.', b'C', b'a', b'r', b't'
            ]
        );
        let ok = [0, 0, 0, 0, 2, 0x08, 1];
        assert_eq!(serving_status(&ok).unwrap(), ServingStatus::Serving);
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 2, 0x08, 2]).unwrap(),
            ServingStatus::NotServing
        );
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 0]).unwrap(),
            ServingStatus::Unknown,
            "proto3 leaves a zero status out"
        );
        // An unknown field (2, length-delimited) before the status is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]).unwrap(),
            ServingStatus::Serving
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for body in [
            &[][..],
            &[0, 0, 0, 0],
            &[1, 0, 0, 0, 2, 0x08, 1],
            &[0, 0, 0, 0, 3, 0x08, 1],
            &[0, 0, 0, 0, 1, 0x08],
            &[0, 0, 0, 0, 2, 0x0b, 1],
            &[0, 0, 0, 0, 3, 0x12, 5, 1],
        ] {
            assert!(serving_status(body).is_err(), "{body:?}");
        }
    }

    proptest! {
        /// No answer makes the decoder panic or loop.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = serving_status(&body);
        }

        /// A request's prefix announces exactly the message it carries, whose one field is the
        /// service name.
        #[test]
        fn requests_frame_the_service(service in "[a-zA-Z0-9._]{0,300}") {
            let body = check_request(&service);
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            prop_assert_eq!(body[0], 0);
            prop_assert_eq!(len, body.len() - 5);
            prop_assert!(body.ends_with(service.as_bytes()));
        }

        /// Every status value comes back as written, whatever its varint length.
        #[test]
        fn statuses_round_trip(status in any::<u64>()) {
            let mut message = vec![0x08];
            varint(status, &mut message);
            let mut body = vec![0, 0, 0, 0, message.len() as u8];
            body.extend(&message);
            let want = match status {
                0 => ServingStatus::Unknown,
                1 => ServingStatus::Serving,
                2 => ServingStatus::NotServing,
                3 => ServingStatus::ServiceUnknown,
                n => ServingStatus::Other(n),
            };
            prop_assert_eq!(serving_status(&body).unwrap(), want);
        }
    }
}
