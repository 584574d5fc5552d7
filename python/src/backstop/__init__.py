"""Backstop's Python client: every tool call proposed, decided, and recorded.

    import backstop
    with backstop.action(conn, "issue_refund", {"customer_id": "c-1", "amount": 120}) as act:
        act.record(payments.refund("c-1", 120))

The asyncio forms live in backstop.aio.
"""

from . import aio
from ._common import (
    AUTO,
    AlreadyDone,
    BackstopError,
    BadInput,
    Blocked,
    NotAllowed,
    PermissionDenied,
    RefusedStateChange,
    StillHeld,
    UnknownAction,
    decision_key,
    derive_key,
)
from ._sync import Action, action, decision, guarded, propose, record_result, wait_for_decision

__all__ = [
    "AUTO",
    "Action",
    "AlreadyDone",
    "BackstopError",
    "BadInput",
    "Blocked",
    "NotAllowed",
    "PermissionDenied",
    "RefusedStateChange",
    "StillHeld",
    "UnknownAction",
    "action",
    "aio",
    "decision",
    "decision_key",
    "derive_key",
    "guarded",
    "propose",
    "record_result",
    "wait_for_decision",
]

__version__ = "0.1.0"
