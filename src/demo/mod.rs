//! The demo: simulated business systems, a fleet of agents, scripted
//! incidents (`scenario`), the drill (`drill`), the load generator
//! (`fleet`, via `simulate`), and the short contract walkthrough (`script`).

pub mod drill;
pub mod fleet;
pub mod scenario;
pub mod script;

use anyhow::{Context, Result};
use sqlx::PgPool;

const SYSTEMS_SQL: &str = include_str!("systems.sql");

/// The demo's own registry and policy, built into the binary: the demo and
/// the benchmarks never read a file for them, so they run from any directory
/// and can never put the demo's tools in place of a team's.
pub const TOOLS_TOML: &str = include_str!("../../assets/demo/tools.toml");
pub const POLICY_TOML: &str = include_str!("../../assets/demo/policy.toml");
/// How the demo's files are named in messages and in the log.
pub const TOOLS_LABEL: &str = "demo:tools.toml";
pub const POLICY_LABEL: &str = "demo:policy.toml";

/// The demo's registry, checked.
pub fn registry() -> Result<crate::registry::Registry> {
    crate::registry::parse(TOOLS_LABEL, TOOLS_TOML)
        .map_err(|issues| anyhow::anyhow!("{TOOLS_LABEL} is invalid: {}", issues[0]))
}

/// The demo's policy (its text possibly rewritten, as the demo's clock does), checked.
pub fn policy(reg: &crate::registry::Registry, label: &str, text: &str) -> Result<crate::policy::Policy> {
    crate::policy::parse(label, text, Some(reg)).map_err(|issues| anyhow::anyhow!("{label} is invalid: {}", issues[0]))
}

/// Create (or update) the simulated business systems' schemas.
pub async fn install_systems(pool: &PgPool) -> Result<()> {
    // One installer at a time: CREATE OR REPLACE of the same function races.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(1112757340, 0)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SYSTEMS_SQL)
        .execute(&mut *tx)
        .await
        .context("installing the demo's business systems")?;
    tx.commit().await?;
    Ok(())
}

/// `backstop demo --script`: the short scripted walkthrough, the log it produced, and its verification.
pub async fn run_script(cfg: &crate::config::Config) -> Result<()> {
    let db = crate::db::Db::open(&cfg.db_simulated("backstop demo", 4)).await?;
    eprintln!("backstop: database {}", db.label);
    let outcome = script::run(&db).await?;
    let rows = crate::contract::recent_log(&db.pool, 200).await?;
    let report = crate::contract::verify::verify(&db.pool, true, true).await?;
    if cfg.json {
        crate::output::print_json(&serde_json::json!({ "story": outcome.lines, "log": rows, "verify": report }))?;
    } else {
        println!("The story:");
        for l in &outcome.lines {
            println!("  {l}");
        }
        println!("\nThe action log:");
        print!("{}", crate::output::render_log(&rows));
        println!();
        print!("{}", crate::output::render_verify(&report));
    }
    if !report.ok {
        anyhow::bail!("the log did not verify");
    }
    Ok(())
}
