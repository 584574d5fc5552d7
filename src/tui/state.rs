//! Everything the control room shows, and nothing it does: `update` changes
//! it, `view` draws it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use crate::compensation::Plan;
use crate::contract::{ActionStatus, EventKind, LogRow, Scope, Verdict};

/// Rows of the log kept in memory (the room tails; history is in the database).
pub const LOG_CAP: usize = 5000;
/// Held actions listed in the approvals view (the highest value first); the
/// header's count and sum cover them all.
pub const APPROVALS_SHOWN: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    Fleet,
    Log,
    Approvals,
    Findings,
    Compensations,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Fleet,
        View::Log,
        View::Approvals,
        View::Findings,
        View::Compensations,
    ];
    pub fn title(self) -> &'static str {
        match self {
            View::Fleet => "Fleet",
            View::Log => "Log",
            View::Approvals => "Approvals",
            View::Findings => "Findings",
            View::Compensations => "Compensations",
        }
    }
}

/// The filter's syntax, for hints.
pub const FILTER_SYNTAX: &str = "agent:NAME tool:NAME verdict:allow|hold|block status:executed status:\"comp. requested\" (or comp-requested) amount>500 free text";

/// The verdicts `verdict:` accepts.
const VERDICTS: &[&str] = &["allow", "hold", "block"];

/// A status as typed and as shown compare equal when they differ only in
/// case, dots, dashes and underscores: `comp-requested` is `comp. requested`.
pub fn status_key(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| *c != '.')
        .map(|c| if c == '-' || c == '_' { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words of a filter, a double-quoted part kept whole (`status:"comp. requested"`).
fn filter_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("a quote is not closed: the syntax is {FILTER_SYNTAX}"));
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// What the text input is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    Reject(Uuid),
    Compensate(Vec<Uuid>),
    Acknowledge(Uuid),
    Resolve(Uuid),
}

impl Purpose {
    pub fn prompt(&self) -> String {
        match self {
            Purpose::Reject(_) => "reason for rejecting".into(),
            Purpose::Compensate(ids) => format!("reason for compensating {} action(s)", ids.len()),
            Purpose::Acknowledge(_) => "note (acknowledge)".into(),
            Purpose::Resolve(_) => "note (resolve)".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Filter {
        input: String,
    },
    Command {
        input: String,
    },
    Input {
        purpose: Purpose,
        input: String,
    },
    /// Approving asks for one key, showing what is approved; the default is No.
    ConfirmApprove(Uuid),
    /// Pausing an agent (p) or a name nobody has seen asks first; the default is No.
    ConfirmPause {
        scope: Scope,
        target: String,
    },
    /// Resume asks first; the default (Enter, Esc, anything but y) is No.
    ConfirmResume {
        scope: Scope,
        target: Option<String>,
    },
    /// A compensation plan on screen: y requests it (after a reason), n / Esc cancels.
    Plan,
    Detail {
        scroll: u16,
    },
    /// The whole of a row that is not an action (a finding, a log row), in
    /// labelled lines: what a cut cell leaves out.
    Note {
        scroll: u16,
    },
    Help,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    Connecting,
    Live,
    Reconnecting(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub verdict: Option<String>,
    pub status: Option<String>,
    pub amount_above: Option<Decimal>,
    pub text: Option<String>,
}

impl Filter {
    /// `agent:NAME tool:NAME verdict:hold status:executed amount>500 free text`
    pub fn parse(s: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        let mut text = Vec::new();
        for tok in filter_words(s)? {
            let tok = tok.as_str();
            if let Some(v) = tok.strip_prefix("agent:") {
                f.agent = Some(v.to_string());
            } else if let Some(v) = tok.strip_prefix("tool:") {
                f.tool = Some(v.to_string());
            } else if let Some(v) = tok.strip_prefix("verdict:") {
                let v = v.to_lowercase();
                if !VERDICTS.contains(&v.as_str()) {
                    return Err(format!("verdict:{v}: a verdict is one of {}", VERDICTS.join(", ")));
                }
                f.verdict = Some(v);
            } else if let Some(v) = tok.strip_prefix("status:") {
                if v.trim().is_empty() {
                    return Err(format!("status: needs a value: the syntax is {FILTER_SYNTAX}"));
                }
                f.status = Some(v.to_lowercase());
            } else if let Some(v) = tok.strip_prefix("amount>") {
                let d: Decimal = v
                    .trim_start_matches('$')
                    .replace(',', "")
                    .parse()
                    .map_err(|_| format!("amount>{v}: not an amount"))?;
                f.amount_above = Some(d);
            } else if let Some((k, _)) = tok
                .split_once(':')
                .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                return Err(format!("unknown filter key {k}: the syntax is {FILTER_SYNTAX}"));
            } else {
                text.push(tok.to_string());
            }
        }
        if !text.is_empty() {
            f.text = Some(text.join(" ").to_lowercase());
        }
        Ok(f)
    }

    /// The keys in force that a view does not show (it cannot filter by them).
    pub fn ignored_by(&self, view: View) -> Vec<&'static str> {
        let applies: &[&str] = match view {
            View::Log => &["agent", "tool", "verdict", "status", "amount", "text"],
            View::Fleet => &["agent", "text"],
            View::Approvals => &["agent", "tool", "amount", "text"],
            View::Findings => &["agent", "status", "text"],
            View::Compensations => &["agent", "tool", "status", "text"],
        };
        let set = [
            ("agent", self.agent.is_some()),
            ("tool", self.tool.is_some()),
            ("verdict", self.verdict.is_some()),
            ("status", self.status.is_some()),
            ("amount", self.amount_above.is_some()),
            ("text", self.text.is_some()),
        ];
        set.iter()
            .filter(|(k, on)| *on && !applies.contains(k))
            .map(|(k, _)| *k)
            .collect()
    }

    fn status_is(&self, status: &str) -> bool {
        self.status
            .as_ref()
            .is_none_or(|want| status_key(status) == status_key(want))
    }

    fn text_in(&self, hay: &str) -> bool {
        self.text.as_ref().is_none_or(|t| hay.to_lowercase().contains(t))
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.agent {
            parts.push(format!("agent:{a}"));
        }
        if let Some(t) = &self.tool {
            parts.push(format!("tool:{t}"));
        }
        if let Some(v) = &self.verdict {
            parts.push(format!("verdict:{v}"));
        }
        if let Some(s) = &self.status {
            if s.contains(char::is_whitespace) {
                parts.push(format!("status:\"{s}\""));
            } else {
                parts.push(format!("status:{s}"));
            }
        }
        if let Some(a) = &self.amount_above {
            parts.push(format!("amount>{a}"));
        }
        if let Some(t) = &self.text {
            parts.push(t.clone());
        }
        parts.join(" ")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub agent: String,
    pub paused: Option<(String, String)>,
    /// Decisions per bucket, oldest first (the sparkline).
    pub per_bucket: Vec<u64>,
    pub per_minute: f64,
    pub held: i64,
    pub held_value: Decimal,
    pub findings: i64,
    pub drift: Option<f64>,
    /// Set while a drift finding is unresolved: the drift is measured against
    /// the baseline before the window that raised it (see `data::snapshot`).
    pub drift_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dists {
    pub agent: String,
    /// dimension -> category -> (baseline share, recent share)
    pub dims: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    pub baseline_n: u64,
    pub recent_n: u64,
    /// The baseline is the one before this drift finding was raised.
    pub baseline_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeldRow {
    pub action_id: Uuid,
    pub agent: String,
    pub tool: String,
    pub amount: Option<Decimal>,
    pub rule: Option<String>,
    pub reason: String,
    pub approvals: i32,
    pub approvals_needed: i32,
    pub approved_by: Vec<String>,
    pub held_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One finding, as the room and `backstop findings` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct FindingRow {
    pub finding_id: Uuid,
    pub kind: String,
    pub severity: String,
    pub agent: Option<String>,
    pub action_id: Option<Uuid>,
    pub rule: Option<String>,
    pub status: String,
    pub count: i32,
    pub last_at: DateTime<Utc>,
    pub detail: Value,
    /// What the supervisor did about it by itself (a pause still in force, the
    /// compensations it requested and how they stand), so an automatically
    /// handled finding does not read as merely `open`.
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
}

impl FindingRow {
    /// The status as a person reads it: the review state, and what the
    /// supervisor already did.
    pub fn status_label(&self) -> String {
        match (&self.auto, self.status.as_str()) {
            (None, st) => st.to_string(),
            (Some(a), "open") => a.clone(),
            (Some(a), "acknowledged") => format!("ack., {a}"),
            (Some(a), st) => format!("{st}, {a}"),
        }
    }
}

/// Most severe first: critical, high, medium, low, anything else.
pub fn severity_rank(sev: &str) -> u8 {
    match sev {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        _ => 4,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompRow {
    pub action_id: Uuid,
    pub agent: String,
    pub tool: String,
    pub inverse_tool: String,
    pub status: String,
    pub attempts: i32,
    pub worker: Option<String>,
    pub reason: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub scope: Scope,
    pub target: String,
    pub by: String,
    pub reason: String,
}

/// Everything the periodic refresh brings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub fleet: Vec<AgentRow>,
    pub dists: HashMap<String, Dists>,
    /// The highest-value held actions (at most `APPROVALS_SHOWN`), highest first.
    pub approvals: Vec<HeldRow>,
    /// Every held action, counted and summed by the database (not only those listed).
    pub held_count: i64,
    pub held_sum: Decimal,
    pub findings: Vec<FindingRow>,
    pub comps: Vec<CompRow>,
    pub switches: Vec<Switch>,
    pub policy_version: Option<i64>,
    pub registry_version: Option<i64>,
    /// Every agent the log or the logins know, and every tool any registry
    /// version named; `None`: the room could not read them.
    pub known_agents: Option<BTreeSet<String>>,
    pub known_tools: Option<BTreeSet<String>>,
}

pub use crate::contract::CheckResult;

/// What the agent said when it proposed a held action: the card's part
/// that never changes (the queue's row has the rest).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CardInfo {
    pub class: Option<String>,
    pub confidence: Option<f32>,
    pub reasoning: Option<String>,
    pub inputs: Option<Value>,
    pub params: Option<Value>,
    pub correlation_id: Option<String>,
}

/// The checks of a card, as far as they have come.
#[derive(Debug, Clone, PartialEq)]
pub enum Checks {
    /// Asked; no answer yet.
    Running,
    Done(Vec<CheckResult>),
    /// The call itself failed (the database's words).
    Failed(String),
}

impl Checks {
    /// The checks that fail (a message), most severe first.
    pub fn failing(&self) -> Vec<&CheckResult> {
        let mut v: Vec<&CheckResult> = match self {
            Checks::Done(rows) => rows.iter().filter(|c| c.message.is_some()).collect(),
            _ => Vec::new(),
        };
        v.sort_by_key(|c| severity_rank(&c.severity));
        v
    }
}

/// The approval card of one held action: fetched when its row is
/// highlighted, kept by action id; the checks are run again on each refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// `None`: loading.
    pub info: Option<Result<CardInfo, String>>,
    pub checks: Checks,
    /// A load of the info is on its way.
    pub loading: bool,
    /// A precheck is on its way.
    pub checking: bool,
}

impl Default for Card {
    fn default() -> Self {
        Card {
            info: None,
            checks: Checks::Running,
            loading: false,
            checking: false,
        }
    }
}

/// The whole record behind Enter, as the database holds it; `view` formats it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub action_id: Uuid,
    /// `None`: the action is not in the actions projection.
    pub action: Option<ActionDetail>,
}

/// One row of `backstop.actions` and what hangs off it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDetail {
    pub agent: String,
    pub tool: String,
    /// `None`: the tool was not in the registry.
    pub class: Option<String>,
    pub status: ActionStatus,
    pub amount: Option<Decimal>,
    pub confidence: Option<f32>,
    pub cost_to_reverse: Option<Decimal>,
    pub verdict: Verdict,
    pub reason: String,
    pub rule: Option<String>,
    pub policy_version: Option<i64>,
    pub registry_version: Option<i64>,
    /// From the proposal's log row; `None` when that row is not in the log.
    pub proposal: Option<Proposed>,
    /// From the result's log row.
    pub result: Option<Value>,
    pub correlation_id: Option<String>,
    pub parent_action: Option<Uuid>,
    /// Dependents and actions on the same correlation id.
    pub related: Vec<Related>,
    pub inverse_tool: Option<String>,
    pub inverse_params: Option<Value>,
    pub inverse_missing: Option<Vec<String>>,
    pub compensation: Option<CompensationState>,
    pub history: Vec<HistoryEntry>,
}

/// What the agent said when it proposed the action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Proposed {
    pub reasoning: Option<String>,
    pub inputs: Option<Value>,
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Related {
    pub action_id: Uuid,
    pub agent: String,
    pub tool: String,
    pub status: ActionStatus,
}

/// The action's row of `backstop.compensations`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CompensationState {
    pub status: String,
    pub attempts: i32,
    pub worker: Option<String>,
    pub requested_by: String,
    pub reason: String,
    pub last_detail: Option<Value>,
}

/// One log row of the action, and the seal that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub actor: String,
    /// The first seal holding the row, and the row's digest; `None`: not sealed yet.
    pub seal: Option<(i64, Vec<u8>)>,
}

/// A row's whole text, for `Mode::Note`.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub title: String,
    pub lines: Vec<(String, String)>,
    /// The action the row is about: Enter opens its detail.
    pub action: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub at: DateTime<Utc>,
    pub text: String,
    pub error: bool,
}

#[derive(Debug, Clone)]
pub struct State {
    pub now: DateTime<Utc>,
    pub db_label: String,
    pub operator: String,
    pub readonly: bool,
    pub conn: Conn,
    pub lag_ms: Option<i64>,
    pub view: View,
    pub mode: Mode,
    /// Newest first.
    pub log: VecDeque<LogRow>,
    /// The rows on screen while frozen.
    pub frozen: Option<Vec<LogRow>>,
    pub following: bool,
    pub new_rows: usize,
    /// Current status of each action seen in the tail.
    pub status_of: HashMap<Uuid, String>,
    /// The cursor of each view, by identity (seq, action id, finding id or agent), never by index.
    pub cursor: HashMap<View, String>,
    pub marks: BTreeSet<Uuid>,
    pub range_anchor: Option<String>,
    pub filter: Filter,
    pub data: Snapshot,
    pub detail: Option<Detail>,
    /// The action whose detail is open (or loading): rows about it reload it.
    pub detail_for: Option<Uuid>,
    pub note: Option<Note>,
    pub plan: Option<Plan>,
    pub notice: Option<Notice>,
    pub policy_events: VecDeque<Notice>,
    pub quit: bool,
    pub dirty: bool,
    /// The terminal's size (columns, rows), once known: below 80x24 the body
    /// collapses to the log, and only what is drawn can be acted on.
    pub size: Option<(u16, u16)>,
    /// The first step of the rollback plan on screen.
    pub plan_scroll: usize,
    /// Approval cards by action id (see `card_for`).
    pub cards: HashMap<Uuid, Card>,
}

impl State {
    pub fn new(db_label: &str, operator: &str, readonly: bool, now: DateTime<Utc>) -> State {
        State {
            now,
            db_label: db_label.to_string(),
            operator: operator.to_string(),
            readonly,
            conn: Conn::Connecting,
            lag_ms: None,
            view: View::Log,
            mode: Mode::Normal,
            log: VecDeque::new(),
            frozen: None,
            following: true,
            new_rows: 0,
            status_of: HashMap::new(),
            cursor: HashMap::new(),
            marks: BTreeSet::new(),
            range_anchor: None,
            filter: Filter::default(),
            data: Snapshot::default(),
            detail: None,
            detail_for: None,
            note: None,
            plan: None,
            notice: None,
            policy_events: VecDeque::new(),
            quit: false,
            dirty: true,
            size: None,
            plan_scroll: 0,
            cards: HashMap::new(),
        }
    }

    /// Whether the log, the logins or the registry know this agent or tool
    /// (`None`: the room could not read what they know).
    pub fn knows(&self, scope: Scope, name: &str) -> Option<bool> {
        let (seen, known) = match scope {
            Scope::Agent => (
                self.data.fleet.iter().any(|a| a.agent == name)
                    || self.log.iter().any(|r| r.agent.as_deref() == Some(name)),
                &self.data.known_agents,
            ),
            Scope::Tool => (
                self.log.iter().any(|r| r.tool.as_deref() == Some(name)),
                &self.data.known_tools,
            ),
            Scope::Fleet => return Some(true),
        };
        if seen {
            return Some(true);
        }
        known.as_ref().map(|k| k.contains(name))
    }

    /// The body is collapsed to the log (the terminal is below 80x24).
    pub fn compact(&self) -> bool {
        self.size
            .is_some_and(|(w, h)| w < super::view::FULL_W || h < super::view::FULL_H)
    }

    /// The view whose rows are on screen: the log when collapsed.
    pub fn shown_view(&self) -> View {
        if self.compact() { View::Log } else { self.view }
    }

    /// The chosen view is not on screen (collapsed into the log).
    pub fn view_hidden(&self) -> bool {
        self.shown_view() != self.view
    }

    pub fn fleet_paused(&self) -> Option<&Switch> {
        self.data.switches.iter().find(|s| s.scope == Scope::Fleet)
    }

    pub fn agent_paused(&self, agent: &str) -> Option<&Switch> {
        self.data
            .switches
            .iter()
            .find(|s| s.scope == Scope::Agent && s.target == agent)
    }

    /// Every held action and their total value, as the database counts them.
    pub fn held_total(&self) -> (i64, Decimal) {
        (self.data.held_count, self.data.held_sum)
    }

    /// Held actions the database has that the approvals view does not list.
    pub fn held_not_listed(&self) -> i64 {
        (self.data.held_count - self.data.approvals.len() as i64).max(0)
    }

    pub fn open_findings(&self) -> usize {
        self.data.findings.iter().filter(|f| f.status == "open").count()
    }

    /// The log rows on screen (frozen or live), filtered, newest first.
    pub fn visible_log(&self) -> Vec<&LogRow> {
        let rows: Box<dyn Iterator<Item = &LogRow>> = match &self.frozen {
            Some(f) => Box::new(f.iter()),
            None => Box::new(self.log.iter()),
        };
        rows.filter(|r| self.log_matches(r)).collect()
    }

    fn log_matches(&self, r: &LogRow) -> bool {
        let f = &self.filter;
        if f.agent.as_ref().is_some_and(|a| r.agent.as_deref() != Some(a)) {
            return false;
        }
        if f.tool.as_ref().is_some_and(|t| r.tool.as_deref() != Some(t)) {
            return false;
        }
        if let Some(v) = &f.verdict {
            let rv = r.detail["verdict"].as_str().unwrap_or(r.kind.as_str());
            if rv != v && r.kind.as_str() != v {
                return false;
            }
        }
        if f.status.is_some() {
            let st = r
                .action_id
                .and_then(|a| self.status_of.get(&a))
                .map(String::as_str)
                .unwrap_or("");
            if !f.status_is(st) {
                return false;
            }
        }
        if let Some(min) = f.amount_above
            && r.amount.is_none_or(|a| a <= min)
        {
            return false;
        }
        if let Some(t) = &f.text {
            let hay = format!(
                "{} {} {} {} {} {}",
                r.kind,
                r.actor,
                r.agent.as_deref().unwrap_or(""),
                r.tool.as_deref().unwrap_or(""),
                r.correlation_id.as_deref().unwrap_or(""),
                r.detail
            )
            .to_lowercase();
            if !hay.contains(t) {
                return false;
            }
        }
        true
    }

    /// The fleet's agents the filter keeps (by agent and text).
    pub fn visible_fleet(&self) -> Vec<&AgentRow> {
        let f = &self.filter;
        self.data
            .fleet
            .iter()
            .filter(|a| f.agent.as_ref().is_none_or(|x| &a.agent == x))
            .filter(|a| f.text_in(&a.agent))
            .collect()
    }

    /// The compensations the filter keeps (agent, tool, status, text).
    pub fn visible_comps(&self) -> Vec<&CompRow> {
        let f = &self.filter;
        self.data
            .comps
            .iter()
            .filter(|c| f.agent.as_ref().is_none_or(|a| &c.agent == a))
            .filter(|c| f.tool.as_ref().is_none_or(|t| &c.tool == t))
            .filter(|c| f.status_is(&c.status))
            .filter(|c| {
                f.text_in(&format!(
                    "{} {} {} {} {} {}",
                    c.agent,
                    c.tool,
                    c.inverse_tool,
                    c.requested_by,
                    c.reason,
                    c.last_error.as_deref().unwrap_or("")
                ))
            })
            .collect()
    }

    pub fn visible_approvals(&self) -> Vec<&HeldRow> {
        let f = &self.filter;
        let mut v: Vec<&HeldRow> = self
            .data
            .approvals
            .iter()
            .filter(|h| f.agent.as_ref().is_none_or(|a| &h.agent == a))
            .filter(|h| f.tool.as_ref().is_none_or(|t| &h.tool == t))
            .filter(|h| f.amount_above.is_none_or(|m| h.amount.is_some_and(|a| a > m)))
            .filter(|h| {
                f.text_in(&format!(
                    "{} {} {} {}",
                    h.agent,
                    h.tool,
                    h.rule.as_deref().unwrap_or(""),
                    h.reason
                ))
            })
            .collect();
        // Highest value first, then oldest.
        v.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.held_at.cmp(&b.held_at)));
        v
    }

    /// Open and acknowledged findings, the most severe first, then the newest.
    pub fn visible_findings(&self) -> Vec<&FindingRow> {
        let f = &self.filter;
        let mut v: Vec<&FindingRow> = self
            .data
            .findings
            .iter()
            .filter(|x| x.status != "resolved")
            .filter(|x| f.agent.as_ref().is_none_or(|a| x.agent.as_ref() == Some(a)))
            // A finding's status is its review state or what the supervisor did.
            .filter(|x| {
                f.status_is(&x.status)
                    || x.auto
                        .as_deref()
                        .is_some_and(|a| a.split(", ").any(|part| f.status_is(part)))
            })
            .filter(|x| {
                f.text_in(&format!(
                    "{} {} {} {} {}",
                    x.kind,
                    x.severity,
                    x.rule.as_deref().unwrap_or(""),
                    super::view::evidence_text(&x.detail),
                    x.detail
                ))
            })
            .collect();
        v.sort_by(|a, b| {
            severity_rank(&a.severity)
                .cmp(&severity_rank(&b.severity))
                .then(b.last_at.cmp(&a.last_at))
                .then(a.finding_id.cmp(&b.finding_id))
        });
        v
    }

    /// Identity keys of the rows on screen, in display order.
    pub fn keys(&self) -> Vec<String> {
        self.keys_of(self.shown_view())
    }

    /// Identity keys of the rows of a view, in display order.
    pub fn keys_of(&self, view: View) -> Vec<String> {
        match view {
            View::Fleet => self.visible_fleet().iter().map(|a| a.agent.clone()).collect(),
            View::Log => self.visible_log().iter().map(|r| r.seq.to_string()).collect(),
            View::Approvals => self
                .visible_approvals()
                .iter()
                .map(|h| h.action_id.to_string())
                .collect(),
            View::Findings => self
                .visible_findings()
                .iter()
                .map(|f| f.finding_id.to_string())
                .collect(),
            View::Compensations => self.visible_comps().iter().map(|c| c.action_id.to_string()).collect(),
        }
    }

    /// Index of the cursor in the view on screen (0 when it has no place yet).
    pub fn cursor_index(&self) -> usize {
        self.cursor_index_of(self.shown_view())
    }

    /// Index of a view's cursor (0 when it has no place yet).
    pub fn cursor_index_of(&self, view: View) -> usize {
        let keys = self.keys_of(view);
        self.cursor
            .get(&view)
            .and_then(|k| keys.iter().position(|x| x == k))
            .unwrap_or(0)
    }

    pub fn cursor_key(&self) -> Option<String> {
        let keys = self.keys();
        keys.get(self.cursor_index()).cloned()
    }

    /// The action under the cursor, whatever the view.
    pub fn cursor_action(&self) -> Option<Uuid> {
        let key = self.cursor_key()?;
        match self.shown_view() {
            View::Log => {
                let seq: i64 = key.parse().ok()?;
                self.visible_log()
                    .iter()
                    .find(|r| r.seq == seq)
                    .and_then(|r| r.action_id)
            }
            View::Approvals | View::Compensations => Uuid::parse_str(&key).ok(),
            View::Findings => self
                .data
                .findings
                .iter()
                .find(|f| f.finding_id.to_string() == key)
                .and_then(|f| f.action_id),
            View::Fleet => None,
        }
    }

    /// The agent under the cursor, whatever the view.
    pub fn cursor_agent(&self) -> Option<String> {
        let key = self.cursor_key()?;
        match self.shown_view() {
            View::Fleet => Some(key),
            View::Log => {
                let seq: i64 = key.parse().ok()?;
                self.visible_log()
                    .iter()
                    .find(|r| r.seq == seq)
                    .and_then(|r| r.agent.clone())
            }
            View::Approvals => self
                .data
                .approvals
                .iter()
                .find(|h| h.action_id.to_string() == key)
                .map(|h| h.agent.clone()),
            View::Findings => self
                .data
                .findings
                .iter()
                .find(|f| f.finding_id.to_string() == key)
                .and_then(|f| f.agent.clone()),
            View::Compensations => self
                .data
                .comps
                .iter()
                .find(|c| c.action_id.to_string() == key)
                .map(|c| c.agent.clone()),
        }
    }

    /// The held action under the cursor of the view on screen.
    pub fn held_under_cursor(&self) -> Option<Uuid> {
        let id = self.cursor_action()?;
        self.data.approvals.iter().any(|h| h.action_id == id).then_some(id)
    }

    /// The held action whose card is wanted now: the one being approved,
    /// the one whose detail is open, or the highlighted row of the
    /// approvals view on screen. Always the row the acting keys act on.
    pub fn card_target(&self) -> Option<Uuid> {
        let held = |id: Uuid| self.data.approvals.iter().any(|h| h.action_id == id);
        match &self.mode {
            Mode::ConfirmApprove(id) => Some(*id),
            Mode::Detail { .. } => self.detail_for.filter(|id| held(*id)),
            _ if self.shown_view() == View::Approvals => self.held_under_cursor(),
            _ => None,
        }
    }

    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            at: self.now,
            text: text.into(),
            error,
        });
    }
}
