//! Internal telemetry as Prometheus text at `EDGESTAT_TELEMETRY_ADDR`
//! `/metrics`.
//!
//! Off the hot path by construction: each shard copies its cumulative
//! counters into its own slot a few times a second ([`LiveShardStats`]),
//! so a scrape sees traffic before the first flush; the flusher records
//! payload counts locally and, once per flush, publishes a snapshot under
//! a mutex only it and the scraper take. Forwarder, hand-over and API
//! counters are atomics / small maps read at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::agent::api::ApiShared;
use crate::agent::flusher::stats::FlushSnapshot;
use crate::agent::forwarder::ForwarderStats;
use crate::agent::handover::{LiveShardStats, ShardHealth, ShardStatus};
use crate::agent::http_server::{respond, ListenError, ServerHandle};

/// Everything `/metrics` reads.
#[derive(Clone)]
pub struct Sources {
    /// The flusher's snapshot.
    pub flush: Arc<Mutex<FlushSnapshot>>,
    /// Forwarders by name (`metrics`, `orchestrator`).
    pub forwarders: Vec<(&'static str, Arc<ForwarderStats>)>,
    /// The local API, when on.
    pub api: Option<Arc<ApiShared>>,
    /// Stream socket, raw forwarding and capture counters.
    pub ops: Option<Arc<crate::agent::status::Ops>>,
    /// Shard counters published by the shards themselves.
    pub live: Option<Arc<LiveShardStats>>,
    /// Per-shard hand-over state.
    pub shards: Option<Arc<ShardHealth>>,
    /// The memory limit and the context budget it feeds.
    pub memory: Option<Arc<crate::agent::memory_limit::MemoryPlan>>,
    /// The kernel's drop counters of the UDP sockets.
    pub udp_drops: Option<Arc<crate::agent::udp_drops::UdpKernelDrops>>,
}

/// Serves `/metrics` on `addr`.
pub fn start_server(addr: std::net::SocketAddr, sources: Sources) -> Result<ServerHandle, ListenError> {
    let sources = Arc::new(sources);
    let h = crate::agent::http_server::spawn("edgestat-telemetry", addr, move |req| {
        let sources = sources.clone();
        async move {
            if req.uri().path() != "/metrics" {
                return respond(404, "text/plain", "not found; try /metrics\n");
            }
            if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
                return respond(405, "text/plain", "use GET\n");
            }
            respond(200, "text/plain; version=0.0.4; charset=utf-8", render(&sources))
        }
    })
    .map_err(|source| ListenError { setting: "EDGESTAT_TELEMETRY_ADDR", addr, source })?;
    tracing::info!(addr = %h.local_addr, "telemetry listening on /metrics");
    Ok(h)
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {v}");
    }
    fn labeled<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        rows: impl Iterator<Item = (&'a str, f64)>,
    ) {
        self.head(name, kind, help);
        for (l, v) in rows {
            let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {v}", esc(l));
        }
    }
}

/// The Prometheus text exposition of every counter.
pub fn render(src: &Sources) -> String {
    let snap = src.flush.lock().map(|g| g.clone()).unwrap_or_default();
    let mut o = Out(String::with_capacity(8192));

    // Live when the shards publish (the agent), else as of the last flush.
    let live = src.live.as_ref().map(|l| l.sum());
    let s = live.as_ref().unwrap_or(&snap.shard);
    o.one(
        "edgestat_dogstatsd_packets_total",
        "counter",
        "Datagrams (UDP and Unix socket) read by the shards, updated every 250 ms.",
        s.packets as f64,
    );
    o.one("edgestat_dogstatsd_bytes_total", "counter", "Bytes of the datagrams read by the shards.", s.bytes as f64);
    if let Some(d) = &src.udp_drops {
        o.one(
            "edgestat_dogstatsd_udp_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped because a UDP socket's receive buffer was full (its count in /proc/net/udp, read at scrape time); raise DD_DOGSTATSD_SO_RCVBUF.",
            d.total() as f64,
        );
    }
    o.one(
        "edgestat_dogstatsd_udp_standby_datagrams_total",
        "counter",
        "UDP datagrams read by a shard's standby reader (a thread on another CPU that reads the socket while the queue passes a quarter of its buffer, i.e. the shard could not keep up), all parsed by the shard.",
        s.udp_standby_datagrams as f64,
    );
    o.one(
        "edgestat_dogstatsd_udp_standby_pool_full_total",
        "counter",
        "Times a UDP standby reader found its pool (EDGESTAT_UDP_STANDBY_BYTES) exhausted and left the datagrams to the kernel's buffer.",
        s.udp_standby_pool_full as f64,
    );
    o.one(
        "edgestat_dogstatsd_read_errors_total",
        "counter",
        "Failed socket reads (the datagram, if any, is lost).",
        s.read_errors as f64,
    );
    o.one(
        "edgestat_dogstatsd_metric_lines_total",
        "counter",
        "Metric lines parsed (valid or not), one per line of a datagram.",
        s.metric_lines as f64,
    );
    o.one(
        "edgestat_dogstatsd_metric_samples_total",
        "counter",
        "Metric samples aggregated into a context (a multi-value line counts each value).",
        s.metric_samples as f64,
    );
    o.one("edgestat_dogstatsd_events_total", "counter", "DogStatsD events queued for the next flush.", s.events as f64);
    o.one(
        "edgestat_dogstatsd_service_checks_total",
        "counter",
        "DogStatsD service checks queued for the next flush.",
        s.service_checks as f64,
    );
    o.labeled(
        "edgestat_dogstatsd_parse_errors_total",
        "counter",
        "Malformed lines dropped, by kind.",
        "kind",
        s.parse_errors.iter().map(|(k, v)| (*k, *v as f64)),
    );
    if let Some(m) = &src.memory {
        o.one(
            "edgestat_memory_limit_bytes",
            "gauge",
            "EDGESTAT_MEMORY_LIMIT in effect (0: off).",
            m.limit_bytes.unwrap_or(0) as f64,
        );
        o.one(
            "edgestat_memory_estimated_bytes",
            "gauge",
            "Estimated footprint: the configured buffers' fixed bytes plus the live contexts' estimate.",
            m.estimated_bytes() as f64,
        );
        o.one(
            "edgestat_memory_fixed_bytes",
            "gauge",
            "Bytes reserved at start for the configured buffers (queues, windows, receive batches).",
            m.fixed.total() as f64,
        );
    }
    o.labeled(
        "edgestat_dogstatsd_dropped_total",
        "counter",
        "Samples dropped at aggregation, by reason.",
        "reason",
        s.dropped.iter().map(|(k, v)| (*k, *v as f64)),
    );
    o.one(
        "edgestat_aggregator_contexts",
        "gauge",
        "Live contexts over all shards at the last flush.",
        snap.contexts as f64,
    );
    if let Some(h) = &src.shards {
        let st = h.snapshot();
        o.one(
            "edgestat_late_shard_flushes_total",
            "counter",
            "Shard flush answers that missed their flush's deadline and were merged into a later flush (nothing lost).",
            h.late_shard_flushes() as f64,
        );
        let rows = |f: &dyn Fn(&ShardStatus) -> f64| st.iter().map(|x| (x.shard.to_string(), f(x))).collect::<Vec<_>>();
        let mut per_shard = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            o.labeled(name, kind, help, "shard", rows.iter().map(|(l, v)| (l.as_str(), *v)));
        };
        per_shard(
            "edgestat_shard_answering",
            "gauge",
            "1 if the shard answers flush requests within the reply timeout (5 s), 0 while a request waits longer.",
            rows(&|x| if x.answering { 1.0 } else { 0.0 }),
        );
        per_shard(
            "edgestat_shard_last_answer_timestamp_seconds",
            "gauge",
            "Unix time of the shard's last flush answer (0: none yet).",
            rows(&|x| x.last_answer_unix_ms as f64 / 1000.0),
        );
        per_shard(
            "edgestat_shard_missed_flushes_total",
            "counter",
            "Flushes that went out without this shard's answer (its data joined a later flush).",
            rows(&|x| x.missed_flushes as f64),
        );
    }

    o.one("edgestat_flush_total", "counter", "Flushes done.", snap.flushes as f64);
    o.head(
        "edgestat_flush_duration_seconds",
        "summary",
        "Flush duration (collect, merge, serialize, hand to forwarders).",
    );
    for (q, v) in &snap.duration_quantiles {
        let _ = writeln!(o.0, "edgestat_flush_duration_seconds{{quantile=\"{q}\"}} {v}");
    }
    let _ = writeln!(o.0, "edgestat_flush_duration_seconds_sum {}", snap.duration_sum_secs);
    let _ = writeln!(o.0, "edgestat_flush_duration_seconds_count {}", snap.flushes);
    o.one("edgestat_flush_duration_max_seconds", "gauge", "Longest flush.", snap.duration_max_secs);
    o.one(
        "edgestat_flush_last_timestamp_seconds",
        "gauge",
        "Unix time of the last flush.",
        snap.last_flush_unix as f64,
    );
    o.one(
        "edgestat_flush_forwarder_wait_seconds_total",
        "counter",
        "Time the flusher waited for room in a forwarder queue.",
        snap.forwarder_wait_secs,
    );
    o.one(
        "edgestat_flush_forwarder_waits_total",
        "counter",
        "Payload submissions that had to wait.",
        snap.forwarder_waits as f64,
    );

    let kinds = &snap.kinds;
    o.labeled(
        "edgestat_serializer_payloads_total",
        "counter",
        "Payloads built, by kind.",
        "kind",
        kinds.iter().map(|(k, c)| (*k, c.payloads as f64)),
    );
    o.labeled(
        "edgestat_serializer_payload_bytes_total",
        "counter",
        "Compressed payload bytes, by kind.",
        "kind",
        kinds.iter().map(|(k, c)| (*k, c.bytes as f64)),
    );
    o.labeled(
        "edgestat_serializer_items_total",
        "counter",
        "Items in payloads, by kind.",
        "kind",
        kinds.iter().map(|(k, c)| (*k, c.items as f64)),
    );
    let z = &snap.serializer;
    let ser: [(&str, u64, &str); 20] = [
        ("total_calls", z.total_calls, "Payload builds started."),
        ("total_items", z.total_items, "Items offered to the builder."),
        ("write_item_errors", z.write_item_errors, "Items the builder could not write."),
        ("payload_full", z.payload_full, "Times a payload was full and cut."),
        ("item_drops", z.item_drops, "Items dropped unexpectedly (JSON kinds)."),
        ("compressor_payloads", z.total_payloads, "Payloads closed by the compressor."),
        ("compressor_cycles", z.total_cycles, "Pack and flush cycles of the compressor."),
        ("compressor_bytes_in", z.bytes_in, "Uncompressed bytes fed to the compressor."),
        ("compressor_bytes_out", z.bytes_out, "Compressed bytes produced."),
        ("series_item_too_big", z.series_item_too_big, "Series dropped: too big for any payload."),
        ("series_payload_full", z.series_payload_full, "Series payloads cut because full."),
        ("series_unexpected_item_drops", z.series_unexpected_item_drops, "Series dropped unexpectedly."),
        ("series_items", z.series_items, "Series serialized."),
        ("sketch_too_big", z.sketch_too_big, "Sketches dropped: too big for any payload."),
        ("sketch_payload_full", z.sketch_payload_full, "Sketch payloads cut because full."),
        ("sketch_unexpected_item_drops", z.sketch_unexpected_item_drops, "Sketches dropped unexpectedly."),
        ("events_sent", z.events_sent, "Events serialized."),
        ("events_dropped", z.events_dropped, "Events dropped: too big for an empty payload."),
        ("events_payloads", z.events_payloads, "Event payloads built."),
        ("compress_errors", z.compress_errors, "Compressor failures."),
    ];
    for (name, v, help) in ser {
        o.one(&format!("edgestat_serializer_{name}_total"), "counter", help, v as f64);
    }

    // Every forwarder counter, named after the Agent's `transactions.*`.
    let fw = &src.forwarders;
    if let Some((_, first)) = fw.first() {
        for (i, (field, _)) in first.fields().into_iter().enumerate() {
            let (name, kind) = match field {
                "retry_queue_bytes" | "retry_queue_payloads" | "window_bytes" | "window_max_bytes" => {
                    (format!("edgestat_forwarder_{field}"), "gauge")
                }
                f => (format!("edgestat_forwarder_transactions_{f}_total"), "counter"),
            };
            let rows: Vec<(&str, f64)> = fw.iter().map(|(n, s)| (*n, s.fields()[i].1 as f64)).collect();
            o.labeled(&name, kind, "Forwarder counter (see docs/delivery.md).", "forwarder", rows.into_iter());
        }
    }

    if let Some(api) = &src.api {
        let st = &api.stats;
        o.head("edgestat_api_requests_total", "counter", "Local API requests, by route and status.");
        if let Ok(m) = st.requests.lock() {
            for ((route, code), v) in m.iter() {
                let _ = writeln!(o.0, "edgestat_api_requests_total{{route=\"{route}\",code=\"{code}\"}} {v}");
            }
        }
        let accepted = st.accepted.lock().map(|m| m.clone()).unwrap_or_default();
        o.labeled(
            "edgestat_api_accepted_total",
            "counter",
            "Items accepted by the local API, by kind.",
            "kind",
            accepted.iter().map(|(k, v)| (*k, *v as f64)),
        );
        let dropped = st.dropped.lock().map(|m| m.clone()).unwrap_or_default();
        o.labeled(
            "edgestat_api_dropped_total",
            "counter",
            "Requests or items refused by the local API, by reason.",
            "reason",
            dropped.iter().map(|(k, v)| (*k, *v as f64)),
        );
        o.one(
            "edgestat_api_manifests_sent_total",
            "counter",
            "Manifests handed to the orchestrator forwarder at flushes.",
            st.manifests_sent.load(Ordering::Relaxed) as f64,
        );
    }
    if let Some(ops) = &src.ops {
        render_ops(&mut o, ops);
    }
    o.0
}

fn render_ops(o: &mut Out, ops: &crate::agent::status::Ops) {
    fn g(a: &std::sync::atomic::AtomicU64) -> f64 {
        a.load(Ordering::Relaxed) as f64
    }
    if let Some((_, shards)) = &ops.forward {
        let sum = |f: fn(&crate::agent::tap::ForwardStats) -> f64| shards.iter().map(|s| f(s)).sum::<f64>();
        o.one(
            "edgestat_statsd_forward_packets_total",
            "counter",
            "Datagrams forwarded to statsd_forward_host.",
            sum(|s| g(&s.sent)),
        );
        o.one(
            "edgestat_statsd_forward_bytes_total",
            "counter",
            "Bytes forwarded to statsd_forward_host.",
            sum(|s| g(&s.bytes)),
        );
        o.one(
            "edgestat_statsd_forward_errors_total",
            "counter",
            "Datagrams not forwarded (socket buffer full, target refusing).",
            sum(|s| g(&s.errors)),
        );
    }
    if let Some(st) = &ops.stream {
        o.one("edgestat_stream_connections", "gauge", "Unix stream socket clients connected.", g(&st.open));
        o.one(
            "edgestat_stream_connections_accepted_total",
            "counter",
            "Unix stream socket connections accepted.",
            g(&st.accepted),
        );
        o.one("edgestat_stream_frames_total", "counter", "Unix stream socket frames read.", g(&st.frames));
        o.one(
            "edgestat_stream_bad_frames_total",
            "counter",
            "Unix stream connections closed for a bad frame.",
            g(&st.bad_frames),
        );
        o.one(
            "edgestat_stream_truncated_frames_total",
            "counter",
            "Unix stream connections that ended mid-frame.",
            g(&st.truncated),
        );
        o.one(
            "edgestat_stream_connection_limit_waits_total",
            "counter",
            "Accepts delayed by EDGESTAT_STREAM_MAX_CONNECTIONS.",
            g(&st.connection_limit_waits),
        );
    }
    let c = ops.capture.status();
    o.one("edgestat_capture_running", "gauge", "1 while a traffic capture runs.", if c.running { 1.0 } else { 0.0 });
    o.one(
        "edgestat_capture_datagrams_total",
        "counter",
        "Datagrams written by the current or last capture.",
        c.datagrams as f64,
    );
    o.labeled(
        "edgestat_capture_dropped_total",
        "counter",
        "Datagrams left out of the current or last capture, by reason.",
        "reason",
        [("buffer_full", c.dropped_buffer_full as f64), ("size_limit", c.dropped_size_limit as f64)].into_iter(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::flusher::stats::FlushRecorder;
    use crate::agent::flusher::FlushSummary;
    use crate::core::serializer::SerializerStats;
    use std::time::Duration;

    #[test]
    fn render_has_types_and_labels() {
        let mut r = FlushRecorder::new();
        r.on_payload("series_v2", 100, 3);
        r.on_payload("series_v2", 50, 2);
        let mut summary = FlushSummary::default();
        summary.stats.packets = 7;
        summary.stats.parse_errors.insert("bad \"kind\"", 2);
        r.publish(&summary, SerializerStats::default(), Duration::from_millis(3));
        let text = render(&Sources {
            flush: r.shared(),
            forwarders: vec![("metrics", Arc::new(ForwarderStats::default()))],
            api: None,
            ops: None,
            live: None,
            shards: None,
            memory: Some(Arc::new(
                crate::agent::memory_limit::plan(
                    crate::agent::memory_limit::MemoryLimitSetting::Bytes(64 << 20),
                    None,
                    crate::agent::memory_limit::FixedCosts { parts: vec![("io memory", 1 << 20)] },
                    10,
                )
                .unwrap(),
            )),
            udp_drops: None,
        });
        assert!(text.contains("edgestat_dogstatsd_packets_total 7\n"), "{text}");
        assert!(text.contains("edgestat_memory_limit_bytes 67108864\n"), "{text}");
        assert!(text.contains("edgestat_memory_estimated_bytes 1048576\n"), "{text}");
        assert!(text.contains("edgestat_serializer_payloads_total{kind=\"series_v2\"} 2\n"));
        assert!(text.contains("edgestat_serializer_items_total{kind=\"series_v2\"} 5\n"));
        assert!(text.contains("edgestat_dogstatsd_parse_errors_total{kind=\"bad \\\"kind\\\"\"} 2\n"));
        assert!(text.contains("edgestat_flush_total 1\n"));
        assert!(text.contains("# TYPE edgestat_flush_duration_seconds summary"));
        assert!(text.contains("edgestat_forwarder_transactions_dropped_shutdown_total{forwarder=\"metrics\"} 0"));
        assert!(text.contains("# TYPE edgestat_forwarder_retry_queue_bytes gauge"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }
}
