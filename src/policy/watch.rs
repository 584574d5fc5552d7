//! Hot reload of `tools.toml` and `policy.toml`. The directories are watched
//! (not the files): editors save by writing a temporary file and renaming it
//! over the original, which a watch on the file itself would lose.
//!
//! On any change: wait for the writes to settle, read both files, check them
//! together, and load them if valid. An invalid or missing file changes
//! nothing: the last good version stays in force, the rejection is appended
//! to the log once per distinct content, and the caller is told.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::filecheck::{Issue, sha256_hex};
use crate::{policy, registry};

#[derive(Debug, Clone, PartialEq)]
pub enum ReloadEvent {
    /// A new version is in force (`what` is "registry" or "policy").
    Applied {
        what: &'static str,
        version: i64,
        summary: serde_json::Value,
    },
    /// The files on disk were rejected; the versions in force are unchanged.
    Rejected { file: String, errors: Vec<String> },
    /// Reading or loading failed for another reason (database unreachable...).
    Failed { message: String },
}

#[derive(Debug, Clone)]
pub struct ConfigFiles {
    pub tools: PathBuf,
    pub policy: PathBuf,
}

/// Check both files and load whatever changed. Returns what happened.
pub async fn reload_once(pool: &PgPool, files: &ConfigFiles, source: &str) -> Vec<ReloadEvent> {
    let mut events = Vec::new();
    let reg = match registry::read(&files.tools) {
        Ok(r) => r,
        Err(issues) => {
            events.push(reject(pool, &files.tools, issues).await);
            return events;
        }
    };
    let pol = match policy::read(&files.policy, Some(&reg)) {
        Ok(p) => p,
        Err(issues) => {
            events.push(reject(pool, &files.policy, issues).await);
            return events;
        }
    };
    // Both or neither: a registry whose policy the database refuses (a list
    // naming a table it lacks) must not be left in force on its own.
    let loaded = async {
        let mut tx = pool.begin().await.map_err(|e| format!("loading: {e}"))?;
        let r = registry::sync(&mut *tx, &reg, &format!("{source}:{}", files.tools.display()))
            .await
            .map_err(|e| format!("loading {}: {e}", files.tools.display()))?;
        let p = policy::sync(&mut *tx, &pol, &format!("{source}:{}", files.policy.display()))
            .await
            .map_err(|e| {
                format!(
                    "loading {}: {e}; the registry was not loaded either",
                    files.policy.display()
                )
            })?;
        tx.commit().await.map_err(|e| format!("loading: {e}"))?;
        Ok::<_, String>((r, p))
    }
    .await;
    match loaded {
        Ok((r, p)) => {
            for (what, l) in [("registry", r), ("policy", p)] {
                if l.changed {
                    events.push(ReloadEvent::Applied {
                        what,
                        version: l.version,
                        summary: l.summary,
                    });
                }
            }
        }
        Err(message) => events.push(ReloadEvent::Failed { message }),
    }
    events
}

async fn reject(pool: &PgPool, file: &Path, issues: Vec<Issue>) -> ReloadEvent {
    let content = crate::filecheck::read_capped(file).unwrap_or_default();
    let sha = sha256_hex(&content);
    let errors: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    let file_s = file.display().to_string();
    if let Err(e) = crate::contract::report_config_rejected(pool, &file_s, &sha, &json!(errors)).await {
        return ReloadEvent::Failed {
            message: format!("recording the rejection of {file_s}: {e}"),
        };
    }
    ReloadEvent::Rejected { file: file_s, errors }
}

/// Watch both files until the receiver is dropped. Events also go to the log.
pub fn spawn(pool: PgPool, files: ConfigFiles, source: String) -> anyhow::Result<mpsc::Receiver<ReloadEvent>> {
    let (out_tx, out_rx) = mpsc::channel(64);
    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<()>();
    let names: Vec<std::ffi::OsString> = [&files.tools, &files.policy]
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut watcher: RecommendedWatcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
        {
            let _ = fs_tx.send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = [&files.tools, &files.policy]
        .iter()
        .map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        })
        .collect();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while fs_rx.recv().await.is_some() {
            // Let a burst of writes (temp file, rename, chmod) settle.
            loop {
                match tokio::time::timeout(Duration::from_millis(150), fs_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            for ev in reload_once(&pool, &files, &source).await {
                if out_tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(out_rx)
}
