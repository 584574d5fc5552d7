//! `backstop supervise`: the process above the agents. It follows the log
//! (one tail cursor shared by every supervisor, advanced in the same
//! transaction as the work each row causes), schedules delayed reviews of a
//! deterministic sample plus every risky action, reviews them when due (work
//! claimed with leases and SKIP LOCKED), keeps the decision rollups, watches
//! customer signals for complaint spikes, and runs drift passes. Everything it
//! decides goes to the log as actor `supervisor`.

pub mod drift;
pub mod review;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::contract::tail::{Tail, TailCursor};
use crate::contract::{self, EventKind, Scope};
use crate::policy::SupervisorSettings;

/// The actor the supervisor's decisions are recorded under.
pub const ACTOR: &str = "supervisor";

#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// This instance's name (leases); decisions are recorded as `supervisor`.
    pub name: String,
    pub tick: Duration,
    pub tail_batch: i64,
    pub review_batch: i32,
    pub drift_every: Duration,
    /// A read replica for the drift pass's counts.
    pub read: Option<PgPool>,
}

impl SupervisorOptions {
    pub fn named(name: &str) -> SupervisorOptions {
        SupervisorOptions {
            name: name.to_string(),
            tick: Duration::from_millis(200),
            tail_batch: 5000,
            review_batch: 50,
            drift_every: Duration::from_secs(10),
            read: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SupervisorStats {
    pub rows_followed: u64,
    pub reviews_scheduled: u64,
    pub reviews_done: u64,
    pub findings: u64,
    pub drift_passes: u64,
    pub pauses: u64,
    pub compensations_requested: u64,
}

/// A finding the supervisor raised, and what it did about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Raised {
    pub finding_id: Uuid,
    pub kind: String,
    pub merged: bool,
    pub action: Option<String>,
}

/// What the supervisor found.
pub struct Found<'a> {
    pub kind: &'a str,
    pub severity: &'a str,
    pub agent: Option<&'a str>,
    pub action_id: Option<Uuid>,
    pub evidence: &'a Value,
}

/// Raise a finding and, when it is new, take the automatic action the policy
/// names for its kind. Runs on the caller's transaction.
pub async fn raise_and_act(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    found: Found<'_>,
    stats: &mut SupervisorStats,
) -> Result<Raised> {
    raise_then_act(conn, settings, found, stats, false).await
}

/// `raise_and_act`; with `again`, the automatic action is taken on a merge
/// too (a repeat the caller has judged to be new evidence).
async fn raise_then_act(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    found: Found<'_>,
    stats: &mut SupervisorStats,
    again: bool,
) -> Result<Raised> {
    let Found {
        kind,
        severity,
        agent,
        action_id,
        evidence,
    } = found;
    let f = contract::raise_finding(&mut *conn, kind, severity, agent, action_id, evidence).await?;
    stats.findings += u64::from(!f.merged);
    let mut done = None;
    if !f.merged || again {
        // The automatic action in a savepoint: a lock another session holds
        // on what it touches (an agent's transaction left open on its
        // action) past the caller's lock_timeout leaves the finding raised
        // and says the action is a person's to take, rather than failing it.
        // (A savepoint inside the caller's transaction, a transaction of its
        // own outside one.)
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        match act(&mut sp, settings, kind, agent, action_id, evidence, f.finding_id, stats).await {
            Ok(d) => {
                sp.commit().await?;
                done = d;
            }
            Err(e) if is_lock_timeout(&e) => {
                sp.rollback().await?;
                done = Some(format!(
                    "automatic {} not taken: another session holds a lock on it; take it by hand",
                    settings.actions.get(kind).map(String::as_str).unwrap_or("action")
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Raised {
        finding_id: f.finding_id,
        kind: kind.to_string(),
        merged: f.merged,
        action: done,
    })
}

/// Whether an error is a lock wait cut short by lock_timeout (55P03).
pub fn is_lock_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
            .and_then(|d| d.code())
            .is_some_and(|code| code == "55P03")
            || c.downcast_ref::<contract::ContractError>()
                .and_then(|ce| ce.code())
                .is_some_and(|code| code == "55P03")
    })
}

/// The automatic action the policy names for a new finding's kind.
#[allow(clippy::too_many_arguments)]
async fn act(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    kind: &str,
    agent: Option<&str>,
    action_id: Option<Uuid>,
    evidence: &Value,
    finding_id: Uuid,
    stats: &mut SupervisorStats,
) -> Result<Option<String>> {
    let mut done = None;
    let rule = evidence["rule"].as_str().unwrap_or(kind);
    let reason = format!("supervisor: {kind} finding {} ({rule})", finding_id);
    match settings.actions.get(kind).map(String::as_str) {
        Some("compensate") => {
            if let Some(id) = action_id {
                // The action and its dependents, while still reversible
                // (reads changed nothing and need no undo).
                let plan: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
                    "SELECT action_id, outcome, detail FROM backstop.compensation_plan(ARRAY[$1]::uuid[])
                          WHERE class IS DISTINCT FROM 'read'",
                )
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
                let ids: Vec<Uuid> = plan.iter().filter(|p| p.1 == "requested").map(|p| p.0).collect();
                // What cannot be undone is said with its remediation, so the
                // finding tells a person what is left for them to do.
                let left: Vec<String> = plan
                    .iter()
                    .filter(|p| p.1 != "requested")
                    .map(|p| format!("{}: {}", p.1, p.2.as_deref().unwrap_or("")))
                    .collect();
                let mut said = Vec::new();
                if !ids.is_empty() {
                    contract::request_compensation(&mut *conn, &ids, &reason, None).await?;
                    stats.compensations_requested += ids.len() as u64;
                    said.push(format!("compensation requested for {} action(s)", ids.len()));
                }
                if !left.is_empty() {
                    said.push(format!("not undone automatically: {}", left.join("; ")));
                }
                done = Some(if said.is_empty() {
                    "nothing left to compensate automatically".into()
                } else {
                    said.join("; ")
                });
            }
        }
        Some("pause") => {
            if let Some(a) = agent {
                let paused: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM backstop.kill_switches WHERE scope = 'agent' AND target = $1 AND paused)",
                    )
                    .bind(a)
                    .fetch_one(&mut *conn)
                    .await?;
                if !paused {
                    contract::pause(&mut *conn, Scope::Agent, Some(a), &reason).await?;
                    stats.pauses += 1;
                    done = Some(format!("agent {a} paused"));
                }
            }
        }
        _ => {}
    }
    Ok(done)
}

/// Follow the log one batch: schedule reviews, fold rollups, check signals.
/// Returns the number of rows processed, or `None` when another supervisor
/// holds the cursor right now.
pub async fn tail_step(
    pool: &PgPool,
    settings: &SupervisorSettings,
    batch: i64,
    stats: &mut SupervisorStats,
) -> Result<Option<usize>> {
    let mut tx = pool.begin().await?;
    // This transaction holds the shared cursor: no lock another session
    // keeps (an agent's transaction left open on its action, an operator's
    // on a finding) may hold every supervisor up with it.
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO backstop.supervisor_cursor (name, cursor, updated_at, updated_by) VALUES ('main', $1, now(), $2) ON CONFLICT DO NOTHING",
    )
    .bind(serde_json::to_value(TailCursor::beginning())?)
    .bind(ACTOR)
    .execute(&mut *tx)
    .await?;
    let cursor: Option<Value> =
        sqlx::query_scalar("SELECT cursor FROM backstop.supervisor_cursor WHERE name = 'main' FOR UPDATE SKIP LOCKED")
            .fetch_optional(&mut *tx)
            .await?;
    let Some(cursor) = cursor else { return Ok(None) };
    let mut tail = Tail::new(serde_json::from_value(cursor)?, batch);
    let rows = tail.poll_with(&mut tx).await?;
    if !rows.is_empty() {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let ats: Vec<chrono::DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
        sqlx::query("SELECT backstop.add_rollups($1, $2, $3)")
            .bind(&seqs)
            .bind(settings.drift.bucket_seconds)
            .bind(&ats)
            .execute(&mut *tx)
            .await?;
        // Results (executed, failed) with their seqs: reviews take the ids,
        // the check for results after a pause both.
        let results: Vec<(i64, Uuid)> = rows
            .iter()
            .filter(|r| r.kind.is_result())
            .filter_map(|r| r.action_id.map(|a| (r.seq, a)))
            .collect();
        let executed: Vec<Uuid> = results.iter().map(|r| r.1).collect();
        if !executed.is_empty() {
            let ra = &settings.review_all;
            let n: i32 =
                sqlx::query_scalar("SELECT backstop.schedule_reviews($1, make_interval(secs => $2), $3, $4, $5, $6)")
                    .bind(&executed)
                    .bind(settings.review_delay_seconds)
                    .bind(settings.sample_rate)
                    .bind(&ra.classes)
                    .bind(ra.amount_over.map(crate::filecheck::decimal))
                    .bind(ra.confidence_below.map(|c| c as f32))
                    .fetch_one(&mut *tx)
                    .await?;
            stats.reviews_scheduled += n as u64;
            after_pause_check(&mut tx, settings, &results, stats).await?;
        }
        let mut signal_agents: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.kind == EventKind::Signal) {
            if let Some(a) = &r.agent {
                signal_agents.entry(a.clone()).or_default().push(r.seq);
            }
        }
        for (agent, seqs) in signal_agents {
            complaint_check(&mut tx, settings, &agent, &seqs, stats).await?;
        }
    }
    sqlx::query(
        "UPDATE backstop.supervisor_cursor SET cursor = $1, updated_at = now(), updated_by = $2 WHERE name = 'main'",
    )
    .bind(serde_json::to_value(tail.cursor())?)
    .bind(ACTOR)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    stats.rows_followed += rows.len() as u64;
    Ok(Some(rows.len()))
}

/// A spike: at least `min_count` signals in the window, and at least `factor`
/// times what the agent's baseline rate predicts for a window that long.
pub fn is_spike(
    recent: i64,
    baseline: i64,
    window_s: f64,
    baseline_s: f64,
    min_count: u32,
    factor: f64,
) -> (bool, f64) {
    let expected = if baseline_s > window_s {
        baseline as f64 * window_s / (baseline_s - window_s)
    } else {
        0.0
    };
    (
        recent >= min_count as i64 && recent as f64 >= factor * expected,
        expected,
    )
}

/// Results recorded after a pause that covers their agent or tool (the
/// action was allowed before it): the tool ran, or finished, while the fleet,
/// the agent or the tool was paused. The database keeps the truth of what
/// happened; this says it to the people the pause was for.
async fn after_pause_check(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    results: &[(i64, Uuid)],
    stats: &mut SupervisorStats,
) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let (seqs, ids): (Vec<i64>, Vec<Uuid>) = results.iter().copied().unzip();
    let hits: Vec<(Uuid, String, Value)> = sqlx::query_as(
        "SELECT a.action_id, a.agent,
                jsonb_build_object('rule', 'executed_after_pause', 'tool', a.tool, 'result_seq', r.seq,
                                   'pause', jsonb_build_object('scope', k.scope, 'target', k.target, 'by', k.changed_by,
                                                               'reason', k.reason, 'seq', k.changed_seq))
           FROM unnest($1::bigint[], $2::uuid[]) r(seq, action_id)
           JOIN backstop.actions a ON a.action_id = r.action_id
           JOIN LATERAL (SELECT * FROM backstop.kill_switches k
                          WHERE k.paused AND k.changed_seq < r.seq
                            AND (k.scope = 'fleet' OR (k.scope = 'agent' AND k.target = a.agent)
                                 OR (k.scope = 'tool' AND k.target = a.tool))
                          ORDER BY k.changed_seq LIMIT 1) k ON true",
    )
    .bind(&seqs)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (action_id, agent, evidence) in hits {
        let found = Found {
            kind: "policy_violation",
            severity: "high",
            agent: Some(&agent),
            action_id: Some(action_id),
            evidence: &evidence,
        };
        raise_and_act_or_skip(conn, settings, found, stats, false).await?;
    }
    Ok(())
}

/// `raise_and_act` in a savepoint, for the cursor's transaction: when a lock
/// another session holds outlasts the lock_timeout, this finding is skipped
/// (said on stderr; the next row about it raises it again) and the batch
/// goes on.
async fn raise_and_act_or_skip(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    found: Found<'_>,
    stats: &mut SupervisorStats,
    again: bool,
) -> Result<()> {
    let what = format!("{} finding on {}", found.kind, found.agent.unwrap_or("(no agent)"));
    let mut sp = sqlx::Connection::begin(&mut *conn).await?;
    match raise_then_act(&mut sp, settings, found, stats, again).await {
        Ok(_) => {
            sp.commit().await?;
            Ok(())
        }
        Err(e) if is_lock_timeout(&e) => {
            sp.rollback().await?;
            eprintln!("backstop supervise: {what} skipped for now: another session holds a lock it needs ({e:#})");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn complaint_check(
    conn: &mut PgConnection,
    settings: &SupervisorSettings,
    agent: &str,
    seqs: &[i64],
    stats: &mut SupervisorStats,
) -> Result<()> {
    let c = &settings.complaints;
    let now = Utc::now();
    let window_start = now - chrono::Duration::milliseconds((c.window_seconds * 1000.0) as i64);
    let baseline_start = now - chrono::Duration::milliseconds((c.baseline_seconds * 1000.0) as i64);
    let (recent, baseline): (i64, i64) = sqlx::query_as("SELECT * FROM backstop.signal_counts($1, $2, $3)")
        .bind(agent)
        .bind(window_start)
        .bind(baseline_start)
        .fetch_one(&mut *conn)
        .await?;
    let spike_in = |n| is_spike(n, baseline, c.window_seconds, c.baseline_seconds, c.min_count, c.factor);
    // The signals counted below are some of these: no spike in all of them,
    // none in those.
    if !spike_in(recent).0 {
        return Ok(());
    }
    // An unresolved spike finding already stands for the signals it counted.
    // A pause is lifted by a person, often with the finding left open or
    // acknowledged: the agent then runs again, and a new spike must stop it
    // again. It counts only the signals that came after the finding was last
    // updated and after the agent (or the fleet) was last resumed: the
    // earlier ones were seen, and counting them would pause it again at the
    // first complaint after a resume. While the agent or the fleet is paused
    // there is nothing to do.
    let open: Option<(i64, bool, Option<i64>)> = sqlx::query_as(
        "SELECT f.last_seq,
                EXISTS (SELECT 1 FROM backstop.kill_switches k
                         WHERE k.paused AND (k.scope = 'fleet' OR (k.scope = 'agent' AND k.target = $1))),
                (SELECT max(k.changed_seq) FROM backstop.kill_switches k
                  WHERE k.scope = 'fleet' OR (k.scope = 'agent' AND k.target = $1))
           FROM backstop.findings f
          WHERE f.kind = 'complaint_spike' AND f.agent = $1 AND f.status <> 'resolved'
          ORDER BY f.last_seq DESC LIMIT 1",
    )
    .bind(agent)
    .fetch_optional(&mut *conn)
    .await?;
    let (recent, since) = match open {
        None => (recent, None),
        Some((_, true, _)) => return Ok(()),
        Some((last, false, resumed)) => {
            let since = last.max(resumed.unwrap_or(0));
            let newer: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM backstop.signals s WHERE s.agent = $1 AND s.at >= $2 AND s.seq > $3",
            )
            .bind(agent)
            .bind(window_start)
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
            (newer, Some(since))
        }
    };
    let (spike, expected) = spike_in(recent);
    if !spike {
        return Ok(());
    }
    let mut evidence = json!({
        "rule": "complaint_spike",
        "signals_in_window": recent,
        "window_seconds": c.window_seconds,
        "expected_from_baseline": expected,
        "baseline_signals": baseline,
        "baseline_seconds": c.baseline_seconds,
        "min_count": c.min_count,
        "factor": c.factor,
        "latest_signal_seqs": seqs,
    });
    if let Some(since) = since {
        evidence["counted_after_seq"] = json!(since);
    }
    let found = Found {
        kind: "complaint_spike",
        severity: "critical",
        agent: Some(agent),
        action_id: None,
        evidence: &evidence,
    };
    raise_and_act_or_skip(conn, settings, found, stats, since.is_some()).await?;
    Ok(())
}

/// One drift pass over every agent (one supervisor at a time).
pub async fn drift_pass(
    pool: &PgPool,
    settings: &SupervisorSettings,
    stats: &mut SupervisorStats,
) -> Result<Vec<(String, drift::Assessment)>> {
    drift_pass_reading(pool, None, settings, stats).await
}

/// `drift_pass`, counting on `read` (a replica) when given: the pass's one
/// heavy read leaves the primary; findings and pauses still go to it.
pub async fn drift_pass_reading(
    pool: &PgPool,
    read: Option<&PgPool>,
    settings: &SupervisorSettings,
    stats: &mut SupervisorStats,
) -> Result<Vec<(String, drift::Assessment)>> {
    let mut tx = pool.begin().await?;
    // As the cursor's transaction: no lock another session keeps holds the
    // drift pass (and its automatic actions) for more than 2 s.
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    let got: bool = sqlx::query_scalar("SELECT backstop.claim_drift_pass()")
        .fetch_one(&mut *tx)
        .await?;
    if !got {
        return Ok(Vec::new());
    }
    let d = &settings.drift;
    let now = Utc::now();
    let recent_start = now - chrono::Duration::milliseconds((d.recent_seconds * 1000.0) as i64);
    let baseline_start = recent_start - chrono::Duration::milliseconds((d.baseline_seconds * 1000.0) as i64);
    let q = sqlx::query_as("SELECT * FROM backstop.drift_counts($1, $2)")
        .bind(baseline_start)
        .bind(recent_start);
    let rows: Vec<(String, bool, String, i64)> = match read {
        Some(r) => q.fetch_all(r).await?,
        None => q.fetch_all(&mut *tx).await?,
    };
    let mut by_agent: HashMap<String, drift::Windows> = HashMap::new();
    for (agent, recent, key, n) in rows {
        let e = by_agent.entry(agent).or_default();
        let m = if recent { &mut e.1 } else { &mut e.0 };
        *m.entry(key).or_insert(0) += n.max(0) as u64;
    }
    let mut flagged = Vec::new();
    let mut agents: Vec<_> = by_agent.into_iter().collect();
    agents.sort_by(|a, b| a.0.cmp(&b.0));
    for (agent, (b, r)) in agents {
        let Some(a) = drift::assess(&b, &r, d.min_samples as u64) else {
            continue;
        };
        if a.score <= d.threshold {
            continue;
        }
        // At most one finding (or merge) per agent per recent window.
        let last: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(last_at) FROM backstop.findings WHERE kind = 'drift' AND agent = $1 AND status <> 'resolved'",
        )
        .bind(&agent)
        .fetch_one(&mut *tx)
        .await?;
        if last.is_some_and(|l| l > recent_start) {
            continue;
        }
        let evidence = json!({
            "rule": "drift",
            "score": a.score,
            "threshold": d.threshold,
            "required": a.required,
            "dimension": a.dimension,
            "per_dimension": a.per_dimension,
            "top_changes": a.top_changes,
            "baseline": a.baseline,
            "recent": a.recent,
            "baseline_decisions": a.baseline_n,
            "recent_decisions": a.recent_n,
        });
        let severity = if a.score > 3.0 * d.threshold { "high" } else { "medium" };
        let found = Found {
            kind: "drift",
            severity,
            agent: Some(&agent),
            action_id: None,
            evidence: &evidence,
        };
        raise_and_act(&mut tx, settings, found, stats).await?;
        flagged.push((agent, a));
    }
    tx.commit().await?;
    stats.drift_passes += 1;
    Ok(flagged)
}

/// Run until `stop` turns true.
pub async fn run(pool: PgPool, opts: SupervisorOptions, mut stop: watch::Receiver<bool>) -> Result<SupervisorStats> {
    let mut stats = SupervisorStats::default();
    // Notifications go out on their own task: a slow webhook must not hold
    // up the tail or the reviews.
    let notifier = tokio::spawn(crate::notify::run(pool.clone(), opts.name.clone(), stop.clone()));
    let mut last_drift = tokio::time::Instant::now() - opts.drift_every;
    while !*stop.borrow() {
        let work = async {
            let (_, settings) = crate::policy::active_supervisor(&pool).await?;
            let followed = tail_step(&pool, &settings, opts.tail_batch, &mut stats)
                .await?
                .unwrap_or(0);
            let reviewed = review::review_step(&pool, &settings, &opts.name, opts.review_batch, &mut stats).await?;
            if last_drift.elapsed() >= opts.drift_every {
                last_drift = tokio::time::Instant::now();
                drift_pass_reading(&pool, opts.read.as_ref(), &settings, &mut stats).await?;
            }
            anyhow::Ok(followed > 0 || reviewed > 0)
        };
        let busy = match work.await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("backstop supervise {}: {e:#}; retrying", opts.name);
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(opts.tick) => {}
                _ = stop.changed() => {}
            }
        }
    }
    // Let the notifier finish what it sent, so its outcome is recorded.
    let _ = notifier.await;
    Ok(stats)
}
