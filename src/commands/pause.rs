//! The kill switch: `pause`, `resume`.

use anyhow::Result;

use super::open;
use backstop::config::Config;
use backstop::contract::{self, Scope};
use backstop::output::print_json;

pub async fn pause(cfg: &Config, scope: Scope, target: Option<&str>, reason: &str) -> Result<()> {
    let db = open(cfg, "backstop pause", 1).await?;
    let p = contract::pause(&db.pool, scope, target, reason).await?;
    if cfg.json {
        print_json(&p)?;
    } else {
        let what = describe_scope(scope, target);
        if p.was_paused {
            println!(
                "{what} was already paused; pause recorded again at seq {} by {}",
                p.seq, cfg.operator
            );
        } else {
            println!(
                "{what} paused at seq {} by {}: no covered action can be allowed from now on",
                p.seq, cfg.operator
            );
        }
    }
    Ok(())
}

pub async fn resume(cfg: &Config, scope: Scope, target: Option<&str>, reason: &str) -> Result<()> {
    let db = open(cfg, "backstop resume", 1).await?;
    let seq = contract::resume(&db.pool, scope, target, reason).await?;
    if cfg.json {
        print_json(&serde_json::json!({ "seq": seq }))?;
    } else {
        println!(
            "{} resumed at seq {seq} by {}",
            describe_scope(scope, target),
            cfg.operator
        );
    }
    Ok(())
}

fn describe_scope(scope: Scope, target: Option<&str>) -> String {
    match scope {
        Scope::Fleet => "the fleet".to_string(),
        other => format!("{} {}", other.as_str(), target.unwrap_or("?")),
    }
}
