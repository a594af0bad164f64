//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod reference;

use rwkvdb::checkpoint::synth::{self, synth_embedder, synth_reranker, SynthConfig};
use rwkvdb::checkpoint::{StateDict, StoredDType};
use rwkvdb::model::{EmbedderWeights, RerankerWeights, Runtime, RuntimeOptions};

/// A small synthetic pair: 4 layers, width 128, reranker reading layers 1 and 2.
pub fn small_config() -> SynthConfig {
    SynthConfig { layers: 4, width: 128, reranker_layers: vec![1, 2], seed: 3, ..SynthConfig::default() }
}

/// State dicts of the small pair.
pub fn small_pair() -> (StateDict, StateDict) {
    let cfg = small_config();
    (synth_embedder(&cfg), synth_reranker(&cfg))
}

/// A runtime over the small pair.
pub fn small_runtime(opts: &RuntimeOptions) -> Runtime {
    let (e, r) = small_pair();
    Runtime::new(
        EmbedderWeights::from_state_dict(&e).unwrap(),
        Some(RerankerWeights::from_state_dict(&r).unwrap()),
        opts,
    )
    .unwrap()
}

/// Writes the small pair as `.pth` files into `dir` and returns their paths.
pub fn write_small_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (pe, pr) = (dir.join("emb.pth"), dir.join("rr.pth"));
    synth::write_pair(&small_config(), &pe, &pr, StoredDType::F32).unwrap();
    (pe, pr)
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `v / |v|`.
pub fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// The table of collection `id`'s saved ANN index.
pub fn saved_index_table(id: u64) -> String {
    format!("c{id}_index")
}

/// Deletes collection `id`'s saved ANN index from a closed database file (as in files written
/// before indexes were saved).
pub fn remove_saved_index(path: &std::path::Path, id: u64) {
    let db = redb::Database::open(path).unwrap();
    let name = saved_index_table(id);
    let txn = db.begin_write().unwrap();
    assert!(txn.delete_table(redb::TableDefinition::<(u32, u32), &[u8]>::new(&name)).unwrap(), "no saved index");
    txn.commit().unwrap();
}
