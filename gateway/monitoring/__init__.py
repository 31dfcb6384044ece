"""Misuse monitoring (LZ24 §1.2, monitoring and early warning): rules over the calls
stream, persisted alerts with their handling, and a signed webhook push. See
docs/alerts.md.

The package imports none of its modules: reading alerts (``dsgw alerts list``,
:mod:`gateway.monitoring.store`) must not load the monitor and its rules. Import from the
module that holds a name (``models``, ``monitor``, ``rules``, ``store``, ``webhook``).
"""
