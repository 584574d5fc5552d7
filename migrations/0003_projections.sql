-- Projections: current state derived from the log, maintained by the contract
-- functions in the same transaction as the append. `backstop verify`
-- compares them with a rebuild from the log (0005).

CREATE TABLE backstop.actions (
    action_id        uuid PRIMARY KEY,
    agent            text        NOT NULL,
    tool             text        NOT NULL,
    class            text,
    amount           numeric,
    confidence       real,
    cost_to_reverse  numeric,
    correlation_id   text,
    parent_action    uuid,
    idempotency_key  text,
    entity           text,
    -- allow | hold | block (no CHECK: constraints are re-read on every insert, and only propose writes here)
    verdict          text        NOT NULL,
    reason           text        NOT NULL,
    rule             text,
    -- allowed | held | blocked | rejected | expired | executed | failed
    status           text        NOT NULL,
    approvals_needed integer     NOT NULL DEFAULT 0,
    approvals        integer     NOT NULL DEFAULT 0,
    expires_at       timestamptz,
    expiry_effect    text,
    proposed_seq     bigint      NOT NULL,
    proposed_at      timestamptz NOT NULL,
    decided_seq      bigint,
    executed_seq     bigint,
    executed_at      timestamptz,
    inverse_tool     text,
    inverse_params   jsonb,
    inverse_missing  text[],
    comp_deadline    timestamptz,
    comp_condition   text,
    policy_version   bigint,
    registry_version bigint,
    updated_seq      bigint      NOT NULL
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX actions_idempotency ON backstop.actions (agent, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX actions_agent_time ON backstop.actions (agent, proposed_at);
CREATE INDEX actions_correlation ON backstop.actions (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX actions_parent ON backstop.actions (parent_action) WHERE parent_action IS NOT NULL;

-- Held actions waiting for a person: small, so the room's queue is cheap.
CREATE TABLE backstop.approval_queue (
    action_id        uuid PRIMARY KEY REFERENCES backstop.actions,
    agent            text        NOT NULL,
    tool             text        NOT NULL,
    amount           numeric,
    rule             text,
    reason           text        NOT NULL,
    approvals_needed integer     NOT NULL,
    approvals        integer     NOT NULL DEFAULT 0,
    held_at          timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    proposed_seq     bigint      NOT NULL
);
CREATE INDEX approval_queue_expiry ON backstop.approval_queue (expires_at);

CREATE TABLE backstop.approvals (
    action_id uuid        NOT NULL,
    approver  text        NOT NULL,
    decision  text        NOT NULL CHECK (decision IN ('approved', 'rejected')),
    note      text        NOT NULL DEFAULT '',
    seq       bigint      NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (action_id, seq)
);

CREATE TABLE backstop.kill_switches (
    scope       text        NOT NULL CHECK (scope IN ('fleet', 'agent', 'tool')),
    target      text        NOT NULL,
    paused      boolean     NOT NULL,
    reason      text        NOT NULL,
    changed_by  text        NOT NULL,
    changed_seq bigint      NOT NULL,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, target)
);

-- The compensation outbox. A row exists once compensation was requested;
-- what would be staged lives on the action (inverse_tool, inverse_params).
CREATE TABLE backstop.compensations (
    action_id       uuid PRIMARY KEY REFERENCES backstop.actions,
    agent           text        NOT NULL,
    tool            text        NOT NULL,
    inverse_tool    text        NOT NULL,
    inverse_params  jsonb       NOT NULL,
    deadline        timestamptz,
    condition       text,
    -- requested | running | compensated | failed | expired | condition_failed | conflict
    status          text        NOT NULL,
    reason          text        NOT NULL,
    plan_id         uuid,
    requested_by    text        NOT NULL,
    requested_seq   bigint      NOT NULL,
    requested_at    timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the row may next be claimed: after a backoff, or when a lease ends.
    next_attempt_at timestamptz NOT NULL,
    worker          text,
    lease_until     timestamptz,
    finished_seq    bigint,
    finished_at     timestamptz,
    last_detail     jsonb,
    -- Compensations (of later, dependent actions) that must finish first.
    wait_for        uuid[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX compensations_ready ON backstop.compensations (next_attempt_at)
    WHERE status IN ('requested', 'running');

CREATE TABLE backstop.findings (
    finding_id  uuid PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('policy_violation', 'low_confidence', 'sampled_divergence',
                                                     'drift', 'complaint_spike', 'compensation_failed')),
    severity    text        NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    agent       text,
    action_id   uuid,
    rule        text,
    detail      jsonb       NOT NULL,
    dedup_key   text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    count       integer     NOT NULL DEFAULT 1,
    raised_by   text        NOT NULL,
    raised_seq  bigint      NOT NULL,
    raised_at   timestamptz NOT NULL,
    last_seq    bigint      NOT NULL,
    last_at     timestamptz NOT NULL,
    status_by   text,
    status_note text
);
-- At most one unresolved finding per dedup key: repeats are merged into it.
CREATE UNIQUE INDEX findings_unresolved ON backstop.findings (dedup_key) WHERE status <> 'resolved';
CREATE INDEX findings_agent ON backstop.findings (agent, raised_at);

CREATE TABLE backstop.signals (
    seq            bigint PRIMARY KEY,
    kind           text        NOT NULL,
    agent          text,
    correlation_id text,
    action_id      uuid,
    detail         jsonb       NOT NULL,
    reported_by    text        NOT NULL,
    at             timestamptz NOT NULL
);
CREATE INDEX signals_agent ON backstop.signals (agent, at);
