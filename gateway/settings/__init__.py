"""Deployment settings: one frozen object from a TOML file plus ``DSGW_*`` variables.

This is the only package that reads the environment. Everything else receives a
:class:`Settings` and never looks at globals, so tests build settings explicitly.

Settings come in groups (``settings.database.pool_size``, ``settings.alert.webhook_url``).
Precedence: defaults < TOML file < environment < explicit overrides. Every knob keeps its
flat name too: ``[dsgw] database_pool_size = 4`` / ``DSGW_DATABASE_POOL_SIZE=4`` as ever,
or grouped, ``[dsgw.database] pool_size = 4`` / ``DSGW_DATABASE__POOL_SIZE=4``.
"""

from gateway.settings.loading import check_workers, load_settings
from gateway.settings.model import Settings, flat_names
from gateway.settings.networks import Network, parse_networks

__all__ = [
    "Network",
    "Settings",
    "check_workers",
    "flat_names",
    "load_settings",
    "parse_networks",
]
