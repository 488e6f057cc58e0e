"""Human-in-the-loop review: policies send calls to a durable queue people decide.

See docs/review.md. Public surface: :class:`ReviewService` (built by the Runtime),
:class:`ReviewRepository`, the item types and the gate helpers the adapters use.
"""

from lockgate.review.gate import build_item, measure_confidence, output_of, with_output
from lockgate.review.model import (
    ContractBroken,
    NewReview,
    ReviewConflict,
    ReviewInvalid,
    ReviewItem,
    ReviewNotFound,
)
from lockgate.review.repository import ReviewRepository
from lockgate.review.service import Assessment, ReviewService

__all__ = [
    "Assessment",
    "ContractBroken",
    "NewReview",
    "ReviewConflict",
    "ReviewInvalid",
    "ReviewItem",
    "ReviewNotFound",
    "ReviewRepository",
    "ReviewService",
    "build_item",
    "measure_confidence",
    "output_of",
    "with_output",
]
