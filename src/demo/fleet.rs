//! The demo's world and its fleet: customers, orders, contracts; agents that
//! act through the SQL contract with plausible reasoning; other actors (a
//! person, a nightly job) writing to the same systems directly; approvers.
//! `backstop simulate` drives the same fleet without incidents.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::contract::{self, Proposal, Verdict};
use crate::supervisor::drift::Rng;

/// Demo time: `speed` demo seconds pass per real second.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub speed: f64,
}

impl Clock {
    pub fn new(speed: f64) -> Clock {
        Clock {
            start: Instant::now(),
            speed: speed.max(0.01),
        }
    }
    /// Demo seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.speed
    }
    /// Real duration of `secs` demo seconds.
    pub fn real(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs / self.speed).max(0.0))
    }
    /// Sleep `secs` demo seconds, or until stopped; false when stopped.
    pub async fn sleep(&self, secs: f64, stop: &mut watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.real(secs)) => !*stop.borrow(),
            _ = stop.changed() => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub total: i64,
}

#[derive(Debug, Clone)]
pub struct SupplierContract {
    pub contract_id: String,
    pub supplier: String,
    pub monthly_value: i64,
    pub critical: bool,
}

/// What the fleet acts on.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// (customer_id, name, email) of active customers.
    pub customers: Vec<(String, String, String)>,
    pub churned: Vec<String>,
    pub orders: Vec<Order>,
    pub contracts: Vec<SupplierContract>,
    pub payees: Vec<(String, String)>,
}

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Frances",
    "John",
    "Radia",
    "Leslie",
    "Shafi",
    "Tim",
    "Hedy",
    "Donald",
    "Sophie",
    "Niklaus",
    "Katherine",
    "Linus",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Backus",
    "Perlman",
    "Lamport",
    "Goldwasser",
    "Berners-Lee",
    "Lamarr",
    "Knuth",
    "Wilson",
    "Wirth",
    "Johnson",
    "Torvalds",
];
const SUPPLIERS: &[&str] = &[
    "Acme Logistics",
    "Northwind Packaging",
    "Globex Cloud",
    "Initech Cleaning",
    "Umbrella Security",
    "Stark Freight",
    "Wayne Facilities",
    "Hooli Telecom",
    "Vandelay Imports",
    "Soylent Catering",
    "Tyrell Robotics",
    "Wonka Snacks",
];

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[((rng.next_f64() * xs.len() as f64) as usize).min(xs.len() - 1)]
}

fn between(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    lo + (rng.next_f64() * (hi - lo + 1) as f64) as i64
}

/// Create the world for `seed` (idempotent: a kept database is reused).
pub async fn seed_world(pool: &PgPool, seed: u64, customers: usize) -> Result<World> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut w = World::default();
    let mut tx = pool.begin().await?;
    for i in 0..customers {
        let id = format!("c-{:04}", 1000 + i);
        let name = format!("{} {}", pick(&mut rng, FIRST), pick(&mut rng, LAST));
        let email = format!("{}.{}@example.com", name.replace(' ', ".").to_lowercase(), i);
        let tier = if rng.next_f64() < 0.2 { "gold" } else { "standard" };
        // One customer in twelve has churned and is on the suppression list.
        let churned = i % 12 == 11;
        sqlx::query(
            "INSERT INTO crm.customers (customer_id, name, email, tier, status) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&name)
        .bind(&email)
        .bind(tier)
        .bind(if churned { "churned" } else { "active" })
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO payments.accounts (customer_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        if churned {
            sqlx::query("INSERT INTO crm.suppression_list VALUES ($1, 'churned') ON CONFLICT DO NOTHING")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            w.churned.push(id.clone());
        } else {
            w.customers.push((id.clone(), name, email));
        }
        for k in 0..2 {
            let order = Order {
                order_id: format!("o-{}{}", 5000 + i, k),
                customer_id: id.clone(),
                total: between(&mut rng, 25, 640),
            };
            sqlx::query(
                "INSERT INTO payments.orders (order_id, customer_id, total) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&order.order_id)
            .bind(&order.customer_id)
            .bind(Decimal::from(order.total))
            .execute(&mut *tx)
            .await?;
            if !churned {
                w.orders.push(order);
            }
        }
    }
    for (i, supplier) in SUPPLIERS.iter().enumerate() {
        let c = SupplierContract {
            contract_id: format!("k-{:03}", 100 + i),
            supplier: supplier.to_string(),
            monthly_value: between(&mut rng, 4, 90) * 100,
            // Freight and cloud keep the business running.
            critical: matches!(i, 0 | 2 | 5),
        };
        sqlx::query(
            "INSERT INTO contracts.contracts (contract_id, supplier, monthly_value, critical) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&c.contract_id)
        .bind(&c.supplier)
        .bind(Decimal::from(c.monthly_value))
        .bind(c.critical)
        .execute(&mut *tx)
        .await?;
        w.payees.push((
            supplier.to_string(),
            format!("DE{:02}5001{:012}", 10 + i, 31_000_000 + i * 7919),
        ));
        w.contracts.push(c);
    }
    tx.commit().await?;
    Ok(w)
}

/// What an agent does for a living.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Refunds,
    Billing,
    Procurement,
    Payables,
    Outreach,
    CrmHygiene,
    Support,
}

#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub role: Role,
    /// Actions per demo minute.
    pub per_minute: f64,
}

/// The demo's fleet: twelve agents across five teams.
pub fn demo_fleet() -> Vec<AgentSpec> {
    let a = |name: &str, role, per_minute| AgentSpec {
        name: name.into(),
        role,
        per_minute,
    };
    vec![
        a("refund-bot-1", Role::Refunds, 30.0),
        a("refund-bot-2", Role::Refunds, 24.0),
        // Busy enough for the supervisor to have a baseline of its habits.
        a("refund-bot-3", Role::Refunds, 150.0),
        a("billing-bot", Role::Billing, 24.0),
        a("procure-bot", Role::Procurement, 12.0),
        a("procure-bot-2", Role::Procurement, 10.0),
        a("payables-bot", Role::Payables, 8.0),
        a("outreach-bot-1", Role::Outreach, 18.0),
        a("outreach-bot-2", Role::Outreach, 18.0),
        a("crm-hygiene-1", Role::CrmHygiene, 30.0),
        a("crm-hygiene-2", Role::CrmHygiene, 24.0),
        a("support-bot", Role::Support, 24.0),
    ]
}

/// `n` agents spread across the roles, for `simulate`.
pub fn generic_fleet(n: usize, per_minute: f64) -> Vec<AgentSpec> {
    const ROLES: [(Role, &str); 7] = [
        (Role::Refunds, "refunds"),
        (Role::CrmHygiene, "crm"),
        (Role::Support, "support"),
        (Role::Billing, "billing"),
        (Role::Outreach, "outreach"),
        (Role::Procurement, "procure"),
        (Role::Payables, "payables"),
    ];
    (0..n)
        .map(|i| {
            let (role, team) = ROLES[i % ROLES.len()];
            AgentSpec {
                name: format!("sim-{team}-{:03}", i),
                role,
                per_minute,
            }
        })
        .collect()
}

/// One planned action: the proposal and the business function that performs it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub proposal: Proposal,
    /// `schema.function(params jsonb, actor text)`; `None` for reads.
    pub function: Option<&'static str>,
}

fn proposal(agent: &str, tool: &str, params: Value, confidence: f64, reasoning: String, inputs: Value) -> Proposal {
    Proposal {
        agent: agent.into(),
        tool: tool.into(),
        params,
        amount: None,
        confidence: Some(((confidence * 100.0).round() / 100.0) as f32),
        reasoning: Some(reasoning),
        inputs: Some(inputs),
        correlation_id: None,
        parent_action: None,
        idempotency_key: None,
        depends_on: Vec::new(),
    }
}

const DAMAGE: &[&str] = &[
    "arrived damaged",
    "was never delivered",
    "was the wrong size",
    "was charged twice",
    "arrived late for the event",
];

/// The next action of an agent. `drift` (0..1) shifts a refund agent toward refunds.
pub fn plan(spec: &AgentSpec, rng: &mut Rng, w: &World, drift: f64) -> Planned {
    let agent = spec.name.as_str();
    let ticket = format!("T-{}", between(rng, 10000, 99999));
    let conf = |rng: &mut Rng, lo: f64| lo + rng.next_f64() * (0.99 - lo);
    match spec.role {
        Role::Refunds | Role::Support => {
            let o = pick(rng, &w.orders).clone();
            let refund_share = if spec.role == Role::Refunds {
                0.2 + 0.75 * drift
            } else {
                0.05
            };
            let x = rng.next_f64();
            if x < refund_share {
                let share = [0.25, 0.5, 1.0][between(rng, 0, 2) as usize];
                let amount = ((o.total as f64) * share).round().max(5.0) as i64;
                let why = pick(rng, DAMAGE);
                Planned {
                    proposal: proposal(
                        agent,
                        "issue_refund",
                        json!({"customer_id": o.customer_id, "order_id": o.order_id, "amount": amount, "reason": why}),
                        conf(rng, 0.8),
                        format!(
                            "Ticket {ticket}: order {} {why}. Order total ${}; refund policy covers it; refunding {}%.",
                            o.order_id,
                            o.total,
                            (share * 100.0) as i64
                        ),
                        json!({"ticket": ticket, "order_total": o.total, "channel": "chat"}),
                    ),
                    function: Some("payments.issue_refund"),
                }
            } else if x < refund_share + (1.0 - refund_share) * 0.35 {
                let amount = between(rng, 5, 40);
                Planned {
                    proposal: proposal(
                        agent,
                        "issue_credit",
                        json!({"customer_id": o.customer_id, "amount": amount, "reason": "goodwill"}),
                        conf(rng, 0.85),
                        format!(
                            "Ticket {ticket}: delay on order {}; a ${amount} goodwill credit per playbook.",
                            o.order_id
                        ),
                        json!({"ticket": ticket}),
                    ),
                    function: Some("payments.issue_credit"),
                }
            } else {
                Planned {
                    proposal: proposal(
                        agent,
                        "lookup_customer",
                        json!({"customer_id": o.customer_id}),
                        0.99,
                        format!("Ticket {ticket}: reading the customer's history before deciding."),
                        json!({"ticket": ticket}),
                    ),
                    function: None,
                }
            }
        }
        Role::Billing => {
            let o = pick(rng, &w.orders).clone();
            let amount = between(rng, 9, 120);
            Planned {
                proposal: proposal(
                    agent,
                    "charge_customer",
                    json!({"customer_id": o.customer_id, "amount": amount, "invoice_id": format!("inv-{}", between(rng, 100000, 999999))}),
                    conf(rng, 0.9),
                    format!(
                        "Monthly subscription renewal for {}; card on file valid.",
                        o.customer_id
                    ),
                    json!({"plan": "standard", "cycle": "monthly"}),
                ),
                function: Some("payments.charge_customer"),
            }
        }
        Role::Procurement => {
            let c = pick(rng, &w.contracts).clone();
            Planned {
                proposal: proposal(
                    agent,
                    "renew_contract",
                    json!({"contract_id": c.contract_id, "months": 12}),
                    conf(rng, 0.86),
                    format!(
                        "{} ({}) renews within 30 days; usage steady at ${}/month; renewing 12 months.",
                        c.contract_id, c.supplier, c.monthly_value
                    ),
                    json!({"supplier": c.supplier, "monthly_value": c.monthly_value}),
                ),
                function: Some("contracts.renew_contract"),
            }
        }
        Role::Payables => {
            let (payee, iban) = pick(rng, &w.payees).clone();
            let amount = between(rng, 80, 900);
            let mut p = proposal(
                agent,
                "pay_supplier",
                json!({"payee": payee, "iban": iban, "amount": amount, "invoice_id": format!("sup-{}", between(rng, 1000, 9999))}),
                conf(rng, 0.9),
                format!("Invoice from {payee} matches the purchase order and goods receipt; paying ${amount}."),
                json!({"three_way_match": true}),
            );
            p.amount = Some(Decimal::from(amount));
            Planned {
                proposal: p,
                function: Some("payments.pay_supplier"),
            }
        }
        Role::Outreach => {
            let (cid, name, email) = pick(rng, &w.customers).clone();
            if rng.next_f64() < 0.1 {
                let id = format!("cmp-{}", between(rng, 1000, 9999));
                Planned {
                    proposal: proposal(
                        agent,
                        "schedule_campaign",
                        json!({"campaign_id": id, "segment": "gold", "subject": "Your gold-tier perks"}),
                        conf(rng, 0.88),
                        "Gold-tier engagement dipped 4% this week; scheduling the perks reminder.".into(),
                        json!({"segment_size": "gold"}),
                    ),
                    function: Some("outreach.schedule_campaign"),
                }
            } else {
                Planned {
                    proposal: proposal(
                        agent,
                        "send_email",
                        json!({"customer_id": cid, "to": email, "subject": "How was your order?", "template": "feedback"}),
                        conf(rng, 0.9),
                        format!("{name} received an order 3 days ago; feedback request per cadence."),
                        json!({"cadence": "post-delivery"}),
                    ),
                    function: Some("outreach.send_email"),
                }
            }
        }
        Role::CrmHygiene => {
            let (cid, name, email) = pick(rng, &w.customers).clone();
            let (field, value, why) = if rng.next_f64() < 0.5 {
                (
                    "email",
                    email.replace("@example.com", "@mail.example.com"),
                    "bounce on the old address; newer address in the last order",
                )
            } else {
                (
                    "tier",
                    if rng.next_f64() < 0.5 { "gold" } else { "standard" }.to_string(),
                    "spend over the last 12 months crossed the tier boundary",
                )
            };
            Planned {
                proposal: proposal(
                    agent,
                    "update_customer_field",
                    json!({"customer_id": cid, "field": field, "value": value}),
                    conf(rng, 0.75),
                    format!("{name}: {why}; updating {field}."),
                    json!({"source": "order-history"}),
                ),
                function: Some("crm.update_customer_field"),
            }
        }
    }
}

/// Counts the fleet keeps as it goes.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub proposed: AtomicU64,
    pub allowed: AtomicU64,
    pub held: AtomicU64,
    pub blocked: AtomicU64,
    pub executed: AtomicU64,
    pub failed: AtomicU64,
    pub errors: AtomicU64,
}

impl FleetStats {
    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({"proposed": g(&self.proposed), "allowed": g(&self.allowed), "held": g(&self.held),
               "blocked": g(&self.blocked), "executed": g(&self.executed), "failed": g(&self.failed),
               "errors": g(&self.errors)})
    }
}

/// Propose; when allowed (now, or after the approvers), perform and record.
/// Returns the action id and the first verdict.
pub async fn act(pool: &PgPool, p: &Planned, clock: Clock, stats: &Arc<FleetStats>) -> Result<(Uuid, Verdict)> {
    stats.proposed.fetch_add(1, Ordering::Relaxed);
    let d = contract::propose(pool, &p.proposal).await?;
    match d.verdict {
        Verdict::Allow => {
            stats.allowed.fetch_add(1, Ordering::Relaxed);
            perform(pool, p, d.action_id, stats).await?;
        }
        Verdict::Hold => {
            stats.held.fetch_add(1, Ordering::Relaxed);
            // The agent waits for people without holding up its next task.
            let (pool, p, id) = (pool.clone(), p.clone(), d.action_id);
            let stats = stats.clone();
            tokio::spawn(async move {
                for _ in 0..600 {
                    match contract::decision(&pool, id).await {
                        Ok((Verdict::Allow, _)) => {
                            let _ = perform(&pool, &p, id, &stats).await;
                            return;
                        }
                        Ok((Verdict::Block, _)) | Err(_) => return,
                        Ok((Verdict::Hold, _)) => {
                            tokio::time::sleep(clock.real(0.5).max(Duration::from_millis(20))).await
                        }
                    }
                }
            });
        }
        Verdict::Block => {
            stats.blocked.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok((d.action_id, d.verdict))
}

async fn perform(pool: &PgPool, p: &Planned, id: Uuid, stats: &FleetStats) -> Result<()> {
    let Some(function) = p.function else {
        contract::record_result(pool, id, true, Some(&json!({"read": true})), None).await?;
        stats.executed.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    let r: std::result::Result<Value, sqlx::Error> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {function}($1, $2)")))
            .bind(&p.proposal.params)
            .bind(&p.proposal.agent)
            .fetch_one(pool)
            .await;
    match r {
        Ok(v) => {
            contract::record_result(pool, id, true, Some(&v), None).await?;
            stats.executed.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            contract::record_result(pool, id, false, Some(&json!({"error": e.to_string()})), None).await?;
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Drift of one agent over demo time (0 before, ramping to 1).
#[derive(Debug, Clone)]
pub struct DriftPlan {
    pub agent: String,
    pub from: f64,
    pub ramp: f64,
}

impl DriftPlan {
    pub fn at(&self, t: f64) -> f64 {
        if t < self.from {
            0.0
        } else {
            ((t - self.from) / self.ramp.max(0.001)).min(1.0)
        }
    }
}

/// Run one agent until stopped: Poisson-ish arrivals at its rate.
/// One agent's part in a run.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub spec: AgentSpec,
    pub seed: u64,
    pub drift: Option<DriftPlan>,
}

pub async fn run_agent(
    pool: PgPool,
    job: Assignment,
    world: Arc<World>,
    clock: Clock,
    stats: Arc<FleetStats>,
    mut stop: watch::Receiver<bool>,
) {
    let Assignment { spec, seed, drift } = job;
    let mut rng = Rng::new(seed);
    let gap = 60.0 / spec.per_minute.max(0.001);
    loop {
        // Exponential gaps, capped so a long pause never looks like a stall.
        let wait = (-(1.0 - rng.next_f64()).ln() * gap).min(gap * 4.0);
        if !clock.sleep(wait, &mut stop).await {
            return;
        }
        let d = drift.as_ref().map(|d| d.at(clock.now())).unwrap_or(0.0);
        let p = plan(&spec, &mut rng, &world, d);
        if act(&pool, &p, clock, &stats).await.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A write by someone who is not an agent, kept to check afterwards that
/// rollbacks left it alone.
#[derive(Debug, Clone)]
pub enum OtherWrite {
    Credit { credit_id: String },
    Phone { customer_id: String, value: String },
}

/// A person and a nightly job, writing to the same systems the agents use.
pub async fn run_other_actors(
    pool: PgPool,
    world: Arc<World>,
    seed: u64,
    clock: Clock,
    writes: Arc<std::sync::Mutex<Vec<OtherWrite>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(seed ^ 0x07e4);
    let mut tick = 0u64;
    while clock.sleep(2.0, &mut stop).await {
        tick += 1;
        let (cid, _, _) = pick(&mut rng, &world.customers).clone();
        if tick.is_multiple_of(2) {
            // dana, in customer service, corrects a phone number by hand.
            let value = format!("+1 555 {:04}", between(&mut rng, 0, 9999));
            let r: std::result::Result<Value, _> = sqlx::query_scalar("SELECT crm.update_customer_field($1, 'dana')")
                .bind(json!({"customer_id": cid, "field": "phone", "value": value}))
                .fetch_one(&pool)
                .await;
            if r.is_ok()
                && let Ok(mut w) = writes.lock()
            {
                w.retain(|x| !matches!(x, OtherWrite::Phone { customer_id, .. } if *customer_id == cid));
                w.push(OtherWrite::Phone {
                    customer_id: cid,
                    value,
                });
            }
        } else {
            // The nightly loyalty job credits a customer.
            let r: std::result::Result<Value, _> =
                sqlx::query_scalar("SELECT payments.issue_credit($1, 'nightly-job')")
                    .bind(json!({"customer_id": cid, "amount": 5, "reason": "loyalty"}))
                    .fetch_one(&pool)
                    .await;
            if let Ok(v) = r
                && let Some(id) = v["credit_id"].as_str()
                && let Ok(mut w) = writes.lock()
            {
                w.push(OtherWrite::Credit { credit_id: id.into() });
            }
        }
    }
}

/// How many of the other actors' writes are still in place.
pub async fn other_writes_intact(pool: &PgPool, writes: &[OtherWrite]) -> Result<(usize, usize)> {
    let mut intact = 0;
    for w in writes {
        let ok: bool = match w {
            OtherWrite::Credit { credit_id } => {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM payments.credits WHERE credit_id = $1 AND status = 'active')",
                )
                .bind(credit_id)
                .fetch_one(pool)
                .await?
            }
            OtherWrite::Phone { customer_id, value } => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM crm.customers WHERE customer_id = $1 AND phone = $2)")
                    .bind(customer_id)
                    .bind(value)
                    .fetch_one(pool)
                    .await?
            }
        };
        intact += usize::from(ok);
    }
    Ok((intact, writes.len()))
}

/// Approvers who clear the queue after `after` demo seconds (the operator
/// can decide first in the room). Each approves under their own name.
pub async fn run_approvers(
    approvers: Vec<PgPool>,
    clock: Clock,
    after: f64,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let Some(first) = approvers.first().cloned() else {
        return Ok(());
    };
    while clock.sleep(0.5, &mut stop).await {
        let due: Vec<(Uuid, i32)> = sqlx::query_as(
            "SELECT action_id, approvals FROM backstop.approval_queue
              WHERE held_at < clock_timestamp() - make_interval(secs => $1) ORDER BY held_at LIMIT 20",
        )
        .bind(clock.real(after).as_secs_f64())
        .fetch_all(&first)
        .await?;
        for (id, approvals) in due {
            let who = &approvers[(approvals.max(0) as usize) % approvers.len()];
            // Raced with the operator or another approver: nothing to do.
            let _ = contract::approve(who, id, "reviewed the ticket; looks fine").await;
        }
    }
    Ok(())
}
