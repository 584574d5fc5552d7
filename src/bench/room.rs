//! `backstop bench room`: commit-to-screen latency of the control room while
//! actions arrive at a target rate, beside the database's own NOTIFY round
//! trip; and the real binary's time to first frame, resident memory and idle
//! CPU with a large log, beside the same with an empty one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde::Serialize;
use sqlx::postgres::PgListener;

use super::BenchDb;
use backstop::config::Config;
use backstop::tui::{RoomOptions, run_loop};

#[derive(Debug, Clone, Serialize)]
pub struct RoomReport {
    pub server: String,
    pub rate: f64,
    pub achieved_rate: f64,
    pub rows_measured: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub notify_p50_ms: f64,
    pub notify_p99_ms: f64,
    pub log_rows: i64,
    pub first_frame_ms: f64,
    pub first_frame_empty_ms: f64,
    pub rss_mb: f64,
    pub rss_empty_mb: f64,
    pub idle_cpu_percent: f64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn notify_round_trip(bench: &BenchDb) -> Result<Vec<f64>> {
    let mut l = PgListener::connect_with(&bench.db.pool).await?;
    l.listen("bench_ping").await?;
    let mut out = Vec::new();
    for i in 0..300 {
        let t0 = Instant::now();
        sqlx::query("SELECT pg_notify('bench_ping', $1)")
            .bind(i.to_string())
            .execute(&bench.db.pool)
            .await?;
        l.recv().await?;
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    Ok(out)
}

/// The room binary, headless (BACKSTOP_ROOM_HEADLESS), against `url`:
/// time to its first frame with data, then its memory and idle CPU.
async fn measure_binary(url: &str, idle: Duration) -> Result<(f64, f64, f64)> {
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .args(["--no-watch", "--operator", "bench"])
        .env("DATABASE_URL", url)
        .env("BACKSTOP_ROOM_HEADLESS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("room pid")?;
    let stderr = child.stderr.take().context("room stderr")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let first_ms = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await??
            .context("the room exited")?;
        if line.starts_with("first-frame") {
            break t0.elapsed().as_secs_f64() * 1000.0;
        }
    };
    let rss = || -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    let cpu = || -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>().join(" ");
                let f: Vec<&str> = after.split(' ').collect();
                Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
            })
            .unwrap_or(0.0)
    };
    // Let start-up work settle, then measure an idle stretch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (c0, t_idle) = (cpu(), Instant::now());
    tokio::time::sleep(idle).await;
    let idle_cpu = (cpu() - c0) / ticks / t_idle.elapsed().as_secs_f64() * 100.0;
    let mem = rss();
    let _ = child.kill().await;
    Ok((first_ms, mem, idle_cpu))
}

pub async fn run(cfg: &Config, rate: f64, secs: f64, log_rows: i64, progress: bool) -> Result<RoomReport> {
    let bench = BenchDb::create(cfg, 16).await?;
    let r = measure(cfg, &bench, rate, secs, log_rows, progress).await;
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
) -> Result<RoomReport> {
    let pool = bench.db.pool.clone();
    let server = super::server_facts(&pool).await?;
    backstop::demo::install_systems(&pool).await?;
    let reg = backstop::demo::registry()?;
    backstop::registry::sync(&pool, &reg, "bench").await?;
    let pol = backstop::policy::parse("bench-policy.toml", "", Some(&reg)).map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    backstop::policy::sync(&pool, &pol, "bench").await?;
    let url = bench.url_for(bench.name());

    if progress {
        eprintln!("bench room: the room binary on an empty log ...");
    }
    let (first_empty, rss_empty, _) = measure_binary(&url, Duration::from_secs(2)).await?;

    if progress {
        eprintln!("bench room: commit-to-screen at {rate:.0} actions/s for {secs}s ...");
    }
    let lat = Arc::new(Mutex::new(Vec::<i64>::new()));
    let (stop_tx, stop_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<crossterm::event::Event>>();
    let events = Box::pin(futures_util::stream::unfold(stop_rx, |mut rx| async move {
        rx.recv().await.map(|e| (e, rx))
    }));
    let db = bench.db.clone();
    let opts = RoomOptions {
        history: 100,
        latencies: Some(lat.clone()),
        ..Default::default()
    };
    let room = tokio::spawn(async move {
        let mut term = Terminal::new(TestBackend::new(120, 40))?;
        run_loop(&mut term, events, db, "bench", opts, false).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let per_slice = (rate / 10.0).max(1.0) as i64;
    let mut made = 0i64;
    while t0.elapsed().as_secs_f64() < secs {
        let slice = Instant::now();
        let half = per_slice / 2;
        // One transaction per action (COMMIT inside the loop), so each row's
        // insert time is its commit time within a fraction of a millisecond.
        let sql = |n: i64, who: &str| {
            format!(
                "DO $$ DECLARE a uuid; BEGIN FOR i IN 1 .. {n} LOOP
                   SELECT action_id INTO a FROM backstop.propose('{who}-' || (i % 20), 'issue_credit',
                       jsonb_build_object('customer_id', 'c-' || i, 'amount', 1), confidence => 0.97);
                   COMMIT;
                 END LOOP; END $$"
            )
        };
        let (p1, p2) = (pool.clone(), pool.clone());
        let (s1, s2) = (sql(half, "a"), sql(per_slice - half, "b"));
        let (a, b) = tokio::join!(
            sqlx::raw_sql(sqlx::AssertSqlSafe(s1)).execute(&p1),
            sqlx::raw_sql(sqlx::AssertSqlSafe(s2)).execute(&p2)
        );
        a?;
        b?;
        made += per_slice;
        if let Some(rest) = Duration::from_millis(100).checked_sub(slice.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let achieved = made as f64 / t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stop_tx);
    room.await??;
    let mut l: Vec<f64> = lat
        .lock()
        .map(|v| v.iter().map(|x| *x as f64).collect())
        .unwrap_or_default();
    let mut n = notify_round_trip(bench).await?;

    if progress {
        eprintln!("bench room: building a {log_rows}-row log ...");
    }
    super::supervisor::fill_log(&pool, log_rows, 100, 24.0, progress).await?;
    sqlx::query("ANALYZE backstop.action_log").execute(&pool).await?;
    if progress {
        eprintln!("bench room: the room binary on the big log ...");
    }
    let (first, rss, idle_cpu) = measure_binary(&url, Duration::from_secs(10)).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log")
        .fetch_one(&pool)
        .await?;
    Ok(RoomReport {
        server,
        rate,
        achieved_rate: achieved,
        rows_measured: l.len(),
        latency_p50_ms: pct(&mut l, 0.5),
        latency_p99_ms: pct(&mut l, 0.99),
        notify_p50_ms: pct(&mut n, 0.5),
        notify_p99_ms: pct(&mut n, 0.99),
        log_rows: total,
        first_frame_ms: first,
        first_frame_empty_ms: first_empty,
        rss_mb: rss,
        rss_empty_mb: rss_empty,
        idle_cpu_percent: idle_cpu,
    })
}

pub fn render(r: &RoomReport) -> String {
    format!(
        "{}\ncommit-to-screen at {:.0} actions/s (target {:.0}), {} rows: p50 {:.0} ms, p99 {:.0} ms; NOTIFY round trip p50 {:.1} ms, p99 {:.1} ms (ratio p99 {:.1})\n\
         first frame with a {}-row log: {:.0} ms (empty log: {:.0} ms, ratio {:.2}); resident memory {:.0} MB (empty log: {:.0} MB); idle CPU {:.2}%\n",
        r.server,
        r.achieved_rate,
        r.rate,
        r.rows_measured,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.notify_p50_ms,
        r.notify_p99_ms,
        r.latency_p99_ms / r.notify_p99_ms.max(1e-9),
        r.log_rows,
        r.first_frame_ms,
        r.first_frame_empty_ms,
        r.first_frame_ms / r.first_frame_empty_ms.max(1e-9),
        r.rss_mb,
        r.rss_empty_mb,
        r.idle_cpu_percent
    )
}
