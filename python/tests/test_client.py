"""The blocking client against a real Backstop database (see conftest.py)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import backstop
from conftest import AGENT, APPROVERS, HELD_AGENT, Approvers, connect, log_kinds, one, refund_tool


def test_an_allowed_refund_runs_once_and_stages_its_inverse(admin: Any, agent_conn: Any) -> None:
    refund = refund_tool(admin, AGENT)
    params = {"customer_id": "c-py-1", "amount": Decimal("120.50"), "order_id": "o-1"}
    with backstop.action(agent_conn, "issue_refund", params, confidence=0.95, reasoning="late delivery",
                         correlation_id="ticket-1") as act:
        assert act.proposed == "allow"
        status, compensation = act.record(refund(**params))
    assert (status, compensation) == ("executed", "staged")
    assert act.result is not None and act.result["refund_id"]

    # The agent is the login (no agent= given); the amount came from params.
    row = admin.execute(
        "SELECT agent, status, amount, inverse_tool, inverse_params, correlation_id FROM backstop.actions"
        " WHERE action_id = %s", (act.action_id,)).fetchone()
    assert row[:4] == (AGENT, "executed", Decimal("120.50"), "reverse_refund")
    assert row[4]["refund_id"] == act.result["refund_id"]
    assert row[5] == "ticket-1"
    assert log_kinds(admin, act.action_id) == ["allowed", "executed"]


def test_a_retried_call_gets_its_first_answer_not_a_second_refund(admin: Any, agent_conn: Any) -> None:
    refund = refund_tool(admin, AGENT)
    params = {"customer_id": "c-py-2", "amount": 40}
    # First run: allowed, then the agent "crashes" before running the tool.
    first = backstop.action(agent_conn, "issue_refund", params, reasoning="first try")
    first.__enter__()
    # The retry (other reasoning, same request) is the same action, still allowed.
    with backstop.action(agent_conn, "issue_refund", params, reasoning="second try") as again:
        assert again.action_id == first.action_id
        again.record(refund(**params))
    # A third run after it executed is told so, and runs nothing.
    with pytest.raises(backstop.AlreadyDone) as e:
        with backstop.action(agent_conn, "issue_refund", params):
            raise AssertionError("the body ran on a replay")
    assert e.value.action_id == first.action_id
    assert e.value.reason.startswith("already executed")
    assert isinstance(e.value, backstop.Blocked)
    assert one(admin, "SELECT count(*) FROM payments.refunds WHERE customer_id = 'c-py-2'") == 1
    assert one(admin, "SELECT count(*) FROM backstop.actions WHERE agent = %s AND entity = 'c-py-2'", AGENT) == 1

    # The key is the call: another amount is another action; None opts out.
    k1 = backstop.derive_key("issue_refund", params, None, None, None)
    assert k1 != backstop.derive_key("issue_refund", {**params, "amount": 41}, None, None, None)
    assert k1 != backstop.derive_key("issue_refund", params, None, "ticket-9", None)
    with backstop.action(agent_conn, "issue_refund", params, idempotency_key=None) as fresh:
        assert fresh.action_id != first.action_id
        fresh.record(refund(**params))


def test_a_held_refund_waits_for_two_approvers_then_runs(admin: Any, agent_conn: Any) -> None:
    refund = refund_tool(admin, HELD_AGENT)
    params = {"customer_id": "c-py-3", "amount": 12000}
    approvers = Approvers(HELD_AGENT, "duplicate charge checked")
    approvers.start()
    # poll=600: only the NOTIFY can wake the client before the approvers' patience runs out.
    with backstop.action(agent_conn, "issue_refund", params, agent=HELD_AGENT, timeout=600, poll=600) as act:
        assert act.proposed == "hold"
        act.record(refund(**params))
    approvers.done()
    assert approvers.between == "held"
    assert act.action_id == approvers.action_id
    assert act.reason.startswith("approved by ")
    assert log_kinds(admin, act.action_id) == ["held", "approved", "approved", "executed"]
    assert one(admin, "SELECT approvals FROM backstop.actions WHERE action_id = %s", act.action_id) == 2


def test_a_hold_past_the_callers_timeout_raises_still_held(admin: Any, agent_conn: Any) -> None:
    with pytest.raises(backstop.StillHeld) as e:
        with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-4", "amount": 20000}, timeout=0.2):
            raise AssertionError("the body ran while held")
    assert e.value.action_id is not None
    assert "two approvers" in e.value.reason
    # It stays in the queue for a later decision.
    assert one(admin, "SELECT status FROM backstop.actions WHERE action_id = %s", e.value.action_id) == "held"


def test_a_rejection_while_waiting_raises_blocked(admin: Any, agent_conn: Any) -> None:
    import threading

    def reject() -> None:
        with connect(options="-c backstop.operator=pytest") as look:
            for _ in range(1200):
                aid = one(look, "SELECT action_id FROM backstop.actions WHERE agent = %s AND status = 'held'"
                                " AND entity = 'c-py-5'", AGENT)
                if aid is not None:
                    break
                look.execute("SELECT pg_sleep(0.05)")
            with connect(APPROVERS[0]) as c:
                c.execute("SELECT * FROM backstop.reject(%s, %s)", (aid, "not this customer"))

    t = threading.Thread(target=reject, daemon=True)
    t.start()
    with pytest.raises(backstop.Blocked) as e:
        with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-5", "amount": 15000}, poll=600):
            raise AssertionError("the body ran after a rejection")
    t.join(60)
    assert "not this customer" in e.value.reason
    assert not isinstance(e.value, backstop.AlreadyDone)


def test_blocks_by_policy_and_by_a_pause_raise_blocked_with_the_reason(admin: Any, agent_conn: Any) -> None:
    admin.execute("INSERT INTO crm.suppression_list (customer_id, reason) VALUES ('c-py-9', 'churned')")
    with pytest.raises(backstop.Blocked) as e:
        with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-9", "amount": 5}):
            raise AssertionError("the body ran when blocked")
    assert "churned" in e.value.reason

    admin.execute("SELECT backstop.pause('agent', %s, 'investigating refunds')", (AGENT,))
    try:
        with pytest.raises(backstop.Blocked) as e:
            with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-6", "amount": 5}):
                raise AssertionError("the body ran while paused")
        assert "investigating refunds" in e.value.reason
    finally:
        admin.execute("SELECT backstop.resume('agent', %s, 'done')", (AGENT,))

    with pytest.raises(backstop.Blocked) as e:
        with backstop.action(agent_conn, "no_such_tool", {}):
            raise AssertionError("the body ran for an unknown tool")
    assert "unknown tool no_such_tool" in e.value.reason


def test_an_exception_in_the_body_is_recorded_as_failed_and_reraised(admin: Any, agent_conn: Any) -> None:
    class ProviderDown(Exception):
        pass

    with pytest.raises(ProviderDown):
        with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-7", "amount": 8}) as act:
            raise ProviderDown("payment provider timed out")
    assert log_kinds(admin, act.action_id) == ["allowed", "failed"]
    result = one(admin, "SELECT result FROM backstop.action_log WHERE action_id = %s AND kind = 'failed'", act.action_id)
    assert result == {"error": "payment provider timed out", "type": "ProviderDown"}
    assert one(admin, "SELECT inverse_params FROM backstop.actions WHERE action_id = %s", act.action_id) is None


def test_contract_errors_are_typed_by_sqlstate_with_the_contracts_message(admin: Any, agent_conn: Any) -> None:
    before = one(admin, "SELECT count(*) FROM backstop.action_log")
    with pytest.raises(backstop.BadInput) as bad:
        with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-8", "amount": -5}):
            pass
    assert bad.value.sqlstate == "22023"
    assert bad.value.message.startswith("propose: params.amount")
    assert one(admin, "SELECT count(*) FROM backstop.action_log") == before

    with pytest.raises(backstop.UnknownAction) as unknown:
        backstop.decision(agent_conn, uuid.uuid4())
    assert unknown.value.sqlstate == "P0002" and "unknown action_id" in unknown.value.message

    with pytest.raises(backstop.PermissionDenied) as denied:
        with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-8", "amount": 1}, agent="someone-else"):
            pass
    assert denied.value.sqlstate == "42501" and "may not act as agent someone-else" in denied.value.message

    with backstop.action(agent_conn, "issue_refund", {"customer_id": "c-py-8", "amount": 3}) as act:
        act.record({"refund_id": "r-x", "status": "issued"})
    with pytest.raises(backstop.RefusedStateChange) as refused:
        backstop.record_result(agent_conn, act.action_id, True, {"refund_id": "r-y"})
    assert refused.value.sqlstate == "55000" and "already has a different result" in refused.value.message
    assert all(isinstance(e.value, backstop.BackstopError) for e in (bad, unknown, denied, refused))

    with connect(AGENT) as tx:
        tx.autocommit = False
        with pytest.raises(backstop.BadInput, match="autocommit"):
            with backstop.action(tx, "issue_refund", {"customer_id": "c-py-8", "amount": 1}):
                pass


def test_a_guarded_tool_function(admin: Any, agent_conn: Any) -> None:
    calls = []

    @backstop.guarded("issue_refund")
    def issue_refund(conn: psycopg.Connection[Any], customer_id: str, amount: Any, reason: str = "goodwill") -> Any:
        calls.append((customer_id, amount))
        return refund_tool(admin, AGENT)(customer_id=customer_id, amount=amount, reason=reason)

    out = issue_refund(agent_conn, "c-py-10", amount=25, _reasoning="customer asked", _confidence=0.9)
    assert out["refund_id"]
    aid = one(admin, "SELECT action_id FROM backstop.actions WHERE entity = 'c-py-10'")
    assert log_kinds(admin, aid) == ["allowed", "executed"]
    params = one(admin, "SELECT params FROM backstop.action_log WHERE action_id = %s AND kind = 'allowed'", aid)
    assert params == {"customer_id": "c-py-10", "amount": 25, "reason": "goodwill"}
    assert one(admin, "SELECT reasoning FROM backstop.action_log WHERE action_id = %s AND kind = 'allowed'", aid) \
        == "customer asked"

    # Called again the same way: the first answer, and the tool is not run again.
    with pytest.raises(backstop.AlreadyDone):
        issue_refund(agent_conn, "c-py-10", amount=25)
    assert calls == [("c-py-10", 25)]

    # With the connection given to the decorator, every argument is a param.
    @backstop.guarded("issue_refund", connection=lambda: agent_conn)
    def refund_again(customer_id: str, amount: int) -> Any:
        raise RuntimeError("card network down")

    with pytest.raises(RuntimeError):
        refund_again("c-py-11", 30)
    aid = one(admin, "SELECT action_id FROM backstop.actions WHERE entity = 'c-py-11'")
    assert log_kinds(admin, aid) == ["allowed", "failed"]


def test_depends_on_is_what_a_rollback_follows(admin: Any, agent_conn: Any) -> None:
    refund = refund_tool(admin, AGENT)
    first = {"customer_id": "c-py-dep-1", "amount": 30}
    with backstop.action(agent_conn, "issue_refund", first, correlation_id="ticket-dep") as a:
        a.record(refund(**first))
    second = {"customer_id": "c-py-dep-2", "amount": 20}
    with backstop.action(agent_conn, "issue_refund", second, depends_on=[a.action_id]) as b:
        b.record(refund(**second))
    # Same ticket, nothing declared: grouped, not dependent.
    third = {"customer_id": "c-py-dep-3", "amount": 10}
    with backstop.action(agent_conn, "issue_refund", third, correlation_id="ticket-dep") as c:
        c.record(refund(**third))
    plan = [r[0] for r in admin.execute(
        "SELECT action_id FROM backstop.compensation_plan(ARRAY[%s]::uuid[])", (a.action_id,)).fetchall()]
    assert set(plan) == {a.action_id, b.action_id}
    # The key is the call: declaring a dependency makes another request.
    assert backstop.derive_key("issue_refund", second, None, None, None) != \
        backstop.derive_key("issue_refund", second, None, None, None, [a.action_id])
