//! A team adopting Backstop for its own tools, as a newcomer would: the real
//! binary in an empty directory, with no DATABASE_URL, with a database that
//! was never migrated, with a policy the database refuses. Nothing changes
//! where the command says it cannot act.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TestDb;
use serde_json::json;
use sqlx::Connection;

fn backstop(dir: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backstop"));
    c.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("BACKSTOP_TOOLS")
        .env_remove("BACKSTOP_POLICY")
        .env("NO_COLOR", "1");
    if let Some(u) = url {
        c.env("DATABASE_URL", u);
    }
    c.output().expect("run backstop")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A state change without a database is refused, never made on a throwaway
/// cluster that would look like the real one.
#[test]
fn no_database_no_state_change() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["pause", "fleet", "--reason", "incident"][..],
        &["approve", "0b4f5c1e-8d2a-4c8e-9f3a-2d6e7b1c9a40"],
        &["log"],
    ] {
        let o = backstop(dir.path(), None, args);
        assert!(!o.status.success(), "{args:?} succeeded without a database");
        assert!(stderr(&o).contains("no database"), "{args:?}: {}", stderr(&o));
    }
    // Nothing was started or written here.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Files come from flags, the environment or the current directory, never
/// from the machine the binary was built on; `init` writes a start that
/// checks.
#[test]
fn files_are_found_where_the_user_says_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let o = backstop(dir.path(), None, &["check"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no tools.toml") && e.contains("backstop init"), "{e}");
    let o = backstop(dir.path(), None, &["init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = backstop(dir.path(), None, &["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // init never overwrites.
    std::fs::write(dir.path().join("tools.toml"), "# mine\n").unwrap();
    let o = backstop(dir.path(), None, &["init"]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tools.toml")).unwrap(),
        "# mine\n"
    );
}

/// Connecting is not migrating: a command against a database Backstop has
/// never migrated says so and creates nothing.
#[tokio::test]
async fn connecting_is_not_migrating() {
    let t = TestDb::new().await;
    let bare = format!("{}_bare", t.name);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {bare}")))
        .execute(t.pool())
        .await
        .unwrap();
    let url = common::url_for(&bare);
    let dir = tempfile::tempdir().unwrap();
    for args in [&["log"][..], &["pause", "fleet", "--reason", "x"], &["findings"]] {
        let o = backstop(dir.path(), Some(&url), args);
        assert!(!o.status.success(), "{args:?} ran on an unmigrated database");
        assert!(stderr(&o).contains("backstop migrate"), "{args:?}: {}", stderr(&o));
    }
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'backstop')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(!schema, "a command created the schema");
    drop(c);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {bare} WITH (FORCE)")))
        .execute(t.pool())
        .await
        .unwrap();
}

/// The registry and the policy load together or not at all; `check` with a
/// database catches what `load` would refuse.
#[tokio::test]
async fn registry_and_policy_load_both_or_neither() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    assert!(backstop(dir.path(), None, &["init"]).status.success());
    let o = backstop(dir.path(), Some(&t.url), &["load"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let version: i64 = t.count("SELECT registry_version FROM backstop.active").await;
    // A new tool, and a list naming a table this database lacks.
    let tools = std::fs::read_to_string(dir.path().join("tools.toml")).unwrap()
        + "\n[tools.cancel_order]\nclass = \"irreversible\"\nparams = [\"order_id\"]\n";
    std::fs::write(dir.path().join("tools.toml"), tools).unwrap();
    let policy = std::fs::read_to_string(dir.path().join("policy.toml")).unwrap()
        + "\n[lists.churned]\ntable = \"crm_nowhere.suppressed\"\ncolumn = \"customer_id\"\n";
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let o = backstop(dir.path(), Some(&t.url), &["check"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = backstop(dir.path(), Some(&t.url), &["load"]);
    assert!(!o.status.success(), "load succeeded");
    assert_eq!(
        t.count("SELECT registry_version FROM backstop.active").await,
        version,
        "the registry was loaded without its policy"
    );
}

/// An inverse is run by compensation workers, not proposed by agents; a
/// driver's float confidence is accepted as it is.
#[tokio::test]
async fn inverses_are_not_for_agents_and_floats_are_fine() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let before = t.log_len().await;
    let (id, verdict): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT action_id, verdict FROM backstop.propose('refund-bot', 'reverse_refund', $1, confidence => 0.9::float8)",
    )
    .bind(json!({"refund_id": "rf-1", "customer_id": "c-1", "amount": 10}))
    .fetch_one(t.pool())
    .await
    .unwrap();
    let rule: Option<String> = sqlx::query_scalar("SELECT rule FROM backstop.actions WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!((verdict.as_str(), rule.as_deref()), ("block", Some("inverse_only")));
    assert_eq!(t.log_len().await, before + 1, "the refusal is in the log");
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT action_id FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.93::float8)",
    )
    .bind(json!({"customer_id": "c-1", "amount": 10, "order_id": "o-1", "reason": "x"}))
    .fetch_one(t.pool())
    .await
    .unwrap();
    let conf: f32 = sqlx::query_scalar("SELECT confidence FROM backstop.actions WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert!((conf - 0.93).abs() < 1e-6);
}

/// The small traps: a float amount is accepted and must agree with the value
/// the params carry; a bare-string result is a result; an inverse parameter
/// only the agent knows is reported unbound when the agent does not pass it.
#[tokio::test]
async fn amounts_results_and_agent_bindings() {
    let t = TestDb::new().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/customer-service");
    backstop::demo::script::load_config(t.pool(), &dir.join("tools.toml"), &dir.join("policy.toml"))
        .await
        .unwrap();
    let params = json!({"order_id": "o-1", "customer_id": "c-1", "fee": 12.5});
    let (id, verdict): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT action_id, verdict FROM backstop.propose('fees-bot', 'charge_fee', $1, amount => 12.5::float8)",
    )
    .bind(&params)
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(verdict, "allow");
    let amount: rust_decimal::Decimal = sqlx::query_scalar("SELECT amount FROM backstop.actions WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(amount.to_string(), "12.5");
    // The agent's word against its own params: refused, nothing appended.
    let before = t.log_len().await;
    let e = sqlx::query("SELECT * FROM backstop.propose('fees-bot', 'charge_fee', $1, amount => 1.0::float8)")
        .bind(&params)
        .execute(t.pool())
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "22023", "{e}");
    assert!(e.to_string().contains("disagrees"), "{e}");
    assert_eq!(t.log_len().await, before);
    // A required value comes from the call: the agent's amount alone is its word.
    let (verdict, reason): (String, String) =
        sqlx::query_as("SELECT verdict, reason FROM backstop.propose('fees-bot', 'charge_fee', $1, amount => 5)")
            .bind(json!({"order_id": "o-1", "customer_id": "c-1"}))
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(verdict, "block", "{reason}");
    assert!(reason.contains("value is required"), "{reason}");
    // A tool that returns a bare string.
    let (status, comp): (String, String) =
        sqlx::query_as("SELECT * FROM backstop.record_result($1, true, '\"ch-9\"'::jsonb)")
            .bind(id)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(status, "executed");
    assert_eq!(
        comp, "unbound: charge_id",
        "result.charge_id of a bare string binds nothing"
    );
    // modify_address's old address comes from the agent, or the undo is unbound.
    let addr = json!({"order_id": "o-2", "customer_id": "c-2", "address": "2 New Road"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id: uuid::Uuid =
            sqlx::query_scalar("SELECT action_id FROM backstop.propose('orders-bot', 'modify_address', $1)")
                .bind(&addr)
                .fetch_one(t.pool())
                .await
                .unwrap();
        ids.push(id);
    }
    let (_, comp): (String, String) = sqlx::query_as("SELECT * FROM backstop.record_result($1, true, '{}')")
        .bind(ids[0])
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(comp, "unbound: address");
    let (_, comp): (String, String) = sqlx::query_as(
        "SELECT * FROM backstop.record_result($1, true, '{}', '{\"previous_address\": \"2 Old Road\"}')",
    )
    .bind(ids[1])
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(comp, "staged");
    let inv: serde_json::Value = sqlx::query_scalar("SELECT inverse_params FROM backstop.actions WHERE action_id = $1")
        .bind(ids[1])
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(inv, json!({"order_id": "o-2", "address": "2 Old Road"}));
    // depends_on names known actions only; a bad one changes nothing.
    let before = t.log_len().await;
    let e = sqlx::query("SELECT * FROM backstop.propose('orders-bot', 'modify_address', $1, depends_on => $2)")
        .bind(&addr)
        .bind(vec![ids[0], uuid::Uuid::new_v4()])
        .execute(t.pool())
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "P0002", "{e}");
    let many: Vec<uuid::Uuid> = (0..101).map(|_| ids[0]).collect();
    let e = sqlx::query("SELECT * FROM backstop.propose('orders-bot', 'modify_address', $1, depends_on => $2)")
        .bind(&addr)
        .bind(many)
        .execute(t.pool())
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "22023", "{e}");
    assert_eq!(t.log_len().await, before);
}

/// What the registry refuses about values, classes by value, agent bindings
/// and webhooks, each with the key and a way out.
#[test]
fn the_registry_names_what_is_wrong_with_new_declarations() {
    let bad = r#"
[tools.refund]
class = "irreversible"
params = ["items", "to"]
value = "items[.price"
value_required = true
direction = "sideways"
class_by = { param = "to", values = { card = "reversible", gift = "read" } }

[tools.move]
class = "reversible"
params = ["id"]
inverse = "unmove"
bind = { id = "params.id", where = "agent." }

[tools.unmove]
class = "irreversible"
params = ["id", "where"]
executor = { kind = "webhook", url = "env:1BAD" }

[tools.log_it]
class = "irreversible"
executor = { kind = "webhook", url = "https://backoffice.example/undo", headers = { Authorization = "Bearer literal" } }
"#;
    let issues = backstop::registry::parse("tools.toml", bad).unwrap_err();
    let text: Vec<String> = issues.iter().map(|i| format!("{}: {}", i.key, i.message)).collect();
    let has = |key: &str, words: &str| {
        assert!(
            text.iter().any(|t| t.starts_with(key) && t.contains(words)),
            "no {key} … {words} in {text:#?}"
        )
    };
    has("tools.refund.value", "not a value expression");
    has("tools.refund.direction", "\"out\"");
    has("tools.refund.class_by.values.card", "needs an inverse");
    has(
        "tools.refund.class_by.values.gift",
        "reversible, conditional or irreversible",
    );
    has("tools.move.bind.where", "names no field");
    has("tools.unmove.executor.url", "env:NAME");
    has("tools.log_it.executor.headers.Authorization", "environment");
    let good = r#"
[tools.refund]
class = "reversible"
params = ["items", "to", "shipping"]
value = "items[].price + shipping"
value_required = true
direction = "out"
class_by = { param = "to", values = { card = "reversible", gift = "irreversible" } }
inverse = "unrefund"
bind = { id = "result.id", note = "agent.note" }

[tools.unrefund]
class = "irreversible"
params = ["id", "note"]
executor = { kind = "webhook", url = "env:BACKOFFICE_URL", headers = { Authorization = "env:TOKEN", X-Team = "support" } }
"#;
    let reg = backstop::registry::parse("tools.toml", good).unwrap();
    let t = reg.tool("refund").unwrap();
    assert!(t.value_required && t.direction.as_deref() == Some("out"));
    assert_eq!(t.class_param.as_deref(), Some("to"));
}

/// What goes wrong connecting is said once, in plain words, with its cause.
#[test]
fn connection_errors_say_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = common::url_for("backstop_nosuch_database_here");
    for (url, want) in [
        // Nothing listens on port 1: refused at once, not a pool timing out.
        ("postgres://postgres@127.0.0.1:1/x", "connection refused"),
        (
            missing.as_str(),
            "database \"backstop_nosuch_database_here\" does not exist",
        ),
        ("not a url", "is not a valid database URL"),
        ("postgres://a:b@host:notaport/db", "invalid port number"),
    ] {
        let o = backstop(dir.path(), Some(url), &["log", "--limit", "1"]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{url}");
        assert_eq!(err.matches(want).count(), 1, "{url}: said once: {err}");
        assert!(!err.contains("pool timed out"), "{url}: {err}");
        assert_eq!(err.lines().count(), 1, "{url}: {err}");
    }
}

/// A `backstop log --follow` child, killed however the test ends, so no
/// follower outlives it.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `backstop log --follow`: one header, and columns that stay where they are
/// while rows of other widths arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_keeps_one_header_and_its_columns() {
    use std::io::{BufRead, BufReader};
    let t = TestDb::new().await;
    t.load_assets().await;
    let propose = |agent: &'static str| {
        let pool = t.pool().clone();
        async move {
            backstop::contract::propose(
                &pool,
                &backstop::contract::Proposal {
                    agent: agent.into(),
                    tool: "lookup_customer".into(),
                    params: json!({"customer_id": "c-1"}),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
    };
    propose("a").await;
    let mut child = Follower(
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(["log", "--follow", "--limit", "5"])
            .env("DATABASE_URL", &t.url)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |what: &str, lines: &mut Vec<String>| {
        while !lines.iter().any(|l: &String| l.contains(what)) {
            let l = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{what} did not arrive: {lines:?}"));
            lines.push(l);
        }
    };
    wait_for(" a ", &mut lines);
    // Batches whose cells are wider than the first one's.
    propose("a-much-longer-agent-name-than-before").await;
    // Cut to its column with an ellipsis.
    wait_for("a-much-longer-a…", &mut lines);
    propose("mid-sized-agent").await;
    wait_for("mid-sized-agent", &mut lines);
    drop(child);
    assert_eq!(lines.iter().filter(|l| l.starts_with("seq ")).count(), 1, "{lines:#?}");
    // Every line's event column starts where the header's does.
    let col = lines[0].find("event").unwrap();
    for l in &lines[1..] {
        let at = l.char_indices().nth(col).map(|(i, _)| i).unwrap_or(l.len());
        assert!(
            l[..at].ends_with("  ") && !l[at..].starts_with(' '),
            "the event column moved:\n{}\n{l}",
            lines[0]
        );
    }
}

/// `backstop log --follow` as a viewer's login: a dropped connection is said
/// once and mended (the rows written meanwhile arrive, none twice); a duty
/// taken away ends it with the refusal, not a retry every 200 ms forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_rides_out_a_lost_connection_and_stops_on_a_refusal() {
    use std::io::{BufRead, BufReader};
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = common::Logins::new(&t);
    let viewer_pool = logins.login(&t, "follow_viewer", Some("viewer")).await;
    let login = common::Logins::name("follow_viewer");
    let propose = |customer: &'static str| {
        let pool = t.pool().clone();
        async move {
            backstop::contract::propose(
                &pool,
                &backstop::contract::Proposal {
                    agent: "refund-bot".into(),
                    tool: "lookup_customer".into(),
                    params: json!({"customer_id": customer}),
                    correlation_id: Some(customer.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
    };
    let mut child = Follower(
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(["log", "--follow", "--limit", "1", "--json"])
            .env("DATABASE_URL", common::login_url(&t.url, &login))
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    for (is_err, pipe) in [
        (
            false,
            Box::new(child.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ),
        (true, Box::new(child.0.stderr.take().unwrap())),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send((is_err, l)).is_err() {
                    return;
                }
            }
        });
    }
    let mut seen: Vec<(bool, String)> = Vec::new();
    let wait_for = |what: &str, seen: &mut Vec<(bool, String)>| {
        while !seen.iter().any(|(_, l)| l.contains(what)) {
            let l = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{what} did not arrive: {seen:#?}"));
            seen.push(l);
        }
    };
    propose("c-before").await;
    wait_for("c-before", &mut seen);

    // The follower's connections are cut, twice over, with a row written
    // between: it is read once the follower is back.
    let cut = || async {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(&login)
            .execute(t.pool())
            .await
            .unwrap();
    };
    cut().await;
    propose("c-during").await;
    cut().await;
    propose("c-after").await;
    wait_for("c-after", &mut seen);
    let count = |what: &str, seen: &[(bool, String)]| seen.iter().filter(|(_, l)| l.contains(what)).count();
    assert_eq!(count("c-during", &seen), 1, "{seen:#?}");
    assert_eq!(count("c-after", &seen), 1, "{seen:#?}");
    let said: Vec<&String> = seen.iter().filter(|(e, _)| *e).map(|(_, l)| l).collect();
    assert!(
        said.len() <= 4,
        "a lost connection is said once per loss, not per poll: {said:#?}"
    );

    // The duty taken away: the follower stops, saying why.
    sqlx::query(sqlx::AssertSqlSafe(format!("REVOKE backstop_viewer FROM \"{login}\"")))
        .execute(t.pool())
        .await
        .unwrap();
    cut().await;
    let status = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still following after its duty went: {seen:#?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    assert!(!status.success());
    while let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(2)) {
        seen.push(l);
    }
    let said: Vec<&String> = seen.iter().filter(|(e, _)| *e).map(|(_, l)| l).collect();
    assert!(
        said.iter()
            .any(|l| l.contains("stopped") && l.contains("permission denied")),
        "{said:#?}"
    );
    drop(child);
    logins.drop_all(vec![viewer_pool]).await;
}

/// `backstop approve ID` from a notification is where most approvals come
/// from: it says what it approves and runs the policy's checks first, as the
/// room's card does. A check that fails stops it with nothing changed; going
/// over it takes a flag, and the log's note names the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_approval_runs_the_checks_first_and_names_a_failing_one() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let held = t.hold_refund_over_its_order().await;
    assert_eq!(held.verdict, backstop::contract::Verdict::Hold);
    let id = held.action_id.to_string();
    let mut logins = common::Logins::new(&t);
    let ana = logins.login(&t, "cli_ana", Some("approver")).await;
    let url = common::login_url(&t.url, &common::Logins::name("cli_ana"));
    let dir = tempfile::tempdir().unwrap();
    let approvals = || t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'approved'");

    let o = backstop(dir.path(), Some(&url), &["approve", &id, "--note", "looks fine"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "approved over a failing check: {e}");
    assert!(
        e.contains("refund_within_order_total") && e.contains("572") && e.contains("Nothing changed"),
        "{e}"
    );
    assert!(
        e.contains("issue_refund of 47000 by refund-bot-2"),
        "says what it would approve: {e}"
    );
    assert_eq!(approvals().await, 0);

    let o = backstop(
        dir.path(),
        Some(&url),
        &["approve", &id, "--note", "customer escalation", "--over-failing-checks"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("refund_within_order_total") && out.contains("approved over it"),
        "{out}"
    );
    assert!(out.contains("still needs 1 more approval"), "{out}");
    let note: String = sqlx::query_scalar("SELECT detail ->> 'note' FROM backstop.action_log WHERE kind = 'approved'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(
        note,
        "customer escalation [approved over failing checks: refund_within_order_total]"
    );

    // Not held: refused, and says so.
    let o = backstop(dir.path(), Some(&url), &["approve", &uuid::Uuid::new_v4().to_string()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing was approved"), "{}", stderr(&o));
    logins.drop_all(vec![ana]).await;
}
