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
    ShardState::new(shard_settings())
}

fn shard_settings() -> ShardSettings {
    ShardSettings {
        hostname: "h1".into(),
        extra_tags: vec!["team:core".into(), "region:eu".into()],
        namespace: "edge.".into(),
        namespace_blacklist: vec!["jvm".into()],
        context_budget: ContextBudget::new(10_000),
        blocklist: Default::default(),
        max_queued: 10_000,
        context_expiry_seconds: 20,
        parse: ParseOptions::default(),
        mapper: Default::default(),
        histogram_copy_to_distribution: None,
        eol_required: Default::default(),
    }
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

/// Mapper profiles and histogram copies configured: lines whose names no
/// profile covers, and lines already mapped once, allocate nothing.
fn mapped_shard() -> ShardState {
    let profiles: Vec<edgestat::core::mapper::ProfileConfig> = serde_json::from_str(
        r#"[{"name":"airflow","prefix":"airflow.","mappings":[
            {"match":"airflow.dag.*.*.duration","name":"airflow.dag.task.duration","tags":{"dag_id":"$1","task_id":"$2"}}]},
            {"name":"legacy","prefix":"legacy.","mappings":[
            {"match":"legacy\\.(\\w+)\\.latency","match_type":"regex","name":"legacy.latency","tags":{"svc":"$1"}}]}]"#,
    )
    .unwrap();
    let mut s = shard_settings();
    s.mapper = edgestat::core::mapper::MapperSettings::compile(&profiles, 100).unwrap();
    s.histogram_copy_to_distribution = Some("dist.".into());
    ShardState::new(s)
}

const MAPPED: &[u8] = b"airflow.dag.etl.load.duration:5|c|#env:prod\n\
legacy.api.latency:3|g\n\
airflow.unmapped:1|c\n\
legacy.other:2|g\n";

#[test]
fn names_no_profile_covers_allocate_nothing() {
    let mut s = mapped_shard();
    for _ in 0..3 {
        s.handle_datagram(DATAGRAM, T, 1);
    }
    let n = allocations(|| {
        for i in 0..1000 {
            s.handle_datagram(DATAGRAM, T, i);
        }
    });
    assert_eq!(n, 0, "steady-state allocations over 9000 unmapped lines");
}

#[test]
fn already_mapped_names_allocate_nothing() {
    let mut s = mapped_shard();
    for _ in 0..3 {
        s.handle_datagram(MAPPED, T, 1);
    }
    let n = allocations(|| {
        for i in 0..1000 {
            s.handle_datagram(MAPPED, T, i);
        }
    });
    assert_eq!(n, 0, "steady-state allocations over 4000 mapped lines");
    let f = s.take_flush(T + 20, false);
    assert!(f.metrics.iter().any(|e| e.key.name() == b"edge.airflow.dag.task.duration"));
}

#[test]
fn histogram_copies_grow_amortized() {
    let mut s = mapped_shard();
    s.handle_datagram(b"legacy.api.latency:3|h", T, 0);
    let n = allocations(|| {
        for i in 0..4096 {
            s.handle_datagram(b"legacy.api.latency:3|h", T, i);
        }
    });
    // As for plain histograms: the sample vector doubles; the copy's sketch
    // bin already exists.
    assert!(n <= 14, "{n} allocations for 4096 copied histogram lines");
    let f = s.take_flush(T + 20, false);
    assert_eq!(
        f.sketches.iter().find(|e| e.key.name() == b"dist.edge.legacy.latency").map(|e| e.sketch.count()),
        Some(4097)
    );
}
