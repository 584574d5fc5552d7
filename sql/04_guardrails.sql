-- Pre-action guardrails: the policy's rules, evaluated inside propose, and
-- the memory some rules keep of what each agent did.

-- Evaluate the pre-action rules of one policy version. First match wins.
-- Returns the verdict, the reason shown to the approver, the rule's name and
-- the number of approvals a hold needs.
CREATE TYPE backstop.verdict AS (verdict text, reason text, rule text, approvals integer);

-- Returns a composite rather than OUT parameters so that callers can assign
-- it as a simple expression (no executor start per call).
-- With p_stateless, rules that depend on what else was allowed (cumulative,
-- new_counterparty, changed_value) are skipped: the supervisor's after-the-
-- fact review would otherwise count the action against itself.
CREATE FUNCTION backstop.evaluate(
    p_version bigint, p_agent text, p_tool text, p_class text,
    p_amount numeric, p_cost numeric, p_confidence real, p_params jsonb,
    p_stateless boolean DEFAULT false, p_direction text DEFAULT NULL, p_entity text DEFAULT NULL)
RETURNS backstop.verdict
-- As the owner: a policy list kept in a table is read through
-- backstop_check.in_list, which no duty may call with a table of its choice.
-- Its plans are kept for the session (from its sixth call); one made while
-- the per-minute totals were a few dozen rows scanned the whole table for
-- every proposal after. Every read here is by key: no sequential scan.
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp SET enable_seqscan = off STABLE AS $$
DECLARE
    res backstop.verdict;
    r record;
    o jsonb;
    thr numeric;
    cb real;
    hit boolean;
    v text;
    k text;
    total numeric;
    pv backstop.policy_versions%ROWTYPE;
BEGIN
    res.verdict := 'allow';
    res.reason := 'allowed by policy';
    res.approvals := 0;
    IF p_version IS NULL THEN
        RETURN res;
    END IF;
    -- The rules' filters are applied by the query (one executor pass, not a
    -- PL/pgSQL test per rule), and a list's table comes with its rule.
    FOR r IN SELECT pr.*, lt.table_name AS list_table, lt.column_name AS list_column
               FROM backstop.policy_rules pr
               LEFT JOIN backstop.policy_list_tables lt ON lt.version = pr.version AND lt.list = pr.list
              WHERE pr.version = p_version
                AND NOT (coalesce(p_stateless, false) AND pr.kind IN ('cumulative', 'new_counterparty', 'changed_value'))
                AND (pr.agents IS NULL OR p_agent = ANY (pr.agents))
                AND (pr.tools IS NULL OR p_tool = ANY (pr.tools))
                AND (pr.classes IS NULL OR coalesce(p_class, 'unknown') = ANY (pr.classes))
                -- A rule about money out says nothing about money in, nor about a tool with no direction.
                AND (pr.direction IS NULL OR pr.direction = p_direction)
              ORDER BY pr.ord LOOP
        -- Per-agent overrides take precedence over per-tool ones.
        o := coalesce(r.overrides -> ('agent:' || p_agent), r.overrides -> ('tool:' || p_tool));
        CONTINUE WHEN o IS NOT NULL AND (o ->> 'enabled') = 'false';
        thr := coalesce((o ->> 'threshold')::numeric, r.threshold);
        cb := coalesce((o ->> 'confidence_below')::real, r.confidence_below);
        v := NULL;
        CASE r.kind
        WHEN 'amount_over' THEN
            hit := p_amount > thr;
        WHEN 'cost_to_reverse' THEN
            -- A missing confidence counts as no confidence.
            hit := p_cost > thr AND coalesce(p_confidence, 0) < cb;
        WHEN 'confidence_below' THEN
            hit := coalesce(p_confidence, 0) < cb;
        WHEN 'cumulative' THEN
            IF r.per = 'entity' THEN
                -- Per customer (the tool's entity), whichever agents acted.
                SELECT coalesce(sum(m.total), 0) INTO total FROM backstop.entity_value_minutes m
                 WHERE p_entity IS NOT NULL AND m.entity = p_entity
                   AND (m.entity, m.minute) > (p_entity, date_trunc('minute', now() - r.rule_window));
                hit := p_entity IS NOT NULL AND coalesce(p_amount, 0) > 0 AND total + p_amount > thr;
            ELSE
                SELECT coalesce(sum(m.total), 0) INTO total FROM backstop.agent_value_minutes m
                 WHERE m.agent = p_agent
                   -- As a row: the (agent, minute) key is then the only index
                   -- that can answer, from the agent's first minute in the
                   -- window. With the minute on its own, a plan made while
                   -- the table was small read the minute index instead: every
                   -- agent's minutes in the window, for each proposal. The
                   -- same for entities above, and in _propose_set.
                   AND (m.agent, m.minute) > (p_agent, date_trunc('minute', now() - r.rule_window));
                hit := coalesce(p_amount, 0) > 0 AND total + p_amount > thr;
            END IF;
            v := backstop.money(total);
        WHEN 'in_list' THEN
            v := backstop.path_get(p_params, r.param) #>> '{}';
            IF v IS NULL THEN
                hit := false;
            ELSE
                IF r.list_table IS NOT NULL THEN
                    -- Read as the check role: a table is the policy author's, not ours.
                    hit := backstop_check.in_list(r.list_table, r.list_column, v);
                ELSE
                    hit := EXISTS (SELECT 1 FROM backstop.policy_lists pl
                                    WHERE pl.version = p_version AND pl.list = r.list AND pl.value = v);
                END IF;
            END IF;
        WHEN 'new_counterparty' THEN
            v := backstop.path_get(p_params, r.param) #>> '{}';
            hit := v IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM backstop.counterparties c WHERE c.agent = p_agent AND c.param = r.param AND c.value = v);
        WHEN 'changed_value' THEN
            k := backstop.path_get(p_params, r.key_param) #>> '{}';
            v := backstop.path_get(p_params, r.param) #>> '{}';
            hit := k IS NOT NULL AND EXISTS (
                SELECT 1 FROM backstop.param_values pv2
                 WHERE pv2.agent = p_agent AND pv2.key_param = r.key_param AND pv2.key = k
                   AND pv2.param = r.param AND pv2.value IS DISTINCT FROM v);
        WHEN 'always' THEN
            hit := true;
        END CASE;
        IF hit THEN
            res.verdict := r.effect;
            res.rule := r.name;
            res.approvals := CASE WHEN r.effect = 'hold' THEN r.approvals ELSE 0 END;
            res.reason := replace(replace(replace(replace(replace(replace(r.reason,
                '{amount}', backstop.money(p_amount)),
                '{threshold}', backstop.money(thr)),
                '{cost}', backstop.money(p_cost)),
                '{confidence}', coalesce(to_char(p_confidence, 'FM0.00'), 'none')),
                '{value}', coalesce(v, '')),
                '{tool}', p_tool);
            EXIT;
        END IF;
    END LOOP;
    IF res.verdict = 'hold' THEN
        SELECT * INTO pv FROM backstop.policy_versions WHERE version = p_version;
        IF pv.four_eyes_above IS NOT NULL AND p_amount > pv.four_eyes_above THEN
            res.approvals := greatest(res.approvals, 2);
        END IF;
    END IF;
    RETURN res;
END
$$;
SELECT backstop._grant('evaluate', 'supervisor');
COMMENT ON FUNCTION backstop.evaluate IS 'Evaluates the pre-action rules of one policy version for one action; first match wins. p_stateless skips rules that depend on what else was allowed (for after-the-fact review); p_direction (out, in) and p_entity are the tool''s direction of money and the call''s entity. Callers: supervisor (its after-the-fact review), and propose. Returns backstop.verdict (verdict, reason, rule, approvals).';

-- What an allowed action teaches the parameter rules and the cumulative window.
-- Money coming in never counts against a cumulative limit. The caller
-- passes what the policy version has (it read the row already).
CREATE FUNCTION backstop._remember(p_version bigint, p_memory boolean, p_agent text, p_params jsonb, p_amount numeric, p_seq bigint,
                                   p_direction text, p_entity text, p_cumulative boolean, p_entity_cumulative boolean)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    r record;
    k text;
    v text;
BEGIN
    IF coalesce(p_amount, 0) > 0 AND p_direction IS DISTINCT FROM 'in' AND p_cumulative THEN
        INSERT INTO backstop.agent_value_minutes AS m (agent, minute, total)
        VALUES (p_agent, date_trunc('minute', now()), p_amount)
        ON CONFLICT (agent, minute) DO UPDATE SET total = m.total + excluded.total;
        IF p_entity IS NOT NULL AND p_entity_cumulative THEN
            INSERT INTO backstop.entity_value_minutes AS m (entity, minute, total)
            VALUES (p_entity, date_trunc('minute', now()), p_amount)
            ON CONFLICT (entity, minute) DO UPDATE SET total = m.total + excluded.total;
        END IF;
    END IF;
    IF p_version IS NULL OR NOT p_memory THEN
        RETURN;
    END IF;
    FOR r IN SELECT kind, param, key_param FROM backstop.policy_rules
              WHERE version = p_version AND kind IN ('new_counterparty', 'changed_value') LOOP
        v := backstop.path_get(p_params, r.param) #>> '{}';
        IF r.kind = 'new_counterparty' THEN
            IF v IS NOT NULL THEN
                INSERT INTO backstop.counterparties (agent, param, value, first_seq)
                VALUES (p_agent, r.param, v, p_seq) ON CONFLICT DO NOTHING;
            END IF;
        ELSE
            k := backstop.path_get(p_params, r.key_param) #>> '{}';
            IF k IS NOT NULL THEN
                INSERT INTO backstop.param_values AS pv (agent, key_param, key, param, value, last_seq)
                VALUES (p_agent, r.key_param, k, r.param, v, p_seq)
                ON CONFLICT (agent, key_param, key, param) DO UPDATE SET value = excluded.value, last_seq = excluded.last_seq;
            END IF;
        END IF;
    END LOOP;
END
$$;

-- The cumulative rules' gates (migrations/0009): a proposal that will read
-- a running total locks the gate of each key it reads (its agent's,
-- 'agent:NAME', and with a per-entity rule its entity's, 'entity:VALUE')
-- in a statement before the one that reads it, so a concurrent proposal of
-- the same key reads after this one has committed its amount; without, two
-- at once each read the total without the other's, and both could pass the
-- limit. Each caller locks its gates in one statement, in the stripes'
-- order (ORDER BY stripe FOR UPDATE), after the kill-switch gate: two
-- callers meet their gates in the same order. A transaction that proposes
-- several times (propose_batch locks its whole batch's gates at once) may
-- meet another in the other order: PostgreSQL then refuses one of the two
-- (40P01) and nothing of it is kept. The stripe of a key; a SQL function
-- the planner inlines, so the callers' statements call nothing.
CREATE FUNCTION backstop._gate_stripe(p_key text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.hashtext(p_key) OPERATOR(pg_catalog.&) 4095
$$;

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.counterparties IS 'Values each agent has used per parameter (for the new_counterparty rule). Readers: every duty but agent.';
COMMENT ON TABLE backstop.param_values IS 'The last value of a parameter per agent and key (for the changed_value rule). Readers: every duty but agent.';
COMMENT ON TABLE backstop.entity_value_minutes IS 'Allowed value per entity (the tool''s entity, e.g. a customer) per minute (for cumulative rules with per = entity). Readers: every duty but agent.';
-- The per-minute totals no window reads any more: older than the longest
-- cumulative window of any policy version ever loaded, and than 31 days (so
-- a new policy's longer window, up to 31 days, still counts its whole
-- window). Nothing a decision depends on changes, so nothing is logged.
CREATE FUNCTION backstop.prune_value_minutes(max_rows integer DEFAULT 10000)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    v_before timestamptz;
    n integer;
    m integer;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000000 THEN
        PERFORM backstop._bad('prune_value_minutes', format('max_rows must be 1 to 1000000; got %s', coalesce(max_rows::text, 'null')));
    END IF;
    SELECT date_trunc('minute', now() - greatest(coalesce(max(r.rule_window), interval '0'), interval '31 days'))
           - interval '1 minute'
      INTO v_before FROM backstop.policy_rules r WHERE r.kind = 'cumulative';
    DELETE FROM backstop.agent_value_minutes a
     WHERE (a.agent, a.minute) IN (SELECT x.agent, x.minute FROM backstop.agent_value_minutes x
                                    WHERE x.minute < v_before LIMIT max_rows);
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM backstop.entity_value_minutes e
     WHERE (e.entity, e.minute) IN (SELECT x.entity, x.minute FROM backstop.entity_value_minutes x
                                     WHERE x.minute < v_before LIMIT max_rows);
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;
SELECT backstop._grant('prune_value_minutes', 'approver', 'operator', 'commander', 'supervisor', 'worker');
COMMENT ON FUNCTION backstop.prune_value_minutes IS 'Deletes per-minute cumulative totals older than every window could read (the longest cumulative window ever loaded, and at least 31 days), at most max_rows from each table per call. Callers: every duty but viewer and agent (housekeeping). Returns the number deleted.';

COMMENT ON TABLE backstop.value_gates IS 'The cumulative rules'' gates: a proposal that reads a running total locks its key''s stripe first (see _gate_stripe). Readers: none need it.';
DO $gates$
BEGIN
    EXECUTE format('REVOKE ALL ON backstop.value_gates FROM PUBLIC, %I',
                   (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'viewer'));
END
$gates$;
COMMENT ON TABLE backstop.agent_value_minutes IS 'Allowed value per agent per minute (for the cumulative rule). Readers: every duty but agent.';
