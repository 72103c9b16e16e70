//! Unit tests of the public API on both backends.

use crate::{Durability, Error, FORMAT_VERSION_KEY, Store, StoreOptions, Table};
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Waker};

type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Runs `check` against a fresh on-disk store and a fresh in-memory store.
fn on_both(check: impl Fn(&Store)) {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let disk = Store::open(dir.path(), StoreOptions::default()).expect("invariant: open");
    check(&disk);
    check(&Store::in_memory(StoreOptions::default()));
}

fn put(store: &Store, table: Table, key: &[u8], value: &[u8]) {
    let (key, value) = (key.to_vec(), value.to_vec());
    store
        .transact_blocking(move |txn| txn.put(table, &key, &value))
        .expect("invariant: put commits");
}

fn pairs(items: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    items
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Occupies the writer with a transaction that waits until the returned sender is used, so
/// transactions submitted meanwhile form one group. Returns the release and the blocker's
/// thread.
fn block_writer(store: &Store) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocker = store.clone();
    let thread = std::thread::spawn(move || {
        blocker
            .transact_blocking(move |_| {
                entered_tx.send(()).expect("invariant: test waits");
                release_rx.recv().expect("invariant: test releases");
            })
            .expect("invariant: blocker commits");
    });
    entered_rx.recv().expect("invariant: blocker runs");
    (release_tx, thread)
}

/// Polls each future once, in order (which queues its transaction), then releases the writer
/// and waits for all of them.
fn submit_in_order<T: Send>(
    store: &Store,
    futures: impl FnOnce(&Store) -> Vec<Pending<'_, T>>,
) -> Vec<Result<T, Error>> {
    let (release, blocker) = block_writer(store);
    let mut futures = futures(store);
    let mut cx = Context::from_waker(Waker::noop());
    for future in &mut futures {
        assert!(future.as_mut().poll(&mut cx).is_pending());
    }
    release.send(()).expect("invariant: blocker waits");
    blocker.join().expect("invariant: blocker thread");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("invariant: runtime");
    futures.into_iter().map(|f| runtime.block_on(f)).collect()
}

#[test]
fn get_put_delete_round_trip() {
    on_both(|store| {
        assert_eq!(store.get(Table::Data, b"k").expect("get"), None);
        put(store, Table::Data, b"k", b"v1");
        put(store, Table::OpLog, b"k", b"other table");
        assert_eq!(
            store.get(Table::Data, b"k").expect("get"),
            Some(b"v1".to_vec())
        );
        put(store, Table::Data, b"k", b"v2");
        assert_eq!(
            store.get(Table::Data, b"k").expect("get"),
            Some(b"v2".to_vec())
        );
        store
            .transact_blocking(|txn| txn.delete(Table::Data, b"k"))
            .expect("delete");
        assert_eq!(store.get(Table::Data, b"k").expect("get"), None);
        assert_eq!(
            store.get(Table::OpLog, b"k").expect("get"),
            Some(b"other table".to_vec())
        );
    });
}

#[test]
fn scan_honours_prefix_after_and_limit() {
    on_both(|store| {
        for key in ["a", "ab", "abc", "abd", "b", "ac"] {
            put(store, Table::Data, key.as_bytes(), key.as_bytes());
        }
        let scan = |prefix: &[u8], after: Option<&[u8]>, limit| {
            store.scan(Table::Data, prefix, after, limit).expect("scan")
        };
        assert_eq!(
            scan(b"ab", None, 10),
            pairs(&[("ab", "ab"), ("abc", "abc"), ("abd", "abd")])
        );
        assert_eq!(
            scan(b"ab", Some(b"ab"), 10),
            pairs(&[("abc", "abc"), ("abd", "abd")])
        );
        assert_eq!(scan(b"ab", Some(b"abc"), 1), pairs(&[("abd", "abd")]));
        assert_eq!(scan(b"a", None, 2), pairs(&[("a", "a"), ("ab", "ab")]));
        assert_eq!(scan(b"a", Some(b"b"), 10), Vec::new());
        assert_eq!(scan(b"", Some(b"ac"), 10), pairs(&[("b", "b")]));
        assert_eq!(scan(b"", None, 0), Vec::new());
        assert_eq!(
            store.scan(Table::OpLog, b"", None, 10).expect("scan"),
            Vec::new()
        );
    });
}

#[test]
fn txn_reads_see_own_writes_and_committed_data() {
    on_both(|store| {
        put(store, Table::Data, b"x1", b"old");
        put(store, Table::Data, b"x2", b"two");
        let seen = store
            .transact_blocking(|txn| {
                let before = txn.get(Table::Data, b"x1").expect("get");
                txn.put(Table::Data, b"x1", b"new");
                txn.put(Table::Data, b"x3", b"three");
                txn.delete(Table::Data, b"x2");
                let after = txn.get(Table::Data, b"x1").expect("get");
                let gone = txn.get(Table::Data, b"x2").expect("get");
                let scan = txn.scan(Table::Data, b"x", None, 10).expect("scan");
                (before, after, gone, scan)
            })
            .expect("transact");
        assert_eq!(seen.0, Some(b"old".to_vec()));
        assert_eq!(seen.1, Some(b"new".to_vec()));
        assert_eq!(seen.2, None);
        assert_eq!(seen.3, pairs(&[("x1", "new"), ("x3", "three")]));
        assert_eq!(
            store.scan(Table::Data, b"x", None, 10).expect("scan"),
            pairs(&[("x1", "new"), ("x3", "three")])
        );
    });
}

#[test]
fn later_transactions_of_a_group_see_earlier_ones() {
    on_both(|store| {
        put(store, Table::Data, b"k0", b"committed");
        let groups_before = store.stats().group_commits;
        let results = submit_in_order(store, |store| {
            vec![
                Box::pin(store.transact(|txn| {
                    txn.put(Table::Data, b"k1", b"one");
                    txn.delete(Table::Data, b"k0");
                    Vec::new()
                })),
                Box::pin(store.transact(|txn| {
                    let seen = txn.scan(Table::Data, b"k", None, 10).expect("scan");
                    txn.put(Table::Data, b"k2", b"two");
                    seen
                })),
                Box::pin(store.transact(|txn| {
                    let mut seen = txn.scan(Table::Data, b"k", Some(b"k0"), 10).expect("scan");
                    txn.put(Table::Data, b"k1", b"uno");
                    let own = txn
                        .get(Table::Data, b"k1")
                        .expect("get")
                        .expect("k1 is set");
                    seen.push((b"own".to_vec(), own));
                    seen
                })),
            ]
        });
        let results: Vec<_> = results.into_iter().map(|r| r.expect("commits")).collect();
        assert_eq!(results[1], pairs(&[("k1", "one")]));
        assert_eq!(
            results[2],
            pairs(&[("k1", "one"), ("k2", "two"), ("own", "uno")])
        );
        // The blocker's group, then exactly one group for the three transactions.
        assert_eq!(store.stats().group_commits, groups_before + 2);
        assert_eq!(
            store.scan(Table::Data, b"k", None, 10).expect("scan"),
            pairs(&[("k1", "uno"), ("k2", "two")])
        );
    });
}

#[test]
fn a_panicking_closure_loses_only_its_own_writes() {
    on_both(|store| {
        let panicked_before = store.stats().transactions_panicked;
        let results = submit_in_order(store, |store| {
            vec![
                Box::pin(store.transact(|txn| {
                    txn.put(Table::Data, b"a", b"1");
                    None
                })),
                Box::pin(store.transact(|txn| {
                    txn.put(Table::Data, b"b", b"2");
                    txn.put(Table::OpLog, b"b", b"2");
                    panic!("deliberate panic in a transaction closure");
                })),
                Box::pin(store.transact(|txn| {
                    let b = txn.get(Table::Data, b"b").expect("get");
                    txn.put(Table::Data, b"c", b"3");
                    b
                })),
            ]
        });
        assert!(matches!(results[0], Ok(None)));
        assert!(matches!(results[1], Err(Error::TransactionPanicked)));
        assert!(matches!(results[2], Ok(None)), "b must not be visible");
        assert_eq!(
            store.get(Table::Data, b"a").expect("get"),
            Some(b"1".to_vec())
        );
        assert_eq!(store.get(Table::Data, b"b").expect("get"), None);
        assert_eq!(store.get(Table::OpLog, b"b").expect("get"), None);
        assert_eq!(
            store.get(Table::Data, b"c").expect("get"),
            Some(b"3".to_vec())
        );
        assert_eq!(store.stats().transactions_panicked, panicked_before + 1);
        // The writer survived.
        put(store, Table::Data, b"d", b"4");
    });
}

#[tokio::test]
async fn transact_works_from_async_code() {
    let store = Store::in_memory(StoreOptions::default());
    let previous = store
        .transact(|txn| {
            let previous = txn.get(Table::Idempotency, b"req-1").expect("get");
            txn.put(Table::Idempotency, b"req-1", b"201");
            previous
        })
        .await
        .expect("transact");
    assert_eq!(previous, None);
    assert_eq!(
        store.get(Table::Idempotency, b"req-1").expect("get"),
        Some(b"201".to_vec())
    );
}

#[test]
fn stats_count_transactions_groups_and_fsyncs() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let before = store.stats();
    for i in 0..3u8 {
        put(&store, Table::Data, &[i], b"12345");
    }
    let after = store.stats();
    assert_eq!(
        after.transactions_committed,
        before.transactions_committed + 3
    );
    assert_eq!(after.group_commits, before.group_commits + 3);
    assert_eq!(after.fsyncs, before.fsyncs + 3);
    assert_eq!(after.bytes_written, before.bytes_written + 18);

    let buffered = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), buffered).expect("open");
    put(&store, Table::Data, b"k", b"v");
    assert_eq!(store.stats().fsyncs, 0);
    assert!(store.stats().transactions_committed >= 1);
}

#[cfg(target_os = "linux")]
#[test]
fn a_flushed_table_is_synced_while_fjall_writes_it() {
    let buffered = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), buffered).expect("open");
    assert_eq!(store.stats().writeback_syncs, 0);
    // 12 MiB of distinct keys: more than one memtable (8 MiB), so one is flushed to a table.
    for batch in 0..48u32 {
        let value = vec![7u8; 4096];
        store
            .transact_blocking(move |txn| {
                for i in 0..64u32 {
                    txn.put(Table::Data, &(batch * 64 + i).to_be_bytes(), &value);
                }
            })
            .expect("write");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // One sync at least: how many 1 MiB steps the thread sees depends on how fast fjall writes
    // the table (an optimized build writes it in a few of the thread's looks); the steps
    // themselves are writeback's own test.
    while store.stats().writeback_syncs < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no table was synced while written: {:?}",
            store.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// With `slice_deletes`, the tables fjall writes get their second name in `trash/` (the
/// freeing itself is the `trash` module's tests), and nothing committed is lost while the
/// thread runs, nor after a reopen.
#[cfg(unix)]
#[test]
fn deleted_files_go_through_the_trash_and_nothing_is_lost() {
    let opts = StoreOptions {
        durability: Durability::Buffered,
        slice_deletes: Some(true),
        ..StoreOptions::default()
    };
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), opts).expect("open");
    // 4 KiB that compress poorly, different for each key and round.
    let value = |key: u32, round: u32| {
        let mut x = u64::from(key) << 32 | u64::from(round) | 1;
        (0..512)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect::<Vec<u8>>()
    };
    // Four rounds of 12 MiB over the same keys: memtables are flushed to tables, and as L0
    // fills, tables are compacted away and deleted.
    for round in 0..4u32 {
        for batch in 0..48u32 {
            store
                .transact_blocking(move |txn| {
                    for key in batch * 64..(batch + 1) * 64 {
                        txn.put(Table::Data, &key.to_be_bytes(), &value(key, round));
                    }
                })
                .expect("write");
        }
    }
    let trash = dir.path().join("trash");
    let linked = || {
        std::fs::read_dir(&trash)
            .map(|entries| entries.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while linked() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's files were not linked into trash/: {:?}",
            store.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let all_latest = |store: &Store| {
        for k in 0..48 * 64u32 {
            assert_eq!(
                store.get(Table::Data, &k.to_be_bytes()).expect("get"),
                Some(value(k, 3)),
                "key {k}"
            );
        }
    };
    all_latest(&store);
    drop(store);
    let store = Store::open(dir.path(), opts).expect("reopen");
    all_latest(&store);
}

#[test]
fn reopen_keeps_committed_data_and_format_version() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    assert_eq!(
        store.get(Table::Meta, FORMAT_VERSION_KEY).expect("get"),
        Some(1u32.to_be_bytes().to_vec())
    );
    put(&store, Table::Data, b"kept", b"yes");
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(
        store.get(Table::Data, b"kept").expect("get"),
        Some(b"yes".to_vec())
    );
}

#[test]
fn dropping_the_last_handle_commits_queued_transactions() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let (release, blocker) = block_writer(&store);
    let queued = store.clone();
    let mut future = Box::pin(async move {
        queued
            .transact(|txn| txn.put(Table::Data, b"queued", b"1"))
            .await
    });
    let mut cx = Context::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    drop(store);
    release.send(()).expect("invariant: blocker waits");
    blocker.join().expect("invariant: blocker thread");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("invariant: runtime");
    runtime
        .block_on(future)
        .expect("queued transaction commits");
    // The future held the last handle; it is gone now, so the directory is free again.
    let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(
        store.get(Table::Data, b"queued").expect("get"),
        Some(b"1".to_vec())
    );
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    put(&store, Table::Meta, FORMAT_VERSION_KEY, &2u32.to_be_bytes());
    drop(store);
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("format 2 must be refused");
    assert!(
        matches!(
            error,
            Error::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("was written by store format 2"),
        "{message}"
    );
    assert!(message.contains("this build reads format 1"), "{message}");
    assert!(message.contains("fresh --data directory"), "{message}");
}

#[test]
fn garbled_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    put(&store, Table::Meta, FORMAT_VERSION_KEY, b"1");
    drop(store);
    let error = Store::open(dir.path(), StoreOptions::default()).err();
    assert!(
        matches!(error, Some(Error::CorruptFormatVersion { len: 1, .. })),
        "{error:?}"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("second open must be refused");
    assert!(matches!(error, Error::Locked { .. }), "{error:?}");
    assert!(error.to_string().contains("already in use"), "{error}");
    drop(store);
    Store::open(dir.path(), StoreOptions::default()).expect("open after the first is dropped");
}

#[test]
fn open_creates_a_missing_directory() {
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let nested = dir.path().join("a").join("b");
    let store = Store::open(&nested, StoreOptions::default()).expect("open");
    put(&store, Table::Data, b"k", b"v");
    assert!(nested.is_dir());
}

#[test]
fn invalid_keys_fail_the_transaction_and_keep_the_writer() {
    on_both(|store| {
        let outcome = store.transact_blocking(|txn| {
            txn.put(Table::Data, b"fine", b"1");
            txn.put(Table::Data, b"", b"empty key");
        });
        assert!(
            matches!(
                outcome,
                Err(Error::InvalidKey {
                    table: Table::Data,
                    len: 0
                })
            ),
            "{outcome:?}"
        );
        let long = vec![b'k'; crate::MAX_KEY_LEN + 1];
        let outcome = store.transact_blocking(move |txn| txn.delete(Table::OpLog, &long));
        assert!(
            matches!(outcome, Err(Error::InvalidKey { len: 65_536, .. })),
            "{outcome:?}"
        );
        assert_eq!(store.get(Table::Data, b"fine").expect("get"), None);
        put(
            store,
            Table::Data,
            &[b'k'; crate::MAX_KEY_LEN],
            b"longest key",
        );
        assert_eq!(
            store.scan(Table::Data, b"k", None, 9).expect("scan").len(),
            1
        );
    });
}

#[test]
fn store_and_transact_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let store = Store::in_memory(StoreOptions::default());
    send_sync(&store);
    let future = store.transact(|txn| txn.get(Table::Data, b"k").is_ok());
    send(&future);
}

/// Readers racing a writer through the read cache: a read never returns a value older than
/// one acknowledged before it started, nor older than one any reader saw before it started.
/// A fill from a snapshot taken before a group that wrote the key would keep the old value
/// in the cache and fail the first check; a value cached late would fail the second.
#[test]
fn cached_reads_never_go_back_under_concurrent_writes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const KEYS: usize = 4;
    const WRITES: u64 = 3_000;
    let buffered = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let disk = Store::open(dir.path(), buffered).expect("open");
    for store in [disk, Store::in_memory(StoreOptions::default())] {
        let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let seen: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, acked, seen, done) =
                    (store.clone(), acked.clone(), seen.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !done.load(Ordering::SeqCst) {
                        for k in 0..KEYS {
                            let floor = acked[k].load(Ordering::SeqCst);
                            let before = seen[k].load(Ordering::SeqCst);
                            let value = store
                                .get(Table::Data, format!("k{k}").as_bytes())
                                .expect("get")
                                .map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
                            assert!(
                                value >= floor,
                                "k{k}: read {value} after {floor} was acknowledged"
                            );
                            assert!(
                                value >= before,
                                "k{k}: read {value} after a reader saw {before}"
                            );
                            seen[k].fetch_max(value, Ordering::SeqCst);
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (store, acked) = (store.clone(), acked.clone());
                std::thread::spawn(move || {
                    // Writer `w` owns keys w, w + 2, …, so each key's values only grow.
                    for i in 1..=WRITES {
                        let k = (i as usize * 2 + w) % KEYS;
                        let key = format!("k{k}");
                        store
                            .transact_blocking(move |txn| {
                                txn.put(Table::Data, key.as_bytes(), &i.to_be_bytes());
                            })
                            .expect("put commits");
                        acked[k].fetch_max(i, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::SeqCst);
        let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
        let stats = store.stats();
        assert!(
            reads > 0 && stats.read_cache_hits > 0,
            "the cache was used: {stats:?}"
        );
        for k in 0..KEYS {
            let last = store
                .get(Table::Data, format!("k{k}").as_bytes())
                .expect("get");
            assert_eq!(
                last.map(|v| v.to_vec()),
                Some(acked[k].load(Ordering::SeqCst).to_be_bytes().to_vec())
            );
        }
    }
}

/// Transactions read committed records through the read cache and fill it, and a later group's
/// write to a cached key is what the next transaction and reader see.
#[test]
fn transactions_read_through_the_cache() {
    on_both(|store| {
        put(store, Table::Data, b"k", b"v0");
        let read = |store: &Store| {
            store
                .transact_blocking(|txn| txn.get(Table::Data, b"k").expect("txn get"))
                .expect("txn")
        };
        let before = store.stats().read_cache_hits;
        assert_eq!(read(store), Some(b"v0".to_vec()));
        assert_eq!(read(store), Some(b"v0".to_vec()));
        assert_eq!(
            store.stats().read_cache_hits,
            before + 1,
            "the first read filled it"
        );
        put(store, Table::Data, b"k", b"v1");
        assert_eq!(read(store), Some(b"v1".to_vec()));
        assert_eq!(
            store.get(Table::Data, b"k").expect("get"),
            Some(b"v1".to_vec())
        );
        assert_eq!(
            store.stats().read_cache_hits,
            before + 3,
            "the write kept it cached"
        );
    });
}
