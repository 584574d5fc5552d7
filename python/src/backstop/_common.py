"""What the sync and asyncio clients share: errors, SQL, keys and JSON."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

__all__ = [
    "AUTO",
    "AlreadyDone",
    "BackstopError",
    "BadInput",
    "Blocked",
    "NotAllowed",
    "PermissionDenied",
    "RefusedStateChange",
    "StillHeld",
    "UnknownAction",
]


class _Auto:
    """The default idempotency key: derived from the call (see derive_key)."""

    def __repr__(self) -> str:
        return "backstop.AUTO"


AUTO: Any = _Auto()

# Channels the contract NOTIFYs: a decision on a held action (payload: the
# action's decision key) and a change of the kill switch (a resumed pause
# lets an allowed action go on).
DECISIONS = "backstop_decisions"
CONTROL = "backstop_control"

# Named arguments: propose() has ten parameters, most optional. confidence
# is cast because Python floats travel as double precision.
PROPOSE = """SELECT action_id, verdict, reason FROM backstop.propose(
    agent => %s, tool => %s, params => %s, amount => %s::numeric,
    confidence => %s::double precision, reasoning => %s, inputs => %s,
    correlation_id => %s, parent_action => %s::uuid, idempotency_key => %s,
    depends_on => %s::uuid[])"""
DECISION = "SELECT verdict, reason FROM backstop.decision(%s::uuid)"
RECORD = "SELECT status, compensation FROM backstop.record_result(%s::uuid, %s, %s, %s)"


# ---- errors ----


class BackstopError(Exception):
    """A call to the contract failed: `sqlstate` and the contract's `message`."""

    sqlstate: Optional[str]
    message: str

    def __init__(self, message: str, sqlstate: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return f"{self.message} (SQLSTATE {self.sqlstate})" if self.sqlstate else self.message


class BadInput(BackstopError):
    """22023: an argument the contract refuses (the message names it)."""


class UnknownAction(BackstopError):
    """P0002: an action id the contract does not know."""


class RefusedStateChange(BackstopError):
    """55000: the action is not in a state that allows this (e.g. recorded twice)."""


class PermissionDenied(BackstopError):
    """42501: this login may not act as this agent, or lacks the duty."""


_BY_SQLSTATE: Dict[str, Type[BackstopError]] = {
    "22023": BadInput,
    "P0002": UnknownAction,
    "55000": RefusedStateChange,
    "42501": PermissionDenied,
}


def translate(e: psycopg.Error) -> BackstopError:
    """The typed error for a database error (BackstopError when untyped)."""
    message = (e.diag.message_primary if e.diag else None) or str(e).strip()
    cls = _BY_SQLSTATE.get(e.sqlstate or "", BackstopError)
    return cls(message, e.sqlstate)


class NotAllowed(Exception):
    """The action may not run: it was blocked, or is still held."""

    action_id: Optional[UUID]
    reason: str
    #: What propose() first said: block, or hold when a wait ended so.
    proposed: Optional[str]

    def __init__(self, reason: str, action_id: Optional[UUID] = None, proposed: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.action_id = action_id
        self.proposed = proposed


class Blocked(NotAllowed):
    """Blocked: by policy, a pause, a rejection or an expiry. `reason` says which."""


class AlreadyDone(Blocked):
    """A replay of a call that already ran (same idempotency key): not run again."""


class StillHeld(NotAllowed):
    """Still waiting for approval when the caller's timeout ran out; the action stays queued."""


# A replay of an executed or failed action is answered with a block whose
# reason starts so (sql/06_propose.sql).
_REPLAY = re.compile(r"^already (executed|failed) \(seq ")


def blocked(reason: str, action_id: Optional[UUID], proposed: Optional[str] = None) -> Blocked:
    if _REPLAY.match(reason or ""):
        return AlreadyDone(reason, action_id, proposed)
    return Blocked(reason, action_id, proposed)


# ---- JSON ----


def jsonable(v: Any) -> Any:
    """params and results as JSON: Decimal as a JSON number, tuples as lists."""
    if isinstance(v, Decimal):
        # An integral amount goes as an integer, any other as the shortest
        # float that reads back as the same decimal (120.55 stays 120.55).
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, UUID):
        return str(v)
    return v


def jsonb(v: Any) -> Optional[Jsonb]:
    return None if v is None else Jsonb(jsonable(v))


def as_result(v: Any) -> Optional[Dict[str, Any]]:
    """What a tool returned, as the JSON object record_result takes."""
    if v is None:
        return None
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    return {"value": jsonable(v)}


def failure(e: BaseException) -> Dict[str, Any]:
    return {"error": str(e) or type(e).__name__, "type": type(e).__name__}


# ---- idempotency ----


def derive_key(
    tool: str,
    params: Mapping[str, Any],
    amount: Any,
    correlation_id: Optional[str],
    parent: Optional[Any],
    depends_on: Optional[Sequence[Any]] = None,
) -> str:
    """The default idempotency key: a hash of what the call asks for.

    A crashed and retried agent asks for the same thing and so gets its first
    answer (an executed action is not run twice). Reasoning and confidence are
    left out: a model rarely words its reasons the same way twice. Two
    genuinely separate identical requests need a correlation_id or a key of
    their own.
    """
    what = {
        "tool": tool,
        "params": jsonable(params),
        "amount": None if amount is None else str(Decimal(str(amount)).normalize()),
        "correlation_id": correlation_id,
        "parent": None if parent is None else str(parent),
    }
    if depends_on:
        # Only when given, so keys derived before depends_on existed still match.
        what["depends_on"] = sorted(str(d) for d in depends_on)
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "py:" + hashlib.sha256(text.encode()).hexdigest()


def decision_key(action_id: UUID) -> str:
    """The payload of a decision's NOTIFY for this action (sql/07_approvals.sql)."""
    return hashlib.sha256(str(action_id).encode()).hexdigest()


# ---- the proposal and its outcome ----


@dataclass
class Proposal:
    agent: str
    tool: str
    params: Dict[str, Any]
    amount: Any = None
    confidence: Optional[float] = None
    reasoning: Optional[str] = None
    inputs: Any = None
    correlation_id: Optional[str] = None
    parent: Optional[Any] = None
    idempotency_key: Optional[str] = None
    # Earlier actions this one relies on: a rollback of one of them plans this
    # one too (a correlation id only groups).
    depends_on: Optional[List[str]] = None

    def args(self) -> Tuple[Any, ...]:
        return (
            self.agent,
            self.tool,
            jsonb(self.params),
            None if self.amount is None else Decimal(str(self.amount)),
            self.confidence,
            self.reasoning,
            jsonb(self.inputs),
            self.correlation_id,
            None if self.parent is None else str(self.parent),
            self.idempotency_key,
            self.depends_on,
        )


def make_proposal(
    agent: Optional[str],
    login: Optional[str],
    tool: str,
    params: Optional[Mapping[str, Any]],
    amount: Any,
    confidence: Optional[float],
    reasoning: Optional[str],
    inputs: Any,
    correlation_id: Optional[str],
    parent: Optional[Any],
    idempotency_key: Any,
    depends_on: Optional[Sequence[Any]] = None,
) -> Proposal:
    # The agent defaults to the login: an agent's own login acts as itself.
    who = agent or login
    if not who:
        raise BadInput("action: no agent: pass agent= or connect as the agent's login")
    p = dict(params or {})
    key = derive_key(tool, p, amount, correlation_id, parent, depends_on) if idempotency_key is AUTO else idempotency_key
    deps = [str(d) for d in depends_on] if depends_on else None
    return Proposal(who, tool, p, amount, confidence, reasoning, inputs, correlation_id, parent, key, deps)


def check_autocommit(conn: Any) -> None:
    # A proposal must be committed for approvers to see it while we wait, and
    # LISTEN only takes effect when its transaction commits.
    if not conn.autocommit:
        raise BadInput("action: the connection must be in autocommit mode (psycopg.connect(..., autocommit=True))")


# Options a guarded tool's caller may pass along with the tool's arguments.
CALL_OPTIONS = (
    "_amount",
    "_confidence",
    "_reasoning",
    "_inputs",
    "_correlation_id",
    "_parent",
    "_depends_on",
    "_idempotency_key",
    "_timeout",
)


def bind_params(
    fn: Callable[..., Any], skip_first: bool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A guarded function's call as (params, options): its arguments by name."""
    options = {k[1:]: kwargs.pop(k) for k in CALL_OPTIONS if k in kwargs}
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    items = list(bound.arguments.items())
    if skip_first:
        items = items[1:]
    params: Dict[str, Any] = {}
    for name, value in items:
        kind = inspect.signature(fn).parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            params.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                params[name] = list(value)
        else:
            params[name] = value
    return params, options


def first_param(fn: Callable[..., Any]) -> str:
    return next(iter(inspect.signature(fn).parameters))
