//! State codec benchmark at the 0.1B shape: bytes per document, rerank fidelity and decode cost
//! per preset. Writes docs/bench/codec.json.
//!
//!     cargo bench --bench codec
//!
//! Fidelity: for 300 (document, query) pairs, |sigmoid(logit from the preset's decoded state) -
//! sigmoid(online logit)|. The online logit is computed from f32 states resumed with the query,
//! which equals the from-scratch online score to ~1e-6 (checked below on 20 pairs and in the
//! test suite).

use std::time::Instant;

use rwkvdb::checkpoint::synth::{synth_embedder, synth_reranker, SynthConfig};
use rwkvdb::codec::Precision::{Int3, Int4, Int5, Int6, Int8, F16, F32};
use rwkvdb::codec::{CodecConfig, Preset, StateCodec};
use rwkvdb::model::{
    offline_document_text, offline_query_text, online_text, EmbedderWeights, RerankerWeights, Runtime, RuntimeOptions,
};
use rwkvdb::tokenizer::Tokenizer;
use serde_json::json;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn main() {
    let cfg =
        SynthConfig { layers: 12, width: 768, reranker_layers: vec![1, 6, 10], seed: 1, ..SynthConfig::default() };
    let emb = EmbedderWeights::from_state_dict(&synth_embedder(&cfg)).expect("embedder");
    let rr = RerankerWeights::from_state_dict(&synth_reranker(&cfg)).expect("reranker");
    let rt = Runtime::new(emb, Some(rr), &RuntimeOptions::default()).expect("runtime");
    let tok = Tokenizer::world();
    let corpus: Vec<String> = include_str!("../docs/demo/corpus.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .take(60)
        .collect();
    let queries = ["How do I compress data?", "parse a date", "random numbers", "read CSV files", "network sockets"];
    let docs: Vec<Vec<u32>> = corpus.iter().map(|d| tok.encode(&offline_document_text(d))).collect();
    let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
    let states = rt.prefix_states(&refs).expect("states");
    let qtoks: Vec<Vec<u32>> = queries.iter().map(|q| tok.encode_with_eos(&offline_query_text(q))).collect();
    let pairs: Vec<(usize, usize)> = (0..docs.len()).flat_map(|d| (0..queries.len()).map(move |q| (d, q))).collect();
    let score = |sts: &[rwkvdb::model::ModelState]| -> Vec<f32> {
        let s: Vec<_> = pairs.iter().map(|&(d, _)| sts[d].clone()).collect();
        let q: Vec<&[u32]> = pairs.iter().map(|&(_, q)| qtoks[q].as_slice()).collect();
        rt.resume_and_score(s, &q).expect("score")
    };
    let reference = score(&states);

    // The f32 offline score is the online score: check on 20 pairs.
    let check: Vec<(usize, usize)> = pairs.iter().copied().step_by(15).take(20).collect();
    let online_seqs: Vec<Vec<u32>> =
        check.iter().map(|&(d, q)| tok.encode_with_eos(&online_text(&corpus[d], queries[q]))).collect();
    let orefs: Vec<&[u32]> = online_seqs.iter().map(Vec::as_slice).collect();
    let online = rt.online_scores(&orefs).expect("online");
    let mut online_dev = 0.0f32;
    for (i, &(d, q)) in check.iter().enumerate() {
        let k = pairs.iter().position(|&p| p == (d, q)).unwrap_or(0);
        online_dev = online_dev.max((sigmoid(online[i]) - sigmoid(reference[k])).abs());
    }
    println!("f32 offline vs online on {} pairs: max sigmoid deviation {online_dev:.2e}", check.len());

    println!(
        "\n{:>9} {:>8} {:>13} {:>15} {:>16} {:>16}",
        "preset", "default", "bytes/doc", "max sig dev", "mean sig dev", "decode ms/100"
    );
    let measure = |config: CodecConfig| {
        let codec = StateCodec::new(config, 768, rt.state_layers(), rt.reranker_layers()).expect("codec");
        let blobs: Vec<Vec<u8>> = states.iter().map(|s| codec.encode(s).expect("encode")).collect();
        let bytes = blobs.iter().map(Vec::len).sum::<usize>() as f64 / blobs.len() as f64;
        let start = Instant::now();
        let mut decoded = Vec::new();
        for i in 0..100 {
            decoded.push(codec.decode(&blobs[i % blobs.len()]).expect("decode"));
        }
        let decode_ms = start.elapsed().as_secs_f64() * 1e3;
        decoded.truncate(blobs.len());
        let got = score(&decoded);
        let devs: Vec<f32> = got.iter().zip(&reference).map(|(a, b)| (sigmoid(*a) - sigmoid(*b)).abs()).collect();
        let max = devs.iter().copied().fold(0.0, f32::max);
        let mean = devs.iter().sum::<f32>() / devs.len() as f32;
        (bytes, max, mean, decode_ms)
    };
    let mut rows = Vec::new();
    for preset in Preset::ALL {
        let (bytes, max, mean, decode_ms) = measure(preset.config());
        let default = preset == Preset::default();
        println!("{:>9} {:>8} {bytes:>13.0} {max:>15.2e} {mean:>16.2e} {decode_ms:>16.1}", preset.name(), default);
        rows.push(json!({"name": preset.name(), "default": default, "bytes_per_doc": bytes,
            "max_sigmoid_dev": max, "mean_sigmoid_dev": mean, "decode_ms_per_100": decode_ms}));
    }

    // Every selected x pass-through combination, to show where the error comes from.
    println!("\n{:>9} {:>9} {:>13} {:>15} {:>16}", "selected", "pass", "bytes/doc", "max sig dev", "mean sig dev");
    let mut sweep = Vec::new();
    for selected in [F16, Int8, Int6, Int5, Int4] {
        for pass_through in [F32, F16, Int8, Int6, Int5, Int4, Int3] {
            let config = CodecConfig { selected, pass_through, shift: F16, zstd_level: 3 };
            let (bytes, max, mean, _) = measure(config);
            println!(
                "{:>9} {:>9} {bytes:>13.0} {max:>15.2e} {mean:>16.2e}",
                format!("{selected:?}"),
                format!("{pass_through:?}")
            );
            sweep.push(json!({"selected": format!("{selected:?}"), "pass_through": format!("{pass_through:?}"),
                "bytes_per_doc": bytes, "max_sigmoid_dev": max, "mean_sigmoid_dev": mean}));
        }
    }
    // The paper's reference footprint: fp16, all 12 layers, WKV + token shift.
    let paper = 12.0 * (12.0 * 64.0 * 64.0 + 2.0 * 768.0) * 2.0;
    let out = json!({
        "command": "cargo bench --bench codec",
        "model": {"layers": 12, "width": 768, "reranker_layers": [1, 6, 10], "stored_layers": rt.state_layers()},
        "pairs": pairs.len(),
        "f32_offline_vs_online_max_sigmoid_dev": online_dev,
        "paper_fp16_all_layers_bytes": paper,
        "presets": rows,
        "sweep": sweep,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench/codec.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write codec.json");
    println!("\nwrote {}", path.display());
}
