//! AFL++ target: `rwkvdb::fuzzing::jsonl` (see docs/reliability.md, "Fuzzing").
fn main() {
    afl::fuzz!(|data: &[u8]| rwkvdb::fuzzing::jsonl(data));
}
