//! The replication wire format and the op-log entry format, versioned from the first byte.
//!
//! A stream between regions is a sequence of frames: `[length: u32 BE][flags: u8][payload]`,
//! where the payload is LZ4-compressed when `flags & 1`. The payload's first byte is the
//! protocol version, as the variant index of [`Frame`]: `0` is version 1, whose payload is
//! `postcard(Frame::V1)`; `1` is version 2, a compact encoding of the same messages whose frames
//! depend on the frames before them in the stream (see [`FrameEncoder`]); `2` is version 3, the
//! encoding of version 2 plus one message, [`FrameV1::Watermark`]. A new version is a new
//! variant that only peers advertising it are sent. Op-log entries on disk are
//! `[version: u8][postcard(LogBody)]`.

mod v2;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::hlc::Timestamp;
use crate::version::{Version, VersionVector};

/// Format byte of op-log entries written by this build.
pub const LOG_FORMAT_V1: u8 = 1;
/// Largest frame a peer may send (compressed or not); anything larger is refused.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Version 1 payloads at least this large are LZ4-compressed; version 2 compresses the values
/// section of a batch this large only when that makes it smaller.
pub const COMPRESS_FROM_BYTES: usize = 256;
/// The protocol versions this build speaks, oldest first.
pub const VERSIONS: [u8; 3] = [1, 2, 3];
pub use v2::{MAX_BATCH_ENTRIES, MAX_DICT_STRING_BYTES, MAX_DICT_STRINGS, MAX_ORIGINS};
const FLAG_LZ4: u8 = 1;
const HEADER_BYTES: usize = 5;

/// A write's effect, as its origin logged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpPayload {
    /// Keyspace of the key.
    pub keyspace: String,
    /// The key.
    pub key: String,
    /// The delta record (`Record::encode`) to merge into the receiver's state.
    pub delta: Vec<u8>,
    /// The version the write replaced at its origin (`None` when the key was absent): a
    /// receiver holding a newer version the origin had not seen has found a concurrent write.
    pub prev: Option<Version>,
    /// The idempotency outcome stored with the write, so a retry in another region is
    /// recognised: (idempotency key, encoded outcome).
    pub idempotency: Option<(String, Vec<u8>)>,
}

/// One entry of an origin's op log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogBody {
    /// A write to merge.
    Op(OpPayload),
    /// A write the receiving region may not hold (a pinned key): only its place in the origin's
    /// sequence, so version vectors stay contiguous. It names the regions that may hold it —
    /// never the key, the value or a digest of either.
    Skip {
        /// Regions allowed to hold the skipped write.
        allowed: Vec<String>,
    },
}

/// An op-log entry with its position: the `seq`-th write of `origin`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Region where the write was made.
    pub origin: String,
    /// Its sequence number at the origin, from 1, contiguous.
    pub seq: u64,
    /// What it is.
    pub body: LogBody,
}

/// Version 1 of the replication protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameV1 {
    /// Entries, in sequence order per origin.
    Batch(Vec<Entry>),
    /// The sender's applied version vector: progress, and a keepalive on an idle stream.
    Heads(VersionVector),
    /// The sender's watermark: every write the sender itself made with an HLC time before `at`
    /// is one of its writes `1..=seq`, and it makes no more before `at`. Sent only on streams of
    /// version 3 (a peer of an older version cannot read it); what garbage collection of
    /// expired records waits for.
    Watermark {
        /// Nothing more of the sender's is stamped before this time.
        at: Timestamp,
        /// The sender's last write stamped before `at` is at most its `seq`-th.
        seq: u64,
    },
}

/// Version 2 of the replication protocol carries the messages of version 1; only their
/// encoding differs (see [`FrameEncoder`]).
pub type FrameV2 = FrameV1;

/// Version 3 of the replication protocol: the encoding of version 2, which may also carry
/// [`FrameV1::Watermark`].
pub type FrameV3 = FrameV1;

/// A frame of the replication stream; the variant is the protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Protocol version 1.
    V1(FrameV1),
    /// Protocol version 2.
    V2(FrameV2),
    /// Protocol version 3.
    V3(FrameV3),
}

impl Frame {
    /// The message `message` as a frame of protocol `version` (1, 2 or 3; any other is 1).
    pub fn of_version(version: u8, message: FrameV1) -> Frame {
        match version {
            3 => Frame::V3(message),
            2 => Frame::V2(message),
            _ => Frame::V1(message),
        }
    }

    /// The protocol version of the frame (1, 2 or 3).
    pub fn version(&self) -> u8 {
        match self {
            Frame::V1(_) => 1,
            Frame::V2(_) => 2,
            Frame::V3(_) => 3,
        }
    }

    /// The message, whatever the version that carried it.
    pub fn into_message(self) -> FrameV1 {
        match self {
            Frame::V1(m) | Frame::V2(m) | Frame::V3(m) => m,
        }
    }
}

/// Decodes one postcard value that must fill `bytes` exactly: input with bytes left over after
/// the value is refused, as a truncated one is, so two different inputs never decode to the same
/// value. `what` names the input in the error.
pub fn from_postcard_exact<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, Error> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::Decode {
        message: format!("{what} is malformed: {e}"),
    })?;
    if !rest.is_empty() {
        return Err(Error::Decode {
            message: format!("{what}: {} unexpected bytes after the value", rest.len()),
        });
    }
    Ok(value)
}

/// Encodes an op-log entry body for the store.
pub fn encode_log_body(body: &LogBody) -> Vec<u8> {
    let mut out = vec![LOG_FORMAT_V1];
    // invariant: postcard serialization of these plain structs into a Vec cannot fail
    out.extend(postcard::to_stdvec(body).unwrap_or_default());
    out
}

/// Decodes an op-log entry body; refuses unknown format bytes.
pub fn decode_log_body(bytes: &[u8]) -> Result<LogBody, Error> {
    match bytes.split_first() {
        Some((&LOG_FORMAT_V1, rest)) => from_postcard_exact(rest, "op-log entry"),
        Some((v, _)) => Err(Error::Decode {
            message: format!("op-log entry format {v}; this build reads format {LOG_FORMAT_V1}"),
        }),
        None => Err(Error::Decode {
            message: "empty op-log entry".into(),
        }),
    }
}

/// Encodes a frame with its length header, as the first frame of a stream: exact for version 1
/// frames, which never depend on the frames before them; a stream of version 2 frames needs one
/// [`FrameEncoder`] for all of them.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    FrameEncoder::default().encode(frame)
}

/// Encodes the frames of one stream, in order. Version 2 frames are encoded against what the
/// frames before them on this encoder sent (strings, the last timestamp, key and sequence
/// number per origin, the last heads), so they decode only on a [`FrameDecoder`] that has read
/// exactly those frames before, in order. Version 1 frames are the same bytes whatever came
/// before, and do not change what later version 2 frames are encoded against.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    v2: v2::Context,
}

impl FrameEncoder {
    /// The frame with its header. Version 1 payloads are LZ4-compressed from
    /// [`COMPRESS_FROM_BYTES`]; version 2 payloads never are as a whole (a batch compresses its
    /// values section itself, when that pays).
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let (flags, payload) = match frame {
            Frame::V1(m) => {
                // invariant: postcard serialization of these plain structs into a Vec cannot fail
                let plain = postcard::to_extend(m, vec![0]).unwrap_or_default();
                if plain.len() >= COMPRESS_FROM_BYTES {
                    (FLAG_LZ4, lz4_flex::compress_prepend_size(&plain))
                } else {
                    (0, plain)
                }
            }
            Frame::V2(m) | Frame::V3(m) => {
                let mut plain = vec![frame.version() - 1];
                plain.extend(self.v2.encode(m));
                (0, plain)
            }
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&payload);
        out
    }
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces. One decoder reads
/// one stream: it remembers what version 2 frames refer back to.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    v2: v2::Context,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. An error (oversized,
    /// unknown flags, corrupt payload) means the stream cannot be trusted any further.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        let Some(plain) = self.next_plain()? else {
            return Ok(None);
        };
        match plain.split_first() {
            Some((0, rest)) => from_postcard_exact(rest, "frame").map(|m| Some(Frame::V1(m))),
            Some((1, rest)) => self.v2.decode(rest, false).map(|m| Some(Frame::V2(m))),
            Some((2, rest)) => self.v2.decode(rest, true).map(|m| Some(Frame::V3(m))),
            Some((v, _)) => Err(Error::Decode {
                message: format!(
                    "frame of protocol version {}; this build speaks versions 1 to 3",
                    u16::from(*v) + 1
                ),
            }),
            None => Err(Error::Decode {
                message: "empty frame payload".into(),
            }),
        }
    }

    /// The next complete frame's plain payload — decompressed when the frame was, not yet
    /// decoded — or `Ok(None)` if more bytes are needed. Consumes the frame without decoding
    /// it, so a version 2 frame after it may no longer decode with [`FrameDecoder::next_frame`]. An error
    /// (oversized, unknown flags, corrupt compression) means the stream cannot be trusted any
    /// further; a payload returned here may still fail to decode as a [`Frame`].
    pub fn next_plain(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Some(header) = self.buf.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let flags = header[4];
        if len > MAX_FRAME_BYTES {
            return Err(Error::Decode {
                message: format!("frame of {len} bytes; the limit is {MAX_FRAME_BYTES}"),
            });
        }
        if flags & !FLAG_LZ4 != 0 {
            return Err(Error::Decode {
                message: format!("unknown frame flags {flags:#04x}"),
            });
        }
        if self.buf.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self
            .buf
            .drain(..HEADER_BYTES + len)
            .skip(HEADER_BYTES)
            .collect();
        if flags & FLAG_LZ4 == 0 {
            return Ok(Some(payload));
        }
        let declared = payload
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b) as usize)
            .unwrap_or(usize::MAX);
        if declared > MAX_FRAME_BYTES {
            return Err(Error::Decode {
                message: format!("frame decompresses to {declared} bytes; too large"),
            });
        }
        lz4_flex::decompress_size_prepended(&payload)
            .map(Some)
            .map_err(|e| Error::Decode {
                message: format!("frame decompression: {e}"),
            })
    }

    /// Bytes received but not yet consumed as frames (an incomplete frame, or what follows a
    /// frame that failed).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;

    fn sample() -> Frame {
        Frame::V1(FrameV1::Batch(vec![
            Entry {
                origin: "eu-west-1".into(),
                seq: 7,
                body: LogBody::Op(OpPayload {
                    keyspace: "orders".into(),
                    key: "o1".into(),
                    delta: vec![1, 2, 3],
                    prev: Some(Version {
                        ts: Timestamp(42),
                        origin: "us-east-1".into(),
                    }),
                    idempotency: None,
                }),
            },
            Entry {
                origin: "eu-west-1".into(),
                seq: 8,
                body: LogBody::Skip {
                    allowed: vec!["eu-west-1".into()],
                },
            },
        ]))
    }

    fn sample_entry() -> Entry {
        match sample().into_message() {
            FrameV1::Batch(mut entries) => entries.remove(0),
            _ => unreachable!("sample() is a batch"),
        }
    }

    #[test]
    fn golden_bytes_of_version_1() {
        let bytes = encode_frame(&sample());
        let expected: &[u8] = &[
            0, 0, 0, 65, 0, 0, 0, 2, 9, b'e', b'u', b'-', b'w', b'e', b's', b't', b'-', b'1', 7, 0,
            6, b'o', b'r', b'd', b'e', b'r', b's', 2, b'o', b'1', 3, 1, 2, 3, 1, 42, 9, b'u', b's',
            b'-', b'e', b'a', b's', b't', b'-', b'1', 0, 9, b'e', b'u', b'-', b'w', b'e', b's',
            b't', b'-', b'1', 8, 1, 1, 9, b'e', b'u', b'-', b'w', b'e', b's', b't', b'-', b'1',
        ];
        assert_eq!(
            bytes, expected,
            "version 1 frames must keep these exact bytes"
        );
    }

    #[test]
    fn frames_survive_any_split_and_compression() {
        let big = Frame::V1(FrameV1::Batch(
            (1..200)
                .map(|seq| Entry {
                    origin: "us-east-1".into(),
                    seq,
                    body: LogBody::Skip {
                        allowed: vec!["us-east-1".into()],
                    },
                })
                .collect(),
        ));
        let mut stream = encode_frame(&sample());
        let compressed = encode_frame(&big);
        assert_eq!(compressed[4], FLAG_LZ4, "a large frame is compressed");
        stream.extend(&compressed);
        for split in [1, 3, 7, 64, stream.len()] {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                d.push(piece);
                while let Some(f) = d.next_frame().expect("valid stream") {
                    got.push(f);
                }
            }
            assert_eq!(got, vec![sample(), big.clone()], "split {split}");
        }
    }

    #[test]
    fn plain_payloads_are_the_decompressed_postcard_bytes() {
        let big = FrameV1::Batch(vec![sample_entry(); 50]);
        let compressed = encode_frame(&Frame::V1(big.clone()));
        assert_eq!(compressed[4], FLAG_LZ4, "a large frame is compressed");
        let mut stream = compressed.clone();
        stream.extend(encode_frame(&sample()));
        let mut d = FrameDecoder::default();
        d.push(&stream[..stream.len() - 1]);
        let first = d.next_plain().expect("valid").expect("complete");
        assert_eq!(first, postcard::to_extend(&big, vec![0]).expect("encode"));
        assert_eq!(d.next_plain().expect("valid"), None, "one byte short");
        assert_eq!(d.pending().len(), stream.len() - 1 - compressed.len());
        d.push(&stream[stream.len() - 1..]);
        let second = d.next_plain().expect("valid").expect("complete");
        let sample = sample().into_message();
        assert_eq!(
            second,
            postcard::to_extend(&sample, vec![0]).expect("encode")
        );
    }

    #[test]
    fn bad_frames_are_refused_not_panicked_on() {
        let mut d = FrameDecoder::default();
        d.push(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert!(d.next_frame().is_err(), "oversized");
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 0, 1, 0x80, 0]);
        assert!(d.next_frame().is_err(), "unknown flags");
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 0, 3, 0, 9, 9, 9]);
        assert!(d.next_frame().is_err(), "garbage payload");
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 0, 8, 1, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4]);
        assert!(d.next_frame().is_err(), "lying decompressed size");
    }

    /// A version 1 frame or an op-log entry with a byte after its value is refused: the same
    /// message must not arrive as two different byte strings.
    #[test]
    fn bytes_after_a_value_are_refused() {
        let Frame::V1(m) = sample() else {
            unreachable!("sample is a version 1 frame")
        };
        let mut plain = postcard::to_extend(&m, vec![0]).expect("encode");
        plain.push(0);
        let mut framed = (plain.len() as u32).to_be_bytes().to_vec();
        framed.push(0);
        framed.extend(&plain);
        let mut d = FrameDecoder::default();
        d.push(&framed);
        let err = d.next_frame().expect_err("trailing byte").to_string();
        assert!(err.contains("1 unexpected bytes"), "{err}");

        let mut entry = encode_log_body(&LogBody::Skip {
            allowed: vec!["a".into()],
        });
        entry.extend([1, 2]);
        let err = decode_log_body(&entry).expect_err("trailing").to_string();
        assert!(err.contains("op-log entry: 2 unexpected bytes"), "{err}");
    }

    /// A watermark travels on version 3 streams; the same bytes under a version 2 header are
    /// refused, as a peer of version 2 refuses them.
    #[test]
    fn watermarks_are_version_3_only() {
        let mark = FrameV1::Watermark {
            at: Timestamp(1 << 40),
            seq: 300,
        };
        let bytes = FrameEncoder::default().encode(&Frame::V3(mark.clone()));
        assert_eq!(bytes[HEADER_BYTES], 2, "version 3 is variant 2");
        let mut d = FrameDecoder::default();
        d.push(&bytes);
        assert_eq!(d.next_frame().expect("valid"), Some(Frame::V3(mark)));
        let mut as_v2 = bytes.clone();
        as_v2[HEADER_BYTES] = 1;
        let mut d = FrameDecoder::default();
        d.push(&as_v2);
        let err = d
            .next_frame()
            .expect_err("no watermark in version 2")
            .to_string();
        assert!(err.contains("unknown message kind 2"), "{err}");
        let mut v4 = bytes;
        v4[HEADER_BYTES] = 3;
        let mut d = FrameDecoder::default();
        d.push(&v4);
        let err = d.next_frame().expect_err("version 4").to_string();
        assert!(err.contains("protocol version 4"), "{err}");
    }

    #[test]
    fn log_bodies_round_trip_and_refuse_unknown_versions() {
        let body = LogBody::Skip {
            allowed: vec!["a".into()],
        };
        let bytes = encode_log_body(&body);
        assert_eq!(decode_log_body(&bytes).ok(), Some(body));
        assert!(decode_log_body(&[2, 0]).is_err());
        assert!(decode_log_body(&[]).is_err());
    }
}
