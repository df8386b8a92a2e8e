//! The per-context memory estimate behind `EDGESTAT_MEMORY_LIMIT` against
//! the heap a shard and the flush merger really hold: the estimate must be
//! an upper bound of the measured peak, and not a wildly loose one.
//! Counting global allocator in its own test binary; counts per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use edgestat::core::aggregator::footprint::per_context_bytes;
use edgestat::core::aggregator::{
    ByteBound, ContextBudget, FlushMerger, FlushSettings, KeyView, SampleKind, ShardSampler,
};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grow(by: isize) {
    let _ = LIVE.try_with(|l| {
        l.set(l.get() + by);
        let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
    });
}

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grow(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        grow(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        grow(n as isize - l.size() as isize);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn estimate_bounds_the_measured_heap_through_a_flush() {
    let n = 50_000usize;
    let tags_owned: Vec<String> = (0..5).map(|i| format!("tag{i}:value-{i:010}")).collect();
    let tags: Vec<&[u8]> = tags_owned.iter().map(|t| t.as_bytes()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("edge.metric.name.{i:08}")).collect();
    let budget =
        ContextBudget::with_bytes(n * 2, ByteBound { max_bytes: usize::MAX, per_context_bytes: per_context_bytes() });
    let mut merger = FlushMerger::new(
        FlushSettings {
            histogram_aggregates: vec![],
            histogram_percentiles: vec![],
            expiry_seconds: 300,
            context_expiry_seconds: 300,
            blocklist: Default::default(),
        },
        n * 2,
    );
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let mut s = ShardSampler::new(budget.clone());
    // Two open buckets, every context in both, each reached by one raw key.
    for (i, name) in names.iter().enumerate() {
        let v = KeyView { name: name.as_bytes(), host: b"host-1", tags: &tags };
        let id = s.resolve(&v, 100).unwrap();
        s.remember((i as u64, 7), id);
        let kind = if i % 3 == 0 { SampleKind::Gauge } else { SampleKind::Counter };
        s.add_id(id, kind, 1.0, None, 1.0, 100, 0).unwrap();
        s.add_id(id, kind, 1.0, None, 1.0, 110, 0).unwrap();
    }
    let (mut metrics, mut sketches) = (Vec::new(), Vec::new());
    s.take_closed(120, false, 120, 300, &mut metrics, &mut sketches);
    let out = merger.flush(metrics, sketches, 120);
    assert_eq!(out.series.len(), n, "one series per context");
    assert_eq!(out.series[0].points.len(), 2, "a point per closed bucket");
    drop(out);
    let measured = (PEAK.with(Cell::get) - base) as usize;
    let estimated = budget.estimated_bytes();
    eprintln!(
        "{n} contexts: estimated {estimated} B ({} B/context), measured peak heap {measured} B ({} B/context)",
        estimated / n,
        measured / n
    );
    assert!(estimated >= measured, "estimate {estimated} under the measured peak {measured}");
    assert!(estimated <= measured * 3, "estimate {estimated} over 3x the measured peak {measured}");
    drop(s);
}
