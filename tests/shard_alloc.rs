//! "No allocation per metric line in steady state": after warm-up, parsing,
//! enriching and aggregating lines of known contexts allocates nothing.
//! Counting global allocator in its own test binary; counts per thread.

use edgestat::core::aggregator::ContextBudget;
use edgestat::core::protocol::ParseOptions;
use edgestat::core::shard::{ShardSettings, ShardState};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

fn shard() -> ShardState {
    ShardState::new(ShardSettings {
        hostname: "h1".into(),
        extra_tags: vec!["team:core".into(), "region:eu".into()],
        namespace: "edge.".into(),
        namespace_blacklist: vec!["jvm".into()],
        context_budget: ContextBudget::new(10_000),
        blocklist: Default::default(),
        max_queued: 10_000,
        context_expiry_seconds: 20,
        parse: ParseOptions::default(),
    })
}

const T: i64 = 1_700_000_001;

const DATAGRAM: &[u8] = b"page.views:1|c|@0.1|#env:prod,handler:home\n\
queue.depth:42|g|#queue:jobs,host:web-3\r\n\
jvm.heap:512|g|#b,a,a\n\
users:alice|s|#env:prod\n\
users:bob|s|#env:prod\n\
latency:12:15.5:9|d|#env:prod,region:eu\n\
multi:1:2:3|c\n\
bad line without pipe\n\
nan.gauge:nan|g\n";

#[test]
fn known_contexts_allocate_nothing() {
    let mut s = shard();
    for _ in 0..3 {
        s.handle_datagram(DATAGRAM, T, 1);
    }
    let n = allocations(|| {
        for i in 0..1000 {
            s.handle_datagram(DATAGRAM, T, i);
        }
    });
    assert_eq!(n, 0, "steady-state allocations over 9000 lines");
}

#[test]
fn steady_state_holds_in_later_buckets() {
    let mut s = shard();
    // Two buckets flushed: the next bucket's maps come from the spare pool.
    // Its first datagram allocates per context (set members, sketch bins),
    // never per line; the following lines allocate nothing.
    s.handle_datagram(DATAGRAM, T, 1);
    s.handle_datagram(DATAGRAM, T + 10, 2);
    let f = s.take_flush(T + 30, false);
    assert!(!f.metrics.is_empty());
    drop(f);
    s.handle_datagram(DATAGRAM, T + 20, 3);
    let n = allocations(|| {
        for i in 0..100 {
            s.handle_datagram(DATAGRAM, T + 20, 4 + i);
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn histogram_samples_grow_amortized() {
    let mut s = shard();
    s.handle_datagram(b"h:1|h|#env:prod", T, 0);
    let n = allocations(|| {
        for i in 0..4096 {
            s.handle_datagram(b"h:1|h|#env:prod", T, i);
        }
    });
    // Samples are kept for exact percentiles: the vector doubles, so
    // allocations grow with log2(samples), never one per line.
    assert!(n <= 14, "{n} allocations for 4096 histogram lines");
}
