//! One shard's partition of the time sampler: 10 s buckets of per-context
//! aggregates. Pure: the caller passes the clock in.

use std::sync::Arc;

use hashbrown::HashSet;

use super::context::{ContextBudget, ContextError, ContextKey, ContextTable, KeyView};
use super::growing::GrowingMap;
use super::sketch::Sketch;

/// Bucket width, as the Agent's `bucketSize`.
pub const BUCKET_SECONDS: i64 = 10;

/// Start of the bucket holding `ts`.
pub fn bucket_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(BUCKET_SECONDS)
}

/// How a sample is accumulated (the DogStatsD type without the `h`/`ms` split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// `c`
    Counter,
    /// `g`
    Gauge,
    /// `s`
    Set,
    /// `h`, `ms`
    Histogram,
    /// `d`
    Distribution,
}

/// Accumulated value of one context in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub enum Agg {
    /// Σ v/r.
    Counter(f64),
    /// Last value and the monotonic receive time that decides "last" across shards.
    Gauge {
        /// Value.
        value: f64,
        /// Monotonic nanoseconds of the sample.
        seq: u64,
    },
    /// Distinct raw members. Boxed so that every other aggregate (and every
    /// bucket-map slot, which is sized for the largest variant) stays small:
    /// sets are rare and allocate per member anyway.
    Set(Box<HashSet<Box<[u8]>>>),
    /// (value, weight = 1/r) samples.
    Histogram(Vec<(f64, f64)>),
}

impl Agg {
    fn new(kind: SampleKind) -> Self {
        match kind {
            SampleKind::Counter | SampleKind::Distribution => Agg::Counter(0.0),
            SampleKind::Gauge => Agg::Gauge { value: 0.0, seq: 0 },
            SampleKind::Set => Agg::Set(Box::default()),
            SampleKind::Histogram => Agg::Histogram(Vec::new()),
        }
    }

    /// Feeds one sample; a sample of another type is fed to the existing
    /// object as the Agent does (the first sample of the bucket decides).
    fn add(&mut self, value: f64, member: Option<&[u8]>, rate: f64, seq: u64) {
        match self {
            Agg::Counter(sum) => *sum += value / rate,
            Agg::Gauge { value: v, seq: s } => {
                *v = value;
                *s = seq;
            }
            Agg::Set(members) => {
                let m = member.unwrap_or_default();
                if !members.contains(m) {
                    members.insert(m.into());
                }
            }
            Agg::Histogram(samples) => samples.push((value, 1.0 / rate)),
        }
    }

    /// Folds another shard's aggregate of the same context and bucket into this one.
    pub fn absorb(&mut self, other: Agg) {
        match (self, other) {
            (Agg::Counter(a), Agg::Counter(b)) => *a += b,
            (Agg::Gauge { value, seq }, Agg::Gauge { value: v2, seq: s2 }) if s2 >= *seq => {
                *value = v2;
                *seq = s2;
            }
            (Agg::Set(a), Agg::Set(b)) => a.extend(*b),
            (Agg::Histogram(a), Agg::Histogram(b)) => a.extend(b),
            // Mixed types across shards: keep ours, fold the other's total in.
            (Agg::Counter(a), Agg::Gauge { value, .. }) => *a += value,
            (Agg::Counter(a), Agg::Histogram(b)) => *a += b.iter().map(|(v, w)| v * w).sum::<f64>(),
            (Agg::Gauge { value, .. }, Agg::Counter(b)) => *value = b,
            (Agg::Histogram(a), Agg::Counter(b)) => a.push((b, 1.0)),
            (Agg::Histogram(a), Agg::Gauge { value, .. }) => a.push((value, 1.0)),
            _ => {}
        }
    }
}

/// A shard's closed aggregate handed to the flush merger.
#[derive(Debug)]
pub struct FlushEntry {
    /// Context.
    pub key: Arc<ContextKey>,
    /// Bucket start.
    pub bucket: i64,
    /// Value.
    pub agg: Agg,
    /// Last sample time of the context (for counter zero-fill).
    pub last_seen: i64,
}

/// A shard's closed sketch.
#[derive(Debug)]
pub struct SketchEntry {
    /// Context.
    pub key: Arc<ContextKey>,
    /// Bucket start.
    pub bucket: i64,
    /// Sketch.
    pub sketch: Sketch,
}

#[derive(Default)]
struct Bucket {
    start: i64,
    metrics: GrowingMap<u32, Agg>,
    sketches: GrowingMap<u32, Sketch>,
}

/// Why a sample was not aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleDrop {
    /// NaN or ±Inf value (the Agent drops these at aggregation).
    NonFinite,
    /// Context limit reached.
    ContextLimit,
    /// A new context would pass the memory limit.
    MemoryLimit,
}

/// 128-bit hash of a line's raw context bytes (name and the tag field as
/// received, before sorting): the key of [`ShardSampler`]'s line cache.
pub type RawKey = (u64, u64);

/// The shard's time sampler partition.
pub struct ShardSampler {
    contexts: ContextTable,
    /// Raw-line cache: lines whose name and tag text were seen before skip
    /// tag splitting, sorting and key hashing. Like the Agent's 64-bit
    /// context keys, a (128-bit) hash is trusted. Cleared whenever a context
    /// is forgotten (ids are reused), and when it reaches its bound.
    raw_cache: GrowingMap<RawKey, u32>,
    max_raw_cache: usize,
    buckets: Vec<Bucket>,
    spare: Vec<Bucket>,
    /// Bound on open buckets, against a wildly jumping clock.
    max_buckets: usize,
}

impl ShardSampler {
    /// A sampler drawing its contexts from the node-wide `budget`.
    pub fn new(budget: Arc<ContextBudget>) -> Self {
        Self {
            max_raw_cache: budget.max().saturating_mul(2).max(1024),
            contexts: ContextTable::new(budget),
            raw_cache: GrowingMap::new(),
            buckets: Vec::new(),
            spare: Vec::new(),
            max_buckets: 64,
        }
    }

    /// The context a raw line key was resolved to before, if still valid.
    #[inline]
    pub fn cached(&self, raw: RawKey) -> Option<u32> {
        self.raw_cache.get(&raw).copied()
    }

    /// Remembers that lines with `raw` resolve to context `id`.
    pub fn remember(&mut self, raw: RawKey, id: u32) {
        if self.raw_cache.len() >= self.max_raw_cache {
            self.raw_cache.clear();
        }
        self.raw_cache.insert(raw, id);
    }

    /// Finds or creates the context of `view` (seen at `now`).
    pub fn resolve(&mut self, view: &KeyView<'_>, now: i64) -> Result<u32, SampleDrop> {
        self.contexts.resolve(view, now).map_err(|e| match e {
            ContextError::LimitReached => SampleDrop::ContextLimit,
            ContextError::MemoryLimit => SampleDrop::MemoryLimit,
        })
    }

    /// The key of live context `id` (shared, not copied).
    pub fn context_key(&self, id: u32) -> Option<&Arc<ContextKey>> {
        self.contexts.get(id).map(|s| &s.key)
    }

    /// Live contexts.
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Adds one sample at wall-clock second `now` (bucket = `now`'s bucket).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        view: &KeyView<'_>,
        kind: SampleKind,
        value: f64,
        member: Option<&[u8]>,
        rate: f64,
        now: i64,
        seq: u64,
    ) -> Result<(), SampleDrop> {
        if kind != SampleKind::Set && !value.is_finite() {
            // The context is still tracked, as in the Agent.
            let _ = self.contexts.resolve(view, now);
            return Err(SampleDrop::NonFinite);
        }
        let id = self.resolve(view, now)?;
        self.add_id(id, kind, value, member, rate, now, seq)
    }

    /// Adds one sample to an already resolved live context `id` (from
    /// [`ShardSampler::resolve`] or [`ShardSampler::cached`]).
    #[allow(clippy::too_many_arguments)]
    pub fn add_id(
        &mut self,
        id: u32,
        kind: SampleKind,
        value: f64,
        member: Option<&[u8]>,
        rate: f64,
        now: i64,
        seq: u64,
    ) -> Result<(), SampleDrop> {
        self.contexts.touch(id, now);
        if kind != SampleKind::Set && !value.is_finite() {
            return Err(SampleDrop::NonFinite);
        }
        let start = bucket_start(now);
        let bucket = self.bucket_mut(start);
        let rate = if rate > 0.0 && rate.is_finite() { rate } else { 1.0 };
        if kind == SampleKind::Distribution {
            bucket.sketches.get_or_insert_with(id, Sketch::default).insert(value, rate);
        } else {
            bucket.metrics.get_or_insert_with(id, || Agg::new(kind)).add(value, member, rate, seq);
        }
        Ok(())
    }

    fn bucket_mut(&mut self, start: i64) -> &mut Bucket {
        // Newest bucket is last; samples almost always hit it.
        let pos = match self.buckets.iter().rposition(|b| b.start == start) {
            Some(i) => i,
            None => {
                if self.buckets.len() >= self.max_buckets {
                    // A wildly jumping clock: fold into the newest bucket rather than grow.
                    return self.buckets.last_mut().expect("non-empty when at capacity");
                }
                let mut b = self.spare.pop().unwrap_or_default();
                b.start = start;
                let at = self.buckets.iter().position(|x| x.start > start).unwrap_or(self.buckets.len());
                self.buckets.insert(at, b);
                at
            }
        };
        &mut self.buckets[pos]
    }

    /// Moves out every bucket with `start + 10 <= cutoff` (all of them when
    /// `force`), then forgets contexts idle for longer than `ttl_seconds`
    /// that no open bucket still references. All at once: the shard's read
    /// loop uses the stepwise [`ShardSampler::close_buckets`] instead.
    pub fn take_closed(
        &mut self,
        cutoff: i64,
        force: bool,
        now: i64,
        ttl_seconds: i64,
        metrics: &mut Vec<FlushEntry>,
        sketches: &mut Vec<SketchEntry>,
    ) {
        let mut closed = self.close_buckets(cutoff, force);
        closed.reserve(metrics, sketches);
        while !self.convert_closed(&mut closed, usize::MAX, metrics, sketches) {}
        self.recycle(closed, force);
        let mut cursor = 0;
        while !self.expire_step(&mut cursor, usize::MAX, now, ttl_seconds) {}
    }

    /// Swaps every bucket with `start + 10 <= cutoff` (all of them when
    /// `force`) out of the sampler. Costs the number of open buckets (one or
    /// two), not the number of contexts: the entries are turned into flush
    /// entries afterwards by [`ShardSampler::convert_closed`], a slice at a
    /// time, while samples keep landing in the open bucket.
    pub fn close_buckets(&mut self, cutoff: i64, force: bool) -> ClosedBuckets {
        let closing = |b: &Bucket| force || b.start + BUCKET_SECONDS <= cutoff;
        let split = self.buckets.iter().position(|b| !closing(b)).unwrap_or(self.buckets.len());
        // Buckets are kept sorted by start, so the closed ones are a prefix
        // (with `force` every bucket closes).
        let rest = self.buckets.split_off(split);
        let buckets = std::mem::replace(&mut self.buckets, rest);
        ClosedBuckets { buckets, current: 0, sketches: false, keys: Vec::new(), next: 0, loaded: false }
    }

    /// Turns up to `budget` closed entries into flush entries; true when
    /// every closed bucket is converted.
    pub fn convert_closed(
        &mut self,
        closed: &mut ClosedBuckets,
        budget: usize,
        metrics: &mut Vec<FlushEntry>,
        sketches: &mut Vec<SketchEntry>,
    ) -> bool {
        let mut left = budget;
        while closed.current < closed.buckets.len() {
            let b = &mut closed.buckets[closed.current];
            if !closed.loaded {
                closed.keys.clear();
                if closed.sketches {
                    closed.keys.extend(b.sketches.keys().copied());
                } else {
                    closed.keys.extend(b.metrics.keys().copied());
                }
                closed.next = 0;
                closed.loaded = true;
            }
            while closed.next < closed.keys.len() {
                if left == 0 {
                    return false;
                }
                left -= 1;
                let id = closed.keys[closed.next];
                closed.next += 1;
                let slot = self.contexts.get(id);
                if closed.sketches {
                    if let (Some(sketch), Some(slot)) = (b.sketches.remove(&id), slot) {
                        sketches.push(SketchEntry { key: slot.key.clone(), bucket: b.start, sketch });
                    }
                } else if let (Some(agg), Some(slot)) = (b.metrics.remove(&id), slot) {
                    metrics.push(FlushEntry { key: slot.key.clone(), bucket: b.start, agg, last_seen: slot.last_seen });
                }
            }
            // Removals leave tombstones: clearing resets the (now empty)
            // map for reuse without giving its capacity back.
            if closed.sketches {
                b.sketches.clear();
                closed.current += 1;
            } else {
                b.metrics.clear();
            }
            closed.sketches = !closed.sketches;
            closed.loaded = false;
        }
        true
    }

    /// Gives the emptied maps of converted buckets back for reuse.
    pub fn recycle(&mut self, closed: ClosedBuckets, force: bool) {
        self.spare.extend(closed.buckets);
        // A drained bucket keeps its maps' capacity for the next bucket to
        // open, but one spare is enough (buckets open one at a time): at
        // 100k contexts each spare holds ~6 MiB of map capacity, which would
        // otherwise sit through the flush's own peak. After a forced flush
        // (shutdown) nothing is reused.
        self.spare.truncate(if force { 0 } else { 1 });
    }

    /// Forgets, among up to `budget` context ids from `*cursor` on, those
    /// idle for longer than `ttl_seconds` that no open bucket references;
    /// true when the sweep has passed the last id.
    pub fn expire_step(&mut self, cursor: &mut u32, budget: usize, now: i64, ttl_seconds: i64) -> bool {
        let to = cursor.saturating_add(u32::try_from(budget).unwrap_or(u32::MAX));
        let buckets = &self.buckets;
        let forgotten = self.contexts.retain_ids(*cursor, to, |id, slot| {
            slot.last_seen + ttl_seconds >= now
                || buckets.iter().any(|b| b.metrics.contains_key(&id) || b.sketches.contains_key(&id))
        });
        if forgotten > 0 {
            // Forgotten ids get reused: cached raw keys may point at them.
            // Cleared right away, as lines are read between two steps.
            self.raw_cache.clear();
        }
        *cursor = to;
        to >= self.contexts.id_bound()
    }
}

/// Buckets swapped out of a [`ShardSampler`] at a flush, being converted
/// into flush entries a slice at a time.
pub struct ClosedBuckets {
    buckets: Vec<Bucket>,
    /// Bucket being converted.
    current: usize,
    /// Converting its sketches (after its metrics).
    sketches: bool,
    /// Ids of the map being converted (its entries are removed by id).
    keys: Vec<u32>,
    /// Next index in `keys`.
    next: usize,
    /// `keys` holds the current map's ids.
    loaded: bool,
}

impl ClosedBuckets {
    /// Reserves exactly the room the conversion needs: pushing 100k entries
    /// into a Vec that doubles from empty leaves up to half of it unused at
    /// the flush peak.
    pub fn reserve(&self, metrics: &mut Vec<FlushEntry>, sketches: &mut Vec<SketchEntry>) {
        metrics.reserve_exact(self.buckets.iter().map(|b| b.metrics.len()).sum());
        sketches.reserve_exact(self.buckets.iter().map(|b| b.sketches.len()).sum());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(name: &'a [u8], tags: &'a [&'a [u8]]) -> KeyView<'a> {
        KeyView { name, host: b"h", tags }
    }

    #[test]
    fn closed_buckets_only_unless_forced() {
        let mut s = ShardSampler::new(ContextBudget::new(100));
        s.add(&view(b"c", &[]), SampleKind::Counter, 1.0, None, 1.0, 1_700_000_003, 1).unwrap();
        s.add(&view(b"c", &[]), SampleKind::Counter, 2.0, None, 0.5, 1_700_000_004, 2).unwrap();
        s.add(&view(b"c", &[]), SampleKind::Counter, 1.0, None, 1.0, 1_700_000_012, 3).unwrap();
        let (mut m, mut k) = (Vec::new(), Vec::new());
        s.take_closed(1_700_000_010, false, 1_700_000_015, 20, &mut m, &mut k);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].bucket, 1_700_000_000);
        assert_eq!(m[0].agg, Agg::Counter(5.0));
        m.clear();
        s.take_closed(1_700_000_010, true, 1_700_000_015, 20, &mut m, &mut k);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].bucket, 1_700_000_010);
    }

    #[test]
    fn stepwise_conversion_matches_and_reading_goes_on_between_steps() {
        let mut s = ShardSampler::new(ContextBudget::new(1000));
        let names: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
        for (i, n) in names.iter().enumerate() {
            s.add(&view(n, &[]), SampleKind::Counter, 1.0, None, 1.0, 1_700_000_003, i as u64).unwrap();
            s.add(&view(n, &[]), SampleKind::Distribution, 2.0, None, 1.0, 1_700_000_004, i as u64).unwrap();
        }
        let mut closed = s.close_buckets(1_700_000_010, false);
        let (mut m, mut k) = (Vec::new(), Vec::new());
        closed.reserve(&mut m, &mut k);
        let mut steps = 0;
        while !s.convert_closed(&mut closed, 7, &mut m, &mut k) {
            steps += 1;
            // A sample read between two steps goes to the open bucket.
            s.add(&view(b"m0", &[]), SampleKind::Counter, 1.0, None, 1.0, 1_700_000_011, 99).unwrap();
        }
        assert!(steps >= 100 / 7, "{steps} steps");
        s.recycle(closed, false);
        assert_eq!((m.len(), k.len()), (50, 50));
        assert!(m.iter().all(|e| e.agg == Agg::Counter(1.0) && e.bucket == 1_700_000_000));
        let mut cursor = 0;
        while !s.expire_step(&mut cursor, 3, 1_700_000_011, 20) {}
        assert_eq!(s.context_count(), 50);
        let (mut m2, mut k2) = (Vec::new(), Vec::new());
        s.take_closed(0, true, 1_700_000_012, 20, &mut m2, &mut k2);
        assert_eq!(m2.len(), 1);
        assert_eq!(m2[0].agg, Agg::Counter(steps as f64));
        // Idle contexts are forgotten by a stepwise sweep too.
        let mut cursor = 0;
        while !s.expire_step(&mut cursor, 3, 1_700_000_100, 20) {}
        assert_eq!(s.context_count(), 0);
    }

    #[test]
    fn non_finite_is_dropped_and_types_mix_like_the_agent() {
        let mut s = ShardSampler::new(ContextBudget::new(100));
        assert_eq!(s.add(&view(b"g", &[]), SampleKind::Gauge, f64::NAN, None, 1.0, 100, 1), Err(SampleDrop::NonFinite));
        s.add(&view(b"x", &[]), SampleKind::Counter, 1.0, None, 1.0, 100, 1).unwrap();
        s.add(&view(b"x", &[]), SampleKind::Gauge, 5.0, None, 1.0, 100, 2).unwrap();
        let (mut m, mut k) = (Vec::new(), Vec::new());
        s.take_closed(0, true, 100, 20, &mut m, &mut k);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].agg, Agg::Counter(6.0));
    }
}
