//! `backstop mcp`: an MCP gateway. It serves an agent's MCP client on stdio,
//! starts the upstream MCP server (a command, over stdio), lists the
//! upstream's tools as its own, and runs every `tools/call` through the
//! contract: propose (the tool's arguments are the params, the agent is the
//! one this gateway was started as and its login may act as), wait for a
//! held call's decision with progress notifications, forward an allowed call
//! and record what the upstream returned.
//!
//! Answers the agent sees as tool errors (so a model can read them): a block
//! with its reason, a hold still undecided after the configured wait with
//! the action id, a contract error with its message. Tools the registry
//! does not know are blocked by propose like any unknown tool, and so logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::contract::{self, Proposal, Verdict};

pub mod draft;

/// The tools the MCP server started by `command` lists (it is stopped after).
pub async fn upstream_tools(command: &[String]) -> Result<Vec<Tool>> {
    let upstream = connect_upstream(command).await?;
    let tools = upstream
        .peer()
        .list_all_tools()
        .await
        .context("the upstream MCP server did not list its tools");
    upstream.cancel().await.ok();
    tools
}

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The agent every call is proposed as (the login must be it or mapped to it).
    pub agent: String,
    /// How long a held call waits for its decision before the agent is told it is held.
    pub hold_wait: Duration,
    /// How often a waiting call looks again without a notification (an expiry sends none).
    pub poll: Duration,
    /// The upstream MCP server: a program and its arguments.
    pub command: Vec<String>,
}

/// The upstream server, started and initialized, as an MCP client of it.
pub type Upstream = RunningService<RoleClient, ()>;

/// Start the upstream MCP server `command` and connect to it over its stdio.
pub async fn connect_upstream(command: &[String]) -> Result<Upstream> {
    let Some((program, args)) = command.split_first() else {
        bail!("no upstream MCP server: give its command after --, e.g. backstop mcp --agent bot -- python3 server.py");
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    // The upstream's stderr is its log: pass it through to ours.
    cmd.stderr(std::process::Stdio::inherit());
    let transport =
        TokioChildProcess::new(cmd).with_context(|| format!("cannot start the upstream MCP server {program:?}"))?;
    ().serve(transport)
        .await
        .with_context(|| format!("the upstream MCP server {program:?} did not complete the MCP handshake"))
}

/// Serve the agent on this process's stdin/stdout until it disconnects.
pub async fn serve_stdio(pool: PgPool, opts: GatewayOptions) -> Result<()> {
    let upstream = connect_upstream(&opts.command).await?;
    let tools = upstream
        .peer()
        .list_all_tools()
        .await
        .context("the upstream MCP server did not list its tools")?;
    let gateway = Gateway {
        inner: Arc::new(Inner {
            pool,
            opts,
            tools,
            upstream,
        }),
    };
    let inner = gateway.inner.clone();
    let server = gateway
        .serve(rmcp::transport::stdio())
        .await
        .context("the agent's MCP client did not complete the MCP handshake")?;
    let quit = server.waiting().await;
    if let Ok(inner) = Arc::try_unwrap(inner) {
        inner.upstream.cancel().await.ok();
    }
    quit.context("serving the agent")?;
    Ok(())
}

struct Inner {
    pool: PgPool,
    opts: GatewayOptions,
    tools: Vec<Tool>,
    upstream: Upstream,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

fn tool_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// What the upstream returned, as the JSON object record_result takes: its
/// structured content when it gave one (a refund id to bind the inverse
/// from), else its text.
pub fn result_json(r: &CallToolResult) -> Value {
    if let Some(Value::Object(m)) = &r.structured_content {
        return Value::Object(m.clone());
    }
    let text: Vec<&str> = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let mut m = Map::new();
    if let Some(v) = &r.structured_content {
        m.insert("value".into(), v.clone());
    }
    // A tool that returns one JSON object as text (common before structured
    // content) is read as that object.
    if let [one] = text.as_slice()
        && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(one)
        && m.is_empty()
    {
        return Value::Object(o);
    }
    m.insert("text".into(), Value::String(text.join("\n")));
    Value::Object(m)
}

impl Gateway {
    /// Wait for a held action's decision, up to the configured time; the
    /// verdict and reason at the end. LISTEN first, then look: a decision in
    /// between is seen by the look, one after it wakes the listener.
    async fn wait(
        &self,
        action_id: Uuid,
        ctx: &RequestContext<RoleServer>,
        progress: Option<rmcp::model::ProgressToken>,
    ) -> Result<(Verdict, String)> {
        let pool = &self.inner.pool;
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([contract::DECISIONS_CHANNEL, "backstop_control"])
            .await?;
        let key = contract::decision_key(action_id);
        let t0 = Instant::now();
        let total = self.inner.opts.hold_wait;
        let mut last_reason = String::new();
        loop {
            let (verdict, reason) = contract::decision(pool, action_id).await?;
            if verdict != Verdict::Hold {
                return Ok((verdict, reason));
            }
            let elapsed = t0.elapsed();
            if elapsed >= total || ctx.ct.is_cancelled() {
                return Ok((verdict, reason));
            }
            if let Some(token) = &progress {
                // Progress in seconds waited; the message says what for.
                let p = ProgressNotificationParam::new(token.clone(), elapsed.as_secs_f64())
                    .with_total(total.as_secs_f64())
                    .with_message(format!("held for approval (action {action_id}): {reason}"));
                ctx.peer.notify_progress(p).await.ok();
            } else if reason != last_reason {
                note(&format!("action {action_id} held: {reason}"));
            }
            last_reason = reason;
            let wait = self.inner.opts.poll.min(total - elapsed);
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = ctx.ct.cancelled() => break,
                    n = tokio::time::timeout_at(deadline, listener.recv()) => match n {
                        Err(_) => break,
                        Ok(Ok(n)) if n.channel() != contract::DECISIONS_CHANNEL || n.payload() == key => break,
                        Ok(Ok(_)) => continue,
                        // The listener reconnects on its own; look again meanwhile.
                        Ok(Err(_)) => break,
                    },
                }
            }
        }
    }

    async fn call(&self, request: CallToolRequestParams, ctx: RequestContext<RoleServer>) -> Result<CallToolResult> {
        let inner = &self.inner;
        let params = Value::Object(request.arguments.clone().unwrap_or_default());
        let proposal = Proposal {
            agent: inner.opts.agent.clone(),
            tool: request.name.to_string(),
            params,
            ..Default::default()
        };
        let d = match contract::propose(&inner.pool, &proposal).await {
            Ok(d) => d,
            Err(e) => return Ok(tool_error(format!("backstop refused the call: {e}"))),
        };
        let (verdict, reason) = match d.verdict {
            Verdict::Hold => {
                let progress = ctx.meta.get_progress_token();
                self.wait(d.action_id, &ctx, progress).await?
            }
            v => (v, d.reason),
        };
        match verdict {
            Verdict::Block => {
                return Ok(tool_error(format!(
                    "blocked by backstop (action {}): {reason}",
                    d.action_id
                )));
            }
            Verdict::Hold => {
                return Ok(tool_error(format!(
                    "held for approval by backstop: action {} is waiting for a decision ({reason}); \
                     the call was not made. Calling again proposes it anew.",
                    d.action_id
                )));
            }
            Verdict::Allow => {}
        }
        let forwarded = inner.upstream.peer().call_tool(request).await;
        let (ok, result, answer) = match forwarded {
            Ok(r) => (r.is_error != Some(true), result_json(&r), r),
            Err(e) => {
                let msg = format!("the upstream MCP server failed: {e}");
                (false, serde_json::json!({"error": msg}), tool_error(msg))
            }
        };
        if let Err(e) = contract::record_result(&inner.pool, d.action_id, ok, Some(&result), None).await {
            // The call was made; the agent must hear that its record failed.
            note(&format!("action {}: recording the result failed: {e}", d.action_id));
            return Ok(tool_error(format!(
                "the call ran but backstop could not record its result (action {}): {e}",
                d.action_id
            )));
        }
        Ok(answer)
    }
}

/// The gateway's own log line: stderr, since stdout is the MCP channel.
fn note(msg: &str) {
    eprintln!("backstop mcp: {msg}");
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        let upstream = self.inner.upstream.peer().peer_info();
        let name = upstream
            .and_then(|i| i.server_info.clone())
            .map(|i| format!("backstop ({})", i.name))
            .unwrap_or_else(|| "backstop".into());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(name, env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Every tool call goes through Backstop: it may be held for a person's approval or blocked, \
                 and the tool error says why.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.inner.tools.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match self.call(request, ctx).await {
            Ok(r) => Ok(r.into()),
            Err(e) => Ok(tool_error(format!("backstop gateway error: {e:#}")).into()),
        }
    }
}
