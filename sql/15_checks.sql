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
CREATE FUNCTION backstop_check.run(query text, params jsonb, result jsonb, amount numeric) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    msg text;
BEGIN
    EXECUTE query INTO msg USING params, result, amount;
    RETURN msg;
END
$$;
REVOKE ALL ON FUNCTION backstop_check.run(text, jsonb, jsonb, numeric) FROM PUBLIC;
COMMENT ON FUNCTION backstop_check.run IS 'Runs one of the policy''s supervisor checks with the check role''s rights. Callers: supervisor (in a read-only savepoint). Returns the violation''s message, or NULL.';

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
COMMENT ON FUNCTION backstop_check.in_list IS 'Whether a policy list kept in a table holds a value, read with the check role''s rights. Callers: the owner (propose), supervisor (evaluate in its review). Returns boolean.';

DO $check$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION backstop_check.run(text, jsonb, jsonb, numeric) TO %I',
                   current_setting('backstop.supervisor_role'));
    -- The supervisor's review evaluates the policy, lists included.
    EXECUTE format('GRANT EXECUTE ON FUNCTION backstop_check.in_list(text, text, text) TO %I',
                   current_setting('backstop.supervisor_role'));
    EXECUTE format('SET LOCAL ROLE %I', current_setting('backstop.owner_role'));
END
$check$;
