//! Prometheus metrics for `backstop supervise` and `backstop worker`
//! (`--metrics ADDR`). Every figure is read from the database at scrape time
//! (`backstop.metrics()`), never counted by the process: two supervisors
//! report the same fleet, and a restart loses nothing. Times are exported as
//! timestamps, so those agree too; `time() - x` is the age.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sqlx::PgPool;

/// Every metric name starts with this.
pub const PREFIX: &str = "backstop";

/// One metric `backstop.metrics()` returns.
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
}

const fn gauge(name: &'static str, help: &'static str) -> Def {
    Def {
        name,
        help,
        counter: false,
    }
}

/// What the database reports, by the names `backstop.metrics()` uses.
pub const FROM_DATABASE: &[Def] = &[
    Def {
        name: "proposals",
        help: "Proposals by agent, tool and first verdict (allow, hold, block), from the actions the log holds",
        counter: true,
    },
    gauge("held_actions", "Held actions waiting for an approver"),
    gauge("held_value", "Total amount of the held actions"),
    gauge(
        "held_oldest_timestamp_seconds",
        "When the oldest held action was held (absent when none is)",
    ),
    gauge(
        "held_half_expiry_timestamp_seconds",
        "The earliest time a held action reaches half of its expiry (absent when none is held)",
    ),
    gauge("findings_open", "Open findings by kind and severity"),
    gauge("paused_scopes", "Paused scopes by kind (fleet, agent, tool)"),
    gauge("fleet_paused", "1 while the whole fleet is paused"),
    gauge("compensations", "Compensations by status (requested is queued)"),
    gauge(
        "compensation_oldest_queued_timestamp_seconds",
        "When the oldest queued compensation was requested (absent when none is queued)",
    ),
    gauge("reviews_pending", "Delayed reviews scheduled and not done"),
    gauge(
        "review_oldest_due_timestamp_seconds",
        "When the oldest review that is due now fell due (absent when none is): review lag",
    ),
    gauge(
        "oldest_unsealed_timestamp_seconds",
        "When the oldest committed row not yet sealed was written (absent when all are): seal lag",
    ),
    gauge(
        "oldest_unfollowed_timestamp_seconds",
        "When the oldest row the supervisors have not followed yet was written (absent when none): tail lag",
    ),
    gauge("notifications", "Notifications by delivery status"),
    gauge(
        "notification_oldest_pending_timestamp_seconds",
        "When the oldest undelivered notification was queued (absent when none is)",
    ),
    gauge("policy_version", "The policy version in force"),
    gauge("registry_version", "The tool registry version in force"),
    gauge("contract_version", "The SQL contract's version"),
    gauge("log_last_seq", "The last sequence number the action log issued"),
    gauge(
        "log_default_partition_rows",
        "Log rows in the default partition, up to 10000: written when no partition existed for their time (housekeeping fell behind); a retention cut cannot pass them",
    ),
    gauge(
        "log_partitioned_until_timestamp_seconds",
        "Where the log's last partition ends; rows written after it go to the default partition",
    ),
];

/// The names this process exports, as Prometheus sees them.
pub fn exported_names() -> Vec<String> {
    let mut v: Vec<String> = FROM_DATABASE
        .iter()
        .map(|d| {
            if d.counter {
                format!("{PREFIX}_{}_total", d.name)
            } else {
                format!("{PREFIX}_{}", d.name)
            }
        })
        .collect();
    v.push(format!("{PREFIX}_up"));
    v.push(format!("{PREFIX}_build_info"));
    v
}

type Labels = Vec<(String, String)>;

/// One scrape: the database's figures, and `backstop_up` saying whether it
/// answered. `role` (supervisor, worker) and `name` label the process.
pub async fn scrape(pool: &PgPool, role: &str, name: &str) -> String {
    let mut reg = Registry::with_prefix(PREFIX);
    reg.register(
        "build",
        "This process: its role, name and version",
        Info::new(vec![
            ("role".to_string(), role.to_string()),
            ("name".to_string(), name.to_string()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]),
    );
    let up = Gauge::<i64>::default();
    reg.register(
        "up",
        "1 when this process's last query of the database succeeded",
        up.clone(),
    );
    match read(pool).await {
        Ok(rows) => {
            up.set(1);
            for d in FROM_DATABASE {
                let mine: Vec<&(String, Value, f64)> = rows.iter().filter(|r| r.0 == d.name).collect();
                if mine.is_empty() {
                    continue;
                }
                if d.counter {
                    let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
                    for (_, l, v) in mine {
                        f.get_or_create(&labels(l)).inc_by(*v);
                    }
                    reg.register(d.name, d.help, f);
                } else {
                    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                    for (_, l, v) in mine {
                        f.get_or_create(&labels(l)).set(*v);
                    }
                    reg.register(d.name, d.help, f);
                }
            }
        }
        Err(e) => {
            eprintln!("backstop {role} {name}: metrics: {e:#}");
            up.set(0);
        }
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        eprintln!("backstop {role} {name}: metrics: cannot encode: {e}");
    }
    out
}

fn labels(v: &Value) -> Labels {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        None => Vec::new(),
    }
}

async fn read(pool: &PgPool) -> Result<Vec<(String, Value, f64)>> {
    let q = sqlx::query_as("SELECT metric, labels, value FROM backstop.metrics()").fetch_all(pool);
    // A scrape that hangs on a stuck database would hide that it is stuck.
    tokio::time::timeout(Duration::from_secs(10), q)
        .await
        .context("the database did not answer within 10 s")?
        .context("reading backstop.metrics()")
}

#[derive(Clone)]
struct Scraper {
    pool: PgPool,
    role: &'static str,
    name: String,
}

async fn handler(State(s): State<Scraper>) -> impl IntoResponse {
    let body = scrape(&s.pool, s.role, &s.name).await;
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Serve `/metrics` on `addr` until the task is aborted. Returns the bound
/// address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    pool: PgPool,
    role: &'static str,
    name: &str,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(handler))
        .with_state(Scraper {
            pool,
            role,
            name: name.to_string(),
        });
    let label = format!("backstop {role} {name}");
    let h = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("{label}: metrics server stopped: {e}");
        }
    });
    Ok((bound, h))
}
