//! The log is partitioned by time. With two-second partitions (a migration
//! setting), agents keep writing across several boundaries and into
//! partitions created while they write: no write fails, rows land in the
//! new partitions, nothing falls into the default one, every partition
//! refuses UPDATE, DELETE and TRUNCATE aimed at it directly, and the log
//! verifies across them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backstop::contract::{self, Proposal};
use backstop::db::embedded::{EmbeddedOptions, EmbeddedPg};
use backstop::db::{Db, DbConfig, run_migrations_with};
use serde_json::json;
use sqlx::Executor;
use sqlx::postgres::PgConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cross_partition_boundaries_and_land_in_new_partitions() {
    let pg = EmbeddedPg::start(&EmbeddedOptions::default()).expect("a private cluster");
    {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.tcp_url("postgres"))
            .await
            .unwrap();
        admin.execute("CREATE DATABASE backstop").await.unwrap();
    }
    let url = pg.tcp_url("backstop");
    let opts: PgConnectOptions = url.parse().unwrap();
    run_migrations_with(&opts, &[("backstop.log_partition_width", "2 seconds")])
        .await
        .expect("migrate with two-second partitions");
    let cfg = DbConfig {
        url: Some(url.clone()),
        operator: "partition-test".into(),
        application: "backstop partition test".into(),
        max_connections: 8,
        ..Default::default()
    };
    let db = Db::connect_with(opts, &cfg, None).await.unwrap();
    let pool = db.pool.clone();
    backstop::demo::install_systems(&pool).await.unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    backstop::demo::script::load_config(&pool, &root.join("tools.toml"), &root.join("policy.toml"))
        .await
        .unwrap();
    let start: i64 = sqlx::query_scalar("SELECT max(seq) FROM backstop.action_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.log_partitions")
        .fetch_one(&pool)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = contract::propose(
                    &pool,
                    &Proposal {
                        agent: format!("agent-{w}"),
                        tool: "lookup_customer".into(),
                        params: json!({"customer_id": format!("c-{i}")}),
                        ..Default::default()
                    },
                )
                .await;
                match r {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // What housekeeping does in every Backstop process: partitions ahead, seals.
    for _ in 0..24 {
        sqlx::query("SELECT backstop.ensure_log_partitions()")
            .execute(&pool)
            .await
            .unwrap();
        contract::seal_all(&pool).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no write may fail");
    assert!(ok.load(Ordering::Relaxed) > 100);

    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.log_partitions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        after >= before + 3,
        "partitions were created while writing: {before} -> {after}"
    );
    let used: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tableoid) FROM backstop.action_log WHERE seq > $1 AND kind = 'allowed'",
    )
    .bind(start)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(used >= 3, "the writes spread over {used} partition(s)");
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log_default WHERE seq > $1")
        .bind(start)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        in_default, 0,
        "ensure kept ahead: nothing fell into the default partition"
    );

    // Every partition, and the default one, refuses changes aimed at it.
    let parts: Vec<String> =
        sqlx::query_scalar("SELECT name FROM backstop.log_partitions UNION ALL SELECT 'action_log_default' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    for p in &parts {
        for stmt in [
            format!("UPDATE backstop.{p} SET kind = 'x'"),
            format!("DELETE FROM backstop.{p}"),
            format!("TRUNCATE backstop.{p}"),
        ] {
            let e = sqlx::query(sqlx::AssertSqlSafe(stmt.clone()))
                .execute(&pool)
                .await
                .expect_err(&stmt);
            assert!(e.to_string().contains("append-only"), "{stmt}: {e}");
        }
    }
    let report = contract::verify::verify(&pool, true, true).await.unwrap();
    assert!(
        report.ok,
        "the log verifies across partitions: {:?}",
        report.problems.first()
    );
    pool.close().await;
}
