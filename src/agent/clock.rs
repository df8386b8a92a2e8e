//! The agent's two clocks, read in one place so the pure core never reads
//! one: wall time stamps points, monotonic time orders gauges across shards.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall clock in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Monotonic nanoseconds since process start: orders gauges across shards
/// ("last value wins" must mean the latest received, whichever shard got it).
pub fn mono_nanos() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
