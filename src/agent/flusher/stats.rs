//! What the flusher records about its own work (flush count and durations,
//! payloads per kind, time waiting on the forwarder) and publishes once per
//! flush for telemetry to read. It lives with the flusher so data flows one
//! way: the flusher writes, readers only read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::FlushSummary;
use crate::core::serializer::SerializerStats;
use crate::core::shard::ShardStats;

/// Payloads of one kind handed to a forwarder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounters {
    /// Payloads.
    pub payloads: u64,
    /// Compressed bytes.
    pub bytes: u64,
    /// Items (series, sketches, checks, events) in them.
    pub items: u64,
}

/// What the flusher publishes after each flush (all cumulative).
#[derive(Debug, Clone, Default)]
pub struct FlushSnapshot {
    /// Flushes done.
    pub flushes: u64,
    /// Sum of flush durations, seconds.
    pub duration_sum_secs: f64,
    /// Longest flush, seconds.
    pub duration_max_secs: f64,
    /// Duration of the last flush, seconds.
    pub last_duration_secs: f64,
    /// Flush duration quantiles (q, seconds).
    pub duration_quantiles: Vec<(f64, f64)>,
    /// Time the flusher spent waiting for room in forwarder queues, seconds.
    pub forwarder_wait_secs: f64,
    /// Submissions that had to wait (more than 1 ms).
    pub forwarder_waits: u64,
    /// Per payload kind.
    pub kinds: BTreeMap<&'static str, KindCounters>,
    /// Shard counters, summed over shards.
    pub shard: ShardStats,
    /// Live contexts at the last flush.
    pub contexts: usize,
    /// Serializer counters.
    pub serializer: SerializerStats,
    /// Unix seconds of the last flush.
    pub last_flush_unix: i64,
}

/// Flusher-side recorder; publishes once per flush.
pub struct FlushRecorder {
    current: FlushSnapshot,
    hist: Option<hdrhistogram::Histogram<u64>>,
    out: Arc<Mutex<FlushSnapshot>>,
}

impl FlushRecorder {
    /// A recorder publishing into a fresh shared snapshot.
    pub fn new() -> Self {
        Self {
            current: FlushSnapshot::default(),
            // 1 µs .. 1 h, 3 significant digits: fixed size, never grows.
            hist: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
            out: Arc::new(Mutex::new(FlushSnapshot::default())),
        }
    }

    /// The published snapshot (for the server).
    pub fn shared(&self) -> Arc<Mutex<FlushSnapshot>> {
        self.out.clone()
    }

    /// One payload handed to the forwarder.
    pub fn on_payload(&mut self, kind: &'static str, bytes: usize, items: usize) {
        let k = self.current.kinds.entry(kind).or_default();
        k.payloads += 1;
        k.bytes += bytes as u64;
        k.items += items as u64;
    }

    /// Time one `Forwarder::submit` took (backpressure).
    pub fn on_forwarder_submit(&mut self, took: Duration) {
        if took > Duration::from_millis(1) {
            self.current.forwarder_waits += 1;
            self.current.forwarder_wait_secs += took.as_secs_f64();
        }
    }

    /// End of a flush: records its duration and publishes.
    pub fn publish(&mut self, summary: &FlushSummary, serializer: SerializerStats, took: Duration) {
        let c = &mut self.current;
        c.flushes += 1;
        let secs = took.as_secs_f64();
        c.duration_sum_secs += secs;
        c.duration_max_secs = c.duration_max_secs.max(secs);
        c.last_duration_secs = secs;
        if let Some(h) = &mut self.hist {
            let _ = h.record((took.as_micros() as u64).clamp(1, 3_600_000_000));
            c.duration_quantiles =
                [0.5, 0.9, 0.99].iter().map(|q| (*q, h.value_at_quantile(*q) as f64 / 1e6)).collect();
        }
        c.shard = summary.stats.clone();
        c.contexts = summary.contexts;
        c.serializer = serializer;
        c.last_flush_unix = crate::agent::clock::unix_now();
        if let Ok(mut g) = self.out.lock() {
            *g = c.clone();
        }
    }
}

impl FlushSnapshot {
    /// The parts of `edgestat status` these counters answer (shard
    /// counters are as of the last flush).
    pub fn status_json(&self) -> serde_json::Value {
        let s = &self.shard;
        let kinds: serde_json::Map<String, serde_json::Value> = self
            .kinds
            .iter()
            .map(|(k, c)| {
                (k.to_string(), serde_json::json!({"payloads": c.payloads, "bytes": c.bytes, "items": c.items}))
            })
            .collect();
        serde_json::json!({
            "dogstatsd": {
                "packets": s.packets,
                "bytes": s.bytes,
                "read_errors": s.read_errors,
                "udp_standby_datagrams": s.udp_standby_datagrams,
                "udp_standby_pool_full": s.udp_standby_pool_full,
                "metric_lines": s.metric_lines,
                "metric_samples": s.metric_samples,
                "events": s.events,
                "service_checks": s.service_checks,
                "parse_errors": s.parse_errors,
                "dropped": s.dropped,
                "as_of_unix": self.last_flush_unix,
            },
            "contexts": self.contexts,
            "flush": {
                "count": self.flushes,
                "last_unix": self.last_flush_unix,
                "last_duration_seconds": self.last_duration_secs,
                "max_duration_seconds": self.duration_max_secs,
                "forwarder_waits": self.forwarder_waits,
            },
            "payloads": kinds,
        })
    }
}

impl Default for FlushRecorder {
    fn default() -> Self {
        Self::new()
    }
}
