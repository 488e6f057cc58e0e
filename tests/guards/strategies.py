"""Hypothesis strategies for the guard tests: valid cards, valid IBANs, surrounding text."""

from __future__ import annotations

import string

from hypothesis import strategies as st

# (prefixes, lengths) of major card networks
CARD_NETWORKS: dict[str, tuple[list[str], list[int]]] = {
    "visa": (["4"], [13, 16, 19]),
    "mastercard": (["51", "52", "53", "54", "55", "2221", "2500", "2720"], [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "644", "649", "65"], [16, 19]),
    "diners": (["300", "305", "36", "38", "39"], [14]),
    "jcb": (["3528", "3589"], [16, 19]),
    "unionpay": (["62"], [16, 17, 18, 19]),
    "maestro": (["56", "58", "63", "67"], [13, 15, 16, 19]),
}


def luhn_check_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid card number (digits only) of a major network."""
    network = draw(st.sampled_from(sorted(CARD_NETWORKS)))
    prefixes, lengths = CARD_NETWORKS[network]
    prefix = draw(st.sampled_from(prefixes))
    length = draw(st.sampled_from(lengths))
    body = draw(
        st.text(
            alphabet=string.digits,
            min_size=length - len(prefix) - 1,
            max_size=length - len(prefix) - 1,
        )
    )
    partial = prefix + body
    return partial + luhn_check_digit(partial)


@st.composite
def formatted(draw: st.DrawFn, digits_st: st.SearchStrategy[str]) -> str:
    digits = draw(digits_st)
    style = draw(st.sampled_from(["plain", "space4", "dash4", "amex"]))
    if style == "plain":
        return digits
    if style == "amex" and len(digits) == 15:
        return f"{digits[:4]} {digits[4:10]} {digits[10:]}"
    sep = "-" if style == "dash4" else " "
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


# country -> BBAN layout: "n" digit, "a" upper-case letter, "c" alphanumeric
IBAN_LAYOUTS: dict[str, str] = {
    "DE": "n" * 18,
    "FR": "n" * 23,
    "GB": "aaaa" + "n" * 14,
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
    "NL": "aaaa" + "n" * 10,
    "BE": "n" * 12,
    "CH": "n" * 17,
    "PL": "n" * 24,
    "NO": "n" * 11,
}


def iban_check_digits(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return f"{98 - number % 97:02d}"


@st.composite
def ibans(draw: st.DrawFn) -> str:
    """A valid IBAN (compact, upper case)."""
    country = draw(st.sampled_from(sorted(IBAN_LAYOUTS)))
    alphabets = {
        "n": string.digits,
        "a": string.ascii_uppercase,
        "c": string.digits + string.ascii_uppercase,
    }
    bban = "".join(draw(st.sampled_from(alphabets[k])) for k in IBAN_LAYOUTS[country])
    return country + iban_check_digits(country, bban) + bban


@st.composite
def formatted_ibans(draw: st.DrawFn) -> str:
    iban = draw(ibans())
    if draw(st.booleans()):
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    if draw(st.booleans()):
        iban = iban[:2] + iban[2:].lower()  # the country code must stay upper case
    return iban


SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", ": ", " (", ") ", "; ", " - "])

surrounding = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
"""Arbitrary text (any script, digits, punctuation)."""

no_digit_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Nd"]), max_size=40
)
