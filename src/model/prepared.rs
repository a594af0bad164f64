//! Prepared weights: every tensor the graphs and the embedding lookup need, in its final form
//! (f32, transposed to `x @ W`, `ln0` folded into the embedding table, matrices block-quantized
//! for the chosen [`Precision`]), laid out in one page-aligned buffer.
//!
//! The buffer is the on-disk cache format byte for byte, so a prepared model is either built in
//! anonymous memory from a checkpoint or memory-mapped from the cache file (see
//! [`super::weight_cache`]). ONNX Runtime receives every graph weight as an external initializer
//! that points into this buffer: the embed and score sessions share one copy, and no graph
//! protobuf carries weights (no 2 GB limit).
//!
//! Layout: `MAGIC` (8 bytes), format version (u32 LE), 4 zero bytes, JSON length (u64 LE), the
//! JSON [`PreparedMeta`], zero padding to [`DATA_ALIGN`]; then each tensor at its recorded
//! offset (64-byte aligned, relative to the data start); then the xxh3-128 of everything before
//! it (16 bytes LE). A reader checks magic, version, sizes, bounds and the checksum before use.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::weights::{BlockWeights, EmbedderConfig, EmbedderWeights, RerankerWeights};
use super::ModelError;
use super::{bf16, quant};

/// First bytes of a prepared-weights file.
pub const MAGIC: &[u8; 8] = b"RWKVDBPW";
/// Version of the layout and of the naming below; a different version is rebuilt, never read.
pub const FORMAT_VERSION: u32 = 2;
/// Name suffix of a matrix stored in bf16 (`e0.att.r.bf16`).
pub const BF16_SUFFIX: &str = ".bf16";
/// Alignment of the data section (a page), so a mapped file gives aligned tensors.
pub const DATA_ALIGN: usize = 4096;
/// Alignment of each tensor inside the data section.
const TENSOR_ALIGN: usize = 64;
const HEADER_FIXED: usize = 24;
const TRAILER: usize = 16;

/// Numeric precision of the weight matrices (the vectors and low-rank projections stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Exact: f32 weights, results match the official package.
    #[default]
    F32,
    /// bf16 matrices (exact for the published bf16 checkpoints); activations rounded to bf16
    /// on CPUs with AMX-BF16, f32 arithmetic elsewhere (docs/architecture.md).
    Bf16,
    /// 8-bit matrices, one scale per output channel; activations quantized per row on the fly
    /// (ONNX Runtime `MatMulInteger`, integer GEMM).
    Int8,
    /// 4-bit block-quantized matrices (ONNX Runtime `MatMulNBits`).
    Int4,
}

impl Precision {
    /// Every precision, in order of size.
    pub const ALL: [Precision; 4] = [Precision::F32, Precision::Bf16, Precision::Int8, Precision::Int4];

    /// The name used in configs and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }

    /// Parses a name from [`Precision::name`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Bits per integer-quantized weight; `None` for f32 and bf16.
    #[must_use]
    pub fn bits(self) -> Option<u32> {
        match self {
            Precision::F32 | Precision::Bf16 => None,
            Precision::Int8 => Some(8),
            Precision::Int4 => Some(4),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Element type of a prepared tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// Unsigned byte (packed 4-bit weights).
    U8,
    /// Signed byte (8-bit weights).
    I8,
    /// bf16 (matrices in the tile layout of [`super::bf16`]).
    Bf16,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::U8 | Elem::I8 => 1,
            Elem::Bf16 => 2,
        }
    }
}

/// Quantization of one matrix `[K, N]` (`x @ W`). 8-bit: `[K, N]` int8 with one scale per
/// output column (`block == k`), as `DynamicQuantizeMatMul` reads it. 4-bit: blocks of
/// `block` weights along `K`, packed as `MatMulNBits` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantInfo {
    /// Input features.
    pub k: usize,
    /// Output features.
    pub n: usize,
    /// Bits per weight.
    pub bits: u32,
    /// Weights per block (one scale each).
    pub block: usize,
}

/// One tensor of a prepared model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Name the graphs refer to.
    pub name: String,
    /// Element type.
    pub elem: Elem,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Byte offset from the start of the data section.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
    /// Set on the packed `<matrix>.q` tensor of a quantized matrix.
    pub quant: Option<QuantInfo>,
}

/// What a prepared model holds besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedMeta {
    /// Layout version (the prepared-weights format version).
    pub format: u32,
    /// What it was built from (checkpoint content hashes + precision; empty when built in memory).
    pub source_key: String,
    /// Matrix precision.
    pub precision: Precision,
    /// Embedder shape.
    pub config: EmbedderConfig,
    /// Embedder layers the reranker reads, when a reranker is included.
    pub reranker_layers: Option<Vec<usize>>,
    /// Reranker blocks.
    pub reranker_blocks: usize,
    /// Hash of the f32 source weights (the model part of a collection's fingerprint).
    pub weights_hash: String,
    /// Every tensor.
    pub tensors: Vec<TensorInfo>,
    /// Bytes of the data section (the tensors and their alignment padding).
    pub data_len: usize,
}

/// The bytes of a prepared model: built in anonymous memory, or a read-only file map.
enum Backing {
    Anon(memmap2::Mmap),
    File(memmap2::Mmap),
}

/// A model's weights ready for the runtime.
pub struct PreparedModel {
    meta: PreparedMeta,
    data_start: usize,
    backing: Backing,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for PreparedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedModel")
            .field("precision", &self.meta.precision)
            .field("tensors", &self.meta.tensors.len())
            .field("bytes", &self.bytes().len())
            .field("mapped_file", &matches!(self.backing, Backing::File(_)))
            .finish_non_exhaustive()
    }
}

/// A tensor to lay out: its name, shape, f32 source and whether it is a matrix to quantize
/// (`Some((k, n))`, stored `[K, N]`).
struct Source<'a> {
    name: String,
    dims: Vec<usize>,
    data: &'a [f32],
    matrix: Option<(usize, usize)>,
}

/// Lays out one block's tensors; its six large matrices are marked for quantization when
/// `quantize` (the reranker's blocks are not: they run one token per candidate, so they cost
/// almost nothing, and in f32 they halve the int8 logit error, docs/performance.md).
fn push_block<'a>(out: &mut Vec<Source<'a>>, prefix: &str, b: &'a BlockWeights, c: usize, ffn: usize, quantize: bool) {
    let mut vec = |name: &str, data: &'a [f32]| {
        out.push(Source { name: format!("{prefix}{name}"), dims: vec![data.len()], data, matrix: None });
    };
    vec("ln1.w", &b.ln1.0);
    vec("ln1.b", &b.ln1.1);
    vec("ln2.w", &b.ln2.0);
    vec("ln2.b", &b.ln2.1);
    for (name, m) in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"].iter().zip(&b.mix) {
        vec(name, m);
    }
    vec("w0", &b.w.0);
    vec("a0", &b.a.0);
    if let Some(v) = &b.v {
        vec("v0", &v.0);
    }
    vec("k_k", &b.k_k);
    vec("k_a", &b.k_a);
    vec("ln_x.w", &b.ln_x.0);
    vec("ln_x.b", &b.ln_x.1);
    vec("ffn.x_k", &b.ffn_x_k);
    out.push(Source { name: format!("{prefix}r_k"), dims: vec![c / 64, 64], data: &b.r_k, matrix: None });
    // Low-rank projections stay f32: they are a few percent of the work and the decay is sensitive.
    let mut lora = |name: &str, data: &'a [f32], rows: usize| {
        out.push(Source { name: format!("{prefix}{name}"), dims: vec![rows, data.len() / rows], data, matrix: None });
    };
    lora("w1", &b.w.1, c);
    lora("w2", &b.w.2, b.w.2.len() / c);
    lora("a1", &b.a.1, c);
    lora("a2", &b.a.2, b.a.2.len() / c);
    lora("g1", &b.g.0, c);
    lora("g2", &b.g.1, b.g.1.len() / c);
    if let Some(v) = &b.v {
        lora("v1", &v.1, c);
        lora("v2", &v.2, v.2.len() / c);
    }
    let mut matrix = |name: &str, data: &'a [f32], k: usize, n: usize| {
        let matrix = quantize.then_some((k, n));
        out.push(Source { name: format!("{prefix}{name}"), dims: vec![k, n], data, matrix });
    };
    for (name, m) in ["att.r", "att.k", "att.v", "att.o"].iter().zip(&b.rkvo) {
        matrix(name, m, c, c);
    }
    matrix("ffn.key", &b.ffn_key, c, ffn);
    matrix("ffn.value", &b.ffn_value, ffn, c);
}

/// Every tensor of a model pair under the names the graphs use, the matrices to convert marked
/// for `precision`.
fn sources<'a>(emb: &'a EmbedderWeights, rr: Option<&'a RerankerWeights>, precision: Precision) -> Vec<Source<'a>> {
    let cfg = &emb.config;
    let c = cfg.width;
    let mut out = vec![Source { name: "emb".into(), dims: vec![cfg.vocab, c], data: &emb.emb, matrix: None }];
    for (l, b) in emb.blocks.iter().enumerate() {
        // bf16 keeps layer 0 in f32: it reads the token embeddings, and its rounding reaches
        // every later layer (at 0.1B it halves the largest rerank deviation, 0.011 -> 0.005,
        // for 2% of the work; docs/performance.md).
        let convert = precision != Precision::Bf16 || l > 0;
        push_block(&mut out, &block_prefix(Part::Embedder, l), b, c, cfg.ffn, convert);
    }
    let mut plain = |name: &str, dims: Vec<usize>, data: &'a [f32]| {
        out.push(Source { name: name.into(), dims, data, matrix: None });
    };
    plain("ln_out.w", vec![c], &emb.ln_out.0);
    plain("ln_out.b", vec![c], &emb.ln_out.1);
    plain("retr.fc1", vec![c, c], &emb.retr_head.fc1);
    plain("retr.fc2", vec![c, c], &emb.retr_head.fc2);
    plain("retr.norm.w", vec![c], &emb.retr_head.norm.0);
    plain("retr.norm.b", vec![c], &emb.retr_head.norm.1);
    if let Some(r) = rr {
        plain("rr.token", vec![1, 1, c], &r.token);
        plain("rr.ln_out.w", vec![c], &r.ln_out.0);
        plain("rr.ln_out.b", vec![c], &r.ln_out.1);
        plain("rr.head.w0", vec![c, c], &r.head.0);
        plain("rr.head.b0", vec![c], &r.head.1);
        plain("rr.head.w2", vec![c, 1], &r.head.2);
        let ffn = r.blocks.first().map_or(0, |b| b.ffn_key.len() / c);
        for (i, b) in r.blocks.iter().enumerate() {
            push_block(&mut out, &block_prefix(Part::Reranker, i), b, c, ffn, false);
        }
    }
    out
}

/// Which model a block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The embedder's blocks.
    Embedder,
    /// The reranker's own blocks.
    Reranker,
}

/// Name prefix of block `i` of `part` (`e3.`, `r0.`).
pub fn block_prefix(part: Part, i: usize) -> String {
    match part {
        Part::Embedder => format!("e{i}."),
        Part::Reranker => format!("r{i}."),
    }
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn invalid(reason: impl Into<String>) -> ModelError {
    ModelError::PreparedWeights(reason.into())
}

impl PreparedModel {
    /// Converts checkpoint weights into a prepared model in anonymous memory.
    pub fn build(
        emb: &EmbedderWeights,
        rr: Option<&RerankerWeights>,
        precision: Precision,
        source_key: &str,
    ) -> Result<Self, ModelError> {
        let srcs = sources(emb, rr, precision);
        // Plan: one or two stored tensors per source, at aligned offsets.
        let mut tensors = Vec::with_capacity(srcs.len() + 16);
        let mut offset = 0usize;
        let mut place = |name: String, elem: Elem, dims: Vec<usize>, quant: Option<QuantInfo>| {
            let len = dims.iter().product::<usize>() * elem.size();
            tensors.push(TensorInfo { name, elem, dims, offset, len, quant });
            offset = align(offset + len, TENSOR_ALIGN);
        };
        for s in &srcs {
            match (s.matrix, precision.bits()) {
                (Some((k, n)), None) if precision == Precision::Bf16 && bf16::fits(k, n) => {
                    place(format!("{}{BF16_SUFFIX}", s.name), Elem::Bf16, vec![n / 16, k / 32, 16, 16, 2], None);
                }
                (Some((k, n)), Some(bits)) => {
                    let q = QuantInfo { k, n, bits, block: quant::block_size(bits, k) };
                    let (packed_dims, scale_len) = quant::packed_shape(&q);
                    let elem = if bits == 8 { Elem::I8 } else { Elem::U8 };
                    place(format!("{}.q", s.name), elem, packed_dims, Some(q));
                    place(format!("{}.scales", s.name), Elem::F32, vec![scale_len], None);
                }
                _ => place(s.name.clone(), Elem::F32, s.dims.clone(), None),
            }
        }
        let meta = PreparedMeta {
            format: FORMAT_VERSION,
            source_key: source_key.to_string(),
            precision,
            config: emb.config.clone(),
            reranker_layers: rr.map(|r| r.layer_idx.clone()),
            reranker_blocks: rr.map_or(0, |r| r.blocks.len()),
            weights_hash: crate::fingerprint::weights(emb, rr),
            tensors,
            data_len: offset,
        };
        let json = serde_json::to_vec(&meta).map_err(|e| invalid(e.to_string()))?;
        let data_start = align(HEADER_FIXED + json.len(), DATA_ALIGN);
        let total_len = data_start + meta.data_len + TRAILER;
        let mut map = memmap2::MmapMut::map_anon(total_len).map_err(|e| invalid(format!("allocating: {e}")))?;
        map[..8].copy_from_slice(MAGIC);
        map[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        map[16..24].copy_from_slice(&(json.len() as u64).to_le_bytes());
        map[HEADER_FIXED..HEADER_FIXED + json.len()].copy_from_slice(&json);
        let mut next = meta.tensors.iter();
        for s in &srcs {
            let t = next.next().ok_or_else(|| invalid("layout mismatch"))?;
            let dst = &mut map[data_start + t.offset..data_start + t.offset + t.len];
            match t.quant {
                None if t.elem == Elem::Bf16 => {
                    let (k, n) = s.matrix.ok_or_else(|| invalid("layout mismatch"))?;
                    let mut packed = vec![0u16; k * n];
                    bf16::pack(s.data, k, n, &mut packed);
                    dst.copy_from_slice(bytemuck::cast_slice(&packed));
                }
                Some(q) => {
                    let scales = next.next().ok_or_else(|| invalid("layout mismatch"))?;
                    let mut scale_vals = vec![0f32; scales.len / 4];
                    quant::quantize(s.data, &q, dst, &mut scale_vals);
                    let sdst = &mut map[data_start + scales.offset..data_start + scales.offset + scales.len];
                    sdst.copy_from_slice(bytemuck::cast_slice(&scale_vals));
                }
                None => dst.copy_from_slice(bytemuck::cast_slice(s.data)),
            }
        }
        let body = total_len - TRAILER;
        let sum = xxhash_rust::xxh3::xxh3_128(&map[..body]);
        map[body..].copy_from_slice(&sum.to_le_bytes());
        let map = map.make_read_only().map_err(|e| invalid(format!("sealing: {e}")))?;
        Ok(Self::from_parts(meta, data_start, Backing::Anon(map)))
    }

    fn from_parts(meta: PreparedMeta, data_start: usize, backing: Backing) -> Self {
        let by_name = meta.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Self { meta, data_start, backing, by_name }
    }

    /// Maps a prepared-weights file and checks it completely (magic, version, layout, checksum).
    /// Any defect is a [`ModelError::PreparedWeights`] error: the caller rebuilds.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        // SAFETY: the cache file is written once under a temporary name and renamed into place,
        // never modified afterwards; a file replaced by rename keeps this mapping's inode alive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let (meta, data_start) = Self::check(&map)?;
        Ok(Self::from_parts(meta, data_start, Backing::File(map)))
    }

    fn check(map: &[u8]) -> Result<(PreparedMeta, usize), ModelError> {
        if map.len() < HEADER_FIXED + TRAILER || &map[..8] != MAGIC {
            return Err(invalid("not a prepared-weights file"));
        }
        let version = u32::from_le_bytes([map[8], map[9], map[10], map[11]]);
        if version != FORMAT_VERSION {
            return Err(invalid(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&map[16..24]);
        let json_len = usize::try_from(u64::from_le_bytes(len8)).map_err(|_| invalid("header length"))?;
        let json =
            map.get(HEADER_FIXED..HEADER_FIXED.saturating_add(json_len)).ok_or_else(|| invalid("truncated header"))?;
        let meta: PreparedMeta = serde_json::from_slice(json).map_err(|e| invalid(format!("header: {e}")))?;
        let data_start = align(HEADER_FIXED + json_len, DATA_ALIGN);
        let want = data_start.checked_add(meta.data_len).and_then(|n| n.checked_add(TRAILER));
        if want != Some(map.len()) {
            return Err(invalid(format!("{} bytes, the header says {want:?} (truncated?)", map.len())));
        }
        let data_len = meta.data_len;
        for t in &meta.tensors {
            let want = t.dims.iter().try_fold(t.elem.size(), |a, &d| a.checked_mul(d));
            let fits = t.offset.checked_add(t.len).is_some_and(|end| end <= data_len);
            if want != Some(t.len) || !fits || t.offset % TENSOR_ALIGN != 0 {
                return Err(invalid(format!("tensor {} is out of bounds", t.name)));
            }
        }
        let body = map.len() - TRAILER;
        let mut sum = [0u8; 16];
        sum.copy_from_slice(&map[body..]);
        if xxhash_rust::xxh3::xxh3_128(&map[..body]) != u128::from_le_bytes(sum) {
            return Err(invalid("checksum mismatch (damaged or partly written)"));
        }
        Ok((meta, data_start))
    }

    /// Writes the buffer to `path` exactly as held (the cache file format).
    pub fn write_to(&self, file: &mut std::fs::File) -> std::io::Result<()> {
        use std::io::Write;
        file.write_all(self.bytes())?;
        file.sync_all()
    }

    fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Anon(m) | Backing::File(m) => m,
        }
    }

    /// The metadata.
    #[must_use]
    pub fn meta(&self) -> &PreparedMeta {
        &self.meta
    }

    /// Whether the bytes come from a mapped cache file (else: built in this process).
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::File(_))
    }

    /// Looks up a tensor.
    #[must_use]
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.meta.tensors[i])
    }

    /// The bytes of a tensor.
    #[must_use]
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes()[self.data_start + t.offset..self.data_start + t.offset + t.len]
    }

    /// Offset of a tensor from the start of the whole buffer.
    #[must_use]
    pub fn absolute_offset(&self, t: &TensorInfo) -> usize {
        self.data_start + t.offset
    }

    /// The whole buffer (the cache file's bytes).
    #[must_use]
    pub fn buffer(&self) -> &[u8] {
        self.bytes()
    }

    /// Drops this process's resident pages of the quantized matrices (and of bf16 matrices
    /// where the graphs turn them into f32 at session creation: no AMX) when they are mapped
    /// from the cache file. ONNX Runtime packs those matrices into its own layout when a session
    /// is created and computes from the packed copy; without this the process would hold both.
    /// Correct whatever reads them later: a dropped page of a file mapping is read back from
    /// the (unchanged) file on access.
    pub fn release_packed_sources(&self) {
        let Backing::File(map) = &self.backing else { return };
        let converted = |t: &TensorInfo| t.elem == Elem::Bf16 && !bf16::amx_available();
        for t in self.meta.tensors.iter().filter(|t| t.quant.is_some() || converted(t)) {
            // SAFETY: a read-only shared mapping of a file that is never modified after it is
            // renamed into place (see `open`): MADV_DONTNEED only drops page-table entries, and
            // the next access maps the same bytes from the page cache or the file again.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.data_start + t.offset, t.len)
            };
        }
    }

    /// An f32 tensor's values.
    pub fn f32s(&self, name: &str) -> Result<&[f32], ModelError> {
        let t =
            self.info(name).filter(|t| t.elem == Elem::F32).ok_or_else(|| invalid(format!("no f32 tensor {name}")))?;
        bytemuck::try_cast_slice(self.tensor_bytes(t)).map_err(|e| invalid(format!("{name}: {e}")))
    }

    /// Bytes of all tensors.
    #[must_use]
    pub fn weight_bytes(&self) -> usize {
        self.meta.tensors.iter().map(|t| t.len).sum()
    }
}
