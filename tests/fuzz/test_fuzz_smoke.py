from tests.fuzz.conftest import assert_openai_error, auth


def test_gateway_up(client, fuzz_key) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/chat/completions", headers=auth(fuzz_key),
                    json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(r)
    assert r.status_code == 200
