"""Observability: OpenTelemetry tracing (:mod:`.tracing`) and structured JSON logs
(:mod:`.logging`). Their config models (``tracing:``, ``logging:``) are in
:mod:`lockgate.settings.observability`.

This package's ``__init__`` imports nothing heavy: the hot path imports :mod:`.tracing`,
which loads OpenTelemetry only when tracing is enabled.
"""
