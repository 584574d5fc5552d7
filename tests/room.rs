//! The control room in-process against a real Postgres: the real loop, a
//! TestBackend and scripted keys. Rows committed by agents appear; approve,
//! reject, compensate, pause and resume change the database and are logged
//! with the operator.

mod common;

use std::time::{Duration, Instant};

use backstop::contract::{self, Proposal, Verdict};
use backstop::tui::{RoomOptions, run_loop};
use common::TestDb;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

async fn send(tx: &mpsc::UnboundedSender<Event>, text: &str) {
    for c in text.chars() {
        tx.send(key(KeyCode::Char(c))).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn propose(
    t: &TestDb,
    agent: &str,
    tool: &str,
    params: serde_json::Value,
    amount: Option<i64>,
) -> (Uuid, Verdict) {
    let d = contract::propose(
        t.pool(),
        &Proposal {
            agent: agent.into(),
            tool: tool.into(),
            params,
            amount: amount.map(Into::into),
            confidence: Some(0.95),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (d.action_id, d.verdict)
}

#[tokio::test]
async fn the_room_shows_rows_and_its_actions_change_the_database_under_the_operators_name() {
    let t = TestDb::with_operator("room-ana").await;
    t.load_assets().await;
    // Two held actions (one to approve, one to reject) and one executed refund to compensate.
    let (big, v) = propose(
        &t,
        "mail-bot",
        "send_email",
        json!({"customer_id": "c-1", "to": "a@b", "subject": "s"}),
        Some(900),
    )
    .await;
    assert_eq!(v, Verdict::Hold);
    let (small, v) = propose(
        &t,
        "mail-bot",
        "send_email",
        json!({"customer_id": "c-2", "to": "a@b", "subject": "s"}),
        Some(600),
    )
    .await;
    assert_eq!(v, Verdict::Hold);
    let (refund, v) = propose(
        &t,
        "comp-bot",
        "issue_refund",
        json!({"customer_id": "c-3", "amount": 40}),
        None,
    )
    .await;
    assert_eq!(v, Verdict::Allow);
    contract::record_result(t.pool(), refund, true, Some(&json!({"refund_id": "rf-1"})), None)
        .await
        .unwrap();

    let (ktx, krx) = mpsc::unbounded_channel::<Event>();
    let events = Box::pin(futures_util::stream::unfold(krx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok(e), rx))
    }));
    let db = t.db.clone();
    let room = tokio::spawn(async move {
        let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
        let opts = RoomOptions {
            history: 200,
            ..Default::default()
        };
        let s = run_loop(&mut term, events, db, "room-ana", opts, false).await.unwrap();
        (s, term)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A row committed now arrives in the room.
    let (live, _) = propose(
        &t,
        "live-bot",
        "issue_credit",
        json!({"customer_id": "c-4", "amount": 5}),
        None,
    )
    .await;

    // Approve the highest held action, reject the other.
    send(&ktx, "3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&ktx, "ay").await;
    wait_until("the approval", || async {
        t.count(&format!("SELECT count(*) FROM backstop.action_log WHERE kind = 'approved' AND action_id = '{big}' AND actor = 'room-ana'")).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&ktx, "r").await;
    send(&ktx, "not entitled").await;
    ktx.send(key(KeyCode::Enter)).unwrap();
    wait_until("the rejection", || async {
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE kind = 'rejected' AND action_id = '{small}' AND actor = 'room-ana' AND detail ->> 'note' = 'not entitled'"
        ))
        .await
            == 1
    })
    .await;

    // Compensate the refund: filter the log to its agent, plan, confirm, give a reason (it starts empty).
    send(&ktx, "2/agent:comp-bot").await;
    ktx.send(key(KeyCode::Enter)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&ktx, "c").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    send(&ktx, "y").await;
    send(&ktx, "wrong customer").await;
    ktx.send(key(KeyCode::Enter)).unwrap();
    wait_until("the compensation request", || async {
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE kind = 'compensation_requested' AND action_id = '{refund}' AND actor = 'room-ana'"
        ))
        .await
            == 1
    })
    .await;

    // Pause (one key), then resume (asks; y).
    send(&ktx, "P").await;
    wait_until("the pause", || async {
        t.count(
            "SELECT count(*) FROM backstop.kill_switches WHERE scope = 'fleet' AND paused AND changed_by = 'room-ana'",
        )
        .await
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send(&ktx, "R").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&ktx, "y").await;
    wait_until("the resume", || async {
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'resumed' AND actor = 'room-ana'")
            .await
            == 1
    })
    .await;

    send(&ktx, "q").await;
    let (state, term) = tokio::time::timeout(Duration::from_secs(10), room)
        .await
        .unwrap()
        .unwrap();
    assert!(
        state.log.iter().any(|r| r.action_id == Some(live)),
        "the live row reached the room"
    );
    let screen = format!("{}", term.backend());
    assert!(
        screen.contains("comp-bot") && screen.contains("filter: agent:comp-bot"),
        "{screen}"
    );
    // Every state change the room made is in the log with the operator.
    let by_room = t
        .count("SELECT count(*) FROM backstop.action_log WHERE actor = 'room-ana'")
        .await;
    assert!(by_room >= 5, "{by_room}");
}

#[tokio::test]
async fn an_actions_detail_is_its_projection_row_its_log_rows_and_their_seals() {
    use backstop::contract::{ActionStatus, EventKind};
    let t = TestDb::new().await;
    t.load_assets().await;
    let (refund, v) = propose(
        &t,
        "comp-bot",
        "issue_refund",
        json!({"customer_id": "c-3", "amount": 40}),
        None,
    )
    .await;
    assert_eq!(v, Verdict::Allow);
    let (child, _) = propose(
        &t,
        "comp-bot",
        "send_email",
        json!({"customer_id": "c-3", "to": "a@b", "subject": "s"}),
        None,
    )
    .await;
    sqlx::query("UPDATE backstop.actions SET parent_action = $1 WHERE action_id = $2")
        .bind(refund)
        .bind(child)
        .execute(t.pool())
        .await
        .unwrap();
    // The proposal is sealed; the result, written after the seal, is not.
    contract::seal_all(t.pool()).await.unwrap();
    contract::record_result(t.pool(), refund, true, Some(&json!({"refund_id": "rf-1"})), None)
        .await
        .unwrap();

    let d = backstop::tui::data::detail(t.pool(), refund).await.unwrap();
    assert_eq!(d.action_id, refund);
    let a = d.action.expect("in the projection");
    assert_eq!((a.agent.as_str(), a.tool.as_str()), ("comp-bot", "issue_refund"));
    assert_eq!(a.status, ActionStatus::Executed);
    assert_eq!(a.verdict, Verdict::Allow);
    assert_eq!(
        a.proposal.and_then(|p| p.params),
        Some(json!({"customer_id": "c-3", "amount": 40}))
    );
    assert_eq!(a.result, Some(json!({"refund_id": "rf-1"})));
    assert_eq!(a.inverse_tool.as_deref(), Some("reverse_refund"));
    assert_eq!(a.related.len(), 1);
    assert_eq!(a.related[0].action_id, child);
    let kinds: Vec<EventKind> = a.history.iter().map(|h| h.kind).collect();
    assert_eq!(kinds, [EventKind::Allowed, EventKind::Executed]);
    let (seal_no, digest) = a.history[0].seal.clone().expect("the proposal is sealed");
    assert!(seal_no >= 1);
    assert_eq!(digest.len(), 32);
    assert_eq!(a.history[1].seal, None, "the result is not sealed yet");

    let missing = backstop::tui::data::detail(t.pool(), Uuid::new_v4()).await.unwrap();
    assert!(missing.action.is_none());
}

/// The queue's count and value come from the database, the list is the
/// highest value first, and the room says how many it does not list.
#[tokio::test]
async fn two_thousand_holds_are_counted_and_the_biggest_listed() {
    use backstop::tui::state::{State, View};
    use backstop::tui::update::{Msg, update};
    use rust_decimal::Decimal;
    let t = TestDb::new().await;
    t.load_assets().await;
    // Irreversible e-mails above $500 are held: amounts $601 ... $2,600.
    let held = t
        .count(
            "SELECT count(*) FILTER (WHERE p.verdict = 'hold') FROM generate_series(1, 2000) i,
             LATERAL backstop.propose('bulk-' || (i % 20), 'send_email',
                 jsonb_build_object('customer_id', 'c-' || i, 'to', 'a@b', 'subject', 's'), (600 + i)::numeric) p",
        )
        .await;
    assert_eq!(held, 2000);
    let snap = backstop::tui::data::snapshot(t.pool()).await.unwrap();
    assert_eq!(snap.held_count, 2000);
    assert_eq!(snap.held_sum, Decimal::from((601..=2600).sum::<i64>()));
    assert_eq!(snap.approvals.len(), 1000);
    assert_eq!(snap.approvals[0].amount, Some(Decimal::from(2600)), "the biggest first");
    assert!(snap.approvals.windows(2).all(|w| w[0].amount >= w[1].amount));
    assert_eq!(
        snap.fleet.iter().map(|a| a.held).sum::<i64>(),
        2000,
        "per agent, all of them"
    );
    // The names a pause may target without asking.
    let agents = snap.known_agents.clone().expect("the known agents are readable");
    assert!(
        agents.contains("bulk-0") && agents.contains("bulk-19") && agents.len() == 20,
        "{agents:?}"
    );
    let tools = snap.known_tools.clone().expect("the registry's tools are readable");
    assert!(
        tools.contains("send_email") && !tools.contains("nosuchtool"),
        "{tools:?}"
    );

    let mut s = State::new("t", "ana", false, chrono::Utc::now());
    update(&mut s, Msg::Data(Box::new(snap)));
    s.view = View::Approvals;
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    term.draw(|f| backstop::tui::view::view(&s, f, &backstop::tui::view::Theme { color: false }))
        .unwrap();
    let screen = format!("{}", term.backend());
    assert!(screen.contains("2000 held $3,201,000"), "{screen}");
    assert!(screen.contains("1000 more not shown"), "{screen}");
    assert!(screen.contains("$2,600"), "{screen}");
}

#[tokio::test]
async fn a_finding_says_what_the_supervisor_did_and_drift_holds_while_the_shift_lasts() {
    use backstop::supervisor::{Found, SupervisorStats, raise_and_act};
    let t = TestDb::new().await;
    t.load_assets().await;
    let (_, mut settings) = backstop::policy::active_supervisor(t.pool()).await.unwrap();
    settings.actions.insert("complaint_spike".into(), "pause".into());
    settings.actions.insert("policy_violation".into(), "compensate".into());
    settings.actions.insert("low_confidence".into(), "flag".into());
    let (refund, v) = propose(
        &t,
        "comp-bot",
        "issue_refund",
        json!({"customer_id": "c-3", "amount": 40}),
        None,
    )
    .await;
    assert_eq!(v, Verdict::Allow);
    contract::record_result(t.pool(), refund, true, Some(&json!({"refund_id": "rf-1"})), None)
        .await
        .unwrap();
    let sup = t.as_operator("supervisor").await;
    let mut conn = sup.acquire().await.unwrap();
    let mut stats = SupervisorStats::default();
    let mut raise = async |kind: &str, agent: &str, action_id: Option<Uuid>| {
        raise_and_act(
            &mut conn,
            &settings,
            Found {
                kind,
                severity: "high",
                agent: Some(agent),
                action_id,
                evidence: &json!({"rule": kind, "reason": "test"}),
            },
            &mut stats,
        )
        .await
        .unwrap()
        .finding_id
    };
    let paused = raise("complaint_spike", "loud-bot", None).await;
    let compensated = raise("policy_violation", "comp-bot", Some(refund)).await;
    let flagged = raise("low_confidence", "quiet-bot", None).await;
    drop(conn);

    let snap = backstop::tui::data::snapshot(t.pool()).await.unwrap();
    let label = |id: Uuid| {
        snap.findings
            .iter()
            .find(|f| f.finding_id == id)
            .map(|f| f.status_label())
            .unwrap()
    };
    assert_eq!(label(paused), "auto-paused");
    assert_eq!(label(compensated), "auto-comp. 0/1");
    assert_eq!(label(flagged), "open");
    // Once a worker has tried it (this test's has no executor for the
    // inverse, so it fails), the finding says so.
    common::drain(t.pool(), "room-worker").await;
    let snap = backstop::tui::data::snapshot(t.pool()).await.unwrap();
    let f = snap.findings.iter().find(|f| f.finding_id == compensated).unwrap();
    assert_eq!(f.status_label(), "auto-comp. failed");

    // An agent that switched tools and stayed switched: both sliding windows
    // now see only the new tool.
    let d = settings.drift.clone();
    let now = chrono::Utc::now();
    let secs = |s: f64| chrono::Duration::milliseconds((s * 1000.0) as i64);
    let span = secs(d.recent_seconds + d.baseline_seconds);
    let switched = now - span - span / 2;
    let mut c = t.superuser().await;
    let mut at = now - span * 3;
    while at < now {
        let tool = if at < switched {
            "tool:lookup"
        } else {
            "tool:issue_refund"
        };
        sqlx::query("INSERT INTO backstop.rollups (agent, bucket, counts) VALUES ('shift-bot', $1, $2)")
            .bind(at)
            .bind(json!({"verdict:allow": 20, tool: 20, "amount:none": 20, "conf:0.95-1": 20}))
            .execute(&mut c)
            .await
            .unwrap();
        at += secs(d.bucket_seconds);
    }
    let drift_of = |s: &backstop::tui::state::Snapshot| {
        s.fleet
            .iter()
            .find(|a| a.agent == "shift-bot")
            .map(|a| (a.drift, a.drift_since))
            .unwrap()
    };
    let snap = backstop::tui::data::snapshot(t.pool()).await.unwrap();
    let (before, since) = drift_of(&snap);
    assert!(before.unwrap() < d.threshold && since.is_none(), "{before:?}");
    // The supervisor flagged the switch when it happened: while that finding
    // is unresolved the room keeps comparing with the baseline before it.
    let f = contract::raise_finding(
        &sup,
        "drift",
        "high",
        Some("shift-bot"),
        None,
        &json!({"rule": "drift"}),
    )
    .await
    .unwrap();
    let raised = chrono::SubsecRound::trunc_subsecs(switched + secs(d.recent_seconds) / 2, 6);
    sqlx::query("UPDATE backstop.findings SET raised_at = $1 WHERE finding_id = $2")
        .bind(raised)
        .bind(f.finding_id)
        .execute(&mut c)
        .await
        .unwrap();
    let snap = backstop::tui::data::snapshot(t.pool()).await.unwrap();
    let (held, since) = drift_of(&snap);
    assert!(held.unwrap() > 0.5, "the shift is still there: {held:?}");
    assert_eq!(since, Some(raised));
    let di = &snap.dists["shift-bot"];
    assert_eq!(di.baseline_before, Some(raised));
    assert_eq!(di.dims["tool"]["lookup"], (1.0, 0.0));
    // Resolved: back to the sliding windows.
    contract::resolve_finding(t.pool(), f.finding_id, "new tool is intended")
        .await
        .unwrap();
    let snap = backstop::tui::data::snapshot(t.pool()).await.unwrap();
    assert_eq!(drift_of(&snap).1, None);
}

#[tokio::test]
async fn a_plan_leaves_reads_out_and_the_request_is_the_plan_shown() {
    use backstop::compensation::{self, Selection};
    let t = TestDb::with_operator("room-ana").await;
    t.load_assets().await;
    let mut executed = Vec::new();
    for (tool, params, result) in [
        ("lookup_customer", json!({"customer_id": "c-3"}), json!({})),
        (
            "issue_refund",
            json!({"customer_id": "c-3", "amount": 40}),
            json!({"refund_id": "rf-1"}),
        ),
        (
            "issue_refund",
            json!({"customer_id": "c-4", "amount": 30}),
            json!({"refund_id": "rf-2"}),
        ),
    ] {
        let (id, v) = propose(&t, "comp-bot", tool, params, None).await;
        assert_eq!(v, Verdict::Allow, "{tool}");
        contract::record_result(t.pool(), id, true, Some(&result), None)
            .await
            .unwrap();
        executed.push(id);
    }
    let plan = compensation::plan(t.pool(), &Selection::Actions(executed.clone()))
        .await
        .unwrap();
    assert!(
        plan.steps.iter().all(|s| s.action_id != executed[0]),
        "the read is not a step: {:?}",
        plan.steps
    );
    assert_eq!((plan.steps.len(), plan.totals.read_only), (2, 1));
    assert_eq!(plan.totals.value_not_recoverable, 0.into());
    assert!(compensation::render(&plan).contains("1 read-only action needs no undo"));

    // The room requests exactly the steps it showed, and says what changed
    // since: here another operator requested one of them in between.
    let shown: Vec<(Uuid, String)> = plan.steps.iter().map(|s| (s.action_id, s.outcome.clone())).collect();
    contract::request_compensation(t.pool(), &[executed[2]], "someone else first", None)
        .await
        .unwrap();
    let ids: Vec<Uuid> = shown.iter().map(|s| s.0).collect();
    let got = contract::request_compensation(t.pool(), &ids, "from the plan", None)
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "no step added, none dropped");
    let diff = compensation::differences(&shown, &got);
    assert_eq!(
        diff,
        vec![format!(
            "{} was will compensate, now already requested",
            &executed[2].to_string()[..8]
        )]
    );
    // The read was never requested nor logged as something to remediate.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE action_id = '{}' AND kind LIKE 'compensation%'",
            executed[0]
        ))
        .await,
        0
    );
    // The contract says the same to a client that calls it directly: a read
    // is nothing to undo, not irreversible, and requesting it requests nothing.
    let (outcome, detail): (String, String) =
        sqlx::query_as("SELECT outcome, detail FROM backstop.compensation_plan($1) WHERE action_id = $2")
            .bind(&executed[..1])
            .bind(executed[0])
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(outcome, "nothing_to_undo", "{detail}");
    let direct = contract::request_compensation(t.pool(), &executed[..1], "a client asks for the read", None)
        .await
        .unwrap();
    assert_eq!(direct[0].outcome, "nothing_to_undo");
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.compensations WHERE action_id = '{}'",
            executed[0]
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn mark_by_query_marks_from_the_database_and_the_plan_follows_the_marks() {
    let t = TestDb::with_operator("room-ana").await;
    t.load_assets().await;
    // More actions than the room keeps from history, and some it must not mark.
    sqlx::query(
        "DO $$ DECLARE a uuid; BEGIN
           FOR i IN 1 .. 60 LOOP
             SELECT action_id INTO a FROM backstop.propose('bulk-bot', 'issue_refund', jsonb_build_object('customer_id', 'c-' || i, 'amount', 5), confidence => 0.99);
             PERFORM backstop.record_result(a, true, jsonb_build_object('refund_id', 'rf-' || i));
           END LOOP;
           FOR i IN 1 .. 5 LOOP
             SELECT action_id INTO a FROM backstop.propose('bulk-bot', 'lookup_customer', jsonb_build_object('customer_id', 'c-' || i), confidence => 0.99);
             PERFORM backstop.record_result(a, true, '{}');
             SELECT action_id INTO a FROM backstop.propose('other-bot', 'issue_refund', jsonb_build_object('customer_id', 'o-' || i, 'amount', 5), confidence => 0.99);
             PERFORM backstop.record_result(a, true, jsonb_build_object('refund_id', 'ro-' || i));
           END LOOP; END $$",
    )
    .execute(t.pool())
    .await
    .unwrap();
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE agent = 'bulk-bot' AND tool = 'issue_refund' AND status = 'executed'")
            .await,
        60
    );

    let (ktx, krx) = mpsc::unbounded_channel::<Event>();
    let events = Box::pin(futures_util::stream::unfold(krx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok(e), rx))
    }));
    let db = t.db.clone();
    let room = tokio::spawn(async move {
        let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
        let opts = RoomOptions {
            history: 50,
            ..Default::default()
        };
        run_loop(&mut term, events, db, "room-ana", opts, false).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&ktx, ":mark agent bulk-bot since 1h tool issue_refund").await;
    ktx.send(key(KeyCode::Enter)).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    send(&ktx, "c").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&ktx, "y").await;
    send(&ktx, "bulk refunds in error").await;
    ktx.send(key(KeyCode::Enter)).unwrap();
    wait_until("the compensation of every marked refund", || async {
        t.count(
            "SELECT count(*) FROM backstop.compensations WHERE agent = 'bulk-bot' AND requested_by = 'room-ana' AND reason = 'bulk refunds in error'",
        )
        .await
            == 60
    })
    .await;
    ktx.send(Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)))
        .unwrap();
    let state = tokio::time::timeout(Duration::from_secs(10), room)
        .await
        .unwrap()
        .unwrap();
    // The room started with 50 rows of history (at most 50 actions): all 60
    // came from the query, not from what it held.
    assert_eq!(state.mode, backstop::tui::state::Mode::Normal);
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.compensations WHERE agent <> 'bulk-bot' OR tool <> 'issue_refund'")
            .await,
        0,
        "nothing else was requested"
    );
}

/// The approval card's checks against a real database: before anyone
/// approves a $47,000 refund on a $572 order, an approver's login, reading
/// as the room does (read-only, with a time limit), is told so; after two
/// approvals and the refund, the supervisor's review raises it as before.
#[tokio::test]
async fn the_card_warns_before_approval_of_what_the_supervisor_finds_after() {
    use backstop::supervisor::SupervisorStats;
    use sqlx::Acquire;
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = common::Logins::new(&t);
    let approver = logins.login(&t, "room_card_appr", Some("approver")).await;
    let d = t.hold_refund_over_its_order().await;
    assert_eq!(d.verdict, Verdict::Hold, "{}", d.reason);
    let id = d.action_id;

    // What the card shows, read by the approver's own login.
    let info = backstop::tui::data::card(&approver, id).await.unwrap();
    assert_eq!(info.confidence, Some(0.81));
    assert!(
        info.reasoning
            .as_deref()
            .is_some_and(|r| r.starts_with("Ticket T-47000"))
    );
    assert_eq!(info.inputs, Some(json!({"ticket": "T-47000"})));
    let log_before = t.log_len().await;
    let checks = backstop::contract::precheck(&approver, id).await.unwrap();
    let caught = checks
        .iter()
        .find(|c| c.name == "refund_within_order_total")
        .unwrap_or_else(|| panic!("{checks:?}"));
    assert_eq!(
        caught.message.as_deref(),
        Some("refund of 47000 is more than order O-572 was worth (572.00)")
    );
    assert_eq!((caught.severity.as_str(), caught.error.as_deref()), ("critical", None));
    // 0.81 is above the review's 0.7: no low-confidence row.
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(t.log_len().await, log_before, "the card's reads append nothing");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.findings").await,
        0,
        "nothing raised before approval"
    );

    // Two people approve anyway; the refund is issued.
    for who in ["ana", "bob"] {
        let pool = t.as_operator(who).await;
        contract::approve(&pool, id, "the customer is important").await.unwrap();
    }
    contract::record_result(
        t.pool(),
        id,
        true,
        Some(&json!({"refund_id": "rf-47000", "status": "issued"})),
        None,
    )
    .await
    .unwrap();
    // The supervisor's review finds it, as it always did.
    let (_, settings) = backstop::policy::active_supervisor(t.pool()).await.unwrap();
    let mut conn = t.pool().acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut stats = SupervisorStats::default();
    let raised = backstop::supervisor::review::review_one(&mut tx, &settings, id, "amount_over", &mut stats)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(raised.iter().any(|r| r.kind == "policy_violation"), "{}", raised.len());
    let found = t
        .count(&format!(
            "SELECT count(*) FROM backstop.findings WHERE action_id = '{id}' AND rule = 'refund_within_order_total'
                AND severity = 'critical' AND detail ->> 'violation' = 'refund of 47000 is more than order O-572 was worth (572.00)'"
        ))
        .await;
    assert_eq!(found, 1);
    logins.drop_all(vec![approver]).await;
}
