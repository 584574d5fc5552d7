//! The tail reader under concurrent writers with late commits, rollbacks and
//! a dropped connection: every committed row exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backstop::contract::tail::Tail;
use backstop::db::{Db, DbConfig};
use common::TestDb;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Mutex;
use uuid::Uuid;

#[tokio::test]
async fn every_committed_row_exactly_once_despite_late_commits_rollbacks_and_disconnects() {
    let t = TestDb::new().await;
    let reader_cfg = DbConfig {
        url: Some(t.url.clone()),
        operator: "tail-test".into(),
        application: "tail-test-reader".into(),
        max_connections: 2,
        ..Default::default()
    };
    let reader = Db::connect_with(PgConnectOptions::from_str(&t.url).unwrap(), &reader_cfg, None)
        .await
        .unwrap();
    let mut tail = Tail::from_now(&reader.pool, 200).await.unwrap();

    let committed: Arc<Mutex<HashSet<Uuid>>> = Arc::new(Mutex::new(HashSet::new()));
    let mut writers = Vec::new();
    for w in 0..16u64 {
        let pool = t.pool().clone();
        let committed = committed.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let id = Uuid::new_v4();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT backstop._append('signal', $1, NULL, NULL, $2, '{}')")
                    .bind(format!("writer-{w}"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                // Some transactions hold their (low) seq for a long time before committing.
                let hold = match (w + i) % 10 {
                    0 => 1500,
                    1 | 2 => 300,
                    _ => (w * 7 + i * 13) % 40,
                };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                if (w * 31 + i) % 6 == 0 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    committed.lock().await.insert(id);
                }
            }
        }));
    }

    let mut seen_seq: HashMap<i64, usize> = HashMap::new();
    let mut delivered: Vec<Uuid> = Vec::new();
    let mut max_seq_so_far = 0i64;
    let mut late_deliveries = 0;
    let mut errors = 0;
    let mut polls = 0;
    let mut killed = 0;
    let all_done = |ws: &Vec<tokio::task::JoinHandle<()>>| ws.iter().all(|w| w.is_finished());
    let mut quiet = 0;
    loop {
        polls += 1;
        if polls % 40 == 0 && polls <= 120 {
            // Drop the reader's connections from outside, mid-run.
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'tail-test-reader'",
            )
            .fetch_one(t.pool())
            .await
            .unwrap();
            killed += n;
        }
        match tail.poll(&reader.pool).await {
            Ok(rows) => {
                if rows.is_empty() && all_done(&writers) {
                    quiet += 1;
                    if quiet >= 3 {
                        break;
                    }
                } else {
                    quiet = 0;
                }
                for r in rows {
                    *seen_seq.entry(r.seq).or_default() += 1;
                    if r.seq < max_seq_so_far {
                        late_deliveries += 1;
                    }
                    max_seq_so_far = max_seq_so_far.max(r.seq);
                    if let Some(id) = r.action_id {
                        delivered.push(id);
                    }
                }
            }
            Err(e) => {
                errors += 1;
                assert!(errors < 50, "the tail keeps failing: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let committed = committed.lock().await.clone();
    assert!(
        killed >= 3,
        "the reader's connections were dropped mid-run ({killed} terminated, {errors} failed polls)"
    );
    assert!(
        late_deliveries > 0,
        "no row committed out of seq order: the test did not exercise late commits"
    );
    let dups: Vec<_> = seen_seq.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "rows delivered twice: {dups:?}");
    let delivered_set: HashSet<Uuid> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), delivered_set.len());
    let missing: Vec<_> = committed.difference(&delivered_set).collect();
    let extra: Vec<_> = delivered_set.difference(&committed).collect();
    assert!(missing.is_empty(), "committed rows never delivered: {}", missing.len());
    assert!(extra.is_empty(), "rolled-back rows delivered: {}", extra.len());
    assert!(committed.len() > 300, "{}", committed.len());
}

#[tokio::test]
async fn a_cursor_resumes_in_a_new_process_state() {
    // The cursor is plain data: serialize it, drop the reader, carry on.
    let t = TestDb::new().await;
    let mut tail = Tail::from_now(t.pool(), 3).await.unwrap();
    for i in 0..7 {
        sqlx::query("SELECT backstop._append('signal', 'x', NULL, NULL, NULL, jsonb_build_object('i', $1::int))")
            .bind(i)
            .execute(t.pool())
            .await
            .unwrap();
    }
    let first = tail.poll(t.pool()).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(tail.behind());
    let saved = serde_json::to_string(tail.cursor()).unwrap();
    drop(tail);
    let mut resumed = Tail::new(serde_json::from_str(&saved).unwrap(), 100);
    let rest = resumed.poll(t.pool()).await.unwrap();
    let all: Vec<i64> = first
        .iter()
        .chain(rest.iter())
        .map(|r| r.detail["i"].as_i64().unwrap())
        .collect();
    assert_eq!(all, (0..7).collect::<Vec<_>>());
    assert!(resumed.poll(t.pool()).await.unwrap().is_empty());
}
