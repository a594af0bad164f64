//! bf16 weight matrices and their matrix product (`rwkvdb:MatMulBf16`).
//!
//! The published checkpoints are bf16, so a bf16 matrix holds the checkpoint's weights exactly
//! at half the bytes of f32. Where the CPU has AMX-BF16 (Intel Sapphire Rapids and later) the
//! product runs on the tile unit: each activation row is rounded to bf16 (round to nearest
//! even), products are accumulated in f32. Elsewhere the graph turns the matrix into f32 once,
//! at session creation, and runs ONNX Runtime's f32 `MatMul` (see `graph.rs`): exact f32
//! arithmetic, no speed gain.
//!
//! Stored layout (the "VNNI" tile layout AMX reads): a matrix `W` `[K, N]` (`y = x @ W`, `K`
//! and `N` multiples of 32) is cut into tiles of 32 rows (`k`) x 16 columns (`n`); tile
//! `(nt, kb)` is 1 KB at index `nt * (K / 32) + kb`, and inside it element `(k, n)` sits at
//! `((k % 32) / 2) * 32 + (n % 16) * 2 + k % 2`. As a tensor: `[N / 16, K / 32, 16, 16, 2]`.

use ort::operator::{BoxedKernel, ComputeContext, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::wkv::SendPtr;

/// Name of the operator inside [`super::wkv::DOMAIN`].
pub const MATMUL_BF16: &str = "MatMulBf16";

/// Rows and columns of `K` and `N` per tile step: both dimensions must be multiples of this.
pub const ALIGN: usize = 32;

/// `f32` to bf16 bits, rounding to nearest even (NaN stays NaN).
#[must_use]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits to `f32` (exact).
#[cfg(test)]
#[must_use]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Whether a `[K, N]` matrix can be stored in the tile layout.
#[must_use]
pub fn fits(k: usize, n: usize) -> bool {
    k % ALIGN == 0 && n % ALIGN == 0 && k > 0 && n > 0
}

/// Where element `(kk, nn)` of a `[K, N]` matrix with `kb = K / 32` lies in the tile layout.
fn tiled_index(kk: usize, nn: usize, kb: usize) -> usize {
    let tile = (nn / 16) * kb + kk / ALIGN;
    tile * 512 + ((kk % ALIGN) / 2) * 32 + (nn % 16) * 2 + kk % 2
}

/// Packs `w` (`[K, N]` row-major f32) into the tile layout, rounding to bf16.
pub fn pack(w: &[f32], k: usize, n: usize, out: &mut [u16]) {
    let kb = k / ALIGN;
    for kk in 0..k {
        for nn in 0..n {
            out[tiled_index(kk, nn, kb)] = to_bf16(w[kk * n + nn]);
        }
    }
}

/// The `[K, N]` f32 matrix a packed one holds (the tests' reference).
#[cfg(test)]
#[must_use]
pub fn unpack(packed: &[u16], k: usize, n: usize) -> Vec<f32> {
    let kb = k / ALIGN;
    let mut w = vec![0f32; k * n];
    for kk in 0..k {
        for nn in 0..n {
            w[kk * n + nn] = from_bf16(packed[tiled_index(kk, nn, kb)]);
        }
    }
    w
}

/// Whether this process can use AMX-BF16: the CPU has it, the kernel enables its state, and the
/// kernel granted this process the tile data (Linux `arch_prctl`). `RWKVDB_NO_AMX=1` says no
/// (to run the f32 fallback on an AMX machine). Checked once.
#[must_use]
pub fn amx_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("RWKVDB_NO_AMX").is_none_or(|v| v == "0") && amx::request())
}

/// `rwkvdb:MatMulBf16`: `y [..., N] = x [..., K] @ W` with `W` in the tile layout (a bf16
/// tensor `[N / 16, K / 32, 16, 16, 2]`). Registered everywhere; the graphs use it only where
/// [`amx_available`].
pub struct MatMulBf16Op;

impl Operator for MatMulBf16Op {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        MATMUL_BF16
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32), OperatorInput::required(TensorElementType::Bfloat16)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        Ok(Box::new(|ctx: &ComputeContext| matmul_bf16(ctx)))
    }
}

/// Rows per task of the product (with [`N_GROUP`] columns: a task's activations and weights
/// stay in the core's L2 while it runs; measured in `cargo bench --bench kernels`).
const M_CHUNK: usize = 128;
/// Columns per task of the product.
const N_GROUP: usize = 256;

fn matmul_bf16(ctx: &ComputeContext) -> ort::Result<()> {
    let missing = || ort::Error::new("MatMulBf16: missing input");
    let (x_v, w_v) = (ctx.input(0)?, ctx.input(1)?);
    let (x_shape, x) = x_v.as_ref().ok_or_else(missing)?.try_extract_tensor::<f32>()?;
    let (w_shape, w) = w_v.as_ref().ok_or_else(missing)?.try_extract_tensor::<half::bf16>()?;
    let w: &[u16] = bytemuck::cast_slice(w);
    let (n, k) = match **w_shape {
        [nt, kb, 16, 16, 2] => (nt as usize * 16, kb as usize * ALIGN),
        _ => return Err(ort::Error::new(format!("MatMulBf16: weight shape {w_shape:?} is not a tile layout"))),
    };
    let x_k = x_shape.last().map_or(0, |&d| d as usize);
    if x_k != k || !fits(k, n) {
        return Err(ort::Error::new(format!("MatMulBf16: input rows of {x_k} for a {k} x {n} matrix")));
    }
    let m = x.len() / k;
    let mut y_shape = x_shape.to_vec();
    if let Some(last) = y_shape.last_mut() {
        *last = n as i64;
    }
    let mut out = ctx.output(0, y_shape)?.ok_or_else(|| ort::Error::new("MatMulBf16: missing output"))?;
    let (_, y) = out.try_extract_tensor_mut::<f32>()?;
    if m == 0 {
        return Ok(());
    }
    if !amx_available() {
        return Err(ort::Error::new("MatMulBf16: this CPU has no AMX-BF16 (the graph should not use this op)"));
    }
    // Activations in bf16, rows padded with zeros to whole 32-row blocks.
    let mp = m.div_ceil(ALIGN) * ALIGN;
    let mut xb = vec![0u16; mp * k];
    let xb_ptr = SendPtr(xb.as_mut_ptr());
    let blocks = mp / ALIGN;
    ctx.par_for(blocks, blocks, move |b| {
        let rows = (b * ALIGN..((b + 1) * ALIGN).min(m)).len();
        // SAFETY: task `b` alone writes rows b*32.. of `xb` (which outlives `par_for`).
        let dst = unsafe { std::slice::from_raw_parts_mut(xb_ptr.get().add(b * ALIGN * k), rows * k) };
        for (d, &s) in dst.iter_mut().zip(&x[b * ALIGN * k..]) {
            *d = to_bf16(s);
        }
    })?;
    let (m_chunks, n_groups) = (mp.div_ceil(M_CHUNK), n.div_ceil(N_GROUP));
    let y_ptr = SendPtr(y.as_mut_ptr());
    let xb = &xb;
    ctx.par_for(m_chunks * n_groups, m_chunks * n_groups, move |task| {
        let (mc, ng) = (task / n_groups, task % n_groups);
        let rows = mc * M_CHUNK..((mc + 1) * M_CHUNK).min(mp);
        let cols = ng * N_GROUP..((ng + 1) * N_GROUP).min(n);
        // SAFETY: tasks write disjoint (rows, cols) blocks of `y` (m x n, alive during
        // `par_for`); `amx_available` was checked above.
        unsafe { amx::gemm(xb, m, k, w, n, y_ptr.get(), rows, cols) };
    })?;
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid_count, CpuidResult};

    /// Checks CPU and OS support and asks Linux for the tile data permission.
    pub fn request() -> bool {
        // CPUID.(7,0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE; OSXSAVE (CPUID.1:ECX bit 27).
        let CpuidResult { edx, .. } = __cpuid_count(7, 0);
        let CpuidResult { ecx, .. } = __cpuid_count(1, 0);
        if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 || ecx & (1 << 27) == 0 {
            return false;
        }
        // XCR0 bits 17 and 18: the OS saves tile configuration and data.
        let lo: u32;
        // SAFETY: OSXSAVE is set, so xgetbv is allowed.
        unsafe { asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _, options(nomem, nostack)) };
        if lo & (0b11 << 17) != 0b11 << 17 {
            return false;
        }
        request_permission()
    }

    #[cfg(target_os = "linux")]
    fn request_permission() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall with integer arguments; it changes only this process's
        // permitted extended state.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    #[cfg(not(target_os = "linux"))]
    fn request_permission() -> bool {
        false
    }

    /// Palette 1, all eight tiles 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        TileConfig(c)
    };

    /// `y[rows, cols] = x[rows] @ W[:, cols]` for 32-aligned `rows` of the padded bf16
    /// activations `x` (`[mp, k]`, `m` real rows) and 32-aligned `cols` of the packed `w`.
    /// Tiles: C `tmm0..3` (2 x 2 blocks of 16 x 16), A `tmm4, 5` (rows), B `tmm6, 7` (columns).
    ///
    /// # Safety
    /// AMX must be available; `y` must point to `m * n` writable floats that no one else
    /// touches inside `rows x cols`; `x` must hold `rows.end * k` values, `w` the packed matrix.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        x: &[u16],
        m: usize,
        k: usize,
        w: &[u16],
        n: usize,
        y: *mut f32,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let kb = k / 32;
        let (x_stride, y_stride, tile_stride) = (2 * k, 4 * n, 64usize);
        let mut scratch = [0f32; 32 * 32];
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        let mut nb = cols.start;
        while nb < cols.end {
            let b0 = w.as_ptr().add((nb / 16) * kb * 512);
            let b1 = b0.add(kb * 512);
            let mut mb = rows.start;
            while mb < rows.end {
                let a0 = x.as_ptr().add(mb * k);
                let a1 = a0.add(16 * k);
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                for b in 0..kb {
                    asm!(
                        "tileloadd tmm4, [{a0} + {xs}*1]",
                        "tileloadd tmm5, [{a1} + {xs}*1]",
                        "tileloadd tmm6, [{b0} + {ts}*1]",
                        "tileloadd tmm7, [{b1} + {ts}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(b * 32),
                        a1 = in(reg) a1.add(b * 32),
                        b0 = in(reg) b0.add(b * 512),
                        b1 = in(reg) b1.add(b * 512),
                        xs = in(reg) x_stride,
                        ts = in(reg) tile_stride,
                        options(nostack, readonly),
                    );
                }
                if mb + 32 <= m {
                    // The whole block is real rows: tiles go straight to `y`.
                    let c = y.add(mb * n + nb);
                    asm!(
                        "tilestored [{c0} + {ys}*1], tmm0",
                        "tilestored [{c1} + {ys}*1], tmm1",
                        "tilestored [{c2} + {ys}*1], tmm2",
                        "tilestored [{c3} + {ys}*1], tmm3",
                        c0 = in(reg) c,
                        c1 = in(reg) c.add(16),
                        c2 = in(reg) c.add(16 * n),
                        c3 = in(reg) c.add(16 * n + 16),
                        ys = in(reg) y_stride,
                        options(nostack),
                    );
                } else {
                    // The last block runs past `m`: through a 32 x 32 scratch block.
                    let s = scratch.as_mut_ptr();
                    asm!(
                        "tilestored [{c0} + {ss}*1], tmm0",
                        "tilestored [{c1} + {ss}*1], tmm1",
                        "tilestored [{c2} + {ss}*1], tmm2",
                        "tilestored [{c3} + {ss}*1], tmm3",
                        c0 = in(reg) s,
                        c1 = in(reg) s.add(16),
                        c2 = in(reg) s.add(16 * 32),
                        c3 = in(reg) s.add(16 * 32 + 16),
                        ss = in(reg) 128usize,
                        options(nostack),
                    );
                    for r in 0..m.saturating_sub(mb).min(32) {
                        std::ptr::copy_nonoverlapping(s.add(r * 32), y.add((mb + r) * n + nb), 32);
                    }
                }
                mb += 32;
            }
            nb += 32;
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod amx {
    pub fn request() -> bool {
        false
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        _: &[u16],
        _: usize,
        _: usize,
        _: &[u16],
        _: usize,
        _: *mut f32,
        _: std::ops::Range<usize>,
        _: std::ops::Range<usize>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-12)), 0x3f81);
        assert_eq!(from_bf16(to_bf16(-2.5)).to_bits(), (-2.5f32).to_bits());
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn packing_round_trips_bf16_values() {
        let (k, n) = (64, 96);
        let w: Vec<f32> = (0..k * n).map(|i| from_bf16(to_bf16((i as f32 * 0.37).sin()))).collect();
        let mut p = vec![0u16; k * n];
        pack(&w, k, n, &mut p);
        assert_eq!(unpack(&p, k, n), w);
        // Element (k = 33, n = 17): tile (n-tile 1, k-block 1) = 1 * 2 + 1, pair row 0,
        // column 1, odd k: 3 * 512 + 0 * 32 + 1 * 2 + 1.
        assert_eq!(from_bf16(p[3 * 512 + 3]).to_bits(), w[33 * n + 17].to_bits());
    }

    /// The tile kernel against a scalar product of the same bf16 values (f64 sums), with a row
    /// count that leaves a partial last block. Needs AMX: elsewhere it says so and passes.
    #[test]
    fn amx_product_matches_scalar_reference() {
        if !amx_available() {
            eprintln!("no AMX-BF16 on this machine: the tile kernel is not exercised");
            return;
        }
        let (m, k, n) = (45, 96, 64);
        let val = |i: usize, s: f32| (i as f32 * s).sin() * 2.0;
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 0.731)).collect();
        let w: Vec<f32> = (0..k * n).map(|i| val(i, 1.37)).collect();
        let mut packed = vec![0u16; k * n];
        pack(&w, k, n, &mut packed);
        let mp = m.div_ceil(ALIGN) * ALIGN;
        let mut xb = vec![0u16; mp * k];
        for (d, &s) in xb.iter_mut().zip(&x) {
            *d = to_bf16(s);
        }
        let mut y = vec![f32::NAN; m * n];
        // Two column groups, as two tasks would run them.
        unsafe {
            amx::gemm(&xb, m, k, &packed, n, y.as_mut_ptr(), 0..mp, 0..32);
            amx::gemm(&xb, m, k, &packed, n, y.as_mut_ptr(), 0..mp, 32..64);
        }
        let wq = unpack(&packed, k, n);
        for i in 0..m {
            for j in 0..n {
                let r: f64 = (0..k).map(|t| f64::from(from_bf16(xb[i * k + t])) * f64::from(wq[t * n + j])).sum();
                assert!((r - f64::from(y[i * n + j])).abs() < 1e-4, "y[{i}][{j}] = {} vs {r}", y[i * n + j]);
            }
        }
    }
}
