//! The policy watcher reacts to writes only, loads a file only when its bytes
//! changed since it last loaded them, and says when it replaces a version
//! another source loaded.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backstop::policy::watch::{self, ConfigFiles, ReloadEvent};
use common::TestDb;

fn assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo")
}

async fn settle() {
    // Longer than the watcher's settling time and a load.
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

#[tokio::test]
async fn an_unchanged_file_is_loaded_once_and_reads_load_nothing() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.toml");
    let pol = dir.path().join("policy.toml");
    std::fs::copy(assets().join("tools.toml"), &tools).unwrap();
    let original = std::fs::read_to_string(assets().join("policy.toml")).unwrap();
    std::fs::write(&pol, &original).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let mut events = watch::spawn_counting(
        t.pool().clone(),
        ConfigFiles {
            tools: tools.clone(),
            policy: pol.clone(),
        },
        "watch-test".into(),
        loads.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Reads, opens and rewrites of the bytes already in force load nothing.
    for _ in 0..3 {
        let _ = std::fs::read_to_string(&pol).unwrap();
        let _ = std::fs::File::open(&tools).unwrap();
        std::fs::write(&pol, &original).unwrap();
    }
    settle().await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        0,
        "the bytes in force are not loaded again"
    );

    // A change is loaded, once, however often the same bytes are written again.
    let changed = format!("{original}\n# reviewed\n");
    std::fs::write(&pol, &changed).unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a reload")
        .unwrap();
    assert!(
        matches!(&ev, ReloadEvent::Applied { what: "policy", summary, .. } if summary.get("replaced").is_none()),
        "{ev:?}"
    );
    for _ in 0..3 {
        std::fs::write(&pol, &changed).unwrap();
        let _ = std::fs::read_to_string(&pol).unwrap();
    }
    settle().await;
    assert_eq!(loads.load(Ordering::SeqCst), 1, "exactly one load for one change");

    // Another source loads another policy; the next edit here says it replaces it.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("policy.toml"), format!("{original}\n# from elsewhere\n")).unwrap();
    let loaded = watch::reload_once(
        t.pool(),
        &ConfigFiles {
            tools: tools.clone(),
            policy: other.join("policy.toml"),
        },
        "cli",
    )
    .await;
    assert!(
        matches!(loaded.as_slice(), [ReloadEvent::Applied { what: "policy", .. }]),
        "{loaded:?}"
    );
    std::fs::write(&pol, format!("{changed}# edited again\n")).unwrap();
    let t0 = Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a reload")
        .unwrap();
    match ev {
        ReloadEvent::Applied {
            what: "policy",
            summary,
            ..
        } => {
            let note = summary["replaced"]["note"].as_str().unwrap_or_default();
            assert!(note.contains("was loaded since"), "{summary}");
            assert!(
                summary["replaced"]["source"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("cli"),
                "{summary}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}
