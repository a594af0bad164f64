//! The state codec: how a document's cached model state is stored.
//!
//! A stored state holds embedder layers `0..=max(selected)`, where *selected* are the layers whose
//! WKV matrices the reranker reads. Those feed the reranker directly and keep good precision;
//! the lower *pass-through* layers are only needed to resume the state with query tokens and are
//! stored coarser; layers above the highest selected one are never stored (they cannot affect
//! the score). Token-shift vectors are small (`2 x C` per layer) and kept in f16 (f32 in `Exact`).
//!
//! Blob layout (little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `RWST` |
//! | 2 | format version (1) |
//! | 4 | width `C` |
//! | 2 | stored layers `L` |
//! | 2 | selected count `S`, then `S x u16` selected layer ids |
//! | `L` | WKV precision code per layer (0 f32, 1 f16, 2 int8, 3 int4, 4 int6, 5 int5, 6 int3) |
//! | 1 | token-shift precision code (0 f32, 1 f16) |
//! | 4 | raw payload length, 4 compressed length |
//! | n | zstd-compressed payload |
//! | 4 | CRC-32 of everything before |
//!
//! Payload, per layer: `att_shift` and `ffn_shift` (`C` values each), then the WKV matrices
//! (`H x 64` rows of 64): f32/f16 values split into byte planes (compresses better), or b-bit
//! integers with one f32 scale per 64-value row (symmetric, `scale = max|x| / (2^(b-1) - 1)`);
//! int8 is stored as two's-complement bytes, narrower integers offset by `2^(b-1)` and packed
//! LSB-first (int4: the first value of a pair in the low nibble).

use half::f16;

use crate::model::ModelState;

const MAGIC: &[u8; 4] = b"RWST";
/// Blob format version written by this build.
pub const FORMAT_VERSION: u16 = 1;
const ROW: usize = 64;
const MAX_WIDTH: usize = 16_384;
const MAX_LAYERS: usize = 512;

/// Storage precision of one layer's WKV matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit float (lossless).
    F32,
    /// 16-bit float.
    F16,
    /// 8-bit integers, one scale per 64-value row.
    Int8,
    /// 6-bit integers, one scale per 64-value row.
    Int6,
    /// 5-bit integers, one scale per 64-value row.
    Int5,
    /// 4-bit integers, one scale per 64-value row.
    Int4,
    /// 3-bit integers, one scale per 64-value row.
    Int3,
}

impl Precision {
    fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Int8 => 2,
            Self::Int4 => 3,
            Self::Int6 => 4,
            Self::Int5 => 5,
            Self::Int3 => 6,
        }
    }
    /// Bits per stored value.
    fn bits(self) -> usize {
        match self {
            Self::F32 => 32,
            Self::F16 => 16,
            Self::Int8 => 8,
            Self::Int6 => 6,
            Self::Int5 => 5,
            Self::Int4 => 4,
            Self::Int3 => 3,
        }
    }
    /// Payload bytes for `n` values (n a multiple of 64): the values, plus one f32 scale per row
    /// for the integer formats.
    fn bytes(self, n: usize) -> usize {
        let scales = if self.bits() <= 8 { 4 * (n / ROW) } else { 0 };
        n * self.bits() / 8 + scales
    }
}

/// Precision choices of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    /// WKV precision of the layers the reranker reads.
    pub selected: Precision,
    /// WKV precision of the lower layers only needed to resume the state.
    pub pass_through: Precision,
    /// Token-shift precision (F32 or F16).
    pub shift: Precision,
    /// zstd level.
    pub zstd_level: i32,
}

/// Named codec configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Everything f32: lossless, largest.
    Exact,
    /// Selected layers f16, pass-through int8 (the default).
    #[default]
    Balanced,
    /// Selected layers int8, pass-through int6.
    Compact,
    /// Selected layers int4, pass-through int3: the smallest, with visibly coarser scores.
    Tiny,
}

impl Preset {
    /// All presets, default first.
    pub const ALL: [Preset; 4] = [Preset::Balanced, Preset::Exact, Preset::Compact, Preset::Tiny];

    /// The preset's codec settings.
    #[must_use]
    pub fn config(self) -> CodecConfig {
        use Precision::{Int3, Int4, Int6, Int8, F16, F32};
        match self {
            Preset::Exact => CodecConfig { selected: F32, pass_through: F32, shift: F32, zstd_level: 1 },
            Preset::Balanced => CodecConfig { selected: F16, pass_through: Int8, shift: F16, zstd_level: 3 },
            Preset::Compact => CodecConfig { selected: Int8, pass_through: Int6, shift: F16, zstd_level: 3 },
            Preset::Tiny => CodecConfig { selected: Int4, pass_through: Int3, shift: F16, zstd_level: 3 },
        }
    }

    /// Lower-case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Preset::Exact => "exact",
            Preset::Balanced => "balanced",
            Preset::Compact => "compact",
            Preset::Tiny => "tiny",
        }
    }

    /// Parses a name (case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

/// Why a blob could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not a state blob.
    #[error("not a state blob (bad magic)")]
    BadMagic,
    /// Written by a newer rwkvdb.
    #[error("state format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the blob.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The checksum does not match: the blob is damaged.
    #[error("state checksum mismatch (stored {expected:08x}, computed {found:08x})")]
    Checksum {
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        found: u32,
    },
    /// The blob ends early.
    #[error("state blob truncated")]
    Truncated,
    /// The state's shape does not match this codec (another model or layer selection).
    #[error("state shape mismatch: {0}")]
    ShapeMismatch(String),
    /// Structurally invalid content.
    #[error("corrupt state blob: {0}")]
    Corrupt(String),
    /// The state holds NaN or infinite values.
    #[error("state holds non-finite values")]
    NonFinite,
}

/// Encodes and decodes the states of one collection.
#[derive(Debug, Clone)]
pub struct StateCodec {
    config: CodecConfig,
    width: usize,
    layers: usize,
    selected: Vec<usize>,
    precisions: Vec<Precision>,
}

impl StateCodec {
    /// A codec for states of `stored_layers` layers of width `width`, where the reranker reads
    /// `selected_layers` (all `< stored_layers`).
    pub fn new(
        config: CodecConfig,
        width: usize,
        stored_layers: usize,
        selected_layers: &[usize],
    ) -> Result<Self, CodecError> {
        if width == 0 || width % ROW != 0 || width > MAX_WIDTH || stored_layers == 0 || stored_layers > MAX_LAYERS {
            return Err(CodecError::ShapeMismatch(format!("unsupported shape: width {width}, {stored_layers} layers")));
        }
        if !matches!(config.shift, Precision::F32 | Precision::F16) {
            return Err(CodecError::ShapeMismatch("token shifts must be f32 or f16".into()));
        }
        if selected_layers.iter().any(|&l| l >= stored_layers) {
            return Err(CodecError::ShapeMismatch(format!(
                "selected layers {selected_layers:?} exceed {stored_layers} stored layers"
            )));
        }
        let precisions = (0..stored_layers)
            .map(|l| if selected_layers.contains(&l) { config.selected } else { config.pass_through })
            .collect();
        Ok(Self { config, width, layers: stored_layers, selected: selected_layers.to_vec(), precisions })
    }

    /// A stable description of format, settings and layer roles (part of the collection fingerprint).
    #[must_use]
    pub fn fingerprint(&self) -> String {
        format!("rwst{FORMAT_VERSION}:{:?}:w{}:l{}:sel{:?}", self.config, self.width, self.layers, self.selected)
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(16 + 3 * self.layers);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.width as u32).to_le_bytes());
        h.extend_from_slice(&(self.layers as u16).to_le_bytes());
        h.extend_from_slice(&(self.selected.len() as u16).to_le_bytes());
        for &s in &self.selected {
            h.extend_from_slice(&(s as u16).to_le_bytes());
        }
        h.extend(self.precisions.iter().map(|p| p.code()));
        h.push(self.config.shift.code());
        h
    }

    fn raw_len(&self) -> usize {
        let c = self.width;
        let shift = 2 * c * self.config.shift.bytes(ROW) / ROW;
        self.precisions.iter().map(|p| shift + p.bytes(c * ROW)).sum()
    }

    /// Encodes a state (rejects NaN/inf and states of another shape).
    pub fn encode(&self, state: &ModelState) -> Result<Vec<u8>, CodecError> {
        let c = self.width;
        let per_layer = c * ROW;
        if state.layers != self.layers
            || state.width != c
            || state.att_shift.len() != self.layers * c
            || state.ffn_shift.len() != self.layers * c
            || state.wkv.len() != self.layers * per_layer
        {
            return Err(CodecError::ShapeMismatch(format!(
                "state has {} layers of width {}, codec expects {} of {}",
                state.layers, state.width, self.layers, c
            )));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&state.att_shift) || !finite(&state.ffn_shift) || !finite(&state.wkv) {
            return Err(CodecError::NonFinite);
        }
        let mut raw = Vec::with_capacity(self.raw_len());
        for (l, &p) in self.precisions.iter().enumerate() {
            for v in [&state.att_shift[l * c..(l + 1) * c], &state.ffn_shift[l * c..(l + 1) * c]] {
                put_values(&mut raw, v, self.config.shift);
            }
            put_values(&mut raw, &state.wkv[l * per_layer..(l + 1) * per_layer], p);
        }
        let compressed = zstd::bulk::compress(&raw, self.config.zstd_level)
            .map_err(|e| CodecError::Corrupt(format!("zstd: {e}")))?;
        let mut out = self.header();
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        out.extend_from_slice(&compressed);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a blob written by a codec with the same settings.
    pub fn decode(&self, blob: &[u8]) -> Result<ModelState, CodecError> {
        if blob.len() < 4 || &blob[..4] != MAGIC {
            return Err(if blob.len() < 4 { CodecError::Truncated } else { CodecError::BadMagic });
        }
        let (body, crc) = blob.split_at(blob.len().checked_sub(4).ok_or(CodecError::Truncated)?);
        let expected = u32::from_le_bytes(crc.try_into().map_err(|_| CodecError::Truncated)?);
        let found = crc32fast::hash(body);
        let mut r = Reader { b: body, pos: 4 };
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
        }
        if expected != found {
            return Err(CodecError::Checksum { expected, found });
        }
        let header = self.header();
        if body.len() < header.len() || body[..header.len()] != header[..] {
            return Err(CodecError::ShapeMismatch(
                "blob written with another width, layer selection or precision".into(),
            ));
        }
        r.pos = header.len();
        let raw_len = r.u32()? as usize;
        let comp_len = r.u32()? as usize;
        if raw_len != self.raw_len() {
            return Err(CodecError::Corrupt(format!("payload of {raw_len} bytes, expected {}", self.raw_len())));
        }
        let comp = r.take(comp_len)?;
        if r.pos != body.len() {
            return Err(CodecError::Corrupt("trailing bytes".into()));
        }
        let raw = zstd::bulk::decompress(comp, raw_len).map_err(|e| CodecError::Corrupt(format!("zstd: {e}")))?;
        if raw.len() != raw_len {
            return Err(CodecError::Corrupt("payload size mismatch".into()));
        }
        let c = self.width;
        let mut st = ModelState::zeros(self.layers, c);
        let mut p = Reader { b: &raw, pos: 0 };
        let per_layer = c * ROW;
        for (l, &prec) in self.precisions.iter().enumerate() {
            get_values(&mut p, &mut st.att_shift[l * c..(l + 1) * c], self.config.shift)?;
            get_values(&mut p, &mut st.ffn_shift[l * c..(l + 1) * c], self.config.shift)?;
            get_values(&mut p, &mut st.wkv[l * per_layer..(l + 1) * per_layer], prec)?;
        }
        Ok(st)
    }
}

/// Adding and subtracting 1.5 * 2^23 rounds an f32 below 2^22 in magnitude to the nearest
/// integer (ties to even) in two vectorisable adds; `f32::round` is a libm call per value (1% of
/// an import's CPU). Quantized values are at most `qmax` in magnitude.
const ROUND: f32 = 12_582_912.0;

fn put_values(out: &mut Vec<u8>, v: &[f32], p: Precision) {
    match p {
        Precision::F32 => {
            // Byte planes: all first bytes, then all second bytes, ...
            for plane in 0..4 {
                out.extend(v.iter().map(|x| x.to_le_bytes()[plane]));
            }
        }
        Precision::F16 => {
            let h: Vec<[u8; 2]> = v.iter().map(|&x| f16::from_f32(x).to_le_bytes()).collect();
            out.extend(h.iter().map(|b| b[0]));
            out.extend(h.iter().map(|b| b[1]));
        }
        _ => {
            let bits = p.bits();
            let qmax = ((1i32 << (bits - 1)) - 1) as f32;
            let scales: Vec<f32> =
                v.chunks_exact(ROW).map(|row| row.iter().fold(0.0f32, |m, x| m.max(x.abs())) / qmax).collect();
            for s in &scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            for (row, &s) in v.chunks_exact(ROW).zip(&scales) {
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                let q = row.iter().map(|x| ((x * inv + ROUND) - ROUND).clamp(-qmax, qmax) as i32);
                if bits == 8 {
                    out.extend(q.map(|x| x as i8 as u8));
                } else {
                    // Offset to unsigned and pack LSB-first: a 64-value row is a whole number of bytes.
                    let offset = 1i32 << (bits - 1);
                    let (mut acc, mut filled) = (0u64, 0);
                    for x in q {
                        acc |= ((x + offset) as u64) << filled;
                        filled += bits;
                        while filled >= 8 {
                            out.push(acc as u8);
                            acc >>= 8;
                            filled -= 8;
                        }
                    }
                }
            }
        }
    }
}

fn get_values(r: &mut Reader, out: &mut [f32], p: Precision) -> Result<(), CodecError> {
    let n = out.len();
    match p {
        Precision::F32 => {
            let planes = r.take(4 * n)?;
            for (i, o) in out.iter_mut().enumerate() {
                *o = f32::from_le_bytes([planes[i], planes[n + i], planes[2 * n + i], planes[3 * n + i]]);
            }
        }
        Precision::F16 => {
            let planes = r.take(2 * n)?;
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16::from_le_bytes([planes[i], planes[n + i]]).to_f32();
            }
        }
        _ => {
            let bits = p.bits();
            let rows = n / ROW;
            let scale_bytes = r.take(4 * rows)?;
            let scales: Vec<f32> =
                scale_bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if scales.iter().any(|s| !s.is_finite() || *s < 0.0) {
                return Err(CodecError::Corrupt("invalid quantisation scale".into()));
            }
            let q = r.take(n * bits / 8)?;
            if bits == 8 {
                for ((o, &b), i) in out.iter_mut().zip(q).zip(0..) {
                    *o = f32::from(b as i8) * scales[i / ROW];
                }
            } else {
                let offset = (1i32 << (bits - 1)) as f32;
                let mask = (1u64 << bits) - 1;
                let row_bytes = ROW * bits / 8;
                for ((orow, qrow), &s) in out.chunks_exact_mut(ROW).zip(q.chunks_exact(row_bytes)).zip(&scales) {
                    let (mut acc, mut filled, mut next) = (0u64, 0, 0);
                    for o in orow {
                        while filled < bits {
                            acc |= u64::from(qrow[next]) << filled;
                            next += 1;
                            filled += 8;
                        }
                        *o = ((acc & mask) as f32 - offset) * s;
                        acc >>= bits;
                        filled -= bits;
                    }
                }
            }
        }
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(CodecError::Truncated)?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
