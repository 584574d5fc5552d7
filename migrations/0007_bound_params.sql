-- The inverse's parameters that the registry binds from the action's own
-- params ("params.FIELD"), taken when the action is proposed. A result then
-- completes the inverse from this row and the tool's answer alone: it never
-- reads the log, whose partitions a lookup planned once for every call
-- locked each of, on every call (the count of partitions, not the log's
-- size, cost every result). The params are in the log for good, so what
-- they bind cannot change later; the rebuild derives it from them again.
ALTER TABLE backstop.actions ADD COLUMN bound_params jsonb;

-- Actions proposed before this column existed, their params read from the
-- log or, where a retention cut archived the proposal, from its carried
-- copy. The contract's functions are not loaded yet when migrations run:
-- the dotted path is split here as backstop.path_get splits it.
WITH b AS (
    SELECT x.action_id,
           (SELECT jsonb_object_agg(j.key, p.params #> string_to_array(substr(j.value #>> '{}', 8), '.'))
              FROM jsonb_each(t.bindings) j
             WHERE j.value #>> '{}' LIKE 'params.%'
               AND p.params #> string_to_array(substr(j.value #>> '{}', 8), '.') IS NOT NULL) AS bound
      FROM backstop.actions x
      JOIN backstop.tools t ON t.version = x.registry_version AND t.name = x.tool
      JOIN LATERAL (
          SELECT l.params FROM backstop.action_log l
           WHERE l.seq = x.proposed_seq AND l.at = x.proposed_at AND l.kind <> 'carried'
          UNION ALL
          SELECT c.params FROM backstop.carried_log c
           WHERE c.seq = x.proposed_seq AND c.at = x.proposed_at
          LIMIT 1) p ON true
     WHERE x.class IN ('reversible', 'conditional')
       AND EXISTS (SELECT 1 FROM jsonb_each_text(t.bindings) j WHERE j.value LIKE 'params.%')
)
UPDATE backstop.actions x SET bound_params = b.bound
  FROM b WHERE b.action_id = x.action_id AND b.bound IS NOT NULL;
