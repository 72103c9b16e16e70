//! The access log: one JSON line per request the proxy answered (`[[edge]] access_log`), the
//! way Envoy's and Caddy's are read by log shippers:
//!
//! `{"ts":1763940000.123,"client":"192.0.2.7","method":"GET","host":"shop.example","path":"/x",
//! "proto":"HTTP/1.1","status":200,"region":"us-east-1","failover":false,"duration_ms":1.234,
//! "user_agent":"curl/8.5.0"}`
//!
//! `ts` is the Unix time of the answer in seconds; `duration_ms` runs from the request's arrival
//! to its response head (the body streams after); `region` is `null` when no region served it;
//! `failover` says it was served by another region than the decision's first. Each thread
//! gathers its lines in a buffer of its own and appends it to the file in one write — when it
//! holds 32 KiB, at the proxy thread's flush tick (every 250 ms), or a second after the last
//! write — so lines never interleave and a request costs no system call. [`AccessLog::reopen`]
//! (SIGHUP) makes every thread reopen the file, for log rotation.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A thread's buffer is written out once it holds this much.
const FLUSH_BYTES: usize = 32 * 1024;
/// How often each proxy thread writes out what its buffer holds ([`AccessLog::flush`]).
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A line recorded this long after the thread's last write is written out at once.
const FLUSH_AGE: Duration = Duration::from_secs(1);

/// Where the lines go: a file (appended to) or standard output (`-`).
#[derive(Debug)]
pub struct AccessLog {
    path: Option<PathBuf>,
    /// Bumped by [`AccessLog::reopen`]; a thread whose file is older reopens it.
    generation: AtomicU64,
}

/// One request's line.
#[derive(Serialize)]
pub(crate) struct Entry<'a> {
    pub ts: f64,
    pub client: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub proto: &'a str,
    pub status: u16,
    pub region: Option<&'a str>,
    pub failover: bool,
    pub duration_ms: f64,
    pub user_agent: &'a str,
}

/// A thread's buffer and its handle on the file.
struct ThreadLog {
    buf: Vec<u8>,
    file: Option<(File, u64)>,
    written: Instant,
}

thread_local! {
    static THREAD: RefCell<ThreadLog> = RefCell::new(ThreadLog {
        buf: Vec::new(),
        file: None,
        written: Instant::now(),
    });
}

impl AccessLog {
    /// An access log appending to `path` (`-`: standard output). Opens the file once now, so
    /// a path that cannot be written is refused at start rather than at the first request.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        if path == Path::new("-") {
            return Ok(AccessLog {
                path: None,
                generation: AtomicU64::new(0),
            });
        }
        append(path)?;
        Ok(AccessLog {
            path: Some(path.to_path_buf()),
            generation: AtomicU64::new(0),
        })
    }

    /// Makes every thread reopen the file at its next write (after logrotate moved it).
    pub fn reopen(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `entry`'s line to this thread's buffer, writing the buffer out when it is full
    /// or has waited [`FLUSH_AGE`].
    pub(crate) fn record(&self, entry: &Entry<'_>) {
        THREAD.with(|t| {
            let mut t = t.borrow_mut();
            if serde_json::to_writer(&mut t.buf, entry).is_err() {
                return;
            }
            t.buf.push(b'\n');
            if t.buf.len() >= FLUSH_BYTES || t.written.elapsed() >= FLUSH_AGE {
                self.write_out(&mut t);
            }
        });
    }

    /// Writes out what this thread's buffer holds.
    pub(crate) fn flush(&self) {
        THREAD.with(|t| self.write_out(&mut t.borrow_mut()));
    }

    fn write_out(&self, t: &mut ThreadLog) {
        t.written = Instant::now();
        if t.buf.is_empty() {
            return;
        }
        let wrote = match &self.path {
            None => std::io::stdout().lock().write_all(&t.buf),
            Some(path) => {
                let generation = self.generation.load(Ordering::Relaxed);
                if t.file.as_ref().is_none_or(|(_, g)| *g != generation) {
                    match append(path) {
                        Ok(f) => t.file = Some((f, generation)),
                        Err(e) if t.file.is_some() => tracing::error!(
                            path = %path.display(), error = %e,
                            "access log: cannot reopen the file; writing to the old one"
                        ),
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "access log: cannot open the file; lines dropped");
                            t.buf.clear();
                            return;
                        }
                    }
                }
                match &mut t.file {
                    Some((f, _)) => f.write_all(&t.buf),
                    None => Ok(()),
                }
            }
        };
        if let Err(e) = wrote {
            tracing::error!(error = %e, "access log: write failed; lines dropped");
        }
        t.buf.clear();
    }
}

/// `path` opened for appending (created when missing).
fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
