//! The Python agent in examples/agent.py, end to end against a real database:
//! a held action approved by two people from Rust while the agent waits on
//! NOTIFY, then executed and recorded by the agent; reversible actions taken
//! by the agent and undone by a compensation worker; and the agent's answers
//! to a block, a failing tool and a contract error.
//!
//! Needs `python3` with psycopg 3.2 or later and the client (`pip install ./python`). Without them the tests say why
//! and pass, unless BACKSTOP_REQUIRE_PYTHON=1 (CI sets it), which makes a
//! missing Python a failure rather than a silent skip.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use backstop::compensation::{self, Selection};
use backstop::contract::{self, Verdict};
use common::TestDb;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// How long one agent run may take before the test gives up on it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(90);

const PROBE: &str = "import psycopg, sys, backstop\n\
                     v = tuple(int(p) for p in psycopg.__version__.split('.')[:2])\n\
                     sys.exit(0 if v >= (3, 2) else 'psycopg ' + psycopg.__version__ + ' is older than 3.2')";

/// Whether python3 and psycopg 3.2+ are here; the reason when not.
fn python_missing() -> &'static Option<String> {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    MISSING.get_or_init(
        || match std::process::Command::new("python3").args(["-c", PROBE]).output() {
            Err(e) => Some(format!("python3 cannot be run: {e}")),
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "python3 has no usable psycopg or Backstop client ({}): python3 -m pip install \"psycopg[binary]\" ./python",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        },
    )
}

/// A database with the shipped registry and policy, or None (after saying
/// why) when the agent cannot run here and Python is not required.
async fn setup(test: &str) -> Option<TestDb> {
    if let Some(why) = python_missing() {
        if std::env::var("BACKSTOP_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!("BACKSTOP_REQUIRE_PYTHON=1 but {why}");
        }
        eprintln!("skipping {test}: {why}");
        return None;
    }
    let t = TestDb::new().await;
    t.load_assets().await;
    Some(t)
}

fn spawn_agent(t: &TestDb, args: &[&str]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.py");
    Command::new("python3")
        .arg(script)
        .arg("--db")
        .arg(&t.url)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3 examples/agent.py")
}

/// What one run of the agent said: its exit code, its JSON line, its stderr.
struct Run {
    code: Option<i32>,
    json: Value,
    stderr: String,
}

impl Run {
    fn from_output(o: Output) -> Run {
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let json = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("agent's stdout is not one JSON line ({e}):\n{stdout}\nstderr:\n{stderr}"));
        Run {
            code: o.status.code(),
            json,
            stderr,
        }
    }

    fn str(&self, key: &str) -> &str {
        self.json[key].as_str().unwrap_or_default()
    }

    fn action_id(&self) -> Uuid {
        self.str("action_id")
            .parse()
            .unwrap_or_else(|e| panic!("no action_id ({e}) in {self}"))
    }

    /// Exit code and status together, so a failure shows the whole run.
    fn assert_outcome(&self, code: i32, status: &str) {
        assert_eq!((self.code, self.str("status")), (Some(code), status), "{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "agent exited {:?}\nstdout: {}\nstderr:\n{}",
            self.code, self.json, self.stderr
        )
    }
}

/// Wait for the agent to exit; past AGENT_TIMEOUT, kill it and fail with what it said.
async fn finish(mut child: Child) -> Run {
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    // Read both pipes while waiting, so a timed-out agent's stderr is still shown.
    let stdout = tokio::spawn(async move {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).await.map(|_| b)
    });
    let stderr = tokio::spawn(async move {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).await.map(|_| b)
    });
    let status = match tokio::time::timeout(AGENT_TIMEOUT, child.wait()).await {
        Ok(status) => status.expect("wait for the agent"),
        Err(_) => {
            child.kill().await.ok();
            let said = stderr.await.unwrap().unwrap_or_default();
            panic!(
                "the agent did not finish within {AGENT_TIMEOUT:?} (killed); its stderr:\n{}",
                String::from_utf8_lossy(&said)
            );
        }
    };
    Run::from_output(Output {
        status,
        stdout: stdout.await.unwrap().expect("read the agent's stdout"),
        stderr: stderr.await.unwrap().expect("read the agent's stderr"),
    })
}

async fn run_agent(t: &TestDb, args: &[&str]) -> Run {
    finish(spawn_agent(t, args)).await
}

/// The action `agent` proposed, once it is held (the agent then waits).
async fn wait_until_held(pool: &PgPool, mut child: Child, agent: &str) -> (Child, Uuid) {
    let t0 = Instant::now();
    loop {
        let held: Option<Uuid> =
            sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE agent = $1 AND status = 'held'")
                .bind(agent)
                .fetch_optional(pool)
                .await
                .unwrap();
        if let Some(id) = held {
            return (child, id);
        }
        if child.try_wait().unwrap().is_some() {
            panic!("the agent ended before its action was held:\n{}", finish(child).await);
        }
        assert!(t0.elapsed() < AGENT_TIMEOUT, "no held action from {agent}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_kinds(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM backstop.action_log WHERE action_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn balance(pool: &PgPool, customer: &str) -> Decimal {
    sqlx::query_scalar("SELECT balance FROM payments.accounts WHERE customer_id = $1")
        .bind(customer)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_held_refund_waits_for_two_approvers_then_the_agent_runs_and_records_it() {
    let Some(t) = setup("a_held_refund_waits_for_two_approvers").await else {
        return;
    };
    let p = t.pool();
    // $12,000 is above the policy's four_eyes threshold ($10,000): held for
    // two different approvers. --poll 120 leaves the agent only NOTIFY to
    // learn of the decision in time (the test below allows 30 s).
    let child = spawn_agent(
        &t,
        &[
            "--agent",
            "py-refunds",
            "refund",
            "--customer",
            "c-7",
            "--amount",
            "12000",
            "--order",
            "o-7",
            "--confidence",
            "0.9",
            "--reasoning",
            "duplicate charge on a bulk order",
            "--wait",
            "120",
            "--poll",
            "120",
        ],
    );
    let (mut child, id) = wait_until_held(p, child, "py-refunds").await;
    let (rule, needed): (String, i32) =
        sqlx::query_as("SELECT rule, approvals_needed FROM backstop.actions WHERE action_id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!((rule.as_str(), needed), ("four_eyes", 2));

    // The first approval wakes the agent, which asks again and keeps waiting.
    let ana = t.as_operator("ana").await;
    let first = contract::approve(&ana, id, "order checked").await.unwrap();
    assert_eq!((first.verdict, first.approvals), (Verdict::Hold, 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    if child.try_wait().unwrap().is_some() {
        panic!("the agent stopped after one of two approvals:\n{}", finish(child).await);
    }
    assert_eq!(
        t.count("SELECT count(*) FROM payments.refunds WHERE customer_id = 'c-7'")
            .await,
        0,
        "refunded before the second approval"
    );

    let ben = t.as_operator("ben").await;
    let second = contract::approve(&ben, id, "second pair of eyes").await.unwrap();
    assert_eq!((second.verdict, second.approvals), (Verdict::Allow, 2));
    let approved_at = Instant::now();
    let run = finish(child).await;
    assert!(
        approved_at.elapsed() < Duration::from_secs(30),
        "the agent took {:?} after the approval: it did not wake on NOTIFY\n{run}",
        approved_at.elapsed()
    );

    run.assert_outcome(0, "executed");
    assert_eq!(run.action_id(), id, "{run}");
    assert_eq!((run.str("proposed"), run.str("verdict")), ("hold", "allow"), "{run}");
    assert_eq!(run.str("reason"), "approved by ana and ben", "{run}");
    assert_eq!(run.str("compensation"), "staged", "{run}");
    let refund_id = run.json["result"]["refund_id"]
        .as_str()
        .expect("result.refund_id")
        .to_string();

    // Backstop's view: executed after two approvals, with the inverse staged
    // from the result the agent recorded.
    let (status, approvals, inverse_tool, inverse): (String, i32, Option<String>, Option<Value>) = sqlx::query_as(
        "SELECT status, approvals, inverse_tool, inverse_params FROM backstop.actions WHERE action_id = $1",
    )
    .bind(id)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!((status.as_str(), approvals), ("executed", 2));
    assert_eq!(inverse_tool.as_deref(), Some("reverse_refund"));
    let inverse = inverse.expect("inverse_params");
    assert_eq!(inverse["refund_id"], refund_id.as_str(), "{inverse}");
    assert_eq!(inverse["customer_id"], "c-7", "{inverse}");
    assert_eq!(log_kinds(p, id).await, ["held", "approved", "approved", "executed"]);

    // The business system's view: the refund happened once, by the agent.
    let (amount, actor, order): (Decimal, String, Option<String>) =
        sqlx::query_as("SELECT amount, actor, order_id FROM payments.refunds WHERE refund_id = $1")
            .bind(&refund_id)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(
        (amount, actor.as_str(), order.as_deref()),
        (Decimal::from(12000), "py-refunds", Some("o-7"))
    );
    assert_eq!(t.count("SELECT count(*) FROM payments.refunds").await, 1);
    assert_eq!(balance(p, "c-7").await, Decimal::from(12000));
}

#[tokio::test]
async fn actions_the_agent_took_are_compensated_by_a_worker() {
    let Some(t) = setup("actions_the_agent_took_are_compensated_by_a_worker").await else {
        return;
    };
    let p = t.pool();
    sqlx::query("INSERT INTO crm.customers (customer_id, name, email) VALUES ('c-3', 'Customer 3', 'c3@example.com')")
        .execute(p)
        .await
        .unwrap();

    // Two allowed, reversible actions on the same customer.
    let refund = run_agent(
        &t,
        &[
            "--agent",
            "py-refunds",
            "refund",
            "--customer",
            "c-3",
            "--amount",
            "120.50",
            "--confidence",
            "0.95",
            "--reasoning",
            "late delivery",
            "--correlation-id",
            "ticket-3",
        ],
    )
    .await;
    refund.assert_outcome(0, "executed");
    assert_eq!(
        (refund.str("proposed"), refund.str("compensation")),
        ("allow", "staged"),
        "{refund}"
    );
    let edit = run_agent(
        &t,
        &[
            "--agent",
            "py-crm",
            "update-field",
            "--customer",
            "c-3",
            "--field",
            "email",
            "--value",
            "wrong@example.com",
            "--confidence",
            "0.6",
            "--reasoning",
            "address from the ticket",
        ],
    )
    .await;
    edit.assert_outcome(0, "executed");
    assert_eq!(edit.str("compensation"), "staged", "{edit}");
    assert_eq!(edit.json["result"]["previous_value"], "c3@example.com", "{edit}");

    let email = || async {
        sqlx::query_scalar::<_, String>("SELECT email FROM crm.customers WHERE customer_id = 'c-3'")
            .fetch_one(p)
            .await
            .unwrap()
    };
    assert_eq!(balance(p, "c-3").await, Decimal::new(12050, 2));
    assert_eq!(email().await, "wrong@example.com");

    // An operator undoes both; a worker runs the staged inverses.
    let (refund_id, edit_id) = (refund.action_id(), edit.action_id());
    let ops = t.as_operator("oncall").await;
    let plan = compensation::plan(&ops, &Selection::Actions(vec![refund_id, edit_id]))
        .await
        .unwrap();
    let outcomes: Vec<(Uuid, &str)> = plan.steps.iter().map(|s| (s.action_id, s.outcome.as_str())).collect();
    assert_eq!(outcomes, [(edit_id, "requested"), (refund_id, "requested")]);
    compensation::request(&ops, &plan, "the ticket was misread")
        .await
        .unwrap();
    common::drain(p, "py-test-worker").await;

    for id in [refund_id, edit_id] {
        let status: String = sqlx::query_scalar("SELECT status FROM backstop.compensations WHERE action_id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(status, "compensated");
        let kinds = log_kinds(p, id).await;
        assert_eq!(
            kinds,
            [
                "allowed",
                "executed",
                "compensation_requested",
                "compensation_started",
                "compensated"
            ]
        );
    }
    // The business state is as before the agent acted.
    assert_eq!(balance(p, "c-3").await, Decimal::ZERO);
    let refund_status: String = sqlx::query_scalar("SELECT status FROM payments.refunds WHERE refund_id = $1")
        .bind(refund.json["result"]["refund_id"].as_str().unwrap())
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(refund_status, "reversed");
    assert_eq!(email().await, "c3@example.com");
}

#[tokio::test]
async fn blocks_tool_failures_and_contract_errors_come_back_as_exit_codes() {
    let Some(t) = setup("blocks_tool_failures_and_contract_errors_come_back_as_exit_codes").await else {
        return;
    };
    let p = t.pool();
    sqlx::raw_sql(
        "INSERT INTO crm.customers (customer_id, name, email) VALUES ('c-1', 'Customer 1', 'c1@example.com');
         INSERT INTO crm.suppression_list (customer_id, reason) VALUES ('c-9', 'churned')",
    )
    .execute(p)
    .await
    .unwrap();

    // Blocked by policy: the agent does not run the tool.
    let blocked = run_agent(
        &t,
        &["--agent", "py-refunds", "refund", "--customer", "c-9", "--amount", "50"],
    )
    .await;
    blocked.assert_outcome(3, "blocked");
    assert_eq!(
        (blocked.str("proposed"), blocked.str("verdict")),
        ("block", "block"),
        "{blocked}"
    );
    assert!(blocked.str("reason").contains("churned"), "{blocked}");
    assert_eq!(t.count("SELECT count(*) FROM payments.refunds").await, 0);

    // Allowed, but the tool fails: recorded as failed, nothing staged.
    let failed = run_agent(
        &t,
        &[
            "--agent",
            "py-crm",
            "update-field",
            "--customer",
            "c-1",
            "--field",
            "balance",
            "--value",
            "0",
        ],
    )
    .await;
    failed.assert_outcome(5, "failed");
    assert_eq!(failed.str("compensation"), "none", "{failed}");
    assert!(
        failed.json["result"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be updated"),
        "{failed}"
    );
    assert_eq!(log_kinds(p, failed.action_id()).await, ["allowed", "failed"]);

    // A contract error: SQLSTATE and message, and nothing appended.
    let before = t.log_len().await;
    let bad = run_agent(
        &t,
        &["--agent", "py-refunds", "refund", "--customer", "c-1", "--amount=-5"],
    )
    .await;
    bad.assert_outcome(1, "error");
    assert_eq!(bad.str("sqlstate"), "22023", "{bad}");
    assert!(bad.str("error").starts_with("propose: params.amount"), "{bad}");
    assert!(bad.stderr.contains("SQLSTATE 22023: propose: "), "{bad}");
    assert!(bad.json["action_id"].is_null(), "{bad}");
    assert_eq!(t.log_len().await, before);
}
