//! Fixed-corpus hot path for instruction counting (callgrind): parse +
//! enrich + aggregate of the `edgestat bench` workload (seed 1, 3000
//! contexts) in steady state. Setup and the warm-up pass are excluded by
//! collecting only inside `hot_loop` (`--toggle-collect`).
//!
//! `cargo build --release --example hotpath && valgrind --tool=callgrind
//!  --toggle-collect='*hot_loop*' target/release/examples/hotpath packed`

use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{Workload, WorkloadConfig};

#[inline(never)]
fn hot_loop(s: &mut ShardState, packets: &[Vec<u8>]) {
    for (i, p) in packets.iter().enumerate() {
        s.handle_datagram(std::hint::black_box(p), 1_700_000_001, i as u64);
    }
}

fn main() {
    let profile = std::env::args().nth(1).unwrap_or_else(|| "packed".into());
    let single = profile == "single";
    let packets_n = if single { 20_000 } else { 600 };
    let mut w = Workload::new(WorkloadConfig::standard(3000, single));
    let packets = w.packets(packets_n);
    let mut s = ShardState::new(edgestat::tools::bench::workload::bench_shard_settings(1_000_000));
    // Warm-up: create every context and bucket entry.
    for p in &packets {
        s.handle_datagram(p, 1_700_000_001, 0);
    }
    hot_loop(&mut s, &packets);
    println!(
        "profile={profile} packets={} lines={} bytes={}",
        packets.len(),
        w.generated.total_lines(),
        w.generated.bytes
    );
}
