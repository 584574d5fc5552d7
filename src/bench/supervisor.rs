//! `backstop bench supervisor`: review lag while actions arrive at a target
//! rate (p50 / p99, beside the configured review delay), and the time of a
//! drift pass over 100 agents on a large log, beside the same counts taken
//! from the raw log.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use sqlx::PgPool;

use super::BenchDb;
use backstop::config::Config;
use backstop::supervisor::{self, SupervisorOptions, SupervisorStats};

#[derive(Debug, Clone, Serialize)]
pub struct SupervisorReport {
    pub server: String,
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub seconds: f64,
    pub reviews: i64,
    pub review_delay_s: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub log_rows: i64,
    pub agents: i64,
    pub drift_pass_ms: f64,
    pub raw_counts_ms: f64,
    /// Scrapes of the supervisor's /metrics during the load (`--metrics`: one a second).
    pub scrapes: u64,
}

/// Append `rows` synthetic decisions by `agents` agents spread over the last
/// `hours`, straight into the log (the benchmark needs volume, not the
/// contract's checks), in chunks with progress.
pub async fn fill_log(pool: &PgPool, rows: i64, agents: i64, hours: f64, progress: bool) -> Result<()> {
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::milliseconds((hours * 3_600_000.0) as i64);
    fill_log_between(pool, rows, agents, from, to, progress).await
}

/// `rows` gateway-like log rows from `agents` agents, dated evenly from
/// `from` to `to`.
pub async fn fill_log_between(
    pool: &PgPool,
    rows: i64,
    agents: i64,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    progress: bool,
) -> Result<()> {
    let chunk = 500_000i64;
    let mut done = 0i64;
    while done < rows {
        let n = chunk.min(rows - done);
        sqlx::query(
            "INSERT INTO backstop.action_log (at, kind, actor, agent, tool, action_id, amount, confidence, params, detail)
             SELECT $4 + ($5 - $4) * (g::double precision / $6),
                    'allowed', 'bench-' || (g % $3), 'bench-' || (g % $3),
                    (ARRAY['issue_refund', 'issue_credit', 'send_email', 'update_customer_field'])[1 + (g * 7 % 4)::int],
                    gen_random_uuid(), (g % 997)::numeric, ((g % 100) / 100.0)::real,
                    jsonb_build_object('customer_id', 'c-' || (g % 5000), 'amount', g % 997),
                    jsonb_build_object('verdict', CASE WHEN g % 50 = 0 THEN 'hold' ELSE 'allow' END, 'reason', 'allowed by policy')
               FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(done)
        .bind(done + n - 1)
        .bind(agents)
        .bind(from)
        .bind(to)
        .bind(rows as f64)
        .execute(pool)
        .await?;
        done += n;
        if progress {
            eprintln!("bench: {done} of {rows} log rows");
        }
    }
    Ok(())
}

pub async fn run(cfg: &Config, rate: f64, secs: f64, log_rows: i64, progress: bool) -> Result<SupervisorReport> {
    run_scraped(cfg, rate, secs, log_rows, progress, false).await
}

/// `run`, with the supervisor's metrics served and scraped once a second
/// during the load when `scraped` (its figures should not move).
pub async fn run_scraped(
    cfg: &Config,
    rate: f64,
    secs: f64,
    log_rows: i64,
    progress: bool,
    scraped: bool,
) -> Result<SupervisorReport> {
    let bench = BenchDb::create(cfg, 16).await?;
    let r = measure(cfg, &bench, rate, secs, log_rows, progress, scraped).await;
    bench.drop_now().await?;
    r
}

async fn measure(
    _cfg: &Config,
    bench: &BenchDb,
    rate: f64,
    secs: f64,
    log_rows: i64,
    progress: bool,
    scraped: bool,
) -> Result<SupervisorReport> {
    let pool = bench.db.pool.clone();
    let server = super::server_facts(&pool).await?;
    backstop::demo::install_systems(&pool).await?;
    let reg = backstop::demo::registry()?;
    backstop::registry::sync(&pool, &reg, "bench").await?;
    let policy_text = "[supervisor]\nreview_delay = \"1s\"\nsample_rate = 0.08\n[supervisor.review_all]\nclasses = [\"irreversible\"]\n";
    let pol = backstop::policy::parse("bench-policy.toml", policy_text, Some(&reg))
        .map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    backstop::policy::sync(&pool, &pol, "bench").await?;
    let (_, settings) = backstop::policy::active_supervisor(&pool).await?;

    // Part 1: review lag at the target rate, one supervisor in-process.
    if progress {
        eprintln!("bench supervisor: {rate:.0} actions/s for {secs}s with a supervisor running ...");
    }
    let sup_db = bench.db.as_operator(supervisor::ACTOR, 8).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut opts = SupervisorOptions::named("bench-supervisor");
    opts.tick = Duration::from_millis(50);
    let sup = tokio::spawn(supervisor::run(sup_db.pool.clone(), opts, rx));
    let scrapes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scraper = if scraped {
        let (addr, server) = backstop::metrics::serve(
            ([127, 0, 0, 1], 0).into(),
            sup_db.pool.clone(),
            "supervisor",
            "bench-supervisor",
        )
        .await?;
        let url = format!("http://{addr}/metrics");
        let client = reqwest::Client::new();
        let n = scrapes.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                    && r.text().await.is_ok()
                {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Some((server, task))
    } else {
        None
    };
    // The load: server-side loops through the contract, paced per 100 ms slice.
    let t0 = Instant::now();
    let per_slice = (rate / 10.0).max(1.0) as i64;
    let mut slices = 0u64;
    let mut made = 0i64;
    while t0.elapsed().as_secs_f64() < secs {
        let slice_start = Instant::now();
        let half = per_slice / 2;
        let sql = |n: i64, k: u64| {
            format!(
                "DO $$ DECLARE a uuid; BEGIN FOR i IN 1 .. {n} LOOP
                   SELECT action_id INTO a FROM backstop.propose('agent-' || (i % 50), 'issue_credit',
                       jsonb_build_object('customer_id', 'c-' || i, 'amount', 1 + i % 40), confidence => 0.97);
                   PERFORM backstop.record_result(a, true, jsonb_build_object('credit_id', 'cr-{k}-' || i));
                 END LOOP; END $$"
            )
        };
        let (p1, p2) = (pool.clone(), pool.clone());
        let (s1, s2) = (sql(half, slices * 2), sql(per_slice - half, slices * 2 + 1));
        let (a, b) = tokio::join!(
            sqlx::raw_sql(sqlx::AssertSqlSafe(s1)).execute(&p1),
            sqlx::raw_sql(sqlx::AssertSqlSafe(s2)).execute(&p2)
        );
        a?;
        b?;
        made += per_slice;
        slices += 1;
        if let Some(rest) = Duration::from_millis(100).checked_sub(slice_start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some((server, task)) = scraper {
        task.abort();
        server.abort();
    }
    // Let the supervisor finish what is due.
    let wait = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.reviews WHERE status <> 'done'")
            .fetch_one(&pool)
            .await?;
        if open == 0 || wait.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(true);
    let _stats: SupervisorStats = sup.await??;
    let (reviews, p50, p99): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM done_at - due_at) * 1000),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM done_at - due_at) * 1000)
           FROM backstop.reviews WHERE status = 'done'",
    )
    .fetch_one(&pool)
    .await?;

    // Part 2: a drift pass over 100 agents on a large log.
    if progress {
        eprintln!("bench supervisor: building a {log_rows}-row log for the drift pass ...");
    }
    fill_log(&pool, log_rows, 100, 24.0, progress).await?;
    sqlx::query("TRUNCATE backstop.rollups").execute(&pool).await?;
    sqlx::query(
        "INSERT INTO backstop.rollups (agent, bucket, counts)
         SELECT agent, bucket, counts FROM backstop.rollups_from_log('-infinity', 'infinity', $1)",
    )
    .bind(settings.drift.bucket_seconds)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE backstop.rollups").execute(&pool).await?;
    let mut st = SupervisorStats::default();
    // Warm once, then time.
    supervisor::drift_pass(&sup_db.pool, &settings, &mut st).await?;
    let t0 = Instant::now();
    supervisor::drift_pass(&sup_db.pool, &settings, &mut st).await?;
    let drift_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // The baseline: the same counts straight from the raw log.
    let d = &settings.drift;
    let t0 = Instant::now();
    let _: Vec<(Option<String>, bool, String, i64)> = sqlx::query_as(
        "SELECT l.agent, l.at >= now() - make_interval(secs => $1), k.key, count(*)
           FROM backstop.action_log l
          CROSS JOIN LATERAL unnest(backstop.rollup_keys(l.kind, l.tool, l.amount, l.confidence, l.detail)) k(key)
          WHERE l.at >= now() - make_interval(secs => $1 + $2)
          GROUP BY 1, 2, 3",
    )
    .bind(d.recent_seconds)
    .bind(d.baseline_seconds)
    .fetch_all(&pool)
    .await?;
    let raw_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let total_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log")
        .fetch_one(&pool)
        .await?;
    sup_db.pool.close().await;
    Ok(SupervisorReport {
        server,
        target_rate: rate,
        achieved_rate: made as f64 / elapsed,
        seconds: elapsed,
        reviews,
        review_delay_s: settings.review_delay_seconds,
        lag_p50_ms: p50.unwrap_or(0.0),
        lag_p99_ms: p99.unwrap_or(0.0),
        log_rows: total_rows,
        agents: 100,
        drift_pass_ms: drift_ms,
        raw_counts_ms: raw_ms,
        scrapes: scrapes.load(std::sync::atomic::Ordering::Relaxed),
    })
}

pub fn render(r: &SupervisorReport) -> String {
    format!(
        "{}\nreview lag beyond the {:.0}s delay at {:.0} actions/s (target {:.0}) over {:.0}s, {} reviews: p50 {:.0} ms, p99 {:.0} ms\n\
         drift pass over {} agents on a {}-row log: {:.0} ms; the same counts from the raw log: {:.0} ms (ratio {:.2})\n",
        r.server,
        r.review_delay_s,
        r.achieved_rate,
        r.target_rate,
        r.seconds,
        r.reviews,
        r.lag_p50_ms,
        r.lag_p99_ms,
        r.agents,
        r.log_rows,
        r.drift_pass_ms,
        r.raw_counts_ms,
        r.drift_pass_ms / r.raw_counts_ms.max(1e-9)
    ) + &if r.scrapes > 0 {
        format!("with /metrics scraped {} times during the load\n", r.scrapes)
    } else {
        String::new()
    }
}
