-- Cumulative limits read a running total (an agent's, an entity's) and add
-- to it later in the same transaction. Two proposals at once each read the
-- total without the other's amount, and both could be allowed past the
-- limit. A proposal that will read a total first locks its gate here (the
-- key's stripe), so the next one reads after the first has committed.
-- Striped: a fixed table, no row made per agent or customer ever seen; two
-- keys on one stripe only wait for each other now and then. Only the
-- contract locks these rows (FOR UPDATE needs UPDATE, which no duty has),
-- so no login can hold another agent's gate.
CREATE TABLE backstop.value_gates (
    stripe integer PRIMARY KEY
);
INSERT INTO backstop.value_gates SELECT g FROM generate_series(0, 4095) g;
