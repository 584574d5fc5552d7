-- Adoption by a team's own tools (contract version 4).

-- A tool another tool names as its inverse is run by compensation workers,
-- not proposed by agents, unless the registry says agents may call it too.
ALTER TABLE backstop.tools ADD COLUMN inverse_only boolean NOT NULL DEFAULT false;
