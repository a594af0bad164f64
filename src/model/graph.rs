//! Emits the RWKV-7 inference graphs as ONNX models.
//!
//! One graph shape serves every use: the first `layers` embedder blocks run over a right-padded
//! batch `x` `[N, T, C]` (token embeddings, `ln0` already applied) starting from the given
//! per-layer states, and return the states after each sequence's last real token. A tail then
//! turns the result into either the retrieval embedding or the reranker logit:
//!
//! - [`Tail::Embedding`]: `retr_head(ln_out(x_last))` — the official embedding of a text ending
//!   in its single EOS token.
//! - [`Tail::Rerank`]: the reranker blocks, each running the learned token from the WKV state of
//!   its selected embedder layer, then `ln_out` and the tanh head.
//!
//! Inputs: `x`, `lengths` `[N]` (real tokens per row, >= 1), `last_index` `[N]` (`n*T + lengths[n]-1`),
//! and for each layer `l`: `att_shift_l`, `ffn_shift_l` `[N, C]`, `wkv_l` `[N, H, 64, 64]`.
//! Outputs: `att_shift_out_l`, `ffn_shift_out_l`, `wkv_out_l`, then `embedding` `[N, C]` or `logits` `[N]`.

use super::onnx::{Attr, Dim, ElemType, Graph};
use super::weights::{BlockWeights, EmbedderWeights, RerankerWeights, HEAD_SIZE};
use super::wkv::{DOMAIN, OP_NAME};

/// What the graph computes after the embedder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The retrieval embedding of the last token.
    Embedding,
    /// The reranker logit from the WKV states.
    Rerank,
}

/// GroupNorm epsilon of the time-mix output (`1e-5 * head_size_divisor^2` with divisor 8).
const LN_X_EPS: f32 = 64e-5;
/// `exp(-0.5)`: decay = `exp(-exp(-0.5) * sigmoid(z))`.
const DECAY_SCALE: f32 = 0.606_530_66;

struct Builder<'g> {
    g: &'g mut Graph,
    c: usize,
    heads: usize,
    one: String,
    neg_decay: String,
    eps: String,
    shape_heads: String,
    shape_flat: String,
    shape_rows: String,
    axis_last: String,
}

impl<'g> Builder<'g> {
    fn new(g: &'g mut Graph, c: usize, heads: usize) -> Self {
        let one = g.scalar("one", 1.0);
        let neg_decay = g.scalar("neg_decay", -DECAY_SCALE);
        let eps = g.scalar("l2_eps", 1e-12);
        let shape_heads = g.ints("shape_heads", &[0, 0, heads as i64, HEAD_SIZE as i64]);
        let shape_flat = g.ints("shape_flat", &[0, 0, c as i64]);
        let shape_rows = g.ints("shape_rows", &[-1, c as i64]);
        let axis_last = g.ints("axis_last", &[-1]);
        Self { g, c, heads, one, neg_decay, eps, shape_heads, shape_flat, shape_rows, axis_last }
    }

    fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.g.node(op, inputs, &[])
    }

    fn layer_norm(&mut self, x: &str, (w, b): &(Vec<f32>, Vec<f32>), eps: f32) -> String {
        let c = w.len();
        let w = self.g.weight("ln_w", &[c], w);
        let b = self.g.weight("ln_b", &[c], b);
        self.g.node("LayerNormalization", &[x, &w, &b], &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))])
    }

    fn matmul(&mut self, x: &str, w: &[f32], rows: usize, cols: usize) -> String {
        let w = self.g.weight("w", &[rows, cols], w);
        self.op("MatMul", &[x, &w])
    }

    fn vecw(&mut self, v: &[f32]) -> String {
        self.g.weight("v", &[v.len()], v)
    }

    /// `x + (prev - x) * mix`, the token-shift interpolation.
    fn lerp(&mut self, x: &str, xx: &str, mix: &[f32]) -> String {
        let m = self.vecw(mix);
        let t = self.op("Mul", &[xx, &m]);
        self.op("Add", &[x, &t])
    }

    /// `[N,T,C]` shifted right by one token, with `prev` `[N,C]` in front.
    fn shifted(&mut self, x: &str, prev: &str) -> String {
        let ax1 = self.g.ints("ax1", &[1]);
        let p = self.op("Unsqueeze", &[prev, &ax1]);
        let zero = self.g.ints("start", &[0]);
        let end = self.g.ints("end", &[-1]);
        let head = self.op("Slice", &[x, &zero, &end, &ax1]);
        self.g.node("Concat", &[&p, &head], &[("axis", Attr::Int(1))])
    }

    /// Rows of `x` `[N,T,C]` at `last_index` -> `[N, C]`.
    fn last_rows(&mut self, x: &str, last_index: &str) -> String {
        let shape_rows = self.shape_rows.clone();
        let flat = self.op("Reshape", &[x, &shape_rows]);
        self.g.node("Gather", &[&flat, last_index], &[("axis", Attr::Int(0))])
    }

    /// One block's time mix. Returns (output to add to the residual, ln1 output, new WKV state, v).
    #[allow(clippy::too_many_arguments)]
    fn time_mix(
        &mut self,
        blk: &BlockWeights,
        x: &str,
        prev: Option<&str>,
        state: &str,
        lengths: Option<&str>,
        v_first: Option<&str>,
    ) -> (String, String, String, String) {
        let c = self.c;
        let xa = self.layer_norm(x, &blk.ln1, 1e-5);
        // Token shift: the reranker's single token starts from a zero previous value.
        let xx = match prev {
            Some(p) => {
                let s = self.shifted(&xa, p);
                self.op("Sub", &[&s, &xa])
            }
            None => self.op("Neg", &[&xa]),
        };
        let [mr, mw, mk, mv, ma, mg] = &blk.mix;
        let xr = self.lerp(&xa, &xx, mr);
        let xw = self.lerp(&xa, &xx, mw);
        let xk = self.lerp(&xa, &xx, mk);
        let xv = self.lerp(&xa, &xx, mv);
        let xa_ = self.lerp(&xa, &xx, ma);
        let xg = self.lerp(&xa, &xx, mg);

        let r = self.matmul(&xr, &blk.rkvo[0], c, c);
        let k = self.matmul(&xk, &blk.rkvo[1], c, c);
        let mut v = self.matmul(&xv, &blk.rkvo[2], c, c);

        // decay = exp(-e^-0.5 * sigmoid(w0 + tanh(xw @ w1) @ w2))
        let (w0, w1, w2) = &blk.w;
        let dw = w1.len() / c;
        let t = self.matmul(&xw, w1, c, dw);
        let t = self.op("Tanh", &[&t]);
        let t = self.matmul(&t, w2, dw, c);
        let w0 = self.vecw(w0);
        let z = self.op("Add", &[&t, &w0]);
        let s = self.op("Sigmoid", &[&z]);
        let nd = self.neg_decay.clone();
        let e = self.op("Mul", &[&s, &nd]);
        let decay = self.op("Exp", &[&e]);

        // a = sigmoid(a0 + (xa @ a1) @ a2)
        let (a0, a1, a2) = &blk.a;
        let da = a1.len() / c;
        let t = self.matmul(&xa_, a1, c, da);
        let t = self.matmul(&t, a2, da, c);
        let a0 = self.vecw(a0);
        let t = self.op("Add", &[&t, &a0]);
        let a = self.op("Sigmoid", &[&t]);

        // g = sigmoid(xg @ g1) @ g2
        let (g1, g2) = &blk.g;
        let dg = g1.len() / c;
        let t = self.matmul(&xg, g1, c, dg);
        let t = self.op("Sigmoid", &[&t]);
        let g = self.matmul(&t, g2, dg, c);

        // kk = normalize(k * k_k) per head (F.normalize: x / max(|x|, 1e-12))
        let kkw = self.vecw(&blk.k_k);
        let kk = self.op("Mul", &[&k, &kkw]);
        let sh = self.shape_heads.clone();
        let kk4 = self.op("Reshape", &[&kk, &sh]);
        let sq = self.op("Mul", &[&kk4, &kk4]);
        let ax = self.axis_last.clone();
        let ss = self.g.node("ReduceSum", &[&sq, &ax], &[("keepdims", Attr::Int(1))]);
        let norm = self.op("Sqrt", &[&ss]);
        let eps = self.eps.clone();
        let norm = self.op("Max", &[&norm, &eps]);
        let kk4 = self.op("Div", &[&kk4, &norm]);
        let sf = self.shape_flat.clone();
        let kk = self.op("Reshape", &[&kk4, &sf]);

        // k = k * (1 + (a - 1) * k_a)
        let one = self.one.clone();
        let am1 = self.op("Sub", &[&a, &one]);
        let ka = self.vecw(&blk.k_a);
        let t = self.op("Mul", &[&am1, &ka]);
        let t = self.op("Add", &[&t, &one]);
        let k = self.op("Mul", &[&k, &t]);

        // Value residual: layer 0 defines v_first, later layers mix towards it.
        let v_first_out = match (&blk.v, v_first) {
            (Some((v0, v1, v2)), Some(vf)) => {
                let dv = v1.len() / c;
                let t = self.matmul(&xv, v1, c, dv);
                let t = self.matmul(&t, v2, dv, c);
                let v0 = self.vecw(v0);
                let t = self.op("Add", &[&t, &v0]);
                let gate = self.op("Sigmoid", &[&t]);
                let d = self.op("Sub", &[vf, &v]);
                let d = self.op("Mul", &[&d, &gate]);
                v = self.op("Add", &[&v, &d]);
                vf.to_string()
            }
            _ => v.clone(),
        };

        let neg_kk = self.op("Neg", &[&kk]);
        let b = self.op("Mul", &[&kk, &a]);
        let mut wkv_in: Vec<&str> = vec![&r, &decay, &k, &v, &neg_kk, &b, state];
        if let Some(l) = lengths {
            wkv_in.push(l);
        }
        let outs = self.g.node_multi(DOMAIN, OP_NAME, &wkv_in, 2);
        let (y, new_state) = (outs[0].clone(), outs[1].clone());

        // GroupNorm with one group per head, then the per-channel affine.
        let y4 = self.op("Reshape", &[&y, &sh]);
        let ones = self.g.weight("gn_scale", &[HEAD_SIZE], &[1.0; HEAD_SIZE]);
        let zeros = self.g.weight("gn_bias", &[HEAD_SIZE], &[0.0; HEAD_SIZE]);
        let y4 = self.g.node(
            "LayerNormalization",
            &[&y4, &ones, &zeros],
            &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(LN_X_EPS))],
        );
        let y = self.op("Reshape", &[&y4, &sf]);
        let lw = self.vecw(&blk.ln_x.0);
        let lb = self.vecw(&blk.ln_x.1);
        let y = self.op("Mul", &[&y, &lw]);
        let y = self.op("Add", &[&y, &lb]);

        // Bonus: y += sum_head(r * k * r_k) * v
        let rk = self.op("Mul", &[&r, &k]);
        let rk4 = self.op("Reshape", &[&rk, &sh]);
        let heads = self.heads;
        let rkw = self.g.weight("r_k", &[heads, HEAD_SIZE], &blk.r_k);
        let rk4 = self.op("Mul", &[&rk4, &rkw]);
        let rs = self.g.node("ReduceSum", &[&rk4, &ax], &[("keepdims", Attr::Int(1))]);
        let v4 = self.op("Reshape", &[&v, &sh]);
        let bonus = self.op("Mul", &[&rs, &v4]);
        let bonus = self.op("Reshape", &[&bonus, &sf]);
        let y = self.op("Add", &[&y, &bonus]);

        let y = self.op("Mul", &[&y, &g]);
        let out = self.matmul(&y, &blk.rkvo[3], c, c);
        (out, xa, new_state, v_first_out)
    }

    /// One block's channel mix. Returns (output to add to the residual, ln2 output).
    fn channel_mix(&mut self, blk: &BlockWeights, x: &str, prev: Option<&str>) -> (String, String) {
        let xb = self.layer_norm(x, &blk.ln2, 1e-5);
        let xx = match prev {
            Some(p) => {
                let s = self.shifted(&xb, p);
                self.op("Sub", &[&s, &xb])
            }
            None => self.op("Neg", &[&xb]),
        };
        let kx = self.lerp(&xb, &xx, &blk.ffn_x_k);
        let f = blk.ffn_key.len() / self.c;
        let h = self.matmul(&kx, &blk.ffn_key, self.c, f);
        let h = self.op("Relu", &[&h]);
        let h = self.op("Mul", &[&h, &h]);
        let out = self.matmul(&h, &blk.ffn_value, f, self.c);
        (out, xb)
    }
}

/// Builds the ONNX model bytes for the first `layers` embedder blocks plus `tail`.
///
/// `reranker` is required for [`Tail::Rerank`]; `layers` must then exceed its highest selected layer.
pub fn build(emb: &EmbedderWeights, reranker: Option<&RerankerWeights>, layers: usize, tail: Tail) -> Vec<u8> {
    let cfg = &emb.config;
    let (c, h) = (cfg.width, cfg.heads);
    let mut g = Graph::new();
    let x = g.input("x", ElemType::F32, &[Dim::Named("batch"), Dim::Named("tokens"), Dim::Fixed(c as i64)]);
    let lengths = g.input("lengths", ElemType::I64, &[Dim::Named("batch")]);
    let last_index = g.input("last_index", ElemType::I64, &[Dim::Named("batch")]);
    let row = [Dim::Named("batch"), Dim::Fixed(c as i64)];
    let st = [Dim::Named("batch"), Dim::Fixed(h as i64), Dim::Fixed(HEAD_SIZE as i64), Dim::Fixed(HEAD_SIZE as i64)];
    let mut state_in = Vec::new();
    for l in 0..layers {
        let a = g.input(&format!("att_shift_{l}"), ElemType::F32, &row);
        let f = g.input(&format!("ffn_shift_{l}"), ElemType::F32, &row);
        let w = g.input(&format!("wkv_{l}"), ElemType::F32, &st);
        state_in.push((a, f, w));
    }

    let mut b = Builder::new(&mut g, c, h);
    let mut x = x;
    let mut v_first: Option<String> = None;
    let mut wkv_out = Vec::new();
    let mut outs = Vec::new();
    for (l, blk) in emb.blocks.iter().take(layers).enumerate() {
        let (a_in, f_in, w_in) = &state_in[l];
        let (att, xa, wkv, vf) = b.time_mix(blk, &x, Some(a_in), w_in, Some(&lengths), v_first.as_deref());
        v_first = Some(vf);
        x = b.op("Add", &[&x, &att]);
        let (ffn, xb) = b.channel_mix(blk, &x, Some(f_in));
        x = b.op("Add", &[&x, &ffn]);
        let a_out = b.last_rows(&xa, &last_index);
        let f_out = b.last_rows(&xb, &last_index);
        outs.push((a_out, f_out, wkv.clone()));
        wkv_out.push(wkv);
    }

    let tail_out = match (tail, reranker) {
        (Tail::Embedding, _) => {
            let last = b.last_rows(&x, &last_index);
            let hid = b.layer_norm(&last, &emb.ln_out, 1e-5);
            let head = &emb.retr_head;
            let t = b.matmul(&hid, &head.fc1, c, c);
            let t = b.op("Relu", &[&t]);
            let t = b.matmul(&t, &head.fc2, c, c);
            let t = b.op("Add", &[&t, &hid]);
            Some(("embedding", b.layer_norm(&t, &head.norm, 1e-5)))
        }
        (Tail::Rerank, Some(rr)) => {
            // The learned token, identical for every row: broadcast it to [N, 1, C].
            let tok = b.g.weight("rerank_token", &[1, 1, c], &rr.token);
            let n = b.op("Shape", &[&lengths]);
            let one_c = b.g.ints("one_c", &[1, c as i64]);
            let shape = b.g.node("Concat", &[&n, &one_c], &[("axis", Attr::Int(0))]);
            let mut y = b.op("Expand", &[&tok, &shape]);
            let mut vf: Option<String> = None;
            for (i, blk) in rr.blocks.iter().enumerate() {
                let state = &wkv_out[rr.layer_idx[i]];
                let (att, _, _, v) = b.time_mix(blk, &y, None, state, None, vf.as_deref());
                vf = Some(v);
                y = b.op("Add", &[&y, &att]);
                let (ffn, _) = b.channel_mix(blk, &y, None);
                y = b.op("Add", &[&y, &ffn]);
            }
            let y = b.layer_norm(&y, &rr.ln_out, 1e-5);
            let (w0, b0, w2) = &rr.head;
            let t = b.matmul(&y, w0, c, c);
            let bias = b.vecw(b0);
            let t = b.op("Add", &[&t, &bias]);
            let t = b.op("Tanh", &[&t]);
            let t = b.matmul(&t, w2, c, 1);
            let flat = b.g.ints("flat", &[-1]);
            Some(("logits", b.op("Reshape", &[&t, &flat])))
        }
        (Tail::Rerank, None) => None,
    };

    for (l, (a, f, w)) in outs.iter().enumerate() {
        g.output(a, &format!("att_shift_out_{l}"), ElemType::F32, &row);
        g.output(f, &format!("ffn_shift_out_{l}"), ElemType::F32, &row);
        g.output(w, &format!("wkv_out_{l}"), ElemType::F32, &st);
    }
    match tail_out {
        Some(("embedding", e)) => g.output(&e, "embedding", ElemType::F32, &row),
        Some((_, lg)) => g.output(&lg, "logits", ElemType::F32, &[Dim::Named("batch")]),
        None => {}
    }
    g.into_model(17, &[DOMAIN])
}
