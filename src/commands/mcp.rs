//! `backstop mcp`: the MCP gateway (src/mcp) on this process's stdio.

use anyhow::Result;

use backstop::config::Config;
use backstop::mcp::{self, GatewayOptions};

pub async fn mcp(cfg: &Config, opts: GatewayOptions) -> Result<()> {
    // Calls are concurrent (an agent may have several in flight, each held
    // one with a listener of its own).
    let db = super::open(cfg, &format!("backstop mcp {}", opts.agent), 8).await?;
    mcp::serve_stdio(db.pool.clone(), opts).await
}
