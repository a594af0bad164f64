//! `.safetensors` files (F32, F16, BF16 tensors; I64/I32 become integer lists).

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{CheckpointError, RawTensor, StateDict, StoredDType};

/// Parses a safetensors buffer.
pub fn read(bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Safetensors(e.to_string()))?;
    let mut sd = StateDict::default();
    let mut counts = [0usize; 3];
    for (name, view) in st.tensors() {
        let data = view.data();
        let shape = view.shape().to_vec();
        let floats = |f: &dyn Fn(&[u8]) -> f32, size: usize| data.chunks_exact(size).map(f).collect::<Vec<f32>>();
        match view.dtype() {
            Dtype::F32 => {
                counts[0] += 1;
                let v = floats(&|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]), 4);
                sd.tensors.insert(name, RawTensor::new(shape, v));
            }
            Dtype::F16 => {
                counts[1] += 1;
                let v = floats(&|c| f16::from_le_bytes([c[0], c[1]]).to_f32(), 2);
                sd.tensors.insert(name, RawTensor::new(shape, v));
            }
            Dtype::BF16 => {
                counts[2] += 1;
                let v = floats(&|c| bf16::from_le_bytes([c[0], c[1]]).to_f32(), 2);
                sd.tensors.insert(name, RawTensor::new(shape, v));
            }
            Dtype::I64 => {
                let v = data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
                sd.ints.insert(name, v);
            }
            Dtype::I32 => {
                let v = data.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
                sd.ints.insert(name, v);
            }
            other => return Err(CheckpointError::UnsupportedDType(format!("{other:?} ({name})"))),
        }
    }
    let most = counts.iter().enumerate().max_by_key(|(_, c)| **c).filter(|(_, c)| **c > 0).map(|(i, _)| i);
    sd.stored_dtype = most.map(|i| [StoredDType::F32, StoredDType::F16, StoredDType::BF16][i]);
    Ok(sd)
}
