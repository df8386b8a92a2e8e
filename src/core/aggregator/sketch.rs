//! The Agent's DDSketch (`pkg/util/quantile`, default config): relative
//! accuracy 1/128, 4096 bins, int16 keys with a bias of 1338.

use crate::core::model::Dogsketch;

/// ln(γ) with γ = 1 + 2/128, computed like the Agent (`log1p(2ε)`).
const LN_GAMMA: f64 = 0.015_504_186_535_965_254;
/// `1 − emin`.
const BIAS: i32 = 1338;
/// γ^emin: values below it map to key 0.
const NORM_MIN: f64 = 9.941_854_089_121_45e-10;
/// Key of +∞ (and the clamp for huge values).
const MAX_KEY: i32 = 32767;
/// Bin limit; the lowest bins collapse beyond it.
pub const BIN_LIMIT: usize = 4096;

/// Key of a value (the Agent's DDSketch key mapping).
pub fn key(v: f64) -> i32 {
    if v < 0.0 {
        return -key(-v);
    }
    if v == 0.0 || v < NORM_MIN {
        return 0;
    }
    let k = (v.ln() / LN_GAMMA).round_ties_even();
    if !k.is_finite() || k + BIAS as f64 > 32766.0 {
        return MAX_KEY;
    }
    let k = k as i32 + BIAS;
    k.max(1)
}

/// One context's sketch for one 10 s bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    cnt: i64,
    sum: f64,
    min: f64,
    max: f64,
    avg: f64,
    /// Ascending keys, one entry per key.
    bins: Vec<Bin>,
}

/// One bin packed in 8 bytes (a `(i32, u64)` pair takes 16 with padding;
/// bins are most of a distribution context's memory): the key (always
/// within ±[`MAX_KEY`], so an `i16`) in the top 16 bits, the count in the
/// low 48 bits, saturating at [`Bin::MAX_COUNT`] (≈ 2.8e14 samples of one
/// key in one 10 s bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bin(u64);

impl Bin {
    const MAX_COUNT: u64 = (1 << 48) - 1;

    fn new(k: i32, n: u64) -> Self {
        Bin((u64::from(k as i16 as u16) << 48) | n.min(Self::MAX_COUNT))
    }

    fn key(self) -> i32 {
        i32::from((self.0 >> 48) as u16 as i16)
    }

    fn count(self) -> u64 {
        self.0 & Self::MAX_COUNT
    }

    fn add(&mut self, n: u64) {
        *self = Bin::new(self.key(), self.count().saturating_add(n));
    }
}

impl Sketch {
    /// Number of samples.
    pub fn count(&self) -> i64 {
        self.cnt
    }

    /// Inserts `v` with a sample rate (the Agent's weighting).
    pub fn insert(&mut self, v: f64, rate: f64) {
        let rate = if rate <= 0.0 || rate > 1.0 { 1.0 } else { rate };
        if rate == 1.0 {
            self.merge_summary(1, v, v, v, v);
            self.add_bin(key(v), 1);
        } else {
            let n = 1.0 / rate;
            self.merge_summary(n as i64, n * v, v, v, v);
            self.add_bin(key(v), n as u64);
        }
    }

    fn merge_summary(&mut self, cnt: i64, sum: f64, min: f64, max: f64, avg: f64) {
        if cnt == 0 {
            return;
        }
        if self.cnt == 0 {
            *self = Sketch { cnt, sum, min, max, avg, bins: std::mem::take(&mut self.bins) };
            return;
        }
        self.cnt += cnt;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        self.avg += (avg - self.avg) * cnt as f64 / self.cnt as f64;
    }

    fn add_bin(&mut self, k: i32, n: u64) {
        if n == 0 {
            return;
        }
        match self.bins.binary_search_by_key(&k, |b| b.key()) {
            Ok(i) => self.bins[i].add(n),
            Err(i) => {
                self.bins.insert(i, Bin::new(k, n));
                if self.bins.len() > BIN_LIMIT {
                    let m = self.bins.len() - BIN_LIMIT;
                    let spill: u64 = self.bins[..m].iter().map(|b| b.count()).sum();
                    self.bins[m].add(spill);
                    self.bins.drain(..m);
                }
            }
        }
    }

    /// Merges another sketch of the same context and bucket (cross-shard).
    pub fn merge(&mut self, other: &Sketch) {
        self.merge_summary(other.cnt, other.sum, other.min, other.max, other.avg);
        for b in &other.bins {
            self.add_bin(b.key(), b.count());
        }
    }

    /// Wire form for bucket `ts`; counts above `u32::MAX` spill into extra bins.
    pub fn to_dogsketch(&self, ts: i64) -> Dogsketch {
        let mut keys = Vec::with_capacity(self.bins.len());
        let mut counts = Vec::with_capacity(self.bins.len());
        for (k, n) in self.bins.iter().map(|b| (b.key(), b.count())) {
            let full = n / u32::MAX as u64;
            let rest = (n % u32::MAX as u64) as u32;
            if rest > 0 {
                keys.push(k);
                counts.push(rest);
            }
            for _ in 0..full {
                keys.push(k);
                counts.push(u32::MAX);
            }
        }
        Dogsketch { ts, cnt: self.cnt, min: self.min, max: self.max, avg: self.avg, sum: self.sum, keys, counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_keys() {
        assert_eq!(key(1.0), 1338);
        assert_eq!(key(2.0), 1383);
        assert_eq!(key(3.0), 1409);
        assert_eq!(key(10.0), 1487);
        assert_eq!(key(100.0), 1635);
        assert_eq!(key(0.5), 1293);
        assert_eq!(key(-3.0), -1409);
        assert_eq!(key(0.0), 0);
        assert_eq!(key(f64::INFINITY), 32767);
    }

    #[test]
    fn spec_example() {
        let mut s = Sketch::default();
        s.insert(1.0, 1.0);
        s.insert(3.0, 1.0);
        let d = s.to_dogsketch(1_700_000_000);
        assert_eq!((d.cnt, d.min, d.max, d.sum, d.avg), (2, 1.0, 3.0, 4.0, 2.0));
        assert_eq!(d.keys, vec![1338, 1409]);
        assert_eq!(d.counts, vec![1, 1]);
    }

    #[test]
    fn sample_rate_weights_and_merge() {
        let mut a = Sketch::default();
        a.insert(2.0, 0.5);
        assert_eq!(a.count(), 2);
        let mut b = Sketch::default();
        b.insert(4.0, 1.0);
        a.merge(&b);
        let d = a.to_dogsketch(0);
        assert_eq!(d.cnt, 3);
        assert_eq!(d.sum, 8.0);
        assert_eq!(d.counts.iter().sum::<u32>(), 3);
    }

    #[test]
    fn packed_bins_keep_key_and_count() {
        for k in [-MAX_KEY, -1409, -1, 0, 1, 1338, MAX_KEY] {
            for n in [1, 65_535, u32::MAX as u64 + 7, Bin::MAX_COUNT] {
                let b = Bin::new(k, n);
                assert_eq!((b.key(), b.count()), (k, n));
            }
            let mut b = Bin::new(k, Bin::MAX_COUNT - 1);
            b.add(5);
            assert_eq!((b.key(), b.count()), (k, Bin::MAX_COUNT), "saturates");
        }
        assert_eq!(std::mem::size_of::<Bin>(), 8);
    }

    #[test]
    fn bin_limit_collapses_lowest() {
        let mut s = Sketch::default();
        for i in 0..5000 {
            s.insert(1.0 + i as f64 * 0.5, 1.0);
        }
        let d = s.to_dogsketch(0);
        assert!(d.keys.len() <= BIN_LIMIT);
        assert_eq!(d.counts.iter().map(|&c| c as u64).sum::<u64>(), 5000);
    }
}
