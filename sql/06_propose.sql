-- The agent's gateway: propose, and decision for held actions.

CREATE FUNCTION backstop.propose(
    agent text, tool text, params jsonb,
    amount double precision DEFAULT NULL, confidence double precision DEFAULT NULL,
    reasoning text DEFAULT NULL, inputs jsonb DEFAULT NULL,
    correlation_id text DEFAULT NULL, parent_action uuid DEFAULT NULL,
    idempotency_key text DEFAULT NULL, depends_on uuid[] DEFAULT NULL)
RETURNS TABLE (action_id uuid, verdict text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
-- The hot path of every agent: few statements, each one executor start.
DECLARE
    p_agent text := propose.agent;
    p_tool text := propose.tool;
    p_params jsonb := propose.params;
    -- Taken as double precision so every client's number type reaches it
    -- (numeric, integer and float all cast implicitly); to numeric at once,
    -- which keeps 15 significant digits: exact for any amount up to 1e12.
    p_amount numeric := propose.amount::numeric;
    p_deps uuid[] := propose.depends_on;
    v_class text;
    v_direction text;
    v_value numeric;
    p_conf real := propose.confidence;
    p_corr text := propose.correlation_id;
    p_parent uuid := propose.parent_action;
    p_key text := propose.idempotency_key;
    v_id uuid := gen_random_uuid();
    a backstop.actions%ROWTYPE;
    prev record;
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
    -- A counted repetition ({0,127}) costs the regex engine twenty times a
    -- star: the length is tested apart.
    IF NOT coalesce(
           length(p_agent) <= 128 AND p_agent ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]*$'
       AND length(p_tool) <= 128 AND p_tool ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]*$'
       AND jsonb_typeof(p_params) = 'object' AND backstop._json_size(p_params) <= 65536
       AND (propose.inputs IS NULL OR backstop._json_size(propose.inputs) <= 262144)
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
    -- any agent.
    -- An agent's own login is the common case: no function entry for it.
    IF p_agent IS DISTINCT FROM session_user AND NOT backstop._may_act_as(p_agent) THEN
        PERFORM backstop._bad('propose', format('login %s may not act as agent %s (map it in backstop.agent_logins)',
                                                session_user, p_agent), '42501');
    END IF;
    -- Nested: a condition with a subquery is planned on every call, even
    -- when its first test is false.
    IF p_parent IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM backstop.actions x WHERE x.action_id = p_parent) THEN
            PERFORM backstop._bad('propose', format('parent_action %s is not a known action', p_parent), 'P0002');
        END IF;
    END IF;
    IF p_deps IS NOT NULL THEN
        IF cardinality(p_deps) = 0 THEN
            p_deps := NULL;
        ELSIF cardinality(p_deps) > 100 THEN
            PERFORM backstop._bad('propose', format('depends_on names at most 100 actions; got %s', cardinality(p_deps)));
        ELSE
            SELECT array_agg(DISTINCT d ORDER BY d) INTO p_deps FROM unnest(p_deps) d;
            SELECT string_agg(coalesce(d::text, 'null'), ', ') INTO v_txt FROM unnest(p_deps) d
             WHERE d IS NULL OR NOT EXISTS (SELECT 1 FROM backstop.actions x WHERE x.action_id = d);
            IF v_txt IS NOT NULL THEN
                PERFORM backstop._bad('propose', format('depends_on names unknown actions: %s', v_txt), 'P0002');
            END IF;
        END IF;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM backstop._bad('propose', format('must run at READ COMMITTED isolation (this transaction is %s): the kill switch is checked against the latest committed pause',
                                                current_setting('transaction_isolation')), '25000');
    END IF;

    IF p_key IS NOT NULL THEN
        -- Serialize callers that share a key; the second sees the first's answer.
        -- On a row only the contract writes: an advisory lock's key any
        -- login could take, or read in pg_locks and work back to.
        INSERT INTO backstop.request_claims (scope, key) VALUES ('propose/' || p_agent, p_key) ON CONFLICT DO NOTHING;
        SELECT x.* INTO a FROM backstop.actions x WHERE x.agent = p_agent AND x.idempotency_key = p_key;
        IF FOUND THEN
            -- A replay answers with the action's state now (a pause since
            -- holds it, an executed action is not to be run again); a key
            -- reused for another request is refused, never answered with the
            -- other action.
            SELECT l.params, l.detail ->> 'amount_from' AS amount_from INTO prev
              FROM backstop.action_log l WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at;
            IF NOT FOUND THEN
                SELECT l.params, l.detail ->> 'amount_from' AS amount_from INTO prev
                  FROM backstop.carried_log l WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at;
            END IF;
            IF a.tool <> p_tool OR prev.params IS DISTINCT FROM p_params
               OR p_amount IS DISTINCT FROM (CASE WHEN prev.amount_from IS NULL THEN a.amount END) THEN
                PERFORM backstop._bad('propose', format('idempotency_key %s was used by this agent for another request (action %s: %s %s): use a new key for a new request',
                                                        quote_literal(p_key), a.action_id, a.tool,
                                                        coalesce(backstop.money(a.amount), '')));
            END IF;
            action_id := a.action_id;
            IF a.status IN ('executed', 'failed') THEN
                verdict := 'block';
                reason := format('already %s (seq %s): a replay does not run it again', a.status, a.executed_seq);
            ELSE
                SELECT d.verdict, d.reason INTO verdict, reason FROM backstop._current_verdict(a) d;
            END IF;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- A statement of its own: the next one takes a snapshot after the gate is held.
    PERFORM FROM backstop.kill_gate;
    -- Read after the kill-switch locks are held.
    SELECT a.registry_version AS reg, a.policy_version AS pol, pv.hold_expiry, pv.expiry_effect,
           pv.param_memory, pv.has_cumulative, pv.entity_cumulative, t AS tool_row
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
        v_class := t.class;
        v_direction := t.direction;
        IF t.value_param IS NOT NULL THEN
            -- The registry's value expression decides the money at stake; an
            -- amount the agent passes must agree with it.
            IF strpos(t.value_param, '[') = 0 AND strpos(t.value_param, '+') = 0 THEN
                -- One path, the common case: no function call on the hot path.
                v_txt := backstop.path_get(p_params, t.value_param) #>> '{}';
                IF length(v_txt) <= 20 AND v_txt ~ '^[0-9]+([.][0-9]+)?$'
                   AND length(split_part(v_txt, '.', 1)) <= 13 AND length(split_part(v_txt, '.', 2)) <= 6 THEN
                    v_value := trim_scale(v_txt::numeric);
                ELSE
                    v_value := backstop._value_of(p_params, t.value_param);
                END IF;
            ELSE
                v_value := backstop._value_of(p_params, t.value_param);
            END IF;
            -- Both ways to the value admit only non-negative finite numbers
            -- (the pattern, _value_number): size and decimals are left.
            IF v_value > 1e12 OR scale(v_value) > 6 THEN
                PERFORM backstop._check_amount('propose', v_value);
            END IF;
            IF v_value IS NOT NULL THEN
                IF p_amount IS NULL THEN
                    p_amount := v_value;
                    v_amount_from := 'params.' || t.value_param;
                ELSIF p_amount <> v_value THEN
                    PERFORM backstop._bad('propose', format('amount %s disagrees with the value of %s in its params (%s = %s)',
                                                            p_amount, p_tool, t.value_param, v_value));
                END IF;
            END IF;
        END IF;
        IF t.class_param IS NOT NULL THEN
            v_class := coalesce(t.class_values ->> (backstop.path_get(p_params, t.class_param) #>> '{}'), t.class);
        END IF;
        v_cost := backstop.cost_to_reverse(v_class, t.cost_fixed, t.cost_share, p_amount);
        IF t.entity_param IS NOT NULL THEN
            v_entity := backstop.path_get(p_params, t.entity_param) #>> '{}';
        END IF;
    END IF;

    -- The cumulative rules' gates, in a statement before evaluate() reads
    -- the totals (see _gate_stripe).
    IF v_known AND k.scope IS NULL AND c.has_cumulative AND p_amount > 0 THEN
        PERFORM FROM backstop.value_gates g
         WHERE g.stripe IN (backstop._gate_stripe('agent:' || p_agent),
                            backstop._gate_stripe(CASE WHEN c.entity_cumulative THEN 'entity:' || v_entity END))
         ORDER BY g.stripe
           FOR UPDATE OF g;
    END IF;

    IF k.scope IS NOT NULL THEN
        e := ROW('block', backstop._paused_reason(k.scope, k.target, k.reason, k.changed_by), 'kill_switch', 0);
    -- Required means the params carry it: an amount the agent states alone
    -- is its word, not the call's.
    ELSIF v_known AND t.value_required AND v_value IS NULL THEN
        e := ROW('block', format('%s puts money at stake and its value is required: params.%s carries none', p_tool, t.value_param),
                 'value_required', 0);
    ELSIF v_known AND t.inverse_only THEN
        e := ROW('block', format('%s undoes other tools: compensation workers run it, agents do not (agent_callable = true in the registry allows it)', p_tool),
                 'inverse_only', 0);
    ELSIF NOT v_known THEN
        e := ROW('block', CASE WHEN c.reg IS NULL THEN format('unknown tool %s: no tool registry is loaded', p_tool)
                               ELSE format('unknown tool %s: not in registry version %s', p_tool, c.reg) END,
                 'unknown_tool', 0);
    ELSE
        e := backstop.evaluate(c.pol, p_agent, p_tool, v_class, p_amount, v_cost, p_conf, p_params, false, v_direction, v_entity);
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
                'verdict', e.verdict, 'reason', e.reason, 'rule', e.rule, 'class', v_class, 'direction', v_direction,
                'depends_on', p_deps,
                'cost_to_reverse', v_cost, 'approvals_needed', nullif(e.approvals, 0),
                'expires_at', v_expires, 'expiry_effect', v_effect,
                'idempotency_key', p_key, 'entity', v_entity, 'amount_from', v_amount_from)),
            p_corr, p_parent, p_amount, p_conf, propose.reasoning, propose.inputs, p_params, NULL, c.pol, c.reg)
    RETURNING l.seq, l.at INTO v_seq, v_at;

    INSERT INTO backstop.actions (action_id, agent, tool, class, amount, confidence, cost_to_reverse, correlation_id,
                                  parent_action, idempotency_key, entity, verdict, reason, rule, status,
                                  approvals_needed, approvals, expires_at, expiry_effect, proposed_seq, proposed_at,
                                  decided_seq, executed_seq, executed_at, inverse_tool, inverse_params, inverse_missing,
                                  comp_deadline, comp_condition, policy_version, registry_version, updated_seq, depends_on,
                                  bound_params)
    VALUES (v_id, p_agent, p_tool, v_class, p_amount, p_conf, v_cost, p_corr,
            p_parent, p_key, v_entity, e.verdict, e.reason, e.rule, v_kind,
            e.approvals, 0, v_expires, v_effect, v_seq, v_at,
            NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, c.pol, c.reg, v_seq, p_deps,
            -- What the inverse binds from the params, for record_result():
            -- it then never reads the log. A field present with a JSON null
            -- binds null; an absent field does not bind.
            CASE WHEN v_class IN ('reversible', 'conditional') THEN
                (SELECT jsonb_object_agg(j.key, backstop.path_get(p_params, substr(j.value #>> '{}', 8)))
                   FROM jsonb_each(t.bindings) j
                  WHERE j.value #>> '{}' LIKE 'params.%'
                    AND backstop.path_get(p_params, substr(j.value #>> '{}', 8)) IS NOT NULL) END);

    IF e.verdict = 'hold' THEN
        INSERT INTO backstop.approval_queue (action_id, agent, tool, amount, rule, reason, approvals_needed,
                                             held_at, expires_at, proposed_seq)
        VALUES (v_id, p_agent, p_tool, p_amount, e.rule, e.reason, e.approvals, v_at, v_expires, v_seq);
    ELSIF e.verdict = 'allow' AND ((c.has_cumulative AND p_amount > 0) OR c.param_memory) THEN
        PERFORM backstop._remember(c.pol, c.param_memory, p_agent, p_params, p_amount, v_seq, v_direction, v_entity,
                                   c.has_cumulative, c.entity_cumulative);
    END IF;

    action_id := v_id;
    verdict := e.verdict;
    reason := e.reason;
    RETURN NEXT;
END
$$;
SELECT backstop._grant('propose', 'agent');
COMMENT ON FUNCTION backstop.propose IS 'The agent''s gateway: checks the kill switch, the registry and the policy, appends proposed and the verdict, and returns (action_id, verdict ''allow'' | ''hold'' | ''block'', reason). depends_on names earlier actions this one depends on (with parent_action, what a rollback plan follows; a correlation id only groups). A replay of the same request (same idempotency key, tool, params and amount) answers with the action''s state now; a key reused for another request is refused. Callers: agent (as itself or an agent mapped to its login in agent_logins).';

-- propose_batch's fast path: the whole batch in one statement that reads
-- and decides and one that writes (two more only when a per-entity limit or
-- a memory rule has something to record), not two dozen statements a
-- request. Each statement costs its executor start (40,000 to 45,000
-- instructions measured), which a batch of sixteen then pays once, not
-- sixteen times.
--
-- It decides only the common case and leaves every other to propose(),
-- request by request, so there is one place that words a refusal or a
-- hold: it returns no row, and writes nothing, unless every request is well
-- formed, names a known agent-callable tool the login may act for, carries
-- no idempotency key, parent or dependency, is paused by no switch, and is
-- allowed by every rule. Where a later request could see an earlier one's
-- writes (the cumulative and memory rules), it requires the requests'
-- agents (and, for per-entity limits, their entities) to differ. What it
-- writes is what propose() would: the same rows, column for column (a test
-- runs both on the same batches and compares them).
--
-- The owner's, granted to no one: propose_batch (a definer) calls it. It
-- takes the kill-switch gate itself, before it reads anything.
--
-- A decided request, as the deciding statement hands it to the writing
-- one: one array of these is one aggregate to start and one array to
-- unnest, where an array a column was fifteen of each (39,000 instructions
-- an action in batches of eight, counted).
CREATE TYPE backstop._proposal AS (
    i integer, agent text, tool text, params jsonb, amount numeric, conf real, reasoning text, inputs jsonb, corr text,
    class text, direction text, cost numeric, entity text, amount_from text, bound jsonb);

CREATE FUNCTION backstop._propose_set(requests jsonb)
RETURNS TABLE (i integer, action_id uuid, verdict text, reason text)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp
-- A plan over a set of requests is estimated at thousands of rows (a
-- function's rows are guessed, not known) and would be JIT-compiled on a
-- server with jit on: seconds of compiling for sixteen rows. Planned once
-- a session: planning the statement costs more than running it. Kept for
-- the session, a plan must not scan a table that grows (see _record_set,
-- whose plans, made on small tables, scanned `actions` whole every batch);
-- every read here is by key, so no sequential scan is planned either.
SET jit = off SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    v_go boolean;
    v_reg bigint;
    v_pol bigint;
    v_memory boolean;
    v_cumulative boolean;
    a_req backstop._proposal[];
    v_remember boolean;
    b_i integer[];
    b_id uuid[];
    b_seq bigint[];
BEGIN
    -- A statement of its own: the next one takes a snapshot after the gate is held.
    PERFORM FROM backstop.kill_gate;
    -- Then the cumulative rules' gates of the requests' agents (see
    -- _gate_stripe), before the totals are read. A path query takes the
    -- agents: reading each request whole to take one field cost four times
    -- as much. With a rule per entity this path declines and takes none:
    -- propose_batch's loop takes every gate of the batch in one statement,
    -- and agents' gates taken here first could come after an entity's in
    -- that order, and two batches wait on each other.
    PERFORM FROM backstop.value_gates g
     WHERE g.stripe = ANY (ARRAY(
               SELECT backstop._gate_stripe('agent:' || a.agent)
                 FROM jsonb_array_elements_text(jsonb_path_query_array(requests, '$[*].agent')) a(agent)))
       AND EXISTS (SELECT FROM backstop.active v JOIN backstop.policy_versions pv ON pv.version = v.policy_version
                    WHERE pv.has_cumulative AND NOT pv.entity_cumulative)
     ORDER BY g.stripe
       FOR UPDATE OF g;
    WITH ctx AS (
        SELECT a.registry_version AS reg, a.policy_version AS pol,
               coalesce(pv.param_memory, false) AS memory, coalesce(pv.has_cumulative, false) AS cumulative,
               coalesce(pv.entity_cumulative, false) AS entity_cumulative, backstop._trusted() AS trusted
          FROM backstop.active a LEFT JOIN backstop.policy_versions pv ON pv.version = a.policy_version
    ), req AS (
        SELECT e.k::integer - 1 AS i, e.r ->> 'agent' AS agent, e.r ->> 'tool' AS tool, e.r -> 'params' AS params,
               e.r ->> 'amount' AS amount_txt, e.r ->> 'confidence' AS conf_txt,
               e.r ->> 'reasoning' AS reasoning, nullif(e.r -> 'inputs', 'null'::jsonb) AS inputs,
               e.r ->> 'correlation_id' AS corr,
               (e.r ->> 'parent_action') IS NULL AND (e.r ->> 'idempotency_key') IS NULL
                   -- (a depends_on of another JSON type is refused there, not dropped)
                   AND (e.r -> 'depends_on' IS NULL OR e.r -> 'depends_on' IN ('null'::jsonb, '[]'::jsonb))
                   -- propose_batch names an unknown key when this path declines.
                   -- (No key left once the known ones are taken away: an
                   -- expression, where reading the keys was a subquery a request.)
                   AND CASE WHEN jsonb_typeof(e.r) = 'object'
                       THEN e.r - '{agent,tool,params,amount,confidence,reasoning,inputs,correlation_id,parent_action,idempotency_key,depends_on}'::text[]
                            = '{}'::jsonb
                       END AS plain
          FROM jsonb_array_elements(requests) WITH ORDINALITY e(r, k)
    ), x1 AS (
        -- Numbers are converted as propose()'s arguments convert them (text
        -- to double precision, then numeric or real), and only text no
        -- conversion can refuse. Lengths are counted apart from the
        -- patterns: a counted repeat ({1,20}) makes PostgreSQL's matcher
        -- build a state a character, each call (the confidence's pattern
        -- cost 14,000 instructions a request; this one and the length, 10,000).
        SELECT q.*, c.*, t.name IS NOT NULL AS known, t.class AS t_class, t.direction, t.value_param, t.value_required,
               t.inverse_only, t.class_param, t.class_values, t.cost_fixed, t.cost_share, t.entity_param, t.bindings,
               CASE WHEN q.amount_txt ~ '^[0-9]+([.][0-9]+)?$' AND length(split_part(q.amount_txt, '.', 1)) <= 13
                         AND length(split_part(q.amount_txt, '.', 2)) <= 6
                    THEN q.amount_txt::double precision::numeric END AS amt,
               -- 0 or 1 with up to 20 decimals (only zeros after 1), or up to 20 after the point alone
               CASE WHEN q.conf_txt ~ '^(0([.][0-9]+)?|1([.]0+)?|[.][0-9]+)$'
                         AND length(q.conf_txt) <= CASE WHEN left(q.conf_txt, 1) = '.' THEN 21 ELSE 22 END
                    THEN q.conf_txt::double precision::real END AS conf,
               backstop.path_get(q.params, t.value_param) AS vj, lm.mapped
          FROM req q CROSS JOIN ctx c LEFT JOIN backstop.tools t ON t.version = c.reg AND t.name = q.tool
          -- The identity check's mapping, probed a request (the LIMIT keeps
          -- it a lookup): as a subquery it was planned as a hash of every
          -- agent the login is mapped to, read each batch, and a gateway
          -- serves thousands.
          LEFT JOIN LATERAL (SELECT true AS mapped FROM backstop.agent_logins m
                              WHERE m.login = session_user AND m.agent = q.agent LIMIT 1) lm ON true
    ), x2 AS (
        SELECT x1.*,
               x1.value_param IS NULL
                   OR (strpos(x1.value_param, '[') = 0 AND strpos(x1.value_param, '+') = 0
                       AND (x1.vj IS NULL
                            OR (length(x1.vj #>> '{}') <= 20 AND (x1.vj #>> '{}') ~ '^[0-9]+([.][0-9]+)?$'
                                AND length(split_part(x1.vj #>> '{}', '.', 1)) <= 13
                                AND length(split_part(x1.vj #>> '{}', '.', 2)) <= 6))) AS value_ok
          FROM x1
    ), x3 AS MATERIALIZED (
        -- Materialized: what x passes cost_to_reverse is then a column, and
        -- the planner inlines the function (an expression passed to a
        -- parameter it reads twice would be run as a function call a row).
        -- The columns x reads, by name: every column a materialized CTE
        -- carries is copied a request and set up each batch (x2.* and x3.*
        -- were 40 and 45 wide; these 31 and 21 save 20,000 instructions an
        -- action in batches of eight, counted).
        SELECT x2.i, x2.agent, x2.tool, x2.params, x2.conf, x2.reasoning, x2.inputs, x2.corr, x2.reg, x2.pol,
               x2.memory, x2.cumulative, x2.entity_cumulative, x2.trusted, x2.direction, x2.amt, x2.amount_txt,
               x2.conf_txt, x2.plain, x2.mapped, x2.known, x2.inverse_only, x2.value_ok, x2.value_required,
               x2.value_param, x2.cost_fixed, x2.cost_share, x2.bindings,
               CASE WHEN x2.value_ok AND x2.value_param IS NOT NULL AND x2.vj IS NOT NULL
                    THEN trim_scale((x2.vj #>> '{}')::numeric) END AS val,
               CASE WHEN x2.class_param IS NOT NULL
                    THEN coalesce(x2.class_values ->> (backstop.path_get(x2.params, x2.class_param) #>> '{}'), x2.t_class)
                    ELSE x2.t_class END AS class,
               CASE WHEN x2.entity_param IS NOT NULL THEN backstop.path_get(x2.params, x2.entity_param) #>> '{}' END AS entity
          FROM x2
    ), x AS MATERIALIZED (
        SELECT x3.i, x3.agent, x3.tool, x3.params, x3.conf, x3.reasoning, x3.inputs, x3.corr, x3.reg, x3.pol,
               x3.memory, x3.cumulative, x3.entity_cumulative, x3.direction, x3.entity, x3.class,
               coalesce(x3.amt, x3.val) AS amount,
               CASE WHEN x3.amt IS NULL AND x3.val IS NOT NULL THEN 'params.' || x3.value_param END AS amount_from,
               backstop.cost_to_reverse(x3.class, x3.cost_fixed, x3.cost_share, coalesce(x3.amt, x3.val)) AS cost,
               -- propose()'s bound_params
               CASE WHEN x3.class IN ('reversible', 'conditional') THEN
                   (SELECT jsonb_object_agg(j.key, backstop.path_get(x3.params, substr(j.value #>> '{}', 8)))
                      FROM jsonb_each(x3.bindings) j
                     WHERE j.value #>> '{}' LIKE 'params.%'
                       AND backstop.path_get(x3.params, substr(j.value #>> '{}', 8)) IS NOT NULL) END AS bound,
               coalesce(
                   -- propose()'s test of well-formed input
                   length(x3.agent) <= 128 AND x3.agent ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]*$'
                   AND length(x3.tool) <= 128 AND x3.tool ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]*$'
                   AND jsonb_typeof(x3.params) = 'object' AND pg_column_size(x3.params) <= 65536
                   AND (x3.inputs IS NULL OR pg_column_size(x3.inputs) <= 262144)
                   AND (x3.reasoning IS NULL OR length(x3.reasoning) <= 65536)
                   AND (x3.corr IS NULL OR length(x3.corr) <= 256)
                   AND (x3.amount_txt IS NULL OR (x3.amt >= 0 AND x3.amt <= 1e12 AND scale(x3.amt) <= 6))
                   AND (x3.conf_txt IS NULL OR x3.conf IS NOT NULL)
                   AND x3.plain
                   -- the identity check (_may_act_as)
                   AND (x3.agent = session_user OR x3.trusted OR x3.mapped)
                   -- a known tool, callable by agents, its value read and agreeing
                   AND x3.known AND NOT x3.inverse_only AND x3.value_ok
                   AND (x3.val IS NULL OR x3.val <= 1e12)
                   AND NOT (x3.value_required AND x3.val IS NULL)
                   AND (x3.amt IS NULL OR x3.val IS NULL OR x3.amt = x3.val), false) AS ok
          FROM x3
    ), rules AS MATERIALIZED (
        -- evaluate()'s rules, for every request at once: the same filters,
        -- overrides and tests.
        SELECT x.i, x.agent, x.amount, x.cost, x.conf, x.entity, pr.kind, pr.per, pr.rule_window, pr.list, pr.param,
               pr.key_param, lt.table_name AS list_table, lt.column_name AS list_column,
               coalesce((o.o ->> 'threshold')::numeric, pr.threshold) AS thr,
               coalesce((o.o ->> 'confidence_below')::real, pr.confidence_below) AS cb,
               backstop.path_get(x.params, pr.param) #>> '{}' AS v,
               backstop.path_get(x.params, pr.key_param) #>> '{}' AS k
          FROM x
          JOIN backstop.policy_rules pr
            ON pr.version = x.pol
           AND (pr.agents IS NULL OR x.agent = ANY (pr.agents))
           AND (pr.tools IS NULL OR x.tool = ANY (pr.tools))
           AND (pr.classes IS NULL OR coalesce(x.class, 'unknown') = ANY (pr.classes))
           AND (pr.direction IS NULL OR pr.direction = x.direction)
          LEFT JOIN backstop.policy_list_tables lt ON lt.version = pr.version AND lt.list = pr.list
          CROSS JOIN LATERAL (SELECT coalesce(pr.overrides -> ('agent:' || x.agent), pr.overrides -> ('tool:' || x.tool)) AS o) o
         WHERE x.ok AND (o.o IS NULL OR (o.o ->> 'enabled') IS DISTINCT FROM 'false')
    ), listed AS MATERIALIZED (
        -- A list kept in a table: one read of it for the batch, as the check role.
        SELECT r.list_table, r.list_column,
               backstop_check.in_list_any(r.list_table, r.list_column, array_agg(DISTINCT r.v)) AS hits
          FROM rules r
         WHERE r.kind = 'in_list' AND r.list_table IS NOT NULL AND r.v IS NOT NULL
         GROUP BY r.list_table, r.list_column
    ), hit AS (
        SELECT 1
          FROM rules r
         WHERE coalesce(CASE r.kind
               WHEN 'amount_over' THEN r.amount > r.thr
               WHEN 'cost_to_reverse' THEN r.cost > r.thr AND coalesce(r.conf, 0) < r.cb
               WHEN 'confidence_below' THEN coalesce(r.conf, 0) < r.cb
               WHEN 'cumulative' THEN
                   CASE WHEN r.per = 'entity'
                        THEN r.entity IS NOT NULL AND coalesce(r.amount, 0) > 0
                             AND (SELECT coalesce(sum(m.total), 0) FROM backstop.entity_value_minutes m
                                   WHERE m.entity = r.entity
                                     AND (m.entity, m.minute) > (r.entity, date_trunc('minute', now() - r.rule_window)))
                                 + r.amount > r.thr
                        ELSE coalesce(r.amount, 0) > 0
                             AND (SELECT coalesce(sum(m.total), 0) FROM backstop.agent_value_minutes m
                                   WHERE m.agent = r.agent
                                     AND (m.agent, m.minute) > (r.agent, date_trunc('minute', now() - r.rule_window)))
                                 + r.amount > r.thr END
               WHEN 'in_list' THEN
                   r.v IS NOT NULL AND CASE WHEN r.list_table IS NOT NULL
                       THEN r.v = ANY (coalesce((SELECT l.hits FROM listed l WHERE l.list_table = r.list_table AND l.list_column = r.list_column), '{}'))
                       ELSE EXISTS (SELECT 1 FROM backstop.policy_lists pl
                                     WHERE pl.version = (SELECT c.pol FROM ctx c) AND pl.list = r.list AND pl.value = r.v) END
               WHEN 'new_counterparty' THEN
                   r.v IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM backstop.counterparties c WHERE c.agent = r.agent AND c.param = r.param AND c.value = r.v)
               WHEN 'changed_value' THEN
                   r.k IS NOT NULL AND EXISTS (
                       SELECT 1 FROM backstop.param_values pv2
                        WHERE pv2.agent = r.agent AND pv2.key_param = r.key_param AND pv2.key = r.k
                          AND pv2.param = r.param AND pv2.value IS DISTINCT FROM r.v)
               WHEN 'always' THEN true
               -- A kind this path does not know: propose() decides.
               ELSE true END, false)
         LIMIT 1
    )
    SELECT bool_and(x.ok)
               AND NOT EXISTS (SELECT 1 FROM hit)
               AND NOT EXISTS (SELECT 1 FROM backstop.kill_switches k
                                WHERE k.paused AND (k.scope = 'fleet'
                                                    OR (k.scope = 'agent' AND k.target IN (SELECT y.agent FROM x y))
                                                    OR (k.scope = 'tool' AND k.target IN (SELECT y.tool FROM x y))))
               AND (NOT (bool_or(x.memory) OR bool_or(x.cumulative)) OR count(DISTINCT x.agent) = count(*))
               -- (the entities' gates are the loop's)
               AND NOT bool_or(x.entity_cumulative),
           min(x.reg), min(x.pol), bool_and(x.memory), bool_and(x.cumulative),
           -- Whether an allowed request teaches the memory rules anything (a
           -- parameter they read is in its params): the writes run only then.
           bool_and(x.memory) AND EXISTS (
               SELECT 1 FROM x y JOIN backstop.policy_rules r ON r.version = y.pol
                WHERE r.kind IN ('new_counterparty', 'changed_value')
                  AND backstop.path_get(y.params, CASE r.kind WHEN 'new_counterparty' THEN r.param ELSE r.key_param END) IS NOT NULL),
           array_agg(ROW(x.i, x.agent, x.tool, x.params, x.amount, x.conf, x.reasoning, x.inputs, x.corr, x.class,
                         x.direction, x.cost, x.entity, x.amount_from, x.bound)::backstop._proposal)
      INTO v_go, v_reg, v_pol, v_memory, v_cumulative, v_remember, a_req
      FROM x;
    IF NOT coalesce(v_go, false) THEN
        RETURN;
    END IF;

    WITH q AS MATERIALIZED (
        SELECT u.*, gen_random_uuid() AS id FROM unnest(a_req) u
    ), l AS (
        -- In the requests' order: the log's order is theirs, as in propose()'s loop.
        INSERT INTO backstop.action_log AS l
            (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence,
             reasoning, inputs, params, result, policy_version, registry_version)
        SELECT nextval('backstop.action_log_seq'), clock_timestamp(), pg_current_xact_id(), 'allowed', q.agent, q.agent,
               q.tool, q.id,
               jsonb_strip_nulls(jsonb_build_object(
                   'verdict', 'allow', 'reason', 'allowed by policy', 'class', q.class, 'direction', q.direction,
                   'cost_to_reverse', q.cost, 'entity', q.entity, 'amount_from', q.amount_from)),
               q.corr, NULL, q.amount, q.conf, q.reasoning, q.inputs, q.params, NULL, v_pol, v_reg
          FROM q ORDER BY q.i
        RETURNING l.seq, l.at, l.action_id
    ), ins AS (
        INSERT INTO backstop.actions (action_id, agent, tool, class, amount, confidence, cost_to_reverse, correlation_id,
                                      parent_action, idempotency_key, entity, verdict, reason, rule, status,
                                      approvals_needed, approvals, expires_at, expiry_effect, proposed_seq, proposed_at,
                                      decided_seq, executed_seq, executed_at, inverse_tool, inverse_params, inverse_missing,
                                      comp_deadline, comp_condition, policy_version, registry_version, updated_seq, depends_on,
                                      bound_params)
        SELECT q.id, q.agent, q.tool, q.class, q.amount, q.conf, q.cost, q.corr,
               NULL, NULL, q.entity, 'allow', 'allowed by policy', NULL, 'allowed',
               0, 0, NULL, NULL, l.seq, l.at,
               NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, v_pol, v_reg, l.seq, NULL, q.bound
          FROM q JOIN l ON l.action_id = q.id
    ), agent_minutes AS (
        -- _remember's writes: the agents differ, so no row is added to twice.
        INSERT INTO backstop.agent_value_minutes AS m (agent, minute, total)
        SELECT q.agent, date_trunc('minute', now()), q.amount FROM q
         WHERE v_cumulative AND q.amount > 0 AND q.direction IS DISTINCT FROM 'in'
        ON CONFLICT (agent, minute) DO UPDATE SET total = m.total + excluded.total
    )
    SELECT array_agg(s.i), array_agg(s.id), array_agg(s.seq) INTO b_i, b_id, b_seq
      FROM (SELECT q.i, q.id, l.seq FROM q JOIN l ON l.action_id = q.id ORDER BY q.i) s;

    -- The rest of _remember's writes, only when they have something to write
    -- (the entities' totals never: with a rule per entity, this path declines).
    IF v_remember THEN
        WITH q AS (
            SELECT u.agent, u.params, w.seq
              FROM unnest(a_req) u
              JOIN unnest(b_i, b_seq) AS w(i, seq) ON w.i = u.i
        ), counterparties AS (
            INSERT INTO backstop.counterparties (agent, param, value, first_seq)
            SELECT q.agent, r.param, backstop.path_get(q.params, r.param) #>> '{}', q.seq
              FROM q JOIN backstop.policy_rules r ON r.version = v_pol AND r.kind = 'new_counterparty'
             WHERE backstop.path_get(q.params, r.param) #>> '{}' IS NOT NULL
            ON CONFLICT DO NOTHING
        )
        INSERT INTO backstop.param_values AS pv (agent, key_param, key, param, value, last_seq)
        SELECT DISTINCT ON (q.agent, r.key_param, backstop.path_get(q.params, r.key_param) #>> '{}', r.param)
               q.agent, r.key_param, backstop.path_get(q.params, r.key_param) #>> '{}', r.param,
               backstop.path_get(q.params, r.param) #>> '{}', q.seq
          FROM q JOIN backstop.policy_rules r ON r.version = v_pol AND r.kind = 'changed_value'
         WHERE backstop.path_get(q.params, r.key_param) #>> '{}' IS NOT NULL
        ON CONFLICT (agent, key_param, key, param) DO UPDATE SET value = excluded.value, last_seq = excluded.last_seq;
    END IF;

    FOR k IN 1 .. cardinality(b_i) LOOP
        i := b_i[k];
        action_id := b_id[k];
        verdict := 'allow';
        reason := 'allowed by policy';
        RETURN NEXT;
    END LOOP;
END
$$;

-- Many proposals in one call and one transaction, for a gateway process
-- that serves several agents (one login mapped to them in agent_logins):
-- one commit, one round trip, one kill-switch gate for the batch. Each
-- request is propose()'s, in order, with every check propose() makes (its
-- identity check included: the login must be able to act as each request's
-- agent); a later request sees an earlier one's writes (cumulative limits,
-- idempotency keys). All or nothing: the first refused request aborts the
-- batch, nothing is written, and the error names the request by index, so
-- the gateway can resubmit the others.
-- A definer only to call _propose_set, which decides the common batch in
-- two statements; every other goes to propose(), request by request, which
-- checks who the session is (session_user) whoever runs it.
CREATE FUNCTION backstop.propose_batch(requests jsonb)
RETURNS TABLE (i integer, action_id uuid, verdict text, reason text)
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
    IF requests IS NULL OR jsonb_typeof(requests) <> 'array' OR jsonb_array_length(requests) NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'propose_batch: requests must be a JSON array of 1 to 500 objects, each with propose()''s arguments by name';
    END IF;
    -- From three requests: the set-based path's own start costs more than
    -- one or two requests cost by the loop (per action, in instructions:
    -- 0.97 M plus 5.7 M a batch against 2.55 M plus 1.9 M a batch).
    IF jsonb_array_length(requests) >= 3 AND current_setting('transaction_isolation') = 'read committed' THEN
        RETURN QUERY SELECT f.i, f.action_id, f.verdict, f.reason FROM backstop._propose_set(requests) f;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    -- A misspelt key would otherwise be dropped without a word (an
    -- "ammount" never checked against the params).
    SELECT format('request %s: %s', e.k - 1,
                  CASE WHEN jsonb_typeof(e.v) <> 'object' THEN 'not a JSON object'
                       WHEN jsonb_typeof(e.v -> 'depends_on') NOT IN ('array', 'null')
                       THEN format('depends_on must be a JSON array of action ids; got a JSON %s', jsonb_typeof(e.v -> 'depends_on'))
                       ELSE 'unknown key(s) ' || (SELECT string_agg(quote_ident(key), ', ' ORDER BY key) FROM jsonb_object_keys(e.v) key
                                                  WHERE key <> ALL ('{agent,tool,params,amount,confidence,reasoning,inputs,correlation_id,parent_action,idempotency_key,depends_on}'))
                       END)
      INTO v_bad
      FROM jsonb_array_elements(requests) WITH ORDINALITY e(v, k)
     WHERE jsonb_typeof(e.v) <> 'object'
        OR jsonb_typeof(e.v -> 'depends_on') NOT IN ('array', 'null')
        OR EXISTS (SELECT 1 FROM jsonb_object_keys(e.v) key
                    WHERE key <> ALL ('{agent,tool,params,amount,confidence,reasoning,inputs,correlation_id,parent_action,idempotency_key,depends_on}'))
     ORDER BY e.k
     LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'propose_batch: ' || v_bad;
    END IF;
    -- The kill-switch gate, then the whole batch's cumulative gates at once
    -- (see _gate_stripe): request by request, a later request's gate could
    -- come before an earlier one's, and two batches wait on each other. The
    -- gates of each request's agent, and of its entity when a rule counts
    -- per entity, read from the requests as sent: a request the batch
    -- refuses only held a gate until the refusal.
    PERFORM FROM backstop.kill_gate;
    PERFORM FROM backstop.value_gates g
     WHERE g.stripe = ANY (ARRAY(
               -- The agents' (a path query: reading each request whole
               -- to take one field cost four times as much).
               SELECT backstop._gate_stripe('agent:' || a.agent)
                 FROM jsonb_array_elements_text(jsonb_path_query_array(requests, '$[*].agent')) a(agent)
                WHERE EXISTS (SELECT FROM backstop.active v JOIN backstop.policy_versions pv ON pv.version = v.policy_version
                               WHERE pv.has_cumulative)
               UNION ALL
               SELECT backstop._gate_stripe('entity:' || (backstop.path_get(e.r -> 'params', t.entity_param) #>> '{}'))
                 FROM backstop.active v
                 JOIN backstop.policy_versions pv
                   ON pv.version = v.policy_version AND pv.has_cumulative AND pv.entity_cumulative
                CROSS JOIN jsonb_array_elements(requests) e(r)
                 JOIN backstop.tools t ON t.version = v.registry_version AND t.name = e.r ->> 'tool'
                WHERE jsonb_typeof(e.r) = 'object'))
     ORDER BY g.stripe
       FOR UPDATE OF g;
    -- One block for the whole loop (one subtransaction, not one a request):
    -- it only puts the request's index on the error.
    BEGIN
        FOR r IN SELECT e.v FROM jsonb_array_elements(requests) e(v) LOOP
            SELECT p.action_id, p.verdict, p.reason INTO d
              FROM backstop.propose(r ->> 'agent', r ->> 'tool', r -> 'params',
                                    (r ->> 'amount')::double precision, (r ->> 'confidence')::double precision,
                                    r ->> 'reasoning', nullif(r -> 'inputs', 'null'::jsonb), r ->> 'correlation_id',
                                    (r ->> 'parent_action')::uuid, r ->> 'idempotency_key',
                                    CASE WHEN jsonb_typeof(r -> 'depends_on') = 'array'
                                         THEN ARRAY(SELECT x::uuid FROM jsonb_array_elements_text(r -> 'depends_on') x) END) p;
            i := n;
            action_id := d.action_id;
            verdict := d.verdict;
            reason := d.reason;
            RETURN NEXT;
            n := n + 1;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL,
                                v_hint = PG_EXCEPTION_HINT;
        -- The contract's own refusals carry a message alone.
        IF v_detail = '' AND v_hint = '' THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = format('propose_batch: request %s: %s', n, v_msg);
        END IF;
        RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = format('propose_batch: request %s: %s', n, v_msg),
                              DETAIL = v_detail, HINT = v_hint;
    END;
END
$$;
SELECT backstop._grant('propose_batch', 'agent');
COMMENT ON FUNCTION backstop.propose_batch IS 'propose() for a JSON array of 1 to 500 requests (objects with propose()''s arguments by name), in order, in one transaction: a gateway serving several agents makes one call, one commit and one kill-switch gate for them. Every check of propose() applies to each request, identity included. All or nothing: the first refused request aborts the batch (nothing written) with its error, prefixed "propose_batch: request I:". Callers: agent. Returns (i: the request''s index from 0, action_id, verdict, reason).';

-- The verdict an action has now, as decision() and a replayed propose()
-- answer it.
CREATE FUNCTION backstop._current_verdict(a backstop.actions)
RETURNS TABLE (verdict text, reason text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k record;
    v_by text;
BEGIN
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

CREATE FUNCTION backstop.decision(action_id uuid)
RETURNS TABLE (verdict text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    a backstop.actions%ROWTYPE;
BEGIN
    IF decision.action_id IS NULL THEN
        PERFORM backstop._bad('decision', 'action_id is required');
    END IF;
    SELECT * INTO a FROM backstop.actions x WHERE x.action_id = decision.action_id;
    IF NOT FOUND THEN
        PERFORM backstop._bad('decision', format('unknown action_id %s', decision.action_id), 'P0002');
    END IF;
    IF NOT backstop._may_act_as(a.agent) THEN
        PERFORM backstop._bad('decision', format('action %s is not one of login %s''s agents', decision.action_id, session_user), '42501');
    END IF;
    RETURN QUERY SELECT d.verdict, d.reason FROM backstop._current_verdict(a) d;
END
$$;
SELECT backstop._grant('decision', 'agent');
COMMENT ON FUNCTION backstop.decision IS 'The current verdict of one of the caller''s own actions: ''hold'' until decided, ''allow'' once approved, ''block'' when rejected or expired. Callers: agent. Returns (verdict, reason).';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.actions IS 'One row per proposed action: verdict, status (allowed, held, blocked, rejected, expired, executed, failed), approvals, result and the staged inverse. Readers: every duty but agent.';
