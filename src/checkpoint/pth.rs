//! `PyTorch` `.pth` files: a zip archive with `<dir>/data.pkl` (the pickled state dict) and one
//! entry `<dir>/data/<key>` per storage.

use std::io::{Read, Seek, Write};
use std::path::Path;

use half::{bf16, f16};

use super::pickle::{self, StorageDType, TensorRef, Value};
use super::{CheckpointError, RawTensor, StateDict, StoredDType};

/// Largest tensor accepted (elements); far above any `EmbeddingRWKV` size, it only stops absurd headers.
const MAX_ELEMENTS: u64 = 1 << 36;

/// Reads a `.pth` archive from any seekable reader.
pub fn read<R: Read + Seek>(reader: R) -> Result<StateDict, CheckpointError> {
    // A .pth is a zip archive whose directory sits at the end: a cut-off download fails here.
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| CheckpointError::Zip(format!("{e} (the file looks truncated: copy or download it again)")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let pkl = names
        .iter()
        .filter(|n| n.ends_with("data.pkl"))
        .min_by_key(|n| n.len())
        .ok_or_else(|| CheckpointError::Zip("no data.pkl in the archive".into()))?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Some(bo) = names.iter().find(|n| **n == format!("{prefix}byteorder")) {
        let order = read_entry(&mut zip, bo, 16)?;
        if order.trim_ascii() != b"little" {
            return Err(CheckpointError::Zip("big-endian checkpoints are not supported".into()));
        }
    }
    let pkl_bytes = read_entry(&mut zip, &pkl, 1 << 30)?;
    let top = pickle::load(&pkl_bytes)?;
    let entries = state_dict_entries(top)?;

    let mut sd = StateDict::default();
    let mut dtype_counts = [0usize; 3];
    // Storages may be shared by several tensors: read each once.
    let mut cache: std::collections::HashMap<String, std::rc::Rc<Vec<u8>>> = Default::default();
    for (key, value) in entries {
        match value {
            Value::Tensor(t) => {
                let bytes = if let Some(b) = cache.get(&t.key) {
                    b.clone()
                } else {
                    let want = t.storage_len.checked_mul(t.dtype.size() as u64).filter(|&n| n <= MAX_ELEMENTS * 8);
                    let want = want.ok_or_else(|| CheckpointError::TooLarge { key: key.clone() })?;
                    let b = std::rc::Rc::new(read_entry(&mut zip, &format!("{prefix}data/{}", t.key), want)?);
                    if (b.len() as u64) < want {
                        return Err(CheckpointError::TensorOutOfBounds { key: key.clone() });
                    }
                    cache.insert(t.key.clone(), b.clone());
                    b
                };
                let (shape, values) = gather(&key, &t, &bytes)?;
                match t.dtype {
                    StorageDType::F32 | StorageDType::F16 | StorageDType::BF16 | StorageDType::F64 => {
                        match t.dtype {
                            StorageDType::F32 => dtype_counts[0] += 1,
                            StorageDType::F16 => dtype_counts[1] += 1,
                            StorageDType::BF16 => dtype_counts[2] += 1,
                            _ => {}
                        }
                        sd.tensors.insert(key, RawTensor::new(shape, values.into_floats()));
                    }
                    _ => {
                        sd.ints.insert(key, values.into_ints());
                    }
                }
            }
            Value::List(items) | Value::Tuple(items) if items.iter().all(|v| matches!(v, Value::Int(_))) => {
                let ints = items.iter().filter_map(|v| if let Value::Int(i) = v { Some(*i) } else { None }).collect();
                sd.ints.insert(key, ints);
            }
            Value::Int(i) => {
                sd.ints.insert(key, vec![i]);
            }
            // Other values (strings, floats, nested config) are not weights: skipped.
            _ => {}
        }
    }
    let most = dtype_counts.iter().enumerate().max_by_key(|(_, c)| **c).filter(|(_, c)| **c > 0).map(|(i, _)| i);
    sd.stored_dtype = most.map(|i| [StoredDType::F32, StoredDType::F16, StoredDType::BF16][i]);
    Ok(sd)
}

/// The `(key, value)` pairs of the state dict: the top-level dict, or the single dict nested in it
/// (`{"state_dict": {...}}` style files). Keys lose common wrapper prefixes (`module.`, `_orig_mod.`).
fn state_dict_entries(top: Value) -> Result<Vec<(String, Value)>, CheckpointError> {
    let Value::Dict(pairs) = top else { return Err(CheckpointError::NotACheckpoint) };
    let has_tensors = pairs.iter().any(|(_, v)| matches!(v, Value::Tensor(_)));
    let pairs = if has_tensors {
        pairs
    } else {
        let nested: Vec<_> = pairs.into_iter().filter(|(_, v)| matches!(v, Value::Dict(_))).collect();
        match <[_; 1]>::try_from(nested) {
            Ok([(_, Value::Dict(inner))]) => inner,
            _ => return Err(CheckpointError::NotACheckpoint),
        }
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let Value::Str(mut k) = k else { continue };
        for wrapper in ["module.", "_orig_mod."] {
            if let Some(rest) = k.strip_prefix(wrapper) {
                k = rest.to_string();
            }
        }
        out.push((k, v));
    }
    Ok(out)
}

fn read_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str, max: u64) -> Result<Vec<u8>, CheckpointError> {
    let f = zip.by_name(name).map_err(|e| CheckpointError::Zip(format!("{name}: {e}")))?;
    let size = f.size();
    if size > max {
        return Err(CheckpointError::Zip(format!("{name}: entry of {size} bytes, expected at most {max}")));
    }
    // Declared sizes are claims: deflate expands at most 1032x, so the entry's own bytes bound
    // what it can produce, and the up-front allocation never exceeds 4x those bytes.
    let compressed = f.compressed_size();
    let max = max.min(compressed.saturating_mul(1032).max(64));
    let mut buf = Vec::with_capacity(size.min(compressed.saturating_mul(4).max(64)) as usize);
    f.take(max).read_to_end(&mut buf).map_err(|e| CheckpointError::Zip(format!("{name}: {e}")))?;
    Ok(buf)
}

/// Values gathered from a storage, as floats or ints.
enum Gathered {
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

impl Gathered {
    fn into_floats(self) -> Vec<f32> {
        match self {
            Gathered::Floats(f) => f,
            Gathered::Ints(i) => i.into_iter().map(|x| x as f32).collect(),
        }
    }
    fn into_ints(self) -> Vec<i64> {
        match self {
            Gathered::Ints(i) => i,
            Gathered::Floats(f) => f.into_iter().map(|x| x as i64).collect(),
        }
    }
}

/// Reads the elements a tensor view selects (any strides), checking every index is inside the storage.
fn gather(key: &str, t: &TensorRef, bytes: &[u8]) -> Result<(Vec<usize>, Gathered), CheckpointError> {
    if t.size.len() != t.stride.len() {
        return Err(CheckpointError::TensorOutOfBounds { key: key.into() });
    }
    let count = t.size.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS);
    let count = count.ok_or_else(|| CheckpointError::TooLarge { key: key.into() })?;
    let esize = t.dtype.size();
    // Elements the storage bytes actually hold: a storage shared by several tensors is read
    // once, for the first of them, so a later one may declare a longer storage or a wider dtype
    // than the bytes read (found by fuzzing).
    let available = bytes.len() as u64 / esize as u64;
    if count > 0 {
        let last =
            t.size.iter().zip(&t.stride).try_fold(t.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?));
        if last.is_none_or(|l| l >= t.storage_len || l >= available) {
            return Err(CheckpointError::TensorOutOfBounds { key: key.into() });
        }
    }
    let shape: Vec<usize> = t.size.iter().map(|&d| d as usize).collect();
    let contiguous = {
        let mut expect = 1u64;
        let mut ok = true;
        for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                ok = false;
            }
            expect *= d;
        }
        ok
    };
    // Element indices in the storage, in row-major order of the view.
    let indices: Box<dyn Iterator<Item = u64>> = if contiguous {
        Box::new(t.offset..t.offset + count)
    } else {
        let (size, stride, offset) = (t.size.clone(), t.stride.clone(), t.offset);
        Box::new((0..count).map(move |mut flat| {
            let mut idx = offset;
            for (&d, &s) in size.iter().zip(&stride).rev() {
                idx += (flat % d) * s;
                flat /= d;
            }
            idx
        }))
    };
    let at = |i: u64| -> &[u8] {
        let start = i as usize * esize;
        &bytes[start..start + esize]
    };
    let g = match t.dtype {
        StorageDType::F32 => {
            Gathered::Floats(indices.map(|i| f32::from_le_bytes(at(i).try_into().unwrap_or([0; 4]))).collect())
        }
        StorageDType::F16 => {
            Gathered::Floats(indices.map(|i| f16::from_le_bytes(at(i).try_into().unwrap_or([0; 2])).to_f32()).collect())
        }
        StorageDType::BF16 => Gathered::Floats(
            indices.map(|i| bf16::from_le_bytes(at(i).try_into().unwrap_or([0; 2])).to_f32()).collect(),
        ),
        StorageDType::F64 => {
            Gathered::Floats(indices.map(|i| f64::from_le_bytes(at(i).try_into().unwrap_or([0; 8])) as f32).collect())
        }
        StorageDType::I64 => {
            Gathered::Ints(indices.map(|i| i64::from_le_bytes(at(i).try_into().unwrap_or([0; 8]))).collect())
        }
        StorageDType::I32 => {
            Gathered::Ints(indices.map(|i| i64::from(i32::from_le_bytes(at(i).try_into().unwrap_or([0; 4])))).collect())
        }
        StorageDType::I16 => {
            Gathered::Ints(indices.map(|i| i64::from(i16::from_le_bytes(at(i).try_into().unwrap_or([0; 2])))).collect())
        }
        StorageDType::I8 => Gathered::Ints(indices.map(|i| i64::from(at(i)[0] as i8)).collect()),
        StorageDType::U8 | StorageDType::Bool => Gathered::Ints(indices.map(|i| i64::from(at(i)[0])).collect()),
    };
    Ok((shape, g))
}

/// Writes a PyTorch-loadable `.pth` (`torch.load(path, weights_only=True)`) of `sd`, with float
/// tensors stored as `dtype` and integer lists as Python lists.
pub fn write(path: &Path, sd: &StateDict, dtype: StoredDType) -> Result<(), CheckpointError> {
    let io = |e: std::io::Error| CheckpointError::Io { path: path.to_path_buf(), source: e };
    let tmp = path.with_extension("pth.tmp");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let dir = "archive";
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let zerr = |e: zip::result::ZipError| CheckpointError::Zip(e.to_string());

    let (storage_name, esize) = match dtype {
        StoredDType::F32 => ("FloatStorage", 4),
        StoredDType::F16 => ("HalfStorage", 2),
        StoredDType::BF16 => ("BFloat16Storage", 2),
    };
    let mut p = PickleWriter::default();
    p.op(&[0x80, 2]);
    p.global("collections", "OrderedDict");
    p.op(b")R(");
    for (i, (key, t)) in sd.tensors.iter().enumerate() {
        p.str(key);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b"((");
        p.str("storage");
        p.global("torch", storage_name);
        p.str(&i.to_string());
        p.str("cpu");
        p.int(t.data.len() as i64);
        p.op(b"tQ");
        p.int(0);
        p.op(b"(");
        for &d in &t.shape {
            p.int(d as i64);
        }
        p.op(b"t(");
        let mut stride = vec![1i64; t.shape.len()];
        for j in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[j] = stride[j + 1] * t.shape[j + 1] as i64;
        }
        for s in stride {
            p.int(s);
        }
        p.op(b"t\x89");
        p.global("collections", "OrderedDict");
        p.op(b")RtR");
    }
    for (key, ints) in &sd.ints {
        p.str(key);
        p.op(b"](");
        for &v in ints {
            p.int(v);
        }
        p.op(b"e");
    }
    p.op(b"u.");

    zip.start_file(format!("{dir}/data.pkl"), stored).map_err(zerr)?;
    zip.write_all(&p.0).map_err(io)?;
    zip.start_file(format!("{dir}/byteorder"), stored).map_err(zerr)?;
    zip.write_all(b"little").map_err(io)?;
    for (i, t) in sd.tensors.values().enumerate() {
        // 64-byte aligned data, as torch.save writes it (torch.load(mmap=True) relies on it).
        zip.start_file(format!("{dir}/data/{i}"), stored.with_alignment(64)).map_err(zerr)?;
        let mut buf = Vec::with_capacity(t.data.len() * esize);
        for &v in &t.data {
            match dtype {
                StoredDType::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                StoredDType::F16 => buf.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                StoredDType::BF16 => buf.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
            }
        }
        zip.write_all(&buf).map_err(io)?;
    }
    zip.start_file(format!("{dir}/version"), stored).map_err(zerr)?;
    zip.write_all(b"3\n").map_err(io)?;
    let mut w = zip.finish().map_err(zerr)?;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(io)
}

/// Emits pickle opcodes.
#[derive(Default)]
struct PickleWriter(Vec<u8>);

impl PickleWriter {
    fn op(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(module.as_bytes());
        self.0.push(b'\n');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'\n');
    }
    fn int(&mut self, v: i64) {
        if let Ok(v32) = i32::try_from(v) {
            self.0.push(b'J');
            self.0.extend_from_slice(&v32.to_le_bytes());
        } else {
            self.0.push(0x8a);
            self.0.push(8);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
}
