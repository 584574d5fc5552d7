//! The README's "Adopting Backstop" walk-through, replayed: a customer-service
//! fleet (examples/customer-service) over a back office served here over HTTP
//! with an auth header, every process under its own login: a `policy` login
//! loads the files with the real binary, three agent logins act through the
//! contract, two approvers clear the holds with `backstop approve`, an
//! operator undoes one agent's hour with `backstop compensate`, a worker login
//! runs the inverses through the webhook with `backstop worker`, and a viewer
//! runs `backstop verify`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop::contract::{self, Proposal, Verdict};
use common::{Logins, TestDb};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const TOKEN: &str = "Bearer cs-s3cret-token";

/// The team's back office: orders, returns and fees, reached over HTTP.
#[derive(Default)]
struct BackOffice {
    orders: Mutex<BTreeMap<String, (String, String)>>, // order -> (status, address)
    returns: Mutex<BTreeMap<String, (String, String)>>, // return -> (order, status)
    charges: Mutex<BTreeMap<String, String>>,          // charge -> status
    /// Inverse calls by idempotency key: how many times each one ran.
    undone: Mutex<HashMap<String, u32>>,
    unauthorized: Mutex<u32>,
    next: Mutex<u32>,
}

impl BackOffice {
    fn id(&self, prefix: &str) -> String {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        format!("{prefix}-{n}")
    }

    /// A forward tool call, as the agent's own code makes it.
    fn call(&self, tool: &str, p: &Value) -> Value {
        let order = p["order_id"].as_str().unwrap_or_default().to_string();
        match tool {
            "cancel_order" => {
                let mut o = self.orders.lock().unwrap();
                let e = o.get_mut(&order).unwrap();
                let previous = std::mem::replace(&mut e.0, "cancelled".into());
                json!({"previous_status": previous})
            }
            "modify_address" => {
                let mut o = self.orders.lock().unwrap();
                o.get_mut(&order).unwrap().1 = p["address"].as_str().unwrap().into();
                json!({"ok": true})
            }
            "return_items" => {
                let id = self.id("ret");
                self.returns
                    .lock()
                    .unwrap()
                    .insert(id.clone(), (order, "refunded".into()));
                json!({"return_id": id})
            }
            "charge_fee" => {
                let id = self.id("ch");
                self.charges.lock().unwrap().insert(id.clone(), "charged".into());
                json!({"charge_id": id})
            }
            other => panic!("no tool {other}"),
        }
    }

    /// An inverse, as the worker's webhook sends it.
    fn undo(&self, key: &str, body: &Value) -> (u16, Value) {
        let first = {
            let mut u = self.undone.lock().unwrap();
            let n = u.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if !first {
            // The same key again: the same answer, nothing done twice.
            return (200, json!({"replayed": true}));
        }
        // The back office decides whether an undo may still run: it is told
        // the condition and the deadline the action was staged with.
        assert!(
            body.get("condition").is_some() && body.get("deadline").is_some(),
            "{body}"
        );
        let p = &body["params"];
        let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        match body["inverse_tool"].as_str().unwrap_or_default() {
            "reinstate_order" => {
                self.orders.lock().unwrap().get_mut(&s("order_id")).unwrap().0 = s("status");
            }
            "restore_address" => {
                self.orders.lock().unwrap().get_mut(&s("order_id")).unwrap().1 = s("address");
            }
            "cancel_return" => {
                let mut r = self.returns.lock().unwrap();
                let Some(e) = r.get_mut(&s("return_id")) else {
                    return (409, json!({"error": "no such return"}));
                };
                e.1 = "cancelled".into();
            }
            "refund_fee" => {
                self.charges.lock().unwrap().insert(s("charge_id"), "refunded".into());
            }
            other => return (422, json!({"error": format!("no inverse {other}")})),
        }
        (200, json!({"done": body["inverse_tool"]}))
    }
}

async fn serve(office: Arc<BackOffice>) -> String {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    async fn undo(
        State(o): State<Arc<BackOffice>>,
        headers: HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> (StatusCode, String) {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
            *o.unauthorized.lock().unwrap() += 1;
            return (StatusCode::UNAUTHORIZED, "{}".into());
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (code, answer) = o.undo(&key, &body);
        (StatusCode::from_u16(code).unwrap(), answer.to_string())
    }
    let app = axum::Router::new()
        .route("/undo", axum::routing::post(undo))
        .with_state(office);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/undo")
}

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/customer-service")
        .join(file)
}

/// The real binary, logged in as `login`, from an empty directory.
fn backstop(t: &TestDb, login: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backstop"));
    c.args(args)
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", common::login_url(&t.url, &Logins::name(login)))
        .env_remove("BACKSTOP_TOOLS")
        .env_remove("BACKSTOP_POLICY")
        .env_remove("BACKSTOP_OPERATOR")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(mut c: Command) -> Output {
    let o = c.output().expect("run backstop");
    assert!(
        o.status.success(),
        "{:?} failed:\n{}\n{}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

struct Step {
    agent: &'static str,
    tool: &'static str,
    params: Value,
    ticket: String,
    /// What only the agent knows about undoing it.
    inverse_params: Option<Value>,
}

async fn propose(pool: &PgPool, agent: &str, s: &Step) -> contract::Decision {
    contract::propose(
        pool,
        &Proposal {
            agent: Logins::name(agent),
            tool: s.tool.into(),
            params: s.params.clone(),
            confidence: Some(0.9),
            reasoning: Some(format!("{} for {}", s.tool, s.ticket)),
            correlation_id: Some(s.ticket.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn execute(pool: &PgPool, office: &BackOffice, id: Uuid, s: &Step) {
    let result = office.call(s.tool, &s.params);
    contract::record_result(pool, id, true, Some(&result), s.inverse_params.as_ref())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_customer_service_fleet_adopts_backstop_end_to_end() {
    let t = TestDb::new().await;
    let office = Arc::new(BackOffice::default());
    for i in 1..=30 {
        office
            .orders
            .lock()
            .unwrap()
            .insert(format!("o-{i}"), ("pending".into(), format!("{i} Old Street")));
    }
    let url = serve(office.clone()).await;

    // Logins, one per person or process, each with one duty.
    let mut logins = Logins::new(&t);
    let mut pools = Vec::new();
    for (name, duty) in [
        ("release", "policy"),
        ("ana", "approver"),
        ("bob", "approver"),
        ("ops", "operator"),
        ("worker1", "worker"),
        ("auditor", "viewer"),
    ] {
        pools.push(logins.login(&t, name, Some(duty)).await);
    }
    let orders_bot = logins.login(&t, "orders_bot", Some("agent")).await;
    let returns_bot = logins.login(&t, "returns_bot", Some("agent")).await;
    let fees_bot = logins.login(&t, "fees_bot", Some("agent")).await;

    // The policy login checks and loads the team's files, both or neither.
    let (tools, policy) = (example("tools.toml"), example("policy.toml"));
    let (tools, policy) = (tools.to_str().unwrap(), policy.to_str().unwrap());
    run(backstop(
        &t,
        "release",
        &["check", "--tools", tools, "--policy", policy],
        &[],
    ));
    run(backstop(
        &t,
        "release",
        &["load", "--tools", tools, "--policy", policy],
        &[],
    ));

    // A few dozen actions, tickets shared between agents.
    let mut steps: Vec<Step> = Vec::new();
    let item = |price: f64| json!({"sku": "sku", "price": price});
    for i in 1..=5 {
        steps.push(Step {
            agent: "orders_bot",
            tool: "cancel_order",
            params: json!({"order_id": format!("o-{i}"), "customer_id": format!("c-{i}"), "reason": "customer asked"}),
            ticket: format!("T-{i}"),
            inverse_params: None,
        });
    }
    for i in 6..=9 {
        steps.push(Step {
            agent: "orders_bot",
            tool: "modify_address",
            params: json!({"order_id": format!("o-{i}"), "customer_id": format!("c-{i}"), "address": format!("{i} New Road")}),
            ticket: format!("T-{i}"),
            inverse_params: Some(json!({"previous_address": format!("{i} Old Street")})),
        });
    }
    // Returns: on the same tickets as the cancellations (T-1..T-5) and more.
    let returns: [(usize, &str, &[f64]); 12] = [
        (1, "card", &[40.0, 19.99]),
        (2, "card", &[120.0]),
        (3, "gift_card", &[35.5]),
        (4, "card", &[300.0]),
        (5, "card", &[60.0, 60.0, 60.0]),
        (10, "gift_card", &[80.0]),
        (11, "card", &[650.0]),        // held: over $500
        (12, "card", &[700.0, 500.0]), // held: over $1,000, two approvers
        (13, "card", &[300.0]),        // customer c-20: 300
        (14, "card", &[300.0]),        // c-20: 600
        (15, "card", &[300.0]),        // c-20: held, 900 in a day
        (16, "card", &[25.0]),
    ];
    for (o, to, prices) in returns {
        let customer = if (13..=15).contains(&o) {
            "c-20".to_string()
        } else {
            format!("c-{o}")
        };
        steps.push(Step {
            agent: "returns_bot",
            tool: "return_items",
            params: json!({"order_id": format!("o-{o}"), "customer_id": customer, "refund_to": to,
                           "items": prices.iter().map(|p| item(*p)).collect::<Vec<_>>()}),
            ticket: format!("T-{o}"),
            inverse_params: None,
        });
    }
    for (o, fee) in [(17, 15.0), (18, 25.0), (19, 600.0), (20, 40.0)] {
        steps.push(Step {
            agent: "fees_bot",
            tool: "charge_fee",
            params: json!({"order_id": format!("o-{o}"), "customer_id": format!("c-{o}"), "fee": fee}),
            ticket: format!("T-{o}"),
            inverse_params: None,
        });
    }
    let pool_of = |agent: &str| match agent {
        "orders_bot" => orders_bot.clone(),
        "returns_bot" => returns_bot.clone(),
        _ => fees_bot.clone(),
    };
    let mut ids: Vec<Uuid> = Vec::new();
    let mut held: Vec<(usize, Uuid, String)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let pool = pool_of(s.agent);
        let d = propose(&pool, s.agent, s).await;
        ids.push(d.action_id);
        match d.verdict {
            Verdict::Allow => execute(&pool, &office, d.action_id, s).await,
            Verdict::Hold => held.push((i, d.action_id, d.reason)),
            Verdict::Block => panic!("{} blocked: {}", s.tool, d.reason),
        }
    }
    // Money out over $500 is held; money in is not ($600 fee allowed); the
    // third $300 refund to one customer is held by the per-customer limit.
    let held_orders: Vec<String> = held
        .iter()
        .map(|(i, _, _)| steps[*i].params["order_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held_orders, ["o-11", "o-12", "o-15"], "{held:?}");
    assert!(held[2].2.contains("already refunded to this customer"), "{}", held[2].2);
    // The value is read from the items, not the agent's word: $1,200.
    let amount: rust_decimal::Decimal = sqlx::query_scalar("SELECT amount FROM backstop.actions WHERE action_id = $1")
        .bind(held[1].1)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(amount, rust_decimal::Decimal::from(1200));
    // A return that names no items puts nothing at stake the registry can
    // see: refused, not waved through.
    let empty = Step {
        agent: "returns_bot",
        tool: "return_items",
        params: json!({"order_id": "o-21", "customer_id": "c-21", "refund_to": "card", "items": []}),
        ticket: "T-21".into(),
        inverse_params: None,
    };
    let d = propose(&returns_bot, "returns_bot", &empty).await;
    assert_eq!(d.verdict, Verdict::Block, "{}", d.reason);
    assert!(d.reason.contains("value is required"), "{}", d.reason);

    // Two people approve, each as themselves; the $1,200 refund needs both.
    for (_, id, _) in &held {
        run(backstop(
            &t,
            "ana",
            &["approve", &id.to_string(), "--note", "checked the order"],
            &[],
        ));
    }
    let (v, _) = contract::decision(&returns_bot, held[1].1).await.unwrap();
    assert_eq!(v, Verdict::Hold, "one approval is not enough above $1,000");
    run(backstop(
        &t,
        "bob",
        &["approve", &held[1].1.to_string(), "--note", "agreed"],
        &[],
    ));
    for (i, id, _) in &held {
        let (v, reason) = contract::decision(&returns_bot, *id).await.unwrap();
        assert_eq!(v, Verdict::Allow, "{reason}");
        execute(&returns_bot, &office, *id, &steps[*i]).await;
    }

    // What was approved counts toward the customer's day like what was
    // allowed: one more small refund to c-20 is held too, and rejected.
    let more = Step {
        agent: "returns_bot",
        tool: "return_items",
        params: json!({"order_id": "o-22", "customer_id": "c-20", "refund_to": "card", "items": [item(10.0)]}),
        ticket: "T-22".into(),
        inverse_params: None,
    };
    let d = propose(&returns_bot, "returns_bot", &more).await;
    assert_eq!(d.verdict, Verdict::Hold, "{}", d.reason);
    assert!(d.reason.contains("$900 already refunded"), "{}", d.reason);
    run(backstop(
        &t,
        "bob",
        &["reject", &d.action_id.to_string(), "--reason", "enough for today"],
        &[],
    ));

    // The operator undoes the returns agent's hour: its returns to a card are
    // cancelled, those to a gift card are final, and the cancellations that
    // shared their tickets stay.
    let o = run(backstop(
        &t,
        "ops",
        &[
            "compensate",
            "--agent",
            &Logins::name("returns_bot"),
            "--since",
            "1h",
            "--reason",
            "returns agent misread the policy",
            "--json",
        ],
        &[],
    ));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let plan_steps = out["plan"]["steps"].as_array().unwrap();
    assert_eq!(
        plan_steps.len(),
        14,
        "12 returns, the blocked one and the rejected one: {out}"
    );
    assert!(
        plan_steps.iter().all(|s| s["tool"] == "return_items"),
        "correlation pulled in others: {out}"
    );
    let irreversible = plan_steps.iter().filter(|s| s["outcome"] == "irreversible").count();
    assert_eq!(irreversible, 2, "the gift-card refunds: {out}");
    let totals = &out["plan"]["totals"];
    assert_eq!(totals["will_compensate"], 10, "{totals}");
    // 59.99 + 120 + 300 + 180 + 650 + 1200 + 900 + 25
    assert_eq!(totals["recovered_out"], "3434.99", "{totals}");
    // And one address change and one fee, by id: what the agent passed
    // undoes the address; the fee goes back to the customer (money in).
    let address = ids[5];
    let fee = ids[steps.len() - 2];
    let o = run(backstop(
        &t,
        "ops",
        &[
            "compensate",
            &address.to_string(),
            &fee.to_string(),
            "--reason",
            "customer disputes",
            "--json",
        ],
        &[],
    ));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["plan"]["totals"]["recovered_in"], "600", "{out}");

    // The worker, as its own login, runs every inverse through the webhook.
    let mut worker = backstop(
        &t,
        "worker1",
        &["worker", "--name", "w1"],
        &[("BACKOFFICE_URL", &url), ("BACKOFFICE_TOKEN", TOKEN)],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut waited = 0;
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM backstop.compensations WHERE status IN ('requested', 'running')")
                .fetch_one(t.pool())
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        waited += 1;
        assert!(waited < 600, "the worker did not finish: {open} open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let _ = worker.wait();

    // The back office: each inverse ran exactly once, with the secret.
    assert_eq!(*office.unauthorized.lock().unwrap(), 0);
    let undone = office.undone.lock().unwrap().clone();
    assert_eq!(undone.len(), 12, "{undone:?}");
    assert!(undone.values().all(|n| *n == 1), "{undone:?}");
    let returns = office.returns.lock().unwrap().clone();
    let cancelled = returns.values().filter(|(_, s)| s == "cancelled").count();
    assert_eq!((cancelled, returns.len()), (10, 12), "{returns:?}");
    let orders = office.orders.lock().unwrap().clone();
    for i in 1..=5 {
        assert_eq!(
            orders[&format!("o-{i}")].0,
            "cancelled",
            "another agent's cancellation on the same ticket stays"
        );
    }
    assert_eq!(
        orders["o-6"].1, "6 Old Street",
        "the address the agent passed was restored"
    );
    assert_eq!(orders["o-7"].1, "7 New Road");
    let charges = office.charges.lock().unwrap().clone();
    assert_eq!(charges.values().filter(|s| *s == "refunded").count(), 1);

    // The log names every person and process by its login, and holds no secret.
    let actors: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT kind, actor FROM backstop.action_log
          WHERE kind IN ('approved', 'compensation_requested', 'compensated', 'registry_loaded', 'policy_loaded') ORDER BY 1, 2",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    let expect = |kind: &str, who: &str| {
        assert!(
            actors.contains(&(kind.to_string(), Logins::name(who))),
            "{kind} by {who}: {actors:?}"
        )
    };
    expect("approved", "ana");
    expect("approved", "bob");
    expect("compensation_requested", "ops");
    expect("compensated", "worker1");
    expect("policy_loaded", "release");
    let secrets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backstop.action_log WHERE concat(detail, params, result) LIKE '%s3cret%' OR concat(detail, params, result) LIKE $1",
    )
    .bind(format!("%{}%", url.trim_start_matches("http://")))
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(secrets, 0, "a secret or the back office's address reached the log");

    // The owner's sealer runs beside them in production (sealing is the
    // owner's); then anyone may check the whole story against the log.
    let mut seal = Command::new(env!("CARGO_BIN_EXE_backstop"));
    seal.arg("seal")
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", &t.url)
        .env_remove("BACKSTOP_OPERATOR");
    run(seal);
    run(backstop(&t, "auditor", &["verify"], &[]));

    pools.extend([orders_bot, returns_bot, fees_bot]);
    logins.drop_all(pools).await;
}
