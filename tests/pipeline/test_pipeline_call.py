"""Call.copy is dataclasses.replace(call) without its per-field work; request ids."""

from __future__ import annotations

import dataclasses
import re

from lockgate.pipeline.call import Call, EndUser, Principal, new_request_id


def test_copy_equals_replace_field_by_field() -> None:
    call = Call(kind="chat", model="m", body={"messages": []}, api_key="sk-x", stream=True,
                source="jobs", task="summarise", no_cache=True, end_user="u1",
                acting_for=EndUser("alice", ("g1",), 5), deployment_pin="m/openai:x",
                governed=False, principal=Principal("k1", "t1"))
    copied = call.copy()
    assert copied == dataclasses.replace(call)
    assert copied is not call and copied.body is call.body  # shallow, as replace
    assert all(getattr(copied, f.name) is getattr(call, f.name)
               for f in dataclasses.fields(Call))


def test_every_call_field_is_an_init_field() -> None:
    # copy passes every field to __init__ in order: a field with init=False would break it
    assert all(f.init for f in dataclasses.fields(Call))


def test_request_ids_look_as_before_and_do_not_repeat() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", rid) for rid in ids)
