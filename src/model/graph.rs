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
//! - [`Tail::Hidden`] ([`build_hidden`]): weighted sums over tokens of the residual stream after
//!   chosen layers, for layer-wise sentence embeddings (`rwkvdb eval layers`).
//!
//! Inputs: `x`, `lengths` `[N]` (real tokens per row, >= 1), `last_index` `[N]` (`n*T + lengths[n]-1`),
//! and for each layer `l`: `att_shift_l`, `ffn_shift_l` `[N, C]`, `wkv_l` `[N, H, 64, 64]`.
//! Outputs: `att_shift_out_l`, `ffn_shift_out_l`, `wkv_out_l`, then `embedding` `[N, C]` or `logits` `[N]`.

use std::collections::{BTreeSet, HashSet};

use super::bf16::{self, MATMUL_BF16};
use super::onnx::{Attr, Dim, ElemType, Graph};
use super::prepared::{block_prefix, Elem, Part, PreparedModel, BF16_SUFFIX};
use super::quant;
use super::quant_ops::{DEQUANTIZE_ROWS, QUANTIZE_ROWS};
use super::weights::HEAD_SIZE;
use super::wkv::{DOMAIN, OP_NAME};
use super::ModelError;

/// Domain of ONNX Runtime's contrib operators (`MatMulNBits`).
const MS_DOMAIN: &str = "com.microsoft";

/// What the graph computes after the embedder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// The retrieval embedding of the last token.
    Embedding,
    /// The reranker logit from the WKV states.
    Rerank,
    /// Pooled hidden states of chosen layers (see [`build_hidden`]).
    Hidden,
}

/// `GroupNorm` epsilon of the time-mix output (`1e-5 * head_size_divisor^2` with divisor 8).
const LN_X_EPS: f32 = 64e-5;
/// `exp(-0.5)`: decay = `exp(-exp(-0.5) * sigmoid(z))`.
const DECAY_SCALE: f32 = 0.606_530_66;

struct Builder<'g> {
    g: &'g mut Graph,
    pm: &'g PreparedModel,
    declared: HashSet<String>,
    one: String,
    neg_decay: String,
    eps: String,
    shape_heads: String,
    shape_flat: String,
    shape_rows: String,
    axis_last: String,
}

/// The WKV state a time mix starts from, and whether its final value is read afterwards (a
/// graph output, or the reranker's input).
struct WkvState<'a> {
    input: &'a str,
    read_after: bool,
}

impl<'g> Builder<'g> {
    fn new(g: &'g mut Graph, pm: &'g PreparedModel) -> Self {
        let (c, heads) = (pm.meta().config.width, pm.meta().config.heads);
        let one = g.scalar("one", 1.0);
        let neg_decay = g.scalar("neg_decay", -DECAY_SCALE);
        let eps = g.scalar("l2_eps", 1e-12);
        let shape_heads = g.ints("shape_heads", &[0, 0, heads as i64, HEAD_SIZE as i64]);
        let shape_flat = g.ints("shape_flat", &[0, 0, c as i64]);
        let shape_rows = g.ints("shape_rows", &[-1, c as i64]);
        let axis_last = g.ints("axis_last", &[-1]);
        Self { g, pm, declared: HashSet::new(), one, neg_decay, eps, shape_heads, shape_flat, shape_rows, axis_last }
    }

    /// Declares the prepared tensor `name` as an external initializer (once) and returns its name.
    fn w(&mut self, name: &str) -> Result<String, ModelError> {
        let t = self.pm.info(name).ok_or_else(|| ModelError::PreparedWeights(format!("no tensor {name}")))?;
        if self.declared.insert(name.to_string()) {
            let elem = match t.elem {
                Elem::F32 => ElemType::F32,
                Elem::U8 => ElemType::U8,
                Elem::I8 => ElemType::I8,
                Elem::Bf16 => ElemType::Bf16,
            };
            self.g.external(name, elem, &t.dims, self.pm.absolute_offset(t), t.len);
        }
        Ok(name.to_string())
    }

    fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.g.node(op, inputs, &[])
    }

    /// `LayerNorm` with the prepared affine `{name}.w`, `{name}.b`.
    fn layer_norm(&mut self, x: &str, name: &str, eps: f32) -> Result<String, ModelError> {
        let w = self.w(&format!("{name}.w"))?;
        let b = self.w(&format!("{name}.b"))?;
        Ok(self.g.node("LayerNormalization", &[x, &w, &b], &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))]))
    }

    /// `x @ W` for the prepared matrix `name`: `MatMul` on f32 weights, an integer GEMM on int8
    /// ones ([`Self::int8_matmul`]), `MatMulNBits` on 4-bit blocks.
    fn matmul(&mut self, x: &str, name: &str) -> Result<String, ModelError> {
        if self.pm.info(name).is_some() {
            let w = self.w(name)?;
            return Ok(self.op("MatMul", &[x, &w]));
        }
        let tiled = format!("{name}{BF16_SUFFIX}");
        if let Some(t) = self.pm.info(&tiled) {
            let (dims, w) = (t.dims.clone(), self.w(&tiled)?);
            return Ok(self.bf16_matmul(x, &w, &dims));
        }
        let packed = format!("{name}.q");
        let q = self
            .pm
            .info(&packed)
            .and_then(|t| t.quant)
            .ok_or_else(|| ModelError::PreparedWeights(format!("no matrix {name}")))?;
        let b = self.w(&packed)?;
        let s = self.w(&format!("{name}.scales"))?;
        if q.bits == 8 {
            return Ok(self.int8_matmul(x, &b, &s));
        }
        let attrs = [
            ("K", Attr::Int(q.k as i64)),
            ("N", Attr::Int(q.n as i64)),
            ("bits", Attr::Int(i64::from(q.bits))),
            ("block_size", Attr::Int(q.block as i64)),
            ("accuracy_level", Attr::Int(quant::ACCURACY_LEVEL)),
        ];
        Ok(self.g.node_in(MS_DOMAIN, "MatMulNBits", &[x, &b, &s], &attrs))
    }

    /// `x @ W` with bf16 `W` in the tile layout `[N/16, K/32, 16, 16, 2]`: the AMX operator where
    /// the CPU has it; elsewhere `Cast` to f32 and undo the tile layout (`Transpose` to
    /// `[K/32, 16, 2, N/16, 16]` = `[K, N]` row-major, `Reshape`), which ONNX Runtime folds into
    /// one f32 matrix at session creation, then f32 `MatMul`.
    fn bf16_matmul(&mut self, x: &str, w: &str, dims: &[usize]) -> String {
        if bf16::amx_available() {
            return self.g.node_in(DOMAIN, MATMUL_BF16, &[x, w], &[]);
        }
        let (k, n) = (dims[1] * 32, dims[0] * 16);
        let wf = self.g.node("Cast", &[w], &[("to", Attr::Int(ElemType::F32 as i64))]);
        let wt = self.g.node("Transpose", &[&wf], &[("perm", Attr::Ints(vec![1, 2, 4, 0, 3]))]);
        let shape = self.g.ints("shape_kn", &[k as i64, n as i64]);
        let wkn = self.op("Reshape", &[&wt, &shape]);
        self.op("MatMul", &[x, &wkn])
    }

    /// `x @ W` with int8 `W` (`b`, per-column scales `s`): each row of `x` is quantized to
    /// uint8 with its own scale (`rwkvdb:QuantizeRows`, zero point 128), multiplied in integers
    /// (`MatMulInteger`: VNNI / AMX kernels), then rescaled by row and column scales
    /// (`rwkvdb:DequantizeRows`). Per-row
    /// scales keep a row's result independent of the rows it is batched with.
    fn int8_matmul(&mut self, x: &str, b: &str, s: &str) -> String {
        let outs = self.g.node_multi(DOMAIN, QUANTIZE_ROWS, &[x], 2, &[]);
        let (xq, row_scale) = (&outs[0], &outs[1]);
        let zp = self.g.bytes_initializer("zp", ElemType::U8, &[], &[128]);
        let yi = self.op("MatMulInteger", &[xq, b, &zp]);
        self.g.node_in(DOMAIN, DEQUANTIZE_ROWS, &[&yi, s, row_scale], &[])
    }

    /// `x + (prev - x) * mix`, the token-shift interpolation.
    fn lerp(&mut self, x: &str, xx: &str, mix: &str) -> Result<String, ModelError> {
        let m = self.w(mix)?;
        let t = self.op("Mul", &[xx, &m]);
        Ok(self.op("Add", &[x, &t]))
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

    /// One block's time mix (block weights under the name prefix `p`). Returns (output to add
    /// to the residual, ln1 output, new WKV state, `v_first`).
    fn time_mix(
        &mut self,
        p: &str,
        x: &str,
        prev: Option<&str>,
        state: WkvState<'_>,
        lengths: Option<&str>,
        v_first: Option<&str>,
    ) -> Result<(String, String, String, String), ModelError> {
        let xa = self.layer_norm(x, &format!("{p}ln1"), 1e-5)?;
        // Token shift: the reranker's single token starts from a zero previous value.
        let xx = match prev {
            Some(prev) => {
                let s = self.shifted(&xa, prev);
                self.op("Sub", &[&s, &xa])
            }
            None => self.op("Neg", &[&xa]),
        };
        let [xr, xw, xk, xv, xa_, xg] =
            ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"].map(|m| self.lerp(&xa, &xx, &format!("{p}{m}")));
        let (xr, xw, xk, xv, xa_, xg) = (xr?, xw?, xk?, xv?, xa_?, xg?);

        let r = self.matmul(&xr, &format!("{p}att.r"))?;
        let k = self.matmul(&xk, &format!("{p}att.k"))?;
        let mut v = self.matmul(&xv, &format!("{p}att.v"))?;

        // decay = exp(-e^-0.5 * sigmoid(w0 + tanh(xw @ w1) @ w2))
        let t = self.matmul(&xw, &format!("{p}w1"))?;
        let t = self.op("Tanh", &[&t]);
        let t = self.matmul(&t, &format!("{p}w2"))?;
        let w0 = self.w(&format!("{p}w0"))?;
        let z = self.op("Add", &[&t, &w0]);
        let s = self.op("Sigmoid", &[&z]);
        let nd = self.neg_decay.clone();
        let e = self.op("Mul", &[&s, &nd]);
        let decay = self.op("Exp", &[&e]);

        // a = sigmoid(a0 + (xa @ a1) @ a2)
        let t = self.matmul(&xa_, &format!("{p}a1"))?;
        let t = self.matmul(&t, &format!("{p}a2"))?;
        let a0 = self.w(&format!("{p}a0"))?;
        let t = self.op("Add", &[&t, &a0]);
        let a = self.op("Sigmoid", &[&t]);

        // g = sigmoid(xg @ g1) @ g2
        let t = self.matmul(&xg, &format!("{p}g1"))?;
        let t = self.op("Sigmoid", &[&t]);
        let g = self.matmul(&t, &format!("{p}g2"))?;

        // kk = normalize(k * k_k) per head (F.normalize: x / max(|x|, 1e-12))
        let kkw = self.w(&format!("{p}k_k"))?;
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
        let ka = self.w(&format!("{p}k_a"))?;
        let t = self.op("Mul", &[&am1, &ka]);
        let t = self.op("Add", &[&t, &one]);
        let k = self.op("Mul", &[&k, &t]);

        // Value residual: layer 0 defines v_first, later layers mix towards it.
        let has_v = self.pm.info(&format!("{p}v0")).is_some();
        let v_first_out = match v_first {
            Some(vf) if has_v => {
                let t = self.matmul(&xv, &format!("{p}v1"))?;
                let t = self.matmul(&t, &format!("{p}v2"))?;
                let v0 = self.w(&format!("{p}v0"))?;
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
        let WkvState { input: state, read_after: keep_state } = state;
        let mut wkv_in: Vec<&str> = vec![&r, &decay, &k, &v, &neg_kk, &b, state];
        if let Some(l) = lengths {
            wkv_in.push(l);
        }
        // A state nobody reads is not written out (`state_out = 0`: the operator's second output
        // is then empty), which saves writing ~200 KB per row and layer.
        let outs = self.g.node_multi(DOMAIN, OP_NAME, &wkv_in, 2, &[("state_out", Attr::Int(i64::from(keep_state)))]);
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
        let lw = self.w(&format!("{p}ln_x.w"))?;
        let lb = self.w(&format!("{p}ln_x.b"))?;
        let y = self.op("Mul", &[&y, &lw]);
        let y = self.op("Add", &[&y, &lb]);

        // Bonus: y += sum_head(r * k * r_k) * v
        let rk = self.op("Mul", &[&r, &k]);
        let rk4 = self.op("Reshape", &[&rk, &sh]);
        let rkw = self.w(&format!("{p}r_k"))?;
        let rk4 = self.op("Mul", &[&rk4, &rkw]);
        let rs = self.g.node("ReduceSum", &[&rk4, &ax], &[("keepdims", Attr::Int(1))]);
        let v4 = self.op("Reshape", &[&v, &sh]);
        let bonus = self.op("Mul", &[&rs, &v4]);
        let bonus = self.op("Reshape", &[&bonus, &sf]);
        let y = self.op("Add", &[&y, &bonus]);

        let y = self.op("Mul", &[&y, &g]);
        let out = self.matmul(&y, &format!("{p}att.o"))?;
        Ok((out, xa, new_state, v_first_out))
    }

    /// One block's channel mix. Returns (output to add to the residual, ln2 output).
    fn channel_mix(&mut self, p: &str, x: &str, prev: Option<&str>) -> Result<(String, String), ModelError> {
        let xb = self.layer_norm(x, &format!("{p}ln2"), 1e-5)?;
        let xx = match prev {
            Some(prev) => {
                let s = self.shifted(&xb, prev);
                self.op("Sub", &[&s, &xb])
            }
            None => self.op("Neg", &[&xb]),
        };
        let kx = self.lerp(&xb, &xx, &format!("{p}ffn.x_k"))?;
        let h = self.matmul(&kx, &format!("{p}ffn.key"))?;
        let h = self.op("Relu", &[&h]);
        let h = self.op("Mul", &[&h, &h]);
        let out = self.matmul(&h, &format!("{p}ffn.value"))?;
        Ok((out, xb))
    }
}

/// A graph's input and output names, shared by the emitter and the runtime.
pub mod io {
    /// Token embeddings `[N, T, C]`.
    pub const X: &str = "x";
    /// Real tokens per row `[N]`.
    pub const LENGTHS: &str = "lengths";
    /// Flat index of each row's last real token `[N]`.
    pub const LAST_INDEX: &str = "last_index";
    /// The retrieval embedding output `[N, C]`.
    pub const EMBEDDING: &str = "embedding";
    /// The reranker logit output `[N]`.
    pub const LOGITS: &str = "logits";
    /// Token weights of the hidden-state pools `[N, P, T]` ([`super::build_hidden`]).
    pub const POOL_WEIGHTS: &str = "pool_weights";

    /// Pooled residual stream after layer `l` (1-based) `[N, P, C]`.
    pub fn pooled(l: usize) -> String {
        format!("pooled_{l}")
    }

    /// Time-mix token-shift input of layer `l`.
    pub fn att_shift(l: usize) -> String {
        format!("att_shift_{l}")
    }
    /// Channel-mix token-shift input of layer `l`.
    pub fn ffn_shift(l: usize) -> String {
        format!("ffn_shift_{l}")
    }
    /// WKV state input of layer `l`.
    pub fn wkv(l: usize) -> String {
        format!("wkv_{l}")
    }
    /// Time-mix token-shift output of layer `l`.
    pub fn att_shift_out(l: usize) -> String {
        format!("att_shift_out_{l}")
    }
    /// Channel-mix token-shift output of layer `l`.
    pub fn ffn_shift_out(l: usize) -> String {
        format!("ffn_shift_out_{l}")
    }
    /// WKV state output of layer `l`.
    pub fn wkv_out(l: usize) -> String {
        format!("wkv_out_{l}")
    }
}

/// An emitted graph: the `ModelProto` bytes, its weights referenced by offset into the
/// prepared buffer (see [`super::onnx::EXTERNAL_LOCATION`]).
pub struct GraphBytes {
    /// The `ModelProto`.
    pub bytes: Vec<u8>,
}

/// Whether a graph outputs the per-layer states after its sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum States {
    /// Every layer's `att_shift_out`, `ffn_shift_out` and `wkv_out` (to store a state, or to
    /// carry it into the next chunk).
    Out,
    /// None: for sequences that end in this run and whose states nobody keeps (an offline
    /// rerank's query). The WKV operators do not write states nobody reads, and a rerank graph
    /// skips the channel mix of its last layer, whose output only fed the states.
    Dropped,
}

/// Builds the ONNX model for the first `layers` embedder blocks plus `tail`, referencing the
/// weights of `pm` by name. [`Tail::Rerank`] needs a reranker in `pm` and `layers` above its
/// highest selected layer.
pub fn build(pm: &PreparedModel, layers: usize, tail: Tail, states: States) -> Result<GraphBytes, ModelError> {
    if tail == Tail::Hidden {
        return Err(ModelError::Mismatch("the hidden-state graph is built by build_hidden".into()));
    }
    emit(pm, layers, tail, states, &[])
}

/// Builds the graph of the first `max(taps)` embedder blocks whose outputs, besides the states,
/// are for each layer `l` in `taps` (1-based: the residual stream after block `l`, before any
/// norm) the weighted sums `pooled_l[n, p] = sum_t pool_weights[n, p, t] * x_l[n, t]`. The
/// caller chooses the weights per pool (a mean, a one-hot position), so sums over chunks add up.
pub fn build_hidden(pm: &PreparedModel, taps: &[usize]) -> Result<GraphBytes, ModelError> {
    let layers = pm.meta().config.layers;
    if let Some(l) = taps.iter().find(|&&l| l == 0 || l > layers) {
        return Err(ModelError::Mismatch(format!("layer {l} does not exist: the embedder has layers 1..={layers}")));
    }
    let taps: Vec<usize> = taps.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    emit(pm, taps.last().copied().unwrap_or(0), Tail::Hidden, States::Out, &taps)
}

fn emit(
    pm: &PreparedModel,
    layers: usize,
    tail: Tail,
    states: States,
    taps: &[usize],
) -> Result<GraphBytes, ModelError> {
    let meta = pm.meta();
    let (c, h) = (meta.config.width, meta.config.heads);
    let mut g = Graph::new();
    let x = g.input(io::X, ElemType::F32, &[Dim::Named("batch"), Dim::Named("tokens"), Dim::Fixed(c as i64)]);
    let lengths = g.input(io::LENGTHS, ElemType::I64, &[Dim::Named("batch")]);
    let last_index = g.input(io::LAST_INDEX, ElemType::I64, &[Dim::Named("batch")]);
    let row = [Dim::Named("batch"), Dim::Fixed(c as i64)];
    let st = [Dim::Named("batch"), Dim::Fixed(h as i64), Dim::Fixed(HEAD_SIZE as i64), Dim::Fixed(HEAD_SIZE as i64)];
    let mut state_in = Vec::new();
    for l in 0..layers {
        let a = g.input(&io::att_shift(l), ElemType::F32, &row);
        let f = g.input(&io::ffn_shift(l), ElemType::F32, &row);
        let w = g.input(&io::wkv(l), ElemType::F32, &st);
        state_in.push((a, f, w));
    }

    let mut b = Builder::new(&mut g, pm);
    let mut x = x;
    let mut v_first: Option<String> = None;
    let mut wkv_out = Vec::new();
    let mut outs = Vec::new();
    let mut residuals = Vec::new();
    // Without state outputs, the states the reranker reads are the only ones anyone needs, and
    // the last layer's output (its channel mix) is not needed at all.
    let read_by_tail: Vec<usize> = match tail {
        Tail::Rerank => meta.reranker_layers.clone().unwrap_or_default(),
        _ => Vec::new(),
    };
    for (l, (a_in, f_in, w_in)) in state_in.iter().enumerate() {
        let p = block_prefix(Part::Embedder, l);
        let state = WkvState { input: w_in, read_after: states == States::Out || read_by_tail.contains(&l) };
        let (att, xa, wkv, vf) = b.time_mix(&p, &x, Some(a_in), state, Some(&lengths), v_first.as_deref())?;
        v_first = Some(vf);
        if states == States::Dropped && tail == Tail::Rerank && l + 1 == layers {
            wkv_out.push(wkv);
            break;
        }
        x = b.op("Add", &[&x, &att]);
        let (ffn, xb) = b.channel_mix(&p, &x, Some(f_in))?;
        x = b.op("Add", &[&x, &ffn]);
        let a_out = b.last_rows(&xa, &last_index);
        let f_out = b.last_rows(&xb, &last_index);
        outs.push((a_out, f_out, wkv.clone()));
        wkv_out.push(wkv);
        residuals.push(x.clone());
    }

    let tail_out = match tail {
        Tail::Embedding => {
            let last = b.last_rows(&x, &last_index);
            let hid = b.layer_norm(&last, "ln_out", 1e-5)?;
            let t = b.matmul(&hid, "retr.fc1")?;
            let t = b.op("Relu", &[&t]);
            let t = b.matmul(&t, "retr.fc2")?;
            let t = b.op("Add", &[&t, &hid]);
            b.layer_norm(&t, "retr.norm", 1e-5)?
        }
        Tail::Rerank => {
            let layer_idx = meta
                .reranker_layers
                .clone()
                .ok_or_else(|| ModelError::PreparedWeights("the prepared model has no reranker".into()))?;
            // The learned token, identical for every row: broadcast it to [N, 1, C].
            let tok = b.w("rr.token")?;
            let n = b.op("Shape", &[&lengths]);
            let one_c = b.g.ints("one_c", &[1, c as i64]);
            let shape = b.g.node("Concat", &[&n, &one_c], &[("axis", Attr::Int(0))]);
            let mut y = b.op("Expand", &[&tok, &shape]);
            let mut vf: Option<String> = None;
            for (i, &layer) in layer_idx.iter().enumerate() {
                let state = wkv_out.get(layer).cloned().ok_or_else(|| {
                    ModelError::Mismatch(format!("the reranker reads layer {layer} but the graph has {layers} layers"))
                })?;
                let p = block_prefix(Part::Reranker, i);
                let state = WkvState { input: &state, read_after: false };
                let (att, _, _, v) = b.time_mix(&p, &y, None, state, None, vf.as_deref())?;
                vf = Some(v);
                y = b.op("Add", &[&y, &att]);
                let (ffn, _) = b.channel_mix(&p, &y, None)?;
                y = b.op("Add", &[&y, &ffn]);
            }
            let y = b.layer_norm(&y, "rr.ln_out", 1e-5)?;
            let t = b.matmul(&y, "rr.head.w0")?;
            let bias = b.w("rr.head.b0")?;
            let t = b.op("Add", &[&t, &bias]);
            let t = b.op("Tanh", &[&t]);
            let t = b.matmul(&t, "rr.head.w2")?;
            let flat = b.g.ints("flat", &[-1]);
            b.op("Reshape", &[&t, &flat])
        }
        Tail::Hidden => String::new(),
    };
    let mut pooled = Vec::new();
    if tail == Tail::Hidden {
        let dims = [Dim::Named("batch"), Dim::Named("pools"), Dim::Named("tokens")];
        let weights = b.g.input(io::POOL_WEIGHTS, ElemType::F32, &dims);
        for &l in taps {
            // [N, P, T] x [N, T, C] -> [N, P, C]
            pooled.push((l, b.op("MatMul", &[&weights, &residuals[l - 1]])));
        }
    }

    if states == States::Out {
        for (l, (a, f, w)) in outs.iter().enumerate() {
            g.output(a, &io::att_shift_out(l), ElemType::F32, &row);
            g.output(f, &io::ffn_shift_out(l), ElemType::F32, &row);
            g.output(w, &io::wkv_out(l), ElemType::F32, &st);
        }
    }
    match tail {
        Tail::Embedding => g.output(&tail_out, io::EMBEDDING, ElemType::F32, &row),
        Tail::Rerank => g.output(&tail_out, io::LOGITS, ElemType::F32, &[Dim::Named("batch")]),
        Tail::Hidden => {
            let dims = [Dim::Named("batch"), Dim::Named("pools"), Dim::Fixed(c as i64)];
            for (l, value) in &pooled {
                g.output(value, &io::pooled(*l), ElemType::F32, &dims);
            }
        }
    }
    Ok(GraphBytes { bytes: g.into_model(17, &[DOMAIN, MS_DOMAIN]) })
}
