//! Schema upgrades. Each on-disk format version has a description in `migrations/vN.md`; the
//! step from N-1 to N goes here, with the decoders of the records it rewrites. All steps a file
//! needs run in one write transaction when it is opened, so an interrupted upgrade leaves the
//! file at its old version.

use redb::{ReadableTable, TableDefinition};

use super::records::{CollectionRecord, DocRecord};
use super::schema::{self, CollectionTables, COLLECTIONS, META};
use super::{StoreError, FORMAT_VERSION};

/// Brings a file at `found` up to [`FORMAT_VERSION`].
pub(super) fn upgrade(db: &redb::Database, found: u32) -> Result<(), StoreError> {
    if found == FORMAT_VERSION {
        return Ok(());
    }
    if found == 0 || found > FORMAT_VERSION {
        // Versions before 1 never existed; a 0 means the version record is damaged.
        return Err(StoreError::Corrupt { what: "format version".into(), detail: format!("unknown version {found}") });
    }
    let txn = db.begin_write()?;
    // Versions 1 and 2 kept collection records as JSON.
    let collections = json_collections(&txn)?;
    for version in found + 1..=FORMAT_VERSION {
        match version {
            2 => {
                for rec in &collections {
                    v2_chunk_states(&txn, rec.id)?;
                }
            }
            3 => v3_binary_records(&txn, &collections)?,
            _ => {}
        }
    }
    txn.open_table(META)?.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}

/// The collection records of a version 1 or 2 file (JSON, unchecked).
fn json_collections(txn: &redb::WriteTransaction) -> Result<Vec<CollectionRecord>, StoreError> {
    let t = txn.open_table(COLLECTIONS)?;
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        let rec = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
            what: format!("collection record {:?}", k.value()),
            detail: e.to_string(),
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// Version 2 stores each state blob in pieces (`c{id}_states` → `c{id}_state_chunks`) and drops
/// the metadata copy `c{id}_meta` (the checksummed document record holds the metadata).
fn v2_chunk_states(txn: &redb::WriteTransaction, collection: u64) -> Result<(), StoreError> {
    let meta_name = format!("c{collection}_meta");
    txn.delete_table(TableDefinition::<u64, &[u8]>::new(&meta_name))?;
    let old_name = format!("c{collection}_states");
    let old: TableDefinition<u64, &[u8]> = TableDefinition::new(&old_name);
    let tables = CollectionTables::new(collection);
    {
        let source = match txn.open_table(old) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut target = txn.open_table(tables.states())?;
        for entry in source.iter()? {
            let (key, blob) = entry?;
            schema::put_state(&mut target, key.value(), blob.value())?;
        }
    }
    txn.delete_table(old)?;
    Ok(())
}

/// Version 3 encodes collection and document records with bincode behind a version byte and a
/// CRC-32 (collection records were unchecked JSON; document records a hand-written layout).
/// A document record that fails its old checksum is kept as it is: `check` reports it, as it
/// did before the upgrade.
fn v3_binary_records(txn: &redb::WriteTransaction, collections: &[CollectionRecord]) -> Result<(), StoreError> {
    let mut cols = txn.open_table(COLLECTIONS)?;
    for rec in collections {
        cols.insert(rec.name.as_str(), rec.encode()?.as_slice())?;
        let tables = CollectionTables::new(rec.id);
        let mut docs = txn.open_table(tables.docs())?;
        let mut rewritten = Vec::new();
        for entry in docs.iter()? {
            let (k, v) = entry?;
            if let Some(doc) = v2_doc_record(v.value()) {
                rewritten.push((k.value(), doc.encode()?));
            }
        }
        for (key, bytes) in rewritten {
            docs.insert(key, bytes.as_slice())?;
        }
    }
    Ok(())
}

/// Parses a version-2 document record: `[1u8][crc32 u32 of the rest][tokens u32][id_len u32][id]
/// [text_len u32][text][meta_len u32][meta][dim u32][dim x f32]`, little-endian. `None` if it
/// is damaged.
fn v2_doc_record(bytes: &[u8]) -> Option<DocRecord> {
    let (&version, rest) = bytes.split_first()?;
    let (crc, body) = (rest.get(..4)?, rest.get(4..)?);
    if version != 1 || crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut r = Reader(body);
    let tokens = r.u32()?;
    let mut string = || {
        let len = r.u32()? as usize;
        String::from_utf8(r.take(len)?.to_vec()).ok()
    };
    let (id, text, metadata) = (string()?, string()?, string()?);
    let dim = r.u32()? as usize;
    let raw = r.take(dim.checked_mul(4)?)?;
    let embedding = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Some(DocRecord { id, text, metadata, embedding, tokens })
}

/// Reads the version-2 document layout front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
