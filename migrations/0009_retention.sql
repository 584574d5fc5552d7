-- Retention. `backstop archive` exports whole seals to a directory, verifies
-- the export, and then cuts the log at a partition boundary: prepare_cut()
-- checks in the database that every row before the cut is sealed in the
-- archived range and that the projections agree with the log, and carries
-- forward what is still needed; drop_archived_partitions() then drops the
-- partitions under a short exclusive lock.
--
-- What current state still needs from the dropped rows is carried forward
-- first: each such row is appended again as a `carried` event holding the
-- original row, and kept as that row in `carried_log`. These are the
-- registry and policy loads, retention records, the latest change of each
-- kill switch, the first rejection of each config file, and every event of
-- an action still allowed or held, of a compensation not finished, and of a
-- finding not resolved. The rebuild (0005) reads the live log plus the
-- carried rows (`rebuild_log`), so it stays exact for all of these.
-- Projection rows whose every event was archived (settled actions, their
-- approvals, finished compensations, resolved findings, old signals) are
-- checked against the archive when it was made; `projection_diffs()` leaves
-- them out afterwards, and `verify` says how many rows were archived.
--
-- Seals are kept: the chain still covers the dropped rows, and `verify`
-- accepts a sealed row missing from the log only when the retention records
-- account for exactly that many rows and no live row is dated before the cut.

-- Objects made here belong to the owner role, like everything before (0008).
DO $own$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', (SELECT role_name FROM backstop.duties WHERE duty = 'owner'));
END
$own$;

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

-- The log as the rebuild sees it: live events and carried originals (a row
-- carried by a cut not dropped yet is still live, and counted once).
CREATE VIEW backstop.rebuild_log AS
SELECT l.* FROM backstop.action_log l WHERE l.kind <> 'carried'
UNION ALL
SELECT c.* FROM backstop.carried_log c
 WHERE NOT EXISTS (SELECT 1 FROM backstop.action_log o WHERE o.seq = c.seq AND o.at = c.at AND o.kind <> 'carried');

CREATE VIEW backstop.rebuilt_carried_log AS
SELECT DISTINCT ON (r.seq) r.*
  FROM backstop.action_log l, jsonb_populate_record(NULL::backstop.action_log, l.detail -> 'row') r
 WHERE l.kind = 'carried'
 ORDER BY r.seq;

CREATE VIEW backstop.rebuilt_log_retention AS
SELECT (l.detail ->> 'cut')::timestamptz AS cut,
       ARRAY(SELECT jsonb_array_elements_text(l.detail -> 'partitions')) AS partitions,
       (l.detail ->> 'rows')::bigint AS rows, (l.detail ->> 'first_seal')::bigint AS first_seal,
       (l.detail ->> 'last_seal')::bigint AS last_seal, decode(l.detail ->> 'head_hash', 'hex') AS head_hash,
       l.detail ->> 'manifest_sha256' AS manifest_sha256, l.detail ->> 'location' AS location,
       (l.detail ->> 'carried')::integer AS carried, l.detail ->> 'reason' AS reason,
       l.actor AS archived_by, l.seq, l.at
  FROM backstop.rebuild_log l WHERE l.kind = 'log_archived';

-- The rebuild reads the carried rows too (same views as 0005 otherwise).
CREATE OR REPLACE VIEW backstop.rebuilt_registry_versions AS
SELECT (l.detail ->> 'version')::bigint AS version, l.detail ->> 'sha256' AS sha256, l.detail ->> 'source' AS source,
       l.actor AS loaded_by, l.at AS loaded_at, l.seq AS loaded_seq, l.detail -> 'doc' AS doc, l.detail -> 'summary' AS summary
  FROM backstop.rebuild_log l WHERE l.kind = 'registry_loaded';

CREATE OR REPLACE VIEW backstop.rebuilt_policy_versions AS
SELECT (l.detail ->> 'version')::bigint AS version, l.detail ->> 'sha256' AS sha256, l.detail ->> 'source' AS source,
       l.actor AS loaded_by, l.at AS loaded_at, l.seq AS loaded_seq, l.detail -> 'doc' AS doc, l.detail -> 'summary' AS summary,
       make_interval(secs => coalesce((l.detail -> 'doc' -> 'settings' ->> 'hold_expiry_seconds')::double precision, 3600)) AS hold_expiry,
       coalesce(l.detail -> 'doc' -> 'settings' ->> 'expiry_effect', 'block') AS expiry_effect,
       (l.detail -> 'doc' -> 'settings' ->> 'four_eyes_above')::numeric AS four_eyes_above,
       EXISTS (SELECT 1 FROM jsonb_array_elements(l.detail -> 'doc' -> 'rules') r
                WHERE r ->> 'kind' IN ('new_counterparty', 'changed_value')) AS param_memory,
       EXISTS (SELECT 1 FROM jsonb_array_elements(l.detail -> 'doc' -> 'rules') r WHERE r ->> 'kind' = 'cumulative') AS has_cumulative
  FROM backstop.rebuild_log l WHERE l.kind = 'policy_loaded';

CREATE OR REPLACE VIEW backstop.rebuilt_actions AS
WITH p AS (
    SELECT l.* FROM backstop.rebuild_log l
     WHERE l.kind IN ('allowed', 'held', 'blocked') AND l.action_id IS NOT NULL AND l.detail ? 'verdict'
), ev AS (
    SELECT l.action_id,
           count(*) FILTER (WHERE l.kind = 'approved') AS approvals,
           max(l.seq) FILTER (WHERE l.kind = 'rejected') AS rejected_seq,
           max(l.seq) FILTER (WHERE l.kind = 'expired') AS expired_seq,
           max(l.seq) FILTER (WHERE l.kind = 'approved' AND (l.detail ->> 'final')::boolean) AS approved_seq,
           max(l.seq) FILTER (WHERE l.kind IN ('executed', 'failed')) AS executed_seq,
           max(l.seq) FILTER (WHERE l.kind IN ('approved', 'rejected', 'expired', 'executed', 'failed')) AS last_seq
      FROM backstop.rebuild_log l
     WHERE l.action_id IS NOT NULL AND l.kind IN ('approved', 'rejected', 'expired', 'executed', 'failed')
     GROUP BY l.action_id
)
SELECT p.action_id, p.agent, p.tool, p.detail ->> 'class' AS class, p.amount, p.confidence,
       (p.detail ->> 'cost_to_reverse')::numeric AS cost_to_reverse, p.correlation_id, p.parent_action,
       p.detail ->> 'idempotency_key' AS idempotency_key, p.detail ->> 'entity' AS entity,
       p.detail ->> 'verdict' AS verdict, p.detail ->> 'reason' AS reason, p.detail ->> 'rule' AS rule,
       CASE WHEN x.kind IS NOT NULL THEN x.kind
            WHEN ev.rejected_seq IS NOT NULL THEN 'rejected'
            WHEN ev.expired_seq IS NOT NULL THEN CASE WHEN p.detail ->> 'expiry_effect' = 'allow' THEN 'allowed' ELSE 'expired' END
            WHEN ev.approved_seq IS NOT NULL THEN 'allowed'
            ELSE p.kind END AS status,
       coalesce((p.detail ->> 'approvals_needed')::integer, 0) AS approvals_needed,
       coalesce(ev.approvals, 0)::integer AS approvals,
       (p.detail ->> 'expires_at')::timestamptz AS expires_at, p.detail ->> 'expiry_effect' AS expiry_effect,
       p.seq AS proposed_seq, p.at AS proposed_at,
       coalesce(ev.rejected_seq, ev.expired_seq, ev.approved_seq) AS decided_seq,
       x.seq AS executed_seq, x.at AS executed_at,
       x.detail -> 'compensation' ->> 'inverse_tool' AS inverse_tool,
       x.detail -> 'compensation' -> 'inverse_params' AS inverse_params,
       (SELECT array_agg(m ORDER BY m) FROM jsonb_array_elements_text(x.detail -> 'compensation' -> 'missing') m) AS inverse_missing,
       (x.detail -> 'compensation' ->> 'deadline')::timestamptz AS comp_deadline,
       x.detail -> 'compensation' ->> 'condition' AS comp_condition,
       p.policy_version, p.registry_version,
       greatest(p.seq, ev.last_seq) AS updated_seq
  FROM p
  LEFT JOIN ev ON ev.action_id = p.action_id
  LEFT JOIN backstop.rebuild_log x ON x.seq = ev.executed_seq;

CREATE OR REPLACE VIEW backstop.rebuilt_approvals AS
SELECT l.action_id, l.actor AS approver, l.kind AS decision, coalesce(l.detail ->> 'note', '') AS note, l.seq, l.at
  FROM backstop.rebuild_log l WHERE l.kind IN ('approved', 'rejected');

CREATE OR REPLACE VIEW backstop.rebuilt_kill_switches AS
SELECT DISTINCT ON (l.detail ->> 'scope', l.detail ->> 'target')
       l.detail ->> 'scope' AS scope, l.detail ->> 'target' AS target, l.kind = 'paused' AS paused,
       l.detail ->> 'reason' AS reason, l.actor AS changed_by, l.seq AS changed_seq, l.at AS changed_at
  FROM backstop.rebuild_log l WHERE l.kind IN ('paused', 'resumed')
 ORDER BY l.detail ->> 'scope', l.detail ->> 'target', l.seq DESC;

CREATE OR REPLACE VIEW backstop.rebuilt_compensations AS
WITH req AS (
    SELECT DISTINCT ON (l.action_id) l.* FROM backstop.rebuild_log l
     WHERE l.kind = 'compensation_requested' ORDER BY l.action_id, l.seq DESC
), last AS (
    SELECT DISTINCT ON (l.action_id) l.action_id, l.kind, l.seq, l.at, l.actor, l.detail
      FROM backstop.rebuild_log l JOIN req ON req.action_id = l.action_id AND l.seq >= req.seq
     WHERE l.kind IN ('compensation_requested', 'compensation_started', 'compensation_retry', 'compensated', 'compensation_failed')
     ORDER BY l.action_id, l.seq DESC
), started AS (
    SELECT l.action_id, max((l.detail ->> 'attempt')::integer) AS attempts
      FROM backstop.rebuild_log l JOIN req ON req.action_id = l.action_id AND l.seq > req.seq
     WHERE l.kind = 'compensation_started' GROUP BY l.action_id
)
SELECT req.action_id, req.agent, req.tool, req.detail ->> 'inverse_tool' AS inverse_tool,
       req.detail -> 'inverse_params' AS inverse_params, (req.detail ->> 'deadline')::timestamptz AS deadline,
       req.detail ->> 'condition' AS condition,
       CASE last.kind WHEN 'compensation_requested' THEN 'requested' WHEN 'compensation_started' THEN 'running'
                      WHEN 'compensation_retry' THEN 'requested' WHEN 'compensated' THEN 'compensated'
                      ELSE last.detail ->> 'status' END AS status,
       req.detail ->> 'reason' AS reason, (req.detail ->> 'plan_id')::uuid AS plan_id, req.actor AS requested_by,
       req.seq AS requested_seq, req.at AS requested_at, coalesce(started.attempts, 0) AS attempts,
       CASE last.kind WHEN 'compensation_requested' THEN req.at
                      WHEN 'compensation_started' THEN (last.detail ->> 'lease_until')::timestamptz
                      WHEN 'compensation_retry' THEN (last.detail ->> 'next_attempt_at')::timestamptz
                      ELSE (SELECT (s.detail ->> 'lease_until')::timestamptz FROM backstop.rebuild_log s
                             WHERE s.action_id = req.action_id AND s.kind = 'compensation_started' AND s.seq < last.seq
                             ORDER BY s.seq DESC LIMIT 1) END AS next_attempt_at,
       CASE WHEN last.kind IN ('compensation_started', 'compensated', 'compensation_failed') THEN
            (SELECT s.actor FROM backstop.rebuild_log s
              WHERE s.action_id = req.action_id AND s.kind = 'compensation_started' AND s.seq <= last.seq
              ORDER BY s.seq DESC LIMIT 1) END AS worker,
       CASE WHEN last.kind = 'compensation_started' THEN (last.detail ->> 'lease_until')::timestamptz END AS lease_until,
       CASE WHEN last.kind IN ('compensated', 'compensation_failed') THEN last.seq END AS finished_seq,
       CASE WHEN last.kind IN ('compensated', 'compensation_failed') THEN last.at END AS finished_at,
       CASE WHEN last.kind IN ('compensation_retry', 'compensated', 'compensation_failed') THEN last.detail -> 'result' END AS last_detail,
       coalesce((SELECT array_agg(w::uuid) FROM jsonb_array_elements_text(req.detail -> 'wait_for') w), '{}') AS wait_for
  FROM req JOIN last ON last.action_id = req.action_id
  LEFT JOIN started ON started.action_id = req.action_id;

CREATE OR REPLACE VIEW backstop.rebuilt_findings AS
WITH f AS (
    SELECT (l.detail ->> 'finding_id')::uuid AS finding_id, l.* FROM backstop.rebuild_log l WHERE l.kind = 'finding'
), st AS (
    SELECT DISTINCT ON ((l.detail ->> 'finding_id')::uuid) (l.detail ->> 'finding_id')::uuid AS finding_id,
           l.detail ->> 'status' AS status, l.actor, l.detail ->> 'note' AS note, l.seq
      FROM backstop.rebuild_log l WHERE l.kind IN ('finding_acknowledged', 'finding_resolved')
     ORDER BY (l.detail ->> 'finding_id')::uuid, l.seq DESC
), first AS (
    SELECT DISTINCT ON (finding_id) * FROM f ORDER BY finding_id, seq
), latest AS (
    SELECT DISTINCT ON (finding_id) * FROM f ORDER BY finding_id, seq DESC
)
SELECT first.finding_id, first.detail ->> 'kind' AS kind, latest.detail ->> 'severity' AS severity,
       first.agent, first.action_id, first.detail -> 'evidence' ->> 'rule' AS rule, latest.detail -> 'evidence' AS detail,
       first.detail ->> 'dedup_key' AS dedup_key, coalesce(st.status, 'open') AS status,
       (SELECT count(*) FROM f c WHERE c.finding_id = first.finding_id)::integer AS count,
       first.actor AS raised_by, first.seq AS raised_seq, first.at AS raised_at,
       greatest(latest.seq, st.seq) AS last_seq, latest.at AS last_at, st.actor AS status_by, st.note AS status_note
  FROM first JOIN latest USING (finding_id) LEFT JOIN st USING (finding_id);

CREATE OR REPLACE VIEW backstop.rebuilt_signals AS
SELECT l.seq, l.detail ->> 'kind' AS kind, l.agent, l.correlation_id, l.action_id, l.detail -> 'detail' AS detail,
       l.actor AS reported_by, l.at
  FROM backstop.rebuild_log l WHERE l.kind = 'signal';

CREATE OR REPLACE VIEW backstop.rebuilt_config_rejections AS
SELECT DISTINCT ON (l.detail ->> 'file', l.detail ->> 'sha256') l.detail ->> 'file' AS file, l.detail ->> 'sha256' AS sha256, l.seq
  FROM backstop.rebuild_log l WHERE l.kind = 'policy_rejected'
 ORDER BY l.detail ->> 'file', l.detail ->> 'sha256', l.seq;

-- Rows that differ between each projection and its rebuild (both directions).
-- After a drop, a projection row from before the cut is compared only when
-- the rebuild still has its key (its events are live or carried); the rest
-- were checked when they were archived.
CREATE OR REPLACE FUNCTION backstop.projection_diffs()
RETURNS TABLE (projection text, side text, row_data jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pair text[];
    -- projection, rebuild, key columns (comma separated), the column saying when the row began
    pairs text[][] := ARRAY[
        ['registry_versions', 'rebuilt_registry_versions', '', ''], ['tools', 'rebuilt_tools', '', ''],
        ['policy_versions', 'rebuilt_policy_versions', '', ''], ['policy_rules', 'rebuilt_policy_rules', '', ''],
        ['active', 'rebuilt_active', '', ''], ['actions', 'rebuilt_actions', 'action_id', 'proposed_at'],
        ['approval_queue', 'rebuilt_approval_queue', '', ''], ['approvals', 'rebuilt_approvals', 'action_id,seq', 'at'],
        ['kill_switches', 'rebuilt_kill_switches', '', ''], ['compensations', 'rebuilt_compensations', 'action_id', 'requested_at'],
        ['findings', 'rebuilt_findings', 'finding_id', 'raised_at'], ['signals', 'rebuilt_signals', 'seq', 'at'],
        ['config_rejections', 'rebuilt_config_rejections', '', ''], ['carried_log', 'rebuilt_carried_log', '', ''],
        ['log_retention', 'rebuilt_log_retention', '', '']];
    v_cut timestamptz := coalesce((SELECT max(r.cut) FROM backstop.log_retention r), '-infinity');
    v_keep text;
BEGIN
    FOREACH pair SLICE 1 IN ARRAY pairs LOOP
        IF pair[4] = '' OR v_cut = '-infinity' THEN
            v_keep := 'true';
        ELSE
            v_keep := format('x.%1$I >= $1 OR EXISTS (SELECT 1 FROM r WHERE r.%1$I < $1 AND (%2$s) = (%3$s))', pair[4],
                             (SELECT string_agg('r.' || quote_ident(k), ', ') FROM unnest(string_to_array(pair[3], ',')) k),
                             (SELECT string_agg('x.' || quote_ident(k), ', ') FROM unnest(string_to_array(pair[3], ',')) k));
        END IF;
        RETURN QUERY EXECUTE format(
            'WITH r AS MATERIALIZED (SELECT * FROM backstop.%2$I),
                  p AS MATERIALIZED (SELECT x.* FROM backstop.%1$I x WHERE %3$s)
             (SELECT %1$L, ''projection only'', to_jsonb(d) FROM (SELECT * FROM p EXCEPT SELECT * FROM r) d LIMIT 20)
             UNION ALL
             (SELECT %1$L, ''rebuild only'', to_jsonb(d) FROM (SELECT * FROM r EXCEPT SELECT * FROM p) d LIMIT 20)',
            pair[1], pair[2], v_keep) USING v_cut;
    END LOOP;
END
$$;

-- The tail (0001), with the window's upper bound on the transaction id
-- spelled out: a row visible in `upto` has a transaction id below its xmax,
-- and saying so turns the txid index scan into a bounded range instead of a
-- scan to the end of the log (the archive reads one seal's window at a time,
-- far behind the head).
CREATE OR REPLACE FUNCTION backstop.tail(after pg_snapshot, upto pg_snapshot, after_txid xid8, after_seq bigint, max_rows integer)
RETURNS SETOF backstop.action_log
LANGUAGE sql STABLE AS $$
    (SELECT l.* FROM backstop.action_log l
      WHERE l.txid >= pg_snapshot_xmax(after)
        AND l.txid < pg_snapshot_xmax(upto)
        AND (l.txid, l.seq) > (after_txid, after_seq)
        AND pg_visible_in_snapshot(l.txid, upto)
      ORDER BY l.txid, l.seq
      LIMIT max_rows)
    UNION ALL
    (SELECT l.* FROM backstop.action_log l
      WHERE l.txid = ANY (ARRAY(SELECT pg_snapshot_xip(after)))
        AND (l.txid, l.seq) > (after_txid, after_seq)
        AND pg_visible_in_snapshot(l.txid, upto)
      ORDER BY l.txid, l.seq
      LIMIT max_rows)
    ORDER BY txid, seq
    LIMIT max_rows
$$;

-- ensure_log_partitions (0001), unchanged but for the lock timeout.
CREATE OR REPLACE FUNCTION backstop.ensure_log_partitions() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp
-- Never make the agents queue: creating a partition locks the default one,
-- and behind a long reader (verify, a cut being prepared) that lock would
-- hold every writer up. Give up after 100 ms; housekeeping calls again.
SET lock_timeout = '100ms'
AS $$
DECLARE
    cfg backstop.log_partitioning%ROWTYPE;
    v_from timestamptz;
    v_to timestamptz;
    v_until timestamptz;
    v_name text;
    v_secs double precision;
    n integer := 0;
BEGIN
    SELECT * INTO cfg FROM backstop.log_partitioning;
    v_until := clock_timestamp() + cfg.width * cfg.ahead;
    SELECT max(p.to_at) INTO v_from FROM backstop.log_partitions p;
    IF v_from IS NOT NULL AND v_from >= v_until THEN
        RETURN 0;
    END IF;
    IF NOT pg_try_advisory_xact_lock(1112757360, 0) THEN
        RETURN 0;
    END IF;
    SELECT max(p.to_at) INTO v_from FROM backstop.log_partitions p;
    IF v_from IS NULL THEN
        v_secs := extract(epoch FROM cfg.width);
        v_from := CASE WHEN cfg.width >= interval '28 days' THEN date_trunc('month', clock_timestamp(), 'UTC')
                       ELSE to_timestamp(floor(extract(epoch FROM clock_timestamp()) / v_secs) * v_secs) END;
    END IF;
    BEGIN
        WHILE v_from < v_until LOOP
            v_to := v_from + cfg.width;
            -- Rows for this range already in the default partition (nothing ran
            -- ensure for a long while): leave them; writes go on regardless.
            IF EXISTS (SELECT 1 FROM backstop.action_log_default d WHERE d.at >= v_from AND d.at < v_to) THEN
                RAISE WARNING 'backstop: log rows for % to % are in the default partition; no partition made for that range', v_from, v_to;
                RETURN n;
            END IF;
            v_name := 'action_log_' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS');
            EXECUTE format('CREATE TABLE backstop.%I PARTITION OF backstop.action_log FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_from, v_to);
            PERFORM backstop._protect_partition(v_name);
            INSERT INTO backstop.log_partitions (name, from_at, to_at) VALUES (v_name, v_from, v_to);
            n := n + 1;
            v_from := v_to;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 0;
    END;
    RETURN n;
END
$$;

-- record_result and approve read the proposal through rebuild_log, so an
-- action still open when its proposal was archived is carried and still works.
CREATE OR REPLACE FUNCTION backstop.record_result(action_id uuid, ok boolean, result jsonb DEFAULT NULL, inverse_params jsonb DEFAULT NULL)
RETURNS TABLE (status text, compensation text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_id uuid := record_result.action_id;
    p_ok boolean := record_result.ok;
    p_result jsonb := record_result.result;
    p_inv jsonb := record_result.inverse_params;
    a record;
    prev record;
    v_inv jsonb;
    v_missing text[];
    v_comp text := 'none';
    v_deadline timestamptz;
    v_kind text;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad('record_result', 'action_id is required');
    END IF;
    IF p_ok IS NULL THEN
        PERFORM backstop._bad('record_result', 'ok is required: true when the tool call succeeded, false when it failed');
    END IF;
    PERFORM backstop._check_json('record_result', 'result', p_result, 65536, true);
    PERFORM backstop._check_json('record_result', 'inverse_params', p_inv, 65536, true);
    SELECT x.*, t.class AS t_class, t.inverse AS t_inverse, t.bindings AS t_bindings,
           t.reversal_window AS t_window, t.condition AS t_condition
      INTO a
      FROM backstop.actions x
      LEFT JOIN backstop.tools t ON t.version = x.registry_version AND t.name = x.tool
     WHERE x.action_id = p_id
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        PERFORM backstop._bad('record_result', format('unknown action_id %s', p_id), 'P0002');
    END IF;
    IF a.status IN ('executed', 'failed') THEN
        SELECT l.kind, l.result INTO prev FROM backstop.rebuild_log l WHERE l.seq = a.executed_seq AND l.at = a.executed_at;
        IF (prev.kind = 'executed') = p_ok AND prev.result IS NOT DISTINCT FROM p_result THEN
            -- A retry of the same report: answer as before, append nothing.
            status := a.status;
            compensation := CASE WHEN a.inverse_missing IS NOT NULL THEN 'unbound: ' || array_to_string(a.inverse_missing, ', ')
                                 WHEN a.inverse_params IS NOT NULL THEN 'staged' ELSE 'none' END;
            RETURN NEXT;
            RETURN;
        END IF;
        PERFORM backstop._bad('record_result', format('action %s already has a different result, recorded at seq %s', p_id, a.executed_seq), '55000');
    END IF;
    IF a.status <> 'allowed' THEN
        PERFORM backstop._bad('record_result', format('action %s was never allowed (it is %s): there is no result to record', p_id, a.status), '55000');
    END IF;

    v_kind := CASE WHEN p_ok THEN 'executed' ELSE 'failed' END;
    IF p_ok AND a.t_class IN ('reversible', 'conditional') THEN
        -- Bind the inverse's parameters from the action's params and result;
        -- what the agent passes explicitly wins.
        -- A field present with a JSON null binds null; an absent field does not bind.
        SELECT coalesce(jsonb_object_agg(b.key, b.val) FILTER (WHERE b.val IS NOT NULL), '{}')
               || coalesce(p_inv, '{}')
          INTO v_inv
          FROM (SELECT j.key,
                       CASE WHEN j.value #>> '{}' LIKE 'params.%' THEN backstop.path_get(l.params, substr(j.value #>> '{}', 8))
                            WHEN j.value #>> '{}' LIKE 'result.%' THEN backstop.path_get(p_result, substr(j.value #>> '{}', 8)) END AS val
                  FROM backstop.rebuild_log l, jsonb_each(a.t_bindings) j
                 -- With the time, the lookup goes to one partition of the log.
                 WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at) b;
        SELECT array_agg(k ORDER BY k) INTO v_missing FROM jsonb_object_keys(a.t_bindings) k WHERE NOT v_inv ? k;
        v_comp := CASE WHEN v_missing IS NULL THEN 'staged' ELSE 'unbound: ' || array_to_string(v_missing, ', ') END;
        IF a.t_window IS NOT NULL THEN
            v_deadline := clock_timestamp() + a.t_window;
        END IF;
    END IF;

    INSERT INTO backstop.action_log AS l
        (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence,
         reasoning, inputs, params, result, policy_version, registry_version)
    VALUES (nextval('backstop.action_log_seq'), clock_timestamp(), pg_current_xact_id(), v_kind, a.agent, a.agent, a.tool, p_id,
            -- inverse_params joins after the strip: a parameter bound to a
            -- JSON null is part of the inverse and must survive in the log.
            CASE WHEN v_comp = 'none' THEN '{}'::jsonb ELSE jsonb_build_object('compensation', jsonb_strip_nulls(jsonb_build_object(
                'inverse_tool', a.t_inverse, 'missing', to_jsonb(v_missing),
                'deadline', v_deadline, 'condition', a.t_condition))
                || CASE WHEN v_inv IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('inverse_params', v_inv) END) END,
            a.correlation_id, a.parent_action, a.amount, NULL, NULL, NULL, NULL, p_result, a.policy_version, a.registry_version)
    RETURNING l.seq, l.at INTO v_seq, v_at;

    UPDATE backstop.actions x
       SET status = v_kind, executed_seq = v_seq, executed_at = v_at,
           inverse_tool = CASE WHEN v_comp <> 'none' THEN a.t_inverse END,
           inverse_params = CASE WHEN v_comp <> 'none' THEN v_inv END,
           inverse_missing = v_missing, comp_deadline = v_deadline,
           comp_condition = CASE WHEN v_comp <> 'none' THEN a.t_condition END,
           updated_seq = v_seq
     WHERE x.action_id = p_id;
    status := v_kind;
    compensation := v_comp;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION backstop.approve(action_id uuid, note text DEFAULT '')
RETURNS TABLE (verdict text, approvals integer, approvals_needed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_id uuid := approve.action_id;
    v_note text := coalesce(approve.note, '');
    v_actor text := backstop.actor();
    a backstop.actions%ROWTYPE;
    v_n integer;
    v_final boolean;
    v_seq bigint;
    v_at timestamptz;
    v_params jsonb;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad('approve', 'action_id is required');
    END IF;
    PERFORM backstop._check_text('approve', 'note', v_note, 2000);
    SELECT * INTO a FROM backstop.actions x WHERE x.action_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM backstop._bad('approve', format('unknown action_id %s', p_id), 'P0002');
    END IF;
    IF a.status <> 'held' THEN
        PERFORM backstop._bad('approve', format('action %s is not waiting for approval (it is %s)', p_id, a.status), '55000');
    END IF;
    IF a.expires_at <= clock_timestamp() THEN
        PERFORM backstop._bad('approve', format('action %s expired at %s without a decision; it can no longer be approved',
                                                p_id, to_char(a.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')), '55000');
    END IF;
    IF v_actor = a.agent THEN
        PERFORM backstop._bad('approve', format('%s proposed action %s and cannot approve it', v_actor, p_id), '42501');
    END IF;
    IF EXISTS (SELECT 1 FROM backstop.approvals p WHERE p.action_id = p_id AND p.approver = v_actor AND p.decision = 'approved') THEN
        PERFORM backstop._bad('approve', format('%s already approved action %s; it needs a second, different approver', v_actor, p_id), '55000');
    END IF;
    v_n := a.approvals + 1;
    v_final := v_n >= a.approvals_needed;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('approved', v_actor, a.agent, a.tool, p_id,
        jsonb_build_object('note', v_note, 'approvals', v_n, 'approvals_needed', a.approvals_needed, 'final', v_final),
        a.correlation_id, a.parent_action, a.amount, NULL, NULL, NULL, NULL, NULL, a.policy_version, a.registry_version) l;
    INSERT INTO backstop.approvals (action_id, approver, decision, note, seq, at)
    VALUES (p_id, v_actor, 'approved', v_note, v_seq, v_at);
    IF v_final THEN
        UPDATE backstop.actions x SET status = 'allowed', approvals = v_n, decided_seq = v_seq, updated_seq = v_seq
         WHERE x.action_id = p_id;
        DELETE FROM backstop.approval_queue q WHERE q.action_id = p_id;
        SELECT l.params INTO v_params FROM backstop.rebuild_log l WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at;
        PERFORM backstop._remember(a.policy_version,
            (SELECT p.param_memory FROM backstop.policy_versions p WHERE p.version = a.policy_version),
            a.agent, v_params, a.amount, v_seq);
    ELSE
        UPDATE backstop.actions x SET approvals = v_n, updated_seq = v_seq WHERE x.action_id = p_id;
        UPDATE backstop.approval_queue q SET approvals = v_n WHERE q.action_id = p_id;
    END IF;
    PERFORM pg_notify('backstop_decisions', p_id::text);
    RETURN QUERY SELECT CASE WHEN v_final THEN 'allow' ELSE 'hold' END, v_n, a.approvals_needed;
END
$$;

-- What dropping the partitions older than `before` would take: the cut (the
-- newest partition end at or before it), the partitions, their rows, the
-- seals an archive must hold (from the one after the last archived seal to
-- the newest holding a row from before the cut), rows not sealed yet, and
-- rows from before the cut sitting in the default partition.
CREATE FUNCTION backstop.retention_plan(before timestamptz)
RETURNS TABLE (cut timestamptz, partitions text[], rows_before bigint, first_seal bigint, last_seal bigint,
               unsealed bigint, in_default bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    v_maxtx xid8;
    v_upto pg_snapshot;
BEGIN
    IF retention_plan.before IS NULL OR NOT isfinite(retention_plan.before) THEN
        PERFORM backstop._bad('retention_plan', 'before must be a finite time');
    END IF;
    SELECT max(p.to_at), array_agg(p.name ORDER BY p.from_at) INTO cut, partitions
      FROM backstop.log_partitions p WHERE p.to_at <= least(retention_plan.before, clock_timestamp());
    first_seal := coalesce((SELECT max(r.last_seal) FROM backstop.log_retention r), 0) + 1;
    IF cut IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT count(*), max(l.txid) INTO rows_before, v_maxtx FROM backstop.action_log l WHERE l.at < cut;
    SELECT count(*) INTO in_default FROM backstop.action_log_default d WHERE d.at < cut;
    -- Every row visible in the newest complete seal's snapshot is sealed.
    SELECT s.upto_snap INTO v_upto FROM backstop.seals s WHERE s.complete ORDER BY s.seal_no DESC LIMIT 1;
    SELECT count(*) INTO unsealed FROM backstop.action_log l
     WHERE l.at < cut AND (v_upto IS NULL OR NOT pg_visible_in_snapshot(l.txid, v_upto));
    -- The newest seal holding a row from before the cut. A seal's window
    -- holds no transaction below its starting snapshot's xmin, so seals that
    -- start above every such row's transaction are skipped unread.
    SELECT max(s.seal_no) INTO last_seal FROM backstop.seals s
     WHERE s.seal_no >= first_seal AND pg_snapshot_xmin(s.after_snap) <= v_maxtx
       AND EXISTS (SELECT 1 FROM unnest(s.seqs) q(seq) JOIN backstop.action_log l ON l.seq = q.seq AND l.at < cut);
    last_seal := coalesce(last_seal, first_seal - 1);
    RETURN NEXT;
END
$$;

-- The chain hash after seal n (the genesis hash for 0).
CREATE FUNCTION backstop._chain_hash_at(n bigint) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN n = 0 THEN backstop.seal_genesis()
                ELSE (SELECT s.hash FROM backstop.seals s WHERE s.seal_no = n) END
$$;

-- A cut is made in two transactions, so that the log is locked only for
-- the drop itself.
--
-- prepare_cut (runs beside the agents): with the partitions ending by `cut`
-- locked against writes, check that every row in them is sealed within
-- seals first_seal..last_seal (the archive's range) or an earlier archive,
-- that seal last_seal has the archive's head hash, that no row from before
-- the cut is in the default partition, and that every projection equals
-- its rebuild; then carry forward what current state still needs. Rows
-- from before the cut cannot appear afterwards: `at` is the server's clock
-- at insert, and only the owner can write the log directly.
CREATE FUNCTION backstop.prepare_cut(cut timestamptz, first_seal bigint, last_seal bigint, head_hash bytea)
RETURNS TABLE (rows_before bigint, carried integer)
LANGUAGE plpgsql
-- Carried rows keep their real confidence exactly through JSON.
SET extra_float_digits = 3
AS $$
#variable_conflict use_column
DECLARE
    fn text := 'prepare_cut';
    p_cut timestamptz := prepare_cut.cut;
    v_parts text[];
    v_part text;
    pl record;
    v_prev timestamptz;
    v_hash bytea;
    v_actor text := backstop.actor();
    r record;
    e backstop.action_log;
    n integer := 0;
BEGIN
    IF NOT backstop._trusted() THEN
        PERFORM backstop._bad(fn, 'only the schema''s owner may cut the log (through backstop archive)', '42501');
    END IF;
    IF p_cut IS NULL OR NOT isfinite(p_cut) OR p_cut > clock_timestamp() THEN
        PERFORM backstop._bad(fn, format('cut must be a past time; got %s', coalesce(p_cut::text, 'null')));
    END IF;
    IF prepare_cut.first_seal IS NULL OR prepare_cut.last_seal IS NULL OR prepare_cut.first_seal < 1
       OR prepare_cut.last_seal < prepare_cut.first_seal - 1 THEN
        PERFORM backstop._bad(fn, 'first_seal and last_seal must give the archived range of seals');
    END IF;
    IF prepare_cut.head_hash IS NULL OR length(prepare_cut.head_hash) <> 32 THEN
        PERFORM backstop._bad(fn, 'head_hash must be the 32-byte hash of the archive''s last seal');
    END IF;
    IF NOT pg_try_advisory_xact_lock(1112757362, 0) THEN
        PERFORM backstop._bad(fn, 'another cut of the log is running', '55P03');
    END IF;
    SELECT max(x.cut) INTO v_prev FROM backstop.log_retention x;
    IF v_prev IS NOT NULL AND p_cut <= v_prev THEN
        PERFORM backstop._bad(fn, format('the log was already cut at %s', v_prev), '55000');
    END IF;
    SELECT array_agg(p.name ORDER BY p.from_at) INTO v_parts FROM backstop.log_partitions p WHERE p.to_at <= p_cut;
    IF v_parts IS NULL OR NOT EXISTS (SELECT 1 FROM backstop.log_partitions p WHERE p.to_at = p_cut) THEN
        PERFORM backstop._bad(fn, format('%s is not the end of a partition of the log', p_cut));
    END IF;
    -- A writer still in flight there finishes first (its row is then found unsealed).
    FOREACH v_part IN ARRAY v_parts LOOP
        EXECUTE format('LOCK TABLE backstop.%I IN SHARE MODE', v_part);
    END LOOP;
    SELECT * INTO pl FROM backstop.retention_plan(p_cut);
    IF pl.in_default > 0 THEN
        PERFORM backstop._bad(fn, format('%s row(s) from before the cut are in the default partition; nothing is dropped', pl.in_default), '55000');
    END IF;
    IF pl.unsealed > 0 THEN
        PERFORM backstop._bad(fn, format('%s row(s) from before the cut are not sealed yet: seal and archive again', pl.unsealed), '55000');
    END IF;
    IF pl.first_seal <> prepare_cut.first_seal OR pl.last_seal <> prepare_cut.last_seal THEN
        PERFORM backstop._bad(fn, format('the rows before the cut need seals %s to %s archived, but the archive holds %s to %s: export again',
                                         pl.first_seal, pl.last_seal, prepare_cut.first_seal, prepare_cut.last_seal), '55000');
    END IF;
    v_hash := backstop._chain_hash_at(prepare_cut.last_seal);
    IF v_hash IS DISTINCT FROM prepare_cut.head_hash THEN
        PERFORM backstop._bad(fn, format('seal %s does not have the archive''s head hash: the archive and the live chain differ',
                                         prepare_cut.last_seal), '55000');
    END IF;
    IF EXISTS (SELECT 1 FROM backstop.projection_diffs()) THEN
        PERFORM backstop._bad(fn, 'the projections disagree with the log (see backstop verify); nothing is dropped until they agree', '55000');
    END IF;

    -- Carry forward what current state still needs (see the top of this
    -- file), unless a carrier after the cut holds it already (a prepare
    -- tried before). Carrying more than needed is harmless: a need never
    -- arises later from a row before the cut.
    FOR r IN
        SELECT z.e FROM backstop.action_log l
         CROSS JOIN LATERAL (SELECT CASE WHEN l.kind = 'carried'
                                         THEN jsonb_populate_record(NULL::backstop.action_log, l.detail -> 'row')
                                         ELSE l END AS e) z
         WHERE l.at < p_cut
           -- The kinds that can be needed (a carrier's row is one of them):
           -- the bulk of the log is ruled out before any row is rebuilt.
           AND l.kind IN ('carried', 'registry_loaded', 'policy_loaded', 'log_archived', 'paused', 'resumed',
                          'policy_rejected', 'allowed', 'held', 'blocked', 'approved', 'rejected', 'expired',
                          'compensation_requested', 'compensation_started', 'compensation_retry', 'compensated',
                          'compensation_failed', 'finding', 'finding_acknowledged', 'finding_resolved')
           AND ((z.e).kind IN ('registry_loaded', 'policy_loaded', 'log_archived')
             OR ((z.e).kind IN ('paused', 'resumed')
                 AND EXISTS (SELECT 1 FROM backstop.kill_switches k WHERE k.changed_seq = (z.e).seq))
             OR ((z.e).kind = 'policy_rejected'
                 AND EXISTS (SELECT 1 FROM backstop.config_rejections c WHERE c.seq = (z.e).seq))
             OR ((z.e).kind IN ('allowed', 'held', 'blocked', 'approved', 'rejected', 'expired')
                 AND EXISTS (SELECT 1 FROM backstop.actions a WHERE a.action_id = (z.e).action_id AND a.status IN ('allowed', 'held')))
             OR ((z.e).kind IN ('compensation_requested', 'compensation_started', 'compensation_retry', 'compensated', 'compensation_failed')
                 AND EXISTS (SELECT 1 FROM backstop.compensations c WHERE c.action_id = (z.e).action_id AND c.finished_seq IS NULL))
             OR ((z.e).kind IN ('finding', 'finding_acknowledged', 'finding_resolved')
                 AND EXISTS (SELECT 1 FROM backstop.findings f
                              WHERE f.finding_id = ((z.e).detail ->> 'finding_id')::uuid AND f.status <> 'resolved')))
           AND NOT EXISTS (SELECT 1 FROM backstop.action_log k
                            WHERE k.kind = 'carried' AND (k.detail -> 'row' ->> 'seq')::bigint = (z.e).seq AND k.at >= p_cut)
         ORDER BY (z.e).seq
    LOOP
        e := r.e;
        PERFORM backstop._append('carried', v_actor, e.agent, e.tool, e.action_id,
            jsonb_build_object('row', to_jsonb(e) || jsonb_build_object('confidence', e.confidence::text),
                               'digest', encode(backstop.row_digest(e), 'hex'), 'cut', p_cut),
            e.correlation_id);
        INSERT INTO backstop.carried_log SELECT e.* ON CONFLICT ON CONSTRAINT carried_log_pkey DO NOTHING;
        n := n + 1;
    END LOOP;
    INSERT INTO backstop.cut_prepared (cut, rows, first_seal, last_seal, carried, prepared_by, prepared_at)
    VALUES (p_cut, pl.rows_before, prepare_cut.first_seal, prepare_cut.last_seal, n, v_actor, clock_timestamp())
    ON CONFLICT ON CONSTRAINT cut_prepared_pkey DO UPDATE
       SET rows = EXCLUDED.rows, first_seal = EXCLUDED.first_seal, last_seal = EXCLUDED.last_seal,
           carried = backstop.cut_prepared.carried + EXCLUDED.carried, prepared_by = EXCLUDED.prepared_by,
           prepared_at = EXCLUDED.prepared_at;
    rows_before := pl.rows_before;
    carried := n;
    RETURN NEXT;
END
$$;

-- drop_archived_partitions: the second transaction. It takes the log's
-- exclusive lock first (waiting at most 250 ms for transactions in flight,
-- while new writers queue behind it; backstop archive tries again), so it
-- never holds a weaker lock on the
-- log it would have to upgrade, and does only short work under it: record
-- the drop in the log, drop the partitions, forget the carried rows no
-- carrier holds any more.
CREATE FUNCTION backstop.drop_archived_partitions(cut timestamptz, first_seal bigint, last_seal bigint,
    head_hash bytea, manifest_sha256 text, location text, reason text)
RETURNS TABLE (partitions text[], rows_dropped bigint, carried integer, seq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fn text := 'drop_archived_partitions';
    p_cut timestamptz := drop_archived_partitions.cut;
    v_parts text[];
    v_part text;
    prep backstop.cut_prepared%ROWTYPE;
    v_hash bytea;
    v_actor text := backstop.actor();
    v_seq bigint;
    v_at timestamptz;
BEGIN
    IF NOT backstop._trusted() THEN
        PERFORM backstop._bad(fn, 'only the schema''s owner may drop log partitions (through backstop archive)', '42501');
    END IF;
    IF p_cut IS NULL OR NOT isfinite(p_cut) THEN
        PERFORM backstop._bad(fn, format('cut must be a past time; got %s', coalesce(p_cut::text, 'null')));
    END IF;
    IF drop_archived_partitions.manifest_sha256 IS NULL OR drop_archived_partitions.manifest_sha256 !~ '^[0-9a-f]{64}$' THEN
        PERFORM backstop._bad(fn, 'manifest_sha256 must be 64 lowercase hex digits');
    END IF;
    PERFORM backstop._check_reason(fn, 'location', drop_archived_partitions.location);
    PERFORM backstop._check_reason(fn, 'reason', drop_archived_partitions.reason);
    IF NOT pg_try_advisory_xact_lock(1112757362, 0) THEN
        PERFORM backstop._bad(fn, 'another cut of the log is running', '55P03');
    END IF;
    SELECT * INTO prep FROM backstop.cut_prepared x WHERE x.cut = p_cut;
    IF NOT FOUND OR prep.first_seal IS DISTINCT FROM drop_archived_partitions.first_seal
       OR prep.last_seal IS DISTINCT FROM drop_archived_partitions.last_seal THEN
        PERFORM backstop._bad(fn, 'this cut was not prepared for this archive (prepare_cut first)', '55000');
    END IF;
    v_hash := backstop._chain_hash_at(prep.last_seal);
    IF v_hash IS DISTINCT FROM drop_archived_partitions.head_hash THEN
        PERFORM backstop._bad(fn, format('seal %s does not have the archive''s head hash: the archive and the live chain differ',
                                         prep.last_seal), '55000');
    END IF;
    PERFORM set_config('lock_timeout', '250ms', true);
    LOCK TABLE backstop.action_log IN ACCESS EXCLUSIVE MODE;
    SELECT array_agg(p.name ORDER BY p.from_at) INTO v_parts FROM backstop.log_partitions p WHERE p.to_at <= p_cut;

    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('log_archived', v_actor, NULL, NULL, NULL,
        jsonb_build_object('cut', p_cut, 'partitions', to_jsonb(v_parts), 'rows', prep.rows,
                           'first_seal', prep.first_seal, 'last_seal', prep.last_seal,
                           'head_hash', encode(drop_archived_partitions.head_hash, 'hex'),
                           'manifest_sha256', drop_archived_partitions.manifest_sha256,
                           'location', drop_archived_partitions.location, 'carried', prep.carried,
                           'reason', drop_archived_partitions.reason)) l;
    INSERT INTO backstop.log_retention (cut, partitions, rows, first_seal, last_seal, head_hash, manifest_sha256,
                                        location, carried, reason, archived_by, seq, at)
    VALUES (p_cut, v_parts, prep.rows, prep.first_seal, prep.last_seal, drop_archived_partitions.head_hash,
            drop_archived_partitions.manifest_sha256, drop_archived_partitions.location, prep.carried,
            drop_archived_partitions.reason, v_actor, v_seq, v_at);
    FOREACH v_part IN ARRAY v_parts LOOP
        EXECUTE format('DROP TABLE backstop.%I', v_part);
    END LOOP;
    DELETE FROM backstop.log_partitions p WHERE p.name = ANY (v_parts);
    DELETE FROM backstop.carried_log c
     WHERE NOT EXISTS (SELECT 1 FROM backstop.action_log k
                        WHERE k.kind = 'carried' AND (k.detail -> 'row' ->> 'seq')::bigint = c.seq);
    DELETE FROM backstop.cut_prepared x WHERE x.cut <= p_cut;
    partitions := v_parts;
    rows_dropped := prep.rows;
    carried := prep.carried;
    seq := v_seq;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION backstop.retention_plan(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION backstop._chain_hash_at(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION backstop.prepare_cut(timestamptz, bigint, bigint, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION backstop.drop_archived_partitions(timestamptz, bigint, bigint, bytea, text, text, text) FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION backstop.retention_plan(timestamptz) TO %I',
                   (SELECT role_name FROM backstop.duties WHERE duty = 'viewer'));
END
$grant$;

RESET ROLE;
