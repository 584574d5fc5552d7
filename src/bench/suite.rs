//! `backstop bench all`: every benchmark in one run, one table, each figure
//! beside its baseline from the same run. `--quick` shrinks every size so
//! the whole suite takes a couple of minutes (the CI smoke run).
//!
//! Every ratio has a floor recorded in `bench/floors.toml` (a ratio from one
//! quick run on the CI machine: the machine's speed cancels in a ratio). The
//! quick suite fails when a ratio falls below half its floor, or, for a ratio
//! where lower is better (a time against a baseline time), rises above twice
//! its ceiling; a figure that must be 0 fails when it is not. Raising a floor
//! is a reviewed change to that file.

use anyhow::Result;
use serde::Serialize;

use backstop::config::Config;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// A stable name for the floors file (the printed name carries sizes).
    pub key: String,
    pub what: String,
    pub value: f64,
    pub unit: String,
    pub baseline_what: String,
    pub baseline: f64,
    /// value / baseline, when a ratio means something.
    pub ratio: Option<f64>,
    /// The ratio in each round, in the order they ran, where the ratio is
    /// their median (the gateway's): how far a round strays shows with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub quick: bool,
    pub server: String,
    pub seconds: f64,
    pub figures: Vec<Figure>,
    /// Ratios below half their floor (or above twice their ceiling), and
    /// figures that must be 0 and are not; checked on --quick runs.
    pub regressions: Vec<String>,
}

fn fig(key: &str, what: &str, value: f64, unit: &str, baseline_what: &str, baseline: f64, ratio: bool) -> Figure {
    Figure {
        key: key.into(),
        what: what.into(),
        value,
        unit: unit.into(),
        baseline_what: baseline_what.into(),
        baseline,
        ratio: (ratio && baseline > 0.0).then(|| value / baseline),
        rounds: Vec::new(),
    }
}

/// A figure whose ratio was measured for it (the gateway's: the median of
/// its rounds' ratios, which it carries), not divided out of the two rates shown.
fn fig_measured(
    key: &str,
    what: &str,
    value: f64,
    baseline_what: &str,
    baseline: f64,
    ratio: f64,
    rounds: &[f64],
) -> Figure {
    Figure {
        ratio: Some(ratio),
        rounds: rounds.to_vec(),
        ..fig(key, what, value, "/s", baseline_what, baseline, false)
    }
}

/// A ratio and, when it is the median of several rounds, their range.
fn ratio_text(f: &Figure) -> String {
    let Some(x) = f.ratio else { return String::new() };
    let lo = f.rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = f.rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if f.rounds.len() > 1 {
        format!("{x:.2} ({lo:.2}-{hi:.2})")
    } else {
        format!("{x:.2}")
    }
}

pub async fn run(cfg: &Config, quick: bool, progress: bool) -> Result<SuiteReport> {
    let t0 = std::time::Instant::now();
    let secs = if quick { 2.0 } else { 10.0 };
    let big_log: i64 = if quick { 200_000 } else { 10_000_000 };
    let mut figures = Vec::new();

    let g = super::gateway::run(cfg, &[1, 4, 16], secs, progress).await?;
    for r in &g.rows {
        figures.push(fig_measured(
            &format!("gateway_{}_vs_floor", r.agents),
            &format!("gateway, {} agent(s): actions/s", r.agents),
            r.gateway_actions_per_s,
            "floor: same rows, plain SQL/s",
            r.floor_actions_per_s,
            r.floor_ratio,
            &r.floor_round_ratios,
        ));
        figures.push(fig_measured(
            &format!("gateway_{}_vs_raw", r.agents),
            &format!("gateway, {} agent(s): actions/s", r.agents),
            r.gateway_actions_per_s,
            "raw INSERT/s",
            r.raw_inserts_per_s,
            r.ratio,
            &r.raw_round_ratios,
        ));
    }
    // Batching needs agents to batch: one agent's calls go one at a time.
    for r in g.rows.iter().filter(|r| r.agents > 1) {
        figures.push(fig_measured(
            &format!("gateway_batched_{}_vs_floor", r.agents),
            &format!(
                "the same {} agents through a batching gateway ({:.1} requests a call): actions/s",
                r.agents, r.batched_per_call
            ),
            r.batched_actions_per_s,
            "floor: same rows, plain SQL/s",
            r.floor_actions_per_s,
            r.batched_floor_ratio,
            &r.round_ratios,
        ));
    }
    if let Some(r) = g.rows.iter().find(|r| r.agents == 1) {
        figures.push(fig(
            "gateway_1_p50_vs_floor_p50",
            "gateway, 1 agent: an action's round trips, p50",
            r.p50_ms,
            "ms",
            "floor's two statements, p50",
            r.floor_p50_ms,
            true,
        ));
        figures.push(fig(
            "gateway_1_p99_vs_p50",
            "gateway, 1 agent: an action's round trips, p99",
            r.p99_ms,
            "ms",
            "the same, p50",
            r.p50_ms,
            true,
        ));
    }
    let big = super::gateway::run_prefilled(cfg, 4, secs, big_log, progress).await?;
    figures.push(fig(
        "gateway_big_log_vs_empty",
        &format!(
            "gateway, 4 agents, {big_log}-row log behind a retention cut ({} rows carried; {} partitions): actions/s",
            big.carried, big.partitions_full
        ),
        big.full_actions_per_s,
        "/s",
        &format!(
            "same, empty log ({} partitions; the two measured in turns)",
            big.partitions_empty
        ),
        big.empty_actions_per_s,
        true,
    ));

    let p = super::pause::run(cfg, 1000, if quick { 2.0 } else { 5.0 }, progress).await?;
    figures.push(fig(
        "pause_p50_vs_round_trip",
        "pause seen by all 1,000 agents, p50",
        p.observed_p50_ms,
        "ms",
        "a proposal's round trip p50 (queued)",
        p.round_trip_p50_ms,
        true,
    ));
    figures.push(fig(
        "pause_p99_vs_round_trip",
        "pause seen by all 1,000 agents, p99",
        p.observed_p99_ms,
        "ms",
        "a proposal's round trip p50 (queued)",
        p.round_trip_p50_ms,
        true,
    ));
    figures.push(fig(
        "pause_allowed_after",
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
        "room_p50_vs_notify",
        &format!("room commit-to-screen p50 at {:.0}/s", room.achieved_rate),
        room.latency_p50_ms,
        "ms",
        "NOTIFY round trip p50",
        room.notify_p50_ms,
        true,
    ));
    figures.push(fig(
        "room_p99_vs_notify",
        &format!("room commit-to-screen p99 at {:.0}/s", room.achieved_rate),
        room.latency_p99_ms,
        "ms",
        "NOTIFY round trip p99",
        room.notify_p99_ms,
        true,
    ));
    figures.push(fig(
        "room_first_frame_vs_empty",
        &format!("room first frame, {big_log}-row log"),
        room.first_frame_ms,
        "ms",
        "empty log",
        room.first_frame_empty_ms,
        true,
    ));

    let sup = super::supervisor::run(cfg, rate, secs, big_log, progress).await?;
    figures.push(fig(
        "drift_pass_vs_raw_counts",
        &format!("drift pass, 100 agents, {big_log}-row log"),
        sup.drift_pass_ms,
        "ms",
        "the same counts from the raw log",
        sup.raw_counts_ms,
        true,
    ));
    figures.push(fig(
        "review_lag_p99_vs_p50",
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
            &format!("compensations_{}_vs_direct", r.workers),
            &format!("compensations/s, {} worker(s)", r.workers),
            r.per_s,
            "/s",
            "direct inverse calls/s",
            r.direct_calls_per_s,
            true,
        ));
    }
    figures.push(fig(
        "rollback_plan_vs_select",
        &format!("plan of a {}-action rollback", comp.plan_actions),
        comp.plan_seconds * 1000.0,
        "ms",
        "selecting the same actions",
        comp.select_seconds * 1000.0,
        true,
    ));

    let ret = super::retention::run(cfg, if quick { 100_000 } else { 1_000_000 }, progress).await?;
    figures.push(fig(
        "archive_vs_read",
        &format!("archive and drop {} rows: rows/s", ret.rows),
        ret.export_rows_per_s,
        "/s",
        "reading the same rows",
        ret.read_rows_per_s,
        true,
    ));
    figures.push(fig(
        "cut_p99_vs_before",
        "agents' p99 while the log is cut",
        ret.during_p99_ms,
        "ms",
        "p99 just before",
        ret.before_p99_ms,
        true,
    ));
    figures.push(fig(
        "cut_agent_failures",
        "agent calls that failed during the cut",
        ret.agent_failures as f64,
        "",
        "required",
        0.0,
        false,
    ));

    let regressions = if quick {
        check_floors(FLOORS, &figures)?
    } else {
        Vec::new()
    };
    Ok(SuiteReport {
        quick,
        server: g.server.clone(),
        seconds: t0.elapsed().as_secs_f64(),
        figures,
        regressions,
    })
}

/// The floors the quick suite is held to (see the module's comment).
pub const FLOORS: &str = include_str!("../../bench/floors.toml");

#[derive(Debug, serde::Deserialize)]
struct Floor {
    /// The ratio one quick run gave (0 for a figure that must be 0).
    ratio: f64,
    /// "higher" (fails below half), "lower" (fails above twice) or "zero"
    /// (the value must be 0).
    better: String,
}

/// Each figure against its floor; one message per regression.
pub fn check_floors(floors: &str, figures: &[Figure]) -> Result<Vec<String>> {
    let floors: std::collections::BTreeMap<String, Floor> =
        toml::from_str(floors).map_err(|e| anyhow::anyhow!("bench/floors.toml: {e}"))?;
    let mut out = Vec::new();
    for (key, fl) in &floors {
        let Some(f) = figures.iter().find(|f| &f.key == key) else {
            out.push(format!(
                "{key}: bench/floors.toml has a floor for it, and the suite printed no such figure"
            ));
            continue;
        };
        match (fl.better.as_str(), f.ratio) {
            ("zero", _) if f.value != 0.0 => out.push(format!("{key} ({}) is {}, and must be 0", f.what, f.value)),
            ("zero", _) => {}
            ("higher", Some(r)) if r < fl.ratio / 2.0 => out.push(format!(
                "{key} ({} / {}) is {r:.3}, below half its floor {:.3} (bench/floors.toml)",
                f.what, f.baseline_what, fl.ratio
            )),
            ("lower", Some(r)) if r > fl.ratio * 2.0 => out.push(format!(
                "{key} ({} / {}) is {r:.3}, above twice its ceiling {:.3} (bench/floors.toml)",
                f.what, f.baseline_what, fl.ratio
            )),
            ("higher" | "lower", Some(_)) => {}
            ("higher" | "lower", None) => out.push(format!("{key}: no ratio (its baseline was 0)")),
            (b, _) => anyhow::bail!("bench/floors.toml: {key}: better must be higher, lower or zero, not {b:?}"),
        }
    }
    // A figure the suite prints with no floor would be guarded by nothing.
    for f in figures.iter().filter(|f| !floors.contains_key(&f.key)) {
        out.push(format!(
            "{}: the suite printed it and bench/floors.toml has no floor for it (record one from a quick run)",
            f.key
        ));
    }
    Ok(out)
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
        "{:<52} {:>13}  {:<36} {:>10}  ratio (rounds' range)",
        "figure", "value", "baseline", ""
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
            "{:<52} {:>9} {:<3}  {:<36} {:>10}  {}",
            f.what,
            v(f.value),
            f.unit,
            f.baseline_what,
            v(f.baseline),
            ratio_text(f)
        );
    }
    for r in &r.regressions {
        let _ = writeln!(s, "REGRESSION: {r}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_parse_and_name_regressions() {
        let figs = vec![
            fig("a", "a/s", 40.0, "/s", "base", 100.0, true),
            fig("b", "b ms", 30.0, "ms", "base", 10.0, true),
            fig("z", "failures", 1.0, "", "required", 0.0, false),
        ];
        let floors = "[a]\nratio = 0.9\nbetter = \"higher\"\n[b]\nratio = 1.0\nbetter = \"lower\"\n\
                      [z]\nratio = 0\nbetter = \"zero\"\n";
        let r = check_floors(floors, &figs).unwrap();
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            r[0].contains("a (a/s / base) is 0.400, below half its floor 0.900"),
            "{r:?}"
        );
        assert!(r[1].contains("above twice its ceiling"), "{r:?}");
        assert!(r[2].contains("must be 0"), "{r:?}");
        let ok = "[a]\nratio = 0.7\nbetter = \"higher\"\n";
        assert!(check_floors(ok, &figs[..1]).unwrap().is_empty());
        // A figure without a floor is named, not passed over.
        let r = check_floors(ok, &figs[..2]).unwrap();
        assert!(
            r.len() == 1 && r[0].starts_with("b: ") && r[0].contains("no floor"),
            "{r:?}"
        );
        // The committed file parses.
        check_floors(FLOORS, &[]).unwrap();
    }

    #[test]
    fn a_median_of_rounds_shows_their_range() {
        let one = fig("a", "a/s", 40.0, "/s", "base", 100.0, true);
        assert_eq!(ratio_text(&one), "0.40");
        let m = fig_measured("g", "g/s", 73.0, "floor/s", 100.0, 0.73, &[0.75, 0.65, 0.73]);
        assert_eq!(ratio_text(&m), "0.73 (0.65-0.75)");
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["rounds"], serde_json::json!([0.75, 0.65, 0.73]));
        // A figure of one measurement carries no rounds.
        assert!(serde_json::to_value(&one).unwrap().get("rounds").is_none());
        let none = fig("z", "failures", 0.0, "", "required", 0.0, false);
        assert_eq!(ratio_text(&none), "");
    }
}
