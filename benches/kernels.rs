//! The matrix kernels of the weight precisions, one `[M, K] x [K, N]` graph node each, measured
//! in one run on all cores: ONNX Runtime's f32 `MatMul` (as the f32 graphs run it) against
//! `rwkvdb:MatMulBf16` (the AMX-BF16 tile kernel), at the shapes the 0.1B model multiplies.
//! Writes `docs/bench/kernels.json`. Without AMX the bf16 column is empty.

use rwkvdb::gemm_probe::{cpu_flags, matmul_gflops, MatrixKernel};
use serde_json::json;

fn main() {
    let flags = cpu_flags(&["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"]);
    println!("CPU flags: {flags}\n");
    println!("{:>6} {:>6} {:>6} {:>12} {:>12} {:>7}", "M", "K", "N", "f32 GFLOP/s", "bf16 GFLOP/s", "ratio");
    let mut rows = Vec::new();
    for (m, k, n) in [(16, 768, 3072), (1024, 768, 3072), (1600, 768, 768), (1600, 3072, 768), (4096, 768, 3072)] {
        let reps = if m <= 16 { 50 } else { 8 };
        let f32 = matmul_gflops(m, k, n, MatrixKernel::F32, reps).expect("f32 MatMul");
        let bf16 = matmul_gflops(m, k, n, MatrixKernel::Bf16Amx, reps).ok();
        let ratio = bf16.map(|b| b / f32);
        println!(
            "{m:>6} {k:>6} {n:>6} {f32:>12.0} {:>12} {:>7}",
            bf16.map_or("-".into(), |b| format!("{b:.0}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}x"))
        );
        rows.push(json!({"m": m, "k": k, "n": n, "f32_gflops": f32, "bf16_amx_gflops": bf16, "ratio": ratio}));
    }
    let doc = json!({"command": "cargo bench --bench kernels", "cpu_flags": flags, "rows": rows});
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench/kernels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write kernels.json");
    println!("\nwrote {}", path.display());
}
