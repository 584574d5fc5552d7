//! `assets/tools.toml`: every tool an agent may call, whether it can be
//! undone, and how. Parsed and checked here (every problem with file, line and
//! column), then loaded into the database as a new registry version.

use std::collections::BTreeMap;
use std::path::Path;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toml::Spanned;

use crate::filecheck::{Checker, Issue, decimal, parse_duration, sha256_hex, suggest};

pub const CLASSES: &[&str] = &["read", "reversible", "conditional", "irreversible"];
pub const EXECUTORS: &[&str] = &["sql", "webhook", "mcp", "demo", "manual"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolClass {
    Read,
    Reversible,
    Conditional,
    Irreversible,
}

impl ToolClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolClass::Read => "read",
            ToolClass::Reversible => "reversible",
            ToolClass::Conditional => "conditional",
            ToolClass::Irreversible => "irreversible",
        }
    }
    fn parse(s: &str) -> Option<ToolClass> {
        Some(match s {
            "read" => ToolClass::Read,
            "reversible" => ToolClass::Reversible,
            "conditional" => ToolClass::Conditional,
            "irreversible" => ToolClass::Irreversible,
            _ => return None,
        })
    }
    pub fn has_inverse(self) -> bool {
        matches!(self, ToolClass::Reversible | ToolClass::Conditional)
    }
}

/// How a compensation worker runs a tool (normally an inverse tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Executor {
    /// Call `function(params jsonb, idempotency_key uuid)` in a target database.
    Sql { system: String, function: String },
    /// POST the call as JSON with an `Idempotency-Key` header. `url` and each
    /// header value may be `env:NAME`, resolved by the worker at call time, so
    /// no secret is in the file or in the log (which keeps the document).
    Webhook {
        url: String,
        timeout_seconds: f64,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// A tool call of the same name on an MCP server started from `command`
    /// (stdio), the action id in the call's `_meta` (src/compensation/mcp.rs).
    Mcp { command: Vec<String>, timeout_seconds: f64 },
    /// The demo's simulated business systems (functions in the same database).
    Demo { function: String },
    /// No automation: a person runs it; the worker leaves it alone.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub class: ToolClass,
    pub description: String,
    pub inverse: Option<String>,
    pub bindings: BTreeMap<String, String>,
    pub window_seconds: Option<f64>,
    pub condition: Option<String>,
    pub value_param: Option<String>,
    pub entity_param: Option<String>,
    pub cost_fixed: Decimal,
    pub cost_share: Decimal,
    pub executor: Option<Executor>,
    pub params: Option<Vec<String>>,
    pub result: Option<Vec<String>>,
    /// What a person does when this action cannot be undone automatically.
    pub remediation: Option<String>,
    /// An inverse that agents may also propose.
    #[serde(default)]
    pub agent_callable: bool,
    /// A call without its value (no amount and nothing at `value_param`) is blocked.
    #[serde(default)]
    pub value_required: bool,
    /// "out" (the company pays) or "in" (the company is paid).
    #[serde(default)]
    pub direction: Option<String>,
    /// The parameter whose value picks the call's class, and the classes by value.
    #[serde(default)]
    pub class_param: Option<String>,
    #[serde(default)]
    pub class_values: Option<BTreeMap<String, ToolClass>>,
}

/// A target system for the SQL executor. `url` may be `env:NAME` so that no
/// secret lives in the file (or in the log, which keeps the whole document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct System {
    pub url: String,
}

impl System {
    pub fn resolve_url(&self) -> Result<String, String> {
        resolve_env(&self.url)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub tools: BTreeMap<String, Tool>,
    pub systems: BTreeMap<String, System>,
    /// sha256 of the file's bytes.
    pub sha256: String,
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    tools: BTreeMap<String, Spanned<ToolDef>>,
    #[serde(default)]
    systems: BTreeMap<String, Spanned<SystemDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolDef {
    class: Spanned<String>,
    #[serde(default)]
    description: String,
    inverse: Option<Spanned<String>>,
    #[serde(default)]
    bind: BTreeMap<String, Spanned<String>>,
    window: Option<Spanned<String>>,
    condition: Option<Spanned<String>>,
    value: Option<Spanned<String>>,
    entity: Option<Spanned<String>>,
    cost: Option<Spanned<CostDef>>,
    executor: Option<Spanned<ExecutorDef>>,
    params: Option<Vec<String>>,
    result: Option<Vec<String>>,
    remediation: Option<String>,
    /// An inverse that agents may also propose (by default only workers run inverses).
    agent_callable: Option<bool>,
    value_required: Option<bool>,
    direction: Option<Spanned<String>>,
    class_by: Option<Spanned<ClassByDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassByDef {
    param: String,
    values: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CostDef {
    #[serde(default)]
    fixed: Option<f64>,
    #[serde(default)]
    share: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutorDef {
    kind: Spanned<String>,
    system: Option<String>,
    function: Option<String>,
    url: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    command: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemDef {
    url: String,
}

/// The terms of a value expression: dotted paths joined by `+`, where a
/// segment ending in `[]` stands for every element of an array.
pub fn value_terms(expr: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    for t in expr.split('+').map(str::trim) {
        let ok = !t.is_empty()
            && t.split('.').all(|seg| {
                let name = seg.strip_suffix("[]").unwrap_or(seg);
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !ok {
            return Err(format!(
                "{expr:?} is not a value expression: dotted paths joined by +, a segment ending in [] for every element of an array (amount, payment_methods[].amount, items[].price + shipping)"
            ));
        }
        terms.push(t.to_string());
    }
    Ok(terms)
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value from the file, or from the environment when it is `env:NAME`.
pub fn resolve_env(v: &str) -> Result<String, String> {
    match v.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
        None => Ok(v.to_string()),
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._:@/-".contains(c))
}

/// Parse and check a registry file. Either every problem, or the registry.
pub fn parse(file: &str, text: &str) -> Result<Registry, Vec<Issue>> {
    let mut ck = Checker::new(file, text);
    let doc: FileDoc = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            ck.toml_error(&e);
            return Err(ck.into_issues());
        }
    };
    let names: Vec<&str> = doc.tools.keys().map(String::as_str).collect();
    let system_names: Vec<&str> = doc.systems.keys().map(String::as_str).collect();
    let mut tools = BTreeMap::new();

    for (name, def) in &doc.tools {
        let span = def.span();
        let d = def.get_ref();
        let key = format!("tools.{name}");
        if !is_ident(name) {
            ck.at(span.clone(), &key, "tool names are 1 to 128 characters of letters, digits and . _ : @ / -, starting with a letter or digit");
        }
        let class = match ToolClass::parse(d.class.get_ref()) {
            Some(c) => c,
            None => {
                let hint = suggest(d.class.get_ref(), CLASSES)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                ck.at(
                    d.class.span(),
                    format!("{key}.class"),
                    format!(
                        "unknown class {:?}{hint}; valid: {}",
                        d.class.get_ref(),
                        CLASSES.join(", ")
                    ),
                );
                continue;
            }
        };
        match (&d.inverse, class.has_inverse()) {
            (None, true) => ck.at(
                span.clone(),
                format!("{key}.inverse"),
                format!(
                    "a {} tool must name its inverse tool (inverse = \"...\")",
                    class.as_str()
                ),
            ),
            (Some(inv), false) => ck.at(
                inv.span(),
                format!("{key}.inverse"),
                format!(
                    "a {} tool has no inverse; remove this key or change the class to reversible or conditional",
                    class.as_str()
                ),
            ),
            (Some(inv), true) if !doc.tools.contains_key(inv.get_ref()) => {
                let hint = if ck.wants_hints() {
                    suggest(inv.get_ref(), &names)
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                ck.at(
                    inv.span(),
                    format!("{key}.inverse"),
                    format!(
                        "inverse tool {:?} is not registered{hint}; registered tools: {}",
                        inv.get_ref(),
                        crate::filecheck::some_of(&names)
                    ),
                );
            }
            _ => {}
        }
        if !d.bind.is_empty() && !class.has_inverse() {
            ck.at(
                span.clone(),
                format!("{key}.bind"),
                "only reversible and conditional tools bind inverse parameters",
            );
        }
        let inverse_def = d.inverse.as_ref().and_then(|i| doc.tools.get(i.get_ref()));
        let mut bindings = BTreeMap::new();
        for (param, path) in &d.bind {
            let pkey = format!("{key}.bind.{param}");
            let p = path.get_ref();
            let field = if let Some(f) = p.strip_prefix("params.") {
                if let Some(declared) = &d.params
                    && !declared.iter().any(|x| x == f.split('.').next().unwrap_or(f))
                {
                    ck.at(
                        path.span(),
                        &pkey,
                        format!("{p:?} names no field: {name} declares params {}", declared.join(", ")),
                    );
                }
                Some(f)
            } else if let Some(f) = p.strip_prefix("result.") {
                if let Some(declared) = &d.result
                    && !declared.iter().any(|x| x == f.split('.').next().unwrap_or(f))
                {
                    ck.at(
                        path.span(),
                        &pkey,
                        format!(
                            "{p:?} names no field: {name} declares result fields {}",
                            declared.join(", ")
                        ),
                    );
                }
                Some(f)
            } else if let Some(f) = p.strip_prefix("agent.") {
                // Only the agent knows it (the old address): it passes
                // inverse_params.FIELD with the result, and a call that does
                // not leaves the compensation unbound.
                Some(f)
            } else if p == "result" {
                // The whole result (a tool that returns a bare value).
                Some("result")
            } else {
                ck.at(
                    path.span(),
                    &pkey,
                    format!(
                        "{p:?} is not a binding: write params.FIELD, result.FIELD, result, or agent.FIELD (passed by the agent in inverse_params)"
                    ),
                );
                None
            };
            if field.is_some_and(str::is_empty) {
                ck.at(
                    path.span(),
                    &pkey,
                    "the binding names no field after params., result. or agent.",
                );
            }
            if let Some(inv) = inverse_def
                && let Some(declared) = &inv.get_ref().params
                && !declared.iter().any(|x| x == param)
            {
                ck.at(
                    path.span(),
                    &pkey,
                    format!(
                        "the inverse {} takes no parameter {param:?}; it declares {}",
                        d.inverse.as_ref().map(|i| i.get_ref().as_str()).unwrap_or(""),
                        declared.join(", ")
                    ),
                );
            }
            bindings.insert(param.clone(), p.clone());
        }
        if let (Some(inv), true) = (inverse_def, class.has_inverse())
            && let Some(declared) = &inv.get_ref().params
        {
            let missing: Vec<&str> = declared
                .iter()
                .filter(|p| !d.bind.contains_key(*p))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                ck.at(
                    span.clone(),
                    format!("{key}.bind"),
                    format!(
                        "the inverse takes {} but nothing binds {}",
                        declared.join(", "),
                        missing.join(", ")
                    ),
                );
            }
        }
        let window_seconds = match &d.window {
            Some(w) => {
                if class != ToolClass::Conditional {
                    ck.at(
                        w.span(),
                        format!("{key}.window"),
                        "only conditional tools have a reversal window",
                    );
                }
                match parse_duration(w.get_ref()) {
                    Ok(0.0) => {
                        ck.at(
                            w.span(),
                            format!("{key}.window"),
                            "a reversal window must be longer than zero",
                        );
                        None
                    }
                    Ok(s) => Some(s),
                    Err(e) => {
                        ck.at(w.span(), format!("{key}.window"), e);
                        None
                    }
                }
            }
            None => None,
        };
        if let Some(c) = &d.condition {
            if class != ToolClass::Conditional && class != ToolClass::Reversible {
                ck.at(
                    c.span(),
                    format!("{key}.condition"),
                    "only reversible and conditional tools have a condition",
                );
            }
            if !is_ident(c.get_ref()) {
                ck.at(
                    c.span(),
                    format!("{key}.condition"),
                    "a condition is a name (letters, digits, . _ : @ / -)",
                );
            }
        }
        if class == ToolClass::Conditional && d.window.is_none() && d.condition.is_none() {
            ck.at(
                span.clone(),
                &key,
                "a conditional tool needs a reversal window (window = \"30d\") or a named condition (condition = \"...\"), or both",
            );
        }
        if let Some(v) = &d.value
            && let Err(m) = value_terms(v.get_ref())
        {
            ck.at(v.span(), format!("{key}.value"), m);
        }
        if let Some(e) = &d.entity
            && e.get_ref().contains(['[', '+'])
        {
            ck.at(
                e.span(),
                format!("{key}.entity"),
                "an entity is one dotted path to one value (customer_id, order.customer)",
            );
        }
        // Each path must start at a parameter the tool declares (when it declares them).
        if let Some(declared) = &d.params {
            let mut named: Vec<(&str, &Spanned<String>, String)> = Vec::new();
            if let Some(v) = &d.value {
                for t in value_terms(v.get_ref()).unwrap_or_default() {
                    let first = t.split('.').next().unwrap_or("").trim_end_matches("[]").to_string();
                    named.push(("value", v, first));
                }
            }
            if let Some(e) = &d.entity {
                named.push(("entity", e, e.get_ref().split('.').next().unwrap_or("").to_string()));
            }
            for (what, v, first) in named {
                if !declared.contains(&first) {
                    ck.at(
                        v.span(),
                        format!("{key}.{what}"),
                        format!(
                            "{:?} names no parameter of {name}; it declares {}",
                            v.get_ref(),
                            declared.join(", ")
                        ),
                    );
                }
            }
        }
        if d.value_required == Some(true) && d.value.is_none() {
            ck.at(
                span.clone(),
                format!("{key}.value_required"),
                "value_required needs value = \"PARAM\" (the parameter carrying the money at stake)",
            );
        }
        if let Some(dir) = &d.direction
            && !matches!(dir.get_ref().as_str(), "out" | "in")
        {
            ck.at(
                dir.span(),
                format!("{key}.direction"),
                format!(
                    "direction is \"out\" (the company pays) or \"in\" (the company is paid); got {:?}",
                    dir.get_ref()
                ),
            );
        }
        let mut class_values = None;
        if let Some(cb) = &d.class_by {
            let c = cb.get_ref();
            if c.param.is_empty() || c.param.contains(['[', '+']) {
                ck.at(
                    cb.span(),
                    format!("{key}.class_by.param"),
                    "class_by.param is one dotted path",
                );
            } else if let Some(declared) = &d.params
                && !declared.iter().any(|x| x == c.param.split('.').next().unwrap_or(""))
            {
                ck.at(
                    cb.span(),
                    format!("{key}.class_by.param"),
                    format!(
                        "{:?} names no parameter of {name}; it declares {}",
                        c.param,
                        declared.join(", ")
                    ),
                );
            }
            let mut m = BTreeMap::new();
            for (value, cls) in &c.values {
                match ToolClass::parse(cls) {
                    Some(ToolClass::Read) | None => ck.at(
                        cb.span(),
                        format!("{key}.class_by.values.{value}"),
                        format!("a call's class is reversible, conditional or irreversible; got {cls:?}"),
                    ),
                    Some(k) if k.has_inverse() && !class.has_inverse() => ck.at(
                        cb.span(),
                        format!("{key}.class_by.values.{value}"),
                        format!(
                            "{cls} needs an inverse, and {name} is {}: declare class = \"reversible\" or \"conditional\" with its inverse, and make the final calls irreversible here",
                            class.as_str()
                        ),
                    ),
                    Some(ToolClass::Conditional) if d.window.is_none() && d.condition.is_none() => ck.at(
                        cb.span(),
                        format!("{key}.class_by.values.{value}"),
                        "a conditional call needs the tool's reversal window or condition",
                    ),
                    Some(k) => {
                        m.insert(value.clone(), k);
                    }
                }
            }
            if c.values.is_empty() {
                ck.at(
                    cb.span(),
                    format!("{key}.class_by.values"),
                    "class_by.values maps parameter values to classes",
                );
            }
            class_values = Some(m);
        }
        let (mut cost_fixed, mut cost_share) = (Decimal::ZERO, Decimal::ZERO);
        if let Some(c) = &d.cost {
            if class == ToolClass::Irreversible || class == ToolClass::Read {
                ck.at(
                    c.span(),
                    format!("{key}.cost"),
                    "irreversible tools cost their full amount to reverse and read tools nothing: remove cost",
                );
            }
            let c2 = c.get_ref();
            if let Some(f) = c2.fixed {
                if !(0.0..=1e12).contains(&f) {
                    ck.at(
                        c.span(),
                        format!("{key}.cost.fixed"),
                        format!("must be between 0 and 1e12; got {f}"),
                    );
                }
                cost_fixed = decimal(f);
            }
            if let Some(s) = c2.share {
                if !(0.0..=1.0).contains(&s) {
                    ck.at(
                        c.span(),
                        format!("{key}.cost.share"),
                        format!("a share of the amount, between 0 and 1; got {s}"),
                    );
                }
                cost_share = decimal(s);
            }
        }
        let executor = match &d.executor {
            None => None,
            Some(e) => {
                let ed = e.get_ref();
                let ekey = format!("{key}.executor");
                match ed.kind.get_ref().as_str() {
                    "sql" => match (&ed.system, &ed.function) {
                        (Some(sys), Some(f)) => {
                            if !doc.systems.contains_key(sys) {
                                ck.at(
                                    e.span(),
                                    format!("{ekey}.system"),
                                    format!(
                                        "system {sys:?} is not declared; add [systems.{sys}] url = \"env:...\" (declared: {})",
                                        if system_names.is_empty() { "none".to_string() } else { system_names.join(", ") }
                                    ),
                                );
                            }
                            Some(Executor::Sql {
                                system: sys.clone(),
                                function: f.clone(),
                            })
                        }
                        _ => {
                            ck.at(e.span(), &ekey, "a sql executor needs system and function");
                            None
                        }
                    },
                    "webhook" => match &ed.url {
                        Some(url)
                            if url.starts_with("http://")
                                || url.starts_with("https://")
                                || url.strip_prefix("env:").is_some_and(is_env_name) =>
                        {
                            for (h, v) in &ed.headers {
                                let valid_name =
                                    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                                if !valid_name {
                                    ck.at(
                                        e.span(),
                                        format!("{ekey}.headers"),
                                        format!("{h:?} is not a header name"),
                                    );
                                }
                                if let Some(var) = v.strip_prefix("env:")
                                    && !is_env_name(var)
                                {
                                    ck.at(
                                        e.span(),
                                        format!("{ekey}.headers.{h}"),
                                        format!("{var:?} is not an environment variable name"),
                                    );
                                } else if !v.starts_with("env:") && h.eq_ignore_ascii_case("authorization") {
                                    ck.at(
                                        e.span(),
                                        format!("{ekey}.headers.{h}"),
                                        "a secret belongs in the environment, not in the file (or the log, which keeps the file): write \"env:NAME\"",
                                    );
                                }
                            }
                            let timeout_seconds = match &ed.timeout {
                                Some(t) => parse_duration(t).unwrap_or_else(|m| {
                                    ck.at(e.span(), format!("{ekey}.timeout"), m);
                                    10.0
                                }),
                                None => 10.0,
                            };
                            Some(Executor::Webhook {
                                url: url.clone(),
                                timeout_seconds,
                                headers: ed.headers.clone(),
                            })
                        }
                        _ => {
                            ck.at(
                                e.span(),
                                format!("{ekey}.url"),
                                "a webhook executor needs url = \"http(s)://...\" or url = \"env:NAME\" (a URL with a secret in it)",
                            );
                            None
                        }
                    },
                    "mcp" => match &ed.command {
                        Some(command) if !command.is_empty() => Some(Executor::Mcp {
                            command: command.clone(),
                            timeout_seconds: match &ed.timeout {
                                Some(t) => parse_duration(t).unwrap_or_else(|m| {
                                    ck.at(e.span(), format!("{ekey}.timeout"), m);
                                    30.0
                                }),
                                None => 30.0,
                            },
                        }),
                        _ => {
                            ck.at(
                                e.span(),
                                format!("{ekey}.command"),
                                "an mcp executor needs command = [\"program\", \"arg\", ...] (the MCP server, over stdio)",
                            );
                            None
                        }
                    },
                    "demo" => Some(Executor::Demo {
                        function: ed.function.clone().unwrap_or_else(|| format!("demo.{name}")),
                    }),
                    "manual" => Some(Executor::Manual),
                    other => {
                        let hint = suggest(other, EXECUTORS)
                            .map(|s| format!(" (did you mean {s:?}?)"))
                            .unwrap_or_default();
                        ck.at(
                            ed.kind.span(),
                            format!("{ekey}.kind"),
                            format!("unknown executor {other:?}{hint}; valid: {}", EXECUTORS.join(", ")),
                        );
                        None
                    }
                }
            }
        };
        tools.insert(
            name.clone(),
            Tool {
                name: name.clone(),
                class,
                description: d.description.clone(),
                inverse: d.inverse.as_ref().map(|i| i.get_ref().clone()),
                bindings,
                window_seconds,
                condition: d.condition.as_ref().map(|c| c.get_ref().clone()),
                value_param: d.value.as_ref().map(|v| v.get_ref().clone()),
                entity_param: d.entity.as_ref().map(|v| v.get_ref().clone()),
                cost_fixed,
                cost_share,
                executor,
                params: d.params.clone(),
                result: d.result.clone(),
                remediation: d.remediation.clone(),
                agent_callable: d.agent_callable.unwrap_or(false),
                value_required: d.value_required.unwrap_or(false),
                direction: d.direction.as_ref().map(|v| v.get_ref().clone()),
                class_param: d.class_by.as_ref().map(|c| c.get_ref().param.clone()),
                class_values,
            },
        );
    }
    let mut systems = BTreeMap::new();
    for (name, s) in &doc.systems {
        let url = &s.get_ref().url;
        if !(url.starts_with("env:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            ck.at(
                s.span(),
                format!("systems.{name}.url"),
                "a system url is postgres://... or env:VARIABLE (keep secrets out of the file)",
            );
        }
        systems.insert(name.clone(), System { url: url.clone() });
    }
    if ck.issues.is_empty() {
        Ok(Registry {
            tools,
            systems,
            sha256: sha256_hex(text),
        })
    } else {
        Err(ck.into_issues())
    }
}

impl Registry {
    /// The normalized document loaded into the database (and kept in the log).
    pub fn doc(&self) -> Value {
        let tools: Vec<Value> = self
            .tools
            .values()
            .map(|t| {
                json!({
                    "name": t.name,
                    "class": t.class.as_str(),
                    "description": t.description,
                    "inverse": t.inverse,
                    "bindings": t.bindings,
                    "window_seconds": t.window_seconds,
                    "condition": t.condition,
                    "value_param": t.value_param,
                    "entity_param": t.entity_param,
                    "cost_fixed": t.cost_fixed,
                    "cost_share": t.cost_share,
                    "executor": t.executor,
                    "params": t.params,
                    "result": t.result,
                    "remediation": t.remediation,
                    "agent_callable": t.agent_callable,
                    "value_required": t.value_required,
                    "direction": t.direction,
                    "class_param": t.class_param,
                    "class_values": t.class_values,
                })
            })
            .collect();
        json!({ "tools": tools, "systems": self.systems })
    }

    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }
}

/// Read and check a registry file.
pub fn read(path: &Path) -> Result<Registry, Vec<Issue>> {
    let file = path.display().to_string();
    match crate::filecheck::read_capped(path) {
        Ok(text) => parse(&file, &text),
        Err(e) => Err(vec![Issue {
            file,
            line: 0,
            col: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }]),
    }
}

/// Load a checked registry as the active version (no-op when unchanged).
pub async fn sync<'e, E: sqlx::PgExecutor<'e>>(
    ex: E,
    reg: &Registry,
    source: &str,
) -> crate::contract::Result<crate::contract::Loaded> {
    crate::contract::load_registry(ex, &reg.doc(), &reg.sha256, source).await
}

/// The active registry as stored in the database.
pub async fn active(pool: &sqlx::PgPool) -> anyhow::Result<Option<(i64, Registry)>> {
    let row: Option<(i64, Value, String)> = sqlx::query_as(
        "SELECT v.version, v.doc, v.sha256 FROM backstop.active a JOIN backstop.registry_versions v ON v.version = a.registry_version",
    )
    .fetch_optional(pool)
    .await?;
    let Some((version, doc, sha256)) = row else {
        return Ok(None);
    };
    let mut tools = BTreeMap::new();
    for t in doc["tools"].as_array().cloned().unwrap_or_default() {
        let tool: Tool = serde_json::from_value(t)?;
        tools.insert(tool.name.clone(), tool);
    }
    let systems: BTreeMap<String, System> = serde_json::from_value(doc["systems"].clone()).unwrap_or_default();
    Ok(Some((version, Registry { tools, systems, sha256 })))
}
