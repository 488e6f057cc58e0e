"""Mining results against hand-computed answers and the book's running example."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from lockgate.mining import (
    Event,
    EventLog,
    MiningInputError,
    align,
    build_facts,
    mine,
    read_csv,
    read_log_file,
    read_xes,
    to_dot,
)

DATA = Path(__file__).parent / "data"
MIN = 60.0


def _edge(result: object, a: str, b: str) -> dict:
    return next(e for e in result.edges if (e["source"], e["target"]) == (a, b))  # type: ignore[attr-defined]


def _act(result: object, name: str) -> dict:
    return next(r for r in result.activities if r["activity"] == name)  # type: ignore[attr-defined]


@pytest.fixture(params=["csv", "xes"])
def hand(request: pytest.FixtureRequest) -> EventLog:
    return read_log_file(DATA / f"hand_log.{request.param}")


def test_hand_log_overview_and_dfg(hand: EventLog) -> None:
    r = mine(hand, reference=[["A", "B", "C"]])
    ov = r.overview
    assert (ov["cases"], ov["events"], ov["activities"], ov["variants"]) == (3, 9, 3, 3)
    # case throughput: c1 09:10->10:30 = 80, c2 09:05->11:20 = 135, c3 09:10->13:20 = 250 min
    assert ov["throughput"]["median_s"] == 135 * MIN
    assert ov["throughput"]["mean_s"] == pytest.approx((80 + 135 + 250) / 3 * MIN)
    assert ov["span_s"] == 255 * MIN  # 09:05 -> 13:20
    ab = _edge(r, "A", "B")  # c1 09:10->10:00 = 50, c2 09:05->09:40 = 35
    assert (ab["count"], ab["mean_s"], ab["median_s"], ab["rework"]) == (2, 42.5 * MIN,
                                                                          42.5 * MIN, 0)
    bc = _edge(r, "B", "C")  # c1 30, c2 20
    assert (bc["count"], bc["mean_s"]) == (2, 25 * MIN)
    bb = _edge(r, "B", "B")  # c2 09:40 -> 11:00, re-enters B
    assert (bb["count"], bb["median_s"], bb["rework"]) == (1, 80 * MIN, 1)
    ac = _edge(r, "A", "C")  # c3 09:10 -> 13:20
    assert ac["count"] == 1 and ac["total_s"] == 250 * MIN
    assert ac["share_of_case_time"] == pytest.approx(250 / 465)
    assert len(r.edges) == 4
    assert r.start_activities == {"A": 3} and r.end_activities == {"C": 3}


def test_hand_log_steps_waits_and_processing(hand: EventLog) -> None:
    r = mine(hand)
    b = _act(r, "B")
    assert (b["count"], b["cases"]) == (3, 2)
    # sojourn before B: 50, 35, 80 minutes
    assert b["sojourn"]["median_s"] == 50 * MIN
    assert b["sojourn"]["total_s"] == 165 * MIN
    # waiting = start - previous completion: 09:30-09:10, 09:20-09:05, 10:40-09:40
    assert b["waiting"]["median_s"] == 20 * MIN
    assert b["waiting"]["mean_s"] == pytest.approx((20 + 15 + 60) / 3 * MIN)
    # processing = completion - start: 30, 20, 20
    assert b["processing"]["median_s"] == 20 * MIN
    c = _act(r, "C")
    assert c["waiting"]["median_s"] == 0.0 and c["waiting"]["mean_s"] == 80 * MIN
    assert c["share_of_case_time"] == pytest.approx(300 / 465)
    a = _act(r, "A")
    assert a["sojourn"] is None and a["waiting"] is None  # always first in its case
    assert a["processing"]["median_s"] == 10 * MIN
    assert a["per_day"] == pytest.approx(3 / (255 / 1440))


def test_hand_log_bottlenecks_rework_conformance(hand: EventLog) -> None:
    r = mine(hand, reference=[["A", "B", "C"]])
    assert r.bottlenecks["steps"][0]["activity"] == "C"  # 300 of 465 case minutes
    top_edge = r.bottlenecks["edges"][0]
    assert (top_edge["source"], top_edge["target"]) == ("A", "C")
    assert r.rework == [{"activity": "B", "cases": 1, "share_of_cases": 1 / 3,
                         "extra_executions": 1, "self_loops": 1,
                         "entered_from": [{"source": "B", "count": 1}]}]
    conf = r.conformance
    assert conf is not None
    # c1 fits; c2 ABBC has one inserted B (1 - 1/7); c3 AC skips B (1 - 1/5)
    assert (conf.cases, conf.fitting_cases) == (3, 1)
    assert conf.mean_fitness == pytest.approx((1 + 6 / 7 + 4 / 5) / 3)
    assert {(d["kind"], d["activity"], d["cases"]) for d in conf.deviations} == {
        ("inserted", "B", 1), ("skipped", "B", 1)}


RUNNING = {  # the book's log L in its letter notation
    "a": "register request", "b": "examine thoroughly", "c": "examine casually",
    "d": "check ticket", "e": "decide", "f": "reinitiate request", "g": "pay compensation",
    "h": "reject request",
}
# >L of the book's footprint (directly-follows pairs), with counts computed by hand
FOLLOWS = {"ab": 1, "ac": 3, "ad": 2, "bd": 2, "be": 1, "cd": 4, "ce": 2, "db": 1, "dc": 2,
           "de": 6, "ef": 3, "eg": 3, "eh": 3, "fb": 1, "fc": 1, "fd": 1}


def test_running_example_matches_the_published_log() -> None:
    r = mine(read_log_file(DATA / "running_example.csv"))
    ov = r.overview
    assert (ov["cases"], ov["events"], ov["activities"], ov["variants"]) == (6, 42, 8, 6)
    got = {(e["source"], e["target"]): e["count"] for e in r.edges}
    want = {(RUNNING[k[0]], RUNNING[k[1]]): n for k, n in FOLLOWS.items()}
    assert got == want
    assert r.start_activities == {"register request": 6}
    assert r.end_activities == {"reject request": 3, "pay compensation": 3}
    # rework: "check ticket" and "decide" repeat in cases 3 and 5
    rw = {x["activity"]: (x["cases"], x["extra_executions"]) for x in r.rework}
    assert rw["decide"] == (2, 3) and rw["check ticket"] == (2, 3)
    assert rw["reinitiate request"] == (1, 1)
    # one hour between events: every edge's median is 3600 s
    assert {e["median_s"] for e in r.edges} == {3600.0}


def test_running_example_conformance_to_the_happy_path() -> None:
    happy = [[RUNNING[x] for x in "adceg"], [RUNNING[x] for x in "acdeg"],
             [RUNNING[x] for x in "abdeh"], [RUNNING[x] for x in "adbeh"]]
    r = mine(read_log_file(DATA / "running_example.csv"), reference=happy)
    conf = r.conformance
    assert conf is not None
    assert conf.fitting_cases == 4  # cases 1, 2, 4, 6
    fits = sorted(v["fitness"] for v in r.variants)
    assert fits[-4:] == [1.0, 1.0, 1.0, 1.0]


def test_csv_and_xes_give_the_same_events() -> None:
    a = read_log_file(DATA / "hand_log.csv").events()
    b = read_log_file(DATA / "hand_log.xes").events()
    assert a == b


def test_alignment_moves() -> None:
    al = align(["a", "x", "c"], [["a", "b", "c"], ["a", "c"]])
    assert (al.cost, al.path, al.inserted, al.skipped) == (1, 1, ("x",), ())
    assert al.fitness == pytest.approx(1 - 1 / 5)
    assert align([], [["a"]]).fitness == 0.0


def test_equal_timestamps_keep_input_order() -> None:
    log = EventLog.from_events([Event("1", "x", 5.0), Event("1", "y", 5.0),
                                Event("1", "z", 5.0)])
    assert [e.activity for e in log.events()] == ["x", "y", "z"]


def test_empty_log_mines_to_zeros() -> None:
    r = mine(EventLog.from_events([]))
    assert r.overview["events"] == 0 and r.edges == [] and r.variants == []


def test_vectorised_dfg_equals_a_plain_loop() -> None:
    rng = np.random.default_rng(7)
    events = [Event(str(rng.integers(0, 40)), f"s{rng.integers(0, 6)}",
                    float(rng.integers(0, 10_000))) for _ in range(2000)]
    log = EventLog.from_events(events)
    r = mine(log)
    by_case: dict[str, list[tuple[float, int, str]]] = {}
    for i, e in enumerate(events):
        by_case.setdefault(e.case_id, []).append((e.timestamp, i, e.activity))
    want: dict[tuple[str, str], int] = {}
    for seq in by_case.values():
        seq.sort()
        for (_, _, x), (_, _, y) in itertools.pairwise(seq):
            want[(x, y)] = want.get((x, y), 0) + 1
    assert {(e["source"], e["target"]): e["count"] for e in r.edges} == want
    assert sum(v["count"] for v in r.variants) == len(by_case)


@pytest.mark.parametrize("text, needle", [
    ("case,activity\n1,a\n", "timestamp column"),
    ("", "empty"),
    ("case,activity,timestamp\n1,a,yesterday\n", "line 2"),
    ("case,activity,timestamp\n1,,2020-01-01\n", "empty case or activity"),
    ("case,activity,timestamp\n1\n", "line 2"),
])
def test_bad_csv_is_one_precise_error(text: str, needle: str) -> None:
    with pytest.raises(MiningInputError, match=needle):
        read_csv(text)


def test_xes_refuses_dtds_and_broken_xml() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa">]><log>&a;</log>'
    with pytest.raises(MiningInputError, match="DTD"):
        read_xes(bomb)
    with pytest.raises(MiningInputError, match="well-formed"):
        read_xes(b"<log><trace>")
    with pytest.raises(MiningInputError, match="time:timestamp"):
        read_xes(b'<log><trace><event><string key="concept:name" value="a"/></event>'
                 b"</trace></log>")


def test_too_many_events_is_refused() -> None:
    with pytest.raises(MiningInputError, match="more than 2 events"):
        read_csv("case,activity,timestamp\n1,a,1\n1,b,2\n1,c,3\n", max_events=2)


def test_facts_carry_the_numbers_and_dot_names_every_activity(hand: EventLog) -> None:
    r = mine(hand, reference=[["A", "B", "C"]])
    facts = build_facts(r)
    assert facts[0].numbers["cases"] == 3
    step = next(f for f in facts if f.kind == "bottleneck_step")
    assert step.numbers["share_of_case_time"] == pytest.approx(300 / 465)
    assert "64.5%" in step.text
    dot = to_dot(r)
    for name in ("A", "B", "C"):
        assert f'label="{name}\\n' in dot
    assert "style=dashed" in dot  # the B -> B rework edge


def test_xes_in_another_encoding_is_refused() -> None:
    bomb = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE l [<!ENTITY a "x">]><log/>'
    with pytest.raises(MiningInputError, match="not UTF-8"):
        read_xes(bomb.encode("utf-16"))
