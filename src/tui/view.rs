//! `view(&State, &mut Frame)`: drawing only. Colours come from the terminal's
//! palette and never carry meaning alone (every state is also a word or a
//! symbol); NO_COLOR drops them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};
use serde_json::Value;

use super::keys;
use super::state::{Card, Checks, Conn, Detail, HeldRow, Mode, State, View};
use crate::contract::{EventKind as K, LogRow, Scope};
use crate::output::{cut, money};

/// The smallest terminal the room draws in (below it, a message; P still works).
pub const MIN_W: u16 = 40;
pub const MIN_H: u16 = 8;
/// Below this the layout collapses to the log alone.
pub const FULL_W: u16 = 80;
pub const FULL_H: u16 = 24;
/// From this width the approval card sits beside the queue; below, under it.
pub const CARD_SIDE_W: u16 = 120;

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn banner(&self) -> Style {
        let s = Style::default().add_modifier(Modifier::BOLD);
        if self.color {
            s.fg(Color::White).bg(Color::Red)
        } else {
            s.add_modifier(Modifier::REVERSED)
        }
    }
    fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
    fn dim(&self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        }
    }
    fn bold(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }
    fn verdict(&self, v: &str) -> Style {
        match v {
            "HOLD" | "held" => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            "BLOCK" | "blocked" | "rejected" | "expired" => self.fg(Color::Red),
            _ => Style::default(),
        }
    }
}

pub fn view(s: &State, f: &mut Frame, theme: &Theme) {
    let area = f.area();
    if area.width < MIN_W || area.height < MIN_H {
        too_small(s, f, area, theme);
        return;
    }
    let compact = area.width < FULL_W || area.height < FULL_H;
    let mut rows = vec![Constraint::Length(1), Constraint::Length(1), Constraint::Min(3)];
    if !compact {
        rows.push(Constraint::Length(1));
    }
    rows.extend([Constraint::Length(1), Constraint::Length(1)]);
    let parts = Layout::vertical(rows).split(area);
    header(s, f, parts[0], theme);
    tabs(s, f, parts[1], theme, compact);
    let body = parts[2];
    match &s.mode {
        Mode::Help => help(s, f, body, theme),
        Mode::Detail { scroll } => detail(s, f, body, *scroll, theme),
        Mode::Note { scroll } => note(s, f, body, *scroll, theme),
        Mode::Plan => plan(s, f, body, theme),
        _ => match (s.view, compact) {
            (_, true) | (View::Log, false) => log(s, f, body, theme, compact),
            (View::Fleet, false) => fleet(s, f, body, theme),
            (View::Approvals, false) => approvals(s, f, body, theme),
            (View::Findings, false) => findings(s, f, body, theme),
            (View::Compensations, false) => compensations(s, f, body, theme),
        },
    }
    let mut i = 3;
    if !compact {
        agent_summary(s, f, parts[3], theme);
        i = 4;
    }
    status(s, f, parts[i], theme);
    footer(s, f, parts[i + 1], theme, compact);
}

/// The PAUSED banner's own words: who paused the fleet and why, said once
/// (a reason that already says "fleet paused ... by WHO" is not prefixed again).
fn pause_text(s: &State) -> Option<String> {
    pause_parts(s).map(|(why, undo)| format!(" ■ PAUSED  {why}{undo}"))
}

fn pause_parts(s: &State) -> Option<(String, &'static str)> {
    let sw = s.fleet_paused()?;
    // The room's own reason reads "fleet paused from ... by WHO": said as
    // "fleet paused by WHO: from ...", not "fleet paused by WHO: fleet paused ... by WHO".
    let own = sw
        .reason
        .strip_prefix("fleet paused ")
        .and_then(|r| r.strip_suffix(&format!(" by {}", sw.by)));
    let why = match own {
        Some(rest) => format!("fleet paused by {}: {rest}", sw.by),
        None => format!("fleet paused by {}: {}", sw.by, sw.reason),
    };
    let undo = if s.readonly { "" } else { "  (R resumes)" };
    Some((why, undo))
}

fn too_small(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let mut lines = Vec::new();
    if let Some(p) = pause_text(s) {
        lines.push(Line::styled(
            format!("{p:<w$}", w = area.width as usize),
            theme.banner(),
        ));
    }
    lines.push(Line::from(format!(
        "Backstop needs at least {MIN_W}x{MIN_H}; this terminal is {}x{}.",
        area.width, area.height
    )));
    lines.push(Line::from("P pauses the fleet. q quits."));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
}

fn header(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let (conn, cs) = match &s.conn {
        Conn::Live => ("● LIVE".to_string(), theme.fg(Color::Green)),
        Conn::Connecting => ("… CONNECTING".to_string(), theme.fg(Color::Yellow)),
        Conn::Reconnecting(e) => (
            format!("○ RECONNECTING ({})", cut(e, 30)),
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
    };
    let lag = s.lag_ms.map(|l| format!("  lag {l}ms")).unwrap_or_default();
    let (held, value) = s.held_total();
    let readonly = if s.readonly { " (read-only)" } else { "" };
    // Paused: the banner takes the line, and the header's facts stay on it.
    if let Some((why, undo)) = pause_parts(s) {
        let w = area.width as usize;
        // Narrow: the facts that say whether the room can be trusted (live,
        // lag, held, read-only) stay; the value and findings give way to who paused.
        let facts = if w >= 110 {
            format!(
                " {conn}{lag}  {} held {}  {} findings{readonly} ",
                held,
                money(Some(value)),
                s.open_findings()
            )
        } else {
            format!(" {conn}{lag}  {held} held{readonly} ")
        };
        let room = w.saturating_sub(facts.chars().count());
        // The reason gives way (cut with …) before how to undo it does.
        let head = " ■ PAUSED  ";
        let why = cut(
            &why,
            room.saturating_sub(head.chars().count() + undo.chars().count()).max(1),
        );
        let text = format!("{:<room$}{facts}", format!("{head}{why}{undo}"));
        f.render_widget(Paragraph::new(Line::styled(cut(&text, w), theme.banner())), area);
        return;
    }
    let right = format!(
        " {} agents  {} held {}  {} findings ",
        s.data.fleet.len(),
        held,
        money(Some(value)),
        s.open_findings()
    );
    let wide = area.width >= 110;
    let where_ = if wide {
        format!(" {}  operator: {}", s.db_label, s.operator)
    } else {
        format!(" {}", s.operator)
    };
    let left = vec![
        Span::styled(" BACKSTOP ", theme.bold()),
        Span::raw(format!("{where_}{readonly}  ")),
        Span::styled(conn, cs),
        Span::raw(format!("{lag} ")),
    ];
    let used: usize = left.iter().map(|sp| sp.content.chars().count()).sum::<usize>() + right.chars().count();
    let fill = (area.width as usize).saturating_sub(used);
    let mut spans = left;
    spans.push(Span::styled("─".repeat(fill), theme.dim()));
    spans.push(Span::raw(right));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn tabs(s: &State, f: &mut Frame, area: Rect, theme: &Theme, compact: bool) {
    let compact = compact || area.width < 100;
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let label = if compact {
            format!(" {} {} ", i + 1, &v.title()[..3])
        } else {
            format!(" {} {} ", i + 1, v.title())
        };
        let st = if *v == s.view {
            theme.selected().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        spans.push(Span::styled(label, st));
    }
    let mut right = String::new();
    let paused: Vec<&crate::tui::state::Switch> =
        s.data.switches.iter().filter(|sw| sw.scope != Scope::Fleet).collect();
    match (paused.len(), compact) {
        (0, _) => {}
        (1, false) => right.push_str(&format!("{} {} PAUSED  ", paused[0].scope.as_str(), paused[0].target)),
        (n, _) => right.push_str(&format!("{n} PAUSED  ")),
    }
    right.push_str(&format!("{} UTC ", s.now.format("%H:%M:%S")));
    let tabs_w: usize = spans.iter().map(|sp| sp.content.chars().count()).sum();
    if !s.filter.is_empty() {
        // Say which keys this view cannot filter by, rather than look
        // filtered; the description gives way (cut with …) before that does.
        let ignored = s.filter.ignored_by(s.shown_view());
        let note = if ignored.is_empty() {
            String::new()
        } else {
            format!(" ({} not in this view)", ignored.join(", "))
        };
        let room = (area.width as usize).saturating_sub(tabs_w + right.chars().count() + 3);
        let desc = cut(
            &format!("filter: {}", s.filter.describe()),
            room.saturating_sub(note.chars().count()).max(8),
        );
        right = format!(" {desc}{note}  {right}");
    }
    let used = tabs_w + right.chars().count();
    spans.push(Span::raw(" ".repeat((area.width as usize).saturating_sub(used))));
    spans.push(Span::raw(right));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn gutter(s: &State, selected: bool, action: Option<uuid::Uuid>) -> String {
    let cur = if selected { "▶" } else { " " };
    let mark = if action.is_some_and(|a| s.marks.contains(&a)) {
        "*"
    } else {
        " "
    };
    format!("{cur}{mark}")
}

fn verdict_word(r: &LogRow) -> String {
    match r.kind {
        K::Allowed => "allow".into(),
        K::Held => "HOLD".into(),
        K::Blocked => "BLOCK".into(),
        K::Approved => format!("approved by {}", r.actor),
        K::Rejected => format!("rejected by {}", r.actor),
        K::Paused | K::Resumed => format!("{} {}", r.kind, r.detail["scope"].as_str().unwrap_or("")),
        k => k.to_string(),
    }
}

/// The width each column of a table gets in `width` columns (as `Table` lays them out).
fn col_widths(widths: &[Constraint], width: u16) -> Vec<usize> {
    Layout::horizontal(widths.to_vec())
        .flex(Flex::Start)
        .spacing(1)
        .split(Rect::new(0, 0, width, 1))
        .iter()
        .map(|r| r.width as usize)
        .collect()
}

/// A table row whose cells are cut to their columns, with `…` where cut.
fn fitted<'a>(widths: &[usize], cells: Vec<Span<'a>>) -> Row<'a> {
    Row::new(cells.into_iter().enumerate().map(|(i, sp)| {
        let w = widths.get(i).copied().unwrap_or(usize::MAX);
        if sp.content.chars().count() > w {
            Cell::from(Span::styled(cut(&sp.content, w), sp.style))
        } else {
            Cell::from(sp)
        }
    }))
}

/// The slice of `items` a table shows in `height` rows, the selection always
/// among them (kept near the middle while the table scrolls).
fn window<T>(items: &[T], selected: usize, height: usize) -> (usize, &[T]) {
    let height = height.max(1);
    if items.len() <= height {
        return (0, items);
    }
    let start = selected.saturating_sub(height / 2).min(items.len() - height);
    (start, &items[start..start + height])
}

/// Rows a table in `area` (a top line, a header) can show for `len` items:
/// when they do not all fit, one line is kept at the bottom to say how many more.
fn rows_fit(area: Rect, len: usize, bottom_line: bool) -> usize {
    let full = area.height.saturating_sub(2) as usize;
    if bottom_line || len > full {
        full.saturating_sub(1).max(1)
    } else {
        full
    }
}

/// A table's frame: its title, "↑ N more" on the top line and "↓ N more" on
/// the bottom line when rows are cut, and an optional note at the bottom right.
fn table_block<'a>(
    title: String,
    len: usize,
    start: usize,
    shown: usize,
    note: Option<String>,
    theme: &Theme,
) -> Block<'a> {
    let mut b = Block::default().borders(Borders::TOP).title(title);
    if start > 0 {
        b = b.title(Line::styled(format!(" ↑ {start} more "), theme.bold()).right_aligned());
    }
    let below = len.saturating_sub(start + shown);
    if below > 0 {
        b = b.title_bottom(Line::styled(format!(" ↓ {below} more "), theme.bold()));
    }
    if let Some(n) = note {
        b = b.title_bottom(Line::from(n).right_aligned());
    }
    b
}

fn log(s: &State, f: &mut Frame, area: Rect, theme: &Theme, compact: bool) {
    let rows = s.visible_log();
    let sel = s.cursor_index_of(View::Log);
    let (start, shown) = window(&rows, sel, rows_fit(area, rows.len(), true));
    let mut widths = vec![
        Constraint::Length(2),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Length(18),
    ];
    let mut head = vec!["", "seq", "time", "agent", "tool"];
    if !compact {
        widths.extend([Constraint::Length(10), Constraint::Length(5)]);
        head.extend(["amount", "conf"]);
    }
    // The row's event (a verdict, a decision, a step) and its action's state now.
    widths.extend([Constraint::Length(if compact { 16 } else { 24 }), Constraint::Min(10)]);
    head.extend(["event", "action now"]);
    let cw = col_widths(&widths, area.width);
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let is_sel = start + i == sel;
            let status = r
                .action_id
                .and_then(|a| s.status_of.get(&a))
                .cloned()
                .unwrap_or_default();
            let v = verdict_word(r);
            let mut cells = vec![
                Span::from(gutter(s, is_sel, r.action_id)),
                Span::from(r.seq.to_string()),
                Span::from(r.at.format("%H:%M:%S").to_string()),
                Span::from(r.agent.clone().unwrap_or_else(|| r.actor.clone())),
                Span::from(r.tool.clone().unwrap_or_default()),
            ];
            if !compact {
                cells.push(Span::from(money(r.amount)));
                cells.push(Span::from(r.confidence.map(|c| format!("{c:.2}")).unwrap_or_default()));
            }
            cells.push(Span::styled(v.clone(), theme.verdict(&v)));
            cells.push(Span::from(status));
            let row = fitted(&cw, cells);
            if is_sel { row.style(theme.selected()) } else { row }
        })
        .collect();
    let state_note = if s.frozen.is_some() {
        format!(" FROZEN · {} new (f to unfreeze) ", s.new_rows)
    } else if s.following {
        " following ".to_string()
    } else {
        format!(" {} new ↑ (g to follow) ", s.new_rows)
    };
    let title = if compact && s.view != View::Log {
        format!(
            " log · {} rows · {} needs {FULL_W}x{FULL_H} ",
            rows.len(),
            s.view.title()
        )
    } else {
        format!(" log · {} rows ", rows.len())
    };
    let n = shown.len();
    let table = Table::new(body, widths)
        .header(Row::new(head).style(theme.bold()))
        .block(table_block(title, rows.len(), start, n, Some(state_note), theme));
    f.render_widget(table, area);
}

fn spark(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values.iter().map(|v| BARS[((*v * 7) / max) as usize]).collect()
}

fn bar(share: f64, width: usize) -> String {
    let n = (share * width as f64).round() as usize;
    format!("{:<w$}", "▇".repeat(n.min(width)), w = width)
}

fn fleet(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let parts = Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).split(area);
    let sel = s.cursor_index_of(View::Fleet);
    let all = s.visible_fleet();
    let (start, shown) = window(&all, sel, rows_fit(parts[0], all.len(), false));
    let n = shown.len();
    let widths = [
        Constraint::Length(1),
        Constraint::Length(16),
        Constraint::Length(22),
        Constraint::Length(6),
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Length(8),
        Constraint::Min(6),
    ];
    let cw = col_widths(&widths, parts[0].width);
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let i = start + i;
            let state = match &a.paused {
                Some((by, _)) => Span::styled(
                    format!("PAUSED by {by}"),
                    theme.fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
                None if s.fleet_paused().is_some() => Span::styled("PAUSED (fleet)", theme.fg(Color::Red)),
                None => Span::raw("running"),
            };
            let row = fitted(
                &cw,
                vec![
                    Span::from(if i == sel { "▶" } else { " " }),
                    Span::from(a.agent.clone()),
                    state,
                    Span::from(format!("{:.0}", a.per_minute)),
                    Span::from(spark(&a.per_bucket)),
                    Span::from(if a.held > 0 {
                        format!("{} {}", a.held, money(Some(a.held_value)))
                    } else {
                        String::new()
                    }),
                    Span::from(if a.findings > 0 {
                        a.findings.to_string()
                    } else {
                        String::new()
                    }),
                    Span::from(match (a.drift, a.drift_since) {
                        (Some(d), Some(t)) => format!("{d:.3} vs before {}", t.format("%H:%M")),
                        (Some(d), None) => format!("{d:.3}"),
                        (None, _) => String::new(),
                    }),
                ],
            );
            if i == sel { row.style(theme.selected()) } else { row }
        })
        .collect();
    let table = Table::new(body, widths)
        .header(
            Row::new(vec![
                "", "agent", "state", "/min", "activity", "held", "findings", "drift",
            ])
            .style(theme.bold()),
        )
        .block(table_block(
            format!(" fleet · {} agents ", all.len()),
            all.len(),
            start,
            n,
            None,
            theme,
        ));
    f.render_widget(table, parts[0]);

    let agent = all.get(sel).map(|a| a.agent.clone());
    let mut lines = Vec::new();
    match agent.as_ref().and_then(|a| s.data.dists.get(a)) {
        Some(d) => {
            lines.push(Line::styled(
                match d.baseline_before {
                    Some(t) => format!(
                        "{}: baseline before the drift finding of {} UTC ({} decisions; kept until it is resolved) vs recent {}",
                        d.agent,
                        t.format("%H:%M:%S"),
                        d.baseline_n,
                        d.recent_n
                    ),
                    None => format!(
                        "{}: baseline {} decisions vs recent {}",
                        d.agent, d.baseline_n, d.recent_n
                    ),
                },
                theme.bold(),
            ));
            for (dim, cats) in &d.dims {
                for (cat, (b, r)) in cats.iter().take(6) {
                    lines.push(Line::from(format!(
                        "{:<8} {:<24} baseline {} {:>3.0}%   recent {} {:>3.0}%",
                        dim,
                        cut(cat, 24),
                        bar(*b, 12),
                        b * 100.0,
                        bar(*r, 12),
                        r * 100.0
                    )));
                }
            }
        }
        None => lines.push(Line::styled("no decisions yet for the selected agent", theme.dim())),
    }
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::TOP)
                .title(" distributions: baseline vs recent "),
        ),
        parts[1],
    );
}

fn countdown(s: &State, until: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (until - s.now).num_seconds();
    if secs <= 0 {
        "EXPIRED".into()
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

fn approvals(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let rows = s.visible_approvals();
    let sel = s.cursor_index_of(View::Approvals);
    // The card is about the highlighted row, the one the acting keys act on:
    // beside the queue when the terminal is wide, under it otherwise.
    let (queue, card_area, beside) = match rows.get(sel) {
        None => (area, None, false),
        Some(_) if area.width >= CARD_SIDE_W => {
            let qw = (area.width / 2).clamp(80, 110);
            let p = Layout::horizontal([Constraint::Length(qw), Constraint::Min(20)]).split(area);
            (p[0], Some(p[1]), true)
        }
        Some(_) => {
            let qh = (area.height * 2 / 5).max(7);
            if area.height >= qh + 6 {
                let p = Layout::vertical([Constraint::Length(qh), Constraint::Min(6)]).split(area);
                (p[0], Some(p[1]), false)
            } else {
                (area, None, false)
            }
        }
    };
    approvals_table(s, f, queue, theme, &rows, sel, beside);
    if let (Some(c), Some(h)) = (card_area, rows.get(sel)) {
        card(s, f, c, h, beside, theme);
    }
}

fn approvals_table(s: &State, f: &mut Frame, area: Rect, theme: &Theme, rows: &[&HeldRow], sel: usize, beside: bool) {
    let (start, shown) = window(rows, sel, rows_fit(area, rows.len(), false));
    let n = shown.len();
    // Beside the card, the rule and reason are the card's: the queue keeps
    // amount, agent, tool, approvals, expiry and the rule's name.
    let mut widths = vec![
        Constraint::Length(2),
        Constraint::Length(10),
        Constraint::Length(14),
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Length(8),
    ];
    let mut head = vec!["", "amount", "agent", "tool", "approvals", "expires", "rule"];
    if beside {
        widths.push(Constraint::Min(8));
    } else {
        widths.extend([Constraint::Length(22), Constraint::Min(10)]);
        head.push("reason");
    }
    let cw = col_widths(&widths, area.width);
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let is_sel = start + i == sel;
            let approvals = if h.approved_by.is_empty() {
                format!("{}/{}", h.approvals, h.approvals_needed)
            } else {
                format!("{}/{} ({})", h.approvals, h.approvals_needed, h.approved_by.join(", "))
            };
            let mut cells = vec![
                Span::from(gutter(s, is_sel, Some(h.action_id))),
                Span::from(money(h.amount)),
                Span::from(h.agent.clone()),
                Span::from(h.tool.clone()),
                Span::from(approvals),
                Span::from(countdown(s, h.expires_at)),
                Span::from(h.rule.clone().unwrap_or_default()),
            ];
            if !beside {
                cells.push(Span::from(h.reason.clone()));
            }
            let row = fitted(&cw, cells);
            if is_sel { row.style(theme.selected()) } else { row }
        })
        .collect();
    let title = if !s.filter.is_empty() {
        format!(
            " approvals · {} of the {} highest held match the filter ",
            rows.len(),
            s.data.approvals.len()
        )
    } else if s.held_not_listed() > 0 {
        format!(
            " approvals · {} held, highest value first · {} more not shown ",
            s.data.held_count,
            s.held_not_listed()
        )
    } else {
        format!(" approvals · {} held, highest value first ", rows.len())
    };
    let table = Table::new(body, widths)
        .header(Row::new(head).style(theme.bold()))
        .block(table_block(title, rows.len(), start, n, None, theme));
    f.render_widget(table, area);
}

/// `text` in lines of at most `width` columns, broken between words (a
/// longer word is split); its own line breaks kept, control characters
/// shown escaped.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in crate::output::printable_lines(text) {
        let mut line = String::new();
        let mut n = 0;
        for word in para.split(' ') {
            let wl = word.chars().count();
            // A word longer than a line (JSON, a URL) fills this one first.
            if n > 0 && n + 1 + wl > width && wl <= width {
                out.push(std::mem::take(&mut line));
                n = 0;
            }
            if n > 0 && n < width {
                line.push(' ');
                n += 1;
            } else if n > 0 {
                out.push(std::mem::take(&mut line));
                n = 0;
            }
            let mut rest: Vec<char> = word.chars().collect();
            while n + rest.len() > width {
                let k = width - n;
                line.extend(rest.drain(..k));
                out.push(std::mem::take(&mut line));
                n = 0;
            }
            n += rest.len();
            line.extend(rest);
        }
        out.push(line);
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// A labelled value wrapped to `width`, the label bold, the rest in `style`.
fn wrapped<'a>(label: &str, text: &str, style: Style, width: usize, theme: &Theme) -> Vec<Line<'a>> {
    wrap(&format!("{label}{text}"), width)
        .into_iter()
        .enumerate()
        .map(|(i, l)| match l.strip_prefix(label) {
            Some(rest) if i == 0 && !label.is_empty() => Line::from(vec![
                Span::styled(label.to_string(), theme.bold()),
                Span::styled(rest.to_string(), style),
            ]),
            _ => Line::styled(l, style),
        })
        .collect()
}

/// A check's severity as a colour (the word and the symbol say it too).
fn severity_style(sev: &str, theme: &Theme) -> Style {
    match sev {
        "critical" => theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        "high" => theme.fg(Color::Red),
        "medium" => theme.fg(Color::Yellow),
        _ => Style::default(),
    }
}

/// JSON on one line, cut (with …) past what a card shows; Enter shows it whole.
fn json_brief(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "(none)".into(),
        Some(v) => cut(&v.to_string(), 2000),
    }
}

/// How the checks of a card stand, one line each (the failing ones first,
/// with their messages; the passed ones counted), with a style key (a
/// severity, "error", "ok"). `head` starts a line that only says how they
/// stand ("checks: running…").
pub fn check_lines(card: Option<&Card>, tool: &str, head: &str) -> Vec<(String, Option<String>)> {
    let checks = card.map(|c| &c.checks).unwrap_or(&Checks::Running);
    match checks {
        Checks::Running => vec![(format!("{head}running…"), None)],
        Checks::Failed(e) => vec![(format!("{head}could not run ({e})"), Some("error".into()))],
        Checks::Done(rows) if rows.is_empty() => vec![(format!("no checks apply to {tool}"), None)],
        Checks::Done(rows) => {
            let mut out: Vec<(String, Option<String>)> = checks
                .failing()
                .into_iter()
                .map(|c| {
                    (
                        format!(
                            "✗ {} ({}): {}",
                            c.name,
                            c.severity,
                            c.message.as_deref().unwrap_or_default()
                        ),
                        Some(c.severity.clone()),
                    )
                })
                .collect();
            out.extend(rows.iter().filter(|c| c.message.is_none()).filter_map(|c| {
                c.error
                    .as_ref()
                    .map(|e| (format!("? {} could not run: {e}", c.name), Some("error".into())))
            }));
            let passed: Vec<&str> = rows
                .iter()
                .filter(|c| c.message.is_none() && c.error.is_none())
                .map(|c| c.name.as_str())
                .collect();
            if !passed.is_empty() {
                let n = passed.len();
                out.push((
                    format!(
                        "✓ {n} check{} passed: {}",
                        if n == 1 { "" } else { "s" },
                        passed.join(", ")
                    ),
                    Some("ok".into()),
                ));
            }
            out
        }
    }
}

/// The lines of a held action's card, wrapped to `width`.
fn card_lines<'a>(s: &State, h: &HeldRow, card: Option<&Card>, width: usize, theme: &Theme) -> Vec<Line<'a>> {
    let mut lines = Vec::new();
    let rule = h.rule.as_deref().unwrap_or("a rule");
    lines.extend(wrapped(
        &format!("held by {rule}: "),
        &h.reason,
        theme.verdict("HOLD"),
        width,
        theme,
    ));
    let approved = if h.approved_by.is_empty() {
        format!("approvals {}/{}, none yet", h.approvals, h.approvals_needed)
    } else {
        format!(
            "approved {}/{} by {}",
            h.approvals,
            h.approvals_needed,
            h.approved_by.join(", ")
        )
    };
    let info = card.and_then(|c| c.info.as_ref());
    let confidence = match info {
        Some(Ok(i)) => i
            .confidence
            .map(|c| format!("confidence {c:.2}"))
            .unwrap_or_else(|| "no confidence given".into()),
        _ => "confidence …".into(),
    };
    lines.extend(wrapped(
        "",
        &format!("{confidence} · {approved} · expires in {}", countdown(s, h.expires_at)),
        Style::default(),
        width,
        theme,
    ));
    for (text, sev) in check_lines(card, &h.tool, "checks: ") {
        let style = match sev.as_deref() {
            Some("ok") => theme.fg(Color::Green),
            Some("error") => theme.fg(Color::Yellow),
            Some(sev) => severity_style(sev, theme),
            None => theme.dim(),
        };
        lines.extend(wrapped("", &text, style, width, theme));
    }
    match info {
        None => lines.push(Line::styled("loading what the agent said…", theme.dim())),
        Some(Err(e)) => lines.extend(wrapped(
            "",
            &format!("what the agent said could not be read: {e}"),
            theme.fg(Color::Red),
            width,
            theme,
        )),
        Some(Ok(i)) => {
            lines.extend(wrapped(
                "reasoning: ",
                i.reasoning.as_deref().unwrap_or("(none given)"),
                Style::default(),
                width,
                theme,
            ));
            lines.extend(wrapped(
                "params: ",
                &json_brief(&i.params),
                Style::default(),
                width,
                theme,
            ));
            lines.extend(wrapped(
                "inputs: ",
                &json_brief(&i.inputs),
                Style::default(),
                width,
                theme,
            ));
            if let Some(c) = &i.correlation_id {
                lines.extend(wrapped("correlation: ", c, Style::default(), width, theme));
            }
        }
    }
    lines
}

fn card(s: &State, f: &mut Frame, area: Rect, h: &HeldRow, beside: bool, theme: &Theme) {
    let borders = if beside {
        Borders::TOP | Borders::LEFT
    } else {
        Borders::TOP
    };
    let block = Block::default().borders(borders).title(Line::styled(
        format!(" {} {} by {} ", money(h.amount), h.tool, h.agent),
        theme.bold(),
    ));
    let inner = block.inner(area);
    let width = inner.width.saturating_sub(1).max(1) as usize;
    let mut lines = card_lines(s, h, s.cards.get(&h.action_id), width, theme);
    let room = inner.height as usize;
    // Nothing cut without a mark: the last line says there is more.
    if lines.len() > room && room > 0 {
        lines.truncate(room - 1);
        lines.push(Line::styled("↓ more: Enter shows the whole record", theme.bold()));
    }
    let lines: Vec<Line> = lines
        .into_iter()
        .map(|l| {
            let mut spans = vec![Span::raw(" ")];
            spans.extend(l.spans);
            Line::from(spans).style(l.style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}

/// One line a person reads: what the supervisor saw, in words.
pub fn evidence_text(d: &serde_json::Value) -> String {
    let pct = |v: &serde_json::Value| v.as_f64().map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_default();
    if let Some(v) = d["violation"].as_str() {
        return v.to_string();
    }
    if let Some(a) = d["top_changes"].as_array() {
        let changes: Vec<String> = a
            .iter()
            .take(2)
            .map(|c| {
                format!(
                    "{} {} -> {}",
                    c["category"].as_str().unwrap_or("?"),
                    pct(&c["baseline"]),
                    pct(&c["recent"])
                )
            })
            .collect();
        return match d["score"].as_f64() {
            Some(score) => format!("divergence {score:.2}: {}", changes.join(", ")),
            None => changes.join(", "),
        };
    }
    if let Some(n) = d["signals_in_window"].as_i64() {
        return format!(
            "{n} complaints in {:.0}s (baseline predicts {:.1})",
            d["window_seconds"].as_f64().unwrap_or(0.0),
            d["expected_from_baseline"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(limit) = d["limit"].as_f64() {
        return format!(
            "confidence {:.2} below {limit}",
            d["confidence"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(r) = d["reason"].as_str() {
        return r.to_string();
    }
    crate::output::brief(d, 80)
}

/// A finding's severity as a symbol and a word (the colour only repeats them).
fn severity_span(sev: &str, theme: &Theme) -> Span<'static> {
    let (symbol, style) = match sev {
        "critical" => ("‼", theme.fg(Color::Red).add_modifier(Modifier::BOLD)),
        "high" => ("▲", theme.fg(Color::Red)),
        "medium" => ("●", theme.fg(Color::Yellow)),
        "low" => ("·", Style::default()),
        _ => ("?", Style::default()),
    };
    Span::styled(format!("{symbol} {}", sev.to_uppercase()), style)
}

fn findings(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let rows = s.visible_findings();
    let sel = s.cursor_index_of(View::Findings);
    let (start, shown) = window(&rows, sel, rows_fit(area, rows.len(), false));
    let n = shown.len();
    let widths = [
        Constraint::Length(1),
        Constraint::Length(10),
        Constraint::Length(18),
        Constraint::Length(14),
        Constraint::Length(18),
        Constraint::Length(22),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Min(10),
    ];
    let cw = col_widths(&widths, area.width);
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let is_sel = start + i == sel;
            let evidence = evidence_text(&x.detail);
            let row = fitted(
                &cw,
                vec![
                    Span::from(if is_sel { "▶" } else { " " }),
                    severity_span(&x.severity, theme),
                    Span::from(x.kind.clone()),
                    Span::from(x.agent.clone().unwrap_or_default()),
                    Span::from(x.rule.clone().unwrap_or_default()),
                    Span::from(x.status_label()),
                    Span::from(x.count.to_string()),
                    Span::from(x.last_at.format("%H:%M:%S").to_string()),
                    Span::from(evidence),
                ],
            );
            if is_sel { row.style(theme.selected()) } else { row }
        })
        .collect();
    let table = Table::new(body, widths)
        .header(
            Row::new(vec![
                "", "severity", "kind", "agent", "rule", "status", "seen", "last", "evidence",
            ])
            .style(theme.bold()),
        )
        .block(table_block(
            format!(" findings · {} open or acknowledged ", rows.len()),
            rows.len(),
            start,
            n,
            None,
            theme,
        ));
    f.render_widget(table, area);
}

fn compensations(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let rows = s.visible_comps();
    let sel = s.cursor_index_of(View::Compensations);
    let (start, shown) = window(&rows, sel, rows_fit(area, rows.len(), false));
    let n = shown.len();
    let widths = [
        Constraint::Length(2),
        Constraint::Length(17),
        Constraint::Length(14),
        Constraint::Length(16),
        Constraint::Length(20),
        Constraint::Length(3),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Min(10),
    ];
    let cw = col_widths(&widths, area.width);
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let is_sel = start + i == sel;
            let status = c.status.to_uppercase();
            let st = match c.status.as_str() {
                "compensated" => theme.fg(Color::Green),
                "failed" | "conflict" | "condition_failed" | "expired" => theme.fg(Color::Red),
                _ => theme.fg(Color::Yellow),
            };
            let row = fitted(
                &cw,
                vec![
                    Span::from(gutter(s, is_sel, Some(c.action_id))),
                    Span::styled(status, st),
                    Span::from(c.agent.clone()),
                    Span::from(c.tool.clone()),
                    Span::from(c.inverse_tool.clone()),
                    Span::from(c.attempts.to_string()),
                    Span::from(c.worker.clone().unwrap_or_default()),
                    Span::from(c.requested_by.clone()),
                    Span::from(c.last_error.clone().unwrap_or_else(|| c.reason.clone())),
                ],
            );
            if is_sel { row.style(theme.selected()) } else { row }
        })
        .collect();
    let table = Table::new(body, widths)
        .header(
            Row::new(vec![
                "",
                "status",
                "agent",
                "tool",
                "inverse",
                "try",
                "worker",
                "requested",
                "reason / last error",
            ])
            .style(theme.bold()),
        )
        .block(table_block(
            format!(" compensations · {} ", rows.len()),
            rows.len(),
            start,
            n,
            None,
            theme,
        ));
    f.render_widget(table, area);
}

/// Labelled lines, a value continuing on indented lines (wrapped, never cut).
fn labelled<'a>(pairs: &[(String, String)], theme: &Theme) -> Vec<Line<'a>> {
    pairs
        .iter()
        .flat_map(|(k, v)| {
            let mut out = vec![Line::from(vec![
                Span::styled(format!("{k}: "), theme.bold()),
                Span::raw(v.lines().next().unwrap_or("").to_string()),
            ])];
            out.extend(v.lines().skip(1).map(|l| Line::from(format!("    {l}"))));
            out
        })
        .collect()
}

fn note(s: &State, f: &mut Frame, area: Rect, scroll: u16, theme: &Theme) {
    let Some(n) = &s.note else { return };
    let keys = if n.action.is_some() {
        "Enter the action, Esc back, j/k scroll"
    } else {
        "Esc back, j/k scroll"
    };
    f.render_widget(
        Paragraph::new(labelled(&n.lines, theme))
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(format!(" {} ({keys}) ", n.title)),
            ),
        area,
    );
}

fn detail(s: &State, f: &mut Frame, area: Rect, scroll: u16, theme: &Theme) {
    let lines: Vec<Line> = match &s.detail {
        None => vec![Line::from("loading ...")],
        Some(d) => labelled(&detail_lines(d, &held_lines(s, d.action_id)), theme),
    };
    let title = s
        .detail
        .as_ref()
        .map(|d| format!(" action {} (Esc back, j/k scroll) ", d.action_id))
        .unwrap_or_default();
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn pretty(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "(none)".into(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// What the card says of a held action that its record does not: who
/// approved it so far, when it expires, and the checks run now.
fn held_lines(s: &State, id: uuid::Uuid) -> Vec<(String, String)> {
    let Some(h) = s.data.approvals.iter().find(|h| h.action_id == id) else {
        return Vec::new();
    };
    let by = if h.approved_by.is_empty() {
        "none yet".to_string()
    } else {
        format!("by {}", h.approved_by.join(", "))
    };
    vec![
        (
            "approvals".into(),
            format!(
                "{}/{} {by}; expires in {}",
                h.approvals,
                h.approvals_needed,
                countdown(s, h.expires_at)
            ),
        ),
        (
            "checks now".into(),
            check_lines(s.cards.get(&id), &h.tool, "")
                .into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ]
}

/// An action's record as labelled lines; a value may span several lines.
/// `held`: the lines a held action adds after its verdict.
fn detail_lines(d: &Detail, held: &[(String, String)]) -> Vec<(String, String)> {
    let id = d.action_id;
    let Some(a) = &d.action else {
        return vec![("action".into(), format!("{id} is not in the actions projection"))];
    };
    let none = || "(none)".to_string();
    let mut lines: Vec<(String, String)> = vec![
        ("action".into(), id.to_string()),
        (
            "agent / tool".into(),
            format!(
                "{} / {} ({})",
                a.agent,
                a.tool,
                a.class.as_deref().unwrap_or("unknown tool")
            ),
        ),
        ("status".into(), a.status.to_string()),
        (
            "value".into(),
            format!(
                "amount {}  confidence {}  cost to reverse {}",
                money(a.amount),
                a.confidence.map(|c| format!("{c:.2}")).unwrap_or_else(|| "none".into()),
                money(a.cost_to_reverse)
            ),
        ),
        (
            "verdict".into(),
            format!(
                "{}: {} (rule {}; policy v{}, registry v{})",
                a.verdict,
                a.reason,
                a.rule.as_deref().unwrap_or("-"),
                a.policy_version.unwrap_or(0),
                a.registry_version.unwrap_or(0)
            ),
        ),
    ];
    lines.extend(held.iter().cloned());
    if let Some(p) = &a.proposal {
        lines.push((
            "reasoning".into(),
            p.reasoning.clone().unwrap_or_else(|| "(none given)".into()),
        ));
        lines.push(("inputs".into(), pretty(&p.inputs)));
        lines.push(("params".into(), pretty(&p.params)));
    }
    lines.push(("result".into(), pretty(&a.result)));
    lines.push(("correlation".into(), a.correlation_id.clone().unwrap_or_else(none)));
    lines.push((
        "parent".into(),
        a.parent_action.map(|p| p.to_string()).unwrap_or_else(none),
    ));
    lines.push((
        "dependents / same correlation".into(),
        if a.related.is_empty() {
            none()
        } else {
            a.related
                .iter()
                .map(|r| format!("{} {} {} {}", r.action_id, r.agent, r.tool, r.status))
                .collect::<Vec<_>>()
                .join("\n")
        },
    ));
    let staged = match (&a.inverse_tool, &a.inverse_missing) {
        (Some(inv), _) => format!(
            "staged: {inv} {}",
            a.inverse_params.as_ref().map(|v| v.to_string()).unwrap_or_default()
        ),
        (None, Some(m)) => format!("cannot be staged: missing {}", m.join(", ")),
        (None, None) => "none (not reversible, or not executed)".into(),
    };
    let comp = match &a.compensation {
        Some(c) => format!(
            "{staged}\n{} (attempt {}, worker {}) requested by {}: {}{}",
            c.status,
            c.attempts,
            c.worker.as_deref().unwrap_or("-"),
            c.requested_by,
            c.reason,
            c.last_detail
                .as_ref()
                .map(|d| format!("\nlast: {d}"))
                .unwrap_or_default()
        ),
        None => staged,
    };
    lines.push(("compensation".into(), comp));
    let history: Vec<String> = a
        .history
        .iter()
        .map(|h| {
            let hash = match &h.seal {
                Some((n, digest)) => {
                    let hex = hex::encode(digest);
                    format!("sealed in seal {n}, sha256 {}", hex.get(..16).unwrap_or(&hex))
                }
                None => "not sealed yet".into(),
            };
            format!(
                "{} {} {:<22} by {:<14} {}",
                h.seq,
                h.at.format("%H:%M:%S"),
                h.kind,
                h.actor,
                hash
            )
        })
        .collect();
    lines.push(("history".into(), history.join("\n")));
    lines
}

/// A line cut to `width` columns, ending in `…` where cut (never silently).
fn fit_line<'a>(spans: Vec<Span<'a>>, width: usize) -> Line<'a> {
    let total: usize = spans.iter().map(|sp| sp.content.chars().count()).sum();
    if total <= width {
        return Line::from(spans);
    }
    let mut left = width;
    let mut out = Vec::new();
    for sp in spans {
        let n = sp.content.chars().count();
        if n < left {
            left -= n;
            out.push(sp);
        } else {
            out.push(Span::styled(cut(&sp.content, left), sp.style));
            break;
        }
    }
    Line::from(out)
}

fn plan(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let Some(p) = &s.plan else { return };
    let width = area.width as usize;
    let mut lines = vec![
        fit_line(
            vec![Span::styled(
                format!(
                    "Rollback plan: {} step(s), {} to compensate ({} pulled in as dependents)",
                    p.totals.steps, p.totals.will_compensate, p.totals.dependents,
                ),
                theme.bold(),
            )],
            width,
        ),
        fit_line(
            vec![Span::styled(
                format!(
                    "recovering {}{}, not recoverable {}, {} entities touched",
                    money(Some(p.totals.value_recovered)),
                    crate::compensation::directions(&p.totals),
                    money(Some(p.totals.value_not_recoverable)),
                    p.totals.entities_touched,
                ),
                theme.bold(),
            )],
            width,
        ),
    ];
    // Reads are left out of the steps and counted on a line of their own.
    if let Some(l) = crate::compensation::read_only_line(&p.totals) {
        lines.push(fit_line(vec![Span::raw(l)], width));
    }
    // The top line, the totals and the keys take the lines above and one
    // below; the steps scroll in the rest.
    let room = area.height.saturating_sub(lines.len() as u16 + 2) as usize;
    let len = p.steps.len();
    let fit = if len > room {
        room.saturating_sub(2).max(1)
    } else {
        room
    };
    let start = s.plan_scroll.min(len.saturating_sub(fit));
    let end = (start + fit).min(len);
    if len > fit {
        lines.push(Line::styled(
            if start > 0 {
                format!("  ↑ {start} more (k / PgUp)")
            } else {
                String::new()
            },
            theme.bold(),
        ));
    }
    for st in &p.steps[start..end] {
        let outcome = crate::compensation::outcome_label(&st.outcome);
        let via = if st.selected {
            "selected".to_string()
        } else {
            format!(
                "dependent of {}",
                st.caused_by.map(|c| c.to_string()[..8].to_string()).unwrap_or_default()
            )
        };
        let style = if st.outcome == "requested" {
            Style::default()
        } else {
            theme.fg(Color::Red)
        };
        lines.push(fit_line(
            vec![
                Span::raw(format!(
                    "  {}  {:<14} {:<18} {:>10}  ",
                    &st.action_id.to_string()[..8],
                    cut(&st.agent, 14),
                    cut(&st.tool, 18),
                    money(st.amount)
                )),
                Span::styled(format!("{outcome:<20}"), style),
                Span::raw(format!(" {via}  {}", st.detail.clone().unwrap_or_default())),
            ],
            width,
        ));
    }
    if len > fit {
        lines.push(Line::styled(
            if end < len {
                format!("  ↓ {} more (j / PgDn)", len - end)
            } else {
                String::new()
            },
            theme.bold(),
        ));
    }
    lines.push(Line::styled(
        "y: request (then a reason)   n / Esc: cancel, nothing is requested   j k: scroll",
        theme.bold(),
    ));
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" compensate ")),
        area,
    );
}

fn help(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let mut lines = vec![Line::styled("Keys (any key closes)", theme.bold())];
    for k in keys::help(s.readonly) {
        lines.push(Line::from(format!("  {:<12} {}", k.keys, k.what)));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled("Commands (: then Tab completes)", theme.bold()));
    lines.push(Line::from(
        "  :agent NAME  :pause fleet|agent NAME|tool NAME  :resume fleet|agent NAME|tool NAME",
    ));
    lines.push(Line::from(
        "  :mark agent NAME since 1h [tool NAME]  (marks every such action in the database; c plans them)",
    ));
    lines.push(Line::from(
        "  :fleet :log :approvals :findings :compensations  :clear (filter)  :quit",
    ));
    lines.push(Line::styled(
        format!("Filter (/): {}", super::state::FILTER_SYNTAX),
        theme.dim(),
    ));
    lines.push(Line::styled(
        "  each view filters by the fields it shows; the tab line names a key a view cannot use",
        theme.dim(),
    ));
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" help ")),
        area,
    );
}

fn agent_summary(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let line = match s.cursor_agent().and_then(|a| s.data.dists.get(&a).map(|d| (a, d))) {
        Some((a, d)) => {
            let tools: Vec<u64> = d
                .dims
                .get("tool")
                .map(|m| m.values().map(|(_, r)| (r * 100.0) as u64).collect())
                .unwrap_or_default();
            let verdicts: String = d
                .dims
                .get("verdict")
                .map(|m| {
                    m.iter()
                        .map(|(k, (_, r))| format!("{k} {:.0}%", r * 100.0))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let drift = s
                .data
                .fleet
                .iter()
                .find(|x| x.agent == a)
                .and_then(|x| {
                    let since = x
                        .drift_since
                        .map(|t| format!(" vs the baseline before the drift finding of {}", t.format("%H:%M")))
                        .unwrap_or_default();
                    x.drift.map(|d| format!("  drift {d:.3}{since}"))
                })
                .unwrap_or_default();
            format!(" {a}  tools {}  verdicts {verdicts}{drift}", spark(&tools))
        }
        None => match s.policy_events.front() {
            Some(n) => format!(" {} {}", n.at.format("%H:%M:%S"), n.text),
            None => String::new(),
        },
    };
    f.render_widget(Paragraph::new(Line::styled(line, theme.dim())), area);
}

fn status(s: &State, f: &mut Frame, area: Rect, theme: &Theme) {
    let line = match &s.mode {
        Mode::Filter { input } => match s.notice.as_ref().filter(|n| n.error) {
            Some(n) => Line::from(vec![
                Span::raw(format!("/{input}█  ")),
                Span::styled(n.text.clone(), theme.fg(Color::Red).add_modifier(Modifier::BOLD)),
            ]),
            None => Line::from(format!("/{input}█")),
        },
        Mode::Command { input } => Line::from(format!(":{input}█")),
        Mode::Input { purpose, input } => {
            Line::from(format!("{}> {input}█  (Enter submits, Esc cancels)", purpose.prompt()))
        }
        Mode::ConfirmPause { scope, target } => {
            let what = scope.as_str();
            let text = match s.knows(*scope, target) {
                Some(true) => format!(" Pause {what} {}? y / N ", cut(target, 40)),
                Some(false) => format!(
                    " Pause unknown {what} {}? No {what} by that name in the log, the logins or the registry. y / N ",
                    cut(target, 40)
                ),
                None => format!(
                    " Pause {what} {}? The room cannot read the known names. y / N ",
                    cut(target, 40)
                ),
            };
            Line::styled(text, theme.banner())
        }
        Mode::ConfirmApprove(id) => Line::styled(approve_question(s, *id, area.width as usize), theme.banner()),
        Mode::ConfirmResume { scope, target } => {
            let what = match scope {
                Scope::Fleet => "the fleet".to_string(),
                other => format!("{} {}", other.as_str(), target.clone().unwrap_or_default()),
            };
            Line::styled(
                format!(" Resume {what}? y / N (anything but y keeps it paused) "),
                theme.banner(),
            )
        }
        _ => {
            let marks = if s.marks.is_empty() {
                String::new()
            } else {
                format!(" {} marked  ", s.marks.len())
            };
            let notice = s.notice.as_ref().map(|n| n.text.clone()).unwrap_or_default();
            let style = if s.notice.as_ref().is_some_and(|n| n.error) {
                theme.fg(Color::Red)
            } else {
                Style::default()
            };
            Line::from(vec![Span::styled(marks, theme.bold()), Span::styled(notice, style)])
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

/// Approve's one question: the amount, and any check that fails now, on
/// the key that approves. The longest form that fits `width`; the amount,
/// the failing count and `y / N` are in every form.
pub fn approve_question(s: &State, id: uuid::Uuid, width: usize) -> String {
    let Some(h) = s.data.approvals.iter().find(|h| h.action_id == id) else {
        return format!(" Approve {id}? y / N ");
    };
    let card = s.cards.get(&id);
    let failing: Vec<&str> = card
        .map(|c| c.checks.failing().into_iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let n = failing.len();
    let (long, short) = match card.map(|c| &c.checks) {
        _ if n > 0 => {
            let head = format!(
                "✗ {n} check{} fail{}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" }
            );
            (format!("{head}: {} ", failing.join(", ")), format!("{head} "))
        }
        Some(Checks::Done(rows)) if rows.iter().any(|c| c.error.is_some()) => {
            let e = rows.iter().filter(|c| c.error.is_some()).count();
            let t = format!("? {e} check{} could not run ", if e == 1 { "" } else { "s" });
            (t.clone(), t)
        }
        Some(Checks::Done(rows)) if !rows.is_empty() => {
            let t = format!(
                "✓ {} check{} passed ",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            );
            (t.clone(), t)
        }
        Some(Checks::Done(_)) => (String::new(), String::new()),
        Some(Checks::Failed(_)) => ("checks could not run ".into(), "checks could not run ".into()),
        None | Some(Checks::Running) => ("checks running… ".into(), "checks running… ".into()),
    };
    let amount = money(h.amount);
    let tally = format!(" ({}/{} approvals)", h.approvals, h.approvals_needed);
    let forms = [
        format!(" Approve {amount} {} by {}{tally}? {long}y / N ", h.tool, h.agent),
        format!(" Approve {amount} {} by {}? {long}y / N ", h.tool, h.agent),
        format!(" Approve {amount} {} by {}? {short}y / N ", h.tool, h.agent),
        format!(
            " Approve {amount} {} by {}? {short}y / N ",
            cut(&h.tool, 16),
            cut(&h.agent, 14)
        ),
        format!(" Approve {amount} by {}? {short}y / N ", cut(&h.agent, 20)),
    ];
    forms
        .iter()
        .find(|f| f.chars().count() <= width)
        .cloned()
        .unwrap_or_else(|| format!(" Approve {amount}? {short}y / N "))
}

fn footer(s: &State, f: &mut Frame, area: Rect, theme: &Theme, compact: bool) {
    let mut spans = Vec::new();
    let fleet_paused = s.fleet_paused().is_some();
    // The keys of the view on screen: the log's when collapsed.
    let shown = if compact { View::Log } else { s.view };
    for k in keys::footer(shown, s.readonly) {
        // Paused already: say how to undo it rather than offer it again.
        if k.keys == "P" && fleet_paused {
            spans.push(Span::styled(":resume fleet", theme.bold()));
            spans.push(Span::raw("  "));
            continue;
        }
        let st = if k.keys == "P" {
            theme.bold().add_modifier(Modifier::REVERSED)
        } else {
            theme.bold()
        };
        spans.push(Span::styled(k.keys.to_string(), st));
        spans.push(Span::raw(format!(" {}  ", k.what)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_every_character_within_the_width() {
        let texts = [
            "held by four_eyes: $47,000 is above $10,000: two approvers",
            "params: {\"amount\":47000,\"customer_id\":\"c-1002\",\"order_id\":\"O-1\"}",
            "a  b   c",
            "line one\nline two\n\nafter a blank",
            "",
            "x",
        ];
        for text in texts {
            for width in 1..40 {
                let lines = wrap(text, width);
                assert!(lines.iter().all(|l| l.chars().count() <= width), "{width}: {lines:?}");
                // Only the breaks' spaces go.
                let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                assert_eq!(squeeze(&lines.concat()), squeeze(text), "{width}: {lines:?}");
            }
        }
        // Words are not broken when they fit; a long one fills the line first.
        assert_eq!(wrap("held by four_eyes", 10), vec!["held by", "four_eyes"]);
        assert_eq!(
            wrap("params: {\"a\":1,\"b\":2}", 12),
            vec!["params: {\"a\"", ":1,\"b\":2}"]
        );
        assert_eq!(wrap("ok\x1b[2J", 20), vec!["ok\\x1b[2J"]);
    }
}
