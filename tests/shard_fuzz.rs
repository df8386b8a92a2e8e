//! Fuzz harness for the whole per-datagram path (split, parse, enrich,
//! aggregate, flush), bounded so it runs in CI: no input panics, memory
//! stays within the context budget, and every line and every sample has
//! exactly one counted outcome.

use edgestat::core::aggregator::HistogramAggregate;
use edgestat::core::aggregator::{ContextBudget, FlushMerger, FlushSettings};
use edgestat::core::protocol::{parse_line, Message, ParseOptions};
use edgestat::core::shard::{ShardSettings, ShardState};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn shard(budget: std::sync::Arc<ContextBudget>) -> ShardState {
    ShardState::new(ShardSettings {
        hostname: "h".into(),
        extra_tags: vec!["x:y".into()],
        namespace: "ns".into(),
        namespace_blacklist: vec![],
        context_budget: budget,
        blocklist: Default::default(),
        max_queued: 64,
        context_expiry_seconds: 20,
        parse: ParseOptions { honor_timestamps: true, origin_detection_client: true },
        mapper: Default::default(),
        histogram_copy_to_distribution: None,
        eol_required: Default::default(),
    })
}

/// Fragments real clients send, glued together at random.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"m:1|c".to_vec()),
        Just(b"|@0.5".to_vec()),
        Just(b"|#a:b,host:x,".to_vec()),
        Just(b"|T1700000000".to_vec()),
        Just(b"_e{3,4}:abc|defg".to_vec()),
        Just(b"_sc|chk|1|m:x".to_vec()),
        Just(b":".to_vec()),
        Just(b"|".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"1:2:nan:inf|h".to_vec()),
        Just(b"|d".to_vec()),
        Just(b"|s".to_vec()),
        Just(b"|c:ci-abc,in-12|e:it-true|card:high".to_vec()),
    ]
}

/// What the shard must report, worked out from the datagrams alone: lines
/// split here (on `\n`, one trailing `\r` removed, empty lines skipped), each
/// classified by the public parser.
#[derive(Default)]
struct Outcomes {
    lines: u64,
    metric_lines: u64,
    samples: u64,
    events: u64,
    service_checks: u64,
    parse_errors: BTreeMap<&'static str, u64>,
}

fn expected_outcomes(datagrams: &[Vec<Vec<u8>>]) -> Outcomes {
    let opts = ParseOptions { honor_timestamps: true, origin_detection_client: true };
    let mut o = Outcomes::default();
    for parts in datagrams {
        let d = parts.concat();
        for line in d.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            o.lines += 1;
            match parse_line(line, &opts) {
                Ok(Message::Metric(m)) => {
                    o.metric_lines += 1;
                    o.samples += m.value_count() as u64;
                }
                Ok(Message::Event(_)) => o.events += 1,
                Ok(Message::ServiceCheck(_)) => o.service_checks += 1,
                Err(e) => *o.parse_errors.entry(e.kind()).or_default() += 1,
            }
        }
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
    #[test]
    fn any_datagram_is_handled(datagrams in proptest::collection::vec(proptest::collection::vec(piece(), 0..12), 1..20), dt in 0..40i64) {
        let budget = ContextBudget::new(50);
        let mut s = shard(budget.clone());
        for (i, parts) in datagrams.iter().enumerate() {
            let d: Vec<u8> = parts.concat();
            s.handle_datagram(&d, 1_700_000_000 + dt + i as i64, i as u64);
            prop_assert!(budget.live() <= 50);
        }
        let f = s.take_flush(1_700_000_100, true);
        prop_assert_eq!(f.stats.packets, datagrams.len() as u64);
        let want = expected_outcomes(&datagrams);
        let st = &f.stats;
        let dropped = |k: &str| st.dropped.get(k).copied().unwrap_or(0);
        let queue_drops = dropped("event_queue_full") + dropped("service_check_queue_full");
        let lines = st.metric_lines + st.events + st.service_checks + queue_drops + st.parse_errors.values().sum::<u64>();
        prop_assert_eq!(lines, want.lines, "every line has one outcome: {:?}", st);
        prop_assert_eq!(st.metric_lines, want.metric_lines);
        prop_assert_eq!(st.events + dropped("event_queue_full"), want.events);
        prop_assert_eq!(st.service_checks + dropped("service_check_queue_full"), want.service_checks);
        prop_assert_eq!(&st.parse_errors, &want.parse_errors);
        let sample_drops = st.dropped.values().sum::<u64>() - queue_drops;
        prop_assert_eq!(st.metric_samples + sample_drops, want.samples, "every sample aggregated or dropped by reason: {:?}", st);
        prop_assert!(f.events.len() <= 64 && f.service_checks.len() <= 64 && f.passthrough.len() <= 64);
        let mut m = FlushMerger::new(FlushSettings {
            histogram_aggregates: vec![HistogramAggregate::Max, HistogramAggregate::Median, HistogramAggregate::Avg, HistogramAggregate::Count],
            histogram_percentiles: vec![95],
            expiry_seconds: 300,
            context_expiry_seconds: 20,
            blocklist: Default::default(),
        }, 50);
        let out = m.flush(f.metrics, f.sketches, 1_700_000_100);
        for series in &out.series {
            for p in &series.points {
                prop_assert!(p.value.is_finite(), "never a non-finite point: {:?}", series);
            }
        }
    }
}

/// Feeds `wire` to a decoder in chunks ending at `cuts`; returns the frames
/// (or the error that ended the stream).
fn decode_chunked(
    wire: &[u8],
    cuts: &[usize],
    max: usize,
) -> (Vec<Vec<u8>>, Option<edgestat::core::stream_frame::FrameError>) {
    let mut d = edgestat::core::stream_frame::FrameDecoder::new(max);
    let mut out = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    bounds.push(wire.len());
    bounds.sort_unstable();
    let mut at = 0;
    for b in bounds {
        let mut chunk = &wire[at..b.max(at)];
        at = b.max(at);
        while !chunk.is_empty() {
            let spare = d.spare();
            assert!(!spare.is_empty(), "the decoder always has room");
            let n = spare.len().min(chunk.len());
            spare[..n].copy_from_slice(&chunk[..n]);
            d.filled(n);
            chunk = &chunk[n..];
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => {
                        assert!(!f.is_empty() && f.len() <= max);
                        out.push(f.to_vec());
                    }
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    /// Stream framing: however the stream is split or coalesced, the
    /// frames come out whole and in order.
    #[test]
    fn stream_frames_survive_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..30), cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        let mut wire = Vec::new();
        for p in &payloads {
            edgestat::core::stream_frame::encode_frame(p, &mut wire);
        }
        let (frames, err) = decode_chunked(&wire, &cuts, 299);
        prop_assert!(err.is_none());
        prop_assert_eq!(frames, payloads);
    }

    /// Stream framing on garbage, through the shard: never a panic, every
    /// decoded frame is counted as one packet, a bad length ends the stream.
    #[test]
    fn stream_frames_from_any_bytes_reach_the_shard(wire in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0u8), Just(b'\n')], 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..20), max in 1usize..600) {
        let (frames, _err) = decode_chunked(&wire, &cuts, max);
        let mut s = shard(ContextBudget::new(50));
        for (i, f) in frames.iter().enumerate() {
            s.handle_datagram(f, 1_700_000_000, i as u64);
        }
        let total: usize = frames.iter().map(|f| f.len() + 4).sum();
        prop_assert!(total <= wire.len());
        prop_assert_eq!(s.take_flush(1_700_000_100, true).stats.packets, frames.len() as u64);
    }
}
