#!/usr/bin/env bash
# Count, exactly, the CPU instructions the database spends per action on the
# gateway (propose + record_result), on the floor (the same rows written by
# plain SQL) and on the gateway batched by 16 (propose_batch + record_results,
# as contract::gateway sends them), with valgrind's callgrind on a
# single-user PostgreSQL backend.
# Instruction counts do not depend on what else the machine is doing, so two
# versions of the contract can be compared to a fraction of a percent where a
# throughput benchmark on a shared 2-core machine moves by 30%.
#
#   scripts/profile-gateway.sh                 # both, 300 actions each
#   N=1000 scripts/profile-gateway.sh          # more actions
#   KEEP=1 scripts/profile-gateway.sh          # keep the callgrind files (callgrind_annotate)
#   MAX_OVER_FLOOR=3.07 scripts/profile-gateway.sh   # fail above that gateway / floor (CI)
#   MAX_BATCHED_OVER_FLOOR=1.56 ...            # the same for an action batched by 16 (CI)
#   B=4 scripts/profile-gateway.sh             # batches of 4 (1 to 16), to split a batch's cost from an action's
#   BIN=target/debug/backstop ...              # any build: it only migrates and loads
#   CPU_TIME=1 scripts/profile-gateway.sh      # CPU microseconds instead of instructions (no valgrind, fsync off):
#                                              # what the work costs on this machine's CPU, still without a
#                                              # round trip or a client; noisy, so run it a few times
#
# Every statement is PREPAREd once and EXECUTEd per action, as a driver's
# cached statements are; each runs in its own transaction. Agents act as their
# own login (SET SESSION AUTHORIZATION), the batched calls as a gateway's login
# mapped in agent_logins to sixteen agents, one request of each in a batch
# (as a gateway serving sixteen agents sends them, and as propose_batch's
# two-statement path takes them); the shipped demo registry and policy
# are loaded with the hourly cap lifted, as `backstop bench gateway` does.
# The figure is the difference between a run of 3N and one of N actions,
# divided by 2N: start-up, preparing and the first plans cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-300}
B=${B:-16}
[[ $B =~ ^[0-9]+$ ]] && ((B >= 1 && B <= 16)) || { echo "B is a batch size from 1 to 16" >&2; exit 1; }
# Batches are whole: the batched runs count a multiple of B actions.
NB=$(((N + B - 1) / B * B))
BIN=${BIN:-target/release/backstop}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[[ -n ${CPU_TIME:-} && -n ${MAX_OVER_FLOOR:-}${MAX_BATCHED_OVER_FLOOR:-} ]] &&
    { echo "MAX_OVER_FLOOR and MAX_BATCHED_OVER_FLOOR hold instruction counts, not CPU_TIME's" >&2; exit 1; }
[[ -n ${CPU_TIME:-} ]] || command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[[ -x $BIN ]] || cargo build --release -q
WORK=$(mktemp -d "${TMPDIR:-/tmp}/backstop-profile.XXXXXX")
chmod 755 "$WORK"
PORT=${PORT:-5497}
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ $(id -u) == 0 ]] && chown postgres "$WORK"
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" stop -m immediate >/dev/null 2>&1 || true
    [[ -n ${KEEP:-} ]] && echo "callgrind files kept in $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> a private cluster in $WORK" >&2
as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -o "-p $PORT -k $WORK -c listen_addresses=''" start >/dev/null
URL="postgres://postgres@localhost:$PORT/profile?host=$WORK"
psql -q "postgres://postgres@localhost:$PORT/postgres?host=$WORK" -c "CREATE DATABASE profile"
psql -q "$URL" -f src/demo/systems.sql >/dev/null
DATABASE_URL=$URL "$BIN" migrate >/dev/null
sed -E 's/^threshold = 5000$/threshold = 1000000000000/; s/^threshold = 50000$/threshold = 1000000000000/' \
    assets/demo/policy.toml >"$WORK/policy.toml"
psql -q "$URL" <<'SQL'
GRANT USAGE ON SCHEMA crm TO backstop_check;
GRANT SELECT ON crm.suppression_list TO backstop_check;
SQL
DATABASE_URL=$URL "$BIN" load --tools assets/demo/tools.toml --policy "$WORK/policy.toml" >/dev/null
psql -q "$URL" <<'SQL'
CREATE ROLE "profile-agent" LOGIN IN ROLE backstop_agent;
GRANT SELECT ON backstop.actions TO "profile-agent";
-- The batching gateway's own login, mapped to the agent it serves: each
-- request then pays the identity check a real gateway's does.
CREATE ROLE "profile-gateway" LOGIN IN ROLE backstop_agent;
GRANT SELECT ON backstop.actions TO "profile-gateway";
-- It serves sixteen agents, one request of each in a batch, as a gateway
-- serving sixteen agents sends them.
INSERT INTO backstop.agent_logins (login, agent)
SELECT 'profile-gateway', 'profile-agent-' || g FROM generate_series(0, 15) g;
SQL
psql -q "$URL" -c "SET client_min_messages = warning" -f - <<'SQL' >/dev/null
CREATE SCHEMA bench_floor;
CREATE SEQUENCE bench_floor.action_log_seq;
CREATE TABLE bench_floor.action_log (LIKE backstop.action_log INCLUDING ALL) PARTITION BY RANGE (at);
CREATE TABLE bench_floor.action_log_now PARTITION OF bench_floor.action_log
    FOR VALUES FROM (now() - interval '1 day') TO (now() + interval '30 days');
CREATE TABLE bench_floor.action_log_default PARTITION OF bench_floor.action_log DEFAULT;
CREATE TABLE bench_floor.actions (LIKE backstop.actions INCLUDING ALL);
CREATE TABLE bench_floor.agent_value_minutes (LIKE backstop.agent_value_minutes INCLUDING ALL);
SELECT format('ALTER TABLE bench_floor.%I SET (%s)', c.relname, array_to_string(c.reloptions, ', '))
  FROM pg_class c WHERE c.relnamespace = 'backstop'::regnamespace
   AND c.relname IN ('actions', 'agent_value_minutes') AND c.reloptions IS NOT NULL
UNION ALL
SELECT replace(pg_get_triggerdef(t.oid), ' ON backstop.', ' ON bench_floor.')
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'backstop'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
   AND c.relname IN ('action_log', 'actions', 'agent_value_minutes') \gexec
GRANT USAGE ON SCHEMA bench_floor TO "profile-agent";
GRANT ALL ON ALL TABLES IN SCHEMA bench_floor TO "profile-agent";
GRANT ALL ON ALL SEQUENCES IN SCHEMA bench_floor TO "profile-agent";
SQL
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" stop -m fast >/dev/null

# The statements, prepared once; $1 numbers the action.
python3 - "$WORK" "$N" "$NB" "$B" <<'PY'
import sys
work, n, nb, B = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
params = ("jsonb_build_object('customer_id', 'cust-' || $1, 'amount', 40 + $1 % 60, 'order_id', 'ord-' || $1, "
          "'reason', repeat('damaged ', 25))")
result = "jsonb_build_object('refund_id', 'rf-' || $1, 'status', 'issued', 'processor', 'stripe', 'note', repeat('ok ', 43))"
gateway = [
    f"PREPARE p(int) AS SELECT action_id FROM backstop.propose('profile-agent', 'issue_refund', {params}, NULL, 0.93, "
    "repeat('reasoning ', 50), NULL, 'ticket-' || $1)",
    "PREPARE r(int) AS SELECT * FROM backstop.record_result((SELECT a.action_id FROM backstop.actions a "
    f"WHERE a.correlation_id = 'ticket-' || $1), true, {result})",
]
cols = ("(seq, at, txid, kind, actor, agent, tool, action_id, detail, correlation_id, parent_action, amount, confidence, "
        "reasoning, inputs, params, result, policy_version, registry_version)")
floor = [
    "PREPARE p(int) AS WITH l AS (INSERT INTO bench_floor.action_log AS l " + cols +
    " VALUES (nextval('bench_floor.action_log_seq'), clock_timestamp(), pg_current_xact_id(), 'allowed', 'profile-agent', "
    "'profile-agent', 'issue_refund', ('00000000-0000-4000-8000-' || lpad($1::text, 12, '0'))::uuid, "
    "jsonb_build_object('verdict', 'allow', 'reason', 'allowed by policy', 'class', 'reversible', 'cost_to_reverse', 2.5, "
    "'entity', 'cust-' || $1, 'amount_from', 'params.amount'), 'ticket-' || $1, NULL, 40 + $1 % 60, 0.93, "
    f"repeat('reasoning ', 50), NULL, {params}, NULL, 1, 1) RETURNING l.seq, l.at), "
    "a AS (INSERT INTO bench_floor.actions (action_id, agent, tool, class, amount, confidence, cost_to_reverse, correlation_id, "
    "parent_action, idempotency_key, entity, verdict, reason, rule, status, approvals_needed, approvals, expires_at, "
    "expiry_effect, proposed_seq, proposed_at, decided_seq, executed_seq, executed_at, inverse_tool, inverse_params, "
    "inverse_missing, comp_deadline, comp_condition, policy_version, registry_version, updated_seq, bound_params) "
    "SELECT ('00000000-0000-4000-8000-' || lpad($1::text, 12, '0'))::uuid, 'profile-agent', 'issue_refund', 'reversible', "
    "40 + $1 % 60, 0.93, 2.5, 'ticket-' || $1, NULL, NULL, 'cust-' || $1, 'allow', 'allowed by policy', NULL, 'allowed', "
    "0, 0, NULL, NULL, l.seq, l.at, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 1, l.seq, "
    "jsonb_build_object('customer_id', 'cust-' || $1, 'amount', 40 + $1 % 60) FROM l) "
    "INSERT INTO bench_floor.agent_value_minutes AS m (agent, minute, total) "
    "VALUES ('profile-agent', date_trunc('minute', now()), 40 + $1 % 60) "
    "ON CONFLICT (agent, minute) DO UPDATE SET total = m.total + excluded.total",
    "PREPARE r(int) AS WITH l AS (INSERT INTO bench_floor.action_log AS l " + cols +
    " VALUES (nextval('bench_floor.action_log_seq'), clock_timestamp(), pg_current_xact_id(), 'executed', 'profile-agent', "
    "'profile-agent', 'issue_refund', ('00000000-0000-4000-8000-' || lpad($1::text, 12, '0'))::uuid, "
    "jsonb_build_object('compensation', jsonb_build_object('inverse_tool', 'reverse_refund', 'inverse_params', "
    "jsonb_build_object('refund_id', 'rf-' || $1))), 'ticket-' || $1, NULL, 40 + $1 % 60, NULL, NULL, NULL, NULL, "
    f"{result}, 1, 1) RETURNING l.seq, l.at) "
    "UPDATE bench_floor.actions x SET status = 'executed', executed_seq = l.seq, executed_at = l.at, "
    "inverse_tool = 'reverse_refund', inverse_params = jsonb_build_object('refund_id', 'rf-' || $1), inverse_missing = NULL, "
    "comp_deadline = l.at + interval '30 days', comp_condition = NULL, updated_seq = l.seq "
    "FROM l WHERE x.action_id = ('00000000-0000-4000-8000-' || lpad($1::text, 12, '0'))::uuid",
]
# The batching gateway's calls: B proposals in one propose_batch, then their
# B results in one record_results, each call its own transaction; $1 numbers
# the batch's first action.
req = ("jsonb_build_object('agent', 'profile-agent-' || g % 16, 'tool', 'issue_refund', 'params', "
       + params.replace("$1", "g") + ", 'confidence', 0.93, 'reasoning', repeat('reasoning ', 50), "
       "'correlation_id', 'ticket-' || g)")
res = ("jsonb_build_object('action_id', (SELECT a.action_id FROM backstop.actions a WHERE a.correlation_id = 'ticket-' || g), "
       "'ok', true, 'result', " + result.replace("$1", "g") + ")")
# The series has constant bounds: with $1 in them, each EXECUTE was planned
# anew (a generic plan's series is estimated at 1,000 rows, a custom one's
# at B, so the plan cache kept choosing custom plans), half a million
# instructions a call that a gateway, sending one parameter, never pays.
batched = [
    f"PREPARE p(int) AS SELECT count(*) FROM backstop.propose_batch((SELECT jsonb_agg({req} ORDER BY g) "
    f"FROM generate_series(0, {B - 1}) k, LATERAL (SELECT $1 + k AS g) s))",
    f"PREPARE r(int) AS SELECT count(*) FROM backstop.record_results((SELECT jsonb_agg({res} ORDER BY g) "
    f"FROM generate_series(0, {B - 1}) k, LATERAL (SELECT $1 + k AS g) s))",
]
for name, prep, step, n in (("gateway", gateway, 1, n), ("floor", floor, 1, n), ("batched", batched, B, nb)):
    for runs in (n, 3 * n):
        login = "profile-gateway" if name == "batched" else "profile-agent"
        lines = [f'SET SESSION AUTHORIZATION "{login}";'] + [p + ";" for p in prep]
        # Each size in its own id range, so no run meets another's rows (the
        # batched runs write the gateway's tables too: a range of their own).
        start = 1 + (runs // n) * 10 * n + (100 * n if name == "batched" else 0)
        for i in range(start, start + runs, step):
            lines += [f"EXECUTE p({i});", f"EXECUTE r({i});"]
        open(f"{work}/{name}.{runs}.sql", "w").write("\n".join(lines) + "\n")
PY

count() {  # $1 = name, $2 = runs: total instructions (or CPU microseconds) of a single-user backend running them
    if [[ -n ${CPU_TIME:-} ]]; then
        local TIMEFORMAT='%3U %3S' t
        t=$( { time as_pg "$PGBIN/postgres" --single -D "$WORK/data" -c log_min_messages=fatal -c fsync=off \
            -c synchronous_commit=off profile <"$WORK/$1.$2.sql" >"$WORK/out.$1.$2" 2>&1; } 2>&1)
        if grep -q ERROR "$WORK/out.$1.$2"; then
            grep -m3 ERROR "$WORK/out.$1.$2" >&2
            exit 1
        fi
        awk -v t="$t" 'BEGIN { split(t, a, " "); printf "%d\n", (a[1] + a[2]) * 1000000 }'
        return
    fi
    as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$1.$2" -q "$PGBIN/postgres" --single \
        -D "$WORK/data" -c log_min_messages=fatal profile <"$WORK/$1.$2.sql" >"$WORK/out.$1.$2" 2>&1
    if grep -q ERROR "$WORK/out.$1.$2"; then
        grep -m3 ERROR "$WORK/out.$1.$2" >&2
        exit 1
    fi
    grep -m1 '^summary' "$WORK/cg.$1.$2" | cut -d' ' -f2
}
declare -A per
for name in gateway floor batched; do
    n=$N
    [[ $name == batched ]] && n=$NB
    echo "==> $name: $n and $((3 * n)) actions ${CPU_TIME:+timed}${CPU_TIME:-under callgrind}" >&2
    a=$(count "$name" "$n")
    b=$(count "$name" $((3 * n)))
    per[$name]=$(((b - a) / (2 * n)))
done
awk -v g="${per[gateway]}" -v f="${per[floor]}" -v b="${per[batched]}" -v B="$B" -v u="${CPU_TIME:+CPU microseconds}" \
    'BEGIN { printf "%s per action: gateway %d, floor %d (gateway / floor %.3f; floor / gateway %.2f); batched by %d: %d (%.3f of the floor'"'"'s; floor / batched %.2f)\n", u ? u : "instructions", g, f, g / f, f / g, B, b, b / f, f / b }'
# CI's guard: instruction counts barely move between runs, so a small
# tolerance holds (MAX_OVER_FLOOR is the recorded gateway / floor plus 10%).
if [[ -n ${MAX_BATCHED_OVER_FLOOR:-} ]]; then
    awk -v b="${per[batched]}" -v f="${per[floor]}" -v m="$MAX_BATCHED_OVER_FLOOR" 'BEGIN {
        if (b / f > m) { printf "FAIL: a batched action costs %.3f times the floor in instructions, above the allowed %s\n", b / f, m; exit 1 }
        printf "ok: batched / floor %.3f is within %s\n", b / f, m }'
fi
if [[ -n ${MAX_OVER_FLOOR:-} ]]; then
    awk -v g="${per[gateway]}" -v f="${per[floor]}" -v m="$MAX_OVER_FLOOR" 'BEGIN {
        if (g / f > m) { printf "FAIL: the gateway costs %.3f times the floor in instructions, above the allowed %s\n", g / f, m; exit 1 }
        printf "ok: gateway / floor %.3f is within %s\n", g / f, m }'
fi
