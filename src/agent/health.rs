//! Liveness of the pipeline, for `GET /health` and `edgestat health`.
//!
//! Every long-lived part (each shard, the flusher, each forwarder)
//! registers a [`Component`] and calls [`Component::beat`] while it makes
//! progress. A component is unhealthy when it has not beaten within its
//! own bound, when its thread ended, or when someone reported a fault on it
//! ([`Component::set_fault`], e.g. a shard that did not answer a flush
//! request). Everything is atomics plus one rarely-taken lock per
//! component, so beating costs a clock read and a store and the check
//! never blocks the pipeline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One watched part of the pipeline.
#[derive(Debug)]
pub struct Component {
    name: String,
    epoch: Instant,
    max_silence: Duration,
    /// Milliseconds since `epoch` of the last beat.
    last_beat_ms: AtomicU64,
    exited: AtomicBool,
    fault: Mutex<Option<String>>,
}

impl Component {
    /// Records progress now.
    pub fn beat(&self) {
        self.last_beat_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The component's thread ended (it cannot beat any more).
    pub fn exited(&self) {
        self.exited.store(true, Ordering::Relaxed);
    }

    /// Reports a problem another part noticed (it stays until cleared).
    pub fn set_fault(&self, reason: impl Into<String>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(reason.into());
        }
    }

    /// The problem reported with [`Self::set_fault`] is over.
    pub fn clear_fault(&self) {
        if let Ok(mut f) = self.fault.lock() {
            *f = None;
        }
    }

    /// The name shown in the health report (`shard-0`, `flusher`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the component is unhealthy at `now_ms` (since the epoch), if it is.
    fn problem(&self, now_ms: u64) -> Option<String> {
        if self.exited.load(Ordering::Relaxed) {
            return Some("stopped".into());
        }
        if let Some(f) = self.fault.lock().ok().and_then(|f| f.clone()) {
            return Some(f);
        }
        let silent_ms = now_ms.saturating_sub(self.last_beat_ms.load(Ordering::Relaxed));
        (silent_ms > self.max_silence.as_millis() as u64).then(|| {
            format!("no progress for {:.1}s (limit {:.1}s)", silent_ms as f64 / 1000.0, self.max_silence.as_secs_f64())
        })
    }
}

/// The process's health: the registered components and the stopping flag.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    components: Mutex<Vec<Arc<Component>>>,
    stopping: AtomicBool,
}

/// The answer of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every component is fine and the agent is not stopping.
    pub healthy: bool,
    /// One line per problem (`flusher: no progress for 31.0s (limit 30.0s)`).
    pub reasons: Vec<String>,
    /// Each component's name and `ok` or its problem, in registration order.
    pub components: Vec<(String, String)>,
}

impl Report {
    /// The short JSON body of `GET /health`.
    pub fn to_json(&self) -> String {
        let components: serde_json::Map<String, serde_json::Value> =
            self.components.iter().map(|(n, s)| (n.clone(), serde_json::Value::String(s.clone()))).collect();
        let mut v = serde_json::json!({
            "status": if self.healthy { "ok" } else { "unhealthy" },
            "components": components,
        });
        if !self.healthy {
            v["reasons"] = self.reasons.clone().into();
        }
        v.to_string()
    }
}

impl Health {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { epoch: Instant::now(), components: Mutex::new(Vec::new()), stopping: AtomicBool::new(false) })
    }

    /// Registers a component that must beat at least every `max_silence`
    /// (it counts as having beaten now).
    pub fn register(&self, name: impl Into<String>, max_silence: Duration) -> Arc<Component> {
        let c = Arc::new(Component {
            name: name.into(),
            epoch: self.epoch,
            max_silence,
            last_beat_ms: AtomicU64::new(0),
            exited: AtomicBool::new(false),
            fault: Mutex::new(None),
        });
        c.beat();
        if let Ok(mut list) = self.components.lock() {
            list.push(c.clone());
        }
        c
    }

    /// The agent is shutting down: from now on it reports unhealthy.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Checks every component now.
    pub fn check(&self) -> Report {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut reasons = Vec::new();
        if self.stopping.load(Ordering::Relaxed) {
            reasons.push("agent: stopping".to_string());
        }
        let list = self.components.lock().map(|l| l.clone()).unwrap_or_default();
        let mut components = Vec::with_capacity(list.len());
        for c in &list {
            match c.problem(now_ms) {
                Some(p) => {
                    reasons.push(format!("{}: {p}", c.name));
                    components.push((c.name.clone(), p));
                }
                None => components.push((c.name.clone(), "ok".into())),
            }
        }
        Report { healthy: reasons.is_empty(), reasons, components }
    }
}

/// What `edgestat health` found.
#[derive(Debug)]
pub enum Probe {
    /// The agent answered; `healthy` is its 200 vs anything else.
    Answered {
        /// HTTP 200.
        healthy: bool,
        /// The status code.
        status: u16,
        /// The JSON body.
        body: String,
    },
    /// No answer: one line saying why.
    Unreachable(String),
}

/// Bound on the probe's connect and on its whole read.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the answer's size (the body is a few hundred bytes).
const PROBE_MAX_BYTES: u64 = 1 << 20;

/// `GET /health` on the local API at `addr` (plain HTTP/1.1, one request).
pub fn probe(addr: SocketAddr) -> Probe {
    let unreachable =
        |e: std::io::Error| Probe::Unreachable(format!("cannot reach the agent's local API at {addr}: {e}"));
    let mut s = match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return unreachable(e),
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return unreachable(e);
    }
    let mut raw = Vec::new();
    if let Err(e) = s.take(PROBE_MAX_BYTES).read_to_end(&mut raw) {
        return unreachable(e);
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match status {
        Some(status) => Probe::Answered { healthy: status == 200, status, body: body.trim().to_string() },
        None => Probe::Unreachable(format!("the agent's local API at {addr} did not answer HTTP")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_components_are_healthy_and_faults_stopping_and_exits_are_not() {
        let h = Health::new();
        let shard = h.register("shard-0", Duration::from_secs(60));
        let flusher = h.register("flusher", Duration::from_secs(60));
        let r = h.check();
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.components, vec![("shard-0".to_string(), "ok".to_string()), ("flusher".into(), "ok".into())]);
        assert_eq!(r.to_json(), r#"{"components":{"flusher":"ok","shard-0":"ok"},"status":"ok"}"#);

        shard.set_fault("did not answer the flush request");
        let r = h.check();
        assert!(!r.healthy);
        assert_eq!(r.reasons, vec!["shard-0: did not answer the flush request".to_string()]);
        shard.clear_fault();
        assert!(h.check().healthy);

        flusher.exited();
        assert_eq!(h.check().reasons, vec!["flusher: stopped".to_string()]);

        let h = Health::new();
        h.register("flusher", Duration::from_secs(60));
        h.set_stopping();
        let r = h.check();
        assert!(!r.healthy);
        assert!(r.to_json().contains(r#""reasons":["agent: stopping"]"#), "{}", r.to_json());
    }

    #[test]
    fn a_component_silent_past_its_bound_is_unhealthy_until_it_beats() {
        let h = Health::new();
        let c = h.register("flusher", Duration::ZERO);
        // The bound is zero: any elapsed millisecond is too long.
        std::thread::sleep(Duration::from_millis(5));
        let r = h.check();
        assert!(!r.healthy);
        assert!(r.reasons[0].starts_with("flusher: no progress for "), "{r:?}");
        // A beat in the same millisecond as the check is within the bound.
        let c2 = h.register("other", Duration::from_secs(60));
        c2.beat();
        assert_eq!(h.check().components[1].1, "ok");
        let _ = c;
    }

    #[test]
    fn probe_of_a_closed_port_is_unreachable_with_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        match probe(addr) {
            Probe::Unreachable(line) => assert!(line.contains(&addr.to_string()), "{line}"),
            p => panic!("{p:?}"),
        }
    }
}
