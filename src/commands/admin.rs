//! Setting up a database and its files: `migrate`, `check`, `load`.

use anyhow::{Result, bail};

use super::open;
use backstop::config::Config;
use backstop::output::print_json;
use backstop::{policy, registry};

pub async fn migrate(cfg: &Config) -> Result<()> {
    let db = backstop::db::Db::open_and_migrate(&cfg.db("backstop migrate", 2)).await?;
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

/// Check the registry and policy files; with a database (DATABASE_URL),
/// also what only the database can say and `load` would refuse: that the
/// tables the policy's lists name are plain tables the check role may read.
/// Nothing is written either way.
pub async fn check(cfg: &Config, tools: &std::path::Path, policy_path: &std::path::Path) -> Result<()> {
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
    if let (Ok(p), Some(_)) = (&pol, &cfg.database_url) {
        let db = backstop::db::Db::connect_with(
            cfg.database_url
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid postgres:// URL: {e}"))?,
            &cfg.db("backstop check", 1),
            None,
        )
        .await?;
        for (name, def) in &p.lists {
            let policy::ListDef::Table { table, .. } = def else {
                continue;
            };
            let problem: Option<String> = sqlx::query_scalar(
                "SELECT CASE
                    WHEN to_regclass($1) IS NULL THEN 'names table ' || $1 || ', which does not exist in this database'
                    WHEN (SELECT relkind FROM pg_class WHERE oid = to_regclass($1)) NOT IN ('r', 'p')
                        THEN 'names ' || $1 || ', which is not a plain table'
                    WHEN to_regclass('backstop.duties') IS NULL THEN NULL
                    WHEN NOT has_table_privilege((SELECT role_name FROM backstop.duties WHERE duty = 'check'), to_regclass($1), 'SELECT')
                        THEN 'names table ' || $1 || ', which the check role cannot read: GRANT SELECT ON ' || $1 || ' TO '
                             || (SELECT role_name FROM backstop.duties WHERE duty = 'check') END",
            )
            .bind(table)
            .fetch_one(&db.pool)
            .await?;
            if let Some(message) = problem {
                issues.push(backstop::filecheck::Issue {
                    file: policy_path.display().to_string(),
                    line: 0,
                    col: 0,
                    key: format!("lists.{name}.table"),
                    message: format!("list {name} {message} ({})", db.label),
                });
            }
        }
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
    // The files first: a missing one changes nothing.
    let (tools, policy_file) = cfg.files()?;
    let db = open(cfg, "backstop load", 2).await?;
    let files = policy::watch::ConfigFiles {
        tools,
        policy: policy_file,
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

/// `backstop init [DIR]`: the starting registry and policy, never over a
/// file that exists unless told to.
pub fn init(cfg: &Config, dir: Option<&std::path::Path>, force: bool) -> Result<()> {
    write_starter(cfg, dir, force, backstop::config::STARTER_TOOLS)
}

/// `init --from-mcp`: the starter policy, and tools.toml drafted from the
/// MCP server's tool list.
pub async fn init_from_mcp(cfg: &Config, dir: Option<&std::path::Path>, force: bool, server: &[String]) -> Result<()> {
    let tools = backstop::mcp::upstream_tools(server).await?;
    let text = backstop::mcp::draft::draft_registry(&tools, server);
    write_starter(cfg, dir, force, &text)
}

fn write_starter(cfg: &Config, dir: Option<&std::path::Path>, force: bool, tools: &str) -> Result<()> {
    let dir = dir.unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let files = [
        (dir.join("tools.toml"), tools),
        (dir.join("policy.toml"), backstop::config::STARTER_POLICY),
    ];
    if !force && let Some((p, _)) = files.iter().find(|(p, _)| p.exists()) {
        bail!("{} exists; nothing was written (--force overwrites it)", p.display());
    }
    for (p, text) in &files {
        std::fs::write(p, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
    }
    if cfg.json {
        print_json(
            &serde_json::json!({ "written": files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>() }),
        )?;
    } else {
        println!(
            "wrote {} and {}: edit them for your tools, then `backstop check` and `backstop load`",
            files[0].0.display(),
            files[1].0.display()
        );
    }
    Ok(())
}
