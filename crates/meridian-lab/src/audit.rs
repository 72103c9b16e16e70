//! The residency audit: pinned "canary" values searched for in every place they must not be —
//! the data directories of regions outside their zone, and the bytes the WAN emulator captured
//! on the way into those regions.
//!
//! The searching is pure ([`search_bytes`], [`search_stream`]); only [`search_dir`] (and
//! [`audit`], through it) reads files.
//!
//! What is searched, and what is not:
//! - Files: every regular file under a directory, raw, read in bounded blocks. fjall compresses
//!   the SST blocks of every level but level 0 with LZ4 by default, so each block header found
//!   in a file (`LSM\x03`, type, checksum, `data_length`, `uncompressed_length`, header
//!   checksum) whose lengths differ is also decompressed and searched. Not decoded: journal values of 4 KiB or more (fjall compresses those per value in
//!   the journal), and blob files of key-value separation (off by default). A canary that only
//!   lives in those is missed here; the lab also asks each region's API for every canary.
//! - Captured links: the raw bytes, then the stream as it is carried — HTTP/1.1 messages, their
//!   bodies (chunked or sized), and each body as replication frames, decompressed; version 2
//!   frames (whose keys share prefixes with the key before and whose values may be compressed
//!   on their own) are also decoded and searched in their version 1 form. A frame cut short (a
//!   capture stopped by its budget) is searched raw only; bodies with a `Content-Encoding` are
//!   searched as they are.
//!
//! All needles are looked for in one pass (an Aho-Corasick automaton), so the cost is linear in
//! the bytes searched whatever the number of canaries.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use meridian_core::wire::{Frame, FrameDecoder, encode_frame};

use crate::error::LabError;
use crate::report::model::{Finding, Residency};
use crate::wan::Capture;

/// Bytes of a file read at once (plus the overlap carried from the previous block).
const BLOCK_BYTES: usize = 1024 * 1024;
/// The magic bytes opening every fjall (lsm-tree 3) block header.
const LSM_BLOCK_MAGIC: &[u8] = b"LSM\x03";
/// Size of an lsm-tree 3 block header: magic 4, type 1, checksum 16, data length 4,
/// uncompressed length 4, header checksum 4.
const LSM_HEADER_BYTES: usize = 33;
/// Largest block (compressed or not) worth decompressing; larger declared sizes are not
/// fjall blocks.
const LSM_MAX_BLOCK_BYTES: u32 = 16 * 1024 * 1024;

/// A pinned value written by the lab, to be looked for outside its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// The residency zone of its keyspace.
    pub zone: String,
    /// The key it was written to.
    pub key: String,
    /// The unique bytes to look for (an empty needle is never reported found).
    pub needle: Vec<u8>,
    /// The regions of its zone: the only places it may be.
    pub allowed: Vec<String>,
}

/// A needle found in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirHit {
    /// Index of the needle in the slice searched for.
    pub needle: usize,
    /// The file it was found in.
    pub file: PathBuf,
}

/// The outcome of [`search_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirHits {
    /// Each needle found, once per file it was found in, sorted.
    pub hits: Vec<DirHit>,
    /// Regular files searched.
    pub files: u64,
    /// Bytes read from those files.
    pub bytes: u64,
    /// LZ4-compressed fjall blocks decompressed and searched as well.
    pub blocks_decompressed: u64,
}

/// Indices (sorted, once each) of the non-empty needles that occur in `bytes`.
pub fn search_bytes(bytes: &[u8], needles: &[&[u8]]) -> Vec<usize> {
    let mut found = BTreeSet::new();
    add_found(&mut found, &finders(needles), bytes);
    found.into_iter().collect()
}

/// Every non-empty needle in one automaton, with the needle index of each of its patterns.
struct Finders {
    automaton: AhoCorasick,
    index: Vec<usize>,
}

fn finders(needles: &[&[u8]]) -> Finders {
    let (index, patterns): (Vec<usize>, Vec<&[u8]>) = needles
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
        .map(|(i, n)| (i, *n))
        .unzip();
    Finders {
        // invariant: building fails only past 2^31 patterns or a configured size limit; the
        // default builder has no size limit and the lab has thousands of canaries at most.
        automaton: AhoCorasick::new(&patterns).expect("an automaton of the needles"),
        index,
    }
}

fn add_found(found: &mut BTreeSet<usize>, finders: &Finders, hay: &[u8]) {
    for m in finders.automaton.find_overlapping_iter(hay) {
        found.insert(finders.index[m.pattern().as_usize()]);
    }
}

/// Walks every regular file under `dir` (recursively; symbolic links are not followed) and
/// reports which needles occur in which file. Files are streamed in blocks of 1 MiB, so memory
/// stays bounded whatever their size, and a needle across a block boundary is still found. LZ4
/// blocks of fjall SST files are also searched decompressed (see the module docs for what is
/// not). A file deleted while the walk runs is skipped; any other I/O failure is an error
/// naming the path.
pub fn search_dir(dir: &Path, needles: &[&[u8]]) -> Result<DirHits, LabError> {
    let finders = finders(needles);
    let overlap = needles
        .iter()
        .map(|n| n.len())
        .chain([LSM_BLOCK_MAGIC.len()])
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let mut out = DirHits::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound && path != dir => continue,
            Err(source) => return Err(io(&path, "reading the metadata of", source)),
        };
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|source| io(&path, "listing the directory", source))?;
            for entry in entries {
                let entry = entry.map_err(|source| io(&path, "listing the directory", source))?;
                pending.push(entry.path());
            }
        } else if meta.is_file() {
            let mut found = BTreeSet::new();
            match search_file(&path, &finders, overlap, &mut found, &mut out) {
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(source) => return Err(io(&path, "reading", source)),
                Ok(()) => {}
            }
            out.files += 1;
            out.hits.extend(found.into_iter().map(|needle| DirHit {
                needle,
                file: path.clone(),
            }));
        }
    }
    out.hits.sort();
    Ok(out)
}

fn io(path: &Path, what: &str, source: std::io::Error) -> LabError {
    LabError::Io {
        what: format!("{what} {} for the residency audit", path.display()),
        source,
    }
}

fn search_file(
    path: &Path,
    finders: &Finders,
    overlap: usize,
    found: &mut BTreeSet<usize>,
    out: &mut DirHits,
) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let magic = memchr::memmem::Finder::new(LSM_BLOCK_MAGIC);
    let mut window: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + overlap);
    // File offset of `window[0]`.
    let mut start: u64 = 0;
    let mut blocks = BTreeSet::new();
    let mut buf = vec![0u8; BLOCK_BYTES];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.bytes += n as u64;
        window.extend_from_slice(&buf[..n]);
        add_found(found, finders, &window);
        for at in magic.find_iter(&window) {
            blocks.insert(start + at as u64);
        }
        let keep = window.len().min(overlap);
        let drop = window.len() - keep;
        window.drain(..drop);
        start += drop as u64;
    }
    for at in blocks {
        if let Some(plain) = read_lz4_block(&mut file, at)? {
            out.blocks_decompressed += 1;
            add_found(found, finders, &plain);
        }
    }
    Ok(())
}

/// The decompressed content of an LZ4-compressed fjall block whose header starts at `at`, or
/// `None` when the bytes there are not one (a stray magic, a plain block, a bad length).
fn read_lz4_block(file: &mut File, at: u64) -> std::io::Result<Option<Vec<u8>>> {
    file.seek(SeekFrom::Start(at))?;
    let mut header = [0u8; LSM_HEADER_BYTES];
    if read_full(file, &mut header)? < LSM_HEADER_BYTES {
        return Ok(None);
    }
    let le =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (data_len, plain_len) = (le(21), le(25));
    if data_len == plain_len
        || data_len == 0
        || data_len > LSM_MAX_BLOCK_BYTES
        || plain_len > LSM_MAX_BLOCK_BYTES
    {
        return Ok(None);
    }
    let mut data = vec![0u8; data_len as usize];
    if read_full(file, &mut data)? < data.len() {
        return Ok(None);
    }
    Ok(lz4_flex::block::decompress(&data, plain_len as usize).ok())
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Indices (sorted, once each) of the non-empty needles found in one captured direction of a
/// connection, searched raw and as carried: the bytes as HTTP/1.1 messages (requests, or
/// responses when they start with `HTTP/`; several per keep-alive connection), each message's
/// body de-chunked (`Transfer-Encoding: chunked`) or cut to its `Content-Length` (or to the
/// end, for a response with neither), and each body as a stream of replication frames with
/// compressed payloads decompressed. The raw bytes are also tried as a bare frame stream.
/// Never panics: whatever can be decoded of a truncated or corrupt capture is searched, and the
/// raw bytes always are. Work is linear in the input, except that LZ4 may expand a frame up to
/// its ratio limit (255:1), each frame at most [`meridian_core::wire::MAX_FRAME_BYTES`].
pub fn search_stream(bytes: &[u8], needles: &[&[u8]]) -> Vec<usize> {
    let finders = finders(needles);
    let mut found = BTreeSet::new();
    add_found(&mut found, &finders, bytes);
    for payload in frame_payloads(bytes) {
        add_found(&mut found, &finders, &payload);
    }
    for body in http_bodies(bytes) {
        add_found(&mut found, &finders, &body);
        for payload in frame_payloads(&body) {
            add_found(&mut found, &finders, &payload);
        }
    }
    found.into_iter().collect()
}

/// The plain payload of every complete frame at the start of `bytes`, up to the first frame
/// that fails or is incomplete; and, for each version 2 frame among those that decode, the
/// plain payload of the same message as a version 1 frame, where every key and value is whole.
fn frame_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::default();
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Ok(Some(plain)) = decoder.next_plain() {
        out.push(plain);
    }
    let mut decoder = FrameDecoder::default();
    decoder.push(bytes);
    while let Ok(Some(frame)) = decoder.next_frame() {
        if frame.version() == 1 {
            continue;
        }
        let mut v1 = FrameDecoder::default();
        v1.push(&encode_frame(&Frame::V1(frame.into_message())));
        if let Ok(Some(plain)) = v1.next_plain() {
            out.push(plain);
        }
    }
    out
}

/// Most headers of one HTTP message this parser accepts.
const MAX_HEADERS: usize = 64;

/// How a message's body is delimited.
enum BodyKind {
    Chunked,
    Length(u64),
    ToEnd,
}

/// The bodies of the HTTP/1.1 messages `bytes` holds, in order, until the end or the first
/// message whose head cannot be parsed; a body cut short is returned as far as it goes.
fn http_bodies(bytes: &[u8]) -> Vec<Vec<u8>> {
    let responses = bytes.starts_with(b"HTTP/");
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((head_len, kind)) = parse_head(rest, responses) else {
            break;
        };
        rest = &rest[head_len..];
        let (body, used) = match kind {
            BodyKind::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                (rest[..n].to_vec(), n)
            }
            BodyKind::ToEnd => (rest.to_vec(), rest.len()),
            BodyKind::Chunked => dechunk(rest),
        };
        if !body.is_empty() {
            out.push(body);
        }
        rest = &rest[used..];
    }
    out
}

/// The length of a complete message head at the start of `bytes` and how its body is
/// delimited; `None` when there is no complete, valid head.
fn parse_head(bytes: &[u8], response: bool) -> Option<(usize, BodyKind)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, status) = if response {
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => (len, r.code),
            _ => return None,
        }
    } else {
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => (len, None),
            _ => return None,
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let chunked = header("transfer-encoding")
        .iter()
        .flat_map(|v| {
            v.split(',')
                .map(|t| t.trim().to_string())
                .collect::<Vec<_>>()
        })
        .next_back()
        .is_some_and(|last| last == "chunked");
    let kind = if let Some(code) = status
        && (code < 200 || code == 204 || code == 304)
    {
        // 101 switches protocols: what follows is not HTTP; searched raw only.
        if code == 101 {
            BodyKind::ToEnd
        } else {
            BodyKind::Length(0)
        }
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = header("content-length").first() {
        BodyKind::Length(n.parse().ok()?)
    } else if response {
        BodyKind::ToEnd
    } else {
        BodyKind::Length(0)
    };
    Some((len, kind))
}

/// The data of a chunked body at the start of `bytes` and how many bytes it used (through the
/// trailers); a body cut short yields what arrived, a malformed one stops there.
fn dechunk(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (data_at, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete((n, size))) => (at + n, size),
            _ => return (body, bytes.len()),
        };
        if size == 0 {
            return (body, data_at + trailers_len(&bytes[data_at..]));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let end = data_at.saturating_add(size).min(bytes.len());
        body.extend_from_slice(&bytes[data_at..end]);
        if end == bytes.len() || !bytes[end..].starts_with(b"\r\n") {
            return (body, bytes.len());
        }
        at = end + 2;
    }
}

/// Bytes of the trailer section (ending with an empty line) at the start of `bytes`, or all of
/// them when it does not end.
fn trailers_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(eol) = memchr::memmem::find(&bytes[at..], b"\r\n") {
        at += eol + 2;
        if eol == 0 {
            return at;
        }
    }
    bytes.len()
}

/// Searches every data directory and captured direction for the canaries that may not be
/// there: in `dirs`, a `(region, data dir)` is searched for the canaries whose `allowed` lacks
/// the region; a capture is searched for those whose `allowed` lacks its receiving region
/// ([`Capture::receiver`]). Each finding names the canary's zone and key and the place — the
/// file's path, or the capture's [`Capture::place`] (`link SENDER→RECEIVER`) — once per
/// place. `searched` lists every directory and link by name, once each, in the order given;
/// `bytes_searched` counts the file and captured bytes read (not their decoded forms). Fails
/// only when a data directory cannot be read.
pub fn audit(
    canaries: &[Canary],
    dirs: &[(String, PathBuf)],
    captures: &[Capture],
) -> Result<Residency, LabError> {
    let mut residency = Residency {
        canaries: canaries.len() as u64,
        ..Residency::default()
    };
    let mut findings = BTreeMap::new();
    let foreign = |region: &str| -> Vec<&Canary> {
        canaries
            .iter()
            .filter(|c| !c.allowed.iter().any(|a| a == region))
            .collect()
    };
    let mut note = |canary: &Canary, place: String| {
        findings.insert(
            (canary.zone.clone(), canary.key.clone(), place.clone()),
            Finding {
                zone: canary.zone.clone(),
                key: canary.key.clone(),
                place,
            },
        );
    };
    for (region, dir) in dirs {
        let suspects = foreign(region);
        let needles: Vec<&[u8]> = suspects.iter().map(|c| c.needle.as_slice()).collect();
        let hits = search_dir(dir, &needles)?;
        residency.bytes_searched += hits.bytes;
        push_once(&mut residency.searched, dir.display().to_string());
        for hit in hits.hits {
            if let Some(canary) = suspects.get(hit.needle) {
                note(canary, hit.file.display().to_string());
            }
        }
    }
    for capture in captures {
        let suspects = foreign(capture.receiver());
        let needles: Vec<&[u8]> = suspects.iter().map(|c| c.needle.as_slice()).collect();
        residency.bytes_searched += capture.bytes.len() as u64;
        push_once(&mut residency.searched, capture.place());
        for i in search_stream(&capture.bytes, &needles) {
            if let Some(canary) = suspects.get(i) {
                note(canary, capture.place());
            }
        }
    }
    residency.findings = findings.into_values().collect();
    Ok(residency)
}

fn push_once(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use meridian_core::wire::{Entry, Frame, FrameV1, LogBody, OpPayload, encode_frame};
    use proptest::prelude::*;

    use super::*;
    use crate::wan::Direction;

    /// A needle LZ4 turns into a literal and a back reference, so it never appears whole in
    /// compressed bytes — when it follows compressible bytes: after a long incompressible run
    /// LZ4 skips ahead and may copy it as one literal (see [`around`]).
    fn needle() -> Vec<u8> {
        b"canary-7f3a91c2e5d8-".repeat(4)
    }

    /// `value` between incompressible bytes, after a compressible run that resets LZ4's skipping.
    fn around(value: &[u8], seed: u64) -> Vec<u8> {
        [
            noise(700, seed),
            b"=".repeat(64),
            value.to_vec(),
            noise(900, seed + 1),
        ]
        .concat()
    }

    /// Deterministic bytes that do not compress and contain no needle.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn batch(values: &[Vec<u8>]) -> Vec<u8> {
        let entries = values
            .iter()
            .enumerate()
            .map(|(i, v)| Entry {
                origin: "eu-west-1".into(),
                seq: i as u64 + 1,
                body: LogBody::Op(OpPayload {
                    keyspace: "eu_only".into(),
                    key: format!("k{i}"),
                    delta: v.clone(),
                    prev: None,
                    idempotency: None,
                }),
            })
            .collect();
        encode_frame(&Frame::V1(FrameV1::Batch(entries)))
    }

    /// A chunked response carrying `body` in chunks of the given sizes (cycled).
    fn chunked_response(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-meridian-repl\r\n\
              Transfer-Encoding: chunked\r\ndate: Sun, 22 Nov 2026 00:00:00 GMT\r\n\r\n"
            .to_vec();
        let mut rest = body;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
            let mut line = String::new();
            let _ = write!(line, "{:x}", chunk.len());
            if chunk.len() == 3 {
                line.push_str(";ext=1");
            }
            out.extend(line.as_bytes());
            out.extend(b"\r\n");
            out.extend(chunk);
            out.extend(b"\r\n");
            rest = tail;
        }
        out.extend(b"0\r\n\r\n");
        out
    }

    /// A replication stream whose second frame carries `value` compressed, in a chunked
    /// response split at awkward places, followed by a second message on the connection.
    fn carried(value: &[u8]) -> Vec<u8> {
        let mut frames = batch(&[b"small".to_vec()]);
        let compressed = batch(&[noise(300, 3), around(value, 1)]);
        assert_eq!(compressed[4], 1, "the frame is compressed");
        frames.extend(&compressed);
        let mut stream = chunked_response(&frames, &[1, 7, 3, 250, 13, 2, 1000]);
        stream.extend(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        stream
    }

    #[test]
    fn a_canary_in_a_compressed_frame_in_a_chunked_response_is_found() {
        let n = needle();
        let stream = carried(&n);
        assert!(
            search_bytes(&stream, &[&n]).is_empty(),
            "the needle must not appear raw, or this test proves nothing"
        );
        assert_eq!(search_stream(&stream, &[b"absent-marker", &n]), vec![1]);
        assert_eq!(
            search_stream(&stream, &[b"hello"]),
            vec![0],
            "second message"
        );
        let without = carried(b"nothing to see");
        assert!(search_stream(&without, &[&n]).is_empty());
        assert!(search_stream(&stream, &[b""]).is_empty(), "empty needles");
    }

    #[test]
    fn a_canary_in_a_version_2_stream_is_found_whole() {
        use meridian_core::crdt::LwwRegister;
        use meridian_core::hlc::Timestamp;
        use meridian_core::record::{Record, Value};
        use meridian_core::version::Version;
        use meridian_core::wire::FrameEncoder;

        let n = needle();
        let key = String::from_utf8(n.clone()).expect("ascii");
        let entries = |keys: &[String], value: &[u8]| -> Vec<Entry> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let version = Version {
                        ts: Timestamp(i as u64 + 1),
                        origin: "eu-west-1".into(),
                    };
                    let record = Record {
                        value: Value::Register(LwwRegister {
                            value: Some(value.to_vec().into()),
                            content_type: "text/plain".into(),
                            version: version.clone(),
                        }),
                        version,
                        expires: None,
                        home: None,
                    };
                    Entry {
                        origin: "eu-west-1".into(),
                        seq: i as u64 + 1,
                        body: LogBody::Op(OpPayload {
                            keyspace: "eu_only".into(),
                            key: k.clone(),
                            delta: record.encode(),
                            prev: None,
                            idempotency: None,
                        }),
                    }
                })
                .collect()
        };
        let mut enc = FrameEncoder::default();
        // The key follows one sharing most of it; the value is compressible, so LZ4 carries it.
        let near = format!("{}x", &key[..key.len() - 1]);
        let keys = [near, key.clone()];
        let mut stream = enc.encode(&Frame::V2(FrameV1::Batch(entries(&keys, b"v"))));
        let value = [b"=".repeat(300), n.clone(), b"=".repeat(300)].concat();
        let other = [String::from("k1"), String::from("k2")];
        stream.extend(enc.encode(&Frame::V2(FrameV1::Batch(entries(&other, &value)))));
        assert!(
            search_bytes(&stream, &[&n]).is_empty(),
            "the needle must not appear raw, or this test proves nothing"
        );
        assert_eq!(search_stream(&stream, &[&n]), vec![0]);
        let response = chunked_response(&stream, &[5, 1, 300]);
        assert_eq!(search_stream(&response, &[&n]), vec![0]);
    }

    #[test]
    fn request_bodies_by_length_and_chunks_are_searched() {
        let body = b"{\"value\":\"needle-in-a-post\"}";
        let mut stream = format!(
            "GET /v1/repl/stream HTTP/1.1\r\nhost: x\r\n\r\nPOST /v1/repl/digest HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend(body);
        stream.extend(b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4\r\nspli\r\n5\r\nt-one\r\n0\r\n\r\n");
        assert_eq!(
            search_stream(&stream, &[b"needle-in-a-post", b"split-one", b"spli"]),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn a_canary_in_a_nested_file_and_across_blocks_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b/c");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::write(nested.join("journal"), [noise(100, 4), needle()].concat()).expect("w");
        // Across the 1 MiB block boundary.
        let mut big = noise(BLOCK_BYTES - 5, 5);
        big.extend(b"boundary-needle");
        big.extend(noise(BLOCK_BYTES, 6));
        std::fs::write(dir.path().join("big"), &big).expect("write");
        std::fs::write(dir.path().join("a/empty"), b"").expect("write");
        let n = needle();
        let hits = search_dir(dir.path(), &[&n, b"boundary-needle", b"absent"]).expect("search");
        assert_eq!(
            hits.hits,
            vec![
                DirHit {
                    needle: 0,
                    file: nested.join("journal")
                },
                DirHit {
                    needle: 1,
                    file: dir.path().join("big")
                },
            ]
        );
        assert_eq!(hits.files, 3);
        assert_eq!(hits.bytes, 100 + n.len() as u64 + big.len() as u64);
        assert!(search_dir(&dir.path().join("missing"), &[&n]).is_err());
    }

    #[test]
    fn lz4_blocks_of_fjall_tables_are_searched_decompressed() {
        let plain = around(&needle(), 7);
        let data = lz4_flex::block::compress(&plain);
        let mut file = noise(50, 9);
        file.extend(LSM_BLOCK_MAGIC);
        file.push(0);
        file.extend([0u8; 16]);
        file.extend((data.len() as u32).to_le_bytes());
        file.extend((plain.len() as u32).to_le_bytes());
        file.extend([0u8; 4]);
        file.extend(&data);
        // A stray magic with nonsense lengths is ignored.
        file.extend(LSM_BLOCK_MAGIC);
        file.extend([0xff; 40]);
        let n = needle();
        assert!(search_bytes(&file, &[&n]).is_empty(), "not raw");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("seg"), &file).expect("write");
        let hits = search_dir(dir.path(), &[&n]).expect("search");
        assert_eq!(hits.hits.len(), 1);
        assert_eq!(hits.blocks_decompressed, 1);
    }

    fn canary(key: &str, needle: &[u8]) -> Canary {
        Canary {
            zone: "eu".into(),
            key: key.into(),
            needle: needle.to_vec(),
            allowed: vec!["eu-west-1".into()],
        }
    }

    fn capture(direction: Direction, bytes: Vec<u8>) -> Capture {
        Capture {
            from: "us-east-1".into(),
            to: "eu-west-1".into(),
            direction,
            connection: 3,
            bytes,
        }
    }

    #[test]
    fn findings_are_attributed_to_the_receiving_region() {
        let n = needle();
        let canaries = [canary("passport", &n), canary("visa", b"visa-canary-0042")];
        // Request bytes are received by eu-west-1 (allowed); response bytes by us-east-1.
        let captures = [
            capture(
                Direction::Request,
                b"GET / HTTP/1.1\r\nx: visa-canary-0042\r\n\r\n".into(),
            ),
            capture(Direction::Response, carried(&n)),
        ];
        let eu = tempfile::tempdir().expect("tempdir");
        let us = tempfile::tempdir().expect("tempdir");
        std::fs::write(eu.path().join("f"), [&n[..], b"visa-canary-0042"].concat()).expect("w");
        std::fs::write(us.path().join("f"), b"..visa-canary-0042..").expect("write");
        let dirs = [
            ("eu-west-1".to_string(), eu.path().to_path_buf()),
            ("us-east-1".to_string(), us.path().to_path_buf()),
        ];
        let r = audit(&canaries, &dirs, &captures).expect("audit");
        let found: Vec<(&str, String)> = r
            .findings
            .iter()
            .map(|f| (f.key.as_str(), f.place.clone()))
            .collect();
        let us_file = us.path().join("f").display().to_string();
        let mut want = vec![
            ("passport", "link eu-west-1→us-east-1".to_string()),
            ("visa", us_file),
        ];
        want.sort();
        assert_eq!(found, want);
        assert_eq!(r.canaries, 2);
        assert_eq!(
            r.searched.len(),
            4,
            "two dirs, two directions: {:?}",
            r.searched
        );
        let total: usize = captures.iter().map(|c| c.bytes.len()).sum();
        assert_eq!(r.bytes_searched, (n.len() + 16 + 20 + total) as u64);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = search_stream(&bytes, &[b"x", &needle()]);
        }

        #[test]
        fn cut_or_corrupted_streams_never_panic(cut in 0usize..4000, flip in 0usize..4000, to in any::<u8>()) {
            let mut stream = carried(&needle());
            if let Some(b) = stream.get_mut(flip) {
                *b = to;
            }
            stream.truncate(cut.min(stream.len()));
            let _ = search_stream(&stream, &[&needle()]);
        }

        #[test]
        fn any_chunking_finds_the_canary(sizes in proptest::collection::vec(1usize..600, 1..8)) {
            let mut frames = batch(&[around(&needle(), 11)]);
            frames.extend(batch(&[b"tail".to_vec()]));
            let stream = chunked_response(&frames, &sizes);
            prop_assert_eq!(search_stream(&stream, &[&needle()]), vec![0]);
        }
    }
}
