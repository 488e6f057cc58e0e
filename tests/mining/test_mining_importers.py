"""CSV event logs the csv module itself refuses are a clear input error, not a crash
(found by tests/fuzz/test_fuzz_mining.py in a clean-clone CI run: a 500)."""

from __future__ import annotations

import pytest

from lockgate.mining.importers import MiningInputError, read_csv


@pytest.mark.parametrize("data", [
    b"case,activity,timestamp\nc1,a\rb,2026-01-01T00:00:00\n",  # bare CR inside a field
    b"case,activity,timestamp\nc1,\"open,2026-01-01T00:00:00\n",  # unclosed quote
])
def test_unparseable_csv_is_an_input_error(data: bytes) -> None:
    with pytest.raises(MiningInputError):
        read_csv(data)


def test_a_well_formed_csv_still_reads() -> None:
    log = read_csv(b"case,activity,timestamp\nc1,open,2026-01-01T00:00:00\n"
                   b"c1,close,2026-01-01T01:00:00\n")
    assert [e.activity for e in log.events()] == ["open", "close"]
