//! The redb file: schema, format version, migrations and the records rwkvdb keeps in it. This
//! module is the only code that touches redb.
//!
//! redb is the source of truth; everything else (the ANN index, the metadata map) is rebuilt
//! from it.
//!
//! Tables (schema version [`FORMAT_VERSION`]; see `migrations/` and `docs/format.md`):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `rwkvdb_meta` | `&str` | `magic` = `b"rwkvdb"`, `format_version` = u32 LE, `next_collection_id` = u64 LE |
//! | `collections` | name | [`CollectionRecord`] (bincode, CRC-32 checked) |
//! | `c{id}_docs` | doc key `u64` | [`DocRecord`] (bincode, CRC-32 checked) |
//! | `c{id}_ids` | external id | doc key |
//! | `c{id}_state_chunks` | (doc key, piece no.) | encoded state (see [`crate::codec`]) in pieces of at most [`STATE_CHUNK_BYTES`] |

mod error;
mod migrations;
mod records;
mod schema;

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

pub use error::StoreError;
pub use records::{default_precision, CollectionConfig, CollectionRecord, DocRecord, IndexHeader, PartInfo};
pub use schema::STATE_CHUNK_BYTES;
pub(crate) use schema::{CollectionTables, INDEX_CORE, INDEX_FIRST_BLOCK, INDEX_METADATA};
use schema::{COLLECTIONS, MAGIC, META};

/// Current on-disk schema version.
pub const FORMAT_VERSION: u32 = 3;

/// An open database file.
pub(crate) struct Store {
    /// Dropped by hand in `Drop`, behind `catch_unwind` (see there).
    db: std::mem::ManuallyDrop<redb::Database>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the database file, with a page cache of `cache_bytes`, checks it is an
    /// rwkvdb file this build can read and upgrades an older format.
    pub(crate) fn open(path: &Path, create: bool, cache_bytes: usize) -> Result<Self, StoreError> {
        guarded(|| {
            if path.is_dir() {
                let reason = "it is a directory; give the path of a database file".to_string();
                return Err(StoreError::NotADatabase { path: path.to_path_buf(), reason });
            }
            let builder = builder(cache_bytes);
            let db = if path.exists() {
                builder.open(path)
            } else if create {
                builder.create(path)
            } else {
                return Err(StoreError::Redb(redb::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{}: no such database file", path.display()),
                ))));
            };
            let db = db.map_err(|e| open_error(e, path))?;
            Self::prepare(db, path)
        })
    }

    /// Opens a database over any redb storage backend (fault injection, in-memory files);
    /// `label` names it in errors.
    pub(crate) fn open_backend(
        backend: impl redb::StorageBackend,
        label: &Path,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        guarded(|| {
            let db = builder(cache_bytes).create_with_backend(backend).map_err(|e| open_error(e, label))?;
            Self::prepare(db, label)
        })
    }

    /// Compacts a file no one has open; `true` if pages were reclaimed.
    pub(crate) fn compact_file(path: &Path, cache_bytes: usize) -> Result<bool, StoreError> {
        guarded(|| {
            let mut store = Self::open(path, false, cache_bytes).map_err(|e| match e {
                StoreError::Locked { path } => StoreError::NeedsExclusiveAccess { path, operation: "compaction" },
                other => other,
            })?;
            Ok(store.db.compact()?)
        })
    }

    /// Checks rwkvdb's metadata (and upgrades older versions); an empty file gets fresh metadata.
    fn prepare(mut db: redb::Database, path: &Path) -> Result<Self, StoreError> {
        let version = {
            let r = db.begin_read()?;
            match r.open_table(META) {
                Ok(t) => Some(t.get("format_version")?.map(|v| v.value().to_vec())),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        match version {
            Some(Some(v)) => {
                let found = v.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
                if found > FORMAT_VERSION {
                    return Err(StoreError::UnsupportedVersion {
                        path: path.to_path_buf(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found < FORMAT_VERSION {
                    // A migration writes the whole file: verify it first. redb panics on some
                    // damage inside a write transaction and then again in a destructor, which
                    // aborts the process (found by fuzzing); its integrity check refuses the
                    // damage instead, or repairs what it can.
                    db.check_integrity().map_err(|e| StoreError::Corrupt {
                        what: "database file".into(),
                        detail: format!("integrity check before upgrading from format {found}: {e}"),
                    })?;
                }
                migrations::upgrade(&db, found)?;
            }
            Some(None) => return Err(StoreError::ForeignDatabase { path: path.to_path_buf() }),
            None => {
                let is_empty = db.begin_read()?.list_tables()?.next().is_none();
                if !is_empty {
                    return Err(StoreError::ForeignDatabase { path: path.to_path_buf() });
                }
                let w = db.begin_write()?;
                {
                    let mut t = w.open_table(META)?;
                    t.insert("magic", MAGIC)?;
                    t.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())?;
                    w.open_table(COLLECTIONS)?;
                }
                w.commit()?;
            }
        }
        Ok(Self { db: std::mem::ManuallyDrop::new(db), path: path.to_path_buf() })
    }

    /// The file (or the label of a custom backend).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every collection record, by name.
    pub(crate) fn collections(&self) -> Result<Vec<CollectionRecord>, StoreError> {
        guarded(|| {
            let r = self.db.begin_read()?;
            let t = r.open_table(COLLECTIONS)?;
            let mut out = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                out.push(CollectionRecord::decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// One collection record.
    pub(crate) fn collection(&self, name: &str) -> Result<Option<CollectionRecord>, StoreError> {
        guarded(|| {
            let r = self.db.begin_read()?;
            let t = r.open_table(COLLECTIONS)?;
            let rec = t.get(name)?.map(|v| CollectionRecord::decode(name, v.value())).transpose()?;
            Ok(rec)
        })
    }

    /// Creates a collection: assigns it a new id, stores the record `make(id)` returns and
    /// creates its tables, in one transaction. `None` if the name is taken.
    pub(crate) fn create_collection(
        &self,
        name: &str,
        make: impl FnOnce(u64) -> CollectionRecord,
    ) -> Result<Option<CollectionRecord>, StoreError> {
        guarded(|| {
            let txn = self.db.begin_write()?;
            let record = {
                let mut cols = txn.open_table(COLLECTIONS)?;
                if cols.get(name)?.is_some() {
                    return Ok(None);
                }
                let mut meta = txn.open_table(META)?;
                let id = meta
                    .get("next_collection_id")?
                    .and_then(|v| v.value().get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes))
                    .unwrap_or(1);
                meta.insert("next_collection_id", (id + 1).to_le_bytes().as_slice())?;
                let record = make(id);
                cols.insert(name, record.encode()?.as_slice())?;
                let t = CollectionTables::new(id);
                txn.open_table(t.docs())?;
                txn.open_table(t.ids())?;
                txn.open_table(t.states())?;
                record
            };
            txn.commit()?;
            Ok(Some(record))
        })
    }

    /// Replaces a collection's record (same name and id); `false` if there is none of that name.
    pub(crate) fn update_collection(&self, record: &CollectionRecord) -> Result<bool, StoreError> {
        guarded(|| {
            let txn = self.db.begin_write()?;
            {
                let mut cols = txn.open_table(COLLECTIONS)?;
                if cols.get(record.name.as_str())?.is_none() {
                    return Ok(false);
                }
                cols.insert(record.name.as_str(), record.encode()?.as_slice())?;
            }
            txn.commit()?;
            Ok(true)
        })
    }

    /// Drops a collection's record and tables; `false` if there was none of that name.
    pub(crate) fn drop_collection(&self, name: &str) -> Result<bool, StoreError> {
        guarded(|| {
            let Some(record) = self.collection(name)? else { return Ok(false) };
            let t = CollectionTables::new(record.id);
            let txn = self.db.begin_write()?;
            txn.open_table(COLLECTIONS)?.remove(name)?;
            txn.delete_table(t.docs())?;
            txn.delete_table(t.ids())?;
            txn.delete_table(t.states())?;
            txn.delete_table(t.index())?;
            txn.commit()?;
            Ok(true)
        })
    }

    /// A consistent snapshot of one collection's tables.
    pub(crate) fn read(&self, tables: &CollectionTables) -> Result<CollectionReader, StoreError> {
        guarded(|| {
            let txn = self.db.begin_read()?;
            Ok(CollectionReader {
                docs: txn.open_table(tables.docs())?,
                ids: txn.open_table(tables.ids())?,
                states: txn.open_table(tables.states())?,
            })
        })
    }

    /// Runs `f` in one write transaction over a collection's tables and commits if it returns
    /// `Ok`; on `Err` nothing is written. A non-`durable` commit may be lost by a crash (never
    /// half of it) until the next durable one.
    pub(crate) fn write<T, E: From<StoreError>>(
        &self,
        tables: &CollectionTables,
        durable: bool,
        f: impl FnOnce(&mut CollectionWriter<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        guarded(|| {
            let mut txn = self.db.begin_write().map_err(StoreError::from)?;
            if !durable {
                txn.set_durability(redb::Durability::None).map_err(StoreError::from)?;
            }
            ensure_exists(&txn, tables)?;
            let out = {
                let mut w = CollectionWriter {
                    docs: txn.open_table(tables.docs()).map_err(StoreError::from)?,
                    ids: txn.open_table(tables.ids()).map_err(StoreError::from)?,
                    states: txn.open_table(tables.states()).map_err(StoreError::from)?,
                    collections: txn.open_table(COLLECTIONS).map_err(StoreError::from)?,
                };
                f(&mut w)?
            };
            txn.commit().map_err(StoreError::from)?;
            Ok(out)
        })
    }
}

impl Store {
    /// A read snapshot of a collection's saved ANN index; `None` when none was ever saved.
    pub(crate) fn read_index(&self, tables: &CollectionTables) -> Result<Option<IndexReader>, StoreError> {
        guarded(|| {
            let txn = self.db.begin_read()?;
            match txn.open_table(tables.index()) {
                Ok(table) => Ok(Some(IndexReader { table })),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Saves a collection's ANN index in one transaction: each of `parts` replaces the part of
    /// that number, parts numbered from `drop_from` on are removed, and `header` is written
    /// last. A crash leaves the previous saved index or this one, never a mix.
    pub(crate) fn write_index(
        &self,
        tables: &CollectionTables,
        durable: bool,
        header: &IndexHeader,
        parts: &[(u32, &[u8])],
        drop_from: u32,
    ) -> Result<(), StoreError> {
        let header = header.encode()?;
        guarded(|| {
            let mut txn = self.db.begin_write()?;
            if !durable {
                txn.set_durability(redb::Durability::None)?;
            }
            ensure_exists(&txn, tables)?;
            {
                let mut t = txn.open_table(tables.index())?;
                t.retain_in((drop_from, 0).., |_, _| false)?;
                for (part, bytes) in parts.iter().copied().chain([(schema::INDEX_HEADER, header.as_slice())]) {
                    t.retain_in((part, 0)..=(part, u32::MAX), |_, _| false)?;
                    schema::put_pieces(&mut t, part, bytes, || format!("index part {part}"))?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }
}

/// Refuses a write to a collection dropped since its handle was opened: opening its tables
/// would recreate them, and writing its record back would bring it back to life (or overwrite
/// a new collection of the same name).
fn ensure_exists(txn: &redb::WriteTransaction, tables: &CollectionTables) -> Result<(), StoreError> {
    let collections = txn.open_table(COLLECTIONS)?;
    for entry in collections.iter()? {
        let (name, bytes) = entry?;
        if CollectionRecord::decode(name.value(), bytes.value())?.id == tables.id {
            return Ok(());
        }
    }
    Err(StoreError::CollectionDropped { id: tables.id })
}

/// A read snapshot of a saved ANN index (see [`Store::read_index`]).
pub(crate) struct IndexReader {
    table: redb::ReadOnlyTable<(u32, u32), &'static [u8]>,
}

impl IndexReader {
    /// The header; `None` when absent.
    pub(crate) fn header(&self) -> Result<Option<IndexHeader>, StoreError> {
        guarded(|| schema::get_pieces(&self.table, schema::INDEX_HEADER)?.map(|b| IndexHeader::decode(&b)).transpose())
    }

    /// Part `part`, reassembled; `None` when absent.
    pub(crate) fn part(&self, part: u32) -> Result<Option<Vec<u8>>, StoreError> {
        guarded(|| schema::get_pieces(&self.table, part))
    }
}

impl Drop for Store {
    /// redb writes its allocator state when a database closes, and on some damaged files it
    /// panics there (found by fuzzing): closing must not crash the process either.
    fn drop(&mut self) {
        // SAFETY: `db` is taken exactly once, here, and never used afterwards.
        let db = unsafe { std::mem::ManuallyDrop::take(&mut self.db) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
    }
}

/// Runs redb code, turning a panic inside it into [`StoreError::Corrupt`]: redb answers some
/// kinds of file damage with a failed assertion instead of an error (found by fuzzing:
/// `docs/reliability.md`), and a damaged file must give the caller an error, not a crash. After
/// such an error the handle should be dropped (as after an I/O error).
fn guarded<T, E: From<StoreError>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(StoreError::Corrupt {
            what: "database file".into(),
            detail: format!("the storage engine stopped on damaged data ({message})"),
        }
        .into())
    })
}

/// redb's builder with rwkvdb's settings.
fn builder(cache_bytes: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(cache_bytes);
    b
}

fn open_error(e: redb::DatabaseError, path: &Path) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.to_path_buf() },
        // redb reports a foreign file (bad magic) as InvalidData; other I/O errors stay I/O errors.
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() != std::io::ErrorKind::InvalidData => {
            StoreError::Redb(redb::Error::Io(io))
        }
        other => StoreError::NotADatabase { path: path.to_path_buf(), reason: other.to_string() },
    }
}

/// A read snapshot of one collection.
pub(crate) struct CollectionReader {
    docs: redb::ReadOnlyTable<u64, &'static [u8]>,
    ids: redb::ReadOnlyTable<&'static str, u64>,
    states: redb::ReadOnlyTable<(u64, u32), &'static [u8]>,
}

impl CollectionReader {
    /// The key of the document with this id.
    pub(crate) fn key_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        guarded(|| Ok(self.ids.get(id)?.map(|v| v.value())))
    }

    /// The document under `key`; a damaged record is a [`StoreError::Corrupt`].
    pub(crate) fn doc(&self, key: u64) -> Result<Option<DocRecord>, StoreError> {
        guarded(|| {
            let Some(raw) = self.docs.get(key)? else { return Ok(None) };
            DocRecord::decode(raw.value(), || format!("document key {key}")).map(Some)
        })
    }

    /// Number of documents (id entries).
    pub(crate) fn count(&self) -> Result<u64, StoreError> {
        guarded(|| Ok(self.ids.len()?))
    }

    /// The encoded state of document `key`, reassembled from its pieces.
    pub(crate) fn state(&self, key: u64) -> Result<Option<Vec<u8>>, StoreError> {
        guarded(|| schema::get_state(&self.states, key))
    }

    /// Calls `f` with every document's key and stored bytes (decode with [`DocRecord::decode`]),
    /// in key order.
    pub(crate) fn for_each_doc<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        guarded(|| {
            for entry in self.docs.iter().map_err(StoreError::from)? {
                let (k, v) = entry.map_err(StoreError::from)?;
                f(k.value(), v.value())?;
            }
            Ok(())
        })
    }

    /// Calls `f` with every (id, document key) entry, in id order.
    pub(crate) fn for_each_id<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&str, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        guarded(|| {
            for entry in self.ids.iter().map_err(StoreError::from)? {
                let (k, v) = entry.map_err(StoreError::from)?;
                f(k.value(), v.value())?;
            }
            Ok(())
        })
    }

    /// Total bytes of all stored state pieces.
    pub(crate) fn state_bytes(&self) -> Result<u64, StoreError> {
        guarded(|| {
            let mut total = 0;
            for entry in self.states.iter()? {
                let (_, piece) = entry?;
                total += piece.value().len() as u64;
            }
            Ok(total)
        })
    }
}

/// One collection's tables inside a write transaction (see [`Store::write`]).
pub(crate) struct CollectionWriter<'t> {
    docs: redb::Table<'t, u64, &'static [u8]>,
    ids: redb::Table<'t, &'static str, u64>,
    states: redb::Table<'t, (u64, u32), &'static [u8]>,
    collections: redb::Table<'t, &'static str, &'static [u8]>,
}

impl CollectionWriter<'_> {
    /// The key of the document with this id.
    pub(crate) fn key_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.ids.get(id)?.map(|v| v.value()))
    }

    /// Stores a new document under `key` with its id entry and (optional) encoded state.
    pub(crate) fn put_doc(&mut self, key: u64, doc: &DocRecord, state: Option<&[u8]>) -> Result<(), StoreError> {
        self.docs.insert(key, doc.encode()?.as_slice())?;
        self.ids.insert(doc.id.as_str(), key)?;
        if let Some(blob) = state {
            schema::put_state(&mut self.states, key, blob)?;
        }
        Ok(())
    }

    /// Removes a document's record and state, not its id entry (see [`Self::remove_id`]).
    pub(crate) fn remove_doc(&mut self, key: u64) -> Result<(), StoreError> {
        self.docs.remove(key)?;
        schema::remove_state(&mut self.states, key)
    }

    /// Removes an id entry; returns the key it pointed to.
    pub(crate) fn remove_id(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.ids.remove(id)?.map(|v| v.value()))
    }

    /// Replaces the collection's record (its next key, after inserts).
    pub(crate) fn put_record(&mut self, record: &CollectionRecord) -> Result<(), StoreError> {
        self.collections.insert(record.name.as_str(), record.encode()?.as_slice())?;
        Ok(())
    }
}
