"""What one scenario may do with one dataset: the access modes and the
:class:`DatasetGrant` that names fields, filters, caps and budgets (CS21 art. 21, 24)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.catalog.checks import check_id, expect_keys
from gateway.catalog.models import Dataset
from gateway.errors import CatalogError, ValidationError
from gateway.governance.models.budgets import PrivacyBudget
from gateway.governance.models.fields import positive_int, str_list
from gateway.privacy.verify_limits import VerifyBudget

__all__ = ["MODE_NAMES", "DatasetGrant", "Mode"]


class Mode(StrEnum):
    """Access modes of the data plane: "verification, query, desensitization or computed
    results" (CS21 art. 24), never a raw export."""

    VERIFY = "verify"
    QUERY = "query"
    AGGREGATE = "aggregate"
    # Differentially private aggregate under a per-agreement budget (docs/privacy.md).
    AGGREGATE_DP = "aggregate-dp"


MODE_NAMES = ", ".join(m.value for m in Mode)


@dataclass(frozen=True, slots=True)
class DatasetGrant:
    """What one scenario may do with one dataset: the minimum necessary (CS21 art. 21)."""

    dataset_id: str
    modes: frozenset[Mode]
    # Fields a query may return.
    fields: tuple[str, ...] = ()
    # Fields a query or aggregate may filter on.
    filter_fields: tuple[str, ...] = ()
    # A query must filter with equality on at least one of these (no unfiltered dumps).
    required_filters: tuple[str, ...] = ()
    # Fields a verification may submit (must include the dataset's key fields).
    verify_fields: tuple[str, ...] = ()
    reveal_mismatch: bool = False
    group_by: tuple[str, ...] = ()
    measure_fields: tuple[str, ...] = ()
    row_cap: int = 100
    # Sensitive fields a query may return unmasked, and only under an agreement that
    # carries the data subjects' letters of authorization for this dataset (ZW art. 28;
    # CS23 art. 26(5)); without one they stay masked whatever the scenario says.
    clear_fields: tuple[str, ...] = ()
    # The differential-privacy budget; required with (and only with) aggregate-dp.
    privacy: PrivacyBudget | None = None
    # Bound on negative verify answers per subject and window (docs/privacy.md); None: the
    # deployment's default applies to verify calls that claim a sensitive field.
    verify_budget: VerifyBudget | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetGrant:
        expect_keys(
            "dataset grant",
            data,
            {"dataset", "modes"},
            {
                "fields",
                "filter_fields",
                "required_filters",
                "verify_fields",
                "reveal_mismatch",
                "group_by",
                "measure_fields",
                "row_cap",
                "clear_fields",
                "privacy",
                "verify_budget",
            },
        )
        dataset_id = check_id("dataset", data["dataset"])
        raw_modes = data["modes"]
        if not isinstance(raw_modes, list) or not raw_modes:
            raise ValidationError(f"grant {dataset_id}: modes must be a non-empty list")
        try:
            modes = frozenset(Mode(m) for m in raw_modes)
        except ValueError as exc:
            raise ValidationError(f"grant {dataset_id}: modes must be among {MODE_NAMES}") from exc
        reveal = data.get("reveal_mismatch", False)
        if not isinstance(reveal, bool):
            raise ValidationError(f"grant {dataset_id}: reveal_mismatch must be true or false")
        row_cap = positive_int(f"grant {dataset_id}: row_cap", data.get("row_cap", 100))
        assert row_cap is not None
        if row_cap > 1000:
            raise ValidationError(f"grant {dataset_id}: row_cap may not exceed 1000 rows per call")
        return cls(
            dataset_id=dataset_id,
            modes=modes,
            fields=str_list("fields", data.get("fields", [])),
            filter_fields=str_list("filter_fields", data.get("filter_fields", [])),
            required_filters=str_list("required_filters", data.get("required_filters", [])),
            verify_fields=str_list("verify_fields", data.get("verify_fields", [])),
            reveal_mismatch=reveal,
            group_by=str_list("group_by", data.get("group_by", [])),
            measure_fields=str_list("measure_fields", data.get("measure_fields", [])),
            row_cap=row_cap,
            clear_fields=str_list("clear_fields", data.get("clear_fields", [])),
            privacy=(
                PrivacyBudget.from_dict(dataset_id, data["privacy"])
                if data.get("privacy") is not None
                else None
            ),
            verify_budget=(
                VerifyBudget.from_dict(f"grant {dataset_id}", data["verify_budget"])
                if data.get("verify_budget") is not None
                else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset_id,
            "modes": sorted(m.value for m in self.modes),
            "fields": list(self.fields),
            "filter_fields": list(self.filter_fields),
            "required_filters": list(self.required_filters),
            "verify_fields": list(self.verify_fields),
            "reveal_mismatch": self.reveal_mismatch,
            "group_by": list(self.group_by),
            "measure_fields": list(self.measure_fields),
            "row_cap": self.row_cap,
            "clear_fields": list(self.clear_fields),
        }
        if self.privacy is not None:
            # Only when set, so grants without it (and their hashes) stay as they were.
            out["privacy"] = self.privacy.to_dict()
        if self.verify_budget is not None:
            # Only when set, so definitions without one (and their hashes) stay as they were.
            out["verify_budget"] = self.verify_budget.to_dict()
        return out

    def check_against(self, dataset: Dataset) -> None:
        """Refuse a grant of an ungrantable dataset or of fields it does not have."""
        if not dataset.grantable:
            reason = "is on the negative list" if dataset.negative_list else "is classed not open"
            raise CatalogError(
                f"dataset {dataset.id} {reason} and can never be granted",
                dataset=dataset.id,
            )
        names = set(dataset.field_names)
        for what, listed in (
            ("fields", self.fields),
            ("filter_fields", self.filter_fields),
            ("required_filters", self.required_filters),
            ("verify_fields", self.verify_fields),
            ("group_by", self.group_by),
            ("measure_fields", self.measure_fields),
            ("clear_fields", self.clear_fields),
        ):
            unknown = sorted(set(listed) - names)
            if unknown:
                raise ValidationError(
                    f"grant {dataset.id}: {what} names unknown field(s) {', '.join(unknown)}"
                )
        if not set(self.required_filters) <= set(self.filter_fields):
            raise ValidationError(f"grant {dataset.id}: required_filters must be filter_fields")
        if Mode.QUERY in self.modes and not self.fields:
            raise ValidationError(f"grant {dataset.id}: query mode needs fields to return")
        if Mode.QUERY in self.modes and not self.filter_fields:
            raise ValidationError(f"grant {dataset.id}: query mode needs filter_fields")
        if Mode.VERIFY in self.modes:
            missing = sorted(set(dataset.key_fields) - set(self.verify_fields))
            if missing:
                raise ValidationError(
                    f"grant {dataset.id}: verify_fields must include key field(s) "
                    + ", ".join(missing)
                )
        if self.verify_budget is not None and Mode.VERIFY not in self.modes:
            raise ValidationError(
                f"grant {dataset.id}: verify_budget bounds verify answers; the grant does not "
                "allow verify"
            )
        if not set(self.clear_fields) <= set(self.fields):
            raise ValidationError(f"grant {dataset.id}: clear_fields must be returnable fields")
        for name in self.clear_fields:
            if dataset.field(name).sensitive is None:
                raise ValidationError(
                    f"grant {dataset.id}: clear field {name} is not sensitive; list only "
                    "sensitive fields that the subjects' authorization may unmask"
                )
        if Mode.AGGREGATE in self.modes and not self.group_by:
            raise ValidationError(f"grant {dataset.id}: aggregate mode needs group_by fields")
        self._check_dp(dataset)
        for name in self.measure_fields:
            if dataset.field(name).type not in ("integer", "decimal"):
                raise ValidationError(f"grant {dataset.id}: measure field {name} is not numeric")

    def _check_dp(self, dataset: Dataset) -> None:
        """aggregate-dp needs a budget, group_by fields other than the subject (the privacy
        unit), and clamping bounds on every measure field; a budget without the mode is a
        mistake, refused rather than ignored."""
        if Mode.AGGREGATE_DP not in self.modes:
            if self.privacy is not None:
                raise ValidationError(
                    f"grant {dataset.id}: privacy is declared but aggregate-dp is not granted"
                )
            return
        if self.privacy is None:
            raise ValidationError(
                f"grant {dataset.id}: aggregate-dp needs a privacy budget (privacy: epsilon, "
                "delta, period, call_epsilon)"
            )
        if not self.group_by:
            raise ValidationError(f"grant {dataset.id}: aggregate-dp needs group_by fields")
        if dataset.subject_field in self.group_by:
            raise ValidationError(
                f"grant {dataset.id}: aggregate-dp cannot group by the subject field "
                f"{dataset.subject_field}, the unit it protects"
            )
        unbounded = sorted(n for n in self.measure_fields if dataset.field(n).bounds is None)
        if unbounded:
            raise ValidationError(
                f"grant {dataset.id}: aggregate-dp measure field(s) {', '.join(unbounded)} "
                "declare no bounds in the catalog; register the dataset with bounds "
                "[low, high] on each"
            )
