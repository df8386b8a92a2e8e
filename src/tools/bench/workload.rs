//! The deterministic DogStatsD workload of `edgestat bench` (pure, no I/O).
//!
//! Why values look the way they do: every line is built so that the
//! aggregated output tells how many samples the target processed —
//! counters add 1 per sample, distributions and histograms are counted by
//! the sketch / `.count` aggregate, every set line carries a member that is
//! never repeated, and a gauge context's value is the running number of
//! samples sent to it (its last value is the total).

/// Metric types in the mix, in the order of [`MIX_WEIGHTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `|c`
    Counter,
    /// `|g`
    Gauge,
    /// `|d`
    Distribution,
    /// `|s`
    Set,
    /// `|h`
    Histogram,
}

/// All kinds, in mix order.
pub const KINDS: [Kind; 5] = [Kind::Counter, Kind::Gauge, Kind::Distribution, Kind::Set, Kind::Histogram];
/// counters:gauges:distributions:sets:histograms as observed on real edge nodes.
pub const MIX_WEIGHTS: [u32; 5] = [208, 66, 72, 9, 1];

impl Kind {
    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
    /// Short label used in metric names and reports.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Counter => "c",
            Kind::Gauge => "g",
            Kind::Distribution => "d",
            Kind::Set => "s",
            Kind::Histogram => "h",
        }
    }
    /// Kind from the label in a metric name.
    pub fn from_label(l: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.label() == l)
    }
}

/// Prefix of every generated metric name: `bench.<kind>.m<n>`.
pub const NAME_PREFIX: &str = "bench.";

/// Shape of the generated traffic.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Distinct contexts (name + tags).
    pub contexts: usize,
    /// Tags per context are drawn from `min_tags..=max_tags`, skewed low.
    pub min_tags: usize,
    /// See `min_tags`.
    pub max_tags: usize,
    /// Lines are packed into datagrams of at most this many bytes.
    pub packet_bytes: usize,
    /// One metric line per datagram (overrides `packet_bytes` packing).
    pub single: bool,
    /// Percent of lines (not sets) that carry 2–`max_values` values.
    pub multi_value_pct: u32,
    /// Most values on a multi-value line.
    pub max_values: u64,
    /// Sized shapes: names and tags of lengths drawn uniformly from these
    /// ranges, tag counts uniform in `min_tags..=max_tags` (`None`: the
    /// standard shape's readable names and tags, tag counts skewed low).
    pub sizes: Option<Sizes>,
    /// Seed of every random choice.
    pub seed: u64,
}

/// Byte lengths of a sized shape (see [`WorkloadConfig::sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Name length range in bytes. Names start with `bench.<kind>.<context
    /// number>` (the report reads the kind from it), so a drawn length
    /// shorter than that prefix is raised to it.
    pub name_bytes: (usize, usize),
    /// Tag length range in bytes.
    pub tag_bytes: (usize, usize),
}

/// The workload shapes used to compare DogStatsD servers: metric-type
/// weights 208:66:72:9:1, 8 % of lines (never sets) with 2–32 values, one
/// fixed type per context, contexts picked uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// "~150 B lines": names of 20–50 B, 3–6 tags of 12–32 B.
    Small,
    /// "~2.1 KB lines": names of 1–200 B, 2–50 tags of 3–150 B.
    Large,
}

impl Shape {
    /// The shape for `contexts` contexts, packed into 8,192-byte
    /// datagrams or one line per datagram.
    pub fn config(self, contexts: usize, single: bool) -> WorkloadConfig {
        let (tags, sizes) = match self {
            Shape::Small => ((3, 6), Sizes { name_bytes: (20, 50), tag_bytes: (12, 32) }),
            Shape::Large => ((2, 50), Sizes { name_bytes: (1, 200), tag_bytes: (3, 150) }),
        };
        WorkloadConfig {
            contexts,
            min_tags: tags.0,
            max_tags: tags.1,
            packet_bytes: 8192,
            single,
            multi_value_pct: 8,
            max_values: 32,
            sizes: Some(sizes),
            seed: 1,
        }
    }
}

impl WorkloadConfig {
    /// The bench's default shape for `contexts` contexts, seed 1: packed
    /// (2–50 tags, ≤ 8 KB datagrams) or single (8–12 tags, one line per
    /// datagram). The criterion benches and the perf examples measure this.
    pub fn standard(contexts: usize, single: bool) -> Self {
        WorkloadConfig {
            contexts,
            min_tags: if single { 8 } else { 2 },
            max_tags: if single { 12 } else { 50 },
            packet_bytes: 8192,
            single,
            multi_value_pct: 8,
            max_values: 5,
            sizes: None,
            seed: 1,
        }
    }
}

/// `len` random bytes of `[a-z0-9]`.
fn push_random(out: &mut Vec<u8>, rng: &mut fastrand::Rng, len: usize) {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    out.extend((0..len).map(|_| ALNUM[rng.usize(..ALNUM.len())]));
}

/// A sized context's head (`name:`) and tag list (`#t1,t2,...` without the type).
fn sized_context(rng: &mut fastrand::Rng, kind: Kind, i: usize, tags: usize, sz: Sizes) -> (Vec<u8>, Vec<u8>) {
    let mut head = format!("{NAME_PREFIX}{}.{i:x}", kind.label()).into_bytes();
    let want = rng.usize(sz.name_bytes.0..=sz.name_bytes.1.max(sz.name_bytes.0));
    if want > head.len() {
        head.push(b'_');
        let pad = want.saturating_sub(head.len());
        push_random(&mut head, rng, pad);
    }
    head.push(b':');
    let mut list = Vec::new();
    for t in 0..tags {
        list.push(if t == 0 { b'#' } else { b',' });
        let len = rng.usize(sz.tag_bytes.0..=sz.tag_bytes.1.max(sz.tag_bytes.0));
        // `key:value` when there is room for both, a bare tag otherwise.
        if len >= 4 {
            let key = (len / 3).clamp(1, 20);
            push_random(&mut list, rng, key);
            list.push(b':');
            push_random(&mut list, rng, len - key - 1);
        } else {
            push_random(&mut list, rng, len);
        }
    }
    (head, list)
}

struct Context {
    kind: Kind,
    /// `name:`
    head: Box<[u8]>,
    /// `|c|#tags`
    tail: Box<[u8]>,
    /// Samples sent so far (the gauge value).
    samples: u64,
}

/// Cumulative counts of what was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    /// Lines by kind (mix order).
    pub lines: [u64; 5],
    /// Samples (values) by kind.
    pub samples: [u64; 5],
    /// Datagrams.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl Generated {
    /// Adds `d`'s counts (a sender thread's or a burst round's share).
    pub fn add(&mut self, d: &Generated) {
        for k in 0..5 {
            self.lines[k] += d.lines[k];
            self.samples[k] += d.samples[k];
        }
        self.packets += d.packets;
        self.bytes += d.bytes;
    }

    /// All lines.
    pub fn total_lines(&self) -> u64 {
        self.lines.iter().sum()
    }
    /// All samples.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().sum()
    }
}

const TAG_KEYS: [&str; 16] = [
    "env",
    "service",
    "version",
    "region",
    "availability-zone",
    "cluster_name",
    "kube_namespace",
    "pod_name",
    "endpoint",
    "http.status_code",
    "http.method",
    "team",
    "shard",
    "customer_tier",
    "runtime",
    "container_id",
];

/// Pre-formatted values for distributions and histograms.
const VALUES: [&str; 16] =
    ["0.25", "1", "2.5", "3", "7", "12.75", "18", "25", "42", "63.5", "100", "128", "250.125", "512", "999", "1500"];

/// `|c`, `|g`, ... of `kind`.
fn kind_suffix(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Counter => b"|c",
        Kind::Gauge => b"|g",
        Kind::Distribution => b"|d",
        Kind::Set => b"|s",
        Kind::Histogram => b"|h",
    }
}

/// The generator. Allocation-free per line once built.
pub struct Workload {
    ctxs: Vec<Context>,
    rng: fastrand::Rng,
    cfg: WorkloadConfig,
    set_seq: u64,
    pending: Vec<u8>,
    pending_kind: Option<(Kind, u64)>,
    /// What has been generated so far.
    pub generated: Generated,
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

impl Workload {
    /// Builds the context table from `cfg.seed`.
    pub fn new(cfg: WorkloadConfig) -> Workload {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let total: u32 = MIX_WEIGHTS.iter().sum();
        let n = cfg.contexts.max(1);
        let names_per_kind = (n / 25).max(1);
        let min_tags = cfg.min_tags.max(1);
        let max_tags = cfg.max_tags.max(min_tags);
        let mut ctxs = Vec::with_capacity(n);
        for i in 0..n {
            // Deterministic proportional assignment keeps the mix exact even
            // for few contexts; the rng then shuffles who is who.
            let mut pick = ((i as u64 * total as u64 + total as u64 / 2) / n as u64) as u32 % total;
            let mut kind = Kind::Counter;
            for (k, w) in KINDS.iter().zip(MIX_WEIGHTS) {
                if pick < w {
                    kind = *k;
                    break;
                }
                pick -= w;
            }
            if let Some(sz) = cfg.sizes {
                let tags = rng.usize(min_tags..=max_tags);
                let (head, list) = sized_context(&mut rng, kind, i, tags, sz);
                let mut tail = kind_suffix(kind).to_vec();
                tail.push(b'|');
                tail.extend_from_slice(&list);
                ctxs.push(Context { kind, head: head.into(), tail: tail.into(), samples: 0 });
                continue;
            }
            let u = rng.f64();
            let tags = min_tags + ((max_tags - min_tags) as f64 * u * u * u).round() as usize;
            let mut head = Vec::new();
            head.extend_from_slice(
                format!("{NAME_PREFIX}{}.m{}:", kind.label(), rng.usize(..names_per_kind)).as_bytes(),
            );
            let mut tail = Vec::new();
            tail.extend_from_slice(kind_suffix(kind));
            tail.extend_from_slice(b"|#");
            tail.extend_from_slice(format!("instance:i-{i:06}").as_bytes());
            for t in 1..tags {
                let key = TAG_KEYS[t % TAG_KEYS.len()];
                let round = t / TAG_KEYS.len();
                let val = rng.u32(..(20 + 5 * t as u32));
                if round == 0 {
                    tail.extend_from_slice(format!(",{key}:v{val}").as_bytes());
                } else {
                    tail.extend_from_slice(format!(",{key}_{round}:v{val}").as_bytes());
                }
            }
            ctxs.push(Context { kind, head: head.into(), tail: tail.into(), samples: 0 });
        }
        Workload {
            ctxs,
            rng,
            cfg,
            set_seq: 0,
            pending: Vec::with_capacity(2048),
            pending_kind: None,
            generated: Generated::default(),
        }
    }

    /// Writes the next line into `self.pending`; returns (kind, samples).
    fn next_line(&mut self) -> (Kind, u64) {
        let i = self.rng.usize(..self.ctxs.len());
        let multi = self.cfg.multi_value_pct > 0 && self.rng.u32(..100) < self.cfg.multi_value_pct;
        let ctx = &mut self.ctxs[i];
        let out = &mut self.pending;
        out.clear();
        out.extend_from_slice(&ctx.head);
        let k = if multi && ctx.kind != Kind::Set { self.rng.u64(2..=self.cfg.max_values.max(2)) } else { 1 };
        for j in 0..k {
            if j > 0 {
                out.push(b':');
            }
            match ctx.kind {
                Kind::Counter => out.push(b'1'),
                Kind::Gauge => {
                    ctx.samples += 1;
                    push_u64(out, ctx.samples);
                }
                Kind::Distribution | Kind::Histogram => {
                    out.extend_from_slice(VALUES[self.rng.usize(..VALUES.len())].as_bytes())
                }
                Kind::Set => {
                    self.set_seq += 1;
                    out.extend_from_slice(b"u");
                    push_u64(out, self.set_seq);
                }
            }
        }
        out.extend_from_slice(&ctx.tail);
        (ctx.kind, k)
    }

    /// The next `n` datagrams, each in its own buffer (for benches that
    /// replay a fixed corpus).
    pub fn packets(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut b = Vec::new();
                self.next_packet(&mut b);
                b
            })
            .collect()
    }

    /// Fills `buf` (cleared first) with the next datagram and accounts it.
    pub fn next_packet(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        loop {
            let (kind, k) = match self.pending_kind.take() {
                Some(p) => p,
                None => self.next_line(),
            };
            let fits = buf.is_empty() || buf.len() + 1 + self.pending.len() <= self.cfg.packet_bytes;
            if !fits {
                self.pending_kind = Some((kind, k));
                break;
            }
            if !buf.is_empty() {
                buf.push(b'\n');
            }
            buf.extend_from_slice(&self.pending);
            self.generated.lines[kind.index()] += 1;
            self.generated.samples[kind.index()] += k;
            if self.cfg.single {
                break;
            }
        }
        self.generated.packets += 1;
        self.generated.bytes += buf.len() as u64;
    }

    /// Contexts per kind (mix order).
    pub fn contexts_by_kind(&self) -> [usize; 5] {
        let mut out = [0; 5];
        for c in &self.ctxs {
            out[c.kind.index()] += 1;
        }
        out
    }
}

/// The shard settings the hot-path benches and examples measure with:
/// no enrichment, `max_contexts` node budget, a 300 s context expiry (so
/// nothing expires mid-measurement).
pub fn bench_shard_settings(max_contexts: usize) -> crate::core::shard::ShardSettings {
    crate::core::shard::ShardSettings {
        hostname: "bench-host".into(),
        extra_tags: vec![],
        namespace: String::new(),
        namespace_blacklist: vec![],
        context_budget: crate::core::aggregator::ContextBudget::new(max_contexts),
        blocklist: Default::default(),
        max_queued: 100_000,
        context_expiry_seconds: 300,
        parse: crate::core::protocol::ParseOptions::default(),
        mapper: Default::default(),
        histogram_copy_to_distribution: None,
        eol_required: Default::default(),
    }
}

/// The flush settings the flush benches and examples measure with: the
/// Agent's default histogram aggregates plus a 95th percentile, 300 s
/// expiries, no blocklist.
pub fn bench_flush_settings() -> crate::core::aggregator::FlushSettings {
    use crate::core::aggregator::HistogramAggregate;
    crate::core::aggregator::FlushSettings {
        histogram_aggregates: vec![
            HistogramAggregate::Max,
            HistogramAggregate::Median,
            HistogramAggregate::Avg,
            HistogramAggregate::Count,
        ],
        histogram_percentiles: vec![95],
        expiry_seconds: 300,
        context_expiry_seconds: 300,
        blocklist: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::protocol::{lines, parse_line, Message, ParseOptions};

    fn cfg(single: bool) -> WorkloadConfig {
        WorkloadConfig { seed: 7, ..WorkloadConfig::standard(356, single) }
    }

    #[test]
    fn packets_parse_and_accounting_matches() {
        let mut w = Workload::new(cfg(false));
        assert_eq!(w.contexts_by_kind(), [208, 66, 72, 9, 1]);
        let mut buf = Vec::new();
        let (mut lines_seen, mut samples_seen) = (0u64, 0u64);
        for _ in 0..50 {
            w.next_packet(&mut buf);
            assert!(buf.len() <= 8192 && buf.len() > 4000, "{}", buf.len());
            for l in lines(&buf) {
                match parse_line(l, &ParseOptions::default()).expect("valid line") {
                    Message::Metric(m) => {
                        lines_seen += 1;
                        samples_seen += if m.set_member().is_some() { 1 } else { m.values().count() as u64 };
                    }
                    _ => panic!("only metrics"),
                }
            }
        }
        assert_eq!(lines_seen, w.generated.total_lines());
        assert_eq!(samples_seen, w.generated.total_samples());
        assert!(samples_seen > lines_seen, "some lines are multi-value");
    }

    #[test]
    fn sized_shapes_have_the_stated_sizes() {
        for (shape, lo, hi, tags) in [(Shape::Small, 120.0, 180.0, 3..=6), (Shape::Large, 1800.0, 2400.0, 2..=50)] {
            let mut w = Workload::new(shape.config(3000, true));
            let mut buf = Vec::new();
            let (mut bytes, mut n, mut values_max) = (0usize, 0usize, 0usize);
            for _ in 0..2000 {
                w.next_packet(&mut buf);
                for l in lines(&buf) {
                    let Message::Metric(m) = parse_line(l, &ParseOptions::default()).expect("valid line") else {
                        panic!()
                    };
                    assert!(tags.contains(&m.tags.iter().count()), "{}", String::from_utf8_lossy(l));
                    values_max = values_max.max(m.values().count());
                    bytes += l.len();
                    n += 1;
                }
            }
            let avg = bytes as f64 / n as f64;
            assert!(avg > lo && avg < hi, "{shape:?}: {avg} B per line");
            assert!(values_max > 5 && values_max <= 32, "{values_max}");
        }
        let mut w = Workload::new(Shape::Large.config(3000, false));
        let mut buf = Vec::new();
        w.next_packet(&mut buf);
        assert!(buf.len() <= 8192 && buf.len() > 4000, "{}", buf.len());
    }

    #[test]
    fn deterministic_and_single_mode() {
        let (mut a, mut b) = (Workload::new(cfg(true)), Workload::new(cfg(true)));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            a.next_packet(&mut x);
            b.next_packet(&mut y);
            assert_eq!(x, y);
            assert!(!x.contains(&b'\n'));
        }
        assert_eq!(a.generated.packets, 100);
        assert_eq!(a.generated.total_lines(), 100);
    }
}
