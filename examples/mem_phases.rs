//! Where the heap goes at N contexts: replays the bench's packed workload
//! through one `ShardState` at a fixed line rate on a simulated clock
//! (10 s buckets roll, a flush every `--flush-every` simulated seconds),
//! runs the flusher's merge + serialize on each flush, and reports live
//! heap bytes (requested and with glibc's chunk overhead), live allocation
//! counts by size class, and the peak, per phase.
//!
//! `cargo run --release --example mem_phases -- 100000 300000 10 15`
//! (contexts, lines/s, seconds of traffic, seconds between flushes, and
//! optionally the shape: `standard` (default), `small` or `large`, the
//! `edgestat bench --shape` traffic). The flush does what the flusher does:
//! take, then merge and encode streamed (each series/sketch encoded as it is
//! rendered, each payload handed on — dropped — as soon as it is closed). Only flushes that carry a
//! closed bucket are printed.
//!
//! The 100k rows of perf/flush-memory.md:
//! `mem_phases 100000 216000 25 1 small`, `mem_phases 100000 64000 25 1 large`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};

use edgestat::core::aggregator::{render_sketches, FlushMerger};
use edgestat::core::serializer::{Each, Payload, PayloadKind, Serializer, SerializerConfig};
use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{Shape, Workload, WorkloadConfig};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static LIVE_CHUNK: AtomicI64 = AtomicI64::new(0);
static PEAK_CHUNK: AtomicI64 = AtomicI64::new(0);
static CLASS_COUNT: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];
static CLASS_BYTES: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BASE_CHUNK: AtomicI64 = AtomicI64::new(0);
static BASE_CLASS: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];
static BASE_CLASS_BYTES: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];

/// From here on, report relative to what is live now (the workload generator).
fn set_base() {
    BASE_CHUNK.store(LIVE_CHUNK.load(Relaxed), Relaxed);
    for i in 0..32 {
        BASE_CLASS[i].store(CLASS_COUNT[i].load(Relaxed), Relaxed);
        BASE_CLASS_BYTES[i].store(CLASS_BYTES[i].load(Relaxed), Relaxed);
    }
}

/// glibc malloc chunk: size + 8-byte header, 16-byte aligned, at least 32.
fn chunk(size: usize) -> i64 {
    (((size + 8 + 15) & !15).max(32)) as i64
}

fn class(size: usize) -> usize {
    (usize::BITS - size.max(1).leading_zeros()) as usize - 1
}

fn on_alloc(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    LIVE.fetch_add(size as i64, Relaxed);
    let c = LIVE_CHUNK.fetch_add(chunk(size), Relaxed) + chunk(size);
    PEAK_CHUNK.fetch_max(c, Relaxed);
    CLASS_COUNT[class(size).min(31)].fetch_add(1, Relaxed);
    CLASS_BYTES[class(size).min(31)].fetch_add(size as i64, Relaxed);
}

fn on_free(size: usize) {
    LIVE.fetch_sub(size as i64, Relaxed);
    LIVE_CHUNK.fetch_sub(chunk(size), Relaxed);
    CLASS_COUNT[class(size).min(31)].fetch_sub(1, Relaxed);
    CLASS_BYTES[class(size).min(31)].fetch_sub(size as i64, Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        on_alloc(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        on_alloc(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        on_free(l.size());
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        on_free(l.size());
        on_alloc(n);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

const MIB: f64 = 1048576.0;

/// This process's resident set (kB), for what touched pages cost.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn report(phase: &str, base: i64) {
    let live = LIVE.load(Relaxed) - base;
    let bc = BASE_CHUNK.load(Relaxed);
    let chunk = LIVE_CHUNK.load(Relaxed) - bc;
    let n: i64 = CLASS_COUNT.iter().zip(BASE_CLASS.iter()).map(|(c, b)| c.load(Relaxed) - b.load(Relaxed)).sum();
    println!(
        "{phase:<44} live {:>7.2} MiB (chunks {:>7.2} MiB)  allocations {:>8}  peak so far {:>7.2} MiB  process RSS {:>7.2} MiB",
        live as f64 / MIB,
        chunk as f64 / MIB,
        n,
        (PEAK_CHUNK.load(Relaxed) - bc) as f64 / MIB,
        rss_kb() as f64 / 1024.0
    );
}

fn classes() {
    println!("  live allocations by size class:");
    for (i, (c, b)) in CLASS_COUNT.iter().zip(CLASS_BYTES.iter()).enumerate() {
        let (c, b) =
            (c.load(Relaxed) - BASE_CLASS[i].load(Relaxed), b.load(Relaxed) - BASE_CLASS_BYTES[i].load(Relaxed));
        if c > 0 && b > 64 * 1024 {
            println!(
                "    [{:>9}, {:>9}) B: {:>8} allocations, {:>7.2} MiB",
                1u64 << i,
                1u64 << (i + 1),
                c,
                b as f64 / MIB
            );
        }
    }
}

fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let contexts = arg(1, 100_000) as usize;
    let rate = arg(2, 300_000);
    let seconds = arg(3, 10) as i64;
    let flush_every = arg(4, 15) as i64;
    let shape = std::env::args().nth(5).unwrap_or_else(|| "standard".into());
    println!(
        "{contexts} contexts, {rate} lines/s, {seconds} s of traffic, a flush every {flush_every} s, shape {shape}"
    );
    println!(
        "sizes: Agg {} B, FlushEntry {} B, SketchEntry {} B, Sketch {} B",
        std::mem::size_of::<edgestat::core::aggregator::Agg>(),
        std::mem::size_of::<edgestat::core::aggregator::FlushEntry>(),
        std::mem::size_of::<edgestat::core::aggregator::SketchEntry>(),
        std::mem::size_of::<edgestat::core::aggregator::sketch::Sketch>()
    );

    let base = LIVE.load(Relaxed);
    let cfg = match shape.as_str() {
        "small" => Shape::Small.config(contexts, false),
        "large" => Shape::Large.config(contexts, false),
        _ => WorkloadConfig::standard(contexts, false),
    };
    let mut w = Workload::new(cfg);
    let mut shard = ShardState::new(edgestat::tools::bench::workload::bench_shard_settings(10_000_000));
    let settings = edgestat::tools::bench::workload::bench_flush_settings();
    let mut ser = Serializer::new(SerializerConfig::default()).expect("serializer");
    let mut merger = FlushMerger::new(settings, 10_000_000);
    report("start (workload generator + serializer)", base);
    let base = LIVE.load(Relaxed);
    set_base();

    // Start just after a bucket boundary, like a real run on average.
    let t0: i64 = 1_700_000_001;
    let mut b = Vec::new();
    let mut lines = 0u64;
    let mut next_flush = t0 + flush_every;
    let mut now = t0;
    let end = t0 + seconds;
    let mut peak_before_flush = 0i64;
    let mut flush_no = 0;
    let mut key_bytes_reported = false;
    let mut payload_stats = (0usize, 0usize, 0usize);
    let mut flush = |shard: &mut ShardState,
                     now: i64,
                     force: bool,
                     merger: &mut FlushMerger,
                     ser: &mut Serializer,
                     flush_no: &mut i32| {
        *flush_no += 1;
        let before = LIVE_CHUNK.load(Relaxed);
        let peak_before = PEAK_CHUNK.load(Relaxed);
        let live_before = LIVE.load(Relaxed);
        PEAK_CHUNK.store(before, Relaxed);
        let f = shard.take_flush(now, force);
        if f.metrics.len() + f.sketches.len() < 1000 && !force {
            // A flush without a closed bucket: nothing to see.
            encode(merger, ser, f, now, &mut payload_stats);
            payload_stats = (0, 0, 0);
            PEAK_CHUNK.fetch_max(peak_before, Relaxed);
            return;
        }
        println!("flush {flush_no} at +{}s:", now - t0);
        println!(
            "  {:<42} live {:>7.2} MiB (chunks {:>7.2} MiB)",
            "before",
            (live_before - base) as f64 / MIB,
            (before - BASE_CHUNK.load(Relaxed)) as f64 / MIB
        );
        if !key_bytes_reported {
            key_bytes_reported = true;
            let mut seen = std::collections::HashSet::new();
            let mut key_bytes = 0usize;
            for k in f.metrics.iter().map(|e| &e.key).chain(f.sketches.iter().map(|e| &e.key)) {
                if seen.insert(std::sync::Arc::as_ptr(k)) {
                    key_bytes += k.heap_bytes();
                }
            }
            println!(
                "  key bytes (ContextKey data of the {} contexts flushed): {:.2} MiB, {:.0} B per context",
                seen.len(),
                key_bytes as f64 / MIB,
                key_bytes as f64 / seen.len().max(1) as f64
            );
        }
        report(&format!("  after take ({} entries, {} sketches)", f.metrics.len(), f.sketches.len()), base);
        let (n_series, n_sketches) = encode(merger, ser, f, now, &mut payload_stats);
        report(
            &format!(
                "  after merge+encode ({n_series} series, {n_sketches} sketches, {} payloads, {:.2} -> {:.2} MiB)",
                payload_stats.0,
                payload_stats.1 as f64 / MIB,
                payload_stats.2 as f64 / MIB
            ),
            base,
        );
        payload_stats = (0, 0, 0);
        report("  after drop (merger + serializer keep)", base);
        let bc = BASE_CHUNK.load(Relaxed);
        println!(
            "  flush peak {:.2} MiB (+{:.2} MiB over before the flush)",
            (PEAK_CHUNK.load(Relaxed) - bc) as f64 / MIB,
            (PEAK_CHUNK.load(Relaxed) - before) as f64 / MIB
        );
        PEAK_CHUNK.fetch_max(peak_before, Relaxed);
    };
    while now < end {
        // One simulated second of traffic.
        let target = (now - t0 + 1) as u64 * rate;
        while w.generated.total_lines() < target {
            b.clear();
            w.next_packet(&mut b);
            shard.handle_datagram(&b, now, lines);
            lines += 1;
        }
        now += 1;
        peak_before_flush = peak_before_flush.max(LIVE_CHUNK.load(Relaxed));
        if now >= next_flush {
            flush(&mut shard, now, false, &mut merger, &mut ser, &mut flush_no);
            next_flush += flush_every;
        }
    }
    report(&format!("end of traffic ({} lines)", w.generated.total_lines()), base);
    classes();
    // The bench stops after its drain wait; the final flush takes everything.
    flush(&mut shard, now, true, &mut merger, &mut ser, &mut flush_no);
    println!(
        "peak of the shard state between flushes: {:.2} MiB",
        (peak_before_flush - BASE_CHUNK.load(Relaxed)) as f64 / MIB
    );
    println!("overall peak (chunks): {:.2} MiB", (PEAK_CHUNK.load(Relaxed) - BASE_CHUNK.load(Relaxed)) as f64 / MIB);
    println!("allocations in total: {}", ALLOCS.load(Relaxed));
}

/// What the flusher does with a shard's hand-over (series v2, default
/// settings, one encode thread): series encoded as they are rendered,
/// then sketches; each payload is handed on (here: counted and dropped,
/// as the forwarder takes it) as soon as it is closed.
fn encode(
    merger: &mut FlushMerger,
    ser: &mut Serializer,
    f: edgestat::core::shard::ShardFlush,
    now: i64,
    stats: &mut (usize, usize, usize),
) -> (usize, usize) {
    let mut sink = Each(|p: Payload| {
        stats.0 += 1;
        stats.1 += p.uncompressed_len;
        stats.2 += p.body.len();
    });
    let (mut n_series, mut n_sketches) = (0, 0);
    ser.begin_series(PayloadKind::SeriesV2);
    merger.flush_series(f.metrics, &f.sketches, now, &mut |s| {
        n_series += 1;
        ser.add_series(PayloadKind::SeriesV2, &s, &mut sink);
    });
    ser.finish_series(PayloadKind::SeriesV2, &mut sink);
    ser.begin_sketches();
    render_sketches(f.sketches, &mut |s| {
        n_sketches += 1;
        ser.add_sketch(&s, &mut sink);
    });
    ser.finish_sketches(&mut sink);
    (n_series, n_sketches)
}
