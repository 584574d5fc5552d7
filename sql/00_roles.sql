-- Duties, the owner, and how grants are written.
--
-- Least privilege. One NOLOGIN role per duty; logins are members
-- (`backstop grant DUTY LOGIN`). The contract's entry points run as their
-- owner (SECURITY DEFINER, fixed search_path), so no duty writes any table
-- directly, and a duty can call only its own functions: each function's
-- file grants it, right below its definition, with backstop._grant.
-- Role names are PREFIX_duty; PREFIX is the session setting
-- backstop.role_prefix at migration time (`BACKSTOP_ROLE_PREFIX`), default
-- "backstop".
--
-- Identity comes from the session: a login's actions are recorded under the
-- login's name. Only trusted sessions (the schema's owner and superusers:
-- Backstop's own tooling) may name an operator with backstop.operator, or
-- propose as any agent.
--
-- This file runs first, as the login that migrates; it ends by switching to
-- the owner role, so everything the later files create belongs to the owner
-- and the definer functions run as it, not as whoever migrated (often a
-- superuser).

DO $roles$
DECLARE
    prefix text := coalesce(nullif(current_setting('backstop.role_prefix', true), ''), 'backstop');
    duty text;
    r text;
    f record;
BEGIN
    IF prefix !~ '^[a-z][a-z0-9_]{0,40}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backstop.role_prefix must be lowercase letters, digits and _ (at most 41); got %L', prefix);
    END IF;
    -- Roles are cluster-wide: another database may have made them already.
    -- `policy` loads the registry and the policy; `check` is no login's duty:
    -- the supervisor's policy checks run as it (backstop_check.run).
    FOREACH duty IN ARRAY ARRAY['viewer', 'agent', 'approver', 'operator', 'commander', 'supervisor', 'worker',
                                'policy', 'check', 'owner'] LOOP
        r := prefix || '_' || duty;
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
        INSERT INTO backstop.duties AS d VALUES (duty, r)
        ON CONFLICT ON CONSTRAINT duties_pkey DO UPDATE SET role_name = excluded.role_name
        WHERE d.role_name IS DISTINCT FROM excluded.role_name;
    END LOOP;

    -- The owner: every object in the schema belongs to this NOLOGIN role. Its
    -- members (the login that migrates) alone can migrate.
    r := prefix || '_owner';
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, r, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', r, current_user);
    END IF;
    EXECUTE format('ALTER SCHEMA backstop OWNER TO %I', r);
    -- The kill switch ends the sessions that hold it hostage (pause); a
    -- definer function can signal them only if its owner may.
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR pg_has_role(current_user, 'pg_signal_backend', 'USAGE WITH ADMIN OPTION') THEN
        EXECUTE format('GRANT pg_signal_backend TO %I', r);
    END IF;

    -- The policy's checks run in a schema of their own, as a role that reads
    -- only what the deployment grants it (the business tables the checks
    -- name): the function that runs them is the check role's, so whatever a
    -- check does, it does with that role's rights and no more.
    EXECUTE 'CREATE SCHEMA IF NOT EXISTS backstop_check';
    EXECUTE format('ALTER SCHEMA backstop_check OWNER TO %I', prefix || '_check');
    EXECUTE 'REVOKE ALL ON SCHEMA backstop_check FROM PUBLIC';
    EXECUTE format('GRANT USAGE ON SCHEMA backstop_check TO %I, %I', prefix || '_supervisor', r);
    -- The owner makes the check functions (SET ROLE to the check role).
    EXECUTE format('GRANT %I TO %I', prefix || '_check', r);
    -- Tables and sequences a migration made (as the migrating login).
    FOR f IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
              WHERE c.relnamespace = 'backstop'::regnamespace AND c.relkind IN ('r', 'p', 'S')
                AND c.relowner <> r::regrole
                -- A sequence owned by a column follows its table.
                AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = c.oid AND dep.deptype = 'a' AND c.relkind = 'S') LOOP
        EXECUTE format('ALTER %s %s OWNER TO %I', CASE f.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, f.rel, r);
    END LOOP;

    -- Nothing for PUBLIC; each duty sees the schema.
    EXECUTE 'REVOKE ALL ON SCHEMA backstop FROM PUBLIC';
    FOR f IN SELECT d.role_name FROM backstop.duties d WHERE d.duty NOT IN ('owner', 'check') LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA backstop TO %I', f.role_name);
    END LOOP;

    -- Every duty but the agent's reads the whole log and its projections; an
    -- agent reads nothing directly (its decisions come from decision()).
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA backstop TO %I', prefix || '_viewer');
    FOREACH duty IN ARRAY ARRAY['approver', 'operator', 'commander', 'supervisor', 'worker', 'policy'] LOOP
        EXECUTE format('GRANT %I TO %I', prefix || '_viewer', prefix || '_' || duty);
    END LOOP;
    -- The supervisors share one cursor over the log.
    EXECUTE format('GRANT INSERT, UPDATE ON backstop.supervisor_cursor TO %I', prefix || '_supervisor');

    -- Tables and views made later (log partitions by the owner, tables by a
    -- migrating login) are readable by the viewers too.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA backstop GRANT SELECT ON TABLES TO %I',
                   r, prefix || '_viewer');
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA backstop GRANT SELECT ON TABLES TO %I', prefix || '_viewer');

    EXECUTE format('SET LOCAL ROLE %I', r);
END
$roles$;

-- Grant EXECUTE on every overload of backstop.FN to the roles of the duties
-- named. Each public function's file calls this right below the function.
CREATE FUNCTION backstop._grant(fn text, VARIADIC duties text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    d text;
    r text;
    n integer := 0;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname = fn LOOP
        n := n + 1;
        FOREACH d IN ARRAY duties LOOP
            SELECT t.role_name INTO r FROM backstop.duties t WHERE t.duty = d;
            IF r IS NULL OR d IN ('owner', 'check') THEN
                RAISE EXCEPTION 'backstop._grant: % is not a duty', d;
            END IF;
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, r);
        END LOOP;
    END LOOP;
    IF n = 0 THEN
        RAISE EXCEPTION 'backstop._grant: no function backstop.%', fn;
    END IF;
END
$$;

-- The contract's version: raised on every change a client could notice (a
-- function's arguments, results or meaning), with a line in
-- sql/CHANGELOG.md. Clients check it before they call anything.
CREATE FUNCTION backstop.contract_version() RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE AS $$
    SELECT 9
$$;
SELECT backstop._grant('contract_version', 'viewer', 'agent', 'approver', 'operator', 'commander', 'supervisor', 'worker', 'policy');
COMMENT ON FUNCTION backstop.contract_version IS 'The version of the SQL contract this database runs (sql/CHANGELOG.md); a client checks it before it calls anything. Callers: every duty. Returns integer.';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.duties IS 'The role of each duty (PREFIX_duty). Readers: every duty but agent.';
COMMENT ON TABLE backstop.agent_logins IS 'Which agents a login may act as, besides the agent named like it. Readers: every duty but agent; written by the owner (`backstop grant`).';
COMMENT ON TABLE backstop.contract_files IS 'The sql/ files as last applied by `backstop migrate`, with their checksums. Readers: every duty but agent.';
