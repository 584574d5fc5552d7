//! Surgical rollback: plans (what undoing a set of actions involves, before
//! anything runs), and the workers that run the inverses exactly once.

pub mod executor;
pub mod mcp;
pub mod worker;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::contract::{self, CompensationOutcome, Result, refine};
use crate::output::{Table, cut, money};

/// What to roll back (in JSON: `{"actions": [...]}`, `{"agent_window": {...}}`
/// or `{"correlation": "..."}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    Actions(Vec<Uuid>),
    AgentWindow {
        agent: String,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    Correlation(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PlanStep {
    pub action_id: Uuid,
    /// Chosen by the selection (false: pulled in as a dependent).
    pub selected: bool,
    /// The selected or dependent action this one descends from.
    pub caused_by: Option<Uuid>,
    pub agent: String,
    pub tool: String,
    pub class: Option<String>,
    pub amount: Option<Decimal>,
    pub entity: Option<String>,
    pub correlation_id: Option<String>,
    pub status: String,
    pub executed_seq: Option<i64>,
    /// requested (will compensate), irreversible, nothing_to_undo (a read),
    /// expired, not_executed, already_requested, already_compensated, condition_failed, conflict
    pub outcome: String,
    pub detail: Option<String>,
    pub inverse_tool: Option<String>,
    pub inverse_params: Option<Value>,
    /// Which way the action's money went: "out" (the company paid) or "in".
    #[sqlx(default)]
    #[serde(default)]
    pub direction: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTotals {
    pub steps: usize,
    pub will_compensate: usize,
    pub value_recovered: Decimal,
    /// Of value_recovered: money paid out that comes back.
    #[serde(default)]
    pub recovered_out: Decimal,
    /// Of value_recovered: money taken in that goes back to whoever paid it.
    #[serde(default)]
    pub recovered_in: Decimal,
    pub value_not_recoverable: Decimal,
    pub entities_touched: usize,
    pub dependents: usize,
    /// Actions of read-only tools the selection reached: they changed
    /// nothing, so the plan leaves them out and only counts them.
    #[serde(default)]
    pub read_only: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub selection: Selection,
    /// Reverse order of execution: the order the inverses will run in.
    pub steps: Vec<PlanStep>,
    pub totals: PlanTotals,
}

/// The class of tools that only read.
pub const READ_CLASS: &str = "read";

/// The line a plan adds for the reads it left out (`None`: there were none).
pub fn read_only_line(t: &PlanTotals) -> Option<String> {
    match t.read_only {
        0 => None,
        1 => Some("1 read-only action needs no undo".into()),
        n => Some(format!("{n} read-only actions need no undo")),
    }
}

/// Where a request's outcomes differ from the plan a person was shown (the
/// database decides again when it records the request: another operator or
/// a closing window may have changed a step since).
pub fn differences(shown: &[(Uuid, String)], got: &[CompensationOutcome]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, was) in shown {
        match got.iter().find(|o| o.action_id == *id) {
            Some(o) if o.outcome == *was => {}
            Some(o) => out.push(format!(
                "{} was {}, now {}",
                &id.to_string()[..8],
                outcome_label(was),
                outcome_label(&o.outcome)
            )),
            None => out.push(format!(
                "{} was {}, not in the request",
                &id.to_string()[..8],
                outcome_label(was)
            )),
        }
    }
    for o in got.iter().filter(|o| !shown.iter().any(|(id, _)| *id == o.action_id)) {
        out.push(format!(
            "{} was not shown, now {}",
            &o.action_id.to_string()[..8],
            outcome_label(&o.outcome)
        ));
    }
    out
}

/// The seed actions of a selection.
pub async fn seeds(pool: &PgPool, sel: &Selection) -> Result<Vec<Uuid>> {
    match sel {
        Selection::Actions(ids) => Ok(ids.clone()),
        Selection::AgentWindow { agent, since, until } => sqlx::query_scalar(
            "SELECT action_id FROM backstop.actions WHERE agent = $1 AND proposed_at >= $2 AND proposed_at <= $3",
        )
        .bind(agent)
        .bind(since)
        .bind(until)
        .fetch_all(pool)
        .await
        .map_err(refine),
        Selection::Correlation(c) => {
            sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE correlation_id = $1")
                .bind(c)
                .fetch_all(pool)
                .await
                .map_err(refine)
        }
    }
}

/// Build the plan; changes nothing.
pub async fn plan(pool: &PgPool, sel: &Selection) -> Result<Plan> {
    let seeds = seeds(pool, sel).await?;
    if let Selection::Actions(ids) = sel {
        let known: Vec<Uuid> = sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE action_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .map_err(refine)?;
        if let Some(missing) = ids.iter().find(|i| !known.contains(i)) {
            return Err(contract::ContractError::Refused {
                code: "P0002".into(),
                message: format!("compensate: unknown action_id {missing}"),
                hint: None,
            });
        }
    }
    let mut steps: Vec<PlanStep> = sqlx::query_as("SELECT * FROM backstop.compensation_plan($1)")
        .bind(&seeds)
        .fetch_all(pool)
        .await
        .map_err(refine)?;
    // A read changed nothing: listing it as irreversible would ask a person
    // to remediate what needs no undo, and requesting it would log it so.
    let before = steps.len();
    steps.retain(|s| s.class.as_deref() != Some(READ_CLASS));
    let mut totals = totals(&steps);
    totals.read_only = before - steps.len();
    Ok(Plan {
        selection: sel.clone(),
        steps,
        totals,
    })
}

fn totals(steps: &[PlanStep]) -> PlanTotals {
    let mut t = PlanTotals {
        steps: steps.len(),
        will_compensate: 0,
        value_recovered: Decimal::ZERO,
        recovered_out: Decimal::ZERO,
        recovered_in: Decimal::ZERO,
        value_not_recoverable: Decimal::ZERO,
        entities_touched: 0,
        dependents: steps.iter().filter(|s| !s.selected).count(),
        read_only: 0,
    };
    let mut entities = BTreeSet::new();
    for s in steps {
        let v = s.amount.unwrap_or_default();
        match s.outcome.as_str() {
            "requested" => {
                t.will_compensate += 1;
                t.value_recovered += v;
                match s.direction.as_deref() {
                    Some("out") => t.recovered_out += v,
                    Some("in") => t.recovered_in += v,
                    _ => {}
                }
            }
            "irreversible" | "expired" | "condition_failed" | "conflict" => t.value_not_recoverable += v,
            _ => {}
        }
        if s.status == "executed"
            && let Some(e) = &s.entity
        {
            entities.insert(e.clone());
        }
    }
    t.entities_touched = entities.len();
    t
}

/// Request every step of a plan as one unit, with who asked and why.
pub async fn request(pool: &PgPool, plan: &Plan, reason: &str) -> Result<(Uuid, Vec<CompensationOutcome>)> {
    let plan_id = Uuid::new_v4();
    let ids: Vec<Uuid> = plan.steps.iter().map(|s| s.action_id).collect();
    if ids.is_empty() {
        return Ok((plan_id, Vec::new()));
    }
    let out = contract::request_compensation(pool, &ids, reason, Some(plan_id)).await?;
    Ok((plan_id, out))
}

/// " (money out: $X back; money in: $Y returned)" when the registry gave directions.
pub fn directions(t: &PlanTotals) -> String {
    if t.recovered_out.is_zero() && t.recovered_in.is_zero() {
        return String::new();
    }
    format!(
        " (money out: {} comes back; money in: {} goes back to payers)",
        money(Some(t.recovered_out)),
        money(Some(t.recovered_in))
    )
}

pub fn outcome_label(o: &str) -> &str {
    match o {
        "requested" => "will compensate",
        "irreversible" => "IRREVERSIBLE",
        "nothing_to_undo" => "nothing to undo",
        "expired" => "window expired",
        "not_executed" => "not executed",
        "already_requested" => "already requested",
        "already_compensated" => "already compensated",
        other => other,
    }
}

/// The plan for people: one line per step, then totals.
pub fn render(plan: &Plan) -> String {
    let mut t = Table::new(&["#", "action", "agent", "tool", "amount", "outcome", "via", "detail"]);
    for (i, s) in plan.steps.iter().enumerate() {
        let via = if s.selected {
            "selected".to_string()
        } else {
            format!(
                "dependent of {}",
                s.caused_by.map(|c| c.to_string()[..8].to_string()).unwrap_or_default()
            )
        };
        let detail = match (&s.outcome[..], &s.inverse_tool) {
            ("requested", Some(inv)) => format!(
                "{inv} {}",
                cut(
                    &s.inverse_params.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                    60
                )
            ),
            _ => s.detail.clone().unwrap_or_default(),
        };
        t.row(vec![
            (i + 1).to_string(),
            s.action_id.to_string()[..8].to_string(),
            s.agent.clone(),
            s.tool.clone(),
            money(s.amount),
            outcome_label(&s.outcome).to_string(),
            via,
            detail,
        ]);
    }
    let tt = &plan.totals;
    let reads = read_only_line(tt).map(|l| format!("{l}\n")).unwrap_or_default();
    format!(
        "{}\n{} step(s), {} to compensate ({} pulled in as dependents); value recovered {}{}, not recoverable {}; {} customer(s)/entities touched\n{reads}",
        t.render(),
        tt.steps,
        tt.will_compensate,
        tt.dependents,
        money(Some(tt.value_recovered)),
        directions(tt),
        money(Some(tt.value_not_recoverable)),
        tt.entities_touched
    )
}
