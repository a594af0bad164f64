//! Hostile inputs, property-tested on stable (the cargo-fuzz equivalent; see
//! docs/reliability.md): JSONL import and opening arbitrary or damaged files as a database.
//! Nothing may panic; everything bad becomes a typed error or a reported problem.

mod common;

use proptest::prelude::*;
use rwkvdb::import::read_jsonl;
use rwkvdb::{CollectionConfig, Database, Error, NewDocument, OpenOptions};

fn jsonl(bytes: &[u8]) -> Vec<Result<NewDocument, rwkvdb::import::ImportProblem>> {
    read_jsonl(bytes, "in.jsonl", "in").collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes: one item per non-blank line, problems carry the right line number.
    #[test]
    fn jsonl_never_panics_and_accounts_for_every_line(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let items = jsonl(&bytes);
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let non_blank = lines.iter().filter(|l| std::str::from_utf8(l).map_or(true, |t| !t.trim().is_empty())).count();
        prop_assert_eq!(items.len(), non_blank);
        for item in &items {
            if let Err(p) = item {
                let n: usize = p.location.rsplit(':').next().unwrap().parse().unwrap();
                prop_assert!(n >= 1 && n <= lines.len());
            }
        }
    }

    /// Valid documents survive any mix with garbage lines, in order, with their ids.
    #[test]
    fn jsonl_valid_lines_round_trip(
        docs in proptest::collection::vec(("[a-z0-9]{0,8}", "\\PC{1,40}", any::<bool>()), 1..20),
        garbage in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..30), 0..5),
    ) {
        let mut text = Vec::new();
        let mut expected = Vec::new();
        let mut line = 0;
        for (i, (id, body, with_id)) in docs.iter().enumerate() {
            let d = NewDocument {
                id: with_id.then(|| id.clone()),
                text: body.clone(),
                metadata: Some(serde_json::json!({"i": i})),
            };
            text.extend(serde_json::to_vec(&d).unwrap());
            text.push(b'\n');
            line += 1;
            expected.push((d.id.clone().unwrap_or_else(|| format!("in:{line}")), body.clone()));
            if let Some(g) = garbage.get(i) {
                // A garbage line that cannot be a JSON object.
                text.push(b'#');
                text.extend(g.iter().filter(|b| **b != b'\n'));
                text.push(b'\n');
                line += 1;
            }
        }
        let got: Vec<(String, String)> =
            jsonl(&text).into_iter().filter_map(Result::ok).map(|d| (d.id.unwrap(), d.text)).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn jsonl_reports_bad_lines_with_their_numbers() {
    let input =
        b"{\"id\":\"a\",\"text\":\"one\"}\n\n{oops\n\xff\xfe\n{\"text\":\"no id\"}\n{\"id\":3,\"text\":\"x\"}\n";
    let items = jsonl(input);
    assert_eq!(items.len(), 5);
    assert_eq!(items[0].as_ref().unwrap().id.as_deref(), Some("a"));
    let problems: Vec<String> = items.iter().filter_map(|i| i.as_ref().err()).map(|p| p.location.clone()).collect();
    assert_eq!(problems, ["in.jsonl:3", "in.jsonl:4", "in.jsonl:6"]);
    assert_eq!(items[3].as_ref().unwrap().id.as_deref(), Some("in:5"));
}

/// What became of a damaged file.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Refused at open with a typed error.
    Refused,
    /// Opened; damage (if any) was reported by errors or `check`.
    Opened { damage_reported: bool },
}

/// Opening must give a database or a typed error, and a database must answer or refuse
/// through errors.
fn open_and_use(path: &std::path::Path) -> Outcome {
    let db = match Database::open(path, OpenOptions { create: false, ..OpenOptions::default() }) {
        Ok(db) => db,
        Err(Error::Store(_)) => return Outcome::Refused,
        Err(e) => panic!("untyped open failure: {e:?}"),
    };
    let Ok(list) = db.list_collections() else { return Outcome::Opened { damage_reported: true } };
    let mut damage_reported = false;
    for rec in list {
        match db.collection(&rec.name) {
            Ok(c) => {
                damage_reported |= c.check().map_or(true, |r| !r.problems.is_empty());
                damage_reported |= c.count().is_err();
                let q = c.query("anything", &rwkvdb::QueryOptions::default());
                damage_reported |= q.map_or(true, |r| !r.skipped.is_empty());
            }
            Err(_) => damage_reported = true,
        }
    }
    Outcome::Opened { damage_reported }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random bytes, with and without redb's magic in front.
    #[test]
    fn arbitrary_files_open_as_typed_errors(
        bytes in proptest::collection::vec(any::<u8>(), 0..8192),
        redb_magic in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let mut content = if redb_magic { b"redb\x1A\x0A\xA9\x0D\x0A".to_vec() } else { Vec::new() };
        content.extend(bytes);
        std::fs::write(&path, content).unwrap();
        open_and_use(&path);
    }
}

/// A real database with one collection, then damaged: flipped bytes anywhere, or truncation.
#[test]
fn damaged_databases_open_as_typed_errors_or_report_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(dir.path());
    let good = dir.path().join("good.redb");
    {
        let db = Database::open(&good, OpenOptions::default()).unwrap();
        let c = db.create_collection("docs", CollectionConfig::new(&emb, Some(rr))).unwrap();
        let docs = (0..30)
            .map(|i| NewDocument { id: Some(format!("d{i}")), text: format!("text number {i}"), metadata: None })
            .collect();
        c.insert(docs).unwrap();
    }
    let original = std::fs::read(&good).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    assert_eq!(open_and_use(&good), Outcome::Opened { damage_reported: false });
    let path = dir.path().join("damaged.redb");
    let mut outcomes = Vec::new();
    for case in 0..48 {
        let mut bytes = original.clone();
        if case % 4 == 3 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        } else {
            for _ in 0..=(case % 8) {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] ^= 1 << (next() % 8);
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        outcomes.push(open_and_use(&path));
    }
    let refused = outcomes.iter().filter(|o| **o == Outcome::Refused).count();
    let reported = outcomes.iter().filter(|o| **o == Outcome::Opened { damage_reported: true }).count();
    eprintln!("48 damaged files: {refused} refused at open, {reported} opened with damage reported, rest unaffected");
    // Flips land mostly in free or unused pages; truncations must be refused.
    assert!(refused >= 12, "truncated files were opened: {outcomes:?}");
}

/// Damaged database files found by the fuzzer (`fuzz/`, docs/reliability.md "Fuzzing") on which
/// redb itself panics, opened from disk as a user would: errors, never a crash.
/// (`tests/fuzz_regressions.rs` feeds them to the in-memory fuzz entry point.)
#[test]
fn fuzzer_found_damaged_databases_give_errors_not_panics() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz"));
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("database_file-")))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let tmp = tempfile::tempdir().unwrap();
    for file in &files {
        let copy = tmp.path().join(file.file_name().unwrap());
        std::fs::copy(file, &copy).unwrap();
        let on_disk = std::panic::catch_unwind(|| open_and_use(&copy));
        assert!(on_disk.is_ok(), "{}: panicked from disk", file.display());
    }
}
