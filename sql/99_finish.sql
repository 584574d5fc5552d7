-- Last: what every apply of the contract ends with.

-- No function is anyone's unless its file granted it (a function is
-- executable by PUBLIC when made).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA backstop FROM PUBLIC;

-- The partitions now + ahead x width needs (housekeeping keeps it so).
SELECT backstop.ensure_log_partitions();

-- The minimal policy in force until a policy.toml is loaded: only on a new
-- database, so a re-applied contract never replaces a team's policy.
SELECT set_config('backstop.operator', 'migration', true);
SELECT backstop.load_policy(
    '{"settings": {"hold_expiry_seconds": 3600, "expiry_effect": "block", "four_eyes_above": 10000},
      "rules": [
        {"name": "irreversible_over_limit", "kind": "amount_over", "effect": "hold", "threshold": 500,
         "classes": ["irreversible"], "approvals": 1,
         "reason": "irreversible {tool} of {amount} is above the {threshold} limit"},
        {"name": "costly_and_unsure", "kind": "cost_to_reverse", "effect": "hold", "threshold": 1000,
         "confidence_below": 0.85, "approvals": 1,
         "reason": "cost to reverse {cost} is above {threshold} with confidence {confidence}"},
        {"name": "four_eyes", "kind": "amount_over", "effect": "hold", "threshold": 10000, "approvals": 2,
         "reason": "{amount} is above {threshold}: two approvers"}],
      "lists": {}, "compensation": {"max_attempts": 5, "backoff_seconds": 2}}'::jsonb,
    -- sha256 of the text 'builtin-default-1': a fixed stand-in, as no file backs it.
    encode(sha256('builtin-default-1'), 'hex'), 'migration')
WHERE NOT EXISTS (SELECT 1 FROM backstop.policy_versions);
