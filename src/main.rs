//! The `backstop` command line: argument parsing only. What each command
//! does lives in `commands`, the benchmarks in `bench`; both are this
//! binary's and call the library (`backstop::...`).

mod bench;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use backstop::config::Config;
use backstop::contract::Scope;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Surgical recovery for fleets of AI agents, on PostgreSQL",
    long_about = "Surgical recovery for fleets of AI agents, on PostgreSQL.\n\n\
        Without DATABASE_URL, Backstop starts a private, throwaway PostgreSQL cluster from the \
        binaries on this machine and removes it on exit (--keep-db DIR keeps it)."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// The control room without acting keys (connects with BACKSTOP_READONLY_URL when set).
    #[arg(long)]
    readonly: bool,
    /// Accepted and ignored: the room never loads or watches tools.toml and policy.toml.
    #[arg(long, hide = true)]
    no_watch: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct Global {
    /// PostgreSQL server to use (required: only the demo, the benchmarks and --embedded start a private throwaway cluster).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// A read replica of that server: the room and the supervisor read from it (writes still go to DATABASE_URL).
    #[arg(long, env = "BACKSTOP_READ_URL", global = true, hide_env_values = true)]
    read_url: Option<String>,
    /// Your name in the action log (default: the OS user).
    #[arg(long, env = "BACKSTOP_OPERATOR", global = true)]
    operator: Option<String>,
    /// Keep the embedded cluster's data in DIR (reused on the next run).
    #[arg(long, value_name = "DIR", global = true)]
    keep_db: Option<PathBuf>,
    /// Without DATABASE_URL, start a private throwaway cluster (the demo and the
    /// benchmarks do so by themselves; anything done there is not real).
    #[arg(long, global = true)]
    embedded: bool,
    /// Print data as JSON.
    #[arg(long, global = true)]
    json: bool,
}

/// Where the registry and the policy are (default: tools.toml and policy.toml here).
#[derive(Args, Clone, Default)]
struct Files {
    /// The tool registry file.
    #[arg(long, value_name = "FILE", env = "BACKSTOP_TOOLS")]
    tools: Option<PathBuf>,
    /// The policy file.
    #[arg(long, value_name = "FILE", env = "BACKSTOP_POLICY")]
    policy: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// A fleet of twelve agents at work, five scripted incidents, the supervisor and a
    /// compensation worker in-process, and the control room in front.
    Demo {
        /// Makes a run reproducible: the same seed, the same incidents and outcome.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Demo seconds per real second (0.1 to 20): 4 plays the story four times faster.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// No room: run the story, print the incident timeline and the outcome (exit 1 if it did not play out).
        #[arg(long)]
        headless: bool,
        /// Instead: the short walkthrough of the contract (allow, hold and approve, pause, compensate).
        #[arg(long, conflicts_with_all = ["headless"])]
        script: bool,
    },
    /// A tabletop exercise against a live fleet: a drill agent misbehaves; the response is scored from the log.
    Drill {
        /// The drill agent's name (default: drill-refund-bot-XXXX, new each time).
        #[arg(long)]
        agent: Option<String>,
        /// Refunds per minute the drill agent attempts.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Stop after this long even if the response is not complete (e.g. 3m).
        #[arg(long, default_value = "3m")]
        timeout: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Drive agents through the SQL contract at a target rate, with realistic payloads.
    Simulate {
        /// Number of agents.
        #[arg(long, default_value_t = 12)]
        agents: usize,
        /// Target proposals per second, across all agents.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// How long (e.g. 60s, 10m); Ctrl-C stops earlier.
        #[arg(long, default_value = "60s")]
        duration: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Apply the database migrations (idempotent).
    Migrate,
    /// Print which duty (role) may call which contract function.
    Roles,
    /// Give a login a duty: agent, viewer, approver, operator, commander, supervisor or worker.
    Grant { duty: String, login: String },
    /// Check tools.toml and policy.toml; change nothing.
    Check {
        /// The registry and the policy to check (default: --tools and --policy, or tools.toml and policy.toml here).
        files: Vec<PathBuf>,
        #[command(flatten)]
        paths: Files,
    },
    /// Write a starting tools.toml and policy.toml (commented, loadable on any database) into DIR.
    Init {
        /// Where to write them (default: here).
        dir: Option<PathBuf>,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
        /// Draft tools.toml from an MCP server's tool list: backstop init --from-mcp -- CMD ARGS.
        #[arg(long, requires = "server")]
        from_mcp: bool,
        /// The MCP server's command and arguments (with --from-mcp).
        #[arg(last = true, value_name = "CMD", id = "server")]
        server: Vec<String>,
    },
    /// Check and load tools.toml and policy.toml as new versions (where they changed), both or neither.
    Load {
        #[command(flatten)]
        files: Files,
    },
    /// Pause the fleet, one agent, or one tool: no covered action is allowed until resumed.
    Pause(ScopeArgs),
    /// Resume what a pause stopped.
    Resume(ScopeArgs),
    /// Approve a held action: says what it approves and runs the policy's
    /// checks on it first; a check that fails stops it (nothing changed)
    /// unless --over-failing-checks.
    Approve {
        action_id: String,
        /// Why (recorded in the log); `--reason` works too, as for reject.
        #[arg(long, default_value = "", alias = "reason")]
        note: String,
        /// Approve even when one of the policy's checks fails on the action
        /// now, or cannot run (the approval's note in the log names them).
        #[arg(long)]
        over_failing_checks: bool,
    },
    /// Reject a held action.
    Reject {
        action_id: String,
        /// Why (recorded in the log and shown to the agent).
        #[arg(long, alias = "note")]
        reason: String,
    },
    /// Plan and request the rollback of actions (and the actions that depend on them).
    Compensate {
        /// Action ids to compensate.
        action_ids: Vec<String>,
        /// Or: every action of this agent in a time window.
        #[arg(long, conflicts_with = "correlation")]
        agent: Option<String>,
        /// Window start (RFC 3339, or a duration ago like 15m). Default: 1h.
        #[arg(long, requires = "agent")]
        since: Option<String>,
        /// Window end (RFC 3339, now, or a duration ago). Default: now.
        #[arg(long, requires = "agent")]
        until: Option<String>,
        /// Or: every action on this correlation id.
        #[arg(long)]
        correlation: Option<String>,
        /// Why (recorded in the log; required unless --dry-run).
        #[arg(long)]
        reason: Option<String>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only the selected actions that called this tool.
        #[arg(long)]
        tool: Option<String>,
    },
    /// An MCP gateway on stdio: serves the upstream MCP server's tools, every call through Backstop.
    ///
    /// In an agent's MCP configuration: backstop mcp --agent refunds-bot -- python3 payments_server.py
    Mcp {
        /// The agent every call is proposed as (this login must be it, or mapped to it).
        #[arg(long)]
        agent: String,
        /// How long a held call waits for approval before the agent is told it is held (e.g. 30s, 5m).
        #[arg(long, default_value = "60s")]
        hold_wait: String,
        /// The upstream MCP server's command and arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Run requested compensations (exactly once each) until Ctrl-C.
    Worker {
        /// This worker's name in the log (default: worker-HOST-PID).
        #[arg(long)]
        name: Option<String>,
        /// Compensations claimed and run at once.
        #[arg(long, default_value_t = 16)]
        batch: i32,
        /// How long a claim is held before another worker may take it over (e.g. 30s).
        #[arg(long, default_value = "30s")]
        lease: String,
        /// Only these inverse tools, comma-separated.
        #[arg(long, value_delimiter = ',')]
        tools: Option<Vec<String>>,
        /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9187) at /metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Check the log against its seals, and every projection against its rebuild from the log.
    Verify {
        /// Check only what is already sealed (do not seal new rows first).
        #[arg(long)]
        no_seal: bool,
        /// After verifying, write the chain head to FILE, to keep outside the database.
        #[arg(long, value_name = "FILE")]
        export_anchor: Option<PathBuf>,
        /// Also prove the chain still passes through the head saved in FILE (catches a wholesale rewrite).
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// Also verify this replica on its own and that its chain head is the primary's.
        #[arg(long, value_name = "URL")]
        against: Option<String>,
        /// Instead: check an archive written by `backstop archive` on its own, and its link to this log.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["against", "anchor", "export_anchor"])]
        archive: Option<PathBuf>,
    },
    /// Retention: export the log's partitions that end by DATE (whole seals, compressed, verifiable on
    /// their own), verify the export, then drop those partitions.
    Archive {
        /// An RFC 3339 time or a date (YYYY-MM-DD, midnight UTC); the cut is the last partition end at or before it.
        #[arg(long)]
        before: String,
        /// Where the archive's directory is created.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Export and verify only; keep the partitions in the log.
        #[arg(long)]
        no_drop: bool,
    },
    /// Seal the rows committed since the last seal.
    Seal,
    /// Run the supervisor: delayed reviews, drift, complaint spikes, automatic pause and rollback (until Ctrl-C).
    Supervise {
        /// This instance's name (default: supervisor-PID); several may run at once.
        #[arg(long)]
        name: Option<String>,
        /// Do not load and watch tools.toml and policy.toml (use the versions in the database).
        #[arg(long)]
        no_watch: bool,
        /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9186) at /metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        files: Files,
    },
    /// List open findings (--all: resolved ones too).
    Findings {
        #[arg(long)]
        all: bool,
    },
    /// Acknowledge a finding.
    Ack {
        finding_id: String,
        #[arg(long)]
        note: String,
    },
    /// Resolve a finding.
    Resolve {
        finding_id: String,
        #[arg(long)]
        note: String,
    },
    /// Run a benchmark; each prints its figures beside a baseline from the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Print the most recent log rows (and follow new ones with --follow).
    Log {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Every benchmark, one table, each figure beside its baseline (--quick: a couple of minutes, for CI).
    All {
        #[arg(long)]
        quick: bool,
    },
    /// How long until 1,000 agents all see a fleet pause, and how many actions slip through (must be 0).
    Pause {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
    },
    /// propose + record_result throughput vs the floor (the same rows by plain SQL) and a raw INSERT.
    Gateway {
        /// Agent counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        agents: Vec<usize>,
        /// Seconds per measurement, cut into rounds of 2 s or more (at most 5) that take turns with the baselines.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Instead of the table: the gateway at the first --agents count on a log
        /// of this many rows behind a retention cut, against an empty log (the
        /// full suite's figure uses 10000000 rows and 4 agents).
        #[arg(long)]
        log_rows: Option<i64>,
    },
    /// The control room: commit-to-screen latency, first frame, memory and idle CPU with a large log.
    Room {
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 10_000_000)]
        log_rows: i64,
    },
    /// The drift detector's false-positive rate on a steady agent and its delay on a shifted one (simulation).
    Drift {
        /// Decisions per agent per minute.
        #[arg(long, default_value_t = 20)]
        per_minute: u64,
    },
    /// Review lag at a target action rate, and a drift pass over 100 agents on a large log.
    Supervisor {
        /// Actions per second to drive through the contract.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Seconds of load.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Rows in the log for the drift pass.
        #[arg(long, default_value_t = 10_000_000)]
        log_rows: i64,
        /// Serve the supervisor's /metrics and scrape it every second during the load.
        #[arg(long)]
        metrics: bool,
    },
    /// What a retention cut costs: archive export rate, and agents' latency while partitions are dropped.
    Retention {
        /// Rows in the partitions to cut.
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
    },
    /// Compensations per second (1 and 4 workers, SQL executor) and the time to plan a 10,000-action rollback.
    Compensation {
        /// Compensations per measurement.
        #[arg(long, default_value_t = 10_000)]
        count: i64,
    },
}

#[derive(Args)]
struct ScopeArgs {
    /// fleet, agent or tool
    scope: Scope,
    /// The agent or tool name (not for fleet).
    target: Option<String>,
    /// Why (recorded in the log).
    #[arg(long)]
    reason: Option<String>,
}

/// The config with a command's --tools / --policy.
fn with_files(mut cfg: Config, f: Files) -> Config {
    cfg.tools = f.tools;
    cfg.policy = f.policy;
    cfg
}

fn parse_secs(flag: &str, s: &str) -> anyhow::Result<std::time::Duration> {
    let secs = backstop::filecheck::parse_duration(s).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    if secs <= 0.0 {
        anyhow::bail!("{flag} must be longer than 0s");
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| anyhow::anyhow!("{flag}: {s:?} is too long"))
}

fn parse_time(flag: &str, s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| anyhow::anyhow!("{flag}: {s:?} is neither a date (2026-01-31) nor an RFC 3339 time"))
}

/// A benchmark's report: JSON with --json, else its table.
fn report<T: serde::Serialize>(cfg: &Config, r: &T, render: fn(&T) -> String) -> anyhow::Result<()> {
    if cfg.json {
        backstop::output::print_json(r)
    } else {
        print!("{}", render(r));
        Ok(())
    }
}

/// The load the room and supervisor benchmarks share.
fn check_load(rate: f64, seconds: f64, log_rows: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (10.0..=100_000.0).contains(&rate),
        "--rate must be between 10 and 100000"
    );
    anyhow::ensure!(
        (1.0..=3600.0).contains(&seconds),
        "--seconds must be between 1 and 3600"
    );
    anyhow::ensure!(
        (1000..=100_000_000).contains(&log_rows),
        "--log-rows must be between 1000 and 100000000"
    );
    Ok(())
}

fn main() -> ExitCode {
    // `backstop log | head` ends quietly when head has read enough, as any
    // command-line tool does, instead of panicking on the closed pipe.
    // SAFETY: set before any thread starts; the default disposition runs no
    // handler code.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let cli = Cli::parse();
    let g = cli.global;
    let cfg = Config {
        database_url: g.database_url.filter(|u| !u.is_empty()),
        read_url: g.read_url.filter(|u| !u.is_empty()),
        operator: g
            .operator
            .filter(|o| !o.is_empty())
            .unwrap_or_else(Config::default_operator),
        keep_db: g.keep_db,
        embedded: g.embedded,
        tools: None,
        policy: None,
        json: g.json,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backstop: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cfg, cli.command, cli.readonly));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A cause that repeats what was already said is said once.
            let mut said = String::new();
            for c in e.chain().map(|c| c.to_string()) {
                if said.contains(c.as_str()) {
                    continue;
                }
                if !said.is_empty() {
                    said.push_str(": ");
                }
                said.push_str(&c);
            }
            eprintln!("backstop: {said}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config, command: Option<Command>, readonly: bool) -> anyhow::Result<()> {
    match command {
        None => backstop::tui::open_and_run(&cfg, readonly).await,
        Some(Command::Demo {
            seed,
            speed,
            headless,
            script,
        }) => {
            if script {
                backstop::demo::run_script(&cfg).await
            } else {
                let opts = backstop::demo::scenario::DemoOptions {
                    seed,
                    speed,
                    headless,
                    ..Default::default()
                };
                backstop::demo::scenario::run(&cfg, opts).await
            }
        }
        Some(Command::Drill {
            agent,
            rate,
            timeout,
            seed,
        }) => {
            let timeout = parse_secs("--timeout", &timeout)?;
            if !(rate > 0.0 && rate <= 6000.0) {
                anyhow::bail!("--rate must be between 0 and 6000 refunds per minute; got {rate}");
            }
            commands::drill(
                &cfg,
                backstop::demo::drill::DrillOptions {
                    agent,
                    per_minute: rate,
                    timeout,
                    seed,
                },
            )
            .await
        }
        Some(Command::Simulate {
            agents,
            rate,
            duration,
            seed,
        }) => {
            let duration = parse_secs("--duration", &duration)?;
            if agents == 0 || agents > 10_000 {
                anyhow::bail!("--agents must be between 1 and 10000; got {agents}");
            }
            if !(rate > 0.0 && rate <= 100_000.0) {
                anyhow::bail!("--rate must be between 0 and 100000 proposals per second; got {rate}");
            }
            commands::simulate(&cfg, agents, rate, duration, seed).await
        }
        Some(Command::Migrate) => commands::migrate(&cfg).await,
        Some(Command::Roles) => commands::roles(&cfg).await,
        Some(Command::Archive { before, to, no_drop }) => {
            let before = parse_time("--before", &before)?;
            commands::archive(&cfg, before, &to, !no_drop).await
        }
        Some(Command::Grant { duty, login }) => commands::grant(&cfg, &duty, &login).await,
        Some(Command::Check { files, paths }) => {
            let cfg = with_files(cfg, paths);
            let (tools, policy) = match files.as_slice() {
                [] => cfg.files()?,
                [a, b] => (a.clone(), b.clone()),
                _ => anyhow::bail!(
                    "check takes no files, or the registry and the policy: backstop check tools.toml policy.toml"
                ),
            };
            commands::check(&cfg, &tools, &policy).await
        }
        Some(Command::Init {
            dir,
            force,
            from_mcp,
            server,
        }) => {
            if from_mcp {
                commands::init_from_mcp(&cfg, dir.as_deref(), force, &server).await
            } else {
                anyhow::ensure!(server.is_empty(), "a command after -- is the MCP server of --from-mcp");
                commands::init(&cfg, dir.as_deref(), force)
            }
        }
        Some(Command::Load { files }) => commands::load(&with_files(cfg, files)).await,
        Some(Command::Pause(s)) => {
            let target = scope_target(&s)?;
            let reason = s
                .reason
                .clone()
                .unwrap_or_else(|| format!("paused from the command line by {}", cfg.operator));
            commands::pause(&cfg, s.scope, target.as_deref(), &reason).await
        }
        Some(Command::Resume(s)) => {
            let target = scope_target(&s)?;
            let reason = s
                .reason
                .clone()
                .unwrap_or_else(|| format!("resumed from the command line by {}", cfg.operator));
            commands::resume(&cfg, s.scope, target.as_deref(), &reason).await
        }
        Some(Command::Approve {
            action_id,
            note,
            over_failing_checks,
        }) => commands::approve(&cfg, &action_id, &note, over_failing_checks).await,
        Some(Command::Reject { action_id, reason }) => commands::reject(&cfg, &action_id, &reason).await,
        Some(Command::Compensate {
            action_ids,
            agent,
            since,
            until,
            correlation,
            reason,
            dry_run,
            tool,
        }) => {
            let args = commands::CompensateArgs {
                tool,
                action_ids,
                agent,
                since,
                until,
                correlation,
                reason,
                dry_run,
            };
            commands::compensate(&cfg, &args).await
        }
        Some(Command::Mcp {
            agent,
            hold_wait,
            command,
        }) => {
            let wait =
                backstop::filecheck::parse_duration(&hold_wait).map_err(|e| anyhow::anyhow!("--hold-wait: {e}"))?;
            anyhow::ensure!(
                (0.0..=86400.0).contains(&wait),
                "--hold-wait must be between 0s and 24h"
            );
            commands::mcp(
                &cfg,
                backstop::mcp::GatewayOptions {
                    agent,
                    hold_wait: std::time::Duration::from_secs_f64(wait),
                    poll: std::time::Duration::from_secs(10),
                    command,
                },
            )
            .await
        }
        Some(Command::Worker {
            name,
            batch,
            lease,
            tools,
            metrics,
        }) => {
            anyhow::ensure!((1..=1000).contains(&batch), "--batch must be between 1 and 1000");
            let lease = backstop::filecheck::parse_duration(&lease).map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
            anyhow::ensure!((1.0..=3600.0).contains(&lease), "--lease must be between 1s and 1h");
            let mut opts = backstop::compensation::worker::WorkerOptions::named(
                &name.unwrap_or_else(|| format!("worker-{}", std::process::id())),
            );
            opts.batch = batch;
            opts.lease = std::time::Duration::from_secs_f64(lease);
            opts.tools = tools;
            commands::worker(&cfg, opts, metrics).await
        }
        Some(Command::Verify {
            no_seal,
            export_anchor,
            anchor,
            against,
            archive,
        }) => {
            if let Some(dir) = archive {
                return commands::verify_archive(&cfg, &dir).await;
            }
            commands::verify(&cfg, no_seal, export_anchor.as_deref(), anchor.as_deref()).await?;
            match against {
                Some(url) => commands::verify_replica(&cfg, &url).await,
                None => Ok(()),
            }
        }
        Some(Command::Seal) => commands::seal(&cfg).await,
        Some(Command::Log { limit, follow }) => commands::log(&cfg, limit, follow).await,
        Some(Command::Supervise {
            name,
            no_watch,
            metrics,
            files,
        }) => {
            let cfg = with_files(cfg, files);
            let opts = backstop::supervisor::SupervisorOptions::named(
                &name.unwrap_or_else(|| format!("supervisor-{}", std::process::id())),
            );
            commands::supervise(&cfg, opts, !no_watch, metrics).await
        }
        Some(Command::Findings { all }) => commands::findings(&cfg, all).await,
        Some(Command::Ack { finding_id, note }) => commands::finding_status(&cfg, &finding_id, &note, false).await,
        Some(Command::Resolve { finding_id, note }) => commands::finding_status(&cfg, &finding_id, &note, true).await,
        Some(Command::Bench { which }) => match which {
            BenchCommand::All { quick } => {
                let r = bench::suite::run(&cfg, quick, !cfg.json).await?;
                report(&cfg, &r, bench::suite::render)?;
                anyhow::ensure!(
                    r.regressions.is_empty(),
                    "{} benchmark ratio(s) regressed against bench/floors.toml:\n  {}",
                    r.regressions.len(),
                    r.regressions.join("\n  ")
                );
                Ok(())
            }
            BenchCommand::Retention { rows } => {
                anyhow::ensure!(
                    (1_000..=100_000_000).contains(&rows),
                    "--rows must be between 1000 and 100000000"
                );
                let r = bench::retention::run(&cfg, rows, !cfg.json).await?;
                report(&cfg, &r, bench::retention::render)
            }
            BenchCommand::Pause { agents } => {
                anyhow::ensure!((1..=20_000).contains(&agents), "--agents must be between 1 and 20000");
                let r = bench::pause::run(&cfg, agents, 5.0, !cfg.json).await?;
                report(&cfg, &r, bench::pause::render)
            }
            BenchCommand::Gateway {
                agents,
                seconds,
                log_rows,
            } => {
                anyhow::ensure!(
                    !agents.is_empty() && agents.iter().all(|a| (1..=256).contains(a)),
                    "--agents takes counts from 1 to 256"
                );
                anyhow::ensure!(
                    (0.5..=3600.0).contains(&seconds),
                    "--seconds must be between 0.5 and 3600"
                );
                if let Some(rows) = log_rows {
                    anyhow::ensure!(
                        (1_000..=100_000_000).contains(&rows),
                        "--log-rows must be between 1000 and 100000000"
                    );
                    let r = bench::gateway::run_prefilled(&cfg, agents[0], seconds, rows, !cfg.json).await?;
                    return report(&cfg, &r, bench::gateway::render_big_log);
                }
                let r = bench::gateway::run(&cfg, &agents, seconds, !cfg.json).await?;
                report(&cfg, &r, bench::gateway::render)
            }
            BenchCommand::Room {
                rate,
                seconds,
                log_rows,
            } => {
                check_load(rate, seconds, log_rows)?;
                let r = bench::room::run(&cfg, rate, seconds, log_rows, !cfg.json).await?;
                report(&cfg, &r, bench::room::render)
            }
            BenchCommand::Drift { per_minute } => {
                anyhow::ensure!(
                    (1..=100_000).contains(&per_minute),
                    "--per-minute must be between 1 and 100000"
                );
                let reg = backstop::demo::registry()?;
                let pol = backstop::demo::policy(&reg, backstop::demo::POLICY_LABEL, backstop::demo::POLICY_TOML)?;
                let d = &pol.supervisor.drift;
                let study = backstop::supervisor::drift::study(
                    d.threshold,
                    d.min_samples as u64,
                    per_minute,
                    (d.recent_seconds / 60.0).round().max(1.0) as u64,
                    (d.baseline_seconds / 60.0).round().max(1.0) as u64,
                    42,
                );
                if cfg.json {
                    backstop::output::print_json(&study)
                } else {
                    println!(
                        "drift (threshold {}, min {} decisions, recent {} min vs baseline {} min, {} decisions/min):\n  \
                         steady agent: {} of {} windows flagged (false-positive rate {:.4})\n  \
                         refund share 5% -> 30%: flagged after {} min (median of {} runs), at most {} min",
                        study.threshold,
                        d.min_samples,
                        study.recent_minutes,
                        study.baseline_minutes,
                        study.per_minute,
                        study.false_positives,
                        study.stationary_windows,
                        study.false_positive_rate,
                        study.detection_delay_minutes_p50,
                        study.shifted_runs,
                        study.detection_delay_minutes_max
                    );
                    Ok(())
                }
            }
            BenchCommand::Supervisor {
                rate,
                seconds,
                log_rows,
                metrics,
            } => {
                check_load(rate, seconds, log_rows)?;
                let r = bench::supervisor::run_scraped(&cfg, rate, seconds, log_rows, !cfg.json, metrics).await?;
                report(&cfg, &r, bench::supervisor::render)
            }
            BenchCommand::Compensation { count } => {
                anyhow::ensure!(
                    (100..=1_000_000).contains(&count),
                    "--count must be between 100 and 1000000"
                );
                let r = bench::compensation::run(&cfg, count, !cfg.json).await?;
                report(&cfg, &r, bench::compensation::render)
            }
        },
    }
}

fn scope_target(s: &ScopeArgs) -> anyhow::Result<Option<String>> {
    match (s.scope, &s.target) {
        (Scope::Fleet, None) => Ok(None),
        (Scope::Fleet, Some(t)) => anyhow::bail!("pause/resume fleet takes no name (got {t:?})"),
        (_, None) => anyhow::bail!(
            "name the {} (e.g. backstop pause {} refund-bot)",
            s.scope.as_str(),
            s.scope.as_str()
        ),
        (_, Some(t)) => Ok(Some(t.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Clap's own consistency check: no flag defined twice on one command
    /// (a global --tools once made `worker --tools` panic).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["backstop", "worker", "--tools", "reverse_refund,refund_charge"]).is_ok());
        assert!(Cli::try_parse_from(["backstop", "load", "--tools", "t.toml", "--policy", "p.toml"]).is_ok());
    }
}
