//! Model runtime benchmark on a 0.1B-shaped synthetic model (12 layers x 768, reranker reading
//! layers 1, 6, 10). Prints a table and writes docs/bench/runtime.json.
//!
//!     cargo bench --bench runtime
//!
//! Everything is measured in one run, so ratios are meaningful on a shared machine.

use std::time::Instant;

use rwkvdb::checkpoint::synth::{synth_embedder, synth_reranker, SynthConfig};
use rwkvdb::codec::{Preset, StateCodec};
use rwkvdb::gemm_probe::gemm_gflops;
use rwkvdb::model::{EmbedderWeights, RerankerWeights, Runtime, RuntimeOptions};
use serde_json::json;

fn tokens(n: usize, seed: usize) -> Vec<u32> {
    (0..n).map(|j| ((seed * 7919 + j * 104_729) % 65_000) as u32 + 1).collect()
}

fn main() {
    let gemm = [1024, 2048].iter().map(|&n| gemm_gflops(n, 3, 0).expect("gemm")).fold(0.0f64, f64::max);
    println!("fp32 GEMM ceiling (ONNX Runtime MatMul, all cores): {gemm:.1} GFLOP/s");

    let cfg =
        SynthConfig { layers: 12, width: 768, reranker_layers: vec![1, 6, 10], seed: 1, ..SynthConfig::default() };
    let emb = EmbedderWeights::from_state_dict(&synth_embedder(&cfg)).expect("embedder");
    let rr = RerankerWeights::from_state_dict(&synth_reranker(&cfg)).expect("reranker");
    let params = emb.matmul_params();
    let ceiling_tps = gemm * 1e9 / (2.0 * params as f64);
    println!("non-embedding parameters: {params} -> ceiling {ceiling_tps:.0} tokens/s");
    let rt = Runtime::new(emb, Some(rr), &RuntimeOptions::default()).expect("runtime");
    rt.embed(&[&[1, 2, 3, 65_535]]).expect("warm-up");

    println!("\n{:>10} {:>6} {:>12} {:>10}", "doc_tokens", "batch", "tokens/s", "fraction");
    let mut embed_rows = Vec::new();
    let mut peak = 0.0;
    for (t, b) in [(128, 1), (128, 32), (512, 1), (512, 32)] {
        let seqs: Vec<Vec<u32>> = (0..b).map(|i| tokens(t - 1, i).into_iter().chain([65_535]).collect()).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        if (t, b) == (512, 32) {
            // Reset the peak-RSS counter so it measures this run only.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
        let start = Instant::now();
        rt.embed(&refs).expect("embed");
        let tps = (t * b) as f64 / start.elapsed().as_secs_f64();
        if (t, b) == (512, 32) {
            peak = rwkvdb::memory::peak_rss_mb();
        }
        let fraction = tps / ceiling_tps;
        println!("{t:>10} {b:>6} {tps:>12.1} {fraction:>10.3}");
        embed_rows.push(json!({"doc_tokens": t, "batch": b, "tokens_per_s": tps, "fraction_of_ceiling": fraction}));
    }
    println!("peak RSS during batch-32 x 512 embedding: {peak:.0} MB");

    let codec =
        StateCodec::new(Preset::Balanced.config(), 768, rt.state_layers(), rt.reranker_layers()).expect("codec");
    let (candidates, qlen) = (100usize, 16usize);
    let query: Vec<u32> = tokens(qlen - 1, 999).into_iter().chain([65_535]).collect();
    let (ls, rl) = (rt.state_layers() as f64, rt.reranker_layers().len() as f64);
    println!(
        "\n{:>10} {:>10} {:>14} {:>14} {:>9} {:>9} {:>13}",
        "doc_tokens", "candidates", "offline pair/s", "online pair/s", "measured", "ideal", "decode share"
    );
    let mut rerank_rows = Vec::new();
    for t in [128usize, 512, 2048] {
        // States of 4 distinct documents, stored with the default codec, reused across the 100
        // candidates: the offline cost does not depend on which document a state came from.
        let docs: Vec<Vec<u32>> = (0..4).map(|i| tokens(t, 100 + i)).collect();
        let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
        let blobs: Vec<Vec<u8>> =
            rt.prefix_states(&refs).expect("states").iter().map(|s| codec.encode(s).expect("encode")).collect();
        // A query server is warm: the first run at a new batch shape pays ONNX Runtime's memory
        // planning and first-touch page faults, so one untimed run comes first.
        let queries: Vec<&[u32]> = (0..candidates).map(|_| query.as_slice()).collect();
        let (mut offline, mut decode_share) = (0.0f64, 0.0f64);
        for _ in 0..2 {
            let start = Instant::now();
            let states: Vec<_> = (0..candidates).map(|i| codec.decode(&blobs[i % 4]).expect("decode")).collect();
            let decoded = start.elapsed().as_secs_f64();
            rt.resume_and_score(states, &queries).expect("offline");
            let total = start.elapsed().as_secs_f64();
            offline = candidates as f64 / total;
            decode_share = decoded / total;
        }

        // Online: fewer pairs for long documents to keep the run short; pairs/s is a rate.
        let n_online = (16_384 / t).clamp(4, candidates);
        let online_seqs: Vec<Vec<u32>> =
            (0..n_online).map(|i| docs[i % 4].iter().chain(&query).copied().collect()).collect();
        let orefs: Vec<&[u32]> = online_seqs.iter().map(Vec::as_slice).collect();
        let start = Instant::now();
        rt.online_scores(&orefs).expect("online");
        let online = n_online as f64 / start.elapsed().as_secs_f64();

        let measured = offline / online;
        let ideal = ((t + qlen) as f64 * ls) / (qlen as f64 * ls + rl);
        println!(
            "{t:>10} {candidates:>10} {offline:>14.1} {online:>14.2} {measured:>9.1} {ideal:>9.1} {decode_share:>13.3}"
        );
        rerank_rows.push(json!({
            "doc_tokens": t, "candidates": candidates, "query_tokens": qlen,
            "offline_pairs_per_s": offline, "online_pairs_per_s": online,
            "online_pairs_measured": n_online,
            "measured_ratio": measured, "ideal_ratio": ideal, "offline_decode_share": decode_share,
        }));
    }
    let out = json!({
        "command": "cargo bench --bench runtime",
        "model": {"layers": 12, "width": 768, "reranker_layers": [1, 6, 10], "matmul_params": params},
        "threads": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "gemm_gflops": gemm,
        "embed": embed_rows,
        "rerank": rerank_rows,
        "peak_rss_mb": peak,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench/runtime.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write runtime.json");
    println!("\nwrote {}", path.display());
}
