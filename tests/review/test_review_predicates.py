"""The review predicate language: parse errors at load time, evaluation never raises."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.errors import ConfigError
from lockgate.review.confidence import agreement, from_field, from_logprobs
from lockgate.review.predicates import evaluate
from lockgate.settings import parse_config
from lockgate.settings.review_predicates import parse_predicate


@pytest.mark.parametrize(("text", "output", "request_body", "want"), [
    ("$.amount > 10000", {"amount": 10001}, {}, True),
    ("$.amount > 10000", {"amount": 10000}, {}, False),
    ("$.amount > 10000", {"amount": "lots"}, {}, False),
    ("$.amount > 10000", {}, {}, False),
    ("$.amount >= 1.5e3", {"amount": 1500}, {}, True),
    ("$.category in [legal, medical]", {"category": "legal"}, {}, True),
    ("$.category in [legal, medical]", {"category": "billing"}, {}, False),
    ("$.category not in [legal, 'medical care']", {"category": "medical care"}, {}, False),
    ("$.lines[1].sku == 'B-2'", {"lines": [{"sku": "A"}, {"sku": "B-2"}]}, {}, True),
    ("$['odd key'] == true", {"odd key": True}, {}, True),
    ("$.flag == 1", {"flag": True}, {}, False),
    ("$.tags contains urgent", {"tags": ["x", "urgent"]}, {}, True),
    ("$.note contains refund", {"note": "asks for a refund"}, {}, True),
    ("$.x exists", {"x": None}, {}, True),
    ("request:$.metadata.priority == high", {}, {"metadata": {"priority": "high"}}, True),
    ("request:$.metadata.priority == high", {"metadata": {"priority": "high"}}, {}, False),
])
def test_evaluate(text: str, output: Any, request_body: Any, want: bool) -> None:
    assert evaluate(parse_predicate(text), output, request_body) is want


@pytest.mark.parametrize("text", [
    "", "amount > 3", "$.a >", "$.a in 3", "$.a ~ 3", "$.a > [1]", "$.a == 'open",
    "$.a in [1, [2]]", "$.a == 1 extra", "$.a > true",
])
def test_bad_predicates_are_config_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_predicate(text)
    yaml = ("review:\n  policies:\n    t:\n"
            f"      when: {{predicates: [{text!r}]}}\n")
    with pytest.raises(ConfigError) as err:
        parse_config(yaml)
    assert "predicate" in str(err.value) or "review" in str(err.value)


def test_policy_needs_a_condition_and_webhook_needs_secret() -> None:
    with pytest.raises(ConfigError):
        parse_config("review: {policies: {t: {when: {}}}}")
    with pytest.raises(ConfigError):
        parse_config("review: {webhook_url: 'http://x'}")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(doc=_json, req=_json)
def test_evaluation_never_raises(doc: Any, req: Any) -> None:
    for text in ("$.amount > 10", "$.a[0].b in [x, 1]", "$.t contains y", "$.c <= 'm'",
                 "request:$.x != null", "$.z exists"):
        assert evaluate(parse_predicate(text), doc, req) in (True, False)


def test_confidence_sources() -> None:
    body = {"choices": [{"logprobs": {"content": [{"logprob": -0.1}, {"logprob": -0.3}]}}]}
    assert from_logprobs(body) == pytest.approx(0.8187, abs=1e-4)
    assert from_logprobs({"choices": [{"logprobs": None}]}) is None
    assert from_field({"confidence": 0.4}, "confidence") == 0.4
    assert from_field({"confidence": 7}, "confidence") is None
    assert from_field({"confidence": True}, "confidence") is None
    assert agreement(["Yes", "yes ", "no"]) == pytest.approx(2 / 3)
    assert agreement([{"c": "a", "x": 1}, {"c": "a", "x": 2}], "c") == 1.0


def test_cli_review_commands(tmp_path: Any) -> None:
    """list/claim/decide/show from the terminal; bad input is one line and exit 2."""
    import asyncio
    import json as _json

    from typer.testing import CliRunner

    from lockgate.cli.app import app
    from lockgate.review import NewReview, ReviewRepository
    from lockgate.store import Store

    db = tmp_path / "lg.db"
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"home: {tmp_path}\ndatabase_url: sqlite:///{db}\n")

    async def seed() -> str:
        store = await Store.open(f"sqlite:///{db}")
        try:
            item = await ReviewRepository(store).insert(NewReview(
                task="invoice", source="http", input={"text": "pay ACME"},
                output={"amount": 12000}, reasons=["predicate $.amount > 10000"],
                team="finance", contract={"type": "object", "required": ["amount"]}))
            return item.id
        finally:
            await store.close()

    rid = asyncio.run(seed())
    runner = CliRunner()
    out = runner.invoke(app, ["review", "list", "-c", str(cfg)])
    assert out.exit_code == 0 and rid[:12] in out.output
    out = runner.invoke(app, ["review", "claim", rid, "--as", "alice", "-c", str(cfg)])
    assert out.exit_code == 0 and _json.loads(out.output)["claimed_by"] == "alice"
    out = runner.invoke(app, ["review", "decide", rid, "edit", "--output", "{}", "--as",
                              "alice", "-c", str(cfg)])
    assert out.exit_code == 1 and "amount" in out.output
    out = runner.invoke(app, ["review", "decide", rid, "reject", "--reason", "no", "--as", "bob",
                              "-c", str(cfg)])
    assert out.exit_code == 1 and "claimed by alice" in out.output
    out = runner.invoke(app, ["review", "decide", rid, "approve", "--as", "alice",
                              "-c", str(cfg)])
    assert out.exit_code == 0 and _json.loads(out.output)["state"] == "approved"
    out = runner.invoke(app, ["review", "show", rid, "-c", str(cfg)])
    assert out.exit_code == 0 and _json.loads(out.output)["decided_by"] == "alice"
    out = runner.invoke(app, ["review", "decide", rid, "approve", "-c", str(cfg)])
    assert out.exit_code == 1 and "already decided" in out.output
    out = runner.invoke(app, ["review", "list", "--state", "odd", "-c", str(cfg)])
    assert out.exit_code == 2
