//! `rwkvdb eval layers`: Spearman with ties against hand-computed values, both pair formats and
//! their errors, the GloVe baseline on a tiny vector file, and the command end to end, whose
//! layer rows are recomputed here from the scalar reference's hidden states.

mod common;

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use common::{reference, small_pair};
use rwkvdb::eval::layers::{self, Glove, Pair, PairFormat, Sentences};
use rwkvdb::tokenizer::Tokenizer;
use serde_json::Value;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Spearman written independently of the code under test: a value's rank is the count of
/// smaller values plus the mean position among its equals.
fn spearman_by_counting(x: &[f64], y: &[f64]) -> f64 {
    let rank = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .map(|a| {
                let below = v.iter().filter(|b| *b < a).count() as f64;
                let equal = v.iter().filter(|b| b.total_cmp(a).is_eq()).count() as f64;
                below + (equal + 1.0) * 0.5
            })
            .collect()
    };
    let (rx, ry) = (rank(x), rank(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn spearman_averages_ties() {
    // x ranks: 0.1 -> 1, the two 0.4 -> 2.5, 0.7 -> 4, 0.9 -> 5.
    // y ranks: the two 0 -> 1.5, the three 1 -> 4.
    // Deviations from the mean rank 3: dx = (-2, -.5, -.5, 2, 1), dy = (-1.5, 1, -1.5, 1, 1):
    // sum dx*dy = 6.25, sum dx^2 = 9.5, sum dy^2 = 7.5.
    let x = [0.1, 0.4, 0.4, 0.9, 0.7];
    let y = [0.0, 1.0, 0.0, 1.0, 1.0];
    assert_eq!(layers::average_ranks(&x), [1.0, 2.5, 2.5, 5.0, 4.0]);
    assert_eq!(layers::average_ranks(&y), [1.5, 4.0, 1.5, 4.0, 4.0]);
    let want = 6.25 / (9.5f64 * 7.5).sqrt();
    assert!(close(layers::spearman(&x, &y).unwrap(), want));
    assert!(close(spearman_by_counting(&x, &y), want));
    // A perfect monotone relation, a reversed one, and constants.
    assert!(close(layers::spearman(&[1.0, 5.0, 9.0], &[0.0, 2.0, 3.0]).unwrap(), 1.0));
    assert!(close(layers::spearman(&[1.0, 5.0, 9.0], &[3.0, 2.0, 0.0]).unwrap(), -1.0));
    assert_eq!(layers::spearman(&[1.0, 1.0, 1.0], &[0.0, 1.0, 2.0]), None);
    assert_eq!(layers::spearman(&[1.0], &[1.0]), None);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn pair(a: &str, b: &str, label: f64) -> Pair {
    Pair { first: a.into(), second: b.into(), label }
}

#[test]
fn both_pair_formats_are_read_and_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // MRPC as distributed: a byte-order mark, CRLF line ends, quotes inside sentences.
    let mrpc = write(
        d,
        "mrpc.tsv",
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t702876\t702977\tHe said \"yes\".\tHe agreed.\r\n0\t2108705\t2108831\tA b.\tC d.\r\n"
            .as_bytes(),
    );
    let (f, pairs) = layers::read_pairs(&mrpc, None).unwrap();
    assert_eq!(f, PairFormat::Mrpc);
    assert_eq!(pairs, [pair("He said \"yes\".", "He agreed.", 1.0), pair("A b.", "C d.", 0.0)]);

    // GLUE STS-B: columns found by name.
    let glue = write(
        d,
        "sts-glue.tsv",
        b"index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
          0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n\
          1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays a flute.\tA man cuts a tomato.\t0.500\n",
    );
    let (f, pairs) = layers::read_pairs(&glue, None).unwrap();
    assert_eq!(f, PairFormat::Stsb);
    assert_eq!(
        pairs,
        [
            pair("A plane is taking off.", "An air plane is taking off.", 5.0),
            pair("A man plays a flute.", "A man cuts a tomato.", 0.5)
        ]
    );

    // The STS benchmark's headerless sts-*.csv, one line with trailing source columns.
    let csv = write(
        d,
        "sts-dev.csv",
        b"main-captions\tMSRvid\t2012test\t0000\t5.000\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\n\
          main-news\theadlines\t2013\t0001\t1.4\tOne.\tTwo.\tsource-a\tsource-b\n",
    );
    let (f, pairs) = layers::read_pairs(&csv, None).unwrap();
    assert_eq!(f, PairFormat::Stsb);
    assert_eq!(pairs[1], pair("One.", "Two.", 1.4));
    assert_eq!(layers::read_pairs(&csv, Some(PairFormat::Stsb)).unwrap().1.len(), 2);

    // MRPC asked for, MRPC without its header line.
    let bare = write(d, "bare.tsv", b"1\t1\t2\tx y\tz\n");
    assert_eq!(layers::read_pairs(&bare, Some(PairFormat::Mrpc)).unwrap().1, [pair("x y", "z", 1.0)]);
}

#[test]
fn bad_pair_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = |name: &str, bytes: &[u8], format: Option<PairFormat>| {
        let p = write(d, name, bytes);
        layers::read_pairs(&p, format).unwrap_err().to_string()
    };
    let header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n";
    let e = err("label.tsv", format!("{header}1\t1\t2\ta\tb\nyes\t3\t4\tc\td\n").as_bytes(), None);
    assert!(e.contains("label.tsv:3") && e.contains("\"yes\" is not a number"), "{e}");
    let e = err("short.tsv", format!("{header}1\t1\t2\ta\n").as_bytes(), None);
    assert!(e.contains("short.tsv:2") && e.contains("no second sentence"), "{e}");
    let e = err("empty-sentence.tsv", format!("{header}1\t1\t2\t \tb\n").as_bytes(), None);
    assert!(e.contains("empty-sentence.tsv:2") && e.contains("empty sentence"), "{e}");
    let mut latin1 = format!("{header}1\t1\t2\tcaf").into_bytes();
    latin1.extend_from_slice(b"\xe9\tb\n");
    let e = err("latin1.tsv", &latin1, None);
    assert!(e.contains("latin1.tsv:2") && e.contains("not UTF-8"), "{e}");
    let e = err("what.tsv", b"a,b,c\n", None);
    assert!(e.contains("not an MRPC or STS-B pairs file"), "{e}");
    let e = err("empty.tsv", b"", None);
    assert!(e.contains("no pairs"), "{e}");
    let e = err("header-only.tsv", header.as_bytes(), None);
    assert!(e.contains("no pairs after the header"), "{e}");
    // An MRPC file read as STS-B is refused rather than misread.
    let e = err("forced.tsv", format!("{header}1\t1\t2\ta\tb\n").as_bytes(), Some(PairFormat::Stsb));
    assert!(e.contains("not an MRPC or STS-B pairs file"), "{e}");
    assert!(layers::read_pairs(&d.join("missing.tsv"), None).unwrap_err().to_string().contains("missing.tsv"));
}

/// A tiny GloVe file: three 2-d words, plus an unrelated word and a word with a space.
const GLOVE: &str = "cat 1 0\ndog 0.8 0.6\ncar 0 1\nzebra 9 9\nnew york 1 1\n";

#[test]
fn glove_baseline_on_a_tiny_vector_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "glove.txt", GLOVE.as_bytes());
    let words: Vec<String> = layers::glove_words("The Cat's car, (dog)!").collect();
    assert_eq!(words, ["the", "cat", "s", "car", "dog"]);

    let wanted = ["cat", "dog", "car", "new york"].iter().map(|s| (*s).to_string()).collect();
    let g = Glove::load(&path, &wanted).unwrap();
    assert_eq!(g.dimension, 2);
    // "The cat and the car": mean of cat (1,0) and car (0,1); unknown words skipped.
    assert_eq!(g.embed("The cat and the car").unwrap(), [0.5, 0.5]);
    assert_eq!(g.embed("no known words"), None);

    // Pairs: cat/dog cos 0.8, cat/car cos 0, dog/car cos 0.6, and one with no known word.
    let pairs = [
        pair("a cat", "a dog", 3.0),
        pair("CAT!", "car", 1.0),
        pair("dog", "car", 2.0),
        pair("nothing known", "cat", 0.5),
    ];
    let s = Sentences::new(&pairs);
    let r = layers::evaluate_glove(&path, &s).unwrap();
    assert_eq!(r.method, "glove");
    assert_eq!(r.pairs_without_known_words, Some(1));
    assert_eq!(r.dimension, Some(2));
    // Similarities (0.8, 0, 0.6, 0) against labels (3, 1, 2, 0.5).
    let want = spearman_by_counting(&[0.8, 0.0, 0.6, 0.0], &[3.0, 1.0, 2.0, 0.5]);
    assert!(close(r.spearman.unwrap(), want), "{:?} vs {want}", r.spearman);

    let bad = write(dir.path(), "bad.txt", b"cat 1 0\ndog 0.8\n");
    let e = Glove::load(&bad, &wanted).unwrap_err().to_string();
    assert!(e.contains("bad.txt:2") && e.contains("1 values, 2 expected"), "{e}");
    let bad = write(dir.path(), "nan.txt", b"cat 1 0\ndog 0.8 x\n");
    assert!(Glove::load(&bad, &wanted).unwrap_err().to_string().contains("nan.txt:2"));
}

fn rwkvdb(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rwkvdb")).current_dir(dir).args(args).output().unwrap()
}

const SENTENCES: &[(&str, &str, f64)] = &[
    ("The cat sat on the mat.", "A cat was sitting on the mat.", 4.5),
    ("Stocks fell sharply on Monday.", "The weather was sunny in Paris.", 0.2),
    ("He bought a new car yesterday.", "Yesterday he purchased a new car.", 4.8),
    ("The meeting was postponed.", "She plays the violin well.", 0.0),
    ("Rain is expected tomorrow.", "Tomorrow it will probably rain.", 4.0),
    ("x", "The cat sat on the mat.", 1.0),
    ("Two dogs run in a park.", "Dogs are running outside.", 3.2),
    ("A woman slices an onion.", "A man is playing a guitar.", 0.4),
];

#[test]
fn the_command_matches_the_reference_hidden_states() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_small_pair(d);
    let mut tsv = String::from("index\tsentence1\tsentence2\tscore\n");
    for (i, (a, b, s)) in SENTENCES.iter().enumerate() {
        writeln!(tsv, "{i}\t{a}\t{b}\t{s}").unwrap();
    }
    std::fs::write(d.join("pairs.tsv"), tsv).unwrap();
    std::fs::write(d.join("glove.txt"), GLOVE).unwrap();
    let o = rwkvdb(
        d,
        &[
            "eval",
            "layers",
            "--embedder",
            "emb.pth",
            "--pairs",
            "pairs.tsv",
            "--layers",
            "1,3",
            "--pooling",
            "mean,last,eos",
            "--glove",
            "glove.txt",
            "--json",
            "--plot",
            "layers.svg",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["format"], "stsb");
    assert_eq!(report["pairs"], 8);
    assert_eq!(report["sentences"], 15);
    let methods = report["methods"].as_array().unwrap();
    // GloVe, 2 layers x 3 poolings, the retrieval embedding.
    assert_eq!(methods.len(), 8);

    // Expected Spearman per layer and pooling from the reference's hidden states.
    let (emb, _) = small_pair();
    let tok = Tokenizer::world();
    let labels: Vec<f64> = SENTENCES.iter().map(|p| p.2).collect();
    let cos = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|y| y * y).sum::<f64>().sqrt())
    };
    for layer in [1usize, 3] {
        let pooled = |text: &str, pooling: &str| -> Vec<f64> {
            let tokens = tok.encode_with_eos(text);
            let h = reference::hidden(&emb, &tokens, layer);
            let n = tokens.len() - 1;
            match pooling {
                "mean" => (0..h[0].len()).map(|j| h[..n].iter().map(|r| r[j]).sum::<f64>() / n as f64).collect(),
                "last" => h[n - 1].clone(),
                _ => h[n].clone(),
            }
        };
        for pooling in ["mean", "last", "eos"] {
            let sims: Vec<f64> =
                SENTENCES.iter().map(|(a, b, _)| cos(&pooled(a, pooling), &pooled(b, pooling))).collect();
            let want = spearman_by_counting(&sims, &labels);
            let row = methods
                .iter()
                .find(|m| m["method"] == "layer" && m["layer"] == layer && m["pooling"] == pooling)
                .unwrap_or_else(|| panic!("no row for layer {layer} {pooling}"));
            let got = row["spearman"].as_f64().unwrap();
            assert!(close(got, want), "layer {layer} {pooling}: {got} vs {want}");
            assert!(row["seconds_per_1000_sentences"].as_f64().unwrap() > 0.0);
            assert!(row["peak_rss_mb"].as_f64().unwrap() > 0.0);
        }
    }
    // The retrieval row: the reference's official embedding.
    let sims: Vec<f64> = SENTENCES
        .iter()
        .map(|(a, b, _)| {
            cos(&reference::embed(&emb, &tok.encode_with_eos(a)), &reference::embed(&emb, &tok.encode_with_eos(b)))
        })
        .collect();
    let retrieval = methods.iter().find(|m| m["method"] == "retrieval").unwrap();
    assert!(close(retrieval["spearman"].as_f64().unwrap(), spearman_by_counting(&sims, &labels)));
    // GloVe knows only cat, dog and car: pairs 1 and 3 have a known word on both sides.
    let glove = methods.iter().find(|m| m["method"] == "glove").unwrap();
    assert_eq!(glove["pairs_without_known_words"], 6);

    let svg = std::fs::read_to_string(d.join("layers.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("mean pooling") && svg.contains("retrieval embedding"));

    // The table names every method.
    let o = rwkvdb(d, &["eval", "layers", "--embedder", "emb.pth", "--pairs", "pairs.tsv", "--layers", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("layer 2 (mean)") && table.contains("retrieval embedding"), "{table}");
}

#[test]
fn bad_arguments_are_refused_before_the_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_small_pair(d);
    std::fs::write(d.join("pairs.tsv"), "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\tb\n").unwrap();
    let base = ["eval", "layers", "--embedder", "emb.pth", "--pairs", "pairs.tsv"];
    let fails = |extra: &[&str], needle: &str| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = rwkvdb(d, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    fails(&["--layers", "5"], "layer 5 does not exist (the model has layers 1..=4)");
    fails(&["--layers", "0"], "layer 0 does not exist");
    fails(&["--glove", "missing.txt"], "missing.txt");
    fails(&["--plot", "no/such/dir/plot.svg"], "plot.svg");
    let o = rwkvdb(d, &["eval", "layers", "--embedder", "emb.pth", "--pairs", "pairs.tsv", "--pooling", "max"]);
    assert_eq!(o.status.code(), Some(2));
}
