//! Typed Rust calls of the SQL contract (schema `backstop`). The SQL lives in
//! `sql/` (one file per concept); this module only calls it, so a client in any language has
//! exactly the same guarantees.

mod events;
pub mod gateway;
pub mod roles;
pub mod tail;
pub mod verify;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

pub use events::{
    ActionStatus, CHANNELS, COMPENSATIONS_CHANNEL, CONTROL_CHANNEL, ControlEvent, DECISIONS_CHANNEL, EventKind,
    NotifyError, UnknownValue, decision_key,
};

/// An error from the contract: bad input or a refused state change (with the
/// database's message, which names the function and the argument), or a
/// failure to reach the database.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{message}")]
    Refused {
        code: String,
        message: String,
        hint: Option<String>,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database answered with a value this build does not know (a newer schema?).
    #[error("unexpected answer from the database: {0}")]
    Unknown(#[from] UnknownValue),
}

impl ContractError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ContractError::Refused { code, .. } => Some(code),
            ContractError::Database(e) => e.as_database_error().and_then(|d| d.code()).map(|c| match c {
                std::borrow::Cow::Borrowed(s) => s,
                std::borrow::Cow::Owned(_) => "",
            }),
            ContractError::Unknown(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ContractError>;

/// Turn a database error raised by a contract function into `Refused`.
pub fn refine(e: sqlx::Error) -> ContractError {
    if let Some(db) = e.as_database_error() {
        let code = db.code().map(|c| c.to_string()).unwrap_or_default();
        // 22xxx data exceptions, 42501 refusals, 55000 wrong state, P0002 unknown id, 25000 isolation.
        if code.starts_with("22") || code == "42501" || code == "55000" || code == "P0002" || code == "25000" {
            let hint = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.hint().map(str::to_string));
            return ContractError::Refused {
                code,
                message: db.message().to_string(),
                hint,
            };
        }
    }
    ContractError::Database(e)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Hold,
    Block,
}

impl FromStr for Verdict {
    type Err = UnknownValue;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownValue> {
        match s {
            "allow" => Ok(Verdict::Allow),
            "hold" => Ok(Verdict::Hold),
            "block" => Ok(Verdict::Block),
            other => Err(UnknownValue {
                what: "verdict",
                value: other.to_string(),
                expected: &["allow", "hold", "block"],
            }),
        }
    }
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Hold => "hold",
            Verdict::Block => "block",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent asks to do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub agent: String,
    pub tool: String,
    pub params: Value,
    pub amount: Option<Decimal>,
    pub confidence: Option<f32>,
    pub reasoning: Option<String>,
    pub inputs: Option<Value>,
    pub correlation_id: Option<String>,
    pub parent_action: Option<Uuid>,
    pub idempotency_key: Option<String>,
    /// Earlier actions this one depends on: a rollback of one of them plans
    /// this one too (a correlation id only groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub action_id: Uuid,
    pub verdict: Verdict,
    pub reason: String,
}

pub async fn propose<'e, E: PgExecutor<'e>>(ex: E, p: &Proposal) -> Result<Decision> {
    let row: (Uuid, String, String) = sqlx::query_as(
        "SELECT action_id, verdict, reason FROM backstop.propose($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&p.agent)
    .bind(&p.tool)
    .bind(&p.params)
    .bind(p.amount)
    .bind(p.confidence)
    .bind(&p.reasoning)
    .bind(&p.inputs)
    .bind(&p.correlation_id)
    .bind(p.parent_action)
    .bind(&p.idempotency_key)
    .bind((!p.depends_on.is_empty()).then_some(&p.depends_on))
    .fetch_one(ex)
    .await
    .map_err(refine)?;
    Ok(Decision {
        action_id: row.0,
        verdict: row.1.parse()?,
        reason: row.2,
    })
}

/// The current verdict of an action (for held actions: hold until decided).
pub async fn decision<'e, E: PgExecutor<'e>>(ex: E, action_id: Uuid) -> Result<(Verdict, String)> {
    let row: (String, String) = sqlx::query_as("SELECT verdict, reason FROM backstop.decision($1)")
        .bind(action_id)
        .fetch_one(ex)
        .await
        .map_err(refine)?;
    Ok((row.0.parse()?, row.1))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recorded {
    pub status: String,
    /// `staged`, `none`, or `unbound: <missing inverse parameters>`.
    pub compensation: String,
}

pub async fn record_result<'e, E: PgExecutor<'e>>(
    ex: E,
    action_id: Uuid,
    ok: bool,
    result: Option<&Value>,
    inverse_params: Option<&Value>,
) -> Result<Recorded> {
    let row: (String, String) =
        sqlx::query_as("SELECT status, compensation FROM backstop.record_result($1, $2, $3, $4)")
            .bind(action_id)
            .bind(ok)
            .bind(result)
            .bind(inverse_params)
            .fetch_one(ex)
            .await
            .map_err(refine)?;
    Ok(Recorded {
        status: row.0,
        compensation: row.1,
    })
}

/// `propose_batch`'s request for one proposal: propose()'s arguments by
/// name, the ones not given left out.
fn proposal_json(p: &Proposal) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("agent".into(), Value::from(p.agent.as_str()));
    o.insert("tool".into(), Value::from(p.tool.as_str()));
    o.insert("params".into(), p.params.clone());
    // As text: the contract reads it as a number, with no float on the way.
    if let Some(a) = p.amount {
        o.insert("amount".into(), Value::from(a.to_string()));
    }
    if let Some(c) = p.confidence {
        o.insert("confidence".into(), Value::from(c));
    }
    let text = [
        ("reasoning", &p.reasoning),
        ("correlation_id", &p.correlation_id),
        ("idempotency_key", &p.idempotency_key),
    ];
    for (k, v) in text {
        if let Some(v) = v {
            o.insert(k.into(), Value::from(v.as_str()));
        }
    }
    if let Some(i) = &p.inputs {
        o.insert("inputs".into(), i.clone());
    }
    if let Some(a) = p.parent_action {
        o.insert("parent_action".into(), Value::from(a.to_string()));
    }
    if !p.depends_on.is_empty() {
        o.insert(
            "depends_on".into(),
            Value::from(p.depends_on.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
        );
    }
    Value::Object(o)
}

/// Many proposals in one call and one transaction (`propose_batch`): the
/// decisions in the proposals' order. All or nothing: one refused proposal
/// refuses the batch, naming it by index, and nothing is written.
pub async fn propose_batch<'e, E: PgExecutor<'e>>(ex: E, ps: &[&Proposal]) -> Result<Vec<Decision>> {
    let requests = Value::Array(ps.iter().map(|p| proposal_json(p)).collect());
    let rows: Vec<(i32, Uuid, String, String)> =
        sqlx::query_as("SELECT i, action_id, verdict, reason FROM backstop.propose_batch($1) ORDER BY i")
            .bind(&requests)
            .fetch_all(ex)
            .await
            .map_err(refine)?;
    rows.into_iter()
        .map(|(_, action_id, verdict, reason)| {
            Ok(Decision {
                action_id,
                verdict: verdict.parse()?,
                reason,
            })
        })
        .collect()
}

/// One action's outcome, as `record_result` takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub action_id: Uuid,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inverse_params: Option<Value>,
}

/// `record_results`' argument.
fn outcomes_json(outcomes: &[&Outcome]) -> Result<Value> {
    serde_json::to_value(outcomes).map_err(|e| ContractError::Refused {
        code: "22023".into(),
        message: format!("record_results: {e}"),
        hint: None,
    })
}

/// Many outcomes in one call and one transaction (`record_results`), all or
/// nothing as `propose_batch`.
pub async fn record_results<'e, E: PgExecutor<'e>>(ex: E, outcomes: &[&Outcome]) -> Result<Vec<Recorded>> {
    let results = outcomes_json(outcomes)?;
    let rows: Vec<(i32, String, String)> =
        sqlx::query_as("SELECT i, status, compensation FROM backstop.record_results($1) ORDER BY i")
            .bind(&results)
            .fetch_all(ex)
            .await
            .map_err(refine)?;
    Ok(rows
        .into_iter()
        .map(|(_, status, compensation)| Recorded { status, compensation })
        .collect())
}

/// Proposals and outcomes in one statement and one transaction (what the
/// gateway sends): `propose_batch` and `record_results` together, all or
/// nothing.
pub async fn batch<'e, E: PgExecutor<'e>>(
    ex: E,
    ps: &[&Proposal],
    outcomes: &[&Outcome],
) -> Result<(Vec<Decision>, Vec<Recorded>)> {
    if outcomes.is_empty() {
        return Ok((propose_batch(ex, ps).await?, Vec::new()));
    }
    if ps.is_empty() {
        return Ok((Vec::new(), record_results(ex, outcomes).await?));
    }
    let requests = Value::Array(ps.iter().map(|p| proposal_json(p)).collect());
    let results = outcomes_json(outcomes)?;
    let rows: Vec<(i32, i32, Option<Uuid>, String, String)> = sqlx::query_as(
        "SELECT 0 AS part, i, action_id, verdict, reason FROM backstop.propose_batch($1)
         UNION ALL
         SELECT 1, i, NULL, status, compensation FROM backstop.record_results($2)
         ORDER BY 1, 2",
    )
    .bind(&requests)
    .bind(&results)
    .fetch_all(ex)
    .await
    .map_err(refine)?;
    let mut decisions = Vec::with_capacity(ps.len());
    let mut recorded = Vec::with_capacity(outcomes.len());
    for (part, _, action_id, a, b) in rows {
        match (part, action_id) {
            (0, Some(action_id)) => decisions.push(Decision {
                action_id,
                verdict: a.parse()?,
                reason: b,
            }),
            _ => recorded.push(Recorded {
                status: a,
                compensation: b,
            }),
        }
    }
    Ok((decisions, recorded))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    pub verdict: Verdict,
    pub approvals: i32,
    pub approvals_needed: i32,
}

pub async fn approve<'e, E: PgExecutor<'e>>(ex: E, action_id: Uuid, note: &str) -> Result<Approval> {
    let row: (String, i32, i32) =
        sqlx::query_as("SELECT verdict, approvals, approvals_needed FROM backstop.approve($1, $2)")
            .bind(action_id)
            .bind(note)
            .fetch_one(ex)
            .await
            .map_err(refine)?;
    Ok(Approval {
        verdict: row.0.parse()?,
        approvals: row.1,
        approvals_needed: row.2,
    })
}

/// One of the supervisor's checks run now on a held action
/// (`backstop.precheck`): `message` when it fails, `error` when the check
/// itself could not run, neither when it passed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CheckResult {
    pub name: String,
    pub kind: String,
    pub severity: String,
    pub message: Option<String>,
    pub error: Option<String>,
}

/// The supervisor's checks on a held action, run now (`backstop.precheck`),
/// in a read-only transaction under a 2 s statement timeout: nothing they do
/// stays, and they cost the caller two seconds at most.
pub async fn precheck(pool: &sqlx::PgPool, id: Uuid) -> Result<Vec<CheckResult>> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<CheckResult> =
        sqlx::query_as("SELECT name, kind, severity, message, error FROM backstop.precheck($1)")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(refine)?;
    tx.rollback().await?;
    Ok(rows)
}

pub async fn reject<'e, E: PgExecutor<'e>>(ex: E, action_id: Uuid, note: &str) -> Result<()> {
    sqlx::query("SELECT verdict FROM backstop.reject($1, $2)")
        .bind(action_id)
        .bind(note)
        .fetch_one(ex)
        .await
        .map_err(refine)?;
    Ok(())
}

/// Held actions past their expiry take the policy's expiry effect.
pub async fn expire_held<'e, E: PgExecutor<'e>>(ex: E) -> Result<i32> {
    sqlx::query_scalar("SELECT backstop.expire_held()")
        .fetch_one(ex)
        .await
        .map_err(refine)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Fleet,
    Agent,
    Tool,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Fleet => "fleet",
            Scope::Agent => "agent",
            Scope::Tool => "tool",
        }
    }
}

impl FromStr for Scope {
    type Err = UnknownValue;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownValue> {
        match s {
            "fleet" => Ok(Scope::Fleet),
            "agent" => Ok(Scope::Agent),
            "tool" => Ok(Scope::Tool),
            other => Err(UnknownValue {
                what: "scope",
                value: other.to_string(),
                expected: &["fleet", "agent", "tool"],
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Paused {
    pub seq: i64,
    pub was_paused: bool,
}

pub async fn pause<'e, E: PgExecutor<'e>>(ex: E, scope: Scope, target: Option<&str>, reason: &str) -> Result<Paused> {
    let row: (i64, bool) = sqlx::query_as("SELECT seq, was_paused FROM backstop.pause($1, $2, $3)")
        .bind(scope.as_str())
        .bind(target)
        .bind(reason)
        .fetch_one(ex)
        .await
        .map_err(refine)?;
    Ok(Paused {
        seq: row.0,
        was_paused: row.1,
    })
}

pub async fn resume<'e, E: PgExecutor<'e>>(ex: E, scope: Scope, target: Option<&str>, reason: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT backstop.resume($1, $2, $3)")
        .bind(scope.as_str())
        .bind(target)
        .bind(reason)
        .fetch_one(ex)
        .await
        .map_err(refine)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignalTrace {
    pub seq: i64,
    pub agent: Option<String>,
    pub action_id: Option<Uuid>,
}

pub async fn report_signal<'e, E: PgExecutor<'e>>(
    ex: E,
    kind: &str,
    agent: Option<&str>,
    correlation_id: Option<&str>,
    detail: Option<&Value>,
) -> Result<SignalTrace> {
    let row: (i64, Option<String>, Option<Uuid>) =
        sqlx::query_as("SELECT seq, traced_agent, traced_action FROM backstop.report_signal($1, $2, $3, $4)")
            .bind(kind)
            .bind(agent)
            .bind(correlation_id)
            .bind(detail)
            .fetch_one(ex)
            .await
            .map_err(refine)?;
    Ok(SignalTrace {
        seq: row.0,
        agent: row.1,
        action_id: row.2,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompensationOutcome {
    pub action_id: Uuid,
    /// requested, irreversible, nothing_to_undo (a read), expired,
    /// not_executed, already_requested, already_compensated,
    /// condition_failed, conflict
    pub outcome: String,
    pub detail: Option<String>,
}

pub async fn request_compensation<'e, E: PgExecutor<'e>>(
    ex: E,
    action_ids: &[Uuid],
    reason: &str,
    plan_id: Option<Uuid>,
) -> Result<Vec<CompensationOutcome>> {
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT action_id, outcome, detail FROM backstop.request_compensation($1, $2, $3)")
            .bind(action_ids)
            .bind(reason)
            .bind(plan_id)
            .fetch_all(ex)
            .await
            .map_err(refine)?;
    Ok(rows
        .into_iter()
        .map(|(action_id, outcome, detail)| CompensationOutcome {
            action_id,
            outcome,
            detail,
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Claim {
    pub action_id: Uuid,
    pub agent: String,
    pub tool: String,
    pub inverse_tool: String,
    pub inverse_params: Value,
    pub deadline: Option<DateTime<Utc>>,
    pub condition: Option<String>,
    pub attempt: i32,
    pub lease_until: DateTime<Utc>,
    /// A dependent whose compensation ended without success: this one must not run.
    pub blocked_by: Option<Uuid>,
}

pub async fn claim_compensations<'e, E: PgExecutor<'e>>(
    ex: E,
    worker: &str,
    tools: Option<&[String]>,
    max: i32,
    lease: std::time::Duration,
) -> Result<Vec<Claim>> {
    let lease = sqlx::postgres::types::PgInterval::try_from(lease).map_err(|e| ContractError::Refused {
        code: "22023".into(),
        message: format!("claim_compensations: lease: {e}"),
        hint: None,
    })?;
    sqlx::query_as("SELECT * FROM backstop.claim_compensations($1, $2, $3, $4)")
        .bind(worker)
        .bind(tools)
        .bind(max)
        .bind(lease)
        .fetch_all(ex)
        .await
        .map_err(refine)
}

pub async fn finish_compensation<'e, E: PgExecutor<'e>>(
    ex: E,
    action_id: Uuid,
    worker: &str,
    ok: bool,
    detail: &Value,
) -> Result<String> {
    sqlx::query_scalar("SELECT status FROM backstop.finish_compensation($1, $2, $3, $4)")
        .bind(action_id)
        .bind(worker)
        .bind(ok)
        .bind(detail)
        .fetch_one(ex)
        .await
        .map_err(refine)
}

/// Record many outcomes in one round trip. Each is answered with its new
/// status, or `lease_lost` when this worker no longer held it.
pub async fn finish_compensations<'e, E: PgExecutor<'e>>(
    ex: E,
    worker: &str,
    results: &[(Uuid, bool, Value)],
) -> Result<Vec<(Uuid, String)>> {
    let arr: Vec<Value> = results
        .iter()
        .map(|(id, ok, detail)| serde_json::json!({"action_id": id, "ok": ok, "detail": detail}))
        .collect();
    sqlx::query_as("SELECT action_id, status FROM backstop.finish_compensations($1, $2)")
        .bind(worker)
        .bind(Value::Array(arr))
        .fetch_all(ex)
        .await
        .map_err(refine)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingRaised {
    pub finding_id: Uuid,
    pub merged: bool,
}

pub async fn raise_finding<'e, E: PgExecutor<'e>>(
    ex: E,
    kind: &str,
    severity: &str,
    agent: Option<&str>,
    action_id: Option<Uuid>,
    detail: &Value,
) -> Result<FindingRaised> {
    let row: (Uuid, bool) = sqlx::query_as("SELECT finding_id, merged FROM backstop.raise_finding($1, $2, $3, $4, $5)")
        .bind(kind)
        .bind(severity)
        .bind(agent)
        .bind(action_id)
        .bind(detail)
        .fetch_one(ex)
        .await
        .map_err(refine)?;
    Ok(FindingRaised {
        finding_id: row.0,
        merged: row.1,
    })
}

pub async fn acknowledge_finding<'e, E: PgExecutor<'e>>(ex: E, finding_id: Uuid, note: &str) -> Result<()> {
    sqlx::query("SELECT status FROM backstop.acknowledge_finding($1, $2)")
        .bind(finding_id)
        .bind(note)
        .fetch_one(ex)
        .await
        .map_err(refine)?;
    Ok(())
}

pub async fn resolve_finding<'e, E: PgExecutor<'e>>(ex: E, finding_id: Uuid, note: &str) -> Result<()> {
    sqlx::query("SELECT status FROM backstop.resolve_finding($1, $2)")
        .bind(finding_id)
        .bind(note)
        .fetch_one(ex)
        .await
        .map_err(refine)?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Seal {
    pub seal_no: i64,
    pub rows: i32,
    pub complete: bool,
}

/// Seal what committed since the last seal (a no-op when another process is sealing).
pub async fn seal<'e, E: PgExecutor<'e>>(ex: E, max_rows: i32) -> Result<Option<Seal>> {
    let row: Option<(i64, i32, bool)> = sqlx::query_as("SELECT seal_no, row_count, complete FROM backstop.seal($1)")
        .bind(max_rows)
        .fetch_optional(ex)
        .await
        .map_err(refine)?;
    Ok(row.map(|(seal_no, rows, complete)| Seal {
        seal_no,
        rows,
        complete,
    }))
}

/// Seal everything committed so far, in as many seals as it takes.
pub async fn seal_all(pool: &sqlx::PgPool) -> Result<Vec<Seal>> {
    let mut out = Vec::new();
    while let Some(s) = seal(pool, 20_000).await? {
        let done = s.complete;
        out.push(s);
        if done {
            break;
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Loaded {
    pub version: i64,
    pub changed: bool,
    pub summary: Value,
}

pub async fn load_registry<'e, E: PgExecutor<'e>>(ex: E, doc: &Value, sha256: &str, source: &str) -> Result<Loaded> {
    let row: (i64, bool, Value) =
        sqlx::query_as("SELECT version, changed, summary FROM backstop.load_registry($1, $2, $3)")
            .bind(doc)
            .bind(sha256)
            .bind(source)
            .fetch_one(ex)
            .await
            .map_err(refine)?;
    Ok(Loaded {
        version: row.0,
        changed: row.1,
        summary: row.2,
    })
}

pub async fn load_policy<'e, E: PgExecutor<'e>>(ex: E, doc: &Value, sha256: &str, source: &str) -> Result<Loaded> {
    let row: (i64, bool, Value) =
        sqlx::query_as("SELECT version, changed, summary FROM backstop.load_policy($1, $2, $3)")
            .bind(doc)
            .bind(sha256)
            .bind(source)
            .fetch_one(ex)
            .await
            .map_err(refine)?;
    Ok(Loaded {
        version: row.0,
        changed: row.1,
        summary: row.2,
    })
}

pub async fn report_config_rejected<'e, E: PgExecutor<'e>>(
    ex: E,
    file: &str,
    sha256: &str,
    errors: &Value,
) -> Result<i64> {
    sqlx::query_scalar("SELECT backstop.report_config_rejected($1, $2, $3)")
        .bind(file)
        .bind(sha256)
        .bind(errors)
        .fetch_one(ex)
        .await
        .map_err(refine)
}

/// One row of the action log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct LogRow {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub actor: String,
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub action_id: Option<Uuid>,
    pub correlation_id: Option<String>,
    pub parent_action: Option<Uuid>,
    pub amount: Option<Decimal>,
    pub confidence: Option<f32>,
    pub reasoning: Option<String>,
    pub inputs: Option<Value>,
    pub params: Option<Value>,
    pub result: Option<Value>,
    pub detail: Value,
    pub policy_version: Option<i64>,
    pub registry_version: Option<i64>,
    /// The writing transaction, as text (xid8).
    pub txid: String,
}

/// The column list that maps onto [`LogRow`].
pub const LOG_COLUMNS: &str = "seq, at, kind, actor, agent, tool, action_id, correlation_id, parent_action, amount, \
     confidence, reasoning, inputs, params, result, detail, policy_version, registry_version, txid::text AS txid";

/// The most recent `limit` log rows, oldest first.
pub async fn recent_log<'e, E: PgExecutor<'e>>(ex: E, limit: i64) -> Result<Vec<LogRow>> {
    let mut rows: Vec<LogRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LOG_COLUMNS} FROM backstop.action_log ORDER BY seq DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(ex)
    .await
    .map_err(refine)?;
    rows.reverse();
    Ok(rows)
}

/// Every event of one action, in order.
pub async fn action_history<'e, E: PgExecutor<'e>>(ex: E, action_id: Uuid) -> Result<Vec<LogRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LOG_COLUMNS} FROM backstop.action_log WHERE action_id = $1 ORDER BY seq"
    )))
    .bind(action_id)
    .fetch_all(ex)
    .await
    .map_err(refine)
}
