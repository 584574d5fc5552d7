-- The cumulative rule's per-minute totals are pruned once they are older
-- than any window could read (backstop.prune_value_minutes, called by every
-- long-running process's housekeeping); these indexes let that find them
-- without reading every row. Each new minute of an agent or entity adds one
-- entry at the index's end; the per-action upsert of an existing minute
-- changes only `total`, which stays a HOT update.
CREATE INDEX agent_value_minutes_minute ON backstop.agent_value_minutes (minute);
CREATE INDEX entity_value_minutes_minute ON backstop.entity_value_minutes (minute);
