//! AFL++ target: `rwkvdb::fuzzing::database_file` (see docs/reliability.md, "Fuzzing").
fn main() {
    afl::fuzz!(|data: &[u8]| rwkvdb::fuzzing::database_file(data));
}
