//! The recurrent state the model carries from one token to the next: what rwkvdb stores per
//! document and resumes with a query.

use super::weights::HEAD_SIZE;

/// The recurrent state of one sequence for the first `layers` embedder layers.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    /// Number of layers held.
    pub layers: usize,
    /// Model width.
    pub width: usize,
    /// Time-mix token shift (previous `ln1` output), `[layers, C]`.
    pub att_shift: Vec<f32>,
    /// Channel-mix token shift (previous `ln2` output), `[layers, C]`.
    pub ffn_shift: Vec<f32>,
    /// WKV matrices `[layers, H, 64, 64]` (row = value index).
    pub wkv: Vec<f32>,
}

impl ModelState {
    /// The all-zero state every sequence starts from.
    pub fn zeros(layers: usize, width: usize) -> Self {
        Self {
            layers,
            width,
            att_shift: vec![0.0; layers * width],
            ffn_shift: vec![0.0; layers * width],
            wkv: vec![0.0; layers * width * HEAD_SIZE],
        }
    }
}
