//! Schema upgrades. Each on-disk format version has a description in `migrations/vN.md`; the
//! step from N-1 to N goes here. All steps needed by a file run in one write transaction when it
//! is opened, so an interrupted upgrade leaves the file at its old version.

use redb::{Database, ReadableTable, TableDefinition};

use crate::store::{self, StoreError, FORMAT_VERSION, META};

/// Brings a file at `found` up to [`FORMAT_VERSION`].
pub fn upgrade(db: &Database, found: u32) -> Result<(), StoreError> {
    if found == FORMAT_VERSION {
        return Ok(());
    }
    if found == 0 || found > FORMAT_VERSION {
        // Versions before 1 never existed; a 0 means the version record is damaged.
        return Err(StoreError::Corrupt { what: "format version".into(), detail: format!("unknown version {found}") });
    }
    let collections = store::list_collections(db)?;
    let txn = db.begin_write()?;
    for version in found + 1..=FORMAT_VERSION {
        if version == 2 {
            for rec in &collections {
                v2_upgrade_collection(&txn, rec.id)?;
            }
        }
    }
    txn.open_table(META)?.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}

/// Version 2 stores each state blob in pieces (`c{id}_states` → `c{id}_state_chunks`) and drops
/// the metadata copy `c{id}_meta` (the checksummed document record holds the metadata).
fn v2_upgrade_collection(txn: &redb::WriteTransaction, collection: u64) -> Result<(), StoreError> {
    let meta_name = format!("c{collection}_meta");
    txn.delete_table(TableDefinition::<u64, &[u8]>::new(&meta_name))?;
    let old_name = format!("c{collection}_states");
    let old: TableDefinition<u64, &[u8]> = TableDefinition::new(&old_name);
    let tables = store::CollectionTables::new(collection);
    {
        let source = match txn.open_table(old) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut target = txn.open_table(tables.states())?;
        for entry in source.iter()? {
            let (key, blob) = entry?;
            store::put_state(&mut target, key.value(), blob.value())?;
        }
    }
    txn.delete_table(old)?;
    Ok(())
}
