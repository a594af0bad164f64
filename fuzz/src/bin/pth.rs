//! AFL++ target: `rwkvdb::fuzzing::pth` (see docs/reliability.md, "Fuzzing").
fn main() {
    afl::fuzz!(|data: &[u8]| rwkvdb::fuzzing::pth(data));
}
