-- Input checks shared by the contract's functions. Every write goes through
-- the contract; bad input
-- raises SQLSTATE 22023 (or P0002 for an unknown id) with a message naming
-- the function and the argument, before anything is appended.
--
-- Limits: names (agent, tool, worker, signal kind) 1-128 characters of
-- [A-Za-z0-9._:@/-]; params, result, inverse_params, detail 64 KiB each;
-- inputs 256 KiB; reasoning 64 KiB; correlation_id and idempotency_key 256
-- characters; notes and reasons 2,000 characters; amounts 0 to 10^12 with
-- at most 6 decimals; confidence 0 to 1.
CREATE FUNCTION backstop._bad(fn text, msg text, code text DEFAULT '22023') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = fn || ': ' || msg;
END
$$;

CREATE FUNCTION backstop._check_name(fn text, what text, v text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    IF v IS NULL OR length(v) > 128 OR v !~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]*$' THEN
        PERFORM backstop._bad(fn, format('%s must be 1 to 128 characters of letters, digits and . _ : @ / -, starting with a letter or digit; got %s',
                                         what, coalesce(quote_literal(left(v, 60)), 'null')));
    END IF;
END
$$;

-- The size a JSON argument's limit counts: the value's own, whole. A value
-- read from a table may arrive compressed, and pg_column_size of it is
-- what it takes compressed (5 MB of one letter repeated is 60 KB); #> '{}'
-- hands the value back whole (for a value a client sent, the same datum).
-- A SQL function the planner inlines: the fast checks call nothing. (A
-- value taken out of a batch's JSON with -> is whole already.)
CREATE FUNCTION backstop._json_size(v jsonb) RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.pg_column_size(v OPERATOR(pg_catalog.#>) '{}'::pg_catalog.text[])
$$;

CREATE FUNCTION backstop._check_json(fn text, what text, v jsonb, max_bytes integer, must_be_object boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    IF v IS NULL THEN
        RETURN;
    END IF;
    IF must_be_object AND jsonb_typeof(v) <> 'object' THEN
        PERFORM backstop._bad(fn, format('%s must be a JSON object; got a JSON %s', what, jsonb_typeof(v)));
    END IF;
    IF backstop._json_size(v) > max_bytes THEN
        PERFORM backstop._bad(fn, format('%s is %s bytes; the limit is %s bytes', what, backstop._json_size(v), max_bytes));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_text(fn text, what text, v text, max_chars integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    IF v IS NOT NULL AND length(v) > max_chars THEN
        PERFORM backstop._bad(fn, format('%s is %s characters; the limit is %s', what, length(v), max_chars));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_reason(fn text, what text, v text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    IF v IS NULL OR btrim(v) = '' THEN
        PERFORM backstop._bad(fn, format('%s is required: say why, it is recorded in the log', what));
    END IF;
    PERFORM backstop._check_text(fn, what, v, 2000);
END
$$;

CREATE FUNCTION backstop._check_amount(fn text, v numeric) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    IF v IS NULL THEN
        RETURN;
    END IF;
    IF v = 'NaN'::numeric OR v IN ('Infinity'::numeric, '-Infinity'::numeric) THEN
        PERFORM backstop._bad(fn, format('amount must be a finite number; got %s', v));
    END IF;
    IF v < 0 THEN
        PERFORM backstop._bad(fn, format('amount must not be negative; got %s', v));
    END IF;
    IF v > 1e12 OR scale(v) > 6 THEN
        PERFORM backstop._bad(fn, format('amount must be at most 1,000,000,000,000 with at most 6 decimals; got %s', v));
    END IF;
END
$$;

CREATE FUNCTION backstop._check_confidence(fn text, v real) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    IF v IS NOT NULL AND (v = 'NaN'::real OR v < 0 OR v > 1) THEN
        PERFORM backstop._bad(fn, format('confidence must be between 0 and 1; got %s', v));
    END IF;
END
$$;
