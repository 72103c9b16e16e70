//! Files fjall deletes, freed a slice at a time instead of all at once.
//!
//! On a filesystem mounted with online `discard`, unlinking a file trims every block it held
//! inside the unlink, and a journal `fdatasync` issued meanwhile waits on the device behind the
//! trims: here `rm` of an 8 MiB table took 7 ms and of a 64 MiB file 18 ms, and `bench/kv` PUT
//! p99 at half of peak was 6–12 ms with `discard` against 3.5–4.9 ms with the same disk
//! remounted without it (docs/BENCHMARKS.md, session 17).
//!
//! This thread gives every table and journal file a second name, a hard link in `trash/` named
//! by its inode, within [`WALK`] of its creation, so fjall's delete only removes a name and
//! frees nothing. The same walk finds the linked files whose other name is gone (link count
//! 1); while there are any, each [`TICK`] cuts them short by at most [`SLICE`] per truncation —
//! each trim a slice's — at a pace that empties the backlog in about [`DRAIN`], and removes
//! them once empty. With nothing to free the thread only walks. RocksDB deletes through a rate-limited trash
//! directory for the same reason.
//!
//! Nothing fjall relies on changes: a file is truncated only once no other name of it is left
//! (fjall has deleted it and no longer reads it: lsm-tree unlinks a table when its last reader
//! lets go), and what is in `trash/` when the store opens — a crash left it — is freed the
//! same way. fjall's recovery reads only `*.jnl` files at the top of the directory.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The folder of second names, in the store's directory.
pub(crate) const FOLDER: &str = "trash";

/// Most bytes one truncation frees: one trim of this size delays a journal sync by well under
/// a millisecond on the measured disk.
const SLICE: u64 = 1 << 20;

/// How often a backlog is cut.
const TICK: Duration = Duration::from_millis(10);

/// How often new files get their second name and deleted ones are looked for; a file fjall
/// creates and deletes quicker than this is freed at once, as without this thread.
const WALK: Duration = Duration::from_millis(50);

/// About how long a backlog takes to free: each tick frees at least this share of it.
const DRAIN: Duration = Duration::from_secs(1);

/// The running trash thread. Dropping it stops the thread and waits for it; what it has not
/// freed stays in `trash/` for the next open.
pub(crate) struct Trash {
    freed: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where the files live: the store's directory (its `*.jnl` journals) and each tree's tables
/// folder (every file).
#[derive(Clone)]
pub(crate) struct Watched {
    pub(crate) root: PathBuf,
    pub(crate) tables: Vec<PathBuf>,
}

impl Trash {
    /// Creates `root/trash` and starts the thread.
    ///
    /// # Errors
    /// The folder cannot be created or the OS refused the thread; fjall's deletes then free
    /// files at once.
    pub(crate) fn start(watched: Watched) -> io::Result<Trash> {
        let folder = watched.root.join(FOLDER);
        fs::create_dir_all(&folder)?;
        let (stop, stopped) = mpsc::channel();
        let freed = Arc::new(AtomicU64::new(0));
        let counted = freed.clone();
        let thread = thread::Builder::new()
            .name("meridian-trash".into())
            .spawn(move || {
                // Cleared when a link cannot be made; what is linked already is still freed.
                let mut linking = true;
                let mut orphans = Vec::new();
                let mut walked = Instant::now();
                loop {
                    let wait = if orphans.is_empty() { WALK } else { TICK };
                    if !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                    if orphans.is_empty() || walked.elapsed() >= WALK {
                        walked = Instant::now();
                        if linking && let Err(e) = link_new(&watched, &folder) {
                            tracing::warn!(error = %e, folder = %folder.display(),
                                "deleted store files are freed at once from now on: cannot \
                                 link them into the trash folder");
                            linking = false;
                        }
                        orphans = orphans_in(&folder);
                    }
                    counted.fetch_add(cut(&mut orphans), Ordering::Relaxed);
                }
            })?;
        Ok(Trash {
            freed,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Bytes freed through the trash so far.
    pub(crate) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("meridian-store trash thread panicked");
        }
    }
}

/// Gives every watched file with a single name a second one in `folder`. A file that
/// vanished meanwhile is skipped; `Err` only when a link cannot be made for another reason.
fn link_new(watched: &Watched, folder: &Path) -> io::Result<()> {
    let journals = files(&watched.root)?
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jnl")));
    let mut tables = Vec::new();
    for dir in &watched.tables {
        tables.extend(files(dir)?);
    }
    for path in journals.chain(tables) {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.nlink() != 1 {
            continue;
        }
        match fs::hard_link(&path, folder.join(meta.ino().to_string())) {
            // Gone since the look, or a stale name of a freed inode still being cut: the next
            // walk links it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) => {}
            other => other?,
        }
    }
    Ok(())
}

/// The entries of `dir` (none if it does not exist yet).
fn files(dir: &Path) -> io::Result<impl Iterator<Item = PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(entries
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path())))
}

/// A file only `trash/` names (its other name is gone: fjall deleted it) and its length.
/// Nothing links a trash file again, so an orphan stays one until it is removed.
struct Orphan {
    path: PathBuf,
    len: u64,
}

/// The files of `folder` (the trash) that no other name holds.
fn orphans_in(folder: &Path) -> Vec<Orphan> {
    let Ok(entries) = files(folder) else {
        return Vec::new();
    };
    entries
        .filter_map(|path| {
            let meta = fs::symlink_metadata(&path).ok()?;
            (meta.is_file() && meta.nlink() == 1).then_some(Orphan {
                path,
                len: meta.len(),
            })
        })
        .collect()
}

/// One tick's work: cuts `orphans` by [`budget`] bytes in all, at most [`SLICE`] per
/// truncation, removes those left empty and forgets them; one that cannot be cut is forgotten
/// until the next walk finds it again. Returns the bytes freed.
fn cut(orphans: &mut Vec<Orphan>) -> u64 {
    let mut left = budget(orphans.iter().map(|o| o.len).sum());
    let mut freed = 0;
    orphans.retain_mut(|o| {
        if left == 0 {
            return true;
        }
        let Ok(file) = fs::OpenOptions::new().write(true).open(&o.path) else {
            return false;
        };
        while o.len > 0 && left > 0 {
            let to = next_len(o.len, left);
            if file.set_len(to).is_err() {
                return false;
            }
            freed += o.len - to;
            left -= o.len - to;
            o.len = to;
        }
        if o.len > 0 {
            return true;
        }
        if fs::remove_file(&o.path).is_err() {
            tracing::debug!(path = %o.path.display(), "an emptied trash file could not be removed");
        }
        false
    });
    freed
}

/// Bytes to free in one tick from a backlog of `backlog` bytes: at least a [`SLICE`], and
/// enough that the backlog is gone in about [`DRAIN`] however fast it grows.
fn budget(backlog: u64) -> u64 {
    let ticks = (DRAIN.as_millis() / TICK.as_millis()).max(1) as u64;
    SLICE.max(backlog.div_ceil(ticks)).min(backlog)
}

/// The length a file of `len` bytes is cut to next with `left` bytes of the tick's budget
/// left: shorter by a [`SLICE`], by `left` if less, or empty.
fn next_len(len: u64, left: u64) -> u64 {
    len.saturating_sub(SLICE.min(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, len: usize) {
        fs::write(path, vec![7u8; len]).expect("write");
    }

    fn watched(root: &Path) -> Watched {
        let tables = root.join("keyspaces/1/tables");
        fs::create_dir_all(&tables).expect("tables folder");
        Watched {
            root: root.to_path_buf(),
            tables: vec![tables],
        }
    }

    #[test]
    fn budgets_take_a_slice_or_a_share_of_the_backlog() {
        assert_eq!(budget(0), 0);
        assert_eq!(budget(10), 10);
        assert_eq!(budget(SLICE * 3), SLICE);
        assert_eq!(budget(SLICE * 1000), SLICE * 10);
        assert_eq!(next_len(SLICE * 2 + 5, SLICE * 9), SLICE + 5);
        assert_eq!(next_len(SLICE * 2 + 5, 7), SLICE * 2 - 2);
        assert_eq!(next_len(5, SLICE), 0);
    }

    /// A deleted file is freed a slice per truncation and removed once empty; a file that
    /// still has its own name is never touched, nor is any file the walk does not watch.
    #[test]
    fn deleted_files_are_cut_a_slice_at_a_time_and_live_ones_never() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = watched(dir.path());
        let folder = dir.path().join(FOLDER);
        fs::create_dir_all(&folder).expect("trash folder");
        let table = w.tables[0].join("7");
        let live = w.tables[0].join("8");
        let journal = dir.path().join("3.jnl");
        let other = dir.path().join("version");
        let size = 3 * SLICE as usize + 100;
        for p in [&table, &live, &journal, &other] {
            write(p, size);
        }
        link_new(&w, &folder).expect("link");
        assert_eq!(
            files(&folder).expect("trash").count(),
            3,
            "tables and journals"
        );
        // Linking again changes nothing.
        link_new(&w, &folder).expect("link");
        assert_eq!(files(&folder).expect("trash").count(), 3);
        // Nothing deleted yet: nothing to cut.
        assert!(orphans_in(&folder).is_empty());

        fs::remove_file(&table).expect("fjall deletes a table");
        fs::remove_file(&journal).expect("and a journal");
        let mut orphans = orphans_in(&folder);
        assert_eq!(orphans.len(), 2);
        let mut freed = 0;
        let mut ticks = 0;
        while files(&folder).expect("trash").count() > 1 {
            let now = cut(&mut orphans);
            assert!(
                now > 0 && now <= budget(2 * size as u64 - freed),
                "tick freed {now}"
            );
            freed += now;
            ticks += 1;
            assert!(ticks < 20, "the backlog is not going down");
        }
        assert_eq!(freed, 2 * size as u64);
        assert!(orphans.is_empty(), "freed files are forgotten");
        assert!(ticks >= 7, "{ticks} ticks: slices of {SLICE} bytes");
        assert_eq!(
            fs::read(&live).expect("live").len(),
            size,
            "a live file is untouched"
        );
        assert_eq!(fs::read(&other).expect("other").len(), size);
    }

    /// What a previous run left in the trash is freed by the thread; the thread links new
    /// files as they appear.
    #[test]
    fn the_thread_frees_leftovers_and_links_new_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = watched(dir.path());
        let folder = dir.path().join(FOLDER);
        fs::create_dir_all(&folder).expect("trash folder");
        write(&folder.join("12345"), 2 * SLICE as usize);
        let trash = Trash::start(w.clone()).expect("start");
        let table = w.tables[0].join("9");
        write(&table, 10);
        // Waits up to 10 s for `done`.
        let wait_until = |done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done() && Instant::now() < deadline {
                thread::sleep(TICK);
            }
        };
        wait_until(&|| {
            !folder.join("12345").exists() && files(&folder).expect("trash").count() == 1
        });
        assert!(!folder.join("12345").exists(), "the leftover was freed");
        assert_eq!(trash.freed(), 2 * SLICE);
        let ino = fs::metadata(&table).expect("table").ino();
        assert!(
            folder.join(ino.to_string()).exists(),
            "the new table was linked"
        );
        fs::remove_file(&table).expect("delete");
        wait_until(&|| !folder.join(ino.to_string()).exists());
        assert!(
            !folder.join(ino.to_string()).exists(),
            "the deleted table was freed"
        );
        drop(trash);
    }
}
