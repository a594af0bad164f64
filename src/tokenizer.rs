//! The RWKV "world" tokenizer (vocabulary `rwkv_vocab_v20230424`, 65,529 tokens).
//!
//! Encoding is a greedy longest match over the UTF-8 bytes, exactly like the reference
//! `TRIE_TOKENIZER`: at each position take the longest vocabulary entry that matches. Every single
//! byte is a token, so any byte string can be encoded. Id 0 (`<|endoftext|>`) is never produced by
//! encoding; [`EOS_TOKEN`] (65535) is appended by the embedding model's callers.
//!
//! The vocabulary file (Python literals, one `ID LITERAL BYTE_LEN` per line) is embedded in the
//! binary and parsed once.

use std::sync::OnceLock;

/// End-of-sequence token appended to every text the embedder reads as a whole.
pub const EOS_TOKEN: u32 = 65535;

const VOCAB: &str = include_str!("../models/rwkv_vocab_v20230424.txt");

/// Errors of the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A vocabulary line could not be parsed.
    #[error("vocabulary line {line}: {reason}")]
    BadVocab {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Decoding met an id outside the vocabulary.
    #[error("unknown token id {0}")]
    UnknownId(u32),
    /// Decoded bytes are not valid UTF-8.
    #[error("decoded bytes are not valid UTF-8: {0}")]
    InvalidUtf8(#[from] std::string::FromUtf8Error),
}

/// A trie node: children are a sorted range of `edges`; `token` is 0 when no token ends here.
#[derive(Clone, Copy, Default)]
struct Node {
    first_edge: u32,
    n_edges: u32,
    token: u32,
}

/// The tokenizer: token bytes by id and a byte trie for encoding.
pub struct Tokenizer {
    tokens: Vec<Vec<u8>>,
    nodes: Vec<Node>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    /// Child of the root for each first byte (0 = none), to skip one search per token.
    root: [u32; 256],
}

static WORLD: OnceLock<Tokenizer> = OnceLock::new();

impl Tokenizer {
    /// The world tokenizer from the embedded vocabulary (built on first use).
    pub fn world() -> &'static Tokenizer {
        // The embedded vocabulary is checked by the test suite, so parsing it cannot fail at run
        // time; should it ever, an empty tokenizer encodes every byte as unknown (tests catch it).
        WORLD.get_or_init(|| Self::from_vocab_text(VOCAB).unwrap_or_else(|_| Self::empty()))
    }

    fn empty() -> Self {
        Self {
            tokens: vec![Vec::new()],
            nodes: vec![Node::default()],
            edge_bytes: Vec::new(),
            edge_targets: Vec::new(),
            root: [0; 256],
        }
    }

    /// Builds a tokenizer from vocabulary text in the reference format.
    pub fn from_vocab_text(text: &str) -> Result<Self, TokenizerError> {
        let mut tokens: Vec<Vec<u8>> = vec![b"<|endoftext|>".to_vec()];
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: &str| TokenizerError::BadVocab { line: i + 1, reason: reason.to_string() };
            let first = line.find(' ').ok_or_else(|| bad("no id"))?;
            let last = line.rfind(' ').ok_or_else(|| bad("no length"))?;
            if last <= first {
                return Err(bad("missing literal"));
            }
            let id: usize = line[..first].parse().map_err(|_| bad("bad id"))?;
            let len: usize = line[last + 1..].parse().map_err(|_| bad("bad length"))?;
            let bytes = parse_python_literal(line[first + 1..last].trim()).map_err(|e| bad(&e))?;
            if bytes.len() != len {
                return Err(bad(&format!("literal has {} bytes, line says {len}", bytes.len())));
            }
            if id == 0 || id > 65_534 {
                return Err(bad("id out of range"));
            }
            if tokens.len() <= id {
                tokens.resize(id + 1, Vec::new());
            }
            tokens[id] = bytes;
        }
        Ok(Self::build(tokens))
    }

    fn build(tokens: Vec<Vec<u8>>) -> Self {
        // Build a pointer trie first, then flatten it into sorted edge arrays.
        struct Tmp {
            children: std::collections::BTreeMap<u8, usize>,
            token: u32,
        }
        let mut tmp = vec![Tmp { children: Default::default(), token: 0 }];
        for (id, t) in tokens.iter().enumerate().skip(1) {
            if t.is_empty() {
                continue;
            }
            let mut n = 0;
            for &b in t {
                n = if let Some(&c) = tmp[n].children.get(&b) {
                    c
                } else {
                    tmp.push(Tmp { children: Default::default(), token: 0 });
                    let c = tmp.len() - 1;
                    tmp[n].children.insert(b, c);
                    c
                };
            }
            // A later id with the same bytes wins, as in the reference's dict.
            tmp[n].token = id as u32;
        }
        let mut nodes = Vec::with_capacity(tmp.len());
        let mut edge_bytes = Vec::new();
        let mut edge_targets = Vec::new();
        for t in &tmp {
            nodes.push(Node { first_edge: edge_bytes.len() as u32, n_edges: t.children.len() as u32, token: t.token });
            for (&b, &c) in &t.children {
                edge_bytes.push(b);
                edge_targets.push(c as u32);
            }
        }
        let mut root = [0u32; 256];
        for (&b, &c) in &tmp[0].children {
            root[b as usize] = c as u32;
        }
        Self { tokens, nodes, edge_bytes, edge_targets, root }
    }

    #[inline]
    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        let n = self.nodes.get(node as usize)?;
        let (lo, len) = (n.first_edge as usize, n.n_edges as usize);
        let bytes = self.edge_bytes.get(lo..lo + len)?;
        let pos = if len <= 8 { bytes.iter().position(|&b| b == byte)? } else { bytes.binary_search(&byte).ok()? };
        self.edge_targets.get(lo + pos).copied()
    }

    /// Token ids of `text` (no EOS).
    #[must_use]
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_bytes(text.as_bytes())
    }

    /// Token ids of `text` followed by [`EOS_TOKEN`].
    #[must_use]
    pub fn encode_with_eos(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode(text);
        ids.push(EOS_TOKEN);
        ids
    }

    /// Token ids of arbitrary bytes: greedy longest match.
    #[must_use]
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(bytes.len() / 3 + 1);
        let mut pos = 0;
        while pos < bytes.len() {
            let mut node = self.root[bytes[pos] as usize];
            if node == 0 {
                // Only possible with a vocabulary lacking single bytes (the world one has all 256).
                out.push(0);
                pos += 1;
                continue;
            }
            let mut best = (0u32, 1usize);
            let mut i = pos + 1;
            while let Some(n) = self.nodes.get(node as usize) {
                if n.token != 0 {
                    best = (n.token, i - pos);
                }
                if i >= bytes.len() || n.n_edges == 0 {
                    break;
                }
                match self.child(node, bytes[i]) {
                    Some(c) => {
                        node = c;
                        i += 1;
                    }
                    None => break,
                }
            }
            // Every byte is a token in the world vocabulary; `best.0 == 0` only with a broken one.
            out.push(best.0);
            pos += best.1;
        }
        out
    }

    /// Bytes of a token sequence; EOS decodes to nothing.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for &id in ids {
            if id == EOS_TOKEN {
                continue;
            }
            match self.tokens.get(id as usize) {
                Some(t) if !t.is_empty() => out.extend_from_slice(t),
                _ => return Err(TokenizerError::UnknownId(id)),
            }
        }
        Ok(out)
    }

    /// Text of a token sequence (must be valid UTF-8).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8(self.decode_bytes(ids)?)?)
    }

    /// Number of regular tokens (ids 1..=65529 in the world vocabulary).
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.tokens.iter().skip(1).filter(|t| !t.is_empty()).count()
    }

    /// Bytes of one token.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice).filter(|t| !t.is_empty())
    }
}

/// Parses a Python `str` literal (`'…'`/`"…"`, encoded as UTF-8) or `bytes` literal (`b'…'`).
fn parse_python_literal(lit: &str) -> Result<Vec<u8>, String> {
    let (is_bytes, rest) = match lit.strip_prefix('b') {
        Some(r) => (true, r),
        None => (false, lit),
    };
    let quote = rest.chars().next().ok_or("empty literal")?;
    if !(quote == '\'' || quote == '"') || rest.len() < 2 || !rest.ends_with(quote) {
        return Err(format!("not a quoted literal: {lit}"));
    }
    let body = &rest[1..rest.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    let push_char = |out: &mut Vec<u8>, c: char| {
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            push_char(&mut out, c);
            continue;
        }
        let e = chars.next().ok_or("dangling backslash")?;
        let hex = |chars: &mut std::iter::Peekable<std::str::Chars>, n: usize| -> Result<u32, String> {
            let s: String = (0..n).filter_map(|_| chars.next()).collect();
            if s.len() != n {
                return Err("short escape".into());
            }
            u32::from_str_radix(&s, 16).map_err(|_| format!("bad hex escape {s}"))
        };
        match e {
            '\\' => out.push(b'\\'),
            '\'' => out.push(b'\''),
            '"' => out.push(b'"'),
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            'x' => {
                let v = hex(&mut chars, 2)?;
                if is_bytes {
                    out.push(v as u8);
                } else {
                    push_char(&mut out, char::from_u32(v).ok_or("bad \\x")?);
                }
            }
            'u' | 'U' if !is_bytes => {
                let v = hex(&mut chars, if e == 'u' { 4 } else { 8 })?;
                push_char(&mut out, char::from_u32(v).ok_or("bad unicode escape")?);
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                if is_bytes {
                    out.push(v as u8);
                } else {
                    push_char(&mut out, char::from_u32(v).ok_or("bad octal escape")?);
                }
            }
            // Python keeps unknown escapes verbatim, backslash included.
            other => {
                out.push(b'\\');
                push_char(&mut out, other);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(parse_python_literal(r"'\x00'").unwrap(), vec![0]);
        assert_eq!(parse_python_literal(r"b'\xe4\xb8'").unwrap(), vec![0xe4, 0xb8]);
        assert_eq!(parse_python_literal(r"'\xe4'").unwrap(), "ä".as_bytes());
        assert_eq!(parse_python_literal(r"'\u2002'").unwrap(), "\u{2002}".as_bytes());
        assert_eq!(parse_python_literal(r#""'""#).unwrap(), b"'");
        assert_eq!(parse_python_literal(r"'\$'").unwrap(), b"\\$");
        assert!(parse_python_literal("abc").is_err());
    }
}
