//! Executors: how an inverse tool is actually run. Every executor receives the
//! action id as the idempotency key; the target records it in the same
//! transaction as the effect (SQL, demo) or honours the Idempotency-Key
//! header (webhook), so a repeat returns the first outcome instead of acting
//! twice.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Acquire, PgPool};
use tokio::sync::Mutex;

use crate::contract::Claim;
use crate::registry::{Executor, Registry, resolve_env};

/// What running an inverse came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecOutcome {
    /// Done (or done before: the target saw the key already).
    Done(Value),
    /// The tool's condition no longer holds (e.g. the refund was withdrawn).
    ConditionFailed(String),
    /// Someone else changed what the action wrote; not clobbered.
    Conflict(String),
    /// Worth another attempt (timeout, connection, 5xx, an unexpected error).
    Retry(String),
}

/// SQLSTATEs the target functions raise (see src/demo/systems.sql).
pub const CONDITION_FAILED: &str = "BSCND";
pub const CONFLICT: &str = "BSCFL";

pub struct Executors {
    backstop: PgPool,
    systems: Mutex<HashMap<String, PgPool>>,
    http: reqwest::Client,
}

fn valid_function(name: &str) -> bool {
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| ident(p))
}

impl Executors {
    pub fn new(backstop: PgPool) -> Executors {
        let http = reqwest::Client::builder()
            .user_agent(concat!("backstop/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Executors {
            backstop,
            systems: Mutex::new(HashMap::new()),
            http,
        }
    }

    async fn system_pool(&self, registry: &Registry, system: &str) -> Result<PgPool, String> {
        let mut pools = self.systems.lock().await;
        if let Some(p) = pools.get(system) {
            return Ok(p.clone());
        }
        let sys = registry
            .systems
            .get(system)
            .ok_or_else(|| format!("system {system} is not declared in the registry"))?;
        let url = sys.resolve_url()?;
        let opts = PgConnectOptions::from_str(&url).map_err(|e| format!("system {system}: bad url: {e}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(opts.application_name("backstop worker"));
        pools.insert(system.to_string(), pool.clone());
        Ok(pool)
    }

    /// Run the inverse of `claim` with the executor the registry names.
    pub async fn run(&self, registry: &Registry, claim: &Claim) -> ExecOutcome {
        let Some(tool) = registry.tool(&claim.inverse_tool) else {
            return ExecOutcome::Retry(format!("{} is not in the active registry", claim.inverse_tool));
        };
        match &tool.executor {
            Some(Executor::Demo { function }) => sql_call(&self.backstop, function, claim).await,
            Some(Executor::Sql { system, function }) => match self.system_pool(registry, system).await {
                Ok(pool) => sql_call(&pool, function, claim).await,
                Err(e) => ExecOutcome::Retry(e),
            },
            Some(Executor::Webhook {
                url,
                timeout_seconds,
                headers,
            }) => {
                self.webhook(url, headers, Duration::from_secs_f64(*timeout_seconds), claim)
                    .await
            }
            Some(Executor::Mcp {
                command,
                timeout_seconds,
            }) => super::mcp::run(command, Duration::from_secs_f64(*timeout_seconds), claim).await,
            Some(Executor::Manual) | None => ExecOutcome::Retry(format!(
                "{} has no automatic executor: a person must run it",
                claim.inverse_tool
            )),
        }
    }

    /// `url` and header values may be `env:NAME`. What lands in the log (the
    /// outcome's text) names the declared url, never the resolved one, and
    /// never a header's value: both may carry secrets.
    async fn webhook(
        &self,
        url: &str,
        headers: &BTreeMap<String, String>,
        timeout: Duration,
        claim: &Claim,
    ) -> ExecOutcome {
        let target = match resolve_env(url) {
            Ok(u) => u,
            Err(e) => return ExecOutcome::Retry(format!("webhook {url}: {e}")),
        };
        // The back office decides whether the inverse may still run: it gets
        // the condition and the deadline the action was staged with.
        let body = json!({
            "action_id": claim.action_id,
            "agent": claim.agent,
            "tool": claim.tool,
            "inverse_tool": claim.inverse_tool,
            "params": claim.inverse_params,
            "condition": claim.condition,
            "deadline": claim.deadline,
            "attempt": claim.attempt,
        });
        let mut req = self
            .http
            .post(&target)
            .timeout(timeout)
            .header("Idempotency-Key", claim.action_id.to_string());
        for (name, value) in headers {
            match resolve_env(value) {
                Ok(v) => req = req.header(name.as_str(), v),
                Err(e) => return ExecOutcome::Retry(format!("webhook {url}: header {name}: {e}")),
            }
        }
        let res = match req.json(&body).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return ExecOutcome::Retry(format!("webhook {url} timed out after {timeout:?}"));
            }
            Err(e) => return ExecOutcome::Retry(format!("webhook {url}: {}", e.without_url())),
        };
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let recorded = json!({ "executor": "webhook", "status": status.as_u16(), "response": parsed });
        match status.as_u16() {
            200..=299 => ExecOutcome::Done(recorded),
            409 => ExecOutcome::Conflict(format!("webhook answered 409: {}", crate::output::cut(&text, 300))),
            412 | 422 => ExecOutcome::ConditionFailed(format!(
                "webhook answered {}: {}",
                status.as_u16(),
                crate::output::cut(&text, 300)
            )),
            _ => ExecOutcome::Retry(format!(
                "webhook answered {}: {}",
                status.as_u16(),
                crate::output::cut(&text, 300)
            )),
        }
    }
}

/// `function(params jsonb, idempotency_key uuid)` in a transaction of its own.
async fn sql_call(pool: &PgPool, function: &str, claim: &Claim) -> ExecOutcome {
    if !valid_function(function) {
        return ExecOutcome::Retry(format!("{function:?} is not a function name (schema.function)"));
    }
    let run = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let v: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {function}($1::jsonb, $2::uuid)")))
            .bind(&claim.inverse_params)
            .bind(claim.action_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<Value, sqlx::Error>(v)
    };
    match run.await {
        Ok(v) => ExecOutcome::Done(json!({ "executor": "sql", "function": function, "result": v })),
        Err(e) => {
            let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
            let msg = e
                .as_database_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            match code.as_deref() {
                Some(CONDITION_FAILED) => ExecOutcome::ConditionFailed(msg),
                Some(CONFLICT) => ExecOutcome::Conflict(msg),
                _ => ExecOutcome::Retry(format!("{function}: {msg}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_function;

    #[test]
    fn function_names_are_checked() {
        assert!(valid_function("payments.reverse_refund"));
        assert!(valid_function("undo"));
        assert!(!valid_function("payments.reverse_refund(); drop table x; --"));
        assert!(!valid_function("a.b.c"));
        assert!(!valid_function(""));
    }
}
