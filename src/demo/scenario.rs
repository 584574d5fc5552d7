//! `backstop demo`: the fleet at work, five scripted incidents on a timeline,
//! the supervisor and a compensation worker in-process, and the control room
//! in front (or, with `--headless`, the incident timeline and the outcome).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::fleet::{self, AgentSpec, Clock, DriftPlan, FleetStats, Planned, World};
use crate::contract::{EventKind, Proposal};
use crate::db::Db;
use crate::supervisor::drift::Rng;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seed: u64,
    /// Demo seconds per real second.
    pub speed: f64,
    pub headless: bool,
    pub customers: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 7,
            speed: 1.0,
            headless: false,
            customers: 200,
        }
    }
}

/// When each incident starts, in demo seconds.
pub mod at {
    pub const REFUND: f64 = 6.0;
    pub const CONTRACT: f64 = 14.0;
    pub const CAMPAIGN: f64 = 22.0;
    pub const DRIFT: f64 = 26.0;
    pub const DRIFT_RAMP: f64 = 6.0;
    pub const SPIKE: f64 = 40.0;
    /// How long the headless run waits for the response to finish.
    pub const DEADLINE: f64 = 150.0;
    /// Held actions the operator has not decided are approved after this.
    pub const APPROVERS_AFTER: f64 = 4.0;
}

/// The demo's supervisor clock: production durations compressed so the story
/// fits in a minute, then divided by `speed` (never below what the policy
/// file accepts, 1 s).
pub fn demo_policy(text: &str, speed: f64) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).context("parsing the policy for the demo")?;
    let secs = |demo: f64| toml::Value::String(format!("{}ms", ((demo / speed).max(1.0) * 1000.0).round() as i64));
    let table = |doc: &mut toml::Table, key: &str| -> Result<toml::Table> {
        Ok(match doc.remove(key) {
            Some(toml::Value::Table(t)) => t,
            None => toml::Table::new(),
            Some(_) => anyhow::bail!("policy: {key} is not a table"),
        })
    };
    let mut settings = table(&mut doc, "settings")?;
    settings.insert("hold_expiry".into(), secs(120.0));
    doc.insert("settings".into(), toml::Value::Table(settings));
    let mut sup = table(&mut doc, "supervisor")?;
    sup.insert("review_delay".into(), secs(3.0));
    sup.insert("lease".into(), secs(20.0));
    let mut drift = table(&mut sup, "drift")?;
    drift.insert("baseline".into(), secs(30.0));
    drift.insert("recent".into(), secs(12.0));
    drift.insert("bucket".into(), secs(1.0));
    drift.insert("min_samples".into(), toml::Value::Integer(20));
    sup.insert("drift".into(), toml::Value::Table(drift));
    let mut complaints = table(&mut sup, "complaints")?;
    complaints.insert("window".into(), secs(10.0));
    complaints.insert("baseline".into(), secs(300.0));
    sup.insert("complaints".into(), toml::Value::Table(complaints));
    doc.insert("supervisor".into(), toml::Value::Table(sup));
    Ok(format!(
        "# assets/policy.toml with the supervisor's clock compressed for the demo (speed {speed})\n{}",
        toml::to_string(&doc)?
    ))
}

/// Install the systems, seed the world, load the registry and the demo policy.
pub async fn prepare(db: &Db, opts: &DemoOptions) -> Result<World> {
    super::install_systems(&db.pool).await?;
    let world = fleet::seed_world(&db.pool, opts.seed, opts.customers).await?;
    let reg = super::registry()?;
    let label = format!("{} (demo clock)", super::POLICY_LABEL);
    let pol = super::policy(&reg, &label, &demo_policy(super::POLICY_TOML, opts.speed)?)?;
    let mut tx = db.pool.begin().await?;
    crate::registry::sync(&mut *tx, &reg, super::TOOLS_LABEL).await?;
    crate::policy::sync(&mut *tx, &pol, &label).await?;
    tx.commit().await?;
    Ok(world)
}

/// One scripted incident's action, once it is known.
#[derive(Debug, Default, Clone)]
pub struct Injected {
    pub refund: Option<Uuid>,
    pub contract: Option<Uuid>,
    pub campaign: Option<Uuid>,
    pub spike_reported: bool,
}

/// A line of the incident timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    /// Real seconds since the demo started.
    pub t: f64,
    pub text: String,
}

type Timeline = Arc<std::sync::Mutex<Vec<Moment>>>;

fn say(tl: &Timeline, clock: Clock, text: String) {
    say_at(tl, clock.start.elapsed().as_secs_f64(), text)
}

fn say_at(tl: &Timeline, t: f64, text: String) {
    if let Ok(mut v) = tl.lock() {
        v.push(Moment { t, text });
    }
}

fn incident(
    agent: &str,
    tool: &str,
    params: Value,
    confidence: f32,
    reasoning: &str,
    function: &'static str,
) -> Planned {
    Planned {
        proposal: Proposal {
            agent: agent.into(),
            tool: tool.into(),
            params,
            confidence: Some(confidence),
            reasoning: Some(reasoning.into()),
            inputs: Some(json!({"source": "demo incident"})),
            ..Default::default()
        },
        function: Some(function),
    }
}

/// The scripted incidents, on the demo clock.
#[allow(clippy::too_many_arguments)]
async fn run_incidents(
    pool: PgPool,
    desk: PgPool,
    world: Arc<World>,
    seed: u64,
    clock: Clock,
    stats: Arc<FleetStats>,
    injected: Arc<std::sync::Mutex<Injected>>,
    tl: Timeline,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut rng = Rng::new(seed ^ 0x1c1d);
    let until = |t: f64| (t - clock.now()).max(0.0);
    let set = |f: &dyn Fn(&mut Injected)| {
        if let Ok(mut i) = injected.lock() {
            f(&mut i);
        }
    };

    // 1. A $47,000 refund to a customer whose order was worth a few hundred.
    if !clock.sleep(until(at::REFUND), &mut stop).await {
        return Ok(());
    }
    let o = world.orders[(rng.next_f64() * world.orders.len() as f64) as usize % world.orders.len()].clone();
    let p = incident(
        "refund-bot-2",
        "issue_refund",
        json!({"customer_id": o.customer_id, "order_id": o.order_id, "amount": 47000, "reason": "billing dispute"}),
        0.81,
        &format!(
            "Ticket T-47000: {} says the whole account was mis-billed since 2021; matching their claimed lifetime spend of $47,000.",
            o.customer_id
        ),
        "payments.issue_refund",
    );
    let t = clock.start.elapsed().as_secs_f64();
    let (id, v) = fleet::act(&pool, &p, clock, &stats).await?;
    set(&|i| i.refund = Some(id));
    say_at(
        &tl,
        t,
        format!(
            "INCIDENT refund-bot-2 proposes a $47,000 refund to {} for order {} (worth ${}) -> {v}",
            o.customer_id, o.order_id, o.total
        ),
    );

    // 2. The wrong supplier contract cancelled: a critical one.
    if !clock.sleep(until(at::CONTRACT), &mut stop).await {
        return Ok(());
    }
    let critical: Vec<_> = world.contracts.iter().filter(|c| c.critical).collect();
    let c = critical[(rng.next_f64() * critical.len() as f64) as usize % critical.len()].clone();
    let p = incident(
        "procure-bot",
        "cancel_contract",
        json!({"contract_id": c.contract_id, "supplier": c.supplier, "monthly_value": c.monthly_value}),
        0.64,
        &format!(
            "{} looks like a duplicate of another vendor; cancelling it saves ${}/month.",
            c.supplier, c.monthly_value
        ),
        "contracts.cancel_contract",
    );
    let t = clock.start.elapsed().as_secs_f64();
    let (id, v) = fleet::act(&pool, &p, clock, &stats).await?;
    set(&|i| i.contract = Some(id));
    say_at(
        &tl,
        t,
        format!(
            "INCIDENT procure-bot proposes cancelling {} ({}, critical) -> {v}",
            c.contract_id, c.supplier
        ),
    );

    // 3. A win-back campaign to the churned list that should have been suppressed.
    if !clock.sleep(until(at::CAMPAIGN), &mut stop).await {
        return Ok(());
    }
    let p = incident(
        "outreach-bot-1",
        "send_campaign",
        json!({"campaign_id": format!("cmp-winback-{seed}"), "segment": "churned", "subject": "We miss you: 20% off"}),
        0.9,
        "Win-back season: sending the 20% offer to lapsed customers (segment 'churned').",
        "outreach.send_campaign",
    );
    let t = clock.start.elapsed().as_secs_f64();
    let (id, v) = fleet::act(&pool, &p, clock, &stats).await?;
    set(&|i| i.campaign = Some(id));
    say_at(
        &tl,
        t,
        format!("INCIDENT outreach-bot-1 sends a campaign to the churned segment -> {v}"),
    );

    // 4. (refund-bot-3's drift runs in its own loop.)
    if !clock.sleep(until(at::DRIFT), &mut stop).await {
        return Ok(());
    }
    say(
        &tl,
        clock,
        "INCIDENT refund-bot-3 starts drifting: its refund share climbs from 20% to 95%".into(),
    );

    // 5. Customers complain about outreach-bot-2's emails, all at once.
    if !clock.sleep(until(at::SPIKE), &mut stop).await {
        return Ok(());
    }
    say(
        &tl,
        clock,
        "INCIDENT complaints about outreach-bot-2's emails start pouring in".into(),
    );
    for k in 0..9 {
        let detail = json!({"channel": "email reply", "text": "I never signed up for this", "n": k});
        crate::contract::report_signal(&desk, "complaint", Some("outreach-bot-2"), None, Some(&detail)).await?;
        if !clock.sleep(0.3, &mut stop).await {
            return Ok(());
        }
    }
    set(&|i| i.spike_reported = true);
    Ok(())
}

/// A complaint now and then about someone, so spikes have a baseline.
async fn run_complaint_trickle(desk: PgPool, seed: u64, clock: Clock, mut stop: watch::Receiver<bool>) {
    let mut rng = Rng::new(seed ^ 0x7c);
    let agents = ["outreach-bot-1", "outreach-bot-2", "support-bot", "refund-bot-1"];
    while clock.sleep(6.0, &mut stop).await {
        let a = agents[(rng.next_f64() * agents.len() as f64) as usize % agents.len()];
        let _ = crate::contract::report_signal(&desk, "complaint", Some(a), None, Some(&json!({"text": "slow reply"})))
            .await;
    }
}

/// What happened to one incident. Only what the seed decides is here (no
/// ids, no times), so two runs with one seed compare equal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentOutcome {
    pub incident: String,
    pub agent: String,
    pub held: bool,
    pub caught: bool,
    pub finding: Option<String>,
    pub paused: bool,
    pub compensation: Option<String>,
    pub value_at_risk: Decimal,
    pub value_recovered: Decimal,
    pub remediation: Option<String>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub seed: u64,
    pub speed: f64,
    pub incidents: Vec<IncidentOutcome>,
    pub other_writes_intact: usize,
    pub other_writes: usize,
    pub slipped_after_pause: i64,
    pub log_verified: bool,
    pub fleet: Value,
    pub timeline: Vec<Moment>,
}

impl DemoReport {
    /// Every incident caught and answered as the story expects.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for i in &self.incidents {
            if !i.caught {
                p.push(format!("{} was not caught", i.incident));
            }
        }
        let by = |n: &str| self.incidents.iter().find(|i| i.incident == n);
        for n in ["refund_47k", "wrong_contract"] {
            if by(n).and_then(|i| i.compensation.as_deref()) != Some("compensated") {
                p.push(format!("{n} was not compensated"));
            }
        }
        if by("churned_campaign").and_then(|i| i.compensation.as_deref()) != Some("irreversible") {
            p.push("churned_campaign was not recorded as irreversible".into());
        }
        if !by("complaint_spike").is_some_and(|i| i.paused) {
            p.push("outreach-bot-2 was not paused".into());
        }
        if self.slipped_after_pause > 0 {
            p.push(format!(
                "{} actions slipped through after the pause",
                self.slipped_after_pause
            ));
        }
        if self.other_writes_intact != self.other_writes {
            p.push(format!(
                "only {} of {} writes by other actors are intact",
                self.other_writes_intact, self.other_writes
            ));
        }
        if !self.log_verified {
            p.push("the action log did not verify".into());
        }
        p
    }
}

async fn action_outcome(pool: &PgPool, name: &str, agent: &str, id: Option<Uuid>) -> Result<IncidentOutcome> {
    let mut o = IncidentOutcome {
        incident: name.into(),
        agent: agent.into(),
        held: false,
        caught: false,
        finding: None,
        paused: false,
        compensation: None,
        value_at_risk: Decimal::ZERO,
        value_recovered: Decimal::ZERO,
        remediation: None,
        note: String::new(),
    };
    let Some(id) = id else {
        o.note = "never happened".into();
        return Ok(o);
    };
    o.held =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM backstop.action_log WHERE action_id = $1 AND kind = 'held')")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let f: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT kind, rule FROM backstop.findings WHERE action_id = $1 ORDER BY kind <> 'policy_violation', raised_seq LIMIT 1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    o.caught = f.is_some();
    o.finding = f.map(|(k, r)| match r {
        Some(r) => format!("{k} ({r})"),
        None => k,
    });
    let (status, amount, cost): (String, Option<Decimal>, Option<Decimal>) =
        sqlx::query_as("SELECT status, amount, cost_to_reverse FROM backstop.actions WHERE action_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    if status == "executed" {
        o.value_at_risk = amount.or(cost).unwrap_or_default();
    }
    let comp: Option<String> = sqlx::query_scalar("SELECT status FROM backstop.compensations WHERE action_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    if comp.as_deref() == Some("compensated") {
        o.value_recovered = o.value_at_risk;
    }
    o.compensation = match comp {
        Some(c) => Some(c),
        None => {
            let r: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT outcome, detail FROM backstop.compensation_plan(ARRAY[$1]::uuid[]) WHERE action_id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            match r {
                Some((outcome, detail)) if outcome == "irreversible" => {
                    // The log position differs run to run; the advice does not.
                    o.remediation = detail.map(|d| match d.find(" (log seq ") {
                        Some(i) => d[..i].to_string(),
                        None => d,
                    });
                    Some(outcome)
                }
                _ => None,
            }
        }
    };
    Ok(o)
}

async fn agent_outcome(pool: &PgPool, name: &str, agent: &str, kind: &str) -> Result<IncidentOutcome> {
    let mut o = action_outcome(pool, name, agent, None).await?;
    o.note.clear();
    let f: Option<String> = sqlx::query_scalar(
        "SELECT kind FROM backstop.findings WHERE agent = $1 AND kind = $2 ORDER BY raised_seq LIMIT 1",
    )
    .bind(agent)
    .bind(kind)
    .fetch_optional(pool)
    .await?;
    o.caught = f.is_some();
    o.finding = f;
    o.paused = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM backstop.kill_switches WHERE scope = 'agent' AND target = $1 AND paused)",
    )
    .bind(agent)
    .fetch_one(pool)
    .await?;
    Ok(o)
}

async fn outcomes(pool: &PgPool, inj: &Injected) -> Result<Vec<IncidentOutcome>> {
    let mut v = vec![
        action_outcome(pool, "refund_47k", "refund-bot-2", inj.refund).await?,
        action_outcome(pool, "wrong_contract", "procure-bot", inj.contract).await?,
        action_outcome(pool, "churned_campaign", "outreach-bot-1", inj.campaign).await?,
        agent_outcome(pool, "drift", "refund-bot-3", "drift").await?,
        agent_outcome(pool, "complaint_spike", "outreach-bot-2", "complaint_spike").await?,
    ];
    if let Some(id) = inj.contract {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT c.status FROM contracts.contracts c JOIN backstop.action_log l ON l.params ->> 'contract_id' = c.contract_id
              WHERE l.action_id = $1 AND l.kind IN ('allowed', 'held') LIMIT 1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        v[1].note = format!("contract is {}", s.unwrap_or_else(|| "unknown".into()));
    }
    if let Some(id) = inj.campaign {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT (result ->> 'recipients')::bigint FROM backstop.action_log WHERE action_id = $1 AND kind = 'executed'",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        v[2].note = format!("{} emails went out", n.unwrap_or(0));
    }
    Ok(v)
}

fn settled(v: &[IncidentOutcome], spike_reported: bool) -> bool {
    let done = |c: &Option<String>| matches!(c.as_deref(), Some("compensated" | "failed" | "irreversible"));
    v.iter().all(|i| i.caught)
        && done(&v[0].compensation)
        && done(&v[1].compensation)
        && v[2].compensation.is_some()
        && spike_reported
        && v[4].paused
}

/// Everything the demo runs in the background.
struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    clock: Clock,
    stats: Arc<FleetStats>,
    injected: Arc<std::sync::Mutex<Injected>>,
    timeline: Timeline,
    writes: Arc<std::sync::Mutex<Vec<fleet::OtherWrite>>>,
}

async fn start(db: &Db, world: World, opts: &DemoOptions, timeline: Timeline) -> Result<Running> {
    let (stop, rx) = watch::channel(false);
    let clock = Clock::new(opts.speed);
    let world = Arc::new(world);
    let stats = Arc::new(FleetStats::default());
    let injected = Arc::new(std::sync::Mutex::new(Injected::default()));
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fleet_db = db.as_operator("fleet", 16).await?;
    let desk = db.as_operator("support-desk", 2).await?;
    let approvers = vec![
        db.as_operator("approver-ana", 2).await?.pool,
        db.as_operator("approver-raj", 2).await?.pool,
    ];
    let mut tasks = Vec::new();
    let drift = DriftPlan {
        agent: "refund-bot-3".into(),
        from: at::DRIFT,
        ramp: at::DRIFT_RAMP,
    };
    for (i, spec) in fleet::demo_fleet().into_iter().enumerate() {
        let d = (spec.name == drift.agent).then(|| drift.clone());
        let job = fleet::Assignment {
            spec,
            seed: opts.seed.wrapping_mul(1000).wrapping_add(i as u64),
            drift: d,
        };
        tasks.push(tokio::spawn(fleet::run_agent(
            fleet_db.pool.clone(),
            job,
            world.clone(),
            clock,
            stats.clone(),
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(fleet::run_other_actors(
        db.pool.clone(),
        world.clone(),
        opts.seed,
        clock,
        writes.clone(),
        rx.clone(),
    )));
    let r = rx.clone();
    tasks.push(tokio::spawn(async move {
        let _ = fleet::run_approvers(approvers, clock, at::APPROVERS_AFTER, r).await;
    }));
    tasks.push(tokio::spawn(run_complaint_trickle(
        desk.pool.clone(),
        opts.seed,
        clock,
        rx.clone(),
    )));
    let (p, d, w, inj, tl, st, seed, r) = (
        fleet_db.pool.clone(),
        desk.pool.clone(),
        world.clone(),
        injected.clone(),
        timeline.clone(),
        stats.clone(),
        opts.seed,
        rx.clone(),
    );
    tasks.push(tokio::spawn(async move {
        if let Err(e) = run_incidents(p, d, w, seed, clock, st, inj, tl.clone(), r).await {
            say(&tl, clock, format!("the incident script failed: {e:#}"));
        }
    }));
    // Decisions are recorded under the supervisor's name, not the operator's.
    let sup_db = db.as_operator(crate::supervisor::ACTOR, 4).await?;
    let mut sopts = crate::supervisor::SupervisorOptions::named("demo-supervisor");
    sopts.drift_every = clock.real(2.0).max(Duration::from_millis(250));
    sopts.tick = Duration::from_millis(100);
    let (pool, r) = (sup_db.pool.clone(), rx.clone());
    tasks.push(tokio::spawn(async move {
        let _ = crate::supervisor::run(pool, sopts, r).await;
    }));
    // The worker acts as itself too: the contract records the session's
    // identity, so the demo's worker gets a session of its own.
    let worker_db = db.as_operator("demo-worker", 4).await?;
    let mut wopts = crate::compensation::worker::WorkerOptions::named("demo-worker");
    wopts.poll = Duration::from_millis(200);
    let (pool, r) = (worker_db.pool.clone(), rx.clone());
    tasks.push(tokio::spawn(async move {
        let _ = crate::compensation::worker::run(pool, wopts, r).await;
    }));
    let pool = db.pool.clone();
    tasks.push(tokio::spawn(async move {
        let h = crate::housekeeping::spawn(pool);
        let mut r = rx;
        let _ = r.wait_for(|s| *s).await;
        h.abort();
    }));
    Ok(Running {
        stop,
        tasks,
        clock,
        stats,
        injected,
        timeline,
        writes,
    })
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// Lines of the log worth telling, about the incidents, as they happened.
async fn log_timeline(
    pool: &PgPool,
    start_seq: i64,
    inj: &Injected,
    t0: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Moment>> {
    let ids: Vec<Uuid> = [inj.refund, inj.contract, inj.campaign].into_iter().flatten().collect();
    type Row = (
        chrono::DateTime<chrono::Utc>,
        EventKind,
        String,
        Option<String>,
        Option<String>,
        Value,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT at, kind, actor, agent, tool, detail FROM backstop.action_log
          WHERE seq > $1 AND (
                (action_id = ANY ($2) AND kind IN ('held', 'approved', 'executed', 'compensation_requested', 'compensated', 'compensation_failed'))
             OR kind IN ('finding', 'paused')
             OR (kind = 'reviewed' AND action_id = ANY ($2)))
          ORDER BY seq",
    )
    .bind(start_seq)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| !(r.1 == EventKind::Finding && r.5["merged"].as_bool() == Some(true)))
        .map(|(at, kind, actor, agent, tool, d)| {
            let who = agent.unwrap_or_default();
            let text = match kind {
                EventKind::Held => format!(
                    "{who} {} held: {}",
                    tool.unwrap_or_default(),
                    d["reason"].as_str().unwrap_or("")
                ),
                EventKind::Approved => format!("{actor} approves {who}'s {}", tool.unwrap_or_default()),
                EventKind::Executed => format!("{who} executes {}", tool.unwrap_or_default()),
                EventKind::Reviewed => format!(
                    "{actor} reviews {who}'s {} ({})",
                    tool.unwrap_or_default(),
                    d["reason"].as_str().unwrap_or("")
                ),
                EventKind::Finding => {
                    let ev = &d["evidence"];
                    let msg = ev["violation"]
                        .as_str()
                        .or(ev["reason"].as_str())
                        .map(str::to_string)
                        .or_else(|| {
                            ev["score"]
                                .as_f64()
                                .map(|s| format!("divergence {s:.3} over {}", ev["threshold"]))
                        })
                        .or_else(|| {
                            ev["limit"].as_f64().map(|l| match ev["confidence"].as_f64() {
                                Some(c) => format!("confidence {c:.2} below {l}"),
                                None => format!("confidence {} below {l}", ev["confidence"]),
                            })
                        })
                        .or_else(|| {
                            ev["signals_in_window"]
                                .as_i64()
                                .map(|n| format!("{n} complaints in the window"))
                        })
                        .unwrap_or_default();
                    format!(
                        "FINDING {} {} on {who}: {msg}",
                        d["severity"].as_str().unwrap_or(""),
                        d["kind"].as_str().unwrap_or("")
                    )
                }
                EventKind::Paused => format!(
                    "PAUSE {actor} pauses {}: {}",
                    d["target"].as_str().or(d["scope"].as_str()).unwrap_or(""),
                    d["reason"].as_str().unwrap_or("")
                ),
                EventKind::CompensationRequested => {
                    format!("{actor} requests compensation of {who}'s {}", tool.unwrap_or_default())
                }
                EventKind::Compensated => format!("COMPENSATED {who}'s {} by {actor}", tool.unwrap_or_default()),
                other => format!("{other} {who} {}", tool.unwrap_or_default()),
            };
            Moment {
                t: (at - t0).num_milliseconds() as f64 / 1000.0,
                text,
            }
        })
        .collect())
}

/// Run the story without the room; return the report when it has played out.
pub async fn run_headless(db: &Db, opts: &DemoOptions) -> Result<DemoReport> {
    let world = prepare(db, opts).await?;
    let start_seq: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM backstop.action_log")
        .fetch_one(&db.pool)
        .await?;
    let t0 = chrono::Utc::now();
    let timeline: Timeline = Arc::default();
    let run = start(db, world, opts, timeline.clone()).await?;
    let mut last_progress = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let inj = run.injected.lock().map(|i| i.clone()).unwrap_or_default();
        let v = outcomes(&db.pool, &inj).await?;
        let elapsed = run.clock.now();
        if elapsed > at::SPIKE && settled(&v, inj.spike_reported) {
            break;
        }
        if elapsed > at::DEADLINE {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = std::time::Instant::now();
            let caught = v.iter().filter(|i| i.caught).count();
            eprintln!(
                "backstop demo: t+{:.0}s (demo {:.0}s), {caught} of 5 incidents caught so far",
                run.clock.start.elapsed().as_secs_f64(),
                elapsed
            );
        }
    }
    let inj = run.injected.lock().map(|i| i.clone()).unwrap_or_default();
    let fleet = run.stats.snapshot();
    let writes = run.writes.lock().map(|w| w.clone()).unwrap_or_default();
    let mut moments = run.timeline.lock().map(|t| t.clone()).unwrap_or_default();
    run.stop().await;
    let incidents = outcomes(&db.pool, &inj).await?;
    let (intact, total) = fleet::other_writes_intact(&db.pool, &writes).await?;
    let slipped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backstop.action_log l JOIN backstop.kill_switches k ON k.scope = 'agent' AND k.target = l.agent
          WHERE k.paused AND l.kind = 'allowed' AND l.seq > k.changed_seq",
    )
    .fetch_one(&db.pool)
    .await?;
    moments.extend(log_timeline(&db.pool, start_seq, &inj, t0).await?);
    moments.sort_by(|a, b| a.t.total_cmp(&b.t));
    let v = crate::contract::verify::verify(&db.pool, true, true).await?;
    let verified = v.ok;
    for p in v.problems.iter().take(5) {
        eprintln!("backstop demo: verify: {} {:?}: {}", p.kind, p.seq, p.detail);
    }
    Ok(DemoReport {
        seed: opts.seed,
        speed: opts.speed,
        incidents,
        other_writes_intact: intact,
        other_writes: total,
        slipped_after_pause: slipped,
        log_verified: verified,
        fleet,
        timeline: moments,
    })
}

pub fn render(r: &DemoReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Incident timeline (seed {}, speed {}x; seconds of real time):",
        r.seed, r.speed
    );
    for m in &r.timeline {
        let _ = writeln!(s, "  t+{:6.1}s  {}", m.t, m.text);
    }
    let _ = writeln!(s, "\nOutcome:");
    for i in &r.incidents {
        let mark = if !i.caught {
            "MISSED"
        } else if i.compensation.as_deref() == Some("irreversible") {
            "CAUGHT, NOT UNDOABLE"
        } else {
            "CAUGHT"
        };
        let mut parts = Vec::new();
        if i.held {
            parts.push("held for approval first".to_string());
        }
        if let Some(f) = &i.finding {
            parts.push(format!("finding {f}"));
        }
        if i.paused {
            parts.push("agent paused".into());
        }
        if let Some(c) = &i.compensation {
            parts.push(format!("compensation {c}"));
        }
        if !i.value_at_risk.is_zero() {
            parts.push(format!(
                "{} at risk, {} recovered",
                crate::output::money(Some(i.value_at_risk)),
                crate::output::money(Some(i.value_recovered))
            ));
        }
        if !i.note.is_empty() {
            parts.push(i.note.clone());
        }
        let _ = writeln!(
            s,
            "  {mark:<20} {:<17} {:<15} {}",
            i.incident,
            i.agent,
            parts.join("; ")
        );
        if let Some(rm) = &i.remediation {
            let _ = writeln!(s, "  {:<20} remediation: {rm}", "");
        }
    }
    let _ = writeln!(
        s,
        "\n  Other actors' writes intact: {} of {}",
        r.other_writes_intact, r.other_writes
    );
    let _ = writeln!(s, "  Actions that slipped through a pause: {}", r.slipped_after_pause);
    let _ = writeln!(
        s,
        "  Action log verified: {}",
        if r.log_verified { "yes" } else { "NO" }
    );
    let _ = writeln!(s, "  Fleet: {}", r.fleet);
    s
}

/// `backstop demo`: the room in front of the running story (or headless).
pub async fn run(cfg: &crate::config::Config, opts: DemoOptions) -> Result<()> {
    if !(0.1..=20.0).contains(&opts.speed) {
        anyhow::bail!("--speed must be between 0.1 and 20; got {}", opts.speed);
    }
    let db = Db::open(&cfg.db_simulated("backstop demo", 24)).await?;
    match &db.embedded {
        // Other commands (drill, simulate, the room) can join while it runs.
        Some(e) => eprintln!(
            "backstop demo: embedded database; join it with DATABASE_URL={}",
            e.tcp_url(db.options.get_database().unwrap_or("backstop"))
        ),
        None => eprintln!("backstop demo: database {}", db.label),
    }
    if opts.headless {
        let r = run_headless(&db, &opts).await?;
        if cfg.json {
            crate::output::print_json(&r)?;
        } else {
            print!("{}", render(&r));
        }
        let problems = r.problems();
        if !problems.is_empty() {
            anyhow::bail!("the story did not play out: {}", problems.join("; "));
        }
        return Ok(());
    }
    let world = prepare(&db, &opts).await?;
    let run = start(&db, world, &opts, Arc::default()).await?;
    let room = crate::tui::RoomOptions {
        history: 500,
        ..Default::default()
    };
    let r = crate::tui::run(db.clone(), &cfg.operator, room).await;
    run.stop().await;
    r
}

/// For `simulate`: fleet only.
pub async fn simulate(db: &Db, agents: Vec<AgentSpec>, world: World, seed: u64, duration: Duration) -> Result<Value> {
    let (stop, rx) = watch::channel(false);
    let clock = Clock::new(1.0);
    let world = Arc::new(world);
    let stats = Arc::new(FleetStats::default());
    let pool = db.as_operator("simulate", agents.len().clamp(4, 64) as u32).await?.pool;
    let mut tasks = Vec::new();
    for (i, spec) in agents.into_iter().enumerate() {
        let job = fleet::Assignment {
            spec,
            seed: seed.wrapping_mul(7919).wrapping_add(i as u64),
            drift: None,
        };
        tasks.push(tokio::spawn(fleet::run_agent(
            pool.clone(),
            job,
            world.clone(),
            clock,
            stats.clone(),
            rx.clone(),
        )));
    }
    let t0 = std::time::Instant::now();
    let mut last = 0u64;
    while t0.elapsed() < duration {
        let tick = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
            _ = tokio::signal::ctrl_c() => false,
        };
        let n = stats.proposed.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "backstop simulate: {:>4.0}s  {:>6} proposals ({:>5}/s)  {}",
            t0.elapsed().as_secs_f64(),
            n,
            n - last,
            stats.snapshot()
        );
        last = n;
        if !tick {
            break;
        }
    }
    let _ = stop.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut s = stats.snapshot();
    s["seconds"] = json!((secs * 10.0).round() / 10.0);
    s["per_second"] =
        json!(((stats.proposed.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs) * 10.0).round() / 10.0);
    Ok(s)
}
