"""Check-digit and validity rules used by the PII detectors (pure functions, no regex).

Each function takes the matched text (separators allowed where noted) and says
whether it is a plausible real identifier: Luhn for payment cards, ISO 13616
mod-97 plus per-country length for IBANs, the SSA rules for US SSNs, and the
official check characters for Spanish NIF/NIE, Italian codice fiscale and the
French NIR (INSEE number).
"""

from __future__ import annotations

__all__ = [
    "IBAN_LENGTHS",
    "digits_only",
    "es_nif_valid",
    "fr_nir_valid",
    "iban_valid",
    "it_fiscal_code_valid",
    "luhn_valid",
    "us_ssn_valid",
]

_SEPARATORS = str.maketrans("", "", " -.")


def digits_only(text: str) -> str:
    """``text`` without spaces, dashes and dots."""
    return text.translate(_SEPARATORS)


def luhn_valid(number: str) -> bool:
    """Luhn (mod 10) check over a string of digits."""
    if not number.isdigit() or not number.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
"""ISO 13616 registry: country code -> IBAN length."""


def iban_valid(compact: str) -> bool:
    """``compact``: IBAN without spaces, upper case. Known country, exact length, mod 97 == 1."""
    if len(compact) < 15 or not compact.isascii() or not compact.isalnum():
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


_SSN_INVALID = {"078051120", "219099999", "123456789"}


def us_ssn_valid(digits: str) -> bool:
    """SSA rules: area not 000/666/9xx, group not 00, serial not 0000, not a known sample."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return digits not in _SSN_INVALID


_NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_nif_valid(text: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter), mod-23 letter."""
    compact = text.replace("-", "").upper()
    if len(compact) != 9:
        return False
    head, letter = compact[:8], compact[8]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    if not head.isdigit():
        return False
    return _NIF_LETTERS[int(head) % 23] == letter


_CF_ODD = {
    **{str(d): v for d, v in zip(range(10), (1, 0, 5, 7, 9, 13, 15, 17, 19, 21), strict=True)},
    **dict(
        zip(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10,
             22, 25, 24, 23),
            strict=True,
        )
    ),
}  # fmt: skip


def _cf_even(ch: str) -> int:
    return int(ch) if ch.isdigit() else ord(ch) - 65


def it_fiscal_code_valid(text: str) -> bool:
    """Italian codice fiscale (16 chars, omocodia allowed): check character."""
    code = text.upper()
    if len(code) != 16 or not code.isascii() or not code.isalnum():
        return False
    total = 0
    for i, ch in enumerate(code[:15]):
        total += _CF_ODD[ch] if i % 2 == 0 else _cf_even(ch)
    return chr(65 + total % 26) == code[15]


def fr_nir_valid(text: str) -> bool:
    """French NIR: 13 chars (Corsica 2A/2B allowed) + 2-digit key = 97 - (n mod 97)."""
    compact = text.replace(" ", "").upper()
    if len(compact) != 15:
        return False
    body, key = compact[:13], compact[13:]
    if not key.isdigit():
        return False
    if body[5:7] == "2A":
        n = int(body[:5] + "19" + body[7:]) - 1_000_000
    elif body[5:7] == "2B":
        n = int(body[:5] + "18" + body[7:]) - 2_000_000
    elif body.isdigit():
        n = int(body)
    else:
        return False
    return 97 - (n % 97) == int(key)
