//! The engine (ONNX Runtime graphs + WKV operator) against the independent scalar reference in
//! tests/common/reference.rs, plus the invariances the engine promises.

mod common;

use common::{max_diff, reference, small_pair, small_runtime, unit};
use rwkvdb::model::{offline_document_text, offline_query_text, online_text, ModelState, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

const TEXTS: &[&str] = &[
    "The EOS token marks the end of a sentence.",
    "Apples are red. 🍎",
    "東京は日本の首都です。",
    "x",
    "A longer text: the quick brown fox jumps over the lazy dog, again and again, until the sun sets.",
];

#[test]
fn embeddings_match_scalar_reference() {
    let (emb, _) = small_pair();
    let rt = small_runtime(&RuntimeOptions::default());
    let tok = Tokenizer::world();
    let seqs: Vec<Vec<u32>> = TEXTS.iter().map(|t| tok.encode_with_eos(t)).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let got = rt.embed(&refs).unwrap();
    for (s, g) in seqs.iter().zip(&got) {
        let want: Vec<f32> = reference::embed(&emb, s).iter().map(|&x| x as f32).collect();
        let d = max_diff(&unit(g), &unit(&want));
        assert!(d < 1e-4, "normalised embedding differs by {d}");
    }
}

#[test]
fn layer_hidden_states_match_scalar_reference() {
    let (emb, _) = small_pair();
    let tok = Tokenizer::world();
    let seqs: Vec<Vec<u32>> = TEXTS.iter().map(|t| tok.encode_with_eos(t)).collect();
    // Chunks one token shorter than the first text: the pools must add up across chunk
    // boundaries, including an EOS that lands alone in the last chunk.
    let chunk_tokens = seqs[0].len() - 1;
    let rt = small_runtime(&RuntimeOptions { chunk_tokens, ..RuntimeOptions::default() });
    assert!(seqs.iter().any(|s| s.len() == 2) && seqs.iter().any(|s| s.len() > 2 * chunk_tokens));
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let layers = [3, 1, 4];
    let got = rt.layer_pass(&layers).unwrap().pooled(&refs).unwrap();
    for (s, per_layer) in seqs.iter().zip(&got) {
        assert_eq!(per_layer.len(), layers.len());
        for (&l, g) in layers.iter().zip(per_layer) {
            let h = reference::hidden(&emb, s, l);
            let text = s.len() - 1;
            let c = h[0].len();
            let mean: Vec<f32> =
                (0..c).map(|j| (h[..text].iter().map(|r| r[j]).sum::<f64>() / text as f64) as f32).collect();
            let as_f32 = |r: &Vec<f64>| r.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            for (name, got, want) in
                [("mean", &g.mean, mean), ("last", &g.last, as_f32(&h[text - 1])), ("eos", &g.eos, as_f32(&h[text]))]
            {
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let d = max_diff(got, &want);
                assert!(d <= 1e-4 * scale.max(1.0), "layer {l} {name}: differs by {d} (scale {scale})");
            }
        }
    }
    // Layers outside the model and sequences without a text token are typed errors.
    assert!(rt.layer_pass(&[0]).is_err() && rt.layer_pass(&[5]).is_err());
    let pass = rt.layer_pass(&[1]).unwrap();
    assert!(pass.pooled(&[&[65535]]).is_err());
}

#[test]
fn online_and_offline_logits_match_scalar_reference() {
    let (emb, rr) = small_pair();
    let rt = small_runtime(&RuntimeOptions::default());
    let tok = Tokenizer::world();
    let (doc, query) = (TEXTS[0], "What marks the end?");
    let online = tok.encode_with_eos(&online_text(doc, query));
    let want_online = reference::online_logit(&emb, &rr, &online);
    let got_online = rt.online_scores(&[&online]).unwrap()[0];
    assert!((f64::from(got_online) - want_online).abs() < 1e-4, "{got_online} vs {want_online}");

    let d = tok.encode(&offline_document_text(doc));
    let q = tok.encode_with_eos(&offline_query_text(query));
    let want_offline = reference::offline_logit(&emb, &rr, &d, &q);
    let states = rt.prefix_states(&[&d]).unwrap();
    let got_offline = rt.resume_and_score(states, &[&q]).unwrap()[0];
    assert!((f64::from(got_offline) - want_offline).abs() < 1e-4, "{got_offline} vs {want_offline}");
}

#[test]
fn offline_score_equals_online_score() {
    let rt = small_runtime(&RuntimeOptions::default());
    let tok = Tokenizer::world();
    let mut checked = 0;
    for doc in TEXTS {
        for query in ["What marks the end?", "fruit", "首都"] {
            let online = tok.encode_with_eos(&online_text(doc, query));
            let d = tok.encode(&offline_document_text(doc));
            let q = tok.encode_with_eos(&offline_query_text(query));
            if [d.as_slice(), q.as_slice()].concat() != online {
                continue; // greedy tokenization merged across the boundary: not the same sequence
            }
            let on = rt.online_scores(&[&online]).unwrap()[0];
            let off = rt.resume_and_score(rt.prefix_states(&[&d]).unwrap(), &[&q]).unwrap()[0];
            assert!((on - off).abs() < 1e-5, "{doc:?}/{query:?}: online {on} offline {off}");
            checked += 1;
        }
    }
    assert!(checked >= 12);
}

#[test]
fn results_do_not_depend_on_batch_companions() {
    let rt = small_runtime(&RuntimeOptions::default());
    let tok = Tokenizer::world();
    let seqs: Vec<Vec<u32>> = TEXTS.iter().map(|t| tok.encode_with_eos(t)).collect();
    let all: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let batched = rt.embed(&all).unwrap();
    for (i, s) in seqs.iter().enumerate() {
        let alone = rt.embed(&[s]).unwrap().remove(0);
        assert!(max_diff(&alone, &batched[i]) < 1e-5, "text {i} changes with its batch");
    }
    // Logits too: the same pair scored alone and among longer and shorter rows.
    let q = tok.encode_with_eos("Query: fruit");
    let states = rt.prefix_states(&all).unwrap();
    let queries: Vec<&[u32]> = states.iter().map(|_| q.as_slice()).collect();
    let together = rt.resume_and_score(states.clone(), &queries).unwrap();
    for (i, st) in states.into_iter().enumerate() {
        let alone = rt.resume_and_score(vec![st], &[&q]).unwrap()[0];
        assert!((alone - together[i]).abs() < 1e-5);
    }
}

#[test]
fn two_chunks_with_carried_state_equal_one_pass() {
    let rt = small_runtime(&RuntimeOptions::default());
    let tok = Tokenizer::world();
    let text = tok.encode(&offline_document_text(TEXTS[4]));
    let whole = rt.prefix_states(&[&text]).unwrap().remove(0);
    let (a, b) = text.split_at(text.len() / 3);
    let first = rt.prefix_states(&[a]).unwrap();
    let split = rt.resume_states(first, &[b]).unwrap().remove(0);
    let d = |x: &ModelState, y: &ModelState| {
        max_diff(&x.wkv, &y.wkv).max(max_diff(&x.att_shift, &y.att_shift)).max(max_diff(&x.ffn_shift, &y.ffn_shift))
    };
    assert!(d(&whole, &split) < 1e-5);
    // The state holds exactly the layers an offline rerank needs: 0..=max(selected) = 3 of 4.
    assert_eq!((whole.layers, rt.state_layers()), (3, 3));
}

#[test]
fn bad_model_input_is_a_typed_error() {
    use rwkvdb::model::ModelError;
    let rt = small_runtime(&RuntimeOptions::default());
    assert!(matches!(rt.embed(&[&[]]), Err(ModelError::EmptySequence)));
    assert!(matches!(rt.embed(&[&[1, 2, 3]]), Err(ModelError::EosPlacement)));
    assert!(matches!(rt.embed(&[&[70_000, 65_535]]), Err(ModelError::TokenOutOfRange { token: 70_000, .. })));
    let wrong = ModelState::zeros(4, 128);
    assert!(matches!(rt.resume_and_score(vec![wrong], &[&[1, 65_535]]), Err(ModelError::StateShape { .. })));
}

#[test]
fn cuda_request_without_a_gpu_is_a_clear_error() {
    use rwkvdb::model::{Device, EmbedderWeights, ModelError, RerankerWeights, Runtime};
    let (e, r) = small_pair();
    let opts = RuntimeOptions { device: Device::Cuda(0), ..RuntimeOptions::default() };
    let got = Runtime::new(
        EmbedderWeights::from_state_dict(&e).unwrap(),
        Some(RerankerWeights::from_state_dict(&r).unwrap()),
        &opts,
    );
    // Built without the `cuda` feature, or with it but on a CPU-only ONNX Runtime: never a silent
    // fallback to the CPU.
    assert!(matches!(got, Err(ModelError::CudaUnavailable(_))), "{:?}", got.err());
}
