//! The supervisor: deterministic sampling, delayed review, automatic actions
//! taken once, drift, complaint spikes, and several supervisors (one killed)
//! doing the work of one.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backstop::contract::{self, Proposal, Scope, Verdict};
use backstop::policy::{self, SupervisorSettings};
use backstop::registry;
use backstop::supervisor::{self, SupervisorStats, review};
use common::{Logins, TestDb};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn assets() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo")
}

/// The shipped registry and policy, with the supervisor's settings made fast.
fn test_policy(extra_supervisor: &str) -> String {
    let shipped = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    let cut = shipped.find("[supervisor]").unwrap();
    let tail = &shipped[cut..];
    // Keep [supervisor.checks] and [supervisor.actions] and everything after.
    let keep = tail.find("# After-the-fact checks").map(|i| &tail[i..]).unwrap_or("");
    format!(
        "{}[supervisor]\nreview_delay = \"2s\"\nsample_rate = 0.08\nlease = \"2s\"\n{extra_supervisor}\n{keep}",
        &shipped[..cut]
    )
}

async fn setup(policy_text: &str) -> (TestDb, SupervisorSettings) {
    let t = TestDb::new().await;
    let reg = registry::read(&assets().join("tools.toml")).unwrap();
    registry::sync(t.pool(), &reg, "test").await.unwrap();
    let pol = policy::parse("test-policy.toml", policy_text, Some(&reg)).unwrap_or_else(|e| panic!("{e:?}"));
    policy::sync(t.pool(), &pol, "test").await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO crm.customers (customer_id, name, email) SELECT 'c-' || i, 'x', 'x@y' FROM generate_series(1, 50) i;
         INSERT INTO payments.orders (order_id, customer_id, total) SELECT 'o-' || i, 'c-' || i, 500 FROM generate_series(1, 50) i;",
    )
    .execute(t.pool())
    .await
    .unwrap();
    let (_, s) = policy::active_supervisor(t.pool()).await.unwrap();
    (t, s)
}

async fn executed(pool: &PgPool, agent: &str, tool: &str, params: Value, confidence: f32) -> Uuid {
    let d = contract::propose(
        pool,
        &Proposal {
            agent: agent.into(),
            tool: tool.into(),
            params,
            confidence: Some(confidence),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    contract::record_result(
        pool,
        d.action_id,
        true,
        Some(&json!({"refund_id": format!("rf-{}", d.action_id), "email_id": 1})),
        None,
    )
    .await
    .unwrap();
    d.action_id
}

async fn follow_all(pool: &PgPool, s: &SupervisorSettings, stats: &mut SupervisorStats) {
    while supervisor::tail_step(pool, s, 5000, stats).await.unwrap() == Some(5000) {}
}

/// The supervisor's own connections: its decisions are recorded as `supervisor`.
async fn sup(t: &TestDb) -> PgPool {
    t.as_operator("supervisor").await
}

#[tokio::test]
async fn sampling_is_deterministic_near_the_rate_and_risky_actions_are_always_reviewed() {
    let (t, s) = setup(&test_policy("")).await;
    sqlx::query(
        "DO $$ DECLARE a uuid; BEGIN FOR i IN 1 .. 3000 LOOP
           SELECT action_id INTO a FROM backstop.propose('bulk-bot-' || (i % 30), 'issue_credit', jsonb_build_object('customer_id', 'c-1', 'amount', 1), confidence => 0.99);
           PERFORM backstop.record_result(a, true, jsonb_build_object('credit_id', 'cr-' || i));
         END LOOP; END $$",
    )
    .execute(t.pool())
    .await
    .unwrap();
    let mut risky = Vec::new();
    for i in 0..20 {
        risky.push(
            executed(
                t.pool(),
                "mail-bot",
                "send_email",
                json!({"customer_id": format!("c-{i}"), "to": "a@b", "subject": "s"}),
                0.99,
            )
            .await,
        );
    }
    let mut stats = SupervisorStats::default();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    let sampled = t
        .count("SELECT count(*) FROM backstop.reviews WHERE reason = 'sampled'")
        .await;
    // 8% of 3000 is 240; the binomial standard deviation is about 15.
    assert!((180..=300).contains(&sampled), "{sampled} sampled of 3000 at 8%");
    let risky_reviewed = t
        .count(&format!(
            "SELECT count(*) FROM backstop.reviews WHERE reason LIKE 'risky%' AND action_id IN ({})",
            risky.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(",")
        ))
        .await;
    assert_eq!(risky_reviewed, 20, "every irreversible action is reviewed");
    // Deterministic: the same answer from a fresh evaluation of every action.
    let disagree = t
        .count(
            "SELECT count(*) FROM backstop.actions a LEFT JOIN backstop.reviews r USING (action_id)
              WHERE a.status = 'executed' AND (r.action_id IS NOT NULL) <> (backstop.review_reason(a, 0.08, ARRAY['irreversible'], 5000, 0.7) IS NOT NULL)",
        )
        .await;
    assert_eq!(disagree, 0);
    // Following the log again schedules nothing twice.
    let before = t.count("SELECT count(*) FROM backstop.reviews").await;
    follow_all(&sup(&t).await, &s, &mut stats).await;
    assert_eq!(t.count("SELECT count(*) FROM backstop.reviews").await, before);
}

#[tokio::test]
async fn a_planted_violation_is_found_after_the_delay_and_acted_on_once() {
    let (t, s) = setup(&test_policy("")).await;
    // A refund of $900 on an order worth $500: allowed by the pre-action rules,
    // caught by the review's check, compensated automatically.
    let bad = executed(
        t.pool(),
        "refund-bot",
        "issue_refund",
        json!({"customer_id": "c-7", "amount": 900, "order_id": "o-7"}),
        0.5,
    )
    .await;
    let fine = executed(
        t.pool(),
        "refund-bot",
        "issue_refund",
        json!({"customer_id": "c-8", "amount": 90, "order_id": "o-8"}),
        0.99,
    )
    .await;
    let mut stats = SupervisorStats::default();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    assert!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.reviews WHERE action_id = '{bad}'"
        ))
        .await
            == 1
    );
    // Before the delay: nothing is reviewed.
    assert_eq!(
        review::review_step(&sup(&t).await, &s, "sup-1", 50, &mut stats)
            .await
            .unwrap(),
        0
    );
    assert_eq!(t.count("SELECT count(*) FROM backstop.findings").await, 0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reviewed = review::review_step(&sup(&t).await, &s, "sup-1", 50, &mut stats)
        .await
        .unwrap();
    assert!(reviewed >= 1);
    let (kind, rule, detail): (String, String, Value) = sqlx::query_as(
        "SELECT kind, rule, detail FROM backstop.findings WHERE action_id = $1 AND kind = 'policy_violation'",
    )
    .bind(bad)
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), rule.as_str()),
        ("policy_violation", "refund_within_order_total")
    );
    assert!(
        detail["violation"]
            .as_str()
            .unwrap()
            .contains("more than order o-7 was worth"),
        "{detail}"
    );
    // The configured action (compensate) happened, once, by the supervisor, naming the finding.
    let requests: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, detail ->> 'reason' FROM backstop.action_log WHERE kind = 'compensation_requested' AND action_id = $1",
    )
    .bind(bad)
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, "supervisor");
    assert!(requests[0].1.contains("policy_violation finding"), "{}", requests[0].1);
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.compensations WHERE action_id = '{fine}'"
        ))
        .await,
        0
    );
    // Running again changes nothing.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    review::review_step(&sup(&t).await, &s, "sup-1", 50, &mut stats)
        .await
        .unwrap();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'compensation_requested'")
            .await,
        1
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE kind = 'policy_violation'")
            .await,
        1
    );
    // A review that finds nothing is recorded too.
    assert!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'reviewed'")
            .await
            >= 1
    );
}

#[tokio::test]
async fn a_policy_change_after_the_fact_is_a_violation() {
    let (t, s) = setup(&test_policy("")).await;
    let id = executed(
        t.pool(),
        "refund-bot",
        "issue_refund",
        json!({"customer_id": "c-9", "amount": 10, "order_id": "o-9"}),
        0.99,
    )
    .await;
    // The customer turns out to be churned: the policy in force now blocks such a refund.
    sqlx::query("INSERT INTO crm.suppression_list VALUES ('c-9', 'churned')")
        .execute(t.pool())
        .await
        .unwrap();
    let mut stats = SupervisorStats::default();
    sqlx::query("INSERT INTO backstop.reviews (action_id, agent, tool, due_at, reason) VALUES ($1, 'refund-bot', 'issue_refund', now(), 'sampled')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();
    review::review_step(&sup(&t).await, &s, "sup", 10, &mut stats)
        .await
        .unwrap();
    let rule: String = sqlx::query_scalar("SELECT rule FROM backstop.findings WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(rule, "policy:suppressed_customers");
}

#[tokio::test]
async fn a_shifted_agent_is_flagged_and_steady_ones_are_not() {
    let extra =
        "[supervisor.drift]\nbaseline = \"4s\"\nrecent = \"2s\"\nbucket = \"1s\"\nthreshold = 0.03\nmin_samples = 40\n";
    let (t, s) = setup(&test_policy(extra)).await;
    let steady = [
        ("issue_credit", 0.30),
        ("send_email", 0.45),
        ("update_customer_field", 0.25),
    ];
    let shifted = [
        ("issue_credit", 0.05),
        ("send_email", 0.20),
        ("update_customer_field", 0.75),
    ];
    let mut rng = backstop::supervisor::drift::Rng::new(11);
    let mut plan: Vec<(String, &str)> = Vec::new();
    let t0 = Instant::now();
    let mut stats = SupervisorStats::default();
    // A fleet of five agents, tens of decisions a second each; agent-4
    // changes its tool mix for the last phase. The phases end on counts as
    // well as time, so a slow machine gets as many decisions, only later.
    let (mut rounds, mut late_rounds) = (0u32, 0u32);
    let mut switched: Option<Instant> = None;
    loop {
        let late = switched.is_some();
        plan.clear();
        for a in 0..5 {
            let dist: &[(&str, f64)] = if a == 4 && late { &shifted } else { &steady };
            for _ in 0..8 {
                plan.push((format!("agent-{a}"), rng.pick(dist)));
            }
        }
        let mut tasks = Vec::new();
        for (agent, tool) in plan.drain(..) {
            let pool = t.pool().clone();
            let params = match tool {
                "issue_credit" => json!({"customer_id": "c-1", "amount": 1}),
                "send_email" => json!({"customer_id": "c-1", "to": "a@b", "subject": "s"}),
                _ => json!({"customer_id": "c-1", "field": "tier", "value": "gold"}),
            };
            let tool = tool.to_string();
            tasks.push(tokio::spawn(async move {
                contract::propose(
                    &pool,
                    &Proposal {
                        agent,
                        tool,
                        params,
                        confidence: Some(0.97),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rounds += 1;
        match switched {
            None if rounds >= 12 && t0.elapsed() >= Duration::from_secs(4) => switched = Some(Instant::now()),
            None => {}
            Some(at) => {
                late_rounds += 1;
                if late_rounds >= 10 && at.elapsed() >= Duration::from_millis(2500) {
                    break;
                }
            }
        }
    }
    // The windows are the phases as they ran: whole seconds (the buckets'
    // width) of the late phase as recent, the early phase as baseline.
    let switched = switched.expect("the loop switches");
    let mut s = s.clone();
    // Follow first, then measure: on a loaded machine following takes
    // seconds, and the recent window must still reach back to the switch.
    follow_all(&sup(&t).await, &s, &mut stats).await;
    s.drift.recent_seconds = switched.elapsed().as_secs_f64().floor().max(1.0);
    s.drift.baseline_seconds = (switched - t0).as_secs_f64().floor().max(1.0);
    let flagged = supervisor::drift_pass(&sup(&t).await, &s, &mut stats).await.unwrap();
    let names: Vec<&str> = flagged.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["agent-4"], "{flagged:#?}");
    let a = &flagged[0].1;
    assert_eq!(a.dimension, "tool");
    assert!(
        a.top_changes
            .iter()
            .any(|c| c.category == "tool:update_customer_field" && c.recent > c.baseline),
        "{a:?}"
    );
    let (evidence,): (Value,) = sqlx::query_as("SELECT detail FROM backstop.findings WHERE kind = 'drift'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert!(
        evidence["baseline"].is_object() && evidence["recent"].is_object(),
        "both distributions are in the finding"
    );
    // A second pass inside the same window raises nothing new.
    supervisor::drift_pass(&sup(&t).await, &s, &mut stats).await.unwrap();
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'finding' AND detail ->> 'kind' = 'drift'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_complaint_spike_pauses_exactly_that_agent() {
    let extra = "[supervisor.complaints]\nwindow = \"1m\"\nbaseline = \"1h\"\nmin_count = 5\nfactor = 3.0\n";
    let (t, s) = setup(&test_policy(extra)).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            executed(
                t.pool(),
                "refund-bot",
                "issue_refund",
                json!({"customer_id": format!("c-{i}"), "amount": 5, "order_id": format!("o-{i}")}),
                0.99,
            )
            .await,
        );
    }
    let other = executed(
        t.pool(),
        "credit-bot",
        "issue_credit",
        json!({"customer_id": "c-1", "amount": 5}),
        0.99,
    )
    .await;
    let mut stats = SupervisorStats::default();
    // Four complaints: under the minimum.
    for id in &ids[..4] {
        contract::report_signal(t.pool(), "complaint", None, None, Some(&json!({"action_id": id})))
            .await
            .unwrap();
    }
    contract::report_signal(t.pool(), "complaint", None, None, Some(&json!({"action_id": other})))
        .await
        .unwrap();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.kill_switches WHERE paused")
            .await,
        0
    );
    // The fifth makes a spike.
    contract::report_signal(t.pool(), "complaint", None, None, Some(&json!({"action_id": ids[4]})))
        .await
        .unwrap();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    let paused: Vec<(String, String, String)> =
        sqlx::query_as("SELECT target, changed_by, reason FROM backstop.kill_switches WHERE paused")
            .fetch_all(t.pool())
            .await
            .unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(
        (paused[0].0.as_str(), paused[0].1.as_str()),
        ("refund-bot", "supervisor")
    );
    assert!(paused[0].2.contains("complaint_spike finding"), "{}", paused[0].2);
    let f: Value = sqlx::query_scalar("SELECT detail FROM backstop.findings WHERE kind = 'complaint_spike'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(f["signals_in_window"], 5);
    // The rest of the fleet keeps working; the paused agent does not.
    let d = contract::propose(
        t.pool(),
        &Proposal {
            agent: "credit-bot".into(),
            tool: "issue_credit".into(),
            params: json!({"customer_id": "c-2", "amount": 1}),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    let d = contract::propose(
        t.pool(),
        &Proposal {
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            params: json!({"customer_id": "c-2", "amount": 1}),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.verdict, Verdict::Block);
    // More complaints do not pause again or raise a second finding.
    contract::report_signal(t.pool(), "complaint", None, None, Some(&json!({"action_id": ids[5]})))
        .await
        .unwrap();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'paused'")
            .await,
        1
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE kind = 'complaint_spike'")
            .await,
        1
    );
}

/// The promise is that a spike pauses the agent, not only the first one: a
/// commander who resumes it (the finding left acknowledged, not resolved)
/// must not have switched the check off for that agent. Signals that came
/// while it was paused, or before the finding was last updated, were seen:
/// they do not count toward the next spike.
#[tokio::test]
async fn a_new_spike_after_a_resume_pauses_the_agent_again() {
    let extra = "[supervisor.complaints]\nwindow = \"1m\"\nbaseline = \"1h\"\nmin_count = 5\nfactor = 3.0\n";
    let (t, s) = setup(&test_policy(extra)).await;
    let mut logins = Logins::new(&t);
    let ic = logins.login(&t, "spike_ic", Some("commander")).await;
    let op = logins.login(&t, "spike_op", Some("operator")).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            executed(
                t.pool(),
                "refund-bot",
                "issue_refund",
                json!({"customer_id": format!("c-{}", i + 1), "amount": 5, "order_id": format!("o-{}", i + 1)}),
                0.99,
            )
            .await,
        );
    }
    let sup = sup(&t).await;
    let mut stats = SupervisorStats::default();
    let complain = async |ids: &[Uuid]| {
        for id in ids {
            contract::report_signal(t.pool(), "complaint", None, None, Some(&json!({"action_id": id})))
                .await
                .unwrap();
        }
    };
    let pauses = "SELECT count(*) FROM backstop.action_log WHERE kind = 'paused' AND actor = 'supervisor'
                   AND detail ->> 'target' = 'refund-bot'";
    let paused_now = "SELECT count(*) FROM backstop.kill_switches WHERE paused AND target = 'refund-bot'";
    complain(&ids[..5]).await;
    follow_all(&sup, &s, &mut stats).await;
    assert_eq!(t.count(pauses).await, 1);
    let finding: Uuid = sqlx::query_scalar("SELECT finding_id FROM backstop.findings WHERE kind = 'complaint_spike'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    // Complaints about what it did before the pause keep coming while it is
    // paused: nothing more to do.
    complain(&ids[5..9]).await;
    follow_all(&sup, &s, &mut stats).await;
    assert_eq!(t.count(pauses).await, 1);
    contract::acknowledge_finding(&op, finding, "looking into the refunds")
        .await
        .unwrap();
    contract::resume(&ic, Scope::Agent, Some("refund-bot"), "refund template fixed")
        .await
        .unwrap();
    // One complaint after the resume: the nine before it were seen, and do
    // not make a spike of it.
    complain(&ids[9..10]).await;
    follow_all(&sup, &s, &mut stats).await;
    assert_eq!(t.count(paused_now).await, 0);
    assert_eq!(t.count(pauses).await, 1);
    // Four more: five since the resume, a spike of their own.
    complain(&ids[10..14]).await;
    follow_all(&sup, &s, &mut stats).await;
    assert_eq!(
        t.count(paused_now).await,
        1,
        "a new spike after the resume did not pause the agent"
    );
    assert_eq!(t.count(pauses).await, 2);
    let (count, status, detail): (i32, String, Value) =
        sqlx::query_as("SELECT count, status, detail FROM backstop.findings WHERE finding_id = $1")
            .bind(finding)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!((count, status.as_str()), (2, "acknowledged"));
    assert_eq!(detail["signals_in_window"], 5);
    assert!(detail["counted_after_seq"].as_i64().is_some(), "{detail}");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE kind = 'complaint_spike'")
            .await,
        1
    );
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM backstop.kill_switches WHERE scope = 'agent' AND target = 'refund-bot'")
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert!(reason.contains(&finding.to_string()), "{reason}");
    logins.drop_all(vec![ic, op, sup]).await;
}

fn spawn_supervisor(t: &TestDb, dir: &std::path::Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["supervise", "--name", name])
        .arg("--tools")
        .arg(dir.join("tools.toml"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .env("DATABASE_URL", &t.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn two_supervisors_one_killed_find_what_one_would_and_nothing_twice() {
    let text = test_policy("");
    let (t, _) = setup(&text).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(assets().join("tools.toml"), dir.path().join("tools.toml")).unwrap();
    std::fs::write(dir.path().join("policy.toml"), &text).unwrap();
    // 30 planted violations among 600 ordinary actions.
    let mut bad = Vec::new();
    for i in 0..30 {
        bad.push(
            executed(
                t.pool(),
                &format!("refund-{i}"),
                "issue_refund",
                json!({"customer_id": format!("c-{i}"), "amount": 900, "order_id": format!("o-{}", i + 1)}),
                0.6,
            )
            .await,
        );
    }
    sqlx::query(
        "DO $$ DECLARE a uuid; BEGIN FOR i IN 1 .. 600 LOOP
           SELECT action_id INTO a FROM backstop.propose('ok-bot-' || (i % 7), 'issue_credit', jsonb_build_object('customer_id', 'c-1', 'amount', 1), confidence => 0.99);
           PERFORM backstop.record_result(a, true, jsonb_build_object('credit_id', 'cr-' || i));
         END LOOP; END $$",
    )
    .execute(t.pool())
    .await
    .unwrap();
    let mut a = spawn_supervisor(&t, dir.path(), "sup-a");
    let mut b = spawn_supervisor(&t, dir.path(), "sup-b");
    // Kill one while it works (2 s review delay, 2 s lease).
    tokio::time::sleep(Duration::from_millis(2600)).await;
    a.kill().unwrap();
    a.wait().unwrap();
    let t0 = Instant::now();
    loop {
        let open = t
            .count("SELECT count(*) FROM backstop.reviews WHERE status <> 'done'")
            .await;
        let scheduled = t.count("SELECT count(*) FROM backstop.reviews").await;
        if open == 0 && scheduled > 30 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{open} reviews still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.kill().unwrap();
    b.wait().unwrap();
    // Every planted violation found exactly once, each compensated exactly once.
    let found = t
        .count("SELECT count(*) FROM backstop.findings WHERE kind = 'policy_violation'")
        .await;
    let merged = t.count("SELECT count(*) FROM backstop.findings WHERE count > 1").await;
    let requested = t
        .count("SELECT count(*) FROM backstop.action_log WHERE kind = 'compensation_requested'")
        .await;
    let reviews_logged = t
        .count("SELECT count(*) FROM backstop.action_log WHERE kind = 'reviewed'")
        .await;
    let reviews = t.count("SELECT count(*) FROM backstop.reviews").await;
    assert_eq!(found, 30);
    assert_eq!(merged, 0, "no finding was raised twice");
    assert_eq!(requested, 30);
    assert_eq!(reviews_logged, reviews, "each review recorded once");
    for id in &bad {
        assert_eq!(
            t.count(&format!(
                "SELECT count(*) FROM backstop.findings WHERE action_id = '{id}' AND kind = 'policy_violation'"
            ))
            .await,
            1
        );
    }
}

/// The rollups the supervisor folds in as it follows the log equal the same
/// aggregate computed from the raw log, bucket by bucket and key by key.
#[tokio::test]
async fn rollups_equal_the_aggregate_of_the_raw_log() {
    let (t, s) = setup(&test_policy("")).await;
    let p = t.pool();
    for i in 0..120 {
        let agent = ["refund-bot", "crm-bot", "mail-bot"][i % 3];
        match i % 4 {
            0 => {
                executed(
                    p,
                    agent,
                    "issue_refund",
                    json!({"customer_id": format!("c-{}", i % 50 + 1), "amount": 10 + i, "order_id": "o-1"}),
                    0.9,
                )
                .await;
            }
            1 => {
                executed(p, agent, "lookup_customer", json!({"customer_id": "c-1"}), 0.99).await;
            }
            2 => {
                // Held (cost to reverse with low confidence), never executed.
                let _ = contract::propose(
                    p,
                    &Proposal {
                        agent: agent.into(),
                        tool: "issue_refund".into(),
                        params: json!({"customer_id": "c-2", "amount": 4000 + i}),
                        confidence: Some(0.5),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            }
            _ => {
                executed(
                    p,
                    agent,
                    "update_customer_field",
                    json!({"customer_id": "c-3", "field": "tier", "value": "gold"}),
                    0.8,
                )
                .await;
            }
        }
    }
    let mut stats = SupervisorStats::default();
    while supervisor::tail_step(&sup(&t).await, &s, 50, &mut stats)
        .await
        .unwrap()
        .unwrap_or(0)
        > 0
    {}
    let diff: i64 = sqlx::query_scalar(
        "WITH r AS (SELECT agent, bucket, counts FROM backstop.rollups),
              l AS (SELECT * FROM backstop.rollups_from_log('-infinity', 'infinity', $1))
         SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM l) a)
              + (SELECT count(*) FROM (SELECT * FROM l EXCEPT SELECT * FROM r) b)",
    )
    .bind(s.drift.bucket_seconds)
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(diff, 0, "rollups differ from the log's aggregate");
    let keys: i64 = sqlx::query_scalar("SELECT count(DISTINCT k) FROM backstop.rollups, jsonb_object_keys(counts) k")
        .fetch_one(p)
        .await
        .unwrap();
    assert!(
        keys >= 8,
        "tools, verdicts, outcomes, amount and confidence buckets are all counted: {keys}"
    );
}

/// A result recorded after a pause that covers its agent or tool (the action
/// was allowed before the pause) is a finding: the tool ran, or finished,
/// while the people who paused thought it stopped. One recorded before the
/// pause, and one of another agent, are not.
#[tokio::test]
async fn a_result_recorded_after_its_agents_pause_is_a_finding() {
    let (t, s) = setup(&test_policy("")).await;
    let refund = |c: &str| json!({"customer_id": c, "amount": 20, "order_id": "o-1", "reason": "damaged"});
    let before = executed(t.pool(), "refund-bot", "issue_refund", refund("c-1"), 0.97).await;
    let propose = |agent: &'static str, c: &'static str| {
        let pool = t.pool().clone();
        let params = refund(c);
        async move {
            let d = contract::propose(
                &pool,
                &Proposal {
                    agent: agent.into(),
                    tool: "issue_refund".into(),
                    params,
                    confidence: Some(0.97),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
            d.action_id
        }
    };
    let in_flight = propose("refund-bot", "c-2").await;
    let other = propose("refund-bot-2", "c-3").await;
    contract::pause(t.pool(), contract::Scope::Agent, Some("refund-bot"), "incident 7")
        .await
        .unwrap();
    for id in [in_flight, other] {
        contract::record_result(t.pool(), id, true, Some(&json!({"refund_id": "rf"})), None)
            .await
            .unwrap();
    }
    let mut stats = SupervisorStats::default();
    follow_all(&sup(&t).await, &s, &mut stats).await;
    let found: Vec<(Uuid, String, Value)> =
        sqlx::query_as("SELECT action_id, severity, detail FROM backstop.findings WHERE rule = 'executed_after_pause'")
            .fetch_all(t.pool())
            .await
            .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let (id, severity, detail) = &found[0];
    assert_eq!(*id, in_flight);
    assert_ne!(*id, before);
    assert_eq!(severity, "high");
    assert_eq!(detail["pause"]["reason"], "incident 7");
    assert_eq!(detail["pause"]["scope"], "agent");
    // Followed again, nothing more.
    follow_all(&sup(&t).await, &s, &mut stats).await;
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE rule = 'executed_after_pause'")
            .await,
        1
    );
}

/// A lock another session keeps does not hold the shared cursor: an agent's
/// transaction left open on a replay of its result (which locks the action)
/// made the supervisor's automatic compensation wait for ever inside the
/// cursor's transaction, and every supervisor with it. Now the finding is
/// raised, the compensation is left to a person, and the batch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_open_by_an_agent_does_not_stall_the_supervisors() {
    let (t, s) = setup(&test_policy("")).await;
    let d = contract::propose(
        t.pool(),
        &Proposal {
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            params: json!({"customer_id": "c-4", "amount": 20, "order_id": "o-4", "reason": "damaged"}),
            confidence: Some(0.97),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
    contract::pause(t.pool(), contract::Scope::Agent, Some("refund-bot"), "incident 8")
        .await
        .unwrap();
    contract::record_result(t.pool(), d.action_id, true, Some(&json!({"refund_id": "rf-4"})), None)
        .await
        .unwrap();
    // The agent replays its result in a transaction it leaves open.
    let mut held = t.pool().begin().await.unwrap();
    contract::record_result(&mut *held, d.action_id, true, Some(&json!({"refund_id": "rf-4"})), None)
        .await
        .unwrap();

    let mut stats = SupervisorStats::default();
    let sup = sup(&t).await;
    tokio::time::timeout(Duration::from_secs(60), follow_all(&sup, &s, &mut stats))
        .await
        .expect("the supervisor follows the log past the locked action");
    let found: i64 = t
        .count(&format!(
            "SELECT count(*) FROM backstop.findings WHERE rule = 'executed_after_pause' AND action_id = '{}'",
            d.action_id
        ))
        .await;
    assert_eq!(found, 1, "the finding is raised");
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.compensations WHERE action_id = '{}'",
            d.action_id
        ))
        .await,
        0,
        "the compensation is a person's to request"
    );
    assert!(stats.rows_followed > 0, "the cursor moved past it");
    held.rollback().await.unwrap();
}
