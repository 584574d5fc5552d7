//! `--metrics`: real supervisor and worker processes serve /metrics over
//! HTTP; what they report is what the database holds, the same from each.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestDb;

/// A series: its name and sorted labels.
type Key = (String, Vec<(String, String)>);

/// Parse Prometheus / OpenMetrics text exposition into series -> value.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line: series value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let mut l: Vec<(String, String)> = inner
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').expect("label k=\"v\"");
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                l.sort();
                (n.to_string(), l)
            }
            None => (series.to_string(), Vec::new()),
        };
        out.insert((name, labels), value.parse::<f64>().expect("a numeric value"));
    }
    out
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let mut l: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.sort();
    (name.to_string(), l)
}

/// A running backstop process that serves metrics; stopped with Ctrl-C on drop.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

fn serve(t: &TestDb, args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .args(["--metrics", "127.0.0.1:0"])
        .env("DATABASE_URL", &t.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backstop");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep reading stderr after the address: a full pipe would stop the process.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("metrics on ") {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the process says where it serves metrics");
    Served { child, url }
}

async fn scrape(url: &str) -> (String, BTreeMap<Key, f64>) {
    let resp = reqwest::get(url).await.expect("scrape");
    assert!(resp.status().is_success(), "{}", resp.status());
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.contains("openmetrics-text") || ct.contains("text/plain"), "{ct}");
    let text = resp.text().await.expect("body");
    let parsed = parse(&text);
    (text, parsed)
}

/// Without what names the process.
fn fleet(m: &BTreeMap<Key, f64>) -> BTreeMap<Key, f64> {
    m.iter()
        .filter(|(k, _)| k.0 != "backstop_build_info")
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

async fn workload(t: &TestDb) {
    t.load_assets().await;
    sqlx::raw_sql(
        "DO $$ DECLARE a uuid; BEGIN
           FOR i IN 1 .. 30 LOOP
             SELECT action_id INTO a FROM backstop.propose('bot-' || (i % 3), 'issue_credit',
                 jsonb_build_object('customer_id', 'c-' || i, 'amount', 5), confidence => 0.99);
             IF i % 2 = 0 THEN
               PERFORM backstop.record_result(a, true, jsonb_build_object('credit_id', 'cr-' || i));
             END IF;
           END LOOP;
           FOR i IN 1 .. 4 LOOP
             PERFORM backstop.propose('payer-bot', 'pay_supplier',
                 jsonb_build_object('payee', 'acme', 'iban', 'DE00', 'amount', 700 + i, 'invoice_id', 'inv-' || i),
                 confidence => 0.9, reasoning => 'invoice due');
           END LOOP;
           PERFORM backstop.propose('bot-1', 'no_such_tool', '{}'::jsonb);
           PERFORM backstop.pause('agent', 'bot-2', 'metrics test');
           PERFORM backstop.propose('bot-2', 'issue_credit', jsonb_build_object('customer_id', 'c-1', 'amount', 5));
           PERFORM backstop.raise_finding('drift', 'critical', 'bot-1', NULL, '{\"rule\": \"drift\"}');
           PERFORM backstop.raise_finding('low_confidence', 'medium', 'bot-0', NULL, '{\"rule\": \"x\"}');
           PERFORM backstop.request_compensation(ARRAY(SELECT action_id FROM backstop.actions
                                                        WHERE status = 'executed' ORDER BY proposed_seq LIMIT 2), 'metrics test');
         END $$",
    )
    .execute(t.pool())
    .await
    .expect("workload");
}

#[tokio::test]
async fn a_scrape_equals_the_database_and_every_process_reports_the_same() {
    let t = TestDb::new().await;
    workload(&t).await;
    let a = serve(&t, &["supervise", "--no-watch", "--name", "sup-a"]);
    let b = serve(&t, &["supervise", "--no-watch", "--name", "sup-b"]);
    // A worker that can claim nothing: its tool list names no inverse in use.
    let w = serve(&t, &["worker", "--name", "w-1", "--tools", "send_email"]);

    // The supervisors follow the log and seal as they start: wait for a state
    // that holds still across two scrapes, then every process must agree.
    let mut agreed = None;
    for _ in 0..100 {
        let (_, ma) = scrape(&a.url).await;
        let (_, mb) = scrape(&b.url).await;
        let (_, mw) = scrape(&w.url).await;
        let (_, ma2) = scrape(&a.url).await;
        let (fa, fb, fw, fa2) = (fleet(&ma), fleet(&mb), fleet(&mw), fleet(&ma2));
        if fa == fa2 && fa == fb && fa == fw {
            agreed = Some(ma);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = agreed.expect("two supervisors and a worker report the same values of a still state");

    // Proposals by agent, tool and first verdict: the actions the log holds.
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT agent, CASE WHEN tool IN (SELECT name FROM backstop.tools) THEN tool ELSE '(unregistered)' END,
                verdict, count(*) FROM backstop.actions GROUP BY 1, 2, 3",
    )
    .fetch_all(t.pool())
    .await
    .unwrap();
    assert!(rows.iter().any(|r| r.2 == "hold"), "{rows:?}");
    assert!(rows.iter().any(|r| r.2 == "block"), "{rows:?}");
    assert!(rows.iter().any(|r| r.1 == "(unregistered)"), "{rows:?}");
    let exported: Vec<_> = m.keys().filter(|k| k.0 == "backstop_proposals_total").collect();
    assert_eq!(exported.len(), rows.len(), "{exported:?}");
    for (agent, tool, verdict, n) in &rows {
        let k = key(
            "backstop_proposals_total",
            &[("agent", agent), ("tool", tool), ("verdict", verdict)],
        );
        assert_eq!(m.get(&k), Some(&(*n as f64)), "{k:?}");
    }

    let held = t.count("SELECT count(*) FROM backstop.approval_queue").await;
    assert!(held >= 4, "{held}");
    assert_eq!(m[&key("backstop_held_actions", &[])], held as f64);
    let value: f64 = sqlx::query_scalar("SELECT sum(amount)::float8 FROM backstop.approval_queue")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(m[&key("backstop_held_value", &[])], value);
    let oldest: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM min(held_at))::float8 FROM backstop.approval_queue")
            .fetch_one(t.pool())
            .await
            .unwrap();
    assert_eq!(m[&key("backstop_held_oldest_timestamp_seconds", &[])], oldest);

    let findings: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, severity, count(*) FROM backstop.findings WHERE status = 'open' GROUP BY 1, 2")
            .fetch_all(t.pool())
            .await
            .unwrap();
    assert!(findings.iter().any(|f| f.1 == "critical"), "{findings:?}");
    let open_total: f64 = m
        .iter()
        .filter(|(k, _)| k.0 == "backstop_findings_open")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(open_total, findings.iter().map(|f| f.2).sum::<i64>() as f64);
    for (kind, sev, n) in &findings {
        assert_eq!(
            m[&key("backstop_findings_open", &[("kind", kind), ("severity", sev)])],
            *n as f64
        );
    }

    assert_eq!(m[&key("backstop_paused_scopes", &[("scope", "agent")])], 1.0);
    assert_eq!(m[&key("backstop_paused_scopes", &[("scope", "fleet")])], 0.0);
    assert_eq!(m[&key("backstop_fleet_paused", &[])], 0.0);
    let queued = t
        .count("SELECT count(*) FROM backstop.compensations WHERE status = 'requested'")
        .await;
    assert_eq!(queued, 2);
    assert_eq!(
        m[&key("backstop_compensations", &[("status", "requested")])],
        queued as f64
    );
    assert!(m.contains_key(&key("backstop_compensation_oldest_queued_timestamp_seconds", &[])));

    let (pol, reg): (i64, i64) = sqlx::query_as("SELECT policy_version, registry_version FROM backstop.active")
        .fetch_one(t.pool())
        .await
        .unwrap();
    assert_eq!(m[&key("backstop_policy_version", &[])], pol as f64);
    assert_eq!(m[&key("backstop_registry_version", &[])], reg as f64);
    assert_eq!(m[&key("backstop_up", &[])], 1.0);

    // Every name exported is one the binary declares (what deploy/ relies on).
    let declared = backstop::metrics::exported_names();
    for k in m.keys() {
        assert!(declared.contains(&k.0), "{} is exported but not declared", k.0);
    }
    // No action id in any label: cardinality stays bounded.
    let ids: Vec<String> = sqlx::query_scalar("SELECT action_id::text FROM backstop.actions")
        .fetch_all(t.pool())
        .await
        .unwrap();
    let (text, _) = scrape(&a.url).await;
    for id in &ids {
        assert!(!text.contains(id.as_str()));
    }
    drop((a, b, w));
}

#[tokio::test]
async fn a_process_whose_database_is_gone_says_so() {
    let t = TestDb::new().await;
    let s = serve(&t, &["worker", "--name", "w-down", "--tools", "send_email"]);
    let (_, m) = scrape(&s.url).await;
    assert_eq!(m[&key("backstop_up", &[])], 1.0);
    // End the process's sessions and forbid new ones: the next scrape reports
    // the database unreachable instead of failing.
    let mut su = <sqlx::PgConnection as sqlx::Connection>::connect(&common::admin_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS false; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
        t.name
    )))
    .execute(&mut su)
    .await
    .unwrap();
    let (_, m) = scrape(&s.url).await;
    assert_eq!(m[&key("backstop_up", &[])], 0.0);
    assert!(!m.contains_key(&key("backstop_held_actions", &[])));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        t.name
    )))
    .execute(&mut su)
    .await
    .unwrap();
    drop(s);
}

/// Every `backstop_*` name in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("backstop_") {
        let start = i + off;
        let boundary = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        // "backstop_*" in a comment is a pattern, not a name.
        if boundary && end > start + "backstop_".len() {
            out.push(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_exported_metrics_and_pass_promtool() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rules_path = root.join("prometheus/alerts.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana/backstop.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("an expr").to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let declared = backstop::metrics::exported_names();
    let mut used = metric_names(&rules);
    for e in &exprs {
        used.extend(metric_names(e));
    }
    for name in &used {
        assert!(
            declared.contains(name),
            "{name} is used in deploy/ but the binary does not export it"
        );
    }
    for alert in [
        "BackstopFleetPaused",
        "BackstopHoldPastHalfItsExpiry",
        "BackstopCriticalFinding",
        "BackstopCompensationFailed",
        "BackstopSealLag",
        "BackstopSupervisorDown",
        "BackstopLogRowsInDefaultPartition",
        "BackstopLogPartitionsRunningOut",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert} missing");
    }

    // promtool (Debian's prometheus package) checks the syntax, runs the
    // rules' unit tests, and parses every dashboard query.
    let have = Command::new("promtool").arg("--version").output().is_ok();
    if !have {
        assert!(
            std::env::var("BACKSTOP_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "promtool is required (apt-get install prometheus)"
        );
        eprintln!("promtool not installed: checked metric names only");
        return;
    }
    let run = |args: &[&std::ffi::OsStr], dir: &std::path::Path| {
        let out = Command::new("promtool").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let prom = root.join("prometheus");
    run(&["check".as_ref(), "rules".as_ref(), "alerts.yml".as_ref()], &prom);
    run(&["test".as_ref(), "rules".as_ref(), "alerts_test.yml".as_ref()], &prom);
    run(&["check".as_ref(), "config".as_ref(), "prometheus.yml".as_ref()], &prom);
    let dir = tempfile::tempdir().unwrap();
    let records: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "      - record: dashboard_query_{i}\n        expr: {}\n",
                serde_json::to_string(e).unwrap()
            )
        })
        .collect();
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, format!("groups:\n  - name: dashboard\n    rules:\n{records}")).unwrap();
    run(&["check".as_ref(), "rules".as_ref(), file.as_os_str()], dir.path());
}
