//! Least privilege, as real logins: every cell of the duty × function matrix
//! allowed or denied by the database; no duty writes a table directly; the
//! identity in the log is the login's; four-eyes cannot be faked.

mod common;

use backstop::contract::roles::{CONTRACT_FUNCTIONS, EVERY_DUTY_FUNCTIONS, READ_FUNCTIONS};
use common::{Logins, TestDb, code};
use sqlx::{Executor, Row};

const DUTIES: &[&str] = &[
    "agent",
    "viewer",
    "approver",
    "operator",
    "commander",
    "supervisor",
    "worker",
    "policy",
];

/// Each named function of the contract (every overload) with its argument types.
async fn signatures(t: &TestDb, names: Vec<String>) -> Vec<(String, Vec<String>)> {
    sqlx::query(
        "SELECT p.proname, array(SELECT format_type(x, NULL) FROM unnest(p.proargtypes) x)
           FROM pg_proc p WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname = ANY ($1)",
    )
    .bind(names)
    .fetch_all(t.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Call `backstop.f` with NULL arguments of its types: whether the database
/// refused it by privilege (an allowed call is refused by validation, or
/// succeeds, never by privilege), and what it answered.
async fn call_with_nulls(
    pool: &sqlx::PgPool,
    f: &str,
    types: &[String],
) -> (bool, Result<Vec<sqlx::postgres::PgRow>, sqlx::Error>) {
    let args: Vec<String> = types.iter().map(|ty| format!("NULL::{ty}")).collect();
    let sql = format!("SELECT * FROM backstop.{f}({})", args.join(", "));
    let r = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await;
    let denied = matches!(&r, Err(e) if code(e) == "42501" && e.to_string().contains("permission denied"));
    (denied, r)
}

/// The specification: what each duty may call.
fn allowed(duty: &str, f: &str) -> bool {
    // Sealing is the owner's alone (a duty that could seal could hold the
    // sealer up).
    // Making partitions is the owner's too (it locks the whole log until the
    // caller commits).
    let house = ["expire_held", "prune_value_minutes"];
    let read = ["tail", "compensation_plan", "precheck"];
    match duty {
        "agent" => [
            "propose",
            "propose_batch",
            "decision",
            "record_result",
            "record_results",
            "report_signal",
        ]
        .contains(&f),
        "viewer" => read.contains(&f),
        "approver" => ["approve", "reject"].contains(&f) || house.contains(&f) || read.contains(&f),
        "operator" => {
            [
                "request_compensation",
                "acknowledge_finding",
                "resolve_finding",
                "report_signal",
                "record_drill",
            ]
            .contains(&f)
                || house.contains(&f)
                || read.contains(&f)
        }
        "commander" => ["pause", "resume"].contains(&f) || house.contains(&f) || read.contains(&f),
        "supervisor" => {
            [
                "schedule_reviews",
                "claim_reviews",
                "complete_review",
                "raise_finding",
                "add_rollups",
                "claim_drift_pass",
                "run_check",
                "rollups_from_log",
                "evaluate",
                "claim_notifications",
                "finish_notification",
                "pause",
                "request_compensation",
                "report_signal",
            ]
            .contains(&f)
                || house.contains(&f)
                || read.contains(&f)
        }
        // Loading the registry and the policy is a duty of its own.
        "policy" => ["load_registry", "load_policy", "report_config_rejected"].contains(&f) || read.contains(&f),
        "worker" => {
            ["claim_compensations", "finish_compensation", "finish_compensations"].contains(&f)
                || house.contains(&f)
                || read.contains(&f)
        }
        _ => false,
    }
}

#[tokio::test]
async fn every_cell_of_the_role_matrix_as_real_logins() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let sigs = signatures(&t, CONTRACT_FUNCTIONS.iter().map(|s| s.to_string()).collect()).await;
    let mut pools = Vec::new();
    let mut cells = 0;
    for duty in DUTIES {
        let pool = logins.login(&t, &format!("t_{duty}"), Some(duty)).await;
        for (f, types) in &sigs {
            // NULL arguments: an allowed call is refused by validation (or
            // succeeds), never by privilege; a denied one only by privilege.
            let (denied, r) = call_with_nulls(&pool, f, types).await;
            assert_eq!(
                !denied,
                allowed(duty, f),
                "{duty} calling {f}: {:?}",
                r.as_ref().err().map(|e| e.to_string())
            );
            cells += 1;
        }
        // No duty writes a table directly, not even the log.
        for stmt in [
            "INSERT INTO backstop.action_log (seq, at, txid, kind, actor) VALUES (-1, now(), pg_current_xact_id(), 'x', 'x')",
            "UPDATE backstop.kill_switches SET paused = false",
            "DELETE FROM backstop.approval_queue",
        ] {
            let e = sqlx::query(stmt).execute(&pool).await.expect_err(stmt);
            assert_eq!(code(&e), "42501", "{duty}: {stmt}: {e}");
        }
        // Everyone but an agent reads the log.
        let read = sqlx::query("SELECT count(*) FROM backstop.action_log")
            .fetch_one(&pool)
            .await;
        assert_eq!(read.is_ok(), *duty != "agent", "{duty} reading the log: {read:?}");
        pools.push(pool);
    }
    assert_eq!(cells, DUTIES.len() * CONTRACT_FUNCTIONS.len());
    // Everything belongs to the owner role, so the contract runs as it (not
    // as whoever migrated); no duty can change the schema.
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT owner FROM (
             SELECT nspowner::regrole::text AS owner FROM pg_namespace WHERE nspname = 'backstop'
             UNION ALL SELECT relowner::regrole::text FROM pg_class
              WHERE relnamespace = 'backstop'::regnamespace AND relkind IN ('r', 'p', 'v')
             UNION ALL SELECT proowner::regrole::text FROM pg_proc WHERE pronamespace = 'backstop'::regnamespace) o",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert_eq!(owners, ["backstop_owner"]);
    for pool in &pools {
        let e = sqlx::query("CREATE TABLE backstop.sneaky (x int)")
            .execute(pool)
            .await
            .expect_err("no duty changes the schema");
        assert_eq!(code(&e), "42501", "{e}");
    }
    // A login with no duty calls nothing.
    let nobody = logins.login(&t, "t_nobody", None).await;
    let e = sqlx::query("SELECT * FROM backstop.decision(NULL)")
        .fetch_all(&nobody)
        .await
        .expect_err("no duty, no call");
    assert_eq!(code(&e), "42501");
    pools.push(nobody);
    logins.drop_all(pools).await;
}

/// No grant outside the lists: every function a duty can execute is a cell
/// of the matrix above, a read-only function of every duty but agent, or one
/// of the three every duty calls. Internal (`_`) functions are no one's.
/// Found so: `add_rollup`, which wrote any counts for any agent into the
/// rollups the room and drift read, was granted to the supervisor and in
/// none of the lists.
#[tokio::test]
async fn every_grant_is_in_the_matrix_or_a_listed_reader_as_real_logins() {
    let t = TestDb::new().await;
    let granted: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT DISTINCT p.proname::text, p.provolatile <> 'v', d.duty
           FROM pg_proc p CROSS JOIN backstop.duties d
          WHERE p.pronamespace = 'backstop'::regnamespace AND d.duty NOT IN ('owner', 'check')
            AND has_function_privilege(d.role_name, p.oid, 'EXECUTE')
          ORDER BY 1, 3",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert!(granted.len() > 50, "the query sees the grants: {granted:?}");
    for (f, read_only, duty) in &granted {
        assert!(!f.starts_with('_'), "{duty} may execute the internal {f}");
        let listed = CONTRACT_FUNCTIONS.contains(&f.as_str())
            || EVERY_DUTY_FUNCTIONS.contains(&f.as_str())
            || (READ_FUNCTIONS.contains(&f.as_str()) && duty != "agent" && *read_only);
        assert!(
            listed,
            "{duty} may execute {f}, which no list in contract::roles names for it"
        );
    }
    // A function that runs as its caller cannot call an internal one: its
    // caller would be refused with "permission denied for function _bad"
    // instead of its own message (retention_plan was).
    let invoker_calls_internal: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname::text FROM pg_proc p
          WHERE p.pronamespace = 'backstop'::regnamespace AND NOT p.prosecdef AND p.proname !~ '^_'
            AND p.prosrc ~ 'backstop\\._[a-z]'
            AND EXISTS (SELECT 1 FROM backstop.duties d WHERE d.duty NOT IN ('owner', 'check')
                           AND has_function_privilege(d.role_name, p.oid, 'EXECUTE'))",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert!(
        invoker_calls_internal.is_empty(),
        "run as their callers and call internal functions: {invoker_calls_internal:?}"
    );
    for f in READ_FUNCTIONS.iter().chain(EVERY_DUTY_FUNCTIONS) {
        for duty in DUTIES {
            let has = granted.iter().any(|(g, _, d)| g == f && d == duty);
            let want = EVERY_DUTY_FUNCTIONS.contains(f) || *duty != "agent";
            assert_eq!(has, want, "{duty} and {f}");
        }
    }

    // As logins: an agent is refused every reader by privilege, a viewer by
    // none of them (NULL arguments: a validation error is not a refusal).
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "t_reader_agent", Some("agent")).await;
    let viewer = logins.login(&t, "t_reader_viewer", Some("viewer")).await;
    let sigs = signatures(
        &t,
        READ_FUNCTIONS
            .iter()
            .chain(EVERY_DUTY_FUNCTIONS)
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    assert!(sigs.len() >= READ_FUNCTIONS.len() + EVERY_DUTY_FUNCTIONS.len());
    let log = t.log_len().await;
    for (f, types) in &sigs {
        for (who, pool) in [("agent", &agent), ("viewer", &viewer)] {
            let (denied, r) = call_with_nulls(pool, f, types).await;
            let want = who == "agent" && !EVERY_DUTY_FUNCTIONS.contains(&f.as_str());
            assert_eq!(
                denied,
                want,
                "{who} calling {f}: {:?}",
                r.as_ref().err().map(|e| e.to_string())
            );
        }
    }
    assert_eq!(t.log_len().await, log, "reading wrote nothing");
    logins.drop_all(vec![agent, viewer]).await;
}

#[tokio::test]
async fn identity_comes_from_the_login_and_four_eyes_cannot_be_faked() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "refunds", Some("agent")).await;
    let agent_name: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&agent)
        .await
        .unwrap();
    let ana = logins.login(&t, "ana", Some("approver")).await;
    let ana_name: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&ana)
        .await
        .unwrap();
    let bob = logins.login(&t, "bob", Some("approver")).await;

    // An agent login acts only as itself.
    let e = sqlx::query("SELECT * FROM backstop.propose('someone-else', 'issue_refund', '{\"customer_id\": \"c-1\", \"amount\": 20000}')")
        .fetch_all(&agent)
        .await
        .expect_err("impersonation");
    assert_eq!(code(&e), "42501", "{e}");
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT action_id FROM backstop.propose($1, 'issue_refund', '{\"customer_id\": \"c-1\", \"amount\": 20000}')",
    )
    .bind(&agent_name)
    .fetch_one(&agent)
    .await
    .unwrap();
    // Mapped, it may act as a named agent too.
    sqlx::query("INSERT INTO backstop.agent_logins VALUES ($1, 'refund-bot')")
        .bind(&agent_name)
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query(
        "SELECT * FROM backstop.propose('refund-bot', 'issue_refund', '{\"customer_id\": \"c-2\", \"amount\": 5}')",
    )
    .fetch_all(&agent)
    .await
    .unwrap();

    // ana names herself "bob" in the session: the log still says ana, and
    // her second approval is refused; the agent cannot approve at all.
    let mut c = ana.acquire().await.unwrap();
    c.execute("SET backstop.operator = 'bob'").await.unwrap();
    sqlx::query("SELECT * FROM backstop.approve($1, 'ok')")
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .unwrap();
    let e = sqlx::query("SELECT * FROM backstop.approve($1, 'ok again')")
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .expect_err("one person, one approval");
    assert_eq!(code(&e), "55000", "{e}");
    drop(c);
    let e = sqlx::query("SELECT * FROM backstop.approve($1, 'mine')")
        .bind(id)
        .fetch_all(&agent)
        .await
        .expect_err("agents do not approve");
    assert_eq!(code(&e), "42501");
    let r = sqlx::query("SELECT verdict FROM backstop.approve($1, 'second pair of eyes')")
        .bind(id)
        .fetch_one(&bob)
        .await
        .unwrap();
    assert_eq!(r.get::<String, _>(0), "allow");
    let approvers: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM backstop.action_log WHERE action_id = $1 AND kind = 'approved' ORDER BY seq",
    )
    .bind(id)
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert_eq!(approvers[0], ana_name, "the login, not the name ana gave herself");
    assert_ne!(approvers[0], approvers[1]);

    // Trusted sessions (Backstop's own tooling, here the superuser) still name operators.
    let ops = t.as_operator("dana").await;
    let actor: String = sqlx::query_scalar("SELECT backstop.actor()")
        .fetch_one(&ops)
        .await
        .unwrap();
    assert_eq!(actor, "dana");
    logins.drop_all(vec![agent, ana, bob, ops]).await;
}
