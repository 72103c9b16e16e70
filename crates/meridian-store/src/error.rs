//! The crate's error type.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the store. Each message says what is wrong and what would
/// be right.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store directory could not be created or the writer thread could not be started.
    #[error(
        "cannot prepare the store directory {dir}: {source}; the directory must be creatable \
         and writable by this process"
    )]
    Io {
        /// The store directory.
        dir: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Another live process (or another open `Store` in this process) holds the directory.
    #[error(
        "store directory {dir} is already in use by another open store (its lock is held); \
         stop the other process or use a different --data directory"
    )]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },

    /// The directory was written by a store format this build does not read.
    #[error(
        "store directory {dir} was written by store format {found}; this build reads format \
         {supported}: use a matching release or a fresh --data directory"
    )]
    UnsupportedFormat {
        /// The store directory.
        dir: PathBuf,
        /// The format version found in the directory.
        found: u32,
        /// The format version this build reads.
        supported: u32,
    },

    /// The stored format version is not a 4-byte big-endian integer.
    #[error(
        "store directory {dir} holds an unreadable format_version ({len} bytes, expected a \
         4-byte big-endian integer): the directory is damaged or not a Meridian store; use a \
         fresh --data directory"
    )]
    CorruptFormatVersion {
        /// The store directory.
        dir: PathBuf,
        /// Length of the stored value.
        len: usize,
    },

    /// fjall refused to open the directory.
    #[error(
        "cannot open the store in {dir}: {source}; the directory must be an intact Meridian \
         store or empty"
    )]
    Open {
        /// The store directory.
        dir: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },

    /// A read failed in the storage engine.
    #[error("reading the store failed: {source}; the disk or the store files are damaged")]
    Read {
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },

    /// Writing or syncing the group this transaction belonged to failed. The transaction was
    /// not acknowledged; whether it survives is known only after the store is reopened.
    #[error(
        "committing the transaction's group failed: {source}; the transaction was not \
         acknowledged and the store accepts no more writes: restart the process and retry \
         the request idempotently"
    )]
    CommitFailed {
        /// The engine's error, shared by every transaction of the group.
        #[source]
        source: Arc<fjall::Error>,
    },

    /// The transaction wrote a key fjall cannot store; nothing of it was committed.
    #[error(
        "the transaction wrote a key of {len} bytes to table {table:?}, but keys must be 1 to \
         65535 bytes long; nothing of the transaction was committed"
    )]
    InvalidKey {
        /// The table written to.
        table: crate::Table,
        /// Length of the rejected key.
        len: usize,
    },

    /// The transaction wrote a value fjall cannot store; nothing of it was committed.
    #[error(
        "the transaction wrote a value of {len} bytes to table {table:?}, but values must be \
         at most 4294967295 bytes long; nothing of the transaction was committed"
    )]
    InvalidValue {
        /// The table written to.
        table: crate::Table,
        /// Length of the rejected value.
        len: usize,
    },

    /// The transaction closure panicked; its writes were discarded, the store is unaffected.
    #[error(
        "the transaction closure panicked, so its writes were discarded and nothing was \
         committed for it; the closure must return instead of panicking"
    )]
    TransactionPanicked,

    /// The writer thread is gone (the store is shutting down or the writer died), so the
    /// transaction did not run or its outcome was never reported.
    #[error(
        "the store's writer thread has stopped, so the transaction's outcome is unknown; \
         reopen the store and retry idempotently"
    )]
    WriterStopped,
}
