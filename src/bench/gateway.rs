//! `backstop bench gateway`: N simulated agents each looping propose +
//! record_result with realistic payloads, against two baselines measured in
//! the same run and the same database:
//!
//! - the *floor*: N writers writing exactly the rows one action writes (its
//!   two log rows, its `actions` row and its update, the cumulative rule's
//!   per-minute row) into copies of those tables with the same columns,
//!   indexes, storage parameters and triggers, by plain SQL in the same two
//!   transactions (one statement each), without the contract's logic;
//! - a raw single-row INSERT of the same payload into a plain table.
//!
//! Every guarantee is on: kill switch, guardrails (the shipped policy,
//! evaluated in full), sealing running every second, compensation staging.
//! The per-action round trip (propose + record_result) is timed too: its p50
//! and p99 are what an agent's user feels.

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
use backstop::contract::gateway::Gateway;
use backstop::contract::{self, Outcome, Proposal, Verdict};

#[derive(Debug, Clone, Serialize)]
pub struct GatewayRow {
    pub agents: usize,
    pub raw_inserts_per_s: f64,
    /// The same rows written by plain SQL in the same two transactions.
    pub floor_actions_per_s: f64,
    pub gateway_actions_per_s: f64,
    /// gateway / raw INSERT.
    pub ratio: f64,
    /// gateway / floor.
    pub floor_ratio: f64,
    /// One action's propose + record_result round trips, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The floor's two statements per action, milliseconds.
    pub floor_p50_ms: f64,
    /// The same agents through a batching gateway (`contract::gateway`):
    /// one login mapped to them, its proposals and results sent in batches.
    pub batched_actions_per_s: f64,
    /// batched / floor.
    pub batched_floor_ratio: f64,
    pub batched_p50_ms: f64,
    pub batched_p99_ms: f64,
    /// Requests the batching gateway sent a call, on average.
    pub batched_per_call: f64,
    /// batched / floor in each round, in the order they ran.
    pub round_ratios: Vec<f64>,
    /// gateway / floor and gateway / raw INSERT in each round, the same way.
    pub floor_round_ratios: Vec<f64>,
    pub raw_round_ratios: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayReport {
    pub server: String,
    pub database: String,
    pub seconds: f64,
    /// Rounds each measurement was cut into (see `rounds_for`).
    pub rounds: usize,
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
                    "INSERT INTO public.bench_raw (agent, tool, params, result, reasoning, amount, confidence) VALUES ($1, 'issue_refund', $2, $3, $4, $5, $6)",
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
            anyhow::Ok(Vec::new())
        }));
    }
    Ok(measure(&stop, &done, secs, tasks, None).await?.0)
}

/// The floor: what one action writes, by plain SQL, in the same two
/// transactions (autocommit, one statement each, as the contract's calls).
const FLOOR_PROPOSE: &str = "WITH l AS (
    INSERT INTO bench_floor.action_log AS l
        (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence,
         reasoning, inputs, params, result, policy_version, registry_version)
    VALUES (nextval('bench_floor.action_log_seq'), clock_timestamp(), pg_current_xact_id(), 'allowed', $1, $1, 'issue_refund', $2,
            $3, $4, NULL, $5, $6, $7, NULL, $8, NULL, 1, 1)
    RETURNING l.seq, l.at),
a AS (
    INSERT INTO bench_floor.actions (action_id, agent, tool, class, amount, confidence, cost_to_reverse, correlation_id,
                                     parent_action, idempotency_key, entity, verdict, reason, rule, status,
                                     approvals_needed, approvals, expires_at, expiry_effect, proposed_seq, proposed_at,
                                     decided_seq, executed_seq, executed_at, inverse_tool, inverse_params, inverse_missing,
                                     comp_deadline, comp_condition, policy_version, registry_version, updated_seq,
                                     bound_params)
    SELECT $2, $1, 'issue_refund', 'reversible', $5, $6, 2.5, $4, NULL, NULL, $9, 'allow', 'allowed by policy', NULL, 'allowed',
           0, 0, NULL, NULL, l.seq, l.at, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 1, l.seq, $10 FROM l)
INSERT INTO bench_floor.agent_value_minutes AS m (agent, minute, total)
VALUES ($1, date_trunc('minute', now()), $5)
ON CONFLICT (agent, minute) DO UPDATE SET total = m.total + excluded.total";

const FLOOR_RESULT: &str = "WITH l AS (
    INSERT INTO bench_floor.action_log AS l
        (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence,
         reasoning, inputs, params, result, policy_version, registry_version)
    VALUES (nextval('bench_floor.action_log_seq'), clock_timestamp(), pg_current_xact_id(), 'executed', $1, $1, 'issue_refund', $2,
            $3, $4, NULL, $5, NULL, NULL, NULL, NULL, $6, 1, 1)
    RETURNING l.seq, l.at)
UPDATE bench_floor.actions x
   SET status = 'executed', executed_seq = l.seq, executed_at = l.at, inverse_tool = 'reverse_refund',
       inverse_params = $7, inverse_missing = NULL, comp_deadline = l.at + interval '30 days', comp_condition = NULL,
       updated_seq = l.seq
  FROM l WHERE x.action_id = $2";

async fn run_floor(
    url: &sqlx::postgres::PgConnectOptions,
    agents: usize,
    secs: f64,
    round: usize,
) -> Result<(f64, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in 0..agents {
        let mut c = PgConnection::connect_with(url).await?;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut lat = Vec::new();
            let agent = format!("floor-agent-{round}-{a}");
            while !stop.load(Ordering::Relaxed) {
                let (params, result, reasoning) = payload(a, i);
                let amount = Decimal::from(40 + (i % 60));
                let id = uuid::Uuid::new_v4();
                let corr = format!("ticket-{a}-{i}");
                let entity = params["customer_id"].as_str().unwrap_or_default().to_string();
                let detail = json!({"verdict": "allow", "reason": "allowed by policy", "class": "reversible",
                                    "cost_to_reverse": 2.5, "entity": entity, "amount_from": "params.amount"});
                let bound = json!({"customer_id": params["customer_id"], "amount": params["amount"]});
                let inverse = json!({"refund_id": result["refund_id"], "customer_id": params["customer_id"], "amount": params["amount"]});
                let comp = json!({"compensation": {"inverse_tool": "reverse_refund", "inverse_params": inverse}});
                let t0 = Instant::now();
                sqlx::query(FLOOR_PROPOSE)
                    .bind(&agent)
                    .bind(id)
                    .bind(&detail)
                    .bind(&corr)
                    .bind(amount)
                    .bind(0.93f32)
                    .bind(&reasoning)
                    .bind(&params)
                    .bind(&entity)
                    .bind(&bound)
                    .execute(&mut c)
                    .await?;
                sqlx::query(FLOOR_RESULT)
                    .bind(&agent)
                    .bind(id)
                    .bind(&comp)
                    .bind(&corr)
                    .bind(amount)
                    .bind(&result)
                    .bind(&inverse)
                    .execute(&mut c)
                    .await?;
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    measure(&stop, &done, secs, tasks, None).await
}

/// Agent `a`'s `i`th refund, and the result its tool returns.
fn refund(agent: &str, a: usize, i: u64) -> (Proposal, Value) {
    let (params, result, reasoning) = payload(a, i);
    let p = Proposal {
        agent: agent.to_string(),
        tool: "issue_refund".into(),
        params,
        confidence: Some(0.93),
        reasoning: Some(reasoning),
        correlation_id: Some(format!("ticket-{a}-{i}")),
        ..Default::default()
    };
    (p, result)
}

/// Each agent on its own agent login, named like it.
async fn run_gateway(
    agents: &[(String, sqlx::postgres::PgConnectOptions)],
    secs: f64,
    settle: Option<&sqlx::PgPool>,
) -> Result<(f64, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (a, (agent, url)) in agents.iter().enumerate() {
        let agent = agent.clone();
        let mut c = PgConnection::connect_with(url).await?;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (p, result) = refund(&agent, a, i);
                let t0 = Instant::now();
                let d = contract::propose(&mut c, &p).await?;
                anyhow::ensure!(d.verdict == Verdict::Allow, "bench proposal not allowed: {}", d.reason);
                contract::record_result(&mut c, d.action_id, true, Some(&result), None).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    measure(&stop, &done, secs, tasks, settle).await
}

/// Connections the batching gateway sends its batches on: one a core.
pub const GATEWAY_CONNECTIONS: usize = 2;
/// Requests a batch at most.
pub const GATEWAY_BATCH: usize = 64;

/// The same agents through one batching gateway: one agent login, mapped to
/// every agent it serves, as a gateway process would run.
async fn run_batched(
    bench: &BenchDb,
    owner: &sqlx::PgPool,
    agents: usize,
    secs: f64,
    round: usize,
) -> Result<(f64, Vec<f64>, f64)> {
    let (login, opts) = bench
        .agent_logins(&format!("bench-gateway-{round}"), 1)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no gateway login"))?;
    let names: Vec<String> = (0..agents).map(|a| format!("gateway-agent-{round}-{a}")).collect();
    sqlx::query("INSERT INTO backstop.agent_logins (login, agent) SELECT $1, unnest($2::text[])")
        .bind(&login)
        .bind(&names)
        .execute(owner)
        .await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(GATEWAY_CONNECTIONS as u32)
        .connect_with(opts)
        .await?;
    let gateway = Gateway::start(pool.clone(), GATEWAY_CONNECTIONS, GATEWAY_BATCH);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (a, agent) in names.into_iter().enumerate() {
        let (stop, done, gateway) = (stop.clone(), done.clone(), gateway.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (p, result) = refund(&agent, a, i);
                let t0 = Instant::now();
                let d = gateway.propose(p).await?;
                anyhow::ensure!(d.verdict == Verdict::Allow, "bench proposal not allowed: {}", d.reason);
                gateway
                    .record_result(Outcome {
                        action_id: d.action_id,
                        ok: true,
                        result: Some(result),
                        inverse_params: None,
                    })
                    .await?;
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let r = measure(&stop, &done, secs, tasks, Some(owner)).await;
    let st = gateway.stats();
    drop(gateway);
    pool.close().await;
    let (per_s, lat) = r?;
    Ok((per_s, lat, st.requests as f64 / st.calls.max(1) as f64))
}

/// The q-quantile (0..=1) of unsorted samples; 0 when there are none.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

/// Runs `tasks` for a warm-up and then `secs`, and gives their actions a
/// second and their latencies. With `settle`, the log's sealing is part of
/// the measured work: the time to seal what is left unsealed when the
/// agents stop counts in the elapsed time (the sealer runs every second,
/// so up to a second of the agents' rows would otherwise be sealed on the
/// next measurement's time).
async fn measure(
    stop: &AtomicBool,
    done: &AtomicU64,
    secs: f64,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<f64>>>>,
    settle: Option<&sqlx::PgPool>,
) -> Result<(f64, Vec<f64>)> {
    // A short warm-up: plans cached, connections hot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_n = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let n = done.load(Ordering::Relaxed) - start_n;
    let mut elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        let mut l = t.await??;
        // The warm-up's samples are left out (the first plans of a session).
        let warm = l.len() / 10;
        lat.extend(l.drain(warm..));
    }
    if let Some(pool) = settle {
        let t1 = Instant::now();
        seal_backlog(pool).await?;
        elapsed += t1.elapsed().as_secs_f64();
    }
    Ok((n as f64 / elapsed, lat))
}

/// Seals everything committed, after any seal already in progress:
/// `seal()` returns at once while the sealer's lock is held elsewhere (the
/// background sealer), which would leave that seal's work to whatever runs
/// next. Holding the lock in this transaction first waits for it; seal()
/// then finds its lock already this transaction's.
async fn seal_backlog(pool: &sqlx::PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT FROM backstop.seal_lock FOR UPDATE")
        .execute(&mut *tx)
        .await?;
    while let Some(s) = contract::seal(&mut *tx, 20_000).await? {
        if s.complete {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
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
    let rounds = rounds_for(secs);
    let per_round = secs / rounds as f64;
    let mut rows = Vec::new();
    for (idx, &n) in agent_counts.iter().enumerate() {
        if progress {
            eprintln!(
                "bench gateway: {n} agent(s): raw INSERT, propose + record_result, the floor, then the same batched, \
                 in {rounds} round(s) of {per_round:.1}s each ..."
            );
        }
        let mut m = Rounds::default();
        for r in 0..rounds {
            // Every round has agents, logins and rows of its own, as one
            // long measurement had. Its four measurements run back to back,
            // the floor next to the batched gateway, the two in turns round
            // to round: what one leaves behind (autovacuum of the rows it
            // wrote) falls on the other as often as the other way round.
            // The raw inserts, which write the most, go first, with the
            // single calls after them every round.
            let round = idx * rounds + r;
            let order: [Kind; 4] = if r % 2 == 0 {
                [Kind::Raw, Kind::Gateway, Kind::Floor, Kind::Batched]
            } else {
                [Kind::Raw, Kind::Gateway, Kind::Batched, Kind::Floor]
            };
            let mut got = [0.0f64; 4];
            for kind in order {
                got[kind as usize] = match kind {
                    Kind::Raw => run_raw(&opts, n, per_round).await?,
                    Kind::Floor => {
                        let (per_s, lat) = run_floor(&opts, n, per_round, round).await?;
                        m.floor_lat.extend(lat);
                        per_s
                    }
                    Kind::Gateway => {
                        let logins = bench.agent_logins(&format!("bench-agent-{round}"), n).await?;
                        let (per_s, lat) = run_gateway(&logins, per_round, Some(&pool)).await?;
                        m.lat.extend(lat);
                        per_s
                    }
                    Kind::Batched => {
                        let (per_s, lat, per_call) = run_batched(bench, &pool, n, per_round, round).await?;
                        m.batched_lat.extend(lat);
                        m.per_call.push(per_call);
                        per_s
                    }
                };
            }
            m.per_s.push(got);
        }
        rows.push(m.row(n));
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
        rounds,
        rows,
    })
}

/// Rounds a measurement of `secs` is cut into: rounds of two seconds or
/// more, at most five. One long measurement of each kind after the other
/// put minutes between the floor and the gateway it is compared with, and a
/// shared 2-core machine changes speed in minutes: the same code measured
/// 0.80 and 0.98 of its floor in two runs of the same hour.
pub fn rounds_for(secs: f64) -> usize {
    ((secs / 2.0).floor() as usize).clamp(1, 5)
}

/// What a benchmark round measures, in the order `Rounds::per_s` keeps them.
#[derive(Clone, Copy)]
enum Kind {
    Raw = 0,
    Floor = 1,
    Gateway = 2,
    Batched = 3,
}

/// One agent count's rounds.
#[derive(Default)]
struct Rounds {
    /// Actions (inserts for Raw) a second, by `Kind`, a round.
    per_s: Vec<[f64; 4]>,
    lat: Vec<f64>,
    floor_lat: Vec<f64>,
    batched_lat: Vec<f64>,
    per_call: Vec<f64>,
}

impl Rounds {
    /// num / den in each round, in the order the rounds ran.
    fn ratios(&self, num: Kind, den: Kind) -> Vec<f64> {
        self.per_s
            .iter()
            .map(|r| {
                if r[den as usize] > 0.0 {
                    r[num as usize] / r[den as usize]
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Rates are the rounds' mean (the rounds are equally long); a ratio is
    /// the median of the rounds' own ratios, each from measurements seconds
    /// apart, so one slow stretch of the machine moves it little.
    fn row(mut self, agents: usize) -> GatewayRow {
        let mean = |k: Kind| self.per_s.iter().map(|r| r[k as usize]).sum::<f64>() / self.per_s.len().max(1) as f64;
        let rates = [Kind::Raw, Kind::Floor, Kind::Gateway, Kind::Batched].map(mean);
        let round_ratios = self.ratios(Kind::Batched, Kind::Floor);
        let floor_round_ratios = self.ratios(Kind::Gateway, Kind::Floor);
        let raw_round_ratios = self.ratios(Kind::Gateway, Kind::Raw);
        GatewayRow {
            agents,
            raw_inserts_per_s: rates[Kind::Raw as usize],
            floor_actions_per_s: rates[Kind::Floor as usize],
            gateway_actions_per_s: rates[Kind::Gateway as usize],
            ratio: median(raw_round_ratios.clone()),
            floor_ratio: median(floor_round_ratios.clone()),
            p50_ms: quantile(&mut self.lat, 0.5),
            p99_ms: quantile(&mut self.lat, 0.99),
            floor_p50_ms: quantile(&mut self.floor_lat, 0.5),
            batched_actions_per_s: rates[Kind::Batched as usize],
            batched_floor_ratio: median(round_ratios.clone()),
            batched_p50_ms: quantile(&mut self.batched_lat, 0.5),
            batched_p99_ms: quantile(&mut self.batched_lat, 0.99),
            batched_per_call: self.per_call.iter().sum::<f64>() / self.per_call.len().max(1) as f64,
            round_ratios,
            floor_round_ratios,
            raw_round_ratios,
        }
    }
}

/// The median, the mean of the middle two for an even count (`quantile`
/// takes the upper one: with two rounds, the better); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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
        "CREATE TABLE public.bench_raw (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), agent text, tool text, \
         params jsonb, result jsonb, reasoning text, amount numeric, confidence real)",
    )
    .execute(&pool)
    .await?;
    create_floor_tables(&pool).await?;
    let server = super::server_facts(&pool).await?;
    Ok((pool, server))
}

/// Copies of the tables one action writes, for the floor: the same columns,
/// constraints, indexes, storage parameters and triggers (read from the
/// catalog, so they follow the real tables), the log partitioned the same way.
async fn create_floor_tables(pool: &sqlx::PgPool) -> Result<()> {
    let mut c = pool.acquire().await?;
    sqlx::raw_sql(
        "CREATE SCHEMA bench_floor;
         CREATE SEQUENCE bench_floor.action_log_seq;
         CREATE TABLE bench_floor.action_log (LIKE backstop.action_log INCLUDING ALL) PARTITION BY RANGE (at);
         CREATE TABLE bench_floor.action_log_now PARTITION OF bench_floor.action_log
             FOR VALUES FROM (now() - interval '1 day') TO (now() + interval '30 days');
         CREATE TABLE bench_floor.action_log_default PARTITION OF bench_floor.action_log DEFAULT;
         CREATE TABLE bench_floor.actions (LIKE backstop.actions INCLUDING ALL);
         CREATE TABLE bench_floor.agent_value_minutes (LIKE backstop.agent_value_minutes INCLUDING ALL);",
    )
    .execute(&mut *c)
    .await?;
    let copies: Vec<(String,)> = sqlx::query_as(
        "SELECT format('ALTER TABLE bench_floor.%I SET (%s)', c.relname, array_to_string(c.reloptions, ', '))
           FROM pg_class c
          WHERE c.relnamespace = 'backstop'::regnamespace
            AND c.relname IN ('actions', 'agent_value_minutes') AND c.reloptions IS NOT NULL
         UNION ALL
         SELECT replace(pg_get_triggerdef(t.oid), ' ON backstop.', ' ON bench_floor.')
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          WHERE c.relnamespace = 'backstop'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
            AND c.relname IN ('action_log', 'actions', 'agent_value_minutes')",
    )
    .fetch_all(&mut *c)
    .await?;
    for (stmt,) in copies {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt)).execute(&mut *c).await?;
    }
    Ok(())
}

/// What the gateway's speed on a big log is measured against, and what the
/// big log holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BigLog {
    pub agents: usize,
    pub rows: i64,
    pub empty_actions_per_s: f64,
    pub full_actions_per_s: f64,
    /// full / empty.
    pub ratio: f64,
    /// Rows the retention cut carried forward.
    pub carried: i32,
    /// The log's partitions in each database when measured (nothing on the
    /// hot path reads the log any more, so their count should not matter).
    pub partitions_empty: i64,
    pub partitions_full: i64,
}

/// The gateway on a log of `prefill` rows behind a real retention cut that
/// carried rows forward (held actions from before it), as a log looks after
/// months of use, against the same agents on an empty log: the hot path
/// must not notice either. The two logs are two databases on the same
/// server, measured in turns (empty, full, full, empty; half the time each),
/// so what the machine does meanwhile falls on both alike: one measurement
/// each, minutes apart, moved the ratio between 0.49 and 1.35 from run to run.
pub async fn run_prefilled(cfg: &Config, agents: usize, secs: f64, prefill: i64, progress: bool) -> Result<BigLog> {
    // Short partitions, so the cut can come soon after the first rows, and
    // enough of them ahead to cover the fill (production's are a month
    // wide, made two months ahead).
    let width = [("backstop.log_partition_width", "30 seconds")];
    let full_db = BenchDb::create_with(cfg, 4, &width).await?;
    let empty_db = match full_db.sibling("empty", 4, &width).await {
        Ok(db) => db,
        Err(e) => {
            full_db.drop_now().await?;
            return Err(e);
        }
    };
    let r = async {
        let (pool, _) = prepare(cfg, &full_db).await?;
        let (empty_pool, _) = prepare(cfg, &empty_db).await?;
        for p in [&pool, &empty_pool] {
            sqlx::query("UPDATE backstop.log_partitioning SET ahead = 20")
                .execute(p)
                .await?;
        }
        let ensure = || async {
            for p in [&pool, &empty_pool] {
                sqlx::query("SELECT backstop.ensure_log_partitions()").execute(p).await?;
            }
            anyhow::Ok(())
        };
        ensure().await?;
        async fn partitions(p: &sqlx::PgPool) -> Result<i64> {
            Ok(sqlx::query_scalar("SELECT count(*) FROM backstop.log_partitions")
                .fetch_one(p)
                .await?)
        }
        let full_logins = full_db.agent_logins("bench-agent-full", agents).await?;
        let empty_logins = empty_db.agent_logins("bench-agent-empty", agents).await?;
        if progress {
            eprintln!("bench gateway: {agents} agent(s) write the history a retention cut will archive ...");
        }
        run_gateway(&full_logins, secs / 2.0, None).await?;
        // Held actions stay open across the cut: it carries their rows.
        for i in 0..20u64 {
            let (mut params, _, reasoning) = payload(0, i);
            params["amount"] = serde_json::json!(20_000 + i);
            let d = contract::propose(
                &pool,
                &Proposal {
                    agent: "bench-held".into(),
                    tool: "issue_refund".into(),
                    params,
                    confidence: Some(0.93),
                    reasoning: Some(reasoning),
                    ..Default::default()
                },
            )
            .await?;
            anyhow::ensure!(
                d.verdict == Verdict::Hold,
                "a $20,000 refund was not held: {}",
                d.reason
            );
        }
        if progress {
            eprintln!("bench gateway: a retention cut behind that history (export, verify, drop) ...");
        }
        let cut = backstop::archive::wait_past_newest_partition(&pool).await?;
        let dir = std::env::temp_dir().join(format!("backstop-bench-big-log-{}", std::process::id()));
        let out = backstop::archive::archive(&pool, "bench", cut, &dir, true, progress).await;
        let _ = std::fs::remove_dir_all(&dir);
        let dropped = out?.dropped.ok_or_else(|| anyhow::anyhow!("the cut dropped nothing"))?;
        anyhow::ensure!(dropped.carried > 0, "the cut carried nothing forward");
        // The big log, dated after the cut (nothing may be dated before it).
        let to: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&pool).await?;
        crate::bench::supervisor::fill_log_between(&pool, prefill, 100, cut, to, progress).await?;
        ensure().await?;
        // A log that grew over months was sealed and vacuumed as it grew:
        // the bulk fill's one-time backlog (sealing it, the vacuum its
        // inserts set off, the checkpoint) is paid before the measurement.
        if progress {
            eprintln!("bench gateway: sealing and vacuuming the {prefill}-row log ...");
        }
        contract::seal_all(&pool).await?;
        // Both databases whole: sealing ten million rows writes their
        // digests too, and autovacuum would otherwise work through them, on
        // the same two cores, during the measurement.
        for p in [&pool, &empty_pool] {
            sqlx::query("VACUUM (ANALYZE)").execute(p).await?;
        }
        sqlx::query("CHECKPOINT").execute(&pool).await?;
        let quiet_by = Instant::now() + Duration::from_secs(120);
        while Instant::now() < quiet_by {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
            )
            .fetch_one(&pool)
            .await?;
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A second on each, not counted: a database's first connections
        // build its caches, which the empty one's first turn would pay alone.
        ensure().await?;
        for logins in [&empty_logins, &full_logins] {
            run_gateway(logins, 1.0, None).await?;
        }
        let (mut empty, mut full) = (0.0, 0.0);
        let (mut partitions_empty, mut partitions_full) = (0, 0);
        for (turn, on_full) in [false, true, true, false].into_iter().enumerate() {
            // Sealing and vacuuming can outlast the partitions made ahead;
            // housekeeping would have kept making them meanwhile.
            ensure().await?;
            partitions_empty = partitions_empty.max(partitions(&empty_pool).await?);
            partitions_full = partitions_full.max(partitions(&pool).await?);
            if progress {
                eprintln!(
                    "bench gateway: turn {} of 4: {agents} agent(s) on the {} log for {}s ...",
                    turn + 1,
                    if on_full { "full" } else { "empty" },
                    secs / 2.0
                );
            }
            let rate = run_gateway(if on_full { &full_logins } else { &empty_logins }, secs / 2.0, None).await?.0;
            if on_full {
                full += rate / 2.0;
            } else {
                empty += rate / 2.0;
            }
        }
        for p in [&pool, &empty_pool] {
            let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log_default")
                .fetch_one(p)
                .await?;
            anyhow::ensure!(
                in_default == 0,
                "{in_default} log row(s) fell into the default partition: the measurement is not of the log as production keeps it"
            );
        }
        anyhow::Ok(BigLog {
            agents,
            rows: prefill,
            empty_actions_per_s: empty,
            full_actions_per_s: full,
            ratio: if empty > 0.0 { full / empty } else { 0.0 },
            carried: dropped.carried,
            partitions_empty,
            partitions_full,
        })
    }
    .await;
    let dropped = (empty_db.drop_now().await, full_db.drop_now().await);
    let r = r?;
    dropped.0?;
    dropped.1?;
    Ok(r)
}

/// `bench gateway --log-rows`: the big-log figure alone.
pub fn render_big_log(r: &BigLog) -> String {
    let mut t = backstop::output::Table::new(&["log", "partitions", "actions/s"]);
    t.row(vec![
        "empty".into(),
        r.partitions_empty.to_string(),
        format!("{:.0}", r.empty_actions_per_s),
    ]);
    t.row(vec![
        format!("{} rows behind a retention cut ({} carried)", r.rows, r.carried),
        r.partitions_full.to_string(),
        format!("{:.0}", r.full_actions_per_s),
    ]);
    format!(
        "gateway, {} agent(s), each log measured twice in turns (empty, full, full, empty)\n{}full / empty: {:.2}\n",
        r.agents,
        t.render(),
        r.ratio
    )
}

pub fn render(r: &GatewayReport) -> String {
    let mut t = backstop::output::Table::new(&[
        "agents",
        "raw INSERT/s",
        "floor/s",
        "propose+record_result/s",
        "vs floor",
        "vs raw",
        "p50 ms",
        "p99 ms",
        "floor p50 ms",
        "batched/s",
        "batched vs floor",
        "batched p50 ms",
        "batched p99 ms",
        "a call",
    ]);
    for row in &r.rows {
        t.row(vec![
            row.agents.to_string(),
            format!("{:.0}", row.raw_inserts_per_s),
            format!("{:.0}", row.floor_actions_per_s),
            format!("{:.0}", row.gateway_actions_per_s),
            format!("{:.2}", row.floor_ratio),
            format!("{:.2}", row.ratio),
            format!("{:.2}", row.p50_ms),
            format!("{:.2}", row.p99_ms),
            format!("{:.2}", row.floor_p50_ms),
            format!("{:.0}", row.batched_actions_per_s),
            format!("{:.2}", row.batched_floor_ratio),
            format!("{:.2}", row.batched_p50_ms),
            format!("{:.2}", row.batched_p99_ms),
            format!("{:.1}", row.batched_per_call),
        ]);
    }
    let by_round: Vec<String> = r
        .rows
        .iter()
        .filter(|row| row.round_ratios.len() > 1)
        .map(|row| {
            let v: Vec<String> = row.round_ratios.iter().map(|x| format!("{x:.2}")).collect();
            format!("{} agent(s): {}", row.agents, v.join(" "))
        })
        .collect();
    let by_round = if by_round.is_empty() {
        String::new()
    } else {
        format!("batched vs floor, round by round: {}\n", by_round.join("; "))
    };
    format!(
        "{}\n{} ({}s per measurement in {} round(s), each kind in every round, the floor next to the batched gateway; \
         rates: the rounds' mean; ratios: the median of the rounds' own; \
         floor: the same rows by plain SQL in the same two transactions; \
         p50/p99: one action's propose + record_result round trips; batched: the same agents through one \
         batching gateway, {} connections as lanes, each agent on one, at most {} requests a call; a call: requests \
         it carried on average)\n{}{}",
        r.server,
        r.database,
        r.seconds,
        r.rounds,
        GATEWAY_CONNECTIONS,
        GATEWAY_BATCH,
        t.render(),
        by_round
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_is_cut_into_rounds_of_two_seconds_or_more_at_most_five() {
        assert_eq!(rounds_for(0.5), 1);
        assert_eq!(rounds_for(2.0), 1);
        assert_eq!(rounds_for(5.0), 2);
        assert_eq!(rounds_for(10.0), 5);
        assert_eq!(rounds_for(600.0), 5);
    }

    #[test]
    fn a_ratio_is_the_median_of_the_rounds_own_and_a_rate_their_mean() {
        // One round where the machine stalled during the floor: the median
        // of the rounds' ratios ignores it, a ratio of the means would not.
        let m = Rounds {
            per_s: vec![
                [100.0, 1000.0, 300.0, 800.0],
                [100.0, 200.0, 300.0, 900.0],
                [100.0, 1000.0, 300.0, 850.0],
            ],
            ..Default::default()
        };
        let row = m.row(16);
        assert_eq!(row.batched_floor_ratio, 0.85);
        assert_eq!(row.round_ratios, vec![0.8, 4.5, 0.85]);
        assert!((row.floor_actions_per_s - 2200.0 / 3.0).abs() < 1e-9);
        assert_eq!(row.floor_ratio, 0.3);
        assert_eq!(row.floor_round_ratios, vec![0.3, 1.5, 0.3]);
        assert_eq!(row.ratio, 3.0);
        assert_eq!(row.raw_round_ratios, vec![3.0, 3.0, 3.0]);
        // Two rounds: their mean, not the better of the two.
        let two = Rounds {
            per_s: vec![[1.0, 1000.0, 1.0, 700.0], [1.0, 1000.0, 1.0, 900.0]],
            ..Default::default()
        };
        assert!((two.row(16).batched_floor_ratio - 0.8).abs() < 1e-12);
        // No rounds: zeros, not a panic.
        let empty = Rounds::default().row(1);
        assert_eq!((empty.batched_floor_ratio, empty.floor_actions_per_s), (0.0, 0.0));
    }
}
