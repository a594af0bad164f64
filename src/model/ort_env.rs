//! Finding and loading the ONNX Runtime shared library.
//!
//! Order: an explicit path given by the caller, then `$ORT_DYLIB_PATH`, then the `.ort/` folder
//! that `scripts/setup-ort` fills in this source tree, then `libonnxruntime.so` next to the
//! running executable. The library is loaded once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::ModelError;

/// The ONNX Runtime version rwkvdb is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

fn lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libonnxruntime.dylib"
    } else if cfg!(windows) {
        "onnxruntime.dll"
    } else {
        "libonnxruntime.so"
    }
}

/// Candidate library paths in priority order.
fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort").join(lib_name()));
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push(dir.join(lib_name()));
    }
    out
}

static LOADED: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

/// Loads ONNX Runtime once for the process and returns its environment and the library path.
///
/// Later calls return the first outcome whatever `explicit` says: the library cannot be swapped.
pub fn ensure_loaded(explicit: Option<&Path>) -> Result<(PathBuf, ort::environment::Environment), ModelError> {
    let outcome = LOADED.get_or_init(|| {
        let tried = candidates(explicit);
        // An explicit path or ORT_DYLIB_PATH that does not exist is an error, not a silent fallback.
        let chosen = if explicit.is_some() || std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) {
            tried.first().cloned()
        } else {
            tried.iter().find(|p| p.exists()).cloned()
        };
        if let Some(p) = chosen.as_ref().filter(|p| !p.exists()) {
            let from = if explicit.is_some() { "the path given (--ort-lib)" } else { "ORT_DYLIB_PATH" };
            return Err(format!(
                "ONNX Runtime library {} (from {from}) does not exist: point it at libonnxruntime.so \
                 {ORT_VERSION}, or unset it to use the copy `scripts/setup-ort` installs",
                p.display()
            ));
        }
        let Some(path) = chosen else {
            let list = tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "ONNX Runtime {ORT_VERSION} was not found (looked at: {list}). Run `scripts/setup-ort` in the \
                 rwkvdb checkout, or set ORT_DYLIB_PATH to libonnxruntime.so"
            ));
        };
        let builder = ort::init_from(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
        let env = builder.with_name("rwkvdb").build().map_err(|e| format!("starting ONNX Runtime: {e}"))?;
        Ok((path, env))
    });
    outcome.clone().map_err(ModelError::OrtNotFound)
}
