"""Supervision (LZ24 §1.2; ZW art. 27; CS23 art. 24, 26): what the supervisor and the data
bureau use to stop misuse and to see it.

Submodules, each with its own small public face: :mod:`gateway.supervision.measures`
(suspending a dataset's supply, closing a merchant's data channel, suspending a scenario,
delisting a product, and lifting each). This package imports nothing itself, so the policy
snapshot can load measures without an import cycle through the governance service.
"""
