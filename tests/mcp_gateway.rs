//! `backstop mcp` between a real MCP client and a real MCP server, both
//! written with the Python `mcp` SDK (tests/mcp/): the gateway proposes
//! every call, forwards the allowed ones and records what they returned,
//! holds large refunds for two approvers (with progress notifications while
//! it waits), and answers blocks, pauses and unknown tools with a tool error
//! that says why, without calling the server.
//!
//! Needs `python3` with the `mcp` SDK 2.x (`pip install "mcp>=2,<3"`).
//! Without it the tests say why and pass, unless BACKSTOP_REQUIRE_PYTHON=1
//! (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backstop::contract::{self, Verdict};
use common::{Logins, TestDb};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// How long one client run may take before the test gives up on it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn python_missing() -> Option<String> {
    let probe = "import mcp.server.mcpserver, mcp.client.client";
    match std::process::Command::new("python3").args(["-c", probe]).output() {
        Err(e) => Some(format!("python3 cannot be run: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "python3 has no mcp SDK 2.x ({}): python3 -m pip install \"mcp>=2,<3\"",
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or_default()
        )),
    }
}

/// A database with the shipped registry and policy and an agent login, or
/// None (after saying why) when Python's MCP SDK is missing and not required.
async fn setup(test: &str) -> Option<(TestDb, Logins, PgPool)> {
    if let Some(why) = python_missing() {
        if std::env::var("BACKSTOP_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!("BACKSTOP_REQUIRE_PYTHON=1 but {why}");
        }
        eprintln!("skipping {test}: {why}");
        return None;
    }
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "mcpbot", Some("agent")).await;
    Some((t, logins, agent))
}

fn agent_name() -> String {
    Logins::name("mcpbot")
}

/// `url` with another user name.
fn url_as(url: &str, user: &str) -> String {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[start..].find('@') {
        Some(at) => format!("{}{user}{}", &url[..start], &url[start + at..]),
        None => format!("{}{user}@{}", &url[..start], &url[start..]),
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp").join(name)
}

/// The agent's MCP client, making `calls` through `backstop mcp` started on
/// the ledger server, connected to the database as the agent's login.
fn spawn_client(t: &TestDb, ledger: &Path, hold_wait: &str, calls: Value) -> Child {
    Command::new("python3")
        .arg(script("agent_client.py"))
        .arg(calls.to_string())
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_backstop"))
        .args(["mcp", "--agent", &agent_name(), "--hold-wait", hold_wait, "--"])
        .arg("python3")
        .arg(script("ledger_server.py"))
        .env("DATABASE_URL", url_as(&t.url, &agent_name()))
        .env("LEDGER", ledger)
        .env_remove("BACKSTOP_OPERATOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3 tests/mcp/agent_client.py")
}

/// The client's lines: the tools it was shown, then one answer per call.
async fn finish(child: Child) -> (Vec<String>, Vec<Value>) {
    let out = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the MCP client did not finish within {CLIENT_TIMEOUT:?}"))
        .expect("wait for the MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the MCP client failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let mut lines = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nstderr:\n{stderr}")));
    let tools = lines.next().expect("the tool list");
    let tools = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    (tools, lines.collect())
}

/// The tools the server was asked to run, in order (from its call log).
fn server_calls(ledger: &Path) -> Vec<String> {
    let path = ledger.with_extension("json.calls");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["tool"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn ledger_path(t: &TestDb) -> PathBuf {
    std::env::temp_dir().join(format!("backstop-{}-ledger.json", t.name))
}

fn cleanup(ledger: &Path) {
    std::fs::remove_file(ledger).ok();
    std::fs::remove_file(ledger.with_extension("json.calls")).ok();
}

async fn action_of(p: &PgPool, customer: &str) -> (Uuid, String) {
    sqlx::query_as("SELECT action_id, status FROM backstop.actions WHERE entity = $1")
        .bind(customer)
        .fetch_one(p)
        .await
        .unwrap()
}

async fn log_kinds(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM backstop.action_log WHERE action_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn allowed_calls_are_forwarded_and_recorded_and_unknown_tools_blocked() {
    let Some((t, logins, agent)) = setup("allowed_calls_are_forwarded_and_recorded").await else {
        return;
    };
    let p = t.pool();
    let ledger = ledger_path(&t);
    let calls = json!([
        {"tool": "issue_refund", "arguments": {"customer_id": "c-m1", "amount": 120, "order_id": "o-1"}},
        {"tool": "delete_customer", "arguments": {"customer_id": "c-m1"}},
    ]);
    let (tools, answers) = finish(spawn_client(&t, &ledger, "5s", calls)).await;
    assert_eq!(
        tools,
        ["delete_customer", "get_balance", "issue_refund", "reverse_refund"]
    );

    // The small refund: allowed, run once by the server, its structured
    // result recorded and the inverse staged from it.
    let refund = &answers[0];
    assert_eq!(refund["is_error"], false, "{refund}");
    let refund_id = refund["structured"]["refund_id"]
        .as_str()
        .expect("refund_id")
        .to_string();
    let (id, status) = action_of(p, "c-m1").await;
    assert_eq!(status, "executed");
    assert_eq!(log_kinds(p, id).await, ["allowed", "executed"]);
    let (agent_of, inverse): (String, Value) =
        sqlx::query_as("SELECT agent, inverse_params FROM backstop.actions WHERE action_id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(agent_of, agent_name());
    assert_eq!(inverse["refund_id"], refund_id.as_str(), "{inverse}");

    // The unknown tool: blocked and logged by the contract, never forwarded.
    let unknown = &answers[1];
    assert_eq!(unknown["is_error"], true, "{unknown}");
    let text = unknown["text"].as_str().unwrap();
    assert!(text.contains("unknown tool delete_customer"), "{unknown}");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM backstop.action_log WHERE tool = 'delete_customer' ORDER BY seq")
            .fetch_all(p)
            .await
            .unwrap();
    assert_eq!(kinds, ["blocked"]);
    assert_eq!(server_calls(&ledger), ["issue_refund"]);
    cleanup(&ledger);
    logins.drop_all(vec![agent]).await;
}

#[tokio::test]
async fn a_held_call_waits_for_two_approvals_with_progress_then_runs() {
    let Some((t, logins, agent)) = setup("a_held_call_waits_for_two_approvals").await else {
        return;
    };
    let p = t.pool();
    let ledger = ledger_path(&t);
    let calls = json!([{"tool": "issue_refund", "arguments": {"customer_id": "c-m2", "amount": 12000}}]);
    let child = spawn_client(&t, &ledger, "120s", calls);
    let t0 = Instant::now();
    let id = loop {
        let held: Option<Uuid> = sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE status = 'held'")
            .fetch_optional(p)
            .await
            .unwrap();
        if let Some(id) = held {
            break id;
        }
        assert!(t0.elapsed() < CLIENT_TIMEOUT, "no held action from the gateway");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ana = t.as_operator("ana").await;
    assert_eq!(
        contract::approve(&ana, id, "checked").await.unwrap().verdict,
        Verdict::Hold
    );
    assert!(server_calls(&ledger).is_empty(), "forwarded after one of two approvals");
    let ben = t.as_operator("ben").await;
    assert_eq!(
        contract::approve(&ben, id, "agreed").await.unwrap().verdict,
        Verdict::Allow
    );

    let (_, answers) = finish(child).await;
    let answer = &answers[0];
    assert_eq!(answer["is_error"], false, "{answer}");
    assert!(
        answer["progress"].as_u64().unwrap_or(0) >= 1,
        "no progress while held: {answer}"
    );
    assert_eq!(log_kinds(p, id).await, ["held", "approved", "approved", "executed"]);
    assert_eq!(server_calls(&ledger), ["issue_refund"]);
    cleanup(&ledger);
    logins.drop_all(vec![agent]).await;
}

#[tokio::test]
async fn holds_past_the_wait_blocks_and_pauses_come_back_as_tool_errors() {
    let Some((t, logins, agent)) = setup("holds_past_the_wait_blocks_and_pauses").await else {
        return;
    };
    let p = t.pool();
    sqlx::query("INSERT INTO crm.suppression_list (customer_id, reason) VALUES ('c-m9', 'churned')")
        .execute(p)
        .await
        .unwrap();
    let ledger = ledger_path(&t);
    let calls = json!([
        {"tool": "issue_refund", "arguments": {"customer_id": "c-m3", "amount": 20000}},
        {"tool": "issue_refund", "arguments": {"customer_id": "c-m9", "amount": 10}},
    ]);
    let (_, answers) = finish(spawn_client(&t, &ledger, "0s", calls)).await;
    let (held_id, status) = action_of(p, "c-m3").await;
    assert_eq!(status, "held");
    let held = answers[0]["text"].as_str().unwrap();
    assert_eq!(answers[0]["is_error"], true);
    assert!(held.contains("held for approval"), "{held}");
    assert!(held.contains(&held_id.to_string()), "{held}");
    let blocked = answers[1]["text"].as_str().unwrap();
    assert_eq!(answers[1]["is_error"], true);
    assert!(blocked.contains("c-m9 is churned or suppressed"), "{blocked}");

    sqlx::query("SELECT backstop.pause('agent', $1, 'refund loop under investigation')")
        .bind(agent_name())
        .execute(p)
        .await
        .unwrap();
    let calls = json!([{"tool": "issue_refund", "arguments": {"customer_id": "c-m4", "amount": 10}}]);
    let (_, answers) = finish(spawn_client(&t, &ledger, "0s", calls)).await;
    assert_eq!(answers[0]["is_error"], true);
    let paused = answers[0]["text"].as_str().unwrap();
    assert!(paused.contains("refund loop under investigation"), "{paused}");
    assert!(
        server_calls(&ledger).is_empty(),
        "the server was called: {:?}",
        server_calls(&ledger)
    );
    cleanup(&ledger);
    logins.drop_all(vec![agent]).await;
}
