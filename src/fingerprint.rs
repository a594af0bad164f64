//! Model fingerprints: a collection remembers exactly which model, tokenizer, templates, layer
//! selection and state codec produced its embeddings and states, and refuses to mix.
//!
//! The hashed bytes are spelled out here (encoding version 1, the one every stored fingerprint
//! uses): renaming a field or changing a `Debug` implementation changes nothing. Changing what
//! is hashed invalidates every stored collection, so it needs a new encoding version that the
//! check accepts alongside the old one.

use xxhash_rust::xxh3::Xxh3;

use crate::model::{EmbedderConfig, EmbedderWeights, RerankerWeights, Runtime, RERANK_INSTRUCTION};
use crate::store::CollectionConfig;
use crate::tokenizer::Tokenizer;

/// The model configuration as hashed: version 1 wrote it in this form.
fn config_text(c: &EmbedderConfig) -> String {
    let l = &c.lora;
    format!(
        "EmbedderConfig {{ layers: {}, width: {}, heads: {}, vocab: {}, ffn: {}, lora: LoraDims {{ w: {}, a: {}, v: {}, g: {} }} }}",
        c.layers, c.width, c.heads, c.vocab, c.ffn, l.w, l.a, l.v, l.g
    )
}

/// A layer list as hashed: `[1, 2]`.
fn layer_list(layers: &[usize]) -> String {
    let items: Vec<String> = layers.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn feed(h: &mut Xxh3, v: &[f32]) {
    for chunk in v.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        h.update(&bytes);
    }
}

/// Hash of every weight the graphs use (after conversion to f32), as hex.
pub fn weights(emb: &EmbedderWeights, rr: Option<&RerankerWeights>) -> String {
    let mut h = Xxh3::new();
    h.update(config_text(&emb.config).as_bytes());
    feed(&mut h, &emb.emb);
    let blocks = emb.blocks.iter().chain(rr.map_or(&[][..], |r| r.blocks.as_slice()));
    for b in blocks {
        for m in b.mix.iter().chain(b.rkvo.iter()) {
            feed(&mut h, m);
        }
        for v in
            [&b.ln1.0, &b.ln1.1, &b.ln2.0, &b.ln2.1, &b.w.0, &b.w.1, &b.w.2, &b.a.0, &b.a.1, &b.a.2, &b.g.0, &b.g.1]
        {
            feed(&mut h, v);
        }
        if let Some((v0, v1, v2)) = &b.v {
            for v in [v0, v1, v2] {
                feed(&mut h, v);
            }
        }
        for v in [&b.k_k, &b.k_a, &b.r_k, &b.ln_x.0, &b.ln_x.1, &b.ffn_x_k, &b.ffn_key, &b.ffn_value] {
            feed(&mut h, v);
        }
    }
    for v in [
        &emb.ln_out.0,
        &emb.ln_out.1,
        &emb.retr_head.fc1,
        &emb.retr_head.fc2,
        &emb.retr_head.norm.0,
        &emb.retr_head.norm.1,
    ] {
        feed(&mut h, v);
    }
    if let Some(r) = rr {
        h.update(layer_list(&r.layer_idx).as_bytes());
        for v in [&r.token, &r.ln_out.0, &r.ln_out.1, &r.head.0, &r.head.1, &r.head.2] {
            feed(&mut h, v);
        }
    }
    format!("{:032x}", h.digest128())
}

/// The full collection fingerprint: weights, tokenizer vocabulary, templates, layer selection,
/// state preset and state blob format.
pub fn collection(weights_hash: &str, cfg: &CollectionConfig, rt: &Runtime) -> String {
    let mut h = Xxh3::new();
    h.update(weights_hash.as_bytes());
    let tok = Tokenizer::world();
    h.update(format!("vocab:{}", tok.vocab_size()).as_bytes());
    for id in 0..=(tok.vocab_size() as u32) {
        if let Some(b) = tok.token_bytes(id) {
            h.update(b);
        }
    }
    h.update(RERANK_INSTRUCTION.as_bytes());
    h.update(format!("layers:{}/{}", layer_list(rt.reranker_layers()), rt.state_layers()).as_bytes());
    h.update(format!("preset:{}", cfg.state_preset).as_bytes());
    // Weight precision changes every embedding and state; f32 adds nothing, so collections made
    // before precisions existed keep their fingerprints.
    if cfg.precision != crate::model::Precision::F32 {
        h.update(format!("precision:{}", cfg.precision).as_bytes());
    }
    // The state blob format (not the file layout: upgrading the file keeps collections valid).
    h.update(format!("format:{}", crate::codec::FORMAT_VERSION).as_bytes());
    format!("{:032x}", h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::LoraDims;

    /// The hashed text is fixed: these literals are what encoding version 1 hashes.
    #[test]
    fn hashed_text_is_frozen() {
        let c = EmbedderConfig {
            layers: 12,
            width: 768,
            heads: 12,
            vocab: 65536,
            ffn: 3072,
            lora: LoraDims { w: 64, a: 64, v: 32, g: 128 },
        };
        assert_eq!(
            config_text(&c),
            "EmbedderConfig { layers: 12, width: 768, heads: 12, vocab: 65536, ffn: 3072, lora: LoraDims { w: 64, a: 64, v: 32, g: 128 } }"
        );
        assert_eq!(layer_list(&[1, 2, 11]), "[1, 2, 11]");
        assert_eq!(layer_list(&[]), "[]");
    }
}
