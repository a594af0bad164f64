//! Entry points for the coverage-guided fuzz targets in `fuzz/` (hidden from the docs; not an
//! API). Each takes arbitrary bytes and drives one parser that reads untrusted input; any panic
//! (or abort) it reaches is a bug. Errors are the expected outcome for most inputs.

use std::io::Cursor;

use crate::checkpoint;
use crate::codec::{Preset, StateCodec};
use crate::model::{EmbedderWeights, RerankerWeights};

/// A `.pth` checkpoint (zip + pickle), then its interpretation as embedder and reranker weights.
pub fn pth(data: &[u8]) {
    if let Ok(sd) = checkpoint::pth::read(Cursor::new(data)) {
        let _ = EmbedderWeights::from_state_dict(&sd);
        let _ = RerankerWeights::from_state_dict(&sd);
    }
}

/// A `.safetensors` checkpoint, then its interpretation as embedder and reranker weights.
pub fn safetensors(data: &[u8]) {
    if let Ok(sd) = checkpoint::safetensors::read(data) {
        let _ = EmbedderWeights::from_state_dict(&sd);
        let _ = RerankerWeights::from_state_dict(&sd);
    }
}

/// A stored state blob, decoded by the codec of every preset for a small model shape (width
/// 128, 4 layers, the reranker reading layers 1 and 3).
pub fn state_blob(data: &[u8]) {
    for preset in Preset::ALL {
        if let Ok(codec) = StateCodec::new(preset.config(), 128, 4, &[1, 3]) {
            let _ = codec.decode(data);
        }
    }
}

/// Arbitrary bytes opened as a database file: open, list collections, and for each one open it
/// and read everything (`count`, `stats`, `check`, `get` of every id the check names).
pub fn database_file(data: &[u8]) {
    use redb::StorageBackend;
    let backend = redb::backends::InMemoryBackend::new();
    if backend.set_len(data.len() as u64).is_err() || backend.write(0, data).is_err() {
        return;
    }
    let opts = crate::OpenOptions { cache_bytes: 1 << 20, ..crate::OpenOptions::default() };
    let Ok(db) = crate::Database::open_with_backend("fuzz.redb", backend, opts) else { return };
    let Ok(records) = db.list_collections() else { return };
    for record in records {
        let Ok(c) = db.collection(&record.name) else { continue };
        let _ = c.count();
        let _ = c.stats();
        if let Ok(report) = c.check() {
            for id in &report.damaged_ids {
                let _ = c.get(id);
            }
        }
        let _ = c.get("doc-1");
    }
}

/// A JSONL import file, read to the end.
pub fn jsonl(data: &[u8]) {
    for item in crate::collection::read_jsonl(Cursor::new(data), "fuzz.jsonl", "fuzz") {
        let _ = item;
    }
}
