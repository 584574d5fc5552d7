//! Archive round trip: export whole seals of old history, read back and
//! verified on its own and against the live chain; a tampered archive fails.

mod common;

use std::io::{BufRead, BufReader, Write};

use backstop::archive;
use backstop::contract::{self, Proposal};
use common::TestDb;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::json;

async fn workload(t: &TestDb, from: usize, n: usize) {
    for i in from..from + n {
        let d = contract::propose(
            t.pool(),
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
            t.pool(),
            d.action_id,
            true,
            Some(&json!({"refund_id": format!("rf-{i}")})),
            None,
        )
        .await
        .unwrap();
        if i % 10 == 0 {
            contract::seal_all(t.pool()).await.unwrap();
        }
    }
    contract::seal_all(t.pool()).await.unwrap();
}

#[tokio::test]
async fn an_archive_verifies_on_its_own_and_a_tampered_one_does_not() {
    let t = TestDb::migrated_with(&[("backstop.log_partition_width", "2 seconds")]).await;
    tick(&t).await;
    t.load_assets().await;
    workload(&t, 0, 40).await;
    let cut = past_the_newest_partition(&t).await;
    workload(&t, 40, 10).await;

    let dir = tempfile::tempdir().unwrap();
    // --no-drop: export and verify only.
    let got = archive::archive(t.pool(), "test", cut, dir.path(), false, false)
        .await
        .unwrap();
    assert!(got.dropped.is_none());
    let out = got.dir.expect("an archive");
    let c = archive::verify_against(t.pool(), &out).await.unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.linked, Some(true));
    assert!(c.rows > 80, "the old history is in it: {} rows", c.rows);
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE at < '{}'",
            cut.to_rfc3339()
        ))
        .await as u64,
        c.manifest.partition_rows,
        "nothing was dropped"
    );
    // Whole seals: the archive ends where the live chain's next seal begins.
    let next_prev: Vec<u8> = sqlx::query_scalar("SELECT prev_hash FROM backstop.seals WHERE seal_no = $1")
        .bind(c.manifest.last_seal + 1)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(hex::encode(next_prev), c.manifest.head_hash);
    // Exporting the same range again is refused: nothing is overwritten.
    assert!(
        archive::archive(t.pool(), "test", cut, dir.path(), false, false)
            .await
            .is_err()
    );

    // Tamper with one row and fix the manifest's file hash to match: the
    // row's digest no longer matches its seal.
    let rows = out.join("rows.jsonl.gz");
    let lines: Vec<String> = BufReader::new(GzDecoder::new(std::fs::File::open(&rows).unwrap()))
        .lines()
        .map(|l| l.unwrap())
        .collect();
    let mut enc = GzEncoder::new(std::fs::File::create(&rows).unwrap(), Compression::default());
    for (i, l) in lines.iter().enumerate() {
        let l = if i == 5 {
            l.replacen("refund-bot", "refund-bat", 1)
        } else {
            l.clone()
        };
        enc.write_all(l.as_bytes()).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    enc.finish().unwrap();
    let bad = archive::verify_dir(&out).unwrap();
    assert!(
        bad.problems.iter().any(|p| p.contains("rows.jsonl.gz has sha256")),
        "{:?}",
        bad.problems
    );
    let mpath = out.join("manifest.json");
    let mut m: archive::Manifest = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, std::fs::read(&rows).unwrap());
    m.files
        .insert("rows.jsonl.gz".into(), hex::encode(sha2::Digest::finalize(h)));
    std::fs::write(&mpath, serde_json::to_string(&m).unwrap()).unwrap();
    let bad = archive::verify_dir(&out).unwrap();
    assert!(
        bad.problems.iter().any(|p| p.contains("differs from what seal")),
        "{:?}",
        bad.problems
    );
}

/// Keep partitions ahead of the clock (housekeeping does this in a running Backstop).
async fn tick(t: &TestDb) {
    sqlx::query("SELECT backstop.ensure_log_partitions()")
        .execute(t.pool())
        .await
        .unwrap();
}

/// Sleep until the partition holding the newest row has ended; its end.
async fn past_the_newest_partition(t: &TestDb) -> chrono::DateTime<chrono::Utc> {
    archive::wait_past_newest_partition(t.pool()).await.unwrap()
}

/// Run the refund in the demo payments system and record its result.
async fn execute_refund(t: &TestDb, action_id: uuid::Uuid, params: &serde_json::Value) {
    let result: serde_json::Value = sqlx::query_scalar("SELECT payments.issue_refund($1, 'refund-bot')")
        .bind(params)
        .fetch_one(t.pool())
        .await
        .unwrap();
    contract::record_result(t.pool(), action_id, true, Some(&result), None)
        .await
        .unwrap();
}

fn refund(agent: &str, customer: &str, amount: i64) -> Proposal {
    Proposal {
        agent: agent.into(),
        tool: "issue_refund".into(),
        params: json!({"customer_id": customer, "amount": amount, "order_id": format!("o-{customer}")}),
        confidence: Some(0.9173),
        ..Default::default()
    }
}

#[tokio::test]
async fn retention_drops_archived_partitions_and_the_log_still_verifies() {
    // Two-second partitions, so the test can age a few of them.
    let t = TestDb::migrated_with(&[("backstop.log_partition_width", "2 seconds")]).await;
    tick(&t).await;
    t.load_assets().await;

    // Old history: settled refunds, and state still open when the log is cut.
    workload(&t, 0, 20).await;
    let open = contract::propose(t.pool(), &refund("refund-bot", "c-open", 120))
        .await
        .unwrap();
    assert_eq!(open.verdict, contract::Verdict::Allow);
    let held = contract::propose(t.pool(), &refund("refund-bot-2", "c-held", 20_000))
        .await
        .unwrap();
    assert_eq!(held.verdict, contract::Verdict::Hold);
    contract::pause(
        t.pool(),
        contract::Scope::Agent,
        Some("rogue-bot"),
        "paused before the cut",
    )
    .await
    .unwrap();
    let finding = contract::raise_finding(
        t.pool(),
        "drift",
        "medium",
        Some("refund-bot"),
        None,
        &json!({"why": "old"}),
    )
    .await
    .unwrap();
    let done = contract::propose(t.pool(), &refund("refund-bot", "c-done", 40))
        .await
        .unwrap();
    execute_refund(&t, done.action_id, &refund("refund-bot", "c-done", 40).params).await;
    contract::request_compensation(t.pool(), &[done.action_id], "compensated before the cut", None)
        .await
        .unwrap();
    common::drain(t.pool(), "worker-old").await;
    let pending = contract::propose(t.pool(), &refund("refund-bot", "c-pending", 50))
        .await
        .unwrap();
    execute_refund(&t, pending.action_id, &refund("refund-bot", "c-pending", 50).params).await;
    contract::request_compensation(
        t.pool(),
        &[pending.action_id],
        "requested before the cut, run after",
        None,
    )
    .await
    .unwrap();
    contract::report_signal(t.pool(), "complaint", Some("refund-bot"), None, Some(&json!({"n": 1})))
        .await
        .unwrap();
    contract::seal_all(t.pool()).await.unwrap();
    let cut = past_the_newest_partition(&t).await;
    workload(&t, 100, 5).await;

    let rows_before_cut = t
        .count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE at < '{}'",
            cut.to_rfc3339()
        ))
        .await;
    let partitions_before = t.count("SELECT count(*) FROM backstop.log_partitions").await;
    let dir = tempfile::tempdir().unwrap();
    let out = archive::archive(t.pool(), "test", cut, dir.path(), true, false)
        .await
        .expect("archive and drop");
    assert_eq!(out.plan.cut, Some(cut), "the cut is the partition boundary asked for");
    let dropped = out.dropped.clone().expect("dropped");
    assert_eq!(dropped.rows, rows_before_cut);
    assert!(!dropped.partitions.is_empty());
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.log_partitions").await,
        partitions_before - dropped.partitions.len() as i64
    );
    let gone = t
        .count(&format!(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'backstop'::regnamespace AND relname IN ({})",
            dropped
                .partitions
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await;
    assert_eq!(gone, 0, "the partitions are dropped");
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM backstop.action_log WHERE at < '{}'",
            cut.to_rfc3339()
        ))
        .await,
        0
    );
    // Registry and policy loads, the pause, the open action, the held one,
    // the open finding and the pending compensation were carried forward.
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM backstop.carried_log ORDER BY seq")
        .fetch_all(t.pool())
        .await
        .unwrap();
    assert_eq!(dropped.carried as usize, kinds.len());
    let mut open_kinds: Vec<&str> = kinds
        .iter()
        .map(|k| k.as_str())
        .filter(|k| !k.ends_with("_loaded"))
        .collect();
    open_kinds.sort();
    assert_eq!(
        open_kinds,
        ["allowed", "compensation_requested", "finding", "held", "paused"],
        "every registry and policy load, and what is still open: {kinds:?}"
    );
    let carried_ok = t
        .count(
            "SELECT count(*) FROM backstop.carried_log c
               JOIN backstop.seals s ON c.seq = ANY (s.seqs)
              WHERE substring(s.digests FROM (array_position(s.seqs, c.seq) - 1) * 32 + 1 FOR 32)
                    = backstop.row_digest(ROW(c.*)::backstop.action_log)",
        )
        .await;
    assert_eq!(
        carried_ok,
        t.count("SELECT count(*) FROM backstop.carried_log").await,
        "every carried row is exactly the row its seal hashed"
    );

    // The archive verifies on its own and links to the live chain; the log verifies.
    let archived = out.dir.clone().expect("an archive");
    let c = archive::verify_against(t.pool(), &archived).await.unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.linked, Some(true));
    assert_eq!(c.manifest.cut, Some(cut));
    let v = contract::verify::verify(t.pool(), true, true).await.unwrap();
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.archived_rows, rows_before_cut);
    assert_eq!(v.cut, Some(cut));

    // Current state from before the cut still works.
    let refused = contract::propose(t.pool(), &refund("rogue-bot", "c-x", 10))
        .await
        .unwrap();
    assert_eq!(
        refused.verdict,
        contract::Verdict::Block,
        "still paused: {}",
        refused.reason
    );
    assert_eq!(
        t.staged_inverse(open.action_id, json!({"refund_id": "rf-open"})).await,
        json!({"refund_id": "rf-open", "customer_id": "c-open", "amount": 120})
    );
    contract::approve(&t.as_operator("approver-a").await, held.action_id, "ok")
        .await
        .unwrap();
    contract::approve(&t.as_operator("approver-b").await, held.action_id, "ok")
        .await
        .unwrap();
    contract::acknowledge_finding(t.pool(), finding.finding_id, "seen after the cut")
        .await
        .unwrap();
    common::drain(t.pool(), "worker-new").await;
    for id in [done.action_id, pending.action_id] {
        let status: String = sqlx::query_scalar("SELECT status FROM backstop.compensations WHERE action_id = $1")
            .bind(id)
            .fetch_one(t.pool())
            .await
            .unwrap();
        assert_eq!(status, "compensated");
    }
    let v = contract::verify::verify(t.pool(), true, true).await.unwrap();
    assert!(v.ok, "after writes on carried state: {:?}", v.problems);

    // A second cut continues the first archive.
    let cut2 = past_the_newest_partition(&t).await;
    workload(&t, 200, 3).await;
    let out2 = archive::archive(t.pool(), "test", cut2, dir.path(), true, false)
        .await
        .expect("second archive");
    let c2 = archive::verify_against(t.pool(), out2.dir.as_ref().expect("second archive dir"))
        .await
        .unwrap();
    assert!(c2.problems.is_empty(), "{:?}", c2.problems);
    assert_eq!(c2.manifest.first_seal, c.manifest.last_seal + 1);
    assert_eq!(c2.manifest.prev_hash, c.manifest.head_hash);
    let v = contract::verify::verify(t.pool(), true, true).await.unwrap();
    assert!(v.ok, "after two cuts: {:?}", v.problems);
    let refused = contract::propose(t.pool(), &refund("rogue-bot", "c-y", 10))
        .await
        .unwrap();
    assert_eq!(refused.verdict, contract::Verdict::Block, "the pause was carried twice");

    // Nothing is dropped without a matching archive: a wrong head hash is
    // refused and changes nothing.
    let cut3 = past_the_newest_partition(&t).await;
    contract::seal_all(t.pool()).await.unwrap();
    let p3 = archive::plan(t.pool(), cut3).await.unwrap();
    let n_parts = t.count("SELECT count(*) FROM backstop.log_partitions").await;
    let log_len = t.log_len().await;
    let err = sqlx::query("SELECT * FROM backstop.prepare_cut($1, $2, $3, $4)")
        .bind(cut3)
        .bind(p3.first_seal)
        .bind(p3.last_seal)
        .bind(vec![0u8; 32])
        .execute(t.pool())
        .await
        .expect_err("a wrong head is refused");
    assert!(err.to_string().contains("head hash"), "{err}");
    let err = sqlx::query("SELECT * FROM backstop.prepare_cut($1, $2, $3, $4)")
        .bind(cut3)
        .bind(p3.first_seal)
        .bind(p3.last_seal - 1)
        .bind(vec![0u8; 32])
        .execute(t.pool())
        .await
        .expect_err("an archive short of the cut is refused");
    assert!(err.to_string().contains("export again"), "{err}");
    let err = sqlx::query("SELECT * FROM backstop.prepare_cut($1, 1, 1, $2)")
        .bind(cut3 - chrono::Duration::milliseconds(500))
        .bind(vec![0u8; 32])
        .execute(t.pool())
        .await
        .expect_err("a cut inside a partition is refused");
    assert!(err.to_string().contains("not the end of a partition"), "{err}");
    let err = sqlx::query("SELECT * FROM backstop.drop_archived_partitions($1, $2, $3, $4, $5, '/x', 'test')")
        .bind(cut3)
        .bind(p3.first_seal)
        .bind(p3.last_seal)
        .bind(vec![0u8; 32])
        .bind("0".repeat(64))
        .execute(t.pool())
        .await
        .expect_err("a drop that was not prepared is refused");
    assert!(err.to_string().contains("not prepared"), "{err}");
    assert_eq!(t.count("SELECT count(*) FROM backstop.log_partitions").await, n_parts);
    assert_eq!(t.log_len().await, log_len);

    // Tampering after a cut: a row dated before it, and a live row deleted.
    let mut su = t.superuser().await;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut su)
        .await
        .unwrap();
    sqlx::query("INSERT INTO backstop.action_log (kind, actor, at, detail) VALUES ('signal', 'mallory', $1, '{}')")
        .bind(cut2 - chrono::Duration::seconds(1))
        .execute(&mut su)
        .await
        .unwrap();
    sqlx::query(
        "DELETE FROM backstop.action_log WHERE seq = (SELECT min(seq) FROM backstop.action_log WHERE kind = 'executed')",
    )
    .execute(&mut su)
    .await
    .unwrap();
    let v = contract::verify::verify(t.pool(), false, false).await.unwrap();
    assert!(!v.ok);
    assert!(
        v.problems
            .iter()
            .any(|p| p.kind == "inserted" && p.detail.contains("dated before the cut")),
        "{:?}",
        v.problems
    );
    assert!(v.problems.iter().any(|p| p.kind == "deleted"), "{:?}", v.problems);
}

/// Rows for a range nobody made a partition for in time land in the default
/// partition. That range stays there, but the ranges after it still get
/// their partitions: before, housekeeping stopped at the first such range
/// and every later row went to the default partition too, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_left_in_the_default_partition_does_not_stop_the_partitions_after_it() {
    let t = TestDb::migrated_with(&[("backstop.log_partition_width", "1 hour")]).await;
    let newest: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT max(to_at) FROM backstop.log_partitions")
        .fetch_one(t.pool())
        .await
        .unwrap();
    // A row dated in the next range, written before its partition exists
    // (the owner may write the log directly; agents' rows are dated now).
    let stray = newest + chrono::Duration::minutes(5);
    sqlx::query("INSERT INTO backstop.action_log (at, kind, actor) VALUES ($1, 'bench', 'tester')")
        .bind(stray)
        .execute(t.pool())
        .await
        .unwrap();
    // Housekeeping falls behind: four more widths are now due.
    sqlx::query("UPDATE backstop.log_partitioning SET ahead = 6")
        .execute(t.pool())
        .await
        .unwrap();
    let made: i32 = sqlx::query_scalar("SELECT backstop.ensure_log_partitions()")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert!(
        made >= 2,
        "the ranges after the stray row's got partitions ({made} made)"
    );
    let covering: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backstop.log_partitions WHERE from_at <= $1 AND to_at > $1")
            .bind(stray)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(
        covering, 0,
        "no partition claims the range whose row is in the default partition"
    );
    // A row in a later range lands in its own partition, not the default one.
    let later = newest + chrono::Duration::minutes(90);
    sqlx::query("INSERT INTO backstop.action_log (at, kind, actor) VALUES ($1, 'bench', 'tester')")
        .bind(later)
        .execute(t.pool())
        .await
        .unwrap();
    let in_default: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT at FROM backstop.action_log_default ORDER BY at")
            .fetch_all(t.pool())
            .await
            .unwrap();
    assert_eq!(
        in_default,
        vec![stray],
        "only the stray row is in the default partition"
    );
    // And the metrics say so, for the alert that asks why.
    let metric = |name: &'static str| {
        sqlx::query_scalar::<_, f64>("SELECT value FROM backstop.metrics() WHERE metric = $1")
            .bind(name)
            .fetch_one(t.pool())
    };
    assert_eq!(metric("log_default_partition_rows").await.unwrap(), 1.0);
    let until: f64 = sqlx::query_scalar("SELECT extract(epoch FROM max(to_at))::float8 FROM backstop.log_partitions")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(metric("log_partitioned_until_timestamp_seconds").await.unwrap(), until);
    // Called again, nothing more is due and nothing fails.
    let again: i32 = sqlx::query_scalar("SELECT backstop.ensure_log_partitions()")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(again, 0);
}

/// The cut checks, in the database, the projection rows it takes out of
/// later comparisons (those of settled actions from before it), and only
/// those: a tampered one from before the cut refuses the cut with nothing
/// dropped; one from after it is left to `verify`, which still sees it.
#[tokio::test]
async fn the_cut_checks_the_projection_rows_it_archives_and_verify_the_rest() {
    let t = TestDb::migrated_with(&[("backstop.log_partition_width", "2 seconds")]).await;
    tick(&t).await;
    t.load_assets().await;
    workload(&t, 0, 5).await;
    let cut = past_the_newest_partition(&t).await;
    workload(&t, 100, 3).await;
    let before: uuid::Uuid = sqlx::query_scalar(
        "SELECT action_id FROM backstop.actions WHERE proposed_at < $1 ORDER BY proposed_seq LIMIT 1",
    )
    .bind(cut)
    .fetch_one(t.pool())
    .await
    .unwrap();
    let after: uuid::Uuid = sqlx::query_scalar(
        "SELECT action_id FROM backstop.actions WHERE proposed_at >= $1 ORDER BY proposed_seq LIMIT 1",
    )
    .bind(cut)
    .fetch_one(t.pool())
    .await
    .unwrap();
    let pool = t.pool().clone();
    let scoped = |upto: chrono::DateTime<chrono::Utc>| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM backstop.projection_diffs($1)")
                .bind(upto)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(scoped(cut).await, 0, "untouched, the rows before the cut agree");

    // The projection is the owner's; an attacker with the owner's rights
    // could do this, and the cut must not archive the lie.
    let mut su = t.superuser().await;
    sqlx::query("UPDATE backstop.actions SET amount = amount + 1000 WHERE action_id = $1")
        .bind(after)
        .execute(&mut su)
        .await
        .unwrap();
    assert_eq!(
        scoped(cut).await,
        0,
        "a row that began after the cut is not the cut's to check"
    );
    assert!(
        t.count("SELECT count(*) FROM backstop.projection_diffs()").await > 0,
        "verify's comparison sees it"
    );
    sqlx::query("UPDATE backstop.actions SET amount = amount + 1000 WHERE action_id = $1")
        .bind(before)
        .execute(&mut su)
        .await
        .unwrap();
    assert!(scoped(cut).await > 0, "a row before the cut is");
    let partitions = t.count("SELECT count(*) FROM backstop.log_partitions").await;
    let rows = t.log_len().await;
    let dir = tempfile::tempdir().unwrap();
    let err = archive::archive(t.pool(), "test", cut, dir.path(), true, false)
        .await
        .expect_err("a cut over a tampered projection row is refused");
    assert!(
        format!("{err:#}").contains("projections disagree with the log"),
        "the refusal says why: {err:#}"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.log_partitions").await,
        partitions
    );
    assert_eq!(t.count("SELECT count(*) FROM backstop.log_retention").await, 0);
    // Nothing dropped: only what sealing and the refusal's own rows appended.
    assert!(t.log_len().await >= rows);
}

/// One cut at a time, without a false refusal: a cut tried again right after
/// a refused one used to be told "another cut of the log is running" when it
/// reached the server before the refused one's backend had ended its
/// transaction (the error is sent first), which a loaded machine made common.
/// A cut that is still running is refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_waits_for_one_ending_and_is_refused_while_one_runs() {
    let t = TestDb::new().await;
    // Inside today's partition: every check before the cut lock passes, the
    // one after it refuses, so which of the two answers says who got the lock.
    let cut = chrono::Utc::now() - chrono::Duration::milliseconds(1500);
    let prepare = || {
        sqlx::query("SELECT * FROM backstop.prepare_cut($1, 1, 1, $2)")
            .bind(cut)
            .bind(vec![0u8; 32])
            .execute(t.pool())
    };
    let err = prepare().await.expect_err("not a partition's end");
    assert!(err.to_string().contains("not the end of a partition"), "{err}");

    // A cut running in another session holds the lock until it commits.
    let mut running = t.superuser().await;
    sqlx::query("BEGIN").execute(&mut running).await.unwrap();
    sqlx::query("SELECT FROM backstop.job_locks WHERE name = 'cut' FOR UPDATE")
        .execute(&mut running)
        .await
        .unwrap();
    let (log, prepared) = (
        t.log_len().await,
        t.count("SELECT count(*) FROM backstop.cut_prepared").await,
    );
    let err = prepare().await.expect_err("refused while another cut runs");
    assert!(err.to_string().contains("another cut of the log is running"), "{err}");
    assert_eq!(common::code(&err), "55P03");
    assert_eq!(t.log_len().await, log);
    assert_eq!(t.count("SELECT count(*) FROM backstop.cut_prepared").await, prepared);

    // One that ends while this cut waits lets it through to its own checks.
    let ends = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sqlx::query("COMMIT").execute(&mut running).await.unwrap();
    });
    let err = prepare().await.expect_err("not a partition's end");
    assert!(err.to_string().contains("not the end of a partition"), "{err}");
    ends.await.unwrap();
}
