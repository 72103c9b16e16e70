//! The pools of idle backend connections, one per thread, keyed by backend: checking a
//! connection out for a request and back in once its response has ended.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use bytes::BytesMut;

use super::conn::Conn;
use super::{IDLE_TIMEOUT, MAX_IDLE, READ_MIN};

struct IdleConn {
    conn: Conn,
    since: Instant,
}

impl IdleConn {
    /// Whether it has been idle for [`IDLE_TIMEOUT`] or more at `now`.
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= IDLE_TIMEOUT
    }
}

/// Hashes a pool key by one multiplication: keys are distinct counter values from
/// [`new_key`](super::new_key), chosen by no client, so SipHash's guard against chosen keys
/// buys nothing.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Pool {
    idle: HashMap<u64, Vec<IdleConn>, BuildHasherDefault<KeyHasher>>,
    swept: Option<Instant>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

impl Pool {
    /// The most recently returned usable connection to `key`. Unusable ones met on the way are
    /// dropped, so a checkout takes constant time amortised, however many are idle.
    fn checkout(&mut self, key: u64, now: Instant) -> Option<Conn> {
        let list = self.idle.get_mut(&key)?;
        while let Some(mut c) = list.pop() {
            if c.expired(now) {
                // Returned in time order: every older one has expired too.
                list.clear();
                return None;
            }
            if c.conn.usable() {
                return Some(c.conn);
            }
        }
        None
    }

    fn checkin(&mut self, key: u64, conn: Conn, now: Instant) {
        if self
            .swept
            .is_none_or(|at| now.duration_since(at) >= IDLE_TIMEOUT / 4)
        {
            self.swept = Some(now);
            self.idle.retain(|_, list| {
                list.retain_mut(|c| !c.expired(now) && c.conn.usable());
                !list.is_empty()
            });
        }
        let list = self.idle.entry(key).or_default();
        if list.len() < MAX_IDLE {
            list.push(IdleConn { conn, since: now });
        }
    }
}

pub(super) fn checkout(key: u64) -> Option<Conn> {
    POOL.try_with(|p| p.borrow_mut().checkout(key, Instant::now()))
        .ok()
        .flatten()
}

pub(super) fn checkin(key: u64, mut conn: Conn) {
    if conn.read_size > READ_MIN {
        // A large body grew the reads: an idle connection keeps no large buffer.
        conn.read = BytesMut::new();
        conn.read_size = READ_MIN;
    }
    // During thread teardown the pool is gone and the connection is dropped instead.
    let _ = POOL.try_with(|p| p.borrow_mut().checkin(key, conn, Instant::now()));
}
