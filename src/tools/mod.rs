//! The commands besides `edgestat run`: a local Datadog-compatible intake
//! (also embedded by `run` when no endpoint is configured) and the
//! benchmark harness that drives a running agent. Tools may use the agent
//! and the core; neither imports a tool.

pub mod bench;
pub mod intake;
pub mod opsctl;
