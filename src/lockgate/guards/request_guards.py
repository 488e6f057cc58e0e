"""The guards as the pipeline calls them: one :class:`Guards` per process, one
:class:`RequestGuards` per request.

Request side (after auth, before cache/routing)::

    rg = guards.check_request(call.body, team_id=p.team_id, team_name=p.team_name)
    call.body = rg.body                  # redacted / placeholder body for upstream
    response.headers.update(rg.headers)  # x-lockgate-pii, x-lockgate-injection

raises :class:`~lockgate.guards.errors.PiiBlocked` (400), ``InjectionBlocked``
(400) or ``GuardError`` (500, a detector failed: fail closed).

Response side, non-stream::

    new = rg.process_response(completion.body)
    if new is not completion.body:       # changed: the upstream bytes are stale
        completion.body, completion.raw = new, None

With ``redact_restore`` the upstream body holds placeholders that are numbered
deterministically from the request text, so a response cached under the
redacted body is restored correctly for any later identical request.

Stream side (a GuardError from ``process`` means: end the stream with an error
event, never pass the text on)::

    sg = rg.stream_guard()               # None when nothing to do
    for chunk in upstream:               # OpenAI chunk dicts
        chunk = sg.process(chunk) if sg else chunk
        send(chunk)
    for extra in (sg.close() if sg else ()):
        send(extra)

Embeddings requests (``check_embeddings``) get the PII policy on their string
inputs (no injection check: nothing follows instructions there). RAG passages
retrieved for a prompt are screened with ``screen_passages`` before they reach
the model. ``audit()`` is what the call's audit row records (``detail``).

Nothing here touches the network, the database or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lockgate.guards.contracts import ContractRegistry
from lockgate.guards.injection import InjectionReport, check_injection, scan_passage
from lockgate.guards.pii.body import (
    PiiOutcome,
    guard_chat_request,
    redact_chat_response,
    restore_chat_response,
)
from lockgate.guards.pii.detectors import detectors_for
from lockgate.guards.pii.embeddings import guard_embeddings_request
from lockgate.guards.pii.scanner import PiiScanner
from lockgate.guards.pii.stream import (
    ChainedStream,
    ChatStreamGuard,
    StreamTransformer,
    TextStream,
    stream_redactor,
    stream_restorer,
)
from lockgate.settings.guards import GuardsConfig, InjectionPolicy, PiiPolicy

__all__ = ["Guards", "PassageVerdict", "RequestGuards"]

PII_HEADER = "x-lockgate-pii"
INJECTION_HEADER = "x-lockgate-injection"


class Guards:
    """Compiled guards for one config: scanners per entity selection, contract registry."""

    def __init__(self, config: GuardsConfig | None = None) -> None:
        self.config = config or GuardsConfig()
        self.contracts = ContractRegistry.build(
            self.config.contracts, self.config.contract_files, self.config.contract_dir
        )
        self._scanners: dict[tuple[str, ...] | None, PiiScanner] = {}

    def scanner(self, entities: tuple[str, ...] | None) -> PiiScanner:
        s = self._scanners.get(entities)
        if s is None:
            s = self._scanners[entities] = PiiScanner(detectors_for(entities))
        return s

    def check_request(
        self,
        body: dict[str, Any],
        *,
        team_id: str | None = None,
        team_name: str | None = None,
    ) -> RequestGuards:
        """Run the input guards on a chat request body (see module docs)."""
        pii_policy = self.config.pii_for(team_id, team_name)
        inj_policy = self.config.injection_for(team_id, team_name)
        # injection first: it reads the caller's original text
        injection = check_injection(
            body, action=inj_policy.action, threshold=inj_policy.threshold, roles=inj_policy.roles
        )
        pii: PiiOutcome | None = None
        new_body = body
        if pii_policy.action != "off":
            pii = guard_chat_request(body, self.scanner(pii_policy.entities), pii_policy.action)
            new_body = pii.body
        return RequestGuards(self, pii_policy, inj_policy, new_body, pii, injection)

    def check_embeddings(
        self,
        body: dict[str, Any],
        *,
        team_id: str | None = None,
        team_name: str | None = None,
    ) -> RequestGuards:
        """The PII policy on an embeddings request's string inputs (see module docs)."""
        pii_policy = self.config.pii_for(team_id, team_name)
        inj_policy = self.config.injection_for(team_id, team_name)
        pii: PiiOutcome | None = None
        new_body = body
        if pii_policy.action != "off":
            pii = guard_embeddings_request(
                body, self.scanner(pii_policy.entities), pii_policy.action
            )
            new_body = pii.body
        return RequestGuards(self, pii_policy, inj_policy, new_body, pii, None)

    def redact_for_log(
        self,
        body: dict[str, Any],
        *,
        kind: str = "chat",
        team_id: str | None = None,
        team_name: str | None = None,
    ) -> dict[str, Any] | None:
        """``body`` with PII replaced by labels for storing (``log_bodies``) when no
        guarded body exists (a refused call, a RAG ``rag/<collection>`` question);
        unchanged when the caller's PII policy is ``off``; None if scanning fails."""
        policy = self.config.pii_for(team_id, team_name)
        if policy.action == "off":
            return body
        scanner = self.scanner(policy.entities)
        try:
            if kind == "embeddings":
                return guard_embeddings_request(body, scanner, "redact").body
            return guard_chat_request(body, scanner, "redact").body
        except Exception:  # never store what could not be checked
            return None

    def screen_passages(
        self,
        texts: list[str],
        *,
        team_id: str | None = None,
        team_name: str | None = None,
    ) -> list[PassageVerdict]:
        """Injection verdicts for retrieved passages, one per text, in order.

        A passage is ``withheld`` when the caller's injection policy is not ``off`` and
        its score reaches the policy's threshold: the caller did not write it, so it is
        neutralised (kept from the model) rather than failing the caller's request.
        """
        policy = self.config.injection_for(team_id, team_name)
        if policy.action == "off":
            return [PassageVerdict() for _ in texts]
        out = []
        for text in texts:
            report = scan_passage(text)
            out.append(PassageVerdict(report, report.hit and report.score >= policy.threshold))
        return out


@dataclass(frozen=True, slots=True)
class PassageVerdict:
    """The injection guard's view of one retrieved passage."""

    report: InjectionReport | None = None
    withheld: bool = False

    @property
    def rules(self) -> tuple[str, ...]:
        return self.report.rules if self.report is not None else ()


@dataclass(slots=True)
class RequestGuards:
    """Per-request guard state: the body to send, findings, and the placeholder vault."""

    guards: Guards
    pii_policy: PiiPolicy
    injection_policy: InjectionPolicy
    body: dict[str, Any]
    pii: PiiOutcome | None = None
    injection: InjectionReport | None = None
    output_entities: list[str] = field(default_factory=list)
    """PII types found in the model's answer (policy ``output``), filled by the response side."""
    logged_response: dict[str, Any] | None = None
    """The non-stream answer as guarded before placeholders were restored: what may be
    stored (``log_bodies``); set by :meth:`process_response`."""

    @property
    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.pii is not None and self.pii.findings:
            out[PII_HEADER] = ",".join(self.pii.entities)
        if self.injection is not None and self.injection.hit:
            out[INJECTION_HEADER] = self.injection.header_value()
        return out

    @property
    def found(self) -> bool:
        """Did any guard find something (input PII, output PII, an injection rule)?"""
        return bool((self.pii is not None and self.pii.findings) or self.output_entities
                    or (self.injection is not None and self.injection.hit))

    def audit(self) -> dict[str, Any]:
        """A small dict for the call's audit row (``detail.guards``): types and rule ids
        only, never values. The pipeline records it when :attr:`found`."""
        return {
            "pii_action": self.pii_policy.action,
            "pii_entities": self.pii.entities if self.pii else [],
            "pii_output_entities": sorted(set(self.output_entities)),
            "injection_score": self.injection.score if self.injection else None,
            "injection_rules": list(self.injection.rules) if self.injection else [],
        }

    def _output_scanner(self) -> PiiScanner | None:
        if self.pii_policy.output == "off":
            return None
        return self.guards.scanner(self.pii_policy.entities)

    def process_response(self, body: dict[str, Any]) -> dict[str, Any]:
        """Non-stream answer: redact PII the model wrote (policy ``output``), then restore
        placeholders (``redact_restore``)."""
        scanner = self._output_scanner()
        if scanner is not None:
            redacted, found = redact_chat_response(body, scanner)
            self.output_entities.extend(found)
            if self.pii_policy.output == "redact":
                body = redacted
        self.logged_response = body
        vault = self.pii.vault if self.pii is not None else None
        if vault:
            body = restore_chat_response(body, vault)
        return body

    def stream_guard(self) -> ChatStreamGuard | None:
        """A chunk processor for a streamed answer, or None when nothing needs doing."""
        scanner = self._output_scanner()
        vault = self.pii.vault if self.pii is not None else None
        log_only = scanner is not None and self.pii_policy.output == "log_only"
        if not vault and scanner is None:
            return None
        sink = self.output_entities

        def make() -> TextStream:
            stages: list[TextStream] = []
            if scanner is not None:
                stages.append(_Recording(stream_redactor(scanner), sink, passthrough=log_only))
            if vault:
                stages.append(stream_restorer(vault))
            out = stages[0]
            for nxt in stages[1:]:
                out = ChainedStream(out, nxt)
            return out

        return ChatStreamGuard(make)


class _Recording:
    """Wraps a redactor: records entity types; ``passthrough`` returns the input unchanged.

    In log-only mode the text is still fed through the redactor (to find PII
    across chunk boundaries) but the original deltas are emitted as they come.
    """

    __slots__ = ("_inner", "_passthrough", "_seen", "_sink")

    def __init__(self, inner: StreamTransformer, sink: list[str], *, passthrough: bool) -> None:
        self._inner = inner
        self._sink = sink
        self._passthrough = passthrough
        self._seen = 0

    def _record(self) -> None:
        found = self._inner.findings
        if len(found) > self._seen:
            self._sink.extend(found[self._seen :])
            self._seen = len(found)

    def feed(self, delta: str) -> str:
        out = self._inner.feed(delta)
        self._record()
        return delta if self._passthrough else out

    def flush(self) -> str:
        out = self._inner.flush()
        self._record()
        return "" if self._passthrough else out
