//! `backstop archive`: export the log's old history as whole seals, each row
//! with the canonical text its seal hashed, so the archive verifies on its
//! own (`backstop verify --archive DIR`) and links to the live chain.
//!
//! This is the export half of retention. Dropping the exported partitions is
//! not done yet: the projections are checked against their rebuild from the
//! whole log, so dropping old rows first needs a verified checkpoint of the
//! projections at the cut.

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

use crate::contract::verify::{SealRow, genesis, seal_hash};

pub const FORMAT: u32 = 1;

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
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RowLine {
    seq: i64,
    seal_no: i64,
    /// Exactly the text the seal's digest is the sha256 of.
    canon: String,
    row: Value,
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Export every seal before the first one holding a row written at or after
/// `before`, into a new directory under `dir`; read it back and verify it.
/// Returns the archive's directory.
pub async fn export(
    pool: &PgPool,
    database: &str,
    before: DateTime<Utc>,
    dir: &Path,
    progress: bool,
) -> Result<PathBuf> {
    crate::contract::seal_all(pool).await?;
    // The newest seal all of whose rows are older than the cut; whole seals
    // only, so every seal in the archive verifies on its own.
    // The first seal holding a row from the cut on; the archive is every seal before it.
    let (first_new, newest): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT min(s.seal_no) FROM backstop.seals s CROSS JOIN LATERAL unnest(s.seqs) q(seq)
                   JOIN backstop.action_log l ON l.seq = q.seq WHERE l.at >= $1),
                (SELECT max(seal_no) FROM backstop.seals)",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    let last = match first_new {
        Some(f) => Some(f - 1).filter(|l| *l >= 1),
        None => newest,
    };
    let Some(last) = last else {
        bail!(
            "nothing to archive: no sealed history older than {}",
            before.format("%Y-%m-%d %H:%M:%S UTC")
        );
    };
    let out = dir.join(format!("backstop-archive-1-{last}"));
    if out.exists() {
        bail!("{} exists already: nothing was written", out.display());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seals_path = out.join("seals.jsonl.gz");
    let rows_path = out.join("rows.jsonl.gz");
    let mut seals = GzEncoder::new(std::fs::File::create(&seals_path)?, Compression::default());
    let mut rows = GzEncoder::new(std::fs::File::create(&rows_path)?, Compression::default());
    let (mut n_rows, mut min_at, mut max_at) = (0u64, None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    let (mut prev_hash, mut head_hash) = (String::new(), String::new());
    let chunk = 500i64;
    let mut from = 1i64;
    while from <= last {
        let to = (from + chunk - 1).min(last);
        let srows = crate::contract::verify::seals_between(pool, from, to).await?;
        for r in &srows {
            let line = SealLine::from(r);
            if line.seal_no == 1 || prev_hash.is_empty() {
                prev_hash = line.prev_hash.clone();
            }
            head_hash = line.hash.clone();
            serde_json::to_writer(&mut seals, &line)?;
            seals.write_all(b"\n")?;
        }
        let lrows = sqlx::query(
            "SELECT s.seal_no, l.seq, l.at, backstop.canon(l), to_jsonb(l)
               FROM backstop.seals s CROSS JOIN LATERAL unnest(s.seqs) q(seq)
               JOIN backstop.action_log l ON l.seq = q.seq
              WHERE s.seal_no BETWEEN $1 AND $2 ORDER BY s.seal_no, l.seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        for r in &lrows {
            let at: DateTime<Utc> = r.get(2);
            min_at = Some(min_at.map_or(at, |m| m.min(at)));
            max_at = Some(max_at.map_or(at, |m| m.max(at)));
            let line = RowLine {
                seal_no: r.get(0),
                seq: r.get(1),
                canon: r.get(3),
                row: r.get(4),
            };
            serde_json::to_writer(&mut rows, &line)?;
            rows.write_all(b"\n")?;
            n_rows += 1;
        }
        if progress {
            eprintln!("backstop archive: seals {from} to {to} of {last}, {n_rows} rows");
        }
        from = to + 1;
    }
    seals.finish()?.sync_all()?;
    rows.finish()?.sync_all()?;
    let mut files = std::collections::BTreeMap::new();
    files.insert("seals.jsonl.gz".to_string(), sha256_file(&seals_path)?);
    files.insert("rows.jsonl.gz".to_string(), sha256_file(&rows_path)?);
    let m = Manifest {
        format: FORMAT,
        database: database.to_string(),
        created_at: Utc::now(),
        before,
        first_seal: 1,
        last_seal: last,
        prev_hash,
        head_hash,
        rows: n_rows,
        min_at,
        max_at,
        files,
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

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(GzDecoder::new(f)).lines().enumerate() {
        let line = line.with_context(|| format!("{} line {}", path.display(), i + 1))?;
        out.push(serde_json::from_str(&line).with_context(|| format!("{} line {}", path.display(), i + 1))?);
    }
    Ok(out)
}

/// Check an archive on its own: file hashes, every row's digest against its
/// seal, every seal's chain hash and link to the one before.
pub fn verify_dir(dir: &Path) -> Result<ArchiveCheck> {
    let mtext = std::fs::read_to_string(dir.join("manifest.json"))
        .with_context(|| format!("{} has no manifest.json: is it a backstop archive?", dir.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&mtext).context("manifest.json is not a backstop archive manifest")?;
    let mut problems = Vec::new();
    if manifest.format != FORMAT {
        bail!(
            "archive format {} is not one this backstop reads ({FORMAT})",
            manifest.format
        );
    }
    for (name, want) in &manifest.files {
        let got = sha256_file(&dir.join(name))?;
        if &got != want {
            problems.push(format!("{name} has sha256 {got}, the manifest says {want}"));
        }
    }
    let seals: Vec<SealLine> = read_lines(&dir.join("seals.jsonl.gz"))?;
    let rows: Vec<RowLine> = read_lines(&dir.join("rows.jsonl.gz"))?;
    let mut by_seq: std::collections::HashMap<i64, &RowLine> = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        if by_seq.insert(r.seq, r).is_some() {
            problems.push(format!("row {} appears twice", r.seq));
        }
    }
    let mut prev = if manifest.first_seal == 1 {
        genesis()
    } else {
        hex::decode(&manifest.prev_hash).context("manifest prev_hash is not hex")?
    };
    let mut expected = manifest.first_seal;
    let mut used = 0u64;
    for line in &seals {
        let s = line.to_row()?;
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
        for (i, seq) in s.seqs.iter().enumerate() {
            let want = s.digests.get(i * 32..i * 32 + 32).unwrap_or(&[]);
            match by_seq.get(seq) {
                Some(r) if r.seal_no == s.seal_no => {
                    used += 1;
                    if Sha256::digest(r.canon.as_bytes())[..] != *want {
                        problems.push(format!("row {seq} differs from what seal {} recorded", s.seal_no));
                    }
                }
                _ => problems.push(format!("row {seq} of seal {} is missing from the archive", s.seal_no)),
            }
        }
    }
    if used != rows.len() as u64 {
        problems.push(format!(
            "{} row(s) belong to no seal of the archive",
            rows.len() as u64 - used
        ));
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
        seals: seals.len() as u64,
        rows: rows.len() as u64,
        manifest,
        problems,
        linked: None,
    })
}

/// `verify_dir`, and that the live chain still holds the archive's head.
pub async fn verify_against(pool: &PgPool, dir: &Path) -> Result<ArchiveCheck> {
    let mut c = verify_dir(dir)?;
    let live: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM backstop.seals WHERE seal_no = $1")
        .bind(c.manifest.last_seal)
        .fetch_optional(pool)
        .await?;
    let linked = live.map(hex::encode).as_deref() == Some(c.manifest.head_hash.as_str());
    if !linked {
        c.problems.push(format!(
            "the live log's seal {} is not the archive's head: the archive and the live chain have diverged",
            c.manifest.last_seal
        ));
    }
    c.linked = Some(linked);
    Ok(c)
}
