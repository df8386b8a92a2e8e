//! The flushed data model: what the aggregator hands to the serializer.
//!
//! These types are the boundary between aggregation (pure) and encoding
//! (pure); both sides depend on this module and on nothing of each other.

/// Series type as the intake knows it (v2 `MetricType` enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// Internal monotonic count (e.g. `datadog.agent.started`).
    Count = 1,
    /// Per-second rate; DogStatsD counters are flushed as this.
    Rate = 2,
    /// Last value / computed aggregate.
    Gauge = 3,
}

impl MetricType {
    /// The v1 JSON `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Count => "count",
            MetricType::Rate => "rate",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Where a series came from; written as v2 `Metadata.origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Aggregated DogStatsD traffic: product 10, category 10, service 0.
    DogStatsD,
    /// The Agent's own series and the no-aggregation pipeline: product 10, category 0.
    Internal,
    /// Internal and no-index (v2 origin field 3 = 9; skipped by v1 JSON).
    InternalNoIndex,
}

/// One `[timestamp, value]` pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix seconds.
    pub timestamp: i64,
    /// Never NaN or infinite: the aggregator rejects those.
    pub value: f64,
}

/// One series as sent to `/api/v1/series` or `/api/v2/series`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name including any histogram suffix.
    pub name: String,
    /// Resolved host (may be empty).
    pub host: String,
    /// Sorted, de-duplicated context tags (raw: `device:` and
    /// `dd.internal.resource:` are turned into resources by the encoder).
    pub tags: Vec<String>,
    /// Points in ascending timestamp order.
    pub points: Vec<Point>,
    /// Wire type.
    pub metric_type: MetricType,
    /// 10 for DogStatsD series, 0 for the Agent's own.
    pub interval: i64,
    /// `System` for the Agent's own series, else empty.
    pub source_type_name: String,
    /// Origin metadata.
    pub origin: Origin,
}

/// One DDSketch bucket (v1 `Dogsketch`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dogsketch {
    /// Bucket start, Unix seconds.
    pub ts: i64,
    /// Number of samples (weighted, truncated).
    pub cnt: i64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Running average.
    pub avg: f64,
    /// Sum of samples.
    pub sum: f64,
    /// Bin keys, ascending.
    pub keys: Vec<i32>,
    /// Bin counts, same length as `keys`.
    pub counts: Vec<u32>,
}

/// One distribution context with its closed buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchSeries {
    /// Metric name.
    pub name: String,
    /// Resolved host.
    pub host: String,
    /// Sorted, de-duplicated tags.
    pub tags: Vec<String>,
    /// One per closed bucket, ascending `ts`.
    pub dogsketches: Vec<Dogsketch>,
}

/// A service check ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck {
    /// Check name.
    pub check: String,
    /// Host name (may be empty).
    pub host_name: String,
    /// Unix seconds (0 already replaced by the queue time).
    pub timestamp: i64,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// Free text (may be empty).
    pub message: String,
    /// Sorted, de-duplicated; empty serializes as JSON `null`.
    pub tags: Vec<String>,
}

/// An event ready to send.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Unix seconds (0 already replaced by the queue time).
    pub timestamp: i64,
    /// `normal` / `low`, or empty to omit.
    pub priority: String,
    /// Host.
    pub host: String,
    /// Sorted, de-duplicated tags.
    pub tags: Vec<String>,
    /// `error` / `warning` / `info` / `success`, or empty to omit.
    pub alert_type: String,
    /// Aggregation key, empty to omit.
    pub aggregation_key: String,
    /// Source type name; events are grouped by it (`api` when empty).
    pub source_type_name: String,
    /// Agent-internal event type, empty to omit.
    pub event_type: String,
}
