//! Where things are: the database, the operator, the registry and policy files.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::db::{DbConfig, os_user};

/// Settings shared by every command, from flags and the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<String>,
    /// A read replica for the room's and the supervisor's reads.
    pub read_url: Option<String>,
    pub operator: String,
    pub keep_db: Option<PathBuf>,
    /// Without a URL, start a private throwaway cluster (`--embedded`).
    pub embedded: bool,
    /// `--tools` / `BACKSTOP_TOOLS`, when given.
    pub tools: Option<PathBuf>,
    /// `--policy` / `BACKSTOP_POLICY`, when given.
    pub policy: Option<PathBuf>,
    pub json: bool,
}

impl Config {
    pub fn db(&self, application: &str, max_connections: u32) -> DbConfig {
        DbConfig {
            url: self.database_url.clone(),
            keep_db: self.keep_db.clone(),
            operator: self.operator.clone(),
            application: application.to_string(),
            max_connections,
            embedded: self.embedded,
        }
    }

    /// For the demo and the benchmarks, whose world is simulated: without a
    /// URL they start the embedded cluster.
    pub fn db_simulated(&self, application: &str, max_connections: u32) -> DbConfig {
        DbConfig {
            embedded: true,
            ..self.db(application, max_connections)
        }
    }

    pub fn default_operator() -> String {
        os_user()
    }

    /// The registry and policy files: `--tools` / `--policy`, else
    /// `BACKSTOP_TOOLS` / `BACKSTOP_POLICY`, else `tools.toml` / `policy.toml`
    /// in the current directory. Never a file of the machine the binary was
    /// built on: a missing file is an error that says where it looked.
    pub fn files(&self) -> Result<(PathBuf, PathBuf)> {
        Ok((
            locate(self.tools.as_deref(), "tools.toml", "--tools", "BACKSTOP_TOOLS")?,
            locate(self.policy.as_deref(), "policy.toml", "--policy", "BACKSTOP_POLICY")?,
        ))
    }
}

fn locate(given: Option<&Path>, name: &str, flag: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("{} (from {flag} or {env}) is not a file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let here = Path::new(name);
    if here.is_file() {
        return Ok(here.to_path_buf());
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    bail!("no {name}: looked for {flag}, then ${env}, then {cwd}/{name}; write a starting one with `backstop init`")
}

/// The starting registry and policy `backstop init` writes: generic, commented,
/// and loadable on any database.
pub const STARTER_TOOLS: &str = include_str!("../assets/starter/tools.toml");
pub const STARTER_POLICY: &str = include_str!("../assets/starter/policy.toml");
