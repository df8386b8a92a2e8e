//! What one shard does with a datagram: split, parse, enrich, aggregate.
//!
//! Runtime-free so it can be unit-tested and benchmarked on its own; the
//! runtime module only feeds it bytes and the clock.

use std::collections::BTreeMap;

use crate::core::aggregator::sampler::RawKey;
use crate::core::aggregator::{FlushEntry, KeyView, SampleDrop, SampleKind, ShardSampler, SketchEntry};
use crate::core::metric_stats::{ContextStat, TopContexts};
use crate::core::model::{Event, MetricType, Origin, Point, Series, SeriesId, ServiceCheck};
use crate::core::protocol::{self, Message, MetricKind, MetricSample, ParseOptions, Tags};

/// The parts of the configuration a shard needs (cloned into every shard).
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Agent host name, used when no `host:` tag / `h:` field is given.
    pub hostname: String,
    /// `dogstatsd_tags`, sorted and de-duplicated.
    pub extra_tags: Vec<String>,
    /// Namespace with trailing dot, or empty.
    pub namespace: String,
    /// Names starting with one of these are not namespaced.
    pub namespace_blacklist: Vec<String>,
    /// Blocked metric names (checked after the namespace is applied).
    pub blocklist: std::sync::Arc<crate::core::filter::MetricFilter>,
    /// Node-wide bound on live contexts, shared by every shard.
    pub context_budget: std::sync::Arc<crate::core::aggregator::ContextBudget>,
    /// Events + service checks (+ timestamped samples) queued between flushes.
    pub max_queued: usize,
    /// `dogstatsd_context_expiry_seconds`.
    pub context_expiry_seconds: i64,
    /// Parser switches.
    pub parse: ParseOptions,
    /// `dogstatsd_mapper_profiles` (empty: no mapping).
    pub mapper: crate::core::mapper::MapperSettings,
    /// `histogram_copy_to_distribution_prefix` when
    /// `histogram_copy_to_distribution` is on: every histogram/timing
    /// sample is also added to a distribution under prefix + name.
    pub histogram_copy_to_distribution: Option<String>,
    /// `dogstatsd_eol_required`: transports whose datagrams must end with `\n`.
    pub eol_required: EolRequired,
}

/// Where a datagram came from (`dogstatsd_eol_required` is per transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP (`udp`).
    Udp,
    /// A Unix socket (`uds`).
    Uds,
    /// A Windows named pipe (`named_pipe`); never produced on Linux.
    NamedPipe,
}

/// The transports listed in `dogstatsd_eol_required`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EolRequired {
    /// `udp` listed.
    pub udp: bool,
    /// `uds` listed.
    pub uds: bool,
    /// `named_pipe` listed.
    pub named_pipe: bool,
}

impl EolRequired {
    /// Whether datagrams from `t` must end with a newline.
    pub fn applies(&self, t: Transport) -> bool {
        match t {
            Transport::Udp => self.udp,
            Transport::Uds => self.uds,
            Transport::NamedPipe => self.named_pipe,
        }
    }
}

/// Cumulative counters of one shard (read at every flush).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    /// Datagrams read.
    pub packets: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Socket read errors.
    pub read_errors: u64,
    /// Datagrams of the shard's UDP socket read by its standby reader
    /// (while the shard could not keep up) and parsed here.
    pub udp_standby_datagrams: u64,
    /// Times the standby reader found its pool exhausted (the shard had not
    /// parsed its batches yet), as last seen by the shard.
    pub udp_standby_pool_full: u64,
    /// Metric lines parsed.
    pub metric_lines: u64,
    /// Metric samples aggregated (a multi-value line counts each value).
    pub metric_samples: u64,
    /// Events queued.
    pub events: u64,
    /// Service checks queued.
    pub service_checks: u64,
    /// Parse errors by `ParseError::kind()`.
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// Samples dropped at aggregation by reason; also events and service
    /// checks dropped because their queue was full (one per line), so every
    /// line is a parse error, a metric line, an event, a service check or
    /// one of those two drops.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl ShardStats {
    /// Adds another shard's counters.
    pub fn add(&mut self, o: &ShardStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.read_errors += o.read_errors;
        self.udp_standby_datagrams += o.udp_standby_datagrams;
        self.udp_standby_pool_full += o.udp_standby_pool_full;
        self.metric_lines += o.metric_lines;
        self.metric_samples += o.metric_samples;
        self.events += o.events;
        self.service_checks += o.service_checks;
        for (k, v) in &o.parse_errors {
            *self.parse_errors.entry(k).or_default() += v;
        }
        for (k, v) in &o.dropped {
            *self.dropped.entry(k).or_default() += v;
        }
    }
}

/// Everything a shard hands over at a flush.
#[derive(Debug, Default)]
pub struct ShardFlush {
    /// Closed metric aggregates.
    pub metrics: Vec<FlushEntry>,
    /// Closed sketches.
    pub sketches: Vec<SketchEntry>,
    /// Timestamped samples (no-aggregation pipeline), already rendered.
    pub passthrough: Vec<Series>,
    /// Events received since the last flush.
    pub events: Vec<Event>,
    /// Service checks received since the last flush.
    pub service_checks: Vec<ServiceCheck>,
    /// Cumulative counters.
    pub stats: ShardStats,
    /// Live contexts in this shard.
    pub contexts: usize,
}

/// Per-shard state; owned by exactly one thread.
pub struct ShardState {
    settings: ShardSettings,
    hostname: Box<[u8]>,
    extra_tags: Vec<Box<[u8]>>,
    sampler: ShardSampler,
    stats: ShardStats,
    passthrough: Vec<Series>,
    events: Vec<Event>,
    service_checks: Vec<ServiceCheck>,
    /// Reused tag list (capacity kept between lines, always empty at rest).
    tag_buf: Vec<&'static [u8]>,
    /// Reused buffer for namespaced names.
    name_buf: Vec<u8>,
    /// Reused buffer for histogram-copy distribution names.
    dist_name_buf: Vec<u8>,
    /// This shard's mapper (its own cache); `None` without profiles.
    mapper: Option<crate::core::mapper::Mapper>,
    /// Per-context sample counts (`dogstatsd_metrics_stats_enable`).
    metric_stats: Option<TopContexts<std::sync::Arc<crate::core::model::ContextKey>>>,
}

/// Prefixes of tags the Agent extracts and removes during enrichment.
const INTERNAL_TAG_PREFIXES: [&[u8]; 3] =
    [b"dd.internal.entity_id:", b"dd.internal.card:", b"dd.internal.jmx_check_name:"];

/// Special tags of one line: the resolved host (if a `host:` tag was given).
fn split_special_tags<'a>(tags: Tags<'a>, out: &mut Vec<&'a [u8]>) -> Option<&'a [u8]> {
    let mut host = None;
    for t in tags.iter() {
        if let Some(h) = t.strip_prefix(b"host:") {
            host = Some(h);
        } else if INTERNAL_TAG_PREFIXES.iter().any(|p| t.starts_with(p)) {
            continue;
        } else {
            out.push(t);
        }
    }
    host
}

/// Hash of a line's name and raw tag text, the key of the sampler's
/// raw-line cache: one pass over the bytes (XXH3), 128 bits, the name's
/// 64-bit hash seeding the tags' 128-bit one.
fn raw_key(name: &[u8], tags: &[u8]) -> RawKey {
    use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| fastrand::u64(..));
    let h = xxh3_128_with_seed(tags, xxh3_64_with_seed(name, seed));
    ((h >> 64) as u64, h as u64)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl ShardState {
    /// A fresh shard.
    pub fn new(settings: ShardSettings) -> Self {
        Self {
            hostname: settings.hostname.as_bytes().into(),
            extra_tags: settings.extra_tags.iter().map(|t| t.as_bytes().into()).collect(),
            sampler: ShardSampler::new(settings.context_budget.clone()),
            stats: ShardStats::default(),
            passthrough: Vec::new(),
            events: Vec::new(),
            service_checks: Vec::new(),
            tag_buf: Vec::new(),
            name_buf: Vec::new(),
            dist_name_buf: Vec::new(),
            mapper: (!settings.mapper.is_empty()).then(|| crate::core::mapper::Mapper::new(settings.mapper.clone())),
            metric_stats: None,
            settings,
        }
    }

    /// Starts counting samples per context, tracking at most `capacity`
    /// contexts (the busiest ones).
    pub fn enable_metric_stats(&mut self, capacity: usize) {
        self.metric_stats = Some(TopContexts::new(capacity));
    }

    /// The busiest contexts (empty when statistics are off).
    pub fn metric_stats(&self, limit: usize) -> Vec<ContextStat<std::sync::Arc<crate::core::model::ContextKey>>> {
        self.metric_stats.as_ref().map(|t| t.top(limit)).unwrap_or_default()
    }

    /// Counts a socket read error.
    pub fn count_read_error(&mut self) {
        self.stats.read_errors += 1;
    }

    /// Counts `datagrams` handed over by the UDP standby reader, and the
    /// standby's pool-exhaustion count (`pool_full`, its running total).
    pub fn count_standby(&mut self, datagrams: u64, pool_full: u64) {
        self.stats.udp_standby_datagrams += datagrams;
        self.stats.udp_standby_pool_full = pool_full;
    }

    /// Processes one UDP datagram received at Unix second `now` and monotonic
    /// nanosecond `seq`. Bad lines are dropped and counted; the rest is kept.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: i64, seq: u64) {
        self.handle_datagram_from(Transport::Udp, datagram, now, seq)
    }

    /// [`Self::handle_datagram`] for a datagram read from `transport`: when
    /// `dogstatsd_eol_required` lists it, an unterminated last line is
    /// dropped and counted (`unterminated_line`), like the Agent.
    pub fn handle_datagram_from(&mut self, transport: Transport, datagram: &[u8], now: i64, seq: u64) {
        self.stats.packets += 1;
        self.stats.bytes += datagram.len() as u64;
        let datagram = if self.settings.eol_required.applies(transport) {
            let (terminated, tail) = protocol::split_terminated(datagram);
            if tail.is_some() {
                self.drop_sample("unterminated_line");
            }
            terminated
        } else {
            datagram
        };
        for line in protocol::lines(datagram) {
            match protocol::parse_line(line, &self.settings.parse) {
                Ok(Message::Metric(m)) => self.handle_metric(&m, now, seq),
                Ok(Message::Event(e)) => self.handle_event(e, now),
                Ok(Message::ServiceCheck(sc)) => self.handle_service_check(sc, now),
                Err(e) => {
                    *self.stats.parse_errors.entry(e.kind()).or_default() += 1;
                    tracing::debug!(error = %e, line = %String::from_utf8_lossy(line), "dropping malformed DogStatsD line");
                }
            }
        }
    }

    fn drop_sample(&mut self, reason: &'static str) {
        *self.stats.dropped.entry(reason).or_default() += 1;
    }

    fn handle_metric(&mut self, m: &MetricSample<'_>, now: i64, seq: u64) {
        self.stats.metric_lines += 1;
        if let Some(ts) = m.timestamp {
            self.handle_timestamped(m, ts);
            return;
        }
        let kind = match m.kind {
            MetricKind::Counter => SampleKind::Counter,
            MetricKind::Gauge => SampleKind::Gauge,
            MetricKind::Set => SampleKind::Set,
            MetricKind::Histogram | MetricKind::Timing => SampleKind::Histogram,
            MetricKind::Distribution => SampleKind::Distribution,
        };
        // `histogram_copy_to_distribution`: with an empty prefix the copy
        // has the histogram's own context (a context keeps metrics and
        // sketches apart, like the Agent's time sampler).
        let copy = kind == SampleKind::Histogram && self.settings.histogram_copy_to_distribution.is_some();
        let copy_shares_context = copy && self.settings.histogram_copy_to_distribution.as_deref() == Some("");
        // Fast path: the same name and tag text was resolved before (the
        // context depends only on them; host, namespace, mapping and extra
        // tags are derived from them or fixed per shard).
        let raw = raw_key(m.name, m.tags.raw());
        let raw_dist = dist_raw_key(raw);
        if let Some(id) = self.sampler.cached(raw) {
            let dist = match (copy, copy_shares_context) {
                (false, _) => None,
                (true, true) => Some(id),
                (true, false) => self.sampler.cached(raw_dist),
            };
            if !copy || dist.is_some() {
                count_context(&mut self.metric_stats, &self.sampler, id, m, now);
                add_values(&mut self.sampler, &mut self.stats, id, kind, m, now, seq);
                if let Some(d) = dist {
                    add_copies(&mut self.sampler, &mut self.stats, d, m, now, seq);
                }
                return;
            }
        }
        // The mapper sees the name as received, before the namespace (as in
        // the Agent); its tags go through the same enrichment as the line's.
        let mapped = self.mapper.as_mut().and_then(|mp| mp.map(m.name));
        // Reuse `tag_buf`'s allocation for this line's borrowed tags: an
        // empty Vec collected in place keeps its capacity, so steady-state
        // lines allocate nothing.
        let mut tags: Vec<&[u8]> = std::mem::take(&mut self.tag_buf).into_iter().map(|_| &[][..]).collect();
        let mut host = split_special_tags(m.tags, &mut tags);
        if let Some(r) = &mapped {
            push_mapped_tags(r, &mut tags, &mut host);
        }
        tags.extend(self.extra_tags.iter().map(|t| &t[..]));
        tags.sort_unstable();
        tags.dedup();
        let base: &[u8] = mapped.as_ref().map_or(m.name, |r| &r.name[..]);
        let name: &[u8] = if self.settings.namespace.is_empty()
            || self.settings.namespace_blacklist.iter().any(|p| base.starts_with(p.as_bytes()))
        {
            base
        } else {
            self.name_buf.clear();
            self.name_buf.extend_from_slice(self.settings.namespace.as_bytes());
            self.name_buf.extend_from_slice(base);
            &self.name_buf
        };
        if !self.settings.blocklist.is_empty() && self.settings.blocklist.blocks(name) {
            *self.stats.dropped.entry("blocklisted").or_default() += m.value_count() as u64;
            tags.clear();
            self.tag_buf = tags.into_iter().map(|_| &[][..]).collect();
            return;
        }
        let host = host.unwrap_or(&self.hostname);
        let view = KeyView { name, host, tags: &tags };
        let is_set = m.set_member().is_some();
        // The Agent tracks a context even for a non-finite value, so
        // resolve first; a context beyond the limit drops every sample.
        let resolved = self.sampler.resolve(&view, now);
        if let Ok(id) = resolved {
            self.sampler.remember(raw, id);
            count_context(&mut self.metric_stats, &self.sampler, id, m, now);
        }
        match resolved {
            Ok(id) => add_values(&mut self.sampler, &mut self.stats, id, kind, m, now, seq),
            Err(e) if is_set => record(&mut self.stats, Err(e)),
            Err(e) => {
                for v in m.values() {
                    record(&mut self.stats, Err(if v.is_finite() { e } else { SampleDrop::NonFinite }));
                }
            }
        }
        if copy {
            let dist = if copy_shares_context {
                resolved
            } else {
                let prefix = self.settings.histogram_copy_to_distribution.as_deref().unwrap_or_default();
                self.dist_name_buf.clear();
                self.dist_name_buf.extend_from_slice(prefix.as_bytes());
                self.dist_name_buf.extend_from_slice(name);
                let r = self.sampler.resolve(&KeyView { name: &self.dist_name_buf, host, tags: &tags }, now);
                if let Ok(id) = r {
                    self.sampler.remember(raw_dist, id);
                }
                r
            };
            match dist {
                Ok(d) => add_copies(&mut self.sampler, &mut self.stats, d, m, now, seq),
                Err(e) => {
                    for v in m.values() {
                        record_copy(&mut self.stats, Err(if v.is_finite() { e } else { SampleDrop::NonFinite }));
                    }
                }
            }
        }
        tags.clear();
        self.tag_buf = tags.into_iter().map(|_| &[][..]).collect();
    }

    fn handle_timestamped(&mut self, m: &MetricSample<'_>, ts: i64) {
        let (metric_type, divisor) = match m.kind {
            MetricKind::Gauge => (MetricType::Gauge, 1.0),
            MetricKind::Counter => (MetricType::Rate, 10.0),
            _ => {
                // One drop per sample, like every other sample drop.
                *self.stats.dropped.entry("timestamped_unsupported_type").or_default() += m.value_count() as u64;
                return;
            }
        };
        let mapped = self.mapper.as_mut().and_then(|mp| mp.map(m.name));
        let mut tags = Vec::new();
        let mut host = split_special_tags(m.tags, &mut tags);
        if let Some(r) = &mapped {
            push_mapped_tags(r, &mut tags, &mut host);
        }
        let mut tags: Vec<String> = tags.iter().map(|t| lossy(t)).collect();
        tags.extend(self.settings.extra_tags.iter().cloned());
        let host = host.map(lossy).unwrap_or_else(|| self.settings.hostname.clone());
        let base: &[u8] = mapped.as_ref().map_or(m.name, |r| &r.name[..]);
        let name = if self.settings.namespace.is_empty()
            || self.settings.namespace_blacklist.iter().any(|p| base.starts_with(p.as_bytes()))
        {
            lossy(base)
        } else {
            format!("{}{}", self.settings.namespace, lossy(base))
        };
        if !self.settings.blocklist.is_empty() && self.settings.blocklist.blocks(name.as_bytes()) {
            self.drop_sample("blocklisted");
            return;
        }
        for v in m.values() {
            if !v.is_finite() {
                self.drop_sample("non_finite_value");
                continue;
            }
            if self.passthrough.len() >= self.settings.max_queued {
                self.drop_sample("passthrough_queue_full");
                continue;
            }
            self.stats.metric_samples += 1;
            self.passthrough.push(Series {
                id: SeriesId::owned(name.clone(), host.clone(), tags.clone()),
                points: vec![Point { timestamp: ts, value: v / divisor }],
                metric_type,
                interval: 10,
                source_type_name: String::new(),
                origin: Origin::Internal,
            });
        }
    }

    /// Sorted, de-duplicated tags with the extra tags appended, and the host.
    fn resolve_tags(&self, tags: Tags<'_>, explicit_host: Option<&[u8]>) -> (Vec<String>, String) {
        let mut list = Vec::new();
        let tag_host = split_special_tags(tags, &mut list);
        let mut out: Vec<String> = list.iter().map(|t| lossy(t)).collect();
        out.extend(self.settings.extra_tags.iter().cloned());
        out.sort();
        out.dedup();
        let host = explicit_host.or(tag_host).map(lossy).unwrap_or_else(|| self.settings.hostname.clone());
        (out, host)
    }

    fn handle_event(&mut self, e: protocol::EventMessage<'_>, now: i64) {
        if self.events.len() >= self.settings.max_queued {
            self.drop_sample("event_queue_full");
            return;
        }
        self.stats.events += 1;
        let (tags, host) = self.resolve_tags(e.tags, e.hostname);
        self.events.push(Event {
            title: lossy(&e.title),
            text: lossy(&e.text),
            timestamp: if e.timestamp == 0 { now } else { e.timestamp },
            priority: match e.priority {
                Some(protocol::EventPriority::Low) => "low".into(),
                _ => "normal".into(),
            },
            host,
            tags,
            alert_type: match e.alert_type {
                Some(protocol::AlertType::Error) => "error".into(),
                Some(protocol::AlertType::Warning) => "warning".into(),
                Some(protocol::AlertType::Success) => "success".into(),
                _ => "info".into(),
            },
            aggregation_key: e.aggregation_key.map(lossy).unwrap_or_default(),
            source_type_name: e.source_type.map(lossy).unwrap_or_default(),
            event_type: String::new(),
        });
    }

    fn handle_service_check(&mut self, sc: protocol::ServiceCheckMessage<'_>, now: i64) {
        if self.service_checks.len() >= self.settings.max_queued {
            self.drop_sample("service_check_queue_full");
            return;
        }
        self.stats.service_checks += 1;
        let (tags, host) = self.resolve_tags(sc.tags, sc.hostname);
        self.service_checks.push(ServiceCheck {
            check: lossy(sc.name),
            host_name: host,
            timestamp: if sc.timestamp == 0 { now } else { sc.timestamp },
            status: sc.status,
            message: sc.message.map(lossy).unwrap_or_default(),
            tags,
        });
    }

    /// Cumulative counters so far (published for live telemetry).
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Hands over closed buckets (all buckets when `force`) and the queues,
    /// all at once.
    pub fn take_flush(&mut self, now: i64, force: bool) -> ShardFlush {
        let mut job = self.begin_flush(now, force);
        while !self.flush_step(&mut job, usize::MAX) {}
        self.finish_flush(job)
    }

    /// Starts a flush hand-over: swaps the closed buckets and the queues
    /// out of the read path. Costs O(1) in the number of contexts; the rest
    /// is done by [`ShardState::flush_step`], between which the shard keeps
    /// reading (new samples go to the open bucket).
    pub fn begin_flush(&mut self, now: i64, force: bool) -> FlushJob {
        let cutoff = now - now.rem_euclid(crate::core::aggregator::BUCKET_SECONDS);
        let closed = self.sampler.close_buckets(cutoff, force);
        let mut out = ShardFlush::default();
        closed.reserve(&mut out.metrics, &mut out.sketches);
        out.passthrough = std::mem::take(&mut self.passthrough);
        out.events = std::mem::take(&mut self.events);
        out.service_checks = std::mem::take(&mut self.service_checks);
        out.stats = self.stats.clone();
        FlushJob { now, force, closed: Some(closed), cursor: 0, out }
    }

    /// Does up to `budget` entries of a flush hand-over's work (turning
    /// closed entries into flush entries, then sweeping idle contexts);
    /// true when nothing is left.
    pub fn flush_step(&mut self, job: &mut FlushJob, budget: usize) -> bool {
        if let Some(closed) = job.closed.as_mut() {
            if !self.sampler.convert_closed(closed, budget, &mut job.out.metrics, &mut job.out.sketches) {
                return false;
            }
            if let Some(closed) = job.closed.take() {
                self.sampler.recycle(closed, job.force);
            }
            return false;
        }
        let ttl = self.settings.context_expiry_seconds + crate::core::aggregator::BUCKET_SECONDS;
        self.sampler.expire_step(&mut job.cursor, budget, job.now, ttl)
    }

    /// Ends a flush hand-over (after [`ShardState::flush_step`] returned true).
    pub fn finish_flush(&mut self, mut job: FlushJob) -> ShardFlush {
        job.out.contexts = self.sampler.context_count();
        job.out
    }
}

/// The raw-line cache key of a line's histogram-copy distribution context
/// (a fixed, bijective scramble of the line's own key).
fn dist_raw_key(raw: RawKey) -> RawKey {
    (raw.0 ^ 0x9e37_79b9_7f4a_7c15, raw.1.wrapping_add(0xd1b5_4a32_d192_ed03))
}

/// Appends a mapping's tags; a mapped `host:` tag sets the host and the
/// Agent's internal tags are dropped, as for the line's own tags.
fn push_mapped_tags<'a>(r: &'a crate::core::mapper::MapResult, tags: &mut Vec<&'a [u8]>, host: &mut Option<&'a [u8]>) {
    for t in r.tags.iter() {
        let t: &[u8] = t;
        if let Some(h) = t.strip_prefix(b"host:") {
            *host = Some(h);
        } else if !INTERNAL_TAG_PREFIXES.iter().any(|p| t.starts_with(p)) {
            tags.push(t);
        }
    }
}

/// Adds every value (or the set member) of `m` to context `id`.
fn add_values(
    sampler: &mut ShardSampler,
    stats: &mut ShardStats,
    id: u32,
    kind: SampleKind,
    m: &MetricSample<'_>,
    now: i64,
    seq: u64,
) {
    if let Some(member) = m.set_member() {
        let r = sampler.add_id(id, kind, 0.0, Some(member), m.sample_rate, now, seq);
        record(stats, r);
    } else {
        for v in m.values() {
            let r = sampler.add_id(id, kind, v, None, m.sample_rate, now, seq);
            record(stats, r);
        }
    }
}

/// Counts the samples of line `m` against live context `id` in the
/// per-context statistics (when on).
fn count_context(
    stats: &mut Option<TopContexts<std::sync::Arc<crate::core::model::ContextKey>>>,
    sampler: &ShardSampler,
    id: u32,
    m: &MetricSample<'_>,
    now: i64,
) {
    if let Some(stats) = stats {
        if let Some(key) = sampler.context_key(id) {
            let n = if m.set_member().is_some() { 1 } else { m.value_count() as u64 };
            stats.record(key.key_hash(), n, now, || key.clone());
        }
    }
}

/// Adds the histogram copies of `m` to distribution context `id`: same
/// values and sample rate, as the Agent copies the sample.
fn add_copies(sampler: &mut ShardSampler, stats: &mut ShardStats, id: u32, m: &MetricSample<'_>, now: i64, seq: u64) {
    for v in m.values() {
        let r = sampler.add_id(id, SampleKind::Distribution, v, None, m.sample_rate, now, seq);
        record_copy(stats, r);
    }
}

/// Copies are not received samples: only a context- or memory-limit drop
/// is counted (a non-finite value was already counted for the histogram
/// sample).
fn record_copy(stats: &mut ShardStats, r: Result<(), SampleDrop>) {
    if matches!(r, Err(SampleDrop::ContextLimit | SampleDrop::MemoryLimit)) {
        record(stats, r);
    }
}

/// A flush hand-over in progress (see [`ShardState::begin_flush`]).
pub struct FlushJob {
    now: i64,
    force: bool,
    /// Closed buckets not yet fully converted.
    closed: Option<crate::core::aggregator::ClosedBuckets>,
    /// Next context id of the idle-context sweep.
    cursor: u32,
    out: ShardFlush,
}

fn record(stats: &mut ShardStats, r: Result<(), SampleDrop>) {
    match r {
        Ok(()) => stats.metric_samples += 1,
        Err(SampleDrop::NonFinite) => *stats.dropped.entry("non_finite_value").or_default() += 1,
        Err(SampleDrop::ContextLimit) => *stats.dropped.entry("context_limit").or_default() += 1,
        Err(SampleDrop::MemoryLimit) => *stats.dropped.entry("memory_limit").or_default() += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::aggregator::Agg;

    fn settings() -> ShardSettings {
        ShardSettings {
            hostname: "h1".into(),
            extra_tags: vec!["team:edge".into()],
            namespace: String::new(),
            namespace_blacklist: vec![],
            context_budget: crate::core::aggregator::ContextBudget::new(1000),
            blocklist: Default::default(),
            max_queued: 1000,
            context_expiry_seconds: 20,
            parse: ParseOptions::default(),
            mapper: Default::default(),
            histogram_copy_to_distribution: None,
            eol_required: Default::default(),
        }
    }

    #[test]
    fn datagram_to_aggregates_with_host_and_extra_tags() {
        let mut s = ShardState::new(settings());
        s.handle_datagram(
            b"page.views:1|c|#b:2,a:1\npage.views:1|c|#a:1,b:2,a:1\nbad line\ntemp:20|g|#host:web\n",
            1_700_000_001,
            1,
        );
        let f = s.take_flush(1_700_000_015, false);
        assert_eq!(f.stats.parse_errors.values().sum::<u64>(), 1);
        assert_eq!(f.metrics.len(), 2);
        let pv = f.metrics.iter().find(|e| e.key.name() == b"page.views").unwrap();
        assert_eq!(pv.agg, Agg::Counter(2.0));
        assert_eq!(pv.key.tag_strings(), vec!["a:1", "b:2", "team:edge"]);
        assert_eq!(pv.key.host(), b"h1");
        let t = f.metrics.iter().find(|e| e.key.name() == b"temp").unwrap();
        assert_eq!(t.key.host(), b"web");
        assert_eq!(t.key.tag_strings(), vec!["team:edge"]);
    }

    #[test]
    fn events_and_checks_are_queued_with_host_precedence() {
        let mut s = ShardState::new(settings());
        s.handle_datagram(
            b"_e{6,7}:Deploy|v1.2 ok|p:low|t:success|s:ci|#env:prod,host:x\n_sc|db|2|h:dbhost|#host:y,b,a|m:timeout",
            1_700_000_003,
            1,
        );
        let f = s.take_flush(1_700_000_015, false);
        assert_eq!(f.events.len(), 1);
        let e = &f.events[0];
        assert_eq!((e.title.as_str(), e.text.as_str(), e.host.as_str()), ("Deploy", "v1.2 ok", "x"));
        assert_eq!(e.tags, vec!["env:prod", "team:edge"]);
        assert_eq!(e.timestamp, 1_700_000_003);
        let c = &f.service_checks[0];
        assert_eq!(
            (c.check.as_str(), c.status, c.host_name.as_str(), c.message.as_str()),
            ("db", 2, "dbhost", "timeout")
        );
        assert_eq!(c.tags, vec!["a", "b", "team:edge"]);
    }

    #[test]
    fn a_stepwise_hand_over_lets_reading_go_on() {
        let mut s = ShardState::new(settings());
        for i in 0..100 {
            s.handle_datagram(format!("m{i}:1|c").as_bytes(), 1_700_000_001, 1);
        }
        s.handle_datagram(b"_e{1,1}:a|b", 1_700_000_001, 1);
        let mut job = s.begin_flush(1_700_000_015, false);
        let mut steps = 0;
        while !s.flush_step(&mut job, 8) {
            steps += 1;
            // Read between two steps: lands in the open bucket, and in the
            // next hand-over's queues.
            s.handle_datagram(b"m0:1|c\n_e{1,1}:c|d", 1_700_000_015, 2);
        }
        let f = s.finish_flush(job);
        assert!(steps > 100 / 8, "{steps}");
        assert_eq!(f.metrics.len(), 100);
        assert!(f.metrics.iter().all(|e| e.agg == Agg::Counter(1.0)));
        assert_eq!(f.events.len(), 1);
        let g = s.take_flush(1_700_000_025, false);
        assert_eq!(g.metrics.len(), 1);
        assert_eq!(g.metrics[0].agg, Agg::Counter(steps as f64));
        assert_eq!(g.events.len(), steps);
    }

    #[test]
    fn timestamped_samples_pass_through() {
        let mut s = ShardState::new(settings());
        s.handle_datagram(b"q:42|g|T1700000000\nc:5|c|@0.5|T1700000001\nh:1|h|T1700000000", 1_700_000_003, 1);
        let f = s.take_flush(1_700_000_015, false);
        assert_eq!(f.passthrough.len(), 2);
        assert_eq!(f.passthrough[0].points[0], Point { timestamp: 1_700_000_000, value: 42.0 });
        assert_eq!(f.passthrough[1].points[0].value, 0.5);
        assert_eq!(f.stats.dropped.get("timestamped_unsupported_type"), Some(&1));
    }

    fn mapper_settings(json: &str) -> crate::core::mapper::MapperSettings {
        crate::core::mapper::MapperSettings::compile(
            &serde_json::from_str::<Vec<crate::core::mapper::ProfileConfig>>(json).unwrap(),
            100,
        )
        .unwrap()
    }

    #[test]
    fn mapped_names_get_tags_then_namespace_and_blocklist() {
        let mut st = settings();
        st.namespace = "edge.".into();
        st.namespace_blacklist = vec!["airflow".into()];
        st.mapper = mapper_settings(
            r#"[{"name":"airflow","prefix":"airflow.","mappings":[
                {"match":"airflow.dag.*.*.duration","name":"airflow.dag.task.duration","tags":{"dag_id":"$1","task_id":"$2"}},
                {"match":"airflow.pool.*","name":"pool.slots","tags":{"pool":"$1","host":"db-$1"}}]}]"#,
        );
        let mut s = ShardState::new(st);
        for _ in 0..2 {
            s.handle_datagram(
                b"airflow.dag.etl.load.duration:5|ms|#env:prod\nairflow.pool.main:3|g\nairflow.other:1|c",
                1_700_000_001,
                1,
            );
        }
        let f = s.take_flush(1_700_000_015, false);
        let d = f.metrics.iter().find(|e| e.key.name() == b"airflow.dag.task.duration").unwrap();
        assert_eq!(d.key.tag_strings(), vec!["dag_id:etl", "env:prod", "task_id:load", "team:edge"]);
        // The mapped name is namespaced unless blacklisted; a mapped `host:` tag sets the host.
        let p = f.metrics.iter().find(|e| e.key.name() == b"edge.pool.slots").unwrap();
        assert_eq!(
            (p.key.host(), p.key.tag_strings()),
            (&b"db-main"[..], vec!["pool:main".to_string(), "team:edge".to_string()])
        );
        assert!(
            f.metrics.iter().any(|e| e.key.name() == b"airflow.other"),
            "unmapped names under the prefix are kept as is"
        );
        assert_eq!(f.metrics.len(), 3, "the second datagram reused the same contexts");
    }

    #[test]
    fn histograms_and_timings_are_copied_into_distributions() {
        let mut st = settings();
        st.histogram_copy_to_distribution = Some("dist.".into());
        let mut s = ShardState::new(st);
        for _ in 0..2 {
            s.handle_datagram(b"lat:1:2|h|@0.5|#a\nt:3|ms\nd:4|d\ng:1|g\nlat:nan|h", 1_700_000_001, 1);
        }
        let f = s.take_flush(1_700_000_015, false);
        let names: Vec<String> =
            f.sketches.iter().map(|e| String::from_utf8_lossy(e.key.name()).into_owned()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["d", "dist.lat", "dist.t"]);
        let lat = f.sketches.iter().find(|e| e.key.name() == b"dist.lat").unwrap();
        assert_eq!(lat.key.tag_strings(), vec!["a", "team:edge"], "same tags and host as the histogram");
        // Sample rate 0.5: each of the 4 samples weighs 2.
        assert_eq!(lat.sketch.count(), 8);
        assert!(f.metrics.iter().any(|e| e.key.name() == b"lat"), "the histogram itself is kept");
        assert_eq!(f.stats.metric_samples, 2 * 5, "copies are not counted as received samples");
        assert_eq!(
            f.stats.dropped.get("non_finite_value"),
            Some(&2),
            "a NaN sample is counted once, not once more for its copy"
        );
    }

    #[test]
    fn histogram_copy_without_prefix_shares_the_context() {
        let mut st = settings();
        st.histogram_copy_to_distribution = Some(String::new());
        let mut s = ShardState::new(st);
        s.handle_datagram(b"lat:1|h\nlat:2|h", 1_700_000_001, 1);
        let f = s.take_flush(1_700_000_015, false);
        assert_eq!(f.sketches.len(), 1);
        assert_eq!(f.sketches[0].key.name(), b"lat");
        assert_eq!(f.sketches[0].sketch.count(), 2);
        assert_eq!(f.contexts, 1);
    }

    #[test]
    fn eol_required_drops_the_unterminated_tail_per_transport() {
        let mut st = settings();
        st.eol_required = EolRequired { udp: false, uds: true, named_pipe: false };
        let mut s = ShardState::new(st);
        s.handle_datagram_from(Transport::Uds, b"a:1|c\nb:1|c", 1_700_000_001, 1);
        s.handle_datagram_from(Transport::Uds, b"c:1|c\n", 1_700_000_001, 2);
        s.handle_datagram_from(Transport::Uds, b"partial", 1_700_000_001, 3);
        s.handle_datagram_from(Transport::Udp, b"d:1|c", 1_700_000_001, 4);
        let f = s.take_flush(1_700_000_015, false);
        let mut names: Vec<_> = f.metrics.iter().map(|e| e.key.name().to_vec()).collect();
        names.sort();
        assert_eq!(names, vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(f.stats.dropped.get("unterminated_line"), Some(&2));
        assert_eq!(f.stats.packets, 4);
    }
}
