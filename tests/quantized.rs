//! Quantized weights: each quantized precision stays within its documented bound of the exact
//! f32 model. (That the packing is what ONNX Runtime's `MatMulNBits` reads is tested next to it,
//! in `src/model/quant.rs`.)

mod common;

use rwkvdb::model::{weight_cache, Precision, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

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
    let bounds = [(Precision::Bf16, 0.99995, 0.002), (Precision::Int8, 0.9995, 0.01), (Precision::Int4, 0.98, 0.1)];
    for (p, min_cos, max_sig) in bounds {
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

/// Quantized matrices mapped from the weight cache have their pages dropped once ONNX Runtime
/// has packed them (`PreparedModel::release_packed_sources`); results stay those of the same
/// weights held in memory, for the embedding and for the score sessions created later.
#[test]
fn released_cache_pages_leave_results_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    let tok = Tokenizer::world();
    let texts = ["first document about rivers", "second one, about mountains and snow"];
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_with_eos(t)).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let cache = weight_cache::CacheDir::At(tmp.path().join("cache"));
    for p in [Precision::Int8, Precision::Int4] {
        let outputs = |dir: &weight_cache::CacheDir| {
            let (pm, _) = weight_cache::load(dir, &emb, Some(&rr), p).unwrap();
            let rt = Runtime::from_prepared(std::sync::Arc::new(pm), &RuntimeOptions::default()).unwrap();
            let e = rt.embed(&refs).unwrap();
            (e, rt.online_scores(&refs).unwrap())
        };
        let in_memory = outputs(&weight_cache::CacheDir::Off);
        outputs(&cache); // builds the cache file
        let (pm, from) = weight_cache::load(&cache, &emb, Some(&rr), p).unwrap();
        assert!(matches!(from, weight_cache::LoadedFrom::Cache(_)), "{p}: {from:?}");
        drop(pm);
        assert_eq!(outputs(&cache), in_memory, "{p}");
    }
}
