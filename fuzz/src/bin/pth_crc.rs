//! AFL++ target: `rwkvdb::fuzzing::pth` after fixing the CRC-32 of every stored zip entry.
//!
//! The zip reader checks each entry's CRC-32 (from the central directory) when it reaches the
//! end of the entry, so almost every mutation inside `data.pkl` or a tensor storage is refused
//! as "Invalid checksum" before the pickle machine or the tensor reconstruction sees it; the
//! plain `pth` target mostly exercises the zip container. This one rewrites the CRCs (central
//! directory and local headers, stored entries only) so mutations reach the code behind them.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let mut data = data.to_vec();
        fix_zip_crcs(&mut data);
        rwkvdb::fuzzing::pth(&data);
    });
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn fix_zip_crcs(b: &mut [u8]) -> Option<()> {
    // End of central directory: the last "PK\x05\x06".
    let eocd = b.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let entries = u16_at(b, eocd + 10)?;
    let mut cd = u32_at(b, eocd + 16)?;
    for _ in 0..entries {
        if b.get(cd..cd + 4)? != b"PK\x01\x02" {
            return None;
        }
        let method = u16_at(b, cd + 10)?;
        let size = u32_at(b, cd + 20)?;
        let (n, e, c) = (u16_at(b, cd + 28)?, u16_at(b, cd + 30)?, u16_at(b, cd + 32)?);
        let local = u32_at(b, cd + 42)?;
        if method == 0 && b.get(local..local + 4) == Some(b"PK\x03\x04") {
            let start = local + 30 + u16_at(b, local + 26)? + u16_at(b, local + 28)?;
            if let Some(body) = b.get(start..start.checked_add(size)?) {
                let crc = crc32fast::hash(body).to_le_bytes();
                b[cd + 16..cd + 20].copy_from_slice(&crc);
                b[local + 14..local + 18].copy_from_slice(&crc);
            }
        }
        cd += 46 + n + e + c;
    }
    Some(())
}
