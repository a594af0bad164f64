//! Synthetic `EmbeddingRWKV` checkpoints in the official key layout, for tests and benchmarks.
//!
//! Weights follow the initialisation recipe of the reference training code (token-shift
//! mixing ramps, the decay-speed curve, `k_k = 0.85`, …), but matrices the recipe starts at zero
//! get small random values, so every path of the network carries signal, as in a trained model.
//! The generator is a seeded `SplitMix64`: the same configuration gives bit-identical files.

use std::path::Path;

use super::{CheckpointError, RawTensor, StateDict, StoredDType};

/// Shape and seed of a synthetic model pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Embedder layers.
    pub layers: usize,
    /// Width (multiple of 64).
    pub width: usize,
    /// Embedder layers the reranker reads (one reranker block each).
    pub reranker_layers: Vec<usize>,
    /// Random seed.
    pub seed: u64,
    /// Low-rank widths `(w, a, v, g)`; `None` uses the reference formulas.
    pub lora: Option<(usize, usize, usize, usize)>,
    /// Embedding rows (the world vocabulary needs 65536: ids up to 65529 plus EOS 65535).
    pub vocab: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self { layers: 2, width: 128, reranker_layers: vec![1], seed: 42, lora: None, vocab: 65536 }
    }
}

impl SynthConfig {
    /// The 0.1B shape the benchmarks use (`target/bench/emb-12x768.pth`): 12 layers x 768, the
    /// reranker reading layers 1, 6 and 10, seed 1.
    #[must_use]
    pub fn bench_0_1b() -> Self {
        Self { layers: 12, width: 768, reranker_layers: vec![1, 6, 10], seed: 1, ..Self::default() }
    }

    /// Low-rank widths: given, or the reference's suggestions for this width.
    #[must_use]
    pub fn lora_dims(&self) -> (usize, usize, usize, usize) {
        if let Some(d) = self.lora {
            return d;
        }
        let c = self.width as f64;
        let round32 = |x: f64| ((x / 32.0).round() as usize * 32).max(32);
        let g = if self.width == 1024 { 128 } else { round32(0.6 * c.powf(0.8)) };
        (round32(1.8 * c.sqrt()), round32(1.8 * c.sqrt()), round32(1.3 * c.sqrt()), g)
    }
}

/// `SplitMix64` with uniform floats built from the top 24 bits (exact, platform independent).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

struct Writer<'a> {
    sd: StateDict,
    rng: &'a mut Rng,
}

impl Writer<'_> {
    fn put(&mut self, key: String, shape: Vec<usize>, f: impl FnMut(&mut Rng, usize) -> f32) {
        let n = shape.iter().product();
        let mut f = f;
        let data = (0..n).map(|i| f(self.rng, i)).collect();
        self.sd.tensors.insert(key, RawTensor::new(shape, data));
    }
    /// Uniform matrix with variance `gain^2 / fan_in`.
    fn matrix(&mut self, key: String, rows: usize, cols: usize, fan_in: usize, gain: f32) {
        let s = gain * (3.0 / fan_in as f32).sqrt();
        self.put(key, vec![rows, cols], |r, _| r.sym() * s);
    }
    fn ln(&mut self, key: &str, c: usize) {
        self.put(format!("{key}.weight"), vec![c], |r, _| 1.0 + 0.1 * r.sym());
        self.put(format!("{key}.bias"), vec![c], |r, _| 0.05 * r.sym());
    }

    /// One block in the layout of `RWKV_Tmix_x070` / `RWKV_CMix_x070`.
    fn block(&mut self, p: &str, i: usize, n_layer: usize, c: usize, lora: (usize, usize, usize, usize)) {
        let (dw, da, dv, dg) = lora;
        let ratio01 = if n_layer > 1 { i as f32 / (n_layer - 1) as f32 } else { 0.0 };
        let ratio10 = 1.0 - i as f32 / n_layer as f32;
        let ddd = |j: usize| j as f32 / c as f32;
        let att = format!("{p}blocks.{i}.att.");
        if i == 0 {
            self.ln(&format!("{p}blocks.0.ln0"), c);
        }
        self.ln(&format!("{p}blocks.{i}.ln1"), c);
        self.ln(&format!("{p}blocks.{i}.ln2"), c);
        let ramps: [(&str, f32, f32); 6] = [
            ("x_r", 0.2, 0.0),
            ("x_w", 0.9, 0.0),
            ("x_k", 0.9, 0.4),
            ("x_v", 0.4, 0.6),
            ("x_a", 0.9, 0.0),
            ("x_g", 0.2, 0.0),
        ];
        for (name, pow, shift) in ramps {
            self.put(format!("{att}{name}"), vec![1, 1, c], |r, j| {
                (1.0 - (ddd(j).powf(pow * ratio10) + shift * ratio01) + 0.05 * r.sym()).clamp(0.0, 1.0)
            });
        }
        let n1 = (c - 1).max(1) as f32;
        self.put(format!("{att}w0"), vec![1, 1, c], |r, j| {
            -7.0 + 5.0 * (j as f32 / n1).powf(0.85 + ratio01.sqrt()) + 0.5 + 0.3 * r.sym()
        });
        self.matrix(format!("{att}w1"), c, dw, c, 0.5);
        self.matrix(format!("{att}w2"), dw, c, dw, 0.5);
        self.put(format!("{att}a0"), vec![1, 1, c], |r, _| 0.3 * r.sym());
        self.matrix(format!("{att}a1"), c, da, c, 0.5);
        self.matrix(format!("{att}a2"), da, c, da, 0.5);
        if i > 0 {
            self.put(format!("{att}v0"), vec![1, 1, c], |r, _| 1.0 + 0.2 * r.sym());
            self.matrix(format!("{att}v1"), c, dv, c, 0.5);
            self.matrix(format!("{att}v2"), dv, c, dv, 0.5);
        }
        self.matrix(format!("{att}g1"), c, dg, c, 1.0);
        self.matrix(format!("{att}g2"), dg, c, dg, 1.0);
        self.put(format!("{att}k_k"), vec![1, 1, c], |r, _| 0.85 + 0.05 * r.sym());
        self.put(format!("{att}k_a"), vec![1, 1, c], |r, _| 1.0 + 0.05 * r.sym());
        self.put(format!("{att}r_k"), vec![c / 64, 64], |r, _| 0.2 * r.sym());
        for (name, gain) in [("receptance", 1.0), ("key", 1.0), ("value", 1.0), ("output", 0.5)] {
            self.matrix(format!("{att}{name}.weight"), c, c, c, gain);
        }
        self.ln(&format!("{att}ln_x"), c);
        let ffn = format!("{p}blocks.{i}.ffn.");
        self.put(format!("{ffn}x_k"), vec![1, 1, c], |r, j| {
            (1.0 - ddd(j).powf(ratio10.powi(4)) + 0.05 * r.sym()).clamp(0.0, 1.0)
        });
        self.matrix(format!("{ffn}key.weight"), 4 * c, c, c, 1.0);
        self.matrix(format!("{ffn}value.weight"), c, 4 * c, 4 * c, 0.4);
    }
}

/// An embedder (`rwkv.*` + `head.*`) in the official layout.
#[must_use]
pub fn synth_embedder(cfg: &SynthConfig) -> StateDict {
    let mut rng = Rng(cfg.seed);
    let c = cfg.width;
    let lora = cfg.lora_dims();
    let mut w = Writer { sd: StateDict::default(), rng: &mut rng };
    w.put("rwkv.emb.weight".into(), vec![cfg.vocab, c], |r, _| r.sym());
    for i in 0..cfg.layers {
        w.block("rwkv.", i, cfg.layers, c, lora);
    }
    w.ln("rwkv.ln_out", c);
    for task in ["cls", "sts", "retr"] {
        w.matrix(format!("head.{task}_head.fc1.weight"), c, c, c, 1.0);
        w.matrix(format!("head.{task}_head.fc2.weight"), c, c, c, 0.5);
        w.ln(&format!("head.{task}_head.norm"), c);
    }
    w.sd
}

/// Writes the embedder and the reranker of `cfg` as `.pth` files.
pub fn write_pair(
    cfg: &SynthConfig,
    embedder: &Path,
    reranker: &Path,
    dtype: StoredDType,
) -> Result<(), CheckpointError> {
    super::pth::write(embedder, &synth_embedder(cfg), dtype)?;
    super::pth::write(reranker, &synth_reranker(cfg), dtype)
}

/// The paired reranker (`reranker.*` + `reranker_layer_idx`); seeded differently from the embedder.
#[must_use]
pub fn synth_reranker(cfg: &SynthConfig) -> StateDict {
    let mut rng = Rng(cfg.seed ^ 0x005E_ED0F_8E8A_4E8E);
    let c = cfg.width;
    let lora = cfg.lora_dims();
    let n = cfg.reranker_layers.len().max(1);
    let mut w = Writer { sd: StateDict::default(), rng: &mut rng };
    w.put("reranker.emb.weight".into(), vec![1, c], |r, _| r.sym());
    for i in 0..n {
        w.block("reranker.", i, n, c, lora);
    }
    w.ln("reranker.ln_out", c);
    w.matrix("reranker.head.0.weight".into(), c, c, c, 2.0);
    w.put("reranker.head.0.bias".into(), vec![c], |r, _| 0.1 * r.sym());
    w.matrix("reranker.head.2.weight".into(), 1, c, c, 6.0);
    let mut sd = w.sd;
    sd.ints.insert("reranker_layer_idx".into(), cfg.reranker_layers.iter().map(|&l| l as i64).collect());
    sd
}
