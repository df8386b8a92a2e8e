//! Typed configuration of `edgestat run`, read once at start and validated.
//!
//! Keys are the Datadog Agent's `datadog.yaml` keys; the environment form is
//! `DD_` + the key upper-cased with dots turned into underscores. Project-only
//! knobs are `EDGESTAT_*` environment variables (documented in `tuning/`).
//! The environment wins over the YAML file.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::aggregator::HistogramAggregate;
use crate::core::serializer::Compression;

/// A configuration value that cannot be used; printed as the one line on
/// stderr before exiting with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key as the user wrote it (env name or yaml key).
    pub key: String,
    /// The offending value.
    pub value: String,
    /// What was expected.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}={:?}: expected {}", self.key, self.value, self.expected)
    }
}

impl std::error::Error for ConfigError {}

/// How `EDGESTAT_MEMORY_LIMIT` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimitSetting {
    /// `0` or `off`: no limit (the estimate is still reported).
    Off,
    /// An explicit number of bytes.
    Bytes(u64),
    /// Unset: `memory_limit::HOST_SHARE_PERCENT` (50 %) of the host's or cgroup's memory.
    Host,
}

/// Parses `EDGESTAT_MEMORY_LIMIT`; `None` when the value is not a byte
/// count or `off`.
pub fn parse_memory_limit(v: &str) -> Option<MemoryLimitSetting> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") {
        return Some(MemoryLimitSetting::Off);
    }
    match v.parse::<u64>().ok()? {
        0 => Some(MemoryLimitSetting::Off),
        n => Some(MemoryLimitSetting::Bytes(n)),
    }
}

/// How TLS server certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `DD_SKIP_SSL_VALIDATION`: accept any certificate.
    pub skip_validation: bool,
    /// `SSL_CERT_FILE`: extra PEM roots added to the system roots.
    pub extra_roots_file: Option<PathBuf>,
}

/// Where payloads are shipped.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL without trailing slash (`https://host:port`).
    pub base_url: String,
    /// API keys; one transaction per key. Empty: one transaction, no key.
    pub api_keys: Vec<String>,
}

/// Keys redacted, so a debug print of the configuration leaks none.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.api_keys.iter().map(|k| crate::core::redact::key(k)).collect();
        f.debug_struct("Endpoint").field("base_url", &self.base_url).field("api_keys", &keys).finish()
    }
}

/// Everything `edgestat run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DD_HOSTNAME` or the system hostname.
    pub hostname: String,
    /// Main metrics endpoint; `None` = embedded local intake.
    pub endpoint: Option<Endpoint>,
    /// `DD_ADDITIONAL_ENDPOINTS`.
    pub additional_endpoints: Vec<Endpoint>,
    /// `DD_ORCHESTRATOR_EXPLORER_ORCHESTRATOR_DD_URL`.
    pub orchestrator_dd_url: Option<String>,
    /// `DD_ORCHESTRATOR_EXPLORER_USE_LEGACY_ENDPOINT`.
    pub orchestrator_use_legacy_endpoint: bool,
    /// UDP listen address; `None` when `DD_DOGSTATSD_PORT=0`.
    pub udp_addr: Option<SocketAddr>,
    /// `DD_DOGSTATSD_SOCKET`.
    pub unix_socket: Option<PathBuf>,
    /// `DD_DOGSTATSD_BUFFER_SIZE`: largest datagram read.
    pub buffer_size_bytes: usize,
    /// `DD_DOGSTATSD_SO_RCVBUF`; 0 = OS default.
    pub so_rcvbuf_bytes: usize,
    /// `DD_DOGSTATSD_TAGS`, sorted and de-duplicated once.
    pub dogstatsd_tags: Vec<String>,
    /// `DD_DOGSTATSD_EXPIRY_SECONDS`.
    pub expiry_seconds: i64,
    /// `DD_DOGSTATSD_CONTEXT_EXPIRY_SECONDS`.
    pub context_expiry_seconds: i64,
    /// `DD_HISTOGRAM_AGGREGATES`, valid names only, configured order.
    pub histogram_aggregates: Vec<HistogramAggregate>,
    /// `DD_HISTOGRAM_PERCENTILES` as integers 0..=100, ascending.
    pub histogram_percentiles: Vec<u32>,
    /// `DD_STATSD_METRIC_NAMESPACE` with its trailing dot, or empty.
    pub metric_namespace: String,
    /// `DD_STATSD_METRIC_NAMESPACE_BLACKLIST`.
    pub metric_namespace_blacklist: Vec<String>,
    /// The blocklist: `metric_filterlist`, or `statsd_metric_blocklist` when that is empty.
    pub metric_blocklist: Vec<String>,
    /// Prefix matching for [`Self::metric_blocklist`].
    pub metric_blocklist_match_prefix: bool,
    /// `DD_USE_V2_API_SERIES`.
    pub use_v2_api_series: bool,
    /// `DD_ENABLE_PAYLOADS_SERIES`.
    pub enable_series: bool,
    /// `DD_ENABLE_PAYLOADS_EVENTS`.
    pub enable_events: bool,
    /// `DD_ENABLE_PAYLOADS_SERVICE_CHECKS`.
    pub enable_service_checks: bool,
    /// `DD_ENABLE_PAYLOADS_SKETCHES`.
    pub enable_sketches: bool,
    /// Payload limits and compressor.
    pub serializer: crate::core::serializer::SerializerConfig,
    /// `DD_LOG_PAYLOADS`.
    pub log_payloads: bool,
    /// `DD_LOG_LEVEL`.
    pub log_level: String,
    /// `EDGESTAT_LOG_FORMAT`: `text` or `json`.
    pub log_format: crate::agent::logging::LogFormat,
    /// TLS trust settings.
    pub tls: TlsSettings,
    /// `DD_FORWARDER_TIMEOUT`.
    pub forwarder_timeout: Duration,
    /// `DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`.
    pub retry_queue_max_bytes: usize,
    /// `DD_FORWARDER_STORAGE_PATH`.
    pub storage_path: Option<PathBuf>,
    /// `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`.
    pub storage_max_bytes: u64,
    /// `EDGESTAT_SHARDS`.
    pub shards: usize,
    /// `EDGESTAT_FLUSH_INTERVAL`.
    pub flush_interval: Duration,
    /// `EDGESTAT_SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Duration,
    /// `EDGESTAT_API_ADDR`; `None` = off.
    pub api_addr: Option<SocketAddr>,
    /// `EDGESTAT_TELEMETRY_ADDR`; `None` = off.
    pub telemetry_addr: Option<SocketAddr>,
    /// `EDGESTAT_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `EDGESTAT_INTAKE_DATA_MAX_BYTES`: bound on the embedded intake's
    /// `payloads.jsonl` + `payloads.jsonl.1` in the data dir.
    pub intake_data_max_bytes: u64,
    /// `EDGESTAT_MAX_CONTEXTS`: bound on live contexts for the whole node.
    pub max_contexts: usize,
    /// `EDGESTAT_MEMORY_LIMIT`: bound on the estimated footprint in bytes
    /// (resolved against the host at start, see `memory_limit`).
    pub memory_limit: MemoryLimitSetting,
    /// `EDGESTAT_MAX_QUEUED_EVENTS`: events + service checks kept per shard between flushes.
    pub max_queued_events: usize,
    /// `EDGESTAT_IO_MEMORY_BYTES`: io_uring registered buffer memory per shard.
    pub io_memory_bytes: usize,
    /// `EDGESTAT_FORWARDER_QUEUE_PAYLOADS`: flushed payloads waiting for the forwarder.
    pub forwarder_queue_payloads: usize,
    /// `EDGESTAT_FORWARDER_WINDOW_BYTES`: compressed bytes of payloads handed
    /// to the forwarder and not yet delivered, rejected or failed; the
    /// flusher waits while it is full (backpressure instead of loss).
    pub forwarder_window_bytes: usize,
    /// `EDGESTAT_FORWARDER_WINDOW_MAX_WAIT`: how long one flush may wait for
    /// room before the oldest unsent payloads are spilled (storage on) or
    /// dropped (`dropped_intake_too_slow`); at least the flush interval.
    pub forwarder_window_max_wait: Duration,
    /// `EDGESTAT_TEST_DELAY_SHARD_FLUSH` (`<shard>:<duration>`), for tests
    /// only: that shard answers its first flush request carrying data this
    /// much later (fault injection for the late hand-over path).
    pub test_delay_shard_flush: Option<(usize, Duration)>,
    /// `EDGESTAT_RECV_BATCH_DATAGRAMS`: datagrams per `recvmmsg` on UDP
    /// (1 = one read per datagram); each shard preallocates this many
    /// `DD_DOGSTATSD_BUFFER_SIZE` buffers.
    pub recv_batch_datagrams: usize,
    /// `EDGESTAT_MALLOC_ARENAS`: glibc malloc arenas for the whole process
    /// (0 = glibc's default of up to 8 per core). One arena lets memory
    /// freed by the flusher be reused by the shards and vice versa; the
    /// shards do not allocate per line, so its lock is rarely taken.
    pub malloc_arenas: usize,
    /// Base URL of the orchestrator forwarder (no version prefix):
    /// `orchestrator_dd_url`, else `DD_DD_URL`, else `https://orchestrator.<site>`;
    /// `None` only with the embedded intake (the app fills it in).
    pub orchestrator_base_url: Option<String>,
    /// `EDGESTAT_API_QUEUE_ITEMS`: events + service checks from the local API
    /// kept between flushes; overflow answered 503 and counted.
    pub api_queue_items: usize,
    /// `EDGESTAT_ORCHESTRATOR_QUEUE_PAYLOADS`: orchestrator messages waiting
    /// for the orchestrator forwarder; overflow answered 503 and counted.
    pub orchestrator_queue_payloads: usize,
    /// `EDGESTAT_MANIFEST_BUFFER_BYTES`: framed manifests buffered until the
    /// next flush; overflow answered 503 and counted.
    pub manifest_buffer_bytes: usize,
    /// `EDGESTAT_FLUSH_ENCODE_THREADS`: threads (the flusher's included)
    /// building large series/sketch flushes; each extra one keeps its own
    /// payload builder and compression context.
    pub flush_encode_threads: usize,
    /// Backoff, concurrency, proxy and key-validation settings of the forwarder.
    pub forwarder: ForwarderTuning,
    /// `dogstatsd_mapper_profiles` (compiled) and `dogstatsd_mapper_cache_size`.
    pub mapper: crate::core::mapper::MapperSettings,
    /// `histogram_copy_to_distribution_prefix` when `histogram_copy_to_distribution` is on.
    pub histogram_copy_to_distribution: Option<String>,
    /// `dogstatsd_eol_required`.
    pub eol_required: crate::core::shard::EolRequired,
    /// Host tags: `tags` + `extra_tags` + `env:<env>`, sorted and de-duplicated
    /// (the host metadata payload's `host-tags.system`).
    pub host_tags: Vec<String>,
    /// `enable_metadata_collection`: send the host metadata payload.
    pub enable_metadata_collection: bool,
    /// `expected_tags_duration`: how long after start the host tags are also
    /// added to every series and sketch (zero = never).
    pub expected_tags_duration: Duration,
    /// `EDGESTAT_RECV_COALESCE_US`: after a UDP drain that found datagrams,
    /// wait this long before draining again, so each wake-up takes a batch
    /// (0 = read as soon as one arrives); at most 10000.
    pub recv_coalesce_us: u64,
    /// `EDGESTAT_UNIX_POLL_US`: after a Unix socket drain that found a
    /// burst, keep polling until nothing came for this long (0 = off).
    pub unix_poll_us: u64,
    /// `EDGESTAT_UNIX_READERS`: shards reading the Unix socket (default 2, or 1 with one shard; 1 to the
    /// shard count; each waits on it and drains it with `recvmmsg`).
    pub unix_readers: usize,
    /// `EDGESTAT_UDP_STANDBY_BYTES`: the pool of each UDP socket's standby
    /// reader (a thread on the other CPUs that reads the socket while its
    /// shard cannot keep up; see `udp_standby`); 0 = no standby readers.
    pub udp_standby_bytes: usize,
    /// Stream socket, raw forwarding, statistics and capture.
    pub ops: OpsConfig,
}

/// The Agent's stream socket, raw forwarding, per-context statistics and
/// traffic capture keys, with their bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsConfig {
    /// `DD_DOGSTATSD_STREAM_SOCKET`; `None` = off.
    pub stream_socket: Option<PathBuf>,
    /// `DD_DOGSTATSD_STREAM_LOG_TOO_BIG`: log the start of a too-large frame.
    pub stream_log_too_big: bool,
    /// `EDGESTAT_STREAM_MAX_CONNECTIONS`: stream clients connected at once.
    pub stream_max_connections: usize,
    /// `DD_STATSD_FORWARD_HOST` and `DD_STATSD_FORWARD_PORT` (both set, port non-zero).
    pub forward: Option<(String, u16)>,
    /// `DD_DOGSTATSD_METRICS_STATS_ENABLE`.
    pub metrics_stats_enable: bool,
    /// `EDGESTAT_METRICS_STATS_MAX_CONTEXTS`: contexts tracked per shard.
    pub metrics_stats_max_contexts: usize,
    /// `DD_DOGSTATSD_CAPTURE_PATH` (default `<EDGESTAT_DATA_DIR>/dsd_capture`).
    pub capture_path: PathBuf,
    /// `EDGESTAT_CAPTURE_MAX_BYTES`: uncompressed bytes per capture file.
    pub capture_max_bytes: u64,
    /// `EDGESTAT_CAPTURE_MAX_DURATION`: longest capture.
    pub capture_max_duration: Duration,
    /// `EDGESTAT_CAPTURE_BUFFER_BYTES`: per-shard buffer between two writes.
    pub capture_buffer_bytes: usize,
}

fn ops_config(src: &Sources, data_dir: &std::path::Path) -> Result<OpsConfig, ConfigError> {
    let edge_in = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
        match src.edgestat(name) {
            Some((k, v)) => {
                let n: u64 = parse_num(&k, &v, "a non-negative integer")?;
                if n < min || n > max {
                    return Err(bad(&k, &v, &format!("between {min} and {max}")));
                }
                Ok(n)
            }
            None => Ok(default),
        }
    };
    let flag = |key: &str| -> Result<bool, ConfigError> {
        match src.dd(key) {
            Some((k, v)) => parse_bool(&k, &v),
            None => Ok(false),
        }
    };
    let stream_socket = src
        .dd("dogstatsd_stream_socket")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let host = src.dd("statsd_forward_host").map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    let port: u16 = match src.dd("statsd_forward_port") {
        Some((k, v)) if !v.trim().is_empty() => parse_num(&k, &v, "a port number 0-65535")?,
        _ => 0,
    };
    let capture_max_duration = match src.edgestat("CAPTURE_MAX_DURATION") {
        Some((k, v)) => parse_duration(&k, &v)?,
        None => Duration::from_secs(3600),
    };
    if capture_max_duration.is_zero() {
        return Err(bad("EDGESTAT_CAPTURE_MAX_DURATION", "0", "a positive duration"));
    }
    Ok(OpsConfig {
        stream_socket,
        stream_log_too_big: flag("dogstatsd_stream_log_too_big")?,
        stream_max_connections: edge_in("STREAM_MAX_CONNECTIONS", 1024, 1, 65_536)? as usize,
        // Like the Agent: forwarding needs both a host and a non-zero port.
        forward: host.filter(|_| port != 0).map(|h| (h, port)),
        metrics_stats_enable: flag("dogstatsd_metrics_stats_enable")?,
        metrics_stats_max_contexts: edge_in("METRICS_STATS_MAX_CONTEXTS", 1024, 1, 1 << 20)? as usize,
        capture_path: src
            .dd("dogstatsd_capture_path")
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("dsd_capture")),
        capture_max_bytes: edge_in("CAPTURE_MAX_BYTES", 1 << 30, 1 << 16, 1 << 40)?,
        capture_max_duration,
        capture_buffer_bytes: edge_in("CAPTURE_BUFFER_BYTES", 4 << 20, 64 << 10, 1 << 30)? as usize,
    })
}

/// The Agent's `forwarder_*` / `proxy.*` keys beyond timeout and queue size.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderTuning {
    /// `DD_FORWARDER_BACKOFF_BASE`, seconds (default 2).
    pub backoff_base_s: f64,
    /// `DD_FORWARDER_BACKOFF_MAX`, seconds (default 64).
    pub backoff_max_s: f64,
    /// `DD_FORWARDER_BACKOFF_FACTOR` (default 2; values < 2 become 2).
    pub backoff_factor: f64,
    /// `DD_FORWARDER_RECOVERY_INTERVAL`: errors forgiven per successful probe (default 2).
    pub recovery_interval: u32,
    /// `DD_FORWARDER_RECOVERY_RESET`: a successful probe forgives every error.
    pub recovery_reset: bool,
    /// `DD_FORWARDER_MAX_CONCURRENT_REQUESTS` per endpoint (default 10; <= 0 → 1).
    pub max_concurrent_requests: usize,
    /// `DD_FORWARDER_APIKEY_VALIDATION_INTERVAL`, minutes (default 60).
    pub apikey_validation_interval: Duration,
    /// `DD_PROXY_HTTPS` (or `HTTPS_PROXY`): CONNECT proxy for https endpoints.
    pub proxy_https: Option<String>,
    /// `DD_PROXY_HTTP` (or `HTTP_PROXY`): CONNECT proxy for http endpoints.
    pub proxy_http: Option<String>,
    /// `DD_PROXY_NO_PROXY` / `DD_NO_PROXY` (or `NO_PROXY`): hosts reached directly.
    pub no_proxy: Vec<String>,
}

/// The Agent's default namespace blacklist (`StandardStatsdPrefixes`).
const DEFAULT_NAMESPACE_BLACKLIST: &[&str] = &[
    "datadog.agent",
    "datadog.dogstatsd",
    "datadog.process",
    "datadog.trace_agent",
    "datadog.tracer",
    "activemq",
    "activemq_58",
    "airflow",
    "cassandra",
    "confluent",
    "hazelcast",
    "hive",
    "ignite",
    "jboss",
    "jvm",
    "kafka",
    "presto",
    "sidekiq",
    "solr",
    "tomcat",
    "runtime",
];

/// Raw key/value sources: the environment and an optional YAML file.
pub struct Sources {
    env: HashMap<String, String>,
    yaml: HashMap<String, String>,
    /// Every name looked up (env names and yaml keys), so a test can check
    /// that docs/configuration.md lists exactly the keys the reader accepts.
    read: RefCell<BTreeSet<String>>,
}

impl Sources {
    /// Reads the process environment and, if given, the YAML file.
    pub fn load(config_file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let yaml = match config_file {
            None => HashMap::new(),
            Some(path) => read_yaml(path)?,
        };
        Ok(Self::from_maps(env, yaml))
    }

    /// Builds sources from explicit maps (tests).
    pub fn from_maps(env: HashMap<String, String>, yaml: HashMap<String, String>) -> Self {
        Self { env, yaml, read: RefCell::default() }
    }

    /// Every environment name and `datadog.yaml` key looked up so far.
    pub fn keys_read(&self) -> Vec<String> {
        self.read.borrow().iter().cloned().collect()
    }

    fn note(&self, name: &str) {
        self.read.borrow_mut().insert(name.to_string());
    }

    /// Looks up a `datadog.yaml` key: env `DD_<KEY>` first, then the file.
    /// Returns the name the user used (for error lines) and the value.
    fn dd(&self, key: &str) -> Option<(String, String)> {
        let env_name = format!("DD_{}", key.to_ascii_uppercase().replace('.', "_"));
        self.note(&env_name);
        self.note(key);
        if let Some(v) = self.env.get(&env_name) {
            return Some((env_name, v.clone()));
        }
        self.yaml.get(key).map(|v| (key.to_string(), v.clone()))
    }

    fn dd_alias(&self, key: &str, aliases: &[&str]) -> Option<(String, String)> {
        if let Some(found) = self.dd(key) {
            return Some(found);
        }
        aliases.iter().find_map(|a| {
            self.note(a);
            self.env.get(*a).map(|v| (a.to_string(), v.clone()))
        })
    }

    fn edgestat(&self, name: &str) -> Option<(String, String)> {
        let env_name = format!("EDGESTAT_{name}");
        self.note(&env_name);
        self.env.get(&env_name).map(|v| (env_name, v.clone()))
    }

    fn raw_env(&self, name: &str) -> Option<String> {
        self.note(name);
        self.env.get(name).cloned()
    }
}

fn read_yaml(path: &std::path::Path) -> Result<HashMap<String, String>, ConfigError> {
    let err = |expected: String| ConfigError { key: "--config".into(), value: path.display().to_string(), expected };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("a readable file ({e})")))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| err(format!("valid YAML ({e})")))?;
    let mut out = HashMap::new();
    match doc {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(_) => flatten_yaml("", &doc, &mut out),
        _ => return Err(err("a YAML mapping at the top level".into())),
    }
    Ok(out)
}

/// Flattens nested mappings into dotted keys; lists become space-separated
/// strings and maps under a key that expects JSON (additional endpoints)
/// become JSON, so both sources share one parser per key.
fn flatten_yaml(prefix: &str, v: &serde_yaml::Value, out: &mut HashMap<String, String>) {
    use serde_yaml::Value;
    match v {
        Value::Mapping(m) => {
            // Maps of lists (additional_endpoints) are values, not sections.
            let is_endpoint_map = prefix.ends_with("additional_endpoints");
            if is_endpoint_map {
                if let Ok(json) = serde_json::to_string(v) {
                    out.insert(prefix.to_string(), json);
                }
                return;
            }
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                let key = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                flatten_yaml(&key, child, out);
            }
        }
        // Mapper profiles are a list of mappings: kept whole, as JSON (the
        // form `DD_DOGSTATSD_MAPPER_PROFILES` takes).
        Value::Sequence(_) if prefix == "dogstatsd_mapper_profiles" => {
            if let Ok(json) = serde_json::to_string(v) {
                out.insert(prefix.to_string(), json);
            }
        }
        Value::Sequence(items) => {
            let parts: Vec<String> = items.iter().filter_map(scalar_to_string).collect();
            out.insert(prefix.to_string(), parts.join(" "));
        }
        other => {
            if let Some(s) = scalar_to_string(other) {
                out.insert(prefix.to_string(), s);
            }
        }
    }
}

fn scalar_to_string(v: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// The error for `key=value`; a key-shaped word in the value is redacted
/// (a key pasted into the wrong setting must not reach stderr either).
fn bad(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError { key: key.to_string(), value: crate::core::redact::scrub(value, &[]), expected: expected.to_string() }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(key, v, "true or false")),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str, expected: &str) -> Result<T, ConfigError> {
    v.trim().parse::<T>().map_err(|_| bad(key, v, expected))
}

/// Parses `500ms`, `2s`, `1m`, `1h` or a bare number of seconds.
pub fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    let t = v.trim();
    let expected = "a duration such as 500ms, 2s, 1m";
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (t, 1000)
    };
    let n: f64 = num.trim().parse().map_err(|_| bad(key, v, expected))?;
    if !n.is_finite() || n < 0.0 || n * unit_ms as f64 > 1e12 {
        return Err(bad(key, v, expected));
    }
    Ok(Duration::from_millis((n * unit_ms as f64).round() as u64))
}

/// The version-prefixed metrics host for a Datadog site, as the Agent builds it.
pub fn site_url(site: &str, agent_version: &str) -> String {
    let site = site.trim().trim_end_matches('/').trim_end_matches('.');
    let prefix = agent_version.split('.').take(3).collect::<Vec<_>>().join("-");
    let fqdn_dot = {
        let s = site.to_ascii_lowercase();
        s.ends_with("datadoghq.com")
            || s.ends_with("datadoghq.eu")
            || s.ends_with("datad0g.com")
            || s.ends_with("datad0g.eu")
            || s.ends_with("ddog-gov.com")
    };
    format!("https://{prefix}-app.agent.{site}{}", if fqdn_dot { "." } else { "" })
}

/// Applies the Agent's version prefix to a Datadog `app.` URL; custom URLs
/// are returned unchanged.
pub fn versioned_url(url: &str, agent_version: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (host, tail) = match rest.find(['/', ':']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let h = host.to_ascii_lowercase();
    let h_nodot = h.trim_end_matches('.');
    let after_app = h_nodot.strip_prefix("app.mrf.").or_else(|| h_nodot.strip_prefix("app."));
    let is_dd = after_app.is_some_and(|d| {
        ["datadoghq.com", "datadoghq.eu", "datad0g.com", "datad0g.eu", "ddog-gov.com", "ddog-gov.mil"]
            .iter()
            .any(|s| d == *s || d.ends_with(&format!(".{s}")))
    });
    if !is_dd {
        return url.to_string();
    }
    let prefix = agent_version.split('.').take(3).collect::<Vec<_>>().join("-");
    let rest_host = &host["app".len()..];
    format!("{scheme}://{prefix}-app.agent{rest_host}{tail}")
}

fn parse_listen_addr(key: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let t = v.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    use std::net::ToSocketAddrs;
    t.to_socket_addrs().ok().and_then(|mut it| it.next()).map(Some).ok_or_else(|| bad(key, v, "host:port or off"))
}

fn parse_url(key: &str, v: &str) -> Result<String, ConfigError> {
    let t = v.trim().trim_end_matches('/');
    let ok = (t.starts_with("http://") || t.starts_with("https://"))
        && t.split_once("://").is_some_and(|(_, h)| !h.is_empty());
    if !ok {
        return Err(bad(key, v, "an http:// or https:// URL"));
    }
    Ok(t.to_string())
}

fn split_list(v: &str) -> Vec<String> {
    v.split([' ', ','].as_ref()).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Agent-compatible version announced in headers, the version-prefixed
/// host and `datadog.agent.*` tags.
pub const AGENT_VERSION: &str = "7.74.0";

impl Config {
    /// Reads and validates everything from `src`.
    pub fn from_sources(src: &Sources) -> Result<Self, ConfigError> {
        let get_bool = |key: &str, default: bool| -> Result<bool, ConfigError> {
            match src.dd(key) {
                Some((k, v)) => parse_bool(&k, &v),
                None => Ok(default),
            }
        };
        let get_usize = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match src.dd(key) {
                Some((k, v)) => parse_num(&k, &v, "a non-negative integer"),
                None => Ok(default),
            }
        };
        let edge_usize_in = |name: &str, default: usize, min: usize, max: usize| -> Result<usize, ConfigError> {
            match src.edgestat(name) {
                Some((k, v)) => {
                    let n: usize = parse_num(&k, &v, "a non-negative integer")?;
                    if n < min || n > max {
                        let want = if max == usize::MAX {
                            format!("an integer >= {min}")
                        } else {
                            format!("between {min} and {max}")
                        };
                        return Err(bad(&k, &v, &want));
                    }
                    Ok(n)
                }
                None => Ok(default),
            }
        };
        let edge_usize = |name: &str, default: usize, min: usize| edge_usize_in(name, default, min, usize::MAX);

        let hostname = match src.dd("hostname") {
            Some((_, v)) if !v.trim().is_empty() => v.trim().to_string(),
            _ => crate::agent::hostname::system_hostname(),
        };

        let api_keys: Vec<String> = match src.dd("api_key") {
            Some((_, v)) if !v.trim().is_empty() => vec![v.trim().to_string()],
            _ => Vec::new(),
        };
        let dd_url = match src.dd_alias("dd_url", &["DD_URL"]) {
            Some((k, v)) if !v.trim().is_empty() => Some(parse_url(&k, &v)?),
            _ => None,
        };
        let site = src.dd("site").map(|(_, v)| v).filter(|v| !v.trim().is_empty());
        let endpoint = if dd_url.is_none() && api_keys.is_empty() {
            None
        } else {
            let base_url = match &dd_url {
                Some(u) => versioned_url(u, AGENT_VERSION),
                None => site_url(site.as_deref().unwrap_or("datadoghq.com"), AGENT_VERSION),
            };
            Some(Endpoint { base_url, api_keys: api_keys.clone() })
        };

        let additional_endpoints = match src.dd("additional_endpoints") {
            Some((k, v)) if !v.trim().is_empty() => parse_additional_endpoints(&k, &v)?,
            _ => Vec::new(),
        };

        let orchestrator_dd_url =
            match src.dd_alias("orchestrator_explorer.orchestrator_dd_url", &["DD_ORCHESTRATOR_URL"]) {
                Some((k, v)) if !v.trim().is_empty() => Some(parse_url(&k, &v)?),
                _ => None,
            };

        let port: u16 = match src.dd("dogstatsd_port") {
            Some((k, v)) => parse_num(&k, &v, "a port number 0-65535")?,
            None => 8125,
        };
        let non_local = get_bool("dogstatsd_non_local_traffic", false)?;
        let bind_host = match src.dd("bind_host") {
            Some((_, v)) if !v.trim().is_empty() => v.trim().to_string(),
            _ => "localhost".to_string(),
        };
        let udp_addr = if port == 0 {
            None
        } else {
            let host = if non_local { "0.0.0.0".to_string() } else { bind_host.clone() };
            use std::net::ToSocketAddrs;
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| {
                    it.find(|a| a.is_ipv4()).or_else(|| (host.as_str(), port).to_socket_addrs().ok()?.next())
                })
                .ok_or_else(|| bad("DD_BIND_HOST", &bind_host, "a resolvable host or address"))?;
            Some(addr)
        };
        let unix_socket =
            src.dd("dogstatsd_socket").map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty()).map(PathBuf::from);
        let buffer_size_bytes = get_usize("dogstatsd_buffer_size", 8192)?;
        if !(64..=(64 << 20)).contains(&buffer_size_bytes) {
            let (k, v) = src.dd("dogstatsd_buffer_size").unwrap_or_default();
            return Err(bad(&k, &v, "a size between 64 and 67108864 bytes"));
        }
        let so_rcvbuf_bytes = get_usize("dogstatsd_so_rcvbuf", 0)?;

        let mut dogstatsd_tags = src.dd("dogstatsd_tags").map(|(_, v)| split_list(&v)).unwrap_or_default();
        dogstatsd_tags.sort();
        dogstatsd_tags.dedup();

        let expiry_seconds = match src.dd("dogstatsd_expiry_seconds") {
            Some((k, v)) => parse_num::<i64>(&k, &v, "a number of seconds")?.max(0),
            None => 300,
        };
        let context_expiry_seconds = match src.dd("dogstatsd_context_expiry_seconds") {
            Some((k, v)) => parse_num::<i64>(&k, &v, "a number of seconds")?.max(0),
            None => 20,
        };

        let histogram_aggregates = match src.dd("histogram_aggregates") {
            Some((_, v)) => split_list(&v).iter().filter_map(|s| HistogramAggregate::parse(s)).collect(),
            None => vec![
                HistogramAggregate::Max,
                HistogramAggregate::Median,
                HistogramAggregate::Avg,
                HistogramAggregate::Count,
            ],
        };
        let histogram_percentiles = match src.dd("histogram_percentiles") {
            Some((_, v)) => parse_percentiles(&v),
            None => vec![95],
        };

        let metric_namespace = match src.dd("statsd_metric_namespace") {
            Some((_, v)) if !v.trim().is_empty() => {
                let ns = v.trim().to_string();
                if ns.ends_with('.') {
                    ns
                } else {
                    format!("{ns}.")
                }
            }
            _ => String::new(),
        };
        let metric_namespace_blacklist = match src.dd("statsd_metric_namespace_blacklist") {
            Some((_, v)) => split_list(&v),
            None => DEFAULT_NAMESPACE_BLACKLIST.iter().map(|s| s.to_string()).collect(),
        };

        let filterlist = src.dd("metric_filterlist").map(|(_, v)| split_list(&v)).unwrap_or_default();
        let filterlist_prefix = get_bool("metric_filterlist_match_prefix", false)?;
        let statsd_blocklist = src.dd("statsd_metric_blocklist").map(|(_, v)| split_list(&v)).unwrap_or_default();
        let statsd_blocklist_prefix = get_bool("statsd_metric_blocklist_match_prefix", false)?;
        let (metric_blocklist, metric_blocklist_match_prefix) = if filterlist.is_empty() {
            (statsd_blocklist, statsd_blocklist_prefix)
        } else {
            (filterlist, filterlist_prefix)
        };

        let compression_kind = src.dd("serializer_compressor_kind");
        let zstd_level: i32 = match src.dd("serializer_zstd_compressor_level") {
            Some((k, v)) => {
                let l: i32 = parse_num(&k, &v, "a zstd level between -7 and 22")?;
                if !(-7..=22).contains(&l) {
                    return Err(bad(&k, &v, "a zstd level between -7 and 22"));
                }
                l
            }
            None => 1,
        };
        let compression = match &compression_kind {
            Some((k, v)) => {
                Compression::parse(v.trim(), zstd_level).map_err(|_| bad(k, v, "one of zstd, zlib, gzip, lz4, none"))?
            }
            None => Compression::Zstd { level: zstd_level },
        };
        let mut serializer = crate::core::serializer::SerializerConfig { compression, ..Default::default() };
        let limit = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match src.dd(key) {
                Some((k, v)) => {
                    let n: usize = parse_num(&k, &v, "a positive number of bytes")?;
                    if n < 64 {
                        return Err(bad(&k, &v, "a payload size of at least 64 bytes"));
                    }
                    Ok(n)
                }
                None => Ok(default),
            }
        };
        serializer.max_payload_size = limit("serializer_max_payload_size", serializer.max_payload_size)?;
        serializer.max_uncompressed_payload_size =
            limit("serializer_max_uncompressed_payload_size", serializer.max_uncompressed_payload_size)?;
        serializer.max_series_payload_size =
            limit("serializer_max_series_payload_size", serializer.max_series_payload_size)?;
        serializer.max_series_uncompressed_payload_size =
            limit("serializer_max_series_uncompressed_payload_size", serializer.max_series_uncompressed_payload_size)?;
        serializer.max_series_points_per_payload = match src.dd("serializer_max_series_points_per_payload") {
            Some((k, v)) => {
                let n: usize = parse_num(&k, &v, "a positive integer")?;
                if n == 0 {
                    return Err(bad(&k, &v, "a positive integer"));
                }
                n
            }
            None => serializer.max_series_points_per_payload,
        };

        let log_level = match src.dd("log_level") {
            Some((k, v)) => {
                let l = v.trim().to_ascii_lowercase();
                let l = if l == "warning" { "warn".to_string() } else { l };
                if !["trace", "debug", "info", "warn", "error", "off", "critical"].contains(&l.as_str()) {
                    return Err(bad(&k, &v, "one of trace, debug, info, warn, warning, error, critical, off"));
                }
                if l == "critical" {
                    "error".to_string()
                } else {
                    l
                }
            }
            None => "info".to_string(),
        };
        let log_format = match src.edgestat("LOG_FORMAT") {
            Some((k, v)) => crate::agent::logging::LogFormat::parse(&v).ok_or_else(|| bad(&k, &v, "text or json"))?,
            None => crate::agent::logging::LogFormat::Text,
        };

        let extra_roots_file = src.raw_env("SSL_CERT_FILE").filter(|s| !s.is_empty()).map(PathBuf::from);
        if let Some(p) = &extra_roots_file {
            if std::fs::metadata(p).is_err() {
                return Err(bad("SSL_CERT_FILE", &p.display().to_string(), "a readable PEM file"));
            }
        }
        let tls = TlsSettings { skip_validation: get_bool("skip_ssl_validation", false)?, extra_roots_file };

        let forwarder_timeout = match src.dd("forwarder_timeout") {
            Some((k, v)) => {
                let s: f64 = parse_num(&k, &v, "a positive number of seconds")?;
                if !(s.is_finite() && s > 0.0 && s < 86_400.0) {
                    return Err(bad(&k, &v, "a positive number of seconds"));
                }
                Duration::from_secs_f64(s)
            }
            None => Duration::from_secs(20),
        };

        // One shard per CPU the process may run on, within its cgroup quota.
        let shards_default = crate::agent::cpu_set::default_shards(
            crate::agent::cpu_set::allowed_cpus().as_deref(),
            crate::agent::cpu_set::cgroup_cpu_quota(),
        );
        let shards = edge_usize("SHARDS", shards_default, 1)?;
        if shards > 256 {
            return Err(bad("EDGESTAT_SHARDS", &shards.to_string(), "between 1 and 256"));
        }
        let dur = |name: &str, default: &str| -> Result<Duration, ConfigError> {
            match src.edgestat(name) {
                Some((k, v)) => parse_duration(&k, &v),
                None => parse_duration(name, default),
            }
        };
        let flush_interval = dur("FLUSH_INTERVAL", "15s")?;
        if flush_interval < Duration::from_millis(100) {
            return Err(bad("EDGESTAT_FLUSH_INTERVAL", &format!("{flush_interval:?}"), "at least 100ms"));
        }
        let shutdown_timeout = dur("SHUTDOWN_TIMEOUT", "10s")?;
        // Default: 60 s, and never under four flush intervals.
        let forwarder_window_max_wait = match src.edgestat("FORWARDER_WINDOW_MAX_WAIT") {
            Some((k, v)) => parse_duration(&k, &v)?,
            None => (flush_interval * 4).max(Duration::from_secs(60)),
        };
        if forwarder_window_max_wait < flush_interval {
            return Err(bad(
                "EDGESTAT_FORWARDER_WINDOW_MAX_WAIT",
                &format!("{forwarder_window_max_wait:?}"),
                "at least EDGESTAT_FLUSH_INTERVAL",
            ));
        }
        let test_delay_shard_flush = match src.edgestat("TEST_DELAY_SHARD_FLUSH") {
            None => None,
            Some((k, v)) => {
                let expected = "<shard>:<duration>, e.g. 0:7s (test-only)";
                let (shard, d) = v.split_once(':').ok_or_else(|| bad(&k, &v, expected))?;
                let shard: usize = shard.trim().parse().map_err(|_| bad(&k, &v, expected))?;
                if shard >= shards {
                    return Err(bad(&k, &v, "a shard index below EDGESTAT_SHARDS"));
                }
                Some((shard, parse_duration(&k, d.trim())?))
            }
        };

        let api_addr = match src.edgestat("API_ADDR") {
            Some((k, v)) => parse_listen_addr(&k, &v)?,
            None => parse_listen_addr("EDGESTAT_API_ADDR", "127.0.0.1:5005")?,
        };
        let telemetry_addr = match src.edgestat("TELEMETRY_ADDR") {
            Some((k, v)) => parse_listen_addr(&k, &v)?,
            None => None,
        };
        let data_dir =
            src.edgestat("DATA_DIR").map(|(_, v)| PathBuf::from(v)).unwrap_or_else(|| PathBuf::from("./edgestat-data"));

        // The orchestrator forwarder adds no version prefix (as in the Agent).
        let orchestrator_base_url = orchestrator_dd_url.clone().or_else(|| dd_url.clone()).or_else(|| {
            (!api_keys.is_empty()).then(|| {
                let site = site.as_deref().unwrap_or("datadoghq.com").trim().trim_end_matches('/').to_string();
                format!("https://orchestrator.{site}")
            })
        });
        Ok(Config {
            hostname,
            endpoint,
            additional_endpoints,
            orchestrator_dd_url,
            orchestrator_use_legacy_endpoint: get_bool("orchestrator_explorer.use_legacy_endpoint", false)?,
            udp_addr,
            unix_socket,
            buffer_size_bytes,
            so_rcvbuf_bytes,
            dogstatsd_tags,
            expiry_seconds,
            context_expiry_seconds,
            histogram_aggregates,
            histogram_percentiles,
            metric_namespace,
            metric_namespace_blacklist,
            metric_blocklist,
            metric_blocklist_match_prefix,
            use_v2_api_series: get_bool("use_v2_api.series", true)?,
            enable_series: get_bool("enable_payloads.series", true)?,
            enable_events: get_bool("enable_payloads.events", true)?,
            enable_service_checks: get_bool("enable_payloads.service_checks", true)?,
            enable_sketches: get_bool("enable_payloads.sketches", true)?,
            serializer,
            log_payloads: get_bool("log_payloads", false)?,
            log_level,
            log_format,
            tls,
            forwarder_timeout,
            retry_queue_max_bytes: get_usize("forwarder_retry_queue_payloads_max_size", 15_728_640)?,
            storage_path: src
                .dd("forwarder_storage_path")
                .map(|(_, v)| PathBuf::from(v))
                .filter(|p| !p.as_os_str().is_empty()),
            storage_max_bytes: match src.dd("forwarder_storage_max_size_in_bytes") {
                Some((k, v)) => parse_num(&k, &v, "a number of bytes")?,
                None => 0,
            },
            shards,
            flush_interval,
            shutdown_timeout,
            api_addr,
            telemetry_addr,
            intake_data_max_bytes: edge_usize("INTAKE_DATA_MAX_BYTES", 256 << 20, 4096)? as u64,
            max_contexts: edge_usize("MAX_CONTEXTS", 500_000, 1)?,
            memory_limit: match src.edgestat("MEMORY_LIMIT") {
                Some((k, v)) => {
                    parse_memory_limit(&v).ok_or_else(|| bad(&k, &v, "a number of bytes, or 0 or off for no limit"))?
                }
                None => MemoryLimitSetting::Host,
            },
            max_queued_events: edge_usize("MAX_QUEUED_EVENTS", 100_000, 1)?,
            io_memory_bytes: edge_usize("IO_MEMORY_BYTES", 1 << 20, 64 << 10)?,
            forwarder_queue_payloads: edge_usize("FORWARDER_QUEUE_PAYLOADS", 1024, 1)?,
            forwarder_window_bytes: edge_usize("FORWARDER_WINDOW_BYTES", 64 << 20, 1)?,
            forwarder_window_max_wait,
            test_delay_shard_flush,
            recv_batch_datagrams: edge_usize_in("RECV_BATCH_DATAGRAMS", 32, 1, 1024)?,
            malloc_arenas: edge_usize("MALLOC_ARENAS", 0, 0)?,
            orchestrator_base_url,
            api_queue_items: edge_usize("API_QUEUE_ITEMS", 100_000, 1)?,
            orchestrator_queue_payloads: edge_usize("ORCHESTRATOR_QUEUE_PAYLOADS", 1024, 1)?,
            manifest_buffer_bytes: edge_usize("MANIFEST_BUFFER_BYTES", 64 << 20, 1)?,
            flush_encode_threads: edge_usize_in("FLUSH_ENCODE_THREADS", 1, 1, 16)?,
            forwarder: forwarder_tuning(src)?,
            recv_coalesce_us: edge_usize_in("RECV_COALESCE_US", 5_000, 0, 10_000)? as u64,
            unix_poll_us: edge_usize_in("UNIX_POLL_US", 50, 0, 10_000)? as u64,
            mapper: mapper_settings(src)?,
            // The prefix is read even when the copy is off, so a bad
            // combination is never hidden and every key shows in the doc test.
            histogram_copy_to_distribution: {
                let prefix = src
                    .dd("histogram_copy_to_distribution_prefix")
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                get_bool("histogram_copy_to_distribution", false)?.then_some(prefix)
            },
            eol_required: eol_required(src)?,
            host_tags: host_tags(src),
            enable_metadata_collection: get_bool("enable_metadata_collection", true)?,
            expected_tags_duration: match src.dd("expected_tags_duration") {
                Some((k, v)) => parse_go_duration(&k, &v)?,
                None => Duration::ZERO,
            },
            ops: ops_config(src, &data_dir)?,
            data_dir,
            unix_readers: edge_usize_in("UNIX_READERS", shards.min(2), 1, shards)?,
            udp_standby_bytes: edge_usize_in("UDP_STANDBY_BYTES", 4 << 20, 0, 1 << 30)?,
        })
    }
}

fn forwarder_tuning(src: &Sources) -> Result<ForwarderTuning, ConfigError> {
    let secs = |key: &str, default: f64| -> Result<f64, ConfigError> {
        match src.dd(key) {
            Some((k, v)) => {
                let s: f64 = parse_num(&k, &v, "a positive number of seconds")?;
                if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
                    return Err(bad(&k, &v, "a positive number of seconds"));
                }
                Ok(s)
            }
            None => Ok(default),
        }
    };
    let backoff_base_s = secs("forwarder_backoff_base", 2.0)?;
    let backoff_max_s = secs("forwarder_backoff_max", 64.0)?.max(backoff_base_s);
    let backoff_factor = match src.dd("forwarder_backoff_factor") {
        Some((k, v)) => {
            let f: f64 = parse_num(&k, &v, "a number")?;
            if !f.is_finite() {
                return Err(bad(&k, &v, "a number"));
            }
            f.max(2.0)
        }
        None => 2.0,
    };
    let recovery_interval = match src.dd("forwarder_recovery_interval") {
        Some((k, v)) => parse_num::<i64>(&k, &v, "an integer")?.clamp(1, 1_000) as u32,
        None => 2,
    };
    let recovery_reset = match src.dd("forwarder_recovery_reset") {
        Some((k, v)) => parse_bool(&k, &v)?,
        None => false,
    };
    let max_concurrent_requests = match src.dd("forwarder_max_concurrent_requests") {
        Some((k, v)) => parse_num::<i64>(&k, &v, "an integer")?.clamp(1, 1_000) as usize,
        None => 10,
    };
    let apikey_validation_interval = match src.dd("forwarder_apikey_validation_interval") {
        Some((k, v)) => {
            let m: f64 = parse_num(&k, &v, "a positive number of minutes")?;
            if !(m.is_finite() && m > 0.0 && m <= 525_600.0) {
                return Err(bad(&k, &v, "a positive number of minutes"));
            }
            Duration::from_secs_f64(m * 60.0)
        }
        None => Duration::from_secs(3600),
    };
    // Like Go's ProxyFromEnvironment, proxies taken from the standard
    // variables never apply to loopback (the embedded intake, local tests).
    let mut from_std_env = false;
    let mut proxy = |key: &str, std_names: &[&str]| -> Result<Option<String>, ConfigError> {
        match src.dd_alias(key, std_names) {
            Some((k, v)) if !v.trim().is_empty() => {
                from_std_env |= !k.starts_with("DD_") && !k.contains('.');
                Ok(Some(parse_url(&k, &v)?))
            }
            _ => Ok(None),
        }
    };
    let proxy_https = proxy("proxy.https", &["HTTPS_PROXY", "https_proxy"])?;
    let proxy_http = proxy("proxy.http", &["HTTP_PROXY", "http_proxy"])?;
    let mut no_proxy = src
        .dd_alias("proxy.no_proxy", &["DD_NO_PROXY", "NO_PROXY", "no_proxy"])
        .map(|(_, v)| split_list(&v))
        .unwrap_or_default();
    if from_std_env {
        no_proxy.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    }
    Ok(ForwarderTuning {
        backoff_base_s,
        backoff_max_s,
        backoff_factor,
        recovery_interval,
        recovery_reset,
        max_concurrent_requests,
        apikey_validation_interval,
        proxy_https,
        proxy_http,
        no_proxy,
    })
}

/// Bound on `dogstatsd_mapper_cache_size` (entries per shard).
const MAX_MAPPER_CACHE_SIZE: usize = 1_000_000;

/// `dogstatsd_mapper_profiles` (JSON in the environment, a list in YAML)
/// validated like the Agent; any error names the key.
fn mapper_settings(src: &Sources) -> Result<crate::core::mapper::MapperSettings, ConfigError> {
    let cache_size = match src.dd("dogstatsd_mapper_cache_size") {
        Some((k, v)) => {
            let n: usize = parse_num(&k, &v, "a positive integer")?;
            if !(1..=MAX_MAPPER_CACHE_SIZE).contains(&n) {
                return Err(bad(&k, &v, &format!("between 1 and {MAX_MAPPER_CACHE_SIZE}")));
            }
            n
        }
        None => crate::core::mapper::DEFAULT_CACHE_SIZE,
    };
    let profiles: Vec<crate::core::mapper::ProfileConfig> = match src.dd("dogstatsd_mapper_profiles") {
        Some((k, v)) if !v.trim().is_empty() => serde_json::from_str(&v)
            .map_err(|e| bad(&k, &short(&v), &format!("a list of profiles with name, prefix and mappings ({e})")))?,
        _ => Vec::new(),
    };
    crate::core::mapper::MapperSettings::compile(&profiles, cache_size).map_err(|e| {
        let (k, v) = src.dd("dogstatsd_mapper_profiles").unwrap_or_default();
        bad(&k, &short(&v), &format!("valid mapper profiles: {e}"))
    })
}

/// A long value cut for the one-line error.
fn short(v: &str) -> String {
    let v = v.trim();
    match v.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &v[..i]),
        None => v.to_string(),
    }
}

/// `dogstatsd_eol_required`: `udp`, `uds`, `named_pipe`.
fn eol_required(src: &Sources) -> Result<crate::core::shard::EolRequired, ConfigError> {
    let mut out = crate::core::shard::EolRequired::default();
    if let Some((k, v)) = src.dd("dogstatsd_eol_required") {
        for t in split_list(&v) {
            match t.as_str() {
                "udp" => out.udp = true,
                "uds" => out.uds = true,
                "named_pipe" => out.named_pipe = true,
                _ => return Err(bad(&k, &v, "a list of udp, uds, named_pipe")),
            }
        }
    }
    Ok(out)
}

/// The Agent's host tags: `tags`, `extra_tags` and `env:<env>`, sorted and
/// de-duplicated.
fn host_tags(src: &Sources) -> Vec<String> {
    let mut tags: Vec<String> = ["tags", "extra_tags"]
        .iter()
        .flat_map(|k| src.dd(k).map(|(_, v)| split_list(&v)).unwrap_or_default())
        .collect();
    if let Some((_, env)) = src.dd("env").filter(|(_, v)| !v.trim().is_empty()) {
        tags.push(format!("env:{}", env.trim()));
    }
    tags.sort();
    tags.dedup();
    tags
}

/// A Go duration (`time.ParseDuration`: `90s`, `10m`, `1h30m`, `1.5h`);
/// a bare number is nanoseconds, as the Agent's `GetDuration` reads it.
pub fn parse_go_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    let t = v.trim();
    let err = || bad(key, v, "a duration such as 10m, 90s or 1h30m");
    if t.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Ok(ns) = t.parse::<u64>() {
        return Ok(Duration::from_nanos(ns));
    }
    let mut rest = t;
    let mut total_ns = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let n: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_ns = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total_ns += n * unit_ns;
        rest = &rest[unit_end..];
    }
    // Bounded to a year: longer is a mistake, not a setting.
    if !total_ns.is_finite() || total_ns > 365.0 * 86_400e9 {
        return Err(err());
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

fn parse_percentiles(v: &str) -> Vec<u32> {
    let mut out: Vec<u32> = split_list(v)
        .iter()
        .filter_map(|s| s.parse::<f64>().ok())
        .filter(|p| (0.0..=1.0).contains(p))
        .map(|p| (p * 100.0 + 0.5) as u32)
        .collect();
    out.sort_unstable();
    out
}

fn parse_additional_endpoints(key: &str, v: &str) -> Result<Vec<Endpoint>, ConfigError> {
    // The value holds API keys: an error shows it with every word that is
    // not a URL redacted.
    let hide = |e: ConfigError| ConfigError { value: crate::core::redact::endpoints_value(v), ..e };
    let map: HashMap<String, Vec<String>> =
        serde_json::from_str(v).map_err(|_| hide(bad(key, v, r#"a JSON object {"https://url": ["key", ...]}"#)))?;
    let mut out: Vec<Endpoint> = Vec::new();
    let mut urls: Vec<_> = map.into_iter().collect();
    urls.sort();
    for (url, keys) in urls {
        let base = versioned_url(&parse_url(key, &url).map_err(hide)?, AGENT_VERSION);
        let mut keys: Vec<String> = keys.into_iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            tracing::error!(url = %base, "additional endpoint has no API key; ignored");
            continue;
        }
        match out.iter_mut().find(|e| e.base_url == base) {
            Some(e) => {
                e.api_keys.extend(keys);
                e.api_keys.sort();
                e.api_keys.dedup();
            }
            None => out.push(Endpoint { base_url: base, api_keys: keys }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_sources(&Sources::from_maps(env, HashMap::new()))
    }

    #[test]
    fn defaults_are_the_agents() {
        let c = cfg(&[]).unwrap();
        assert!(c.endpoint.is_none());
        assert_eq!(c.udp_addr.unwrap().port(), 8125);
        assert_eq!(c.buffer_size_bytes, 8192);
        assert_eq!(c.expiry_seconds, 300);
        assert_eq!(c.histogram_percentiles, vec![95]);
        assert_eq!(c.histogram_aggregates.len(), 4);
        assert!(c.use_v2_api_series);
        assert_eq!(c.flush_interval, Duration::from_secs(15));
        assert_eq!(c.api_addr, Some("127.0.0.1:5005".parse().unwrap()));
    }

    #[test]
    fn malloc_arenas_default_to_glibc_and_parse() {
        assert_eq!(cfg(&[]).unwrap().malloc_arenas, 0);
        assert_eq!(cfg(&[("EDGESTAT_MALLOC_ARENAS", "1")]).unwrap().malloc_arenas, 1);
        assert_eq!(cfg(&[("EDGESTAT_MALLOC_ARENAS", "many")]).unwrap_err().key, "EDGESTAT_MALLOC_ARENAS");
    }

    #[test]
    fn log_level_takes_the_agents_names_and_log_format_text_or_json() {
        // The Agent's values, case-insensitive; `warning` and `critical` have no
        // tracing level of their own.
        for (given, used) in
            [("WARNING", "warn"), ("warn", "warn"), ("Critical", "error"), ("off", "off"), ("trace", "trace")]
        {
            assert_eq!(cfg(&[("DD_LOG_LEVEL", given)]).unwrap().log_level, used, "{given}");
        }
        assert_eq!(cfg(&[("DD_LOG_LEVEL", "verbose")]).unwrap_err().key, "DD_LOG_LEVEL");
        assert_eq!(cfg(&[]).unwrap().log_format, crate::agent::logging::LogFormat::Text);
        assert_eq!(cfg(&[("EDGESTAT_LOG_FORMAT", "json")]).unwrap().log_format, crate::agent::logging::LogFormat::Json);
        assert_eq!(cfg(&[("EDGESTAT_LOG_FORMAT", "xml")]).unwrap_err().key, "EDGESTAT_LOG_FORMAT");
    }

    #[test]
    fn memory_limit_is_bytes_or_off() {
        assert_eq!(cfg(&[]).unwrap().memory_limit, MemoryLimitSetting::Host);
        assert_eq!(cfg(&[("EDGESTAT_MEMORY_LIMIT", "off")]).unwrap().memory_limit, MemoryLimitSetting::Off);
        assert_eq!(cfg(&[("EDGESTAT_MEMORY_LIMIT", "0")]).unwrap().memory_limit, MemoryLimitSetting::Off);
        assert_eq!(
            cfg(&[("EDGESTAT_MEMORY_LIMIT", "268435456")]).unwrap().memory_limit,
            MemoryLimitSetting::Bytes(268_435_456)
        );
        let e = cfg(&[("EDGESTAT_MEMORY_LIMIT", "256M")]).unwrap_err();
        assert_eq!(e.key, "EDGESTAT_MEMORY_LIMIT");
        assert!(e.to_string().contains("a number of bytes"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = cfg(&[("DD_DOGSTATSD_PORT", "abc")]).unwrap_err();
        assert_eq!(e.key, "DD_DOGSTATSD_PORT");
        assert!(e.to_string().contains("DD_DOGSTATSD_PORT"));
        let e = cfg(&[("DD_SERIALIZER_COMPRESSOR_KIND", "brotli")]).unwrap_err();
        assert_eq!(e.key, "DD_SERIALIZER_COMPRESSOR_KIND");
        let e = cfg(&[("EDGESTAT_FLUSH_INTERVAL", "soon")]).unwrap_err();
        assert_eq!(e.key, "EDGESTAT_FLUSH_INTERVAL");
        let e = cfg(&[("DD_USE_V2_API_SERIES", "maybe")]).unwrap_err();
        assert_eq!(e.key, "DD_USE_V2_API_SERIES");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("k", "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("k", "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("k", "3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("k", "-1s").is_err());
    }

    #[test]
    fn site_and_version_prefix() {
        assert_eq!(site_url("datadoghq.com", "7.70.1"), "https://7-70-1-app.agent.datadoghq.com.");
        assert_eq!(site_url("us3.datadoghq.com", "7.70.1"), "https://7-70-1-app.agent.us3.datadoghq.com.");
        assert_eq!(versioned_url("https://app.datadoghq.com", "7.70.1"), "https://7-70-1-app.agent.datadoghq.com");
        assert_eq!(versioned_url("http://localhost:8080", "7.70.1"), "http://localhost:8080");
    }

    #[test]
    fn yaml_layout_and_env_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datadog.yaml");
        std::fs::write(
            &path,
            "dogstatsd_port: 9000\nuse_v2_api:\n  series: false\nhistogram_aggregates: [max, min]\ndd_url: http://127.0.0.1:1\n",
        )
        .unwrap();
        let yaml = read_yaml(&path).unwrap();
        let env = [("DD_DOGSTATSD_PORT".to_string(), "9001".to_string())].into_iter().collect();
        let c = Config::from_sources(&Sources::from_maps(env, yaml)).unwrap();
        assert_eq!(c.udp_addr.unwrap().port(), 9001);
        assert!(!c.use_v2_api_series);
        assert_eq!(c.histogram_aggregates, vec![HistogramAggregate::Max, HistogramAggregate::Min]);
        assert_eq!(c.endpoint.unwrap().base_url, "http://127.0.0.1:1");
    }

    #[test]
    fn additional_endpoints_merge_keys() {
        let c = cfg(&[("DD_ADDITIONAL_ENDPOINTS", r#"{"http://a:1": ["k2", "k1", "k1", " "], "http://b:2": []}"#)])
            .unwrap();
        assert_eq!(c.additional_endpoints.len(), 1);
        assert_eq!(c.additional_endpoints[0].api_keys, vec!["k1", "k2"]);
    }

    /// The names in the first two columns of docs/configuration.md's tables.
    fn documented_keys() -> BTreeSet<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let mut out = BTreeSet::new();
        for row in doc.lines().filter(|l| l.starts_with('|') && !l.starts_with("|---")) {
            let cells: Vec<&str> = row.split('|').skip(1).take(2).collect();
            if cells.first().is_some_and(|c| c.trim() == "environment") {
                continue;
            }
            let env: Vec<&str> = cells[0].split('`').skip(1).step_by(2).collect();
            let yaml: Vec<&str> = cells.get(1).map(|c| c.split('`').skip(1).step_by(2).collect()).unwrap_or_default();
            assert!(!env.is_empty(), "a row without an environment name: {row}");
            for y in &yaml {
                let dd = format!("DD_{}", y.to_ascii_uppercase().replace('.', "_"));
                assert!(env.contains(&dd.as_str()), "{y} is documented without {dd}: {row}");
            }
            out.extend(env.iter().chain(&yaml).map(|s| s.to_string()));
        }
        out
    }

    #[test]
    fn config_doc_lists_every_key_the_reader_accepts() {
        let src = Sources::from_maps(HashMap::new(), HashMap::new());
        Config::from_sources(&src).unwrap();
        let read: BTreeSet<String> = src.keys_read().into_iter().collect();
        let documented = documented_keys();
        let missing: Vec<_> = read.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&read).collect();
        assert!(missing.is_empty(), "read but not in docs/configuration.md: {missing:?}");
        assert!(unknown.is_empty(), "in docs/configuration.md but never read: {unknown:?}");
    }

    #[test]
    fn api_keys_never_reach_an_error_or_a_debug_print() {
        let k = "0123456789abcdef0123456789abcdef";
        for v in [
            format!(r#"{{"https://a.example": ["{k}", "second-secret"]"#),
            format!(r#"{{"https://a.example": "{k}"}}"#),
            format!(r#"{{"{k}": ["second-secret"]}}"#),
        ] {
            let e = cfg(&[("DD_ADDITIONAL_ENDPOINTS", &v)]).unwrap_err();
            let line = e.to_string();
            assert_eq!(e.key, "DD_ADDITIONAL_ENDPOINTS");
            assert!(!line.contains(k) && !line.contains("second-secret"), "{line}");
            assert!(line.contains("bcdef"), "the last 5 characters tell keys apart: {line}");
        }
        // A key pasted into another setting.
        let line = cfg(&[("DD_DOGSTATSD_PORT", k)]).unwrap_err().to_string();
        assert!(!line.contains(k), "{line}");
        let c = cfg(&[("DD_API_KEY", k), ("DD_ADDITIONAL_ENDPOINTS", r#"{"https://b.example": ["second-secret"]}"#)])
            .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(k) && !dbg.contains("second-secret"), "{dbg}");
    }

    #[test]
    fn ops_keys() {
        let o = cfg(&[]).unwrap().ops;
        assert_eq!((o.stream_socket.clone(), o.forward.clone(), o.metrics_stats_enable), (None, None, false));
        assert_eq!(o.capture_path, PathBuf::from("./edgestat-data/dsd_capture"));
        let o = cfg(&[
            ("DD_DOGSTATSD_STREAM_SOCKET", "/tmp/s.sock"),
            ("DD_STATSD_FORWARD_HOST", "127.0.0.1"),
            ("DD_STATSD_FORWARD_PORT", "9125"),
            ("DD_DOGSTATSD_METRICS_STATS_ENABLE", "true"),
            ("EDGESTAT_STREAM_MAX_CONNECTIONS", "8"),
        ])
        .unwrap()
        .ops;
        assert_eq!(o.stream_socket, Some(PathBuf::from("/tmp/s.sock")));
        assert_eq!(o.forward, Some(("127.0.0.1".to_string(), 9125)));
        assert!(o.metrics_stats_enable);
        assert_eq!(o.stream_max_connections, 8);
        // A host without a port forwards nothing (the Agent's rule).
        assert_eq!(cfg(&[("DD_STATSD_FORWARD_HOST", "x")]).unwrap().ops.forward, None);
        assert_eq!(cfg(&[("DD_STATSD_FORWARD_PORT", "99999")]).unwrap_err().key, "DD_STATSD_FORWARD_PORT");
        assert_eq!(
            cfg(&[("EDGESTAT_STREAM_MAX_CONNECTIONS", "0")]).unwrap_err().key,
            "EDGESTAT_STREAM_MAX_CONNECTIONS"
        );
        assert_eq!(
            cfg(&[("DD_DOGSTATSD_METRICS_STATS_ENABLE", "sure")]).unwrap_err().key,
            "DD_DOGSTATSD_METRICS_STATS_ENABLE"
        );
    }

    #[test]
    fn forwarder_knobs() {
        let f = cfg(&[]).unwrap().forwarder;
        assert_eq!((f.backoff_base_s, f.backoff_max_s, f.backoff_factor), (2.0, 64.0, 2.0));
        assert_eq!((f.recovery_interval, f.recovery_reset, f.max_concurrent_requests), (2, false, 10));
        assert_eq!(f.apikey_validation_interval, Duration::from_secs(3600));
        let f = cfg(&[
            ("DD_FORWARDER_BACKOFF_BASE", "0.5"),
            ("DD_FORWARDER_BACKOFF_MAX", "8"),
            ("DD_FORWARDER_BACKOFF_FACTOR", "1"),
            ("DD_FORWARDER_RECOVERY_RESET", "true"),
            ("DD_FORWARDER_MAX_CONCURRENT_REQUESTS", "0"),
            ("DD_PROXY_HTTPS", "http://proxy:3128"),
            ("DD_NO_PROXY", "localhost .internal"),
        ])
        .unwrap()
        .forwarder;
        assert_eq!((f.backoff_base_s, f.backoff_max_s, f.backoff_factor), (0.5, 8.0, 2.0));
        assert!(f.recovery_reset);
        assert_eq!(f.max_concurrent_requests, 1);
        assert_eq!(f.proxy_https.as_deref(), Some("http://proxy:3128"));
        assert_eq!(f.no_proxy, vec!["localhost", ".internal"]);
        let f = cfg(&[("HTTPS_PROXY", "http://std:1")]).unwrap().forwarder;
        assert_eq!(f.proxy_https.as_deref(), Some("http://std:1"));
        assert!(f.no_proxy.contains(&"127.0.0.1".to_string()), "standard proxy variables skip loopback");
        assert_eq!(cfg(&[("DD_FORWARDER_BACKOFF_BASE", "x")]).unwrap_err().key, "DD_FORWARDER_BACKOFF_BASE");
        assert_eq!(cfg(&[("DD_PROXY_HTTPS", "proxy:3128")]).unwrap_err().key, "DD_PROXY_HTTPS");
    }

    const PROFILES_JSON: &str = r#"[{"name":"airflow","prefix":"airflow.","mappings":[{"match":"airflow.dag.*.*.duration","name":"airflow.dag.task.duration","tags":{"dag_id":"$1","task_id":"$2"}}]}]"#;

    #[test]
    fn mapper_profiles_from_env_json_and_yaml_list() {
        let c = cfg(&[]).unwrap();
        assert!(c.mapper.is_empty());
        assert_eq!(c.mapper.cache_size, 1000, "the Agent's default cache size");
        let c =
            cfg(&[("DD_DOGSTATSD_MAPPER_PROFILES", PROFILES_JSON), ("DD_DOGSTATSD_MAPPER_CACHE_SIZE", "50")]).unwrap();
        assert!(!c.mapper.is_empty());
        assert_eq!(c.mapper.cache_size, 50);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datadog.yaml");
        std::fs::write(
            &path,
            "dogstatsd_mapper_profiles:\n  - name: airflow\n    prefix: 'airflow.'\n    mappings:\n      - match: 'airflow.dag.*.*.duration'\n        name: 'airflow.dag.task.duration'\n        tags:\n          dag_id: '$1'\n",
        )
        .unwrap();
        let c = Config::from_sources(&Sources::from_maps(HashMap::new(), read_yaml(&path).unwrap())).unwrap();
        let mut m = crate::core::mapper::Mapper::new(c.mapper);
        assert_eq!(&*m.map(b"airflow.dag.a.b.duration").unwrap().tags[0], b"dag_id:a");
    }

    #[test]
    fn bad_mapper_settings_name_the_key() {
        let e = cfg(&[("DD_DOGSTATSD_MAPPER_PROFILES", "not json")]).unwrap_err();
        assert_eq!(e.key, "DD_DOGSTATSD_MAPPER_PROFILES");
        let e = cfg(&[(
            "DD_DOGSTATSD_MAPPER_PROFILES",
            r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a.**","name":"x"}]}]"#,
        )])
        .unwrap_err();
        assert_eq!(e.key, "DD_DOGSTATSD_MAPPER_PROFILES");
        assert!(e.to_string().contains("it should not contain consecutive `*`"), "{e}");
        for bad in ["0", "-1", "many", "1000001"] {
            assert_eq!(
                cfg(&[("DD_DOGSTATSD_MAPPER_CACHE_SIZE", bad)]).unwrap_err().key,
                "DD_DOGSTATSD_MAPPER_CACHE_SIZE"
            );
        }
    }

    #[test]
    fn histogram_copy_and_eol_required() {
        assert_eq!(cfg(&[]).unwrap().histogram_copy_to_distribution, None);
        assert_eq!(
            cfg(&[("DD_HISTOGRAM_COPY_TO_DISTRIBUTION_PREFIX", "d.")]).unwrap().histogram_copy_to_distribution,
            None
        );
        let c = cfg(&[("DD_HISTOGRAM_COPY_TO_DISTRIBUTION", "true")]).unwrap();
        assert_eq!(c.histogram_copy_to_distribution.as_deref(), Some(""));
        let c = cfg(&[
            ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION", "true"),
            ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION_PREFIX", "dist."),
        ])
        .unwrap();
        assert_eq!(c.histogram_copy_to_distribution.as_deref(), Some("dist."));
        assert_eq!(cfg(&[]).unwrap().eol_required, crate::core::shard::EolRequired::default());
        let e = cfg(&[("DD_DOGSTATSD_EOL_REQUIRED", "udp named_pipe")]).unwrap().eol_required;
        assert_eq!(e, crate::core::shard::EolRequired { udp: true, uds: false, named_pipe: true });
        assert_eq!(cfg(&[("DD_DOGSTATSD_EOL_REQUIRED", "udp tcp")]).unwrap_err().key, "DD_DOGSTATSD_EOL_REQUIRED");
    }

    #[test]
    fn host_tags_and_expected_tags_duration() {
        let c = cfg(&[]).unwrap();
        assert!(c.host_tags.is_empty());
        assert_eq!(c.expected_tags_duration, Duration::ZERO);
        assert!(c.enable_metadata_collection);
        let c = cfg(&[
            ("DD_TAGS", "team:core env:prod"),
            ("DD_EXTRA_TAGS", "zone:a team:core"),
            ("DD_ENV", "prod"),
            ("DD_EXPECTED_TAGS_DURATION", "10m"),
        ])
        .unwrap();
        assert_eq!(c.host_tags, vec!["env:prod", "team:core", "zone:a"]);
        assert_eq!(c.expected_tags_duration, Duration::from_secs(600));
        assert_eq!(cfg(&[("DD_EXPECTED_TAGS_DURATION", "soon")]).unwrap_err().key, "DD_EXPECTED_TAGS_DURATION");
        assert!(!cfg(&[("DD_ENABLE_METADATA_COLLECTION", "false")]).unwrap().enable_metadata_collection);
    }

    #[test]
    fn go_durations() {
        let d = |v: &str| parse_go_duration("k", v).unwrap();
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("600"), Duration::from_nanos(600), "a bare number is nanoseconds, as in the Agent");
        assert!(parse_go_duration("k", "10 minutes").is_err());
        assert!(parse_go_duration("k", "-1m").is_err());
        assert!(parse_go_duration("k", "9999h").is_err());
    }
}
