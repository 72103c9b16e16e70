//! Model-based test: the fjall store and the in-memory store against a `BTreeMap` per table,
//! over random sequences of transactions (single and grouped, some panicking), reads, prefix
//! scans and reopens. Both stores read through their read cache (the in-memory one through a
//! cache of a few entries).

use meridian_store::{Error, FORMAT_VERSION, FORMAT_VERSION_KEY, Store, StoreOptions, Table, Txn};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Waker};

type Key = Vec<u8>;
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

const PANIC_MESSAGE: &str = "deliberate panic from the model test";

#[derive(Clone, Debug)]
enum TxnOp {
    Put(Table, Key, Vec<u8>),
    Delete(Table, Key),
    Get(Table, Key),
    Scan(Table, Key, Option<Key>, usize),
}

#[derive(Clone, Debug)]
struct TxnSpec {
    ops: Vec<TxnOp>,
    panics: bool,
}

impl TxnSpec {
    /// Whether the transaction writes an empty key, which fails it with `InvalidKey`.
    fn writes_empty_key(&self) -> bool {
        self.ops.iter().any(|op| match op {
            TxnOp::Put(_, k, _) | TxnOp::Delete(_, k) => k.is_empty(),
            TxnOp::Get(..) | TxnOp::Scan(..) => false,
        })
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// One transaction, waited for before the next op.
    Txn(TxnSpec),
    /// Several transactions queued back to back, so they may share a group.
    Group(Vec<TxnSpec>),
    Get(Table, Key),
    Scan(Table, Key, Option<Key>, usize),
    /// Drop the on-disk store and open its directory again.
    Reopen,
}

#[derive(Debug, PartialEq, Eq)]
enum Observed {
    Value(Option<Vec<u8>>),
    Pairs(Pairs),
}

#[derive(Clone, Debug)]
struct Model(BTreeMap<Table, BTreeMap<Key, Vec<u8>>>);

impl Model {
    fn new() -> Model {
        let mut tables: BTreeMap<Table, BTreeMap<Key, Vec<u8>>> = Table::ALL
            .into_iter()
            .map(|t| (t, BTreeMap::new()))
            .collect();
        tables.entry(Table::Meta).or_default().insert(
            FORMAT_VERSION_KEY.to_vec(),
            FORMAT_VERSION.to_be_bytes().to_vec(),
        );
        Model(tables)
    }

    fn table(&self, table: Table) -> &BTreeMap<Key, Vec<u8>> {
        self.0
            .get(&table)
            .expect("invariant: every table is in the model")
    }

    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.table(table).get(key).cloned()
    }

    fn scan(&self, table: Table, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Pairs {
        self.table(table)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Applies a transaction; returns what its reads must observe and, if it panics, nothing
    /// of it is kept.
    fn transact(&mut self, spec: &TxnSpec) -> Vec<Observed> {
        let mut next = self.clone();
        let mut observed = Vec::new();
        for op in &spec.ops {
            match op {
                TxnOp::Put(t, k, v) => {
                    next.0.entry(*t).or_default().insert(k.clone(), v.clone());
                }
                TxnOp::Delete(t, k) => {
                    next.0.entry(*t).or_default().remove(k);
                }
                TxnOp::Get(t, k) => observed.push(Observed::Value(next.get(*t, k))),
                TxnOp::Scan(t, p, a, l) => {
                    observed.push(Observed::Pairs(next.scan(*t, p, a.as_deref(), *l)));
                }
            }
        }
        if !spec.panics && !spec.writes_empty_key() {
            *self = next;
        }
        observed
    }
}

fn run_in_txn(txn: &mut Txn<'_>, spec: &TxnSpec) -> Vec<Observed> {
    let mut observed = Vec::new();
    for op in &spec.ops {
        match op {
            TxnOp::Put(t, k, v) => txn.put(*t, k, v),
            TxnOp::Delete(t, k) => txn.delete(*t, k),
            TxnOp::Get(t, k) => observed.push(Observed::Value(txn.get(*t, k).expect("txn get"))),
            TxnOp::Scan(t, p, a, l) => observed.push(Observed::Pairs(
                txn.scan(*t, p, a.as_deref(), *l).expect("txn scan"),
            )),
        }
    }
    if spec.panics {
        panic!("{PANIC_MESSAGE}");
    }
    observed
}

fn check_outcome(
    name: &str,
    outcome: Result<Vec<Observed>, Error>,
    spec: &TxnSpec,
    expected: &[Observed],
) -> Result<(), TestCaseError> {
    if spec.panics {
        prop_assert!(
            matches!(outcome, Err(Error::TransactionPanicked)),
            "{name}: a panicking transaction must report TransactionPanicked, got {outcome:?}"
        );
    } else if spec.writes_empty_key() {
        prop_assert!(
            matches!(outcome, Err(Error::InvalidKey { len: 0, .. })),
            "{name}: writing an empty key must report InvalidKey, got {outcome:?}"
        );
    } else {
        let observed = outcome.map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        prop_assert_eq!(
            observed.as_slice(),
            expected,
            "{}: reads inside the transaction",
            name
        );
    }
    Ok(())
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Vec<Observed>, Error>> + Send + 'a>>;

/// Runs `specs` in order as one group: the writer is held inside a blocking transaction while
/// they are queued, so it then drains them together.
fn run_as_one_group(
    store: &Store,
    specs: &[TxnSpec],
    runtime: &tokio::runtime::Runtime,
) -> Vec<Result<Vec<Observed>, Error>> {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let mut cx = Context::from_waker(Waker::noop());
    let mut blocker = Box::pin(store.transact(move |_| {
        entered_tx
            .send(())
            .expect("invariant: the test waits for the blocker");
        release_rx
            .recv()
            .expect("invariant: the test releases the blocker");
    }));
    assert!(blocker.as_mut().poll(&mut cx).is_pending());
    entered_rx
        .recv()
        .expect("invariant: the writer runs the blocker");
    let mut futures: Vec<Pending<'_>> = specs
        .iter()
        .map(|spec| {
            let owned = spec.clone();
            Box::pin(store.transact(move |txn| run_in_txn(txn, &owned))) as Pending<'_>
        })
        .collect();
    for future in &mut futures {
        // The first poll queues the transaction; it cannot finish while the writer is held.
        assert!(future.as_mut().poll(&mut cx).is_pending());
    }
    release_tx.send(()).expect("invariant: the blocker waits");
    runtime
        .block_on(blocker)
        .expect("invariant: the blocker commits");
    futures.into_iter().map(|f| runtime.block_on(f)).collect()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open the store under test")
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let mut disk = open(dir.path());
    // A cache of a few entries, so the in-memory store also evicts and refills.
    let memory = Store::in_memory(StoreOptions {
        read_cache_bytes: 400,
        ..StoreOptions::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("invariant: runtime");
    let mut model = Model::new();

    for op in ops {
        match op {
            Op::Txn(spec) => {
                let expected = model.transact(spec);
                for (name, store) in [("disk", &disk), ("memory", &memory)] {
                    let owned = spec.clone();
                    let outcome = store.transact_blocking(move |txn| run_in_txn(txn, &owned));
                    check_outcome(name, outcome, spec, &expected)?;
                }
            }
            Op::Group(specs) => {
                let expected: Vec<_> = specs.iter().map(|s| model.transact(s)).collect();
                for (name, store) in [("disk", &disk), ("memory", &memory)] {
                    let outcomes = run_as_one_group(store, specs, &runtime);
                    for ((outcome, spec), expected) in
                        outcomes.into_iter().zip(specs).zip(&expected)
                    {
                        check_outcome(name, outcome, spec, expected)?;
                    }
                }
            }
            Op::Get(table, key) => {
                let expected = model.get(*table, key);
                prop_assert_eq!(
                    disk.get(*table, key).expect("get"),
                    expected.clone(),
                    "disk"
                );
                prop_assert_eq!(memory.get(*table, key).expect("get"), expected, "memory");
            }
            Op::Scan(table, prefix, after, limit) => {
                let expected = model.scan(*table, prefix, after.as_deref(), *limit);
                let scan = |s: &Store| s.scan(*table, prefix, after.as_deref(), *limit);
                prop_assert_eq!(scan(&disk).expect("scan"), expected.clone(), "disk");
                prop_assert_eq!(scan(&memory).expect("scan"), expected.clone(), "memory");
                let each = |s: &Store| {
                    let mut out = Vec::new();
                    s.scan_each(*table, prefix, after.as_deref(), |k, v| {
                        if out.len() == *limit {
                            return ControlFlow::Break(());
                        }
                        out.push((k.to_vec(), v.to_vec()));
                        ControlFlow::Continue(())
                    })
                    .map(|()| out)
                };
                prop_assert_eq!(
                    each(&disk).expect("scan_each"),
                    expected.clone(),
                    "disk, each"
                );
                prop_assert_eq!(each(&memory).expect("scan_each"), expected, "memory, each");
            }
            Op::Reopen => {
                drop(disk);
                disk = open(dir.path());
            }
        }
    }

    // Finally every table, in full, after one more reopen.
    drop(disk);
    let disk = open(dir.path());
    for table in Table::ALL {
        let expected = model.scan(table, b"", None, usize::MAX);
        prop_assert_eq!(
            disk.scan(table, b"", None, usize::MAX).expect("scan"),
            expected.clone()
        );
        prop_assert_eq!(
            memory.scan(table, b"", None, usize::MAX).expect("scan"),
            expected
        );
    }
    Ok(())
}

/// Mostly `Data`, so transactions of a group often touch the same keys.
fn table() -> impl Strategy<Value = Table> {
    prop_oneof![
        6 => Just(Table::Data),
        1 => Just(Table::OpLog),
        1 => Just(Table::Idempotency),
        1 => Just(Table::Meta),
    ]
}

/// Short keys over a tiny alphabet, so prefixes, `after` bounds and overwrites collide often;
/// rarely the empty key, which is a valid prefix but an invalid key to write.
fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        30 => prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0xff]), 1..3),
        1 => Just(Vec::new()),
    ]
}

/// Scan prefixes: often empty.
fn prefix() -> impl Strategy<Value = Key> {
    prop_oneof![
        1 => Just(Vec::new()),
        3 => prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0xff]), 1..3),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        4 => (table(), key(), value()).prop_map(|(t, k, v)| TxnOp::Put(t, k, v)),
        2 => (table(), key()).prop_map(|(t, k)| TxnOp::Delete(t, k)),
        2 => (table(), key()).prop_map(|(t, k)| TxnOp::Get(t, k)),
        1 => (table(), prefix(), prop::option::of(key()), 0..5usize)
            .prop_map(|(t, p, a, l)| TxnOp::Scan(t, p, a, l)),
    ]
}

fn txn_spec() -> impl Strategy<Value = TxnSpec> {
    (
        prop::collection::vec(txn_op(), 0..6),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(ops, panics)| TxnSpec { ops, panics })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => txn_spec().prop_map(Op::Txn),
        3 => prop::collection::vec(txn_spec(), 2..8).prop_map(Op::Group),
        3 => (table(), key()).prop_map(|(t, k)| Op::Get(t, k)),
        3 => (table(), prefix(), prop::option::of(key()), 0..5usize)
            .prop_map(|(t, p, a, l)| Op::Scan(t, p, a, l)),
        1 => Just(Op::Reopen),
    ]
}

/// Keeps the deliberate panics of the model's transactions out of the test output.
fn silence_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>().map(String::as_str);
        if message != Some(PANIC_MESSAGE) {
            default(info);
        }
    }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn stores_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(silence_deliberate_panics);
        run(&ops)?;
    }
}
