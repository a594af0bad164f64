//! Process memory figures, for benchmarks and reports (Linux `/proc`; 0 elsewhere).

/// Peak resident set size of this process so far (`VmHWM`), in MiB.
#[must_use]
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak resident set size to the current one (Linux: `5` to `/proc/self/clear_refs`),
/// so a later [`peak_rss_mb`] measures one stretch of work. Elsewhere the peak stays the
/// process's peak so far.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
