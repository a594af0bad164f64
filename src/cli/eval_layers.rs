//! `rwkvdb eval layers`: layer-wise zero-shot sentence embeddings on labelled pairs
//! (docs/evaluation.md), with a table, JSON and an SVG plot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use rwkvdb::eval::layers::{self, MethodResult, PairFormat, Pooling, Sentences};
use rwkvdb::model::{weight_cache, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;
use serde::Serialize;

use super::model_cmd::PrecisionArg;
use super::CliResult;

#[derive(Args)]
pub struct LayersArgs {
    /// Embedder checkpoint (`.pth` or `.safetensors`).
    #[arg(long)]
    embedder: PathBuf,
    /// Labelled sentence pairs, tab-separated: MRPC (`Quality`, `#1 ID`, `#2 ID`, `#1 String`,
    /// `#2 String`, header line) or STS-B (GLUE TSV with `sentence1`, `sentence2`, `score`
    /// columns, or the headerless sts-*.csv: score in column 5, sentences in 6 and 7).
    #[arg(long)]
    pairs: PathBuf,
    /// Layout of --pairs (default: detected from its first line).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Layers to evaluate, comma separated, 1-based (layer L = the hidden state after block L);
    /// default: the odd layers of the model (1,3,5,7,9,11 for 12 layers).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<usize>,
    /// Poolings, comma separated: mean (over the text tokens), last (the last text token), eos
    /// (the EOS token appended after the text). All come from the same pass.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mean")]
    pooling: Vec<PoolingArg>,
    /// GloVe vectors (e.g. glove.6B.50d.txt) for the word-vector average baseline.
    #[arg(long)]
    glove: Option<PathBuf>,
    /// Weight precision of the model rows.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Write an SVG plot of Spearman correlation by layer.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// Microsoft Research Paraphrase Corpus TSV.
    Mrpc,
    /// STS benchmark (GLUE TSV or sts-*.csv).
    Stsb,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PoolingArg {
    /// Mean over the text tokens.
    Mean,
    /// The last text token.
    Last,
    /// The EOS token after the text.
    Eos,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Self {
        match p {
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Last => Pooling::Last,
            PoolingArg::Eos => Pooling::Eos,
        }
    }
}

#[derive(Serialize)]
struct Report {
    pairs_file: PathBuf,
    format: PairFormat,
    pairs: usize,
    sentences: usize,
    embedder: PathBuf,
    model_layers: usize,
    precision: String,
    methods: Vec<MethodResult>,
}

fn bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(len as u64) };
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn run(a: LayersArgs) -> CliResult {
    let format = a.format.map(|f| match f {
        FormatArg::Mrpc => PairFormat::Mrpc,
        FormatArg::Stsb => PairFormat::Stsb,
    });
    let (format, pairs) = layers::read_pairs(&a.pairs, format)?;
    let sentences = Sentences::new(&pairs);
    let mut poolings: Vec<Pooling> = Vec::new();
    for p in a.pooling.iter().copied().map(Pooling::from) {
        if !poolings.contains(&p) {
            poolings.push(p);
        }
    }
    if let Some(plot) = &a.plot {
        check_writable(plot)?;
    }
    let quiet = a.json;
    let mut methods = Vec::new();
    // GloVe first, before the model is loaded, so its memory figure is its own.
    if let Some(glove) = &a.glove {
        methods.push(layers::evaluate_glove(glove, &sentences)?);
    }

    let opts = RuntimeOptions::default();
    let (prepared, _) = weight_cache::load(&opts.cache, &a.embedder, None, a.precision.into())?;
    let rt = Runtime::from_prepared(Arc::new(prepared), &opts)?;
    let model_layers = rt.config().layers;
    let asked: Vec<usize> =
        if a.layers.is_empty() { (1..=model_layers).step_by(2).collect() } else { a.layers.clone() };
    let mut chosen: Vec<usize> = Vec::new();
    for l in asked {
        if !chosen.contains(&l) {
            chosen.push(l);
        }
    }
    if let Some(&l) = chosen.iter().find(|&&l| l == 0 || l > model_layers) {
        return Err(format!("--layers: layer {l} does not exist (the model has layers 1..={model_layers})").into());
    }
    let tok = Tokenizer::world();
    let n = sentences.texts.len();
    let progress = bar(n * (chosen.len() + 1), "sentence passes", quiet);
    let tick = |k: usize| progress.inc(k as u64);
    methods.extend(layers::evaluate_layers(&rt, tok, &sentences, &chosen, &poolings, &tick)?);
    methods.push(layers::evaluate_retrieval(&rt, tok, &sentences, &tick)?);
    progress.finish_and_clear();

    let report = Report {
        pairs_file: a.pairs.clone(),
        format,
        pairs: pairs.len(),
        sentences: n,
        embedder: a.embedder.clone(),
        model_layers,
        precision: rt.precision().name().to_string(),
        methods,
    };
    if let Some(path) = &a.plot {
        plot(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Fails early (before the long part) when the plot cannot be written.
fn check_writable(path: &Path) -> CliResult {
    let existed = path.exists();
    std::fs::OpenOptions::new().append(true).create(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn fmt_spearman(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"))
}

fn print_report(r: &Report) {
    println!(
        "{} pairs ({}, {} distinct sentences) from {}; model: {} layers, {}",
        r.pairs,
        match r.format {
            PairFormat::Mrpc => "MRPC",
            PairFormat::Stsb => "STS-B",
        },
        r.sentences,
        r.pairs_file.display(),
        r.model_layers,
        r.precision
    );
    println!("{:<22} {:>9} {:>16} {:>13}", "method", "Spearman", "s/1000 sentences", "peak RSS MiB");
    for m in &r.methods {
        let name = match (m.method.as_str(), m.layer, m.pooling) {
            ("layer", Some(l), Some(p)) => format!("layer {l} ({})", p.name()),
            ("glove", ..) => format!("GloVe {}d average", m.dimension.unwrap_or(0)),
            ("retrieval", ..) => "retrieval embedding".to_string(),
            (other, ..) => other.to_string(),
        };
        println!(
            "{:<22} {:>9} {:>16.3} {:>13.0}",
            name,
            fmt_spearman(m.spearman),
            m.seconds_per_1000_sentences,
            m.peak_rss_mb
        );
        if let Some(k) = m.pairs_without_known_words.filter(|&k| k > 0) {
            println!("{:<22} note: {k} pairs have a sentence with no known word (similarity 0)", "");
        }
    }
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

type Series = (String, Vec<(f64, f64)>, bool);

/// Spearman by layer, one line per pooling, the retrieval embedding and GloVe as flat lines.
fn plot(path: &Path, r: &Report) -> Result<(), Box<dyn std::error::Error>> {
    let layer_rows: Vec<&MethodResult> = r.methods.iter().filter(|m| m.layer.is_some()).collect();
    let x_max = layer_rows.iter().filter_map(|m| m.layer).max().unwrap_or(1).max(2) as f64;
    let values = r.methods.iter().filter_map(|m| m.spearman);
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.1).max(0.05);
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Spearman by layer: {} pairs, {}-layer model", r.pairs, r.model_layers), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..x_max + 0.5, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc("Spearman correlation")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() })
        .draw()?;
    // (name, points, whether the points are per layer)
    let mut series: Vec<Series> = Vec::new();
    for p in [Pooling::Mean, Pooling::Last, Pooling::Eos] {
        let pts: Vec<(f64, f64)> = layer_rows
            .iter()
            .filter(|m| m.pooling == Some(p))
            .filter_map(|m| Some((m.layer? as f64, m.spearman?)))
            .collect();
        if !pts.is_empty() {
            series.push((format!("{} pooling", p.name()), pts, true));
        }
    }
    for m in r.methods.iter().filter(|m| m.layer.is_none()) {
        if let Some(s) = m.spearman {
            let name =
                if m.method == "glove" { "GloVe average".to_string() } else { "retrieval embedding".to_string() };
            series.push((name, vec![(0.5, s), (x_max + 0.5, s)], false));
        }
    }
    // Layer series are solid lines with points; the reference methods dashed lines.
    for (i, (name, pts, per_layer)) in series.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let legend = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2));
        if per_layer {
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?.label(name).legend(legend);
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        } else {
            chart.draw_series(DashedLineSeries::new(pts, 8, 5, color.stroke_width(2)))?.label(name).legend(legend);
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
