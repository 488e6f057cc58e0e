"""Input and output guards: PII, prompt-injection heuristics, JSON output contracts.

The pipeline uses :class:`Guards` (built once from
:class:`~lockgate.settings.GuardsConfig`, the ``guards:`` config section) and
the per-request :class:`RequestGuards` it returns; see :mod:`.request_guards` for the
call sequence. The pieces are importable on their own for features and tests.
"""

from lockgate.guards.contracts import (
    Contract,
    ContractCheck,
    ContractRegistry,
    build_repair_messages,
)
from lockgate.guards.errors import (
    ContractNotFound,
    ContractViolation,
    GuardError,
    InjectionBlocked,
    PiiBlocked,
)
from lockgate.guards.injection import (
    InjectionReport,
    check_injection,
    scan_chat_request,
    scan_passage,
)
from lockgate.guards.pii.body import (
    PiiOutcome,
    guard_chat_request,
    redact_chat_response,
    restore_chat_response,
)
from lockgate.guards.pii.embeddings import guard_embeddings_request
from lockgate.guards.pii.scanner import Finding, PiiScanner
from lockgate.guards.pii.stream import ChatStreamGuard, stream_redactor, stream_restorer
from lockgate.guards.pii.transform import Vault, redact_text, restore_text
from lockgate.guards.request_guards import Guards, PassageVerdict, RequestGuards

__all__ = [
    "ChatStreamGuard",
    "Contract",
    "ContractCheck",
    "ContractNotFound",
    "ContractRegistry",
    "ContractViolation",
    "Finding",
    "GuardError",
    "Guards",
    "InjectionBlocked",
    "InjectionReport",
    "PassageVerdict",
    "PiiBlocked",
    "PiiOutcome",
    "PiiScanner",
    "RequestGuards",
    "Vault",
    "build_repair_messages",
    "check_injection",
    "guard_chat_request",
    "guard_embeddings_request",
    "redact_chat_response",
    "redact_text",
    "restore_chat_response",
    "restore_text",
    "scan_chat_request",
    "scan_passage",
    "stream_redactor",
    "stream_restorer",
]
