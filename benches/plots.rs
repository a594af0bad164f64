//! Draws the SVG plots of docs/performance.md from the committed benchmark results
//! (docs/bench/{e2e,ann,codec}.json) into docs/plots/.
//!
//!     cargo bench --bench plots

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

type Res = Result<(), Box<dyn std::error::Error>>;

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

fn load(root: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(root.join("docs/bench").join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A compact axis label: integers from 100 up, one decimal from 1, powers of ten below.
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0e}")
    }
}

/// A log-log chart of named (x, y) series.
fn log_log(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> Res {
    let pts = series.iter().flat_map(|(_, s)| s.iter().copied()).filter(|(x, y)| *x > 0.0 && *y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 / 1.5..x1 * 1.5).log_scale(), (y0 / 2.0..y1 * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| short(*y))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (name, s)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(s.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() -> Res {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("docs/plots");
    std::fs::create_dir_all(&out)?;

    if let Some(e2e) = load(root, "e2e.json") {
        let rows = e2e["speedup"].as_array().cloned().unwrap_or_default();
        let col = |k: &str| rows.iter().map(|r| (f(&r["doc_tokens"]), f(&r[k]))).collect::<Vec<_>>();
        log_log(
            &out.join("rerank_speedup.svg"),
            "Rerank throughput vs document length (0.1B shape, CPU)",
            "document tokens",
            "candidate pairs / s",
            &[
                ("offline (cached states)".into(), col("offline_pairs_per_s")),
                ("online (re-read)".into(), col("online_pairs_per_s")),
            ],
        )?;
        let rows = e2e["query"].as_array().cloned().unwrap_or_default();
        let pick = |mode: &str, key: &str| -> Vec<(f64, f64)> {
            rows.iter().filter(|r| r["rerank"] == mode).map(|r| (f(&r["n_docs"]), f(&r[key]))).collect()
        };
        let series = [
            ("no rerank, p50".to_string(), pick("none", "p50_ms")),
            ("offline rerank, p50".to_string(), pick("offline", "p50_ms")),
            ("offline rerank, p99".to_string(), pick("offline", "p99_ms")),
            ("online rerank, p50".to_string(), pick("online", "p50_ms")),
        ];
        log_log(&out.join("query_latency.svg"), "Query latency vs collection size", "documents", "ms", &series)?;
    }
    if let Some(ann) = load(root, "ann.json") {
        let rows = ann["runs"].as_array().cloned().unwrap_or_default();
        let mut sizes: Vec<u64> = rows.iter().filter_map(|r| r["n"].as_u64()).collect();
        sizes.dedup();
        let series: Vec<(String, Vec<(f64, f64)>)> = sizes
            .iter()
            .map(|&n| {
                let s = rows
                    .iter()
                    .filter(|r| r["n"].as_u64() == Some(n))
                    .map(|r| (f(&r["qps"]), 1.0 - f(&r["recall_at_10"]) + 1e-4))
                    .collect();
                (format!("{n} vectors"), s)
            })
            .collect();
        log_log(
            &out.join("ann_recall_qps.svg"),
            "HNSW: 1 - recall@10 (+1e-4) vs queries/s",
            "queries / s",
            "1 - recall@10",
            &series,
        )?;
    }
    if let Some(codec) = load(root, "codec.json") {
        let rows = codec["sweep"].as_array().cloned().unwrap_or_default();
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for sel in ["F16", "Int8", "Int6", "Int4"] {
            let s = rows
                .iter()
                .filter(|r| r["selected"] == sel)
                .map(|r| (f(&r["bytes_per_doc"]) / 1e3, f(&r["max_sigmoid_dev"]).max(1e-5)))
                .collect();
            series.push((format!("selected {sel}"), s));
        }
        log_log(
            &out.join("codec_tradeoff.svg"),
            "State codec: size vs rerank fidelity (points: pass-through precision)",
            "KB per document",
            "max |sigmoid dev|",
            &series,
        )?;
    }
    Ok(())
}
