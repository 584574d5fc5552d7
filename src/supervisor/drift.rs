//! Drift: how far an agent's recent decision distribution has moved from its
//! baseline, per dimension (tool mix, verdicts, outcomes, amount buckets,
//! confidence buckets), as a Jensen-Shannon divergence (base 2, 0 to 1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const DIMENSIONS: &[&str] = &["tool", "verdict", "outcome", "amount", "conf"];

/// An agent's baseline and recent counts by key.
pub type Windows = (BTreeMap<String, u64>, BTreeMap<String, u64>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub category: String,
    pub baseline: f64,
    pub recent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The largest divergence over the dimensions.
    pub score: f64,
    /// What the score must exceed to count: the configured threshold, or
    /// more when the samples are small enough for noise to reach it.
    pub required: f64,
    pub drifted: bool,
    pub dimension: String,
    pub per_dimension: BTreeMap<String, f64>,
    /// The categories that moved most, largest first.
    pub top_changes: Vec<Change>,
    pub baseline: BTreeMap<String, f64>,
    pub recent: BTreeMap<String, f64>,
    pub baseline_n: u64,
    pub recent_n: u64,
}

/// Jensen-Shannon divergence of two count vectors over the same keys, base 2.
pub fn js_divergence(p: &BTreeMap<String, u64>, q: &BTreeMap<String, u64>) -> f64 {
    let (sp, sq) = (p.values().sum::<u64>() as f64, q.values().sum::<u64>() as f64);
    if sp == 0.0 || sq == 0.0 {
        return 0.0;
    }
    let mut keys: Vec<&String> = p.keys().chain(q.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut js = 0.0;
    for k in keys {
        let a = *p.get(k).unwrap_or(&0) as f64 / sp;
        let b = *q.get(k).unwrap_or(&0) as f64 / sq;
        let m = (a + b) / 2.0;
        if a > 0.0 {
            js += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            js += 0.5 * b * (b / m).log2();
        }
    }
    js.clamp(0.0, 1.0)
}

fn dimension(counts: &BTreeMap<String, u64>, dim: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{dim}:");
    counts
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|c| (c.to_string(), *v)))
        .collect()
}

fn shares(c: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    let total = c.values().sum::<u64>().max(1) as f64;
    c.iter().map(|(k, v)| (k.clone(), *v as f64 / total)).collect()
}

/// The divergence two samples of sizes `nb` and `nr` from one distribution
/// over `k` categories exceed with probability about 2 in 10,000. For small
/// differences the two-sample chi-square statistic is about 8 ln 2 * N * JS
/// (JS in bits, N = nb * nr / (nb + nr)), chi-square with k - 1 degrees of
/// freedom under no change (Wilson-Hilferty approximation of the quantile).
pub fn noise_floor(k: usize, nb: u64, nr: u64) -> f64 {
    if k < 2 || nb == 0 || nr == 0 {
        return 0.0;
    }
    let dof = (k - 1) as f64;
    let z = 3.54;
    let chi2 = dof * (1.0 - 2.0 / (9.0 * dof) + z * (2.0 / (9.0 * dof)).sqrt()).powi(3);
    let n_eff = (nb as f64 * nr as f64) / (nb as f64 + nr as f64);
    chi2 / (8.0 * std::f64::consts::LN_2 * n_eff)
}

/// Compare an agent's baseline and recent counts. `None` when either window
/// has fewer than `min_samples` decisions (too little to say anything).
/// A dimension counts as drifted when its divergence passes both the
/// configured threshold (the size of change that matters) and the noise
/// floor for its sample sizes (so small agents are not flagged by chance).
pub fn assess_with(
    baseline: &BTreeMap<String, u64>,
    recent: &BTreeMap<String, u64>,
    min_samples: u64,
    threshold: f64,
) -> Option<Assessment> {
    let decisions = |c: &BTreeMap<String, u64>| dimension(c, "verdict").values().sum::<u64>();
    let (bn, rn) = (decisions(baseline), decisions(recent));
    if bn < min_samples || rn < min_samples {
        return None;
    }
    let mut per_dimension = BTreeMap::new();
    // The dimension that passes its bar by the widest margin (or, if none
    // does, the one closest to it).
    let mut best: Option<(String, f64, f64)> = None;
    for d in DIMENSIONS {
        let (b, r) = (dimension(baseline, d), dimension(recent, d));
        if b.is_empty() && r.is_empty() {
            continue;
        }
        let js = js_divergence(&b, &r);
        let categories = b
            .keys()
            .chain(r.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let (nb, nr) = (b.values().sum::<u64>(), r.values().sum::<u64>());
        let required = threshold.max(noise_floor(categories, nb, nr));
        per_dimension.insert(d.to_string(), js);
        if best.as_ref().is_none_or(|(_, s, q)| js - required > s - q) {
            best = Some((d.to_string(), js, required));
        }
    }
    let (dim, score, required) = best?;
    let (b, r) = (shares(&dimension(baseline, &dim)), shares(&dimension(recent, &dim)));
    let mut top: Vec<Change> = b
        .keys()
        .chain(r.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|k| Change {
            category: format!("{dim}:{k}"),
            baseline: *b.get(k).unwrap_or(&0.0),
            recent: *r.get(k).unwrap_or(&0.0),
        })
        .collect();
    top.sort_by(|x, y| (y.recent - y.baseline).abs().total_cmp(&(x.recent - x.baseline).abs()));
    top.truncate(3);
    Some(Assessment {
        score,
        required,
        drifted: score > required,
        dimension: dim,
        per_dimension,
        top_changes: top,
        baseline: b,
        recent: r,
        baseline_n: bn,
        recent_n: rn,
    })
}

/// A small deterministic generator for the drift study (no dependency, same
/// numbers on every machine).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1)
    }
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Draw a category from (name, probability) pairs.
    pub fn pick<'a>(&mut self, dist: &'a [(&'a str, f64)]) -> &'a str {
        let mut x = self.next_f64();
        for (k, p) in dist {
            if x < *p {
                return k;
            }
            x -= p;
        }
        dist.last().map(|(k, _)| *k).unwrap_or("")
    }
}

/// Simulated decision counts of an agent choosing tools from `dist`.
pub fn simulate(rng: &mut Rng, dist: &[(&str, f64)], n: u64) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    for _ in 0..n {
        *c.entry(format!("tool:{}", rng.pick(dist))).or_insert(0) += 1;
        *c.entry("verdict:allow".to_string()).or_insert(0) += 1;
    }
    c
}

/// `assess_with` and no threshold beyond the noise floor.
pub fn assess(
    baseline: &BTreeMap<String, u64>,
    recent: &BTreeMap<String, u64>,
    min_samples: u64,
) -> Option<Assessment> {
    assess_with(baseline, recent, min_samples, 0.0)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftStudy {
    pub threshold: f64,
    pub per_minute: u64,
    pub recent_minutes: u64,
    pub baseline_minutes: u64,
    pub stationary_windows: u64,
    pub false_positives: u64,
    pub false_positive_rate: f64,
    pub shifted_runs: u64,
    pub detection_delay_minutes_p50: f64,
    pub detection_delay_minutes_max: f64,
}

/// The false-positive rate on a stationary agent and the detection delay
/// after a refund share moving from 5% to 30%, with windows made of
/// one-minute buckets as the supervisor sees them.
pub fn study(threshold: f64, min_samples: u64, per_minute: u64, recent: u64, baseline: u64, seed: u64) -> DriftStudy {
    let before: &[(&str, f64)] = &[
        ("issue_refund", 0.05),
        ("issue_credit", 0.30),
        ("send_email", 0.40),
        ("update_customer_field", 0.25),
    ];
    let after: &[(&str, f64)] = &[
        ("issue_refund", 0.30),
        ("issue_credit", 0.20),
        ("send_email", 0.30),
        ("update_customer_field", 0.20),
    ];
    let mut rng = Rng::new(seed);
    let sum = |ms: &[BTreeMap<String, u64>]| {
        let mut t = BTreeMap::new();
        for m in ms {
            for (k, v) in m {
                *t.entry(k.clone()).or_insert(0) += v;
            }
        }
        t
    };
    // Stationary: slide the windows over a long run, one pass per minute.
    let minutes = 2000u64;
    let series: Vec<BTreeMap<String, u64>> = (0..minutes).map(|_| simulate(&mut rng, before, per_minute)).collect();
    let (mut windows, mut fps) = (0u64, 0u64);
    for end in (baseline + recent) as usize..series.len() {
        let b = sum(&series[end - (baseline + recent) as usize..end - recent as usize]);
        let r = sum(&series[end - recent as usize..end]);
        if let Some(a) = assess_with(&b, &r, min_samples, threshold) {
            windows += 1;
            if a.drifted {
                fps += 1;
            }
        }
    }
    // Shifted: how many minutes after the shift until the pass flags it.
    let runs = 50u64;
    let mut delays = Vec::new();
    for _ in 0..runs {
        let mut s: Vec<BTreeMap<String, u64>> = (0..baseline + recent)
            .map(|_| simulate(&mut rng, before, per_minute))
            .collect();
        let shift_at = s.len();
        let mut found = None;
        for m in 1..=(baseline + recent) {
            s.push(simulate(&mut rng, after, per_minute));
            let end = s.len();
            let b = sum(&s[end - (baseline + recent) as usize..end - recent as usize]);
            let r = sum(&s[end - recent as usize..end]);
            if assess_with(&b, &r, min_samples, threshold).is_some_and(|a| a.drifted) {
                found = Some(m);
                break;
            }
        }
        let _ = shift_at;
        delays.push(found.unwrap_or(baseline + recent) as f64);
    }
    delays.sort_by(f64::total_cmp);
    DriftStudy {
        threshold,
        per_minute,
        recent_minutes: recent,
        baseline_minutes: baseline,
        stationary_windows: windows,
        false_positives: fps,
        false_positive_rate: fps as f64 / windows.max(1) as f64,
        shifted_runs: runs,
        detection_delay_minutes_p50: delays[delays.len() / 2],
        detection_delay_minutes_max: *delays.last().unwrap_or(&0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn identical_distributions_do_not_diverge_and_disjoint_ones_fully_do() {
        let a = counts(&[("x", 10), ("y", 30)]);
        assert!(js_divergence(&a, &a) < 1e-12);
        let b = counts(&[("z", 5)]);
        assert!((js_divergence(&a, &b) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn too_few_samples_say_nothing() {
        let a = counts(&[("verdict:allow", 10), ("tool:x", 10)]);
        assert!(assess(&a, &a, 50).is_none());
    }

    #[test]
    fn a_refund_share_moving_from_5_to_30_percent_is_named() {
        let b = counts(&[
            ("verdict:allow", 1000),
            ("tool:issue_refund", 50),
            ("tool:send_email", 950),
        ]);
        let r = counts(&[
            ("verdict:allow", 200),
            ("tool:issue_refund", 60),
            ("tool:send_email", 140),
        ]);
        let a = assess(&b, &r, 50).unwrap();
        assert_eq!(a.dimension, "tool");
        assert!(a.score > 0.05, "{}", a.score);
        assert_eq!(a.top_changes[0].category, "tool:issue_refund");
        assert!((a.top_changes[0].baseline - 0.05).abs() < 1e-9 && (a.top_changes[0].recent - 0.3).abs() < 1e-9);
    }

    #[test]
    fn the_drift_study_stays_under_its_false_positive_rate_and_finds_the_shift() {
        let s = study(0.03, 50, 20, 10, 60, 7);
        assert!(s.stationary_windows > 1000);
        assert!(s.false_positive_rate < 0.01, "{s:?}");
        assert!(s.detection_delay_minutes_p50 <= 5.0, "{s:?}");
    }
}
