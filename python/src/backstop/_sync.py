"""The client on a blocking psycopg connection."""

from __future__ import annotations

import functools
import time
from types import TracebackType
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union, cast
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

F = TypeVar("F", bound=Callable[..., Any])


def _one(conn: psycopg.Connection[Any], query: str, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
    try:
        row = conn.execute(query, args).fetchone()
    except psycopg.Error as e:
        raise translate(e) from e
    assert row is not None  # each of these functions returns one row
    return tuple(row)


def propose(conn: psycopg.Connection[Any], p: Proposal) -> Tuple[UUID, str, str]:
    action_id, verdict, reason = _one(conn, PROPOSE, p.args())
    return action_id, verdict, reason


def decision(conn: psycopg.Connection[Any], action_id: UUID) -> Tuple[str, str]:
    verdict, reason = _one(conn, DECISION, (str(action_id),))
    return verdict, reason


def record_result(
    conn: psycopg.Connection[Any],
    action_id: UUID,
    ok: bool,
    result: Optional[Mapping[str, Any]] = None,
    inverse_params: Optional[Mapping[str, Any]] = None,
) -> Tuple[str, str]:
    status, compensation = _one(conn, RECORD, (str(action_id), ok, jsonb(result), jsonb(inverse_params)))
    return status, compensation


def wait_for_decision(
    conn: psycopg.Connection[Any], action_id: UUID, timeout: Optional[float], poll: float = 10.0
) -> Tuple[str, str]:
    """Wait until a held action is decided or `timeout` seconds pass; (verdict, reason).

    LISTEN comes first and the look second: a decision made in between is
    seen by the look, one made after it wakes us. A wake-up is only a hint
    (the first of two approvals wakes us too): decision() is the answer. We
    also look every `poll` seconds, because an expiry by the clock sends no
    notification and one is lost if the connection drops.
    """
    try:
        conn.execute(f"LISTEN {DECISIONS}")
        conn.execute(f"LISTEN {CONTROL}")
    except psycopg.Error as e:
        raise translate(e) from e
    key = decision_key(action_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            verdict, reason = decision(conn, action_id)
            if verdict != "hold":
                return verdict, reason
            wait = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return verdict, reason
                wait = min(wait, remaining)
            for n in conn.notifies(timeout=wait):
                if n.channel == CONTROL or n.payload == key:
                    break
    finally:
        if not conn.closed:
            try:
                conn.execute(f"UNLISTEN {DECISIONS}")
                conn.execute(f"UNLISTEN {CONTROL}")
            except psycopg.Error:
                pass


class Action:
    """One proposed action; `with backstop.action(...) as act` gives it once allowed."""

    action_id: UUID
    #: The verdict propose() gave (allow or hold; a block never reaches the body).
    proposed: str
    #: The decision the body runs under, e.g. "approved by ana and ben".
    reason: str
    #: After record(): executed or failed, and the compensation (staged, none, unbound: ...).
    status: Optional[str]
    compensation: Optional[str]

    def __init__(
        self, conn: psycopg.Connection[Any], proposal: Proposal, timeout: Optional[float], poll: float
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

    def __enter__(self) -> "Action":
        check_autocommit(self._conn)
        self.action_id, verdict, reason = propose(self._conn, self.proposal)
        self.proposed = verdict
        if verdict == "hold":
            verdict, reason = wait_for_decision(self._conn, self.action_id, self._timeout, self._poll)
            if verdict == "hold":
                raise StillHeld(reason, self.action_id, self.proposed)
        if verdict != "allow":
            raise blocked(reason, self.action_id, self.proposed)
        self.reason = reason
        return self

    def record(
        self,
        result: Any = None,
        ok: bool = True,
        inverse_params: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[str, str]:
        """Record what the tool did; returns (status, compensation)."""
        self.result = as_result(result)
        self.status, self.compensation = record_result(
            self._conn, self.action_id, ok, self.result, inverse_params
        )
        return self.status, self.compensation

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.recorded:
            return None
        if exc is None:
            # The body ran the tool without saying what it returned.
            self.record(None)
        elif isinstance(exc, Exception):
            # The log must say the allowed action failed (nothing to undo);
            # the caller's exception is what propagates.
            try:
                self.record(failure(exc), ok=False)
            except Exception as e:
                note = getattr(exc, "add_note", None)  # Python 3.11+
                if note is not None:
                    note(f"backstop: recording the failure also failed: {e}")
        return None


def action(
    conn: psycopg.Connection[Any],
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
) -> Action:
    """Propose `tool(params)`; as a context manager, enter only once allowed.

    `agent` defaults to the connection's login. `idempotency_key` defaults to
    a hash of the call (AUTO); pass a string of your own, or None for none.
    A hold waits up to `timeout` seconds (None: until decided).
    """
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
    return Action(conn, p, timeout, poll)


def guarded(
    tool: str,
    *,
    agent: Optional[str] = None,
    connection: Union[None, psycopg.Connection[Any], Callable[[], psycopg.Connection[Any]]] = None,
    timeout: Optional[float] = 3600.0,
    poll: float = 10.0,
) -> Callable[[F], F]:
    """A tool function that runs only when Backstop allows it.

    Its arguments, by name, are the params; what it returns is the result
    (a dict, or wrapped as {"value": ...}). Without `connection`, the first
    argument of each call is the connection and is not a param. A call may
    add `_reasoning=`, `_confidence=`, `_amount=`, `_inputs=`,
    `_correlation_id=`, `_parent=`, `_depends_on=`, `_idempotency_key=`, `_timeout=`.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            params, options = bind_params(fn, connection is None, args, kwargs)
            if connection is None:
                conn = args[0] if args else kwargs[first_param(fn)]
            elif callable(connection) and not isinstance(connection, psycopg.Connection):
                conn = connection()
            else:
                conn = connection
            with action(
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
                out = fn(*args, **kwargs)
                act.record(out)
                return out

        return cast(F, wrapper)

    return decorate
