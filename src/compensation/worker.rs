//! `backstop worker`: claims requested compensations (FOR UPDATE SKIP LOCKED,
//! with a lease), runs each inverse through its executor with the action id as
//! the idempotency key, and reports the outcome through the contract.
//!
//! A worker killed mid-run loses its lease; another claims the work when the
//! lease ends and runs it again, and the target's record of the key turns the
//! second run into a no-op that returns the first result. So each inverse
//! takes effect exactly once, however many workers die.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::executor::{ExecOutcome, Executors};
use crate::contract::{self, Claim};
use crate::registry::{self, Executor, Registry};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub name: String,
    /// Claims per round, run concurrently.
    pub batch: i32,
    pub lease: Duration,
    /// How often to look for work when nothing wakes the worker.
    pub poll: Duration,
    /// Only these inverse tools (default: every tool with an automatic executor).
    pub tools: Option<Vec<String>>,
}

impl WorkerOptions {
    pub fn named(name: &str) -> WorkerOptions {
        WorkerOptions {
            name: name.to_string(),
            batch: 16,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            tools: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkerStats {
    pub claimed: u64,
    pub compensated: u64,
    pub retried: u64,
    pub failed: u64,
    /// Finished by another worker after this one's lease ran out.
    pub lost_lease: u64,
}

/// Inverse tools this worker can run: those with an automatic executor.
fn runnable(reg: &Registry, only: &Option<Vec<String>>) -> Vec<String> {
    reg.tools
        .values()
        .filter(|t| {
            matches!(
                t.executor,
                Some(Executor::Sql { .. } | Executor::Webhook { .. } | Executor::Mcp { .. } | Executor::Demo { .. })
            )
        })
        .filter(|t| only.as_ref().is_none_or(|o| o.contains(&t.name)))
        .map(|t| t.name.clone())
        .collect()
}

async fn current_registry(
    pool: &PgPool,
    have: &mut Option<(i64, Arc<Registry>)>,
) -> anyhow::Result<Option<Arc<Registry>>> {
    let v: Option<i64> = sqlx::query_scalar("SELECT registry_version FROM backstop.active")
        .fetch_one(pool)
        .await?;
    match (v, have.as_ref()) {
        (None, _) => Ok(None),
        (Some(v), Some((hv, r))) if *hv == v => Ok(Some(r.clone())),
        (Some(_), _) => {
            let loaded = registry::active(pool).await?;
            *have = loaded.map(|(v, r)| (v, Arc::new(r)));
            Ok(have.as_ref().map(|(_, r)| r.clone()))
        }
    }
}

/// Run until `stop` turns true. Returns what this worker did.
pub async fn run(pool: PgPool, opts: WorkerOptions, mut stop: watch::Receiver<bool>) -> anyhow::Result<WorkerStats> {
    let executors = Executors::new(pool.clone());
    let mut stats = WorkerStats::default();
    let mut reg_cache: Option<(i64, Arc<Registry>)> = None;
    let mut listener: Option<PgListener> = None;
    while !*stop.borrow() {
        if listener.is_none() {
            listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => l.listen("backstop_compensations").await.ok().map(|_| l),
                Err(_) => None,
            };
        }
        let round = async {
            let Some(reg) = current_registry(&pool, &mut reg_cache).await? else {
                return anyhow::Ok(0usize);
            };
            let tools = runnable(&reg, &opts.tools);
            if tools.is_empty() {
                return Ok(0);
            }
            let claims = contract::claim_compensations(&pool, &opts.name, Some(&tools), opts.batch, opts.lease).await?;
            let n = claims.len();
            stats.claimed += n as u64;
            let results: Vec<(uuid::Uuid, bool, serde_json::Value)> = futures_util::stream::iter(claims)
                .map(|c| run_one(&executors, &reg, c))
                .buffer_unordered(opts.batch.max(1) as usize)
                .collect()
                .await;
            // One round trip for the whole batch.
            for (_, status) in contract::finish_compensations(&pool, &opts.name, &results).await? {
                match status.as_str() {
                    "compensated" => stats.compensated += 1,
                    "requested" => stats.retried += 1,
                    "lease_lost" => stats.lost_lease += 1,
                    _ => stats.failed += 1,
                }
            }
            Ok(n)
        };
        let n = match round.await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("backstop worker {}: {e:#}; retrying", opts.name);
                listener = None;
                0
            }
        };
        if n == 0 {
            // Idle: wake on a new request, at the poll interval (backoffs, expired leases), or on stop.
            match listener.as_mut() {
                Some(l) => tokio::select! {
                    r = l.recv() => { if r.is_err() { listener = None; } }
                    _ = tokio::time::sleep(opts.poll) => {}
                    _ = stop.changed() => {}
                },
                None => tokio::select! {
                    _ = tokio::time::sleep(opts.poll) => {}
                    _ = stop.changed() => {}
                },
            }
        }
    }
    Ok(stats)
}

/// Run one claimed inverse; the outcome to report.
async fn run_one(executors: &Executors, reg: &Registry, c: Claim) -> (uuid::Uuid, bool, serde_json::Value) {
    let (ok, detail) = if let Some(dep) = c.blocked_by {
        (
            false,
            json!({"outcome": "conflict", "error": format!("the compensation of dependent action {dep} did not succeed: undoing this one would leave it orphaned")}),
        )
    } else if c.deadline.is_some_and(|d| d < chrono::Utc::now()) {
        (
            false,
            json!({"outcome": "expired", "error": format!("reversal window closed at {}", c.deadline.map(|d| d.to_rfc3339()).unwrap_or_default())}),
        )
    } else {
        match executors.run(reg, &c).await {
            ExecOutcome::Done(v) => (true, v),
            ExecOutcome::ConditionFailed(m) => (
                false,
                json!({"outcome": "condition_failed", "condition": c.condition, "error": m}),
            ),
            ExecOutcome::Conflict(m) => (false, json!({"outcome": "conflict", "error": m})),
            ExecOutcome::Retry(m) => (false, json!({"outcome": "error", "error": m})),
        }
    };
    (c.action_id, ok, detail)
}
