//! `update(&mut State, Msg) -> Vec<Effect>`: every key and every database
//! result goes through here, and nothing here waits for anything. Effects are
//! data; the runtime runs them on tasks and sends their results back as Msgs.

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use uuid::Uuid;

use super::keys::COMMANDS;
use super::state::{
    CardInfo, CheckResult, Checks, Conn, Detail, Filter, FindingRow, LOG_CAP, Mode, Note, Purpose, Snapshot, State,
    View,
};
use crate::compensation::Plan;
use crate::contract::{ControlEvent, EventKind as K, LogRow, Scope};

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Resize(u16, u16),
    Tick(DateTime<Utc>),
    Rows {
        rows: Vec<LogRow>,
        lag_ms: Option<i64>,
    },
    Conn(Conn),
    Data(Box<Snapshot>),
    Detail(Box<Detail>),
    /// What the agent said about a held action (the approval card).
    Card(Uuid, Result<Box<CardInfo>, String>),
    /// The supervisor's checks run now on a held action (`backstop.precheck`).
    Checks(Uuid, Result<Vec<CheckResult>, String>),
    Plan(Plan),
    /// A NOTIFY, decoded; or why it could not be.
    Notify(Result<ControlEvent, String>),
    /// An effect finished: what, and its outcome or error.
    Done(String, Result<String, String>),
    /// The actions a `:mark` query found in the database, and what it asked.
    Marked {
        what: String,
        ids: Result<Vec<Uuid>, String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Refresh,
    LoadDetail(Uuid),
    /// Load a held action's card (what the agent said).
    LoadCard(Uuid),
    /// Run the supervisor's checks on a held action now, read-only.
    Precheck(Uuid),
    Plan(Vec<Uuid>),
    /// Request exactly the steps of the plan on screen, with the outcome
    /// each was shown with (the reply says where the database now differs).
    Request {
        shown: Vec<(Uuid, String)>,
        reason: String,
    },
    Approve(Uuid),
    Reject {
        id: Uuid,
        note: String,
    },
    Pause {
        scope: Scope,
        target: Option<String>,
        reason: String,
    },
    Resume {
        scope: Scope,
        target: Option<String>,
        reason: String,
    },
    Acknowledge {
        id: Uuid,
        note: String,
    },
    /// Find the actions to mark in the database (not only the rows in memory).
    MarkQuery {
        agent: String,
        since: DateTime<Utc>,
        tool: Option<String>,
    },
    Resolve {
        id: Uuid,
        note: String,
    },
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// A key press as a Msg (for tests and scripted drivers).
pub fn press(c: char) -> Msg {
    Msg::Key(key(KeyCode::Char(c)))
}

pub fn press_code(code: KeyCode) -> Msg {
    Msg::Key(key(code))
}

pub fn update(s: &mut State, msg: Msg) -> Vec<Effect> {
    // A refresh of the views runs the card's checks again.
    let refresh = matches!(msg, Msg::Data(_));
    let mut fx = on_msg(s, msg);
    fx.extend(card_effects(s, refresh));
    fx
}

/// What the card of the held action in question (`State::card_target`)
/// still needs: its info once, its checks when first shown and again on
/// every refresh, never two loads of either at a time.
fn card_effects(s: &mut State, refresh: bool) -> Vec<Effect> {
    let Some(id) = s.card_target() else {
        return Vec::new();
    };
    let card = s.cards.entry(id).or_default();
    let mut fx = Vec::new();
    if card.info.is_none() && !card.loading {
        card.loading = true;
        fx.push(Effect::LoadCard(id));
    }
    if !card.checking && (card.checks == Checks::Running || refresh) {
        card.checking = true;
        fx.push(Effect::Precheck(id));
    }
    fx
}

fn on_msg(s: &mut State, msg: Msg) -> Vec<Effect> {
    s.dirty = true;
    match msg {
        Msg::Key(k) => on_key(s, k),
        Msg::Resize(w, h) => {
            s.size = Some((w, h));
            Vec::new()
        }
        Msg::Tick(now) => {
            // Redraw once a second at most: the clock and the countdowns.
            s.dirty = now.timestamp() != s.now.timestamp();
            s.now = now;
            Vec::new()
        }
        Msg::Rows { rows, lag_ms } => {
            s.lag_ms = lag_ms;
            if !matches!(s.conn, Conn::Live) {
                s.conn = Conn::Live;
            }
            on_rows(s, rows)
        }
        Msg::Conn(c) => {
            s.conn = c;
            Vec::new()
        }
        Msg::Data(d) => {
            s.data = *d;
            // Agents seen in the tail but not yet in the rollups (no supervisor
            // running, or too new) still get a row.
            let mut seen: Vec<String> = s.log.iter().filter_map(|r| r.agent.clone()).collect();
            seen.sort();
            seen.dedup();
            for agent in seen {
                if !s.data.fleet.iter().any(|a| a.agent == agent) {
                    let held: Vec<&super::state::HeldRow> =
                        s.data.approvals.iter().filter(|h| h.agent == agent).collect();
                    let row = super::state::AgentRow {
                        paused: s.agent_paused(&agent).map(|sw| (sw.by.clone(), sw.reason.clone())),
                        per_bucket: Vec::new(),
                        per_minute: 0.0,
                        held: held.len() as i64,
                        held_value: held.iter().filter_map(|h| h.amount).sum(),
                        findings: 0,
                        drift: None,
                        drift_since: None,
                        agent,
                    };
                    s.data.fleet.push(row);
                }
            }
            s.data.fleet.sort_by(|a, b| a.agent.cmp(&b.agent));
            // Cards of actions no longer held go (one comes back if needed).
            let held: std::collections::HashSet<Uuid> = s.data.approvals.iter().map(|h| h.action_id).collect();
            s.cards.retain(|id, _| held.contains(id));
            Vec::new()
        }
        Msg::Card(id, info) => {
            let card = s.cards.entry(id).or_default();
            card.loading = false;
            card.info = Some(info.map(|i| *i));
            Vec::new()
        }
        Msg::Checks(id, rows) => {
            let card = s.cards.entry(id).or_default();
            card.checking = false;
            card.checks = match rows {
                Ok(r) => Checks::Done(r),
                Err(e) => Checks::Failed(e),
            };
            Vec::new()
        }
        Msg::Detail(d) => {
            // Only the detail still open: a slow load for an action left
            // behind does not replace the one on screen.
            if matches!(s.mode, Mode::Detail { .. }) && s.detail_for == Some(d.action_id) {
                s.detail = Some(*d);
            }
            Vec::new()
        }
        Msg::Plan(p) => {
            // The plan is on screen: "planning ..." is no longer news.
            s.notify(
                format!(
                    "plan ready: {} step(s); y requests it, Esc changes nothing",
                    p.steps.len()
                ),
                false,
            );
            s.plan = Some(p);
            s.plan_scroll = 0;
            s.mode = Mode::Plan;
            Vec::new()
        }
        Msg::Notify(event) => {
            match event {
                Ok(ControlEvent::Paused { scope, target, by, .. }) => {
                    s.notify(format!("{} paused by {by}", describe_scope(scope, &target)), false)
                }
                Ok(ControlEvent::Resumed { scope, target, by, .. }) => {
                    s.notify(format!("{} resumed by {by}", describe_scope(scope, &target)), false)
                }
                Ok(ControlEvent::PolicyLoaded { version, .. }) => {
                    push_policy(s, format!("policy version {version} in force"), false)
                }
                Ok(ControlEvent::RegistryLoaded { version, .. }) => {
                    push_policy(s, format!("registry version {version} in force"), false)
                }
                Ok(ControlEvent::PolicyRejected { file, seq }) => push_policy(
                    s,
                    format!("{file} rejected: the last good version stays in force (log seq {seq})"),
                    true,
                ),
                Ok(ControlEvent::Decision { .. } | ControlEvent::CompensationsRequested { .. }) => {}
                Err(e) => s.notify(e, true),
            }
            vec![Effect::Refresh]
        }
        Msg::Marked { what, ids } => {
            match ids {
                Ok(ids) => {
                    let n = ids.len();
                    s.marks.extend(ids);
                    s.notify(
                        format!(
                            "{n} action(s) {what} marked, from the database; {} marked in all; c plans their rollback",
                            s.marks.len()
                        ),
                        false,
                    );
                }
                Err(e) => s.notify(format!("mark {what} failed: {e}"), true),
            }
            Vec::new()
        }
        Msg::Done(what, result) => {
            match result {
                Ok(text) => s.notify(format!("{what}: {text}"), false),
                Err(e) => s.notify(format!("{what} failed: {e}"), true),
            }
            vec![Effect::Refresh]
        }
    }
}

fn describe_scope(scope: Scope, target: &str) -> String {
    match scope {
        Scope::Fleet => "the fleet".to_string(),
        other => format!("{} {target}", other.as_str()),
    }
}

fn push_policy(s: &mut State, text: String, error: bool) {
    let n = super::state::Notice { at: s.now, text, error };
    s.notice = Some(n.clone());
    s.policy_events.push_front(n);
    s.policy_events.truncate(20);
}

fn on_rows(s: &mut State, mut rows: Vec<LogRow>) -> Vec<Effect> {
    if rows.is_empty() {
        s.dirty = false;
        return Vec::new();
    }
    rows.sort_by_key(|r| r.seq);
    let mut refresh = false;
    for r in &rows {
        if let Some(a) = r.action_id {
            let st = match r.kind {
                K::Allowed
                | K::Held
                | K::Blocked
                | K::Rejected
                | K::Expired
                | K::Executed
                | K::Failed
                | K::Compensated => Some(r.kind.to_string()),
                K::Approved if r.detail["final"] == true => Some("allowed".to_string()),
                K::CompensationRequested => Some("comp. requested".to_string()),
                K::CompensationStarted => Some("compensating".to_string()),
                K::CompensationFailed => Some(format!("comp. {}", r.detail["status"].as_str().unwrap_or("failed"))),
                _ => None,
            };
            if let Some(st) = st {
                s.status_of.insert(a, st);
            }
        }
        refresh |= !matches!(
            r.kind,
            K::Allowed | K::Executed | K::Failed | K::Reviewed | K::CompensationStarted
        );
    }
    let n = rows.len();
    // The open detail is about an action that just changed: load it again.
    let reload = s
        .detail_for
        .filter(|id| matches!(s.mode, Mode::Detail { .. }) && rows.iter().any(|r| r.action_id == Some(*id)));
    for r in rows {
        s.log.push_front(r);
    }
    while s.log.len() > LOG_CAP {
        if let Some(old) = s.log.pop_back()
            && let Some(a) = old.action_id
            && !s.log.iter().any(|r| r.action_id == Some(a))
        {
            s.status_of.remove(&a);
        }
    }
    if s.following && s.frozen.is_none() {
        if let Some(first) = s.log.front() {
            s.cursor.insert(View::Log, first.seq.to_string());
        }
    } else {
        s.new_rows += n;
    }
    let mut fx = Vec::new();
    if refresh {
        fx.push(Effect::Refresh);
    }
    fx.extend(reload.map(Effect::LoadDetail));
    fx
}

fn move_cursor(s: &mut State, delta: isize) {
    let keys = s.keys();
    if keys.is_empty() {
        return;
    }
    let i = s.cursor_index() as isize + delta;
    let i = i.clamp(0, keys.len() as isize - 1) as usize;
    let v = s.shown_view();
    s.cursor.insert(v, keys[i].clone());
    if v == View::Log {
        // Moving the cursor stops following; the top resumes it.
        s.following = i == 0 && delta < 0 && s.frozen.is_none();
        if s.following {
            s.new_rows = 0;
        }
    }
}

/// The chosen view is collapsed into the log: say so; the caller does nothing.
fn hidden(s: &mut State) -> bool {
    if !s.view_hidden() {
        return false;
    }
    let (w, h) = s.size.unwrap_or_default();
    s.notify(
        format!(
            "{} is not on screen at {w}x{h} (it needs {}x{}): nothing done; press 2 for the log or enlarge the terminal",
            s.view.title(),
            super::view::FULL_W,
            super::view::FULL_H
        ),
        true,
    );
    true
}

fn acting(s: &mut State) -> bool {
    if s.readonly {
        s.notify("read-only room: this key does nothing here", true);
    }
    !s.readonly
}

fn on_key(s: &mut State, k: KeyEvent) -> Vec<Effect> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')) {
        s.quit = true;
        return Vec::new();
    }
    match s.mode.clone() {
        Mode::Normal => normal_key(s, k),
        Mode::Filter { input } => text_key(s, k, input, |s, input| {
            match Filter::parse(&input) {
                Err(e) => {
                    // Stay at the prompt with the text, and say what is wrong there.
                    s.notify(e, true);
                    s.mode = Mode::Filter { input };
                }
                Ok(f) => {
                    s.filter = f;
                    s.notify(
                        if s.filter.is_empty() {
                            "filter cleared".into()
                        } else {
                            format!("filter: {}", s.filter.describe())
                        },
                        false,
                    );
                }
            }
            Vec::new()
        }),
        Mode::Command { input } => {
            if k.code == KeyCode::Tab {
                let completed = complete(s, &input);
                s.mode = Mode::Command { input: completed };
                return Vec::new();
            }
            text_key(s, k, input, run_command)
        }
        Mode::Input { purpose, input } => {
            let p = purpose.clone();
            text_key_with(
                s,
                k,
                input,
                move |input| Mode::Input {
                    purpose: p.clone(),
                    input,
                },
                move |s, input| {
                    if input.trim().is_empty() {
                        s.notify("a reason is required: it is recorded in the log", true);
                        s.mode = Mode::Input {
                            purpose: purpose.clone(),
                            input,
                        };
                        return Vec::new();
                    }
                    let note = input.trim().to_string();
                    match &purpose {
                        Purpose::Reject(id) => vec![Effect::Reject { id: *id, note }],
                        Purpose::Compensate(ids) => {
                            s.marks.clear();
                            let outcome = |id: &Uuid| {
                                s.plan
                                    .as_ref()
                                    .and_then(|p| p.steps.iter().find(|st| st.action_id == *id))
                                    .map(|st| st.outcome.clone())
                                    .unwrap_or_default()
                            };
                            let shown = ids.iter().map(|id| (*id, outcome(id))).collect();
                            s.plan = None;
                            vec![Effect::Request { shown, reason: note }]
                        }
                        Purpose::Acknowledge(id) => vec![Effect::Acknowledge { id: *id, note }],
                        Purpose::Resolve(id) => vec![Effect::Resolve { id: *id, note }],
                    }
                },
            )
        }
        Mode::ConfirmApprove(id) => {
            s.mode = Mode::Normal;
            if matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                s.notify("approving ...", false);
                vec![Effect::Approve(id)]
            } else if k.code == KeyCode::Char('P') {
                pause_fleet(s)
            } else {
                s.notify("not approved", false);
                Vec::new()
            }
        }
        Mode::ConfirmPause { scope, target } => {
            s.mode = Mode::Normal;
            if matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                let unknown = if s.knows(scope, &target) == Some(true) {
                    ""
                } else {
                    " (unknown)"
                };
                s.notify(format!("pausing {} {target} ...", scope.as_str()), false);
                let reason = format!(
                    "{} {target}{unknown} paused from the control room by {}",
                    scope.as_str(),
                    s.operator
                );
                vec![Effect::Pause {
                    scope,
                    target: Some(target),
                    reason,
                }]
            } else {
                s.notify(format!("{} {target} not paused", scope.as_str()), false);
                Vec::new()
            }
        }
        Mode::ConfirmResume { scope, target } => {
            s.mode = Mode::Normal;
            if matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                let reason = format!("resumed from the control room by {}", s.operator);
                vec![Effect::Resume { scope, target, reason }]
            } else {
                s.notify("not resumed", false);
                Vec::new()
            }
        }
        Mode::Plan => match k.code {
            KeyCode::Char('y') | KeyCode::Char('Y') if !s.readonly => {
                let ids: Vec<Uuid> = s
                    .plan
                    .as_ref()
                    .map(|p| p.steps.iter().map(|st| st.action_id).collect())
                    .unwrap_or_default();
                let n = s.plan.as_ref().map(|p| p.totals.will_compensate).unwrap_or(0);
                if n == 0 {
                    s.mode = Mode::Normal;
                    s.notify("nothing in this plan can be compensated automatically", true);
                    return Vec::new();
                }
                // The reason is the operator's own words: it starts empty and is required.
                s.mode = Mode::Input {
                    purpose: Purpose::Compensate(ids),
                    input: String::new(),
                };
                Vec::new()
            }
            KeyCode::Char('P') => pause_fleet(s),
            KeyCode::Char('j') | KeyCode::Down => scroll_plan(s, 1),
            KeyCode::Char('k') | KeyCode::Up => scroll_plan(s, -1),
            KeyCode::PageDown => scroll_plan(s, 10),
            KeyCode::PageUp => scroll_plan(s, -10),
            KeyCode::Char('g') | KeyCode::Home => scroll_plan(s, isize::MIN / 2),
            KeyCode::Char('G') | KeyCode::End => scroll_plan(s, isize::MAX / 2),
            KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Char('q') => {
                s.mode = Mode::Normal;
                s.plan = None;
                s.notify("compensation cancelled: nothing requested", false);
                Vec::new()
            }
            _ => {
                s.notify("y requests this plan, n or Esc cancels it, j/k scroll it", false);
                Vec::new()
            }
        },
        Mode::Detail { scroll } => match k.code {
            code if scrolled(code, scroll).is_some() => {
                s.mode = Mode::Detail {
                    scroll: scrolled(code, scroll).unwrap_or(scroll),
                };
                Vec::new()
            }
            KeyCode::Char('P') => pause_fleet(s),
            _ => {
                s.mode = Mode::Normal;
                s.detail = None;
                s.detail_for = None;
                Vec::new()
            }
        },
        Mode::Note { scroll } => match k.code {
            code if scrolled(code, scroll).is_some() => {
                s.mode = Mode::Note {
                    scroll: scrolled(code, scroll).unwrap_or(scroll),
                };
                Vec::new()
            }
            KeyCode::Char('P') => pause_fleet(s),
            KeyCode::Enter if s.note.as_ref().is_some_and(|n| n.action.is_some()) => {
                let id = s.note.take().and_then(|n| n.action);
                s.mode = Mode::Detail { scroll: 0 };
                s.detail = None;
                s.detail_for = id;
                id.map(Effect::LoadDetail).into_iter().collect()
            }
            _ => {
                s.mode = Mode::Normal;
                s.note = None;
                Vec::new()
            }
        },
        Mode::Help => {
            if k.code == KeyCode::Char('P') {
                return pause_fleet(s);
            }
            s.mode = Mode::Normal;
            Vec::new()
        }
    }
}

fn text_key<F>(s: &mut State, k: KeyEvent, input: String, done: F) -> Vec<Effect>
where
    F: FnOnce(&mut State, String) -> Vec<Effect>,
{
    let mode_of = |s: &State| match &s.mode {
        Mode::Filter { .. } => 0,
        _ => 1,
    };
    let which = mode_of(s);
    text_key_with(
        s,
        k,
        input,
        move |input| {
            if which == 0 {
                Mode::Filter { input }
            } else {
                Mode::Command { input }
            }
        },
        done,
    )
}

fn text_key_with<M, F>(s: &mut State, k: KeyEvent, mut input: String, remake: M, done: F) -> Vec<Effect>
where
    M: Fn(String) -> Mode,
    F: FnOnce(&mut State, String) -> Vec<Effect>,
{
    match k.code {
        KeyCode::Esc => {
            s.mode = Mode::Normal;
            Vec::new()
        }
        KeyCode::Enter => {
            s.mode = Mode::Normal;
            done(s, input)
        }
        KeyCode::Backspace => {
            input.pop();
            s.mode = remake(input);
            Vec::new()
        }
        // Readline's keys: Ctrl-U clears, Ctrl-W drops the last word.
        KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => {
            s.mode = remake(String::new());
            Vec::new()
        }
        KeyCode::Char('w') if k.modifiers.contains(KeyModifiers::CONTROL) => {
            let kept = input
                .trim_end()
                .rfind(' ')
                .map(|i| input[..=i].to_string())
                .unwrap_or_default();
            s.mode = remake(kept);
            Vec::new()
        }
        KeyCode::Char(_) if k.modifiers.contains(KeyModifiers::CONTROL) || k.modifiers.contains(KeyModifiers::ALT) => {
            // Never type a control chord as text.
            Vec::new()
        }
        KeyCode::Char(c) => {
            if input.chars().count() < 500 {
                input.push(c);
            }
            s.mode = remake(input);
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Scroll the rollback plan on screen (the view keeps the last page full).
fn scroll_plan(s: &mut State, delta: isize) -> Vec<Effect> {
    let len = s.plan.as_ref().map(|p| p.steps.len()).unwrap_or(0);
    let to = (s.plan_scroll as isize).saturating_add(delta);
    s.plan_scroll = to.clamp(0, len.saturating_sub(1) as isize) as usize;
    Vec::new()
}

fn pause_fleet(s: &mut State) -> Vec<Effect> {
    if !acting(s) {
        return Vec::new();
    }
    s.notify("pausing the fleet ...", false);
    vec![Effect::Pause {
        scope: Scope::Fleet,
        target: None,
        reason: format!("fleet paused from the control room (P) by {}", s.operator),
    }]
}

fn normal_key(s: &mut State, k: KeyEvent) -> Vec<Effect> {
    match k.code {
        KeyCode::Char('q') => {
            s.quit = true;
            Vec::new()
        }
        KeyCode::Char('?') => {
            s.mode = Mode::Help;
            Vec::new()
        }
        KeyCode::Esc => {
            // Back: drop a half-made range, then the notice. Never destructive.
            if s.range_anchor.take().is_none() {
                s.notice = None;
            }
            Vec::new()
        }
        KeyCode::Char('j') | KeyCode::Down => {
            move_cursor(s, 1);
            Vec::new()
        }
        KeyCode::Char('k') | KeyCode::Up => {
            move_cursor(s, -1);
            Vec::new()
        }
        KeyCode::PageDown => {
            move_cursor(s, 10);
            Vec::new()
        }
        KeyCode::PageUp => {
            move_cursor(s, -10);
            Vec::new()
        }
        KeyCode::Char('g') | KeyCode::Home => {
            let v = s.shown_view();
            if let Some(first) = s.keys().first().cloned() {
                s.cursor.insert(v, first);
            }
            if v == View::Log {
                s.following = s.frozen.is_none();
                s.new_rows = 0;
            }
            Vec::new()
        }
        KeyCode::Char('G') | KeyCode::End => {
            let v = s.shown_view();
            if let Some(last) = s.keys().last().cloned() {
                s.cursor.insert(v, last);
            }
            if v == View::Log {
                s.following = false;
            }
            Vec::new()
        }
        KeyCode::Char(c @ '1'..='5') => {
            s.view = View::ALL[(c as u8 - b'1') as usize];
            Vec::new()
        }
        KeyCode::Char('/') => {
            s.mode = Mode::Filter {
                input: s.filter.describe(),
            };
            Vec::new()
        }
        KeyCode::Char(':') => {
            s.mode = Mode::Command { input: String::new() };
            Vec::new()
        }
        KeyCode::Char('f') => {
            if s.frozen.take().is_some() {
                s.notify(format!("unfrozen: {} new rows", s.new_rows), false);
                s.new_rows = 0;
                s.following = true;
                if let Some(first) = s.log.front() {
                    s.cursor.insert(View::Log, first.seq.to_string());
                }
            } else {
                s.frozen = Some(s.log.iter().cloned().collect());
                s.following = false;
                s.new_rows = 0;
                s.notify("frozen: rows keep arriving in the background (f to unfreeze)", false);
            }
            Vec::new()
        }
        KeyCode::Enter if hidden(s) => Vec::new(),
        KeyCode::Enter => match s.shown_view() {
            View::Fleet => {
                if let Some(a) = s.cursor_agent() {
                    s.filter = Filter {
                        agent: Some(a.clone()),
                        ..Filter::default()
                    };
                    s.view = View::Log;
                    s.notify(format!("filter: agent:{a}"), false);
                }
                Vec::new()
            }
            // A finding is more than its action: its whole evidence first.
            View::Findings => {
                match s
                    .cursor_key()
                    .and_then(|k| s.data.findings.iter().find(|f| f.finding_id.to_string() == k))
                    .map(finding_note)
                {
                    Some(n) => {
                        s.note = Some(n);
                        s.mode = Mode::Note { scroll: 0 };
                    }
                    None => s.notify("no finding here", false),
                }
                Vec::new()
            }
            _ => match s.cursor_action() {
                Some(id) => {
                    s.mode = Mode::Detail { scroll: 0 };
                    s.detail = None;
                    s.detail_for = Some(id);
                    vec![Effect::LoadDetail(id)]
                }
                None => {
                    // A row about no action (a pause, a policy, a finding) in full.
                    let row = s
                        .cursor_key()
                        .and_then(|k| k.parse::<i64>().ok())
                        .and_then(|seq| s.visible_log().into_iter().find(|r| r.seq == seq).map(log_note));
                    match row {
                        Some(n) => {
                            s.note = Some(n);
                            s.mode = Mode::Note { scroll: 0 };
                        }
                        None => s.notify("this row is not an action", false),
                    }
                    Vec::new()
                }
            },
        },
        KeyCode::Char('P') => pause_fleet(s),
        KeyCode::Char(c) if "pR aAxrcVu*".contains(c) => {
            if !acting(s) {
                return Vec::new();
            }
            // A key that acts on rows acts only on rows on screen.
            if "p aAxrcV*".contains(c) && hidden(s) {
                return Vec::new();
            }
            acting_key(s, c)
        }
        _ => {
            s.dirty = false;
            Vec::new()
        }
    }
}

fn acting_key(s: &mut State, c: char) -> Vec<Effect> {
    match c {
        'p' => match s.cursor_agent() {
            Some(agent) => {
                s.mode = Mode::ConfirmPause {
                    scope: Scope::Agent,
                    target: agent,
                };
                Vec::new()
            }
            None => {
                s.notify("select a row with an agent to pause it", true);
                Vec::new()
            }
        },
        'R' => {
            let target = if s.fleet_paused().is_some() {
                Some((Scope::Fleet, None))
            } else if let Some(a) = s.cursor_agent().filter(|a| s.agent_paused(a).is_some()) {
                Some((Scope::Agent, Some(a)))
            } else {
                s.data
                    .switches
                    .first()
                    .map(|sw| (sw.scope, Some(sw.target.clone()).filter(|_| sw.scope != Scope::Fleet)))
            };
            match target {
                Some((scope, target)) => s.mode = Mode::ConfirmResume { scope, target },
                None => s.notify("nothing is paused", false),
            }
            Vec::new()
        }
        ' ' => {
            match s.cursor_action() {
                Some(id) => {
                    if !s.marks.remove(&id) {
                        s.marks.insert(id);
                    }
                    // Past the other rows of the same action (its verdict,
                    // its result): space there would undo the mark just made.
                    let keys = s.keys();
                    let mut i = s.cursor_index();
                    let start = i;
                    while i + 1 < keys.len() && ids_of(s, &keys[i + 1..i + 2]).first() == Some(&id) {
                        i += 1;
                    }
                    move_cursor(s, (i - start) as isize + 1);
                }
                None => s.notify("this row is not an action", false),
            }
            Vec::new()
        }
        'V' => {
            let here = s.cursor_index();
            match s.range_anchor.take() {
                None => {
                    s.range_anchor = s.cursor_key();
                    s.notify(
                        "range: from this row; move and press V again to mark the rows between (Esc cancels)",
                        false,
                    );
                }
                Some(anchor) => {
                    let keys = s.keys();
                    let start = keys.iter().position(|k| *k == anchor).unwrap_or(here);
                    let (lo, hi) = (start.min(here), start.max(here).min(keys.len().saturating_sub(1)));
                    let mut ids = ids_of(s, &keys[lo..=hi]);
                    ids.sort();
                    ids.dedup();
                    let new = ids.iter().filter(|id| !s.marks.contains(id)).count();
                    s.marks.extend(ids.iter().copied());
                    // One message: rows, distinct actions, and the marks in all.
                    s.notify(
                        format!(
                            "range: {} row(s), {} action(s) ({new} newly marked); {} marked in all",
                            hi + 1 - lo,
                            ids.len(),
                            s.marks.len()
                        ),
                        false,
                    );
                }
            }
            Vec::new()
        }
        '*' => {
            let keys = s.keys();
            let ids = ids_of(s, &keys);
            s.marks.extend(ids);
            s.notify(format!("{} marked", s.marks.len()), false);
            Vec::new()
        }
        'u' => {
            s.marks.clear();
            s.notify("marks cleared", false);
            Vec::new()
        }
        'c' => {
            let ids: Vec<Uuid> = if s.marks.is_empty() {
                s.cursor_action().into_iter().collect()
            } else {
                s.marks.iter().copied().collect()
            };
            if ids.is_empty() {
                s.notify("nothing to compensate: mark actions with space", true);
                return Vec::new();
            }
            s.notify(format!("planning the rollback of {} action(s) ...", ids.len()), false);
            vec![Effect::Plan(ids)]
        }
        'a' => match s.held_under_cursor() {
            Some(id) => {
                s.mode = Mode::ConfirmApprove(id);
                Vec::new()
            }
            None => {
                s.notify("no held action here: approvals are in view 3", true);
                Vec::new()
            }
        },
        'r' => match s.held_under_cursor() {
            Some(id) => {
                s.mode = Mode::Input {
                    purpose: Purpose::Reject(id),
                    input: String::new(),
                };
                Vec::new()
            }
            None => {
                s.notify("no held action here: approvals are in view 3", true);
                Vec::new()
            }
        },
        'A' | 'x' => {
            let f = if s.shown_view() == View::Findings {
                s.cursor_key().and_then(|k| Uuid::parse_str(&k).ok())
            } else {
                None
            };
            match f {
                Some(id) => {
                    s.mode = Mode::Input {
                        purpose: if c == 'A' {
                            Purpose::Acknowledge(id)
                        } else {
                            Purpose::Resolve(id)
                        },
                        input: String::new(),
                    };
                }
                None => s.notify("select a finding (view 4)", true),
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn pretty_json(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A finding in full: the evidence a table cell cuts, and the record behind it.
pub fn finding_note(f: &FindingRow) -> Note {
    let mut lines = vec![
        ("finding".to_string(), f.finding_id.to_string()),
        ("severity / kind".into(), format!("{} / {}", f.severity, f.kind)),
        ("agent".into(), f.agent.clone().unwrap_or_else(|| "(none)".into())),
        ("rule".into(), f.rule.clone().unwrap_or_else(|| "(none)".into())),
        ("status".into(), f.status_label()),
        (
            "seen".into(),
            format!(
                "{} time(s), last at {}",
                f.count,
                f.last_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ),
        (
            "action".into(),
            f.action_id
                .map(|a| format!("{a} (Enter opens it)"))
                .unwrap_or_else(|| "(none)".into()),
        ),
        ("evidence".into(), super::view::evidence_text(&f.detail)),
    ];
    if let Some(r) = f.detail["remediation"].as_str() {
        lines.push(("remediation".into(), r.to_string()));
    }
    lines.push(("recorded".into(), pretty_json(&f.detail)));
    Note {
        title: format!("finding {}", f.finding_id),
        lines,
        action: f.action_id,
    }
}

/// A log row in full: its reason and everything it recorded.
pub fn log_note(r: &LogRow) -> Note {
    let mut lines = vec![
        ("seq".to_string(), r.seq.to_string()),
        ("at".into(), r.at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()),
        ("event".into(), r.kind.to_string()),
        ("by".into(), r.actor.clone()),
    ];
    if let Some(a) = &r.agent {
        lines.push(("agent".into(), a.clone()));
    }
    if let Some(t) = &r.tool {
        lines.push(("tool".into(), t.clone()));
    }
    if let Some(reason) = r.detail["reason"].as_str() {
        lines.push(("reason".into(), reason.to_string()));
    }
    lines.push(("recorded".into(), pretty_json(&r.detail)));
    Note {
        title: format!("log row {}", r.seq),
        lines,
        action: r.action_id,
    }
}

/// The actions behind a set of row keys of the current view.
fn ids_of(s: &State, keys: &[String]) -> Vec<Uuid> {
    match s.shown_view() {
        View::Log => {
            let rows = s.visible_log();
            keys.iter()
                .filter_map(|k| k.parse::<i64>().ok())
                .filter_map(|seq| rows.iter().find(|r| r.seq == seq).and_then(|r| r.action_id))
                .collect()
        }
        View::Approvals | View::Compensations => keys.iter().filter_map(|k| Uuid::parse_str(k).ok()).collect(),
        View::Findings => keys
            .iter()
            .filter_map(|k| {
                s.data
                    .findings
                    .iter()
                    .find(|f| f.finding_id.to_string() == *k)
                    .and_then(|f| f.action_id)
            })
            .collect(),
        View::Fleet => Vec::new(),
    }
}

fn names(s: &State) -> Vec<String> {
    let mut v: Vec<String> = s.data.fleet.iter().map(|a| a.agent.clone()).collect();
    v.sort();
    v
}

fn complete(s: &State, input: &str) -> String {
    let words: Vec<&str> = input.split_whitespace().collect();
    let ends_with_space = input.ends_with(' ');
    // Complete a command first, then an agent or tool name.
    let matches: Vec<&str> = COMMANDS
        .iter()
        .copied()
        .filter(|c| c.starts_with(input.trim_start()))
        .collect();
    if matches.len() == 1 && !matches[0].ends_with("agent") && !matches[0].ends_with("tool") {
        return matches[0].to_string();
    }
    if matches.len() == 1 {
        return format!("{} ", matches[0]);
    }
    if !matches.is_empty() {
        let first = matches[0];
        let common = first
            .char_indices()
            .map(|(i, _)| &first[..=i])
            .rev()
            .find(|p| matches.iter().all(|m| m.starts_with(p)))
            .unwrap_or(input);
        if common.len() > input.len() {
            return common.to_string();
        }
    }
    let wants_name =
        matches!(words.first(), Some(&"agent")) || words.get(1).is_some_and(|w| *w == "agent" || *w == "tool");
    if wants_name {
        let partial = if ends_with_space {
            ""
        } else {
            words.last().copied().unwrap_or("")
        };
        let pool: Vec<String> = if words.get(1) == Some(&"tool") {
            let mut t: Vec<String> = s.log.iter().filter_map(|r| r.tool.clone()).collect();
            t.sort();
            t.dedup();
            t
        } else {
            names(s)
        };
        let hits: Vec<&String> = pool.iter().filter(|n| n.starts_with(partial)).collect();
        if hits.len() == 1 {
            let head = if ends_with_space {
                input.to_string()
            } else {
                input[..input.len() - partial.len()].to_string()
            };
            return format!("{head}{}", hits[0]);
        }
    }
    input.to_string()
}

const MARK_SYNTAX: &str = ":mark agent NAME since 1h [tool NAME]";

fn run_command(s: &mut State, input: String) -> Vec<Effect> {
    let words: Vec<&str> = input.split_whitespace().collect();
    let op = s.operator.clone();
    match words.as_slice() {
        [] => Vec::new(),
        ["q"] | ["quit"] => {
            s.quit = true;
            Vec::new()
        }
        ["fleet"] => switch(s, View::Fleet),
        ["log"] => switch(s, View::Log),
        ["approvals"] => switch(s, View::Approvals),
        ["findings"] => switch(s, View::Findings),
        ["compensations"] => switch(s, View::Compensations),
        ["clear"] => {
            s.filter = Filter::default();
            s.notify("filter cleared", false);
            Vec::new()
        }
        ["agent", name] => {
            s.filter = Filter {
                agent: Some(name.to_string()),
                ..Filter::default()
            };
            s.view = View::Log;
            s.notify(format!("filter: agent:{name}"), false);
            Vec::new()
        }
        ["mark", ..] if !acting(s) => Vec::new(),
        ["mark", "agent", agent, "since", dur, rest @ ..] => {
            let tool = match rest {
                [] => None,
                ["tool", t] => Some(t.to_string()),
                _ => {
                    s.notify(
                        format!("{MARK_SYNTAX}: after the duration only `tool NAME` may follow"),
                        true,
                    );
                    return Vec::new();
                }
            };
            match crate::filecheck::parse_duration(dur) {
                Ok(secs) => {
                    let since = s.now - chrono::Duration::milliseconds((secs * 1000.0) as i64);
                    s.notify(format!("finding the actions of {agent} since {dur} ..."), false);
                    vec![Effect::MarkQuery {
                        agent: agent.to_string(),
                        since,
                        tool,
                    }]
                }
                Err(e) => {
                    s.notify(format!("{e} ({MARK_SYNTAX})"), true);
                    Vec::new()
                }
            }
        }
        ["mark", ..] => {
            s.notify(format!("the syntax is {MARK_SYNTAX}"), true);
            Vec::new()
        }
        ["pause", "fleet"] | ["pause"] => pause_fleet(s),
        ["pause" | "resume", ..] if !acting(s) => Vec::new(),
        ["pause", scope @ ("agent" | "tool"), name] if !s.readonly => {
            let scope = if *scope == "agent" { Scope::Agent } else { Scope::Tool };
            if s.knows(scope, name) != Some(true) {
                // A typo pauses nothing real: ask before adding a paused name.
                s.mode = Mode::ConfirmPause {
                    scope,
                    target: name.to_string(),
                };
                return Vec::new();
            }
            vec![Effect::Pause {
                scope,
                target: Some(name.to_string()),
                reason: format!("{} {name} paused from the control room by {op}", scope.as_str()),
            }]
        }
        ["resume", "fleet"] | ["resume"] if !s.readonly => {
            s.mode = Mode::ConfirmResume {
                scope: Scope::Fleet,
                target: None,
            };
            Vec::new()
        }
        ["resume", scope @ ("agent" | "tool"), name] if !s.readonly => {
            s.mode = Mode::ConfirmResume {
                scope: if *scope == "agent" { Scope::Agent } else { Scope::Tool },
                target: Some(name.to_string()),
            };
            Vec::new()
        }
        _ => {
            s.notify(
                format!("unknown command :{input} (try :agent NAME, :mark agent NAME since 1h [tool NAME], :pause agent NAME, :pause tool NAME, :resume ..., :findings, :quit; Tab completes)"),
                true,
            );
            Vec::new()
        }
    }
}

fn switch(s: &mut State, v: View) -> Vec<Effect> {
    s.view = v;
    Vec::new()
}

/// Where j/k/PgDn/PgUp move a scrolled text (the detail, a note); None for other keys.
fn scrolled(code: KeyCode, scroll: u16) -> Option<u16> {
    match code {
        KeyCode::Char('j') | KeyCode::Down => Some(scroll.saturating_add(1)),
        KeyCode::Char('k') | KeyCode::Up => Some(scroll.saturating_sub(1)),
        KeyCode::PageDown => Some(scroll.saturating_add(10)),
        KeyCode::PageUp => Some(scroll.saturating_sub(10)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::state::{AgentRow, FindingRow, HeldRow, Switch};
    use rust_decimal::Decimal;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:04:55Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn row(seq: i64, kind: &str, agent: &str, action: Option<Uuid>) -> LogRow {
        LogRow {
            seq,
            at: now(),
            kind: kind.parse().expect("a kind"),
            actor: agent.into(),
            agent: Some(agent.into()),
            tool: Some("issue_refund".into()),
            action_id: action,
            correlation_id: None,
            parent_action: None,
            amount: Some(Decimal::from(100)),
            confidence: Some(0.9),
            reasoning: None,
            inputs: None,
            params: None,
            result: None,
            detail: json!({"verdict": "allow", "reason": "ok"}),
            policy_version: Some(1),
            registry_version: Some(1),
            txid: "1".into(),
        }
    }

    fn state_with_rows(n: i64) -> (State, Vec<Uuid>) {
        let mut s = State::new("test", "ana", false, now());
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let rows = ids
            .iter()
            .enumerate()
            .map(|(i, id)| row(i as i64 + 1, "allowed", "refund-bot", Some(*id)))
            .collect();
        update(&mut s, Msg::Rows { rows, lag_ms: Some(3) });
        (s, ids)
    }

    fn keys(s: &mut State, text: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        for c in text.chars() {
            out.extend(update(s, press(c)));
        }
        out
    }

    #[test]
    fn new_rows_follow_until_the_cursor_moves() {
        let (mut s, ids) = state_with_rows(3);
        assert_eq!(s.cursor_action(), Some(ids[2]), "following: the newest row");
        update(&mut s, press('j'));
        assert!(!s.following);
        let before = s.cursor_key();
        update(
            &mut s,
            Msg::Rows {
                rows: vec![row(4, "allowed", "refund-bot", Some(Uuid::new_v4()))],
                lag_ms: None,
            },
        );
        assert_eq!(s.cursor_key(), before, "the cursor stays on its row, by identity");
        assert_eq!(s.new_rows, 1);
        update(&mut s, press('g'));
        assert!(s.following && s.new_rows == 0);
    }

    #[test]
    fn views_switch_with_digits_and_commands() {
        let mut s = State::new("t", "ana", false, now());
        for (c, v) in [
            ('1', View::Fleet),
            ('2', View::Log),
            ('3', View::Approvals),
            ('4', View::Findings),
            ('5', View::Compensations),
        ] {
            update(&mut s, press(c));
            assert_eq!(s.view, v);
        }
        keys(&mut s, ":findings");
        update(&mut s, press_code(KeyCode::Enter));
        assert_eq!(s.view, View::Findings);
    }

    #[test]
    fn marks_ranges_and_clearing_are_by_action() {
        let (mut s, ids) = state_with_rows(5);
        update(&mut s, press(' '));
        assert!(s.marks.contains(&ids[4]));
        update(&mut s, press('V'));
        update(&mut s, press('j'));
        update(&mut s, press('j'));
        update(&mut s, press('V'));
        assert!(s.marks.contains(&ids[3]) && s.marks.contains(&ids[2]) && s.marks.contains(&ids[1]));
        update(&mut s, press('u'));
        assert!(s.marks.is_empty());
        update(&mut s, press('*'));
        assert_eq!(s.marks.len(), 5);
    }

    #[test]
    fn compensate_plans_then_asks_then_requests() {
        let (mut s, ids) = state_with_rows(2);
        update(&mut s, press(' '));
        let fx = update(&mut s, press('c'));
        assert_eq!(fx, vec![Effect::Plan(vec![ids[1]])]);
        let plan = Plan {
            selection: crate::compensation::Selection::Actions(vec![ids[1]]),
            steps: vec![],
            totals: crate::compensation::PlanTotals {
                steps: 1,
                will_compensate: 1,
                value_recovered: Decimal::from(100),
                recovered_out: Decimal::ZERO,
                recovered_in: Decimal::ZERO,
                value_not_recoverable: Decimal::ZERO,
                entities_touched: 1,
                dependents: 0,
                read_only: 0,
            },
        };
        update(&mut s, Msg::Plan(plan.clone()));
        assert_eq!(s.mode, Mode::Plan);
        // j, k and the page keys scroll the plan; n cancels it.
        for k in [
            press('j'),
            press('k'),
            press_code(KeyCode::PageDown),
            press_code(KeyCode::PageUp),
        ] {
            assert!(update(&mut s, k).is_empty());
            assert_eq!(s.mode, Mode::Plan, "scrolling keeps the plan");
        }
        update(&mut s, press('n'));
        assert_eq!(s.mode, Mode::Normal);
        update(&mut s, Msg::Plan(plan.clone()));
        update(&mut s, press('y'));
        assert!(matches!(
            s.mode,
            Mode::Input {
                purpose: Purpose::Compensate(_),
                ..
            }
        ));
        // The reason starts empty and is required.
        assert!(matches!(&s.mode, Mode::Input { purpose: Purpose::Compensate(_), input } if input.is_empty()));
        assert!(update(&mut s, press_code(KeyCode::Enter)).is_empty());
        assert!(s.notice.as_ref().unwrap().text.contains("a reason is required"));
        keys(&mut s, "wrong customer");
        let fx = update(&mut s, press_code(KeyCode::Enter));
        assert!(matches!(&fx[..], [Effect::Request { reason, .. }] if reason == "wrong customer"));
        // What is requested is the plan that was on screen, step by step, with the outcome shown.
        let (a, b) = (Uuid::from_u128(7), Uuid::from_u128(8));
        let step = |id: Uuid, outcome: &str| crate::compensation::PlanStep {
            action_id: id,
            selected: true,
            caused_by: None,
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            class: Some("conditional".into()),
            amount: None,
            entity: None,
            correlation_id: None,
            status: "executed".into(),
            executed_seq: Some(1),
            outcome: outcome.into(),
            detail: None,
            inverse_tool: None,
            inverse_params: None,
            direction: None,
        };
        let mut shown = plan.clone();
        shown.steps = vec![step(a, "requested"), step(b, "expired")];
        update(&mut s, Msg::Plan(shown));
        update(&mut s, press('y'));
        keys(&mut s, "wrong customer");
        let fx = update(&mut s, press_code(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::Request {
                shown: vec![(a, "requested".into()), (b, "expired".into())],
                reason: "wrong customer".into()
            }]
        );
        assert!(s.marks.is_empty());
    }

    #[test]
    fn pause_is_one_key_and_resume_defaults_to_no() {
        let (mut s, _) = state_with_rows(1);
        let fx = update(&mut s, press('P'));
        assert!(matches!(
            &fx[..],
            [Effect::Pause {
                scope: Scope::Fleet,
                target: None,
                ..
            }]
        ));
        s.data.switches = vec![Switch {
            scope: Scope::Fleet,
            target: "*".into(),
            by: "ana".into(),
            reason: "x".into(),
        }];
        update(&mut s, press('R'));
        assert!(matches!(
            s.mode,
            Mode::ConfirmResume {
                scope: Scope::Fleet,
                ..
            }
        ));
        let fx = update(&mut s, press_code(KeyCode::Enter));
        assert!(fx.is_empty() && s.mode == Mode::Normal, "Enter is No");
        update(&mut s, press('R'));
        let fx = update(&mut s, press('y'));
        assert!(matches!(
            &fx[..],
            [Effect::Resume {
                scope: Scope::Fleet,
                ..
            }]
        ));
        // p pauses the agent under the cursor, after one key (default No).
        assert!(update(&mut s, press('p')).is_empty());
        assert!(matches!(
            s.mode,
            Mode::ConfirmPause {
                scope: Scope::Agent,
                ..
            }
        ));
        assert!(update(&mut s, press('n')).is_empty());
        update(&mut s, press('p'));
        let fx = update(&mut s, press('y'));
        assert!(matches!(&fx[..], [Effect::Pause { scope: Scope::Agent, target: Some(a), .. }] if a == "refund-bot"));
        // P works from help, detail and the plan too.
        update(&mut s, press('?'));
        assert!(!update(&mut s, press('P')).is_empty());
    }

    #[test]
    fn approve_and_reject_need_a_held_action_and_reject_needs_a_reason() {
        let mut s = State::new("t", "ana", false, now());
        let id = Uuid::new_v4();
        s.data.approvals = vec![HeldRow {
            action_id: id,
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            amount: Some(Decimal::from(47000)),
            rule: Some("four_eyes".into()),
            reason: "two approvers".into(),
            approvals: 0,
            approvals_needed: 2,
            approved_by: vec![],
            held_at: now(),
            expires_at: now(),
        }];
        update(&mut s, press('3'));
        // a asks for one key (default No), showing what is approved.
        assert!(update(&mut s, press('a')).is_empty());
        assert_eq!(s.mode, Mode::ConfirmApprove(id));
        assert!(update(&mut s, press_code(KeyCode::Enter)).is_empty(), "Enter is No");
        assert_eq!(s.mode, Mode::Normal);
        update(&mut s, press('a'));
        assert_eq!(update(&mut s, press('y')), vec![Effect::Approve(id)]);
        update(&mut s, press('r'));
        assert!(matches!(
            s.mode,
            Mode::Input {
                purpose: Purpose::Reject(_),
                ..
            }
        ));
        assert!(
            update(&mut s, press_code(KeyCode::Enter)).is_empty(),
            "an empty reason is refused"
        );
        keys(&mut s, "not entitled");
        let fx = update(&mut s, press_code(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::Reject {
                id,
                note: "not entitled".into()
            }]
        );
        // Esc backs out of any input without acting.
        update(&mut s, press('r'));
        assert!(update(&mut s, press_code(KeyCode::Esc)).is_empty());
        assert_eq!(s.mode, Mode::Normal);
    }

    #[test]
    fn readonly_rooms_have_no_acting_keys() {
        let (mut s, _) = state_with_rows(3);
        s.readonly = true;
        for c in ['P', 'p', 'R', ' ', 'c', 'a', 'r', 'A', 'x', 'V', '*', 'u'] {
            assert!(update(&mut s, press(c)).is_empty(), "{c}");
            assert_eq!(s.mode, Mode::Normal);
        }
        assert!(s.marks.is_empty());
        assert!(crate::tui::keys::footer(View::Log, true).iter().all(|k| !k.acting));
    }

    #[test]
    fn filters_and_commands_with_completion() {
        let (mut s, _) = state_with_rows(3);
        update(
            &mut s,
            Msg::Rows {
                rows: vec![row(10, "held", "other-bot", Some(Uuid::new_v4()))],
                lag_ms: None,
            },
        );
        keys(&mut s, "/agent:other-bot");
        update(&mut s, press_code(KeyCode::Enter));
        assert_eq!(s.visible_log().len(), 1);
        keys(&mut s, "/");
        // The input starts from the current filter: Ctrl-U clears it, and a
        // control chord is never typed as text.
        update(
            &mut s,
            Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
        );
        update(&mut s, Msg::Key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::ALT)));
        update(&mut s, press_code(KeyCode::Enter));
        assert_eq!(s.visible_log().len(), 4);
        keys(&mut s, "/amount>lots");
        update(&mut s, press_code(KeyCode::Enter));
        assert!(s.notice.as_ref().unwrap().error);
        // An unknown key is an error at the prompt, which stays open with the text.
        update(
            &mut s,
            Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
        );
        keys(&mut s, "agnet:x");
        update(&mut s, press_code(KeyCode::Enter));
        assert_eq!(
            s.mode,
            Mode::Filter {
                input: "agnet:x".into()
            }
        );
        let n = s.notice.clone().unwrap();
        assert!(
            n.error && n.text.contains("unknown filter key agnet:") && n.text.contains("agent:NAME"),
            "{}",
            n.text
        );
        assert_eq!(s.visible_log().len(), 4, "the filter in force is unchanged");
        update(&mut s, press_code(KeyCode::Esc));
        s.data.fleet = vec![AgentRow {
            agent: "refund-bot".into(),
            paused: None,
            per_bucket: vec![],
            per_minute: 0.0,
            held: 0,
            held_value: Decimal::ZERO,
            findings: 0,
            drift: None,
            drift_since: None,
        }];
        keys(&mut s, ":pau");
        update(&mut s, press_code(KeyCode::Tab));
        assert_eq!(s.mode, Mode::Command { input: "pause ".into() });
        keys(&mut s, "agent ref");
        update(&mut s, press_code(KeyCode::Tab));
        assert_eq!(
            s.mode,
            Mode::Command {
                input: "pause agent refund-bot".into()
            }
        );
        let fx = update(&mut s, press_code(KeyCode::Enter));
        assert!(matches!(
            &fx[..],
            [Effect::Pause {
                scope: Scope::Agent,
                ..
            }]
        ));
        keys(&mut s, ":nonsense");
        update(&mut s, press_code(KeyCode::Enter));
        assert!(s.notice.as_ref().unwrap().text.contains("unknown command"));
    }

    #[test]
    fn freeze_keeps_the_screen_while_rows_arrive() {
        let (mut s, _) = state_with_rows(2);
        update(&mut s, press('f'));
        update(
            &mut s,
            Msg::Rows {
                rows: vec![row(9, "allowed", "x", Some(Uuid::new_v4()))],
                lag_ms: None,
            },
        );
        assert_eq!(s.visible_log().len(), 2);
        assert_eq!(s.new_rows, 1);
        assert_eq!(s.log.len(), 3, "kept in the background");
        update(&mut s, press('f'));
        assert_eq!(s.visible_log().len(), 3);
    }

    #[test]
    fn enter_opens_the_detail_and_findings_can_be_acknowledged() {
        let (mut s, ids) = state_with_rows(1);
        assert_eq!(
            update(&mut s, press_code(KeyCode::Enter)),
            vec![Effect::LoadDetail(ids[0])]
        );
        assert!(matches!(s.mode, Mode::Detail { .. }));
        update(&mut s, press_code(KeyCode::Esc));
        assert_eq!(s.mode, Mode::Normal);
        let fid = Uuid::new_v4();
        s.data.findings = vec![FindingRow {
            finding_id: fid,
            kind: "drift".into(),
            severity: "high".into(),
            agent: Some("refund-bot".into()),
            action_id: None,
            rule: Some("drift".into()),
            status: "open".into(),
            count: 1,
            last_at: now(),
            detail: json!({}),
            auto: None,
        }];
        update(&mut s, press('4'));
        update(&mut s, press('A'));
        keys(&mut s, "looking");
        assert_eq!(
            update(&mut s, press_code(KeyCode::Enter)),
            vec![Effect::Acknowledge {
                id: fid,
                note: "looking".into()
            }]
        );
        update(&mut s, press('x'));
        keys(&mut s, "fixed");
        assert_eq!(
            update(&mut s, press_code(KeyCode::Enter)),
            vec![Effect::Resolve {
                id: fid,
                note: "fixed".into()
            }]
        );
    }

    fn held(n: u128, amount: i64) -> HeldRow {
        HeldRow {
            action_id: Uuid::from_u128(n),
            agent: "refund-bot".into(),
            tool: "issue_refund".into(),
            amount: Some(Decimal::from(amount)),
            rule: None,
            reason: "over limit".into(),
            approvals: 0,
            approvals_needed: 1,
            approved_by: vec![],
            held_at: now(),
            expires_at: now(),
        }
    }

    #[test]
    fn a_collapsed_room_acts_only_on_rows_on_screen() {
        let (mut s, ids) = state_with_rows(3);
        s.data.approvals = vec![held(1, 300), held(2, 200), held(3, 100)];
        s.size = Some((60, 20));
        // 3 chooses a view that is not on screen: j moves the log's cursor (on screen) ...
        let log_before = s.cursor_index_of(View::Log);
        assert!(keys(&mut s, "3jj").is_empty());
        assert_eq!(
            s.cursor_index_of(View::Approvals),
            0,
            "the hidden view's cursor never moves"
        );
        assert_eq!(s.cursor_index_of(View::Log), log_before + 2);
        // ... and every key that acts on a row says why it does nothing.
        for c in ['a', 'r', 'p', ' ', 'c', 'A', 'x', 'V', '*'] {
            s.notice = None;
            assert!(update(&mut s, press(c)).is_empty(), "{c}");
            assert_eq!(s.mode, Mode::Normal, "{c}");
            let n = s.notice.clone().expect("a notice");
            assert!(n.error && n.text.contains("not on screen at 60x20"), "{c}: {}", n.text);
        }
        assert!(update(&mut s, press_code(KeyCode::Enter)).is_empty());
        assert_eq!(s.mode, Mode::Normal);
        assert!(s.marks.is_empty());
        // The fleet pause is one key at any size.
        assert!(!update(&mut s, press('P')).is_empty());
        // On the log (what is on screen), keys act on the highlighted row.
        update(&mut s, press('2'));
        update(&mut s, press(' '));
        assert!(s.marks.contains(&ids[0]), "the highlighted (oldest) row");
        // Large enough again: the approvals are on screen and a acts on the one highlighted.
        s.size = Some((120, 40));
        update(&mut s, press('3'));
        update(&mut s, press('j'));
        update(&mut s, press('a'));
        assert_eq!(update(&mut s, press('y')), vec![Effect::Approve(Uuid::from_u128(2))]);
    }

    #[test]
    fn pausing_a_name_nobody_has_seen_asks_first() {
        let (mut s, _) = state_with_rows(1);
        s.data.known_agents = Some(["refund-bot".to_string(), "login-bot".to_string()].into());
        s.data.known_tools = Some(["issue_refund".to_string(), "send_email".to_string()].into());
        let run = |s: &mut State, cmd: &str| {
            keys(s, cmd);
            update(s, press_code(KeyCode::Enter))
        };
        // Unknown: a question, default No; nothing paused.
        assert!(run(&mut s, ":pause agent nosuchbot").is_empty());
        assert_eq!(
            s.mode,
            Mode::ConfirmPause {
                scope: Scope::Agent,
                target: "nosuchbot".into()
            }
        );
        assert!(update(&mut s, press_code(KeyCode::Enter)).is_empty(), "Enter is No");
        assert_eq!(s.mode, Mode::Normal);
        assert!(run(&mut s, ":pause tool nosuchtool").is_empty());
        assert!(update(&mut s, press('n')).is_empty());
        // y pauses it anyway, saying it was unknown.
        run(&mut s, ":pause agent nosuchbot");
        let fx = update(&mut s, press('y'));
        assert!(
            matches!(&fx[..], [Effect::Pause { scope: Scope::Agent, target: Some(t), reason }] if t == "nosuchbot" && reason.contains("unknown")),
            "{fx:?}"
        );
        // Known names (the log, the logins, the registry) pause at once.
        for cmd in [
            ":pause agent refund-bot",
            ":pause agent login-bot",
            ":pause tool send_email",
        ] {
            assert!(matches!(&run(&mut s, cmd)[..], [Effect::Pause { .. }]), "{cmd}");
        }
        // When the room cannot read the names, it asks.
        s.data.known_agents = None;
        assert!(run(&mut s, ":pause agent login-bot").is_empty());
        assert!(matches!(s.mode, Mode::ConfirmPause { .. }));
    }

    #[test]
    fn marking_one_row_of_an_action_does_not_unmark_it_on_the_next() {
        let mut s = State::new("test", "ana", false, now());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // Newest first: a's result, a's verdict, then b.
        let rows = vec![
            row(1, "allowed", "x", Some(b)),
            row(2, "allowed", "x", Some(a)),
            row(3, "executed", "x", Some(a)),
        ];
        update(&mut s, Msg::Rows { rows, lag_ms: None });
        update(&mut s, press(' '));
        update(&mut s, press(' '));
        assert_eq!(s.marks, [a, b].into(), "both marked, neither toggled back");
        // Back on a's other row, space is an honest toggle.
        update(&mut s, press('k'));
        update(&mut s, press(' '));
        assert_eq!(s.marks, [b].into());
        // V says, once, what the range held.
        update(&mut s, press('u'));
        update(&mut s, press('g'));
        update(&mut s, press('V'));
        assert!(s.notice.as_ref().unwrap().text.starts_with("range: from this row"));
        update(&mut s, press('j'));
        update(&mut s, press('V'));
        assert_eq!(
            s.notice.as_ref().unwrap().text,
            "range: 2 row(s), 1 action(s) (1 newly marked); 1 marked in all"
        );
    }

    #[test]
    fn a_filter_reaches_every_view_that_shows_its_field_and_statuses_can_be_typed() {
        let (mut s, ids) = state_with_rows(3);
        s.status_of.insert(ids[0], "comp. requested".into());
        for typed in [
            "/status:\"comp. requested\"",
            "/status:comp-requested",
            "/status:comp_requested",
        ] {
            keys(&mut s, "/");
            update(
                &mut s,
                Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
            );
            keys(&mut s, &typed[1..]);
            update(&mut s, press_code(KeyCode::Enter));
            assert_eq!(s.mode, Mode::Normal, "{typed}");
            assert_eq!(s.visible_log().len(), 1, "{typed}");
        }
        // Re-opening the prompt shows a value it can parse again.
        assert_eq!(
            Filter::parse(&s.filter.describe()).unwrap(),
            s.filter,
            "{}",
            s.filter.describe()
        );
        assert!(
            Filter::parse("verdict:maybe")
                .unwrap_err()
                .contains("allow, hold, block")
        );
        assert!(Filter::parse("status:\"open").unwrap_err().contains("quote"));
        // Views filter by the fields they show and name the ones they cannot.
        s.filter = Filter::parse("agent:refund-bot tool:issue_refund").unwrap();
        s.data.fleet = ["refund-bot", "other-bot"]
            .iter()
            .map(|a| AgentRow {
                agent: a.to_string(),
                paused: None,
                per_bucket: vec![],
                per_minute: 0.0,
                held: 0,
                held_value: Decimal::ZERO,
                findings: 0,
                drift: None,
                drift_since: None,
            })
            .collect();
        assert_eq!(s.visible_fleet().len(), 1);
        assert_eq!(s.filter.ignored_by(View::Fleet), vec!["tool"]);
        assert!(s.filter.ignored_by(View::Compensations).is_empty());
        assert_eq!(
            Filter::parse("amount>5 verdict:hold")
                .unwrap()
                .ignored_by(View::Findings),
            vec!["verdict", "amount"]
        );
    }

    #[test]
    fn the_open_detail_reloads_when_its_action_changes() {
        let (mut s, ids) = state_with_rows(2);
        update(&mut s, press('j'));
        assert_eq!(
            update(&mut s, press_code(KeyCode::Enter)),
            vec![Effect::LoadDetail(ids[0])]
        );
        let detail = |id| {
            Msg::Detail(Box::new(Detail {
                action_id: id,
                action: None,
            }))
        };
        // A late answer about another action does not take the screen.
        update(&mut s, detail(ids[1]));
        assert!(s.detail.is_none());
        update(&mut s, detail(ids[0]));
        assert_eq!(s.detail.as_ref().map(|d| d.action_id), Some(ids[0]));
        let fx = update(
            &mut s,
            Msg::Rows {
                rows: vec![row(10, "executed", "refund-bot", Some(ids[0]))],
                lag_ms: None,
            },
        );
        assert!(fx.contains(&Effect::LoadDetail(ids[0])), "{fx:?}");
        assert!(s.detail.is_some(), "the old record stays until the new one comes");
        let fx = update(
            &mut s,
            Msg::Rows {
                rows: vec![row(11, "executed", "refund-bot", Some(ids[1]))],
                lag_ms: None,
            },
        );
        assert!(!fx.iter().any(|e| matches!(e, Effect::LoadDetail(_))), "{fx:?}");
        // Closed: nothing reloads.
        update(&mut s, press_code(KeyCode::Esc));
        let fx = update(
            &mut s,
            Msg::Rows {
                rows: vec![row(12, "compensated", "refund-bot", Some(ids[0]))],
                lag_ms: None,
            },
        );
        assert!(!fx.iter().any(|e| matches!(e, Effect::LoadDetail(_))), "{fx:?}");
    }

    #[test]
    fn mark_by_query_asks_the_database() {
        let (mut s, _) = state_with_rows(1);
        let run = |s: &mut State, cmd: &str| {
            keys(s, cmd);
            update(s, press_code(KeyCode::Enter))
        };
        assert_eq!(
            run(&mut s, ":mark agent bulk-bot since 1h tool issue_refund"),
            vec![Effect::MarkQuery {
                agent: "bulk-bot".into(),
                since: now() - chrono::Duration::hours(1),
                tool: Some("issue_refund".into()),
            }]
        );
        assert!(matches!(
            &run(&mut s, ":mark agent bulk-bot since 30m")[..],
            [Effect::MarkQuery { tool: None, .. }]
        ));
        for bad in [
            ":mark agent bulk-bot since soon",
            ":mark bulk-bot",
            ":mark agent a since 1h tool",
        ] {
            assert!(run(&mut s, bad).is_empty(), "{bad}");
            let n = s.notice.clone().unwrap();
            assert!(
                n.error && n.text.contains(":mark agent NAME since 1h"),
                "{bad}: {}",
                n.text
            );
        }
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        update(
            &mut s,
            Msg::Marked {
                what: "of bulk-bot".into(),
                ids: Ok(vec![a, b]),
            },
        );
        assert_eq!(s.marks, [a, b].into());
        // c plans the rollback of exactly the marks.
        update(&mut s, press('2'));
        assert_eq!(update(&mut s, press('c')), vec![Effect::Plan(vec![a, b])]);
        s.readonly = true;
        assert!(run(&mut s, ":mark agent bulk-bot since 1h").is_empty());
    }

    #[test]
    fn quit_and_help() {
        let mut s = State::new("t", "ana", false, now());
        update(&mut s, press('?'));
        assert_eq!(s.mode, Mode::Help);
        update(&mut s, press_code(KeyCode::Esc));
        assert_eq!(s.mode, Mode::Normal);
        update(&mut s, press('q'));
        assert!(s.quit);
    }
}
