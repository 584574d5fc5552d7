-- Least privilege. One NOLOGIN role per duty; logins are members
-- (`backstop grant DUTY LOGIN`). The contract's entry points run as their
-- owner (SECURITY DEFINER, fixed search_path), so no duty writes any table
-- directly, and a duty can call only its own functions. Role names are
-- PREFIX_duty; PREFIX is the session setting backstop.role_prefix at
-- migration time (`BACKSTOP_ROLE_PREFIX`), default "backstop".
--
-- Identity comes from the session: a login's actions are recorded under the
-- login's name. Only trusted sessions (the schema's owner and superusers:
-- Backstop's own tooling) may name an operator with backstop.operator, or
-- propose as any agent.

CREATE TABLE backstop.duties (
    duty      text PRIMARY KEY,
    role_name text NOT NULL UNIQUE
);

-- Which agents a login may propose as (besides the agent named like it).
CREATE TABLE backstop.agent_logins (
    login text NOT NULL,
    agent text NOT NULL,
    PRIMARY KEY (login, agent)
);

CREATE FUNCTION backstop._trusted() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT r.rolsuper OR pg_has_role(r.oid, n.nspowner, 'MEMBER')
                       FROM pg_roles r, pg_namespace n
                      WHERE r.rolname = session_user AND n.nspname = 'backstop'), false)
$$;

CREATE OR REPLACE FUNCTION backstop.actor() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN backstop._trusted()
                THEN coalesce(nullif(current_setting('backstop.operator', true), ''), session_user::text)
                ELSE session_user::text END
$$;

DO $roles$
DECLARE
    prefix text := coalesce(nullif(current_setting('backstop.role_prefix', true), ''), 'backstop');
    d record;
    f record;
    r text;
    -- duty -> the functions it may call (every overload of each name).
    grants jsonb := '{
        "viewer":     ["tail", "compensation_plan", "compensation_outcome", "projection_diffs", "canon", "row_digest",
                       "drift_counts", "signal_counts", "rollup_bucket", "rollup_keys", "money", "path_get",
                       "actor", "seal_hash", "seal_genesis", "cost_to_reverse", "sample_bucket", "review_reason"],
        "agent":      ["propose", "decision", "record_result", "report_signal"],
        "approver":   ["approve", "reject", "expire_held", "seal", "ensure_log_partitions"],
        "operator":   ["request_compensation", "acknowledge_finding", "resolve_finding", "report_signal",
                       "load_registry", "load_policy", "report_config_rejected", "record_drill", "expire_held", "seal", "ensure_log_partitions"],
        "commander":  ["pause", "resume", "expire_held", "seal", "ensure_log_partitions"],
        "supervisor": ["schedule_reviews", "claim_reviews", "complete_review", "raise_finding", "add_rollups",
                       "add_rollup", "rollups_from_log", "pause", "request_compensation", "report_signal",
                       "load_registry", "load_policy", "report_config_rejected", "expire_held", "seal", "ensure_log_partitions"],
        "worker":     ["claim_compensations", "finish_compensation", "finish_compensations", "expire_held", "seal", "ensure_log_partitions"]
    }';
    definer text[] := ARRAY['propose', 'decision', 'record_result', 'report_signal', 'approve', 'reject', 'pause',
        'resume', 'request_compensation', 'acknowledge_finding', 'resolve_finding', 'load_registry', 'load_policy',
        'report_config_rejected', 'record_drill', 'schedule_reviews', 'claim_reviews', 'complete_review',
        'raise_finding', 'add_rollups', 'add_rollup', 'rollups_from_log', 'claim_compensations',
        'finish_compensation', 'finish_compensations', 'expire_held', 'seal', 'ensure_log_partitions'];
BEGIN
    IF prefix !~ '^[a-z][a-z0-9_]{0,40}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backstop.role_prefix must be lowercase letters, digits and _ (at most 41); got %L', prefix);
    END IF;
    -- Roles are cluster-wide: another database may have made them already.
    FOR d IN SELECT key AS duty FROM jsonb_each(grants) LOOP
        r := prefix || '_' || d.duty;
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
        INSERT INTO backstop.duties VALUES (d.duty, r);
    END LOOP;

    -- The owner: every object in the schema belongs to this NOLOGIN role, so
    -- the definer functions run as it, not as whoever migrated (often a
    -- superuser). Its members (the login that migrates) alone can migrate.
    r := prefix || '_owner';
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    INSERT INTO backstop.duties VALUES ('owner', r);
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT %I TO %I', r, current_user);
    END IF;
    EXECUTE format('ALTER SCHEMA backstop OWNER TO %I', r);
    FOR f IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
              WHERE c.relnamespace = 'backstop'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                -- A sequence owned by a column follows its table.
                AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = c.oid AND dep.deptype = 'a' AND c.relkind = 'S') LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I',
                       CASE f.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                       f.rel, r);
    END LOOP;
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p WHERE p.pronamespace = 'backstop'::regnamespace LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', f.sig, r);
    END LOOP;
    FOR f IN SELECT t.oid::regtype AS typ FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
              WHERE t.typnamespace = 'backstop'::regnamespace AND c.relkind = 'c' LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO %I', f.typ, r);
    END LOOP;

    -- Nothing for PUBLIC: functions are executable by everyone by default.
    EXECUTE 'REVOKE ALL ON SCHEMA backstop FROM PUBLIC';
    FOR f IN SELECT p.oid::regprocedure AS sig, p.proname FROM pg_proc p
              WHERE p.pronamespace = 'backstop'::regnamespace AND p.prokind = 'f' LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
        IF f.proname = ANY (definer) THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp', f.sig);
        END IF;
    END LOOP;

    FOR d IN SELECT key AS duty, value AS fns FROM jsonb_each(grants) LOOP
        r := prefix || '_' || d.duty;
        EXECUTE format('GRANT USAGE ON SCHEMA backstop TO %I', r);
        FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                  WHERE p.pronamespace = 'backstop'::regnamespace
                    AND p.proname IN (SELECT jsonb_array_elements_text(d.fns)) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f.sig, r);
        END LOOP;
    END LOOP;

    -- Every duty but the agent's reads the whole log and its projections; an
    -- agent reads nothing directly (its decisions come from decision()).
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA backstop TO %I', prefix || '_viewer');
    FOREACH r IN ARRAY ARRAY['approver', 'operator', 'commander', 'supervisor', 'worker'] LOOP
        EXECUTE format('GRANT %I TO %I', prefix || '_viewer', prefix || '_' || r);
    END LOOP;
    -- The supervisors share one cursor over the log.
    EXECUTE format('GRANT INSERT, UPDATE ON backstop.supervisor_cursor TO %I', prefix || '_supervisor');
END
$roles$;

-- Tables a later migration adds are readable by the viewers too.
DO $defaults$
BEGIN
    -- For tables the owner role creates (log partitions) and a migrating login creates.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA backstop GRANT SELECT ON TABLES TO %I',
                   coalesce(nullif(current_setting('backstop.role_prefix', true), ''), 'backstop') || '_owner',
                   coalesce(nullif(current_setting('backstop.role_prefix', true), ''), 'backstop') || '_viewer');
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA backstop GRANT SELECT ON TABLES TO %I',
                   coalesce(nullif(current_setting('backstop.role_prefix', true), ''), 'backstop') || '_viewer');
END
$defaults$;
