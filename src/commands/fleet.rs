//! Driving a fleet from the command line: `drill`, `simulate`.

use anyhow::Result;

use crate::config::Config;
use crate::db::Db;
use crate::output::print_json;

/// `backstop drill`: run the exercise against the live fleet and score it.
pub async fn drill(cfg: &Config, opts: crate::demo::drill::DrillOptions) -> Result<()> {
    let db = Db::open(&cfg.db("backstop drill", 4)).await?;
    let (report, previous) = crate::demo::drill::run(&db, &opts).await?;
    if cfg.json {
        print_json(&serde_json::json!({"drill": report, "previous": previous}))
    } else {
        print!("{}", crate::demo::drill::render(&report, &previous));
        Ok(())
    }
}

/// `backstop simulate`: the demo's agents, many of them, at a target rate.
pub async fn simulate(cfg: &Config, agents: usize, rate: f64, duration: std::time::Duration, seed: u64) -> Result<()> {
    let db = Db::open(&cfg.db("backstop simulate", 4)).await?;
    eprintln!("backstop simulate: database {}", db.label);
    crate::demo::install_systems(&db.pool).await?;
    let world = crate::demo::fleet::seed_world(&db.pool, seed, 200).await?;
    // The files in force (a no-op when these versions are already active).
    crate::demo::script::load_config(&db.pool, &cfg.tools, &cfg.policy).await?;
    let fleet = crate::demo::fleet::generic_fleet(agents, rate * 60.0 / agents as f64);
    let summary = crate::demo::scenario::simulate(&db, fleet, world, seed, duration).await?;
    if cfg.json {
        print_json(&summary)
    } else {
        println!("{summary}");
        Ok(())
    }
}
