-- The rebuild: every projection recomputed from the log, so `backstop verify`
-- can prove the projections are what the log says.

-- The log as the rebuild sees it: live events and carried originals (a row
-- carried by a cut not dropped yet is still live, and counted once).
CREATE VIEW backstop.rebuild_log AS
SELECT l.* FROM backstop.action_log l WHERE l.kind <> 'carried'
UNION ALL
SELECT c.* FROM backstop.carried_log c
 WHERE NOT EXISTS (SELECT 1 FROM backstop.action_log o WHERE o.seq = c.seq AND o.at = c.at AND o.kind <> 'carried');
COMMENT ON VIEW backstop.rebuild_log IS 'The log as the rebuild reads it: live events plus carried originals. Readers: viewer.';

-- Each projection rebuilt from the log alone (plus the carried rows).
CREATE VIEW backstop.rebuilt_registry_versions AS
SELECT (l.detail ->> 'version')::bigint AS version, l.detail ->> 'sha256' AS sha256, l.detail ->> 'source' AS source,
       l.actor AS loaded_by, l.at AS loaded_at, l.seq AS loaded_seq, l.detail -> 'doc' AS doc, l.detail -> 'summary' AS summary
  FROM backstop.rebuild_log l WHERE l.kind = 'registry_loaded';
COMMENT ON VIEW backstop.rebuilt_registry_versions IS 'backstop.registry_versions rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_tools AS
SELECT t.* FROM backstop.rebuilt_registry_versions v, LATERAL backstop.tools_of(v.version, v.doc) t;
COMMENT ON VIEW backstop.rebuilt_tools IS 'backstop.tools rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_policy_versions AS
SELECT (l.detail ->> 'version')::bigint AS version, l.detail ->> 'sha256' AS sha256, l.detail ->> 'source' AS source,
       l.actor AS loaded_by, l.at AS loaded_at, l.seq AS loaded_seq, l.detail -> 'doc' AS doc, l.detail -> 'summary' AS summary,
       make_interval(secs => coalesce((l.detail -> 'doc' -> 'settings' ->> 'hold_expiry_seconds')::double precision, 3600)) AS hold_expiry,
       coalesce(l.detail -> 'doc' -> 'settings' ->> 'expiry_effect', 'block') AS expiry_effect,
       (l.detail -> 'doc' -> 'settings' ->> 'four_eyes_above')::numeric AS four_eyes_above,
       EXISTS (SELECT 1 FROM jsonb_array_elements(l.detail -> 'doc' -> 'rules') r
                WHERE r ->> 'kind' IN ('new_counterparty', 'changed_value')) AS param_memory,
       EXISTS (SELECT 1 FROM jsonb_array_elements(l.detail -> 'doc' -> 'rules') r WHERE r ->> 'kind' = 'cumulative') AS has_cumulative,
       EXISTS (SELECT 1 FROM jsonb_array_elements(l.detail -> 'doc' -> 'rules') r
                WHERE r ->> 'kind' = 'cumulative' AND r ->> 'per' = 'entity') AS entity_cumulative
  FROM backstop.rebuild_log l WHERE l.kind = 'policy_loaded';
COMMENT ON VIEW backstop.rebuilt_policy_versions IS 'backstop.policy_versions rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_policy_rules AS
SELECT r.* FROM backstop.rebuilt_policy_versions v, LATERAL backstop.rules_of(v.version, v.doc) r;
COMMENT ON VIEW backstop.rebuilt_policy_rules IS 'backstop.policy_rules rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_active AS
SELECT true AS id,
       (SELECT max(version) FROM backstop.rebuilt_registry_versions) AS registry_version,
       (SELECT max(version) FROM backstop.rebuilt_policy_versions) AS policy_version;
COMMENT ON VIEW backstop.rebuilt_active IS 'backstop.active rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_actions AS
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
           -- The result's own fields, taken here rather than by joining the
           -- log again on executed_seq: the planner cannot count this
           -- grouping's rows (it guesses 200), and on a big log it joined
           -- each of them to every log row in a nested loop (hours).
           (array_agg(l.kind ORDER BY l.seq DESC) FILTER (WHERE l.kind IN ('executed', 'failed')))[1] AS executed_kind,
           (array_agg(l.at ORDER BY l.seq DESC) FILTER (WHERE l.kind IN ('executed', 'failed')))[1] AS executed_at,
           (array_agg(l.detail -> 'compensation' ORDER BY l.seq DESC) FILTER (WHERE l.kind IN ('executed', 'failed')))[1] AS comp,
           max(l.seq) FILTER (WHERE l.kind IN ('approved', 'rejected', 'expired', 'executed', 'failed')) AS last_seq
      FROM backstop.rebuild_log l
     WHERE l.action_id IS NOT NULL AND l.kind IN ('approved', 'rejected', 'expired', 'executed', 'failed')
     GROUP BY l.action_id
), tb AS MATERIALIZED (
    -- Each registry version's tools read from its document once, not once an action.
    SELECT t.version, t.name, t.bindings FROM backstop.rebuilt_tools t WHERE t.bindings <> '{}'
)
SELECT p.action_id, p.agent, p.tool, p.detail ->> 'class' AS class, p.amount, p.confidence,
       (p.detail ->> 'cost_to_reverse')::numeric AS cost_to_reverse, p.correlation_id, p.parent_action,
       p.detail ->> 'idempotency_key' AS idempotency_key, p.detail ->> 'entity' AS entity,
       p.detail ->> 'verdict' AS verdict, p.detail ->> 'reason' AS reason, p.detail ->> 'rule' AS rule,
       CASE WHEN ev.executed_kind IS NOT NULL THEN ev.executed_kind
            WHEN ev.rejected_seq IS NOT NULL THEN 'rejected'
            WHEN ev.expired_seq IS NOT NULL THEN CASE WHEN p.detail ->> 'expiry_effect' = 'allow' THEN 'allowed' ELSE 'expired' END
            WHEN ev.approved_seq IS NOT NULL THEN 'allowed'
            ELSE p.kind END AS status,
       coalesce((p.detail ->> 'approvals_needed')::integer, 0) AS approvals_needed,
       coalesce(ev.approvals, 0)::integer AS approvals,
       (p.detail ->> 'expires_at')::timestamptz AS expires_at, p.detail ->> 'expiry_effect' AS expiry_effect,
       p.seq AS proposed_seq, p.at AS proposed_at,
       coalesce(ev.rejected_seq, ev.expired_seq, ev.approved_seq) AS decided_seq,
       ev.executed_seq, ev.executed_at,
       ev.comp ->> 'inverse_tool' AS inverse_tool,
       ev.comp -> 'inverse_params' AS inverse_params,
       (SELECT array_agg(m ORDER BY m) FROM jsonb_array_elements_text(ev.comp -> 'missing') m) AS inverse_missing,
       (ev.comp ->> 'deadline')::timestamptz AS comp_deadline,
       ev.comp ->> 'condition' AS comp_condition,
       p.policy_version, p.registry_version,
       greatest(p.seq, ev.last_seq) AS updated_seq,
       (SELECT array_agg(d::uuid ORDER BY d) FROM jsonb_array_elements_text(p.detail -> 'depends_on') d) AS depends_on,
       -- What propose() binds from the params for the inverse: the registry
       -- version the action was decided under says how.
       CASE WHEN p.detail ->> 'class' IN ('reversible', 'conditional') THEN
           (SELECT jsonb_object_agg(j.key, backstop.path_get(p.params, substr(j.value #>> '{}', 8)))
              FROM jsonb_each(tb.bindings) j
             WHERE j.value #>> '{}' LIKE 'params.%'
               AND backstop.path_get(p.params, substr(j.value #>> '{}', 8)) IS NOT NULL) END AS bound_params
  FROM p
  LEFT JOIN ev ON ev.action_id = p.action_id
  LEFT JOIN tb ON tb.version = p.registry_version AND tb.name = p.tool;
COMMENT ON VIEW backstop.rebuilt_actions IS 'backstop.actions rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_approval_queue AS
SELECT a.action_id, a.agent, a.tool, a.amount, a.rule, a.reason, a.approvals_needed, a.approvals,
       a.proposed_at AS held_at, a.expires_at, a.proposed_seq
  FROM backstop.rebuilt_actions a WHERE a.status = 'held';
COMMENT ON VIEW backstop.rebuilt_approval_queue IS 'backstop.approval_queue rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_approvals AS
SELECT l.action_id, l.actor AS approver, l.kind AS decision, coalesce(l.detail ->> 'note', '') AS note, l.seq, l.at
  FROM backstop.rebuild_log l WHERE l.kind IN ('approved', 'rejected');
COMMENT ON VIEW backstop.rebuilt_approvals IS 'backstop.approvals rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_kill_switches AS
SELECT DISTINCT ON (l.detail ->> 'scope', l.detail ->> 'target')
       l.detail ->> 'scope' AS scope, l.detail ->> 'target' AS target, l.kind = 'paused' AS paused,
       l.detail ->> 'reason' AS reason, l.actor AS changed_by, l.seq AS changed_seq, l.at AS changed_at
  FROM backstop.rebuild_log l WHERE l.kind IN ('paused', 'resumed')
 ORDER BY l.detail ->> 'scope', l.detail ->> 'target', l.seq DESC;
COMMENT ON VIEW backstop.rebuilt_kill_switches IS 'backstop.kill_switches rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_compensations AS
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
            (SELECT coalesce(s.detail ->> 'worker', s.actor) FROM backstop.rebuild_log s
              WHERE s.action_id = req.action_id AND s.kind = 'compensation_started' AND s.seq <= last.seq
              ORDER BY s.seq DESC LIMIT 1) END AS worker,
       CASE WHEN last.kind = 'compensation_started' THEN (last.detail ->> 'lease_until')::timestamptz END AS lease_until,
       CASE WHEN last.kind IN ('compensated', 'compensation_failed') THEN last.seq END AS finished_seq,
       CASE WHEN last.kind IN ('compensated', 'compensation_failed') THEN last.at END AS finished_at,
       CASE WHEN last.kind IN ('compensation_retry', 'compensated', 'compensation_failed') THEN last.detail -> 'result' END AS last_detail,
       coalesce((SELECT array_agg(w::uuid) FROM jsonb_array_elements_text(req.detail -> 'wait_for') w), '{}') AS wait_for
  FROM req JOIN last ON last.action_id = req.action_id
  LEFT JOIN started ON started.action_id = req.action_id;
COMMENT ON VIEW backstop.rebuilt_compensations IS 'backstop.compensations rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_findings AS
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
COMMENT ON VIEW backstop.rebuilt_findings IS 'backstop.findings rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_signals AS
SELECT l.seq, l.detail ->> 'kind' AS kind, l.agent, l.correlation_id, l.action_id, l.detail -> 'detail' AS detail,
       l.actor AS reported_by, l.at
  FROM backstop.rebuild_log l WHERE l.kind = 'signal';
COMMENT ON VIEW backstop.rebuilt_signals IS 'backstop.signals rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_config_rejections AS
SELECT DISTINCT ON (l.detail ->> 'file', l.detail ->> 'sha256') l.detail ->> 'file' AS file, l.detail ->> 'sha256' AS sha256, l.seq
  FROM backstop.rebuild_log l WHERE l.kind = 'policy_rejected'
 ORDER BY l.detail ->> 'file', l.detail ->> 'sha256', l.seq;
COMMENT ON VIEW backstop.rebuilt_config_rejections IS 'backstop.config_rejections rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_carried_log AS
SELECT DISTINCT ON (r.seq) r.*
  FROM backstop.action_log l, jsonb_populate_record(NULL::backstop.action_log, l.detail -> 'row') r
 WHERE l.kind = 'carried'
 ORDER BY r.seq;
COMMENT ON VIEW backstop.rebuilt_carried_log IS 'backstop.carried_log rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

CREATE VIEW backstop.rebuilt_log_retention AS
SELECT (l.detail ->> 'cut')::timestamptz AS cut,
       ARRAY(SELECT jsonb_array_elements_text(l.detail -> 'partitions')) AS partitions,
       (l.detail ->> 'rows')::bigint AS rows, (l.detail ->> 'first_seal')::bigint AS first_seal,
       (l.detail ->> 'last_seal')::bigint AS last_seal, decode(l.detail ->> 'head_hash', 'hex') AS head_hash,
       l.detail ->> 'manifest_sha256' AS manifest_sha256, l.detail ->> 'location' AS location,
       (l.detail ->> 'carried')::integer AS carried, l.detail ->> 'reason' AS reason,
       l.actor AS archived_by, l.seq, l.at
  FROM backstop.rebuild_log l WHERE l.kind = 'log_archived';
COMMENT ON VIEW backstop.rebuilt_log_retention IS 'backstop.log_retention rebuilt from the log alone; verify compares the two (projection_diffs). Readers: viewer.';

-- Rows that differ between each projection and its rebuild (both directions).
-- After a drop, a projection row from before the cut is compared only when
-- the rebuild still has its key (its events are live or carried); the rest
-- were checked when they were archived.
--
-- With `upto` (a cut being prepared), only what a cut there takes out of
-- later comparisons: rows of the keyed projections that began before it. The
-- others (registry, policy, kill switches, the queue, carried rows, cuts)
-- are compared whole by every verify, whatever was cut. Reading the rebuild
-- of the keyed projections still reads their kinds of events across the
-- whole log (a row's later events can lie past the cut).
CREATE FUNCTION backstop.projection_diffs(upto timestamptz DEFAULT NULL)
RETURNS TABLE (projection text, side text, row_data jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
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
    v_upto text;
BEGIN
    FOREACH pair SLICE 1 IN ARRAY pairs LOOP
        CONTINUE WHEN upto IS NOT NULL AND pair[4] = '';
        IF pair[4] = '' OR v_cut = '-infinity' THEN
            v_keep := 'true';
        ELSE
            v_keep := format('x.%1$I >= $1 OR EXISTS (SELECT 1 FROM r WHERE r.%1$I < $1 AND (%2$s) = (%3$s))', pair[4],
                             (SELECT string_agg('r.' || quote_ident(k), ', ') FROM unnest(string_to_array(pair[3], ',')) k),
                             (SELECT string_agg('x.' || quote_ident(k), ', ') FROM unnest(string_to_array(pair[3], ',')) k));
        END IF;
        -- The bound is written into the views' own columns, so the
        -- planner prunes the log's partitions after the cut.
        v_upto := CASE WHEN upto IS NULL THEN 'true' ELSE format('x.%I < $2', pair[4]) END;
        RETURN QUERY EXECUTE format(
            'WITH r AS MATERIALIZED (SELECT x.* FROM backstop.%2$I x WHERE %4$s),
                  p AS MATERIALIZED (SELECT x.* FROM backstop.%1$I x WHERE (%3$s) AND %4$s)
             (SELECT %1$L, ''projection only'', to_jsonb(d) FROM (SELECT * FROM p EXCEPT SELECT * FROM r) d LIMIT 20)
             UNION ALL
             (SELECT %1$L, ''rebuild only'', to_jsonb(d) FROM (SELECT * FROM r EXCEPT SELECT * FROM p) d LIMIT 20)',
            pair[1], pair[2], v_keep, v_upto)
            USING v_cut, upto;
    END LOOP;
END
$$;

SELECT backstop._grant('projection_diffs', 'viewer');
COMMENT ON FUNCTION backstop.projection_diffs IS 'Rows where a projection differs from its rebuild from the log (empty when they agree); with upto, only the rows of the keyed projections (actions, approvals, compensations, findings, signals) that began before it, which a retention cut there takes out of later comparisons. Callers: viewer (verify). Returns (projection, side, row_data).';
