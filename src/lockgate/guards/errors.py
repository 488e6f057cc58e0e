"""Errors raised by the guards, in the gateway's client-visible error shape.

* :class:`GuardError` - a guard itself failed (a detector raised). Fail closed:
  the request fails with 500 ``guard_failed``; text is never passed unchecked.
* :class:`PiiBlocked` - 400 ``pii_detected``; lists entity types, never values.
* :class:`InjectionBlocked` - 400 ``prompt_injection_detected``; lists rule ids.
* :class:`ContractNotFound` - 400 ``contract_not_found``.
* :class:`ContractViolation` - 502 ``output_contract_failed``: the model's
  output still breaks its JSON contract after the pipeline's repair attempts.
"""

from __future__ import annotations

from collections.abc import Iterable

from lockgate.errors import BadRequest, GatewayError

__all__ = [
    "ContractNotFound",
    "ContractViolation",
    "GuardError",
    "InjectionBlocked",
    "PiiBlocked",
]


class GuardError(GatewayError):
    """A guard could not do its job; the request must fail (fail closed)."""

    status = 500
    type = "api_error"
    code = "guard_failed"


class PiiBlocked(BadRequest):
    code = "pii_detected"

    def __init__(self, entities: Iterable[str]) -> None:
        self.entities = tuple(sorted(set(entities)))
        super().__init__(
            "The request contains personal data that this key may not send: "
            + ", ".join(self.entities)
        )


class InjectionBlocked(BadRequest):
    code = "prompt_injection_detected"

    def __init__(self, rules: Iterable[str], score: float) -> None:
        self.rules = tuple(rules)
        self.score = score
        super().__init__(
            "The request looks like a prompt-injection attempt (rules: "
            + ", ".join(self.rules)
            + ")"
        )


class ContractNotFound(BadRequest):
    code = "contract_not_found"


class ContractViolation(GatewayError):
    status = 502
    type = "api_error"
    code = "output_contract_failed"

    def __init__(
        self, contract_id: str, errors: Iterable[str], *, answer: str | None = None
    ) -> None:
        self.contract_id = contract_id
        self.errors = tuple(errors)
        self.answer = answer
        """The model's last (invalid) answer text, for a review queue to show a person."""
        shown = "; ".join(self.errors[:5])
        more = f" (+{len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(
            f"The model's output does not satisfy contract {contract_id}: {shown}{more}"
        )
