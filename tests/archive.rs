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
    let t = TestDb::new().await;
    t.load_assets().await;
    workload(&t, 0, 40).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    workload(&t, 40, 10).await;

    let dir = tempfile::tempdir().unwrap();
    let out = archive::export(t.pool(), "test", cut, dir.path(), false).await.unwrap();
    let c = archive::verify_against(t.pool(), &out).await.unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.linked, Some(true));
    assert!(c.rows > 80, "the old history is in it: {} rows", c.rows);
    assert!(c.manifest.max_at.unwrap() < cut, "nothing from after the cut");
    // Whole seals: the archive ends where the live chain's next seal begins.
    let next_prev: Vec<u8> = sqlx::query_scalar("SELECT prev_hash FROM backstop.seals WHERE seal_no = $1")
        .bind(c.manifest.last_seal + 1)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(hex::encode(next_prev), c.manifest.head_hash);
    // Exporting the same range again is refused: nothing is overwritten.
    assert!(archive::export(t.pool(), "test", cut, dir.path(), false).await.is_err());

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
