//! `assets/policy.toml`: the pre-action rules `propose` evaluates (in file
//! order, first match wins), approval expiry, the supervisor's settings and
//! the compensation retry policy. Checked here with precise positions, loaded
//! as a new policy version, and reloaded live by [`watch`].

pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toml::Spanned;

use crate::filecheck::{Checker, Issue, parse_duration, sha256_hex, suggest};
use crate::registry::{CLASSES, Registry};

pub const KINDS: &[&str] = &[
    "amount_over",
    "cost_to_reverse",
    "confidence_below",
    "cumulative",
    "in_list",
    "new_counterparty",
    "changed_value",
    "always",
];
pub const EFFECTS: &[&str] = &["hold", "block"];
pub const FINDING_KINDS: &[&str] = &[
    "policy_violation",
    "low_confidence",
    "sampled_divergence",
    "drift",
    "complaint_spike",
    "compensation_failed",
];
pub const AUTO_ACTIONS: &[&str] = &["flag", "compensate", "pause"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub kind: String,
    pub effect: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence_below: Option<f64>,
    pub approvals: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Only tools whose money goes this way ("out" or "in").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// A cumulative rule adds up per "agent" (the default) or per "entity"
    /// (the tool's entity, e.g. the customer, whichever agents acted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// "agent:NAME" or "tool:NAME" -> { threshold?, confidence_below?, enabled? }
    pub overrides: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListDef {
    Values { values: Vec<String> },
    Table { table: String, column: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewAll {
    pub classes: Vec<String>,
    pub amount_over: Option<f64>,
    pub confidence_below: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSettings {
    pub baseline_seconds: f64,
    pub recent_seconds: f64,
    pub threshold: f64,
    pub min_samples: u32,
    /// Width of the rollup buckets (60 s; a few seconds for the demo).
    #[serde(default = "default_bucket")]
    pub bucket_seconds: f64,
}

fn default_bucket() -> f64 {
    60.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplaintSettings {
    pub window_seconds: f64,
    pub baseline_seconds: f64,
    pub min_count: u32,
    pub factor: f64,
}

/// An after-the-fact check the supervisor runs on reviewed actions: a query
/// that gets $1 params, $2 result, $3 amount and returns a message when the
/// action violates it (no row: fine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub tool: Option<String>,
    pub kind: String,
    pub severity: String,
    pub query: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorSettings {
    pub review_delay_seconds: f64,
    pub sample_rate: f64,
    pub lease_seconds: f64,
    pub review_all: ReviewAll,
    pub drift: DriftSettings,
    pub complaints: ComplaintSettings,
    /// finding kind -> flag | compensate | pause
    pub actions: BTreeMap<String, String>,
    #[serde(default)]
    pub checks: Vec<Check>,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            review_delay_seconds: 300.0,
            sample_rate: 0.08,
            lease_seconds: 30.0,
            review_all: ReviewAll {
                classes: vec!["irreversible".into()],
                amount_over: Some(5000.0),
                confidence_below: Some(0.7),
            },
            drift: DriftSettings {
                baseline_seconds: 3600.0,
                recent_seconds: 600.0,
                threshold: 0.03,
                min_samples: 50,
                bucket_seconds: 60.0,
            },
            complaints: ComplaintSettings {
                window_seconds: 600.0,
                baseline_seconds: 86400.0,
                min_count: 5,
                factor: 3.0,
            },
            actions: FINDING_KINDS
                .iter()
                .map(|k| {
                    let a = match *k {
                        "complaint_spike" => "pause",
                        "policy_violation" => "compensate",
                        _ => "flag",
                    };
                    (k.to_string(), a.to_string())
                })
                .collect(),
            checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompensationSettings {
    pub max_attempts: u32,
    pub backoff_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub hold_expiry_seconds: f64,
    pub expiry_effect: String,
    pub four_eyes_above: Option<f64>,
}

/// A webhook target of `[notify]` and what is routed to it. The URL is a
/// secret: only the name of the environment variable that holds it is kept
/// (and so loaded into the database and the log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyTarget {
    pub name: String,
    pub url_env: String,
    /// json | slack
    pub format: String,
    /// Holds of at least this amount (0: every hold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds_above: Option<f64>,
    /// New findings at or above this severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<String>,
    /// Pauses and resumes.
    pub pauses: bool,
    pub compensation_failures: bool,
    pub drills: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifySettings {
    pub targets: Vec<NotifyTarget>,
    pub max_attempts: u32,
    /// The first retry's delay; doubled per attempt (at most 5 minutes).
    pub backoff_seconds: f64,
}

pub const NOTIFY_FORMATS: &[&str] = &["json", "slack"];
pub const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub settings: Settings,
    pub rules: Vec<Rule>,
    pub lists: BTreeMap<String, ListDef>,
    pub supervisor: SupervisorSettings,
    pub compensation: CompensationSettings,
    pub notify: Option<NotifySettings>,
    pub sha256: String,
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    settings: Option<Spanned<SettingsDef>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleDef>>,
    #[serde(default)]
    overrides: Vec<Spanned<OverrideDef>>,
    #[serde(default)]
    lists: BTreeMap<String, Spanned<ListFileDef>>,
    supervisor: Option<Spanned<SupervisorDef>>,
    compensation: Option<Spanned<CompensationDef>>,
    notify: Option<Spanned<NotifyDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyDef {
    max_attempts: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
    #[serde(default)]
    targets: Vec<Spanned<NotifyTargetDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyTargetDef {
    name: Spanned<String>,
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    holds_above: Option<Spanned<f64>>,
    findings: Option<Spanned<String>>,
    pauses: Option<bool>,
    compensation_failures: Option<bool>,
    drills: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsDef {
    hold_expiry: Option<Spanned<String>>,
    expiry_effect: Option<Spanned<String>>,
    four_eyes_above: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    name: Spanned<String>,
    kind: Spanned<String>,
    effect: Spanned<String>,
    reason: Option<String>,
    threshold: Option<Spanned<f64>>,
    confidence_below: Option<Spanned<f64>>,
    approvals: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    param: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    list: Option<Spanned<String>>,
    classes: Option<Spanned<Vec<String>>>,
    agents: Option<Spanned<Vec<String>>>,
    tools: Option<Spanned<Vec<String>>>,
    direction: Option<Spanned<String>>,
    per: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideDef {
    rule: Spanned<String>,
    agent: Option<String>,
    tool: Option<String>,
    threshold: Option<Spanned<f64>>,
    confidence_below: Option<Spanned<f64>>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFileDef {
    values: Option<Vec<String>>,
    table: Option<String>,
    column: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorDef {
    review_delay: Option<Spanned<String>>,
    sample_rate: Option<Spanned<f64>>,
    lease: Option<Spanned<String>>,
    review_all: Option<Spanned<ReviewAllDef>>,
    drift: Option<Spanned<DriftDef>>,
    complaints: Option<Spanned<ComplaintsDef>>,
    actions: Option<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    checks: Vec<Spanned<CheckDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckDef {
    name: String,
    tool: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    query: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewAllDef {
    classes: Option<Vec<String>>,
    amount_over: Option<f64>,
    confidence_below: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriftDef {
    baseline: Option<String>,
    recent: Option<String>,
    bucket: Option<String>,
    threshold: Option<f64>,
    min_samples: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComplaintsDef {
    window: Option<String>,
    baseline: Option<String>,
    min_count: Option<i64>,
    factor: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompensationDef {
    max_attempts: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
}

fn default_reason(kind: &str) -> &'static str {
    match kind {
        "amount_over" => "{amount} is above the {threshold} limit",
        "cost_to_reverse" => "cost to reverse {cost} above {threshold} with confidence {confidence}",
        "confidence_below" => "confidence {confidence} is too low",
        "cumulative" => "{amount} on top of {value} already allowed in the window exceeds {threshold}",
        "in_list" => "{value} is on a blocked list",
        "new_counterparty" => "{value} has never been paid or contacted by this agent",
        "changed_value" => "{value} differs from what this agent used before",
        _ => "held by policy",
    }
}

/// Parse and check a policy file; with a registry, also check that rules name
/// registered tools.
pub fn parse(file: &str, text: &str, registry: Option<&Registry>) -> Result<Policy, Vec<Issue>> {
    let mut ck = Checker::new(file, text);
    let doc: FileDoc = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            ck.toml_error(&e);
            return Err(ck.into_issues());
        }
    };

    let mut settings = Settings {
        hold_expiry_seconds: 3600.0,
        expiry_effect: "block".into(),
        four_eyes_above: Some(10000.0),
    };
    if let Some(s) = &doc.settings {
        let s = s.get_ref();
        if let Some(h) = &s.hold_expiry {
            match parse_duration(h.get_ref()) {
                Ok(v) if (1.0..=30.0 * 86400.0).contains(&v) => settings.hold_expiry_seconds = v,
                Ok(_) => ck.at(h.span(), "settings.hold_expiry", "must be between 1s and 30d"),
                Err(e) => ck.at(h.span(), "settings.hold_expiry", e),
            }
        }
        if let Some(e) = &s.expiry_effect {
            if e.get_ref() == "block" || e.get_ref() == "allow" {
                settings.expiry_effect = e.get_ref().clone();
            } else {
                ck.at(
                    e.span(),
                    "settings.expiry_effect",
                    format!("{:?} is not an expiry effect; valid: block, allow", e.get_ref()),
                );
            }
        }
        if let Some(f) = &s.four_eyes_above {
            if *f.get_ref() < 0.0 || !f.get_ref().is_finite() {
                ck.at(f.span(), "settings.four_eyes_above", "must be a non-negative amount");
            }
            settings.four_eyes_above = Some(*f.get_ref());
        }
    }

    let list_names: Vec<&str> = doc.lists.keys().map(String::as_str).collect();
    let mut lists = BTreeMap::new();
    for (name, l) in &doc.lists {
        let key = format!("lists.{name}");
        let d = l.get_ref();
        match (&d.values, &d.table) {
            (Some(v), None) => {
                lists.insert(name.clone(), ListDef::Values { values: v.clone() });
            }
            (None, Some(t)) => {
                let ok_ident =
                    |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !ok_ident(t) {
                    ck.at(
                        l.span(),
                        format!("{key}.table"),
                        "a table name: schema.table (letters, digits, _)",
                    );
                }
                let column = d.column.clone().unwrap_or_else(|| "value".into());
                if !ok_ident(&column) || column.contains('.') {
                    ck.at(l.span(), format!("{key}.column"), "a column name (letters, digits, _)");
                }
                lists.insert(
                    name.clone(),
                    ListDef::Table {
                        table: t.clone(),
                        column,
                    },
                );
            }
            _ => ck.at(
                l.span(),
                &key,
                "a list has either values = [...] or table = \"schema.table\" (with column = \"...\")",
            ),
        }
    }

    let tool_names: Vec<String> = registry.map(|r| r.tools.keys().cloned().collect()).unwrap_or_default();
    let mut rules: Vec<Rule> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (i, r) in doc.rules.iter().enumerate() {
        let d = r.get_ref();
        let name = d.name.get_ref().clone();
        let key = format!("rules[{i}] ({name})");
        if !seen.insert(name.clone()) {
            ck.at(
                d.name.span(),
                format!("{key}.name"),
                format!("rule {name:?} is defined twice; rule names must be unique"),
            );
        }
        let kind = d.kind.get_ref().as_str();
        if !KINDS.contains(&kind) {
            let hint = suggest(kind, KINDS)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            ck.at(
                d.kind.span(),
                format!("{key}.kind"),
                format!("unknown rule kind {kind:?}{hint}; valid: {}", KINDS.join(", ")),
            );
        }
        let effect = d.effect.get_ref().as_str();
        if !EFFECTS.contains(&effect) {
            ck.at(
                d.effect.span(),
                format!("{key}.effect"),
                format!("{effect:?} is not an effect; valid: hold, block"),
            );
        }
        let needs_threshold = matches!(kind, "amount_over" | "cost_to_reverse" | "cumulative");
        let needs_conf = matches!(kind, "cost_to_reverse" | "confidence_below");
        let needs_param = matches!(kind, "in_list" | "new_counterparty" | "changed_value");
        match (&d.threshold, needs_threshold) {
            (None, true) => ck.at(
                r.span(),
                format!("{key}.threshold"),
                format!("a {kind} rule needs threshold = AMOUNT"),
            ),
            (Some(t), _) if *t.get_ref() < 0.0 || !t.get_ref().is_finite() || *t.get_ref() > 1e12 => ck.at(
                t.span(),
                format!("{key}.threshold"),
                format!("must be between 0 and 1e12; got {}", t.get_ref()),
            ),
            (Some(t), false) => ck.at(
                t.span(),
                format!("{key}.threshold"),
                format!("a {kind} rule takes no threshold"),
            ),
            _ => {}
        }
        match (&d.confidence_below, needs_conf) {
            (None, true) => ck.at(
                r.span(),
                format!("{key}.confidence_below"),
                format!("a {kind} rule needs confidence_below = 0..1"),
            ),
            (Some(c), _) if !(*c.get_ref() > 0.0 && *c.get_ref() <= 1.0) => ck.at(
                c.span(),
                format!("{key}.confidence_below"),
                format!("must be above 0 and at most 1; got {}", c.get_ref()),
            ),
            (Some(c), false) => ck.at(
                c.span(),
                format!("{key}.confidence_below"),
                format!("a {kind} rule takes no confidence_below"),
            ),
            _ => {}
        }
        let window_seconds = match (&d.window, kind == "cumulative") {
            (None, true) => {
                ck.at(
                    r.span(),
                    format!("{key}.window"),
                    "a cumulative rule needs window = \"1h\" (or another duration)",
                );
                None
            }
            (Some(w), true) => match parse_duration(w.get_ref()) {
                // At most 31 days: the per-minute totals older than that
                // are pruned (prune_value_minutes), so a longer window would
                // count less than it says.
                Ok(v) if (60.0..=2_678_400.0).contains(&v) => Some(v),
                Ok(v) if v > 2_678_400.0 => {
                    ck.at(
                        w.span(),
                        format!("{key}.window"),
                        "at most 31d: older per-minute totals are pruned",
                    );
                    None
                }
                Ok(_) => {
                    ck.at(
                        w.span(),
                        format!("{key}.window"),
                        "the window is counted in minutes: at least 1m",
                    );
                    None
                }
                Err(e) => {
                    ck.at(w.span(), format!("{key}.window"), e);
                    None
                }
            },
            (Some(w), false) => {
                ck.at(
                    w.span(),
                    format!("{key}.window"),
                    format!("a {kind} rule takes no window"),
                );
                None
            }
            (None, false) => None,
        };
        if let Some(dir) = &d.direction
            && !matches!(dir.get_ref().as_str(), "out" | "in")
        {
            ck.at(
                dir.span(),
                format!("{key}.direction"),
                format!(
                    "direction is \"out\" (money the company pays) or \"in\" (money it is paid); got {:?}",
                    dir.get_ref()
                ),
            );
        }
        if let Some(per) = &d.per {
            if kind != "cumulative" {
                ck.at(
                    per.span(),
                    format!("{key}.per"),
                    format!("a {kind} rule takes no per (only cumulative rules add up)"),
                );
            } else if !matches!(per.get_ref().as_str(), "agent" | "entity") {
                ck.at(
                    per.span(),
                    format!("{key}.per"),
                    format!(
                        "per is \"agent\" (each agent's total) or \"entity\" (each entity's total, e.g. per customer); got {:?}",
                        per.get_ref()
                    ),
                );
            }
        }
        match (&d.param, needs_param) {
            (None, true) => ck.at(
                r.span(),
                format!("{key}.param"),
                format!("a {kind} rule needs param = \"the parameter to check\""),
            ),
            (Some(p), false) => ck.at(
                p.span(),
                format!("{key}.param"),
                format!("a {kind} rule takes no param"),
            ),
            _ => {}
        }
        if kind == "changed_value" && d.key.is_none() {
            ck.at(
                r.span(),
                format!("{key}.key"),
                "a changed_value rule needs key = \"the parameter that identifies the record\" (e.g. customer_id)",
            );
        }
        if kind == "in_list" {
            match &d.list {
                None => ck.at(
                    r.span(),
                    format!("{key}.list"),
                    "an in_list rule needs list = \"a name from [lists]\"",
                ),
                Some(l) if !doc.lists.contains_key(l.get_ref()) => {
                    let hint = suggest(l.get_ref(), &list_names)
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    ck.at(
                        l.span(),
                        format!("{key}.list"),
                        format!(
                            "list {:?} is not defined{hint}; defined lists: {}",
                            l.get_ref(),
                            if list_names.is_empty() {
                                "none".to_string()
                            } else {
                                list_names.join(", ")
                            }
                        ),
                    )
                }
                _ => {}
            }
        }
        let approvals = match &d.approvals {
            Some(a) if !(1..=5).contains(a.get_ref()) => {
                ck.at(
                    a.span(),
                    format!("{key}.approvals"),
                    format!("between 1 and 5; got {}", a.get_ref()),
                );
                1
            }
            Some(a) if effect != "hold" => {
                ck.at(a.span(), format!("{key}.approvals"), "only hold rules take approvals");
                1
            }
            Some(a) => *a.get_ref() as u32,
            None => 1,
        };
        if let Some(c) = &d.classes {
            for class in c.get_ref() {
                if !CLASSES.contains(&class.as_str()) {
                    ck.at(
                        c.span(),
                        format!("{key}.classes"),
                        format!("unknown class {class:?}; valid: {}", CLASSES.join(", ")),
                    );
                }
            }
        }
        if let (Some(t), Some(_)) = (&d.tools, registry) {
            for tool in t.get_ref() {
                if !tool_names.contains(tool) {
                    ck.at(
                        t.span(),
                        format!("{key}.tools"),
                        format!("tool {tool:?} is not in the registry"),
                    );
                }
            }
        }
        rules.push(Rule {
            name,
            kind: kind.to_string(),
            effect: effect.to_string(),
            reason: d.reason.clone().unwrap_or_else(|| default_reason(kind).to_string()),
            threshold: d.threshold.as_ref().map(|t| *t.get_ref()),
            confidence_below: d.confidence_below.as_ref().map(|t| *t.get_ref()),
            approvals,
            window_seconds,
            param: d.param.as_ref().map(|p| p.get_ref().clone()),
            key_param: d.key.as_ref().map(|p| p.get_ref().clone()),
            list: d.list.as_ref().map(|p| p.get_ref().clone()),
            classes: d.classes.as_ref().map(|c| c.get_ref().clone()),
            agents: d.agents.as_ref().map(|c| c.get_ref().clone()),
            tools: d.tools.as_ref().map(|c| c.get_ref().clone()),
            direction: d.direction.as_ref().map(|c| c.get_ref().clone()),
            per: d.per.as_ref().map(|c| c.get_ref().clone()),
            overrides: BTreeMap::new(),
        });
    }

    let rule_names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    for (i, o) in doc.overrides.iter().enumerate() {
        let d = o.get_ref();
        let key = format!("overrides[{i}]");
        let target = match (&d.agent, &d.tool) {
            (Some(a), None) => format!("agent:{a}"),
            (None, Some(t)) => {
                if registry.is_some() && !tool_names.contains(t) {
                    ck.at(
                        o.span(),
                        format!("{key}.tool"),
                        format!("tool {t:?} is not in the registry"),
                    );
                }
                format!("tool:{t}")
            }
            _ => {
                ck.at(
                    o.span(),
                    &key,
                    "an override names exactly one of agent = \"...\" or tool = \"...\"",
                );
                continue;
            }
        };
        let Some(rule) = rules.iter_mut().find(|r| &r.name == d.rule.get_ref()) else {
            let names: Vec<&str> = rule_names.iter().map(String::as_str).collect();
            let hint = suggest(d.rule.get_ref(), &names)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            ck.at(
                d.rule.span(),
                format!("{key}.rule"),
                format!("no rule is named {:?}{hint}", d.rule.get_ref()),
            );
            continue;
        };
        let mut m = serde_json::Map::new();
        if let Some(t) = &d.threshold {
            if rule.threshold.is_none() {
                ck.at(
                    t.span(),
                    format!("{key}.threshold"),
                    format!("rule {} has no threshold to override", rule.name),
                );
            }
            m.insert("threshold".into(), json!(t.get_ref()));
        }
        if let Some(c) = &d.confidence_below {
            if !(*c.get_ref() > 0.0 && *c.get_ref() <= 1.0) {
                ck.at(
                    c.span(),
                    format!("{key}.confidence_below"),
                    "must be above 0 and at most 1",
                );
            }
            m.insert("confidence_below".into(), json!(c.get_ref()));
        }
        if let Some(e) = d.enabled {
            m.insert("enabled".into(), json!(e));
        }
        if m.is_empty() {
            ck.at(
                o.span(),
                &key,
                "an override changes threshold, confidence_below or enabled",
            );
        }
        if rule.overrides.insert(target.clone(), Value::Object(m)).is_some() {
            ck.at(
                o.span(),
                &key,
                format!("rule {} already has an override for {target}", rule.name),
            );
        }
    }

    let mut supervisor = SupervisorSettings::default();
    if let Some(s) = &doc.supervisor {
        let sd = s.get_ref();
        let dur = |v: &Option<Spanned<String>>, key: &str, min: f64, out: &mut f64, ck: &mut Checker| {
            if let Some(v) = v {
                match parse_duration(v.get_ref()) {
                    Ok(x) if x >= min => *out = x,
                    Ok(_) => ck.at(v.span(), key, format!("must be at least {min}s")),
                    Err(e) => ck.at(v.span(), key, e),
                }
            }
        };
        dur(
            &sd.review_delay,
            "supervisor.review_delay",
            0.0,
            &mut supervisor.review_delay_seconds,
            &mut ck,
        );
        dur(
            &sd.lease,
            "supervisor.lease",
            1.0,
            &mut supervisor.lease_seconds,
            &mut ck,
        );
        if let Some(r) = &sd.sample_rate {
            if (0.0..=1.0).contains(r.get_ref()) {
                supervisor.sample_rate = *r.get_ref();
            } else {
                ck.at(
                    r.span(),
                    "supervisor.sample_rate",
                    format!("a fraction between 0 and 1 (0.05 is 5%); got {}", r.get_ref()),
                );
            }
        }
        if let Some(ra) = &sd.review_all {
            let d = ra.get_ref();
            if let Some(c) = &d.classes {
                for class in c {
                    if !CLASSES.contains(&class.as_str()) {
                        ck.at(
                            ra.span(),
                            "supervisor.review_all.classes",
                            format!("unknown class {class:?}; valid: {}", CLASSES.join(", ")),
                        );
                    }
                }
                supervisor.review_all.classes = c.clone();
            }
            supervisor.review_all.amount_over = d.amount_over.or(supervisor.review_all.amount_over);
            if let Some(c) = d.confidence_below {
                if !(0.0..=1.0).contains(&c) {
                    ck.at(ra.span(), "supervisor.review_all.confidence_below", "between 0 and 1");
                }
                supervisor.review_all.confidence_below = Some(c);
            }
        }
        if let Some(dr) = &sd.drift {
            let d = dr.get_ref();
            let mut set = |v: &Option<String>, key: &str, out: &mut f64| {
                if let Some(v) = v {
                    match parse_duration(v) {
                        Ok(x) if x >= 1.0 => *out = x,
                        Ok(_) => ck.at(dr.span(), key, "must be at least 1s"),
                        Err(e) => ck.at(dr.span(), key, e),
                    }
                }
            };
            set(
                &d.baseline,
                "supervisor.drift.baseline",
                &mut supervisor.drift.baseline_seconds,
            );
            set(
                &d.recent,
                "supervisor.drift.recent",
                &mut supervisor.drift.recent_seconds,
            );
            set(
                &d.bucket,
                "supervisor.drift.bucket",
                &mut supervisor.drift.bucket_seconds,
            );
            // add_rollups takes buckets of 1 s to 31 days.
            if supervisor.drift.bucket_seconds > 2_678_400.0 {
                ck.at(dr.span(), "supervisor.drift.bucket", "must be at most 31d");
            }
            if let Some(t) = d.threshold {
                if !(t > 0.0 && t <= 1.0) {
                    ck.at(
                        dr.span(),
                        "supervisor.drift.threshold",
                        "a Jensen-Shannon divergence between 0 and 1 (base 2)",
                    );
                }
                supervisor.drift.threshold = t;
            }
            if let Some(m) = d.min_samples {
                if !(1..=1_000_000).contains(&m) {
                    ck.at(dr.span(), "supervisor.drift.min_samples", "between 1 and 1000000");
                }
                supervisor.drift.min_samples = m.clamp(1, 1_000_000) as u32;
            }
        }
        if let Some(cp) = &sd.complaints {
            let d = cp.get_ref();
            let mut set = |v: &Option<String>, key: &str, out: &mut f64| {
                if let Some(v) = v {
                    match parse_duration(v) {
                        Ok(x) if x >= 1.0 => *out = x,
                        Ok(_) => ck.at(cp.span(), key, "must be at least 1s"),
                        Err(e) => ck.at(cp.span(), key, e),
                    }
                }
            };
            set(
                &d.window,
                "supervisor.complaints.window",
                &mut supervisor.complaints.window_seconds,
            );
            set(
                &d.baseline,
                "supervisor.complaints.baseline",
                &mut supervisor.complaints.baseline_seconds,
            );
            if let Some(m) = d.min_count {
                if !(1..=100_000).contains(&m) {
                    ck.at(cp.span(), "supervisor.complaints.min_count", "between 1 and 100000");
                }
                supervisor.complaints.min_count = m.clamp(1, 100_000) as u32;
            }
            if let Some(f) = d.factor {
                if !(f >= 1.0 && f.is_finite()) {
                    ck.at(
                        cp.span(),
                        "supervisor.complaints.factor",
                        "at least 1 (a spike is factor times the baseline rate)",
                    );
                }
                supervisor.complaints.factor = f;
            }
        }
        let mut names = BTreeSet::new();
        for (i, c) in sd.checks.iter().enumerate() {
            let d = c.get_ref();
            let key = format!("supervisor.checks[{i}] ({})", d.name);
            if !names.insert(d.name.clone()) {
                ck.at(c.span(), format!("{key}.name"), "check names must be unique");
            }
            let kind = d.kind.clone().unwrap_or_else(|| "policy_violation".into());
            if !FINDING_KINDS.contains(&kind.as_str()) {
                ck.at(
                    c.span(),
                    format!("{key}.kind"),
                    format!("unknown finding kind {kind:?}; valid: {}", FINDING_KINDS.join(", ")),
                );
            }
            let severity = d.severity.clone().unwrap_or_else(|| "high".into());
            if !["info", "low", "medium", "high", "critical"].contains(&severity.as_str()) {
                ck.at(
                    c.span(),
                    format!("{key}.severity"),
                    "valid: info, low, medium, high, critical",
                );
            }
            if d.query.trim().is_empty() {
                ck.at(
                    c.span(),
                    format!("{key}.query"),
                    "a query returning a message when the action violates the check",
                );
            }
            if let (Some(t), Some(_)) = (&d.tool, registry)
                && !tool_names.contains(t)
            {
                ck.at(
                    c.span(),
                    format!("{key}.tool"),
                    format!("tool {t:?} is not in the registry"),
                );
            }
            supervisor.checks.push(Check {
                name: d.name.clone(),
                tool: d.tool.clone(),
                kind,
                severity,
                query: d.query.clone(),
            });
        }
        if let Some(actions) = &sd.actions {
            for (kind, a) in actions {
                if !FINDING_KINDS.contains(&kind.as_str()) {
                    ck.at(
                        a.span(),
                        format!("supervisor.actions.{kind}"),
                        format!("unknown finding kind; valid: {}", FINDING_KINDS.join(", ")),
                    );
                }
                if !AUTO_ACTIONS.contains(&a.get_ref().as_str()) {
                    ck.at(
                        a.span(),
                        format!("supervisor.actions.{kind}"),
                        format!("{:?} is not an action; valid: flag, compensate, pause", a.get_ref()),
                    );
                }
                supervisor.actions.insert(kind.clone(), a.get_ref().clone());
            }
        }
    }

    let mut compensation = CompensationSettings {
        max_attempts: 5,
        backoff_seconds: 2.0,
    };
    if let Some(c) = &doc.compensation {
        let d = c.get_ref();
        if let Some(m) = &d.max_attempts {
            if (1..=100).contains(m.get_ref()) {
                compensation.max_attempts = *m.get_ref() as u32;
            } else {
                ck.at(
                    m.span(),
                    "compensation.max_attempts",
                    format!("between 1 and 100; got {}", m.get_ref()),
                );
            }
        }
        if let Some(b) = &d.backoff {
            match parse_duration(b.get_ref()) {
                Ok(v) if v <= 3600.0 => compensation.backoff_seconds = v,
                Ok(_) => ck.at(b.span(), "compensation.backoff", "at most 1h"),
                Err(e) => ck.at(b.span(), "compensation.backoff", e),
            }
        }
    }

    let notify = doc.notify.as_ref().map(|n| parse_notify(n.get_ref(), &mut ck));

    if ck.issues.is_empty() {
        Ok(Policy {
            settings,
            rules,
            lists,
            supervisor,
            compensation,
            notify,
            sha256: sha256_hex(text),
        })
    } else {
        Err(ck.into_issues())
    }
}

fn parse_notify(d: &NotifyDef, ck: &mut Checker) -> NotifySettings {
    let mut out = NotifySettings {
        targets: Vec::new(),
        max_attempts: 8,
        backoff_seconds: 2.0,
    };
    if let Some(m) = &d.max_attempts {
        if (1..=100).contains(m.get_ref()) {
            out.max_attempts = *m.get_ref() as u32;
        } else {
            ck.at(
                m.span(),
                "notify.max_attempts",
                format!("between 1 and 100; got {}", m.get_ref()),
            );
        }
    }
    if let Some(b) = &d.backoff {
        match parse_duration(b.get_ref()) {
            Ok(v) if (0.01..=3600.0).contains(&v) => out.backoff_seconds = v,
            Ok(_) => ck.at(b.span(), "notify.backoff", "between 10ms and 1h"),
            Err(e) => ck.at(b.span(), "notify.backoff", e),
        }
    }
    let mut names = BTreeSet::new();
    for (i, t) in d.targets.iter().enumerate() {
        let td = t.get_ref();
        let name = td.name.get_ref().clone();
        let key = format!("notify.targets[{i}] ({name})");
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_name {
            ck.at(
                td.name.span(),
                format!("{key}.name"),
                "1-64 letters, digits, '_', '-' or '.'",
            );
        }
        if !names.insert(name.clone()) {
            ck.at(td.name.span(), format!("{key}.name"), "target names must be unique");
        }
        // The URL of a webhook is a credential: it must not reach the
        // database or the log, so the file names where to find it.
        let url = td.url.get_ref();
        let url_env = match url.strip_prefix("env:") {
            Some(v)
                if !v.is_empty()
                    && v.len() <= 128
                    && v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                v.to_string()
            }
            _ => {
                ck.at(
                    td.url.span(),
                    format!("{key}.url"),
                    "a webhook URL is a secret: write url = \"env:NAME\" and set NAME in the supervisor's environment",
                );
                String::new()
            }
        };
        let format = td
            .format
            .as_ref()
            .map(|f| f.get_ref().clone())
            .unwrap_or_else(|| "json".into());
        if let Some(f) = &td.format
            && !NOTIFY_FORMATS.contains(&f.get_ref().as_str())
        {
            ck.at(
                f.span(),
                format!("{key}.format"),
                format!("{:?} is not a format; valid: json, slack", f.get_ref()),
            );
        }
        if let Some(h) = &td.holds_above
            && !(h.get_ref().is_finite() && (0.0..=1e12).contains(h.get_ref()))
        {
            ck.at(h.span(), format!("{key}.holds_above"), "an amount between 0 and 1e12");
        }
        if let Some(f) = &td.findings
            && !SEVERITIES.contains(&f.get_ref().as_str())
        {
            let hint = suggest(f.get_ref(), SEVERITIES)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            ck.at(
                f.span(),
                format!("{key}.findings"),
                format!(
                    "{:?} is not a severity{hint}; valid: {}",
                    f.get_ref(),
                    SEVERITIES.join(", ")
                ),
            );
        }
        let target = NotifyTarget {
            name,
            url_env,
            format,
            holds_above: td.holds_above.as_ref().map(|h| *h.get_ref()),
            findings: td.findings.as_ref().map(|f| f.get_ref().clone()),
            pauses: td.pauses.unwrap_or(false),
            compensation_failures: td.compensation_failures.unwrap_or(false),
            drills: td.drills.unwrap_or(false),
        };
        if target.holds_above.is_none()
            && target.findings.is_none()
            && !target.pauses
            && !target.compensation_failures
            && !target.drills
        {
            ck.at(
                t.span(),
                &key,
                "a target receives something: holds_above, findings, pauses, compensation_failures or drills",
            );
        }
        out.targets.push(target);
    }
    out
}

impl Policy {
    /// The normalized document loaded into the database (and kept in the log).
    pub fn doc(&self) -> Value {
        let mut doc = json!({
            "settings": self.settings,
            "rules": self.rules,
            "lists": self.lists,
            "supervisor": self.supervisor,
            "compensation": self.compensation,
        });
        // Only when present: a policy without it loads as it always did.
        if let Some(n) = &self.notify {
            doc["notify"] = json!(n);
        }
        doc
    }

    /// The policy document of a version as stored in the database.
    pub fn supervisor_from_doc(doc: &Value) -> SupervisorSettings {
        serde_json::from_value(doc["supervisor"].clone()).unwrap_or_default()
    }
}

/// Read and check a policy file.
pub fn read(path: &Path, registry: Option<&Registry>) -> Result<Policy, Vec<Issue>> {
    let file = path.display().to_string();
    match crate::filecheck::read_capped(path) {
        Ok(text) => parse(&file, &text, registry),
        Err(e) => Err(vec![Issue {
            file,
            line: 0,
            col: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }]),
    }
}

pub async fn sync<'e, E: sqlx::PgExecutor<'e>>(
    ex: E,
    policy: &Policy,
    source: &str,
) -> crate::contract::Result<crate::contract::Loaded> {
    crate::contract::load_policy(ex, &policy.doc(), &policy.sha256, source).await
}

/// The supervisor settings of the active policy version.
pub async fn active_supervisor(pool: &sqlx::PgPool) -> anyhow::Result<(i64, SupervisorSettings)> {
    let row: Option<(i64, Value)> = sqlx::query_as(
        "SELECT v.version, v.doc FROM backstop.active a JOIN backstop.policy_versions v ON v.version = a.policy_version",
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((v, doc)) => (v, Policy::supervisor_from_doc(&doc)),
        None => (0, SupervisorSettings::default()),
    })
}
