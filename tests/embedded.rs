//! The embedded private cluster: starts, serves, is removed (also when its
//! owner is killed), can be kept, and says clearly when binaries are missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstop::db::embedded::{EmbeddedOptions, EmbeddedPg, find_bin_dir_in};
use sqlx::Connection;

#[tokio::test]
async fn starts_serves_and_is_removed() {
    let pg = tokio::task::spawn_blocking(|| EmbeddedPg::start(&EmbeddedOptions::default()))
        .await
        .unwrap()
        .expect("embedded cluster");
    let dir = pg.dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").exists());
    for url in [pg.url("postgres"), pg.tcp_url("postgres")] {
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut c).await.unwrap();
        assert_eq!(one, 1);
        c.close().await.unwrap();
    }
    drop(pg);
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn keep_db_keeps_the_data_for_the_next_run() {
    let keep = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        keep_dir: Some(keep.path().join("pg")),
        ..Default::default()
    };
    let o = opts.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&o))
        .await
        .unwrap()
        .unwrap();
    let mut c = sqlx::PgConnection::connect(&pg.url("postgres")).await.unwrap();
    sqlx::query("CREATE TABLE kept (x int)").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    drop(pg);
    assert!(keep.path().join("pg/data/PG_VERSION").exists());
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&opts))
        .await
        .unwrap()
        .unwrap();
    let mut c = sqlx::PgConnection::connect(&pg.url("postgres")).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn missing_binaries_say_what_to_install_or_set() {
    let empty = tempfile::tempdir().unwrap();
    let e = find_bin_dir_in(Some(empty.path().as_os_str()), &[Path::new("/nonexistent/pg")]).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("no PostgreSQL server binaries found"), "{m}");
    assert!(
        m.contains("apt-get install postgresql") && m.contains("BACKSTOP_PG_BIN") && m.contains("DATABASE_URL"),
        "{m}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["migrate", "--embedded"])
        .env_remove("DATABASE_URL")
        .env("BACKSTOP_PG_BIN", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("backstop: ") && err.contains("does not contain initdb"),
        "{err}"
    );
}

#[test]
fn a_killed_owner_leaves_no_cluster_behind() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["log", "--follow", "--limit", "1", "--embedded"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("backstop-pg-{}-", child.id());
    let tmp = std::env::temp_dir();
    let started = Instant::now();
    let dir = loop {
        let found = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path());
        if let Some(d) = found
            && std::fs::read_dir(&d)
                .map(|mut r| r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".lock"))))
                .unwrap_or(false)
        {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the cluster never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while dir.exists() {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "{} still exists after SIGKILL",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
