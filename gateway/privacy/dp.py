"""Differentially private aggregates: the ``aggregate-dp`` access mode (docs/privacy.md).

An exact aggregate lets a merchant who asks many overlapping questions difference one
person out of the answers; "raw data does not leave the domain" (LZ24 §三.1) and "no product
from which raw data can be restored" (ZW art. 28) then hold only as long as the merchant
plays fair. A differentially private answer bounds what any number of answers can reveal
about one data subject, whatever the merchant asks, by the privacy budget ε (and δ) the
scenario declares.

The privacy unit is one **subject** (the dataset's ``subject_field``), not one row:

1. The data plane fetches, per (group, subject), the subject's row count and totals of the
   measured fields (:class:`SubjectCell`).
2. :func:`truncate` keeps at most ``L`` (``max_groups_per_subject``) groups per subject,
   chosen in a keyed, deterministic order, so the bound the sensitivities rely on is
   enforced, not trusted.
3. :class:`ReleasePlan` splits the call's ε evenly over one part for the noisy subject
   counts and one part per distinct summed field. Counts go through OpenDP's Laplace
   threshold mechanism on a map of group keys: only groups whose noisy count passes the
   threshold are released, so the existence of a rare group key is protected too (this is
   what needs δ). Sums of the released groups get Laplace noise; a subject's total in one
   group is clamped to the field's bounds before summing. Means are noisy sum / noisy count
   (post-processing, no extra budget).

OpenDP is the judge of the arithmetic: every plan builds the OpenDP measurements and
checks their privacy maps against the ε/δ parts; a plan whose map exceeds them is refused
(:class:`ConfigError`) rather than run. This module is pure: no store, no HTTP.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from gateway.errors import ConfigError

__all__ = [
    "CI95_FACTOR",
    "GroupKey",
    "NoisyGroup",
    "Release",
    "ReleasePlan",
    "SubjectCell",
    "plan_release",
    "truncate",
]


@functools.cache
def _opendp() -> Any:
    """OpenDP, loaded when the first release is planned (it takes a few hundred
    milliseconds to import, which no other call and no CLI command needs to pay)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


CI95_FACTOR = math.log(20.0)
"""A Laplace variable of scale b exceeds t in magnitude with probability exp(-t/b): the 95%
half-width is b·ln 20 ≈ 3.0·b (for the discrete Laplace of the counts it is at most that)."""

# Slack for the floating-point rounding of OpenDP's maps: a map may exceed the exact ε by a
# few ulps; the scale is then widened by this factor until the map is within the part.
_WIDEN = 1.0 + 1e-9

GroupKey = tuple[Any, ...]

# Search space of the release threshold: from the counts' l-infinity sensitivity (1) to far
# above any declarable budget's need (scale ≤ 1.1e9 times ln(1/δ) ≤ 28).
MAX_THRESHOLD = 1 << 50


class SubjectCell(NamedTuple):
    """One subject's contribution to one group: its rows and its total of each measured
    field (None when all its values are null; adds nothing). A named tuple: a data call
    builds one per (group, subject), thousands per answer."""

    group: GroupKey
    subject: Any
    rows: int
    totals: Mapping[str, Decimal | None]


@dataclass(frozen=True, slots=True)
class NoisyGroup:
    """A released group: the noisy subject count and the noisy clamped sums."""

    key: GroupKey
    count: int
    sums: dict[str, float]


@dataclass(frozen=True, slots=True)
class Release:
    groups: list[NoisyGroup]
    count_scale: float
    sum_scales: dict[str, float]
    threshold: int


def truncate(cells: Iterable[SubjectCell], limit: int, key: bytes) -> list[SubjectCell]:
    """Keep at most ``limit`` groups per subject: those first in a keyed order (HMAC of the
    subject and the group), so the choice is deterministic for the gateway and
    unpredictable to a merchant who would like to steer which of a subject's groups
    survive. Returns the kept cells; the sensitivities in :class:`ReleasePlan` hold only
    for the output of this function."""
    by_subject: dict[Any, list[SubjectCell]] = defaultdict(list)
    for cell in cells:
        by_subject[cell.subject].append(cell)
    kept: list[SubjectCell] = []
    for subject, subject_cells in by_subject.items():
        if len(subject_cells) <= limit:  # nothing to cut: skip the keyed ranking
            kept.extend(subject_cells)
            continue
        text = _plain(subject)

        def rank(cell: SubjectCell, text: Any = text) -> bytes:
            message = json.dumps([text, [_plain(v) for v in cell.group]], ensure_ascii=False)
            return hmac.new(key, message.encode(), hashlib.sha256).digest()

        kept.extend(sorted(subject_cells, key=rank)[:limit])
    return kept


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _group_key_text(key: GroupKey) -> str:
    return json.dumps([_plain(v) for v in key], ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """The OpenDP measurements for one call's ε, δ, L and bounds, their maps checked.

    ``count`` releases the group keys and their noisy subject counts; ``sums`` holds one
    Laplace measurement per summed field. ``d_in`` values are what one subject can change
    after :func:`truncate`: L groups, each count by 1 (``count_d_in``), each clamped sum
    by the field's per-subject sensitivity (``sum_d_in``, from OpenDP's own clamp-and-sum
    map over an unsized domain, so the sized-domain trap cannot zero it)."""

    epsilon: float
    delta: float
    max_groups_per_subject: int
    bounds: Mapping[str, tuple[float, float]]
    count: Any
    count_d_in: tuple[int, int, int]
    count_scale: float
    threshold: int
    sums: Mapping[str, Any]
    sum_d_in: Mapping[str, float]
    sum_scales: Mapping[str, float]

    @property
    def parts(self) -> int:
        return 1 + len(self.sums)

    def run(self, cells: Sequence[SubjectCell]) -> Release:
        """Release noisy counts and sums for ``cells`` (already truncated). Each call draws
        fresh noise from OpenDP's CSPRNG."""
        counts: dict[GroupKey, int] = defaultdict(int)
        totals: dict[GroupKey, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        limits = {
            name: (Decimal(repr(lo)), Decimal(repr(hi))) for name, (lo, hi) in self.bounds.items()
        }
        for cell in cells:
            counts[cell.group] += 1
            group_totals = totals[cell.group]
            for name, (low, high) in limits.items():
                raw = cell.totals.get(name)
                if raw is not None:  # a null total adds nothing: within any sensitivity
                    group_totals[name] += low if raw < low else high if raw > high else raw
        keys = {_group_key_text(key): key for key in counts}
        counts_by_text = {text: counts[key] for text, key in keys.items()}
        released: dict[str, int] = self.count(counts_by_text)
        order = sorted(released, key=lambda k: [str(v) for v in keys[k]])
        sums: dict[str, list[float]] = {}
        for name, measurement in self.sums.items():
            exact = [float(totals[keys[k]][name]) for k in order]
            sums[name] = list(measurement(exact)) if exact else []
        groups = [
            NoisyGroup(
                key=keys[k],
                count=int(released[k]),
                sums={name: float(sums[name][i]) for name in self.sums},
            )
            for i, k in enumerate(order)
        ]
        return Release(groups, self.count_scale, dict(self.sum_scales), self.threshold)


def _within(measurement: Any, d_in: Any, epsilon: float, delta: float | None) -> bool:
    spent = measurement.map(d_in)
    if delta is None:
        return bool(spent <= epsilon)
    eps, dlt = spent
    return bool(eps <= epsilon and dlt <= delta)


@functools.lru_cache(maxsize=256)
def plan_release(
    epsilon: float,
    delta: float,
    max_groups_per_subject: int,
    bounds: tuple[tuple[str, float, float], ...],
) -> ReleasePlan:
    """Build and check the measurements of one call spending ``epsilon`` and ``delta``.

    ``bounds``: (field, low, high) of each distinct summed field. Raises
    :class:`ConfigError` when OpenDP's maps do not confirm the declared ε/δ (a bug or an
    impossible declaration, never run)."""
    if not (math.isfinite(epsilon) and epsilon > 0 and 0 < delta < 1):
        raise ConfigError(f"differential privacy: ε {epsilon} and δ {delta} must be positive")
    limit = max_groups_per_subject
    part = epsilon / (1 + len(bounds))
    dp = _opendp()
    try:
        count_domain = dp.map_domain(dp.atom_domain(T=dp.String), dp.atom_domain(T=dp.i64))
        count_metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))
        count_d_in = (limit, limit, 1)
        count_scale = limit / part

        def count_at(threshold: int) -> Any:
            return dp.m.make_laplace_threshold(
                count_domain, count_metric, scale=count_scale, threshold=threshold
            )

        for _ in range(8):
            if _within(count_at(MAX_THRESHOLD), count_d_in, part, delta):
                break
            count_scale *= _WIDEN
        else:
            raise ConfigError(f"differential privacy: the counts exceed ε {part}")
        # The smallest threshold whose map meets (part, δ): δ falls as the threshold rises.
        below, above = 1, MAX_THRESHOLD
        while below < above:
            middle = (below + above) // 2
            if _within(count_at(middle), count_d_in, part, delta):
                above = middle
            else:
                below = middle + 1
        threshold = below
        count = count_at(threshold)
        sums: dict[str, Any] = {}
        sum_d_in: dict[str, float] = {}
        sum_scales: dict[str, float] = {}
        for name, low, high in bounds:
            per_subject = (
                dp.t.make_clamp(
                    dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                    dp.symmetric_distance(),
                    (low, high),
                )
                >> dp.t.then_sum()
            ).map(1)
            if not per_subject > 0:
                raise ConfigError(f"differential privacy: sensitivity of {name} is not positive")
            d_in = float(limit * per_subject)
            scale = d_in / part
            measurement = dp.m.make_laplace(
                dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                dp.l1_distance(T=float),
                scale=scale,
            )
            for _ in range(8):
                if _within(measurement, d_in, part, None):
                    break
                scale *= _WIDEN
                measurement = dp.m.make_laplace(
                    dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                    dp.l1_distance(T=float),
                    scale=scale,
                )
            else:
                raise ConfigError(f"differential privacy: the sum of {name} exceeds ε {part}")
            sums[name], sum_d_in[name], sum_scales[name] = measurement, d_in, scale
    except dp.OpenDPException as exc:
        raise ConfigError(f"differential privacy: OpenDP refused the plan: {exc}") from exc
    if not _within(count, count_d_in, part, delta):
        raise ConfigError("differential privacy: the count release exceeds its ε/δ part")
    return ReleasePlan(
        epsilon=epsilon,
        delta=delta,
        max_groups_per_subject=limit,
        bounds={name: (low, high) for name, low, high in bounds},
        count=count,
        count_d_in=count_d_in,
        count_scale=count_scale,
        threshold=threshold,
        sums=sums,
        sum_d_in=sum_d_in,
        sum_scales=sum_scales,
    )
