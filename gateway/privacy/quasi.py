"""Quasi-identifiers: fields that single subjects out in combination, and the scenario check.

A district, a founding date, an industry or a registered capital identifies no one on its
own; together they often do. The catalog marks such fields (``FieldSpec.quasi_identifier``)
and this module checks a scenario against it: for each grant, the combinations of
quasi-identifiers one access mode exposes (returned and filtered fields of a query, claims
of a verification, groups of an aggregate), and whether the grant also returns an
identifier beside them. Where the dataset's source can be reached, the combination is
measured on the data: one aggregate grouped by the combined fields counts the distinct
subjects per group, and the warning says how many subjects are unique on it and how many
fall in groups under ``min_subjects``. Where it cannot, the warning is static.

The result is warnings, not refusals: whether a combination is necessary for the scenario
is the authority's decision (minimum necessary, CS21 art. 21; no product from which raw
data can be restored, ZW art. 28). Domain code: no aiohttp, no click.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import AggregateQuery, Measure
from gateway.catalog.models import Dataset
from gateway.errors import DsgwError
from gateway.governance.models import DatasetGrant, Mode, Scenario

__all__ = [
    "Exposure",
    "GroupSizes",
    "QuasiIdentifierWarning",
    "SourceGroups",
    "check_scenario",
    "connector_groups",
    "exposures",
    "singling_out",
]

#: Groups one measurement reads at most; beyond it the figures are lower bounds.
MAX_GROUPS = 1_000_000

#: The distinct-subject count of each group of a grouping, or None: source not reachable.
GroupSizes = Sequence[int]
SourceGroups = Callable[[Dataset, tuple[str, ...]], Awaitable[GroupSizes | None]]


@dataclass(frozen=True, slots=True)
class Exposure:
    """Quasi-identifiers one access mode of a grant exposes together."""

    dataset_id: str
    mode: Mode
    quasi: tuple[str, ...]
    returned: tuple[str, ...] = ()  # quasi-identifiers a query returns
    filtered: tuple[str, ...] = ()  # quasi-identifiers a query filters on
    identifiers: tuple[str, ...] = ()  # identifying fields a query returns beside them

    @property
    def risky(self) -> bool:
        """Two or more quasi-identifiers together, or one returned beside an identifier."""
        return len(self.quasi) >= 2 or bool(self.returned and self.identifiers)

    def phrase(self) -> str:
        def names(fields: Sequence[str]) -> str:
            return " and ".join(fields)

        if self.mode is Mode.QUERY:
            parts = []
            if self.returned:
                parts.append(f"returns {names(self.returned)}")
            if self.filtered:
                parts.append(f"filters on {names(self.filtered)}")
            text = f"query {' and '.join(parts)}"
            if self.identifiers:
                text += f" beside the identifier(s) {names(self.identifiers)}"
            return text
        if self.mode is Mode.VERIFY:
            return f"verify confirms claims of {names(self.quasi)}"
        return f"aggregate groups by {names(self.quasi)}"

    def advice(self, min_subjects: int) -> str:
        if self.mode is Mode.QUERY:
            return "return or filter on fewer of them, or grant aggregate instead"
        if self.mode is Mode.VERIFY:
            return "grant fewer of them as verify fields"
        return (
            f"group by fewer of them: cells under {min_subjects} subjects are suppressed, so "
            "groups this fine answer little"
        )


def exposures(grant: DatasetGrant, dataset: Dataset) -> list[Exposure]:
    """The quasi-identifier combinations each mode of ``grant`` exposes."""
    quasi = {spec.name for spec in dataset.fields if spec.quasi_identifier}
    identifying = set(dataset.identifying_fields)

    def qi(names: Sequence[str]) -> tuple[str, ...]:
        return tuple(n for n in dict.fromkeys(names) if n in quasi)

    found: list[Exposure] = []
    if Mode.QUERY in grant.modes:
        returned, filtered = qi(grant.fields), qi(grant.filter_fields)
        combined = tuple(dict.fromkeys([*returned, *filtered]))
        found.append(
            Exposure(
                dataset.id,
                Mode.QUERY,
                combined,
                returned=returned,
                filtered=tuple(f for f in filtered if f not in returned),
                identifiers=tuple(n for n in grant.fields if n in identifying),
            )
        )
    if Mode.VERIFY in grant.modes:
        found.append(Exposure(dataset.id, Mode.VERIFY, qi(grant.verify_fields)))
    if Mode.AGGREGATE in grant.modes:
        found.append(Exposure(dataset.id, Mode.AGGREGATE, qi(grant.group_by)))
    return [e for e in found if e.quasi]


@dataclass(frozen=True, slots=True)
class QuasiIdentifierWarning:
    """One risky exposure, with its figures when the source could be measured."""

    scenario_id: str
    exposure: Exposure
    min_subjects: int
    subjects: int | None = None  # subjects measured (summed over groups)
    unique: int | None = None  # subjects alone in their group
    small: int | None = None  # subjects in groups under min_subjects (unique included)
    groups: int | None = None
    truncated: bool = False

    @property
    def message(self) -> str:
        e = self.exposure
        head = f"grant {e.dataset_id}: {e.phrase()}"
        if self.subjects is None or self.unique is None or self.small is None:
            figures = (
                "these quasi-identifiers together may single out subjects (the source "
                "could not be measured)"
            )
        else:
            bound = "at least " if self.truncated else ""
            figures = (
                f"{bound}{self.unique:,} of {self.subjects:,} subjects are unique on that "
                f"combination and {self.small:,} are in groups under {self.min_subjects}"
            )
        return f"{head}: {figures}; {e.advice(self.min_subjects)}"

    def to_dict(self) -> dict[str, Any]:
        e = self.exposure
        return {
            "kind": "quasi-identifiers",
            "scenario": self.scenario_id,
            "dataset": e.dataset_id,
            "mode": e.mode.value,
            "fields": list(e.quasi),
            "identifiers": list(e.identifiers),
            "subjects": self.subjects,
            "unique": self.unique,
            "small": self.small,
            "groups": self.groups,
            "min_subjects": self.min_subjects,
            "measured": self.subjects is not None,
            "message": self.message,
        }


def singling_out(sizes: GroupSizes, min_subjects: int) -> tuple[int, int, int]:
    """``(subjects, unique, small)`` of a grouping: subjects summed over groups, those
    alone in their group, and those in groups of fewer than ``min_subjects``."""
    subjects = sum(sizes)
    unique = sum(1 for n in sizes if n == 1)
    small = sum(n for n in sizes if n < min_subjects)
    return subjects, unique, small


async def check_scenario(
    scenario: Scenario,
    datasets: Mapping[str, Dataset],
    *,
    min_subjects: int,
    groups: SourceGroups | None = None,
) -> list[QuasiIdentifierWarning]:
    """Warnings for every grant of ``scenario`` combining quasi-identifiers; ``groups``
    measures a combination on the source (None, or a source that cannot answer: static)."""
    warnings: list[QuasiIdentifierWarning] = []
    for grant in scenario.grants:
        dataset = datasets.get(grant.dataset_id)
        if dataset is None:
            continue
        measured: dict[tuple[str, ...], GroupSizes | None] = {}
        for exposure in exposures(grant, dataset):
            if not exposure.risky:
                continue
            sizes: GroupSizes | None = None
            if groups is not None:
                if exposure.quasi not in measured:
                    measured[exposure.quasi] = await groups(dataset, exposure.quasi)
                sizes = measured[exposure.quasi]
            if sizes is None:
                warnings.append(QuasiIdentifierWarning(scenario.id, exposure, min_subjects))
                continue
            subjects, unique, small = singling_out(sizes, min_subjects)
            warnings.append(
                QuasiIdentifierWarning(
                    scenario.id,
                    exposure,
                    min_subjects,
                    subjects=subjects,
                    unique=unique,
                    small=small,
                    groups=len(sizes),
                    truncated=len(sizes) >= MAX_GROUPS,
                )
            )
    return warnings


def connector_groups(open_connector: Callable[[Dataset], Awaitable[Any]]) -> SourceGroups:
    """A :data:`SourceGroups` over the gateway's connectors: one aggregate per combination,
    grouped by its fields, counting distinct subjects per group. A source that cannot be
    opened or answer gives None (the warning is then static), never an error: the check
    only advises."""

    async def measure(dataset: Dataset, fields: tuple[str, ...]) -> GroupSizes | None:
        try:
            connector = await open_connector(dataset)
            rows = await connector.aggregate(
                AggregateQuery(
                    group_by=fields,
                    measures=(Measure("count"),),
                    subject_field=dataset.subject_field,
                    limit=MAX_GROUPS,
                )
            )
        except DsgwError:  # ConnectorError and SourceNotAllowedError included
            return None
        return [int(row["_subjects"]) for row in rows if isinstance(row.get("_subjects"), int)]

    return measure
