//! The `edgestat run` process: everything that touches sockets, threads,
//! files, clocks or configuration, built on the pure [`crate::core`].
//!
//! `app` wires the rest: `config` is read once into settings structs;
//! `runtime` runs the glommio shards that own the sockets; `flusher` merges
//! their hand-overs and builds payloads; `forwarder` ships them. `api`
//! and `telemetry` serve the local HTTP endpoints through `http_server`.

pub mod api;
pub mod app;
pub mod batch_recv;
pub mod capture;
pub mod cgroup;
pub mod clock;
pub mod config;
pub mod cpu_set;
pub mod flusher;
pub mod forwarder;
pub mod handover;
pub mod health;
pub mod hostname;
pub mod http_server;
pub mod logging;
pub mod memory_limit;
pub mod orchestrator;
pub mod runtime;
pub mod sd_notify;
pub mod status;
pub mod tap;
pub mod telemetry;
pub mod udp_drops;
pub mod udp_standby;
