//! Deterministic simulation of Meridian's replication. Real region nodes (the real write path,
//! op-log collection, residency filtering and apply) run over in-memory stores; a seeded
//! scheduler decides every delivery between them, cuts and heals links (both ways or one way),
//! kills and restarts nodes, and skews their clocks by up to ±1 s. Only the HTTP framing of
//! the links is bypassed (through [`meridian_node::repl::exchange`]); `tests/turmoil.rs` runs
//! the real links (HTTP, the stream protocol, reconnects) over a simulated network and holds
//! them to the same [`check`]. The same seed replays the same run exactly; a failure names its
//! seed.
//!
//! After the schedule, every link is healed and every node restarted, deliveries run until
//! nothing moves, and a checker asserts: all replicas equal; counters equal the exact sum of
//! the acknowledged increments no acknowledged delete had seen; every register holds the
//! last-writer-wins winner of its acknowledged writes, so no acknowledged delete is
//! resurrected; every set holds exactly the members with an acknowledged add that no later
//! change of the member had seen (add wins); every map field holds the value of its
//! last-writer-wins patch unless a later delete of the whole map hides it; no byte of a pinned
//! key sits in a region outside its zone (of two regions, which must hold it equally); every
//! sync write acknowledged (its origin alive) was on a quorum of regions and is in every
//! region; and, after the final collection rounds, no
//! region stores a record no reader sees (every tombstone collected, whichever way it died).
//!
//! Digest comparison runs between live pairs at random, and a node's store is silently
//! damaged while it is down (a register's value cut short under an unchanged version, as bit
//! rot or a bad restore would leave it; each key at most once a run, so other regions hold
//! what it lost): after the heal, comparisons run until none repairs anything, and the checks
//! above then find every damaged record mended. A record a comparison merged in may hold
//! writes its region has not applied yet, and a later change there sees them too: the
//! `seen` of a write is its region's applied version vector joined with what every
//! comparison that changed that record brought (the peer's applied vector, itself so joined).
//!
//! Keyspace `tmp` is a set written by adds with a TTL and PUTs without one (which clear the
//! expiry), while expiry sweeps and collection passes (which reset expired records) run at
//! random: once the clock has passed every expiry and collection has settled, a key whose
//! newest write expired is stored nowhere, and one whose newest write is a PUT holds that
//! write's member and only members some acknowledged write added.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use meridian_core::config::Topology;
use meridian_core::hlc::Timestamp;
use meridian_core::op::Op;
use meridian_core::record::{Record, Value};
use meridian_core::version::{Version, VersionVector};
use meridian_core::wire::{LogBody, decode_log_body};
use meridian_node::clock::Clock;
use meridian_node::input::WriteHeaders;
use meridian_node::repl::digest::compare_and_repair;
use meridian_node::write::{Mutation, write};
use meridian_node::{Node, NodeConfig, keys, render};
use meridian_store::{Store, StoreOptions, Table};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Region names of simulated clusters, in order; a cluster of `n` uses the first `n`.
pub const REGIONS: [&str; 5] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-1",
    "sa-east-1",
    "af-south-1",
];
/// The region whose final state the checker compares every other replica with, and renders.
pub const EU: &str = "eu-west-1";
/// The regions of zone `eu`, where keyspace `pinned` lives: two, so its keys replicate and are
/// digest-compared between them, and every cluster size has both.
pub const PINNED_ZONE: [&str; 2] = [EU, "ap-southeast-1"];
/// Largest clock offset of a simulated node, either way.
pub const MAX_SKEW_MS: i64 = 1_000;
/// Longest TTL of a write to keyspace `tmp`.
pub const MAX_TTL_MS: u64 = 1_500;
const START_MS: u64 = 1_700_000_000_000;

/// A simulated wall clock: shared virtual time plus this node's fixed offset.
#[derive(Debug, Clone)]
pub struct SimClock {
    now: Arc<AtomicU64>,
    offset_ms: i64,
}

impl Clock for SimClock {
    fn wall_ms(&self) -> u64 {
        self.now
            .load(Ordering::SeqCst)
            .saturating_add_signed(self.offset_ms)
    }
}

/// What went wrong in a run, with what it takes to replay it.
#[derive(Debug)]
pub struct Failure {
    /// The seed that reproduces the run.
    pub seed: u64,
    /// What the checker (or a step) found.
    pub message: String,
    /// The last steps of the schedule.
    pub trace_tail: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.message)?;
        writeln!(
            f,
            "replay: MERIDIAN_SIM_SEED={} MERIDIAN_SIM_TRACE=1 cargo test -p meridian-sim",
            self.seed
        )?;
        writeln!(f, "last steps:")?;
        for s in &self.trace_tail {
            writeln!(f, "  {s}")?;
        }
        Ok(())
    }
}

/// What a passing run did, for the test log and for determinism checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Writes acknowledged.
    pub writes: usize,
    /// Deliveries that moved at least one entry.
    pub deliveries: usize,
    /// Kills performed.
    pub kills: usize,
    /// Op-log entries and tombstones garbage-collected during the run, and expired records
    /// reset.
    pub collected: (usize, usize, usize),
    /// Sync writes acknowledged (each checked to be on a quorum when acknowledged).
    pub sync_acknowledged: usize,
    /// Records damaged in a stopped node's store, and records digest comparison changed.
    pub damaged_repaired: (usize, usize),
    /// A digest of the final state of every replica (equal across runs of one seed).
    pub final_state: String,
}

struct Replica {
    name: &'static str,
    store: Store,
    clock: SimClock,
    node: Option<Node>,
}

/// Writes each region makes right after its own collection pass while settling.
const AFTER_COLLECTION_WRITES: usize = 8;
/// Step numbers of those writes start here (values name their step; schedule steps are fewer).
const STEPS_AFTER: usize = 1_000_000;

/// The acknowledged writes of a run: what [`check`] holds the replicas to.
#[derive(Default)]
pub struct History {
    /// Per counter key, its acknowledged increments and deletes in the order made.
    counters: BTreeMap<String, Vec<CounterOp>>,
    registers: BTreeMap<String, Vec<(Version, Option<String>)>>,
    /// Per set key, its acknowledged adds and removes in the order made.
    sets: BTreeMap<String, Vec<SetOp>>,
    /// Per map key: the acknowledged patches of each field, and the versions of the
    /// acknowledged deletes of the whole map.
    maps: BTreeMap<String, MapWrites>,
    /// Per key of keyspace `tmp`: the members of its acknowledged adds and PUTs (version,
    /// member, whether the write had a TTL).
    expiring: BTreeMap<String, Vec<(Version, String, bool)>>,
    writes: usize,
}

/// One acknowledged write, as its client heard the answer.
#[derive(Debug, Clone)]
pub struct Acknowledged<'a> {
    /// The region that acknowledged it.
    pub region: &'a str,
    /// Keyspace of the key (`cnt`, `reg`, `tags`, `docs`, `tmp`; others are counted, not
    /// checked).
    pub keyspace: &'a str,
    /// The key.
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// The answer's ETag (without quotes), if it had one.
    pub etag: Option<&'a str>,
    /// The answer's session token, if it had one.
    pub session: Option<&'a str>,
    /// What the region had applied when it made the change, when the client knows it; a set
    /// with a change of unknown `seen` is held only to members some acknowledged add added.
    pub seen: Option<VersionVector>,
    /// Whether the write carried a TTL.
    pub ttl: bool,
}

impl History {
    /// Records an acknowledged write. Fails when the answer lacks what an acknowledgement of
    /// that operation must carry (an ETag, a session token).
    pub fn record(&mut self, w: Acknowledged<'_>) -> Result<(), String> {
        self.writes += 1;
        let Acknowledged {
            region,
            keyspace,
            key,
            op,
            etag,
            session,
            seen,
            ttl,
        } = w;
        match op {
            Op::Incr { by } if keyspace == "cnt" => {
                let seq = own_seq(session, region, "increment")?;
                self.counters.entry(key).or_default().push(CounterOp::Incr {
                    by,
                    origin: region.to_string(),
                    seq,
                });
            }
            // A delete of a counter with nothing counted since its last reset changes nothing
            // and answers no ETag.
            Op::Delete { .. } if keyspace == "cnt" && etag.is_some() => {
                self.counters
                    .entry(key)
                    .or_default()
                    .push(CounterOp::Reset { seen: seen.clone() });
            }
            Op::Put { value, .. } if keyspace == "reg" => {
                let v = parse_etag(etag)?;
                let text = String::from_utf8_lossy(&value).into_owned();
                self.registers.entry(key).or_default().push((v, Some(text)));
            }
            // A delete of an absent key changes nothing and answers no ETag.
            Op::Delete { .. } if keyspace == "reg" && etag.is_some() => {
                let v = parse_etag(etag)?;
                self.registers.entry(key).or_default().push((v, None));
            }
            Op::Add { members } if keyspace == "tags" => {
                let seq = own_seq(session, region, "add")?;
                let ops = self.sets.entry(key).or_default();
                ops.extend(members.into_iter().map(|member| SetOp {
                    member,
                    seen: seen.clone(),
                    add: Some((region.to_string(), seq)),
                }));
            }
            Op::Remove { members } if keyspace == "tags" => {
                let ops = self.sets.entry(key).or_default();
                ops.extend(members.into_iter().map(|member| SetOp {
                    member,
                    seen: seen.clone(),
                    add: None,
                }));
            }
            Op::Patch { fields } if keyspace == "docs" => {
                let v = parse_etag(etag)?;
                let patched = self.maps.entry(key).or_default();
                for (field, value) in fields {
                    let value = (!value.is_null()).then_some(value);
                    patched
                        .fields
                        .entry(field)
                        .or_default()
                        .push((v.clone(), value));
                }
            }
            Op::Add { members } if keyspace == "tmp" => {
                let v = parse_etag(etag)?;
                let adds = self.expiring.entry(key).or_default();
                adds.extend(members.into_iter().map(|m| (v.clone(), m, ttl)));
            }
            Op::Put { value, .. } if keyspace == "tmp" => {
                let v = parse_etag(etag)?;
                let members: Vec<String> =
                    serde_json::from_slice(&value).map_err(|e| e.to_string())?;
                let adds = self.expiring.entry(key).or_default();
                adds.extend(members.into_iter().map(|m| (v.clone(), m, ttl)));
            }
            // Like a register's: deleting a map with no live field answers no ETag.
            Op::Delete { .. } if keyspace == "docs" && etag.is_some() => {
                let v = parse_etag(etag)?;
                self.maps.entry(key).or_default().deletes.push(v);
            }
            _ => {}
        }
        Ok(())
    }

    /// How many writes were recorded.
    pub fn writes(&self) -> usize {
        self.writes
    }
}

/// Which write of `region` an acknowledged write was: its own entry in the answer's session
/// token, which an acknowledged `what` must carry.
fn own_seq(session: Option<&str>, region: &str, what: &str) -> Result<u64, String> {
    session
        .and_then(|t| VersionVector::parse_token(t).ok())
        .map(|vv| vv.get(region))
        .ok_or_else(|| format!("an acknowledged {what} answers its session token"))
}

/// An acknowledged change of one counter.
enum CounterOp {
    /// An increment, the `seq`-th write of `origin`.
    Incr { by: i64, origin: String, seq: u64 },
    /// A delete (an observed reset), made in a region that had applied `seen` (when known).
    Reset { seen: Option<VersionVector> },
}

/// What a counter must read after `ops`: the sum of the increments no reset had seen. `None`
/// when some reset's `seen` is unknown: the value is then not decidable.
fn expected_count(ops: &[CounterOp]) -> Option<i64> {
    let mut seen = Vec::new();
    for op in ops {
        if let CounterOp::Reset { seen: s } = op {
            seen.push(s.as_ref()?);
        }
    }
    Some(
        ops.iter()
            .filter_map(|op| match op {
                CounterOp::Incr { by, origin, seq } => {
                    (!seen.iter().any(|s| s.get(origin) >= *seq)).then_some(*by)
                }
                CounterOp::Reset { .. } => None,
            })
            .sum(),
    )
}

/// An acknowledged patch of one map field: its version and value (`None`: the field deleted).
type FieldWrite = (Version, Option<serde_json::Value>);

/// The acknowledged writes of one map key.
#[derive(Default)]
struct MapWrites {
    fields: BTreeMap<String, Vec<FieldWrite>>,
    deletes: Vec<Version>,
}

impl MapWrites {
    /// The map they leave: each field's last patch, unless it sets nothing or a delete of the
    /// whole map came after it.
    fn expected(&self) -> serde_json::Map<String, serde_json::Value> {
        let cleared = self.deletes.iter().max();
        self.fields
            .iter()
            .filter_map(|(field, writes)| {
                let last = writes.iter().max_by(|a, b| a.0.cmp(&b.0))?;
                if cleared.is_some_and(|c| *c > last.0) {
                    return None;
                }
                Some((field.clone(), last.1.clone()?))
            })
            .collect()
    }
}

/// An acknowledged change of one set member, made in a region that had applied `seen` (when
/// known).
struct SetOp {
    member: String,
    seen: Option<VersionVector>,
    /// For an add: it is the `seq`-th write of `origin`; `None` for a remove.
    add: Option<(String, u64)>,
}

/// The members an add-wins set must hold after `ops`: those with an add that no other change
/// of the same member had seen. A remove deletes the adds it saw; an add replaces them.
/// `None` when some change's `seen` is unknown: the exact membership is then not decidable.
fn expected_members(ops: &[SetOp]) -> Option<BTreeSet<String>> {
    if ops.iter().any(|op| op.seen.is_none()) {
        return None;
    }
    Some(
        ops.iter()
            .filter_map(|op| {
                let (origin, seq) = op.add.as_ref()?;
                let superseded = ops.iter().any(|o| {
                    o.member == op.member && o.seen.as_ref().is_some_and(|s| s.get(origin) >= *seq)
                });
                (!superseded).then(|| op.member.clone())
            })
            .collect(),
    )
}

/// Every keyspace of one replica: keyspace → key → rendered value of its live records.
pub type State = BTreeMap<String, BTreeMap<String, String>>;

/// The state of the replica over `store`, as a reader at HLC time `now` sees it.
pub fn state(topology: &Topology, store: &Store, now: Timestamp) -> Result<State, String> {
    let mut out = BTreeMap::new();
    for ks in &topology.keyspaces {
        let prefix = keys::data_key(&ks.name, "");
        let rows = store
            .scan(Table::Data, &prefix, None, usize::MAX)
            .map_err(|e| e.to_string())?;
        let mut m = BTreeMap::new();
        for (k, v) in rows {
            let rec = Record::decode(&v).map_err(|e| e.to_string())?;
            if !rec.is_live(now) {
                continue;
            }
            let key = keys::user_key(&ks.name, &k)
                .ok_or("bad data key")?
                .to_string();
            let (_, body) = render::representation(&rec);
            m.insert(key, String::from_utf8_lossy(&body).into_owned());
        }
        out.insert(ks.name.clone(), m);
    }
    Ok(out)
}

/// One replica as the checker reads it: its region and the store it left behind.
pub struct Checked<'a> {
    /// Region name.
    pub region: &'a str,
    /// The replica's store.
    pub store: &'a Store,
    /// The HLC time its readers are at.
    pub now: Timestamp,
}

/// The checker of a healed, quiet cluster (every keyspace of [`topology`]). Passes when: all
/// replicas equal (pinned keys: all of [`PINNED_ZONE`]); no byte of a pinned key — record or
/// op-log payload — sits outside [`PINNED_ZONE`]; every key of `sync_acknowledged` is held;
/// every counter equals the sum of its acknowledged increments no acknowledged delete had seen (where that is decidable);
/// every register holds the last-writer-wins winner of its
/// acknowledged writes (so no acknowledged delete is resurrected); every set holds exactly
/// its add-wins members (or, where that is undecidable, only acknowledged members); every map
/// field holds its last-writer-wins patch unless a later delete of the map hides it. Returns
/// the final state of [`EU`], rendered, or what failed.
pub fn check(
    topology: &Topology,
    replicas: &[Checked<'_>],
    history: &History,
    sync_acknowledged: &[String],
) -> Result<String, String> {
    let states: Vec<State> = replicas
        .iter()
        .map(|r| state(topology, r.store, r.now))
        .collect::<Result<_, _>>()?;
    let eu = replicas
        .iter()
        .position(|r| r.region == EU)
        .ok_or("no eu region")?;
    for (i, s) in states.iter().enumerate() {
        let mut a = s.clone();
        let mut b = states[eu].clone();
        let in_zone = PINNED_ZONE.contains(&replicas[i].region);
        if !in_zone {
            a.remove("pinned");
            b.remove("pinned");
        }
        if a != b {
            return Err(format!(
                "replicas differ after the heal: {} = {a:?}, {EU} = {b:?}",
                replicas[i].region
            ));
        }
        if !in_zone {
            if !s["pinned"].is_empty() {
                return Err(format!(
                    "pinned key held in {}: {:?}",
                    replicas[i].region, s["pinned"]
                ));
            }
            check_oplog_has_no_pinned(&replicas[i])?;
        }
    }
    let eu_state = &states[eu];
    for key in sync_acknowledged {
        if !eu_state["orders"].contains_key(key) {
            return Err(format!("acknowledged sync write {key} is lost"));
        }
    }
    for (key, ops) in &history.counters {
        let Some(sum) = expected_count(ops) else {
            continue;
        };
        // A counter that never counted anything but zero, or reset since, reads as absent.
        let got = eu_state["cnt"].get(key).map(String::as_str).unwrap_or("0");
        if got != sum.to_string() {
            return Err(format!(
                "counter {key} = {got}; the acknowledged increments no delete had seen sum to {sum}"
            ));
        }
    }
    for (key, writes) in &history.registers {
        let winner = writes
            .iter()
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|w| w.1.clone());
        let got = eu_state["reg"].get(key).cloned();
        if let Some(expected) = winner
            && got != expected
        {
            return Err(format!(
                "register {key} = {got:?}; the last-writer-wins winner of its acknowledged writes is {expected:?}{}; writes (etag, value): {:?}",
                if expected.is_none() {
                    " (a resurrected delete)"
                } else {
                    ""
                },
                writes
                    .iter()
                    .map(|(v, x)| (v.etag(), x.clone()))
                    .collect::<Vec<_>>()
            ));
        }
    }
    for (key, body) in &eu_state["tags"] {
        if !history.sets.contains_key(key) {
            return Err(format!("set {key} = {body} was never written"));
        }
    }
    for (key, ops) in &history.sets {
        let got: BTreeSet<String> = match eu_state["tags"].get(key) {
            Some(body) => serde_json::from_str(body).map_err(|e| e.to_string())?,
            None => BTreeSet::new(),
        };
        match expected_members(ops) {
            Some(want) if got != want => {
                return Err(format!(
                    "set {key} = {got:?}; its acknowledged adds no remove had seen are {want:?}"
                ));
            }
            Some(_) => {}
            None => {
                let added: BTreeSet<&String> = ops
                    .iter()
                    .filter(|o| o.add.is_some())
                    .map(|o| &o.member)
                    .collect();
                if let Some(m) = got.iter().find(|m| !added.contains(m)) {
                    return Err(format!(
                        "set {key} = {got:?} holds {m}, which no acknowledged add added"
                    ));
                }
            }
        }
    }
    for (key, body) in &eu_state["docs"] {
        if !history.maps.contains_key(key) {
            return Err(format!("map {key} = {body} was never written"));
        }
    }
    for (key, writes) in &history.maps {
        let got: serde_json::Map<String, serde_json::Value> = match eu_state["docs"].get(key) {
            Some(body) => serde_json::from_str(body).map_err(|e| e.to_string())?,
            None => serde_json::Map::new(),
        };
        let want = writes.expected();
        if got != want {
            return Err(format!(
                "map {key} = {got:?}; the last-writer-wins patches of its fields and its deletes \
                 give {want:?}"
            ));
        }
    }
    check_expiring(replicas, eu_state, history)?;
    Ok(format!("{:?}", states[eu]))
}

/// The newest of a `tmp` key's acknowledged writes (version, member, whether it had a TTL).
fn newest_write(writes: &[(Version, String, bool)]) -> Option<&(Version, String, bool)> {
    writes.iter().max_by(|a, b| a.0.cmp(&b.0))
}

/// The first key of keyspace `tmp` whose newest acknowledged write (an add) had a TTL that is
/// still stored in one of `replicas`, and where: once every expiry has passed and collection
/// has settled there is none (expired, reset by its last writer, collected as a tombstone).
pub fn expired_still_stored(
    replicas: &[Checked<'_>],
    history: &History,
) -> Result<Option<String>, String> {
    for (key, adds) in &history.expiring {
        if !newest_write(adds).is_some_and(|w| w.2) {
            continue;
        }
        let dk = keys::data_key("tmp", key);
        for r in replicas {
            if r.store
                .get(Table::Data, &dk)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Ok(Some(format!("tmp/{key} in {}", r.region)));
            }
        }
    }
    Ok(None)
}

/// Keyspace `tmp`, once every expiry has passed and collection has settled: a key whose newest
/// acknowledged write (an add) had a TTL is stored in no replica ([`expired_still_stored`]);
/// one whose newest write (a PUT) had none holds its member, and only members some
/// acknowledged write added.
fn check_expiring(replicas: &[Checked<'_>], eu: &State, history: &History) -> Result<(), String> {
    if let Some(held) = expired_still_stored(replicas, history)? {
        return Err(format!(
            "expired set {held} is still stored after collection settled"
        ));
    }
    for (key, adds) in &history.expiring {
        let Some((_, member, ttl)) = newest_write(adds) else {
            continue;
        };
        if *ttl {
            continue;
        }
        let got: BTreeSet<String> = match eu["tmp"].get(key) {
            Some(body) => serde_json::from_str(body).map_err(|e| e.to_string())?,
            None => BTreeSet::new(),
        };
        if !got.contains(member) {
            return Err(format!(
                "set tmp/{key} = {got:?} lacks {member}, put by its newest write (no TTL)"
            ));
        }
        if let Some(m) = got.iter().find(|m| !adds.iter().any(|a| a.1 == **m)) {
            return Err(format!(
                "set tmp/{key} = {got:?} holds {m}, which no acknowledged write added"
            ));
        }
    }
    for (key, body) in &eu["tmp"] {
        if !history.expiring.contains_key(key) {
            return Err(format!("set tmp/{key} = {body} was never written"));
        }
    }
    Ok(())
}

/// The first record of any replica that no reader sees (deleted, or expired) — after the
/// final collection rounds there is none: every tombstone, whichever way the record died, is
/// collected once every region has applied what killed it.
pub fn dead_record(replicas: &[Checked<'_>]) -> Result<Option<String>, String> {
    for r in replicas {
        for (k, v) in r
            .store
            .scan(Table::Data, b"", None, usize::MAX)
            .map_err(|e| e.to_string())?
        {
            let rec = Record::decode(&v).map_err(|e| e.to_string())?;
            if !rec.is_live(r.now) {
                let (ks, key) = keys::split_data_key(&k).unwrap_or_default();
                let index = |prefix: &[u8]| -> Result<bool, String> {
                    let at = [prefix, &k[..]].concat();
                    Ok(r.store
                        .get(Table::Meta, &at)
                        .map_err(|e| e.to_string())?
                        .is_some())
                };
                return Ok(Some(format!(
                    "{ks}/{key} in {} (version {}.{}; awaiting collection: {}, awaiting its op: {})",
                    r.region,
                    rec.version.ts,
                    rec.version.origin,
                    index(keys::TOMB_PREFIX)?,
                    index(keys::REANCHOR_PREFIX)?,
                )));
            }
        }
    }
    Ok(None)
}

/// No op-log entry of a pinned key outside its zone carries more than a bare skip.
fn check_oplog_has_no_pinned(r: &Checked<'_>) -> Result<(), String> {
    let rows = r
        .store
        .scan(Table::OpLog, b"", None, usize::MAX)
        .map_err(|e| e.to_string())?;
    for (_, v) in rows {
        if let LogBody::Op(p) = decode_log_body(&v).map_err(|e| e.to_string())?
            && p.keyspace == "pinned"
        {
            return Err(format!("{} holds a pinned write in its op log", r.region));
        }
    }
    Ok(())
}

/// The topology of a simulated cluster of `n` regions; sync writes wait up to 10 minutes.
pub fn topology(n: usize) -> Topology {
    topology_with(n, "10m")
}

/// The topology of a simulated cluster of `n` regions whose sync writes (keyspace `orders`,
/// quorum 2) wait up to `sync_timeout` (a duration such as `3s`) for their quorum.
///
/// # Panics
/// When `sync_timeout` is not a duration the topology format accepts.
pub fn topology_with(n: usize, sync_timeout: &str) -> Topology {
    let mut text = format!(
        "[cluster]\nname = \"sim\"\n\n[zones]\neu = [\"{}\", \"{}\"]\n",
        PINNED_ZONE[0], PINNED_ZONE[1]
    );
    for (i, r) in REGIONS.iter().take(n).enumerate() {
        text.push_str(&format!(
            "\n[[region]]\nname = \"{r}\"\nnode = \"http://127.0.0.1:{}\"\n",
            7900 + i
        ));
    }
    for (name, kind, extra) in [
        ("reg", "register", ""),
        ("cnt", "counter", ""),
        ("tags", "set", ""),
        ("docs", "map", ""),
        ("tmp", "set", ""),
        ("pinned", "register", "residency = \"eu\"\n"),
        ("homed", "register", "writer = \"home\"\n"),
        (
            "orders",
            "register",
            &format!("replication = \"sync\"\nquorum = 2\nsync_timeout = \"{sync_timeout}\"\n"),
        ),
    ] {
        text.push_str(&format!(
            "\n[[keyspace]]\nname = \"{name}\"\ntype = \"{kind}\"\n{extra}"
        ));
    }
    // invariant: the generated text is a valid topology (a test parses every size)
    meridian_core::config::parse("sim.toml", &text).expect("invariant: valid sim topology")
}

/// Runs one seeded simulation of `n` regions (3 to 5) for `steps` scheduler steps.
pub async fn run(seed: u64, n: usize, steps: usize) -> Result<Report, Failure> {
    let mut sim = Sim::new(seed, n);
    let result = sim.drive(steps).await;
    result.map_err(|message| Failure {
        seed,
        message,
        trace_tail: if std::env::var("MERIDIAN_SIM_TRACE").is_ok() {
            sim.trace.clone()
        } else {
            sim.trace.iter().rev().take(25).rev().cloned().collect()
        },
    })
}

struct Sim {
    rng: StdRng,
    topology: Arc<Topology>,
    now: Arc<AtomicU64>,
    replicas: Vec<Replica>,
    /// Directed pairs (from, to) whose deliveries are cut.
    cut: BTreeSet<(usize, usize)>,
    history: History,
    trace: Vec<String>,
    deliveries: usize,
    kills: usize,
    collected: (usize, usize, usize),
    settling: bool,
    /// Kills per replica so far: a sync write whose origin was killed while it waited has an
    /// unknown outcome (its client saw the connection drop), and is not counted.
    generation: Vec<usize>,
    pending_sync: Vec<PendingSync>,
    /// Data keys damaged so far (each at most once a run).
    damaged: BTreeSet<Vec<u8>>,
    repaired: usize,
    /// Per replica, per data key a digest comparison changed: the writes the record may hold
    /// beyond what the replica has applied.
    brought: Vec<BTreeMap<Vec<u8>, VersionVector>>,
}

/// A sync write waiting for its quorum while the schedule goes on.
struct PendingSync {
    key: String,
    origin: usize,
    generation: usize,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Arc::new(AtomicU64::new(START_MS));
        let topology = Arc::new(topology(n));
        let replicas = REGIONS
            .iter()
            .take(n)
            .map(|name| Replica {
                name,
                store: Store::in_memory(StoreOptions::default()),
                clock: SimClock {
                    now: Arc::clone(&now),
                    offset_ms: rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS),
                },
                node: None,
            })
            .collect();
        let mut sim = Sim {
            rng,
            topology,
            now,
            replicas,
            cut: BTreeSet::new(),
            history: History::default(),
            trace: Vec::new(),
            deliveries: 0,
            kills: 0,
            collected: (0, 0, 0),
            settling: false,
            generation: vec![0; n],
            pending_sync: Vec::new(),
            damaged: BTreeSet::new(),
            repaired: 0,
            brought: vec![BTreeMap::new(); n],
        };
        for i in 0..n {
            sim.restart(i);
        }
        sim
    }

    fn restart(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let node = Node::new(
            Arc::clone(&self.topology),
            r.name,
            r.store.clone(),
            Arc::new(r.clock.clone()),
            NodeConfig::default(),
        );
        // invariant: the region is in the topology and the in-memory store always reads
        r.node = Some(node.expect("invariant: a simulated node starts"));
    }

    async fn drive(&mut self, steps: usize) -> Result<Report, String> {
        let n = self.replicas.len();
        for step in 0..steps {
            let roll = self.rng.random_range(0..100u32);
            match roll {
                0..28 => self.write(step).await?,
                28..32 => self.sync_write(step).await?,
                32..40 => self.collect_garbage().await?,
                40..76 => {
                    let (a, b) = self.pair();
                    self.deliver(a, b).await?;
                }
                76..80 => {
                    let (a, b) = self.pair();
                    self.repair(a, b).await?;
                }
                80..88 => {
                    let (a, b) = self.pair();
                    if !self.cut.remove(&(a, b)) {
                        self.cut.insert((a, b));
                    }
                    self.note(format!(
                        "toggle one-way cut {} -> {}",
                        self.name(a),
                        self.name(b)
                    ));
                }
                88..91 => {
                    let a = self.rng.random_range(0..n);
                    for b in (0..n).filter(|b| *b != a) {
                        self.cut.insert((a, b));
                        self.cut.insert((b, a));
                    }
                    self.note(format!("isolate {}", self.name(a)));
                }
                91..95 => {
                    self.cut.clear();
                    self.note("heal all".into());
                }
                95..98 => {
                    let live: Vec<usize> = (0..n)
                        .filter(|i| self.replicas[*i].node.is_some())
                        .collect();
                    if live.len() > 1 {
                        let i = live[self.rng.random_range(0..live.len())];
                        self.replicas[i].node = None;
                        self.generation[i] += 1;
                        self.kills += 1;
                        self.note(format!("kill {}", self.name(i)));
                    }
                }
                _ => {
                    if let Some(i) = (0..n).find(|i| self.replicas[*i].node.is_none()) {
                        if self.rng.random_bool(0.5) {
                            self.damage(i)?;
                        }
                        self.restart(i);
                        self.note(format!("restart {}", self.name(i)));
                    }
                }
            }
            let dt = self.rng.random_range(0..40u64);
            self.now.fetch_add(dt, Ordering::SeqCst);
        }
        self.cut.clear();
        for i in 0..n {
            if self.replicas[i].node.is_none() {
                self.restart(i);
            }
        }
        self.note("heal all, restart all, deliver until quiet".into());
        self.settling = true;
        self.quiesce().await?;
        self.repair_all().await?;
        // Collect at one region after another, each then writing and sending its writes to the
        // others at once: keys it collected are written again while regions after it still
        // hold their tombstones.
        for _ in 0..2 {
            for i in 0..n {
                self.collect_at(i).await?;
                for k in 0..AFTER_COLLECTION_WRITES {
                    self.write_at(i, STEPS_AFTER + k).await?;
                }
                for j in (0..n).filter(|j| *j != i) {
                    self.deliver(i, j).await?;
                }
            }
            self.quiesce().await?;
        }
        self.note("collected one region after another, writing between".into());
        // Collect everywhere (twice: tombstones go in two phases), deliver again, and check: no
        // collection may change what any region serves.
        for _ in 0..2 {
            for i in 0..n {
                self.collect_at(i).await?;
            }
            self.quiesce().await?;
        }
        // Past every expiry (TTLs and clock offsets included): sweep, then collect until the
        // expired records are reset (watermarks out, confirmed, the reset sent) and their
        // tombstones collected (two more rounds).
        self.now.fetch_add(
            MAX_TTL_MS + 2 * MAX_SKEW_MS as u64 + 1_000,
            Ordering::SeqCst,
        );
        self.note("past every expiry: sweep and collect everywhere".into());
        for i in 0..n {
            self.sweep_at(i).await?;
        }
        for _ in 0..5 {
            for i in 0..n {
                self.collect_at(i).await?;
            }
            self.quiesce().await?;
        }
        let acknowledged = self.settle_sync_writes().await?;
        self.check(&acknowledged)
    }

    fn name(&self, i: usize) -> &'static str {
        self.replicas[i].name
    }

    fn note(&mut self, s: String) {
        self.trace.push(s);
    }

    fn pair(&mut self) -> (usize, usize) {
        let n = self.replicas.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        (a, b)
    }

    /// `to` pulls from `from`, unless either is dead or the link is cut.
    async fn deliver(&mut self, from: usize, to: usize) -> Result<usize, String> {
        if self.cut.contains(&(from, to)) {
            return Ok(0);
        }
        let (Some(src), Some(dst)) = (&self.replicas[from].node, &self.replicas[to].node) else {
            return Ok(0);
        };
        // Deliveries are partial during the schedule (a stream's batch, with the sender's heads
        // and watermark possibly ahead of it; sometimes only those, as when they lead a batch
        // on a stream) and whole while settling.
        let max = if self.settling {
            usize::MAX
        } else if self.rng.random_bool(0.2) {
            0
        } else {
            self.rng.random_range(1..=12)
        };
        let moved = meridian_node::repl::exchange(src, dst, max)
            .await
            .map_err(|e| format!("delivery {} -> {}: {e}", self.name(from), self.name(to)))?;
        if moved > 0 {
            self.deliveries += 1;
            self.note(format!(
                "deliver {} -> {}: {moved}",
                self.name(from),
                self.name(to)
            ));
        }
        Ok(moved)
    }

    /// `to` compares digests with `from` and merges in what differs, unless either is down or
    /// the link is cut either way (a comparison is requests and their answers). The second
    /// look at the digests follows the first at once: nothing changes between the two here.
    async fn repair(&mut self, from: usize, to: usize) -> Result<usize, String> {
        if self.cut.contains(&(from, to)) || self.cut.contains(&(to, from)) {
            return Ok(0);
        }
        let (Some(src), Some(dst)) = (&self.replicas[from].node, &self.replicas[to].node) else {
            return Ok(0);
        };
        let before = records(&self.replicas[to].store)?;
        let zero = std::time::Duration::ZERO;
        let changed = compare_and_repair(dst, src, zero, &mut 0)
            .await
            .map_err(|e| {
                format!(
                    "digest repair {} <- {}: {e}",
                    self.name(to),
                    self.name(from)
                )
            })?;
        if changed > 0 {
            let applied = src.applied().borrow().clone();
            for (key, record) in records(&self.replicas[to].store)? {
                if before.get(&key) == Some(&record) {
                    continue;
                }
                let mut vv = applied.clone();
                if let Some(b) = self.brought[from].get(&key) {
                    vv.merge(b);
                }
                self.brought[to].entry(key).or_default().merge(&vv);
            }
            self.repaired += changed;
            self.note(format!(
                "digest repair {} <- {}: {changed}",
                self.name(to),
                self.name(from)
            ));
        }
        Ok(changed)
    }

    /// Digest comparisons between every ordered pair, until a round changes nothing.
    async fn repair_all(&mut self) -> Result<(), String> {
        let n = self.replicas.len();
        for _ in 0..10 {
            let mut changed = 0;
            for a in 0..n {
                for b in (0..n).filter(|b| *b != a) {
                    changed += self.repair(b, a).await?;
                }
            }
            if changed == 0 {
                return Ok(());
            }
        }
        Err("digest comparisons kept repairing after the heal".into())
    }

    /// Damages up to three registers of the stopped region `i` ([`damage_registers`]). Not
    /// counters, sets or maps: a change made on a damaged one (an increment, a remove, a
    /// delete) carries the damage to every region as a write, which is no longer a divergence
    /// a comparison can see.
    fn damage(&mut self, i: usize) -> Result<(), String> {
        let store = self.replicas[i].store.clone();
        for key in damage_registers(&store, &mut self.rng, &mut self.damaged, 3)? {
            let line = format!("{}: damaged {key}", self.name(i));
            self.note(line);
        }
        Ok(())
    }

    /// An expiry sweep and a garbage-collection pass at a random live node.
    async fn collect_garbage(&mut self) -> Result<(), String> {
        let i = self.rng.random_range(0..self.replicas.len());
        self.sweep_at(i).await?;
        self.collect_at(i).await
    }

    /// An expiry sweep at region `i`, if it is up.
    async fn sweep_at(&mut self, i: usize) -> Result<(), String> {
        let Some(node) = self.replicas[i].node.clone() else {
            return Ok(());
        };
        loop {
            let n = meridian_node::expiry::sweep_once(&node)
                .await
                .map_err(|e| format!("{}: expiry sweep: {e}", self.name(i)))?;
            if n < meridian_node::expiry::SWEEP_BATCH {
                return Ok(());
            }
        }
    }

    /// A garbage-collection pass at region `i`, if it is up; counted and traced.
    async fn collect_at(&mut self, i: usize) -> Result<(), String> {
        let Some(node) = self.replicas[i].node.clone() else {
            return Ok(());
        };
        let c = meridian_node::repl::gc::collect(&node).await?;
        if c.oplog + c.tombstones + c.expired > 0 {
            self.collected.0 += c.oplog;
            self.collected.1 += c.tombstones;
            self.collected.2 += c.expired;
            self.note(format!("{}: collected {c:?}", self.name(i)));
        }
        Ok(())
    }

    /// A sync write of a fresh key at a random live region: committed there now, then waiting
    /// for its quorum while the schedule goes on (later deliveries bring the acknowledgements).
    /// When the quorum is confirmed, it checks that a quorum of regions durably holds it.
    async fn sync_write(&mut self, step: usize) -> Result<(), String> {
        let i = self.rng.random_range(0..self.replicas.len());
        let Some(node) = self.replicas[i].node.clone() else {
            return Ok(());
        };
        let keyspace = self
            .topology
            .keyspace("orders")
            .cloned()
            .ok_or("no orders keyspace")?;
        let key = format!("o{step}");
        let quorum = keyspace.quorum.unwrap_or(1);
        let others: Vec<Store> = (0..self.replicas.len())
            .filter(|j| *j != i)
            .map(|j| self.replicas[j].store.clone())
            .collect();
        // Commit as the write path does, without waiting; the wait is the task below.
        let mut committed = keyspace.clone();
        committed.replication = meridian_core::config::Replication::Async;
        let m = Mutation {
            keyspace: committed,
            key: key.clone(),
            op: Op::Put {
                value: Bytes::from(format!("order-{step}")),
                content_type: "text/plain".into(),
                context: None,
            },
            headers: WriteHeaders {
                content_type: "text/plain".into(),
                ..WriteHeaders::default()
            },
            fingerprint: step as u128,
        };
        let w = write(&node, m)
            .await
            .map_err(|e| format!("sync write {key} refused: {e}"))?;
        let seq = w
            .outcome
            .session
            .as_deref()
            .and_then(|t| meridian_core::version::VersionVector::parse_token(t).ok())
            .map(|vv| vv.get(node.region()))
            .ok_or("a committed write answers its session token")?;
        let k = key.clone();
        let task = tokio::spawn(async move {
            meridian_node::repl::wait_quorum(&node, &keyspace, None, seq)
                .await
                .map_err(|e| format!("sync write {k}: {e}"))?;
            let dk = keys::data_key("orders", &k);
            let holders = others
                .iter()
                .filter(|s| matches!(s.get(Table::Data, &dk), Ok(Some(_))))
                .count()
                + 1;
            if holders < quorum {
                return Err(format!(
                    "sync write {k} acknowledged while only {holders} region(s) held it (quorum {quorum})"
                ));
            }
            Ok(())
        });
        self.note(format!(
            "{}: sync write orders/{key} committed, waiting",
            self.name(i)
        ));
        self.pending_sync.push(PendingSync {
            key,
            origin: i,
            generation: self.generation[i],
            task,
        });
        Ok(())
    }

    /// After the heal, every sync write whose origin survived must be acknowledged; returns the
    /// acknowledged keys. One whose origin was killed meanwhile has an unknown outcome.
    async fn settle_sync_writes(&mut self) -> Result<Vec<String>, String> {
        let mut acknowledged = Vec::new();
        for p in std::mem::take(&mut self.pending_sync) {
            if self.generation[p.origin] != p.generation {
                p.task.abort();
                continue;
            }
            let waited = tokio::time::timeout(std::time::Duration::from_secs(10), p.task).await;
            match waited {
                Ok(Ok(Ok(()))) => acknowledged.push(p.key),
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(e)) => return Err(format!("sync write {} task failed: {e}", p.key)),
                Err(_) => {
                    return Err(format!(
                        "sync write {} never acknowledged after the heal, its origin alive",
                        p.key
                    ));
                }
            }
        }
        Ok(acknowledged)
    }

    async fn quiesce(&mut self) -> Result<(), String> {
        let n = self.replicas.len();
        for _ in 0..100 {
            let mut moved = 0;
            for a in 0..n {
                for b in (0..n).filter(|b| *b != a) {
                    moved += self.deliver(a, b).await?;
                }
            }
            if moved == 0 {
                return Ok(());
            }
        }
        Err("deliveries never went quiet after the heal".into())
    }

    async fn write(&mut self, step: usize) -> Result<(), String> {
        let i = self.rng.random_range(0..self.replicas.len());
        self.write_at(i, step).await
    }

    /// A random write at region `i` (nothing when it is down).
    async fn write_at(&mut self, i: usize, step: usize) -> Result<(), String> {
        let Some(node) = self.replicas[i].node.clone() else {
            return Ok(());
        };
        let region = self.name(i);
        // Keyspace `tmp` only during the schedule: its checks need every expiry passed.
        let kinds = if self.settling { 5 } else { 6 };
        let kind = self.rng.random_range(0..kinds);
        let mut ttl = None;
        let (ks, key, op) = match kind {
            0 if self.rng.random_bool(0.1) => {
                let key = format!("c{}", self.rng.random_range(0..3));
                ("cnt", key, Op::Delete { context: None })
            }
            0 => {
                let by = self.rng.random_range(-5..=10i64);
                let key = format!("c{}", self.rng.random_range(0..3));
                ("cnt", key, Op::Incr { by })
            }
            1 => {
                let key = format!("r{}", self.rng.random_range(0..3));
                if self.rng.random_bool(0.25) {
                    ("reg", key, Op::Delete { context: None })
                } else {
                    let value = Bytes::from(format!("{region}-{step}"));
                    (
                        "reg",
                        key,
                        Op::Put {
                            value,
                            content_type: "text/plain".into(),
                            context: None,
                        },
                    )
                }
            }
            2 => {
                let key = format!("s{}", self.rng.random_range(0..2));
                let member = format!("m{}", self.rng.random_range(0..5));
                if self.rng.random_bool(0.6) {
                    (
                        "tags",
                        key,
                        Op::Add {
                            members: vec![member],
                        },
                    )
                } else {
                    (
                        "tags",
                        key,
                        Op::Remove {
                            members: vec![member],
                        },
                    )
                }
            }
            3 if self.rng.random_bool(0.15) => {
                let key = format!("d{}", self.rng.random_range(0..2));
                ("docs", key, Op::Delete { context: None })
            }
            3 => {
                let key = format!("d{}", self.rng.random_range(0..2));
                let field = format!("f{}", self.rng.random_range(0..4));
                let value = if self.rng.random_bool(0.2) {
                    serde_json::Value::Null
                } else {
                    serde_json::json!(step)
                };
                let mut fields = serde_json::Map::new();
                fields.insert(field, value);
                ("docs", key, Op::Patch { fields })
            }
            5 => {
                let key = format!("t{}", self.rng.random_range(0..3));
                if self.rng.random_bool(0.7) {
                    ttl = Some(std::time::Duration::from_millis(
                        self.rng.random_range(50..=MAX_TTL_MS),
                    ));
                }
                let member = format!("{region}-{step}");
                // An add keeps a live key's expiry unless it sets one; a PUT without a TTL
                // clears it.
                let op = match ttl {
                    Some(_) => Op::Add {
                        members: vec![member],
                    },
                    None => Op::Put {
                        value: Bytes::from(format!("[\"{member}\"]")),
                        content_type: "application/json".into(),
                        context: None,
                    },
                };
                ("tmp", key, op)
            }
            _ => {
                let value = Bytes::from(format!("PINNED-{region}-{step}"));
                (
                    "pinned",
                    "p0".to_string(),
                    Op::Put {
                        value,
                        content_type: "text/plain".into(),
                        context: None,
                    },
                )
            }
        };
        let keyspace = self
            .topology
            .keyspace(ks)
            .cloned()
            .ok_or("unknown keyspace")?;
        let op_for_history = op.clone();
        // What the region has applied before the write, and what comparisons brought to the
        // record: the adds and increments its change can see.
        let mut seen = node.applied().borrow().clone();
        if let Some(b) = self.brought[i].get(&keys::data_key(ks, &key)) {
            seen.merge(b);
        }
        let m = Mutation {
            keyspace,
            key: key.clone(),
            op,
            headers: WriteHeaders {
                content_type: "text/plain".into(),
                ttl,
                ..WriteHeaders::default()
            },
            fingerprint: step as u128,
        };
        let result = write(&node, m).await;
        self.note(format!(
            "{region}: {ks}/{key} {op_for_history:?} ttl {ttl:?} -> {:?} session {:?} seen {}",
            result
                .as_ref()
                .map(|w| w.outcome.status)
                .map_err(|e| e.code),
            result.as_ref().ok().and_then(|w| w.outcome.session.clone()),
            seen.to_token()
        ));
        match (ks, result) {
            ("pinned", Err(e)) if !PINNED_ZONE.contains(&region) && e.code == "residency" => Ok(()),
            ("pinned", Ok(_)) if !PINNED_ZONE.contains(&region) => Err(format!(
                "{region} accepted a write to a key pinned to {PINNED_ZONE:?}"
            )),
            (_, Err(e)) => Err(format!("{region}: write {ks}/{key} refused: {e}")),
            (_, Ok(w)) => self.history.record(Acknowledged {
                region,
                keyspace: ks,
                key,
                op: op_for_history,
                etag: w.outcome.etag.as_deref(),
                session: w.outcome.session.as_deref(),
                seen: Some(seen),
                ttl: ttl.is_some(),
            }),
        }
    }

    fn check(&self, sync_acknowledged: &[String]) -> Result<Report, String> {
        let replicas = self
            .replicas
            .iter()
            .map(|r| {
                let node = r.node.as_ref().ok_or("dead replica at check")?;
                Ok(Checked {
                    region: r.name,
                    store: &r.store,
                    now: node.now(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let final_state = check(&self.topology, &replicas, &self.history, sync_acknowledged)?;
        if let Some(dead) = dead_record(&replicas)? {
            return Err(format!("{dead} is dead and was not collected"));
        }
        Ok(Report {
            writes: self.history.writes(),
            deliveries: self.deliveries,
            kills: self.kills,
            collected: self.collected,
            sync_acknowledged: sync_acknowledged.len(),
            damaged_repaired: (self.damaged.len(), self.repaired),
            final_state,
        })
    }
}

/// Damages up to `most` registers of keyspaces `reg` and `orders` in `store` (of a stopped
/// node) in place: each value loses its last byte under the same version — still a value, and
/// ordered below the true one, so merging the true one from another region mends it, as bit
/// rot or a bad restore would need. Keys in `damaged` are left alone and the ones damaged are
/// added to it (a key damaged once a run, another region still holds what it lost). Returns
/// the damaged keys as `keyspace/key`.
///
/// # Errors
/// When the store fails to read or write.
pub fn damage_registers(
    store: &Store,
    rng: &mut StdRng,
    damaged: &mut BTreeSet<Vec<u8>>,
    most: usize,
) -> Result<Vec<String>, String> {
    let mut candidates = Vec::new();
    for ks in ["reg", "orders", "pinned"] {
        let prefix = keys::data_key(ks, "");
        store
            .scan_each(Table::Data, &prefix, None, |k, v| {
                if !damaged.contains(k)
                    && let Ok(record) = Record::decode(v)
                    && let Some(cut) = cut_short(&record)
                {
                    candidates.push((k.to_vec(), cut));
                }
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
    }
    let mut done = Vec::new();
    while done.len() < most && !candidates.is_empty() {
        let (key, record) = candidates.swap_remove(rng.random_range(0..candidates.len()));
        let (k, bytes) = (key.clone(), record.encode());
        store
            .transact_blocking(move |txn| txn.put(Table::Data, &k, &bytes))
            .map_err(|e| e.to_string())?;
        done.push(String::from_utf8_lossy(&key).replace('\0', "/"));
        damaged.insert(key);
    }
    Ok(done)
}

/// `record` with its register's value one byte shorter, or `None` when it is not a register
/// with a value of two bytes or more.
fn cut_short(record: &Record) -> Option<Record> {
    let mut record = record.clone();
    let Value::Register(r) = &mut record.value else {
        return None;
    };
    let cut = r.value.as_ref().filter(|v| v.len() > 1)?;
    let cut = cut.slice(..cut.len() - 1);
    r.value = Some(cut);
    Some(record)
}

/// Every data record of `store`, by data key.
fn records(store: &Store) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    store
        .scan_each(Table::Data, b"", None, |k, v| {
            out.insert(k.to_vec(), v.to_vec());
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn parse_etag(etag: Option<&str>) -> Result<Version, String> {
    etag.and_then(Version::parse_etag)
        .ok_or_else(|| format!("write answered no valid ETag: {etag:?}"))
}
