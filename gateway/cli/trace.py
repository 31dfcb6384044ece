"""``dsgw`` verbs for supervision: trace. Registered on the main group when
:mod:`gateway.cli.main` is imported."""

from __future__ import annotations

__all__: list[str] = []
