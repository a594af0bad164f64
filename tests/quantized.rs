//! Quantized weights: the packing is what ONNX Runtime's `MatMulNBits` reads (checked against a
//! matrix product computed here from the dequantized weights), and each quantized precision
//! stays within its documented bound of the exact f32 model.

mod common;

use ort::session::Session;
use ort::value::Tensor;
use rwkvdb::model::onnx::{Attr, Dim, ElemType, Graph};
use rwkvdb::model::prepared::QuantInfo;
use rwkvdb::model::{quant, weight_cache, Precision, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

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
        let q = QuantInfo { k: 100, n: 7, bits, block: quant::block_size(bits, 100) };
        let w = pseudo_random(q.k * q.n, u64::from(bits));
        let (dims, n_scales) = quant::packed_shape(&q);
        let mut packed = vec![0u8; dims.iter().product()];
        let mut scales = vec![0f32; n_scales];
        quant::quantize(&w, &q, &mut packed, &mut scales);
        let back = quant::dequantize(&packed, &scales, &q);
        let max_scale = scales.iter().fold(0f32, |m, s| m.max(*s));
        for (a, b) in w.iter().zip(&back) {
            assert!((a - b).abs() <= max_scale * 0.5 + 1e-6, "bits {bits}: {a} vs {b}");
        }
        // A zero column stays exactly zero.
        let zeros = vec![0f32; q.k * q.n];
        quant::quantize(&zeros, &q, &mut packed, &mut scales);
        assert!(quant::dequantize(&packed, &scales, &q).iter().all(|&v| v == 0.0));
    }
}

/// `x @ W` through ONNX Runtime's MatMulNBits (accuracy level 0: f32 arithmetic on the
/// dequantized weights), against the same product computed here. (8-bit weights are a plain
/// `[K, N]` int8 matrix; the model-level test below covers them.)
#[test]
fn matmul_nbits_reads_the_packing_as_written() {
    let (_, env) = rwkvdb::model::ort_env::ensure_loaded(None).unwrap();
    {
        let bits = 4u32;
        let q = QuantInfo { k: 96, n: 40, bits, block: quant::block_size(bits, 96) };
        let w = pseudo_random(q.k * q.n, 7 + u64::from(bits));
        let (dims, n_scales) = quant::packed_shape(&q);
        let mut packed = vec![0u8; dims.iter().product()];
        let mut scales = vec![0f32; n_scales];
        quant::quantize(&w, &q, &mut packed, &mut scales);
        let deq = quant::dequantize(&packed, &scales, &q);

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

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Embeddings and offline rerank logits of a small synthetic model at each precision against
/// f32. The bounds are the ones docs/performance.md states for this small model.
#[test]
fn quantized_precisions_stay_within_their_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    let tok = Tokenizer::world();
    let docs: Vec<String> =
        (0..12).map(|i| format!("document {i}: notes about topic {} and more {}", i * 7, i % 3)).collect();
    let query = "which notes are about topic 14?";
    let run = |p: Precision| {
        let (pm, _) = weight_cache::load(&weight_cache::CacheDir::Off, &emb, Some(&rr), p).unwrap();
        let rt = Runtime::from_prepared(std::sync::Arc::new(pm), &RuntimeOptions::default()).unwrap();
        assert_eq!(rt.precision(), p);
        let seqs: Vec<Vec<u32>> = docs.iter().map(|d| tok.encode_with_eos(d)).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let embs = rt.embed(&refs).unwrap();
        let prefixes: Vec<Vec<u32>> =
            docs.iter().map(|d| tok.encode(&rwkvdb::model::offline_document_text(d))).collect();
        let prefs: Vec<&[u32]> = prefixes.iter().map(Vec::as_slice).collect();
        let states = rt.prefix_states(&prefs).unwrap();
        let q = tok.encode_with_eos(&rwkvdb::model::offline_query_text(query));
        let queries: Vec<&[u32]> = docs.iter().map(|_| q.as_slice()).collect();
        let logits = rt.resume_and_score(states, &queries).unwrap();
        (embs, logits)
    };
    let (e32, l32) = run(Precision::F32);
    for (p, min_cos, max_sig) in [(Precision::Int8, 0.9995, 0.01), (Precision::Int4, 0.98, 0.1)] {
        let (e, l) = run(p);
        let worst_cos = e32.iter().zip(&e).map(|(a, b)| cos(a, b)).fold(1.0f32, f32::min);
        let worst_sig = l32.iter().zip(&l).map(|(a, b)| (sigmoid(*a) - sigmoid(*b)).abs()).fold(0.0f32, f32::max);
        println!("{p}: min embedding cosine {worst_cos}, max sigmoid deviation {worst_sig}");
        assert!(worst_cos >= min_cos, "{p}: embedding cosine {worst_cos}");
        assert!(worst_sig <= max_sig, "{p}: sigmoid deviation {worst_sig}");
        // Quantization changes something: the comparison is not vacuous.
        assert!(worst_cos < 1.0 || worst_sig > 0.0, "{p}: identical to f32");
    }
}

/// int8 quantizes each activation row with its own scale, so a sequence's embedding does not
/// depend on what it is batched with (a per-tensor scale would let a loud neighbour coarsen it).
#[test]
fn int8_results_do_not_depend_on_batch_companions() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    let (pm, _) = weight_cache::load(&weight_cache::CacheDir::Off, &emb, Some(&rr), Precision::Int8).unwrap();
    let rt = Runtime::from_prepared(std::sync::Arc::new(pm), &RuntimeOptions::default()).unwrap();
    let tok = Tokenizer::world();
    let quiet = tok.encode_with_eos("a short quiet note");
    let loud = tok.encode_with_eos(&"LOUD!!! ".repeat(6));
    let alone = rt.embed(&[&quiet]).unwrap().remove(0);
    let together = rt.embed(&[&loud, &quiet, &loud]).unwrap().remove(1);
    let diff = common::max_diff(&alone, &together);
    assert!(diff <= 1e-5, "int8 embedding changed by {diff} with batch companions");
}
