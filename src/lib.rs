//! Backstop: surgical recovery for fleets of AI agents, on PostgreSQL.
//!
//! The database holds the guarantees (append-only log, kill switch,
//! guardrails, compensation outbox); this crate starts and migrates it, calls
//! its contract, checks and loads the registry and policy, and runs the
//! long-lived processes around it. The command line (`commands`) and the
//! benchmarks (`bench`) are modules of the `backstop` binary, not of this library.

pub mod archive;
pub mod compensation;
pub mod config;
pub mod contract;
pub mod db;
// The demo is the binary's, but the integration tests drive its scenarios and
// build their fixtures (the simulated business systems, the sample registry
// and policy) with it, and tests/ can only reach the library.
#[doc(hidden)]
pub mod demo;
pub mod filecheck;
pub mod housekeeping;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod policy;
pub mod registry;
pub mod supervisor;
pub mod tui;
