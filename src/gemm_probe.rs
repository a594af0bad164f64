//! Measures this machine's fp32 GEMM ceiling through ONNX Runtime's own `MatMul`, the kernel the
//! model graphs use, so throughput can be reported as a fraction of what the hardware delivers.

use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use crate::model::onnx::{Dim, ElemType, Graph};
use crate::model::{ort_env, ModelError};

/// Best GFLOP/s of `[n, n] x [n, n]` over `reps` runs, with `threads` intra-op threads (0 = all).
pub fn gemm_gflops(n: usize, reps: usize, threads: usize) -> Result<f64, ModelError> {
    let (_, env) = ort_env::ensure_loaded(None)?;
    let mut g = Graph::new();
    let x = g.input("x", ElemType::F32, &[Dim::Fixed(n as i64), Dim::Fixed(n as i64)]);
    let w: Vec<f32> = (0..n * n).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
    let w = g.weight("w", &[n, n], &w);
    let y = g.node("MatMul", &[&x, &w], &[]);
    g.output(&y, "y", ElemType::F32, &[Dim::Fixed(n as i64), Dim::Fixed(n as i64)]);
    let bytes = g.into_model(17, &[]);
    let threads =
        if threads == 0 { std::thread::available_parallelism().map_or(1, std::num::NonZero::get) } else { threads };
    let err = |e: ort::Error| ModelError::Ort(e.to_string());
    let mut session = Session::builder(&env)
        .map_err(err)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| ModelError::Ort(e.to_string()))?
        .with_intra_threads(threads)
        .map_err(|e| ModelError::Ort(e.to_string()))?
        .commit_from_memory(&bytes)
        .map_err(err)?;
    let best = best_run_seconds(&mut session, n, n, reps)?;
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Shortest of `reps` runs (after one warm-up) of a one-input graph fed an `[m, k]` matrix.
fn best_run_seconds(session: &mut Session, m: usize, k: usize, reps: usize) -> Result<f64, ModelError> {
    let err = |e: ort::Error| ModelError::Ort(e.to_string());
    let input: Vec<f32> = (0..m * k).map(|i| ((i % 89) as f32 - 44.0) / 89.0).collect();
    let mut best = f64::MAX;
    for _ in 0..=reps.max(1) {
        let t = Tensor::from_array((vec![m, k], input.clone())).map_err(err)?;
        let start = Instant::now();
        let out = session.run(vec![("x", t)]).map_err(err)?;
        best = best.min(start.elapsed().as_secs_f64());
        drop(out);
    }
    Ok(best)
}

/// The CPU flags of `wanted` this machine has (from `/proc/cpuinfo`), space-separated, for
/// benchmark records.
#[must_use]
pub fn cpu_flags(wanted: &[&str]) -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().filter(|f| wanted.contains(f)).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A matrix kernel the graphs can use for `x @ W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixKernel {
    /// ONNX Runtime's f32 `MatMul`, weights not prepacked (as the f32 graphs run it).
    F32,
    /// `rwkvdb:MatMulBf16`, the AMX-BF16 tile kernel (only where [`crate::model::amx_available`]).
    Bf16Amx,
}

/// Best GFLOP/s of `[m, k] x [k, n]` through one graph node of `kernel` over `reps` runs, on
/// all cores.
pub fn matmul_gflops(m: usize, k: usize, n: usize, kernel: MatrixKernel, reps: usize) -> Result<f64, ModelError> {
    use crate::model::bf16;
    use crate::model::wkv::DOMAIN;
    let (_, env) = ort_env::ensure_loaded(None)?;
    let mut g = Graph::new();
    let x = g.input("x", ElemType::F32, &[Dim::Fixed(m as i64), Dim::Fixed(k as i64)]);
    let w: Vec<f32> = (0..k * n).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
    let y = match kernel {
        MatrixKernel::F32 => {
            let w = g.weight("w", &[k, n], &w);
            g.node("MatMul", &[&x, &w], &[])
        }
        MatrixKernel::Bf16Amx => {
            if !bf16::amx_available() || !bf16::fits(k, n) {
                return Err(ModelError::Ort("the AMX-BF16 kernel is not available here".into()));
            }
            let mut packed = vec![0u16; k * n];
            bf16::pack(&w, k, n, &mut packed);
            let w =
                g.bytes_initializer("w", ElemType::Bf16, &[n / 16, k / 32, 16, 16, 2], bytemuck::cast_slice(&packed));
            g.node_in(DOMAIN, bf16::MATMUL_BF16, &[&x, &w], &[])
        }
    };
    g.output(&y, "y", ElemType::F32, &[Dim::Fixed(m as i64), Dim::Fixed(n as i64)]);
    let bytes = g.into_model(17, &[DOMAIN]);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let err = |e: ort::Error| ModelError::Ort(e.to_string());
    let ops = ort::operator::OperatorDomain::new(DOMAIN).and_then(|d| d.add(bf16::MatMulBf16Op)).map_err(err)?;
    let mut session = Session::builder(&env)
        .map_err(err)?
        .with_intra_threads(threads)
        .map_err(|e| ModelError::Ort(e.to_string()))?
        .with_config_entry("session.disable_prepacking", "1")
        .map_err(|e| ModelError::Ort(e.to_string()))?
        .with_operators(ops)
        .map_err(|e| ModelError::Ort(e.to_string()))?
        .commit_from_memory(&bytes)
        .map_err(err)?;
    let best = best_run_seconds(&mut session, m, k, reps)?;
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}
