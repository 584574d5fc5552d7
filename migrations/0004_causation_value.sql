-- Adoption, continued (contract version 5).

-- What an action depends on is declared (parent_action, depends_on) or
-- follows from the entity it touches; a shared correlation id groups, it
-- does not make one action depend on another.
ALTER TABLE backstop.actions ADD COLUMN depends_on uuid[];
CREATE INDEX actions_depends_on ON backstop.actions USING gin (depends_on) WHERE depends_on IS NOT NULL;

-- The money at stake comes from the params the registry names: it may be
-- required, and it has a direction (out: the company pays; in: it is paid).
-- A tool's class may depend on one parameter's value (a refund to a gift
-- card is final; one to a card can be stopped).
ALTER TABLE backstop.tools
    ADD COLUMN value_required boolean NOT NULL DEFAULT false,
    ADD COLUMN direction      text CHECK (direction IN ('out', 'in')),
    ADD COLUMN class_param    text,
    ADD COLUMN class_values   jsonb;

-- A rule may apply to one direction of money only, and a cumulative rule may
-- add up per entity (the customer) rather than per agent.
ALTER TABLE backstop.policy_rules
    ADD COLUMN direction text CHECK (direction IN ('out', 'in')),
    ADD COLUMN per       text NOT NULL DEFAULT 'agent' CHECK (per IN ('agent', 'entity'));

-- Whether a policy has a per-entity cumulative rule (read once per proposal).
ALTER TABLE backstop.policy_versions ADD COLUMN entity_cumulative boolean NOT NULL DEFAULT false;

CREATE TABLE backstop.entity_value_minutes (
    entity text        NOT NULL,
    minute timestamptz NOT NULL,
    total  numeric     NOT NULL,
    PRIMARY KEY (entity, minute)
) WITH (fillfactor = 50);
