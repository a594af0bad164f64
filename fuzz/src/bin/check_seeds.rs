//! Runs every seed once through its fuzz entry point (outside AFL) and prints how deep the
//! interesting seeds get: that the model seeds load as weights, that the state blobs decode,
//! and that the database seeds reach collection opening (the same steps as
//! `rwkvdb::fuzzing::database_file`, with prints). Usage: `check_seeds [fuzz/seeds]`.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use redb::StorageBackend;
use rwkvdb::checkpoint;
use rwkvdb::codec::{Preset, StateCodec};
use rwkvdb::model::{EmbedderWeights, RerankerWeights};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("fuzz/seeds"));
    for p in files(&root.join("pth")) {
        let data = fs::read(&p).unwrap();
        rwkvdb::fuzzing::pth(&data);
        let sd = checkpoint::pth::read(Cursor::new(&data));
        report(&p, sd);
    }
    for p in files(&root.join("pickle")) {
        let data = fs::read(&p).unwrap();
        match checkpoint::pickle::load(&data) {
            Ok(v) => println!("{}: loads ({} bytes of Debug)", p.display(), format!("{v:?}").len()),
            Err(e) => println!("{}: error ({e})", p.display()),
        }
    }
    for p in files(&root.join("safetensors")) {
        let data = fs::read(&p).unwrap();
        rwkvdb::fuzzing::safetensors(&data);
        report(&p, checkpoint::safetensors::read(&data));
    }
    for p in files(&root.join("state_blob")) {
        let data = fs::read(&p).unwrap();
        rwkvdb::fuzzing::state_blob(&data);
        let ok: Vec<&str> = Preset::ALL
            .iter()
            .filter(|pr| StateCodec::new(pr.config(), 128, 4, &[1, 3]).unwrap().decode(&data).is_ok())
            .map(|pr| pr.name())
            .collect();
        println!("{}: decodes with {ok:?}", p.display());
    }
    for p in files(&root.join("jsonl")) {
        let data = fs::read(&p).unwrap();
        rwkvdb::fuzzing::jsonl(&data);
        let items: Vec<_> = rwkvdb::import::read_jsonl(Cursor::new(&data), "seed", "seed").collect();
        let ok = items.iter().filter(|i| i.is_ok()).count();
        println!("{}: {} items, {ok} documents", p.display(), items.len());
    }
    for p in files(&root.join("database_file")) {
        let data = fs::read(&p).unwrap();
        rwkvdb::fuzzing::database_file(&data);
        database(&p, &data);
    }
}

fn report(p: &Path, sd: Result<checkpoint::StateDict, checkpoint::CheckpointError>) {
    match sd {
        Ok(sd) => {
            let e = EmbedderWeights::from_state_dict(&sd).map(|w| format!("{:?}", w.config));
            let r = RerankerWeights::from_state_dict(&sd).map(|w| format!("width {}, layers {:?}", w.width, w.layer_idx));
            println!(
                "{}: {} tensors, ints {:?}; embedder: {}; reranker: {}",
                p.display(),
                sd.tensors.len(),
                sd.ints,
                e.unwrap_or_else(|e| format!("error ({e})")),
                r.unwrap_or_else(|e| format!("error ({e})")),
            );
        }
        Err(e) => println!("{}: read error ({e})", p.display()),
    }
}

/// The steps of `rwkvdb::fuzzing::database_file`, printing what each one reaches.
fn database(p: &Path, data: &[u8]) {
    let backend = redb::backends::InMemoryBackend::new();
    backend.set_len(data.len() as u64).unwrap();
    backend.write(0, data).unwrap();
    let opts = rwkvdb::OpenOptions { cache_bytes: 1 << 20, ..rwkvdb::OpenOptions::default() };
    let db = match rwkvdb::Database::open_with_backend("fuzz.redb", backend, opts) {
        Ok(db) => db,
        Err(e) => return println!("{}: open error ({e})", p.display()),
    };
    let records = db.list_collections().unwrap();
    println!("{}: opened, {} collections", p.display(), records.len());
    for record in records {
        match db.collection(&record.name) {
            Ok(c) => {
                let check = c.check().unwrap();
                println!(
                    "  collection {:?} opened: count {}, damaged {:?}, get(doc-1) found: {}",
                    record.name,
                    c.count().unwrap(),
                    check.damaged_ids,
                    matches!(c.get("doc-1"), Ok(Some(_))),
                );
            }
            Err(e) => println!("  collection {:?}: open error ({e})", record.name),
        }
    }
}
