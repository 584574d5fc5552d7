//! Notifications: a real HTTP listener receives what `[notify]` routes to
//! it from real supervisor processes, once each, through failures and a
//! restart; deliveries and final failures are in the log, secrets are not.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use backstop::{policy, registry};
use common::TestDb;
use serde_json::{Value, json};

/// What the listener saw: per (path, event) the attempts, and the bodies it accepted.
#[derive(Default)]
struct Seen {
    attempts: BTreeMap<(String, String), u32>,
    accepted: Vec<(String, String, Value)>,
}

type Shared = Arc<Mutex<Seen>>;

/// Fails the first two attempts of every event, accepts the third and later.
async fn hook(
    State(seen): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> StatusCode {
    let event = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut s = seen.lock().unwrap();
    let n = s.attempts.entry((path.clone(), event.clone())).or_insert(0);
    *n += 1;
    if *n <= 2 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    s.accepted.push((path, event, body.0));
    StatusCode::OK
}

async fn listener() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/hook/{path}", axum::routing::post(hook))
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn assets() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo")
}

const NOTIFY: &str = r#"
[notify]
max_attempts = 5
backoff = "50ms"

[[notify.targets]]
name = "approvers"
url = "env:TEST_HOOK_JSON"
format = "json"
holds_above = 500
findings = "critical"
pauses = true

[[notify.targets]]
name = "chat"
url = "env:TEST_HOOK_SLACK"
format = "slack"
holds_above = 0
"#;

async fn setup(notify: &str) -> TestDb {
    let t = TestDb::new().await;
    let reg = registry::read(&assets().join("tools.toml")).unwrap();
    registry::sync(t.pool(), &reg, "test").await.unwrap();
    let text = std::fs::read_to_string(assets().join("policy.toml")).unwrap() + notify;
    let pol = policy::parse("policy.toml", &text, Some(&reg)).unwrap_or_else(|e| panic!("{e:?}"));
    policy::sync(t.pool(), &pol, "test").await.unwrap();
    t
}

struct Sup(Child);

impl Sup {
    fn start(t: &TestDb, name: &str, env: &[(&str, String)]) -> Sup {
        let mut c = Command::new(env!("CARGO_BIN_EXE_backstop"));
        c.args(["supervise", "--no-watch", "--name", name])
            .env("DATABASE_URL", &t.url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start supervise");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("running on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("the supervisor starts");
        Sup(child)
    }

    /// Ctrl-C, as an operator stops it: what it sent is recorded before it exits.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let st = self.0.wait().unwrap();
        assert!(st.success(), "{st}");
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(t: &TestDb, sql: &str, want: i64) {
    let t0 = Instant::now();
    loop {
        let n = t.count(sql).await;
        if n == want {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{sql}: {n}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hold_a_critical_finding_and_a_pause_arrive_once_each_across_failures_and_a_restart() {
    let t = setup(NOTIFY).await;
    let (base, seen) = listener().await;
    let env = [
        ("TEST_HOOK_JSON", format!("{base}/json")),
        ("TEST_HOOK_SLACK", format!("{base}/slack")),
    ];

    // A hold, delivered by the first supervisor (to both targets).
    let hold: (uuid::Uuid, String) = sqlx::query_as(
        "SELECT action_id, verdict FROM backstop.propose('payer-bot', 'pay_supplier',
             jsonb_build_object('payee', 'acme', 'iban', 'DE00', 'amount', 47000, 'invoice_id', 'inv-1'),
             confidence => 0.62, reasoning => 'the invoice is overdue and the supplier threatened to stop deliveries')",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(hold.1, "hold");
    let a = Sup::start(&t, "sup-a", &env);
    wait_for(
        &t,
        "SELECT count(*) FROM backstop.action_log WHERE kind = 'notification_sent'",
        2,
    )
    .await;
    a.stop();

    // While no supervisor runs: a critical finding, a lesser one nobody
    // routes, and a pause. They wait in the outbox.
    sqlx::raw_sql(
        "SELECT backstop.raise_finding('complaint_spike', 'critical', 'payer-bot', NULL, '{\"rule\": \"complaint_spike\"}');
         SELECT backstop.raise_finding('drift', 'medium', 'payer-bot', NULL, '{\"rule\": \"drift\"}');
         SELECT backstop.raise_finding('complaint_spike', 'critical', 'payer-bot', NULL, '{\"rule\": \"complaint_spike\"}');
         SELECT backstop.pause('fleet', NULL, 'incident 42: refunds look wrong');",
    )
    .execute(t.pool())
    .await
    .unwrap();
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.notify_outbox WHERE status = 'pending'")
            .await,
        2
    );

    let b = Sup::start(&t, "sup-b", &env);
    wait_for(
        &t,
        "SELECT count(*) FROM backstop.action_log WHERE kind = 'notification_sent'",
        4,
    )
    .await;
    b.stop();

    let (accepted, attempts) = {
        let s = seen.lock().unwrap();
        (s.accepted.clone(), s.attempts.clone())
    };
    // Exactly once each: one accepted body per target and event, after two refusals.
    let mut got: Vec<(String, String)> = accepted.iter().map(|(p, e, _)| (p.clone(), e.clone())).collect();
    got.sort();
    let finding_id: String = sqlx::query_scalar("SELECT event FROM backstop.notify_outbox WHERE kind = 'finding'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    let paused_event: String = sqlx::query_scalar("SELECT event FROM backstop.notify_outbox WHERE kind = 'pause'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    let hold_event = format!("hold:{}", hold.0);
    let mut want = vec![
        ("json".to_string(), hold_event.clone()),
        ("slack".to_string(), hold_event.clone()),
        ("json".to_string(), finding_id.clone()),
        ("json".to_string(), paused_event.clone()),
    ];
    want.sort();
    assert_eq!(got, want);
    for (k, n) in &attempts {
        assert_eq!(*n, 3, "{k:?}");
    }

    // The hold's message: what an approver needs, and the exact commands.
    let body = &accepted
        .iter()
        .find(|(p, e, _)| p == "json" && *e == hold_event)
        .unwrap()
        .2;
    let text = body["text"].as_str().unwrap();
    let id = hold.0.to_string();
    let (rule, reason): (String, String) =
        sqlx::query_as("SELECT rule, reason FROM backstop.actions WHERE action_id = $1")
            .bind(hold.0)
            .fetch_one(t.pool())
            .await
            .unwrap();
    for needle in [
        "payer-bot",
        "pay_supplier",
        "47000",
        "the invoice is overdue",
        &rule,
        &reason,
        "confidence 0.62",
        "Expires:",
        &format!("backstop approve {id}"),
        &format!("backstop reject {id}"),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert_eq!(body["commands"]["approve"], json!(format!("backstop approve {id}")));
    assert_eq!(body["data"]["agent"], json!("payer-bot"));
    let slack = &accepted.iter().find(|(p, _, _)| p == "slack").unwrap().2;
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains(&format!("`backstop approve {id}`")),
        "{slack}"
    );
    let pause = &accepted.iter().find(|(_, e, _)| *e == paused_event).unwrap().2;
    assert!(
        pause["text"].as_str().unwrap().contains("PAUSED: the whole fleet"),
        "{pause}"
    );
    assert!(pause["text"].as_str().unwrap().contains("incident 42"), "{pause}");

    // Each delivery is in the log; nothing failed; no URL anywhere in it.
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'notification_failed'")
            .await,
        0
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE kind = 'notification_sent' AND action_id = '{id}'"
        ))
        .await,
        2
    );
    let port = base.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log l WHERE to_jsonb(l)::text LIKE '%127.0.0.1:{port}%'"
        ))
        .await,
        0
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.notify_outbox WHERE status <> 'delivered'")
            .await,
        0
    );
    // The deliveries' log rows leave every projection equal to its rebuild.
    assert_eq!(t.count("SELECT count(*) FROM backstop.projection_diffs()").await, 0);
}

#[tokio::test]
async fn a_target_that_never_answers_is_a_final_failure_in_the_log() {
    let t = setup(
        r#"
[notify]
max_attempts = 2
backoff = "10ms"

[[notify.targets]]
name = "ops"
url = "env:TEST_HOOK_DEAD"
pauses = true
"#,
    )
    .await;
    // A port nothing listens on: bound, then closed.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/hook", l.local_addr().unwrap());
    drop(l);
    contract_pause(&t).await;
    let s = Sup::start(&t, "sup-x", &[("TEST_HOOK_DEAD", dead.clone())]);
    wait_for(
        &t,
        "SELECT count(*) FROM backstop.action_log WHERE kind = 'notification_failed'",
        1,
    )
    .await;
    s.stop();
    let detail: Value = sqlx::query_scalar("SELECT detail FROM backstop.action_log WHERE kind = 'notification_failed'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(detail["attempts"], json!(2));
    assert_eq!(detail["target"], json!("ops"));
    assert!(!detail.to_string().contains(&dead), "{detail}");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.notify_outbox WHERE status = 'failed'")
            .await,
        1
    );
}

async fn contract_pause(t: &TestDb) {
    sqlx::query("SELECT backstop.pause('agent', 'payer-bot', 'drill')")
        .execute(t.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_broken_route_never_fails_the_contract_call() {
    let t = setup("").await;
    // A policy document whose route cannot be read (a load_policy caller
    // that is not this binary): the hold still goes through, unannounced.
    let doc: Value = sqlx::query_scalar(
        "SELECT p.doc FROM backstop.active a JOIN backstop.policy_versions p ON p.version = a.policy_version",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    let mut doc = doc;
    doc["notify"] = json!({"targets": [{"name": "x", "url_env": "X", "format": "json", "holds_above": "lots"}]});
    sqlx::query("SELECT * FROM backstop.load_policy($1, encode(sha256('broken-route'::bytea), 'hex'), 'test')")
        .bind(&doc)
        .execute(t.pool())
        .await
        .unwrap();
    let v: String = sqlx::query_scalar(
        "SELECT verdict FROM backstop.propose('payer-bot', 'pay_supplier',
             jsonb_build_object('payee', 'acme', 'iban', 'DE00', 'amount', 900, 'invoice_id', 'inv-9'))",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(v, "hold");
    assert_eq!(t.count("SELECT count(*) FROM backstop.notify_outbox").await, 0);
}

#[test]
fn a_webhook_url_in_the_file_is_refused_and_names_the_fix() {
    let reg = registry::read(&assets().join("tools.toml")).unwrap();
    let base = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    let bad = format!(
        "{base}\n[notify]\n[[notify.targets]]\nname = \"chat\"\nurl = \"https://hooks.example.com/T000/B000/XXXX\"\nholds_above = 0\n"
    );
    let issues = policy::parse("policy.toml", &bad, Some(&reg)).unwrap_err();
    let all = issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n");
    assert!(all.contains("env:NAME"), "{all}");
    let nothing = format!("{base}\n[notify]\n[[notify.targets]]\nname = \"chat\"\nurl = \"env:HOOK\"\n");
    let issues = policy::parse("policy.toml", &nothing, Some(&reg)).unwrap_err();
    assert!(issues.iter().any(|i| i.to_string().contains("receives something")));
    let sev =
        format!("{base}\n[notify]\n[[notify.targets]]\nname = \"chat\"\nurl = \"env:HOOK\"\nfindings = \"critcal\"\n");
    let issues = policy::parse("policy.toml", &sev, Some(&reg)).unwrap_err();
    assert!(issues.iter().any(|i| i.to_string().contains("critical")));
    // A policy without [notify] loads the document it always did.
    let plain = policy::parse("policy.toml", &base, Some(&reg)).unwrap();
    assert!(plain.doc().get("notify").is_none());
}

#[tokio::test]
async fn each_route_takes_only_what_it_names() {
    let t = setup(
        r#"
[notify]
[[notify.targets]]
name = "big-holds"
url = "env:A"
holds_above = 5000

[[notify.targets]]
name = "high-findings"
url = "env:B"
findings = "high"

[[notify.targets]]
name = "ops"
url = "env:C"
format = "slack"
pauses = true
compensation_failures = true
drills = true
"#,
    )
    .await;
    sqlx::raw_sql(
        "SELECT backstop.propose('payer-bot', 'pay_supplier',
             jsonb_build_object('payee', 'acme', 'iban', 'DE00', 'amount', 900, 'invoice_id', 'inv-small'));
         SELECT backstop.propose('payer-bot', 'pay_supplier',
             jsonb_build_object('payee', 'acme', 'iban', 'DE00', 'amount', 9000, 'invoice_id', 'inv-big'));
         SELECT backstop.raise_finding('drift', 'medium', 'payer-bot', NULL, '{\"rule\": \"m\"}');
         SELECT backstop.raise_finding('drift', 'high', 'other-bot', NULL, '{\"rule\": \"h\"}');
         SELECT backstop.pause('tool', 'pay_supplier', 'checking');
         SELECT backstop.resume('tool', 'pay_supplier', 'checked');
         SELECT backstop.record_drill('{\"drill_id\": \"d-1\", \"agent\": \"drill-bot\", \"attempted\": 3, \"blocked\": 1, \"score\": {}}');",
    )
    .execute(t.pool())
    .await
    .unwrap();
    // A compensation that ends in a conflict: a final failure.
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT action_id FROM backstop.propose('credit-bot', 'issue_credit',
             jsonb_build_object('customer_id', 'c-1', 'amount', 5), confidence => 0.99)",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    sqlx::query("SELECT backstop.record_result($1, true, '{\"credit_id\": \"cr-1\"}')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query("SELECT backstop.request_compensation(ARRAY[$1]::uuid[], 'test')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM backstop.claim_compensations('w-1')")
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query("SELECT backstop.finish_compensation($1, 'w-1', false, '{\"outcome\": \"conflict\"}')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();

    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT target, kind, format FROM backstop.notify_outbox ORDER BY target, kind")
            .fetch_all(t.pool())
            .await
            .unwrap();
    let got: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("big-holds", "hold"),
            // The high finding, and the one the failed compensation raised (high).
            ("high-findings", "finding"),
            ("high-findings", "finding"),
            ("ops", "compensation_failed"),
            ("ops", "drill"),
            ("ops", "pause"),
            ("ops", "resume"),
        ],
        "{rows:?}"
    );
    assert!(rows.iter().filter(|r| r.0 == "ops").all(|r| r.2 == "slack"));
    let big: Value = sqlx::query_scalar("SELECT payload FROM backstop.notify_outbox WHERE kind = 'hold'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(big["amount"], json!(9000));
    let drill: Value = sqlx::query_scalar("SELECT payload FROM backstop.notify_outbox WHERE kind = 'drill'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    let text = backstop::notify::text("drill", &drill, "");
    assert!(text.contains("d-1") && text.contains("3 attempted"), "{text}");
}

#[tokio::test]
async fn only_supervisors_deliver_and_only_the_claimant_reports() {
    let t = setup(NOTIFY).await;
    sqlx::query("SELECT backstop.pause('fleet', NULL, 'roles test')")
        .execute(t.pool())
        .await
        .unwrap();
    let mut logins = common::Logins::new(&t);
    let sup_a = logins.login(&t, "nsup_a", Some("supervisor")).await;
    let sup_b = logins.login(&t, "nsup_b", Some("supervisor")).await;
    let worker = logins.login(&t, "nworker", Some("worker")).await;
    let agent = logins.login(&t, "nagent", Some("agent")).await;
    let viewer = logins.login(&t, "nviewer", Some("viewer")).await;
    for p in [&worker, &agent, &viewer] {
        let e = sqlx::query("SELECT * FROM backstop.claim_notifications('x')")
            .execute(p)
            .await
            .unwrap_err();
        assert_eq!(common::code(&e), "42501", "{e}");
    }
    let claimed: Vec<(String, String)> = sqlx::query_as("SELECT event, target FROM backstop.claim_notifications('a')")
        .fetch_all(&sup_a)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let (event, target) = &claimed[0];
    // Another supervisor neither gets it again nor may report on it.
    let again: Vec<(String, String)> = sqlx::query_as("SELECT event, target FROM backstop.claim_notifications('b')")
        .fetch_all(&sup_b)
        .await
        .unwrap();
    assert!(again.is_empty());
    let e = sqlx::query("SELECT backstop.finish_notification($1, $2, 'a', true)")
        .bind(event)
        .bind(target)
        .execute(&sup_b)
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "55000", "{e}");
    let st: String = sqlx::query_scalar("SELECT backstop.finish_notification($1, $2, 'a', true)")
        .bind(event)
        .bind(target)
        .fetch_one(&sup_a)
        .await
        .unwrap();
    assert_eq!(st, "delivered");
    let by: String = sqlx::query_scalar("SELECT actor FROM backstop.action_log WHERE kind = 'notification_sent'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(by, common::Logins::name("nsup_a"));
    // The figures: the duties that watch, not agents.
    for p in [&sup_a, &worker, &viewer] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.metrics()")
            .fetch_one(p)
            .await
            .unwrap();
        assert!(n > 0);
    }
    let e = sqlx::query("SELECT count(*) FROM backstop.metrics()")
        .execute(&agent)
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "42501", "{e}");
    logins.drop_all(vec![sup_a, sup_b, worker, agent, viewer]).await;
}
