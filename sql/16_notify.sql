-- Meeting operators where they live: notifications through an outbox, and
-- the figures Prometheus scrapes.

-- ======================================================================
-- Notifications
-- ======================================================================

-- The order of finding severities, for "at or above" routes.
CREATE FUNCTION backstop._severity_rank(s text) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE s WHEN 'info' THEN 1 WHEN 'low' THEN 2 WHEN 'medium' THEN 3 WHEN 'high' THEN 4
                  WHEN 'critical' THEN 5 END
$$;

-- Queues the notifications a log row raises, one per target whose route
-- takes it, under the policy in force. Fired only for the rare kinds (the
-- trigger's WHEN clause), so an ordinary append pays nothing. Whatever goes
-- wrong here is a warning, never the caller's failure: a pause or a hold
-- must not be refused because a webhook is misconfigured.
CREATE FUNCTION backstop.tg_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    v_cfg jsonb;
    v_route text;
    v_event text;
    v_payload jsonb;
    v_amount numeric;
    v_severity text;
    t jsonb;
    v_take boolean;
BEGIN
    SELECT p.doc -> 'notify' INTO v_cfg
      FROM backstop.active a JOIN backstop.policy_versions p ON p.version = a.policy_version;
    IF v_cfg IS NULL OR jsonb_typeof(v_cfg -> 'targets') IS DISTINCT FROM 'array'
       OR jsonb_array_length(v_cfg -> 'targets') = 0 THEN
        RETURN NULL;
    END IF;
    BEGIN
        CASE NEW.kind
        WHEN 'held' THEN
            v_route := 'hold';
            v_event := 'hold:' || NEW.action_id;
            v_amount := NEW.amount;
            v_payload := jsonb_strip_nulls(jsonb_build_object(
                'action_id', NEW.action_id, 'agent', NEW.agent, 'tool', NEW.tool, 'amount', NEW.amount,
                'confidence', NEW.confidence, 'reasoning', left(NEW.reasoning, 2000),
                'correlation_id', NEW.correlation_id,
                'rule', NEW.detail ->> 'rule', 'reason', NEW.detail ->> 'reason',
                'class', NEW.detail ->> 'class', 'cost_to_reverse', NEW.detail -> 'cost_to_reverse',
                'approvals_needed', NEW.detail -> 'approvals_needed',
                'expires_at', NEW.detail ->> 'expires_at', 'expiry_effect', NEW.detail ->> 'expiry_effect',
                'policy_version', NEW.policy_version));
        WHEN 'finding' THEN
            -- A repeat merged into an open finding is the same event.
            IF (NEW.detail ->> 'merged')::boolean THEN
                RETURN NULL;
            END IF;
            v_route := 'finding';
            v_event := 'finding:' || (NEW.detail ->> 'finding_id');
            v_severity := NEW.detail ->> 'severity';
            v_payload := jsonb_strip_nulls(jsonb_build_object(
                'finding_id', NEW.detail ->> 'finding_id', 'kind', NEW.detail ->> 'kind', 'severity', v_severity,
                'agent', NEW.agent, 'action_id', NEW.action_id, 'rule', NEW.detail -> 'evidence' ->> 'rule',
                'remediation', NEW.detail -> 'evidence' ->> 'remediation'));
        WHEN 'paused', 'resumed' THEN
            v_route := CASE NEW.kind WHEN 'paused' THEN 'pause' ELSE 'resume' END;
            v_event := NEW.kind || ':' || NEW.seq;
            v_payload := jsonb_build_object('scope', NEW.detail ->> 'scope', 'target', NEW.detail ->> 'target',
                                            'reason', NEW.detail ->> 'reason', 'by', NEW.actor);
        WHEN 'compensation_failed' THEN
            v_route := 'compensation_failed';
            v_event := 'compensation_failed:' || NEW.action_id;
            v_payload := jsonb_strip_nulls(jsonb_build_object(
                'action_id', NEW.action_id, 'agent', NEW.agent, 'tool', NEW.tool,
                'status', NEW.detail ->> 'status', 'attempts', NEW.detail -> 'attempt',
                'inverse_tool', NEW.detail ->> 'inverse_tool', 'worker', NEW.detail ->> 'worker'));
        WHEN 'drill' THEN
            v_route := 'drill';
            v_event := 'drill:' || coalesce(NEW.detail ->> 'drill_id', NEW.seq::text);
            v_payload := jsonb_strip_nulls(jsonb_build_object(
                'drill_id', NEW.detail ->> 'drill_id', 'agent', NEW.agent, 'by', NEW.actor,
                'attempted', NEW.detail -> 'attempted', 'blocked', NEW.detail -> 'blocked',
                'score', NEW.detail -> 'score'));
        ELSE
            RETURN NULL;
        END CASE;
        v_payload := v_payload || jsonb_build_object('seq', NEW.seq, 'at', NEW.at);
        FOR t IN SELECT x FROM jsonb_array_elements(v_cfg -> 'targets') x LOOP
            v_take := CASE v_route
                WHEN 'hold' THEN t ? 'holds_above' AND coalesce(v_amount, 0) >= (t ->> 'holds_above')::numeric
                WHEN 'finding' THEN t ? 'findings' AND backstop._severity_rank(v_severity) >= backstop._severity_rank(t ->> 'findings')
                WHEN 'pause' THEN coalesce((t ->> 'pauses')::boolean, false)
                WHEN 'resume' THEN coalesce((t ->> 'pauses')::boolean, false)
                WHEN 'compensation_failed' THEN coalesce((t ->> 'compensation_failures')::boolean, false)
                WHEN 'drill' THEN coalesce((t ->> 'drills')::boolean, false)
                ELSE false END;
            IF coalesce(v_take, false) THEN
                INSERT INTO backstop.notify_outbox (event, target, kind, format, url_env, seq, payload, max_attempts,
                                                    backoff_seconds, next_attempt_at, created_at)
                VALUES (v_event, t ->> 'name', v_route, t ->> 'format', t ->> 'url_env', NEW.seq, v_payload,
                        coalesce((v_cfg ->> 'max_attempts')::integer, 8),
                        coalesce((v_cfg ->> 'backoff_seconds')::double precision, 2),
                        clock_timestamp(), clock_timestamp())
                ON CONFLICT (event, target) DO NOTHING;
            END IF;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'backstop: no notification queued for log row %: %', NEW.seq, SQLERRM;
    END;
    RETURN NULL;
END
$$;
CREATE TRIGGER action_log_notify AFTER INSERT ON backstop.action_log
    FOR EACH ROW WHEN (NEW.kind IN ('held', 'finding', 'paused', 'resumed', 'compensation_failed', 'drill'))
    EXECUTE FUNCTION backstop.tg_notify();

CREATE FUNCTION backstop.claim_notifications(supervisor text, max integer DEFAULT 10,
                                             lease interval DEFAULT interval '30 seconds')
RETURNS TABLE (event text, target text, kind text, format text, url_env text, payload jsonb, attempt integer,
               max_attempts integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_name text := claim_notifications.supervisor;
    v_until timestamptz;
BEGIN
    PERFORM backstop._check_name('claim_notifications', 'supervisor', p_name);
    p_name := backstop._process(p_name);
    IF claim_notifications.max IS NULL OR claim_notifications.max < 1 OR claim_notifications.max > 1000 THEN
        PERFORM backstop._bad('claim_notifications', format('max must be between 1 and 1000; got %s', coalesce(claim_notifications.max::text, 'null')));
    END IF;
    IF claim_notifications.lease IS NULL OR claim_notifications.lease < interval '1 second' OR claim_notifications.lease > interval '1 hour' THEN
        PERFORM backstop._bad('claim_notifications', format('lease must be between 1 second and 1 hour; got %s', coalesce(claim_notifications.lease::text, 'null')));
    END IF;
    v_until := clock_timestamp() + claim_notifications.lease;
    RETURN QUERY
    WITH ready AS (
        SELECT o.event, o.target FROM backstop.notify_outbox o
         WHERE o.status IN ('pending', 'sending') AND o.next_attempt_at <= clock_timestamp()
         ORDER BY o.next_attempt_at
         LIMIT claim_notifications.max
           FOR UPDATE SKIP LOCKED
    )
    UPDATE backstop.notify_outbox o
       SET status = 'sending', claimed_by = p_name, attempts = o.attempts + 1,
           lease_until = v_until, next_attempt_at = v_until
      FROM ready
     WHERE o.event = ready.event AND o.target = ready.target
    RETURNING o.event, o.target, o.kind, o.format, o.url_env, o.payload, o.attempts, o.max_attempts;
END
$$;
SELECT backstop._grant('claim_notifications', 'supervisor');
COMMENT ON FUNCTION backstop.claim_notifications IS 'Claims up to max notifications due for delivery, with a lease (FOR UPDATE SKIP LOCKED); a lease that ends makes the notification due again. Callers: supervisor. Returns (event, target, kind, format, url_env, payload, attempt, max_attempts).';

-- detail is what the delivery saw (an HTTP status, an error without the
-- URL): it goes to the log, so the caller keeps secrets out of it.
CREATE FUNCTION backstop.finish_notification(event text, target text, supervisor text, ok boolean, detail jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    v_kind text;
    p_event text := finish_notification.event;
    p_target text := finish_notification.target;
    p_name text := finish_notification.supervisor;
    p_detail jsonb := coalesce(finish_notification.detail, '{}');
    o backstop.notify_outbox%ROWTYPE;
    v_status text;
    v_seq bigint;
    v_at timestamptz;
BEGIN
    PERFORM backstop._check_name('finish_notification', 'supervisor', p_name);
    PERFORM backstop._check_json('finish_notification', 'detail', p_detail, 65536, false);
    p_name := backstop._process(p_name);
    SELECT * INTO o FROM backstop.notify_outbox x WHERE x.event = p_event AND x.target = p_target FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM backstop._bad('finish_notification', format('no notification %s for target %s', p_event, p_target), 'P0002');
    END IF;
    IF o.status <> 'sending' OR o.claimed_by IS DISTINCT FROM p_name THEN
        PERFORM backstop._bad('finish_notification', format('%s does not hold notification %s for %s (it is %s%s)',
            p_name, p_event, p_target, o.status, coalesce(', held by ' || o.claimed_by, '')), '55000');
    END IF;
    IF ok THEN
        v_status := 'delivered';
    ELSIF o.attempts < o.max_attempts THEN
        v_status := 'pending';
    ELSE
        v_status := 'failed';
    END IF;
    IF v_status = 'pending' THEN
        -- A retry is not an event: only deliveries and final failures are logged.
        UPDATE backstop.notify_outbox x
           SET status = 'pending', lease_until = NULL, last_error = left(p_detail::text, 2000),
               next_attempt_at = clock_timestamp()
                   + make_interval(secs => least(300, o.backoff_seconds * power(2, o.attempts - 1)))
         WHERE x.event = p_event AND x.target = p_target;
        RETURN v_status;
    END IF;
    v_kind := CASE WHEN ok THEN 'notification_sent' ELSE 'notification_failed' END;
    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append(
        v_kind, backstop.actor(),
        o.payload ->> 'agent', o.payload ->> 'tool', (o.payload ->> 'action_id')::uuid,
        jsonb_build_object('event', o.event, 'target', o.target, 'kind', o.kind, 'format', o.format,
                           'attempts', o.attempts, 'event_seq', o.seq, 'by', p_name, 'delivery', p_detail)) l;
    UPDATE backstop.notify_outbox x
       SET status = v_status, lease_until = NULL, done_at = v_at, done_seq = v_seq,
           last_error = CASE WHEN ok THEN x.last_error ELSE left(p_detail::text, 2000) END
     WHERE x.event = p_event AND x.target = p_target;
    RETURN v_status;
END
$$;
SELECT backstop._grant('finish_notification', 'supervisor');
COMMENT ON FUNCTION backstop.finish_notification IS 'Reports one delivery attempt of a claimed notification: delivered (logged as notification_sent), retried later with exponential backoff, or after max_attempts failed for good (logged as notification_failed). Callers: supervisor (the one holding the claim). Returns the status: delivered, pending or failed.';


-- ======================================================================
-- Metrics
-- ======================================================================

-- The age of the oldest log row a reader at `cursor` (a tail cursor as the
-- supervisor keeps it) has not read yet, as that row's time; NULL when it
-- has read everything committed. Approximate by design: the first rows in
-- (txid, seq) order, which are the oldest but for a transaction that ran long.
CREATE FUNCTION backstop._oldest_unread(after pg_snapshot, after_txid xid8, after_seq bigint) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, backstop, pg_temp AS $$
    SELECT min(t.at) FROM backstop.tail(after, pg_current_snapshot(), after_txid, after_seq, 100) t
$$;

-- Every figure of the fleet, from the database's state now: counters are
-- counts of what the log's projections hold, so any process reports the same
-- numbers and a restart loses none. Times are reported as timestamps
-- (seconds since the epoch) rather than ages, so two scrapes of the same
-- state agree; `time() - x` is the age. Labels are agents, tools (registered
-- in some registry version; any other name reads "(unregistered)"), verdicts,
-- kinds, severities, scopes and statuses: never an action id.
CREATE FUNCTION backstop.metrics()
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, backstop, pg_temp AS $$
DECLARE
    s backstop.seals%ROWTYPE;
    c jsonb;
    v_t timestamptz;
BEGIN
    RETURN QUERY
    SELECT 'proposals', jsonb_build_object('agent', a.agent, 'tool', a.tool_label, 'verdict', a.verdict), count(*)::float8
      FROM (SELECT x.agent, x.verdict,
                   CASE WHEN EXISTS (SELECT 1 FROM backstop.tools t WHERE t.name = x.tool) THEN x.tool
                        ELSE '(unregistered)' END AS tool_label
              FROM backstop.actions x) a
     GROUP BY a.agent, a.tool_label, a.verdict;

    RETURN QUERY
    SELECT m.metric, '{}'::jsonb, m.value FROM (
        SELECT 'held_actions' AS metric, count(*)::float8 AS value FROM backstop.approval_queue
        UNION ALL SELECT 'held_value', coalesce(sum(q.amount), 0)::float8 FROM backstop.approval_queue q
        UNION ALL SELECT 'held_oldest_timestamp_seconds', extract(epoch FROM min(q.held_at))::float8 FROM backstop.approval_queue q
        UNION ALL SELECT 'held_half_expiry_timestamp_seconds',
                         extract(epoch FROM min(q.held_at + (q.expires_at - q.held_at) / 2))::float8 FROM backstop.approval_queue q
        UNION ALL SELECT 'compensation_oldest_queued_timestamp_seconds', extract(epoch FROM min(x.requested_at))::float8
                    FROM backstop.compensations x WHERE x.status = 'requested'
        UNION ALL SELECT 'review_oldest_due_timestamp_seconds', extract(epoch FROM min(r.due_at))::float8
                    FROM backstop.reviews r WHERE r.status <> 'done' AND r.due_at <= now()
        UNION ALL SELECT 'reviews_pending', count(*)::float8 FROM backstop.reviews r WHERE r.status <> 'done'
        UNION ALL SELECT 'fleet_paused', count(*)::float8 FROM backstop.kill_switches k WHERE k.scope = 'fleet' AND k.paused
        UNION ALL SELECT 'policy_version', a.policy_version::float8 FROM backstop.active a
        UNION ALL SELECT 'registry_version', a.registry_version::float8 FROM backstop.active a
        UNION ALL SELECT 'contract_version', backstop.contract_version()::float8
        UNION ALL SELECT 'log_last_seq', (SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END FROM backstop.action_log_seq q)::float8
        UNION ALL SELECT 'notification_oldest_pending_timestamp_seconds', extract(epoch FROM min(o.created_at))::float8
                    FROM backstop.notify_outbox o WHERE o.status IN ('pending', 'sending')
        -- Rows that found no partition for their time (housekeeping fell
        -- behind): a retention cut cannot pass them. Counted up to 10,000,
        -- so a scrape stays cheap however many there are.
        UNION ALL SELECT 'log_default_partition_rows',
                         (SELECT count(*) FROM (SELECT 1 FROM backstop.action_log_default LIMIT 10000) d)::float8
        UNION ALL SELECT 'log_partitioned_until_timestamp_seconds', extract(epoch FROM max(p.to_at))::float8
                    FROM backstop.log_partitions p
    ) m WHERE m.value IS NOT NULL;

    -- Every combination, zeros included: a series that vanishes at zero
    -- breaks rates and alerts.
    RETURN QUERY
    SELECT 'findings_open', jsonb_build_object('kind', k.kind, 'severity', v.severity),
           (SELECT count(*) FROM backstop.findings f WHERE f.status = 'open' AND f.kind = k.kind AND f.severity = v.severity)::float8
      FROM unnest(ARRAY['policy_violation', 'low_confidence', 'sampled_divergence', 'drift', 'complaint_spike',
                        'compensation_failed']) k(kind),
           unnest(ARRAY['info', 'low', 'medium', 'high', 'critical']) v(severity);

    RETURN QUERY
    SELECT 'paused_scopes', jsonb_build_object('scope', sc.scope),
           (SELECT count(*) FROM backstop.kill_switches k WHERE k.paused AND k.scope = sc.scope)::float8
      FROM unnest(ARRAY['fleet', 'agent', 'tool']) sc(scope);

    RETURN QUERY
    SELECT 'compensations', jsonb_build_object('status', st.status),
           (SELECT count(*) FROM backstop.compensations x WHERE x.status = st.status)::float8
      FROM unnest(ARRAY['requested', 'running', 'compensated', 'failed', 'expired', 'condition_failed', 'conflict']) st(status);

    RETURN QUERY
    SELECT 'notifications', jsonb_build_object('status', st.status),
           (SELECT count(*) FROM backstop.notify_outbox o WHERE o.status = st.status)::float8
      FROM unnest(ARRAY['pending', 'sending', 'delivered', 'failed']) st(status);

    -- Seal lag: the oldest row committed after what the seals cover.
    SELECT * INTO s FROM backstop.seals x ORDER BY x.seal_no DESC LIMIT 1;
    IF NOT FOUND THEN
        v_t := backstop._oldest_unread('1:1:', '0', 0);
    ELSIF s.complete THEN
        v_t := backstop._oldest_unread(s.upto_snap, '0', 0);
    ELSE
        v_t := backstop._oldest_unread(s.after_snap, s.to_txid, s.to_seq);
    END IF;
    IF v_t IS NOT NULL THEN
        metric := 'oldest_unsealed_timestamp_seconds'; labels := '{}'; value := extract(epoch FROM v_t);
        RETURN NEXT;
    END IF;

    -- Tail lag: the oldest row the supervisors have not followed yet.
    SELECT sc.cursor INTO c FROM backstop.supervisor_cursor sc WHERE sc.name = 'main';
    v_t := backstop._oldest_unread(coalesce(c ->> 'after', '1:1:')::pg_snapshot,
                                   coalesce(c ->> 'after_txid', '0')::xid8, coalesce((c ->> 'after_seq')::bigint, 0));
    IF v_t IS NOT NULL THEN
        metric := 'oldest_unfollowed_timestamp_seconds'; labels := '{}'; value := extract(epoch FROM v_t);
        RETURN NEXT;
    END IF;
END
$$;
SELECT backstop._grant('metrics', 'viewer', 'supervisor', 'worker');
COMMENT ON FUNCTION backstop.metrics IS 'The fleet''s figures for Prometheus, from the database''s state (the same from any process): proposals by agent, tool and verdict; held actions; open findings; pauses; compensations; notifications; rows in the log''s default partition and how far its partitions reach; and the times of the oldest held, queued, due, unsealed and unfollowed rows. Callers: viewer, supervisor, worker. Returns (metric, labels, value).';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.notify_outbox IS 'Notifications queued for webhook targets by the events that raise them, and their delivery state. Readers: every duty but agent; written by the contract and the supervisors.';
