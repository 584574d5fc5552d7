-- The supervisor: delayed reviews, sampling, rollups for drift, drills.

-- Deterministic sampling: every supervisor agrees on which actions are sampled.
CREATE FUNCTION backstop.sample_bucket(id uuid) RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE PARALLEL SAFE AS $$
    SELECT (abs(hashtextextended(id::text, 0)) % 10000)::integer
$$;
SELECT backstop._grant('sample_bucket', 'viewer');
COMMENT ON FUNCTION backstop.sample_bucket IS 'The deterministic sampling bucket (0-9999) of an action id, so every supervisor samples the same actions. Callers: viewer. Returns integer.';

-- Why an executed action is reviewed, or NULL when it is not.
CREATE FUNCTION backstop.review_reason(a backstop.actions, sample_rate double precision, risky_classes text[],
                                       amount_over numeric, confidence_below real)
RETURNS text LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE AS $$
    SELECT CASE
        WHEN a.class = ANY (risky_classes) THEN 'risky: ' || a.class
        WHEN amount_over IS NOT NULL AND a.amount > amount_over THEN 'risky: amount over ' || amount_over
        WHEN confidence_below IS NOT NULL AND coalesce(a.confidence, 0) < confidence_below THEN 'risky: confidence below ' || confidence_below
        WHEN backstop.sample_bucket(a.action_id) < (sample_rate * 10000)::integer THEN 'sampled'
    END
$$;
SELECT backstop._grant('review_reason', 'viewer');
COMMENT ON FUNCTION backstop.review_reason IS 'Why an executed action is due for review (risky class, amount, confidence, sampled), or NULL. Callers: viewer. Returns text.';

-- Schedule the reviews of executed actions (idempotent).
CREATE FUNCTION backstop.schedule_reviews(action_ids uuid[], delay interval, sample_rate double precision,
                                          risky_classes text[], amount_over numeric, confidence_below real)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF action_ids IS NULL OR cardinality(action_ids) > 100000 THEN
        PERFORM backstop._bad('schedule_reviews', 'action_ids must be an array of at most 100000 ids');
    END IF;
    IF delay IS NULL OR delay < interval '0' OR delay > interval '30 days' THEN
        PERFORM backstop._bad('schedule_reviews', format('delay must be between 0 and 30 days; got %s', coalesce(delay::text, 'null')));
    END IF;
    IF sample_rate IS NULL OR sample_rate::numeric NOT BETWEEN 0 AND 1 THEN
        PERFORM backstop._bad('schedule_reviews', format('sample_rate must be between 0 and 1; got %s', coalesce(sample_rate::text, 'null')));
    END IF;
    IF confidence_below IS NOT NULL AND confidence_below::numeric NOT BETWEEN 0 AND 1 THEN
        PERFORM backstop._bad('schedule_reviews', format('confidence_below must be between 0 and 1; got %s', confidence_below));
    END IF;
    INSERT INTO backstop.reviews (action_id, agent, tool, due_at, reason)
    SELECT a.action_id, a.agent, a.tool, a.executed_at + delay,
           backstop.review_reason(a, sample_rate, risky_classes, amount_over, confidence_below)
      FROM unnest(action_ids) i(id)
      JOIN backstop.actions a ON a.action_id = i.id
     WHERE a.status IN ('executed', 'failed')
       AND backstop.review_reason(a, sample_rate, risky_classes, amount_over, confidence_below) IS NOT NULL
    ON CONFLICT (action_id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
SELECT backstop._grant('schedule_reviews', 'supervisor');
COMMENT ON FUNCTION backstop.schedule_reviews IS 'Schedules delayed reviews of executed actions that review_reason selects. Callers: supervisor. Returns the number scheduled.';

CREATE FUNCTION backstop.claim_reviews(supervisor text, max integer, lease interval)
RETURNS SETOF backstop.reviews
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    PERFORM backstop._check_name('claim_reviews', 'supervisor', claim_reviews.supervisor);
    IF claim_reviews.max IS NULL OR claim_reviews.max NOT BETWEEN 1 AND 10000 THEN
        PERFORM backstop._bad('claim_reviews', format('max must be between 1 and 10000; got %s', coalesce(claim_reviews.max::text, 'null')));
    END IF;
    IF claim_reviews.lease IS NULL OR claim_reviews.lease < interval '1 second' OR claim_reviews.lease > interval '1 hour' THEN
        PERFORM backstop._bad('claim_reviews', format('lease must be between 1 second and 1 hour; got %s', coalesce(claim_reviews.lease::text, 'null')));
    END IF;
    RETURN QUERY
    UPDATE backstop.reviews r
       SET status = 'running', claimed_by = backstop._process(claim_reviews.supervisor), lease_until = v_now + claim_reviews.lease,
           attempts = r.attempts + 1
      FROM (SELECT x.action_id FROM backstop.reviews x
             WHERE x.status <> 'done' AND x.due_at <= v_now AND (x.status = 'pending' OR x.lease_until < v_now)
             ORDER BY x.due_at
             LIMIT claim_reviews.max
               FOR UPDATE SKIP LOCKED) c
     WHERE r.action_id = c.action_id
    RETURNING r.*;
END
$$;
SELECT backstop._grant('claim_reviews', 'supervisor');
COMMENT ON FUNCTION backstop.claim_reviews IS 'Claims up to max due reviews for a supervisor, with a lease. Callers: supervisor. Returns the claimed rows of backstop.reviews.';

-- Close a review (in the same transaction as the findings it raised), and
-- record that it happened.
CREATE FUNCTION backstop.complete_review(action_id uuid, supervisor text, findings jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    r backstop.reviews%ROWTYPE;
BEGIN
    PERFORM backstop._check_name('complete_review', 'supervisor', complete_review.supervisor);
    IF complete_review.findings IS NOT NULL THEN
        PERFORM backstop._check_json('complete_review', 'findings', complete_review.findings, 65536, false);
    END IF;
    SELECT * INTO r FROM backstop.reviews x WHERE x.action_id = complete_review.action_id FOR UPDATE;
    IF NOT FOUND OR r.status <> 'running' OR r.claimed_by IS DISTINCT FROM backstop._process(complete_review.supervisor) THEN
        RETURN false;
    END IF;
    PERFORM backstop._append('reviewed', backstop.actor(), r.agent, r.tool, r.action_id,
        jsonb_build_object('reason', r.reason, 'due_at', r.due_at, 'findings', coalesce(complete_review.findings, '[]'),
                           'supervisor', r.claimed_by));
    UPDATE backstop.reviews x SET status = 'done', done_at = clock_timestamp(), lease_until = NULL,
           findings = jsonb_array_length(coalesce(complete_review.findings, '[]'))
     WHERE x.action_id = complete_review.action_id;
    RETURN true;
END
$$;
SELECT backstop._grant('complete_review', 'supervisor');
COMMENT ON FUNCTION backstop.complete_review IS 'Completes a claimed review, raising its findings (a JSON array). Callers: supervisor. Returns whether the review was still held by this supervisor.';

-- Add decision counts to an agent's bucket: add_rollups' step, not granted
-- (a login that could call it would write any counts it liked, for any
-- agent, into the distributions the room and drift read).
CREATE FUNCTION backstop._add_rollup(agent text, bucket timestamptz, counts jsonb)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
    INSERT INTO backstop.rollups AS r (agent, bucket, counts) VALUES (agent, bucket, counts)
    ON CONFLICT (agent, bucket) DO UPDATE
       SET counts = (SELECT jsonb_object_agg(k, v) FROM (
                       SELECT k, sum(v)::bigint AS v FROM (
                           SELECT key AS k, value::bigint AS v FROM jsonb_each_text(r.counts)
                           UNION ALL
                           SELECT key, value::bigint FROM jsonb_each_text(excluded.counts)) u
                       GROUP BY k) s)
$$;
COMMENT ON FUNCTION backstop._add_rollup IS 'Adds decision counts to an agent''s rollup bucket (for drift). Internal: add_rollups only, which counts rows of the log. Returns nothing.';

-- Baseline and recent counts per agent and key, for a drift pass.
CREATE FUNCTION backstop.drift_counts(baseline_start timestamptz, recent_start timestamptz)
RETURNS TABLE (agent text, recent boolean, key text, n bigint)
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
    SELECT r.agent, r.bucket >= recent_start, k.key, sum(k.value::bigint)
      FROM backstop.rollups r, jsonb_each_text(r.counts) k
     WHERE r.bucket >= baseline_start
     GROUP BY 1, 2, 3
$$;
SELECT backstop._grant('drift_counts', 'viewer');
COMMENT ON FUNCTION backstop.drift_counts IS 'Decision counts per agent and key in the baseline window and the recent window, for drift. Callers: viewer. Returns (agent, recent, key, n).';

-- Signals for an agent in the spike window and in the baseline before it.
CREATE FUNCTION backstop.signal_counts(agent text, window_start timestamptz, baseline_start timestamptz)
RETURNS TABLE (recent bigint, baseline bigint)
LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
    SELECT count(*) FILTER (WHERE s.at >= window_start), count(*) FILTER (WHERE s.at < window_start)
      FROM backstop.signals s
     WHERE s.agent = signal_counts.agent AND s.at >= baseline_start
$$;
SELECT backstop._grant('signal_counts', 'viewer');
COMMENT ON FUNCTION backstop.signal_counts IS 'Signals about an agent in the recent window and in the baseline window, for complaint spikes. Callers: viewer. Returns (recent, baseline).';

-- The rollup keys of one log row: one definition for the supervisor's
-- incremental rollups and for the same aggregate computed from the raw log.
CREATE FUNCTION backstop.rollup_keys(kind text, tool text, amount numeric, confidence real, detail jsonb)
RETURNS text[] LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN kind IN ('allowed', 'held', 'blocked') AND detail ? 'verdict' THEN ARRAY[
            'tool:' || tool,
            'verdict:' || (detail ->> 'verdict'),
            'amount:' || CASE WHEN amount IS NULL THEN 'none' WHEN amount < 100 THEN '0-100' WHEN amount < 1000 THEN '100-1k'
                              WHEN amount < 10000 THEN '1k-10k' ELSE '10k+' END,
            'conf:' || CASE WHEN confidence IS NULL THEN 'none' WHEN confidence < 0.5 THEN '0-0.5' WHEN confidence < 0.7 THEN '0.5-0.7'
                            WHEN confidence < 0.85 THEN '0.7-0.85' WHEN confidence < 0.95 THEN '0.85-0.95' ELSE '0.95-1' END]
        WHEN kind IN ('executed', 'failed') THEN ARRAY['outcome:' || kind]
        ELSE '{}'::text[]
    END
$$;
SELECT backstop._grant('rollup_keys', 'viewer');
COMMENT ON FUNCTION backstop.rollup_keys IS 'The rollup keys one log row counts under (tool, verdict, outcome, amount and confidence buckets). Callers: viewer. Returns text[].';

CREATE FUNCTION backstop.rollup_bucket(at timestamptz, bucket_seconds double precision)
RETURNS timestamptz LANGUAGE sql SET search_path = pg_catalog, backstop, pg_temp IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(floor(extract(epoch FROM at) / bucket_seconds) * bucket_seconds)
$$;
SELECT backstop._grant('rollup_bucket', 'viewer');
COMMENT ON FUNCTION backstop.rollup_bucket IS 'The start of the rollup bucket holding a time. Callers: viewer. Returns timestamptz.';

-- Fold log rows (by seq) into the rollups.
-- `ats` (each row's time, as the tail delivered it) lets every lookup go to
-- one partition of the log instead of all of them.
CREATE FUNCTION backstop.add_rollups(seqs bigint[], bucket_seconds double precision, ats timestamptz[] DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    g record;
    n integer := 0;
BEGIN
    -- As the policy allows (supervisor.drift.bucket: 1 s to 31 days).
    IF bucket_seconds IS NULL OR NOT bucket_seconds BETWEEN 1 AND 2678400 THEN
        PERFORM backstop._bad('add_rollups', format('bucket_seconds must be 1 to 2678400; got %s', coalesce(bucket_seconds::text, 'null')));
    END IF;
    IF ats IS NULL THEN
        -- (The slow way: every partition is asked for each seq.)
        SELECT array_agg(l.seq), array_agg(l.at) INTO seqs, ats
          FROM unnest(add_rollups.seqs) q(seq) JOIN backstop.action_log l ON l.seq = q.seq;
    ELSIF cardinality(ats) <> cardinality(seqs) THEN
        PERFORM backstop._bad('add_rollups', 'ats must give one time per seq');
    END IF;
    -- A row named twice in one call counts once.
    FOR g IN
        SELECT c.agent, c.bucket, jsonb_object_agg(c.key, c.n) AS counts
          FROM (SELECT l.agent, backstop.rollup_bucket(l.at, bucket_seconds) AS bucket, k.key, count(*) AS n
                  FROM (SELECT DISTINCT u.seq, u.at FROM unnest(seqs, ats) u(seq, at)) s
                 CROSS JOIN LATERAL (SELECT x.* FROM backstop.action_log x WHERE x.seq = s.seq AND x.at = s.at) l
                 CROSS JOIN LATERAL unnest(backstop.rollup_keys(l.kind, l.tool, l.amount, l.confidence, l.detail)) k(key)
                 WHERE l.agent IS NOT NULL
                 GROUP BY 1, 2, 3) c
         GROUP BY 1, 2
    LOOP
        PERFORM backstop._add_rollup(g.agent, g.bucket, g.counts);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
SELECT backstop._grant('add_rollups', 'supervisor');
COMMENT ON FUNCTION backstop.add_rollups IS 'Adds the log rows with the given seqs to the rollups (for drift). Callers: supervisor. Returns the number of rows counted.';

-- The same aggregate, straight from the log (for checks and benchmarks).
CREATE FUNCTION backstop.rollups_from_log(since timestamptz, until timestamptz, bucket_seconds double precision)
RETURNS TABLE (agent text, bucket timestamptz, counts jsonb)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
    SELECT c.agent, c.bucket, jsonb_object_agg(c.key, c.n)
      FROM (SELECT l.agent, backstop.rollup_bucket(l.at, bucket_seconds) AS bucket, k.key, count(*) AS n
              FROM backstop.action_log l
             CROSS JOIN LATERAL unnest(backstop.rollup_keys(l.kind, l.tool, l.amount, l.confidence, l.detail)) k(key)
             WHERE l.agent IS NOT NULL AND l.at >= since AND l.at < until
             GROUP BY 1, 2, 3) c
     GROUP BY 1, 2
$$;
SELECT backstop._grant('rollups_from_log', 'supervisor');
COMMENT ON FUNCTION backstop.rollups_from_log IS 'Rollups recomputed from the raw log for a time range, to check the stored ones. Callers: supervisor. Returns (agent, bucket, counts).';

-- Supervisors write their shared cursor directly (in the transaction that
-- holds it FOR UPDATE). What they write is checked here: the name is the
-- session's, never the row's, and the cursor must be one the tail can read,
-- else every reader of it (metrics(), the other supervisors) would fail.
CREATE FUNCTION backstop.tg_supervisor_cursor() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    NEW.updated_by := backstop.actor();
    NEW.updated_at := now();
    BEGIN
        IF jsonb_typeof(NEW.cursor) IS DISTINCT FROM 'object'
           OR jsonb_typeof(NEW.cursor -> 'after') IS DISTINCT FROM 'string'
           OR jsonb_typeof(NEW.cursor -> 'after_txid') IS DISTINCT FROM 'string'
           -- (PostgreSQL 15's xid8 input takes any text, 'x' as 0.)
           OR NEW.cursor ->> 'after_txid' !~ '^[0-9]{1,20}$'
           OR jsonb_typeof(NEW.cursor -> 'after_seq') IS DISTINCT FROM 'number'
           OR jsonb_typeof(coalesce(NEW.cursor -> 'upto', 'null')) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION USING ERRCODE = '22023';
        END IF;
        PERFORM (NEW.cursor ->> 'after')::pg_snapshot, (NEW.cursor ->> 'upto')::pg_snapshot,
                (NEW.cursor ->> 'after_txid')::xid8, (NEW.cursor ->> 'after_seq')::bigint;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('supervisor_cursor: not a tail cursor (after, upto, after_txid, after_seq): %s', left(NEW.cursor::text, 200));
    END;
    RETURN NEW;
END
$$;
CREATE TRIGGER supervisor_cursor_checked BEFORE INSERT OR UPDATE ON backstop.supervisor_cursor
    FOR EACH ROW EXECUTE FUNCTION backstop.tg_supervisor_cursor();

-- One drift pass at a time across supervisors: true when this transaction
-- now holds the pass (until it ends), false when another does. A row no duty
-- can lock: an advisory lock any agent could have held, and stopped drift
-- detection for the fleet.
CREATE FUNCTION backstop.claim_drift_pass() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
BEGIN
    PERFORM FROM backstop.job_locks j WHERE j.name = 'drift' FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;
SELECT backstop._grant('claim_drift_pass', 'supervisor');
COMMENT ON FUNCTION backstop.claim_drift_pass IS 'Claims the drift pass for the calling transaction (one supervisor at a time). Callers: supervisor. Returns whether it was claimed.';

-- Drills: the tabletop exercise's score, kept in the log so runs compare.
CREATE FUNCTION backstop.record_drill(report jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    v_seq bigint;
BEGIN
    PERFORM backstop._check_json('record_drill', 'report', report, 65536, true);
    IF jsonb_typeof(report -> 'drill_id') IS DISTINCT FROM 'string' THEN
        PERFORM backstop._bad('record_drill', 'report.drill_id is required');
    END IF;
    -- The log's agent column: a name like any other, never free text (a
    -- newline in it forged a second line in `backstop log`).
    IF report ? 'agent' AND jsonb_typeof(report -> 'agent') <> 'null' THEN
        IF jsonb_typeof(report -> 'agent') <> 'string' THEN
            PERFORM backstop._bad('record_drill', 'report.agent must be a name');
        END IF;
        PERFORM backstop._check_name('record_drill', 'report.agent', report ->> 'agent');
    END IF;
    SELECT l.seq INTO v_seq FROM backstop._append('drill', backstop.actor(), report ->> 'agent', NULL, NULL, report) l;
    RETURN v_seq;
END
$$;
SELECT backstop._grant('record_drill', 'operator');
COMMENT ON FUNCTION backstop.record_drill IS 'Records an incident drill''s report in the log. Callers: operator. Returns the log seq.';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.supervisor_cursor IS 'Where the supervisors are in the log. Readers: every duty but agent; written by supervisors.';
COMMENT ON TABLE backstop.reviews IS 'Executed actions due for a delayed review. Readers: every duty but agent.';
COMMENT ON TABLE backstop.rollups IS 'Decision counts per agent and time bucket, for drift. Readers: every duty but agent.';
