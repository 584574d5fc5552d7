//! Surgical rollback: plans with dependents, every outcome in the plan and in
//! the log, the three executors, exactly-once under killed workers, and the
//! surgical property over random interleavings of several actors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backstop::compensation::{self, Selection};
use backstop::contract::{self, Proposal, Verdict};
use backstop::registry;
use common::TestDb;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgPool};
use uuid::Uuid;

async fn setup() -> TestDb {
    let t = TestDb::new().await;
    t.load_assets().await;
    seed(t.pool()).await;
    t
}

async fn seed(pool: &PgPool) {
    sqlx::raw_sql(
        "INSERT INTO crm.customers (customer_id, name, email, tier) SELECT 'c-' || i, 'Customer ' || i, 'c' || i || '@example.com', 'standard' FROM generate_series(1, 20) i ON CONFLICT DO NOTHING;
         INSERT INTO payments.accounts (customer_id) SELECT 'c-' || i FROM generate_series(1, 20) i ON CONFLICT DO NOTHING;
         INSERT INTO contracts.contracts (contract_id, supplier, monthly_value) SELECT 'k-' || i, 'supplier ' || i, 100 * i FROM generate_series(1, 5) i ON CONFLICT DO NOTHING;",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Propose, run the forward tool in the demo systems, record the result.
async fn act(
    pool: &PgPool,
    agent: &str,
    tool: &str,
    function: &str,
    params: Value,
    corr: Option<&str>,
    parent: Option<Uuid>,
) -> Uuid {
    act_after(pool, agent, tool, function, params, corr, parent, &[]).await
}

/// `act`, declaring the earlier actions this one depends on.
#[allow(clippy::too_many_arguments)]
async fn act_after(
    pool: &PgPool,
    agent: &str,
    tool: &str,
    function: &str,
    params: Value,
    corr: Option<&str>,
    parent: Option<Uuid>,
    depends_on: &[Uuid],
) -> Uuid {
    let d = contract::propose(
        pool,
        &Proposal {
            agent: agent.into(),
            tool: tool.into(),
            params: params.clone(),
            confidence: Some(0.99),
            correlation_id: corr.map(str::to_string),
            parent_action: parent,
            depends_on: depends_on.to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.verdict, Verdict::Allow, "{tool}: {}", d.reason);
    let result: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {function}($1, $2)")))
        .bind(&params)
        .bind(agent)
        .fetch_one(pool)
        .await
        .unwrap();
    contract::record_result(pool, d.action_id, true, Some(&result), None)
        .await
        .unwrap();
    d.action_id
}

async fn refund(
    pool: &PgPool,
    agent: &str,
    customer: &str,
    amount: i64,
    corr: Option<&str>,
    parent: Option<Uuid>,
) -> Uuid {
    act(
        pool,
        agent,
        "issue_refund",
        "payments.issue_refund",
        json!({"customer_id": customer, "amount": amount}),
        corr,
        parent,
    )
    .await
}

async fn comp_status(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM backstop.compensations WHERE action_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn plans_pull_in_dependents_and_order_them_in_reverse() {
    let t = setup().await;
    let p = t.pool();
    // A chain: root -> child (parent link) -> grandchild; a later action
    // declaring it depends on root; a later action on the same ticket that
    // declares nothing (a correlation id groups, it does not cause); an
    // unrelated one.
    let root = refund(p, "refund-bot", "c-1", 10, Some("ticket-1"), None).await;
    let child = act(
        p,
        "crm-bot",
        "update_customer_field",
        "crm.update_customer_field",
        json!({"customer_id": "c-2", "field": "tier", "value": "gold"}),
        None,
        Some(root),
    )
    .await;
    let grandchild = refund(p, "refund-bot", "c-3", 20, None, Some(child)).await;
    let declared = act_after(
        p,
        "other-bot",
        "issue_refund",
        "payments.issue_refund",
        json!({"customer_id": "c-4", "amount": 30}),
        Some("ticket-1"),
        None,
        &[root],
    )
    .await;
    let same_ticket = refund(p, "other-bot", "c-6", 25, Some("ticket-1"), None).await;
    let unrelated = refund(p, "refund-bot", "c-5", 40, Some("ticket-2"), None).await;

    let plan = compensation::plan(p, &Selection::Actions(vec![root])).await.unwrap();
    let ids: Vec<Uuid> = plan.steps.iter().map(|s| s.action_id).collect();
    assert!(
        !ids.contains(&unrelated) && !ids.contains(&same_ticket),
        "{}",
        compensation::render(&plan)
    );
    assert_eq!(ids.len(), 4, "{}", compensation::render(&plan));
    // Reverse order of execution.
    assert_eq!(ids, vec![declared, grandchild, child, root]);
    let step = |id: Uuid| plan.steps.iter().find(|s| s.action_id == id).unwrap();
    assert!(step(root).selected && !step(child).selected);
    assert_eq!(step(child).caused_by, Some(root));
    assert_eq!(step(grandchild).caused_by, Some(child));
    assert_eq!(step(declared).caused_by, Some(root));
    assert_eq!(plan.totals.dependents, 3);
    assert_eq!(plan.totals.will_compensate, 4);
    assert_eq!(plan.totals.value_recovered, 60.into());

    // The dry run changed nothing.
    assert_eq!(t.count("SELECT count(*) FROM backstop.compensations").await, 0);

    // Requested as one unit, the inverses run dependents first.
    let ops = t.as_operator("ana").await;
    compensation::request(&ops, &plan, "root cause was wrong")
        .await
        .unwrap();
    let wait: Vec<Uuid> =
        sqlx::query_scalar("SELECT unnest(wait_for) FROM backstop.compensations WHERE action_id = $1")
            .bind(root)
            .fetch_all(p)
            .await
            .unwrap();
    assert!(wait.contains(&child) && wait.contains(&declared), "{wait:?}");
    common::drain(p, "w1").await;
    let finished: Vec<Uuid> =
        sqlx::query_scalar("SELECT action_id FROM backstop.action_log WHERE kind = 'compensated' ORDER BY seq")
            .fetch_all(p)
            .await
            .unwrap();
    let pos = |id: Uuid| finished.iter().position(|x| *x == id).unwrap();
    assert!(
        pos(grandchild) < pos(child) && pos(child) < pos(root) && pos(declared) < pos(root),
        "{finished:?}"
    );
    let tier: String = sqlx::query_scalar("SELECT tier FROM crm.customers WHERE customer_id = 'c-2'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(tier, "standard");
    // The unrelated refund stays.
    let bal: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT balance FROM payments.accounts WHERE customer_id = 'c-5'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(bal, 40.into());
    // So does the one that only shared the ticket.
    let bal: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT balance FROM payments.accounts WHERE customer_id = 'c-6'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(bal, 25.into());
    // depends_on is rebuilt from the log like every other column.
    assert_eq!(t.count("SELECT count(*) FROM backstop.projection_diffs()").await, 0);
}

#[tokio::test]
async fn every_outcome_appears_in_the_plan_and_in_the_log() {
    let t = setup().await;
    let p = t.pool();
    let ok = refund(p, "bot", "c-1", 10, None, None).await;
    let email = act(
        p,
        "bot",
        "send_email",
        "outreach.send_email",
        json!({"customer_id": "c-2", "to": "x@y", "subject": "hi"}),
        None,
        None,
    )
    .await;
    let expired = refund(p, "bot", "c-3", 10, None, None).await;
    sqlx::query("UPDATE backstop.actions SET comp_deadline = now() - interval '1 minute' WHERE action_id = $1")
        .bind(expired)
        .execute(p)
        .await
        .unwrap();
    let withdrawn = refund(p, "bot", "c-4", 10, None, None).await;
    let overwritten = act(
        p,
        "bot",
        "update_customer_field",
        "crm.update_customer_field",
        json!({"customer_id": "c-6", "field": "email", "value": "bot@x"}),
        None,
        None,
    )
    .await;
    let done = refund(p, "bot", "c-7", 10, None, None).await;
    let held = contract::propose(
        p,
        &Proposal {
            agent: "bot".into(),
            tool: "issue_refund".into(),
            params: json!({"customer_id": "c-8", "amount": 20000}),
            confidence: Some(0.9),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ops = t.as_operator("ana").await;
    compensation::request(
        &ops,
        &compensation::plan(p, &Selection::Actions(vec![done])).await.unwrap(),
        "first",
    )
    .await
    .unwrap();
    common::drain(p, "w0").await;

    // The world moves on: the customer withdraws one refund; a person edits an email.
    let refund_id: String =
        sqlx::query_scalar("SELECT inverse_params ->> 'refund_id' FROM backstop.actions WHERE action_id = $1")
            .bind(withdrawn)
            .fetch_one(p)
            .await
            .unwrap();
    sqlx::query("SELECT payments.withdraw_refund($1, 'customer')")
        .bind(&refund_id)
        .execute(p)
        .await
        .unwrap();
    sqlx::query("SELECT crm.update_customer_field('{\"customer_id\": \"c-6\", \"field\": \"email\", \"value\": \"human@x\"}', 'dana')")
        .execute(p)
        .await
        .unwrap();

    let all = vec![ok, email, expired, withdrawn, overwritten, done, held.action_id];
    let plan = compensation::plan(p, &Selection::Actions(all.clone())).await.unwrap();
    let outcome = |id: Uuid| plan.steps.iter().find(|s| s.action_id == id).unwrap().outcome.clone();
    assert_eq!(outcome(ok), "requested");
    assert_eq!(outcome(email), "irreversible");
    assert_eq!(outcome(expired), "expired");
    assert_eq!(outcome(done), "already_compensated");
    assert_eq!(outcome(held.action_id), "not_executed");
    assert_eq!(
        outcome(withdrawn),
        "requested",
        "the condition is only known when the inverse runs"
    );
    let text = compensation::render(&plan);
    assert!(
        text.contains("IRREVERSIBLE") && text.contains("window expired") && text.contains("already compensated"),
        "{text}"
    );

    compensation::request(&ops, &plan, "incident 42").await.unwrap();
    common::drain(p, "w1").await;
    assert_eq!(comp_status(p, ok).await, "compensated");
    assert_eq!(comp_status(p, withdrawn).await, "condition_failed");
    assert_eq!(comp_status(p, overwritten).await, "conflict");
    // The person's edit was not clobbered.
    let mail: String = sqlx::query_scalar("SELECT email FROM crm.customers WHERE customer_id = 'c-6'")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(mail, "human@x");
    // In the log: the plan with what could not be requested, each failure, and findings for a person.
    let plan_detail: Value = sqlx::query_scalar("SELECT detail FROM backstop.action_log WHERE kind = 'compensation_plan' AND detail ->> 'reason' = 'incident 42'")
        .fetch_one(p)
        .await
        .unwrap();
    let not_requested: Vec<String> = plan_detail["not_requested"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["outcome"].as_str().unwrap().to_string())
        .collect();
    for o in ["irreversible", "expired", "already_compensated", "not_executed"] {
        assert!(not_requested.iter().any(|x| x == o), "{o} missing from {plan_detail}");
    }
    let failures: Vec<(String, String)> = sqlx::query_as("SELECT detail ->> 'status', detail -> 'result' ->> 'error' FROM backstop.action_log WHERE kind = 'compensation_failed' ORDER BY seq")
        .fetch_all(p)
        .await
        .unwrap();
    assert!(
        failures
            .iter()
            .any(|(s, e)| s == "condition_failed" && e.contains("withdrew")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|(s, e)| s == "conflict" && e.contains("by dana")),
        "the conflict names the other write: {failures:?}"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE kind = 'compensation_failed'")
            .await,
        2
    );
    // (Projections are not compared: this test moved a deadline by hand.)
    let report = contract::verify::verify(p, true, false).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[tokio::test]
async fn an_expired_window_found_by_the_worker_executes_nothing() {
    let t = setup().await;
    let p = t.pool();
    let id = refund(p, "bot", "c-1", 10, None, None).await;
    let ops = t.as_operator("ana").await;
    contract::request_compensation(&ops, &[id], "late", None).await.unwrap();
    // The window closes between the request and the run.
    sqlx::query("UPDATE backstop.compensations SET deadline = now() - interval '1 second'")
        .execute(p)
        .await
        .unwrap();
    common::drain(p, "w").await;
    assert_eq!(comp_status(p, id).await, "expired");
    let bal: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT balance FROM payments.accounts WHERE customer_id = 'c-1'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(bal, 10.into(), "nothing was executed");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE kind = 'compensation_failed'")
            .await,
        1
    );
}

// ---- the SQL executor against a separate target database ----

const TARGET_SQL: &str = "
CREATE TABLE effects (key uuid PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE balance (id int PRIMARY KEY, total bigint NOT NULL);
INSERT INTO balance VALUES (1, 0);
CREATE FUNCTION undo_thing(p jsonb, key uuid) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(key::text));
    IF EXISTS (SELECT 1 FROM effects e WHERE e.key = undo_thing.key) THEN
        RETURN jsonb_build_object('repeat', true);
    END IF;
    -- Long enough that a killed worker often dies inside this transaction.
    PERFORM pg_sleep(random() * 0.004);
    UPDATE balance SET total = total - (p ->> 'amount')::bigint WHERE id = 1;
    INSERT INTO effects (key) VALUES (key);
    RETURN jsonb_build_object('undone', p ->> 'amount');
END
$$;";

fn chaos_registry() -> String {
    r#"
[tools.do_thing]
class = "reversible"
params = ["id", "amount"]
value = "amount"
inverse = "undo_thing"
bind = { id = "params.id", amount = "params.amount" }

[tools.undo_thing]
class = "irreversible"
params = ["id", "amount"]
executor = { kind = "sql", system = "target", function = "public.undo_thing" }

[systems.target]
url = "env:BACKSTOP_TEST_TARGET_URL"
"#
    .to_string()
}

async fn target_db(t: &TestDb) -> (String, PgPool) {
    let name = format!("{}_target", t.name);
    let mut admin = sqlx::PgConnection::connect(&common::admin_url()).await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let url = common::url_for(&name);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(TARGET_SQL).execute(&pool).await.unwrap();
    (url, pool)
}

async fn load_registry_text(pool: &PgPool, text: &str) {
    let reg = registry::parse("chaos-tools.toml", text).unwrap();
    registry::sync(pool, &reg, "test").await.unwrap();
    // A permissive policy: the test is about workers, not guardrails.
    let pol = backstop::policy::parse(
        "p.toml",
        "[compensation]\nmax_attempts = 100\nbackoff = \"100ms\"\n",
        Some(&reg),
    )
    .unwrap();
    backstop::policy::sync(pool, &pol, "test").await.unwrap();
}

/// `n` executed do_thing actions and one request compensating all of them, server side.
async fn many_requested(pool: &PgPool, n: i32) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DO $$ DECLARE a uuid; BEGIN
           FOR i IN 1 .. {n} LOOP
             SELECT action_id INTO a FROM backstop.propose('chaos-agent', 'do_thing', jsonb_build_object('id', i, 'amount', i % 7 + 1));
             PERFORM backstop.record_result(a, true, '{{}}');
           END LOOP; END $$"
    )))
    .execute(pool)
    .await
    .unwrap();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE status = 'executed'")
        .fetch_all(pool)
        .await
        .unwrap();
    contract::request_compensation(pool, &ids, "chaos test", None)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT sum((inverse_params ->> 'amount')::bigint)::bigint FROM backstop.actions")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn spawn_worker(db_url: &str, target_url: &str, i: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args([
            "worker",
            "--name",
            &format!("chaos-{i}"),
            "--batch",
            "16",
            "--lease",
            "2s",
        ])
        .env("DATABASE_URL", db_url)
        .env("BACKSTOP_TEST_TARGET_URL", target_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn exactly_once_with_eight_workers_killed_at_random() {
    let t = TestDb::new().await;
    let (target_url, target) = target_db(&t).await;
    load_registry_text(t.pool(), &chaos_registry()).await;
    let n = 10_000;
    let expected = many_requested(t.pool(), n).await;

    let mut workers: Vec<Child> = (0..8).map(|i| spawn_worker(&t.url, &target_url, i)).collect();
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    let mut kills = 0;
    let t0 = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.compensations WHERE status <> 'compensated'")
            .fetch_one(t.pool())
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(420),
            "{open} compensations still open"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Kill a random worker now and then (SIGKILL: no cleanup), and start a new one.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if kills < 40 && rng.is_multiple_of(3) {
            let i = (rng >> 8) as usize % workers.len();
            workers[i].kill().unwrap();
            workers[i].wait().unwrap();
            workers[i] = spawn_worker(&t.url, &target_url, i + 100 * (kills + 1));
            kills += 1;
        }
    }
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert!(kills >= 10, "only {kills} kills happened");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&target)
        .await
        .unwrap();
    let total: i64 = sqlx::query_scalar("SELECT total FROM balance")
        .fetch_one(&target)
        .await
        .unwrap();
    assert_eq!(effects, n as i64, "each inverse took effect exactly once");
    assert_eq!(total, -expected, "no inverse was applied twice");
    let lost_leases = t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'compensation_started' AND detail ? 'took_over_from'").await;
    assert!(
        lost_leases > 0,
        "no lease was ever taken over: the kills did not land mid-run"
    );
}

// ---- the webhook executor against a real local HTTP server ----

#[derive(Default)]
struct Hook {
    seen: Mutex<Vec<(String, Value)>>,
    answers: Mutex<HashMap<String, Vec<u16>>>,
}

async fn serve_hook(hook: Arc<Hook>) -> String {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    async fn handle(
        State(h): State<Arc<Hook>>,
        headers: HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> (StatusCode, String) {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        h.seen.lock().unwrap().push((key.clone(), body.clone()));
        let scenario = body["params"]["scenario"].as_str().unwrap_or("ok").to_string();
        let code = {
            let mut answers = h.answers.lock().unwrap();
            let queue = answers.entry(scenario.clone()).or_default();
            if queue.is_empty() { 200 } else { queue.remove(0) }
        };
        if code == 599 {
            // Too slow: the worker's timeout fires.
            tokio::time::sleep(Duration::from_secs(3)).await;
            return (StatusCode::OK, "late".into());
        }
        (
            StatusCode::from_u16(code).unwrap(),
            json!({"scenario": scenario, "key": key}).to_string(),
        )
    }
    let app = axum::Router::new()
        .route("/undo", axum::routing::post(handle))
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/undo")
}

#[tokio::test]
async fn webhook_executor_sends_the_key_retries_and_records_the_response() {
    let t = TestDb::new().await;
    let hook = Arc::new(Hook::default());
    hook.answers.lock().unwrap().insert("flaky".into(), vec![503, 599]);
    hook.answers.lock().unwrap().insert("taken".into(), vec![409]);
    hook.answers.lock().unwrap().insert("gone".into(), vec![422]);
    let url = serve_hook(hook.clone()).await;
    let tools = format!(
        r#"
[tools.book]
class = "reversible"
params = ["scenario"]
inverse = "unbook"
bind = {{ scenario = "params.scenario" }}
[tools.unbook]
class = "irreversible"
params = ["scenario"]
executor = {{ kind = "webhook", url = "{url}", timeout = "1s" }}
"#
    );
    load_registry_text(t.pool(), &tools).await;
    let mut ids = HashMap::new();
    for s in ["ok", "flaky", "taken", "gone"] {
        let d = contract::propose(
            t.pool(),
            &Proposal {
                agent: "hook-bot".into(),
                tool: "book".into(),
                params: json!({"scenario": s}),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        contract::record_result(t.pool(), d.action_id, true, Some(&json!({})), None)
            .await
            .unwrap();
        ids.insert(s, d.action_id);
    }
    let all: Vec<Uuid> = ids.values().copied().collect();
    contract::request_compensation(t.pool(), &all, "webhook test", None)
        .await
        .unwrap();
    common::drain(t.pool(), "hook-worker").await;
    assert_eq!(comp_status(t.pool(), ids["ok"]).await, "compensated");
    assert_eq!(
        comp_status(t.pool(), ids["flaky"]).await,
        "compensated",
        "5xx and a timeout are retried"
    );
    assert_eq!(comp_status(t.pool(), ids["taken"]).await, "conflict");
    assert_eq!(comp_status(t.pool(), ids["gone"]).await, "condition_failed");
    let seen = hook.seen.lock().unwrap().clone();
    for (key, body) in &seen {
        assert_eq!(
            key,
            body["action_id"].as_str().unwrap(),
            "Idempotency-Key is the action id"
        );
    }
    assert_eq!(
        seen.iter().filter(|(_, b)| b["params"]["scenario"] == "flaky").count(),
        3
    );
    let recorded: Value = sqlx::query_scalar(
        "SELECT detail -> 'result' FROM backstop.action_log WHERE kind = 'compensated' AND action_id = $1",
    )
    .bind(ids["ok"])
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(recorded["status"], 200);
    assert_eq!(recorded["response"]["key"], ids["ok"].to_string());
    let retries = t
        .count("SELECT count(*) FROM backstop.action_log WHERE kind = 'compensation_retry'")
        .await;
    assert_eq!(retries, 2);
}

// ---- the surgical property ----

#[derive(Debug, Clone)]
enum Op {
    Refund(usize, i64),
    Credit(usize, i64),
    SetEmail(usize, u8),
    Cancel(usize),
    Activate(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Actor {
    Agent,
    OtherAgent,
    Human,
    Job,
}

#[derive(Debug, Default, PartialEq, Clone)]
struct World {
    balances: BTreeMap<usize, i64>,
    emails: BTreeMap<usize, String>,
    contracts: BTreeMap<usize, String>,
}

fn apply(w: &mut World, op: &Op) {
    match op {
        Op::Refund(c, a) | Op::Credit(c, a) => *w.balances.entry(*c).or_default() += a,
        Op::SetEmail(c, v) => {
            w.emails.insert(*c, format!("e{v}@x"));
        }
        Op::Cancel(k) => {
            w.contracts.insert(*k, "cancelled".into());
        }
        Op::Activate(k) => {
            w.contracts.insert(*k, "active".into());
        }
    }
}

static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static DB: OnceLock<TestDb> = OnceLock::new();

fn rt() -> &'static tokio::runtime::Runtime {
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn shared_db() -> &'static TestDb {
    DB.get_or_init(|| {
        rt().block_on(async {
            let t = TestDb::new().await;
            t.load_assets().await;
            t
        })
    })
}

async fn run_case(case: u64, ops: &[(Actor, Op)], undo: &[bool]) -> Result<(), String> {
    let t = shared_db();
    let p = t.pool();
    let cust = |c: usize| format!("p{case}-c{c}");
    let contract_id = |k: usize| format!("p{case}-k{k}");
    for c in 0..3 {
        sqlx::query("INSERT INTO crm.customers (customer_id, name, email) VALUES ($1, 'x', 'start@x')")
            .bind(cust(c))
            .execute(p)
            .await
            .unwrap();
        sqlx::query("INSERT INTO payments.accounts (customer_id) VALUES ($1)")
            .bind(cust(c))
            .execute(p)
            .await
            .unwrap();
    }
    for k in 0..2 {
        sqlx::query("INSERT INTO contracts.contracts (contract_id, supplier, monthly_value) VALUES ($1, 's', 1)")
            .bind(contract_id(k))
            .execute(p)
            .await
            .unwrap();
    }
    let mut agent_actions: Vec<(usize, Uuid)> = Vec::new();
    for (i, (actor, op)) in ops.iter().enumerate() {
        let (tool, function, params) = match op {
            Op::Refund(c, a) => (
                "issue_refund",
                "payments.issue_refund",
                json!({"customer_id": cust(*c), "amount": a}),
            ),
            Op::Credit(c, a) => (
                "issue_credit",
                "payments.issue_credit",
                json!({"customer_id": cust(*c), "amount": a}),
            ),
            Op::SetEmail(c, v) => (
                "update_customer_field",
                "crm.update_customer_field",
                json!({"customer_id": cust(*c), "field": "email", "value": format!("e{v}@x")}),
            ),
            Op::Cancel(k) => (
                "cancel_contract",
                "contracts.cancel_contract",
                json!({"contract_id": contract_id(*k), "supplier": "s", "monthly_value": 1}),
            ),
            Op::Activate(k) => (
                "reinstate",
                "contracts.activate_contract",
                json!({"contract_id": contract_id(*k)}),
            ),
        };
        match actor {
            Actor::Agent | Actor::OtherAgent if tool != "reinstate" => {
                let agent = if *actor == Actor::Agent {
                    format!("agent-x-{case}")
                } else {
                    format!("agent-y-{case}")
                };
                let id = act(p, &agent, tool, function, params, None, None).await;
                if *actor == Actor::Agent {
                    agent_actions.push((i, id));
                }
            }
            _ => {
                let who = if *actor == Actor::Human { "dana" } else { "nightly-job" };
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {function}($1, $2)")))
                    .bind(&params)
                    .bind(who)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }
    }
    let chosen: Vec<(usize, Uuid)> = agent_actions
        .iter()
        .enumerate()
        .filter(|(j, _)| undo.get(*j).copied().unwrap_or(false))
        .map(|(_, a)| *a)
        .collect();
    if !chosen.is_empty() {
        let plan = compensation::plan(p, &Selection::Actions(chosen.iter().map(|(_, id)| *id).collect()))
            .await
            .unwrap();
        compensation::request(p, &plan, "property test").await.unwrap();
        common::drain(p, &format!("prop-{case}")).await;
    }
    let skipped: Vec<usize> = chosen.iter().map(|(i, _)| *i).collect();
    let mut expected = World::default();
    for c in 0..3 {
        expected.balances.insert(c, 0);
        expected.emails.insert(c, "start@x".into());
    }
    for k in 0..2 {
        expected.contracts.insert(k, "active".into());
    }
    for (i, (_, op)) in ops.iter().enumerate() {
        if !skipped.contains(&i) {
            apply(&mut expected, op);
        }
    }
    let mut actual = World::default();
    for c in 0..3 {
        let (b, e): (rust_decimal::Decimal, String) = sqlx::query_as(
            "SELECT a.balance, c.email FROM payments.accounts a JOIN crm.customers c USING (customer_id) WHERE customer_id = $1",
        )
        .bind(cust(c))
        .fetch_one(p)
        .await
        .unwrap();
        actual.balances.insert(c, b.try_into().unwrap());
        actual.emails.insert(c, e);
    }
    for k in 0..2 {
        let s: String = sqlx::query_scalar("SELECT status FROM contracts.contracts WHERE contract_id = $1")
            .bind(contract_id(k))
            .fetch_one(p)
            .await
            .unwrap();
        actual.contracts.insert(k, s);
    }
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "ops {ops:?}, undone {skipped:?}: expected {expected:?}, got {actual:?}"
        ))
    }
}

mod property {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static CASE: AtomicU64 = AtomicU64::new(0);

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 1..200i64).prop_map(|(c, a)| Op::Refund(c, a)),
            (0..3usize, 1..200i64).prop_map(|(c, a)| Op::Credit(c, a)),
            (0..3usize, 0..5u8).prop_map(|(c, v)| Op::SetEmail(c, v)),
            (0..2usize).prop_map(Op::Cancel),
            (0..2usize).prop_map(Op::Activate),
        ]
    }

    fn actor() -> impl Strategy<Value = Actor> {
        prop_oneof![3 => Just(Actor::Agent), 1 => Just(Actor::OtherAgent), 1 => Just(Actor::Human), 1 => Just(Actor::Job)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn compensating_some_actions_equals_never_having_done_them(
            ops in prop::collection::vec((actor(), op()), 4..18),
            undo in prop::collection::vec(any::<bool>(), 18),
        ) {
            let case = CASE.fetch_add(1, Ordering::SeqCst);
            shared_db();
            let r = rt().block_on(run_case(case, &ops, &undo));
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }
}

/// Found by the property test: an email restore refused as a conflict (someone
/// else wrote the field since) must not stop the same customer's refund
/// reversal; only true dependents block.
#[test]
fn a_conflict_on_one_field_does_not_block_other_work_on_the_same_entity() {
    shared_db();
    let ops = [
        (Actor::Agent, Op::Refund(2, 1)),
        (Actor::Agent, Op::SetEmail(2, 0)),
        (Actor::OtherAgent, Op::SetEmail(2, 0)),
        (Actor::Agent, Op::Refund(0, 1)),
    ];
    let r = rt().block_on(run_case(1_000_000, &ops, &[true, true]));
    assert!(r.is_ok(), "{}", r.unwrap_err());
}
