//! `backstop bench all`: every benchmark in one run, one table, each figure
//! beside its baseline from the same run. `--quick` shrinks every size so
//! the whole suite takes a couple of minutes (the CI smoke run).

use anyhow::Result;
use serde::Serialize;

use backstop::config::Config;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub what: String,
    pub value: f64,
    pub unit: String,
    pub baseline_what: String,
    pub baseline: f64,
    /// value / baseline, when a ratio means something.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub quick: bool,
    pub server: String,
    pub seconds: f64,
    pub figures: Vec<Figure>,
}

fn fig(what: &str, value: f64, unit: &str, baseline_what: &str, baseline: f64, ratio: bool) -> Figure {
    Figure {
        what: what.into(),
        value,
        unit: unit.into(),
        baseline_what: baseline_what.into(),
        baseline,
        ratio: (ratio && baseline > 0.0).then(|| value / baseline),
    }
}

pub async fn run(cfg: &Config, quick: bool, progress: bool) -> Result<SuiteReport> {
    let t0 = std::time::Instant::now();
    let secs = if quick { 2.0 } else { 10.0 };
    let big_log: i64 = if quick { 200_000 } else { 10_000_000 };
    let mut figures = Vec::new();

    let g = super::gateway::run(cfg, &[1, 4, 16], secs, progress).await?;
    for r in &g.rows {
        figures.push(fig(
            &format!("gateway, {} agent(s): actions/s", r.agents),
            r.gateway_actions_per_s,
            "/s",
            "raw INSERT/s",
            r.raw_inserts_per_s,
            true,
        ));
    }
    let (empty, full) = super::gateway::run_prefilled(cfg, 4, secs, big_log, progress).await?;
    figures.push(fig(
        &format!("gateway, 4 agents, {big_log}-row log: actions/s"),
        full,
        "/s",
        "same, empty log",
        empty,
        true,
    ));

    let p = super::pause::run(cfg, 1000, if quick { 2.0 } else { 5.0 }, progress).await?;
    figures.push(fig(
        "pause seen by all 1,000 agents, p50",
        p.observed_p50_ms,
        "ms",
        "a proposal's round trip p50 (queued)",
        p.round_trip_p50_ms,
        true,
    ));
    figures.push(fig(
        "pause seen by all 1,000 agents, p99",
        p.observed_p99_ms,
        "ms",
        "a proposal's round trip p50 (queued)",
        p.round_trip_p50_ms,
        true,
    ));
    figures.push(fig(
        "actions allowed after the pause committed",
        p.allows_after_pause as f64,
        "",
        "required",
        0.0,
        false,
    ));

    let rate = if quick { 500.0 } else { 2000.0 };
    let room = super::room::run(cfg, rate, secs, big_log, progress).await?;
    figures.push(fig(
        &format!("room commit-to-screen p50 at {:.0}/s", room.achieved_rate),
        room.latency_p50_ms,
        "ms",
        "NOTIFY round trip p50",
        room.notify_p50_ms,
        true,
    ));
    figures.push(fig(
        &format!("room commit-to-screen p99 at {:.0}/s", room.achieved_rate),
        room.latency_p99_ms,
        "ms",
        "NOTIFY round trip p99",
        room.notify_p99_ms,
        true,
    ));
    figures.push(fig(
        &format!("room first frame, {big_log}-row log"),
        room.first_frame_ms,
        "ms",
        "empty log",
        room.first_frame_empty_ms,
        true,
    ));

    let sup = super::supervisor::run(cfg, rate, secs, big_log, progress).await?;
    figures.push(fig(
        &format!("drift pass, 100 agents, {big_log}-row log"),
        sup.drift_pass_ms,
        "ms",
        "the same counts from the raw log",
        sup.raw_counts_ms,
        true,
    ));
    figures.push(fig(
        &format!("review lag p99 at {:.0}/s", sup.achieved_rate),
        sup.lag_p99_ms,
        "ms",
        "review lag p50",
        sup.lag_p50_ms,
        true,
    ));

    let comp = super::compensation::run(cfg, if quick { 1000 } else { 10_000 }, progress).await?;
    for r in &comp.rows {
        figures.push(fig(
            &format!("compensations/s, {} worker(s)", r.workers),
            r.per_s,
            "/s",
            "direct inverse calls/s",
            r.direct_calls_per_s,
            true,
        ));
    }
    figures.push(fig(
        &format!("plan of a {}-action rollback", comp.plan_actions),
        comp.plan_seconds * 1000.0,
        "ms",
        "selecting the same actions",
        comp.select_seconds * 1000.0,
        true,
    ));

    let ret = super::retention::run(cfg, if quick { 100_000 } else { 1_000_000 }, progress).await?;
    figures.push(fig(
        &format!("archive and drop {} rows: rows/s", ret.rows),
        ret.export_rows_per_s,
        "/s",
        "reading the same rows",
        ret.read_rows_per_s,
        true,
    ));
    figures.push(fig(
        "agents' p99 while the log is cut",
        ret.during_p99_ms,
        "ms",
        "p99 just before",
        ret.before_p99_ms,
        true,
    ));
    figures.push(fig(
        "agent calls that failed during the cut",
        ret.agent_failures as f64,
        "",
        "required",
        0.0,
        false,
    ));

    Ok(SuiteReport {
        quick,
        server: g.server.clone(),
        seconds: t0.elapsed().as_secs_f64(),
        figures,
    })
}

pub fn render(r: &SuiteReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backstop bench all{} ({:.0} s) on {}",
        if r.quick { " --quick" } else { "" },
        r.seconds,
        r.server
    );
    let _ = writeln!(
        s,
        "{:<52} {:>13}  {:<36} {:>10} {:>8}",
        "figure", "value", "baseline", "", "ratio"
    );
    for f in &r.figures {
        let v = |x: f64| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        };
        let _ = writeln!(
            s,
            "{:<52} {:>9} {:<3}  {:<36} {:>10} {:>8}",
            f.what,
            v(f.value),
            f.unit,
            f.baseline_what,
            v(f.baseline),
            f.ratio.map(|x| format!("{x:.2}")).unwrap_or_default()
        );
    }
    s
}
