//! The `mcp` executor: run an inverse as a tool call on an MCP server (the
//! upstream the agent's calls went to through `backstop mcp`), started from
//! the registry's command over stdio. The action id travels as the
//! idempotency key in the call's `_meta`, so a server that honours it
//! answers a repeat (a worker that died after the call) with its first
//! outcome instead of acting twice.
//!
//! Outcomes, as the webhook executor's: a result is done; a tool error whose
//! structured content says `"outcome": "conflict"` or `"condition_failed"`
//! (or whose text says `conflict:` / `condition failed:`) is that; any
//! other tool error, a server that cannot be started and a timeout are
//! worth another attempt.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, MetaObject, RequestMetaObject};
use serde_json::{Map, Value, json};

use super::executor::ExecOutcome;
use crate::contract::Claim;
use crate::mcp::{connect_upstream, result_json};

/// The `_meta` key carrying the idempotency key (the action id).
pub const IDEMPOTENCY_META: &str = "io.backstop/idempotency-key";

pub async fn run(command: &[String], timeout: Duration, claim: &Claim) -> ExecOutcome {
    let shown = command.join(" ");
    match tokio::time::timeout(timeout, call(command, claim)).await {
        Err(_) => ExecOutcome::Retry(format!("mcp {shown}: no answer within {timeout:?}")),
        Ok(Err(e)) => ExecOutcome::Retry(format!("mcp {shown}: {e:#}")),
        Ok(Ok(r)) => outcome(&claim.inverse_tool, &r),
    }
}

async fn call(command: &[String], claim: &Claim) -> anyhow::Result<CallToolResult> {
    let upstream = connect_upstream(command).await?;
    let arguments = match &claim.inverse_params {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut meta = Map::new();
    meta.insert(IDEMPOTENCY_META.into(), Value::String(claim.action_id.to_string()));
    let mut request = CallToolRequestParams::new(claim.inverse_tool.clone()).with_arguments(arguments);
    request.meta = Some(RequestMetaObject(MetaObject(meta)));
    let result = upstream.peer().call_tool(request).await;
    upstream.cancel().await.ok();
    Ok(result?)
}

fn outcome(tool: &str, r: &CallToolResult) -> ExecOutcome {
    let recorded = result_json(r);
    if r.is_error != Some(true) {
        return ExecOutcome::Done(json!({ "executor": "mcp", "tool": tool, "result": recorded }));
    }
    let said = r
        .structured_content
        .as_ref()
        .and_then(|s| s.get("outcome"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    let lower = text.to_lowercase();
    let msg = format!("{tool} answered with an error: {}", crate::output::cut(&text, 300));
    // SDKs prefix a tool's error message ("Error executing tool x: ..."),
    // so the marker is looked for anywhere in the text.
    if said == "conflict" || lower.contains("conflict:") {
        ExecOutcome::Conflict(msg)
    } else if said == "condition_failed" || lower.contains("condition failed:") {
        ExecOutcome::ConditionFailed(msg)
    } else {
        ExecOutcome::Retry(msg)
    }
}
