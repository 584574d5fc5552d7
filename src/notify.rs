//! Delivery of the notification outbox (`[notify]` in policy.toml). The
//! contract queues one row per event and target when the event's log row is
//! appended; supervisors claim due rows with a lease, POST them, and report
//! each attempt back: delivered and finally-failed notifications are appended
//! to the log, retries wait with exponential backoff. At least once: a
//! supervisor that dies mid-delivery leaves its claim to expire, and another
//! sends again; the `Idempotency-Key` header (the event) lets a receiver drop
//! the repeat. The URL comes from this process's environment and goes
//! nowhere else: not in the database, not in the log, not in an error.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::watch;

/// How long a claim is held before another supervisor may send the row.
pub const LEASE: Duration = Duration::from_secs(30);
/// How long one POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A claimed notification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub event: String,
    pub target: String,
    pub kind: String,
    pub format: String,
    pub url_env: String,
    pub payload: Value,
    pub attempt: i32,
    pub max_attempts: i32,
}

fn s<'a>(p: &'a Value, k: &str) -> &'a str {
    p[k].as_str().unwrap_or("?")
}

fn num(p: &Value, k: &str) -> String {
    match &p[k] {
        Value::Number(n) => n.to_string(),
        Value::String(x) => x.clone(),
        _ => "none".to_string(),
    }
}

/// The human text of a notification. `code` wraps commands and ids (Slack's
/// backticks, nothing for plain text).
pub fn text(kind: &str, p: &Value, code: &str) -> String {
    match kind {
        "hold" => {
            let id = s(p, "action_id");
            let mut t = format!(
                "Backstop HOLD: {} wants {} for {}, waiting for approval ({} needed)\n",
                s(p, "agent"),
                s(p, "tool"),
                num(p, "amount"),
                p["approvals_needed"].as_i64().unwrap_or(1)
            );
            t += &format!("Rule: {}: {}\n", s(p, "rule"), s(p, "reason"));
            t += &format!(
                "Checks: class {}; cost to reverse {}; confidence {}\n",
                s(p, "class"),
                num(p, "cost_to_reverse"),
                num(p, "confidence")
            );
            if let Some(r) = p["reasoning"].as_str() {
                t += &format!("Reasoning: {r}\n");
            }
            t += &format!(
                "Expires: {} (then {})\n",
                s(p, "expires_at"),
                p["expiry_effect"].as_str().unwrap_or("block")
            );
            t += &format!("Approve: {code}backstop approve {id}{code}\n");
            t += &format!("Reject: {code}backstop reject {id} --reason \"...\"{code}");
            t
        }
        "finding" => {
            let mut t = format!(
                "Backstop FINDING ({}): {} on agent {}",
                s(p, "severity"),
                s(p, "kind"),
                p["agent"].as_str().unwrap_or("(none)")
            );
            if let Some(r) = p["rule"].as_str() {
                t += &format!(", rule {r}");
            }
            if let Some(a) = p["action_id"].as_str() {
                t += &format!(", action {code}{a}{code}");
            }
            if let Some(r) = p["remediation"].as_str() {
                t += &format!("\nRemediation: {r}");
            }
            t += &format!("\nSee: {code}backstop findings{code}");
            t
        }
        "pause" | "resume" => {
            let what = if s(p, "scope") == "fleet" {
                "the whole fleet".to_string()
            } else {
                format!("{} {}", s(p, "scope"), s(p, "target"))
            };
            format!(
                "Backstop {}: {what} by {}: {}",
                if kind == "pause" { "PAUSED" } else { "RESUMED" },
                s(p, "by"),
                s(p, "reason")
            )
        }
        "compensation_failed" => format!(
            "Backstop COMPENSATION FAILED: {} of {} by {} ({}, after {} attempt(s)); undo it by hand",
            s(p, "inverse_tool"),
            s(p, "tool"),
            s(p, "agent"),
            s(p, "status"),
            num(p, "attempts")
        ),
        "drill" => {
            let sc = &p["score"];
            let secs = |k: &str| sc[k].as_f64().map_or("never".to_string(), |v| format!("{v:.1}s"));
            format!(
                "Backstop DRILL {} on {}: {} attempted, {} blocked; detected {}, paused {}, compensated {}",
                s(p, "drill_id"),
                p["agent"].as_str().unwrap_or("?"),
                num(p, "attempted"),
                num(p, "blocked"),
                secs("time_to_detect"),
                secs("time_to_pause"),
                secs("time_to_compensate")
            )
        }
        other => format!("Backstop {other}"),
    }
}

/// The request body: a generic JSON document, or Slack's incoming-webhook shape.
pub fn body(c: &Claimed) -> Value {
    if c.format == "slack" {
        return json!({ "text": text(&c.kind, &c.payload, "`") });
    }
    let mut b = json!({
        "event": c.event,
        "kind": c.kind,
        "target": c.target,
        "text": text(&c.kind, &c.payload, ""),
        "data": c.payload,
    });
    if c.kind == "hold"
        && let Some(id) = c.payload["action_id"].as_str()
    {
        b["commands"] = json!({
            "approve": format!("backstop approve {id}"),
            "reject": format!("backstop reject {id} --reason \"...\""),
        });
    }
    b
}

/// Send one notification; what to record of the attempt (never the URL).
async fn send(client: &reqwest::Client, c: &Claimed) -> (bool, Value) {
    let Ok(url) = std::env::var(&c.url_env) else {
        return (
            false,
            json!({ "error": format!("environment variable {} is not set in the supervisor's environment", c.url_env) }),
        );
    };
    let r = client
        .post(url)
        .header("Idempotency-Key", &c.event)
        .json(&body(c))
        .timeout(TIMEOUT)
        .send()
        .await;
    match r {
        Ok(resp) => {
            let st = resp.status();
            (st.is_success(), json!({ "http_status": st.as_u16() }))
        }
        Err(e) => (false, json!({ "error": e.without_url().to_string() })),
    }
}

/// Claim and deliver what is due. Returns how many were attempted.
pub async fn deliver_step(pool: &PgPool, client: &reqwest::Client, name: &str, max: i32) -> Result<usize> {
    let claimed: Vec<Claimed> =
        sqlx::query_as("SELECT * FROM backstop.claim_notifications($1, $2, make_interval(secs => $3))")
            .bind(name)
            .bind(max)
            .bind(LEASE.as_secs_f64())
            .fetch_all(pool)
            .await?;
    let n = claimed.len();
    let sends = claimed.iter().map(|c| send(client, c));
    let results = futures_util::future::join_all(sends).await;
    for (c, (ok, detail)) in claimed.iter().zip(results) {
        let status: String = sqlx::query_scalar("SELECT backstop.finish_notification($1, $2, $3, $4, $5)")
            .bind(&c.event)
            .bind(&c.target)
            .bind(name)
            .bind(ok)
            .bind(&detail)
            .fetch_one(pool)
            .await?;
        if status == "failed" {
            eprintln!(
                "backstop supervise {name}: notification {} to {} failed for good after {} attempt(s): {detail}",
                c.event, c.target, c.attempt
            );
        }
    }
    Ok(n)
}

/// Deliver until `stop` turns true.
pub async fn run(pool: PgPool, name: String, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("backstop supervise {name}: notifications disabled: {e}");
            return;
        }
    };
    while !*stop.borrow() {
        let busy = match deliver_step(&pool, &client, &name, 20).await {
            Ok(n) => n > 0,
            Err(e) => {
                eprintln!("backstop supervise {name}: notifications: {e:#}; retrying");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
