"""An agent's MCP client (Python `mcp` SDK 2.x) calling tools through a gateway.

    python3 agent_client.py CALLS_JSON -- GATEWAY_CMD ARGS...

CALLS_JSON is a list of {"tool": ..., "arguments": {...}}. The tools the
gateway lists go to stdout first as {"tools": [...]}, then one JSON line
per call: {"tool", "is_error", "text", "structured", "progress"}, where
progress counts the progress notifications the call received.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters


async def main(calls: list[dict[str, Any]], cmd: list[str]) -> None:
    # The gateway needs DATABASE_URL and the server LEDGER: pass our environment on.
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))
    async with Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
        for call in calls:
            progress: list[Any] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                progress.append(message)

            r = await client.call_tool(call["tool"], call.get("arguments", {}), progress_callback=on_progress)
            text = "\n".join(getattr(c, "text", "") for c in r.content)
            print(json.dumps({"tool": call["tool"], "is_error": bool(r.is_error), "text": text,
                              "structured": r.structured_content, "progress": len(progress)}), flush=True)


if __name__ == "__main__":
    sep = sys.argv.index("--")
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[sep + 1:]))
