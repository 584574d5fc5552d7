//! `backstop archive`: retention. The log's partitions older than a
//! partition boundary (the cut) are exported as whole seals, each row with
//! the canonical text its seal hashed, so the archive verifies on its own
//! (`backstop verify --archive DIR`) and links to the live chain. Only after
//! the export reads back and verifies from the disk is the log cut:
//! `backstop.prepare_cut` checks again in the database that every row before
//! the cut is sealed within the archived range and carries forward what
//! current state still needs, and `backstop.drop_archived_partitions` drops
//! the partitions under a short exclusive lock (see sql/14_retention.sql).
//!
//! Each archive continues the one before it: it starts at the seal after the
//! last one archived, and its manifest names the hash it links to.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::contract::verify::{SealRow, bind_window, chain_hash_at, genesis, seal_hash};

/// Format 2 added the cut and its partitions; format 1 archives still read.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub database: String,
    pub created_at: DateTime<Utc>,
    /// Every row of the archive was written before this time.
    pub before: DateTime<Utc>,
    pub first_seal: i64,
    pub last_seal: i64,
    /// The chain hash the first seal links to (hex), and the last seal's.
    pub prev_hash: String,
    pub head_hash: String,
    pub rows: u64,
    pub min_at: Option<DateTime<Utc>>,
    pub max_at: Option<DateTime<Utc>>,
    /// sha256 (hex) of each file.
    pub files: std::collections::BTreeMap<String, String>,
    /// The partition boundary the log was cut at (every partition ending by
    /// it is in this archive or an earlier one), and those partitions.
    #[serde(default)]
    pub cut: Option<DateTime<Utc>>,
    #[serde(default)]
    pub partitions: Vec<String>,
    /// Rows of those partitions, in this archive or an earlier one.
    #[serde(default)]
    pub partition_rows: u64,
    /// What each element of a row's canonical text is.
    #[serde(default)]
    pub canon_fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealLine {
    seal_no: i64,
    after: String,
    upto: String,
    from_txid: String,
    from_seq: i64,
    to_txid: String,
    to_seq: i64,
    complete: bool,
    seal_xid: String,
    seq_floor: i64,
    seqs: Vec<i64>,
    digests: String,
    prev_hash: String,
    hash: String,
    /// The canonical text version the seal hashed with (archives made
    /// before versions existed hold version 1).
    #[serde(default = "canon_v1")]
    canon: i16,
}

fn canon_v1() -> i16 {
    1
}

impl From<&SealRow> for SealLine {
    fn from(r: &SealRow) -> SealLine {
        SealLine {
            seal_no: r.seal_no,
            after: r.after.clone(),
            upto: r.upto.clone(),
            from_txid: r.from_txid.clone(),
            from_seq: r.from_seq,
            to_txid: r.to_txid.clone(),
            to_seq: r.to_seq,
            complete: r.complete,
            seal_xid: r.seal_xid.clone(),
            seq_floor: r.seq_floor,
            seqs: r.seqs.clone(),
            digests: hex::encode(&r.digests),
            prev_hash: hex::encode(&r.prev_hash),
            hash: hex::encode(&r.hash),
            canon: r.canon,
        }
    }
}

impl SealLine {
    fn to_row(&self) -> Result<SealRow> {
        Ok(SealRow {
            seal_no: self.seal_no,
            after: self.after.clone(),
            upto: self.upto.clone(),
            from_txid: self.from_txid.clone(),
            from_seq: self.from_seq,
            to_txid: self.to_txid.clone(),
            to_seq: self.to_seq,
            complete: self.complete,
            seal_xid: self.seal_xid.clone(),
            seq_floor: self.seq_floor,
            seqs: self.seqs.clone(),
            digests: hex::decode(&self.digests).context("seal digests are not hex")?,
            prev_hash: hex::decode(&self.prev_hash).context("seal prev_hash is not hex")?,
            hash: hex::decode(&self.hash).context("seal hash is not hex")?,
            canon: self.canon,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RowLine {
    seq: i64,
    seal_no: i64,
    /// Exactly the text the seal's digest is the sha256 of: a JSON array of
    /// every field, in the order the manifest's `canon_fields` names.
    canon: String,
    /// The row as JSON object (format 1 archives only; the canon holds every field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    row: Option<Value>,
}

/// The fields of `backstop.canon`, in order (`at` in microseconds since the epoch).
pub const CANON_FIELDS: &[&str] = &[
    "seq",
    "at_us",
    "txid",
    "kind",
    "actor",
    "agent",
    "tool",
    "action_id",
    "correlation_id",
    "parent_action",
    "amount",
    "confidence",
    "reasoning",
    "inputs",
    "params",
    "result",
    "detail",
    "policy_version",
    "registry_version",
];

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// What dropping the partitions older than a time takes (`backstop.retention_plan`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub cut: Option<DateTime<Utc>>,
    pub partitions: Vec<String>,
    pub rows: i64,
    pub first_seal: i64,
    pub last_seal: i64,
    pub unsealed: i64,
    pub in_default: i64,
}

pub async fn plan(pool: &PgPool, before: DateTime<Utc>) -> Result<Plan> {
    let r = sqlx::query(
        "SELECT cut, coalesce(partitions, '{}'), coalesce(rows_before, 0), first_seal,
                coalesce(last_seal, first_seal - 1), coalesce(unsealed, 0), coalesce(in_default, 0)
           FROM backstop.retention_plan($1)",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    Ok(Plan {
        cut: r.get(0),
        partitions: r.get(1),
        rows: r.get(2),
        first_seal: r.get(3),
        last_seal: r.get(4),
        unsealed: r.get(5),
        in_default: r.get(6),
    })
}

/// Wait until the partition holding the newest log row has ended, keeping
/// partitions ahead of the clock meanwhile (as housekeeping would); returns
/// that partition's end, a cut that holds every row written so far.
pub async fn wait_past_newest_partition(pool: &PgPool) -> Result<DateTime<Utc>> {
    let ensure = || sqlx::query("SELECT backstop.ensure_log_partitions()").execute(pool);
    let end: DateTime<Utc> = sqlx::query_scalar(
        "SELECT p.to_at FROM backstop.log_partitions p
          WHERE p.from_at <= (SELECT max(at) FROM backstop.action_log) ORDER BY p.from_at DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    while Utc::now() < end + chrono::Duration::milliseconds(150) {
        ensure().await?;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    ensure().await?;
    Ok(end)
}

/// What `backstop archive` did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub plan: Plan,
    /// The archive's directory (None: every row before the cut was in an earlier archive already).
    pub dir: Option<PathBuf>,
    pub check: Option<ArchiveCheck>,
    pub dropped: Option<Dropped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub partitions: Vec<String>,
    pub rows: i64,
    /// Rows appended again because current state still needs them.
    pub carried: i32,
    /// The log row recording the drop.
    pub seq: i64,
    /// How long the drop held the log (the transaction), in milliseconds.
    pub millis: f64,
}

/// Archive the partitions of the log that end at or before `before`: export
/// the seals that hold their rows into a new directory under `dir`, read it
/// back and verify it, and (with `drop`) then drop the partitions.
pub async fn archive(
    pool: &PgPool,
    database: &str,
    before: DateTime<Utc>,
    dir: &Path,
    drop: bool,
    progress: bool,
) -> Result<Outcome> {
    crate::contract::seal_all(pool).await?;
    let t_start = std::time::Instant::now();
    let step = |what: &str| {
        if progress {
            eprintln!("backstop archive: {what} ({:.1} s)", t_start.elapsed().as_secs_f64());
        }
    };
    let mut p = plan(pool, before).await?;
    step("planned");
    if p.unsealed > 0 {
        // Rows that committed while sealing: one more round.
        crate::contract::seal_all(pool).await?;
        p = plan(pool, before).await?;
    }
    let Some(cut) = p.cut else {
        let oldest: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(to_at) FROM backstop.log_partitions")
            .fetch_one(pool)
            .await?;
        bail!(
            "nothing to archive: no partition of the log ends by {}{}",
            before.format("%Y-%m-%d %H:%M:%S UTC"),
            oldest
                .map(|o| format!(" (the oldest ends at {})", o.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        );
    };
    if p.in_default > 0 {
        bail!(
            "{} row(s) from before {} are in the log's default partition (no partition existed for them): \
             they cannot be archived by partition; nothing was written",
            p.in_default,
            cut.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if p.unsealed > 0 {
        bail!(
            "{} row(s) from before {} are not sealed yet: a transaction is still writing there; nothing was written",
            p.unsealed,
            cut.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let (dir, check, head) = if p.last_seal >= p.first_seal {
        let out = export(pool, database, &p, dir, progress).await?;
        step("exported");
        let check = verify_against(pool, &out).await?;
        step("verified against the live chain");
        if !check.problems.is_empty() {
            bail!(
                "the archive written to {} does not verify: {}; nothing was dropped",
                out.display(),
                check.problems.join("; ")
            );
        }
        let head = hex::decode(&check.manifest.head_hash)?;
        (Some(out), Some(check), head)
    } else {
        // Every row before the cut is in an earlier archive (or there are none).
        let head = chain_hash_at(pool, p.last_seal)
            .await?
            .ok_or_else(|| anyhow::anyhow!("seal {} is missing from the live log", p.last_seal))?;
        (None, None, head)
    };
    let mut out = Outcome {
        plan: p.clone(),
        dir: dir.clone(),
        check,
        dropped: None,
    };
    if !drop {
        return Ok(out);
    }
    let (manifest_sha, location) = match &dir {
        Some(d) => (
            sha256_file(&d.join("manifest.json"))?,
            std::fs::canonicalize(d)
                .unwrap_or_else(|_| d.clone())
                .display()
                .to_string(),
        ),
        None => (hex::encode(Sha256::digest(b"")), "(in earlier archives)".to_string()),
    };
    if progress {
        eprintln!(
            "backstop archive: dropping {} partition(s) with {} rows",
            p.partitions.len(),
            p.rows
        );
    }
    // First the checks and the carrying, beside the agents.
    sqlx::query("SELECT * FROM backstop.prepare_cut($1, $2, $3, $4)")
        .bind(cut)
        .bind(p.first_seal)
        .bind(p.last_seal)
        .bind(&head)
        .execute(pool)
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "the archive{} verified, but the log could not be cut; nothing was dropped",
                dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
            ))
        })?;
    step("checked in the database and carried forward what is still needed");
    // Then the drop, which waits at most 250 ms for the log's lock (writers
    // queue behind it meanwhile); a busy moment is tried again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let t0 = std::time::Instant::now();
        let r = sqlx::query_as::<_, (Vec<String>, i64, i32, i64)>(
            "SELECT partitions, rows_dropped, carried, seq FROM backstop.drop_archived_partitions($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(cut)
        .bind(p.first_seal)
        .bind(p.last_seal)
        .bind(&head)
        .bind(&manifest_sha)
        .bind(&location)
        .bind(format!("retention: the log before {} archived", cut.to_rfc3339()))
        .fetch_one(pool)
        .await;
        match r {
            Ok((partitions, rows, carried, seq)) => {
                out.dropped = Some(Dropped {
                    partitions,
                    rows,
                    carried,
                    seq,
                    millis: t0.elapsed().as_secs_f64() * 1000.0,
                });
                return Ok(out);
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") && attempt < 40 => {
                if progress {
                    eprintln!("backstop archive: the log was busy ({}); trying again", e.message());
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the archive{} verified, but the partitions were not dropped",
                    dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
                )));
            }
        }
    }
}

/// Export seals `plan.first_seal` to `plan.last_seal` into a new directory
/// under `dir`; read it back and verify it. Returns the archive's directory.
async fn export(pool: &PgPool, database: &str, plan: &Plan, dir: &Path, progress: bool) -> Result<PathBuf> {
    let (first, last) = (plan.first_seal, plan.last_seal);
    let out = dir.join(format!("backstop-archive-{first}-{last}"));
    if out.exists() {
        bail!("{} exists already: nothing was written", out.display());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seals_path = out.join("seals.jsonl.gz");
    let rows_path = out.join("rows.jsonl.gz");
    // Fast compression: the export is bound by it, and level 6 saves little more on this text.
    let mut seals = GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(&seals_path)?),
        Compression::fast(),
    );
    let mut rows = GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(&rows_path)?),
        Compression::fast(),
    );
    let (mut n_rows, mut min_at, mut max_at) = (0u64, None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    let prev_hash = hex::encode(
        chain_hash_at(pool, first - 1)
            .await?
            .ok_or_else(|| anyhow::anyhow!("seal {} is missing from the live log", first - 1))?,
    );
    let mut head_hash = prev_hash.clone();
    let chunk = 500i64;
    let mut from = first;
    while from <= last {
        let to = (from + chunk - 1).min(last);
        let srows = crate::contract::verify::seals_between(pool, from, to).await?;
        for r in &srows {
            let line = SealLine::from(r);
            head_hash = line.hash.clone();
            serde_json::to_writer(&mut seals, &line)?;
            seals.write_all(b"\n")?;
        }
        // Each seal's rows by its snapshot window, as `verify` reads them:
        // range scans of the txid index, not a probe of every partition per row.
        for seal in &srows {
            let listed: std::collections::HashSet<i64> = seal.seqs.iter().copied().collect();
            let lrows = bind_window(
                sqlx::query(
                    "SELECT t.seq, t.at, backstop.canon(t, $8)
                       FROM backstop.tail($1::pg_snapshot, $2::pg_snapshot, $3::xid8, $4, 2147483647) t
                      WHERE $5 OR (t.txid, t.seq) <= ($6::xid8, $7)
                      ORDER BY t.seq",
                ),
                seal,
            )
            .bind(seal.canon)
            .fetch_all(pool)
            .await?;
            // A row in the window the seal does not list was not sealed: not
            // archived (verify reports it); a listed row missing fails the
            // archive's own check.
            for r in lrows.iter().filter(|r| listed.contains(&r.get::<i64, _>(0))) {
                let at: DateTime<Utc> = r.get(1);
                min_at = Some(min_at.map_or(at, |m| m.min(at)));
                max_at = Some(max_at.map_or(at, |m| m.max(at)));
                let line = RowLine {
                    seal_no: seal.seal_no,
                    seq: r.get(0),
                    canon: r.get(2),
                    row: None,
                };
                serde_json::to_writer(&mut rows, &line)?;
                rows.write_all(b"\n")?;
                n_rows += 1;
            }
        }
        if progress {
            eprintln!("backstop archive: seals {from} to {to} of {first} to {last}, {n_rows} rows");
        }
        from = to + 1;
    }
    for w in [seals, rows] {
        w.finish()?
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing the archive: {}", e.error()))?
            .sync_all()?;
    }
    let mut files = std::collections::BTreeMap::new();
    files.insert("seals.jsonl.gz".to_string(), sha256_file(&seals_path)?);
    files.insert("rows.jsonl.gz".to_string(), sha256_file(&rows_path)?);
    let m = Manifest {
        format: FORMAT,
        database: database.to_string(),
        created_at: Utc::now(),
        before: plan.cut.unwrap_or_else(Utc::now),
        first_seal: first,
        last_seal: last,
        prev_hash,
        head_hash,
        rows: n_rows,
        min_at,
        max_at,
        files,
        cut: plan.cut,
        partitions: plan.partitions.clone(),
        partition_rows: plan.rows.max(0) as u64,
        canon_fields: CANON_FIELDS.iter().map(|f| f.to_string()).collect(),
    };
    std::fs::write(out.join("manifest.json"), serde_json::to_string_pretty(&m)? + "\n")?;
    // Nothing is trusted until it reads back and verifies from the disk.
    let check = verify_dir(&out)?;
    if !check.problems.is_empty() {
        bail!(
            "the archive written to {} does not verify: {}",
            out.display(),
            check.problems.join("; ")
        );
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveCheck {
    pub manifest: Manifest,
    pub seals: u64,
    pub rows: u64,
    pub problems: Vec<String>,
    /// Whether the live database still has the archive's head seal with the same hash (None: not asked).
    pub linked: Option<bool>,
}

/// The lines of a gzip'd JSON-lines file, one at a time (an archive can be
/// far larger than memory).
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<impl Iterator<Item = Result<T>> + use<T>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    Ok(BufReader::new(GzDecoder::new(f))
        .lines()
        .enumerate()
        .map(move |(i, line)| {
            let line = line.with_context(|| format!("{name} line {}", i + 1))?;
            serde_json::from_str(&line).with_context(|| format!("{name} line {}", i + 1))
        }))
}

/// Check an archive on its own: file hashes, every row's digest against its
/// seal, every seal's chain hash and link to the one before.
pub fn verify_dir(dir: &Path) -> Result<ArchiveCheck> {
    let mtext = std::fs::read_to_string(dir.join("manifest.json"))
        .with_context(|| format!("{} has no manifest.json: is it a backstop archive?", dir.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&mtext).context("manifest.json is not a backstop archive manifest")?;
    let mut problems = Vec::new();
    if !(1..=FORMAT).contains(&manifest.format) {
        bail!(
            "archive format {} is not one this backstop reads (1 to {FORMAT})",
            manifest.format
        );
    }
    for (name, want) in &manifest.files {
        let got = sha256_file(&dir.join(name))?;
        if &got != want {
            problems.push(format!("{name} has sha256 {got}, the manifest says {want}"));
        }
    }
    // Seals and rows are written in the same order (rows grouped by seal),
    // so both files are read in step, one seal's rows in memory at a time.
    let mut rows = read_lines::<RowLine>(&dir.join("rows.jsonl.gz"))?.peekable();
    let mut prev = if manifest.first_seal == 1 {
        genesis()
    } else {
        hex::decode(&manifest.prev_hash).context("manifest prev_hash is not hex")?
    };
    let mut expected = manifest.first_seal;
    let (mut n_seals, mut n_rows, mut stray) = (0u64, 0u64, 0u64);
    for line in read_lines::<SealLine>(&dir.join("seals.jsonl.gz"))? {
        let s = line?.to_row()?;
        n_seals += 1;
        if s.seal_no != expected {
            problems.push(format!(
                "seal {} follows seal {}: a seal is missing",
                s.seal_no,
                expected - 1
            ));
        }
        expected = s.seal_no + 1;
        if s.prev_hash != prev || seal_hash(&s.prev_hash, &s) != s.hash {
            problems.push(format!("seal {} does not match its hash or its predecessor", s.seal_no));
        }
        prev = s.hash.clone();
        // This seal's rows (rows of an earlier seal number here are strays).
        let mut mine: std::collections::HashMap<i64, RowLine> = std::collections::HashMap::new();
        while let Some(r) = rows.next_if(|r| r.as_ref().map_or(true, |r| r.seal_no <= s.seal_no)) {
            let r = r?;
            n_rows += 1;
            if r.seal_no < s.seal_no {
                stray += 1;
            } else if let Some(dup) = mine.insert(r.seq, r) {
                problems.push(format!("row {} appears twice", dup.seq));
            }
        }
        for (i, seq) in s.seqs.iter().enumerate() {
            let want = s.digests.get(i * 32..i * 32 + 32).unwrap_or(&[]);
            match mine.remove(seq) {
                Some(r) => {
                    if Sha256::digest(r.canon.as_bytes())[..] != *want {
                        problems.push(format!("row {seq} differs from what seal {} recorded", s.seal_no));
                    }
                }
                None => problems.push(format!("row {seq} of seal {} is missing from the archive", s.seal_no)),
            }
        }
        stray += mine.len() as u64;
    }
    for r in rows {
        r?;
        n_rows += 1;
        stray += 1;
    }
    if stray > 0 {
        problems.push(format!("{stray} row(s) belong to no seal of the archive"));
    }
    if hex::encode(&prev) != manifest.head_hash {
        problems.push("the last seal is not the manifest's head".into());
    }
    if expected != manifest.last_seal + 1 {
        problems.push(format!(
            "the archive ends at seal {} but the manifest says {}",
            expected - 1,
            manifest.last_seal
        ));
    }
    Ok(ArchiveCheck {
        seals: n_seals,
        rows: n_rows,
        manifest,
        problems,
        linked: None,
    })
}

/// `verify_dir`, and that the live chain still holds the archive's head and
/// the seal it links to.
pub async fn verify_against(pool: &PgPool, dir: &Path) -> Result<ArchiveCheck> {
    let mut c = verify_dir(dir)?;
    let live = chain_hash_at(pool, c.manifest.last_seal).await?;
    let mut linked = live.map(hex::encode).as_deref() == Some(c.manifest.head_hash.as_str());
    if !linked {
        c.problems.push(format!(
            "the live log's seal {} is not the archive's head: the archive and the live chain have diverged",
            c.manifest.last_seal
        ));
    }
    if c.manifest.first_seal > 1 {
        let before = chain_hash_at(pool, c.manifest.first_seal - 1).await?;
        if before.map(hex::encode).as_deref() != Some(c.manifest.prev_hash.as_str()) {
            linked = false;
            c.problems.push(format!(
                "the archive starts after seal {}, but the live log's seal {} has another hash",
                c.manifest.first_seal - 1,
                c.manifest.first_seal - 1
            ));
        }
    }
    c.linked = Some(linked);
    Ok(c)
}
