//! Benchmarks that print ratios against a baseline measured in the same run.
//! Each runs in a database of its own (created and dropped here), so a
//! benchmark never writes into a real action log.

pub mod compensation;
pub mod gateway;
pub mod pause;
pub mod retention;
pub mod room;
pub mod suite;
pub mod supervisor;

use std::str::FromStr;

use anyhow::{Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use backstop::config::Config;
use backstop::db::{Db, DbConfig, EmbeddedOptions, EmbeddedPg};

/// A scratch database for one benchmark run, removed on drop.
pub struct BenchDb {
    pub db: Db,
    admin: Option<PgConnectOptions>,
    name: String,
    _embedded: Option<std::sync::Arc<EmbeddedPg>>,
    /// Logins made for this run (roles are the server's, not the
    /// database's): dropped with the database.
    logins: std::sync::Mutex<Vec<String>>,
}

impl BenchDb {
    pub async fn create(cfg: &Config, max_connections: u32) -> Result<BenchDb> {
        Self::create_with(cfg, max_connections, &[]).await
    }

    /// `create`, migrating with these session settings (e.g. the log's partition width).
    pub async fn create_with(cfg: &Config, max_connections: u32, settings: &[(&str, &str)]) -> Result<BenchDb> {
        let (admin, embedded) = match &cfg.database_url {
            Some(url) => (PgConnectOptions::from_str(url).context("DATABASE_URL")?, None),
            None => {
                let pg = tokio::task::spawn_blocking(|| EmbeddedPg::start(&EmbeddedOptions::default())).await??;
                (
                    PgConnectOptions::from_str(&pg.url("postgres"))?,
                    Some(std::sync::Arc::new(pg)),
                )
            }
        };
        Self::create_on(
            admin,
            embedded,
            format!("backstop_bench_{}", std::process::id()),
            max_connections,
            settings,
        )
        .await
    }

    /// Another benchmark database on the same server (the same embedded
    /// cluster), named like this one with `_tag`: two measurements meant to
    /// differ only in what their databases hold run side by side.
    pub async fn sibling(&self, tag: &str, max_connections: u32, settings: &[(&str, &str)]) -> Result<BenchDb> {
        anyhow::ensure!(
            tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "a benchmark database's tag is lowercase letters and digits"
        );
        Self::create_on(
            self.admin_options(),
            self._embedded.clone(),
            format!("{}_{tag}", self.name),
            max_connections,
            settings,
        )
        .await
    }

    async fn create_on(
        admin: PgConnectOptions,
        embedded: Option<std::sync::Arc<EmbeddedPg>>,
        name: String,
        max_connections: u32,
        settings: &[(&str, &str)],
    ) -> Result<BenchDb> {
        let mut c = PgConnection::connect_with(&admin)
            .await
            .context("connecting to create the benchmark database")?;
        c.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .await?;
        c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .context("creating the benchmark database (the role needs CREATEDB)")?;
        c.close().await?;
        let dbcfg = DbConfig {
            url: None,
            keep_db: None,
            operator: "bench".into(),
            application: "backstop bench".into(),
            max_connections,
            embedded: true,
        };
        let db = Db::connect_with(admin.clone().database(&name), &dbcfg, embedded.clone()).await?;
        backstop::db::run_migrations_with(&db.options, settings)
            .await
            .with_context(|| format!("applying migrations to {}", db.label))?;
        Ok(BenchDb {
            db,
            admin: Some(admin),
            name,
            _embedded: embedded,
            logins: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// `n` agent logins with the agent duty, each named like the agent it
    /// acts as (`PREFIX-0`, `PREFIX-1`, ...), as agents log in in
    /// production: the gateway's identity check then takes its common path.
    /// Returns each agent's name and connection options.
    pub async fn agent_logins(&self, prefix: &str, n: usize) -> Result<Vec<(String, PgConnectOptions)>> {
        let mut c = PgConnection::connect_with(&self.db.options).await?;
        let role: String = sqlx::query_scalar("SELECT role_name FROM backstop.duties WHERE duty = 'agent'")
            .fetch_one(&mut c)
            .await?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // Roles belong to the server: the process id keeps two runs apart.
            let login = format!("{prefix}-{}-{i}", std::process::id());
            let sql: String = sqlx::query_scalar(
                "SELECT format('DROP ROLE IF EXISTS %1$I; CREATE ROLE %1$I LOGIN PASSWORD %2$L IN ROLE %3$I', $1::text, $2::text, $3::text)",
            )
            .bind(&login)
            .bind(&password)
            .bind(&role)
            .fetch_one(&mut c)
            .await?;
            self.logins
                .lock()
                .map_err(|_| anyhow::anyhow!("login list poisoned"))?
                .push(login.clone());
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .with_context(|| format!("creating the benchmark's agent login {login} (the role needs CREATEROLE)"))?;
            let opts = self.db.options.clone().username(&login).password(&password);
            out.push((login, opts));
        }
        c.close().await?;
        Ok(out)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection options for the server's maintenance database.
    pub fn admin_options(&self) -> PgConnectOptions {
        self.admin.clone().unwrap_or_else(|| self.db.options.clone())
    }

    /// A URL for another database on the same server.
    pub fn url_for(&self, db: &str) -> String {
        let o = self.admin_options();
        match o.get_socket() {
            Some(sock) => format!(
                "postgres://{}@localhost:{}/{db}?host={}",
                o.get_username(),
                o.get_port(),
                sock.display()
            ),
            None => format!("postgres://{}@{}:{}/{db}", o.get_username(), o.get_host(), o.get_port()),
        }
    }

    pub fn describe(&self) -> String {
        if self._embedded.is_some() {
            "embedded cluster (fsync off)".to_string()
        } else {
            format!("{} (the server's own durability settings)", self.db.label)
        }
    }

    pub async fn drop_now(mut self) -> Result<()> {
        self.db.pool.close().await;
        if let Some(admin) = self.admin.take() {
            let mut c = PgConnection::connect_with(&admin).await?;
            c.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await?;
            let logins = std::mem::take(&mut *self.logins.lock().map_err(|_| anyhow::anyhow!("login list poisoned"))?);
            for login in logins {
                let sql: String = sqlx::query_scalar("SELECT format('DROP ROLE IF EXISTS %I', $1::text)")
                    .bind(&login)
                    .fetch_one(&mut c)
                    .await?;
                c.execute(sqlx::AssertSqlSafe(sql)).await?;
            }
        }
        Ok(())
    }
}

/// Server settings that matter for reading the figures.
pub async fn server_facts(pool: &sqlx::PgPool) -> Result<String> {
    let row: (String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'), current_setting('shared_buffers')",
    )
    .fetch_one(pool)
    .await?;
    Ok(format!(
        "PostgreSQL {}, fsync={}, synchronous_commit={}, shared_buffers={}, {} CPUs",
        row.0,
        row.1,
        row.2,
        row.3,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ))
}
