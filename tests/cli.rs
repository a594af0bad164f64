//! The `rwkvdb` command line, run as a real process.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn rwkvdb(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(dir)
        .env("RWKVDB_PATH", dir.join("cli.redb"))
        .env_remove("RWKVDB_EMBEDDER")
        .env_remove("RWKVDB_RERANKER")
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "unexpected success: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(o.status.code(), Some(1));
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn model_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&rwkvdb(
        d,
        &[
            "model",
            "synth",
            "--layers",
            "3",
            "--width",
            "64",
            "--reranker-layers",
            "0,1",
            "--embedder",
            "e.pth",
            "--reranker",
            "r.pth",
        ],
    ));
    let info = ok(&rwkvdb(d, &["model", "info", "e.pth", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["config"]["layers"], 3);
    assert_eq!(v["config"]["width"], 64);
    let info = ok(&rwkvdb(d, &["model", "info", "r.pth", "--json"]));
    assert!(info.contains("\"reranker_layer_idx\""));
    std::fs::write(
        d.join("in.json"),
        r#"{"documents":[{"id":"d1","text":"hello world"}],"queries":[{"id":"q1","text":"hi"}],"pairs":[["q1","d1"]]}"#,
    )
    .unwrap();
    ok(&rwkvdb(
        d,
        &["model", "eval", "--embedder", "e.pth", "--reranker", "r.pth", "--input", "in.json", "--output", "out.json"],
    ));
    let out: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("out.json")).unwrap()).unwrap();
    assert_eq!(out["embeddings"]["d1"].as_array().unwrap().len(), 64);
    assert_eq!(out["tokens"]["q1"].as_array().unwrap().last().unwrap(), 65535);
    let s = &out["scores"][0];
    assert!((s["online_logit"].as_f64().unwrap() - s["offline_logit"].as_f64().unwrap()).abs() < 1e-4);

    // Failures: a file that is not a checkpoint, a wrong shape, a missing reranker for pairs.
    std::fs::write(d.join("junk.pth"), b"not a checkpoint").unwrap();
    assert!(err(&rwkvdb(d, &["model", "info", "junk.pth"])).contains("not a model checkpoint"));
    assert!(err(&rwkvdb(d, &["model", "eval", "--embedder", "e.pth", "--input", "in.json"])).contains("--reranker"));
    assert!(
        err(&rwkvdb(d, &["model", "eval", "--embedder", "r.pth", "--input", "in.json"])).contains("rwkv.emb.weight")
    );
}

#[test]
fn database_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (emb, rr) = common::write_small_pair(d);
    let (emb, rr) = (emb.to_str().unwrap(), rr.to_str().unwrap());

    // Missing database and unknown collection are clear errors.
    assert!(err(&rwkvdb(d, &["collection", "list"])).contains("rwkvdb init"));
    ok(&rwkvdb(d, &["init"]));
    assert!(err(&rwkvdb(d, &["query", "-c", "nope", "x"])).contains("no collection named \"nope\""));
    ok(&rwkvdb(d, &["collection", "create", "notes", "--embedder", emb, "--reranker", rr]));
    assert!(ok(&rwkvdb(d, &["collection", "list"])).contains("notes"));

    // JSONL import with one malformed line: reported with its line number, the rest imported.
    let mut lines: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"id":"n{i}","text":"Note {i} about topic {}","metadata":{{"k":{}}}}}"#, i % 3, i % 3))
        .collect();
    lines.insert(5, "{ this is not json".into());
    std::fs::write(d.join("notes.jsonl"), lines.join("\n")).unwrap();
    let e = err(&rwkvdb(d, &["import", "-c", "notes", "notes.jsonl", "--quiet", "--batch-size", "4"]));
    assert!(e.contains("notes.jsonl:6: malformed JSON line"), "{e}");
    // Re-running skips what is stored (resume after an interruption).
    std::fs::write(
        d.join("notes.jsonl"),
        lines.iter().filter(|l| !l.contains("not json")).cloned().collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let out = ok(&rwkvdb(d, &["import", "-c", "notes", "notes.jsonl", "--quiet"]));
    assert!(out.contains("imported 0 documents") && out.contains("12 already present"), "{out}");

    // Folder import: an invalid UTF-8 file is reported and skipped.
    std::fs::create_dir(d.join("folder")).unwrap();
    std::fs::write(d.join("folder/a.txt"), "A plain text file about rivers.").unwrap();
    std::fs::write(d.join("folder/b.md"), "# Markdown\nAbout mountains.").unwrap();
    std::fs::write(d.join("folder/bad.txt"), [0x66, 0x6f, 0xff, 0xfe, 0x6f]).unwrap();
    let e = err(&rwkvdb(d, &["import", "-c", "notes", "folder", "--quiet"]));
    assert!(e.contains("bad.txt") && e.contains("not valid UTF-8"), "{e}");
    ok(&rwkvdb(d, &["get", "-c", "notes", "a.txt"]));

    let q = ok(&rwkvdb(d, &["query", "-c", "notes", "Note about topic 1", "--top-k", "3", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&q).unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 3);
    let q =
        ok(&rwkvdb(d, &["query", "-c", "notes", "topic", "--filter", r#"{"k": 2}"#, "--rerank", "online", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&q).unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 4);
    assert!(v["hits"].as_array().unwrap().iter().all(|h| h["metadata"]["k"] == 2));
    let human = ok(&rwkvdb(d, &["query", "-c", "notes", "rivers", "--rerank", "none"]));
    assert!(human.contains("rank") && human.contains("cosine"));
    assert!(err(&rwkvdb(d, &["query", "-c", "notes", "x", "--filter", "{bad"])).contains("invalid filter"));

    let g = ok(&rwkvdb(d, &["get", "-c", "notes", "n3", "--json"]));
    assert!(g.contains("Note 3"));
    ok(&rwkvdb(d, &["delete", "-c", "notes", "n3", "n4"]));
    assert!(err(&rwkvdb(d, &["get", "-c", "notes", "n3"])).contains("no document"));
    let stats = ok(&rwkvdb(d, &["stats", "-c", "notes", "--json"]));
    let s: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(s["documents"], 12);
    assert!(s["state_bytes_per_document"].as_f64().unwrap() > 0.0);
    assert!(ok(&rwkvdb(d, &["check"])).contains("0 problem(s)"));
    ok(&rwkvdb(d, &["compact"]));

    // Without the model files, everything that does not run the model still works.
    std::fs::rename(d.join("emb.pth"), d.join("moved-emb.pth")).unwrap();
    ok(&rwkvdb(d, &["get", "-c", "notes", "n5"]));
    assert!(ok(&rwkvdb(d, &["stats", "-c", "notes"])).contains("12"));
    assert!(ok(&rwkvdb(d, &["check"])).contains("0 problem(s)"));
    ok(&rwkvdb(d, &["delete", "-c", "notes", "n5"]));
    ok(&rwkvdb(d, &["compact"]));
    assert!(err(&rwkvdb(d, &["query", "-c", "notes", "rivers"])).contains("emb.pth"));
    std::fs::rename(d.join("moved-emb.pth"), d.join("emb.pth")).unwrap();

    // A reader that goes away early (`| head -1`) ends the command quietly with success.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(d)
        .env("RWKVDB_PATH", d.join("cli.redb"))
        .args(["query", "-c", "notes", "Note about topic 1", "--top-k", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    ok(&rwkvdb(d, &["collection", "drop", "notes"]));
    assert!(!ok(&rwkvdb(d, &["collection", "list"])).contains("notes"));
}

#[test]
fn bench_quick_writes_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("e2e.json");
    ok(&rwkvdb(d, &["bench", "--quick", "--dir", "work", "--out", out.to_str().unwrap(), "--sizes", "200,600"]));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(v["insert"]["docs_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["insert"]["tokens_per_s"].as_f64().unwrap() > v["insert"]["docs_per_s"].as_f64().unwrap());
    let query = v["query"].as_array().unwrap();
    assert_eq!(query.len(), 6, "2 sizes x 3 rerank modes");
    for q in query {
        let (p50, p99) = (q["p50_ms"].as_f64().unwrap(), q["p99_ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p99 >= p50, "{q}");
    }
    let speedup = v["speedup"].as_array().unwrap();
    assert_eq!(speedup.len(), 2);
    for s in speedup {
        assert!(s["offline_pairs_per_s"].as_f64().unwrap() > 0.0 && s["online_pairs_per_s"].as_f64().unwrap() > 0.0);
    }
    // Presets: smaller presets store fewer bytes.
    let bytes: Vec<f64> =
        v["bytes_per_doc"].as_array().unwrap().iter().map(|r| r["state_bytes_per_doc"].as_f64().unwrap()).collect();
    assert_eq!(bytes.len(), 4);
    assert!(
        bytes[1] > bytes[0] && bytes[0] > bytes[2] && bytes[2] > bytes[3],
        "exact > balanced > compact > tiny: {bytes:?}"
    );
    assert_eq!(v["cold_open"][0]["n_docs"], 600);
    // The working databases are removed afterwards.
    let left: Vec<_> =
        std::fs::read_dir(d.join("work")).unwrap().filter_map(std::result::Result::ok).map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".redb")), "{left:?}");
}

#[test]
fn killed_import_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (emb, rr) = common::write_small_pair(d);
    ok(&rwkvdb(d, &["init"]));
    ok(&rwkvdb(
        d,
        &["collection", "create", "c", "--embedder", emb.to_str().unwrap(), "--reranker", rr.to_str().unwrap()],
    ));
    let lines: Vec<String> = (0..400)
        .map(|i| format!(r#"{{"id":"x{i}","text":"Entry {i}: a sentence about item {} of many."}}"#, i % 17))
        .collect();
    std::fs::write(d.join("big.jsonl"), lines.join("\n")).unwrap();
    // Kill the import once the first batches are committed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(d)
        .env("RWKVDB_PATH", d.join("cli.redb"))
        .args(["import", "-c", "c", "big.jsonl", "--quiet", "--batch-size", "8"])
        .spawn()
        .unwrap();
    let db_file = d.join("cli.redb");
    let start = std::time::Instant::now();
    let mut before = 0;
    while start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The stats of a live import cannot be read (the file is locked): wait for file growth.
        let len = std::fs::metadata(&db_file).map_or(0, |m| m.len());
        if before == 0 {
            before = len;
        } else if len > before + 200_000 {
            break;
        }
    }
    child.kill().unwrap();
    let finished_anyway = child.wait().unwrap().success();
    let stats: serde_json::Value = serde_json::from_str(&ok(&rwkvdb(d, &["stats", "-c", "c", "--json"]))).unwrap();
    let partial = stats["documents"].as_u64().unwrap();
    assert!(partial % 8 == 0 || partial == 400, "a batch was half-written: {partial}");
    let out = ok(&rwkvdb(d, &["import", "-c", "c", "big.jsonl", "--quiet"]));
    assert!(out.contains(&format!("{partial} already present")), "{out}");
    let stats: serde_json::Value = serde_json::from_str(&ok(&rwkvdb(d, &["stats", "-c", "c", "--json"]))).unwrap();
    assert_eq!(stats["documents"], 400);
    assert!(ok(&rwkvdb(d, &["check"])).contains("0 problem(s)"));
    eprintln!("killed after {partial} documents (finished before the kill: {finished_anyway})");
}

/// The traps a new user falls into get a message that names the thing at fault and what to do:
/// moved model files (repointed with `collection set-model`, fingerprint checked), a directory
/// given as the database, an unknown preset, `--top-k 0`, a truncated checkpoint, `init` on an
/// existing file, an empty collection list.
#[test]
fn user_traps_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = |layers: &str, e: &str, r: &str| {
        ok(&rwkvdb(
            d,
            &[
                "model",
                "synth",
                "--layers",
                layers,
                "--width",
                "64",
                "--reranker-layers",
                "0,1",
                "--embedder",
                e,
                "--reranker",
                r,
            ],
        ));
    };
    synth("3", "e.pth", "r.pth");
    synth("4", "e2.pth", "r2.pth"); // another model
    assert!(ok(&rwkvdb(d, &["init"])).contains("initialised"));
    assert!(ok(&rwkvdb(d, &["init"])).contains("already exists (0 collection(s))"));
    let o = rwkvdb(d, &["collection", "list"]);
    assert!(ok(&o).is_empty() && String::from_utf8_lossy(&o.stderr).contains("no collections"));

    let e = err(&rwkvdb(
        d,
        &["collection", "create", "c", "--embedder", "e.pth", "--reranker", "r.pth", "--preset", "bogus"],
    ));
    assert!(e.contains("bogus") && e.contains("balanced") && e.contains("tiny"), "{e}");
    ok(&rwkvdb(d, &["collection", "create", "c", "--embedder", "e.pth", "--reranker", "r.pth"]));
    std::fs::write(
        d.join("docs.jsonl"),
        "{\"id\":\"a\",\"text\":\"alpha beta\"}\n{\"id\":\"b\",\"text\":\"gamma delta\"}\n",
    )
    .unwrap();
    ok(&rwkvdb(d, &["import", "-c", "c", "docs.jsonl", "--quiet"]));
    let e = err(&rwkvdb(d, &["query", "-c", "c", "alpha", "--top-k", "0"]));
    assert!(e.contains("--top-k must be at least 1"), "{e}");

    // Moved model files: queries fail naming the file; set-model with another model is refused
    // (nothing changes); with the moved files it works.
    std::fs::create_dir(d.join("moved")).unwrap();
    std::fs::rename(d.join("e.pth"), d.join("moved/e.pth")).unwrap();
    std::fs::rename(d.join("r.pth"), d.join("moved/r.pth")).unwrap();
    let e = err(&rwkvdb(d, &["query", "-c", "c", "alpha"]));
    assert!(e.contains("e.pth"), "{e}");
    let e = err(&rwkvdb(d, &["collection", "set-model", "c", "--embedder", "e2.pth", "--reranker", "r2.pth"]));
    assert!(e.contains("fingerprint"), "{e}");
    let e = err(&rwkvdb(d, &["collection", "set-model", "c", "--embedder", "moved/e.pth"]));
    assert!(e.contains("reranker"), "{e}");
    ok(&rwkvdb(d, &["collection", "set-model", "c", "--embedder", "moved/e.pth", "--reranker", "moved/r.pth"]));
    let out = ok(&rwkvdb(d, &["query", "-c", "c", "alpha", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 2);
    assert!(v["timings"]["embed_ms"].is_number(), "{v}");

    // A directory as the database; a truncated checkpoint.
    let e = err(&rwkvdb(d, &["collection", "list", "--db", "moved"]));
    assert!(e.contains("moved") && e.contains("directory"), "{e}");
    let bytes = std::fs::read(d.join("e2.pth")).unwrap();
    std::fs::write(d.join("cut.pth"), &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&rwkvdb(d, &["model", "info", "cut.pth"]));
    assert!(e.contains("cut.pth") && e.contains("truncated"), "{e}");
    let info = ok(&rwkvdb(d, &["model", "info", "e2.pth", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(["f32", "bf16", "f16"].contains(&v["stored_dtype"].as_str().unwrap()), "{v}");
}
