//! The two custom operators of int8 matrices (domain [`DOMAIN`]): `QuantizeRows` turns each
//! activation row into uint8 codes with its own scale before ONNX Runtime's `MatMulInteger`, and
//! `DequantizeRows` turns the int32 accumulators back into f32 with the row and column scales.
//! One node each instead of eight and three standard ones: session creation time grows with the
//! node count (4.3-5.6 s -> 0.86 s at 0.1B), and one pass over the data is cheaper than several.

use ort::operator::{BoxedKernel, ComputeContext, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::wkv::SendPtr;
#[cfg(doc)]
use super::wkv::DOMAIN;

/// Name of the per-row activation quantizer inside [`DOMAIN`] (int8 weights).
pub const QUANTIZE_ROWS: &str = "QuantizeRows";

/// `rwkvdb:QuantizeRows`: each row (last axis) of an f32 tensor to uint8 with its own scale,
/// `scale = max(max|row| / 127, 1e-30)`, `q = round_half_even(x * (1 / scale)) + 128`. Outputs the codes
/// (same shape) and the scales (`[..., 1]`). One node instead of eight standard ones: ONNX
/// Runtime's session creation time grows with the node count.
pub struct QuantizeRowsOp;

impl Operator for QuantizeRowsOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        QUANTIZE_ROWS
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Uint8), OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(|ctx: &ComputeContext| quantize_rows(ctx)))
    }
}

fn quantize_rows(ctx: &ComputeContext) -> ort::Result<()> {
    let input = ctx.input(0)?.ok_or_else(|| ort::Error::new("QuantizeRows: missing input"))?;
    let (shape, x) = input.try_extract_tensor::<f32>()?;
    let shape = shape.to_vec();
    let k = shape.last().map_or(1, |&d| d.max(1) as usize);
    let mut scale_shape = shape.clone();
    if let Some(last) = scale_shape.last_mut() {
        *last = 1;
    }
    let mut q_out = ctx.output(0, shape)?.ok_or_else(|| ort::Error::new("QuantizeRows: missing output"))?;
    let (_, q) = q_out.try_extract_tensor_mut::<u8>()?;
    let mut s_out = ctx.output(1, scale_shape)?.ok_or_else(|| ort::Error::new("QuantizeRows: missing output"))?;
    let (_, scales) = s_out.try_extract_tensor_mut::<f32>()?;
    let rows = scales.len();
    let (q_ptr, s_ptr) = (SendPtr(q.as_mut_ptr()), SendPtr(scales.as_mut_ptr()));
    ctx.par_for(rows, rows, move |row| {
        // SAFETY: task `row` alone writes codes[row*k..row*k+k] and scales[row]; both buffers
        // outlive `par_for`.
        let codes = unsafe { std::slice::from_raw_parts_mut(q_ptr.get().add(row * k), k) };
        let scale = unsafe { &mut *s_ptr.get().add(row) };
        quantize_row(&x[row * k..(row + 1) * k], codes, scale);
    })?;
    Ok(())
}

/// One row of [`QuantizeRowsOp`].
fn quantize_row(row: &[f32], codes: &mut [u8], scale: &mut f32) {
    // Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to the nearest
    // integer, ties to even, in two vectorisable adds (`round_ties_even` is a libm call on the
    // baseline x86-64 target).
    const ROUND: f32 = 12_582_912.0;
    let s = (row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0).max(1e-30);
    let inv = 1.0 / s;
    for (c, &v) in codes.iter_mut().zip(row) {
        *c = (((v * inv + ROUND) - ROUND) + 128.0).clamp(0.0, 255.0) as u8;
    }
    *scale = s;
}

/// Name of the int8 result rescaler inside [`DOMAIN`].
pub const DEQUANTIZE_ROWS: &str = "DequantizeRows";

/// `rwkvdb:DequantizeRows`: `y[.., n] = acc[.., n] * col_scale[n] * row_scale[..]` from the int32
/// accumulators of `MatMulInteger`, in one pass (instead of `Cast`, `Mul`, `Mul`).
pub struct DequantizeRowsOp;

impl Operator for DequantizeRowsOp {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        DEQUANTIZE_ROWS
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Int32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(|ctx: &ComputeContext| dequantize_rows(ctx)))
    }
}

fn dequantize_rows(ctx: &ComputeContext) -> ort::Result<()> {
    let missing = || ort::Error::new("DequantizeRows: missing input");
    let (acc_v, col_v, row_v) = (ctx.input(0)?, ctx.input(1)?, ctx.input(2)?);
    let (shape, acc) = acc_v.as_ref().ok_or_else(missing)?.try_extract_tensor::<i32>()?;
    let (_, cols) = col_v.as_ref().ok_or_else(missing)?.try_extract_tensor::<f32>()?;
    let (_, row_scales) = row_v.as_ref().ok_or_else(missing)?.try_extract_tensor::<f32>()?;
    let n = cols.len().max(1);
    if acc.len() != row_scales.len() * n {
        return Err(ort::Error::new(format!(
            "DequantizeRows: {} accumulators for {} rows of {n}",
            acc.len(),
            row_scales.len()
        )));
    }
    let mut out = ctx.output(0, shape.to_vec())?.ok_or_else(|| ort::Error::new("DequantizeRows: missing output"))?;
    let (_, y) = out.try_extract_tensor_mut::<f32>()?;
    let rows = row_scales.len();
    let y_ptr = SendPtr(y.as_mut_ptr());
    ctx.par_for(rows, rows, move |row| {
        // SAFETY: task `row` alone writes y[row*n..row*n+n]; the buffer outlives `par_for`.
        let out = unsafe { std::slice::from_raw_parts_mut(y_ptr.get().add(row * n), n) };
        let rs = row_scales[row];
        for ((o, &a), &c) in out.iter_mut().zip(&acc[row * n..(row + 1) * n]).zip(cols) {
            *o = a as f32 * c * rs;
        }
    })?;
    Ok(())
}
