-- The kill switch: pause and resume of the fleet, an agent or a tool, in
-- the database, so no agent is allowed an action after a pause commits.
-- See backstop.kill_gate (migrations/) for how the pause excludes proposals
-- in flight.

CREATE FUNCTION backstop._kill_switch(p_agent text, p_tool text, OUT scope text, OUT target text, OUT reason text, OUT changed_by text)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
BEGIN
    SELECT k.scope, k.target, k.reason, k.changed_by INTO scope, target, reason, changed_by
      FROM backstop.kill_switches k
     WHERE k.paused AND (k.scope = 'fleet' OR (k.scope = 'agent' AND k.target = p_agent) OR (k.scope = 'tool' AND k.target = p_tool))
     ORDER BY CASE k.scope WHEN 'fleet' THEN 0 WHEN 'agent' THEN 1 ELSE 2 END
     LIMIT 1;
END
$$;

CREATE FUNCTION backstop._paused_reason(scope text, target text, reason text, changed_by text) RETURNS text
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE AS $$
    SELECT CASE scope WHEN 'fleet' THEN 'fleet paused' ELSE scope || ' ' || target || ' paused' END
           || ' by ' || changed_by || ': ' || reason
$$;

CREATE FUNCTION backstop.pause(scope text, target text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS TABLE (seq bigint, was_paused boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_scope text := pause.scope;
    p_target text;
    v_actor text := backstop.actor();
    v_was boolean;
    v_seq bigint;
    v_at timestamptz;
    v_timeout text;
    v_locked boolean := false;
    v_pid integer;
    v_ended integer[] := '{}';
    v_unendable boolean;
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
    -- A session that holds the gate and does not let go (an agent's
    -- transaction left open, a reader of the gate) is ended: the kill switch
    -- does not wait on it, and what it proposed never commits. It tries until
    -- it has the gate (a holder that took it after one round's look is
    -- ended in the next; a fixed number of rounds and then an untimed wait
    -- let one that came late hold the pause up), and waits untimed only
    -- when the holders left are sessions it may not end (a superuser's).
    -- Another pause holding the gate is waited for, not ended.
    v_timeout := current_setting('lock_timeout');
    LOOP
        v_unendable := false;
        BEGIN
            PERFORM set_config('lock_timeout', '100ms', true);
            LOCK TABLE backstop.kill_gate IN ACCESS EXCLUSIVE MODE;
            v_locked := true;
        EXCEPTION WHEN lock_not_available THEN
            FOR v_pid IN SELECT l.pid FROM pg_locks l
                          WHERE l.locktype = 'relation' AND l.relation = 'backstop.kill_gate'::regclass
                            AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
                            AND l.granted AND l.mode <> 'AccessExclusiveLock' AND l.pid <> pg_backend_pid() LOOP
                BEGIN
                    IF pg_terminate_backend(v_pid) AND NOT v_pid = ANY (v_ended) THEN
                        v_ended := v_ended || v_pid;
                    END IF;
                EXCEPTION WHEN insufficient_privilege THEN
                    v_unendable := true;
                END;
            END LOOP;
        END;
        EXIT WHEN v_locked OR v_unendable;
    END LOOP;
    PERFORM set_config('lock_timeout', v_timeout, true);
    IF NOT v_locked THEN
        LOCK TABLE backstop.kill_gate IN ACCESS EXCLUSIVE MODE;
    END IF;
    SELECT k.paused INTO v_was FROM backstop.kill_switches k WHERE k.scope = p_scope AND k.target = p_target FOR UPDATE;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('paused', v_actor,
        CASE WHEN p_scope = 'agent' THEN p_target END, CASE WHEN p_scope = 'tool' THEN p_target END, NULL,
        jsonb_strip_nulls(jsonb_build_object('scope', p_scope, 'target', p_target, 'reason', pause.reason,
                                             'was_paused', coalesce(v_was, false),
                                             'sessions_ended', nullif(cardinality(v_ended), 0)))) l;
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
SELECT backstop._grant('pause', 'commander', 'supervisor');
COMMENT ON FUNCTION backstop.pause IS 'Pauses the fleet, an agent or a tool (scope ''fleet'' | ''agent'' | ''tool''); no covered action is allowed after it commits. Appends paused and notifies backstop_control. Callers: commander, supervisor. Returns (seq, was_paused).';

CREATE FUNCTION backstop.resume(scope text, target text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
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
SELECT backstop._grant('resume', 'commander');
COMMENT ON FUNCTION backstop.resume IS 'Resumes a paused scope (''fleet'' | ''agent'' | ''tool''), with a reason. Appends resumed and notifies backstop_control. Callers: commander. Returns the log seq.';

-- Only the contract touches the gate: a reader's lock would hold a pause up.
DO $gate$
BEGIN
    EXECUTE format('REVOKE ALL ON backstop.kill_gate FROM PUBLIC, %I',
                   (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'viewer'));
END
$gate$;

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.kill_switches IS 'The kill switch: the latest pause or resume of each scope (fleet, agent, tool). Readers: every duty but agent.';
COMMENT ON TABLE backstop.kill_gate IS 'An empty table that every proposal locks in ACCESS SHARE and pause in ACCESS EXCLUSIVE, so nothing is allowed after a pause commits. Readers: none need it.';
