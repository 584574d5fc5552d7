//! A short scripted story through the SQL contract: an action allowed, one
//! held and approved by two people, one blocked by the fleet pause, and a
//! surgical compensation; then the log and its verification.

use anyhow::{Context, Result};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::contract::{self, Proposal, Scope, Verdict};
use crate::db::Db;
use crate::{policy, registry};

/// Load the registry and policy files into the database.
pub async fn load_config(pool: &PgPool, tools: &std::path::Path, policy_path: &std::path::Path) -> Result<()> {
    let reg = registry::read(tools).map_err(|issues| {
        anyhow::anyhow!(
            "{} is invalid: {}",
            tools.display(),
            issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; ")
        )
    })?;
    let pol = policy::read(policy_path, Some(&reg)).map_err(|issues| {
        anyhow::anyhow!(
            "{} is invalid: {}",
            policy_path.display(),
            issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; ")
        )
    })?;
    let mut tx = pool.begin().await?;
    registry::sync(&mut *tx, &reg, &tools.display().to_string()).await?;
    policy::sync(&mut *tx, &pol, &policy_path.display().to_string()).await?;
    tx.commit().await?;
    Ok(())
}

/// Load the demo's own registry and policy (built in), both or neither.
pub async fn load_demo_config(pool: &PgPool) -> Result<()> {
    let reg = super::registry()?;
    let pol = super::policy(&reg, super::POLICY_LABEL, super::POLICY_TOML)?;
    let mut tx = pool.begin().await?;
    registry::sync(&mut *tx, &reg, super::TOOLS_LABEL).await?;
    policy::sync(&mut *tx, &pol, super::POLICY_LABEL).await?;
    tx.commit().await?;
    Ok(())
}

/// Customers, a suppression list and contracts for the script to act on.
pub async fn seed_small(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql(
        "INSERT INTO crm.customers (customer_id, name, email, tier) VALUES
           ('c-1001', 'Ada Lovelace', 'ada@example.com', 'gold'),
           ('c-1002', 'Grace Hopper', 'grace@example.com', 'standard'),
           ('c-1003', 'Alan Turing', 'alan@example.com', 'standard')
         ON CONFLICT DO NOTHING;
         INSERT INTO crm.suppression_list VALUES ('c-1003', 'churned') ON CONFLICT DO NOTHING;
         INSERT INTO payments.accounts VALUES ('c-1001', 0), ('c-1002', 0) ON CONFLICT DO NOTHING;",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Run a forward tool in the demo systems and record its result.
async fn execute(pool: &PgPool, agent: &str, function: &str, action: uuid::Uuid, params: &Value) -> Result<Value> {
    let result: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {function}($1, $2)")))
        .bind(params)
        .bind(agent)
        .fetch_one(pool)
        .await?;
    contract::record_result(pool, action, true, Some(&result), None).await?;
    Ok(result)
}

pub struct ScriptOutcome {
    pub lines: Vec<String>,
}

pub async fn run(db: &Db) -> Result<ScriptOutcome> {
    let pool = &db.pool;
    super::install_systems(pool).await?;
    seed_small(pool).await?;
    load_demo_config(pool)
        .await
        .context("loading the registry and policy")?;
    let ana = db.as_operator("ana", 2).await?;
    let bob = db.as_operator("bob", 2).await?;
    let mut lines = Vec::new();

    // 1. An ordinary refund: allowed, executed, compensation staged.
    let p1 = json!({"customer_id": "c-1001", "amount": 120, "order_id": "o-5521", "reason": "damaged"});
    let d1 = contract::propose(
        pool,
        &Proposal {
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            params: p1.clone(),
            confidence: Some(0.93),
            reasoning: Some("Order o-5521 arrived damaged; photos attached; policy allows a full refund.".into()),
            correlation_id: Some("ticket-8812".into()),
            ..Default::default()
        },
    )
    .await?;
    lines.push(format!(
        "refund-bot  issue_refund $120      -> {} ({})",
        d1.verdict, d1.reason
    ));
    execute(pool, "refund-bot", "payments.issue_refund", d1.action_id, &p1).await?;

    // 2. A large refund with low confidence: held, two approvers.
    let p2 = json!({"customer_id": "c-1002", "amount": 47000, "order_id": "o-5530", "reason": "goodwill"});
    let d2 = contract::propose(
        pool,
        &Proposal {
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            params: p2.clone(),
            confidence: Some(0.62),
            reasoning: Some("Customer threatened to churn; matching their claimed lifetime spend.".into()),
            correlation_id: Some("ticket-8840".into()),
            ..Default::default()
        },
    )
    .await?;
    lines.push(format!(
        "refund-bot  issue_refund $47,000   -> {} ({})",
        d2.verdict, d2.reason
    ));
    let a = contract::approve(&ana.pool, d2.action_id, "customer is strategic").await?;
    lines.push(format!(
        "ana approves                      -> {} of {} approvals",
        a.approvals, a.approvals_needed
    ));
    let b = contract::approve(&bob.pool, d2.action_id, "agreed").await?;
    lines.push(format!(
        "bob approves                      -> {} ({} of {})",
        b.verdict, b.approvals, b.approvals_needed
    ));
    let (v, reason) = contract::decision(pool, d2.action_id).await?;
    lines.push(format!("refund-bot asks decision()        -> {v} ({reason})"));
    if v == Verdict::Allow {
        execute(pool, "refund-bot", "payments.issue_refund", d2.action_id, &p2).await?;
    }

    // 3. The fleet is paused: nothing is allowed until it resumes.
    contract::pause(&ana.pool, Scope::Fleet, None, "investigating the $47,000 refund").await?;
    let d3 = contract::propose(
        pool,
        &Proposal {
            agent: "outreach-bot".into(),
            tool: "send_email".into(),
            params: json!({"customer_id": "c-1001", "to": "ada@example.com", "subject": "We're sorry"}),
            confidence: Some(0.97),
            ..Default::default()
        },
    )
    .await?;
    lines.push(format!(
        "ana pauses the fleet; outreach-bot send_email -> {} ({})",
        d3.verdict, d3.reason
    ));

    // 4. Surgical rollback of the one bad refund; the other stays.
    let outcomes = contract::request_compensation(
        &ana.pool,
        &[d2.action_id],
        "refund not owed: customer is not entitled",
        None,
    )
    .await?;
    for o in &outcomes {
        lines.push(format!(
            "ana requests compensation         -> {} ({})",
            o.outcome,
            o.detail.clone().unwrap_or_default()
        ));
    }
    let claims = contract::claim_compensations(pool, "worker-1", None, 10, std::time::Duration::from_secs(30)).await?;
    for c in claims {
        let r: Value = sqlx::query_scalar("SELECT payments.reverse_refund($1, $2)")
            .bind(&c.inverse_params)
            .bind(c.action_id)
            .fetch_one(pool)
            .await?;
        let status = contract::finish_compensation(pool, c.action_id, "worker-1", true, &r).await?;
        lines.push(format!("worker-1 runs {} -> {status}", c.inverse_tool));
    }
    contract::resume(&ana.pool, Scope::Fleet, None, "bad refund reversed; fleet safe").await?;
    lines.push("ana resumes the fleet".into());

    let balances: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT customer_id, balance FROM payments.accounts ORDER BY 1")
            .fetch_all(pool)
            .await?;
    for (c, b) in balances {
        lines.push(format!("balance {c}: {}", crate::output::money(Some(b))));
    }
    Ok(ScriptOutcome { lines })
}
