//! Connections: a server named by `DATABASE_URL`, or the embedded private
//! cluster. Every connection carries the operator's name as the session
//! setting `backstop.operator`, which the contract records as the actor.

pub mod embedded;
mod replica;
pub mod schema;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};

pub use embedded::{EmbeddedOptions, EmbeddedPg};
pub use replica::connect_replica;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to reach the database.
#[derive(Debug, Clone, Default)]
pub struct DbConfig {
    /// A server URL; `None` starts the embedded cluster.
    pub url: Option<String>,
    /// Keep the embedded cluster in this directory.
    pub keep_db: Option<PathBuf>,
    /// Recorded as the actor of every state change.
    pub operator: String,
    /// Shown in pg_stat_activity.
    pub application: String,
    pub max_connections: u32,
    /// Without a URL, start the embedded cluster (the demo, the benchmarks,
    /// `--embedded`); otherwise a command without a database says so. A
    /// state change made on a throwaway cluster would look like one made on
    /// the real one.
    pub embedded: bool,
}

/// What a command without a database is told.
pub const NO_DATABASE: &str = "no database: set DATABASE_URL (or --database-url) to the server Backstop guards; \
     --embedded starts a private throwaway cluster instead (for trying things out: nothing there is real)";

/// An open database: a pool plus, when embedded, the cluster that must live as
/// long as the pool.
#[derive(Clone)]
pub struct Db {
    pub pool: PgPool,
    pub options: PgConnectOptions,
    /// Human-readable location for headers and messages (no password).
    pub label: String,
    pub embedded: Option<Arc<EmbeddedPg>>,
}

/// A malformed DATABASE_URL in plain words, once (sqlx repeats its cause).
fn bad_url(e: &sqlx::Error) -> String {
    let why = match e {
        sqlx::Error::Configuration(inner) => inner.to_string(),
        other => other.to_string(),
    };
    format!("DATABASE_URL is not a valid database URL ({why}); the form is postgres://USER:PASSWORD@HOST:PORT/DATABASE")
}

/// A connection error as a person reads it: the server's own message, or
/// the operating system's (connection refused, no such host), said once.
pub fn plain_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is the server running and listening on that host and port?)".into()
            }
            _ => io.to_string(),
        },
        sqlx::Error::Tls(t) => format!("TLS: {t}"),
        sqlx::Error::Configuration(c) => c.to_string(),
        other => other.to_string(),
    }
}

impl Db {
    /// Open the database named by the config to use it: a server's schema is
    /// checked, never changed (that is `backstop migrate`'s); the embedded
    /// cluster, started only when the config allows it, is ours and migrated.
    pub async fn open(cfg: &DbConfig) -> Result<Db> {
        Self::open_as(cfg, false).await
    }

    /// Open the database and bring its schema up to date (`backstop migrate`).
    pub async fn open_and_migrate(cfg: &DbConfig) -> Result<Db> {
        Self::open_as(cfg, true).await
    }

    async fn open_as(cfg: &DbConfig, migrate: bool) -> Result<Db> {
        if cfg.url.is_none() && !cfg.embedded {
            anyhow::bail!(NO_DATABASE);
        }
        let (base, embedded) = match &cfg.url {
            Some(url) => (
                PgConnectOptions::from_str(url).map_err(|e| anyhow::anyhow!(bad_url(&e)))?,
                None,
            ),
            None => {
                let opts = EmbeddedOptions {
                    keep_dir: cfg.keep_db.clone(),
                    ..Default::default()
                };
                let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&opts))
                    .await
                    .context("starting the embedded database")??;
                let admin = PgConnectOptions::from_str(&pg.url("postgres"))?;
                let mut conn = PgConnection::connect_with(&admin).await?;
                let exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'backstop')")
                        .fetch_one(&mut conn)
                        .await?;
                if !exists {
                    conn.execute("CREATE DATABASE backstop").await?;
                }
                conn.close().await?;
                (PgConnectOptions::from_str(&pg.url("backstop"))?, Some(Arc::new(pg)))
            }
        };
        let db = Db::connect_with(base, cfg, embedded).await?;
        if migrate || db.embedded.is_some() {
            db.migrate().await?;
        } else {
            db.check_schema().await?;
        }
        Ok(db)
    }

    /// That the database runs this Backstop's contract: present, not older
    /// and not newer, and (where this login may read it) the same files.
    pub async fn check_schema(&self) -> Result<()> {
        let present: bool = sqlx::query_scalar("SELECT to_regprocedure('backstop.contract_version()') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("reading the schema of {}", self.label))?;
        if !present {
            anyhow::bail!(
                "{} has no Backstop schema (or an older one without a contract version): run `backstop migrate` there as the owner first",
                self.label
            );
        }
        let version: i32 = match sqlx::query_scalar("SELECT backstop.contract_version()")
            .fetch_one(&self.pool)
            .await
        {
            Ok(v) => v,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => anyhow::bail!(
                "login {} has no Backstop duty on {}: the owner grants one with `backstop grant DUTY LOGIN`",
                self.options.get_username(),
                self.label
            ),
            Err(e) => return Err(e).with_context(|| format!("reading the contract version of {}", self.label)),
        };
        if version < schema::CONTRACT_VERSION {
            anyhow::bail!(
                "{} runs contract version {version}, older than this backstop's {}: run `backstop migrate` as the owner",
                self.label,
                schema::CONTRACT_VERSION
            );
        }
        if version > schema::CONTRACT_VERSION {
            anyhow::bail!(
                "{} runs contract version {version}, newer than this backstop's {}: use a newer backstop",
                self.label,
                schema::CONTRACT_VERSION
            );
        }
        if let Ok(recorded) = sqlx::query_as::<_, (String, String)>(
            "SELECT name, sha256 FROM backstop.contract_files ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
            && recorded != schema::contract_checksums()
        {
            anyhow::bail!(
                "the contract on {} differs from this backstop's (same version, other files): run `backstop migrate` as the owner",
                self.label
            );
        }
        Ok(())
    }

    /// Connect without migrating (for commands that must not change the schema).
    pub async fn connect_with(base: PgConnectOptions, cfg: &DbConfig, embedded: Option<Arc<EmbeddedPg>>) -> Result<Db> {
        let options = session_options(base, cfg);
        let label = describe(&options, embedded.is_some());
        // One connection first: a pool retries a refused connection until
        // its acquire timeout and then says only "pool timed out"; a single
        // attempt fails at once with the cause.
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&options)).await {
            Ok(Ok(c)) => {
                let _ = c.close().await;
            }
            Ok(Err(e)) => anyhow::bail!("cannot connect to {label}: {}", plain_error(&e)),
            Err(_) => anyhow::bail!("cannot connect to {label}: no answer within 10 s"),
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {label}: {}", plain_error(&e)))?;
        Ok(Db {
            pool,
            options,
            label,
            embedded,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        run_migrations(&self.options)
            .await
            .with_context(|| format!("applying migrations to {}", self.label))
    }

    /// A dedicated connection outside the pool (the pause key, LISTEN).
    pub async fn dedicated(&self) -> Result<PgConnection> {
        self.options
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.label))
    }

    /// The same database under another operator name.
    pub async fn as_operator(&self, operator: &str, max_connections: u32) -> Result<Db> {
        let options = self.options.clone().options([("backstop.operator", operator)]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options.clone())
            .await?;
        Ok(Db {
            pool,
            options,
            label: self.label.clone(),
            embedded: self.embedded.clone(),
        })
    }
}

/// Apply the migrations on a connection of their own whose search_path is
/// `public`: the migrator's bookkeeping table is unqualified, and a login
/// role named like a schema (`$user` comes first in the default search_path)
/// would otherwise make it look in, or create it in, that schema.
pub async fn run_migrations(options: &PgConnectOptions) -> Result<()> {
    // The duty roles' prefix (sql/00_roles.sql checks it) and the log's
    // partition width (migrations/0001_schema.sql).
    let prefix = std::env::var("BACKSTOP_ROLE_PREFIX").unwrap_or_else(|_| "backstop".into());
    let width = std::env::var("BACKSTOP_LOG_PARTITION_WIDTH").unwrap_or_default();
    run_migrations_with(
        options,
        &[
            ("backstop.role_prefix", &prefix),
            ("backstop.log_partition_width", &width),
        ],
    )
    .await
}

/// `run_migrations` with the migration-time settings given.
pub async fn run_migrations_with(options: &PgConnectOptions, settings: &[(&str, &str)]) -> Result<()> {
    let mut all = vec![("search_path", "public")];
    all.extend(settings.iter().filter(|(_, v)| !v.is_empty()).copied());
    let mut conn = PgConnection::connect_with(&options.clone().options(all)).await?;
    match MIGRATOR.run(&mut conn).await {
        Err(sqlx::migrate::MigrateError::VersionMissing(v)) => anyhow::bail!(
            "this database holds migration {v}, which this Backstop does not have: it was made by an \
             older Backstop whose migrations were squashed into one, or by a newer one. Migrate a new \
             database (or drop schema backstop) and load the registry and policy again"
        ),
        r => r?,
    }
    schema::apply_contract(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// The search_path of every Backstop session.
pub const SEARCH_PATH: &str = "pg_catalog,pg_temp";

fn session_options(base: PgConnectOptions, cfg: &DbConfig) -> PgConnectOptions {
    let app = if cfg.application.is_empty() {
        "backstop"
    } else {
        &cfg.application
    };
    base.application_name(app)
        // JIT compiles a short OLTP query for longer than it runs.
        .options([
            ("backstop.operator", cfg.operator.as_str()),
            ("jit", "off"),
            // Nothing a login can create is ever looked up by name: a
            // function in a writable schema (public, before PostgreSQL 15)
            // cannot stand in for a built-in in Backstop's own queries.
            ("search_path", SEARCH_PATH),
        ])
        // Statement logging at INFO would flood the room's terminal.
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(60))
}

fn describe(o: &PgConnectOptions, embedded: bool) -> String {
    let db = o.get_database().unwrap_or("postgres");
    if embedded {
        format!("embedded:{}/{}", o.get_port(), db)
    } else if let Some(sock) = o.get_socket() {
        format!("pg://{}/{}", sock.display(), db)
    } else {
        format!("pg://{}:{}/{}", o.get_host(), o.get_port(), db)
    }
}

/// The current OS user, the default operator name.
pub fn os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::current())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "operator".to_string())
}
