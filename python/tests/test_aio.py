"""The asyncio client against a real Backstop database (see conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import backstop
from conftest import AGENT, AIO_HELD_AGENT, URL, Approvers, log_kinds, one, refund_tool


async def aconnect() -> psycopg.AsyncConnection[Any]:
    assert URL
    return await psycopg.AsyncConnection.connect(URL, user=AGENT, autocommit=True)


def test_async_held_refund_waits_for_two_approvers(admin: Any) -> None:
    refund = refund_tool(admin, AIO_HELD_AGENT)
    params = {"customer_id": "c-aio-1", "amount": 11000}
    approvers = Approvers(AIO_HELD_AGENT)
    approvers.start()

    async def main() -> Any:
        async with await aconnect() as conn:
            async with backstop.aio.action(conn, "issue_refund", params, agent=AIO_HELD_AGENT, poll=600) as act:
                assert act.proposed == "hold"
                await act.record(refund(**params))
            return act

    act = asyncio.run(main())
    approvers.done()
    assert (act.status, act.compensation) == ("executed", "staged")
    assert log_kinds(admin, act.action_id) == ["held", "approved", "approved", "executed"]


def test_async_guarded_blocks_failures_and_errors(admin: Any) -> None:
    admin.execute("INSERT INTO crm.suppression_list (customer_id, reason) VALUES ('c-aio-9', 'fraud review')")

    async def main() -> None:
        async with await aconnect() as conn:

            @backstop.aio.guarded("issue_refund")
            async def issue_refund(c: Any, customer_id: str, amount: int) -> Any:
                if amount == 13:
                    raise ValueError("unlucky amount")
                return refund_tool(admin, AGENT)(customer_id=customer_id, amount=amount)

            out = await issue_refund(conn, "c-aio-2", 10)
            assert out["refund_id"]
            with pytest.raises(backstop.AlreadyDone):
                await issue_refund(conn, "c-aio-2", 10)
            with pytest.raises(backstop.Blocked, match="c-aio-9 is churned or suppressed"):
                await issue_refund(conn, "c-aio-9", 10)
            with pytest.raises(ValueError):
                await issue_refund(conn, "c-aio-3", 13)
            with pytest.raises(backstop.BadInput) as e:
                await issue_refund(conn, "c-aio-4", -1)
            assert e.value.message.startswith("propose: params.amount")

    asyncio.run(main())
    kinds = {
        entity: log_kinds(admin, one(admin, "SELECT action_id FROM backstop.actions WHERE entity = %s", entity))
        for entity in ("c-aio-2", "c-aio-9", "c-aio-3")
    }
    assert kinds == {"c-aio-2": ["allowed", "executed"], "c-aio-9": ["blocked"], "c-aio-3": ["allowed", "failed"]}
