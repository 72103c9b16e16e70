//! Version 2 of the replication wire encoding: the messages of version 1, written for small
//! metadata. Both ends of a stream keep a [`Context`] that every frame updates in the same way,
//! so repeated strings, timestamps, keys and sequence numbers cost a byte or two after the
//! first time. The layout is described in `docs/replication.md` ("Version 2").

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::{COMPRESS_FROM_BYTES, Entry, FrameV2, LogBody, MAX_FRAME_BYTES, OpPayload};
use crate::Error;
use crate::crdt::LwwRegister;
use crate::hlc::Timestamp;
use crate::record::{Record, Value};
use crate::version::{Version, VersionVector};

/// Most strings one stream's dictionary holds; a string met after that is sent in full each
/// time.
pub const MAX_DICT_STRINGS: usize = 4096;
/// Longest string the dictionary takes; longer ones are sent in full each time.
pub const MAX_DICT_STRING_BYTES: usize = 256;
/// Most distinct origins one stream may name (in heads or entries); a stream naming more is
/// refused, so what a decoder remembers per origin is bounded.
pub const MAX_ORIGINS: usize = 4096;
/// Most entries of one version 2 batch frame.
pub const MAX_BATCH_ENTRIES: usize = 1 << 16;

const KIND_BATCH: u8 = 0;
const KIND_HEADS: u8 = 1;
/// Version 3 only.
const KIND_WATERMARK: u8 = 2;
const BATCH_VALUES_LZ4: u8 = 1;

const BODY_SKIP: u8 = 0;
const BODY_RAW: u8 = 1;
const BODY_REGISTER: u8 = 2;
const BODY_REGISTER_OTHER_ORIGIN: u8 = 3;
const BODY_MASK: u8 = 0b11;
const HAS_PREV: u8 = 1 << 2;
const HAS_IDEMPOTENCY: u8 = 1 << 3;
const NEW_KEYSPACE: u8 = 1 << 4;
const NEW_CONTENT_TYPE: u8 = 1 << 5;
const HAS_EXPIRES: u8 = 1 << 6;
const HAS_HOME: u8 = 1 << 7;

/// What both ends of one version 2 stream remember of the frames before: a frame is decoded
/// against the context its encoder had, so a stream needs one encoder and one decoder context,
/// both starting empty.
#[derive(Debug, Default)]
pub(super) struct Context {
    strings: Vec<String>,
    index: HashMap<String, usize>,
    last_ts: u64,
    last_key: String,
    keyspace: String,
    content_type: String,
    next_seq: HashMap<String, u64>,
    heads: BTreeMap<String, u64>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::Decode {
        message: format!("version 2 frame: {}", message.into()),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over a frame's bytes whose every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| bad("ends in the middle of a field"))?;
        self.bytes = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(bad("a number overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("a number overflows 64 bits"))
    }

    /// A count or length that must not exceed `max` nor the bytes left.
    fn len(&mut self, max: usize, what: &str) -> Result<usize, Error> {
        let v = self.varint()?;
        let limit = max.min(self.bytes.len());
        match usize::try_from(v) {
            Ok(n) if n <= limit => Ok(n),
            _ => Err(bad(format!(
                "{what} of {v}, more than the {limit} the frame can hold"
            ))),
        }
    }

    /// A length of bytes in the values section, which may be compressed: at most `max`.
    fn size(&mut self, max: usize, what: &str) -> Result<usize, Error> {
        let v = self.varint()?;
        match usize::try_from(v) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(bad(format!("{what} of {v}, more than the limit {max}"))),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.bytes.len() {
            return Err(bad("ends in the middle of a field"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn string(&mut self, what: &str) -> Result<String, Error> {
        let n = self.len(usize::MAX, what)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }
}

impl Context {
    fn adds(&self, s: &str) -> bool {
        self.strings.len() < MAX_DICT_STRINGS && s.len() <= MAX_DICT_STRING_BYTES
    }

    fn put_str(&mut self, out: &mut Vec<u8>, s: &str) {
        if let Some(&i) = self.index.get(s) {
            put_varint(out, i as u64 + 1);
            return;
        }
        out.push(0);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
        if self.adds(s) {
            self.index.insert(s.to_string(), self.strings.len());
            self.strings.push(s.to_string());
        }
    }

    fn get_str(&mut self, r: &mut Reader<'_>, what: &str) -> Result<String, Error> {
        let i = r.varint()?;
        if i == 0 {
            let s = r.string(what)?;
            if self.adds(&s) {
                self.strings.push(s.clone());
            }
            return Ok(s);
        }
        usize::try_from(i - 1)
            .ok()
            .and_then(|i| self.strings.get(i))
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "{what} refers to string {i} of a dictionary of {}",
                    self.strings.len()
                ))
            })
    }

    /// `ts` against `base`: zigzag(milliseconds delta) << 3 | logical (7: the logical counter
    /// follows).
    fn put_ts(out: &mut Vec<u8>, base: u64, ts: u64) {
        let (b, t) = (Timestamp(base), Timestamp(ts));
        // Both are below 2^48, so the difference fits an i64 and its zigzag shifted by 3 a u64.
        let ms = t.millis() as i64 - b.millis() as i64;
        let logical = t.logical();
        put_varint(out, (zigzag(ms) << 3) | u64::from(logical.min(7)));
        if logical >= 7 {
            put_varint(out, u64::from(logical));
        }
    }

    fn get_ts(r: &mut Reader<'_>, base: u64) -> Result<u64, Error> {
        let head = r.varint()?;
        let mut logical = head & 7;
        if logical == 7 {
            logical = r.varint()?;
        }
        let ms = i64::try_from(Timestamp(base).millis())
            .ok()
            .and_then(|b| b.checked_add(unzigzag(head >> 3)))
            .and_then(|ms| u64::try_from(ms).ok())
            .filter(|&ms| ms <= u64::MAX >> 16)
            .ok_or_else(|| bad("a timestamp lies outside the clock's range"))?;
        let logical =
            u16::try_from(logical).map_err(|_| bad("a logical counter exceeds 16 bits"))?;
        Ok((ms << 16) | u64::from(logical))
    }

    fn put_key(&mut self, out: &mut Vec<u8>, key: &str) {
        let shared = key
            .bytes()
            .zip(self.last_key.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        put_varint(out, shared as u64);
        put_varint(out, (key.len() - shared) as u64);
        out.extend_from_slice(&key.as_bytes()[shared..]);
        self.last_key = key.to_string();
    }

    fn get_key(&mut self, r: &mut Reader<'_>) -> Result<String, Error> {
        let shared = r.size(self.last_key.len(), "key prefix")?;
        let rest = r.len(usize::MAX, "key suffix")?;
        let mut key = self.last_key.as_bytes()[..shared].to_vec();
        key.extend_from_slice(r.take(rest)?);
        let key = String::from_utf8(key).map_err(|_| bad("a key is not UTF-8"))?;
        self.last_key.clone_from(&key);
        Ok(key)
    }

    /// Encodes one message (the version byte excluded).
    pub(super) fn encode(&mut self, message: &FrameV2) -> Vec<u8> {
        match message {
            FrameV2::Heads(vv) => self.encode_heads(vv),
            FrameV2::Batch(entries) => self.encode_batch(entries),
            FrameV2::Watermark { at, seq } => {
                let mut out = vec![KIND_WATERMARK];
                put_varint(&mut out, at.0);
                put_varint(&mut out, *seq);
                out
            }
        }
    }

    fn encode_heads(&mut self, vv: &VersionVector) -> Vec<u8> {
        let mut changed: BTreeMap<String, u64> =
            self.heads.keys().map(|o| (o.clone(), 0)).collect();
        changed.extend(vv.iter().map(|(o, c)| (o.to_string(), c)));
        changed.retain(|o, c| self.heads.get(o).copied().unwrap_or(0) != *c);
        let mut out = vec![KIND_HEADS];
        put_varint(&mut out, changed.len() as u64);
        for (origin, counter) in changed {
            self.put_str(&mut out, &origin);
            let old = self.heads.get(&origin).copied().unwrap_or(0);
            put_varint(&mut out, counter.wrapping_sub(old));
            self.heads.insert(origin, counter);
        }
        out
    }

    fn encode_batch(&mut self, entries: &[Entry]) -> Vec<u8> {
        let mut meta = Vec::new();
        let mut bulk = Vec::new();
        let runs = runs(entries);
        put_varint(&mut meta, runs.len() as u64);
        for run in runs {
            let origin = &run[0].origin;
            let expected = self.next_seq.get(origin).copied().unwrap_or(1);
            self.put_str(&mut meta, origin);
            put_varint(&mut meta, run[0].seq.wrapping_sub(expected));
            put_varint(&mut meta, run.len() as u64);
            self.next_seq
                .insert(origin.clone(), run[0].seq.wrapping_add(run.len() as u64));
            for e in run {
                self.encode_entry(&mut meta, &mut bulk, e);
            }
        }
        let mut flags = 0;
        if bulk.len() >= COMPRESS_FROM_BYTES {
            let packed = lz4_flex::compress_prepend_size(&bulk);
            if packed.len() < bulk.len() {
                flags |= BATCH_VALUES_LZ4;
                bulk = packed;
            }
        }
        let mut out = Vec::with_capacity(2 + meta.len() + bulk.len());
        out.push(KIND_BATCH);
        out.push(flags);
        out.extend(meta);
        out.extend(bulk);
        out
    }

    fn encode_entry(&mut self, meta: &mut Vec<u8>, bulk: &mut Vec<u8>, e: &Entry) {
        let p = match &e.body {
            LogBody::Skip { allowed } => {
                meta.push(BODY_SKIP);
                put_varint(meta, allowed.len() as u64);
                for a in allowed {
                    self.put_str(meta, a);
                }
                return;
            }
            LogBody::Op(p) => p,
        };
        let register = register_of(&p.delta);
        let mut flags = match &register {
            None => BODY_RAW,
            Some((_, v)) if v.origin == e.origin => BODY_REGISTER,
            Some(_) => BODY_REGISTER_OTHER_ORIGIN,
        };
        if p.prev.is_some() {
            flags |= HAS_PREV;
        }
        if p.idempotency.is_some() {
            flags |= HAS_IDEMPOTENCY;
        }
        if p.keyspace != self.keyspace {
            flags |= NEW_KEYSPACE;
        }
        if let Some((r, _)) = &register {
            if r.content_type != self.content_type {
                flags |= NEW_CONTENT_TYPE;
            }
            if r.expires.is_some() {
                flags |= HAS_EXPIRES;
            }
            if r.home.is_some() {
                flags |= HAS_HOME;
            }
        }
        meta.push(flags);
        if flags & NEW_KEYSPACE != 0 {
            self.put_str(meta, &p.keyspace);
            self.keyspace.clone_from(&p.keyspace);
        }
        self.put_key(meta, &p.key);
        match register {
            None => {
                put_varint(meta, p.delta.len() as u64);
                bulk.extend_from_slice(&p.delta);
            }
            Some((r, v)) => {
                Self::put_ts(meta, self.last_ts, v.ts.0);
                self.last_ts = v.ts.0;
                if flags & BODY_MASK == BODY_REGISTER_OTHER_ORIGIN {
                    self.put_str(meta, &v.origin);
                }
                if flags & NEW_CONTENT_TYPE != 0 {
                    self.put_str(meta, &r.content_type);
                    self.content_type.clone_from(&r.content_type);
                }
                match &r.value {
                    None => put_varint(meta, 0),
                    Some(b) => {
                        put_varint(meta, b.len() as u64 + 1);
                        bulk.extend_from_slice(b);
                    }
                }
                if let Some(x) = r.expires {
                    Self::put_ts(meta, self.last_ts, x.0);
                }
                if let Some(h) = &r.home {
                    self.put_str(meta, h);
                }
            }
        }
        if let Some(prev) = &p.prev {
            Self::put_ts(meta, self.last_ts, prev.ts.0);
            self.put_str(meta, &prev.origin);
        }
        if let Some((key, outcome)) = &p.idempotency {
            put_varint(meta, key.len() as u64);
            meta.extend_from_slice(key.as_bytes());
            put_varint(meta, outcome.len() as u64);
            meta.extend_from_slice(outcome);
        }
    }

    /// Decodes one message (the version byte excluded); a watermark only when `version_3`. An
    /// error leaves the context in an unspecified state: the stream cannot be read any further.
    pub(super) fn decode(&mut self, bytes: &[u8], version_3: bool) -> Result<FrameV2, Error> {
        let mut r = Reader { bytes };
        let message = match r.u8()? {
            KIND_HEADS => FrameV2::Heads(self.decode_heads(&mut r)?),
            KIND_BATCH => FrameV2::Batch(self.decode_batch(&mut r)?),
            KIND_WATERMARK if version_3 => {
                let at = Timestamp(r.varint()?);
                let seq = r.varint()?;
                if !r.bytes.is_empty() {
                    return Err(bad(format!("{} bytes after the watermark", r.bytes.len())));
                }
                FrameV2::Watermark { at, seq }
            }
            k => return Err(bad(format!("unknown message kind {k}"))),
        };
        Ok(message)
    }

    fn decode_heads(&mut self, r: &mut Reader<'_>) -> Result<VersionVector, Error> {
        let n = r.len(MAX_BATCH_ENTRIES, "heads count")?;
        for _ in 0..n {
            let origin = self.get_str(r, "heads origin")?;
            let delta = r.varint()?;
            let c = self.heads.entry(origin).or_insert(0);
            *c = c.wrapping_add(delta);
            if self.heads.len() > MAX_ORIGINS {
                return Err(bad(format!("heads of more than {MAX_ORIGINS} origins")));
            }
        }
        if !r.bytes.is_empty() {
            return Err(bad(format!("{} bytes after the heads", r.bytes.len())));
        }
        Ok(VersionVector::from(self.heads.clone()))
    }

    fn decode_batch(&mut self, r: &mut Reader<'_>) -> Result<Vec<Entry>, Error> {
        let flags = r.u8()?;
        if flags & !BATCH_VALUES_LZ4 != 0 {
            return Err(bad(format!("unknown batch flags {flags:#04x}")));
        }
        let runs = r.len(MAX_BATCH_ENTRIES, "run count")?;
        let mut entries = Vec::new();
        // Per entry, where its bulk bytes go: (entry index, length).
        let mut pending: Vec<Pending> = Vec::new();
        let mut bulk_len = 0usize;
        for _ in 0..runs {
            let origin = self.get_str(r, "origin")?;
            let expected = self.next_seq.get(&origin).copied().unwrap_or(1);
            let first = expected.wrapping_add(r.varint()?);
            let count = r.len(MAX_BATCH_ENTRIES - entries.len(), "run length")?;
            if count == 0 {
                return Err(bad("an empty run"));
            }
            let next = u64::try_from(count)
                .ok()
                .and_then(|c| first.checked_add(c - 1))
                .ok_or_else(|| bad("sequence numbers overflow"))?;
            self.next_seq.insert(origin.clone(), next.wrapping_add(1));
            if self.next_seq.len() > MAX_ORIGINS {
                return Err(bad(format!("entries of more than {MAX_ORIGINS} origins")));
            }
            for i in 0..count as u64 {
                let (body, bulk) = self.decode_entry(r, &origin)?;
                if let Some(p) = bulk {
                    bulk_len = bulk_len
                        .checked_add(p.len)
                        .filter(|&n| n <= MAX_FRAME_BYTES)
                        .ok_or_else(|| bad("values larger than a frame"))?;
                    pending.push(Pending {
                        entry: entries.len(),
                        ..p
                    });
                }
                entries.push(Entry {
                    origin: origin.clone(),
                    seq: first + i,
                    body,
                });
            }
        }
        let bulk = if flags & BATCH_VALUES_LZ4 != 0 {
            let declared = r
                .bytes
                .first_chunk::<4>()
                .map(|b| u32::from_le_bytes(*b) as usize);
            if declared != Some(bulk_len) {
                return Err(bad("compressed values of the wrong size"));
            }
            lz4_flex::decompress_size_prepended(r.bytes)
                .map_err(|e| bad(format!("values decompression: {e}")))?
        } else {
            r.bytes.to_vec()
        };
        if bulk.len() != bulk_len {
            return Err(bad(format!(
                "{} bytes of values where the entries need {bulk_len}",
                bulk.len()
            )));
        }
        let mut at = 0;
        for p in pending {
            let bytes = &bulk[at..at + p.len];
            at += p.len;
            if let Some(LogBody::Op(op)) = entries.get_mut(p.entry).map(|e| &mut e.body) {
                op.delta = match p.register {
                    None => bytes.to_vec(),
                    Some(mut rec) => {
                        if let Value::Register(reg) = &mut rec.value
                            && reg.value.is_some()
                        {
                            reg.value = Some(Bytes::copy_from_slice(bytes));
                        }
                        rec.encode()
                    }
                };
            }
        }
        Ok(entries)
    }

    /// One entry's body; its delta is filled in from the values section afterwards, as the
    /// returned [`Pending`] says.
    fn decode_entry(
        &mut self,
        r: &mut Reader<'_>,
        origin: &str,
    ) -> Result<(LogBody, Option<Pending>), Error> {
        let flags = r.u8()?;
        let kind = flags & BODY_MASK;
        if kind == BODY_SKIP {
            if flags != BODY_SKIP {
                return Err(bad(format!("skip entry with flags {flags:#04x}")));
            }
            let n = r.len(MAX_BATCH_ENTRIES, "allowed regions")?;
            let allowed = (0..n)
                .map(|_| self.get_str(r, "allowed region"))
                .collect::<Result<_, _>>()?;
            return Ok((LogBody::Skip { allowed }, None));
        }
        if kind == BODY_RAW && flags & (NEW_CONTENT_TYPE | HAS_EXPIRES | HAS_HOME) != 0 {
            return Err(bad(format!("raw entry with register flags {flags:#04x}")));
        }
        if flags & NEW_KEYSPACE != 0 {
            self.keyspace = self.get_str(r, "keyspace")?;
        }
        let key = self.get_key(r)?;
        let pending = if kind == BODY_RAW {
            Pending {
                entry: 0,
                len: r.size(MAX_FRAME_BYTES, "delta length")?,
                register: None,
            }
        } else {
            let ts = Self::get_ts(r, self.last_ts)?;
            self.last_ts = ts;
            let version_origin = if kind == BODY_REGISTER_OTHER_ORIGIN {
                self.get_str(r, "version origin")?
            } else {
                origin.to_string()
            };
            if flags & NEW_CONTENT_TYPE != 0 {
                self.content_type = self.get_str(r, "content type")?;
            }
            let value = r.size(MAX_FRAME_BYTES + 1, "value length + 1")?;
            let len = value.saturating_sub(1);
            let expires = match flags & HAS_EXPIRES {
                0 => None,
                _ => Some(Timestamp(Self::get_ts(r, ts)?)),
            };
            let home = match flags & HAS_HOME {
                0 => None,
                _ => Some(self.get_str(r, "home")?),
            };
            let version = Version {
                ts: Timestamp(ts),
                origin: version_origin,
            };
            let register = Record {
                value: Value::Register(LwwRegister {
                    value: (value > 0).then(Bytes::new),
                    content_type: self.content_type.clone(),
                    version: version.clone(),
                }),
                version,
                expires,
                home,
            };
            Pending {
                entry: 0,
                len,
                register: Some(register),
            }
        };
        let prev = match flags & HAS_PREV {
            0 => None,
            _ => {
                let ts = Self::get_ts(r, self.last_ts)?;
                Some(Version {
                    ts: Timestamp(ts),
                    origin: self.get_str(r, "prev origin")?,
                })
            }
        };
        let idempotency = match flags & HAS_IDEMPOTENCY {
            0 => None,
            _ => {
                let key = r.string("idempotency key")?;
                let n = r.len(usize::MAX, "idempotency outcome")?;
                Some((key, r.take(n)?.to_vec()))
            }
        };
        let body = LogBody::Op(OpPayload {
            keyspace: self.keyspace.clone(),
            key,
            delta: Vec::new(),
            prev,
            idempotency,
        });
        Ok((body, Some(pending)))
    }
}

/// Where an entry's bytes in the values section go.
struct Pending {
    entry: usize,
    len: usize,
    /// The register record the value belongs in; `None`: the bytes are the delta itself.
    register: Option<Record>,
}

/// A delta that version 2 can send as its parts: a register record whose own version is the
/// register's, and which encodes back to exactly these bytes.
fn register_of(delta: &[u8]) -> Option<(RegisterParts, Version)> {
    let record = Record::decode(delta).ok()?;
    if record.encode() != delta {
        return None;
    }
    let Record {
        value: Value::Register(reg),
        version,
        expires,
        home,
    } = record
    else {
        return None;
    };
    if reg.version != version {
        return None;
    }
    Some((
        RegisterParts {
            value: reg.value,
            content_type: reg.content_type,
            expires,
            home,
        },
        version,
    ))
}

/// The parts of a register delta besides its version.
struct RegisterParts {
    value: Option<Bytes>,
    content_type: String,
    expires: Option<Timestamp>,
    home: Option<String>,
}

/// `entries` cut into maximal runs of one origin with consecutive sequence numbers.
fn runs(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=entries.len() {
        let breaks = i == entries.len()
            || entries[i].origin != entries[i - 1].origin
            || entries[i - 1].seq.checked_add(1) != Some(entries[i].seq);
        if breaks {
            out.push(&entries[start..i]);
            start = i;
        }
    }
    out
}
