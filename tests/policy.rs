//! Tools and policy as code: every rule at its boundaries, validation with
//! precise positions, audited loading, hot reload, version pinning.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backstop::contract::{self, Proposal, Verdict};
use backstop::policy::watch::{ConfigFiles, ReloadEvent};
use backstop::{policy, registry};
use common::{Logins, TestDb};
use rust_decimal::Decimal;
use serde_json::json;
use std::str::FromStr;
use uuid::Uuid;

fn assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo")
}

fn shipped_registry() -> registry::Registry {
    registry::read(&assets().join("tools.toml")).expect("shipped registry is valid")
}

async fn setup() -> TestDb {
    let t = TestDb::new().await;
    t.load_assets().await;
    t
}

async fn load_policy_text(t: &TestDb, text: &str) -> i64 {
    let reg = shipped_registry();
    let p = policy::parse("test-policy.toml", text, Some(&reg)).unwrap_or_else(|e| panic!("{e:?}"));
    policy::sync(t.pool(), &p, "test").await.unwrap().version
}

fn prop(agent: &str, tool: &str, params: serde_json::Value, amount: Option<&str>, confidence: f32) -> Proposal {
    Proposal {
        agent: agent.into(),
        tool: tool.into(),
        params,
        amount: amount.map(|a| Decimal::from_str(a).unwrap()),
        confidence: Some(confidence),
        ..Default::default()
    }
}

async fn verdict(t: &TestDb, p: &Proposal) -> (Verdict, Option<String>, i32) {
    let d = contract::propose(t.pool(), p).await.unwrap();
    let (rule, approvals): (Option<String>, i32) =
        sqlx::query_as("SELECT rule, approvals_needed FROM backstop.actions WHERE action_id = $1")
            .bind(d.action_id)
            .fetch_one(t.pool())
            .await
            .unwrap();
    (d.verdict, rule, approvals)
}

#[test]
fn the_shipped_files_are_valid() {
    let reg = shipped_registry();
    assert!(reg.tools.len() >= 15);
    for t in reg.tools.values() {
        if t.class.has_inverse() {
            assert!(reg.tools.contains_key(t.inverse.as_deref().unwrap()));
        }
    }
    policy::read(&assets().join("policy.toml"), Some(&reg)).expect("shipped policy is valid");
}

#[tokio::test]
async fn irreversible_limit_at_500_vs_500_01() {
    let t = setup().await;
    let email = json!({"customer_id": "c-1", "to": "a@b", "subject": "s"});
    let (v, _, _) = verdict(&t, &prop("mail-1", "send_email", email.clone(), Some("500"), 0.99)).await;
    assert_eq!(v, Verdict::Allow);
    let (v, rule, _) = verdict(&t, &prop("mail-2", "send_email", email, Some("500.01"), 0.99)).await;
    assert_eq!((v, rule.as_deref()), (Verdict::Hold, Some("irreversible_over_limit")));
}

#[tokio::test]
async fn cost_to_reverse_at_1000_and_confidence_at_0_85() {
    let t = setup().await;
    sqlx::query("INSERT INTO contracts.contracts (contract_id, supplier, monthly_value) VALUES ('k-1', 'acme', 1)")
        .execute(t.pool())
        .await
        .unwrap();
    // cost = 250 + 0.1 x monthly_value: 7500 costs exactly 1000, 7510 costs 1001.
    let cancel = |v: i64| json!({"contract_id": "k-1", "supplier": "acme", "monthly_value": v});
    // Each case its own agent, so the hourly cumulative cap does not interfere.
    let allow_override = r#"
[[rules]]
name = "costly_and_unsure"
kind = "cost_to_reverse"
threshold = 1000
confidence_below = 0.85
effect = "hold"
"#;
    load_policy_text(&t, allow_override).await;
    assert_eq!(
        verdict(&t, &prop("p-1", "cancel_contract", cancel(7500), None, 0.5))
            .await
            .0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&t, &prop("p-2", "cancel_contract", cancel(7510), None, 0.85))
            .await
            .0,
        Verdict::Allow
    );
    let (v, rule, _) = verdict(&t, &prop("p-3", "cancel_contract", cancel(7510), None, 0.8499)).await;
    assert_eq!((v, rule.as_deref()), (Verdict::Hold, Some("costly_and_unsure")));
}

#[tokio::test]
async fn four_eyes_and_the_cumulative_window() {
    let t = setup().await;
    let refund = |c: &str, a: &str| json!({"customer_id": c, "amount": a.parse::<f64>().unwrap()});
    // Above $10,000: held for two approvers.
    let (v, rule, approvals) = verdict(
        &t,
        &prop("r-1", "issue_refund", refund("c-1", "10000.01"), Some("10000.01"), 0.99),
    )
    .await;
    assert_eq!((v, rule.as_deref(), approvals), (Verdict::Hold, Some("four_eyes"), 2));
    // Exactly $10,000 is not four-eyes, but it is over the $5,000 hourly cap.
    let (v, rule, approvals) = verdict(
        &t,
        &prop("r-2", "issue_refund", refund("c-1", "10000"), Some("10000"), 0.99),
    )
    .await;
    assert_eq!(
        (v, rule.as_deref(), approvals),
        (Verdict::Hold, Some("cumulative_per_agent"), 1)
    );
    // $4,000 then $1,000 reaches exactly $5,000: allowed. One cent more is held.
    assert_eq!(
        verdict(
            &t,
            &prop("r-3", "issue_refund", refund("c-1", "4000"), Some("4000"), 0.99)
        )
        .await
        .0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(
            &t,
            &prop("r-3", "issue_refund", refund("c-2", "1000"), Some("1000"), 0.99)
        )
        .await
        .0,
        Verdict::Allow
    );
    let (v, rule, _) = verdict(
        &t,
        &prop("r-3", "issue_refund", refund("c-3", "0.01"), Some("0.01"), 0.99),
    )
    .await;
    assert_eq!((v, rule.as_deref()), (Verdict::Hold, Some("cumulative_per_agent")));
    // Another agent has its own window.
    assert_eq!(
        verdict(
            &t,
            &prop("r-4", "issue_refund", refund("c-3", "0.01"), Some("0.01"), 0.99)
        )
        .await
        .0,
        Verdict::Allow
    );
}

#[tokio::test]
async fn lists_new_payees_and_changed_bank_details() {
    let t = setup().await;
    let ana = t.as_operator("ana").await;
    sqlx::query("INSERT INTO crm.suppression_list VALUES ('c-churned', 'churned')")
        .execute(t.pool())
        .await
        .unwrap();
    let (v, rule, _) = verdict(
        &t,
        &prop(
            "r",
            "issue_refund",
            json!({"customer_id": "c-churned", "amount": 5}),
            None,
            0.99,
        ),
    )
    .await;
    assert_eq!((v, rule.as_deref()), (Verdict::Block, Some("suppressed_customers")));
    let pay = |iban: &str| json!({"payee": "acme", "iban": iban, "amount": 100, "invoice_id": "i-1"});
    let d = contract::propose(t.pool(), &prop("ap-bot", "pay_supplier", pay("DE01"), None, 0.99))
        .await
        .unwrap();
    assert_eq!(d.verdict, Verdict::Hold);
    assert!(d.reason.contains("first payment by this agent to acme"), "{}", d.reason);
    contract::approve(&ana, d.action_id, "known supplier").await.unwrap();
    // Now known, same account: allowed.
    assert_eq!(
        verdict(&t, &prop("ap-bot", "pay_supplier", pay("DE01"), None, 0.99))
            .await
            .0,
        Verdict::Allow
    );
    // Same payee, new bank account: held.
    let (v, rule, _) = verdict(&t, &prop("ap-bot", "pay_supplier", pay("XX99"), None, 0.99)).await;
    assert_eq!((v, rule.as_deref()), (Verdict::Hold, Some("changed_bank_details")));
    // The memory is per agent: another agent paying acme is a new payee.
    let (v, rule, _) = verdict(&t, &prop("ap-bot-2", "pay_supplier", pay("DE01"), None, 0.99)).await;
    assert_eq!((v, rule.as_deref()), (Verdict::Hold, Some("new_payee")));
}

#[tokio::test]
async fn overrides_per_agent_win_over_per_tool() {
    let t = setup().await;
    load_policy_text(
        &t,
        r#"
[[rules]]
name = "limit"
kind = "amount_over"
threshold = 100
effect = "hold"

[[rules]]
name = "no_campaigns_for_interns"
kind = "always"
tools = ["send_campaign"]
agents = ["intern-bot"]
effect = "block"
reason = "interns do not send campaigns"

[[overrides]]
rule = "limit"
tool = "issue_credit"
threshold = 1000

[[overrides]]
rule = "limit"
agent = "vip-bot"
threshold = 5000

[[overrides]]
rule = "limit"
agent = "free-bot"
enabled = false
"#,
    )
    .await;
    let credit = |a: i64| json!({"customer_id": "c", "amount": a});
    assert_eq!(
        verdict(&t, &prop("any", "issue_credit", credit(500), None, 0.9))
            .await
            .0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&t, &prop("any", "issue_credit", credit(1500), None, 0.9))
            .await
            .0,
        Verdict::Hold
    );
    assert_eq!(
        verdict(&t, &prop("any", "issue_refund", credit(500), None, 0.9))
            .await
            .0,
        Verdict::Hold
    );
    assert_eq!(
        verdict(&t, &prop("vip-bot", "issue_credit", credit(4000), None, 0.9))
            .await
            .0,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&t, &prop("free-bot", "issue_refund", credit(90000), None, 0.9))
            .await
            .0,
        Verdict::Allow
    );
    let campaign = json!({"campaign_id": "x", "segment": "all"});
    let d = contract::propose(
        t.pool(),
        &prop("intern-bot", "send_campaign", campaign.clone(), None, 0.9),
    )
    .await
    .unwrap();
    assert_eq!(
        (d.verdict, d.reason.as_str()),
        (Verdict::Block, "interns do not send campaigns")
    );
    assert_eq!(
        verdict(&t, &prop("senior-bot", "send_campaign", campaign, None, 0.9))
            .await
            .0,
        Verdict::Allow
    );
}

fn issue(file: &str, text: &str, policy_text: Option<&str>) -> Vec<String> {
    match policy_text {
        None => registry::parse(file, text).err().unwrap_or_default(),
        Some(p) => {
            let reg = registry::parse("tools.toml", text).expect("registry for the policy test");
            policy::parse(file, p, Some(&reg)).err().unwrap_or_default()
        }
    }
    .iter()
    .map(|i| i.to_string())
    .collect()
}

#[test]
fn every_validation_error_names_file_line_column_key_and_what_is_valid() {
    // Unknown key.
    let e = issue("t.toml", "[tools.a]\nclass = \"read\"\ncolour = \"red\"\n", None);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("t.toml:3:1: tools.a.colour: unknown field `colour`, expected one of `class`"),
        "{}",
        e[0]
    );
    // Wrong type.
    let e = issue("t.toml", "[tools.a]\nclass = 3\n", None);
    assert!(
        e[0].starts_with("t.toml:2:9: tools.a.class: invalid type: integer `3`, expected a string"),
        "{}",
        e[0]
    );
    // Unknown class, with a suggestion.
    let e = issue("t.toml", "[tools.a]\nclass = \"reversable\"\n", None);
    assert!(e[0].contains("t.toml:2:9: tools.a.class: unknown class \"reversable\" (did you mean \"reversible\"?); valid: read, reversible"), "{}", e[0]);
    // Inverse not registered.
    let e = issue(
        "t.toml",
        "[tools.a]\nclass = \"reversible\"\ninverse = \"udno\"\n[tools.undo]\nclass = \"irreversible\"\n",
        None,
    );
    assert!(e[0].starts_with("t.toml:3:11: tools.a.inverse: inverse tool \"udno\" is not registered (did you mean \"undo\"?); registered tools: a, undo"), "{}", e[0]);
    // A binding that names no field.
    let e = issue(
        "t.toml",
        "[tools.a]\nclass = \"reversible\"\ninverse = \"undo\"\nparams = [\"id\"]\nresult = [\"ref\"]\nbind = { ref = \"result.rfe\" }\n[tools.undo]\nclass = \"irreversible\"\nparams = [\"ref\"]\n",
        None,
    );
    assert!(
        e.iter().any(|x| x
            .starts_with("t.toml:6:16: tools.a.bind.ref: \"result.rfe\" names no field: a declares result fields ref")),
        "{e:?}"
    );
    // Duplicate tools.
    let e = issue(
        "t.toml",
        "[tools.a]\nclass = \"read\"\n[tools.a]\nclass = \"read\"\n",
        None,
    );
    assert!(
        e[0].starts_with("t.toml:3:") && e[0].contains("[tools.a] is defined twice"),
        "{}",
        e[0]
    );
    // Thresholds out of range.
    let tools = "[tools.a]\nclass = \"read\"\n";
    let e = issue(
        "p.toml",
        tools,
        Some("[[rules]]\nname = \"r\"\nkind = \"amount_over\"\nthreshold = -5\neffect = \"hold\"\n"),
    );
    assert!(
        e[0].starts_with("p.toml:4:13: rules[0] (r).threshold: must be between 0 and 1e12; got -5"),
        "{}",
        e[0]
    );
    let e = issue(
        "p.toml",
        tools,
        Some("[[rules]]\nname = \"r\"\nkind = \"confidence_below\"\nconfidence_below = 1.2\neffect = \"hold\"\n"),
    );
    assert!(
        e[0].contains("confidence_below: must be above 0 and at most 1; got 1.2"),
        "{}",
        e[0]
    );
    let e = issue("p.toml", tools, Some("[supervisor]\nsample_rate = 1.5\n"));
    assert!(
        e[0].starts_with("p.toml:2:15: supervisor.sample_rate: a fraction between 0 and 1"),
        "{}",
        e[0]
    );
    // A drift bucket wider than the database folds (31 days).
    let e = issue("p.toml", tools, Some("[supervisor.drift]\nbucket = \"60d\"\n"));
    assert!(
        e.iter()
            .any(|x| x.contains("supervisor.drift.bucket: must be at most 31d")),
        "{e:?}"
    );
    // A rule that needs a setting it lacks, and a rule naming an unregistered tool.
    let e = issue(
        "p.toml",
        tools,
        Some("[[rules]]\nname = \"r\"\nkind = \"cumulative\"\nthreshold = 5\neffect = \"hold\"\ntools = [\"b\"]\n"),
    );
    assert!(
        e.iter()
            .any(|x| x.contains("rules[0] (r).window: a cumulative rule needs window")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|x| x.contains("rules[0] (r).tools: tool \"b\" is not in the registry")),
        "{e:?}"
    );
    // Syntax errors point at the spot.
    let e = issue("t.toml", "[tools.a\nclass = \"read\"\n", None);
    assert!(e[0].starts_with("t.toml:1:"), "{}", e[0]);
}

#[tokio::test]
async fn check_command_reports_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tools.toml");
    std::fs::write(&bad, "[tools.a]\nclass = \"sometimes\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("check")
        .arg(&bad)
        .arg(assets().join("policy.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:9: tools.a.class: unknown class \"sometimes\""),
        "{err}"
    );
    assert!(err.contains("nothing was loaded"), "{err}");
}

#[tokio::test]
async fn loading_is_audited_and_idempotent() {
    let t = TestDb::with_operator("ana").await;
    t.load_assets().await;
    let (sha, actor, summary): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT detail ->> 'sha256', actor, detail -> 'summary' FROM backstop.action_log WHERE kind = 'policy_loaded' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    let text = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    assert_eq!(sha, backstop::filecheck::sha256_hex(&text));
    assert_eq!(actor, "ana");
    assert!(
        summary["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "cumulative_per_agent"),
        "{summary}"
    );
    let before = t.log_len().await;
    t.load_assets().await;
    assert_eq!(
        t.log_len().await,
        before,
        "loading the same files again appends nothing"
    );
    // A change is summarized.
    let v = load_policy_text(&t, "[[rules]]\nname = \"only\"\nkind = \"always\"\neffect = \"hold\"\n").await;
    let summary: serde_json::Value =
        sqlx::query_scalar("SELECT summary FROM backstop.policy_versions WHERE version = $1")
            .bind(v)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(summary["added"], json!(["only"]));
    assert!(summary["removed"].as_array().unwrap().len() >= 5);
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < within, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hot_reload_applies_good_edits_within_two_seconds_and_rejects_bad_ones() {
    let t = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.toml");
    let pol = dir.path().join("policy.toml");
    std::fs::copy(assets().join("tools.toml"), &tools).unwrap();
    let original = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    std::fs::write(&pol, &original).unwrap();
    let mut events = policy::watch::spawn(
        t.pool().clone(),
        ConfigFiles {
            tools: tools.clone(),
            policy: pol.clone(),
        },
        "test".into(),
    )
    .unwrap();
    let credit = json!({"customer_id": "c-1", "amount": 5});
    assert_eq!(
        verdict(&t, &prop("a", "issue_credit", credit.clone(), None, 0.99))
            .await
            .0,
        Verdict::Allow
    );

    // An editor's save: write a temporary file, rename it over the original.
    let blocking = format!(
        "{original}\n[[rules]]\nname = \"credits_off\"\nkind = \"always\"\ntools = [\"issue_credit\"]\neffect = \"block\"\nreason = \"credits are off\"\n"
    );
    let tmp = dir.path().join(".policy.toml.swp");
    std::fs::write(&tmp, &blocking).unwrap();
    let saved = Instant::now();
    std::fs::rename(&tmp, &pol).unwrap();
    wait_for("the new rule taking effect", Duration::from_secs(2), || {
        let pool = t.pool().clone();
        let credit = credit.clone();
        async move {
            contract::propose(&pool, &prop("a", "issue_credit", credit, None, 0.99))
                .await
                .unwrap()
                .verdict
                == Verdict::Block
        }
    })
    .await;
    assert!(saved.elapsed() < Duration::from_secs(2));
    let ev = events.recv().await.unwrap();
    assert!(matches!(ev, ReloadEvent::Applied { what: "policy", .. }), "{ev:?}");
    let version_in_force: i64 = sqlx::query_scalar("SELECT policy_version FROM backstop.active")
        .fetch_one(t.pool())
        .await
        .unwrap();

    // A broken edit changes nothing, is reported, and is logged once.
    std::fs::write(
        &pol,
        format!("{blocking}\n[[rules]]\nname = \"oops\"\nkind = \"amount_ovr\"\neffect = \"hold\"\n"),
    )
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(3), events.recv())
        .await
        .unwrap()
        .unwrap();
    match ev {
        ReloadEvent::Rejected { errors, .. } => {
            assert!(errors[0].contains("unknown rule kind \"amount_ovr\""), "{errors:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'policy_rejected'")
            .await,
        1
    );
    let still: i64 = sqlx::query_scalar("SELECT policy_version FROM backstop.active")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(still, version_in_force);
    assert_eq!(
        verdict(&t, &prop("a", "issue_credit", credit.clone(), None, 0.99))
            .await
            .0,
        Verdict::Block
    );

    // A half-written file, then the rest of it: only the complete one applies.
    let half = &original[..original.len() / 2];
    std::fs::write(&pol, half).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::write(&pol, &original).unwrap();
    wait_for("the restored policy", Duration::from_secs(3), || {
        let pool = t.pool().clone();
        let credit = credit.clone();
        async move {
            contract::propose(&pool, &prop("a", "issue_credit", credit, None, 0.99))
                .await
                .unwrap()
                .verdict
                == Verdict::Allow
        }
    })
    .await;

    // A deleted file is reported; the version in force stays.
    let v_before: i64 = sqlx::query_scalar("SELECT policy_version FROM backstop.active")
        .fetch_one(t.pool())
        .await
        .unwrap();
    std::fs::remove_file(&pol).unwrap();
    let t0 = Instant::now();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(3), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let ReloadEvent::Rejected { errors, .. } = &ev
            && errors[0].contains("cannot read the file")
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no rejection for the deleted file"
        );
    }
    let v_after: i64 = sqlx::query_scalar("SELECT policy_version FROM backstop.active")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(v_before, v_after);
    assert_eq!(
        verdict(&t, &prop("a", "issue_credit", credit, None, 0.99)).await.0,
        Verdict::Allow
    );
}

#[tokio::test]
async fn concurrent_proposals_during_policy_switches_are_explained_by_their_version() {
    let t = setup().await;
    let strict = "[[rules]]\nname = \"strict\"\nkind = \"amount_over\"\nthreshold = 50\neffect = \"hold\"\n";
    let lax = "[[rules]]\nname = \"lax\"\nkind = \"amount_over\"\nthreshold = 5000\neffect = \"block\"\n";
    load_policy_text(&t, strict).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    for i in 0..8 {
        let pool = t.pool().clone();
        let stop = stop.clone();
        agents.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let amount = [10, 100, 9000][n % 3];
                contract::propose(
                    &pool,
                    &prop(
                        &format!("bot-{i}"),
                        "issue_credit",
                        json!({"customer_id": "c", "amount": amount}),
                        None,
                        0.9,
                    ),
                )
                .await
                .unwrap();
                n += 1;
            }
        }));
    }
    let mut versions = Vec::new();
    for k in 0..10 {
        versions.push(load_policy_text(&t, if k % 2 == 0 { lax } else { strict }).await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for a in agents {
        a.await.unwrap();
    }
    // Re-evaluate every proposal against the version its log row names.
    let mismatches: i64 = t
        .count(
            "SELECT count(*) FROM backstop.action_log l \
              CROSS JOIN LATERAL backstop.evaluate(l.policy_version, l.agent, l.tool, l.detail ->> 'class', l.amount, \
                                                   (l.detail ->> 'cost_to_reverse')::numeric, l.confidence, l.params) e \
              WHERE l.kind IN ('allowed', 'held', 'blocked') AND l.tool = 'issue_credit' \
                AND (e.verdict IS DISTINCT FROM l.detail ->> 'verdict' OR e.rule IS DISTINCT FROM l.detail ->> 'rule')",
        )
        .await;
    assert_eq!(mismatches, 0);
    let used: i64 = t
        .count("SELECT count(DISTINCT policy_version) FROM backstop.action_log WHERE kind IN ('allowed', 'held', 'blocked') AND tool = 'issue_credit'")
        .await;
    assert!(used >= 4, "the proposals spanned only {used} versions");
}

/// The cumulative rule's per-minute totals do not grow for ever: those older
/// than any window could read are pruned (housekeeping calls this every five
/// minutes), and a window loaded later that is longer keeps its own.
#[tokio::test]
async fn per_minute_totals_no_window_reads_are_pruned() {
    let t = setup().await;
    let add = |table: &'static str, key: &'static str, days: i64| {
        let pool = t.pool().clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO backstop.{table} VALUES ($1, date_trunc('minute', now() - make_interval(days => $2::int)), 100)"
            )))
            .bind(key)
            .bind(days as i32)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    add("agent_value_minutes", "old-bot", 40).await;
    add("agent_value_minutes", "old-bot", 20).await;
    add("agent_value_minutes", "old-bot", 0).await;
    add("entity_value_minutes", "c-old", 40).await;
    add("entity_value_minutes", "c-old", 0).await;
    let rows = || async {
        t.count("SELECT count(*) FROM backstop.agent_value_minutes WHERE agent = 'old-bot'")
            .await
            + t.count("SELECT count(*) FROM backstop.entity_value_minutes WHERE entity = 'c-old'")
                .await
    };
    let prune = || async {
        sqlx::query_scalar::<_, i32>("SELECT backstop.prune_value_minutes()")
            .fetch_one(t.pool())
            .await
            .unwrap()
    };
    // The shipped policy's windows are an hour and ten minutes: 31 days stay.
    assert_eq!(prune().await, 2);
    assert_eq!(rows().await, 3);
    assert_eq!(prune().await, 0, "nothing more to prune");

    // So no window may be longer than 31 days: it would count less than it
    // says (the 31-day-old totals are gone).
    let text = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    assert!(text.contains("window = \"1h\""));
    let long = text.replacen("window = \"1h\"", "window = \"60d\"", 1);
    let e = policy::parse("test-policy.toml", &long, Some(&shipped_registry())).expect_err("a 60-day window");
    assert!(format!("{e:?}").contains("at most 31d"), "{e:?}");
    let longest = text.replacen("window = \"1h\"", "window = \"31d\"", 1);
    load_policy_text(&t, &longest).await;
    add("agent_value_minutes", "old-bot", 30).await;
    assert_eq!(prune().await, 0, "a 31-day window keeps its 30-day-old totals");
    assert_eq!(rows().await, 4);

    let e = sqlx::query("SELECT backstop.prune_value_minutes(0)")
        .execute(t.pool())
        .await
        .expect_err("a bad max_rows");
    assert!(e.to_string().contains("max_rows must be 1 to 1000000"), "{e}");
}

/// Rows a test compares across two databases: ids, times and absolute
/// sequence numbers left out (each database has its own), sequence numbers
/// kept relative to the first row the test wrote, so the order of every
/// write is compared too.
async fn written(t: &TestDb, since: i64) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object(
           'log', (SELECT jsonb_agg(jsonb_build_object(
                       'seq', l.seq - $1, 'kind', l.kind, 'actor', l.actor, 'agent', l.agent, 'tool', l.tool,
                       'detail', l.detail #- '{compensation,deadline}' #- '{expires_at}',
                       'deadline', l.detail #> '{compensation,deadline}' IS NOT NULL,
                       'expires', l.detail ? 'expires_at', 'correlation_id', l.correlation_id,
                       'parent', l.parent_action IS NOT NULL, 'amount', l.amount, 'confidence', l.confidence,
                       'reasoning', l.reasoning, 'inputs', l.inputs, 'params', l.params, 'result', l.result,
                       'policy', l.policy_version, 'registry', l.registry_version) ORDER BY l.seq)
                     FROM backstop.action_log l WHERE l.seq > $1),
           'actions', (SELECT jsonb_agg(to_jsonb(a)
                                        - '{action_id,proposed_at,executed_at,expires_at,comp_deadline,proposed_seq,executed_seq,updated_seq,decided_seq}'::text[]
                                        || jsonb_build_object('proposed', a.proposed_seq - $1, 'executed', a.executed_seq - $1,
                                                              'updated', a.updated_seq - $1, 'decided', a.decided_seq - $1,
                                                              'deadline', a.comp_deadline IS NOT NULL,
                                                              'expires', a.expires_at IS NOT NULL) ORDER BY a.proposed_seq)
                         FROM backstop.actions a WHERE a.proposed_seq > $1),
           'queue', (SELECT jsonb_agg(jsonb_build_array(q.agent, q.tool, q.amount, q.rule, q.reason, q.approvals_needed,
                                                        q.proposed_seq - $1) ORDER BY q.proposed_seq)
                       FROM backstop.approval_queue q WHERE q.proposed_seq > $1),
           'agent_minutes', (SELECT jsonb_object_agg(m.agent, m.total) FROM
                               (SELECT agent, sum(total) AS total FROM backstop.agent_value_minutes GROUP BY agent) m),
           'entity_minutes', (SELECT jsonb_object_agg(m.entity, m.total) FROM
                               (SELECT entity, sum(total) AS total FROM backstop.entity_value_minutes GROUP BY entity) m),
           'counterparties', (SELECT jsonb_agg(jsonb_build_array(c.agent, c.param, c.value, c.first_seq - $1)
                                               ORDER BY c.agent, c.param, c.value) FROM backstop.counterparties c),
           'param_values', (SELECT jsonb_agg(jsonb_build_array(p.agent, p.key_param, p.key, p.param, p.value, p.last_seq - $1)
                                             ORDER BY p.agent, p.key_param, p.key, p.param) FROM backstop.param_values p))",
    )
    .bind(since)
    .fetch_one(t.pool())
    .await
    .expect("the rows written")
}

/// A transaction that counts the calls of functions (track_functions on),
/// for calls_of.
async fn counting_calls(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL track_functions = 'all'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Calls of backstop.NAME counted so far (track_functions on): the
/// transaction's, and the session's not yet reported, so a test takes a
/// difference.
async fn calls_of(tx: &mut sqlx::PgConnection, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_xact_user_functions WHERE schemaname = 'backstop' AND funcname = $1",
    )
    .bind(name)
    .fetch_one(tx)
    .await
    .expect("function calls")
}

/// propose_batch and record_results decide the common batch in two
/// statements each and leave every other batch to propose() and
/// record_result(), one request at a time. The two ways must be one
/// contract: the same batches, sent to two databases set up alike (one as a
/// batch, one a call at a time in one transaction), give the same answers
/// and write the same rows, in the same order, down to the memory rules'
/// rows and the cumulative totals; and the test checks which way each batch
/// took, so a fast path that never runs cannot pass it.
#[tokio::test]
async fn a_batch_writes_what_one_call_at_a_time_writes() {
    let fast = setup().await;
    let slow = setup().await;
    let mut since = Vec::new();
    for t in [&fast, &slow] {
        sqlx::query("INSERT INTO crm.suppression_list (customer_id, reason) VALUES ('c-churned', 'test')")
            .execute(t.pool())
            .await
            .unwrap();
        sqlx::query("SELECT backstop.pause('agent', 'bot-paused', 'a test pause')")
            .execute(t.pool())
            .await
            .unwrap();
        since.push(t.count("SELECT coalesce(max(seq), 0) FROM backstop.action_log").await);
    }
    let refund = |agent: &str, customer: &str, amount: u32| {
        json!({"agent": agent, "tool": "issue_refund", "confidence": 0.97,
               "params": {"customer_id": customer, "amount": amount, "order_id": format!("o-{customer}"), "reason": "damaged"}})
    };
    // (the batch, whether the fast path takes it)
    let batches = [
        (
            json!([
                {"agent": "bot-a", "tool": "issue_refund", "confidence": 0.8999999761581421, "reasoning": "the order arrived broken",
                 "inputs": {"ticket": 7}, "correlation_id": "t-1", "depends_on": [], "parent_action": null,
                 "params": {"customer_id": "c-1", "amount": 20, "order_id": "o-1", "reason": "damaged"}},
                {"agent": "bot-b", "tool": "charge_customer", "amount": "35.50",
                 "params": {"customer_id": "c-2", "amount": "35.5", "invoice_id": "i-2"}},
                {"agent": "bot-c", "tool": "lookup_customer", "params": {"customer_id": "c-3"}},
                {"agent": "bot-d", "tool": "update_customer_field", "confidence": 1,
                 "params": {"customer_id": "c-4", "field": "email", "value": "x@example.com"}},
                // Extra fields the memory rules read: remembered for bot-e.
                {"agent": "bot-e", "tool": "issue_refund", "confidence": 0.9,
                 "params": {"customer_id": "c-5", "amount": 12.25, "order_id": "o-5", "reason": "late", "payee": "ACME", "iban": "DE01"}},
                {"agent": "bot-f", "tool": "send_email", "inputs": null,
                 "params": {"customer_id": "c-6", "to": "c6@example.com", "subject": "sorry", "template": "apology"}},
            ]),
            true,
        ),
        // bot-a's hourly total passes the cumulative limit: a hold.
        (json!([refund("bot-a", "c-7", 4990), refund("bot-g", "c-8", 30)]), false),
        // One agent twice: the second must see the first's cumulative total.
        (json!([refund("bot-h", "c-9", 10), refund("bot-h", "c-10", 11)]), false),
        // A churned customer (a list kept in a table): blocked.
        (
            json!([refund("bot-i", "c-churned", 10), refund("bot-j", "c-11", 10)]),
            false,
        ),
        // A paused agent: blocked by the kill switch.
        (json!([refund("bot-paused", "c-12", 10)]), false),
        // An idempotency key: replays are propose()'s.
        (
            json!([{"agent": "bot-k", "tool": "issue_refund", "idempotency_key": "k-1",
                    "params": {"customer_id": "c-13", "amount": 5, "order_id": "o-13", "reason": "x"}}]),
            false,
        ),
        // A payee bot-e used before (remembered by the first batch), the same
        // bank details: allowed; and the list table read for a clean customer.
        (
            json!([
                {"agent": "bot-e", "tool": "pay_supplier", "confidence": 0.99,
                 "params": {"payee": "ACME", "iban": "DE01", "amount": 100, "invoice_id": "inv-1"}},
                refund("bot-l", "c-14", 15),
                refund("bot-m", "c-15", 16),
            ]),
            true,
        ),
        // Two requests the fast path would take: the loop costs less for so few.
        (json!([refund("bot-n", "c-16", 5), refund("bot-o", "c-17", 6)]), false),
        // The same payee with other bank details: held.
        (
            json!([{"agent": "bot-e", "tool": "pay_supplier", "confidence": 0.99,
                    "params": {"payee": "ACME", "iban": "DE99", "amount": 100, "invoice_id": "inv-2"}}]),
            false,
        ),
    ];
    let mut ids: [Vec<Uuid>; 2] = [Vec::new(), Vec::new()];
    for (n, (batch, takes_fast)) in batches.iter().enumerate() {
        let mut tx = counting_calls(fast.pool()).await;
        let before = calls_of(&mut tx, "propose").await;
        let got: Vec<(i32, Uuid, String, String)> =
            sqlx::query_as("SELECT i, action_id, verdict, reason FROM backstop.propose_batch($1) ORDER BY i")
                .bind(batch)
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("batch {n}: {e}"));
        let one_by_one = calls_of(&mut tx, "propose").await - before;
        tx.commit().await.unwrap();
        assert_eq!(
            one_by_one == 0,
            *takes_fast,
            "batch {n}: propose() ran {one_by_one} times"
        );

        let mut tx = slow.pool().begin().await.unwrap();
        let mut want = Vec::new();
        for r in batch.as_array().unwrap() {
            let row: (Uuid, String, String) = sqlx::query_as(
                "SELECT action_id, verdict, reason FROM backstop.propose($1, $2, $3, ($4 ->> 'amount')::double precision,
                    ($4 ->> 'confidence')::double precision, $4 ->> 'reasoning', nullif($4 -> 'inputs', 'null'::jsonb),
                    $4 ->> 'correlation_id', NULL, $4 ->> 'idempotency_key')",
            )
            .bind(r["agent"].as_str())
            .bind(r["tool"].as_str())
            .bind(&r["params"])
            .bind(r)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("batch {n} one by one: {e}"));
            want.push(row);
        }
        tx.commit().await.unwrap();
        assert_eq!(
            got.iter().map(|r| (&r.2, &r.3)).collect::<Vec<_>>(),
            want.iter().map(|r| (&r.1, &r.2)).collect::<Vec<_>>(),
            "batch {n}"
        );
        for (side, rows) in [
            (0, got.iter().map(|r| (r.1, r.2.clone())).collect::<Vec<_>>()),
            (1, want.iter().map(|r| (r.0, r.1.clone())).collect()),
        ] {
            ids[side].extend(rows.into_iter().filter(|r| r.1 == "allow").map(|r| r.0));
        }
    }
    assert_eq!(
        written(&fast, since[0]).await,
        written(&slow, since[1]).await,
        "after the proposals"
    );

    // The results of every allowed action: executed, one failed, one with no
    // result (its bindings unbound), then a batch with a retry in it.
    let result = |k: usize, id: Uuid| match k {
        1 => json!({"action_id": id, "ok": false, "result": {"error": "card declined"}}),
        3 => json!({"action_id": id, "ok": true}),
        _ => {
            json!({"action_id": id, "ok": true, "result": {"refund_id": format!("rf-{k}"), "charge_id": format!("ch-{k}"),
                                                             "previous_value": "old@example.com", "write_id": k}})
        }
    };
    let n = ids[0].len();
    assert_eq!(n, ids[1].len());
    let half = n / 2;
    // The last two: a retry in a batch; two results, which the loop costs less for.
    let batches = [(0..half, true), (half..n - 2, true), (0..2, false), (n - 2..n, false)];
    for (b, (range, takes_fast)) in batches.into_iter().enumerate() {
        let mut tx = counting_calls(fast.pool()).await;
        let before = calls_of(&mut tx, "record_result").await;
        let arg: Vec<_> = range.clone().map(|k| result(k, ids[0][k])).collect();
        let got: Vec<(i32, String, String)> =
            sqlx::query_as("SELECT i, status, compensation FROM backstop.record_results($1) ORDER BY i")
                .bind(json!(arg))
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("results {b}: {e}"));
        let one_by_one = calls_of(&mut tx, "record_result").await - before;
        tx.commit().await.unwrap();
        assert_eq!(
            one_by_one == 0,
            takes_fast,
            "results {b}: record_result() ran {one_by_one} times"
        );
        let mut tx = slow.pool().begin().await.unwrap();
        let mut want = Vec::new();
        for k in range {
            let r = result(k, ids[1][k]);
            let row: (String, String) = sqlx::query_as(
                "SELECT status, compensation FROM backstop.record_result($1, ($2 ->> 'ok')::boolean, nullif($2 -> 'result', 'null'::jsonb))",
            )
            .bind(ids[1][k])
            .bind(&r)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("results {b} one by one: {e}"));
            want.push(row);
        }
        tx.commit().await.unwrap();
        assert_eq!(
            got.into_iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
            want,
            "results {b}"
        );
    }
    assert_eq!(
        written(&fast, since[0]).await,
        written(&slow, since[1]).await,
        "after the results"
    );
    let report = contract::verify::verify(fast.pool(), true, true).await.unwrap();
    assert!(report.ok, "the batched log verifies: {:?}", report.problems.first());
}

/// The fast paths test a request's numbers and ids by their text before
/// converting them (a conversion that fails would abort the batch, where
/// the loop gives the one request its own error). The tests are written for
/// speed (unbounded patterns, lengths counted apart), so here are the edges
/// they must keep: what the path takes and what it leaves to the loop, seen
/// by whether propose() and record_result() ran, and the same answers
/// either way.
#[tokio::test]
async fn the_fast_paths_take_exactly_the_numbers_and_ids_their_patterns_name() {
    let t = setup().await;
    let mut n = 0;
    // (confidence as JSON, amount as JSON or null, whether the fast path takes it)
    let cases = [
        // (As JSON strings: serde_json would round a number to an f64's digits.)
        ("\"0.12345678901234567890\"", "null", true),
        ("\"0.123456789012345678901\"", "null", false),
        ("\"1.00000000000000000000\"", "null", true),
        ("\"1.000000000000000000000\"", "null", false),
        ("0.93", "null", true),
        ("\".12345678901234567890\"", "null", true),
        ("\".123456789012345678901\"", "null", false),
        ("\"0\"", "null", true),
        ("\"1.5\"", "null", false),
        ("\"0.\"", "null", false),
        ("0.9", "\"5.123456\"", true),
        ("0.9", "\"5.1234567\"", false),
        ("0.9", "\"5.\"", false),
        ("0.9", "\"5.1.2\"", false),
    ];
    for (conf, amount, takes_fast) in cases {
        let amount: serde_json::Value = serde_json::from_str(amount).unwrap();
        let value = amount.as_str().map_or(json!(5), |a| json!(a));
        let batch: Vec<_> = (0..3)
            .map(|_| {
                n += 1;
                let mut r = json!({"agent": format!("edge-{n}"), "tool": "issue_refund",
                    "params": {"customer_id": format!("c-{n}"), "amount": value, "order_id": "o", "reason": "r"}});
                r["confidence"] = serde_json::from_str(conf).unwrap();
                if !amount.is_null() {
                    r["amount"] = amount.clone();
                }
                r
            })
            .collect();
        let mut tx = counting_calls(t.pool()).await;
        let before = calls_of(&mut tx, "propose").await;
        let got = sqlx::query_as::<_, (i32, String)>("SELECT i, verdict FROM backstop.propose_batch($1) ORDER BY i")
            .bind(json!(batch))
            .fetch_all(&mut *tx)
            .await;
        let why = format!("confidence {conf}, amount {amount}");
        match got {
            Ok(rows) => {
                assert_eq!(rows.len(), 3, "{why}");
                let one_by_one = calls_of(&mut tx, "propose").await - before;
                assert_eq!(one_by_one == 0, takes_fast, "{why}: propose() ran {one_by_one} times");
            }
            // propose()'s own refusal, through the loop (the fast path
            // refuses nothing: a conversion failing there would show
            // without the request's index).
            Err(e) => assert!(
                !takes_fast && e.to_string().contains("propose_batch: request 0: "),
                "{why}: {e}"
            ),
        }
        tx.rollback().await.unwrap();
    }

    // Ids: a uuid as uuid_out writes it is the fast path's; any other
    // spelling the uuid type reads is the loop's, with the same answers.
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT action_id FROM backstop.propose_batch($1) ORDER BY i")
        .bind(json!(
            (0..12)
                .map(|k| json!({"agent": format!("ids-{k}"), "tool": "issue_refund",
        "params": {"customer_id": format!("c-{k}"), "amount": 5, "order_id": "o", "reason": "r"}}))
                .collect::<Vec<_>>()
        ))
        .fetch_all(t.pool())
        .await
        .unwrap();
    type Spelling = fn(&Uuid) -> String;
    let spellings: [(Spelling, bool); 4] = [
        (|u| u.to_string(), true),
        (|u| u.to_string().to_uppercase(), false),
        (|u| u.simple().to_string(), false),
        (|u| format!("{{{u}}}"), false),
    ];
    for (k, (spell, takes_fast)) in spellings.into_iter().enumerate() {
        let results: Vec<_> = ids[k * 3..k * 3 + 3]
            .iter()
            .map(|id| json!({"action_id": spell(id), "ok": true, "result": {"refund_id": "rf"}}))
            .collect();
        let mut tx = counting_calls(t.pool()).await;
        let before = calls_of(&mut tx, "record_result").await;
        let got: Vec<(String, String)> =
            sqlx::query_as("SELECT status, compensation FROM backstop.record_results($1) ORDER BY i")
                .bind(json!(results))
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("spelling {k}: {e}"));
        let one_by_one = calls_of(&mut tx, "record_result").await - before;
        tx.commit().await.unwrap();
        assert_eq!(
            one_by_one == 0,
            takes_fast,
            "spelling {k}: record_result() ran {one_by_one} times"
        );
        assert_eq!(
            got,
            vec![("executed".to_string(), "staged".to_string()); 3],
            "spelling {k}"
        );
    }
}

/// A gateway's session keeps one plan for each of a batch's statements (a
/// generic plan, made at its first call). Made when the tables were small,
/// the plans scanned `actions` whole and hash-joined, and were kept as the
/// tables grew: a scan a batch for as long as the session lasted, or until
/// an ANALYZE replanned them. Here a gateway's login (the agent duty,
/// mapped to the agents it serves) makes its first batch on nearly empty
/// tables; they grow by 4,000 actions of 4,000 agents, all mapped to the
/// gateway and to a second login (no ANALYZE, which would make new plans);
/// then the gateway's next batch, proposals and results, and one proposal
/// and one result by the single calls, must scan none of the tables that
/// grow and read only a few entries of their indexes: the cumulative rule's
/// minutes (which had read every agent's minute in the window, through the
/// minute index) and the login mappings (which had read every mapping of the
/// login or of the agent).
#[tokio::test]
async fn a_gateways_lookups_read_by_key_however_small_the_tables_were_and_however_many_agents_it_serves() {
    let t = setup().await;
    let mut logins = common::Logins::new(&t);
    let gateway_pool = logins.login(&t, "probe_gateway", Some("agent")).await;
    let gateway_login = common::Logins::name("probe_gateway");
    let other_login = common::Logins::name("probe_other");
    let other_pool = logins.login(&t, "probe_other", Some("agent")).await;
    for login in [&gateway_login, &other_login] {
        sqlx::query(
            "INSERT INTO backstop.agent_logins (login, agent)
             SELECT $1, 'bot-' || g FROM generate_series(0, 4099) g",
        )
        .bind(login)
        .execute(t.pool())
        .await
        .unwrap();
    }
    let refund = |agent: String, n: usize| {
        json!({"agent": agent, "tool": "issue_refund", "confidence": 0.97,
               "params": {"customer_id": format!("c-{n}"), "amount": 5, "order_id": format!("o-{n}"), "reason": "late"}})
    };
    let batch = |from: usize, n: usize| {
        json!(
            (from..from + n)
                .map(|k| refund(format!("bot-{k}"), k))
                .collect::<Vec<_>>()
        )
    };
    let results = |ids: &[Uuid]| {
        json!(
            ids.iter()
                .map(|id| json!({"action_id": id, "ok": true, "result": {"refund_id": "rf"}}))
                .collect::<Vec<_>>()
        )
    };
    // To count the paths taken (a superuser's setting otherwise).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT SET ON PARAMETER track_functions TO \"{gateway_login}\""
    )))
    .execute(t.pool())
    .await
    .unwrap();
    // A little history, analyzed: the first plans are made from it.
    sqlx::query(
        "INSERT INTO backstop.agent_value_minutes (agent, minute, total)
         SELECT 'seed', date_trunc('minute', now()) - g * interval '1 minute', 1 FROM generate_series(0, 59) g",
    )
    .execute(t.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE backstop.agent_value_minutes")
        .execute(t.pool())
        .await
        .unwrap();
    let mut gateway = gateway_pool.acquire().await.unwrap();
    let first = propose_ids(&mut gateway, batch(0, 3)).await;
    assert_eq!(record_ids(&mut gateway, results(&first)).await, ["executed"; 3]);
    // The single calls' plans, made on the small tables too (a plan is
    // kept from the sixth call).
    for k in 0..6 {
        one_call_at_a_time(&mut gateway, &format!("bot-{}", 20 + k), 20 + k).await;
    }

    let mut other = other_pool.acquire().await.unwrap();
    for k in 0..8 {
        propose_ids(&mut other, batch(100 + k * 500, 500)).await;
    }
    assert!(t.count("SELECT count(*) FROM backstop.actions").await > 4000);
    assert!(t.count("SELECT count(*) FROM backstop.agent_value_minutes").await > 4000);
    flush_stats(&mut other).await;
    flush_stats(&mut gateway).await;
    let before = index_reads(&t).await;

    let mut tx = sqlx::Connection::begin(&mut *gateway).await.unwrap();
    sqlx::query("SET LOCAL track_functions = 'all'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let next = propose_ids(&mut tx, batch(110, 3)).await;
    assert_eq!(record_ids(&mut tx, results(&next)).await, ["executed"; 3]);
    // The set-based paths, not propose() and record_result() one by one.
    for f in ["_propose_set", "_record_set", "propose", "record_result"] {
        let want = i64::from(f.starts_with('_'));
        assert_eq!(calls_of(&mut tx, f).await, want, "{f}");
    }
    one_call_at_a_time(&mut tx, "bot-130", 130).await;
    let scans: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables
          WHERE schemaname = 'backstop' AND seq_scan > 0
            AND relname IN ('actions', 'agent_value_minutes', 'entity_value_minutes', 'counterparties', 'param_values',
                            'agent_logins')",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(scans.is_empty(), "the batch scanned whole tables: {scans:?}");
    flush_stats(&mut gateway).await;
    let after = index_reads(&t).await;
    // Four requests, each proposed and recorded: a probe of a few entries
    // each. Before, each read thousands.
    for (table, n) in &after {
        let read = n - before.iter().find(|b| &b.0 == table).map_or(0, |b| b.1);
        assert!(read <= 40, "{read} index entries of {table} read for four actions");
    }
    drop(gateway);
    drop(other);
    logins.drop_all(vec![gateway_pool, other_pool]).await;
}

/// Index entries read so far, by table, of the tables a proposal looks up
/// by agent or login. What a session counted is here once it has flushed.
async fn index_reads(t: &TestDb) -> Vec<(String, i64)> {
    let mut c = t.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *c)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT relname::text, sum(idx_tup_read)::bigint FROM pg_stat_user_indexes
          WHERE schemaname = 'backstop' AND relname IN ('agent_value_minutes', 'agent_logins')
          GROUP BY relname ORDER BY relname",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap()
}

/// A session's counts reach the shared statistics when it goes idle, at
/// most once a second unless forced: forced, they are there once the next
/// statement has answered.
async fn flush_stats(c: &mut sqlx::PgConnection) {
    for q in ["SELECT pg_stat_force_next_flush()", "SELECT 1"] {
        sqlx::query(q).execute(&mut *c).await.unwrap();
    }
}

/// One refund by the single calls (the client's `propose` and
/// `record_result`), allowed and executed.
async fn one_call_at_a_time(c: &mut sqlx::PgConnection, agent: &str, n: usize) {
    let params = json!({"customer_id": format!("c-{n}"), "amount": 5, "order_id": format!("o-{n}"), "reason": "late"});
    let d = contract::propose(&mut *c, &prop(agent, "issue_refund", params, None, 0.97))
        .await
        .unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    let r = contract::record_result(&mut *c, d.action_id, true, Some(&json!({"refund_id": "rf"})), None)
        .await
        .unwrap();
    assert_eq!(r.status, "executed");
}

async fn propose_ids(c: &mut sqlx::PgConnection, batch: serde_json::Value) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT action_id FROM backstop.propose_batch($1) ORDER BY i")
        .bind(batch)
        .fetch_all(c)
        .await
        .unwrap()
}

async fn record_ids(c: &mut sqlx::PgConnection, results: serde_json::Value) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM backstop.record_results($1) ORDER BY i")
        .bind(results)
        .fetch_all(c)
        .await
        .unwrap()
}

/// A per-entity cumulative limit holds against two agents refunding one
/// customer at once: the second proposal reads the customer's total only
/// after the first has committed its amount. As single calls, and as two
/// batches (which the set-based path leaves to propose_batch's loop, which
/// takes every request's gates at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_entity_limit_holds_against_agents_at_once() {
    let t = setup().await;
    let text = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    let per_entity = text.replacen("window = \"1h\"\n", "window = \"1h\"\nper = \"entity\"\n", 1);
    assert_ne!(per_entity, text);
    load_policy_text(&t, &per_entity).await;
    let refund = |customer: &str, amount: i64| serde_json::json!({"customer_id": customer, "amount": amount, "order_id": "o-1", "reason": "damaged"});
    let customer_total = |customer: &'static str| {
        let pool = t.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT coalesce(sum(total), 0)::bigint FROM backstop.entity_value_minutes WHERE entity = $1",
            )
            .bind(customer)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Each agent on a login of its own, the batches on a gateway's login
    // mapped to the agents it serves: the weakest duty that could try.
    let mut logins = Logins::new(&t);
    let (bot1, bot2) = (Logins::name("ent_bot1"), Logins::name("ent_bot2"));
    let pool1 = logins.login(&t, "ent_bot1", Some("agent")).await;
    let pool2 = logins.login(&t, "ent_bot2", Some("agent")).await;
    let gw = logins.login(&t, "ent_gw", Some("agent")).await;
    sqlx::query(
        "INSERT INTO backstop.agent_logins (login, agent) SELECT $1, a || '-' || n FROM unnest('{x,y}'::text[]) a, generate_series(1, 3) n",
    )
    .bind(Logins::name("ent_gw"))
    .execute(t.pool())
    .await
    .unwrap();
    let call = "SELECT verdict FROM backstop.propose($1, 'issue_refund', $2, confidence => 0.97)";
    let mut first = pool1.begin().await.unwrap();
    let verdict: String = sqlx::query_scalar(call)
        .bind(&bot1)
        .bind(refund("c-shared", 4000))
        .fetch_one(&mut *first)
        .await
        .unwrap();
    assert_eq!(verdict, "allow");
    let second = {
        let params = refund("c-shared", 4000);
        let pool2 = pool2.clone();
        tokio::spawn(async move {
            sqlx::query_scalar::<_, String>(call)
                .bind(bot2)
                .bind(params)
                .fetch_one(&pool2)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!second.is_finished(), "the second waits for the first's amount");
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), "hold");
    assert_eq!(customer_total("c-shared").await, 4000);

    let batch = |a: &str| {
        serde_json::json!([
            {"agent": format!("{a}-1"), "tool": "issue_refund", "params": refund("c-batch", 4000), "confidence": 0.97},
            {"agent": format!("{a}-2"), "tool": "issue_refund", "params": refund(&format!("c-{a}-2"), 10), "confidence": 0.97},
            {"agent": format!("{a}-3"), "tool": "issue_refund", "params": refund(&format!("c-{a}-3"), 10), "confidence": 0.97},
        ])
    };
    let verdicts = "SELECT verdict FROM backstop.propose_batch($1) ORDER BY i";
    let mut first = gw.begin().await.unwrap();
    let got: Vec<String> = sqlx::query_scalar(verdicts)
        .bind(batch("x"))
        .fetch_all(&mut *first)
        .await
        .unwrap();
    assert_eq!(got, ["allow", "allow", "allow"]);
    let second = {
        let gw = gw.clone();
        let b = batch("y");
        tokio::spawn(async move { sqlx::query_scalar::<_, String>(verdicts).bind(b).fetch_all(&gw).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!second.is_finished(), "the second batch waits for the first's amounts");
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), ["hold", "allow", "allow"]);
    assert_eq!(customer_total("c-batch").await, 4000);
    logins.drop_all(vec![pool1, pool2, gw]).await;
}
