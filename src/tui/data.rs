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

use super::state::{
    APPROVALS_SHOWN, ActionDetail, AgentRow, CardInfo, CompRow, CompensationState, Detail, Dists, FindingRow, HeldRow,
    HistoryEntry, Proposed, Related, Snapshot, Switch,
};
use crate::contract::{self, ActionStatus, Scope};
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
    // Why drift used to decay to 0 while an agent stayed shifted: both
    // windows slide, so once the shift is older than the recent window it
    // fills the baseline too and the two agree. While a drift finding is
    // unresolved, its agent is compared with the baseline before the window
    // that raised it (when that baseline still has enough decisions).
    let pinned: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT agent, min(raised_at) FROM backstop.findings
          WHERE kind = 'drift' AND status <> 'resolved' AND agent IS NOT NULL GROUP BY agent",
    )
    .fetch_all(pool)
    .await?;
    let recent_len = now - recent_start;
    let baseline_len = recent_start - baseline_start;
    let mut pinned_since: HashMap<String, DateTime<Utc>> = HashMap::new();
    for (agent, raised) in pinned {
        let end = raised - recent_len;
        let keys: Vec<(String, i64)> = sqlx::query_as(
            "SELECT k.key, sum(k.value::bigint)::bigint
               FROM backstop.rollups r, jsonb_each_text(r.counts) k
              WHERE r.agent = $1 AND r.bucket >= $2 AND r.bucket < $3 GROUP BY 1",
        )
        .bind(&agent)
        .bind(end - baseline_len)
        .bind(end)
        .fetch_all(pool)
        .await?;
        let base: BTreeMap<String, u64> = keys.into_iter().map(|(k, n)| (k, n.max(0) as u64)).collect();
        let decisions: u64 = base
            .iter()
            .filter(|(k, _)| k.starts_with("verdict:"))
            .map(|(_, n)| n)
            .sum();
        if decisions >= d.min_samples as u64 {
            windows.entry(agent.clone()).or_default().0 = base;
            pinned_since.insert(agent, raised);
        }
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
           FROM backstop.approval_queue q ORDER BY q.amount DESC NULLS LAST, q.held_at, q.action_id LIMIT $1",
    )
    .bind(APPROVALS_SHOWN)
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
    // The count and value of every held action, and per agent, from the
    // database: the list above is only the highest.
    let held_by_agent: Vec<(String, i64, Decimal)> =
        sqlx::query_as("SELECT agent, count(*), coalesce(sum(amount), 0) FROM backstop.approval_queue GROUP BY agent")
            .fetch_all(pool)
            .await?;
    let held_count: i64 = held_by_agent.iter().map(|h| h.1).sum();
    let held_sum: Decimal = held_by_agent.iter().map(|h| h.2).sum();
    let mut findings: Vec<FindingRow> = sqlx::query_as(
        "SELECT finding_id, kind, severity, agent, action_id, rule, status, count, last_at, detail
           FROM backstop.findings WHERE status <> 'resolved'
          ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END,
                   last_at DESC
          LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    mark_automatic(pool, &mut findings).await?;
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

    // The names a pause may target without asking. The agents of the
    // actions by a skip scan of (agent, proposed_at): one probe per agent.
    let known_agents = sqlx::query_scalar::<_, String>(
        "WITH RECURSIVE a(agent) AS (
             (SELECT agent FROM backstop.actions ORDER BY agent LIMIT 1)
             UNION ALL
             SELECT (SELECT x.agent FROM backstop.actions x WHERE x.agent > a.agent ORDER BY x.agent LIMIT 1)
               FROM a WHERE a.agent IS NOT NULL)
         SELECT agent FROM (SELECT agent FROM a WHERE agent IS NOT NULL LIMIT 100000) k
         UNION SELECT agent FROM backstop.agent_logins",
    )
    .fetch_all(pool)
    .await
    .ok()
    .map(|v| v.into_iter().collect());
    let known_tools = sqlx::query_scalar::<_, String>("SELECT DISTINCT name FROM backstop.tools")
        .fetch_all(pool)
        .await
        .ok()
        .map(|v| v.into_iter().collect());
    // Every agent anyone should see: active lately, held, paused, or with findings.
    let mut agents: Vec<String> = windows.keys().cloned().collect();
    agents.extend(activity.iter().map(|a| a.0.clone()));
    agents.extend(held_by_agent.iter().map(|h| h.0.clone()));
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
            let mut di = dists_of(&agent, &b, &r);
            di.baseline_before = pinned_since.get(&agent).copied();
            dists.insert(agent.clone(), di);
        }
        let held = held_by_agent.iter().find(|h| h.0 == agent);
        fleet.push(AgentRow {
            paused: switches
                .iter()
                .find(|s| s.scope == Scope::Agent && s.target == agent)
                .map(|s| (s.by.clone(), s.reason.clone())),
            per_bucket,
            per_minute: recent_n as f64 * 60.0 / d.recent_seconds.max(1.0),
            held: held.map(|h| h.1).unwrap_or(0),
            held_value: held.map(|h| h.2).unwrap_or_default(),
            findings: findings
                .iter()
                .filter(|f| f.agent.as_deref() == Some(&agent) && f.status == "open")
                .count() as i64,
            drift: a.map(|a| a.score),
            drift_since: pinned_since.get(&agent).copied(),
            agent,
        });
    }
    Ok(Snapshot {
        fleet,
        dists,
        approvals,
        held_count,
        held_sum,
        findings,
        comps,
        switches,
        policy_version,
        registry_version,
        known_agents,
        known_tools,
    })
}

/// Say on each finding what the supervisor did about it by itself. Its pause
/// and its compensation requests carry the finding's id in their reason
/// (`supervisor: KIND finding ID (RULE)`), which is how they are found.
pub async fn mark_automatic(pool: &PgPool, findings: &mut [FindingRow]) -> Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = findings.iter().map(|f| f.finding_id).collect();
    let paused: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT x.fid, k.scope || ' ' || k.target
           FROM backstop.kill_switches k,
                LATERAL (SELECT substring(k.reason FROM 'finding ([0-9a-f-]{36})')::uuid AS fid) x
          WHERE k.paused AND k.reason LIKE 'supervisor: %' AND x.fid = ANY ($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    // Only compensations requested since the oldest listed finding was raised.
    let comps: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT x.fid, c.status, count(*)
           FROM backstop.compensations c,
                LATERAL (SELECT substring(c.reason FROM 'finding ([0-9a-f-]{36})')::uuid AS fid) x
          WHERE c.requested_seq >= (SELECT coalesce(min(f.raised_seq), 0) FROM backstop.findings f WHERE f.finding_id = ANY ($1))
            AND c.reason LIKE 'supervisor: %' AND x.fid = ANY ($1)
          GROUP BY 1, 2",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for f in findings.iter_mut() {
        let mut said = Vec::new();
        if paused.iter().any(|p| p.0 == f.finding_id) {
            said.push("auto-paused".to_string());
        }
        let mine: Vec<&(Uuid, String, i64)> = comps.iter().filter(|c| c.0 == f.finding_id).collect();
        if !mine.is_empty() {
            let total: i64 = mine.iter().map(|c| c.2).sum();
            let done: i64 = mine.iter().filter(|c| c.1 == "compensated").map(|c| c.2).sum();
            let bad = mine
                .iter()
                .any(|c| matches!(c.1.as_str(), "failed" | "conflict" | "condition_failed" | "expired"));
            said.push(if bad {
                "auto-comp. failed".to_string()
            } else if done == total {
                "auto-compensated".to_string()
            } else {
                format!("auto-comp. {done}/{total}")
            });
        }
        if !said.is_empty() {
            f.auto = Some(said.join(", "));
        }
    }
    Ok(())
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
        baseline_before: None,
    }
}

#[derive(sqlx::FromRow)]
struct ActionRow {
    agent: String,
    tool: String,
    class: Option<String>,
    status: ActionStatus,
    amount: Option<Decimal>,
    confidence: Option<f32>,
    cost_to_reverse: Option<Decimal>,
    verdict: String,
    reason: String,
    rule: Option<String>,
    policy_version: Option<i64>,
    registry_version: Option<i64>,
    correlation_id: Option<String>,
    parent_action: Option<Uuid>,
    proposed_seq: i64,
    executed_seq: Option<i64>,
    inverse_tool: Option<String>,
    inverse_params: Option<Value>,
    inverse_missing: Option<Vec<String>>,
}

/// The whole record of one action.
pub async fn detail(pool: &PgPool, id: Uuid) -> Result<Detail> {
    let history = contract::action_history(pool, id).await?;
    let a: Option<ActionRow> = sqlx::query_as(
        "SELECT agent, tool, class, status, amount, confidence, cost_to_reverse, verdict, reason, rule, policy_version,
                registry_version, correlation_id, parent_action, proposed_seq, executed_seq, inverse_tool, inverse_params,
                inverse_missing
           FROM backstop.actions WHERE action_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(a) = a else {
        return Ok(Detail {
            action_id: id,
            action: None,
        });
    };
    // The projection says which rows are the proposal and the result.
    let proposal = history.iter().find(|r| r.seq == a.proposed_seq).map(|p| Proposed {
        reasoning: p.reasoning.clone(),
        inputs: p.inputs.clone(),
        params: p.params.clone(),
    });
    let result = a
        .executed_seq
        .and_then(|seq| history.iter().find(|r| r.seq == seq))
        .and_then(|r| r.result.clone());
    let related: Vec<(Uuid, String, String, ActionStatus)> = sqlx::query_as(
        "SELECT action_id, agent, tool, status FROM backstop.actions
          WHERE action_id <> $1 AND (parent_action = $1 OR ($2::text IS NOT NULL AND correlation_id = $2))
          ORDER BY proposed_seq LIMIT 50",
    )
    .bind(id)
    .bind(&a.correlation_id)
    .fetch_all(pool)
    .await?;
    let compensation: Option<CompensationState> = sqlx::query_as(
        "SELECT status, attempts, worker, requested_by, reason, last_detail FROM backstop.compensations WHERE action_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let seqs: Vec<i64> = history.iter().map(|r| r.seq).collect();
    let seals: HashMap<i64, (i64, Vec<u8>)> = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(
        "SELECT l.seq, s.seal_no, backstop.row_digest(l)
           FROM backstop.action_log l
           JOIN (SELECT x.seq, min(s.seal_no) AS seal_no
                   FROM backstop.seals s, unnest(s.seqs) x(seq)
                  WHERE s.seqs && $1 AND x.seq = ANY ($1)
                  GROUP BY x.seq) s ON s.seq = l.seq
          WHERE l.seq = ANY ($1)",
    )
    .bind(&seqs)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(seq, seal_no, digest)| (seq, (seal_no, digest)))
    .collect();
    let history = history
        .into_iter()
        .map(|r| HistoryEntry {
            seal: seals.get(&r.seq).cloned(),
            seq: r.seq,
            at: r.at,
            kind: r.kind,
            actor: r.actor,
        })
        .collect();
    Ok(Detail {
        action_id: id,
        action: Some(ActionDetail {
            agent: a.agent,
            tool: a.tool,
            class: a.class,
            status: a.status,
            amount: a.amount,
            confidence: a.confidence,
            cost_to_reverse: a.cost_to_reverse,
            verdict: a.verdict.parse()?,
            reason: a.reason,
            rule: a.rule,
            policy_version: a.policy_version,
            registry_version: a.registry_version,
            proposal,
            result,
            correlation_id: a.correlation_id,
            parent_action: a.parent_action,
            related: related
                .into_iter()
                .map(|(action_id, agent, tool, status)| Related {
                    action_id,
                    agent,
                    tool,
                    status,
                })
                .collect(),
            inverse_tool: a.inverse_tool,
            inverse_params: a.inverse_params,
            inverse_missing: a.inverse_missing,
            compensation,
            history,
        }),
    })
}

/// Marks from the database rather than from the rows the room holds: every
/// action of an agent proposed since a time, optionally of one tool (an index
/// on (agent, proposed_at) answers it).
pub async fn actions_of(pool: &PgPool, agent: &str, since: DateTime<Utc>, tool: Option<&str>) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT action_id FROM backstop.actions
          WHERE agent = $1 AND proposed_at >= $2 AND ($3::text IS NULL OR tool = $3)
          ORDER BY proposed_at LIMIT 100000",
    )
    .bind(agent)
    .bind(since)
    .bind(tool)
    .fetch_all(pool)
    .await?)
}

/// What the agent said about an action, for its approval card: the action's
/// row and its proposal's log row (one partition, by the proposal's time).
pub async fn card(pool: &PgPool, id: Uuid) -> Result<CardInfo> {
    let row = sqlx::query(
        "SELECT a.class, a.confidence, a.correlation_id, p.reasoning, p.inputs, p.params
           FROM backstop.actions a
           LEFT JOIN backstop.action_log p ON p.seq = a.proposed_seq AND p.at = a.proposed_at
          WHERE a.action_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        anyhow::bail!("action {id} is not in the actions projection");
    };
    Ok(CardInfo {
        class: r.try_get("class")?,
        confidence: r.try_get("confidence")?,
        reasoning: r.try_get("reasoning")?,
        inputs: r.try_get("inputs")?,
        params: r.try_get("params")?,
        correlation_id: r.try_get("correlation_id")?,
    })
}
