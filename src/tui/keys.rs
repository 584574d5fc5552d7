//! The one key table: the footer and the help screen are both generated from
//! it, and read-only mode drops the acting keys from both (and from update).

use super::state::View;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHelp {
    pub keys: &'static str,
    pub what: &'static str,
    /// Changes state (absent in read-only mode).
    pub acting: bool,
    /// Shown in the footer of these views (empty: help only).
    pub footer: &'static [View],
}

const ALL: &[View] = &[
    View::Fleet,
    View::Log,
    View::Approvals,
    View::Findings,
    View::Compensations,
];
const ACTIONS: &[View] = &[View::Log, View::Compensations];

pub const KEYS: &[KeyHelp] = &[
    KeyHelp {
        keys: "?",
        what: "help",
        acting: false,
        footer: ALL,
    },
    KeyHelp {
        keys: "/",
        what: "filter",
        acting: false,
        footer: &[View::Log, View::Approvals, View::Findings],
    },
    KeyHelp {
        keys: ":",
        what: "command",
        acting: false,
        footer: ALL,
    },
    KeyHelp {
        keys: "space",
        what: "mark",
        acting: true,
        footer: ACTIONS,
    },
    KeyHelp {
        keys: "c",
        what: "compensate",
        acting: true,
        footer: ACTIONS,
    },
    KeyHelp {
        keys: "a",
        what: "approve (asks)",
        acting: true,
        footer: &[View::Approvals],
    },
    KeyHelp {
        keys: "r",
        what: "reject",
        acting: true,
        footer: &[View::Approvals],
    },
    KeyHelp {
        keys: "A",
        what: "acknowledge",
        acting: true,
        footer: &[View::Findings],
    },
    KeyHelp {
        keys: "x",
        what: "resolve",
        acting: true,
        footer: &[View::Findings],
    },
    KeyHelp {
        keys: "Enter",
        what: "detail",
        acting: false,
        footer: ALL,
    },
    KeyHelp {
        keys: "P",
        what: "PAUSE fleet",
        acting: true,
        footer: ALL,
    },
    KeyHelp {
        keys: "q",
        what: "quit",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "Esc",
        what: "back (never destructive)",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "j k ↑ ↓",
        what: "move",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "g G",
        what: "newest (follow) / oldest",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "PgUp PgDn",
        what: "page",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "1-5",
        what: "fleet, log, approvals, findings, compensations",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "V",
        what: "mark a range (press at each end)",
        acting: true,
        footer: &[],
    },
    KeyHelp {
        keys: "*",
        what: "mark all shown",
        acting: true,
        footer: &[],
    },
    KeyHelp {
        keys: "u",
        what: "clear marks",
        acting: true,
        footer: &[],
    },
    KeyHelp {
        keys: "f",
        what: "freeze the view (rows keep arriving)",
        acting: false,
        footer: &[],
    },
    KeyHelp {
        keys: "p",
        what: "pause the selected agent (asks; default No)",
        acting: true,
        footer: &[],
    },
    KeyHelp {
        keys: "R",
        what: "resume (asks; default No)",
        acting: true,
        footer: &[],
    },
    KeyHelp {
        keys: "Tab",
        what: "complete a command",
        acting: false,
        footer: &[],
    },
];

/// The footer line for a view: its keys, then "? help".
pub fn footer(view: View, readonly: bool) -> Vec<&'static KeyHelp> {
    KEYS.iter()
        .filter(|k| k.footer.contains(&view) && !(readonly && k.acting))
        .collect()
}

/// Every key, in table order.
pub fn help(readonly: bool) -> Vec<&'static KeyHelp> {
    KEYS.iter().filter(|k| !(readonly && k.acting)).collect()
}

/// The commands `:` understands, for completion and help.
pub const COMMANDS: &[&str] = &[
    "agent",
    "mark agent",
    "pause fleet",
    "pause agent",
    "pause tool",
    "resume fleet",
    "resume agent",
    "resume tool",
    "fleet",
    "log",
    "approvals",
    "findings",
    "compensations",
    "clear",
    "quit",
];
