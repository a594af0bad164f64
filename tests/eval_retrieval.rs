//! `rwkvdb eval retrieval`: the measures against values computed by hand, and the command on a
//! tiny BEIR-format set with a synthetic model (its JSON checked against its own run files,
//! measured again here by an independent few lines).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use rwkvdb::eval::retrieval::{self, Qrels, Run};
use serde_json::{json, Value};

fn run(items: &[(&str, f64)]) -> Run {
    items.iter().map(|(d, s)| ((*d).to_string(), *s)).collect()
}

fn judged(items: &[(&str, i64)]) -> HashMap<String, i64> {
    items.iter().map(|(d, g)| ((*d).to_string(), *g)).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn measures_match_hand_computed_values() {
    // Graded judgments, an unjudged document, and a tie (a and x at 0.5: trec_eval puts the
    // larger id first, so x ranks 2nd and a 3rd).
    let mut a = run(&[("c", 0.9), ("a", 0.5), ("x", 0.5), ("b", 0.1)]);
    retrieval::trec_order(&mut a);
    let order: Vec<&str> = a.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(order, ["c", "x", "a", "b"]);
    let m = retrieval::measures(&a, &judged(&[("a", 2), ("b", 1), ("c", 0)]));
    // DCG = 2/log2(4) + 1/log2(5); IDCG = 2/log2(2) + 1/log2(3).
    assert!(close(m.ndcg_10, 0.543_791_241_910_304), "{m:?}");
    assert!(close(m.recall_10, 1.0) && close(m.recall_100, 1.0));
    assert!(close(m.mrr_10, 1.0 / 3.0));
    // Precision 1/3 at rank 3 and 2/4 at rank 4, over 2 relevant documents.
    assert!(close(m.map_100, 5.0 / 12.0));

    // Relevant documents never retrieved count in the denominators.
    let b = run(&[("p", 3.0), ("z", 2.0)]);
    let m = retrieval::measures(&b, &judged(&[("p", 1), ("q", 1), ("r", 1)]));
    assert!(close(m.ndcg_10, 0.469_278_726_022_756_44), "{m:?}");
    assert!(close(m.recall_10, 1.0 / 3.0) && close(m.mrr_10, 1.0) && close(m.map_100, 1.0 / 3.0));

    // A relevant document at rank 11 counts for Recall@100 and MAP@100 only.
    let mut deep: Vec<(String, f64)> = (0..10).map(|i| (format!("n{i}"), 10.0 - f64::from(i))).collect();
    deep.push(("t".into(), 0.5));
    let m = retrieval::measures(&deep, &judged(&[("t", 1)]));
    assert!(close(m.ndcg_10, 0.0) && close(m.recall_10, 0.0) && close(m.mrr_10, 0.0));
    assert!(close(m.recall_100, 1.0) && close(m.map_100, 1.0 / 11.0));

    // Means over the judged queries: one whose judgments are all 0 and one never run count as 0.
    let mut qrels = Qrels::new();
    qrels.insert("qa".into(), judged(&[("a", 2), ("b", 1), ("c", 0)]));
    qrels.insert("qb".into(), judged(&[("p", 1), ("q", 1), ("r", 1)]));
    qrels.insert("qc".into(), judged(&[("m", 0)]));
    qrels.insert("qd".into(), judged(&[("d", 1)]));
    let runs: HashMap<String, Run> = [
        ("qa".to_string(), run(&[("c", 0.9), ("a", 0.5), ("x", 0.5), ("b", 0.1)])),
        ("qb".to_string(), b),
        ("qc".to_string(), run(&[("m", 1.0)])),
        ("unjudged".to_string(), run(&[("a", 1.0)])),
    ]
    .into_iter()
    .collect();
    let (mean, no_relevant) = retrieval::mean_measures(&runs, &qrels);
    assert_eq!(no_relevant, 1);
    assert!(close(mean.ndcg_10, (0.543_791_241_910_304 + 0.469_278_726_022_756_44) / 4.0), "{mean:?}");
    assert!(close(mean.mrr_10, (1.0 / 3.0 + 1.0) / 4.0));

    let text = retrieval::trec_run_file(&runs, "tag");
    let first: Vec<&str> = text.lines().take(4).collect();
    assert_eq!(
        first,
        ["qa Q0 c 1 0.900000 tag", "qa Q0 x 2 0.500000 tag", "qa Q0 a 3 0.500000 tag", "qa Q0 b 4 0.100000 tag"]
    );
}

#[test]
fn beir_files_are_read_and_bad_lines_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("c.jsonl"),
        "{\"_id\": 7, \"title\": \"T\", \"text\": \"body\"}\n\n{\"_id\": \"x\", \"text\": \"only\"}\n",
    )
    .unwrap();
    let docs = retrieval::read_beir_jsonl(&d.join("c.jsonl")).unwrap();
    assert_eq!(docs, [("7".to_string(), "T body".to_string()), ("x".to_string(), "only".to_string())]);
    std::fs::write(d.join("q.tsv"), "query-id\tcorpus-id\tscore\nq1\t7\t2\nq1\tx\t0\n").unwrap();
    let qrels = retrieval::read_qrels(&d.join("q.tsv")).unwrap();
    assert_eq!(qrels["q1"]["7"], 2);
    std::fs::write(d.join("bad.tsv"), "h\nq1\t7\n").unwrap();
    let e = retrieval::read_qrels(&d.join("bad.tsv")).unwrap_err().to_string();
    assert!(e.contains("bad.tsv:2") && e.contains("3 tab-separated fields"), "{e}");
    std::fs::write(d.join("bad.jsonl"), "{\"_id\": \"a\"}\n").unwrap();
    let e = retrieval::read_beir_jsonl(&d.join("bad.jsonl")).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:1") && e.contains("text"), "{e}");
}

const DOCS: [(&str, &str, &str); 8] = [
    ("d1", "Boiling", "Water boils at 100 degrees Celsius at sea level."),
    ("d2", "Ice", "Ice melts at zero degrees."),
    ("d3", "Violin", "The violin has four strings tuned in fifths."),
    ("d4", "Piano", "A piano has eighty-eight keys."),
    ("d5", "Nile", "The Nile is the longest river in Africa."),
    ("d6", "Amazon", "The Amazon carries the most water of any river."),
    ("d7", "Rust", "Rust's borrow checker prevents data races."),
    ("d8", "", "Photosynthesis turns light into chemical energy."),
];

/// nDCG@10 of a TREC run file against the qrels, written independently of the crate.
fn ndcg_from_run_file(text: &str, qrels: &HashMap<&str, HashMap<&str, f64>>) -> f64 {
    let mut ranked: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!((f.len(), f[1]), (6, "Q0"), "{line}");
        ranked.entry(f[0]).or_default().push((f[3].parse().unwrap(), f[2]));
    }
    let mut total = 0.0;
    for (q, judged) in qrels {
        let mut list = ranked.remove(q).unwrap_or_default();
        list.sort_unstable();
        let dcg: f64 =
            list.iter().take(10).map(|(r, d)| judged.get(d).copied().unwrap_or(0.0) / ((*r + 1) as f64).log2()).sum();
        let mut ideal: Vec<f64> = judged.values().copied().filter(|g| *g > 0.0).collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal.iter().take(10).enumerate().map(|(i, g)| g / ((i + 2) as f64).log2()).sum();
        total += if idcg > 0.0 { dcg / idcg } else { 0.0 };
    }
    total / qrels.len() as f64
}

fn rwkvdb(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(dir)
        .env_remove("RWKVDB_PATH")
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_command_reports_every_mode_and_preset_and_writes_run_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_small_pair(d);
    let corpus: String =
        DOCS.iter().map(|(id, t, x)| json!({ "_id": id, "title": t, "text": x }).to_string() + "\n").collect();
    std::fs::write(d.join("corpus.jsonl"), corpus).unwrap();
    let queries = [
        ("q1", "When does water boil?"),
        ("q2", "Which instrument has strings?"),
        ("q3", "Longest river"),
        ("q4", "Not judged"),
    ];
    let queries_text: String =
        queries.iter().map(|(id, t)| json!({ "_id": id, "text": t }).to_string() + "\n").collect();
    std::fs::write(d.join("queries.jsonl"), queries_text).unwrap();
    std::fs::write(
        d.join("qrels.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\nq3\td5\t2\nq3\td6\t1\nq3\td7\t0\n",
    )
    .unwrap();
    let qrels: HashMap<&str, HashMap<&str, f64>> = [
        ("q1", [("d1", 2.0), ("d2", 1.0)].into_iter().collect()),
        ("q2", [("d3", 1.0)].into_iter().collect()),
        ("q3", [("d5", 2.0), ("d6", 1.0), ("d7", 0.0)].into_iter().collect()),
    ]
    .into_iter()
    .collect();

    let out = rwkvdb(
        d,
        &[
            "eval",
            "retrieval",
            "--corpus",
            "corpus.jsonl",
            "--queries",
            "queries.jsonl",
            "--qrels",
            "qrels.tsv",
            "--embedder",
            "emb.pth",
            "--reranker",
            "rr.pth",
            "--rerank",
            "none,offline,online",
            "--preset",
            "balanced,tiny",
            "--online-sample",
            "2",
            "--run",
            "runs",
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["documents"].as_u64(), report["queries"].as_u64()), (Some(8), Some(3)));
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for preset in results {
        let name = preset["preset"].as_str().unwrap();
        let modes = preset["modes"].as_array().unwrap();
        let counts: Vec<u64> = modes.iter().map(|m| m["queries"].as_u64().unwrap()).collect();
        assert_eq!(counts, [3, 3, 2], "online runs on the sample");
        assert_eq!(preset["offline_vs_online"]["queries"], 2);
        for m in modes {
            let mode = m["mode"].as_str().unwrap();
            let text = std::fs::read_to_string(d.join(format!("runs.{name}.{mode}.trec"))).unwrap();
            assert!(text.lines().all(|l| l.ends_with(&format!("rwkvdb-{name}-{mode}"))));
            if mode != "online" {
                // 8 documents, all returned for each of the 3 queries.
                assert_eq!(text.lines().count(), 24);
                let want = ndcg_from_run_file(&text, &qrels);
                let got = m["measures"]["ndcg_10"].as_f64().unwrap();
                assert!((want - got).abs() < 1e-9, "{name} {mode}: {got} vs {want}");
            }
            assert!(m["latency_p50_ms"].as_f64().unwrap() > 0.0);
        }
    }
    // Without reranking, presets do not matter: the same embeddings give the same ranking.
    assert_eq!(results[0]["modes"][0]["measures"], results[1]["modes"][0]["measures"]);

    // The same documents stored in a collection evaluate the same without reranking.
    let jsonl: String = DOCS
        .iter()
        .map(|(id, t, x)| {
            json!({ "id": id, "text": if t.is_empty() { (*x).to_string() } else { format!("{t} {x}") } }).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(d.join("docs.jsonl"), jsonl).unwrap();
    rwkvdb(d, &["init", "--db", "s.redb"]);
    rwkvdb(d, &["collection", "create", "c", "--db", "s.redb", "--embedder", "emb.pth", "--reranker", "rr.pth"]);
    rwkvdb(d, &["import", "--db", "s.redb", "-c", "c", "docs.jsonl", "--quiet"]);
    let out = rwkvdb(
        d,
        &[
            "eval",
            "retrieval",
            "--collection",
            "c",
            "--db",
            "s.redb",
            "--queries",
            "queries.jsonl",
            "--qrels",
            "qrels.tsv",
            "--rerank",
            "none",
            "--json",
        ],
    );
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["results"][0]["modes"][0]["measures"], results[0]["modes"][0]["measures"]);

    // The table names every preset and mode.
    let table = rwkvdb(
        d,
        &[
            "eval",
            "retrieval",
            "--collection",
            "c",
            "--db",
            "s.redb",
            "--queries",
            "queries.jsonl",
            "--qrels",
            "qrels.tsv",
            "--rerank",
            "none,offline",
        ],
    );
    assert!(
        table.contains("nDCG@10") && table.contains("offline") && table.contains("3 queries with judgments"),
        "{table}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("q.jsonl"), "{\"_id\": \"q1\", \"text\": \"x\"}\n").unwrap();
    std::fs::write(d.join("qrels.tsv"), "h\tx\ty\nq9\td1\t1\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(d)
        .args([
            "eval",
            "retrieval",
            "--corpus",
            "c.jsonl",
            "--embedder",
            "e.pth",
            "--queries",
            "q.jsonl",
            "--qrels",
            "qrels.tsv",
            "--rerank",
            "sideways",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown mode \"sideways\""));
    let o = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(d)
        .args([
            "eval",
            "retrieval",
            "--corpus",
            "c.jsonl",
            "--embedder",
            "e.pth",
            "--queries",
            "q.jsonl",
            "--qrels",
            "qrels.tsv",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no query of q.jsonl has judgments"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Reranking without a reranker is refused before the corpus is indexed.
    common::write_small_pair(d);
    std::fs::write(d.join("qrels.tsv"), "h\tx\ty\nq1\td1\t1\n").unwrap();
    std::fs::write(d.join("c.jsonl"), "{\"_id\": \"d1\", \"text\": \"x\"}\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(d)
        .args([
            "eval",
            "retrieval",
            "--corpus",
            "c.jsonl",
            "--embedder",
            "emb.pth",
            "--queries",
            "q.jsonl",
            "--qrels",
            "qrels.tsv",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs a reranker"), "{}", String::from_utf8_lossy(&o.stderr));
}
