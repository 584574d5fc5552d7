-- Results and staging: an allowed action's outcome, and for a reversible or
-- conditional tool its compensation, staged in the same transaction.
--
-- What the inverse binds from the action's params was taken when it was
-- proposed (actions.bound_params): a result reads the actions row and the
-- registry, never the log, so neither the log's size nor its count of
-- partitions costs it, and an action still open when a retention cut
-- archived its proposal binds as it would have before.
CREATE FUNCTION backstop.record_result(action_id uuid, ok boolean, result jsonb DEFAULT NULL, inverse_params jsonb DEFAULT NULL)
RETURNS TABLE (status text, compensation text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp
-- The proposal's lookup by (seq, at) would otherwise be planned on every
-- call (a custom plan always looks cheaper than one over every partition);
-- the generic plan prunes to the one partition when it starts.
SET plan_cache_mode = force_generic_plan AS $$
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
    v_txt text;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad('record_result', 'action_id is required');
    END IF;
    IF p_ok IS NULL THEN
        PERFORM backstop._bad('record_result', 'ok is required: true when the tool call succeeded, false when it failed');
    END IF;
    -- One cheap test for well-formed input; the checks name what is wrong.
    -- A result may be any JSON value: tools return strings and lists too.
    IF NOT coalesce((p_result IS NULL OR backstop._json_size(p_result) <= 65536)
                AND (p_inv IS NULL OR (jsonb_typeof(p_inv) = 'object' AND backstop._json_size(p_inv) <= 65536)), false) THEN
        PERFORM backstop._check_json('record_result', 'result', p_result, 65536, false);
        PERFORM backstop._check_json('record_result', 'inverse_params', p_inv, 65536, true);
    END IF;
    -- The columns used, not x.*: every column of a wide row costs its
    -- executor start a tuple descriptor entry.
    SELECT x.agent, x.amount, x.class, x.correlation_id, x.executed_at, x.executed_seq, x.inverse_missing,
           x.inverse_params, x.parent_action, x.policy_version, x.registry_version,
           x.status, x.tool, x.bound_params, t.inverse AS t_inverse, t.bindings AS t_bindings,
           t.reversal_window AS t_window, t.condition AS t_condition
      INTO a
      FROM backstop.actions x
      LEFT JOIN backstop.tools t ON t.version = x.registry_version AND t.name = x.tool
     WHERE x.action_id = p_id
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        PERFORM backstop._bad('record_result', format('unknown action_id %s', p_id), 'P0002');
    END IF;
    -- Only the agent that acted reports what happened: a result is what the
    -- compensation is bound from.
    IF a.agent IS DISTINCT FROM session_user AND NOT backstop._may_act_as(a.agent) THEN
        PERFORM backstop._bad('record_result', format('action %s is not one of login %s''s agents', p_id, session_user), '42501');
    END IF;
    IF a.status IN ('executed', 'failed') THEN
        SELECT l.kind, l.result INTO prev FROM backstop.action_log l
         WHERE l.seq = a.executed_seq AND l.at = a.executed_at AND l.kind <> 'carried';
        IF NOT FOUND THEN
            SELECT l.kind, l.result INTO prev FROM backstop.carried_log l WHERE l.seq = a.executed_seq AND l.at = a.executed_at;
        END IF;
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
    -- The action's own class: a tool may be final for some calls (class by a parameter's value).
    IF p_ok AND a.class IN ('reversible', 'conditional') THEN
        -- Bind the inverse's parameters from the action's params (bound at
        -- proposal) and result. A field present with a JSON null binds
        -- null; an absent field does not bind.
        SELECT coalesce(jsonb_object_agg(b.key, b.val) FILTER (WHERE b.val IS NOT NULL), '{}')
          INTO v_inv
          FROM (SELECT j.key,
                       CASE WHEN j.value #>> '{}' LIKE 'params.%' THEN a.bound_params -> j.key
                            WHEN j.value #>> '{}' = 'result' THEN p_result
                            WHEN j.value #>> '{}' LIKE 'result.%' THEN backstop.path_get(p_result, substr(j.value #>> '{}', 8))
                            -- Only the agent knows it (the old address): it passes it in inverse_params.
                            WHEN j.value #>> '{}' LIKE 'agent.%' THEN backstop.path_get(p_inv, substr(j.value #>> '{}', 7)) END AS val
                  FROM jsonb_each(a.t_bindings) j) b;
        -- What the agent passes explicitly may fill a declared parameter that
        -- did not bind, never replace one that did, and never add one.
        IF p_inv IS NOT NULL THEN
            SELECT string_agg(k, ', ' ORDER BY k) INTO v_txt FROM jsonb_object_keys(p_inv) k
             WHERE NOT a.t_bindings ? k
               AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(a.t_bindings) j WHERE j.value = 'agent.' || k);
            IF v_txt IS NOT NULL THEN
                PERFORM backstop._bad('record_result', format('inverse_params may only fill parameters %s declares for %s; %s is not one',
                                                              a.tool, a.t_inverse, v_txt));
            END IF;
            SELECT string_agg(k, ', ' ORDER BY k) INTO v_txt FROM jsonb_object_keys(p_inv) k
             WHERE v_inv ? k AND v_inv -> k IS DISTINCT FROM p_inv -> k;
            IF v_txt IS NOT NULL THEN
                PERFORM backstop._bad('record_result', format('inverse_params may not replace what the registry binds (%s)', v_txt));
            END IF;
            v_inv := coalesce((SELECT jsonb_object_agg(j.key, j.value) FROM jsonb_each(p_inv) j WHERE a.t_bindings ? j.key), '{}')
                     || v_inv;
        END IF;
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
SELECT backstop._grant('record_result', 'agent');
COMMENT ON FUNCTION backstop.record_result IS 'Records the outcome of an allowed action (executed or failed) and, for a reversible or conditional tool, stages its compensation in the same transaction. Callers: agent. Returns (status, compensation: staged, or why not).';

-- record_results' fast path, as _propose_set is propose_batch's: two
-- statements for the batch (lock and check; write). It takes only results
-- of distinct actions that are allowed and not yet recorded, that carry no
-- inverse_params and that the login may report, and leaves every other
-- batch (a retry, a refusal, an agent's inverse parameters) to
-- record_result(), one by one: it returns no row, and writes nothing,
-- unless it takes them all. What it writes is what record_result() would.
CREATE FUNCTION backstop._record_set(results jsonb)
RETURNS TABLE (i integer, status text, compensation text)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp
-- A plan over a set of requests is estimated at thousands of rows (a
-- function's rows are guessed, not known) and would be JIT-compiled on a
-- server with jit on: seconds of compiling for sixteen rows. Planned once
-- a session: planning the statement costs more than running it. Kept for
-- the session, a plan must not scan a table that grows: made at a
-- session's first batch while the tables were small, these plans scanned
-- `actions` whole (three times a batch) until an ANALYZE replanned them.
-- Every read here is by key, so no sequential scan is planned.
SET jit = off SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    v_go boolean;
    v_trusted boolean := backstop._trusted();
    a_i integer[];
    a_id uuid[];
    a_ok boolean[];
    a_result jsonb[];
BEGIN
    -- Locked as record_result() locks each (FOR UPDATE), in one statement.
    WITH req AS (
        SELECT e.k::integer - 1 AS i, e.r ->> 'action_id' AS id_txt, e.r -> 'ok' AS ok_j,
               nullif(e.r -> 'result', 'null'::jsonb) AS result, nullif(e.r -> 'inverse_params', 'null'::jsonb) AS inv,
               -- record_results names an unknown key when this path declines.
               -- (As _propose_set's test: no key left once the known ones are taken away.)
               CASE WHEN jsonb_typeof(e.r) = 'object'
                   THEN e.r - '{action_id,ok,result,inverse_params}'::text[] = '{}'::jsonb
               END AS known_keys
          FROM jsonb_array_elements(results) WITH ORDINALITY e(r, k)
    ), q AS (
        -- A uuid's text, as uuid_out writes it: five groups of hex digits,
        -- 8-4-4-4-12, told by length and where the dashes stand: the same
        -- pattern with counted repeats ({8}) cost PostgreSQL's matcher a
        -- state a character, 12,000 instructions a result more than this.
        SELECT req.*, CASE WHEN req.id_txt ~ '^[0-9a-f]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$'
                                AND length(req.id_txt) = 36 AND substr(req.id_txt, 9, 1) = '-'
                                AND substr(req.id_txt, 14, 1) = '-' AND substr(req.id_txt, 19, 1) = '-'
                                AND substr(req.id_txt, 24, 1) = '-'
                           THEN req.id_txt::uuid END AS id
          FROM req
    ), locked AS (
        SELECT x.action_id, x.agent, x.status
          FROM backstop.actions x
         -- An array: an index probe an id, where IN (SELECT ...) may be
         -- planned as a scan of every action.
         WHERE x.action_id = ANY (ARRAY(SELECT q.id FROM q))
         ORDER BY x.action_id
           FOR UPDATE OF x
    )
    SELECT bool_and(coalesce(
               q.known_keys AND q.id IS NOT NULL AND jsonb_typeof(q.ok_j) = 'boolean' AND q.inv IS NULL
               AND (q.result IS NULL OR pg_column_size(q.result) <= 65536)
               AND l.status = 'allowed'
               AND (l.agent = session_user
                    OR EXISTS (SELECT 1 FROM backstop.agent_logins m WHERE m.login = session_user AND m.agent = l.agent)
                    OR v_trusted), false))
               AND count(DISTINCT q.id) = count(*),
           -- One aggregate node: every array takes the rows in the same order.
           array_agg(q.i), array_agg(q.id), array_agg(CASE WHEN jsonb_typeof(q.ok_j) = 'boolean' THEN (q.ok_j #>> '{}')::boolean END),
           array_agg(q.result)
      INTO v_go, a_i, a_id, a_ok, a_result
      FROM q LEFT JOIN locked l ON l.action_id = q.id;
    IF NOT coalesce(v_go, false) THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH r AS (
        SELECT u.i, u.id, u.ok, u.result FROM unnest(a_i, a_id, a_ok, a_result) AS u(i, id, ok, result)
    ), a AS MATERIALIZED (
        -- What record_result() reads and binds, a row an action.
        SELECT r.i, r.id, r.ok, r.result, x.agent, x.amount, x.class, x.correlation_id, x.parent_action,
               x.policy_version, x.registry_version, x.tool, t.inverse AS t_inverse, t.bindings AS t_bindings,
               t.condition AS t_condition,
               CASE WHEN r.ok THEN 'executed' ELSE 'failed' END AS kind,
               r.ok AND x.class IN ('reversible', 'conditional') AS staging,
               CASE WHEN r.ok AND x.class IN ('reversible', 'conditional') AND t.reversal_window IS NOT NULL
                    THEN clock_timestamp() + t.reversal_window END AS deadline,
               x.bound_params
          FROM r
          JOIN backstop.actions x ON x.action_id = r.id
          LEFT JOIN backstop.tools t ON t.version = x.registry_version AND t.name = x.tool
         -- The ids again as an array, here and in upd: an index probe an
         -- id, where the join alone leaves the planner a hash join.
         WHERE x.action_id = ANY (a_id)
    ), b AS MATERIALIZED (
        SELECT a.*, inv.v AS inv, miss.m AS missing,
               CASE WHEN NOT a.staging THEN 'none'
                    WHEN miss.m IS NULL THEN 'staged' ELSE 'unbound: ' || array_to_string(miss.m, ', ') END AS comp
          FROM a
          LEFT JOIN LATERAL (
              SELECT coalesce(jsonb_object_agg(j.key, j.val) FILTER (WHERE j.val IS NOT NULL), '{}') AS v
                FROM (SELECT j.key,
                             CASE WHEN j.value #>> '{}' LIKE 'params.%' THEN a.bound_params -> j.key
                                  WHEN j.value #>> '{}' = 'result' THEN a.result
                                  WHEN j.value #>> '{}' LIKE 'result.%' THEN backstop.path_get(a.result, substr(j.value #>> '{}', 8))
                                  END AS val
                        FROM jsonb_each(a.t_bindings) j) j) inv ON a.staging
          LEFT JOIN LATERAL (
              SELECT array_agg(k ORDER BY k) AS m
                FROM jsonb_object_keys(a.t_bindings) k
               WHERE NOT inv.v ? k) miss ON a.staging
    ), l AS (
        INSERT INTO backstop.action_log AS l
            (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence,
             reasoning, inputs, params, result, policy_version, registry_version)
        SELECT nextval('backstop.action_log_seq'), clock_timestamp(), pg_current_xact_id(), b.kind, b.agent, b.agent,
               b.tool, b.id,
               CASE WHEN b.comp = 'none' THEN '{}'::jsonb ELSE jsonb_build_object('compensation', jsonb_strip_nulls(jsonb_build_object(
                   'inverse_tool', b.t_inverse, 'missing', to_jsonb(b.missing),
                   'deadline', b.deadline, 'condition', b.t_condition))
                   || CASE WHEN b.inv IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('inverse_params', b.inv) END) END,
               b.correlation_id, b.parent_action, b.amount, NULL, NULL, NULL, NULL, b.result, b.policy_version,
               b.registry_version
          FROM b ORDER BY b.i
        RETURNING l.seq, l.at, l.action_id
    ), upd AS (
        UPDATE backstop.actions x
           SET status = b.kind, executed_seq = l.seq, executed_at = l.at,
               inverse_tool = CASE WHEN b.comp <> 'none' THEN b.t_inverse END,
               inverse_params = CASE WHEN b.comp <> 'none' THEN b.inv END,
               inverse_missing = b.missing, comp_deadline = b.deadline,
               comp_condition = CASE WHEN b.comp <> 'none' THEN b.t_condition END,
               updated_seq = l.seq
          FROM b JOIN l ON l.action_id = b.id
         WHERE x.action_id = b.id AND x.action_id = ANY (a_id)
    )
    SELECT b.i, b.kind, b.comp FROM b ORDER BY b.i;
END
$$;

-- record_result() for many actions in one call and one transaction (the
-- gateway's other half); all or nothing, as propose_batch.
-- A definer only to call _record_set (see propose_batch).
CREATE FUNCTION backstop.record_results(results jsonb)
RETURNS TABLE (i integer, status text, compensation text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jsonb;
    n integer := 0;
    d record;
    v_bad text;
    v_state text;
    v_msg text;
    v_detail text;
    v_hint text;
BEGIN
    IF results IS NULL OR jsonb_typeof(results) <> 'array' OR jsonb_array_length(results) NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'record_results: results must be a JSON array of 1 to 500 objects, each with record_result()''s arguments by name';
    END IF;
    -- From three results, as propose_batch.
    IF jsonb_array_length(results) >= 3 THEN
        RETURN QUERY SELECT f.i, f.status, f.compensation FROM backstop._record_set(results) f;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    SELECT format('result %s: %s', e.k - 1,
                  CASE WHEN jsonb_typeof(e.v) <> 'object' THEN 'not a JSON object'
                       ELSE 'unknown key(s) ' || (SELECT string_agg(quote_ident(key), ', ' ORDER BY key) FROM jsonb_object_keys(e.v) key
                                                  WHERE key <> ALL ('{action_id,ok,result,inverse_params}'))
                       END)
      INTO v_bad
      FROM jsonb_array_elements(results) WITH ORDINALITY e(v, k)
     WHERE jsonb_typeof(e.v) <> 'object'
        OR EXISTS (SELECT 1 FROM jsonb_object_keys(e.v) key WHERE key <> ALL ('{action_id,ok,result,inverse_params}'))
     ORDER BY e.k
     LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'record_results: ' || v_bad;
    END IF;
    BEGIN
        FOR r IN SELECT e.v FROM jsonb_array_elements(results) e(v) LOOP
            SELECT x.status, x.compensation INTO d
              FROM backstop.record_result((r ->> 'action_id')::uuid, (r ->> 'ok')::boolean,
                                          -- A JSON null result is no result, as SQL NULL is.
                                          nullif(r -> 'result', 'null'::jsonb), nullif(r -> 'inverse_params', 'null'::jsonb)) x;
            i := n;
            status := d.status;
            compensation := d.compensation;
            RETURN NEXT;
            n := n + 1;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL,
                                v_hint = PG_EXCEPTION_HINT;
        -- The contract's own refusals carry a message alone.
        IF v_detail = '' AND v_hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = format('record_results: result %s: %s', n, v_msg);
        END IF;
        RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = format('record_results: result %s: %s', n, v_msg),
                              DETAIL = v_detail, HINT = v_hint;
    END;
END
$$;
SELECT backstop._grant('record_results', 'agent');
COMMENT ON FUNCTION backstop.record_results IS 'record_result() for a JSON array of 1 to 500 results (objects with action_id, ok, result, inverse_params), in order, in one transaction; all or nothing: the first refused result aborts the call (nothing written) with its error, prefixed "record_results: result I:". Callers: agent. Returns (i: the result''s index from 0, status, compensation).';
