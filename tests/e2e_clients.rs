//! A real client library (the official Datadog Python client) pointed at
//! `edgestat run` produces exactly the series the Datadog Agent would send.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// The Python that has the `datadog` package: `EDGESTAT_TEST_PYTHON`
/// (scripts/test.sh sets it to its virtual environment's), else that
/// environment if it exists, else `python3` from `PATH`.
fn python() -> std::ffi::OsString {
    if let Some(p) = std::env::var_os("EDGESTAT_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return p;
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    if venv.exists() {
        return venv.into_os_string();
    }
    "python3".into()
}

#[test]
fn datadogpy_client_over_udp_and_uds() {
    let python = python();
    let python_ok = Command::new(&python).args(["-c", "import datadog"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(python_ok, "{python:?} lacks the datadog Python package (scripts/test.sh installs it in target/pyenv)");

    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[]);
    avoid_bucket_edge(4);
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/datadogpy_driver.py");
    let out = Command::new(&python)
        .arg(driver)
        .arg(agent.udp_port.to_string())
        .arg(&agent.socket)
        .output()
        .expect("run python driver");
    assert!(out.status.success(), "driver failed: {}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{}", stderr.join("\n"));

    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    let pv = one(&series, "py.page.views");
    assert_eq!((pv.kind.as_str(), pv.interval, pv.host.as_str()), ("rate", 10, "h1"));
    assert_eq!(pv.tags, vec!["env:test", "page:home"]);
    assert!((pv.points[0].1 - 0.6).abs() < 1e-9, "(3 + 2 + 1) / 10: {pv:?}");
    assert!((one(&series, "py.queue").points[0].1 + 0.4).abs() < 1e-9);
    assert_eq!(one(&series, "py.temp").points[0].1, 22.5);
    assert_eq!(one(&series, "py.lat.max").points[0].1, 10.0);
    assert_eq!(one(&series, "py.lat.median").points[0].1, 2.0);
    assert_eq!(one(&series, "py.lat.avg").points[0].1, 4.0);
    assert!((one(&series, "py.lat.count").points[0].1 - 0.4).abs() < 1e-9);
    assert_eq!(one(&series, "py.lat.95percentile").points[0].1, 10.0);
    assert_eq!(one(&series, "py.lat.max").tags, vec!["env:test"]);
    assert_eq!(one(&series, "py.timer.max").points[0].1, 250.0);
    assert_eq!(one(&series, "py.users").points[0].1, 2.0);
    let hosted = one(&series, "py.hosted");
    assert_eq!((hosted.host.as_str(), hosted.tags.len()), ("web-7", 0));
    let uds = one(&series, "py.uds.gauge");
    assert_eq!((uds.points[0].1, uds.tags.clone()), (7.0, vec!["via:uds".to_string()]));

    let sketches: Vec<serde_json::Value> = intake
        .payloads(Some("/api/beta/sketches"))
        .iter()
        .flat_map(|p| p["body"]["sketches"].as_array().cloned().unwrap_or_default())
        .collect();
    let dist = sketches.iter().find(|s| s["metric"] == "py.dist").expect("py.dist sketch");
    let d = &dist["dogsketches"][0];
    assert_eq!(
        (d["cnt"].as_i64(), d["min"].as_f64(), d["max"].as_f64(), d["sum"].as_f64()),
        (Some(2), Some(1.0), Some(3.0), Some(4.0))
    );
    assert_eq!(d["k"], json!([1338, 1409]));
    assert_eq!(d["n"], json!([1, 1]));
    assert_eq!(dist["host"], "h1");

    let events = intake.payloads(Some("/intake/"));
    let ci = events.iter().find_map(|p| p["body"]["events"]["ci"].as_array().cloned()).expect("ci group");
    assert_eq!(ci[0]["msg_title"], "Deploy");
    assert_eq!(ci[0]["msg_text"], "v1.2\nok", "datadogpy escapes the newline; the Agent unescapes it");
    assert_eq!((ci[0]["alert_type"].as_str(), ci[0]["priority"].as_str()), (Some("success"), Some("low")));

    let checks: Vec<serde_json::Value> = intake
        .payloads(Some("/api/v1/check_run"))
        .iter()
        .flat_map(|p| p["body"].as_array().cloned().unwrap_or_default())
        .collect();
    let c = checks.iter().find(|c| c["check"] == "py.check").expect("py.check");
    assert_eq!((c["status"].as_i64(), c["message"].as_str()), (Some(1), Some("slow")));
    assert_eq!(c["tags"], json!(["env:test"]));
}
