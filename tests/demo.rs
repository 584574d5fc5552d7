//! The demo's story, headless, against a real database: deterministic per
//! seed, every incident caught and answered, other actors' writes intact.
//! And a drill scored end to end with a scripted responder.

mod common;

use std::time::Duration;

use backstop::demo::{drill, scenario};
use common::TestDb;

async fn story(seed: u64) -> scenario::DemoReport {
    let t = TestDb::new().await;
    let opts = scenario::DemoOptions {
        seed,
        speed: 5.0,
        headless: true,
        customers: 120,
    };
    let r = scenario::run_headless(&t.db, &opts).await.expect("demo runs");
    eprintln!("{}", scenario::render(&r));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headless_story_is_deterministic_and_every_incident_is_answered() {
    let a = story(11).await;
    assert!(a.problems().is_empty(), "{:?}", a.problems());
    let by = |n: &str| a.incidents.iter().find(|i| i.incident == n).expect(n).clone();

    let refund = by("refund_47k");
    assert!(refund.held, "the $47,000 refund is held for two approvers first");
    assert_eq!(
        refund.finding.as_deref(),
        Some("policy_violation (refund_within_order_total)")
    );
    assert_eq!(refund.compensation.as_deref(), Some("compensated"));
    assert_eq!(refund.value_recovered, rust_decimal::Decimal::from(47000));

    let contract = by("wrong_contract");
    assert_eq!(contract.compensation.as_deref(), Some("compensated"));
    assert_eq!(contract.note, "contract is active");

    let campaign = by("churned_campaign");
    assert_eq!(campaign.compensation.as_deref(), Some("irreversible"));
    assert!(
        campaign.remediation.as_deref().is_some_and(|r| r.contains("apology")),
        "the remediation is listed: {:?}",
        campaign.remediation
    );

    assert!(by("drift").caught);
    let spike = by("complaint_spike");
    assert!(spike.caught && spike.paused);
    assert_eq!(a.slipped_after_pause, 0);
    assert!(a.other_writes > 0 && a.other_writes_intact == a.other_writes);
    assert!(a.log_verified);

    // Same seed, same incidents and outcome (times and counts aside).
    let b = story(11).await;
    assert_eq!(a.incidents, b.incidents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_is_scored_from_the_log_and_recorded() {
    let t = TestDb::new().await;
    let opts = scenario::DemoOptions {
        seed: 3,
        speed: 5.0,
        headless: true,
        customers: 60,
    };
    scenario::prepare(&t.db, &opts).await.expect("prepare");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let sup_pool = t.as_operator("supervisor").await;
    let mut sopts = backstop::supervisor::SupervisorOptions::named("drill-test-supervisor");
    sopts.tick = Duration::from_millis(100);
    let sup = tokio::spawn(backstop::supervisor::run(sup_pool, sopts, rx.clone()));
    let mut wopts = backstop::compensation::worker::WorkerOptions::named("drill-test-worker");
    wopts.poll = Duration::from_millis(100);
    let worker = tokio::spawn(backstop::compensation::worker::run(t.pool().clone(), wopts, rx.clone()));

    // The scripted responder: pauses the drill agent once it sees a finding.
    let ic = t.as_operator("ic-dana").await;
    let responder = tokio::spawn(async move {
        for _ in 0..600 {
            let found: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM backstop.findings WHERE agent = 'drill-agent-under-test')",
            )
            .fetch_one(&ic)
            .await
            .unwrap();
            if found {
                backstop::contract::pause(
                    &ic,
                    backstop::contract::Scope::Agent,
                    Some("drill-agent-under-test"),
                    "drill: stopping the refunds",
                )
                .await
                .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let dopts = drill::DrillOptions {
        agent: Some("drill-agent-under-test".into()),
        per_minute: 240.0,
        timeout: Duration::from_secs(90),
        seed: 3,
    };
    let (report, previous) = drill::run(&t.db, &dopts).await.expect("drill runs");
    eprintln!("{}", drill::render(&report, &previous));
    responder.await.unwrap();
    let s = &report.score;
    let detect = s.time_to_detect.expect("detected");
    let pause = s.time_to_pause.expect("paused");
    assert!(pause >= detect, "paused after detection: {pause} vs {detect}");
    assert!(s.value_at_risk > rust_decimal::Decimal::ZERO);
    assert_eq!(s.value_recovered, s.value_at_risk, "every drill refund compensated");
    assert!(s.time_to_compensate.is_some());
    assert!(report.blocked > 0, "the pause blocked the drill agent");
    assert!(previous.is_empty());
    // The score is what the pure scorer says of the log's events.
    let logged: serde_json::Value =
        sqlx::query_scalar("SELECT detail FROM backstop.action_log WHERE kind = 'drill' ORDER BY seq DESC LIMIT 1")
            .fetch_one(t.pool())
            .await
            .unwrap();
    let logged: drill::DrillReport = serde_json::from_value(logged).unwrap();
    assert_eq!(&logged.score, s);
    assert_eq!(logged.agent, "drill-agent-under-test");

    stop.send(true).unwrap();
    sup.await.unwrap().unwrap();
    worker.await.unwrap().unwrap();
}
