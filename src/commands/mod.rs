//! What each CLI subcommand does. `main.rs` only parses arguments and calls
//! these; each returns an error whose message is the one line the user sees.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use uuid::Uuid;

use crate::config::Config;
use crate::contract::{self, Scope};
use crate::db::Db;
use crate::output::{Table, brief, cut, money, time};
use crate::{policy, registry};

pub async fn open(cfg: &Config, app: &str, max_connections: u32) -> Result<Db> {
    Db::open(&cfg.db(app, max_connections)).await
}

pub fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim())
        .with_context(|| format!("{s:?} is not an action id (a UUID like 0b4f5c1e-8d2a-4c8e-9f3a-2d6e7b1c9a40)"))
}

pub async fn migrate(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop migrate", 2).await?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await?;
    if cfg.json {
        print_json(&serde_json::json!({ "database": db.label, "migrations_applied": applied }))?;
    } else {
        println!("{}: schema backstop is up to date ({applied} migrations)", db.label);
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

pub async fn pause(cfg: &Config, scope: Scope, target: Option<&str>, reason: &str) -> Result<()> {
    let db = open(cfg, "backstop pause", 1).await?;
    let p = contract::pause(&db.pool, scope, target, reason).await?;
    if cfg.json {
        print_json(&p)?;
    } else {
        let what = describe_scope(scope, target);
        if p.was_paused {
            println!(
                "{what} was already paused; pause recorded again at seq {} by {}",
                p.seq, cfg.operator
            );
        } else {
            println!(
                "{what} paused at seq {} by {}: no covered action can be allowed from now on",
                p.seq, cfg.operator
            );
        }
    }
    Ok(())
}

pub async fn resume(cfg: &Config, scope: Scope, target: Option<&str>, reason: &str) -> Result<()> {
    let db = open(cfg, "backstop resume", 1).await?;
    let seq = contract::resume(&db.pool, scope, target, reason).await?;
    if cfg.json {
        print_json(&serde_json::json!({ "seq": seq }))?;
    } else {
        println!(
            "{} resumed at seq {seq} by {}",
            describe_scope(scope, target),
            cfg.operator
        );
    }
    Ok(())
}

fn describe_scope(scope: Scope, target: Option<&str>) -> String {
    match scope {
        Scope::Fleet => "the fleet".to_string(),
        other => format!("{} {}", other.as_str(), target.unwrap_or("?")),
    }
}

pub async fn approve(cfg: &Config, id: &str, note: &str) -> Result<()> {
    let id = parse_uuid(id)?;
    let db = open(cfg, "backstop approve", 1).await?;
    let a = contract::approve(&db.pool, id, note).await?;
    if cfg.json {
        print_json(&a)?;
    } else if a.verdict == contract::Verdict::Allow {
        println!(
            "approved by {}: action {id} is allowed ({} of {} approvals)",
            cfg.operator, a.approvals, a.approvals_needed
        );
    } else {
        println!(
            "approved by {}: action {id} still needs {} more approval(s) from someone else",
            cfg.operator,
            a.approvals_needed - a.approvals
        );
    }
    Ok(())
}

pub async fn reject(cfg: &Config, id: &str, reason: &str) -> Result<()> {
    let id = parse_uuid(id)?;
    let db = open(cfg, "backstop reject", 1).await?;
    contract::reject(&db.pool, id, reason).await?;
    if cfg.json {
        print_json(&serde_json::json!({ "action_id": id, "verdict": "block" }))?;
    } else {
        println!("rejected by {}: action {id} is blocked", cfg.operator);
    }
    Ok(())
}

pub async fn seal(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop seal", 1).await?;
    let seals = contract::seal_all(&db.pool).await?;
    if cfg.json {
        print_json(&seals)?;
    } else if seals.is_empty() {
        println!("nothing new to seal");
    } else {
        let rows: i64 = seals.iter().map(|s| s.rows as i64).sum();
        println!(
            "sealed {rows} rows in {} seal(s); newest seal {}",
            seals.len(),
            seals.last().map(|s| s.seal_no).unwrap_or(0)
        );
    }
    Ok(())
}

pub async fn verify(
    cfg: &Config,
    no_seal: bool,
    export_anchor: Option<&std::path::Path>,
    anchor: Option<&std::path::Path>,
) -> Result<()> {
    // Read the anchor before touching the database: a bad file changes nothing.
    let anchor: Option<contract::verify::Anchor> = match anchor {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading the anchor {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not an anchor written by `backstop verify --export-anchor`",
                    p.display()
                )
            })?)
        }
        None => None,
    };
    let db = open(cfg, "backstop verify", 2).await?;
    let report = contract::verify::verify_anchored(&db.pool, !no_seal, true, anchor.as_ref()).await?;
    if cfg.json {
        print_json(&report)?;
    } else {
        print!("{}", render_verify(&report));
        if let Some(a) = &anchor
            && report.ok
        {
            println!(
                "verify: the chain still passes through seal {} anchored on {}",
                a.seal_no,
                a.exported_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
    if report.ok {
        if let Some(path) = export_anchor {
            match contract::verify::export_anchor(&db.pool, &db.label).await? {
                Some(a) => {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, serde_json::to_string_pretty(&a)? + "\n")
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "verify: anchor written to {} (seal {}, log up to seq {}); keep it outside the database",
                        path.display(),
                        a.seal_no,
                        a.to_seq
                    );
                }
                None => bail!("the log is empty: there is no chain head to anchor yet"),
            }
        }
        Ok(())
    } else {
        bail!(
            "the log does not verify: {} problem(s){}",
            report.problems.len(),
            report
                .first_bad_seq
                .map(|s| format!(", first bad seq {s}"))
                .unwrap_or_default()
        )
    }
}

pub fn render_verify(r: &contract::verify::VerifyReport) -> String {
    let mut out = String::new();
    if r.ok {
        out.push_str(&format!(
            "verify: OK: {} rows in {} seals match the log; {} rows not yet sealed; projections equal their rebuild from the log\n",
            r.rows_checked, r.seals_checked, r.unsealed_rows
        ));
        if let Some(cut) = r.cut {
            out.push_str(&format!(
                "  retention: {} sealed rows from before {} were archived and dropped, as the retention records say; \
                 projection rows from then were checked when archived (backstop verify --archive DIR checks an archive)\n",
                r.archived_rows,
                cut.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
    } else {
        out.push_str(&format!(
            "verify: FAILED: {} problem(s){}\n",
            r.problems.len(),
            r.first_bad_seq
                .map(|s| format!("; first bad seq {s}"))
                .unwrap_or_default()
        ));
        for p in &r.problems {
            out.push_str(&format!("  {:<12} {}\n", p.kind, p.detail));
        }
    }
    if let Some((no, hash)) = &r.head {
        out.push_str(&format!("  head: seal {no} {hash}\n"));
    }
    out
}

/// One line per log row, for people.
pub fn render_log(rows: &[contract::LogRow]) -> String {
    let mut t = Table::new(&["seq", "time", "actor", "event", "agent", "tool", "amount", "detail"]);
    for r in rows {
        t.row(vec![
            r.seq.to_string(),
            time(r.at),
            cut(&r.actor, 14),
            r.kind.clone(),
            r.agent.clone().unwrap_or_default(),
            r.tool.clone().unwrap_or_default(),
            money(r.amount),
            summarize(r),
        ]);
    }
    t.render()
}

/// The part of an event's detail a person wants to see first.
pub fn summarize(r: &contract::LogRow) -> String {
    let d = &r.detail;
    let s = match r.kind.as_str() {
        "allowed" | "held" | "blocked" => d["reason"].as_str().unwrap_or_default().to_string(),
        "approved" => format!(
            "{}/{} {}",
            d["approvals"],
            d["approvals_needed"],
            d["note"].as_str().unwrap_or("")
        ),
        "rejected" => d["note"].as_str().unwrap_or_default().to_string(),
        "executed" => match d.get("compensation") {
            Some(c) => format!(
                "compensation staged: {} {}",
                c["inverse_tool"].as_str().unwrap_or(""),
                brief(&c["inverse_params"], 60)
            ),
            None => r.result.as_ref().map(|v| brief(v, 60)).unwrap_or_default(),
        },
        "paused" | "resumed" => format!(
            "{} {}: {}",
            d["scope"].as_str().unwrap_or(""),
            d["target"].as_str().unwrap_or(""),
            d["reason"].as_str().unwrap_or("")
        ),
        "compensation_requested" => format!(
            "{} via {}",
            d["reason"].as_str().unwrap_or(""),
            d["inverse_tool"].as_str().unwrap_or("")
        ),
        "compensation_plan" => format!("{} requested; {}", d["requested"], brief(&d["not_requested"], 60)),
        "finding" => format!(
            "{} {}: {}",
            d["severity"].as_str().unwrap_or(""),
            d["kind"].as_str().unwrap_or(""),
            brief(&d["evidence"], 60)
        ),
        "policy_loaded" | "registry_loaded" => {
            format!("version {} from {}", d["version"], d["source"].as_str().unwrap_or(""))
        }
        _ => brief(d, 70),
    };
    cut(&s, 90)
}

pub async fn log(cfg: &Config, limit: i64, follow: bool) -> Result<()> {
    let db = open(cfg, "backstop log", 2).await?;
    let (rows, mut tail) = contract::tail::Tail::with_history(&db.pool, limit, 1000).await?;
    emit_rows(cfg, &rows)?;
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        match tail.poll(&db.pool).await {
            Ok(mut rows) => {
                rows.sort_by_key(|r| r.seq);
                emit_rows(cfg, &rows)?;
            }
            // The cursor did not move: the next poll resumes exactly here.
            Err(e) => eprintln!("backstop log: {e}; retrying"),
        }
    }
}

fn emit_rows(cfg: &Config, rows: &[contract::LogRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if cfg.json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", render_log(rows));
    }
    Ok(())
}

/// A point in time: RFC 3339 (2026-11-28T12:00:00Z), "now", or a duration ago (15m, 2h).
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    if s == "now" {
        return Ok(chrono::Utc::now());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match crate::filecheck::parse_duration(s) {
        Ok(secs) => Ok(chrono::Utc::now() - chrono::Duration::milliseconds((secs * 1000.0) as i64)),
        Err(_) => {
            bail!("{s:?} is not a time: use RFC 3339 (2026-11-28T12:00:00Z), now, or a duration ago like 15m or 2h")
        }
    }
}

pub struct CompensateArgs {
    pub action_ids: Vec<String>,
    pub agent: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub correlation: Option<String>,
    pub reason: Option<String>,
    pub dry_run: bool,
}

pub async fn compensate(cfg: &Config, args: &CompensateArgs) -> Result<()> {
    use crate::compensation::{self, Selection};
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
        println!(
            "plan {plan_id}: {requested} compensation(s) requested by {}; a worker (backstop worker) runs them",
            cfg.operator
        );
    }
    Ok(())
}

pub async fn worker(cfg: &Config, opts: crate::compensation::worker::WorkerOptions) -> Result<()> {
    let db = open(cfg, "backstop worker", (opts.batch as u32).max(2) + 2).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let housekeeping = crate::housekeeping::spawn(db.pool.clone());
    eprintln!("backstop worker {}: running on {} (Ctrl-C stops)", opts.name, db.label);
    let name = opts.name.clone();
    let handle = tokio::spawn(crate::compensation::worker::run(db.pool.clone(), opts, rx));
    tokio::signal::ctrl_c().await?;
    let _ = tx.send(true);
    let stats = handle.await??;
    housekeeping.abort();
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

pub async fn supervise(cfg: &Config, mut opts: crate::supervisor::SupervisorOptions, watch_files: bool) -> Result<()> {
    // Decisions are recorded as the supervisor, whoever started it.
    let mut c = cfg.clone();
    c.operator = crate::supervisor::ACTOR.to_string();
    let db = open(&c, "backstop supervise", 8).await?;
    if let Some(u) = &cfg.read_url {
        opts.read = Some(connect_replica(u, 2).await?);
    }
    let mut reload = None;
    if watch_files {
        let files = crate::policy::watch::ConfigFiles {
            tools: cfg.tools.clone(),
            policy: cfg.policy.clone(),
        };
        for e in crate::policy::watch::reload_once(&db.pool, &files, &opts.name).await {
            eprintln!("backstop supervise {}: {e:?}", opts.name);
        }
        let mut rx = crate::policy::watch::spawn(db.pool.clone(), files, opts.name.clone())?;
        let name = opts.name.clone();
        reload = Some(tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                eprintln!("backstop supervise {name}: {e:?}");
            }
        }));
    }
    let housekeeping = crate::housekeeping::spawn(db.pool.clone());
    eprintln!(
        "backstop supervise {}: running on {} (Ctrl-C stops)",
        opts.name, db.label
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(crate::supervisor::run(db.pool.clone(), opts.clone(), rx));
    tokio::signal::ctrl_c().await?;
    let _ = tx.send(true);
    let stats = handle.await??;
    housekeeping.abort();
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

pub use crate::tui::state::FindingRow;

pub async fn findings(cfg: &Config, all: bool) -> Result<()> {
    let db = open(cfg, "backstop findings", 1).await?;
    let rows: Vec<FindingRow> = sqlx::query_as(
        "SELECT finding_id, kind, severity, agent, action_id, rule, status, count, last_at, detail FROM backstop.findings \
          WHERE $1 OR status <> 'resolved' ORDER BY last_at DESC LIMIT 500",
    )
    .bind(all)
    .fetch_all(&db.pool)
    .await?;
    if cfg.json {
        return print_json(&rows);
    }
    let mut t = Table::new(&["finding", "kind", "severity", "agent", "rule", "status", "seen", "last"]);
    for r in &rows {
        t.row(vec![
            r.finding_id.to_string(),
            r.kind.clone(),
            r.severity.clone(),
            r.agent.clone().unwrap_or_default(),
            r.rule.clone().unwrap_or_default(),
            r.status.clone(),
            r.count.to_string(),
            time(r.last_at),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub async fn finding_status(cfg: &Config, id: &str, note: &str, resolve: bool) -> Result<()> {
    let id = Uuid::parse_str(id.trim()).with_context(|| format!("{id:?} is not a finding id (a UUID)"))?;
    let db = open(cfg, "backstop findings", 1).await?;
    if resolve {
        contract::resolve_finding(&db.pool, id, note).await?;
    } else {
        contract::acknowledge_finding(&db.pool, id, note).await?;
    }
    if cfg.json {
        print_json(
            &serde_json::json!({"finding_id": id, "status": if resolve { "resolved" } else { "acknowledged" }}),
        )?;
    } else {
        println!(
            "finding {id} {} by {}",
            if resolve { "resolved" } else { "acknowledged" },
            cfg.operator
        );
    }
    Ok(())
}

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

/// The contract's functions, in the order `backstop roles` shows them.
pub const CONTRACT_FUNCTIONS: &[&str] = &[
    "propose",
    "decision",
    "record_result",
    "report_signal",
    "approve",
    "reject",
    "pause",
    "resume",
    "request_compensation",
    "compensation_plan",
    "acknowledge_finding",
    "resolve_finding",
    "load_registry",
    "load_policy",
    "report_config_rejected",
    "record_drill",
    "claim_compensations",
    "finish_compensation",
    "finish_compensations",
    "schedule_reviews",
    "claim_reviews",
    "complete_review",
    "raise_finding",
    "add_rollups",
    "expire_held",
    "seal",
    "ensure_log_partitions",
    "tail",
];

/// The duty × function matrix as the database has it: (duty, role, function, allowed).
pub async fn role_matrix(pool: &sqlx::PgPool) -> Result<Vec<(String, String, String, bool)>> {
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT d.duty, d.role_name, f.name,
                bool_or(has_function_privilege(d.role_name, p.oid, 'EXECUTE'))
           FROM backstop.duties d
          CROSS JOIN unnest($1::text[]) WITH ORDINALITY f(name, ord)
           JOIN pg_proc p ON p.proname = f.name AND p.pronamespace = 'backstop'::regnamespace
          WHERE d.duty <> 'owner'
          GROUP BY d.duty, d.role_name, f.name, f.ord
          ORDER BY array_position(ARRAY['agent','viewer','approver','operator','commander','supervisor','worker'], d.duty), f.ord",
    )
    .bind(CONTRACT_FUNCTIONS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// `backstop roles`: who may call what.
pub async fn roles(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop roles", 2).await?;
    let m = role_matrix(&db.pool).await?;
    if cfg.json {
        let v: Vec<_> = m
            .iter()
            .map(|(d, r, f, a)| serde_json::json!({"duty": d, "role": r, "function": f, "allowed": a}))
            .collect();
        return print_json(&v);
    }
    let mut duties: Vec<(String, String)> = Vec::new();
    for (d, r, _, _) in &m {
        if !duties.iter().any(|x| &x.0 == d) {
            duties.push((d.clone(), r.clone()));
        }
    }
    print!("{:<22}", "function");
    for (d, _) in &duties {
        print!(" {d:>10}");
    }
    println!();
    for f in CONTRACT_FUNCTIONS {
        print!("{f:<22}");
        for (d, _) in &duties {
            let ok = m.iter().any(|(dd, _, ff, a)| dd == d && ff == f && *a);
            print!(" {:>10}", if ok { "yes" } else { "-" });
        }
        println!();
    }
    println!(
        "\nroles: {}",
        duties
            .iter()
            .map(|(d, r)| format!("{d} = {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("viewer also reads every table; every duty but agent includes viewer.");
    Ok(())
}

/// `backstop grant DUTY LOGIN`: make LOGIN a member of DUTY's role.
pub async fn grant(cfg: &Config, duty: &str, login: &str) -> Result<()> {
    let db = open(cfg, "backstop grant", 2).await?;
    let role: Option<String> = sqlx::query_scalar("SELECT role_name FROM backstop.duties WHERE duty = $1")
        .bind(duty)
        .fetch_optional(&db.pool)
        .await?;
    let Some(role) = role else {
        let all: Vec<String> = sqlx::query_scalar("SELECT duty FROM backstop.duties ORDER BY 1")
            .fetch_all(&db.pool)
            .await?;
        bail!("no duty {duty:?}; the duties are {}", all.join(", "));
    };
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(login)
        .fetch_one(&db.pool)
        .await?;
    if !exists {
        bail!("no login {login:?} on this server: create it first (CREATE ROLE \"{login}\" LOGIN PASSWORD ...)");
    }
    // Identifiers cannot be bound; quote_ident does the quoting.
    let sql: String = sqlx::query_scalar("SELECT format('GRANT %I TO %I', $1::text, $2::text)")
        .bind(&role)
        .bind(login)
        .fetch_one(&db.pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&db.pool)
        .await
        .with_context(|| format!("granting {role} to {login}"))?;
    println!("{login} now has the {duty} duty ({role})");
    Ok(())
}

/// Connect to a replica: no migrations (it is read-only), the same session settings.
pub async fn connect_replica(url: &str, max: u32) -> Result<sqlx::PgPool> {
    let opts: sqlx::postgres::PgConnectOptions = url
        .parse()
        .with_context(|| "the replica URL is not a valid postgres:// URL".to_string())?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max)
        .connect_with(opts.options([("jit", "off")]))
        .await
        .context("connecting to the replica")?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('backstop.seals') IS NOT NULL")
        .fetch_one(&pool)
        .await?;
    if !migrated {
        bail!("the replica has no backstop schema: is it a replica of this database?");
    }
    Ok(pool)
}

/// `backstop verify --against URL`.
pub async fn verify_replica(cfg: &Config, url: &str) -> Result<()> {
    let db = open(cfg, "backstop verify", 2).await?;
    let replica = connect_replica(url, 2).await?;
    let r = contract::verify::check_replica(&db.pool, &replica).await?;
    if cfg.json {
        print_json(&r)?;
    } else {
        let head = |h: &Option<(i64, String)>| {
            h.as_ref()
                .map(|(n, x)| format!("seal {n} {}", &x[..x.len().min(16)]))
                .unwrap_or_else(|| "no seal".into())
        };
        println!("replica: {}", render_verify(&r.replica).trim_end());
        println!(
            "replica: head {} vs primary {}; {}; {} seal(s) behind",
            head(&r.replica_head),
            head(&r.primary_head),
            if r.same_chain {
                "the same chain"
            } else {
                "A DIFFERENT CHAIN"
            },
            r.seals_behind
        );
    }
    if r.ok() {
        Ok(())
    } else if !r.same_chain {
        bail!("the replica's chain head is not the primary's: one of them was rewritten")
    } else {
        bail!("the replica does not verify")
    }
}

/// `backstop archive --before DATE --to DIR [--no-drop]`.
pub async fn archive(
    cfg: &Config,
    before: chrono::DateTime<chrono::Utc>,
    to: &std::path::Path,
    drop: bool,
) -> Result<()> {
    let db = open(cfg, "backstop archive", 2).await?;
    let out = crate::archive::archive(&db.pool, &db.label, before, to, drop, !cfg.json).await?;
    if cfg.json {
        return print_json(&out);
    }
    let cut = out.plan.cut.map(|c| c.to_rfc3339()).unwrap_or_default();
    match (&out.dir, &out.check) {
        (Some(dir), Some(check)) => println!(
            "archive: {} ({} seals from {} to {}, {} rows), read back and verified",
            dir.display(),
            check.seals,
            check.manifest.first_seal,
            check.manifest.last_seal,
            check.rows
        ),
        _ => println!("archive: every row before {cut} is in an earlier archive already: nothing new was written"),
    }
    match &out.dropped {
        Some(d) => {
            println!(
                "archive: dropped {} partition(s) before {cut} ({} rows): {}",
                d.partitions.len(),
                d.rows,
                d.partitions.join(", ")
            );
            println!(
                "archive: {} row(s) that current state still needs were carried forward; the drop is log row {} ({:.0} ms)",
                d.carried, d.seq, d.millis
            );
        }
        None => println!(
            "archive: --no-drop: the {} partition(s) before {cut} stay in the log",
            out.plan.partitions.len()
        ),
    }
    Ok(())
}

/// `backstop verify --archive DIR`.
pub async fn verify_archive(cfg: &Config, dir: &std::path::Path) -> Result<()> {
    // On its own first: an archive must verify without any database.
    let offline = crate::archive::verify_dir(dir)?;
    let check = match open(cfg, "backstop verify", 2).await {
        Ok(db) => crate::archive::verify_against(&db.pool, dir).await?,
        Err(e) => {
            eprintln!("verify: no database to link the archive to ({e:#}); checked it on its own");
            offline
        }
    };
    if cfg.json {
        print_json(&check)?;
    } else if check.problems.is_empty() {
        println!(
            "verify: archive OK: {} rows in seals {} to {} match their seals and the chain{}",
            check.rows,
            check.manifest.first_seal,
            check.manifest.last_seal,
            match check.linked {
                Some(true) => "; the live log still holds its head",
                _ => "",
            }
        );
    } else {
        for p in &check.problems {
            println!("verify: archive: {p}");
        }
    }
    if check.problems.is_empty() {
        Ok(())
    } else {
        bail!("the archive does not verify: {} problem(s)", check.problems.len())
    }
}
