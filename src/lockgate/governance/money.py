"""Money as integer micro-units: the config gives currency units (floats), the state
backend counts micro-units so that many gateways add up exactly."""

from __future__ import annotations

__all__ = ["MICROS", "to_micros"]

MICROS = 1_000_000
"""Micro-units per currency unit."""


def to_micros(amount: float) -> int:
    """Currency units to integer micro-units (rounded to the nearest micro-unit)."""
    return round(amount * MICROS)
