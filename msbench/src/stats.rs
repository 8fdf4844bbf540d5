//! Latency samples and their percentiles.

use serde_json::{json, Value};
use std::time::Duration;

/// A set of latency samples.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<f64>,
}

impl Latencies {
    /// An empty set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Latencies {
            micros: Vec::with_capacity(n),
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.micros.push(d.as_secs_f64() * 1e6);
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Latencies) {
        self.micros.extend_from_slice(&other.micros);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// The `q`-quantile (0.0-1.0) in microseconds, nearest-rank; 0 if empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        let mut v = self.micros.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// `{"samples", "p50_us", "p99_us", "mean_us"}`.
    pub fn summary(&self) -> Value {
        let mean = if self.micros.is_empty() {
            0.0
        } else {
            self.micros.iter().sum::<f64>() / self.micros.len() as f64
        };
        json!({
            "samples": self.len(),
            "p50_us": round2(self.quantile_us(0.50)),
            "p99_us": round2(self.quantile_us(0.99)),
            "mean_us": round2(mean),
        })
    }
}

/// Rounds to two decimals for readable JSON.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        round2(a / b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_nearest_rank() {
        let mut l = Latencies::default();
        for i in 1..=100 {
            l.push(Duration::from_micros(i));
        }
        assert_eq!(l.quantile_us(0.5), 50.0);
        assert_eq!(l.quantile_us(0.99), 99.0);
        assert_eq!(l.quantile_us(1.0), 100.0);
        assert_eq!(Latencies::default().quantile_us(0.5), 0.0);
    }
}
