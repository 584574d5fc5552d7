//! Test harness: a real PostgreSQL for every test, each test in its own
//! database. With BACKSTOP_TEST_DATABASE_URL (or DATABASE_URL) set, that
//! server is used; otherwise one embedded private cluster is started per test
//! binary and removed when the binary exits.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use backstop::db::{Db, DbConfig, EmbeddedOptions, EmbeddedPg};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

static CLUSTER: OnceLock<Result<Server, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Server {
    admin_url: String,
    /// URL with a `{db}` placeholder for the database name.
    db_url: String,
    _embedded: Option<EmbeddedPg>,
}

fn server() -> &'static Server {
    let s = CLUSTER.get_or_init(|| {
        let url = std::env::var("BACKSTOP_TEST_DATABASE_URL")
            .ok()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| !u.is_empty());
        match url {
            Some(u) => {
                let opts = PgConnectOptions::from_str(&u).map_err(|e| e.to_string())?;
                let db_url = replace_db(&u, "{db}");
                let admin_url = replace_db(&u, opts.get_database().unwrap_or("postgres"));
                Ok(Server {
                    admin_url,
                    db_url,
                    _embedded: None,
                })
            }
            None => {
                let pg = EmbeddedPg::start(&EmbeddedOptions::default()).map_err(|e| format!("{e:#}"))?;
                Ok(Server {
                    admin_url: pg.url("postgres"),
                    db_url: pg.url("{db}"),
                    _embedded: Some(pg),
                })
            }
        }
    });
    match s {
        Ok(s) => s,
        Err(e) => panic!("no PostgreSQL for the tests: {e}"),
    }
}

fn replace_db(url: &str, db: &str) -> String {
    // postgres://user@host:port/DB?query
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host_part = match path_start {
        Some(p) => &base[..p],
        None => base,
    };
    format!("{host_part}/{db}{query}")
}

fn template_name() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(backstop::db::schema::fingerprint());
    h.update(include_str!("../../src/demo/systems.sql"));
    format!("backstop_tmpl_{}", &hex::encode(h.finalize())[..16])
}

pub fn url_for(db: &str) -> String {
    server().db_url.replace("{db}", db)
}

/// `url` with `login` as its user (and no password: the test servers trust
/// local logins), for running the binary as one duty's login.
#[allow(dead_code)]
pub fn login_url(url: &str, login: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = match rest.split_once('@') {
        Some((_, after)) if !rest[..rest.find('@').unwrap_or(0)].contains('/') => after,
        _ => rest,
    };
    format!("{scheme}://{login}@{rest}")
}

pub fn admin_url() -> String {
    server().admin_url.clone()
}

async fn ensure_template(admin: &mut PgConnection) {
    let tmpl = template_name();
    admin
        .execute("SELECT pg_advisory_lock(777001)")
        .await
        .expect("template lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&tmpl)
        .fetch_one(&mut *admin)
        .await
        .expect("template lookup");
    if !exists {
        let building = format!("{tmpl}_building");
        admin
            .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {building}")))
            .await
            .expect("drop stale template");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
            .await
            .expect("create template");
        {
            let opts = PgConnectOptions::from_str(&url_for(&building)).expect("template url");
            backstop::db::run_migrations(&opts).await.expect("migrate template");
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url_for(&building))
                .await
                .expect("connect template");
            backstop::demo::install_systems(&pool).await.expect("demo systems");
            pool.close().await;
        }
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {building} RENAME TO {tmpl}"
            )))
            .await
            .expect("publish template");
    }
    admin
        .execute("SELECT pg_advisory_unlock(777001)")
        .await
        .expect("template unlock");
}

/// A fresh database with the migrations applied, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub db: Db,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::with_operator("tester").await
    }

    pub async fn with_operator(operator: &str) -> TestDb {
        let server = server();
        let mut admin = PgConnection::connect(&server.admin_url)
            .await
            .expect("admin connection");
        ensure_template(&mut admin).await;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("backstop_t_{}_{}", std::process::id(), n);
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {name} TEMPLATE {}",
                template_name()
            )))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = url_for(&name);
        let cfg = DbConfig {
            url: Some(url.clone()),
            operator: operator.to_string(),
            application: "backstop test".into(),
            max_connections: 40,
            ..Default::default()
        };
        let db = Db::connect_with(PgConnectOptions::from_str(&url).expect("url"), &cfg, None)
            .await
            .expect("connect test database");
        TestDb { name, url, db }
    }

    /// A database migrated on its own (not from the template) with these
    /// migration settings, e.g. a short log partition width.
    #[allow(dead_code)]
    pub async fn migrated_with(settings: &[(&str, &str)]) -> TestDb {
        let server = server();
        let mut admin = PgConnection::connect(&server.admin_url)
            .await
            .expect("admin connection");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("backstop_t_{}_{}", std::process::id(), n);
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = url_for(&name);
        let opts = PgConnectOptions::from_str(&url).expect("url");
        backstop::db::run_migrations_with(&opts, settings)
            .await
            .expect("migrate");
        let cfg = DbConfig {
            url: Some(url.clone()),
            operator: "tester".to_string(),
            application: "backstop test".into(),
            max_connections: 10,
            ..Default::default()
        };
        let db = Db::connect_with(opts, &cfg, None).await.expect("connect test database");
        backstop::demo::install_systems(&db.pool).await.expect("demo systems");
        TestDb { name, url, db }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Another pool on the same database acting as `operator`.
    pub async fn as_operator(&self, operator: &str) -> PgPool {
        self.db.as_operator(operator, 8).await.expect("operator pool").pool
    }

    /// A superuser connection (for tampering tests).
    pub async fn superuser(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("superuser connection")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(self.pool())
            .await
            .expect("count query")
    }

    pub async fn log_len(&self) -> i64 {
        self.count("SELECT count(*) FROM backstop.action_log").await
    }

    /// Load the shipped registry and policy.
    pub async fn load_assets(&self) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
        backstop::demo::script::load_config(self.pool(), &root.join("tools.toml"), &root.join("policy.toml"))
            .await
            .expect("load assets");
    }

    /// Records `result` as the successful outcome of allowed action `id`,
    /// checks its compensation was staged, and returns the inverse's params.
    #[allow(dead_code)]
    pub async fn staged_inverse(&self, id: uuid::Uuid, result: serde_json::Value) -> serde_json::Value {
        let rec = backstop::contract::record_result(self.pool(), id, true, Some(&result), None)
            .await
            .expect("record_result");
        assert_eq!(rec.compensation, "staged");
        sqlx::query_scalar("SELECT inverse_params FROM backstop.actions WHERE action_id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .expect("the staged inverse")
    }

    /// A refund the shipped policy's check `refund_within_order_total`
    /// catches: $47,000 by refund-bot-2 on a $572 order (O-572), held by
    /// four_eyes for two approvers. Needs `load_assets` first.
    pub async fn hold_refund_over_its_order(&self) -> backstop::contract::Decision {
        sqlx::query("INSERT INTO payments.orders (order_id, customer_id, total) VALUES ('O-572', 'c-57', 572.00)")
            .execute(self.pool())
            .await
            .expect("the order");
        backstop::contract::propose(
            self.pool(),
            &backstop::contract::Proposal {
                agent: "refund-bot-2".into(),
                tool: "issue_refund".into(),
                params: serde_json::json!({"customer_id": "c-57", "order_id": "O-572", "amount": 47000, "reason": "billing dispute"}),
                confidence: Some(0.81),
                reasoning: Some("Ticket T-47000: matching their claimed lifetime spend of $47,000.".into()),
                inputs: Some(serde_json::json!({"ticket": "T-47000"})),
                ..Default::default()
            },
        )
        .await
        .expect("the refund's proposal")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = server().admin_url.clone();
        // Drop the database on a thread of its own (Drop cannot await); FORCE
        // ends this test's connections, which belong to the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut c) = PgConnection::connect(&admin).await {
                        let _ = c
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Run one in-process compensation worker until nothing is left to run; its
/// counts.
pub async fn drain(pool: &PgPool, name: &str) -> backstop::compensation::worker::WorkerStats {
    use backstop::compensation::worker::{self, WorkerOptions};
    use std::time::{Duration, Instant};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut opts = WorkerOptions::named(name);
    opts.poll = Duration::from_millis(50);
    let h = tokio::spawn(worker::run(pool.clone(), opts, rx));
    let t0 = Instant::now();
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM backstop.compensations WHERE status IN ('requested', 'running')")
                .fetch_one(pool)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "compensations still open: {open}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).unwrap();
    h.await.unwrap().unwrap()
}

/// Real logins on the test server, each with a duty, dropped with `drop_all`.
pub struct Logins {
    admin: PgPool,
    names: Vec<String>,
}

impl Logins {
    pub fn new(t: &TestDb) -> Logins {
        Logins {
            admin: t.pool().clone(),
            names: vec![],
        }
    }
    /// The login `login(name, ..)` makes (names are cluster-wide: the
    /// process id keeps concurrent test binaries apart).
    pub fn name(name: &str) -> String {
        format!("{name}_{}", std::process::id())
    }

    /// A login with `duty`, connected to the test database.
    pub async fn login(&mut self, t: &TestDb, name: &str, duty: Option<&str>) -> PgPool {
        let login = Self::name(name);
        self.admin
            .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{login}\"")))
            .await
            .unwrap();
        self.admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{login}\" LOGIN")))
            .await
            .unwrap();
        if let Some(d) = duty {
            self.admin
                .execute(sqlx::AssertSqlSafe(format!("GRANT backstop_{d} TO \"{login}\"")))
                .await
                .unwrap();
        }
        self.names.push(login.clone());
        let opts = PgConnectOptions::from_str(&t.url).unwrap().username(&login);
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .unwrap()
    }
    pub async fn drop_all(&self, pools: Vec<PgPool>) {
        for p in pools {
            p.close().await;
        }
        for n in &self.names {
            let _ = self
                .admin
                .execute(sqlx::AssertSqlSafe(format!("DROP OWNED BY \"{n}\"")))
                .await;
            let _ = self
                .admin
                .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{n}\"")))
                .await;
        }
    }
}

/// The SQLSTATE of a database error (empty for other errors).
pub fn code(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}
