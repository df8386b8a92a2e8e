//! The longest single datagrams while a shard creates 100k contexts: what
//! the read loop cannot read through. Feeds the `edgestat bench` workload
//! (100k contexts, ~150 B or ~2.1 KB lines packed in 8 KB datagrams)
//! through one `ShardState` and times each datagram in thread CPU time
//! (so preemption by other processes does not count), with a new 10 s
//! bucket every 20,000 datagrams.
//!
//! `cargo build --release --example ramp_stalls &&
//!  taskset -c 1 target/release/examples/ramp_stalls large|small [datagrams]`
//!
//! At 20,000 datagrams/s of ~7 KB the kernel's default socket buffer
//! (212,992 B) holds about 0.65 ms of traffic: a longer datagram drops.

use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{bench_shard_settings, Shape, Workload};

/// CPU time of this thread, in microseconds.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn main() {
    let shape = std::env::args().nth(1).unwrap_or_else(|| "large".into());
    let datagrams: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(60_000);
    let sh = if shape == "small" { Shape::Small } else { Shape::Large };
    let mut w = Workload::new(sh.config(100_000, false));
    let packets = w.packets(datagrams);
    let mut shard = ShardState::new(bench_shard_settings(1_000_000));
    let mut costs: Vec<(u64, usize)> = Vec::with_capacity(packets.len());
    let mut now = 1_700_000_001i64;
    for (i, p) in packets.iter().enumerate() {
        if i % 20_000 == 0 && i > 0 {
            now += 10;
        }
        let t = thread_cpu_us();
        shard.handle_datagram(p, now, i as u64);
        costs.push((thread_cpu_us() - t, i));
    }
    costs.sort_unstable();
    let median = costs[costs.len() / 2].0;
    let over = |us: u64| costs.iter().filter(|c| c.0 > us).count();
    println!(
        "shape={shape} datagrams={} lines={} median={median}us over_500us={} over_1ms={} longest:",
        packets.len(),
        shard.stats().metric_lines,
        over(500),
        over(1000)
    );
    for (us, i) in costs.iter().rev().take(5) {
        println!("  datagram {i}: {us} us");
    }
}
