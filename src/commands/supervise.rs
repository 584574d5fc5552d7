//! `supervise`: the long-running supervisor process.

use anyhow::Result;

use super::open;
use backstop::config::Config;
use backstop::db::connect_replica;
use backstop::output::print_json;

pub async fn supervise(
    cfg: &Config,
    mut opts: backstop::supervisor::SupervisorOptions,
    watch_files: bool,
    metrics: Option<std::net::SocketAddr>,
) -> Result<()> {
    // Decisions are recorded as the supervisor, whoever started it.
    let mut c = cfg.clone();
    c.operator = backstop::supervisor::ACTOR.to_string();
    let db = open(&c, "backstop supervise", 8).await?;
    if let Some(u) = &cfg.read_url {
        opts.read = Some(connect_replica(u, 2).await?);
    }
    let mut reload = None;
    if watch_files {
        let (tools, policy) = cfg.files()?;
        let files = backstop::policy::watch::ConfigFiles { tools, policy };
        for e in backstop::policy::watch::reload_once(&db.pool, &files, &opts.name).await {
            eprintln!("backstop supervise {}: {e:?}", opts.name);
        }
        let mut rx = backstop::policy::watch::spawn(db.pool.clone(), files, opts.name.clone())?;
        let name = opts.name.clone();
        reload = Some(tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                eprintln!("backstop supervise {name}: {e:?}");
            }
        }));
    }
    let housekeeping = backstop::housekeeping::spawn(db.pool.clone());
    let metrics = match metrics {
        Some(addr) => {
            let (bound, h) = backstop::metrics::serve(addr, db.pool.clone(), "supervisor", &opts.name).await?;
            eprintln!("backstop supervise {}: metrics on http://{bound}/metrics", opts.name);
            Some(h)
        }
        None => None,
    };
    eprintln!(
        "backstop supervise {}: running on {} (Ctrl-C stops)",
        opts.name, db.label
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(backstop::supervisor::run(db.pool.clone(), opts.clone(), rx));
    tokio::signal::ctrl_c().await?;
    let _ = tx.send(true);
    let stats = handle.await??;
    housekeeping.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(r) = reload {
        r.abort();
    }
    if cfg.json {
        print_json(&stats)?;
    } else {
        eprintln!(
            "backstop supervise {}: stopped; {} rows followed, {} reviews done, {} findings, {} pauses, {} compensations requested",
            opts.name,
            stats.rows_followed,
            stats.reviews_done,
            stats.findings,
            stats.pauses,
            stats.compensations_requested
        );
    }
    Ok(())
}
