//! Writes the seed corpus of the fuzz targets into `fuzz/seeds/<target>/` (committed; rerun to
//! regenerate: `scripts/fuzz seeds`). Every file is written by rwkvdb itself (or by the
//! `safetensors` crate) and is deterministic except the database files, whose redb pages may
//! differ between runs.
//!
//! The database seeds need ONNX Runtime (creating a collection and inserting text runs the
//! synthetic model): `scripts/setup-ort` puts it in `.ort/`; `scripts/fuzz` passes
//! `ORT_DYLIB_PATH`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rwkvdb::checkpoint::synth::{synth_embedder, synth_reranker, SynthConfig};
use rwkvdb::checkpoint::{self, RawTensor, StateDict, StoredDType};
use rwkvdb::codec::{Preset, StateCodec};
use rwkvdb::model::ModelState;
use rwkvdb::{CollectionConfig, Database, NewDocument, OpenOptions};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Seed folders (`pth_crc` and `state_blob_crc` use those of `pth` and `state_blob`).
const TARGETS: [&str; 6] = ["pth", "pickle", "safetensors", "state_blob", "database_file", "jsonl"];

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("fuzz/seeds"));
    let tmp = std::env::temp_dir().join(format!("rwkvdb-seeds-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    for t in TARGETS {
        let dir = root.join(t);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
    }
    pth_seeds(&root.join("pth"), &tmp);
    pickle_seeds(&root.join("pickle"), &root.join("pth"));
    safetensors_seeds(&root.join("safetensors"));
    state_blob_seeds(&root.join("state_blob"));
    jsonl_seeds(&root.join("jsonl"));
    database_seeds(&root.join("database_file"), &tmp);
    fs::remove_dir_all(&tmp).unwrap();
    let mut total = 0;
    for t in TARGETS {
        let mut entries: Vec<_> = fs::read_dir(root.join(t)).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let n = fs::metadata(&p).unwrap().len();
            total += n;
            println!("{:>9} {}", n, p.display());
        }
    }
    println!("{total:>9} total");
}

/// A hand-made state dict of a few small tensors and an integer list: the smallest input that
/// goes through every branch of the `.pth` / safetensors readers (all dtypes, ints).
fn tiny_state_dict() -> StateDict {
    let mut sd = StateDict::default();
    sd.tensors.insert("rwkv.emb.weight".into(), RawTensor::new(vec![2, 3], vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.25]));
    sd.tensors.insert("rwkv.blocks.0.ln1.weight".into(), RawTensor::new(vec![3], vec![1.0, 1.0, 1.0]));
    sd.tensors.insert("scalar".into(), RawTensor::new(vec![], vec![3.0]));
    sd.ints.insert("reranker_layer_idx".into(), vec![0, 2]);
    sd
}

/// The smallest synthetic model shape the loaders accept: width 64 (one head), one layer,
/// low-rank widths 1, 4 embedding rows, and the channel-mix hidden width cut to 8 (the loader
/// infers it), so a whole embedder or reranker fits in ~50 KB as bf16.
fn shrink(mut sd: StateDict) -> StateDict {
    const FFN: usize = 8;
    let keys: Vec<String> = sd.tensors.keys().cloned().collect();
    for k in keys {
        if k.starts_with("head.cls_head") || k.starts_with("head.sts_head") {
            sd.tensors.remove(&k);
        } else if k.ends_with("ffn.key.weight") {
            let t = &sd.tensors[&k];
            let c = t.shape[1];
            let data = t.data[..FFN * c].to_vec();
            sd.tensors.insert(k, RawTensor::new(vec![FFN, c], data));
        } else if k.ends_with("ffn.value.weight") {
            let t = &sd.tensors[&k];
            let (c, h) = (t.shape[0], t.shape[1]);
            let data = (0..c).flat_map(|r| t.data[r * h..r * h + FFN].to_vec()).collect();
            sd.tensors.insert(k, RawTensor::new(vec![c, FFN], data));
        }
    }
    sd
}

fn small_synth() -> SynthConfig {
    SynthConfig { layers: 1, width: 64, reranker_layers: vec![0], seed: 7, lora: Some((1, 1, 1, 1)), vocab: 4 }
}

fn check_pair(sd: &StateDict, embedder: bool) {
    if embedder {
        rwkvdb::model::EmbedderWeights::from_state_dict(sd).expect("seed embedder loads");
    } else {
        rwkvdb::model::RerankerWeights::from_state_dict(sd).expect("seed reranker loads");
    }
}

fn pth_seeds(dir: &Path, tmp: &Path) {
    let write = |name: &str, sd: &StateDict, dtype: StoredDType| {
        let p = tmp.join(name);
        checkpoint::pth::write(&p, sd, dtype).unwrap();
        let bytes = fs::read(&p).unwrap();
        fs::write(dir.join(name), &bytes).unwrap();
        bytes
    };
    let tiny = tiny_state_dict();
    write("tiny-f32.pth", &tiny, StoredDType::F32);
    write("tiny-f16.pth", &tiny, StoredDType::F16);
    let cfg = small_synth();
    let emb = shrink(synth_embedder(&cfg));
    check_pair(&emb, true);
    let bytes = write("embedder-w64-l1-bf16.pth", &emb, StoredDType::BF16);
    fs::write(dir.join("embedder-truncated.pth"), &bytes[..bytes.len() / 2]).unwrap();
    let rr = shrink(synth_reranker(&cfg));
    check_pair(&rr, false);
    write("reranker-w64-l1-bf16.pth", &rr, StoredDType::BF16);
}

/// The `data.pkl` of the `.pth` seeds, plus two pickles written by CPython's `pickle.dumps`
/// (protocols 2 and 4) of `OrderedDict(a=(1, -2, 2**40, -2**62, 3.5, None, True, False),
/// b=[b"xy", "é", {"k": [1, 2]}, ()], reranker_layer_idx=[0, 2])`: opcodes torch does not
/// write (LONG1, BINFLOAT, FRAME, MEMOIZE, SHORT_BINUNICODE, `_codecs.encode` bytes, ...).
fn pickle_seeds(dir: &Path, pth_dir: &Path) {
    for name in ["tiny-f32", "reranker-w64-l1-bf16"] {
        let file = fs::File::open(pth_dir.join(format!("{name}.pth"))).unwrap();
        let mut zip = zip::ZipArchive::new(file).unwrap();
        let mut pkl = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name("archive/data.pkl").unwrap(), &mut pkl).unwrap();
        assert!(checkpoint::pickle::load(&pkl).is_ok());
        fs::write(dir.join(format!("{name}.pkl")), pkl).unwrap();
    }
    const PROTO2: &str = "800263636f6c6c656374696f6e730a4f726465726564446963740a710029527101285801000000617102284b014afeffffff8a060000000000018a0800000000000000c047400c0000000000004e888974710358010000006271045d710528635f636f646563730a656e636f64650a710658020000007879710758060000006c6174696e31710886710952710a5802000000c3a9710b7d710c58010000006b710d5d710e284b014b02657329655812000000726572616e6b65725f6c617965725f696478710f5d7110284b004b0265752e";
    const PROTO4: &str = "8004958f000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c016194284b014afeffffff8a060000000000018a0800000000000000c047400c0000000000004e888974948c0162945d942843027879948c02c3a9947d948c016b945d94284b014b02657329658c12726572616e6b65725f6c617965725f696478945d94284b004b0265752e";
    for (name, hex) in [("cpython-proto2.pkl", PROTO2), ("cpython-proto4.pkl", PROTO4)] {
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        fs::write(dir.join(name), bytes).unwrap();
    }
}

fn safetensors_bytes(sd: &StateDict, dtype: Dtype) -> Vec<u8> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    for (k, t) in &sd.tensors {
        let data: Vec<u8> = match dtype {
            Dtype::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => t.data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            Dtype::BF16 => t.data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
            _ => unreachable!(),
        };
        buffers.push((k.clone(), t.shape.clone(), data, dtype));
    }
    for (k, ints) in &sd.ints {
        buffers.push((k.clone(), vec![ints.len()], ints.iter().flat_map(|v| v.to_le_bytes()).collect(), Dtype::I64));
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(k, shape, data, dt)| (k.clone(), TensorView::new(*dt, shape.clone(), data).unwrap()))
        .collect();
    let meta: Option<HashMap<String, String>> = Some([("format".to_string(), "pt".to_string())].into());
    safetensors::tensor::serialize(views, &meta).unwrap()
}

fn safetensors_seeds(dir: &Path) {
    let tiny = tiny_state_dict();
    for (name, dt) in [("tiny-f32", Dtype::F32), ("tiny-f16", Dtype::F16), ("tiny-bf16", Dtype::BF16)] {
        let bytes = safetensors_bytes(&tiny, dt);
        assert!(checkpoint::safetensors::read(&bytes).is_ok());
        fs::write(dir.join(format!("{name}.safetensors")), bytes).unwrap();
    }
    // An I32 tensor too (written by hand: u64 LE header length, JSON header, data).
    let header = br#"{"idx":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0]);
    assert!(checkpoint::safetensors::read(&b).is_ok());
    fs::write(dir.join("ints-i32.safetensors"), b).unwrap();
    let rr = shrink(synth_reranker(&small_synth()));
    let bytes = safetensors_bytes(&rr, Dtype::F16);
    check_pair(&checkpoint::safetensors::read(&bytes).unwrap(), false);
    fs::write(dir.join("reranker-w64-l1-f16.safetensors"), bytes).unwrap();
}

/// A state of the fuzz target's shape (width 128, 4 layers) with varied but compressible values.
fn pattern_state(seed: u32) -> ModelState {
    let (layers, width) = (4, 128);
    let mut s = ModelState::zeros(layers, width);
    let v = |i: usize, k: u32| (((i as u32).wrapping_mul(2654435761).wrapping_add(k) >> 27) as f32 - 16.0) / 8.0;
    for (i, x) in s.att_shift.iter_mut().enumerate() {
        *x = v(i, seed);
    }
    for (i, x) in s.ffn_shift.iter_mut().enumerate() {
        *x = v(i, seed + 1);
    }
    for (i, x) in s.wkv.iter_mut().enumerate() {
        *x = v(i % 512, seed + 2) * 3.0;
    }
    s
}

fn state_blob_seeds(dir: &Path) {
    for preset in Preset::ALL {
        let codec = StateCodec::new(preset.config(), 128, 4, &[1, 3]).unwrap();
        let blob = codec.encode(&pattern_state(1)).unwrap();
        assert!(codec.decode(&blob).is_ok());
        fs::write(dir.join(format!("{}.blob", preset.name())), &blob).unwrap();
        if preset == Preset::Balanced {
            let zeros = codec.encode(&ModelState::zeros(4, 128)).unwrap();
            fs::write(dir.join("balanced-zeros.blob"), zeros).unwrap();
        }
    }
}

fn jsonl_seeds(dir: &Path) {
    fs::write(
        dir.join("valid.jsonl"),
        concat!(
            r#"{"id":"a","text":"Water boils at 100 °C.","metadata":{"topic":"physics","n":1}}"#,
            "\n",
            r#"{"text":"no id here"}"#,
            "\n\n",
            r#"{"id":"b","text":"nested","metadata":{"tags":["x","y"],"ok":true,"v":null,"f":1.5e3}}"#,
            "\n"
        ),
    )
    .unwrap();
    let mut mixed = Vec::new();
    mixed.extend_from_slice(b"{\"id\":\"c\",\"text\":\"fine\"}\n");
    mixed.extend_from_slice(b"{\"id\":\"d\",\"text\":\"bad \xff\xfe utf8\"}\n");
    mixed.extend_from_slice(b"{\"id\":\"e\",\"text\":\"unterminated\n");
    mixed.extend_from_slice(b"   \t\r\n");
    mixed.extend_from_slice(b"[1,2,3]\n");
    mixed.extend_from_slice(b"{\"id\":5,\"text\":\"wrong id type\"}\n");
    mixed.extend_from_slice(b"{\"id\":\"f\",\"text\":\"\\ud800 lone surrogate \\u00e9\"}\r\n");
    mixed.extend_from_slice(b"{\"id\":\"g\",\"text\":\"no trailing newline\"}");
    fs::write(dir.join("mixed-invalid.jsonl"), mixed).unwrap();
}

fn database_seeds(dir: &Path, tmp: &Path) {
    // Only `Database::open`: the metadata tables and nothing else.
    let empty = tmp.join("empty.redb");
    drop(Database::open(&empty, OpenOptions::default()).unwrap());
    Database::compact_file(&empty).unwrap();
    fs::copy(&empty, dir.join("empty.redb")).unwrap();

    // Two collections of a small synthetic model: one with a reranker (state blobs kept), one
    // without; a few documents each, one deleted.
    let cfg = SynthConfig { layers: 2, width: 64, reranker_layers: vec![1], seed: 5, ..SynthConfig::default() };
    let (emb, rr) = (tmp.join("emb.pth"), tmp.join("rr.pth"));
    checkpoint::pth::write(&emb, &synth_embedder(&cfg), StoredDType::F32).unwrap();
    checkpoint::pth::write(&rr, &synth_reranker(&cfg), StoredDType::F32).unwrap();
    let path = tmp.join("docs.redb");
    {
        let db = Database::open(&path, OpenOptions::default()).unwrap();
        let docs = |prefix: &str| {
            (1..=3)
                .map(|i| NewDocument {
                    id: Some(format!("doc-{i}")),
                    text: format!("{prefix} document number {i}: water boils at 100 degrees."),
                    metadata: Some(rwkvdb::serde_json::json!({"i": i, "tag": prefix})),
                })
                .collect::<Vec<_>>()
        };
        let with = db.create_collection("states", CollectionConfig::new(&emb, Some(rr.clone()))).unwrap();
        with.insert(docs("stateful")).unwrap();
        with.delete(&["doc-3"]).unwrap();
        let without = db.create_collection("plain", CollectionConfig::new(&emb, None)).unwrap();
        without.insert(docs("plain")).unwrap();
    }
    Database::compact_file(&path).unwrap();
    fs::copy(&path, dir.join("two-collections.redb")).unwrap();
}
