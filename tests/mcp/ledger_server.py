"""A small MCP server for the gateway's tests (Python `mcp` SDK 2.x, stdio).

A refund and its inverse (which honours the idempotency key in the call's
_meta) over a tiny ledger, plus a read and a tool the
registry does not know. The ledger lives in the JSON file $LEDGER (so the
test can read what happened, and every server started on it shares it);
every call is also appended to $LEDGER.calls, one JSON line each, with the
call's _meta, so a test can count what the server was asked to do.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

LEDGER = os.environ["LEDGER"]
# Where Backstop's mcp executor puts the action id (src/compensation/mcp.rs).
IDEMPOTENCY_META = "io.backstop/idempotency-key"
server = MCPServer("ledger")


def load() -> dict[str, Any]:
    try:
        with open(LEDGER) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"refunds": {}, "balances": {}}


def save(ledger: dict[str, Any]) -> None:
    tmp = LEDGER + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ledger, f)
    os.replace(tmp, LEDGER)


def note(tool: str, args: dict[str, Any]) -> None:
    with open(LEDGER + ".calls", "a") as f:
        f.write(json.dumps({"tool": tool, "args": args}) + "\n")


@server.tool(annotations=ToolAnnotations(destructive_hint=False, read_only_hint=False))
def issue_refund(customer_id: str, amount: float, order_id: str = "", reason: str = "") -> dict[str, Any]:
    """Refund money to a customer."""
    note("issue_refund", {"customer_id": customer_id, "amount": amount})
    if amount <= 0:
        raise ValueError("amount must be positive")
    ledger = load()
    refund_id = "rf-" + uuid.uuid4().hex[:8]
    ledger["refunds"][refund_id] = {"customer_id": customer_id, "amount": amount, "status": "issued"}
    ledger["balances"][customer_id] = ledger["balances"].get(customer_id, 0) + amount
    save(ledger)
    return {"refund_id": refund_id, "status": "issued"}


def idempotency_key(ctx: Context) -> str | None:
    meta = ctx.request_context.meta
    if meta is None:
        return None
    fields = meta if isinstance(meta, dict) else meta.model_dump(by_alias=True)
    key = fields.get(IDEMPOTENCY_META)
    return None if key is None else str(key)


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def reverse_refund(refund_id: str, customer_id: str, amount: float, ctx: Context) -> dict[str, Any]:
    """Take back a refund the customer has not withdrawn (once per idempotency key)."""
    key = idempotency_key(ctx)
    note("reverse_refund", {"refund_id": refund_id, "key": key})
    ledger = load()
    done = ledger.setdefault("keys", {})
    if key is not None and key in done:
        return done[key]  # a repeat: the first answer, nothing done again
    r = ledger["refunds"].get(refund_id)
    if r is None:
        raise ToolError(f"no refund {refund_id}")
    if r["status"] == "withdrawn":
        raise ToolError(f"condition failed: refund {refund_id} was withdrawn by the customer")
    if r["status"] != "issued":
        raise ToolError(f"conflict: refund {refund_id} is {r['status']}")
    r["status"] = "reversed"
    ledger["balances"][customer_id] = ledger["balances"].get(customer_id, 0) - amount
    answer = {"refund_id": refund_id, "status": "reversed"}
    if key is not None:
        done[key] = answer
    save(ledger)
    return answer


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def get_balance(customer_id: str) -> dict[str, Any]:
    """A customer's refunded balance."""
    return {"customer_id": customer_id, "balance": load()["balances"].get(customer_id, 0)}


@server.tool()
def delete_customer(customer_id: str) -> str:
    """Not in any registry: the gateway must never let it through."""
    note("delete_customer", {"customer_id": customer_id})
    return "deleted"


if __name__ == "__main__":
    server.run("stdio")
