//! A real streaming replica: a private primary, pg_basebackup into a second
//! data directory on a second port, writes on the primary, and both verified,
//! with the replica's chain head checked against the primary's.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use backstop::contract::{self, Proposal};
use backstop::db::embedded::{EmbeddedOptions, EmbeddedPg};
use backstop::db::{Db, DbConfig};
use serde_json::json;
use sqlx::Executor;

async fn refunds(pool: &sqlx::PgPool, from: usize, n: usize) {
    for i in from..from + n {
        let d = contract::propose(
            pool,
            &Proposal {
                agent: "refund-bot".into(),
                tool: "issue_refund".into(),
                params: json!({"customer_id": format!("c-{i}"), "amount": 10 + i, "order_id": "o-1"}),
                confidence: Some(0.95),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        contract::record_result(
            pool,
            d.action_id,
            true,
            Some(&json!({"refund_id": format!("rf-{i}")})),
            None,
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_replica_verifies_and_carries_the_primary_chain() {
    let primary = EmbeddedPg::start(&EmbeddedOptions::default()).expect("primary");
    {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&primary.tcp_url("postgres"))
            .await
            .unwrap();
        admin.execute("CREATE DATABASE backstop").await.unwrap();
    }
    let cfg = DbConfig {
        url: Some(primary.tcp_url("backstop")),
        operator: "replica-test".into(),
        application: "backstop replica test".into(),
        max_connections: 4,
        ..Default::default()
    };
    let db = Db::open_and_migrate(&cfg).await.expect("migrate the primary");
    backstop::demo::install_systems(&db.pool).await.unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    backstop::demo::script::load_config(&db.pool, &root.join("tools.toml"), &root.join("policy.toml"))
        .await
        .unwrap();
    refunds(&db.pool, 0, 20).await;
    contract::seal_all(&db.pool).await.unwrap();

    // The replica: a base backup of the running primary, started as a standby.
    let dir = tempfile::Builder::new().prefix("bsr").tempdir_in("/tmp").unwrap();
    // The cluster may run as another user (when the tests run as root).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = dir.path().join("r");
    primary.base_backup(&dest).expect("pg_basebackup");
    let mut replica = EmbeddedPg::start(&EmbeddedOptions {
        keep_dir: Some(dest.clone()),
        ..Default::default()
    })
    .expect("the standby starts");
    let replica_pool = backstop::db::connect_replica(&replica.tcp_url("backstop"), 2)
        .await
        .expect("connect to the replica");
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&replica_pool)
        .await
        .unwrap();
    assert!(in_recovery, "the replica is a standby");

    // Writes keep coming on the primary; the replica follows.
    refunds(&db.pool, 20, 30).await;
    contract::seal_all(&db.pool).await.unwrap();
    let t0 = Instant::now();
    let check = loop {
        let c = contract::verify::check_replica(&db.pool, &replica_pool).await.unwrap();
        if c.seals_behind == 0 || t0.elapsed() > Duration::from_secs(30) {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(check.replica.ok, "the replica verifies: {:?}", check.replica.problems);
    assert!(check.same_chain);
    assert_eq!(check.seals_behind, 0, "the replica caught up");
    assert_eq!(check.primary_head, check.replica_head);
    let primary_report = contract::verify::verify(&db.pool, true, true).await.unwrap();
    assert!(primary_report.ok);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log WHERE kind = 'executed'")
        .fetch_one(&replica_pool)
        .await
        .unwrap();
    assert_eq!(n, 50);

    // The replica refuses writes: the contract is the primary's.
    let e = contract::propose(
        &replica_pool,
        &Proposal {
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            params: json!({"customer_id": "c-x", "amount": 1}),
            ..Default::default()
        },
    )
    .await
    .expect_err("a standby is read-only");
    assert!(e.to_string().contains("read-only"), "{e}");

    // The room and the supervisor read from it: the drift pass counts there.
    let settings = backstop::policy::SupervisorSettings::default();
    let mut stats = backstop::supervisor::SupervisorStats::default();
    backstop::supervisor::drift_pass_reading(&db.pool, Some(&replica_pool), &settings, &mut stats)
        .await
        .unwrap();
    assert_eq!(stats.drift_passes, 1);

    replica_pool.close().await;
    replica.stop();
    db.pool.close().await;
}
