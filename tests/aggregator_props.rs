//! Property test: random sample streams, split randomly over two shards,
//! flushed and merged, equal a naive reference model of the Agent's
//! aggregation (exact for counters, gauges, sets and histograms; summary
//! exact and bins within the sketch's accuracy for distributions).

use std::collections::{BTreeMap, BTreeSet};

use edgestat::core::aggregator::HistogramAggregate;
use edgestat::core::aggregator::{FlushMerger, FlushSettings};
use edgestat::core::model::MetricType;
use edgestat::core::protocol::ParseOptions;
use edgestat::core::shard::{ShardSettings, ShardState};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000;

/// (metric index, sorted tags, bucket start).
type ModelKey = (usize, Vec<String>, i64);

#[derive(Debug, Clone)]
struct Sample {
    name: usize,
    tags: Vec<usize>,
    value: i32,
    rate_idx: usize,
    dt: i64,
    shard: usize,
}

const NAMES: [(&str, &str); 5] = [("cnt", "c"), ("gau", "g"), ("uniq", "s"), ("hist", "h"), ("dist", "d")];
const TAGS: [&str; 4] = ["env:prod", "a", "b:2", "zone:eu"];
const RATES: [f64; 3] = [1.0, 0.5, 0.25];

fn sample() -> impl Strategy<Value = Sample> {
    (0..5usize, proptest::collection::vec(0..4usize, 0..4), -50..50i32, 0..3usize, 0..30i64, 0..2usize)
        .prop_map(|(name, tags, value, rate_idx, dt, shard)| Sample { name, tags, value, rate_idx, dt, shard })
}

fn settings() -> ShardSettings {
    ShardSettings {
        hostname: "h1".into(),
        extra_tags: vec![],
        namespace: String::new(),
        namespace_blacklist: vec![],
        context_budget: edgestat::core::aggregator::ContextBudget::new(10_000),
        blocklist: Default::default(),
        max_queued: 10_000,
        context_expiry_seconds: 20,
        parse: ParseOptions::default(),
        mapper: Default::default(),
        histogram_copy_to_distribution: None,
        eol_required: Default::default(),
    }
}

fn line(s: &Sample) -> String {
    let (name, ty) = NAMES[s.name];
    let tags: Vec<&str> = s.tags.iter().map(|&t| TAGS[t]).collect();
    let mut l = format!("{name}:{}|{ty}", s.value);
    if RATES[s.rate_idx] != 1.0 {
        l.push_str(&format!("|@{}", RATES[s.rate_idx]));
    }
    if !tags.is_empty() {
        l.push_str(&format!("|#{}", tags.join(",")));
    }
    l
}

fn ctx_tags(s: &Sample) -> Vec<String> {
    let set: BTreeSet<&str> = s.tags.iter().map(|&t| TAGS[t]).collect();
    set.into_iter().map(String::from).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn merged_flush_equals_reference(samples in proptest::collection::vec(sample(), 1..120)) {
        let mut shards = [ShardState::new(settings()), ShardState::new(settings())];
        let mut seq = 0u64;
        for s in &samples {
            seq += 1;
            shards[s.shard].handle_datagram(line(s).as_bytes(), T0 + s.dt, seq);
        }
        let now = T0 + 45;
        let mut entries = Vec::new();
        let mut sketches = Vec::new();
        for sh in &mut shards {
            let f = sh.take_flush(now, true);
            entries.extend(f.metrics);
            sketches.extend(f.sketches);
        }
        let mut merger = FlushMerger::new(
            FlushSettings {
                histogram_aggregates: vec![HistogramAggregate::Max, HistogramAggregate::Min, HistogramAggregate::Median, HistogramAggregate::Avg, HistogramAggregate::Sum, HistogramAggregate::Count],
                histogram_percentiles: vec![95],
                expiry_seconds: 0,
                context_expiry_seconds: 20,
                blocklist: Default::default(),
            },
            10_000,
        );
        let out = merger.flush(entries, sketches, now);

        // Reference model: (name, tags, bucket) -> samples in arrival order.
        let mut model: BTreeMap<ModelKey, Vec<(f64, f64)>> = BTreeMap::new();
        for s in &samples {
            let bucket = T0 + s.dt - (T0 + s.dt).rem_euclid(10);
            model.entry((s.name, ctx_tags(s), bucket)).or_default().push((s.value as f64, RATES[s.rate_idx]));
        }
        let mut got: BTreeMap<(String, Vec<String>, i64), (MetricType, f64)> = BTreeMap::new();
        for s in &out.series {
            prop_assert_eq!(s.id.host(), "h1");
            prop_assert_eq!(s.interval, 10);
            for p in &s.points {
                prop_assert!(got.insert((s.id.name().into_owned(), s.id.tags().map(|t| t.into_owned()).collect(), p.timestamp), (s.metric_type, p.value)).is_none(), "duplicate point");
            }
        }
        // Counter zero-fill, as the Agent: every counter context whose last
        // sample is after a flushed bucket's start gets a 0 in that bucket.
        let flushed: BTreeSet<i64> = model.keys().map(|k| k.2).collect();
        let mut last_seen: BTreeMap<(usize, Vec<String>), i64> = BTreeMap::new();
        for s in &samples {
            if NAMES[s.name].1 == "c" {
                let e = last_seen.entry((s.name, ctx_tags(s))).or_insert(i64::MIN);
                *e = (*e).max(T0 + s.dt);
            }
        }
        for ((name, tags), seen) in &last_seen {
            for b in &flushed {
                if *seen > *b {
                    model.entry((*name, tags.clone(), *b)).or_default();
                }
            }
        }
        let mut expected_points = 0;
        for ((name, tags, bucket), vals) in &model {
            let base = NAMES[*name].0;
            let get = |suffix: &str| got.get(&(format!("{base}{suffix}"), tags.clone(), *bucket)).copied();
            match NAMES[*name].1 {
                "c" => {
                    let sum: f64 = vals.iter().map(|(v, r)| v / r).sum();
                    prop_assert_eq!(get(""), Some((MetricType::Rate, sum / 10.0)), "counter {} {:?} {}", base, tags, bucket);
                    expected_points += 1;
                }
                "g" => {
                    prop_assert_eq!(get(""), Some((MetricType::Gauge, vals.last().unwrap().0)));
                    expected_points += 1;
                }
                "s" => {
                    let distinct: BTreeSet<i64> = vals.iter().map(|(v, _)| *v as i64).collect();
                    prop_assert_eq!(get(""), Some((MetricType::Gauge, distinct.len() as f64)));
                    expected_points += 1;
                }
                "h" => {
                    let mut sorted: Vec<(f64, f64)> = vals.iter().map(|(v, r)| (*v, 1.0 / r)).collect();
                    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let w: f64 = sorted.iter().map(|x| x.1).sum();
                    let sum: f64 = sorted.iter().map(|x| x.0 * x.1).sum();
                    let pick = |target: f64| { let mut c = 0.0; for (v, wt) in &sorted { c += wt; if c > target { return *v; } } sorted.last().unwrap().0 };
                    prop_assert_eq!(get(".max"), Some((MetricType::Gauge, sorted.last().unwrap().0)));
                    prop_assert_eq!(get(".min"), Some((MetricType::Gauge, sorted[0].0)));
                    prop_assert_eq!(get(".median"), Some((MetricType::Gauge, pick((w - 1.0) / 2.0))));
                    prop_assert_eq!(get(".95percentile"), Some((MetricType::Gauge, pick((95.0 * w - 1.0) / 100.0))));
                    let (t, avg) = get(".avg").unwrap();
                    prop_assert_eq!(t, MetricType::Gauge);
                    prop_assert!((avg - sum / w).abs() < 1e-9);
                    let (_, s) = get(".sum").unwrap();
                    prop_assert!((s - sum).abs() < 1e-9);
                    prop_assert_eq!(get(".count"), Some((MetricType::Rate, w / 10.0)));
                    expected_points += 7;
                }
                "d" => {
                    let sk = out.sketches.iter().find(|k| k.id.name() == *base && k.id.tags().eq(tags.iter().map(|t| t.as_str()))).expect("sketch context");
                    let d = sk.dogsketches.iter().find(|d| d.ts == *bucket).expect("sketch bucket");
                    let cnt: i64 = vals.iter().map(|(_, r)| (1.0 / r) as i64).sum();
                    prop_assert_eq!(d.cnt, cnt);
                    prop_assert_eq!(d.min, vals.iter().map(|x| x.0).fold(f64::INFINITY, f64::min));
                    prop_assert_eq!(d.max, vals.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max));
                    let sum: f64 = vals.iter().map(|(v, r)| v / r).sum();
                    prop_assert!((d.sum - sum).abs() < 1e-9);
                    prop_assert_eq!(d.counts.iter().map(|&c| c as i64).sum::<i64>(), cnt);
                }
                _ => unreachable!(),
            }
        }
        prop_assert_eq!(got.len(), expected_points, "no extra points");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    /// Every value is represented by its bin within the DDSketch relative
    /// accuracy (1/128), so every quantile read from the bins is too. (Keys
    /// are int16 as in the Agent: above ~1e211 they saturate, like the Agent.)
    #[test]
    fn sketch_bins_are_within_relative_accuracy(v in prop_oneof![1e-9f64..1e-3, 1e-3f64..1e3, 1e3f64..1e200], neg in any::<bool>()) {
        use edgestat::core::aggregator::sketch::key;
        let v = if neg { -v } else { v };
        let k = key(v);
        prop_assert!(k != 0);
        let gamma: f64 = 1.0 + 2.0 / 128.0;
        let rep = k.signum() as f64 * gamma.powi(k.abs() - 1338);
        prop_assert!(((rep - v) / v).abs() <= 1.0 / 128.0, "v={} key={} rep={}", v, k, rep);
    }
}
