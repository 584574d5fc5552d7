-- Code a policy brings runs as the check role, never as the owner.
--
-- The policy's [[supervisor.checks]] are queries written by whoever loads the
-- policy, and its lists may name tables. Both are read through the two
-- functions below, which belong to the check role and run with its rights
-- (SECURITY DEFINER): it may read what the deployment grants it (the
-- business tables the checks and lists name) and nothing else; inside a
-- definer function no one can SET ROLE back. The supervisor runs each check
-- in a read-only savepoint with a statement timeout, and rolls it back.

DO $check$
BEGIN
    -- The check role cannot read backstop.duties: remember what it needs.
    PERFORM set_config('backstop.supervisor_role', (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'supervisor'), true);
    PERFORM set_config('backstop.owner_role', (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'owner'), true);
    EXECUTE format('SET LOCAL ROLE %I', (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'check'));
END
$check$;

-- One policy check: the query with $1 = the action's params, $2 = its
-- result, $3 = its amount; its first column of its first row is the
-- violation's message (NULL or no row: the check passed).
--
-- The query is opened as a cursor, which takes exactly one statement that
-- returns rows: a string of several statements, or a utility statement
-- (DEALLOCATE, PREPARE, DO, SET), is refused before anything runs. A
-- read-only savepoint rolls back what a query writes, but not what a
-- utility statement does to the caller's session: DEALLOCATE and PREPARE
-- outlive any rollback, and a statement prepared under a name the caller's
-- driver uses would run later with the caller's rights.
CREATE FUNCTION backstop_check.run(query text, params jsonb, result jsonb, amount numeric) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    msg text;
    c refcursor;
BEGIN
    OPEN c FOR EXECUTE query USING params, result, amount;
    FETCH c INTO msg;
    CLOSE c;
    RETURN msg;
END
$$;
REVOKE ALL ON FUNCTION backstop_check.run(text, jsonb, jsonb, numeric) FROM PUBLIC;
COMMENT ON FUNCTION backstop_check.run IS 'Runs one of the policy''s supervisor checks (one statement returning rows) with the check role''s rights. Callers: the owner only (run_check for the supervisor''s review, precheck, each in a read-only savepoint or subtransaction). Returns the violation''s message, or NULL.';

-- Whether a policy list kept in a table holds a value.
-- The table is named by text and resolved here: resolving it needs USAGE on
-- its schema, which the check role has and its callers need not.
CREATE FUNCTION backstop_check.in_list(tbl text, col text, v text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hit boolean;
BEGIN
    -- Dynamic SQL is planned on every call: a plain LIMIT 1 plans in half
    -- the time an EXISTS subquery does.
    EXECUTE format('SELECT true FROM %s WHERE %I::text = $1 LIMIT 1', tbl::regclass, col) INTO hit USING v;
    RETURN coalesce(hit, false);
END
$$;
REVOKE ALL ON FUNCTION backstop_check.in_list(text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION backstop_check.in_list IS 'Whether a policy list kept in a table holds a value, read with the check role''s rights. Callers: the owner only (evaluate, in propose and in the supervisor''s review). Returns boolean.';

-- Which of several values a policy list kept in a table holds: one read
-- for a batch of proposals (propose_batch), as in_list is for one.
CREATE FUNCTION backstop_check.in_list_any(tbl text, col text, vals text[]) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hits text[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT %I::text) FROM %s WHERE %I::text = ANY ($1)', col, tbl::regclass, col)
       INTO hits USING vals;
    RETURN coalesce(hits, '{}');
END
$$;
REVOKE ALL ON FUNCTION backstop_check.in_list_any(text, text, text[]) FROM PUBLIC;
COMMENT ON FUNCTION backstop_check.in_list_any IS 'Which of the values given a policy list kept in a table holds, read with the check role''s rights. Callers: the owner only (propose_batch''s fast path). Returns text[].';

-- None is granted to any duty: a supervisor that could call them ran any
-- query it liked, or read any column, with the check role's rights (the
-- business tables a deployment grants for checks, PII included), outside
-- any read-only savepoint. The owner's functions call them: run_check with
-- a check the policy in force names, evaluate and _propose_set with the
-- policy's lists.
DO $check$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', current_setting('backstop.owner_role'));
END
$check$;

-- One of the policy's checks on one action, for the supervisor's review: the
-- query is the policy in force's check of that name for the action's tool,
-- $1 and $3 the action's params and amount, $2 its result (JSON null when it
-- has none), all read here, never the caller's. The caller runs it in a
-- read-only savepoint under a time limit and rolls it back (review.rs).
CREATE FUNCTION backstop.run_check(action_id uuid, check_name text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    v_query text;
BEGIN
    SELECT x.tool, x.amount, p.params, coalesce(r.result, 'null'::jsonb) AS result INTO a
      FROM backstop.actions x
      JOIN backstop.action_log p ON p.seq = x.proposed_seq AND p.at = x.proposed_at
      LEFT JOIN backstop.action_log r ON r.seq = x.executed_seq AND r.at = x.executed_at
     WHERE x.action_id = run_check.action_id;
    IF NOT FOUND THEN
        PERFORM backstop._bad('run_check', format('unknown action_id %s', coalesce(run_check.action_id::text, 'null')), 'P0002');
    END IF;
    SELECT c ->> 'query' INTO v_query
      FROM backstop.active ac JOIN backstop.policy_versions v ON v.version = ac.policy_version,
           jsonb_array_elements(CASE WHEN jsonb_typeof(v.doc -> 'supervisor' -> 'checks') = 'array'
                                     THEN v.doc -> 'supervisor' -> 'checks' ELSE '[]' END) c
     WHERE c ->> 'name' = run_check.check_name AND (c ->> 'tool' IS NULL OR c ->> 'tool' = a.tool)
     LIMIT 1;
    IF v_query IS NULL THEN
        PERFORM backstop._bad('run_check', format('the policy in force has no check %s for tool %s',
                                                  coalesce(quote_literal(run_check.check_name), 'null'), a.tool), 'P0002');
    END IF;
    RETURN backstop_check.run(v_query, a.params, a.result, a.amount);
END
$$;
SELECT backstop._grant('run_check', 'supervisor');
COMMENT ON FUNCTION backstop.run_check IS 'Runs the policy in force''s check of that name on one action (its params, result and amount, read from the log), as the check role. Callers: supervisor (its review, in a read-only savepoint). Returns the violation''s message, or NULL.';


-- A check's error as an approver may read it. The check role reads business
-- tables an approver may not, and a data error quotes the value it choked on
-- (`invalid input syntax for type integer: "..."`): such messages are not
-- passed on, only their SQLSTATE. Classes whose messages name objects and
-- states, never values, are passed on whole: 42 (a missing grant, table or
-- column; a syntax error), 25 (a write refused in read-only mode), 0A, 21,
-- 53, 54, 57.
CREATE FUNCTION backstop._check_error(state text, msg text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN left(state, 2) IN ('42', '25', '0A', '21', '53', '54', '57')
                THEN format('%s (SQLSTATE %s)', left(msg, 500), state)
                ELSE format('failed with SQLSTATE %s (its message is not shown: it may quote data the check read)', state)
           END
$$;

-- The supervisor's checks on a held action, run now, before anyone approves
-- it: the policy in force's [[supervisor.checks]] for the action's tool,
-- with $1 = its params, $2 = NULL (it has not run), $3 = its amount; and the
-- low-confidence rule (supervisor.review_all.confidence_below) when the
-- action's confidence is below it. One row per check: message NULL = passed;
-- error = the check itself failed (a missing grant, the caller's
-- statement_timeout running out), never the caller's error.
--
-- Nothing a check does stays. Each runs as the check role
-- (backstop_check.run) in a subtransaction of its own made read-only, which
-- is then rolled back by raising a private exception once the message is
-- in a variable (a PL/pgSQL variable keeps its value through the rollback):
-- so even in the caller's read-write transaction a check writes nothing,
-- and a session advisory lock it takes is released. A session that already
-- holds advisory locks gets no checks run (a check could take one of them
-- again, and that cannot be told apart from the caller's own), each row
-- saying so. The time limit is the caller's: set statement_timeout (the room
-- uses 2s); when it runs out, that check says so and the rest are not run.
CREATE FUNCTION backstop.precheck(action_id uuid)
RETURNS TABLE (name text, kind text, severity text, message text, error text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p_id uuid := precheck.action_id;
    a record;
    v_params jsonb;
    v_sup jsonb;
    v_checks jsonb;
    v_limit double precision;
    c jsonb;
    v_msg text;
    v_ran boolean;
    v_state text;
    v_text text;
    v_locked boolean;
    v_out_of_time boolean := false;
BEGIN
    IF p_id IS NULL THEN
        PERFORM backstop._bad('precheck', 'action_id is required');
    END IF;
    SELECT x.tool, x.amount, x.confidence, x.proposed_seq, x.proposed_at INTO a
      FROM backstop.actions x WHERE x.action_id = p_id;
    IF NOT FOUND THEN
        PERFORM backstop._bad('precheck', format('unknown action_id %s', p_id), 'P0002');
    END IF;
    SELECT l.params INTO v_params FROM backstop.action_log l WHERE l.seq = a.proposed_seq AND l.at = a.proposed_at;
    SELECT v.doc -> 'supervisor' INTO v_sup
      FROM backstop.active ac JOIN backstop.policy_versions v ON v.version = ac.policy_version;
    -- Without a policy the supervisor runs on its defaults
    -- (SupervisorSettings::default in src/policy.rs): confidence below 0.7
    -- is reviewed, and there are no checks.
    IF v_sup IS NULL THEN
        v_limit := 0.7;
    ELSIF jsonb_typeof(v_sup -> 'review_all' -> 'confidence_below') = 'number' THEN
        v_limit := (v_sup -> 'review_all' ->> 'confidence_below')::double precision;
    END IF;
    -- As the supervisor compares them: the real widened to double precision.
    IF a.confidence IS NOT NULL AND v_limit IS NOT NULL AND a.confidence::double precision < v_limit THEN
        name := 'confidence_below';
        kind := 'low_confidence';
        severity := 'medium';
        message := format('confidence %s is below %s', a.confidence, v_limit);
        error := NULL;
        RETURN NEXT;
    END IF;
    v_checks := CASE WHEN jsonb_typeof(v_sup -> 'checks') = 'array' THEN v_sup -> 'checks' ELSE '[]' END;
    v_locked := EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                         WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory');
    FOR c IN SELECT e FROM jsonb_array_elements(v_checks) e
              WHERE e ->> 'tool' IS NULL OR e ->> 'tool' = a.tool LOOP
        name := c ->> 'name';
        kind := coalesce(c ->> 'kind', 'policy_violation');
        severity := coalesce(c ->> 'severity', 'high');
        message := NULL;
        error := NULL;
        IF v_out_of_time THEN
            error := 'not run: the time ran out on an earlier check';
        ELSIF v_locked THEN
            error := 'not run: this session holds advisory locks, and a check could take one of them again unseen; call precheck from a session that holds none';
        ELSE
            v_msg := NULL;
            v_ran := false;
            BEGIN
                PERFORM set_config('transaction_read_only', 'on', true);
                v_msg := backstop_check.run(c ->> 'query', v_params, NULL, a.amount);
                v_ran := true;
                -- Undo whatever the check did; v_msg survives.
                RAISE EXCEPTION USING ERRCODE = 'BKP01', MESSAGE = 'backstop.precheck: rolling the check back';
            EXCEPTION
                WHEN query_canceled THEN
                    error := 'timed out: the caller''s statement_timeout ran out during this check';
                    v_out_of_time := true;
                WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_text = MESSAGE_TEXT;
                    IF NOT (v_state = 'BKP01' AND v_ran) THEN
                        error := backstop._check_error(v_state, v_text);
                    END IF;
            END;
            -- A session-level advisory lock outlives the rollback; the
            -- session held none before the check.
            PERFORM pg_catalog.pg_advisory_unlock_all();
            IF v_ran THEN
                message := left(v_msg, 2000);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
SELECT backstop._grant('precheck', 'viewer', 'approver', 'operator');
COMMENT ON FUNCTION backstop.precheck IS 'The policy''s supervisor checks for a held action''s tool, and the low-confidence rule, run now (read-only, rolled back, as the check role) before anyone approves it. Callers: viewer, approver, operator (the room''s approval card). Returns (name, kind, severity, message: NULL when it passed, error: when the check itself failed). Refuses an unknown action (P0002).';
