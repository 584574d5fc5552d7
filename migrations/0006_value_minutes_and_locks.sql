-- The cumulative rule's per-minute totals are pruned once they are older
-- than any window could read (backstop.prune_value_minutes, called by every
-- long-running process's housekeeping); these indexes let that find them
-- without reading every row. Each new minute of an agent or entity adds one
-- entry at the index's end; the per-action upsert of an existing minute
-- changes only `total`, which stays a HOT update.
CREATE INDEX agent_value_minutes_minute ON backstop.agent_value_minutes (minute);
CREATE INDEX entity_value_minutes_minute ON backstop.entity_value_minutes (minute);

-- Locks only the contract can take. Advisory locks are any login's: an agent
-- that held the key a job serialized on (making partitions, a retention cut,
-- the drift pass) stopped that job for as long as it liked. A job now locks
-- its row here (FOR UPDATE, which needs a privilege no duty has).
CREATE TABLE backstop.job_locks (name text PRIMARY KEY);
INSERT INTO backstop.job_locks VALUES ('partitions'), ('cut'), ('drift');

-- Requests that must run once per key (an agent's idempotency key, a
-- rejected file's content) claim the key here first: a second caller with
-- the same key waits on the first's row until it commits, then finds its
-- answer. Only the contract writes here, so no login can hold a key.
CREATE TABLE backstop.request_claims (
    scope text NOT NULL,
    key   text NOT NULL,
    PRIMARY KEY (scope, key)
);
