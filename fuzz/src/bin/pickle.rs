//! AFL++ target: the pickle machine of `.pth` checkpoints (`rwkvdb::checkpoint::pickle::load`)
//! on raw `data.pkl` bytes, without the zip container around it.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = rwkvdb::checkpoint::pickle::load(data);
    });
}
