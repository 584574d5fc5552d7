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
async fn setup(test: &str, login: &str) -> Option<(TestDb, Logins, PgPool, String)> {
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
    // A login per test: logins are cluster-wide and the tests run at once.
    let agent = logins.login(&t, login, Some("agent")).await;
    Some((t, logins, agent, Logins::name(login)))
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
fn spawn_client(t: &TestDb, agent: &str, ledger: &Path, hold_wait: &str, calls: Value) -> Child {
    Command::new("python3")
        .arg(script("agent_client.py"))
        .arg(calls.to_string())
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_backstop"))
        .args(["mcp", "--agent", agent, "--hold-wait", hold_wait, "--"])
        .arg("python3")
        .arg(script("ledger_server.py"))
        .env("DATABASE_URL", url_as(&t.url, agent))
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
    let Some((t, logins, agent, name)) = setup("allowed_calls_are_forwarded_and_recorded", "mcp_allow").await else {
        return;
    };
    let p = t.pool();
    let ledger = ledger_path(&t);
    let calls = json!([
        {"tool": "issue_refund", "arguments": {"customer_id": "c-m1", "amount": 120, "order_id": "o-1"}},
        {"tool": "delete_customer", "arguments": {"customer_id": "c-m1"}},
    ]);
    let (tools, answers) = finish(spawn_client(&t, &name, &ledger, "5s", calls)).await;
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
    assert_eq!(agent_of, name.clone());
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
    let Some((t, logins, agent, name)) = setup("a_held_call_waits_for_two_approvals", "mcp_hold").await else {
        return;
    };
    let p = t.pool();
    let ledger = ledger_path(&t);
    let calls = json!([{"tool": "issue_refund", "arguments": {"customer_id": "c-m2", "amount": 12000}}]);
    let child = spawn_client(&t, &name, &ledger, "120s", calls);
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
    let Some((t, logins, agent, name)) = setup("holds_past_the_wait_blocks_and_pauses", "mcp_block").await else {
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
    let (_, answers) = finish(spawn_client(&t, &name, &ledger, "0s", calls)).await;
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
        .bind(name.clone())
        .execute(p)
        .await
        .unwrap();
    let calls = json!([{"tool": "issue_refund", "arguments": {"customer_id": "c-m4", "amount": 10}}]);
    let (_, answers) = finish(spawn_client(&t, &name, &ledger, "0s", calls)).await;
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

/// A registry for the ledger server's tools whose inverse runs through the
/// `mcp` executor on the same server (sharing `ledger`), and a small policy.
fn write_config(dir: &Path, ledger: &Path) -> (PathBuf, PathBuf) {
    let command = json!([
        "env",
        format!("LEDGER={}", ledger.display()),
        "python3",
        script("ledger_server.py")
    ]);
    let tools = format!(
        r#"[tools.issue_refund]
class = "reversible"
description = "Refund money to a customer"
params = ["customer_id", "amount", "order_id", "reason"]
result = ["refund_id", "status"]
value = "amount"
entity = "customer_id"
inverse = "reverse_refund"
bind = {{ refund_id = "result.refund_id", customer_id = "params.customer_id", amount = "params.amount" }}

[tools.reverse_refund]
class = "irreversible"
description = "Take back a refund"
params = ["refund_id", "customer_id", "amount"]
executor = {{ kind = "mcp", command = {command}, timeout = "60s" }}
"#
    );
    let policy = r#"[settings]
hold_expiry = "1h"
four_eyes_above = 10000

[[rules]]
name = "large"
kind = "amount_over"
threshold = 1000
effect = "hold"
reason = "{amount} is above {threshold}"
"#;
    std::fs::create_dir_all(dir).unwrap();
    let (t, p) = (dir.join("tools.toml"), dir.join("policy.toml"));
    std::fs::write(&t, tools).unwrap();
    std::fs::write(&p, policy).unwrap();
    (t, p)
}

#[tokio::test]
async fn a_requested_compensation_runs_the_inverse_on_the_mcp_server_exactly_once() {
    let Some((t, logins, agent, name)) = setup(
        "a_requested_compensation_runs_the_inverse_on_the_mcp_server",
        "mcp_undo",
    )
    .await
    else {
        return;
    };
    let p = t.pool();
    let ledger = ledger_path(&t);
    let dir = std::env::temp_dir().join(format!("backstop-{}-mcp-config", t.name));
    let (tools, policy) = write_config(&dir, &ledger);
    backstop::demo::script::load_config(p, &tools, &policy)
        .await
        .expect("load the MCP registry");

    let calls = json!([{"tool": "issue_refund", "arguments": {"customer_id": "c-m5", "amount": 50}}]);
    let (_, answers) = finish(spawn_client(&t, &name, &ledger, "5s", calls)).await;
    assert_eq!(answers[0]["is_error"], false, "{}", answers[0]);
    let refund_id = answers[0]["structured"]["refund_id"].as_str().unwrap().to_string();
    let (id, status) = action_of(p, "c-m5").await;
    assert_eq!(status, "executed");

    let ops = t.as_operator("oncall").await;
    let plan = backstop::compensation::plan(&ops, &backstop::compensation::Selection::Actions(vec![id]))
        .await
        .unwrap();
    backstop::compensation::request(&ops, &plan, "refunded the wrong customer")
        .await
        .unwrap();

    // A worker that called the server and died before recording it: the
    // inverse ran once, with the action id as its key.
    let (inverse_tool, inverse_params): (String, Value) =
        sqlx::query_as("SELECT inverse_tool, inverse_params FROM backstop.actions WHERE action_id = $1")
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap();
    let claim = contract::Claim {
        action_id: id,
        agent: name.clone(),
        tool: "issue_refund".into(),
        inverse_tool,
        inverse_params,
        deadline: None,
        condition: None,
        attempt: 1,
        lease_until: chrono::Utc::now(),
        blocked_by: None,
    };
    let command: Vec<String> = vec![
        "env".into(),
        format!("LEDGER={}", ledger.display()),
        "python3".into(),
        script("ledger_server.py").display().to_string(),
    ];
    let first = backstop::compensation::mcp::run(&command, Duration::from_secs(60), &claim).await;
    assert!(
        matches!(first, backstop::compensation::executor::ExecOutcome::Done(_)),
        "{first:?}"
    );

    // The restarted worker runs it again: the server answers with the first
    // outcome, and the compensation completes.
    common::drain(p, "mcp-test-worker").await;
    let comp: String = sqlx::query_scalar("SELECT status FROM backstop.compensations WHERE action_id = $1")
        .bind(id)
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(comp, "compensated");
    let book: Value = serde_json::from_str(&std::fs::read_to_string(&ledger).unwrap()).unwrap();
    assert_eq!(book["refunds"][&refund_id]["status"], "reversed", "{book}");
    assert_eq!(book["balances"]["c-m5"].as_f64(), Some(0.0), "reversed twice: {book}");
    assert_eq!(
        server_calls(&ledger),
        ["issue_refund", "reverse_refund", "reverse_refund"]
    );
    let calls = std::fs::read_to_string(ledger.with_extension("json.calls")).unwrap();
    let keys: Vec<Value> = calls
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|c| c["tool"] == "reverse_refund")
        .map(|c| c["args"]["key"].clone())
        .collect();
    assert_eq!(keys, [json!(id.to_string()), json!(id.to_string())]);
    std::fs::remove_dir_all(&dir).ok();
    cleanup(&ledger);
    logins.drop_all(vec![agent]).await;
}

#[tokio::test]
async fn the_mcp_executor_maps_tool_errors_to_conflict_condition_failed_and_retry() {
    if python_missing().is_some() {
        return setup("the_mcp_executor_maps_tool_errors", "mcp_exec")
            .await
            .map(|_| ())
            .unwrap_or(());
    }
    let dir = std::env::temp_dir().join(format!("backstop-mcp-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.json");
    let book = json!({"refunds": {
        "rf-w": {"customer_id": "c", "amount": 5, "status": "withdrawn"},
        "rf-r": {"customer_id": "c", "amount": 5, "status": "reversed"}
    }, "balances": {}});
    std::fs::write(&ledger, book.to_string()).unwrap();
    let command: Vec<String> = vec![
        "env".into(),
        format!("LEDGER={}", ledger.display()),
        "python3".into(),
        script("ledger_server.py").display().to_string(),
    ];
    let claim = |refund: &str| contract::Claim {
        action_id: Uuid::new_v4(),
        agent: "a".into(),
        tool: "issue_refund".into(),
        inverse_tool: "reverse_refund".into(),
        inverse_params: json!({"refund_id": refund, "customer_id": "c", "amount": 5}),
        deadline: None,
        condition: None,
        attempt: 1,
        lease_until: chrono::Utc::now(),
        blocked_by: None,
    };
    use backstop::compensation::executor::ExecOutcome;
    let run = |c| {
        let command = command.clone();
        async move { backstop::compensation::mcp::run(&command, Duration::from_secs(60), &c).await }
    };
    let withdrawn = run(claim("rf-w")).await;
    assert!(
        matches!(withdrawn, ExecOutcome::ConditionFailed(ref m) if m.contains("withdrawn")),
        "{withdrawn:?}"
    );
    let reversed = run(claim("rf-r")).await;
    assert!(
        matches!(reversed, ExecOutcome::Conflict(ref m) if m.contains("is reversed")),
        "{reversed:?}"
    );
    let missing = run(claim("rf-none")).await;
    assert!(
        matches!(missing, ExecOutcome::Retry(ref m) if m.contains("no refund rf-none")),
        "{missing:?}"
    );
    let gone = backstop::compensation::mcp::run(
        &["/nonexistent/mcp-server".to_string()],
        Duration::from_secs(60),
        &claim("rf-w"),
    )
    .await;
    assert!(
        matches!(gone, ExecOutcome::Retry(ref m) if m.contains("cannot start")),
        "{gone:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn backstop_cmd(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"));
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("BACKSTOP_TOOLS")
        .env_remove("BACKSTOP_POLICY");
    c
}

#[tokio::test]
async fn init_from_mcp_drafts_a_registry_that_check_accepts_once_its_todos_are_filled() {
    if python_missing().is_some() {
        return setup("init_from_mcp_drafts_a_registry", "mcp_init")
            .await
            .map(|_| ())
            .unwrap_or(());
    }
    let dir = std::env::temp_dir().join(format!("backstop-mcp-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = backstop_cmd(&dir)
        .args(["init", ".", "--from-mcp", "--", "python3"])
        .arg(script("ledger_server.py"))
        .env("LEDGER", dir.join("ledger.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drafted = std::fs::read_to_string(dir.join("tools.toml")).unwrap();
    let doc: toml::Table = drafted.parse().expect("the draft is TOML");
    let tool = |n: &str| doc["tools"][n].as_table().unwrap().clone();
    assert_eq!(tool("get_balance")["class"].as_str(), Some("read"), "{drafted}");
    assert_eq!(
        tool("reverse_refund")["class"].as_str(),
        Some("irreversible"),
        "{drafted}"
    );
    assert_eq!(tool("issue_refund")["class"].as_str(), Some("reversible"), "{drafted}");
    let params: Vec<String> = tool("issue_refund")["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert_eq!(params, ["amount", "customer_id", "order_id", "reason"]);
    assert!(
        drafted.contains("# TODO: inverse: the tool that undoes issue_refund"),
        "{drafted}"
    );

    // check names what is left to decide: the reversible tools' inverses.
    let check = backstop_cmd(&dir).arg("check").output().unwrap();
    let said = String::from_utf8_lossy(&check.stderr).into_owned() + &String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{said}");
    assert!(said.contains("tools.issue_refund.inverse"), "{said}");
    assert!(said.contains("tools.delete_customer.inverse"), "{said}");

    // The team decides: refunds are undone by reverse_refund, deleting a
    // customer cannot be.
    let filled = drafted
        .replace(
            "# inverse = \"undo_issue_refund\"",
            "inverse = \"reverse_refund\"\nresult = [\"refund_id\", \"status\"]",
        )
        .replace(
            "# bind = { amount = \"params.amount\", customer_id = \"params.customer_id\" }",
            "bind = { amount = \"params.amount\", customer_id = \"params.customer_id\", refund_id = \"result.refund_id\" }",
        )
        .replace(
            "[tools.delete_customer]\nclass = \"reversible\"",
            "[tools.delete_customer]\nclass = \"irreversible\"",
        );
    std::fs::write(dir.join("tools.toml"), filled).unwrap();
    let check = backstop_cmd(&dir).arg("check").output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
