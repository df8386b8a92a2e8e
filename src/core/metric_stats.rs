//! Per-context statistics (`dogstatsd_metrics_stats_enable`, the Agent's
//! `dogstatsd-stats`): how many samples each context received and when it
//! was last seen, to find a client sending too much or a cardinality
//! explosion.
//!
//! Bounded like the Agent's top-k table: at most `capacity` contexts are
//! tracked with the Space-Saving algorithm (a new context evicts the one
//! with the smallest count and inherits that count as its error bound), so
//! the busiest contexts are always present. Fixed memory, allocated once;
//! recording a sample never allocates.

use hashbrown::HashMap;

/// One tracked context.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextStat<V> {
    /// What the caller stored for the context (its name and tags).
    pub value: V,
    /// Samples counted (over-estimated by at most `error`).
    pub count: u64,
    /// Count inherited from the evicted context.
    pub error: u64,
    /// Unix seconds of the last sample.
    pub last_seen: i64,
}

/// The bounded table. `V` is cheap to clone (a reference-counted key).
#[derive(Debug)]
pub struct TopContexts<V> {
    index: HashMap<u64, usize>,
    /// Min-heap on `count - error`.
    heap: Vec<(u64, ContextStat<V>)>,
    capacity: usize,
}

impl<V: Clone> TopContexts<V> {
    /// A table tracking at most `capacity` (at least 1) contexts.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { index: HashMap::with_capacity(capacity), heap: Vec::with_capacity(capacity), capacity }
    }

    /// Tracked contexts.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn rank(&self, i: usize) -> u64 {
        let s = &self.heap[i].1;
        s.count - s.error
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        let (ka, kb) = (self.heap[a].0, self.heap[b].0);
        self.index.insert(ka, a);
        self.index.insert(kb, b);
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.rank(i) >= self.rank(p) {
                break;
            }
            self.swap(i, p);
            i = p;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && self.rank(l) < self.rank(m) {
                m = l;
            }
            if r < self.heap.len() && self.rank(r) < self.rank(m) {
                m = r;
            }
            if m == i {
                return;
            }
            self.swap(i, m);
            i = m;
        }
    }

    /// Counts `n` samples of the context `key` at `now`; `value` is called
    /// only when the context becomes tracked.
    pub fn record(&mut self, key: u64, n: u64, now: i64, value: impl FnOnce() -> V) {
        if let Some(&i) = self.index.get(&key) {
            let s = &mut self.heap[i].1;
            s.count += n;
            s.last_seen = now;
            self.down(i);
            return;
        }
        if self.heap.len() < self.capacity {
            self.heap.push((key, ContextStat { value: value(), count: n, error: 0, last_seen: now }));
            let i = self.heap.len() - 1;
            self.index.insert(key, i);
            self.up(i);
            return;
        }
        // Space-Saving: replace the minimum, inherit its count as error.
        let (old_key, old) = &self.heap[0];
        let (old_key, inherited) = (*old_key, old.count);
        self.index.remove(&old_key);
        self.heap[0] = (key, ContextStat { value: value(), count: inherited + n, error: inherited, last_seen: now });
        self.index.insert(key, 0);
        self.down(0);
    }

    /// The tracked contexts, busiest first (ties: most recent first).
    pub fn top(&self, limit: usize) -> Vec<ContextStat<V>> {
        let mut all: Vec<ContextStat<V>> = self.heap.iter().map(|(_, s)| s.clone()).collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_last_seen() {
        let mut t = TopContexts::new(4);
        t.record(1, 1, 10, || "a");
        t.record(2, 3, 11, || "b");
        t.record(1, 1, 12, || unreachable!("tracked already"));
        let top = t.top(10);
        assert_eq!(
            top.iter().map(|s| (s.value, s.count, s.last_seen)).collect::<Vec<_>>(),
            vec![("b", 3, 11), ("a", 2, 12)]
        );
    }

    #[test]
    fn bounded_and_heavy_hitters_survive_a_flood() {
        let mut t = TopContexts::new(8);
        for i in 0..10_000u64 {
            t.record(1, 1, 0, || 1);
            t.record(1000 + i, 1, 0, || 1000 + i);
        }
        assert_eq!(t.len(), 8);
        let top = t.top(1);
        assert_eq!(top[0].value, 1, "the busiest context is always tracked");
        assert!(top[0].count >= 10_000);
    }

    #[test]
    fn heap_invariant_holds() {
        let mut t = TopContexts::new(16);
        for i in 0..500u64 {
            t.record((i * 7919) % 37, 1 + i % 3, i as i64, || i);
            for j in 1..t.heap.len() {
                assert!(t.rank(j) >= t.rank((j - 1) / 2));
            }
            for (pos, (k, _)) in t.heap.iter().enumerate() {
                assert_eq!(t.index[k], pos);
            }
        }
    }
}
