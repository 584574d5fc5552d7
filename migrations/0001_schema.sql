-- The schema: tables, indexes, partitions and the data they start with.
--
-- Migrations are immutable once landed (tests/contract.rs checks each
-- landed file's checksum against migrations/CHECKSUMS). Functions, views,
-- triggers, types and grants are not here: they are the contract, one file
-- per concept under sql/, re-applied by `backstop migrate` after the
-- migrations whenever a file changes. A table added by a later migration
-- needs no grant here: sql/00_roles.sql gives every table to the owner role
-- and lets the viewers read it.
-- ======================================================================
-- The action log and its seals
-- ======================================================================

-- The action log: append-only, sealed in hash-chained batches, tailed by
-- transaction-id snapshots. Everything else in schema `backstop` is a
-- projection of this table.
CREATE SCHEMA IF NOT EXISTS backstop;

CREATE SEQUENCE backstop.action_log_seq AS bigint;

-- seq, at and txid come from the database. Nothing here serializes writers:
-- tamper evidence is added after commit by sealing (below), off the agents'
-- path.
-- txid comes first on purpose: an INSERT evaluates its values in column
-- order, so the transaction id is assigned before the sequence number is
-- taken. `verify` relies on it: a transaction whose id was assigned after a
-- seal's own cannot hold a seq the sequence had issued before that seal.
CREATE TABLE backstop.action_log (
    txid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq              bigint      NOT NULL DEFAULT nextval('backstop.action_log_seq'),
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind             text        NOT NULL,
    actor            text        NOT NULL,
    agent            text,
    tool             text,
    action_id        uuid,
    correlation_id   text,
    parent_action    uuid,
    amount           numeric,
    confidence       real,
    reasoning        text,
    inputs           jsonb,
    params           jsonb,
    result           jsonb,
    detail           jsonb       NOT NULL DEFAULT '{}',
    policy_version   bigint,
    registry_version bigint,
    -- Partitioned by time: the key must include the partition column.
    CONSTRAINT action_log_pkey PRIMARY KEY (seq, at)
) PARTITION BY RANGE (at);

ALTER SEQUENCE backstop.action_log_seq OWNED BY backstop.action_log.seq;

-- Readers (the tail, the sealer) find rows by the transaction that wrote them.
CREATE INDEX action_log_txid ON backstop.action_log (txid, seq);

CREATE INDEX action_log_action ON backstop.action_log (action_id) WHERE action_id IS NOT NULL;

-- Partitions: contiguous time ranges created ahead of need (by every
-- long-running Backstop process, through housekeeping), and a DEFAULT
-- partition, so that no write ever fails for want of one. Statement
-- triggers are not inherited by partitions: each gets its own, so a
-- statement aimed at a partition directly is refused too.
CREATE TABLE backstop.log_partitions (
    name    text PRIMARY KEY,
    from_at timestamptz NOT NULL UNIQUE,
    to_at   timestamptz NOT NULL,
    CHECK (to_at > from_at)
);

CREATE TABLE backstop.log_partitioning (
    one   boolean  PRIMARY KEY DEFAULT true CHECK (one),
    width interval NOT NULL CHECK (width >= interval '1 second'),
    ahead integer  NOT NULL CHECK (ahead BETWEEN 1 AND 100)
);

-- The width is the session setting backstop.log_partition_width at
-- migration time (BACKSTOP_LOG_PARTITION_WIDTH), default one month.
INSERT INTO backstop.log_partitioning (width, ahead)
VALUES (coalesce(nullif(current_setting('backstop.log_partition_width', true), '')::interval, interval '1 month'), 2);

CREATE TABLE backstop.action_log_default PARTITION OF backstop.action_log DEFAULT;

-- Seals: tamper evidence in batches. Each seal covers the rows of one
-- snapshot window (committed after the previous seal's snapshot and by this
-- one's), possibly split by a (txid, seq) cursor when the window is large,
-- and stores every row's digest in (txid, seq) order. Seals form one hash
-- chain. `verify` recomputes every window from the log: an altered row shows
-- as a digest mismatch at its seq, a deleted row as a seq the seal has and
-- the log lacks, a forged row as one the log has and the seal lacks.
CREATE TABLE backstop.seals (
    seal_no    bigint PRIMARY KEY,
    after_snap pg_snapshot NOT NULL,
    upto_snap  pg_snapshot NOT NULL,
    from_txid  xid8        NOT NULL,
    from_seq   bigint      NOT NULL,
    to_txid    xid8        NOT NULL,
    to_seq     bigint      NOT NULL,
    complete   boolean     NOT NULL,
    row_count  integer     NOT NULL,
    -- The sealer read seq_floor from the sequence, then took seal_xid. A
    -- transaction with a larger id took its seqs after that, so above the floor.
    seal_xid   xid8        NOT NULL,
    seq_floor  bigint      NOT NULL,
    seqs       bigint[]    NOT NULL,
    digests    bytea       NOT NULL,
    prev_hash  bytea       NOT NULL,
    hash       bytea       NOT NULL,
    sealed_at  timestamptz NOT NULL,
    sealed_by  text        NOT NULL
);


-- ======================================================================
-- The tool registry and the policy
-- ======================================================================

-- The tool registry and the policy, versioned. Files in assets/ are parsed and
-- validated by the binary, then loaded through load_registry / load_policy,
-- which write a new version atomically and append the whole normalized
-- document to the log, so both tables can be rebuilt from the log.
CREATE TABLE backstop.active (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    registry_version bigint,
    policy_version   bigint
);

INSERT INTO backstop.active (id) VALUES (true);

CREATE TABLE backstop.registry_versions (
    version    bigint PRIMARY KEY,
    sha256     text        NOT NULL,
    source     text        NOT NULL,
    loaded_by  text        NOT NULL,
    loaded_at  timestamptz NOT NULL,
    loaded_seq bigint      NOT NULL,
    doc        jsonb       NOT NULL,
    summary    jsonb       NOT NULL
);

CREATE TABLE backstop.tools (
    version         bigint  NOT NULL REFERENCES backstop.registry_versions,
    name            text    NOT NULL,
    class           text    NOT NULL CHECK (class IN ('read', 'reversible', 'conditional', 'irreversible')),
    inverse         text,
    bindings        jsonb   NOT NULL DEFAULT '{}',
    reversal_window interval,
    condition       text,
    value_param     text,
    entity_param    text,
    cost_fixed      numeric NOT NULL DEFAULT 0 CHECK (cost_fixed >= 0),
    cost_share      numeric NOT NULL DEFAULT 0 CHECK (cost_share >= 0),
    executor        jsonb,
    description     text    NOT NULL DEFAULT '',
    remediation     text,
    PRIMARY KEY (version, name),
    CHECK (class NOT IN ('reversible', 'conditional') OR inverse IS NOT NULL)
);

CREATE TABLE backstop.policy_versions (
    version         bigint PRIMARY KEY,
    sha256          text        NOT NULL,
    source          text        NOT NULL,
    loaded_by       text        NOT NULL,
    loaded_at       timestamptz NOT NULL,
    loaded_seq      bigint      NOT NULL,
    doc             jsonb       NOT NULL,
    summary         jsonb       NOT NULL,
    hold_expiry     interval    NOT NULL,
    expiry_effect   text        NOT NULL CHECK (expiry_effect IN ('block', 'allow')),
    four_eyes_above numeric,
    -- Whether any rule needs to remember values agents used (parameter rules).
    param_memory    boolean     NOT NULL DEFAULT false,
    -- Whether a cumulative rule is in force: only then is allowed value
    -- counted per agent and minute.
    has_cumulative  boolean     NOT NULL DEFAULT false
);

CREATE TABLE backstop.policy_rules (
    version          bigint  NOT NULL REFERENCES backstop.policy_versions,
    ord              integer NOT NULL,
    name             text    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('amount_over', 'cost_to_reverse', 'confidence_below',
                                                      'cumulative', 'in_list', 'new_counterparty',
                                                      'changed_value', 'always')),
    effect           text    NOT NULL CHECK (effect IN ('hold', 'block')),
    reason           text    NOT NULL,
    threshold        numeric,
    confidence_below real,
    approvals        integer NOT NULL DEFAULT 1 CHECK (approvals BETWEEN 1 AND 5),
    rule_window      interval,
    param            text,
    key_param        text,
    list             text,
    classes          text[],
    agents           text[],
    tools            text[],
    overrides        jsonb   NOT NULL DEFAULT '{}',
    PRIMARY KEY (version, ord),
    UNIQUE (version, name),
    CHECK (kind NOT IN ('amount_over', 'cost_to_reverse', 'cumulative') OR threshold IS NOT NULL),
    CHECK (kind NOT IN ('cost_to_reverse', 'confidence_below') OR confidence_below IS NOT NULL),
    CHECK (kind <> 'cumulative' OR rule_window IS NOT NULL),
    CHECK (kind NOT IN ('in_list', 'new_counterparty', 'changed_value') OR param IS NOT NULL),
    CHECK (kind <> 'in_list' OR list IS NOT NULL),
    CHECK (kind <> 'changed_value' OR key_param IS NOT NULL)
);

CREATE TABLE backstop.policy_lists (
    version bigint NOT NULL REFERENCES backstop.policy_versions,
    list    text   NOT NULL,
    value   text   NOT NULL,
    PRIMARY KEY (version, list, value)
);

CREATE TABLE backstop.policy_list_tables (
    version     bigint NOT NULL REFERENCES backstop.policy_versions,
    list        text   NOT NULL,
    table_name  text   NOT NULL,
    column_name text   NOT NULL,
    PRIMARY KEY (version, list)
);

-- Memory the parameter rules need: values each agent has used before.
-- Written when an action is allowed (at propose or on final approval).
CREATE TABLE backstop.counterparties (
    agent text NOT NULL,
    param text NOT NULL,
    value text NOT NULL,
    first_seq bigint NOT NULL,
    PRIMARY KEY (agent, param, value)
);

CREATE TABLE backstop.param_values (
    agent     text NOT NULL,
    key_param text NOT NULL,
    key       text NOT NULL,
    param     text NOT NULL,
    value     text,
    last_seq  bigint NOT NULL,
    PRIMARY KEY (agent, key_param, key, param)
);

-- Allowed value per agent per minute, for the cumulative rule's sliding window.
CREATE TABLE backstop.agent_value_minutes (
    agent  text        NOT NULL,
    minute timestamptz NOT NULL,
    total  numeric     NOT NULL,
    PRIMARY KEY (agent, minute)
) WITH (fillfactor = 50);

-- A rejected edit of a policy or registry file is an event too: operators see
-- it, and the last good version stays in force. Each distinct content is
-- recorded once, however many processes watch the file.
CREATE TABLE backstop.config_rejections (
    file   text   NOT NULL,
    sha256 text   NOT NULL,
    seq    bigint NOT NULL,
    PRIMARY KEY (file, sha256)
);


-- ======================================================================
-- Projections of the log
-- ======================================================================

-- Projections: current state derived from the log, maintained by the contract
-- functions in the same transaction as the append. `backstop verify`
-- compares them with a rebuild from the log (sql/13_rebuild.sql).
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


-- ======================================================================
-- The kill switch
-- ======================================================================

-- The kill switch's gate. Every proposal reads this (empty) table before it
-- reads the kill switches, and so holds an ACCESS SHARE lock on it until it
-- commits; pause takes ACCESS EXCLUSIVE. A pause therefore waits for the
-- proposals already past their check, and every proposal that checks after
-- the pause commits sees it. ACCESS SHARE on a table is taken on Postgres's
-- per-backend fast path, so proposals do not contend with each other (an
-- advisory lock shared by every proposal cost about 20% of throughput at 16
-- agents).
CREATE TABLE backstop.kill_gate ();


-- ======================================================================
-- The supervisor
-- ======================================================================

-- The supervisor's working state. Its decisions (findings, automatic pauses
-- and compensations, completed reviews) are in the log; these tables are how
-- several supervisors share the work without doing any of it twice.

-- Where the supervisors are in the log (a tail cursor). Only the supervisor
-- holding this row's lock advances it, in the same transaction as the work
-- the rows cause, so the work is neither lost nor repeated.
CREATE TABLE backstop.supervisor_cursor (
    name       text PRIMARY KEY,
    cursor     jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text        NOT NULL
);

-- Executed actions due for a delayed review.
CREATE TABLE backstop.reviews (
    action_id   uuid PRIMARY KEY,
    agent       text        NOT NULL,
    tool        text        NOT NULL,
    due_at      timestamptz NOT NULL,
    reason      text        NOT NULL,
    status      text        NOT NULL DEFAULT 'pending',  -- pending | running | done
    claimed_by  text,
    lease_until timestamptz,
    attempts    integer     NOT NULL DEFAULT 0,
    done_at     timestamptz,
    findings    integer     NOT NULL DEFAULT 0
);

CREATE INDEX reviews_ready ON backstop.reviews (due_at) WHERE status <> 'done';

-- Decision counts per agent and time bucket, for drift: keys like
-- "tool:issue_refund", "verdict:allow", "outcome:executed", "amount:100-1k",
-- "conf:0.85-0.95". Small and append-mostly, so a drift pass over a day of a
-- busy fleet reads thousands of rows, not millions.
CREATE TABLE backstop.rollups (
    agent  text        NOT NULL,
    bucket timestamptz NOT NULL,
    counts jsonb       NOT NULL,
    PRIMARY KEY (agent, bucket)
);

CREATE INDEX rollups_bucket ON backstop.rollups (bucket);


-- ======================================================================
-- Duties and logins
-- ======================================================================

-- Least privilege. One NOLOGIN role per duty; logins are members
-- (`backstop grant DUTY LOGIN`). The contract's entry points run as their
-- owner (SECURITY DEFINER, fixed search_path), so no duty writes any table
-- directly, and a duty can call only its own functions. Role names are
-- PREFIX_duty; PREFIX is the session setting backstop.role_prefix at
-- migration time (`BACKSTOP_ROLE_PREFIX`), default "backstop".
--
-- Identity comes from the session: a login's actions are recorded under the
-- login's name. Only trusted sessions (the schema's owner and superusers:
-- Backstop's own tooling) may name an operator with backstop.operator, or
-- propose as any agent.
CREATE TABLE backstop.duties (
    duty      text PRIMARY KEY,
    role_name text NOT NULL UNIQUE
);

-- Which agents a login may propose as (besides the agent named like it).
CREATE TABLE backstop.agent_logins (
    login text NOT NULL,
    agent text NOT NULL,
    PRIMARY KEY (login, agent)
);


-- ======================================================================
-- Retention
-- ======================================================================

-- The original rows of the live `carried` events.
CREATE TABLE backstop.carried_log (LIKE backstop.action_log);

ALTER TABLE backstop.carried_log ADD PRIMARY KEY (seq);

CREATE INDEX carried_log_action ON backstop.carried_log (action_id) WHERE action_id IS NOT NULL;

-- One row per drop, from its `log_archived` event.
CREATE TABLE backstop.log_retention (
    cut             timestamptz PRIMARY KEY,
    partitions      text[]      NOT NULL,
    rows            bigint      NOT NULL,
    first_seal      bigint      NOT NULL,
    last_seal       bigint      NOT NULL,
    head_hash       bytea       NOT NULL,
    manifest_sha256 text        NOT NULL,
    location        text        NOT NULL,
    carried         integer     NOT NULL,
    reason          text        NOT NULL,
    archived_by     text        NOT NULL,
    seq             bigint      NOT NULL,
    at              timestamptz NOT NULL
);

-- Carriers by the row they carry.
CREATE INDEX action_log_carried ON backstop.action_log (((detail -> 'row' ->> 'seq')::bigint)) WHERE kind = 'carried';

-- A cut prepared (rows checked, needs carried) and not yet dropped.
CREATE TABLE backstop.cut_prepared (
    cut         timestamptz PRIMARY KEY,
    rows        bigint      NOT NULL,
    first_seal  bigint      NOT NULL,
    last_seal   bigint      NOT NULL,
    carried     integer     NOT NULL,
    prepared_by text        NOT NULL,
    prepared_at timestamptz NOT NULL
);


-- ======================================================================
-- The contract's bookkeeping
-- ======================================================================

-- The files of sql/ as last applied by `backstop migrate`: an unchanged set
-- is not applied again.
CREATE TABLE backstop.contract_files (
    name       text PRIMARY KEY,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL,
    applied_by text        NOT NULL
);
