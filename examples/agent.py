#!/usr/bin/env python3
"""An agent outside Rust, acting through Backstop's SQL contract (psycopg 3.2+).

Everything Backstop guarantees is enforced by functions in the database, so
this file is the whole integration: an agent in any language with a Postgres
driver lives the same life.

    propose()        ->  allow | hold | block
    hold             ->  LISTEN, then ask decision() until it says allow or block
    allow            ->  run the tool, then record_result() with what it returned

Usage (the database comes from --db, else DATABASE_URL):

    python3 examples/agent.py --agent py-refunds refund --customer c-1001 \\
        --amount 120 --confidence 0.93 --reasoning "order arrived damaged"
    python3 examples/agent.py --agent py-crm update-field --customer c-1001 \\
        --field email --value new@example.com --reasoning "customer asked"

Progress goes to stderr. stdout gets exactly one JSON line, for scripts:

    {"action_id": "...", "proposed": "hold", "verdict": "allow",
     "status": "executed", "reason": "...", "result": {...}, "compensation": "staged"}

Exit status: 0 executed; 1 error (the SQLSTATE and message are on stderr and
in the JSON); 2 bad usage (argparse's message, no JSON); 3 blocked (by
policy, a pause, a rejection or expiry); 4 still held when --wait ran out;
5 the tool itself failed (and that failure is recorded).
"""

import argparse
import hashlib
import json
import os
import sys
import time
from decimal import Decimal, InvalidOperation

try:
    import psycopg
    from psycopg import sql
    from psycopg.types.json import Jsonb
except ImportError:
    sys.exit('agent.py: needs psycopg 3: python3 -m pip install "psycopg[binary]"')

# Connection.notifies(timeout=...) arrived in psycopg 3.2; without a timeout
# the agent could not also re-check on a clock (see wait_for_decision).
if tuple(int(p) for p in psycopg.__version__.split(".")[:2]) < (3, 2):
    sys.exit(f'agent.py: needs psycopg 3.2 or later (this is {psycopg.__version__}): '
             'python3 -m pip install -U "psycopg[binary]"')

EXIT_OK, EXIT_ERROR, EXIT_BLOCKED, EXIT_STILL_HELD, EXIT_TOOL_FAILED = 0, 1, 3, 4, 5

# The business systems behind each tool. In the demo they are SQL functions in
# the same database (src/demo/systems.sql), taking (params jsonb, actor text)
# and returning the result as jsonb; in production this is where the payment
# provider's or the CRM's client goes. The tool names are the registry's
# (assets/tools.toml): Backstop knows each tool's class and inverse by name.
TOOLS = {
    "issue_refund": "payments.issue_refund",
    "update_customer_field": "crm.update_customer_field",
}


class ToolFailed(Exception):
    """The business operation failed (as opposed to a call to Backstop)."""


def log(msg):
    print(f"agent.py: {msg}", file=sys.stderr, flush=True)


def propose(conn, agent, tool, params, confidence, reasoning, correlation_id):
    # Named arguments: propose() has ten parameters, most optional. The value
    # at stake is not passed separately: the registry names the parameter that
    # carries it (issue_refund's `value = "amount"`), and propose reads it from
    # params, so the policy sees exactly what the tool will be asked to do.
    # confidence is cast because Python floats travel as double precision and
    # the parameter is real (there is no implicit cast between them).
    row = conn.execute(
        """SELECT action_id, verdict, reason FROM backstop.propose(
               agent => %s, tool => %s, params => %s,
               confidence => %s::real, reasoning => %s, correlation_id => %s)""",
        (agent, tool, Jsonb(params), confidence, reasoning, correlation_id),
    ).fetchone()
    return row[0], row[1], row[2]


def decision(conn, action_id):
    verdict, reason = conn.execute(
        "SELECT verdict, reason FROM backstop.decision(%s)", (action_id,)
    ).fetchone()
    return verdict, reason


def wait_for_decision(conn, action_id, wait_seconds, poll_seconds):
    """Wait until a held action is decided; return (verdict, reason).

    Approvals, rejections and expiries NOTIFY `backstop_decisions` with the
    action's decision key (the hex sha256 of its id: any login may LISTEN, so
    the payload names the action only to whoever knows its id); a resumed pause NOTIFYs `backstop_control`. LISTEN comes first
    and the look second: a decision made in between is seen by the look, one
    made after it wakes us. A wake-up is only a hint (the first of two
    approvals wakes us too): decision() is the answer. We also ask every
    poll_seconds without a hint, because a hold that expires by the clock
    sends none, and a notification is lost if the connection drops.
    """
    conn.execute("LISTEN backstop_decisions")
    conn.execute("LISTEN backstop_control")
    key = hashlib.sha256(str(action_id).encode()).hexdigest()
    deadline = time.monotonic() + wait_seconds
    last_reason = None
    while True:
        verdict, reason = decision(conn, action_id)
        if verdict != "hold":
            return verdict, reason
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return verdict, reason
        if reason != last_reason:
            log(f"held: {reason}; waiting up to {remaining:.0f} s")
            last_reason = reason
        for n in conn.notifies(timeout=min(remaining, poll_seconds)):
            if n.channel == "backstop_control" or n.payload == key:
                break


def call_tool(conn, tool, params, agent):
    fn = sql.Identifier(*TOOLS[tool].split("."))
    try:
        return conn.execute(sql.SQL("SELECT {}(%s, %s)").format(fn), (Jsonb(params), agent)).fetchone()[0]
    except psycopg.Error as e:
        raise ToolFailed(e.diag.message_primary or str(e)) from e


def record_result(conn, action_id, ok, result):
    # The registry binds the inverse's parameters from this call's params and
    # from `result` (issue_refund's inverse needs result.refund_id), so the
    # result must carry what the tool returned. A fourth argument,
    # inverse_params, is only for values the registry cannot bind; it wins.
    status, compensation = conn.execute(
        "SELECT status, compensation FROM backstop.record_result(%s, %s, %s)",
        (action_id, ok, Jsonb(result)),
    ).fetchone()
    return status, compensation


def execute_and_record(conn, action_id, tool, params, agent):
    """Run the tool and tell Backstop what happened; return (status, compensation, result).

    The demo's business systems live in the same database, so the tool's
    writes and their record commit together: neither can happen without the
    other. With an external API they cannot: call it, then record_result (a
    repeat of the same report is answered as before, so a retry is safe).
    """
    try:
        with conn.transaction():
            result = call_tool(conn, tool, params, agent)
            status, compensation = record_result(conn, action_id, True, result)
        return status, compensation, result
    except ToolFailed as e:
        # The tool's writes were rolled back. Record the failure anyway: the
        # log must say the allowed action did not happen, and nothing is
        # staged to undo.
        result = {"error": str(e)}
        status, compensation = record_result(conn, action_id, False, result)
        return status, compensation, result


def run(args, out):
    """One action from proposal to result; fills `out` (the JSON line) and returns the exit status."""
    tool, params = args.tool_and_params(args)
    out.update(agent=args.agent, tool=tool)
    # autocommit: each contract call commits at once. A proposal must be
    # visible to approvers while we wait, and LISTEN only takes effect when
    # its transaction commits.
    with psycopg.connect(args.db, autocommit=True, application_name=f"backstop example agent {args.agent}") as conn:
        action_id, verdict, reason = propose(conn, args.agent, tool, params,
                                             args.confidence, args.reasoning, args.correlation_id)
        out.update(action_id=str(action_id), proposed=verdict, verdict=verdict, reason=reason)
        log(f"proposed {tool} {json.dumps(params)}: {verdict} ({reason})")

        if verdict == "hold":
            verdict, reason = wait_for_decision(conn, action_id, args.wait, args.poll)
            out.update(verdict=verdict, reason=reason)
        if verdict == "hold":
            log(f"still held after {args.wait:g} s; giving up (the action stays in the queue)")
            out["status"] = "held"
            return EXIT_STILL_HELD
        if verdict == "block":
            log(f"blocked: {reason}")
            out["status"] = "blocked"
            return EXIT_BLOCKED

        # allow: the only verdict that lets the tool run.
        status, compensation, result = execute_and_record(conn, action_id, tool, params, args.agent)
        out.update(status=status, compensation=compensation, result=result)
        log(f"{status}: {json.dumps(result)}; compensation {compensation}")
        return EXIT_OK if status == "executed" else EXIT_TOOL_FAILED


def amount(text):
    # Money as Decimal, never float, until the JSON encoding below.
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def json_number(d):
    # params are JSON; an integral amount goes as an integer, any other as the
    # shortest float that reads back as the same decimal (120.55 stays 120.55).
    return int(d) if d == d.to_integral_value() else float(d)


def refund_params(args):
    params = {"customer_id": args.customer, "amount": json_number(args.amount)}
    if args.order:
        params["order_id"] = args.order
    if args.reason:
        params["reason"] = args.reason
    return "issue_refund", params


def update_field_params(args):
    return "update_customer_field", {"customer_id": args.customer, "field": args.field, "value": args.value}


def parse_args(argv):
    p = argparse.ArgumentParser(description="An example agent acting through Backstop's SQL contract.")
    p.add_argument("--db", default=os.environ.get("DATABASE_URL"),
                   help="PostgreSQL connection string (default: $DATABASE_URL)")
    p.add_argument("--agent", required=True, help="this agent's name, as the log and the policy know it")

    # Options of every proposal, accepted after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--confidence", type=float, help="the model's confidence, 0 to 1")
    common.add_argument("--reasoning", help="why the agent wants this (kept in the log, shown to approvers)")
    common.add_argument("--correlation-id", help="the business event this belongs to, e.g. a ticket id")
    common.add_argument("--wait", type=float, default=3600,
                        help="seconds to wait for a held action's decision (default 3600)")
    common.add_argument("--poll", type=float, default=10,
                        help="ask for the decision at least this often, in seconds, even without a notification")

    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("refund", parents=[common], help="issue_refund: refund money to a customer")
    r.add_argument("--customer", required=True)
    r.add_argument("--amount", required=True, type=amount)
    r.add_argument("--order")
    r.add_argument("--reason")
    r.set_defaults(tool_and_params=refund_params)
    u = sub.add_parser("update-field", parents=[common], help="update_customer_field: change one customer field")
    u.add_argument("--customer", required=True)
    u.add_argument("--field", required=True, help="email, phone, tier, status or name")
    u.add_argument("--value", required=True)
    u.set_defaults(tool_and_params=update_field_params)

    args = p.parse_args(argv)
    if not args.db:
        p.error("no database: pass --db or set DATABASE_URL")
    return args


def main(argv):
    args = parse_args(argv)
    out = {"action_id": None, "proposed": None, "verdict": None, "status": None}
    try:
        code = run(args, out)
    except psycopg.Error as e:
        # A contract error names the function and the argument, with a
        # SQLSTATE to branch on: 22023 bad input, P0002 unknown id, 55000 a
        # refused state change. A connection failure has no SQLSTATE.
        message = (e.diag.message_primary if e.diag else None) or str(e).strip()
        log(f"error: SQLSTATE {e.sqlstate or 'none'}: {message}")
        out.update(status="error", sqlstate=e.sqlstate, error=message)
        code = EXIT_ERROR
    print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
