#!/usr/bin/env python3
"""An agent outside Rust, acting through Backstop with the Python client.

    pip install ./python          # the `backstop` package: psycopg 3.2+

Everything Backstop guarantees is enforced by functions in the database; the
client (python/) is a thin layer over them:

    with backstop.action(conn, tool, params, ...) as act:   # propose; a hold waits
        act.record(run_the_tool())                          # record_result

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
import json
import os
import sys
from decimal import Decimal, InvalidOperation

try:
    import psycopg
    from psycopg import sql
    from psycopg.types.json import Jsonb

    import backstop
except ImportError as e:
    sys.exit(f"agent.py: {e}: python3 -m pip install ./python")

EXIT_OK, EXIT_ERROR, EXIT_BLOCKED, EXIT_STILL_HELD, EXIT_TOOL_FAILED = 0, 1, 3, 4, 5

# The business systems behind each tool. In the demo they are SQL functions in
# the same database (src/demo/systems.sql), taking (params jsonb, actor text);
# in production this is where the payment provider's or the CRM's client goes.
# The tool names are the registry's (assets/tools.toml).
TOOLS = {
    "issue_refund": "payments.issue_refund",
    "update_customer_field": "crm.update_customer_field",
}


class ToolFailed(Exception):
    """The business operation failed (as opposed to a call to Backstop)."""


def log(msg):
    print(f"agent.py: {msg}", file=sys.stderr, flush=True)


def call_tool(conn, tool, params, agent):
    fn = sql.Identifier(*TOOLS[tool].split("."))
    try:
        return conn.execute(sql.SQL("SELECT {}(%s, %s)").format(fn), (Jsonb(params), agent)).fetchone()[0]
    except psycopg.Error as e:
        raise ToolFailed(e.diag.message_primary or str(e)) from e


def run(args, out):
    """One action from proposal to result; fills `out` (the JSON line) and returns the exit status."""
    tool, params = args.tool_and_params(args)
    out.update(agent=args.agent, tool=tool)
    # autocommit: a proposal must be visible to approvers while we wait.
    with psycopg.connect(args.db, autocommit=True, application_name=f"backstop example agent {args.agent}") as conn:
        act = backstop.action(conn, tool, params, agent=args.agent, confidence=args.confidence,
                              reasoning=args.reasoning, correlation_id=args.correlation_id,
                              timeout=args.wait, poll=args.poll)
        try:
            with act:
                out.update(action_id=str(act.action_id), proposed=act.proposed, verdict="allow", reason=act.reason)
                log(f"{tool} {json.dumps(params)}: allowed ({act.reason})")
                # The demo's systems live in the same database, so the tool's
                # writes and their record commit together.
                with conn.transaction():
                    act.record(call_tool(conn, tool, params, args.agent))
        except backstop.NotAllowed as e:
            held = isinstance(e, backstop.StillHeld)
            out.update(action_id=e.action_id and str(e.action_id), proposed=e.proposed,
                       verdict="hold" if held else "block", reason=e.reason,
                       status="held" if held else "blocked")
            log(f"{out['status']}: {e.reason}")
            return EXIT_STILL_HELD if held else EXIT_BLOCKED
        except ToolFailed:
            # Rolled back, and recorded as failed by the client: nothing to undo.
            pass
        out.update(status=act.status, compensation=act.compensation, result=act.result)
        log(f"{act.status}: {json.dumps(act.result)}; compensation {act.compensation}")
        return EXIT_OK if act.status == "executed" else EXIT_TOOL_FAILED


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
    except (backstop.BackstopError, psycopg.Error) as e:
        # A contract error names the function and the argument, typed by its
        # SQLSTATE (BadInput 22023, UnknownAction P0002, RefusedStateChange
        # 55000, PermissionDenied 42501). A connection failure has none.
        sqlstate = getattr(e, "sqlstate", None)
        message = e.message if isinstance(e, backstop.BackstopError) else str(e).strip()
        log(f"error: SQLSTATE {sqlstate or 'none'}: {message}")
        out.update(status="error", sqlstate=sqlstate, error=message)
        code = EXIT_ERROR
    print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
