//! Errors of the storage layer.

use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not a redb database at all.
    #[error("{path}: not an rwkvdb database ({reason})")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// A redb database without rwkvdb's metadata.
    #[error("{path}: a redb file, but not an rwkvdb database (no rwkvdb_meta table)")]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer rwkvdb.
    #[error("{path}: format version {found} is newer than this rwkvdb supports ({supported}); upgrade rwkvdb")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Another process (or handle) has the file open.
    #[error(
        "{path}: the database is already open elsewhere (one process at a time: to share it, run `rwkvdb serve` and give other commands --server)"
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// A write through a handle of a collection dropped since (by this or another thread).
    #[error("the collection (id {id}) was dropped while this handle was open; nothing was written")]
    CollectionDropped {
        /// The dropped collection's id.
        id: u64,
    },
    /// An operation that needs the file to itself (compaction) found it open elsewhere.
    #[error("{path}: {operation} needs exclusive access; close every other handle and process using the file")]
    NeedsExclusiveAccess {
        /// The file.
        path: PathBuf,
        /// What was attempted.
        operation: &'static str,
    },
    /// A record failed its checksum or could not be parsed.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which record (table and key).
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A record could not be encoded (e.g. a model path that is not valid UTF-8).
    #[error("cannot store {what}: {detail}")]
    Unencodable {
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
    /// Any other redb error (I/O, full disk, ...).
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError
);
