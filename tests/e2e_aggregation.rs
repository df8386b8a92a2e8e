//! Aggregation settings and bounds, end to end through the real binary.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn context_limit_bounds_memory_and_counts_drops() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[("EDGESTAT_MAX_CONTEXTS", "100")]);
    avoid_bucket_edge(4);
    let known: Vec<String> = (0..50).map(|i| format!("known.{i}:1|c")).collect();
    agent.send_udp_pinned(known.join("\n").as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let burst: Vec<String> = chunk.iter().map(|i| format!("burst.{i}:1|g")).collect();
        agent.send_udp_pinned(burst.join("\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(100));
    // Existing contexts keep working after the limit is hit (for a client
    // whose datagrams reach the same shard, as a real client's socket does).
    agent.send_udp_pinned(known.join("\n").as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);

    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    for i in 0..50 {
        let s = one(&series, &format!("known.{i}"));
        assert!((s.points.iter().map(|p| p.1).sum::<f64>() - 0.2).abs() < 1e-9, "{s:?}");
    }
    let burst = series.iter().filter(|s| s.metric.starts_with("burst.")).count();
    // The budget is node-wide and nothing expires during the test: exactly
    // the 50 contexts the known series left free are created.
    assert_eq!(burst, 50, "exactly the remaining budget");
    let dropped: u64 = stderr
        .iter()
        .filter_map(|l| l.split("context_limit=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(dropped as usize, 1000 - burst, "every refused sample is counted once");
}

#[test]
fn agent_settings_shape_the_output() {
    let intake = Intake::start_tls();
    let agent = Agent::start(
        Some(&intake),
        &[
            ("DD_STATSD_METRIC_NAMESPACE", "edge"),
            ("DD_DOGSTATSD_TAGS", "team:core region:eu team:core"),
            ("DD_HISTOGRAM_AGGREGATES", "min sum bogus"),
            ("DD_HISTOGRAM_PERCENTILES", "0.5 0.99 7"),
        ],
    );
    avoid_bucket_edge(4);
    agent.send_udp(b"req:1|h\nreq:2|h\nreq:3|h\nreq:4|h|#region:eu");
    agent.send_udp(b"jvm.heap:5|g\nbad:nan|g\nworse:+Inf|c\nqueue:42|g|T1700000000\nhits:5|c|@0.5|T1700000001");
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(Some("/api/v2/series")));

    let min = one(&series, "edge.req.min");
    assert_eq!(min.tags, vec!["region:eu", "team:core"], "extra tags appended, sorted, de-duplicated");
    assert_eq!(min.points[0].1, 1.0);
    // `#region:eu` duplicates an extra tag: all four samples share one context.
    assert_eq!(one(&series, "edge.req.sum").points[0].1, 10.0);
    assert_eq!(one(&series, "edge.req.50percentile").points[0].1, 2.0);
    assert_eq!(one(&series, "edge.req.99percentile").points[0].1, 4.0);
    assert!(find(&series, "edge.req.max").is_empty(), "only the configured aggregates");
    assert!(find(&series, "edge.req.7percentile").is_empty(), "out-of-range percentiles are skipped");
    // `jvm` is on the Agent's namespace blacklist.
    assert_eq!(one(&series, "jvm.heap").points[0].1, 5.0);
    // NaN/Inf samples are dropped and counted, nothing else is lost.
    assert!(find(&series, "edge.bad").is_empty() && find(&series, "edge.worse").is_empty());
    assert!(stderr.iter().any(|l| l.contains("non_finite_value=2")), "{stderr:?}");
    // Timestamped samples bypass aggregation: value as sent, own timestamp.
    let q = one(&series, "edge.queue");
    assert_eq!((q.kind.as_str(), q.points.clone()), ("gauge", vec![(1_700_000_000, 42.0)]));
    let h = one(&series, "edge.hits");
    assert_eq!((h.kind.as_str(), h.points.clone()), ("rate", vec![(1_700_000_001, 0.5)]), "sample rate not applied");
}

#[test]
fn idle_counters_keep_sending_zero() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[("EDGESTAT_FLUSH_INTERVAL", "1s")]);
    avoid_bucket_edge(2);
    agent.send_udp(b"zero.fill:5|c\nzero.gauge:1|g");
    // Wait until the counter has been flushed with its value and then at
    // least once more with a zero (the bucket after it closes).
    let all = intake.wait_until(Duration::from_secs(30), |p| {
        let s = series_from(p);
        s.iter().filter(|s| s.metric == "zero.fill").flat_map(|s| s.points.iter()).any(|p| p.1 == 0.0)
    });
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&all);
    let points: Vec<(i64, f64)> =
        series.iter().filter(|s| s.metric == "zero.fill").flat_map(|s| s.points.clone()).collect();
    assert!(points.iter().any(|p| p.1 == 0.5), "{points:?}");
    assert!(points.iter().any(|p| p.1 == 0.0), "{points:?}");
    let gauge_points = series.iter().filter(|s| s.metric == "zero.gauge").flat_map(|s| s.points.iter()).count();
    assert_eq!(gauge_points, 1, "gauges are not zero-filled");
}

#[test]
fn blocklist_drops_names_and_histogram_outputs() {
    let intake = Intake::start_tls();
    let agent = Agent::start(
        Some(&intake),
        &[("DD_STATSD_METRIC_BLOCKLIST", "blocked.gauge lat.max"), ("DD_USE_V2_API_SERIES", "false")],
    );
    avoid_bucket_edge(4);
    agent.send_udp(b"blocked.gauge:1|g\nkept.gauge:2|g\nlat:1|h\nlat:3|h\nblocked.gauge:5|g|T1700000000");
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(Some("/api/v1/series")));
    assert!(find(&series, "blocked.gauge").is_empty());
    assert_eq!(one(&series, "kept.gauge").points[0].1, 2.0);
    assert!(find(&series, "lat.max").is_empty(), "histogram outputs are filtered at flush");
    assert_eq!(one(&series, "lat.avg").points[0].1, 2.0);
    assert!(stderr.iter().any(|l| l.contains("blocklisted=2")), "{stderr:?}");
}
