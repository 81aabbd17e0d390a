//! Small statistics helpers: percentiles of latency samples, medians of batch means.

use std::time::Duration;

/// Latency samples of one measurement, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    nanos: Vec<u64>,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: &Latencies) {
        self.nanos.extend_from_slice(&other.nanos);
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// Nearest-rank percentile (`p` in 0..=100); zero without samples. Selects on a copy
    /// (linear time): the report reads a few percentiles per row, and a shared borrow
    /// spares every reader a clone of the row or a `mut` binding.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.nanos.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let mut copy = self.nanos.clone();
        let (_, nth, _) = copy.select_nth_unstable(rank.clamp(1, n) - 1);
        Duration::from_nanos(*nth)
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.nanos.iter().copied().max().unwrap_or(0))
    }
}

/// Median of a list of values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_median() {
        let mut l = Latencies::default();
        // Out of order, as concurrent clients record them.
        for i in (51..=100).rev().chain(1..=50) {
            l.push(Duration::from_micros(i));
        }
        assert_eq!(l.percentile(50.0), Duration::from_micros(50));
        assert_eq!(l.percentile(99.0), Duration::from_micros(99));
        assert_eq!(l.percentile(100.0), Duration::from_micros(100));
        assert_eq!(l.max(), Duration::from_micros(100));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
