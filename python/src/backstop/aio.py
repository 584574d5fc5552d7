"""The client on an asyncio psycopg connection: the same API, awaited.

    async with backstop.aio.action(aconn, "issue_refund", params) as act:
        await act.record(await refund(...))
"""

from __future__ import annotations

import functools
import time
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union, cast
from uuid import UUID

import psycopg

from ._common import (
    AUTO,
    CONTROL,
    DECISION,
    DECISIONS,
    PROPOSE,
    RECORD,
    Proposal,
    StillHeld,
    as_result,
    bind_params,
    blocked,
    check_autocommit,
    decision_key,
    failure,
    first_param,
    jsonb,
    make_proposal,
    translate,
)

__all__ = ["AsyncAction", "action", "decision", "guarded", "propose", "record_result", "wait_for_decision"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


async def _one(conn: psycopg.AsyncConnection[Any], query: str, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
    try:
        cur = await conn.execute(query, args)
        row = await cur.fetchone()
    except psycopg.Error as e:
        raise translate(e) from e
    assert row is not None  # each of these functions returns one row
    return tuple(row)


async def propose(conn: psycopg.AsyncConnection[Any], p: Proposal) -> Tuple[UUID, str, str]:
    action_id, verdict, reason = await _one(conn, PROPOSE, p.args())
    return action_id, verdict, reason


async def decision(conn: psycopg.AsyncConnection[Any], action_id: UUID) -> Tuple[str, str]:
    verdict, reason = await _one(conn, DECISION, (str(action_id),))
    return verdict, reason


async def record_result(
    conn: psycopg.AsyncConnection[Any],
    action_id: UUID,
    ok: bool,
    result: Optional[Mapping[str, Any]] = None,
    inverse_params: Optional[Mapping[str, Any]] = None,
) -> Tuple[str, str]:
    status, compensation = await _one(conn, RECORD, (str(action_id), ok, jsonb(result), jsonb(inverse_params)))
    return status, compensation


async def wait_for_decision(
    conn: psycopg.AsyncConnection[Any], action_id: UUID, timeout: Optional[float], poll: float = 10.0
) -> Tuple[str, str]:
    """As backstop.wait_for_decision: LISTEN, then look; a wake-up is a hint, decision() the answer."""
    try:
        await conn.execute(f"LISTEN {DECISIONS}")
        await conn.execute(f"LISTEN {CONTROL}")
    except psycopg.Error as e:
        raise translate(e) from e
    key = decision_key(action_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            verdict, reason = await decision(conn, action_id)
            if verdict != "hold":
                return verdict, reason
            wait = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return verdict, reason
                wait = min(wait, remaining)
            async for n in conn.notifies(timeout=wait):
                if n.channel == CONTROL or n.payload == key:
                    break
    finally:
        if not conn.closed:
            try:
                await conn.execute(f"UNLISTEN {DECISIONS}")
                await conn.execute(f"UNLISTEN {CONTROL}")
            except psycopg.Error:
                pass


class AsyncAction:
    """One proposed action; `async with backstop.aio.action(...) as act` gives it once allowed."""

    action_id: UUID
    proposed: str
    reason: str
    status: Optional[str]
    compensation: Optional[str]

    def __init__(
        self, conn: psycopg.AsyncConnection[Any], proposal: Proposal, timeout: Optional[float], poll: float
    ) -> None:
        self._conn = conn
        self.proposal = proposal
        self._timeout = timeout
        self._poll = poll
        self.status = None
        self.compensation = None
        self.result: Optional[Dict[str, Any]] = None

    @property
    def recorded(self) -> bool:
        return self.status is not None

    async def __aenter__(self) -> "AsyncAction":
        check_autocommit(self._conn)
        self.action_id, verdict, reason = await propose(self._conn, self.proposal)
        self.proposed = verdict
        if verdict == "hold":
            verdict, reason = await wait_for_decision(self._conn, self.action_id, self._timeout, self._poll)
            if verdict == "hold":
                raise StillHeld(reason, self.action_id, self.proposed)
        if verdict != "allow":
            raise blocked(reason, self.action_id, self.proposed)
        self.reason = reason
        return self

    async def record(
        self,
        result: Any = None,
        ok: bool = True,
        inverse_params: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[str, str]:
        """Record what the tool did; returns (status, compensation)."""
        self.result = as_result(result)
        self.status, self.compensation = await record_result(
            self._conn, self.action_id, ok, self.result, inverse_params
        )
        return self.status, self.compensation

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.recorded:
            return None
        if exc is None:
            await self.record(None)
        elif isinstance(exc, Exception):
            try:
                await self.record(failure(exc), ok=False)
            except Exception as e:
                note = getattr(exc, "add_note", None)  # Python 3.11+
                if note is not None:
                    note(f"backstop: recording the failure also failed: {e}")
        return None


def action(
    conn: psycopg.AsyncConnection[Any],
    tool: str,
    params: Optional[Mapping[str, Any]] = None,
    *,
    agent: Optional[str] = None,
    amount: Any = None,
    confidence: Optional[float] = None,
    reasoning: Optional[str] = None,
    inputs: Any = None,
    correlation_id: Optional[str] = None,
    parent: Optional[Union[UUID, str]] = None,
    depends_on: Optional[Sequence[Union[UUID, str]]] = None,
    idempotency_key: Any = AUTO,
    timeout: Optional[float] = 3600.0,
    poll: float = 10.0,
) -> AsyncAction:
    """As backstop.action, on an AsyncConnection."""
    p = make_proposal(
        agent,
        conn.info.user,
        tool,
        params,
        amount,
        confidence,
        reasoning,
        inputs,
        correlation_id,
        parent,
        idempotency_key,
        depends_on,
    )
    return AsyncAction(conn, p, timeout, poll)


def guarded(
    tool: str,
    *,
    agent: Optional[str] = None,
    connection: Union[
        None, psycopg.AsyncConnection[Any], Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]
    ] = None,
    timeout: Optional[float] = 3600.0,
    poll: float = 10.0,
) -> Callable[[F], F]:
    """As backstop.guarded, for coroutine functions (`connection` may be an async factory)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            params, options = bind_params(fn, connection is None, args, kwargs)
            if connection is None:
                conn = args[0] if args else kwargs[first_param(fn)]
            elif isinstance(connection, psycopg.AsyncConnection):
                conn = connection
            else:
                conn = await connection()
            async with action(
                conn,
                tool,
                params,
                agent=agent,
                amount=options.get("amount"),
                confidence=options.get("confidence"),
                reasoning=options.get("reasoning"),
                inputs=options.get("inputs"),
                correlation_id=options.get("correlation_id"),
                parent=options.get("parent"),
                depends_on=options.get("depends_on"),
                idempotency_key=options.get("idempotency_key", AUTO),
                timeout=options.get("timeout", timeout),
                poll=poll,
            ) as act:
                out = await fn(*args, **kwargs)
                await act.record(out)
                return out

        return cast(F, wrapper)

    return decorate
