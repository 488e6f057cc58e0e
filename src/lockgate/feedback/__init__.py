"""The feedback loop: feedback on calls, quality per task/model/deployment/version,
training exports, and drift detection that alerts once per incident.

* :class:`FeedbackService` (``Runtime.feedback``): ``record(...)`` (the API's
  ``POST /v1/feedback`` and the review service's decisions), ``subject(...)``, ``list``;
* :func:`quality_report` (``GET /v1/feedback/quality``, ``lockgate feedback quality``);
* :func:`export_feedback` (``lockgate feedback export``);
* :class:`DriftMonitor` (runs beside the queue monitor; raises through
  :class:`lockgate.alerts.AlertCenter`); :class:`PageHinkley`, its detector.
"""

from lockgate.feedback.detectors import PageHinkley
from lockgate.feedback.drift import DriftMonitor, drift_subject
from lockgate.feedback.export import ExportStats, export_feedback, pii_redactor
from lockgate.feedback.model import FEEDBACK_KINDS, Feedback, Subject
from lockgate.feedback.quality import quality_report
from lockgate.feedback.service import FeedbackService, may_give_feedback

__all__ = [
    "FEEDBACK_KINDS",
    "DriftMonitor",
    "ExportStats",
    "Feedback",
    "FeedbackService",
    "PageHinkley",
    "Subject",
    "drift_subject",
    "export_feedback",
    "may_give_feedback",
    "pii_redactor",
    "quality_report",
]
