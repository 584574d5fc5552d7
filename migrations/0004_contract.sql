-- The SQL contract: every write goes through these functions. Bad input
-- raises SQLSTATE 22023 (or P0002 for an unknown id) with a message naming
-- the function and the argument, before anything is appended.
--
-- Limits: names (agent, tool, worker, signal kind) 1-128 characters of
-- [A-Za-z0-9._:@/-]; params, result, inverse_params, detail 64 KiB each;
-- inputs 256 KiB; reasoning 64 KiB; correlation_id and idempotency_key 256
-- characters; notes and reasons 2,000 characters; amounts 0 to 10^12 with
-- at most 6 decimals; confidence 0 to 1.

CREATE FUNCTION backstop._bad(fn text, msg text, code text DEFAULT '22023') RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = fn || ': ' || msg;
END
$$;

CREATE FUNCTION backstop._check_name(fn text, what text, v text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NULL OR v !~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$' THEN
        PERFORM backstop._bad(fn, format('%s must be 1 to 128 characters of letters, digits and . _ : @ / -, starting with a letter or digit; got %s',
                                         what, coalesce(quote_literal(left(v, 60)), 'null')));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_json(fn text, what text, v jsonb, max_bytes integer, must_be_object boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NULL THEN
        RETURN;
    END IF;
    IF must_be_object AND jsonb_typeof(v) <> 'object' THEN
        PERFORM backstop._bad(fn, format('%s must be a JSON object; got a JSON %s', what, jsonb_typeof(v)));
    END IF;
    IF pg_column_size(v) > max_bytes THEN
        PERFORM backstop._bad(fn, format('%s is %s bytes; the limit is %s bytes', what, pg_column_size(v), max_bytes));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_text(fn text, what text, v text, max_chars integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NOT NULL AND length(v) > max_chars THEN
        PERFORM backstop._bad(fn, format('%s is %s characters; the limit is %s', what, length(v), max_chars));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_reason(fn text, what text, v text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NULL OR btrim(v) = '' THEN
        PERFORM backstop._bad(fn, format('%s is required: say why, it is recorded in the log', what));
    END IF;
    PERFORM backstop._check_text(fn, what, v, 2000);
END
$$;

CREATE FUNCTION backstop._check_amount(fn text, v numeric) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NULL THEN
        RETURN;
    END IF;
    IF v = 'NaN'::numeric OR v IN ('Infinity'::numeric, '-Infinity'::numeric) THEN
        PERFORM backstop._bad(fn, format('amount must be a finite number; got %s', v));
    END IF;
    IF v < 0 THEN
        PERFORM backstop._bad(fn, format('amount must not be negative; got %s', v));
    END IF;
    IF v > 1e12 OR scale(v) > 6 THEN
        PERFORM backstop._bad(fn, format('amount must be at most 1,000,000,000,000 with at most 6 decimals; got %s', v));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_confidence(fn text, v real) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NOT NULL AND (v = 'NaN'::real OR v < 0 OR v > 1) THEN
        PERFORM backstop._bad(fn, format('confidence must be between 0 and 1; got %s', v));
    END IF;
END
$$;

-- The kill switch's gate. Every proposal reads this (empty) table before it
-- reads the kill switches, and so holds an ACCESS SHARE lock on it until it
-- commits; pause takes ACCESS EXCLUSIVE. A pause therefore waits for the
-- proposals already past their check, and every proposal that checks after
-- the pause commits sees it. ACCESS SHARE on a table is taken on Postgres's
-- per-backend fast path, so proposals do not contend with each other (an
-- advisory lock shared by every proposal cost about 20% of throughput at 16
-- agents).
CREATE TABLE backstop.kill_gate ();

CREATE FUNCTION backstop._kill_switch(p_agent text, p_tool text, OUT scope text, OUT target text, OUT reason text, OUT changed_by text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT k.scope, k.target, k.reason, k.changed_by INTO scope, target, reason, changed_by
      FROM backstop.kill_switches k
     WHERE k.paused AND (k.scope = 'fleet' OR (k.scope = 'agent' AND k.target = p_agent) OR (k.scope = 'tool' AND k.target = p_tool))
     ORDER BY CASE k.scope WHEN 'fleet' THEN 0 WHEN 'agent' THEN 1 ELSE 2 END
     LIMIT 1;
END
$$;

CREATE FUNCTION backstop._paused_reason(scope text, target text, reason text, changed_by text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE scope WHEN 'fleet' THEN 'fleet paused' ELSE scope || ' ' || target || ' paused' END
           || ' by ' || changed_by || ': ' || reason
$$;

CREATE FUNCTION backstop.propose(
    agent text, tool text, params jsonb,
    amount numeric DEFAULT NULL, confidence real DEFAULT NULL,
    reasoning text DEFAULT NULL, inputs jsonb DEFAULT NULL,
    correlation_id text DEFAULT NULL, parent_action uuid DEFAULT NULL,
    idempotency_key text DEFAULT NULL)
RETURNS TABLE (action_id uuid, verdict text, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
-- The hot path of every agent: few statements, each one executor start.
DECLARE
    p_agent text := propose.agent;
    p_tool text := propose.tool;
    p_params jsonb := propose.params;
    p_amount numeric := propose.amount;
    p_conf real := propose.confidence;
    p_corr text := propose.correlation_id;
    p_parent uuid := propose.parent_action;
    p_key text := propose.idempotency_key;
    v_id uuid := gen_random_uuid();
    c record;
    t backstop.tools%ROWTYPE;
    k record;
    v_known boolean;
    e backstop.verdict;
    v_txt text;
    v_amount_from text;
    v_cost numeric;
    v_entity text;
    v_expires timestamptz;
    v_effect text;
    v_kind text;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    -- One cheap test for well-formed input; the detailed checks below run
    -- only to name what is wrong.
    IF NOT coalesce(
           p_agent ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$'
       AND p_tool ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$'
       AND jsonb_typeof(p_params) = 'object' AND pg_column_size(p_params) <= 65536
       AND (propose.inputs IS NULL OR pg_column_size(propose.inputs) <= 262144)
       AND (propose.reasoning IS NULL OR length(propose.reasoning) <= 65536)
       AND (p_corr IS NULL OR length(p_corr) <= 256)
       AND (p_key IS NULL OR length(p_key) <= 256)
       AND (p_amount IS NULL OR (p_amount >= 0 AND p_amount <= 1e12 AND scale(p_amount) <= 6))
       AND (p_conf IS NULL OR (p_conf >= 0 AND p_conf <= 1)), false) THEN
        PERFORM backstop._check_name('propose', 'agent', p_agent);
        PERFORM backstop._check_name('propose', 'tool', p_tool);
        IF p_params IS NULL THEN
            PERFORM backstop._bad('propose', 'params is required: a JSON object ({} when the tool takes none)');
        END IF;
        PERFORM backstop._check_json('propose', 'params', p_params, 65536, true);
        PERFORM backstop._check_json('propose', 'inputs', propose.inputs, 262144, false);
        PERFORM backstop._check_text('propose', 'reasoning', propose.reasoning, 65536);
        PERFORM backstop._check_text('propose', 'correlation_id', p_corr, 256);
        PERFORM backstop._check_text('propose', 'idempotency_key', p_key, 256);
        PERFORM backstop._check_amount('propose', p_amount);
        PERFORM backstop._check_confidence('propose', p_conf);
    END IF;
    -- An agent's own login acts only as itself or the agents mapped to it;
    -- Backstop's trusted sessions (the schema's owner, superusers) may name
    -- any agent. (Both defined by a later migration: plpgsql binds late.)
    IF p_agent <> session_user AND NOT backstop._trusted()
       AND NOT EXISTS (SELECT 1 FROM backstop.agent_logins m WHERE m.login = session_user AND m.agent = p_agent) THEN
        PERFORM backstop._bad('propose', format('login %s may not act as agent %s (map it in backstop.agent_logins)',
                                                session_user, p_agent), '42501');
    END IF;
    IF p_parent IS NOT NULL AND NOT EXISTS (SELECT 1 FROM backstop.actions x WHERE x.action_id = p_parent) THEN
        PERFORM backstop._bad('propose', format('parent_action %s is not a known action', p_parent), 'P0002');
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM backstop._bad('propose', format('must run at READ COMMITTED isolation (this transaction is %s): the kill switch is checked against the latest committed pause',
                                                current_setting('transaction_isolation')), '25000');
    END IF;

    IF p_key IS NOT NULL THEN
        -- Serialize callers that share a key; the second sees the first's answer.
        PERFORM pg_advisory_xact_lock(1112757330, hashtext(p_agent || '/' || p_key));
        SELECT x.action_id, x.verdict, x.reason INTO action_id, verdict, reason FROM backstop.actions x
         WHERE x.agent = p_agent AND x.idempotency_key = p_key;
        IF FOUND THEN
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- A statement of its own: the next one takes a snapshot after the gate is held.
    PERFORM FROM backstop.kill_gate;
    -- Read after the kill-switch locks are held.
    SELECT a.registry_version AS reg, a.policy_version AS pol, pv.hold_expiry, pv.expiry_effect,
           pv.param_memory, pv.has_cumulative, t AS tool_row
      INTO c
      FROM backstop.active a
      LEFT JOIN backstop.policy_versions pv ON pv.version = a.policy_version
      LEFT JOIN backstop.tools t ON t.version = a.registry_version AND t.name = p_tool;
    t := c.tool_row;
    v_known := t.name IS NOT NULL;
    SELECT k.scope, k.target, k.reason, k.changed_by INTO k
      FROM backstop.kill_switches k
     WHERE k.paused AND (k.scope = 'fleet' OR (k.scope = 'agent' AND k.target = p_agent)
                         OR (k.scope = 'tool' AND k.target = p_tool))
     LIMIT 1;

    IF v_known THEN
        IF p_amount IS NULL AND t.value_param IS NOT NULL THEN
            v_txt := backstop.path_get(p_params, t.value_param) #>> '{}';
            IF v_txt IS NOT NULL THEN
                IF v_txt !~ '^[0-9]{1,13}(\.[0-9]{1,6})?$' THEN
                    PERFORM backstop._bad('propose', format('params.%s carries the value of %s and must be a non-negative number; got %s',
                                                            t.value_param, p_tool, quote_literal(left(v_txt, 40))));
                END IF;
                p_amount := v_txt::numeric;
                PERFORM backstop._check_amount('propose', p_amount);
                v_amount_from := 'params.' || t.value_param;
            END IF;
        END IF;
        v_cost := backstop.cost_to_reverse(t.class, t.cost_fixed, t.cost_share, p_amount);
        IF t.entity_param IS NOT NULL THEN
            v_entity := backstop.path_get(p_params, t.entity_param) #>> '{}';
        END IF;
    END IF;

    IF k.scope IS NOT NULL THEN
        e := ROW('block', backstop._paused_reason(k.scope, k.target, k.reason, k.changed_by), 'kill_switch', 0);
    ELSIF NOT v_known THEN
        e := ROW('block', CASE WHEN c.reg IS NULL THEN format('unknown tool %s: no tool registry is loaded', p_tool)
                               ELSE format('unknown tool %s: not in registry version %s', p_tool, c.reg) END,
                 'unknown_tool', 0);
    ELSE
        e := backstop.evaluate(c.pol, p_agent, p_tool, t.class, p_amount, v_cost, p_conf, p_params);
    END IF;

    IF e.verdict = 'hold' THEN
        v_expires := clock_timestamp() + coalesce(c.hold_expiry, interval '1 hour');
        v_effect := coalesce(c.expiry_effect, 'block');
    END IF;
    v_kind := CASE e.verdict WHEN 'allow' THEN 'allowed' WHEN 'hold' THEN 'held' ELSE 'blocked' END;

    -- Every column given: a column default costs a parse per insert.
    INSERT INTO backstop.action_log AS l
        (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence,
         reasoning, inputs, params, result, policy_version, registry_version)
    VALUES (nextval('backstop.action_log_seq'), clock_timestamp(), pg_current_xact_id(), v_kind, p_agent, p_agent, p_tool, v_id,
            jsonb_strip_nulls(jsonb_build_object(
                'verdict', e.verdict, 'reason', e.reason, 'rule', e.rule, 'class', t.class,
                'cost_to_reverse', v_cost, 'approvals_needed', nullif(e.approvals, 0),
                'expires_at', v_expires, 'expiry_effect', v_effect,
                'idempotency_key', p_key, 'entity', v_entity, 'amount_from', v_amount_from)),
            p_corr, p_parent, p_amount, p_conf, propose.reasoning, propose.inputs, p_params, NULL, c.pol, c.reg)
    RETURNING l.seq, l.at INTO v_seq, v_at;

    INSERT INTO backstop.actions (action_id, agent, tool, class, amount, confidence, cost_to_reverse, correlation_id,
                                  parent_action, idempotency_key, entity, verdict, reason, rule, status,
                                  approvals_needed, approvals, expires_at, expiry_effect, proposed_seq, proposed_at,
                                  decided_seq, executed_seq, executed_at, inverse_tool, inverse_params, inverse_missing,
                                  comp_deadline, comp_condition, policy_version, registry_version, updated_seq)
    VALUES (v_id, p_agent, p_tool, t.class, p_amount, p_conf, v_cost, p_corr,
            p_parent, p_key, v_entity, e.verdict, e.reason, e.rule, v_kind,
            e.approvals, 0, v_expires, v_effect, v_seq, v_at,
            NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, c.pol, c.reg, v_seq);

    IF e.verdict = 'hold' THEN
        INSERT INTO backstop.approval_queue (action_id, agent, tool, amount, rule, reason, approvals_needed,
                                             held_at, expires_at, proposed_seq)
        VALUES (v_id, p_agent, p_tool, p_amount, e.rule, e.reason, e.approvals, v_at, v_expires, v_seq);
    ELSIF e.verdict = 'allow' AND ((c.has_cumulative AND p_amount > 0) OR c.param_memory) THEN
        PERFORM backstop._remember(c.pol, c.param_memory, p_agent, p_params, p_amount, v_seq);
    END IF;

    action_id := v_id;
    verdict := e.verdict;
    reason := e.reason;
    RETURN NEXT;
END
$$;

CREATE FUNCTION backstop.decision(action_id uuid)
RETURNS TABLE (verdict text, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a backstop.actions%ROWTYPE;
    k record;
    v_by text;
BEGIN
    IF decision.action_id IS NULL THEN
        PERFORM backstop._bad('decision', 'action_id is required');
    END IF;
    SELECT * INTO a FROM backstop.actions x WHERE x.action_id = decision.action_id;
    IF NOT FOUND THEN
        PERFORM backstop._bad('decision', format('unknown action_id %s', decision.action_id), 'P0002');
    END IF;
    IF a.status = 'held' THEN
        IF a.expires_at > clock_timestamp() THEN
            RETURN QUERY SELECT 'hold'::text,
                format('%s (%s of %s approvals; expires %s)', a.reason, a.approvals, a.approvals_needed,
                       to_char(a.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'));
            RETURN;
        ELSIF a.expiry_effect IS DISTINCT FROM 'allow' THEN
            RETURN QUERY SELECT 'block'::text, 'expired without a decision: ' || a.reason;
            RETURN;
        END IF;
    ELSIF a.status = 'blocked' THEN
        RETURN QUERY SELECT 'block'::text, a.reason;
        RETURN;
    ELSIF a.status = 'rejected' THEN
        SELECT format('rejected by %s: %s', p.approver, p.note) INTO v_by FROM backstop.approvals p
         WHERE p.action_id = a.action_id AND p.decision = 'rejected' ORDER BY p.seq DESC LIMIT 1;
        RETURN QUERY SELECT 'block'::text, v_by;
        RETURN;
    ELSIF a.status = 'expired' THEN
        RETURN QUERY SELECT 'block'::text, 'expired without a decision: ' || a.reason;
        RETURN;
    END IF;
    -- allowed (directly or by approval), executed or failed
    IF a.status = 'allowed' THEN
        PERFORM FROM backstop.kill_gate;
        SELECT * INTO k FROM backstop._kill_switch(a.agent, a.tool);
        IF k.scope IS NOT NULL THEN
            RETURN QUERY SELECT 'hold'::text, 'allowed, but waiting: ' || backstop._paused_reason(k.scope, k.target, k.reason, k.changed_by);
            RETURN;
        END IF;
    END IF;
    IF a.verdict = 'hold' THEN
        SELECT 'approved by ' || string_agg(p.approver, ' and ' ORDER BY p.seq) INTO v_by
          FROM backstop.approvals p WHERE p.action_id = a.action_id AND p.decision = 'approved';
        RETURN QUERY SELECT 'allow'::text, coalesce(v_by, 'allowed on expiry by policy');
    ELSE
        RETURN QUERY SELECT 'allow'::text, a.reason;
    END IF;
END
$$;

CREATE FUNCTION backstop.record_result(action_id uuid, ok boolean, result jsonb DEFAULT NULL, inverse_params jsonb DEFAULT NULL)
RETURNS TABLE (status text, compensation text)
LANGUAGE plpgsql AS $$
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
        SELECT l.kind, l.result INTO prev FROM backstop.action_log l WHERE l.seq = a.executed_seq AND l.at = a.executed_at;
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
                  FROM backstop.action_log l, jsonb_each(a.t_bindings) j
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

CREATE FUNCTION backstop.approve(action_id uuid, note text DEFAULT '')
RETURNS TABLE (verdict text, approvals integer, approvals_needed integer)
LANGUAGE plpgsql AS $$
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
        SELECT l.params INTO v_params FROM backstop.action_log l WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at;
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

CREATE FUNCTION backstop.reject(action_id uuid, note text)
RETURNS TABLE (verdict text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_id uuid := reject.action_id;
    v_actor text := backstop.actor();
    a backstop.actions%ROWTYPE;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad('reject', 'action_id is required');
    END IF;
    PERFORM backstop._check_reason('reject', 'note', reject.note);
    SELECT * INTO a FROM backstop.actions x WHERE x.action_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM backstop._bad('reject', format('unknown action_id %s', p_id), 'P0002');
    END IF;
    IF a.status <> 'held' THEN
        PERFORM backstop._bad('reject', format('action %s is not waiting for approval (it is %s)', p_id, a.status), '55000');
    END IF;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('rejected', v_actor, a.agent, a.tool, p_id,
        jsonb_build_object('note', reject.note),
        a.correlation_id, a.parent_action, a.amount, NULL, NULL, NULL, NULL, NULL, a.policy_version, a.registry_version) l;
    INSERT INTO backstop.approvals (action_id, approver, decision, note, seq, at)
    VALUES (p_id, v_actor, 'rejected', reject.note, v_seq, v_at);
    UPDATE backstop.actions x SET status = 'rejected', decided_seq = v_seq, updated_seq = v_seq WHERE x.action_id = p_id;
    DELETE FROM backstop.approval_queue q WHERE q.action_id = p_id;
    PERFORM pg_notify('backstop_decisions', p_id::text);
    RETURN QUERY SELECT 'block'::text;
END
$$;

-- Held actions past their expiry take the policy's expiry effect. Any
-- long-running process (supervisor, room, worker) calls this periodically;
-- decision() already answers by the clock in between.
CREATE FUNCTION backstop.expire_held(max_rows integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_actor text := backstop.actor();
    q record;
    a backstop.actions%ROWTYPE;
    v_seq bigint;
    v_n integer := 0;
BEGIN
    FOR q IN SELECT x.action_id FROM backstop.approval_queue x
              WHERE x.expires_at <= clock_timestamp()
              ORDER BY x.expires_at LIMIT max_rows
                FOR UPDATE SKIP LOCKED LOOP
        SELECT * INTO a FROM backstop.actions x WHERE x.action_id = q.action_id FOR UPDATE;
        CONTINUE WHEN a.status <> 'held';
        SELECT l.seq INTO v_seq FROM backstop._append('expired', v_actor, a.agent, a.tool, a.action_id,
            jsonb_build_object('effect', a.expiry_effect, 'expires_at', a.expires_at),
            a.correlation_id, a.parent_action, a.amount, NULL, NULL, NULL, NULL, NULL, a.policy_version, a.registry_version) l;
        UPDATE backstop.actions x
           SET status = CASE WHEN a.expiry_effect = 'allow' THEN 'allowed' ELSE 'expired' END,
               decided_seq = v_seq, updated_seq = v_seq
         WHERE x.action_id = a.action_id;
        DELETE FROM backstop.approval_queue x WHERE x.action_id = a.action_id;
        PERFORM pg_notify('backstop_decisions', a.action_id::text);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$$;

CREATE FUNCTION backstop.pause(scope text, target text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS TABLE (seq bigint, was_paused boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_scope text := pause.scope;
    p_target text;
    v_actor text := backstop.actor();
    v_was boolean;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    IF p_scope IS NULL OR p_scope NOT IN ('fleet', 'agent', 'tool') THEN
        PERFORM backstop._bad('pause', format('scope must be fleet, agent or tool; got %s', coalesce(quote_literal(p_scope), 'null')));
    END IF;
    IF p_scope = 'fleet' THEN
        p_target := '*';
    ELSE
        PERFORM backstop._check_name('pause', p_scope || ' (the target)', pause.target);
        p_target := pause.target;
    END IF;
    PERFORM backstop._check_reason('pause', 'reason', pause.reason);
    -- Wait for proposals already past their kill-switch check; hold off new
    -- ones until this commits. Pauses are rare: every scope takes the gate.
    LOCK TABLE backstop.kill_gate IN ACCESS EXCLUSIVE MODE;
    SELECT k.paused INTO v_was FROM backstop.kill_switches k WHERE k.scope = p_scope AND k.target = p_target FOR UPDATE;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('paused', v_actor,
        CASE WHEN p_scope = 'agent' THEN p_target END, CASE WHEN p_scope = 'tool' THEN p_target END, NULL,
        jsonb_build_object('scope', p_scope, 'target', p_target, 'reason', pause.reason, 'was_paused', coalesce(v_was, false))) l;
    INSERT INTO backstop.kill_switches AS k (scope, target, paused, reason, changed_by, changed_seq, changed_at)
    VALUES (p_scope, p_target, true, pause.reason, v_actor, v_seq, v_at)
    ON CONFLICT (scope, target) DO UPDATE
        SET paused = true, reason = excluded.reason, changed_by = excluded.changed_by,
            changed_seq = excluded.changed_seq, changed_at = excluded.changed_at;
    PERFORM pg_notify('backstop_control', jsonb_build_object('event', 'paused', 'scope', p_scope, 'target', p_target,
                                                             'seq', v_seq, 'by', v_actor)::text);
    RETURN QUERY SELECT v_seq, coalesce(v_was, false);
END
$$;

CREATE FUNCTION backstop.resume(scope text, target text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_scope text := resume.scope;
    p_target text;
    v_actor text := backstop.actor();
    v_was boolean;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    IF p_scope IS NULL OR p_scope NOT IN ('fleet', 'agent', 'tool') THEN
        PERFORM backstop._bad('resume', format('scope must be fleet, agent or tool; got %s', coalesce(quote_literal(p_scope), 'null')));
    END IF;
    IF p_scope = 'fleet' THEN
        p_target := '*';
    ELSE
        PERFORM backstop._check_name('resume', p_scope || ' (the target)', resume.target);
        p_target := resume.target;
    END IF;
    PERFORM backstop._check_reason('resume', 'reason', resume.reason);
    SELECT k.paused INTO v_was FROM backstop.kill_switches k WHERE k.scope = p_scope AND k.target = p_target FOR UPDATE;
    IF NOT coalesce(v_was, false) THEN
        PERFORM backstop._bad('resume', CASE WHEN p_scope = 'fleet' THEN 'the fleet is not paused'
                                             ELSE format('%s %s is not paused', p_scope, p_target) END, '55000');
    END IF;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('resumed', v_actor,
        CASE WHEN p_scope = 'agent' THEN p_target END, CASE WHEN p_scope = 'tool' THEN p_target END, NULL,
        jsonb_build_object('scope', p_scope, 'target', p_target, 'reason', resume.reason)) l;
    UPDATE backstop.kill_switches k
       SET paused = false, reason = resume.reason, changed_by = v_actor, changed_seq = v_seq, changed_at = v_at
     WHERE k.scope = p_scope AND k.target = p_target;
    PERFORM pg_notify('backstop_control', jsonb_build_object('event', 'resumed', 'scope', p_scope, 'target', p_target,
                                                             'seq', v_seq, 'by', v_actor)::text);
    RETURN v_seq;
END
$$;

CREATE FUNCTION backstop.report_signal(kind text, agent text DEFAULT NULL, correlation_id text DEFAULT NULL, detail jsonb DEFAULT NULL)
RETURNS TABLE (seq bigint, traced_agent text, traced_action uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_agent text := report_signal.agent;
    p_corr text := report_signal.correlation_id;
    p_detail jsonb := coalesce(report_signal.detail, '{}');
    v_action uuid;
    v_txt text;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    PERFORM backstop._check_name('report_signal', 'kind', report_signal.kind);
    IF p_agent IS NOT NULL THEN
        PERFORM backstop._check_name('report_signal', 'agent', p_agent);
    END IF;
    PERFORM backstop._check_text('report_signal', 'correlation_id', p_corr, 256);
    PERFORM backstop._check_json('report_signal', 'detail', p_detail, 65536, true);
    v_txt := p_detail ->> 'action_id';
    IF v_txt IS NOT NULL THEN
        IF v_txt !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
            PERFORM backstop._bad('report_signal', format('detail.action_id must be a UUID; got %s', quote_literal(left(v_txt, 60))));
        END IF;
        v_action := v_txt::uuid;
        SELECT x.agent, coalesce(p_corr, x.correlation_id) INTO p_agent, p_corr FROM backstop.actions x WHERE x.action_id = v_action;
        IF NOT FOUND THEN
            PERFORM backstop._bad('report_signal', format('detail.action_id %s is not a known action', v_action), 'P0002');
        END IF;
    ELSIF p_agent IS NULL AND p_corr IS NOT NULL THEN
        -- Trace the signal to the agent that last acted on this business event.
        SELECT x.agent, x.action_id INTO p_agent, v_action FROM backstop.actions x
         WHERE x.correlation_id = p_corr AND x.status IN ('executed', 'failed', 'allowed')
         ORDER BY x.proposed_seq DESC LIMIT 1;
    END IF;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('signal', backstop.actor(), p_agent, NULL, v_action,
        jsonb_build_object('kind', report_signal.kind, 'detail', p_detail), p_corr) l;
    INSERT INTO backstop.signals (seq, kind, agent, correlation_id, action_id, detail, reported_by, at)
    VALUES (v_seq, report_signal.kind, p_agent, p_corr, v_action, p_detail, backstop.actor(), v_at);
    RETURN QUERY SELECT v_seq, p_agent, v_action;
END
$$;

-- What requesting the compensation of one action would do. Shared by
-- request_compensation and compensation_plan so the plan shown to a person
-- and the request made are decided by the same rules.
CREATE TYPE backstop.comp_outcome AS (outcome text, detail text);

CREATE FUNCTION backstop.compensation_outcome(a backstop.actions, c backstop.compensations)
RETURNS backstop.comp_outcome
LANGUAGE plpgsql STABLE AS $$
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

-- The actions a rollback of `seeds` must consider: the seeds, and every
-- later action that descends from one of them through parent_action or
-- through a shared correlation id, with what requesting each would do, in
-- reverse order of execution.
CREATE FUNCTION backstop.compensation_plan(seeds uuid[])
RETURNS TABLE (action_id uuid, selected boolean, caused_by uuid, agent text, tool text, class text, amount numeric,
               entity text, correlation_id text, status text, executed_seq bigint, outcome text, detail text,
               inverse_tool text, inverse_params jsonb)
-- JIT off: the estimates for a recursive closure are poor, and compiling the
-- query cost far more (about 0.8 s) than running it.
LANGUAGE sql STABLE SET jit = off AS $$
    WITH RECURSIVE closure(action_id) AS (
        SELECT a.action_id FROM unnest(seeds) s(id) JOIN backstop.actions a ON a.action_id = s.id
      UNION
        SELECT d.action_id
          FROM closure c
          JOIN backstop.actions p ON p.action_id = c.action_id
          CROSS JOIN LATERAL (
              SELECT x.action_id FROM backstop.actions x WHERE x.parent_action = p.action_id
              UNION ALL
              SELECT x.action_id FROM backstop.actions x
               WHERE p.correlation_id IS NOT NULL AND x.correlation_id = p.correlation_id AND x.proposed_seq > p.proposed_seq
          ) d
    )
    , seed_set AS (
        SELECT DISTINCT unnest(seeds) AS id
    ), members AS (
        -- A join, not = ANY(seeds) per row: that is a linear search of the array.
        SELECT a.action_id, a.parent_action, a.correlation_id, s.id IS NOT NULL AS is_seed,
               first_value(a.action_id) OVER (PARTITION BY a.correlation_id ORDER BY a.proposed_seq) AS first_in_chain
          FROM closure cl
          JOIN backstop.actions a ON a.action_id = cl.action_id
          LEFT JOIN seed_set s ON s.id = a.action_id
    )
    SELECT a.action_id, m.is_seed,
           CASE WHEN m.is_seed THEN NULL
                -- Set-based (hash joins), not a subquery per row: plans run to tens of thousands of steps.
                ELSE coalesce(par.action_id, CASE WHEN m.correlation_id IS NOT NULL AND m.first_in_chain <> m.action_id
                                                  THEN m.first_in_chain END) END,
           a.agent, a.tool, a.class, a.amount, a.entity, a.correlation_id, a.status, a.executed_seq,
           (o).outcome, (o).detail, a.inverse_tool, a.inverse_params
      FROM members m
      JOIN backstop.actions a ON a.action_id = m.action_id
      LEFT JOIN members par ON par.action_id = m.parent_action
      LEFT JOIN backstop.compensations c ON c.action_id = a.action_id
      CROSS JOIN LATERAL (SELECT backstop.compensation_outcome(a, c) AS o) x
     ORDER BY a.executed_seq DESC NULLS LAST, a.proposed_seq DESC
$$;

-- Request the staged compensation of each action, as one unit. Outcomes:
-- requested, irreversible, expired, not_executed, already_requested,
-- already_compensated (or the terminal state of an earlier attempt:
-- condition_failed, conflict). A failed compensation may be requested again.
-- Within a request, an action's inverse waits for the inverses of the later
-- actions that depend on it (child actions, later actions on the same
-- correlation id, later actions on the same entity), so workers undo in
-- reverse order of execution however many run at once.
CREATE FUNCTION backstop.request_compensation(action_ids uuid[], reason text, plan_id uuid DEFAULT NULL)
RETURNS TABLE (action_id uuid, outcome text, detail text)
LANGUAGE plpgsql AS $$
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
        SELECT x.action_id, x.parent_action, x.correlation_id, x.entity, x.executed_seq
          FROM backstop.actions x WHERE x.action_id = ANY (v_req)
    ), edges AS (
        SELECT p.action_id AS waiter, r.action_id AS dep FROM r JOIN r p ON p.action_id = r.parent_action
         WHERE r.executed_seq > p.executed_seq
        UNION
        SELECT r.action_id, lead(r.action_id) OVER (PARTITION BY r.correlation_id ORDER BY r.executed_seq)
          FROM r WHERE r.correlation_id IS NOT NULL
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

CREATE FUNCTION backstop._comp_setting(key text, fallback numeric) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT (p.doc -> 'compensation' ->> key)::numeric
                       FROM backstop.active a JOIN backstop.policy_versions p ON p.version = a.policy_version), fallback);
END
$$;

CREATE FUNCTION backstop.claim_compensations(worker text, tools text[] DEFAULT NULL, max integer DEFAULT 10,
                                             lease interval DEFAULT interval '30 seconds')
RETURNS TABLE (action_id uuid, agent text, tool text, inverse_tool text, inverse_params jsonb,
               deadline timestamptz, condition text, attempt integer, lease_until timestamptz, blocked_by uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_worker text := claim_compensations.worker;
    r record;
    v_until timestamptz;
BEGIN
    PERFORM backstop._check_name('claim_compensations', 'worker', p_worker);
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
        PERFORM backstop._append('compensation_started', p_worker, r.agent, r.tool, r.action_id,
            jsonb_strip_nulls(jsonb_build_object('attempt', r.attempts, 'inverse_tool', r.inverse_tool,
                'lease_until', r.lease_until,
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
        -- A dependent (child, or later on the same correlation chain) that
        -- could not be undone: undoing this one would orphan it. Same-entity
        -- edges only order the work: each inverse checks its own conflicts
        -- (a field overwritten since is refused by its write id), so a
        -- failed email restore must not stop a refund reversal.
        blocked_by := (SELECT w.action_id FROM backstop.compensations w
                         JOIN backstop.actions d ON d.action_id = w.action_id
                         JOIN backstop.actions me ON me.action_id = r.action_id
                        WHERE w.action_id = ANY (r.wait_for) AND w.status <> 'compensated'
                          AND (d.parent_action = me.action_id
                               OR (d.correlation_id IS NOT NULL AND d.correlation_id = me.correlation_id))
                        LIMIT 1);
        RETURN NEXT;
    END LOOP;
END
$$;

-- detail.outcome may name a terminal failure that no retry can fix:
-- expired, condition_failed, conflict. Other failures are retried with
-- exponential backoff up to the policy's compensation.max_attempts.
CREATE FUNCTION backstop._finish(p_id uuid, p_worker text, p_ok boolean, p_detail_in jsonb)
RETURNS text
LANGUAGE plpgsql AS $$
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
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append(v_kind, p_worker, c.agent, c.tool, p_id,
        jsonb_strip_nulls(jsonb_build_object('status', v_status, 'attempt', c.attempts, 'inverse_tool', c.inverse_tool,
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
            p_worker);
    END IF;
    RETURN v_status;
END
$$;

CREATE FUNCTION backstop.finish_compensation(action_id uuid, worker text, ok boolean, detail jsonb DEFAULT NULL)
RETURNS TABLE (status text)
LANGUAGE sql AS $$
    SELECT backstop._finish(action_id, worker, ok, detail)
$$;

-- Many outcomes in one round trip: [{"action_id": ..., "ok": ..., "detail": {...}}, ...].
-- An outcome whose lease this worker lost is answered 'lease_lost' and
-- changes nothing; the others are recorded.
CREATE FUNCTION backstop.finish_compensations(worker text, results jsonb)
RETURNS TABLE (action_id uuid, status text)
LANGUAGE plpgsql AS $$
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

CREATE FUNCTION backstop._raise_finding(p_kind text, p_severity text, p_agent text, p_action uuid, p_detail jsonb, p_actor text,
                                        OUT finding_id uuid, OUT merged boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_rule text := p_detail ->> 'rule';
    v_key text := coalesce(p_detail ->> 'dedup_key',
                           concat_ws('|', p_kind, p_agent, p_action::text, v_rule));
    f backstop.findings%ROWTYPE;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    -- Two supervisors raising the same finding at once: one creates, one merges.
    PERFORM pg_advisory_xact_lock(1112757331, hashtext(v_key));
    SELECT * INTO f FROM backstop.findings x WHERE x.dedup_key = v_key AND x.status <> 'resolved' FOR UPDATE;
    IF FOUND THEN
        finding_id := f.finding_id;
        merged := true;
    ELSE
        finding_id := gen_random_uuid();
        merged := false;
    END IF;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('finding', p_actor, p_agent, NULL, p_action,
        jsonb_build_object('finding_id', finding_id, 'kind', p_kind, 'severity', p_severity, 'merged', merged,
                           'dedup_key', v_key, 'evidence', p_detail)) l;
    IF merged THEN
        UPDATE backstop.findings x SET count = x.count + 1, last_seq = v_seq, last_at = v_at, detail = p_detail,
               severity = p_severity
         WHERE x.finding_id = f.finding_id;
    ELSE
        INSERT INTO backstop.findings (finding_id, kind, severity, agent, action_id, rule, detail, dedup_key, status,
                                       count, raised_by, raised_seq, raised_at, last_seq, last_at)
        VALUES (finding_id, p_kind, p_severity, p_agent, p_action, v_rule, p_detail, v_key, 'open',
                1, p_actor, v_seq, v_at, v_seq, v_at);
    END IF;
END
$$;

CREATE FUNCTION backstop.raise_finding(kind text, severity text, agent text DEFAULT NULL, action_id uuid DEFAULT NULL, detail jsonb DEFAULT NULL)
RETURNS TABLE (finding_id uuid, merged boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_agent text := raise_finding.agent;
BEGIN
    IF raise_finding.kind IS NULL OR raise_finding.kind NOT IN ('policy_violation', 'low_confidence', 'sampled_divergence',
                                                                'drift', 'complaint_spike', 'compensation_failed') THEN
        PERFORM backstop._bad('raise_finding', format('kind must be one of policy_violation, low_confidence, sampled_divergence, drift, complaint_spike, compensation_failed; got %s',
                                                      coalesce(quote_literal(raise_finding.kind), 'null')));
    END IF;
    IF raise_finding.severity IS NULL OR raise_finding.severity NOT IN ('info', 'low', 'medium', 'high', 'critical') THEN
        PERFORM backstop._bad('raise_finding', format('severity must be one of info, low, medium, high, critical; got %s',
                                                      coalesce(quote_literal(raise_finding.severity), 'null')));
    END IF;
    IF p_agent IS NOT NULL THEN
        PERFORM backstop._check_name('raise_finding', 'agent', p_agent);
    END IF;
    PERFORM backstop._check_json('raise_finding', 'detail', raise_finding.detail, 65536, true);
    IF raise_finding.action_id IS NOT NULL THEN
        SELECT coalesce(p_agent, x.agent) INTO p_agent FROM backstop.actions x WHERE x.action_id = raise_finding.action_id;
        IF NOT FOUND THEN
            PERFORM backstop._bad('raise_finding', format('unknown action_id %s', raise_finding.action_id), 'P0002');
        END IF;
    END IF;
    RETURN QUERY SELECT f.finding_id, f.merged FROM backstop._raise_finding(raise_finding.kind, raise_finding.severity, p_agent,
        raise_finding.action_id, coalesce(raise_finding.detail, '{}'), backstop.actor()) f;
END
$$;

CREATE FUNCTION backstop._finding_status(fn text, p_id uuid, p_status text, p_note text)
RETURNS TABLE (status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    f backstop.findings%ROWTYPE;
    v_actor text := backstop.actor();
    v_seq bigint;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad(fn, 'finding_id is required');
    END IF;
    PERFORM backstop._check_reason(fn, 'note', p_note);
    SELECT * INTO f FROM backstop.findings x WHERE x.finding_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM backstop._bad(fn, format('unknown finding_id %s', p_id), 'P0002');
    END IF;
    IF f.status = 'resolved' OR f.status = p_status THEN
        PERFORM backstop._bad(fn, format('finding %s is already %s', p_id, f.status), '55000');
    END IF;
    SELECT l.seq INTO v_seq FROM backstop._append('finding_' || p_status, v_actor, f.agent, NULL, f.action_id,
        jsonb_build_object('finding_id', p_id, 'status', p_status, 'note', p_note)) l;
    UPDATE backstop.findings x SET status = p_status, status_by = v_actor, status_note = p_note, last_seq = v_seq
     WHERE x.finding_id = p_id;
    RETURN QUERY SELECT p_status;
END
$$;

CREATE FUNCTION backstop.acknowledge_finding(finding_id uuid, note text)
RETURNS TABLE (status text)
LANGUAGE sql AS $$
    SELECT * FROM backstop._finding_status('acknowledge_finding', finding_id, 'acknowledged', note)
$$;

CREATE FUNCTION backstop.resolve_finding(finding_id uuid, note text)
RETURNS TABLE (status text)
LANGUAGE sql AS $$
    SELECT * FROM backstop._finding_status('resolve_finding', finding_id, 'resolved', note)
$$;
