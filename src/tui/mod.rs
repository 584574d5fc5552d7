//! The control room: `backstop` with no subcommand. One State, one Msg enum,
//! a pure `update` returning effects as data, a pure `view`. Database work
//! runs on tasks and comes back as Msgs; nothing awaits the database in a key
//! handler or while drawing. A frame is drawn only when something changed,
//! after draining everything already waiting (bursts coalesce), inside a
//! synchronized-output pair.

pub mod data;
pub mod keys;
pub mod state;
pub mod update;
pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use tokio::sync::{Mutex, Notify, mpsc};

use crate::compensation::{self, Selection};
use crate::contract::tail::Tail;
use crate::contract::{self, Scope};
use crate::db::Db;
use state::{Conn, State};
use update::{Effect, Msg, update};
use view::Theme;

#[derive(Debug, Clone, Default)]
pub struct RoomOptions {
    pub readonly: bool,
    /// Append every delivered log seq to this file (for end-to-end tests).
    pub trace: Option<PathBuf>,
    /// Rows of history shown at start.
    pub history: i64,
    /// Read the log and the projections here (a replica); act on the primary.
    pub read: Option<sqlx::PgPool>,
    /// When set, each drawn row's commit-to-screen latency (ms) is recorded here (benchmarks).
    pub latencies: Option<Arc<std::sync::Mutex<Vec<i64>>>>,
    /// When set, the time of the first frame that shows data is recorded here.
    pub first_frame: Option<Arc<std::sync::Mutex<Option<std::time::Instant>>>>,
}

/// What the background tasks and effects need.
#[derive(Clone)]
pub struct Ctx {
    pub db: Db,
    /// Where the room reads: a replica when one is given, else the primary.
    pub read: sqlx::PgPool,
    pub tx: mpsc::UnboundedSender<Msg>,
    pub refresh: Arc<Notify>,
    /// The pause key's own connection, so a busy pool cannot delay it.
    pub pause_conn: Arc<Mutex<Option<PgConnection>>>,
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Run the room in this terminal until the operator quits.
pub async fn run(db: Db, operator: &str, opts: RoomOptions) -> Result<()> {
    // The terminal comes back whatever happens: quit, error, panic, signal.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    crossterm::terminal::enable_raw_mode()?;
    // Terminal::clear would ask the terminal where its cursor is; clearing
    // directly needs no answer (some terminals and pty harnesses never give one).
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::cursor::Hide,
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    let result = async {
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        let events = EventStream::new();
        run_loop(&mut terminal, events, db, operator, opts, true).await
    }
    .await;
    restore_terminal();
    result.map(|_| ())
}

/// The loop itself, with its input and terminal given (tests drive it with a
/// TestBackend and a scripted stream of events).
pub async fn run_loop<B, S>(
    terminal: &mut Terminal<B>,
    mut events: S,
    db: Db,
    operator: &str,
    opts: RoomOptions,
    synchronized: bool,
) -> Result<State>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let theme = Theme::from_env();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let ctx = Ctx {
        read: opts.read.clone().unwrap_or_else(|| db.pool.clone()),
        db: db.clone(),
        tx: tx.clone(),
        refresh: Arc::new(Notify::new()),
        pause_conn: Arc::new(Mutex::new(db.dedicated().await.ok())),
    };
    let mut state = State::new(&db.label, operator, opts.readonly, Utc::now());
    state.size = terminal.size().ok().map(|r| (r.width, r.height));
    let tasks = vec![
        tokio::spawn(tail_task(ctx.clone(), opts.history.max(50), opts.trace.clone())),
        tokio::spawn(poll_task(ctx.clone())),
        tokio::spawn(listen_task(ctx.clone())),
    ];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut drawn_seq = i64::MAX;
    let mut quit_signal = Box::pin(shutdown_signal());
    let mut pending: Vec<Msg> = Vec::new();
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => pending.push(Msg::Key(k)),
                Some(Ok(Event::Resize(w, h))) => pending.push(Msg::Resize(w, h)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(m) = rx.recv() => pending.push(m),
            _ = tick.tick() => pending.push(Msg::Tick(Utc::now())),
            _ = &mut quit_signal => state.quit = true,
        }
        // Coalesce: take everything already waiting before drawing once.
        while let Ok(m) = rx.try_recv() {
            pending.push(m);
        }
        for m in pending.drain(..) {
            for e in update(&mut state, m) {
                run_effect(ctx.clone(), e);
            }
        }
        if state.quit {
            break;
        }
        if state.dirty {
            if synchronized {
                let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::BeginSynchronizedUpdate);
            }
            terminal.draw(|f| view::view(&state, f, &theme))?;
            if synchronized {
                let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::EndSynchronizedUpdate);
            }
            state.dirty = false;
            if let Some(first) = opts.first_frame.as_ref()
                && !state.log.is_empty()
                && let Ok(mut f) = first.lock()
                && f.is_none()
            {
                *f = Some(std::time::Instant::now());
            }
            if let Some(lat) = opts.latencies.as_ref() {
                let now = Utc::now();
                let newest = state.log.front().map(|r| r.seq).unwrap_or(0);
                if drawn_seq == i64::MAX {
                    // The history shown at start is not a latency.
                    drawn_seq = newest;
                } else if let Ok(mut v) = lat.lock() {
                    v.extend(
                        state
                            .log
                            .iter()
                            .take_while(|r| r.seq > drawn_seq)
                            .map(|r| (now - r.at).num_milliseconds()),
                    );
                    drawn_seq = drawn_seq.max(newest);
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    Ok(state)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Follow the log: a short adaptive poll through the tail reader. On a
/// dropped connection the cursor does not move, so the room resumes with no
/// gap and no duplicate.
async fn tail_task(ctx: Ctx, history: i64, trace: Option<PathBuf>) {
    let mut trace = trace.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let mut tail = loop {
        match Tail::with_history(&ctx.read, history, 2000).await {
            Ok((rows, tail)) => {
                if let Some(f) = trace.as_mut() {
                    // History is shown but not traced: the trace is what the tail delivered.
                    let _ = f.flush();
                }
                let _ = ctx.tx.send(Msg::Rows { rows, lag_ms: None });
                break tail;
            }
            Err(e) => {
                let _ = ctx.tx.send(Msg::Conn(Conn::Reconnecting(e.to_string())));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // Poll fast while rows flow; back off to a quarter second when idle.
    let mut idle_wait = Duration::from_millis(40);
    loop {
        match tail.poll(&ctx.read).await {
            Ok(rows) => {
                let full = tail.behind();
                idle_wait = if rows.is_empty() {
                    (idle_wait * 2).min(Duration::from_millis(250))
                } else {
                    Duration::from_millis(40)
                };
                if !rows.is_empty() {
                    let newest = rows.iter().map(|r| r.at).max();
                    let lag = newest.map(|t| (Utc::now() - t).num_milliseconds().max(0));
                    if let Some(f) = trace.as_mut() {
                        for r in &rows {
                            let _ = writeln!(f, "{}", r.seq);
                        }
                        let _ = f.flush();
                    }
                    if ctx.tx.send(Msg::Rows { rows, lag_ms: lag }).is_err() {
                        return;
                    }
                } else if ctx.tx.send(Msg::Conn(Conn::Live)).is_err() {
                    return;
                }
                if !full {
                    tokio::time::sleep(idle_wait).await;
                }
            }
            Err(e) => {
                let _ = ctx.tx.send(Msg::Conn(Conn::Reconnecting(e.to_string())));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Refresh the views' data every two seconds, or at once when poked (a
/// NOTIFY, an effect finishing, a row that changes what the views show).
async fn poll_task(ctx: Ctx) {
    loop {
        match data::snapshot(&ctx.read).await {
            Ok(s) => {
                if ctx.tx.send(Msg::Data(Box::new(s))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = ctx.tx.send(Msg::Conn(Conn::Reconnecting(e.to_string())));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = ctx.refresh.notified() => {
                // Let a burst of notifications settle into one refresh.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
}

/// Rare events (pause, resume, decisions, policy changes) arrive by NOTIFY.
async fn listen_task(ctx: Ctx) {
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&ctx.db.pool).await?;
            l.listen_all(contract::CHANNELS).await?;
            anyhow::Ok(l)
        };
        let mut l = match listener.await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Ok(n) = l.recv().await {
            if ctx
                .tx
                .send(Msg::Notify(
                    contract::ControlEvent::decode(n.channel(), n.payload()).map_err(|e| e.to_string()),
                ))
                .is_err()
            {
                return;
            }
        }
    }
}

async fn pause_now(ctx: &Ctx, scope: Scope, target: Option<&str>, reason: &str) -> Result<contract::Paused, String> {
    let mut guard = ctx.pause_conn.lock().await;
    if let Some(c) = guard.as_mut() {
        match contract::pause(&mut *c, scope, target, reason).await {
            Ok(p) => return Ok(p),
            Err(contract::ContractError::Refused { message, .. }) => return Err(message),
            // The dedicated connection broke: make a new one and try once more.
            Err(_) => *guard = None,
        }
    }
    let mut c = ctx.db.dedicated().await.map_err(|e| e.to_string())?;
    let r = contract::pause(&mut c, scope, target, reason)
        .await
        .map_err(|e| e.to_string());
    *guard = Some(c);
    r
}

fn describe(scope: Scope, target: &Option<String>) -> String {
    match scope {
        Scope::Fleet => "the fleet".into(),
        s => format!("{} {}", s.as_str(), target.clone().unwrap_or_default()),
    }
}

/// Run one effect on a task; its result comes back as a Msg.
pub fn run_effect(ctx: Ctx, e: Effect) {
    if e == Effect::Refresh {
        ctx.refresh.notify_one();
        return;
    }
    tokio::spawn(async move {
        let pool = &ctx.db.pool;
        let msg = match e {
            Effect::Refresh => return,
            Effect::LoadDetail(id) => match data::detail(&ctx.read, id).await {
                Ok(d) => Msg::Detail(Box::new(d)),
                Err(e) => Msg::Done("detail".into(), Err(e.to_string())),
            },
            Effect::LoadCard(id) => Msg::Card(
                id,
                data::card(&ctx.read, id).await.map(Box::new).map_err(|e| e.to_string()),
            ),
            Effect::Precheck(id) => Msg::Checks(
                id,
                crate::contract::precheck(&ctx.read, id)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Effect::Plan(ids) => match compensation::plan(pool, &Selection::Actions(ids)).await {
                Ok(p) => Msg::Plan(p),
                Err(e) => Msg::Done("plan".into(), Err(e.to_string())),
            },
            Effect::Request { shown, reason } => {
                let ids: Vec<uuid::Uuid> = shown.iter().map(|(id, _)| *id).collect();
                // One plan id for the request, as `backstop compensate` does.
                let r = contract::request_compensation(pool, &ids, &reason, Some(uuid::Uuid::new_v4()))
                    .await
                    .map(|out| {
                        let n = out.iter().filter(|o| o.outcome == "requested").count();
                        let diff = compensation::differences(&shown, &out);
                        if diff.is_empty() {
                            format!("{n} compensation(s) requested, as planned; follow them in view 5")
                        } else {
                            format!(
                                "{n} compensation(s) requested; {} step(s) changed since the plan was shown: {}",
                                diff.len(),
                                diff.join("; ")
                            )
                        }
                    });
                Msg::Done("compensate".into(), r.map_err(|e| e.to_string()))
            }
            Effect::Approve(id) => Msg::Done(
                "approve".into(),
                contract::approve(pool, id, "approved in the control room")
                    .await
                    .map(|a| {
                        if a.verdict == contract::Verdict::Allow {
                            format!("{id} allowed ({} of {} approvals)", a.approvals, a.approvals_needed)
                        } else {
                            format!(
                                "{id}: {} of {} approvals; it needs another approver",
                                a.approvals, a.approvals_needed
                            )
                        }
                    })
                    .map_err(|e| e.to_string()),
            ),
            Effect::Reject { id, note } => Msg::Done(
                "reject".into(),
                contract::reject(pool, id, &note)
                    .await
                    .map(|_| format!("{id} rejected"))
                    .map_err(|e| e.to_string()),
            ),
            Effect::Pause { scope, target, reason } => Msg::Done(
                "pause".into(),
                pause_now(&ctx, scope, target.as_deref(), &reason)
                    .await
                    .map(|p| format!("{} paused (log seq {})", describe(scope, &target), p.seq)),
            ),
            Effect::Resume { scope, target, reason } => Msg::Done(
                "resume".into(),
                contract::resume(pool, scope, target.as_deref(), &reason)
                    .await
                    .map(|seq| format!("{} resumed (log seq {seq})", describe(scope, &target)))
                    .map_err(|e| e.to_string()),
            ),
            Effect::MarkQuery { agent, since, tool } => {
                let what = match &tool {
                    Some(t) => format!("of {agent} with {t} since {}", since.format("%H:%M:%S")),
                    None => format!("of {agent} since {}", since.format("%H:%M:%S")),
                };
                Msg::Marked {
                    what,
                    ids: data::actions_of(&ctx.read, &agent, since, tool.as_deref())
                        .await
                        .map_err(|e| e.to_string()),
                }
            }
            Effect::Acknowledge { id, note } => Msg::Done(
                "acknowledge".into(),
                contract::acknowledge_finding(pool, id, &note)
                    .await
                    .map(|_| format!("finding {id} acknowledged"))
                    .map_err(|e| e.to_string()),
            ),
            Effect::Resolve { id, note } => Msg::Done(
                "resolve".into(),
                contract::resolve_finding(pool, id, &note)
                    .await
                    .map(|_| format!("finding {id} resolved"))
                    .map_err(|e| e.to_string()),
            ),
        };
        let _ = ctx.tx.send(msg);
    });
}

/// Open the room against a database: `backstop` with no subcommand.
///
/// The room watches: it loads no registry or policy file and never migrates
/// a server's schema (`backstop migrate` does). `--readonly` connects, reads,
/// and does nothing else: no acting keys, and no housekeeping.
pub async fn open_and_run(cfg: &crate::config::Config, readonly: bool) -> Result<()> {
    let url = if readonly {
        std::env::var("BACKSTOP_READONLY_URL").ok().or(cfg.database_url.clone())
    } else {
        cfg.database_url.clone()
    };
    let mut c = cfg.clone();
    c.database_url = url;
    // Opening checks the schema and never migrates a server; an embedded
    // cluster (--embedded) is this process's own, made and migrated here.
    let db = Db::open(&c.db("backstop room", 8)).await?;
    let read = match &cfg.read_url {
        Some(u) => Some(crate::db::connect_replica(u, 4).await?),
        None => None,
    };
    let opts = RoomOptions {
        read,
        readonly,
        trace: std::env::var_os("BACKSTOP_ROOM_TRACE").map(PathBuf::from),
        history: 500,
        ..Default::default()
    };
    // Sealing and expiry write: a read-only room leaves them to others.
    let hk = (!readonly).then(|| crate::housekeeping::spawn(db.pool.clone()));
    let r = if std::env::var_os("BACKSTOP_ROOM_HEADLESS").is_some() {
        headless(db, &cfg.operator, opts).await
    } else {
        run(db, &cfg.operator, opts).await
    };
    if let Some(hk) = hk {
        hk.abort();
    }
    r
}

/// The room without a terminal (for measuring the real binary): the same
/// loop drawing into an in-memory buffer; says "first-frame" on stderr once
/// the first frame with data is drawn.
async fn headless(db: Db, operator: &str, mut opts: RoomOptions) -> Result<()> {
    let first = Arc::new(std::sync::Mutex::new(None));
    opts.first_frame = Some(first.clone());
    let watcher = tokio::spawn(async move {
        loop {
            if first.lock().map(|f| f.is_some()).unwrap_or(false) {
                eprintln!("first-frame");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut term = Terminal::new(ratatui::backend::TestBackend::new(120, 40))?;
    let r = run_loop(&mut term, futures_util::stream::pending(), db, operator, opts, false).await;
    watcher.abort();
    r.map(|_| ())
}
