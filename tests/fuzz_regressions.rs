//! Inputs found by the AFL++ fuzz targets (`scripts/fuzz`; docs/reliability.md, "Fuzzing"),
//! kept as `tests/data/fuzz/<target>-<name>` and fed to the same entry points
//! (`rwkvdb::fuzzing::<target>`): none may panic or abort. The three
//! `database_file-redb-*double-panic`/`poisoned-lock` inputs aborted the process (a redb panic
//! inside the format upgrade's write transaction, then a second one in a destructor) until the
//! store ran redb's integrity check before upgrading. (`tests/hostile.rs` also opens every
//! `tests/data/fuzz/database_file-*` as a file on disk.)

use std::path::Path;

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

/// `(file name, target, bytes)` of every saved input in `tests/data/fuzz/<sub>`, in name order.
fn inputs(sub: &str) -> Vec<(String, String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz").join(sub);
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

#[test]
fn fixed_fuzz_inputs_do_not_panic() {
    for (name, target, data) in inputs("") {
        eprintln!("{name}");
        run(&target, &data);
    }
}
