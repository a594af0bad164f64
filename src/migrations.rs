//! Schema upgrades. Each on-disk format version has a description in `migrations/vN.md`; an
//! upgrade step from N-1 to N goes here and runs inside one write transaction when an older file
//! is opened. Version 1 is the first format, so there is nothing to upgrade yet.

use redb::Database;

use crate::store::{StoreError, FORMAT_VERSION};

/// Brings a file at `found` up to [`FORMAT_VERSION`].
pub fn upgrade(_db: &Database, found: u32) -> Result<(), StoreError> {
    match found {
        FORMAT_VERSION => Ok(()),
        // Versions before 1 never existed; a 0 means the version record is damaged.
        other => Err(StoreError::Corrupt { what: "format version".into(), detail: format!("unknown version {other}") }),
    }
}
