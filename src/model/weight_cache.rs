//! The prepared-weights cache: turning a `.pth` into runtime weights (parse, convert to f32,
//! transpose, quantize) happens once per checkpoint pair and precision; later loads map the
//! result from a file.
//!
//! Where: `$RWKVDB_CACHE_DIR` if set (an empty value or `off` disables the cache), else
//! `$XDG_CACHE_HOME/rwkvdb`, else `~/.cache/rwkvdb`. Each file is named
//! `<key>-<precision>.rwkvw`, where the key hashes the checkpoints' bytes (xxh3-128), the
//! precision and the prepared-weights format version: editing or replacing a checkpoint changes the key. Deleting
//! the directory (or `rwkvdb model cache --clear`) is always safe.
//!
//! A file is written under a temporary name, synced, then renamed into place, so a reader never
//! sees a partial file and concurrent writers of the same key just replace each other with equal
//! content. On load every file is checked in full (layout and checksum, see [`PreparedModel::open`]);
//! a damaged, truncated, stale or foreign file is deleted and rebuilt, never used.

use std::io::Read;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::prepared::{Precision, PreparedModel, FORMAT_VERSION};
use super::runtime::check_pair;
use super::{EmbedderWeights, RerankerWeights};
use crate::checkpoint;
use crate::error::{Error, Result};

/// File name extension of cache files.
pub const EXTENSION: &str = "rwkvw";

/// Where prepared weights are cached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheDir {
    /// `$RWKVDB_CACHE_DIR`, `$XDG_CACHE_HOME/rwkvdb` or `~/.cache/rwkvdb`.
    #[default]
    Default,
    /// This directory.
    At(PathBuf),
    /// No cache: weights are prepared in memory on every load.
    Off,
}

impl CacheDir {
    /// The directory this setting points at, if any.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            CacheDir::Off => None,
            CacheDir::At(p) => Some(p.clone()),
            CacheDir::Default => {
                if let Some(v) = std::env::var_os("RWKVDB_CACHE_DIR") {
                    return (!v.is_empty() && v != "off").then(|| PathBuf::from(v));
                }
                let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
                let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"));
                xdg.or(home).map(|d| d.join("rwkvdb"))
            }
        }
    }
}

/// How a model was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Mapped from this cache file.
    Cache(PathBuf),
    /// Prepared from the checkpoints now, and written to this cache file.
    Built(Option<PathBuf>),
}

fn hash_file(h: &mut Xxh3, path: &Path) -> Result<()> {
    let io = |e| Error::ModelFile {
        path: path.to_path_buf(),
        source: checkpoint::CheckpointError::Io { path: path.to_path_buf(), source: e },
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// The cache key of a checkpoint pair at a precision: a hash of the files' bytes, the precision
/// and the prepared format version.
pub fn source_key(embedder: &Path, reranker: Option<&Path>, precision: Precision) -> Result<String> {
    let mut h = Xxh3::new();
    h.update(format!("rwkvdb-prepared-v{FORMAT_VERSION}/{precision}/").as_bytes());
    hash_file(&mut h, embedder)?;
    if let Some(r) = reranker {
        h.update(b"/reranker/");
        hash_file(&mut h, r)?;
    }
    Ok(format!("{:032x}", h.digest128()))
}

/// Reads and checks a checkpoint pair (no cache involved).
pub fn load_weights(embedder: &Path, reranker: Option<&Path>) -> Result<(EmbedderWeights, Option<RerankerWeights>)> {
    let file_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::ModelFile { path: p, source }
    };
    let sd = checkpoint::load(embedder).map_err(file_err(embedder))?;
    let emb = EmbedderWeights::from_state_dict(&sd).map_err(file_err(embedder))?;
    drop(sd);
    let rr = match reranker {
        Some(p) => {
            let sd = checkpoint::load(p).map_err(file_err(p))?;
            Some(RerankerWeights::from_state_dict(&sd).map_err(file_err(p))?)
        }
        None => None,
    };
    check_pair(&emb, rr.as_ref())?;
    Ok((emb, rr))
}

/// Loads the prepared weights of a checkpoint pair at `precision`: from the cache when a valid
/// file exists, else prepared now (and cached when a directory is available and writable; a
/// cache that cannot be written only costs the next load its time).
pub fn load(
    dir: &CacheDir,
    embedder: &Path,
    reranker: Option<&Path>,
    precision: Precision,
) -> Result<(PreparedModel, LoadedFrom)> {
    let key = source_key(embedder, reranker, precision)?;
    let dir = dir.resolve();
    let path = dir.as_ref().map(|d| d.join(format!("{key}-{precision}.{EXTENSION}")));
    if let Some(p) = path.as_ref().filter(|p| p.exists()) {
        match PreparedModel::open(p) {
            Ok(pm) if pm.meta().source_key == key && pm.meta().precision == precision => {
                return Ok((pm, LoadedFrom::Cache(p.clone())));
            }
            // Damaged, stale or foreign: remove it and rebuild below.
            _ => {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let (emb, rr) = load_weights(embedder, reranker)?;
    let pm = PreparedModel::build(&emb, rr.as_ref(), precision, &key)?;
    drop((emb, rr));
    let written = match (&dir, &path) {
        (Some(d), Some(p)) => write(&pm, d, p).ok().map(|()| p.clone()),
        _ => None,
    };
    Ok((pm, LoadedFrom::Built(written)))
}

/// Writes `pm` to `path` atomically: a temporary file in the same directory, synced, renamed.
fn write(pm: &PreparedModel, dir: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".{}.{nanos}.{EXTENSION}.tmp", std::process::id()));
    let result =
        std::fs::File::create(&tmp).and_then(|mut f| pm.write_to(&mut f)).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A cache file and its size.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// Path.
    pub path: PathBuf,
    /// Bytes.
    pub bytes: u64,
}

/// The cache files in `dir` (leftover temporary files included).
pub fn entries(dir: &Path) -> std::io::Result<Vec<CacheEntry>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(&format!(".{EXTENSION}")) || name.ends_with(&format!(".{EXTENSION}.tmp")) {
            out.push(CacheEntry { path: e.path(), bytes: e.metadata()?.len() });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
