//! Times each phase of a flush of ~100k contexts (take, merge/render,
//! encode+compress, drop), to see where the flush budget goes.
//! `cargo run --release --example flush_phases [contexts]`; instruction
//! counts per phase: `perf/flush-ir.sh [contexts]`.

use std::time::Instant;

use edgestat::aggregator::{FlushMerger, FlushOutput, FlushSettings};
use edgestat::bench::workload::{Workload, WorkloadConfig};
use edgestat::config::HistogramAggregate;
use edgestat::serializer::{Payload, Serializer, SerializerConfig};
use edgestat::shard::ShardState;

const NOW: i64 = 1_700_000_001;

fn main() {
    let contexts: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut w = Workload::new(WorkloadConfig { contexts, min_tags: 2, max_tags: 50, packet_bytes: 8192, single: false, multi_value_pct: 8, seed: 1 });
    let mut shard = ShardState::new(edgestat::bench::workload::bench_shard_settings(10_000_000));
    let mut b = Vec::new();
    for _ in 0..(contexts / 8) {
        b.clear();
        w.next_packet(&mut b);
        shard.handle_datagram(&b, NOW, 1);
    }
    let settings = FlushSettings {
        histogram_aggregates: vec![HistogramAggregate::Max, HistogramAggregate::Median, HistogramAggregate::Avg, HistogramAggregate::Count],
        histogram_percentiles: vec![95],
        expiry_seconds: 300,
        context_expiry_seconds: 300,
        blocklist: Default::default(),
    };
    let mut ser = Serializer::new(SerializerConfig::default()).expect("serializer");
    let mut merger = FlushMerger::new(settings, 10_000_000);
    let t0 = Instant::now();
    let f = phase_take(&mut shard);
    let n = f.metrics.len() + f.sketches.len();
    let t1 = Instant::now();
    let out = phase_merge(&mut merger, f);
    let t2 = Instant::now();
    let payloads = phase_encode(&mut ser, &out);
    let t3 = Instant::now();
    let (ns, nk) = (out.series.len(), out.sketches.len());
    phase_drop(out, payloads);
    let t4 = Instant::now();
    println!(
        "{n} contexts -> {ns} series, {nk} sketches: take {:?}, merge+render {:?}, encode+compress {:?}, drop {:?}, total {:?}",
        t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0
    );
}

// One function per phase (never inlined) so that an instruction profile can
// attribute each phase: `perf/flush-ir.sh`.

#[inline(never)]
fn phase_take(shard: &mut ShardState) -> edgestat::shard::ShardFlush {
    shard.take_flush(NOW + 20, false)
}

#[inline(never)]
fn phase_merge(merger: &mut FlushMerger, f: edgestat::shard::ShardFlush) -> FlushOutput {
    merger.flush(f.metrics, f.sketches, NOW + 20)
}

#[inline(never)]
fn phase_encode(ser: &mut Serializer, out: &FlushOutput) -> Vec<Payload> {
    let mut payloads = Vec::new();
    ser.series_v2(out.series.iter(), &mut payloads);
    ser.sketches(out.sketches.iter(), &mut payloads);
    payloads
}

#[inline(never)]
fn phase_drop(out: FlushOutput, payloads: Vec<Payload>) {
    drop(out);
    drop(payloads);
}
