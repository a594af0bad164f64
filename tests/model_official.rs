//! The ONNX Runtime engine against values computed by the official `rwkv-emb` package
//! (float32, CPU; see scripts/reference/) on checkpoints written by `PyTorch` in fp32 and bf16.

use rwkvdb::checkpoint;
use rwkvdb::eval::model::{self as eval, EvalInput, EvalOutput};
use rwkvdb::model::{EmbedderWeights, RerankerWeights, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ref").join(name)
}

fn run(emb: &str, rr: &str, opts: &RuntimeOptions) -> EvalOutput {
    let e = EmbedderWeights::from_state_dict(&checkpoint::load(&data(emb)).unwrap()).unwrap();
    let r = RerankerWeights::from_state_dict(&checkpoint::load(&data(rr)).unwrap()).unwrap();
    let rt = Runtime::new(e, Some(r), opts).unwrap();
    let input: EvalInput = serde_json::from_str(&std::fs::read_to_string(data("eval_input.json")).unwrap()).unwrap();
    eval::run(&rt, Tokenizer::world(), &input).unwrap()
}

fn compare(got: &EvalOutput, expected_file: &str) {
    let want: EvalOutput = serde_json::from_str(&std::fs::read_to_string(data(expected_file)).unwrap()).unwrap();
    assert_eq!(got.tokens, want.tokens, "token ids differ from the official tokenizer");
    assert_eq!(got.embeddings.len(), want.embeddings.len());
    for (id, w) in &want.embeddings {
        let g = &got.embeddings[id];
        let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff / norm < 1e-5, "embedding {id}: max diff {diff} (norm {norm})");
    }
    assert_eq!(got.scores.len(), want.scores.len());
    for (g, w) in got.scores.iter().zip(&want.scores) {
        assert_eq!((&g.query, &g.document), (&w.query, &w.document));
        assert!((g.online_logit - w.online_logit).abs() < 1e-4, "online {g:?} vs {w:?}");
        assert!((g.offline_logit - w.offline_logit).abs() < 1e-4, "offline {g:?} vs {w:?}");
    }
}

#[test]
fn fp32_checkpoint_matches_official_package() {
    compare(&run("tiny-emb-fp32.pth", "tiny-reranker.pth", &RuntimeOptions::default()), "expected-fp32.json");
}

#[test]
fn bf16_checkpoint_with_token_key_and_default_layers_matches_official_package() {
    compare(&run("tiny-emb-bf16.pth", "tiny-reranker-token.pth", &RuntimeOptions::default()), "expected-bf16.json");
}

#[test]
fn results_do_not_depend_on_chunking_or_batch_size() {
    // Tiny chunks and batches: long texts run in many state-carrying pieces, rows in other groups.
    let opts = RuntimeOptions { chunk_tokens: 7, max_rows: 20, ..RuntimeOptions::default() };
    compare(&run("tiny-emb-fp32.pth", "tiny-reranker.pth", &opts), "expected-fp32.json");
}
