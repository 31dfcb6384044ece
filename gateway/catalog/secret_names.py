"""How a source's password is named in the gateway's environment.

A leaf module: the settings read these variables and the catalog checks secret references
against the same prefix, and neither should have to import the other for it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SOURCE_SECRET_PREFIX"]

#: Environment variables with this prefix are source secrets (``env:`` references), not
#: settings; only they can be named by a dataset, so no other secret of the gateway can.
SOURCE_SECRET_PREFIX: Final = "DSGW_SRC_"  # noqa: S105 - a name prefix, not a password
