//! Layer-wise zero-shot sentence embeddings: `rwkvdb eval layers`.
//!
//! Following Pan, "Exploring RWKV for Sentence Embeddings: Layer-wise Analysis and Baseline
//! Comparison for Semantic Similarity": a sentence's embedding at layer `l` is the residual
//! stream after block `l` (1-based, no norm), pooled over its tokens; a pair's similarity is the
//! cosine of its two embeddings, and a method's quality is the Spearman correlation between those
//! similarities and the pairs' labels. The trained retrieval embedding and a GloVe average are
//! scored the same way for comparison.
//!
//! - Sentences are tokenized as the retrieval embedding reads them: text tokens, then one EOS.
//!   [`Pooling::Mean`] averages the text tokens, [`Pooling::Last`] takes the last text token,
//!   [`Pooling::Eos`] the EOS position. All three come from one pass per layer.
//! - Spearman: Pearson correlation of the ranks, tied values getting the mean of their ranks.
//! - GloVe baseline: lowercased text split into maximal runs of letters and digits (whitespace and
//!   punctuation separate words and are dropped); the mean of the known words' vectors;
//!   unknown words are skipped. A pair where a sentence has no known word gets similarity 0 and
//!   is counted in [`MethodResult::pairs_without_known_words`].

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::memory;
use crate::model::Runtime;
use crate::tokenizer::Tokenizer;

/// Layout of a pairs file (tab-separated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairFormat {
    /// MRPC: header `Quality  #1 ID  #2 ID  #1 String  #2 String`; the label is `Quality` (0/1).
    Mrpc,
    /// STS-B: GLUE's TSV, whose header names the columns `sentence1`, `sentence2` and `score`;
    /// or the STS benchmark's headerless `sts-*.csv` (genre, file, year, id, score, sentence 1,
    /// sentence 2, optional source columns). The label is the score, 0 to 5.
    Stsb,
}

/// A labelled sentence pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// First sentence.
    pub first: String,
    /// Second sentence.
    pub second: String,
    /// Paraphrase label (MRPC) or similarity score (STS-B).
    pub label: f64,
}

/// How a sentence's token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over the text tokens.
    Mean,
    /// The last text token.
    Last,
    /// The EOS token after the text.
    Eos,
}

impl Pooling {
    /// The name used on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Last => "last",
            Pooling::Eos => "eos",
        }
    }
}

/// The score of one method on the pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// `layer`, `retrieval` (the trained retrieval embedding) or `glove`.
    pub method: String,
    /// The layer (1-based) of a `layer` row.
    pub layer: Option<usize>,
    /// The pooling of a `layer` row.
    pub pooling: Option<Pooling>,
    /// Spearman correlation between cosine similarities and labels (`None` when either is
    /// constant).
    pub spearman: Option<f64>,
    /// Seconds to embed 1,000 sentences (the model passes or GloVe averages alone: tokenizing
    /// included, loading excluded).
    pub seconds_per_1000_sentences: f64,
    /// Peak resident memory of the process while this method ran, in MiB (model weights
    /// included for model rows; GloVe runs before the model is loaded).
    pub peak_rss_mb: f64,
    /// GloVe: pairs where a sentence has no known word (similarity 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs_without_known_words: Option<usize>,
    /// GloVe: the vector dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<usize>,
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

fn bad_line(path: &Path, line: usize, what: &str) -> Error {
    Error::InvalidInput(format!("{}:{line}: {what}", path.display()))
}

/// Lines of a text file, numbered from 1, without line endings or a leading byte-order mark;
/// invalid UTF-8 is an error naming the line.
fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let mut bytes = line.map_err(|e| io_error(path, e))?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut text = String::from_utf8(bytes).map_err(|_| bad_line(path, n + 1, "not UTF-8"))?;
        if n == 0 && text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        out.push((n + 1, text));
    }
    Ok(out)
}

/// Which columns hold the label and the two sentences, and whether the first line is a header.
struct Columns {
    label: usize,
    first: usize,
    second: usize,
    header: bool,
}

fn detect(first_line: &str, format: Option<PairFormat>) -> Option<(PairFormat, Columns)> {
    let fields: Vec<&str> = first_line.split('\t').map(str::trim).collect();
    let named = |name: &str| fields.iter().position(|f| f.eq_ignore_ascii_case(name));
    let mrpc = Columns { label: 0, first: 3, second: 4, header: true };
    let is_mrpc_header = fields.first().is_some_and(|f| f.eq_ignore_ascii_case("quality"));
    if is_mrpc_header && format != Some(PairFormat::Stsb) {
        return Some((PairFormat::Mrpc, mrpc));
    }
    if let (Some(first), Some(second), Some(label)) = (named("sentence1"), named("sentence2"), named("score")) {
        if format != Some(PairFormat::Mrpc) {
            return Some((PairFormat::Stsb, Columns { label, first, second, header: true }));
        }
    }
    let sts_line = fields.len() >= 7 && fields[4].parse::<f64>().is_ok();
    match format {
        Some(PairFormat::Stsb) | None if sts_line => {
            Some((PairFormat::Stsb, Columns { label: 4, first: 5, second: 6, header: false }))
        }
        // MRPC without its header line.
        Some(PairFormat::Mrpc) if fields.len() >= 5 => Some((PairFormat::Mrpc, Columns { header: false, ..mrpc })),
        _ => None,
    }
}

/// Reads a pairs file in `format`, or in the format its first line shows (see [`PairFormat`]).
/// Returns the format used and the pairs, in file order.
pub fn read_pairs(path: &Path, format: Option<PairFormat>) -> Result<(PairFormat, Vec<Pair>)> {
    let lines = read_lines(path)?;
    let Some((_, first_line)) = lines.iter().find(|(_, l)| !l.trim().is_empty()) else {
        return Err(Error::InvalidInput(format!("{}: no pairs", path.display())));
    };
    let (found, cols) = detect(first_line, format).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{}: not an MRPC or STS-B pairs file (MRPC: a header starting with `Quality`; STS-B: a header \
             naming sentence1, sentence2 and score, or headerless sts-*.csv lines); see --format",
            path.display()
        ))
    })?;
    let mut pairs = Vec::new();
    let mut header_pending = cols.header;
    for (n, line) in &lines {
        if line.trim().is_empty() {
            continue;
        }
        if header_pending {
            header_pending = false;
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize, what: &str| {
            fields.get(i).ok_or_else(|| {
                bad_line(path, *n, &format!("{} tab-separated fields, no {what} in column {}", fields.len(), i + 1))
            })
        };
        let label_text = field(cols.label, "label")?.trim();
        let label: f64 = label_text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| bad_line(path, *n, &format!("label {label_text:?} is not a number")))?;
        let (first, second) =
            (field(cols.first, "first sentence")?.trim(), field(cols.second, "second sentence")?.trim());
        if first.is_empty() || second.is_empty() {
            return Err(bad_line(path, *n, "empty sentence"));
        }
        pairs.push(Pair { first: first.to_string(), second: second.to_string(), label });
    }
    if pairs.is_empty() {
        return Err(Error::InvalidInput(format!("{}: no pairs after the header", path.display())));
    }
    Ok((found, pairs))
}

/// Ranks of `x` from 1, tied values sharing the mean of the ranks they span.
#[must_use]
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]].total_cmp(&x[order[start]]).is_eq() {
            end += 1;
        }
        // Ranks start+1 ..= end, averaged.
        let mean = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean;
        }
        start = end;
    }
    ranks
}

/// Pearson correlation; `None` for fewer than two values or a constant side.
#[must_use]
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let (mx, my) = (x[..n].iter().sum::<f64>() / n as f64, y[..n].iter().sum::<f64>() / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x[..n].iter().zip(&y[..n]) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman rank correlation with ties averaged; `None` when either side is constant.
#[must_use]
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Cosine similarity; 0 when either vector is zero.
#[must_use]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// The distinct sentences of a pair list, and each pair's two indices into them.
pub struct Sentences {
    /// Each distinct sentence once, in first-seen order.
    pub texts: Vec<String>,
    /// (first, second) sentence index of each pair.
    pub pairs: Vec<(usize, usize)>,
    /// Each pair's label.
    pub labels: Vec<f64>,
}

impl Sentences {
    /// Collects the sentences of `pairs`.
    #[must_use]
    pub fn new(pairs: &[Pair]) -> Self {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut texts = Vec::new();
        let mut idx = Vec::with_capacity(pairs.len());
        for p in pairs {
            let mut pair = [0; 2];
            for (slot, s) in pair.iter_mut().zip([p.first.as_str(), p.second.as_str()]) {
                *slot = *index.entry(s).or_insert_with(|| {
                    texts.push(s.to_string());
                    texts.len() - 1
                });
            }
            idx.push((pair[0], pair[1]));
        }
        Self { texts, pairs: idx, labels: pairs.iter().map(|p| p.label).collect() }
    }

    /// Spearman of the cosine similarities of `vectors` (one per sentence) against the labels.
    #[must_use]
    pub fn score(&self, vectors: &[Vec<f32>]) -> Option<f64> {
        let sims: Vec<f64> = self.pairs.iter().map(|&(a, b)| cosine(&vectors[a], &vectors[b])).collect();
        spearman(&sims, &self.labels)
    }
}

/// Sentences per model call (bounds memory and paces progress reports).
const BATCH: usize = 128;

fn tokens_of(tok: &Tokenizer, texts: &[String]) -> Vec<Vec<u32>> {
    texts.iter().map(|t| tok.encode_with_eos(t)).collect()
}

/// Starts a method's memory measurement; returns its peak when called again.
fn memory_window() -> impl Fn() -> f64 {
    memory::reset_peak_rss();
    memory::peak_rss_mb
}

/// Scores each layer of `layers` with each pooling of `poolings`: one model pass per layer (so
/// each row's time is what that layer costs), all poolings from it. `progress` gets the number
/// of sentences done after each batch.
pub fn evaluate_layers(
    rt: &Runtime,
    tok: &Tokenizer,
    sentences: &Sentences,
    layers: &[usize],
    poolings: &[Pooling],
    progress: &dyn Fn(usize),
) -> Result<Vec<MethodResult>> {
    let mut rows = Vec::new();
    for &layer in layers {
        let peak = memory_window();
        let pass = rt.layer_pass(&[layer])?;
        let mut by_pooling: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(sentences.texts.len()); poolings.len()];
        let started = Instant::now();
        for batch in sentences.texts.chunks(BATCH) {
            let seqs = tokens_of(tok, batch);
            let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            for pooled in pass.pooled(&refs)? {
                let Some(h) = pooled.into_iter().next() else {
                    return Err(Error::InvalidInput("the layer pass returned no hidden state".into()));
                };
                for (out, p) in by_pooling.iter_mut().zip(poolings) {
                    out.push(match p {
                        Pooling::Mean => h.mean.clone(),
                        Pooling::Last => h.last.clone(),
                        Pooling::Eos => h.eos.clone(),
                    });
                }
            }
            progress(batch.len());
        }
        let per_1000 = started.elapsed().as_secs_f64() * 1000.0 / sentences.texts.len().max(1) as f64;
        let peak_rss_mb = peak();
        for (vectors, &p) in by_pooling.iter().zip(poolings) {
            rows.push(MethodResult {
                method: "layer".into(),
                layer: Some(layer),
                pooling: Some(p),
                spearman: sentences.score(vectors),
                seconds_per_1000_sentences: per_1000,
                peak_rss_mb,
                pairs_without_known_words: None,
                dimension: None,
            });
        }
    }
    Ok(rows)
}

/// Scores the trained retrieval embedding (the one collections index).
pub fn evaluate_retrieval(
    rt: &Runtime,
    tok: &Tokenizer,
    sentences: &Sentences,
    progress: &dyn Fn(usize),
) -> Result<MethodResult> {
    let peak = memory_window();
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(sentences.texts.len());
    for batch in sentences.texts.chunks(BATCH) {
        let seqs = tokens_of(tok, batch);
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        vectors.extend(rt.embed(&refs)?);
        progress(batch.len());
    }
    Ok(MethodResult {
        method: "retrieval".into(),
        layer: None,
        pooling: None,
        spearman: sentences.score(&vectors),
        seconds_per_1000_sentences: started.elapsed().as_secs_f64() * 1000.0 / sentences.texts.len().max(1) as f64,
        peak_rss_mb: peak(),
        pairs_without_known_words: None,
        dimension: None,
    })
}

/// Lowercased words of `text` for the GloVe baseline: maximal runs of letters and digits.
pub fn glove_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// GloVe vectors of the words a pair list uses.
#[derive(Debug)]
pub struct Glove {
    /// Vector dimension.
    pub dimension: usize,
    vectors: HashMap<String, Vec<f32>>,
}

impl Glove {
    /// Reads a GloVe text file (`word v1 ... vd` per line), keeping only the words in `wanted`.
    pub fn load(path: &Path, wanted: &HashSet<String>) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let mut vectors = HashMap::new();
        let mut dimension = 0;
        for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let line = line.map_err(|e| io_error(path, e))?;
            let line = String::from_utf8_lossy(&line);
            let fields: Vec<&str> = line.trim_end().split(' ').collect();
            if fields.len() < 2 {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(bad_line(path, n + 1, "expected a word and its vector"));
            }
            if dimension == 0 {
                dimension = fields.len() - 1;
            }
            // A word may itself contain spaces (in some GloVe files): the vector is the tail.
            let Some(split) = fields.len().checked_sub(dimension).filter(|&s| s >= 1) else {
                return Err(bad_line(path, n + 1, &format!("{} values, {dimension} expected", fields.len() - 1)));
            };
            let word = fields[..split].join(" ");
            if !wanted.contains(&word) {
                continue;
            }
            let v: Vec<f32> = fields[split..]
                .iter()
                .map(|f| f.parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad_line(path, n + 1, &format!("bad number: {e}")))?;
            vectors.entry(word).or_insert(v);
        }
        if dimension == 0 {
            return Err(Error::InvalidInput(format!("{}: no vectors", path.display())));
        }
        Ok(Self { dimension, vectors })
    }

    /// The mean vector of the known words of `text`, or `None` when none is known.
    #[must_use]
    pub fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let mut sum = vec![0.0f32; self.dimension];
        let mut known = 0;
        for word in glove_words(text) {
            if let Some(v) = self.vectors.get(&word) {
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                known += 1;
            }
        }
        (known > 0).then(|| sum.into_iter().map(|s| s / known as f32).collect())
    }
}

/// Scores the GloVe average baseline from the vector file at `path`.
pub fn evaluate_glove(path: &Path, sentences: &Sentences) -> Result<MethodResult> {
    let peak = memory_window();
    let wanted: HashSet<String> = sentences.texts.iter().flat_map(|t| glove_words(t)).collect();
    let glove = Glove::load(path, &wanted)?;
    let started = Instant::now();
    let vectors: Vec<Option<Vec<f32>>> = sentences.texts.iter().map(|t| glove.embed(t)).collect();
    let seconds = started.elapsed().as_secs_f64();
    let mut without = 0;
    let sims: Vec<f64> = sentences
        .pairs
        .iter()
        .map(|&(a, b)| {
            if let (Some(x), Some(y)) = (&vectors[a], &vectors[b]) {
                cosine(x, y)
            } else {
                without += 1;
                0.0
            }
        })
        .collect();
    Ok(MethodResult {
        method: "glove".into(),
        layer: None,
        pooling: None,
        spearman: spearman(&sims, &sentences.labels),
        seconds_per_1000_sentences: seconds * 1000.0 / sentences.texts.len().max(1) as f64,
        peak_rss_mb: peak(),
        pairs_without_known_words: Some(without),
        dimension: Some(glove.dimension),
    })
}
