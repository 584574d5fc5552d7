-- The demo's simulated business systems: real tables in their own schemas,
-- written by the simulated agents and by other actors (people, a nightly
-- job), and undone by the compensation workers through the registry's
-- executors. Every inverse takes (params jsonb, idempotency_key uuid), records
-- the key in the same transaction, and returns the stored result on a repeat:
-- that is what makes a compensation run exactly once.
--
-- Conditions and conflicts are raised with their own SQLSTATEs:
--   BSCND  the tool's condition no longer holds (e.g. refund withdrawn)
--   BSCFL  another actor changed what the action wrote (not clobbered)

CREATE SCHEMA IF NOT EXISTS payments;
CREATE SCHEMA IF NOT EXISTS contracts;
CREATE SCHEMA IF NOT EXISTS crm;
CREATE SCHEMA IF NOT EXISTS outreach;

CREATE TABLE IF NOT EXISTS payments.accounts (
    customer_id text PRIMARY KEY,
    balance     numeric NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS payments.ledger (
    entry_id    bigserial PRIMARY KEY,
    customer_id text NOT NULL,
    amount      numeric NOT NULL,
    kind        text NOT NULL,
    ref         text,
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS payments.orders (
    order_id    text PRIMARY KEY,
    customer_id text NOT NULL,
    total       numeric NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS payments.refunds (
    refund_id   text PRIMARY KEY,
    customer_id text NOT NULL,
    amount      numeric NOT NULL,
    order_id    text,
    status      text NOT NULL DEFAULT 'issued',  -- issued | withdrawn | reversed
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS payments.charges (
    charge_id   text PRIMARY KEY,
    customer_id text NOT NULL,
    amount      numeric NOT NULL,
    status      text NOT NULL DEFAULT 'charged',  -- charged | refunded
    actor       text NOT NULL
);
CREATE TABLE IF NOT EXISTS payments.credits (
    credit_id   text PRIMARY KEY,
    customer_id text NOT NULL,
    amount      numeric NOT NULL,
    status      text NOT NULL DEFAULT 'active',  -- active | revoked
    actor       text NOT NULL
);
CREATE TABLE IF NOT EXISTS payments.supplier_payments (
    payment_id text PRIMARY KEY,
    payee      text NOT NULL,
    iban       text NOT NULL,
    amount     numeric NOT NULL,
    actor      text NOT NULL
);
CREATE TABLE IF NOT EXISTS payments.applied_keys (
    key    uuid PRIMARY KEY,
    fn     text NOT NULL,
    result jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS contracts.contracts (
    contract_id   text PRIMARY KEY,
    supplier      text NOT NULL,
    monthly_value numeric NOT NULL,
    status        text NOT NULL DEFAULT 'active',  -- active | cancelled
    renewed_until date,
    cancellation  text,
    -- Operations depend on it: cancelling it is never what anyone meant.
    critical      boolean NOT NULL DEFAULT false,
    updated_by    text NOT NULL DEFAULT 'setup',
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS contracts.applied_keys (
    key    uuid PRIMARY KEY,
    fn     text NOT NULL,
    result jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS crm.customers (
    customer_id text PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    phone       text,
    tier        text NOT NULL DEFAULT 'standard',
    status      text NOT NULL DEFAULT 'active',  -- active | churned
    -- The id of the last write to each field. An inverse restores a field only
    -- if the write it undoes is still the last one, and puts back the id of
    -- the write before it, so undoing several writes in reverse order chains.
    field_writes jsonb NOT NULL DEFAULT '{}',
    updated_by  text NOT NULL DEFAULT 'setup',
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Customers who must not be contacted or paid: the policy's "churned" list.
CREATE TABLE IF NOT EXISTS crm.suppression_list (
    customer_id text PRIMARY KEY,
    reason      text NOT NULL
);
CREATE TABLE IF NOT EXISTS crm.applied_keys (
    key    uuid PRIMARY KEY,
    fn     text NOT NULL,
    result jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS outreach.campaigns (
    campaign_id text PRIMARY KEY,
    segment     text NOT NULL,
    status      text NOT NULL DEFAULT 'scheduled',  -- scheduled | sent | cancelled
    send_at     timestamptz,
    recipients  integer NOT NULL DEFAULT 0,
    actor       text NOT NULL
);
CREATE TABLE IF NOT EXISTS outreach.emails (
    email_id    bigserial PRIMARY KEY,
    customer_id text,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    campaign_id text,
    actor       text NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS outreach.applied_keys (
    key    uuid PRIMARY KEY,
    fn     text NOT NULL,
    result jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- ---- forward operations (what agents and other actors do) ----

CREATE OR REPLACE FUNCTION payments.issue_refund(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := 'rf-' || substr(md5(random()::text || clock_timestamp()::text), 1, 10);
BEGIN
    INSERT INTO payments.accounts (customer_id) VALUES (p ->> 'customer_id') ON CONFLICT DO NOTHING;
    INSERT INTO payments.refunds (refund_id, customer_id, amount, order_id, actor)
    VALUES (v_id, p ->> 'customer_id', (p ->> 'amount')::numeric, p ->> 'order_id', actor);
    UPDATE payments.accounts SET balance = balance + (p ->> 'amount')::numeric WHERE customer_id = p ->> 'customer_id';
    INSERT INTO payments.ledger (customer_id, amount, kind, ref, actor)
    VALUES (p ->> 'customer_id', (p ->> 'amount')::numeric, 'refund', v_id, actor);
    RETURN jsonb_build_object('refund_id', v_id, 'status', 'issued');
END
$$;

CREATE OR REPLACE FUNCTION payments.charge_customer(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := 'ch-' || substr(md5(random()::text || clock_timestamp()::text), 1, 10);
BEGIN
    INSERT INTO payments.accounts (customer_id) VALUES (p ->> 'customer_id') ON CONFLICT DO NOTHING;
    INSERT INTO payments.charges (charge_id, customer_id, amount, actor)
    VALUES (v_id, p ->> 'customer_id', (p ->> 'amount')::numeric, actor);
    UPDATE payments.accounts SET balance = balance - (p ->> 'amount')::numeric WHERE customer_id = p ->> 'customer_id';
    INSERT INTO payments.ledger (customer_id, amount, kind, ref, actor)
    VALUES (p ->> 'customer_id', -(p ->> 'amount')::numeric, 'charge', v_id, actor);
    RETURN jsonb_build_object('charge_id', v_id);
END
$$;

CREATE OR REPLACE FUNCTION payments.issue_credit(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := 'cr-' || substr(md5(random()::text || clock_timestamp()::text), 1, 10);
BEGIN
    INSERT INTO payments.accounts (customer_id) VALUES (p ->> 'customer_id') ON CONFLICT DO NOTHING;
    INSERT INTO payments.credits (credit_id, customer_id, amount, actor)
    VALUES (v_id, p ->> 'customer_id', (p ->> 'amount')::numeric, actor);
    UPDATE payments.accounts SET balance = balance + (p ->> 'amount')::numeric WHERE customer_id = p ->> 'customer_id';
    INSERT INTO payments.ledger (customer_id, amount, kind, ref, actor)
    VALUES (p ->> 'customer_id', (p ->> 'amount')::numeric, 'credit', v_id, actor);
    RETURN jsonb_build_object('credit_id', v_id);
END
$$;

CREATE OR REPLACE FUNCTION payments.pay_supplier(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := 'sp-' || substr(md5(random()::text || clock_timestamp()::text), 1, 10);
BEGIN
    INSERT INTO payments.supplier_payments (payment_id, payee, iban, amount, actor)
    VALUES (v_id, p ->> 'payee', p ->> 'iban', (p ->> 'amount')::numeric, actor);
    RETURN jsonb_build_object('payment_id', v_id);
END
$$;

-- A customer spending or withdrawing refunded money (the condition on refunds).
CREATE OR REPLACE FUNCTION payments.withdraw_refund(p_refund_id text, actor text) RETURNS void
LANGUAGE sql AS $$
    UPDATE payments.refunds SET status = 'withdrawn' WHERE refund_id = p_refund_id AND status = 'issued';
$$;

CREATE OR REPLACE FUNCTION contracts.cancel_contract(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := 'cx-' || substr(md5(random()::text || clock_timestamp()::text), 1, 10);
    c contracts.contracts%ROWTYPE;
BEGIN
    SELECT * INTO c FROM contracts.contracts WHERE contract_id = p ->> 'contract_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no contract %', p ->> 'contract_id';
    END IF;
    UPDATE contracts.contracts SET status = 'cancelled', cancellation = v_id, updated_by = actor, updated_at = clock_timestamp()
     WHERE contract_id = c.contract_id;
    RETURN jsonb_build_object('cancellation_id', v_id, 'previous_status', c.status,
                              'previous_cancellation', c.cancellation);
END
$$;

-- A person (or job) reactivating a contract directly.
CREATE OR REPLACE FUNCTION contracts.activate_contract(p jsonb, actor text) RETURNS jsonb
LANGUAGE sql AS $$
    UPDATE contracts.contracts SET status = 'active', cancellation = NULL, updated_by = actor, updated_at = clock_timestamp()
     WHERE contract_id = p ->> 'contract_id'
    RETURNING jsonb_build_object('contract_id', contract_id, 'status', status);
$$;

CREATE OR REPLACE FUNCTION contracts.renew_contract(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_prev date;
BEGIN
    SELECT renewed_until INTO v_prev FROM contracts.contracts WHERE contract_id = p ->> 'contract_id' FOR UPDATE;
    UPDATE contracts.contracts
       SET renewed_until = coalesce(renewed_until, current_date) + make_interval(months => coalesce((p ->> 'months')::int, 12)),
           updated_by = actor, updated_at = clock_timestamp()
     WHERE contract_id = p ->> 'contract_id';
    RETURN jsonb_build_object('renewal_id', 'rn-' || substr(md5(random()::text), 1, 10), 'previous_until', v_prev);
END
$$;

CREATE OR REPLACE FUNCTION crm.update_customer_field(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_prev text;
    v_prev_write text;
    v_write text := 'w-' || substr(md5(random()::text || clock_timestamp()::text), 1, 12);
    v_field text := p ->> 'field';
BEGIN
    IF v_field NOT IN ('email', 'phone', 'tier', 'status', 'name') THEN
        RAISE EXCEPTION 'field % cannot be updated', v_field;
    END IF;
    EXECUTE format('SELECT %I, field_writes ->> %L FROM crm.customers WHERE customer_id = $1 FOR UPDATE', v_field, v_field)
      INTO v_prev, v_prev_write USING p ->> 'customer_id';
    EXECUTE format('UPDATE crm.customers SET %I = $1, field_writes = field_writes || jsonb_build_object(%L, $4::text),
                           updated_by = $2, updated_at = clock_timestamp() WHERE customer_id = $3', v_field, v_field)
      USING p ->> 'value', actor, p ->> 'customer_id', v_write;
    RETURN jsonb_build_object('previous_value', v_prev, 'write_id', v_write, 'previous_write_id', v_prev_write);
END
$$;

CREATE OR REPLACE FUNCTION outreach.send_email(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO outreach.emails (customer_id, recipient, subject, actor)
    VALUES (p ->> 'customer_id', coalesce(p ->> 'to', 'unknown'), coalesce(p ->> 'subject', ''), actor)
    RETURNING email_id INTO v_id;
    RETURN jsonb_build_object('email_id', v_id);
END
$$;

CREATE OR REPLACE FUNCTION outreach.schedule_campaign(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outreach.campaigns (campaign_id, segment, send_at, actor)
    VALUES (p ->> 'campaign_id', p ->> 'segment', clock_timestamp() + interval '1 hour', actor)
    ON CONFLICT (campaign_id) DO UPDATE SET status = 'scheduled', segment = excluded.segment;
    RETURN jsonb_build_object('campaign_id', p ->> 'campaign_id', 'status', 'scheduled');
END
$$;

-- Sends to every customer in the segment (a segment of 'churned' reaches the
-- churned customers: the demo's incident).
CREATE OR REPLACE FUNCTION outreach.send_campaign(p jsonb, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    INSERT INTO outreach.campaigns (campaign_id, segment, status, actor)
    VALUES (p ->> 'campaign_id', p ->> 'segment', 'sent', actor)
    ON CONFLICT (campaign_id) DO UPDATE SET status = 'sent';
    INSERT INTO outreach.emails (customer_id, recipient, subject, campaign_id, actor)
    SELECT c.customer_id, c.email, coalesce(p ->> 'subject', 'news'), p ->> 'campaign_id', actor
      FROM crm.customers c
     WHERE (p ->> 'segment' = 'all') OR (p ->> 'segment' = 'churned' AND c.status = 'churned')
        OR (p ->> 'segment' = c.tier);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    UPDATE outreach.campaigns SET recipients = v_n WHERE campaign_id = p ->> 'campaign_id';
    RETURN jsonb_build_object('campaign_id', p ->> 'campaign_id', 'recipients', v_n);
END
$$;

-- ---- inverses (run by compensation workers, exactly once per key) ----

CREATE OR REPLACE FUNCTION payments.reverse_refund(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
    r payments.refunds%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('payments.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM payments.applied_keys a WHERE a.key = reverse_refund.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    SELECT * INTO r FROM payments.refunds WHERE refund_id = p ->> 'refund_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund % does not exist', p ->> 'refund_id';
    END IF;
    IF r.status = 'withdrawn' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCND',
            MESSAGE = format('condition refund_not_withdrawn failed: the customer already withdrew refund %s', r.refund_id);
    END IF;
    IF r.status = 'reversed' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCFL', MESSAGE = format('refund %s was already reversed by someone else', r.refund_id);
    END IF;
    UPDATE payments.refunds SET status = 'reversed' WHERE refund_id = r.refund_id;
    UPDATE payments.accounts SET balance = balance - r.amount WHERE customer_id = r.customer_id;
    INSERT INTO payments.ledger (customer_id, amount, kind, ref, actor)
    VALUES (r.customer_id, -r.amount, 'refund_reversal', r.refund_id, 'compensation:' || key);
    INSERT INTO payments.applied_keys (key, fn, result)
    VALUES (key, 'reverse_refund', jsonb_build_object('refund_id', r.refund_id, 'reversed', r.amount));
    RETURN jsonb_build_object('refund_id', r.refund_id, 'reversed', r.amount);
END
$$;

CREATE OR REPLACE FUNCTION payments.refund_charge(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
    c payments.charges%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('payments.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM payments.applied_keys a WHERE a.key = refund_charge.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    SELECT * INTO c FROM payments.charges WHERE charge_id = p ->> 'charge_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'charge % does not exist', p ->> 'charge_id';
    END IF;
    IF c.status <> 'charged' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCFL', MESSAGE = format('charge %s is already %s', c.charge_id, c.status);
    END IF;
    UPDATE payments.charges SET status = 'refunded' WHERE charge_id = c.charge_id;
    UPDATE payments.accounts SET balance = balance + c.amount WHERE customer_id = c.customer_id;
    INSERT INTO payments.ledger (customer_id, amount, kind, ref, actor)
    VALUES (c.customer_id, c.amount, 'charge_refund', c.charge_id, 'compensation:' || key);
    INSERT INTO payments.applied_keys (key, fn, result) VALUES (key, 'refund_charge', jsonb_build_object('charge_id', c.charge_id));
    RETURN jsonb_build_object('charge_id', c.charge_id, 'refunded', c.amount);
END
$$;

CREATE OR REPLACE FUNCTION payments.revoke_credit(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
    c payments.credits%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('payments.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM payments.applied_keys a WHERE a.key = revoke_credit.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    SELECT * INTO c FROM payments.credits WHERE credit_id = p ->> 'credit_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'credit % does not exist', p ->> 'credit_id';
    END IF;
    IF c.status <> 'active' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCFL', MESSAGE = format('credit %s is already %s', c.credit_id, c.status);
    END IF;
    UPDATE payments.credits SET status = 'revoked' WHERE credit_id = c.credit_id;
    UPDATE payments.accounts SET balance = balance - c.amount WHERE customer_id = c.customer_id;
    INSERT INTO payments.ledger (customer_id, amount, kind, ref, actor)
    VALUES (c.customer_id, -c.amount, 'credit_revoked', c.credit_id, 'compensation:' || key);
    INSERT INTO payments.applied_keys (key, fn, result) VALUES (key, 'revoke_credit', jsonb_build_object('credit_id', c.credit_id));
    RETURN jsonb_build_object('credit_id', c.credit_id, 'revoked', c.amount);
END
$$;

CREATE OR REPLACE FUNCTION contracts.reinstate_contract(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
    c contracts.contracts%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('contracts.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM contracts.applied_keys a WHERE a.key = reinstate_contract.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    SELECT * INTO c FROM contracts.contracts WHERE contract_id = p ->> 'contract_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'contract % does not exist', p ->> 'contract_id';
    END IF;
    IF c.status <> 'cancelled' OR c.cancellation IS DISTINCT FROM p ->> 'cancellation_id' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCFL',
            MESSAGE = format('contract %s changed since the cancellation (%s by %s at %s): not reinstated over it',
                             c.contract_id, c.status, c.updated_by, c.updated_at);
    END IF;
    -- Back to exactly what the cancellation replaced.
    UPDATE contracts.contracts SET status = coalesce(p ->> 'previous_status', 'active'),
           cancellation = p ->> 'previous_cancellation', updated_by = 'compensation:' || key,
           updated_at = clock_timestamp()
     WHERE contract_id = c.contract_id;
    INSERT INTO contracts.applied_keys (key, fn, result) VALUES (key, 'reinstate_contract', jsonb_build_object('contract_id', c.contract_id));
    RETURN jsonb_build_object('contract_id', c.contract_id, 'status', coalesce(p ->> 'previous_status', 'active'));
END
$$;

CREATE OR REPLACE FUNCTION contracts.revert_renewal(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('contracts.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM contracts.applied_keys a WHERE a.key = revert_renewal.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    UPDATE contracts.contracts SET renewed_until = (p ->> 'previous_until')::date, updated_by = 'compensation:' || key,
           updated_at = clock_timestamp()
     WHERE contract_id = p ->> 'contract_id';
    INSERT INTO contracts.applied_keys (key, fn, result) VALUES (key, 'revert_renewal', jsonb_build_object('contract_id', p ->> 'contract_id'));
    RETURN jsonb_build_object('contract_id', p ->> 'contract_id');
END
$$;

CREATE OR REPLACE FUNCTION crm.restore_customer_field(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
    v_field text := p ->> 'field';
    v_now text;
    v_by text;
    v_last text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('crm.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM crm.applied_keys a WHERE a.key = restore_customer_field.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    IF v_field NOT IN ('email', 'phone', 'tier', 'status', 'name') THEN
        RAISE EXCEPTION 'field % cannot be restored', v_field;
    END IF;
    EXECUTE format('SELECT %I, updated_by, field_writes ->> %L FROM crm.customers WHERE customer_id = $1 FOR UPDATE', v_field, v_field)
      INTO v_now, v_by, v_last USING p ->> 'customer_id';
    IF v_last IS DISTINCT FROM p ->> 'undo_write' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCFL',
            MESSAGE = format('%s of %s was written since (now %s, by %s): not clobbered', v_field, p ->> 'customer_id', v_now, v_by);
    END IF;
    EXECUTE format('UPDATE crm.customers SET %I = $1,
                           field_writes = CASE WHEN $4::text IS NULL THEN field_writes - %L
                                               ELSE field_writes || jsonb_build_object(%L, $4::text) END,
                           updated_by = $2, updated_at = clock_timestamp() WHERE customer_id = $3', v_field, v_field, v_field)
      USING p ->> 'value', 'compensation:' || key, p ->> 'customer_id', p ->> 'restore_write';
    INSERT INTO crm.applied_keys (key, fn, result)
    VALUES (key, 'restore_customer_field', jsonb_build_object('customer_id', p ->> 'customer_id', 'field', v_field));
    RETURN jsonb_build_object('customer_id', p ->> 'customer_id', 'field', v_field, 'restored', p ->> 'value');
END
$$;

CREATE OR REPLACE FUNCTION outreach.cancel_campaign(p jsonb, key uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prior jsonb;
    v_status text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('outreach.key'), hashtext(key::text));
    SELECT a.result INTO prior FROM outreach.applied_keys a WHERE a.key = cancel_campaign.key;
    IF FOUND THEN
        RETURN prior || '{"repeat": true}';
    END IF;
    SELECT status INTO v_status FROM outreach.campaigns WHERE campaign_id = p ->> 'campaign_id' FOR UPDATE;
    IF v_status = 'sent' THEN
        RAISE EXCEPTION USING ERRCODE = 'BSCND',
            MESSAGE = format('condition campaign_not_sent failed: campaign %s has gone out', p ->> 'campaign_id');
    END IF;
    UPDATE outreach.campaigns SET status = 'cancelled' WHERE campaign_id = p ->> 'campaign_id';
    INSERT INTO outreach.applied_keys (key, fn, result) VALUES (key, 'cancel_campaign', jsonb_build_object('campaign_id', p ->> 'campaign_id'));
    RETURN jsonb_build_object('campaign_id', p ->> 'campaign_id', 'status', 'cancelled');
END
$$;

-- The policy's "churned" list and its supervisor checks read these tables
-- as Backstop's check role (sql/15_checks.sql), which reads only what it is
-- granted: grant it exactly what the policy names.
DO $grant$
DECLARE
    r text;
BEGIN
    IF to_regclass('backstop.duties') IS NOT NULL THEN
        SELECT role_name INTO r FROM backstop.duties WHERE duty = 'check';
        IF r IS NOT NULL THEN
            EXECUTE format('GRANT USAGE ON SCHEMA payments, contracts, outreach, crm TO %I', r);
            EXECUTE format('GRANT SELECT ON payments.orders, contracts.contracts, outreach.emails, crm.suppression_list TO %I', r);
        END IF;
    END IF;
END
$grant$;
