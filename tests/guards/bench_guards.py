"""Guards micro-benchmark (not a test): ``PYTHONPATH=src python tests/guards/bench_guards.py``.

Prints microseconds per 1 KB message for detection, body actions, injection
scoring and streaming. Numbers are best-of-5 process CPU time on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lockgate.guards.injection import scan_chat_request
from lockgate.guards.pii.body import guard_chat_request
from lockgate.guards.pii.scanner import PiiScanner
from lockgate.guards.pii.stream import stream_redactor, stream_restorer
from lockgate.guards.pii.transform import Vault, placeholder_replacer, redact_text

PLAIN = (
    "Thanks for getting back to me so quickly. I had a look at the quarterly report and "
    "the numbers for the northern region look solid, although the marketing spend in March "
    "was higher than we planned. Could you summarise the main drivers, list the three "
    "biggest risks for next quarter, and suggest what we should tell the board on Tuesday? "
)
PII = (
    "Customer Ann Example (ann.example@example.com, +44 20 7946 0958) paid with card "
    "4111 1111 1111 1111 from 192.168.10.4; refund to DE89 3704 0044 0532 0130 00 please. "
)


def kb(text: str) -> str:
    while len(text) < 1024:
        text += text
    return text[:1024]


def bench(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t) / n)
    return best * 1e6


def stream(text: str, make: Callable[[], object], size: int) -> Callable[[], object]:
    chunks = [text[i : i + size] for i in range(0, len(text), size)]

    def run() -> object:
        t = make()
        out = [t.feed(c) for c in chunks]  # type: ignore[attr-defined]
        out.append(t.flush())  # type: ignore[attr-defined]
        return out

    return run


def main() -> None:
    s = PiiScanner()
    plain, mixed = kb(PLAIN), kb(PLAIN[:600] + PII)
    vault = Vault()
    redacted, _ = redact_text(s, mixed, placeholder_replacer(vault))
    body_plain = {"messages": [{"role": "user", "content": plain}]}
    body_mixed = {"messages": [{"role": "user", "content": mixed}]}
    rows = [
        ("find, 1 KB plain English", bench(lambda: s.find(plain), 2000)),
        ("find, 1 KB PII-dense (~8 values)", bench(lambda: s.find(mixed), 2000)),
        (
            "guard_chat_request redact, plain",
            bench(lambda: guard_chat_request(body_plain, s, "redact"), 2000),
        ),
        (
            "guard_chat_request redact_restore, PII",
            bench(lambda: guard_chat_request(body_mixed, s, "redact_restore"), 2000),
        ),
        ("injection scan, 1 KB plain", bench(lambda: scan_chat_request(body_plain), 2000)),
        (
            "stream redact, 1 KB in 4-char deltas",
            bench(stream(plain, lambda: stream_redactor(s), 4), 100),
        ),
        (
            "stream redact, 1 KB PII in 4-char deltas",
            bench(stream(mixed, lambda: stream_redactor(s), 4), 100),
        ),
        (
            "stream redact, 1 KB in 32-char deltas",
            bench(stream(mixed, lambda: stream_redactor(s), 32), 300),
        ),
        (
            "stream restore, 1 KB in 4-char deltas",
            bench(stream(redacted, lambda: stream_restorer(vault), 4), 300),
        ),
    ]
    for name, us in rows:
        print(f"{name:45s} {us:9.1f} us")


if __name__ == "__main__":
    main()
