//! [`Txn`]: the handle a transaction closure reads and writes through.

use crate::cache::{ReadCache, Source, read_through};
use crate::engine::View;
use crate::overlay::{KeyRange, Overlay, merge_overlays, merge_scan};
use crate::{Error, KeyValue, Table};

/// Longest key a transaction may write, in bytes (fjall's limit); keys must not be empty.
pub const MAX_KEY_LEN: usize = 65_535;

/// Longest value a transaction may write, in bytes (fjall's limit, 4 GiB - 1).
pub const MAX_VALUE_LEN: usize = 4_294_967_295;

/// A transaction in progress, handed to the closure given to [`crate::Store::transact`].
///
/// Reads see, in this order of precedence: this transaction's own writes, the writes of the
/// earlier transactions of the same group, and everything committed before the group.
/// Writes are buffered and become visible to other readers only after the whole group has been
/// committed (and, with [`crate::Durability::Fsync`], synced). Transactions run one at a time
/// on the writer thread, so a transaction is serializable by construction. If the closure
/// panics, or writes a key or value the engine cannot store (see [`Txn::put`]), all of its
/// writes are discarded and the transaction fails.
pub struct Txn<'a> {
    view: &'a View<'a>,
    cache: Option<&'a ReadCache>,
    group: &'a Overlay,
    own: Overlay,
    rejected: Option<Error>,
}

impl<'a> Txn<'a> {
    /// A transaction reading `group`'s earlier writes over `view`, the latest published state,
    /// with [`Table::Data`] reads of `view` through `cache`.
    pub(crate) fn new(
        view: &'a View<'a>,
        cache: Option<&'a ReadCache>,
        group: &'a Overlay,
    ) -> Txn<'a> {
        Txn {
            view,
            cache,
            group,
            own: Overlay::default(),
            rejected: None,
        }
    }

    /// The transaction's writes, or why it must fail.
    pub(crate) fn into_writes(self) -> Result<Overlay, Error> {
        match self.rejected {
            Some(error) => Err(error),
            None => Ok(self.own),
        }
    }

    fn check_key(&mut self, table: Table, key: &[u8]) -> bool {
        if (1..=MAX_KEY_LEN).contains(&key.len()) {
            return true;
        }
        self.rejected.get_or_insert(Error::InvalidKey {
            table,
            len: key.len(),
        });
        false
    }

    /// The current value of `key` in `table` as this transaction sees it (see [`Txn`]);
    /// `None` if absent or deleted.
    ///
    /// # Errors
    /// [`Error::Read`] if the engine fails to read committed data.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self
            .own
            .get(table, key)
            .or_else(|| self.group.get(table, key))
        {
            Some(value) => Ok(value.map(<[u8]>::to_vec)),
            None => read_through(self.cache, table, key, Source::Published, || {
                self.view.get(table, key)
            }),
        }
    }

    /// Sets `key` in `table` to `value`, replacing any earlier value.
    ///
    /// Keys must be 1 to [`MAX_KEY_LEN`] bytes and values at most [`MAX_VALUE_LEN`] bytes;
    /// otherwise the write is ignored and the whole transaction fails with
    /// [`Error::InvalidKey`] or [`Error::InvalidValue`] once the closure returns.
    pub fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        if !self.check_key(table, key) {
            return;
        }
        if value.len() > MAX_VALUE_LEN {
            self.rejected.get_or_insert(Error::InvalidValue {
                table,
                len: value.len(),
            });
            return;
        }
        self.own.set(table, key, Some(value));
    }

    /// Removes `key` from `table`; deleting an absent key is not an error. The key must be
    /// valid as for [`Txn::put`].
    pub fn delete(&mut self, table: Table, key: &[u8]) {
        if self.check_key(table, key) {
            self.own.set(table, key, None);
        }
    }

    /// Up to `limit` pairs of `table`, ascending by key, whose keys start with `prefix` and are
    /// strictly greater than `after` (when given), as this transaction sees them (see [`Txn`]).
    ///
    /// # Errors
    /// [`Error::Read`] if the engine fails to read committed data.
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
        let overlay = merge_overlays(
            self.own.range(table, &range),
            self.group.range(table, &range),
        );
        merge_scan(self.view.range(table, &range), overlay.into_iter(), limit)
    }
}
