-- Notifications for the people who are not watching the room (contract
-- version 4, unreleased changes).

-- The notification outbox: one row per event and webhook target, queued by
-- the contract when the log row that raises it is appended (sql/16_notify.sql)
-- and delivered by the supervisors, at least once, retried with backoff. The
-- key (event, target) is what de-duplicates: an event is queued once however
-- often its log row is re-read. The URL itself is never stored: only the name
-- of the environment variable that holds it in the delivering process.
CREATE TABLE backstop.notify_outbox (
    event           text        NOT NULL,
    target          text        NOT NULL,
    -- hold | finding | pause | resume | compensation_failed | drill
    kind            text        NOT NULL,
    -- json | slack
    format          text        NOT NULL,
    url_env         text        NOT NULL,
    seq             bigint      NOT NULL,
    payload         jsonb       NOT NULL,
    -- pending | sending | delivered | failed
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL,
    backoff_seconds double precision NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    claimed_by      text,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL,
    done_at         timestamptz,
    done_seq        bigint,
    last_error      text,
    PRIMARY KEY (event, target)
);

CREATE INDEX notify_outbox_ready ON backstop.notify_outbox (next_attempt_at)
    WHERE status IN ('pending', 'sending');
