"""A small MCP server for the gateway's tests (Python `mcp` SDK 2.x, stdio).

A refund and its inverse over a tiny ledger, plus a read and a tool the
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

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

LEDGER = os.environ["LEDGER"]
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


class RefundResult(dict):  # type: ignore[type-arg]
    pass


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


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def reverse_refund(refund_id: str, customer_id: str, amount: float) -> dict[str, Any]:
    """Take back a refund the customer has not withdrawn."""
    note("reverse_refund", {"refund_id": refund_id})
    ledger = load()
    r = ledger["refunds"].get(refund_id)
    if r is None:
        raise ValueError(f"no refund {refund_id}")
    if r["status"] == "reversed":
        return {"refund_id": refund_id, "status": "reversed", "already": True}
    r["status"] = "reversed"
    ledger["balances"][customer_id] = ledger["balances"].get(customer_id, 0) - amount
    save(ledger)
    return {"refund_id": refund_id, "status": "reversed"}


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
