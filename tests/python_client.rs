//! The Python client (python/, package `backstop`) under pytest, against a
//! real database with the shipped registry and policy, an agent login and
//! two approver logins: python/tests holds the cases, this file the setup.
//!
//! Needs `python3` with psycopg 3.2+, pytest and the package installed
//! (`pip install ./python pytest`). Without them the test says why and
//! passes, unless BACKSTOP_REQUIRE_PYTHON=1 (CI sets it), which makes them a
//! failure rather than a silent skip.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Logins, TestDb};
use tokio::process::Command;

/// How long the whole pytest run may take before the test gives up on it.
const PYTEST_TIMEOUT: Duration = Duration::from_secs(300);

const PROBE: &str = "import sys, psycopg, pytest, backstop\n\
                     v = tuple(int(p) for p in psycopg.__version__.split('.')[:2])\n\
                     sys.exit(0 if v >= (3, 2) else 'psycopg ' + psycopg.__version__ + ' is older than 3.2')";

fn python_missing() -> Option<String> {
    match std::process::Command::new("python3").args(["-c", PROBE]).output() {
        Err(e) => Some(format!("python3 cannot be run: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "python3 lacks the client or its test tools ({}): python3 -m pip install ./python pytest",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

#[tokio::test]
async fn the_python_client_passes_its_tests_against_a_real_database() {
    if let Some(why) = python_missing() {
        if std::env::var("BACKSTOP_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!("BACKSTOP_REQUIRE_PYTHON=1 but {why}");
        }
        eprintln!("skipping the Python client's tests: {why}");
        return;
    }
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = Logins::new(&t);
    let agent = logins.login(&t, "pyagent", Some("agent")).await;
    let ana = logins.login(&t, "pyana", Some("approver")).await;
    let ben = logins.login(&t, "pyben", Some("approver")).await;
    // Agents of their own for the large refunds that are approved: once
    // approved they count towards the policy's hourly limit per agent, which
    // would hold the other tests' small ones.
    let login = Logins::name("pyagent");
    for agent in [format!("{login}-held"), format!("{login}-aio")] {
        sqlx::query("INSERT INTO backstop.agent_logins (login, agent) VALUES ($1, $2)")
            .bind(&login)
            .bind(agent)
            .execute(t.pool())
            .await
            .expect("map the agent login");
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // pytest writes to a file, so a run that hangs still shows how far it got
    // (faulthandler dumps every thread's stack after a minute in one test).
    let log_path = std::env::temp_dir().join(format!("backstop-pytest-{}.log", t.name));
    let log = std::fs::File::create(&log_path).expect("create the pytest log");
    let mut child = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            // The asyncio tests run their own loop; a pytest-asyncio plugin
            // installed here would only warn about its settings.
            "-p",
            "no:asyncio",
            "-o",
            "faulthandler_timeout=60",
            "python/tests",
        ])
        .current_dir(root)
        .env("BACKSTOP_TEST_URL", &t.url)
        .env("BACKSTOP_TEST_AGENT", Logins::name("pyagent"))
        .env(
            "BACKSTOP_TEST_APPROVERS",
            format!("{},{}", Logins::name("pyana"), Logins::name("pyben")),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("run python3 -m pytest");
    let status = tokio::time::timeout(PYTEST_TIMEOUT, child.wait()).await;
    if status.is_err() {
        child.kill().await.ok();
    }
    let said = std::fs::read_to_string(&log_path).unwrap_or_default();
    std::fs::remove_file(&log_path).ok();
    let status = status
        .unwrap_or_else(|_| panic!("pytest did not finish within {PYTEST_TIMEOUT:?}:\n{said}"))
        .expect("wait for pytest");
    logins.drop_all(vec![agent, ana, ben]).await;
    assert!(status.success(), "pytest failed:\n{said}");
    // A run that collected nothing also exits non-zero (5), but say it plainly.
    assert!(said.contains(" passed"), "pytest ran no test:\n{said}");
    assert!(!said.contains(" skipped"), "pytest skipped tests:\n{said}");
    eprintln!("{said}");
}
