"""The signed end-user header and the caller it expands to (lockgate.api.rag_identity)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lockgate.api.rag_identity import EndUser, parse_end_user, sign_end_user
from lockgate.errors import Unauthorized
from lockgate.pipeline.call import Principal
from lockgate.rag.identity import caller_for

SECRET = "identity-secret-0123456789"
NOW = 1_800_000_000


def test_round_trip_and_principals() -> None:
    value = sign_end_user(SECRET, "u-1@corp", ("hr", "eng"), ts=NOW)
    eu = parse_end_user(value, SECRET, 300, now=NOW + 299)
    assert eu == EndUser("u-1@corp", ("hr", "eng"), NOW)
    team_key = Principal(key_id="k", team_id="t-id", team_name="finance")
    assert caller_for(team_key, eu).principals() == [
        "group:eng", "group:hr", "public", "team:finance", "user:u-1@corp"]
    assert caller_for(team_key, None).principals() == ["public", "team:finance"]
    no_name = Principal(key_id="k", team_id="t-id")
    assert caller_for(no_name, None).principals() == ["public", "team:t-id"]


def test_master_key_is_operator_only_without_header() -> None:
    master = Principal(key_id="master", team_id=None, is_master=True)
    assert caller_for(master, None).all_access is True
    c = caller_for(master, EndUser("bob", ("sales",), NOW))
    assert c.all_access is False and c.principals() == ["group:sales", "public", "user:bob"]


def test_empty_groups() -> None:
    value = sign_end_user(SECRET, "bob", ts=NOW)
    assert value.startswith("bob;groups=;ts=")
    assert parse_end_user(value, SECRET, 60, now=NOW).groups == ()


@pytest.mark.parametrize("mutate", [
    lambda v: v.replace("groups=hr", "groups=hr,admin"),
    lambda v: v.replace("bob", "eve"),
    lambda v: v.replace(f"ts={NOW}", f"ts={NOW + 10}"),
    lambda v: v.rpartition(";sig=")[0],
    lambda v: v + "0",
    lambda v: "",
    lambda v: ";sig=" + v.rpartition(";sig=")[2],
])
def test_tampering_is_rejected(mutate: Callable[[str], str]) -> None:
    value = sign_end_user(SECRET, "bob", ("hr",), ts=NOW)
    with pytest.raises(Unauthorized) as exc:
        parse_end_user(mutate(value), SECRET, 300, now=NOW)
    assert exc.value.status == 401 and exc.value.code == "invalid_end_user"


def test_expiry_both_ways_and_missing_secret() -> None:
    value = sign_end_user(SECRET, "bob", ts=NOW)
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(Unauthorized, match="expired"):
            parse_end_user(value, SECRET, 300, now=now)
    with pytest.raises(Unauthorized, match="not enabled"):
        parse_end_user(value, None, 300, now=NOW)


def test_signed_extra_fields_and_bad_names_are_rejected() -> None:
    import hashlib
    import hmac

    def raw(payload: str) -> str:
        sig = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload};sig={sig}"

    for payload in (f"bob;groups=hr;ts={NOW};admin=1", f"bob;ts={NOW}",
                    f"bob;groups=h r;ts={NOW}", "bob;groups=hr;ts=soon",
                    f"bob;groups=a;groups=b;ts={NOW}"):
        with pytest.raises(Unauthorized):
            parse_end_user(raw(payload), SECRET, 300, now=NOW)
    with pytest.raises(ValueError):
        sign_end_user(SECRET, "bob;groups=admin", ())
    with pytest.raises(ValueError):
        sign_end_user(SECRET, "bob", ("a,b",))
