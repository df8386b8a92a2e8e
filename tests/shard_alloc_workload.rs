//! "No allocation per line in steady state": once a shard has seen every
//! context of the `edgestat bench` workload in the open bucket, handling
//! more datagrams of it (parse + enrich + aggregate) allocates nothing,
//! except sets, whose new members must be stored. Counted with a
//! per-thread counting allocator (own test binary).

use edgestat::core::protocol::ParseOptions;
use edgestat::core::shard::{ShardSettings, ShardState};
use edgestat::tools::bench::workload::{Shape, Workload, WorkloadConfig};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

fn shard() -> ShardState {
    ShardState::new(ShardSettings {
        hostname: "h".into(),
        extra_tags: vec!["team:edge".into()],
        namespace: String::new(),
        namespace_blacklist: vec![],
        context_budget: edgestat::core::aggregator::ContextBudget::new(100_000),
        blocklist: Default::default(),
        max_queued: 1000,
        context_expiry_seconds: 300,
        parse: ParseOptions::default(),
        mapper: Default::default(),
        histogram_copy_to_distribution: None,
        eol_required: Default::default(),
    })
}

#[test]
fn steady_state_lines_do_not_allocate() {
    let shapes = [
        WorkloadConfig { seed: 3, ..WorkloadConfig::standard(500, false) },
        WorkloadConfig { seed: 3, ..WorkloadConfig::standard(500, true) },
        WorkloadConfig { seed: 3, ..Shape::Small.config(500, false) },
        WorkloadConfig { seed: 3, ..Shape::Large.config(500, false) },
    ];
    for cfg in shapes {
        let (single, sizes) = (cfg.single, cfg.sizes);
        // Set lines are dropped from the corpus: every set member is new,
        // so a set line must allocate; sets are checked separately below.
        let mut w = Workload::new(cfg);
        let mut packets = Vec::new();
        for _ in 0..if single { 5000 } else { 200 } {
            let mut b = Vec::new();
            w.next_packet(&mut b);
            // Drop set lines (`|s|`) from the measured corpus.
            let kept: Vec<&[u8]> = b.split(|c| *c == b'\n').filter(|l| !l.windows(3).any(|x| x == b"|s|")).collect();
            if !kept.is_empty() {
                packets.push(kept.join(&b'\n'));
            }
        }
        let mut s = shard();
        // Two warm-up passes: contexts, bucket entries, histogram sample
        // vectors and scratch buffers reach their steady capacity.
        for _ in 0..2 {
            for p in &packets {
                s.handle_datagram(p, 1_700_000_001, 1);
            }
        }
        let n = allocations(|| {
            for p in &packets {
                s.handle_datagram(p, 1_700_000_002, 2);
            }
        });
        // Histograms keep every sample until flush, so their Vec grows
        // (amortised doubling, not per line): allow the few regrowths.
        assert!(n <= 64, "single={single} sizes={:?}: {n} allocations for {} datagrams", sizes, packets.len());
    }
}
