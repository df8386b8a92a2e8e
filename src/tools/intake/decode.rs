//! Decompression and decoding of intake payloads into JSON.
//!
//! Why: tests and people inspect what edgestat sent without a protobuf
//! toolchain, so every known payload format is turned into plain JSON.
//!
//! Step 1, `Content-Encoding` (case-insensitive): `zstd`, `deflate` (zlib
//! stream, RFC 1950), `gzip` / `x-gzip` (multi-member), `lz4` (lz4 frame),
//! `identity` / empty / absent (raw). Anything else is an error and the raw
//! body is kept as base64. Output is capped at [`MAX_DECOMPRESSED_BYTES`].
//!
//! Step 2, by request path (exact match, query string ignored):
//!
//! * `/api/v2/series` (protobuf `MetricPayload`):
//!   ```json
//!   {"series":[{"resources":[{"type":"host","name":"h1"}],"metric":"m",
//!     "tags":["a:b"],"points":[{"timestamp":1700000000,"value":1.0}],
//!     "type":3,"type_name":"gauge","unit":"","source_type_name":"",
//!     "interval":10,
//!     "origin":{"product":10,"category":10,"service":0,"field3":0}}]}
//!   ```
//!   `type_name` is `unspecified`/`count`/`rate`/`gauge`/`unknown`.
//!   `origin` is `null` when the series has no `metadata` or no `origin`
//!   message; `field3` is origin field 3 (the Agent writes 9 for no-index
//!   series), `0` when absent. A non-finite point value becomes `null`.
//! * `/api/beta/sketches` (protobuf `SketchPayload`):
//!   ```json
//!   {"sketches":[{"metric":"lat","host":"h1","tags":["a:b"],
//!     "distributions":[],
//!     "dogsketches":[{"ts":1700000000,"cnt":2,"min":1.0,"max":3.0,
//!       "avg":2.0,"sum":4.0,"k":[1338,1409],"n":[1,1]}],
//!     "origin":{"product":10,"category":10,"service":0,"field3":0}}],
//!    "metadata":{"agent_version":"","timezone":"","current_epoch":0.0,
//!     "internal_ip":"","public_ip":"","api_key":""}}
//!   ```
//!   `metadata` is `null` when the payload has no field 2 (the Agent always
//!   writes it, empty); legacy `distributions` entries are
//!   `{"ts","cnt","min","max","avg","sum","v","g","delta","buf"}`.
//! * `/api/v1/series`, `/api/v1/check_run`, `/intake/` (JSON): the body is
//!   kept **verbatim** (byte-exact key order and number formatting) once it
//!   validates as JSON. Invalid UTF-8 inside (the Agent does not validate)
//!   is replaced by U+FFFD, with a `decode_error` saying so.
//! * `/api/v2/orch`, `/api/v1/orchestrator`, `/api/v2/orchmanif`
//!   (process-message framing):
//!   ```json
//!   {"version":3,"encoding":2,"type":41,"type_name":"CollectorPod",
//!    "subscription_id":0,"org_id":0,"timestamp":0,"body_bytes":57,
//!    "decompressed":true,"decompress_error":null,
//!    "collector":{"host_name":"n1","cluster_name":"c","cluster_id":"uid",
//!      "group_id":1,"group_size":1,"items":3,"tags":["t:1"]},
//!    "collector_error":null,"body_b64":"..."}
//!   ```
//!   For encodings 2, 4 and 5 `body_b64` is the zstd-decompressed protobuf
//!   (`decompressed: true`); for 0 (and 1) it is the body as sent. When zstd
//!   fails (e.g. the legacy pre-1.0 format of encoding 2) the compressed
//!   body is kept and `decompress_error` says why. `collector` is the
//!   envelope of the `Collector*` message, read schema-less by field number
//!   per message type (agent-payload `process` protos): `host_name` is `null` for types
//!   without one, `items` counts the resource list entries (1 for
//!   `CollectorCluster`); for manifests (80/81/82) it also carries
//!   `"manifests":[{"type":18,"resource_version":"","uid":"...",
//!   "content_bytes":123,"content_type":"json","version":"v1",
//!   "api_version":"apps/v1","kind":"Deployment"}]`. `collector` is `null`
//!   for unknown types or when the body is not protobuf; a malformed body
//!   sets `collector_error` (not `decode_error`).
//! * any other path: the body is kept verbatim when it is valid JSON,
//!   otherwise only as `body_b64` (not an error).
//!
//! Protobuf string fields are decoded as bytes and converted lossily
//! (U+FFFD) because the Agent's writer does not validate UTF-8 either.

use std::io::Read;

use base64::Engine as _;
use serde::Serialize;

/// Largest decompressed body accepted; protects against compression bombs.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------
// protobuf messages (datadog.agentpayload), hand-written prost derives
// ---------------------------------------------------------------------------

/// `MetricPayload` of `/api/v2/series`: a list of series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricPayload {
    /// Field 1: every series of the payload.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<MetricSeries>,
}

/// One series of a v2 series payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricSeries {
    /// Field 1: host first, then device, then extra resources.
    #[prost(message, repeated, tag = "1")]
    pub resources: Vec<Resource>,
    /// Field 2: metric name (bytes: UTF-8 is not guaranteed by the Agent).
    #[prost(bytes = "vec", tag = "2")]
    pub metric: Vec<u8>,
    /// Field 3: tags, one entry per tag.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub tags: Vec<Vec<u8>>,
    /// Field 4: points.
    #[prost(message, repeated, tag = "4")]
    pub points: Vec<MetricPoint>,
    /// Field 5: `MetricType` enum (0 unspecified, 1 count, 2 rate, 3 gauge).
    #[prost(int32, tag = "5")]
    pub r#type: i32,
    /// Field 6: unit (never written by the Agent).
    #[prost(bytes = "vec", tag = "6")]
    pub unit: Vec<u8>,
    /// Field 7: `System` for internal series.
    #[prost(bytes = "vec", tag = "7")]
    pub source_type_name: Vec<u8>,
    /// Field 8: interval in seconds.
    #[prost(int64, tag = "8")]
    pub interval: i64,
    /// Field 9: origin metadata.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<Metadata>,
}

/// `Resource` (`host`, `device`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Field 1: resource type.
    #[prost(bytes = "vec", tag = "1")]
    pub r#type: Vec<u8>,
    /// Field 2: resource name.
    #[prost(bytes = "vec", tag = "2")]
    pub name: Vec<u8>,
}

/// One point of a v2 series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricPoint {
    /// Field 1: value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Field 2: Unix seconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Series / sketch `Metadata`: only carries the origin.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// Field 1: origin.
    #[prost(message, optional, tag = "1")]
    pub origin: Option<Origin>,
}

/// `Origin` (product / category / service), plus reserved field 3 which the
/// Agent writes as 9 for no-index series — decoded so tests can see it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Origin {
    /// Field 3 (reserved in the proto, "metric type agent hidden" = 9).
    #[prost(uint32, optional, tag = "3")]
    pub field3: Option<u32>,
    /// Field 4: origin product.
    #[prost(uint32, tag = "4")]
    pub origin_product: u32,
    /// Field 5: origin category.
    #[prost(uint32, tag = "5")]
    pub origin_category: u32,
    /// Field 6: origin service.
    #[prost(uint32, tag = "6")]
    pub origin_service: u32,
}

/// `SketchPayload` of `/api/beta/sketches`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SketchPayload {
    /// Field 1: sketches.
    #[prost(message, repeated, tag = "1")]
    pub sketches: Vec<Sketch>,
    /// Field 2: common metadata (written empty by the Agent).
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<CommonMetadata>,
}

/// One sketch (a context with its 10 s buckets).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sketch {
    /// Field 1: metric name.
    #[prost(bytes = "vec", tag = "1")]
    pub metric: Vec<u8>,
    /// Field 2: host.
    #[prost(bytes = "vec", tag = "2")]
    pub host: Vec<u8>,
    /// Field 3: legacy distributions (never written by the Agent).
    #[prost(message, repeated, tag = "3")]
    pub distributions: Vec<Distribution>,
    /// Field 4: tags.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub tags: Vec<Vec<u8>>,
    /// Field 7: one DDSketch per bucket.
    #[prost(message, repeated, tag = "7")]
    pub dogsketches: Vec<Dogsketch>,
    /// Field 8: origin metadata.
    #[prost(message, optional, tag = "8")]
    pub metadata: Option<Metadata>,
}

/// Legacy `Distribution` (decoded for completeness).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Distribution {
    /// Field 1.
    #[prost(int64, tag = "1")]
    pub ts: i64,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub cnt: i64,
    /// Field 3.
    #[prost(double, tag = "3")]
    pub min: f64,
    /// Field 4.
    #[prost(double, tag = "4")]
    pub max: f64,
    /// Field 5.
    #[prost(double, tag = "5")]
    pub avg: f64,
    /// Field 6.
    #[prost(double, tag = "6")]
    pub sum: f64,
    /// Field 7.
    #[prost(double, repeated, packed = "true", tag = "7")]
    pub v: Vec<f64>,
    /// Field 8.
    #[prost(uint32, repeated, packed = "true", tag = "8")]
    pub g: Vec<u32>,
    /// Field 9.
    #[prost(uint32, repeated, packed = "true", tag = "9")]
    pub delta: Vec<u32>,
    /// Field 10.
    #[prost(double, repeated, packed = "true", tag = "10")]
    pub buf: Vec<f64>,
}

/// One DDSketch bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dogsketch {
    /// Field 1: bucket start, Unix seconds.
    #[prost(int64, tag = "1")]
    pub ts: i64,
    /// Field 2: count.
    #[prost(int64, tag = "2")]
    pub cnt: i64,
    /// Field 3.
    #[prost(double, tag = "3")]
    pub min: f64,
    /// Field 4.
    #[prost(double, tag = "4")]
    pub max: f64,
    /// Field 5.
    #[prost(double, tag = "5")]
    pub avg: f64,
    /// Field 6.
    #[prost(double, tag = "6")]
    pub sum: f64,
    /// Field 7: bin keys, zig-zag packed.
    #[prost(sint32, repeated, packed = "true", tag = "7")]
    pub k: Vec<i32>,
    /// Field 8: bin counts, packed.
    #[prost(uint32, repeated, packed = "true", tag = "8")]
    pub n: Vec<u32>,
}

/// `CommonMetadata` of a sketch payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommonMetadata {
    /// Field 1.
    #[prost(bytes = "vec", tag = "1")]
    pub agent_version: Vec<u8>,
    /// Field 2.
    #[prost(bytes = "vec", tag = "2")]
    pub timezone: Vec<u8>,
    /// Field 3.
    #[prost(double, tag = "3")]
    pub current_epoch: f64,
    /// Field 4.
    #[prost(bytes = "vec", tag = "4")]
    pub internal_ip: Vec<u8>,
    /// Field 5.
    #[prost(bytes = "vec", tag = "5")]
    pub public_ip: Vec<u8>,
    /// Field 6.
    #[prost(bytes = "vec", tag = "6")]
    pub api_key: Vec<u8>,
}

// ---------------------------------------------------------------------------
// decompression
// ---------------------------------------------------------------------------

/// Why a body could not be decompressed or decoded; its text is what the
/// intake stores as the record's `decode_error`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A `Content-Encoding` this intake does not know.
    #[error("unsupported content-encoding: {0:?}")]
    UnsupportedEncoding(String),
    /// The decompressor failed.
    #[error("{what}: {source}")]
    Decompress {
        /// Which compression.
        what: &'static str,
        /// The decompressor's error.
        source: std::io::Error,
    },
    /// The body decompresses to more than [`MAX_DECOMPRESSED_BYTES`].
    #[error("{what}: decompressed body exceeds {MAX_DECOMPRESSED_BYTES} bytes")]
    TooLarge {
        /// Which compression.
        what: &'static str,
    },
    /// A protobuf body is malformed at the wire level.
    #[error("protobuf: {0}")]
    Wire(&'static str),
    /// A protobuf field uses a wire type this scanner does not read.
    #[error("protobuf: unsupported wire type {0}")]
    WireType(u64),
    /// A protobuf body does not match its message type.
    #[error("protobuf {message}: {source}")]
    Protobuf {
        /// The expected message.
        message: &'static str,
        /// prost's error.
        source: prost::DecodeError,
    },
    /// A process message shorter than its header.
    #[error("process message: {len} bytes, shorter than the {PROCESS_MESSAGE_HEADER_LEN}-byte header")]
    ShortProcessMessage {
        /// Its length.
        len: usize,
    },
}

/// Decompresses `body` according to a `Content-Encoding` header value.
pub fn decompress(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase()).unwrap_or_default();
    match enc.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "zstd" => match zstd::stream::read::Decoder::new(body) {
            Ok(d) => read_capped(d, "zstd"),
            Err(source) => Err(DecodeError::Decompress { what: "zstd", source }),
        },
        "deflate" => read_capped(flate2::read::ZlibDecoder::new(body), "deflate (zlib)"),
        "gzip" | "x-gzip" => read_capped(flate2::read::MultiGzDecoder::new(body), "gzip"),
        "lz4" => read_capped(lz4_flex::frame::FrameDecoder::new(body), "lz4 frame"),
        other => Err(DecodeError::UnsupportedEncoding(other.to_string())),
    }
}

/// Decompresses a standalone zstd stream (orchestrator bodies), capped.
pub fn zstd_decompress(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match zstd::stream::read::Decoder::new(body) {
        Ok(d) => read_capped(d, "zstd"),
        Err(source) => Err(DecodeError::Decompress { what: "zstd", source }),
    }
}

fn read_capped<R: Read>(r: R, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut limited = r.take(MAX_DECOMPRESSED_BYTES as u64 + 1);
    match limited.read_to_end(&mut out) {
        Ok(_) if out.len() > MAX_DECOMPRESSED_BYTES => Err(DecodeError::TooLarge { what }),
        Ok(_) => Ok(out),
        Err(source) => Err(DecodeError::Decompress { what, source }),
    }
}

// ---------------------------------------------------------------------------
// decoding by path
// ---------------------------------------------------------------------------

/// Result of decoding one (already decompressed) body.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Serialized JSON value for the record's `body` field; `None` → `null`.
    pub body_json: Option<Vec<u8>>,
    /// Why decoding failed (or was lossy).
    pub error: Option<String>,
    /// Whether the record should carry `body_b64` of the raw bytes.
    pub keep_b64: bool,
}

/// The payload formats this intake knows, chosen by request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/api/v2/series`.
    SeriesV2,
    /// `/api/beta/sketches`.
    Sketches,
    /// `/api/v1/series`, `/api/v1/check_run`, `/intake/`.
    Json,
    /// `/api/v2/orch`, `/api/v1/orchestrator`, `/api/v2/orchmanif`.
    ProcessMessage,
    /// Anything else.
    Unknown,
}

/// Maps a request path to its payload format.
pub fn format_for_path(path: &str) -> Format {
    match path {
        "/api/v2/series" => Format::SeriesV2,
        "/api/beta/sketches" => Format::Sketches,
        "/api/v1/series" | "/api/v1/check_run" | "/intake/" => Format::Json,
        "/api/v2/orch" | "/api/v1/orchestrator" | "/api/v2/orchmanif" => Format::ProcessMessage,
        _ => Format::Unknown,
    }
}

/// Decodes a decompressed body for `path` into JSON (see module docs).
pub fn decode_body(path: &str, data: &[u8]) -> Decoded {
    match format_for_path(path) {
        Format::SeriesV2 => match <MetricPayload as prost::Message>::decode(data) {
            Ok(p) => ok_json(&series_json(&p)),
            Err(source) => fail(DecodeError::Protobuf { message: "MetricPayload", source }.to_string()),
        },
        Format::Sketches => match <SketchPayload as prost::Message>::decode(data) {
            Ok(p) => ok_json(&sketches_json(&p)),
            Err(source) => fail(DecodeError::Protobuf { message: "SketchPayload", source }.to_string()),
        },
        Format::Json => decode_json(data, true),
        Format::ProcessMessage => match process_message_json(data) {
            Ok(v) => ok_json(&v),
            Err(e) => fail(e.to_string()),
        },
        Format::Unknown => decode_json(data, false),
    }
}

fn ok_json<T: Serialize>(v: &T) -> Decoded {
    match serde_json::to_vec(v) {
        Ok(bytes) => Decoded { body_json: Some(bytes), error: None, keep_b64: false },
        Err(e) => fail(format!("json encoding: {e}")),
    }
}

fn fail(error: String) -> Decoded {
    Decoded { body_json: None, error: Some(error), keep_b64: true }
}

/// Keeps valid JSON verbatim; repairs invalid UTF-8 lossily (flagged).
fn decode_json(data: &[u8], known: bool) -> Decoded {
    // UTF-8 is checked explicitly: serde_json skips ignored strings without
    // validating them, and the stored record must stay valid UTF-8.
    let err = match std::str::from_utf8(data) {
        Ok(text) => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => return Decoded { body_json: Some(data.to_vec()), error: None, keep_b64: false },
            Err(e) => format!("json: {e}"),
        },
        Err(_) => {
            let lossy = String::from_utf8_lossy(data).into_owned();
            match serde_json::from_str::<serde::de::IgnoredAny>(&lossy) {
                Ok(_) => {
                    return Decoded {
                        body_json: Some(lossy.into_bytes()),
                        error: Some("json: invalid UTF-8 replaced with U+FFFD".to_string()),
                        keep_b64: true,
                    }
                }
                Err(e) => format!("json: {e}"),
            }
        }
    };
    if known {
        fail(err)
    } else {
        Decoded { body_json: None, error: None, keep_b64: true }
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// JSON shape of a v2 series resource.
#[derive(Serialize)]
struct ResourceJson {
    r#type: String,
    name: String,
}

#[derive(Serialize)]
struct PointJson {
    timestamp: i64,
    value: Option<f64>,
}

#[derive(Serialize)]
struct OriginJson {
    product: u32,
    category: u32,
    service: u32,
    field3: u32,
}

#[derive(Serialize)]
struct SeriesJson {
    resources: Vec<ResourceJson>,
    metric: String,
    tags: Vec<String>,
    points: Vec<PointJson>,
    r#type: i32,
    type_name: &'static str,
    unit: String,
    source_type_name: String,
    interval: i64,
    origin: Option<OriginJson>,
}

#[derive(Serialize)]
struct SeriesPayloadJson {
    series: Vec<SeriesJson>,
}

/// Name of a `MetricType` enum value.
pub fn metric_type_name(t: i32) -> &'static str {
    match t {
        0 => "unspecified",
        1 => "count",
        2 => "rate",
        3 => "gauge",
        _ => "unknown",
    }
}

fn finite(v: f64) -> Option<f64> {
    if v.is_finite() {
        Some(v)
    } else {
        None
    }
}

fn origin_json(m: &Option<Metadata>) -> Option<OriginJson> {
    let o = m.as_ref()?.origin.as_ref()?;
    Some(OriginJson {
        product: o.origin_product,
        category: o.origin_category,
        service: o.origin_service,
        field3: o.field3.unwrap_or(0),
    })
}

fn series_json(p: &MetricPayload) -> SeriesPayloadJson {
    SeriesPayloadJson {
        series: p
            .series
            .iter()
            .map(|se| SeriesJson {
                resources: se
                    .resources
                    .iter()
                    .map(|r| ResourceJson { r#type: s(&r.r#type), name: s(&r.name) })
                    .collect(),
                metric: s(&se.metric),
                tags: se.tags.iter().map(|t| s(t)).collect(),
                points: se
                    .points
                    .iter()
                    .map(|pt| PointJson { timestamp: pt.timestamp, value: finite(pt.value) })
                    .collect(),
                r#type: se.r#type,
                type_name: metric_type_name(se.r#type),
                unit: s(&se.unit),
                source_type_name: s(&se.source_type_name),
                interval: se.interval,
                origin: origin_json(&se.metadata),
            })
            .collect(),
    }
}

#[derive(Serialize)]
struct DogsketchJson {
    ts: i64,
    cnt: i64,
    min: Option<f64>,
    max: Option<f64>,
    avg: Option<f64>,
    sum: Option<f64>,
    k: Vec<i32>,
    n: Vec<u32>,
}

#[derive(Serialize)]
struct DistributionJson {
    ts: i64,
    cnt: i64,
    min: Option<f64>,
    max: Option<f64>,
    avg: Option<f64>,
    sum: Option<f64>,
    v: Vec<Option<f64>>,
    g: Vec<u32>,
    delta: Vec<u32>,
    buf: Vec<Option<f64>>,
}

#[derive(Serialize)]
struct SketchJson {
    metric: String,
    host: String,
    tags: Vec<String>,
    distributions: Vec<DistributionJson>,
    dogsketches: Vec<DogsketchJson>,
    origin: Option<OriginJson>,
}

#[derive(Serialize)]
struct CommonMetadataJson {
    agent_version: String,
    timezone: String,
    current_epoch: Option<f64>,
    internal_ip: String,
    public_ip: String,
    api_key: String,
}

#[derive(Serialize)]
struct SketchPayloadJson {
    sketches: Vec<SketchJson>,
    metadata: Option<CommonMetadataJson>,
}

fn sketches_json(p: &SketchPayload) -> SketchPayloadJson {
    SketchPayloadJson {
        sketches: p
            .sketches
            .iter()
            .map(|sk| SketchJson {
                metric: s(&sk.metric),
                host: s(&sk.host),
                tags: sk.tags.iter().map(|t| s(t)).collect(),
                distributions: sk
                    .distributions
                    .iter()
                    .map(|d| DistributionJson {
                        ts: d.ts,
                        cnt: d.cnt,
                        min: finite(d.min),
                        max: finite(d.max),
                        avg: finite(d.avg),
                        sum: finite(d.sum),
                        v: d.v.iter().map(|x| finite(*x)).collect(),
                        g: d.g.clone(),
                        delta: d.delta.clone(),
                        buf: d.buf.iter().map(|x| finite(*x)).collect(),
                    })
                    .collect(),
                dogsketches: sk
                    .dogsketches
                    .iter()
                    .map(|d| DogsketchJson {
                        ts: d.ts,
                        cnt: d.cnt,
                        min: finite(d.min),
                        max: finite(d.max),
                        avg: finite(d.avg),
                        sum: finite(d.sum),
                        k: d.k.clone(),
                        n: d.n.clone(),
                    })
                    .collect(),
                origin: origin_json(&sk.metadata),
            })
            .collect(),
        metadata: p.metadata.as_ref().map(|m| CommonMetadataJson {
            agent_version: s(&m.agent_version),
            timezone: s(&m.timezone),
            current_epoch: finite(m.current_epoch),
            internal_ip: s(&m.internal_ip),
            public_ip: s(&m.public_ip),
            api_key: s(&m.api_key),
        }),
    }
}

// ---------------------------------------------------------------------------
// orchestrator process messages
// ---------------------------------------------------------------------------

/// Size of the agent-payload process-message header.
pub const PROCESS_MESSAGE_HEADER_LEN: usize = 16;

/// Name of an agent-payload message type id (header byte 2).
pub fn message_type_name(t: u8) -> &'static str {
    match t {
        12 => "CollectorProc",
        22 => "CollectorConnections",
        23 => "ResCollector",
        27 => "CollectorRealTime",
        39 => "CollectorContainer",
        40 => "CollectorContainerRealTime",
        41 => "CollectorPod",
        42 => "CollectorReplicaSet",
        43 => "CollectorDeployment",
        44 => "CollectorService",
        45 => "CollectorNode",
        46 => "CollectorCluster",
        47 => "CollectorJob",
        48 => "CollectorCronJob",
        49 => "CollectorDaemonSet",
        50 => "CollectorStatefulSet",
        51 => "CollectorPersistentVolume",
        52 => "CollectorPersistentVolumeClaim",
        53 => "CollectorProcDiscovery",
        54 => "CollectorRole",
        55 => "CollectorRoleBinding",
        56 => "CollectorClusterRole",
        57 => "CollectorClusterRoleBinding",
        58 => "CollectorServiceAccount",
        59 => "CollectorIngress",
        60 => "CollectorProcEvent",
        61 => "CollectorNamespace",
        80 => "CollectorManifest",
        81 => "CollectorManifestCRD",
        82 => "CollectorManifestCR",
        83 => "CollectorVerticalPodAutoscaler",
        84 => "CollectorHorizontalPodAutoscaler",
        85 => "CollectorNetworkPolicy",
        86 => "CollectorLimitRange",
        87 => "CollectorStorageClass",
        88 => "CollectorPodDisruptionBudget",
        200 => "CollectorECSTask",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct ProcessMessageJson {
    version: u8,
    encoding: u8,
    r#type: u8,
    type_name: &'static str,
    subscription_id: u8,
    org_id: i32,
    timestamp: i64,
    body_bytes: usize,
    decompressed: bool,
    decompress_error: Option<String>,
    collector: Option<CollectorJson>,
    collector_error: Option<String>,
    body_b64: String,
}

fn process_message_json(data: &[u8]) -> Result<ProcessMessageJson, DecodeError> {
    if data.len() < PROCESS_MESSAGE_HEADER_LEN {
        return Err(DecodeError::ShortProcessMessage { len: data.len() });
    }
    let (hdr, body) = data.split_at(PROCESS_MESSAGE_HEADER_LEN);
    let org_id = i32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let timestamp = i64::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15]]);
    let encoding = hdr[1];
    let (out, decompressed, decompress_error) = match encoding {
        2 | 4 | 5 => match zstd_decompress(body) {
            Ok(d) => (d, true, None),
            Err(e) => (body.to_vec(), false, Some(e.to_string())),
        },
        _ => (body.to_vec(), false, None),
    };
    let is_protobuf = matches!(encoding, 0) || decompressed;
    let (collector, collector_error) = if is_protobuf {
        match collector_json(hdr[2], &out) {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    Ok(ProcessMessageJson {
        version: hdr[0],
        encoding,
        r#type: hdr[2],
        type_name: message_type_name(hdr[2]),
        subscription_id: hdr[3],
        org_id,
        timestamp,
        body_bytes: body.len(),
        decompressed,
        decompress_error,
        collector,
        collector_error,
        body_b64: base64::engine::general_purpose::STANDARD.encode(out),
    })
}

/// One top-level protobuf field as found on the wire.
#[derive(Debug, Clone, Copy)]
enum WireVal<'a> {
    Varint(u64),
    Fixed64,
    Fixed32,
    Len(&'a [u8]),
}

fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *data.get(*pos).ok_or(DecodeError::Wire("truncated varint"))?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(DecodeError::Wire("varint overflow"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Wire("varint too long"))
}

/// Schema-less scan of one message level (wire types 0, 1, 2, 5).
fn scan_fields(data: &[u8]) -> Result<Vec<(u64, WireVal<'_>)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let key = read_varint(data, &mut pos)?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::Wire("field number 0"));
        }
        let v = match key & 7 {
            0 => WireVal::Varint(read_varint(data, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= data.len()).ok_or(DecodeError::Wire("truncated fixed64"))?;
                WireVal::Fixed64
            }
            2 => {
                let len = read_varint(data, &mut pos)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|e| *e <= data.len())
                    .ok_or(DecodeError::Wire("truncated length-delimited field"))?;
                let v = WireVal::Len(&data[pos..end]);
                pos = end;
                v
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= data.len()).ok_or(DecodeError::Wire("truncated fixed32"))?;
                WireVal::Fixed32
            }
            w => return Err(DecodeError::WireType(w)),
        };
        out.push((field, v));
    }
    Ok(out)
}

/// Envelope of an orchestrator `Collector*` message (the fields a forwarder
/// test cares about; the resources themselves are only counted).
#[derive(Serialize, Default)]
struct CollectorJson {
    host_name: Option<String>,
    cluster_name: String,
    cluster_id: String,
    group_id: i64,
    group_size: i64,
    items: usize,
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifests: Option<Vec<ManifestJson>>,
}

#[derive(Serialize, Default)]
struct ManifestJson {
    r#type: i64,
    resource_version: String,
    uid: String,
    content_bytes: usize,
    content_type: String,
    version: String,
    api_version: String,
    kind: String,
}

/// Which field numbers hold what, per message type.
struct EnvelopeLayout {
    host_name: Option<u64>,
    cluster_name: u64,
    cluster_id: u64,
    group_id: u64,
    group_size: u64,
    items: u64,
    tags: u64,
}

fn layout_for(msg_type: u8) -> Option<EnvelopeLayout> {
    let common = EnvelopeLayout {
        host_name: None,
        cluster_name: 1,
        cluster_id: 2,
        group_id: 3,
        group_size: 4,
        items: 5,
        tags: 6,
    };
    Some(match msg_type {
        41 => EnvelopeLayout {
            host_name: Some(1),
            cluster_name: 2,
            cluster_id: 3,
            group_id: 4,
            group_size: 5,
            items: 6,
            tags: 8,
        },
        42..=52 | 54..=59 | 61 | 83..=87 => common,
        80 => EnvelopeLayout { host_name: Some(7), ..common },
        88 => EnvelopeLayout { group_size: 6, items: 4, tags: 5, ..common },
        200 => EnvelopeLayout {
            host_name: Some(10),
            cluster_name: 2,
            cluster_id: 3,
            group_id: 5,
            group_size: 6,
            items: 7,
            tags: 8,
        },
        _ => return None,
    })
}

fn collector_json(msg_type: u8, data: &[u8]) -> Result<Option<CollectorJson>, DecodeError> {
    // CRD / CR manifests wrap a CollectorManifest in field 1, tags in 2.
    if msg_type == 81 || msg_type == 82 {
        let mut inner = None;
        let mut tags = Vec::new();
        for (f, v) in scan_fields(data)? {
            match (f, v) {
                (1, WireVal::Len(b)) => inner = collector_json(80, b)?,
                (2, WireVal::Len(b)) => tags.push(s(b)),
                _ => {}
            }
        }
        let mut c = inner.unwrap_or_default();
        c.tags.extend(tags);
        return Ok(Some(c));
    }
    let Some(l) = layout_for(msg_type) else {
        return Ok(None);
    };
    let mut c = CollectorJson::default();
    let mut manifests = Vec::new();
    for (f, v) in scan_fields(data)? {
        match v {
            WireVal::Len(b) => {
                if Some(f) == l.host_name {
                    c.host_name = Some(s(b));
                } else if f == l.cluster_name {
                    c.cluster_name = s(b);
                } else if f == l.cluster_id {
                    c.cluster_id = s(b);
                } else if f == l.tags {
                    c.tags.push(s(b));
                } else if f == l.items {
                    c.items += 1;
                    if msg_type == 80 {
                        manifests.push(manifest_json(b)?);
                    }
                }
            }
            WireVal::Varint(n) => {
                // int32 fields: negative values are sign-extended varints.
                if f == l.group_id {
                    c.group_id = n as i64;
                } else if f == l.group_size {
                    c.group_size = n as i64;
                }
            }
            _ => {}
        }
    }
    if msg_type == 80 {
        c.manifests = Some(manifests);
    }
    Ok(Some(c))
}

fn manifest_json(data: &[u8]) -> Result<ManifestJson, DecodeError> {
    let mut m = ManifestJson::default();
    for (f, v) in scan_fields(data)? {
        match (f, v) {
            (1, WireVal::Varint(n)) => m.r#type = n as i64,
            (2, WireVal::Len(b)) => m.resource_version = s(b),
            (3, WireVal::Len(b)) => m.uid = s(b),
            (4, WireVal::Len(b)) => m.content_bytes = b.len(),
            (5, WireVal::Len(b)) => m.content_type = s(b),
            (6, WireVal::Len(b)) => m.version = s(b),
            (9, WireVal::Len(b)) => m.api_version = s(b),
            (11, WireVal::Len(b)) => m.kind = s(b),
            _ => {}
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A series v2 payload written by the Agent, as hex.
    pub const SERIES_HEX: &str = "0a310a0a0a04686f737412026831\
        12016d1a03613a622803400a\
        220f1080e2cfaa0609000000000000f03f\
        4a060a04200a280a";

    fn unhex(h: &str) -> Vec<u8> {
        let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    }

    fn val(d: &Decoded) -> serde_json::Value {
        serde_json::from_slice(d.body_json.as_ref().expect("body")).unwrap()
    }

    #[test]
    fn series_example_decodes() {
        let d = decode_body("/api/v2/series", &unhex(SERIES_HEX));
        assert!(d.error.is_none(), "{:?}", d.error);
        let v = val(&d);
        let expect = serde_json::json!({"series":[{"resources":[{"type":"host","name":"h1"}],
            "metric":"m","tags":["a:b"],"points":[{"timestamp":1700000000i64,"value":1.0}],
            "type":3,"type_name":"gauge","unit":"","source_type_name":"","interval":10,
            "origin":{"product":10,"category":10,"service":0,"field3":0}}]});
        assert_eq!(v, expect);
    }

    #[test]
    fn origin_field3_visible() {
        // metadata{origin{field3 9, product 10}}
        let d = decode_body("/api/v2/series", &unhex("0a0b 12016d 4a06 0a04 1809 200a"));
        let v = val(&d);
        assert_eq!(v["series"][0]["origin"]["field3"], 9);
        assert_eq!(v["series"][0]["origin"]["product"], 10);
    }

    #[test]
    fn sketch_example_decodes() {
        let hex = "0a4e 0a036c6174 12026831 2203613a62 3a36 0880e2cfaa06 1002
            19000000000000f03f 210000000000000840 290000000000000040 310000000000001040
            3a04f4148216 42020101 42060a04200a280a 1200";
        let d = decode_body("/api/beta/sketches", &unhex(hex));
        assert!(d.error.is_none(), "{:?}", d.error);
        let v = val(&d);
        let sk = &v["sketches"][0];
        assert_eq!(sk["metric"], "lat");
        assert_eq!(sk["dogsketches"][0]["k"], serde_json::json!([1338, 1409]));
        assert_eq!(sk["dogsketches"][0]["n"], serde_json::json!([1, 1]));
        assert_eq!(sk["dogsketches"][0]["sum"], 4.0);
        assert_eq!(v["metadata"]["agent_version"], "");
    }

    #[test]
    fn garbage_protobuf_is_an_error_not_a_panic() {
        for junk in [&b"\xff\xff\xff"[..], b"\x0a\xff", b"\x0a\x05\x01"] {
            let d = decode_body("/api/v2/series", junk);
            assert!(d.error.is_some());
            assert!(d.keep_b64);
            let d = decode_body("/api/beta/sketches", junk);
            assert!(d.error.is_some());
        }
    }

    #[test]
    fn invalid_utf8_in_strings_is_lossy() {
        let d = decode_body("/api/v2/series", &unhex("0a03 1201ff"));
        assert!(d.error.is_none());
        assert_eq!(val(&d)["series"][0]["metric"], "\u{fffd}");
    }

    #[test]
    fn json_kept_verbatim() {
        let raw = br#"{"series":[{"metric":"x","points":[[1,1]],"tags":[],"host":"","type":"gauge","interval":0}]}"#;
        let d = decode_body("/api/v1/series", raw);
        assert_eq!(d.body_json.as_deref(), Some(&raw[..]));
        let d = decode_body("/api/v1/check_run", b"[{");
        assert!(d.error.is_some());
        let d = decode_body("/intake/", b"{\"a\":\"\xff\"}");
        assert!(d.error.is_some());
        assert_eq!(val(&d)["a"], "\u{fffd}");
    }

    #[test]
    fn decompress_all_encodings() {
        let raw = b"hello hello hello".to_vec();
        let z = zstd::encode_all(&raw[..], 1).unwrap();
        assert_eq!(decompress(Some("zstd"), &z).unwrap(), raw);
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&raw).unwrap();
        assert_eq!(decompress(Some("Deflate"), &e.finish().unwrap()).unwrap(), raw);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&raw).unwrap();
        assert_eq!(decompress(Some("gzip"), &e.finish().unwrap()).unwrap(), raw);
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(&raw).unwrap();
        assert_eq!(decompress(Some("lz4"), &e.finish().unwrap()).unwrap(), raw);
        assert_eq!(decompress(None, &raw).unwrap(), raw);
        assert_eq!(decompress(Some("identity"), &raw).unwrap(), raw);
        assert!(decompress(Some("br"), &raw).is_err());
        assert!(decompress(Some("zstd"), b"not zstd").is_err());
        assert!(decompress(Some("gzip"), b"not gzip").is_err());
        assert!(decompress(Some("lz4"), b"not lz4").is_err());
        assert!(decompress(Some("deflate"), b"not zlib").is_err());
    }

    #[test]
    fn process_message_header_and_zstd_body() {
        let inner = b"\x0a\x03abc".to_vec();
        let mut msg = vec![3u8, 4, 41, 0, 7, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0];
        msg.extend(zstd::encode_all(&inner[..], 1).unwrap());
        let d = decode_body("/api/v2/orch", &msg);
        assert!(d.error.is_none());
        let v = val(&d);
        assert_eq!(v["version"], 3);
        assert_eq!(v["encoding"], 4);
        assert_eq!(v["type"], 41);
        assert_eq!(v["type_name"], "CollectorPod");
        assert_eq!(v["org_id"], 7);
        assert_eq!(v["timestamp"], 16);
        assert_eq!(v["decompressed"], true);
        let b = base64::engine::general_purpose::STANDARD.decode(v["body_b64"].as_str().unwrap()).unwrap();
        assert_eq!(b, inner);
        // raw (encoding 0)
        let mut raw = vec![3u8, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        raw.extend(&inner);
        let v = val(&decode_body("/api/v2/orchmanif", &raw));
        assert_eq!(v["decompressed"], false);
        assert_eq!(v["type_name"], "CollectorManifest");
        // short
        assert!(decode_body("/api/v1/orchestrator", b"\x03\x02").error.is_some());
        // bad zstd body: kept, flagged
        let mut bad = vec![3u8, 2, 41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        bad.extend(b"junk");
        let v = val(&decode_body("/api/v2/orch", &bad));
        assert!(v["decompress_error"].is_string());
    }

    #[test]
    fn collector_envelopes() {
        // CollectorDeployment: clusterName "c", clusterId "id", groupId 1, groupSize 2,
        // two deployments, tag "t:1".
        let body = unhex("0a0163 12026964 1801 2002 2a00 2a00 2a0174 3203743a31");
        let mut msg = vec![3u8, 0, 43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        msg.extend(&body);
        let v = val(&decode_body("/api/v2/orch", &msg));
        let c = &v["collector"];
        assert_eq!(c["cluster_name"], "c");
        assert_eq!(c["cluster_id"], "id");
        assert_eq!(c["group_id"], 1);
        assert_eq!(c["group_size"], 2);
        assert_eq!(c["items"], 3);
        assert_eq!(c["tags"], serde_json::json!(["t:1"]));
        assert_eq!(c["host_name"], serde_json::Value::Null);
        // CollectorManifest with one manifest {type 18, uid "u", kind "Deployment"}, host "h".
        let man = unhex("0812 1a0175 5a0a4465706c6f796d656e74");
        let mut body = unhex("0a0163 2a");
        body.push(man.len() as u8);
        body.extend(&man);
        body.extend(unhex("3a0168"));
        let mut msg = vec![3u8, 4, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        msg.extend(zstd::encode_all(&body[..], 1).unwrap());
        let v = val(&decode_body("/api/v2/orchmanif", &msg));
        let c = &v["collector"];
        assert_eq!(c["host_name"], "h");
        assert_eq!(c["manifests"][0]["kind"], "Deployment");
        assert_eq!(c["manifests"][0]["type"], 18);
        assert_eq!(c["manifests"][0]["uid"], "u");
        // Garbage protobuf: flagged, not fatal.
        let mut msg = vec![3u8, 0, 43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        msg.extend(b"\x0a\xff");
        let d = decode_body("/api/v2/orch", &msg);
        assert!(d.error.is_none());
        assert!(val(&d)["collector_error"].is_string());
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let paths =
            ["/api/v2/series", "/api/beta/sketches", "/api/v1/series", "/api/v2/orch", "/api/v2/orchmanif", "/other"];
        for i in 0..3000 {
            let len = (next() % 200) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 3 == 0 && data.len() > 3 {
                // Orchestrator-looking header with a known type.
                data[0] = 3;
                data[1] = [0u8, 2, 4][i % 3];
                data[2] = [41u8, 43, 80, 81, 88, 200][i % 6];
            }
            for p in paths {
                let d = decode_body(p, &data);
                if let Some(b) = d.body_json {
                    assert!(std::str::from_utf8(&b).is_ok());
                }
            }
            for enc in ["zstd", "deflate", "gzip", "lz4"] {
                let _ = decompress(Some(enc), &data);
            }
        }
    }
}
