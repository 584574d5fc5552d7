"""Fixtures for the client's tests against a real Backstop database.

tests/python_client.rs creates the database (migrated like any Backstop
database, with the shipped registry and policy), the logins, and runs
pytest with:

    BACKSTOP_TEST_URL         a superuser URL on that database (checks, pauses, the tools' systems)
    BACKSTOP_TEST_AGENT       a login with the agent duty (its name is the agent's)
    BACKSTOP_TEST_APPROVERS   two logins with the approver duty, comma-separated
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import psycopg
import pytest

URL = os.environ.get("BACKSTOP_TEST_URL")
if not URL:
    pytest.skip("BACKSTOP_TEST_URL is not set: run through `cargo test --test python_client`", allow_module_level=True)
AGENT = os.environ["BACKSTOP_TEST_AGENT"]
APPROVERS = os.environ["BACKSTOP_TEST_APPROVERS"].split(",")
# Agents mapped to AGENT's login (agent_logins), for the approved large
# refunds: those count towards the hourly limit of the agent that made them.
HELD_AGENT = AGENT + "-held"
AIO_HELD_AGENT = AGENT + "-aio"

# How long a helper waits for something the client does before failing the test.
PATIENCE = 60.0


def connect(user: Optional[str] = None, **kw: Any) -> psycopg.Connection[Any]:
    assert URL
    if user is not None:
        kw["user"] = user
    return psycopg.connect(URL, autocommit=True, **kw)


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[Any]]:
    with connect(options="-c backstop.operator=pytest") as c:
        yield c


@pytest.fixture
def agent_conn() -> Iterator[psycopg.Connection[Any]]:
    with connect(AGENT) as c:
        yield c


def one(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


def log_kinds(conn: psycopg.Connection[Any], action_id: Any) -> List[str]:
    rows = conn.execute(
        "SELECT kind FROM backstop.action_log WHERE action_id = %s ORDER BY seq", (action_id,)
    ).fetchall()
    return [r[0] for r in rows]


def refund_tool(admin: psycopg.Connection[Any], agent: str) -> Callable[..., Any]:
    """The demo's payment system: issue_refund as the business side runs it."""

    def refund(**params: Any) -> Any:
        doc = psycopg.types.json.Jsonb(params, dumps=lambda o: json.dumps(o, default=str))
        return one(admin, "SELECT payments.issue_refund(%s, %s)", doc, agent)

    return refund


class Approvers(threading.Thread):
    """Two approvers who approve `agent`'s held action as soon as it is held."""

    def __init__(self, agent: str, notes: str = "checked") -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.notes = notes
        self.error: Optional[BaseException] = None
        self.action_id: Any = None
        self.between: Optional[str] = None

    def run(self) -> None:
        try:
            with connect(options="-c backstop.operator=pytest") as look:
                t0 = time.monotonic()
                while self.action_id is None:
                    self.action_id = one(
                        look, "SELECT action_id FROM backstop.actions WHERE agent = %s AND status = 'held'", self.agent
                    )
                    if time.monotonic() - t0 > PATIENCE:
                        raise AssertionError(f"no held action from {self.agent}")
                    time.sleep(0.05)
                for i, login in enumerate(APPROVERS):
                    with connect(login) as c:
                        c.execute("SELECT * FROM backstop.approve(%s, %s)", (self.action_id, self.notes))
                    if i == 0:
                        # Still held after one of two: the client must keep waiting.
                        self.between = one(look, "SELECT status FROM backstop.actions WHERE action_id = %s", self.action_id)
        except BaseException as e:  # reported by the test's join()
            self.error = e

    def done(self) -> None:
        self.join(PATIENCE)
        assert not self.is_alive(), "the approvers did not finish"
        if self.error is not None:
            raise self.error
