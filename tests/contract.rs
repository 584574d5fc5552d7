//! The contract's one source of truth: immutable migrations, each function
//! defined once in sql/, a committed schema snapshot, a re-applied contract
//! that ends where a fresh one does, and a self-describing public surface.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

use backstop::db::schema::CONTRACT;
use common::TestDb;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sql_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_contract_file_is_applied_in_order() {
    let on_disk: Vec<String> = sql_files("sql")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: Vec<String> = CONTRACT.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "src/db/schema.rs CONTRACT must list every file of sql/, in name order"
    );
}

/// A landed migration is never edited: its checksum is recorded in
/// migrations/CHECKSUMS when it lands, and a new one is added there.
#[test]
fn landed_migrations_are_unchanged() {
    let recorded = std::fs::read_to_string(root().join("migrations/CHECKSUMS")).expect("migrations/CHECKSUMS");
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for line in recorded.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (sum, name) = line.split_once("  ").expect("`sha256  file` lines");
        want.insert(name.trim().to_string(), sum.trim().to_string());
    }
    for path in sql_files("migrations") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let got = hex::encode(Sha256::digest(std::fs::read(&path).expect("read migration")));
        match want.remove(&name) {
            Some(sum) => assert_eq!(
                sum, got,
                "migrations/{name} changed after it landed: add a new migration instead"
            ),
            None => panic!("migrations/{name} is not in migrations/CHECKSUMS: add `{got}  {name}` when it lands"),
        }
    }
    assert!(want.is_empty(), "migrations removed after they landed: {want:?}");
}

/// Every function, view, trigger and type is created in exactly one place,
/// and that place is sql/, never a migration.
#[test]
fn each_object_is_defined_once_in_sql() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for path in sql_files("sql") {
        let text = std::fs::read_to_string(&path).unwrap();
        for (kind, name) in creates(&text) {
            let key = format!("{kind} {name}");
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(prev) = seen.insert(key.clone(), file.clone()) {
                panic!("{key} is created in both sql/{prev} and sql/{file}");
            }
            assert!(
                !text.contains(&format!("CREATE OR REPLACE {kind} {name}")),
                "sql/{file}: {key} must be created once, not replaced"
            );
        }
    }
    assert!(seen.len() > 60, "found only {} objects: the scan is broken", seen.len());
    for path in sql_files("migrations") {
        let text = std::fs::read_to_string(&path).unwrap();
        let found = creates(&text);
        assert!(
            found.is_empty(),
            "{} creates {found:?}: functions, views, triggers and types belong in sql/",
            path.display()
        );
    }
}

/// `CREATE [OR REPLACE] KIND NAME` at the start of a line: statements, not
/// comments or the quoted DDL inside an EXECUTE.
fn creates(text: &str) -> Vec<(String, String)> {
    {
        let mut out = Vec::new();
        for line in text.lines() {
            let l = line.trim_start();
            if l.starts_with("--") {
                continue;
            }
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.first().map(|w| w.eq_ignore_ascii_case("CREATE")) != Some(true) {
                continue;
            }
            let mut i = 1;
            if words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("OR")) {
                i = 3;
            }
            let Some(kind) = words.get(i).map(|w| w.to_ascii_uppercase()) else {
                continue;
            };
            if !["FUNCTION", "PROCEDURE", "VIEW", "TRIGGER", "TYPE"].contains(&kind.as_str()) {
                continue;
            }
            let Some(name) = words.get(i + 1) else { continue };
            let name: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            out.push((kind, name));
        }
        out
    }
}

fn pg_dump(url: &str) -> String {
    let bin = backstop::db::embedded::find_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("pg_dump"))
        .args([
            "--schema-only",
            "--schema=backstop",
            "--schema=backstop_check",
            // Dated partitions depend on the day the test runs.
            "--exclude-table=backstop.action_log_2*",
            "--dbname",
            url,
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    normalise(&String::from_utf8_lossy(&out.stdout))
}

/// What does not depend on the contract: pg_dump's headers and settings, and
/// the login that migrated.
fn normalise(dump: &str) -> String {
    let mut out = String::new();
    let mut blank = true;
    for line in dump.lines() {
        if line.starts_with("--")
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config")
            || line.starts_with("\\restrict")
            || line.starts_with("\\unrestrict")
        {
            continue;
        }
        if line.trim().is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        blank = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

async fn migrator(url: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut c)
        .await
        .expect("current_user")
}

fn without_migrator(dump: &str, who: &str) -> String {
    dump.replace(&format!("FOR ROLE {who} "), "FOR ROLE <migrator> ")
}

/// schema.sql is the contract's shape as a fresh migrate leaves it; CI fails
/// when the two differ, so every change to the contract shows in review.
/// `BACKSTOP_UPDATE_SCHEMA=1 cargo test --test contract` rewrites it.
#[tokio::test]
async fn schema_snapshot_is_current() {
    let db = TestDb::new().await;
    let who = migrator(&db.url).await;
    let got = format!(
        "-- The contract's shape after a fresh `backstop migrate` (pg_dump --schema-only,\n\
         -- normalised). Generated by `BACKSTOP_UPDATE_SCHEMA=1 cargo test --test contract`;\n\
         -- do not edit by hand.\n\n{}",
        without_migrator(&pg_dump(&db.url), &who)
    );
    let path = root().join("schema.sql");
    if std::env::var("BACKSTOP_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got).expect("write schema.sql");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want != got {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "schema.sql is not the schema a fresh migrate makes (first difference at line {}):\n  committed: {:?}\n  migrated:  {:?}\n\
             Review the change, then run BACKSTOP_UPDATE_SCHEMA=1 cargo test --test contract",
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

/// A database whose contract is older (a stray function, a changed body, a
/// lost grant, a dropped view) ends, after `migrate`, in the schema a fresh
/// migrate makes; an unchanged contract is not applied again.
#[tokio::test]
async fn migrate_over_an_older_contract_ends_like_a_fresh_one() {
    let fresh = TestDb::new().await;
    let who = migrator(&fresh.url).await;
    let want = without_migrator(&pg_dump(&fresh.url), &who);

    let old = TestDb::new().await;
    let opts = PgConnectOptions::from_str(&old.url).unwrap();
    let applied_at = |url: String| async move {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let t: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT max(applied_at) FROM backstop.contract_files")
                .fetch_one(&mut c)
                .await
                .unwrap();
        t
    };
    let before = applied_at(old.url.clone()).await;
    backstop::db::run_migrations(&opts).await.expect("migrate unchanged");
    assert_eq!(
        before,
        applied_at(old.url.clone()).await,
        "an unchanged contract was applied again"
    );

    let mut su = old.superuser().await;
    for stmt in [
        "CREATE FUNCTION backstop.removed_long_ago(x int) RETURNS int LANGUAGE sql AS 'SELECT x'",
        "CREATE OR REPLACE FUNCTION backstop.money(v numeric) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'old' $$",
        "DROP VIEW backstop.rebuilt_signals",
        "REVOKE EXECUTE ON FUNCTION backstop.decision(uuid) FROM backstop_agent",
        "UPDATE backstop.contract_files SET sha256 = 'older' WHERE name = '06_propose.sql'",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&mut su)
            .await
            .expect(stmt);
    }
    drop(su);
    assert_ne!(
        want,
        without_migrator(&pg_dump(&old.url), &who),
        "the older contract should differ"
    );
    backstop::db::run_migrations(&opts).await.expect("migrate over older");
    let got = without_migrator(&pg_dump(&old.url), &who);
    assert!(want == got, "a migrated older contract differs from a fresh one");
}

/// The public surface describes itself: every function a client may call,
/// every table and view it may read has a comment; internal helpers (`_*`,
/// `tg_*`) are callable by no duty; contract_version() answers every duty.
#[tokio::test]
async fn the_public_surface_describes_itself() {
    let db = TestDb::new().await;
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT 'function ' || p.proname FROM pg_proc p
          WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname !~ '^(_|tg_)'
            AND obj_description(p.oid, 'pg_proc') IS NULL
         UNION ALL
         SELECT 'relation ' || c.relname FROM pg_class c
          WHERE c.relnamespace = 'backstop'::regnamespace AND c.relkind IN ('r', 'p', 'v')
            AND NOT c.relispartition AND obj_description(c.oid, 'pg_class') IS NULL
          ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(missing.is_empty(), "no COMMENT on: {missing:?}");

    let granted_internal: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname || ' to ' || r.rolname FROM pg_proc p
           CROSS JOIN LATERAL aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
          WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname ~ '^(_|tg_)'
            AND r.oid <> p.proowner
         UNION ALL
         SELECT p.proname || ' to PUBLIC' FROM pg_proc p
          WHERE p.pronamespace = 'backstop'::regnamespace
            AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(
        granted_internal.is_empty(),
        "internal or unguarded functions are executable: {granted_internal:?}"
    );

    let version: i32 = sqlx::query_scalar("SELECT backstop.contract_version()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        version,
        backstop::db::schema::CONTRACT_VERSION,
        "src/db/schema.rs CONTRACT_VERSION must be what sql/00_roles.sql's contract_version() returns"
    );
    let changelog = std::fs::read_to_string(root().join("sql/CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(&format!("\n## {version}\n")),
        "sql/CHANGELOG.md has no section for contract version {version}"
    );
    let callers: Vec<String> = sqlx::query_scalar(
        "SELECT d.duty FROM backstop.duties d
          WHERE d.duty NOT IN ('owner', 'check') AND NOT has_function_privilege(d.role_name, 'backstop.contract_version()', 'EXECUTE')",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(
        callers.is_empty(),
        "duties that cannot ask the contract's version: {callers:?}"
    );
}

/// Migration 0007 gives the actions proposed before it what propose() now
/// takes at proposal (`bound_params`, the inverse's parameters bound from
/// the params), read from the log: an open action then stages the same
/// compensation after the upgrade as before it, and the projection still
/// agrees with its rebuild from the log.
#[tokio::test]
async fn actions_proposed_before_bound_params_bind_after_the_upgrade() {
    use backstop::contract::{self, Proposal};
    let t = TestDb::new().await;
    t.load_assets().await;
    let refund = |amount: i64, customer: &str| Proposal {
        agent: "refund-bot-1".into(),
        tool: "issue_refund".into(),
        params: serde_json::json!({"customer_id": customer, "order_id": "O-1", "amount": amount, "reason": "damaged"}),
        confidence: Some(0.95),
        ..Default::default()
    };
    let open = contract::propose(t.pool(), &refund(40, "c-1")).await.unwrap();
    assert_eq!(open.verdict, contract::Verdict::Allow, "{}", open.reason);
    let held = t.hold_refund_over_its_order().await;
    assert_eq!(held.verdict, contract::Verdict::Hold, "{}", held.reason);
    let bound = || {
        sqlx::query_as::<_, (uuid::Uuid, Option<serde_json::Value>)>(
            "SELECT action_id, bound_params FROM backstop.actions ORDER BY proposed_seq",
        )
        .fetch_all(t.pool())
    };
    let want = bound().await.unwrap();
    assert_eq!(
        want[0].1,
        Some(serde_json::json!({"customer_id": "c-1", "amount": 40})),
        "propose binds the inverse's params.* parameters"
    );

    // The database as the release before 0007 left it.
    let mut su = t.superuser().await;
    for stmt in [
        "ALTER TABLE backstop.actions DROP COLUMN bound_params",
        "DELETE FROM public._sqlx_migrations WHERE version = 7",
        "UPDATE backstop.contract_files SET sha256 = 'older'",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&mut su)
            .await
            .expect(stmt);
    }
    drop(su);
    let opts = PgConnectOptions::from_str(&t.url).unwrap();
    backstop::db::run_migrations(&opts).await.expect("the upgrade");
    assert_eq!(
        bound().await.unwrap(),
        want,
        "the upgrade binds what propose() would have"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.projection_diffs()").await,
        0,
        "the projection agrees with its rebuild after the upgrade"
    );
    assert_eq!(
        t.staged_inverse(open.action_id, serde_json::json!({"refund_id": "rf-1"}))
            .await,
        serde_json::json!({"refund_id": "rf-1", "customer_id": "c-1", "amount": 40}),
        "the open action binds its params after the upgrade"
    );
}
