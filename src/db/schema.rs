//! The schema, in two parts: the migrations (`migrations/`: tables, indexes,
//! partitions, data; immutable once landed) and the contract (`sql/`:
//! functions, views, triggers, types and grants, one file per concept).
//!
//! The contract is applied after the migrations, whole, in one transaction:
//! every function, view and composite type in schema `backstop` is dropped
//! and the files are run again in order. A file edited in place therefore
//! leaves no stale overload, no function it no longer defines and no grant
//! it no longer makes: a database brought up to date ends in the same schema
//! as a fresh one. The files' checksums are recorded in
//! `backstop.contract_files`, and an unchanged set is not applied again.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

/// The contract version sql/00_roles.sql's `contract_version()` returns
/// (tests/contract.rs checks that they agree).
pub const CONTRACT_VERSION: i32 = 9;

/// One file of the contract.
pub struct ContractFile {
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! contract_files {
    ($($name:literal),* $(,)?) => {
        &[$(ContractFile { name: $name, sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $name)) }),*]
    };
}

/// The contract's files, in the order they run. `tests/contract.rs` checks
/// that this lists every file in `sql/`.
pub static CONTRACT: &[ContractFile] = contract_files![
    "00_roles.sql",
    "01_log.sql",
    "02_checks.sql",
    "03_registry_policy.sql",
    "04_guardrails.sql",
    "05_kill_switch.sql",
    "06_propose.sql",
    "07_approvals.sql",
    "08_results.sql",
    "09_compensation.sql",
    "10_findings_signals.sql",
    "11_supervisor.sql",
    "12_tail_seals.sql",
    "13_rebuild.sql",
    "14_retention.sql",
    "15_checks.sql",
    "16_notify.sql",
    "99_finish.sql",
];

/// The pseudo-file whose checksum stands for the migrations the contract was
/// applied over: a new migration re-applies the contract too.
const MIGRATIONS_ENTRY: &str = "(migrations)";

/// What `backstop.contract_files` holds after the contract is applied.
pub fn contract_checksums() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = CONTRACT
        .iter()
        .map(|f| (f.name.to_string(), hex::encode(Sha256::digest(f.sql.as_bytes()))))
        .collect();
    let mut h = Sha256::new();
    for m in super::MIGRATOR.iter() {
        h.update(m.version.to_be_bytes());
        h.update(&m.checksum);
    }
    v.push((MIGRATIONS_ENTRY.to_string(), hex::encode(h.finalize())));
    v.sort();
    v
}

/// One fingerprint of the whole schema (migrations and contract), for caches
/// of migrated databases such as the tests' template.
pub fn fingerprint() -> String {
    let mut h = Sha256::new();
    for (name, sum) in contract_checksums() {
        h.update(name.as_bytes());
        h.update(sum.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Apply the contract unless the recorded checksums already match. Returns
/// whether it was applied.
pub async fn apply_contract(conn: &mut PgConnection) -> Result<bool> {
    let want = contract_checksums();
    if recorded(conn).await? == want {
        return Ok(false);
    }
    let mut tx = conn.begin().await?;
    // One applier at a time; the second finds the work done.
    sqlx::query("SELECT pg_advisory_xact_lock(1112757360, 1)")
        .execute(&mut *tx)
        .await?;
    if recorded(&mut tx).await? == want {
        return Ok(false);
    }
    sqlx::raw_sql("SET LOCAL search_path = pg_catalog, pg_temp")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(DROP_CONTRACT)
        .execute(&mut *tx)
        .await
        .context("dropping the previous contract")?;
    for f in CONTRACT {
        sqlx::raw_sql(sqlx::AssertSqlSafe(f.sql))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("applying sql/{}", f.name))?;
    }
    sqlx::query("DELETE FROM backstop.contract_files")
        .execute(&mut *tx)
        .await?;
    for (name, sum) in &want {
        sqlx::query(
            "INSERT INTO backstop.contract_files (name, sha256, applied_at, applied_by) \
             VALUES ($1, $2, now(), session_user)",
        )
        .bind(name)
        .bind(sum)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn recorded(conn: &mut PgConnection) -> Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT name, sha256 FROM backstop.contract_files ORDER BY name COLLATE \"C\"")
            .fetch_all(conn)
            .await?,
    )
}

/// Everything the contract files make, so they can make it anew. Tables,
/// their row types and sequences are the migrations' and stay. Schema
/// backstop_check (sql/00_roles.sql) holds only contract functions.
const DROP_CONTRACT: &str = r#"
DO $drop$
DECLARE
    stmts text[];
    stmt text;
BEGIN
    SET LOCAL client_min_messages = warning;
    -- Named before any is dropped: a CASCADE drops some of the others.
    stmts := ARRAY(
        SELECT format('DROP VIEW IF EXISTS %s CASCADE', c.oid::regclass)
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'backstop'::regnamespace AND c.relkind IN ('v', 'm')
        UNION ALL
        SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure)
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace IN (SELECT n.oid FROM pg_catalog.pg_namespace n
                                   WHERE n.nspname IN ('backstop', 'backstop_check'))
        UNION ALL
        SELECT format('DROP TYPE IF EXISTS %s CASCADE', t.oid::regtype)
          FROM pg_catalog.pg_type t JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
         WHERE t.typnamespace = 'backstop'::regnamespace AND c.relkind = 'c');
    FOREACH stmt IN ARRAY stmts LOOP
        EXECUTE stmt;
    END LOOP;
END
$drop$;
"#;
