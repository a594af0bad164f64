//! The WKV-7 recurrence as an ONNX Runtime custom operator (`rwkvdb:Wkv7`).
//!
//! Everything else in the RWKV-7 graph is standard ONNX; this one op carries the per-head
//! 64x64 state through time. For each sequence `n`, head `h`, step `t` (value index `i`, key index `j`):
//!
//! ```text
//! sa_i   = sum_j S[i][j] * a_j
//! S[i][j] = S[i][j] * decay_j + sa_i * b_j + v_i * k_j
//! y_i    = sum_j S[i][j] * r_j
//! ```
//!
//! Inputs: `r, decay, k, v, a, b` `[N, T, C]`, `state` `[N, H, 64, 64]`, optional `lengths` `[N]`
//! (int64: sequence `n` uses only its first `lengths[n]` steps; later outputs are zero and do not
//! touch the state, so right padding never leaks into a result). Outputs: `y` `[N, T, C]` and the
//! final state `[N, H, 64, 64]`.

use ort::operator::{BoxedKernel, ComputeContext, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

/// Custom-op domain of rwkvdb's graphs.
pub const DOMAIN: &str = "rwkvdb";
/// Name of the WKV operator inside [`DOMAIN`].
pub const OP_NAME: &str = "Wkv7";

const N: usize = 64;

/// Per-step inputs of one head, each 64 values.
pub struct StepInputs<'a> {
    /// Receptance.
    pub r: &'a [f32],
    /// Decay factor in (0, 1), already exponentiated.
    pub decay: &'a [f32],
    /// Key.
    pub k: &'a [f32],
    /// Value.
    pub v: &'a [f32],
    /// In-context removal direction (`-kk`).
    pub a: &'a [f32],
    /// In-context write direction (`kk * a`).
    pub b: &'a [f32],
}

/// One WKV step for one head. Written over fixed-size arrays (no bounds checks) with 16
/// independent accumulators per dot product, so the compiler vectorises it: float reductions are
/// not reassociated otherwise. `$fma(a, b, c)` computes `a * b + c`.
macro_rules! wkv_step_body {
    ($state:expr, $x:expr, $y:expr, $fma:expr) => {{
        let fma = $fma;
        let (Ok(r), Ok(w), Ok(k), Ok(a), Ok(b), Ok(v)) = (
            <&[f32; N]>::try_from(&$x.r[..N]),
            <&[f32; N]>::try_from(&$x.decay[..N]),
            <&[f32; N]>::try_from(&$x.k[..N]),
            <&[f32; N]>::try_from(&$x.a[..N]),
            <&[f32; N]>::try_from(&$x.b[..N]),
            <&[f32; N]>::try_from(&$x.v[..N]),
        ) else {
            return;
        };
        let Ok(state) = <&mut [f32; N * N]>::try_from(&mut $state[..N * N]) else { return };
        let Ok(y) = <&mut [f32; N]>::try_from(&mut $y[..N]) else { return };
        for i in 0..N {
            let row: &mut [f32; N] = match (&mut state[i * N..(i + 1) * N]).try_into() {
                Ok(row) => row,
                Err(_) => return,
            };
            let mut acc = [0.0f32; 16];
            for c in 0..N / 16 {
                for l in 0..16 {
                    acc[l] = fma(row[c * 16 + l], a[c * 16 + l], acc[l]);
                }
            }
            let sa = acc.iter().sum::<f32>();
            let vi = v[i];
            let mut out = [0.0f32; 16];
            for c in 0..N / 16 {
                for l in 0..16 {
                    let j = c * 16 + l;
                    let s = fma(row[j], w[j], fma(sa, b[j], k[j] * vi));
                    row[j] = s;
                    out[l] = fma(s, r[j], out[l]);
                }
            }
            y[i] = out.iter().sum::<f32>();
        }
    }};
}

/// Portable version: plain multiply-add (a fused `mul_add` is a slow library call without FMA
/// hardware).
fn step_generic(state: &mut [f32], x: &StepInputs, y: &mut [f32]) {
    wkv_step_body!(state, x, y, |a: f32, b: f32, c: f32| a * b + c);
}

/// AVX2 + FMA: each 64-wide row is 8 registers; the dot products keep 8 partial sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn step_avx2(state: &mut [f32], x: &StepInputs, y: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32,
        _mm_movehl_ps, _mm_shuffle_ps,
    };
    if state.len() < N * N || y.len() < N || [x.r, x.decay, x.k, x.v, x.a, x.b].iter().any(|s| s.len() < N) {
        return;
    }
    // SAFETY (whole body): every pointer below stays within the slices checked above
    // (rows i*64..i*64+64 of `state`, offsets 0..64 of the 64-value inputs).
    let (r, w, k, a, b) = (x.r.as_ptr(), x.decay.as_ptr(), x.k.as_ptr(), x.a.as_ptr(), x.b.as_ptr());
    let hsum = |v: __m256| -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    };
    for i in 0..N {
        let row = state.as_mut_ptr().add(i * N);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut rows = [_mm256_setzero_ps(); 8];
        for c in 0..8 {
            rows[c] = _mm256_loadu_ps(row.add(c * 8));
            acc[c & 1] = _mm256_fmadd_ps(rows[c], _mm256_loadu_ps(a.add(c * 8)), acc[c & 1]);
        }
        let sa = _mm256_set1_ps(hsum(_mm256_add_ps(acc[0], acc[1])));
        let vi = _mm256_set1_ps(*x.v.get_unchecked(i));
        let mut out = [_mm256_setzero_ps(); 2];
        for c in 0..8 {
            let kv = _mm256_mul_ps(_mm256_loadu_ps(k.add(c * 8)), vi);
            let t = _mm256_fmadd_ps(sa, _mm256_loadu_ps(b.add(c * 8)), kv);
            let s = _mm256_fmadd_ps(rows[c], _mm256_loadu_ps(w.add(c * 8)), t);
            _mm256_storeu_ps(row.add(c * 8), s);
            out[c & 1] = _mm256_fmadd_ps(s, _mm256_loadu_ps(r.add(c * 8)), out[c & 1]);
        }
        *y.get_unchecked_mut(i) = hsum(_mm256_add_ps(out[0], out[1]));
    }
}

/// Which instruction set the kernel uses, decided once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 + FMA.
    Avx2,
    /// Whatever the compile target allows.
    Generic,
}

/// Detects the best instruction set available on this CPU.
pub fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Generic
}

/// Runs one WKV step on one head's `state` (64x64, row = value index), writing 64 outputs to `y`.
///
/// All slices must hold at least 64 values (`state` 4096).
#[inline]
pub fn step(isa: Isa, state: &mut [f32], x: &StepInputs, y: &mut [f32]) {
    match isa {
        // SAFETY: the features are checked here, whatever `isa` the caller passed (the check
        // is a cached flag, negligible next to a 64x64 step).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") => unsafe {
            step_avx2(state, x, y);
        },
        _ => step_generic(state, x, y),
    }
}

/// A raw pointer that may cross threads: each parallel task writes a disjoint region.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used to hand disjoint sub-slices of one output buffer to ORT's worker threads.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not the raw field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// The ONNX Runtime operator descriptor.
pub struct Wkv7Op;

impl Operator for Wkv7Op {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        let f = || OperatorInput::required(TensorElementType::Float32);
        [f(), f(), f(), f(), f(), f(), f(), OperatorInput::optional(TensorElementType::Int64)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32), OperatorOutput::required(TensorElementType::Float32)]
    }

    // No `infer_shape`: ORT 1.31 aborts inside the shape-inference callback for this op's
    // optional input; output shapes are simply left to run time.
    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let isa = detect_isa();
        // `state_out = 0`: nobody reads the final state; the second output is then empty.
        let state_out = info.get::<i64>("state_out").unwrap_or(1) != 0;
        Ok(Box::new(move |ctx: &ComputeContext| run_kernel(ctx, isa, state_out)))
    }
}

fn missing(what: &str) -> ort::Error {
    ort::Error::new(format!("Wkv7: missing {what}"))
}

fn run_kernel(ctx: &ComputeContext, isa: Isa, state_out: bool) -> ort::Result<()> {
    let mut ins: Vec<&[f32]> = Vec::with_capacity(6);
    let mut shape: Vec<i64> = Vec::new();
    let values: Vec<_> = (0..7).map(|i| ctx.input(i)).collect::<ort::Result<Vec<_>>>()?;
    for (i, v) in values.iter().enumerate().take(6) {
        let v = v.as_ref().ok_or_else(|| missing("input"))?;
        let (s, d) = v.try_extract_tensor::<f32>()?;
        if i == 0 {
            shape = s.to_vec();
        } else if **s != *shape {
            return Err(ort::Error::new(format!("Wkv7: input {i} has shape {s:?}, expected {shape:?}")));
        }
        ins.push(d);
    }
    let state_in = values[6].as_ref().ok_or_else(|| missing("state"))?;
    let (state_shape, state_data) = state_in.try_extract_tensor::<f32>()?;
    let state_shape = state_shape.to_vec();
    let [n, t, c] = shape[..] else {
        return Err(ort::Error::new(format!("Wkv7: r must be [N, T, C], got {shape:?}")));
    };
    let (n, t, c) = (n as usize, t as usize, c as usize);
    let h = c / N;
    if c % N != 0 || state_shape != [n as i64, h as i64, N as i64, N as i64] {
        return Err(ort::Error::new(format!("Wkv7: state shape {state_shape:?} does not match r {shape:?}")));
    }
    let lengths_value = ctx.input(7)?;
    let lengths: Vec<usize> = match &lengths_value {
        Some(l) => {
            let (ls, ld) = l.try_extract_tensor::<i64>()?;
            if ls.len() != 1 || ls[0] as usize != n {
                return Err(ort::Error::new(format!("Wkv7: lengths shape {ls:?}, expected [{n}]")));
            }
            ld.iter().map(|&x| (x.max(0) as usize).min(t)).collect()
        }
        None => vec![t; n],
    };

    // The final state goes to output 1, or (`state_out` off) to a buffer of each task's own
    // while output 1 is an empty [0] tensor.
    let out_shape = if state_out { state_shape.clone() } else { vec![0] };
    let mut state_value = ctx.output(1, out_shape)?.ok_or_else(|| missing("state output"))?;
    let (_, state) = state_value.try_extract_tensor_mut::<f32>()?;
    if state_out {
        state.copy_from_slice(state_data);
    }
    let mut y_out = ctx.output(0, shape.clone())?.ok_or_else(|| missing("y output"))?;
    let (_, y) = y_out.try_extract_tensor_mut::<f32>()?;
    y.fill(0.0);

    let state_ptr = SendPtr(state.as_mut_ptr());
    let y_ptr = SendPtr(y.as_mut_ptr());
    let (r, w, k, v, a, b) = (ins[0], ins[1], ins[2], ins[3], ins[4], ins[5]);
    let lengths = &lengths;
    ctx.par_for(n * h, n * h, move |task| {
        let (seq, head) = (task / h, task % h);
        let mut own = Vec::new();
        let st: &mut [f32] = if state_out {
            // SAFETY: task (seq, head) owns state[seq, head] (4096 floats) and
            // y[seq, :, head*64..+64]; no two tasks share a region, and both buffers outlive
            // `par_for`.
            unsafe { std::slice::from_raw_parts_mut(state_ptr.get().add(task * N * N), N * N) }
        } else {
            own.extend_from_slice(&state_data[task * N * N..(task + 1) * N * N]);
            &mut own
        };
        for step_t in 0..lengths[seq] {
            let off = (seq * t + step_t) * c + head * N;
            let x = StepInputs {
                r: &r[off..off + N],
                decay: &w[off..off + N],
                k: &k[off..off + N],
                v: &v[off..off + N],
                a: &a[off..off + N],
                b: &b[off..off + N],
            };
            // SAFETY: see above; `off..off+64` lies in this task's part of y.
            let yo = unsafe { std::slice::from_raw_parts_mut(y_ptr.get().add(off), N) };
            step(isa, st, &x, yo);
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recurrence written naively in f64, as an independent check of the vectorised step.
    fn naive(state: &mut [f64], x: &[Vec<f32>; 6]) -> Vec<f64> {
        let [r, w, k, v, a, b] = x;
        let mut y = vec![0.0; N];
        for i in 0..N {
            let sa: f64 = (0..N).map(|j| state[i * N + j] * f64::from(a[j])).sum();
            for j in 0..N {
                let s = &mut state[i * N + j];
                *s = *s * f64::from(w[j]) + sa * f64::from(b[j]) + f64::from(v[i]) * f64::from(k[j]);
                y[i] += *s * f64::from(r[j]);
            }
        }
        y
    }

    #[test]
    fn vectorised_step_matches_naive_recurrence() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for isa in [detect_isa(), Isa::Generic] {
            let mut s32: Vec<f32> = (0..N * N).map(|_| rnd()).collect();
            let mut s64: Vec<f64> = s32.iter().map(|&v| f64::from(v)).collect();
            for _ in 0..5 {
                let x: [Vec<f32>; 6] =
                    std::array::from_fn(|i| (0..N).map(|_| if i == 1 { 0.5 + rnd() * 0.9 } else { rnd() }).collect());
                let mut y = vec![0.0f32; N];
                let inputs = StepInputs { r: &x[0], decay: &x[1], k: &x[2], v: &x[3], a: &x[4], b: &x[5] };
                step(isa, &mut s32, &inputs, &mut y);
                let want = naive(&mut s64, &x);
                for i in 0..N {
                    assert!((f64::from(y[i]) - want[i]).abs() < 1e-4, "{isa:?} y[{i}] {} vs {}", y[i], want[i]);
                }
            }
            for (a, b) in s32.iter().zip(&s64) {
                assert!((f64::from(*a) - b).abs() < 1e-4);
            }
        }
    }
}
