//! Rollback: `compensate` plans and requests it, `worker` runs it.

use anyhow::{Result, bail};

use super::{open, parse_time, parse_uuid};
use backstop::config::Config;
use backstop::output::print_json;

pub struct CompensateArgs {
    pub action_ids: Vec<String>,
    pub agent: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub correlation: Option<String>,
    pub reason: Option<String>,
    pub dry_run: bool,
    /// Only the selected actions of this tool.
    pub tool: Option<String>,
}

pub async fn compensate(cfg: &Config, args: &CompensateArgs) -> Result<()> {
    use backstop::compensation::{self, Selection};
    let sel = match (&args.action_ids[..], &args.agent, &args.correlation) {
        (ids, None, None) if !ids.is_empty() => {
            Selection::Actions(ids.iter().map(|s| parse_uuid(s)).collect::<Result<_>>()?)
        }
        ([], Some(agent), None) => Selection::AgentWindow {
            agent: agent.clone(),
            since: parse_time(args.since.as_deref().unwrap_or("1h"))?,
            until: parse_time(args.until.as_deref().unwrap_or("now"))?,
        },
        ([], None, Some(c)) => Selection::Correlation(c.clone()),
        _ => bail!(
            "say what to compensate: action ids, or --agent NAME [--since T --until T], or --correlation ID (one of them)"
        ),
    };
    let reason = match (&args.reason, args.dry_run) {
        (Some(r), _) if !r.trim().is_empty() => r.clone(),
        (_, true) => String::new(),
        _ => bail!("--reason is required: it is recorded in the log with your name"),
    };
    let db = open(cfg, "backstop compensate", 2).await?;
    let sel = match &args.tool {
        None => sel,
        Some(tool) => {
            let seeds = compensation::seeds(&db.pool, &sel).await?;
            let of_tool: Vec<uuid::Uuid> =
                sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE action_id = ANY ($1) AND tool = $2")
                    .bind(&seeds)
                    .bind(tool)
                    .fetch_all(&db.pool)
                    .await?;
            if of_tool.is_empty() {
                bail!(
                    "none of the {} selected actions is a {tool} call: nothing to compensate",
                    seeds.len()
                );
            }
            Selection::Actions(of_tool)
        }
    };
    let plan = compensation::plan(&db.pool, &sel).await?;
    if plan.steps.is_empty() {
        bail!("nothing matches that selection: no actions to compensate");
    }
    if args.dry_run {
        if cfg.json {
            print_json(&plan)?;
        } else {
            print!("{}", compensation::render(&plan));
            println!("dry run: nothing was requested");
        }
        return Ok(());
    }
    let (plan_id, outcomes) = compensation::request(&db.pool, &plan, &reason).await?;
    if cfg.json {
        print_json(&serde_json::json!({ "plan_id": plan_id, "plan": plan, "outcomes": outcomes }))?;
    } else {
        print!("{}", compensation::render(&plan));
        let requested = outcomes.iter().filter(|o| o.outcome == "requested").count();
        // The log names the session's login, whatever --operator says.
        let login: String = sqlx::query_scalar("SELECT backstop.actor()")
            .fetch_one(&db.pool)
            .await?;
        println!(
            "plan {plan_id}: {requested} compensation(s) requested by {login}; a worker (backstop worker) runs them"
        );
    }
    Ok(())
}

pub async fn worker(
    cfg: &Config,
    opts: backstop::compensation::worker::WorkerOptions,
    metrics: Option<std::net::SocketAddr>,
) -> Result<()> {
    let db = open(cfg, "backstop worker", (opts.batch as u32).max(2) + 2).await?;
    let metrics = match metrics {
        Some(addr) => {
            let (bound, h) = backstop::metrics::serve(addr, db.pool.clone(), "worker", &opts.name).await?;
            eprintln!("backstop worker {}: metrics on http://{bound}/metrics", opts.name);
            Some(h)
        }
        None => None,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let housekeeping = backstop::housekeeping::spawn(db.pool.clone());
    eprintln!("backstop worker {}: running on {} (Ctrl-C stops)", opts.name, db.label);
    let name = opts.name.clone();
    let handle = tokio::spawn(backstop::compensation::worker::run(db.pool.clone(), opts, rx));
    tokio::signal::ctrl_c().await?;
    let _ = tx.send(true);
    let stats = handle.await??;
    housekeeping.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if cfg.json {
        print_json(&stats)?;
    } else {
        eprintln!(
            "backstop worker {name}: stopped; {} claimed, {} compensated, {} retried, {} failed, {} lost to an expired lease",
            stats.claimed, stats.compensated, stats.retried, stats.failed, stats.lost_lease
        );
    }
    Ok(())
}
