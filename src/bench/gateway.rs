//! `backstop bench gateway`: N simulated agents each looping propose +
//! record_result with realistic payloads, against N writers looping a raw
//! single-row INSERT of the same payload into a plain table, in the same run
//! and the same database. Every guarantee is on: kill switch, guardrails (the
//! shipped policy, evaluated in full), sealing running every second,
//! compensation staging.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use super::BenchDb;
use backstop::config::Config;
use backstop::contract::{self, Proposal, Verdict};

#[derive(Debug, Clone, Serialize)]
pub struct GatewayRow {
    pub agents: usize,
    pub raw_inserts_per_s: f64,
    pub gateway_actions_per_s: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayReport {
    pub server: String,
    pub database: String,
    pub seconds: f64,
    pub rows: Vec<GatewayRow>,
}

fn text(len: usize, seed: &str) -> String {
    let base = format!("{seed} the customer reported a damaged item and the order history supports a refund; ");
    base.repeat(len / base.len() + 1)[..len].to_string()
}

/// ~300 B of params, ~200 B of result, ~500 B of reasoning.
pub fn payload(agent: usize, i: u64) -> (Value, Value, String) {
    let params = json!({
        "customer_id": format!("cust-{:05}", (agent as u64 * 7919 + i) % 50000),
        "amount": 40 + (i % 60),
        "order_id": format!("ord-{agent}-{i}"),
        "reason": text(200, "damaged"),
    });
    let result = json!({
        "refund_id": format!("rf-{agent}-{i}"),
        "status": "issued",
        "processor": "stripe",
        "note": text(130, "ok"),
    });
    (params, result, text(500, "reasoning"))
}

async fn run_raw(url: &sqlx::postgres::PgConnectOptions, agents: usize, secs: f64) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in 0..agents {
        let mut c = PgConnection::connect_with(url).await?;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (params, result, reasoning) = payload(a, i);
                sqlx::query(
                    "INSERT INTO bench_raw (agent, tool, params, result, reasoning, amount, confidence) VALUES ($1, 'issue_refund', $2, $3, $4, $5, $6)",
                )
                .bind(format!("bench-agent-{a}"))
                .bind(&params)
                .bind(&result)
                .bind(&reasoning)
                .bind(Decimal::from(40 + (i % 60)))
                .bind(0.93f32)
                .execute(&mut c)
                .await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    measure(&stop, &done, secs, tasks).await
}

async fn run_gateway(url: &sqlx::postgres::PgConnectOptions, agents: usize, secs: f64, round: usize) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in 0..agents {
        let mut c = PgConnection::connect_with(url).await?;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (params, result, reasoning) = payload(a, i);
                let d = contract::propose(
                    &mut c,
                    &Proposal {
                        agent: format!("bench-agent-{round}-{a}"),
                        tool: "issue_refund".into(),
                        params,
                        confidence: Some(0.93),
                        reasoning: Some(reasoning),
                        correlation_id: Some(format!("ticket-{a}-{i}")),
                        ..Default::default()
                    },
                )
                .await?;
                anyhow::ensure!(d.verdict == Verdict::Allow, "bench proposal not allowed: {}", d.reason);
                contract::record_result(&mut c, d.action_id, true, Some(&result), None).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    measure(&stop, &done, secs, tasks).await
}

async fn measure(
    stop: &AtomicBool,
    done: &AtomicU64,
    secs: f64,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
) -> Result<f64> {
    // A short warm-up: plans cached, connections hot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_n = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let n = done.load(Ordering::Relaxed) - start_n;
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / elapsed)
}

pub async fn run(cfg: &Config, agent_counts: &[usize], secs: f64, progress: bool) -> Result<GatewayReport> {
    let bench = BenchDb::create(cfg, 4).await?;
    let result = run_all(cfg, &bench, agent_counts, secs, progress).await;
    bench.drop_now().await?;
    result
}

async fn run_all(
    cfg: &Config,
    bench: &BenchDb,
    agent_counts: &[usize],
    secs: f64,
    progress: bool,
) -> Result<GatewayReport> {
    let (pool, server) = prepare(cfg, bench).await?;
    let opts = bench.db.options.clone();

    // The sealer runs as it would in production.
    let sealing = Arc::new(AtomicBool::new(true));
    let sealer = {
        let (pool, sealing) = (pool.clone(), sealing.clone());
        tokio::spawn(async move {
            while sealing.load(Ordering::Relaxed) {
                let _ = contract::seal_all(&pool).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut rows = Vec::new();
    for (round, &n) in agent_counts.iter().enumerate() {
        if progress {
            eprintln!(
                "bench gateway: {n} agent(s): raw INSERT for {secs}s, then propose + record_result for {secs}s ..."
            );
        }
        let raw = run_raw(&opts, n, secs).await?;
        let gw = run_gateway(&opts, n, secs, round).await?;
        rows.push(GatewayRow {
            agents: n,
            raw_inserts_per_s: raw,
            gateway_actions_per_s: gw,
            ratio: if raw > 0.0 { gw / raw } else { 0.0 },
        });
    }
    sealing.store(false, Ordering::Relaxed);
    let _ = sealer.await;
    let report = contract::verify::verify(&pool, true, true).await?;
    anyhow::ensure!(
        report.ok,
        "the benchmark's own log did not verify: {:?}",
        report.problems.first()
    );
    let database = bench.describe();
    Ok(GatewayReport {
        server,
        database,
        seconds: secs,
        rows,
    })
}

/// The benchmark database: demo systems, the shipped registry and policy
/// (the hourly cap lifted), the raw table.
pub(crate) async fn prepare(_cfg: &Config, bench: &BenchDb) -> Result<(sqlx::PgPool, String)> {
    let pool = bench.db.pool.clone();
    backstop::demo::install_systems(&pool).await?;
    backstop::demo::script::load_demo_config(&pool).await?;
    // The shipped rules, evaluated in full; only the hourly cap is lifted so
    // that a benchmark agent's thousands of refunds stay allowed.
    let reg = backstop::demo::registry()?;
    let mut pol = backstop::demo::policy(&reg, backstop::demo::POLICY_LABEL, backstop::demo::POLICY_TOML)?;
    for r in pol.rules.iter_mut().filter(|r| r.kind == "cumulative") {
        r.threshold = Some(1e12);
    }
    // A version of its own (the contract takes a sha256: hash the marked one).
    pol.sha256 = backstop::filecheck::sha256_hex(&format!("{}-bench", pol.sha256));
    backstop::policy::sync(&pool, &pol, "bench").await?;
    sqlx::query(
        "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), agent text, tool text, \
         params jsonb, result jsonb, reasoning text, amount numeric, confidence real)",
    )
    .execute(&pool)
    .await?;
    let server = super::server_facts(&pool).await?;
    Ok((pool, server))
}

/// Gateway throughput on an empty log, then on the same database after
/// `prefill` rows were appended: what a large log costs each action.
pub async fn run_prefilled(cfg: &Config, agents: usize, secs: f64, prefill: i64, progress: bool) -> Result<(f64, f64)> {
    let bench = BenchDb::create(cfg, 4).await?;
    let r = async {
        let (pool, _) = prepare(cfg, &bench).await?;
        let opts = bench.db.options.clone();
        if progress {
            eprintln!("bench gateway: {agents} agent(s) on an empty log for {secs}s ...");
        }
        let empty = run_gateway(&opts, agents, secs, 0).await?;
        crate::bench::supervisor::fill_log(&pool, prefill, 100, 24.0, progress).await?;
        sqlx::query("ANALYZE backstop.action_log").execute(&pool).await?;
        if progress {
            eprintln!("bench gateway: {agents} agent(s) on a {prefill}-row log for {secs}s ...");
        }
        let full = run_gateway(&opts, agents, secs, 1).await?;
        anyhow::Ok((empty, full))
    }
    .await;
    bench.drop_now().await?;
    r
}

pub fn render(r: &GatewayReport) -> String {
    let mut t = backstop::output::Table::new(&["agents", "raw INSERT/s", "propose+record_result/s", "ratio"]);
    for row in &r.rows {
        t.row(vec![
            row.agents.to_string(),
            format!("{:.0}", row.raw_inserts_per_s),
            format!("{:.0}", row.gateway_actions_per_s),
            format!("{:.2}", row.ratio),
        ]);
    }
    format!(
        "{}\n{} ({}s per measurement)\n{}",
        r.server,
        r.database,
        r.seconds,
        t.render()
    )
}
