//! The trust boundary, attacked as real logins of the weakest duty that might
//! try: each attack is refused (or bounded), and where the contract refuses,
//! nothing is appended or changed.

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{Logins, TestDb, code};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Acquire, Executor, PgPool, Row};
use uuid::Uuid;

async fn log_len(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM backstop.action_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Map a login to the agent it acts as.
async fn map_agent(admin: &PgPool, login: &str, agent: &str) {
    sqlx::query("INSERT INTO backstop.agent_logins (login, agent) VALUES ($1, $2)")
        .bind(login)
        .bind(agent)
        .execute(admin)
        .await
        .unwrap();
}

async fn propose(pool: &PgPool, agent: &str, tool: &str, params: Value, key: Option<&str>) -> (Uuid, String, String) {
    sqlx::query_as(
        "SELECT action_id, verdict, reason FROM backstop.propose($1, $2, $3, confidence => 0.97, idempotency_key => $4)",
    )
    .bind(agent)
    .bind(tool)
    .bind(params)
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn refund(customer: &str, amount: i64) -> Value {
    json!({"customer_id": customer, "amount": amount, "order_id": "o-1", "reason": "damaged"})
}

/// 1. A policy check cannot write or climb: it runs as the check role, in a
/// read-only savepoint, under a statement timeout; loading a policy is the
/// policy duty's, not every operator's.
#[tokio::test]
async fn policy_checks_cannot_write_or_escalate_and_loading_is_a_duty_of_its_own() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let operator = logins.login(&t, "atk_op", Some("operator")).await;
    let supervisor = logins.login(&t, "atk_sup", Some("supervisor")).await;
    let policy = logins.login(&t, "atk_pol", Some("policy")).await;
    let sup_name = Logins::name("atk_sup");

    let doc = json!({"settings": {"hold_expiry_seconds": 60}, "rules": [], "lists": {}});
    let e = sqlx::query("SELECT * FROM backstop.load_policy($1, repeat('a', 64), 'attack')")
        .bind(&doc)
        .fetch_one(&operator)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "an operator loaded a policy: {e}");
    for f in ["load_policy(jsonb,text,text)", "load_registry(jsonb,text,text)"] {
        let may: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT has_function_privilege('backstop.{f}', 'EXECUTE')"
        )))
        .fetch_one(&policy)
        .await
        .unwrap();
        assert!(may, "the policy duty cannot call {f}");
    }

    // An executed action for the review to look at.
    let (id, verdict, _) = propose(t.pool(), "refund-bot", "issue_refund", refund("c-1", 40), None).await;
    assert_eq!(verdict, "allow");
    sqlx::query("SELECT * FROM backstop.record_result($1, true, '{\"refund_id\": \"rf-1\", \"status\": \"issued\"}')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();

    let orders_before: i64 = t.count("SELECT count(*) FROM payments.orders").await;
    let log_before = t.log_len().await;
    let escalations = [
        format!(
            "WITH a AS (UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = '{sup_name}' RETURNING 1) SELECT 'climbed' FROM a"
        ),
        "SELECT set_config('role', 'postgres', true) || (SELECT 'x' FROM pg_catalog.pg_authid LIMIT 1)".to_string(),
        "WITH d AS (DELETE FROM payments.orders RETURNING 1) SELECT count(*)::text FROM d".to_string(),
        "SELECT backstop.pause('fleet', NULL, 'from a check')::text".to_string(),
        "SELECT pg_sleep(30)::text".to_string(),
        "SELECT NULL::text FROM pg_advisory_lock(1112757332, 0)".to_string(),
        // Utility statements outlive any rollback: dropping the supervisor's
        // prepared statements (or preparing one under a name its driver
        // uses) must not run at all.
        "SELECT 'x'; DEALLOCATE ALL; SELECT 'y'".to_string(),
        "PREPARE sqlx_s_1 AS SELECT backstop.pause('fleet', NULL, 'hijacked')".to_string(),
    ];
    let checks = escalations
        .iter()
        .enumerate()
        .map(|(i, q)| backstop::policy::Check {
            name: format!("attack_{i}"),
            tool: None,
            kind: "policy_violation".into(),
            severity: "high".into(),
            query: q.clone(),
        })
        .collect();
    let settings = backstop::policy::SupervisorSettings {
        checks,
        ..Default::default()
    };
    let mut conn = supervisor.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut stats = backstop::supervisor::SupervisorStats::default();
    let raised = tokio::time::timeout(
        Duration::from_secs(60),
        backstop::supervisor::review::review_one(&mut tx, &settings, id, "sampled", &mut stats),
    )
    .await
    .expect("the review finished: the sleeping check was cut off")
    .expect("a broken check does not stop the review");
    tx.commit().await.unwrap();
    drop(conn);
    let from_checks = t
        .count("SELECT count(*) FROM backstop.findings WHERE rule LIKE 'attack_%'")
        .await;
    assert_eq!(
        from_checks,
        0,
        "an attacking check produced a finding: {} raised",
        raised.len()
    );
    let sup: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(&sup_name)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert!(!sup, "the supervisor's login became superuser");
    assert_eq!(orders_before, t.count("SELECT count(*) FROM payments.orders").await);
    let paused = t
        .count("SELECT count(*) FROM backstop.kill_switches WHERE paused")
        .await;
    assert_eq!(paused, 0, "a check paused the fleet");
    // The review itself appended nothing but what reviews append (no pause).
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE kind = 'paused'")
            .await,
        0
    );
    assert!(t.log_len().await >= log_before);
    // The advisory lock a check took was not kept by the supervisor's session.
    let held: i64 = t
        .count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 0 AND classid = 1112757332")
        .await;
    assert_eq!(held, 0);
    logins.drop_all(vec![operator, supervisor, policy]).await;
}

/// 2. An agent cannot record another agent's result, read its decisions,
/// learn its ids, or override what the registry binds for an inverse.
#[tokio::test]
async fn an_agent_cannot_act_on_or_learn_another_agents_actions() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let a = logins.login(&t, "atk_agent_a", Some("agent")).await;
    let b = logins.login(&t, "atk_agent_b", Some("agent")).await;
    map_agent(t.pool(), &Logins::name("atk_agent_a"), "refund-bot").await;
    map_agent(t.pool(), &Logins::name("atk_agent_b"), "billing-bot").await;

    let (id, verdict, _) = sqlx::query_as::<_, (Uuid, String, String)>(
        "SELECT action_id, verdict, reason FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.97, correlation_id => 'ticket-77')",
    )
    .bind(refund("c-2", 377))
    .fetch_one(&a)
    .await
    .unwrap();
    assert_eq!(verdict, "allow");

    let before = log_len(t.pool()).await;
    for sql in [
        "SELECT * FROM backstop.record_result($1, true, '{\"refund_id\": \"rf-evil\"}')",
        "SELECT * FROM backstop.decision($1)",
    ] {
        let e = sqlx::query(sql).bind(id).fetch_one(&b).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
    // A signal naming the other agent is refused; one traced to it through
    // the correlation id is recorded but tells nothing and counts for no one.
    let e = sqlx::query("SELECT * FROM backstop.report_signal('complaint', 'refund-bot', NULL, '{}')")
        .fetch_one(&b)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert_eq!(log_len(t.pool()).await, before, "a refused call appended");
    // Another agent's action id and an unknown one get the same refusal,
    // which names neither the other agent nor whether the id exists.
    let mut said = Vec::new();
    for action in [id, Uuid::new_v4()] {
        let e = sqlx::query("SELECT * FROM backstop.report_signal('complaint', NULL, NULL, $1)")
            .bind(json!({"action_id": action}))
            .fetch_one(&b)
            .await
            .unwrap_err();
        assert_eq!(code(&e), "42501", "{e}");
        assert!(!e.to_string().contains("refund-bot"), "{e}");
        said.push(e.to_string().replace(&action.to_string(), "ID"));
    }
    assert_eq!(said[0], said[1]);
    assert_eq!(log_len(t.pool()).await, before, "a refused call appended");
    let (traced_agent, traced_action): (Option<String>, Option<Uuid>) = sqlx::query_as(
        "SELECT traced_agent, traced_action FROM backstop.report_signal('complaint', NULL, 'ticket-77', '{}')",
    )
    .fetch_one(&b)
    .await
    .unwrap();
    assert_eq!((traced_agent, traced_action), (None, None));
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.signals WHERE agent = 'refund-bot'")
            .await,
        0
    );

    // The agent itself may fill what did not bind, never replace what did.
    let e = sqlx::query(
        "SELECT * FROM backstop.record_result($1, true, '{\"refund_id\": \"rf-9\", \"status\": \"issued\"}', '{\"amount\": 1}')",
    )
    .bind(id)
    .fetch_one(&a)
    .await
    .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    let e = sqlx::query(
        "SELECT * FROM backstop.record_result($1, true, '{\"refund_id\": \"rf-9\"}', '{\"payee\": \"attacker\"}')",
    )
    .bind(id)
    .fetch_one(&a)
    .await
    .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    let (status, comp): (String, String) = sqlx::query_as(
        "SELECT status, compensation FROM backstop.record_result($1, true, '{\"status\": \"issued\"}', '{\"refund_id\": \"rf-9\", \"amount\": 377}')",
    )
    .bind(id)
    .fetch_one(&a)
    .await
    .unwrap();
    assert_eq!((status.as_str(), comp.as_str()), ("executed", "staged"));
    let inv: Value = sqlx::query_scalar("SELECT inverse_params FROM backstop.actions WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(inv, json!({"refund_id": "rf-9", "customer_id": "c-2", "amount": 377}));

    // A decision's NOTIFY does not carry the id to whoever listens.
    let (held, verdict, _) = propose(&a, "refund-bot", "issue_refund", refund("c-3", 20_000), None).await;
    assert_eq!(verdict, "hold");
    let mut l = sqlx::postgres::PgListener::connect_with(&b).await.unwrap();
    l.listen("backstop_decisions").await.unwrap();
    sqlx::query("SELECT * FROM backstop.reject($1, 'not today')")
        .bind(held)
        .execute(t.pool())
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!n.payload().contains(&held.to_string()), "the payload names the action");
    let key: String = sqlx::query_scalar("SELECT backstop.decision_key($1)")
        .bind(held)
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(n.payload(), key);
    // The room decodes what the database sends, and names the same action.
    assert_eq!(
        backstop::contract::ControlEvent::decode(n.channel(), n.payload()).expect("the room can read it"),
        backstop::contract::ControlEvent::Decision {
            key: backstop::contract::decision_key(held)
        }
    );
    drop(l);
    logins.drop_all(vec![a, b]).await;
}

/// 3. A policy list must be a plain table the check role may read: a view
/// would run code as whoever reads it.
#[tokio::test]
async fn policy_lists_name_plain_tables_only() {
    let t = TestDb::new().await;
    let mut logins = Logins::new(&t);
    let policy = logins.login(&t, "atk_pol_list", Some("policy")).await;
    t.pool()
        .execute(
            "CREATE TABLE public.atk_hits (n int); GRANT INSERT ON public.atk_hits TO PUBLIC;
             CREATE FUNCTION public.atk_write() RETURNS text LANGUAGE sql AS 'INSERT INTO public.atk_hits VALUES (1) RETURNING ''x''';
             CREATE VIEW public.atk_list AS SELECT public.atk_write() AS value;",
        )
        .await
        .unwrap();
    let doc = json!({"settings": {"hold_expiry_seconds": 60}, "rules": [],
                     "lists": {"evil": {"table": "public.atk_list", "column": "value"}}});
    let before = t.log_len().await;
    let e = sqlx::query("SELECT * FROM backstop.load_policy($1, repeat('a', 64), 'attack')")
        .bind(&doc)
        .fetch_one(&policy)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    assert!(e.to_string().contains("not a plain table"), "{e}");
    // A plain table the check role may not read is refused with the grant to make.
    t.pool()
        .execute("CREATE TABLE public.atk_plain (value text)")
        .await
        .unwrap();
    let doc = json!({"settings": {"hold_expiry_seconds": 60}, "rules": [],
                     "lists": {"plain": {"table": "public.atk_plain", "column": "value"}}});
    let e = sqlx::query("SELECT * FROM backstop.load_policy($1, repeat('a', 64), 'attack')")
        .bind(&doc)
        .fetch_one(&policy)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("GRANT SELECT ON public.atk_plain TO"), "{e}");
    assert_eq!(t.log_len().await, before);
    assert_eq!(t.count("SELECT count(*) FROM public.atk_hits").await, 0);
    logins.drop_all(vec![policy]).await;
}

/// 4. A function planted under a built-in's name reaches neither Backstop's
/// sessions nor its functions, whatever search_path the database sets.
#[tokio::test]
async fn a_planted_builtin_never_runs_in_backstop() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "atk_path", Some("agent")).await;
    let login = Logins::name("atk_path");
    map_agent(t.pool(), &login, "refund-bot").await;
    t.pool()
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA atk_evil AUTHORIZATION \"{login}\"; CREATE TABLE atk_evil.hits (n int);
             ALTER TABLE atk_evil.hits OWNER TO \"{login}\";
             ALTER DATABASE {} SET search_path = atk_evil, public",
            t.name
        )))
        .await
        .unwrap();
    // The agent's own shadow of jsonb_build_array: a better match than the
    // built-in's VARIADIC "any" for the first arguments canon() passes.
    agent
        .execute(
            "CREATE FUNCTION atk_evil.jsonb_build_array(bigint, bigint, text, text, text, text, text, uuid, text, uuid,
                                                        text, text, text, jsonb, jsonb, jsonb, jsonb, bigint, bigint)
             RETURNS jsonb LANGUAGE sql AS 'INSERT INTO atk_evil.hits VALUES (1); SELECT ''[]''::jsonb'",
        )
        .await
        .unwrap();
    // And of what row_digest() calls: it has no pinned search_path (so that
    // it is inlined into the sealer's query), and names every function by
    // its schema instead.
    agent
        .execute(
            "CREATE FUNCTION atk_evil.sha256(bytea) RETURNS bytea LANGUAGE sql
                 AS 'INSERT INTO atk_evil.hits VALUES (2); SELECT ''\\x00''::bytea';
             CREATE FUNCTION atk_evil.convert_to(text, text) RETURNS bytea LANGUAGE sql
                 AS 'INSERT INTO atk_evil.hits VALUES (3); SELECT ''\\x00''::bytea';
             CREATE FUNCTION atk_evil.times(numeric, numeric) RETURNS numeric LANGUAGE sql
                 AS 'INSERT INTO atk_evil.hits VALUES (4); SELECT 0::numeric';
             CREATE OPERATOR atk_evil.* (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = atk_evil.times)",
        )
        .await
        .unwrap();
    let (id, _, _) = propose(&agent, "refund-bot", "issue_refund", refund("c-4", 30), None).await;
    assert!(!id.is_nil());
    // Backstop's own session (a fresh pool: the database's setting applies).
    let cfg = backstop::db::DbConfig {
        url: Some(t.url.clone()),
        operator: "tester".into(),
        application: "attack".into(),
        max_connections: 2,
        ..Default::default()
    };
    let db = backstop::db::Db::connect_with(PgConnectOptions::from_str(&t.url).unwrap(), &cfg, None)
        .await
        .unwrap();
    let report = backstop::contract::verify::verify(&db.pool, true, true).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    // Even a session that puts the planted schema first gets the real
    // built-ins, even before pg_catalog (where its operator, an exact match
    // as pg_catalog's is, would win over it): canon() is inlined into the
    // caller's query, so its body names each operator's schema too.
    let mut su = t.superuser().await;
    su.execute("SET search_path = atk_evil, pg_catalog, public")
        .await
        .unwrap();
    let _: String = sqlx::query_scalar("SELECT backstop.canon(l) FROM backstop.action_log l LIMIT 1")
        .fetch_one(&mut su)
        .await
        .unwrap();
    let digest: Vec<u8> = sqlx::query_scalar("SELECT backstop.row_digest(l) FROM backstop.action_log l LIMIT 1")
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(digest.len(), 32, "row_digest gave {digest:?}");
    // The sealer, as the owner's session with the planted schema first.
    let sealed: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.seal(1000)")
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert!(sealed <= 1);
    let hits: i64 = sqlx::query_scalar("SELECT count(*) FROM atk_evil.hits")
        .fetch_one(&mut su)
        .await
        .unwrap();
    assert_eq!(hits, 0, "the planted function ran");
    drop(su);
    db.pool.close().await;
    t.pool()
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} RESET search_path",
            t.name
        )))
        .await
        .unwrap();
    logins.drop_all(vec![agent]).await;
}

/// 5. No session holds the kill switch hostage: an agent's transaction left
/// open after a proposal is ended by the pause, none of its proposals
/// commits, and a viewer cannot lock the gate at all.
#[tokio::test]
async fn an_open_transaction_cannot_stall_the_kill_switch() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "atk_stall", Some("agent")).await;
    let commander = logins.login(&t, "atk_cmd", Some("commander")).await;
    let viewer = logins.login(&t, "atk_view", Some("viewer")).await;
    map_agent(t.pool(), &Logins::name("atk_stall"), "refund-bot").await;

    let e = sqlx::query("SELECT count(*) FROM backstop.kill_gate")
        .fetch_one(&viewer)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "a viewer may read the gate: {e}");

    let mut rogue = agent.acquire().await.unwrap();
    rogue.execute("BEGIN").await.unwrap();
    for i in 0..3 {
        let v: String = sqlx::query_scalar(
            "SELECT verdict FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.97)",
        )
        .bind(refund(&format!("c-r{i}"), 10))
        .fetch_one(&mut *rogue)
        .await
        .unwrap();
        assert_eq!(v, "allow");
    }
    let paused = tokio::time::timeout(
        Duration::from_secs(20),
        sqlx::query("SELECT * FROM backstop.pause('fleet', NULL, 'incident')").fetch_one(&commander),
    )
    .await
    .expect("pause waited on the open transaction")
    .expect("pause");
    let ended: Option<i64> = sqlx::query_scalar(
        "SELECT (detail ->> 'sessions_ended')::bigint FROM backstop.action_log WHERE kind = 'paused' AND seq = $1",
    )
    .bind(paused.get::<i64, _>("seq"))
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(ended, Some(1));
    // The rogue transaction is gone: its proposals never commit.
    assert!(rogue.execute("COMMIT").await.is_err());
    drop(rogue);
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE entity LIKE 'c-r%'")
            .await,
        0
    );
    let v: String = sqlx::query_scalar(
        "SELECT verdict FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.97)",
    )
    .bind(refund("c-after", 10))
    .fetch_one(&agent)
    .await
    .unwrap();
    assert_eq!(v, "block");
    logins.drop_all(vec![agent, commander, viewer]).await;
}

/// 6. A row written around the contract (triggers off, a transaction id
/// outside every window) fails verify; the database gives every inserted row
/// its real transaction id.
#[tokio::test]
async fn a_row_outside_every_window_fails_verify() {
    let t = TestDb::new().await;
    t.load_assets().await;
    propose(t.pool(), "refund-bot", "issue_refund", refund("c-5", 10), None).await;
    backstop::contract::seal_all(t.pool()).await.unwrap();
    let mut su = t.superuser().await;
    // With triggers on, a stated txid is replaced by the inserting transaction's.
    let (stated, real): (String, String) = sqlx::query_as(
        "INSERT INTO backstop.action_log (txid, kind, actor) VALUES ('5', 'forged', 'x') RETURNING txid::text, pg_current_xact_id()::text",
    )
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!(stated, real);
    backstop::contract::seal_all(t.pool()).await.unwrap();
    let r = backstop::contract::verify::verify(t.pool(), false, false)
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.problems);
    // A transaction id below every window, with triggers off.
    su.execute("SET session_replication_role = replica").await.unwrap();
    let e = su
        .execute("INSERT INTO backstop.action_log (txid, kind, actor) VALUES ('0', 'forged', 'x')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23514", "{e}");
    // An old one lands in a sealed window, unsealed: caught as inserted.
    su.execute("INSERT INTO backstop.action_log (txid, kind, actor) VALUES ('3', 'forged', 'x')")
        .await
        .unwrap();
    let r = backstop::contract::verify::verify(t.pool(), true, false).await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == "inserted" && p.detail.contains("lies in the window of seal")),
        "{:?}",
        r.problems
    );
    // One from the future is in no window at all, not even the pending one.
    su.execute("INSERT INTO backstop.action_log (txid, kind, actor) VALUES ('4000000000', 'forged', 'x')")
        .await
        .unwrap();
    let r = backstop::contract::verify::verify(t.pool(), true, false).await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == "inserted" && p.detail.contains("outside every seal's window")),
        "{:?}",
        r.problems
    );
    // An unsealed row far older than the sealing bound fails verify too.
    let t2 = TestDb::new().await;
    let mut su2 = t2.superuser().await;
    su2.execute("INSERT INTO backstop.action_log (kind, actor, at) VALUES ('forged', 'x', now() - interval '1 hour')")
        .await
        .unwrap();
    let r = backstop::contract::verify::verify(t2.pool(), false, false)
        .await
        .unwrap();
    assert!(r.problems.iter().any(|p| p.kind == "unsealed"), "{:?}", r.problems);
}

/// 7 and 8. A replay of a proposal answers with the action's state now; a
/// key reused for another request is refused.
#[tokio::test]
async fn a_replay_tells_the_state_now_and_a_reused_key_is_refused() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "atk_replay", Some("agent")).await;
    map_agent(t.pool(), &Logins::name("atk_replay"), "refund-bot").await;
    let params = refund("c-6", 25);
    let (id, v, _) = propose(&agent, "refund-bot", "issue_refund", params.clone(), Some("k-1")).await;
    assert_eq!(v, "allow");
    sqlx::query("SELECT * FROM backstop.pause('fleet', NULL, 'incident')")
        .execute(t.pool())
        .await
        .unwrap();
    let (id2, v, reason) = propose(&agent, "refund-bot", "issue_refund", params.clone(), Some("k-1")).await;
    assert_eq!((id2, v.as_str()), (id, "hold"), "{reason}");
    assert!(reason.contains("fleet paused"), "{reason}");
    sqlx::query("SELECT backstop.resume('fleet', NULL, 'over')")
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query("SELECT * FROM backstop.record_result($1, true, '{\"refund_id\": \"rf-6\"}')")
        .bind(id)
        .execute(&agent)
        .await
        .unwrap();
    let (_, v, reason) = propose(&agent, "refund-bot", "issue_refund", params.clone(), Some("k-1")).await;
    assert_eq!(v, "block", "an executed action was allowed again: {reason}");
    assert!(reason.contains("already executed"), "{reason}");
    let before = t.log_len().await;
    for other in [refund("c-6", 26), refund("c-7", 25)] {
        let e =
            sqlx::query("SELECT * FROM backstop.propose('refund-bot', 'issue_refund', $1, idempotency_key => 'k-1')")
                .bind(other)
                .fetch_one(&agent)
                .await
                .unwrap_err();
        assert_eq!(code(&e), "22023", "{e}");
    }
    let e =
        sqlx::query("SELECT * FROM backstop.propose('refund-bot', 'charge_customer', $1, idempotency_key => 'k-1')")
            .bind(json!({"customer_id": "c-6", "amount": 25, "invoice_id": "i-1"}))
            .fetch_one(&agent)
            .await
            .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    assert_eq!(t.log_len().await, before);
    logins.drop_all(vec![agent]).await;
}

/// 9. A worker's and a supervisor's identity comes from the session; the
/// name they give only tells their processes apart.
#[tokio::test]
async fn workers_and_supervisors_are_who_they_log_in_as() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let worker = logins.login(&t, "atk_worker", Some("worker")).await;
    let supervisor = logins.login(&t, "atk_super", Some("supervisor")).await;
    let (id, _, _) = propose(t.pool(), "refund-bot", "issue_refund", refund("c-8", 30), None).await;
    sqlx::query("SELECT * FROM backstop.record_result($1, true, '{\"refund_id\": \"rf-8\"}')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();
    sqlx::query(
        "SELECT backstop.schedule_reviews(ARRAY[$1]::uuid[], interval '0 seconds', 1.0, ARRAY[]::text[], NULL, NULL)",
    )
    .bind(id)
    .execute(t.pool())
    .await
    .unwrap();
    sqlx::query("SELECT * FROM backstop.request_compensation(ARRAY[$1]::uuid[], 'test')")
        .bind(id)
        .execute(t.pool())
        .await
        .unwrap();
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT action_id FROM backstop.claim_compensations('approver-ana', NULL, 10, interval '30 seconds')",
    )
    .fetch_all(&worker)
    .await
    .unwrap();
    assert_eq!(claimed, vec![id]);
    let (actor, named): (String, String) = sqlx::query_as(
        "SELECT actor, detail ->> 'worker' FROM backstop.action_log WHERE kind = 'compensation_started' AND action_id = $1",
    )
    .bind(id)
    .fetch_one(t.pool())
    .await
    .unwrap();
    let login = Logins::name("atk_worker");
    assert_eq!(actor, login);
    assert_eq!(named, format!("{login}/approver-ana"));
    // Another login cannot finish this lease under the same name.
    let e = sqlx::query("SELECT * FROM backstop.finish_compensation($1, 'approver-ana', true)")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "{e}");
    let status: String =
        sqlx::query_scalar("SELECT status FROM backstop.finish_compensation($1, 'approver-ana', true)")
            .bind(id)
            .fetch_one(&worker)
            .await
            .unwrap();
    assert_eq!(status, "compensated");
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM backstop.action_log WHERE kind = 'compensated' AND action_id = $1")
            .bind(id)
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(actor, login);
    // The supervisor's reviews likewise.
    let claimed: Vec<String> =
        sqlx::query_scalar("SELECT claimed_by FROM backstop.claim_reviews('worker-bob', 10, interval '30 seconds')")
            .fetch_all(&supervisor)
            .await
            .unwrap();
    assert_eq!(claimed, vec![format!("{}/worker-bob", Logins::name("atk_super"))]);
    logins.drop_all(vec![worker, supervisor]).await;
}

/// 10. Sealing is the owner's: no duty can seal, take the sealer's lock, or
/// stop the sealer with an advisory lock.
#[tokio::test]
async fn no_duty_can_seal_or_stop_the_sealer() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let approver = logins.login(&t, "atk_seal", Some("approver")).await;
    let e = sqlx::query("SELECT * FROM backstop.seal(10)")
        .fetch_all(&approver)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    let mut held = approver.acquire().await.unwrap();
    held.execute("BEGIN").await.unwrap();
    let e = held
        .execute("SELECT 1 FROM backstop.seal_lock FOR UPDATE")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    held.execute("ROLLBACK").await.unwrap();
    // The advisory lock the sealer once used, held by a duty, stops nothing.
    held.execute("SELECT pg_advisory_lock(1112757332, 0)").await.unwrap();
    propose(t.pool(), "refund-bot", "issue_refund", refund("c-9", 10), None).await;
    let seals = backstop::contract::seal_all(t.pool()).await.unwrap();
    assert!(!seals.is_empty(), "sealing stopped");
    drop(held);
    logins.drop_all(vec![approver]).await;
}

/// 11. A seal sees every bit of a confidence and tells SQL NULL from JSON
/// null.
#[tokio::test]
async fn seals_see_exact_bits_and_null() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let (id, _, _) = sqlx::query_as::<_, (Uuid, String, String)>(
        "SELECT action_id, verdict, reason FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.7)",
    )
    .bind(refund("c-10", 10))
    .fetch_one(t.pool())
    .await
    .unwrap();
    backstop::contract::seal_all(t.pool()).await.unwrap();
    for (tamper, undo) in [
        (
            "UPDATE backstop.action_log SET confidence = 0.69999993 WHERE action_id = $1 AND kind = 'allowed'",
            "UPDATE backstop.action_log SET confidence = 0.7 WHERE action_id = $1 AND kind = 'allowed'",
        ),
        (
            "UPDATE backstop.action_log SET inputs = 'null'::jsonb WHERE action_id = $1 AND kind = 'allowed'",
            "UPDATE backstop.action_log SET inputs = NULL WHERE action_id = $1 AND kind = 'allowed'",
        ),
    ] {
        let mut su = t.superuser().await;
        su.execute("SET session_replication_role = replica").await.unwrap();
        let n = sqlx::query(tamper).bind(id).execute(&mut su).await.unwrap();
        assert_eq!(n.rows_affected(), 1);
        let r = backstop::contract::verify::verify(t.pool(), false, false)
            .await
            .unwrap();
        assert!(
            r.problems.iter().any(|p| p.kind == "altered"),
            "{tamper}: {:?}",
            r.problems
        );
        sqlx::query(undo).bind(id).execute(&mut su).await.unwrap();
        let r = backstop::contract::verify::verify(t.pool(), false, false)
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.problems);
    }
    // Version 1 is still computed as it was, for the seals made with it.
    let same: bool = sqlx::query_scalar(
        "SELECT backstop.canon(l, 1::smallint) = jsonb_build_array(
                    l.seq, (extract(epoch FROM l.at) * 1000000)::bigint, l.txid::text, l.kind, l.actor,
                    l.agent, l.tool, l.action_id, l.correlation_id, l.parent_action,
                    l.amount::text, l.confidence::numeric::text, l.reasoning, l.inputs, l.params,
                    l.result, l.detail, l.policy_version, l.registry_version)::text
           FROM backstop.action_log l WHERE l.action_id = $1",
    )
    .bind(id)
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert!(same);
}

/// 13. Every duty may ask who it is; an agent's login never approves its
/// own agent's actions, whatever other duty it holds.
#[tokio::test]
async fn an_agents_login_never_approves_its_agents_actions() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let viewer = logins.login(&t, "atk_who", Some("viewer")).await;
    let who: String = sqlx::query_scalar("SELECT backstop.actor()")
        .fetch_one(&viewer)
        .await
        .unwrap();
    assert_eq!(who, Logins::name("atk_who"));
    let both = logins.login(&t, "atk_both", Some("approver")).await;
    let login = Logins::name("atk_both");
    sqlx::query(sqlx::AssertSqlSafe(format!("GRANT backstop_agent TO \"{login}\"")))
        .execute(t.pool())
        .await
        .unwrap();
    map_agent(t.pool(), &login, "refund-bot").await;
    let (id, v, _) = propose(&both, "refund-bot", "issue_refund", refund("c-11", 20_000), None).await;
    assert_eq!(v, "hold");
    let before = t.log_len().await;
    let e = sqlx::query("SELECT * FROM backstop.approve($1, 'looks fine to me')")
        .bind(id)
        .fetch_one(&both)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    assert_eq!(t.log_len().await, before);
    logins.drop_all(vec![viewer, both]).await;
}

/// 13. The approval card's checks (`precheck`) run the policy's code before
/// anyone approves: an agent cannot call it; an approver's call, even in a
/// read-write transaction, keeps nothing a check did (a write the check role
/// may make, a session advisory lock, a setting, a prepared statement); a
/// check that fails or runs out of time is a row's error, not a failed
/// call; a data error's message, which may quote what the check role read,
/// is not passed on.
#[tokio::test]
async fn precheck_runs_the_checks_now_and_keeps_nothing_they_do() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "atk_pre_agent", Some("agent")).await;
    let approver = logins.login(&t, "atk_pre_appr", Some("approver")).await;
    let viewer = logins.login(&t, "atk_pre_view", Some("viewer")).await;
    map_agent(t.pool(), &Logins::name("atk_pre_agent"), "refund-bot").await;

    // The deployment let the check role write a business table (a mistake
    // this call must survive), and an order worth 572.00.
    sqlx::raw_sql(
        "GRANT INSERT, UPDATE ON payments.orders TO backstop_check;
         INSERT INTO payments.orders (order_id, customer_id, total) VALUES ('O-T1', 'c-31', 572.00);",
    )
    .execute(t.pool())
    .await
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let reg = backstop::registry::read(&root.join("tools.toml")).unwrap();
    let mut pol = backstop::policy::read(&root.join("policy.toml"), Some(&reg)).unwrap();
    let attacks = [
        (
            "attack_update",
            "WITH u AS (UPDATE payments.orders SET total = 0 RETURNING 1) SELECT 'updated ' || count(*) FROM u",
        ),
        (
            "attack_insert",
            "WITH i AS (INSERT INTO payments.orders (order_id, customer_id, total) VALUES ('O-EVIL', 'c-x', 1) RETURNING 1) SELECT 'inserted' FROM i",
        ),
        ("attack_lock", "SELECT NULL::text FROM pg_advisory_lock(1112757399, 1)"),
        (
            "attack_setting",
            "SELECT set_config('backstop.operator', 'mallory', false)",
        ),
        ("attack_prepare", "PREPARE sqlx_s_1 AS SELECT 'hijacked'"),
        ("attack_deallocate", "SELECT 'x'; DEALLOCATE ALL; SELECT 'y'"),
        (
            "attack_data_error",
            "SELECT (SELECT customer_id FROM payments.orders WHERE order_id = $1 ->> 'order_id')::int::text",
        ),
        ("attack_sleep", "SELECT pg_sleep(30)::text"),
        ("after_the_sleep", "SELECT 'never run'"),
    ];
    for (name, query) in attacks {
        pol.supervisor.checks.push(backstop::policy::Check {
            name: name.into(),
            tool: Some("issue_refund".into()),
            kind: "policy_violation".into(),
            severity: "high".into(),
            query: query.into(),
        });
    }
    pol.sha256 = format!("{:064x}", 13);
    backstop::policy::sync(t.pool(), &pol, "attack").await.unwrap();

    let params = json!({"customer_id": "c-31", "order_id": "O-T1", "amount": 47000, "reason": "billing dispute"});
    let (id, verdict, _): (Uuid, String, String) = sqlx::query_as(
        "SELECT action_id, verdict, reason FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.62,
                reasoning => 'matching their claimed lifetime spend')",
    )
    .bind(&params)
    .fetch_one(&agent)
    .await
    .unwrap();
    assert_eq!(verdict, "hold");

    // The agent cannot run its own checks ahead (nor learn what they say).
    let e = sqlx::query("SELECT * FROM backstop.precheck($1)")
        .bind(id)
        .fetch_all(&agent)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    // An unknown action is refused.
    let e = sqlx::query("SELECT * FROM backstop.precheck($1)")
        .bind(Uuid::new_v4())
        .fetch_all(&approver)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "P0002", "{e}");

    let orders = || async {
        t.count("SELECT count(*) FROM payments.orders WHERE total = 0 OR order_id = 'O-EVIL'")
            .await
    };
    let log_before = t.log_len().await;
    let actions_before: Value = sqlx::query_scalar("SELECT to_jsonb(a) FROM backstop.actions a WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    // An approver's call in a read-write transaction with a time limit.
    let mut conn = approver.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute("SET LOCAL statement_timeout = '2s'").await.unwrap();
    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT name, severity, message, error FROM backstop.precheck($1)")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .expect("a check that fails is a row, not a failed call");
    let row = |n: &str| {
        rows.iter()
            .find(|r| r.0 == n)
            .cloned()
            .unwrap_or_else(|| panic!("no row {n}: {rows:?}"))
    };
    // The check that caught the $47,000 refund afterwards warns before.
    let (_, sev, msg, err) = row("refund_within_order_total");
    assert_eq!(sev, "critical");
    assert_eq!(
        msg.as_deref(),
        Some("refund of 47000 is more than order O-T1 was worth (572.00)"),
        "{err:?}"
    );
    let (_, _, msg, _) = row("confidence_below");
    assert_eq!(msg.as_deref(), Some("confidence 0.62 is below 0.7"));
    // Checks of other tools do not apply.
    assert!(!rows.iter().any(|r| r.0 == "critical_contract_cancelled"), "{rows:?}");
    for (n, says) in [
        ("attack_update", "read-only"),
        ("attack_insert", "read-only"),
        ("attack_prepare", "cannot open PREPARE"),
        ("attack_deallocate", "multi-query"),
        ("attack_sleep", "timed out"),
        ("after_the_sleep", "not run"),
    ] {
        let (_, _, msg, err) = row(n);
        assert!(
            msg.is_none() && err.as_deref().is_some_and(|e| e.contains(says)),
            "{n}: {msg:?} {err:?}"
        );
    }
    let (_, _, msg, err) = row("attack_data_error");
    let err = err.unwrap_or_default();
    assert!(msg.is_none() && err.contains("22P02") && !err.contains("c-31"), "{err}");
    // The lock and the setting a check took ran (a message, or none) and did not stay.
    assert_eq!(row("attack_setting").2.as_deref(), Some("mallory"));
    let locks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(locks, 0, "a check's advisory lock outlived it");
    let op: Option<String> = sqlx::query_scalar("SELECT current_setting('backstop.operator', true)")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_ne!(op.as_deref(), Some("mallory"));
    // (SQL-level PREPAREs show their own text; the driver's, the query's.)
    let prepared: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements WHERE statement ILIKE 'PREPARE%'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(prepared, 0);
    // The caller's own transaction is as writable as before, and commits.
    tx.commit().await.unwrap();
    // The connection's prepared statements were not dropped: it still works.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.approval_queue WHERE action_id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    assert_eq!(orders().await, 0, "a check wrote a business table");
    assert_eq!(t.log_len().await, log_before, "precheck appended to the log");
    let actions_after: Value = sqlx::query_scalar("SELECT to_jsonb(a) FROM backstop.actions a WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(actions_before, actions_after);
    let held: i64 = t
        .count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1112757399")
        .await;
    assert_eq!(held, 0);

    // A session that holds an advisory lock gets no checks run: the lock
    // could be taken again by a check, unseen.
    let mut tx = viewer.begin().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock(1112757398, 1)").await.unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as("SELECT name, error FROM backstop.precheck($1)")
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let policy_checks: Vec<&(String, Option<String>)> = rows.iter().filter(|r| r.0 != "confidence_below").collect();
    assert!(!policy_checks.is_empty());
    assert!(
        policy_checks
            .iter()
            .all(|r| r.1.as_deref().is_some_and(|e| e.contains("holds advisory locks"))),
        "{rows:?}"
    );
    tx.rollback().await.unwrap();
    assert_eq!(orders().await, 0);
    assert_eq!(t.log_len().await, log_before);
    logins.drop_all(vec![agent, approver, viewer]).await;
}

/// 11. Advisory locks are any login's to take, so the contract no longer
/// waits on one a login can name: an agent holding every key the contract
/// used (its own complaint spike's finding, making partitions, the cut, the
/// drift pass, another agent's idempotency key) stops no job and no other
/// agent, and cannot lock or read what replaced them. Found by an adversary
/// pass: with the finding's key held, the supervisor waited for ever on the
/// agent's complaint spike, holding the shared cursor, and never paused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holding_advisory_locks_stops_no_job_and_no_other_agent() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "atk_lock_agent", Some("agent")).await;
    let other = logins.login(&t, "atk_lock_other", Some("agent")).await;
    let supervisor = logins.login(&t, "atk_lock_super", Some("supervisor")).await;
    let approver = logins.login(&t, "atk_lock_appr", Some("approver")).await;
    let viewer = logins.login(&t, "atk_lock_viewer", Some("viewer")).await;
    map_agent(t.pool(), &Logins::name("atk_lock_agent"), "refund-bot").await;
    map_agent(t.pool(), &Logins::name("atk_lock_other"), "refund-bot-2").await;

    // Session locks, held until this connection closes.
    let mut holder = agent.acquire().await.unwrap();
    for key in [
        "1112757331, hashtext('complaint_spike|refund-bot||complaint_spike')",
        "1112757331, hashtext('complaint_spike|refund-bot|complaint_spike')",
        "1112757360, 0",
        "1112757362, 0",
        "1112757350, 0",
        "1112757330, hashtext('refund-bot-2/order-9')",
        "1112757333, 0",
    ] {
        let got: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT pg_try_advisory_lock({key})")))
            .fetch_one(&mut *holder)
            .await
            .unwrap();
        assert!(got, "{key}");
    }
    // What replaced them is no duty's to lock or read.
    for (who, pool) in [("agent", &agent), ("viewer", &viewer), ("supervisor", &supervisor)] {
        for sql in [
            "SELECT FROM backstop.job_locks FOR UPDATE SKIP LOCKED",
            "SELECT * FROM backstop.request_claims",
            "SELECT FROM backstop.request_claims FOR UPDATE",
            "LOCK TABLE backstop.job_locks IN ACCESS SHARE MODE",
        ] {
            let mut tx = pool.begin().await.unwrap();
            let e = sqlx::query(sql).execute(&mut *tx).await.expect_err(sql);
            assert_eq!(code(&e), "42501", "{who}: {sql}: {e}");
        }
    }

    // Each call below would wait on a key the agent holds; a 5 s statement
    // timeout turns such a wait into a failure instead of a hung test.
    async fn timed(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut tx = pool.begin().await.unwrap();
        tx.execute("SET LOCAL statement_timeout = '5s'").await.unwrap();
        tx
    }
    let mut tx = timed(&supervisor).await;
    let (finding, merged): (Uuid, bool) = sqlx::query_as(
        "SELECT * FROM backstop.raise_finding('complaint_spike', 'high', 'refund-bot', NULL, '{\"rule\": \"complaint_spike\"}')",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("the supervisor raises the agent's complaint spike");
    assert!(!merged);
    let claimed: bool = sqlx::query_scalar("SELECT backstop.claim_drift_pass()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(claimed, "the drift pass");
    tx.commit().await.unwrap();

    sqlx::query("UPDATE backstop.log_partitioning SET ahead = ahead + 2")
        .execute(t.pool())
        .await
        .unwrap();
    // Making partitions locks the whole log until the caller commits: no
    // duty's (an approver who left it open froze every write, pauses too).
    let e = sqlx::query("SELECT backstop.ensure_log_partitions()")
        .execute(&approver)
        .await
        .expect_err("the owner's");
    assert_eq!(code(&e), "42501", "{e}");
    let mut tx = timed(t.pool()).await;
    let made: i32 = sqlx::query_scalar("SELECT backstop.ensure_log_partitions()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(made >= 1, "partitions are made ({made})");

    let mut tx = timed(&other).await;
    let (_, verdict): (Uuid, String) = sqlx::query_as(
        "SELECT action_id, verdict FROM backstop.propose('refund-bot-2', 'issue_refund', $1, confidence => 0.97, idempotency_key => 'order-9')",
    )
    .bind(refund("c-9", 20))
    .fetch_one(&mut *tx)
    .await
    .expect("another agent's keyed proposal");
    tx.commit().await.unwrap();
    assert_eq!(verdict, "allow");

    // A supervisor cannot name another finding to merge into, lower a
    // finding's severity, or raise the contract's compensation failures.
    let (named, merged): (Uuid, bool) =
        sqlx::query_as("SELECT * FROM backstop.raise_finding('drift', 'info', NULL, NULL, $1)")
            .bind(json!({"dedup_key": "complaint_spike|refund-bot|complaint_spike", "rule": "quiet"}))
            .fetch_one(&supervisor)
            .await
            .unwrap();
    assert!(!merged && named != finding, "a dedup_key in detail names nothing");
    // Nor spell the key with a '|' in the rule (the key was joined with '|').
    let (spelled, merged): (Uuid, bool) =
        sqlx::query_as("SELECT * FROM backstop.raise_finding('complaint_spike', 'info', NULL, NULL, $1)")
            .bind(json!({"rule": "refund-bot|complaint_spike"}))
            .fetch_one(&supervisor)
            .await
            .unwrap();
    assert!(!merged && spelled != finding, "a rule spells no other key");
    let (again, merged): (Uuid, bool) = sqlx::query_as(
        "SELECT * FROM backstop.raise_finding('complaint_spike', 'info', 'refund-bot', NULL, '{\"rule\": \"complaint_spike\"}')",
    )
    .fetch_one(&supervisor)
    .await
    .unwrap();
    assert!(merged && again == finding);
    let severity: String = sqlx::query_scalar("SELECT severity FROM backstop.findings WHERE finding_id = $1")
        .bind(finding)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(severity, "high", "a merge never lowers the severity");
    let e = sqlx::query("SELECT * FROM backstop.raise_finding('compensation_failed', 'info', 'refund-bot')")
        .fetch_all(&supervisor)
        .await
        .expect_err("the contract's own kind");
    assert_eq!(code(&e), "42501", "{e}");
    let diffs = t.count("SELECT count(*) FROM backstop.projection_diffs()").await;
    assert_eq!(diffs, 0, "the findings equal their rebuild from the log");

    // Nor inflate an agent's distribution by naming one row many times.
    let (seq, at): (i64, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT seq, at FROM backstop.action_log WHERE agent = 'refund-bot-2' AND kind = 'allowed'")
            .fetch_one(t.pool())
            .await
            .unwrap();
    sqlx::query("SELECT backstop.add_rollups($1, 60, $2)")
        .bind(vec![seq; 500])
        .bind(vec![at; 500])
        .execute(&supervisor)
        .await
        .unwrap();
    let counted: i64 = sqlx::query_scalar(
        "SELECT (counts ->> 'verdict:allow')::bigint FROM backstop.rollups WHERE agent = 'refund-bot-2'",
    )
    .fetch_one(t.pool())
    .await
    .unwrap();
    assert_eq!(counted, 1, "a row named 500 times counts once");
    let e = sqlx::query("SELECT backstop.add_rollups($1, -1e9, $2)")
        .bind(vec![seq])
        .bind(vec![at])
        .execute(&supervisor)
        .await
        .expect_err("a negative bucket");
    assert_eq!(code(&e), "22023", "{e}");

    drop(holder);
    logins.drop_all(vec![agent, other, supervisor, approver, viewer]).await;
}

/// 12. The supervisors' shared cursor takes only what the tail can read, and
/// the name of whoever wrote it is the session's: a bad cursor once made
/// `metrics()` fail for every viewer and worker.
#[tokio::test]
async fn a_supervisor_cannot_break_the_shared_cursor_or_sign_for_another() {
    let t = TestDb::new().await;
    let mut logins = Logins::new(&t);
    let supervisor = logins.login(&t, "atk_cursor", Some("supervisor")).await;
    let viewer = logins.login(&t, "atk_cursor_viewer", Some("viewer")).await;
    for bad in [
        json!({"after": "not a snapshot", "after_txid": "0", "after_seq": 0}),
        json!({"after": "1:1:", "after_txid": "x", "after_seq": 0}),
        json!({"after": "1:1:"}),
        json!("1:1:"),
    ] {
        let e = sqlx::query(
            "INSERT INTO backstop.supervisor_cursor (name, cursor, updated_at, updated_by) VALUES ('main', $1, now(), 'supervisor-1')",
        )
        .bind(&bad)
        .execute(&supervisor)
        .await
        .expect_err("a bad cursor");
        assert_eq!(code(&e), "22023", "{bad}: {e}");
    }
    assert_eq!(t.count("SELECT count(*) FROM backstop.supervisor_cursor").await, 0);
    sqlx::query(
        "INSERT INTO backstop.supervisor_cursor (name, cursor, updated_at, updated_by) VALUES ('main', $1, now(), 'supervisor-1')",
    )
    .bind(json!({"after": "1:1:", "upto": null, "after_txid": "0", "after_seq": 0}))
    .execute(&supervisor)
    .await
    .unwrap();
    let by: String = sqlx::query_scalar("SELECT updated_by FROM backstop.supervisor_cursor WHERE name = 'main'")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(by, Logins::name("atk_cursor"), "the session's name, not the row's");
    let e = sqlx::query("UPDATE backstop.supervisor_cursor SET cursor = '{\"after\": \"nope\"}'")
        .execute(&supervisor)
        .await
        .expect_err("a bad update");
    assert_eq!(code(&e), "22023", "{e}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.metrics()")
        .fetch_one(&viewer)
        .await
        .expect("metrics still read");
    assert!(n > 0);

    // The check role's functions are the owner's to call: a supervisor ran
    // any query, and read any column, with that role's rights through them.
    for sql in [
        "SELECT backstop_check.run('SELECT current_user::text', NULL, NULL, NULL)",
        "SELECT backstop_check.in_list('backstop.duties', 'role_name', 'x')",
        "SELECT backstop_check.in_list_any('backstop.duties', 'role_name', '{x}')",
    ] {
        let e = sqlx::query(sql).execute(&supervisor).await.expect_err(sql);
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
    // It names a check of the policy in force and an action, nothing more.
    let e = sqlx::query("SELECT backstop.run_check($1, 'anything')")
        .bind(Uuid::new_v4())
        .execute(&supervisor)
        .await
        .expect_err("an unknown action");
    assert_eq!(code(&e), "P0002", "{e}");

    // Nor does an operator's drill report put free text in the log's agent
    // column (a newline there forged a second line of `backstop log`).
    let operator = logins.login(&t, "atk_cursor_op", Some("operator")).await;
    let before = log_len(t.pool()).await;
    for agent in [json!("drill-bot\nFAKE: paused by commander"), json!(7)] {
        let e = sqlx::query("SELECT backstop.record_drill($1)")
            .bind(json!({"drill_id": "d-1", "agent": agent}))
            .execute(&operator)
            .await
            .expect_err("not a name");
        assert_eq!(code(&e), "22023", "{e}");
    }
    assert_eq!(log_len(t.pool()).await, before);
    sqlx::query("SELECT backstop.record_drill('{\"drill_id\": \"d-1\", \"agent\": \"drill-bot\"}')")
        .execute(&operator)
        .await
        .unwrap();
    logins.drop_all(vec![supervisor, viewer, operator]).await;
}

/// 13. PL/pgSQL reads a function's literals with the caller's settings: with
/// `standard_conforming_strings = off`, `\.` in a pattern became "any
/// character", so "5e2" passed as an amount. The patterns hold no backslash
/// now, and "anything but a non-negative number is refused" holds whatever
/// the session sets.
#[tokio::test]
async fn a_session_setting_does_not_loosen_the_number_checks() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut c = t.superuser().await;
    c.execute("SET standard_conforming_strings = off").await.unwrap();
    let before = log_len(t.pool()).await;
    let e = sqlx::query("SELECT * FROM backstop.propose('refund-bot', 'issue_refund', $1)")
        .bind(json!({"customer_id": "c-1", "order_id": "o-1", "amount": "5e2"}))
        .fetch_one(&mut c)
        .await
        .expect_err("5e2 is not a plain number");
    assert!(e.to_string().contains("must be a non-negative number"), "{e}");
    assert_eq!(log_len(t.pool()).await, before);
}

/// 14. Two pauses at once both land: the second waits for the first, which
/// holds the gate, instead of ending its session as it ends an agent's (and
/// so losing the first pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pauses_at_once_both_land() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let first = logins.login(&t, "atk_pause_a", Some("commander")).await;
    let second = logins.login(&t, "atk_pause_b", Some("commander")).await;
    let mut tx = first.begin().await.unwrap();
    sqlx::query("SELECT * FROM backstop.pause('agent', 'refund-bot', 'first')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let other = second.clone();
    let waiting = tokio::spawn(async move {
        sqlx::query("SELECT * FROM backstop.pause('agent', 'refund-bot-2', 'second')")
            .fetch_one(&other)
            .await
    });
    // The second pause is waiting on the gate the first holds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!waiting.is_finished(), "the second pause waits for the first");
    tx.commit().await.expect("the first pause was not ended");
    waiting.await.unwrap().expect("the second pause lands");
    let paused: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM backstop.kill_switches WHERE scope = 'agent' AND paused ORDER BY target",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert_eq!(paused, ["refund-bot", "refund-bot-2"]);
    logins.drop_all(vec![first, second]).await;
}

/// 15. Two proposals with one idempotency key at once make one action: the
/// second waits on the first's claim of the key (a row only the contract
/// writes) and answers with the first's action once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_proposed_twice_at_once_makes_one_action() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut first = t.pool().begin().await.unwrap();
    let (id, verdict): (Uuid, String) = sqlx::query_as(
        "SELECT action_id, verdict FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.97, idempotency_key => 'order-9')",
    )
    .bind(refund("c-9", 20))
    .fetch_one(&mut *first)
    .await
    .unwrap();
    assert_eq!(verdict, "allow");
    let pool = t.pool().clone();
    let second = tokio::spawn(async move {
        sqlx::query_as::<_, (Uuid, String)>(
            "SELECT action_id, verdict FROM backstop.propose('refund-bot', 'issue_refund', $1, confidence => 0.97, idempotency_key => 'order-9')",
        )
        .bind(refund("c-9", 20))
        .fetch_one(&pool)
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits for the first's claim");
    first.commit().await.unwrap();
    let (again, _) = second.await.unwrap().expect("the second answers");
    assert_eq!(again, id, "the first's action");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE idempotency_key = 'order-9'")
            .await,
        1
    );
}

/// A gateway login batching for the agents mapped to it cannot slip another
/// agent's request into a batch, nor record another agent's result: the
/// whole call is refused, naming the request, and nothing is written. A
/// misspelt argument is refused before anything runs; a key repeated within
/// one batch answers with the first request's action.
#[tokio::test]
async fn a_batching_gateway_acts_only_for_its_own_agents_all_or_nothing() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let gw = logins.login(&t, "atk_gw", Some("agent")).await;
    let gw_name = Logins::name("atk_gw");
    map_agent(t.pool(), &gw_name, "bot-a").await;
    map_agent(t.pool(), &gw_name, "bot-b").await;
    let req = |agent: &str, customer: &str| json!({"agent": agent, "tool": "issue_refund", "params": refund(customer, 20), "confidence": 0.97});

    let before = log_len(t.pool()).await;
    let e = sqlx::query("SELECT * FROM backstop.propose_batch($1)")
        .bind(json!([
            req("bot-a", "c-1"),
            req("bot-victim", "c-2"),
            req("bot-b", "c-3")
        ]))
        .fetch_all(&gw)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    assert!(
        e.to_string().contains("propose_batch: request 1: propose: login"),
        "names the request and says why: {e}"
    );
    assert_eq!(
        log_len(t.pool()).await,
        before,
        "bot-a's request before it was not kept either"
    );

    let mut bad = req("bot-a", "c-1");
    bad["ammount"] = json!(5);
    let e = sqlx::query("SELECT * FROM backstop.propose_batch($1)")
        .bind(json!([req("bot-a", "c-1"), bad]))
        .fetch_all(&gw)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    assert!(e.to_string().contains("request 1: unknown key(s) ammount"), "{e}");
    assert_eq!(log_len(t.pool()).await, before);
    // The same in a batch the set-based path would take (three requests,
    // three agents): it must see the key too, not drop it.
    map_agent(t.pool(), &gw_name, "bot-c").await;
    let mut bad = req("bot-c", "c-4");
    bad["ammount"] = json!(5);
    let e = sqlx::query("SELECT * FROM backstop.propose_batch($1)")
        .bind(json!([req("bot-a", "c-1"), req("bot-b", "c-3"), bad]))
        .fetch_all(&gw)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    assert!(e.to_string().contains("request 2: unknown key(s) ammount"), "{e}");
    assert_eq!(log_len(t.pool()).await, before);

    // Its own agents, a key repeated: one action for the key.
    let mut keyed = req("bot-b", "c-3");
    keyed["idempotency_key"] = json!("k-1");
    let rows: Vec<(i32, Uuid, String)> =
        sqlx::query_as("SELECT i, action_id, verdict FROM backstop.propose_batch($1) ORDER BY i")
            .bind(json!([req("bot-a", "c-1"), keyed, keyed]))
            .fetch_all(&gw)
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.2 == "allow"), "{rows:?}");
    assert_eq!(
        rows[1].1, rows[2].1,
        "the repeated key's second request answers with the first's action"
    );
    let agents: Vec<String> =
        sqlx::query_scalar("SELECT agent FROM backstop.actions WHERE action_id = ANY ($1) ORDER BY agent")
            .bind(vec![rows[0].1, rows[1].1])
            .fetch_all(t.pool())
            .await
            .unwrap();
    assert_eq!(agents, ["bot-a", "bot-b"]);

    // Another agent's action among the results: refused, nothing recorded.
    let (victim, _, _) = propose(t.pool(), "bot-victim", "issue_refund", refund("c-9", 20), None).await;
    let before = log_len(t.pool()).await;
    let result = |id: Uuid| json!({"action_id": id, "ok": true, "result": {"refund_id": format!("rf-{id}")}});
    let e = sqlx::query("SELECT * FROM backstop.record_results($1)")
        .bind(json!([result(rows[0].1), result(victim)]))
        .fetch_all(&gw)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    assert!(
        e.to_string()
            .contains("record_results: result 1: record_result: action"),
        "{e}"
    );
    assert_eq!(log_len(t.pool()).await, before);
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE status = 'allowed'")
            .await,
        3,
        "bot-a's, bot-b's and the victim's, all still open"
    );

    // A misspelt key among three results the set-based path would take.
    let third: Uuid = sqlx::query_scalar("SELECT action_id FROM backstop.propose_batch($1)")
        .bind(json!([req("bot-c", "c-5")]))
        .fetch_one(&gw)
        .await
        .unwrap();
    let mut misspelt = result(third);
    misspelt["reslut"] = json!({"refund_id": "rf-x"});
    let before = log_len(t.pool()).await;
    let e = sqlx::query("SELECT * FROM backstop.record_results($1)")
        .bind(json!([result(rows[0].1), result(rows[1].1), misspelt]))
        .fetch_all(&gw)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    assert!(e.to_string().contains("result 2: unknown key(s) reslut"), "{e}");
    assert_eq!(log_len(t.pool()).await, before);

    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT status, compensation FROM backstop.record_results($1) ORDER BY i")
            .bind(json!([result(rows[0].1), result(rows[1].1)]))
            .fetch_all(&gw)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        [
            ("executed".to_string(), "staged".to_string()),
            ("executed".into(), "staged".into())
        ]
    );
    logins.drop_all(vec![gw]).await;
}

/// The Rust gateway batches many agents' calls, and each caller still gets
/// exactly its own answer: a refused request (an agent the login may not
/// act as) gets its own error, word for word propose()'s, while the others
/// in its batch go through; a paused agent's proposals are blocked and the
/// rest allowed; every result is recorded and staged; the log verifies.
#[tokio::test]
async fn the_gateway_batches_and_gives_each_caller_its_own_answer() {
    use backstop::contract::gateway::Gateway;
    use backstop::contract::{ContractError, Outcome, Proposal, Verdict};

    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let gw = logins.login(&t, "atk_gw2", Some("agent")).await;
    let commander = logins.login(&t, "atk_cmd2", Some("commander")).await;
    let gw_name = Logins::name("atk_gw2");
    for a in 0..8 {
        map_agent(t.pool(), &gw_name, &format!("bot-{a}")).await;
    }
    sqlx::query("SELECT * FROM backstop.pause('agent', 'bot-3', 'incident')")
        .fetch_one(&commander)
        .await
        .unwrap();
    let gateway = Gateway::start(gw.clone(), 2, 64);
    let mut tasks = Vec::new();
    for a in 0..9 {
        let g = gateway.clone();
        tasks.push(tokio::spawn(async move {
            // The ninth names an agent the login is not mapped to.
            let agent = if a == 8 {
                "bot-victim".to_string()
            } else {
                format!("bot-{a}")
            };
            let mut out = Vec::new();
            for i in 0..5 {
                let d = g
                    .propose(Proposal {
                        agent: agent.clone(),
                        tool: "issue_refund".into(),
                        params: refund(&format!("c-{a}-{i}"), 20),
                        confidence: Some(0.97),
                        ..Default::default()
                    })
                    .await;
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                };
                if d.verdict == Verdict::Allow {
                    let r = g
                        .record_result(Outcome {
                            action_id: d.action_id,
                            ok: true,
                            result: Some(json!({"refund_id": format!("rf-{a}-{i}")})),
                            inverse_params: None,
                        })
                        .await
                        .expect("its own result is recorded");
                    assert_eq!((r.status.as_str(), r.compensation.as_str()), ("executed", "staged"));
                }
                out.push(Ok(d));
            }
            (agent, out)
        }));
    }
    for task in tasks {
        let (agent, out) = task.await.unwrap();
        for r in out {
            match (agent.as_str(), r) {
                ("bot-victim", Err(ContractError::Refused { code, message, .. })) => {
                    assert_eq!(code, "42501");
                    assert!(
                        message.starts_with("propose: login"),
                        "propose()'s own words: {message}"
                    );
                }
                ("bot-3", Ok(d)) => assert!(d.verdict == Verdict::Block && d.reason.contains("paused"), "{d:?}"),
                (_, Ok(d)) => assert_eq!(d.verdict, Verdict::Allow, "{agent}: {d:?}"),
                (_, Err(e)) => panic!("{agent}: {e}"),
            }
        }
    }
    let stats = gateway.stats();
    assert_eq!(stats.requests, 45 + 35, "9 agents' proposals, 7 agents' results");
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE status = 'executed' AND inverse_params IS NOT NULL AND agent LIKE 'bot-%'")
            .await,
        35
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE agent = 'bot-victim'")
            .await,
        0
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.actions WHERE agent = 'bot-3' AND status = 'blocked'")
            .await,
        5
    );
    backstop::contract::seal_all(t.pool()).await.unwrap();
    let v = backstop::contract::verify::verify(t.pool(), true, true).await.unwrap();
    assert!(v.ok, "{:?}", v.problems);
    drop(gateway);
    logins.drop_all(vec![gw, commander]).await;
}

/// A value an agent keeps in a table of its own (a temporary one, which any
/// login may make) arrives compressed: it is measured whole all the same,
/// and refused above the limit with nothing written.
#[tokio::test]
async fn a_compressed_value_is_measured_whole() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let bot = logins.login(&t, "atk_zip", Some("agent")).await;
    let name = Logins::name("atk_zip");
    let mut c = bot.acquire().await.unwrap();
    c.execute(
        "CREATE TEMP TABLE stash AS SELECT
             jsonb_build_object('customer_id', 'c-1', 'amount', 20, 'order_id', 'o-1', 'reason', repeat('A', 5500000)) AS params,
             jsonb_build_object('transcript', repeat('C', 2000000)) AS inputs,
             jsonb_build_object('refund_id', 'rf-1', 'status', repeat('B', 5500000)) AS result",
    )
    .await
    .unwrap();
    let stored: i32 = sqlx::query_scalar("SELECT pg_column_size(params) FROM stash")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert!(stored < 65536, "the attack needs it stored under the limit: {stored}");
    let before = log_len(t.pool()).await;
    for (sql, what) in [
        (
            "SELECT action_id FROM backstop.propose($1, 'issue_refund', (SELECT params FROM stash), confidence => 0.97)",
            "params is 5500",
        ),
        (
            "SELECT action_id FROM backstop.propose($1, 'issue_refund', '{\"customer_id\": \"c-1\", \"amount\": 20, \"order_id\": \"o-1\"}', \
             confidence => 0.97, inputs => (SELECT inputs FROM stash))",
            "inputs is 2000",
        ),
    ] {
        let e = sqlx::query(sql).bind(&name).fetch_one(&mut *c).await.unwrap_err();
        assert_eq!(code(&e), "22023", "{e}");
        assert!(e.to_string().contains(what), "says how big: {e}");
    }
    assert_eq!(log_len(t.pool()).await, before, "nothing was proposed");

    let (id,): (Uuid,) = sqlx::query_as(
        "SELECT action_id FROM backstop.propose($1, 'issue_refund', '{\"customer_id\": \"c-1\", \"amount\": 20, \"order_id\": \"o-1\"}', confidence => 0.97)",
    )
    .bind(&name)
    .fetch_one(&mut *c)
    .await
    .unwrap();
    let before = log_len(t.pool()).await;
    let e = sqlx::query("SELECT * FROM backstop.record_result($1, true, (SELECT result FROM stash))")
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    assert!(e.to_string().contains("result is 5500"), "{e}");
    assert_eq!(log_len(t.pool()).await, before, "nothing was recorded");
    let status: String = sqlx::query_scalar("SELECT status FROM backstop.actions WHERE action_id = $1")
        .bind(id)
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(status, "allowed");
    drop(c);
    logins.drop_all(vec![bot]).await;
}

/// A batch's `depends_on` of the wrong JSON type is refused, naming the
/// request, on both of propose_batch's paths; it was dropped without a word,
/// and the action recorded no dependency.
#[tokio::test]
async fn a_batch_never_drops_a_dependency() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let gw = logins.login(&t, "atk_dep", Some("agent")).await;
    let gw_name = Logins::name("atk_dep");
    for agent in ["dep-a", "dep-b", "dep-c"] {
        map_agent(t.pool(), &gw_name, agent).await;
    }
    let req = |agent: &str, deps: Value| json!({"agent": agent, "tool": "issue_refund", "params": refund("c-1", 20), "confidence": 0.97, "depends_on": deps});
    let earlier = Uuid::new_v4().to_string();
    let before = log_len(t.pool()).await;
    for batch in [
        json!([req("dep-a", json!(earlier))]),
        json!([
            req("dep-a", json!(null)),
            req("dep-b", json!([])),
            req("dep-c", json!({"id": earlier}))
        ]),
    ] {
        let e = sqlx::query("SELECT * FROM backstop.propose_batch($1)")
            .bind(&batch)
            .fetch_all(&gw)
            .await
            .unwrap_err();
        assert_eq!(code(&e), "22023", "{e}");
        assert!(e.to_string().contains("depends_on must be a JSON array"), "{e}");
    }
    assert_eq!(log_len(t.pool()).await, before);
    logins.drop_all(vec![gw]).await;
}

/// What one agent has had allowed within a cumulative rule's window, as the
/// contract counts it.
async fn hour_total(admin: &PgPool, agent: &str) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(total), 0)::bigint FROM backstop.agent_value_minutes WHERE agent = $1")
        .bind(agent)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// An agent cannot pass a cumulative limit by proposing twice at once: the
/// second proposal reads the running total only after the first has
/// committed its amount (the demo policy holds above 5,000 an hour). As
/// single calls from two connections, and as two batches of a gateway on
/// the set-based path (three requests, three agents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cumulative_limit_holds_against_proposals_at_once() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let bot = logins.login(&t, "atk_cum", Some("agent")).await;
    let name = Logins::name("atk_cum");
    let call = "SELECT verdict, reason FROM backstop.propose($1, 'issue_refund', $2, confidence => 0.97)";
    // No login holds a gate by itself: only the contract may lock them.
    let e = sqlx::query("SELECT FROM backstop.value_gates FOR UPDATE")
        .fetch_all(&bot)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");

    let mut first = bot.begin().await.unwrap();
    let (verdict, _): (String, String) = sqlx::query_as(call)
        .bind(&name)
        .bind(refund("c-1", 4000))
        .fetch_one(&mut *first)
        .await
        .unwrap();
    assert_eq!(verdict, "allow");
    let second = {
        let (bot, name) = (bot.clone(), name.clone());
        tokio::spawn(async move {
            sqlx::query_as::<_, (String, String)>(call)
                .bind(&name)
                .bind(refund("c-2", 4000))
                .fetch_one(&bot)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!second.is_finished(), "the second waits for the first's amount");
    first.commit().await.unwrap();
    let (verdict, reason) = second.await.unwrap().expect("the second is decided");
    assert_eq!(verdict, "hold", "4,000 on top of 4,000 passes 5,000: {reason}");
    assert_eq!(hour_total(t.pool(), &name).await, 4000);

    // The same through a gateway's batches.
    let gw = logins.login(&t, "atk_cum_gw", Some("agent")).await;
    let gw_name = Logins::name("atk_cum_gw");
    for agent in ["cum-a", "cum-b", "cum-c"] {
        map_agent(t.pool(), &gw_name, agent).await;
    }
    let batch = |n: i64| {
        json!([
            {"agent": "cum-a", "tool": "issue_refund", "params": refund(&format!("c-a{n}"), 4000), "confidence": 0.97},
            {"agent": "cum-b", "tool": "issue_refund", "params": refund(&format!("c-b{n}"), 10), "confidence": 0.97},
            {"agent": "cum-c", "tool": "issue_refund", "params": refund(&format!("c-c{n}"), 10), "confidence": 0.97},
        ])
    };
    let verdicts = "SELECT verdict FROM backstop.propose_batch($1) ORDER BY i";
    let mut first = gw.begin().await.unwrap();
    let got: Vec<String> = sqlx::query_scalar(verdicts)
        .bind(batch(1))
        .fetch_all(&mut *first)
        .await
        .unwrap();
    assert_eq!(got, ["allow", "allow", "allow"]);
    let second = {
        let gw = gw.clone();
        let b = batch(2);
        tokio::spawn(async move { sqlx::query_scalar::<_, String>(verdicts).bind(b).fetch_all(&gw).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!second.is_finished(), "the second batch waits for the first's amounts");
    first.commit().await.unwrap();
    let got = second.await.unwrap().expect("the second batch is decided");
    assert_eq!(got, ["hold", "allow", "allow"]);
    assert_eq!(hour_total(t.pool(), "cum-a").await, 4000);
    logins.drop_all(vec![bot, gw]).await;
}
