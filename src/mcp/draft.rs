//! `backstop init --from-mcp`: a tools.toml drafted from an MCP server's tool
//! list. The annotations decide the class (read-only: read; destructive:
//! irreversible until the team declares an inverse; otherwise reversible,
//! with a TODO for the inverse that `backstop check` then asks for); the
//! input schema's properties are the params.

use rmcp::model::Tool;
use serde_json::Value;

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The registry's name rule (src/registry.rs): a tool whose MCP name breaks
/// it is left out with a note.
fn registry_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._:@/-".contains(c))
}

fn params(tool: &Tool) -> Vec<String> {
    match tool.input_schema.get("properties") {
        Some(Value::Object(props)) => props.keys().cloned().collect(),
        _ => vec![],
    }
}

/// The drafted tools.toml for `tools`, served by `command`.
pub fn draft_registry(tools: &[Tool], command: &[String]) -> String {
    let command_toml = format!("[{}]", command.iter().map(|a| quoted(a)).collect::<Vec<_>>().join(", "));
    let mut out = format!(
        "# Backstop tool registry, drafted by `backstop init --from-mcp` from the MCP server\n\
         #   {}\n\
         # Read-only tools are `read`; destructive ones `irreversible` until you declare an\n\
         # inverse; the others `reversible`, each with a TODO: name the tool that undoes it\n\
         # and bind its params (\"params.X\" or \"result.X\"). `backstop check` says what is left.\n\
         # An inverse served by the same server runs through it:\n\
         #   executor = {{ kind = \"mcp\", command = {command_toml} }}\n",
        command.join(" ")
    );
    let mut sorted: Vec<&Tool> = tools.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for tool in sorted {
        let name = tool.name.as_ref();
        if !registry_name(name) {
            out.push_str(&format!(
                "\n# {}: not a registry name (letters, digits and . _ : @ / -); left out\n",
                quoted(name)
            ));
            continue;
        }
        let hints = tool.annotations.as_ref();
        let read_only = hints.and_then(|a| a.read_only_hint) == Some(true);
        let destructive = hints.and_then(|a| a.destructive_hint) == Some(true);
        let class = if read_only {
            "read"
        } else if destructive {
            "irreversible"
        } else {
            "reversible"
        };
        out.push_str(&format!("\n[tools.{name}]\nclass = \"{class}\"\n"));
        if let Some(d) = tool.description.as_deref() {
            let first = d.lines().next().unwrap_or_default().trim();
            if !first.is_empty() {
                out.push_str(&format!("description = {}\n", quoted(first)));
            }
        }
        let ps = params(tool);
        out.push_str(&format!(
            "params = [{}]\n",
            ps.iter().map(|p| quoted(p)).collect::<Vec<_>>().join(", ")
        ));
        if class == "reversible" {
            let example = ps
                .iter()
                .take(2)
                .map(|p| format!("{p} = \"params.{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "# TODO: inverse: the tool that undoes {name}, and how its params are bound:\n\
                 # inverse = \"undo_{name}\"\n\
                 # bind = {{ {example} }}\n"
            ));
        }
    }
    out
}
