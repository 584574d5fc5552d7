//! Log rows, for people.

use crate::contract::{EventKind as K, LogRow};

use super::{Table, brief, cut, money, time};

/// One line per log row, for people.
pub fn render_log(rows: &[LogRow]) -> String {
    let mut t = Table::new(&["seq", "time", "actor", "event", "agent", "tool", "amount", "detail"]);
    for r in rows {
        t.row(vec![
            r.seq.to_string(),
            time(r.at),
            cut(&r.actor, 14),
            r.kind.to_string(),
            r.agent.clone().unwrap_or_default(),
            r.tool.clone().unwrap_or_default(),
            money(r.amount),
            summarize(r),
        ]);
    }
    t.render()
}

/// Fixed column widths for a log that keeps coming (`backstop log --follow`):
/// widths fitted to each batch would move the columns from one batch to the
/// next, so every line is laid out alike and a cell too long is cut with `…`.
const FOLLOW_COLS: [(&str, usize); 7] = [
    ("seq", 10),
    ("time", 8),
    ("actor", 14),
    ("event", 22),
    ("agent", 16),
    ("tool", 20),
    ("amount", 12),
];

fn follow_line(cells: &[String], detail: &str) -> String {
    let mut line = String::new();
    for ((_, w), c) in FOLLOW_COLS.iter().zip(cells) {
        line.push_str(&format!("{:<w$}  ", cut(c, *w), w = *w));
    }
    line.push_str(detail);
    format!("{}\n", line.trim_end())
}

/// The header of a followed log, printed once.
pub fn follow_header() -> String {
    let names: Vec<String> = FOLLOW_COLS.iter().map(|(n, _)| n.to_string()).collect();
    follow_line(&names, "detail")
}

/// Rows of a followed log, in the fixed columns of `follow_header`.
pub fn follow_rows(rows: &[LogRow]) -> String {
    rows.iter()
        .map(|r| {
            follow_line(
                &[
                    r.seq.to_string(),
                    time(r.at),
                    r.actor.clone(),
                    r.kind.to_string(),
                    r.agent.clone().unwrap_or_default(),
                    r.tool.clone().unwrap_or_default(),
                    money(r.amount),
                ],
                &summarize(r),
            )
        })
        .collect()
}

/// The part of an event's detail a person wants to see first.
fn summarize(r: &LogRow) -> String {
    let d = &r.detail;
    let s = match r.kind {
        K::Allowed | K::Held | K::Blocked => d["reason"].as_str().unwrap_or_default().to_string(),
        K::Approved => format!(
            "{}/{} {}",
            d["approvals"],
            d["approvals_needed"],
            d["note"].as_str().unwrap_or("")
        ),
        K::Rejected => d["note"].as_str().unwrap_or_default().to_string(),
        K::Executed => match d.get("compensation") {
            Some(c) => format!(
                "compensation staged: {} {}",
                c["inverse_tool"].as_str().unwrap_or(""),
                brief(&c["inverse_params"], 60)
            ),
            None => r.result.as_ref().map(|v| brief(v, 60)).unwrap_or_default(),
        },
        K::Paused | K::Resumed => format!(
            "{} {}: {}",
            d["scope"].as_str().unwrap_or(""),
            d["target"].as_str().unwrap_or(""),
            d["reason"].as_str().unwrap_or("")
        ),
        K::CompensationRequested => format!(
            "{} via {}",
            d["reason"].as_str().unwrap_or(""),
            d["inverse_tool"].as_str().unwrap_or("")
        ),
        K::CompensationPlan => format!("{} requested; {}", d["requested"], brief(&d["not_requested"], 60)),
        K::Finding => format!(
            "{} {}: {}",
            d["severity"].as_str().unwrap_or(""),
            d["kind"].as_str().unwrap_or(""),
            brief(&d["evidence"], 60)
        ),
        K::PolicyLoaded | K::RegistryLoaded => {
            format!("version {} from {}", d["version"], d["source"].as_str().unwrap_or(""))
        }
        _ => brief(d, 70),
    };
    cut(&s, 90)
}
