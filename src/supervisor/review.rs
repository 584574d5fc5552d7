//! Delayed review of one executed action, after the fact: would the policy in
//! force now allow it; is its confidence too low; do the policy's checks pass;
//! does its result diverge from what was asked. Each violation is a finding
//! with the rule, the evidence and the action.

use anyhow::Result;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{Found, Raised, SupervisorStats, raise_and_act};
use crate::policy::SupervisorSettings;

pub async fn review_step(
    pool: &PgPool,
    settings: &SupervisorSettings,
    name: &str,
    batch: i32,
    stats: &mut SupervisorStats,
) -> Result<usize> {
    let lease = sqlx::postgres::types::PgInterval::try_from(std::time::Duration::from_secs_f64(
        settings.lease_seconds.max(1.0),
    ))
    .map_err(|e| anyhow::anyhow!("lease: {e}"))?;
    let claims: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT action_id, reason FROM backstop.claim_reviews($1, $2, $3)")
            .bind(name)
            .bind(batch)
            .bind(lease)
            .fetch_all(pool)
            .await?;
    for (id, reason) in &claims {
        let mut tx = pool.begin().await?;
        // A lock another session keeps on what a review acts on (an agent's
        // transaction left open on its action) is waited for 2 s at most:
        // the finding is raised and its automatic action left to a person
        // (raise_and_act), and the review's log row says so.
        sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
        let raised = review_one(&mut tx, settings, *id, reason, stats).await?;
        let findings: Vec<Value> = raised
            .iter()
            .map(|r| json!({"finding_id": r.finding_id, "kind": r.kind, "merged": r.merged, "action": r.action}))
            .collect();
        let ok: bool = sqlx::query_scalar("SELECT backstop.complete_review($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(Value::Array(findings))
            .fetch_one(&mut *tx)
            .await?;
        if ok {
            tx.commit().await?;
            stats.reviews_done += 1;
        } else {
            // Our lease ran out and someone else took the review over.
            tx.rollback().await?;
        }
    }
    Ok(claims.len())
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

pub async fn review_one(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    action_id: Uuid,
    why: &str,
    stats: &mut SupervisorStats,
) -> Result<Vec<Raised>> {
    let row = sqlx::query(
        "SELECT a.agent, a.tool, a.class, a.amount, a.confidence, a.cost_to_reverse, a.verdict, a.status,
                a.policy_version, (SELECT policy_version FROM backstop.active) AS active_version,
                p.params, x.result, p.detail ->> 'direction' AS direction, a.entity
           FROM backstop.actions a
           -- With the times, each lookup goes to one partition of the log.
           JOIN backstop.action_log p ON p.seq = a.proposed_seq AND p.at = a.proposed_at
           LEFT JOIN backstop.action_log x ON x.seq = a.executed_seq AND x.at = a.executed_at
          WHERE a.action_id = $1",
    )
    .bind(action_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Vec::new()) };
    let agent: String = row.get("agent");
    let tool: String = row.get("tool");
    let class: Option<String> = row.get("class");
    let amount: Option<Decimal> = row.get("amount");
    let confidence: Option<f32> = row.get("confidence");
    let cost: Option<Decimal> = row.get("cost_to_reverse");
    let verdict: String = row.get("verdict");
    let status: String = row.get("status");
    let judged_by: Option<i64> = row.get("policy_version");
    let active: Option<i64> = row.get("active_version");
    let params: Value = row.get::<Option<Value>, _>("params").unwrap_or(Value::Null);
    let direction: Option<String> = row.get("direction");
    let entity: Option<String> = row.get("entity");
    let result: Value = row.get::<Option<Value>, _>("result").unwrap_or(Value::Null);
    // An f32 widened to f64 prints as 0.6399999856948853; its shortest
    // decimal (0.64) is the value the agent sent.
    let said: Option<f64> = confidence.map(|c| c.to_string().parse().unwrap_or(f64::from(c)));
    let base =
        json!({"review": why, "tool": tool, "amount": amount, "confidence": said, "params": params, "result": result});
    let mut raised = Vec::new();
    let found = |kind: &'static str, severity: &'static str, extra: Value| {
        let mut e = base.clone();
        if let (Some(e), Some(x)) = (e.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                e.insert(k.clone(), v.clone());
            }
        }
        (kind, severity, e)
    };
    let mut todo = Vec::new();

    // 1. Would the policy in force now have allowed it? (Actions people
    //    approved are theirs; stateful rules would count the action twice.)
    if verdict == "allow" && status == "executed" {
        let (v, reason, rule): (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
            "SELECT (e).verdict, (e).reason, (e).rule FROM (SELECT backstop.evaluate($1, $2, $3, $4, $5, $6, $7, $8, true, $9, $10) AS e) s",
        )
        .bind(active)
        .bind(&agent)
        .bind(&tool)
        .bind(&class)
        .bind(amount)
        .bind(cost)
        .bind(confidence)
        .bind(&params)
        .bind(&direction)
        .bind(&entity)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(v) = v.filter(|v| v != "allow") {
            todo.push(found(
                "policy_violation",
                "high",
                json!({"rule": format!("policy:{}", rule.unwrap_or_default()), "verdict_now": v, "reason": reason,
                       "judged_by_version": judged_by, "active_version": active}),
            ));
        }
    }
    // 2. Confidence below what the policy reviews.
    if let (Some(c), Some(limit)) = (confidence, settings.review_all.confidence_below)
        && (c as f64) < limit
    {
        todo.push(found(
            "low_confidence",
            "medium",
            json!({"rule": "confidence_below", "limit": limit}),
        ));
    }
    // 3. The policy's own checks.
    for check in settings
        .checks
        .iter()
        .filter(|c| c.tool.as_ref().is_none_or(|t| t == &tool))
    {
        // Whoever loaded the policy wrote this query: it runs as the check
        // role (backstop_check.run), read-only, under a time limit, and
        // whatever it did is rolled back.
        sqlx::query("SAVEPOINT backstop_check").execute(&mut *conn).await?;
        sqlx::raw_sql("SET LOCAL transaction_read_only = on; SET LOCAL statement_timeout = '2s'")
            .execute(&mut *conn)
            .await?;
        // The database reads the query from the policy in force and the
        // inputs from the log: the supervisor names the check, nothing more.
        let out: Result<Option<String>, sqlx::Error> = sqlx::query_scalar("SELECT backstop.run_check($1, $2)")
            .bind(action_id)
            .bind(&check.name)
            .fetch_one(&mut *conn)
            .await;
        // A session-level advisory lock outlives the savepoint: drop any a
        // check took (the supervisor holds none of its own).
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT backstop_check; SELECT pg_advisory_unlock_all()")
            .execute(&mut *conn)
            .await?;
        match out {
            Ok(Some(message)) => {
                let kind: &'static str = crate::policy::FINDING_KINDS
                    .iter()
                    .find(|k| **k == check.kind)
                    .copied()
                    .unwrap_or("policy_violation");
                let severity: &'static str = ["info", "low", "medium", "high", "critical"]
                    .into_iter()
                    .find(|s| *s == check.severity)
                    .unwrap_or("high");
                todo.push(found(kind, severity, json!({"rule": check.name, "violation": message})));
            }
            Ok(None) => {}
            Err(e) => {
                // A broken check must not stop the review: report it and go on.
                eprintln!(
                    "backstop supervise: check {} failed on action {action_id}: {e}",
                    check.name
                );
            }
        }
    }
    // 4. A result that says something other than what was asked.
    if let (Some(p), Some(r)) = (params.as_object(), result.as_object()) {
        let diffs: Vec<Value> = p
            .iter()
            .filter_map(|(k, v)| {
                r.get(k)
                    .filter(|rv| !same(v, rv))
                    .map(|rv| json!({"field": k, "asked": v, "result": rv}))
            })
            .collect();
        if !diffs.is_empty() {
            todo.push(found(
                "sampled_divergence",
                "medium",
                json!({"rule": "result_differs", "differences": diffs}),
            ));
        }
    }
    for (kind, severity, evidence) in todo {
        let found = Found {
            kind,
            severity,
            agent: Some(&agent),
            action_id: Some(action_id),
            evidence: &evidence,
        };
        raised.push(raise_and_act(conn, settings, found, stats).await?);
    }
    Ok(raised)
}
