"""``review:`` section of lockgate.yaml: which calls a person must see before they count.

Example::

    review:
      webhook_url: https://ops.example/hooks/reviews     # review.created/decided/sla_breached
      webhook_secret: env:LOCKGATE_REVIEW_SECRET
      claim_ttl_s: 300            # a claim expires after this long without a decision
      policies:
        invoice_approval:         # task: x-lockgate-task, metadata.task, job task or event route
          when:
            confidence_below: 0.8             # auto-approve at or above (recorded as automatic)
            predicates: ["$.amount > 10000", "$.category in [legal, medical]",
                         "request:$.metadata.priority == 'high'"]
            contract_failed: true             # the output still breaks its contract after repair
            guard_flags: [pii, injection]     # the input guard flagged the call
            sample: 0.02                      # and a random 2 % audit sample
          confidence: {source: field, field: confidence}   # or logprobs, or agreement
          mode: sync_wait                     # or async (202 at once / job parks)
          wait_s: 10
          sla_s: 3600
          escalate_to: finance-leads
          reviewers: [finance]
          impact_field: amount                # shown to the reviewer as the amount at stake

Any ``when`` condition that holds sends the call to review; with none holding the call
passes (auto-approved when a confidence threshold was checked). The predicates are
parsed here, at load time, so a typo is a config error, not a runtime surprise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lockgate.settings.base import Strict

__all__ = ["ConfidenceSource", "ReviewPolicy", "ReviewSettings", "ReviewWhen"]


class ConfidenceSource(Strict):
    """Where a call's confidence comes from.

    - ``logprobs``: exp(mean token logprob) of the answer, when the provider returns
      ``logprobs`` (lockgate asks for them when the policy needs them);
    - ``field``: a number in [0, 1] the answer's JSON carries (``field``, default
      ``confidence``), declared in the task's output contract;
    - ``agreement``: the share of ``samples`` answers (the original plus re-asks through
      the pipeline, or one each from ``deployments``) that equal the majority answer.
    """

    source: Literal["logprobs", "field", "agreement"] = "field"
    field: str = Field("confidence", min_length=1)
    samples: int = Field(3, ge=2, le=10)
    deployments: list[str] = Field(default_factory=list, max_length=10)
    """For ``agreement``: re-ask once on each of these deployment ids (e.g. a second
    provider) instead of ``samples - 1`` times on the same route."""
    compare_field: str | None = None
    """For ``agreement`` on JSON answers: compare only this field (e.g. ``category``)."""


class ReviewWhen(Strict):
    confidence_below: float | None = Field(None, ge=0, le=1)
    predicates: list[str] = Field(default_factory=list)
    contract_failed: bool = False
    guard_flags: list[Literal["pii", "injection"]] = Field(default_factory=list)
    sample: float = Field(0.0, ge=0, le=1)

    @field_validator("predicates")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        from lockgate.settings.review_predicates import parse_predicate

        for text in v:
            parse_predicate(text)  # raises ValueError with the reason
        return v

    def is_empty(self) -> bool:
        return (
            self.confidence_below is None
            and not self.predicates
            and not self.contract_failed
            and not self.guard_flags
            and self.sample == 0.0
        )


class ReviewPolicy(Strict):
    when: ReviewWhen
    confidence: ConfidenceSource = ConfidenceSource()
    mode: Literal["sync_wait", "async"] = "sync_wait"
    wait_s: float = Field(10.0, ge=0, le=300)
    """How long a synchronous HTTP caller waits for a decision before getting 202."""
    sla_s: float = Field(3600.0, gt=0)
    escalate_to: str | None = None
    """Reviewer team that gets the item when its SLA is breached (or on ``escalate``)."""
    reviewers: list[str] = Field(default_factory=list)
    """Teams (names or ids) whose keys may claim and decide; empty: admins only."""
    impact_field: str | None = None
    """A field of the answer shown as the estimated impact (e.g. ``amount``)."""

    @model_validator(mode="after")
    def _check(self) -> ReviewPolicy:
        if self.when.is_empty():
            raise ValueError("review policy needs at least one 'when' condition")
        return self


class ReviewSettings(Strict):
    policies: dict[str, ReviewPolicy] = Field(default_factory=dict)
    claim_ttl_s: float = Field(300.0, gt=0, le=86400)
    sweep_interval_s: float = Field(5.0, gt=0, le=3600)
    """How often each gateway/worker checks SLAs and finishes decided async items."""
    webhook_url: str | None = None
    webhook_secret: str | None = None
    """HMAC secret (``env:NAME``) for review webhooks; required with ``webhook_url``."""

    @model_validator(mode="after")
    def _check(self) -> ReviewSettings:
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("review.webhook_url needs review.webhook_secret")
        for task in self.policies:
            if not task or len(task) > 200:
                raise ValueError("review.policies: task names are 1-200 characters")
        return self
