//! Bad input, systematically: generated calls to every function of the SQL
//! contract, with values of the wrong type, empty, huge, unicode, NUL bytes,
//! SQL metacharacters, out-of-range numbers and NULLs, mixed with valid ones.
//! Every call must either succeed per the contract or fail with a clear
//! error (a data-class SQLSTATE and a message) having appended nothing; the
//! log must verify and every projection equal its rebuild afterwards.
//!
//! BACKSTOP_FUZZ_CALLS sets the number of calls per function (default 1,500,
//! about a minute here; CI runs 10,000).

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::TestDb;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use sqlx::Row;

/// The contract: what agents, approvers, operators, workers and the
/// supervisor call. (Internal helpers are not the contract.)
const CONTRACT: &[&str] = &[
    "propose",
    "propose_batch",
    "decision",
    "record_result",
    "record_results",
    "approve",
    "reject",
    "expire_held",
    "pause",
    "resume",
    "report_signal",
    "compensation_plan",
    "request_compensation",
    "claim_compensations",
    "finish_compensation",
    "finish_compensations",
    "raise_finding",
    "acknowledge_finding",
    "resolve_finding",
    "seal",
    "tail",
    "load_registry",
    "load_policy",
    "report_config_rejected",
    "record_drill",
    "claim_reviews",
    "complete_review",
    "claim_notifications",
    "finish_notification",
    "schedule_reviews",
    "ensure_log_partitions",
    // Retention (the owner's, through backstop archive).
    "retention_plan",
    "prepare_cut",
    "drop_archived_partitions",
];

/// SQLSTATEs that are clear refusals of bad input: data exceptions (22),
/// no such object (P0002), a refused state change (55000), a refused write
/// to the append-only log (42501), limits (54000, 54001).
fn clear(code: &str) -> bool {
    code.starts_with("22") || matches!(code, "P0002" | "55000" | "42501" | "54000" | "54001")
}

#[derive(Debug, Clone)]
struct Func {
    name: String,
    types: Vec<String>,
}

async fn contract_functions(pool: &sqlx::PgPool) -> Vec<Func> {
    let rows = sqlx::query(
        "SELECT p.proname, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) AS types
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'backstop' AND p.proname = ANY ($1) ORDER BY 1",
    )
    .bind(CONTRACT.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
    .unwrap();
    let fs: Vec<Func> = rows
        .iter()
        .map(|r| Func {
            name: r.get(0),
            types: r.get(1),
        })
        .collect();
    for c in CONTRACT {
        assert!(fs.iter().any(|f| f.name == *c), "contract function {c} not found");
    }
    fs
}

/// A value for an argument: a SQL text literal (cast to the declared type by
/// the server, so a value of the wrong type is refused there) or NULL.
fn text_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        3 => prop::sample::select(vec!["refund-bot", "issue_refund", "ana", "fleet", "agent", "tool", "c-1001", "complaint", "policy_violation", "critical", "w1"]).prop_map(|s| Some(s.to_string())),
        1 => Just(Some(String::new())),
        1 => Just(Some("   ".into())),
        1 => Just(Some("'); DROP TABLE backstop.action_log; --".into())),
        1 => Just(Some("\\x00 %s %n $1 {}[]\"".into())),
        1 => Just(Some("nul\0byte".into())),
        1 => Just(Some("régime ✓ 😀 עברית 中文".into())),
        1 => Just(Some("x".repeat(300_000))),
        2 => "\\PC{0,40}".prop_map(Some),
    ]
}

fn json_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some("null".into())),
        1 => Just(Some("[]".into())),
        1 => Just(Some("{}".into())),
        1 => Just(Some("42".into())),
        1 => Just(Some("\"text\"".into())),
        1 => Just(Some("1e400".into())),
        1 => Just(Some("{not json".into())),
        2 => Just(Some(r#"{"customer_id": "c-1001", "amount": 120, "order_id": "o-1"}"#.into())),
        1 => Just(Some(r#"{"customer_id": null, "amount": "NaN"}"#.into())),
        1 => Just(Some(r#"{"drill_id": "d-1", "agent": "x"}"#.into())),
        1 => Just(Some(r#"{"tools": [{"name": "t", "class": "bogus"}]}"#.into())),
        1 => Just(Some(r#"{"rules": [{"name": null}], "settings": {}}"#.into())),
        1 => Just(Some(format!("{}1{}", "[".repeat(2000), "]".repeat(2000)))),
        1 => Just(Some(format!("{{\"k\": \"{}\"}}", "y".repeat(100_000)))),
        2 => "\\PC{0,20}".prop_map(|s| Some(serde_json::json!({"s": s, "n": [1, 2.5, -3]}).to_string())),
    ]
}

fn numeric_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some("NaN".into())),
        1 => Just(Some("Infinity".into())),
        1 => Just(Some("-1".into())),
        1 => Just(Some("1000000000001".into())),
        1 => Just(Some("0.0000001".into())),
        1 => Just(Some("123456789012345678901234567890".into())),
        1 => Just(Some("twelve".into())),
        3 => (0u32..20_000).prop_map(|n| Some(n.to_string())),
    ]
}

fn real_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some("NaN".into())),
        1 => Just(Some("-0.5".into())),
        1 => Just(Some("1.5".into())),
        1 => Just(Some("Infinity".into())),
        3 => (0u32..=100).prop_map(|n| Some(format!("{}", n as f32 / 100.0))),
    ]
}

fn int_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some("0".into())),
        1 => Just(Some("-1".into())),
        1 => Just(Some("2147483647".into())),
        1 => Just(Some("99999999999".into())),
        3 => (1u32..50).prop_map(|n| Some(n.to_string())),
    ]
}

fn bool_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("true".into())),
        Just(Some("false".into())),
        Just(Some("maybe".into()))
    ]
}

fn interval_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("30 seconds".into())),
        Just(Some("-1 day".into())),
        Just(Some("1000 years".into())),
        Just(Some("0".into())),
        Just(Some("soon".into())),
    ]
}

fn snapshot_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("1:1:".into())),
        Just(Some("10:5:".into())),
        Just(Some("garbage".into())),
        Just(Some("0".into())),
        Just(Some("18446744073709551615".into())),
    ]
}

/// Arguments that name actions: the ids this run made, or strangers.
fn uuid_value(known: Vec<String>) -> BoxedStrategy<Option<String>> {
    let known = if known.is_empty() {
        vec![uuid::Uuid::nil().to_string()]
    } else {
        known
    };
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(uuid::Uuid::nil().to_string())),
        1 => Just(Some("not-a-uuid".into())),
        1 => any::<u128>().prop_map(|n| Some(uuid::Uuid::from_u128(n).to_string())),
        4 => prop::sample::select(known).prop_map(Some),
    ]
    .boxed()
}

fn array_of(inner: BoxedStrategy<Option<String>>) -> BoxedStrategy<Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some("{}".into())),
        1 => Just(Some("{NULL}".into())),
        1 => Just(Some("not an array".into())),
        4 => prop::collection::vec(inner, 1..4).prop_map(|v| {
            let items: Vec<String> = v
                .into_iter()
                .map(|x| match x {
                    None => "NULL".into(),
                    Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
                })
                .collect();
            Some(format!("{{{}}}", items.join(",")))
        }),
    ]
    .boxed()
}

fn time_value() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("2026-11-28 10:00:00+00".to_string())),
        Just(Some("2026-12-01 00:00:00+00".to_string())),
        Just(Some("1970-01-01 00:00:00+00".to_string())),
        Just(Some("infinity".to_string())),
        Just(Some("yesterday-ish".to_string())),
    ]
    .boxed()
}

fn for_type(t: &str, known: &[String]) -> BoxedStrategy<Option<String>> {
    match t {
        "text" => text_value().boxed(),
        "jsonb" => json_value().boxed(),
        "numeric" => numeric_value().boxed(),
        "real" | "double precision" => real_value().boxed(),
        "integer" | "bigint" => int_value().boxed(),
        "boolean" => bool_value().boxed(),
        "interval" => interval_value().boxed(),
        "pg_snapshot" | "xid8" => snapshot_value().boxed(),
        "uuid" => uuid_value(known.to_vec()),
        "uuid[]" => array_of(uuid_value(known.to_vec())),
        "text[]" => array_of(text_value().boxed()),
        "bigint[]" => array_of(int_value().boxed()),
        "timestamp with time zone" => time_value(),
        "timestamp with time zone[]" => array_of(time_value()),
        "bytea" => prop_oneof![
            Just(None),
            Just(Some("\\x".to_string())),
            Just(Some(format!("\\x{}", "00".repeat(32)))),
            Just(Some("\\xzz".to_string())),
        ]
        .boxed(),
        other => panic!("no generator for argument type {other}"),
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
    codes: BTreeMap<String, u64>,
    /// One message per (function, SQLSTATE), to show what the refusals say.
    samples: BTreeMap<(String, String), String>,
}

#[test]
fn every_contract_function_refuses_bad_input_clearly_and_changes_nothing() {
    let calls: u32 = std::env::var("BACKSTOP_FUZZ_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(async {
        let t = TestDb::new().await;
        t.load_assets().await;
        t
    });
    let pool = t.pool().clone();
    let funcs = rt.block_on(contract_functions(&pool));
    // Some real actions, so generated ids sometimes name one.
    let known: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for (i, amount) in [50, 700, 12000, 90].iter().enumerate() {
            let r = sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT action_id FROM backstop.propose('refund-bot', 'issue_refund', $1)",
            )
            .bind(serde_json::json!({"customer_id": format!("c-{i}"), "amount": amount, "order_id": "o-1"}))
            .fetch_one(&pool)
            .await
            .unwrap();
            ids.push(r.to_string());
        }
        ids
    });

    let tally = Mutex::new(Tally::default());
    // One runner per function, so each gets exactly `calls` generated calls.
    for f in &funcs {
        let args: Vec<BoxedStrategy<Option<String>>> = f.types.iter().map(|ty| for_type(ty, &known)).collect();
        let sql = format!(
            "SELECT * FROM backstop.{}({})",
            f.name,
            f.types
                .iter()
                .enumerate()
                .map(|(i, ty)| format!("CAST(${} AS {ty})", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut runner = TestRunner::new(PtConfig {
            cases: calls,
            failure_persistence: None,
            ..PtConfig::default()
        });
        let result = runner.run(&args, |args| {
            rt.block_on(async {
                let before: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM backstop.action_log")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for a in &args {
                    q = q.bind(a.clone());
                }
                let r = q.fetch_all(&pool).await;
                match r {
                    Ok(_) => {
                        *tally.lock().unwrap().ok.entry(f.name.clone()).or_default() += 1;
                        Ok(())
                    }
                    Err(sqlx::Error::Database(e)) => {
                        let code = e.code().map(|c| c.to_string()).unwrap_or_default();
                        {
                            let mut t = tally.lock().unwrap();
                            *t.refused.entry(f.name.clone()).or_default() += 1;
                            *t.codes.entry(code.clone()).or_default() += 1;
                            t.samples
                                .entry((f.name.clone(), code.clone()))
                                .or_insert_with(|| e.message().chars().take(160).collect());
                        }
                        if !clear(&code) || e.message().trim().is_empty() {
                            return Err(TestCaseError::fail(format!(
                                "{}: unclear failure {code}: {} ({sql}, {args:?})",
                                f.name,
                                e.message()
                            )));
                        }
                        let after: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM backstop.action_log")
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                        if after != before {
                            return Err(TestCaseError::fail(format!(
                                "{}: refused ({code}) but the log grew from {before} to {after}",
                                f.name
                            )));
                        }
                        Ok(())
                    }
                    Err(e) => Err(TestCaseError::fail(format!("{}: not a database error: {e}", f.name))),
                }
            })
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
    let tally = tally.into_inner().unwrap();
    eprintln!("bad input: {calls} calls to each of {} functions", CONTRACT.len());
    eprintln!("accepted per function {:?}", tally.ok);
    eprintln!("refused per function {:?}", tally.refused);
    eprintln!("SQLSTATEs {:?}", tally.codes);
    for ((f, code), m) in &tally.samples {
        eprintln!("  {f} {code}: {m}");
    }
    for f in CONTRACT {
        let n = tally.ok.get(*f).copied().unwrap_or(0) + tally.refused.get(*f).copied().unwrap_or(0);
        assert!(n >= u64::from(calls), "{f} had {n} calls, fewer than {calls}");
    }
    let report = rt
        .block_on(backstop::contract::verify::verify(&pool, true, true))
        .unwrap();
    assert!(
        report.ok,
        "after {calls} generated calls the log must verify and projections equal their rebuild: {:?}",
        report.problems.iter().take(5).collect::<Vec<_>>()
    );
    drop(t);
}
