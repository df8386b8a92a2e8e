//! Flush-side merge: folds the shards' closed aggregates into one view per
//! context, applies counter zero-fill and expiry, and renders series and
//! sketches exactly as the Agent's time sampler flush does.

use std::borrow::Cow;
use std::sync::Arc;

use hashbrown::HashTable;

use super::context::ContextKey;
use super::sampler::{Agg, FlushEntry, SketchEntry, BUCKET_SECONDS};
use crate::core::model::{MetricType, Origin, Point, Series, SeriesId, SketchSeries};

/// Histogram outputs (`histogram_aggregates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramAggregate {
    /// `.max`
    Max,
    /// `.min`
    Min,
    /// `.median`
    Median,
    /// `.avg`
    Avg,
    /// `.sum`
    Sum,
    /// `.count` (rate)
    Count,
}

impl HistogramAggregate {
    /// The `histogram_aggregates` word for it (`max`, `median`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "max" => Self::Max,
            "min" => Self::Min,
            "median" => Self::Median,
            "avg" => Self::Avg,
            "sum" => Self::Sum,
            "count" => Self::Count,
            _ => return None,
        })
    }

    /// Suffix appended to the metric name.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Max => ".max",
            Self::Min => ".min",
            Self::Median => ".median",
            Self::Avg => ".avg",
            Self::Sum => ".sum",
            Self::Count => ".count",
        }
    }
}

/// The aggregation settings the flush needs.
#[derive(Debug, Clone)]
pub struct FlushSettings {
    /// `histogram_aggregates`.
    pub histogram_aggregates: Vec<HistogramAggregate>,
    /// `histogram_percentiles` (0..=100, ascending).
    pub histogram_percentiles: Vec<u32>,
    /// `dogstatsd_expiry_seconds`.
    pub expiry_seconds: i64,
    /// `dogstatsd_context_expiry_seconds`.
    pub context_expiry_seconds: i64,
    /// Applied again to histogram outputs (`foo.max` can be blocked alone).
    pub blocklist: std::sync::Arc<crate::core::filter::MetricFilter>,
}

/// Whether two contexts are the same (shards intern separately, so equal
/// contexts may be different allocations).
fn same(a: &Arc<ContextKey>, b: &Arc<ContextKey>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Chains entry `i` (context `key`) behind the earlier entries of its
/// context, or opens a group for it: `groups` holds (first, last) per
/// context, `next` the chain, `heads` the groups in arrival order.
fn link<'a>(
    groups: &mut HashTable<(u32, u32)>,
    heads: &mut Vec<u32>,
    next: &mut [u32],
    i: u32,
    key: &Arc<ContextKey>,
    key_of: impl Fn(u32) -> &'a Arc<ContextKey>,
) {
    let h = key.key_hash();
    match groups.find_mut(h, |&(first, _)| same(key_of(first), key)) {
        Some((_, last)) => {
            next[*last as usize] = i;
            *last = i;
        }
        None => {
            groups.insert_unique(h, (i, i), |&(first, _)| key_of(first).key_hash());
            heads.push(i);
        }
    }
}

/// What one flush produced.
#[derive(Debug, Default)]
pub struct FlushOutput {
    /// Series (counters as rates, gauges, sets, histogram aggregates).
    pub series: Vec<Series>,
    /// Distribution sketches.
    pub sketches: Vec<SketchSeries>,
}

/// A remembered counter context.
struct CounterState {
    key: Arc<ContextKey>,
    /// Last sample time.
    last_seen: i64,
    /// Flush number in which `seen_buckets` was set.
    seen_flush: u64,
    /// Bit i: the flush's i-th bucket (i < 64) already has an entry for this
    /// counter, so zero-fill need not look it up.
    seen_buckets: u64,
}

/// Bytes of one remembered counter in the merger (for the memory estimate).
pub const COUNTER_STATE_BYTES: usize = std::mem::size_of::<CounterState>();

/// End of an entry chain.
const NONE: u32 = u32::MAX;

/// Long-lived merger: remembers counters for zero-fill across flushes.
pub struct FlushMerger {
    settings: FlushSettings,
    /// Counter contexts (keyed by `key_hash`) and their last sample time.
    counters: HashTable<CounterState>,
    last_cutoff: i64,
    /// Bound on remembered counters (mirrors the per-node context limit).
    max_counters: usize,
    /// Flushes so far (tags `CounterState::seen_buckets`).
    flushes: u64,
    /// Histogram outputs in settings order, suffixes rendered once.
    hist_outputs: Vec<(HistOutput, Cow<'static, str>, MetricType)>,
    /// Reused per multi-bucket context.
    scratch: Vec<(i64, Agg)>,
}

/// One histogram output series.
#[derive(Clone, Copy)]
enum HistOutput {
    Aggregate(HistogramAggregate),
    Percentile(u32),
}

impl FlushMerger {
    /// A merger with no history.
    pub fn new(settings: FlushSettings, max_counters: usize) -> Self {
        let mut hist_outputs = Vec::new();
        for &a in &settings.histogram_aggregates {
            let t = if matches!(a, HistogramAggregate::Count) { MetricType::Rate } else { MetricType::Gauge };
            hist_outputs.push((HistOutput::Aggregate(a), Cow::Borrowed(a.suffix()), t));
        }
        for &p in &settings.histogram_percentiles {
            hist_outputs.push((HistOutput::Percentile(p), percentile_suffix(p), MetricType::Gauge));
        }
        Self {
            settings,
            counters: HashTable::new(),
            last_cutoff: 0,
            max_counters,
            flushes: 0,
            hist_outputs,
            scratch: Vec::new(),
        }
    }

    /// Counter contexts currently zero-filled.
    pub fn tracked_counters(&self) -> usize {
        self.counters.len()
    }

    /// Merges one flush worth of shard output at wall-clock `now`.
    pub fn flush(&mut self, entries: Vec<FlushEntry>, sketches: Vec<SketchEntry>, now: i64) -> FlushOutput {
        // Sized for what will be rendered: growing a 100k-series vector
        // would copy it at the flush's memory peak.
        let mut out = FlushOutput { series: Vec::with_capacity(entries.len()), sketches: Vec::new() };
        self.flush_series(entries, &sketches, now, &mut |s| out.series.push(s));
        out.sketches.reserve_exact(sketches.len());
        render_sketches(sketches, &mut |s| out.sketches.push(s));
        out
    }

    /// The series half of [`FlushMerger::flush`]: merges the entries and
    /// hands each rendered series to `out` as soon as it is rendered, in
    /// the order `flush` returns them, so a flush can encode them straight
    /// away instead of holding 100k `Series` at its memory peak. `sketches`
    /// only contributes its buckets (counter zero-fill covers every flushed
    /// bucket); render them with [`render_sketches`].
    pub fn flush_series(
        &mut self,
        mut entries: Vec<FlushEntry>,
        sketches: &[SketchEntry],
        now: i64,
        out: &mut dyn FnMut(Series),
    ) {
        let cutoff = now - now.rem_euclid(BUCKET_SECONDS);
        self.flushes += 1;
        let flush_no = self.flushes;

        // 1. Group the shards' entries by context without moving them: a
        // table of (first, last) entry indices per context, entries of one
        // context chained through `next` in arrival order (absorb order).
        let mut groups: HashTable<(u32, u32)> = HashTable::with_capacity(entries.len());
        let mut heads: Vec<u32> = Vec::with_capacity(entries.len());
        let mut next: Vec<u32> = vec![NONE; entries.len()];
        let mut buckets: Vec<i64> = Vec::new();
        for i in 0..entries.len() {
            let e = &entries[i];
            let bi = match buckets.iter().position(|&b| b == e.bucket) {
                Some(bi) => bi,
                None => {
                    buckets.push(e.bucket);
                    buckets.len() - 1
                }
            };
            let h = e.key.key_hash();
            if matches!(e.agg, Agg::Counter(_)) {
                let room = self.counters.len() < self.max_counters;
                match self.counters.find_mut(h, |c| same(&c.key, &e.key)) {
                    Some(c) => {
                        c.last_seen = c.last_seen.max(e.last_seen);
                        if c.seen_flush != flush_no {
                            c.seen_flush = flush_no;
                            c.seen_buckets = 0;
                        }
                        if bi < 64 {
                            c.seen_buckets |= 1 << bi;
                        }
                    }
                    None if room => {
                        let seen_buckets = if bi < 64 { 1 << bi } else { 0 };
                        let c = CounterState {
                            key: e.key.clone(),
                            last_seen: e.last_seen,
                            seen_flush: flush_no,
                            seen_buckets,
                        };
                        self.counters.insert_unique(h, c, |c| c.key.key_hash());
                    }
                    None => {}
                }
            }
            link(&mut groups, &mut heads, &mut next, i as u32, &e.key, |j| &entries[j as usize].key);
        }
        for e in sketches {
            if !buckets.contains(&e.bucket) {
                buckets.push(e.bucket);
            }
        }

        // 2. Counter zero-fill over the flushed buckets (or one synthetic
        // bucket). Buckets a counter already has are known from step 1
        // without a lookup.
        if buckets.is_empty() && self.last_cutoff + BUCKET_SECONDS <= cutoff {
            buckets.push(cutoff - BUCKET_SECONDS);
        }
        for c in self.counters.iter() {
            for (bi, &b) in buckets.iter().enumerate() {
                if c.last_seen + self.settings.expiry_seconds <= b {
                    continue;
                }
                if bi < 64 && c.seen_flush == flush_no && c.seen_buckets & (1 << bi) != 0 {
                    continue;
                }
                let h = c.key.key_hash();
                let i = entries.len() as u32;
                let zero = FlushEntry { key: c.key.clone(), bucket: b, agg: Agg::Counter(0.0), last_seen: c.last_seen };
                match groups.find_mut(h, |&(first, _)| same(&entries[first as usize].key, &c.key)) {
                    Some((first, last)) => {
                        let mut j = *first;
                        let mut has = false;
                        while j != NONE {
                            has |= entries[j as usize].bucket == b;
                            j = next[j as usize];
                        }
                        if !has {
                            next[*last as usize] = i;
                            *last = i;
                            entries.push(zero);
                            next.push(NONE);
                        }
                    }
                    None => {
                        entries.push(zero);
                        next.push(NONE);
                        groups.insert_unique(h, (i, i), |&(first, _)| entries[first as usize].key.key_hash());
                        heads.push(i);
                    }
                }
            }
        }
        drop(groups);
        self.last_cutoff = self.last_cutoff.max(cutoff);

        // 3. Expire idle counters.
        let ttl = self.settings.context_expiry_seconds + self.settings.expiry_seconds;
        self.counters.retain(|c| c.last_seen + ttl >= now);

        // 4. Render: one entry (the common case) directly, several through
        // the reused scratch list.
        let mut scratch = std::mem::take(&mut self.scratch);
        for &head in &heads {
            let head = head as usize;
            let key = entries[head].key.clone();
            if next[head] == NONE {
                let agg = std::mem::replace(&mut entries[head].agg, Agg::Counter(0.0));
                let bucket = entries[head].bucket;
                if let Some((t, v)) = simple_value(&agg) {
                    if v.is_finite() {
                        out(series(key, Cow::Borrowed(""), t, vec![Point { timestamp: bucket, value: v }]));
                    }
                    continue;
                }
                scratch.push((bucket, agg));
            } else {
                let mut j = head;
                while j != NONE as usize {
                    let agg = std::mem::replace(&mut entries[j].agg, Agg::Counter(0.0));
                    let b = entries[j].bucket;
                    match scratch.iter_mut().find(|(x, _)| *x == b) {
                        Some((_, a)) => a.absorb(agg),
                        None => scratch.push((b, agg)),
                    }
                    j = next[j] as usize;
                }
                scratch.sort_by_key(|(b, _)| *b);
            }
            self.render(&key, &mut scratch, out);
            scratch.clear();
        }
        self.scratch = scratch;
    }

    fn render(&self, key: &Arc<ContextKey>, buckets: &mut Vec<(i64, Agg)>, out: &mut dyn FnMut(Series)) {
        // One series per (output type, suffix), several points.
        let mut rendered: Vec<(Cow<'static, str>, MetricType, Vec<Point>)> = Vec::new();
        let mut push = |suffix: &Cow<'static, str>, t: MetricType, ts: i64, value: f64| {
            if !value.is_finite() {
                return;
            }
            match rendered.iter_mut().find(|(s, ty, _)| *s == *suffix && *ty == t) {
                Some((_, _, pts)) => pts.push(Point { timestamp: ts, value }),
                None => rendered.push((suffix.clone(), t, vec![Point { timestamp: ts, value }])),
            }
        };
        const NO_SUFFIX: Cow<'static, str> = Cow::Borrowed("");
        for (ts, agg) in buckets.drain(..) {
            if let Some((t, v)) = simple_value(&agg) {
                push(&NO_SUFFIX, t, ts, v);
                continue;
            }
            let Agg::Histogram(mut samples) = agg else { continue };
            if samples.is_empty() {
                continue;
            }
            samples.sort_by(|a, b| a.0.total_cmp(&b.0));
            let h = HistogramSummary::of(&samples);
            for (what, suffix, t) in &self.hist_outputs {
                let v = match *what {
                    HistOutput::Aggregate(HistogramAggregate::Max) => h.max,
                    HistOutput::Aggregate(HistogramAggregate::Min) => h.min,
                    HistOutput::Aggregate(HistogramAggregate::Median) => h.pick(&samples, (h.weight - 1.0) / 2.0),
                    HistOutput::Aggregate(HistogramAggregate::Avg) => h.sum / h.weight,
                    HistOutput::Aggregate(HistogramAggregate::Sum) => h.sum,
                    HistOutput::Aggregate(HistogramAggregate::Count) => h.weight / BUCKET_SECONDS as f64,
                    HistOutput::Percentile(p) => h.pick(&samples, (p as f64 * h.weight - 1.0) / 100.0),
                };
                push(suffix, *t, ts, v);
            }
        }
        for (suffix, t, points) in rendered {
            if !suffix.is_empty() && !self.settings.blocklist.is_empty() {
                let full = format!("{}{suffix}", String::from_utf8_lossy(key.name()));
                if self.settings.blocklist.blocks(full.as_bytes()) {
                    continue;
                }
            }
            out(series(key.clone(), suffix, t, points));
        }
    }
}

/// Type and value of a counter, gauge or set bucket (`None`: histogram).
fn simple_value(agg: &Agg) -> Option<(MetricType, f64)> {
    match agg {
        Agg::Counter(sum) => Some((MetricType::Rate, sum / BUCKET_SECONDS as f64)),
        Agg::Gauge { value, .. } => Some((MetricType::Gauge, *value)),
        Agg::Set(members) => Some((MetricType::Gauge, members.len() as f64)),
        Agg::Histogram(_) => None,
    }
}

/// An aggregated series sharing the context's identity: no per-series
/// copies of name, host and tags (flush cost was allocation-bound).
fn series(key: Arc<ContextKey>, suffix: Cow<'static, str>, metric_type: MetricType, points: Vec<Point>) -> Series {
    Series {
        id: SeriesId::context(key, suffix),
        points,
        metric_type,
        interval: BUCKET_SECONDS,
        source_type_name: String::new(),
        origin: Origin::DogStatsD,
    }
}

/// Folds the shards' sketches by context and bucket (grouped as the
/// entries are) and hands one `SketchSeries` per context to `out`, in
/// arrival order, as each is rendered (see [`FlushMerger::flush_series`]).
pub fn render_sketches(mut sketches: Vec<SketchEntry>, out: &mut dyn FnMut(SketchSeries)) {
    let mut groups: HashTable<(u32, u32)> = HashTable::with_capacity(sketches.len());
    let mut heads: Vec<u32> = Vec::with_capacity(sketches.len());
    let mut next: Vec<u32> = vec![NONE; sketches.len()];
    for i in 0..sketches.len() {
        let e = &sketches[i];
        link(&mut groups, &mut heads, &mut next, i as u32, &e.key, |j| &sketches[j as usize].key);
    }
    drop(groups);
    let mut list: Vec<(i64, usize)> = Vec::new();
    for &head in &heads {
        let head = head as usize;
        let dogsketches: Vec<_> = if next[head] == NONE {
            let e = &sketches[head];
            if e.sketch.count() == 0 {
                continue;
            }
            vec![e.sketch.to_dogsketch(e.bucket)]
        } else {
            // Absorb later entries of the same bucket into the first one.
            list.clear();
            let mut j = head;
            while j != NONE as usize {
                let b = sketches[j].bucket;
                match list.iter().find(|(x, _)| *x == b) {
                    Some(&(_, into)) => {
                        let other = std::mem::take(&mut sketches[j].sketch);
                        sketches[into].sketch.merge(&other);
                    }
                    None => list.push((b, j)),
                }
                j = next[j] as usize;
            }
            list.sort_by_key(|(b, _)| *b);
            list.iter()
                .filter(|(_, j)| sketches[*j].sketch.count() > 0)
                .map(|&(b, j)| sketches[j].sketch.to_dogsketch(b))
                .collect()
        };
        if dogsketches.is_empty() {
            continue;
        }
        out(SketchSeries { id: SeriesId::context(sketches[head].key.clone(), Cow::Borrowed("")), dogsketches });
    }
}

/// `.{p}percentile`, static for the valid range 0..=100 (no allocation per
/// rendered series).
fn percentile_suffix(p: u32) -> Cow<'static, str> {
    match PERCENTILE_SUFFIXES.get(p as usize) {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(format!(".{p}percentile")),
    }
}

/// `.0percentile` … `.100percentile`.
const PERCENTILE_SUFFIXES: [&str; 101] = [
    ".0percentile",
    ".1percentile",
    ".2percentile",
    ".3percentile",
    ".4percentile",
    ".5percentile",
    ".6percentile",
    ".7percentile",
    ".8percentile",
    ".9percentile",
    ".10percentile",
    ".11percentile",
    ".12percentile",
    ".13percentile",
    ".14percentile",
    ".15percentile",
    ".16percentile",
    ".17percentile",
    ".18percentile",
    ".19percentile",
    ".20percentile",
    ".21percentile",
    ".22percentile",
    ".23percentile",
    ".24percentile",
    ".25percentile",
    ".26percentile",
    ".27percentile",
    ".28percentile",
    ".29percentile",
    ".30percentile",
    ".31percentile",
    ".32percentile",
    ".33percentile",
    ".34percentile",
    ".35percentile",
    ".36percentile",
    ".37percentile",
    ".38percentile",
    ".39percentile",
    ".40percentile",
    ".41percentile",
    ".42percentile",
    ".43percentile",
    ".44percentile",
    ".45percentile",
    ".46percentile",
    ".47percentile",
    ".48percentile",
    ".49percentile",
    ".50percentile",
    ".51percentile",
    ".52percentile",
    ".53percentile",
    ".54percentile",
    ".55percentile",
    ".56percentile",
    ".57percentile",
    ".58percentile",
    ".59percentile",
    ".60percentile",
    ".61percentile",
    ".62percentile",
    ".63percentile",
    ".64percentile",
    ".65percentile",
    ".66percentile",
    ".67percentile",
    ".68percentile",
    ".69percentile",
    ".70percentile",
    ".71percentile",
    ".72percentile",
    ".73percentile",
    ".74percentile",
    ".75percentile",
    ".76percentile",
    ".77percentile",
    ".78percentile",
    ".79percentile",
    ".80percentile",
    ".81percentile",
    ".82percentile",
    ".83percentile",
    ".84percentile",
    ".85percentile",
    ".86percentile",
    ".87percentile",
    ".88percentile",
    ".89percentile",
    ".90percentile",
    ".91percentile",
    ".92percentile",
    ".93percentile",
    ".94percentile",
    ".95percentile",
    ".96percentile",
    ".97percentile",
    ".98percentile",
    ".99percentile",
    ".100percentile",
];

/// Weighted summary of one bucket's histogram samples (sorted by value).
struct HistogramSummary {
    min: f64,
    max: f64,
    sum: f64,
    weight: f64,
}

impl HistogramSummary {
    fn of(sorted: &[(f64, f64)]) -> Self {
        // Neumaier-compensated Σ v·w, as current Agent main.
        let (mut sum, mut comp) = (0.0f64, 0.0f64);
        let mut weight = 0.0;
        for &(v, w) in sorted {
            let x = v * w;
            let t = sum + x;
            if sum.abs() >= x.abs() {
                comp += (sum - t) + x;
            } else {
                comp += (x - t) + sum;
            }
            sum = t;
            weight += w;
        }
        HistogramSummary {
            min: sorted.first().map_or(0.0, |s| s.0),
            max: sorted.last().map_or(0.0, |s| s.0),
            sum: sum + comp,
            weight,
        }
    }

    /// First sample whose cumulative weight exceeds `target` (median:
    /// `(W − 1) / 2`; percentile P: `(P·W − 1) / 100`, as the Agent).
    fn pick(&self, sorted: &[(f64, f64)], target: f64) -> f64 {
        let mut cum = 0.0;
        for &(v, w) in sorted {
            cum += w;
            if cum > target {
                return v;
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<ContextKey> {
        let tags: Vec<&[u8]> = vec![];
        let v = super::super::context::KeyView { name: name.as_bytes(), host: b"h1", tags: &tags };
        Arc::new(v.to_key(v.hash()))
    }

    fn settings() -> FlushSettings {
        FlushSettings {
            histogram_aggregates: vec![
                HistogramAggregate::Max,
                HistogramAggregate::Median,
                HistogramAggregate::Avg,
                HistogramAggregate::Count,
            ],
            histogram_percentiles: vec![95],
            expiry_seconds: 300,
            context_expiry_seconds: 20,
            blocklist: Default::default(),
        }
    }

    #[test]
    fn histogram_spec_example() {
        let mut m = FlushMerger::new(settings(), 100);
        let samples = vec![(1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (10.0, 1.0)];
        let e = FlushEntry {
            key: key("lat"),
            bucket: 1_700_000_000,
            agg: Agg::Histogram(samples),
            last_seen: 1_700_000_001,
        };
        let out = m.flush(vec![e], vec![], 1_700_000_015);
        let get = |n: &str| out.series.iter().find(|s| s.id.name() == n).unwrap().points[0].value;
        assert_eq!(get("lat.max"), 10.0);
        assert_eq!(get("lat.median"), 2.0);
        assert_eq!(get("lat.avg"), 4.0);
        assert!((get("lat.count") - 0.4).abs() < 1e-12);
        assert_eq!(get("lat.95percentile"), 10.0);
        assert_eq!(out.series.iter().find(|s| s.id.name() == "lat.count").unwrap().metric_type, MetricType::Rate);
    }

    #[test]
    fn counters_merge_across_shards_and_zero_fill_then_expire() {
        let mut m = FlushMerger::new(settings(), 100);
        let k = key("c");
        let a = FlushEntry { key: k.clone(), bucket: 1_700_000_000, agg: Agg::Counter(3.0), last_seen: 1_700_000_005 };
        let b = FlushEntry { key: key("c"), bucket: 1_700_000_000, agg: Agg::Counter(1.0), last_seen: 1_700_000_006 };
        let out = m.flush(vec![a, b], vec![], 1_700_000_015);
        assert_eq!(out.series.len(), 1);
        assert_eq!(out.series[0].points, vec![Point { timestamp: 1_700_000_000, value: 0.4 }]);
        // Next flush: no data, synthetic bucket gets a zero.
        let out = m.flush(vec![], vec![], 1_700_000_030);
        assert_eq!(out.series[0].points, vec![Point { timestamp: 1_700_000_020, value: 0.0 }]);
        // Long after: expired, nothing sent.
        let out = m.flush(vec![], vec![], 1_700_000_400);
        assert!(out.series.is_empty());
        assert_eq!(m.tracked_counters(), 0);
    }

    /// Zero-fill adds exactly one zero to each flushed bucket a live counter
    /// has no entry in, also past the 64 buckets tracked without a lookup,
    /// and in the next flush (when last flush's bucket bits are stale).
    #[test]
    fn zero_fill_covers_missing_buckets_only() {
        let mut m = FlushMerger::new(settings(), 100);
        let (a, b) = (key("a"), key("b"));
        let t0 = 1_700_000_000;
        let mut entries = Vec::new();
        for i in 0..70 {
            entries.push(FlushEntry {
                key: a.clone(),
                bucket: t0 + 10 * i,
                agg: Agg::Counter(10.0),
                last_seen: t0 + 10 * i,
            });
        }
        entries.push(FlushEntry {
            key: b.clone(),
            bucket: t0 + 10 * 65,
            agg: Agg::Counter(20.0),
            last_seen: t0 + 10 * 69,
        });
        entries.push(FlushEntry { key: b.clone(), bucket: t0, agg: Agg::Counter(20.0), last_seen: t0 + 10 * 69 });
        let out = m.flush(entries, vec![], t0 + 700);
        let pts = |out: &FlushOutput, n: &str| out.series.iter().find(|s| s.id.name() == n).unwrap().points.clone();
        let pa = pts(&out, "a");
        assert_eq!(pa.len(), 70);
        assert!(pa.iter().all(|p| p.value == 1.0));
        let pb = pts(&out, "b");
        assert_eq!(pb.len(), 70);
        assert!(pb.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        for p in &pb {
            let want = if p.timestamp == t0 || p.timestamp == t0 + 650 { 2.0 } else { 0.0 };
            assert_eq!(p.value, want, "b at {}", p.timestamp);
        }
        // Next flush: only `a` has data; `b` gets a zero in that bucket.
        let e = FlushEntry { key: a.clone(), bucket: t0 + 700, agg: Agg::Counter(30.0), last_seen: t0 + 701 };
        let out = m.flush(vec![e], vec![], t0 + 710);
        assert_eq!(pts(&out, "a"), vec![Point { timestamp: t0 + 700, value: 3.0 }]);
        assert_eq!(pts(&out, "b"), vec![Point { timestamp: t0 + 700, value: 0.0 }]);
        assert_eq!(out.series.len(), 2);
    }

    #[test]
    fn gauge_last_across_shards() {
        let mut m = FlushMerger::new(settings(), 100);
        let a = FlushEntry { key: key("g"), bucket: 0, agg: Agg::Gauge { value: 1.0, seq: 10 }, last_seen: 1 };
        let b = FlushEntry { key: key("g"), bucket: 0, agg: Agg::Gauge { value: 2.0, seq: 5 }, last_seen: 1 };
        let out = m.flush(vec![a, b], vec![], 15);
        assert_eq!(out.series[0].points[0].value, 1.0);
    }
}
