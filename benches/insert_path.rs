//! The insert path against the model arithmetic it needs, at the 0.1B shape (12 x 768, f32).
//! Writes `docs/bench/insert_path.json`.
//!
//!     cargo bench --bench insert_path
//!
//! For short (~20 tokens) and long (~125 tokens) documents, in one process and alternating
//! rounds: `Collection::insert` in batches of 32 (what `rwkvdb import` does), and the same model
//! calls alone on the same batches (embedding of `text + EOS`; states of the offline template,
//! resumed from the template prefix's state). The ratio is what the insert path adds to the
//! model: tokenizing, state encoding, the redb commit, the ANN insert.

use std::time::Instant;

use rwkvdb::checkpoint::{synth, StoredDType};
use rwkvdb::model::templates::OFFLINE_DOCUMENT_PREFIX;
use rwkvdb::model::{offline_document_text, Runtime};
use rwkvdb::tokenizer::Tokenizer;
use rwkvdb::{Collection, CollectionConfig, Database, NewDocument, OpenOptions};
use serde_json::json;

const BATCH: usize = 32;
const ROUNDS: usize = 3;

/// Deterministic English-like documents of about `words` words.
fn documents(n: usize, words: usize, seed: usize) -> Vec<String> {
    let vocab = [
        "state", "river", "model", "query", "graph", "paper", "light", "stone", "cloud", "water", "reader", "token",
        "layer", "memory", "index", "answer", "search", "vector", "store", "garden",
    ];
    (0..n)
        .map(|i| {
            let body: Vec<&str> = (0..words).map(|j| vocab[(i * 7 + j * 13 + seed) % vocab.len()]).collect();
            format!("Note {i}-{seed}: {}.", body.join(" "))
        })
        .collect()
}

/// The model calls of one insert batch, without anything else.
fn model_only(rt: &Runtime, prefix_state: &rwkvdb::model::ModelState, prefix_len: usize, texts: &[String]) {
    let tok = Tokenizer::world();
    let embed: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_with_eos(t)).collect();
    let states: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(&offline_document_text(t))).collect();
    rt.embed(&embed.iter().map(Vec::as_slice).collect::<Vec<_>>()).expect("embed");
    let rests: Vec<&[u32]> = states.iter().map(|s| &s[prefix_len.min(s.len() - 1)..]).collect();
    let starts = texts.iter().map(|_| prefix_state.clone()).collect();
    rt.resume_states(starts, &rests).expect("states");
}

/// Tokens the model reads for `texts`: `text + EOS`, and the template after the cached prefix.
fn tokens_of(texts: &[String], prefix_len: usize) -> usize {
    let tok = Tokenizer::world();
    texts
        .iter()
        .map(|t| tok.encode_with_eos(t).len() + tok.encode(&offline_document_text(t)).len().saturating_sub(prefix_len))
        .sum()
}

fn main() {
    let dir = std::env::temp_dir().join("rwkvdb-insert-path");
    std::fs::create_dir_all(&dir).expect("dir");
    let (emb, rr) = (dir.join("emb.pth"), dir.join("rr.pth"));
    if !emb.exists() || !rr.exists() {
        synth::write_pair(&synth::SynthConfig::bench_0_1b(), &emb, &rr, StoredDType::F32).expect("write");
    }
    let path = dir.join("insert.redb");
    let _ = std::fs::remove_file(&path);
    let db = Database::open(&path, OpenOptions::default()).expect("open");
    let c: Collection = db.create_collection("bench", CollectionConfig::new(&emb, Some(rr))).expect("collection");
    let rt = c.runtime().expect("runtime");
    let tok = Tokenizer::world();
    let prefix = tok.encode(OFFLINE_DOCUMENT_PREFIX);
    // The collection resumes from the longest prefix a document's tokens start with: at least
    // all but the last prefix token (greedy tokenization may merge it with the text).
    let prefix_len = prefix.len() - 1;
    let prefix_state = rt.prefix_states(&[&prefix[..prefix_len]]).expect("prefix").remove(0);
    // Warm-up at both shapes (first runs plan memory).
    for words in [4, 40] {
        let warm = documents(BATCH, words, 999);
        model_only(&rt, &prefix_state, prefix_len, &warm);
    }

    let mut rows = Vec::new();
    println!(
        "{:<6} {:>6} {:>7} {:>14} {:>13} {:>12} {:>6}",
        "docs", "count", "tokens", "tokens per doc", "insert tok/s", "model tok/s", "ratio"
    );
    for (name, words, n) in [("short", 4, 256), ("long", 40, 64)] {
        let (mut insert_s, mut model_s, mut tokens) = (0.0, 0.0, 0);
        for round in 0..ROUNDS {
            let texts = documents(n, words, round * 1000 + words);
            tokens += tokens_of(&texts, prefix_len);
            let t = Instant::now();
            for batch in texts.chunks(BATCH) {
                model_only(&rt, &prefix_state, prefix_len, batch);
            }
            model_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for (b, batch) in texts.chunks(BATCH).enumerate() {
                let docs = batch
                    .iter()
                    .enumerate()
                    .map(|(i, text)| NewDocument {
                        id: Some(format!("{name}-{round}-{b}-{i}")),
                        text: text.clone(),
                        metadata: None,
                    })
                    .collect();
                c.insert(docs).expect("insert");
            }
            insert_s += t.elapsed().as_secs_f64();
        }
        let per_doc = tokens as f64 / (n * ROUNDS) as f64;
        let (insert_rate, model_rate) = (tokens as f64 / insert_s, tokens as f64 / model_s);
        println!(
            "{name:<6} {:>6} {:>7} {per_doc:>14.1} {insert_rate:>13.0} {model_rate:>12.0} {:>6.3}",
            n * ROUNDS,
            tokens,
            insert_rate / model_rate
        );
        rows.push(json!({
            "documents": name, "count": n * ROUNDS, "tokens_per_document": per_doc,
            "insert_tokens_per_s": insert_rate, "model_only_tokens_per_s": model_rate,
            "insert_over_model": insert_rate / model_rate,
        }));
    }
    let short = rows[0]["insert_tokens_per_s"].as_f64().unwrap_or(0.0);
    let long = rows[1]["insert_tokens_per_s"].as_f64().unwrap_or(1.0);
    println!("short / long insert tokens/s: {:.3}", short / long);
    let out = json!({
        "command": "cargo bench --bench insert_path",
        "shape": "12 x 768 synthetic, f32, reranker reading layers 1, 6, 10",
        "tokens": "tokens the model reads per document: text + EOS, and the offline template after the cached prefix",
        "rows": rows,
        "short_over_long_insert": short / long,
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(root.join("docs/bench/insert_path.json"), serde_json::to_string_pretty(&out).expect("json"))
        .expect("write");
    drop(c);
    drop(db);
    let _ = std::fs::remove_file(&path);
}
