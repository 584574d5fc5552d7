//! The ledger: every contract function, append-only enforcement, tamper
//! evidence, the kill switch under load, projections vs rebuild.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backstop::contract::{self, ContractError, Proposal, Scope, Verdict};
use common::TestDb;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

fn refund(agent: &str, customer: &str, amount: i64, confidence: f32) -> Proposal {
    Proposal {
        agent: agent.into(),
        tool: "issue_refund".into(),
        params: json!({"customer_id": customer, "amount": amount, "order_id": "o-1"}),
        confidence: Some(confidence),
        reasoning: Some("the order arrived damaged".into()),
        correlation_id: Some(format!("ticket-{customer}")),
        ..Default::default()
    }
}

fn code(e: &ContractError) -> String {
    match e {
        ContractError::Refused { code, .. } => code.clone(),
        ContractError::Database(d) => format!("db: {d}"),
        ContractError::Unknown(u) => format!("unknown: {u}"),
    }
}

async fn setup() -> TestDb {
    let t = TestDb::new().await;
    t.load_assets().await;
    t
}

async fn execute_ok(t: &TestDb, id: Uuid, refund_id: &str) -> contract::Recorded {
    contract::record_result(
        t.pool(),
        id,
        true,
        Some(&json!({"refund_id": refund_id, "status": "issued"})),
        None,
    )
    .await
    .expect("record_result")
}

#[tokio::test]
async fn propose_allows_holds_and_blocks_and_logs_every_attempt() {
    let t = setup().await;
    let before = t.log_len().await;
    let allow = contract::propose(t.pool(), &refund("refund-bot", "c-1", 120, 0.95))
        .await
        .unwrap();
    assert_eq!(allow.verdict, Verdict::Allow, "{}", allow.reason);
    let hold = contract::propose(t.pool(), &refund("refund-bot", "c-2", 47_000, 0.95))
        .await
        .unwrap();
    assert_eq!(hold.verdict, Verdict::Hold);
    assert!(hold.reason.contains("two approvers"), "{}", hold.reason);
    let unknown = contract::propose(
        t.pool(),
        &Proposal {
            agent: "refund-bot".into(),
            tool: "launch_rocket".into(),
            params: json!({}),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(unknown.verdict, Verdict::Block);
    assert!(
        unknown.reason.contains("unknown tool launch_rocket"),
        "{}",
        unknown.reason
    );
    // A churned customer is on the suppression list: blocked by policy.
    sqlx::query("INSERT INTO crm.suppression_list VALUES ('c-9', 'churned')")
        .execute(t.pool())
        .await
        .unwrap();
    let listed = contract::propose(t.pool(), &refund("refund-bot", "c-9", 10, 0.99))
        .await
        .unwrap();
    assert_eq!(listed.verdict, Verdict::Block);
    assert!(listed.reason.contains("c-9"), "{}", listed.reason);
    // Every attempt is in the log, the blocked ones included.
    assert_eq!(t.log_len().await, before + 4);
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM backstop.action_log WHERE seq > $1 ORDER BY seq")
        .bind(before)
        .fetch_all(t.pool())
        .await
        .unwrap();
    assert_eq!(kinds, ["allowed", "held", "blocked", "blocked"]);
}

#[tokio::test]
async fn value_at_stake_comes_from_the_declared_parameter() {
    let t = setup().await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-1", 600, 0.99))
        .await
        .unwrap();
    let amount: Option<Decimal> = sqlx::query_scalar("SELECT amount FROM backstop.actions WHERE action_id = $1")
        .bind(d.action_id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(amount, Some(Decimal::from(600)));
}

#[tokio::test]
async fn repeated_idempotency_key_returns_the_first_answer_and_appends_nothing() {
    let t = setup().await;
    let mut p = refund("refund-bot", "c-1", 120, 0.95);
    p.idempotency_key = Some("k-1".into());
    let first = contract::propose(t.pool(), &p).await.unwrap();
    let len = t.log_len().await;
    let again = contract::propose(t.pool(), &p).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(t.log_len().await, len);
    // Concurrent callers with one key get one action.
    p.idempotency_key = Some("k-2".into());
    let futs: Vec<_> = (0..8)
        .map(|_| {
            let pool = t.pool().clone();
            let p = p.clone();
            tokio::spawn(async move { contract::propose(&pool, &p).await.unwrap().action_id })
        })
        .collect();
    let mut ids = Vec::new();
    for f in futs {
        ids.push(f.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE idempotency_key = 'k-2'")
            .await,
        1
    );
}

#[tokio::test]
async fn malformed_input_is_refused_and_appends_nothing() {
    let t = setup().await;
    let len = t.log_len().await;
    let base = refund("refund-bot", "c-1", 120, 0.95);
    let cases: Vec<(Proposal, &str)> = vec![
        (
            Proposal {
                params: json!([1, 2]),
                ..base.clone()
            },
            "params must be a JSON object",
        ),
        (
            Proposal {
                params: json!("x"),
                ..base.clone()
            },
            "params must be a JSON object",
        ),
        (
            Proposal {
                amount: Some(Decimal::from(-5)),
                ..base.clone()
            },
            "amount must not be negative",
        ),
        (
            Proposal {
                amount: Some(Decimal::new(1, 9)),
                ..base.clone()
            },
            "at most 6 decimals",
        ),
        (
            Proposal {
                confidence: Some(1.5),
                ..base.clone()
            },
            "confidence must be between 0 and 1",
        ),
        (
            Proposal {
                confidence: Some(f32::NAN),
                ..base.clone()
            },
            "confidence must be between 0 and 1",
        ),
        (
            Proposal {
                agent: "".into(),
                ..base.clone()
            },
            "agent must be 1 to 128 characters",
        ),
        (
            Proposal {
                agent: "bad name!".into(),
                ..base.clone()
            },
            "agent must be",
        ),
        (
            Proposal {
                tool: "x".repeat(200),
                ..base.clone()
            },
            "tool must be",
        ),
        (
            Proposal {
                params: json!({"blob": "x".repeat(70_000)}),
                ..base.clone()
            },
            "the limit is 65536 bytes",
        ),
        (
            Proposal {
                reasoning: Some("r".repeat(70_000)),
                ..base.clone()
            },
            "reasoning is 70000 characters",
        ),
        (
            Proposal {
                parent_action: Some(Uuid::new_v4()),
                ..base.clone()
            },
            "is not a known action",
        ),
        (
            Proposal {
                params: json!({"customer_id": "c", "amount": "lots"}),
                ..base.clone()
            },
            "must be a non-negative number",
        ),
    ];
    for (p, expect) in cases {
        let e = contract::propose(t.pool(), &p).await.expect_err(expect);
        assert!(e.to_string().contains(expect), "expected {expect:?}, got {e}");
        assert!(e.to_string().starts_with("propose: "), "{e}");
    }
    // NaN and infinite amounts cannot be sent through rust_decimal; send them as SQL.
    for bad in ["'NaN'::numeric", "'Infinity'::numeric"] {
        let e = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM backstop.propose('refund-bot', 'issue_refund', '{{}}', {bad})"
        )))
        .execute(t.pool())
        .await
        .expect_err("non-finite amount");
        assert!(e.to_string().contains("amount must be a finite number"), "{e}");
    }
    let e = contract::record_result(t.pool(), Uuid::new_v4(), true, None, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "P0002");
    let e = contract::decision(t.pool(), Uuid::new_v4()).await.unwrap_err();
    assert!(e.to_string().contains("unknown action_id"), "{e}");
    assert_eq!(t.log_len().await, len, "bad input appended to the log");
}

#[tokio::test]
async fn record_result_stages_the_compensation_and_refuses_actions_never_allowed() {
    let t = setup().await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-1", 120, 0.95))
        .await
        .unwrap();
    let r = execute_ok(&t, d.action_id, "rf-1").await;
    assert_eq!(r.status, "executed");
    assert_eq!(r.compensation, "staged");
    let (tool, params): (String, serde_json::Value) =
        sqlx::query_as("SELECT inverse_tool, inverse_params FROM backstop.actions WHERE action_id = $1")
            .bind(d.action_id)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(tool, "reverse_refund");
    assert_eq!(
        params,
        json!({"refund_id": "rf-1", "customer_id": "c-1", "amount": 120})
    );
    // The same report again is a no-op; a different one is refused.
    let len = t.log_len().await;
    assert_eq!(execute_ok(&t, d.action_id, "rf-1").await, r);
    assert_eq!(t.log_len().await, len);
    let e = contract::record_result(t.pool(), d.action_id, true, Some(&json!({"refund_id": "rf-2"})), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already has a different result"), "{e}");
    // Held, blocked: never allowed.
    let held = contract::propose(t.pool(), &refund("refund-bot", "c-2", 47_000, 0.9))
        .await
        .unwrap();
    let e = contract::record_result(t.pool(), held.action_id, true, None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("was never allowed (it is held)"), "{e}");
    let blocked = contract::propose(
        t.pool(),
        &Proposal {
            agent: "a".into(),
            tool: "nope".into(),
            params: json!({}),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = contract::record_result(t.pool(), blocked.action_id, true, None, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000");
    // A missing binding is recorded, not lost: the compensation is unbound.
    let d2 = contract::propose(t.pool(), &refund("refund-bot", "c-3", 50, 0.95))
        .await
        .unwrap();
    let r2 = contract::record_result(t.pool(), d2.action_id, true, Some(&json!({"status": "issued"})), None)
        .await
        .unwrap();
    assert_eq!(r2.compensation, "unbound: refund_id");
    // ...unless the agent passes it explicitly.
    let d3 = contract::propose(t.pool(), &refund("refund-bot", "c-4", 50, 0.95))
        .await
        .unwrap();
    let r3 = contract::record_result(
        t.pool(),
        d3.action_id,
        true,
        Some(&json!({})),
        Some(&json!({"refund_id": "rf-x"})),
    )
    .await
    .unwrap();
    assert_eq!(r3.compensation, "staged");
    // A failed call stages nothing.
    let d4 = contract::propose(t.pool(), &refund("refund-bot", "c-5", 50, 0.95))
        .await
        .unwrap();
    let r4 = contract::record_result(
        t.pool(),
        d4.action_id,
        false,
        Some(&json!({"error": "card declined"})),
        None,
    )
    .await
    .unwrap();
    assert_eq!((r4.status.as_str(), r4.compensation.as_str()), ("failed", "none"));
}

#[tokio::test]
async fn approvals_need_distinct_people_who_did_not_propose() {
    let t = setup().await;
    let ana = t.as_operator("ana").await;
    let bob = t.as_operator("bob").await;
    let agent_self = t.as_operator("refund-bot").await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-2", 47_000, 0.9))
        .await
        .unwrap();
    assert_eq!(
        contract::decision(t.pool(), d.action_id).await.unwrap().0,
        Verdict::Hold
    );
    let e = contract::approve(&agent_self, d.action_id, "").await.unwrap_err();
    assert!(e.to_string().contains("cannot approve it"), "{e}");
    let a = contract::approve(&ana, d.action_id, "ok").await.unwrap();
    assert_eq!((a.verdict, a.approvals, a.approvals_needed), (Verdict::Hold, 1, 2));
    let e = contract::approve(&ana, d.action_id, "again").await.unwrap_err();
    assert!(e.to_string().contains("second, different approver"), "{e}");
    let b = contract::approve(&bob, d.action_id, "ok").await.unwrap();
    assert_eq!(b.verdict, Verdict::Allow);
    let (v, reason) = contract::decision(t.pool(), d.action_id).await.unwrap();
    assert_eq!(v, Verdict::Allow);
    assert_eq!(reason, "approved by ana and bob");
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM backstop.action_log WHERE action_id = $1 AND kind = 'approved' ORDER BY seq",
    )
    .bind(d.action_id)
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert_eq!(actors, ["ana", "bob"]);

    // Reject needs a reason and blocks.
    let d2 = contract::propose(t.pool(), &refund("refund-bot", "c-3", 20_000, 0.9))
        .await
        .unwrap();
    let e = contract::reject(&ana, d2.action_id, "  ").await.unwrap_err();
    assert!(e.to_string().contains("note is required"), "{e}");
    contract::reject(&ana, d2.action_id, "not entitled").await.unwrap();
    let (v, reason) = contract::decision(t.pool(), d2.action_id).await.unwrap();
    assert_eq!((v, reason.as_str()), (Verdict::Block, "rejected by ana: not entitled"));
    let e = contract::approve(&bob, d2.action_id, "").await.unwrap_err();
    assert!(
        e.to_string().contains("not waiting for approval (it is rejected)"),
        "{e}"
    );
}

#[tokio::test]
async fn held_actions_expire_into_a_block() {
    let t = setup().await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-2", 47_000, 0.9))
        .await
        .unwrap();
    // Move the expiry into the past as the clock would.
    sqlx::query("UPDATE backstop.actions SET expires_at = now() - interval '1 second' WHERE action_id = $1")
        .bind(d.action_id)
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE backstop.approval_queue SET expires_at = now() - interval '1 second' WHERE action_id = $1")
        .bind(d.action_id)
        .execute(t.pool())
        .await
        .unwrap();
    assert_eq!(
        contract::decision(t.pool(), d.action_id).await.unwrap().0,
        Verdict::Block
    );
    let e = contract::approve(&t.as_operator("ana").await, d.action_id, "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("can no longer be approved"), "{e}");
    assert_eq!(contract::expire_held(t.pool()).await.unwrap(), 1);
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'expired'")
            .await,
        1
    );
    assert_eq!(t.count("SELECT count(*) FROM backstop.approval_queue").await, 0);
}

#[tokio::test]
async fn pause_and_resume_each_scope() {
    let t = setup().await;
    let cmd = t.as_operator("ic").await;
    contract::pause(&cmd, Scope::Agent, Some("refund-bot"), "drifting")
        .await
        .unwrap();
    let blocked = contract::propose(t.pool(), &refund("refund-bot", "c-1", 10, 0.99))
        .await
        .unwrap();
    assert_eq!(blocked.verdict, Verdict::Block);
    assert_eq!(blocked.reason, "agent refund-bot paused by ic: drifting");
    let other = contract::propose(t.pool(), &refund("other-bot", "c-1", 10, 0.99))
        .await
        .unwrap();
    assert_eq!(other.verdict, Verdict::Allow);
    contract::pause(&cmd, Scope::Tool, Some("issue_refund"), "processor outage")
        .await
        .unwrap();
    let other = contract::propose(t.pool(), &refund("other-bot", "c-1", 10, 0.99))
        .await
        .unwrap();
    assert_eq!(other.verdict, Verdict::Block);
    let e = contract::resume(&cmd, Scope::Fleet, None, "x").await.unwrap_err();
    assert!(e.to_string().contains("the fleet is not paused"), "{e}");
    let e = contract::pause(&cmd, Scope::Agent, None, "x").await.unwrap_err();
    assert!(e.to_string().contains("agent (the target) must be"), "{e}");
    let e = contract::pause(&cmd, Scope::Fleet, None, "").await.unwrap_err();
    assert!(e.to_string().contains("reason is required"), "{e}");
    contract::resume(&cmd, Scope::Tool, Some("issue_refund"), "back")
        .await
        .unwrap();
    contract::resume(&cmd, Scope::Agent, Some("refund-bot"), "fixed")
        .await
        .unwrap();
    let ok = contract::propose(t.pool(), &refund("refund-bot", "c-1", 10, 0.99))
        .await
        .unwrap();
    assert_eq!(ok.verdict, Verdict::Allow);
    let by: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM backstop.action_log WHERE kind IN ('paused', 'resumed') ORDER BY seq")
            .fetch_all(t.pool())
            .await
            .unwrap();
    assert_eq!(by, ["ic", "ic", "ic", "ic"]);
}

#[tokio::test]
async fn an_approved_action_waits_while_paused() {
    let t = setup().await;
    let ana = t.as_operator("ana").await;
    let bob = t.as_operator("bob").await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-2", 47_000, 0.9))
        .await
        .unwrap();
    contract::approve(&ana, d.action_id, "").await.unwrap();
    contract::approve(&bob, d.action_id, "").await.unwrap();
    contract::pause(&ana, Scope::Fleet, None, "incident").await.unwrap();
    let (v, reason) = contract::decision(t.pool(), d.action_id).await.unwrap();
    assert_eq!(v, Verdict::Hold);
    assert!(reason.contains("fleet paused by ana"), "{reason}");
    contract::resume(&ana, Scope::Fleet, None, "ok").await.unwrap();
    assert_eq!(
        contract::decision(t.pool(), d.action_id).await.unwrap().0,
        Verdict::Allow
    );
}

#[tokio::test]
async fn signals_are_traced_to_the_agent() {
    let t = setup().await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-1", 10, 0.99))
        .await
        .unwrap();
    execute_ok(&t, d.action_id, "rf-1").await;
    let s = contract::report_signal(
        t.pool(),
        "complaint",
        None,
        Some("ticket-c-1"),
        Some(&json!({"text": "I never asked"})),
    )
    .await
    .unwrap();
    assert_eq!(s.agent.as_deref(), Some("refund-bot"));
    assert_eq!(s.action_id, Some(d.action_id));
    let s = contract::report_signal(
        t.pool(),
        "chargeback",
        None,
        None,
        Some(&json!({"action_id": d.action_id})),
    )
    .await
    .unwrap();
    assert_eq!(s.agent.as_deref(), Some("refund-bot"));
    let e = contract::report_signal(t.pool(), "complaint", None, None, Some(&json!({"action_id": "nope"})))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must be a UUID"), "{e}");
    assert_eq!(t.count("SELECT count(*) FROM backstop.signals").await, 2);
}

#[tokio::test]
async fn compensation_outcomes_and_the_worker_protocol() {
    let t = setup().await;
    let ana = t.as_operator("ana").await;
    let d = contract::propose(t.pool(), &refund("refund-bot", "c-1", 100, 0.95))
        .await
        .unwrap();
    execute_ok(&t, d.action_id, "rf-1").await;
    let email = contract::propose(
        t.pool(),
        &Proposal {
            agent: "outreach-bot".into(),
            tool: "send_email".into(),
            params: json!({"customer_id": "c-1", "to": "a@b", "subject": "hi"}),
            confidence: Some(0.99),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    contract::record_result(t.pool(), email.action_id, true, Some(&json!({"email_id": 1})), None)
        .await
        .unwrap();
    let pending = contract::propose(t.pool(), &refund("refund-bot", "c-2", 100, 0.95))
        .await
        .unwrap();

    let e = contract::request_compensation(&ana, &[Uuid::new_v4()], "x", None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "P0002");
    let e = contract::request_compensation(&ana, &[d.action_id], "", None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reason is required"), "{e}");

    let out = contract::request_compensation(
        &ana,
        &[d.action_id, email.action_id, pending.action_id],
        "wrong customer",
        None,
    )
    .await
    .unwrap();
    let outcome = |id: Uuid| out.iter().find(|o| o.action_id == id).unwrap().outcome.clone();
    assert_eq!(outcome(d.action_id), "requested");
    assert_eq!(outcome(email.action_id), "irreversible");
    assert_eq!(outcome(pending.action_id), "not_executed");
    let again = contract::request_compensation(&ana, &[d.action_id], "again", None)
        .await
        .unwrap();
    assert_eq!(again[0].outcome, "already_requested");

    // Claim, fail once (retried later), claim again after the backoff, succeed.
    let claims = contract::claim_compensations(t.pool(), "w1", None, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].inverse_tool, "reverse_refund");
    assert!(
        contract::claim_compensations(t.pool(), "w2", None, 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let e = contract::finish_compensation(t.pool(), d.action_id, "w2", true, &json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not hold the lease"), "{e}");
    let s = contract::finish_compensation(t.pool(), d.action_id, "w1", false, &json!({"error": "timeout"}))
        .await
        .unwrap();
    assert_eq!(s, "requested");
    sqlx::query("UPDATE backstop.compensations SET next_attempt_at = now()")
        .execute(t.pool())
        .await
        .unwrap();
    let claims = contract::claim_compensations(t.pool(), "w2", None, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claims[0].attempt, 2);
    let s = contract::finish_compensation(t.pool(), d.action_id, "w2", true, &json!({"reversed": 100}))
        .await
        .unwrap();
    assert_eq!(s, "compensated");
    let done = contract::request_compensation(&ana, &[d.action_id], "again", None)
        .await
        .unwrap();
    assert_eq!(done[0].outcome, "already_compensated");

    // A terminal failure raises a finding for a person.
    let d2 = contract::propose(t.pool(), &refund("refund-bot", "c-3", 100, 0.95))
        .await
        .unwrap();
    execute_ok(&t, d2.action_id, "rf-3").await;
    contract::request_compensation(&ana, &[d2.action_id], "undo", None)
        .await
        .unwrap();
    contract::claim_compensations(t.pool(), "w1", None, 10, Duration::from_secs(30))
        .await
        .unwrap();
    let s = contract::finish_compensation(
        t.pool(),
        d2.action_id,
        "w1",
        false,
        &json!({"outcome": "condition_failed", "error": "withdrawn"}),
    )
    .await
    .unwrap();
    assert_eq!(s, "condition_failed");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings WHERE kind = 'compensation_failed'")
            .await,
        1
    );
    // An expired window is reported at request time.
    let d3 = contract::propose(t.pool(), &refund("refund-bot", "c-4", 100, 0.95))
        .await
        .unwrap();
    execute_ok(&t, d3.action_id, "rf-4").await;
    sqlx::query("UPDATE backstop.actions SET comp_deadline = now() - interval '1 day' WHERE action_id = $1")
        .bind(d3.action_id)
        .execute(t.pool())
        .await
        .unwrap();
    let out = contract::request_compensation(&ana, &[d3.action_id], "late", None)
        .await
        .unwrap();
    assert_eq!(out[0].outcome, "expired");
}

#[tokio::test]
async fn findings_merge_while_open_and_follow_their_lifecycle() {
    let t = setup().await;
    let sup = t.as_operator("supervisor").await;
    let ana = t.as_operator("ana").await;
    let a = contract::raise_finding(
        &sup,
        "drift",
        "medium",
        Some("refund-bot"),
        None,
        &json!({"rule": "js"}),
    )
    .await
    .unwrap();
    let b = contract::raise_finding(
        &sup,
        "drift",
        "high",
        Some("refund-bot"),
        None,
        &json!({"rule": "js", "score": 0.3}),
    )
    .await
    .unwrap();
    assert!(!a.merged && b.merged);
    assert_eq!(a.finding_id, b.finding_id);
    let e = contract::raise_finding(&sup, "vibes", "medium", None, None, &json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("kind must be one of"), "{e}");
    contract::acknowledge_finding(&ana, a.finding_id, "looking")
        .await
        .unwrap();
    let c = contract::raise_finding(&sup, "drift", "high", Some("refund-bot"), None, &json!({"rule": "js"}))
        .await
        .unwrap();
    assert!(c.merged, "an acknowledged finding still absorbs duplicates");
    contract::resolve_finding(&ana, a.finding_id, "retrained")
        .await
        .unwrap();
    let d = contract::raise_finding(&sup, "drift", "high", Some("refund-bot"), None, &json!({"rule": "js"}))
        .await
        .unwrap();
    assert!(!d.merged && d.finding_id != a.finding_id);
    let (count, status, by): (i32, String, String) =
        sqlx::query_as("SELECT count, status, status_by FROM backstop.findings WHERE finding_id = $1")
            .bind(a.finding_id)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!((count, status.as_str(), by.as_str()), (3, "resolved", "ana"));
}

#[tokio::test]
async fn the_log_refuses_update_delete_and_truncate() {
    let t = setup().await;
    contract::propose(t.pool(), &refund("refund-bot", "c-1", 10, 0.99))
        .await
        .unwrap();
    for sql in [
        "UPDATE backstop.action_log SET amount = 0",
        "DELETE FROM backstop.action_log",
        "TRUNCATE backstop.action_log",
    ] {
        let e = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(t.pool())
            .await
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("append-only") && m.contains("is refused"), "{sql}: {m}");
    }
    let e = sqlx::query("DELETE FROM backstop.seals")
        .execute(t.pool())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"));
}

/// A mixed workload, sealed, for the tampering tests.
async fn sealed_workload(t: &TestDb) -> Vec<i64> {
    let ana = t.as_operator("ana").await;
    for i in 0..6 {
        let d = contract::propose(t.pool(), &refund("refund-bot", &format!("c-{i}"), 50 + i, 0.95))
            .await
            .unwrap();
        execute_ok(t, d.action_id, &format!("rf-{i}")).await;
    }
    contract::pause(&ana, Scope::Fleet, None, "drill").await.unwrap();
    contract::resume(&ana, Scope::Fleet, None, "drill over").await.unwrap();
    contract::seal_all(t.pool()).await.unwrap();
    let report = contract::verify::verify(t.pool(), false, true).await.unwrap();
    assert!(report.ok, "an untouched log verifies clean: {:?}", report.problems);
    sqlx::query_scalar("SELECT seq FROM backstop.action_log WHERE kind = 'executed' ORDER BY seq")
        .fetch_all(t.pool())
        .await
        .unwrap()
}

/// The sealer hashes every row through `row_digest`; a SQL function the
/// planner cannot inline runs as a query of its own a row (about 14% of a
/// row's sealing). Inlining needs no SET clause and a volatility no
/// stricter than what it calls: an IMMUTABLE row_digest around STABLE
/// convert_to stayed a call. `canon`, the canonical text inside it, is
/// inlined in turn (as PL/pgSQL it was a call a row, each passing the whole
/// row as a record: 20% of a row's digest). Inlined, the text is the same
/// text, field for field, and an unknown version is still refused.
#[tokio::test]
async fn the_sealer_hashes_rows_with_row_digest_and_canon_inlined() {
    let t = setup().await;
    sealed_workload(&t).await;
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT backstop.row_digest(l, 2::smallint) FROM backstop.action_log l",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("sha256(convert_to((jsonb_build_array(")
            && !plan.contains("row_digest(")
            && !plan.contains("canon("),
        "row_digest or canon is not inlined:\n{plan}"
    );
    // Version 2 spelled out, as the seals made before it was inlined hashed it.
    let differ: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backstop.action_log l
          WHERE backstop.row_digest(l) IS DISTINCT FROM sha256(convert_to(jsonb_build_array(
                    l.seq, (extract(epoch FROM l.at) * 1000000)::bigint, l.txid::text, l.kind, l.actor,
                    l.agent, l.tool, l.action_id, l.correlation_id, l.parent_action,
                    l.amount::text, encode(float4send(l.confidence), 'hex'), l.reasoning,
                    CASE WHEN l.inputs IS NOT NULL THEN jsonb_build_array(l.inputs) END,
                    CASE WHEN l.params IS NOT NULL THEN jsonb_build_array(l.params) END,
                    CASE WHEN l.result IS NOT NULL THEN jsonb_build_array(l.result) END,
                    l.detail, l.policy_version, l.registry_version)::text, 'UTF8'))",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(differ, 0);
    // The version read from a column (as verify reads each seal's), not
    // folded away at plan time: every known version answers, an unknown one
    // is refused by name.
    let answered: i64 = sqlx::query_scalar(
        "SELECT count(backstop.canon(l, v.v)) FROM backstop.action_log l, (VALUES (1::smallint), (2::smallint)) v(v)",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(answered, 2 * rows);
    for version in ["3::smallint", "v.v"] {
        let e = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT backstop.canon(l, {version}) FROM backstop.action_log l, (VALUES (3::smallint)) v(v) LIMIT 1"
        )))
        .fetch_one(t.pool())
        .await
        .expect_err("an unknown version is refused");
        assert!(
            e.to_string().contains("canon: no canonical text version 3 (1 or 2)"),
            "{e}"
        );
    }
}

async fn tamper(t: &TestDb, sql: &str) {
    use sqlx::Executor;
    let mut su = t.superuser().await;
    su.execute("SET session_replication_role = replica").await.unwrap();
    su.execute(sqlx::AssertSqlSafe(sql.to_string())).await.unwrap();
}

async fn first_bad(t: &TestDb) -> (Option<i64>, Vec<String>) {
    let r = contract::verify::verify(t.pool(), false, false).await.unwrap();
    assert!(!r.ok);
    (r.first_bad_seq, r.problems.iter().map(|p| p.kind.clone()).collect())
}

#[tokio::test]
async fn verify_names_an_altered_row() {
    let t = setup().await;
    let seqs = sealed_workload(&t).await;
    tamper(
        &t,
        &format!("UPDATE backstop.action_log SET amount = 1 WHERE seq = {}", seqs[2]),
    )
    .await;
    let (bad, kinds) = first_bad(&t).await;
    assert_eq!(bad, Some(seqs[2]));
    assert_eq!(kinds, ["altered"]);
}

#[tokio::test]
async fn verify_names_a_deleted_row() {
    let t = setup().await;
    let seqs = sealed_workload(&t).await;
    tamper(&t, &format!("DELETE FROM backstop.action_log WHERE seq = {}", seqs[1])).await;
    let (bad, kinds) = first_bad(&t).await;
    assert_eq!(bad, Some(seqs[1]));
    assert_eq!(kinds, ["deleted"]);
}

#[tokio::test]
async fn verify_names_swapped_rows() {
    let t = setup().await;
    let seqs = sealed_workload(&t).await;
    let (a, b) = (seqs[1], seqs[3]);
    tamper(
        &t,
        &format!("UPDATE backstop.action_log SET seq = CASE seq WHEN {a} THEN {b} ELSE {a} END + 1000000 WHERE seq IN ({a}, {b})"),
    )
    .await;
    tamper(
        &t,
        "UPDATE backstop.action_log SET seq = seq - 1000000 WHERE seq > 1000000",
    )
    .await;
    let (bad, _) = first_bad(&t).await;
    assert_eq!(bad, Some(a));
}

#[tokio::test]
async fn verify_names_a_forged_row() {
    let t = setup().await;
    let seqs = sealed_workload(&t).await;
    // Forged into the past: a fresh transaction claiming a seq below what is sealed.
    let _ = seqs;
    tamper(
        &t,
        "INSERT INTO backstop.action_log (seq, kind, actor, agent, tool, amount, detail) \
         VALUES (0, 'allowed', 'refund-bot', 'refund-bot', 'issue_refund', 5, '{}')",
    )
    .await;
    let (bad, kinds) = first_bad(&t).await;
    assert_eq!(bad, Some(0));
    assert_eq!(kinds, ["out_of_place"]);

    // Forged with an old transaction id: it lands in a sealed window.
    let t2 = setup().await;
    let seqs = sealed_workload(&t2).await;
    let old_txid: String = sqlx::query_scalar("SELECT txid::text FROM backstop.action_log WHERE seq = $1")
        .bind(seqs[0])
        .fetch_one(t2.pool())
        .await
        .unwrap();
    tamper(
        &t2,
        &format!(
            "INSERT INTO backstop.action_log (txid, seq, kind, actor, detail) VALUES ('{old_txid}', 999999, 'approved', 'mallory', '{{}}')"
        ),
    )
    .await;
    let (bad, kinds) = first_bad(&t2).await;
    assert_eq!(bad, Some(999_999));
    assert_eq!(kinds, ["inserted"]);
}

#[tokio::test]
async fn verify_catches_a_projection_changed_outside_the_contract() {
    let t = setup().await;
    sealed_workload(&t).await;
    sqlx::query("UPDATE backstop.actions SET status = 'allowed' WHERE status = 'executed' AND ctid = (SELECT min(ctid) FROM backstop.actions WHERE status = 'executed')")
        .execute(t.pool())
        .await
        .unwrap();
    let r = contract::verify::verify(t.pool(), true, true).await.unwrap();
    assert!(!r.ok);
    assert!(r.problems.iter().all(|p| p.kind == "projection"), "{:?}", r.problems);
}

#[tokio::test]
async fn no_allow_is_logged_after_a_fleet_pause_under_load() {
    let t = setup().await;
    let ic = t.as_operator("ic").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    for i in 0..32 {
        let pool = t.pool().clone();
        let stop = stop.clone();
        agents.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let d = contract::propose(&pool, &refund(&format!("agent-{i}"), "c-1", 5, 0.99))
                    .await
                    .unwrap();
                if d.verdict == Verdict::Allow {
                    n += 1;
                }
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let paused = contract::pause(&ic, Scope::Fleet, None, "load test").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut allowed = 0;
    for a in agents {
        allowed += a.await.unwrap();
    }
    assert!(allowed > 50, "the load ran ({allowed} allows)");
    let after = t
        .count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE kind = 'allowed' AND seq > {}",
            paused.seq
        ))
        .await;
    assert_eq!(after, 0, "allow verdicts logged after the pause");
    let blocked_after = t
        .count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE kind = 'blocked' AND seq > {}",
            paused.seq
        ))
        .await;
    assert!(blocked_after > 0, "proposals kept coming after the pause");

    // Now one agent and one tool: only covered actions are blocked.
    contract::resume(&ic, Scope::Fleet, None, "over").await.unwrap();
    contract::pause(&ic, Scope::Agent, Some("agent-3"), "just this one")
        .await
        .unwrap();
    contract::pause(&ic, Scope::Tool, Some("issue_credit"), "credits off")
        .await
        .unwrap();
    let mut checks = Vec::new();
    for i in 0..8 {
        let pool = t.pool().clone();
        checks.push(tokio::spawn(async move {
            let refund_v = contract::propose(&pool, &refund(&format!("agent-{i}"), "c-1", 5, 0.99))
                .await
                .unwrap()
                .verdict;
            let credit_v = contract::propose(
                &pool,
                &Proposal {
                    agent: format!("agent-{i}"),
                    tool: "issue_credit".into(),
                    params: json!({"customer_id": "c-1", "amount": 5}),
                    confidence: Some(0.99),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .verdict;
            (i, refund_v, credit_v)
        }));
    }
    for c in checks {
        let (i, r, cr) = c.await.unwrap();
        assert_eq!(
            r,
            if i == 3 { Verdict::Block } else { Verdict::Allow },
            "agent-{i} refund"
        );
        assert_eq!(cr, Verdict::Block, "agent-{i} credit");
    }
}

#[tokio::test]
async fn projections_equal_a_rebuild_from_the_log_after_a_mixed_workload() {
    let t = setup().await;
    let ana = t.as_operator("ana").await;
    let bob = t.as_operator("bob").await;
    let sup = t.as_operator("supervisor").await;
    let mut executed = Vec::new();
    for i in 0..40i64 {
        let amount = if i % 7 == 0 { 20_000 } else { 30 + i };
        let d = contract::propose(
            t.pool(),
            &refund(&format!("bot-{}", i % 4), &format!("c-{i}"), amount, 0.9),
        )
        .await
        .unwrap();
        match d.verdict {
            Verdict::Hold if i % 2 == 0 => {
                if contract::approve(&ana, d.action_id, "ok").await.unwrap().verdict == Verdict::Hold {
                    contract::approve(&bob, d.action_id, "ok").await.unwrap();
                }
                execute_ok(&t, d.action_id, &format!("rf-{i}")).await;
                executed.push(d.action_id);
            }
            Verdict::Hold => contract::reject(&ana, d.action_id, "no").await.unwrap(),
            Verdict::Allow if i % 5 == 0 => {
                contract::record_result(t.pool(), d.action_id, false, Some(&json!({"error": "x"})), None)
                    .await
                    .unwrap();
            }
            Verdict::Allow => {
                execute_ok(&t, d.action_id, &format!("rf-{i}")).await;
                executed.push(d.action_id);
            }
            Verdict::Block => {}
        }
        if i == 20 {
            contract::pause(&ana, Scope::Agent, Some("bot-1"), "check")
                .await
                .unwrap();
        }
    }
    contract::request_compensation(&ana, &executed[..6], "cleanup", None)
        .await
        .unwrap();
    let claims = contract::claim_compensations(t.pool(), "w1", None, 4, Duration::from_secs(30))
        .await
        .unwrap();
    for (i, c) in claims.iter().enumerate() {
        contract::finish_compensation(t.pool(), c.action_id, "w1", i % 2 == 0, &json!({"i": i}))
            .await
            .unwrap();
    }
    contract::report_signal(t.pool(), "complaint", None, Some("ticket-c-1"), None)
        .await
        .unwrap();
    let f = contract::raise_finding(
        &sup,
        "low_confidence",
        "low",
        Some("bot-2"),
        Some(executed[0]),
        &json!({"rule": "conf"}),
    )
    .await
    .unwrap();
    contract::raise_finding(
        &sup,
        "low_confidence",
        "low",
        Some("bot-2"),
        Some(executed[0]),
        &json!({"rule": "conf"}),
    )
    .await
    .unwrap();
    contract::acknowledge_finding(&ana, f.finding_id, "seen").await.unwrap();
    let diffs: Vec<(String, String, serde_json::Value)> = sqlx::query_as("SELECT * FROM backstop.projection_diffs()")
        .fetch_all(t.pool())
        .await
        .unwrap();
    assert!(diffs.is_empty(), "projection differs from rebuild: {diffs:#?}");
    let report = contract::verify::verify(t.pool(), true, true).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[tokio::test]
async fn a_wholesale_rewrite_passes_the_chain_but_not_the_anchor() {
    let t = setup().await;
    let seqs = sealed_workload(&t).await;
    let anchor = contract::verify::export_anchor(t.pool(), "test")
        .await
        .unwrap()
        .expect("a sealed log has a head");
    let clean = contract::verify::verify_anchored(t.pool(), false, true, Some(&anchor))
        .await
        .unwrap();
    assert!(
        clean.ok,
        "the untouched log passes through its anchor: {:?}",
        clean.problems
    );

    // A superuser rewrites history and then every seal, consistently.
    tamper(
        &t,
        &format!(
            "UPDATE backstop.action_log SET reasoning = 'nothing to see here' WHERE seq = {}",
            seqs[1]
        ),
    )
    .await;
    tamper(&t, "DELETE FROM backstop.seals").await;
    contract::seal_all(t.pool()).await.unwrap();
    let chain_only = contract::verify::verify(t.pool(), false, true).await.unwrap();
    assert!(chain_only.ok, "a consistent rewrite passes the chain alone");

    let anchored = contract::verify::verify_anchored(t.pool(), false, true, Some(&anchor))
        .await
        .unwrap();
    assert!(!anchored.ok, "the anchor catches the rewrite");
    assert!(
        anchored.problems.iter().all(|p| p.kind == "anchor"),
        "{:?}",
        anchored.problems
    );
}
