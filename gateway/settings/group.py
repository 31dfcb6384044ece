"""The base of every settings group, and the checks several groups share.

A group is a frozen model of related knobs (``database``, ``server``, ``alert``...). Each
field also has a flat name, the one deployments have always written (``database_pool_size``,
``host``): ``flat_prefix`` + the field name unless ``flat_names`` says otherwise. Checks
raise :class:`ConfigError` naming the flat name, so a message reads as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from gateway.errors import ConfigError

__all__ = ["Group", "above_zero", "at_least"]


class Group(BaseModel):
    """A frozen group of settings; unknown keys are refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        coerce_numbers_to_str=True,  # TOML `public_url = 8080`-style slips stay strings
        allow_inf_nan=False,
        str_strip_whitespace=False,
    )

    # Flat name of a field: flat_prefix + name, unless flat_names maps the field.
    flat_prefix: ClassVar[str] = ""
    flat_names: ClassVar[Mapping[str, str]] = {}
    # Lists given as one string (an environment variable) are split on this, per field.
    list_separators: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        """``port = true`` is a slip, not 1: numbers are refused as booleans."""
        if isinstance(data, Mapping):
            for name, value in data.items():
                info = cls.model_fields.get(name)
                if isinstance(value, bool) and info is not None and info.annotation in (int, float):
                    kind = "an int" if info.annotation is int else "a float"
                    raise ConfigError(
                        f"settings: {cls.flat_name(name)} must be {kind}, got {value!r}"
                    )
        return data

    @classmethod
    def flat_name(cls, field: str) -> str:
        """The flat (legacy) name of ``field``: what TOML ``[dsgw]`` and ``DSGW_*`` use."""
        return cls.flat_names.get(field, cls.flat_prefix + field)

    @classmethod
    def flat_fields(cls) -> dict[str, str]:
        """Flat name → field name for every field of the group."""
        return {cls.flat_name(name): name for name in cls.model_fields}


def at_least(group: Group, minimum: int | float, *fields: str) -> None:
    """Refuse any of ``fields`` below ``minimum``, naming its flat name."""
    for name in fields:
        value: Any = getattr(group, name)
        if value < minimum:
            raise ConfigError(f"settings: {group.flat_name(name)} must be at least {minimum}")


def above_zero(group: Group, *fields: str) -> None:
    """Refuse any of ``fields`` at or below 0, naming its flat name."""
    for name in fields:
        value: Any = getattr(group, name)
        if value <= 0:
            raise ConfigError(f"settings: {group.flat_name(name)} must be above 0")
