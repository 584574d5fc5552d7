-- Retention. `backstop archive` exports whole seals to a directory, verifies
-- the export, and then cuts the log at a partition boundary: prepare_cut()
-- checks in the database that every row before the cut is sealed in the
-- archived range and that the projections agree with the log, and carries
-- forward what is still needed; drop_archived_partitions() then drops the
-- partitions under a short exclusive lock.
--
-- What current state still needs from the dropped rows is carried forward
-- first: each such row is appended again as a `carried` event holding the
-- original row, and kept as that row in `carried_log`. These are the
-- registry and policy loads, retention records, the latest change of each
-- kill switch, the first rejection of each config file, and every event of
-- an action still allowed or held, of a compensation not finished, and of a
-- finding not resolved. The rebuild (13_rebuild.sql) reads the live log plus the
-- carried rows (`rebuild_log`), so it stays exact for all of these.
-- Projection rows whose every event was archived (settled actions, their
-- approvals, finished compensations, resolved findings, old signals) are
-- checked against the archive when it was made; `projection_diffs()` leaves
-- them out afterwards, and `verify` says how many rows were archived.
--
-- Seals are kept: the chain still covers the dropped rows, and `verify`
-- accepts a sealed row missing from the log only when the retention records
-- account for exactly that many rows and no live row is dated before the cut.

-- One cut at a time. A failed cut's backend sends its error before it ends
-- its transaction and lets go of this lock, so a cut tried again at once
-- (backstop archive after a refusal, or a script) waits a moment for it
-- instead of being told another cut is running; a cut that is running
-- (prepare_cut can take minutes on a big log) is still refused after 2 s.
-- The lock is a row no duty can lock (an advisory lock was any login's to
-- hold), taken in a subtransaction and kept by the caller's.
CREATE FUNCTION backstop._cut_lock(fn text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp SET lock_timeout = '2s' AS $$
BEGIN
    PERFORM FROM backstop.job_locks j WHERE j.name = 'cut' FOR UPDATE;
EXCEPTION WHEN lock_not_available THEN
    PERFORM backstop._bad(fn, 'another cut of the log is running', '55P03');
END
$$;

-- What dropping the partitions older than `before` would take: the cut (the
-- newest partition end at or before it), the partitions, their rows, the
-- seals an archive must hold (from the one after the last archived seal to
-- the newest holding a row from before the cut), rows not sealed yet, and
-- rows from before the cut sitting in the default partition.
CREATE FUNCTION backstop.retention_plan(before timestamptz)
RETURNS TABLE (cut timestamptz, partitions text[], rows_before bigint, first_seal bigint, last_seal bigint,
               unsealed bigint, in_default bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp STABLE AS $$
#variable_conflict use_column
DECLARE
    v_maxtx xid8;
    v_upto pg_snapshot;
BEGIN
    IF retention_plan.before IS NULL OR NOT isfinite(retention_plan.before) THEN
        -- Raised here, not through _bad: this runs as its caller, a viewer,
        -- who may not call internal functions (the refusal read "permission
        -- denied for function _bad").
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'retention_plan: before must be a finite time';
    END IF;
    SELECT max(p.to_at), array_agg(p.name ORDER BY p.from_at) INTO cut, partitions
      FROM backstop.log_partitions p WHERE p.to_at <= least(retention_plan.before, clock_timestamp());
    first_seal := coalesce((SELECT max(r.last_seal) FROM backstop.log_retention r), 0) + 1;
    IF cut IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT count(*), max(l.txid) INTO rows_before, v_maxtx FROM backstop.action_log l WHERE l.at < cut;
    SELECT count(*) INTO in_default FROM backstop.action_log_default d WHERE d.at < cut;
    -- Every row visible in the newest complete seal's snapshot is sealed.
    SELECT s.upto_snap INTO v_upto FROM backstop.seals s WHERE s.complete ORDER BY s.seal_no DESC LIMIT 1;
    SELECT count(*) INTO unsealed FROM backstop.action_log l
     WHERE l.at < cut AND (v_upto IS NULL OR NOT pg_visible_in_snapshot(l.txid, v_upto));
    -- The newest seal holding a row from before the cut. A seal's window
    -- holds no transaction below its starting snapshot's xmin, so seals that
    -- start above every such row's transaction are skipped unread.
    SELECT max(s.seal_no) INTO last_seal FROM backstop.seals s
     WHERE s.seal_no >= first_seal AND pg_snapshot_xmin(s.after_snap) <= v_maxtx
       AND EXISTS (SELECT 1 FROM unnest(s.seqs) q(seq) JOIN backstop.action_log l ON l.seq = q.seq AND l.at < cut);
    last_seal := coalesce(last_seal, first_seal - 1);
    RETURN NEXT;
END
$$;
SELECT backstop._grant('retention_plan', 'viewer');
COMMENT ON FUNCTION backstop.retention_plan IS 'What archiving the log before a time would take: the cut, partitions, rows, the seals an archive must hold, unsealed rows and rows in the default partition. Callers: viewer. Returns one row.';

-- A cut is made in two transactions, so that the log is locked only for
-- the drop itself.
--
-- prepare_cut (runs beside the agents): with the partitions ending by `cut`
-- locked against writes, check that every row in them is sealed within
-- seals first_seal..last_seal (the archive's range) or an earlier archive,
-- that seal last_seal has the archive's head hash, that no row from before
-- the cut is in the default partition, and that every projection equals
-- its rebuild; then carry forward what current state still needs. Rows
-- from before the cut cannot appear afterwards: `at` is the server's clock
-- at insert, and only the owner can write the log directly.
CREATE FUNCTION backstop.prepare_cut(cut timestamptz, first_seal bigint, last_seal bigint, head_hash bytea)
RETURNS TABLE (rows_before bigint, carried integer)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp
-- Carried rows keep their real confidence exactly through JSON.
SET extra_float_digits = 3
AS $$
#variable_conflict use_column
DECLARE
    fn text := 'prepare_cut';
    p_cut timestamptz := prepare_cut.cut;
    v_parts text[];
    v_part text;
    pl record;
    v_prev timestamptz;
    v_hash bytea;
    v_actor text := backstop.actor();
    r record;
    e backstop.action_log;
    n integer := 0;
BEGIN
    IF NOT backstop._trusted() THEN
        PERFORM backstop._bad(fn, 'only the schema''s owner may cut the log (through backstop archive)', '42501');
    END IF;
    IF p_cut IS NULL OR NOT isfinite(p_cut) OR p_cut > clock_timestamp() THEN
        PERFORM backstop._bad(fn, format('cut must be a past time; got %s', coalesce(p_cut::text, 'null')));
    END IF;
    IF prepare_cut.first_seal IS NULL OR prepare_cut.last_seal IS NULL OR prepare_cut.first_seal < 1
       OR prepare_cut.last_seal < prepare_cut.first_seal - 1 THEN
        PERFORM backstop._bad(fn, 'first_seal and last_seal must give the archived range of seals');
    END IF;
    IF prepare_cut.head_hash IS NULL OR length(prepare_cut.head_hash) <> 32 THEN
        PERFORM backstop._bad(fn, 'head_hash must be the 32-byte hash of the archive''s last seal');
    END IF;
    PERFORM backstop._cut_lock(fn);
    SELECT max(x.cut) INTO v_prev FROM backstop.log_retention x;
    IF v_prev IS NOT NULL AND p_cut <= v_prev THEN
        PERFORM backstop._bad(fn, format('the log was already cut at %s', v_prev), '55000');
    END IF;
    SELECT array_agg(p.name ORDER BY p.from_at) INTO v_parts FROM backstop.log_partitions p WHERE p.to_at <= p_cut;
    IF v_parts IS NULL OR NOT EXISTS (SELECT 1 FROM backstop.log_partitions p WHERE p.to_at = p_cut) THEN
        PERFORM backstop._bad(fn, format('%s is not the end of a partition of the log', p_cut));
    END IF;
    -- A writer still in flight there finishes first (its row is then found unsealed).
    FOREACH v_part IN ARRAY v_parts LOOP
        EXECUTE format('LOCK TABLE backstop.%I IN SHARE MODE', v_part);
    END LOOP;
    SELECT * INTO pl FROM backstop.retention_plan(p_cut);
    IF pl.in_default > 0 THEN
        PERFORM backstop._bad(fn, format('%s row(s) from before the cut are in the default partition; nothing is dropped', pl.in_default), '55000');
    END IF;
    IF pl.unsealed > 0 THEN
        PERFORM backstop._bad(fn, format('%s row(s) from before the cut are not sealed yet: seal and archive again', pl.unsealed), '55000');
    END IF;
    IF pl.first_seal <> prepare_cut.first_seal OR pl.last_seal <> prepare_cut.last_seal THEN
        PERFORM backstop._bad(fn, format('the rows before the cut need seals %s to %s archived, but the archive holds %s to %s: export again',
                                         pl.first_seal, pl.last_seal, prepare_cut.first_seal, prepare_cut.last_seal), '55000');
    END IF;
    v_hash := backstop._chain_hash_at(prepare_cut.last_seal);
    IF v_hash IS DISTINCT FROM prepare_cut.head_hash THEN
        PERFORM backstop._bad(fn, format('seal %s does not have the archive''s head hash: the archive and the live chain differ',
                                         prepare_cut.last_seal), '55000');
    END IF;
    IF EXISTS (SELECT 1 FROM backstop.projection_diffs(p_cut)) THEN
        PERFORM backstop._bad(fn, 'the projections disagree with the log (see backstop verify); nothing is dropped until they agree', '55000');
    END IF;

    -- Carry forward what current state still needs (see the top of this
    -- file), unless a carrier after the cut holds it already (a prepare
    -- tried before). Carrying more than needed is harmless: a need never
    -- arises later from a row before the cut.
    FOR r IN
        SELECT z.e FROM backstop.action_log l
         CROSS JOIN LATERAL (SELECT CASE WHEN l.kind = 'carried'
                                         THEN jsonb_populate_record(NULL::backstop.action_log, l.detail -> 'row')
                                         ELSE l END AS e) z
         WHERE l.at < p_cut
           -- The kinds that can be needed (a carrier's row is one of them):
           -- the bulk of the log is ruled out before any row is rebuilt.
           AND l.kind IN ('carried', 'registry_loaded', 'policy_loaded', 'log_archived', 'paused', 'resumed',
                          'policy_rejected', 'allowed', 'held', 'blocked', 'approved', 'rejected', 'expired',
                          'compensation_requested', 'compensation_started', 'compensation_retry', 'compensated',
                          'compensation_failed', 'finding', 'finding_acknowledged', 'finding_resolved')
           AND ((z.e).kind IN ('registry_loaded', 'policy_loaded', 'log_archived')
             OR ((z.e).kind IN ('paused', 'resumed')
                 AND EXISTS (SELECT 1 FROM backstop.kill_switches k WHERE k.changed_seq = (z.e).seq))
             OR ((z.e).kind = 'policy_rejected'
                 AND EXISTS (SELECT 1 FROM backstop.config_rejections c WHERE c.seq = (z.e).seq))
             OR ((z.e).kind IN ('allowed', 'held', 'blocked', 'approved', 'rejected', 'expired')
                 AND EXISTS (SELECT 1 FROM backstop.actions a WHERE a.action_id = (z.e).action_id AND a.status IN ('allowed', 'held')))
             OR ((z.e).kind IN ('compensation_requested', 'compensation_started', 'compensation_retry', 'compensated', 'compensation_failed')
                 AND EXISTS (SELECT 1 FROM backstop.compensations c WHERE c.action_id = (z.e).action_id AND c.finished_seq IS NULL))
             OR ((z.e).kind IN ('finding', 'finding_acknowledged', 'finding_resolved')
                 AND EXISTS (SELECT 1 FROM backstop.findings f
                              WHERE f.finding_id = ((z.e).detail ->> 'finding_id')::uuid AND f.status <> 'resolved')))
           AND NOT EXISTS (SELECT 1 FROM backstop.action_log k
                            WHERE k.kind = 'carried' AND (k.detail -> 'row' ->> 'seq')::bigint = (z.e).seq AND k.at >= p_cut)
         ORDER BY (z.e).seq
    LOOP
        e := r.e;
        PERFORM backstop._append('carried', v_actor, e.agent, e.tool, e.action_id,
            jsonb_build_object('row', to_jsonb(e) || jsonb_build_object('confidence', e.confidence::text),
                               'digest', encode(backstop.row_digest(e), 'hex'), 'cut', p_cut),
            e.correlation_id);
        INSERT INTO backstop.carried_log SELECT e.* ON CONFLICT ON CONSTRAINT carried_log_pkey DO NOTHING;
        n := n + 1;
    END LOOP;
    INSERT INTO backstop.cut_prepared (cut, rows, first_seal, last_seal, carried, prepared_by, prepared_at)
    VALUES (p_cut, pl.rows_before, prepare_cut.first_seal, prepare_cut.last_seal, n, v_actor, clock_timestamp())
    ON CONFLICT ON CONSTRAINT cut_prepared_pkey DO UPDATE
       SET rows = EXCLUDED.rows, first_seal = EXCLUDED.first_seal, last_seal = EXCLUDED.last_seal,
           carried = backstop.cut_prepared.carried + EXCLUDED.carried, prepared_by = EXCLUDED.prepared_by,
           prepared_at = EXCLUDED.prepared_at;
    rows_before := pl.rows_before;
    carried := n;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION backstop.prepare_cut IS 'First step of a retention cut: checks every row before the cut is sealed in the archive''s seals and the projections agree, then carries forward what current state still needs. Callers: the owner only (`backstop archive`). Returns (rows_before, carried).';

-- drop_archived_partitions: the second transaction. It takes the log's
-- exclusive lock first (waiting at most 250 ms for transactions in flight,
-- while new writers queue behind it; backstop archive tries again), so it
-- never holds a weaker lock on the
-- log it would have to upgrade, and does only short work under it: record
-- the drop in the log, drop the partitions, forget the carried rows no
-- carrier holds any more.
CREATE FUNCTION backstop.drop_archived_partitions(cut timestamptz, first_seal bigint, last_seal bigint,
    head_hash bytea, manifest_sha256 text, location text, reason text)
RETURNS TABLE (partitions text[], rows_dropped bigint, carried integer, seq bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, backstop, pg_temp AS $$
#variable_conflict use_column
DECLARE
    fn text := 'drop_archived_partitions';
    p_cut timestamptz := drop_archived_partitions.cut;
    v_parts text[];
    v_part text;
    prep backstop.cut_prepared%ROWTYPE;
    v_hash bytea;
    v_actor text := backstop.actor();
    v_seq bigint;
    v_at timestamptz;
BEGIN
    IF NOT backstop._trusted() THEN
        PERFORM backstop._bad(fn, 'only the schema''s owner may drop log partitions (through backstop archive)', '42501');
    END IF;
    IF p_cut IS NULL OR NOT isfinite(p_cut) THEN
        PERFORM backstop._bad(fn, format('cut must be a past time; got %s', coalesce(p_cut::text, 'null')));
    END IF;
    IF drop_archived_partitions.manifest_sha256 IS NULL OR drop_archived_partitions.manifest_sha256 !~ '^[0-9a-f]{64}$' THEN
        PERFORM backstop._bad(fn, 'manifest_sha256 must be 64 lowercase hex digits');
    END IF;
    PERFORM backstop._check_reason(fn, 'location', drop_archived_partitions.location);
    PERFORM backstop._check_reason(fn, 'reason', drop_archived_partitions.reason);
    PERFORM backstop._cut_lock(fn);
    SELECT * INTO prep FROM backstop.cut_prepared x WHERE x.cut = p_cut;
    IF NOT FOUND OR prep.first_seal IS DISTINCT FROM drop_archived_partitions.first_seal
       OR prep.last_seal IS DISTINCT FROM drop_archived_partitions.last_seal THEN
        PERFORM backstop._bad(fn, 'this cut was not prepared for this archive (prepare_cut first)', '55000');
    END IF;
    v_hash := backstop._chain_hash_at(prep.last_seal);
    IF v_hash IS DISTINCT FROM drop_archived_partitions.head_hash THEN
        PERFORM backstop._bad(fn, format('seal %s does not have the archive''s head hash: the archive and the live chain differ',
                                         prep.last_seal), '55000');
    END IF;
    PERFORM set_config('lock_timeout', '250ms', true);
    LOCK TABLE backstop.action_log IN ACCESS EXCLUSIVE MODE;
    SELECT array_agg(p.name ORDER BY p.from_at) INTO v_parts FROM backstop.log_partitions p WHERE p.to_at <= p_cut;

    SELECT l.seq, l.at INTO v_seq, v_at FROM backstop._append('log_archived', v_actor, NULL, NULL, NULL,
        jsonb_build_object('cut', p_cut, 'partitions', to_jsonb(v_parts), 'rows', prep.rows,
                           'first_seal', prep.first_seal, 'last_seal', prep.last_seal,
                           'head_hash', encode(drop_archived_partitions.head_hash, 'hex'),
                           'manifest_sha256', drop_archived_partitions.manifest_sha256,
                           'location', drop_archived_partitions.location, 'carried', prep.carried,
                           'reason', drop_archived_partitions.reason)) l;
    INSERT INTO backstop.log_retention (cut, partitions, rows, first_seal, last_seal, head_hash, manifest_sha256,
                                        location, carried, reason, archived_by, seq, at)
    VALUES (p_cut, v_parts, prep.rows, prep.first_seal, prep.last_seal, drop_archived_partitions.head_hash,
            drop_archived_partitions.manifest_sha256, drop_archived_partitions.location, prep.carried,
            drop_archived_partitions.reason, v_actor, v_seq, v_at);
    FOREACH v_part IN ARRAY v_parts LOOP
        EXECUTE format('DROP TABLE backstop.%I', v_part);
    END LOOP;
    DELETE FROM backstop.log_partitions p WHERE p.name = ANY (v_parts);
    DELETE FROM backstop.carried_log c
     WHERE NOT EXISTS (SELECT 1 FROM backstop.action_log k
                        WHERE k.kind = 'carried' AND (k.detail -> 'row' ->> 'seq')::bigint = c.seq);
    DELETE FROM backstop.cut_prepared x WHERE x.cut <= p_cut;
    partitions := v_parts;
    rows_dropped := prep.rows;
    carried := prep.carried;
    seq := v_seq;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION backstop.drop_archived_partitions IS 'Second step of a retention cut: under the log''s exclusive lock, appends log_archived and drops the prepared partitions. Callers: the owner only (`backstop archive`). Returns (partitions, rows_dropped, carried, seq).';

-- What the tables this file writes hold, for clients reading them.
COMMENT ON TABLE backstop.carried_log IS 'Original rows of log events carried forward across a retention cut. Readers: every duty but agent.';
COMMENT ON TABLE backstop.log_retention IS 'One row per retention cut: partitions dropped, rows, seals, the archive''s manifest. Readers: every duty but agent.';
COMMENT ON TABLE backstop.cut_prepared IS 'A retention cut prepared and not yet dropped. Readers: every duty but agent.';
