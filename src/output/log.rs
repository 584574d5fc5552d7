//! Log rows, for people.

use crate::contract::LogRow;

use super::{Table, brief, cut, money, time};

/// One line per log row, for people.
pub fn render_log(rows: &[LogRow]) -> String {
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
fn summarize(r: &LogRow) -> String {
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
