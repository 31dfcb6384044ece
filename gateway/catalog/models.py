"""Catalog entries: what a dataset is, who provides it, and which of its fields are sensitive.

A :class:`Dataset` that exists has passed validation: build one with
:meth:`Dataset.from_dict`, which raises :class:`ValidationError` naming the bad member.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, cast, get_args

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.base import FieldType
from gateway.catalog.checks import check_id, expect_keys
from gateway.catalog.secrets import SecretRef
from gateway.errors import ValidationError
from gateway.privacy.masking import MaskRule, parse_mask_rule

__all__ = [
    "Dataset",
    "FieldSpec",
    "OpenAttribute",
    "SourceSpec",
]

FIELD_TYPES: tuple[str, ...] = get_args(FieldType)


class OpenAttribute(StrEnum):
    """Open attribute of public data (CS21 art. 22-24)."""

    UNCONDITIONAL = "unconditional"
    CONDITIONAL = "conditional"
    NOT_OPEN = "not_open"


def _str(what: str, value: object, *, max_len: int = 500, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValidationError(f"{what} must be a non-empty string")
    if len(value) > max_len:
        raise ValidationError(f"{what} is longer than {max_len} characters")
    return value


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    description: str = ""
    # Masking rule for a sensitive field; None means the field is not sensitive.
    sensitive: MaskRule | None = None
    # Leak-tracing mark carrier the field tolerates (docs/tracing.md): "digit:N" or "mask".
    mark: str | None = None
    # Clamping bounds of a numeric field for differentially private sums and means
    # (docs/privacy.md): one subject's total in one group is clamped to [low, high].
    bounds: tuple[Decimal, Decimal] | None = None
    # Identifies no one alone but singles subjects out combined with others (district,
    # founding date, industry, ...): the scenario check warns on grants combining them.
    quasi_identifier: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldSpec:
        expect_keys(
            "field",
            data,
            {"name", "type"},
            {"description", "sensitive", "mark", "bounds", "quasi_identifier"},
        )
        name = data["name"]
        if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_]{0,62}$", name):
            raise ValidationError(f"field name {name!r} must be snake_case ASCII")
        if data["type"] not in FIELD_TYPES:
            raise ValidationError(f"field {name}: type must be one of {', '.join(FIELD_TYPES)}")
        sensitive = data.get("sensitive")
        quasi = data.get("quasi_identifier", False)
        if not isinstance(quasi, bool):
            raise ValidationError(f"field {name}: quasi_identifier must be true or false")
        spec = cls(
            name=name,
            type=cast(FieldType, data["type"]),
            description=_str(
                f"field {name} description", data.get("description", ""), allow_empty=True
            ),
            sensitive=None if sensitive is None else parse_mask_rule(str(sensitive)),
            quasi_identifier=quasi,
        )
        if data.get("bounds") is not None:
            spec = replace(spec, bounds=_bounds(spec, data["bounds"]))
        mark = data.get("mark")
        return spec if mark is None else replace(spec, mark=_mark(spec, mark))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.sensitive is not None:
            out["sensitive"] = str(self.sensitive)
        if self.mark is not None:
            out["mark"] = self.mark
        if self.bounds is not None:
            out["bounds"] = [format(b, "f") for b in self.bounds]
        if self.quasi_identifier:
            # Only when set, so entries without it (and their hashes) stay as they were.
            out["quasi_identifier"] = True
        return out


MAX_BOUND = Decimal("1e15")


def _bounds(spec: FieldSpec, raw: object) -> tuple[Decimal, Decimal]:
    """Clamping bounds ``[low, high]``: finite numbers (JSON numbers or decimal strings),
    low < high, magnitude at most 10^15, on an integer or decimal field. They bound what one
    subject can add to a differentially private sum, so they must be sound, not guessed."""
    what = f"field {spec.name}: bounds"
    if spec.type not in ("integer", "decimal"):
        raise ValidationError(f"{what} need an integer or decimal field, not {spec.type}")
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValidationError(f"{what} must be a list [low, high] of two numbers")
    parsed: list[Decimal] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError(f"{what} must be a list [low, high] of two numbers")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValidationError(f"{what}: {value!r} is not a number") from None
        if not number.is_finite() or abs(number) > MAX_BOUND:
            raise ValidationError(f"{what}: {value!r} must be finite, at most 10^15 in size")
        parsed.append(number)
    low, high = parsed
    if not low < high:
        raise ValidationError(f"{what}: low ({low}) must be below high ({high})")
    return low, high


_DIGIT_MARK = re.compile(r"digit:([0-6])")
_LENGTH_HIDING_RULES = (MaskRule.ADDRESS, MaskRule.EMAIL)


def _mark(spec: FieldSpec, mark: object) -> str:
    """Check a mark carrier against the field it is declared on: a carrier the field's
    delivered values cannot hold would silently carry nothing."""
    what = f"field {spec.name}: mark"
    if not isinstance(mark, str):
        raise ValidationError(f"{what} must be 'digit:N' (N = 0..6) or 'mask'")
    digit = _DIGIT_MARK.fullmatch(mark)
    if digit is not None:
        if spec.type not in ("decimal", "integer") or spec.sensitive is not None:
            raise ValidationError(
                f"{what} {mark!r} needs a decimal or integer field that is not sensitive "
                "(a masked value has no digits to carry it)"
            )
        if spec.type == "integer" and digit.group(1) != "0":
            raise ValidationError(f"{what}: an integer field carries 'digit:0'")
        return mark
    if mark == "mask":
        if spec.sensitive not in _LENGTH_HIDING_RULES:
            raise ValidationError(
                f"{what} 'mask' needs a field masked by the address or email rule, whose "
                "masks do not preserve length (other masks would reveal the mark by length)"
            )
        return mark
    raise ValidationError(f"{what} must be 'digit:N' (N = 0..6) or 'mask', got {mark!r}")


def _shown_url(url: str) -> str:
    """``url`` as APIs and records may show it: any password replaced by ``***``.

    Registration refuses URLs with a password, so this only guards what was stored before
    that rule (migration 0009 removed those passwords from the catalog)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"//[^/@]*@", "//***@", url)  # unparseable: hide any userinfo
    if parsed.password is None and "password" not in parsed.query:
        return url
    hidden = parsed.difference_update_query(["password"])
    if parsed.password is not None:
        hidden = hidden.set(password="***")  # noqa: S106 - the mask shown, not a password
    return hidden.render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where the rows live. ``sql``: a SQLAlchemy URL and table, and optionally the secret
    reference its password comes from; ``csv``: a file path.

    Whether the location is allowed, and whether its credentials may be used, is decided by
    :mod:`gateway.catalog.sources` at registration and again when the source is opened."""

    kind: str
    url: str = ""
    table: str = ""
    path: str = ""
    credentials: SecretRef | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceSpec:
        expect_keys("source", data, {"kind"}, {"url", "table", "path", "credentials"})
        kind = data["kind"]
        if kind == "sql":
            expect_keys("sql source", data, {"kind", "url", "table"}, {"credentials"})
            raw = data.get("credentials")
            return cls(
                kind="sql",
                url=_str("source url", data["url"]),
                table=_str("source table", data["table"], max_len=128),
                credentials=None if raw is None else SecretRef.parse(raw),
            )
        if kind == "csv":
            if "credentials" in data:
                raise ValidationError(
                    "csv source: a file takes no credentials", member="credentials"
                )
            expect_keys("csv source", data, {"kind", "path"})
            return cls(kind="csv", path=_str("source path", data["path"]))
        raise ValidationError("source kind must be 'sql' or 'csv'")

    def to_dict(self) -> dict[str, Any]:
        """The source as stored and shown: never a password, at most the reference to one."""
        if self.kind == "sql":
            out: dict[str, Any] = {"kind": "sql", "url": _shown_url(self.url), "table": self.table}
            if self.credentials is not None:
                out["credentials"] = str(self.credentials)
            return out
        return {"kind": "csv", "path": self.path}

    def digest(self) -> str:
        """SHA-256 of the canonical source document: what the governance log records, so
        the registration is evidenced without showing the location to every log reader."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Dataset:
    """A catalog entry (CS21 art. 22-24; ZW art. 8)."""

    id: str
    name: str
    provider: str
    summary: str
    fields: tuple[FieldSpec, ...]
    update_frequency: str
    # Grading level, 1 (public) to 4 (most sensitive).
    classification: int
    open_attribute: OpenAttribute
    negative_list: bool
    key_fields: tuple[str, ...]
    subject_field: str
    source: SourceSpec
    # Whether query answers may carry per-recipient canary rows (docs/tracing.md).
    canaries: bool = False

    @property
    def identifying_fields(self) -> tuple[str, ...]:
        """The fields that identify a row, key fields first: what the trace index hashes."""
        return tuple(dict.fromkeys((*self.key_fields, self.subject_field)))

    @property
    def grantable(self) -> bool:
        """Data classed "not open" or on the negative list is never operated (CS23 art. 11, 13)."""
        return self.open_attribute is not OpenAttribute.NOT_OPEN and not self.negative_list

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dataset:
        expect_keys(
            "dataset",
            data,
            {
                "id",
                "name",
                "provider",
                "fields",
                "open_attribute",
                "key_fields",
                "subject_field",
                "source",
            },
            {"summary", "update_frequency", "classification", "negative_list", "canaries"},
        )
        dataset_id = check_id("dataset", data["id"])
        raw_fields = data["fields"]
        if not isinstance(raw_fields, list) or not raw_fields:
            raise ValidationError(f"dataset {dataset_id}: fields must be a non-empty list")
        fields = tuple(FieldSpec.from_dict(item) for item in raw_fields)
        names = [spec.name for spec in fields]
        if len(set(names)) != len(names):
            raise ValidationError(f"dataset {dataset_id}: duplicate field names")
        try:
            open_attribute = OpenAttribute(data["open_attribute"])
        except ValueError as exc:
            raise ValidationError(
                f"dataset {dataset_id}: open_attribute must be one of "
                + ", ".join(a.value for a in OpenAttribute)
            ) from exc
        key_fields = data["key_fields"]
        if (
            not isinstance(key_fields, list)
            or not key_fields
            or any(k not in names for k in key_fields)
        ):
            raise ValidationError(
                f"dataset {dataset_id}: key_fields must name one or more declared fields"
            )
        if data["subject_field"] not in names:
            raise ValidationError(f"dataset {dataset_id}: subject_field must be a declared field")
        classification = data.get("classification", 2)
        if not isinstance(classification, int) or not 1 <= classification <= 4:
            raise ValidationError(f"dataset {dataset_id}: classification must be 1..4")
        negative = data.get("negative_list", False)
        if not isinstance(negative, bool):
            raise ValidationError(f"dataset {dataset_id}: negative_list must be true or false")
        canaries = data.get("canaries", False)
        if not isinstance(canaries, bool):
            raise ValidationError(f"dataset {dataset_id}: canaries must be true or false")
        marked = sorted(
            spec.name
            for spec in fields
            if spec.mark is not None
            and (spec.name in key_fields or spec.name == data["subject_field"])
        )
        if marked:
            raise ValidationError(
                f"dataset {dataset_id}: identifying field(s) {', '.join(marked)} cannot carry "
                "a mark: a marked identifier would no longer identify the row"
            )
        return cls(
            id=dataset_id,
            name=_str("dataset name", data["name"], max_len=200),
            provider=_str("dataset provider", data["provider"], max_len=200),
            summary=_str(
                "dataset summary", data.get("summary", ""), max_len=2000, allow_empty=True
            ),
            fields=fields,
            update_frequency=_str(
                "update_frequency", data.get("update_frequency", "unknown"), max_len=50
            ),
            classification=classification,
            open_attribute=open_attribute,
            negative_list=negative,
            key_fields=tuple(key_fields),
            subject_field=data["subject_field"],
            source=SourceSpec.from_dict(data["source"]),
            canaries=canaries,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "provider": self.provider,
            "summary": self.summary,
            "fields": [spec.to_dict() for spec in self.fields],
            "update_frequency": self.update_frequency,
            "classification": self.classification,
            "open_attribute": self.open_attribute.value,
            "negative_list": self.negative_list,
            "key_fields": list(self.key_fields),
            "subject_field": self.subject_field,
            "source": self.source.to_dict(),
        }
        if self.canaries:
            out["canaries"] = True
        return out

    def staff_dict(self, *, with_source: bool) -> dict[str, Any]:
        """A catalog entry as staff see it: the source location only for those who answer
        for it (the authority, the owning department, the local administrator)."""
        out = self.to_dict()
        if not with_source:
            del out["source"]
        return out

    def record_dict(self) -> dict[str, Any]:
        """What the governance log records of a registration: the entry with its source as
        a digest (every reader of the log is not entitled to the location)."""
        out = self.to_dict()
        out["source"] = {"kind": self.source.kind, "sha256": self.source.digest()}
        return out

    def public_dict(self) -> dict[str, Any]:
        """What a merchant may see of a catalog entry: no source location, and nothing of
        leak tracing (which fields carry marks, whether canaries are on), which would tell
        a leaker what to scrub."""
        out = self.to_dict()
        del out["source"]
        out.pop("canaries", None)
        for spec in out["fields"]:
            spec.pop("mark", None)
        return out
