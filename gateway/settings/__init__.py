"""Deployment settings: one frozen object from a TOML file plus ``DSGW_*`` variables.

This is the only module that reads the environment. Everything else receives a
:class:`Settings` and never looks at globals, so tests build settings explicitly.

Precedence: defaults < TOML file < environment. Environment names are the upper-cased
field names with ``DSGW_`` in front (``DSGW_DATABASE_URL``, ``DSGW_PORT``...).
"""

from gateway.settings.loading import check_workers, load_settings
from gateway.settings.model import Network, Settings, parse_networks

__all__ = [
    "Network",
    "Settings",
    "check_workers",
    "load_settings",
    "parse_networks",
]
