//! [`Store`]: the handle, its options, and the group-committing writer thread.

use crate::cache::{ReadCache, Source, read_through};
use crate::engine::{Disk, Engine};
use crate::overlay::{KeyRange, Overlay, merge_scan};
use crate::{Error, KeyValue, Table, Txn};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;

/// The on-disk format this build reads and writes, stored under [`FORMAT_VERSION_KEY`] in
/// [`Table::Meta`] as a 4-byte big-endian integer.
pub const FORMAT_VERSION: u32 = 1;

/// The [`Table::Meta`] key holding the store's format version.
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";

/// When a transaction is acknowledged. Default: [`Durability::Fsync`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// A transaction is acknowledged only after its group's journal bytes are on disk
    /// (`fdatasync` of fjall's journal), so it survives a process crash and a power loss.
    #[default]
    Fsync,
    /// A transaction is acknowledged once its group is in the OS's buffers: it survives a
    /// process crash but not a power loss. Only for tests and benchmarks that say so.
    Buffered,
}

/// How a [`Store`] commits and caches. `StoreOptions::default()` is `Fsync` with groups of up
/// to 1024 and a read cache of [`DEFAULT_READ_CACHE_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// When a transaction is acknowledged. Default: [`Durability::Fsync`].
    pub durability: Durability,
    /// Most transactions committed together in one group (one batch, one sync). Default: 1024;
    /// 0 is treated as 1.
    pub max_batch: usize,
    /// Bytes of [`Table::Data`] keys and values kept in memory for reads ([`Store::get`] and
    /// transactions' reads; 0: no cache). A cached value is never older than what a new snapshot shows once a group is
    /// published (see [`Store::get`]). Default: [`DEFAULT_READ_CACHE_BYTES`].
    pub read_cache_bytes: usize,
    /// Whether files fjall deletes are freed a slice at a time through `trash/` in the
    /// store's directory (see the `trash` module) rather than at once, so a journal sync never
    /// waits for the trim of a whole table. `None` (the default): where the directory's
    /// filesystem is mounted with online `discard`, the only case it helps. Unix only.
    pub slice_deletes: Option<bool>,
}

/// The default size of the read cache: 64 MiB.
pub const DEFAULT_READ_CACHE_BYTES: usize = 64 << 20;

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            durability: Durability::Fsync,
            max_batch: 1024,
            read_cache_bytes: DEFAULT_READ_CACHE_BYTES,
            slice_deletes: None,
        }
    }
}

/// Histogram of group commits that wrote something: seconds from handing the group's writes
/// to the engine until they were written (and synced, with [`Durability::Fsync`]) — the time
/// every transaction of the group waited on the disk.
pub const COMMIT_SECONDS: &str = "meridian_store_commit_seconds";

/// Counters since the store was opened or created; all start at zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions acknowledged as committed (including read-only ones).
    pub transactions_committed: u64,
    /// Transactions whose closure panicked (nothing of them was committed).
    pub transactions_panicked: u64,
    /// Groups the writer processed; a group is written as one batch, if it wrote anything.
    pub group_commits: u64,
    /// Journal syncs (`fdatasync`) performed for groups; zero with [`Durability::Buffered`]
    /// or in memory.
    pub fsyncs: u64,
    /// Bytes of keys and values handed to the engine (logical, before journal framing).
    pub bytes_written: u64,
    /// Reads of [`Table::Data`] ([`Store::get`], and transactions' reads of what was committed
    /// before their group) answered from the read cache.
    pub read_cache_hits: u64,
    /// Reads of [`Table::Data`] that read the engine (0 without a cache).
    pub read_cache_misses: u64,
    /// Syncs of table files made while fjall wrote them, one per 1 MiB written, so group
    /// commits do not wait behind a whole table's write-back (0 in memory).
    pub writeback_syncs: u64,
    /// Flushed memtables and superseded versions of fjall's trees freed on the store's
    /// reclaim thread rather than under a tree's lock (0 in memory).
    pub reclaimed: u64,
    /// Bytes of deleted files freed a slice at a time through `trash/` (0 in memory, or
    /// without [`StoreOptions::slice_deletes`]).
    pub trash_freed_bytes: u64,
}

#[derive(Default)]
struct Counters {
    transactions_committed: AtomicU64,
    transactions_panicked: AtomicU64,
    group_commits: AtomicU64,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
}

/// The error of the first group commit that failed, shared by the handles and the writer.
type Failure = Arc<OnceLock<Arc<fjall::Error>>>;

/// Answers one waiter with the outcome of its group's commit.
type Finish = Box<dyn FnOnce(Result<(), Error>) + Send>;

enum Outcome {
    Ran(Finish),
    Panicked(Finish),
}

type Job = Box<dyn for<'t> FnOnce(&mut Txn<'t>) -> Outcome + Send>;

/// A handle to a store. Cheap to clone; clones share one engine and one writer thread.
/// Dropping the last handle lets the writer finish every queued transaction, sync the journal
/// and stop, and releases the directory lock; that drop blocks the dropping thread until the
/// writer has stopped (at most one group commit plus the queue).
///
/// Transactions are queued without bound; callers bound their own concurrency.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    cache: Option<Arc<ReadCache>>,
    counters: Arc<Counters>,
    failure: Failure,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued, sync and return.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            // The last handle may be dropped by a transaction closure on the writer itself;
            // the writer then stops on its own once it returns to the closed channel.
            if writer.thread().id() != thread::current().id() && writer.join().is_err() {
                tracing::error!("meridian-store writer thread panicked");
            }
        }
    }
}

/// The mount point of `dir` when its filesystem is mounted with online `discard`, which makes
/// commits wait for the trims of deleted tables (see `mounts`); `None` otherwise or when the
/// mount table cannot be read.
#[cfg(target_os = "linux")]
fn online_discard(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    crate::mounts::discard_mount(&table, &dir)
}

/// Tells the operator what online `discard` on `mount` costs, given whether deleted files are
/// freed a slice at a time.
#[cfg(target_os = "linux")]
fn report_online_discard(dir: &Path, mount: &str, sliced: bool) {
    if sliced {
        tracing::info!(
            dir = %dir.display(),
            %mount,
            "the store's filesystem is mounted with online discard: deleted tables are freed \
             a slice at a time through trash/ so commits do not wait for whole-table trims; \
             mounting without `discard` and trimming periodically (fstrim.timer) is cheaper still"
        );
    } else {
        tracing::warn!(
            dir = %dir.display(),
            %mount,
            "the store's filesystem is mounted with online discard: commits wait for the \
             trims of deleted tables (tail latency several ms higher); mount it without \
             `discard` and trim periodically (fstrim.timer) instead"
        );
    }
}

impl Store {
    /// Opens the store in `dir`, creating the directory and a new store (format version
    /// [`FORMAT_VERSION`]) if there is none.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created; [`Error::Locked`] if another open
    /// store (in this or another live process) holds it — fjall keeps an OS file lock on
    /// `dir/lock` while open; [`Error::UnsupportedFormat`] / [`Error::CorruptFormatVersion`]
    /// if the directory holds another format; [`Error::Open`] if fjall cannot recover it.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, Error> {
        let io_error = |source| Error::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        #[cfg(target_os = "linux")]
        let discard = online_discard(dir);
        #[cfg(not(target_os = "linux"))]
        let discard: Option<String> = None;
        let slice = opts.slice_deletes.unwrap_or(discard.is_some());
        #[cfg(target_os = "linux")]
        if let Some(mount) = &discard {
            report_online_discard(dir, mount, slice);
        }
        let store = Store::start(Engine::Disk(Disk::open(dir, slice)?), opts).map_err(io_error)?;
        match store.get(Table::Meta, FORMAT_VERSION_KEY)? {
            None => store.transact_blocking(|txn| {
                txn.put(
                    Table::Meta,
                    FORMAT_VERSION_KEY,
                    &FORMAT_VERSION.to_be_bytes(),
                );
            })?,
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::CorruptFormatVersion {
                        dir: dir.to_path_buf(),
                        len: bytes.len(),
                    })?;
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat {
                        dir: dir.to_path_buf(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        Ok(store)
    }

    /// A store held in memory with the same semantics as [`Store::open`] (same writer, groups,
    /// overlay and panic isolation) but nothing on disk; `opts.durability` has no effect.
    /// Its data is gone when the last handle is dropped. Readers take a read lock and wait
    /// only while the writer applies a group to the maps (no I/O happens under that lock).
    pub fn in_memory(opts: StoreOptions) -> Store {
        let mut tables = Overlay::default();
        tables.set(
            Table::Meta,
            FORMAT_VERSION_KEY,
            Some(&FORMAT_VERSION.to_be_bytes()),
        );
        let engine = Engine::Memory(Default::default());
        engine
            .commit(tables, opts.durability)
            .expect("invariant: committing to memory cannot fail");
        Store::start(engine, opts).expect("invariant: the OS can start the store's writer thread")
    }

    fn start(engine: Engine, opts: StoreOptions) -> std::io::Result<Store> {
        let engine = Arc::new(engine);
        let counters = Arc::new(Counters::default());
        let failure = Failure::default();
        let cache = ReadCache::new(opts.read_cache_bytes).map(Arc::new);
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            engine: Arc::clone(&engine),
            cache: cache.clone(),
            counters: Arc::clone(&counters),
            failure: Arc::clone(&failure),
            opts,
        };
        let writer = thread::Builder::new()
            .name("meridian-store-writer".into())
            .spawn(move || writer.run(&queue))?;
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                cache,
                counters,
                failure,
                jobs: Some(jobs),
                writer: Some(writer),
            }),
        })
    }

    /// The committed value of `key` in `table`, `None` if absent. Runs on the caller's thread
    /// and never waits for the writer.
    ///
    /// Visibility: reads use a snapshot of fjall's published sequence number. The writer
    /// publishes a group only after its journal bytes are synced (with
    /// [`Durability::Fsync`]), so a reader never sees a write that is not yet durable, and
    /// sees a group entirely or not at all. A reader may see a group shortly *before* its
    /// writers' `transact` calls return (the acknowledgement travels after the sync).
    ///
    /// [`Table::Data`] reads go through the read cache (see [`StoreOptions::read_cache_bytes`])
    /// with the same guarantees: a value from the cache is the latest published one, and once
    /// a reader has seen a key's new value no later read returns the old one.
    ///
    /// # Errors
    /// [`Error::Read`] if the engine fails to read.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        read_through(
            self.inner.cache.as_deref(),
            table,
            key,
            Source::Snapshot,
            || self.inner.engine.view().get(table, key),
        )
    }

    /// Up to `limit` committed pairs of `table`, ascending by key, whose keys start with
    /// `prefix` and are strictly greater than `after` (when given). Same visibility as
    /// [`Store::get`]; all pairs come from one snapshot.
    ///
    /// # Errors
    /// [`Error::Read`] if the engine fails to read.
    pub fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, Error> {
        let Some(range) = KeyRange::new(prefix, after) else {
            return Ok(Vec::new());
        };
        let view = self.inner.engine.view();
        merge_scan(view.range(table, &range), std::iter::empty(), limit)
    }

    /// Calls `f` with each committed pair of `table`, ascending by key, whose key starts with
    /// `prefix` and is strictly greater than `after` (when given), until `f` breaks. All pairs
    /// come from one snapshot (held until this returns) and only the current pair is held in
    /// memory, so a scan of a whole table costs the same memory as a scan of one pair. Runs on
    /// the caller's thread: call it from a blocking context for large tables.
    ///
    /// # Errors
    /// [`Error::Read`] if the engine fails to read; the pairs before the failure were visited.
    pub fn scan_each(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let Some(range) = KeyRange::new(prefix, after) else {
            return Ok(());
        };
        let view = self.inner.engine.view();
        for pair in view.range(table, &range) {
            let (key, value) = pair?;
            if f(&key, &value).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` as one atomic transaction on the writer thread and returns its result once
    /// the transaction's group is committed (and synced, with [`Durability::Fsync`]).
    ///
    /// All writes of `f` commit together or not at all. Dropping the returned future does not
    /// cancel a transaction that was already queued.
    ///
    /// # Errors
    /// [`Error::TransactionPanicked`] if `f` panicked and [`Error::InvalidKey`] /
    /// [`Error::InvalidValue`] if it wrote an invalid key or value (its writes are discarded);
    /// [`Error::CommitFailed`] if writing or syncing the group failed (not acknowledged);
    /// [`Error::WriterStopped`] if the writer is gone.
    pub async fn transact<R, F>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce(&mut Txn<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.submit(f, move |result| {
            // The caller may have stopped waiting; the outcome is then nobody's to hear.
            let _ = reply.send(result);
        })?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    /// [`Store::transact`] for callers outside async code: blocks the calling thread until
    /// the transaction's group is committed. Must not be called from the writer itself (from
    /// inside another transaction closure), which would wait forever.
    ///
    /// # Errors
    /// As [`Store::transact`].
    pub fn transact_blocking<R, F>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce(&mut Txn<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(f, move |result| {
            // The caller may have stopped waiting; the outcome is then nobody's to hear.
            let _ = reply.send(result);
        })?;
        answer.recv().map_err(|_| Error::WriterStopped)?
    }

    fn submit<R, F>(
        &self,
        f: F,
        reply: impl FnOnce(Result<R, Error>) + Send + 'static,
    ) -> Result<(), Error>
    where
        F: FnOnce(&mut Txn<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let job: Job =
            Box::new(
                move |txn: &mut Txn<'_>| match catch_unwind(AssertUnwindSafe(|| f(txn))) {
                    Ok(value) => Outcome::Ran(Box::new(move |committed: Result<(), Error>| {
                        reply(committed.map(|()| value));
                    })),
                    Err(_) => Outcome::Panicked(Box::new(move |_| {
                        reply(Err(Error::TransactionPanicked));
                    })),
                },
            );
        self.inner
            .jobs
            .as_ref()
            .expect("invariant: the job sender lives until the last handle is dropped")
            .send(job)
            .map_err(|_| Error::WriterStopped)
    }

    /// The engine's error when a group commit has failed since the store was opened, `None`
    /// while every commit has succeeded. Once set it stays set: the store is fail-stop, so
    /// every later transaction that writes is refused with [`Error::CommitFailed`] carrying
    /// this error, without touching the disk, until the store is reopened (which replays the
    /// journal and keeps exactly what was acknowledged). Reads keep working.
    pub fn failure(&self) -> Option<Arc<fjall::Error>> {
        self.inner.failure.get().cloned()
    }

    /// A snapshot of the store's counters (relaxed atomic loads; cheap).
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        let cache = self
            .inner
            .cache
            .as_ref()
            .map(|cache| cache.stats())
            .unwrap_or_default();
        StoreStats {
            transactions_committed: c.transactions_committed.load(Ordering::Relaxed),
            transactions_panicked: c.transactions_panicked.load(Ordering::Relaxed),
            group_commits: c.group_commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            read_cache_hits: cache.hits,
            read_cache_misses: cache.misses,
            writeback_syncs: self.inner.engine.writeback_syncs(),
            reclaimed: self.inner.engine.reclaimed(),
            trash_freed_bytes: self.inner.engine.trash_freed(),
        }
    }
}

/// The writer thread: the only code that mutates the engine.
struct Writer {
    engine: Arc<Engine>,
    cache: Option<Arc<ReadCache>>,
    counters: Arc<Counters>,
    failure: Failure,
    opts: StoreOptions,
}

impl Writer {
    fn run(self, queue: &mpsc::Receiver<Job>) {
        let max_batch = self.opts.max_batch.max(1);
        let mut group = Vec::with_capacity(max_batch.min(4096));
        while let Ok(first) = queue.recv() {
            group.push(first);
            while group.len() < max_batch {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group.drain(..));
        }
        if let Err(error) = self.engine.sync() {
            tracing::error!(%error, "meridian-store: final journal sync failed at shutdown");
        }
    }

    fn commit_group(&self, jobs: impl Iterator<Item = Job>) {
        let mut writes = Overlay::default();
        let mut waiters = Vec::new();
        {
            let view = self.engine.view();
            for job in jobs {
                let mut txn = Txn::new(&view, self.cache.as_deref(), &writes);
                match (job(&mut txn), txn.into_writes()) {
                    (Outcome::Ran(finish), Ok(own)) => {
                        writes.absorb(own);
                        waiters.push(finish);
                    }
                    (Outcome::Ran(finish), Err(rejected)) => finish(Err(rejected)),
                    (Outcome::Panicked(finish), _) => {
                        self.counters
                            .transactions_panicked
                            .fetch_add(1, Ordering::Relaxed);
                        finish(Err(Error::TransactionPanicked));
                    }
                }
            }
        }
        self.counters.group_commits.fetch_add(1, Ordering::Relaxed);
        let result = if writes.is_empty() {
            // Nothing to write: everything these transactions read was already committed.
            Ok(())
        } else if let Some(failure) = self.failure.get() {
            // Fail-stop: after a failed write or sync, a later sync that succeeds proves
            // nothing about what the failed one left behind, so nothing more is written.
            Err(Arc::clone(failure))
        } else {
            let begun = self
                .cache
                .as_ref()
                .map(|cache| cache.begin(writes.entries(Table::Data)));
            let started = std::time::Instant::now();
            let committed = self.engine.commit(writes, self.opts.durability);
            if let (Some(cache), Some(begun)) = (&self.cache, begun) {
                cache.finish(begun, committed.is_ok());
            }
            metrics::histogram!(COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
            match committed {
                Ok(written) => {
                    let c = &self.counters;
                    c.bytes_written.fetch_add(written.bytes, Ordering::Relaxed);
                    if written.synced {
                        c.fsyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        waiters = waiters.len(),
                        "meridian-store: group commit failed; the store refuses every later \
                         write until the process restarts (fix the disk first: space, I/O errors)"
                    );
                    // The writer is the only thread that sets it, and it sets it once.
                    let _ = self.failure.set(Arc::clone(&error));
                    Err(error)
                }
            }
        };
        if result.is_ok() {
            self.counters
                .transactions_committed
                .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        }
        for finish in waiters {
            finish(
                result
                    .clone()
                    .map_err(|source| Error::CommitFailed { source }),
            );
        }
    }
}
