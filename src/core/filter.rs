//! The metric blocklist (`metric_filterlist`, falling back to
//! `statsd_metric_blocklist`): names dropped at parse time and, for the
//! names histograms produce (`foo.max`, ...), again at flush.

use hashbrown::HashSet;

/// A compiled blocklist. Empty lists cost one branch per line.
#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    exact: HashSet<Box<[u8]>>,
    /// Sorted prefixes (prefix mode only).
    prefixes: Vec<Box<[u8]>>,
    match_prefix: bool,
}

impl MetricFilter {
    /// Builds the filter; `match_prefix` blocks every name starting with an entry.
    pub fn new(names: &[String], match_prefix: bool) -> Self {
        let mut f = MetricFilter { match_prefix, ..Default::default() };
        if match_prefix {
            let mut p: Vec<Box<[u8]>> = names.iter().map(|n| n.as_bytes().into()).collect();
            p.sort();
            p.dedup();
            f.prefixes = p;
        } else {
            f.exact = names.iter().map(|n| n.as_bytes().into()).collect();
        }
        f
    }

    /// True when nothing is blocked (skips the check on the hot path).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether `name` (namespace included) is blocked.
    pub fn blocks(&self, name: &[u8]) -> bool {
        if self.match_prefix {
            // The greatest entry <= name is the only candidate that can be its prefix
            // among entries sharing its first bytes; check the few before it too.
            let i = self.prefixes.partition_point(|p| &p[..] <= name);
            self.prefixes[..i].iter().rev().take_while(|p| p.first() == name.first()).any(|p| name.starts_with(p))
        } else {
            self.exact.contains(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        let f = MetricFilter::new(&["a.b".into(), "c".into()], false);
        assert!(f.blocks(b"a.b") && f.blocks(b"c"));
        assert!(!f.blocks(b"a.b.c") && !f.blocks(b"a"));
        let p = MetricFilter::new(&["a.b".into(), "c".into(), "a.bz".into()], true);
        assert!(p.blocks(b"a.b") && p.blocks(b"a.b.max") && p.blocks(b"cat") && p.blocks(b"a.bzz"));
        assert!(!p.blocks(b"a.a") && !p.blocks(b"b") && !p.blocks(b""));
        assert!(MetricFilter::new(&[], true).is_empty());
    }
}
