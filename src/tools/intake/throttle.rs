//! Bandwidth limit for the local intake: payload bodies are paced as if
//! every connection shared one link of `bytes_per_sec`, so tests and
//! benchmarks can play an intake slower than the data.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared pacing clock; 0 bytes/s means unlimited.
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<(u64, Option<Instant>)>,
}

impl Throttle {
    /// A throttle at `bytes_per_sec` (0: off).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { state: Mutex::new((bytes_per_sec, None)) }
    }

    /// Current limit (0: off).
    pub fn rate(&self) -> u64 {
        self.state.lock().map(|g| g.0).unwrap_or(0)
    }

    /// Changes the limit (0: off); the link is free from now on.
    pub fn set(&self, bytes_per_sec: u64) {
        if let Ok(mut g) = self.state.lock() {
            *g = (bytes_per_sec, None);
        }
    }

    /// Reserves `bytes` on the link; returns when their transfer would end.
    pub fn reserve(&self, bytes: u64) -> Option<Instant> {
        let mut g = self.state.lock().ok()?;
        if g.0 == 0 {
            return None;
        }
        let now = Instant::now();
        let start = g.1.map_or(now, |free| free.max(now));
        let end = start + Duration::from_secs_f64(bytes as f64 / g.0 as f64);
        g.1 = Some(end);
        Some(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_queue_on_one_link() {
        let t = Throttle::new(1000);
        let t0 = Instant::now();
        let a = t.reserve(500).unwrap();
        let b = t.reserve(500).unwrap();
        assert!(a >= t0 + Duration::from_millis(500));
        assert!(b >= t0 + Duration::from_millis(1000));
        t.set(0);
        assert!(t.reserve(1 << 30).is_none());
    }
}
