//! What commands print: plain-text tables, value formatting, the log and
//! verify reports for people, and JSON for programs. Printing lives here, not
//! in the CLI, so the demo and the room can print the same way without
//! depending on the command layer.

mod log;
mod verify;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

pub use log::{follow_header, follow_rows, render_log};
pub use verify::render_verify;

/// Pretty JSON on stdout: what `--json` prints.
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// A row; every cell is made printable (see `printable`), since cells
    /// hold what agents and people wrote.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| printable(c)).collect());
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 < r.len() {
                    line.push_str(&format!("{c:<w$}  ", w = widths[i]));
                } else {
                    line.push_str(c);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Text safe to print to a terminal: C0 controls, DEL and C1 controls
/// (which start escape sequences that set titles, clear screens or move the
/// cursor) are shown escaped, `\x1b` or `\u{9b}`, never sent as they are.
pub fn printable(s: &str) -> String {
    if !s.chars().any(is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        if is_control(ch) {
            if (ch as u32) < 0x80 {
                out.push_str(&format!("\\x{:02x}", ch as u32));
            } else {
                out.push_str(&format!("\\u{{{:x}}}", ch as u32));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The lines of `s`, each printable (see `printable`; a tab is four spaces).
pub fn printable_lines(s: &str) -> Vec<String> {
    s.lines().map(|l| printable(&l.replace('\t', "    "))).collect()
}

fn is_control(ch: char) -> bool {
    let c = ch as u32;
    c < 0x20 || (0x7f..=0x9f).contains(&c)
}

/// $47,000 or $47,000.50.
pub fn money(d: Option<Decimal>) -> String {
    let Some(d) = d else { return String::new() };
    let d = d.round_dp(2);
    let neg = d.is_sign_negative();
    let s = d.abs().to_string();
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(format!("{f:0<2}"))),
        None => (s, None),
    };
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let frac = frac.filter(|f| f != "00").map(|f| format!(".{f}")).unwrap_or_default();
    format!("{}${grouped}{frac}", if neg { "-" } else { "" })
}

pub fn time(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// A one-line summary of a JSON value, cut to `max` characters.
pub fn brief(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    cut(&s, max)
}

pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn money_formats() {
        assert_eq!(money(Some(Decimal::from(47000))), "$47,000");
        assert_eq!(money(Some(Decimal::from_str("1234567.5").unwrap())), "$1,234,567.50");
        assert_eq!(money(Some(Decimal::from_str("0.99").unwrap())), "$0.99");
        assert_eq!(money(Some(Decimal::from(500))), "$500");
        assert_eq!(money(None), "");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(vec!["xxx".into(), "y".into()]);
        assert_eq!(t.render(), "a    bb\nxxx  y\n");
    }

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(
            printable("ACME\x1b]0;pwned\x07\x1b[2J"),
            "ACME\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(printable("a\u{9b}2Jb\u{7f}"), "a\\u{9b}2Jb\\x7f");
        assert_eq!(printable("plain, ünïcode: ok"), "plain, ünïcode: ok");
        let mut t = Table::new(&["a"]);
        t.row(vec!["x\ny".into()]);
        assert!(!t.render().contains("x\ny"));
    }
}
