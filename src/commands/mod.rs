//! What each CLI subcommand does, one file per group of commands. `main.rs`
//! only parses arguments and calls these; each returns an error whose message
//! is the one line the user sees. Nothing below the CLI imports from here.

mod access;
mod admin;
mod approvals;
mod archive;
mod compensate;
mod findings;
mod fleet;
mod ledger;
mod mcp;
mod pause;
mod supervise;

use anyhow::{Context, Result, bail};
use uuid::Uuid;

use backstop::config::Config;
use backstop::db::Db;

pub use access::{grant, roles};
pub use admin::{check, init, init_from_mcp, load, migrate};
pub use approvals::{approve, reject};
pub use archive::{archive, verify_archive};
pub use compensate::{CompensateArgs, compensate, worker};
pub use findings::{finding_status, findings};
pub use fleet::{drill, simulate};
pub use ledger::{log, seal, verify, verify_replica};
pub use mcp::mcp;
pub use pause::{pause, resume};
pub use supervise::supervise;

pub async fn open(cfg: &Config, app: &str, max_connections: u32) -> Result<Db> {
    Db::open(&cfg.db(app, max_connections)).await
}

pub fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim())
        .with_context(|| format!("{s:?} is not an action id (a UUID like 0b4f5c1e-8d2a-4c8e-9f3a-2d6e7b1c9a40)"))
}

/// A point in time: RFC 3339 (2026-11-28T12:00:00Z), "now", or a duration ago (15m, 2h).
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    if s == "now" {
        return Ok(chrono::Utc::now());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match backstop::filecheck::parse_duration(s) {
        Ok(secs) => chrono::Duration::try_milliseconds((secs * 1000.0) as i64)
            .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
            .ok_or_else(|| anyhow::anyhow!("{s:?} ago is before any time this program can name")),
        Err(_) => {
            bail!("{s:?} is not a time: use RFC 3339 (2026-11-28T12:00:00Z), now, or a duration ago like 15m or 2h")
        }
    }
}
