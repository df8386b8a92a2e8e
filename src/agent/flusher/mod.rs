//! The flush coordinator: every flush interval it asks each shard for its
//! closed buckets, merges them, appends the Agent's own series and service
//! check, serializes every enabled payload kind and hands the payloads to
//! the forwarder. Runs on its own thread; talks to shards only through
//! bounded crossbeam channels.

use crossbeam_channel::Receiver;

use crate::agent::clock::unix_now;
use crate::agent::config::{Config, AGENT_VERSION};
use crate::agent::forwarder::{Forwarder, Payload};
use crate::agent::handover::{ControlSender, Handover};
use crate::core::aggregator::{bucket_start, render_sketches, FlushMerger, FlushSettings, BUCKET_SECONDS};
use crate::core::model::{Event, MetricType, Origin, Point, Series, SeriesId, ServiceCheck};
use crate::core::serializer::{PayloadKind, PayloadSink, Serializer};
use crate::core::shard::ShardStats;

pub mod stats;

/// Version of the agent-payload protobuf definitions we encode
/// (`DD-Agent-Payload` header on protobuf payloads).
pub const AGENT_PAYLOAD_VERSION: &str = "v5.0.174";

fn kind_label(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::SeriesV1 => "series_v1",
        PayloadKind::SeriesV2 => "series_v2",
        PayloadKind::Sketches => "sketches",
        PayloadKind::ServiceChecks => "service_checks",
        PayloadKind::Events => "events",
    }
}

/// Per-flush summary (printed in embedded mode, kept for telemetry).
#[derive(Debug, Default, Clone)]
pub struct FlushSummary {
    /// Series sent.
    pub series: usize,
    /// Sketch contexts sent.
    pub sketches: usize,
    /// Service checks sent (including `datadog.agent.up`).
    pub service_checks: usize,
    /// Events sent.
    pub events: usize,
    /// Payloads produced.
    pub payloads: usize,
    /// Compressed bytes produced.
    pub bytes: usize,
    /// Cumulative shard counters.
    pub stats: ShardStats,
    /// Live contexts over all shards.
    pub contexts: usize,
}

/// Owns the merge and serialization state across flushes.
pub struct Flusher {
    cfg: Config,
    handover: Handover,
    merger: FlushMerger,
    serializer: Serializer,
    forwarder: Forwarder,
    start_time: i64,
    started_sent: bool,
    startup_event: Option<Event>,
    /// Drop counters already reported, to log only what is new.
    reported_drops: std::collections::BTreeMap<&'static str, u64>,
    /// Called with each flush summary (embedded mode prints it).
    on_flush: Box<dyn FnMut(&FlushSummary) + Send>,
    /// Local submission API: events/checks drained and manifests sent at each flush.
    api: Option<crate::agent::api::ApiFlushSide>,
    /// Telemetry recorder, published once per flush.
    telemetry: Option<stats::FlushRecorder>,
    /// Beaten after every flush; faulted while a shard does not answer.
    health: Option<std::sync::Arc<crate::agent::health::Component>>,
    /// Host tags added to every series and sketch early on (`expected_tags_duration`).
    expected_tags: crate::core::host_tags::ExpectedTags,
    /// The host metadata payload's content (`None`: `enable_metadata_collection` off).
    host_metadata: Option<crate::core::host_metadata::HostMetadataSettings>,
    /// Host metadata payloads sent so far.
    host_metadata_sent: u32,
}

impl Flusher {
    /// A flusher for `shards`, shipping through `forwarder`.
    pub fn new(
        cfg: Config,
        shards: Vec<ControlSender>,
        forwarder: Forwarder,
        on_flush: Box<dyn FnMut(&FlushSummary) + Send>,
    ) -> Result<Self, crate::core::serializer::CompressError> {
        let mut serializer = Serializer::new(cfg.serializer)?;
        serializer.set_encode_threads(cfg.flush_encode_threads)?;
        let settings = FlushSettings {
            histogram_aggregates: cfg.histogram_aggregates.clone(),
            histogram_percentiles: cfg.histogram_percentiles.clone(),
            expiry_seconds: cfg.expiry_seconds,
            context_expiry_seconds: cfg.context_expiry_seconds,
            blocklist: std::sync::Arc::new(crate::core::filter::MetricFilter::new(
                &cfg.metric_blocklist,
                cfg.metric_blocklist_match_prefix,
            )),
        };
        let start_time = unix_now();
        let startup_event = Some(Event {
            title: String::new(),
            text: format!("Version {AGENT_VERSION}"),
            timestamp: start_time,
            host: cfg.hostname.clone(),
            source_type_name: "System".into(),
            event_type: "Agent Startup".into(),
            ..Default::default()
        });
        let expected_tags = crate::core::host_tags::ExpectedTags::new(
            cfg.host_tags.clone(),
            start_time,
            cfg.expected_tags_duration.as_secs() as i64,
        );
        let host_metadata = cfg.enable_metadata_collection.then(|| crate::core::host_metadata::HostMetadataSettings {
            hostname: cfg.hostname.clone(),
            api_key: cfg.endpoint.as_ref().and_then(|e| e.api_keys.first().cloned()).unwrap_or_default(),
            agent_version: AGENT_VERSION.into(),
            host_tags: cfg.host_tags.clone(),
            facts: crate::agent::hostname::host_facts(),
        });
        Ok(Self {
            merger: FlushMerger::new(settings, cfg.max_contexts),
            serializer,
            cfg,
            handover: Handover::new(shards),
            forwarder,
            start_time,
            started_sent: false,
            startup_event,
            reported_drops: Default::default(),
            on_flush,
            api: None,
            telemetry: None,
            health: None,
            expected_tags,
            host_metadata,
            host_metadata_sent: 0,
        })
    }

    /// Drains the local API's queues at every flush (and sends its manifests).
    pub fn attach_api(&mut self, api: crate::agent::api::ApiFlushSide) {
        self.api = Some(api);
    }

    /// Per-shard hand-over state (telemetry, health).
    pub fn shard_health(&self) -> std::sync::Arc<crate::agent::handover::ShardHealth> {
        self.handover.health()
    }

    /// Publishes telemetry after every flush.
    pub fn attach_telemetry(&mut self, recorder: stats::FlushRecorder) {
        self.telemetry = Some(recorder);
    }

    /// Reports every finished flush to `GET /health`.
    pub fn attach_health(&mut self, component: std::sync::Arc<crate::agent::health::Component>) {
        self.health = Some(component);
    }

    /// Runs until `stop` fires (or is dropped), then performs the final
    /// flush of every bucket and returns the forwarder for draining.
    pub fn run(mut self, stop: Receiver<()>) -> Forwarder {
        let ticker = crossbeam_channel::tick(self.cfg.flush_interval);
        // Host metadata: at start, then on the Agent's schedule.
        let mut next_metadata = self.send_host_metadata();
        loop {
            let metadata_due = match next_metadata {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(ticker) -> _ => self.flush(false),
                recv(metadata_due) -> _ => next_metadata = self.send_host_metadata(),
                recv(stop) -> _ => break,
            }
        }
        self.flush(true);
        self.forwarder
    }

    /// Sends the host metadata payload (compressed like the other JSON
    /// payloads) and returns when the next one is due.
    fn send_host_metadata(&mut self) -> Option<std::time::Instant> {
        let settings = self.host_metadata.as_ref()?;
        let json = crate::core::host_metadata::payload_json(settings);
        let compression = self.cfg.serializer.compression;
        let mut body = Vec::with_capacity(compression.bound(json.len()));
        let compressed = crate::core::serializer::StreamEncoder::new(compression).and_then(|mut e| {
            e.begin(&mut body)?;
            e.write(&json, &mut body)?;
            e.finish(&mut body)
        });
        self.host_metadata_sent += 1;
        let next = std::time::Instant::now() + crate::core::host_metadata::next_interval(self.host_metadata_sent);
        if let Err(e) = compressed {
            tracing::error!(error = %e, "cannot compress the host metadata payload");
            return Some(next);
        }
        let headers = vec![
            ("Content-Type", "application/json".to_string()),
            ("Content-Encoding", compression.content_encoding().to_string()),
        ];
        self.forwarder.submit(Payload {
            kind: "host_metadata",
            path: crate::core::host_metadata::PATH,
            body: body.into(),
            headers,
        });
        Some(next)
    }

    fn flush(&mut self, final_flush: bool) {
        let started = std::time::Instant::now();
        let now = unix_now();
        self.forwarder.new_batch();
        let collected = self.handover.collect(now, final_flush);
        if let (Some(h), false) = (&self.health, final_flush) {
            match collected.missing {
                0 => h.clear_fault(),
                n => h.set_fault(format!(
                    "{n} of {} shards did not answer the last flush request",
                    self.handover.shard_count()
                )),
            }
        }

        let mut summary = FlushSummary { stats: collected.stats, contexts: collected.contexts, ..Default::default() };
        let mut metrics = Vec::new();
        let mut sketches = Vec::new();
        let mut passthrough = Vec::new();
        let mut events = Vec::new();
        let mut checks = Vec::new();
        let total_metrics = collected.parts.iter().map(|p| p.metrics.len()).sum();
        let total_sketches = collected.parts.iter().map(|p| p.sketches.len()).sum();
        for p in collected.parts {
            concat(&mut metrics, p.metrics, total_metrics);
            concat(&mut sketches, p.sketches, total_sketches);
            passthrough.extend(p.passthrough);
            events.extend(p.events);
            checks.extend(p.service_checks);
        }
        if let Some(api) = &self.api {
            api.take(&mut events, &mut checks);
        }
        let closed_buckets = !metrics.is_empty() || !sketches.is_empty();
        // Series and sketches are encoded as they are rendered and each
        // payload is shipped as soon as it is closed: at 100k contexts
        // neither the rendered series nor the compressed payloads of a whole
        // flush are ever held at once (they were its memory peak). The
        // parallel encoder (`EDGESTAT_FLUSH_ENCODE_THREADS` > 1) splits a
        // slice, so it still collects the series first.
        let mut tail = passthrough;
        self.append_agent_series(&mut tail, now, final_flush);
        let series_kind = if self.cfg.use_v2_api_series { PayloadKind::SeriesV2 } else { PayloadKind::SeriesV1 };
        let parallel = self.serializer.encode_threads() > 1 && self.cfg.use_v2_api_series;
        let (enable_series, log_payloads) = (self.cfg.enable_series, self.cfg.log_payloads);
        let expected_tags = &self.expected_tags;
        let serializer = &mut self.serializer;
        let mut shipper = Shipper {
            forwarder: &self.forwarder,
            telemetry: &mut self.telemetry,
            summary: &mut summary,
            kind: series_kind,
            encoding: self.cfg.serializer.compression.content_encoding(),
            final_flush,
        };
        let mut collected = Vec::new();
        let mut series_count = 0;
        if enable_series && !parallel {
            serializer.begin_series(series_kind);
        }
        let mut on_series = |mut s: Series| {
            expected_tags.apply(now, std::slice::from_mut(&mut s), &mut []);
            if log_payloads {
                tracing::info!(target: "edgestat::payloads", series = ?s);
            }
            series_count += 1;
            if !enable_series {
            } else if parallel {
                collected.push(s);
            } else {
                serializer.add_series(series_kind, &s, &mut shipper);
            }
        };
        self.merger.flush_series(metrics, &sketches, now, &mut on_series);
        tail.into_iter().for_each(&mut on_series);
        if enable_series {
            if parallel {
                serializer.series_v2_slice(&collected, &mut shipper);
                drop(collected);
            } else {
                serializer.finish_series(series_kind, &mut shipper);
            }
            shipper.summary.series = series_count;
        }
        if self.cfg.enable_sketches || log_payloads {
            shipper.kind = PayloadKind::Sketches;
            let (enable_sketches, mut begun, mut n) = (self.cfg.enable_sketches, false, 0);
            render_sketches(sketches, &mut |mut s| {
                expected_tags.apply(now, &mut [], std::slice::from_mut(&mut s));
                if log_payloads {
                    tracing::info!(target: "edgestat::payloads", sketch = ?s);
                }
                if enable_sketches {
                    if !begun {
                        serializer.begin_sketches();
                        begun = true;
                    }
                    serializer.add_sketch(&s, &mut shipper);
                    n += 1;
                }
            });
            if begun {
                serializer.finish_sketches(&mut shipper);
                shipper.summary.sketches = n;
            }
        }
        checks.push(ServiceCheck {
            check: "datadog.agent.up".into(),
            host_name: self.cfg.hostname.clone(),
            timestamp: now,
            status: 0,
            message: String::new(),
            tags: Vec::new(),
        });
        if let Some(e) = self.startup_event.take() {
            events.insert(0, e);
        }
        if log_payloads {
            for c in &checks {
                tracing::info!(target: "edgestat::payloads", service_check = ?c);
            }
            for e in &events {
                tracing::info!(target: "edgestat::payloads", event = ?e);
            }
        }

        let mut built = Vec::new();
        if self.cfg.enable_service_checks {
            summary.service_checks = checks.len();
            self.serializer.service_checks(checks.iter(), &mut built);
            self.ship(PayloadKind::ServiceChecks, &mut built, &mut summary, final_flush);
        }
        if self.cfg.enable_events && !events.is_empty() {
            summary.events = events.len();
            let host = self.cfg.hostname.clone();
            self.serializer.events(&mut events, &host, &mut built);
            self.ship(PayloadKind::Events, &mut built, &mut summary, final_flush);
        }
        self.log_new_drops(&summary.stats);
        // Orchestrator manifests go last, like the Agent's flush; each is its
        // own payload on the orchestrator forwarder.
        if let Some(api) = &self.api {
            api.send_manifests(now);
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            elapsed_us = started.elapsed().as_micros() as u64,
            payloads = summary.payloads,
            "flush done"
        );
        if closed_buckets {
            release_freed_memory();
        }
        if let Some(t) = &mut self.telemetry {
            t.publish(&summary, self.serializer.stats(), started.elapsed());
        }
        (self.on_flush)(&summary);
        if let Some(h) = &self.health {
            h.beat();
        }
    }

    /// Hands payloads to the forwarder (see [`Shipper`]).
    fn ship(
        &mut self,
        kind: PayloadKind,
        built: &mut Vec<crate::core::serializer::Payload>,
        summary: &mut FlushSummary,
        final_flush: bool,
    ) {
        let mut shipper = Shipper {
            forwarder: &self.forwarder,
            telemetry: &mut self.telemetry,
            summary,
            kind,
            encoding: self.cfg.serializer.compression.content_encoding(),
            final_flush,
        };
        for p in built.drain(..) {
            shipper.put(p);
        }
    }

    /// One warning line per flush naming every drop reason that grew.
    fn log_new_drops(&mut self, stats: &ShardStats) {
        let mut parts = Vec::new();
        for (reason, total) in stats.dropped.iter().chain(stats.parse_errors.iter()) {
            let before = self.reported_drops.insert(reason, *total).unwrap_or(0);
            if *total > before {
                if *reason == "memory_limit" && before == 0 {
                    tracing::warn!(
                        "new contexts refused: their estimated memory would pass EDGESTAT_MEMORY_LIMIT; their samples are dropped and counted as memory_limit"
                    );
                }
                parts.push(format!("{reason}={}", total - before));
            }
        }
        if !parts.is_empty() {
            tracing::warn!("dropped since the last flush: {}", parts.join(" "));
        }
    }

    fn append_agent_series(&mut self, series: &mut Vec<Series>, now: i64, final_flush: bool) {
        let version_tag = format!("version:{AGENT_VERSION}");
        series.push(Series {
            id: SeriesId::owned("datadog.agent.running".into(), self.cfg.hostname.clone(), vec![version_tag.clone()]),
            points: vec![Point { timestamp: now, value: 1.0 }],
            metric_type: MetricType::Gauge,
            interval: 0,
            source_type_name: "System".into(),
            origin: Origin::Internal,
        });
        series.push(Series {
            id: SeriesId::owned(
                "n_o_i_n_d_e_x.datadog.agent.payload.dropped".into(),
                self.cfg.hostname.clone(),
                Vec::new(),
            ),
            points: vec![Point { timestamp: now, value: 0.0 }],
            metric_type: MetricType::Gauge,
            interval: 0,
            source_type_name: "System".into(),
            origin: Origin::InternalNoIndex,
        });
        // `datadog.agent.started` goes through the time sampler in the
        // Agent: one count point at its bucket start once that bucket closes.
        let bucket = bucket_start(self.start_time);
        let cutoff = now - now.rem_euclid(BUCKET_SECONDS);
        if !self.started_sent && (final_flush || bucket + BUCKET_SECONDS <= cutoff) {
            self.started_sent = true;
            series.push(Series {
                id: SeriesId::owned("datadog.agent.started".into(), self.cfg.hostname.clone(), vec![version_tag]),
                points: vec![Point { timestamp: bucket, value: 1.0 }],
                metric_type: MetricType::Count,
                interval: BUCKET_SECONDS,
                source_type_name: String::new(),
                origin: Origin::Internal,
            });
        }
    }
}

/// Gives the memory a flush of closed buckets freed back to the system.
/// glibc keeps freed chunks inside its arenas, and the flush frees them on
/// another thread than the shard that allocated them, so without this the
/// resident set stays at the flush's high-water mark (100k contexts of
/// ~150 B lines: 97 MiB resident between flushes, 79 MiB with the trim;
/// perf/flush-memory.md). Once per flush that carried closed buckets, not
/// per line.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas
    // to the kernel; it takes the arena locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Appends one shard's entries to the flush's (`total` over all shards):
/// a shard holding them all hands its exact-sized vector over as is, others
/// are copied into one vector reserved once (copying into a vector that
/// doubles would hold up to three times the entries at the flush's peak).
fn concat<T>(into: &mut Vec<T>, part: Vec<T>, total: usize) {
    if into.is_empty() && part.len() == total {
        *into = part;
        return;
    }
    if into.capacity() < total {
        into.reserve_exact(total - into.len());
    }
    into.extend(part);
}

/// Hands each payload to the forwarder as the serializer closes it, waiting
/// for room in its window (not at the final flush: its payloads exist
/// already and the shutdown deadline bounds them).
struct Shipper<'a> {
    forwarder: &'a Forwarder,
    telemetry: &'a mut Option<stats::FlushRecorder>,
    summary: &'a mut FlushSummary,
    kind: PayloadKind,
    encoding: &'static str,
    final_flush: bool,
}

impl PayloadSink for Shipper<'_> {
    fn put(&mut self, p: crate::core::serializer::Payload) {
        let kind = self.kind;
        self.summary.payloads += 1;
        self.summary.bytes += p.body.len();
        let mut headers =
            vec![("Content-Type", kind.content_type().to_string()), ("Content-Encoding", self.encoding.to_string())];
        if kind.is_protobuf() {
            headers.push(("DD-Agent-Payload", AGENT_PAYLOAD_VERSION.to_string()));
        }
        if let Some(t) = self.telemetry.as_mut() {
            t.on_payload(kind_label(kind), p.body.len(), p.items);
        }
        let submit_started = std::time::Instant::now();
        let payload = Payload { kind: kind_label(kind), path: kind.path(), body: p.body, headers };
        if self.final_flush {
            self.forwarder.submit_no_wait(payload);
        } else {
            self.forwarder.submit(payload);
        }
        if let Some(t) = self.telemetry.as_mut() {
            t.on_forwarder_submit(submit_started.elapsed());
        }
    }
}
