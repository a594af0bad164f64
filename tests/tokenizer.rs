//! The world tokenizer against ids produced by the reference Python tokenizer
//! (`tests/data/tokenizer_cases.json`, written by `scripts/gen_tokenizer_cases.py`).

use proptest::prelude::*;
use rwkvdb::tokenizer::{Tokenizer, TokenizerError, EOS_TOKEN};

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_eos: Vec<u32>,
}

#[test]
fn matches_reference_ids() {
    let cases: Vec<Case> = serde_json::from_str(include_str!("data/tokenizer_cases.json")).unwrap();
    assert!(cases.len() > 150);
    let tok = Tokenizer::world();
    for c in &cases {
        assert_eq!(tok.encode(&c.text), c.ids, "text {:?}", c.text);
        assert_eq!(tok.encode_with_eos(&c.text), c.ids_eos, "text {:?}", c.text);
        assert_eq!(tok.decode(&c.ids).unwrap(), c.text);
    }
}

#[test]
fn vocabulary_is_complete() {
    let tok = Tokenizer::world();
    assert_eq!(tok.vocab_size(), 65_529);
    for b in 0..=255u8 {
        assert_eq!(tok.encode_bytes(&[b]).len(), 1, "byte {b} must be a single token");
    }
    assert_eq!(tok.token_bytes(0), Some(&b"<|endoftext|>"[..]));
    assert!(matches!(tok.decode(&[65_530]), Err(TokenizerError::UnknownId(65_530))));
    assert_eq!(tok.decode(&[EOS_TOKEN]).unwrap(), "");
    // A split UTF-8 character decodes to bytes, but not to a String.
    let ids = tok.encode_bytes(&[0xe4]);
    assert!(matches!(tok.decode(&ids), Err(TokenizerError::InvalidUtf8(_))));
}

#[test]
fn bad_vocabulary_lines_are_reported() {
    assert!(matches!(Tokenizer::from_vocab_text("1 'a' 2\n"), Err(TokenizerError::BadVocab { line: 1, .. })));
    assert!(matches!(Tokenizer::from_vocab_text("1 'a' 1\nx 'b' 1\n"), Err(TokenizerError::BadVocab { line: 2, .. })));
    assert!(Tokenizer::from_vocab_text("1 'a' 1\n2 'ab' 2\n").is_ok());
}

proptest! {
    #[test]
    fn decode_inverts_encode(s in any::<String>()) {
        let tok = Tokenizer::world();
        prop_assert_eq!(tok.decode(&tok.encode(&s)).unwrap(), s);
    }

    #[test]
    fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let tok = Tokenizer::world();
        prop_assert_eq!(tok.decode_bytes(&tok.encode_bytes(&b)).unwrap(), b);
    }
}
