//! Checkpoint files: PyTorch `.pth` (zip + pickle, read without executing any pickle code) and
//! `.safetensors`, loaded into a [`StateDict`] of `f32` tensors keyed by their official names.

use std::collections::BTreeMap;


/// A dense tensor converted to `f32`, row-major, with its original shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Dimensions, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl RawTensor {
    /// Builds a tensor; `data.len()` must equal the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element.
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
    pub fn get(&self, key: &str) -> Option<&RawTensor> {
        self.tensors.get(key)
    }
}

mod error;
pub use error::CheckpointError;
