r"""The built-in PII detectors: one pre-compiled regex plus a validator per entity type.

A :class:`Detector` is data, not code paths: ``pattern`` finds raw candidates,
``validate`` turns a raw match into zero or more entity spans (checksums,
validity rules, trimming of over-long matches), and ``tail`` describes which
text at the end of a buffer could still be the start of a match, so the
streaming redactor knows how much to hold back (see :mod:`.scanner`).

Rules every pattern here keeps (the streaming proof relies on them):

* bounded length (no ``*``/``+``), so a match is at most a few hundred characters;
* look-behinds see at most one character before the match; look-aheads are one
  character, or longer only when every character but the last is in the
  pattern's own character set (``.`` before a digit, say);
* ``tail`` is a regex run on the *reversed* end of the buffer whose longest
  match covers every suffix at which an attempt could still change with more
  text (detectors share tails that are supersets of each other's);
* ``gate``, when set, is a regex that must occur inside any match: if it does
  not occur after the scan start, the detector is skipped, and with
  ``reach_before``/``reach_after`` only the window around gate hits is scanned.

Speed: patterns start with a character class and check the character before
the match with a two-character look-behind (``\d(?<![\w.]\d)``), which lets
the regex engine skip quickly to possible starts instead of trying every
position.

What is covered (and what is not):

* EMAIL: ``local@domain.tld`` with Unicode letters; no quoted local parts.
* PHONE: E.164 (``+14155552671``), international with separators
  (``+44 20 7946 0958``, ``+1 (415) 555-2671``), NANP (``(415) 555-2671``,
  ``415.555.2671``; area and exchange must start 2-9) and trunk-0 national
  formats with separators (``020 7946 0958``, ``01 23 45 67 89``; 10-12
  digits). Bare digit runs without ``+`` are not phones (years, amounts, ids).
* CREDIT_CARD: 13-19 digits, first digit 2-6 (the payment networks), Luhn-valid,
  printed as one block, groups of four, or 4-6-4/4-6-5 (Amex, Diners).
* IBAN: registry country code (upper case) and length, mod-97 check; compact or
  in groups of four.
* IPV4 (octets <= 255) and IPV6 (validated by :mod:`ipaddress`; ``::1``-style
  addresses with a single group are ignored).
* US_SSN (``123-45-6789`` or spaced, SSA validity rules; unseparated nine-digit
  runs are not matched), UK_NINO (prefix rules; no checksum exists), ES_NIF
  (DNI/NIE letter), IT_FISCAL_CODE (check character, omocodia), FR_NIR (key,
  Corsica).

Entity types: EMAIL, PHONE, CREDIT_CARD, IBAN, IPV4, IPV6, US_SSN, UK_NINO,
ES_NIF, IT_FISCAL_CODE, FR_NIR. Person names are not detected: no offline
detector gives honest results here (presidio with a blank spaCy pipeline finds
no PERSON entities; its NER needs a downloaded model).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from lockgate.guards.pii.checksums import (
    IBAN_LENGTHS,
    es_nif_valid,
    fr_nir_valid,
    iban_valid,
    it_fiscal_code_valid,
    luhn_valid,
    us_ssn_valid,
)

__all__ = [
    "ALL_ENTITIES",
    "BUILTIN_DETECTORS",
    "Detector",
    "Validator",
    "detectors_for",
]

Validator = Callable[[str], list[tuple[int, int]]]
"""Raw match text -> entity spans relative to the match (empty: not PII)."""


@dataclass(frozen=True, slots=True)
class Detector:
    """One entity type: candidates by regex, then validation."""

    entity: str
    pattern: re.Pattern[str]
    tail: re.Pattern[str]
    """Matched against the reversed buffer end; its length is the holdback this detector needs."""
    validate: Validator
    gate: re.Pattern[str] | None = None
    """Must occur in every match; the detector is skipped when it is absent."""
    reach_before: int | None = None
    """With a gate: every match starts at most this many characters before its first gate
    occurrence, so scanning may start there (the gate must read the same reversed, like
    ``\\d`` or ``@``, because its last occurrence is found on the reversed text)."""
    reach_after: int = 0
    """With ``reach_before``: a match, plus its look-ahead, ends at most this many
    characters after the end of its last gate occurrence, so scanning may stop there."""


def _whole(check: Callable[[str], bool]) -> Validator:
    def validate(raw: str) -> list[tuple[int, int]]:
        return [(0, len(raw))] if check(raw) else []

    return validate


# ------------------------------------------------------------------ e-mail

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@(?:[\w-]{1,63}\.){1,6}[^\W\d_]{2,24}(?![\w-])")
_EMAIL_TAIL = re.compile(r"[\w.%+@-]{1,480}")


def _email_ok(raw: str) -> list[tuple[int, int]]:
    local = raw.split("@", 1)[0]
    if local.startswith(".") or local.endswith(".") or ".." in raw:
        return []
    return [(0, len(raw))]


# ------------------------------------------------------------------ phone

_PHONE = re.compile(
    # the first character is consumed up front; each branch re-checks it with (?<=...)
    r"[+(\d](?<![\w+][+(\d])(?:"
    r"(?<=\+)[1-9]\d{6,14}"  # E.164 compact
    r"|(?<=\+)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?[ .-]?\d{1,5}(?:[ .-]\d{1,8}){1,6}"  # intl
    r"|(?<=1)[ .-](?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # NANP with country code
    r"|(?<=\()\d{3}\) ?\d{3}[ .-]\d{4}"  # NANP (415) 555-2671
    r"|(?<=\d)\d{2}[ .-]\d{3}[ .-]\d{4}"  # NANP 415-555-2671
    r"|(?<=\()0\d{1,4}\) ?\d{3,8}(?:[ -]\d{3,4})?"  # (020) 7946 0958
    r"|(?<=0)\d{1,4}(?:[ .-]\d{2,8}){1,4}"  # national trunk-0 formats with separators
    r")(?!\w)"
)
_NUMBERISH_TAIL = re.compile(r"[\d+() .-]{1,121}")
"""Shared by phone, card and SSN: a superset of each one's characters and length."""
_PHONE_TAIL = _NUMBERISH_TAIL
_NON_DIGIT = re.compile(r"\D")


def _phone_ok(raw: str) -> list[tuple[int, int]]:
    digits = _NON_DIGIT.sub("", raw)
    n = len(digits)
    if raw.startswith("+"):
        ok = 8 <= n <= 15
    elif raw.startswith("0") or raw.startswith("(0"):
        ok = 10 <= n <= 12
    else:  # NANP, optionally with a leading country code 1
        if n == 11 and digits[0] == "1":
            digits = digits[1:]
        ok = len(digits) == 10 and digits[0] in "23456789" and digits[3] in "23456789"
    return [(0, len(raw))] if ok else []


# ------------------------------------------------------------------ payment cards

_CARD = re.compile(r"\d(?<!\d\d)(?:[ -]?\d){12,59}(?!\d)")
_CARD_TAIL = _NUMBERISH_TAIL
_DIGIT_RUN = re.compile(r"\d+")


def _card_layout_ok(sizes: list[int]) -> bool:
    """Printed card layouts: one block; groups of 4 with a shorter last group; 4-6-4/4-6-5."""
    if len(sizes) == 1:
        return True
    if all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4:
        return True
    return len(sizes) == 3 and sizes[0] == 4 and sizes[1] == 6 and sizes[2] in (4, 5)


def _card_ok(raw: str) -> list[tuple[int, int]]:
    """Every run of whole digit groups that is a card: 13-19 digits in a printed card
    layout, major-network first digit (2-6), Luhn-valid. Overlapping runs are merged
    later, so a card next to other digits is still covered completely."""
    groups = [(m.start(), m.end()) for m in _DIGIT_RUN.finditer(raw)]
    spans: list[tuple[int, int]] = []
    for i in range(len(groups)):
        if raw[groups[i][0]] not in "23456":
            continue
        digits = ""
        sizes: list[int] = []
        for j in range(i, len(groups)):
            part = raw[groups[j][0] : groups[j][1]]
            digits += part
            sizes.append(len(part))
            if len(digits) > 19:
                break
            if len(digits) >= 13 and _card_layout_ok(sizes) and luhn_valid(digits):
                spans.append((groups[i][0], groups[j][1]))
    return spans


# ------------------------------------------------------------------ IBAN

_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_IBAN_START = re.compile(r"(?<![^ ])[A-Z]{2}\d{2}")
_IBAN_TAIL = re.compile(r"[ A-Za-z0-9]{0,61}\d{2}[A-Z]{2}|\d{1,2}[A-Z]{2}|[A-Z]{1,2}")


def _iban_at(raw: str, k: int) -> tuple[int, int] | None:
    want = IBAN_LENGTHS.get(raw[k : k + 2].upper())
    if want is None:
        return None
    count = 0
    end = -1
    for i in range(k, len(raw)):
        if raw[i] != " ":
            count += 1
            if count == want:
                end = i + 1
                break
    if end < 0 or (end < len(raw) and raw[end] != " "):
        return None
    return (k, end) if iban_valid(raw[k:end].replace(" ", "").upper()) else None


def _iban_ok(raw: str) -> list[tuple[int, int]]:
    """IBANs starting at any word start inside the raw match (the regex is greedy and may
    start at a preceding word such as ``AB12``)."""
    spans: list[tuple[int, int]] = []
    for m in _IBAN_START.finditer(raw):
        span = _iban_at(raw, m.start())
        if span is not None:
            spans.append(span)
    return spans


# ------------------------------------------------------------------ IP addresses

_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV4_TAIL = _EMAIL_TAIL

_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
)
_IPV6_TAIL = re.compile(r"[0-9A-Fa-f:.]{1,56}")
_HEX = re.compile(r"[0-9A-Fa-f]")


def _ipv6_ok(raw: str) -> list[tuple[int, int]]:
    try:
        addr = ipaddress.IPv6Address(raw)
    except ValueError:
        return []
    nonzero = [g for g in addr.exploded.split(":") if g != "0000"]
    if len(nonzero) < 2 or len(_HEX.findall(raw)) < 4:
        return []  # "::1", "a::b" and the like: too weak to call an address
    return [(0, len(raw))]


# ------------------------------------------------------------------ national ids

_SSN = re.compile(r"\d(?<![\w-]\d)\d{2}([- ])\d{2}\1\d{4}(?![\w-])")
_SSN_TAIL = _NUMBERISH_TAIL

_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9][A-Z])[A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"
)
_ID_TAIL = re.compile(r"[A-Z0-9 ]{1,24}")
"""Shared by NINO and NIR."""
_NINO_TAIL = _ID_TAIL
_NINO_BAD_PREFIX = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}

_ES_NIF = re.compile(
    r"[\dXYZ](?<![A-Za-z0-9][\dXYZ])(?:(?<=\d)\d{7}|(?<=[XYZ])-?\d{7})-?[A-Z](?![A-Za-z0-9])"
)
_ES_NIF_TAIL = _EMAIL_TAIL  # a superset: tails are shared to keep holdback cheap

_CF_D = "[0-9LMNPQRSTUV]"
_IT_CF = re.compile(
    rf"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]{{5}}{_CF_D}{{2}}[A-EHLMPRST]{_CF_D}{{2}}[A-Z]{_CF_D}{{3}}"
    r"[A-Z](?![A-Za-z0-9])"
)
_IT_CF_TAIL = _EMAIL_TAIL

_FR_NIR = re.compile(
    r"[1-478](?<!\w[1-478]) ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3}"
    r" ?\d{2}(?!\w)"
)
_FR_NIR_TAIL = _ID_TAIL


DIGIT_GATE = re.compile(r"\d")
_AT_GATE = re.compile("@")
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_UPPER6_GATE = re.compile(r"[A-Z]{6}")  # a codice fiscale starts with six capitals


# (reach_before, reach_after) for windowed scanning, see Detector
_DIGIT_REACH = (4, 130)  # every digit entity has a digit within its first 4 characters
_EMAIL_REACH = (64, 420)  # local part <= 64 characters, domain + look-ahead <= 420


def _ipv4_ok(raw: str) -> bool:
    return all(int(octet) <= 255 for octet in raw.split("."))


BUILTIN_DETECTORS: tuple[Detector, ...] = (
    # order = priority when spans overlap (the merged span takes the first one's label)
    Detector("EMAIL", _EMAIL, _EMAIL_TAIL, _email_ok, _AT_GATE, *_EMAIL_REACH),
    Detector("IBAN", _IBAN, _IBAN_TAIL, _iban_ok, DIGIT_GATE, *_DIGIT_REACH),
    Detector("CREDIT_CARD", _CARD, _CARD_TAIL, _card_ok, DIGIT_GATE, *_DIGIT_REACH),
    Detector(
        "US_SSN",
        _SSN,
        _SSN_TAIL,
        _whole(lambda s: us_ssn_valid(s[:3] + s[4:6] + s[7:])),
        DIGIT_GATE,
        *_DIGIT_REACH,
    ),
    Detector(
        "UK_NINO",
        _NINO,
        _NINO_TAIL,
        _whole(lambda s: s[:2] not in _NINO_BAD_PREFIX),
        DIGIT_GATE,
        *_DIGIT_REACH,
    ),
    Detector("ES_NIF", _ES_NIF, _ES_NIF_TAIL, _whole(es_nif_valid), DIGIT_GATE, *_DIGIT_REACH),
    Detector(
        "IT_FISCAL_CODE", _IT_CF, _IT_CF_TAIL, _whole(it_fiscal_code_valid), _UPPER6_GATE, 0, 11
    ),
    Detector("FR_NIR", _FR_NIR, _FR_NIR_TAIL, _whole(fr_nir_valid), DIGIT_GATE, *_DIGIT_REACH),
    Detector("IPV6", _IPV6, _IPV6_TAIL, _ipv6_ok, _IPV6_GATE, 5, 60),
    Detector("IPV4", _IPV4, _IPV4_TAIL, _whole(_ipv4_ok), DIGIT_GATE, *_DIGIT_REACH),
    Detector("PHONE", _PHONE, _PHONE_TAIL, _phone_ok, DIGIT_GATE, *_DIGIT_REACH),
)

ALL_ENTITIES: tuple[str, ...] = tuple(d.entity for d in BUILTIN_DETECTORS)


def detectors_for(entities: list[str] | tuple[str, ...] | None) -> tuple[Detector, ...]:
    """Built-in detectors for the given entity names (None: all), in priority order."""
    if entities is None:
        return BUILTIN_DETECTORS
    unknown = set(entities) - set(ALL_ENTITIES)
    if unknown:
        raise ValueError(
            f"unknown PII entity types: {sorted(unknown)}; known: {list(ALL_ENTITIES)}"
        )
    wanted = set(entities)
    return tuple(d for d in BUILTIN_DETECTORS if d.entity in wanted)
