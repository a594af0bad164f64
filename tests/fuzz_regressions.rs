//! Inputs found by the AFL++ fuzz targets (`scripts/fuzz`; docs/reliability.md, "Fuzzing"),
//! kept as `tests/data/fuzz/<target>-<name>` and fed to the same entry points
//! (`rwkvdb::fuzzing::<target>`). Inputs of a fixed bug must not panic. Inputs that still panic
//! in a dependency (`OPEN`: not fixed in rwkvdb yet) are checked by an ignored test, which
//! becomes their regression test once they are handled.

use std::path::Path;

/// Name prefixes of inputs whose panic is not fixed yet (none now: the `database_file-redb-*`
/// inputs, on which redb 4.6 panics, give `StoreError::Corrupt` since `src/store/` runs redb
/// behind `catch_unwind`).
const OPEN: &[&str] = &[];

fn run(target: &str, data: &[u8]) {
    match target {
        "pth" => rwkvdb::fuzzing::pth(data),
        "safetensors" => rwkvdb::fuzzing::safetensors(data),
        "state_blob" => rwkvdb::fuzzing::state_blob(data),
        "database_file" => rwkvdb::fuzzing::database_file(data),
        "jsonl" => rwkvdb::fuzzing::jsonl(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// `(file name, target, bytes)` of every saved input, in name order.
fn inputs() -> Vec<(String, String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let target = ["database_file", "state_blob", "safetensors", "pth", "jsonl"]
                .into_iter()
                .find(|t| name.starts_with(&format!("{t}-")))
                .unwrap_or_else(|| panic!("{name}: name does not start with a fuzz target"))
                .to_string();
            (name, target, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn is_open(name: &str) -> bool {
    OPEN.iter().any(|p| name.starts_with(p))
}

#[test]
fn fixed_fuzz_inputs_do_not_panic() {
    for (name, target, data) in inputs().into_iter().filter(|(n, ..)| !is_open(n)) {
        eprintln!("{name}");
        run(&target, &data);
    }
}

#[test]
#[ignore = "lists the inputs still open (none at the moment)"]
fn open_fuzz_inputs_do_not_panic() {
    let mut panicked = Vec::new();
    for (name, target, data) in inputs().into_iter().filter(|(n, ..)| is_open(n)) {
        if std::panic::catch_unwind(|| run(&target, &data)).is_err() {
            panicked.push(name);
        }
    }
    assert!(panicked.is_empty(), "still panicking: {panicked:?}");
}
