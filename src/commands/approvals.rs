//! Held actions: `approve`, `reject`.

use anyhow::Result;

use super::{open, parse_uuid};
use backstop::config::Config;
use backstop::contract;
use backstop::output::print_json;

pub async fn approve(cfg: &Config, id: &str, note: &str) -> Result<()> {
    let id = parse_uuid(id)?;
    let db = open(cfg, "backstop approve", 1).await?;
    let a = contract::approve(&db.pool, id, note).await?;
    if cfg.json {
        print_json(&a)?;
    } else if a.verdict == contract::Verdict::Allow {
        println!(
            "approved by {}: action {id} is allowed ({} of {} approvals)",
            cfg.operator, a.approvals, a.approvals_needed
        );
    } else {
        println!(
            "approved by {}: action {id} still needs {} more approval(s) from someone else",
            cfg.operator,
            a.approvals_needed - a.approvals
        );
    }
    Ok(())
}

pub async fn reject(cfg: &Config, id: &str, reason: &str) -> Result<()> {
    let id = parse_uuid(id)?;
    let db = open(cfg, "backstop reject", 1).await?;
    contract::reject(&db.pool, id, reason).await?;
    if cfg.json {
        print_json(&serde_json::json!({ "action_id": id, "verdict": "block" }))?;
    } else {
        println!("rejected by {}: action {id} is blocked", cfg.operator);
    }
    Ok(())
}
