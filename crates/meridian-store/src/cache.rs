//! The read cache: committed values of [`Table::Data`](crate::Table::Data) kept in memory, so a
//! point read of a hot key costs one hash lookup instead of a walk of fjall's memtable skiplist
//! and tables.
//!
//! The cache never serves a value older than what a fresh snapshot would show once the writer
//! has published a group, and never keeps one: the writer thread is the only mutator, and for
//! every key a group writes it
//! 1. before writing the group, removes the key's cached value and marks the key pending
//!    ([`ReadCache::begin`]): while pending, nobody may fill it, so reads go to a snapshot;
//! 2. after the group is published, clears the mark, bumps its stripe's epoch and, if the key
//!    was cached, caches the new value ([`ReadCache::finish`]).
//!
//! A reader that misses takes a [`Ticket`] (the stripe's epoch) *before* its snapshot and fills
//! only if the key is not pending and the epoch is unchanged ([`ReadCache::fill`]): a value
//! read from a snapshot older than a group that wrote the key is refused, whether the reader
//! fills during that group's commit (pending) or after it (epoch moved). Readers therefore see
//! a key's value change once, at most one group commit after the snapshot shows it, and never
//! back. The writer's own transactions read through the cache too, and fill it without a
//! ticket ([`Source::Published`]): they run between groups, on the latest published state, so
//! what they read is current until the writer itself begins the next group.

use quick_cache::Weighter;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Stripes of epochs and pending marks; a power of two.
const STRIPES: usize = 64;

/// Bytes charged per entry on top of its key and value (the map's slot and allocations).
const ENTRY_OVERHEAD: u64 = 64;

/// A cached value: `None` caches that the key is absent.
type Cached = Option<Vec<u8>>;

#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<Vec<u8>, Cached> for ByBytes {
    fn weight(&self, key: &Vec<u8>, value: &Cached) -> u64 {
        (key.len() + value.as_ref().map_or(0, Vec::len)) as u64 + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Stripe {
    epoch: u64,
    pending: HashSet<Vec<u8>>,
}

/// Permission to fill one key: its stripe's epoch, taken before the snapshot the value is read
/// from.
#[derive(Clone, Copy, Debug)]
struct Ticket(u64);

/// A read of `key` in `table` through `cache` when there is one and it holds that table
/// ([`Table::Data`](crate::Table::Data)), else `read` itself.
pub(crate) fn read_through<E>(
    cache: Option<&ReadCache>,
    table: crate::Table,
    key: &[u8],
    source: Source,
    read: impl FnOnce() -> Result<Cached, E>,
) -> Result<Cached, E> {
    match cache.filter(|_| table == crate::Table::Data) {
        Some(cache) => cache.read(key, source, read),
        None => read(),
    }
}

/// Where a [`ReadCache::read`] that misses reads from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// A snapshot the reader takes, which a group may publish past while it reads.
    Snapshot,
    /// The latest published state, read by the writer thread between groups.
    Published,
}

/// The keys of one group, as [`ReadCache::begin`] left them for [`ReadCache::finish`].
pub(crate) struct Begun {
    /// Each written key, with its new value when it was cached before the group.
    keys: Vec<(Vec<u8>, Option<Cached>)>,
}

/// Hit and miss counts since the cache was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheStats {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

pub(crate) struct ReadCache {
    values: quick_cache::sync::Cache<Vec<u8>, Cached, ByBytes>,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: std::collections::hash_map::RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadCache {
    /// A cache holding at most about `bytes` of keys and values; `None` when `bytes` is 0.
    pub(crate) fn new(bytes: usize) -> Option<ReadCache> {
        if bytes == 0 {
            return None;
        }
        let bytes = bytes as u64;
        let estimated_items = (bytes / (ENTRY_OVERHEAD + 256)).max(16) as usize;
        Some(ReadCache {
            values: quick_cache::sync::Cache::with_weighter(estimated_items, bytes, ByBytes),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn stripe(&self, key: &[u8]) -> MutexGuard<'_, Stripe> {
        let index = (self.hasher.hash_one(key) as usize) & (STRIPES - 1);
        self.stripes[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A read of `key`: the cached value, else what `read` finds, which is then cached unless
    /// the key is pending or, for a [`Source::Snapshot`], a group wrote it since the snapshot
    /// (see the module doc).
    pub(crate) fn read<E>(
        &self,
        key: &[u8],
        source: Source,
        read: impl FnOnce() -> Result<Cached, E>,
    ) -> Result<Cached, E> {
        if let Some(cached) = self.get(key) {
            return Ok(cached);
        }
        let ticket = match source {
            Source::Snapshot => Some(self.ticket(key)),
            Source::Published => None,
        };
        let value = read()?;
        self.fill(key, ticket, &value);
        Ok(value)
    }

    /// The cached value of `key` (`Some(None)`: cached as absent); `None` on a miss.
    fn get(&self, key: &[u8]) -> Option<Cached> {
        let found = self.values.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// A ticket to fill `key` with what a snapshot taken after this call reads.
    fn ticket(&self, key: &[u8]) -> Ticket {
        Ticket(self.stripe(key).epoch)
    }

    /// Caches `value` for `key` unless the key is pending or, with a `ticket`, a group wrote
    /// it since the ticket was taken. Without one, `value` must be the latest published value
    /// (the writer's read between groups).
    fn fill(&self, key: &[u8], ticket: Option<Ticket>, value: &Cached) {
        let guard = self.stripe(key);
        if ticket.is_none_or(|t| guard.epoch == t.0) && !guard.pending.contains(key) {
            self.values.insert(key.to_vec(), value.clone());
        }
    }

    /// Marks the keys of `writes` (each key and its new value, `None` for a delete), about to
    /// be written by one group, pending and forgets their cached values.
    pub(crate) fn begin<'k>(
        &self,
        writes: impl Iterator<Item = (&'k [u8], Option<&'k [u8]>)>,
    ) -> Begun {
        let keys = writes
            .map(|(key, value)| {
                let mut guard = self.stripe(key);
                guard.pending.insert(key.to_vec());
                let was_cached = self.values.remove(key).is_some();
                (key.to_vec(), was_cached.then(|| value.map(<[u8]>::to_vec)))
            })
            .collect();
        Begun { keys }
    }

    /// Ends the group [`ReadCache::begin`] started: clears the marks, and when the group was
    /// `published`, caches the new values of the keys that were cached before it.
    pub(crate) fn finish(&self, begun: Begun, published: bool) {
        for (key, new) in begun.keys {
            let mut guard = self.stripe(&key);
            guard.epoch += 1;
            guard.pending.remove(&key);
            if published && let Some(value) = new {
                self.values.insert(key, value);
            }
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ReadCache {
        ReadCache::new(1 << 20).expect("invariant: a non-zero size makes a cache")
    }

    fn value(v: &[u8]) -> Cached {
        Some(v.to_vec())
    }

    #[test]
    fn a_fill_from_before_a_group_is_refused_during_and_after_it() {
        let c = cache();
        // Read before the group, filled while it commits: refused (pending).
        let early = c.ticket(b"k");
        let begun = c.begin([(&b"k"[..], Some(&b"new"[..]))].into_iter());
        c.fill(b"k", Some(early), &value(b"old"));
        assert_eq!(c.get(b"k"), None);
        c.finish(begun, true);
        assert_eq!(
            c.get(b"k"),
            None,
            "the stale fill must not survive the group"
        );
        // Read before the group, filled after it: refused (epoch moved).
        let early = c.ticket(b"k");
        let begun = c.begin([(&b"k"[..], None)].into_iter());
        c.finish(begun, true);
        c.fill(b"k", Some(early), &value(b"new"));
        assert_eq!(c.get(b"k"), None);
        // A ticket taken while the key is pending cannot fill either.
        let begun = c.begin([(&b"k"[..], None)].into_iter());
        let during = c.ticket(b"k");
        c.fill(b"k", Some(during), &value(b"maybe old"));
        c.finish(begun, true);
        assert_eq!(c.get(b"k"), None);
        // A ticket taken after the group fills.
        let late = c.ticket(b"k");
        c.fill(b"k", Some(late), &None);
        assert_eq!(c.get(b"k"), Some(None), "absence is cached too");
    }

    #[test]
    fn a_cached_key_takes_the_published_value_and_is_dropped_on_failure() {
        let c = cache();
        let t = c.ticket(b"k");
        c.fill(b"k", Some(t), &value(b"v0"));
        assert_eq!(c.get(b"k"), Some(value(b"v0")));
        let begun = c.begin([(&b"k"[..], Some(&b"v1"[..]))].into_iter());
        assert_eq!(
            c.get(b"k"),
            None,
            "a key being written is read from a snapshot"
        );
        c.finish(begun, true);
        assert_eq!(c.get(b"k"), Some(value(b"v1")));
        let begun = c.begin([(&b"k"[..], None)].into_iter());
        c.finish(begun, true);
        assert_eq!(c.get(b"k"), Some(None), "a delete caches the absence");
        let begun = c.begin([(&b"k"[..], Some(&b"v2"[..]))].into_iter());
        c.finish(begun, false);
        assert_eq!(
            c.get(b"k"),
            None,
            "an unpublished group leaves nothing cached"
        );
        // Keys not cached before a group are not cached by it.
        let begun = c.begin([(&b"other"[..], Some(&b"v"[..]))].into_iter());
        c.finish(begun, true);
        assert_eq!(c.get(b"other"), None);
        assert_eq!(c.stats().hits, 3);
    }

    #[test]
    fn the_writers_fill_is_refused_only_while_the_key_is_pending() {
        let c = cache();
        let begun = c.begin([(&b"k"[..], Some(&b"new"[..]))].into_iter());
        c.fill(b"k", None, &value(b"old"));
        assert_eq!(c.get(b"k"), None);
        c.finish(begun, true);
        assert_eq!(c.get(b"k"), None);
        c.fill(b"k", None, &value(b"new"));
        assert_eq!(c.get(b"k"), Some(value(b"new")));
    }

    #[test]
    fn no_cache_without_bytes() {
        assert!(ReadCache::new(0).is_none());
    }
}
