//! Retrieval quality on BEIR-format data: `rwkvdb eval retrieval`.
//!
//! Inputs are BEIR's files: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
//! `text`) and a qrels TSV (`query-id`, `corpus-id`, `score`, with a header line). Metrics follow
//! `trec_eval`'s definitions (relevance level 1, so a judgment of 0 is not relevant):
//!
//! - a run is ranked by score, highest first; ties by document id, **descending**, as
//!   `trec_eval` sorts them;
//! - nDCG@k: gain = the judgment, discount `log2(rank + 1)`, divided by the DCG of the ideal
//!   ordering of all judged documents;
//! - Recall@k: relevant documents in the top k over all relevant documents;
//! - MRR@k: `1 / rank` of the first relevant document in the top k, else 0;
//! - MAP@k: sum of precision at the rank of each relevant document in the top k, over all
//!   relevant documents.
//!
//! Averages are over the queries that have judgments (as `trec_eval` averages over the queries of
//! the qrels); a query whose judgments are all 0 scores 0 everywhere and is counted separately.

// Runs and judgments are plain std maps; callers have no reason to pick another hasher.
#![allow(clippy::implicit_hasher)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Judgments: query id -> document id -> grade.
pub type Qrels = BTreeMap<String, HashMap<String, i64>>;

/// One ranked list: (document id, score).
pub type Run = Vec<(String, f64)>;

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

fn bad_line(path: &Path, line: usize, what: &str) -> Error {
    Error::InvalidInput(format!("{}:{line}: {what}", path.display()))
}

/// Reads a BEIR `corpus.jsonl` or `queries.jsonl`: (`_id`, text) per line, where the text is
/// `title` and `text` joined by a space when there is a title (BEIR's convention).
pub fn read_beir_jsonl(path: &Path) -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "_id")]
        id: Value,
        #[serde(default)]
        title: Option<String>,
        text: String,
    }
    use serde_json::Value;
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io_error(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Line = serde_json::from_str(&line).map_err(|e| bad_line(path, n + 1, &e.to_string()))?;
        let id = match item.id {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => return Err(bad_line(path, n + 1, "_id must be a string or a number")),
        };
        let text = match item.title.filter(|t| !t.trim().is_empty()) {
            Some(title) => format!("{title} {}", item.text),
            None => item.text,
        };
        out.push((id, text));
    }
    Ok(out)
}

/// Reads a qrels TSV (`query-id corpus-id score`, first line a header).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut qrels = Qrels::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io_error(path, e))?;
        if n == 0 || line.trim().is_empty() {
            continue; // the header
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let [q, d, grade] = fields.as_slice() else {
            return Err(bad_line(path, n + 1, "expected 3 tab-separated fields: query-id, corpus-id, score"));
        };
        let grade: i64 =
            grade.parse().map_err(|_| bad_line(path, n + 1, &format!("score {grade:?} is not an integer")))?;
        qrels.entry((*q).to_string()).or_default().insert((*d).to_string(), grade);
    }
    Ok(qrels)
}

/// `run` in `trec_eval`'s order: score descending, ties by document id descending.
pub fn trec_order(run: &mut Run) {
    run.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
}

/// The measures of one ranked list (already in `trec_eval`'s order) against its judgments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    /// nDCG@10.
    pub ndcg_10: f64,
    /// Recall@10.
    pub recall_10: f64,
    /// Recall@100.
    pub recall_100: f64,
    /// MRR@10.
    pub mrr_10: f64,
    /// MAP@100.
    pub map_100: f64,
}

/// Measures of `ranked` (in `trec_eval` order) against `judged` (document id -> grade).
#[must_use]
pub fn measures(ranked: &[(String, f64)], judged: &HashMap<String, i64>) -> Measures {
    let grade = |id: &str| judged.get(id).copied().unwrap_or(0).max(0);
    let relevant = judged.values().filter(|&&g| g >= 1).count();
    if relevant == 0 {
        return Measures::default();
    }
    let dcg = |grades: &mut dyn Iterator<Item = i64>, k: usize| -> f64 {
        grades.take(k).enumerate().map(|(i, g)| g as f64 / ((i + 2) as f64).log2()).sum()
    };
    let mut ideal: Vec<i64> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg = dcg(&mut ideal.iter().copied(), 10);
    let ndcg_10 = dcg(&mut ranked.iter().map(|(d, _)| grade(d)), 10) / idcg;
    let hits_in = |k: usize| ranked.iter().take(k).filter(|(d, _)| grade(d) >= 1).count() as f64;
    let mrr_10 = ranked.iter().take(10).position(|(d, _)| grade(d) >= 1).map_or(0.0, |i| 1.0 / (i + 1) as f64);
    let mut found = 0.0;
    let mut precision_sum = 0.0;
    for (i, (d, _)) in ranked.iter().take(100).enumerate() {
        if grade(d) >= 1 {
            found += 1.0;
            precision_sum += found / (i + 1) as f64;
        }
    }
    Measures {
        ndcg_10,
        recall_10: hits_in(10) / relevant as f64,
        recall_100: hits_in(100) / relevant as f64,
        mrr_10,
        map_100: precision_sum / relevant as f64,
    }
}

/// Mean measures of `runs` (query id -> run in any order) over the queries of `qrels`; a query
/// without a run counts as an empty ranking. Returns the means and the number of judged
/// queries without any relevant document.
#[must_use]
pub fn mean_measures(runs: &HashMap<String, Run>, qrels: &Qrels) -> (Measures, usize) {
    let mut sum = Measures::default();
    let mut no_relevant = 0;
    for (q, judged) in qrels {
        if !judged.values().any(|&g| g >= 1) {
            no_relevant += 1;
        }
        let mut ranked = runs.get(q).cloned().unwrap_or_default();
        trec_order(&mut ranked);
        let m = measures(&ranked, judged);
        sum.ndcg_10 += m.ndcg_10;
        sum.recall_10 += m.recall_10;
        sum.recall_100 += m.recall_100;
        sum.mrr_10 += m.mrr_10;
        sum.map_100 += m.map_100;
    }
    let n = qrels.len().max(1) as f64;
    let mean = Measures {
        ndcg_10: sum.ndcg_10 / n,
        recall_10: sum.recall_10 / n,
        recall_100: sum.recall_100 / n,
        mrr_10: sum.mrr_10 / n,
        map_100: sum.map_100 / n,
    };
    (mean, no_relevant)
}

/// A TREC run file: `qid Q0 docid rank score tag` per line, in `trec_eval` order per query.
#[must_use]
pub fn trec_run_file(runs: &HashMap<String, Run>, tag: &str) -> String {
    let mut queries: Vec<&String> = runs.keys().collect();
    queries.sort();
    let mut out = String::new();
    for q in queries {
        let mut ranked = runs[q].clone();
        trec_order(&mut ranked);
        for (rank, (d, score)) in ranked.iter().enumerate() {
            let _ = writeln!(out, "{q} Q0 {d} {} {score:.6} {tag}", rank + 1);
        }
    }
    out
}

/// What one rerank mode gave on a query set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeResult {
    /// `none`, `offline` or `online`.
    pub mode: String,
    /// Queries run (online may run on a sample).
    pub queries: usize,
    /// Mean measures over the judged queries among them.
    pub measures: Measures,
    /// Judged queries among them whose judgments are all 0 (they score 0).
    pub judged_without_relevant: usize,
    /// Query latency, median and 99th percentile, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile latency.
    pub latency_p99_ms: f64,
    /// The ranked lists, per query id (score: the reranker logit, or the cosine without rerank).
    #[serde(skip)]
    pub runs: HashMap<String, Run>,
}

/// Runs `queries` (id, text) against `collection` with `opts` (its `rerank` is the mode) and
/// measures the rankings against `qrels`. `progress` is called after each query.
pub fn run_mode(
    collection: &crate::Collection,
    queries: &[(String, String)],
    qrels: &Qrels,
    opts: &crate::QueryOptions,
    mut progress: impl FnMut(),
) -> Result<ModeResult> {
    let mut runs = HashMap::new();
    let mut latencies = Vec::with_capacity(queries.len());
    for (id, text) in queries {
        let start = std::time::Instant::now();
        let result = collection.query(text, opts)?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        let run: Run = result.hits.into_iter().map(|h| (h.id, f64::from(h.logit.unwrap_or(h.similarity)))).collect();
        runs.insert(id.clone(), run);
        progress();
    }
    // Measured over the judged queries that were run (a sample, for online).
    let judged: Qrels =
        qrels.iter().filter(|(q, _)| runs.contains_key(*q)).map(|(q, j)| (q.clone(), j.clone())).collect();
    let (measures, judged_without_relevant) = mean_measures(&runs, &judged);
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let mode = match opts.rerank {
        crate::Rerank::None => "none",
        crate::Rerank::Offline => "offline",
        crate::Rerank::Online => "online",
    };
    Ok(ModeResult {
        mode: mode.into(),
        queries: queries.len(),
        measures,
        judged_without_relevant,
        latency_p50_ms: at(0.5),
        latency_p99_ms: at(0.99),
        runs,
    })
}

/// How far two rerank modes' rankings agree on the queries both ran.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Agreement {
    /// Queries compared.
    pub queries: usize,
    /// Mean share of the top 10 both rankings hold.
    pub top10_overlap: f64,
    /// Share of queries with the same first document.
    pub same_top1: f64,
    /// Mean absolute difference of the scores of the documents both rankings hold.
    pub mean_abs_score_diff: f64,
}

/// Agreement of `a` and `b` over the queries both hold.
#[must_use]
pub fn agreement(a: &HashMap<String, Run>, b: &HashMap<String, Run>) -> Agreement {
    let mut out = Agreement::default();
    let (mut diffs, mut pairs) = (0.0, 0usize);
    for (q, ra) in a {
        let Some(rb) = b.get(q) else { continue };
        let (mut ra, mut rb) = (ra.clone(), rb.clone());
        trec_order(&mut ra);
        trec_order(&mut rb);
        out.queries += 1;
        let top_b: Vec<&String> = rb.iter().take(10).map(|(d, _)| d).collect();
        let shared = ra.iter().take(10).filter(|(d, _)| top_b.contains(&d)).count();
        out.top10_overlap += shared as f64 / ra.len().clamp(1, 10) as f64;
        out.same_top1 += f64::from(u8::from(ra.first().map(|x| &x.0) == rb.first().map(|x| &x.0)));
        let scores_b: HashMap<&String, f64> = rb.iter().map(|(d, s)| (d, *s)).collect();
        for (d, s) in &ra {
            if let Some(t) = scores_b.get(d) {
                diffs += (s - t).abs();
                pairs += 1;
            }
        }
    }
    let n = out.queries.max(1) as f64;
    out.top10_overlap /= n;
    out.same_top1 /= n;
    out.mean_abs_score_diff = diffs / pairs.max(1) as f64;
    out
}
