//! Driving a fleet from the command line: `drill`, `simulate`.

use anyhow::Result;

use backstop::config::Config;
use backstop::db::Db;
use backstop::output::print_json;

/// `backstop drill`: run the exercise against the live fleet and score it.
pub async fn drill(cfg: &Config, opts: backstop::demo::drill::DrillOptions) -> Result<()> {
    let db = Db::open(&cfg.db_simulated("backstop drill", 4)).await?;
    let (report, previous) = backstop::demo::drill::run(&db, &opts).await?;
    if cfg.json {
        print_json(&serde_json::json!({"drill": report, "previous": previous}))
    } else {
        print!("{}", backstop::demo::drill::render(&report, &previous));
        Ok(())
    }
}

/// `backstop simulate`: the demo's agents, many of them, at a target rate.
pub async fn simulate(cfg: &Config, agents: usize, rate: f64, duration: std::time::Duration, seed: u64) -> Result<()> {
    let db = Db::open(&cfg.db_simulated("backstop simulate", 4)).await?;
    eprintln!("backstop simulate: database {}", db.label);
    backstop::demo::install_systems(&db.pool).await?;
    let world = backstop::demo::fleet::seed_world(&db.pool, seed, 200).await?;
    // The files in force (a no-op when these versions are already active).
    backstop::demo::script::load_demo_config(&db.pool).await?;
    let fleet = backstop::demo::fleet::generic_fleet(agents, rate * 60.0 / agents as f64);
    let summary = backstop::demo::scenario::simulate(&db, fleet, world, seed, duration).await?;
    if cfg.json {
        print_json(&summary)
    } else {
        println!("{summary}");
        Ok(())
    }
}
