//! `rwkvdb model ...`: synth, info, eval.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::CliResult;
use rwkvdb::checkpoint::{self, synth::SynthConfig, StoredDType};
use rwkvdb::eval::model as eval;
use rwkvdb::model::{weight_cache, Device, EmbedderWeights, Precision, RerankerWeights, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a synthetic embedder + reranker pair in the official checkpoint layout.
    Synth(SynthArgs),
    /// Print the configuration inferred from a checkpoint.
    Info(InfoArgs),
    /// Embed and score a JSON input the way the official package does; write JSON.
    Eval(EvalArgs),
    /// Measure one model in this process: time to first embedding, peak memory, throughput.
    Bench(super::model_bench::BenchArgs),
    /// Show (or clear) the prepared-weights cache: where it is, its files and their sizes.
    Cache(CacheArgs),
}

#[derive(Args)]
pub struct CacheArgs {
    /// Delete every cache file (always safe: they are rebuilt when needed).
    #[arg(long)]
    clear: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DType {
    F32,
    F16,
    Bf16,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Embedder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Model width (a multiple of 64).
    #[arg(long, default_value_t = 128)]
    width: usize,
    /// Embedder layers the reranker reads, comma separated (default: about 25% of layers, uniform).
    #[arg(long, value_delimiter = ',')]
    reranker_layers: Option<Vec<usize>>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Element type written to the files.
    #[arg(long, value_enum, default_value_t = DType::F32)]
    dtype: DType,
    /// Output path of the embedder `.pth`.
    #[arg(long)]
    embedder: PathBuf,
    /// Output path of the reranker `.pth`.
    #[arg(long)]
    reranker: PathBuf,
}

#[derive(Args)]
pub struct InfoArgs {
    /// A `.pth` or `.safetensors` checkpoint (embedder or reranker).
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Embedder checkpoint.
    #[arg(long)]
    embedder: PathBuf,
    /// Reranker checkpoint (needed when the input has pairs).
    #[arg(long)]
    reranker: Option<PathBuf>,
    /// Input JSON.
    #[arg(long)]
    input: PathBuf,
    /// Output JSON (`-` for stdout).
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// Path to libonnxruntime.so (default: $`ORT_DYLIB_PATH`, then ./.ort).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Run on CUDA device N instead of the CPU (needs the `cuda` build feature).
    #[arg(long)]
    cuda: Option<i32>,
    /// Weight precision: f32 is exact (the official package's numbers); int8 and int4 are
    /// block-quantized and faster (fidelity in docs/performance.md).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
}

/// Weight precision on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    /// Exact f32 weights.
    F32,
    /// bf16 matrices: exact for bf16 checkpoints; fast with AMX-BF16, f32 speed elsewhere.
    Bf16,
    /// 8-bit block-quantized matrices.
    Int8,
    /// 4-bit block-quantized matrices.
    Int4,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::Int8 => Precision::Int8,
            PrecisionArg::Int4 => Precision::Int4,
        }
    }
}

pub fn run(cmd: ModelCommand) -> CliResult {
    match cmd {
        ModelCommand::Synth(a) => synth(a),
        ModelCommand::Info(a) => info(a),
        ModelCommand::Eval(a) => eval_cmd(a),
        ModelCommand::Bench(a) => super::model_bench::run(a),
        ModelCommand::Cache(a) => cache_cmd(&a),
    }
}

/// The default reranker layer selection: a uniform ~25% of the embedder's layers.
fn default_reranker_layers(layers: usize) -> Vec<usize> {
    let n = layers.div_ceil(4).max(1);
    (0..n).map(|i| ((i * 2 + 1) * layers / (2 * n)).min(layers - 1)).collect()
}

fn synth(a: SynthArgs) -> CliResult {
    if a.width == 0 || a.width % 64 != 0 {
        return Err(format!("--width must be a positive multiple of 64, got {}", a.width).into());
    }
    if a.layers == 0 {
        return Err("--layers must be at least 1".into());
    }
    let reranker_layers = a.reranker_layers.unwrap_or_else(|| default_reranker_layers(a.layers));
    if let Some(&bad) = reranker_layers.iter().find(|&&l| l >= a.layers) {
        return Err(format!("--reranker-layers names layer {bad}, the embedder has {}", a.layers).into());
    }
    let cfg = SynthConfig { layers: a.layers, width: a.width, reranker_layers, seed: a.seed, ..SynthConfig::default() };
    let dtype = match a.dtype {
        DType::F32 => StoredDType::F32,
        DType::F16 => StoredDType::F16,
        DType::Bf16 => StoredDType::BF16,
    };
    checkpoint::synth::write_pair(&cfg, &a.embedder, &a.reranker, dtype)?;
    println!(
        "wrote {} and {} ({} layers, width {}, reranker reads layers {:?})",
        a.embedder.display(),
        a.reranker.display(),
        cfg.layers,
        cfg.width,
        cfg.reranker_layers
    );
    Ok(())
}

fn info(a: InfoArgs) -> CliResult {
    let sd = checkpoint::load(&a.file).map_err(|e| match e {
        // An I/O error names the file already.
        checkpoint::CheckpointError::Io { .. } => e.to_string(),
        e => format!("{}: {e}", a.file.display()),
    })?;
    let mut report = serde_json::Map::new();
    report.insert("file".into(), a.file.display().to_string().into());
    report.insert("stored_dtype".into(), sd.stored_dtype.map_or("none", StoredDType::name).into());
    report.insert("tensors".into(), sd.tensors.len().into());
    if sd.tensors.keys().any(|k| k.starts_with("rwkv.")) {
        let e = EmbedderWeights::from_state_dict(&sd)?;
        report.insert("kind".into(), "embedder".into());
        report.insert("config".into(), serde_json::to_value(&e.config)?);
        report.insert("matmul_params".into(), e.matmul_params().into());
    }
    if sd.tensors.keys().any(|k| k.starts_with("reranker.")) {
        let r = RerankerWeights::from_state_dict(&sd)?;
        report.insert("kind".into(), "reranker".into());
        report.insert("reranker_blocks".into(), r.blocks.len().into());
        report.insert("width".into(), r.width.into());
        report.insert("reranker_layer_idx".into(), serde_json::to_value(&r.layer_idx)?);
        report.insert("reranker_layer_idx_stored".into(), r.layer_idx_stored.into());
    }
    if !report.contains_key("kind") {
        return Err(format!(
            "{}: neither an embedder (rwkv.*) nor a reranker (reranker.*) checkpoint",
            a.file.display()
        )
        .into());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (k, v) in &report {
            println!("{k:>26}: {v}");
        }
    }
    Ok(())
}

fn cache_cmd(a: &CacheArgs) -> CliResult {
    let Some(dir) = weight_cache::CacheDir::Default.resolve() else {
        println!("no cache directory (RWKVDB_CACHE_DIR is empty or off, and HOME is unset)");
        return Ok(());
    };
    let entries = weight_cache::entries(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "{} ({} files, {:.1} MB)",
        dir.display(),
        entries.len(),
        entries.iter().map(|e| e.bytes as f64).sum::<f64>() / 1e6
    );
    for e in &entries {
        if a.clear {
            std::fs::remove_file(&e.path).map_err(|err| format!("{}: {err}", e.path.display()))?;
            println!("removed {}", e.path.display());
        } else {
            println!("{:>10.1} MB  {}", e.bytes as f64 / 1e6, e.path.display());
        }
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> CliResult {
    let input_text = std::fs::read_to_string(&a.input).map_err(|e| format!("{}: {e}", a.input.display()))?;
    let input: eval::EvalInput =
        serde_json::from_str(&input_text).map_err(|e| format!("{}: invalid eval input: {e}", a.input.display()))?;
    let opts = RuntimeOptions {
        ort_library: a.ort_lib,
        device: a.cuda.map_or(Device::Cpu, Device::Cuda),
        ..RuntimeOptions::default()
    };
    let (prepared, _) = weight_cache::load(&opts.cache, &a.embedder, a.reranker.as_deref(), a.precision.into())?;
    if a.reranker.is_none() && !input.pairs.is_empty() {
        return Err("the input has pairs: pass --reranker".into());
    }
    let rt = Runtime::from_prepared(std::sync::Arc::new(prepared), &opts)?;
    let out = eval::run(&rt, Tokenizer::world(), &input)?;
    let json = serde_json::to_string(&out)?;
    if a.output.as_os_str() == "-" {
        println!("{json}");
    } else {
        std::fs::write(&a.output, json).map_err(|e| format!("{}: {e}", a.output.display()))?;
    }
    Ok(())
}
