-- The approval queue: approve, reject, and expiry of held actions.

-- What a decision's NOTIFY on backstop_decisions carries: any login may
-- LISTEN to any channel, so the payload names the action only to whoever
-- already knows its id (the sha256 of the id's text, in hex).
CREATE FUNCTION backstop.decision_key(action_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(pg_catalog.sha256(pg_catalog.convert_to(action_id::text, 'UTF8')), 'hex')
$$;
SELECT backstop._grant('decision_key', 'viewer', 'agent');
COMMENT ON FUNCTION backstop.decision_key IS 'The payload of a decision''s NOTIFY on backstop_decisions for this action: the hex sha256 of the id''s text. Callers: agent, viewer. Returns text.';

CREATE FUNCTION backstop.approve(action_id uuid, note text DEFAULT '')
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
    v_direction text;
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
    -- Four eyes means two people other than the agent: neither the agent's
    -- name nor a login that may act as the agent approves its actions.
    IF v_actor = a.agent OR session_user = a.agent
       OR EXISTS (SELECT 1 FROM backstop.agent_logins m WHERE m.login = session_user AND m.agent = a.agent) THEN
        PERFORM backstop._bad('approve', format('%s acts as agent %s, which proposed action %s, and cannot approve it',
                                                v_actor, a.agent, p_id), '42501');
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
        -- The proposal by (seq, at): one partition; carried_log only when archived.
        SELECT l.params, l.detail ->> 'direction' INTO v_params, v_direction FROM backstop.action_log l
         WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at AND l.kind <> 'carried';
        IF NOT FOUND THEN
            SELECT l.params, l.detail ->> 'direction' INTO v_params, v_direction
              FROM backstop.carried_log l WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at;
        END IF;
        -- An approved action counts like an allowed one (per agent, per entity),
        -- behind the same gates as a proposal's (see _gate_stripe).
        PERFORM FROM backstop.value_gates g
         WHERE g.stripe IN (SELECT backstop._gate_stripe(k.k)
                              FROM backstop.policy_versions p
                             CROSS JOIN LATERAL (VALUES ('agent:' || a.agent),
                                                        (CASE WHEN p.entity_cumulative THEN 'entity:' || a.entity END)) k(k)
                             WHERE p.version = a.policy_version AND p.has_cumulative AND a.amount > 0)
         ORDER BY g.stripe
           FOR UPDATE OF g;
        PERFORM backstop._remember(a.policy_version, p.param_memory, a.agent, v_params, a.amount, v_seq,
                                   v_direction, a.entity, p.has_cumulative, p.entity_cumulative)
           FROM backstop.policy_versions p WHERE p.version = a.policy_version;
    ELSE
        UPDATE backstop.actions x SET approvals = v_n, updated_seq = v_seq WHERE x.action_id = p_id;
        UPDATE backstop.approval_queue q SET approvals = v_n WHERE q.action_id = p_id;
    END IF;
    PERFORM pg_notify('backstop_decisions', backstop.decision_key(p_id));
    RETURN QUERY SELECT CASE WHEN v_final THEN 'allow' ELSE 'hold' END, v_n, a.approvals_needed;
END
$$;
SELECT backstop._grant('approve', 'approver');
COMMENT ON FUNCTION backstop.approve IS 'Approves a held action with a note; above the four-eyes limit two different approvers are needed. Appends approved (and allowed on the last approval) and notifies backstop_decisions. Callers: approver. Returns (verdict, approvals, approvals_needed).';

CREATE FUNCTION backstop.reject(action_id uuid, note text)
RETURNS TABLE (verdict text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
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
    PERFORM pg_notify('backstop_decisions', backstop.decision_key(p_id));
    RETURN QUERY SELECT 'block'::text;
END
$$;
SELECT backstop._grant('reject', 'approver');
COMMENT ON FUNCTION backstop.reject IS 'Rejects a held action with a reason. Appends rejected and notifies backstop_decisions. Callers: approver. Returns (verdict).';

-- Held actions past their expiry take the policy's expiry effect. Any
-- long-running process (supervisor, room, worker) calls this periodically;
-- decision() already answers by the clock in between.
CREATE FUNCTION backstop.expire_held(max_rows integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
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
        PERFORM pg_notify('backstop_decisions', backstop.decision_key(a.action_id));
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$$;
SELECT backstop._grant('expire_held', 'approver', 'operator', 'commander', 'supervisor', 'worker');
COMMENT ON FUNCTION backstop.expire_held IS 'Expires held actions past their expiry (block or allow, as the policy says), at most max_rows per call. Callers: every duty but viewer and agent (housekeeping). Returns the number expired.';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.approval_queue IS 'Held actions waiting for approvers. Readers: every duty but agent.';
COMMENT ON TABLE backstop.approvals IS 'Every approval and rejection. Readers: every duty but agent.';
