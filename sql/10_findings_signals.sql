-- Signals from customer channels, and the supervisor's findings.

CREATE FUNCTION backstop.report_signal(kind text, agent text DEFAULT NULL, correlation_id text DEFAULT NULL, detail jsonb DEFAULT NULL)
RETURNS TABLE (seq bigint, traced_agent text, traced_action uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_agent text := report_signal.agent;
    p_corr text := report_signal.correlation_id;
    p_detail jsonb := coalesce(report_signal.detail, '{}');
    v_action uuid;
    v_txt text;
    v_seq bigint;
    v_at timestamptz;
    -- An agent's login speaks for its own agents only: signals count toward
    -- complaint spikes, which pause agents.
    v_own_only boolean := NOT backstop._has_duty('operator', 'supervisor');
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
        IF v_own_only AND (NOT FOUND OR NOT backstop._may_act_as(p_agent)) THEN
            -- One answer for another agent's action and for none: neither
            -- names the other agent nor says the id exists.
            PERFORM backstop._bad('report_signal', format('detail.action_id %s is not an action of login %s''s agents',
                                                          v_action, session_user), '42501');
        ELSIF NOT FOUND THEN
            PERFORM backstop._bad('report_signal', format('detail.action_id %s is not a known action', v_action), 'P0002');
        END IF;
    ELSIF p_agent IS NULL AND p_corr IS NOT NULL THEN
        -- Trace the signal to the agent that last acted on this business event.
        SELECT x.agent, x.action_id INTO p_agent, v_action FROM backstop.actions x
         WHERE x.correlation_id = p_corr AND x.status IN ('executed', 'failed', 'allowed')
         ORDER BY x.proposed_seq DESC LIMIT 1;
        IF v_own_only AND p_agent IS NOT NULL AND NOT backstop._may_act_as(p_agent) THEN
            -- Recorded, but traced to no one: neither counted against another
            -- agent nor telling the caller which action it was.
            p_agent := NULL;
            v_action := NULL;
        END IF;
    END IF;
    IF v_own_only AND p_agent IS NOT NULL AND NOT backstop._may_act_as(p_agent) THEN
        PERFORM backstop._bad('report_signal', format('login %s may report signals about its own agents only, not %s',
                                                      session_user, p_agent), '42501');
    END IF;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('signal', backstop.actor(), p_agent, NULL, v_action,
        jsonb_build_object('kind', report_signal.kind, 'detail', p_detail), p_corr) l;
    INSERT INTO backstop.signals (seq, kind, agent, correlation_id, action_id, detail, reported_by, at)
    VALUES (v_seq, report_signal.kind, p_agent, p_corr, v_action, p_detail, backstop.actor(), v_at);
    RETURN QUERY SELECT v_seq, p_agent, v_action;
END
$$;
SELECT backstop._grant('report_signal', 'agent', 'operator', 'supervisor');
COMMENT ON FUNCTION backstop.report_signal IS 'Records a customer-channel signal (complaint, chargeback, ...) about an agent or a correlation id; the supervisor counts them for complaint spikes. Callers: agent, operator, supervisor. Returns (seq, traced_agent, traced_action).';

-- The key is the contract's own (kind, agent, action, rule): a caller's
-- detail cannot name another finding to merge into. A merge never lowers the
-- severity. Two raisers of one finding at once meet on the unique index of
-- unresolved keys, not on an advisory lock: any login can take an advisory
-- lock, and an agent held the one for its own complaint spike, so the
-- supervisor waited for ever (holding the shared cursor) and never paused it.
CREATE FUNCTION backstop._raise_finding(p_kind text, p_severity text, p_agent text, p_action uuid, p_detail jsonb, p_actor text,
                                        OUT finding_id uuid, OUT merged boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    v_rule text := p_detail ->> 'rule';
    -- A JSON array: no rule text (free, '|' and all) can spell another key.
    v_key text := jsonb_build_array(p_kind, p_agent, p_action, v_rule)::text;
    v_round integer := 0;
    v_severity text := p_severity;
    f backstop.findings%ROWTYPE;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    LOOP
        SELECT * INTO f FROM backstop.findings x WHERE x.dedup_key = v_key AND x.status <> 'resolved' FOR UPDATE;
        IF FOUND THEN
            finding_id := f.finding_id;
            merged := true;
            IF array_position(ARRAY['info', 'low', 'medium', 'high', 'critical'], f.severity)
               > array_position(ARRAY['info', 'low', 'medium', 'high', 'critical'], p_severity) THEN
                v_severity := f.severity;
            END IF;
            EXIT;
        END IF;
        -- Past READ COMMITTED the snapshot never sees the other raiser's
        -- row, and the retry would spin: the caller retries the transaction.
        v_round := v_round + 1;
        IF v_round > 1 AND current_setting('transaction_isolation') <> 'read committed' THEN
            RAISE EXCEPTION USING ERRCODE = '40001',
                MESSAGE = 'raise_finding: the same finding was raised at the same moment; retry the transaction';
        ELSIF v_round > 10 THEN
            RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'raise_finding: could not raise or merge the finding; retry';
        END IF;
        -- Placeholders for the log row's seq and time, set below.
        BEGIN
            finding_id := gen_random_uuid();
            merged := false;
            INSERT INTO backstop.findings (finding_id, kind, severity, agent, action_id, rule, detail, dedup_key, status,
                                           count, raised_by, raised_seq, raised_at, last_seq, last_at)
            VALUES (finding_id, p_kind, p_severity, p_agent, p_action, v_rule, p_detail, v_key, 'open',
                    1, p_actor, 0, clock_timestamp(), 0, clock_timestamp());
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- Raised by another at the same moment: merge into theirs.
        END;
    END LOOP;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('finding', p_actor, p_agent, NULL, p_action,
        jsonb_build_object('finding_id', finding_id, 'kind', p_kind, 'severity', v_severity, 'merged', merged,
                           'dedup_key', v_key, 'evidence', p_detail)) l;
    IF merged THEN
        UPDATE backstop.findings x SET count = x.count + 1, last_seq = v_seq, last_at = v_at, detail = p_detail,
               severity = v_severity
         WHERE x.finding_id = f.finding_id;
    ELSE
        UPDATE backstop.findings x SET raised_seq = v_seq, raised_at = v_at, last_seq = v_seq, last_at = v_at
         WHERE x.finding_id = _raise_finding.finding_id;
    END IF;
END
$$;

CREATE FUNCTION backstop.raise_finding(kind text, severity text, agent text DEFAULT NULL, action_id uuid DEFAULT NULL, detail jsonb DEFAULT NULL)
RETURNS TABLE (finding_id uuid, merged boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_agent text := raise_finding.agent;
BEGIN
    IF raise_finding.kind IS NULL OR raise_finding.kind NOT IN ('policy_violation', 'low_confidence', 'sampled_divergence',
                                                                'drift', 'complaint_spike', 'compensation_failed') THEN
        PERFORM backstop._bad('raise_finding', format('kind must be one of policy_violation, low_confidence, sampled_divergence, drift, complaint_spike, compensation_failed; got %s',
                                                      coalesce(quote_literal(raise_finding.kind), 'null')));
    END IF;
    IF raise_finding.kind = 'compensation_failed' THEN
        -- The contract raises it when a compensation fails (finish_compensation).
        PERFORM backstop._bad('raise_finding', 'compensation_failed findings are raised by the contract when a compensation fails, not by a caller', '42501');
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
SELECT backstop._grant('raise_finding', 'supervisor');
COMMENT ON FUNCTION backstop.raise_finding IS 'Raises a supervisor finding (kinds policy_violation, low_confidence, sampled_divergence, drift, complaint_spike, compensation_failed); a repeat of an unresolved one is merged into it. Callers: supervisor. Returns (finding_id, merged).';

CREATE FUNCTION backstop._finding_status(fn text, p_id uuid, p_status text, p_note text)
RETURNS TABLE (status text)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
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
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT * FROM backstop._finding_status('acknowledge_finding', finding_id, 'acknowledged', note)
$$;
SELECT backstop._grant('acknowledge_finding', 'operator');
COMMENT ON FUNCTION backstop.acknowledge_finding IS 'Marks a finding acknowledged, with a note. Callers: operator. Returns (status).';

CREATE FUNCTION backstop.resolve_finding(finding_id uuid, note text)
RETURNS TABLE (status text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT * FROM backstop._finding_status('resolve_finding', finding_id, 'resolved', note)
$$;
SELECT backstop._grant('resolve_finding', 'operator');
COMMENT ON FUNCTION backstop.resolve_finding IS 'Marks a finding resolved, with a note. Callers: operator. Returns (status).';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.findings IS 'Supervisor findings, merged by dedup key while unresolved. Readers: every duty but agent.';
COMMENT ON TABLE backstop.signals IS 'Customer-channel signals. Readers: every duty but agent.';
