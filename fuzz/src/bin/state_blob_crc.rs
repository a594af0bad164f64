//! AFL++ target: `rwkvdb::fuzzing::state_blob` after rewriting the blob's CRC-32 (its last four
//! bytes) to match. The plain `state_blob` target stops at the checksum for almost every
//! mutation; this one lets mutations reach the header checks, zstd and the dequantisation.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let mut data = data.to_vec();
        if data.len() >= 8 {
            let body = data.len() - 4;
            let crc = crc32fast::hash(&data[..body]).to_le_bytes();
            data[body..].copy_from_slice(&crc);
        }
        rwkvdb::fuzzing::state_blob(&data);
    });
}
