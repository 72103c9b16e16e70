//! The two backends behind a [`crate::Store`]: fjall on disk, or maps in memory.

use crate::overlay::{KeyRange, Overlay};
use crate::{Durability, Error, KeyValue, Table};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

/// Where committed data lives.
pub(crate) enum Engine {
    Disk(Disk),
    Memory(RwLock<Tables>),
}

/// Size of a keyspace's memtable and of the tables compaction writes (fjall's defaults: 64 MiB).
/// Each flushed memtable and finished table is written back and synced at once, and the
/// journal's `fdatasync` of the group commits meanwhile waits behind it on the device: 8 MiB
/// keeps that wait short (bench/kv at half of peak: p99 14–16 ms against 27–70 ms with 64 MiB,
/// for 13 % less peak write throughput; docs/BENCHMARKS.md). fjall stores a keyspace's options
/// when it creates it, so this applies to stores created since.
const FLUSH_BYTES: u64 = 8 << 20;

/// fjall's flush and compaction threads. fjall takes one per core up to 4; with fewer than 4,
/// its first worker hands every compaction request back to the queue for the others and, while
/// they are busy, takes it again at once — a third of the workers' CPU spent spinning on a
/// two-core machine (`bench/kv` at 18,000 PUT/s: workers ~19 % of a core with 2, ~13 % with
/// 4, the spin 31 % and 2 % of their samples; docs/BENCHMARKS.md, session 11). Four, as fjall
/// picks on machines of four cores or more.
const WORKERS: usize = 4;

pub(crate) struct Disk {
    /// Frees what the trees let go of off their locks (`None` if no thread could start).
    /// First, so it stops before the database closes.
    reclaim: Option<crate::reclaim::Reclaimer>,
    /// Frees deleted files a slice at a time (`None` when not asked for, or it could not
    /// start: fjall's deletes then free files at once).
    #[cfg(unix)]
    trash: Option<crate::trash::Trash>,
    db: Database,
    keyspaces: [Keyspace; 4],
    /// Syncs table files as fjall writes them (`None` where the OS offers no inotify, or
    /// refused it: the store then works the same, with longer commit stalls under flushes).
    #[cfg(target_os = "linux")]
    writeback: Option<crate::writeback::Writeback>,
}

/// Outcome of writing one group.
pub(crate) struct Written {
    pub(crate) bytes: u64,
    pub(crate) synced: bool,
}

impl Disk {
    /// Opens fjall in `dir`; with `slice_deletes`, the files it deletes are freed through
    /// `dir/trash` a slice at a time.
    pub(crate) fn open(dir: &Path, slice_deletes: bool) -> Result<Disk, Error> {
        let db = Database::builder(dir)
            .worker_threads(WORKERS)
            // Every batch states its own durability; nothing is persisted behind our back.
            .manual_journal_persist(true)
            .open()
            .map_err(|source| match source {
                fjall::Error::Locked => Error::Locked {
                    dir: dir.to_path_buf(),
                },
                source => Error::Open {
                    dir: dir.to_path_buf(),
                    source,
                },
            })?;
        let open = |table: Table| {
            db.keyspace(table.name(), || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(FLUSH_BYTES)
                    .compaction_strategy(Arc::new(
                        fjall::compaction::Leveled::default().with_table_target_size(FLUSH_BYTES),
                    ))
            })
            .map_err(|source| Error::Open {
                dir: dir.to_path_buf(),
                source,
            })
        };
        let keyspaces = [
            open(Table::Data)?,
            open(Table::OpLog)?,
            open(Table::Idempotency)?,
            open(Table::Meta)?,
        ];
        #[cfg(unix)]
        let trash = slice_deletes
            .then(|| start_trash(dir, &keyspaces))
            .flatten();
        #[cfg(not(unix))]
        let _ = slice_deletes;
        Ok(Disk {
            reclaim: crate::reclaim::Reclaimer::start(&keyspaces),
            #[cfg(unix)]
            trash,
            #[cfg(target_os = "linux")]
            writeback: start_writeback(&keyspaces),
            db,
            keyspaces,
        })
    }
}

/// The folder each tree writes its tables into (its folder's `tables`, lsm-tree's layout).
#[cfg(unix)]
fn tables_folders(keyspaces: &[Keyspace; 4]) -> Vec<std::path::PathBuf> {
    keyspaces.iter().map(|k| k.path().join("tables")).collect()
}

/// Frees the files fjall deletes in `dir` (journals) and the trees' `tables` folders a slice
/// at a time.
#[cfg(unix)]
fn start_trash(dir: &Path, keyspaces: &[Keyspace; 4]) -> Option<crate::trash::Trash> {
    let watched = crate::trash::Watched {
        root: dir.to_path_buf(),
        tables: tables_folders(keyspaces),
    };
    crate::trash::Trash::start(watched)
        .inspect_err(|e| {
            tracing::warn!(
                error = %e,
                "deleted tables are freed at once: group commits may wait for their trims"
            );
        })
        .ok()
}

/// Paces write-back of the table files of `keyspaces`.
#[cfg(target_os = "linux")]
fn start_writeback(keyspaces: &[Keyspace; 4]) -> Option<crate::writeback::Writeback> {
    crate::writeback::Writeback::start(tables_folders(keyspaces))
        .inspect_err(|e| {
            tracing::warn!(
                error = %e,
                "table write-back is not paced: group commits may stall behind memtable flushes"
            );
        })
        .ok()
}

impl Engine {
    /// A consistent read view of everything committed so far.
    pub(crate) fn view(&self) -> View<'_> {
        match self {
            Engine::Disk(disk) => View::Disk {
                snapshot: disk.db.snapshot(),
                keyspaces: &disk.keyspaces,
            },
            Engine::Memory(tables) => View::Memory(
                tables
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
        }
    }

    /// Writes every entry of `writes` as one atomic batch and persists it as `durability` says.
    pub(crate) fn commit(
        &self,
        writes: Overlay,
        durability: Durability,
    ) -> Result<Written, Arc<fjall::Error>> {
        let mut bytes = 0u64;
        match self {
            Engine::Disk(disk) => {
                let mode = match durability {
                    Durability::Fsync => PersistMode::SyncData,
                    Durability::Buffered => PersistMode::Buffer,
                };
                let mut batch = disk.db.batch().durability(Some(mode));
                for (table, key, value) in writes.into_writes() {
                    let keyspace = &disk.keyspaces[table.index()];
                    bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
                    match value {
                        Some(value) => batch.insert(keyspace, key, value),
                        None => batch.remove(keyspace, key),
                    }
                }
                // The batch is journaled, synced (per `mode`), then applied and published
                // under fjall's journal lock: snapshots never see it before it is synced.
                batch.commit().map_err(Arc::new)?;
                Ok(Written {
                    bytes,
                    synced: durability == Durability::Fsync,
                })
            }
            Engine::Memory(tables) => {
                let mut tables = tables
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (table, key, value) in writes.into_writes() {
                    let map = &mut tables[table.index()];
                    bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
                    match value {
                        Some(value) => map.insert(key, value),
                        None => map.remove(&key),
                    };
                }
                Ok(Written {
                    bytes,
                    synced: false,
                })
            }
        }
    }

    /// Syncs the pacing thread made of table files being written (0 in memory, or unpaced).
    pub(crate) fn writeback_syncs(&self) -> u64 {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Disk(disk) => disk.writeback.as_ref().map_or(0, |w| w.syncs()),
            #[cfg(not(target_os = "linux"))]
            Engine::Disk(_) => 0,
            Engine::Memory(_) => 0,
        }
    }

    /// Memtables and versions freed off the trees' locks (0 in memory, or without the thread).
    pub(crate) fn reclaimed(&self) -> u64 {
        match self {
            Engine::Disk(disk) => disk.reclaim.as_ref().map_or(0, |r| r.freed()),
            Engine::Memory(_) => 0,
        }
    }

    /// Bytes of deleted files freed through the trash (0 in memory, or without it).
    pub(crate) fn trash_freed(&self) -> u64 {
        match self {
            #[cfg(unix)]
            Engine::Disk(disk) => disk.trash.as_ref().map_or(0, |t| t.freed()),
            #[cfg(not(unix))]
            Engine::Disk(_) => 0,
            Engine::Memory(_) => 0,
        }
    }

    /// Syncs the journal to disk (a no-op in memory). Called when the writer stops.
    pub(crate) fn sync(&self) -> Result<(), fjall::Error> {
        match self {
            Engine::Disk(disk) => disk.db.persist(PersistMode::SyncAll),
            Engine::Memory(_) => Ok(()),
        }
    }
}

/// A consistent, read-only view of committed data.
pub(crate) enum View<'a> {
    Disk {
        snapshot: Snapshot,
        keyspaces: &'a [Keyspace; 4],
    },
    Memory(RwLockReadGuard<'a, Tables>),
}

impl View<'_> {
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self {
            View::Disk {
                snapshot,
                keyspaces,
            } => snapshot
                .get(&keyspaces[table.index()], key)
                .map(|value| value.map(|value| value.to_vec()))
                .map_err(|source| Error::Read { source }),
            View::Memory(tables) => Ok(tables[table.index()].get(key).cloned()),
        }
    }

    /// Live pairs of `table` within `range`, ascending.
    pub(crate) fn range<'v>(
        &'v self,
        table: Table,
        range: &'v KeyRange,
    ) -> Box<dyn Iterator<Item = Result<KeyValue, Error>> + 'v> {
        match self {
            View::Disk {
                snapshot,
                keyspaces,
            } => Box::new(
                snapshot
                    .range::<&[u8], _>(&keyspaces[table.index()], (range.lower(), range.upper()))
                    .map(|guard| {
                        guard
                            .into_inner()
                            .map(|(key, value)| (key.to_vec(), value.to_vec()))
                            .map_err(|source| Error::Read { source })
                    }),
            ),
            View::Memory(tables) => Box::new(
                tables[table.index()]
                    .range::<[u8], _>((range.lower(), range.upper()))
                    .map(|(key, value)| Ok((key.clone(), value.clone()))),
            ),
        }
    }
}
