//! The contract's vocabulary as Rust types: the kinds of event the SQL writes
//! to the log, and what it announces by NOTIFY. Decoded once, where they come
//! out of the database; a value this build does not know is an error that
//! names it, never a guess.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Scope;

/// A value from the database (or a flag) outside the set this build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {}; got {value:?}", one_of(expected))]
pub struct UnknownValue {
    /// What was being read: "scope", "verdict", "event kind".
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

fn one_of(expected: &[&str]) -> String {
    match expected {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] if init.len() < 4 => format!("{} or {last}", init.join(", ")),
        all => format!("one of {}", all.join(", ")),
    }
}

/// A closed set of words the SQL writes to a text column: parsed, printed,
/// serialized and decoded from the database as exactly those words.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            const NAMES: &'static [&'static str] = &[$($text,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownValue {
                        what: $what,
                        value: other.to_string(),
                        expected: $name::NAMES,
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;
            fn try_from(s: String) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }

        // A text column: decode it as text, then refuse what is not one of the words.
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(s.parse()?)
            }
        }
    };
}

text_enum! {
    /// The `kind` of a row of `backstop.action_log`, as the SQL writes it.
    EventKind, "event kind" {
    Allowed => "allowed",
    Held => "held",
    Blocked => "blocked",
    Approved => "approved",
    Rejected => "rejected",
    Expired => "expired",
    Executed => "executed",
    Failed => "failed",
    Signal => "signal",
    Paused => "paused",
    Resumed => "resumed",
    CompensationPlan => "compensation_plan",
    CompensationRequested => "compensation_requested",
    CompensationStarted => "compensation_started",
    CompensationRetry => "compensation_retry",
    Compensated => "compensated",
    CompensationFailed => "compensation_failed",
    Reviewed => "reviewed",
    Finding => "finding",
    FindingAcknowledged => "finding_acknowledged",
    FindingResolved => "finding_resolved",
    RegistryLoaded => "registry_loaded",
    PolicyLoaded => "policy_loaded",
    PolicyRejected => "policy_rejected",
    Drill => "drill",
    Carried => "carried",
    LogArchived => "log_archived",
    NotificationSent => "notification_sent",
    NotificationFailed => "notification_failed",
}
}

text_enum! {
    /// `backstop.actions.status`: where an action stands.
    ActionStatus, "action status" {
        Allowed => "allowed",
        Held => "held",
        Blocked => "blocked",
        Rejected => "rejected",
        Expired => "expired",
        Executed => "executed",
        Failed => "failed",
    }
}

impl EventKind {
    /// The two kinds `record_result` writes.
    pub fn is_result(self) -> bool {
        matches!(self, EventKind::Executed | EventKind::Failed)
    }
}

/// The NOTIFY channel of pauses, resumes and registry and policy changes.
pub const CONTROL_CHANNEL: &str = "backstop_control";
/// The NOTIFY channel of decisions on held actions (payload: the action id).
pub const DECISIONS_CHANNEL: &str = "backstop_decisions";
/// The NOTIFY channel of requested rollbacks (payload: the plan id).
pub const COMPENSATIONS_CHANNEL: &str = "backstop_compensations";
/// Every channel the contract notifies on.
pub const CHANNELS: [&str; 3] = [CONTROL_CHANNEL, DECISIONS_CHANNEL, COMPENSATIONS_CHANNEL];

/// The key a decision's NOTIFY names an action by, as `backstop.decision_key`
/// computes it: the hex sha256 of the id's text.
pub fn decision_key(action_id: Uuid) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(action_id.to_string().as_bytes()))
}

/// One notification from the contract, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    Paused {
        scope: Scope,
        target: String,
        seq: i64,
        by: String,
    },
    Resumed {
        scope: Scope,
        target: String,
        seq: i64,
        by: String,
    },
    RegistryLoaded {
        version: i64,
        seq: i64,
    },
    PolicyLoaded {
        version: i64,
        seq: i64,
    },
    /// A registry or policy file was refused; the versions in force stay.
    PolicyRejected {
        file: String,
        seq: i64,
    },
    /// A held action was approved, rejected or expired. The payload names
    /// it by its decision key (`decision_key`): any login may LISTEN, so the
    /// id itself is not sent.
    Decision {
        key: String,
    },
    /// Compensations were requested under this plan.
    CompensationsRequested {
        plan_id: Uuid,
    },
}

/// The JSON `backstop_control` carries, tagged by `event`.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum ControlPayload {
    Paused {
        scope: Scope,
        target: String,
        seq: i64,
        by: String,
    },
    Resumed {
        scope: Scope,
        target: String,
        seq: i64,
        by: String,
    },
    RegistryLoaded {
        version: i64,
        seq: i64,
    },
    PolicyLoaded {
        version: i64,
        seq: i64,
    },
    PolicyRejected {
        file: String,
        seq: i64,
    },
}

/// A notification this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("a notification on the unknown channel {0:?}")]
    Channel(String),
    #[error("an unreadable notification on {channel}: {reason} (payload {payload:?})")]
    Payload {
        channel: &'static str,
        payload: String,
        reason: String,
    },
}

impl ControlEvent {
    /// Decode a notification received on `channel`.
    pub fn decode(channel: &str, payload: &str) -> Result<ControlEvent, NotifyError> {
        let bad = |channel: &'static str, reason: String| NotifyError::Payload {
            channel,
            payload: payload.to_string(),
            reason,
        };
        let id = |channel: &'static str| Uuid::parse_str(payload.trim()).map_err(|e| bad(channel, e.to_string()));
        match channel {
            CONTROL_CHANNEL => {
                let p: ControlPayload =
                    serde_json::from_str(payload).map_err(|e| bad(CONTROL_CHANNEL, e.to_string()))?;
                Ok(match p {
                    ControlPayload::Paused { scope, target, seq, by } => {
                        ControlEvent::Paused { scope, target, seq, by }
                    }
                    ControlPayload::Resumed { scope, target, seq, by } => {
                        ControlEvent::Resumed { scope, target, seq, by }
                    }
                    ControlPayload::RegistryLoaded { version, seq } => ControlEvent::RegistryLoaded { version, seq },
                    ControlPayload::PolicyLoaded { version, seq } => ControlEvent::PolicyLoaded { version, seq },
                    ControlPayload::PolicyRejected { file, seq } => ControlEvent::PolicyRejected { file, seq },
                })
            }
            DECISIONS_CHANNEL => {
                let key = payload.trim();
                if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(bad(
                        DECISIONS_CHANNEL,
                        "expected a decision key: 64 lowercase hex digits".into(),
                    ));
                }
                Ok(ControlEvent::Decision { key: key.to_string() })
            }
            COMPENSATIONS_CHANNEL => Ok(ControlEvent::CompensationsRequested {
                plan_id: id(COMPENSATIONS_CHANNEL)?,
            }),
            other => Err(NotifyError::Channel(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    #[test]
    fn every_kind_round_trips() {
        assert_eq!(EventKind::ALL.len(), EventKind::NAMES.len());
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
            assert_eq!(k.to_string(), k.as_str());
            let json = serde_json::to_string(k).expect("a kind serializes");
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).expect("and deserializes"), *k);
        }
    }

    #[test]
    fn every_action_status_round_trips() {
        for st in ActionStatus::ALL {
            assert_eq!(st.as_str().parse::<ActionStatus>(), Ok(*st));
        }
        let e = "compensated".parse::<ActionStatus>().expect_err("not an action status");
        assert_eq!(e.value, "compensated");
    }

    #[test]
    fn an_unknown_kind_is_an_error_naming_it() {
        for bad in ["", "Allowed", "allow", "proposed", "finding_", " held"] {
            let e = bad.parse::<EventKind>().expect_err(bad);
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert!(serde_json::from_str::<EventKind>("\"nope\"").is_err());
    }

    #[test]
    fn verdicts_and_scopes_parse_only_what_they_name() {
        use crate::contract::Verdict;
        for v in [Verdict::Allow, Verdict::Hold, Verdict::Block] {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
        }
        for s in [Scope::Fleet, Scope::Agent, Scope::Tool] {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        let e = "maybe".parse::<Verdict>().expect_err("not a verdict");
        assert_eq!(e.to_string(), r#"verdict must be allow, hold or block; got "maybe""#);
        assert!("".parse::<Verdict>().is_err());
        let e = "planet".parse::<Scope>().expect_err("not a scope");
        assert_eq!(e.to_string(), r#"scope must be fleet, agent or tool; got "planet""#);
    }

    /// Every `.sql` file under `migrations/` and `sql/`.
    fn sql_files() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        let mut dirs: Vec<_> = ["migrations", "sql"].iter().map(|d| root.join(d)).collect();
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries {
                let p = e.expect("a directory entry").path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "sql") {
                    let text = std::fs::read_to_string(&p).expect("an SQL file");
                    out.push((p.display().to_string(), text));
                }
            }
        }
        out
    }

    /// The quoted literals in `s`.
    fn literals(s: &str) -> Vec<&str> {
        s.split('\'').skip(1).step_by(2).collect()
    }

    /// The kinds the SQL writes to the log: the first argument of each
    /// `_append(...)` call, and the values of `v_kind`, the variable the
    /// functions that insert their row themselves (propose, record_result)
    /// and `finish_compensation` pass on.
    fn kinds_in_sql(files: &[(String, String)]) -> BTreeSet<String> {
        let mut kinds = BTreeSet::new();
        let all: String = files.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("\n");
        let code: String = all
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, m) in code.match_indices("backstop._append(") {
            if code[..i].trim_end().ends_with("FUNCTION") {
                continue;
            }
            let args = code[i + m.len()..].trim_start();
            if args.starts_with("v_kind") {
                continue;
            }
            let Some(quoted) = args.strip_prefix('\'') else {
                panic!(
                    "an _append whose kind this test cannot read: {}",
                    &args[..args.len().min(60)]
                );
            };
            let (lit, rest) = quoted.split_once('\'').expect("a closed literal");
            match rest.trim_start().strip_prefix("||") {
                None => {
                    kinds.insert(lit.to_string());
                }
                // `'finding_' || p_status`: the statuses come from the callers of `_finding_status`.
                Some(var) if lit == "finding_" && var.trim_start().starts_with("p_status") => {
                    for (j, _) in code.match_indices("backstop._finding_status(") {
                        if code[..j].trim_end().ends_with("FUNCTION") {
                            continue;
                        }
                        let call = &code[j..];
                        let call = &call[..call.find(')').expect("a closed call")];
                        let status = literals(call).get(1).copied().expect("a status literal");
                        kinds.insert(format!("finding_{status}"));
                    }
                }
                Some(_) => panic!("an _append of {lit:?} || ... that this test does not know how to expand"),
            }
        }
        for (i, _) in code.match_indices("v_kind :=") {
            let stmt = &code[i + "v_kind :=".len()..];
            let stmt = &stmt[..stmt.find(';').expect("a statement")];
            // In a CASE, the kinds follow THEN and ELSE; what follows WHEN is the input.
            let mut parts = stmt.split('\'');
            let mut before = parts.next().unwrap_or("");
            while let (Some(lit), Some(after)) = (parts.next(), parts.next()) {
                if !before.trim_end().ends_with("WHEN") {
                    kinds.insert(lit.to_string());
                }
                before = after;
            }
        }
        kinds
    }

    #[test]
    fn the_kinds_are_the_ones_the_sql_writes() {
        let files = sql_files();
        assert!(!files.is_empty(), "no SQL found under migrations/ or sql/");
        let in_sql = kinds_in_sql(&files);
        let in_rust: BTreeSet<String> = EventKind::ALL.iter().map(|k| k.as_str().to_string()).collect();
        let missing: Vec<_> = in_sql.difference(&in_rust).collect();
        let stale: Vec<_> = in_rust.difference(&in_sql).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "EventKind and the SQL disagree: written by the SQL but not in EventKind {missing:?}; \
             in EventKind but written nowhere {stale:?}"
        );
    }

    #[test]
    fn the_kind_scanner_reads_case_and_concatenation() {
        let sql = "v_kind := CASE e.verdict WHEN 'allow' THEN 'allowed' ELSE 'blocked' END;\n\
                   PERFORM backstop._append('paused', v_actor); -- _append('not_this')\n\
                   PERFORM backstop._append('finding_' || p_status, x);\n\
                   SELECT * FROM backstop._finding_status('resolve_finding', id, 'resolved', note);";
        let got = kinds_in_sql(&[("t.sql".into(), sql.into())]);
        let want: BTreeSet<String> = ["allowed", "blocked", "paused", "finding_resolved"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn notifications_decode_or_fail_loudly() {
        let e = ControlEvent::decode(
            CONTROL_CHANNEL,
            r#"{"event": "paused", "scope": "agent", "target": "refund-bot", "seq": 7, "by": "ana"}"#,
        )
        .expect("a pause");
        assert_eq!(
            e,
            ControlEvent::Paused {
                scope: Scope::Agent,
                target: "refund-bot".into(),
                seq: 7,
                by: "ana".into()
            }
        );
        let e = ControlEvent::decode(CONTROL_CHANNEL, r#"{"event": "policy_loaded", "version": 3, "seq": 9}"#);
        assert_eq!(e.expect("a load"), ControlEvent::PolicyLoaded { version: 3, seq: 9 });
        let id = Uuid::from_u128(42);
        assert_eq!(
            ControlEvent::decode(DECISIONS_CHANNEL, &decision_key(id)).expect("a key"),
            ControlEvent::Decision { key: decision_key(id) }
        );
        for (channel, payload) in [
            (
                CONTROL_CHANNEL,
                r#"{"event": "paused", "scope": "planet", "target": "*", "seq": 1, "by": "x"}"#,
            ),
            (CONTROL_CHANNEL, r#"{"event": "exploded"}"#),
            (CONTROL_CHANNEL, "not json"),
            (DECISIONS_CHANNEL, "not-a-uuid"),
            // The id itself is not what a decision carries any more.
            (DECISIONS_CHANNEL, "00000000-0000-0000-0000-00000000002a"),
            ("elsewhere", "{}"),
        ] {
            assert!(ControlEvent::decode(channel, payload).is_err(), "{channel} {payload}");
        }
    }
}
