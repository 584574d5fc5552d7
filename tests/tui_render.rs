//! Render snapshots of every view at 120x40 and 80x24, the too-small message,
//! the PAUSED banner, help, detail and a compensation plan, with a fixed clock
//! and fixed data. Colourless (the text is what is compared; NO_COLOR output).

use std::collections::BTreeMap;

use backstop::compensation::{Plan, PlanStep, PlanTotals, Selection};
use backstop::contract::{ActionStatus, EventKind, LogRow, Scope, Verdict};
use backstop::tui::state::{
    ActionDetail, AgentRow, CompRow, Conn, Detail, Dists, FindingRow, HeldRow, HistoryEntry, Mode, Proposed, State,
    Switch, View,
};
use backstop::tui::update::{Msg, update};
use backstop::tui::view::{Theme, view};
use chrono::{DateTime, Duration, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T12:04:55Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0b4f5c1e_8d2a_4c8e_9f3a_000000000000 + n)
}

fn row(
    seq: i64,
    kind: &str,
    agent: &str,
    tool: &str,
    amount: Option<i64>,
    conf: Option<f32>,
    action: Option<Uuid>,
) -> LogRow {
    LogRow {
        seq,
        at: now() - Duration::seconds(60 - seq % 60),
        kind: kind.parse().expect("a kind"),
        actor: agent.into(),
        agent: Some(agent.into()),
        tool: Some(tool.into()),
        action_id: action,
        correlation_id: Some(format!("ticket-{seq}")),
        parent_action: None,
        amount: amount.map(Decimal::from),
        confidence: conf,
        reasoning: None,
        inputs: None,
        params: None,
        result: None,
        detail: json!({"verdict": match kind { "held" => "hold", "blocked" => "block", _ => "allow" }, "reason": "allowed by policy"}),
        policy_version: Some(2),
        registry_version: Some(1),
        txid: seq.to_string(),
    }
}

fn fixture() -> State {
    let mut s = State::new("pg://ops-db/backstop", "ana", false, now());
    let rows = vec![
        row(
            48201,
            "allowed",
            "procure-bot",
            "cancel_contract",
            Some(8200),
            Some(0.91),
            Some(id(1)),
        ),
        row(
            48202,
            "executed",
            "procure-bot",
            "cancel_contract",
            Some(8200),
            None,
            Some(id(1)),
        ),
        row(
            48203,
            "allowed",
            "crm-bot",
            "update_customer_field",
            None,
            Some(0.97),
            Some(id(2)),
        ),
        row(
            48204,
            "executed",
            "crm-bot",
            "update_customer_field",
            None,
            None,
            Some(id(2)),
        ),
        row(
            48205,
            "blocked",
            "outreach-bot",
            "send_campaign",
            None,
            Some(0.88),
            Some(id(3)),
        ),
        row(
            48206,
            "allowed",
            "refund-bot",
            "issue_refund",
            Some(120),
            Some(0.93),
            Some(id(4)),
        ),
        row(
            48207,
            "executed",
            "refund-bot",
            "issue_refund",
            Some(120),
            None,
            Some(id(4)),
        ),
        row(
            48208,
            "held",
            "refund-bot",
            "issue_refund",
            Some(47000),
            Some(0.62),
            Some(id(5)),
        ),
    ];
    update(&mut s, Msg::Rows { rows, lag_ms: Some(12) });
    s.conn = Conn::Live;
    s.lag_ms = Some(12);
    let mut dims = BTreeMap::new();
    dims.insert(
        "tool".to_string(),
        BTreeMap::from([
            ("issue_refund".to_string(), (0.05, 0.30)),
            ("issue_credit".to_string(), (0.55, 0.40)),
            ("send_email".to_string(), (0.40, 0.30)),
        ]),
    );
    dims.insert(
        "verdict".to_string(),
        BTreeMap::from([
            ("allow".to_string(), (0.95, 0.81)),
            ("hold".to_string(), (0.05, 0.17)),
            ("block".to_string(), (0.0, 0.02)),
        ]),
    );
    s.data.dists.insert(
        "refund-bot".into(),
        Dists {
            agent: "refund-bot".into(),
            dims,
            baseline_n: 600,
            recent_n: 120,
            baseline_before: Some(now() - Duration::seconds(40)),
        },
    );
    let agent = |name: &str, per: f64, held: i64, value: i64, findings: i64, drift: Option<f64>| AgentRow {
        agent: name.into(),
        paused: None,
        per_bucket: vec![3, 5, 4, 6, 8, 7, 9, 12, 10, 11, 9, 8, 10, 13, 12],
        per_minute: per,
        held,
        held_value: Decimal::from(value),
        findings,
        drift,
        drift_since: None,
    };
    s.data.fleet = vec![
        agent("crm-bot", 12.0, 0, 0, 0, Some(0.004)),
        agent("outreach-bot", 4.0, 0, 0, 1, Some(0.011)),
        agent("procure-bot", 2.0, 1, 8200, 0, Some(0.002)),
        agent("refund-bot", 30.0, 2, 47350, 1, Some(0.062)),
    ];
    s.data.fleet[1].paused = Some(("supervisor".into(), "complaint spike".into()));
    // refund-bot's drift finding is open: its drift is against the baseline before it.
    s.data.fleet[3].drift_since = Some(now() - Duration::seconds(40));
    s.data.approvals = vec![
        HeldRow {
            action_id: id(5),
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            amount: Some(Decimal::from(47000)),
            rule: Some("four_eyes".into()),
            reason: "$47,000 is above $10,000: two approvers".into(),
            approvals: 1,
            approvals_needed: 2,
            approved_by: vec!["bob".into()],
            held_at: now() - Duration::seconds(95),
            expires_at: now() + Duration::seconds(3505),
        },
        HeldRow {
            action_id: id(6),
            agent: "procure-bot".into(),
            tool: "pay_supplier".into(),
            amount: Some(Decimal::from(8200)),
            rule: Some("new_payee".into()),
            reason: "first payment by this agent to acme".into(),
            approvals: 0,
            approvals_needed: 1,
            approved_by: vec![],
            held_at: now() - Duration::seconds(30),
            expires_at: now() + Duration::seconds(3570),
        },
    ];
    s.data.held_count = 2;
    s.data.held_sum = Decimal::from(55200);
    s.data.findings = vec![
        FindingRow {
            finding_id: id(100),
            kind: "drift".into(),
            severity: "high".into(),
            agent: Some("refund-bot".into()),
            action_id: None,
            rule: Some("drift".into()),
            status: "open".into(),
            count: 1,
            last_at: now() - Duration::seconds(40),
            detail: json!({"top_changes": [{"category": "tool:issue_refund", "baseline": 0.05, "recent": 0.3}]}),
            auto: None,
        },
        FindingRow {
            finding_id: id(101),
            kind: "complaint_spike".into(),
            severity: "critical".into(),
            agent: Some("outreach-bot".into()),
            action_id: None,
            rule: Some("complaint_spike".into()),
            status: "acknowledged".into(),
            count: 1,
            last_at: now() - Duration::seconds(200),
            detail: json!({"signals_in_window": 9}),
            auto: Some("auto-paused".into()),
        },
    ];
    s.data.comps = vec![
        CompRow {
            action_id: id(1),
            agent: "procure-bot".into(),
            tool: "cancel_contract".into(),
            inverse_tool: "reinstate_contract".into(),
            status: "compensated".into(),
            attempts: 1,
            worker: Some("worker-1".into()),
            reason: "wrong supplier".into(),
            requested_by: "ana".into(),
            requested_at: now() - Duration::seconds(20),
            last_error: None,
        },
        CompRow {
            action_id: id(2),
            agent: "crm-bot".into(),
            tool: "update_customer_field".into(),
            inverse_tool: "restore_customer_field".into(),
            status: "conflict".into(),
            attempts: 1,
            worker: Some("worker-1".into()),
            reason: "bad import".into(),
            requested_by: "ana".into(),
            requested_at: now() - Duration::seconds(15),
            last_error: Some("email of c-1044 was written since (now x@y, by dana): not clobbered".into()),
        },
    ];
    s.data.switches = vec![Switch {
        scope: Scope::Agent,
        target: "outreach-bot".into(),
        by: "supervisor".into(),
        reason: "complaint spike".into(),
    }];
    s.marks.insert(id(1));
    s
}

/// The record of the held $47,000 refund, as Enter shows it.
fn refund_detail(action_id: Uuid) -> Detail {
    Detail {
        action_id,
        action: Some(ActionDetail {
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            class: Some("conditional".into()),
            status: ActionStatus::Held,
            amount: Some(Decimal::from(47000)),
            confidence: Some(0.62),
            cost_to_reverse: Some(Decimal::from(1500)),
            verdict: Verdict::Hold,
            reason: "$47,000 is above $10,000: two approvers".into(),
            rule: Some("four_eyes".into()),
            policy_version: Some(2),
            registry_version: Some(1),
            proposal: Some(Proposed {
                reasoning: Some("Customer threatened to churn; matching their claimed lifetime spend.".into()),
                inputs: None,
                params: Some(json!({"amount": 47000, "customer_id": "c-1002"})),
            }),
            result: None,
            correlation_id: Some("ticket-48208".into()),
            parent_action: None,
            related: Vec::new(),
            inverse_tool: None,
            inverse_params: None,
            inverse_missing: None,
            compensation: None,
            history: vec![HistoryEntry {
                seq: 48208,
                at: now() - Duration::seconds(4),
                kind: EventKind::Held,
                actor: "refund-bot".into(),
                seal: Some((12, vec![0xab; 32])),
            }],
        }),
    }
}

fn render(s: &State, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view(s, f, &Theme { color: false })).unwrap();
    format!("{}", t.backend())
}

#[test]
fn every_view_at_both_sizes() {
    for (w, h) in [(120, 40), (80, 24)] {
        for v in View::ALL {
            let mut s = fixture();
            s.view = v;
            insta::assert_snapshot!(format!("{}_{w}x{h}", v.title().to_lowercase()), render(&s, w, h));
        }
    }
}

#[test]
fn compact_and_too_small() {
    let s = fixture();
    insta::assert_snapshot!("log_79x24_collapsed", render(&s, 79, 24));
    insta::assert_snapshot!("too_small_30x6", render(&s, 30, 6));
}

#[test]
fn paused_banner_at_every_size() {
    let mut s = fixture();
    s.data.switches.push(Switch {
        scope: Scope::Fleet,
        target: "*".into(),
        by: "ana".into(),
        reason: "fleet paused from the control room (P) by ana".into(),
    });
    let screen = render(&s, 120, 40);
    let top = screen.lines().next().unwrap_or_default().to_string();
    // The banner keeps the header's facts, and says who paused it once.
    assert!(
        top.contains("PAUSED") && top.contains("LIVE") && top.contains("lag 12ms") && top.contains("2 held"),
        "{top}"
    );
    assert_eq!(top.matches("fleet paused").count(), 1, "{top}");
    insta::assert_snapshot!("paused_120x40", screen);
    s.readonly = true;
    let top = render(&s, 120, 40).lines().next().unwrap_or_default().to_string();
    assert!(top.contains("(read-only)") && !top.contains("R resumes"), "{top}");
    s.readonly = false;
    insta::assert_snapshot!("paused_80x24", render(&s, 80, 24));
    let small = render(&s, 30, 6);
    assert!(small.contains("PAUSED"), "{small}");
    insta::assert_snapshot!("paused_30x6", small);
}

#[test]
fn overlays() {
    let mut s = fixture();
    s.mode = Mode::Help;
    insta::assert_snapshot!("help_120x40", render(&s, 120, 40));
    s.readonly = true;
    let ro = render(&s, 120, 40);
    assert!(
        !ro.contains("  c            compensate") && !ro.contains("  P            PAUSE"),
        "{ro}"
    );
    assert!(!ro.contains("space mark"), "{ro}");
    s.readonly = false;
    s.mode = Mode::Detail { scroll: 0 };
    s.detail = Some(refund_detail(id(5)));
    insta::assert_snapshot!("detail_120x40", render(&s, 120, 40));
    s.mode = Mode::Plan;
    s.plan = Some(Plan {
        selection: Selection::Actions(vec![id(1)]),
        steps: vec![
            PlanStep {
                action_id: id(7),
                selected: false,
                caused_by: Some(id(1)),
                agent: "procure-bot".into(),
                tool: "renew_contract".into(),
                class: Some("reversible".into()),
                amount: Some(Decimal::from(900)),
                entity: Some("k-1".into()),
                correlation_id: None,
                status: "executed".into(),
                executed_seq: Some(48209),
                outcome: "requested".into(),
                detail: Some("revert_renewal".into()),
                inverse_tool: Some("revert_renewal".into()),
                inverse_params: Some(json!({"contract_id": "k-1"})),
                direction: None,
            },
            PlanStep {
                action_id: id(3),
                selected: true,
                caused_by: None,
                agent: "outreach-bot".into(),
                tool: "send_campaign".into(),
                class: Some("irreversible".into()),
                amount: None,
                entity: Some("camp-9".into()),
                correlation_id: None,
                status: "executed".into(),
                executed_seq: Some(48205),
                outcome: "irreversible".into(),
                detail: Some("send_campaign is irreversible: remediate by hand (log seq 48205)".into()),
                inverse_tool: None,
                inverse_params: None,
                direction: None,
            },
        ],
        totals: PlanTotals {
            steps: 2,
            will_compensate: 1,
            value_recovered: Decimal::from(900),
            recovered_out: Decimal::ZERO,
            recovered_in: Decimal::ZERO,
            value_not_recoverable: Decimal::ZERO,
            entities_touched: 2,
            dependents: 1,
            read_only: 0,
        },
    });
    insta::assert_snapshot!("plan_120x40", render(&s, 120, 40));
    s.mode = Mode::ConfirmResume {
        scope: Scope::Fleet,
        target: None,
    };
    let confirm = render(&s, 120, 40);
    assert!(confirm.contains("Resume the fleet? y / N"), "{confirm}");
}

/// A busy room: 40 agents, 2,000 holds, 500 log rows, 60 findings and 60
/// compensations, built directly (no database).
fn busy() -> State {
    let mut s = State::new("pg://ops-db/backstop", "ana", false, now());
    let agents: Vec<String> = (0..40).map(|i| format!("agent-{i:02}")).collect();
    let rows = (1..=500)
        .map(|seq| {
            let a = &agents[(seq % 40) as usize];
            let kind = if seq % 7 == 0 { "held" } else { "allowed" };
            row(
                seq,
                kind,
                a,
                "issue_refund",
                Some(seq * 10),
                Some(0.9),
                Some(id(10_000 + seq as u128)),
            )
        })
        .collect();
    update(&mut s, Msg::Rows { rows, lag_ms: Some(5) });
    s.conn = Conn::Live;
    s.data.fleet = agents
        .iter()
        .enumerate()
        .map(|(i, a)| AgentRow {
            agent: a.clone(),
            paused: None,
            per_bucket: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            per_minute: i as f64,
            held: 50,
            held_value: Decimal::from(50 * i),
            findings: 0,
            drift: None,
            drift_since: None,
        })
        .collect();
    s.data.approvals = (0..2000u128)
        .map(|i| HeldRow {
            action_id: id(20_000 + i),
            agent: agents[(i % 40) as usize].clone(),
            tool: "issue_refund".into(),
            amount: Some(Decimal::from(((i * 37) % 5000 + 1) as i64)),
            rule: Some("over_limit".into()),
            reason: "above the refund limit".into(),
            approvals: 0,
            approvals_needed: 1,
            approved_by: vec![],
            held_at: now() - Duration::seconds(i as i64),
            expires_at: now() + Duration::seconds(3600 - i as i64),
        })
        .collect();
    s.data.held_count = 2000;
    s.data.held_sum = s.data.approvals.iter().filter_map(|h| h.amount).sum();
    s.data.findings = (0..60u128)
        .map(|i| FindingRow {
            finding_id: id(30_000 + i),
            kind: "drift".into(),
            severity: ["low", "medium", "high", "critical"][(i % 4) as usize].into(),
            agent: Some(agents[(i % 40) as usize].clone()),
            action_id: None,
            rule: Some("drift".into()),
            status: "open".into(),
            count: 1,
            last_at: now() - Duration::seconds(i as i64 * 10),
            detail: json!({"reason": "tool mix changed"}),
            auto: None,
        })
        .collect();
    s.data.comps = (0..60u128)
        .map(|i| CompRow {
            action_id: id(10_000 + i),
            agent: agents[(i % 40) as usize].clone(),
            tool: "issue_refund".into(),
            inverse_tool: "reverse_refund".into(),
            status: "requested".into(),
            attempts: 0,
            worker: None,
            reason: "wrong customer".into(),
            requested_by: "ana".into(),
            requested_at: now(),
            last_error: None,
        })
        .collect();
    s
}

fn big_plan() -> Plan {
    Plan {
        selection: Selection::Actions(vec![id(1)]),
        steps: (0..100u128)
            .map(|i| PlanStep {
                action_id: id(40_000 + i),
                selected: i == 0,
                caused_by: (i > 0).then(|| id(40_000)),
                agent: format!("agent-{:02}", i % 40),
                tool: "issue_refund".into(),
                class: Some("reversible".into()),
                amount: Some(Decimal::from(i as i64 * 10)),
                entity: Some(format!("c-{i}")),
                correlation_id: None,
                status: "executed".into(),
                executed_seq: Some(i as i64),
                outcome: "requested".into(),
                detail: Some("reverse_refund".into()),
                inverse_tool: Some("reverse_refund".into()),
                inverse_params: None,
                direction: None,
            })
            .collect(),
        totals: PlanTotals {
            steps: 100,
            will_compensate: 100,
            value_recovered: Decimal::from(49500),
            recovered_out: Decimal::ZERO,
            recovered_in: Decimal::ZERO,
            value_not_recoverable: Decimal::ZERO,
            entities_touched: 100,
            dependents: 99,
            read_only: 0,
        },
    }
}

fn press_n(s: &mut State, c: char, n: usize) {
    for _ in 0..n {
        update(s, backstop::tui::update::press(c));
    }
}

#[test]
fn long_tables_scroll_with_their_selection_at_every_size() {
    for (w, h) in [(60, 20), (80, 24), (200, 60)] {
        for v in View::ALL {
            let mut s = busy();
            s.size = Some((w, h));
            s.view = v;
            // Down 25 rows: the selection moves off the first page and the table follows it.
            press_n(&mut s, 'j', 25);
            let screen = render(&s, w, h);
            assert!(
                screen.contains('▶'),
                "{v:?} {w}x{h}: the selection is on screen\n{screen}"
            );
            assert!(screen.contains("more"), "{v:?} {w}x{h}: says rows are cut\n{screen}");
            insta::assert_snapshot!(format!("scroll_{}_{w}x{h}", v.title().to_lowercase()), screen);
        }
        // The plan scrolls with j and stays on screen.
        let mut s = busy();
        s.size = Some((w, h));
        update(&mut s, Msg::Plan(big_plan()));
        press_n(&mut s, 'j', 30);
        assert_eq!(s.mode, Mode::Plan, "j scrolls the plan, it does not cancel it");
        let screen = render(&s, w, h);
        assert!(screen.contains("↑ 30 more") || h >= 60, "{screen}");
        insta::assert_snapshot!(format!("scroll_plan_{w}x{h}"), screen);
    }
}

#[test]
fn findings_most_severe_first_with_a_symbol_and_cut_cells_end_in_an_ellipsis() {
    let mut s = busy();
    let ranks: Vec<u8> = s
        .visible_findings()
        .iter()
        .map(|f| backstop::tui::state::severity_rank(&f.severity))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    let newest_first = s.visible_findings()[..15]
        .windows(2)
        .all(|w| w[0].last_at >= w[1].last_at);
    assert!(newest_first, "then the newest first");
    s.view = View::Findings;
    s.size = Some((120, 40));
    let screen = render(&s, 120, 40);
    let (crit, high) = (screen.find("‼ CRITICAL"), screen.find("▲ HIGH"));
    assert!(
        crit.is_some() && high.is_some() && crit < high,
        "criticals first:\n{screen}"
    );
    // A name longer than its column is cut with an ellipsis, never silently.
    s.view = View::Approvals;
    s.data.approvals[0].agent = "a-very-long-agent-name-indeed".into();
    s.data.approvals[0].amount = Some(Decimal::from(1_000_000));
    let screen = render(&s, 120, 40);
    assert!(screen.contains("a-very-long-a…"), "{screen}");
    assert!(!screen.contains("a-very-long-agent"), "{screen}");
}

#[test]
fn enter_shows_the_whole_text_of_a_cut_cell_and_plan_lines_end_in_an_ellipsis() {
    use backstop::tui::update::press_code;
    use crossterm::event::KeyCode;
    let long = "the agent refunded the same order three times within a minute, each time citing a different ticket, and the customer had already withdrawn the complaint END-OF-EVIDENCE";
    let mut s = fixture();
    s.size = Some((120, 40));
    s.data.findings[1].detail = json!({ "violation": long });
    s.view = View::Findings;
    let table = render(&s, 120, 40);
    assert!(!table.contains("END-OF-EVIDENCE"), "the cell is cut:\n{table}");
    assert!(update(&mut s, press_code(KeyCode::Enter)).is_empty());
    assert_eq!(s.mode, Mode::Note { scroll: 0 });
    let note = render(&s, 120, 40);
    assert!(
        note.contains("END-OF-EVIDENCE") && note.contains("ack., auto-paused"),
        "{note}"
    );
    insta::assert_snapshot!("finding_note_120x40", note);
    update(&mut s, press_code(KeyCode::Esc));
    assert_eq!(s.mode, Mode::Normal);

    // A log row about no action (a pause) shows its whole reason.
    s.view = View::Log;
    let mut paused = row(48300, "paused", "ana", "", None, None, None);
    paused.tool = None;
    paused.detail = json!({ "scope": "agent", "target": "refund-bot", "reason": long });
    update(
        &mut s,
        Msg::Rows {
            rows: vec![paused],
            lag_ms: None,
        },
    );
    update(&mut s, press_code(KeyCode::Enter));
    assert_eq!(s.mode, Mode::Note { scroll: 0 });
    let note = render(&s, 80, 24);
    assert!(note.contains("END-OF-EVIDENCE"), "{note}");
    update(&mut s, press_code(KeyCode::Esc));

    // A rollback plan's line longer than the screen ends in an ellipsis.
    let mut plan = big_plan();
    plan.steps[0].detail = Some(long.into());
    plan.totals.read_only = 2;
    update(&mut s, Msg::Plan(plan));
    let screen = render(&s, 80, 24);
    let first = screen
        .lines()
        .find(|l| l.contains(&id(40_000).to_string()[..8]))
        .expect("the first step");
    assert!(first.trim_end_matches(['"', ' ']).ends_with('…'), "{first}");
    assert!(
        screen.contains("Rollback plan: 100 step(s)") && screen.contains('…'),
        "{screen}"
    );
}

#[test]
fn the_tab_line_names_the_filter_keys_a_view_cannot_use() {
    let mut s = fixture();
    s.filter = backstop::tui::state::Filter::parse("agent:refund-bot tool:issue_refund").unwrap();
    s.view = View::Fleet;
    let screen = render(&s, 120, 40);
    assert!(screen.contains("(tool not in this view)"), "{screen}");
    assert!(!screen.contains("crm-bot"), "the fleet filters by agent:\n{screen}");
    s.view = View::Log;
    let screen = render(&s, 120, 40);
    assert!(!screen.contains("not in this view"), "{screen}");
}

/// What the agent said about a held refund, and checks that fail, pass, or
/// have not answered yet.
fn card_info() -> backstop::tui::state::CardInfo {
    backstop::tui::state::CardInfo {
        class: Some("conditional".into()),
        confidence: Some(0.81),
        reasoning: Some(
            "Ticket T-47000: c-1002 says the whole account was mis-billed since 2021; matching their claimed lifetime spend.\nEND-OF-REASONING"
                .into(),
        ),
        inputs: Some(json!({"ticket": "T-47000", "channel": "email"})),
        params: Some(json!({"customer_id": "c-1002", "order_id": "O-1", "amount": 47000, "reason": "billing dispute"})),
        correlation_id: Some("ticket-T-47000".into()),
    }
}

fn check(name: &str, severity: &str, message: Option<&str>, error: Option<&str>) -> backstop::tui::state::CheckResult {
    backstop::tui::state::CheckResult {
        name: name.into(),
        kind: "policy_violation".into(),
        severity: severity.into(),
        message: message.map(Into::into),
        error: error.map(Into::into),
    }
}

/// A refund of `amount` checked against an order worth 572.00.
fn failing_checks(amount: &str) -> Vec<backstop::tui::state::CheckResult> {
    let message = format!("refund of {amount} is more than order O-1 was worth (572.00)");
    vec![
        check("customer_not_churned", "high", None, None),
        check("refund_within_order_total", "critical", Some(&message), None),
    ]
}

/// The busy room on the approvals view, 25 rows down, with the highlighted
/// hold's card as far as `checks` says (None: still running).
fn busy_card(w: u16, h: u16, checks: Option<Vec<backstop::tui::state::CheckResult>>) -> State {
    let mut s = busy();
    s.size = Some((w, h));
    update(&mut s, backstop::tui::update::press('3'));
    press_n(&mut s, 'j', 25);
    if let Some(id) = s.card_target() {
        update(&mut s, Msg::Card(id, Ok(Box::new(card_info()))));
        if let Some(c) = checks {
            update(&mut s, Msg::Checks(id, Ok(c)));
        }
    }
    s
}

#[test]
fn the_approval_card_shows_the_evidence_and_the_checks_run_now_at_every_size() {
    let passing = vec![
        check("customer_not_churned", "high", None, None),
        check("refund_within_order_total", "critical", None, None),
    ];
    for (w, h) in [(80, 24), (200, 60)] {
        for (name, checks) in [
            ("failing", Some(failing_checks("4934"))),
            ("passing", Some(passing.clone())),
            ("running", None),
        ] {
            let s = busy_card(w, h, checks);
            let screen = render(&s, w, h);
            // The card is about the highlighted row: its amount and agent head it.
            let sel = s.visible_approvals()[s.cursor_index()].clone();
            let head = format!("{} issue_refund by {}", backstop::output::money(sel.amount), sel.agent);
            assert!(screen.contains(&head), "{name} {w}x{h}: {head}\n{screen}");
            assert!(screen.contains("▶"), "{screen}");
            match name {
                "failing" => assert!(
                    screen.contains("✗ refund_within_order_total (critical): refund of 4934")
                        && screen.contains("✓ 1 check passed"),
                    "{screen}"
                ),
                "passing" => assert!(screen.contains("✓ 2 checks passed"), "{screen}"),
                _ => assert!(screen.contains("checks: running…"), "{screen}"),
            }
            assert!(
                screen.contains("confidence 0.81") && screen.contains("reasoning: Ticket T-47000"),
                "{screen}"
            );
            insta::assert_snapshot!(format!("card_{name}_{w}x{h}"), screen);
        }
    }
    // The whole card where it has room: reasoning, params and inputs in full.
    let wide = render(&busy_card(200, 60, Some(failing_checks("4934"))), 200, 60);
    assert!(
        wide.contains("END-OF-REASONING") && wide.contains("\"channel\":\"email\"") && !wide.contains("↓ more: Enter"),
        "{wide}"
    );
    // Cut where it has not, with a mark that says so.
    let small = render(&busy_card(80, 24, Some(failing_checks("4934"))), 80, 24);
    assert!(small.contains("↓ more: Enter shows the whole record"), "{small}");
}

#[test]
fn approving_names_the_amount_and_the_failing_check_on_the_key_itself() {
    for (w, h) in [(80, 24), (200, 60)] {
        let mut s = busy_card(w, h, Some(failing_checks("4934")));
        let id = s.card_target().expect("a highlighted hold");
        update(&mut s, backstop::tui::update::press('a'));
        assert_eq!(s.mode, Mode::ConfirmApprove(id));
        let screen = render(&s, w, h);
        let sel = s.data.approvals.iter().find(|x| x.action_id == id).unwrap().clone();
        let ask = screen.lines().rev().nth(1).unwrap_or_default().to_string();
        assert!(
            ask.contains(&format!("Approve {}", backstop::output::money(sel.amount)))
                && ask.contains("✗ 1 check fails")
                && ask.contains("y / N"),
            "{ask}"
        );
        if w >= 120 {
            assert!(ask.contains("✗ 1 check fails: refund_within_order_total"), "{ask}");
        }
        insta::assert_snapshot!(format!("card_confirm_{w}x{h}"), screen);
        // Any key but y: nothing approved.
        let fx = update(&mut s, backstop::tui::update::press('n'));
        assert!(
            !fx.iter()
                .any(|e| matches!(e, backstop::tui::update::Effect::Approve(_)))
        );
    }
    // Where the approvals view does not fit (60x20), the log's held row asks
    // the same question, with the same warning; Enter shows the checks too.
    let mut s = busy();
    s.size = Some((60, 20));
    let held = s.log.iter().find(|r| r.kind == EventKind::Held).unwrap().clone();
    let id = held.action_id.unwrap();
    s.data.approvals[0] = HeldRow {
        action_id: id,
        agent: held.agent.clone().unwrap(),
        tool: "issue_refund".into(),
        amount: Some(Decimal::from(47000)),
        rule: Some("four_eyes".into()),
        reason: "$47,000 is above $10,000: two approvers".into(),
        approvals: 1,
        approvals_needed: 2,
        approved_by: vec!["approver-ana-maria".into()],
        held_at: now(),
        expires_at: now() + Duration::seconds(600),
    };
    s.cursor.insert(View::Log, held.seq.to_string());
    s.following = false;
    let fx = update(&mut s, backstop::tui::update::press('a'));
    assert_eq!(s.mode, Mode::ConfirmApprove(id));
    assert!(fx.contains(&backstop::tui::update::Effect::Precheck(id)), "{fx:?}");
    let running = render(&s, 60, 20);
    assert!(running.contains("checks running…"), "{running}");
    update(&mut s, Msg::Checks(id, Ok(failing_checks("47000"))));
    let screen = render(&s, 60, 20);
    assert!(
        screen.contains("Approve $47,000") && screen.contains("✗ 1 check fails") && screen.contains("y / N"),
        "{screen}"
    );
    insta::assert_snapshot!("card_confirm_60x20", screen);
    update(&mut s, backstop::tui::update::press('n'));
    update(
        &mut s,
        backstop::tui::update::press_code(crossterm::event::KeyCode::Enter),
    );
    assert_eq!(s.mode, Mode::Detail { scroll: 0 });
    s.detail = Some(refund_detail(id));
    let detail = render(&s, 60, 20);
    assert!(
        detail.contains("approvals: 1/2 by approver-ana-maria")
            && detail.contains("checks now: ✗ refund_within_order_total"),
        "{detail}"
    );
    insta::assert_snapshot!("card_detail_60x20", detail);
}

#[test]
fn the_card_follows_the_highlighted_row() {
    use backstop::tui::update::Effect;
    let mut s = busy();
    s.size = Some((200, 60));
    let fx = update(&mut s, backstop::tui::update::press('3'));
    let rows: Vec<Uuid> = s.visible_approvals().iter().map(|h| h.action_id).collect();
    let (first, second) = (rows[0], rows[1]);
    assert_eq!(fx, vec![Effect::LoadCard(first), Effect::Precheck(first)]);
    update(&mut s, Msg::Checks(first, Ok(failing_checks("47000"))));
    assert!(render(&s, 200, 60).contains("✗ refund_within_order_total"));

    let fx = update(&mut s, backstop::tui::update::press('j'));
    assert_eq!(fx, vec![Effect::LoadCard(second), Effect::Precheck(second)]);
    assert_eq!(s.card_target(), Some(second));
    let screen = render(&s, 200, 60);
    let h = s.data.approvals.iter().find(|x| x.action_id == second).unwrap();
    assert!(
        screen.contains(&format!(
            "{} issue_refund by {}",
            backstop::output::money(h.amount),
            h.agent
        )),
        "{screen}"
    );
    // The first row's failing check is not shown as the second's.
    assert!(
        !screen.contains("✗ refund_within_order_total") && screen.contains("checks: running…"),
        "{screen}"
    );
    // A late answer for the row left behind changes nothing on screen.
    update(&mut s, Msg::Checks(first, Ok(failing_checks("47000"))));
    assert!(!render(&s, 200, 60).contains("✗ refund_within_order_total"));
    // a asks about the highlighted row.
    update(&mut s, backstop::tui::update::press('a'));
    assert_eq!(s.mode, Mode::ConfirmApprove(second));
    update(&mut s, backstop::tui::update::press('n'));

    // Back up: the first card is kept, nothing is loaded again.
    let fx = update(&mut s, backstop::tui::update::press('k'));
    assert!(fx.is_empty(), "{fx:?}");
    assert!(render(&s, 200, 60).contains("✗ refund_within_order_total"));
    // The refresh tick runs the checks again (once at a time).
    let data = Box::new(s.data.clone());
    assert_eq!(update(&mut s, Msg::Data(data.clone())), vec![Effect::Precheck(first)]);
    assert_eq!(update(&mut s, Msg::Data(data)), vec![]);
    // Other views ask for no card.
    update(&mut s, Msg::Checks(first, Ok(Vec::new())));
    update(&mut s, backstop::tui::update::press('2'));
    assert_eq!(s.card_target(), None);
}
