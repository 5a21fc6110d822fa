//! The raw fsync rate of a filesystem: how many "append 4 KiB, then
//! `fdatasync`" rounds per second one thread gets. This is the ceiling of a
//! durable store that flushes once per acknowledged write, and the yardstick
//! for the single-caller durable rate.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stats::Summary;

/// Size of each append.
pub const BLOCK: usize = 4096;

/// What the probe measured.
#[derive(Debug, Clone)]
pub struct FsyncReport {
    /// The directory the probe file lived in (removed afterwards).
    pub dir: PathBuf,
    /// Completed write + `sync_data` rounds.
    pub syncs: usize,
    /// Wall time of those rounds.
    pub elapsed: Duration,
    /// Latency of one round.
    pub latency: Summary,
}

impl FsyncReport {
    /// Rounds per second.
    pub fn rate(&self) -> f64 {
        per_second(self.syncs, self.elapsed)
    }
}

/// `count` events over `elapsed`, per second (0 for no time).
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Appends [`BLOCK`] bytes to a fresh file in a temporary directory under
/// `parent` and calls `sync_data` (fdatasync), repeatedly, until `max_syncs`
/// rounds or `max_time` have passed, whichever comes first.
///
/// # Errors
/// Any I/O error creating, writing or syncing the file.
pub fn measure(parent: &Path, max_syncs: usize, max_time: Duration) -> anyhow::Result<FsyncReport> {
    let dir = tempfile::Builder::new()
        .prefix("bench-fsync-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let path = dir.path().join("probe");
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = [0xA5u8; BLOCK];
    // One unmeasured round, so that creating the file's first extent and
    // directory entry is not counted.
    file.write_all(&block)?;
    file.sync_all()?;

    let mut latencies = Vec::with_capacity(max_syncs.min(1 << 20));
    let start = Instant::now();
    while latencies.len() < max_syncs && start.elapsed() < max_time {
        let t = Instant::now();
        file.write_all(&block)
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("syncing {}", path.display()))?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    Ok(FsyncReport {
        dir: parent.to_path_buf(),
        syncs: latencies.len(),
        elapsed,
        latency: Summary::of(latencies),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_is_bounded_by_count() {
        let parent = tempfile::tempdir().unwrap();
        let report = measure(parent.path(), 5, Duration::from_secs(30)).unwrap();
        assert_eq!(report.syncs, 5);
        assert_eq!(report.latency.count, 5);
        assert!(report.rate() > 0.0);
    }

    #[test]
    fn per_second_handles_zero_time() {
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(10, Duration::from_secs(2)), 5.0);
    }
}
