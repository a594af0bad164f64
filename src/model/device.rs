//! Execution-provider registration.
//!
//! CPU is the default. With the `cuda` cargo feature, [`Device::Cuda`] registers ONNX Runtime's
//! CUDA execution provider and fails loudly when it cannot be used (no silent CPU fallback). The
//! WKV custom operator runs on the CPU either way; ONNX Runtime inserts the device copies.

use ort::session::builder::SessionBuilder;

use super::ModelError;

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider on the given device (needs the `cuda` feature and a
    /// CUDA-enabled ONNX Runtime). Fails with [`ModelError::CudaUnavailable`] when absent.
    Cuda(i32),
}

/// Registers the execution provider for `device` on `builder`.
pub fn register(builder: SessionBuilder, device: Device) -> Result<SessionBuilder, ModelError> {
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(id) => register_cuda(builder, id),
    }
}

#[cfg(feature = "cuda")]
fn register_cuda(builder: SessionBuilder, id: i32) -> Result<SessionBuilder, ModelError> {
    use ort::ep::ExecutionProvider;
    let ep = ort::ep::CUDA::default().with_device_id(id);
    match ort::ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(ModelError::CudaUnavailable(
                "this ONNX Runtime build has no CUDA execution provider (install onnxruntime-gpu's library \
                 and point ORT_DYLIB_PATH at it)"
                    .into(),
            ))
        }
        Err(e) => return Err(ModelError::CudaUnavailable(e.to_string())),
    }
    builder
        .with_execution_providers([ep.build().error_on_failure()])
        .map_err(|e| ModelError::CudaUnavailable(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(_builder: SessionBuilder, _id: i32) -> Result<SessionBuilder, ModelError> {
    Err(ModelError::CudaUnavailable("rwkvdb was built without the `cuda` feature".into()))
}
