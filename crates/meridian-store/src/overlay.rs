//! Pending writes (puts and deletes) per table, and the key-range arithmetic shared by scans.

use crate::{KeyValue, Table};
use std::collections::BTreeMap;
use std::ops::Bound;

/// A put (`Some(value)`) or a delete (`None`) per key, per table.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    tables: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; 4],
}

impl Overlay {
    /// `None`: the overlay says nothing about the key; `Some(None)`: deleted; `Some(Some(v))`: put.
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.tables[table.index()]
            .get(key)
            .map(|value| value.as_deref())
    }

    pub(crate) fn set(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) {
        self.tables[table.index()].insert(key.to_vec(), value.map(<[u8]>::to_vec));
    }

    /// Every write to `table`, ascending by key.
    pub(crate) fn entries(&self, table: Table) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.tables[table.index()]
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_deref()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.iter().all(BTreeMap::is_empty)
    }

    /// Moves every write of `newer` into `self`; `newer` wins on the same key.
    pub(crate) fn absorb(&mut self, newer: Overlay) {
        for (mine, theirs) in self.tables.iter_mut().zip(newer.tables) {
            mine.extend(theirs);
        }
    }

    /// Entries of `table` within `range`, ascending.
    pub(crate) fn range<'a>(
        &'a self,
        table: Table,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.tables[table.index()]
            .range::<[u8], _>((range.lower(), range.upper()))
            .map(|(key, value)| (key.as_slice(), value.as_deref()))
    }

    /// Consumes the overlay: `(table, key, Some(value) | None)` for every write.
    pub(crate) fn into_writes(self) -> impl Iterator<Item = (Table, Vec<u8>, Option<Vec<u8>>)> {
        Table::ALL
            .into_iter()
            .zip(self.tables)
            .flat_map(|(table, map)| map.into_iter().map(move |(k, v)| (table, k, v)))
    }
}

/// The keys a scan may return: those starting with `prefix` and strictly greater than `after`.
#[derive(Debug)]
pub(crate) struct KeyRange {
    lower: Vec<u8>,
    lower_excluded: bool,
    upper: Option<Vec<u8>>,
}

impl KeyRange {
    /// `None` when no key can match.
    pub(crate) fn new(prefix: &[u8], after: Option<&[u8]>) -> Option<KeyRange> {
        let (lower, lower_excluded) = match after {
            Some(after) if after >= prefix => (after.to_vec(), true),
            _ => (prefix.to_vec(), false),
        };
        let upper = prefix_successor(prefix);
        if let Some(upper) = &upper
            && lower.as_slice() >= upper.as_slice()
        {
            return None;
        }
        Some(KeyRange {
            lower,
            lower_excluded,
            upper,
        })
    }

    pub(crate) fn lower(&self) -> Bound<&[u8]> {
        if self.lower_excluded {
            Bound::Excluded(self.lower.as_slice())
        } else {
            Bound::Included(self.lower.as_slice())
        }
    }

    pub(crate) fn upper(&self) -> Bound<&[u8]> {
        match &self.upper {
            Some(upper) => Bound::Excluded(upper.as_slice()),
            None => Bound::Unbounded,
        }
    }
}

/// The smallest key greater than every key starting with `prefix`; `None` if there is none
/// (empty prefix or all `0xff`).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&byte| byte != 0xff)?;
    let mut upper = prefix[..=last].to_vec();
    upper[last] += 1;
    Some(upper)
}

/// Merges ascending overlay entries (which win) over ascending base entries, drops deletes and
/// returns at most `limit` live pairs.
pub(crate) fn merge_scan<E>(
    base: impl Iterator<Item = Result<KeyValue, E>>,
    overlay: impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    limit: usize,
) -> Result<Vec<KeyValue>, E> {
    let mut out = Vec::new();
    let mut base = base.peekable();
    let mut overlay = overlay.peekable();
    while out.len() < limit {
        let take_overlay = match (base.peek(), overlay.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => {
                return Err(base
                    .next()
                    .and_then(Result::err)
                    .expect("invariant: peeked an error"));
            }
            (None, Some(_)) => true,
            (Some(Ok(_)), None) => false,
            (Some(Ok((base_key, _))), Some((overlay_key, _))) => {
                if base_key == overlay_key {
                    base.next();
                    true
                } else {
                    overlay_key < base_key
                }
            }
        };
        if take_overlay {
            let (key, value) = overlay.next().expect("invariant: peeked an entry");
            if let Some(value) = value {
                out.push((key, value));
            }
        } else {
            out.push(base.next().expect("invariant: peeked an entry")?);
        }
    }
    Ok(out)
}

/// Merges two ascending overlays; `upper` wins on the same key.
pub(crate) fn merge_overlays<'a>(
    upper: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    lower: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut merged: BTreeMap<&[u8], Option<&[u8]>> = lower.collect();
    merged.extend(upper);
    merged
        .into_iter()
        .map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_handles_ff_and_empty() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn key_range_is_empty_when_after_is_past_the_prefix() {
        assert!(KeyRange::new(b"a", Some(b"b")).is_none());
        assert!(KeyRange::new(b"a", Some(b"a")).is_some());
        assert!(KeyRange::new(b"", Some(b"zzz")).is_some());
    }

    #[test]
    fn merge_scan_lets_overlay_win_and_hide_deletes() {
        let base = vec![
            Ok::<_, ()>((b"a".to_vec(), b"1".to_vec())),
            Ok((b"b".to_vec(), b"2".to_vec())),
            Ok((b"d".to_vec(), b"4".to_vec())),
        ];
        let overlay = vec![
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"3".to_vec())),
            (b"d".to_vec(), Some(b"40".to_vec())),
        ];
        let merged = merge_scan(base.into_iter(), overlay.into_iter(), 10);
        assert_eq!(
            merged,
            Ok(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"3".to_vec()),
                (b"d".to_vec(), b"40".to_vec()),
            ])
        );
    }
}
