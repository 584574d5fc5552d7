//! `backstop verify`: recompute every seal from the log and compare, check
//! the seal chain, check that no row claims a place before a seal it was not
//! part of, and compare every projection with its rebuild from the log.
//!
//! Detection window: rows committed since the last seal are protected only by
//! the append-only triggers until the next seal (about a second when any
//! Backstop process runs the sealer; `verify` seals first by default).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::{Result, refine};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// altered, deleted, inserted, out_of_place, seal_chain, projection, anchor
    pub kind: String,
    pub seq: Option<i64>,
    pub seal_no: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub ok: bool,
    pub rows_checked: i64,
    pub seals_checked: i64,
    pub unsealed_rows: i64,
    pub first_bad_seq: Option<i64>,
    /// The newest seal: `seal_no` and hash (hex), the value to anchor outside the database.
    pub head: Option<(i64, String)>,
    pub projections_checked: bool,
    /// Sealed rows no longer in the log because retention archived and
    /// dropped them (accounted for by the retention records), and the cut.
    #[serde(default)]
    pub archived_rows: i64,
    #[serde(default)]
    pub cut: Option<chrono::DateTime<chrono::Utc>>,
    pub problems: Vec<Problem>,
}

const MAX_PROBLEMS: usize = 200;

/// How long a row may stay unsealed before `verify` fails: sealing runs
/// about every second while an owner's process (`backstop seal`, the
/// supervisor, the demo) is up.
pub const UNSEALED_BOUND: std::time::Duration = std::time::Duration::from_secs(300);

/// One seal as stored (archives carry the same fields).
#[derive(Debug, Clone, PartialEq)]
pub struct SealRow {
    pub seal_no: i64,
    pub after: String,
    pub upto: String,
    pub from_txid: String,
    pub from_seq: i64,
    pub to_txid: String,
    pub to_seq: i64,
    pub complete: bool,
    pub seal_xid: String,
    pub seq_floor: i64,
    pub seqs: Vec<i64>,
    pub digests: Vec<u8>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    /// The version of `backstop.canon` the seal hashed its rows with.
    pub canon: i16,
}

/// Seals `from` to `to` (inclusive), in order, as stored.
pub async fn seals_between(pool: &PgPool, from: i64, to: i64) -> Result<Vec<SealRow>> {
    let rows = sqlx::query(
        "SELECT seal_no, after_snap::text, upto_snap::text, from_txid::text, from_seq, to_txid::text, to_seq, \
                complete, seal_xid::text, seq_floor, seqs, digests, prev_hash, hash, canon \
           FROM backstop.seals WHERE seal_no BETWEEN $1 AND $2 ORDER BY seal_no",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(refine)?;
    Ok(rows
        .iter()
        .map(|r| SealRow {
            seal_no: r.get(0),
            after: r.get(1),
            upto: r.get(2),
            from_txid: r.get(3),
            from_seq: r.get(4),
            to_txid: r.get(5),
            to_seq: r.get(6),
            complete: r.get(7),
            seal_xid: r.get(8),
            seq_floor: r.get(9),
            seqs: r.get(10),
            digests: r.get(11),
            prev_hash: r.get(12),
            hash: r.get(13),
            canon: r.get(14),
        })
        .collect())
}

/// The chain hash of a seal, as `backstop.seal_hash` computes it.
pub fn seal_hash(prev: &[u8], s: &SealRow) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(s.seal_no.to_be_bytes());
    h.update(
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            s.after,
            s.upto,
            s.from_txid,
            s.from_seq,
            s.to_txid,
            s.to_seq,
            // Postgres prints booleans as t / f.
            if s.complete { "t" } else { "f" },
            s.seal_xid,
            s.seq_floor
        )
        .as_bytes(),
    );
    h.update(Sha256::digest(&s.digests));
    h.finalize().to_vec()
}

/// The hash the first seal links to.
pub fn genesis() -> Vec<u8> {
    Sha256::digest(b"backstop seals").to_vec()
}

/// The chain hash after seal `n` (the genesis hash for 0), None when the
/// live log has no such seal.
pub async fn chain_hash_at(pool: &PgPool, n: i64) -> Result<Option<Vec<u8>>> {
    if n == 0 {
        return Ok(Some(genesis()));
    }
    sqlx::query_scalar("SELECT hash FROM backstop.seals WHERE seal_no = $1")
        .bind(n)
        .fetch_optional(pool)
        .await
        .map_err(refine)
}

/// Bind a seal's snapshot window to a query over
/// `backstop.tail($1, $2, $3, $4, ...) t WHERE $5 OR (t.txid, t.seq) <= ($6, $7)`:
/// the rows the seal covers, read as the sealer read them.
pub fn bind_window<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    s: &'q SealRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&s.after)
        .bind(&s.upto)
        .bind(&s.from_txid)
        .bind(s.from_seq)
        .bind(s.complete)
        .bind(&s.to_txid)
        .bind(s.to_seq)
}

/// A chain head kept outside the database. A superuser who rewrites the log
/// and every seal consistently passes the chain check; the rewrite cannot
/// reproduce this hash at this seal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Anchor {
    pub seal_no: i64,
    /// sha256 chain hash of that seal, hex.
    pub hash: String,
    /// The last log seq that seal covers.
    pub to_seq: i64,
    pub exported_at: chrono::DateTime<chrono::Utc>,
    pub database: String,
}

impl Anchor {
    /// What an anchor written by `export_anchor` always is: a seal number
    /// from 1 and a 64-digit hex hash.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.seal_no < 1 {
            return Err(format!("seal_no must be 1 or more; got {}", self.seal_no));
        }
        if self.hash.len() != 64 || !self.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("hash must be 64 hex digits".to_string());
        }
        Ok(())
    }
}

/// Seal what is pending and return the newest seal as an anchor (None: an empty log).
pub async fn export_anchor(pool: &PgPool, database: &str) -> Result<Option<Anchor>> {
    super::seal_all(pool).await?;
    let row: Option<(i64, Vec<u8>, i64)> =
        sqlx::query_as("SELECT seal_no, hash, to_seq FROM backstop.seals ORDER BY seal_no DESC LIMIT 1")
            .fetch_optional(pool)
            .await
            .map_err(refine)?;
    Ok(row.map(|(seal_no, hash, to_seq)| Anchor {
        seal_no,
        hash: hex::encode(hash),
        to_seq,
        exported_at: chrono::Utc::now(),
        database: database.to_string(),
    }))
}

/// Verify the whole log. With `seal_first`, seal what committed since the
/// last seal before checking (so the report covers every row).
pub async fn verify(pool: &PgPool, seal_first: bool, check_projections: bool) -> Result<VerifyReport> {
    verify_anchored(pool, seal_first, check_projections, None).await
}

/// `verify`, and that the chain still passes through `anchor`.
pub async fn verify_anchored(
    pool: &PgPool,
    seal_first: bool,
    check_projections: bool,
    anchor: Option<&Anchor>,
) -> Result<VerifyReport> {
    if seal_first {
        super::seal_all(pool).await?;
    }
    let mut problems: Vec<Problem> = Vec::new();
    let push = |p: Problem, problems: &mut Vec<Problem>| {
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    };

    // Retention: every row dated before the cut was archived and dropped; the
    // records say how many, and up to which seal.
    let retention: Option<(chrono::DateTime<chrono::Utc>, i64, i64)> = sqlx::query_as(
        "SELECT max(cut), sum(rows)::bigint, max(last_seal) FROM backstop.log_retention HAVING count(*) > 0",
    )
    .fetch_optional(pool)
    .await
    .map_err(refine)?;
    let mut archived_missing: i64 = 0;
    let mut first_archived_missing: Option<(i64, i64)> = None;

    let seals = seals_between(pool, 1, i64::MAX).await?;
    // (seal_xid, seq_floor) in seal order; both only grow.
    let floors: Vec<(u64, i64)> = seals
        .iter()
        .filter_map(|s| s.seal_xid.parse::<u64>().ok().map(|x| (x, s.seq_floor)))
        .collect();

    let mut prev_hash = genesis();
    let mut rows_checked: i64 = 0;
    let mut seals_checked: i64 = 0;
    let mut head = None;
    let mut expected_no = 1i64;
    let mut last: Option<SealRow> = None;
    // Every row some window (sealed or pending) accounts for.
    let mut in_windows: Vec<i64> = Vec::new();

    for s in seals {
        seals_checked += 1;
        if s.seal_no != expected_no {
            push(
                Problem {
                    kind: "seal_chain".into(),
                    seq: None,
                    seal_no: Some(s.seal_no),
                    detail: format!("seal {} follows seal {}: a seal is missing", s.seal_no, expected_no - 1),
                },
                &mut problems,
            );
        }
        expected_no = s.seal_no + 1;
        if s.prev_hash != prev_hash || seal_hash(&s.prev_hash, &s) != s.hash {
            push(
                Problem {
                    kind: "seal_chain".into(),
                    seq: None,
                    seal_no: Some(s.seal_no),
                    detail: format!(
                        "seal {} does not match its hash or does not link to the seal before it",
                        s.seal_no
                    ),
                },
                &mut problems,
            );
        }
        prev_hash = s.hash.clone();
        head = Some((s.seal_no, hex::encode(&s.hash)));
        if let Some(a) = anchor.filter(|a| a.seal_no == s.seal_no)
            && !a.hash.eq_ignore_ascii_case(&hex::encode(&s.hash))
        {
            push(
                Problem {
                    kind: "anchor".into(),
                    seq: None,
                    seal_no: Some(s.seal_no),
                    detail: format!(
                        "seal {} no longer has the hash anchored on {} ({}...): the log and its seals were rewritten",
                        s.seal_no,
                        a.exported_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        a.hash.chars().take(12).collect::<String>()
                    ),
                },
                &mut problems,
            );
        }

        // Recompute the window from the log, with the seal's canonical text.
        let actual = bind_window(
            sqlx::query(
                "SELECT t.seq, t.txid::text, backstop.row_digest(t, $8) \
                   FROM backstop.tail($1::pg_snapshot, $2::pg_snapshot, $3::xid8, $4, 2147483647) t \
                  WHERE $5 OR (t.txid, t.seq) <= ($6::xid8, $7)",
            ),
            &s,
        )
        .bind(s.canon)
        .fetch_all(pool)
        .await
        .map_err(refine)?;
        rows_checked += actual.len() as i64;
        in_windows.extend(actual.iter().map(|r| r.get::<i64, _>(0)));

        let mut sealed: HashMap<i64, &[u8]> = HashMap::with_capacity(s.seqs.len());
        for (i, seq) in s.seqs.iter().enumerate() {
            if let Some(d) = s.digests.get(i * 32..i * 32 + 32) {
                sealed.insert(*seq, d);
            }
        }
        let mut seen: HashMap<i64, ()> = HashMap::with_capacity(actual.len());
        for row in &actual {
            let seq: i64 = row.get(0);
            let txid: String = row.get(1);
            let digest: Vec<u8> = row.get(2);
            seen.insert(seq, ());
            match sealed.get(&seq) {
                Some(d) if *d == digest.as_slice() => {}
                Some(_) => push(
                    Problem {
                        kind: "altered".into(),
                        seq: Some(seq),
                        seal_no: Some(s.seal_no),
                        detail: format!("row {seq} differs from what seal {} recorded", s.seal_no),
                    },
                    &mut problems,
                ),
                None => push(
                    Problem {
                        kind: "inserted".into(),
                        seq: Some(seq),
                        seal_no: Some(s.seal_no),
                        detail: format!(
                            "row {seq} (transaction {txid}) lies in the window of seal {} but was not sealed: it was inserted afterwards",
                            s.seal_no
                        ),
                    },
                    &mut problems,
                ),
            }
            check_place(&mut problems, &floors, seq, &txid, Some(s.seal_no));
        }
        for seq in &s.seqs {
            if seen.contains_key(seq) {
                continue;
            }
            if retention.is_some_and(|(_, _, last)| s.seal_no <= last) {
                // Counted here, judged against the retention records below.
                archived_missing += 1;
                first_archived_missing.get_or_insert((*seq, s.seal_no));
            } else {
                push(
                    Problem {
                        kind: "deleted".into(),
                        seq: Some(*seq),
                        seal_no: Some(s.seal_no),
                        detail: format!("row {seq} was sealed by seal {} and is no longer in the log", s.seal_no),
                    },
                    &mut problems,
                );
            }
        }
        last = Some(s);
    }

    // Rows after the last seal: not sealed yet, but none may claim a place before it.
    let (after, upto_clause, from_txid, from_seq) = match &last {
        None => ("1:1:".to_string(), None, "0".to_string(), 0),
        Some(s) if s.complete => (s.upto.clone(), None, "0".to_string(), 0),
        Some(s) => (s.after.clone(), Some(s.upto.clone()), s.to_txid.clone(), s.to_seq),
    };
    let mut unsealed: Vec<(i64, String)> = Vec::new();
    let mut oldest_unsealed: Option<(i64, chrono::DateTime<chrono::Utc>)> = None;
    {
        let rows = sqlx::query(
            "SELECT t.seq, t.txid::text, t.at FROM backstop.tail($1::pg_snapshot, coalesce($2::pg_snapshot, pg_current_snapshot()), $3::xid8, $4, 2147483647) t",
        )
        .bind(&after)
        .bind(&upto_clause)
        .bind(&from_txid)
        .bind(from_seq)
        .fetch_all(pool)
        .await
        .map_err(refine)?;
        let mut take = |rows: &[sqlx::postgres::PgRow]| {
            for r in rows {
                let (seq, at): (i64, chrono::DateTime<chrono::Utc>) = (r.get(0), r.get(2));
                unsealed.push((seq, r.get::<String, _>(1)));
                if oldest_unsealed.is_none_or(|(_, o)| at < o) {
                    oldest_unsealed = Some((seq, at));
                }
            }
        };
        take(&rows);
        if let Some(u) = &upto_clause {
            let rows = sqlx::query(
                "SELECT t.seq, t.txid::text, t.at FROM backstop.tail($1::pg_snapshot, pg_current_snapshot(), '0'::xid8, 0, 2147483647) t",
            )
            .bind(u)
            .fetch_all(pool)
            .await
            .map_err(refine)?;
            take(&rows);
        }
    }
    in_windows.extend(unsealed.iter().map(|(seq, _)| *seq));
    // Sealing runs about every second; rows left unsealed much longer mean
    // the sealer was stopped, and until sealed they are protected by the
    // append-only triggers alone.
    if let Some((seq, at)) = oldest_unsealed
        && chrono::Utc::now() - at > chrono::Duration::from_std(UNSEALED_BOUND).unwrap_or(chrono::Duration::MAX)
    {
        push(
            Problem {
                kind: "unsealed".into(),
                seq: Some(seq),
                seal_no: None,
                detail: format!(
                    "row {seq} was written at {} and is still not sealed (the bound is {} s): is `backstop seal` (or another process running as the owner) running?",
                    at.format("%Y-%m-%d %H:%M:%S UTC"),
                    UNSEALED_BOUND.as_secs()
                ),
            },
            &mut problems,
        );
    }
    // Every row of the log lies in some window: one outside all of them (a
    // transaction id below the first window's, written around the contract)
    // would otherwise be checked by nothing.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.action_log")
        .fetch_one(pool)
        .await
        .map_err(refine)?;
    if total > in_windows.len() as i64 {
        let outside: Vec<(i64, String)> = sqlx::query_as(
            "SELECT l.seq, l.txid::text FROM backstop.action_log l WHERE l.seq <> ALL ($1) ORDER BY l.seq LIMIT 20",
        )
        .bind(&in_windows)
        .fetch_all(pool)
        .await
        .map_err(refine)?;
        for (seq, txid) in outside {
            push(
                Problem {
                    kind: "inserted".into(),
                    seq: Some(seq),
                    seal_no: None,
                    detail: format!(
                        "row {seq} (transaction {txid}) lies outside every seal's window and the pending one: it was written around the contract"
                    ),
                },
                &mut problems,
            );
        }
    }
    for (seq, txid) in &unsealed {
        check_place(&mut problems, &floors, *seq, txid, None);
    }
    if let Some(a) = anchor
        && head.as_ref().is_none_or(|(n, _)| *n < a.seal_no)
    {
        push(
            Problem {
                kind: "anchor".into(),
                seq: None,
                seal_no: Some(a.seal_no),
                detail: format!(
                    "the anchor names seal {} but the chain ends at {}: the log was truncated or rewritten",
                    a.seal_no,
                    head.as_ref()
                        .map(|h| h.0.to_string())
                        .unwrap_or_else(|| "no seal".into())
                ),
            },
            &mut problems,
        );
    }

    if let Some((cut, dropped, last)) = retention {
        let (early, first_early): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), min(seq) FROM backstop.action_log WHERE at < $1")
                .bind(cut)
                .fetch_one(pool)
                .await
                .map_err(refine)?;
        if early > 0 {
            push(
                Problem {
                    kind: "inserted".into(),
                    seq: first_early,
                    seal_no: None,
                    detail: format!(
                        "{early} row(s) in the log are dated before the cut at {}: rows from before it were archived and dropped, so these were written afterwards",
                        cut.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                },
                &mut problems,
            );
        }
        if archived_missing != dropped {
            let (seq, seal_no) = first_archived_missing.unzip();
            push(
                Problem {
                    kind: "deleted".into(),
                    seq,
                    seal_no,
                    detail: format!(
                        "{archived_missing} row(s) sealed by seals 1 to {last} are missing from the log, but retention dropped {dropped}: \
                         rows were deleted outside retention"
                    ),
                },
                &mut problems,
            );
        }
    }

    let mut projections_checked = false;
    if check_projections {
        projections_checked = true;
        let diffs = sqlx::query("SELECT projection, side, row_data::text FROM backstop.projection_diffs()")
            .fetch_all(pool)
            .await
            .map_err(refine)?;
        for d in diffs {
            let projection: String = d.get(0);
            let side: String = d.get(1);
            let data: String = d.get(2);
            push(
                Problem {
                    kind: "projection".into(),
                    seq: None,
                    seal_no: None,
                    detail: format!(
                        "{projection}: a row only in the {}: {data}",
                        if side == "rebuild only" {
                            "rebuild from the log"
                        } else {
                            "table"
                        }
                    ),
                },
                &mut problems,
            );
        }
    }

    let first_bad_seq = problems.iter().filter_map(|p| p.seq).min();
    Ok(VerifyReport {
        ok: problems.is_empty(),
        rows_checked,
        seals_checked,
        unsealed_rows: unsealed.len() as i64,
        first_bad_seq,
        head,
        projections_checked,
        archived_rows: if retention.is_some() { archived_missing } else { 0 },
        cut: retention.map(|r| r.0),
        problems,
    })
}

/// Every insert takes its transaction id before its seq (the column order
/// of action_log), and each sealer read the sequence (seq_floor) before taking
/// its own transaction id (seal_xid). So a row written by a transaction whose
/// id is above a seal's seal_xid must carry a seq above that seal's floor. A
/// row that breaks this was written into the past.
fn check_place(problems: &mut Vec<Problem>, floors: &[(u64, i64)], seq: i64, txid: &str, seal_no: Option<i64>) {
    let Ok(tx) = txid.parse::<u64>() else { return };
    // The last seal whose transaction id is below this row's.
    let idx = floors.partition_point(|(x, _)| *x < tx);
    if idx == 0 {
        return;
    }
    let floor = floors[idx - 1].1;
    if seq <= floor && problems.len() < MAX_PROBLEMS {
        problems.push(Problem {
            kind: "out_of_place".into(),
            seq: Some(seq),
            seal_no,
            detail: format!(
                "row {seq} was written by transaction {tx}, which began after seq {floor} had been issued and sealed around: it was inserted into the past"
            ),
        });
    }
}

/// A primary and a replica of the same log, compared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaCheck {
    pub primary_head: Option<(i64, String)>,
    pub replica_head: Option<(i64, String)>,
    /// The replica's own verification (read-only: nothing is sealed there).
    pub replica: VerifyReport,
    /// The replica's head is a seal of the primary's chain, hash for hash.
    pub same_chain: bool,
    /// Seals the replica has not replayed yet.
    pub seals_behind: i64,
}

impl ReplicaCheck {
    pub fn ok(&self) -> bool {
        self.replica.ok && self.same_chain
    }
}

/// Compare a replica with its primary: the replica must verify on its own,
/// and its chain head must be the primary's seal of the same number.
pub async fn check_replica(primary: &PgPool, replica: &PgPool) -> Result<ReplicaCheck> {
    let head = |pool: &PgPool| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT seal_no, hash FROM backstop.seals ORDER BY seal_no DESC LIMIT 1",
            )
            .fetch_optional(&pool)
            .await
            .map_err(refine)
            .map(|r| r.map(|(n, h)| (n, hex::encode(h))))
        }
    };
    let primary_head = head(primary).await?;
    let replica_head = head(replica).await?;
    let report = verify(replica, false, true).await?;
    let same_chain = match &replica_head {
        None => true,
        Some((n, h)) => chain_hash_at(primary, *n).await?.map(hex::encode).as_deref() == Some(h.as_str()),
    };
    let seals_behind =
        primary_head.as_ref().map(|p| p.0).unwrap_or(0) - replica_head.as_ref().map(|r| r.0).unwrap_or(0);
    Ok(ReplicaCheck {
        primary_head,
        replica_head,
        replica: report,
        same_chain,
        seals_behind,
    })
}
