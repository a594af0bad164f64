//! `rwkvdb serve`, run as a real process on loopback, driven over HTTP and by the CLI's
//! `--server`; results compared with the library reading the same file afterwards.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rwkvdb::{Database, OpenOptions, QueryOptions, Rerank};
use serde_json::{json, Value};

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `rwkvdb serve --db <dir>/s.redb --listen <listen> <extra>` and waits for its address.
    fn start(dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
            .current_dir(dir)
            .env_remove("RWKVDB_API_KEY")
            .args(["serve", "--db", "s.redb", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()) else {
            let out = child.wait_with_output().unwrap();
            panic!("server did not start: {line}{}", String::from_utf8_lossy(&out.stderr));
        };
        // A server bound to every interface is reached through loopback.
        let url = format!("http://{}", addr.replace("0.0.0.0", "127.0.0.1"));
        Server { child, url }
    }

    /// Sends SIGTERM and waits for the process to end.
    fn terminate(mut self) -> Output {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, JSON body and the Retry-After header.
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

fn call(method: &str, url: &str, key: Option<&str>, body: Option<&str>) -> Answer {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(120));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_string);
    let text = response.into_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {url}: not JSON: {text}"));
    Answer { status, body, retry_after }
}

fn get(url: &str) -> Answer {
    call("GET", url, None, None)
}

fn send(method: &str, url: &str, body: &Value) -> Answer {
    call(method, url, None, Some(&body.to_string()))
}

/// The error code of a 4xx/5xx answer.
fn code(a: &Answer) -> &str {
    a.body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", a.body))
}

/// A folder with the small model pair and a database holding collection `notes`.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(dir.path());
    for args in [
        &["init", "--db", "s.redb"][..],
        &["collection", "create", "notes", "--db", "s.redb", "--embedder", "emb.pth", "--reranker", "rr.pth"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rwkvdb")).current_dir(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (dir, emb, rr)
}

fn doc(id: &str, text: &str, metadata: Value) -> Value {
    json!({ "id": id, "text": text, "metadata": metadata })
}

const TEXTS: [&str; 6] = [
    "Water boils at 100 degrees Celsius at sea level.",
    "Black holes bend light around them.",
    "The violin has four strings tuned in fifths.",
    "Photosynthesis turns light into chemical energy.",
    "Rust's borrow checker prevents data races.",
    "The Nile is the longest river in Africa.",
];

#[test]
fn every_endpoint_matches_the_library() {
    let (dir, emb, rr) = setup();
    let s = Server::start(dir.path(), "127.0.0.1:0", &[]);
    let u = &s.url;
    let c = format!("{u}/v1/collections/notes");

    let spec = get(&format!("{u}/openapi.json"));
    assert_eq!((spec.status, spec.body["openapi"].as_str()), (200, Some("3.0.3")));
    assert!(spec.body["paths"]["/v1/collections/{collection}/query"]["post"].is_object());
    let health = get(&format!("{u}/health"));
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));

    // Collections: create, refuse a taken name, exist_ok, list.
    let create = json!({ "name": "other", "embedder": emb, "reranker": rr, "preset": "compact" });
    let a = send("POST", &format!("{u}/v1/collections"), &create);
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["created"], true);
    let a = send("POST", &format!("{u}/v1/collections"), &create);
    assert_eq!((a.status, code(&a)), (409, "collection_exists"));
    let mut exist_ok = create.clone();
    exist_ok["exist_ok"] = json!(true);
    let a = send("POST", &format!("{u}/v1/collections"), &exist_ok);
    assert_eq!((a.status, &a.body["created"]), (200, &json!(false)));
    let a = send(
        "POST",
        &format!("{u}/v1/collections"),
        &json!({ "name": "x", "embedder": dir.path().join("missing.pth") }),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("missing.pth"), "{}", a.body);
    let a = send("POST", &format!("{u}/v1/collections"), &json!({ "name": "x", "embedder": emb, "preset": "bogus" }));
    assert_eq!((a.status, code(&a)), (400, "invalid_config"));
    let names: Vec<String> =
        get(&format!("{u}/v1/collections")).body.as_array().unwrap().iter().map(|c| c["name"].to_string()).collect();
    assert_eq!(names, ["\"notes\"", "\"other\""]);
    let a = call("DELETE", &format!("{u}/v1/collections/other"), None, None);
    assert_eq!(a.status, 200);
    assert_eq!(get(&format!("{u}/v1/collections/other")).status, 404);

    // Documents: insert, duplicate refused with nothing written, upsert, import skips stored ids.
    let docs: Vec<Value> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| doc(&format!("d{i}"), t, json!({ "n": i, "kind": if i % 2 == 0 { "even" } else { "odd" } })))
        .collect();
    let a = send("POST", &format!("{c}/documents"), &json!({ "documents": docs[..4] }));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["ids"], json!(["d0", "d1", "d2", "d3"]));
    let a = send("POST", &format!("{c}/documents"), &json!({ "documents": [docs[4], docs[0]] }));
    assert_eq!((a.status, code(&a)), (409, "duplicate_id"));
    assert_eq!(get(&format!("{c}/count")).body["count"], 4, "a refused batch wrote nothing");
    let odd_id = doc("a/b c?é", "An id that needs escaping in a URL.", Value::Null);
    let a = send("PUT", &format!("{c}/documents"), &json!({ "documents": [docs[4], odd_id] }));
    assert_eq!((a.status, &a.body["replaced"]), (200, &json!(0)));
    let a = send(
        "PUT",
        &format!("{c}/documents"),
        &json!({ "documents": [doc("d4", TEXTS[4], json!({"n": 4, "kind": "even"}))] }),
    );
    assert_eq!((a.status, &a.body["replaced"]), (200, &json!(1)));
    let a = send("POST", &format!("{c}/import"), &json!({ "documents": docs }));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.body["imported"].as_u64(), a.body["already_present"].as_u64()), (Some(1), Some(5)));
    assert_eq!(get(&format!("{c}/count")).body["count"], 7);

    let a = get(&format!("{c}/documents/d1"));
    assert_eq!((a.status, a.body["text"].as_str(), &a.body["metadata"]["n"]), (200, Some(TEXTS[1]), &json!(1)));
    let a = get(&format!("{c}/documents/a%2Fb%20c%3F%C3%A9"));
    assert_eq!((a.status, a.body["id"].as_str()), (200, Some("a/b c?é")));
    let a = get(&format!("{c}/documents/nope"));
    assert_eq!((a.status, code(&a)), (404, "no_such_document"));

    // Queries: every rerank mode, a filter, refused options.
    let mut answers = Vec::new();
    for mode in ["offline", "online", "none"] {
        let q = json!({ "text": "Which river is the longest?", "top_k": 3, "candidates": 7, "rerank": mode });
        let a = send("POST", &format!("{c}/query"), &q);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["hits"].as_array().unwrap().len(), 3);
        assert_eq!(a.body["hits"][0]["logit"].is_null(), mode == "none");
        answers.push(a.body);
    }
    let q = json!({ "text": "light", "top_k": 10, "filter": { "kind": "odd", "n": { "$gte": 3 } } });
    let a = send("POST", &format!("{c}/query"), &q);
    let ids: Vec<&str> = a.body["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{}", a.body);
    assert!(ids.contains(&"d3") && ids.contains(&"d5"));
    let a = send("POST", &format!("{c}/query"), &json!({ "text": "x", "top_k": 0 }));
    assert_eq!((a.status, code(&a)), (400, "invalid_input"));
    let a = send("POST", &format!("{c}/query"), &json!({ "text": "x", "filter": { "n": { "$near": 1 } } }));
    assert_eq!((a.status, code(&a)), (400, "invalid_filter"));
    let a = send("POST", &format!("{c}/query"), &json!({ "text": "x", "candidates": 1_000_000 }));
    assert_eq!((a.status, code(&a)), (413, "limit_exceeded"));
    let a = send("POST", &format!("{c}/query"), &json!({ "text": "x", "rerank": "sideways" }));
    assert_eq!((a.status, code(&a)), (400, "bad_json"));

    // Deletes: one by path, several by body (missing ids reported, not an error).
    let a = call("DELETE", &format!("{c}/documents/d0"), None, None);
    assert_eq!((a.status, &a.body["deleted"]), (200, &json!(["d0"])));
    let a = send("POST", &format!("{c}/delete"), &json!({ "ids": ["d1", "d0", "zz"] }));
    assert_eq!((&a.body["deleted"], &a.body["missing"]), (&json!(["d1"]), &json!(["d0", "zz"])));

    let stats = get(&c);
    assert_eq!((stats.status, &stats.body["documents"]), (200, &json!(5)));
    let a = send("POST", &format!("{c}/checkpoint"), &json!(null));
    assert_eq!((a.status, &a.body["saved"]), (200, &json!(true)));
    assert_eq!((get(&format!("{u}/v2/nothing")).status), 404);

    let out = s.terminate();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The library, reading the file the server closed, gives the answers the server gave.
    let db =
        Database::open(dir.path().join("s.redb"), OpenOptions { create: false, ..OpenOptions::default() }).unwrap();
    let notes = db.collection("notes").unwrap();
    assert_eq!(notes.count().unwrap(), 5);
    assert!(notes.get("d0").unwrap().is_none());
    assert!(
        notes.index_status().origin.starts_with("saved index (0 documents added and 0 deleted"),
        "{}",
        notes.index_status().origin
    );
    // Deleted documents no longer rank: compare the queries made before the deletes on ids
    // still present, by their scores.
    for (mode, answer) in [Rerank::Offline, Rerank::Online, Rerank::None].into_iter().zip(&answers) {
        let opts = QueryOptions { top_k: 7, candidates: 7, rerank: mode, ..QueryOptions::default() };
        let local = notes.query("Which river is the longest?", &opts).unwrap();
        for hit in answer["hits"].as_array().unwrap() {
            let id = hit["id"].as_str().unwrap();
            let Some(mine) = local.hits.iter().find(|h| h.id == id) else { continue };
            assert!((mine.similarity - hit["similarity"].as_f64().unwrap() as f32).abs() < 1e-5, "{id}");
            if let Some(logit) = mine.logit {
                assert!((logit - hit["logit"].as_f64().unwrap() as f32).abs() < 1e-4, "{id} {mode:?}");
            }
        }
    }
}

#[test]
fn cli_commands_talk_to_a_server() {
    let (dir, _, _) = setup();
    let d = dir.path();
    let s = Server::start(d, "127.0.0.1:0", &[]);
    let jsonl: String = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({ "id": format!("t{i}"), "text": t, "metadata": { "n": i } }).to_string() + "\n")
        .collect();
    std::fs::write(d.join("in.jsonl"), jsonl).unwrap();
    let cli = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
            .current_dir(d)
            .env("RWKVDB_SERVER", &s.url)
            .env_remove("RWKVDB_API_KEY")
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // The server has the file: a command that opens it directly is refused and told why.
    let direct = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(d)
        .args(["stats", "--db", "s.redb", "-c", "notes"])
        .env_remove("RWKVDB_SERVER")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&direct.stderr).contains("--server"),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );

    let (rc, out, _) = cli(&["import", "-c", "notes", "in.jsonl", "--quiet", "--batch-size", "4"]);
    assert_eq!(rc, Some(0), "{out}");
    assert!(out.contains("imported 6 documents"), "{out}");
    let (_, out, _) = cli(&["import", "-c", "notes", "in.jsonl", "--quiet"]);
    assert!(out.contains("imported 0 documents") && out.contains("6 already present"), "{out}");
    let (rc, out, _) = cli(&["query", "-c", "notes", "longest river", "--top-k", "2", "--json"]);
    assert_eq!(rc, Some(0));
    let r: rwkvdb::QueryResult = serde_json::from_str(&out).unwrap();
    assert_eq!(r.hits.len(), 2);
    assert!(r.hits[0].probability.is_some());
    let (_, out, _) = cli(&["get", "-c", "notes", "t2", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["text"], TEXTS[2]);
    let (_, out, _) = cli(&["delete", "-c", "notes", "t2", "t9"]);
    assert!(out.contains("deleted 1"), "{out}");
    let (_, out, _) = cli(&["stats", "-c", "notes", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["documents"], 5);
    let (_, out, _) = cli(&["collection", "list"]);
    assert!(out.starts_with("notes\t"), "{out}");
    let (_, out, _) = cli(&["checkpoint"]);
    assert!(out.contains("notes: saved the index"), "{out}");
    let (rc, _, err) = cli(&["get", "-c", "nope", "t1"]);
    assert_eq!(rc, Some(1));
    assert!(err.contains("no collection named \"nope\"") && err.contains("404"), "{err}");
    let (rc, _, err) = cli(&["stats", "-c", "notes", "--server", "http://127.0.0.1:9"]);
    assert_eq!(rc, Some(1));
    assert!(err.contains("cannot reach the server at http://127.0.0.1:9"), "{err}");
}

#[test]
fn a_key_is_required_off_loopback() {
    let (dir, _, _) = setup();
    // Every interface without a key: refused before anything listens.
    let o = Command::new(env!("CARGO_BIN_EXE_rwkvdb"))
        .current_dir(dir.path())
        .env_remove("RWKVDB_API_KEY")
        .args(["serve", "--db", "s.redb", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs an API key"), "{}", String::from_utf8_lossy(&o.stderr));

    let s = Server::start(dir.path(), "0.0.0.0:0", &["--api-key", "s3cret"]);
    for (key, status) in [(None, 401), (Some("wrong"), 401), (Some("s3cre"), 401), (Some("s3cret"), 200)] {
        for path in ["/health", "/v1/collections", "/v1/collections/notes/count"] {
            let a = call("GET", &format!("{}{path}", s.url), key, None);
            assert_eq!(a.status, status, "{path} with {key:?}");
        }
        let a = call(
            "POST",
            &format!("{}/v1/collections/notes/documents", s.url),
            key,
            Some(r#"{"documents":[{"id":"k","text":"keyed"}]}"#),
        );
        assert_eq!(a.status, status, "insert with {key:?}");
    }
    let a = call("GET", &format!("{}/v1/collections/notes/count", s.url), Some("s3cret"), None);
    assert_eq!(a.body["count"], 1, "only the request with the key wrote");
}

#[test]
fn bad_requests_change_nothing() {
    let (dir, _, _) = setup();
    let s = Server::start(dir.path(), "127.0.0.1:0", &["--max-body-bytes", "4096"]);
    let c = format!("{}/v1/collections/notes", s.url);
    let first = send("POST", &format!("{c}/documents"), &json!({ "documents": [doc("a", TEXTS[0], Value::Null)] }));
    assert_eq!(first.status, 200);
    let mut cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", format!("{c}/documents"), "{not json".into(), 400, "bad_json"),
        ("POST", format!("{c}/documents"), r#"{"documents":[{"id":"b"}]}"#.into(), 400, "bad_json"),
        ("POST", format!("{c}/documents"), r#"{"documents":[{"id":"b","text":""}]}"#.into(), 400, "invalid_input"),
        ("POST", format!("{c}/documents"), r#"{"docs":[]}"#.into(), 400, "bad_json"),
        (
            "POST",
            format!("{c}/documents"),
            format!(r#"{{"documents":[{{"id":"b","text":"{}"}}]}}"#, "x".repeat(5000)),
            413,
            "body_too_large",
        ),
        (
            "POST",
            format!("{}/v1/collections/nope/documents", s.url),
            r#"{"documents":[{"id":"b","text":"t"}]}"#.into(),
            404,
            "no_such_collection",
        ),
        ("POST", format!("{}/v1/collections/nope/query", s.url), r#"{"text":"t"}"#.into(), 404, "no_such_collection"),
        ("DELETE", format!("{}/v1/collections/nope", s.url), String::new(), 404, "no_such_collection"),
        ("POST", format!("{c}/query"), r#"{"text":"   "}"#.into(), 400, "invalid_input"),
        ("POST", format!("{c}/delete"), r#"{"ids":"a"}"#.into(), 400, "bad_json"),
    ];
    let typo = r#"{"documents":[{"id":"b","text":"t","metdata":{"x":1}}]}"#;
    cases.push(("POST", format!("{c}/documents"), typo.into(), 400, "bad_json"));
    cases.push(("POST", format!("{c}/query"), r#"{"text":"t","ef":1099511627776}"#.into(), 413, "limit_exceeded"));
    cases.push(("GET", format!("{}/v1/collections/%FF", s.url), String::new(), 400, "invalid_input"));
    cases.push(("GET", format!("{c}/documents/%FF%FE"), String::new(), 400, "invalid_input"));
    cases.push(("PATCH", format!("{}/health", s.url), String::new(), 405, "method_not_allowed"));
    cases.push(("DELETE", format!("{}/v1/collections", s.url), String::new(), 405, "method_not_allowed"));
    for (method, url, body, status, want) in cases {
        let a = call(method, &url, None, (!body.is_empty()).then_some(body.as_str()));
        assert_eq!((a.status, code(&a)), (status, want), "{method} {url} {}", &body[..body.len().min(60)]);
    }
    assert_eq!(get(&format!("{c}/count")).body["count"], 1);
    assert_eq!(get(&format!("{c}/documents/a")).body["text"], TEXTS[0]);
}

#[test]
fn concurrent_clients_and_overload() {
    let (dir, _, _) = setup();
    let s = Server::start(dir.path(), "127.0.0.1:0", &["--workers", "2", "--queue", "2"]);
    let c = format!("{}/v1/collections/notes", s.url);
    let seed: Vec<Value> = TEXTS.iter().enumerate().map(|(i, t)| doc(&format!("s{i}"), t, Value::Null)).collect();
    assert_eq!(send("POST", &format!("{c}/documents"), &json!({ "documents": seed })).status, 200);

    // Writers and readers at once, within what the queue admits; 503s are retried as told.
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (c, counts) = (c.clone(), counts.clone());
            std::thread::spawn(move || {
                for (round, query) in TEXTS.iter().take(5).enumerate() {
                    let request = if t % 2 == 0 {
                        let docs: Vec<Value> = (0..3)
                            .map(|i| {
                                doc(
                                    &format!("w{t}-{round}-{i}"),
                                    &format!("{} ({t} {round} {i})", TEXTS[i]),
                                    Value::Null,
                                )
                            })
                            .collect();
                        ("documents", json!({ "documents": docs }))
                    } else {
                        ("query", json!({ "text": query, "top_k": 3 }))
                    };
                    loop {
                        let a = send("POST", &format!("{c}/{}", request.0), &request.1);
                        if a.status == 503 {
                            assert_eq!(a.retry_after.as_deref(), Some("1"));
                            counts.lock().unwrap().1 += 1;
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        assert_eq!(a.status, 200, "{}", a.body);
                        if request.0 == "query" {
                            assert_eq!(a.body["hits"].as_array().unwrap().len(), 3);
                        }
                        counts.lock().unwrap().0 += 1;
                        break;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counts.lock().unwrap().0, 30);
    assert_eq!(get(&format!("{c}/count")).body["count"], 6 + 3 * 3 * 5);

    // Past workers + queue, requests are refused at once with 503 + Retry-After, not queued.
    let long_docs: Vec<Value> =
        (0..64).map(|i| doc(&format!("long{i}"), &TEXTS.join(" ").repeat(20), Value::Null)).collect();
    let body = json!({ "documents": long_docs }).to_string();
    let mut refused = 0;
    let start = Instant::now();
    while refused == 0 && start.elapsed() < Duration::from_secs(60) {
        let busy: Vec<_> = (0..4)
            .map(|_| {
                let (c, body) = (c.clone(), body.clone());
                std::thread::spawn(move || call("PUT", &format!("{c}/documents"), None, Some(&body)).status)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let a = get(&format!("{c}/count"));
        if a.status == 503 {
            assert_eq!((code(&a), a.retry_after.as_deref()), ("overloaded", Some("1")));
            refused += 1;
        }
        for b in busy {
            let status = b.join().unwrap();
            assert!(status == 200 || status == 503, "{status}");
        }
    }
    assert!(refused > 0, "four long batches on two workers and a queue of two never filled the queue");
    assert_eq!(get(&format!("{}/health", s.url)).status, 200, "health needs no worker");
}

#[test]
fn sigterm_mid_import_loses_no_acknowledged_batch() {
    let (dir, _, _) = setup();
    let s = Server::start(dir.path(), "127.0.0.1:0", &[]);
    let c = format!("{}/v1/collections/notes", s.url);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = {
        let (c, acked) = (c.clone(), acked.clone());
        std::thread::spawn(move || {
            for batch in 0.. {
                let ids: Vec<String> = (0..8).map(|i| format!("b{batch}-{i}")).collect();
                let docs: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| doc(id, &format!("{} batch {batch}", TEXTS[i % TEXTS.len()]), Value::Null))
                    .collect();
                let body = json!({ "documents": docs }).to_string();
                match ureq::post(&format!("{c}/documents")).send_string(&body) {
                    Ok(r) => {
                        assert_eq!(r.status(), 200);
                        acked.lock().unwrap().extend(ids);
                    }
                    // The server stopped: nothing after this is acknowledged.
                    Err(_) => return batch,
                }
            }
            unreachable!()
        })
    };
    while acked.lock().unwrap().len() < 40 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = s.terminate();
    let batches = client.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database closed"), "{stderr}");

    let acked = acked.lock().unwrap().clone();
    assert!(batches * 8 >= acked.len());
    let db =
        Database::open(dir.path().join("s.redb"), OpenOptions { create: false, ..OpenOptions::default() }).unwrap();
    let notes = db.collection("notes").unwrap();
    for id in &acked {
        assert!(notes.contains(id).unwrap(), "acknowledged {id} is missing");
    }
    // At most the one batch in flight when the signal came was written unacknowledged.
    let stored = notes.count().unwrap() as usize;
    assert!(stored >= acked.len() && stored <= acked.len() + 8, "{stored} stored, {} acked", acked.len());
    assert!(
        notes.index_status().origin.starts_with("saved index (0 documents added and 0 deleted"),
        "the index was saved at shutdown"
    );
}
