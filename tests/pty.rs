//! The real `backstop` binary in a pseudo-terminal: live rows arrive, P
//! shows the banner and pauses the fleet in the database, R asks before
//! resuming, a held action is approved, and when its connections are killed
//! from outside the room reconnects and its tail has no gap and no duplicate.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backstop::contract::{self, Proposal, Verdict};
use common::TestDb;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::json;

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
}

impl Screen {
    fn text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) {
        let t0 = Instant::now();
        loop {
            let text = self.text();
            if f(&text) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{what} never appeared; the screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn wait_db(t: &TestDb, what: &str, sql: &str, want: i64) {
    let t0 = Instant::now();
    loop {
        if t.count(sql).await == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: {sql} never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real binary in a pseudo-terminal of this size: its screen, its keyboard, the process.
fn spawn_room(
    url: &str,
    rows: u16,
    cols: u16,
    args: &[&str],
) -> (
    Screen,
    Box<dyn Write + Send>,
    Box<dyn portable_pty::Child + Send + Sync>,
) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows,
            cols,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_backstop"));
    cmd.args(args);
    cmd.cwd(env!("CARGO_MANIFEST_DIR"));
    cmd.env("DATABASE_URL", url);
    cmd.env("NO_COLOR", "1");
    cmd.env("TERM", "xterm-256color");
    let child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
    let mut reader = pty.master.try_clone_reader().unwrap();
    let p2 = parser.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p2.lock().unwrap().process(&buf[..n]);
        }
    });
    let keys = pty.master.take_writer().unwrap();
    // The master must outlive the child: keep it for the test's life.
    std::mem::forget(pty.master);
    (Screen { parser }, keys, child)
}

fn quit(keys: &mut Box<dyn Write + Send>, child: &mut Box<dyn portable_pty::Child + Send + Sync>) {
    keys.write_all(b"q").unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the room exited with {status:?}");
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the room did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Below 80x24 the body is the log: keys that act on a row act only on the
/// row on screen, and on a view that is not on screen they say so and do nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_terminal_never_acts_on_rows_it_does_not_show() {
    let t = TestDb::new().await;
    t.load_assets().await;
    for c in ["c-1", "c-2", "c-3"] {
        let held = contract::propose(
            t.pool(),
            &Proposal {
                agent: "mail-bot".into(),
                tool: "send_email".into(),
                params: json!({"customer_id": c, "to": "a@b", "subject": "s"}),
                amount: Some(900.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(held.verdict, Verdict::Hold);
    }
    let (screen, mut keys, mut child) = spawn_room(&t.url, 20, 60, &["--operator", "pty-small"]);
    screen.wait_for("the room", |s| s.contains("LIVE") && s.contains("mail-bot"));
    // Let the first refresh of the queue arrive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for script in [&b"3jja"[..], b"\r", b"a", b"r", b" ", b"p"] {
        keys.write_all(script).unwrap();
        screen.wait_for("the notice", |s| s.contains("not on screen at 60x20"));
        // Esc clears the notice, so the next key must bring it back.
        keys.write_all(b"\x1b").unwrap();
        screen.wait_for("the notice cleared", |s| !s.contains("not on screen"));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.approvals").await,
        0,
        "nothing approved"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.action_log WHERE actor = 'pty-small'")
            .await,
        0,
        "nothing done at all"
    );
    assert!(!screen.text().contains("rejecting"), "{}", screen.text());
    quit(&mut keys, &mut child);
}

/// The approval card in the real binary at 80x24, as an approver's login:
/// the check the supervisor runs after a refund warns on screen before
/// anyone approves it, and again on the approving key's question; any key
/// but y approves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_card_warns_before_approval_at_80x24() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let mut logins = common::Logins::new(&t);
    let approver = logins.login(&t, "pty_card", Some("approver")).await;
    let held = t.hold_refund_over_its_order().await;
    assert_eq!(held.verdict, Verdict::Hold);
    let url = common::login_url(&t.url, &common::Logins::name("pty_card"));
    let (screen, mut keys, mut child) = spawn_room(&url, 24, 80, &[]);
    screen.wait_for("the room", |s| s.contains("LIVE"));
    keys.write_all(b"3").unwrap();
    screen.wait_for("the card's failing check", |s| {
        s.contains("$47,000 issue_refund by refund-bot-2")
            && s.contains("✗ refund_within_order_total (critical): refund of 47000")
            && s.contains("reasoning: Ticket T-47000")
    });
    keys.write_all(b"a").unwrap();
    screen.wait_for("the approval question with the warning", |s| {
        s.contains("Approve $47,000 issue_refund by refund-bot-2? ✗ 1 check fails y / N")
    });
    keys.write_all(b"n").unwrap();
    screen.wait_for("not approved", |s| s.contains("not approved"));
    assert_eq!(t.count("SELECT count(*) FROM backstop.approvals").await, 0);
    quit(&mut keys, &mut child);
    logins.drop_all(vec![approver]).await;
}

/// (log rows, loaded registry and policy versions, kill switches)
async fn writes(t: &TestDb) -> (i64, i64, i64) {
    (
        t.count("SELECT count(*) FROM backstop.action_log").await,
        t.count("SELECT count(*) FROM backstop.registry_versions").await
            + t.count("SELECT count(*) FROM backstop.policy_versions").await,
        t.count("SELECT count(*) FROM backstop.kill_switches").await,
    )
}

/// A read-only room against a live database watches and writes nothing: no
/// registry or policy file loaded, no migration, no housekeeping, and every
/// acting key refused with a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_room_writes_nothing() {
    let t = TestDb::new().await;
    let start = writes(&t).await;
    // The working directory holds assets/tools.toml and assets/policy.toml.
    let (screen, mut keys, mut child) = spawn_room(&t.url, 40, 120, &["--readonly", "--operator", "ro-ana"]);
    screen.wait_for("the room", |s| s.contains("LIVE") && s.contains("(read-only)"));
    for k in [
        &b"P"[..],
        b"p",
        b"a",
        b"c",
        b" ",
        b"R",
        b"3a",
        b":pause agent x\r",
        b":resume\r",
    ] {
        keys.write_all(k).unwrap();
        screen.wait_for("the refusal", |s| s.contains("read-only room"));
        keys.write_all(b"\x1b").unwrap();
        screen.wait_for("the notice cleared", |s| !s.contains("read-only room"));
    }
    // Longer than a housekeeping round.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(writes(&t).await, start, "(log rows, loaded versions, switches) changed");
    quit(&mut keys, &mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_in_a_terminal() {
    let t = TestDb::new().await;
    t.load_assets().await;
    let trace = tempfile::NamedTempFile::new().unwrap();
    let start_seq = t.count("SELECT coalesce(max(seq), 0) FROM backstop.action_log").await;

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_backstop"));
    cmd.args(["--operator", "pty-ana"]);
    cmd.env("DATABASE_URL", &t.url);
    cmd.env("NO_COLOR", "1");
    cmd.env("TERM", "xterm-256color");
    cmd.env("BACKSTOP_ROOM_TRACE", trace.path());
    let mut child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(40, 120, 0)));
    let mut reader = pty.master.try_clone_reader().unwrap();
    let p2 = parser.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p2.lock().unwrap().process(&buf[..n]);
        }
    });
    let mut keys = pty.master.take_writer().unwrap();
    let screen = Screen { parser };
    screen.wait_for("the room", |s| s.contains("BACKSTOP") && s.contains("LIVE"));

    // Live rows arrive.
    let d = contract::propose(
        t.pool(),
        &Proposal {
            agent: "pty-bot".into(),
            tool: "issue_credit".into(),
            params: json!({"customer_id": "c-1", "amount": 3}),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    screen.wait_for("the new row", |s| s.contains("pty-bot"));

    // P: the banner, and the fleet paused in the database by this operator.
    keys.write_all(b"P").unwrap();
    screen.wait_for("the PAUSED banner", |s| {
        s.contains("PAUSED") && s.contains("fleet paused by pty-ana")
    });
    wait_db(
        &t,
        "pause",
        "SELECT count(*) FROM backstop.kill_switches WHERE scope = 'fleet' AND paused AND changed_by = 'pty-ana'",
        1,
    )
    .await;
    // R asks; anything but y keeps it paused.
    keys.write_all(b"R").unwrap();
    screen.wait_for("the resume question", |s| s.contains("Resume the fleet? y / N"));
    keys.write_all(b"n").unwrap();
    screen.wait_for("not resumed", |s| s.contains("not resumed"));
    assert_eq!(
        t.count("SELECT count(*) FROM backstop.kill_switches WHERE paused")
            .await,
        1
    );
    keys.write_all(b"R").unwrap();
    screen.wait_for("the resume question", |s| s.contains("Resume the fleet? y / N"));
    keys.write_all(b"y").unwrap();
    wait_db(
        &t,
        "resume",
        "SELECT count(*) FROM backstop.kill_switches WHERE paused",
        0,
    )
    .await;
    screen.wait_for("the banner gone", |s| !s.contains("■ PAUSED"));

    // Approve a held action from the approvals view.
    let held = contract::propose(
        t.pool(),
        &Proposal {
            agent: "mail-bot".into(),
            tool: "send_email".into(),
            params: json!({"customer_id": "c-1", "to": "a@b", "subject": "s"}),
            amount: Some(900.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(held.verdict, Verdict::Hold);
    keys.write_all(b"3").unwrap();
    screen.wait_for("the held action", |s| s.contains("mail-bot") && s.contains("$900"));
    keys.write_all(b"a").unwrap();
    screen.wait_for("the approval question", |s| {
        s.contains("Approve $900 send_email by mail-bot")
    });
    keys.write_all(b"y").unwrap();
    wait_db(
        &t,
        "approval",
        &format!(
            "SELECT count(*) FROM backstop.approvals WHERE action_id = '{}' AND approver = 'pty-ana'",
            held.action_id
        ),
        1,
    )
    .await;
    keys.write_all(b"2").unwrap();

    // Kill the room's connections from outside while agents keep writing.
    let writer = {
        let pool = t.pool().clone();
        tokio::spawn(async move {
            for i in 0..120 {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT * FROM backstop.propose('pty-writer', 'issue_credit', jsonb_build_object('customer_id', 'c-1', 'amount', $1::int))")
                    .bind(i % 40 + 1)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                if i % 9 == 0 {
                    // Some transactions commit late, holding a low seq.
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed = t
            .count("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'backstop room'")
            .await;
        assert!(killed > 0, "no room connection to kill");
    }
    writer.await.unwrap();
    // The room shows it is back, and its trace catches up.
    let expected: Vec<i64> = sqlx::query_scalar("SELECT seq FROM backstop.action_log WHERE seq > $1 ORDER BY seq")
        .bind(start_seq)
        .fetch_all(t.pool())
        .await
        .unwrap();
    let t0 = Instant::now();
    let traced = loop {
        let text = std::fs::read_to_string(trace.path()).unwrap();
        let seqs: Vec<i64> = text.lines().filter_map(|l| l.parse().ok()).collect();
        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
        for s in &seqs {
            *counts.entry(*s).or_default() += 1;
        }
        if expected.iter().all(|e| counts.contains_key(e)) || t0.elapsed() > Duration::from_secs(20) {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<&i64> = expected.iter().filter(|e| !traced.contains_key(e)).collect();
    let dups: Vec<(&i64, &usize)> = traced.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "rows the room never received: {missing:?}");
    assert!(dups.is_empty(), "rows the room received twice: {dups:?}");
    screen.wait_for("LIVE again", |s| s.contains("LIVE"));

    keys.write_all(b"q").unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the room exited with {status:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the room did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
