//! `backstop bench compensation`: compensations per second through the outbox
//! with 1 and 4 workers on the SQL executor (against a separate target
//! database), beside the same inverses called directly; and the time to plan
//! the rollback of a 10,000-action incident with dependents, beside the plain
//! query that selects the incident's actions.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::{Connection, Executor, PgConnection, PgPool};

use super::BenchDb;
use backstop::compensation::{self, Selection, worker};
use backstop::config::Config;

const TARGET_SQL: &str = "
CREATE TABLE IF NOT EXISTS effects (key uuid PRIMARY KEY, amount bigint NOT NULL);
CREATE OR REPLACE FUNCTION undo_thing(p jsonb, key uuid) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects (key, amount) VALUES (undo_thing.key, (p ->> 'amount')::bigint) ON CONFLICT ON CONSTRAINT effects_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('repeat', true);
    END IF;
    RETURN jsonb_build_object('undone', p ->> 'amount');
END
$$;";

#[derive(Debug, Clone, Serialize)]
pub struct CompRow {
    pub workers: usize,
    pub compensations: i64,
    pub per_s: f64,
    pub direct_calls_per_s: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompReport {
    pub server: String,
    pub rows: Vec<CompRow>,
    pub plan_actions: i64,
    pub plan_seconds: f64,
    pub select_seconds: f64,
}

async fn executed(pool: &PgPool, agent: &str, n: i64, with_children: bool) -> Result<()> {
    // Server side, through the contract: propose + record_result per action.
    let sql = format!(
        "DO $$ DECLARE a uuid; c uuid; BEGIN
           FOR i IN 1 .. {n} LOOP
             SELECT action_id INTO a FROM backstop.propose('{agent}', 'do_thing', jsonb_build_object('id', i, 'amount', i % 7 + 1),
                                                           correlation_id => 'incident-' || i);
             PERFORM backstop.record_result(a, true, '{{}}');
             IF {with_children} THEN
               SELECT action_id INTO c FROM backstop.propose('{agent}-helper', 'do_thing', jsonb_build_object('id', -i, 'amount', 1),
                                                             parent_action => a);
               PERFORM backstop.record_result(c, true, '{{}}');
             END IF;
           END LOOP; END $$"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

async fn run_workers(pool: &PgPool, workers: usize) -> Result<f64> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..workers {
        let mut opts = worker::WorkerOptions::named(&format!("bench-w{i}"));
        opts.batch = 32;
        opts.poll = Duration::from_millis(20);
        handles.push(tokio::spawn(worker::run(pool.clone(), opts, rx.clone())));
    }
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM backstop.compensations WHERE status <> 'compensated'")
            .fetch_one(pool)
            .await?;
        if open == 0 {
            break;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(600), "compensations did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = tx.send(true);
    for h in handles {
        h.await??;
    }
    Ok(secs)
}

pub async fn run(cfg: &Config, n: i64, progress: bool) -> Result<CompReport> {
    let bench = BenchDb::create(cfg, 16).await?;
    let target_name = format!("{}_target", bench.name());
    let result = measure(&bench, &target_name, n, progress).await;
    let mut admin = PgConnection::connect_with(&bench.admin_options()).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {target_name} WITH (FORCE)"
        )))
        .await?;
    bench.drop_now().await?;
    result
}

async fn measure(bench: &BenchDb, target_name: &str, n: i64, progress: bool) -> Result<CompReport> {
    let pool = bench.db.pool.clone();
    let server = super::server_facts(&pool).await?;
    // The target system: a database of its own on the same server.
    let mut admin = PgConnection::connect_with(&bench.admin_options()).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {target_name}")))
        .await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {target_name}")))
        .await?;
    let target_opts = bench.admin_options().database(target_name);
    let target = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(target_opts.clone())
        .await?;
    sqlx::raw_sql(TARGET_SQL).execute(&target).await?;
    // A target URL the workers can use: the same server, the target database.
    let target_url = bench.url_for(target_name);
    let tools = format!(
        "[tools.do_thing]\nclass = \"reversible\"\nparams = [\"id\", \"amount\"]\ninverse = \"undo_thing\"\n\
         bind = {{ id = \"params.id\", amount = \"params.amount\" }}\n\
         [tools.undo_thing]\nclass = \"irreversible\"\nparams = [\"id\", \"amount\"]\n\
         executor = {{ kind = \"sql\", system = \"target\", function = \"public.undo_thing\" }}\n\
         [systems.target]\nurl = \"{target_url}\"\n"
    );
    let reg = backstop::registry::parse("bench-tools.toml", &tools).map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    backstop::registry::sync(&pool, &reg, "bench").await?;
    let pol = backstop::policy::parse("bench-policy.toml", "", Some(&reg)).map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    backstop::policy::sync(&pool, &pol, "bench").await?;

    let mut rows = Vec::new();
    for (round, workers) in [1usize, 4].into_iter().enumerate() {
        if progress {
            eprintln!("bench compensation: {n} compensations with {workers} worker(s) ...");
        }
        let agent = format!("bench-agent-{round}");
        executed(&pool, &agent, n, false).await?;
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT action_id FROM backstop.actions WHERE agent = $1")
            .bind(&agent)
            .fetch_all(&pool)
            .await?;
        backstop::contract::request_compensation(&pool, &ids, "benchmark", None).await?;
        let secs = run_workers(&pool, workers).await?;
        // Baseline: the same inverses called directly, with the same concurrency.
        sqlx::query("TRUNCATE effects").execute(&target).await?;
        let params: Vec<(uuid::Uuid, serde_json::Value)> =
            sqlx::query_as("SELECT gen_random_uuid(), inverse_params FROM backstop.actions WHERE agent = $1")
                .bind(&agent)
                .fetch_all(&pool)
                .await?;
        let direct = {
            let t0 = Instant::now();
            let chunks: Vec<Vec<(uuid::Uuid, serde_json::Value)>> = params
                .chunks(params.len().div_ceil(workers))
                .map(|c| c.to_vec())
                .collect();
            let mut hs = Vec::new();
            for chunk in chunks {
                let opts = target_opts.clone();
                hs.push(tokio::spawn(async move {
                    let mut c = PgConnection::connect_with(&opts).await?;
                    for (k, p) in chunk {
                        let mut tx = c.begin().await?;
                        sqlx::query("SELECT undo_thing($1, $2)")
                            .bind(&p)
                            .bind(k)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                    }
                    anyhow::Ok(())
                }));
            }
            for h in hs {
                h.await??;
            }
            t0.elapsed().as_secs_f64()
        };
        let per_s = n as f64 / secs;
        let direct_per_s = n as f64 / direct;
        rows.push(CompRow {
            workers,
            compensations: n,
            per_s,
            direct_calls_per_s: direct_per_s,
            ratio: per_s / direct_per_s,
        });
    }

    // Plan time: an incident of 10,000 actions, each with a dependent child.
    if progress {
        eprintln!("bench compensation: planning the rollback of a 10,000-action incident with dependents ...");
    }
    let since = chrono::Utc::now();
    executed(&pool, "incident-agent", 10_000, true)
        .await
        .context("building the incident")?;
    let until = chrono::Utc::now();
    let t0 = Instant::now();
    let seeds: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT action_id FROM backstop.actions WHERE agent = $1 AND proposed_at >= $2 AND proposed_at <= $3",
    )
    .bind("incident-agent")
    .bind(since)
    .bind(until)
    .fetch_all(&pool)
    .await?;
    let select_seconds = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let plan = compensation::plan(
        &pool,
        &Selection::AgentWindow {
            agent: "incident-agent".into(),
            since,
            until,
        },
    )
    .await?;
    let plan_seconds = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        plan.steps.len() == 20_000 && seeds.len() == 10_000,
        "the plan has {} steps",
        plan.steps.len()
    );

    target.close().await;
    Ok(CompReport {
        server,
        rows,
        plan_actions: plan.steps.len() as i64,
        plan_seconds,
        select_seconds,
    })
}

pub fn render(r: &CompReport) -> String {
    let mut t = backstop::output::Table::new(&["workers", "compensations", "per second", "direct calls/s", "ratio"]);
    for row in &r.rows {
        t.row(vec![
            row.workers.to_string(),
            row.compensations.to_string(),
            format!("{:.0}", row.per_s),
            format!("{:.0}", row.direct_calls_per_s),
            format!("{:.2}", row.ratio),
        ]);
    }
    format!(
        "{}\n{}\nplan for a {}-action incident (10,000 selected + dependents): {:.0} ms; selecting the 10,000 alone: {:.0} ms (ratio {:.1})\n",
        r.server,
        t.render(),
        r.plan_actions,
        r.plan_seconds * 1000.0,
        r.select_seconds * 1000.0,
        r.plan_seconds / r.select_seconds.max(1e-9)
    )
}
