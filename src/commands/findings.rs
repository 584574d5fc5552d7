//! What the supervisor found: `findings`, `ack`, `resolve`.

use anyhow::{Context, Result};
use uuid::Uuid;

use super::open;
use backstop::config::Config;
use backstop::contract;
use backstop::output::{Table, print_json, time};
use backstop::tui::state::FindingRow;

pub async fn findings(cfg: &Config, all: bool) -> Result<()> {
    let db = open(cfg, "backstop findings", 1).await?;
    let mut rows: Vec<FindingRow> = sqlx::query_as(
        "SELECT finding_id, kind, severity, agent, action_id, rule, status, count, last_at, detail FROM backstop.findings \
          WHERE $1 OR status <> 'resolved' ORDER BY last_at DESC LIMIT 500",
    )
    .bind(all)
    .fetch_all(&db.pool)
    .await?;
    backstop::tui::data::mark_automatic(&db.pool, &mut rows).await?;
    if cfg.json {
        return print_json(&rows);
    }
    let mut t = Table::new(&["finding", "kind", "severity", "agent", "rule", "status", "seen", "last"]);
    for r in &rows {
        t.row(vec![
            r.finding_id.to_string(),
            r.kind.clone(),
            r.severity.clone(),
            r.agent.clone().unwrap_or_default(),
            r.rule.clone().unwrap_or_default(),
            r.status_label(),
            r.count.to_string(),
            time(r.last_at),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub async fn finding_status(cfg: &Config, id: &str, note: &str, resolve: bool) -> Result<()> {
    let id = Uuid::parse_str(id.trim()).with_context(|| format!("{id:?} is not a finding id (a UUID)"))?;
    let db = open(cfg, "backstop findings", 1).await?;
    if resolve {
        contract::resolve_finding(&db.pool, id, note).await?;
    } else {
        contract::acknowledge_finding(&db.pool, id, note).await?;
    }
    if cfg.json {
        print_json(
            &serde_json::json!({"finding_id": id, "status": if resolve { "resolved" } else { "acknowledged" }}),
        )?;
    } else {
        println!(
            "finding {id} {} by {}",
            if resolve { "resolved" } else { "acknowledged" },
            cfg.operator
        );
    }
    Ok(())
}
