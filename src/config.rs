//! Where things are: the database, the operator, the registry and policy files.

use std::path::{Path, PathBuf};

use crate::db::{DbConfig, os_user};

/// Settings shared by every command, from flags and the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<String>,
    /// A read replica for the room's and the supervisor's reads.
    pub read_url: Option<String>,
    pub operator: String,
    pub keep_db: Option<PathBuf>,
    pub tools: PathBuf,
    pub policy: PathBuf,
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
        }
    }

    pub fn default_operator() -> String {
        os_user()
    }
}

/// `assets/NAME` in the working directory, else the copy next to the sources
/// this binary was built from (so `cargo run` works from anywhere in the repo).
pub fn default_asset(name: &str) -> PathBuf {
    let local = Path::new("assets").join(name);
    if local.exists() {
        return local;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(name);
    if built.exists() { built } else { local }
}
