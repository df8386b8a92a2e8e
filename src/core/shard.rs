//! What one shard does with a datagram: split, parse, enrich, aggregate.
//!
//! Runtime-free so it can be unit-tested and benchmarked on its own; the
//! runtime module only feeds it bytes and the clock.

use std::collections::BTreeMap;

use crate::core::aggregator::sampler::RawKey;
use crate::core::aggregator::{FlushEntry, KeyView, SampleDrop, SampleKind, ShardSampler, SketchEntry};
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
    /// Samples dropped at aggregation by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl ShardStats {
    /// Adds another shard's counters.
    pub fn add(&mut self, o: &ShardStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.read_errors += o.read_errors;
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
}

/// Prefixes of tags the Agent extracts and removes during enrichment.
const INTERNAL_TAG_PREFIXES: [&[u8]; 3] = [b"dd.internal.entity_id:", b"dd.internal.card:", b"dd.internal.jmx_check_name:"];

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

/// Hash of a line's name and raw tag text (two independently seeded
/// 64-bit hashes), the key of the sampler's raw-line cache.
fn raw_key(name: &[u8], tags: &[u8]) -> RawKey {
    use std::hash::{BuildHasher, Hasher};
    static SEEDS: std::sync::OnceLock<(foldhash::fast::FixedState, foldhash::fast::FixedState)> = std::sync::OnceLock::new();
    let (a, b) = SEEDS.get_or_init(|| {
        (foldhash::fast::FixedState::with_seed(fastrand::u64(..)), foldhash::fast::FixedState::with_seed(fastrand::u64(..)))
    });
    let h = |s: &foldhash::fast::FixedState| {
        let mut h = s.build_hasher();
        h.write_usize(name.len());
        h.write(name);
        h.write(tags);
        h.finish()
    };
    (h(a), h(b))
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
            settings,
        }
    }

    /// Counts a socket read error.
    pub fn count_read_error(&mut self) {
        self.stats.read_errors += 1;
    }

    /// Processes one datagram received at Unix second `now` and monotonic
    /// nanosecond `seq`. Bad lines are dropped and counted; the rest is kept.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: i64, seq: u64) {
        self.stats.packets += 1;
        self.stats.bytes += datagram.len() as u64;
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
        // Fast path: the same name and tag text was resolved before (the
        // context depends only on them; host, namespace and extra tags are
        // derived from them or fixed per shard).
        let raw = raw_key(m.name, m.tags.raw());
        if let Some(id) = self.sampler.cached(raw) {
            if let Some(member) = m.set_member() {
                let r = self.sampler.add_id(id, kind, 0.0, Some(member), m.sample_rate, now, seq);
                record(&mut self.stats, r);
            } else {
                for v in m.values() {
                    let r = self.sampler.add_id(id, kind, v, None, m.sample_rate, now, seq);
                    record(&mut self.stats, r);
                }
            }
            return;
        }
        // Reuse `tag_buf`'s allocation for this line's borrowed tags: an
        // empty Vec collected in place keeps its capacity, so steady-state
        // lines allocate nothing.
        let mut tags: Vec<&[u8]> = std::mem::take(&mut self.tag_buf).into_iter().map(|_| &[][..]).collect();
        let host = split_special_tags(m.tags, &mut tags);
        tags.extend(self.extra_tags.iter().map(|t| &t[..]));
        tags.sort_unstable();
        tags.dedup();
        let name: &[u8] = if self.settings.namespace.is_empty()
            || self.settings.namespace_blacklist.iter().any(|p| m.name.starts_with(p.as_bytes()))
        {
            m.name
        } else {
            self.name_buf.clear();
            self.name_buf.extend_from_slice(self.settings.namespace.as_bytes());
            self.name_buf.extend_from_slice(m.name);
            &self.name_buf
        };
        if !self.settings.blocklist.is_empty() && self.settings.blocklist.blocks(name) {
            *self.stats.dropped.entry("blocklisted").or_default() += m.value_count() as u64;
            tags.clear();
            self.tag_buf = tags.into_iter().map(|_| &[][..]).collect();
            return;
        }
        let view = KeyView { name, host: host.unwrap_or(&self.hostname), tags: &tags };
        let is_set = m.set_member().is_some();
        // The Agent tracks a context even for a non-finite value, so
        // resolve first; a context beyond the limit drops every sample.
        let resolved = self.sampler.resolve(&view, now);
        if let Ok(id) = resolved {
            self.sampler.remember(raw, id);
        }
        match (resolved, m.set_member()) {
            (Ok(id), Some(member)) => {
                let r = self.sampler.add_id(id, kind, 0.0, Some(member), m.sample_rate, now, seq);
                record(&mut self.stats, r);
            }
            (Ok(id), None) => {
                for v in m.values() {
                    let r = self.sampler.add_id(id, kind, v, None, m.sample_rate, now, seq);
                    record(&mut self.stats, r);
                }
            }
            (Err(e), _) if is_set => record(&mut self.stats, Err(e)),
            (Err(e), _) => {
                for v in m.values() {
                    record(&mut self.stats, Err(if v.is_finite() { e } else { SampleDrop::NonFinite }));
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
                self.drop_sample("timestamped_unsupported_type");
                return;
            }
        };
        let mut tags = Vec::new();
        let host = split_special_tags(m.tags, &mut tags);
        let mut tags: Vec<String> = tags.iter().map(|t| lossy(t)).collect();
        tags.extend(self.settings.extra_tags.iter().cloned());
        let host = host.map(lossy).unwrap_or_else(|| self.settings.hostname.clone());
        let name = if self.settings.namespace.is_empty()
            || self.settings.namespace_blacklist.iter().any(|p| m.name.starts_with(p.as_bytes()))
        {
            lossy(m.name)
        } else {
            format!("{}{}", self.settings.namespace, lossy(m.name))
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
        }
    }

    #[test]
    fn datagram_to_aggregates_with_host_and_extra_tags() {
        let mut s = ShardState::new(settings());
        s.handle_datagram(b"page.views:1|c|#b:2,a:1\npage.views:1|c|#a:1,b:2,a:1\nbad line\ntemp:20|g|#host:web\n", 1_700_000_001, 1);
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
        s.handle_datagram(b"_e{6,7}:Deploy|v1.2 ok|p:low|t:success|s:ci|#env:prod,host:x\n_sc|db|2|h:dbhost|#host:y,b,a|m:timeout", 1_700_000_003, 1);
        let f = s.take_flush(1_700_000_015, false);
        assert_eq!(f.events.len(), 1);
        let e = &f.events[0];
        assert_eq!((e.title.as_str(), e.text.as_str(), e.host.as_str()), ("Deploy", "v1.2 ok", "x"));
        assert_eq!(e.tags, vec!["env:prod", "team:edge"]);
        assert_eq!(e.timestamp, 1_700_000_003);
        let c = &f.service_checks[0];
        assert_eq!((c.check.as_str(), c.status, c.host_name.as_str(), c.message.as_str()), ("db", 2, "dbhost", "timeout"));
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
}
