//! Group-commit throughput: 64 concurrent async writers, 256-byte values, `Durability::Fsync`.
//!
//! `cargo run --release -p meridian-store --example throughput [DIR] [SECONDS]`
//! (default: a temporary directory, 3 seconds). Prints transactions/s, fsyncs/s and the mean
//! group size.

use meridian_store::{Store, StoreOptions, Table};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WRITERS: usize = 64;
const VALUE_LEN: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let seconds: u64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let store = Store::open(&dir, StoreOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let before = store.stats();
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            runtime.spawn(async move {
                let value = vec![b'v'; VALUE_LEN];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("bench/{writer:02}/{i:010}").into_bytes();
                    let value = value.clone();
                    store
                        .transact(move |txn| txn.put(Table::Data, &key, &value))
                        .await?;
                    i += 1;
                }
                Ok::<_, meridian_store::Error>(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for writer in writers {
            writer.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.stats();
    let transactions = after.transactions_committed - before.transactions_committed;
    let fsyncs = after.fsyncs - before.fsyncs;
    let groups = after.group_commits - before.group_commits;
    println!(
        "{WRITERS} writers x {VALUE_LEN} B, Fsync, {elapsed:.2} s: {:.0} transactions/s, \
         {:.0} fsyncs/s, mean group size {:.1} ({} transactions, {} groups, {} fsyncs)",
        transactions as f64 / elapsed,
        fsyncs as f64 / elapsed,
        transactions as f64 / groups.max(1) as f64,
        transactions,
        groups,
        fsyncs
    );
    Ok(())
}
