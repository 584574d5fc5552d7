//! Backstop: surgical recovery for fleets of AI agents, on PostgreSQL.
//!
//! The database holds the guarantees (append-only log, kill switch,
//! guardrails, compensation outbox); this crate starts and migrates it, calls
//! its contract, checks and loads the registry and policy, and runs the
//! long-lived processes around it.

pub mod archive;
pub mod bench;
pub mod commands;
pub mod compensation;
pub mod config;
pub mod contract;
pub mod db;
pub mod demo;
pub mod filecheck;
pub mod housekeeping;
pub mod output;
pub mod policy;
pub mod registry;
pub mod supervisor;
pub mod tui;
