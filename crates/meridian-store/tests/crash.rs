//! Crash safety under SIGKILL: a child process (this test binary, re-executed) commits
//! 3-key transactions from several threads and prints each acknowledged one; the parent kills
//! it at an arbitrary moment, reopens the store and checks that every acknowledged transaction
//! is there and that every transaction is all-or-nothing.

use meridian_store::{Store, StoreOptions, Table};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the child: the store directory to write to.
const CHILD_DIR: &str = "MERIDIAN_STORE_CRASH_CHILD_DIR";
/// Set in the child: distinguishes the transaction ids of successive runs.
const CHILD_ROUND: &str = "MERIDIAN_STORE_CRASH_CHILD_ROUND";
const WRITER_THREADS: usize = 8;
const PARTS: [&str; 3] = ["a", "b", "c"];
/// The child exits on its own after this, in case the parent died without killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

/// The child's body; a no-op unless the parent started this binary with [`CHILD_DIR`] set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).expect("invariant: the parent sets the round");
    let store = Store::open(Path::new(&dir), StoreOptions::default()).expect("child opens");
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|thread| {
            let store = store.clone();
            let round = round.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let id = format!("r{round}-t{thread}-{i:08}");
                    // Payloads of varying length, so torn journal writes would show.
                    let payload = format!("{id}-{}", "x".repeat((i % 200) as usize));
                    let (txn_id, value) = (id.clone(), payload.clone());
                    store
                        .transact_blocking(move |txn| {
                            for part in PARTS {
                                let key = format!("{txn_id}/{part}");
                                txn.put(Table::Data, key.as_bytes(), value.as_bytes());
                            }
                        })
                        .expect("child commits");
                    // One write per line, so a kill never leaves half a line in the pipe.
                    let line = format!("ACK {id} {payload}\n");
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(line.as_bytes()).expect("parent reads");
                    stdout.flush().expect("parent reads");
                }
            })
        })
        .collect();
    std::thread::sleep(CHILD_LIFETIME);
    drop(threads);
    std::process::exit(0);
}

#[test]
fn acknowledged_transactions_survive_sigkill() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("invariant: temp dir");
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().expect("invariant: test binary"))
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("invariant: stdout is piped");
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                if lines.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });

        // Let it run until it has acknowledged a fair number, plus a round-dependent extra, so
        // the kill lands at different points of the group-commit cycle.
        let started = Instant::now();
        let mut round_acks = 0usize;
        let parse = |line: String, acked: &mut BTreeMap<String, String>| {
            let Some(rest) = line.strip_prefix("ACK ") else {
                return 0;
            };
            let rest = rest
                .strip_suffix('\n')
                .expect("an acknowledgement line is written whole");
            let (id, payload) = rest.split_once(' ').expect("ACK <id> <payload>");
            acked.insert(id.to_owned(), payload.to_owned());
            1
        };
        while round_acks < 500 || started.elapsed() < Duration::from_millis(300 + 200 * round) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the child acknowledged only {round_acks} transactions in 20 s"
            );
            if let Ok(line) = received.recv_timeout(Duration::from_millis(50)) {
                round_acks += parse(line, &mut acked);
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        reader.join().expect("invariant: reader thread");
        // Lines already in the pipe were acknowledged before the kill, too.
        for line in received.try_iter() {
            round_acks += parse(line, &mut acked);
        }
        assert!(round_acks > 0);

        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen after kill");
        for (id, payload) in &acked {
            for part in PARTS {
                let key = format!("{id}/{part}");
                let value = store.get(Table::Data, key.as_bytes()).expect("get");
                assert_eq!(
                    value.as_deref(),
                    Some(payload.as_bytes()),
                    "acknowledged key {key} lost or changed after SIGKILL (round {round})"
                );
            }
        }
        let mut by_txn: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (key, value) in store
            .scan(Table::Data, b"r", None, usize::MAX)
            .expect("scan")
        {
            let key = String::from_utf8(key).expect("keys are UTF-8");
            let (id, part) = key.split_once('/').expect("<id>/<part>");
            by_txn
                .entry(id.to_owned())
                .or_default()
                .push((part.to_owned(), value));
        }
        for (id, parts) in &by_txn {
            let names: Vec<_> = parts.iter().map(|(part, _)| part.as_str()).collect();
            assert_eq!(
                names, PARTS,
                "transaction {id} is torn after SIGKILL (round {round})"
            );
            assert!(
                parts.iter().all(|(_, value)| *value == parts[0].1),
                "transaction {id} mixes payloads after SIGKILL (round {round})"
            );
        }
        assert!(by_txn.len() >= acked.len());
        eprintln!(
            "round {round}: {round_acks} acknowledged, {} transactions on disk, {} \
             acknowledged in total",
            by_txn.len(),
            acked.len()
        );
    }
}
