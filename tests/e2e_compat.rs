//! Agent features a DogStatsD user may rely on, end to end through the real
//! binary: mapper profiles, histogram copies into distributions,
//! `dogstatsd_eol_required`, host tags and the host metadata payload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const AIRFLOW_PROFILES: &str = r#"[{"name":"airflow","prefix":"airflow.","mappings":[
    {"match":"airflow.dag.*.*.duration","name":"airflow.dag.task.duration","tags":{"dag_id":"$1","task_id":"$2"}},
    {"match":"airflow\\.pool\\.(open|used)_slots\\.(\\w+)","match_type":"regex","name":"airflow.pool.${1}_slots","tags":{"pool":"$2"}}]}]"#;

fn sketches(intake: &Intake) -> Vec<Value> {
    intake
        .payloads(Some("/api/beta/sketches"))
        .iter()
        .flat_map(|p| p["body"]["sketches"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn mapper_histogram_copies_and_eol_required() {
    let intake = Intake::start_tls();
    let agent = Agent::start(
        Some(&intake),
        &[
            ("DD_DOGSTATSD_MAPPER_PROFILES", AIRFLOW_PROFILES),
            ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION", "true"),
            ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION_PREFIX", "dist."),
            ("DD_DOGSTATSD_EOL_REQUIRED", "uds"),
        ],
    );
    avoid_bucket_edge(4);
    agent.send_udp(
        b"airflow.dag.etl.load.duration:5|ms\nairflow.dag.etl.load.duration:7|ms\nairflow.pool.used_slots.default:3|g",
    );
    agent.send_udp(b"airflow.scheduler.heartbeat:1|c\nplain.hist:2|h|@0.5");
    // UDP is not listed: its unterminated last line is kept.
    agent.send_udp(b"udp.unterminated:1|c");
    // UDS is listed: the unterminated last line is dropped and counted.
    agent.send_uds(b"uds.kept:1|c\nuds.cut:1|c");
    agent.send_uds(b"uds.whole:1|c\n");
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);

    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    let max = one(&series, "airflow.dag.task.duration.max");
    assert_eq!(max.tags, vec!["dag_id:etl", "task_id:load"]);
    assert_eq!(max.points[0].1, 7.0);
    assert!(find(&series, "airflow.dag.etl.load.duration.max").is_empty(), "the original name is gone");
    let pool = one(&series, "airflow.pool.used_slots");
    assert_eq!((pool.tags.clone(), pool.points[0].1), (vec!["pool:default".to_string()], 3.0));
    assert!(!find(&series, "airflow.scheduler.heartbeat").is_empty(), "no mapping matches: kept as sent");
    assert!(!find(&series, "plain.hist.max").is_empty(), "the histogram itself is still sent");

    let sk = sketches(&intake);
    let dist = sk.iter().find(|s| s["metric"] == "dist.airflow.dag.task.duration").expect("copy of the mapped timing");
    assert_eq!(dist["tags"], json!(["dag_id:etl", "task_id:load"]));
    let d = &dist["dogsketches"][0];
    assert_eq!((d["cnt"].as_i64(), d["min"].as_f64(), d["max"].as_f64()), (Some(2), Some(5.0), Some(7.0)));
    let plain = sk.iter().find(|s| s["metric"] == "dist.plain.hist").expect("copy of the histogram");
    assert_eq!(plain["dogsketches"][0]["cnt"].as_i64(), Some(2), "the sample rate weighs the copy like the histogram");

    assert!(!find(&series, "udp.unterminated").is_empty());
    assert!(!find(&series, "uds.kept").is_empty() && !find(&series, "uds.whole").is_empty());
    assert!(find(&series, "uds.cut").is_empty());
    assert!(stderr.iter().any(|l| l.contains("unterminated_line=1")), "{stderr:?}");
}

#[test]
fn bad_mapper_settings_exit_2_naming_the_key() {
    let cases = [
        ("DD_DOGSTATSD_MAPPER_PROFILES", r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a.**","name":"b"}]}]"#),
        ("DD_DOGSTATSD_MAPPER_PROFILES", "[not json"),
        ("DD_DOGSTATSD_MAPPER_CACHE_SIZE", "0"),
        ("DD_DOGSTATSD_EOL_REQUIRED", "udp tcp"),
        ("DD_EXPECTED_TAGS_DURATION", "soon"),
    ];
    for (key, value) in cases {
        let out = Command::new(BIN)
            .arg("run")
            .env_clear()
            .env("DD_DOGSTATSD_PORT", "0")
            .env("EDGESTAT_API_ADDR", "off")
            .env(key, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
}

/// Host metadata payloads (events also go to `/intake/`).
fn host_metadata(payloads: &[Value]) -> Vec<&Value> {
    payloads.iter().filter(|p| p["path"] == "/intake/" && p["body"].get("host-tags").is_some()).collect()
}

fn header<'a>(p: &'a Value, name: &str) -> Option<&'a str> {
    p["headers"].as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str())
}

#[test]
fn host_metadata_carries_host_tags_and_expected_tags_are_added_early() {
    let intake = Intake::start_tls();
    let agent = Agent::start(
        Some(&intake),
        &[
            ("DD_TAGS", "team:core env:staging"),
            ("DD_EXTRA_TAGS", "zone:a team:core"),
            ("DD_EXPECTED_TAGS_DURATION", "10m"),
        ],
    );
    // Sent at start, without waiting for a flush (the flush interval is 1 h here).
    let all = intake.wait_until(Duration::from_secs(10), |ps| !host_metadata(ps).is_empty());
    let meta = host_metadata(&all);
    assert_eq!(meta.len(), 1, "one payload at start");
    let m = meta[0];
    assert_eq!(header(m, "Content-Type"), Some("application/json"));
    assert_eq!(header(m, "Content-Encoding"), Some("zstd"));
    assert_eq!(header(m, "DD-API-KEY"), Some("test-api-key"));
    let body = &m["body"];
    assert_eq!(body["apiKey"], "test-api-key");
    assert_eq!(body["internalHostname"], "h1");
    assert_eq!(body["meta"]["hostname"], "h1");
    assert_eq!(body["host-tags"]["system"], json!(["env:staging", "team:core", "zone:a"]));
    assert!(body["agentVersion"].as_str().is_some_and(|v| !v.is_empty()));

    agent.send_udp(b"x:1|g|#a:1");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    assert_eq!(
        one(&series, "x").tags,
        vec!["a:1", "env:staging", "team:core", "zone:a"],
        "host tags appended while young"
    );
    assert!(one(&series, "datadog.agent.running").tags.contains(&"zone:a".to_string()), "the Agent's own series too");

    // Without expected_tags_duration the host tags are only in the metadata.
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[("DD_TAGS", "team:core")]);
    agent.send_udp(b"x:1|g|#a:1");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    assert_eq!(one(&series_from(&intake.payloads(Some("/api/v2/series"))), "x").tags, vec!["a:1"]);
    let all = intake.payloads(Some("/intake/"));
    assert_eq!(host_metadata(&all)[0]["body"]["host-tags"]["system"], json!(["team:core"]));
}

#[test]
fn metadata_collection_can_be_turned_off() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[("DD_ENABLE_METADATA_COLLECTION", "false")]);
    agent.send_udp(b"x:1|g");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    assert!(!intake.payloads(Some("/api/v2/series")).is_empty());
    let all = intake.payloads(Some("/intake/"));
    assert!(host_metadata(&all).is_empty(), "{all:?}");
    assert!(!all.is_empty(), "the startup event still goes to /intake/");
}
