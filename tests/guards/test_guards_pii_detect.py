"""PII detection: examples per entity type, near misses, and property tests."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.guards.pii.checksums import (
    es_nif_valid,
    fr_nir_valid,
    iban_valid,
    it_fiscal_code_valid,
    luhn_valid,
    us_ssn_valid,
)
from lockgate.guards.pii.detectors import ALL_ENTITIES, detectors_for
from lockgate.guards.pii.scanner import PiiScanner

from .strategies import (
    SEPARATORS,
    card_numbers,
    formatted,
    formatted_ibans,
    ibans,
    no_digit_text,
    surrounding,
)

SCANNER = PiiScanner()


def entities(text: str) -> list[str]:
    return [f.entity for f in SCANNER.find(text)]


def values(text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in SCANNER.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.smith+tag@example.co.uk today", ("EMAIL", "john.smith+tag@example.co.uk")),
        ("josé@exämple.de", ("EMAIL", "josé@exämple.de")),
        ("call +14155552671 now", ("PHONE", "+14155552671")),
        ("call +1 (415) 555-2671.", ("PHONE", "+1 (415) 555-2671")),
        ("call (415) 555-2671", ("PHONE", "(415) 555-2671")),
        ("call 415.555.2671", ("PHONE", "415.555.2671")),
        ("ring +44 20 7946 0958", ("PHONE", "+44 20 7946 0958")),
        ("ring 020 7946 0958", ("PHONE", "020 7946 0958")),
        ("mobile 07700 900123", ("PHONE", "07700 900123")),
        ("tel 01 23 45 67 89", ("PHONE", "01 23 45 67 89")),
        ("Tel. 030 12345678", ("PHONE", "030 12345678")),
        ("+49 30 1234567", ("PHONE", "+49 30 1234567")),
        ("card 4111 1111 1111 1111.", ("CREDIT_CARD", "4111 1111 1111 1111")),
        ("amex 3782-822463-10005", ("CREDIT_CARD", "3782-822463-10005")),
        ("iban DE89 3704 0044 0532 0130 00 please", ("IBAN", "DE89 3704 0044 0532 0130 00")),
        ("GB82WEST12345698765432", ("IBAN", "GB82WEST12345698765432")),
        ("host 192.168.10.1.", ("IPV4", "192.168.10.1")),
        ("addr 2001:db8:85a3::8a2e:370:7334", ("IPV6", "2001:db8:85a3::8a2e:370:7334")),
        ("link-local fe80::1", ("IPV6", "fe80::1")),
        ("mapped ::ffff:192.0.2.128", ("IPV6", "::ffff:192.0.2.128")),
        ("SSN 536-22-1234", ("US_SSN", "536-22-1234")),
        ("NI number AB 12 34 56 C", ("UK_NINO", "AB 12 34 56 C")),
        ("NINO JG103759A", ("UK_NINO", "JG103759A")),
        ("DNI 12345678Z", ("ES_NIF", "12345678Z")),
        ("NIE X1234567L", ("ES_NIF", "X1234567L")),
        ("CF RSSMRA85T10A562S", ("IT_FISCAL_CODE", "RSSMRA85T10A562S")),
        ("NIR 1 84 12 76 451 089 46", ("FR_NIR", "1 84 12 76 451 089 46")),
        ("NIR 269052A12345618", ("FR_NIR", "269052A12345618")),
    ],
)
def test_detects(text: str, expected: tuple[str, str]) -> None:
    assert values(text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 revenue was $1,234,567.89 (up 12.5%) and 1999-2024 was flat.",
        "Order 123456 shipped on 2024-01-15 at 09:30:15; version 1.2.3; build 10.0.19045.",
        "4111 1111 1111 1112",  # Luhn-invalid
        "1234567890123456",  # Luhn-valid? no - and starts with 1
        "DE89370400440532013001",  # bad IBAN check digits
        "XX89370400440532013000",  # unknown country
        "666-12-3456 and 900-12-3456 and 123-00-4567 and 078-05-1120",  # invalid SSNs
        "QQ 12 34 56 C and GB123456A",  # invalid NINO prefixes
        "12345678A",  # wrong NIF letter
        "RSSMRA85T10A562X",  # wrong CF check char
        "1 84 12 76 451 089 47",  # wrong NIR key
        "std::vector, a::b, 10:30:00, ::1",
        "999.1.1.1 and 1.2.3.4.5",
        "(123) 456-7890 and 123-456-7890",  # NANP area/exchange rules
        "no @ here: foo@bar, @handle, a@b",
    ],
)
def test_does_not_detect(text: str) -> None:
    assert entities(text) == []


def test_overlapping_detections_merge_into_one_span() -> None:
    text = "pay 4111 1111 1111 1111 5"  # card plus a trailing digit group
    found = SCANNER.find(text)
    assert len(found) == 1 and found[0].entity == "CREDIT_CARD"
    assert "4111 1111 1111 1111" in text[found[0].start : found[0].end]


def test_entity_selection() -> None:
    only_email = PiiScanner(detectors_for(["EMAIL"]))
    assert [f.entity for f in only_email.find("a@example.com 4111111111111111")] == ["EMAIL"]
    assert set(ALL_ENTITIES) >= {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IPV4", "IPV6"}
    with pytest.raises(ValueError, match="unknown PII entity"):
        detectors_for(["PERSON"])


def test_checksum_functions() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert not luhn_valid("41111x1111111111")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # one short
    assert us_ssn_valid("536221234") and not us_ssn_valid("000221234")
    assert es_nif_valid("12345678Z") and es_nif_valid("Y1234567X") and not es_nif_valid("Y1234567Z")
    assert it_fiscal_code_valid("RSSMRA85T10A562S")
    assert fr_nir_valid("184127645108946") and fr_nir_valid("269052A12345618")


# ------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(
    card=formatted(card_numbers()),
    before=surrounding,
    after=surrounding,
    sep1=SEPARATORS,
    sep2=SEPARATORS,
)
def test_valid_cards_in_any_text_are_detected(
    card: str, before: str, after: str, sep1: str, sep2: str
) -> None:
    text = before + sep1 + card + sep2 + after
    start = len(before) + len(sep1)
    end = start + len(card)
    found = SCANNER.find(text)
    assert any(f.start <= start and end <= f.end for f in found), (text, found)
    covering = [f for f in found if f.start <= start and end <= f.end]
    assert covering[0].entity in ("CREDIT_CARD", "EMAIL", "IBAN")


@settings(max_examples=300, deadline=None)
@given(
    digits=card_numbers(),
    bump=st.integers(1, 9),
    before=no_digit_text,
    after=no_digit_text,
    sep1=SEPARATORS,
    sep2=SEPARATORS,
    grouped=st.booleans(),
)
def test_luhn_invalid_numbers_are_not_cards(
    digits: str, bump: int, before: str, after: str, sep1: str, sep2: str, grouped: bool
) -> None:
    bad = digits[:-1] + str((int(digits[-1]) + bump) % 10)
    assert not luhn_valid(bad)
    if grouped and len(bad) == 16:
        bad = " ".join(bad[i : i + 4] for i in range(0, 16, 4))
    text = before + sep1 + bad + sep2 + after
    assert "CREDIT_CARD" not in entities(text)


@settings(max_examples=300, deadline=None)
@given(
    iban=formatted_ibans(), before=surrounding, after=surrounding, sep1=SEPARATORS, sep2=SEPARATORS
)
def test_valid_ibans_in_any_text_are_detected(
    iban: str, before: str, after: str, sep1: str, sep2: str
) -> None:
    text = before + sep1 + iban + sep2 + after
    start = len(before) + len(sep1)
    end = start + len(iban)
    found = SCANNER.find(text)
    assert any(f.start <= start and end <= f.end for f in found), (text, found)


@settings(max_examples=100, deadline=None)
@given(iban=ibans(), pos=st.integers(4, 30), bump=st.integers(1, 9))
def test_corrupted_ibans_are_not_detected(iban: str, pos: int, bump: int) -> None:
    pos = min(pos, len(iban) - 1)
    ch = iban[pos]
    if not ch.isdigit():
        return
    bad = iban[:pos] + str((int(ch) + bump) % 10) + iban[pos + 1 :]
    assert "IBAN" not in entities(f"to {bad} now")


@settings(max_examples=200, deadline=None)
@given(text=surrounding)
def test_findings_are_sorted_and_disjoint(text: str) -> None:
    found = SCANNER.find(text)
    for a, b in itertools.pairwise(found):
        assert a.end <= b.start
    for f in found:
        assert 0 <= f.start < f.end <= len(text)
