//! Times each phase of a flush of ~100k contexts (take, merge/render,
//! encode+compress, drop), to see where the flush budget goes.
//! `cargo run --release --example flush_phases [contexts] [encode threads]`; instruction
//! counts per phase: `perf/flush-ir.sh [contexts]`.

use std::time::Instant;

use edgestat::core::aggregator::{FlushMerger, FlushOutput};
use edgestat::core::serializer::{Payload, Serializer, SerializerConfig};
use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{Workload, WorkloadConfig};

const NOW: i64 = 1_700_000_001;

fn main() {
    let contexts: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut w = Workload::new(WorkloadConfig::standard(contexts, false));
    let mut shard = ShardState::new(edgestat::tools::bench::workload::bench_shard_settings(10_000_000));
    let mut b = Vec::new();
    for _ in 0..(contexts / 8) {
        b.clear();
        w.next_packet(&mut b);
        shard.handle_datagram(&b, NOW, 1);
    }
    let settings = edgestat::tools::bench::workload::bench_flush_settings();
    let threads: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut ser = Serializer::new(SerializerConfig::default()).expect("serializer");
    ser.set_encode_threads(threads).expect("serializer");
    let mut merger = FlushMerger::new(settings, 10_000_000);
    let (t0, c0) = (Instant::now(), cpu());
    let f = phase_take(&mut shard);
    let n = f.metrics.len() + f.sketches.len();
    let (t1, c1) = (Instant::now(), cpu());
    let out = phase_merge(&mut merger, f);
    let (t2, c2, m2) = (Instant::now(), cpu(), thread_cpu());
    let payloads = phase_encode(&mut ser, &out);
    let (t3, c3, m3) = (Instant::now(), cpu(), thread_cpu());
    let (ns, nk) = (out.series.len(), out.sketches.len());
    let (np, raw, zipped) = (
        payloads.len(),
        payloads.iter().map(|p| p.uncompressed_len).sum::<usize>(),
        payloads.iter().map(|p| p.body.len()).sum::<usize>(),
    );
    phase_drop(out, payloads);
    let (t4, c4) = (Instant::now(), cpu());
    println!(
        "{n} contexts -> {ns} series, {nk} sketches: take {:?}, merge+render {:?}, encode+compress {:?}, drop {:?}, total {:?}",
        t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0
    );
    println!(
        "  process CPU (all threads): take {:?}, merge+render {:?}, encode+compress {:?}, drop {:?}, total {:?}; {np} payloads, {raw} B raw, {zipped} B compressed, {threads} encode thread(s)",
        c1 - c0, c2 - c1, c3 - c2, c4 - c3, c4 - c0
    );
    // On an idle machine the encode wall time is about the busiest
    // thread's CPU time: the calling thread's, or a helper's share.
    println!(
        "  encode+compress CPU on the calling thread {:?}, on helper threads {:?}",
        m3 - m2,
        (c3 - c2).saturating_sub(m3 - m2)
    );
}

// One function per phase (never inlined) so that an instruction profile can
// attribute each phase: `perf/flush-ir.sh`.

#[inline(never)]
fn phase_take(shard: &mut ShardState) -> edgestat::core::shard::ShardFlush {
    shard.take_flush(NOW + 20, false)
}

#[inline(never)]
fn phase_merge(merger: &mut FlushMerger, f: edgestat::core::shard::ShardFlush) -> FlushOutput {
    merger.flush(f.metrics, f.sketches, NOW + 20)
}

#[inline(never)]
fn phase_encode(ser: &mut Serializer, out: &FlushOutput) -> Vec<Payload> {
    let mut payloads = Vec::new();
    ser.series_v2_slice(&out.series, &mut payloads);
    ser.sketches_slice(&out.sketches, &mut payloads);
    payloads
}

#[inline(never)]
fn phase_drop(out: FlushOutput, payloads: Vec<Payload>) {
    drop(out);
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
