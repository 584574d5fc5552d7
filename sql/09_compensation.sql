-- Compensation: plans, requests, and the outbox protocol workers follow.

-- What requesting the compensation of one action would do. Shared by
-- request_compensation and compensation_plan so the plan shown to a person
-- and the request made are decided by the same rules.
CREATE TYPE backstop.comp_outcome AS (outcome text, detail text);

CREATE FUNCTION backstop.compensation_outcome(a backstop.actions, c backstop.compensations)
RETURNS backstop.comp_outcome
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
DECLARE
    o backstop.comp_outcome;
BEGIN
    IF c.action_id IS NOT NULL AND c.status <> 'failed' THEN
        o.outcome := CASE c.status WHEN 'compensated' THEN 'already_compensated'
                                   WHEN 'requested' THEN 'already_requested'
                                   WHEN 'running' THEN 'already_requested'
                                   ELSE c.status END;
        o.detail := format('%s (requested by %s)', c.status, c.requested_by);
    ELSIF a.status <> 'executed' THEN
        o.outcome := 'not_executed';
        o.detail := a.status;
    -- A read changed nothing: calling it irreversible would send a person
    -- to remediate what needs no undo.
    ELSIF a.class = 'read' THEN
        o.outcome := 'nothing_to_undo';
        o.detail := format('%s only reads: nothing changed (log seq %s)', a.tool, a.executed_seq);
    ELSIF a.inverse_tool IS NULL THEN
        o.outcome := 'irreversible';
        o.detail := format('%s is %s: %s (log seq %s)', a.tool, coalesce(a.class, 'unknown'),
                           coalesce((SELECT t.remediation FROM backstop.tools t
                                      WHERE t.version = a.registry_version AND t.name = a.tool), 'remediate by hand'),
                           a.executed_seq);
    ELSIF a.inverse_missing IS NOT NULL THEN
        o.outcome := 'irreversible';
        o.detail := format('the inverse %s lacks %s: remediate by hand (log seq %s)', a.inverse_tool,
                           array_to_string(a.inverse_missing, ', '), a.executed_seq);
    ELSIF a.comp_deadline IS NOT NULL AND a.comp_deadline < clock_timestamp() THEN
        o.outcome := 'expired';
        o.detail := format('reversal window closed at %s', to_char(a.comp_deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'));
    ELSE
        o.outcome := 'requested';
        o.detail := a.inverse_tool;
    END IF;
    RETURN o;
END
$$;
SELECT backstop._grant('compensation_outcome', 'viewer');
COMMENT ON FUNCTION backstop.compensation_outcome IS 'What requesting the compensation of one action would do (requested, irreversible, nothing_to_undo, expired, not_executed, already_requested, already_compensated, ...), shared by compensation_plan and request_compensation. Callers: viewer. Returns backstop.comp_outcome.';

-- The actions a rollback of `seeds` must consider: the seeds, and every
-- action that descends from one of them through parent_action or depends_on,
-- with what requesting each would do, in reverse order of execution. A
-- shared correlation id is not a dependency: a conversation's other actions
-- on other entities stand.  direction says which way the money went (out,
-- in), so a plan can say how much of each it recovers.
CREATE FUNCTION backstop.compensation_plan(seeds uuid[])
RETURNS TABLE (action_id uuid, selected boolean, caused_by uuid, agent text, tool text, class text, amount numeric,
               entity text, correlation_id text, status text, executed_seq bigint, outcome text, detail text,
               inverse_tool text, inverse_params jsonb, direction text)
-- JIT off: the estimates for a recursive closure are poor, and compiling the
-- query cost far more (about 0.8 s) than running it.
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp STABLE SET jit = off AS $$
    WITH RECURSIVE closure(action_id) AS (
        SELECT a.action_id FROM unnest(seeds) s(id) JOIN backstop.actions a ON a.action_id = s.id
      UNION
        SELECT d.action_id
          FROM closure c
          CROSS JOIN LATERAL (
              SELECT x.action_id FROM backstop.actions x WHERE x.parent_action = c.action_id
              UNION ALL
              SELECT x.action_id FROM backstop.actions x WHERE x.depends_on @> ARRAY[c.action_id]
          ) d
    )
    , seed_set AS (
        SELECT DISTINCT unnest(seeds) AS id
    ), members AS (
        -- A join, not = ANY(seeds) per row: that is a linear search of the array.
        SELECT a.action_id, a.parent_action, a.depends_on, s.id IS NOT NULL AS is_seed
          FROM closure cl
          JOIN backstop.actions a ON a.action_id = cl.action_id
          LEFT JOIN seed_set s ON s.id = a.action_id
    )
    SELECT a.action_id, m.is_seed,
           CASE WHEN m.is_seed THEN NULL
                -- Set-based (hash joins), not a subquery per row: plans run to tens of thousands of steps.
                ELSE coalesce(par.action_id,
                              CASE WHEN m.depends_on IS NOT NULL THEN
                                  (SELECT d.id FROM unnest(m.depends_on) d(id) JOIN members md ON md.action_id = d.id
                                    ORDER BY d.id LIMIT 1) END) END,
           a.agent, a.tool, a.class, a.amount, a.entity, a.correlation_id, a.status, a.executed_seq,
           (o).outcome, (o).detail, a.inverse_tool, a.inverse_params, t.direction
      FROM members m
      JOIN backstop.actions a ON a.action_id = m.action_id
      LEFT JOIN members par ON par.action_id = m.parent_action
      LEFT JOIN backstop.tools t ON t.version = a.registry_version AND t.name = a.tool
      LEFT JOIN backstop.compensations c ON c.action_id = a.action_id
      CROSS JOIN LATERAL (SELECT backstop.compensation_outcome(a, c) AS o) x
     ORDER BY a.executed_seq DESC NULLS LAST, a.proposed_seq DESC
$$;
SELECT backstop._grant('compensation_plan', 'viewer');
COMMENT ON FUNCTION backstop.compensation_plan IS 'The rollback plan for the seed actions: each seed and every action depending on one (parent_action, depends_on), in the order they would be compensated, with each one''s outcome and the direction of its money. Callers: viewer. Returns one row per action.';

-- Request the staged compensation of each action, as one unit. Outcomes:
-- requested, irreversible, nothing_to_undo (a read), expired, not_executed, already_requested,
-- already_compensated (or the terminal state of an earlier attempt:
-- condition_failed, conflict). A failed compensation may be requested again.
-- Within a request, an action's inverse waits for the inverses of the later
-- actions that depend on it (child actions, actions naming it in depends_on,
-- later actions on the same entity), so workers undo in
-- reverse order of execution however many run at once.
CREATE FUNCTION backstop.request_compensation(action_ids uuid[], reason text, plan_id uuid DEFAULT NULL)
RETURNS TABLE (action_id uuid, outcome text, detail text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_actor text := backstop.actor();
    v_plan uuid := coalesce(request_compensation.plan_id, gen_random_uuid());
    v_unknown uuid[];
    a backstop.actions%ROWTYPE;
    c backstop.compensations%ROWTYPE;
    o backstop.comp_outcome;
    v_ids uuid[] := '{}';
    v_outcomes text[] := '{}';
    v_details text[] := '{}';
    v_req uuid[] := '{}';
    v_waits jsonb;
    v_wait uuid[];
    v_seq bigint;
    v_at timestamptz;
    v_other jsonb := '[]';
    i integer;
BEGIN
    IF action_ids IS NULL OR cardinality(action_ids) = 0 THEN
        PERFORM backstop._bad('request_compensation', 'action_ids must name at least one action');
    END IF;
    IF cardinality(action_ids) > 100000 THEN
        PERFORM backstop._bad('request_compensation', format('at most 100000 actions per request; got %s', cardinality(action_ids)));
    END IF;
    PERFORM backstop._check_reason('request_compensation', 'reason', request_compensation.reason);
    SELECT array_agg(i) INTO v_unknown FROM unnest(action_ids) i
     WHERE i IS NULL OR NOT EXISTS (SELECT 1 FROM backstop.actions x WHERE x.action_id = i);
    IF v_unknown IS NOT NULL THEN
        PERFORM backstop._bad('request_compensation', format('unknown action_id %s%s', coalesce(v_unknown[1]::text, 'null'),
            CASE WHEN cardinality(v_unknown) > 1 THEN format(' (and %s more)', cardinality(v_unknown) - 1) ELSE '' END), 'P0002');
    END IF;
    -- Pass 1: lock (in one order, so concurrent requests cannot deadlock) and decide.
    FOR a IN SELECT x.* FROM backstop.actions x WHERE x.action_id = ANY (action_ids) ORDER BY x.action_id FOR UPDATE LOOP
        SELECT * INTO c FROM backstop.compensations x WHERE x.action_id = a.action_id FOR UPDATE;
        o := backstop.compensation_outcome(a, c);
        v_ids := v_ids || a.action_id;
        v_outcomes := v_outcomes || o.outcome;
        v_details := v_details || o.detail;
        IF o.outcome = 'requested' THEN
            v_req := v_req || a.action_id;
        END IF;
    END LOOP;
    -- Who waits for whom among the requested: always earlier-executed for later-executed.
    WITH r AS (
        SELECT x.action_id, x.parent_action, x.depends_on, x.entity, x.executed_seq
          FROM backstop.actions x WHERE x.action_id = ANY (v_req)
    ), edges AS (
        SELECT p.action_id AS waiter, r.action_id AS dep FROM r JOIN r p ON p.action_id = r.parent_action
         WHERE r.executed_seq > p.executed_seq
        UNION
        SELECT p.action_id, r.action_id FROM r CROSS JOIN unnest(r.depends_on) d(id) JOIN r p ON p.action_id = d.id
         WHERE r.executed_seq > p.executed_seq
        UNION
        SELECT r.action_id, lead(r.action_id) OVER (PARTITION BY r.entity ORDER BY r.executed_seq)
          FROM r WHERE r.entity IS NOT NULL
    )
    SELECT coalesce(jsonb_object_agg(w.waiter, w.deps), '{}') INTO v_waits
      FROM (SELECT e.waiter, jsonb_agg(DISTINCT e.dep) AS deps FROM edges e WHERE e.dep IS NOT NULL GROUP BY e.waiter) w;
    -- Pass 2: record.
    FOR i IN 1 .. coalesce(cardinality(v_ids), 0) LOOP
        IF v_outcomes[i] = 'requested' THEN
            SELECT * INTO a FROM backstop.actions x WHERE x.action_id = v_ids[i];
            v_wait := coalesce((SELECT array_agg(j::uuid) FROM jsonb_array_elements_text(v_waits -> v_ids[i]::text) j), '{}');
            SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('compensation_requested', v_actor, a.agent, a.tool, a.action_id,
                jsonb_strip_nulls(jsonb_build_object('reason', request_compensation.reason, 'plan_id', v_plan,
                    'inverse_tool', a.inverse_tool,
                    'deadline', a.comp_deadline, 'condition', a.comp_condition))
                || CASE WHEN a.inverse_params IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('inverse_params', a.inverse_params) END
                || jsonb_build_object('wait_for', to_jsonb(v_wait)),
                a.correlation_id, a.parent_action, a.amount, NULL, NULL, NULL, NULL, NULL, a.policy_version, a.registry_version) l;
            INSERT INTO backstop.compensations AS x (action_id, agent, tool, inverse_tool, inverse_params, deadline, condition,
                                                     status, reason, plan_id, requested_by, requested_seq, requested_at,
                                                     attempts, next_attempt_at, wait_for)
            VALUES (a.action_id, a.agent, a.tool, a.inverse_tool, a.inverse_params, a.comp_deadline, a.comp_condition,
                    'requested', request_compensation.reason, v_plan, v_actor, v_seq, v_at, 0, v_at, v_wait)
            ON CONFLICT (action_id) DO UPDATE
                SET status = 'requested', reason = excluded.reason, plan_id = excluded.plan_id,
                    requested_by = excluded.requested_by, requested_seq = excluded.requested_seq,
                    requested_at = excluded.requested_at, attempts = 0, next_attempt_at = excluded.next_attempt_at,
                    worker = NULL, lease_until = NULL, finished_seq = NULL, finished_at = NULL, last_detail = NULL,
                    wait_for = excluded.wait_for;
        ELSE
            v_other := v_other || jsonb_build_array(jsonb_build_object('action_id', v_ids[i], 'outcome', v_outcomes[i], 'detail', v_details[i]));
        END IF;
        action_id := v_ids[i];
        outcome := v_outcomes[i];
        detail := v_details[i];
        RETURN NEXT;
    END LOOP;
    -- One record of the whole request, including what could not be undone.
    PERFORM backstop._append('compensation_plan', v_actor, NULL, NULL, NULL,
        jsonb_build_object('plan_id', v_plan, 'reason', request_compensation.reason, 'requested', cardinality(v_req),
                           'not_requested', v_other));
    IF cardinality(v_req) > 0 THEN
        PERFORM pg_notify('backstop_compensations', v_plan::text);
    END IF;
END
$$;
SELECT backstop._grant('request_compensation', 'operator', 'supervisor');
COMMENT ON FUNCTION backstop.request_compensation IS 'Requests the compensation of actions (and their dependents, as compensation_plan shows), queueing each undoable one in the outbox. Callers: operator, supervisor. Returns (action_id, outcome, detail) per action.';

CREATE FUNCTION backstop._comp_setting(key text, fallback numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
BEGIN
    RETURN coalesce((SELECT (p.doc -> 'compensation' ->> key)::numeric
                       FROM backstop.active a JOIN backstop.policy_versions p ON p.version = a.policy_version), fallback);
END
$$;

CREATE FUNCTION backstop.claim_compensations(worker text, tools text[] DEFAULT NULL, max integer DEFAULT 10,
                                             lease interval DEFAULT interval '30 seconds')
RETURNS TABLE (action_id uuid, agent text, tool text, inverse_tool text, inverse_params jsonb,
               deadline timestamptz, condition text, attempt integer, lease_until timestamptz, blocked_by uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_worker text := claim_compensations.worker;
    r record;
    v_until timestamptz;
BEGIN
    PERFORM backstop._check_name('claim_compensations', 'worker', p_worker);
    -- Who claims is the session; the name tells a login's processes apart.
    p_worker := backstop._process(p_worker);
    IF claim_compensations.max IS NULL OR claim_compensations.max < 1 OR claim_compensations.max > 1000 THEN
        PERFORM backstop._bad('claim_compensations', format('max must be between 1 and 1000; got %s', coalesce(claim_compensations.max::text, 'null')));
    END IF;
    IF claim_compensations.lease IS NULL OR claim_compensations.lease < interval '1 second' OR claim_compensations.lease > interval '1 hour' THEN
        PERFORM backstop._bad('claim_compensations', format('lease must be between 1 second and 1 hour; got %s', coalesce(claim_compensations.lease::text, 'null')));
    END IF;
    v_until := clock_timestamp() + claim_compensations.lease;
    FOR r IN
        WITH ready AS (
            SELECT x.action_id, x.worker AS previous_worker, x.status AS previous_status FROM backstop.compensations x
             WHERE x.status IN ('requested', 'running') AND x.next_attempt_at <= v_until - claim_compensations.lease
               AND (claim_compensations.tools IS NULL OR x.inverse_tool = ANY (claim_compensations.tools))
               -- Dependents first: wait while any of them is still to be undone.
               -- (Written as a lookup per dependent: a plain anti-join on
               -- = ANY(wait_for) was planned as a scan of the whole queue per row.)
               AND (cardinality(x.wait_for) = 0
                    OR NOT EXISTS (SELECT 1 FROM unnest(x.wait_for) d(id)
                                     JOIN backstop.compensations w ON w.action_id = d.id
                                    WHERE w.status IN ('requested', 'running')))
             ORDER BY x.next_attempt_at
             LIMIT claim_compensations.max
               FOR UPDATE SKIP LOCKED
        )
        UPDATE backstop.compensations x
           SET status = 'running', worker = p_worker, attempts = x.attempts + 1,
               lease_until = v_until, next_attempt_at = v_until
          FROM ready
         WHERE x.action_id = ready.action_id
        RETURNING x.*, ready.previous_worker, ready.previous_status
    LOOP
        PERFORM backstop._append('compensation_started', backstop.actor(), r.agent, r.tool, r.action_id,
            jsonb_strip_nulls(jsonb_build_object('attempt', r.attempts, 'inverse_tool', r.inverse_tool,
                'lease_until', r.lease_until, 'worker', p_worker,
                'took_over_from', CASE WHEN r.previous_status = 'running' THEN r.previous_worker END)));
        action_id := r.action_id;
        agent := r.agent;
        tool := r.tool;
        inverse_tool := r.inverse_tool;
        inverse_params := r.inverse_params;
        deadline := r.deadline;
        condition := r.condition;
        attempt := r.attempts;
        lease_until := r.lease_until;
        -- A dependent (a child, or an action naming this one in depends_on)
        -- that could not be undone: undoing this one would orphan it. Same-entity
        -- edges only order the work: each inverse checks its own conflicts
        -- (a field overwritten since is refused by its write id), so a
        -- failed email restore must not stop a refund reversal.
        blocked_by := (SELECT w.action_id FROM backstop.compensations w
                         JOIN backstop.actions d ON d.action_id = w.action_id
                         JOIN backstop.actions me ON me.action_id = r.action_id
                        WHERE w.action_id = ANY (r.wait_for) AND w.status <> 'compensated'
                          AND (d.parent_action = me.action_id
                               OR d.depends_on @> ARRAY[me.action_id])
                        LIMIT 1);
        RETURN NEXT;
    END LOOP;
END
$$;
SELECT backstop._grant('claim_compensations', 'worker');
COMMENT ON FUNCTION backstop.claim_compensations IS 'Claims up to max queued compensations (optionally only of the given inverse tools) for a worker, with a lease (FOR UPDATE SKIP LOCKED). Callers: worker. Returns the claimed compensations.';

-- detail.outcome may name a terminal failure that no retry can fix:
-- expired, condition_failed, conflict. Other failures are retried with
-- exponential backoff up to the policy's compensation.max_attempts.
CREATE FUNCTION backstop._finish(p_id uuid, p_worker text, p_ok boolean, p_detail_in jsonb)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    p_detail jsonb := coalesce(p_detail_in, '{}');
    c backstop.compensations%ROWTYPE;
    v_outcome text;
    v_status text;
    v_kind text;
    v_seq bigint;
    v_at timestamptz;
    v_max integer := backstop._comp_setting('max_attempts', 5)::integer;
    v_backoff numeric := backstop._comp_setting('backoff_seconds', 2);
    v_next timestamptz;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad('finish_compensation', 'action_id is required');
    END IF;
    PERFORM backstop._check_name('finish_compensation', 'worker', p_worker);
    p_worker := backstop._process(p_worker);
    IF p_ok IS NULL THEN
        PERFORM backstop._bad('finish_compensation', 'ok is required');
    END IF;
    PERFORM backstop._check_json('finish_compensation', 'detail', p_detail, 65536, true);
    v_outcome := p_detail ->> 'outcome';
    IF NOT p_ok AND v_outcome IS NOT NULL AND v_outcome NOT IN ('expired', 'condition_failed', 'conflict', 'error') THEN
        PERFORM backstop._bad('finish_compensation', format('detail.outcome must be expired, condition_failed, conflict or error; got %s', quote_literal(v_outcome)));
    END IF;
    SELECT * INTO c FROM backstop.compensations x WHERE x.action_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM backstop._bad('finish_compensation', format('no compensation was requested for action %s', p_id), 'P0002');
    END IF;
    IF c.status <> 'running' OR c.worker IS DISTINCT FROM p_worker THEN
        PERFORM backstop._bad('finish_compensation', format('worker %s does not hold the lease on action %s (it is %s%s)',
            p_worker, p_id, c.status, coalesce(', held by ' || c.worker, '')), '55000');
    END IF;
    IF p_ok THEN
        v_status := 'compensated';
        v_kind := 'compensated';
    ELSIF v_outcome IN ('expired', 'condition_failed', 'conflict') THEN
        v_status := v_outcome;
        v_kind := 'compensation_failed';
    ELSIF c.attempts < v_max THEN
        v_status := 'requested';
        v_kind := 'compensation_retry';
    ELSE
        v_status := 'failed';
        v_kind := 'compensation_failed';
    END IF;
    v_next := clock_timestamp() + make_interval(secs => least(300, v_backoff * power(2, c.attempts - 1))::double precision);
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append(v_kind, backstop.actor(), c.agent, c.tool, p_id,
        jsonb_strip_nulls(jsonb_build_object('status', v_status, 'attempt', c.attempts, 'inverse_tool', c.inverse_tool,
            'worker', p_worker,
            'next_attempt_at', CASE WHEN v_status = 'requested' THEN v_next END))
        || jsonb_build_object('result', p_detail)) l;
    IF v_status = 'requested' THEN
        UPDATE backstop.compensations x
           SET status = 'requested', worker = NULL, lease_until = NULL, last_detail = p_detail,
               next_attempt_at = v_next
         WHERE x.action_id = p_id;
    ELSE
        UPDATE backstop.compensations x
           SET status = v_status, lease_until = NULL, finished_seq = v_seq, finished_at = v_at, last_detail = p_detail
         WHERE x.action_id = p_id;
    END IF;
    IF v_kind = 'compensation_failed' THEN
        PERFORM backstop._raise_finding('compensation_failed', 'high', c.agent, p_id,
            jsonb_build_object('rule', 'compensation_' || v_status, 'status', v_status, 'inverse_tool', c.inverse_tool,
                               'attempts', c.attempts, 'result', p_detail,
                               'remediation', 'undo by hand: the automatic inverse did not run to completion'),
            backstop.actor());
    END IF;
    RETURN v_status;
END
$$;

CREATE FUNCTION backstop.finish_compensation(action_id uuid, worker text, ok boolean, detail jsonb DEFAULT NULL)
RETURNS TABLE (status text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT backstop._finish(action_id, worker, ok, detail)
$$;
SELECT backstop._grant('finish_compensation', 'worker');
COMMENT ON FUNCTION backstop.finish_compensation IS 'Reports one claimed compensation''s outcome (ok, or a detail with the failure: retry, conflict, condition_failed); appends compensated or compensation_failed. Callers: worker. Returns (status).';

-- Many outcomes in one round trip: [{"action_id": ..., "ok": ..., "detail": {...}}, ...].
-- An outcome whose lease this worker lost is answered 'lease_lost' and
-- changes nothing; the others are recorded.
CREATE FUNCTION backstop.finish_compensations(worker text, results jsonb)
RETURNS TABLE (action_id uuid, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    r jsonb;
BEGIN
    IF jsonb_typeof(results) IS DISTINCT FROM 'array' THEN
        PERFORM backstop._bad('finish_compensations', 'results must be a JSON array of {action_id, ok, detail}');
    END IF;
    FOR r IN SELECT * FROM jsonb_array_elements(results) LOOP
        action_id := (r ->> 'action_id')::uuid;
        BEGIN
            status := backstop._finish(action_id, finish_compensations.worker, (r ->> 'ok')::boolean, r -> 'detail');
        EXCEPTION WHEN SQLSTATE '55000' THEN
            status := 'lease_lost';
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
SELECT backstop._grant('finish_compensations', 'worker');
COMMENT ON FUNCTION backstop.finish_compensations IS 'finish_compensation for a batch: results is a JSON array of {action_id, ok, detail}. Callers: worker. Returns (action_id, status) per entry.';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.compensations IS 'The compensation outbox: requested, running, compensated, failed, expired, condition_failed or conflict. Readers: every duty but agent.';
