//! Reading documents to import: JSONL files (`{"id", "text", "metadata"}` per line) and folders of
//! `.txt`/`.md` files. Every input is treated as hostile: a bad line or file becomes an
//! [`ImportProblem`] naming its location and is skipped; nothing here panics on any bytes.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::{ImportOptions, ImportProgress, ImportReport, NewDocument, Skipped};

/// An item that could not be read, and where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct ImportProblem {
    /// `file:line` for JSONL, the file path for folders.
    pub location: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads JSONL documents from `reader`. `source` names the input in problems (`source:line`);
/// lines without an `id` get a stable one, `{id_prefix}:{line}`, so a re-run finds them again.
/// Blank lines are ignored; a read error ends the stream with a problem.
pub fn read_jsonl<R: BufRead>(reader: R, source: &str, id_prefix: &str) -> JsonlDocuments<R> {
    JsonlDocuments {
        lines: reader.split(b'\n'),
        source: source.to_string(),
        id_prefix: id_prefix.to_string(),
        line: 0,
        failed: false,
    }
}

/// Iterator returned by [`read_jsonl`].
pub struct JsonlDocuments<R> {
    lines: std::io::Split<R>,
    source: String,
    id_prefix: String,
    line: usize,
    failed: bool,
}

impl<R: BufRead> Iterator for JsonlDocuments<R> {
    type Item = Result<NewDocument, ImportProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            let raw = self.lines.next()?;
            self.line += 1;
            let problem = |reason: String| ImportProblem { location: format!("{}:{}", self.source, self.line), reason };
            let raw = match raw {
                Ok(raw) => raw,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(problem(format!("read error: {e}"))));
                }
            };
            let text = match std::str::from_utf8(&raw) {
                Ok(t) => t,
                Err(e) => return Some(Err(problem(format!("not valid UTF-8 ({e}), skipped")))),
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<NewDocument>(text) {
                Ok(mut d) => {
                    d.id.get_or_insert_with(|| format!("{}:{}", self.id_prefix, self.line));
                    Ok(d)
                }
                Err(e) => Err(problem(format!("malformed JSON line ({e}), skipped"))),
            });
        }
    }
}

/// Reads every `.txt` and `.md` file under `dir` (recursively, in path order) as one document
/// whose id is its path relative to `dir` and whose metadata is `{"path": id}`. Empty files and
/// files that are not UTF-8 are problems.
pub fn read_folder(dir: &Path) -> std::io::Result<(Vec<NewDocument>, Vec<ImportProblem>)> {
    let mut files = Vec::new();
    collect_text_files(dir, &mut files)?;
    files.sort();
    let (mut docs, mut problems) = (Vec::new(), Vec::new());
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f).to_string_lossy().replace('\\', "/");
        let problem = |reason: String| ImportProblem { location: f.display().to_string(), reason };
        match std::fs::read(&f).map(String::from_utf8) {
            Ok(Ok(text)) if !text.trim().is_empty() => docs.push(NewDocument {
                id: Some(rel.clone()),
                text,
                metadata: Some(serde_json::json!({ "path": rel })),
            }),
            Ok(Ok(_)) => problems.push(problem("empty file, skipped".into())),
            Ok(Err(e)) => problems.push(problem(format!("not valid UTF-8 ({}), skipped", e.utf8_error()))),
            Err(e) => problems.push(problem(format!("{e}, skipped"))),
        }
    }
    Ok((docs, problems))
}

fn collect_text_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            collect_text_files(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("txt" | "md")) {
            out.push(p);
        }
    }
    Ok(())
}

impl crate::Collection {
    /// Imports documents the way a resumable bulk load should: ids already stored are left as
    /// they are (so re-running an interrupted import continues it), a repeated id in the input
    /// keeps its first copy, and a batch that fails is retried one document at a time so one bad
    /// document does not sink its neighbours. Documents that still fail are reported in
    /// [`ImportReport::problems`], not as an error; an error means the import stopped (storage
    /// failure) with every batch before it committed. `progress` is called after every batch.
    pub fn import(
        &self,
        docs: impl IntoIterator<Item = NewDocument>,
        opts: &ImportOptions,
        mut progress: impl FnMut(&ImportProgress),
    ) -> crate::Result<ImportReport> {
        let mut report = ImportReport::default();
        let mut seen = std::collections::HashSet::new();
        let mut todo = Vec::new();
        // One read snapshot for the whole resume check (not a transaction per document).
        let stored = self.inner.read()?;
        for d in docs {
            if let Some(id) = &d.id {
                if !seen.insert(id.clone()) {
                    report.problems.push(Skipped {
                        id: id.clone(),
                        reason: "repeated id in the input, later copy skipped".into(),
                    });
                    continue;
                }
                if stored.key_of(id)?.is_some() {
                    report.already_present += 1;
                    continue;
                }
            }
            todo.push(d);
        }
        drop(stored);
        let mut state = ImportProgress { total: todo.len(), ..ImportProgress::default() };
        progress(&state);
        let batch_size = opts.batch_size.clamp(1, super::MAX_BATCH_DOCS);
        for batch in todo.chunks(batch_size) {
            match self.insert(batch.to_vec()) {
                Ok(r) => {
                    state.imported += r.ids.len();
                    state.tokens += r.tokens;
                }
                Err(e) if self.import_must_stop(&e) => return Err(e),
                Err(_) => {
                    for d in batch {
                        match self.insert(vec![d.clone()]) {
                            Ok(r) => {
                                state.imported += 1;
                                state.tokens += r.tokens;
                            }
                            Err(e) if self.import_must_stop(&e) => return Err(e),
                            Err(e) => report.problems.push(Skipped {
                                id: d.id.clone().unwrap_or_else(|| "?".into()),
                                reason: e.to_string(),
                            }),
                        }
                    }
                }
            }
            progress(&state);
        }
        report.imported = state.imported;
        report.tokens = state.tokens;
        Ok(report)
    }

    /// Errors no retry can fix: storage failures, and a model that could not be loaded (files
    /// missing, a different model, no ONNX Runtime).
    fn import_must_stop(&self, e: &crate::Error) -> bool {
        matches!(e, crate::Error::Store(_) | crate::Error::Io { .. } | crate::Error::NoSuchCollection(_))
            || !self.model_loaded()
    }
}
