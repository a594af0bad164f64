//! The state codec: precision per layer role, checksums, hostile input.

use proptest::prelude::*;
use rwkvdb::codec::{CodecConfig, CodecError, Precision, Preset, StateCodec};
use rwkvdb::model::ModelState;

const C: usize = 128;
const LAYERS: usize = 3;
const SELECTED: &[usize] = &[1, 2];

fn state(seed: u64) -> ModelState {
    let mut s = seed;
    let mut rnd = move || {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut st = ModelState::zeros(LAYERS, C);
    st.att_shift.iter_mut().chain(st.ffn_shift.iter_mut()).for_each(|x| *x = 2.0 * rnd());
    // WKV rows with scales spanning two orders of magnitude, as in real states.
    for (i, x) in st.wkv.iter_mut().enumerate() {
        let row_scale = 0.01 * (1.0 + ((i / 64) % 100) as f32);
        *x = rnd() * row_scale;
    }
    st
}

fn codec(p: Preset) -> StateCodec {
    StateCodec::new(p.config(), C, LAYERS, SELECTED).unwrap()
}

/// Max |error| relative to each 64-value row's max |value|.
fn rel_row_error(a: &[f32], b: &[f32]) -> f32 {
    a.chunks(64)
        .zip(b.chunks(64))
        .map(|(x, y)| {
            let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
            x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max) / m
        })
        .fold(0.0, f32::max)
}

#[test]
fn round_trips_within_each_precision() {
    let s = state(1);
    let exact = codec(Preset::Exact);
    assert_eq!(exact.decode(&exact.encode(&s).unwrap()).unwrap(), s);
    let per_layer = C * 64;
    for (preset, sel_bound, pass_bound) in [
        (Preset::Balanced, 1e-3, 1.0 / 127.0),
        (Preset::Compact, 1.0 / 127.0, 1.0 / 31.0),
        (Preset::Tiny, 1.0 / 7.0, 1.0 / 3.0),
    ] {
        let c = codec(preset);
        let blob = c.encode(&s).unwrap();
        let d = c.decode(&blob).unwrap();
        let layer = |st: &ModelState, l: usize| st.wkv[l * per_layer..(l + 1) * per_layer].to_vec();
        // Layer 0 is pass-through, layers 1 and 2 feed the reranker.
        assert!(rel_row_error(&layer(&s, 0), &layer(&d, 0)) <= pass_bound * 0.51 + 1e-6, "{preset:?} pass-through");
        for l in SELECTED {
            assert!(rel_row_error(&layer(&s, *l), &layer(&d, *l)) <= sel_bound * 0.51 + 1e-6, "{preset:?} selected");
        }
        let shift_err = s.att_shift.iter().zip(&d.att_shift).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(shift_err < 2e-3, "{preset:?} shifts {shift_err}");
        assert!(blob.len() < exact.encode(&s).unwrap().len(), "{preset:?} is not smaller than exact");
    }
}

#[test]
fn every_integer_width_rounds_to_the_nearest_step() {
    let s = state(7);
    let per_layer = C * 64;
    for (p, qmax) in [
        (Precision::Int8, 127.0),
        (Precision::Int6, 31.0),
        (Precision::Int5, 15.0),
        (Precision::Int4, 7.0),
        (Precision::Int3, 3.0),
    ] {
        let config = CodecConfig { selected: p, pass_through: p, shift: Precision::F16, zstd_level: 1 };
        let c = StateCodec::new(config, C, LAYERS, SELECTED).unwrap();
        let d = c.decode(&c.encode(&s).unwrap()).unwrap();
        for l in 0..LAYERS {
            let range = l * per_layer..(l + 1) * per_layer;
            let err = rel_row_error(&s.wkv[range.clone()], &d.wkv[range]);
            // Round-to-nearest: at most half a step, and (uniform data) close to it.
            assert!(err <= 0.5 / qmax + 1e-6, "{p:?}: {err} > half step {}", 0.5 / qmax);
            assert!(err > 0.3 / qmax, "{p:?}: {err} suspiciously small");
        }
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    let c = codec(Preset::Balanced);
    let blob = c.encode(&state(2)).unwrap();
    for pos in (0..blob.len()).step_by(blob.len() / 200 + 1).chain([blob.len() - 1]) {
        let mut bad = blob.clone();
        bad[pos] ^= 0x10;
        assert!(c.decode(&bad).is_err(), "flip at {pos} went unnoticed");
    }
    for len in (0..64).chain([blob.len() / 2, blob.len() - 1]) {
        assert!(c.decode(&blob[..len]).is_err(), "truncation to {len}");
    }
}

#[test]
fn mismatches_and_bad_states_are_typed_errors() {
    let c = codec(Preset::Balanced);
    let blob = c.encode(&state(3)).unwrap();
    let other = StateCodec::new(Preset::Balanced.config(), C, LAYERS, &[2]).unwrap();
    assert!(matches!(other.decode(&blob), Err(CodecError::ShapeMismatch(_))));
    assert!(matches!(codec(Preset::Compact).decode(&blob), Err(CodecError::ShapeMismatch(_))));
    assert!(matches!(c.decode(b"XXXX-not-a-state"), Err(CodecError::BadMagic)));
    let mut newer = blob.clone();
    newer[4] = 9;
    assert!(matches!(c.decode(&newer), Err(CodecError::UnsupportedVersion { found: 9, .. })));
    let mut nan = state(4);
    nan.wkv[10] = f32::NAN;
    assert!(matches!(c.encode(&nan), Err(CodecError::NonFinite)));
    assert!(matches!(c.encode(&ModelState::zeros(2, C)), Err(CodecError::ShapeMismatch(_))));
    assert!(StateCodec::new(Preset::Balanced.config(), 100, 3, &[1]).is_err());
    assert!(StateCodec::new(Preset::Balanced.config(), C, 3, &[3]).is_err());
    assert_ne!(codec(Preset::Balanced).fingerprint(), codec(Preset::Compact).fingerprint());
    assert_ne!(codec(Preset::Balanced).fingerprint(), other.fingerprint());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let c = codec(Preset::Balanced);
        prop_assert!(c.decode(&bytes).is_err());
    }

    #[test]
    fn mutated_blobs_never_panic(pos in 0usize..4096, val in any::<u8>(), cut in 0usize..8192) {
        let c = codec(Preset::Compact);
        let mut blob = c.encode(&state(5)).unwrap();
        let p = pos % blob.len();
        blob[p] = val;
        blob.truncate(cut.max(1).min(blob.len()));
        let _ = c.decode(&blob);
    }
}
