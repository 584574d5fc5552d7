-- The tool registry and the policy, versioned. Files in assets/ are parsed and
-- validated by the binary, then loaded through load_registry / load_policy,
-- which write a new version atomically and append the whole normalized
-- document to the log, so both tables can be rebuilt from the log.

CREATE TABLE backstop.active (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    registry_version bigint,
    policy_version   bigint
);
INSERT INTO backstop.active (id) VALUES (true);

CREATE TABLE backstop.registry_versions (
    version    bigint PRIMARY KEY,
    sha256     text        NOT NULL,
    source     text        NOT NULL,
    loaded_by  text        NOT NULL,
    loaded_at  timestamptz NOT NULL,
    loaded_seq bigint      NOT NULL,
    doc        jsonb       NOT NULL,
    summary    jsonb       NOT NULL
);

CREATE TABLE backstop.tools (
    version         bigint  NOT NULL REFERENCES backstop.registry_versions,
    name            text    NOT NULL,
    class           text    NOT NULL CHECK (class IN ('read', 'reversible', 'conditional', 'irreversible')),
    inverse         text,
    bindings        jsonb   NOT NULL DEFAULT '{}',
    reversal_window interval,
    condition       text,
    value_param     text,
    entity_param    text,
    cost_fixed      numeric NOT NULL DEFAULT 0 CHECK (cost_fixed >= 0),
    cost_share      numeric NOT NULL DEFAULT 0 CHECK (cost_share >= 0),
    executor        jsonb,
    description     text    NOT NULL DEFAULT '',
    remediation     text,
    PRIMARY KEY (version, name),
    CHECK (class NOT IN ('reversible', 'conditional') OR inverse IS NOT NULL)
);

CREATE TABLE backstop.policy_versions (
    version         bigint PRIMARY KEY,
    sha256          text        NOT NULL,
    source          text        NOT NULL,
    loaded_by       text        NOT NULL,
    loaded_at       timestamptz NOT NULL,
    loaded_seq      bigint      NOT NULL,
    doc             jsonb       NOT NULL,
    summary         jsonb       NOT NULL,
    hold_expiry     interval    NOT NULL,
    expiry_effect   text        NOT NULL CHECK (expiry_effect IN ('block', 'allow')),
    four_eyes_above numeric,
    -- Whether any rule needs to remember values agents used (parameter rules).
    param_memory    boolean     NOT NULL DEFAULT false,
    -- Whether a cumulative rule is in force: only then is allowed value
    -- counted per agent and minute.
    has_cumulative  boolean     NOT NULL DEFAULT false
);

CREATE TABLE backstop.policy_rules (
    version          bigint  NOT NULL REFERENCES backstop.policy_versions,
    ord              integer NOT NULL,
    name             text    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('amount_over', 'cost_to_reverse', 'confidence_below',
                                                      'cumulative', 'in_list', 'new_counterparty',
                                                      'changed_value', 'always')),
    effect           text    NOT NULL CHECK (effect IN ('hold', 'block')),
    reason           text    NOT NULL,
    threshold        numeric,
    confidence_below real,
    approvals        integer NOT NULL DEFAULT 1 CHECK (approvals BETWEEN 1 AND 5),
    rule_window      interval,
    param            text,
    key_param        text,
    list             text,
    classes          text[],
    agents           text[],
    tools            text[],
    overrides        jsonb   NOT NULL DEFAULT '{}',
    PRIMARY KEY (version, ord),
    UNIQUE (version, name),
    CHECK (kind NOT IN ('amount_over', 'cost_to_reverse', 'cumulative') OR threshold IS NOT NULL),
    CHECK (kind NOT IN ('cost_to_reverse', 'confidence_below') OR confidence_below IS NOT NULL),
    CHECK (kind <> 'cumulative' OR rule_window IS NOT NULL),
    CHECK (kind NOT IN ('in_list', 'new_counterparty', 'changed_value') OR param IS NOT NULL),
    CHECK (kind <> 'in_list' OR list IS NOT NULL),
    CHECK (kind <> 'changed_value' OR key_param IS NOT NULL)
);

CREATE TABLE backstop.policy_lists (
    version bigint NOT NULL REFERENCES backstop.policy_versions,
    list    text   NOT NULL,
    value   text   NOT NULL,
    PRIMARY KEY (version, list, value)
);

CREATE TABLE backstop.policy_list_tables (
    version     bigint NOT NULL REFERENCES backstop.policy_versions,
    list        text   NOT NULL,
    table_name  text   NOT NULL,
    column_name text   NOT NULL,
    PRIMARY KEY (version, list)
);

-- Memory the parameter rules need: values each agent has used before.
-- Written when an action is allowed (at propose or on final approval).
CREATE TABLE backstop.counterparties (
    agent text NOT NULL,
    param text NOT NULL,
    value text NOT NULL,
    first_seq bigint NOT NULL,
    PRIMARY KEY (agent, param, value)
);
CREATE TABLE backstop.param_values (
    agent     text NOT NULL,
    key_param text NOT NULL,
    key       text NOT NULL,
    param     text NOT NULL,
    value     text,
    last_seq  bigint NOT NULL,
    PRIMARY KEY (agent, key_param, key, param)
);
-- Allowed value per agent per minute, for the cumulative rule's sliding window.
CREATE TABLE backstop.agent_value_minutes (
    agent  text        NOT NULL,
    minute timestamptz NOT NULL,
    total  numeric     NOT NULL,
    PRIMARY KEY (agent, minute)
) WITH (fillfactor = 50);

CREATE FUNCTION backstop.money(v numeric) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN 'no amount'
                WHEN v = trunc(v) THEN '$' || to_char(v, 'FM999,999,999,999,990')
                ELSE '$' || to_char(v, 'FM999,999,999,999,990.00') END
$$;

CREATE FUNCTION backstop.path_get(doc jsonb, path text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT doc #> string_to_array(path, '.')
$$;

CREATE FUNCTION backstop.cost_to_reverse(class text, cost_fixed numeric, cost_share numeric, amount numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE class
        WHEN 'irreversible' THEN coalesce(amount, 0)
        WHEN 'read' THEN 0
        ELSE coalesce(cost_fixed, 0) + coalesce(cost_share, 0) * coalesce(amount, 0)
    END
$$;

-- The rows a registry or policy document becomes. Used by the loaders and by
-- the rebuild from the log, so both read documents the same way.
CREATE FUNCTION backstop.tools_of(p_version bigint, doc jsonb) RETURNS SETOF backstop.tools
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_version, t ->> 'name', t ->> 'class', t ->> 'inverse', coalesce(t -> 'bindings', '{}'),
           make_interval(secs => (t ->> 'window_seconds')::double precision), t ->> 'condition',
           t ->> 'value_param', t ->> 'entity_param',
           coalesce((t ->> 'cost_fixed')::numeric, 0), coalesce((t ->> 'cost_share')::numeric, 0),
           t -> 'executor', coalesce(t ->> 'description', ''), t ->> 'remediation'
      FROM jsonb_array_elements(doc -> 'tools') t
$$;

CREATE FUNCTION backstop.rules_of(p_version bigint, doc jsonb) RETURNS SETOF backstop.policy_rules
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_version, r.ord::integer, r.doc ->> 'name', r.doc ->> 'kind', r.doc ->> 'effect',
           coalesce(r.doc ->> 'reason', r.doc ->> 'name'),
           (r.doc ->> 'threshold')::numeric, (r.doc ->> 'confidence_below')::real,
           coalesce((r.doc ->> 'approvals')::int, 1),
           make_interval(secs => (r.doc ->> 'window_seconds')::double precision),
           r.doc ->> 'param', r.doc ->> 'key_param', r.doc ->> 'list',
           (SELECT array_agg(x) FROM jsonb_array_elements_text(r.doc -> 'classes') x),
           (SELECT array_agg(x) FROM jsonb_array_elements_text(r.doc -> 'agents') x),
           (SELECT array_agg(x) FROM jsonb_array_elements_text(r.doc -> 'tools') x),
           coalesce(r.doc -> 'overrides', '{}')
      FROM jsonb_array_elements(doc -> 'rules') WITH ORDINALITY AS r(doc, ord)
$$;

-- Load a registry document (normalized JSON written by `backstop check`'s
-- parser). A document identical to the active one changes nothing.
CREATE FUNCTION backstop.load_registry(doc jsonb, sha256 text, source text)
RETURNS TABLE (version bigint, changed boolean, summary jsonb)
LANGUAGE plpgsql AS $$
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

CREATE FUNCTION backstop.load_policy(doc jsonb, sha256 text, source text)
RETURNS TABLE (version bigint, changed boolean, summary jsonb)
LANGUAGE plpgsql AS $$
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
           has_cumulative = EXISTS (SELECT 1 FROM backstop.policy_rules r WHERE r.version = v_new AND r.kind = 'cumulative')
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

-- A rejected edit of a policy or registry file is an event too: operators see
-- it, and the last good version stays in force. Each distinct content is
-- recorded once, however many processes watch the file.
CREATE TABLE backstop.config_rejections (
    file   text   NOT NULL,
    sha256 text   NOT NULL,
    seq    bigint NOT NULL,
    PRIMARY KEY (file, sha256)
);

CREATE FUNCTION backstop.report_config_rejected(file text, sha256 text, errors jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_seq bigint;
BEGIN
    -- (The _check helpers are defined by a later migration; plpgsql binds late.)
    IF report_config_rejected.file IS NULL OR btrim(report_config_rejected.file) = '' OR length(report_config_rejected.file) > 4096 THEN
        PERFORM backstop._bad('report_config_rejected', 'file must name the rejected file (1 to 4096 characters)');
    END IF;
    IF report_config_rejected.sha256 IS NULL OR report_config_rejected.sha256 !~ '^[0-9a-f]{64}$' THEN
        PERFORM backstop._bad('report_config_rejected', format('sha256 must be 64 lowercase hex digits; got %s',
                                                               coalesce(quote_literal(left(report_config_rejected.sha256, 70)), 'null')));
    END IF;
    PERFORM backstop._check_json('report_config_rejected', 'errors', report_config_rejected.errors, 65536, false);
    PERFORM pg_advisory_xact_lock(1112757333, hashtext(report_config_rejected.file || report_config_rejected.sha256));
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
    p_stateless boolean DEFAULT false)
RETURNS backstop.verdict
LANGUAGE plpgsql STABLE AS $$
DECLARE
    res backstop.verdict;
    r backstop.policy_rules%ROWTYPE;
    o jsonb;
    thr numeric;
    cb real;
    hit boolean;
    v text;
    k text;
    total numeric;
    lt backstop.policy_list_tables%ROWTYPE;
    pv backstop.policy_versions%ROWTYPE;
BEGIN
    res.verdict := 'allow';
    res.reason := 'allowed by policy';
    res.approvals := 0;
    IF p_version IS NULL THEN
        RETURN res;
    END IF;
    FOR r IN SELECT * FROM backstop.policy_rules WHERE version = p_version ORDER BY ord LOOP
        CONTINUE WHEN p_stateless AND r.kind IN ('cumulative', 'new_counterparty', 'changed_value');
        CONTINUE WHEN r.agents IS NOT NULL AND NOT (p_agent = ANY (r.agents));
        CONTINUE WHEN r.tools IS NOT NULL AND NOT (p_tool = ANY (r.tools));
        CONTINUE WHEN r.classes IS NOT NULL AND NOT (coalesce(p_class, 'unknown') = ANY (r.classes));
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
            SELECT coalesce(sum(m.total), 0) INTO total FROM backstop.agent_value_minutes m
             WHERE m.agent = p_agent AND m.minute > date_trunc('minute', now() - r.rule_window);
            hit := coalesce(p_amount, 0) > 0 AND total + p_amount > thr;
            v := backstop.money(total);
        WHEN 'in_list' THEN
            v := backstop.path_get(p_params, r.param) #>> '{}';
            IF v IS NULL THEN
                hit := false;
            ELSE
                SELECT * INTO lt FROM backstop.policy_list_tables t WHERE t.version = p_version AND t.list = r.list;
                IF FOUND THEN
                    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I::text = $1)',
                                   lt.table_name::regclass, lt.column_name) INTO hit USING v;
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

-- What an allowed action teaches the parameter rules and the cumulative window.
CREATE FUNCTION backstop._remember(p_version bigint, p_memory boolean, p_agent text, p_params jsonb, p_amount numeric, p_seq bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
    k text;
    v text;
BEGIN
    IF coalesce(p_amount, 0) > 0 AND (SELECT p.has_cumulative FROM backstop.policy_versions p WHERE p.version = p_version) THEN
        INSERT INTO backstop.agent_value_minutes AS m (agent, minute, total)
        VALUES (p_agent, date_trunc('minute', now()), p_amount)
        ON CONFLICT (agent, minute) DO UPDATE SET total = m.total + excluded.total;
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

-- The minimal policy in force until assets/policy.toml is loaded.
SELECT set_config('backstop.operator', 'migration', true);
SELECT backstop.load_policy(
    '{"settings": {"hold_expiry_seconds": 3600, "expiry_effect": "block", "four_eyes_above": 10000},
      "rules": [
        {"name": "irreversible_over_limit", "kind": "amount_over", "effect": "hold", "threshold": 500,
         "classes": ["irreversible"], "approvals": 1,
         "reason": "irreversible {tool} of {amount} is above the {threshold} limit"},
        {"name": "costly_and_unsure", "kind": "cost_to_reverse", "effect": "hold", "threshold": 1000,
         "confidence_below": 0.85, "approvals": 1,
         "reason": "cost to reverse {cost} is above {threshold} with confidence {confidence}"},
        {"name": "four_eyes", "kind": "amount_over", "effect": "hold", "threshold": 10000, "approvals": 2,
         "reason": "{amount} is above {threshold}: two approvers"}],
      "lists": {}, "compensation": {"max_attempts": 5, "backoff_seconds": 2}}'::jsonb,
    -- sha256 of the text 'builtin-default-1': a fixed stand-in, as no file backs it.
    encode(sha256('builtin-default-1'), 'hex'), 'migration');
