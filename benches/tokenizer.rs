//! Tokenizer throughput, single thread: `cargo bench --bench tokenizer`.

use std::time::Instant;

use rwkvdb::tokenizer::Tokenizer;

fn main() {
    let tok = Tokenizer::world();
    let english =
        "The quick brown fox jumps over the lazy dog. State-centric retrieval caches document states. ".repeat(40_000);
    let cjk = "東京は日本の首都です。人口は約千四百万人で、世界有数の大都市です。".repeat(40_000);
    let corpus = include_str!("../docs/demo/corpus.jsonl").repeat(30);
    println!("{:>10} {:>10} {:>10}", "text", "MB", "MB/s");
    for (name, text) in [("english", english.as_str()), ("cjk", cjk.as_str()), ("mixed", corpus.as_str())] {
        let mut best = f64::MAX;
        let mut n = 0;
        for _ in 0..3 {
            let start = Instant::now();
            n = tok.encode(text).len();
            best = best.min(start.elapsed().as_secs_f64());
        }
        let mb = text.len() as f64 / 1e6;
        println!("{name:>10} {mb:>10.1} {:>10.1}   ({n} tokens)", mb / best);
    }
}
