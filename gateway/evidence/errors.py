"""The error evidence raises when it does not verify.

Parse errors (a member missing or of the wrong type) are :class:`gateway.errors.ValidationError`;
a well-formed document whose contents do not hold together (a signature, a hash, a proof
or an anchor that does not match) is a :class:`CheckpointError`. Both name the failing step.
"""

from __future__ import annotations

from gateway.errors import DsgwError

__all__ = ["CheckpointError"]


class CheckpointError(DsgwError):
    """Evidence that parsed but does not verify: the message names the failing step."""

    slug = "checkpoint"
    title = "Checkpoint invalid"
    status = 422
