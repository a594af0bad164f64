//! The model runtime: ONNX Runtime sessions over the emitted graphs, and the batching that runs
//! token sequences through them.
//!
//! Graphs per model pair (see [`super::graph`]):
//! - *embed*: all embedder layers + retrieval head;
//! - *score*: embedder layers `0..=max(selected)` + the reranker. It also yields the states of
//!   those layers, which is all an offline rerank ever needs, so indexing a document's rerank
//!   state runs this graph too. Its sessions are created at first use.
//! - *score, states dropped* ([`States::Dropped`]): the same without state outputs, for
//!   reranks whose sequences end within one chunk; its sessions are created at first use.
//! - *hidden* (on request, [`Runtime::layer_pass`]): pooled hidden states of chosen layers.
//!
//! Sequences are grouped by length, right-padded inside a batch and run in chunks of at most
//! `chunk_tokens` steps with the state carried between chunks. The WKV operator stops each row at
//! its own length and the token-shift outputs are read at each row's last real token, so a
//! sequence's result does not depend on what it was batched with.

use std::sync::{Arc, OnceLock};

use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewD, Axis};
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::session::Session;
use ort::value::Tensor;
use parking_lot::{Condvar, Mutex};

use super::bf16::MatMulBf16Op;
use super::device::{self, Device};
use super::graph::{self, io, GraphBytes, States, Tail};
use super::prepared::{Precision, PreparedModel};
use super::quant_ops::{DequantizeRowsOp, QuantizeRowsOp};
use super::state::ModelState;
use super::weights::{EmbedderConfig, EmbedderWeights, RerankerWeights, HEAD_SIZE};
use super::wkv::{Wkv7Op, DOMAIN};
use super::{ort_env, ModelError};
use crate::tokenizer::EOS_TOKEN;

/// Serialises ONNX Runtime graph loads within the process (see where sessions are created).
static SESSION_LOAD: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Options for building a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Path of `libonnxruntime.so`; `None` searches `$ORT_DYLIB_PATH`, the source tree's `.ort/` (filled by `scripts/setup-ort`), then the executable's folder.
    pub ort_library: Option<std::path::PathBuf>,
    /// Execution provider.
    pub device: Device,
    /// Intra-op threads per session; 0 = all cores.
    pub threads: usize,
    /// Maximum tokens per sequence per graph run (longer sequences run in several chunks).
    pub chunk_tokens: usize,
    /// Maximum token rows (`batch x chunk`) per graph run.
    pub max_rows: usize,
    /// Sessions per graph, for concurrent callers (they share the prepared weights).
    pub sessions: usize,
    /// Where prepared weights are cached between processes.
    pub cache: super::weight_cache::CacheDir,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            ort_library: None,
            device: Device::Cpu,
            threads: 0,
            chunk_tokens: 256,
            max_rows: 4096,
            sessions: 1,
            cache: Default::default(),
        }
    }
}

/// A pool of identical sessions: `Session::run` needs `&mut`, so callers check one out.
struct SessionPool {
    idle: Mutex<Vec<Session>>,
    ready: Condvar,
}

impl SessionPool {
    fn with<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut session = {
            let mut idle = self.idle.lock();
            loop {
                if let Some(s) = idle.pop() {
                    break s;
                }
                self.ready.wait(&mut idle);
            }
        };
        let out = f(&mut session);
        self.idle.lock().push(session);
        self.ready.notify_one();
        out
    }
}

/// What the graph runs leave for one sequence: the tail's value once its sequence finished, or
/// for the hidden tail the pooled sums, added up over chunks.
enum TailValue {
    None,
    Vector(Vec<f32>),
    Scalar(f32),
    Pooled(Vec<f32>),
}

/// A sentence's residual stream after one layer, pooled three ways (see
/// [`LayerPass::pooled`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PooledHidden {
    /// Mean over the text tokens (the final EOS excluded).
    pub mean: Vec<f32>,
    /// At the last text token.
    pub last: Vec<f32>,
    /// At the EOS token that ends the sequence.
    pub eos: Vec<f32>,
}

/// Pools of the hidden tail, in `pool_weights` order: mean, last text token, EOS.
const POOLS: usize = 3;

/// A loaded embedder (and optionally its reranker) ready to run.
pub struct Runtime {
    config: EmbedderConfig,
    embed: SessionPool,
    /// The score graph (with a reranker); its sessions are created at the first rerank or
    /// state computation, so commands that only embed never pay for them.
    score_graph: Option<GraphBytes>,
    score: OnceLock<SessionPool>,
    /// The score graph without state outputs ([`States::Dropped`]), for offline reranks whose
    /// queries fit one chunk; its sessions are created at the first such rerank.
    score_final_graph: Option<GraphBytes>,
    score_final: OnceLock<SessionPool>,
    /// Serialises the creation of score sessions.
    score_init: Mutex<()>,
    /// The prepacked-weights container every session of this runtime shares.
    packed: PrepackedWeights,
    /// Embedder layers the score graph runs (`max(selected) + 1`).
    score_layers: usize,
    reranker_layers: Vec<usize>,
    chunk_tokens: usize,
    max_rows: usize,
    /// Options the sessions were built with (for sessions built later: [`Self::layer_pass`]).
    options: RuntimeOptions,
    /// The weights every session reads (declared last: dropped after the sessions).
    prepared: Arc<PreparedModel>,
}

fn ort_err(context: &str) -> impl Fn(ort::Error) -> ModelError + '_ {
    move |e| ModelError::Ort(format!("{context}: {e}"))
}

impl Runtime {
    /// Builds the graphs for `embedder` (and `reranker`) with exact f32 weights prepared in
    /// memory, and commits their sessions. Collections load models through the weight cache
    /// instead ([`super::weight_cache`]).
    pub fn new(
        embedder: EmbedderWeights,
        reranker: Option<RerankerWeights>,
        opts: &RuntimeOptions,
    ) -> Result<Self, ModelError> {
        check_pair(&embedder, reranker.as_ref())?;
        let prepared = PreparedModel::build(&embedder, reranker.as_ref(), Precision::F32, "")?;
        drop((embedder, reranker));
        Self::from_prepared(Arc::new(prepared), opts)
    }

    /// Builds the graphs over prepared weights and commits the embedding sessions (the score
    /// sessions follow at first use). Every session reads the weights in place: ONNX Runtime
    /// gets them as external initializers.
    pub fn from_prepared(prepared: Arc<PreparedModel>, opts: &RuntimeOptions) -> Result<Self, ModelError> {
        let (_, env) = ort_env::ensure_loaded(opts.ort_library.as_deref())?;
        let meta = prepared.meta();
        let cfg = meta.config.clone();
        let sessions = opts.sessions.max(1);
        let embed_graph = graph::build(&prepared, cfg.layers, Tail::Embedding, States::Out)?;
        let packed = PrepackedWeights::new();
        let embed = Self::pool(&env, &embed_graph, &prepared, opts, sessions, &packed)?;
        // The score graph is emitted now (milliseconds; a weight it cannot find fails at load).
        let (score_graph, score_final_graph, score_layers, reranker_layers) = match &meta.reranker_layers {
            Some(idx) => {
                let layers = idx.iter().copied().max().unwrap_or(0) + 1;
                let full = graph::build(&prepared, layers, Tail::Rerank, States::Out)?;
                let last = graph::build(&prepared, layers, Tail::Rerank, States::Dropped)?;
                (Some(full), Some(last), layers, idx.clone())
            }
            None => (None, None, 0, Vec::new()),
        };
        // A missing or misaligned embedding table fails here, at load, not at the first batch.
        prepared.f32s("emb")?;
        Ok(Self {
            config: cfg,
            embed,
            score_graph,
            score: OnceLock::new(),
            score_final_graph,
            score_final: OnceLock::new(),
            score_init: Mutex::new(()),
            packed,
            score_layers,
            reranker_layers,
            chunk_tokens: opts.chunk_tokens.max(1),
            max_rows: opts.max_rows.max(1),
            options: opts.clone(),
            prepared,
        })
    }

    fn pool(
        env: &ort::environment::Environment,
        graph: &GraphBytes,
        prepared: &PreparedModel,
        opts: &RuntimeOptions,
        n: usize,
        packed: &PrepackedWeights,
    ) -> Result<SessionPool, ModelError> {
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            opts.threads
        };
        // Debug aid: RWKVDB_DUMP_ONNX=<dir> writes the emitted graphs there.
        if let Some(dir) = std::env::var_os("RWKVDB_DUMP_ONNX") {
            let name = format!("graph-{}.onnx", graph.bytes.len());
            let _ = std::fs::write(std::path::Path::new(&dir).join(name), &graph.bytes);
        }
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            let ops = ort::operator::OperatorDomain::new(DOMAIN)
                .and_then(|d| d.add(Wkv7Op))
                .and_then(|d| d.add(QuantizeRowsOp))
                .and_then(|d| d.add(DequantizeRowsOp))
                .and_then(|d| d.add(MatMulBf16Op))
                .map_err(ort_err("registering Wkv7"))?;
            let mut builder = Session::builder(env)
                .map_err(ort_err("session builder"))?
                // Level 3 only adds layout transforms for convolutions; level 2's fusions are what
                // these graphs use, and skipping level 3 saves ~0.2 s of session creation.
                .with_optimization_level(GraphOptimizationLevel::Level2)
                .map_err(|e| ModelError::Ort(e.to_string()))?
                .with_intra_threads(threads)
                .map_err(|e| ModelError::Ort(e.to_string()))?
                .with_operators(ops)
                .map_err(|e| ModelError::Ort(e.to_string()))?;
            builder = device::register(builder, opts.device)?;
            // f32 and bf16 weights are used in place from the prepared buffer (shared by both
            // sessions and, through the page cache, by every process); prepacking would give
            // each session its own copy for a few percent of speed (docs/performance.md). The
            // integer kernels need their packed form; both sessions get one prepacked-weights
            // container.
            if matches!(prepared.meta().precision, Precision::F32 | Precision::Bf16) {
                builder = builder
                    .with_config_entry("session.disable_prepacking", "1")
                    .map_err(|e| ModelError::Ort(e.to_string()))?;
            } else {
                builder = builder.with_prepacked_weights(packed).map_err(|e| ModelError::Ort(e.to_string()))?;
            }
            // Debug aid: RWKVDB_ORT_PROFILE=<prefix> writes ONNX Runtime's per-node profile.
            if let Some(prefix) = std::env::var_os("RWKVDB_ORT_PROFILE") {
                builder = builder
                    .with_profiling(std::path::PathBuf::from(prefix))
                    .map_err(|e| ModelError::Ort(e.to_string()))?;
            }
            builder = external::add(builder, prepared)?;
            builder = external::without_arena(builder)?;
            let session = {
                // ONNX Runtime registers the custom-operator domain in a process-wide schema
                // registry while loading a graph, and two loads at once can collide there
                // ("domain is already exist"; seen with two collections opening on two threads).
                let _one = SESSION_LOAD.lock();
                builder.commit_from_memory(&graph.bytes).map_err(ort_err("loading graph"))?
            };
            sessions.push(session);
        }
        prepared.release_packed_sources();
        Ok(SessionPool { idle: Mutex::new(sessions), ready: Condvar::new() })
    }

    /// The score sessions, created on first use.
    fn score_pool(&self) -> Result<&SessionPool, ModelError> {
        self.lazy_pool(self.score_graph.as_ref(), &self.score)
    }

    /// The sessions of `graph` in `cell`, created on first use.
    fn lazy_pool<'a>(
        &'a self,
        graph: Option<&GraphBytes>,
        cell: &'a OnceLock<SessionPool>,
    ) -> Result<&'a SessionPool, ModelError> {
        let graph = graph.ok_or(ModelError::NoReranker)?;
        if let Some(pool) = cell.get() {
            return Ok(pool);
        }
        let _one = self.score_init.lock();
        if let Some(pool) = cell.get() {
            return Ok(pool);
        }
        let (_, env) = ort_env::ensure_loaded(self.options.ort_library.as_deref())?;
        let pool = Self::pool(&env, graph, &self.prepared, &self.options, self.options.sessions.max(1), &self.packed)?;
        Ok(cell.get_or_init(|| pool))
    }

    /// The prepared weights this runtime reads.
    pub fn prepared(&self) -> &PreparedModel {
        &self.prepared
    }

    /// Matrix precision of the loaded weights.
    pub fn precision(&self) -> Precision {
        self.prepared.meta().precision
    }

    /// The embedder's shape.
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// Whether a reranker is loaded.
    pub fn has_reranker(&self) -> bool {
        self.score_graph.is_some()
    }

    /// Embedder layers an offline rerank state must hold (`max(selected) + 1`); 0 without reranker.
    pub fn state_layers(&self) -> usize {
        self.score_layers
    }

    /// Embedder layers the reranker reads.
    pub fn reranker_layers(&self) -> &[usize] {
        &self.reranker_layers
    }

    fn check_tokens(&self, seqs: &[&[u32]]) -> Result<(), ModelError> {
        for s in seqs {
            if s.is_empty() {
                return Err(ModelError::EmptySequence);
            }
            if let Some(&t) = s.iter().find(|&&t| t as usize >= self.config.vocab) {
                return Err(ModelError::TokenOutOfRange { token: t, vocab: self.config.vocab });
            }
        }
        Ok(())
    }

    /// Retrieval embeddings (unnormalised, as the official package returns them) of token
    /// sequences that each end with EOS, every one from the zero state.
    pub fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.check_tokens(seqs)?;
        for s in seqs {
            // The official embedding pools the hidden state at EOS positions; we read the last one.
            if s.last() != Some(&EOS_TOKEN) || s[..s.len() - 1].contains(&EOS_TOKEN) {
                return Err(ModelError::EosPlacement);
            }
        }
        let states: Vec<ModelState> =
            seqs.iter().map(|_| ModelState::zeros(self.config.layers, self.config.width)).collect();
        let pass = Pass { layers: self.config.layers, tail: Tail::Embedding, keep_states: false, taps: &[] };
        let (_, tails) = self.run(&self.embed, &pass, states, seqs)?;
        Ok(tails
            .into_iter()
            .map(|t| match t {
                TailValue::Vector(v) => v,
                _ => Vec::new(),
            })
            .collect())
    }

    /// Runs each sequence from the zero state through the reranker's layers and returns the
    /// states (offline indexing of a document prefix).
    pub fn prefix_states(&self, seqs: &[&[u32]]) -> Result<Vec<ModelState>, ModelError> {
        let states = seqs.iter().map(|_| ModelState::zeros(self.score_layers, self.config.width)).collect();
        self.resume_states(states, seqs)
    }

    /// Continues each state with its tokens and returns the new states. An empty token list
    /// returns its state unchanged.
    pub fn resume_states(&self, states: Vec<ModelState>, seqs: &[&[u32]]) -> Result<Vec<ModelState>, ModelError> {
        let pool = self.score_pool()?;
        self.check_states(&states, seqs.len())?;
        let nonempty: Vec<&[u32]> = seqs.iter().copied().filter(|s| !s.is_empty()).collect();
        self.check_tokens(&nonempty)?;
        let (mut keep, mut run_states, mut run_seqs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (st, s)) in states.into_iter().zip(seqs).enumerate() {
            if s.is_empty() {
                keep.push((i, st));
            } else {
                run_states.push(st);
                run_seqs.push(*s);
            }
        }
        let pass = Pass { layers: self.score_layers, tail: Tail::Rerank, keep_states: true, taps: &[] };
        let (done, _) = self.run(pool, &pass, run_states, &run_seqs)?;
        let mut out: Vec<Option<ModelState>> = (0..seqs.len()).map(|_| None).collect();
        for (i, st) in keep {
            out[i] = Some(st);
        }
        let mut done = done.into_iter();
        for slot in out.iter_mut().filter(|s| s.is_none()) {
            *slot = done.next();
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn check_states(&self, states: &[ModelState], n: usize) -> Result<(), ModelError> {
        if states.len() != n {
            return Err(ModelError::Mismatch(format!("{} states for {} sequences", states.len(), n)));
        }
        for s in states {
            let ok = s.layers == self.score_layers
                && s.width == self.config.width
                && s.att_shift.len() == s.layers * s.width
                && s.ffn_shift.len() == s.layers * s.width
                && s.wkv.len() == s.layers * s.width * HEAD_SIZE;
            if !ok {
                return Err(ModelError::StateShape {
                    expected: (self.score_layers, self.config.width),
                    found: (s.layers, s.width),
                });
            }
        }
        Ok(())
    }

    /// Resumes each state with its query tokens (ending in EOS) and returns the reranker logits.
    pub fn resume_and_score(&self, states: Vec<ModelState>, queries: &[&[u32]]) -> Result<Vec<f32>, ModelError> {
        self.check_tokens(queries)?;
        // Queries that end within one chunk need no states out of the graph.
        let pool = if queries.iter().all(|q| q.len() <= self.chunk_tokens) {
            self.lazy_pool(self.score_final_graph.as_ref(), &self.score_final)?
        } else {
            self.score_pool()?
        };
        self.check_states(&states, queries.len())?;
        let pass = Pass { layers: self.score_layers, tail: Tail::Rerank, keep_states: false, taps: &[] };
        let (_, tails) = self.run(pool, &pass, states, queries)?;
        Ok(tails
            .into_iter()
            .map(|t| match t {
                TailValue::Scalar(v) => v,
                _ => f32::NAN,
            })
            .collect())
    }

    /// Online reranking: each full `Instruct…Document…Query…EOS` sequence from the zero state.
    pub fn online_scores(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, ModelError> {
        let states = seqs.iter().map(|_| ModelState::zeros(self.score_layers, self.config.width)).collect();
        self.resume_and_score(states, seqs)
    }

    /// A pass that pools the hidden states of `layers` (1-based: the residual stream after
    /// those blocks), for layer-wise sentence embeddings (`rwkvdb eval layers`). It builds its
    /// own graph over the same weights and operators (an evaluation tool, not a hot path).
    pub fn layer_pass(&self, layers: &[usize]) -> Result<LayerPass<'_>, ModelError> {
        let g = graph::build_hidden(&self.prepared, layers)?;
        let (_, env) = ort_env::ensure_loaded(self.options.ort_library.as_deref())?;
        let pool = Self::pool(&env, &g, &self.prepared, &self.options, 1, &self.packed)?;
        Ok(LayerPass { rt: self, pool, layers: layers.to_vec() })
    }

    /// Runs `seqs` (with their starting `states`) through one graph in length-sorted batches.
    fn run(
        &self,
        pool: &SessionPool,
        pass: &Pass,
        mut states: Vec<ModelState>,
        seqs: &[&[u32]],
    ) -> Result<(Vec<ModelState>, Vec<TailValue>), ModelError> {
        let mut tails: Vec<TailValue> = seqs.iter().map(|_| TailValue::None).collect();
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        // Batches of similar length: rows per batch so that batch x chunk stays within max_rows,
        // and a batch ends where the next sequence is under 80% of its longest, because every row
        // is computed at the batch's length (padding is real work: before this rule a mix of
        // short documents ran at a third of the runtime's speed).
        let chunk = self.chunk_tokens;
        let mut start = 0;
        while start < order.len() {
            let t = seqs[order[start]].len().min(chunk);
            let rows = (self.max_rows / t.max(1)).max(1);
            let mut end = start + 1;
            while end < order.len() && end - start < rows && seqs[order[end]].len().min(chunk) * 5 >= t * 4 {
                end += 1;
            }
            let batch = &order[start..end];
            pool.with(|session| self.run_batch(session, pass, batch, &mut states, seqs, &mut tails))?;
            start = end;
        }
        Ok((states, tails))
    }

    fn run_batch(
        &self,
        session: &mut Session,
        pass: &Pass,
        batch: &[usize],
        states: &mut [ModelState],
        seqs: &[&[u32]],
        tails: &mut [TailValue],
    ) -> Result<(), ModelError> {
        let &Pass { layers, tail, keep_states, taps } = pass;
        let c = self.config.width;
        let wkv_len = c * HEAD_SIZE;
        let emb_table = ArrayView2::from_shape((self.config.vocab, c), self.prepared.f32s("emb")?)
            .map_err(|e| ModelError::PreparedWeights(format!("embedding table: {e}")))?;
        let mut pos = vec![0usize; batch.len()];
        loop {
            let active: Vec<usize> = (0..batch.len()).filter(|&i| pos[i] < seqs[batch[i]].len()).collect();
            if active.is_empty() {
                return Ok(());
            }
            let n = active.len();
            let t = active.iter().map(|&i| seqs[batch[i]].len() - pos[i]).max().unwrap_or(1).min(self.chunk_tokens);
            // Inputs: token embeddings `x [n, t, C]` (rows padded with zeros past their length),
            // each row's length and the flat index of its last token, and per layer the
            // carried states `[n, C]`, `[n, C]`, `[n, H, 64, 64]`.
            let mut x = Array3::<f32>::zeros((n, t, c));
            let mut lengths = Array1::<i64>::zeros(n);
            let mut last_index = Array1::<i64>::zeros(n);
            for (row, &i) in active.iter().enumerate() {
                let seq = &seqs[batch[i]][pos[i]..];
                let len = seq.len().min(t);
                for (step, &tok) in seq[..len].iter().enumerate() {
                    x.slice_mut(s![row, step, ..]).assign(&emb_table.row(tok as usize));
                }
                lengths[row] = len as i64;
                last_index[row] = (row * t + len - 1) as i64;
            }
            let mut inputs: Vec<(String, ort::session::SessionInputValue)> = Vec::with_capacity(3 + 3 * layers);
            inputs.push((io::X.into(), Tensor::from_array(x).map_err(ort_err("x"))?.into()));
            inputs.push((io::LENGTHS.into(), Tensor::from_array(lengths.clone()).map_err(ort_err("lengths"))?.into()));
            inputs.push((io::LAST_INDEX.into(), Tensor::from_array(last_index).map_err(ort_err("last_index"))?.into()));
            if tail == Tail::Hidden {
                let weights =
                    pool_weights(&active.iter().map(|&i| (pos[i], seqs[batch[i]].len())).collect::<Vec<_>>(), t);
                inputs.push((
                    io::POOL_WEIGHTS.into(),
                    Tensor::from_array(weights).map_err(ort_err("pool_weights"))?.into(),
                ));
            }
            for l in 0..layers {
                let mut a = Array2::<f32>::zeros((n, c));
                let mut f = Array2::<f32>::zeros((n, c));
                let mut w = Array2::<f32>::zeros((n, wkv_len));
                for (row, &i) in active.iter().enumerate() {
                    let (sa, sf, sw) = states[batch[i]].layer(l);
                    a.row_mut(row).assign(&ArrayView1::from(sa));
                    f.row_mut(row).assign(&ArrayView1::from(sf));
                    w.row_mut(row).assign(&ArrayView1::from(sw));
                }
                let w = w
                    .into_shape_with_order((n, self.config.heads, HEAD_SIZE, HEAD_SIZE))
                    .map_err(|e| ModelError::Ort(format!("wkv input shape: {e}")))?;
                inputs.push((io::att_shift(l), Tensor::from_array(a).map_err(ort_err("att_shift"))?.into()));
                inputs.push((io::ffn_shift(l), Tensor::from_array(f).map_err(ort_err("ffn_shift"))?.into()));
                inputs.push((io::wkv(l), Tensor::from_array(w).map_err(ort_err("wkv"))?.into()));
            }
            let outputs = session.run(inputs).map_err(ort_err("running graph"))?;
            let get = |name: &str| -> Result<ArrayViewD<'_, f32>, ModelError> {
                let v = outputs.get(name).ok_or_else(|| ModelError::Ort(format!("graph has no output {name}")))?;
                v.try_extract_array::<f32>().map_err(ort_err(name))
            };
            // States are copied back only where someone reads them: rows that continue in the
            // next chunk, or all rows when the caller wants the final states.
            let needed: Vec<bool> = active
                .iter()
                .enumerate()
                .map(|(row, &i)| keep_states || pos[i] + (lengths[row] as usize) < seqs[batch[i]].len())
                .collect();
            for l in 0..layers {
                if !needed.iter().any(|&n| n) {
                    break;
                }
                let (a, f, w) = (get(&io::att_shift_out(l))?, get(&io::ffn_shift_out(l))?, get(&io::wkv_out(l))?);
                for (row, &i) in active.iter().enumerate().filter(|(row, _)| needed[*row]) {
                    let (sa, sf, sw) = states[batch[i]].layer_mut(l);
                    copy_row(&a, row, sa)?;
                    copy_row(&f, row, sf)?;
                    copy_row(&w, row, sw)?;
                }
            }
            if tail == Tail::Hidden {
                // Every chunk adds its part of each pool.
                let width = POOLS * c;
                for (j, &l) in taps.iter().enumerate() {
                    let out = get(&io::pooled(l))?;
                    for (row, &i) in active.iter().enumerate() {
                        let slot = &mut tails[batch[i]];
                        if !matches!(slot, TailValue::Pooled(_)) {
                            *slot = TailValue::Pooled(vec![0.0; taps.len() * width]);
                        }
                        if let TailValue::Pooled(sums) = slot {
                            let part = out.index_axis(Axis(0), row);
                            sums[j * width..(j + 1) * width].iter_mut().zip(part.iter()).for_each(|(s, v)| *s += v);
                        }
                    }
                }
            }
            let tail_out = match tail {
                Tail::Embedding => Some(get(io::EMBEDDING)?),
                Tail::Rerank => Some(get(io::LOGITS)?),
                Tail::Hidden => None,
            };
            for (row, &i) in active.iter().enumerate() {
                pos[i] += lengths[row] as usize;
                if let (Some(out), true) = (&tail_out, pos[i] == seqs[batch[i]].len()) {
                    let v = out.index_axis(Axis(0), row);
                    tails[batch[i]] = match tail {
                        Tail::Rerank => TailValue::Scalar(v.iter().next().copied().unwrap_or(f32::NAN)),
                        _ => TailValue::Vector(v.iter().copied().collect()),
                    };
                }
            }
        }
    }
}

/// A graph pooling the hidden states of chosen layers, from [`Runtime::layer_pass`].
pub struct LayerPass<'r> {
    rt: &'r Runtime,
    pool: SessionPool,
    layers: Vec<usize>,
}

impl LayerPass<'_> {
    /// For each sequence (its text tokens, at least one, then one EOS) and each layer of the
    /// pass, in the order given, the residual stream after that layer pooled as [`PooledHidden`].
    pub fn pooled(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<PooledHidden>>, ModelError> {
        let rt = self.rt;
        rt.check_tokens(seqs)?;
        if seqs.iter().any(|s| s.len() < 2 || s.last() != Some(&EOS_TOKEN)) {
            return Err(ModelError::EosPlacement);
        }
        let depth = self.layers.iter().copied().max().unwrap_or(0);
        let states = seqs.iter().map(|_| ModelState::zeros(depth, rt.config.width)).collect();
        let pass = Pass { layers: depth, tail: Tail::Hidden, keep_states: false, taps: &self.layers };
        let (_, tails) = rt.run(&self.pool, &pass, states, seqs)?;
        let c = rt.config.width;
        Ok(tails
            .into_iter()
            .map(|t| {
                let TailValue::Pooled(sums) = t else { return Vec::new() };
                sums.chunks_exact(POOLS * c)
                    .map(|p| PooledHidden {
                        mean: p[..c].to_vec(),
                        last: p[c..2 * c].to_vec(),
                        eos: p[2 * c..].to_vec(),
                    })
                    .collect()
            })
            .collect())
    }
}

/// Copies row `row` of a graph output (`[n, ...]`) into `dst`, which must hold exactly one row.
fn copy_row(out: &ArrayViewD<'_, f32>, row: usize, dst: &mut [f32]) -> Result<(), ModelError> {
    let src = out.index_axis(Axis(0), row);
    if src.len() != dst.len() {
        return Err(ModelError::Ort(format!("graph output row of {} values, {} expected", src.len(), dst.len())));
    }
    match src.as_slice() {
        Some(s) => dst.copy_from_slice(s),
        None => dst.iter_mut().zip(src.iter()).for_each(|(d, s)| *d = *s),
    }
    Ok(())
}

/// What one pass over a set of sequences computes.
struct Pass<'a> {
    /// Embedder layers in the graph.
    layers: usize,
    /// What the graph computes after the layers.
    tail: Tail,
    /// Whether the caller needs the final states.
    keep_states: bool,
    /// Layers whose pooled hidden states the graph outputs ([`Tail::Hidden`]).
    taps: &'a [usize],
}

/// Token weights `[n, POOLS, t]` of one chunk for rows at `(position, sequence length)`: the
/// text tokens (all but the final EOS) get `1/len` in the mean pool, the last text token and
/// the EOS a one in theirs, so the chunks' sums add up to the pools.
fn pool_weights(rows: &[(usize, usize)], t: usize) -> Array3<f32> {
    let mut w = Array3::<f32>::zeros((rows.len(), POOLS, t));
    for (row, &(start, len)) in rows.iter().enumerate() {
        let text = len - 1;
        for step in 0..t.min(len - start) {
            let p = start + step;
            if p < text {
                w[[row, 0, step]] = 1.0 / text as f32;
            }
            if p + 1 == text {
                w[[row, 1, step]] = 1.0;
            }
            if p == text {
                w[[row, 2, step]] = 1.0;
            }
        }
    }
    w
}

/// Checks that a reranker fits its embedder.
pub fn check_pair(embedder: &EmbedderWeights, reranker: Option<&RerankerWeights>) -> Result<(), ModelError> {
    let cfg = &embedder.config;
    if let Some(rr) = reranker {
        if rr.width != cfg.width {
            return Err(ModelError::Mismatch(format!(
                "reranker width {} differs from embedder width {}",
                rr.width, cfg.width
            )));
        }
        if rr.max_layer() >= cfg.layers {
            return Err(ModelError::Mismatch(format!(
                "reranker reads embedder layer {} but the embedder has {} layers",
                rr.max_layer(),
                cfg.layers
            )));
        }
    }
    Ok(())
}

/// Handing the prepared buffer to ONNX Runtime without copying it.
mod external {
    use ort::session::builder::SessionBuilder;
    use ort::AsPointer;

    use super::super::onnx::EXTERNAL_LOCATION;
    use super::super::prepared::PreparedModel;
    use super::ModelError;

    /// Turns ONNX Runtime's CPU memory arena off: with it, every batch shape's activations stay
    /// reserved for the life of the process (peak RSS grew to several GB over mixed workloads);
    /// without it large buffers go back to the system after each run.
    pub fn without_arena(mut builder: SessionBuilder) -> Result<SessionBuilder, ModelError> {
        // SAFETY: a valid session options pointer owned by `builder`.
        let status = unsafe { (ort::api().DisableCpuMemArena)(builder.ptr_mut()) };
        check(status, "disabling the memory arena")?;
        Ok(builder)
    }

    fn check(status: ort::sys::OrtStatusPtr, what: &str) -> Result<(), ModelError> {
        if status.0.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null status is a valid OrtStatus that we own and release once.
        let msg = unsafe {
            let m = std::ffi::CStr::from_ptr((ort::api().GetErrorMessage)(status.0)).to_string_lossy().into_owned();
            (ort::api().ReleaseStatus)(status.0);
            m
        };
        Err(ModelError::Ort(format!("{what}: {msg}")))
    }

    /// Registers the whole prepared buffer as the in-memory "file" the graphs' external
    /// initializers point into (by offset), and tells ONNX Runtime to use it in place. The
    /// prepared model must outlive every session committed from `builder`.
    pub fn add(builder: SessionBuilder, prepared: &PreparedModel) -> Result<SessionBuilder, ModelError> {
        let mut builder = builder
            .with_config_entry("session.use_external_initializer_file_buffers_directly", "1")
            .map_err(|e| ModelError::Ort(e.to_string()))?;
        let name = std::ffi::CString::new(EXTERNAL_LOCATION).map_err(|e| ModelError::Ort(e.to_string()))?;
        let names = [name.as_ptr()];
        let buf = prepared.buffer();
        let bufs = [buf.as_ptr().cast::<std::ffi::c_char>().cast_mut()];
        let lens = [buf.len()];
        // SAFETY: the arrays hold one valid name and one buffer of `lens[0]` readable bytes for
        // the duration of the call. ONNX Runtime keeps the pointer (not a copy) and only reads
        // it; the Runtime owns the prepared model longer than its sessions (field order).
        let status = unsafe {
            (ort::api().AddExternalInitializersFromMemory)(
                builder.ptr_mut(),
                names.as_ptr(),
                bufs.as_ptr(),
                lens.as_ptr(),
                1,
            )
        };
        check(status, "external initializers")?;
        Ok(builder)
    }
}
