//! Quantization of weight matrices into the layouts of ONNX Runtime's contrib operators
//! (`com.microsoft` domain). A matrix is `W` `[K, N]` with `y = x @ W`.
//!
//! - 8 bits (`MatMulInteger`): `W` stays `[K, N]`, as int8 `q = round(w / scale)` with one
//!   symmetric scale per output column, `scale = max|w| / 127`. The graph quantizes each row of
//!   `x` to uint8 on the fly and runs an integer GEMM (VNNI / AMX where the CPU has them).
//! - 4 bits (`MatMulNBits`): column by column, the `K` weights of output `n` in blocks of `block`
//!   values (the last zero-padded), each with one f32 scale, `scale = max|w| / 7`; stored as
//!   `q + 8` (the operator's default zero point), two per byte, the even index in the low nibble.
//!
//! Both are symmetric round-to-nearest: a zero weight stays exactly zero.

use super::prepared::QuantInfo;

/// Weights per scale: a whole column for 8 bits; for 4 bits chosen by measurement
/// (docs/performance.md, "Quantized weights").
pub fn block_size(bits: u32, k: usize) -> usize {
    match bits {
        8 => k,
        _ => 32,
    }
}

/// `accuracy_level` given to `MatMulNBits` (4 bits): 4 lets it quantize activations per block
/// to int8 and use integer dot products (measured, docs/performance.md).
pub const ACCURACY_LEVEL: i64 = 4;

/// Blocks per column.
pub fn blocks(q: &QuantInfo) -> usize {
    q.k.div_ceil(q.block)
}

/// Dimensions of the quantized tensor and the number of scales.
pub fn packed_shape(q: &QuantInfo) -> (Vec<usize>, usize) {
    if q.bits == 8 {
        return (vec![q.k, q.n], q.n);
    }
    let per_block = q.block * q.bits as usize / 8;
    (vec![q.n, blocks(q), per_block], q.n * blocks(q))
}

fn scale_of(values: impl Iterator<Item = f32>, qmax: f32) -> (f32, f32) {
    let amax = values.fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / qmax;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

/// Quantizes `w` (`[K, N]` row-major) into `packed` and `scales` (sized by [`packed_shape`]).
pub fn quantize(w: &[f32], q: &QuantInfo, packed: &mut [u8], scales: &mut [f32]) {
    if q.bits == 8 {
        for n in 0..q.n {
            let (scale, inv) = scale_of((0..q.k).map(|k| w[k * q.n + n]), 127.0);
            scales[n] = scale;
            for k in 0..q.k {
                let code = ((w[k * q.n + n] * inv).round() as i32).clamp(-127, 127) as i8;
                packed[k * q.n + n] = code.to_le_bytes()[0];
            }
        }
        return;
    }
    let nb = blocks(q);
    let per_block = q.block / 2;
    let mut vals = vec![0f32; q.block];
    for n in 0..q.n {
        for b in 0..nb {
            for (i, v) in vals.iter_mut().enumerate() {
                let k = b * q.block + i;
                *v = if k < q.k { w[k * q.n + n] } else { 0.0 };
            }
            let (scale, inv) = scale_of(vals.iter().copied(), 7.0);
            scales[n * nb + b] = scale;
            let code = |v: f32| (((v * inv).round() as i32).clamp(-8, 7) + 8) as u8;
            let out = &mut packed[(n * nb + b) * per_block..(n * nb + b + 1) * per_block];
            for (j, o) in out.iter_mut().enumerate() {
                *o = code(vals[2 * j]) | (code(vals[2 * j + 1]) << 4);
            }
        }
    }
}

/// The matrix the quantized form stands for (`[K, N]` row-major): [`quantize`] undone up to
/// rounding (the tests' reference).
#[cfg(test)]
pub fn dequantize(packed: &[u8], scales: &[f32], q: &QuantInfo) -> Vec<f32> {
    let mut w = vec![0f32; q.k * q.n];
    if q.bits == 8 {
        for (i, (out, &b)) in w.iter_mut().zip(packed).enumerate() {
            *out = f32::from(i8::from_le_bytes([b])) * scales[i % q.n];
        }
        return w;
    }
    let nb = blocks(q);
    let per_block = q.block / 2;
    for n in 0..q.n {
        for b in 0..nb {
            let bytes = &packed[(n * nb + b) * per_block..(n * nb + b + 1) * per_block];
            for i in 0..q.block.min(q.k.saturating_sub(b * q.block)) {
                let byte = bytes[i / 2];
                let code = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                w[(b * q.block + i) * q.n + n] = (f32::from(code) - 8.0) * scales[n * nb + b];
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use ort::session::Session;
    use ort::value::Tensor;

    use super::QuantInfo;
    use crate::model::onnx::{Attr, Dim, ElemType, Graph};

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn quantize_then_dequantize_is_within_half_a_step() {
        for bits in [8, 4] {
            // K not a multiple of the block: the last block is padded.
            let q = QuantInfo { k: 100, n: 7, bits, block: super::block_size(bits, 100) };
            let w = pseudo_random(q.k * q.n, u64::from(bits));
            let (dims, n_scales) = super::packed_shape(&q);
            let mut packed = vec![0u8; dims.iter().product()];
            let mut scales = vec![0f32; n_scales];
            super::quantize(&w, &q, &mut packed, &mut scales);
            let back = super::dequantize(&packed, &scales, &q);
            let max_scale = scales.iter().fold(0f32, |m, s| m.max(*s));
            for (a, b) in w.iter().zip(&back) {
                assert!((a - b).abs() <= max_scale * 0.5 + 1e-6, "bits {bits}: {a} vs {b}");
            }
            // A zero column stays exactly zero.
            let zeros = vec![0f32; q.k * q.n];
            super::quantize(&zeros, &q, &mut packed, &mut scales);
            assert!(super::dequantize(&packed, &scales, &q).iter().all(|&v| v == 0.0));
        }
    }

    /// `x @ W` through ONNX Runtime's `MatMulNBits` (accuracy level 0: f32 arithmetic on the
    /// dequantized weights), against the same product computed here. (8-bit weights are a plain
    /// `[K, N]` int8 matrix; the model-level test below covers them.)
    #[test]
    fn matmul_nbits_reads_the_packing_as_written() {
        let (_, env) = crate::model::ort_env::ensure_loaded(None).unwrap();
        {
            let bits = 4u32;
            let q = QuantInfo { k: 96, n: 40, bits, block: super::block_size(bits, 96) };
            let w = pseudo_random(q.k * q.n, 7 + u64::from(bits));
            let (dims, n_scales) = super::packed_shape(&q);
            let mut packed = vec![0u8; dims.iter().product()];
            let mut scales = vec![0f32; n_scales];
            super::quantize(&w, &q, &mut packed, &mut scales);
            let deq = super::dequantize(&packed, &scales, &q);

            let mut g = Graph::new();
            let x = g.input("x", ElemType::F32, &[Dim::Fixed(3), Dim::Fixed(q.k as i64)]);
            let b = g.bytes_initializer("b", ElemType::U8, &dims, &packed);
            let s = g.weight("s", &[n_scales], &scales);
            let attrs = [
                ("K", Attr::Int(q.k as i64)),
                ("N", Attr::Int(q.n as i64)),
                ("bits", Attr::Int(i64::from(bits))),
                ("block_size", Attr::Int(q.block as i64)),
                ("accuracy_level", Attr::Int(0)),
            ];
            let y = g.node_in("com.microsoft", "MatMulNBits", &[&x, &b, &s], &attrs);
            g.output(&y, "y", ElemType::F32, &[Dim::Fixed(3), Dim::Fixed(q.n as i64)]);
            let mut session =
                Session::builder(&env).unwrap().commit_from_memory(&g.into_model(17, &["com.microsoft"])).unwrap();

            let xs = pseudo_random(3 * q.k, 99);
            let out =
                session.run(ort::inputs!["x" => Tensor::from_array((vec![3usize, q.k], xs.clone())).unwrap()]).unwrap();
            let got = out["y"].try_extract_tensor::<f32>().unwrap().1.to_vec();
            for r in 0..3 {
                for c in 0..q.n {
                    let want: f32 = (0..q.k).map(|k| xs[r * q.k + k] * deq[k * q.n + c]).sum();
                    let g = got[r * q.n + c];
                    assert!((g - want).abs() <= 1e-4 * (1.0 + want.abs()), "bits {bits} [{r},{c}]: {g} vs {want}");
                }
            }
        }
    }
}
