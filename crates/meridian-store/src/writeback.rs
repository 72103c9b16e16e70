//! Paced write-back of the table files fjall writes in the background.
//!
//! fjall writes a flushed memtable, or a table compaction makes, into a new file and syncs it
//! once, at its end. Until then the kernel may hold the whole table dirty (megabytes), and the
//! sync writes it back in one go; a group commit's journal `fdatasync` issued meanwhile waits
//! behind that write-back on the device. This thread learns of each new file in the `tables`
//! folder of every keyspace (inotify), looks at its size every [`LOOK`] while it is open for
//! writing, and syncs it each time [`STEP`] more bytes have been written — what RocksDB's
//! `bytes_per_sync` does — so less table data is queued ahead of a journal sync
//! (docs/BENCHMARKS.md, session 11: `bench/kv` PUT p99 at half of peak, median of ten runs
//! 12.5 ms paced against 15.1 ms unpaced).
//!
//! It changes nothing fjall relies on: an extra `fdatasync` of a file fjall is writing only
//! makes its pages durable sooner, fjall still syncs each finished file itself, and a failed
//! sync here is reported to fjall's own sync too (the kernel records write-back errors per
//! open file). Files are opened read-only, never written, and let go when fjall closes them,
//! so a deleted table is never kept alive here.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use std::os::fd::AsFd as _;

/// Bytes of a table file written between two syncs of it. `bench/kv` at half of peak PUT load
/// measured 256 KiB no better than this, and each step is one more device flush.
pub(crate) const STEP: u64 = 1 << 20;

/// How often the sizes of files being written are looked at.
const LOOK: Duration = Duration::from_millis(2);

/// Longest the thread sleeps between looks at its stop flag when no event wakes it (one always
/// does at [`Writeback`]'s drop while a folder is still watched).
const IDLE: Duration = Duration::from_millis(500);

/// Most files followed at once; fjall writes one or two at a time. Past this (events were
/// lost, so some file's close was missed) the list starts over.
const MAX_FILES: usize = 64;

/// The running write-back thread. Dropping it stops the thread and waits for it.
pub(crate) struct Writeback {
    inotify: Arc<Inotify>,
    watches: Vec<WatchDescriptor>,
    stop: Arc<AtomicBool>,
    syncs: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// A file being written: our read-only handle and how much of it was synced.
struct Followed {
    file: File,
    synced: u64,
}

impl Writeback {
    /// Starts syncing files written in `dirs` every [`STEP`] bytes of growth.
    ///
    /// # Errors
    /// The OS refused an inotify instance, a watch or the thread (for example
    /// `fs.inotify.max_user_instances` reached); the store then runs without pacing.
    pub(crate) fn start(dirs: Vec<PathBuf>) -> std::io::Result<Writeback> {
        let inotify = Arc::new(Inotify::init(
            InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC,
        )?);
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        let mut watches = Vec::with_capacity(dirs.len());
        let mut folders = HashMap::with_capacity(dirs.len());
        for dir in dirs {
            let wd = inotify.add_watch(dir.as_path(), mask)?;
            watches.push(wd);
            folders.insert(wd, dir);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let syncs = Arc::new(AtomicU64::new(0));
        let thread = thread::Builder::new()
            .name("meridian-store-writeback".into())
            .spawn({
                let (inotify, stop, syncs) = (inotify.clone(), stop.clone(), syncs.clone());
                move || run(&inotify, &folders, &stop, &syncs)
            })?;
        Ok(Writeback {
            inotify,
            watches,
            stop,
            syncs,
            thread: Some(thread),
        })
    }

    /// Syncs made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Removing a watch queues an event, which wakes the thread at once.
        for wd in self.watches.drain(..) {
            let _ = self.inotify.rm_watch(wd);
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("meridian-store write-back thread panicked");
        }
    }
}

fn run(
    inotify: &Inotify,
    folders: &HashMap<WatchDescriptor, PathBuf>,
    stop: &AtomicBool,
    syncs: &AtomicU64,
) {
    let idle = PollTimeout::try_from(IDLE).unwrap_or(PollTimeout::MAX);
    let look = PollTimeout::try_from(LOOK).unwrap_or(PollTimeout::MAX);
    let mut files: HashMap<(WatchDescriptor, OsString), Followed> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = if files.is_empty() { idle } else { look };
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => match inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        follow(&mut files, folders, event);
                    }
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "store write-back pacing stopped: cannot read events");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "store write-back pacing stopped: cannot wait for events");
                return;
            }
        }
        files.retain(|_, followed| step(followed, syncs));
    }
}

/// Starts following a file created in a watched folder; stops when it is closed after
/// writing, deleted or renamed (fjall syncs what it finished), or its folder goes away.
fn follow(
    files: &mut HashMap<(WatchDescriptor, OsString), Followed>,
    folders: &HashMap<WatchDescriptor, PathBuf>,
    event: InotifyEvent,
) {
    let Some(name) = event.name else {
        files.retain(|(wd, _), _| *wd != event.wd);
        return;
    };
    let key = (event.wd, name);
    if !event.mask.contains(AddWatchFlags::IN_CREATE) {
        files.remove(&key);
        return;
    }
    if files.len() >= MAX_FILES {
        files.clear();
    }
    let Some(dir) = folders.get(&key.0) else {
        return;
    };
    // A file gone already (a table replaced by compaction) is not followed.
    if let Ok(file) = File::open(dir.join(&key.1)) {
        files.insert(key, Followed { file, synced: 0 });
    }
}

/// Syncs `followed` if it grew by [`STEP`] since its last sync; `false` when the file can no
/// longer be followed.
fn step(followed: &mut Followed, syncs: &AtomicU64) -> bool {
    let Ok(len) = followed.file.metadata().map(|m| m.len()) else {
        return false;
    };
    if len < followed.synced.saturating_add(STEP) {
        return true;
    }
    match followed.file.sync_data() {
        Ok(()) => {
            followed.synced = len;
            syncs.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "store write-back: a table file's sync failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::time::Instant;

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_growing_file_is_synced_once_per_step_and_a_small_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let pacer = Writeback::start(vec![dir.path().to_path_buf()]).unwrap();
        let mut small = File::create(dir.path().join("small")).unwrap();
        small.write_all(&vec![1u8; (STEP / 2) as usize]).unwrap();
        drop(small);
        let mut big = File::create(dir.path().join("big")).unwrap();
        let chunk = vec![7u8; 64 << 10];
        for step in 1..=3 {
            for _ in 0..STEP / chunk.len() as u64 {
                big.write_all(&chunk).unwrap();
            }
            wait_for("a sync of the grown file", || pacer.syncs() >= step);
        }
        drop(big);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            pacer.syncs(),
            3,
            "one sync per step of growth, none for the small file"
        );
    }

    #[test]
    fn dropping_it_stops_the_thread_even_when_the_folder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let pacer = Writeback::start(vec![path]).unwrap();
        drop(dir);
        let started = Instant::now();
        drop(pacer);
        assert!(started.elapsed() < IDLE * 3, "{:?}", started.elapsed());
    }
}
