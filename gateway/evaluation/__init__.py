"""The yearly evaluation's inputs (ZW art. 33): the data bureau's rating forms and the
ratings of the operator by source departments, district bureaus and merchants.
:mod:`.models` has the rules, :mod:`.service` the persisted forms and ratings, :mod:`.tasks`
the raters' task-list entries; the yearly operations report shows the results
(:mod:`gateway.reports.evaluation`)."""

from __future__ import annotations

from gateway.evaluation.models import Criterion, RaterKind, Rating, RatingForm
from gateway.evaluation.service import EvaluationService

__all__ = ["Criterion", "EvaluationService", "RaterKind", "Rating", "RatingForm"]
