"""``dsgw`` verbs for supervision: reports. Registered on the main group when
:mod:`gateway.cli.main` is imported."""

from __future__ import annotations

__all__: list[str] = []
