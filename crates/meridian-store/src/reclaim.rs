//! Frees what fjall's trees let go of — flushed memtables, tables compacted away — on a thread
//! of its own instead of under a tree's version lock.
//!
//! lsm-tree keeps each tree's versions behind one lock that every write takes (shared) to reach
//! the active memtable. Its background workers take that lock exclusively to install a flush or
//! a compaction and to drop versions no snapshot needs, and whatever the last dropped version
//! held is freed right there: a flushed memtable (an 8 MiB skiplist, freed node by node), or a
//! table compacted away (its file unlinked, its index freed). Meanwhile the store's writer waits
//! — `bench/kv` on tmpfs at 12,500 PUT/s saw it blocked up to 20 ms at a time in the tree's
//! insert, each time behind such a drop (scheduler trace, docs/BENCHMARKS.md, session 13).
//!
//! This thread holds one more reference to each memtable it sees active and to each version it
//! sees current, so the tree's drop under its lock only counts down, and the freeing happens
//! here: a memtable once this thread holds its last reference, a version once it is older than
//! every version the tree keeps. It changes nothing fjall decides — what is flushed,
//! compacted or deleted, and when — only where the memory and files are released, a moment
//! later. A memtable or version that comes and goes between two looks is freed as before.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

// `AbstractTree` is the trait of lsm-tree that fjall's trees implement; fjall re-exports it
// (undocumented), and Cargo.lock pins the version these calls were written against.
use fjall::{AbstractTree as _, Keyspace};

/// How often each tree's active memtable and current version are looked at. A memtable is
/// active for about half a second at the store's peak write rate (8 MiB at ~20 MB/s).
const LOOK: Duration = Duration::from_millis(20);

/// The running reclaim thread. Dropping it stops the thread, which frees what it still holds,
/// and waits for it.
pub(crate) struct Reclaimer {
    freed: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts the thread for `keyspaces`; `None` if the OS refused a thread (the store then
    /// works the same, freeing under the trees' locks as fjall does).
    pub(crate) fn start(keyspaces: &[Keyspace]) -> Option<Reclaimer> {
        let (stop, stopped) = mpsc::channel();
        let mut trees: Vec<Held> = keyspaces.iter().cloned().map(Held::new).collect();
        let freed = Arc::new(AtomicU64::new(0));
        let counted = freed.clone();
        let thread = thread::Builder::new()
            .name("meridian-reclaim".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(LOOK) {
                    let n: usize = trees.iter_mut().map(Held::look).sum();
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no reclaim thread: flushes and compactions free \
                    memory and files under the tree's lock, where commits wait for them");
            })
            .ok()?;
        Some(Reclaimer {
            freed,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Reclaimer {
    /// Memtables and versions freed on this thread so far.
    pub(crate) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What this thread holds of one tree.
struct Held {
    keyspace: Keyspace,
    /// The id of the newest memtable seen active.
    active: Option<u64>,
    /// Memtables seen active, the newest last; each goes once only this thread holds it.
    memtables: Vec<Arc<dyn Any + Send + Sync>>,
    /// The id of the newest version seen current.
    current: Option<u64>,
    /// Versions seen current, the newest last; each goes once the tree no longer holds it.
    versions: Vec<Box<dyn Any + Send>>,
}

impl Held {
    fn new(keyspace: Keyspace) -> Held {
        Held {
            keyspace,
            active: None,
            memtables: Vec::new(),
            current: None,
            versions: Vec::new(),
        }
    }

    /// Takes what is new in the tree and frees what only this thread still holds; returns how
    /// many memtables and versions it freed.
    fn look(&mut self) -> usize {
        let mut taken = self.memtables.len() + self.versions.len();
        let tree = &self.keyspace.tree;
        let memtable = tree.active_memtable();
        if self.active != Some(memtable.id()) {
            self.active = Some(memtable.id());
            self.memtables.push(memtable);
            taken += 1;
        }
        self.memtables.retain(|m| Arc::strong_count(m) > 1);
        let version = tree.current_version();
        if self.current != Some(version.id()) {
            self.current = Some(version.id());
            self.versions.push(Box::new(version));
            taken += 1;
        }
        // The tree holds its newest versions, this many; no version it holds is older than
        // the same count of the newest seen here.
        let kept = tree.version_free_list_len() + 1;
        if self.versions.len() > kept {
            self.versions.drain(..self.versions.len() - kept);
        }
        taken - (self.memtables.len() + self.versions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::{Database, KeyspaceCreateOptions};

    /// Over many flushes the thread frees what the tree lets go of and holds only what the
    /// tree still holds too: no memtable or version is kept for good.
    #[test]
    fn what_the_tree_lets_go_of_is_freed_here() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::builder(dir.path()).open().expect("open");
        let ks = db
            .keyspace("t", KeyspaceCreateOptions::default)
            .expect("keyspace");
        let mut held = Held::new(ks.clone());
        let mut freed = 0;
        for round in 0..20u32 {
            freed += held.look();
            for i in 0..100u32 {
                ks.insert(format!("{round}/{i}"), [0u8; 64])
                    .expect("insert");
            }
            ks.rotate_memtable_and_wait().expect("flush");
            freed += held.look();
            assert!(
                held.memtables.len() <= 3 && held.versions.len() <= 3,
                "round {round}: holding {} memtables and {} versions",
                held.memtables.len(),
                held.versions.len()
            );
        }
        assert!(freed >= 20, "freed {freed} in 20 flushes");
        assert_eq!(
            ks.get("19/99").expect("get").as_deref(),
            Some(&[0u8; 64][..])
        );
    }
}
