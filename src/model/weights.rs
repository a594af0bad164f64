//! Typed model weights built from a checkpoint's [`StateDict`], with the configuration inferred
//! from tensor shapes and every tensor's shape checked.
//!
//! Matrices are stored in the orientation the graphs multiply with (`x @ W`, `[in, out]`):
//! `PyTorch` `Linear` weights (`[out, in]`) are transposed on load.

use crate::checkpoint::{CheckpointError, RawTensor, StateDict};

/// Size of one WKV head; RWKV-7 "x070" checkpoints all use 64.
pub const HEAD_SIZE: usize = 64;

/// Shape facts of an embedder, inferred from its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmbedderConfig {
    /// Number of RWKV blocks.
    pub layers: usize,
    /// Model width `C`.
    pub width: usize,
    /// Number of WKV heads (`C / 64`).
    pub heads: usize,
    /// Rows of the embedding table.
    pub vocab: usize,
    /// Channel-mix hidden width (usually `4C`).
    pub ffn: usize,
    /// Low-rank widths of the decay, in-context-rate, value-residual and gate projections.
    pub lora: LoraDims,
}

/// Low-rank projection widths of one time-mix block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoraDims {
    /// Decay (`w1`/`w2`).
    pub w: usize,
    /// In-context learning rate (`a1`/`a2`).
    pub a: usize,
    /// Value residual (`v1`/`v2`); 0 when the model has a single layer.
    pub v: usize,
    /// Output gate (`g1`/`g2`).
    pub g: usize,
}

/// A bias vector and its two low-rank factors (`x0`, `x1` `[C, D]`, `x2` `[D, C]`).
pub type LowRank = (Vec<f32>, Vec<f32>, Vec<f32>);

/// One RWKV-7 block: time mix (attention-like) and channel mix (MLP-like).
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// Pre-time-mix `LayerNorm`.
    pub ln1: (Vec<f32>, Vec<f32>),
    /// Pre-channel-mix `LayerNorm`.
    pub ln2: (Vec<f32>, Vec<f32>),
    /// Token-shift mixing coefficients `x_r, x_w, x_k, x_v, x_a, x_g`, each `[C]`.
    pub mix: [Vec<f32>; 6],
    /// Decay bias `w0` `[C]`, projections `w1` `[C, Dw]`, `w2` `[Dw, C]`.
    pub w: LowRank,
    /// In-context-rate bias and projections.
    pub a: LowRank,
    /// Value-residual bias and projections (absent in block 0).
    pub v: Option<LowRank>,
    /// Gate projections `g1` `[C, Dg]`, `g2` `[Dg, C]`.
    pub g: (Vec<f32>, Vec<f32>),
    /// `k_k`, `k_a` `[C]`.
    pub k_k: Vec<f32>,
    /// See `k_k`.
    pub k_a: Vec<f32>,
    /// Bonus `r_k` `[H, 64]`.
    pub r_k: Vec<f32>,
    /// Receptance, key, value, output matrices `[C, C]` (`x @ W` orientation).
    pub rkvo: [Vec<f32>; 4],
    /// `GroupNorm` affine after WKV `[C]`.
    pub ln_x: (Vec<f32>, Vec<f32>),
    /// Channel-mix token-shift coefficient `[C]`.
    pub ffn_x_k: Vec<f32>,
    /// Channel-mix key `[C, F]`.
    pub ffn_key: Vec<f32>,
    /// Channel-mix value `[F, C]`.
    pub ffn_value: Vec<f32>,
}

/// The residual MLP + `LayerNorm` head that turns a pooled hidden state into an embedding.
#[derive(Debug, Clone)]
pub struct HeadWeights {
    /// `fc1` `[C, C]` (`x @ W` orientation).
    pub fc1: Vec<f32>,
    /// `fc2` `[C, C]`.
    pub fc2: Vec<f32>,
    /// `LayerNorm` affine.
    pub norm: (Vec<f32>, Vec<f32>),
}

/// An `EmbeddingRWKV` embedder.
#[derive(Debug, Clone)]
pub struct EmbedderWeights {
    /// Inferred shapes.
    pub config: EmbedderConfig,
    /// Embedding table `[vocab, C]` with block 0's `ln0` already applied to every row.
    pub emb: Vec<f32>,
    /// The blocks, in order.
    pub blocks: Vec<BlockWeights>,
    /// Final `LayerNorm`.
    pub ln_out: (Vec<f32>, Vec<f32>),
    /// Retrieval head (`head.retr_head`).
    pub retr_head: HeadWeights,
}

/// The state-based reranker paired with an embedder.
#[derive(Debug, Clone)]
pub struct RerankerWeights {
    /// Width (must equal the embedder's).
    pub width: usize,
    /// Embedder layers whose WKV states feed reranker blocks 0, 1, ...
    pub layer_idx: Vec<usize>,
    /// Whether `layer_idx` came from the checkpoint (else the reference default: first layers).
    pub layer_idx_stored: bool,
    /// The learned input token after block 0's `ln0`, `[C]`.
    pub token: Vec<f32>,
    /// The reranker's own blocks.
    pub blocks: Vec<BlockWeights>,
    /// Final `LayerNorm`.
    pub ln_out: (Vec<f32>, Vec<f32>),
    /// Head: `Linear(C, C)` weight `[C, C]` (`x @ W`), bias `[C]`, then tanh, then `[C]` to a logit.
    pub head: (Vec<f32>, Vec<f32>, Vec<f32>),
}

/// Looks up tensors under a key prefix and checks their shapes.
struct Keys<'a> {
    sd: &'a StateDict,
    prefix: &'a str,
}

impl<'a> Keys<'a> {
    fn raw(&self, key: &str) -> Result<&'a RawTensor, CheckpointError> {
        let full = format!("{}{key}", self.prefix);
        self.sd.get(&full).ok_or(CheckpointError::MissingKey { key: full })
    }

    fn has(&self, key: &str) -> bool {
        self.sd.get(&format!("{}{key}", self.prefix)).is_some()
    }

    /// Fetches `key`, accepting any shape equal to `want` once size-1 dimensions are dropped
    /// (checkpoints store vectors as `[1, 1, C]`, inference code squeezes them).
    fn get(&self, key: &str, want: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let t = self.raw(key)?;
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&t.shape) != squeeze(want) {
            return Err(CheckpointError::Shape {
                key: format!("{}{key}", self.prefix),
                expected: want.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t.data.clone())
    }

    /// Fetches a `PyTorch` `Linear` weight stored `[out, in]` and returns it as `[in, out]`.
    fn linear(&self, key: &str, input: usize, output: usize) -> Result<Vec<f32>, CheckpointError> {
        let w = self.get(key, &[output, input])?;
        Ok(transpose(&w, output, input))
    }

    fn ln(&self, key: &str, c: usize) -> Result<(Vec<f32>, Vec<f32>), CheckpointError> {
        Ok((self.get(&format!("{key}.weight"), &[c])?, self.get(&format!("{key}.bias"), &[c])?))
    }

    fn dim(&self, key: &str, axis: usize) -> Result<usize, CheckpointError> {
        let t = self.raw(key)?;
        t.shape.get(axis).copied().ok_or_else(|| CheckpointError::Shape {
            key: format!("{}{key}", self.prefix),
            expected: vec![0; axis + 1],
            found: t.shape.clone(),
        })
    }

    /// Number of `blocks.N` entries (N contiguous from 0).
    fn block_count(&self) -> usize {
        let mut n = 0;
        while self.has(&format!("blocks.{n}.ln1.weight")) {
            n += 1;
        }
        n
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
#[must_use]
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

/// `LayerNorm` of one row, eps 1e-5 (`PyTorch`'s default).
#[must_use]
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + 1e-5).sqrt();
    x.iter().zip(w).zip(b).map(|((&v, &w), &b)| ((f64::from(v) - mean) * inv) as f32 * w + b).collect()
}

fn load_block(
    k: &Keys,
    i: usize,
    c: usize,
    heads: usize,
    lora: &LoraDims,
    ffn: usize,
) -> Result<BlockWeights, CheckpointError> {
    let p = format!("blocks.{i}.");
    let att = format!("{p}att.");
    let vec = |name: &str| k.get(&format!("{att}{name}"), &[c]);
    let mix = [vec("x_r")?, vec("x_w")?, vec("x_k")?, vec("x_v")?, vec("x_a")?, vec("x_g")?];
    let lo = |name: &str, d: usize| -> Result<LowRank, CheckpointError> {
        Ok((
            vec(&format!("{name}0"))?,
            k.get(&format!("{att}{name}1"), &[c, d])?,
            k.get(&format!("{att}{name}2"), &[d, c])?,
        ))
    };
    // Block 0 takes its value from itself (it defines `v_first`); any v0/v1/v2 it carries are unused.
    let v = if i > 0 { Some(lo("v", lora.v)?) } else { None };
    Ok(BlockWeights {
        ln1: k.ln(&format!("{p}ln1"), c)?,
        ln2: k.ln(&format!("{p}ln2"), c)?,
        mix,
        w: lo("w", lora.w)?,
        a: lo("a", lora.a)?,
        v,
        g: (k.get(&format!("{att}g1"), &[c, lora.g])?, k.get(&format!("{att}g2"), &[lora.g, c])?),
        k_k: vec("k_k")?,
        k_a: vec("k_a")?,
        r_k: k.get(&format!("{att}r_k"), &[heads, HEAD_SIZE])?,
        rkvo: [
            k.linear(&format!("{att}receptance.weight"), c, c)?,
            k.linear(&format!("{att}key.weight"), c, c)?,
            k.linear(&format!("{att}value.weight"), c, c)?,
            k.linear(&format!("{att}output.weight"), c, c)?,
        ],
        ln_x: k.ln(&format!("{att}ln_x"), c)?,
        ffn_x_k: k.get(&format!("{p}ffn.x_k"), &[c])?,
        ffn_key: k.linear(&format!("{p}ffn.key.weight"), c, ffn)?,
        ffn_value: k.linear(&format!("{p}ffn.value.weight"), ffn, c)?,
    })
}

/// Infers `(heads, width, lora, ffn)` from block 0 (and block 1 for the value `LoRA`).
fn infer_block_shapes(k: &Keys, n_blocks: usize) -> Result<(usize, usize, LoraDims, usize), CheckpointError> {
    let heads = k.dim("blocks.0.att.r_k", 0)?;
    let hs = k.dim("blocks.0.att.r_k", 1)?;
    if hs != HEAD_SIZE || heads == 0 {
        return Err(CheckpointError::Shape {
            key: format!("{}blocks.0.att.r_k", k.prefix),
            expected: vec![heads, HEAD_SIZE],
            found: vec![heads, hs],
        });
    }
    let c = heads * HEAD_SIZE;
    let lora = LoraDims {
        w: k.dim("blocks.0.att.w1", 1)?,
        a: k.dim("blocks.0.att.a1", 1)?,
        v: if n_blocks > 1 { k.dim("blocks.1.att.v1", 1)? } else { 0 },
        g: k.dim("blocks.0.att.g1", 1)?,
    };
    let ffn = k.dim("blocks.0.ffn.key.weight", 0)?;
    Ok((heads, c, lora, ffn))
}

impl EmbedderWeights {
    /// Builds an embedder from a checkpoint with keys `rwkv.*` and `head.retr_head.*`.
    pub fn from_state_dict(sd: &StateDict) -> Result<Self, CheckpointError> {
        let k = Keys { sd, prefix: "rwkv." };
        if !k.has("emb.weight") {
            return Err(CheckpointError::MissingKey { key: "rwkv.emb.weight".into() });
        }
        let layers = k.block_count();
        if layers == 0 {
            return Err(CheckpointError::MissingKey { key: "rwkv.blocks.0.ln1.weight".into() });
        }
        let (heads, c, lora, ffn) = infer_block_shapes(&k, layers)?;
        let vocab = k.dim("emb.weight", 0)?;
        let raw_emb = k.get("emb.weight", &[vocab, c])?;
        let (ln0w, ln0b) = k.ln("blocks.0.ln0", c)?;
        let mut emb = Vec::with_capacity(raw_emb.len());
        for row in raw_emb.chunks_exact(c) {
            emb.extend(layer_norm(row, &ln0w, &ln0b));
        }
        let blocks = (0..layers).map(|i| load_block(&k, i, c, heads, &lora, ffn)).collect::<Result<Vec<_>, _>>()?;
        let h = Keys { sd, prefix: "head.retr_head." };
        let retr_head = HeadWeights {
            fc1: h.linear("fc1.weight", c, c)?,
            fc2: h.linear("fc2.weight", c, c)?,
            norm: h.ln("norm", c)?,
        };
        Ok(Self {
            config: EmbedderConfig { layers, width: c, heads, vocab, ffn, lora },
            emb,
            blocks,
            ln_out: k.ln("ln_out", c)?,
            retr_head,
        })
    }

    /// Non-embedding parameter count (what each token multiplies through).
    #[must_use]
    pub fn matmul_params(&self) -> usize {
        let c = &self.config;
        let per_block = 4 * c.width * c.width
            + 2 * c.width * c.ffn
            + 2 * c.width * (c.lora.w + c.lora.a + c.lora.g)
            + 2 * c.width * c.lora.v;
        per_block * c.layers + 2 * c.width * c.width
    }
}

impl RerankerWeights {
    /// Builds a reranker from a checkpoint with keys `reranker.*` and optional `reranker_layer_idx`.
    pub fn from_state_dict(sd: &StateDict) -> Result<Self, CheckpointError> {
        let k = Keys { sd, prefix: "reranker." };
        let n = k.block_count();
        if n == 0 {
            return Err(CheckpointError::MissingKey { key: "reranker.blocks.0.ln1.weight".into() });
        }
        let (heads, c, lora, ffn) = infer_block_shapes(&k, n)?;
        let token_key = if k.has("emb.weight") { "emb.weight" } else { "token.weight" };
        let token_raw = k.get(token_key, &[1, c])?;
        let (ln0w, ln0b) = k.ln("blocks.0.ln0", c)?;
        let token = layer_norm(&token_raw, &ln0w, &ln0b);
        let blocks = (0..n).map(|i| load_block(&k, i, c, heads, &lora, ffn)).collect::<Result<Vec<_>, _>>()?;
        let (layer_idx, layer_idx_stored) = match sd.ints.get("reranker_layer_idx") {
            Some(idx) => {
                let idx: Option<Vec<usize>> = idx.iter().map(|&i| usize::try_from(i).ok()).collect();
                match idx {
                    Some(idx) if idx.len() == n => (idx, true),
                    _ => {
                        return Err(CheckpointError::Shape {
                            key: "reranker_layer_idx".into(),
                            expected: vec![n],
                            found: vec![sd.ints.get("reranker_layer_idx").map_or(0, Vec::len)],
                        })
                    }
                }
            }
            None => ((0..n).collect(), false),
        };
        let head = (k.linear("head.0.weight", c, c)?, k.get("head.0.bias", &[c])?, k.get("head.2.weight", &[1, c])?);
        Ok(Self { width: c, layer_idx, layer_idx_stored, token, blocks, ln_out: k.ln("ln_out", c)?, head })
    }

    /// Highest embedder layer whose state the reranker reads.
    #[must_use]
    pub fn max_layer(&self) -> usize {
        self.layer_idx.iter().copied().max().unwrap_or(0)
    }
}
