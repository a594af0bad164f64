//! AFL++ target: `rwkvdb::fuzzing::state_blob` (see docs/reliability.md, "Fuzzing").
fn main() {
    afl::fuzz!(|data: &[u8]| rwkvdb::fuzzing::state_blob(data));
}
