//! Table definitions and the piecewise storage of state blobs.

use redb::{ReadableTable, TableDefinition};

use super::StoreError;

/// `magic`, `format_version` (u32 LE), `next_collection_id` (u64 LE).
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("rwkvdb_meta");
/// Collection name → encoded [`super::CollectionRecord`].
pub(super) const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");
/// Written into `META` under `magic`.
pub(super) const MAGIC: &[u8] = b"rwkvdb";

/// Largest piece of a state blob kept in one row. redb stores a value that outgrows a page in a
/// run of 2^k pages, so a 700 KB blob in one row would occupy 1 MiB; pieces just under 16 KiB
/// fill their pages and only the last, partial piece is rounded up (by at most 8 KiB).
pub const STATE_CHUNK_BYTES: usize = 16 * 1024 - 256;

/// Documents: key → encoded [`super::DocRecord`].
pub(super) type DocsTable<'a> = TableDefinition<'a, u64, &'static [u8]>;
/// External id → document key.
pub(super) type IdsTable<'a> = TableDefinition<'a, &'static str, u64>;
/// (document key, piece number) → piece of the encoded state.
pub(super) type StatesTable<'a> = TableDefinition<'a, (u64, u32), &'static [u8]>;

/// (part, piece number) → piece of a saved ANN index: part [`INDEX_HEADER`] is the
/// [`super::IndexHeader`], then the parts it describes.
pub(super) type IndexTable<'a> = TableDefinition<'a, (u32, u32), &'static [u8]>;

/// Part numbers in the index table.
pub(crate) const INDEX_HEADER: u32 = 0;
/// Keys, tombstones and graph.
pub(crate) const INDEX_CORE: u32 = 1;
/// Metadata of the indexed documents.
pub(crate) const INDEX_METADATA: u32 = 2;
/// Vector block `b` is part `INDEX_FIRST_BLOCK + b`.
pub(crate) const INDEX_FIRST_BLOCK: u32 = 16;

/// Table names of one collection (`c{id}_docs`, `c{id}_ids`, `c{id}_state_chunks`,
/// `c{id}_index`).
#[derive(Debug, Clone)]
pub(crate) struct CollectionTables {
    /// The collection's id.
    pub(crate) id: u64,
    docs: String,
    ids: String,
    states: String,
    index: String,
}

impl CollectionTables {
    /// The tables of collection `id`.
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            docs: format!("c{id}_docs"),
            ids: format!("c{id}_ids"),
            states: format!("c{id}_state_chunks"),
            index: format!("c{id}_index"),
        }
    }
    pub(super) fn index(&self) -> IndexTable<'_> {
        TableDefinition::new(&self.index)
    }
    pub(super) fn docs(&self) -> DocsTable<'_> {
        TableDefinition::new(&self.docs)
    }
    pub(super) fn ids(&self) -> IdsTable<'_> {
        TableDefinition::new(&self.ids)
    }
    pub(super) fn states(&self) -> StatesTable<'_> {
        TableDefinition::new(&self.states)
    }
}

/// Writes a state blob in pieces of at most [`STATE_CHUNK_BYTES`] (replacing nothing: remove
/// an old state first).
pub(super) fn put_state(
    table: &mut redb::Table<(u64, u32), &'static [u8]>,
    key: u64,
    blob: &[u8],
) -> Result<(), StoreError> {
    put_pieces(table, key, blob, || format!("state of document key {key}"))
}

/// Reads a state blob back from its pieces; `None` when the document has no state.
pub(super) fn get_state(
    table: &impl ReadableTable<(u64, u32), &'static [u8]>,
    key: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    get_pieces(table, key)
}

/// Removes every piece of a document's state.
pub(super) fn remove_state(table: &mut redb::Table<(u64, u32), &'static [u8]>, key: u64) -> Result<(), StoreError> {
    table.retain_in((key, 0)..=(key, u32::MAX), |_, _| false)?;
    Ok(())
}

/// A key prefix of a table of pieces (`(prefix, piece number)`): a document key, an index part.
pub(super) trait PiecePrefix: redb::Key + for<'a> redb::Value<SelfType<'a> = Self> + Copy + 'static {}
impl PiecePrefix for u64 {}
impl PiecePrefix for u32 {}

/// Writes `bytes` under `prefix` in pieces of at most [`STATE_CHUNK_BYTES`] (replacing
/// nothing: remove old pieces first); `what` names the value in errors.
pub(super) fn put_pieces<P: PiecePrefix>(
    table: &mut redb::Table<(P, u32), &'static [u8]>,
    prefix: P,
    bytes: &[u8],
    what: impl Fn() -> String,
) -> Result<(), StoreError> {
    for (i, piece) in bytes.chunks(STATE_CHUNK_BYTES).enumerate() {
        let piece_no =
            u32::try_from(i).map_err(|_| StoreError::Unencodable { what: what(), detail: "too many pieces".into() })?;
        table.insert((prefix, piece_no), piece)?;
    }
    Ok(())
}

/// Reads the pieces under `prefix` back, in order; `None` when there are none.
pub(super) fn get_pieces<P: PiecePrefix>(
    table: &impl ReadableTable<(P, u32), &'static [u8]>,
    prefix: P,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut bytes = Vec::new();
    let mut pieces = 0;
    for entry in table.range((prefix, 0)..=(prefix, u32::MAX))? {
        let (_, piece) = entry?;
        bytes.extend_from_slice(piece.value());
        pieces += 1;
    }
    Ok((pieces > 0).then_some(bytes))
}
