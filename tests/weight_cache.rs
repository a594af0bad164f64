//! The prepared-weights cache: built once, mapped afterwards, and never used when damaged,
//! truncated, stale or foreign (it is rebuilt instead). Real checkpoints, real ONNX Runtime.

mod common;

use std::path::Path;

use rwkvdb::model::weight_cache::{self, CacheDir, LoadedFrom};
use rwkvdb::model::{Precision, Runtime, RuntimeOptions};
use rwkvdb::tokenizer::Tokenizer;

fn embedding(dir: &CacheDir, emb: &Path, rr: &Path) -> (Vec<f32>, f32, LoadedFrom) {
    let (pm, from) = weight_cache::load(dir, emb, Some(rr), Precision::F32).unwrap();
    let rt = Runtime::from_prepared(std::sync::Arc::new(pm), &RuntimeOptions::default()).unwrap();
    let tok = Tokenizer::world();
    let e = rt.embed(&[&tok.encode_with_eos("water boils at 100 degrees")]).unwrap().remove(0);
    let logit = rt.online_scores(&[&tok.encode_with_eos("a document about water\nQuery: boiling")]).unwrap()[0];
    (e, logit, from)
}

fn only_cache_file(dir: &Path) -> std::path::PathBuf {
    let files = weight_cache::entries(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].path.clone()
}

#[test]
fn cache_is_built_once_then_mapped_with_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    let cache = CacheDir::At(tmp.path().join("cache"));
    let (e1, l1, from1) = embedding(&cache, &emb, &rr);
    assert!(matches!(from1, LoadedFrom::Built(Some(_))), "{from1:?}");
    let (e2, l2, from2) = embedding(&cache, &emb, &rr);
    assert!(matches!(from2, LoadedFrom::Cache(_)), "{from2:?}");
    assert_eq!(e1, e2);
    assert_eq!(l1.to_bits(), l2.to_bits());
    // Without a cache the same numbers come from memory.
    let (e3, l3, from3) = embedding(&CacheDir::Off, &emb, &rr);
    assert_eq!(from3, LoadedFrom::Built(None));
    assert_eq!((e1, l1.to_bits()), (e3, l3.to_bits()));
}

#[test]
fn damaged_truncated_or_foreign_cache_files_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    let dir = tmp.path().join("cache");
    let cache = CacheDir::At(dir.clone());
    let (good_e, good_l, _) = embedding(&cache, &emb, &rr);
    let file = only_cache_file(&dir);
    let pristine = std::fs::read(&file).unwrap();

    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("one flipped bit in the weights", {
            let mut b = pristine.clone();
            let i = b.len() / 2;
            b[i] ^= 0x10;
            b
        }),
        ("truncated (a partial write)", pristine[..pristine.len() - 4096].to_vec()),
        ("foreign bytes", b"not a prepared-weights file at all".to_vec()),
        ("empty", Vec::new()),
        ("newer format version", {
            let mut b = pristine.clone();
            b[8] = b[8].wrapping_add(1);
            b
        }),
    ];
    for (what, bytes) in damages {
        std::fs::write(&file, &bytes).unwrap();
        let (e, l, from) = embedding(&cache, &emb, &rr);
        assert!(matches!(from, LoadedFrom::Built(Some(_))), "{what}: {from:?}");
        assert_eq!((e.clone(), l.to_bits()), (good_e.clone(), good_l.to_bits()), "{what}");
        assert_eq!(std::fs::read(&file).unwrap(), pristine, "{what}: the rebuilt file is the original");
    }
}

#[test]
fn a_changed_checkpoint_never_uses_the_old_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    let dir = tmp.path().join("cache");
    let cache = CacheDir::At(dir.clone());
    let (old_e, _, _) = embedding(&cache, &emb, &rr);
    // Same path, other weights: the key hashes the file's bytes, so this is a cache miss.
    let other = rwkvdb::checkpoint::synth::SynthConfig { seed: 77, ..common::small_config() };
    rwkvdb::checkpoint::pth::write(
        &emb,
        &rwkvdb::checkpoint::synth::synth_embedder(&other),
        rwkvdb::checkpoint::StoredDType::F32,
    )
    .unwrap();
    let (new_e, _, from) = embedding(&cache, &emb, &rr);
    assert!(matches!(from, LoadedFrom::Built(Some(_))), "{from:?}");
    assert_ne!(old_e, new_e);
    // Each precision is its own entry.
    let (_, from) = weight_cache::load(&cache, &emb, Some(&rr), Precision::Int8).unwrap();
    assert!(matches!(from, LoadedFrom::Built(Some(_))));
    assert_eq!(weight_cache::entries(&dir).unwrap().len(), 3);
}

#[test]
fn an_unwritable_cache_directory_only_costs_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (emb, rr) = common::write_small_pair(tmp.path());
    // A file where the directory should be: nothing can be cached, loading still works.
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let (_, _, from) = embedding(&CacheDir::At(blocker.join("cache")), &emb, &rr);
    assert_eq!(from, LoadedFrom::Built(None));
}
