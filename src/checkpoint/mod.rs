//! Checkpoint files: `PyTorch` `.pth` (zip + pickle, read without executing any pickle code) and
//! `.safetensors`, loaded into a [`StateDict`] of `f32` tensors keyed by their official names.

use std::collections::BTreeMap;
use std::path::Path;

/// A dense tensor converted to `f32`, row-major, with its original shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Dimensions, outermost first (`PyTorch` order).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl RawTensor {
    /// Builds a tensor; `data.len()` must equal the product of `shape`.
    #[must_use]
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Element type a tensor had in its file (everything is converted to `f32` on load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
}

impl StoredDType {
    /// Lower-case name: `f32`, `f16`, `bf16`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            StoredDType::F32 => "f32",
            StoredDType::F16 => "f16",
            StoredDType::BF16 => "bf16",
        }
    }
}

/// The contents of a checkpoint: named float tensors plus named integer lists
/// (e.g. `reranker_layer_idx`, stored either as a Python list or an integer tensor).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    /// Float tensors by key, converted to `f32`.
    pub tensors: BTreeMap<String, RawTensor>,
    /// Integer values by key (lists of ints, int tensors flattened, single ints as one-element lists).
    pub ints: BTreeMap<String, Vec<i64>>,
    /// The dtype most tensors had in the file (informational).
    pub stored_dtype: Option<StoredDType>,
}

impl StateDict {
    /// Looks up a tensor by key.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&RawTensor> {
        self.tensors.get(key)
    }
}

mod error;
pub mod pickle;
pub mod pth;
pub mod safetensors;
pub mod synth;

pub use error::CheckpointError;

/// Loads a checkpoint file (`.pth` zip or `.safetensors`, told apart by content).
pub fn load(path: &Path) -> Result<StateDict, CheckpointError> {
    let io = |e| CheckpointError::Io { path: path.to_path_buf(), source: e };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 4];
    let n = std::io::Read::read(&mut file, &mut magic).map_err(io)?;
    if n == 4 && magic == *b"PK\x03\x04" {
        std::io::Seek::rewind(&mut file).map_err(io)?;
        return pth::read(std::io::BufReader::new(file));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    load_bytes(&bytes)
}

/// Loads a checkpoint from memory.
pub fn load_bytes(bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    if bytes.starts_with(b"PK\x03\x04") {
        return pth::read(std::io::Cursor::new(bytes));
    }
    // safetensors: u64 header length, then a JSON object.
    if bytes.len() >= 9 && bytes[8] == b'{' {
        return safetensors::read(bytes);
    }
    Err(CheckpointError::NotACheckpoint)
}
