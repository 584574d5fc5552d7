//! Setting up a database and its files: `migrate`, `check`, `load`.

use anyhow::{Result, bail};

use super::open;
use backstop::config::Config;
use backstop::output::print_json;
use backstop::{policy, registry};

pub async fn migrate(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop migrate", 2).await?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM public._sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await?;
    let version: i32 = sqlx::query_scalar("SELECT backstop.contract_version()")
        .fetch_one(&db.pool)
        .await?;
    if cfg.json {
        print_json(
            &serde_json::json!({ "database": db.label, "migrations_applied": applied, "contract_version": version }),
        )?;
    } else {
        println!(
            "{}: schema backstop is up to date ({applied} migrations, contract version {version})",
            db.label
        );
    }
    Ok(())
}

/// Check the registry and policy files without touching any database.
pub fn check(cfg: &Config, tools: &std::path::Path, policy_path: &std::path::Path) -> Result<()> {
    let mut issues = Vec::new();
    let reg = match registry::read(tools) {
        Ok(r) => Some(r),
        Err(e) => {
            issues.extend(e);
            None
        }
    };
    let pol = policy::read(policy_path, reg.as_ref());
    if let Err(e) = &pol {
        issues.extend(e.iter().cloned());
    }
    if cfg.json {
        print_json(&serde_json::json!({ "ok": issues.is_empty(), "issues": issues }))?;
    } else if issues.is_empty() {
        let (r, p) = (reg.as_ref(), pol.as_ref().ok());
        println!(
            "{}: {} tools; {}: {} rules. Both valid.",
            tools.display(),
            r.map(|r| r.tools.len()).unwrap_or(0),
            policy_path.display(),
            p.map(|p| p.rules.len()).unwrap_or(0)
        );
    } else {
        for i in &issues {
            eprintln!("{i}");
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        bail!("{} problem(s) found; nothing was loaded", issues.len())
    }
}

/// Check both files and load them as new versions where they changed.
pub async fn load(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop load", 2).await?;
    let files = policy::watch::ConfigFiles {
        tools: cfg.tools.clone(),
        policy: cfg.policy.clone(),
    };
    let events = policy::watch::reload_once(&db.pool, &files, "cli").await;
    let mut failed = None;
    for e in &events {
        match e {
            policy::watch::ReloadEvent::Applied { what, version, summary } => {
                if !cfg.json {
                    println!("{what} version {version} loaded: {summary}");
                }
            }
            policy::watch::ReloadEvent::Rejected { file, errors } => {
                for er in errors {
                    eprintln!("{er}");
                }
                failed = Some(format!("{file} was rejected; the versions in force are unchanged"));
            }
            policy::watch::ReloadEvent::Failed { message } => failed = Some(message.clone()),
        }
    }
    if cfg.json {
        print_json(&serde_json::json!({ "events": events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>() }))?;
    } else if events.is_empty() {
        println!("registry and policy unchanged");
    }
    match failed {
        Some(m) => bail!(m),
        None => Ok(()),
    }
}
