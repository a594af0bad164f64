//! The redb file: schema, format version, and the records rwkvdb keeps in it.
//!
//! redb is the source of truth; everything else (the ANN index) can be rebuilt from it.
//!
//! Tables (schema version [`FORMAT_VERSION`]; see `migrations/` and `docs/format.md`):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `rwkvdb_meta` | `&str` | `magic` = `b"rwkvdb"`, `format_version` = u32 LE |
//! | `collections` | name | JSON [`CollectionRecord`] |
//! | `c{id}_docs` | doc key `u64` | [`DocRecord`] (binary, CRC-32 checked) |
//! | `c{id}_ids` | external id | doc key |
//! | `c{id}_state_chunks` | (doc key, chunk no.) | encoded state (see [`crate::codec`]) in pieces of at most [`STATE_CHUNK_BYTES`] |

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Current on-disk schema version.
pub const FORMAT_VERSION: u32 = 2;

/// Largest piece of a state blob kept in one row. redb stores a value that outgrows a page in a
/// run of 2^k pages, so a 700 KB blob in one row would occupy 1 MiB; pieces just under 16 KiB
/// fill their pages and only the last, partial piece is rounded up (by at most 8 KiB).
pub const STATE_CHUNK_BYTES: usize = 16 * 1024 - 256;
const MAGIC: &[u8] = b"rwkvdb";

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("rwkvdb_meta");
pub(crate) const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");

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
    #[error("{path}: the database is already open elsewhere")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// A record failed its checksum or could not be parsed.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which record (table and key).
        what: String,
        /// What is wrong.
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
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A collection's persistent description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionRecord {
    /// Numeric id used in table names (never reused within a file).
    pub id: u64,
    /// The user-facing name.
    pub name: String,
    /// The configuration it was created with.
    pub config: crate::collection::CollectionConfig,
    /// Fingerprint of model weights, tokenizer, templates, layer selection and codec.
    pub fingerprint: String,
    /// Next document key to assign.
    pub next_key: u64,
    /// The model's shape, so the collection opens without loading the model (absent in
    /// collections created before it was recorded: those load the model when opened).
    #[serde(default)]
    pub shape: Option<crate::model::ModelShape>,
}

/// Table names of one collection.
pub(crate) struct CollectionTables {
    pub docs: String,
    pub ids: String,
    pub states: String,
}

impl CollectionTables {
    pub fn new(id: u64) -> Self {
        Self { docs: format!("c{id}_docs"), ids: format!("c{id}_ids"), states: format!("c{id}_state_chunks") }
    }
    pub fn docs(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.docs)
    }
    pub fn ids(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.ids)
    }
    pub fn states(&self) -> TableDefinition<'_, (u64, u32), &'static [u8]> {
        TableDefinition::new(&self.states)
    }
}

/// Writes a state blob in pieces of at most [`STATE_CHUNK_BYTES`] (replacing nothing: remove
/// an old state first).
pub(crate) fn put_state(
    table: &mut redb::Table<(u64, u32), &'static [u8]>,
    key: u64,
    blob: &[u8],
) -> Result<(), StoreError> {
    for (i, piece) in blob.chunks(STATE_CHUNK_BYTES).enumerate() {
        table.insert((key, i as u32), piece)?;
    }
    Ok(())
}

/// Reads a state blob back from its pieces; `None` when the document has no state.
pub(crate) fn get_state(
    table: &impl ReadableTable<(u64, u32), &'static [u8]>,
    key: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut blob = Vec::new();
    let mut pieces = 0;
    for entry in table.range((key, 0)..=(key, u32::MAX))? {
        let (_, piece) = entry?;
        blob.extend_from_slice(piece.value());
        pieces += 1;
    }
    Ok((pieces > 0).then_some(blob))
}

/// Removes every piece of a document's state.
pub(crate) fn remove_state(table: &mut redb::Table<(u64, u32), &'static [u8]>, key: u64) -> Result<(), StoreError> {
    table.retain_in((key, 0)..=(key, u32::MAX), |_, _| false)?;
    Ok(())
}

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocRecord {
    /// The caller's id.
    pub id: String,
    /// The document text.
    pub text: String,
    /// Metadata as JSON text (`null` when none).
    pub metadata: String,
    /// The retrieval embedding, L2-normalised.
    pub embedding: Vec<f32>,
    /// Tokens the document was embedded with (for statistics).
    pub tokens: u32,
}

const DOC_VERSION: u8 = 1;

impl DocRecord {
    /// Binary layout: `[version u8][crc32 u32 of the rest][tokens u32][id_len u32][id][text_len u32][text]
    /// [meta_len u32][meta][dim u32][dim x f32]`, all little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut body =
            Vec::with_capacity(16 + self.id.len() + self.text.len() + self.metadata.len() + 4 * self.embedding.len());
        body.extend_from_slice(&self.tokens.to_le_bytes());
        for s in [&self.id, &self.text, &self.metadata] {
            body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        body.extend_from_slice(&(self.embedding.len() as u32).to_le_bytes());
        for v in &self.embedding {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 5);
        out.push(DOC_VERSION);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses and checks a record; `what` names it in errors.
    pub fn decode(bytes: &[u8], what: impl Fn() -> String) -> Result<Self, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt { what: what(), detail: detail.to_string() };
        let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
        if version != DOC_VERSION {
            return Err(corrupt(&format!("unknown document record version {version}")));
        }
        let crc = rest.get(..4).ok_or_else(|| corrupt("truncated"))?;
        let body = &rest[4..];
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader { b: body };
        let tokens = r.u32().ok_or_else(|| corrupt("truncated"))?;
        let mut strings = Vec::with_capacity(3);
        for _ in 0..3 {
            let n = r.u32().ok_or_else(|| corrupt("truncated"))? as usize;
            let s = r.take(n).ok_or_else(|| corrupt("truncated"))?;
            strings.push(String::from_utf8(s.to_vec()).map_err(|_| corrupt("invalid UTF-8"))?);
        }
        let dim = r.u32().ok_or_else(|| corrupt("truncated"))? as usize;
        let raw = r.take(dim.checked_mul(4).ok_or_else(|| corrupt("bad dim"))?).ok_or_else(|| corrupt("truncated"))?;
        let embedding = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let metadata = strings.pop().unwrap_or_default();
        let text = strings.pop().unwrap_or_default();
        let id = strings.pop().unwrap_or_default();
        Ok(Self { id, text, metadata, embedding, tokens })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Opens (or creates) the database file, with a page cache of `cache_bytes`, and checks it is
/// an rwkvdb file this build can read.
pub fn open_file(path: &Path, create: bool, cache_bytes: usize) -> Result<Database, StoreError> {
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
    prepare(db, path)
}

/// Opens a database over any redb storage backend (fault injection, in-memory files);
/// `label` names it in errors.
pub fn open_backend(
    backend: impl redb::StorageBackend,
    label: &Path,
    cache_bytes: usize,
) -> Result<Database, StoreError> {
    let db = builder(cache_bytes).create_with_backend(backend).map_err(|e| open_error(e, label))?;
    prepare(db, label)
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

/// Checks rwkvdb's metadata (and upgrades older versions); an empty file gets fresh metadata.
fn prepare(db: Database, path: &Path) -> Result<Database, StoreError> {
    // A fresh file gets the metadata; an existing one must already have it.
    let has_meta = {
        let r = db.begin_read()?;
        match r.open_table(META) {
            Ok(t) => Some(t.get("format_version")?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match has_meta {
        Some(Some(v)) => {
            let found = v.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).unwrap_or(0);
            if found > FORMAT_VERSION {
                return Err(StoreError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            crate::migrations::upgrade(&db, found)?;
        }
        Some(None) => return Err(StoreError::ForeignDatabase { path: path.to_path_buf() }),
        None => {
            let is_empty = {
                let r = db.begin_read()?;
                let empty = r.list_tables()?.next().is_none();
                empty
            };
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
    Ok(db)
}

/// Reads every collection record.
pub fn list_collections(db: &Database) -> Result<Vec<CollectionRecord>, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(COLLECTIONS)?;
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        out.push(parse_collection(k.value(), v.value())?);
    }
    Ok(out)
}

/// Parses a collection record.
pub fn parse_collection(name: &str, bytes: &[u8]) -> Result<CollectionRecord, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { what: format!("collection record {name:?}"), detail: e.to_string() })
}

/// Reads one collection record.
pub fn get_collection(db: &Database, name: &str) -> Result<Option<CollectionRecord>, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(COLLECTIONS)?;
    let rec = t.get(name)?.map(|v| parse_collection(name, v.value())).transpose()?;
    Ok(rec)
}

/// Serialises a collection record.
pub fn collection_bytes(rec: &CollectionRecord) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_vec(rec).unwrap_or_default()
}
