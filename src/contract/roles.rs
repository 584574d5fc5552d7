//! Which duty (role) may call which contract function, as the database grants it.

/// The contract's functions, in the order `backstop roles` shows them.
pub const CONTRACT_FUNCTIONS: &[&str] = &[
    "propose",
    "propose_batch",
    "decision",
    "record_result",
    "record_results",
    "report_signal",
    "approve",
    "reject",
    "pause",
    "resume",
    "request_compensation",
    "compensation_plan",
    "precheck",
    "acknowledge_finding",
    "resolve_finding",
    "load_registry",
    "load_policy",
    "report_config_rejected",
    "record_drill",
    "claim_compensations",
    "finish_compensation",
    "finish_compensations",
    "schedule_reviews",
    "claim_reviews",
    "complete_review",
    "raise_finding",
    "add_rollups",
    "claim_drift_pass",
    "run_check",
    "rollups_from_log",
    "evaluate",
    "claim_notifications",
    "finish_notification",
    "expire_held",
    "prune_value_minutes",
    "seal",
    "ensure_log_partitions",
    "tail",
];

/// Read-only functions (stable or immutable) that every duty but `agent`
/// may call, through `viewer`: the figures, plans and digests the CLI, the
/// room and `verify` read. Every function a duty may call is in
/// `CONTRACT_FUNCTIONS`, here or in `EVERY_DUTY_FUNCTIONS`; a test holds the
/// database's grants to that.
pub const READ_FUNCTIONS: &[&str] = &[
    "canon",
    "compensation_outcome",
    "cost_to_reverse",
    "drift_counts",
    "metrics",
    "money",
    "path_get",
    "projection_diffs",
    "retention_plan",
    "review_reason",
    "rollup_bucket",
    "rollup_keys",
    "row_digest",
    "rules_of",
    "sample_bucket",
    "seal_genesis",
    "seal_hash",
    "signal_counts",
    "tools_of",
];

/// What every duty, an agent included, may call: who the session is, the
/// contract's version, and the hash a decision's NOTIFY carries.
pub const EVERY_DUTY_FUNCTIONS: &[&str] = &["actor", "contract_version", "decision_key"];

/// The duty × function matrix as the database has it: (duty, role, function, allowed).
pub async fn role_matrix(pool: &sqlx::PgPool) -> sqlx::Result<Vec<(String, String, String, bool)>> {
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT d.duty, d.role_name, f.name,
                bool_or(has_function_privilege(d.role_name, p.oid, 'EXECUTE'))
           FROM backstop.duties d
          CROSS JOIN unnest($1::text[]) WITH ORDINALITY f(name, ord)
           JOIN pg_proc p ON p.proname = f.name AND p.pronamespace = 'backstop'::regnamespace
          -- The owner runs the contract and the check role runs the
          -- policy's checks: neither is a login's duty.
          WHERE d.duty NOT IN ('owner', 'check')
          GROUP BY d.duty, d.role_name, f.name, f.ord
          ORDER BY array_position(ARRAY['agent','viewer','approver','operator','commander','supervisor','worker','policy'], d.duty), f.ord",
    )
    .bind(CONTRACT_FUNCTIONS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
