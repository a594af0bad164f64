//! bf16 weights on a CPU without AMX-BF16 (forced here with `RWKVDB_NO_AMX=1`, so it runs on
//! every machine): the graphs turn the tile-layout matrices back into f32 at session creation
//! and compute in f32. On a checkpoint whose weights are bf16 values, as the published ones are,
//! that is the f32 model exactly: a wrong un-tiling permutation or a lost matrix would show.
//! (The AMX kernel itself is checked in `src/model/bf16.rs` and against f32 in
//! `tests/quantized.rs`, on machines that have AMX.)

mod common;

use rwkvdb::checkpoint::synth;
use rwkvdb::checkpoint::StoredDType;
use rwkvdb::model::{amx_available, weight_cache, Precision, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

#[test]
fn bf16_without_amx_is_the_f32_model_of_a_bf16_checkpoint() {
    // The only test of this binary: the variable is set before anything asks for AMX.
    std::env::set_var("RWKVDB_NO_AMX", "1");
    assert!(!amx_available());
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = (tmp.path().join("e.pth"), tmp.path().join("r.pth"));
    synth::write_pair(&common::small_config(), &emb, &rr, StoredDType::BF16).unwrap();
    let tok = Tokenizer::world();
    let docs = ["rivers run to the sea", "mountains keep their snow", "a third, longer document about rain"];
    let seqs: Vec<Vec<u32>> = docs.iter().map(|d| tok.encode_with_eos(d)).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let run = |p: Precision| {
        let (pm, _) = weight_cache::load(&weight_cache::CacheDir::Off, &emb, Some(&rr), p).unwrap();
        let rt = Runtime::from_prepared(std::sync::Arc::new(pm), &RuntimeOptions::default()).unwrap();
        let tiled = rt.prepared().meta().tensors.iter().filter(|t| t.name.rsplit('.').next() == Some("bf16")).count();
        (rt.embed(&refs).unwrap(), rt.online_scores(&refs).unwrap(), tiled)
    };
    let (e32, l32, _) = run(Precision::F32);
    let (e16, l16, tiled) = run(Precision::Bf16);
    for (a, b) in e32.iter().zip(&e16) {
        let d = common::max_diff(a, b);
        assert!(d <= 1e-4, "embedding differs by {d}");
    }
    let d = common::max_diff(&l32, &l16);
    assert!(d <= 1e-4, "logits differ by {d}");
    // The matrices really are stored in bf16 (the comparison is not f32 against f32): six per
    // embedder block but the first, which stays f32.
    let layers = common::small_config().layers;
    assert_eq!(tiled, 6 * (layers - 1));
}
