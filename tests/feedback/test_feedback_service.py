"""FeedbackService, quality report and export on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.feedback import FeedbackService, Subject, export_feedback, pii_redactor
from lockgate.feedback import quality_report as quality
from lockgate.pipeline.call import Principal
from lockgate.store import InvalidInput, NotFoundError, Store
from tests.feedback.conftest import usage

REQ = {"model": "fast", "messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Refund for jane@example.com?"}],
       "metadata": {"task": "refunds", "contract": "refund@2", "prompt_version": "p7"}}
RESP = {"choices": [{"message": {"role": "assistant", "content": "Yes, refund 20 EUR."},
                     "finish_reason": "stop"}]}
REFUSED = {"choices": [{"message": {"role": "assistant", "content": None,
                                    "refusal": "I can't help with that."},
                        "finish_reason": "stop"}]}


async def test_record_denormalises_from_the_audit_row(store: Store) -> None:
    await store.write_usage([usage("req_1", request_body=json.dumps(REQ),
                                   response_body=json.dumps(RESP))])
    svc = FeedbackService(store.engine)
    fb = await svc.record("feedback", request_id="req_1", thumbs="up", score=4.5,
                          comment="good", given_by="key_a")
    assert (fb.task, fb.model, fb.deployment) == ("refunds", "fast", "fast#0")
    assert (fb.contract_version, fb.prompt_version, fb.refused) == ("refund@2", "p7", False)
    assert (fb.key_id, fb.team_id, fb.source) == ("key_a", "team_a", "api")
    # explicit values win (the review service knows the task and versions itself)
    ed = await svc.record("review_edited", request_id="req_1", source="review",
                          task="refunds-v2", prompt_version="p8",
                          corrected_output={"refund": 15}, given_by="reviewer:alice")
    assert (ed.task, ed.prompt_version, ed.corrected_output) == ("refunds-v2", "p8",
                                                                 {"refund": 15})
    listed = await svc.list(request_id="req_1")
    assert [f.id for f in listed] == [ed.id, fb.id]


async def test_unknown_ids_and_bad_shapes(store: Store) -> None:
    svc = FeedbackService(store.engine, max_text_chars=100)
    await store.write_usage([usage("req_2")])
    with pytest.raises(NotFoundError):
        await svc.record("feedback", request_id="req_nope", thumbs="up")
    with pytest.raises(NotFoundError):
        await svc.subject(review_id="rev_1")  # no review resolver registered
    bad = [
        dict(thumbs="sideways"), dict(score=float("nan")), dict(score="5"),
        dict(score=True), dict(outcome="refund granted!"), dict(comment="x" * 101),
        dict(comment=7), dict(refused="yes"), dict(corrected_output={1, 2}),
    ]
    for kwargs in bad:
        with pytest.raises(InvalidInput):
            await svc.record("feedback", request_id="req_2", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await svc.record("thumbs", request_id="req_2", thumbs="up")
    with pytest.raises(InvalidInput):
        await svc.record("feedback", thumbs="up")
    assert await svc.list() == []


async def test_resolvers_and_owner_rule(store: Store) -> None:
    await store.write_usage([usage("req_3", key_id="key_b", team_id="team_b",
                                   response_body=json.dumps(REFUSED))])
    svc = FeedbackService(store.engine)

    async def review(review_id: str) -> Subject | None:
        if review_id != "rev_9":
            return None
        return Subject(request_id="req_3", task="claims", input="claim text",
                       output={"approve": True})

    svc.resolvers["review"] = review
    subject = await svc.subject(review_id="rev_9")
    assert (subject.review_id, subject.request_id, subject.task) == ("rev_9", "req_3", "claims")
    assert (subject.deployment, subject.key_id, subject.refused) == ("fast#0", "key_b", True)
    from lockgate.feedback import may_give_feedback

    assert may_give_feedback(subject, Principal(key_id="key_b", team_id="team_x"))
    assert may_give_feedback(subject, Principal(key_id="key_z", team_id="team_b"))
    assert may_give_feedback(subject, Principal(key_id="master", team_id=None, is_master=True))
    assert not may_give_feedback(subject, Principal(key_id="key_z", team_id="team_z"))


async def test_quality_rates_and_counts(store: Store) -> None:
    await store.write_usage([usage(f"req_q{i}", request_body=json.dumps(REQ)) for i in range(10)])
    svc = FeedbackService(store.engine)
    kinds = ["review_approved"] * 6 + ["review_edited"] * 3 + ["review_rejected"]
    for i, kind in enumerate(kinds):
        await svc.record(kind, request_id=f"req_q{i}", source="review",
                         comment="reason" if kind == "review_rejected" else None)
    for i, thumbs in enumerate(["up", "up", "down", "up"]):
        await svc.record("feedback", request_id=f"req_q{i}", thumbs=thumbs)
    await svc.record("outcome", request_id="req_q0", outcome="refund_granted")
    await svc.record("outcome", request_id="req_q1", outcome="ticket_reopened")
    await svc.record("feedback", request_id="req_q1", thumbs="down", refused=True)
    [row] = await quality(store.engine)
    assert (row["task"], row["model"], row["deployment"]) == ("refunds", "fast", "fast#0")
    assert (row["prompt_version"], row["contract_version"]) == ("p7", "refund@2")
    assert row["rows"] == 17 and row["reviews"] == 10
    assert row["approval_rate"] == 0.6 and row["override_rate"] == 0.4
    assert (row["thumbs"], row["thumbs_down"]) == (5, 2)
    assert row["thumbs_down_rate"] == 0.4
    assert row["outcome_counts"] == {"refund_granted": 1, "ticket_reopened": 1}
    assert row["outcome_rate"] == round(2 / 17, 6)
    # without logged response bodies the refusal is unknown except where it was said
    assert (row["refused"], row["refusal_known"], row["refusal_rate"]) == (1, 1, 1.0)
    [one] = await quality(store.engine, outcome="refund_granted")
    assert one["outcome_rate"] == 0.5
    assert await quality(store.engine, task="other") == []


async def test_export_keeps_accepted_and_corrected_only_and_redacts(
    store: Store, tmp_path: Path
) -> None:
    bodies = dict(request_body=json.dumps(REQ), response_body=json.dumps(RESP))
    await store.write_usage([usage(f"req_e{i}", **bodies) for i in range(5)])
    svc = FeedbackService(store.engine)
    await svc.record("review_approved", request_id="req_e0", source="review")
    await svc.record("review_edited", request_id="req_e1", source="review",
                     corrected_output="Refund 15 EUR to jane@example.com.")
    await svc.record("review_rejected", request_id="req_e2", source="review", comment="wrong")
    await svc.record("feedback", request_id="req_e3", thumbs="up")
    await svc.record("feedback", request_id="req_e3", thumbs="down")  # later verdict: no
    await svc.record("outcome", request_id="req_e4", outcome="refund_granted")  # no verdict
    await svc.record("review_approved", review_id="rev_only", source="review",
                     input={"invoice": 42, "email": "bob@example.org"},
                     output={"approve": True})
    train, ev = tmp_path / "out" / "train.jsonl", tmp_path / "eval.jsonl"
    stats = await export_feedback(store.engine, train, ev, redact=pii_redactor())
    assert stats.as_dict() == {"calls": 6, "written": 3, "corrected": 1,
                               "skipped_rejected": 2, "skipped_no_verdict": 1,
                               "skipped_no_data": 0}
    lines = [json.loads(x) for x in train.read_text().splitlines()]
    assert [m["messages"][-1] for m in lines] == [
        {"role": "assistant", "content": "Yes, refund 20 EUR."},
        {"role": "assistant", "content": "Refund 15 EUR to [EMAIL]."},
        {"role": "assistant", "content": '{"approve": true}'},
    ]
    assert lines[0]["messages"][:2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Refund for [EMAIL]?"},
    ]
    assert "example" not in train.read_text()
    evals = [json.loads(x) for x in ev.read_text().splitlines()]
    assert evals[1]["expected_output"] == "Refund 15 EUR to [EMAIL]."
    assert evals[1]["request_id"] == "req_e1" and evals[1]["task"] == "refunds"
    assert evals[2]["input"] == '{"invoice": 42, "email": "[EMAIL]"}'
    raw = await export_feedback(store.engine, tmp_path / "raw.jsonl")
    assert raw.written == 3 and "jane@example.com" in (tmp_path / "raw.jsonl").read_text()
