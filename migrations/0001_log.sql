-- The action log: append-only, sealed in hash-chained batches, tailed by
-- transaction-id snapshots. Everything else in schema `backstop` is a
-- projection of this table.

CREATE SCHEMA IF NOT EXISTS backstop;

-- Who is acting. The room and the CLI set `backstop.operator` for the session;
-- otherwise the login role is the identity.
CREATE FUNCTION backstop.actor() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('backstop.operator', true), ''), session_user::text)
$$;

CREATE SEQUENCE backstop.action_log_seq AS bigint;

-- seq, at and txid come from the database. Nothing here serializes writers:
-- tamper evidence is added after commit by sealing (below), off the agents'
-- path.
-- txid comes first on purpose: an INSERT evaluates its values in column
-- order, so the transaction id is assigned before the sequence number is
-- taken. `verify` relies on it: a transaction whose id was assigned after a
-- seal's own cannot hold a seq the sequence had issued before that seal.
CREATE TABLE backstop.action_log (
    txid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq              bigint      NOT NULL DEFAULT nextval('backstop.action_log_seq'),
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind             text        NOT NULL,
    actor            text        NOT NULL,
    agent            text,
    tool             text,
    action_id        uuid,
    correlation_id   text,
    parent_action    uuid,
    amount           numeric,
    confidence       real,
    reasoning        text,
    inputs           jsonb,
    params           jsonb,
    result           jsonb,
    detail           jsonb       NOT NULL DEFAULT '{}',
    policy_version   bigint,
    registry_version bigint,
    -- Partitioned by time: the key must include the partition column.
    CONSTRAINT action_log_pkey PRIMARY KEY (seq, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE backstop.action_log_seq OWNED BY backstop.action_log.seq;
-- Readers (the tail, the sealer) find rows by the transaction that wrote them.
CREATE INDEX action_log_txid ON backstop.action_log (txid, seq);
CREATE INDEX action_log_action ON backstop.action_log (action_id) WHERE action_id IS NOT NULL;

-- The canonical text of a row: every field, in a representation that does
-- not depend on session settings (TimeZone, extra_float_digits). The sealer
-- and `verify` both use this one definition of what is hashed.
CREATE FUNCTION backstop.canon(l backstop.action_log) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN jsonb_build_array(
        l.seq, (extract(epoch FROM l.at) * 1000000)::bigint, l.txid::text, l.kind, l.actor,
        l.agent, l.tool, l.action_id, l.correlation_id, l.parent_action,
        l.amount::text, l.confidence::numeric::text, l.reasoning, l.inputs, l.params,
        l.result, l.detail, l.policy_version, l.registry_version)::text;
END
$$;

CREATE FUNCTION backstop.row_digest(l backstop.action_log) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(backstop.canon(l), 'UTF8'))
$$;

CREATE FUNCTION backstop.tg_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = '42501',
        MESSAGE = format('backstop.action_log is append-only: %s is refused', TG_OP),
        HINT = 'The log is the source of truth. Correct a mistake by appending a new event through the contract functions.';
END
$$;

CREATE TRIGGER action_log_no_update BEFORE UPDATE OR DELETE ON backstop.action_log
    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only();
CREATE TRIGGER action_log_no_truncate BEFORE TRUNCATE ON backstop.action_log
    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only();

-- Partitions: contiguous time ranges created ahead of need (by every
-- long-running Backstop process, through housekeeping), and a DEFAULT
-- partition, so that no write ever fails for want of one. Statement
-- triggers are not inherited by partitions: each gets its own, so a
-- statement aimed at a partition directly is refused too.
CREATE TABLE backstop.log_partitions (
    name    text PRIMARY KEY,
    from_at timestamptz NOT NULL UNIQUE,
    to_at   timestamptz NOT NULL,
    CHECK (to_at > from_at)
);
CREATE TABLE backstop.log_partitioning (
    one   boolean  PRIMARY KEY DEFAULT true CHECK (one),
    width interval NOT NULL CHECK (width >= interval '1 second'),
    ahead integer  NOT NULL CHECK (ahead BETWEEN 1 AND 100)
);
-- The width is the session setting backstop.log_partition_width at
-- migration time (BACKSTOP_LOG_PARTITION_WIDTH), default one month.
INSERT INTO backstop.log_partitioning (width, ahead)
VALUES (coalesce(nullif(current_setting('backstop.log_partition_width', true), '')::interval, interval '1 month'), 2);

CREATE FUNCTION backstop._protect_partition(p text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER no_update BEFORE UPDATE OR DELETE ON backstop.%I
                    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only()', p);
    EXECUTE format('CREATE TRIGGER no_truncate BEFORE TRUNCATE ON backstop.%I
                    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_append_only()', p);
END
$$;

CREATE TABLE backstop.action_log_default PARTITION OF backstop.action_log DEFAULT;
SELECT backstop._protect_partition('action_log_default');

-- Create the partitions that now + ahead x width needs. Cheap when there is
-- nothing to do (one lookup); one creator at a time.
CREATE FUNCTION backstop.ensure_log_partitions() RETURNS integer
LANGUAGE plpgsql AS $$
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
    IF NOT pg_try_advisory_xact_lock(1112757360, 0) THEN
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
        -- ensure for a long while): leave them; writes go on regardless.
        IF EXISTS (SELECT 1 FROM backstop.action_log_default d WHERE d.at >= v_from AND d.at < v_to) THEN
            RAISE WARNING 'backstop: log rows for % to % are in the default partition; no partition made for that range', v_from, v_to;
            RETURN n;
        END IF;
        v_name := 'action_log_' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS');
        EXECUTE format('CREATE TABLE backstop.%I PARTITION OF backstop.action_log FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_from, v_to);
        PERFORM backstop._protect_partition(v_name);
        INSERT INTO backstop.log_partitions (name, from_at, to_at) VALUES (v_name, v_from, v_to);
        n := n + 1;
        v_from := v_to;
    END LOOP;
    RETURN n;
END
$$;
SELECT backstop.ensure_log_partitions();

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
LANGUAGE plpgsql AS $$
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

-- The tail: rows whose transaction is visible in snapshot `upto` but was not
-- visible in snapshot `after`, ordered by (txid, seq) and paged by that pair.
-- A row whose transaction took a low seq and committed late is still
-- delivered, exactly once, in the first window whose `upto` sees it
-- committed. Both branches are range scans of action_log_txid.
CREATE FUNCTION backstop.tail(after pg_snapshot, upto pg_snapshot, after_txid xid8, after_seq bigint, max_rows integer)
RETURNS SETOF backstop.action_log
LANGUAGE sql STABLE AS $$
    (SELECT l.* FROM backstop.action_log l
      WHERE l.txid >= pg_snapshot_xmax(after)
        AND (l.txid, l.seq) > (after_txid, after_seq)
        AND pg_visible_in_snapshot(l.txid, upto)
      ORDER BY l.txid, l.seq
      LIMIT max_rows)
    UNION ALL
    (SELECT l.* FROM backstop.action_log l
      WHERE l.txid = ANY (ARRAY(SELECT pg_snapshot_xip(after)))
        AND (l.txid, l.seq) > (after_txid, after_seq)
        AND pg_visible_in_snapshot(l.txid, upto)
      ORDER BY l.txid, l.seq
      LIMIT max_rows)
    ORDER BY txid, seq
    LIMIT max_rows
$$;

-- Seals: tamper evidence in batches. Each seal covers the rows of one
-- snapshot window (committed after the previous seal's snapshot and by this
-- one's), possibly split by a (txid, seq) cursor when the window is large,
-- and stores every row's digest in (txid, seq) order. Seals form one hash
-- chain. `verify` recomputes every window from the log: an altered row shows
-- as a digest mismatch at its seq, a deleted row as a seq the seal has and
-- the log lacks, a forged row as one the log has and the seal lacks.
CREATE TABLE backstop.seals (
    seal_no    bigint PRIMARY KEY,
    after_snap pg_snapshot NOT NULL,
    upto_snap  pg_snapshot NOT NULL,
    from_txid  xid8        NOT NULL,
    from_seq   bigint      NOT NULL,
    to_txid    xid8        NOT NULL,
    to_seq     bigint      NOT NULL,
    complete   boolean     NOT NULL,
    row_count  integer     NOT NULL,
    -- The sealer read seq_floor from the sequence, then took seal_xid. A
    -- transaction with a larger id took its seqs after that, so above the floor.
    seal_xid   xid8        NOT NULL,
    seq_floor  bigint      NOT NULL,
    seqs       bigint[]    NOT NULL,
    digests    bytea       NOT NULL,
    prev_hash  bytea       NOT NULL,
    hash       bytea       NOT NULL,
    sealed_at  timestamptz NOT NULL,
    sealed_by  text        NOT NULL
);

CREATE FUNCTION backstop.tg_seals_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = '42501',
        MESSAGE = format('backstop.seals is append-only: %s is refused', TG_OP);
END
$$;
CREATE TRIGGER seals_no_update BEFORE UPDATE OR DELETE ON backstop.seals
    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_seals_append_only();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON backstop.seals
    FOR EACH STATEMENT EXECUTE FUNCTION backstop.tg_seals_append_only();

CREATE FUNCTION backstop.seal_hash(prev bytea, seal_no bigint, after_snap pg_snapshot, upto_snap pg_snapshot,
                                   from_txid xid8, from_seq bigint, to_txid xid8, to_seq bigint,
                                   complete boolean, seal_xid xid8, seq_floor bigint, digests bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || int8send(seal_no)
                  || convert_to(concat_ws('|', after_snap, upto_snap, from_txid, from_seq, to_txid, to_seq, complete,
                                          seal_xid, seq_floor), 'UTF8')
                  || sha256(digests))
$$;

CREATE FUNCTION backstop.seal_genesis() RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to('backstop seals', 'UTF8'))
$$;

-- Seal what has committed since the last seal, at most max_rows rows per
-- call. One sealer at a time (others return at once). Returns the seals made.
CREATE FUNCTION backstop.seal(max_rows integer DEFAULT 20000)
RETURNS TABLE (seal_no bigint, row_count integer, complete boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    last backstop.seals%ROWTYPE;
    v_after pg_snapshot;
    v_upto pg_snapshot;
    v_from_txid xid8;
    v_from_seq bigint;
    v_seqs bigint[];
    v_txids xid8[];
    v_digests bytea;
    v_n integer;
    v_complete boolean;
    v_no bigint;
    v_floor bigint;
    v_xid xid8;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('seal: max_rows must be between 1 and 1000000; got %s', coalesce(max_rows::text, 'null'));
    END IF;
    IF NOT pg_try_advisory_xact_lock(1112757332, 0) THEN
        RETURN;
    END IF;
    -- In this order: the floor first, then this transaction's id.
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END INTO v_floor FROM backstop.action_log_seq q;
    v_xid := pg_current_xact_id();
    SELECT * INTO last FROM backstop.seals s ORDER BY s.seal_no DESC LIMIT 1;
    IF NOT FOUND THEN
        v_after := '1:1:';
        v_upto := pg_current_snapshot();
        v_from_txid := '0';
        v_from_seq := 0;
        v_no := 1;
    ELSIF last.complete THEN
        v_after := last.upto_snap;
        v_upto := pg_current_snapshot();
        v_from_txid := '0';
        v_from_seq := 0;
        v_no := last.seal_no + 1;
    ELSE
        v_after := last.after_snap;
        v_upto := last.upto_snap;
        v_from_txid := last.to_txid;
        v_from_seq := last.to_seq;
        v_no := last.seal_no + 1;
    END IF;
    SELECT array_agg(t.seq ORDER BY t.txid, t.seq), array_agg(t.txid ORDER BY t.txid, t.seq),
           string_agg(backstop.row_digest(t), ''::bytea ORDER BY t.txid, t.seq), count(*)
      INTO v_seqs, v_txids, v_digests, v_n
      FROM backstop.tail(v_after, v_upto, v_from_txid, v_from_seq, max_rows + 1) t;
    v_complete := v_n <= max_rows;
    IF NOT v_complete THEN
        v_seqs := v_seqs[1:max_rows];
        v_txids := v_txids[1:max_rows];
        v_digests := substring(v_digests FROM 1 FOR 32 * max_rows);
        v_n := max_rows;
    END IF;
    IF v_n = 0 THEN
        IF last.seal_no IS NULL OR last.complete THEN
            -- Nothing new: the next call's window simply starts at the same place.
            RETURN;
        END IF;
        -- The rest of a split window is gone: close it with an empty seal
        -- (verify reports the rows the previous seals expected).
        v_seqs := ARRAY[]::bigint[];
        v_digests := ''::bytea;
    END IF;
    INSERT INTO backstop.seals (seal_no, after_snap, upto_snap, from_txid, from_seq, to_txid, to_seq, complete,
                                row_count, seal_xid, seq_floor, seqs, digests, prev_hash, hash, sealed_at, sealed_by)
    VALUES (v_no, v_after, v_upto, v_from_txid, v_from_seq,
            coalesce(v_txids[v_n], v_from_txid), coalesce(v_seqs[v_n], v_from_seq), v_complete,
            v_n, v_xid, v_floor, v_seqs, v_digests, coalesce(last.hash, backstop.seal_genesis()),
            backstop.seal_hash(coalesce(last.hash, backstop.seal_genesis()), v_no, v_after, v_upto,
                               v_from_txid, v_from_seq, coalesce(v_txids[v_n], v_from_txid),
                               coalesce(v_seqs[v_n], v_from_seq), v_complete, v_xid, v_floor, v_digests),
            clock_timestamp(), backstop.actor());
    seal_no := v_no;
    row_count := v_n;
    complete := v_complete;
    RETURN NEXT;
END
$$;
