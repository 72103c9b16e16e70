//! CRDT laws, checked on random histories: 2–4 replicas, each writing with its own origin and
//! HLC, exchanging deltas and whole states in random order, duplicated and interleaved. Every
//! replica mirrors its history in a naive model (tagged adds plus tombstones, merged by union)
//! that is obviously right; after everything is delivered all replicas must be equal and agree
//! with the model's answer for the type.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use meridian_core::KeyspaceType;
use meridian_core::hlc::Hlc;
use meridian_core::op::{Op, WriteMeta, apply};
use meridian_core::record::{Record, Value};
use meridian_core::version::{Version, VersionVector};
use proptest::prelude::*;
use proptest::sample::Index;

/// A model event: `(origin, sequence)`.
type Tag = (String, u64);

/// What a model event carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Payload {
    /// A counter increment.
    Incr(i64),
    /// A set member or an mvregister sibling value.
    Item(String),
    /// A register write (`None`: delete).
    Register(Version, Option<u8>),
    /// A map patch (`None`: remove the field).
    Patch(Version, BTreeMap<String, Option<i64>>),
    /// A map replace.
    Replace(Version, BTreeMap<String, i64>),
    /// A whole-map delete.
    Clear(Version),
}

/// Naive state: every add ever seen and every tag ever removed; merge is union.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    adds: BTreeMap<Tag, Payload>,
    tombs: BTreeSet<Tag>,
}

impl Model {
    fn merge(&mut self, other: &Model) {
        self.adds
            .extend(other.adds.iter().map(|(t, p)| (t.clone(), p.clone())));
        self.tombs.extend(other.tombs.iter().cloned());
    }

    fn live(&self) -> impl Iterator<Item = (&Tag, &Payload)> {
        self.adds.iter().filter(|(t, _)| !self.tombs.contains(*t))
    }

    fn live_tags(&self, keep: impl Fn(&Payload) -> bool) -> BTreeSet<Tag> {
        self.live()
            .filter(|(_, p)| keep(p))
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Which causal context an mvregister write carries.
#[derive(Clone, Debug)]
enum Ctx {
    None,
    Current,
    Captured(Index),
}

/// A generated client action.
#[derive(Clone, Debug)]
enum Action {
    Put(u8, Ctx),
    Delete(Ctx),
    Incr(i64),
    Add(Vec<u8>),
    Remove(Vec<u8>),
    PutSet(Vec<u8>),
    Patch(Vec<(u8, Option<i64>)>),
    PutMap(Vec<(u8, i64)>),
    /// mvregister: remember the current context for a later (stale) write.
    Capture,
}

#[derive(Clone, Debug)]
enum Step {
    Write {
        replica: Index,
        skew: i64,
        action: Action,
    },
    Deliver {
        to: Index,
        delta: Index,
        twice: bool,
    },
    Sync {
        from: Index,
        to: Index,
    },
}

fn ctx() -> impl Strategy<Value = Ctx> {
    prop_oneof![
        Just(Ctx::None),
        Just(Ctx::Current),
        any::<Index>().prop_map(Ctx::Captured)
    ]
}

fn names() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..4)
}

fn action(kind: KeyspaceType) -> BoxedStrategy<Action> {
    match kind {
        KeyspaceType::Register => prop_oneof![
            3 => any::<u8>().prop_map(|v| Action::Put(v, Ctx::None)),
            1 => Just(Action::Delete(Ctx::None)),
        ]
        .boxed(),
        KeyspaceType::MvRegister => prop_oneof![
            4 => (any::<u8>(), ctx()).prop_map(|(v, c)| Action::Put(v, c)),
            1 => ctx().prop_map(Action::Delete),
            1 => Just(Action::Capture),
        ]
        .boxed(),
        KeyspaceType::Counter => prop_oneof![
            5 => (-1000i64..=1000).prop_map(Action::Incr),
            1 => Just(Action::Delete(Ctx::None)),
        ]
        .boxed(),
        KeyspaceType::Set => prop_oneof![
            4 => names().prop_map(Action::Add),
            2 => names().prop_map(Action::Remove),
            1 => names().prop_map(Action::PutSet),
            1 => Just(Action::Delete(Ctx::None)),
        ]
        .boxed(),
        KeyspaceType::Map => prop_oneof![
            4 => prop::collection::vec((0u8..3, prop::option::weighted(0.7, -5i64..5)), 0..3)
                .prop_map(Action::Patch),
            1 => prop::collection::vec((0u8..3, -5i64..5), 0..3).prop_map(Action::PutMap),
            1 => Just(Action::Delete(Ctx::None)),
        ]
        .boxed(),
    }
}

fn step(kind: KeyspaceType) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<Index>(), -1000i64..=1000, action(kind))
            .prop_map(|(replica, skew, action)| Step::Write { replica, skew, action }),
        3 => (any::<Index>(), any::<Index>(), any::<bool>())
            .prop_map(|(to, delta, twice)| Step::Deliver { to, delta, twice }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

fn member(n: u8) -> String {
    format!("m{n}")
}

fn field(n: u8) -> String {
    format!("f{n}")
}

struct Replica {
    origin: String,
    hlc: Hlc,
    wall: u64,
    state: Option<Record>,
    model: Model,
    /// Model events issued here so far.
    seq: u64,
    /// mvregister puts issued here so far (the dot counter of the next one, minus one).
    mv_puts: u64,
    /// Captured mvregister contexts with the model tags live when captured.
    captured: Vec<(VersionVector, BTreeSet<Tag>)>,
}

impl Replica {
    fn merge(&mut self, record: &Record, model: &Model) {
        // Observing keeps later local versions above what was seen; a skew error is harmless here.
        let _ = self.hlc.observe(record.version.ts, self.wall);
        match &mut self.state {
            Some(s) => s.merge(record).expect("one kind per history"),
            None => self.state = Some(record.clone()),
        }
        self.model.merge(model);
    }

    fn context(&self) -> VersionVector {
        match &self.state {
            Some(Record {
                value: Value::MvRegister(r),
                ..
            }) => r.context().clone(),
            _ => VersionVector::default(),
        }
    }

    fn tag(&mut self) -> Tag {
        self.seq += 1;
        (self.origin.clone(), self.seq)
    }

    /// The op and its model delta, or `None` for a capture.
    fn plan(&mut self, kind: KeyspaceType, action: &Action, v: &Version) -> Option<(Op, Model)> {
        let mut d = Model::default();
        let live_all = self.model.live_tags(|_| true);
        let op = match action {
            Action::Capture => {
                self.captured.push((self.context(), live_all));
                return None;
            }
            Action::Put(b, c) if kind == KeyspaceType::MvRegister => {
                let (context, seen) = self.pick(c, &live_all);
                // An mvregister delta is the origin's whole new state.
                d = self.model.clone();
                self.mv_puts += 1;
                d.adds.insert(
                    (self.origin.clone(), self.mv_puts),
                    Payload::Item(b.to_string()),
                );
                d.tombs.extend(seen.unwrap_or_default());
                Op::Put {
                    value: Bytes::from(b.to_string()),
                    content_type: "t".into(),
                    context,
                }
            }
            Action::Delete(c) if kind == KeyspaceType::MvRegister => {
                let (context, seen) = self.pick(c, &live_all);
                d = self.model.clone();
                d.tombs.extend(seen.unwrap_or(live_all));
                Op::Delete { context }
            }
            Action::Put(b, _) => {
                d.adds
                    .insert(self.tag(), Payload::Register(v.clone(), Some(*b)));
                Op::Put {
                    value: Bytes::from(vec![*b]),
                    content_type: "t".into(),
                    context: None,
                }
            }
            Action::Delete(_) => {
                match kind {
                    KeyspaceType::Register => {
                        d.adds
                            .insert(self.tag(), Payload::Register(v.clone(), None));
                    }
                    KeyspaceType::Map => {
                        d.adds.insert(self.tag(), Payload::Clear(v.clone()));
                    }
                    KeyspaceType::Counter => {
                        // An observed reset: everything seen travels along and is reset.
                        d.adds = self.model.adds.clone();
                        d.tombs = self.model.adds.keys().cloned().collect();
                    }
                    _ => d.tombs = live_all,
                }
                Op::Delete { context: None }
            }
            Action::Incr(by) => {
                // A counter delta carries the origin's running total: all its increments.
                let own = self
                    .model
                    .adds
                    .iter()
                    .filter(|((o, _), _)| *o == self.origin);
                d.adds = own.map(|(t, p)| (t.clone(), p.clone())).collect();
                d.adds.insert(self.tag(), Payload::Incr(*by));
                Op::Incr { by: *by }
            }
            Action::Add(ns) | Action::PutSet(ns) => {
                let names: BTreeSet<String> = ns.iter().map(|n| member(*n)).collect();
                d.tombs = if matches!(action, Action::PutSet(_)) {
                    live_all
                } else {
                    self.model
                        .live_tags(|p| matches!(p, Payload::Item(m) if names.contains(m)))
                };
                for name in &names {
                    d.adds.insert(self.tag(), Payload::Item(name.clone()));
                }
                let members: Vec<String> = ns.iter().map(|n| member(*n)).collect();
                if matches!(action, Action::PutSet(_)) {
                    let body = serde_json::to_vec(&members).expect("strings serialize");
                    Op::Put {
                        value: body.into(),
                        content_type: "t".into(),
                        context: None,
                    }
                } else {
                    Op::Add { members }
                }
            }
            Action::Remove(ns) => {
                let names: BTreeSet<String> = ns.iter().map(|n| member(*n)).collect();
                d.tombs = self
                    .model
                    .live_tags(|p| matches!(p, Payload::Item(m) if names.contains(m)));
                Op::Remove {
                    members: names.into_iter().collect(),
                }
            }
            Action::Patch(fs) => {
                let fields: BTreeMap<String, Option<i64>> =
                    fs.iter().map(|(f, x)| (field(*f), *x)).collect();
                let json = fields
                    .iter()
                    .map(|(f, x)| (f.clone(), serde_json::json!(x)));
                d.adds
                    .insert(self.tag(), Payload::Patch(v.clone(), fields.clone()));
                Op::Patch {
                    fields: json.collect(),
                }
            }
            Action::PutMap(fs) => {
                let fields: BTreeMap<String, i64> =
                    fs.iter().map(|(f, x)| (field(*f), *x)).collect();
                d.adds
                    .insert(self.tag(), Payload::Replace(v.clone(), fields.clone()));
                let body = serde_json::to_vec(&fields).expect("map serializes");
                Op::Put {
                    value: body.into(),
                    content_type: "t".into(),
                    context: None,
                }
            }
        };
        Some((op, d))
    }

    /// The context to send and the model tags it removes (`None`: no context).
    fn pick(
        &self,
        c: &Ctx,
        live: &BTreeSet<Tag>,
    ) -> (Option<VersionVector>, Option<BTreeSet<Tag>>) {
        match c {
            Ctx::Current => (Some(self.context()), Some(live.clone())),
            Ctx::Captured(i) if !self.captured.is_empty() => {
                let (vv, seen) = i.get(&self.captured);
                (
                    Some(vv.clone()),
                    Some(live.intersection(seen).cloned().collect()),
                )
            }
            _ => (None, None),
        }
    }
}

/// splitmix64, to derive delivery orders from one seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

struct Outcome {
    replicas: Vec<Replica>,
    /// Every delta ever produced, with its model delta.
    log: Vec<(Record, Model)>,
    /// States seen in the middle of the history.
    snapshots: Vec<Record>,
}

fn simulate(kind: KeyspaceType, n: usize, steps: &[Step], seed: u64) -> Outcome {
    let mut replicas: Vec<Replica> = (0..n)
        .map(|i| Replica {
            origin: format!("region-{i}"),
            hlc: Hlc::new(60_000),
            wall: 1_700_000_000_000,
            state: None,
            model: Model::default(),
            seq: 0,
            mv_puts: 0,
            captured: Vec::new(),
        })
        .collect();
    let mut log: Vec<(Record, Model)> = Vec::new();
    let mut snapshots = Vec::new();
    for s in steps {
        match s {
            Step::Write {
                replica,
                skew,
                action,
            } => {
                let r = replica.get_mut(&mut replicas);
                r.wall = r.wall.saturating_add_signed(*skew);
                let version = Version {
                    ts: r.hlc.now(r.wall),
                    origin: r.origin.clone(),
                };
                let Some((op, model)) = r.plan(kind, action, &version) else {
                    continue;
                };
                let meta = WriteMeta {
                    version,
                    expires: None,
                    home: None,
                    floor: Default::default(),
                };
                let delta = apply(kind, r.state.as_ref(), &op, &meta).expect("valid op");
                assert_eq!(delta.kind(), kind);
                r.merge(&delta, &model);
                log.push((delta, model));
            }
            Step::Deliver { to, delta, twice } => {
                if log.is_empty() {
                    continue;
                }
                let (d, m) = delta.get(&log);
                let r = to.get_mut(&mut replicas);
                for _ in 0..if *twice { 2 } else { 1 } {
                    r.merge(d, m);
                }
            }
            Step::Sync { from, to } => {
                let src = from.get(&replicas);
                let (state, model) = (src.state.clone(), src.model.clone());
                if let Some(state) = state {
                    snapshots.push(state.clone());
                    to.get_mut(&mut replicas).merge(&state, &model);
                }
            }
        }
    }
    // Deliver everything to everyone, each replica in its own shuffled order.
    for (i, r) in replicas.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..log.len()).collect();
        order.sort_by_key(|&j| mix(seed ^ mix(i as u64) ^ mix(j as u64 + 1000)));
        for j in order {
            let (d, m) = &log[j];
            r.merge(d, m);
        }
    }
    Outcome {
        replicas,
        log,
        snapshots,
    }
}

fn merged(a: &Record, b: &Record) -> Record {
    let mut out = a.clone();
    out.merge(b).expect("one kind per history");
    out
}

/// What the model says the converged state must show, checked against `record`.
fn check_oracle(kind: KeyspaceType, record: &Record, model: &Model) -> Result<(), TestCaseError> {
    let newest = model.adds.values().filter_map(|p| match p {
        Payload::Register(v, _)
        | Payload::Patch(v, _)
        | Payload::Replace(v, _)
        | Payload::Clear(v) => Some(v.clone()),
        _ => None,
    });
    if let Some(newest) = newest.max() {
        prop_assert_eq!(
            &record.version,
            &newest,
            "the record's version is the newest write"
        );
    }
    match &record.value {
        Value::Register(r) => {
            // Deterministic LWW: the highest (ts, origin) wins.
            let winner = model
                .adds
                .values()
                .filter_map(|p| match p {
                    Payload::Register(v, b) => Some((v.clone(), *b)),
                    _ => None,
                })
                .max();
            let (version, value) = winner.expect("a register history has a write");
            prop_assert_eq!(&r.version, &version);
            prop_assert_eq!(r.value.as_deref(), value.as_ref().map(std::slice::from_ref));
        }
        Value::MvRegister(r) => {
            // Concurrent writes stay siblings; a context write removes exactly what it saw.
            let expect: BTreeMap<Tag, String> = model
                .live()
                .map(|(t, p)| match p {
                    Payload::Item(v) => (t.clone(), v.clone()),
                    other => panic!("not an mvregister event: {other:?}"),
                })
                .collect();
            let got: BTreeMap<Tag, String> = r
                .siblings()
                .map(|s| {
                    let value = String::from_utf8(s.value.to_vec()).expect("utf-8 values");
                    ((s.dot.origin.clone(), s.dot.counter), value)
                })
                .collect();
            prop_assert_eq!(got, expect);
        }
        Value::Counter(c) => {
            // Every increment counts unless a delete observed it.
            let sum: i64 = model
                .live()
                .map(|(_, p)| match p {
                    Payload::Incr(by) => *by,
                    other => panic!("not a counter event: {other:?}"),
                })
                .sum();
            prop_assert_eq!(c.value(), sum);
            prop_assert!(!c.is_empty() || sum == 0);
        }
        Value::Set(s) => {
            // Add wins: a member stays unless every add of it was observed by a remove.
            let expect: BTreeSet<&str> = model
                .live()
                .map(|(_, p)| match p {
                    Payload::Item(m) => m.as_str(),
                    other => panic!("not a set event: {other:?}"),
                })
                .collect();
            prop_assert_eq!(s.members().collect::<BTreeSet<_>>(), expect);
        }
        Value::Map(m) => {
            // Per field LWW, hidden by a newer whole-map delete or replace.
            let mut writes: BTreeMap<String, (Version, Option<i64>)> = BTreeMap::new();
            let mut cleared: Option<Version> = None;
            for p in model.adds.values() {
                let mut write = |f: &String, v: &Version, x: Option<i64>| {
                    let slot = writes.entry(f.clone()).or_insert((v.clone(), x));
                    if *v > slot.0 {
                        *slot = (v.clone(), x);
                    }
                };
                match p {
                    Payload::Patch(v, fs) => fs.iter().for_each(|(f, x)| write(f, v, *x)),
                    Payload::Replace(v, fs) => {
                        fs.iter().for_each(|(f, x)| write(f, v, Some(*x)));
                        cleared = cleared.max(Some(v.clone()));
                    }
                    Payload::Clear(v) => cleared = cleared.max(Some(v.clone())),
                    other => panic!("not a map event: {other:?}"),
                }
            }
            let expect: serde_json::Map<String, serde_json::Value> = writes
                .into_iter()
                .filter(|(_, (v, _))| cleared.as_ref().is_none_or(|c| v >= c))
                .filter_map(|(f, (_, x))| Some((f, serde_json::json!(x?))))
                .collect();
            prop_assert_eq!(m.to_json(), expect);
        }
    }
    prop_assert_eq!(kind, record.kind());
    Ok(())
}

fn run(kind: KeyspaceType, n: usize, steps: &[Step], seed: u64) -> Result<(), TestCaseError> {
    let out = simulate(kind, n, steps, seed);
    // Convergence: every replica holds the same state (and the same model).
    let first = &out.replicas[0];
    for r in &out.replicas[1..] {
        prop_assert_eq!(&r.state, &first.state, "{} vs {}", r.origin, first.origin);
        prop_assert_eq!(&r.model, &first.model);
    }
    if let Some(state) = &first.state {
        check_oracle(kind, state, &first.model)?;
    } else {
        prop_assert!(out.log.is_empty());
    }
    // Merge laws over deltas, mid-history states and final states.
    let mut pool: Vec<Record> = out.log.iter().map(|(d, _)| d.clone()).collect();
    pool.extend(out.snapshots);
    pool.extend(first.state.clone());
    for (i, a) in pool.iter().enumerate() {
        let b = &pool[mix(seed ^ i as u64) as usize % pool.len()];
        let c = &pool[mix(seed.rotate_left(7) ^ i as u64) as usize % pool.len()];
        prop_assert_eq!(merged(a, a), a.clone(), "idempotent");
        prop_assert_eq!(merged(a, b), merged(b, a), "commutative");
        prop_assert_eq!(
            merged(&merged(a, b), c),
            merged(a, &merged(b, c)),
            "associative"
        );
        prop_assert_eq!(
            &Record::decode(&a.encode()).expect("round trip"),
            a,
            "encoding"
        );
    }
    Ok(())
}

fn history(kind: KeyspaceType) -> impl Strategy<Value = (usize, Vec<Step>, u64)> {
    (
        2usize..=4,
        prop::collection::vec(step(kind), 1..40),
        any::<u64>(),
    )
}

proptest! {
    #[test]
    fn register_laws((n, steps, seed) in history(KeyspaceType::Register)) {
        run(KeyspaceType::Register, n, &steps, seed)?;
    }

    #[test]
    fn mvregister_laws((n, steps, seed) in history(KeyspaceType::MvRegister)) {
        run(KeyspaceType::MvRegister, n, &steps, seed)?;
    }

    #[test]
    fn counter_laws((n, steps, seed) in history(KeyspaceType::Counter)) {
        run(KeyspaceType::Counter, n, &steps, seed)?;
    }

    #[test]
    fn set_laws((n, steps, seed) in history(KeyspaceType::Set)) {
        run(KeyspaceType::Set, n, &steps, seed)?;
    }

    #[test]
    fn map_laws((n, steps, seed) in history(KeyspaceType::Map)) {
        run(KeyspaceType::Map, n, &steps, seed)?;
    }
}
