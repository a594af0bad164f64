//! AFL++ target: `rwkvdb::fuzzing::safetensors` (see docs/reliability.md, "Fuzzing").
fn main() {
    afl::fuzz!(|data: &[u8]| rwkvdb::fuzzing::safetensors(data));
}
