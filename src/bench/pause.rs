//! Pause propagation: N simulated agents loop proposals through the contract;
//! an incident commander pauses the fleet; how long until every agent has
//! been refused, and how many actions were allowed after the pause committed
//! (the database's guarantee says none).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use super::BenchDb;
use backstop::config::Config;
use backstop::contract::{self, Proposal, Scope, Verdict};

#[derive(Debug, Clone, Serialize)]
pub struct PauseReport {
    pub agents: usize,
    pub connections: u32,
    /// Proposals per second across the fleet before the pause.
    pub proposals_per_s: f64,
    /// One proposal's round trip before the pause (the baseline).
    pub round_trip_p50_ms: f64,
    /// From the pause's commit to each agent's first refusal.
    pub observed_p50_ms: f64,
    pub observed_p99_ms: f64,
    pub observed_max_ms: f64,
    pub agents_observed: usize,
    /// Actions allowed after the pause committed: must be 0.
    pub allows_after_pause: i64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(cfg: &Config, agents: usize, warm_secs: f64, progress: bool) -> Result<PauseReport> {
    let connections = 32;
    let bench = BenchDb::create(cfg, connections).await?;
    let r = measure(cfg, &bench, agents, connections, warm_secs, progress).await;
    bench.drop_now().await?;
    r
}

async fn measure(
    _cfg: &Config,
    bench: &BenchDb,
    agents: usize,
    connections: u32,
    warm_secs: f64,
    progress: bool,
) -> Result<PauseReport> {
    let pool = bench.db.pool.clone();
    backstop::demo::install_systems(&pool).await?;
    backstop::demo::script::load_demo_config(&pool).await?;
    if progress {
        eprintln!("bench pause: {agents} agents proposing for {warm_secs}s, then a fleet pause ...");
    }
    let paused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let mut tasks = Vec::with_capacity(agents);
    for i in 0..agents {
        let (pool, paused, stop, count, rtts) =
            (pool.clone(), paused.clone(), stop.clone(), count.clone(), rtts.clone());
        tasks.push(tokio::spawn(async move {
            let p = Proposal {
                agent: format!("sim-{i:04}"),
                tool: "lookup_customer".into(),
                params: json!({"customer_id": format!("c-{}", i % 100)}),
                confidence: Some(0.99),
                ..Default::default()
            };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match contract::propose(&pool, &p).await {
                    Ok(d) if d.verdict == Verdict::Block && paused.load(Ordering::Acquire) => {
                        return Some(Instant::now());
                    }
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if !paused.load(Ordering::Relaxed)
                            && let Ok(mut v) = rtts.lock()
                            && v.len() < 100_000
                        {
                            v.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            None
        }));
    }
    let t_warm = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(warm_secs)).await;
    let before = count.load(Ordering::Relaxed) as f64 / t_warm.elapsed().as_secs_f64();
    // The commander's own connection, as the room's pause key has.
    let mut conn = bench.db.dedicated().await?;
    paused.store(true, Ordering::Release);
    let p = contract::pause(&mut conn, Scope::Fleet, None, "bench: pause propagation").await?;
    let committed = Instant::now();
    let deadline = committed + Duration::from_secs(60);
    let mut observed = Vec::new();
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(Some(at))) = tokio::time::timeout(left, t).await {
            observed.push(at.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let allows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backstop.action_log WHERE kind = 'allowed' AND seq > $1")
            .bind(p.seq)
            .fetch_one(&pool)
            .await?;
    let mut rt = rtts.lock().map(|v| v.clone()).unwrap_or_default();
    let n = observed.len();
    Ok(PauseReport {
        agents,
        connections,
        proposals_per_s: before,
        round_trip_p50_ms: pct(&mut rt, 0.5),
        observed_p50_ms: pct(&mut observed, 0.5),
        observed_p99_ms: pct(&mut observed, 0.99),
        observed_max_ms: pct(&mut observed, 1.0),
        agents_observed: n,
        allows_after_pause: allows,
    })
}

pub fn render(r: &PauseReport) -> String {
    format!(
        "pause propagation: {} agents on {} connections ({:.0} proposals/s before the pause)\n  \
         every agent refused within: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} observed)\n  \
         baseline: one proposal's round trip p50 {:.2} ms\n  allowed after the pause committed: {}\n",
        r.agents,
        r.connections,
        r.proposals_per_s,
        r.observed_p50_ms,
        r.observed_p99_ms,
        r.observed_max_ms,
        r.agents_observed,
        r.agents,
        r.round_trip_p50_ms,
        r.allows_after_pause
    )
}
