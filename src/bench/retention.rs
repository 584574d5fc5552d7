//! `backstop bench retention`: what cutting the log costs. A log of
//! `rows` gateway-sized rows is written across short real partitions, then
//! `backstop archive` exports, verifies and drops them while agents keep
//! proposing and recording through the contract. Figures: the export's
//! rows/s against reading the same rows, and the agents' latency while the
//! archive runs against just before it (a drop takes the log's lock for a
//! moment), with the count of agent calls that failed (must be 0).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::BenchDb;
use backstop::config::Config;
use backstop::contract::{self, Proposal, Verdict};

#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    pub server: String,
    pub database: String,
    pub rows: i64,
    pub partitions: usize,
    pub export_rows_per_s: f64,
    pub read_rows_per_s: f64,
    pub archive_seconds: f64,
    pub archive_bytes: u64,
    pub drop_ms: f64,
    pub carried: i32,
    pub before_p50_ms: f64,
    pub before_p99_ms: f64,
    pub during_p50_ms: f64,
    pub during_p99_ms: f64,
    pub during_max_ms: f64,
    /// The longest agent call that overlapped the drop's transaction.
    pub drop_stall_ms: f64,
    pub agent_calls_during: usize,
    pub agent_failures: usize,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(cfg: &Config, rows: i64, progress: bool) -> Result<RetentionReport> {
    // Partitions a few seconds wide, so a benchmark can age them.
    let width = if rows > 300_000 { 20 } else { 5 };
    let bench = BenchDb::create_with(cfg, 8, &[("backstop.log_partition_width", &format!("{width} seconds"))]).await?;
    let r = measure(cfg, &bench, rows, width, progress).await;
    bench.drop_now().await?;
    r
}

async fn measure(cfg: &Config, bench: &BenchDb, rows: i64, width: i64, progress: bool) -> Result<RetentionReport> {
    let (pool, server) = super::gateway::prepare(cfg, bench).await?;
    // Partitions made far ahead, as month-wide ones are weeks ahead in
    // production: making one waits for every reader of the default
    // partition (the export, the cut's checks), and with a few seconds of
    // partitions ahead the agents' rows would fall into it meanwhile.
    sqlx::query("UPDATE backstop.log_partitioning SET ahead = 100")
        .execute(&pool)
        .await?;
    let ensure = || async {
        sqlx::query("SELECT backstop.ensure_log_partitions()")
            .execute(&pool)
            .await
            .map(|_| ())
    };
    ensure().await?;
    // Gateway-sized rows (about 1 KB each), bulk-inserted as kind `bench`,
    // which no projection reads, in chunks so housekeeping keeps partitions ahead.
    let chunk = 25_000i64;
    let mut done = 0i64;
    while done < rows {
        let n = chunk.min(rows - done);
        sqlx::query(
            "INSERT INTO backstop.action_log (kind, actor, agent, tool, params, result, reasoning, amount, confidence)
             SELECT 'bench', 'bench', 'bench-' || (g % 100), 'issue_refund',
                    jsonb_build_object('customer_id', 'c-' || (g % 5000), 'amount', g % 997, 'order_id', 'o-' || g,
                                       'reason', repeat('the customer reported a damaged item; ', 5)),
                    jsonb_build_object('refund_id', 'rf-' || g, 'status', 'issued', 'note', repeat('ok ', 40)),
                    repeat('reasoning about the refund and the order history; ', 10), (g % 997)::numeric, 0.93
               FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(done)
        .bind(done + n - 1)
        .execute(&pool)
        .await?;
        ensure().await?;
        done += n;
        if progress && (done % 200_000 == 0 || done == rows) {
            eprintln!("bench retention: {done} of {rows} rows written");
        }
    }
    // Wait for the partition holding the last row to end, then seal it all.
    if progress {
        eprintln!("bench retention: waiting for the partition to end ({width}s partitions), then sealing ...");
    }
    let end = backstop::archive::wait_past_newest_partition(&pool).await?;
    contract::seal_all(&pool).await?;

    // Agents through the contract the whole time; the sealer as in production.
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<(Instant, f64, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for a in 0..4usize {
        let mut c = PgConnection::connect_with(&bench.db.options).await?;
        let (stop, samples) = (stop.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (params, result, reasoning) = super::gateway::payload(a, i);
                let t = Instant::now();
                let ok = async {
                    let d = contract::propose(
                        &mut c,
                        &Proposal {
                            agent: format!("retention-agent-{a}"),
                            tool: "issue_refund".into(),
                            params,
                            confidence: Some(0.93),
                            reasoning: Some(reasoning),
                            ..Default::default()
                        },
                    )
                    .await?;
                    anyhow::ensure!(d.verdict == Verdict::Allow, "not allowed: {}", d.reason);
                    contract::record_result(&mut c, d.action_id, true, Some(&result), None).await?;
                    anyhow::Ok(())
                }
                .await
                .is_ok();
                if let Ok(mut s) = samples.lock() {
                    s.push((t, t.elapsed().as_secs_f64() * 1000.0, ok));
                }
                i += 1;
            }
        }));
    }
    let sealing = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = contract::seal_all(&pool).await;
                let _ = sqlx::query("SELECT backstop.ensure_log_partitions()")
                    .execute(&pool)
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Baseline for the export, under the same load: reading the same rows
    // with their canonical text and as JSON.
    let t = Instant::now();
    let n_read: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backstop.action_log l WHERE l.at < $1 AND length(backstop.canon(l)) + length(to_jsonb(l)::text) > 0",
    )
    .bind(end)
    .fetch_one(&pool)
    .await?;
    let read_rows_per_s = n_read as f64 / t.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = Instant::now();
    if progress {
        eprintln!("bench retention: archiving {n_read} rows while 4 agents keep writing ...");
    }
    let dir = std::env::temp_dir().join(format!("backstop-bench-archive-{}", std::process::id()));
    let out = backstop::archive::archive(&pool, "bench", end, &dir, true, progress).await;
    let archive_seconds = started.elapsed().as_secs_f64();
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let _ = sealing.await;
    let out = out?;
    let dropped = out
        .dropped
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the archive did not drop"))?;
    let archive_bytes = match &out.dir {
        Some(d) => std::fs::read_dir(d)?
            .filter_map(|e| e.ok().and_then(|e| e.metadata().ok()).map(|m| m.len()))
            .sum(),
        None => 0,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let report = contract::verify::verify(&pool, true, true).await?;
    anyhow::ensure!(
        report.ok,
        "the log did not verify after the cut: {:?}",
        report.problems.first()
    );

    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let base_from = started - Duration::from_secs(2);
    let mut before: Vec<f64> = samples
        .iter()
        .filter(|(t, _, _)| *t >= base_from && *t < started)
        .map(|s| s.1)
        .collect();
    let during_all: Vec<&(Instant, f64, bool)> = samples
        .iter()
        .filter(|(t, _, _)| *t >= started && *t < finished)
        .collect();
    let mut during: Vec<f64> = during_all.iter().map(|s| s.1).collect();
    let agent_failures = samples.iter().filter(|s| !s.2).count();
    let drop_from = finished - Duration::from_secs_f64(dropped.millis / 1000.0);
    let drop_stall_ms = samples
        .iter()
        .filter(|(t, ms, _)| *t < finished && *t + Duration::from_secs_f64(ms / 1000.0) > drop_from)
        .map(|s| s.1)
        .fold(0.0, f64::max);
    Ok(RetentionReport {
        server,
        database: bench.describe(),
        rows: dropped.rows,
        partitions: dropped.partitions.len(),
        export_rows_per_s: n_read as f64 / archive_seconds,
        read_rows_per_s,
        archive_seconds,
        archive_bytes,
        drop_ms: dropped.millis,
        carried: dropped.carried,
        before_p50_ms: pct(&mut before, 0.5),
        before_p99_ms: pct(&mut before, 0.99),
        during_p50_ms: pct(&mut during, 0.5),
        during_p99_ms: pct(&mut during, 0.99),
        during_max_ms: during.iter().cloned().fold(0.0, f64::max),
        drop_stall_ms,
        agent_calls_during: during_all.len(),
        agent_failures,
    })
}

pub fn render(r: &RetentionReport) -> String {
    format!(
        "retention: {}\n{}\n\
         cut {} rows in {} partition(s): archive (export, verify, drop) {:.1} s, {:.0} rows/s \
         (reading the same rows: {:.0} rows/s, ratio {:.2}); archive {:.1} MB\n\
         the drop's transaction: {:.0} ms (the longest agent call overlapping it: {:.0} ms); {} row(s) carried forward\n\
         agents (4, propose + record_result): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms while archiving \
         ({} calls) against p50 {:.1} ms, p99 {:.1} ms just before (p99 ratio {:.2}); failed calls: {}\n",
        r.server,
        r.database,
        r.rows,
        r.partitions,
        r.archive_seconds,
        r.export_rows_per_s,
        r.read_rows_per_s,
        r.export_rows_per_s / r.read_rows_per_s.max(1e-9),
        r.archive_bytes as f64 / 1e6,
        r.drop_ms,
        r.drop_stall_ms,
        r.carried,
        r.during_p50_ms,
        r.during_p99_ms,
        r.during_max_ms,
        r.agent_calls_during,
        r.before_p50_ms,
        r.before_p99_ms,
        r.during_p99_ms / r.before_p99_ms.max(1e-9),
        r.agent_failures
    )
}
