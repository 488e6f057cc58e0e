"""``rag/<collection>`` as a routed model, and one RAG service for every path.

The RAG service is built once by the composition root (``Runtime.rag``) from the ``rag:``
config; the router sends ``rag/<collection>`` to it as a virtual deployment. So the model is
listed by ``/v1/models`` for keys that may use it, answers on ``/v1/messages`` and in jobs
like on ``/v1/chat/completions``, and ``lockgate rag query`` answers (or refuses) exactly
like ``POST /v1/rag/{collection}/query`` for the same config.
"""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest
from typer.testing import CliRunner

from lockgate.cli.rag_commands import rag_app
from lockgate.pipeline import Principal
from lockgate.rag import REFUSAL, SourceDocument
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from tests.gateway import test_gateway_rag as rag_module
from tests.gateway.test_gateway_rag import PINNED, RagEnv, documents

# the RAG gateway module's fixtures (a server with a rag: section, a collection, keys)
rag_gateway = rag_module.rag_gateway
env = rag_module.env

QUESTION = "How many vacation days do employees get per year?"


def _models(env: RagEnv, key: str) -> list[str]:
    with env.client(key) as c:
        r = c.get("/v1/models")
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def test_models_lists_collections_for_keys_that_may_use_them(env: RagEnv) -> None:
    model = f"rag/{env.coll}"
    assert model in _models(env, env.other_key)  # unrestricted key
    assert model not in _models(env, env.gw.new_key(models=["fast"]))
    only = env.gw.new_key(models=["fast", model])
    listed = _models(env, only)
    assert model in listed and "embed" not in listed
    assert all(m == model or not m.startswith("rag/") for m in listed)
    family = _models(env, env.gw.new_key(models=["rag/*"]))
    assert model in family and "fast" not in family
    # names that cannot be collections are refused when the key is created
    with env.gw.admin() as c:
        r = c.post("/admin/keys", json={"team": env.team, "models": ["rag/bad name"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"


def test_rag_model_unknown_collection_is_404_and_audited(env: RagEnv) -> None:
    r = env.chat(env.other_key, QUESTION, coll="no-such-collection")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "collection_not_found"
    assert r.headers["x-lockgate-deployment"] == "rag/no-such-collection"


def test_rag_model_answers_on_anthropic_messages(env: RagEnv) -> None:
    client = anthropic.Anthropic(base_url=env.gw.url, api_key=env.other_key, max_retries=0)
    msg = client.messages.create(model=f"rag/{env.coll}", max_tokens=200,
                                 messages=[{"role": "user", "content": QUESTION}])
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert "25 vacation days" in text, text


async def test_rag_model_in_a_job_task(env: RagEnv, tmp_path: Path) -> None:
    """A job/batch/event task whose model is ``rag/<collection>`` runs through the router."""
    cfg = parse_config(env.gw.config_text + f"""
jobs:
  tasks:
    - name: ask-kb
      model: rag/{env.coll}
      prompt: "{{{{input.question}}}}"
""")
    rt = await Runtime.start(cfg, jobs=False, warm_up=False)
    try:
        team = Principal(key_id="k-job", team_id=env.team, team_name=env.team)
        res = await rt.task_runner("jobs").run("ask-kb", {"question": QUESTION},
                                              principal=team)
        assert "25 vacation days" in res.output["text"]
        assert res.models == [f"rag/{env.coll}"]
        # the same runtime's RAG service sees what the gateway ingested
        info = await rt.rag.collection(env.coll)
        assert info.embed_model == "embed"
        await rt.rag.ingest_documents(env.coll, [SourceDocument(
            "job/extra.md", "Interns get 10 vacation days.", principals=("public",))],
            principal=team)
    finally:
        await rt.aclose()


def _cli_query(env: RagEnv, tmp_path: Path, coll: str, question: str) -> dict[str, object]:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(env.gw.config_text)
    res = CliRunner().invoke(rag_app, ["query", coll, question, "--operator", "--json",
                                       "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("coll_kind", ["plain", "pinned"])
def test_cli_and_http_answer_alike(env: RagEnv, tmp_path: Path, coll_kind: str) -> None:
    coll = env.coll if coll_kind == "plain" else PINNED
    if coll_kind == "pinned":
        with env.gw.admin() as c:
            r = c.post(f"/v1/rag/{PINNED}/documents", json={"documents": documents(env.team)})
            assert r.status_code == 200, r.text
    with env.gw.admin() as c:  # the master key is the operator on both paths
        http = c.post(f"/v1/rag/{coll}/query", json={"question": QUESTION}).json()
    cli = _cli_query(env, tmp_path, coll, QUESTION)
    for field in ("answer", "refused", "threshold", "mode", "model", "extractive"):
        assert cli[field] == http[field], (field, cli[field], http[field])
    assert [c["chunk_id"] for c in cli["citations"]] == [  # type: ignore[attr-defined]
        c["chunk_id"] for c in http["citations"]]
    if coll_kind == "pinned":  # rag.collections.pinned.threshold applies on the CLI too
        assert cli["refused"] is True and cli["answer"] == REFUSAL
    else:
        assert cli["refused"] is False and http["model"] == "fast"
