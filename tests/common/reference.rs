//! A scalar f64 forward pass of `EmbeddingRWKV` and its reranker, written straight from the math of
//! `rwkv_emb/model.py` and `rwkv_emb/reference/rwkv7.py`, reading the checkpoint by its official
//! keys. It shares no code with the engine (no graphs, no batching, no kernels): tests use it as
//! an independent reference.

#![allow(dead_code)]

use rwkvdb::checkpoint::StateDict;

const N: usize = 64;
const EOS: u32 = 65535;

/// Per-layer recurrent state: token shifts `[L][2][C]` and WKV `[L][H][64][64]` (row = value).
pub struct RefState {
    pub shift: Vec<[Vec<f64>; 2]>,
    pub wkv: Vec<Vec<f64>>,
}

impl RefState {
    pub fn zeros(layers: usize, c: usize) -> Self {
        Self { shift: (0..layers).map(|_| [vec![0.0; c], vec![0.0; c]]).collect(), wkv: vec![vec![0.0; c * N]; layers] }
    }
}

struct W<'a> {
    sd: &'a StateDict,
    p: String,
}

impl W<'_> {
    fn v(&self, k: &str) -> Vec<f64> {
        let key = format!("{}{k}", self.p);
        self.sd.get(&key).unwrap_or_else(|| panic!("missing {key}")).data.iter().map(|&x| f64::from(x)).collect()
    }
    /// `x @ W.T` for a `PyTorch` Linear weight `[out, in]`.
    fn linear(&self, k: &str, x: &[f64]) -> Vec<f64> {
        let w = self.v(k);
        let n_in = x.len();
        w.chunks(n_in).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
    }
    /// `x @ M` for a matrix stored `[in, out]` (the `LoRA` factors).
    fn matmul(&self, k: &str, x: &[f64]) -> Vec<f64> {
        let m = self.v(k);
        let out = m.len() / x.len();
        let mut y = vec![0.0; out];
        for (i, &xi) in x.iter().enumerate() {
            for j in 0..out {
                y[j] += xi * m[i * out + j];
            }
        }
        y
    }
    fn has(&self, k: &str) -> bool {
        self.sd.get(&format!("{}{k}", self.p)).is_some()
    }
}

fn layer_norm(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    x.iter().enumerate().map(|(i, v)| (v - mean) / (var + eps).sqrt() * w[i] + b[i]).collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One block on one token. `shift` holds the previous ln1/ln2 outputs; `wkv` the block's state.
fn block(w: &W, i: usize, x: &mut [f64], shift: &mut [Vec<f64>; 2], wkv: &mut [f64], v_first: &mut Vec<f64>) {
    let c = x.len();
    let h = c / N;
    let b = format!("blocks.{i}.");
    let a = format!("blocks.{i}.att.");
    let xa = layer_norm(x, &w.v(&format!("{b}ln1.weight")), &w.v(&format!("{b}ln1.bias")), 1e-5);
    let xx: Vec<f64> = shift[0].iter().zip(&xa).map(|(p, q)| p - q).collect();
    shift[0].clone_from(&xa);
    let mix = |name: &str| -> Vec<f64> {
        let m = w.v(&format!("{a}{name}"));
        xa.iter().zip(&xx).zip(&m).map(|((x, d), m)| x + d * m).collect()
    };
    let (xr, xw, xk, xv, xa2, xg) = (mix("x_r"), mix("x_w"), mix("x_k"), mix("x_v"), mix("x_a"), mix("x_g"));
    let r = w.linear(&format!("{a}receptance.weight"), &xr);
    let mut k = w.linear(&format!("{a}key.weight"), &xk);
    let mut v = w.linear(&format!("{a}value.weight"), &xv);
    let t: Vec<f64> = w.matmul(&format!("{a}w1"), &xw).iter().map(|z| z.tanh()).collect();
    let w0 = w.v(&format!("{a}w0"));
    let decay: Vec<f64> = w
        .matmul(&format!("{a}w2"), &t)
        .iter()
        .zip(&w0)
        .map(|(z, b)| (-(-0.5f64).exp() * sigmoid(z + b)).exp())
        .collect();
    let a0 = w.v(&format!("{a}a0"));
    let lr: Vec<f64> = w
        .matmul(&format!("{a}a2"), &w.matmul(&format!("{a}a1"), &xa2))
        .iter()
        .zip(&a0)
        .map(|(z, b)| sigmoid(z + b))
        .collect();
    let g1: Vec<f64> = w.matmul(&format!("{a}g1"), &xg).iter().map(|&z| sigmoid(z)).collect();
    let g = w.matmul(&format!("{a}g2"), &g1);
    let (k_k, k_a, r_k) = (w.v(&format!("{a}k_k")), w.v(&format!("{a}k_a")), w.v(&format!("{a}r_k")));
    let mut kk: Vec<f64> = k.iter().zip(&k_k).map(|(a, b)| a * b).collect();
    for head in kk.chunks_mut(N) {
        let n = head.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        for x in head.iter_mut() {
            *x /= n;
        }
    }
    for j in 0..c {
        k[j] *= 1.0 + (lr[j] - 1.0) * k_a[j];
    }
    if i == 0 {
        v_first.clone_from(&v);
    } else {
        let v0 = w.v(&format!("{a}v0"));
        let gate = w.matmul(&format!("{a}v2"), &w.matmul(&format!("{a}v1"), &xv));
        for j in 0..c {
            v[j] += (v_first[j] - v[j]) * sigmoid(gate[j] + v0[j]);
        }
    }
    // WKV per head: S = S diag(decay) + (S a) b^T + v k^T, y = S r, with a = -kk, b = kk * lr.
    let mut y = vec![0.0; c];
    for hh in 0..h {
        let s = &mut wkv[hh * N * N..(hh + 1) * N * N];
        let o = hh * N;
        for ii in 0..N {
            let sa: f64 = (0..N).map(|j| s[ii * N + j] * -kk[o + j]).sum();
            for j in 0..N {
                let val = &mut s[ii * N + j];
                *val = *val * decay[o + j] + sa * kk[o + j] * lr[o + j] + v[o + ii] * k[o + j];
            }
            y[o + ii] = (0..N).map(|j| s[ii * N + j] * r[o + j]).sum();
        }
    }
    let (lw, lb) = (w.v(&format!("{a}ln_x.weight")), w.v(&format!("{a}ln_x.bias")));
    let mut out = vec![0.0; c];
    for hh in 0..h {
        let o = hh * N;
        let seg = &y[o..o + N];
        let mean = seg.iter().sum::<f64>() / N as f64;
        let var = seg.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / N as f64;
        let bonus: f64 = (0..N).map(|j| r[o + j] * k[o + j] * r_k[o + j]).sum();
        for j in 0..N {
            let gn = (seg[j] - mean) / (var + 64e-5).sqrt() * lw[o + j] + lb[o + j];
            out[o + j] = (gn + bonus * v[o + j]) * g[o + j];
        }
    }
    let att = w.linear(&format!("{a}output.weight"), &out);
    for j in 0..c {
        x[j] += att[j];
    }
    // Channel mix.
    let f = format!("blocks.{i}.ffn.");
    let xb = layer_norm(x, &w.v(&format!("{b}ln2.weight")), &w.v(&format!("{b}ln2.bias")), 1e-5);
    let fx_k = w.v(&format!("{f}x_k"));
    let kx: Vec<f64> = (0..c).map(|j| xb[j] + (shift[1][j] - xb[j]) * fx_k[j]).collect();
    shift[1] = xb;
    let hid: Vec<f64> = w.linear(&format!("{f}key.weight"), &kx).iter().map(|z| z.max(0.0).powi(2)).collect();
    let ffn = w.linear(&format!("{f}value.weight"), &hid);
    for j in 0..c {
        x[j] += ffn[j];
    }
}

fn width(emb: &StateDict) -> usize {
    emb.get("rwkv.blocks.0.att.r_k").unwrap().data.len()
}

fn layers(sd: &StateDict, prefix: &str) -> usize {
    (0..usize::MAX).take_while(|i| sd.get(&format!("{prefix}blocks.{i}.ln1.weight")).is_some()).count()
}

/// Runs `tokens` through the embedder blocks of `state` (its layer count) from `state`;
/// returns the residual stream `x` after the last of them, for every token.
pub fn residuals(emb: &StateDict, tokens: &[u32], state: &mut RefState) -> Vec<Vec<f64>> {
    let w = W { sd: emb, p: "rwkv.".into() };
    let c = width(emb);
    let table = w.v("emb.weight");
    let (ln0w, ln0b) = (w.v("blocks.0.ln0.weight"), w.v("blocks.0.ln0.bias"));
    let mut outs = Vec::new();
    for &t in tokens {
        let row = &table[t as usize * c..(t as usize + 1) * c];
        let mut x = layer_norm(row, &ln0w, &ln0b, 1e-5);
        let mut v_first = Vec::new();
        for l in 0..state.wkv.len() {
            block(&w, l, &mut x, &mut state.shift[l], &mut state.wkv[l], &mut v_first);
        }
        outs.push(x);
    }
    outs
}

/// Runs `tokens` through the embedder from `state`; returns `ln_out(x)` of every token.
pub fn forward(emb: &StateDict, tokens: &[u32], state: &mut RefState) -> Vec<Vec<f64>> {
    let w = W { sd: emb, p: "rwkv.".into() };
    let (low, lob) = (w.v("ln_out.weight"), w.v("ln_out.bias"));
    residuals(emb, tokens, state).iter().map(|x| layer_norm(x, &low, &lob, 1e-5)).collect()
}

/// The hidden state after block `layer` (1-based; the residual stream, no norm) of every token
/// of `tokens`, from the zero state.
pub fn hidden(emb: &StateDict, tokens: &[u32], layer: usize) -> Vec<Vec<f64>> {
    residuals(emb, tokens, &mut RefState::zeros(layer, width(emb)))
}

/// The official embedding: `retr_head(mean` of `ln_out` hidden states at EOS positions).
pub fn embed(emb: &StateDict, tokens: &[u32]) -> Vec<f64> {
    let c = width(emb);
    let mut st = RefState::zeros(layers(emb, "rwkv."), c);
    let hs = forward(emb, tokens, &mut st);
    let eos: Vec<&Vec<f64>> = tokens.iter().zip(&hs).filter(|(t, _)| **t == EOS).map(|(_, h)| h).collect();
    let pooled: Vec<f64> = (0..c).map(|j| eos.iter().map(|h| h[j]).sum::<f64>() / eos.len() as f64).collect();
    let w = W { sd: emb, p: "head.retr_head.".into() };
    let hid: Vec<f64> = w.linear("fc1.weight", &pooled).iter().map(|z| z.max(0.0)).collect();
    let out: Vec<f64> = w.linear("fc2.weight", &hid).iter().zip(&pooled).map(|(a, b)| a + b).collect();
    layer_norm(&out, &w.v("norm.weight"), &w.v("norm.bias"), 1e-5)
}

/// Reranker logit from the embedder's WKV states (all layers).
pub fn rerank(rr: &StateDict, wkv: &[Vec<f64>]) -> f64 {
    let w = W { sd: rr, p: "reranker.".into() };
    let n = layers(rr, "reranker.");
    let idx: Vec<usize> = match rr.ints.get("reranker_layer_idx") {
        Some(v) => v.iter().map(|&i| i as usize).collect(),
        None => (0..n).collect(),
    };
    let token = if w.has("emb.weight") { w.v("emb.weight") } else { w.v("token.weight") };
    let c = token.len();
    let mut x = layer_norm(&token, &w.v("blocks.0.ln0.weight"), &w.v("blocks.0.ln0.bias"), 1e-5);
    let mut v_first = Vec::new();
    for (i, &l) in idx.iter().enumerate() {
        let mut shift = [vec![0.0; c], vec![0.0; c]];
        let mut state = wkv[l].clone();
        block(&w, i, &mut x, &mut shift, &mut state, &mut v_first);
    }
    let x = layer_norm(&x, &w.v("ln_out.weight"), &w.v("ln_out.bias"), 1e-5);
    let b0 = w.v("head.0.bias");
    let h: Vec<f64> = w.linear("head.0.weight", &x).iter().zip(&b0).map(|(a, b)| (a + b).tanh()).collect();
    w.linear("head.2.weight", &h)[0]
}

/// Online logit: the whole sequence from zero state.
pub fn online_logit(emb: &StateDict, rr: &StateDict, tokens: &[u32]) -> f64 {
    let mut st = RefState::zeros(layers(emb, "rwkv."), width(emb));
    forward(emb, tokens, &mut st);
    rerank(rr, &st.wkv)
}

/// Offline logit: document tokens, then query tokens from that state.
pub fn offline_logit(emb: &StateDict, rr: &StateDict, doc: &[u32], query: &[u32]) -> f64 {
    let mut st = RefState::zeros(layers(emb, "rwkv."), width(emb));
    forward(emb, doc, &mut st);
    forward(emb, query, &mut st);
    rerank(rr, &st.wkv)
}
