//! AFL++ target: `rwkvdb::fuzzing::database_file` (see docs/reliability.md, "Fuzzing").
//!
//! `fuzz_nohook!`, not `fuzz!`: `fuzz!` installs a panic hook that aborts on every panic, even
//! one caught inside rwkvdb, and `src/store/` deliberately catches redb's panics on damaged
//! files (they become `StoreError::Corrupt`). A panic that escapes the entry point still aborts
//! (afl.rs catches it around each input), so AFL++ still sees every real crash.
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| rwkvdb::fuzzing::database_file(data));
}
