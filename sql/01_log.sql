-- The log's writers: who is acting, the append every contract function
-- shares, the log's append-only guard, and its partitions.

-- A trusted session: a superuser or a member of the schema's owner.
-- pg_has_role(..., 'MEMBER') is true for a superuser too (a superuser is a
-- member of every role), and it answers from the backend's role-membership
-- cache, which the server invalidates when a grant changes; the one catalog
-- read is by index. PL/pgSQL rather than SQL: the plan is kept for the
-- session, where a SQL function with SET is planned anew in every
-- transaction. Nothing is cached in a session setting: any login can set
-- one, so a cached "trusted" would be forgeable.
CREATE FUNCTION backstop._trusted() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
BEGIN
    RETURN coalesce((SELECT pg_has_role(session_user, n.nspowner, 'MEMBER')
                       FROM pg_namespace n WHERE n.nspname = 'backstop'), false);
END
$$;

-- Who is acting. Trusted sessions (Backstop's own tooling: the owner and
-- superusers) may name an operator with the session setting
-- `backstop.operator`; for everyone else the login is the identity.
-- A definer, so that every duty may ask (the trust test is internal).
CREATE FUNCTION backstop.actor() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT CASE WHEN backstop._trusted()
                THEN coalesce(nullif(current_setting('backstop.operator', true), ''), session_user::text)
                ELSE session_user::text END
$$;
SELECT backstop._grant('actor', 'viewer', 'agent', 'approver', 'operator', 'commander', 'supervisor', 'worker', 'policy');
COMMENT ON FUNCTION backstop.actor IS 'Who is acting in this session: the login, or for a trusted session (owner, superuser) the name set in backstop.operator. Callers: every duty. Returns text.';

-- Whether this session may act as agent P_AGENT: the agent's own login, a
-- login mapped to it in agent_logins, or a trusted session. The one identity
-- rule for everything an agent does (propose, decision, record_result,
-- report_signal).
CREATE FUNCTION backstop._may_act_as(p_agent text) RETURNS boolean
-- PL/pgSQL for a plan kept per session (see _trusted). No SET search_path:
-- a gateway pays this twice per action (propose, record_result), and the
-- setting's save and restore cost about 15,000 instructions a call. Safe
-- without it: invoker's rights, granted to no duty, called only from the
-- contract's functions, which set the path; every name and operator here
-- is qualified.
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN p_agent OPERATOR(pg_catalog.=) session_user
        OR EXISTS (SELECT 1 FROM backstop.agent_logins m
                    WHERE m.login OPERATOR(pg_catalog.=) session_user AND m.agent OPERATOR(pg_catalog.=) p_agent)
        OR backstop._trusted();
END
$$;

-- A long-running process's name as the contract records it: the session's
-- identity, and the name the process gave only to tell a login's processes
-- apart (a name is an argument, never an identity).
CREATE FUNCTION backstop._process(p_name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT CASE WHEN p_name = backstop.actor() THEN p_name ELSE backstop.actor() || '/' || p_name END
$$;

-- Whether the session's login holds one of the duties named (or is trusted).
CREATE FUNCTION backstop._has_duty(VARIADIC p_duties text[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT backstop._trusted()
        OR EXISTS (SELECT 1 FROM backstop.duties d
                    WHERE d.duty = ANY (p_duties) AND pg_has_role(session_user, d.role_name, 'MEMBER'))
$$;

-- UPDATE, DELETE and TRUNCATE of the log are refused, on the parent and on
-- every partition: statement triggers are not inherited by partitions, so
-- each gets its own, and a statement aimed at a partition directly is
-- refused too.
CREATE FUNCTION backstop.tg_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = '42501',
        MESSAGE = format('backstop.action_log is append-only: %s is refused', TG_OP),
        HINT = 'The log is the source of truth. Correct a mistake by appending a new event through the contract functions.';
END
$$;

CREATE FUNCTION backstop._protect_partition(p text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER no_update BEFORE UPDATE OR DELETE ON backstop.%I
                    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only()', p);
    EXECUTE format('CREATE OR REPLACE TRIGGER no_truncate BEFORE TRUNCATE ON backstop.%I
                    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only()', p);
END
$$;

-- Create the partitions that now + ahead x width needs. Cheap when there is
-- nothing to do (one lookup); one creator at a time.
CREATE FUNCTION backstop.ensure_log_partitions() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp
-- Never make the agents queue: creating a partition locks the default one,
-- and behind a long reader (verify, a cut being prepared) that lock would
-- hold every writer up. Give up after 100 ms; housekeeping calls again.
SET lock_timeout = '100ms'
AS $$
DECLARE
    cfg backstop.log_partitioning%ROWTYPE;
    v_from timestamptz;
    v_to timestamptz;
    v_until timestamptz;
    v_name text;
    v_secs double precision;
    n integer := 0;
BEGIN
    SELECT * INTO cfg FROM backstop.log_partitioning;
    v_until := clock_timestamp() + cfg.width * cfg.ahead;
    SELECT max(p.to_at) INTO v_from FROM backstop.log_partitions p;
    IF v_from IS NOT NULL AND v_from >= v_until THEN
        RETURN 0;
    END IF;
    -- One maker at a time, on a row no duty can lock (an advisory lock any
    -- login could hold, and stop partitions being made).
    PERFORM FROM backstop.job_locks j WHERE j.name = 'partitions' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    SELECT max(p.to_at) INTO v_from FROM backstop.log_partitions p;
    IF v_from IS NULL THEN
        v_secs := extract(epoch FROM cfg.width);
        v_from := CASE WHEN cfg.width >= interval '28 days' THEN date_trunc('month', clock_timestamp(), 'UTC')
                       ELSE to_timestamp(floor(extract(epoch FROM clock_timestamp()) / v_secs) * v_secs) END;
    END IF;
    WHILE v_from < v_until LOOP
        v_to := v_from + cfg.width;
        -- Rows for this range already in the default partition (nothing ran
        -- ensure in time): that range stays in the default partition, and
        -- the ranges after it get their partitions. Stopping here instead
        -- would send every later row to the default partition too, for
        -- good: the gap would never close.
        IF EXISTS (SELECT 1 FROM backstop.action_log_default d WHERE d.at >= v_from AND d.at < v_to) THEN
            RAISE WARNING 'backstop: log rows for % to % are in the default partition; no partition made for that range (a retention cut past it is refused)', v_from, v_to;
        ELSE
            v_name := 'action_log_' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS');
            BEGIN
                EXECUTE format('CREATE TABLE backstop.%I PARTITION OF backstop.action_log FOR VALUES FROM (%L) TO (%L)',
                               v_name, v_from, v_to);
                PERFORM backstop._protect_partition(v_name);
                INSERT INTO backstop.log_partitions (name, from_at, to_at) VALUES (v_name, v_from, v_to);
                n := n + 1;
            EXCEPTION
                WHEN lock_not_available THEN
                    RETURN n;
                -- A writer put a row in that range into the default partition
                -- between the test above and the create: as above.
                WHEN check_violation THEN
                    RAISE WARNING 'backstop: log rows for % to % are in the default partition; no partition made for that range (a retention cut past it is refused)', v_from, v_to;
            END;
        END IF;
        v_from := v_to;
    END LOOP;
    RETURN n;
END
$$;
-- The owner's alone, as sealing is: making a partition takes the log's
-- exclusive lock until the caller's transaction ends, so a duty's login
-- that called this in a transaction it left open froze every write to the
-- log, pauses included. Processes that run as the owner (the sealer, a
-- supervisor or worker started under the owner's login) make partitions.
COMMENT ON FUNCTION backstop.ensure_log_partitions IS 'Creates the log partitions that now + ahead x width needs; cheap when none is due, gives up after 100 ms of lock wait. Callers: the owner only (housekeeping in processes that run as the owner, backstop seal). Returns the number created.';

-- Every append goes through here so that the contract functions share one
-- column list.
CREATE FUNCTION backstop._append(
    p_kind text, p_actor text, p_agent text, p_tool text, p_action uuid,
    p_detail jsonb DEFAULT '{}',
    p_correlation text DEFAULT NULL, p_parent uuid DEFAULT NULL,
    p_amount numeric DEFAULT NULL, p_confidence real DEFAULT NULL,
    p_reasoning text DEFAULT NULL, p_inputs jsonb DEFAULT NULL,
    p_params jsonb DEFAULT NULL, p_result jsonb DEFAULT NULL,
    p_policy bigint DEFAULT NULL, p_registry bigint DEFAULT NULL,
    OUT seq bigint, OUT at timestamptz)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    -- plpgsql rather than SQL: the INSERT's plan is cached per session.
    INSERT INTO backstop.action_log AS l
        (seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action,
         amount, confidence, reasoning, inputs, params, result, policy_version, registry_version)
    VALUES (nextval('backstop.action_log_seq'), clock_timestamp(), pg_current_xact_id(), p_kind, p_actor, p_agent, p_tool, p_action, coalesce(p_detail, '{}'), p_correlation, p_parent,
            p_amount, p_confidence, p_reasoning, p_inputs, p_params, p_result, p_policy, p_registry)
    RETURNING l.seq, l.at INTO seq, at;
END
$$;

-- A row's transaction id is the transaction that inserts it, whatever the
-- insert says: `verify` places every row by it. The trigger fires only when
-- the row's txid differs from the inserting transaction's, and then sets it:
-- a row that already holds the right id (every insert the contract makes
-- names pg_current_xact_id(), and the column's default is the same) would be
-- left as it is anyway, so the WHEN clause changes no row's outcome and
-- saves a PL/pgSQL call per append.
CREATE FUNCTION backstop.tg_own_txid() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER action_log_own_txid BEFORE INSERT ON backstop.action_log
    FOR EACH ROW WHEN (NEW.txid IS DISTINCT FROM pg_current_xact_id())
    EXECUTE FUNCTION backstop.tg_own_txid();

CREATE TRIGGER action_log_no_update BEFORE UPDATE OR DELETE ON backstop.action_log
    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only();

CREATE TRIGGER action_log_no_truncate BEFORE TRUNCATE ON backstop.action_log
    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only();

-- Partitions that exist already (the contract is re-applied over a live log).
SELECT backstop._protect_partition(c.relname)
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'backstop.action_log'::regclass;

-- The contract's own locks are no reader's business.
DO $locks$
BEGIN
    EXECUTE format('REVOKE ALL ON backstop.job_locks, backstop.request_claims FROM PUBLIC, %I',
                   (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'viewer'));
END
$locks$;

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.action_log IS 'The append-only action log, partitioned by time: every proposal, verdict, decision, result, compensation, pause, finding and signal. The source of truth; every other table is a projection of it. Readers: every duty but agent.';
COMMENT ON TABLE backstop.action_log_default IS 'The log''s default partition: rows for which no time partition existed. Readers: every duty but agent.';
COMMENT ON TABLE backstop.log_partitions IS 'The log''s time partitions (name, range). Readers: every duty but agent.';
COMMENT ON TABLE backstop.log_partitioning IS 'How wide the log''s partitions are and how many are created ahead. Readers: every duty but agent.';
COMMENT ON TABLE backstop.job_locks IS 'One row per job that runs one at a time (making partitions, a retention cut, the drift pass), locked FOR UPDATE by the contract. Readers: none need it.';
COMMENT ON TABLE backstop.request_claims IS 'Keys of requests that run once per key (an agent''s idempotency key, a rejected file), claimed by the contract. Readers: none need it.';
