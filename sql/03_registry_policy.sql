-- The tool registry and the policy, versioned. Files are parsed and
-- validated by the binary, then loaded through load_registry / load_policy,
-- which write a new version atomically and append the whole normalized
-- document to the log, so both tables can be rebuilt from the log.

-- money, path_get and cost_to_reverse are called several times per
-- proposal. They carry no SET search_path (a SQL function with SET is never
-- inlined, and is planned anew in every transaction); instead every name in
-- their bodies is schema-qualified, operators included, so no search_path
-- can change what they run, and the planner inlines them into the caller.
CREATE FUNCTION backstop.money(v numeric) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN v IS NULL THEN 'no amount'
                WHEN v OPERATOR(pg_catalog.=) pg_catalog.trunc(v)
                THEN '$' OPERATOR(pg_catalog.||) pg_catalog.to_char(v, 'FM999,999,999,999,990')
                ELSE '$' OPERATOR(pg_catalog.||) pg_catalog.to_char(v, 'FM999,999,999,999,990.00') END
$$;
SELECT backstop._grant('money', 'viewer');
COMMENT ON FUNCTION backstop.money IS 'Formats an amount as dollars for messages (''no amount'' for NULL). Callers: viewer. Returns text.';

CREATE FUNCTION backstop.path_get(doc jsonb, path text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT doc OPERATOR(pg_catalog.#>) pg_catalog.string_to_array(path, '.')
$$;
SELECT backstop._grant('path_get', 'viewer');
COMMENT ON FUNCTION backstop.path_get IS 'The value at a dotted path in a JSON document (NULL when absent). Callers: viewer. Returns jsonb.';

-- The money a call puts at stake, from the registry's value expression: one
-- or more dotted paths joined by +, where a segment ending in [] stands for
-- every element of an array (payment_methods[].amount). Absent paths add
-- nothing; the result is NULL only when no path is present. Anything but a
-- non-negative number is refused, naming the path.
CREATE FUNCTION backstop._value_of(p_params jsonb, p_expr text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    term text;
    v jsonb;
    jp text;
    seg text;
    total numeric;
    n numeric;
BEGIN
    FOREACH term IN ARRAY string_to_array(replace(p_expr, ' ', ''), '+') LOOP
        IF strpos(term, '[]') = 0 THEN
            v := backstop.path_get(p_params, term);
            CONTINUE WHEN v IS NULL OR jsonb_typeof(v) = 'null';
            n := backstop._value_number(term, v);
            total := coalesce(total, 0) + n;
        ELSE
            jp := '$';
            FOREACH seg IN ARRAY string_to_array(term, '.') LOOP
                jp := jp || '.' || CASE WHEN right(seg, 2) = '[]' THEN format('%s[*]', to_jsonb(left(seg, -2))::text)
                                        ELSE to_jsonb(seg)::text END;
            END LOOP;
            FOR v IN SELECT x FROM jsonb_path_query(p_params, jp::jsonpath) x LOOP
                CONTINUE WHEN jsonb_typeof(v) = 'null';
                n := backstop._value_number(term, v);
                total := coalesce(total, 0) + n;
            END LOOP;
        END IF;
    END LOOP;
    RETURN total;
END
$$;

CREATE FUNCTION backstop._value_number(p_path text, v jsonb) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    t text := v #>> '{}';
BEGIN
    IF jsonb_typeof(v) NOT IN ('number', 'string') OR t !~ '^[0-9]{1,13}([.][0-9]{1,12})?$' THEN
        PERFORM backstop._bad('propose', format('params.%s carries the value at stake and must be a non-negative number; got %s',
                                                p_path, quote_literal(left(v::text, 40))));
    END IF;
    RETURN trim_scale(round(t::numeric, 6));
END
$$;

CREATE FUNCTION backstop.cost_to_reverse(class text, cost_fixed numeric, cost_share numeric, amount numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN class OPERATOR(pg_catalog.=) 'irreversible' THEN coalesce(amount, 0)
                WHEN class OPERATOR(pg_catalog.=) 'read' THEN 0
                ELSE coalesce(cost_fixed, 0) OPERATOR(pg_catalog.+) (coalesce(cost_share, 0) OPERATOR(pg_catalog.*) coalesce(amount, 0))
    END
$$;
SELECT backstop._grant('cost_to_reverse', 'viewer');
COMMENT ON FUNCTION backstop.cost_to_reverse IS 'What undoing an action of this class and amount costs: fixed + share x amount; the whole amount for an irreversible tool. Callers: viewer. Returns numeric.';

-- The rows a registry or policy document becomes. Used by the loaders and by
-- the rebuild from the log, so both read documents the same way.
CREATE FUNCTION backstop.tools_of(p_version bigint, doc jsonb) RETURNS SETOF backstop.tools
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE AS $$
    SELECT p_version, t ->> 'name', t ->> 'class', t ->> 'inverse', coalesce(t -> 'bindings', '{}'),
           make_interval(secs => (t ->> 'window_seconds')::double precision), t ->> 'condition',
           t ->> 'value_param', t ->> 'entity_param',
           coalesce((t ->> 'cost_fixed')::numeric, 0), coalesce((t ->> 'cost_share')::numeric, 0),
           t -> 'executor', coalesce(t ->> 'description', ''), t ->> 'remediation',
           -- An inverse of another tool, which agents may not call unless it says so.
           EXISTS (SELECT 1 FROM jsonb_array_elements(doc -> 'tools') o WHERE o ->> 'inverse' = t ->> 'name')
             AND NOT coalesce((t ->> 'agent_callable')::boolean, false),
           coalesce((t ->> 'value_required')::boolean, false), t ->> 'direction',
           t ->> 'class_param', t -> 'class_values'
      FROM jsonb_array_elements(doc -> 'tools') t
$$;
-- Pure functions of a document: whoever verifies the log rebuilds from it.
SELECT backstop._grant('tools_of', 'viewer');
COMMENT ON FUNCTION backstop.tools_of IS 'The tools rows of a registry document (used by load_registry and the rebuild that verify compares). Callers: viewer. Returns SETOF backstop.tools.';

CREATE FUNCTION backstop.rules_of(p_version bigint, doc jsonb) RETURNS SETOF backstop.policy_rules
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE AS $$
    SELECT p_version, r.ord::integer, r.doc ->> 'name', r.doc ->> 'kind', r.doc ->> 'effect',
           coalesce(r.doc ->> 'reason', r.doc ->> 'name'),
           (r.doc ->> 'threshold')::numeric, (r.doc ->> 'confidence_below')::real,
           coalesce((r.doc ->> 'approvals')::int, 1),
           make_interval(secs => (r.doc ->> 'window_seconds')::double precision),
           r.doc ->> 'param', r.doc ->> 'key_param', r.doc ->> 'list',
           (SELECT array_agg(x) FROM jsonb_array_elements_text(r.doc -> 'classes') x),
           (SELECT array_agg(x) FROM jsonb_array_elements_text(r.doc -> 'agents') x),
           (SELECT array_agg(x) FROM jsonb_array_elements_text(r.doc -> 'tools') x),
           coalesce(r.doc -> 'overrides', '{}'),
           r.doc ->> 'direction', coalesce(r.doc ->> 'per', 'agent')
      FROM jsonb_array_elements(doc -> 'rules') WITH ORDINALITY AS r(doc, ord)
$$;
SELECT backstop._grant('rules_of', 'viewer');
COMMENT ON FUNCTION backstop.rules_of IS 'The policy_rules rows of a policy document (used by load_policy and the rebuild that verify compares). Callers: viewer. Returns SETOF backstop.policy_rules.';

-- Load a registry document (normalized JSON written by `backstop check`'s
-- parser). A document identical to the active one changes nothing.
CREATE FUNCTION backstop.load_registry(doc jsonb, sha256 text, source text)
RETURNS TABLE (version bigint, changed boolean, summary jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_cur bigint;
    v_new bigint;
    v_summary jsonb;
    v_seq bigint;
    v_at timestamptz;
    v_actor text := backstop.actor();
BEGIN
    IF doc IS NULL OR jsonb_typeof(doc -> 'tools') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'load_registry: the document must be an object with a "tools" array';
    END IF;
    IF load_registry.sha256 IS NULL OR load_registry.sha256 !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_registry: ' || 'sha256 must be 64 lowercase hex digits';
    END IF;
    IF load_registry.source IS NULL OR btrim(load_registry.source) = '' OR length(load_registry.source) > 4096 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_registry: ' || 'source must name where the document came from (1 to 4096 characters)';
    END IF;
    LOCK TABLE backstop.registry_versions IN EXCLUSIVE MODE;
    SELECT a.registry_version INTO v_cur FROM backstop.active a;
    IF v_cur IS NOT NULL AND (SELECT r.sha256 FROM backstop.registry_versions r WHERE r.version = v_cur) = load_registry.sha256 THEN
        RETURN QUERY SELECT v_cur, false, '{}'::jsonb;
        RETURN;
    END IF;
    SELECT coalesce(max(r.version), 0) + 1 INTO v_new FROM backstop.registry_versions r;

    WITH new AS (
        SELECT t ->> 'name' AS name, t AS doc FROM jsonb_array_elements(load_registry.doc -> 'tools') t
    ), old AS (
        SELECT r.value ->> 'name' AS name, r.value AS doc
          FROM backstop.registry_versions v, jsonb_array_elements(v.doc -> 'tools') r
         WHERE v.version = v_cur
    )
    SELECT jsonb_build_object(
        'added', coalesce((SELECT jsonb_agg(n.name ORDER BY n.name) FROM new n WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.name = n.name)), '[]'),
        'removed', coalesce((SELECT jsonb_agg(o.name ORDER BY o.name) FROM old o WHERE NOT EXISTS (SELECT 1 FROM new n WHERE n.name = o.name)), '[]'),
        'changed', coalesce((SELECT jsonb_agg(n.name ORDER BY n.name) FROM new n JOIN old o USING (name) WHERE n.doc <> o.doc), '[]'),
        'tools', (SELECT count(*) FROM new))
      INTO v_summary;

    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('registry_loaded', v_actor, NULL, NULL, NULL,
        jsonb_build_object('version', v_new, 'sha256', load_registry.sha256, 'source', load_registry.source,
                           'summary', v_summary, 'doc', load_registry.doc),
        p_registry => v_new) l;

    INSERT INTO backstop.registry_versions (version, sha256, source, loaded_by, loaded_at, loaded_seq, doc, summary)
    VALUES (v_new, load_registry.sha256, load_registry.source, v_actor, v_at, v_seq, load_registry.doc, v_summary);

    INSERT INTO backstop.tools SELECT * FROM backstop.tools_of(v_new, load_registry.doc);

    UPDATE backstop.active SET registry_version = v_new;
    PERFORM pg_notify('backstop_control', jsonb_build_object('event', 'registry_loaded', 'version', v_new, 'seq', v_seq)::text);
    RETURN QUERY SELECT v_new, true, v_summary;
-- The binary validates documents before loading them (backstop check); a
-- client calling this directly with a malformed one gets a clear refusal,
-- not a constraint violation from deep inside.
EXCEPTION
    WHEN not_null_violation OR check_violation OR unique_violation OR foreign_key_violation THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_registry: ' || format('the document is not a valid registry (%s); check it with backstop check', SQLERRM);
END
$$;
SELECT backstop._grant('load_registry', 'policy');
COMMENT ON FUNCTION backstop.load_registry IS 'Loads a validated tool registry document (from `backstop load`) as a new version and appends registry_loaded; an identical document changes nothing. Callers: policy. Returns (version, changed, summary of what changed).';

CREATE FUNCTION backstop.load_policy(doc jsonb, sha256 text, source text)
RETURNS TABLE (version bigint, changed boolean, summary jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_cur bigint;
    v_new bigint;
    v_summary jsonb;
    v_seq bigint;
    v_at timestamptz;
    v_actor text := backstop.actor();
    s jsonb := coalesce(doc -> 'settings', '{}');
    l record;
BEGIN
    IF doc IS NULL OR jsonb_typeof(doc -> 'rules') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'load_policy: the document must be an object with a "rules" array';
    END IF;
    IF load_policy.sha256 IS NULL OR load_policy.sha256 !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_policy: ' || 'sha256 must be 64 lowercase hex digits';
    END IF;
    IF load_policy.source IS NULL OR btrim(load_policy.source) = '' OR length(load_policy.source) > 4096 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_policy: ' || 'source must name where the document came from (1 to 4096 characters)';
    END IF;
    -- The cumulative window, as the binary checks it: per-minute totals older
    -- than 31 days are pruned, so a longer window would count less than it says.
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(doc -> 'rules') r
                WHERE jsonb_typeof(r -> 'window_seconds') = 'number'
                  AND NOT (r ->> 'window_seconds')::double precision BETWEEN 60 AND 2678400) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_policy: a rule''s window must be 1 minute to 31 days';
    END IF;
    LOCK TABLE backstop.policy_versions IN EXCLUSIVE MODE;
    SELECT a.policy_version INTO v_cur FROM backstop.active a;
    IF v_cur IS NOT NULL AND (SELECT p.sha256 FROM backstop.policy_versions p WHERE p.version = v_cur) = load_policy.sha256 THEN
        RETURN QUERY SELECT v_cur, false, '{}'::jsonb;
        RETURN;
    END IF;
    SELECT coalesce(max(p.version), 0) + 1 INTO v_new FROM backstop.policy_versions p;

    WITH new AS (
        SELECT r ->> 'name' AS name, r AS doc FROM jsonb_array_elements(load_policy.doc -> 'rules') r
    ), old AS (
        SELECT r.value ->> 'name' AS name, r.value AS doc
          FROM backstop.policy_versions v, jsonb_array_elements(v.doc -> 'rules') r
         WHERE v.version = v_cur
    ), olddoc AS (
        SELECT v.doc FROM backstop.policy_versions v WHERE v.version = v_cur
    )
    SELECT jsonb_build_object(
        'added', coalesce((SELECT jsonb_agg(n.name ORDER BY n.name) FROM new n WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.name = n.name)), '[]'),
        'removed', coalesce((SELECT jsonb_agg(o.name ORDER BY o.name) FROM old o WHERE NOT EXISTS (SELECT 1 FROM new n WHERE n.name = o.name)), '[]'),
        'changed', coalesce((SELECT jsonb_agg(n.name ORDER BY n.name) FROM new n JOIN old o USING (name) WHERE n.doc <> o.doc), '[]'),
        'settings_changed', coalesce((SELECT (d.doc - 'rules') <> (load_policy.doc - 'rules') FROM olddoc d), true),
        'rules', (SELECT count(*) FROM new))
      INTO v_summary;

    SELECT x.seq, x.at INTO v_seq, v_at FROM backstop._append('policy_loaded', v_actor, NULL, NULL, NULL,
        jsonb_build_object('version', v_new, 'sha256', load_policy.sha256, 'source', load_policy.source,
                           'summary', v_summary, 'doc', load_policy.doc),
        p_policy => v_new) x;

    INSERT INTO backstop.policy_versions (version, sha256, source, loaded_by, loaded_at, loaded_seq, doc, summary,
                                          hold_expiry, expiry_effect, four_eyes_above)
    VALUES (v_new, load_policy.sha256, load_policy.source, v_actor, v_at, v_seq, load_policy.doc, v_summary,
            make_interval(secs => coalesce((s ->> 'hold_expiry_seconds')::double precision, 3600)),
            coalesce(s ->> 'expiry_effect', 'block'),
            (s ->> 'four_eyes_above')::numeric);

    INSERT INTO backstop.policy_rules SELECT * FROM backstop.rules_of(v_new, load_policy.doc);

    FOR l IN SELECT key, value FROM jsonb_each(coalesce(load_policy.doc -> 'lists', '{}')) LOOP
        IF l.value ? 'table' THEN
            IF to_regclass(l.value ->> 'table') IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = format('load_policy: list %s names table %s, which does not exist', l.key, l.value ->> 'table');
            END IF;
            -- A plain table only: a view (or a foreign table) runs code when read.
            IF (SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(l.value ->> 'table')) NOT IN ('r', 'p') THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = format('load_policy: list %s names %s, which is not a plain table (a view or foreign table runs code when read)',
                                     l.key, l.value ->> 'table');
            END IF;
            IF NOT (has_table_privilege((SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'check'),
                                        to_regclass(l.value ->> 'table'), 'SELECT')
                    AND has_schema_privilege((SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'check'),
                                             (SELECT c.relnamespace FROM pg_class c WHERE c.oid = to_regclass(l.value ->> 'table')),
                                             'USAGE')) THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                    MESSAGE = format('load_policy: list %s names table %s, which the check role cannot read: GRANT SELECT ON %s TO %I (and USAGE on its schema)',
                                     l.key, l.value ->> 'table', l.value ->> 'table',
                                     (SELECT d.role_name FROM backstop.duties d WHERE d.duty = 'check'));
            END IF;
            INSERT INTO backstop.policy_list_tables (version, list, table_name, column_name)
            VALUES (v_new, l.key, l.value ->> 'table', coalesce(l.value ->> 'column', 'value'));
        ELSE
            INSERT INTO backstop.policy_lists (version, list, value)
            SELECT DISTINCT v_new, l.key, x FROM jsonb_array_elements_text(coalesce(l.value -> 'values', '[]')) x;
        END IF;
    END LOOP;

    UPDATE backstop.policy_versions p
       SET param_memory = EXISTS (SELECT 1 FROM backstop.policy_rules r
                                   WHERE r.version = v_new AND r.kind IN ('new_counterparty', 'changed_value')),
           has_cumulative = EXISTS (SELECT 1 FROM backstop.policy_rules r WHERE r.version = v_new AND r.kind = 'cumulative'),
           entity_cumulative = EXISTS (SELECT 1 FROM backstop.policy_rules r
                                        WHERE r.version = v_new AND r.kind = 'cumulative' AND r.per = 'entity')
     WHERE p.version = v_new;
    UPDATE backstop.active SET policy_version = v_new;
    PERFORM pg_notify('backstop_control', jsonb_build_object('event', 'policy_loaded', 'version', v_new, 'seq', v_seq)::text);
    RETURN QUERY SELECT v_new, true, v_summary;
-- The binary validates documents before loading them (backstop check); a
-- client calling this directly with a malformed one gets a clear refusal,
-- not a constraint violation from deep inside.
EXCEPTION
    WHEN not_null_violation OR check_violation OR unique_violation OR foreign_key_violation THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'load_policy: ' || format('the document is not a valid policy (%s); check it with backstop check', SQLERRM);
END
$$;
SELECT backstop._grant('load_policy', 'policy');
COMMENT ON FUNCTION backstop.load_policy IS 'Loads a validated policy document (from `backstop load`) as a new version and appends policy_loaded; an identical document changes nothing. Callers: policy. Returns (version, changed, summary of what changed).';

CREATE FUNCTION backstop.report_config_rejected(file text, sha256 text, errors jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_seq bigint;
BEGIN
    IF report_config_rejected.file IS NULL OR btrim(report_config_rejected.file) = '' OR length(report_config_rejected.file) > 4096 THEN
        PERFORM backstop._bad('report_config_rejected', 'file must name the rejected file (1 to 4096 characters)');
    END IF;
    IF report_config_rejected.sha256 IS NULL OR report_config_rejected.sha256 !~ '^[0-9a-f]{64}$' THEN
        PERFORM backstop._bad('report_config_rejected', format('sha256 must be 64 lowercase hex digits; got %s',
                                                               coalesce(quote_literal(left(report_config_rejected.sha256, 70)), 'null')));
    END IF;
    PERFORM backstop._check_json('report_config_rejected', 'errors', report_config_rejected.errors, 65536, false);
    INSERT INTO backstop.request_claims (scope, key)
    VALUES ('rejected/' || report_config_rejected.sha256, report_config_rejected.file) ON CONFLICT DO NOTHING;
    SELECT r.seq INTO v_seq FROM backstop.config_rejections r
     WHERE r.file = report_config_rejected.file AND r.sha256 = report_config_rejected.sha256;
    IF FOUND THEN
        RETURN v_seq;
    END IF;
    SELECT l.seq INTO v_seq FROM backstop._append('policy_rejected', backstop.actor(), NULL, NULL, NULL,
        jsonb_build_object('file', report_config_rejected.file, 'sha256', report_config_rejected.sha256,
                           'errors', report_config_rejected.errors)) l;
    INSERT INTO backstop.config_rejections (file, sha256, seq)
    VALUES (report_config_rejected.file, report_config_rejected.sha256, v_seq);
    PERFORM pg_notify('backstop_control', jsonb_build_object('event', 'policy_rejected', 'file', report_config_rejected.file,
                                                             'seq', v_seq)::text);
    RETURN v_seq;
END
$$;
SELECT backstop._grant('report_config_rejected', 'policy');
COMMENT ON FUNCTION backstop.report_config_rejected IS 'Records that a registry or policy file was rejected (once per file content), so operators see it; the last good version stays in force. Callers: policy. Returns the log seq.';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.active IS 'The registry and policy versions in force. Readers: every duty but agent.';
COMMENT ON TABLE backstop.registry_versions IS 'Every tool registry loaded, with its document and what changed. Readers: every duty but agent.';
COMMENT ON TABLE backstop.tools IS 'The tools of each registry version: class, inverse, bindings, value and entity parameters, costs, executor. Readers: every duty but agent.';
COMMENT ON TABLE backstop.policy_versions IS 'Every policy loaded, with its document and settings. Readers: every duty but agent.';
COMMENT ON TABLE backstop.policy_rules IS 'The pre-action rules of each policy version, in order. Readers: every duty but agent.';
COMMENT ON TABLE backstop.policy_lists IS 'Inline list values of each policy version. Readers: every duty but agent.';
COMMENT ON TABLE backstop.policy_list_tables IS 'Lists of each policy version read from a table column. Readers: every duty but agent.';
COMMENT ON TABLE backstop.config_rejections IS 'Rejected registry and policy files, one row per distinct content. Readers: every duty but agent.';
