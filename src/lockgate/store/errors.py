"""Errors raised by the store: one line each, with the HTTP status an API should map them to."""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "DatabaseUnavailable",
    "InvalidInput",
    "NotFoundError",
    "StoreError",
    "UnsupportedDatabase",
]


class StoreError(Exception):
    """Base of every store error. ``str(err)`` is one line fit for a CLI or an API body."""

    http_status: int = 500


class AlreadyExists(StoreError):
    """A unique name (team name, key hash, ...) is already taken."""

    http_status = 409


class NotFoundError(StoreError):
    """The team or key named does not exist."""

    http_status = 404


class InvalidInput(StoreError):
    """An argument is malformed (empty name, wrong type of list, ...)."""

    http_status = 400


class UnsupportedDatabase(StoreError):
    """The database URL's scheme is not one lockgate can use."""

    http_status = 500


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or refused the operation (locked, down, ...)."""

    http_status = 503
