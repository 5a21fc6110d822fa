//! Latency summaries: a plain sorted vector and nearest-rank percentiles.

use std::fmt;
use std::time::Duration;

/// The value at percentile `p` (0..=100) of `sorted` (ascending), by the
/// nearest-rank method: the smallest sample such that at least `p` % of the
/// samples are less than or equal to it. `None` for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let n = sorted.len();
    // Rank in 1..=n; the float is at most n, so the cast cannot truncate
    // anything meaningful.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// A summary of latency samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Summary {
    /// Sorts `samples` and summarizes them (all zero for no samples).
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        Summary {
            count: samples.len(),
            p50: percentile(&samples, 50.0).unwrap_or_default(),
            p99: percentile(&samples, 99.0).unwrap_or_default(),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// A latency shown with a unit that keeps it readable: `850 µs`,
/// `4.21 ms`, `1.20 s`.
#[derive(Debug, Clone, Copy)]
pub struct Latency(pub Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_secs_f64() * 1e6;
        if micros < 1_000.0 {
            write!(f, "{micros:.0} µs")
        } else if micros < 1_000_000.0 {
            write!(f, "{:.2} ms", micros / 1e3)
        } else {
            write!(f, "{:.2} s", micros / 1e6)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(ms(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(ms(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(ms(100)));
        assert_eq!(percentile(&sorted, 0.0), Some(ms(1)));
        // Out-of-range percentiles are clamped.
        assert_eq!(percentile(&sorted, 250.0), Some(ms(100)));
    }

    #[test]
    fn percentile_of_small_samples() {
        let one = [ms(7)];
        assert_eq!(percentile(&one, 50.0), Some(ms(7)));
        assert_eq!(percentile(&one, 99.0), Some(ms(7)));
        // Two samples: the median is the lower one, p99 the upper one.
        let two = [ms(1), ms(9)];
        assert_eq!(percentile(&two, 50.0), Some(ms(1)));
        assert_eq!(percentile(&two, 99.0), Some(ms(9)));
    }

    #[test]
    fn summary_sorts_its_samples() {
        let summary = Summary::of(vec![ms(30), ms(10), ms(20), ms(40)]);
        assert_eq!(summary.count, 4);
        assert_eq!(summary.p50, ms(20));
        assert_eq!(summary.p99, ms(40));
        assert_eq!(summary.max, ms(40));
        assert_eq!(Summary::of(Vec::new()), Summary::default());
    }

    #[test]
    fn latency_picks_a_readable_unit() {
        assert_eq!(Latency(Duration::from_micros(850)).to_string(), "850 µs");
        assert_eq!(Latency(Duration::from_micros(4_210)).to_string(), "4.21 ms");
        assert_eq!(Latency(Duration::from_millis(1_200)).to_string(), "1.20 s");
    }
}
