//! Times each phase of a flush of ~100k contexts (take, then merge, encode
//! and compress streamed as the flusher does it: each series/sketch encoded
//! as it is rendered), to see where the flush budget goes.
//! `cargo run --release --example flush_phases [contexts] [encode threads] [shape] [mode]`
//! (shape: `standard` (default), `small`, `large`; mode `stream` (default)
//! or `collect`: every series rendered into one vector, then encoded — the
//! flusher before streaming, and what it still does with more than one
//! encode thread). Instruction counts per phase: `perf/flush-ir.sh`.

use std::time::Instant;

use edgestat::core::aggregator::{render_sketches, FlushMerger};
use edgestat::core::serializer::{Each, Payload, PayloadKind, Serializer, SerializerConfig};
use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{Shape, Workload, WorkloadConfig};

const NOW: i64 = 1_700_000_001;

fn main() {
    let contexts: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let threads: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let cfg = match std::env::args().nth(3).as_deref() {
        Some("small") => Shape::Small.config(contexts, false),
        Some("large") => Shape::Large.config(contexts, false),
        _ => WorkloadConfig::standard(contexts, false),
    };
    let collect = std::env::args().nth(4).as_deref() == Some("collect");
    let mut w = Workload::new(cfg);
    let mut shard = ShardState::new(edgestat::tools::bench::workload::bench_shard_settings(10_000_000));
    let mut b = Vec::new();
    // Enough lines that (nearly) every context has a sample in the bucket.
    while w.generated.total_lines() < 4 * contexts as u64 {
        b.clear();
        w.next_packet(&mut b);
        shard.handle_datagram(&b, NOW, 1);
    }
    let settings = edgestat::tools::bench::workload::bench_flush_settings();
    let mut ser = Serializer::new(SerializerConfig::default()).expect("serializer");
    ser.set_encode_threads(threads).expect("serializer");
    let mut merger = FlushMerger::new(settings, 10_000_000);
    let (t0, c0) = (Instant::now(), cpu());
    let f = phase_take(&mut shard);
    let n = f.metrics.len() + f.sketches.len();
    let (t1, c1, m1) = (Instant::now(), cpu(), thread_cpu());
    let mut payloads = Vec::new();
    let (ns, nk) = if collect {
        phase_collect(&mut merger, &mut ser, f, &mut payloads)
    } else {
        phase_merge_encode(&mut merger, &mut ser, f, &mut payloads)
    };
    let (t2, c2, m2) = (Instant::now(), cpu(), thread_cpu());
    let (np, raw, zipped) = (
        payloads.len(),
        payloads.iter().map(|p| p.uncompressed_len).sum::<usize>(),
        payloads.iter().map(|p| p.body.len()).sum::<usize>(),
    );
    phase_drop(payloads);
    let (t3, c3) = (Instant::now(), cpu());
    println!(
        "{n} contexts -> {ns} series, {nk} sketches: take {:?}, merge+encode+compress {:?}, drop {:?}, total {:?}",
        t1 - t0,
        t2 - t1,
        t3 - t2,
        t3 - t0
    );
    println!(
        "  process CPU (all threads): take {:?}, merge+encode+compress {:?}, drop {:?}, total {:?}; {np} payloads, {raw} B raw, {zipped} B compressed, {threads} encode thread(s)",
        c1 - c0, c2 - c1, c3 - c2, c3 - c0
    );
    println!(
        "  merge+encode+compress CPU on the calling thread {:?}, on helper threads {:?}",
        m2 - m1,
        (c2 - c1).saturating_sub(m2 - m1)
    );
}

// One function per phase (never inlined) so that an instruction profile can
// attribute each phase: `perf/flush-ir.sh`.

#[inline(never)]
fn phase_take(shard: &mut ShardState) -> edgestat::core::shard::ShardFlush {
    shard.take_flush(NOW + 20, false)
}

/// What the flusher does: series encoded as they are rendered (or collected
/// and split across encode threads), then sketches; payloads kept here only
/// to be counted (the flusher hands each to the forwarder).
#[inline(never)]
fn phase_merge_encode(
    merger: &mut FlushMerger,
    ser: &mut Serializer,
    f: edgestat::core::shard::ShardFlush,
    payloads: &mut Vec<Payload>,
) -> (usize, usize) {
    let (mut ns, mut nk) = (0, 0);
    if ser.encode_threads() > 1 {
        return phase_collect(merger, ser, f, payloads);
    }
    let mut sink = Each(|p| payloads.push(p));
    ser.begin_series(PayloadKind::SeriesV2);
    merger.flush_series(f.metrics, &f.sketches, NOW + 20, &mut |s| {
        ns += 1;
        ser.add_series(PayloadKind::SeriesV2, &s, &mut sink);
    });
    ser.finish_series(PayloadKind::SeriesV2, &mut sink);
    ser.begin_sketches();
    render_sketches(f.sketches, &mut |s| {
        nk += 1;
        ser.add_sketch(&s, &mut sink);
    });
    ser.finish_sketches(&mut sink);
    (ns, nk)
}

/// Every series rendered into one vector first, then encoded.
#[inline(never)]
fn phase_collect(
    merger: &mut FlushMerger,
    ser: &mut Serializer,
    f: edgestat::core::shard::ShardFlush,
    payloads: &mut Vec<Payload>,
) -> (usize, usize) {
    let out = merge_all(merger, f);
    encode_all(ser, &out, payloads);
    (out.series.len(), out.sketches.len())
}

#[inline(never)]
fn merge_all(
    merger: &mut FlushMerger,
    f: edgestat::core::shard::ShardFlush,
) -> edgestat::core::aggregator::FlushOutput {
    merger.flush(f.metrics, f.sketches, NOW + 20)
}

#[inline(never)]
fn encode_all(ser: &mut Serializer, out: &edgestat::core::aggregator::FlushOutput, payloads: &mut Vec<Payload>) {
    ser.series_v2_slice(&out.series, payloads);
    ser.sketches_slice(&out.sketches, payloads);
}

#[inline(never)]
fn phase_drop(payloads: Vec<Payload>) {
    drop(payloads);
}

/// CPU time of the calling thread.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as in `cpu`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the whole process (every thread), to compare phases on a
/// machine busy with other work, where wall clock is noisy.
fn cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
