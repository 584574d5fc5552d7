//! Held actions: `approve`, `reject`.

use anyhow::{Context, Result, bail};
use rust_decimal::Decimal;

use super::{open, parse_uuid};
use backstop::config::Config;
use backstop::contract;
use backstop::output::print_json;

/// A held action as the approval queue has it: agent, tool, amount, the
/// reason it was held, approvals needed and given so far.
type Held = (String, String, Option<Decimal>, Option<String>, i32, i32);

/// `backstop approve ID`: says what it approves and runs the policy's
/// checks on it first, as the room's approval card does. A check that fails
/// now (or cannot run) stops the approval, nothing changed, unless
/// `--over-failing-checks` says to go on; then the approval's note in the
/// log names the checks it went over.
pub async fn approve(cfg: &Config, id: &str, note: &str, over_failing_checks: bool) -> Result<()> {
    let id = parse_uuid(id)?;
    let db = open(cfg, "backstop approve", 1).await?;
    let held: Option<Held> = sqlx::query_as(
        "SELECT q.agent, q.tool, q.amount, q.reason, q.approvals_needed, q.approvals
           FROM backstop.approval_queue q WHERE q.action_id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    // Not held (unknown, decided, expired): the contract refuses, and says
    // which. Nothing to run the checks on, so nothing is approved here.
    let Some((agent, tool, amount, reason, needed, so_far)) = held else {
        let known: Option<String> = sqlx::query_scalar("SELECT status FROM backstop.actions WHERE action_id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?;
        match known {
            None => bail!("no action {id}: nothing was approved"),
            Some(status) => bail!("action {id} is not held (it is {status}): nothing was approved"),
        }
    };
    let checks = contract::precheck(&db.pool, id)
        .await
        .with_context(|| format!("the checks on action {id} could not be run; nothing was approved"))?;
    let failing: Vec<&contract::CheckResult> = checks
        .iter()
        .filter(|c| c.message.is_some() || c.error.is_some())
        .collect();
    let what = format!(
        "{tool} of {} by {agent} ({so_far} of {needed} approvals; held: {})",
        amount.map(|a| a.to_string()).unwrap_or_else(|| "no amount".into()),
        reason.as_deref().unwrap_or("")
    );
    let said = |c: &contract::CheckResult| match (&c.message, &c.error) {
        (Some(m), _) => format!("  \u{2717} {} ({}): {m}", c.name, c.severity),
        (None, Some(e)) => format!("  ? {} could not run: {e}", c.name),
        _ => String::new(),
    };
    if !failing.is_empty() && !over_failing_checks {
        let lines: Vec<String> = failing.iter().map(|c| said(c)).collect();
        bail!(
            "not approved: {} check(s) fail on {what}:\n{}\nNothing changed. To approve anyway, run it again with --over-failing-checks (the log's note names them).",
            failing.len(),
            lines.join("\n")
        );
    }
    let note = if failing.is_empty() {
        note.to_string()
    } else {
        let names: Vec<&str> = failing.iter().map(|c| c.name.as_str()).collect();
        format!("{note} [approved over failing checks: {}]", names.join(", "))
            .trim()
            .to_string()
    };
    let a = contract::approve(&db.pool, id, &note).await?;
    if cfg.json {
        return print_json(&serde_json::json!({
            "action_id": id,
            "verdict": a.verdict,
            "approvals": a.approvals,
            "approvals_needed": a.approvals_needed,
            "checks": checks,
            "over_failing_checks": !failing.is_empty(),
        }));
    }
    println!("{what}");
    if failing.is_empty() {
        println!("  checks: {} passed", checks.len());
    } else {
        for c in &failing {
            println!("{} (approved over it)", said(c));
        }
    }
    if a.verdict == contract::Verdict::Allow {
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
