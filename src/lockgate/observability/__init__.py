"""Observability: OpenTelemetry tracing (:mod:`.tracing`), structured JSON logs
(:mod:`.logging`) and the config models for them and for shadow traffic
(:mod:`.settings`).

This package's ``__init__`` imports nothing heavy: ``lockgate.config`` imports
:mod:`.settings`, and the hot path imports :mod:`.tracing`, which loads
OpenTelemetry only when tracing is enabled.
"""
