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
    #[must_use]
    pub fn zeros(layers: usize, width: usize) -> Self {
        Self {
            layers,
            width,
            att_shift: vec![0.0; layers * width],
            ffn_shift: vec![0.0; layers * width],
            wkv: vec![0.0; layers * width * HEAD_SIZE],
        }
    }

    /// Layer `l`'s time-mix shift, channel-mix shift and WKV matrices (`C`, `C`, `H x 64 x 64`
    /// values), as slices of the flat vectors.
    pub(crate) fn layer(&self, l: usize) -> (&[f32], &[f32], &[f32]) {
        let (c, w) = (self.width, self.width * HEAD_SIZE);
        (&self.att_shift[l * c..(l + 1) * c], &self.ffn_shift[l * c..(l + 1) * c], &self.wkv[l * w..(l + 1) * w])
    }

    /// Mutable [`Self::layer`].
    pub(crate) fn layer_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
        let (c, w) = (self.width, self.width * HEAD_SIZE);
        (
            &mut self.att_shift[l * c..(l + 1) * c],
            &mut self.ffn_shift[l * c..(l + 1) * c],
            &mut self.wkv[l * w..(l + 1) * w],
        )
    }
}
