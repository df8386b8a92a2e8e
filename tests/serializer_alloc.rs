//! Checks the buffer-reuse promise: once warmed up, building payloads
//! allocates only the final `Bytes` body of each payload.
//! (Single test in its own binary so the counting allocator sees nothing else.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use edgestat::core::model::{MetricType, Origin, Point, Series, SeriesId};
use edgestat::core::serializer::{Compression, Serializer, SerializerConfig};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn steady_state_allocates_only_bodies() {
    let series: Vec<Series> = (0..20_000)
        .map(|i| Series {
            id: SeriesId::owned(
                format!("edgestat.test.metric.{}", i % 500),
                "host-1".into(),
                vec![format!("env:prod"), format!("shard:{}", i % 97), format!("id:{i}")],
            ),
            points: vec![Point { timestamp: 1_700_000_000 + i, value: i as f64 * 0.5 }],
            metric_type: MetricType::Gauge,
            interval: 10,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        })
        .collect();
    for c in [Compression::Zstd { level: 1 }, Compression::Zlib, Compression::Gzip, Compression::None] {
        let cfg = SerializerConfig {
            compression: c,
            max_series_payload_size: 16_000,
            max_payload_size: 64_000,
            ..SerializerConfig::default()
        };
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::with_capacity(1024);
        // Warm-up grows every buffer to its steady-state size.
        ser.series_v2(series.iter(), &mut out);
        ser.series_v1(series.iter(), &mut out);
        out.clear();
        let before = ALLOCS.load(Ordering::Relaxed);
        ser.series_v2(series.iter(), &mut out);
        let n_v2 = out.len() as u64;
        ser.series_v1(series.iter(), &mut out);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert!(n_v2 > 2, "{c:?}: expected several payloads, got {n_v2}");
        assert_eq!(allocs, out.len() as u64, "{c:?}: {allocs} allocations for {} payloads", out.len());
    }
}
