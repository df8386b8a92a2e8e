//! Flush-side merge: folds the shards' closed aggregates into one view per
//! context, applies counter zero-fill and expiry, and renders series and
//! sketches exactly as the Agent's time sampler flush does.

use std::borrow::Cow;
use std::sync::Arc;

use hashbrown::HashMap;

use super::context::ContextKey;
use super::sampler::{Agg, FlushEntry, SketchEntry, BUCKET_SECONDS};
use super::sketch::Sketch;
use crate::config::HistogramAggregate;
use crate::model::{MetricType, Origin, Point, Series, SeriesId, SketchSeries};

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
    pub blocklist: std::sync::Arc<crate::filter::MetricFilter>,
}

/// Hash-map key comparing contexts by content (shards intern separately).
#[derive(Clone)]
struct Ctx(Arc<ContextKey>);

impl PartialEq for Ctx {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0) || *self.0 == *o.0
    }
}
impl Eq for Ctx {}
impl std::hash::Hash for Ctx {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.0.key_hash());
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

/// Long-lived merger: remembers counters for zero-fill across flushes.
pub struct FlushMerger {
    settings: FlushSettings,
    /// Counter contexts and their last sample time.
    counters: HashMap<Ctx, i64>,
    last_cutoff: i64,
    /// Bound on remembered counters (mirrors the per-node context limit).
    max_counters: usize,
}

impl FlushMerger {
    /// A merger with no history.
    pub fn new(settings: FlushSettings, max_counters: usize) -> Self {
        Self { settings, counters: HashMap::new(), last_cutoff: 0, max_counters }
    }

    /// Counter contexts currently zero-filled.
    pub fn tracked_counters(&self) -> usize {
        self.counters.len()
    }

    /// Merges one flush worth of shard output at wall-clock `now`.
    pub fn flush(&mut self, entries: Vec<FlushEntry>, sketches: Vec<SketchEntry>, now: i64) -> FlushOutput {
        let cutoff = now - now.rem_euclid(BUCKET_SECONDS);

        // 1. Fold shards together: context -> bucket -> aggregate.
        let mut merged: HashMap<Ctx, Vec<(i64, Agg)>> = HashMap::with_capacity(entries.len() + self.counters.len());
        let mut buckets: Vec<i64> = Vec::new();
        for e in entries {
            if matches!(e.agg, Agg::Counter(_)) {
                let key = Ctx(e.key.clone());
                let room = self.counters.len() < self.max_counters;
                match self.counters.get_mut(&key) {
                    Some(seen) => *seen = (*seen).max(e.last_seen),
                    None if room => {
                        self.counters.insert(key, e.last_seen);
                    }
                    None => {}
                }
            }
            if !buckets.contains(&e.bucket) {
                buckets.push(e.bucket);
            }
            let slot = merged.entry(Ctx(e.key)).or_default();
            match slot.iter_mut().find(|(b, _)| *b == e.bucket) {
                Some((_, agg)) => agg.absorb(e.agg),
                None => slot.push((e.bucket, e.agg)),
            }
        }
        let mut merged_sketches: HashMap<Ctx, Vec<(i64, Sketch)>> = HashMap::with_capacity(sketches.len());
        for e in sketches {
            if !buckets.contains(&e.bucket) {
                buckets.push(e.bucket);
            }
            let slot = merged_sketches.entry(Ctx(e.key)).or_default();
            match slot.iter_mut().find(|(b, _)| *b == e.bucket) {
                Some((_, s)) => s.merge(&e.sketch),
                None => slot.push((e.bucket, e.sketch)),
            }
        }

        // 2. Counter zero-fill over the flushed buckets (or one synthetic bucket).
        if buckets.is_empty() && self.last_cutoff + BUCKET_SECONDS <= cutoff {
            buckets.push(cutoff - BUCKET_SECONDS);
        }
        for (ctx, last_seen) in &self.counters {
            for &b in &buckets {
                if last_seen + self.settings.expiry_seconds > b {
                    let slot = merged.entry(ctx.clone()).or_default();
                    if !slot.iter().any(|(x, _)| *x == b) {
                        slot.push((b, Agg::Counter(0.0)));
                    }
                }
            }
        }
        self.last_cutoff = self.last_cutoff.max(cutoff);

        // 3. Expire idle counters.
        let ttl = self.settings.context_expiry_seconds + self.settings.expiry_seconds;
        self.counters.retain(|_, last| *last + ttl >= now);

        // 4. Render.
        let mut out = FlushOutput { series: Vec::with_capacity(merged.len()), sketches: Vec::with_capacity(merged_sketches.len()) };
        for (ctx, mut points) in merged {
            points.sort_by_key(|(b, _)| *b);
            self.render(&ctx.0, points, &mut out.series);
        }
        for (ctx, mut list) in merged_sketches {
            list.sort_by_key(|(b, _)| *b);
            let dogsketches: Vec<_> =
                list.iter().filter(|(_, s)| s.count() > 0).map(|(b, s)| s.to_dogsketch(*b)).collect();
            if dogsketches.is_empty() {
                continue;
            }
            out.sketches.push(SketchSeries {
                id: SeriesId::context(ctx.0, Cow::Borrowed("")),
                dogsketches,
            });
        }
        out
    }

    fn render(&self, key: &Arc<ContextKey>, buckets: Vec<(i64, Agg)>, out: &mut Vec<Series>) {
        // One series per (output type, suffix), several points.
        let mut rendered: Vec<(Cow<'static, str>, MetricType, Vec<Point>)> = Vec::new();
        let mut push = |suffix: Cow<'static, str>, t: MetricType, ts: i64, value: f64| {
            if !value.is_finite() {
                return;
            }
            match rendered.iter_mut().find(|(s, ty, _)| *s == suffix && *ty == t) {
                Some((_, _, pts)) => pts.push(Point { timestamp: ts, value }),
                None => rendered.push((suffix, t, vec![Point { timestamp: ts, value }])),
            }
        };
        for (ts, agg) in buckets {
            match agg {
                Agg::Counter(sum) => push(Cow::Borrowed(""), MetricType::Rate, ts, sum / BUCKET_SECONDS as f64),
                Agg::Gauge { value, .. } => push(Cow::Borrowed(""), MetricType::Gauge, ts, value),
                Agg::Set(members) => push(Cow::Borrowed(""), MetricType::Gauge, ts, members.len() as f64),
                Agg::Histogram(mut samples) => {
                    if samples.is_empty() {
                        continue;
                    }
                    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let h = HistogramSummary::of(&samples);
                    for agg in &self.settings.histogram_aggregates {
                        let (t, v) = match agg {
                            HistogramAggregate::Max => (MetricType::Gauge, h.max),
                            HistogramAggregate::Min => (MetricType::Gauge, h.min),
                            HistogramAggregate::Median => (MetricType::Gauge, h.pick(&samples, (h.weight - 1.0) / 2.0)),
                            HistogramAggregate::Avg => (MetricType::Gauge, h.sum / h.weight),
                            HistogramAggregate::Sum => (MetricType::Gauge, h.sum),
                            HistogramAggregate::Count => (MetricType::Rate, h.weight / BUCKET_SECONDS as f64),
                        };
                        push(Cow::Borrowed(agg.suffix()), t, ts, v);
                    }
                    for &p in &self.settings.histogram_percentiles {
                        push(Cow::Owned(format!(".{p}percentile")), MetricType::Gauge, ts, h.pick(&samples, (p as f64 * h.weight - 1.0) / 100.0));
                    }
                }
            }
        }
        for (suffix, t, points) in rendered {
            if !suffix.is_empty() && !self.settings.blocklist.is_empty() {
                let full = format!("{}{suffix}", String::from_utf8_lossy(key.name()));
                if self.settings.blocklist.blocks(full.as_bytes()) {
                    continue;
                }
            }
            // The series shares the context's identity: no per-series copies
            // of name, host and tags (flush cost was allocation-bound).
            out.push(Series {
                id: SeriesId::context(key.clone(), suffix),
                points,
                metric_type: t,
                interval: BUCKET_SECONDS,
                source_type_name: String::new(),
                origin: Origin::DogStatsD,
            });
        }
    }
}

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
        let e = FlushEntry { key: key("lat"), bucket: 1_700_000_000, agg: Agg::Histogram(samples), last_seen: 1_700_000_001 };
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

    #[test]
    fn gauge_last_across_shards() {
        let mut m = FlushMerger::new(settings(), 100);
        let a = FlushEntry { key: key("g"), bucket: 0, agg: Agg::Gauge { value: 1.0, seq: 10 }, last_seen: 1 };
        let b = FlushEntry { key: key("g"), bucket: 0, agg: Agg::Gauge { value: 2.0, seq: 5 }, last_seen: 1 };
        let out = m.flush(vec![a, b], vec![], 15);
        assert_eq!(out.series[0].points[0].value, 1.0);
    }
}
