//! Hot reload of `tools.toml` and `policy.toml`. The directories are watched
//! (not the files): editors save by writing a temporary file and renaming it
//! over the original, which a watch on the file itself would lose.
//!
//! On a write (never a read or an open): wait for the writes to settle, and
//! when the bytes differ from those last loaded, read both files, check them
//! together, and load them if valid. An invalid or missing file changes
//! nothing: the last good version stays in force, the rejection is appended
//! to the log once per distinct content, and the caller is told.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
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
    spawn_counting(pool, files, source, Arc::default())
}

/// A change notify reports that may have changed a file's bytes: a write, a
/// create, a rename or a removal; never a read, an open or a metadata change.
pub fn is_write(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// What is in force: (version, sha256 of the file it came from, source).
type InForce = Option<(i64, String, String)>;

async fn in_force(pool: &PgPool) -> (InForce, InForce) {
    let reg = sqlx::query_as(
        "SELECT v.version, v.sha256, v.source FROM backstop.active a
           JOIN backstop.registry_versions v ON v.version = a.registry_version",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    let pol = sqlx::query_as(
        "SELECT v.version, v.sha256, v.source FROM backstop.active a
           JOIN backstop.policy_versions v ON v.version = a.policy_version",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    (reg, pol)
}

fn file_sha(path: &Path) -> Option<String> {
    crate::filecheck::read_capped(path).ok().map(|t| sha256_hex(&t))
}

/// `spawn`, counting in `loads` each time the files are read and loaded.
///
/// A file is loaded only when its bytes differ from those this watcher last
/// loaded (at first, those of the version in force). When the version in
/// force was loaded by another source since, loading over it is said in the
/// event's summary (`replaced`).
pub fn spawn_counting(
    pool: PgPool,
    files: ConfigFiles,
    source: String,
    loads: Arc<AtomicUsize>,
) -> anyhow::Result<mpsc::Receiver<ReloadEvent>> {
    let (out_tx, out_rx) = mpsc::channel(64);
    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<()>();
    let names: Vec<std::ffi::OsString> = [&files.tools, &files.policy]
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut watcher: RecommendedWatcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && is_write(&ev.kind)
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
        // The bytes last loaded, per file: at first, those in force.
        let (reg, pol) = in_force(&pool).await;
        let mut last = (reg.map(|r| r.1), pol.map(|p| p.1));
        while fs_rx.recv().await.is_some() {
            // Let a burst of writes (temp file, rename, chmod) settle.
            loop {
                match tokio::time::timeout(Duration::from_millis(150), fs_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let now = (file_sha(&files.tools), file_sha(&files.policy));
            if now == last {
                // Written, but the same bytes: nothing to load.
                continue;
            }
            let (reg, pol) = in_force(&pool).await;
            loads.fetch_add(1, Ordering::SeqCst);
            for mut ev in reload_once(&pool, &files, &source).await {
                // Loaded over a version another source loaded since: say so.
                if let ReloadEvent::Applied { what, summary, .. } = &mut ev {
                    let (before, mine) = if *what == "registry" {
                        (&reg, &last.0)
                    } else {
                        (&pol, &last.1)
                    };
                    if let Some((version, sha, src)) = before
                        && Some(sha) != mine.as_ref()
                        && let Some(map) = summary.as_object_mut()
                    {
                        map.insert(
                            "replaced".into(),
                            json!({
                                "version": version,
                                "source": src,
                                "note": format!(
                                    "{what} version {version} from {src} was loaded since this watcher last loaded; \
                                     the file replaced it"
                                ),
                            }),
                        );
                    }
                }
                if out_tx.send(ev).await.is_err() {
                    return;
                }
            }
            last = now;
        }
    });
    Ok(out_rx)
}
