//! Block quantization of weight matrices in the layout of ONNX Runtime's `MatMulNBits`
//! (`com.microsoft` domain).
//!
//! A matrix `W` `[K, N]` (`y = x @ W`) is stored column by column: for each output `n`, its `K`
//! weights in blocks of `block` values (the last block zero-padded), each block with one f32
//! scale. Quantization is symmetric round-to-nearest: `q = round(w / scale)` with
//! `scale = max|w| / (2^(bits-1) - 1)`, stored as `q + 2^(bits-1)` (the operator's default zero
//! point, so no zero-point tensor is needed). 4-bit blocks pack two values per byte, the even
//! index in the low nibble.

use super::prepared::QuantInfo;

/// Weights per block for `bits`, chosen by measurement on this project's benchmark machines
/// (docs/performance.md, "Quantized weights").
pub fn block_size(bits: u32) -> usize {
    match bits {
        4 => 32,
        _ => 32,
    }
}

/// `accuracy_level` given to `MatMulNBits`: 4 quantizes activations per block to int8 and uses
/// integer dot products (chosen by measurement, docs/performance.md).
pub const ACCURACY_LEVEL: i64 = 4;

/// Blocks per column.
pub fn blocks(q: &QuantInfo) -> usize {
    q.k.div_ceil(q.block)
}

/// Dimensions of the packed tensor `[N, blocks, bytes per block]` and the number of scales.
pub fn packed_shape(q: &QuantInfo) -> (Vec<usize>, usize) {
    let per_block = q.block * q.bits as usize / 8;
    (vec![q.n, blocks(q), per_block], q.n * blocks(q))
}

/// Quantizes `w` (`[K, N]` row-major) into `packed` and `scales` (sized by [`packed_shape`]).
pub fn quantize(w: &[f32], q: &QuantInfo, packed: &mut [u8], scales: &mut [f32]) {
    let nb = blocks(q);
    let qmax = ((1i32 << (q.bits - 1)) - 1) as f32;
    let zero = 1i32 << (q.bits - 1);
    let per_block = q.block * q.bits as usize / 8;
    let mut vals = vec![0f32; q.block];
    for n in 0..q.n {
        for b in 0..nb {
            for (i, v) in vals.iter_mut().enumerate() {
                let k = b * q.block + i;
                *v = if k < q.k { w[k * q.n + n] } else { 0.0 };
            }
            let amax = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / qmax;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            scales[n * nb + b] = scale;
            let code = |v: f32| ((v * inv).round() as i32).clamp(-zero, zero - 1) + zero;
            let out = &mut packed[(n * nb + b) * per_block..(n * nb + b + 1) * per_block];
            if q.bits == 8 {
                for (o, &v) in out.iter_mut().zip(&vals) {
                    *o = code(v) as u8;
                }
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = (code(vals[2 * j]) | (code(vals[2 * j + 1]) << 4)) as u8;
                }
            }
        }
    }
}

/// The matrix the packed form stands for (`[K, N]` row-major): the inverse of [`quantize`] up to
/// rounding. Used by tests and the fidelity report.
pub fn dequantize(packed: &[u8], scales: &[f32], q: &QuantInfo) -> Vec<f32> {
    let nb = blocks(q);
    let zero = 1i32 << (q.bits - 1);
    let per_block = q.block * q.bits as usize / 8;
    let mut w = vec![0f32; q.k * q.n];
    for n in 0..q.n {
        for b in 0..nb {
            let bytes = &packed[(n * nb + b) * per_block..(n * nb + b + 1) * per_block];
            let scale = scales[n * nb + b];
            for i in 0..q.block {
                let k = b * q.block + i;
                if k >= q.k {
                    break;
                }
                let code = if q.bits == 8 {
                    i32::from(bytes[i])
                } else {
                    let byte = i32::from(bytes[i / 2]);
                    if i % 2 == 0 {
                        byte & 0x0f
                    } else {
                        byte >> 4
                    }
                };
                w[k * q.n + n] = (code - zero) as f32 * scale;
            }
        }
    }
    w
}
