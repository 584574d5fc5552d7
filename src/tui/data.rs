//! The room's reads: one place for its database I/O. Every query here is
//! small (projections, rollups, one action's history), so the room costs the
//! same on a log of ten million rows as on ten thousand.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::state::{AgentRow, CompRow, Detail, Dists, FindingRow, HeldRow, Snapshot, Switch};
use crate::contract::{self, Scope};
use crate::output::money;
use crate::supervisor::drift;

pub async fn snapshot(pool: &PgPool) -> Result<Snapshot> {
    let (_, settings) = crate::policy::active_supervisor(pool).await?;
    let d = &settings.drift;
    let now = Utc::now();
    let recent_start = now - chrono::Duration::milliseconds((d.recent_seconds * 1000.0) as i64);
    let baseline_start = recent_start - chrono::Duration::milliseconds((d.baseline_seconds * 1000.0) as i64);

    let counts: Vec<(String, bool, String, i64)> = sqlx::query_as("SELECT * FROM backstop.drift_counts($1, $2)")
        .bind(baseline_start)
        .bind(recent_start)
        .fetch_all(pool)
        .await?;
    let mut windows: HashMap<String, drift::Windows> = HashMap::new();
    for (agent, recent, key, n) in counts {
        let w = windows.entry(agent).or_default();
        *(if recent { &mut w.1 } else { &mut w.0 }).entry(key).or_insert(0) += n.max(0) as u64;
    }
    // Activity per bucket over the last 15 buckets.
    let spark_start = now - chrono::Duration::milliseconds((d.bucket_seconds * 15_000.0) as i64);
    let activity: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT r.agent, r.bucket, coalesce(sum(k.value::bigint), 0)::bigint
           FROM backstop.rollups r
           LEFT JOIN LATERAL jsonb_each_text(r.counts) k ON k.key LIKE 'verdict:%'
          WHERE r.bucket >= $1 GROUP BY 1, 2 ORDER BY 2",
    )
    .bind(spark_start)
    .fetch_all(pool)
    .await?;
    let approvals: Vec<HeldRow> = sqlx::query(
        "SELECT q.action_id, q.agent, q.tool, q.amount, q.rule, q.reason, q.approvals, q.approvals_needed, q.held_at, q.expires_at,
                array(SELECT p.approver FROM backstop.approvals p WHERE p.action_id = q.action_id AND p.decision = 'approved' ORDER BY p.seq) AS by
           FROM backstop.approval_queue q ORDER BY q.held_at LIMIT 1000",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| HeldRow {
        action_id: r.get("action_id"),
        agent: r.get("agent"),
        tool: r.get("tool"),
        amount: r.get("amount"),
        rule: r.get("rule"),
        reason: r.get("reason"),
        approvals: r.get("approvals"),
        approvals_needed: r.get("approvals_needed"),
        approved_by: r.get("by"),
        held_at: r.get("held_at"),
        expires_at: r.get("expires_at"),
    })
    .collect();
    let findings: Vec<FindingRow> = sqlx::query_as(
        "SELECT finding_id, kind, severity, agent, action_id, rule, status, count, last_at, detail
           FROM backstop.findings WHERE status <> 'resolved' ORDER BY last_at DESC LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    let comps: Vec<CompRow> = sqlx::query(
        "SELECT action_id, agent, tool, inverse_tool, status, attempts, worker, reason, requested_by, requested_at,
                last_detail ->> 'error' AS last_error
           FROM backstop.compensations ORDER BY requested_seq DESC LIMIT 500",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| CompRow {
        action_id: r.get("action_id"),
        agent: r.get("agent"),
        tool: r.get("tool"),
        inverse_tool: r.get("inverse_tool"),
        status: r.get("status"),
        attempts: r.get("attempts"),
        worker: r.get("worker"),
        reason: r.get("reason"),
        requested_by: r.get("requested_by"),
        requested_at: r.get("requested_at"),
        last_error: r.get("last_error"),
    })
    .collect();
    let switches: Vec<Switch> = sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT scope, target, changed_by, reason FROM backstop.kill_switches WHERE paused ORDER BY changed_seq",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(scope, target, by, reason)| {
        Ok(Switch {
            scope: scope.parse()?,
            target,
            by,
            reason,
        })
    })
    .collect::<Result<_>>()?;
    let (policy_version, registry_version): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT policy_version, registry_version FROM backstop.active")
            .fetch_one(pool)
            .await?;

    // Every agent anyone should see: active lately, held, paused, or with findings.
    let mut agents: Vec<String> = windows.keys().cloned().collect();
    agents.extend(activity.iter().map(|a| a.0.clone()));
    agents.extend(approvals.iter().map(|h| h.agent.clone()));
    agents.extend(findings.iter().filter_map(|f| f.agent.clone()));
    agents.extend(
        switches
            .iter()
            .filter(|s| s.scope == Scope::Agent)
            .map(|s| s.target.clone()),
    );
    agents.sort();
    agents.dedup();
    let mut fleet = Vec::new();
    let mut dists = HashMap::new();
    for agent in agents {
        let mut per_bucket: Vec<u64> = vec![0; 15];
        for (a, bucket, n) in activity.iter().filter(|x| x.0 == agent) {
            let idx = ((*bucket - spark_start).num_milliseconds() as f64 / (d.bucket_seconds * 1000.0)).floor() as i64;
            if (0..15).contains(&idx) {
                per_bucket[idx as usize] += (*n).max(0) as u64;
            }
            let _ = a;
        }
        let (b, r) = windows.get(&agent).cloned().unwrap_or_default();
        let a = drift::assess_with(&b, &r, d.min_samples as u64, d.threshold);
        let recent_n: u64 = r
            .iter()
            .filter(|(k, _)| k.starts_with("verdict:"))
            .map(|(_, v)| v)
            .sum();
        if !b.is_empty() || !r.is_empty() {
            dists.insert(agent.clone(), dists_of(&agent, &b, &r));
        }
        let held: Vec<&HeldRow> = approvals.iter().filter(|h| h.agent == agent).collect();
        fleet.push(AgentRow {
            paused: switches
                .iter()
                .find(|s| s.scope == Scope::Agent && s.target == agent)
                .map(|s| (s.by.clone(), s.reason.clone())),
            per_bucket,
            per_minute: recent_n as f64 * 60.0 / d.recent_seconds.max(1.0),
            held: held.len() as i64,
            held_value: held.iter().filter_map(|h| h.amount).sum::<Decimal>(),
            findings: findings
                .iter()
                .filter(|f| f.agent.as_deref() == Some(&agent) && f.status == "open")
                .count() as i64,
            drift: a.map(|a| a.score),
            agent,
        });
    }
    Ok(Snapshot {
        fleet,
        dists,
        approvals,
        findings,
        comps,
        switches,
        policy_version,
        registry_version,
    })
}

fn dists_of(agent: &str, b: &BTreeMap<String, u64>, r: &BTreeMap<String, u64>) -> Dists {
    let mut dims: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    let total = |m: &BTreeMap<String, u64>, dim: &str| {
        m.iter()
            .filter(|(k, _)| k.starts_with(&format!("{dim}:")))
            .map(|(_, v)| *v)
            .sum::<u64>()
            .max(1) as f64
    };
    for dim in drift::DIMENSIONS {
        let (tb, tr) = (total(b, dim), total(r, dim));
        let prefix = format!("{dim}:");
        let mut cats: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (k, v) in b.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            cats.entry(k[prefix.len()..].to_string()).or_default().0 = *v as f64 / tb;
        }
        for (k, v) in r.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            cats.entry(k[prefix.len()..].to_string()).or_default().1 = *v as f64 / tr;
        }
        if !cats.is_empty() {
            dims.insert(dim.to_string(), cats);
        }
    }
    let n = |m: &BTreeMap<String, u64>| {
        m.iter()
            .filter(|(k, _)| k.starts_with("verdict:"))
            .map(|(_, v)| *v)
            .sum()
    };
    Dists {
        agent: agent.to_string(),
        dims,
        baseline_n: n(b),
        recent_n: n(r),
    }
}

fn pretty(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "(none)".into(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// The whole record of one action.
pub async fn detail(pool: &PgPool, id: Uuid) -> Result<Detail> {
    let history = contract::action_history(pool, id).await?;
    let a = sqlx::query("SELECT * FROM backstop.actions WHERE action_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let mut lines: Vec<(String, String)> = Vec::new();
    let Some(a) = a else {
        lines.push(("action".into(), format!("{id} is not in the actions projection")));
        return Ok(Detail { action_id: id, lines });
    };
    let proposal = history.iter().find(|r| r.kind.is_decision());
    let executed = history.iter().rev().find(|r| r.kind.is_result());
    let agent: String = a.get("agent");
    let tool: String = a.get("tool");
    lines.push(("action".into(), id.to_string()));
    lines.push((
        "agent / tool".into(),
        format!(
            "{agent} / {tool} ({})",
            a.get::<Option<String>, _>("class")
                .unwrap_or_else(|| "unknown tool".into())
        ),
    ));
    lines.push(("status".into(), a.get::<String, _>("status")));
    lines.push((
        "value".into(),
        format!(
            "amount {}  confidence {}  cost to reverse {}",
            money(a.get("amount")),
            a.get::<Option<f32>, _>("confidence")
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "none".into()),
            money(a.get("cost_to_reverse"))
        ),
    ));
    lines.push((
        "verdict".into(),
        format!(
            "{}: {} (rule {}; policy v{}, registry v{})",
            a.get::<String, _>("verdict"),
            a.get::<String, _>("reason"),
            a.get::<Option<String>, _>("rule").unwrap_or_else(|| "-".into()),
            a.get::<Option<i64>, _>("policy_version").unwrap_or(0),
            a.get::<Option<i64>, _>("registry_version").unwrap_or(0)
        ),
    ));
    if let Some(p) = proposal {
        lines.push((
            "reasoning".into(),
            p.reasoning.clone().unwrap_or_else(|| "(none given)".into()),
        ));
        lines.push(("inputs".into(), pretty(&p.inputs)));
        lines.push(("params".into(), pretty(&p.params)));
    }
    lines.push(("result".into(), pretty(&executed.and_then(|e| e.result.clone()))));
    let corr: Option<String> = a.get("correlation_id");
    let parent: Option<Uuid> = a.get("parent_action");
    lines.push(("correlation".into(), corr.clone().unwrap_or_else(|| "(none)".into())));
    lines.push((
        "parent".into(),
        parent.map(|p| p.to_string()).unwrap_or_else(|| "(none)".into()),
    ));
    let related: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT action_id, agent, tool, status FROM backstop.actions
          WHERE action_id <> $1 AND (parent_action = $1 OR ($2::text IS NOT NULL AND correlation_id = $2))
          ORDER BY proposed_seq LIMIT 50",
    )
    .bind(id)
    .bind(&corr)
    .fetch_all(pool)
    .await?;
    lines.push((
        "dependents / same correlation".into(),
        if related.is_empty() {
            "(none)".into()
        } else {
            related
                .iter()
                .map(|(i, ag, t, st)| format!("{i} {ag} {t} {st}"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    ));
    let inverse: Option<String> = a.get("inverse_tool");
    let comp = sqlx::query("SELECT status, attempts, worker, reason, requested_by, last_detail FROM backstop.compensations WHERE action_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let staged = match &inverse {
        Some(inv) => format!(
            "staged: {inv} {}",
            a.get::<Option<Value>, _>("inverse_params")
                .map(|v| v.to_string())
                .unwrap_or_default()
        ),
        None => match a.get::<Option<Vec<String>>, _>("inverse_missing") {
            Some(m) => format!("cannot be staged: missing {}", m.join(", ")),
            None => "none (not reversible, or not executed)".into(),
        },
    };
    let comp_state = match comp {
        Some(c) => format!(
            "{}\n{} (attempt {}, worker {}) requested by {}: {}{}",
            staged,
            c.get::<String, _>("status"),
            c.get::<i32, _>("attempts"),
            c.get::<Option<String>, _>("worker").unwrap_or_else(|| "-".into()),
            c.get::<String, _>("requested_by"),
            c.get::<String, _>("reason"),
            c.get::<Option<Value>, _>("last_detail")
                .map(|d| format!("\nlast: {d}"))
                .unwrap_or_default()
        ),
        None => staged,
    };
    lines.push(("compensation".into(), comp_state));
    let mut hist = Vec::new();
    for r in &history {
        let seal: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT s.seal_no, backstop.row_digest(l) FROM backstop.action_log l
               LEFT JOIN backstop.seals s ON l.seq = ANY (s.seqs)
              WHERE l.seq = $1 ORDER BY s.seal_no LIMIT 1",
        )
        .bind(r.seq)
        .fetch_optional(pool)
        .await?
        .and_then(|(n, d): (Option<i64>, Vec<u8>)| n.map(|n| (n, d)));
        let hash = match seal {
            Some((n, d)) => format!("sealed in seal {n}, sha256 {}", &hex::encode(d)[..16]),
            None => "not sealed yet".into(),
        };
        hist.push(format!(
            "{} {} {:<22} by {:<14} {}",
            r.seq,
            r.at.format("%H:%M:%S"),
            r.kind,
            r.actor,
            hash
        ));
    }
    lines.push(("history".into(), hist.join("\n")));
    Ok(Detail { action_id: id, lines })
}
