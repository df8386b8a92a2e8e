//! The serializer: turns flushed data (`crate::core::model`) into compressed intake
//! payloads byte-compatible with the Datadog Agent's serializer.
//!
//! Pure code: no I/O, threads or async. A [`Serializer`] is long-lived and
//! owns one reusable [`PayloadBuilder`] plus scratch buffers, so steady-state
//! serialization allocates only the final body of each payload.

pub mod builder;
pub mod compress;
pub mod json;
pub mod proto;

pub use builder::{AddError, BuilderCounters, CloseError, Limits, Payload, PayloadBuilder};
pub use compress::{CompressError, Compression, StreamEncoder};

use crate::core::model::{Event, Series, ServiceCheck, SketchSeries};

/// Where finished payloads go: collected in a `Vec`, or handed on one by
/// one as each is closed ([`Each`]), so a flush never holds all of its
/// compressed payloads at once (at 100k contexts of ~2 KB tags those are
/// over 100 MiB).
pub trait PayloadSink {
    /// Takes one finished payload.
    fn put(&mut self, payload: Payload);
}

impl PayloadSink for Vec<Payload> {
    fn put(&mut self, payload: Payload) {
        self.push(payload);
    }
}

/// A closure as a [`PayloadSink`].
pub struct Each<F>(pub F);

impl<F: FnMut(Payload)> PayloadSink for Each<F> {
    fn put(&mut self, payload: Payload) {
        (self.0)(payload)
    }
}

/// The payload kinds this module builds, with their intake route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// JSON series (`use_v2_api.series: false`).
    SeriesV1,
    /// Protobuf series (default).
    SeriesV2,
    /// Protobuf distributions.
    Sketches,
    /// JSON service checks.
    ServiceChecks,
    /// JSON events.
    Events,
}

impl PayloadKind {
    /// Intake path to POST the payload to (the Agent's endpoint paths).
    pub fn path(self) -> &'static str {
        match self {
            PayloadKind::SeriesV1 => "/api/v1/series",
            PayloadKind::SeriesV2 => "/api/v2/series",
            PayloadKind::Sketches => "/api/beta/sketches",
            PayloadKind::ServiceChecks => "/api/v1/check_run",
            PayloadKind::Events => "/intake/",
        }
    }

    /// `Content-Type` header value for the payload.
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadKind::SeriesV2 | PayloadKind::Sketches => "application/x-protobuf",
            PayloadKind::SeriesV1 | PayloadKind::ServiceChecks | PayloadKind::Events => "application/json",
        }
    }

    /// Whether the Agent adds `DD-Agent-Payload` (protobuf payloads only).
    pub fn is_protobuf(self) -> bool {
        matches!(self, PayloadKind::SeriesV2 | PayloadKind::Sketches)
    }
}

/// Serializer settings (the Agent's `serializer_*` keys, docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerializerConfig {
    /// `serializer_compressor_kind` + `serializer_zstd_compressor_level`.
    pub compression: Compression,
    /// `serializer_max_payload_size`: compressed limit for JSON and sketches.
    pub max_payload_size: usize,
    /// `serializer_max_uncompressed_payload_size`.
    pub max_uncompressed_payload_size: usize,
    /// `serializer_max_series_payload_size`: compressed limit for series v2.
    pub max_series_payload_size: usize,
    /// `serializer_max_series_uncompressed_payload_size`.
    pub max_series_uncompressed_payload_size: usize,
    /// `serializer_max_series_points_per_payload`.
    pub max_series_points_per_payload: usize,
}

impl Default for SerializerConfig {
    /// The Agent's defaults.
    fn default() -> Self {
        SerializerConfig {
            compression: Compression::Zstd { level: 1 },
            max_payload_size: 2_621_440,
            max_uncompressed_payload_size: 4_194_304,
            max_series_payload_size: 512_000,
            max_series_uncompressed_payload_size: 5_242_880,
            max_series_points_per_payload: 10_000,
        }
    }
}

impl SerializerConfig {
    /// Limits for JSON payloads and sketches.
    pub fn json_limits(&self) -> Limits {
        Limits {
            max_compressed: self.max_payload_size,
            max_uncompressed: self.max_uncompressed_payload_size,
            max_weight: None,
        }
    }

    /// Limits for series v2 payloads (points per payload as item weight).
    pub fn series_limits(&self) -> Limits {
        Limits {
            max_compressed: self.max_series_payload_size,
            max_uncompressed: self.max_series_uncompressed_payload_size,
            max_weight: Some(self.max_series_points_per_payload),
        }
    }
}

/// Cumulative counters, named after the Agent's serializer telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SerializerStats {
    /// `jsonstream.total_calls`: JSON builds (series v1, service checks).
    pub total_calls: u64,
    /// `jsonstream.total_items`: items added to JSON payloads.
    pub total_items: u64,
    /// `jsonstream.write_item_errors`: items that could not be rendered.
    pub write_item_errors: u64,
    /// `jsonstream.payload_full`: JSON payloads closed because full.
    pub payload_full: u64,
    /// `jsonstream.item_drops`: JSON items dropped as too big.
    pub item_drops: u64,
    /// `compressor.total_payloads`.
    pub total_payloads: u64,
    /// `compressor.total_cycles`: pack/flush + close cycles.
    pub total_cycles: u64,
    /// `compressor.bytes_in`: uncompressed bytes of emitted payloads.
    pub bytes_in: u64,
    /// `compressor.bytes_out`: compressed bytes of emitted payloads.
    pub bytes_out: u64,
    /// Series v2 `ItemTooBig`.
    pub series_item_too_big: u64,
    /// Series v2 `PayloadFull`.
    pub series_payload_full: u64,
    /// Series v2 `UnexpectedItemDrops`.
    pub series_unexpected_item_drops: u64,
    /// Series v2 items added.
    pub series_items: u64,
    /// `sketch_series.sketch_too_big`.
    pub sketch_too_big: u64,
    /// `sketch_series.payload_full`.
    pub sketch_payload_full: u64,
    /// `sketch_series.unexpected_item_drops`.
    pub sketch_unexpected_item_drops: u64,
    /// Sketches added.
    pub sketch_items: u64,
    /// `metrics.events_sent`.
    pub events_sent: u64,
    /// `metrics.events_dropped`.
    pub events_dropped: u64,
    /// `metrics.events_payloads`.
    pub events_payloads: u64,
    /// `metrics.events_payload_empty`.
    pub events_payload_empty: u64,
    /// Compressor failures (never expected; items of the payload are lost).
    pub compress_errors: u64,
}

impl SerializerStats {
    /// Field-wise sum (a serializer's own counters plus its helpers').
    fn add(&mut self, o: &SerializerStats) {
        self.total_calls += o.total_calls;
        self.total_items += o.total_items;
        self.write_item_errors += o.write_item_errors;
        self.payload_full += o.payload_full;
        self.item_drops += o.item_drops;
        self.total_payloads += o.total_payloads;
        self.total_cycles += o.total_cycles;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.series_item_too_big += o.series_item_too_big;
        self.series_payload_full += o.series_payload_full;
        self.series_unexpected_item_drops += o.series_unexpected_item_drops;
        self.series_items += o.series_items;
        self.sketch_too_big += o.sketch_too_big;
        self.sketch_payload_full += o.sketch_payload_full;
        self.sketch_unexpected_item_drops += o.sketch_unexpected_item_drops;
        self.sketch_items += o.sketch_items;
        self.events_sent += o.events_sent;
        self.events_dropped += o.events_dropped;
        self.events_payloads += o.events_payloads;
        self.events_payload_empty += o.events_payload_empty;
        self.compress_errors += o.compress_errors;
    }
}

/// Below this many items a build stays on the calling thread (a thread
/// start and a second, partly filled payload are not worth it).
pub const PARALLEL_MIN_ITEMS: usize = 4096;

/// Which counter family a simple build updates.
#[derive(Clone, Copy)]
enum Family {
    Json,
    Series,
    Sketch,
}

/// Long-lived serializer owning the reusable builder and scratch buffers.
#[derive(Debug)]
pub struct Serializer {
    config: SerializerConfig,
    builder: PayloadBuilder,
    /// Scratch for one rendered item.
    item: Vec<u8>,
    /// Scratch for event group prefixes / footers.
    aux: Vec<u8>,
    stats: SerializerStats,
    /// Extra serializers building parts of large series/sketch flushes on
    /// their own threads (`set_encode_threads`); each owns its builder,
    /// compression context and buffers, kept across flushes.
    helpers: Vec<Serializer>,
}

/// Series v1 JSON framing.
const SERIES_V1_HEADER: &[u8] = b"{\"series\":[";
const SERIES_V1_FOOTER: &[u8] = b"]}";
/// Events JSON framing.
const EVENTS_HEADER: &[u8] = b"{\"apiKey\":\"\",\"events\":{";

impl Serializer {
    /// Creates a serializer (allocates the compression context once).
    pub fn new(config: SerializerConfig) -> Result<Serializer, CompressError> {
        Ok(Serializer {
            config,
            builder: PayloadBuilder::new(config.compression)?,
            item: Vec::with_capacity(4096),
            aux: Vec::with_capacity(256),
            stats: SerializerStats::default(),
            helpers: Vec::new(),
        })
    }

    /// Builds large series v2 and sketch flushes on `threads` threads (the
    /// calling one included; 1 = no helpers). Payloads are independent
    /// requests, so each thread cuts its own share under the same limits.
    pub fn set_encode_threads(&mut self, threads: usize) -> Result<(), CompressError> {
        let helpers = threads.max(1) - 1;
        self.helpers.truncate(helpers);
        while self.helpers.len() < helpers {
            self.helpers.push(Serializer::new(self.config)?);
        }
        Ok(())
    }

    /// Series v2 of a slice, split across the encode threads when large
    /// (`series_v2` otherwise). Payload contents and order depend on the
    /// split; every payload obeys the same limits.
    pub fn series_v2_slice(&mut self, series: &[Series], out: &mut dyn PayloadSink) {
        self.split(series, out, |ser, part, out| ser.series_v2(part.iter(), out));
    }

    /// Sketches of a slice, split across the encode threads when large.
    pub fn sketches_slice(&mut self, sketches: &[SketchSeries], out: &mut dyn PayloadSink) {
        self.split(sketches, out, |ser, part, out| ser.sketches(part.iter(), out));
    }

    fn split<T: Sync>(
        &mut self,
        items: &[T],
        out: &mut dyn PayloadSink,
        build: impl Fn(&mut Serializer, &[T], &mut dyn PayloadSink) + Sync,
    ) {
        let threads = self.helpers.len() + 1;
        if threads == 1 || items.len() < PARALLEL_MIN_ITEMS {
            return build(self, items, out);
        }
        let per = items.len().div_ceil(threads);
        let mut parts = items.chunks(per);
        let first = parts.next().unwrap_or(&[]);
        let build = &build;
        let mut helper_out: Vec<Vec<Payload>> = Vec::new();
        let mut helpers = std::mem::take(&mut self.helpers);
        std::thread::scope(|scope| {
            let handles: Vec<_> = helpers
                .iter_mut()
                .zip(parts)
                .map(|(h, part)| {
                    scope.spawn(move || {
                        let mut o: Vec<Payload> = Vec::new();
                        build(h, part, &mut o);
                        o
                    })
                })
                .collect();
            build(self, first, out);
            for h in handles {
                // A panic is a bug and aborts the whole process (the
                // panic hook set by `app`), so a join error cannot carry
                // lost payloads in edgestat itself.
                if let Ok(o) = h.join() {
                    helper_out.push(o);
                }
            }
        });
        self.helpers = helpers;
        for p in helper_out.into_iter().flatten() {
            out.put(p);
        }
    }

    /// Threads a large series/sketch slice is built on (1: no helpers).
    pub fn encode_threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// The configuration in use.
    pub fn config(&self) -> &SerializerConfig {
        &self.config
    }

    /// Counters accumulated since creation.
    pub fn stats(&self) -> SerializerStats {
        let mut s = self.stats;
        for h in &self.helpers {
            s.add(&h.stats());
        }
        s
    }

    /// `Content-Encoding` of every payload this serializer produces.
    pub fn content_encoding(&self) -> &'static str {
        self.config.compression.content_encoding()
    }

    fn sync_counters(&mut self) {
        let c = self.builder.counters();
        self.stats.total_payloads = c.total_payloads;
        self.stats.total_cycles = c.total_cycles;
        self.stats.bytes_in = c.bytes_in;
        self.stats.bytes_out = c.bytes_out;
    }

    fn unexpected(&mut self, fam: Family, n: u64) {
        match fam {
            Family::Json => self.stats.item_drops += n,
            Family::Series => self.stats.series_unexpected_item_drops += n,
            Family::Sketch => self.stats.sketch_unexpected_item_drops += n,
        }
    }

    /// Closes the open payload into `out` (failures counted, never emitted).
    /// Returns the number of items emitted.
    fn close_into(&mut self, fam: Family, out: &mut dyn PayloadSink) -> usize {
        let items = self.builder.items();
        match self.builder.close() {
            Ok(p) => {
                out.put(p);
                items
            }
            Err(e) => {
                if let CloseError::Compress(_) = e {
                    self.stats.compress_errors += 1;
                }
                self.unexpected(fam, items as u64);
                0
            }
        }
    }

    fn start(&mut self) {
        if self.builder.start().is_err() {
            self.stats.compress_errors += 1;
        }
    }

    /// Adds the rendered `self.item`, closing full payloads and retrying once
    /// (the Agent's handling of full payloads and items too big for one).
    fn add_simple(&mut self, fam: Family, weight: usize, out: &mut dyn PayloadSink) {
        for _attempt in 0..2 {
            match self.builder.add_item(&self.item, weight) {
                Ok(()) => {
                    match fam {
                        Family::Json => self.stats.total_items += 1,
                        Family::Series => self.stats.series_items += 1,
                        Family::Sketch => self.stats.sketch_items += 1,
                    }
                    return;
                }
                Err(AddError::ItemTooBig) => {
                    match fam {
                        Family::Json => self.stats.item_drops += 1,
                        Family::Series => self.stats.series_item_too_big += 1,
                        Family::Sketch => self.stats.sketch_too_big += 1,
                    }
                    return;
                }
                Err(AddError::PayloadFull) => {
                    match fam {
                        Family::Json => self.stats.payload_full += 1,
                        Family::Series => self.stats.series_payload_full += 1,
                        Family::Sketch => self.stats.sketch_payload_full += 1,
                    }
                    self.close_into(fam, out);
                    self.start();
                }
                Err(AddError::Compress(_)) => {
                    // The stream is unusable: lose this payload, restart.
                    self.stats.compress_errors += 1;
                    let lost = self.builder.items() as u64 + 1;
                    self.unexpected(fam, lost);
                    self.builder.discard();
                    self.start();
                    return;
                }
            }
        }
        // PayloadFull on a fresh payload cannot happen (the builder reports
        // ItemTooBig instead); count defensively.
        self.unexpected(fam, 1);
    }

    /// Series v1 JSON (`/api/v1/series`): skips no-index series, drops
    /// too-big ones, always emits at least one payload (`{"series":[]}`).
    pub fn series_v1<'a>(&mut self, series: impl Iterator<Item = &'a Series>, out: &mut dyn PayloadSink) {
        self.begin_series(PayloadKind::SeriesV1);
        for s in series {
            self.add_series(PayloadKind::SeriesV1, s, out);
        }
        self.finish_series(PayloadKind::SeriesV1, out);
    }

    /// Series v2 protobuf (`/api/v2/series`): series limits plus points per
    /// payload; emits only non-empty payloads; no-index series included.
    pub fn series_v2<'a>(&mut self, series: impl Iterator<Item = &'a Series>, out: &mut dyn PayloadSink) {
        self.begin_series(PayloadKind::SeriesV2);
        for s in series {
            self.add_series(PayloadKind::SeriesV2, s, out);
        }
        self.finish_series(PayloadKind::SeriesV2, out);
    }

    /// Starts a series build of `kind` (`SeriesV1` or `SeriesV2`) fed one
    /// series at a time by [`Serializer::add_series`], so a flush can
    /// encode each series as it is rendered instead of holding them all;
    /// [`Serializer::series_v1`] / [`Serializer::series_v2`] are
    /// begin + add each + finish.
    pub fn begin_series(&mut self, kind: PayloadKind) {
        if kind == PayloadKind::SeriesV1 {
            self.stats.total_calls += 1;
            let limits = self.config.json_limits();
            self.builder.configure(SERIES_V1_HEADER, SERIES_V1_FOOTER, b",", limits);
        } else {
            let limits = self.config.series_limits();
            self.builder.configure(b"", b"", b"", limits);
        }
        self.start();
    }

    /// Adds one series to the build started by [`Serializer::begin_series`].
    pub fn add_series(&mut self, kind: PayloadKind, s: &Series, out: &mut dyn PayloadSink) {
        self.item.clear();
        if kind == PayloadKind::SeriesV1 {
            if json::v1_skips(s) {
                return;
            }
            if json::render_series_v1(&mut self.item, s).is_err() {
                self.stats.write_item_errors += 1;
                return;
            }
            self.add_simple(Family::Json, 0, out);
        } else {
            proto::encode_series(&mut self.item, s);
            self.add_simple(Family::Series, s.points.len(), out);
        }
    }

    /// Closes the build started by [`Serializer::begin_series`].
    pub fn finish_series(&mut self, kind: PayloadKind, out: &mut dyn PayloadSink) {
        if kind == PayloadKind::SeriesV1 {
            self.close_into(Family::Json, out);
        } else {
            self.finish_nonempty(Family::Series, out);
        }
        self.sync_counters();
    }

    /// Sketches protobuf (`/api/beta/sketches`): footer `12 00`, JSON limits,
    /// emits only non-empty payloads.
    pub fn sketches<'a>(&mut self, sketches: impl Iterator<Item = &'a SketchSeries>, out: &mut dyn PayloadSink) {
        self.begin_sketches();
        for s in sketches {
            self.add_sketch(s, out);
        }
        self.finish_sketches(out);
    }

    /// Starts a sketches build fed one at a time (see [`Serializer::begin_series`]).
    pub fn begin_sketches(&mut self) {
        let limits = self.config.json_limits();
        self.builder.configure(b"", &proto::SKETCH_PAYLOAD_FOOTER, b"", limits);
        self.start();
    }

    /// Adds one sketch to the build started by [`Serializer::begin_sketches`].
    pub fn add_sketch(&mut self, s: &SketchSeries, out: &mut dyn PayloadSink) {
        self.item.clear();
        proto::encode_sketch(&mut self.item, s);
        self.add_simple(Family::Sketch, 0, out);
    }

    /// Closes the build started by [`Serializer::begin_sketches`].
    pub fn finish_sketches(&mut self, out: &mut dyn PayloadSink) {
        self.finish_nonempty(Family::Sketch, out);
        self.sync_counters();
    }

    fn finish_nonempty(&mut self, fam: Family, out: &mut dyn PayloadSink) {
        if self.builder.items() > 0 {
            self.close_into(fam, out);
        } else {
            self.builder.discard();
        }
    }

    /// Service checks JSON array (`/api/v1/check_run`): like every JSON
    /// builder it always emits at least one payload (`[]`).
    pub fn service_checks<'a>(&mut self, checks: impl Iterator<Item = &'a ServiceCheck>, out: &mut dyn PayloadSink) {
        self.stats.total_calls += 1;
        let limits = self.config.json_limits();
        self.builder.configure(b"[", b"]", b",", limits);
        self.start();
        for c in checks {
            self.item.clear();
            json::render_service_check(&mut self.item, c);
            self.add_simple(Family::Json, 0, out);
        }
        self.close_into(Family::Json, out);
        self.sync_counters();
    }

    /// Events (`/intake/`), current-main single streaming pass (§6): sorts
    /// `events` by group key, streams them with group prefixes, reopens the
    /// group after a full payload, drops too-big events, never emits a
    /// payload without events.
    pub fn events(&mut self, events: &mut [Event], hostname: &str, out: &mut dyn PayloadSink) {
        if events.is_empty() {
            return;
        }
        events.sort_by(|a, b| json::event_group(a).cmp(json::event_group(b)));
        self.aux.clear();
        self.aux.extend_from_slice(b"]},\"internalHostname\":");
        json::write_str(&mut self.aux, hostname);
        self.aux.push(b'}');
        let footer = std::mem::take(&mut self.aux);
        let limits = self.config.json_limits();
        self.builder.configure(EVENTS_HEADER, &footer, b"", limits);
        self.aux = footer;
        self.start();

        let events: &[Event] = events;
        let mut current: Option<&str> = None;
        for e in events {
            let group = json::event_group(e);
            // Event body once; the prefix depends on the payload state.
            self.aux.clear();
            json::render_event(&mut self.aux, e);
            let body_len = self.aux.len();
            self.item.clear();
            json::write_str(&mut self.item, group);
            let fresh_len = self.item.len() + 2 + body_len; // "g":[ + body
                                                            // Dropped when it cannot fit even an empty payload (checked with
                                                            // the group-opening prefix, so no payload is closed in vain).
            if !self.builder.fits_alone(fresh_len, 0) {
                self.stats.events_dropped += 1;
                continue;
            }
            let mut added = false;
            for _attempt in 0..2 {
                self.item.clear();
                match current {
                    Some(c) if c == group => self.item.push(b','),
                    other => {
                        if other.is_some() {
                            self.item.extend_from_slice(b"],");
                        }
                        json::write_str(&mut self.item, group);
                        self.item.extend_from_slice(b":[");
                    }
                }
                self.item.extend_from_slice(&self.aux[..body_len]);
                match self.builder.add_item(&self.item, 0) {
                    Ok(()) => {
                        current = Some(group);
                        added = true;
                        break;
                    }
                    Err(AddError::Compress(_)) => {
                        self.stats.compress_errors += 1;
                        self.stats.events_dropped += self.builder.items() as u64 + 1;
                        self.builder.discard();
                        self.start();
                        current = None;
                        break;
                    }
                    Err(_) if self.builder.items() == 0 => break,
                    Err(_) => {
                        // Full (or too big only because of the `],` prefix):
                        // close this payload, reopen the group in a new one.
                        let n = self.close_events_payload(out);
                        self.stats.events_sent += n as u64;
                        self.start();
                        current = None;
                    }
                }
            }
            if !added {
                self.stats.events_dropped += 1;
            }
        }
        if self.builder.items() > 0 {
            let n = self.close_events_payload(out);
            self.stats.events_sent += n as u64;
        } else {
            self.builder.discard();
            self.stats.events_payload_empty += 1;
        }
        self.sync_counters();
    }

    fn close_events_payload(&mut self, out: &mut dyn PayloadSink) -> usize {
        let items = self.builder.items();
        match self.builder.close() {
            Ok(p) => {
                out.put(p);
                self.stats.events_payloads += 1;
                items
            }
            Err(e) => {
                if let CloseError::Compress(_) = e {
                    self.stats.compress_errors += 1;
                }
                self.stats.events_dropped += items as u64;
                0
            }
        }
    }

    /// Builder access for callers that need the "fits alone" definition
    /// (tests, diagnostics); configured for the most recent build.
    pub fn builder(&self) -> &PayloadBuilder {
        &self.builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{MetricType, Origin, Point, SeriesId};

    /// Field-1 records of a series/sketch payload body.
    fn records(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !b.is_empty() && b[0] == 0x0a {
            let (mut len, mut shift, mut i) = (0usize, 0, 1);
            loop {
                len |= ((b[i] & 0x7f) as usize) << shift;
                shift += 7;
                i += 1;
                if b[i - 1] < 0x80 {
                    break;
                }
            }
            out.push(b[..i + len].to_vec());
            b = &b[i + len..];
        }
        out
    }

    /// Several encode threads: every series and sketch lands in exactly one
    /// payload, byte for byte as with one thread, every payload within the
    /// limits (points included), and the counters add up.
    #[test]
    fn encode_threads_split_without_loss_or_change() {
        let series: Vec<Series> = (0..PARALLEL_MIN_ITEMS * 2 + 7)
            .map(|i| Series {
                id: SeriesId::owned(format!("m.{}", i % 97), "h".into(), vec![format!("i:{i}")]),
                points: vec![Point { timestamp: 1_700_000_000, value: i as f64 }; 1 + i % 3],
                metric_type: MetricType::Gauge,
                interval: 10,
                source_type_name: String::new(),
                origin: Origin::DogStatsD,
            })
            .collect();
        let sketches: Vec<SketchSeries> = (0..PARALLEL_MIN_ITEMS + 3)
            .map(|i| SketchSeries {
                id: SeriesId::owned(format!("d.{i}"), "h".into(), vec![]),
                dogsketches: vec![crate::core::model::Dogsketch {
                    ts: 1,
                    cnt: 1,
                    min: 1.0,
                    max: 1.0,
                    avg: 1.0,
                    sum: 1.0,
                    keys: vec![i as i32],
                    counts: vec![1],
                }],
            })
            .collect();
        let cfg = SerializerConfig {
            max_series_points_per_payload: 1000,
            max_payload_size: 20_000,
            ..SerializerConfig::default()
        };
        let run = |threads: usize| {
            let mut ser = Serializer::new(cfg).unwrap();
            ser.set_encode_threads(threads).unwrap();
            let (mut sp, mut kp) = (Vec::new(), Vec::new());
            ser.series_v2_slice(&series, &mut sp);
            ser.sketches_slice(&sketches, &mut kp);
            let decode = |ps: &[Payload], footer: &[u8], max_c: usize| {
                let mut all = Vec::new();
                for p in ps {
                    assert!(p.body.len() <= max_c);
                    let raw = zstd::stream::decode_all(&p.body[..]).unwrap();
                    assert_eq!(raw.len(), p.uncompressed_len);
                    let recs = records(&raw[..raw.len() - footer.len()]);
                    assert_eq!(recs.len(), p.items);
                    all.extend(recs);
                }
                all.sort();
                all
            };
            for p in &sp {
                assert!(p.points <= 1000);
            }
            let s = decode(&sp, b"", cfg.max_series_payload_size);
            let k = decode(&kp, &proto::SKETCH_PAYLOAD_FOOTER, cfg.max_payload_size);
            (s, k, sp.len(), kp.len(), ser.stats())
        };
        let (s1, k1, n1, m1, st1) = run(1);
        let (s2, k2, n2, m2, st2) = run(2);
        assert_eq!(s1.len(), series.len());
        assert_eq!(k1.len(), sketches.len());
        assert_eq!(s1, s2);
        assert_eq!(k1, k2);
        assert!(n2 >= n1 && m2 >= m1 && n1 > 1, "{n1} {n2} {m1} {m2}");
        assert_eq!(st2.series_items, series.len() as u64);
        assert_eq!(st2.sketch_items, sketches.len() as u64);
        assert_eq!(st2.total_payloads, (n2 + m2) as u64);
        assert_eq!(st1.total_payloads, (n1 + m1) as u64);
    }

    fn none_cfg() -> SerializerConfig {
        SerializerConfig { compression: Compression::None, ..SerializerConfig::default() }
    }

    fn body(p: &Payload) -> String {
        String::from_utf8(p.body.to_vec()).unwrap()
    }

    #[test]
    fn series_v1_example() {
        let s1 = Series {
            id: SeriesId::owned("page.views".into(), "h1".into(), vec!["a:1".into(), "b:2".into()]),
            points: vec![Point { timestamp: 1700000000, value: 0.4 }],
            metric_type: MetricType::Rate,
            interval: 10,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        };
        let s2 = Series {
            id: SeriesId::owned("datadog.agent.running".into(), "h1".into(), vec!["version:7.74.0".into()]),
            points: vec![Point { timestamp: 1700000015, value: 1.0 }],
            metric_type: MetricType::Gauge,
            interval: 0,
            source_type_name: "System".into(),
            origin: Origin::Internal,
        };
        let hidden = Series { origin: Origin::InternalNoIndex, ..s2.clone() };
        let mut ser = Serializer::new(none_cfg()).unwrap();
        let mut out = Vec::new();
        ser.series_v1([&s1, &hidden, &s2].into_iter(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            body(&out[0]),
            r#"{"series":[{"metric":"page.views","points":[[1700000000,0.4]],"tags":["a:1","b:2"],"host":"h1","type":"rate","interval":10},{"metric":"datadog.agent.running","points":[[1700000015,1]],"tags":["version:7.74.0"],"host":"h1","type":"gauge","interval":0,"source_type_name":"System"}]}"#
        );
        assert_eq!(out[0].items, 2);
        out.clear();
        ser.series_v1(std::iter::empty(), &mut out);
        assert_eq!(body(&out[0]), r#"{"series":[]}"#);
    }

    #[test]
    fn series_v1_device_and_resource_tags() {
        let s = Series {
            id: SeriesId::owned(
                "m".into(),
                "".into(),
                vec!["dd.internal.resource:db:x".into(), "device:sda".into(), "k:v".into()],
            ),
            points: vec![],
            metric_type: MetricType::Count,
            interval: 0,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        };
        let mut ser = Serializer::new(none_cfg()).unwrap();
        let mut out = Vec::new();
        ser.series_v1(std::iter::once(&s), &mut out);
        assert_eq!(
            body(&out[0]),
            r#"{"series":[{"metric":"m","points":[],"tags":["k:v"],"host":"","device":"sda","type":"count","interval":0}]}"#
        );
    }

    #[test]
    fn check_run_payload_example() {
        let c = ServiceCheck {
            check: "datadog.agent.up".into(),
            host_name: "h1".into(),
            timestamp: 1700000015,
            status: 0,
            message: String::new(),
            tags: vec![],
        };
        let mut ser = Serializer::new(none_cfg()).unwrap();
        let mut out = Vec::new();
        ser.service_checks(std::iter::once(&c), &mut out);
        assert_eq!(
            body(&out[0]),
            r#"[{"check":"datadog.agent.up","host_name":"h1","timestamp":1700000015,"status":0,"message":"","tags":null}]"#
        );
    }

    #[test]
    fn events_example() {
        let mut evs = vec![
            Event {
                title: "Build".into(),
                text: "".into(),
                timestamp: 1700000004,
                priority: "normal".into(),
                host: "h1".into(),
                alert_type: "info".into(),
                source_type_name: "ci".into(),
                ..Event::default()
            },
            Event {
                title: "Deploy".into(),
                text: "v1.2 ok".into(),
                timestamp: 1700000003,
                priority: "low".into(),
                host: "h1".into(),
                tags: vec!["env:prod".into()],
                alert_type: "success".into(),
                ..Event::default()
            },
        ];
        let mut ser = Serializer::new(none_cfg()).unwrap();
        let mut out = Vec::new();
        ser.events(&mut evs, "h1", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            body(&out[0]),
            r#"{"apiKey":"","events":{"api":[{"msg_title":"Deploy","msg_text":"v1.2 ok","timestamp":1700000003,"priority":"low","host":"h1","tags":["env:prod"],"alert_type":"success"}],"ci":[{"msg_title":"Build","msg_text":"","timestamp":1700000004,"priority":"normal","host":"h1","alert_type":"info","source_type_name":"ci"}]},"internalHostname":"h1"}"#
        );
        assert_eq!(ser.stats().events_sent, 2);
        assert_eq!(ser.stats().events_payloads, 1);
    }

    #[test]
    fn events_group_reopened_after_full() {
        let mut evs: Vec<Event> = (0..10)
            .map(|i| Event {
                title: format!("t{i}"),
                host: "h".into(),
                source_type_name: if i < 5 { "a".into() } else { "b".into() },
                ..Event::default()
            })
            .collect();
        let cfg = SerializerConfig { max_payload_size: 250, max_uncompressed_payload_size: 250, ..none_cfg() };
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::new();
        ser.events(&mut evs, "h\"x", &mut out);
        assert!(out.len() > 1);
        let mut seen = 0;
        for p in &out {
            let b = body(p);
            assert!(b.len() <= 250);
            assert!(b.ends_with(r#"]},"internalHostname":"h\"x"}"#), "{b}");
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            for (_, arr) in v["events"].as_object().unwrap() {
                seen += arr.as_array().unwrap().len();
            }
        }
        assert_eq!(seen, 10);
        assert_eq!(ser.stats().events_dropped, 0);
    }

    #[test]
    fn extreme_limits_do_not_panic() {
        let s = Series {
            id: SeriesId::owned("m".into(), "h".into(), vec!["a:b".into()]),
            points: vec![Point { timestamp: -1, value: f64::NAN }, Point { timestamp: i64::MAX, value: 1e300 }],
            metric_type: MetricType::Gauge,
            interval: i64::MIN,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        };
        let sk = SketchSeries { id: SeriesId::owned("d".into(), String::new(), vec![]), dogsketches: vec![] };
        let c = ServiceCheck {
            check: "c".into(),
            host_name: String::new(),
            timestamp: 0,
            status: 9,
            message: String::new(),
            tags: vec![],
        };
        for comp in [
            Compression::Zstd { level: 1 },
            Compression::Zstd { level: 99 },
            Compression::Zlib,
            Compression::Gzip,
            Compression::Lz4,
            Compression::None,
        ] {
            for lim in [0usize, 1, 5, usize::MAX] {
                let cfg = SerializerConfig {
                    compression: comp,
                    max_payload_size: lim,
                    max_uncompressed_payload_size: lim,
                    max_series_payload_size: lim,
                    max_series_uncompressed_payload_size: lim,
                    max_series_points_per_payload: lim,
                };
                let mut ser = Serializer::new(cfg).unwrap();
                let mut out = Vec::new();
                ser.series_v1(std::iter::once(&s), &mut out);
                ser.series_v2(std::iter::once(&s), &mut out);
                ser.sketches(std::iter::once(&sk), &mut out);
                ser.service_checks(std::iter::once(&c), &mut out);
                let mut evs = vec![Event::default()];
                ser.events(&mut evs, "h", &mut out);
                for p in &out {
                    assert!(p.body.len() <= lim);
                }
            }
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(PayloadKind::Events.path(), "/intake/");
        assert_eq!(PayloadKind::SeriesV2.content_type(), "application/x-protobuf");
        assert_eq!(PayloadKind::ServiceChecks.content_type(), "application/json");
        assert_eq!(PayloadKind::Sketches.path(), "/api/beta/sketches");
    }
}
