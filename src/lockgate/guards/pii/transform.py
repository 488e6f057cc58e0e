"""Replacing findings in text: labels, per-request placeholders, and restoring them.

* ``redact``: each finding becomes ``[EMAIL]``, ``[CREDIT_CARD]``, ...
* ``redact_restore``: each distinct value becomes a stable placeholder such as
  ``<EMAIL_1>`` recorded in a per-request :class:`Vault`; :func:`restore_text`
  (or the streaming restorer) puts the originals back into the answer.

Placeholders the model changes (``<EMAIL 1>``, ``EMAIL_1``) are not restored.
Placeholder-like strings already present in the caller's text are reserved
(:meth:`Vault.reserve_from`) so a new placeholder never collides with them;
a literal ``<EMAIL_1>`` the model writes on its own is restored if the vault
assigned that name.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lockgate.guards.pii.scanner import Finding, PiiScanner, step

__all__ = [
    "PLACEHOLDER_RE",
    "Replacer",
    "RestoreMatcher",
    "Vault",
    "label_replacer",
    "placeholder_replacer",
    "redact_text",
    "render",
    "restore_text",
]

Replacer = Callable[[Finding, str], str]
"""(finding, original value) -> replacement text."""

PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9_]{0,30}_\d{1,6}>")
_PLACEHOLDER_TAIL = re.compile(r"[A-Z0-9_]{0,39}<")


class Vault:
    """Per-request map between original values and placeholders. Never logged."""

    __slots__ = ("_by_placeholder", "_by_value", "_counts", "_reserved")

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._reserved: set[str] = set()

    def reserve_from(self, text: str) -> None:
        """Never hand out a placeholder that already appears in ``text``."""
        if "<" in text:
            self._reserved.update(PLACEHOLDER_RE.findall(text))

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        ph = self._by_value.get(key)
        if ph is None:
            n = self._counts.get(entity, 0)
            while True:
                n += 1
                ph = f"<{entity}_{n}>"
                if ph not in self._reserved:
                    break
            self._counts[entity] = n
            self._by_value[key] = ph
            self._by_placeholder[ph] = value
        return ph

    def original(self, placeholder: str) -> str | None:
        return self._by_placeholder.get(placeholder)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def __bool__(self) -> bool:
        return bool(self._by_placeholder)

    def __repr__(self) -> str:  # never show values
        return f"Vault({len(self)} entries)"


def label_replacer(finding: Finding, value: str) -> str:
    return f"[{finding.entity}]"


def placeholder_replacer(vault: Vault) -> Replacer:
    def replace(finding: Finding, value: str) -> str:
        return vault.placeholder(finding.entity, value)

    return replace


def render(text: str, start: int, end: int, findings: list[Finding], replace: Replacer) -> str:
    """``text[start:end]`` with every finding (inside that range) replaced."""
    if not findings:
        return text[start:end]
    parts: list[str] = []
    at = start
    for f in findings:
        parts.append(text[at : f.start])
        parts.append(replace(f, text[f.start : f.end]))
        at = f.end
    parts.append(text[at:end])
    return "".join(parts)


def redact_text(
    scanner: PiiScanner, text: str, replace: Replacer = label_replacer
) -> tuple[str, list[Finding]]:
    """Whole-string redaction; findings are positions in the *input* text."""
    findings, _ = step(scanner, text, 0, final=True)
    if not findings:
        return text, findings
    return render(text, 0, len(text), findings, replace), findings


class RestoreMatcher:
    """Finds the vault's placeholders (a :class:`~.scanner.Matcher` for :func:`step`)."""

    __slots__ = ("vault",)

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def hold(self, buf: str, pos: int) -> int:
        n = len(buf)
        if "<" not in buf[max(pos, n - 40) :]:
            return 0
        m = _PLACEHOLDER_TAIL.match(buf[max(pos, n - 40) :][::-1])
        return m.end() if m else 0

    def scan(
        self, buf: str, pos: int, limit: int
    ) -> tuple[list[tuple[int, int]], list[tuple[int, Finding]]]:
        raw: list[tuple[int, int]] = []
        found: list[tuple[int, Finding]] = []
        if "<" not in buf:
            return raw, found
        for m in PLACEHOLDER_RE.finditer(buf, pos):
            s = m.start()
            if s >= limit:
                break
            raw.append((s, m.end()))
            if self.vault.original(m.group()) is not None:
                found.append((0, Finding("PLACEHOLDER", s, m.end())))
        return raw, found


def _restore_replacer(vault: Vault) -> Replacer:
    def replace(finding: Finding, value: str) -> str:
        original = vault.original(value)
        return value if original is None else original

    return replace


def restore_text(vault: Vault, text: str) -> str:
    """``text`` with the vault's placeholders replaced by the original values."""
    if not vault or "<" not in text:
        return text
    findings, _ = step(RestoreMatcher(vault), text, 0, final=True)
    return render(text, 0, len(text), findings, _restore_replacer(vault))


def restore_replacer(vault: Vault) -> Replacer:
    return _restore_replacer(vault)
